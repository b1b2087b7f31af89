/* Every kiln_gpu op from a guest, each checked against the guest's own
 * plain reference (computed in double): gemm (f32, f16, bf16, all
 * transposes, alpha/beta), gemv (f32, f16, bf16, q8_0 weights), add, mul
 * (same shape and one-row broadcast), scale, rmsnorm, softmax (plain and
 * causal with an index), rope (pos and index, in place), silu, gelu,
 * swiglu, argmax, copy (convert, strided, indexed append), gather,
 * attention (grouped queries), programs replayed with new positions,
 * RESIDENT placement with guest writes between ops, and a tensor in a
 * memory the host granted by name (when the host granted "weights").
 *
 * Prints one line per failed check and a summary; exits with the number
 * of failures (0: all good). Argument: rounds (default 1). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_gpu.h"

static int failures, checks;
/* Relative tolerance of GEMM/GEMV results: f32 accumulation on the cpu
 * backend; on cuda, cuBLAS may use TF32 tensor cores for f32 inputs
 * (10-bit mantissa), so 2e-3 there. Set in main from the device kind. */
static double mm_tol = 1e-5;
/* Transcendental ops (exp, tanh, sin, cos): 1e-5, on cuda 1e-4 (fast
 * intrinsics are allowed). */
static double fn_tol = 1e-5;

#define FAIL(...)                          \
  do {                                     \
    failures++;                            \
    fprintf(stderr, "gpu_ops: " __VA_ARGS__); \
    fprintf(stderr, "\n");                 \
  } while (0)

static void ok(const char *what, int32_t r) {
  checks++;
  if (r) {
    char msg[300];
    kiln_gpu_last_error(msg, sizeof msg);
    FAIL("%s returned %d: %s", what, r, msg);
  }
}

static void sync_ok(const char *what) { ok(what, kiln_gpu_sync()); }

static void check(const char *what, const float *got, const double *want,
                  int n, double tol) {
  int bad = 0;
  for (int i = 0; i < n; i++) {
    checks++;
    double err = fabs((double)got[i] - want[i]);
    if (!(err <= tol * (1 + fabs(want[i])))) {
      if (bad++ < 4) FAIL("%s[%d] = %.7g, want %.7g", what, i, got[i], want[i]);
      else failures++;
    }
  }
}

static double frand(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  return ((*seed >> 8) & 0xffff) / 32768.0 - 1.0; /* [-1, 1) */
}

static void fill(float *p, int n, unsigned seed) {
  for (int i = 0; i < n; i++) p[i] = (float)frand(&seed);
}

/* A tensor with explicit strides (elements). */
static kiln_gpu_tensor strided(const void *p, uint32_t dtype, uint32_t rank,
                               const int64_t *shape, const int64_t *stride) {
  kiln_gpu_tensor t = kiln_gpu_tensor_at(0, kiln_gpu_offset_of(p), dtype, rank,
                                         shape);
  for (uint32_t k = 0; k < rank; k++) t.stride[k] = stride[k];
  return t;
}

static uint16_t to_half(uint32_t dtype, float f) {
  return dtype == KILN_GPU_BF16 ? kiln_gpu_f32_to_bf16(f)
                                : kiln_gpu_f32_to_f16(f);
}
static float from_half(uint32_t dtype, uint16_t h) {
  return dtype == KILN_GPU_BF16 ? kiln_gpu_bf16_to_f32(h)
                                : kiln_gpu_f16_to_f32(h);
}

/* ---- gemm ---------------------------------------------------------------- */

static void test_gemm_f32(void) {
  enum { M = 5, K = 7, N = 3 };
  for (uint32_t flags = 0; flags < 4; flags++) {
    float a[M * K], b[K * N], c[M * N];
    double want[M * N];
    fill(a, M * K, 1 + flags);
    fill(b, K * N, 7 + flags);
    fill(c, M * N, 99);
    bool ta = flags & KILN_GPU_TRANS_A, tb = flags & KILN_GPU_TRANS_B;
    /* Element (m,k) of op(a) is a[k*M+m] when transposed. */
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++)
          s += (double)(ta ? a[k * M + m] : a[m * K + k]) *
               (tb ? b[n * K + k] : b[k * N + n]);
        want[m * N + n] = 2.0 * s + 0.5 * c[m * N + n];
      }
    ok("gemm f32",
       kiln_gpu_gemm(ta ? kiln_gpu_tensor_2d(a, KILN_GPU_F32, K, M)
                        : kiln_gpu_tensor_2d(a, KILN_GPU_F32, M, K),
                     tb ? kiln_gpu_tensor_2d(b, KILN_GPU_F32, N, K)
                        : kiln_gpu_tensor_2d(b, KILN_GPU_F32, K, N),
                     kiln_gpu_tensor_2d(c, KILN_GPU_F32, M, N), flags, 2.0f,
                     0.5f));
    sync_ok("sync");
    char what[32];
    snprintf(what, sizeof what, "gemm f32 flags %u", flags);
    check(what, c, want, M * N, mm_tol);
  }
}

static void test_gemm_half(uint32_t dtype) {
  enum { M = 8, K = 16, N = 4 };
  uint16_t a[M * K], b[K * N];
  float c[M * N], fa[M * K], fb[K * N];
  double want[M * N];
  fill(fa, M * K, 3);
  fill(fb, K * N, 4);
  for (int i = 0; i < M * K; i++) a[i] = to_half(dtype, fa[i]);
  for (int i = 0; i < K * N; i++) b[i] = to_half(dtype, fb[i]);
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = 0;
      for (int k = 0; k < K; k++)
        s += (double)from_half(dtype, a[m * K + k]) *
             from_half(dtype, b[k * N + n]);
      want[m * N + n] = s;
    }
  ok("gemm half", kiln_gpu_gemm(kiln_gpu_tensor_2d(a, dtype, M, K),
                                kiln_gpu_tensor_2d(b, dtype, K, N),
                                kiln_gpu_tensor_2d(c, KILN_GPU_F32, M, N), 0,
                                1.0f, 0.0f));
  sync_ok("sync");
  check(dtype == KILN_GPU_BF16 ? "gemm bf16" : "gemm f16", c, want, M * N,
        1e-4);
}

/* ---- gemv ---------------------------------------------------------------- */

static void test_gemv(uint32_t dtype) {
  enum { N = 3, K = 64, M = 2 };
  static float wf[N * K];
  static uint16_t wh[N * K];
  static uint8_t wq[N * (K / 32) * 34] __attribute__((aligned(4)));
  float x[M * K], y[M * N];
  double want[M * N];
  float wv[N * K]; /* the weight values the device sees */
  fill(wf, N * K, 11);
  fill(x, M * K, 12);
  const void *w = wf;
  if (dtype == KILN_GPU_F32) {
    memcpy(wv, wf, sizeof wv);
  } else if (dtype == KILN_GPU_Q8_0) {
    for (int blk = 0; blk < N * K / 32; blk++) {
      float amax = 0;
      for (int i = 0; i < 32; i++)
        if (fabsf(wf[blk * 32 + i]) > amax) amax = fabsf(wf[blk * 32 + i]);
      uint16_t d = kiln_gpu_f32_to_f16(amax / 127.0f);
      float df = kiln_gpu_f16_to_f32(d);
      uint8_t *q = wq + blk * 34;
      memcpy(q, &d, 2);
      for (int i = 0; i < 32; i++) {
        int v = df > 0 ? (int)lrintf(wf[blk * 32 + i] / df) : 0;
        if (v > 127) v = 127;
        if (v < -127) v = -127;
        q[2 + i] = (uint8_t)(int8_t)v;
        wv[blk * 32 + i] = df * (float)(int8_t)q[2 + i];
      }
    }
    w = wq;
  } else {
    for (int i = 0; i < N * K; i++) {
      wh[i] = to_half(dtype, wf[i]);
      wv[i] = from_half(dtype, wh[i]);
    }
    w = wh;
  }
  for (int m = 0; m < M; m++)
    for (int n = 0; n < N; n++) {
      double s = 0;
      for (int k = 0; k < K; k++) s += (double)x[m * K + k] * wv[n * K + k];
      want[m * N + n] = s;
    }
  ok("gemv", kiln_gpu_gemv(kiln_gpu_tensor_2d(w, dtype, N, K),
                           kiln_gpu_tensor_2d(x, KILN_GPU_F32, M, K),
                           kiln_gpu_tensor_2d(y, KILN_GPU_F32, M, N)));
  sync_ok("sync");
  char what[32];
  snprintf(what, sizeof what, "gemv dtype %u", dtype);
  check(what, y, want, M * N, mm_tol > 1e-4 ? mm_tol : 1e-4);

  /* beta = 1 accumulates into y. */
  if (dtype == KILN_GPU_F32) {
    kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_GEMV);
    op.a = kiln_gpu_tensor_2d(w, dtype, N, K);
    op.b = kiln_gpu_tensor_2d(x, KILN_GPU_F32, M, K);
    op.c = kiln_gpu_tensor_2d(y, KILN_GPU_F32, M, N);
    op.alpha = 0.5f;
    op.beta = 1.0f;
    ok("gemv beta", kiln_gpu_submit(&op));
    sync_ok("sync");
    for (int i = 0; i < M * N; i++) want[i] *= 1.5;
    check("gemv alpha/beta", y, want, M * N, mm_tol > 1e-4 ? mm_tol : 1e-4);
  }
}

/* ---- elementwise and row ops --------------------------------------------- */

static void test_elementwise(void) {
  enum { R = 3, C = 5 };
  float a[R * C], b[R * C], row[C], c[R * C];
  double want[R * C];
  fill(a, R * C, 21);
  fill(b, R * C, 22);
  fill(row, C, 23);
  kiln_gpu_tensor ta = kiln_gpu_tensor_2d(a, KILN_GPU_F32, R, C);
  kiln_gpu_tensor tc = kiln_gpu_tensor_2d(c, KILN_GPU_F32, R, C);

  ok("add", kiln_gpu_binary(KILN_GPU_OP_ADD, ta,
                            kiln_gpu_tensor_2d(b, KILN_GPU_F32, R, C), tc));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = (double)a[i] + b[i];
  check("add", c, want, R * C, 1e-6);

  ok("add row", kiln_gpu_binary(KILN_GPU_OP_ADD, ta,
                                kiln_gpu_tensor_1d(row, KILN_GPU_F32, C), tc));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = (double)a[i] + row[i % C];
  check("add row", c, want, R * C, 1e-6);

  ok("mul", kiln_gpu_binary(KILN_GPU_OP_MUL, ta,
                            kiln_gpu_tensor_2d(b, KILN_GPU_F32, R, C), tc));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = (double)a[i] * b[i];
  check("mul", c, want, R * C, 1e-6);

  ok("mul row", kiln_gpu_binary(KILN_GPU_OP_MUL, ta,
                                kiln_gpu_tensor_1d(row, KILN_GPU_F32, C), tc));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = (double)a[i] * row[i % C];
  check("mul row", c, want, R * C, 1e-6);

  ok("scale", kiln_gpu_unary(KILN_GPU_OP_SCALE, ta, tc, -1.5f));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = -1.5 * a[i];
  check("scale", c, want, R * C, 1e-6);

  ok("silu", kiln_gpu_unary(KILN_GPU_OP_SILU, ta, tc, 1.0f));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) want[i] = a[i] / (1 + exp(-(double)a[i]));
  check("silu", c, want, R * C, fn_tol);

  ok("gelu", kiln_gpu_unary(KILN_GPU_OP_GELU, ta, tc, 1.0f));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++) {
    double x = a[i];
    want[i] = 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
  }
  check("gelu", c, want, R * C, fn_tol);

  ok("swiglu", kiln_gpu_binary(KILN_GPU_OP_SWIGLU, ta,
                               kiln_gpu_tensor_2d(b, KILN_GPU_F32, R, C), tc));
  sync_ok("sync");
  for (int i = 0; i < R * C; i++)
    want[i] = a[i] / (1 + exp(-(double)a[i])) * b[i];
  check("swiglu", c, want, R * C, fn_tol);
}

static void test_rmsnorm(void) {
  enum { R = 3, C = 8 };
  float a[R * C], w[C], c[R * C];
  double want[R * C];
  fill(a, R * C, 31);
  fill(w, C, 32);
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_RMSNORM);
  op.a = kiln_gpu_tensor_2d(a, KILN_GPU_F32, R, C);
  op.b = kiln_gpu_tensor_1d(w, KILN_GPU_F32, C);
  op.c = kiln_gpu_tensor_2d(c, KILN_GPU_F32, R, C);
  op.eps = 1e-5f;
  ok("rmsnorm", kiln_gpu_submit(&op));
  sync_ok("sync");
  for (int r = 0; r < R; r++) {
    double ss = 0;
    for (int i = 0; i < C; i++) ss += (double)a[r * C + i] * a[r * C + i];
    double inv = 1 / sqrt(ss / C + 1e-5);
    for (int i = 0; i < C; i++) want[r * C + i] = a[r * C + i] * inv * w[i];
  }
  check("rmsnorm", c, want, R * C, fn_tol);
}

static void test_softmax(void) {
  enum { T = 3, S = 6 };
  float a[T * S], b[T * S];
  int32_t idx[1] = {2};
  double want[T * S];
  fill(a, T * S, 41);
  for (int causal = 0; causal < 2; causal++) {
    kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_SOFTMAX);
    op.a = kiln_gpu_tensor_2d(a, KILN_GPU_F32, T, S);
    op.b = kiln_gpu_tensor_2d(b, KILN_GPU_F32, T, S);
    op.alpha = 0.5f;
    if (causal) op.index = kiln_gpu_tensor_1d(idx, KILN_GPU_I32, 1);
    ok("softmax", kiln_gpu_submit(&op));
    sync_ok("sync");
    for (int t = 0; t < T; t++) {
      int last = causal ? idx[0] + t : S - 1;
      double mx = -1e300, sum = 0;
      for (int s = 0; s <= last; s++)
        if (0.5 * a[t * S + s] > mx) mx = 0.5 * a[t * S + s];
      for (int s = 0; s <= last; s++) sum += exp(0.5 * a[t * S + s] - mx);
      for (int s = 0; s < S; s++)
        want[t * S + s] = s <= last ? exp(0.5 * a[t * S + s] - mx) / sum : 0;
    }
    check(causal ? "softmax causal" : "softmax", b, want, T * S, fn_tol);
  }
}

static void rope_ref(const float *a, double *want, const float *freq, int T,
                     int H, int D, int64_t pos0) {
  for (int t = 0; t < T; t++)
    for (int h = 0; h < H; h++) {
      const float *x = a + (t * H + h) * D;
      double *y = want + (t * H + h) * D;
      for (int i = 0; i < D / 2; i++) {
        double th = (double)(pos0 + t) * freq[i];
        double x1 = x[i], x2 = x[i + D / 2];
        y[i] = x1 * cos(th) - x2 * sin(th);
        y[i + D / 2] = x2 * cos(th) + x1 * sin(th);
      }
    }
}

static void test_rope(void) {
  enum { T = 2, H = 2, D = 8 };
  float a[T * H * D], b[T * H * D], freq[D / 2];
  int32_t idx[1] = {9};
  double want[T * H * D];
  fill(a, T * H * D, 51);
  for (int i = 0; i < D / 2; i++) freq[i] = powf(10000.0f, -2.0f * i / D);
  for (int mode = 0; mode < 3; mode++) {
    /* 0: pos field; 1: index tensor; 2: in place (b == a) with pos */
    kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_ROPE);
    op.a = kiln_gpu_tensor_3d(a, KILN_GPU_F32, T, H, D);
    op.b = kiln_gpu_tensor_3d(mode == 2 ? a : b, KILN_GPU_F32, T, H, D);
    op.c = kiln_gpu_tensor_1d(freq, KILN_GPU_F32, D / 2);
    op.pos = 5;
    if (mode == 1) op.index = kiln_gpu_tensor_1d(idx, KILN_GPU_I32, 1);
    rope_ref(a, want, freq, T, H, D, mode == 1 ? idx[0] : 5);
    ok("rope", kiln_gpu_submit(&op));
    sync_ok("sync");
    check(mode == 0 ? "rope pos" : mode == 1 ? "rope index" : "rope in place",
          mode == 2 ? a : b, want, T * H * D, fn_tol);
  }
}

static void test_argmax(void) {
  enum { R = 4, C = 9 };
  float a[R * C];
  int32_t b[R];
  fill(a, R * C, 61);
  a[1 * C + 3] = 5.0f;
  a[1 * C + 7] = 5.0f;     /* tie: first wins */
  a[2 * C + 8] = 7.0f;     /* last column */
  a[3 * C + 0] = 9.0f;     /* first column */
  ok("argmax", kiln_gpu_unary(KILN_GPU_OP_ARGMAX,
                              kiln_gpu_tensor_2d(a, KILN_GPU_F32, R, C),
                              kiln_gpu_tensor_1d(b, KILN_GPU_I32, R), 1.0f));
  sync_ok("sync");
  for (int r = 0; r < R; r++) {
    int best = 0;
    for (int i = 1; i < C; i++)
      if (a[r * C + i] > a[r * C + best]) best = i;
    checks++;
    if (b[r] != best) FAIL("argmax[%d] = %d, want %d", r, b[r], best);
  }
}

static void test_copy(void) {
  enum { R = 3, C = 4 };
  float a[R * C], back[R * C], t[C * R];
  uint16_t h[R * C];
  double want[R * C];
  fill(a, R * C, 71);
  uint32_t dts[2] = {KILN_GPU_BF16, KILN_GPU_F16};
  for (int k = 0; k < 2; k++) {
    ok("copy to half", kiln_gpu_unary(KILN_GPU_OP_COPY,
                                      kiln_gpu_tensor_2d(a, KILN_GPU_F32, R, C),
                                      kiln_gpu_tensor_2d(h, dts[k], R, C), 1));
    ok("copy from half",
       kiln_gpu_unary(KILN_GPU_OP_COPY, kiln_gpu_tensor_2d(h, dts[k], R, C),
                      kiln_gpu_tensor_2d(back, KILN_GPU_F32, R, C), 1));
    sync_ok("sync");
    for (int i = 0; i < R * C; i++) {
      checks++;
      if (h[i] != to_half(dts[k], a[i]))
        FAIL("copy f32->dtype %u [%d] = 0x%04x, want 0x%04x", dts[k], i, h[i],
             to_half(dts[k], a[i]));
      want[i] = from_half(dts[k], to_half(dts[k], a[i]));
    }
    check("copy half->f32", back, want, R * C, 0);
  }
  /* A transposed view (strides [1, C]) copied into a contiguous [C, R]. */
  int64_t shape[2] = {C, R}, stride[2] = {1, C};
  ok("copy strided",
     kiln_gpu_unary(KILN_GPU_OP_COPY, strided(a, KILN_GPU_F32, 2, shape, stride),
                    kiln_gpu_tensor_2d(t, KILN_GPU_F32, C, R), 1));
  sync_ok("sync");
  for (int i = 0; i < C; i++)
    for (int j = 0; j < R; j++) want[i * R + j] = a[j * C + i];
  check("copy strided", t, want, R * C, 0);

  /* KV-cache append: rows of a land at rows idx.. of an 8-row cache. */
  float cache[8 * C];
  int32_t idx[1] = {3};
  double cwant[8 * C];
  for (int i = 0; i < 8 * C; i++) cache[i] = cwant[i] = -7;
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_COPY);
  op.a = kiln_gpu_tensor_2d(a, KILN_GPU_F32, 2, C);
  op.b = kiln_gpu_tensor_2d(cache, KILN_GPU_F32, 8, C);
  op.index = kiln_gpu_tensor_1d(idx, KILN_GPU_I32, 1);
  ok("copy append", kiln_gpu_submit(&op));
  sync_ok("sync");
  for (int i = 0; i < 2 * C; i++) cwant[3 * C + i] = a[i];
  check("copy append", cache, cwant, 8 * C, 0);
}

static void test_gather(void) {
  enum { V = 5, D = 4, T = 3 };
  float table[V * D], out[T * D];
  uint16_t tb[V * D];
  int32_t ids[T] = {4, 0, 2};
  double want[T * D];
  fill(table, V * D, 81);
  for (int i = 0; i < V * D; i++) tb[i] = kiln_gpu_f32_to_bf16(table[i]);
  for (int bf = 0; bf < 2; bf++) {
    ok("gather", kiln_gpu_binary(KILN_GPU_OP_GATHER,
                                 bf ? kiln_gpu_tensor_2d(tb, KILN_GPU_BF16, V, D)
                                    : kiln_gpu_tensor_2d(table, KILN_GPU_F32, V, D),
                                 kiln_gpu_tensor_1d(ids, KILN_GPU_I32, T),
                                 kiln_gpu_tensor_2d(out, KILN_GPU_F32, T, D)));
    sync_ok("sync");
    for (int t = 0; t < T; t++)
      for (int d = 0; d < D; d++)
        want[t * D + d] = bf ? kiln_gpu_bf16_to_f32(tb[ids[t] * D + d])
                             : table[ids[t] * D + d];
    check(bf ? "gather bf16" : "gather f32", out, want, T * D, 0);
  }
}

static void test_attention(void) {
  enum { T = 2, HQ = 4, HKV = 2, D = 8, S = 6 };
  float q[T * HQ * D], k[S * HKV * D], v[S * HKV * D], o[T * HQ * D];
  uint16_t kb[S * HKV * D], vb[S * HKV * D];
  double want[T * HQ * D];
  fill(q, T * HQ * D, 91);
  fill(k, S * HKV * D, 92);
  fill(v, S * HKV * D, 93);
  for (int i = 0; i < S * HKV * D; i++) {
    kb[i] = kiln_gpu_f32_to_bf16(k[i]);
    vb[i] = kiln_gpu_f32_to_bf16(v[i]);
  }
  const int pos0 = 3;
  const double scale = 1 / sqrt((double)D);
  for (int bf = 0; bf < 2; bf++) {
    kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_ATTENTION);
    op.a = kiln_gpu_tensor_3d(q, KILN_GPU_F32, T, HQ, D);
    op.b = bf ? kiln_gpu_tensor_3d(kb, KILN_GPU_BF16, S, HKV, D)
              : kiln_gpu_tensor_3d(k, KILN_GPU_F32, S, HKV, D);
    op.c = bf ? kiln_gpu_tensor_3d(vb, KILN_GPU_BF16, S, HKV, D)
              : kiln_gpu_tensor_3d(v, KILN_GPU_F32, S, HKV, D);
    op.d = kiln_gpu_tensor_3d(o, KILN_GPU_F32, T, HQ, D);
    op.alpha = (float)scale;
    op.pos = pos0;
    ok("attention", kiln_gpu_submit(&op));
    sync_ok("sync");
    for (int t = 0; t < T; t++)
      for (int h = 0; h < HQ; h++) {
        int g = h / (HQ / HKV);
        double sc[S], mx = -1e300, sum = 0;
        int last = pos0 + t;
        for (int s = 0; s <= last; s++) {
          double dot = 0;
          for (int d = 0; d < D; d++) {
            double kv = bf ? kiln_gpu_bf16_to_f32(kb[(s * HKV + g) * D + d])
                           : k[(s * HKV + g) * D + d];
            dot += (double)q[(t * HQ + h) * D + d] * kv;
          }
          sc[s] = dot * (float)scale;
          if (sc[s] > mx) mx = sc[s];
        }
        for (int s = 0; s <= last; s++) sum += (sc[s] = exp(sc[s] - mx));
        for (int d = 0; d < D; d++) {
          double acc = 0;
          for (int s = 0; s <= last; s++)
            acc += sc[s] / sum *
                   (bf ? kiln_gpu_bf16_to_f32(vb[(s * HKV + g) * D + d])
                       : v[(s * HKV + g) * D + d]);
          want[(t * HQ + h) * D + d] = acc;
        }
      }
    check(bf ? "attention bf16" : "attention f32", o, want, T * HQ * D, 1e-4);
  }
}

/* ---- programs, placement, grants ----------------------------------------- */

static void test_program(void) {
  enum { N = 16, T = 1, H = 2, D = 8 };
  float x[N], y[N], z[N], w[N];
  float r[T * H * D], ro[T * H * D], freq[D / 2];
  int32_t pos[1] = {0};
  double want[N > T * H * D ? N : T * H * D];
  fill(z, N, 101);
  fill(r, T * H * D, 102);
  for (int i = 0; i < D / 2; i++) freq[i] = powf(10000.0f, -2.0f * i / D);

  ok("program_begin", kiln_gpu_program_begin());
  ok("record scale", kiln_gpu_unary(KILN_GPU_OP_SCALE,
                                    kiln_gpu_tensor_1d(x, KILN_GPU_F32, N),
                                    kiln_gpu_tensor_1d(y, KILN_GPU_F32, N), 2));
  ok("record add", kiln_gpu_binary(KILN_GPU_OP_ADD,
                                   kiln_gpu_tensor_1d(y, KILN_GPU_F32, N),
                                   kiln_gpu_tensor_1d(z, KILN_GPU_F32, N),
                                   kiln_gpu_tensor_1d(w, KILN_GPU_F32, N)));
  kiln_gpu_op rope = kiln_gpu_op_make(KILN_GPU_OP_ROPE);
  rope.a = kiln_gpu_tensor_3d(r, KILN_GPU_F32, T, H, D);
  rope.b = kiln_gpu_tensor_3d(ro, KILN_GPU_F32, T, H, D);
  rope.c = kiln_gpu_tensor_1d(freq, KILN_GPU_F32, D / 2);
  rope.index = kiln_gpu_tensor_1d(pos, KILN_GPU_I32, 1);
  ok("record rope", kiln_gpu_submit(&rope));
  int32_t h = kiln_gpu_program_end();
  checks++;
  if (h < 1) {
    FAIL("program_end returned %d", h);
    return;
  }
  for (int step = 0; step < 3; step++) {
    /* New inputs and a new position, same program. */
    fill(x, N, 200 + step);
    pos[0] = 4 + 7 * step;
    ok("program_submit", kiln_gpu_program_submit(h));
    sync_ok("sync");
    for (int i = 0; i < N; i++) want[i] = 2.0 * x[i] + z[i];
    check("program scale+add", w, want, N, 1e-6);
    rope_ref(r, want, freq, T, H, D, pos[0]);
    check("program rope", ro, want, T * H * D, fn_tol);
  }
  ok("program_free", kiln_gpu_program_free(h));
}

static void test_resident(void) {
  enum { M = 32, K = 32, N = 32 };
  /* Page-aligned so that the placed range holds nothing else. */
  static float buf[3 * M * K] __attribute__((aligned(65536)));
  float *a = buf, *b = buf + M * K, *c = buf + 2 * M * K;
  double want[M * N];
  uint64_t off = kiln_gpu_offset_of(buf);
  ok("place resident",
     kiln_gpu_place(0, off, sizeof buf, KILN_GPU_PLACEMENT_RESIDENT));
  checks++;
  if (kiln_gpu_placement(0, off) != KILN_GPU_PLACEMENT_RESIDENT)
    FAIL("placement is %d, want resident", kiln_gpu_placement(0, off));
  for (int round = 0; round < 3; round++) {
    /* The guest writes inputs in place between ops: the device must see
     * the new bytes, and the guest must see the new product. */
    fill(a, M * K, 300 + round);
    fill(b, K * N, 400 + round);
    for (int m = 0; m < M; m++)
      for (int n = 0; n < N; n++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += (double)a[m * K + k] * b[k * N + n];
        want[m * N + n] = s;
      }
    ok("gemm resident", kiln_gpu_gemm(kiln_gpu_tensor_2d(a, KILN_GPU_F32, M, K),
                                      kiln_gpu_tensor_2d(b, KILN_GPU_F32, K, N),
                                      kiln_gpu_tensor_2d(c, KILN_GPU_F32, M, N),
                                      0, 1, 0));
    sync_ok("sync");
    check("gemm resident", c, want, M * N, mm_tol);
  }
  kiln_gpu_stats st;
  ok("stats", kiln_gpu_stats_get(&st));
  ok("place mapped", kiln_gpu_place(0, off, sizeof buf,
                                    KILN_GPU_PLACEMENT_MAPPED));
  checks++;
  if (kiln_gpu_placement(0, off) != KILN_GPU_PLACEMENT_MAPPED)
    FAIL("placement after unplace is %d", kiln_gpu_placement(0, off));
  /* Still correct after the range went back to MAPPED. */
  ok("gemm mapped", kiln_gpu_gemm(kiln_gpu_tensor_2d(a, KILN_GPU_F32, M, K),
                                  kiln_gpu_tensor_2d(b, KILN_GPU_F32, K, N),
                                  kiln_gpu_tensor_2d(c, KILN_GPU_F32, M, N), 0,
                                  1, 0));
  sync_ok("sync");
  check("gemm after resident", c, want, M * N, mm_tol);
}

/* Ops queued back to back, each reading the previous one's output. */
static void test_chain(void) {
  enum { N = 256 };
  static float v0[N], v1[N], v2[N], v3[N];
  double want[N];
  fill(v0, N, 111);
  ok("chain scale", kiln_gpu_unary(KILN_GPU_OP_SCALE,
                                   kiln_gpu_tensor_1d(v0, KILN_GPU_F32, N),
                                   kiln_gpu_tensor_1d(v1, KILN_GPU_F32, N), 3));
  ok("chain add", kiln_gpu_binary(KILN_GPU_OP_ADD,
                                  kiln_gpu_tensor_1d(v1, KILN_GPU_F32, N),
                                  kiln_gpu_tensor_1d(v0, KILN_GPU_F32, N),
                                  kiln_gpu_tensor_1d(v2, KILN_GPU_F32, N)));
  ok("chain mul", kiln_gpu_binary(KILN_GPU_OP_MUL,
                                  kiln_gpu_tensor_1d(v2, KILN_GPU_F32, N),
                                  kiln_gpu_tensor_1d(v2, KILN_GPU_F32, N),
                                  kiln_gpu_tensor_1d(v3, KILN_GPU_F32, N)));
  kiln_gpu_op nop = kiln_gpu_op_make(KILN_GPU_OP_NOP);
  ok("nop", kiln_gpu_submit(&nop));
  sync_ok("sync");
  for (int i = 0; i < N; i++) want[i] = (4.0 * v0[i]) * (4.0 * v0[i]);
  check("chain", v3, want, N, 1e-5);
}

static void test_granted(void) {
  static const char mem_name[] = "weights", t_name[] = "w";
  int32_t h = kiln_gpu_memory_lookup(mem_name, sizeof mem_name - 1);
  if (h == KILN_GPU_E_NOT_FOUND) {
    printf("gpu_ops: no 'weights' memory granted; skipping that check\n");
    return;
  }
  checks++;
  if (h < 1) {
    FAIL("memory_lookup(weights) = %d", h);
    return;
  }
  kiln_gpu_tensor w;
  ok("tensor_lookup", kiln_gpu_tensor_lookup(t_name, sizeof t_name - 1, &w));
  checks++;
  if (w.mem != (uint32_t)h || w.rank != 2 || w.dtype != KILN_GPU_F32) {
    FAIL("tensor w: mem %u rank %u dtype %u", w.mem, w.rank, w.dtype);
    return;
  }
  /* The host filled w[r][c] = (r * cols + c) * 0.25 - 3 (see the test). */
  int R = (int)w.shape[0], C = (int)w.shape[1];
  if (R > 64 || C > 64) {
    FAIL("tensor w is %dx%d", R, C);
    return;
  }
  float x[64], y[64];
  double want[64];
  fill(x, C, 121);
  for (int r = 0; r < R; r++) {
    double s = 0;
    for (int c = 0; c < C; c++) s += ((r * C + c) * 0.25 - 3) * x[c];
    want[r] = s;
  }
  ok("gemv granted", kiln_gpu_gemv(w, kiln_gpu_tensor_2d(x, KILN_GPU_F32, 1, C),
                                   kiln_gpu_tensor_2d(y, KILN_GPU_F32, 1, R)));
  sync_ok("sync");
  check("gemv with granted weights", y, want, R, mm_tol);
  /* The grant is read-only: no op may write into it. */
  int32_t r = kiln_gpu_unary(KILN_GPU_OP_SCALE,
                             kiln_gpu_tensor_2d(x, KILN_GPU_F32, 1, C), w, 1);
  checks++;
  if (r != KILN_GPU_E_INVALID && r != KILN_GPU_E_RANGE)
    FAIL("scale into read-only grant returned %d", r);
  sync_ok("sync");
}

int main(int argc, char **argv) {
  int rounds = argc > 1 ? atoi(argv[1]) : 1;
  kiln_gpu_stats st;
  if (kiln_gpu_stats_get(&st) == 0 && st.device_kind == 1) {
    mm_tol = 2e-3;
    fn_tol = 1e-4;
  }
  for (int i = 0; i < rounds; i++) {
    test_gemm_f32();
    test_gemm_half(KILN_GPU_BF16);
    test_gemm_half(KILN_GPU_F16);
    test_gemv(KILN_GPU_F32);
    test_gemv(KILN_GPU_BF16);
    test_gemv(KILN_GPU_F16);
    test_gemv(KILN_GPU_Q8_0);
    test_elementwise();
    test_rmsnorm();
    test_softmax();
    test_rope();
    test_argmax();
    test_copy();
    test_gather();
    test_attention();
    test_chain();
    test_program();
    test_resident();
    test_granted();
  }
  printf("gpu_ops: %d checks, %d failures\n", checks, failures);
  return failures > 100 ? 100 : failures;
}
