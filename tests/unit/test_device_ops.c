/* Every op on the cpu backend against a plain reference written here. */
#include <stdlib.h>

#include "device/device_internal.h"
#include "test_device_util.h"

static const kiln_dtype float_types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16,
                                         KILN_DTYPE_BF16};

static void fill(float *v, size_t n) {
  for (size_t i = 0; i < n; i++) v[i] = rnd_val();
}

/* ---- conversions ---------------------------------------------------------- */

static void test_f16_bf16_conversions(kiln_test *t) {
#ifdef __FLT16_MAX__
  /* Every f16 bit pattern decodes like the compiler's _Float16. */
  for (uint32_t h = 0; h < 65536; h++) {
    float a = kiln_f16_to_f32((uint16_t)h), b = t_from_f16((uint16_t)h);
    if (isnan(b)) {
      KILN_EXPECT(t, isnan(a));
      continue;
    }
    if (memcmp(&a, &b, 4)) {
      KILN_EXPECTF(t, 0, "f16 0x%04x decodes to %g, want %g", h, a, b);
      break;
    }
  }
  /* Random f32 values (all exponents) encode like _Float16 (RNE). */
  for (int i = 0; i < 200000; i++) {
    uint32_t u = rnd() ^ (rnd() << 16);
    float f;
    memcpy(&f, &u, 4);
    if (isnan(f)) continue;
    uint16_t a = kiln_f32_to_f16(f), b = t_f16(f);
    if (a != b) {
      KILN_EXPECTF(t, 0, "f32 %a encodes to f16 0x%04x, want 0x%04x", f, a, b);
      break;
    }
  }
#endif
  KILN_EXPECT(t, kiln_f32_to_f16(65520.0f) == 0x7c00);       /* to inf */
  KILN_EXPECT(t, kiln_f32_to_f16(0x1p-25f) == 0x0000);       /* tie to even 0 */
  KILN_EXPECT(t, kiln_f32_to_f16(0x1.8p-24f) == 0x0002);     /* tie to even */
  /* bf16: ties to even, NaN stays NaN. */
  KILN_EXPECT(t, kiln_f32_to_bf16(1.0f) == 0x3f80);
  float tie_down, tie_up;
  uint32_t u = 0x3f808000u; /* halfway between 0x3f80 and 0x3f81 */
  memcpy(&tie_down, &u, 4);
  u = 0x3f818000u;          /* halfway between 0x3f81 and 0x3f82 */
  memcpy(&tie_up, &u, 4);
  KILN_EXPECT(t, kiln_f32_to_bf16(tie_down) == 0x3f80);
  KILN_EXPECT(t, kiln_f32_to_bf16(tie_up) == 0x3f82);
  KILN_EXPECT(t, isnan(kiln_bf16_to_f32(kiln_f32_to_bf16(NAN))));
  KILN_EXPECT(t, kiln_bf16_to_f32(0x4049) == t_from_bf16(0x4049));
}

/* ---- GEMM ------------------------------------------------------------------- */

static void gemm_case(kiln_test *t, kiln_device *d, kiln_dtype dt, bool ta,
                      bool tb, float beta, int64_t pad) {
  int64_t M = 37, N = 29, K = 53;
  tmem x = tmem_new(t, d, 8);
  /* a, b stored with a leading-dimension padding of `pad` elements. */
  int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
  size_t es = kiln_dtype_size(dt);
  uint64_t oa = tmem_alloc(&x, (size_t)ar * (ac + pad) * es, 64);
  uint64_t ob = tmem_alloc(&x, (size_t)br * (bc + pad) * es, 64);
  uint64_t oc = tmem_alloc(&x, (size_t)M * N * 4, 64);
  float *av = calloc((size_t)ar * (ac + pad), 4), *bv = calloc((size_t)br * (bc + pad), 4);
  fill(av, (size_t)ar * (ac + pad));
  fill(bv, (size_t)br * (bc + pad));
  store_as(dt, tptr(&x, oa), av, (size_t)ar * (ac + pad));
  store_as(dt, tptr(&x, ob), bv, (size_t)br * (bc + pad));
  float *c = tf32(&x, oc), *c0 = malloc((size_t)M * N * 4);
  fill(c, (size_t)M * N);
  memcpy(c0, c, (size_t)M * N * 4);
  kiln_op op = {.kind = KILN_OP_GEMM, .alpha = 0.5f, .beta = beta};
  op.flags = (ta ? KILN_OP_TRANS_A : 0) | (tb ? KILN_OP_TRANS_B : 0);
  op.a = T2(&x, oa, dt, ar, ac);
  op.a.stride[0] = ac + pad, op.a.stride[1] = 1;
  op.b = T2(&x, ob, dt, br, bc);
  op.b.stride[0] = bc + pad, op.b.stride[1] = 1;
  op.c = T2(&x, oc, KILN_DTYPE_F32, M, N);
  RUN(t, d, op);
  int bad = 0;
  for (int64_t m = 0; m < M && !bad; m++)
    for (int64_t n = 0; n < N && !bad; n++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) {
        double a = ta ? av[k * (ac + pad) + m] : av[m * (ac + pad) + k];
        double b = tb ? bv[n * (bc + pad) + k] : bv[k * (bc + pad) + n];
        s += a * b;
      }
      double want = 0.5 * s + beta * c0[m * N + n];
      if (!close_to(c[m * N + n], want, 1e-5)) {
        KILN_EXPECTF(t, 0, "GEMM %s ta=%d tb=%d beta=%g: c[%lld,%lld] = %g, want %g",
                     kiln_dtype_name(dt), ta, tb, beta, (long long)m,
                     (long long)n, c[m * N + n], want);
        bad = 1;
      }
    }
  free(av);
  free(bv);
  free(c0);
  kiln_device_detach(d, x.m);
  kiln_memory_release(x.m);
}

static void test_gemm_all_dtypes_and_transposes(kiln_test *t) {
  kiln_device *d = open_cpu(t, 3, false);
  for (int i = 0; i < 3; i++)
    for (int f = 0; f < 4; f++)
      gemm_case(t, d, float_types[i], f & 1, f & 2, f == 3 ? 1.5f : 0.0f,
                f == 2 ? 3 : 0);
  kiln_device_release(d);
}

static void test_gemm_large_parallel(kiln_test *t) {
  /* Big enough to be split across workers. */
  kiln_device *d = open_cpu(t, 4, false);
  int64_t n = 160;
  tmem x = tmem_new(t, d, 8);
  uint64_t oa = tmem_alloc(&x, n * n * 4, 64), ob = tmem_alloc(&x, n * n * 4, 64),
           oc = tmem_alloc(&x, n * n * 4, 64);
  fill(tf32(&x, oa), n * n);
  fill(tf32(&x, ob), n * n);
  kiln_op op = {.kind = KILN_OP_GEMM, .alpha = 1};
  op.a = T2(&x, oa, KILN_DTYPE_F32, n, n);
  op.b = T2(&x, ob, KILN_DTYPE_F32, n, n);
  op.c = T2(&x, oc, KILN_DTYPE_F32, n, n);
  RUN(t, d, op);
  const float *a = tf32(&x, oa), *b = tf32(&x, ob), *c = tf32(&x, oc);
  int bad = 0;
  for (int64_t i = 0; i < n && !bad; i += 7)
    for (int64_t j = 0; j < n && !bad; j += 3) {
      double s = 0;
      for (int64_t k = 0; k < n; k++) s += (double)a[i * n + k] * b[k * n + j];
      if (!close_to(c[i * n + j], s, 1e-5)) bad = 1;
    }
  KILN_EXPECT(t, !bad);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* ---- GEMV ------------------------------------------------------------------- */

static void test_gemv_all_weight_dtypes(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16,
                              KILN_DTYPE_Q8_0};
  int64_t N = 33, K = 64;
  for (int ti = 0; ti < 4; ti++)
    for (int64_t M = 1; M <= 5; M += 4) {
      kiln_dtype dt = types[ti];
      tmem x = tmem_new(t, d, 2);
      float *w = malloc((size_t)N * K * 4);
      uint64_t ow;
      if (dt == KILN_DTYPE_Q8_0) {
        ow = tmem_alloc(&x, (size_t)N * K / 32 * 34, 2);
        uint8_t *p = tptr(&x, ow);
        for (int64_t blk = 0; blk < N * K / 32; blk++) {
          float scale = 0.0625f * (float)(1 + blk % 3);
          uint16_t h = t_f16(scale);
          memcpy(p + blk * 34, &h, 2);
          for (int j = 0; j < 32; j++) {
            int8_t q = (int8_t)((int)(rnd() % 255) - 127);
            p[blk * 34 + 2 + j] = (uint8_t)q;
            w[blk * 32 + j] = scale * q;
          }
        }
      } else {
        ow = tmem_alloc(&x, (size_t)N * K * kiln_dtype_size(dt), 64);
        fill(w, (size_t)N * K);
        store_as(dt, tptr(&x, ow), w, (size_t)N * K);
      }
      uint64_t ob = tmem_alloc(&x, M * K * 4, 64), oc = tmem_alloc(&x, M * N * 4, 64);
      fill(tf32(&x, ob), M * K);
      fill(tf32(&x, oc), M * N);
      float *c0 = malloc(M * N * 4);
      memcpy(c0, tf32(&x, oc), M * N * 4);
      kiln_op op = {.kind = KILN_OP_GEMV, .alpha = 2, .beta = M == 1 ? 0 : 1};
      op.a = T2(&x, ow, dt, N, K);
      op.b = M == 1 ? T1(&x, ob, KILN_DTYPE_F32, K) : T2(&x, ob, KILN_DTYPE_F32, M, K);
      op.c = M == 1 ? T1(&x, oc, KILN_DTYPE_F32, N) : T2(&x, oc, KILN_DTYPE_F32, M, N);
      RUN(t, d, op);
      const float *b = tf32(&x, ob), *c = tf32(&x, oc);
      for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
          double s = 0;
          for (int64_t k = 0; k < K; k++) s += (double)b[m * K + k] * w[n * K + k];
          double want = 2 * s + op.beta * c0[m * N + n];
          KILN_EXPECTF(t, close_to(c[m * N + n], want, 1e-5),
                       "GEMV %s M=%lld: c[%lld,%lld] = %g, want %g",
                       kiln_dtype_name(dt), (long long)M, (long long)m,
                       (long long)n, c[m * N + n], want);
        }
      free(w);
      free(c0);
      kiln_memory_release(x.m);
    }
  kiln_device_release(d);
}

/* ---- Element-wise and row ops ------------------------------------------------ */

static void test_add_mul_same_shape_broadcast_and_padded_rows(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t A = 3, B = 4, C = 10, pad = 6; /* a is [3,4,10] with rows of 16 */
  uint64_t oa = tmem_alloc(&x, A * B * (C + pad) * 4, 64);
  uint64_t ob = tmem_alloc(&x, A * B * C * 4, 64), orow = tmem_alloc(&x, C * 4, 64);
  uint64_t oc = tmem_alloc(&x, A * B * C * 4, 64);
  fill(tf32(&x, oa), A * B * (C + pad));
  fill(tf32(&x, ob), A * B * C);
  fill(tf32(&x, orow), C);
  kiln_tensor ta = T3(&x, oa, KILN_DTYPE_F32, A, B, C);
  ta.stride[0] = B * (C + pad), ta.stride[1] = C + pad, ta.stride[2] = 1;
  for (int kind = 0; kind < 2; kind++)
    for (int bc = 0; bc < 2; bc++) {
      kiln_op op = {.kind = kind ? KILN_OP_MUL : KILN_OP_ADD, .a = ta};
      op.b = bc ? T1(&x, orow, KILN_DTYPE_F32, C) : T3(&x, ob, KILN_DTYPE_F32, A, B, C);
      op.c = T3(&x, oc, KILN_DTYPE_F32, A, B, C);
      RUN(t, d, op);
      int bad = 0;
      for (int64_t r = 0; r < A * B; r++)
        for (int64_t j = 0; j < C; j++) {
          float av = tf32(&x, oa)[r * (C + pad) + j];
          float bv = bc ? tf32(&x, orow)[j] : tf32(&x, ob)[r * C + j];
          float want = kind ? av * bv : av + bv;
          if (tf32(&x, oc)[r * C + j] != want) bad++;
        }
      KILN_EXPECTF(t, !bad, "%s broadcast=%d: %d wrong", kind ? "MUL" : "ADD",
                   bc, bad);
    }
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static double ref_silu(double v) { return v / (1 + exp(-v)); }
static double ref_gelu(double v) {
  return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
}

static void test_unary_ops_and_swiglu(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t R = 7, C = 45;
  uint64_t oa = tmem_alloc(&x, R * C * 4, 64), ob = tmem_alloc(&x, R * C * 4, 64),
           oc = tmem_alloc(&x, R * C * 4, 64);
  fill(tf32(&x, oa), R * C);
  fill(tf32(&x, ob), R * C);
  const float *a = tf32(&x, oa), *b = tf32(&x, ob);
  const kiln_op_kind kinds[] = {KILN_OP_SCALE, KILN_OP_SILU, KILN_OP_GELU,
                                KILN_OP_SWIGLU};
  for (int i = 0; i < 4; i++) {
    kiln_op op = {.kind = kinds[i], .alpha = -1.25f};
    op.a = T2(&x, oa, KILN_DTYPE_F32, R, C);
    if (kinds[i] == KILN_OP_SWIGLU) {
      op.b = T2(&x, ob, KILN_DTYPE_F32, R, C);
      op.c = T2(&x, oc, KILN_DTYPE_F32, R, C);
    } else {
      op.b = T2(&x, oc, KILN_DTYPE_F32, R, C);
    }
    RUN(t, d, op);
    int bad = 0;
    for (int64_t j = 0; j < R * C; j++) {
      double want = kinds[i] == KILN_OP_SCALE  ? -1.25 * a[j]
                    : kinds[i] == KILN_OP_SILU ? ref_silu(a[j])
                    : kinds[i] == KILN_OP_GELU ? ref_gelu(a[j])
                                               : ref_silu(a[j]) * b[j];
      if (!close_to(tf32(&x, oc)[j], want, 1e-5)) bad++;
    }
    KILN_EXPECTF(t, !bad, "%s: %d wrong", kiln_op_kind_name(kinds[i]), bad);
  }
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void test_rmsnorm(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t R = 5, C = 96;
  uint64_t oa = tmem_alloc(&x, R * C * 4, 64), ow = tmem_alloc(&x, C * 4, 64),
           oc = tmem_alloc(&x, R * C * 4, 64);
  fill(tf32(&x, oa), R * C);
  fill(tf32(&x, ow), C);
  kiln_op op = {.kind = KILN_OP_RMSNORM, .eps = 1e-5f};
  op.a = T2(&x, oa, KILN_DTYPE_F32, R, C);
  op.b = T1(&x, ow, KILN_DTYPE_F32, C);
  op.c = T2(&x, oc, KILN_DTYPE_F32, R, C);
  RUN(t, d, op);
  const float *a = tf32(&x, oa), *w = tf32(&x, ow), *c = tf32(&x, oc);
  int bad = 0;
  for (int64_t r = 0; r < R; r++) {
    double ss = 0;
    for (int64_t j = 0; j < C; j++) ss += (double)a[r * C + j] * a[r * C + j];
    double inv = 1 / sqrt(ss / C + 1e-5);
    for (int64_t j = 0; j < C; j++)
      if (!close_to(c[r * C + j], a[r * C + j] * inv * w[j], 1e-5)) bad++;
  }
  KILN_EXPECT(t, !bad);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void test_softmax_plain_and_causal(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t T = 3, H = 2, S = 8;
  uint64_t oa = tmem_alloc(&x, T * H * S * 4, 64), ob = tmem_alloc(&x, T * H * S * 4, 64),
           oi = tmem_alloc(&x, 4, 4);
  fill(tf32(&x, oa), T * H * S);
  *(int32_t *)tptr(&x, oi) = 4;
  for (int causal = 0; causal < 2; causal++) {
    kiln_op op = {.kind = KILN_OP_SOFTMAX, .alpha = 0.7f};
    op.a = T3(&x, oa, KILN_DTYPE_F32, T, H, S);
    op.b = T3(&x, ob, KILN_DTYPE_F32, T, H, S);
    if (causal) op.index = T1(&x, oi, KILN_DTYPE_I32, 1);
    RUN(t, d, op);
    int bad = 0;
    for (int64_t tt = 0; tt < T; tt++)
      for (int64_t h = 0; h < H; h++) {
        const float *a = tf32(&x, oa) + (tt * H + h) * S;
        const float *b = tf32(&x, ob) + (tt * H + h) * S;
        int64_t n = causal ? 4 + tt + 1 : S;
        if (n > S) n = S;
        double mx = -1e30, sum = 0;
        for (int64_t j = 0; j < n; j++) mx = fmax(mx, 0.7 * a[j]);
        for (int64_t j = 0; j < n; j++) sum += exp(0.7 * a[j] - mx);
        for (int64_t j = 0; j < S; j++) {
          double want = j < n ? exp(0.7 * a[j] - mx) / sum : 0;
          if (!close_to(b[j], want, 1e-5)) bad++;
        }
      }
    KILN_EXPECTF(t, !bad, "causal=%d: %d wrong", causal, bad);
  }
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void rope_ref(const float *in, float *out, int64_t T, int64_t H,
                     int64_t D, const float *inv, int64_t pos0) {
  for (int64_t tt = 0; tt < T; tt++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t i = 0; i < D / 2; i++) {
        const float *x = in + (tt * H + h) * D;
        double th = (double)(pos0 + tt) * inv[i];
        out[(tt * H + h) * D + i] = (float)(x[i] * cos(th) - x[i + D / 2] * sin(th));
        out[(tt * H + h) * D + i + D / 2] =
            (float)(x[i + D / 2] * cos(th) + x[i] * sin(th));
      }
}

static void test_rope_with_index_pos_and_in_place(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t T = 3, H = 4, D = 16;
  uint64_t oa = tmem_alloc(&x, T * H * D * 4, 64), ob = tmem_alloc(&x, T * H * D * 4, 64),
           of = tmem_alloc(&x, D / 2 * 4, 64), oi = tmem_alloc(&x, 4, 4);
  fill(tf32(&x, oa), T * H * D);
  for (int64_t i = 0; i < D / 2; i++)
    tf32(&x, of)[i] = (float)pow(10000.0, -2.0 * i / D);
  *(int32_t *)tptr(&x, oi) = 11;
  float want[3 * 4 * 16], orig[3 * 4 * 16];
  memcpy(orig, tf32(&x, oa), sizeof orig);
  for (int mode = 0; mode < 3; mode++) {
    /* 0: position from index; 1: from pos; 2: in place from index */
    kiln_op op = {.kind = KILN_OP_ROPE, .pos = 5};
    op.a = T3(&x, oa, KILN_DTYPE_F32, T, H, D);
    op.b = T3(&x, mode == 2 ? oa : ob, KILN_DTYPE_F32, T, H, D);
    op.c = T1(&x, of, KILN_DTYPE_F32, D / 2);
    if (mode != 1) op.index = T1(&x, oi, KILN_DTYPE_I32, 1);
    RUN(t, d, op);
    rope_ref(orig, want, T, H, D, tf32(&x, of), mode == 1 ? 5 : 11);
    const float *got = tf32(&x, mode == 2 ? oa : ob);
    int bad = 0;
    for (int64_t j = 0; j < T * H * D; j++)
      if (fabsf(got[j] - want[j]) > 1e-4f) bad++;
    KILN_EXPECTF(t, !bad, "mode %d: %d wrong", mode, bad);
  }
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void test_argmax_first_on_ties(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 1);
  int64_t R = 4, C = 9;
  uint64_t oa = tmem_alloc(&x, R * C * 4, 64), ob = tmem_alloc(&x, R * 4, 64);
  float *a = tf32(&x, oa);
  fill(a, R * C);
  a[0 * C + 2] = 9, a[0 * C + 5] = 9; /* tie: 2 wins */
  a[1 * C + 8] = 10;
  a[2 * C + 0] = 11;
  for (int64_t j = 0; j < C; j++) a[3 * C + j] = -1;
  kiln_op op = {.kind = KILN_OP_ARGMAX};
  op.a = T2(&x, oa, KILN_DTYPE_F32, R, C);
  op.b = T1(&x, ob, KILN_DTYPE_I32, R);
  RUN(t, d, op);
  const int32_t *b = tptr(&x, ob);
  KILN_EXPECT(t, b[0] == 2 && b[1] == 8 && b[2] == 0 && b[3] == 0);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* ---- COPY --------------------------------------------------------------------- */

static void test_copy_conversions_and_strides(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t R = 6, C = 64;
  uint64_t osrc = tmem_alloc(&x, R * C * 4, 64), odst = tmem_alloc(&x, R * C * 4, 64);
  float *src = tf32(&x, osrc);
  fill(src, R * C);
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      kiln_dtype from = float_types[i], to = float_types[j];
      /* src as `from`, then COPY to `to`, compared after decoding. */
      float vals[6 * 64];
      fill(vals, R * C);
      store_as(from, tptr(&x, osrc), vals, R * C);
      kiln_op op = {.kind = KILN_OP_COPY};
      op.a = T2(&x, osrc, from, R, C);
      op.b = T2(&x, odst, to, R, C);
      RUN(t, d, op);
      int bad = 0;
      for (int64_t k = 0; k < R * C; k++) {
        float got = to == KILN_DTYPE_F32 ? tf32(&x, odst)[k]
                    : to == KILN_DTYPE_F16 ? t_from_f16(((uint16_t *)tptr(&x, odst))[k])
                                           : t_from_bf16(((uint16_t *)tptr(&x, odst))[k]);
        if (got != vals[k]) bad++;
      }
      KILN_EXPECTF(t, !bad, "COPY %s -> %s: %d wrong", kiln_dtype_name(from),
                   kiln_dtype_name(to), bad);
    }
  /* Transpose through strides: b[j, i] = a[i, j] written via a view. */
  fill(src, R * C);
  kiln_op op = {.kind = KILN_OP_COPY};
  op.a = T2(&x, osrc, KILN_DTYPE_F32, R, C);
  op.b = T2(&x, odst, KILN_DTYPE_F32, R, C);
  op.b.stride[0] = 1, op.b.stride[1] = R; /* dst is [C, R] row-major */
  RUN(t, d, op);
  int bad = 0;
  for (int64_t i = 0; i < R; i++)
    for (int64_t j = 0; j < C; j++)
      if (tf32(&x, odst)[j * R + i] != src[i * C + j]) bad++;
  KILN_EXPECT(t, !bad);
  /* Rounding: f32 -> bf16 rounds to nearest even. */
  tf32(&x, osrc)[0] = 1.00390625f; /* 1 + 2^-8: a tie, even is 1.0 */
  op.a = T1(&x, osrc, KILN_DTYPE_F32, 1);
  op.b = T1(&x, odst, KILN_DTYPE_BF16, 1);
  RUN(t, d, op);
  KILN_EXPECT(t, ((uint16_t *)tptr(&x, odst))[0] == 0x3f80);
  /* i32 to i32 is bit-exact. */
  int32_t *iv = tptr(&x, osrc);
  for (int k = 0; k < 8; k++) iv[k] = (int32_t)(rnd() ^ 0x80000001u);
  op.a = T1(&x, osrc, KILN_DTYPE_I32, 8);
  op.b = T1(&x, odst, KILN_DTYPE_I32, 8);
  RUN(t, d, op);
  KILN_EXPECT(t, memcmp(tptr(&x, osrc), tptr(&x, odst), 32) == 0);
  /* q8_0 -> f32. */
  uint8_t *q = tptr(&x, osrc);
  uint16_t h = t_f16(0.5f);
  memcpy(q, &h, 2);
  for (int j = 0; j < 32; j++) q[2 + j] = (uint8_t)(int8_t)(j - 16);
  op.a = T2(&x, osrc, KILN_DTYPE_Q8_0, 1, 32);
  op.b = T2(&x, odst, KILN_DTYPE_F32, 1, 32);
  RUN(t, d, op);
  bad = 0;
  for (int j = 0; j < 32; j++)
    if (tf32(&x, odst)[j] != 0.5f * (j - 16)) bad++;
  KILN_EXPECT(t, !bad);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void test_copy_index_append_and_out_of_capacity(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t cap = 8, H = 2, D = 4, n = 3;
  uint64_t ocache = tmem_alloc(&x, cap * H * D * 2, 64), orow = tmem_alloc(&x, n * H * D * 4, 64),
           oi = tmem_alloc(&x, 4, 4);
  memset(tptr(&x, ocache), 0, cap * H * D * 2);
  fill(tf32(&x, orow), n * H * D);
  kiln_op op = {.kind = KILN_OP_COPY};
  op.a = T3(&x, orow, KILN_DTYPE_F32, n, H, D);
  op.b = T3(&x, ocache, KILN_DTYPE_BF16, cap, H, D);
  op.index = T1(&x, oi, KILN_DTYPE_I32, 1);
  *(int32_t *)tptr(&x, oi) = 4;
  RUN(t, d, op);
  const uint16_t *cache = tptr(&x, ocache);
  int bad = 0;
  for (int64_t r = 0; r < cap; r++)
    for (int64_t k = 0; k < H * D; k++) {
      float want = r >= 4 && r < 7 ? tf32(&x, orow)[(r - 4) * H * D + k] : 0;
      if (t_from_bf16(cache[r * H * D + k]) != want) bad++;
    }
  KILN_EXPECT(t, !bad);
  /* Rows 6..8 do not fit a capacity of 8: the device fails the op at sync
   * and writes nothing. */
  uint8_t before[8 * 2 * 4 * 2];
  memcpy(before, cache, sizeof before);
  *(int32_t *)tptr(&x, oi) = 6;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_sync(d, NULL));
  KILN_EXPECT(t, memcmp(before, cache, sizeof before) == 0);
  *(int32_t *)tptr(&x, oi) = -1;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_sync(d, NULL));
  /* The device goes on: the next sync is clean. */
  *(int32_t *)tptr(&x, oi) = 0;
  RUN(t, d, op);
  KILN_EXPECT(t, t_from_bf16(cache[0]) == tf32(&x, orow)[0]);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* ---- GATHER ------------------------------------------------------------------- */

static void test_gather_tables_and_bad_id(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t V = 10, D = 64, T = 5;
  const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16, KILN_DTYPE_BF16,
                              KILN_DTYPE_Q8_0};
  float table[10 * 64];
  uint64_t otab = tmem_alloc(&x, V * D * 4, 64), oid = tmem_alloc(&x, T * 4, 64),
           oc = tmem_alloc(&x, T * D * 4, 64);
  int32_t *ids = tptr(&x, oid);
  const int32_t idv[5] = {3, 0, 9, 3, 7};
  memcpy(ids, idv, sizeof idv);
  for (int ti = 0; ti < 4; ti++) {
    kiln_dtype dt = types[ti];
    if (dt == KILN_DTYPE_Q8_0) {
      uint8_t *p = tptr(&x, otab);
      for (int64_t blk = 0; blk < V * D / 32; blk++) {
        uint16_t h = t_f16(0.25f);
        memcpy(p + blk * 34, &h, 2);
        for (int j = 0; j < 32; j++) {
          int8_t qv = (int8_t)((int)(rnd() % 255) - 127);
          p[blk * 34 + 2 + j] = (uint8_t)qv;
          table[blk * 32 + j] = 0.25f * qv;
        }
      }
    } else {
      fill(table, V * D);
      store_as(dt, tptr(&x, otab), table, V * D);
    }
    kiln_op op = {.kind = KILN_OP_GATHER};
    op.a = T2(&x, otab, dt, V, D);
    op.b = T1(&x, oid, KILN_DTYPE_I32, T);
    op.c = T2(&x, oc, KILN_DTYPE_F32, T, D);
    RUN(t, d, op);
    int bad = 0;
    for (int64_t i = 0; i < T; i++)
      for (int64_t j = 0; j < D; j++)
        if (tf32(&x, oc)[i * D + j] != table[idv[i] * D + j]) bad++;
    KILN_EXPECTF(t, !bad, "GATHER %s: %d wrong", kiln_dtype_name(dt), bad);
  }
  ids[2] = 10; /* == V */
  kiln_op op = {.kind = KILN_OP_GATHER};
  op.a = T2(&x, otab, KILN_DTYPE_F32, V, D);
  op.b = T1(&x, oid, KILN_DTYPE_I32, T);
  op.c = T2(&x, oc, KILN_DTYPE_F32, T, D);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_sync(d, NULL));
  ids[2] = -5;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_sync(d, NULL));
  ids[2] = 1;
  RUN(t, d, op);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* ---- ATTENTION ---------------------------------------------------------------- */

static void attention_ref(const float *q, const float *k, const float *v,
                          float *out, int64_t T, int64_t Hq, int64_t Hkv,
                          int64_t D, int64_t pos0, float scale) {
  for (int64_t tt = 0; tt < T; tt++)
    for (int64_t h = 0; h < Hq; h++) {
      int64_t kh = h / (Hq / Hkv), L = pos0 + tt + 1;
      double sc[64], mx = -1e30, sum = 0;
      for (int64_t j = 0; j < L; j++) {
        double s = 0;
        for (int64_t e = 0; e < D; e++)
          s += (double)q[(tt * Hq + h) * D + e] * k[(j * Hkv + kh) * D + e];
        sc[j] = s * scale;
        mx = fmax(mx, sc[j]);
      }
      for (int64_t j = 0; j < L; j++) sum += sc[j] = exp(sc[j] - mx);
      for (int64_t e = 0; e < D; e++) {
        double o = 0;
        for (int64_t j = 0; j < L; j++) o += sc[j] / sum * v[(j * Hkv + kh) * D + e];
        out[(tt * Hq + h) * D + e] = (float)o;
      }
    }
}

static void test_attention_gqa_causal_index_and_pos(kiln_test *t) {
  kiln_device *d = open_cpu(t, 3, false);
  tmem x = tmem_new(t, d, 2);
  int64_t T = 3, Hq = 4, Hkv = 2, D = 16, S = 10;
  uint64_t oq = tmem_alloc(&x, T * Hq * D * 4, 64), ok = tmem_alloc(&x, S * Hkv * D * 4, 64),
           ov = tmem_alloc(&x, S * Hkv * D * 4, 64), oo = tmem_alloc(&x, T * Hq * D * 4, 64),
           oi = tmem_alloc(&x, 4, 4);
  float qv[3 * 4 * 16], kv[10 * 2 * 16], vv[10 * 2 * 16], want[3 * 4 * 16];
  fill(qv, T * Hq * D);
  fill(kv, S * Hkv * D);
  fill(vv, S * Hkv * D);
  memcpy(tf32(&x, oq), qv, sizeof qv);
  *(int32_t *)tptr(&x, oi) = 2;
  for (int i = 0; i < 3; i++)
    for (int use_index = 0; use_index < 2; use_index++) {
      kiln_dtype dt = float_types[i];
      store_as(dt, tptr(&x, ok), kv, S * Hkv * D);
      store_as(dt, tptr(&x, ov), vv, S * Hkv * D);
      kiln_op op = {.kind = KILN_OP_ATTENTION, .alpha = 0.25f, .pos = 6};
      op.a = T3(&x, oq, KILN_DTYPE_F32, T, Hq, D);
      op.b = T3(&x, ok, dt, S, Hkv, D);
      op.c = T3(&x, ov, dt, S, Hkv, D);
      op.d = T3(&x, oo, KILN_DTYPE_F32, T, Hq, D);
      if (use_index) op.index = T1(&x, oi, KILN_DTYPE_I32, 1);
      RUN(t, d, op);
      attention_ref(qv, kv, vv, want, T, Hq, Hkv, D, use_index ? 2 : 6, 0.25f);
      int bad = 0;
      for (int64_t j = 0; j < T * Hq * D; j++)
        if (!close_to(tf32(&x, oo)[j], want[j], 1e-4)) bad++;
      KILN_EXPECTF(t, !bad, "ATTENTION %s index=%d: %d wrong",
                   kiln_dtype_name(dt), use_index, bad);
    }
  /* Positions past the cache: from pos a validation error, from the index
   * a device error. */
  kiln_op op = {.kind = KILN_OP_ATTENTION, .alpha = 0.25f, .pos = 8};
  op.a = T3(&x, oq, KILN_DTYPE_F32, T, Hq, D);
  op.b = T3(&x, ok, KILN_DTYPE_F32, S, Hkv, D);
  op.c = T3(&x, ov, KILN_DTYPE_F32, S, Hkv, D);
  op.d = T3(&x, oo, KILN_DTYPE_F32, T, Hq, D);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_submit(d, &op, NULL));
  op.index = T1(&x, oi, KILN_DTYPE_I32, 1);
  *(int32_t *)tptr(&x, oi) = 8;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_sync(d, NULL));
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* A strided (non-contiguous) q and out: strides honoured per dimension. */
static void test_attention_strided_q(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t T = 2, Hq = 2, Hkv = 1, D = 8, S = 4, pad = 8;
  uint64_t oq = tmem_alloc(&x, T * Hq * (D + pad) * 4, 64), ok = tmem_alloc(&x, S * D * 4, 64),
           ov = tmem_alloc(&x, S * D * 4, 64), oo = tmem_alloc(&x, T * Hq * D * 4, 64);
  float qv[2 * 2 * 8], kv[4 * 8], vv[4 * 8], want[2 * 2 * 8];
  fill(qv, T * Hq * D);
  fill(kv, S * D);
  fill(vv, S * D);
  for (int64_t r = 0; r < T * Hq; r++) memcpy(tf32(&x, oq) + r * (D + pad), qv + r * D, D * 4);
  memcpy(tf32(&x, ok), kv, sizeof kv);
  memcpy(tf32(&x, ov), vv, sizeof vv);
  kiln_op op = {.kind = KILN_OP_ATTENTION, .alpha = 0.5f, .pos = 1};
  op.a = T3(&x, oq, KILN_DTYPE_F32, T, Hq, D);
  op.a.stride[0] = Hq * (D + pad), op.a.stride[1] = D + pad, op.a.stride[2] = 1;
  op.b = T3(&x, ok, KILN_DTYPE_F32, S, Hkv, D);
  op.c = T3(&x, ov, KILN_DTYPE_F32, S, Hkv, D);
  op.d = T3(&x, oo, KILN_DTYPE_F32, T, Hq, D);
  RUN(t, d, op);
  attention_ref(qv, kv, vv, want, T, Hq, Hkv, D, 1, 0.5f);
  int bad = 0;
  for (int64_t j = 0; j < T * Hq * D; j++)
    if (!close_to(tf32(&x, oo)[j], want[j], 1e-4)) bad++;
  KILN_EXPECT(t, !bad);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

/* ---- Asynchrony ------------------------------------------------------------------ */

static void test_async_chain_in_order(kiln_test *t) {
  /* 200 dependent ops queued before one sync: y = y * 1.01 + x. */
  kiln_device *d = open_cpu(t, 2, false);
  tmem x = tmem_new(t, d, 2);
  int64_t n = 4096;
  uint64_t ox = tmem_alloc(&x, n * 4, 64), oy = tmem_alloc(&x, n * 4, 64);
  fill(tf32(&x, ox), n);
  memset(tf32(&x, oy), 0, n * 4);
  for (int i = 0; i < 100; i++) {
    kiln_op s = {.kind = KILN_OP_SCALE, .alpha = 1.01f};
    s.a = T1(&x, oy, KILN_DTYPE_F32, n);
    s.b = T1(&x, oy, KILN_DTYPE_F32, n);
    kiln_op a = {.kind = KILN_OP_ADD};
    a.a = T1(&x, oy, KILN_DTYPE_F32, n);
    a.b = T1(&x, ox, KILN_DTYPE_F32, n);
    a.c = T1(&x, oy, KILN_DTYPE_F32, n);
    KILN_EXPECT_OK(t, kiln_device_submit(d, &s, NULL));
    KILN_EXPECT_OK(t, kiln_device_submit(d, &a, NULL));
  }
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  int bad = 0;
  for (int64_t j = 0; j < n; j++) {
    float y = 0;
    for (int i = 0; i < 100; i++) y = y * 1.01f + tf32(&x, ox)[j];
    if (tf32(&x, oy)[j] != y) bad++;
  }
  KILN_EXPECT(t, !bad);
  kiln_device_stats st;
  kiln_device_get_stats(d, &st);
  KILN_EXPECT(t, st.ops == 200 && st.syncs == 1);
  kiln_memory_release(x.m);
  kiln_device_release(d);
}

static void test_nop_and_open_specs(kiln_test *t) {
  kiln_device *d = NULL;
  kiln_device_options o;
  kiln_device_options_init(&o);
  KILN_EXPECT_OK(t, kiln_device_open(&o, &d)); /* auto */
  if (d) {
    const char *desc = kiln_device_describe(d);
    if (kiln_device_kind_of(d) == KILN_DEVICE_CPU)
      KILN_EXPECTF(t, strstr(desc, "auto:") != NULL, "describe: %s", desc);
    kiln_op nop = {.kind = KILN_OP_NOP};
    RUN(t, d, nop);
    kiln_device_release(d);
  }
  const char *bad[] = {"gpu", "cuda:", "cuda:x", "cuda:12345", "cpu0", "cuda0"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    o.spec = bad[i];
    KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_device_open(&o, &d));
  }
  o.spec = "cpu";
  o.cpu_threads = 1;
  KILN_EXPECT_OK(t, kiln_device_open(&o, &d));
  KILN_EXPECT(t, d && strcmp(kiln_device_describe(d), "cpu (1 thread)") == 0);
  kiln_device_release(d);
  KILN_EXPECT(t, strcmp(kiln_op_kind_name(KILN_OP_ATTENTION), "ATTENTION") == 0);
  KILN_EXPECT(t, strcmp(kiln_dtype_name(KILN_DTYPE_Q8_0), "q8_0") == 0);
  uint64_t rb = 0;
  KILN_EXPECT(t, kiln_dtype_row_bytes(KILN_DTYPE_Q8_0, 64, &rb) && rb == 68);
  KILN_EXPECT(t, !kiln_dtype_row_bytes(KILN_DTYPE_Q8_0, 48, &rb));
  KILN_EXPECT(t, !kiln_dtype_row_bytes(KILN_DTYPE_F32, INT64_MAX, &rb));
}

KILN_TEST_MAIN(test_f16_bf16_conversions, test_gemm_all_dtypes_and_transposes,
               test_gemm_large_parallel, test_gemv_all_weight_dtypes,
               test_add_mul_same_shape_broadcast_and_padded_rows,
               test_unary_ops_and_swiglu, test_rmsnorm,
               test_softmax_plain_and_causal,
               test_rope_with_index_pos_and_in_place,
               test_argmax_first_on_ties, test_copy_conversions_and_strides,
               test_copy_index_append_and_out_of_capacity,
               test_gather_tables_and_bad_id,
               test_attention_gqa_causal_index_and_pos,
               test_attention_strided_q, test_async_chain_in_order,
               test_nop_and_open_specs)
