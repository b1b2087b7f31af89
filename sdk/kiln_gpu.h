/* kiln_gpu: tensor ops on a GPU (or kiln's cpu backend) from a Wasm guest.
 *
 * Guest-side header for clang --target=wasm32-wasi (or wasm32 without
 * libc): the imports of module "kiln_gpu", the fixed-layout structs they
 * read and write, and inline helpers. The host side is
 * include/kiln/gpu_host.h (kiln_gpu_define).
 *
 * The model. A tensor is a descriptor: which memory, byte offset, dtype,
 * shape, strides; never a byte list. The guest fills a tensor in its own
 * linear memory, submits an op that names it, syncs, and reads the result
 * through the very same pointer. Nothing is copied through the call.
 *
 * Memories. `mem` in a tensor is a handle local to this guest's session:
 *   0      the calling instance's memory 0 (its own linear memory);
 *   1..n   extra memories the host granted this session, e.g. a read-only
 *          model file mapped by the host. Find them by name with
 *          kiln_gpu_memory_lookup(); tensors the host named inside them
 *          with kiln_gpu_tensor_lookup().
 * A handle never names another guest's memory: the table is per session,
 * so a number that means something elsewhere means nothing (or only this
 * session's own grant) here.
 *
 * Asynchrony. kiln_gpu_submit() validates the op completely, queues it and
 * returns; ops run in submission order. kiln_gpu_sync() waits for all of
 * them. Results in memory are defined only after sync; so is the content
 * of any operand an op in flight writes. The guest may do its own CPU work
 * between submit and sync (on bytes no queued op touches).
 *
 * Errors. Every import returns 0 (or a non-negative value where stated) on
 * success and a negative KILN_GPU_E_* code otherwise. A failed call queues
 * nothing, leaves the device healthy and never traps the guest;
 * kiln_gpu_last_error() gives the message of the most recent failure. The
 * host checks every pointer argument against the guest's memory in 64-bit
 * arithmetic and copies each struct out of guest memory before looking at
 * it, so later guest writes to the struct cannot change a validated op.
 *
 * Placement. Each page-aligned range of a memory is MAPPED (the device
 * computes on the guest's bytes in place; on CUDA the device address
 * equals the host address) or RESIDENT (the device keeps its own copy and
 * the runtime moves exactly the bytes that changed: host writes before an
 * op reads them, device writes back at sync). The guest keeps one address
 * either way. See include/kiln/device.h for the full contract.
 *
 * Layout rules (checked by _Static_assert here and on the host): little
 * endian, natural alignment, no implicit padding. Reserved fields must be
 * zero; a non-zero reserved field is KILN_GPU_E_INVALID. */
#ifndef KILN_GPU_GUEST_H_
#define KILN_GPU_GUEST_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Error codes ---------------------------------------------------------
 * Stable numbers: part of the ABI. */
enum {
  KILN_GPU_OK = 0,
  /* The op is malformed: unknown kind, dtype or flags; rank outside 1..4;
   * shapes, strides or dtypes inconsistent with the op; misaligned
   * elements; a non-zero reserved field; an output in a read-only memory. */
  KILN_GPU_E_INVALID = -1,
  /* An operand's bytes lie (partly) outside its memory, or its byte size
   * overflows 64 bits. */
  KILN_GPU_E_RANGE = -2,
  /* A pointer argument of the call itself (op, name, out buffer) is not
   * inside the guest's memory. */
  KILN_GPU_E_FAULT = -3,
  /* No memory or program with that handle in this session. */
  KILN_GPU_E_HANDLE = -4,
  /* memory_lookup / tensor_lookup: no grant with that name. */
  KILN_GPU_E_NOT_FOUND = -5,
  /* Wrong state: program_begin while recording, program_end or
   * program_submit not matching, address queries not allowed, ... */
  KILN_GPU_E_STATE = -6,
  /* Raised on the device while ops ran (reported by sync): e.g. a token id
   * outside an embedding table, a cache row outside the cache. */
  KILN_GPU_E_DEVICE = -7,
  /* Out of device or host memory, or a session limit (programs, ops per
   * program) reached. */
  KILN_GPU_E_RESOURCE = -8,
  /* The op or placement is not supported by this device. */
  KILN_GPU_E_UNSUPPORTED = -9,
  /* Anything else (a runtime bug or a failing driver): see last_error. */
  KILN_GPU_E_INTERNAL = -10,
};

/* ---- Enums (same numbers as include/kiln/device.h) ---------------------- */

enum {
  KILN_GPU_F32 = 0,
  KILN_GPU_F16 = 1,
  KILN_GPU_BF16 = 2,
  KILN_GPU_I32 = 3,
  KILN_GPU_Q8_0 = 4, /* blocks of 32: f16 scale + 32 int8 (34 bytes) */
};

/* Op kinds. Operands a, b, c, d are inputs first, outputs last; the exact
 * shapes are in include/kiln/device.h (kiln_op_kind). */
enum {
  KILN_GPU_OP_NOP = 0,       /* nothing: measures submission cost */
  KILN_GPU_OP_GEMM = 1,      /* c[M,N] = alpha*op(a)@op(b) + beta*c */
  KILN_GPU_OP_GEMV = 2,      /* c[M,N] = alpha*b[M,K]@a[N,K]^T + beta*c */
  KILN_GPU_OP_ADD = 3,       /* c = a + b (b: same shape or one row) */
  KILN_GPU_OP_MUL = 4,       /* c = a * b */
  KILN_GPU_OP_SCALE = 5,     /* b = alpha * a */
  KILN_GPU_OP_RMSNORM = 6,   /* c = a / sqrt(mean(a^2) + eps) * b */
  KILN_GPU_OP_SOFTMAX = 7,   /* b = softmax(alpha * a) per row */
  KILN_GPU_OP_ROPE = 8,      /* b = rope(a), c = inverse frequencies */
  KILN_GPU_OP_SILU = 9,      /* b = a * sigmoid(a) */
  KILN_GPU_OP_GELU = 10,     /* b = gelu(a), tanh approximation */
  KILN_GPU_OP_SWIGLU = 11,   /* c = silu(a) * b */
  KILN_GPU_OP_ARGMAX = 12,   /* b (i32 [rows]) = argmax of each row of a */
  KILN_GPU_OP_COPY = 13,     /* b = a converted to b's dtype */
  KILN_GPU_OP_GATHER = 14,   /* c[T,D] = rows b[t] of table a[V,D] */
  KILN_GPU_OP_ATTENTION = 15,/* d = causal attention(q=a, k=b, v=c) */
  KILN_GPU_OP_KIND_COUNT = 16,
};

enum {
  KILN_GPU_TRANS_A = 1u << 0,
  KILN_GPU_TRANS_B = 1u << 1,
};

enum {
  KILN_GPU_PLACEMENT_NONE = 0,
  KILN_GPU_PLACEMENT_MAPPED = 1,
  KILN_GPU_PLACEMENT_RESIDENT = 2,
  KILN_GPU_PLACEMENT_DEVICE = 3,   /* device-only: sync copies nothing back */
};

#define KILN_GPU_MAX_RANK 4

/* ---- Structs --------------------------------------------------------------
 * A tensor with rank 0 is absent (an all-zero struct is an absent
 * operand). Element [i0..ir-1] is at byte offset + (sum i_k*stride[k]) *
 * dtype size in memory `mem`. Strides count elements; all strides 0 means
 * contiguous row-major. Unused shape/stride entries (k >= rank) must be 0. */
typedef struct kiln_gpu_tensor {
  uint32_t mem;       /* memory handle: 0 = own memory, 1..n = granted */
  uint32_t dtype;     /* KILN_GPU_F32 ... */
  uint32_t rank;      /* 1..4; 0 = absent */
  uint32_t reserved;  /* 0 */
  uint64_t offset;    /* byte offset of element [0,..,0] in `mem` */
  int64_t shape[KILN_GPU_MAX_RANK];
  int64_t stride[KILN_GPU_MAX_RANK];
} kiln_gpu_tensor;   /* 88 bytes */

typedef struct kiln_gpu_op {
  uint32_t kind;      /* KILN_GPU_OP_* */
  uint32_t flags;     /* KILN_GPU_TRANS_* */
  kiln_gpu_tensor a, b, c, d;
  /* Optional i32 tensor read when the op runs (a position for ROPE,
   * SOFTMAX, ATTENTION; a row for COPY). A recorded program replays with
   * new positions because they are read from memory. */
  kiln_gpu_tensor index;
  float alpha, beta, eps;
  uint32_t reserved;  /* 0 */
  int64_t pos;
} kiln_gpu_op;       /* 472 bytes */

/* What kiln_gpu_stats() writes: the device's counters since it opened,
 * then what the last successful submit and sync moved. */
typedef struct kiln_gpu_stats {
  uint64_t ops;                 /* ops run (programs count each op) */
  uint64_t syncs;
  uint64_t bytes_to_device;     /* RESIDENT uploads, all time */
  uint64_t bytes_to_host;       /* RESIDENT copy-backs, all time */
  uint64_t write_faults;        /* first stores to protected pages */
  uint64_t resident_bytes;      /* device memory held for RESIDENT ranges */
  uint64_t mapped_bytes;        /* host bytes registered for MAPPED use */
  uint64_t last_op_bytes_to_device;    /* inputs uploaded by the last submit */
  uint64_t last_op_bytes_to_host;
  uint64_t last_sync_bytes_to_device;
  uint64_t last_sync_bytes_to_host;    /* results copied back by last sync */
  uint32_t device_kind;         /* 0 cpu, 1 cuda */
  uint32_t reserved;
} kiln_gpu_stats;    /* 96 bytes */

_Static_assert(sizeof(kiln_gpu_tensor) == 88, "kiln_gpu_tensor layout");
_Static_assert(offsetof(kiln_gpu_tensor, offset) == 16, "tensor.offset");
_Static_assert(offsetof(kiln_gpu_tensor, shape) == 24, "tensor.shape");
_Static_assert(offsetof(kiln_gpu_tensor, stride) == 56, "tensor.stride");
_Static_assert(sizeof(kiln_gpu_op) == 472, "kiln_gpu_op layout");
_Static_assert(offsetof(kiln_gpu_op, a) == 8, "op.a");
_Static_assert(offsetof(kiln_gpu_op, b) == 96, "op.b");
_Static_assert(offsetof(kiln_gpu_op, c) == 184, "op.c");
_Static_assert(offsetof(kiln_gpu_op, d) == 272, "op.d");
_Static_assert(offsetof(kiln_gpu_op, index) == 360, "op.index");
_Static_assert(offsetof(kiln_gpu_op, alpha) == 448, "op.alpha");
_Static_assert(offsetof(kiln_gpu_op, eps) == 456, "op.eps");
_Static_assert(offsetof(kiln_gpu_op, pos) == 464, "op.pos");
_Static_assert(sizeof(kiln_gpu_stats) == 96, "kiln_gpu_stats layout");

/* ---- Imports ---------------------------------------------------------------
 * Wasm signatures in brackets. Pointers are i32 offsets in the caller's
 * memory 0; memory offsets and lengths in any memory are i64. */
#if defined(__wasm__)
#define KILN_GPU_IMPORT_(name) \
  __attribute__((import_module("kiln_gpu"), import_name(#name)))
#else
#define KILN_GPU_IMPORT_(name)
#endif

/* Validate and queue *op. [(i32) -> i32] */
KILN_GPU_IMPORT_(submit) int32_t kiln_gpu_submit(const kiln_gpu_op *op);
/* Wait for every queued op; copy RESIDENT results back. Returns the first
 * failure raised on the device since the last sync (KILN_GPU_E_DEVICE or
 * another code). [() -> i32] */
KILN_GPU_IMPORT_(sync) int32_t kiln_gpu_sync(void);
/* Place [offset, offset+length) of memory `mem`, widened to whole host
 * pages, as KILN_GPU_PLACEMENT_MAPPED, _RESIDENT or _DEVICE. Syncs first.
 * RESIDENT and DEVICE ranges may not overlap (the same range may change
 * between the two); placing MAPPED again ends a residency. A DEVICE range
 * lives on the device only: ops read and write it there, sync copies
 * nothing back, the guest's own bytes there are stale until the range is
 * placed MAPPED or RESIDENT again, which brings the device's bytes back.
 * [(i32, i64, i64, i32) -> i32] */
KILN_GPU_IMPORT_(place) int32_t kiln_gpu_place(uint32_t mem, uint64_t offset,
                                               uint64_t length,
                                               uint32_t placement);
/* The placement of byte `offset` of `mem` (>= 0), or an error.
 * [(i32, i64) -> i32] */
KILN_GPU_IMPORT_(placement) int32_t kiln_gpu_placement(uint32_t mem,
                                                       uint64_t offset);
/* Writes the address the device uses for byte `offset` of `mem` to
 * *out (u64). For MAPPED memory on CUDA it equals the host address: the
 * pointer-identity report. Host addresses are private to the host; the
 * embedder enables this query (KILN_GPU_E_STATE otherwise).
 * [(i32, i64, i32) -> i32] */
KILN_GPU_IMPORT_(address) int32_t kiln_gpu_address(uint32_t mem,
                                                   uint64_t offset,
                                                   uint64_t *out);
/* Start recording: the following submits are checked and appended to a
 * program instead of running. [() -> i32] */
KILN_GPU_IMPORT_(program_begin) int32_t kiln_gpu_program_begin(void);
/* Stop recording; returns the program's handle (>= 1). [() -> i32] */
KILN_GPU_IMPORT_(program_end) int32_t kiln_gpu_program_end(void);
/* Queue every op of a program (on CUDA: one graph launch).
 * [(i32) -> i32] */
KILN_GPU_IMPORT_(program_submit) int32_t kiln_gpu_program_submit(int32_t h);
/* [(i32) -> i32] */
KILN_GPU_IMPORT_(program_free) int32_t kiln_gpu_program_free(int32_t h);
/* Copies the message of the most recent failure (NUL-terminated,
 * truncated to len - 1 bytes) to buf and returns its full length; 0 when
 * nothing has failed yet. len 0: only the length. [(i32, i32) -> i32] */
KILN_GPU_IMPORT_(last_error) int32_t kiln_gpu_last_error(char *buf,
                                                         uint32_t len);
/* [(i32) -> i32] */
KILN_GPU_IMPORT_(stats) int32_t kiln_gpu_stats_get(kiln_gpu_stats *out);
/* The handle (>= 1) of the memory the host granted under `name`.
 * [(i32, i32) -> i32] */
KILN_GPU_IMPORT_(memory_lookup) int32_t kiln_gpu_memory_lookup(
    const char *name, uint32_t name_len);
/* Fills *out with the tensor the host named `name` (its mem is a handle
 * of this session). [(i32, i32, i32) -> i32] */
KILN_GPU_IMPORT_(tensor_lookup) int32_t kiln_gpu_tensor_lookup(
    const char *name, uint32_t name_len, kiln_gpu_tensor *out);

#undef KILN_GPU_IMPORT_

/* ---- Helpers ---------------------------------------------------------- */

/* The guest offset of a pointer into its own memory (handle 0). */
static inline uint64_t kiln_gpu_offset_of(const void *p) {
  return (uint64_t)(uintptr_t)p;
}

/* A contiguous row-major tensor at byte `offset` of memory `mem`. */
static inline kiln_gpu_tensor kiln_gpu_tensor_at(uint32_t mem, uint64_t offset,
                                                 uint32_t dtype, uint32_t rank,
                                                 const int64_t *shape) {
  kiln_gpu_tensor t = {0};
  t.mem = mem;
  t.dtype = dtype;
  t.rank = rank;
  t.offset = offset;
  for (uint32_t k = 0; k < rank && k < KILN_GPU_MAX_RANK; k++)
    t.shape[k] = shape[k];
  return t;
}

/* Tensors over the guest's own memory. */
static inline kiln_gpu_tensor kiln_gpu_tensor_1d(const void *p, uint32_t dtype,
                                                 int64_t n) {
  int64_t s[1] = {n};
  return kiln_gpu_tensor_at(0, kiln_gpu_offset_of(p), dtype, 1, s);
}
static inline kiln_gpu_tensor kiln_gpu_tensor_2d(const void *p, uint32_t dtype,
                                                 int64_t rows, int64_t cols) {
  int64_t s[2] = {rows, cols};
  return kiln_gpu_tensor_at(0, kiln_gpu_offset_of(p), dtype, 2, s);
}
static inline kiln_gpu_tensor kiln_gpu_tensor_3d(const void *p, uint32_t dtype,
                                                 int64_t d0, int64_t d1,
                                                 int64_t d2) {
  int64_t s[3] = {d0, d1, d2};
  return kiln_gpu_tensor_at(0, kiln_gpu_offset_of(p), dtype, 3, s);
}

static inline kiln_gpu_op kiln_gpu_op_make(uint32_t kind) {
  kiln_gpu_op op = {0};
  op.kind = kind;
  op.alpha = 1.0f;
  return op;
}

/* c = alpha * op(a) @ op(b) + beta * c, queued. */
static inline int32_t kiln_gpu_gemm(kiln_gpu_tensor a, kiln_gpu_tensor b,
                                    kiln_gpu_tensor c, uint32_t flags,
                                    float alpha, float beta) {
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_GEMM);
  op.flags = flags;
  op.a = a;
  op.b = b;
  op.c = c;
  op.alpha = alpha;
  op.beta = beta;
  return kiln_gpu_submit(&op);
}

/* c[M,N] = b[M,K] @ w[N,K]^T (a weight matrix applied to rows of x). */
static inline int32_t kiln_gpu_gemv(kiln_gpu_tensor w, kiln_gpu_tensor x,
                                    kiln_gpu_tensor y) {
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_GEMV);
  op.a = w;
  op.b = x;
  op.c = y;
  return kiln_gpu_submit(&op);
}

/* Ops of shape (in) -> out and (in, in) -> out. */
static inline int32_t kiln_gpu_unary(uint32_t kind, kiln_gpu_tensor a,
                                     kiln_gpu_tensor out, float alpha) {
  kiln_gpu_op op = kiln_gpu_op_make(kind);
  op.a = a;
  op.b = out;
  op.alpha = alpha;
  return kiln_gpu_submit(&op);
}
static inline int32_t kiln_gpu_binary(uint32_t kind, kiln_gpu_tensor a,
                                      kiln_gpu_tensor b, kiln_gpu_tensor out) {
  kiln_gpu_op op = kiln_gpu_op_make(kind);
  op.a = a;
  op.b = b;
  op.c = out;
  return kiln_gpu_submit(&op);
}

/* bf16 conversions (round to nearest even; NaN stays NaN). */
static inline uint16_t kiln_gpu_f32_to_bf16(float f) {
  union {
    float f;
    uint32_t u;
  } v = {f};
  if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 64);
  return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);
}
static inline float kiln_gpu_bf16_to_f32(uint16_t h) {
  union {
    uint32_t u;
    float f;
  } v = {(uint32_t)h << 16};
  return v.f;
}

/* IEEE half conversions (round to nearest even). */
static inline uint16_t kiln_gpu_f32_to_f16(float f) {
  union {
    float f;
    uint32_t u;
  } v = {f};
  uint32_t sign = (v.u >> 16) & 0x8000u;
  uint32_t a = v.u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);   /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  /* overflow */
  if (a < 0x38800000u) {                                    /* subnormal */
    if (a < 0x33000000u) return (uint16_t)sign;
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                 /* 14 .. 24 */
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = ((a - 0x38000000u) >> 13);
  uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
  return (uint16_t)(sign | h);
}
static inline float kiln_gpu_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  union {
    uint32_t u;
    float f;
  } v;
  if (e == 0) {
    if (!m) {
      v.u = sign;
      return v.f;
    }
    v.f = (float)m * (1.0f / 16777216.0f); /* m * 2^-24 */
    v.u |= sign;
    return v.f;
  }
  if (e == 31) v.u = sign | 0x7f800000u | (m << 13);
  else v.u = sign | ((e + 112) << 23) | (m << 13);
  return v.f;
}

#ifdef __cplusplus
}
#endif
#endif /* KILN_GPU_GUEST_H_ */
