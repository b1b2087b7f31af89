/* The kernel library (guests/kernels/library.c) run as Wasm through the
 * worker pool, checked against the very same source compiled natively into
 * this test (the #include below). Every kernel runs on the same inputs in
 * the same device memory; outputs are compared element by element. */
#define _GNU_SOURCE
#include <math.h>
#include <string.h>

#include "kiln/dispatch.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

#define KILN_KERNEL_NATIVE_PREFIX native_
#include "../../guests/kernels/library.c"

unsigned char *kiln_kernel_native_base;

typedef void (*native_kernel)(const kiln_kernel_args *, uint32_t, uint32_t,
                              uint32_t);

typedef struct lib {
  kiln_dmem *dm;
  kiln_pool *pool;
  kiln_executable *x;
  kiln_memory *mem;
} lib;

static bool lib_open(kiln_test *t, lib *l) {
  memset(l, 0, sizeof *l);
  KILN_EXPECT_OK(t, kiln_dmem_create(&(kiln_dmem_options){.initial_bytes = 32u << 20}, &l->dm));
  if (!l->dm) return false;
  KILN_EXPECT_OK(t, kiln_pool_create(l->dm, NULL, &l->pool));
  if (!l->pool) return false;
  l->mem = kiln_dmem_memory(l->dm);
  kiln_kernel_native_base = kiln_memory_base(l->mem);
  char path[512];
  snprintf(path, sizeof path, "%s/kernels.wasm", KILN_GUEST_DIR);
  KILN_EXPECT_OK(t, kiln_executable_load_file(l->pool, kiln_test_engine(), path, &l->x));
  return l->x != NULL;
}

static void lib_close(lib *l) {
  kiln_executable_release(l->x);
  kiln_pool_release(l->pool);
  kiln_dmem_release(l->dm);
}

static uint64_t buffer(kiln_test *t, lib *l, size_t floats) {
  uint64_t off = 0;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(l->dm, floats * 4, 64, &off));
  return off;
}

static float *F(lib *l, uint64_t off) {
  return (float *)(void *)(kiln_memory_base(l->mem) + off);
}

static void fill_random(float *p, size_t n, uint32_t seed, float scale) {
  uint32_t s = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * scale;
  }
}

/* Runs `kernel` as Wasm with `wasm_bind`, and natively with `native_bind`
 * (the same but for the outputs), over the whole grid. */
static void run_both(kiln_test *t, lib *l, const char *kernel, native_kernel fn,
                     const uint32_t groups[3], uint32_t nb,
                     const kiln_binding *wasm_bind,
                     const kiln_binding *native_bind, uint32_t np,
                     const uint32_t *push) {
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(l->pool, &cb));
  kiln_dispatch_desc d = {.executable = l->x, .kernel = kernel,
                          .groups = {groups[0], groups[1], groups[2]},
                          .binding_count = nb, .bindings = wasm_bind,
                          .push_count = np, .push = push};
  KILN_EXPECT_OK(t, kiln_cmdbuf_dispatch(cb, &d));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  kiln_cmdbuf_release(cb);
  kiln_kernel_args a;
  memset(&a, 0, sizeof a);
  memcpy(a.group_count, groups, sizeof a.group_count);
  a.binding_count = nb;
  a.push_count = np;
  for (uint32_t i = 0; i < nb; i++) {
    a.binding[i] = (uint32_t)native_bind[i].offset;
    a.binding_size[i] = (uint32_t)native_bind[i].size;
  }
  memcpy(a.push, push, np * 4);
  for (uint32_t z = 0; z < groups[2]; z++)
    for (uint32_t y = 0; y < groups[1]; y++)
      for (uint32_t x = 0; x < groups[0]; x++) fn(&a, x, y, z);
}

/* Compares n floats; returns the number of bit-exact matches. Fails the
 * test beyond a relative tolerance. */
static size_t compare(kiln_test *t, const char *what, const float *got,
                      const float *want, size_t n, float rtol) {
  size_t exact = 0, bad = 0, first = 0;
  for (size_t i = 0; i < n; i++) {
    if (!memcmp(&got[i], &want[i], 4)) {
      exact++;
      continue;
    }
    float tol = rtol * (fabsf(want[i]) > 1.0f ? fabsf(want[i]) : 1.0f);
    if (!(fabsf(got[i] - want[i]) <= tol) && !bad++) first = i;
  }
  KILN_EXPECTF(t, bad == 0, "%s: %zu of %zu differ; first at %zu: %g vs %g",
               what, bad, n, first, got[first], want[first]);
  printf("  %s: %zu of %zu bit-exact\n", what, exact, n);
  return exact;
}

static void test_gemm_matches_native(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  /* Sizes that are not multiples of the 64x64 tile nor the K block. */
  const uint32_t M = 130, N = 97, K = 300;
  uint64_t a = buffer(t, &l, M * K), b = buffer(t, &l, K * N),
           c = buffer(t, &l, M * N), r = buffer(t, &l, M * N);
  fill_random(F(&l, a), M * K, 1, 2.0f);
  fill_random(F(&l, b), K * N, 2, 2.0f);
  kiln_binding wb[3] = {{a, M * K * 4}, {b, K * N * 4}, {c, M * N * 4}};
  kiln_binding nb[3] = {{a, M * K * 4}, {b, K * N * 4}, {r, M * N * 4}};
  uint32_t push[3] = {M, N, K};
  uint32_t groups[3] = {(N + 63) / 64, (M + 63) / 64, 1};
  run_both(t, &l, "gemm_f32", native_gemm_f32, groups, 3, wb, nb, 3, push);
  compare(t, "gemm 130x97x300", F(&l, c), F(&l, r), M * N, 1e-5f);
  /* And against a plain triple loop in double precision. */
  const float *A = F(&l, a), *B = F(&l, b), *C = F(&l, c);
  size_t bad = 0;
  for (uint32_t i = 0; i < M; i++)
    for (uint32_t j = 0; j < N; j++) {
      double s = 0;
      for (uint32_t k = 0; k < K; k++) s += (double)A[i * K + k] * B[k * N + j];
      bad += fabs(C[i * N + j] - s) > 1e-3 * (1 + fabs(s));
    }
  KILN_EXPECTF(t, bad == 0, "%zu elements off the double-precision product", bad);
out:
  lib_close(&l);
}

static void test_elementwise_match_native(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  const uint32_t n = 100003, per = 4096;
  uint64_t x = buffer(t, &l, n), y = buffer(t, &l, n), o = buffer(t, &l, n),
           r = buffer(t, &l, n);
  fill_random(F(&l, x), n, 3, 100.0f);
  fill_random(F(&l, y), n, 4, 100.0f);
  float alpha = 0.75f;
  uint32_t alpha_bits;
  memcpy(&alpha_bits, &alpha, 4);
  uint32_t push[3] = {n, per, alpha_bits};
  uint32_t groups[3] = {(n + per - 1) / per, 1, 1};
  kiln_binding wb[3] = {{x, n * 4}, {y, n * 4}, {o, n * 4}};
  kiln_binding nb[3] = {{x, n * 4}, {y, n * 4}, {r, n * 4}};
  struct { const char *name; native_kernel fn; } k[3] = {
      {"add_f32", native_add_f32}, {"mul_f32", native_mul_f32},
      {"axpy_f32", native_axpy_f32}};
  for (int i = 0; i < 3; i++) {
    memset(F(&l, o), 0, n * 4);
    run_both(t, &l, k[i].name, k[i].fn, groups, 3, wb, nb, 3, push);
    KILN_EXPECT(t, compare(t, k[i].name, F(&l, o), F(&l, r), n, 0) == n);
  }
out:
  lib_close(&l);
}

static void test_reduction_matches_native(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  const uint32_t n = 1000001, per = 16384, g = (n + per - 1) / per;
  uint64_t x = buffer(t, &l, n), p = buffer(t, &l, g), rp = buffer(t, &l, g),
           s = buffer(t, &l, 1), rs = buffer(t, &l, 1);
  fill_random(F(&l, x), n, 5, 1.0f);
  uint32_t push[2] = {n, per}, groups[3] = {g, 1, 1};
  kiln_binding wb[2] = {{x, n * 4}, {p, g * 4}}, nb[2] = {{x, n * 4}, {rp, g * 4}};
  run_both(t, &l, "sum_f32", native_sum_f32, groups, 2, wb, nb, 2, push);
  compare(t, "sum partials", F(&l, p), F(&l, rp), g, 0);
  uint32_t push2[2] = {g, g}, one[3] = {1, 1, 1};
  kiln_binding wb2[2] = {{p, g * 4}, {s, 4}}, nb2[2] = {{rp, g * 4}, {rs, 4}};
  run_both(t, &l, "sum_f32", native_sum_f32, one, 2, wb2, nb2, 2, push2);
  compare(t, "sum total", F(&l, s), F(&l, rs), 1, 0);
  double want = 0;
  for (uint32_t i = 0; i < n; i++) want += F(&l, x)[i];
  KILN_EXPECTF(t, fabs(F(&l, s)[0] - want) < 1e-2, "sum %g, double %g",
               F(&l, s)[0], want);
out:
  lib_close(&l);
}

static void test_softmax_matches_native(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  const uint32_t rows = 257, cols = 1000, rpg = 16;
  uint64_t x = buffer(t, &l, rows * cols), o = buffer(t, &l, rows * cols),
           r = buffer(t, &l, rows * cols);
  fill_random(F(&l, x), rows * cols, 6, 40.0f);
  uint32_t push[3] = {rows, cols, rpg}, groups[3] = {(rows + rpg - 1) / rpg, 1, 1};
  kiln_binding wb[2] = {{x, rows * cols * 4}, {o, rows * cols * 4}};
  kiln_binding nb[2] = {{x, rows * cols * 4}, {r, rows * cols * 4}};
  run_both(t, &l, "softmax_f32", native_softmax_f32, groups, 2, wb, nb, 3, push);
  compare(t, "softmax 257x1000", F(&l, o), F(&l, r), rows * cols, 1e-6f);
  /* Rows sum to 1, and kiln_expf is close to libm's expf. */
  for (uint32_t i = 0; i < rows; i += 64) {
    double s = 0;
    for (uint32_t j = 0; j < cols; j++) s += F(&l, o)[i * cols + j];
    KILN_EXPECTF(t, fabs(s - 1.0) < 1e-4, "row %u sums to %g", i, s);
  }
  float worst = 0;
  for (float v = -80.0f; v < 80.0f; v += 0.37f) {
    float e = fabsf(kiln_expf(v) - expf(v)) / expf(v);
    if (e > worst) worst = e;
  }
  KILN_EXPECTF(t, worst < 1e-6f, "kiln_expf relative error %g", worst);
out:
  lib_close(&l);
}

static void test_conv2d_matches_native(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  const uint32_t CI = 3, H = 34, W = 50, CO = 8, KH = 3, KW = 5, rpg = 7;
  const uint32_t OH = H - KH + 1, OW = W - KW + 1;
  uint64_t in = buffer(t, &l, CI * H * W), w = buffer(t, &l, CO * CI * KH * KW),
           bias = buffer(t, &l, CO), o = buffer(t, &l, CO * OH * OW),
           r = buffer(t, &l, CO * OH * OW);
  fill_random(F(&l, in), CI * H * W, 7, 2.0f);
  fill_random(F(&l, w), CO * CI * KH * KW, 8, 1.0f);
  fill_random(F(&l, bias), CO, 9, 1.0f);
  uint32_t push[7] = {CI, H, W, CO, KH, KW, rpg};
  uint32_t groups[3] = {CO, (OH + rpg - 1) / rpg, 1};
  kiln_binding wb[4] = {{in, CI * H * W * 4}, {w, CO * CI * KH * KW * 4}, {bias, CO * 4}, {o, CO * OH * OW * 4}};
  kiln_binding nb[4] = {wb[0], wb[1], wb[2], {r, CO * OH * OW * 4}};
  run_both(t, &l, "conv2d_f32", native_conv2d_f32, groups, 4, wb, nb, 7, push);
  compare(t, "conv2d 3x34x50 -> 8x32x46", F(&l, o), F(&l, r), CO * OH * OW, 1e-5f);
  /* Spot check one output against the definition. */
  const float *I = F(&l, in), *Wt = F(&l, w);
  double s = F(&l, bias)[5];
  for (uint32_t ci = 0; ci < CI; ci++)
    for (uint32_t ky = 0; ky < KH; ky++)
      for (uint32_t kx = 0; kx < KW; kx++)
        s += (double)I[(ci * H + 10 + ky) * W + 20 + kx] *
             Wt[((5 * CI + ci) * KH + ky) * KW + kx];
  KILN_EXPECTF(t, fabs(F(&l, o)[(5 * OH + 10) * OW + 20] - s) < 1e-4, "out %g, want %g",
               F(&l, o)[(5 * OH + 10) * OW + 20], s);
out:
  lib_close(&l);
}

static void test_library_exports_every_kernel(kiln_test *t) {
  lib l;
  if (!lib_open(t, &l)) goto out;
  const char *want[] = {"empty", "gemm_f32", "add_f32", "mul_f32", "axpy_f32",
                        "sum_f32", "softmax_f32", "conv2d_f32"};
  KILN_EXPECT(t, kiln_executable_kernel_count(l.x) == 8);
  for (size_t i = 0; i < 8; i++) {
    bool found = false;
    for (size_t k = 0; k < kiln_executable_kernel_count(l.x); k++)
      found |= !strcmp(kiln_executable_kernel_name(l.x, k), want[i]);
    KILN_EXPECTF(t, found, "no kernel %s", want[i]);
  }
out:
  lib_close(&l);
}

KILN_TEST_MAIN(test_library_exports_every_kernel, test_gemm_matches_native,
               test_elementwise_match_native, test_reduction_matches_native,
               test_softmax_matches_native, test_conv2d_matches_native)
