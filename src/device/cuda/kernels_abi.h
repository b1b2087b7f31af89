/* What kernels.cu and the C side of the cuda backend agree on: kernel
 * parameter structs (each kernel takes exactly one, by value), the error
 * record kernels write, and the dtype codes (kiln_dtype's values).
 *
 * Plain C, included by nvcc and by gcc: the same x86-64 layout on both
 * sides (nvcc lays out kernel parameters as the host compiler does). */
#ifndef KILN_DEVICE_CUDA_KERNELS_ABI_H_
#define KILN_DEVICE_CUDA_KERNELS_ABI_H_

#include <stdint.h>

enum {
  KC_F32 = 0,
  KC_F16 = 1,
  KC_BF16 = 2,
  KC_I32 = 3,
  KC_Q8_0 = 4,
};

/* A tensor view: device address of element [0,..], dtype, shape and
 * strides in elements (for Q8_0, element strides; 32 elements = 34 bytes). */
typedef struct kc_tensor {
  uint64_t addr;
  int32_t dtype;
  int32_t rank;
  int64_t shape[4];
  int64_t stride[4];
} kc_tensor;

/* Device-side failures. A kernel that finds one claims a flag in device
 * memory (atomicCAS, so the first failure since the last sync wins) and
 * the winner writes this record into host-mapped pinned memory with plain
 * stores, which sync reads after the stream is idle: no copy per sync, and
 * no atomics on host memory (not guaranteed over PCIe). */
enum {
  KC_ERR_NONE = 0,
  KC_ERR_COPY_ROW = 1,    /* value: first row, extra: rows, bound: capacity */
  KC_ERR_GATHER_ID = 2,   /* value: the id, bound: table rows */
  KC_ERR_ATTN_POS = 3,    /* value: pos0, extra: queries, bound: cache rows */
};
typedef struct kc_error {
  int32_t code;
  int32_t op_kind;
  int64_t value;
  int64_t bound;
  int64_t extra;
} kc_error;
/* Where a kernel reports: the claim flag (device memory, int32) and the
 * record (host-mapped kc_error). */
typedef struct kc_err_ref {
  uint64_t claim;
  uint64_t record;
} kc_err_ref;

/* Elementwise ops (ADD, MUL, SCALE, SILU, GELU, SWIGLU): c = f(a, b) per
 * row; b is absent, a's shape, or one row (b_bcast). */
enum { KC_EW_ADD, KC_EW_MUL, KC_EW_SCALE, KC_EW_SILU, KC_EW_GELU,
       KC_EW_SWIGLU };
typedef struct kc_ew_params {
  kc_tensor a, b, c;
  int64_t rows, cols;
  int32_t op;
  int32_t b_bcast;
  float alpha;
  int32_t vec4;          /* rows in aligned groups of 4 (load4/store4) */
} kc_ew_params;

typedef struct kc_rmsnorm_params {
  kc_tensor a, w, c;
  int64_t rows, cols;
  float eps;
  int32_t vec4;          /* a, w, c in aligned groups of 4 */
} kc_rmsnorm_params;

/* Causal when index != 0: row r belongs to query t = r / rows_per_t and
 * keeps columns 0 .. index[0] + t. */
typedef struct kc_softmax_params {
  kc_tensor a, b;
  uint64_t index;
  int64_t rows, cols, rows_per_t;
  float alpha;
  float pad_;
} kc_softmax_params;

typedef struct kc_rope_params {
  kc_tensor a, b;
  uint64_t inv_freq;     /* f32 [D/2] */
  uint64_t index;        /* 0: positions start at pos */
  int64_t pos;
  int64_t T, H, D;
  int64_t rpb;           /* kiln_rope: rows (heads) per block, 0 or 1: one */
} kc_rope_params;

typedef struct kc_argmax_params {
  kc_tensor a, b;
  int64_t rows, cols;
} kc_argmax_params;

/* b = convert(a); with index, b's dim 0 is offset by index[0] after a
 * bounds check (KC_ERR_COPY_ROW). rows/cols: a's leading elements and last
 * dimension. */
typedef struct kc_copy_params {
  kc_tensor a, b;
  uint64_t index;
  kc_err_ref err;
  int64_t rows, cols;
  int64_t vec4;          /* float types, rows in aligned groups of 4 */
} kc_copy_params;

/* ROPE in place on one query's heads [1, Hr, D] and the COPY after it that
 * appends heads [hs, hs + Hc) of the same tensor (k, then v) to a cache
 * row at copy.index: one launch (cuda_launch.c fuses them), a block per
 * head. */
typedef struct kc_rope_copy_params {
  kc_rope_params rope;
  kc_copy_params copy;
  int64_t hs;
} kc_rope_copy_params;

typedef struct kc_gather_params {
  kc_tensor table, ids, out;
  kc_err_ref err;
  int64_t T, D, V;
} kc_gather_params;

/* y[M,N] = alpha * x[M,K] @ w[N,K]^T + beta * y (beta 0: y not read).
 * Row strides in elements; the last dimensions are contiguous. */
typedef struct kc_gemv_params {
  uint64_t w, x, y;
  int64_t ws, xs, ys;
  int64_t M, N, K;
  float alpha, beta;
  int32_t wdtype;
  int32_t xvec;   /* x rows 16-byte aligned: float4 loads of x allowed */
} kc_gemv_params;

/* The one-row GEMV (decode), which can also run a group of ops the cuda
 * backend fused (cuda_launch.c says when):
 * - up to KC_GEMV1_SEGS weight matrices sharing x (q, k and v; gate and
 *   up): y_s[n] = alpha_s * w_s[n, :] . x + beta_s * y_s[n];
 * - pro = KC_PRO_RMSNORM (kernels *_norm): x is rmsnorm(a) * g, which each
 *   block computes into shared memory (K floats of dynamic shared
 *   memory); the last block to finish also stores it at x (the RMSNORM
 *   op's output);
 * - pair (kernels *_pair): segments 0 and 1 (gate, up) have the same rows
 *   and the warp that computes row n of both also stores
 *   act[n] = silu(y_0[n]) * y_1[n] (the SWIGLU op), and y_0[n] unless act
 *   is y_0.
 * Rows of all segments are numbered one after another (pair: rows of
 * segment 0). counter: a device int that is 0 between launches.
 * kiln_gemv1k_* (same params) divide the work among warps differently
 * (kernels.cu says how and when). */
enum { KC_GEMV1_SEGS = 4 };
enum { KC_PRO_NONE = 0, KC_PRO_RMSNORM = 1 };
typedef struct kc_gemv_seg {
  uint64_t w, y;
  int64_t N, ws;     /* rows, row stride (elements) */
  float alpha, beta;
} kc_gemv_seg;
typedef struct kc_gemv1_params {
  kc_gemv_seg seg[KC_GEMV1_SEGS];
  uint64_t x, a, g, act, counter;
  int64_t rows, K;
  float eps;
  int32_t nseg;
  int32_t xvec;    /* x 16-byte aligned: float4 loads of it */
  /* With the RMSNORM prologue: x overlaps neither a nor g, so block 0
   * stores it as soon as it has it; otherwise (in place) the last block to
   * finish does, counting blocks in counter. */
  int32_t x_early;
  /* Kernels *_norm_rope: the ROPE (in place on q and k, [1, H, D]) and the
   * COPY of heads hs.. (k, v) into a cache row that follow the GEMVs of
   * q, k and v (three segments, outputs back to back, heads of D rows). */
  kc_rope_copy_params rope;
} kc_gemv1_params;
/* kiln_gemv1k_*: units a block takes at once, by U (16-byte vectors a lane
 * per row) and NR (rows a unit: 2 with pair or RoPE), as the kernel is
 * compiled and the host sizes its grid. */
#define KC_GEMV1K_RB(U, NR) \
  ((U) == 1 ? 4 : (U) == 2 ? 2 : ((U) == 4 && (NR) == 1) ? 2 : 1)

/* ARGMAX of one long row over many blocks: each block's best goes to
 * partials (float value, int64 index at partials + 8 * KC_ARGMAX_BLOCKS),
 * and the last block to finish merges them. */
enum { KC_ARGMAX_BLOCKS = 256 };
typedef struct kc_argmax_wide_params {
  kc_tensor a, b;
  uint64_t partials, counter;
  int64_t cols;
} kc_argmax_wide_params;

/* C[M,N] = alpha * sum_k L(m,k) R(n,k) + beta * C, with any element
 * strides for L and R (R may be Q8_0 when rs1 == 1). */
typedef struct kc_tiled_params {
  uint64_t l, r, c;
  int64_t ls0, ls1, rs0, rs1, cs0;
  int64_t M, N, K;
  float alpha, beta;
  int32_t ldtype, rdtype;
} kc_tiled_params;

/* Attention: grid (splits, Hq, T). With splits > 1 each block writes a
 * partial (m, l, acc[D]) to scratch, and the last block of each (query,
 * head) merges them, counting in counters (an int per (t, h), 0 between
 * launches); without counters kiln_attn_combine merges them. */
enum { KC_ATTN_MAX_SPLITS = 1024 };
/* kiln_attn_dec_* (decode, fewer than KC_AT_Q queries): grid
 * (KC_AD_SPLITS, Hq, T) in clusters of KC_AD_SPLITS blocks, 256 threads;
 * splits and counters unused. */
enum { KC_AD_SPLITS = 8 };
/* kiln_attn_tile_* (prefill, D <= 128): grid (ceil(T / KC_AT_Q), Hq),
 * 256 threads; keys in tiles of KC_AT_K. */
enum { KC_AT_Q = 16, KC_AT_K = 32 };
/* kiln_attn_flash_* (prefill of at least KC_AF_Q queries, D <= 128): grid
 * (ceil(T / KC_AF_Q), Hq), 256 threads, KC_AF_SMEM(DV) bytes of dynamic
 * shared memory, DV = 64 or 128 (the head size rounded up). */
enum { KC_AF_Q = 64, KC_AF_K = 32 };
/* Its shared memory, in floats: Q [KC_AF_Q] and K [KC_AF_K] rows of
 * KC_AF_QK_ROW(DV), V [KC_AF_K] rows of DV, P [KC_AF_K] rows of KC_AF_P_ROW. */
#define KC_AF_QK_ROW(DV) ((DV) + 4)
#define KC_AF_P_ROW (KC_AF_Q + 1)
#define KC_AF_SMEM(DV)                                                  \
  ((size_t)4 * ((KC_AF_Q + KC_AF_K) * KC_AF_QK_ROW(DV) + KC_AF_K * (DV) + \
                KC_AF_K * KC_AF_P_ROW))
typedef struct kc_attn_params {
  kc_tensor q, k, v, o;
  uint64_t index;
  kc_err_ref err;
  uint64_t scratch;      /* f32 [T, Hq, splits, D + 2] */
  uint64_t counters;     /* int [T, Hq], or 0 */
  int64_t pos;
  float scale;
  int32_t splits;   /* the keys in use are shared among them at run time */
} kc_attn_params;

#endif /* KILN_DEVICE_CUDA_KERNELS_ABI_H_ */
