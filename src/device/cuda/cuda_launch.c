/* The cuda backend's launch: a validated, resolved op (kiln_dop) becomes
 * one or two kernel launches, or a cuBLAS call, on the device's stream.
 *
 * Grids depend only on shapes, never on values read on the device
 * (positions, row indices, token ids), so a program captured into a CUDA
 * graph replays correctly when those values change. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "base/reserve.h"
#include "device/cuda/cuda_internal.h"

static kc_tensor kt(const kiln_dtensor *t) {
  kc_tensor k = {0};
  k.addr = t->addr;
  k.dtype = (int32_t)t->dtype;
  k.rank = (int32_t)t->rank;
  for (uint32_t i = 0; i < t->rank && i < KILN_MAX_RANK; i++) {
    k.shape[i] = t->shape[i];
    k.stride[i] = t->stride[i];
  }
  return k;
}

/* Product of all dimensions but the last, and the last. */
static int64_t lead_rows(const kiln_dtensor *t) {
  int64_t r = 1;
  for (uint32_t i = 0; i + 1 < t->rank; i++) r *= t->shape[i];
  return r;
}
static int64_t last_dim(const kiln_dtensor *t) {
  return t->rank ? t->shape[t->rank - 1] : 1;
}
/* Element stride between consecutive rows (leading dimensions are
 * collapsible for the ops that use this). */
static int64_t row_stride(const kiln_dtensor *t) {
  return t->rank >= 2 ? t->stride[t->rank - 2] : last_dim(t);
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

static kiln_status launch_smem(kiln_cuda_device *cd, int fn_id, CUfunction f,
                               int64_t gx, int64_t gy, int64_t gz, int block,
                               unsigned smem, void *params) {
  void *args[1] = {params};
  CUresult r = cd->cu->cuLaunchKernel(f, (unsigned)gx, (unsigned)gy,
                                      (unsigned)gz, (unsigned)block, 1, 1,
                                      smem, cd->stream, params ? args : NULL,
                                      NULL);
  if (r) {
    char what[64];
    snprintf(what, sizeof what, "cuLaunchKernel (kernel %d)", fn_id);
    return kiln_cuda_status(KILN_CODE_INTERNAL, r, what);
  }
  return KILN_OK;
}
static kiln_status launch(kiln_cuda_device *cd, int fn_id, CUfunction f,
                          int64_t gx, int64_t gy, int64_t gz, int block,
                          void *params) {
  return launch_smem(cd, fn_id, f, gx, gy, gz, block, 0, params);
}

static bool overlap(const kiln_dtensor *a, const kiln_dtensor *b);
static void extent(const kiln_dtensor *t, uint64_t *lo, uint64_t *hi);

/* Whether the kernel for the next op of a sequence may be recorded as a
 * programmatic dependent of the kernel before it (kernels.cu, pdl_wait):
 * only while kiln_cuda_launch_seq records a program into a graph, not for
 * its first op, and only if no earlier op of the program writes what the
 * kernel reads before it waits (pre[0..npre): a GEMV's weights;
 * cd->seq_written holds what they write). Any earlier op may still be
 * running then: each such kernel lets the next one start as soon as all
 * its own blocks have. */
static bool pdl_may(const kiln_cuda_device *cd, const kiln_dtensor *const *pre,
                    int npre) {
  if (!cd->pdl || !cd->capturing || !cd->seq_active || cd->seq_lost ||
      cd->seq_written_n == 0)   /* the first op: nothing before it */
    return false;
  for (int k = 0; k < npre; k++) {
    uint64_t lo, hi;
    extent(pre[k], &lo, &hi);
    for (size_t i = 0; i < cd->seq_written_n; i++)
      if (lo < cd->seq_written[i].hi && cd->seq_written[i].lo < hi) return false;
  }
  return true;
}

/* Adds the byte ranges op writes to cd->seq_written, merging: a decode
 * step writes the same few buffers each time, so the list stays short. */
static void seq_wrote(kiln_cuda_device *cd, const kiln_dop *op) {
  for (int w = 0; w < KILN_OPND_COUNT && !cd->seq_lost; w++) {
    if (!(op->writes & (1u << w))) continue;
    uint64_t lo, hi;
    extent(kiln_dop_operand(op, w), &lo, &hi);
    if (lo == hi) continue;
    size_t i = 0;
    while (i < cd->seq_written_n) {   /* absorb every range it touches */
      if (lo <= cd->seq_written[i].hi && cd->seq_written[i].lo <= hi) {
        if (cd->seq_written[i].lo < lo) lo = cd->seq_written[i].lo;
        if (cd->seq_written[i].hi > hi) hi = cd->seq_written[i].hi;
        cd->seq_written[i] = cd->seq_written[--cd->seq_written_n];
      } else {
        i++;
      }
    }
    if (!kiln_reserve((void **)&cd->seq_written, &cd->seq_written_cap,
                      cd->seq_written_n + 1, sizeof *cd->seq_written, 16)) {
      cd->seq_lost = true;
      return;
    }
    cd->seq_written[cd->seq_written_n].lo = lo;
    cd->seq_written[cd->seq_written_n].hi = hi;
    cd->seq_written_n++;
  }
}

/* launch(), as a programmatic dependent of the kernel before it when pdl
 * (which pdl_may decided). */
static kiln_status launch_pdl(kiln_cuda_device *cd, int fn_id, CUfunction f,
                              int64_t gx, int64_t gy, int64_t gz, int block,
                              void *params, bool pdl) {
  if (!pdl) return launch(cd, fn_id, f, gx, gy, gz, block, params);
  kiln_cu_launch_attr attr = {
      .id = KILN_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION};
  attr.value.programmatic_stream_serialization = 1;
  const kiln_cu_launch_config c = {
      .grid_x = (unsigned)gx, .grid_y = (unsigned)gy, .grid_z = (unsigned)gz,
      .block_x = (unsigned)block, .block_y = 1, .block_z = 1,
      .stream = cd->stream, .attrs = &attr, .n_attrs = 1};
  void *args[1] = {params};
  CUresult r = cd->cu->cuLaunchKernelEx(&c, f, args, NULL);
  if (r) {
    char what[64];
    snprintf(what, sizeof what, "cuLaunchKernelEx (kernel %d)", fn_id);
    return kiln_cuda_status(KILN_CODE_INTERNAL, r, what);
  }
  cd->base.stats.pdl_launches += 1;
  return KILN_OK;
}

/* A grid for rows x cols work done by (column-chunk, row) blocks with
 * grid-stride loops in both directions. */
static void grid2d(int64_t rows, int64_t cols, int64_t *gx, int64_t *gy) {
  *gx = min64(cdiv(cols, 256), 1024);
  *gy = min64(rows, min64(65535, max64(1, 131072 / *gx)));
}

/* Threads for one block per row: enough warps for cols, at most 256. */
static int row_block(int64_t cols) {
  if (cols >= 256) return 256;
  return (int)max64(32, cdiv(cols, 32) * 32);
}

/* Whether the rows of t can be read or written four elements at a time
 * (load4/store4): a float type, the last dimension contiguous, and every
 * row starting at a multiple of 4 elements from an address aligned for 4.
 * The caller checks that the row length is a multiple of 4. */
static bool vec4_ok(const kiln_dtensor *t) {
  if (t->dtype != KILN_DTYPE_F32 && t->dtype != KILN_DTYPE_F16 &&
      t->dtype != KILN_DTYPE_BF16)
    return false;
  if (t->addr % (4 * kiln_dtype_size(t->dtype))) return false;
  if (!t->rank) return true;
  if (t->shape[t->rank - 1] > 1 && t->stride[t->rank - 1] != 1) return false;
  for (uint32_t k = 0; k + 1 < t->rank; k++)
    if (t->shape[k] > 1 && t->stride[k] % 4) return false;
  return true;
}

static kc_err_ref err_ref(kiln_cuda_device *cd) {
  kc_err_ref e = {cd->err_claim, cd->err_record_dev};
  return e;
}

/* ---- elementwise, row-wise ------------------------------------------------ */

static kiln_status launch_ew(kiln_cuda_device *cd, const kiln_dtensor *a,
                             const kiln_dtensor *b, const kiln_dtensor *c,
                             int op, float alpha) {
  kc_ew_params p = {0};
  p.a = kt(a);
  if (b) p.b = kt(b);
  p.c = kt(c);
  p.rows = lead_rows(a);
  p.cols = last_dim(a);
  p.op = op;
  p.alpha = alpha;
  if (p.rows <= 0 || p.cols <= 0) return KILN_OK;
  p.vec4 = cd->vec4 && p.cols % 4 == 0 && vec4_ok(a) && (!b || vec4_ok(b)) &&
           vec4_ok(c);
  int64_t gx, gy;
  grid2d(p.rows, p.vec4 ? p.cols / 4 : p.cols, &gx, &gy);
  return launch(cd, KC_FN_EW, cd->fn[KC_FN_EW], gx, gy, 1, 256, &p);
}

static kiln_status launch_rmsnorm(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_rmsnorm_params p = {0};
  p.a = kt(&op->a);
  p.w = kt(&op->b);
  p.c = kt(&op->c);
  p.rows = lead_rows(&op->a);
  p.cols = last_dim(&op->a);
  p.eps = op->eps;
  if (p.rows <= 0 || p.cols <= 0) return KILN_OK;
  p.vec4 = cd->vec4 && p.cols % 4 == 0 && vec4_ok(&op->a) &&
           vec4_ok(&op->b) && vec4_ok(&op->c);
  /* A decode step normalises one long row: give it a whole 1024-thread
   * block so that its two passes are not latency-bound. */
  const int threads = p.rows <= 8 && p.cols >= 1024 ? 1024 : row_block(p.cols);
  return launch(cd, KC_FN_RMSNORM, cd->fn[KC_FN_RMSNORM],
                min64(p.rows, 1 << 20), 1, 1, threads, &p);
}

static kiln_status launch_softmax(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_softmax_params p = {0};
  p.a = kt(&op->a);
  p.b = kt(&op->b);
  p.index = op->index.addr;
  p.rows = lead_rows(&op->a);
  p.cols = last_dim(&op->a);
  p.alpha = op->alpha;
  int64_t T = op->a.rank >= 2 ? op->a.shape[0] : 1;
  if (p.rows <= 0 || p.cols <= 0 || T <= 0) return KILN_OK;
  p.rows_per_t = p.rows / T;
  return launch(cd, KC_FN_SOFTMAX, cd->fn[KC_FN_SOFTMAX],
                min64(p.rows, 1 << 20), 1, 1, row_block(p.cols), &p);
}

static kiln_status launch_rope(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_rope_params p = {0};
  p.a = kt(&op->a);
  p.b = kt(&op->b);
  if (op->a.rank == 2) {   /* [T, D]: one head */
    for (int i = 0; i < 2; i++) {
      kc_tensor *t = i ? &p.b : &p.a;
      t->rank = 3;
      t->shape[2] = t->shape[1];
      t->stride[2] = t->stride[1];
      t->shape[1] = 1;
      t->stride[1] = 0;
    }
  } else if (op->a.rank != 3) {
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "rope: a must be [T, H, D]");
  }
  p.inv_freq = op->c.addr;
  p.index = op->index.addr;
  p.pos = op->pos;
  p.T = p.a.shape[0];
  p.H = p.a.shape[1];
  p.D = p.a.shape[2];
  if (p.T * p.H <= 0 || p.D < 2) return KILN_OK;
  int64_t gx, gy;
  const int64_t half = p.D / 2, rows = p.T * p.H;
  if (cd->vec4 && half <= 64) {   /* several heads a block: 128 threads busy */
    p.rpb = 128 / half;
    gx = 1;
    gy = min64(cdiv(rows, p.rpb), 65535);
  } else {
    grid2d(rows, half, &gx, &gy);
  }
  return launch(cd, KC_FN_ROPE, cd->fn[KC_FN_ROPE], gx, gy, 1, 128, &p);
}

static kiln_status launch_argmax(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_argmax_params p = {0};
  p.a = kt(&op->a);
  p.b = kt(&op->b);
  p.rows = lead_rows(&op->a);
  p.cols = last_dim(&op->a);
  if (p.rows <= 0 || p.cols <= 0) return KILN_OK;
  if (p.rows == 1 && p.cols >= 16384) {   /* greedy decoding: many blocks */
    kc_argmax_wide_params w = {0};
    w.a = p.a;
    w.b = p.b;
    w.cols = p.cols;
    w.partials = cd->aux + KILN_CUDA_AUX_ARGMAX_PARTIALS;
    w.counter = cd->aux + KILN_CUDA_AUX_ARGMAX_COUNTER;
    const int64_t blocks =
        min64(min64(2 * cd->sm_count, KC_ARGMAX_BLOCKS), cdiv(p.cols, 1024));
    return launch(cd, KC_FN_ARGMAX_WIDE, cd->fn[KC_FN_ARGMAX_WIDE], blocks, 1,
                  1, 256, &w);
  }
  /* Few long rows (greedy decoding over a vocabulary): 1024 threads each. */
  const int threads = p.rows <= 8 && p.cols >= 16384 ? 1024 : row_block(p.cols);
  return launch(cd, KC_FN_ARGMAX, cd->fn[KC_FN_ARGMAX],
                min64(p.rows, 1 << 20), 1, 1, threads, &p);
}

static kiln_status launch_copy(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_copy_params p = {0};
  p.a = kt(&op->a);
  p.b = kt(&op->b);
  p.index = op->index.addr;
  p.err = err_ref(cd);
  p.rows = lead_rows(&op->a);
  p.cols = last_dim(&op->a);
  if (p.rows <= 0 || p.cols <= 0) return KILN_OK;
  p.vec4 = cd->vec4 && p.cols % 4 == 0 && vec4_ok(&op->a) && vec4_ok(&op->b);
  int64_t gx, gy;
  grid2d(p.rows, p.vec4 ? p.cols / 4 : p.cols, &gx, &gy);
  return launch(cd, KC_FN_COPY, cd->fn[KC_FN_COPY], gx, gy, 1, 256, &p);
}

static kiln_status launch_gather(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_gather_params p = {0};
  p.table = kt(&op->a);
  p.ids = kt(&op->b);
  p.out = kt(&op->c);
  p.err = err_ref(cd);
  p.T = lead_rows(&op->b) * last_dim(&op->b);
  p.D = last_dim(&op->a);
  p.V = op->a.shape[0];
  if (p.T <= 0 || p.D <= 0) return KILN_OK;
  int64_t gx, gy;
  grid2d(p.T, p.D, &gx, &gy);
  return launch(cd, KC_FN_GATHER, cd->fn[KC_FN_GATHER], gx, gy, 1, 256, &p);
}

/* ---- matrix products -------------------------------------------------------- */

static int blas_type(kiln_dtype t) {
  switch (t) {
    case KILN_DTYPE_F32: return KILN_CUDA_R_32F;
    case KILN_DTYPE_F16: return KILN_CUDA_R_16F;
    case KILN_DTYPE_BF16: return KILN_CUDA_R_16BF;
    default: return -1;
  }
}

/* cuBLAS leading dimension of a row-major rank-2 view, or -1 when cuBLAS
 * cannot express it (rows overlapping, or too large for its int). */
static int64_t blas_ld(const kiln_dtensor *t) {
  int64_t ld = t->stride[0];
  if (t->shape[0] == 1) ld = max64(ld, t->shape[1]);
  ld = max64(ld, 1);
  if (ld < t->shape[1] || t->stride[1] != 1 || ld > INT_MAX) return -1;
  return ld;
}

static bool fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* Column-major cuBLAS on row-major data: C[M,N] row-major is C^T [N,M]
 * column-major, and C^T = op(B)^T op(A)^T, so cuBLAS gets (B, A) with the
 * caller's transposes and m = N, n = M. f32 uses CUBLAS_COMPUTE_32F (full
 * f32, never TF32: results match the cpu reference to 1e-4; TF32 would not).
 * f16/bf16 inputs accumulate in f32 (tensor cores). */
static kiln_status blas_gemm(kiln_cuda_device *cd, int trans_left,
                             int trans_right, const kiln_dtensor *left,
                             const kiln_dtensor *right, const kiln_dtensor *c,
                             int64_t M, int64_t N, int64_t K, float alpha,
                             float beta, bool *done) {
  *done = false;
  if (!cd->blas) return KILN_OK;
  int lt = blas_type(left->dtype), rt = blas_type(right->dtype);
  int64_t ldl = blas_ld(left), ldr = blas_ld(right), ldc = blas_ld(c);
  if (lt < 0 || rt < 0 || lt != rt || ldl < 0 || ldr < 0 || ldc < 0 ||
      !fits_int(M) || !fits_int(N) || !fits_int(K) ||
      c->dtype != KILN_DTYPE_F32)
    return KILN_OK;
  cublasStatus_t bs = cd->blas->cublasGemmEx(
      cd->blas_handle, trans_right ? KILN_CUBLAS_OP_T : KILN_CUBLAS_OP_N,
      trans_left ? KILN_CUBLAS_OP_T : KILN_CUBLAS_OP_N, (int)N, (int)M, (int)K,
      &alpha, (const void *)(uintptr_t)right->addr, rt, (int)ldr,
      (const void *)(uintptr_t)left->addr, lt, (int)ldl, &beta,
      (void *)(uintptr_t)c->addr, KILN_CUDA_R_32F, (int)ldc,
      KILN_CUBLAS_COMPUTE_32F, KILN_CUBLAS_GEMM_DEFAULT);
  if (bs)
    return kiln_make_status(KILN_CODE_INTERNAL, "cublasGemmEx: %s",
                            cd->blas->cublasGetStatusString(bs));
  *done = true;
  return KILN_OK;
}

static kiln_status launch_tiled(kiln_cuda_device *cd, kc_tiled_params *p) {
  if (p->M <= 0 || p->N <= 0) return KILN_OK;
  int64_t gx = cdiv(p->N, 64), gy = cdiv(p->M, 64);
  if (gy > 65535 || gx > INT_MAX)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "matrix product of %lld x %lld too large",
                            (long long)p->M, (long long)p->N);
  return launch(cd, KC_FN_TILED, cd->fn[KC_FN_TILED], gx, gy, 1, 256, p);
}

static kiln_status launch_gemm(kiln_cuda_device *cd, const kiln_dop *op) {
  const bool ta = op->flags & KILN_OP_TRANS_A, tb = op->flags & KILN_OP_TRANS_B;
  const kiln_dtensor *a = &op->a, *b = &op->b, *c = &op->c;
  const int64_t M = c->shape[0], N = c->shape[1];
  const int64_t K = ta ? a->shape[0] : a->shape[1];
  if (M <= 0 || N <= 0) return KILN_OK;
  bool done;
  KILN_RETURN_IF_ERROR(
      blas_gemm(cd, ta, tb, a, b, c, M, N, K, op->alpha, op->beta, &done));
  if (done) return KILN_OK;
  kc_tiled_params p = {0};
  p.l = a->addr;
  p.ldtype = a->dtype;
  p.ls0 = ta ? a->stride[1] : a->stride[0];
  p.ls1 = ta ? a->stride[0] : a->stride[1];
  p.r = b->addr;
  p.rdtype = b->dtype;
  p.rs0 = tb ? b->stride[0] : b->stride[1];
  p.rs1 = tb ? b->stride[1] : b->stride[0];
  p.c = c->addr;
  p.cs0 = c->stride[0];
  p.M = M;
  p.N = N;
  p.K = K;
  p.alpha = op->alpha;
  p.beta = op->beta;
  return launch_tiled(cd, &p);
}

static int dtype_slot(kiln_dtype t) {
  return t == KILN_DTYPE_F32 ? 0 : t == KILN_DTYPE_F16 ? 1
                                 : t == KILN_DTYPE_BF16 ? 2 : -1;
}

/* ---- one-row GEMV and the fusions around it ------------------------------ */

/* What one kiln_gemv1_* launch does: up to KC_GEMV1_SEGS GEMVs sharing x,
 * optionally after the RMSNORM that makes x (norm) and before the SWIGLU
 * that combines the first two (swiglu). */
typedef struct gemv1_group {
  const kiln_dop *norm;
  const kiln_dop *gemv[KC_GEMV1_SEGS];
  int nseg;
  const kiln_dop *swiglu;
  /* The ROPE and KV-cache COPY after norm + q, k, v (match_rope_epilogue),
   * done by the kernel's RoPE epilogue. */
  bool rope;
  kc_rope_copy_params rc;
} gemv1_group;

/* Whether kiln_gemv1k can do p (variant: 0 plain, 1 norm + pair, 2 norm +
 * RoPE epilogue), and with which kernel (*fn) and how many blocks (*grid).
 * It needs every row on 16 bytes, K a whole number of vectors, x (or a and
 * g) on 16 bytes, an eighth of a row within 32 x U vectors a lane (U = 8 at
 * most, 4 for the fused variants); and at most 32768 units (beyond that,
 * as a long LM head, kiln_gemv1 is what was measured). */
static bool gemv1_split(const kiln_cuda_device *cd, const kc_gemv1_params *p,
                        int slot, int variant, CUfunction *fn, int64_t *grid) {
  if (!cd->splitk) return false;
  const int esize = slot == 0 ? 4 : 2, V = 16 / esize;
  const int64_t units = variant == 2 ? p->rows / 2 : p->rows;
  if (p->K <= 0 || p->K % V || p->K > INT_MAX / 2 || units > 32768 || !p->xvec)
    return false;
  for (int i = 0; i < p->nseg; i++)
    if (p->seg[i].w % 16 || (p->seg[i].ws * esize) % 16) return false;
  const int64_t per = cdiv(p->K / V, 8);
  int ui = 0;
  while (ui < 4 && 32 * (1 << ui) < per) ui++;
  if (ui == 4 || !cd->gemv1k[slot][variant][ui]) return false;
  *fn = cd->gemv1k[slot][variant][ui];
  *grid = cdiv(units, KC_GEMV1K_RB(1 << ui, variant ? 2 : 1));
  /* RMSNORM + gate/up: every block sums all of a, and requests its next
   * step's weights early; at most 2 blocks an SM (bench/floor/: a 1B
   * gate/up 18.6 us against 20.5 at 3 and 20.0 at 6 without the early
   * request). */
  if (variant == 1) *grid = min64(*grid, 2 * (int64_t)cd->sm_count);
  return true;
}

static kiln_status launch_gemv1(kiln_cuda_device *cd, const gemv1_group *g) {
  const kiln_dop *g0 = g->gemv[0];
  kc_gemv1_params p = {0};
  p.x = g0->b.addr;
  p.K = last_dim(&g0->a);
  p.nseg = g->nseg;
  for (int i = 0; i < g->nseg; i++) {
    const kiln_dop *op = g->gemv[i];
    p.seg[i] = (kc_gemv_seg){.w = op->a.addr, .y = op->c.addr,
                             .N = op->a.shape[0], .ws = op->a.stride[0],
                             .alpha = op->alpha, .beta = op->beta};
    p.rows += p.seg[i].N;
  }
  bool xvec = p.x % 16 == 0;
  if (g->norm) {
    p.a = g->norm->a.addr;
    p.g = g->norm->b.addr;
    p.eps = g->norm->eps;
    p.counter = cd->aux + KILN_CUDA_AUX_GEMV_COUNTER;
    xvec = p.a % 16 == 0 && p.g % 16 == 0;
  }
  if (g->swiglu) {
    p.act = g->swiglu->c.addr;
    p.rows = p.seg[0].N;
  }
  p.xvec = xvec;
  if (p.rows <= 0) return KILN_OK;
  if (g->rope) p.rope = g->rc;
  /* The RMSNORM output, when it is not the norm's own input, can be stored
   * by block 0 as soon as it has it, rather than by the last block. */
  if (g->norm)
    p.x_early = cd->x_early && !overlap(&g->norm->c, &g->norm->a) &&
                !overlap(&g->norm->c, &g->norm->b);
  const int slot = dtype_slot(g0->a.dtype);
  const int sv = !g->norm && !g->swiglu && !g->rope ? 0
                 : g->norm && g->swiglu && !g->rope   ? 1
                 : g->norm && g->rope && !g->swiglu   ? 2
                                                      : -1;
  CUfunction kfn;
  int64_t kgrid;
  if (sv >= 0 && gemv1_split(cd, &p, slot, sv, &kfn, &kgrid)) {
    cd->base.stats.split_gemvs += 1;
    const kiln_dtensor *w[KC_GEMV1_SEGS];
    for (int i = 0; i < g->nseg; i++) w[i] = &g->gemv[i]->a;
    return launch_pdl(cd, KC_FN_GEMV_ANY, kfn, kgrid, 1, 1, 256, &p,
                      pdl_may(cd, w, g->nseg));
  }
  /* A warp per row (RoPE epilogue: per pair of rows); with the RMSNORM
   * prologue, at most as many blocks as the GPU holds at once (each
   * normalises x once, then loops over rows). */
  const int64_t blocks = cdiv(g->rope ? p.rows / 2 : p.rows, 8);
  const int64_t grid =
      g->norm ? min64(blocks, 3 * (int64_t)cd->sm_count) : min64(blocks, INT_MAX);
  const int variant = g->rope ? 4 : (g->norm ? 2 : 0) + (g->swiglu ? 1 : 0);
  return launch_smem(cd, KC_FN_GEMV_ANY,
                     cd->gemv1[slot][variant], grid, 1, 1,
                     256, g->norm ? (unsigned)(p.K * 4) : 0, &p);
}

/* Byte range [*lo, *hi) an operand can touch (strides are never negative
 * here). */
static void extent(const kiln_dtensor *t, uint64_t *lo, uint64_t *hi) {
  uint64_t span = 1;
  for (uint32_t i = 0; i < t->rank; i++) {
    if (t->shape[i] <= 0) {
      *lo = *hi = t->addr;
      return;
    }
    span += (uint64_t)(t->shape[i] - 1) * (uint64_t)t->stride[i];
  }
  const uint64_t bytes = t->dtype == KILN_DTYPE_Q8_0 ? (span / 32 + 1) * 34
                         : (t->dtype == KILN_DTYPE_F16 || t->dtype == KILN_DTYPE_BF16)
                             ? span * 2 : span * 4;
  *lo = t->addr;
  *hi = t->addr + bytes;
}
static bool overlap(const kiln_dtensor *a, const kiln_dtensor *b) {
  uint64_t al, ah, bl, bh;
  extent(a, &al, &ah);
  extent(b, &bl, &bh);
  return al < bh && bl < ah;
}

/* x normalised into shared memory: at most 48 KiB, the default limit. */
#define KILN_CUDA_NORM_FUSE_MAX_K 12288

/* A contiguous f32 vector of n elements (shape [n] or [1, n]). */
static bool f32_row(const kiln_dtensor *t, int64_t n) {
  if (t->dtype != KILN_DTYPE_F32 || last_dim(t) != n || lead_rows(t) != 1)
    return false;
  return t->stride[t->rank - 1] == 1;
}

/* A GEMV the one-row kernel runs: M = 1, f32/f16/bf16 weights with
 * contiguous rows, f32 x and y. */
static bool gemv1_ok(const kiln_dop *op) {
  if (op->kind != KILN_OP_GEMV || dtype_slot(op->a.dtype) < 0) return false;
  const int64_t K = last_dim(&op->a);
  return op->a.rank == 2 && op->a.stride[1] == 1 && f32_row(&op->b, K) &&
         f32_row(&op->c, op->a.shape[0]);
}

/* The longest run at ops[0..n) that one gemv1 launch can do, in *g; 0 if
 * fewer than two ops. Fused ops must not feed each other: every output is
 * disjoint from every input of the group (except SWIGLU writing over its
 * own gate input and RMSNORM over its own input, which the kernel
 * orders) and from every other output. */
static size_t match_gemv1(const kiln_dop *ops, size_t n, gemv1_group *g) {
  memset(g, 0, sizeof *g);
  size_t i = 0;
  if (ops[0].kind == KILN_OP_RMSNORM) {
    const kiln_dop *nm = &ops[0];
    const int64_t K = last_dim(&nm->a);
    if (n < 2 || K > KILN_CUDA_NORM_FUSE_MAX_K || !f32_row(&nm->a, K) ||
        !f32_row(&nm->b, K) ||
        !f32_row(&nm->c, K) || !gemv1_ok(&ops[1]) || ops[1].b.addr != nm->c.addr ||
        last_dim(&ops[1].a) != K)
      return 0;
    if (overlap(&nm->c, &nm->b) ||
        (overlap(&nm->c, &nm->a) && nm->c.addr != nm->a.addr))
      return 0;
    g->norm = nm;
    i = 1;
  }
  for (; i < n && g->nseg < KC_GEMV1_SEGS; i++) {
    const kiln_dop *op = &ops[i];
    if (!gemv1_ok(op)) break;
    if (g->nseg) {
      const kiln_dop *g0 = g->gemv[0];
      if (op->b.addr != g0->b.addr || op->a.dtype != g0->a.dtype ||
          last_dim(&op->a) != last_dim(&g0->a))
        break;
    }
    g->gemv[g->nseg++] = op;
  }
  if (!g->nseg) return 0;
  if (i < n && ops[i].kind == KILN_OP_SWIGLU && g->nseg == 2) {
    const kiln_dop *sw = &ops[i], *gt = g->gemv[0], *up = g->gemv[1];
    const int64_t N = gt->a.shape[0];
    if (up->a.shape[0] == N && f32_row(&sw->a, N) && f32_row(&sw->b, N) &&
        f32_row(&sw->c, N) && sw->a.addr == gt->c.addr &&
        sw->b.addr == up->c.addr &&
        (sw->c.addr == sw->a.addr ||
         (!overlap(&sw->c, &gt->c) && !overlap(&sw->c, &up->c)))) {
      g->swiglu = sw;
      i++;
    }
  }
  if (i < 2) return 0;
  /* Inputs and outputs of the group. */
  const kiln_dtensor *in[2 * KC_GEMV1_SEGS + 2], *out[KC_GEMV1_SEGS + 2];
  int nin = 0, nout = 0;
  for (int s = 0; s < g->nseg; s++) {
    in[nin++] = &g->gemv[s]->a;
    out[nout++] = &g->gemv[s]->c;
  }
  in[nin++] = &g->gemv[0]->b;
  if (g->norm) {
    in[nin++] = &g->norm->a;
    in[nin++] = &g->norm->b;
    out[nout++] = &g->norm->c;
  }
  if (g->swiglu && g->swiglu->c.addr != g->swiglu->a.addr)
    out[nout++] = &g->swiglu->c;
  for (int o = 0; o < nout; o++) {
    for (int k = 0; k < nin; k++) {
      if (in[k] == &g->gemv[0]->b && g->norm && out[o] == &g->norm->c)
        continue;   /* x is the norm's output by construction */
      if (g->norm && out[o] == &g->norm->c && in[k] == &g->norm->a &&
          g->norm->c.addr == g->norm->a.addr)
        continue;   /* in-place RMSNORM: stored after every read */
      if (overlap(out[o], in[k])) return 0;
    }
    for (int k = o + 1; k < nout; k++)
      if (overlap(out[o], out[k])) return 0;
  }
  return i;
}

/* Bytes of x in 16 bits that a prefill GEMV (many rows of x, bf16 or
 * f16 weights, cuBLAS) converts x into; 0 for any other op. */
static uint64_t xconv_need(const kiln_cuda_device *cd, const kiln_dop *op) {
  const kiln_dtensor *w = &op->a, *x = &op->b, *y = &op->c;
  if (op->kind != KILN_OP_GEMV || lead_rows(x) <= KC_GEMV_MT_MAX ||
      (w->dtype != KILN_DTYPE_BF16 && w->dtype != KILN_DTYPE_F16) ||
      !cd->blas || x->rank != 2 || y->rank != 2)
    return 0;
  return (uint64_t)lead_rows(x) * (uint64_t)last_dim(w) * 2;
}

/* Makes the 16-bit x buffer hold at least `need` bytes: false when it
 * cannot (recording a graph, or out of device memory; the launch then
 * takes the tiled kernel). */
static bool xconv_reserve(kiln_cuda_device *cd, uint64_t need) {
  if (need <= cd->xconv_bytes) return true;
  if (cd->capturing) return false;
  CUdeviceptr b = 0;
  if (cd->cu->cuMemAlloc(&b, (size_t)need) != KILN_CUDA_SUCCESS) return false;
  if (cd->xconv) {
    if (!kiln_reserve((void **)&cd->xconv_old, &cd->xconv_old_cap,
                      cd->xconv_old_n + 1, sizeof *cd->xconv_old, 4)) {
      cd->cu->cuMemFree(b);
      return false;
    }
    cd->xconv_old[cd->xconv_old_n++] = cd->xconv;
  }
  cd->xconv = b;
  cd->xconv_bytes = need;
  return true;
}

void kiln_cuda_prepare(kiln_cuda_device *cd, const kiln_dop *ops, size_t n) {
  uint64_t need = 0;
  for (size_t i = 0; i < n; i++) {
    const uint64_t b = xconv_need(cd, &ops[i]);
    if (b > need) need = b;
  }
  xconv_reserve(cd, need);   /* if it cannot, the launches fall back */
}

static kiln_status launch_gemv(kiln_cuda_device *cd, const kiln_dop *op) {
  const kiln_dtensor *w = &op->a, *x = &op->b, *y = &op->c;
  kc_gemv_params p = {0};
  p.w = w->addr;
  p.x = x->addr;
  p.y = y->addr;
  p.N = w->shape[0];
  p.K = last_dim(w);
  p.M = lead_rows(x);
  p.ws = w->stride[0];
  p.xs = row_stride(x);
  p.ys = row_stride(y);
  p.alpha = op->alpha;
  p.beta = op->beta;
  p.wdtype = w->dtype;
  if (p.M <= 0 || p.N <= 0) return KILN_OK;
  /* f32 weights, one row (KILN_CUDA_SGEMV=cublas): cublasSgemv, the call
   * a native program makes. Row-major w[N, K] is column-major [K, N]. */
  if (p.M == 1 && cd->sgemv && w->dtype == KILN_DTYPE_F32 && cd->blas &&
      fits_int(p.N) && fits_int(p.K) && fits_int(p.ws) && p.ws >= p.K) {
    cublasStatus_t bs = cd->blas->cublasSgemv(
        cd->blas_handle, KILN_CUBLAS_OP_T, (int)p.K, (int)p.N, &p.alpha,
        (const float *)(uintptr_t)p.w, (int)p.ws,
        (const float *)(uintptr_t)p.x, 1, &p.beta, (float *)(uintptr_t)p.y, 1);
    if (bs)
      return kiln_make_status(KILN_CODE_INTERNAL, "cublasSgemv: %s",
                              cd->blas->cublasGetStatusString(bs));
    return KILN_OK;
  }
  /* One row: kiln_gemv1k where it qualifies (as in a fused group). */
  if (p.M == 1 && dtype_slot(w->dtype) >= 0) {
    kc_gemv1_params q = {0};
    q.seg[0] = (kc_gemv_seg){.w = p.w, .y = p.y, .N = p.N, .ws = p.ws,
                             .alpha = p.alpha, .beta = p.beta};
    q.nseg = 1;
    q.x = p.x;
    q.rows = p.N;
    q.K = p.K;
    q.xvec = p.x % 16 == 0;
    CUfunction fn;
    int64_t grid;
    if (gemv1_split(cd, &q, dtype_slot(w->dtype), 0, &fn, &grid)) {
      cd->base.stats.split_gemvs += 1;
      return launch_pdl(cd, KC_FN_GEMV_ANY, fn, grid, 1, 1, 256, &q,
                        pdl_may(cd, &w, 1));
    }
  }
  const int64_t blocks = cdiv(p.N, 8);   /* 8 warps of 256 threads */
  if (p.M <= KC_GEMV_MT_MAX) {
    const int slot = dtype_slot(w->dtype);
    if (slot >= 0) {
      /* Any row alignment (the kernel reads from the 16-byte boundary
       * below each row); float4 loads of x only where x allows them. */
      p.xvec = p.x % 16 == 0 && p.xs % 4 == 0;
      return launch(cd, KC_FN_GEMV_ANY, cd->gemv[slot][p.M - 1], blocks, 1,
                      1, 256, &p);
    } else if (w->dtype == KILN_DTYPE_Q8_0 && p.w % 2 == 0) {
      p.xvec = p.x % 16 == 0 && p.xs % 4 == 0;
      return launch(cd, KC_FN_GEMV_ANY, cd->gemv_q8[p.M - 1], blocks, 1, 1,
                    256, &p);
    }
    return launch(cd, KC_FN_GEMV_ANY, cd->fn[KC_FN_GEMV_ANY], blocks, 1, 1,
                  256, &p);
  }
  /* Prefill: many rows of x share every row of w. f32 weights go to cuBLAS
   * (c = b @ a^T); f16/bf16 weights too, after x is converted to their type
   * (tensor cores; f32 accumulate); the rest to the tiled kernel, which
   * converts w on load. */
  if (w->dtype == KILN_DTYPE_F32 && x->rank == 2 && y->rank == 2) {
    bool done;
    KILN_RETURN_IF_ERROR(blas_gemm(cd, 0, 1, x, w, y, p.M, p.N, p.K,
                                   op->alpha, op->beta, &done));
    if (done) return KILN_OK;
  }
  const uint64_t need = xconv_need(cd, op);
  if (need && xconv_reserve(cd, need)) {
    kiln_dop conv = {.kind = KILN_OP_COPY};
    conv.a = *x;
    conv.b = (kiln_dtensor){.addr = cd->xconv, .dtype = w->dtype, .rank = 2,
                            .shape = {p.M, p.K}, .stride = {p.K, 1}};
    KILN_RETURN_IF_ERROR(launch_copy(cd, &conv));
    bool done;
    KILN_RETURN_IF_ERROR(blas_gemm(cd, 0, 1, &conv.b, w, y, p.M, p.N, p.K,
                                   op->alpha, op->beta, &done));
    if (done) return KILN_OK;
  }
  kc_tiled_params t = {0};
  t.l = p.x;
  t.ldtype = KILN_DTYPE_F32;
  t.ls0 = p.xs;
  t.ls1 = 1;
  t.r = p.w;
  t.rdtype = w->dtype;
  t.rs0 = p.ws;
  t.rs1 = 1;
  t.c = p.y;
  t.cs0 = p.ys;
  t.M = p.M;
  t.N = p.N;
  t.K = p.K;
  t.alpha = p.alpha;
  t.beta = p.beta;
  return launch_tiled(cd, &t);
}

/* ---- attention ---------------------------------------------------------------- */

static kiln_status launch_attention(kiln_cuda_device *cd, const kiln_dop *op) {
  kc_attn_params p = {0};
  p.q = kt(&op->a);
  p.k = kt(&op->b);
  p.v = kt(&op->c);
  p.o = kt(&op->d);
  p.index = op->index.addr;
  p.err = err_ref(cd);
  p.scratch = cd->scratch;
  p.pos = op->pos;
  p.scale = op->alpha;
  const int64_t T = p.q.shape[0], Hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t S = p.k.shape[0];
  if (T <= 0 || Hq <= 0 || D <= 0) return KILN_OK;
  const int kslot = dtype_slot(op->b.dtype);
  if (kslot < 0 || op->c.dtype != op->b.dtype)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "attention on cuda: k and v caches must share "
                            "one dtype of f32, f16, bf16");
  const int dpl = D <= 32 ? 0 : D <= 64 ? 1 : D <= 128 ? 2 : D <= 256 ? 3 : -1;
  if (dpl < 0)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "attention on cuda: head size %lld > 256",
                            (long long)D);
  if (T > 65535 || Hq > 65535)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "attention on cuda: %lld queries x %lld heads",
                            (long long)T, (long long)Hq);
  /* Long prefill: register-blocked tiles of 64 queries. */
  if (cd->flash_attention && T >= KC_AF_Q && dpl <= 2) {
    p.splits = 1;
    const int dv = dpl <= 1 ? 0 : 1;
    return launch_smem(cd, 120 + kslot, cd->attn_flash[kslot][dv],
                       cdiv(T, KC_AF_Q), Hq, 1, 256,
                       (unsigned)KC_AF_SMEM(64 << dv), &p);
  }
  /* Prefill: tiles of keys shared by tiles of queries. */
  if (cd->tile_attention && T >= KC_AT_Q && dpl <= 2) {
    p.splits = 1;
    return launch(cd, 110 + kslot, cd->attn_tile[kslot][dpl], cdiv(T, KC_AT_Q),
                  Hq, 1, 256, &p);
  }
  /* Decode: a cluster of blocks per (query, head), merged on chip. */
  if (cd->dec_attention) {
    p.splits = KC_AD_SPLITS;
    return launch_pdl(cd, 130 + kslot, cd->attn_dec[kslot][dpl], KC_AD_SPLITS,
                      Hq, T, 256, &p, pdl_may(cd, NULL, 0));
  }
  /* Split the cache across blocks until the GPU has ~attn_blocks per SM, in
   * chunks of at least attn_min_keys, as far as the scratch allows. Shapes only:
   * the same grid serves every position a graph replays with. */
  const int64_t nq = T * Hq;
  const int64_t part = nq * (D + 2) * (int64_t)sizeof(float);
  int64_t splits = min64(cdiv(max64(S, 1), cd->attn_min_keys), cdiv(cd->attn_blocks * cd->sm_count, nq));
  splits = min64(splits, (int64_t)(KILN_CUDA_SCRATCH_BYTES / part));
  splits = max64(1, min64(splits, KC_ATTN_MAX_SPLITS));
  int64_t chunk = cdiv(max64(S, 1), splits);
  splits = cdiv(max64(S, 1), chunk);
  p.splits = (int32_t)splits;
  /* The last block of each (query, head) merges its splits when there is
   * a counter for every pair; otherwise a second kernel does. */
  if (splits > 1 && nq <= KILN_CUDA_AUX_ATTN_SLOTS)
    p.counters = cd->aux + KILN_CUDA_AUX_ATTN_COUNTERS;
  KILN_RETURN_IF_ERROR(launch(cd, 100 + kslot, cd->attn[kslot][dpl], splits,
                              Hq, T, 128, &p));
  if (splits == 1 || p.counters) return KILN_OK;
  return launch(cd, KC_FN_ATTN_COMBINE, cd->fn[KC_FN_ATTN_COMBINE], Hq, T, 1,
                128, &p);
}

/* ---- dispatch -------------------------------------------------------------------- */

static kiln_status launch_op(kiln_cuda_device *cd, const kiln_dop *op);

/* Runs fn(cd, arg) timed on its own when profiling (stream synced around
 * it; graphs are off then), counting `count` ops of `kind`; *dt (dt may
 * be NULL): the seconds it took, 0 when not timed. */
static kiln_status timed(kiln_cuda_device *cd, kiln_op_kind kind, size_t count,
                         kiln_status (*fn)(kiln_cuda_device *, const void *),
                         const void *arg, double *dt) {
  if (dt) *dt = 0.0;
  if (!cd->profile || cd->capturing) return fn(cd, arg);
  cd->cu->cuStreamSynchronize(cd->stream);
  double t0 = kiln_cuda_now_s();
  kiln_status s = fn(cd, arg);
  cd->cu->cuStreamSynchronize(cd->stream);
  const double took = kiln_cuda_now_s() - t0;
  if (dt) *dt = took;
  if ((unsigned)kind < KILN_OP_KIND_COUNT) {
    cd->prof.launch_s[kind] += took;
    cd->prof.launches[kind] += count;
  }
  return s;
}

static kiln_status run_op(kiln_cuda_device *cd, const void *op) {
  return launch_op(cd, op);
}

kiln_status kiln_cuda_launch(kiln_device *d, const kiln_dop *op) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  double dt;
  kiln_status s = timed(cd, op->kind, 1, run_op, op, &dt);
  if (cd->profile > 1 && !cd->capturing)   /* KILN_CUDA_PROFILE=2: every launch */
    fprintf(stderr, "  %-9s %8.1f us a %s [%lld %lld %lld] @%llx b %s [%lld %lld] @%llx c [%lld %lld] @%llx\n",
            kiln_op_kind_name(op->kind), 1e6 * dt, kiln_dtype_name(op->a.dtype),
            (long long)op->a.shape[0], (long long)op->a.shape[1],
            (long long)op->a.shape[2], (unsigned long long)op->a.addr,
            kiln_dtype_name(op->b.dtype), (long long)op->b.shape[0],
            (long long)op->b.shape[1], (unsigned long long)op->b.addr,
            (long long)op->c.shape[0], (long long)op->c.shape[1],
            (unsigned long long)op->c.addr);
  return s;
}

/* ---- ROPE + KV append --------------------------------------------------------- */

/* ops[0] a ROPE in place on one query ([1, Hr, D] f32) and ops[1] the COPY
 * of heads hs.. of that same tensor into a cache row at an index, which
 * one kiln_rope_copy launch does: *p filled, true. The cache must not
 * overlap what the ROPE reads (its tensor, inv_freq, index). */
static bool match_rope_copy(kiln_cuda_device *cd, const kiln_dop *ops,
                            size_t n, kc_rope_copy_params *p) {
  if (n < 2 || ops[0].kind != KILN_OP_ROPE || ops[1].kind != KILN_OP_COPY)
    return false;
  const kiln_dop *r = &ops[0], *c = &ops[1];
  if (r->a.rank != 3 || r->a.addr != r->b.addr || r->a.dtype != KILN_DTYPE_F32 ||
      r->b.dtype != KILN_DTYPE_F32 || r->a.shape[0] != 1 ||
      memcmp(r->a.shape, r->b.shape, sizeof r->a.shape) ||
      memcmp(r->a.stride, r->b.stride, sizeof r->a.stride) || r->a.shape[2] < 2)
    return false;
  if (c->a.rank != 3 || c->b.rank != 3 || !c->index.addr ||
      c->a.dtype != KILN_DTYPE_F32 || c->a.shape[0] != 1 ||
      c->a.shape[2] != r->a.shape[2] || c->b.shape[1] != c->a.shape[1] ||
      c->b.shape[2] != c->a.shape[2] || c->a.stride[1] != r->a.stride[1] ||
      c->a.stride[2] != r->a.stride[2] || c->a.addr < r->a.addr ||
      r->a.stride[1] <= 0)
    return false;
  const uint64_t head_bytes = (uint64_t)r->a.stride[1] * 4;
  if ((c->a.addr - r->a.addr) % head_bytes) return false;
  const int64_t hs = (int64_t)((c->a.addr - r->a.addr) / head_bytes);
  if (hs > r->a.shape[1] || hs + c->a.shape[1] > 65535) return false;
  if (overlap(&c->b, &r->a) || overlap(&c->b, &r->c) || overlap(&c->b, &c->a) ||
      (r->index.addr && overlap(&c->b, &r->index)) || overlap(&c->b, &c->index))
    return false;
  memset(p, 0, sizeof *p);
  p->rope.a = kt(&r->a);
  p->rope.b = kt(&r->b);
  p->rope.inv_freq = r->c.addr;
  p->rope.index = r->index.addr;
  p->rope.pos = r->pos;
  p->rope.T = 1;
  p->rope.H = r->a.shape[1];
  p->rope.D = r->a.shape[2];
  p->copy.a = kt(&c->a);
  p->copy.b = kt(&c->b);
  p->copy.index = c->index.addr;
  p->copy.err = err_ref(cd);
  p->copy.rows = c->a.shape[1];
  p->copy.cols = c->a.shape[2];
  p->hs = hs;
  return true;
}

/* g (RMSNORM + GEMVs of q, k and v) followed at ops[0..n) by the ROPE of
 * q and k and the COPY of k and v into a cache row that kiln_rope_copy
 * would do: the RoPE epilogue of the one-row GEMV can do them (g->rc
 * filled, true) when q, k and v lie back to back as the rope tensor's
 * heads (then v), and the cache, inv_freq and the indexes overlap nothing
 * else the kernel reads or writes. */
static bool match_rope_epilogue(kiln_cuda_device *cd, gemv1_group *g,
                                const kiln_dop *ops, size_t n) {
  if (!g->norm || g->nseg != 3 || g->swiglu ||
      !match_rope_copy(cd, ops, n, &g->rc))
    return false;
  const kiln_dop *r = &ops[0], *c = &ops[1];
  const kiln_dtensor *q = &g->gemv[0]->c, *k = &g->gemv[1]->c,
                     *v = &g->gemv[2]->c;
  const int64_t Nq = q->shape[q->rank - 1], Nk = k->shape[k->rank - 1],
                Nv = v->shape[v->rank - 1], D = r->a.shape[2];
  if (D % 2 || Nq % D || Nv % D || k->addr != q->addr + (uint64_t)Nq * 4 ||
      v->addr != k->addr + (uint64_t)Nk * 4 || r->a.addr != q->addr ||
      r->a.shape[1] * D != Nq + Nk || r->a.stride[2] != 1 ||
      r->a.stride[1] != D || c->a.addr != k->addr ||
      c->a.shape[1] * D != Nk + Nv || c->a.stride[2] != 1 ||
      c->a.stride[1] != D)
    return false;
  /* What the kernel reads while other blocks store the cache, and what
   * it writes while the epilogue reads inv_freq and the indexes. */
  const kiln_dtensor *reads[] = {&g->gemv[0]->a, &g->gemv[1]->a,
                                 &g->gemv[2]->a, &g->norm->a, &g->norm->b,
                                 &g->norm->c};
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
    if (overlap(&c->b, reads[i])) return false;
  const kiln_dtensor *writes[] = {q, k, v, &g->norm->c, &c->b};
  const kiln_dtensor *rope_in[] = {&r->c, &r->index, &c->index};
  for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++)
    for (size_t j = 0; j < sizeof rope_in / sizeof rope_in[0]; j++)
      if (rope_in[j]->addr && overlap(writes[i], rope_in[j])) return false;
  g->rope = true;
  return true;
}

static kiln_status launch_rope_copy(kiln_cuda_device *cd, const void *arg) {
  kc_rope_copy_params p = *(const kc_rope_copy_params *)arg;
  const int64_t heads = max64(p.rope.H, p.hs + p.copy.a.shape[1]);
  return launch(cd, KC_FN_ROPE_COPY, cd->fn[KC_FN_ROPE_COPY], heads, 1, 1, 64,
                &p);
}

static kiln_status run_group(kiln_cuda_device *cd, const void *g) {
  return launch_gemv1(cd, g);
}

/* Launches the op at ops[*at] together with the ops after it that fuse
 * with it; *at moves past them. */
static kiln_status launch_next(kiln_cuda_device *cd, const kiln_dop *ops,
                               size_t n, size_t *at) {
  kiln_device *d = &cd->base;
  const size_t i = *at;
  kc_rope_copy_params rc;
  if (cd->fuse && match_rope_copy(cd, ops + i, n - i, &rc)) {
    KILN_RETURN_IF_ERROR(timed(cd, KILN_OP_ROPE, 2, launch_rope_copy, &rc, NULL));
    d->stats.fused_ops += 1;
    *at = i + 2;
    return KILN_OK;
  }
  gemv1_group g;
  size_t used = cd->fuse ? match_gemv1(ops + i, n - i, &g) : 0;
  if (used && cd->rope_epilogue &&
      match_rope_epilogue(cd, &g, ops + i + used, n - i - used))
    used += 2;
  if (!used) {
    *at = i + 1;
    return kiln_cuda_launch(d, &ops[i]);
  }
  if (cd->profile > 1)
    fprintf(stderr, "  fused: %s%d GEMV%s%s\n", g.norm ? "RMSNORM + " : "",
            g.nseg, g.swiglu ? " + SWIGLU" : "", g.rope ? " + ROPE + COPY" : "");
  KILN_RETURN_IF_ERROR(timed(cd, KILN_OP_GEMV, used, run_group, &g, NULL));
  d->stats.fused_ops += used - 1;
  *at = i + used;
  return KILN_OK;
}

kiln_status kiln_cuda_launch_seq(kiln_device *d, const kiln_dop *ops, size_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  kiln_status s = KILN_OK;
  /* What the ops write is kept only where pdl_may asks (recording a
   * graph), not on every submit of a program replayed without one. */
  cd->seq_active = cd->pdl && cd->capturing;
  cd->seq_written_n = 0;
  cd->seq_lost = false;
  for (size_t i = 0; i < n && !s;) {
    const size_t from = i;
    s = launch_next(cd, ops, n, &i);
    for (size_t j = from; cd->seq_active && j < i; j++) seq_wrote(cd, &ops[j]);
  }
  cd->seq_active = false;
  return s;
}

static kiln_status launch_op(kiln_cuda_device *cd, const kiln_dop *op) {
  switch (op->kind) {
    case KILN_OP_NOP:
      return launch(cd, KC_FN_NOP, cd->fn[KC_FN_NOP], 1, 1, 1, 32, NULL);
    case KILN_OP_GEMM:
      return launch_gemm(cd, op);
    case KILN_OP_GEMV:
      return launch_gemv(cd, op);
    case KILN_OP_ADD:
      return launch_ew(cd, &op->a, &op->b, &op->c, KC_EW_ADD, 0.0f);
    case KILN_OP_MUL:
      return launch_ew(cd, &op->a, &op->b, &op->c, KC_EW_MUL, 0.0f);
    case KILN_OP_SCALE:
      return launch_ew(cd, &op->a, NULL, &op->b, KC_EW_SCALE, op->alpha);
    case KILN_OP_SILU:
      return launch_ew(cd, &op->a, NULL, &op->b, KC_EW_SILU, 0.0f);
    case KILN_OP_GELU:
      return launch_ew(cd, &op->a, NULL, &op->b, KC_EW_GELU, 0.0f);
    case KILN_OP_SWIGLU:
      return launch_ew(cd, &op->a, &op->b, &op->c, KC_EW_SWIGLU, 0.0f);
    case KILN_OP_RMSNORM:
      return launch_rmsnorm(cd, op);
    case KILN_OP_SOFTMAX:
      return launch_softmax(cd, op);
    case KILN_OP_ROPE:
      return launch_rope(cd, op);
    case KILN_OP_ARGMAX:
      return launch_argmax(cd, op);
    case KILN_OP_COPY:
      return launch_copy(cd, op);
    case KILN_OP_GATHER:
      return launch_gather(cd, op);
    case KILN_OP_ATTENTION:
      return launch_attention(cd, op);
    default:
      return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                              "cuda: op kind %d not supported", (int)op->kind);
  }
}
