/* kiln's kernel library: one executable exporting every kernel below, built
 * for wasm32 by guests/kernels/CMakeLists.txt and compiled natively (the
 * same file) by tests/unit/test_kernels.c and bench/dispatch as the
 * reference. ABI: sdk/kiln_kernel.h. Sizes and strides are in elements
 * unless stated; push constants are 32-bit words (floats as their bits). */
#include "../../sdk/kiln_kernel.h" /* found without -I natively too */

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline float f32_of(uint32_t bits) {
  union { uint32_t u; float f; } v = {bits};
  return v.f;
}

/* Does nothing: measures dispatch overhead. */
KILN_KERNEL(empty) {
  (void)args, (void)gx, (void)gy, (void)gz;
}

/* ---- GEMM ----------------------------------------------------------------
 * C[M,N] = A[M,K] @ B[K,N], all f32 row-major and contiguous.
 * bindings: 0 A, 1 B, 2 C. push: M, N, K.
 * Grid: (ceil(N/64), ceil(M/64), 1); workgroup (gx, gy) owns the 64x64 tile
 * of C at rows gy*64, columns gx*64. Inside, K is split in blocks of 128 so
 * the B block (128 x 64 floats, 32 KiB) stays in L1/L2 while the tile's
 * rows stream over it; the innermost loop runs along a row of C and B
 * (unit stride: vectorisable natively; scalar through wasm2c). */
#define GEMM_TILE 64
#define GEMM_KBLOCK 128
KILN_KERNEL(gemm_f32) {
  (void)gz;
  const float *restrict A = KILN_BINDING(args, 0, const float);
  const float *restrict B = KILN_BINDING(args, 1, const float);
  float *restrict C = KILN_BINDING(args, 2, float);
  uint32_t M = args->push[0], N = args->push[1], K = args->push[2];
  uint32_t i0 = gy * GEMM_TILE, j0 = gx * GEMM_TILE;
  if (i0 >= M || j0 >= N) return;
  uint32_t i1 = min_u32(i0 + GEMM_TILE, M), j1 = min_u32(j0 + GEMM_TILE, N);
  uint32_t w = j1 - j0;
  for (uint32_t i = i0; i < i1; i++)
    for (uint32_t j = 0; j < w; j++) C[(size_t)i * N + j0 + j] = 0.0f;
  for (uint32_t k0 = 0; k0 < K; k0 += GEMM_KBLOCK) {
    uint32_t k1 = min_u32(k0 + GEMM_KBLOCK, K);
    for (uint32_t i = i0; i < i1; i++) {
      float *restrict c = C + (size_t)i * N + j0;
      const float *restrict a = A + (size_t)i * K;
      for (uint32_t k = k0; k < k1; k++) {
        float av = a[k];
        const float *restrict b = B + (size_t)k * N + j0;
        for (uint32_t j = 0; j < w; j++) c[j] += av * b[j];
      }
    }
  }
}

/* ---- Elementwise ---------------------------------------------------------
 * bindings: 0 x, 1 y, 2 out (f32 [n]). push: n, elements per workgroup
 * (and for axpy: alpha bits). Workgroup gx handles [gx*per, (gx+1)*per). */
#define EW_RANGE()                                          \
  uint32_t n = args->push[0], per = args->push[1];          \
  uint32_t b = gx * per, e = min_u32(b + per, n);           \
  (void)gy, (void)gz;                                       \
  if (b >= n) return

KILN_KERNEL(add_f32) {
  EW_RANGE();
  const float *restrict x = KILN_BINDING(args, 0, const float);
  const float *restrict y = KILN_BINDING(args, 1, const float);
  float *restrict o = KILN_BINDING(args, 2, float);
  for (uint32_t i = b; i < e; i++) o[i] = x[i] + y[i];
}

KILN_KERNEL(mul_f32) {
  EW_RANGE();
  const float *restrict x = KILN_BINDING(args, 0, const float);
  const float *restrict y = KILN_BINDING(args, 1, const float);
  float *restrict o = KILN_BINDING(args, 2, float);
  for (uint32_t i = b; i < e; i++) o[i] = x[i] * y[i];
}

/* out = alpha * x + y */
KILN_KERNEL(axpy_f32) {
  EW_RANGE();
  float alpha = f32_of(args->push[2]);
  const float *restrict x = KILN_BINDING(args, 0, const float);
  const float *restrict y = KILN_BINDING(args, 1, const float);
  float *restrict o = KILN_BINDING(args, 2, float);
  for (uint32_t i = b; i < e; i++) o[i] = alpha * x[i] + y[i];
}

/* ---- Reduction -----------------------------------------------------------
 * bindings: 0 x (f32 [n]), 1 partial (f32 [groups]). push: n, per.
 * partial[gx] = sum of x[gx*per .. ), with 8 running sums (a fixed order:
 * the same bits in Wasm and natively). Sum the partials with a second
 * dispatch of one workgroup (n = groups, per = groups). */
KILN_KERNEL(sum_f32) {
  (void)gy, (void)gz;
  uint32_t n = args->push[0], per = args->push[1];
  uint32_t b = gx * per, e = min_u32(b + per, n);
  const float *x = KILN_BINDING(args, 0, const float);
  float *out = KILN_BINDING(args, 1, float);
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  uint32_t i = b;
  for (; i + 8 <= e; i += 8)
    for (int k = 0; k < 8; k++) s[k] += x[i + k];
  for (; i < e; i++) s[0] += x[i];
  out[gx] = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* ---- Softmax -------------------------------------------------------------
 * out[r, :] = softmax(x[r, :]) for rows [gx*rpg, (gx+1)*rpg).
 * bindings: 0 x, 1 out (f32 [rows, cols]). push: rows, cols, rows per group. */
KILN_KERNEL(softmax_f32) {
  (void)gy, (void)gz;
  uint32_t rows = args->push[0], cols = args->push[1], rpg = args->push[2];
  const float *x = KILN_BINDING(args, 0, const float);
  float *out = KILN_BINDING(args, 1, float);
  uint32_t r1 = min_u32((gx + 1) * rpg, rows);
  for (uint32_t r = gx * rpg; r < r1; r++) {
    const float *xr = x + (size_t)r * cols;
    float *o = out + (size_t)r * cols;
    float m = xr[0];
    for (uint32_t j = 1; j < cols; j++) m = xr[j] > m ? xr[j] : m;
    float sum = 0.0f;
    for (uint32_t j = 0; j < cols; j++) {
      float v = kiln_expf(xr[j] - m);
      o[j] = v;
      sum += v;
    }
    float inv = 1.0f / sum;
    for (uint32_t j = 0; j < cols; j++) o[j] *= inv;
  }
}

/* ---- 2-D convolution -----------------------------------------------------
 * Valid convolution, stride 1: out[co, y, x] = bias[co] +
 *   sum_{ci, ky, kx} in[ci, y+ky, x+kx] * w[co, ci, ky, kx].
 * bindings: 0 in [CI, H, W], 1 w [CO, CI, KH, KW], 2 bias [CO],
 * 3 out [CO, H-KH+1, W-KW+1]. push: CI, H, W, CO, KH, KW, rows per group.
 * Grid: (CO, ceil(OH / rows per group), 1). */
KILN_KERNEL(conv2d_f32) {
  (void)gz;
  uint32_t CI = args->push[0], H = args->push[1], W = args->push[2];
  uint32_t CO = args->push[3], KH = args->push[4], KW = args->push[5];
  uint32_t rpg = args->push[6];
  uint32_t OH = H - KH + 1, OW = W - KW + 1;
  const float *restrict in = KILN_BINDING(args, 0, const float);
  const float *restrict w = KILN_BINDING(args, 1, const float);
  const float *restrict bias = KILN_BINDING(args, 2, const float);
  float *restrict out = KILN_BINDING(args, 3, float);
  uint32_t co = gx;
  if (co >= CO) return;
  uint32_t y1 = min_u32((gy + 1) * rpg, OH);
  for (uint32_t y = gy * rpg; y < y1; y++) {
    float *restrict o = out + ((size_t)co * OH + y) * OW;
    for (uint32_t x = 0; x < OW; x++) o[x] = bias[co];
    for (uint32_t ci = 0; ci < CI; ci++)
      for (uint32_t ky = 0; ky < KH; ky++) {
        const float *restrict row = in + ((size_t)ci * H + y + ky) * W;
        const float *wk = w + (((size_t)co * CI + ci) * KH + ky) * KW;
        for (uint32_t kx = 0; kx < KW; kx++) {
          float wv = wk[kx];
          for (uint32_t x = 0; x < OW; x++) o[x] += wv * row[x + kx];
        }
      }
  }
}
