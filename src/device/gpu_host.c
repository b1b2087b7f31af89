/* The "kiln_gpu" import module: guest calls -> checked kiln_device calls.
 * Contract in include/kiln/gpu_host.h; guest ABI in sdk/kiln_gpu.h.
 *
 * Order of checks for every call, so that nothing the guest controls is
 * trusted before it is looked at:
 *   1. the caller's memory 0 must be the session's (handle 0);
 *   2. pointer arguments: kiln_memory_range_or_null in 64-bit;
 *   3. structs are copied out of guest memory into host locals before any
 *      field is read (a second guest thread, or a host function, changing
 *      the bytes afterwards cannot change what was validated);
 *   4. fields: kind, flags, dtype, rank, reserved words, unused shape and
 *      stride entries, signs, memory handles;
 *   5. the op as a whole: kiln_device_submit validates shapes, strides,
 *      byte extents (64-bit, overflow-checked) and alignment before it
 *      queues anything.
 * Failures set the session's last error and return a negative code; no
 * guest call ever traps. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/reserve.h"
#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln_gpu.h"

/* ---- The guest ABI: sdk/kiln_gpu.h, the header guests compile with ------- */

/* Its numbers are device.h's numbers, one by one. */
#define SAME(g, h) _Static_assert((int)(g) == (int)(h), #g " is " #h)
SAME(KILN_GPU_F32, KILN_DTYPE_F32);
SAME(KILN_GPU_F16, KILN_DTYPE_F16);
SAME(KILN_GPU_BF16, KILN_DTYPE_BF16);
SAME(KILN_GPU_I32, KILN_DTYPE_I32);
SAME(KILN_GPU_Q8_0, KILN_DTYPE_Q8_0);
SAME(KILN_DTYPE_COUNT, 5);
SAME(KILN_GPU_OP_NOP, KILN_OP_NOP);
SAME(KILN_GPU_OP_GEMM, KILN_OP_GEMM);
SAME(KILN_GPU_OP_GEMV, KILN_OP_GEMV);
SAME(KILN_GPU_OP_ADD, KILN_OP_ADD);
SAME(KILN_GPU_OP_MUL, KILN_OP_MUL);
SAME(KILN_GPU_OP_SCALE, KILN_OP_SCALE);
SAME(KILN_GPU_OP_RMSNORM, KILN_OP_RMSNORM);
SAME(KILN_GPU_OP_SOFTMAX, KILN_OP_SOFTMAX);
SAME(KILN_GPU_OP_ROPE, KILN_OP_ROPE);
SAME(KILN_GPU_OP_SILU, KILN_OP_SILU);
SAME(KILN_GPU_OP_GELU, KILN_OP_GELU);
SAME(KILN_GPU_OP_SWIGLU, KILN_OP_SWIGLU);
SAME(KILN_GPU_OP_ARGMAX, KILN_OP_ARGMAX);
SAME(KILN_GPU_OP_COPY, KILN_OP_COPY);
SAME(KILN_GPU_OP_GATHER, KILN_OP_GATHER);
SAME(KILN_GPU_OP_ATTENTION, KILN_OP_ATTENTION);
SAME(KILN_GPU_OP_KIND_COUNT, KILN_OP_KIND_COUNT);
SAME(KILN_GPU_PLACEMENT_NONE, KILN_PLACEMENT_NONE);
SAME(KILN_GPU_PLACEMENT_MAPPED, KILN_PLACEMENT_MAPPED);
SAME(KILN_GPU_PLACEMENT_RESIDENT, KILN_PLACEMENT_RESIDENT);
SAME(KILN_GPU_PLACEMENT_DEVICE, KILN_PLACEMENT_DEVICE);
SAME(KILN_GPU_MAX_RANK, KILN_MAX_RANK);
#undef SAME

#define NAME_MAX_BYTES 255u

/* ---- Session ------------------------------------------------------------- */

typedef struct grant {
  char name[NAME_MAX_BYTES + 1];
  kiln_memory *memory;     /* retained */
  bool attached_by_us;
} grant;

typedef struct named_tensor {
  char name[NAME_MAX_BYTES + 1];
  kiln_tensor tensor;      /* tensor.memory: bound or granted (not retained
                            * separately: the grant holds it) */
} named_tensor;

struct kiln_gpu_session {
  pthread_mutex_t lock;
  kiln_device *device;
  kiln_gpu_session_options opts;
  kiln_memory *guest_memory;   /* handle 0; retained */
  bool guest_attached_by_us;
  grant *grants;               /* handle h is grants[h - 1] */
  uint32_t ngrants;
  size_t grants_cap;
  named_tensor *tensors;
  uint32_t ntensors;
  size_t tensors_cap;
  kiln_program **programs;     /* handle h is programs[h - 1]; NULL: free */
  uint32_t programs_cap;
  kiln_program *recording;     /* between program_begin and program_end */
  size_t recording_ops;
  kiln_transfer_report last_op, last_sync;
  char last_error[512];
};

void kiln_gpu_session_options_init(kiln_gpu_session_options *o) {
  memset(o, 0, sizeof *o);
}

int32_t kiln_gpu_error_code(kiln_code code) {
  switch (code) {
    case KILN_CODE_OK: return KILN_GPU_OK;
    case KILN_CODE_INVALID_ARGUMENT: return KILN_GPU_E_INVALID;
    case KILN_CODE_PERMISSION_DENIED: return KILN_GPU_E_INVALID;
    case KILN_CODE_OUT_OF_RANGE: return KILN_GPU_E_RANGE;
    case KILN_CODE_NOT_FOUND: return KILN_GPU_E_NOT_FOUND;
    case KILN_CODE_FAILED_PRECONDITION: return KILN_GPU_E_STATE;
    case KILN_CODE_ALREADY_EXISTS: return KILN_GPU_E_STATE;
    case KILN_CODE_RESOURCE_EXHAUSTED: return KILN_GPU_E_RESOURCE;
    case KILN_CODE_UNIMPLEMENTED: return KILN_GPU_E_UNSUPPORTED;
    default: return KILN_GPU_E_INTERNAL;
  }
}

kiln_status kiln_gpu_session_create(kiln_device *d,
                                    const kiln_gpu_session_options *opts,
                                    kiln_gpu_session **out) {
  *out = NULL;
  if (!d)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_gpu_session_create: no device");
  kiln_gpu_session *s = calloc(1, sizeof *s);
  if (!s)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "kiln_gpu_session_create: out of memory");
  if (opts) s->opts = *opts;
  if (!s->opts.max_programs) s->opts.max_programs = 256;
  if (!s->opts.max_program_ops) s->opts.max_program_ops = 65536;
  pthread_mutex_init(&s->lock, NULL);
  kiln_device_retain(d);
  s->device = d;
  *out = s;
  return KILN_OK;
}

void kiln_gpu_session_release(kiln_gpu_session *s) {
  if (!s) return;
  if (s->recording) kiln_program_release(s->recording);
  for (uint32_t i = 0; i < s->programs_cap; i++)
    if (s->programs[i]) kiln_program_release(s->programs[i]);
  free(s->programs);
  /* Queued ops may still read these memories: finish them first. */
  kiln_status st = kiln_device_sync(s->device, NULL);
  kiln_status_free(st);
  for (uint32_t i = 0; i < s->ngrants; i++) {
    if (s->grants[i].attached_by_us)
      kiln_device_detach(s->device, s->grants[i].memory);
    kiln_memory_release(s->grants[i].memory);
  }
  free(s->grants);
  free(s->tensors);
  if (s->guest_memory) {
    if (s->guest_attached_by_us)
      kiln_device_detach(s->device, s->guest_memory);
    kiln_memory_release(s->guest_memory);
  }
  kiln_device_release(s->device);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

kiln_device *kiln_gpu_session_device(const kiln_gpu_session *s) {
  return s->device;
}

kiln_memory *kiln_gpu_session_memory(const kiln_gpu_session *s) {
  return s->guest_memory;
}

const char *kiln_gpu_session_last_error(const kiln_gpu_session *s) {
  return s->last_error;
}

/* Is `m` attached to the session's device by someone already? A memory
 * the device knows has a placement other than NONE at offset 0. */
static bool device_knows(kiln_gpu_session *s, kiln_memory *m) {
  return kiln_device_placement(s->device, m, 0) != KILN_PLACEMENT_NONE;
}

static kiln_status bind_locked(kiln_gpu_session *s, kiln_memory *m) {
  if (s->guest_memory == m) return KILN_OK;
  if (s->guest_memory)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "kiln_gpu: session already bound to memory '%s'",
                            kiln_memory_name(s->guest_memory));
  bool known = device_knows(s, m);
  if (!known) KILN_RETURN_IF_ERROR(kiln_device_attach(s->device, m));
  kiln_memory_retain(m);
  s->guest_memory = m;
  s->guest_attached_by_us = !known;
  return KILN_OK;
}

kiln_status kiln_gpu_session_bind_memory(kiln_gpu_session *s, kiln_memory *m) {
  if (!m)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_gpu_session_bind_memory: no memory");
  pthread_mutex_lock(&s->lock);
  kiln_status st = bind_locked(s, m);
  pthread_mutex_unlock(&s->lock);
  return st;
}

static bool name_ok(const char *name) {
  return name && name[0] && strlen(name) <= NAME_MAX_BYTES;
}

/* Room for one more entry in a table of n entries (capacity *cap, doubled
 * from `first` as needed). */
/* Room for one more entry in a session table (grants, tensors). */
static kiln_status table_room(void **v, uint32_t n, size_t *cap, size_t elem,
                              size_t first) {
  if (!kiln_reserve(v, cap, (size_t)n + 1, elem, first))
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "kiln_gpu: out of memory");
  return KILN_OK;
}

kiln_status kiln_gpu_session_grant_memory(kiln_gpu_session *s,
                                          const char *name, kiln_memory *m,
                                          uint32_t *out_handle) {
  if (!name_ok(name) || !m)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_gpu_session_grant_memory: need a memory and "
                            "a name of 1..%u bytes", NAME_MAX_BYTES);
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&s->lock);
  for (uint32_t i = 0; i < s->ngrants; i++)
    if (!strcmp(s->grants[i].name, name)) {
      st = kiln_make_status(KILN_CODE_ALREADY_EXISTS,
                            "kiln_gpu: a memory named '%s' is granted already",
                            name);
      goto out;
    }
  if ((st = table_room((void **)&s->grants, s->ngrants, &s->grants_cap,
                        sizeof *s->grants, 4)))
    goto out;
  bool known = device_knows(s, m);
  if (!known) {
    st = kiln_device_attach(s->device, m);
    if (st) goto out;
  }
  grant *g = &s->grants[s->ngrants++];
  memset(g, 0, sizeof *g);
  snprintf(g->name, sizeof g->name, "%s", name);
  kiln_memory_retain(m);
  g->memory = m;
  g->attached_by_us = !known;
  if (out_handle) *out_handle = s->ngrants;
out:
  pthread_mutex_unlock(&s->lock);
  return st;
}

/* Handle of `m` in this session: 0 for the bound memory, else its grant;
 * -1 when the session does not know it. */
static int64_t handle_of(const kiln_gpu_session *s, const kiln_memory *m) {
  if (m && m == s->guest_memory) return 0;
  for (uint32_t i = 0; i < s->ngrants; i++)
    if (s->grants[i].memory == m) return (int64_t)i + 1;
  return -1;
}

kiln_status kiln_gpu_session_grant_tensor(kiln_gpu_session *s,
                                          const char *name,
                                          const kiln_tensor *t) {
  if (!name_ok(name) || !t || !t->memory)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_gpu_session_grant_tensor: need a tensor and "
                            "a name of 1..%u bytes", NAME_MAX_BYTES);
  kiln_status st = KILN_OK;
  pthread_mutex_lock(&s->lock);
  if (handle_of(s, t->memory) < 0) {
    st = kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                          "kiln_gpu: tensor '%s' is in a memory not granted "
                          "to this session", name);
    goto out;
  }
  for (uint32_t i = 0; i < s->ntensors; i++)
    if (!strcmp(s->tensors[i].name, name)) {
      st = kiln_make_status(KILN_CODE_ALREADY_EXISTS,
                            "kiln_gpu: a tensor named '%s' exists already",
                            name);
      goto out;
    }
  if ((st = table_room((void **)&s->tensors, s->ntensors, &s->tensors_cap,
                        sizeof *s->tensors, 16)))
    goto out;
  named_tensor *n = &s->tensors[s->ntensors++];
  memset(n, 0, sizeof *n);
  snprintf(n->name, sizeof n->name, "%s", name);
  n->tensor = *t;
out:
  pthread_mutex_unlock(&s->lock);
  return st;
}

bool kiln_gpu_module_uses(const kiln_module *m) {
  for (size_t i = 0; i < kiln_module_import_count(m); i++)
    if (!strcmp(kiln_module_import(m, i)->module, "kiln_gpu")) return true;
  return false;
}

/* ---- Guest calls --------------------------------------------------------- */

/* Records the message of a failed call and returns `code`. */
__attribute__((format(printf, 3, 4))) static int32_t
fail(kiln_gpu_session *s, int32_t code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->last_error, sizeof s->last_error, fmt, ap);
  va_end(ap);
  return code;
}

/* Records a status (freed here) as the last error; returns its guest code. */
static int32_t fail_status(kiln_gpu_session *s, const char *call,
                           kiln_status st) {
  int32_t code = kiln_gpu_error_code(kiln_status_code(st));
  fail(s, code, "%s: %s", call, kiln_status_message(st));
  kiln_status_free(st);
  return code;
}

/* Every call starts here: lock the session and find the caller's memory 0,
 * which must be the session's (bound now if nothing is bound yet). Returns
 * 0 and the memory, or a code (lock released). */
static int32_t enter(kiln_caller *c, kiln_gpu_session **out_s,
                     kiln_memory **out_mem, const char *call) {
  kiln_gpu_session *s = kiln_caller_user(c);
  kiln_memory *m = kiln_caller_memory(c, 0);
  pthread_mutex_lock(&s->lock);
  *out_s = s;
  *out_mem = m;
  if (!m) {
    int32_t r = fail(s, KILN_GPU_E_FAULT, "%s: the calling module has no memory",
                     call);
    pthread_mutex_unlock(&s->lock);
    return r;
  }
  if (m != s->guest_memory) {
    kiln_status st = bind_locked(s, m);
    if (st) {
      bool foreign = kiln_status_code(st) == KILN_CODE_FAILED_PRECONDITION;
      int32_t r = foreign ? KILN_GPU_E_HANDLE
                          : kiln_gpu_error_code(kiln_status_code(st));
      fail(s, r, "%s: %s (%s)", call,
           foreign ? "the calling instance's memory is not this session's"
                   : "attaching the calling instance's memory",
           kiln_status_message(st));
      kiln_status_free(st);
      pthread_mutex_unlock(&s->lock);
      return r;
    }
  }
  return KILN_GPU_OK;
}

static uint32_t leave(kiln_gpu_session *s, int32_t r) {
  pthread_mutex_unlock(&s->lock);
  return (uint32_t)r;
}

/* The memory behind a guest handle, or NULL. */
static kiln_memory *memory_of(kiln_gpu_session *s, uint32_t handle) {
  if (handle == 0) return s->guest_memory;
  if (handle <= s->ngrants) return s->grants[handle - 1].memory;
  return NULL;
}

/* Copies n bytes at guest offset `ptr` of memory 0 into dst. */
static bool copy_in(kiln_memory *m, uint64_t ptr, void *dst, uint64_t n) {
  void *p = kiln_memory_range_or_null(m, ptr, n);
  if (!p) return false;
  memcpy(dst, p, n);
  return true;
}

static bool copy_out(kiln_memory *m, uint64_t ptr, const void *src,
                     uint64_t n) {
  void *p = kiln_memory_range_or_null(m, ptr, n);
  if (!p) return false;
  memcpy(p, src, n);
  return true;
}

/* Guest tensor -> kiln_tensor, checking every field the device's own
 * validation does not see (the handle, reserved words, unused entries) or
 * that must be in range before it becomes an enum. */
static int32_t tensor_in(kiln_gpu_session *s, const kiln_gpu_tensor *g,
                         kiln_tensor *out, const char *call, char which) {
  memset(out, 0, sizeof *out);
  if (g->rank == 0) {
    static const kiln_gpu_tensor zero;
    if (memcmp(g, &zero, sizeof zero))
      return fail(s, KILN_GPU_E_INVALID,
                  "%s: operand %c has rank 0 (absent) but other fields set",
                  call, which);
    return KILN_GPU_OK;
  }
  if (g->reserved)
    return fail(s, KILN_GPU_E_INVALID, "%s: operand %c: reserved field is %u, "
                "must be 0", call, which, g->reserved);
  if (g->rank > KILN_MAX_RANK)
    return fail(s, KILN_GPU_E_INVALID, "%s: operand %c: rank %u (1..%d)", call,
                which, g->rank, KILN_MAX_RANK);
  if (g->dtype >= KILN_DTYPE_COUNT)
    return fail(s, KILN_GPU_E_INVALID, "%s: operand %c: unknown dtype %u", call,
                which, g->dtype);
  for (uint32_t k = 0; k < KILN_MAX_RANK; k++) {
    if (k >= g->rank && (g->shape[k] || g->stride[k]))
      return fail(s, KILN_GPU_E_INVALID,
                  "%s: operand %c: shape/stride entry %u is beyond rank %u "
                  "and must be 0", call, which, k, g->rank);
    if (g->shape[k] < 0 || g->stride[k] < 0)
      return fail(s, KILN_GPU_E_INVALID,
                  "%s: operand %c: negative shape or stride in dimension %u",
                  call, which, k);
  }
  kiln_memory *m = memory_of(s, g->mem);
  if (!m)
    return fail(s, KILN_GPU_E_HANDLE,
                "%s: operand %c: no memory with handle %u in this session",
                call, which, g->mem);
  out->memory = m;
  out->offset = g->offset;
  out->dtype = (kiln_dtype)g->dtype;
  out->rank = g->rank;
  memcpy(out->shape, g->shape, sizeof out->shape);
  memcpy(out->stride, g->stride, sizeof out->stride);
  return KILN_GPU_OK;
}

static int32_t op_in(kiln_gpu_session *s, const kiln_gpu_op *g, kiln_op *op,
                     const char *call) {
  memset(op, 0, sizeof *op);
  if (g->kind >= KILN_OP_KIND_COUNT)
    return fail(s, KILN_GPU_E_INVALID, "%s: unknown op kind %u", call, g->kind);
  if (g->flags & ~(uint32_t)(KILN_OP_TRANS_A | KILN_OP_TRANS_B))
    return fail(s, KILN_GPU_E_INVALID, "%s: unknown flags 0x%x", call, g->flags);
  if (g->reserved)
    return fail(s, KILN_GPU_E_INVALID, "%s: reserved field is %u, must be 0",
                call, g->reserved);
  op->kind = (kiln_op_kind)g->kind;
  op->flags = g->flags;
  int32_t r;
  if ((r = tensor_in(s, &g->a, &op->a, call, 'a')) ||
      (r = tensor_in(s, &g->b, &op->b, call, 'b')) ||
      (r = tensor_in(s, &g->c, &op->c, call, 'c')) ||
      (r = tensor_in(s, &g->d, &op->d, call, 'd')) ||
      (r = tensor_in(s, &g->index, &op->index, call, 'i')))
    return r;
  op->alpha = g->alpha;
  op->beta = g->beta;
  op->eps = g->eps;
  op->pos = g->pos;
  return KILN_GPU_OK;
}

/* The calls below with a `do_` prefix are the work of one import once its
 * pointer arguments are copied in: shared by the guest imports and the
 * host-side API (kiln_gpu_session_submit_op, ...). Session lock held. */

/* *g is the caller's private copy. */
static int32_t do_submit(kiln_gpu_session *s, const kiln_gpu_op *g) {
  kiln_op op;
  int32_t r = op_in(s, g, &op, "submit");
  if (r) return r;
  if (s->recording) {
    if (s->recording_ops >= s->opts.max_program_ops)
      return fail(s, KILN_GPU_E_RESOURCE, "submit: a program holds at most %u ops",
                  s->opts.max_program_ops);
    kiln_status st = kiln_program_add(s->recording, &op);
    if (st) return fail_status(s, "submit (recording)", st);
    s->recording_ops++;
    return KILN_GPU_OK;
  }
  kiln_transfer_report rep = {0};
  kiln_status st = kiln_device_submit(s->device, &op, &rep);
  if (st) return fail_status(s, "submit", st);
  s->last_op = rep;
  return KILN_GPU_OK;
}

static int32_t do_sync(kiln_gpu_session *s) {
  kiln_transfer_report rep = {0};
  kiln_status st = kiln_device_sync(s->device, &rep);
  s->last_sync = rep;
  if (st) {
    /* Everything sync reports was raised while ops ran. */
    fail_status(s, "sync", st);
    return KILN_GPU_E_DEVICE;
  }
  return KILN_GPU_OK;
}

static int32_t do_place(kiln_gpu_session *s, uint32_t mem, uint64_t offset,
                        uint64_t length, uint32_t placement) {
  kiln_memory *target = memory_of(s, mem);
  if (!target)
    return fail(s, KILN_GPU_E_HANDLE,
                "place: no memory with handle %u in this session", mem);
  if (placement != KILN_PLACEMENT_MAPPED &&
      placement != KILN_PLACEMENT_RESIDENT &&
      placement != KILN_PLACEMENT_DEVICE)
    return fail(s, KILN_GPU_E_INVALID, "place: unknown placement %u", placement);
  if (!kiln_memory_range_or_null(target, offset, length))
    return fail(s, KILN_GPU_E_RANGE, "place: [%llu, +%llu) is outside memory %u",
                (unsigned long long)offset, (unsigned long long)length, mem);
  kiln_status st = kiln_device_place(s->device, target, offset, length,
                                     (kiln_placement)placement);
  if (st) return fail_status(s, "place", st);
  return KILN_GPU_OK;
}

static uint32_t host_submit(kiln_caller *c, uint32_t op_ptr) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "submit");
  if (r) return (uint32_t)r;
  kiln_gpu_op g;
  if (!copy_in(m, op_ptr, &g, sizeof g))
    return leave(s, fail(s, KILN_GPU_E_FAULT,
                         "submit: op struct at %u (%zu bytes) is outside "
                         "guest memory", op_ptr, sizeof g));
  return leave(s, do_submit(s, &g));
}

static uint32_t host_sync(kiln_caller *c) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "sync");
  if (r) return (uint32_t)r;
  return leave(s, do_sync(s));
}

static uint32_t host_place(kiln_caller *c, uint32_t mem, uint64_t offset,
                           uint64_t length, uint32_t placement) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "place");
  if (r) return (uint32_t)r;
  return leave(s, do_place(s, mem, offset, length, placement));
}

static uint32_t host_placement(kiln_caller *c, uint32_t mem, uint64_t offset) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "placement");
  if (r) return (uint32_t)r;
  kiln_memory *target = memory_of(s, mem);
  if (!target)
    return leave(s, fail(s, KILN_GPU_E_HANDLE,
                         "placement: no memory with handle %u", mem));
  if (offset >= kiln_memory_size(target))
    return leave(s, fail(s, KILN_GPU_E_RANGE,
                         "placement: offset %llu is outside memory %u",
                         (unsigned long long)offset, mem));
  return leave(s, (int32_t)kiln_device_placement(s->device, target, offset));
}

static uint32_t host_address(kiln_caller *c, uint32_t mem, uint64_t offset,
                             uint32_t out_ptr) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "address");
  if (r) return (uint32_t)r;
  if (!s->opts.allow_address_query)
    return leave(s, fail(s, KILN_GPU_E_STATE,
                         "address: the host does not allow address queries"));
  kiln_memory *target = memory_of(s, mem);
  if (!target)
    return leave(s, fail(s, KILN_GPU_E_HANDLE, "address: no memory with handle %u",
                         mem));
  if (!kiln_memory_range_or_null(m, out_ptr, sizeof(uint64_t)))
    return leave(s, fail(s, KILN_GPU_E_FAULT,
                         "address: out pointer %u is outside guest memory",
                         out_ptr));
  if (offset >= kiln_memory_size(target))
    return leave(s, fail(s, KILN_GPU_E_RANGE,
                         "address: offset %llu is outside memory %u",
                         (unsigned long long)offset, mem));
  uint64_t addr = 0;
  kiln_status st = kiln_device_address(s->device, target, offset, &addr);
  if (st) return leave(s, fail_status(s, "address", st));
  copy_out(m, out_ptr, &addr, sizeof addr);
  return leave(s, KILN_GPU_OK);
}

static int32_t do_program_begin(kiln_gpu_session *s) {
  if (s->recording)
    return fail(s, KILN_GPU_E_STATE, "program_begin: already recording a program");
  kiln_status st = kiln_program_create(s->device, &s->recording);
  if (st) {
    s->recording = NULL;
    return fail_status(s, "program_begin", st);
  }
  s->recording_ops = 0;
  return KILN_GPU_OK;
}

static int32_t do_program_end(kiln_gpu_session *s) {
  if (!s->recording)
    return fail(s, KILN_GPU_E_STATE, "program_end: no program_begin before it");
  uint32_t slot = 0;
  while (slot < s->programs_cap && s->programs[slot]) slot++;
  if (slot == s->programs_cap) {
    if (s->programs_cap >= s->opts.max_programs) {
      kiln_program_release(s->recording);
      s->recording = NULL;
      return fail(s, KILN_GPU_E_RESOURCE, "program_end: at most %u live programs",
                  s->opts.max_programs);
    }
    uint32_t cap = s->programs_cap ? 2 * s->programs_cap : 8;
    if (cap > s->opts.max_programs) cap = s->opts.max_programs;
    kiln_program **p = realloc(s->programs, cap * sizeof *p);
    if (!p) {
      kiln_program_release(s->recording);
      s->recording = NULL;
      return fail(s, KILN_GPU_E_RESOURCE, "program_end: out of memory");
    }
    for (uint32_t i = s->programs_cap; i < cap; i++) p[i] = NULL;
    s->programs = p;
    s->programs_cap = cap;
  }
  /* The graph now, while the guest is loading, not at its first submit. */
  kiln_status st = kiln_program_prepare(s->recording);
  if (st) {
    kiln_program_release(s->recording);
    s->recording = NULL;
    return fail_status(s, "program_end", st);
  }
  s->programs[slot] = s->recording;
  s->recording = NULL;
  return (int32_t)(slot + 1);
}

static kiln_program *program_of(kiln_gpu_session *s, uint32_t h) {
  if (h == 0 || h > s->programs_cap) return NULL;
  return s->programs[h - 1];
}

static int32_t do_program_submit(kiln_gpu_session *s, uint32_t h) {
  kiln_program *p = program_of(s, h);
  if (!p)
    return fail(s, KILN_GPU_E_HANDLE, "program_submit: no program %d", (int32_t)h);
  if (s->recording)
    return fail(s, KILN_GPU_E_STATE,
                "program_submit: not while recording a program");
  kiln_transfer_report rep = {0};
  kiln_status st = kiln_device_submit_program(s->device, p, &rep);
  if (st) return fail_status(s, "program_submit", st);
  s->last_op = rep;
  return KILN_GPU_OK;
}

static int32_t do_program_free(kiln_gpu_session *s, uint32_t h) {
  kiln_program *p = program_of(s, h);
  if (!p)
    return fail(s, KILN_GPU_E_HANDLE, "program_free: no program %d", (int32_t)h);
  /* A submitted program may still be running: let it finish. */
  kiln_status st = kiln_device_sync(s->device, &s->last_sync);
  s->programs[h - 1] = NULL;
  kiln_program_release(p);
  if (st) {
    fail_status(s, "program_free (sync)", st);
    return KILN_GPU_E_DEVICE;
  }
  return KILN_GPU_OK;
}

static uint32_t host_program_begin(kiln_caller *c) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "program_begin");
  if (r) return (uint32_t)r;
  return leave(s, do_program_begin(s));
}

static uint32_t host_program_end(kiln_caller *c) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "program_end");
  if (r) return (uint32_t)r;
  return leave(s, do_program_end(s));
}

static uint32_t host_program_submit(kiln_caller *c, uint32_t h) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "program_submit");
  if (r) return (uint32_t)r;
  return leave(s, do_program_submit(s, h));
}

static uint32_t host_program_free(kiln_caller *c, uint32_t h) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "program_free");
  if (r) return (uint32_t)r;
  return leave(s, do_program_free(s, h));
}

static uint32_t host_last_error(kiln_caller *c, uint32_t buf, uint32_t len) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "last_error");
  if (r) return (uint32_t)r;
  size_t n = strlen(s->last_error);
  if (len) {
    char *p = kiln_memory_range_or_null(m, buf, len);
    if (!p)
      return leave(s, fail(s, KILN_GPU_E_FAULT,
                           "last_error: buffer [%u, +%u) is outside guest "
                           "memory", buf, len));
    size_t k = n < len - 1 ? n : len - 1;
    memcpy(p, s->last_error, k);
    p[k] = 0;
  }
  return leave(s, (int32_t)n);
}

static uint32_t host_stats(kiln_caller *c, uint32_t out_ptr) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "stats");
  if (r) return (uint32_t)r;
  kiln_device_stats ds;
  kiln_device_get_stats(s->device, &ds);
  kiln_gpu_stats g = {
      .ops = ds.ops,
      .syncs = ds.syncs,
      .bytes_to_device = ds.bytes_to_device,
      .bytes_to_host = ds.bytes_to_host,
      .write_faults = ds.write_faults,
      .resident_bytes = ds.resident_bytes,
      .mapped_bytes = ds.mapped_bytes,
      .last_op_bytes_to_device = s->last_op.bytes_to_device,
      .last_op_bytes_to_host = s->last_op.bytes_to_host,
      .last_sync_bytes_to_device = s->last_sync.bytes_to_device,
      .last_sync_bytes_to_host = s->last_sync.bytes_to_host,
      .device_kind = (uint32_t)kiln_device_kind_of(s->device),
  };
  if (!copy_out(m, out_ptr, &g, sizeof g))
    return leave(s, fail(s, KILN_GPU_E_FAULT,
                         "stats: out struct at %u (%zu bytes) is outside "
                         "guest memory", out_ptr, sizeof g));
  return leave(s, KILN_GPU_OK);
}

/* Copies a guest name (not NUL-terminated) into buf. */
static int32_t name_in(kiln_gpu_session *s, kiln_memory *m, uint32_t ptr,
                       uint32_t len, char *buf, const char *call) {
  if (len == 0 || len > NAME_MAX_BYTES)
    return fail(s, KILN_GPU_E_NOT_FOUND, "%s: a name has 1..%u bytes, not %u",
                call, NAME_MAX_BYTES, len);
  if (!copy_in(m, ptr, buf, len))
    return fail(s, KILN_GPU_E_FAULT, "%s: name [%u, +%u) is outside guest memory",
                call, ptr, len);
  buf[len] = 0;
  if (strlen(buf) != len)
    return fail(s, KILN_GPU_E_NOT_FOUND, "%s: the name holds a NUL byte", call);
  return KILN_GPU_OK;
}

static int32_t do_memory_lookup(kiln_gpu_session *s, const char *name) {
  for (uint32_t i = 0; i < s->ngrants; i++)
    if (!strcmp(s->grants[i].name, name)) return (int32_t)i + 1;
  return fail(s, KILN_GPU_E_NOT_FOUND,
              "memory_lookup: no memory named '%s' in this session", name);
}

static uint32_t host_memory_lookup(kiln_caller *c, uint32_t name_ptr,
                                   uint32_t name_len) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "memory_lookup");
  if (r) return (uint32_t)r;
  char name[NAME_MAX_BYTES + 1];
  if ((r = name_in(s, m, name_ptr, name_len, name, "memory_lookup")))
    return leave(s, r);
  return leave(s, do_memory_lookup(s, name));
}

static uint32_t host_tensor_lookup(kiln_caller *c, uint32_t name_ptr,
                                   uint32_t name_len, uint32_t out_ptr) {
  kiln_gpu_session *s;
  kiln_memory *m;
  int32_t r = enter(c, &s, &m, "tensor_lookup");
  if (r) return (uint32_t)r;
  char name[NAME_MAX_BYTES + 1];
  if ((r = name_in(s, m, name_ptr, name_len, name, "tensor_lookup")))
    return leave(s, r);
  for (uint32_t i = 0; i < s->ntensors; i++) {
    if (strcmp(s->tensors[i].name, name)) continue;
    const kiln_tensor *t = &s->tensors[i].tensor;
    int64_t h = handle_of(s, t->memory);
    if (h < 0) break;
    kiln_gpu_tensor g = {.mem = (uint32_t)h,
                      .dtype = (uint32_t)t->dtype,
                      .rank = t->rank,
                      .offset = t->offset};
    memcpy(g.shape, t->shape, sizeof g.shape);
    memcpy(g.stride, t->stride, sizeof g.stride);
    if (!copy_out(m, out_ptr, &g, sizeof g))
      return leave(s, fail(s, KILN_GPU_E_FAULT,
                           "tensor_lookup: out struct at %u is outside guest "
                           "memory", out_ptr));
    return leave(s, KILN_GPU_OK);
  }
  return leave(s, fail(s, KILN_GPU_E_NOT_FOUND,
                       "tensor_lookup: no tensor named '%s' in this session",
                       name));
}

/* ---- The same calls from the host ---------------------------------------- */

#define HOST_CALL(s, expr)             \
  do {                                 \
    pthread_mutex_lock(&(s)->lock);    \
    int32_t r_ = (expr);               \
    pthread_mutex_unlock(&(s)->lock);  \
    return r_;                         \
  } while (0)

int32_t kiln_gpu_session_submit_op(kiln_gpu_session *s,
                                   const struct kiln_gpu_op *op) {
  kiln_gpu_op g;
  memcpy(&g, op, sizeof g); /* the caller's may change while it runs */
  HOST_CALL(s, do_submit(s, &g));
}

int32_t kiln_gpu_session_sync(kiln_gpu_session *s) {
  HOST_CALL(s, do_sync(s));
}

int32_t kiln_gpu_session_place(kiln_gpu_session *s, uint32_t mem,
                               uint64_t offset, uint64_t length,
                               uint32_t placement) {
  HOST_CALL(s, do_place(s, mem, offset, length, placement));
}

int32_t kiln_gpu_session_program_begin(kiln_gpu_session *s) {
  HOST_CALL(s, do_program_begin(s));
}

int32_t kiln_gpu_session_program_end(kiln_gpu_session *s) {
  HOST_CALL(s, do_program_end(s));
}

int32_t kiln_gpu_session_program_submit(kiln_gpu_session *s, int32_t h) {
  HOST_CALL(s, do_program_submit(s, (uint32_t)h));
}

int32_t kiln_gpu_session_program_free(kiln_gpu_session *s, int32_t h) {
  HOST_CALL(s, do_program_free(s, (uint32_t)h));
}

int32_t kiln_gpu_session_memory_lookup(kiln_gpu_session *s, const char *name) {
  if (!name_ok(name))
    HOST_CALL(s, fail(s, KILN_GPU_E_NOT_FOUND,
                      "memory_lookup: a name has 1..%u bytes", NAME_MAX_BYTES));
  HOST_CALL(s, do_memory_lookup(s, name));
}

#undef HOST_CALL

/* ---- Definition ---------------------------------------------------------- */

typedef struct gpu_export {
  const char *name;
  void *fn;
  const char *sig; /* parameters: 'i' i32, 'I' i64; result always i32 */
} gpu_export;

static const gpu_export kExports[] = {
    {"submit", (void *)host_submit, "i"},
    {"sync", (void *)host_sync, ""},
    {"place", (void *)host_place, "iIIi"},
    {"placement", (void *)host_placement, "iI"},
    {"address", (void *)host_address, "iIi"},
    {"program_begin", (void *)host_program_begin, ""},
    {"program_end", (void *)host_program_end, ""},
    {"program_submit", (void *)host_program_submit, "i"},
    {"program_free", (void *)host_program_free, "i"},
    {"last_error", (void *)host_last_error, "ii"},
    {"stats", (void *)host_stats, "i"},
    {"memory_lookup", (void *)host_memory_lookup, "ii"},
    {"tensor_lookup", (void *)host_tensor_lookup, "iii"},
};
enum { NEXPORTS = sizeof kExports / sizeof kExports[0], MAX_PARAMS = 4 };

/* Static: the type arrays outlive any linker. */
static kiln_valtype gParams[NEXPORTS][MAX_PARAMS];
static const kiln_valtype kResult[1] = {KILN_I32};

static void fill_params(void) {
  for (size_t i = 0; i < NEXPORTS; i++)
    for (size_t j = 0; kExports[i].sig[j] && j < MAX_PARAMS; j++)
      gParams[i][j] = kExports[i].sig[j] == 'I' ? KILN_I64 : KILN_I32;
}

kiln_status kiln_gpu_define(kiln_linker *l, kiln_gpu_session *s) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, fill_params);
  if (!l || !s)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "kiln_gpu_define: need a linker and a session");
  for (size_t i = 0; i < NEXPORTS; i++) {
    kiln_host_func f = {
        .module = "kiln_gpu",
        .name = kExports[i].name,
        .type = {.param_count = (uint32_t)strlen(kExports[i].sig),
                 .result_count = 1,
                 .params = gParams[i],
                 .results = kResult},
        .native = kExports[i].fn,
        .user = s,
    };
    KILN_RETURN_IF_ERROR(kiln_linker_define_func(l, &f));
  }
  return KILN_OK;
}
