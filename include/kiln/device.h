/* kiln devices: the compute plane.
 *
 * A kiln_device runs tensor ops on the bytes of kiln_memory objects, the
 * same memories that Wasm guests import. Operands are tensor descriptors
 * (memory, byte offset, dtype, shape, strides), never byte lists: the guest
 * fills a tensor in its linear memory, the device computes on those bytes,
 * and the guest reads the result at the same address.
 *
 * Backends:
 *   cpu   the reference. Every op implemented plainly, multi-threaded,
 *         always present; CI runs it. With `cpu_mirror` it keeps resident
 *         ranges in separate buffers, like a discrete GPU, so that the
 *         coherence protocol below is exercised without a GPU.
 *   cuda  loaded at run time (libcuda, cuBLAS via dlopen), so kiln starts
 *         and works where there is no GPU, driver or CUDA library.
 *
 * Placement. A memory must be attached to a device before ops may use it.
 * Each page-aligned range of an attached memory has a placement:
 *   MAPPED    the host pages themselves are visible to the device (CUDA:
 *             registered, device pointer == host pointer); the device reads
 *             and writes the guest's bytes in place. New pages from a grow
 *             are registered as they appear. Good for data touched once.
 *   RESIDENT  the device keeps a copy of the range in its own memory (the
 *             guest keeps its address and plain pointer semantics). The
 *             runtime moves exactly what changed, when it must:
 *             - host writes are tracked per page (the range is kept
 *               write-protected; the first guest or host store to a page
 *               faults once, marks it dirty, and unprotects it); before an
 *               op reads a resident range, its dirty bytes go to the device;
 *             - bytes the device writes are copied back to the host at the
 *               next sync (exactly the bytes ops wrote), so after sync the
 *               guest reads results through its own pointer.
 *             Good for data the device reuses and the host reads or
 *             writes: weights, inputs, results. docs/gpu.md gives the
 *             measurements behind it.
 *   DEVICE    the device keeps the only current copy of the range: ops
 *             read and write it there, a sync copies nothing back, and
 *             host writes do not reach the device (the host's bytes are
 *             stale until the range ends). The copy starts as the host's
 *             bytes; placing the range MAPPED or RESIDENT again, detaching
 *             the memory or releasing the device brings the device's bytes
 *             back, so nothing the ops wrote is lost. Good for what only
 *             the device uses: activations, a KV cache, scratch. A RESIDENT
 *             range may be placed DEVICE (the same range) and back.
 *   Read-only memories (model files mapped with kiln_memory_create_from_file)
 *   attach as RESIDENT: their bytes go to the device without passing
 *   through any guest.
 *   On the cpu backend (no mirror) every placement computes in place.
 *
 * Asynchrony. kiln_device_submit validates an op completely, then queues
 * it and returns; ops run in submission order. kiln_device_sync waits for
 * all of them, copies device-written resident bytes back, and reports any
 * error raised on the device (e.g. a token id outside an embedding table).
 * Results in host memory are defined only after sync.
 *
 * Validation. Before anything reaches a device every operand is checked:
 * its memory is attached to this device; shape, strides and dtype are
 * consistent with the op; element counts and byte extents are computed in
 * 64-bit arithmetic without overflow and lie inside the memory; elements are
 * aligned for their dtype; outputs are writable. A bad op gets
 * KILN_CODE_INVALID_ARGUMENT or KILN_CODE_OUT_OF_RANGE and nothing runs.
 *
 * Thread safety: a kiln_device is one stream: use it from one thread at a
 * time. Several devices (one per guest) may be open at once on one GPU. */
#ifndef KILN_DEVICE_H_
#define KILN_DEVICE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/memory.h"
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_device kiln_device;
typedef struct kiln_program kiln_program;

typedef enum kiln_device_kind {
  KILN_DEVICE_CPU = 0,
  KILN_DEVICE_CUDA = 1,
} kiln_device_kind;

typedef struct kiln_device_options {
  /* "auto" (or NULL), "cpu", "cuda", "cuda:N". auto picks cuda:0 when a
   * usable GPU is present and cpu otherwise; kiln_device_describe says
   * which and why. */
  const char *spec;
  int cpu_threads;   /* cpu backend workers; 0: one per core */
  bool cpu_mirror;   /* cpu backend: separate buffers for RESIDENT ranges */
  /* RESIDENT ranges of at most this many bytes are not write-protected:
   * every op that reads one sends the bytes it reads (minus those the
   * device wrote), which for small tensors (a token's activations) costs
   * less than the page faults of tracking. 0: track every range. Default
   * (options_init) 64 KiB; KILN_RESIDENT_EAGER_MAX overrides it. */
  uint64_t resident_eager_max;
} kiln_device_options;

void kiln_device_options_init(kiln_device_options *o);
kiln_status kiln_device_open(const kiln_device_options *o, kiln_device **out);
void kiln_device_retain(kiln_device *d);
void kiln_device_release(kiln_device *d);

kiln_device_kind kiln_device_kind_of(const kiln_device *d);
/* One line: which device, and for "auto" why it was chosen, e.g.
 * "cpu (2 threads); auto: no CUDA driver (libcuda.so.1: not found)". */
const char *kiln_device_describe(const kiln_device *d);

/* ---- Tensors ----------------------------------------------------------- */

typedef enum kiln_dtype {
  KILN_DTYPE_F32 = 0,
  KILN_DTYPE_F16 = 1,
  KILN_DTYPE_BF16 = 2,
  KILN_DTYPE_I32 = 3,
  /* GGUF Q8_0: blocks of 32 elements, each an f16 scale then 32 int8
   * (34 bytes). Only as a GEMV/GATHER weight or a COPY source; the last
   * dimension must be a multiple of 32 and contiguous. */
  KILN_DTYPE_Q8_0 = 4,
  KILN_DTYPE_COUNT
} kiln_dtype;

const char *kiln_dtype_name(kiln_dtype t);
/* Bytes per element (Q8_0: 0, see kiln_dtype_row_bytes). */
size_t kiln_dtype_size(kiln_dtype t);
/* Bytes of `n` contiguous elements; false if n is not a valid count for
 * the dtype (Q8_0: multiple of 32) or the size overflows. */
bool kiln_dtype_row_bytes(kiln_dtype t, int64_t n, uint64_t *out_bytes);

#define KILN_MAX_RANK 4

/* A view of elements in a memory. Element [i0,..,ir-1] is at byte
 * offset + (sum i_k * stride[k]) * dtype_size. Strides count elements and
 * must be positive (a dimension of size 1 may have any stride >= 0); all
 * strides 0 means contiguous row-major. For Q8_0 the last dimension is
 * contiguous and the stride of the one before counts elements too (a
 * multiple of 32). A tensor with memory == NULL is absent. */
typedef struct kiln_tensor {
  kiln_memory *memory;
  uint64_t offset;
  kiln_dtype dtype;
  uint32_t rank;                  /* 1 .. KILN_MAX_RANK */
  int64_t shape[KILN_MAX_RANK];
  int64_t stride[KILN_MAX_RANK];
} kiln_tensor;

/* Fills a contiguous row-major descriptor. */
kiln_tensor kiln_tensor_make(kiln_memory *m, uint64_t offset, kiln_dtype t,
                             uint32_t rank, const int64_t *shape);

/* ---- Ops ---------------------------------------------------------------
 * Operands are a, b, c, d (inputs first, outputs last, per kind below).
 * "rows" means all dimensions but the last, flattened; those leading
 * dimensions must be collapsible (stride[k] == stride[k+1] * shape[k+1])
 * and the last dimension contiguous, unless the op says otherwise.
 * f32 is the compute and output type unless stated. */
typedef enum kiln_op_kind {
  KILN_OP_NOP = 0,   /* nothing; measures submission cost */
  /* c[M,N] = alpha * op(a) @ op(b) + beta * c. a is [M,K] ([K,M] with
   * TRANS_A), b is [K,N] ([N,K] with TRANS_B), both f32, f16 or bf16 (the
   * same dtype), f32 accumulate; c f32. Rank 2, last dimension contiguous. */
  KILN_OP_GEMM,
  /* c[M,N] = alpha * b[M,K] @ a[N,K]^T + beta * c: a weight matrix `a`
   * (f32, f16, bf16, q8_0) applied to M rows of f32 activations `b`.
   * M == 1 is a matrix-vector product (decode); larger M is prefill. On
   * cuda, M > 8 with f16/bf16 weights rounds b to the weights' type and
   * runs on tensor cores (f32 accumulate), as frameworks do. */
  KILN_OP_GEMV,
  KILN_OP_ADD,       /* c = a + b; b has a's shape or is one row [cols] */
  KILN_OP_MUL,       /* c = a * b; likewise */
  KILN_OP_SCALE,     /* b = alpha * a */
  /* c = a / sqrt(mean(a^2 over the row) + eps) * b; b is [cols]. */
  KILN_OP_RMSNORM,
  /* b = softmax(alpha * a) per row. With index present, row t of a
   * [T, ..., S] only considers columns 0 .. index[0] + t (causal), the
   * rest of the row is written as 0. */
  KILN_OP_SOFTMAX,
  /* Rotary position embedding, Hugging Face "rotate half" convention:
   * a is [T, H, D] (D even), b the output (may be a itself), c holds the
   * D/2 inverse frequencies (f32; the caller applies any scaling), and
   * token t has position pos0 + t with pos0 = index[0] if index is present
   * and `pos` otherwise. */
  KILN_OP_ROPE,
  KILN_OP_SILU,      /* b = a * sigmoid(a) */
  KILN_OP_GELU,      /* b = gelu(a), tanh approximation */
  KILN_OP_SWIGLU,    /* c = silu(a) * b */
  KILN_OP_ARGMAX,    /* b (i32 [rows]) = index of the max of each row of a
                      * (first one on ties) */
  /* b = a converted to b's dtype, element by element; any strides, same
   * shape. With index present, b's first dimension is a capacity and a's
   * rows land at rows index[0] .. index[0] + a.shape[0] - 1 of b (a KV
   * cache append); a row index outside b fails the op on the device. */
  KILN_OP_COPY,
  /* c[T, D] = rows b[t] of table a[V, D] (f32, f16, bf16, q8_0), b i32
   * [T]; an id outside [0, V) fails the op on the device. */
  KILN_OP_GATHER,
  /* Causal attention with grouped queries: a = q [T, Hq, D] f32,
   * b = k cache [S, Hkv, D], c = v cache [S, Hkv, D] (f32, f16 or bf16;
   * Hq a multiple of Hkv), d = out [T, Hq, D] f32. Query t (position
   * pos0 + t, pos0 = index[0] or `pos`) attends to cache rows
   * 0 .. pos0 + t with scores scaled by alpha. Strides are honoured per
   * dimension (the last contiguous). */
  KILN_OP_ATTENTION,
  KILN_OP_KIND_COUNT
} kiln_op_kind;

enum {
  KILN_OP_TRANS_A = 1u << 0,
  KILN_OP_TRANS_B = 1u << 1,
};

typedef struct kiln_op {
  kiln_op_kind kind;
  uint32_t flags;
  kiln_tensor a, b, c, d;
  /* Optional i32 tensor read on the device when the op runs (a position
   * for ROPE/SOFTMAX/ATTENTION, a row for COPY). Because it is read from
   * memory, a recorded program replays with new positions without being
   * recorded again. */
  kiln_tensor index;
  float alpha, beta, eps;
  int64_t pos;
} kiln_op;

const char *kiln_op_kind_name(kiln_op_kind k);

/* What an op or a sync moved between host and device memory. */
typedef struct kiln_transfer_report {
  uint64_t bytes_to_device;
  uint64_t bytes_to_host;
} kiln_transfer_report;

/* Validates and queues one op. `report` (may be NULL) receives the bytes
 * moved for this op's inputs. */
kiln_status kiln_device_submit(kiln_device *d, const kiln_op *op,
                               kiln_transfer_report *report);
/* Checks an op as submit would, without queueing it. */
kiln_status kiln_device_validate(kiln_device *d, const kiln_op *op);
/* Waits for every queued op; copies device-written RESIDENT bytes back.
 * Returns the first device-side failure since the last sync, if any. */
kiln_status kiln_device_sync(kiln_device *d, kiln_transfer_report *report);

/* ---- Placement ---------------------------------------------------------- */

typedef enum kiln_placement {
  KILN_PLACEMENT_NONE = 0,     /* memory not attached */
  KILN_PLACEMENT_MAPPED = 1,
  KILN_PLACEMENT_RESIDENT = 2,
  KILN_PLACEMENT_DEVICE = 3,
} kiln_placement;

const char *kiln_placement_name(kiln_placement p);

/* Makes a memory usable by ops on this device: MAPPED as a whole (read-only
 * memories: RESIDENT). Attaching twice is harmless. The device keeps a
 * reference until detach or release. */
kiln_status kiln_device_attach(kiln_device *d, kiln_memory *m);
/* attach for a read-only memory whose tensors begin at byte `data_offset`
 * (a safetensors file's data section begins wherever its header ends):
 * the device copy is laid out so that this byte lands on a 256-byte
 * boundary, so kernels can use wide aligned loads on every tensor whose
 * offset from there is aligned. Addresses stay consistent: ops name the
 * same offsets as always. A writable memory ignores data_offset. */
kiln_status kiln_device_attach_aligned(kiln_device *d, kiln_memory *m,
                                       uint64_t data_offset);
void kiln_device_detach(kiln_device *d, kiln_memory *m);
/* Places [offset, offset + length), widened to whole host pages. RESIDENT
 * and DEVICE ranges may not overlap each other (except that the same range
 * may change between the two); placing a range MAPPED again ends its
 * residency (after syncing it back). Syncs the device first.
 * KILN_DEVICE_ONLY=0 in the environment makes DEVICE requests RESIDENT (for
 * comparisons). */
kiln_status kiln_device_place(kiln_device *d, kiln_memory *m,
                              uint64_t offset, uint64_t length,
                              kiln_placement p);
kiln_placement kiln_device_placement(kiln_device *d, const kiln_memory *m,
                                     uint64_t offset);
/* The address the device uses for byte `offset` of `m`: the host address
 * for MAPPED ranges (pointer identity), the device copy for RESIDENT and
 * DEVICE. */
kiln_status kiln_device_address(kiln_device *d, const kiln_memory *m,
                                uint64_t offset, uint64_t *out_address);

typedef struct kiln_device_stats {
  uint64_t ops;                 /* ops run (programs count each op) */
  uint64_t syncs;
  uint64_t bytes_to_device;     /* RESIDENT uploads, all time */
  uint64_t bytes_to_host;       /* RESIDENT copy-backs (and DEVICE ranges
                                   brought back), all time */
  uint64_t write_faults;        /* first stores to protected pages */
  uint64_t resident_bytes;      /* device memory held for RESIDENT and
                                   DEVICE ranges */
  uint64_t mapped_bytes;        /* host bytes registered for MAPPED use */
  /* Ops of programs that ran inside another op's kernel (cuda fuses an
   * RMSNORM into the GEMVs after it, GEMVs sharing x, a SWIGLU into the
   * GEMVs it combines); counted when launched or recorded into a graph. */
  uint64_t fused_ops;
  /* One-row GEMV launches whose kernel shares K among a block's warps
   * (cuda: kiln_gemv1k, for rows a warp each would leave the memory
   * idle); counted when launched or recorded into a graph. */
  uint64_t split_gemvs;
  /* Kernels recorded into a graph as programmatic dependents of the kernel
   * before them (cuda: they request their weights before that kernel
   * finishes, then wait for it). */
  uint64_t pdl_launches;
} kiln_device_stats;
void kiln_device_get_stats(kiln_device *d, kiln_device_stats *out);

/* ---- Programs (record once, replay many times) --------------------------
 * A program is a list of validated ops submitted as one unit: on cuda it
 * becomes a CUDA graph, captured at the first submit and relaunched after.
 * Values that change between replays (positions, token ids) are read from
 * memory through `index` operands and tensors, so the program itself never
 * changes. */
kiln_status kiln_program_create(kiln_device *d, kiln_program **out);
kiln_status kiln_program_add(kiln_program *p, const kiln_op *op);
size_t kiln_program_op_count(const kiln_program *p);
/* Makes what the first submit would otherwise make (the backend's graph
 * of the program: captured, not run), so that it costs no time then.
 * Optional; a later attach, detach or placement may make a submit
 * record it again. */
kiln_status kiln_program_prepare(kiln_program *p);
kiln_status kiln_device_submit_program(kiln_device *d, kiln_program *p,
                                       kiln_transfer_report *report);
void kiln_program_release(kiln_program *p);

#ifdef __cplusplus
}
#endif
#endif /* KILN_DEVICE_H_ */
