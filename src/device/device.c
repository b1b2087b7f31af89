/* The device core: opening a backend, validation of ops, submission,
 * sync, programs and statistics. Placement and coherence live in
 * coherence.c; the reference math in ref_ops.c. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/reserve.h"
#include "device/device_core.h"

/* ---- Names and dtypes ---------------------------------------------------- */

const char *kiln_dtype_name(kiln_dtype t) {
  switch (t) {
    case KILN_DTYPE_F32: return "f32";
    case KILN_DTYPE_F16: return "f16";
    case KILN_DTYPE_BF16: return "bf16";
    case KILN_DTYPE_I32: return "i32";
    case KILN_DTYPE_Q8_0: return "q8_0";
    default: return "unknown-dtype";
  }
}

size_t kiln_dtype_size(kiln_dtype t) {
  switch (t) {
    case KILN_DTYPE_F32:
    case KILN_DTYPE_I32: return 4;
    case KILN_DTYPE_F16:
    case KILN_DTYPE_BF16: return 2;
    default: return 0;
  }
}

bool kiln_dtype_row_bytes(kiln_dtype t, int64_t n, uint64_t *out_bytes) {
  if (n < 0 || (unsigned)t >= KILN_DTYPE_COUNT) return false;
  uint64_t bytes;
  if (t == KILN_DTYPE_Q8_0) {
    if (n % 32) return false;
    if (__builtin_mul_overflow((uint64_t)n / 32, (uint64_t)34, &bytes))
      return false;
  } else if (__builtin_mul_overflow((uint64_t)n, (uint64_t)kiln_dtype_size(t),
                                    &bytes)) {
    return false;
  }
  *out_bytes = bytes;
  return true;
}

const char *kiln_op_kind_name(kiln_op_kind k) {
  static const char *const names[KILN_OP_KIND_COUNT] = {
      [KILN_OP_NOP] = "NOP",           [KILN_OP_GEMM] = "GEMM",
      [KILN_OP_GEMV] = "GEMV",         [KILN_OP_ADD] = "ADD",
      [KILN_OP_MUL] = "MUL",           [KILN_OP_SCALE] = "SCALE",
      [KILN_OP_RMSNORM] = "RMSNORM",   [KILN_OP_SOFTMAX] = "SOFTMAX",
      [KILN_OP_ROPE] = "ROPE",         [KILN_OP_SILU] = "SILU",
      [KILN_OP_GELU] = "GELU",         [KILN_OP_SWIGLU] = "SWIGLU",
      [KILN_OP_ARGMAX] = "ARGMAX",     [KILN_OP_COPY] = "COPY",
      [KILN_OP_GATHER] = "GATHER",     [KILN_OP_ATTENTION] = "ATTENTION",
  };
  return (unsigned)k < KILN_OP_KIND_COUNT ? names[k] : "unknown-op";
}

const char *kiln_placement_name(kiln_placement p) {
  switch (p) {
    case KILN_PLACEMENT_NONE: return "none";
    case KILN_PLACEMENT_MAPPED: return "mapped";
    case KILN_PLACEMENT_RESIDENT: return "resident";
    case KILN_PLACEMENT_DEVICE: return "device";
    default: return "unknown-placement";
  }
}

kiln_tensor kiln_tensor_make(kiln_memory *m, uint64_t offset, kiln_dtype t,
                             uint32_t rank, const int64_t *shape) {
  kiln_tensor x;
  memset(&x, 0, sizeof x);
  x.memory = m;
  x.offset = offset;
  x.dtype = t;
  x.rank = rank;
  if (rank > KILN_MAX_RANK || !shape) return x; /* validation rejects it */
  for (uint32_t k = 0; k < rank; k++) x.shape[k] = shape[k];
  int64_t s = 1;
  for (uint32_t k = rank; k-- > 0;) {
    x.stride[k] = s;
    if (__builtin_mul_overflow(s, shape[k] > 0 ? shape[k] : 1, &s)) s = 0;
  }
  return x;
}

/* ---- Opening and reference counting ------------------------------------- */

void kiln_device_options_init(kiln_device_options *o) {
  memset(o, 0, sizeof *o);
  o->spec = "auto";
  o->resident_eager_max = 64 * 1024;
}

static void append_describe(kiln_device *d, const char *fmt, ...) {
  size_t n = strlen(d->describe);
  if (n + 1 >= sizeof d->describe) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(d->describe + n, sizeof d->describe - n, fmt, ap);
  va_end(ap);
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void init_header(kiln_device *d, const kiln_device_options *o) {
  d->refs = 1;
  d->resident_eager_max = o->resident_eager_max;
  const char *tm = getenv("KILN_DEVICE_TIMING");
  d->timing = tm && *tm && *tm != '0';
  const char *eager = getenv("KILN_RESIDENT_EAGER_MAX");
  if (eager && *eager) d->resident_eager_max = strtoull(eager, NULL, 0);
  const char *ng = getenv("KILN_DEVICE_NO_GRAPHS");
  if (ng && *ng && *ng != '0') d->no_graphs = true;
  const char *dev_only = getenv("KILN_DEVICE_ONLY");
  d->device_as_resident = dev_only && !strcmp(dev_only, "0");
  d->attachments = NULL;
  d->pending_error = KILN_OK;
  memset(&d->stats, 0, sizeof d->stats);
}

kiln_status kiln_device_open(const kiln_device_options *o, kiln_device **out) {
  *out = NULL;
  kiln_device_options defaults;
  if (!o) {
    kiln_device_options_init(&defaults);
    o = &defaults;
  }
  const char *spec = o->spec && *o->spec ? o->spec : "auto";
  if (o->cpu_threads < 0 || o->cpu_threads > 1024)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "cpu_threads %d is outside 0..1024",
                            o->cpu_threads);
  kiln_device *d = NULL;
  kiln_status s;
  if (strcmp(spec, "cpu") == 0) {
    s = kiln_cpu_device_create(o, &d);
  } else if (strcmp(spec, "auto") == 0) {
    kiln_status why = kiln_cuda_device_create(o, 0, &d);
    if (!why) {
      init_header(d, o);
      append_describe(d, "; auto: chose cuda:0");
      *out = d;
      return KILN_OK;
    }
    s = kiln_cpu_device_create(o, &d);
    if (!s) {
      init_header(d, o);
      append_describe(d, "; auto: %s", kiln_status_message(why));
    }
    kiln_status_free(why);
    if (!s) *out = d;
    return s;
  } else if (strncmp(spec, "cuda", 4) == 0 &&
             (spec[4] == 0 || spec[4] == ':')) {
    long ordinal = 0;
    if (spec[4] == ':') {
      const char *p = spec + 5;
      if (!*p || strlen(p) > 4)
        return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                                "device spec '%s': expected cuda:N", spec);
      for (const char *q = p; *q; q++)
        if (!isdigit((unsigned char)*q))
          return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                                  "device spec '%s': expected cuda:N", spec);
      ordinal = strtol(p, NULL, 10);
    }
    s = kiln_cuda_device_create(o, (int)ordinal, &d);
  } else {
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "unknown device '%s' (expected auto, cpu, cuda or "
                            "cuda:N)",
                            spec);
  }
  if (s) return s;
  init_header(d, o);
  *out = d;
  return KILN_OK;
}

void kiln_device_retain(kiln_device *d) {
  if (d) __atomic_fetch_add(&d->refs, 1, __ATOMIC_RELAXED);
}

void kiln_device_release(kiln_device *d) {
  if (!d || __atomic_sub_fetch(&d->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
  /* Finish queued work and copy results back before the memories go. */
  kiln_status_free(kiln_device_sync(d, NULL));
  if (d->timing)
    fprintf(stderr,
            "kiln device timing: %llu program submits, %.1f us each on the "
            "host (coherence %.1f, launch %.1f); %llu syncs, %.1f us each "
            "(waiting included)\n",
            (unsigned long long)d->timing_submits,
            d->timing_submits ? d->timing_submit_ns / 1e3 / d->timing_submits : 0.0,
            d->timing_submits ? d->timing_coherence_ns / 1e3 / d->timing_submits : 0.0,
            d->timing_submits ? d->timing_launch_ns / 1e3 / d->timing_submits : 0.0,
            (unsigned long long)d->timing_syncs,
            d->timing_syncs ? d->timing_sync_ns / 1e3 / d->timing_syncs : 0.0);
  kiln_coherence_detach_all(d);
  kiln_status_free(d->pending_error);
  d->pending_error = KILN_OK;
  d->vt->destroy(d);
}

kiln_device_kind kiln_device_kind_of(const kiln_device *d) { return d->kind; }
const char *kiln_device_describe(const kiln_device *d) { return d->describe; }

void kiln_device_get_stats(kiln_device *d, kiln_device_stats *out) {
  out->ops = d->stats.ops;
  out->syncs = d->stats.syncs;
  out->bytes_to_device = d->stats.bytes_to_device;
  out->bytes_to_host = d->stats.bytes_to_host;
  out->write_faults =
      __atomic_load_n(&d->stats.write_faults, __ATOMIC_RELAXED);
  out->resident_bytes = d->stats.resident_bytes;
  out->mapped_bytes =
      __atomic_load_n(&d->stats.mapped_bytes, __ATOMIC_RELAXED);
  out->fused_ops = d->stats.fused_ops;
  out->split_gemvs = d->stats.split_gemvs;
  out->pdl_launches = d->stats.pdl_launches;
}

/* ---- Validation ----------------------------------------------------------- */

typedef struct check_ctx {
  kiln_device *d;
  const kiln_op *op;
  kiln_vop *v;
} check_ctx;

static const char *const operand_names[KILN_OPND_COUNT] = {"a", "b", "c", "d",
                                                           "index"};

static kiln_status fail(check_ctx *c, kiln_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kiln_status fail(check_ctx *c, kiln_code code, const char *fmt, ...) {
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kiln_make_status(code, "%s: %s", kiln_op_kind_name(c->op->kind), msg);
}

static const kiln_tensor *op_tensor(const kiln_op *op, int which) {
  switch (which) {
    case KILN_OPND_A: return &op->a;
    case KILN_OPND_B: return &op->b;
    case KILN_OPND_C: return &op->c;
    case KILN_OPND_D: return &op->d;
    default: return &op->index;
  }
}

static kiln_dtensor *dop_tensor(kiln_dop *op, int which) {
  return (kiln_dtensor *)kiln_dop_operand(op, which);
}

#define M_F32 (1u << KILN_DTYPE_F32)
#define M_F16 (1u << KILN_DTYPE_F16)
#define M_BF16 (1u << KILN_DTYPE_BF16)
#define M_I32 (1u << KILN_DTYPE_I32)
#define M_Q8 (1u << KILN_DTYPE_Q8_0)
#define M_FLOAT (M_F32 | M_F16 | M_BF16)

/* Largest element count of an operand: more than a 4 GiB memory can hold
 * without overlapping elements; bounds the work an op can ask for. */
#define KILN_MAX_ELEMENTS ((uint64_t)1 << 32)

enum { OPT = 0, REQ = 1 };
enum { IN = 0, OUT = 1 };

/* Checks one operand completely and fills its resolved form and extent. */
static kiln_status operand(check_ctx *c, int which, int required, int out,
                           unsigned dtypes) {
  const kiln_tensor *t = op_tensor(c->op, which);
  const char *nm = operand_names[which];
  kiln_dtensor *dt = dop_tensor(&c->v->dop, which);
  kiln_operand_extent *ext = &c->v->ext[which];
  if (!t->memory) {
    if (required)
      return fail(c, KILN_CODE_INVALID_ARGUMENT, "operand %s is missing", nm);
    return KILN_OK;
  }
  if ((unsigned)t->dtype >= KILN_DTYPE_COUNT)
    return fail(c, KILN_CODE_INVALID_ARGUMENT, "operand %s: unknown dtype %d",
                nm, (int)t->dtype);
  if (!(dtypes & (1u << t->dtype)))
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: dtype %s is not accepted here", nm,
                kiln_dtype_name(t->dtype));
  kiln_device_attachment *att = kiln_attachment_find(c->d, t->memory);
  if (!att)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: memory '%s' is not attached to this device "
                "(another guest's memory?)",
                nm, kiln_memory_name(t->memory));
  if (out && att->read_only)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s is an output but memory '%s' is read-only", nm,
                kiln_memory_name(t->memory));
  uint32_t r = t->rank;
  if (r < 1 || r > KILN_MAX_RANK)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: rank %u is outside 1..%d", nm, r, KILN_MAX_RANK);
  uint64_t count = 1;
  bool all_zero = true;
  for (uint32_t k = 0; k < r; k++) {
    if (t->shape[k] < 1)
      return fail(c, KILN_CODE_INVALID_ARGUMENT,
                  "operand %s: dimension %u has size %lld (must be >= 1)", nm,
                  k, (long long)t->shape[k]);
    if (__builtin_mul_overflow(count, (uint64_t)t->shape[k], &count) ||
        count > KILN_MAX_ELEMENTS)
      return fail(c, KILN_CODE_OUT_OF_RANGE,
                  "operand %s: element count overflows (more than 2^32 "
                  "elements)",
                  nm);
    if (t->stride[k] != 0) all_zero = false;
  }
  bool q8 = t->dtype == KILN_DTYPE_Q8_0;
  int64_t stride[KILN_MAX_RANK];
  if (all_zero) {
    int64_t s = 1;
    for (uint32_t k = r; k-- > 0;) {
      stride[k] = s;
      s *= t->shape[k]; /* <= 2^32 by the count check */
    }
  } else {
    for (uint32_t k = 0; k < r; k++) {
      stride[k] = t->stride[k];
      if (stride[k] < 0 || (stride[k] == 0 && t->shape[k] != 1))
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "operand %s: stride %lld of dimension %u must be positive",
                    nm, (long long)stride[k], k);
    }
  }
  if (q8) {
    if (t->shape[r - 1] % 32)
      return fail(c, KILN_CODE_INVALID_ARGUMENT,
                  "operand %s: q8_0 needs a last dimension that is a multiple "
                  "of 32, not %lld",
                  nm, (long long)t->shape[r - 1]);
    if (stride[r - 1] != 1)
      return fail(c, KILN_CODE_INVALID_ARGUMENT,
                  "operand %s: q8_0 needs a contiguous last dimension", nm);
    for (uint32_t k = 0; k + 1 < r; k++)
      if (t->shape[k] != 1 && stride[k] % 32)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "operand %s: q8_0 stride %lld of dimension %u is not a "
                    "multiple of 32",
                    nm, (long long)stride[k], k);
  }
  /* Byte extent, in 64-bit arithmetic that cannot overflow unnoticed. */
  uint64_t span = 0; /* elements from the first to the last element */
  uint32_t spanned = q8 ? r - 1 : r; /* q8: the last dim is whole blocks */
  for (uint32_t k = 0; k < spanned; k++) {
    uint64_t term;
    if (__builtin_mul_overflow((uint64_t)(t->shape[k] - 1),
                               (uint64_t)stride[k], &term) ||
        __builtin_add_overflow(span, term, &span))
      return fail(c, KILN_CODE_OUT_OF_RANGE,
                  "operand %s: shape times strides overflows 64 bits", nm);
  }
  uint64_t bytes;
  if (q8) {
    uint64_t row;
    if (!kiln_dtype_row_bytes(t->dtype, t->shape[r - 1], &row) ||
        __builtin_mul_overflow(span / 32, (uint64_t)34, &bytes) ||
        __builtin_add_overflow(bytes, row, &bytes))
      return fail(c, KILN_CODE_OUT_OF_RANGE,
                  "operand %s: byte size overflows 64 bits", nm);
  } else if (__builtin_add_overflow(span, (uint64_t)1, &span) ||
             __builtin_mul_overflow(span, (uint64_t)kiln_dtype_size(t->dtype),
                                    &bytes)) {
    return fail(c, KILN_CODE_OUT_OF_RANGE,
                "operand %s: byte size overflows 64 bits", nm);
  }
  uint64_t end, size = kiln_memory_size(t->memory);
  if (__builtin_add_overflow(t->offset, bytes, &end))
    return fail(c, KILN_CODE_OUT_OF_RANGE,
                "operand %s: offset %llu + %llu bytes overflows 64 bits", nm,
                (unsigned long long)t->offset, (unsigned long long)bytes);
  if (end > size)
    return fail(c, KILN_CODE_OUT_OF_RANGE,
                "operand %s: bytes [%llu, %llu) lie outside memory '%s' of "
                "%llu bytes",
                nm, (unsigned long long)t->offset, (unsigned long long)end,
                kiln_memory_name(t->memory), (unsigned long long)size);
  uint64_t align = q8 ? 2 : kiln_dtype_size(t->dtype);
  if (t->offset % align)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: offset %llu is not aligned to %llu bytes for %s",
                nm, (unsigned long long)t->offset, (unsigned long long)align,
                kiln_dtype_name(t->dtype));
  bool straddles = false;
  kiln_resident *res = kiln_resident_find(att, t->offset, end, &straddles);
  if (straddles)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: bytes [%llu, %llu) cross a placement boundary "
                "(part on the device, part not)",
                nm, (unsigned long long)t->offset, (unsigned long long)end);
  /* Size-1 dimensions get the stride of a row-major neighbour, so that
   * backends may test collapsibility with plain equalities. */
  for (uint32_t k = r; k-- > 0;)
    if (t->shape[k] == 1) stride[k] = k + 1 < r ? stride[k + 1] * t->shape[k + 1] : 1;
  memset(dt, 0, sizeof *dt);
  uint64_t host = (uint64_t)(uintptr_t)kiln_memory_base(t->memory) + t->offset;
  dt->addr = res && res->dev_addr ? res->dev_addr + (t->offset - res->offset)
                                  : host;
  dt->dtype = t->dtype;
  dt->rank = r;
  for (uint32_t k = 0; k < KILN_MAX_RANK; k++) {
    dt->shape[k] = k < r ? t->shape[k] : 1;
    dt->stride[k] = k < r ? stride[k] : 1;
  }
  ext->att = att;
  ext->res = res;
  ext->lo = t->offset;
  ext->hi = end;
  ext->read = !out;
  ext->write = out;
  if (out) c->v->dop.writes |= 1u << which;
  /* The normalised view also goes into v->op so that coherence can walk
   * exactly the bytes written. */
  kiln_tensor *vt = (kiln_tensor *)op_tensor(&c->v->op, which);
  for (uint32_t k = 0; k < r; k++) vt->stride[k] = stride[k];
  return KILN_OK;
}

static kiln_status unused(check_ctx *c, int which) {
  if (op_tensor(c->op, which)->memory)
    return fail(c, KILN_CODE_INVALID_ARGUMENT, "operand %s is not used by %s",
                operand_names[which], kiln_op_kind_name(c->op->kind));
  return KILN_OK;
}

/* rows x cols view: last dimension contiguous, leading ones collapsible. */
static kiln_status row_view(check_ctx *c, int which, int64_t *rows,
                            int64_t *cols) {
  const kiln_dtensor *t = dop_tensor(&c->v->dop, which);
  uint32_t r = t->rank;
  if (t->stride[r - 1] != 1)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: the last dimension must be contiguous (stride 1)",
                operand_names[which]);
  int64_t n = 1;
  for (uint32_t k = 0; k + 1 < r; k++) {
    n *= t->shape[k];
    if (k + 2 < r && t->stride[k] != t->stride[k + 1] * t->shape[k + 1])
      return fail(c, KILN_CODE_INVALID_ARGUMENT,
                  "operand %s: leading dimensions %u and %u do not collapse "
                  "into rows",
                  operand_names[which], k, k + 1);
  }
  if (rows) *rows = n;
  if (cols) *cols = t->shape[r - 1];
  return KILN_OK;
}

static kiln_status need_same_shape(check_ctx *c, int x, int y) {
  if (!kiln_dtensor_same_shape(dop_tensor(&c->v->dop, x), dop_tensor(&c->v->dop, y)))
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operands %s and %s must have the same shape",
                operand_names[x], operand_names[y]);
  return KILN_OK;
}

static kiln_status need_rank(check_ctx *c, int which, uint32_t rank) {
  if (dop_tensor(&c->v->dop, which)->rank != rank)
    return fail(c, KILN_CODE_INVALID_ARGUMENT, "operand %s must have rank %u",
                operand_names[which], rank);
  return KILN_OK;
}

static kiln_status need_last_contiguous(check_ctx *c, int which) {
  const kiln_dtensor *t = dop_tensor(&c->v->dop, which);
  if (t->stride[t->rank - 1] != 1)
    return fail(c, KILN_CODE_INVALID_ARGUMENT,
                "operand %s: the last dimension must be contiguous (stride 1)",
                operand_names[which]);
  return KILN_OK;
}

#define TRY(expr) KILN_RETURN_IF_ERROR(expr)

static kiln_status check_kind(check_ctx *c) {
  const kiln_op *op = c->op;
  kiln_dop *o = &c->v->dop;
  const kiln_dtensor *a = &o->a, *b = &o->b, *cc = &o->c;
  int64_t rows = 0, cols = 0;
  if (op->flags && op->kind != KILN_OP_GEMM)
    return fail(c, KILN_CODE_INVALID_ARGUMENT, "flags 0x%x are not used here",
                op->flags);
  bool has_index = false;
  switch (op->kind) {
    case KILN_OP_ROPE:
    case KILN_OP_SOFTMAX:
    case KILN_OP_ATTENTION:
    case KILN_OP_COPY:
      TRY(operand(c, KILN_OPND_INDEX, OPT, IN, M_I32));
      has_index = op->index.memory != NULL;
      break;
    default:
      TRY(unused(c, KILN_OPND_INDEX));
  }
  switch (op->kind) {
    case KILN_OP_NOP:
      for (int w = 0; w < KILN_OPND_INDEX; w++) TRY(unused(c, w));
      break;
    case KILN_OP_GEMM: {
      if (op->flags & ~(uint32_t)(KILN_OP_TRANS_A | KILN_OP_TRANS_B))
        return fail(c, KILN_CODE_INVALID_ARGUMENT, "unknown flags 0x%x",
                    op->flags);
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_FLOAT));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_FLOAT));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      if (a->dtype != b->dtype)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "a (%s) and b (%s) must have the same dtype",
                    kiln_dtype_name(a->dtype), kiln_dtype_name(b->dtype));
      for (int w = KILN_OPND_A; w <= KILN_OPND_C; w++) {
        TRY(need_rank(c, w, 2));
        TRY(need_last_contiguous(c, w));
      }
      bool ta = op->flags & KILN_OP_TRANS_A, tb = op->flags & KILN_OP_TRANS_B;
      int64_t M = cc->shape[0], N = cc->shape[1];
      int64_t am = ta ? a->shape[1] : a->shape[0];
      int64_t ak = ta ? a->shape[0] : a->shape[1];
      int64_t bk = tb ? b->shape[1] : b->shape[0];
      int64_t bn = tb ? b->shape[0] : b->shape[1];
      if (am != M || bn != N || ak != bk)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "shapes do not match: op(a) is [%lld,%lld], op(b) "
                    "[%lld,%lld], c [%lld,%lld]",
                    (long long)am, (long long)ak, (long long)bk, (long long)bn,
                    (long long)M, (long long)N);
      if (op->beta != 0) c->v->ext[KILN_OPND_C].read = true;
      rows = M;
      cols = N;
      break;
    }
    case KILN_OP_GEMV: {
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_FLOAT | M_Q8));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(need_rank(c, KILN_OPND_A, 2));
      TRY(need_last_contiguous(c, KILN_OPND_A));
      int64_t bm, bk, cm, cn;
      TRY(row_view(c, KILN_OPND_B, &bm, &bk));
      TRY(row_view(c, KILN_OPND_C, &cm, &cn));
      if (bk != a->shape[1] || cn != a->shape[0] || cm != bm)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "shapes do not match: a is [%lld,%lld] (N,K), b "
                    "[%lld,%lld] (M,K), c [%lld,%lld] (M,N)",
                    (long long)a->shape[0], (long long)a->shape[1],
                    (long long)bm, (long long)bk, (long long)cm,
                    (long long)cn);
      if (op->beta != 0) c->v->ext[KILN_OPND_C].read = true;
      rows = bm;
      cols = cn;
      break;
    }
    case KILN_OP_ADD:
    case KILN_OP_MUL:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      TRY(row_view(c, KILN_OPND_B, NULL, NULL));
      TRY(row_view(c, KILN_OPND_C, NULL, NULL));
      if (!kiln_dtensor_same_shape(a, b) && !(b->rank == 1 && b->shape[0] == cols))
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "b must have a's shape or be one row [%lld]",
                    (long long)cols);
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_C));
      break;
    case KILN_OP_SCALE:
    case KILN_OP_SILU:
    case KILN_OP_GELU:
    case KILN_OP_SOFTMAX:   /* its optional index is checked with the others */
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_C));
      TRY(unused(c, KILN_OPND_D));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      TRY(row_view(c, KILN_OPND_B, NULL, NULL));
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_B));
      break;
    case KILN_OP_SWIGLU:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      TRY(row_view(c, KILN_OPND_B, NULL, NULL));
      TRY(row_view(c, KILN_OPND_C, NULL, NULL));
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_B));
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_C));
      break;
    case KILN_OP_RMSNORM:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      TRY(row_view(c, KILN_OPND_C, NULL, NULL));
      if (b->rank != 1 || b->shape[0] != cols || b->stride[0] != 1)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "b (the weight) must be a contiguous [%lld]",
                    (long long)cols);
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_C));
      break;
    case KILN_OP_ROPE:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, OUT, M_F32));
      TRY(operand(c, KILN_OPND_C, REQ, IN, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(need_rank(c, KILN_OPND_A, 3));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      TRY(row_view(c, KILN_OPND_B, NULL, NULL));
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_B));
      if (cols % 2)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "the head dimension %lld must be even", (long long)cols);
      if (cc->rank != 1 || cc->shape[0] != cols / 2 || cc->stride[0] != 1)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "c (inverse frequencies) must be a contiguous [%lld]",
                    (long long)(cols / 2));
      break;
    case KILN_OP_ARGMAX:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, OUT, M_I32));
      TRY(unused(c, KILN_OPND_C));
      TRY(unused(c, KILN_OPND_D));
      TRY(row_view(c, KILN_OPND_A, &rows, &cols));
      if (b->rank != 1 || b->shape[0] != rows)
        return fail(c, KILN_CODE_INVALID_ARGUMENT, "b must be i32 [%lld]",
                    (long long)rows);
      break;
    case KILN_OP_COPY: {
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_FLOAT | M_I32 | M_Q8));
      TRY(operand(c, KILN_OPND_B, REQ, OUT, M_FLOAT | M_I32));
      TRY(unused(c, KILN_OPND_C));
      TRY(unused(c, KILN_OPND_D));
      if ((a->dtype == KILN_DTYPE_I32) != (b->dtype == KILN_DTYPE_I32))
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "i32 copies only to i32 (a is %s, b is %s)",
                    kiln_dtype_name(a->dtype), kiln_dtype_name(b->dtype));
      if (a->rank != b->rank)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "a and b must have the same rank");
      for (uint32_t k = has_index ? 1 : 0; k < a->rank; k++)
        if (a->shape[k] != b->shape[k])
          return fail(c, KILN_CODE_INVALID_ARGUMENT,
                      "a and b differ in dimension %u (%lld vs %lld)", k,
                      (long long)a->shape[k], (long long)b->shape[k]);
      if (has_index && a->shape[0] > b->shape[0])
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "%lld rows do not fit a capacity of %lld",
                    (long long)a->shape[0], (long long)b->shape[0]);
      rows = a->shape[0];
      cols = 1;
      for (uint32_t k = 1; k < a->rank; k++) cols *= a->shape[k];
      break;
    }
    case KILN_OP_GATHER:
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_FLOAT | M_Q8));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_I32));
      TRY(operand(c, KILN_OPND_C, REQ, OUT, M_F32));
      TRY(unused(c, KILN_OPND_D));
      TRY(need_rank(c, KILN_OPND_A, 2));
      TRY(need_rank(c, KILN_OPND_B, 1));
      TRY(need_rank(c, KILN_OPND_C, 2));
      TRY(need_last_contiguous(c, KILN_OPND_A));
      TRY(need_last_contiguous(c, KILN_OPND_C));
      if (cc->shape[0] != b->shape[0] || cc->shape[1] != a->shape[1])
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "c must be [%lld,%lld] (ids x row length)",
                    (long long)b->shape[0], (long long)a->shape[1]);
      rows = b->shape[0];
      cols = a->shape[1];
      break;
    case KILN_OP_ATTENTION: {
      TRY(operand(c, KILN_OPND_A, REQ, IN, M_F32));
      TRY(operand(c, KILN_OPND_B, REQ, IN, M_FLOAT));
      TRY(operand(c, KILN_OPND_C, REQ, IN, M_FLOAT));
      TRY(operand(c, KILN_OPND_D, REQ, OUT, M_F32));
      for (int w = KILN_OPND_A; w <= KILN_OPND_D; w++) {
        TRY(need_rank(c, w, 3));
        TRY(need_last_contiguous(c, w));
      }
      if (b->dtype != cc->dtype)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "k and v caches must have the same dtype");
      TRY(need_same_shape(c, KILN_OPND_B, KILN_OPND_C));
      TRY(need_same_shape(c, KILN_OPND_A, KILN_OPND_D));
      int64_t T = a->shape[0], Hq = a->shape[1], D = a->shape[2];
      int64_t S = b->shape[0], Hkv = b->shape[1];
      if (b->shape[2] != D)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "q has head size %lld, the caches %lld", (long long)D,
                    (long long)b->shape[2]);
      if (Hq % Hkv)
        return fail(c, KILN_CODE_INVALID_ARGUMENT,
                    "%lld query heads are not a multiple of %lld kv heads",
                    (long long)Hq, (long long)Hkv);
      if (!has_index && (op->pos < 0 || op->pos > S - T))
        return fail(c, KILN_CODE_OUT_OF_RANGE,
                    "positions %lld .. %lld are outside a cache of %lld rows",
                    (long long)op->pos, (long long)(op->pos + T - 1),
                    (long long)S);
      rows = T * Hq;
      cols = D;
      break;
    }
    default:
      return fail(c, KILN_CODE_INVALID_ARGUMENT, "unknown op kind %d",
                  (int)op->kind);
  }
  o->rows = rows;
  o->cols = cols;
  return KILN_OK;
}

kiln_status kiln_device_check_op(kiln_device *d, const kiln_op *op,
                                 kiln_vop *v) {
  memset(v, 0, sizeof *v);
  v->op = *op;
  v->dop.kind = op->kind;
  v->dop.flags = op->flags;
  v->dop.alpha = op->alpha;
  v->dop.beta = op->beta;
  v->dop.eps = op->eps;
  v->dop.pos = op->pos;
  check_ctx c = {d, op, v};
  return check_kind(&c);
}

kiln_status kiln_device_validate(kiln_device *d, const kiln_op *op) {
  kiln_vop v;
  return kiln_device_check_op(d, op, &v);
}

/* ---- Submission and sync -------------------------------------------------- */

kiln_status kiln_device_submit(kiln_device *d, const kiln_op *op,
                               kiln_transfer_report *report) {
  if (report) memset(report, 0, sizeof *report);
  kiln_vop v;
  KILN_RETURN_IF_ERROR(kiln_device_check_op(d, op, &v));
  uint64_t up = 0;
  d->submit_gen++;
  kiln_status s = kiln_coherence_before_op(d, &v, &up);
  d->stats.bytes_to_device += up;
  if (report) report->bytes_to_device = up;
  if (s) return s;
  KILN_RETURN_IF_ERROR(d->vt->launch(d, &v.dop));
  d->stats.ops++;
  return KILN_OK;
}

static kiln_status device_sync(kiln_device *d, kiln_transfer_report *report);

kiln_status kiln_device_sync(kiln_device *d, kiln_transfer_report *report) {
  if (!d->timing) return device_sync(d, report);
  uint64_t t0 = mono_ns();
  kiln_status s = device_sync(d, report);
  d->timing_sync_ns += mono_ns() - t0;
  d->timing_syncs++;
  return s;
}

static kiln_status device_sync(kiln_device *d, kiln_transfer_report *report) {
  if (report) memset(report, 0, sizeof *report);
  uint64_t down = 0;
  kiln_status s2 = kiln_coherence_copy_back_begin(d, &down);
  kiln_status s = d->vt->sync(d);
  kiln_status s3 = kiln_coherence_copy_back_end(d);
  if (!s2) s2 = s3;
  else kiln_status_free(s3);
  d->stats.bytes_to_host += down;
  d->stats.syncs++;
  if (report) report->bytes_to_host = down;
  kiln_status first = d->pending_error;
  d->pending_error = KILN_OK;
  if (!first) {
    first = s;
    s = KILN_OK;
  }
  if (!first) {
    first = s2;
    s2 = KILN_OK;
  }
  kiln_status_free(s);
  kiln_status_free(s2);
  return first;
}

/* ---- Programs ------------------------------------------------------------- */

struct kiln_program {
  kiln_device *d;
  kiln_op *ops;
  size_t n, cap;
  /* The graph recorded by the backend and the resolved ops it was recorded
   * from: replayed while every op still resolves to the same addresses. */
  void *graph;
  kiln_dop *recorded;
  /* The ops as last validated and resolved, at device placement_epoch
   * `checked_epoch`: reused until a placement changes. */
  kiln_vop *checked;
  uint64_t checked_epoch;
};

kiln_status kiln_program_create(kiln_device *d, kiln_program **out) {
  *out = NULL;
  kiln_program *p = calloc(1, sizeof *p);
  if (!p) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  kiln_device_retain(d);
  p->d = d;
  *out = p;
  return KILN_OK;
}

static void op_memories(const kiln_op *op, void (*fn)(kiln_memory *)) {
  const kiln_tensor *t[] = {&op->a, &op->b, &op->c, &op->d, &op->index};
  for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
    if (t[i]->memory) fn(t[i]->memory);
}

static void drop_graph(kiln_program *p) {
  if (p->graph && p->d->vt->graph_free) p->d->vt->graph_free(p->d, p->graph);
  p->graph = NULL;
  free(p->recorded);
  p->recorded = NULL;
}

kiln_status kiln_program_add(kiln_program *p, const kiln_op *op) {
  kiln_vop v;
  KILN_RETURN_IF_ERROR(kiln_device_check_op(p->d, op, &v));
  if (!kiln_reserve((void **)&p->ops, &p->cap, p->n + 1, sizeof *p->ops, 16))
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  p->ops[p->n++] = *op;
  op_memories(op, kiln_memory_retain);
  drop_graph(p);
  free(p->checked);
  p->checked = NULL;
  return KILN_OK;
}

size_t kiln_program_op_count(const kiln_program *p) { return p->n; }

void kiln_program_release(kiln_program *p) {
  if (!p) return;
  drop_graph(p);
  free(p->checked);
  for (size_t i = 0; i < p->n; i++) op_memories(&p->ops[i], kiln_memory_release);
  free(p->ops);
  kiln_device_release(p->d);
  free(p);
}

static kiln_status submit_program(kiln_device *d, kiln_program *p,
                                  kiln_transfer_report *report);

/* A program's resolved ops, in order: as one sequence where the backend
 * can fuse, else one launch each. */
static kiln_status launch_all(kiln_device *d, const kiln_dop *ops, size_t n) {
  if (d->vt->launch_seq) return d->vt->launch_seq(d, ops, n);
  kiln_status s = KILN_OK;
  for (size_t i = 0; i < n && !s; i++) s = d->vt->launch(d, &ops[i]);
  return s;
}

kiln_status kiln_device_submit_program(kiln_device *d, kiln_program *p,
                                       kiln_transfer_report *report) {
  if (!d->timing) return submit_program(d, p, report);
  uint64_t t0 = mono_ns();
  kiln_status s = submit_program(d, p, report);
  d->timing_submit_ns += mono_ns() - t0;
  d->timing_submits++;
  return s;
}

/* Resolves p's ops again when a memory may have been attached, detached
 * or placed since they last were (memories only grow, so a valid operand
 * stays valid); *again: it did. */
static kiln_status program_resolve(kiln_device *d, kiln_program *p,
                                   bool *again) {
  *again = false;
  if (p->checked && p->checked_epoch == d->placement_epoch) return KILN_OK;
  *again = true;
  free(p->checked);
  p->checked = malloc(p->n * sizeof *p->checked);
  if (!p->checked)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = KILN_OK;
  for (size_t i = 0; i < p->n && !s; i++) {
    s = kiln_device_check_op(d, &p->ops[i], &p->checked[i]);
    if (s) s = kiln_status_annotate(s, "program op %zu", i);
  }
  if (s) {
    free(p->checked);
    p->checked = NULL;
    return s;
  }
  p->checked_epoch = d->placement_epoch;
  return KILN_OK;
}

/* The backend's graph of p's resolved ops: recorded (captured, not run)
 * unless it has one recorded from the same ops. */
static kiln_status program_graph(kiln_device *d, kiln_program *p,
                                 bool resolved_again) {
  const kiln_device_vtable *vt = d->vt;
  const kiln_vop *v = p->checked;
  bool same = p->graph && p->recorded;
  for (size_t i = 0; same && resolved_again && i < p->n; i++)
    same = memcmp(&p->recorded[i], &v[i].dop, sizeof(kiln_dop)) == 0;
  if (same) return KILN_OK;
  drop_graph(p);
  p->recorded = malloc(p->n * sizeof *p->recorded);
  if (!p->recorded)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t i = 0; i < p->n; i++) p->recorded[i] = v[i].dop;
  kiln_status s = vt->graph_begin(d, p->recorded, p->n);
  if (!s) {
    s = launch_all(d, p->recorded, p->n);
    void *g = NULL;
    kiln_status e = vt->graph_end(d, &g);
    if (s) {
      kiln_status_free(e);
      if (g && vt->graph_free) vt->graph_free(d, g);
    } else if (e) {
      s = e;
    } else {
      p->graph = g;
    }
  }
  if (s) drop_graph(p);
  return s;
}

kiln_status kiln_program_prepare(kiln_program *p) {
  kiln_device *d = p->d;
  if (!p->n || !d->vt->graph_begin || d->no_graphs) return KILN_OK;
  bool again;
  KILN_RETURN_IF_ERROR(program_resolve(d, p, &again));
  return program_graph(d, p, again);
}

static kiln_status submit_program(kiln_device *d, kiln_program *p,
                                  kiln_transfer_report *report) {
  if (report) memset(report, 0, sizeof *report);
  if (p->d != d)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "program belongs to another device");
  if (!p->n) return KILN_OK;
  bool resolved_again;
  kiln_status s = program_resolve(d, p, &resolved_again);
  if (s) return s;
  const kiln_vop *v = p->checked;
  uint64_t up = 0;
  d->submit_gen++;
  const uint64_t t0 = d->timing ? mono_ns() : 0;
  for (size_t i = 0; i < p->n && !s; i++)
    s = kiln_coherence_before_op(d, &v[i], &up);
  if (d->timing) d->timing_coherence_ns += mono_ns() - t0;
  d->stats.bytes_to_device += up;
  if (report) report->bytes_to_device = up;
  const kiln_device_vtable *vt = d->vt;
  if (!s && vt->graph_begin && !d->no_graphs) {
    s = program_graph(d, p, resolved_again);
    if (!s) {
      const uint64_t t1 = d->timing ? mono_ns() : 0;
      s = vt->graph_launch(d, p->graph);
      if (d->timing) d->timing_launch_ns += mono_ns() - t1;
    }
  } else if (!s && !vt->launch_seq) {
    for (size_t i = 0; i < p->n && !s; i++) s = vt->launch(d, &v[i].dop);
  } else if (!s) {   /* no graph: `recorded` is just the ops, contiguous */
    if (!p->recorded) p->recorded = malloc(p->n * sizeof *p->recorded);
    if (!p->recorded)
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < p->n; i++) p->recorded[i] = v[i].dop;
    s = launch_all(d, p->recorded, p->n);
  }
  if (!s) d->stats.ops += p->n;
  return s;
}
