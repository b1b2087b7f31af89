/* The cuda backend against the cpu reference.
 *
 * Every op runs on "cuda" and on "cpu" over the same random inputs, in
 * MAPPED and in RESIDENT placement, and the results must agree:
 *   |cuda - cpu| <= tol * (|cpu| + max |cpu| over the output)
 * with tol 1e-4 for f32 (and q8_0, dequantized exactly on both sides) and
 * 1e-2 where inputs are f16/bf16; i32 results (argmax, i32 copies) exactly.
 * Also: a program (CUDA graph) replayed with a changing position index,
 * device-side failures (bad row index, bad token id, bad position)
 * reported at sync with the device usable afterwards, and the decode GEMV's
 * bandwidth (printed).
 *
 * Without a usable GPU (CI) every GPU test prints "SKIP: <reason>" and
 * passes; test_no_gpu_fallback checks what kiln does then: "auto" opens the
 * cpu with the reason, "cuda" fails with UNAVAILABLE and one line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "device/device_internal.h"
#include "kiln/device.h"
#include "kiln/memory.h"
#include "kiln_test.h"

/* ---- fixture ------------------------------------------------------------ */

typedef struct fx {
  kiln_device *cpu, *gpu;
  kiln_memory *in;                /* inputs, attached to both */
  kiln_memory *out_cpu, *out_gpu; /* outputs, one per device, same layout */
  uint64_t in_top, out_top;
  uint32_t rng;
  kiln_placement placement;
} fx;

enum { FX_IN_PAGES = 512, FX_OUT_PAGES = 128 }; /* 32 MiB, 8 MiB */

static char g_skip[300];

/* Opens cuda, or records why not (then the GPU tests skip).
 * KILN_TEST_CUDA_SPEC=cpu stands a mirrored cpu device in for the GPU, to
 * check this test itself (op construction, coherence) where no GPU is. */
static kiln_device *open_gpu(void) {
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cuda";
  const char *spec = getenv("KILN_TEST_CUDA_SPEC");
  if (spec && *spec) o.spec = spec;
  o.cpu_mirror = true;
  kiln_device *d = NULL;
  kiln_status s = kiln_device_open(&o, &d);
  if (s) {
    snprintf(g_skip, sizeof g_skip, "no usable GPU: %s",
             kiln_status_message(s));
    kiln_status_free(s);
    return NULL;
  }
  return d;
}

/* The cuda device for a speed test, or NULL after a visible skip (no GPU,
 * or KILN_TEST_CUDA_SPEC standing a cpu device in). */
static kiln_device *cuda_or_skip(kiln_test *t) {
  kiln_device *gpu = open_gpu();
  if (!gpu) {
    KILN_TEST_SKIP(t, "%s", g_skip);
    return NULL;
  }
  if (kiln_device_kind_of(gpu) != KILN_DEVICE_CUDA) {
    KILN_TEST_SKIP(t, "not a GPU: %s", kiln_device_describe(gpu));
    kiln_device_release(gpu);
    return NULL;
  }
  return gpu;
}

static kiln_memory *new_memory(kiln_test *t, uint64_t pages, const char *name) {
  kiln_memory_options mo = {.initial_pages = pages, .name = name};
  kiln_memory *m = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &m));
  return m;
}

static void fx_close(fx *f);

/* False (everything it opened closed again) when there is no GPU (a skip)
 * or the fixture could not be set up (a failure). */
static bool fx_open(kiln_test *t, fx *f, kiln_placement placement) {
  memset(f, 0, sizeof *f);
  f->gpu = open_gpu();
  if (!f->gpu) {
    KILN_TEST_SKIP(t, "%s", g_skip);
    return false;
  }
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cpu";
  KILN_EXPECT_OK(t, kiln_device_open(&o, &f->cpu));
  f->in = new_memory(t, FX_IN_PAGES, "in");
  f->out_cpu = new_memory(t, FX_OUT_PAGES, "out_cpu");
  f->out_gpu = new_memory(t, FX_OUT_PAGES, "out_gpu");
  if (!f->cpu || !f->in || !f->out_cpu || !f->out_gpu) {
    fx_close(f);
    return false;
  }
  KILN_EXPECT_OK(t, kiln_device_attach(f->cpu, f->in));
  KILN_EXPECT_OK(t, kiln_device_attach(f->cpu, f->out_cpu));
  KILN_EXPECT_OK(t, kiln_device_attach(f->gpu, f->in));
  KILN_EXPECT_OK(t, kiln_device_attach(f->gpu, f->out_gpu));
  f->placement = placement;
  if (placement == KILN_PLACEMENT_RESIDENT) {
    KILN_EXPECT_OK(t, kiln_device_place(f->gpu, f->in, 0,
                                        kiln_memory_size(f->in), placement));
    KILN_EXPECT_OK(t, kiln_device_place(f->gpu, f->out_gpu, 0,
                                        kiln_memory_size(f->out_gpu),
                                        placement));
  }
  f->rng = 0x2545F491u;
  if (t->failures == 0) return true;
  fx_close(f);
  return false;
}

static void fx_close(fx *f) {
  kiln_device_release(f->gpu);
  kiln_device_release(f->cpu);
  kiln_memory_release(f->in);
  kiln_memory_release(f->out_cpu);
  kiln_memory_release(f->out_gpu);
}

static uint64_t bump(uint64_t *top, uint64_t bytes) {
  uint64_t off = (*top + 255) & ~(uint64_t)255;
  *top = off + bytes;
  return off;
}
/* A test's tensors outgrew the fixture's memory: a bug in the test. */
static void layout_bug(const char *which, uint64_t top, kiln_memory *m) {
  fprintf(stderr, "test layout bug: %s tensors need %llu bytes of %llu\n", which,
          (unsigned long long)top, (unsigned long long)kiln_memory_size(m));
  abort();
}
static uint64_t in_alloc(fx *f, uint64_t bytes) {
  uint64_t off = bump(&f->in_top, bytes);
  if (f->in_top > kiln_memory_size(f->in)) layout_bug("in", f->in_top, f->in);
  return off;
}
static uint64_t out_alloc(fx *f, uint64_t bytes) {
  uint64_t off = bump(&f->out_top, bytes);
  if (f->out_top > kiln_memory_size(f->out_cpu)) layout_bug("out", f->out_top, f->out_cpu);
  return off;
}

static float frand(fx *f) { /* uniform in [-1, 1) */
  f->rng ^= f->rng << 13;
  f->rng ^= f->rng >> 17;
  f->rng ^= f->rng << 5;
  return (float)(f->rng >> 8) / (float)(1u << 23) - 1.0f;
}

static uint8_t *at(kiln_memory *m, uint64_t off) {
  return kiln_memory_base(m) + off;
}

/* n random elements of dtype t (Q8_0: n/32 blocks) at m + off. */
static void fill(fx *f, kiln_memory *m, uint64_t off, kiln_dtype t,
                 int64_t n) {
  uint8_t *p = at(m, off);
  for (int64_t i = 0; i < n; i++) {
    float v = frand(f);
    switch (t) {
      case KILN_DTYPE_F32: memcpy(p + 4 * i, &v, 4); break;
      case KILN_DTYPE_F16: {
        uint16_t h = kiln_f32_to_f16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
      }
      case KILN_DTYPE_BF16: {
        uint16_t h = kiln_f32_to_bf16(v);
        memcpy(p + 2 * i, &h, 2);
        break;
      }
      case KILN_DTYPE_I32: {
        int32_t x = (int32_t)(v * 1000);
        memcpy(p + 4 * i, &x, 4);
        break;
      }
      case KILN_DTYPE_Q8_0:
        if (i % 32 == 0) {
          uint16_t h = kiln_f32_to_f16(0.01f + 0.02f * fabsf(v));
          memcpy(p + (i / 32) * 34, &h, 2);
        }
        p[(i / 32) * 34 + 2 + i % 32] = (uint8_t)(int8_t)(v * 127);
        break;
      default: break;
    }
  }
}

static uint64_t bytes_of(kiln_dtype t, int64_t n) {
  return t == KILN_DTYPE_Q8_0 ? (uint64_t)n / 32 * 34
                              : (uint64_t)n * kiln_dtype_size(t);
}

/* A random input tensor, contiguous. */
static kiln_tensor input(fx *f, kiln_dtype t, uint32_t rank, int64_t s0,
                         int64_t s1, int64_t s2, int64_t s3) {
  const int64_t shape[4] = {s0, s1, s2, s3};
  int64_t n = 1;
  for (uint32_t k = 0; k < rank; k++) n *= shape[k];
  uint64_t off = in_alloc(f, bytes_of(t, n));
  fill(f, f->in, off, t, n);
  return kiln_tensor_make(f->in, off, t, rank, shape);
}

/* An output tensor in out_cpu (the gpu twin is made by gpu_twin), filled
 * with the same random values in both memories when `init`. */
static kiln_tensor output(fx *f, kiln_dtype t, uint32_t rank, int64_t s0,
                          int64_t s1, int64_t s2, int64_t s3, bool init) {
  const int64_t shape[4] = {s0, s1, s2, s3};
  int64_t n = 1;
  for (uint32_t k = 0; k < rank; k++) n *= shape[k];
  uint64_t off = out_alloc(f, bytes_of(t, n));
  if (init) {
    fill(f, f->out_cpu, off, t, n);
    memcpy(at(f->out_gpu, off), at(f->out_cpu, off), bytes_of(t, n));
  }
  return kiln_tensor_make(f->out_cpu, off, t, rank, shape);
}

static kiln_tensor index_tensor(fx *f, int32_t value, uint64_t *off_out) {
  const int64_t one = 1;
  uint64_t off = in_alloc(f, 4);
  memcpy(at(f->in, off), &value, 4);
  if (off_out) *off_out = off;
  return kiln_tensor_make(f->in, off, KILN_DTYPE_I32, 1, &one);
}

static kiln_op gpu_twin(const fx *f, const kiln_op *op) {
  kiln_op g = *op;
  kiln_tensor *ts[] = {&g.a, &g.b, &g.c, &g.d, &g.index};
  for (size_t i = 0; i < 5; i++)
    if (ts[i]->memory == f->out_cpu) ts[i]->memory = f->out_gpu;
  return g;
}

/* ---- comparison ----------------------------------------------------------- */

static float elem(const uint8_t *p, kiln_dtype t, int64_t i) {
  uint16_t h;
  switch (t) {
    case KILN_DTYPE_F32: {
      float v;
      memcpy(&v, p + 4 * i, 4);
      return v;
    }
    case KILN_DTYPE_F16: memcpy(&h, p + 2 * i, 2); return kiln_f16_to_f32(h);
    case KILN_DTYPE_BF16: memcpy(&h, p + 2 * i, 2); return kiln_bf16_to_f32(h);
    default: return 0;
  }
}

/* Elements [0, span) of the output region starting at `out` (both
 * memories): span covers strided views too. */
static void expect_close(kiln_test *t, const fx *f, const char *what,
                         const kiln_tensor *out, double tol) {
  int64_t span = 1;
  for (uint32_t k = 0; k < out->rank; k++)
    span += (out->shape[k] - 1) * out->stride[k];
  const uint8_t *c = at(f->out_cpu, out->offset), *g = at(f->out_gpu, out->offset);
  if (out->dtype == KILN_DTYPE_I32) {
    for (int64_t i = 0; i < span; i++) {
      int32_t x, y;
      memcpy(&x, c + 4 * i, 4);
      memcpy(&y, g + 4 * i, 4);
      if (x != y) {
        KILN_EXPECTF(t, false, "%s [%s]: element %lld: cuda %d, cpu %d", what,
                     kiln_placement_name(f->placement), (long long)i, y, x);
        return;
      }
    }
    return;
  }
  double maxabs = 0, worst = 0;
  int64_t worst_i = -1;
  for (int64_t i = 0; i < span; i++)
    maxabs = fmax(maxabs, fabs(elem(c, out->dtype, i)));
  for (int64_t i = 0; i < span; i++) {
    double x = elem(c, out->dtype, i), y = elem(g, out->dtype, i);
    double d = fabs(x - y), allowed = tol * (fabs(x) + maxabs);
    if (isnan(x) != isnan(y) || d > allowed) {
      if (worst_i < 0 || d / (allowed + 1e-30) > worst) {
        worst = d / (allowed + 1e-30);
        worst_i = i;
      }
    }
  }
  if (worst_i >= 0)
    KILN_EXPECTF(t, false,
                 "%s [%s]: element %lld: cuda %.8g, cpu %.8g (max|cpu| %.4g, "
                 "tol %.0e)",
                 what, kiln_placement_name(f->placement), (long long)worst_i,
                 (double)elem(g, out->dtype, worst_i),
                 (double)elem(c, out->dtype, worst_i), maxabs, tol);
}

/* Runs op on cpu (as given) and cuda (its twin), then compares `out`. */
static void run_both(kiln_test *t, fx *f, const char *what, const kiln_op *op,
                     const kiln_tensor *out, double tol) {
  kiln_op g = gpu_twin(f, op);
  kiln_status s = kiln_device_submit(f->cpu, op, NULL);
  if (!s) s = kiln_device_sync(f->cpu, NULL);
  if (s) {
    KILN_EXPECTF(t, false, "%s: cpu: %s", what, kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  s = kiln_device_submit(f->gpu, &g, NULL);
  if (!s) s = kiln_device_sync(f->gpu, NULL);
  if (s) {
    KILN_EXPECTF(t, false, "%s: cuda: %s", what, kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  expect_close(t, f, what, out, tol);
}

static double tol_for(kiln_dtype t) {
  return t == KILN_DTYPE_F16 || t == KILN_DTYPE_BF16 ? 1e-2 : 1e-4;
}

static kiln_op op_of(kiln_op_kind k) {
  kiln_op op;
  memset(&op, 0, sizeof op);
  op.kind = k;
  op.alpha = 1.0f;
  return op;
}

/* ---- every op --------------------------------------------------------------- */

static void ops_gemm(kiln_test *t, fx *f) {
  static const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16,
                                     KILN_DTYPE_BF16};
  for (size_t i = 0; i < 3; i++)
    for (uint32_t flags = 0; flags < 4; flags++) {
      const int64_t M = 70, N = 90, K = 130;
      bool ta = flags & KILN_OP_TRANS_A, tb = flags & KILN_OP_TRANS_B;
      kiln_op op = op_of(KILN_OP_GEMM);
      op.flags = flags;
      op.a = ta ? input(f, types[i], 2, K, M, 0, 0)
                : input(f, types[i], 2, M, K, 0, 0);
      op.b = tb ? input(f, types[i], 2, N, K, 0, 0)
                : input(f, types[i], 2, K, N, 0, 0);
      op.c = output(f, KILN_DTYPE_F32, 2, M, N, 0, 0, true);
      op.alpha = 0.75f;
      op.beta = flags == 3 ? 0.5f : 0.0f;
      char what[64];
      snprintf(what, sizeof what, "gemm %s flags %u", kiln_dtype_name(types[i]),
               flags);
      run_both(t, f, what, &op, &op.c, tol_for(types[i]));
    }
  /* Large enough for cuBLAS' tensor-core paths. */
  kiln_op op = op_of(KILN_OP_GEMM);
  op.a = input(f, KILN_DTYPE_BF16, 2, 256, 512, 0, 0);
  op.b = input(f, KILN_DTYPE_BF16, 2, 512, 384, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, 256, 384, 0, 0, false);
  run_both(t, f, "gemm bf16 256x384x512", &op, &op.c, 1e-2);
  op.a = input(f, KILN_DTYPE_F32, 2, 256, 512, 0, 0);
  op.b = input(f, KILN_DTYPE_F32, 2, 512, 384, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, 256, 384, 0, 0, false);
  run_both(t, f, "gemm f32 256x384x512", &op, &op.c, 1e-4);
}

static void ops_gemv(kiln_test *t, fx *f) {
  static const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16,
                                     KILN_DTYPE_BF16, KILN_DTYPE_Q8_0};
  static const int64_t rows[] = {1, 3, 8, 20};
  for (size_t i = 0; i < 4; i++)
    for (size_t r = 0; r < 4; r++) {
      const int64_t N = 300, K = 512, M = rows[r];
      kiln_op op = op_of(KILN_OP_GEMV);
      op.a = input(f, types[i], 2, N, K, 0, 0);
      op.b = input(f, KILN_DTYPE_F32, 2, M, K, 0, 0);
      op.c = output(f, KILN_DTYPE_F32, 2, M, N, 0, 0, true);
      op.alpha = 1.5f;
      op.beta = r == 1 ? -0.5f : 0.0f;
      char what[64];
      snprintf(what, sizeof what, "gemv %s M=%lld", kiln_dtype_name(types[i]),
               (long long)M);
      run_both(t, f, what, &op, &op.c, tol_for(types[i]));
    }
  /* Q8_0 rows of 45 blocks (a chunk of 32 and one of 13), 1530 bytes
   * apart: rows start anywhere in a 16-byte block. */
  for (int64_t M = 1; M <= 5; M += 4) {
    kiln_op op = op_of(KILN_OP_GEMV);
    op.a = input(f, KILN_DTYPE_Q8_0, 2, 37, 1440, 0, 0);
    op.b = input(f, KILN_DTYPE_F32, 2, M, 1440, 0, 0);
    op.c = output(f, KILN_DTYPE_F32, 2, M, 37, 0, 0, false);
    char what[64];
    snprintf(what, sizeof what, "gemv q8_0 45 blocks a row, M=%lld",
             (long long)M);
    run_both(t, f, what, &op, &op.c, tol_for(KILN_DTYPE_Q8_0));
  }
  /* K not a multiple of the vector width: the scalar kernel. */
  kiln_op op = op_of(KILN_OP_GEMV);
  op.a = input(f, KILN_DTYPE_BF16, 2, 77, 250, 0, 0);
  op.b = input(f, KILN_DTYPE_F32, 1, 250, 0, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 1, 77, 0, 0, 0, false);
  run_both(t, f, "gemv bf16 K=250 rank-1 x", &op, &op.c, 1e-2);
  /* Weights that do not start on 16 bytes (safetensors data begins where
   * its header ends), rows of varying alignment, M = 1 and M = 3. */
  static const kiln_dtype wt[] = {KILN_DTYPE_F32, KILN_DTYPE_BF16};
  for (size_t i = 0; i < 2; i++)
    for (int64_t M = 1; M <= 3; M += 2) {
      kiln_op g = op_of(KILN_OP_GEMV);
      g.a = input(f, wt[i], 2, 130, 258, 0, 0);
      g.a.offset += 3 * kiln_dtype_size(wt[i]);
      g.a.shape[1] = 250;
      g.a.stride[0] = 258, g.a.stride[1] = 1;
      g.b = input(f, KILN_DTYPE_F32, 2, M, 250, 0, 0);
      g.c = output(f, KILN_DTYPE_F32, 2, M, 130, 0, 0, false);
      char what[64];
      snprintf(what, sizeof what, "gemv %s misaligned rows M=%lld",
               kiln_dtype_name(wt[i]), (long long)M);
      run_both(t, f, what, &g, &g.c, tol_for(wt[i]));
    }
  /* Few long rows at M = 1: several warps share each row (wpr 8), also
   * with rows that do not start on 16 bytes and a K with a tail. */
  for (size_t i = 0; i < 2; i++)
    for (int mis = 0; mis <= 1; mis++) {
      kiln_op g = op_of(KILN_OP_GEMV);
      g.a = input(f, wt[i], 2, 40, 4104, 0, 0);
      if (mis) g.a.offset += 3 * kiln_dtype_size(wt[i]);
      g.a.shape[1] = 4100;
      g.a.stride[0] = 4104, g.a.stride[1] = 1;
      g.b = input(f, KILN_DTYPE_F32, 2, 1, 4100, 0, 0);
      g.c = output(f, KILN_DTYPE_F32, 2, 1, 40, 0, 0, false);
      char what[64];
      snprintf(what, sizeof what, "gemv %s 40x4100 M=1%s",
               kiln_dtype_name(wt[i]), mis ? " misaligned" : "");
      run_both(t, f, what, &g, &g.c, tol_for(wt[i]));
    }
}

static void ops_elementwise(kiln_test *t, fx *f) {
  const int64_t R = 6, C = 1000;
  kiln_op_kind bin[] = {KILN_OP_ADD, KILN_OP_MUL};
  for (int i = 0; i < 2; i++)
    for (int bc = 0; bc < 2; bc++) {
      kiln_op op = op_of(bin[i]);
      op.a = input(f, KILN_DTYPE_F32, 3, 2, R / 2, C, 0);
      op.b = bc ? input(f, KILN_DTYPE_F32, 1, C, 0, 0, 0)
                : input(f, KILN_DTYPE_F32, 3, 2, R / 2, C, 0);
      op.c = output(f, KILN_DTYPE_F32, 3, 2, R / 2, C, 0, false);
      char what[64];
      snprintf(what, sizeof what, "%s%s", kiln_op_kind_name(bin[i]),
               bc ? " (row broadcast)" : "");
      run_both(t, f, what, &op, &op.c, 1e-4);
    }
  kiln_op_kind un[] = {KILN_OP_SCALE, KILN_OP_SILU, KILN_OP_GELU};
  for (int i = 0; i < 3; i++) {
    kiln_op op = op_of(un[i]);
    op.alpha = -2.5f;
    op.a = input(f, KILN_DTYPE_F32, 2, R, C, 0, 0);
    op.b = output(f, KILN_DTYPE_F32, 2, R, C, 0, 0, false);
    run_both(t, f, kiln_op_kind_name(un[i]), &op, &op.b, 1e-4);
  }
  kiln_op op = op_of(KILN_OP_SWIGLU);
  op.a = input(f, KILN_DTYPE_F32, 2, R, C, 0, 0);
  op.b = input(f, KILN_DTYPE_F32, 2, R, C, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, R, C, 0, 0, false);
  run_both(t, f, "swiglu", &op, &op.c, 1e-4);
  /* Rows that cuda cannot take four elements at a time: a length not a
   * multiple of 4, and rows starting one element past an aligned address. */
  op = op_of(KILN_OP_SWIGLU);
  op.a = input(f, KILN_DTYPE_F32, 2, R, C + 2, 0, 0);
  op.b = input(f, KILN_DTYPE_F32, 2, R, C + 2, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, R, C + 2, 0, 0, false);
  run_both(t, f, "swiglu, rows of 1002", &op, &op.c, 1e-4);
  op = op_of(KILN_OP_ADD);
  op.a = input(f, KILN_DTYPE_F32, 1, R * C + 1, 0, 0, 0);
  op.a.offset += 4;
  op.a.rank = 2, op.a.shape[0] = R, op.a.shape[1] = C;
  op.a.stride[0] = C, op.a.stride[1] = 1;
  op.b = input(f, KILN_DTYPE_F32, 2, R, C, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, R, C, 0, 0, false);
  run_both(t, f, "add, a misaligned by one element", &op, &op.c, 1e-4);
}

static void ops_rows(kiln_test *t, fx *f) {
  kiln_op op = op_of(KILN_OP_RMSNORM);
  op.a = input(f, KILN_DTYPE_F32, 2, 5, 4096, 0, 0);
  op.b = input(f, KILN_DTYPE_F32, 1, 4096, 0, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, 5, 4096, 0, 0, false);
  op.eps = 1e-5f;
  run_both(t, f, "rmsnorm", &op, &op.c, 1e-4);
  op.a = input(f, KILN_DTYPE_F32, 2, 5, 4094, 0, 0);   /* not 4 at a time */
  op.b = input(f, KILN_DTYPE_F32, 1, 4094, 0, 0, 0);
  op.c = output(f, KILN_DTYPE_F32, 2, 5, 4094, 0, 0, false);
  run_both(t, f, "rmsnorm, rows of 4094", &op, &op.c, 1e-4);

  op = op_of(KILN_OP_SOFTMAX);
  op.alpha = 3.0f;
  op.a = input(f, KILN_DTYPE_F32, 2, 7, 3000, 0, 0);
  op.b = output(f, KILN_DTYPE_F32, 2, 7, 3000, 0, 0, false);
  run_both(t, f, "softmax", &op, &op.b, 1e-4);

  op = op_of(KILN_OP_SOFTMAX);
  op.alpha = 0.125f;
  op.a = input(f, KILN_DTYPE_F32, 3, 3, 2, 40, 0);
  op.b = output(f, KILN_DTYPE_F32, 3, 3, 2, 40, 0, true);
  op.index = index_tensor(f, 5, NULL);
  run_both(t, f, "softmax causal (index)", &op, &op.b, 1e-4);

  op = op_of(KILN_OP_ARGMAX);
  op.a = input(f, KILN_DTYPE_F32, 2, 9, 32000, 0, 0);
  op.b = output(f, KILN_DTYPE_I32, 1, 9, 0, 0, 0, false);
  run_both(t, f, "argmax", &op, &op.b, 0);

  /* One long row (the many-block kernel), the maximum twice: the first
   * index wins. */
  op = op_of(KILN_OP_ARGMAX);
  op.a = input(f, KILN_DTYPE_F32, 2, 1, 128256, 0, 0);
  ((float *)at(f->in, op.a.offset))[70001] = 5.0f;
  ((float *)at(f->in, op.a.offset))[90001] = 5.0f;
  ((float *)at(f->in, op.a.offset))[128255] = 4.0f;
  op.b = output(f, KILN_DTYPE_I32, 1, 1, 0, 0, 0, false);
  run_both(t, f, "argmax 1x128256 (tie)", &op, &op.b, 0);

  /* Head sizes: several heads a block on cuda (128, 64; 40 leaves
   * threads over), one head along a block (256). */
  static const int64_t rope_d[] = {128, 64, 40, 256};
  for (int with_index = 0; with_index < 5; with_index++) {
    const int64_t T = 4, H = 3, D = rope_d[with_index % 4];
    op = op_of(KILN_OP_ROPE);
    op.a = input(f, KILN_DTYPE_F32, 3, T, H, D, 0);
    op.b = output(f, KILN_DTYPE_F32, 3, T, H, D, 0, false);
    op.c = input(f, KILN_DTYPE_F32, 1, D / 2, 0, 0, 0);
    float *inv = (float *)at(f->in, op.c.offset);
    for (int64_t i = 0; i < D / 2; i++)
      inv[i] = powf(10000.0f, -2.0f * (float)i / (float)D);
    op.pos = 11;
    if (with_index % 2) op.index = index_tensor(f, 300, NULL);
    char what[64];
    snprintf(what, sizeof what, "rope D=%lld (%s)", (long long)D,
             with_index % 2 ? "index" : "pos");
    run_both(t, f, what, &op, &op.b, 1e-4);
  }
}

static void ops_copy_gather(kiln_test *t, fx *f) {
  /* Transposing f32 -> f16 copy: b is a strided view of a [16, 8] buffer. */
  kiln_op op = op_of(KILN_OP_COPY);
  op.a = input(f, KILN_DTYPE_F32, 2, 8, 16, 0, 0);
  op.b = output(f, KILN_DTYPE_F16, 2, 16, 8, 0, 0, false);
  op.b.shape[0] = 8;
  op.b.shape[1] = 16;
  op.b.stride[0] = 1;
  op.b.stride[1] = 8;
  run_both(t, f, "copy f32->f16 transposed", &op, &op.b, 1e-2);

  /* Contiguous conversions (four elements a thread on cuda) and one whose
   * rows are not a multiple of 4. */
  static const struct {
    kiln_dtype from, to;
    int64_t cols;
  } conv[] = {{KILN_DTYPE_F32, KILN_DTYPE_BF16, 1000},
              {KILN_DTYPE_BF16, KILN_DTYPE_F32, 1000},
              {KILN_DTYPE_F16, KILN_DTYPE_F16, 1000},
              {KILN_DTYPE_F32, KILN_DTYPE_F16, 1002}};
  for (size_t i = 0; i < sizeof conv / sizeof *conv; i++) {
    op = op_of(KILN_OP_COPY);
    op.a = input(f, conv[i].from, 2, 7, conv[i].cols, 0, 0);
    op.b = output(f, conv[i].to, 2, 7, conv[i].cols, 0, 0, false);
    char what[64];
    snprintf(what, sizeof what, "copy %s->%s, rows of %lld",
             kiln_dtype_name(conv[i].from), kiln_dtype_name(conv[i].to),
             (long long)conv[i].cols);
    run_both(t, f, what, &op, &op.b, 1e-2);
  }

  op = op_of(KILN_OP_COPY);
  op.a = input(f, KILN_DTYPE_Q8_0, 2, 6, 64, 0, 0);
  op.b = output(f, KILN_DTYPE_F32, 2, 6, 64, 0, 0, false);
  run_both(t, f, "copy q8_0->f32", &op, &op.b, 1e-4);

  op = op_of(KILN_OP_COPY);
  op.a = input(f, KILN_DTYPE_I32, 3, 2, 3, 5, 0);
  op.b = output(f, KILN_DTYPE_I32, 3, 2, 3, 5, 0, false);
  run_both(t, f, "copy i32", &op, &op.b, 0);

  /* KV-cache append: 2 rows of [Hkv=4, D=64] into a bf16 cache of 10. */
  op = op_of(KILN_OP_COPY);
  op.a = input(f, KILN_DTYPE_F32, 3, 2, 4, 64, 0);
  op.b = output(f, KILN_DTYPE_BF16, 3, 10, 4, 64, 0, true);
  op.index = index_tensor(f, 7, NULL);
  run_both(t, f, "copy append (index)", &op, &op.b, 1e-2);

  static const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_BF16,
                                     KILN_DTYPE_F16, KILN_DTYPE_Q8_0};
  for (size_t i = 0; i < 4; i++) {
    op = op_of(KILN_OP_GATHER);
    op.a = input(f, types[i], 2, 50, 256, 0, 0);
    op.b = input(f, KILN_DTYPE_I32, 1, 5, 0, 0, 0);
    int32_t *ids = (int32_t *)at(f->in, op.b.offset);
    for (int k = 0; k < 5; k++) ids[k] = (k * 17 + 3) % 50;
    op.c = output(f, KILN_DTYPE_F32, 2, 5, 256, 0, 0, false);
    char what[64];
    snprintf(what, sizeof what, "gather %s", kiln_dtype_name(types[i]));
    run_both(t, f, what, &op, &op.c, 1e-4);
  }

  op = op_of(KILN_OP_NOP);
  KILN_EXPECT_OK(t, kiln_device_submit(f->gpu, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(f->gpu, NULL));
}

static void ops_attention(kiln_test *t, fx *f) {
  static const kiln_dtype types[] = {KILN_DTYPE_F32, KILN_DTYPE_F16,
                                     KILN_DTYPE_BF16};
  struct {
    int64_t T, Hq, Hkv, D, S, pos;
    bool index;
  } cases[] = {
      {1, 8, 2, 64, 300, 200, true},   /* decode, long cache: split */
      {1, 4, 4, 128, 40, 39, false},   /* decode, last row */
      {5, 8, 2, 128, 64, 10, true},    /* prefill */
      {3, 2, 1, 256, 16, 0, false},    /* big heads, from position 0 */
      {2, 4, 2, 40, 100, 50, true},    /* head size not a warp multiple */
      /* Prefill of at least KC_AT_Q (16) queries: key tiles shared by
       * query tiles on cuda. Three query tiles, the last partial, keys
       * across tile boundaries; from position 0 with the cache full; a
       * head size that is not a warp multiple; one key and value head. */
      {40, 8, 2, 64, 100, 30, true},
      {17, 4, 4, 128, 17, 0, false},
      {33, 2, 1, 40, 80, 7, true},
      {16, 4, 1, 32, 64, 48, true},
      /* At least KC_AF_Q (64) queries: register-blocked tiles of 64 on
       * cuda. Two query tiles, the second partial, after 150 cached rows;
       * one whole tile from position 0 with the cache full; head sizes 40
       * and 128 (rounded up to 64 and 128); key tiles cut by the end. */
      {100, 8, 2, 64, 300, 150, true},
      {64, 4, 4, 128, 64, 0, false},
      {70, 2, 1, 40, 90, 20, true},
      {130, 4, 2, 128, 200, 3, true},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
    for (size_t i = 0; i < 3; i++) {
      kiln_op op = op_of(KILN_OP_ATTENTION);
      op.a = input(f, KILN_DTYPE_F32, 3, cases[c].T, cases[c].Hq, cases[c].D, 0);
      op.b = input(f, types[i], 3, cases[c].S, cases[c].Hkv, cases[c].D, 0);
      op.c = input(f, types[i], 3, cases[c].S, cases[c].Hkv, cases[c].D, 0);
      op.d = output(f, KILN_DTYPE_F32, 3, cases[c].T, cases[c].Hq, cases[c].D,
                    0, false);
      op.alpha = 1.0f / sqrtf((float)cases[c].D);
      if (cases[c].index)
        op.index = index_tensor(f, (int32_t)cases[c].pos, NULL);
      else
        op.pos = cases[c].pos;
      char what[96];
      snprintf(what, sizeof what, "attention %s T=%lld Hq=%lld Hkv=%lld D=%lld S=%lld",
               kiln_dtype_name(types[i]), (long long)cases[c].T,
               (long long)cases[c].Hq, (long long)cases[c].Hkv,
               (long long)cases[c].D, (long long)cases[c].S);
      run_both(t, f, what, &op, &op.d, tol_for(types[i]));
    }
}

static void every_op(kiln_test *t, kiln_placement p) {
  fx f;
  if (!fx_open(t, &f, p)) return;
  ops_gemm(t, &f);
  ops_gemv(t, &f);
  ops_elementwise(t, &f);
  ops_rows(t, &f);
  ops_copy_gather(t, &f);
  ops_attention(t, &f);
  fx_close(&f);
}

static void test_every_op_mapped(kiln_test *t) {
  every_op(t, KILN_PLACEMENT_MAPPED);
}
static void test_every_op_resident(kiln_test *t) {
  every_op(t, KILN_PLACEMENT_RESIDENT);
}

/* MAPPED: the device address is the host address (pointer identity). */
static void test_mapped_pointer_identity(kiln_test *t) {
  fx f;
  if (!fx_open(t, &f, KILN_PLACEMENT_MAPPED)) return;
  uint64_t addr = 0;
  KILN_EXPECT_OK(t, kiln_device_address(f.gpu, f.in, 4096, &addr));
  KILN_EXPECT(t, addr == (uint64_t)(uintptr_t)(kiln_memory_base(f.in) + 4096));
  KILN_EXPECT(t, kiln_device_placement(f.gpu, f.in, 0) == KILN_PLACEMENT_MAPPED);
  fx_close(&f);
}

/* ---- programs (CUDA graphs) ------------------------------------------------- */

/* One decode step as a program: append k and v rows at index, rotate q at
 * index, attend. Recorded once (a CUDA graph on cuda), replayed with the
 * index and the inputs changing between submits. */
static void graph_replay(kiln_test *t, kiln_placement p) {
  fx f;
  if (!fx_open(t, &f, p)) return;
  const int64_t S = 64, Hq = 8, Hkv = 2, D = 64;
  uint64_t idx_off;
  kiln_tensor index = index_tensor(&f, 0, &idx_off);
  kiln_tensor x = input(&f, KILN_DTYPE_F32, 3, 1, Hkv, D, 0);
  kiln_tensor q = input(&f, KILN_DTYPE_F32, 3, 1, Hq, D, 0);
  kiln_tensor inv = input(&f, KILN_DTYPE_F32, 1, D / 2, 0, 0, 0);
  float *iv = (float *)at(f.in, inv.offset);
  for (int64_t i = 0; i < D / 2; i++)
    iv[i] = powf(10000.0f, -2.0f * (float)i / (float)D);
  kiln_tensor kc = output(&f, KILN_DTYPE_BF16, 3, S, Hkv, D, 0, true);
  kiln_tensor vc = output(&f, KILN_DTYPE_BF16, 3, S, Hkv, D, 0, true);
  kiln_tensor qr = output(&f, KILN_DTYPE_F32, 3, 1, Hq, D, 0, false);
  kiln_tensor o = output(&f, KILN_DTYPE_F32, 3, 1, Hq, D, 0, false);
  kiln_op ops[4];
  ops[0] = op_of(KILN_OP_COPY);
  ops[0].a = x;
  ops[0].b = kc;
  ops[0].index = index;
  ops[1] = ops[0];
  ops[1].b = vc;
  ops[2] = op_of(KILN_OP_ROPE);
  ops[2].a = q;
  ops[2].b = qr;
  ops[2].c = inv;
  ops[2].index = index;
  ops[3] = op_of(KILN_OP_ATTENTION);
  ops[3].a = qr;
  ops[3].b = kc;
  ops[3].c = vc;
  ops[3].d = o;
  ops[3].index = index;
  ops[3].alpha = 0.125f;
  kiln_program *pc = NULL, *pg = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(f.cpu, &pc));
  KILN_EXPECT_OK(t, kiln_program_create(f.gpu, &pg));
  if (!pc || !pg) goto out;
  for (int i = 0; i < 4; i++) {
    kiln_op g = gpu_twin(&f, &ops[i]);
    KILN_EXPECT_OK(t, kiln_program_add(pc, &ops[i]));
    KILN_EXPECT_OK(t, kiln_program_add(pg, &g));
  }
  for (int step = 0; step < 6; step++) {
    int32_t pos = 3 + 9 * step;
    memcpy(at(f.in, idx_off), &pos, 4);
    fill(&f, f.in, x.offset, KILN_DTYPE_F32, Hkv * D);
    fill(&f, f.in, q.offset, KILN_DTYPE_F32, Hq * D);
    KILN_EXPECT_OK(t, kiln_device_submit_program(f.cpu, pc, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f.cpu, NULL));
    KILN_EXPECT_OK(t, kiln_device_submit_program(f.gpu, pg, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f.gpu, NULL));
    char what[64];
    snprintf(what, sizeof what, "program step %d (pos %d): out", step, pos);
    expect_close(t, &f, what, &o, 1e-2);
    snprintf(what, sizeof what, "program step %d (pos %d): k cache", step, pos);
    expect_close(t, &f, what, &kc, 1e-2);
  }
out:
  kiln_program_release(pc);
  kiln_program_release(pg);
  fx_close(&f);
}

static void test_graph_replay_mapped(kiln_test *t) {
  graph_replay(t, KILN_PLACEMENT_MAPPED);
}
static void test_graph_replay_resident(kiln_test *t) {
  graph_replay(t, KILN_PLACEMENT_RESIDENT);
}

/* ---- fused programs ------------------------------------------------------------ */

/* GEMV gate and up of x into hb and hb2, then SWIGLU(hb, hb2) into out:
 * three ops at ops[0..3). */
static int gate_up_swiglu(kiln_op *ops, kiln_tensor wg, kiln_tensor wu,
                          kiln_tensor x, kiln_tensor hb, kiln_tensor hb2,
                          kiln_tensor out) {
  ops[0] = op_of(KILN_OP_GEMV);
  ops[0].a = wg, ops[0].b = x, ops[0].c = hb;
  ops[1] = ops[0];
  ops[1].a = wu, ops[1].c = hb2;
  ops[2] = op_of(KILN_OP_SWIGLU);
  ops[2].a = hb, ops[2].b = hb2, ops[2].c = out;
  return 3;
}

/* One token's attention block as a decode step records it (Hq = 4, Hkv =
 * 2, D = 64): RMSNORM of a by g into xn, GEMVs of wq, wk, wv ([256, K],
 * [128, K], [128, K]) into q, k, v back to back in qkv, ROPE of q and k in
 * place at the position index `pos`, COPY of k and v into a `cache` row
 * there (the cuda backend runs these six ops as one launch: the one-row
 * GEMV's RoPE epilogue), ATTENTION over the cache into att. Emits 7 ops at
 * ops[0..7); *qkv, *cache, *att: the outputs to compare. */
static int qkv_rope_attention(fx *f, kiln_op *ops, int32_t pos_value,
                              kiln_tensor a, kiln_tensor g, kiln_tensor xn,
                              const kiln_tensor w[3], kiln_dtype cache_type,
                              kiln_tensor *qkv,
                              kiln_tensor *cache, kiln_tensor *att) {
  const int64_t Hq = 4, Hkv = 2, D = 64, S = 300;
  *qkv = output(f, KILN_DTYPE_F32, 3, 1, Hq + 2 * Hkv, D, 0, true);
  *cache = output(f, cache_type, 3, S, 2 * Hkv, D, 0, true);
  *att = output(f, KILN_DTYPE_F32, 3, 1, Hq, D, 0, false);
  kiln_tensor inv = input(f, KILN_DTYPE_F32, 1, D / 2, 0, 0, 0);
  for (int64_t i = 0; i < D / 2; i++)
    ((float *)at(f->in, inv.offset))[i] = powf(10000.0f, -2.0f * (float)i / (float)D);
  kiln_tensor pos = index_tensor(f, pos_value, NULL);
  int n = 0;
  kiln_op op = op_of(KILN_OP_RMSNORM);
  op.a = a, op.b = g, op.c = xn, op.eps = 1e-5f;
  ops[n++] = op;
  const int64_t heads[3] = {Hq, Hkv, Hkv};
  uint64_t off = qkv->offset;
  for (int i = 0; i < 3; i++) {
    op = op_of(KILN_OP_GEMV);
    op.a = w[i], op.b = xn;
    /* Scores of order 1: with sums of K random products as they come, the
     * softmax would follow the last bit of the cache's rounding. */
    op.alpha = 1.0f / sqrtf((float)w[i].shape[1]);
    const int64_t ys[2] = {1, heads[i] * D};
    op.c = kiln_tensor_make(qkv->memory, off, KILN_DTYPE_F32, 2, ys);
    off += (uint64_t)heads[i] * D * 4;
    ops[n++] = op;
  }
  op = op_of(KILN_OP_ROPE);
  op.a = op.b = *qkv, op.b.shape[1] = op.a.shape[1] = Hq + Hkv;
  op.c = inv, op.index = pos;
  ops[n++] = op;
  op = op_of(KILN_OP_COPY);
  op.a = *qkv;
  op.a.offset += (uint64_t)Hq * D * 4;
  op.a.shape[1] = 2 * Hkv;
  op.b = *cache, op.index = pos;
  ops[n++] = op;
  const uint64_t es = kiln_dtype_size(cache_type);
  op = op_of(KILN_OP_ATTENTION);
  op.a = *qkv, op.a.shape[1] = Hq;
  op.b = *cache, op.b.shape[1] = Hkv;
  op.c = *cache, op.c.shape[1] = Hkv, op.c.offset += (uint64_t)Hkv * D * es;
  op.d = *att, op.index = pos, op.alpha = 0.125f;
  ops[n++] = op;
  return n;
}

/* Whether a KILN_CUDA_* switch is set to 0 (a comparison run). */
static bool switched_off(const char *name) {
  const char *e = getenv(name);
  return e && strcmp(e, "0") == 0;
}

/* Ops fused by the RoPE epilogue of qkv_rope_attention's block: 5, or 4
 * with KILN_CUDA_ROPE_EPILOGUE=0 (norm + 3 GEMVs, ROPE + COPY). */
static uint64_t rope_block_fused(void) {
  return switched_off("KILN_CUDA_ROPE_EPILOGUE") ? 4 : 5;
}

/* The ops of a decode step that the cuda backend runs fused (RMSNORM into
 * the GEMVs after it; q, k, v sharing x; gate and up with their SWIGLU, in
 * place and not; an in-place RMSNORM before the LM head; the attention
 * block's RMSNORM, q, k, v, ROPE and KV append) and one pattern
 * it must not fuse (a GEMV writing the RMSNORM's input), as a program
 * against the cpu backend: every output compared, the fused count
 * checked. Weights `wt`, rows misaligned by 3 elements when `mis`. */
static void fused_program(kiln_test *t, fx *f, kiln_dtype wt, bool mis) {
  const int64_t H = 204, Q = 204, KV = 68, I = 700, V = 16500;
  f->in_top = f->out_top = 0;   /* each call lays out its own tensors */
  const int64_t sh = mis ? 3 : 0;
  /* A weight [N, K] whose rows are K + 8 apart and start sh elements in. */
  kiln_tensor wts[11];
  const int64_t wn[11] = {Q, KV, KV, I, I, H, V, H, 256, 128, 128};
  const int64_t wk[11] = {H, H, H, H, H, I, H, H, H, H, H};
  for (int i = 0; i < 11; i++) {
    wts[i] = input(f, wt, 2, wn[i], wk[i] + 8, 0, 0);
    wts[i].offset += (uint64_t)sh * kiln_dtype_size(wt);
    wts[i].shape[1] = wk[i];
  }
  /* With mis, g1 starts 4 bytes in too: the fused RMSNORM's scalar path
   * (its 16-byte loads need a and g on 16 bytes). */
  kiln_tensor g1 = input(f, KILN_DTYPE_F32, 1, H + 1, 0, 0, 0);
  g1.shape[0] = H;
  if (mis) g1.offset += 4;
  kiln_tensor g2 = input(f, KILN_DTYPE_F32, 1, H, 0, 0, 0);
  kiln_tensor x = output(f, KILN_DTYPE_F32, 2, 1, H, 0, 0, true);
  kiln_tensor xb = output(f, KILN_DTYPE_F32, 2, 1, H, 0, 0, false);
  kiln_tensor q = output(f, KILN_DTYPE_F32, 2, 1, Q, 0, 0, false);
  kiln_tensor k = output(f, KILN_DTYPE_F32, 2, 1, KV, 0, 0, false);
  kiln_tensor v = output(f, KILN_DTYPE_F32, 2, 1, KV, 0, 0, true);
  kiln_tensor hb = output(f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
  kiln_tensor hb2 = output(f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
  kiln_tensor hb3 = output(f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
  kiln_tensor logits = output(f, KILN_DTYPE_F32, 2, 1, V, 0, 0, false);
  kiln_tensor next = output(f, KILN_DTYPE_I32, 1, 1, 0, 0, 0, false);
  kiln_tensor y2 = output(f, KILN_DTYPE_F32, 2, 1, H, 0, 0, false);
  kiln_op ops[28];
  int n = 0;
  kiln_op op = op_of(KILN_OP_RMSNORM);          /* norm + q, k, v: 3 fused */
  op.a = x, op.b = g1, op.c = xb, op.eps = 1e-5f;
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);
  op.a = wts[0], op.b = xb, op.c = q;
  ops[n++] = op;
  op.a = wts[1], op.c = k, op.alpha = 0.5f;
  ops[n++] = op;
  op.a = wts[2], op.c = v, op.alpha = 1.0f, op.beta = 0.5f;
  ops[n++] = op;
  op = op_of(KILN_OP_RMSNORM);                  /* norm + gate, up, swiglu: 3 */
  op.a = x, op.b = g2, op.c = xb, op.eps = 1e-5f;
  ops[n++] = op;
  n += gate_up_swiglu(ops + n, wts[3], wts[4], xb, hb, hb2, hb);
  op = op_of(KILN_OP_GEMV);                     /* down, residual: alone */
  op.a = wts[5], op.b = hb, op.c = x, op.beta = 1.0f;
  ops[n++] = op;
  /* gate, up, swiglu to hb3: 2 */
  n += gate_up_swiglu(ops + n, wts[3], wts[4], xb, hb, hb2, hb3);
  op = op_of(KILN_OP_RMSNORM);                  /* in-place norm + head: 1 */
  op.a = x, op.b = g1, op.c = x, op.eps = 1e-5f;
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);
  op.a = wts[6], op.b = x, op.c = logits;
  ops[n++] = op;
  op = op_of(KILN_OP_ARGMAX);
  op.a = logits, op.b = next;
  ops[n++] = op;
  /* The attention block: RMSNORM + q, k, v + ROPE + KV append in one
   * launch, attention over the cache in splits (merged by their last
   * block). */
  kiln_tensor qkv, cache, att;
  const kiln_tensor wqkv[3] = {wts[8], wts[9], wts[10]};
  n += qkv_rope_attention(f, ops + n, 211, x, g2, xb, wqkv, KILN_DTYPE_BF16,
                          &qkv, &cache, &att);
  op = op_of(KILN_OP_RMSNORM);                  /* writes its input: none */
  op.a = xb, op.b = g1, op.c = y2, op.eps = 1e-5f;
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);
  op.a = wts[7], op.b = y2, op.c = xb;
  ops[n++] = op;
  const uint64_t want_fused = 9 + rope_block_fused();

  kiln_program *pc = NULL, *pg = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(f->cpu, &pc));
  KILN_EXPECT_OK(t, kiln_program_create(f->gpu, &pg));
  kiln_device_stats before, after;
  kiln_device_get_stats(f->gpu, &before);
  for (int i = 0; i < n && pc && pg; i++) {
    kiln_op g = gpu_twin(f, &ops[i]);
    KILN_EXPECT_OK(t, kiln_program_add(pc, &ops[i]));
    KILN_EXPECT_OK(t, kiln_program_add(pg, &g));
  }
  /* Twice: the second replays the recorded graph on the new state. */
  for (int rep = 0; rep < 2 && pc && pg; rep++) {
    KILN_EXPECT_OK(t, kiln_device_submit_program(f->cpu, pc, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f->cpu, NULL));
    KILN_EXPECT_OK(t, kiln_device_submit_program(f->gpu, pg, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f->gpu, NULL));
    const struct {
      const char *name;
      const kiln_tensor *t;
    } outs[] = {{"q", &q},   {"k", &k},     {"v", &v},     {"hb", &hb},
                {"hb2", &hb2}, {"hb3", &hb3}, {"x", &x},   {"logits", &logits},
                {"y2", &y2}, {"xb", &xb}, {"qkv", &qkv}, {"cache", &cache},
                {"attention", &att}};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
      char what[96];
      snprintf(what, sizeof what, "fused program %s%s rep %d: %s",
               kiln_dtype_name(wt), mis ? " misaligned" : "", rep, outs[i].name);
      expect_close(t, f, what, outs[i].t, 1e-3);
    }
    /* ARGMAX exactly, against the cuda logits themselves. */
    const float *lg = (const float *)at(f->out_gpu, logits.offset);
    int32_t best = 0, got;
    for (int32_t j = 1; j < V; j++)
      if (lg[j] > lg[best]) best = j;
    memcpy(&got, at(f->out_gpu, next.offset), 4);
    KILN_EXPECTF(t, got == best, "fused program argmax: %d, want %d", got, best);
  }
  kiln_device_get_stats(f->gpu, &after);
  if (kiln_device_kind_of(f->gpu) == KILN_DEVICE_CUDA)
    KILN_EXPECTF(t, after.fused_ops - before.fused_ops == want_fused,
                 "fused %llu ops, want %llu",
                 (unsigned long long)(after.fused_ops - before.fused_ops),
                 (unsigned long long)want_fused);
  kiln_program_release(pc);
  kiln_program_release(pg);
}

static void fused_programs(kiln_test *t, kiln_placement p) {
  fx f;
  if (!fx_open(t, &f, p)) return;
  fused_program(t, &f, KILN_DTYPE_BF16, false);
  fused_program(t, &f, KILN_DTYPE_F32, false);
  fused_program(t, &f, KILN_DTYPE_BF16, true);
  fused_program(t, &f, KILN_DTYPE_F16, true);
  fx_close(&f);
}
static void test_fused_program_mapped(kiln_test *t) {
  fused_programs(t, KILN_PLACEMENT_MAPPED);
}
static void test_fused_program_resident(kiln_test *t) {
  fused_programs(t, KILN_PLACEMENT_RESIDENT);
}

/* An output a program test compares, by name. */
typedef struct named_out {
  const char *name;
  const kiln_tensor *t;
} named_out;

/* Runs ops[0..n) as a program on the cpu backend and on the GPU, `reps`
 * times (the first submit records the graph, the others replay it on the
 * new state), comparing every output after each. */
static void program_vs_cpu(kiln_test *t, fx *f, const kiln_op *ops, int n,
                           int reps, const named_out *outs, size_t nouts,
                           const char *label) {
  kiln_program *pc = NULL, *pg = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(f->cpu, &pc));
  KILN_EXPECT_OK(t, kiln_program_create(f->gpu, &pg));
  for (int i = 0; i < n && pc && pg; i++) {
    kiln_op gop = gpu_twin(f, &ops[i]);
    KILN_EXPECT_OK(t, kiln_program_add(pc, &ops[i]));
    KILN_EXPECT_OK(t, kiln_program_add(pg, &gop));
  }
  for (int rep = 0; rep < reps && pc && pg; rep++) {
    KILN_EXPECT_OK(t, kiln_device_submit_program(f->cpu, pc, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f->cpu, NULL));
    KILN_EXPECT_OK(t, kiln_device_submit_program(f->gpu, pg, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(f->gpu, NULL));
    for (size_t i = 0; i < nouts; i++) {
      char what[128];
      snprintf(what, sizeof what, "%s rep %d: %s", label, rep, outs[i].name);
      expect_close(t, f, what, outs[i].t, 1e-3);
    }
  }
  kiln_program_release(pc);
  kiln_program_release(pg);
}

/* ---- a chain of one-row GEMVs ------------------------------------------------- */

/* One-row GEMVs back to back in a program on RESIDENT memory, each reading
 * the one before's output: K over several 16-byte vectors per lane with a
 * tail, a K shorter than a vector (rows 16-byte padded), rows not a
 * multiple of 8, the fused RMSNORM + q, k and gate, up + SWIGLU on a long
 * K, RMSNORM + GEMV on a longer one, a residual, the attention block
 * (the RoPE epilogue on a long K), and two hazards: a GEMV
 * whose weights the GEMV before it writes, and a GEMV writing the RMSNORM
 * input of the group after it. Against the cpu backend, recorded and
 * replayed. */
static void test_gemv_chain_program(kiln_test *t) {
  fx f;
  if (!fx_open(t, &f, KILN_PLACEMENT_RESIDENT)) return;
  const kiln_dtype bf = KILN_DTYPE_BF16, f32 = KILN_DTYPE_F32;
  const int64_t K = 2600, R2 = 10, K2 = 264, N1 = R2 * K2, Q = 33, KV = 17;
  const int64_t I = 37, IP = 40;
  kiln_tensor w1 = input(&f, bf, 2, N1, K, 0, 0);
  kiln_tensor x0 = input(&f, f32, 2, 1, K, 0, 0);
  kiln_tensor x2 = input(&f, f32, 2, 1, K2, 0, 0);
  kiln_tensor g = input(&f, f32, 1, K, 0, 0, 0);
  kiln_tensor wq = input(&f, bf, 2, Q, K, 0, 0);
  kiln_tensor wk = input(&f, bf, 2, KV, K, 0, 0);
  kiln_tensor wv = input(&f, f32, 2, KV, K, 0, 0);
  kiln_tensor wg = input(&f, bf, 2, I, K, 0, 0);
  kiln_tensor wu = input(&f, bf, 2, I, K, 0, 0);
  kiln_tensor wd = input(&f, bf, 2, K, IP, 0, 0);   /* [K, I], rows IP apart */
  wd.shape[1] = I;
  kiln_tensor y1 = output(&f, f32, 2, 1, N1, 0, 0, false);
  kiln_tensor w2 = y1;                               /* y1 as [R2, K2] */
  w2.rank = 2, w2.shape[0] = R2, w2.shape[1] = K2;
  w2.stride[0] = K2, w2.stride[1] = 1;
  kiln_tensor y2 = output(&f, f32, 2, 1, R2, 0, 0, false);
  kiln_tensor x3 = output(&f, f32, 2, 1, K, 0, 0, true);
  kiln_tensor xb = output(&f, f32, 2, 1, K, 0, 0, false);
  kiln_tensor q = output(&f, f32, 2, 1, Q, 0, 0, false);
  kiln_tensor k = output(&f, f32, 2, 1, KV, 0, 0, false);
  kiln_tensor v = output(&f, f32, 2, 1, KV, 0, 0, false);
  kiln_tensor hb = output(&f, f32, 2, 1, I, 0, 0, false);
  kiln_tensor hb2 = output(&f, f32, 2, 1, I, 0, 0, false);
  kiln_tensor y3 = output(&f, f32, 2, 1, N1, 0, 0, false);
  const int64_t K5 = 5000;
  kiln_tensor w5 = input(&f, bf, 2, 19, K5, 0, 0);
  kiln_tensor g5 = input(&f, f32, 1, K5, 0, 0, 0);
  kiln_tensor x5 = output(&f, f32, 2, 1, K5, 0, 0, true);
  kiln_tensor xb5 = output(&f, f32, 2, 1, K5, 0, 0, false);
  kiln_tensor y5 = output(&f, f32, 2, 1, 19, 0, 0, false);
  const kiln_tensor wqkv[3] = {input(&f, bf, 2, 256, K, 0, 0),
                               input(&f, bf, 2, 128, K, 0, 0),
                               input(&f, bf, 2, 128, K, 0, 0)};
  kiln_tensor xn = output(&f, f32, 2, 1, K, 0, 0, false);
  kiln_tensor qkv, cache, att;
  kiln_op ops[24];
  int n = 0;
  kiln_op op = op_of(KILN_OP_GEMV);
  op.a = w1, op.b = x0, op.c = y1;                   /* K = 2600: a tail */
  ops[n++] = op;
  op.a = w2, op.b = x2, op.c = y2, op.alpha = 2.0f;  /* weights just written */
  ops[n++] = op;
  op = op_of(KILN_OP_RMSNORM);
  op.a = x3, op.b = g, op.c = xb, op.eps = 1e-5f;
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);                          /* norm + q, k */
  op.b = xb;
  op.a = wq, op.c = q;
  ops[n++] = op;
  op.a = wk, op.c = k;
  ops[n++] = op;
  op.a = wv, op.c = v;                               /* f32: not grouped */
  ops[n++] = op;
  n += gate_up_swiglu(ops + n, wg, wu, xb, hb, hb2, hb);
  op = op_of(KILN_OP_GEMV);                          /* K = 37: one tail */
  op.a = wd, op.b = hb, op.c = x3, op.beta = 1.0f;   /* residual into x3 */
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);
  op.a = w1, op.b = x3, op.c = y3, op.alpha = 0.5f;
  ops[n++] = op;
  /* RMSNORM + GEMV over K = 5000: x longer than 16 floats per thread (the
   * prologue's two-trip path). */
  op = op_of(KILN_OP_RMSNORM);
  op.a = x5, op.b = g5, op.c = xb5, op.eps = 1e-6f;
  ops[n++] = op;
  op = op_of(KILN_OP_GEMV);
  op.a = w5, op.b = xb5, op.c = y5;
  ops[n++] = op;
  /* The attention block on K = 2600 (rows over several vectors a lane,
   * with a tail), f16 cache. */
  n += qkv_rope_attention(&f, ops + n, 211, x3, g, xn, wqkv, KILN_DTYPE_F16,
                          &qkv, &cache, &att);
  const named_out outs[] = {{"y1", &y1}, {"y2", &y2}, {"xb", &xb}, {"q", &q},
                            {"k", &k},   {"v", &v},   {"hb", &hb}, {"hb2", &hb2},
                            {"x3", &x3}, {"y3", &y3}, {"xb5", &xb5}, {"y5", &y5},
                            {"xn", &xn}, {"qkv", &qkv}, {"cache", &cache},
                            {"attention", &att}};
  program_vs_cpu(t, &f, ops, n, 3, outs, sizeof outs / sizeof outs[0],
                 "GEMV chain");
  fx_close(&f);
}

/* ---- one-row GEMVs with K shared among warps ------------------------------ */

/* The cuda backend runs a one-row GEMV, and RMSNORM + gate, up + SWIGLU,
 * by kiln_gemv1k when rows lie on 16 bytes and an eighth of a row fits a
 * lane's registers (U = 1, 2, 4, 8 vectors; 4 at most with gate and up):
 * for each weight type and K from one vector a lane to eight (and past:
 * K = 14336 f32 and 16-bit gate/up go to kiln_gemv1), a GEMV with a
 * residual, the norm + gate/up group with its RMSNORM output elsewhere
 * (stored by block 0) and in place (by the last block), and 4000 gate/up
 * rows at K = 512 (a block loops over units). Against the cpu backend;
 * the launches that took kiln_gemv1k counted (kiln_device_stats). */
static void test_gemv_split_program(kiln_test *t) {
  fx f;
  if (!fx_open(t, &f, KILN_PLACEMENT_RESIDENT)) return;
  const kiln_dtype dts[3] = {KILN_DTYPE_BF16, KILN_DTYPE_F16, KILN_DTYPE_F32};
  const int64_t Ks[6] = {512, 2048, 4096, 8192, 14336, 512};
  for (int d = 0; d < 3; d++)
    for (int ki = 0; ki < 6; ki++) {
      const kiln_dtype dt = dts[d];
      const int64_t K = Ks[ki], N = 100, I = ki == 5 ? 4000 : 72;
      if (ki == 5 && dt != KILN_DTYPE_BF16) continue;
      f.in_top = f.out_top = 0;
      kiln_tensor w = input(&f, dt, 2, N, K, 0, 0);
      kiln_tensor wg = input(&f, dt, 2, I, K, 0, 0);
      kiln_tensor wu = input(&f, dt, 2, I, K, 0, 0);
      kiln_tensor x0 = input(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0);
      kiln_tensor g = input(&f, KILN_DTYPE_F32, 1, K, 0, 0, 0);
      kiln_tensor y = output(&f, KILN_DTYPE_F32, 2, 1, N, 0, 0, true);
      kiln_tensor x1 = output(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0, true);
      kiln_tensor xb = output(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0, false);
      kiln_tensor x2 = output(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0, true);
      kiln_tensor hb = output(&f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
      kiln_tensor hb2 = output(&f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
      kiln_tensor hb3 = output(&f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
      kiln_tensor hb4 = output(&f, KILN_DTYPE_F32, 2, 1, I, 0, 0, false);
      kiln_op ops[12];
      int n = 0;
      kiln_op op = op_of(KILN_OP_GEMV);
      op.a = w, op.b = x0, op.c = y, op.alpha = 0.5f, op.beta = 1.0f;
      ops[n++] = op;
      op = op_of(KILN_OP_RMSNORM);
      op.a = x1, op.b = g, op.c = xb, op.eps = 1e-5f;
      ops[n++] = op;
      n += gate_up_swiglu(ops + n, wg, wu, xb, hb, hb2, hb);
      op = op_of(KILN_OP_RMSNORM);                 /* in place */
      op.a = x2, op.b = g, op.c = x2, op.eps = 1e-5f;
      ops[n++] = op;
      n += gate_up_swiglu(ops + n, wg, wu, x2, hb3, hb4, hb3);
      /* Which launches qualify: an eighth of K within 32 x U vectors. */
      const int64_t per = (K / (dt == KILN_DTYPE_F32 ? 4 : 8) + 7) / 8;
      const uint64_t want = (per <= 256) + 2 * (per <= 128);
      kiln_device_stats before, after;
      kiln_device_get_stats(f.gpu, &before);
      const named_out outs[] = {{"y", &y},   {"xb", &xb},   {"hb", &hb},
                                {"hb2", &hb2}, {"x2", &x2}, {"hb3", &hb3},
                                {"hb4", &hb4}};
      char label[96];
      snprintf(label, sizeof label, "split GEMV %s K=%lld rows %lld",
               kiln_dtype_name(dt), (long long)K, (long long)I);
      program_vs_cpu(t, &f, ops, n, 2, outs, sizeof outs / sizeof outs[0], label);
      kiln_device_get_stats(f.gpu, &after);
      if (kiln_device_kind_of(f.gpu) == KILN_DEVICE_CUDA)
        KILN_EXPECTF(t, after.split_gemvs - before.split_gemvs == want,
                     "%s K=%lld: %llu launches by kiln_gemv1k, want %llu",
                     kiln_dtype_name(dt), (long long)K,
                     (unsigned long long)(after.split_gemvs - before.split_gemvs),
                     (unsigned long long)want);
    }
  fx_close(&f);
}

/* ---- programmatic dependent launch ----------------------------------------- */

/* Recorded into a graph, kiln_gemv1k and kiln_attn_dec may start before the
 * kernel before them ends and request their weights early; never when an
 * earlier op of the program writes those weights. A chain: GEMV A (first
 * op: plain), B (early), C whose weights are A's output viewed as a
 * matrix (must wait: plain), D (early; a residual), then the attention
 * block (the RMSNORM + q, k, v + RoPE + KV append launch and the decode
 * attention: early), a COPY into an earlier cache row through another
 * index (a kernel that does not wait) and the attention again (early).
 * Against the cpu backend, recorded and replayed; the early launches
 * counted (kiln_device_stats.pdl_launches: 5, not checked with
 * KILN_CUDA_PDL=0 or the ROPE epilogue, split K or decode attention off). */
static void test_pdl_program(kiln_test *t) {
  fx f;
  if (!fx_open(t, &f, KILN_PLACEMENT_RESIDENT)) return;
  const kiln_dtype bf = KILN_DTYPE_BF16, f32 = KILN_DTYPE_F32;
  const int64_t K = 1024, R3 = 8, K3 = 512;
  kiln_tensor w1 = input(&f, bf, 2, R3 * K3, K, 0, 0);
  kiln_tensor w2 = input(&f, bf, 2, K3, K, 0, 0);
  kiln_tensor w4 = input(&f, bf, 2, K, R3, 0, 0);
  kiln_tensor x0 = input(&f, f32, 2, 1, K, 0, 0);
  kiln_tensor x1 = input(&f, f32, 2, 1, K, 0, 0);
  kiln_tensor g = input(&f, f32, 1, K, 0, 0, 0);
  kiln_tensor y1 = output(&f, f32, 2, 1, R3 * K3, 0, 0, false);
  kiln_tensor w3 = y1;   /* y1 as [R3, K3]: weights op 0 writes */
  w3.shape[0] = R3, w3.shape[1] = K3, w3.stride[0] = K3, w3.stride[1] = 1;
  kiln_tensor y2 = output(&f, f32, 2, 1, K3, 0, 0, false);
  kiln_tensor y3 = output(&f, f32, 2, 1, R3, 0, 0, false);
  kiln_tensor x4 = output(&f, f32, 2, 1, K, 0, 0, true);
  kiln_tensor xn = output(&f, f32, 2, 1, K, 0, 0, false);
  const kiln_tensor wqkv[3] = {input(&f, bf, 2, 256, K, 0, 0),
                               input(&f, bf, 2, 128, K, 0, 0),
                               input(&f, bf, 2, 128, K, 0, 0)};
  kiln_tensor qkv, cache, att;
  kiln_op ops[16];
  int n = 0;
  kiln_op op = op_of(KILN_OP_GEMV);
  op.a = w1, op.b = x0, op.c = y1;
  ops[n++] = op;
  op.a = w2, op.b = x1, op.c = y2;   /* another x: not grouped with A */
  ops[n++] = op;
  op.a = w3, op.b = y2, op.c = y3, op.alpha = 1.0f / 16;
  ops[n++] = op;
  op.a = w4, op.b = y3, op.c = x4, op.alpha = 1.0f, op.beta = 1.0f;
  ops[n++] = op;
  n += qkv_rope_attention(&f, ops + n, 77, x4, g, xn, wqkv, f32, &qkv, &cache,
                          &att);
  /* A COPY into an earlier row of the cache through another index, then
   * the attention again. */
  kiln_op cp = ops[n - 2], at2 = ops[n - 1];
  if (cp.kind != KILN_OP_COPY || at2.kind != KILN_OP_ATTENTION) abort();
  cp.index = index_tensor(&f, 30, NULL);
  ops[n++] = cp;
  kiln_tensor att2 = output(&f, f32, 3, 1, 4, 64, 0, false);
  at2.d = att2;
  ops[n++] = at2;
  kiln_device_stats before, after;
  kiln_device_get_stats(f.gpu, &before);
  const named_out outs[] = {{"y1", &y1},   {"y2", &y2},   {"y3", &y3},
                            {"x4", &x4},   {"xn", &xn},   {"qkv", &qkv},
                            {"cache", &cache}, {"attention", &att},
                            {"attention after the copy", &att2}};
  program_vs_cpu(t, &f, ops, n, 3, outs, sizeof outs / sizeof outs[0],
                 "PDL chain");
  kiln_device_get_stats(f.gpu, &after);
  if (kiln_device_kind_of(f.gpu) == KILN_DEVICE_CUDA) {
    static const char *const off[] = {"KILN_CUDA_PDL", "KILN_CUDA_SPLITK",
                                      "KILN_CUDA_ROPE_EPILOGUE",
                                      "KILN_CUDA_ATTN_DEC"};
    uint64_t want = 5;
    for (size_t i = 0; i < sizeof off / sizeof off[0]; i++)
      if (switched_off(off[i])) want = 0;
    KILN_EXPECTF(t, want == 0 || after.pdl_launches - before.pdl_launches == want,
                 "%llu programmatic dependent launches, want %llu",
                 (unsigned long long)(after.pdl_launches - before.pdl_launches),
                 (unsigned long long)want);
  }
  fx_close(&f);
}

/* ---- device-side failures ----------------------------------------------------- */

/* A bad value read on the device fails the op at sync (OUT_OF_RANGE);
 * nothing outside the operands is touched, the context stays healthy, and
 * the next valid op gives the right answer. */
static void test_device_errors_then_valid_op(kiln_test *t) {
  fx f;
  if (!fx_open(t, &f, KILN_PLACEMENT_MAPPED)) return;
  kiln_op bad[4];
  bad[0] = op_of(KILN_OP_COPY); /* rows 9, 10 of a cache of 10 */
  bad[0].a = input(&f, KILN_DTYPE_F32, 3, 2, 2, 32, 0);
  bad[0].b = output(&f, KILN_DTYPE_F32, 3, 10, 2, 32, 0, false);
  bad[0].index = index_tensor(&f, 9, NULL);
  bad[1] = op_of(KILN_OP_GATHER); /* id 50 of a 50-row table */
  bad[1].a = input(&f, KILN_DTYPE_F32, 2, 50, 64, 0, 0);
  bad[1].b = input(&f, KILN_DTYPE_I32, 1, 3, 0, 0, 0);
  int32_t *ids = (int32_t *)at(f.in, bad[1].b.offset);
  ids[0] = 1, ids[1] = 50, ids[2] = -7;
  bad[1].c = output(&f, KILN_DTYPE_F32, 2, 3, 64, 0, 0, false);
  bad[2] = op_of(KILN_OP_ATTENTION); /* position 16 in a cache of 16 */
  bad[2].a = input(&f, KILN_DTYPE_F32, 3, 1, 2, 32, 0);
  bad[2].b = input(&f, KILN_DTYPE_F32, 3, 16, 1, 32, 0);
  bad[2].c = input(&f, KILN_DTYPE_F32, 3, 16, 1, 32, 0);
  bad[2].d = output(&f, KILN_DTYPE_F32, 3, 1, 2, 32, 0, false);
  bad[2].index = index_tensor(&f, 16, NULL);
  bad[3] = op_of(KILN_OP_ATTENTION); /* 16 queries at 10 of a 16-row cache */
  bad[3].a = input(&f, KILN_DTYPE_F32, 3, 16, 2, 64, 0);
  bad[3].b = input(&f, KILN_DTYPE_F32, 3, 16, 1, 64, 0);
  bad[3].c = input(&f, KILN_DTYPE_F32, 3, 16, 1, 64, 0);
  bad[3].d = output(&f, KILN_DTYPE_F32, 3, 16, 2, 64, 0, false);
  bad[3].index = index_tensor(&f, 10, NULL);
  for (int i = 0; i < 4; i++) {
    kiln_op g = gpu_twin(&f, &bad[i]);
    KILN_EXPECT_OK(t, kiln_device_submit(f.gpu, &g, NULL));
    kiln_status s = kiln_device_sync(f.gpu, NULL);
    KILN_EXPECTF(t, kiln_status_code(s) == KILN_CODE_OUT_OF_RANGE,
                 "bad %s: expected OUT_OF_RANGE at sync, got %s: %s",
                 kiln_op_kind_name(bad[i].kind),
                 kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
    kiln_status_free(s);
    /* Reported once: the next sync is clean. */
    KILN_EXPECT_OK(t, kiln_device_sync(f.gpu, NULL));
    kiln_op ok = op_of(KILN_OP_ADD);
    ok.a = input(&f, KILN_DTYPE_F32, 2, 3, 100, 0, 0);
    ok.b = input(&f, KILN_DTYPE_F32, 1, 100, 0, 0, 0);
    ok.c = output(&f, KILN_DTYPE_F32, 2, 3, 100, 0, 0, false);
    run_both(t, &f, "add after a device-side failure", &ok, &ok.c, 1e-4);
  }
  /* The attention block at position 300 of a 300-row cache, as a program
   * (RoPE epilogue of the fused GEMV on cuda): the cache row is refused. */
  const int64_t K = 96;
  const kiln_tensor w[3] = {input(&f, KILN_DTYPE_BF16, 2, 256, K, 0, 0),
                            input(&f, KILN_DTYPE_BF16, 2, 128, K, 0, 0),
                            input(&f, KILN_DTYPE_BF16, 2, 128, K, 0, 0)};
  kiln_tensor a = input(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0);
  kiln_tensor g = input(&f, KILN_DTYPE_F32, 1, K, 0, 0, 0);
  kiln_tensor xn = output(&f, KILN_DTYPE_F32, 2, 1, K, 0, 0, false);
  kiln_tensor qkv, cache, att;
  kiln_op ops[7];
  const int n = qkv_rope_attention(&f, ops, 300, a, g, xn, w, KILN_DTYPE_BF16,
                                   &qkv, &cache, &att);
  kiln_program *pg = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(f.gpu, &pg));
  for (int i = 0; i < n && pg; i++) {
    kiln_op gop = gpu_twin(&f, &ops[i]);
    KILN_EXPECT_OK(t, kiln_program_add(pg, &gop));
  }
  if (pg) {
    KILN_EXPECT_OK(t, kiln_device_submit_program(f.gpu, pg, NULL));
    kiln_status s = kiln_device_sync(f.gpu, NULL);
    KILN_EXPECTF(t, kiln_status_code(s) == KILN_CODE_OUT_OF_RANGE,
                 "attention block at a row past the cache: expected "
                 "OUT_OF_RANGE at sync, got %s: %s",
                 kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
    kiln_status_free(s);
    KILN_EXPECT_OK(t, kiln_device_sync(f.gpu, NULL));
  }
  kiln_program_release(pg);
  fx_close(&f);
}

/* ---- without a GPU (CI) ------------------------------------------------------- */

static void test_no_gpu_fallback(kiln_test *t) {
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cuda";
  kiln_device *d = NULL;
  kiln_status s = kiln_device_open(&o, &d);
  kiln_device *a = NULL;
  o.spec = "auto";
  KILN_EXPECT_OK(t, kiln_device_open(&o, &a));
  if (!s) {
    printf("  cuda: %s\n", kiln_device_describe(d));
    KILN_EXPECT(t, kiln_device_kind_of(d) == KILN_DEVICE_CUDA);
    if (a) {
      printf("  auto: %s\n", kiln_device_describe(a));
      KILN_EXPECT(t, kiln_device_kind_of(a) == KILN_DEVICE_CUDA);
    }
    kiln_device_release(d);
  } else {
    const char *why = kiln_status_message(s);
    printf("  cuda: UNAVAILABLE: %s\n", why);
    KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_UNAVAILABLE);
    KILN_EXPECT(t, why[0] && !strchr(why, '\n'));
    KILN_EXPECT(t, d == NULL);
    if (a) {
      printf("  auto: %s\n", kiln_device_describe(a));
      KILN_EXPECT(t, kiln_device_kind_of(a) == KILN_DEVICE_CPU);
      KILN_EXPECTF(t, strstr(kiln_device_describe(a), "auto: ") &&
                          strstr(kiln_device_describe(a), why),
                   "auto does not say why it chose the cpu: '%s'",
                   kiln_device_describe(a));
    }
    kiln_status_free(s);
    o.spec = "cuda:3";
    KILN_EXPECT_CODE(t, KILN_CODE_UNAVAILABLE, kiln_device_open(&o, &d));
  }
  kiln_device_release(a);
}

/* ---- bandwidth of the decode GEMV (printed, not asserted) ----------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double time_op(kiln_test *t, kiln_device *gpu, const kiln_op *op);
static double time_ops(kiln_test *t, kiln_device *gpu, const kiln_op *ops, int n);

static kiln_memory *bw_memory(kiln_test *t, kiln_device *gpu, uint64_t pages) {
  kiln_memory *m = new_memory(t, pages, "weights");
  if (!m) return NULL;
  KILN_EXPECT_OK(t, kiln_device_attach(gpu, m));
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, 0, kiln_memory_size(m),
                                      KILN_PLACEMENT_RESIDENT));
  return m;
}
static void bw_memory_free(kiln_device *gpu, kiln_memory *m) {
  kiln_device_detach(gpu, m);
  kiln_memory_release(m);
}

static void test_gemv_bandwidth(kiln_test *t) {
  kiln_device *gpu = cuda_or_skip(t);
  if (!gpu) return;
  /* A fresh memory per case: host stores to the same pages in two cases
   * would make them "hot" (writable for good, sent before every submit
   * that reads them; docs/gpu.md), and the test would time uploads. */
  const int64_t N = 8192, K = 8192;
  static const kiln_dtype types[] = {KILN_DTYPE_BF16, KILN_DTYPE_F16,
                                     KILN_DTYPE_F32, KILN_DTYPE_Q8_0};
  for (size_t i = 0; i < 4; i++) {
    kiln_memory *m = bw_memory(t, gpu, 4200); /* 275 MB */
    if (!m) break;
    uint64_t wbytes = bytes_of(types[i], N * K);
    const int64_t ws[2] = {N, K}, xs[2] = {1, K}, ys[2] = {1, N};
    uint64_t xoff = (wbytes + 4095) & ~(uint64_t)4095, yoff = xoff + K * 4;
    uint8_t *base = kiln_memory_base(m);
    for (uint64_t b = 0; b < wbytes; b += 2) base[b] = (uint8_t)(b * 7), base[b + 1] = 0x3c;
    for (int64_t k = 0; k < K; k++) ((float *)(base + xoff))[k] = 1.0f / (float)(k + 1);
    kiln_op op = op_of(KILN_OP_GEMV);
    op.a = kiln_tensor_make(m, 0, types[i], 2, ws);
    op.b = kiln_tensor_make(m, xoff, KILN_DTYPE_F32, 2, xs);
    op.c = kiln_tensor_make(m, yoff, KILN_DTYPE_F32, 2, ys);
    const double dt = time_op(t, gpu, &op);
    printf("  gemv %s %lldx%lld (M=1), resident, graph of 10: %.1f us/op, "
           "%.0f GB/s of weights\n",
           kiln_dtype_name(types[i]), (long long)N, (long long)K, dt * 1e6,
           wbytes / dt / 1e9);
    bw_memory_free(gpu, m);
  }
  /* The decode shapes of Llama-3.2-1B and -3.1-8B (bf16, M = 1) against
   * cuBLAS on the same weights (GEMM op with bf16 x: cublasGemmEx), from
   * cold HBM as in a decode step: a program cycles through copies of the
   * matrix, at least 200 MB of them (the H200's L2 holds 50 MB). */
  static const int64_t shapes[][2] = {
      {512, 2048},  {2048, 2048},  {8192, 2048}, {2048, 8192},
      {1024, 4096}, {4096, 4096}, {14336, 4096}, {4096, 14336}};
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const int64_t sN = shapes[i][0], sK = shapes[i][1];
    const int64_t ws[2] = {sN, sK}, xs[2] = {1, sK}, ys[2] = {1, sN};
    const uint64_t wbytes = (uint64_t)sN * sK * 2;
    int copies = (int)((200u << 20) / wbytes) + 1;
    if (copies < 10) copies = 10;
    if (copies > 128) copies = 128;
    const uint64_t wstride = (wbytes + 65535) & ~(uint64_t)65535;
    const uint64_t xoff = wstride * (uint64_t)copies, yoff = xoff + sK * 4;
    kiln_memory *m = bw_memory(t, gpu, (yoff + sN * 4 + 65535) / 65536);
    if (!m) break;
    uint16_t *wp = (uint16_t *)kiln_memory_base(m);
    for (uint64_t e = 0; e < wbytes / 2; e++) wp[e] = kiln_f32_to_bf16((float)(e % 29) / 29.0f - 0.5f);
    for (int c = 1; c < copies; c++)
      memcpy(kiln_memory_base(m) + c * wstride, wp, wbytes);
    kiln_op gv[128], bl[128];
    for (int c = 0; c < copies; c++) {
      gv[c] = op_of(KILN_OP_GEMV);
      gv[c].a = kiln_tensor_make(m, c * wstride, KILN_DTYPE_BF16, 2, ws);
      gv[c].b = kiln_tensor_make(m, xoff, KILN_DTYPE_F32, 2, xs);
      gv[c].c = kiln_tensor_make(m, yoff, KILN_DTYPE_F32, 2, ys);
      bl[c] = op_of(KILN_OP_GEMM);
      bl[c].flags = KILN_OP_TRANS_B;
      bl[c].a = kiln_tensor_make(m, xoff, KILN_DTYPE_BF16, 2, xs);
      bl[c].b = gv[c].a;
      bl[c].c = gv[c].c;
    }
    const double dk = time_ops(t, gpu, gv, copies);
    const double db = time_ops(t, gpu, bl, copies);
    printf("  gemv bf16 %5lldx%-5lld M=1, cold: kiln %6.1f us %5.0f GB/s | "
           "cuBLAS %6.1f us %5.0f GB/s\n",
           (long long)sN, (long long)sK, dk * 1e6, wbytes / dk / 1e9, db * 1e6,
           wbytes / db / 1e9);
    bw_memory_free(gpu, m);
  }
  /* f32 4096 x 4096 (the zero-copy benchmark's decode step) likewise. */
  {
    const int64_t sN = 4096, sK = 4096;
    const int64_t ws[2] = {sN, sK}, xs[2] = {1, sK}, ys[2] = {1, sN};
    const uint64_t wbytes = (uint64_t)sN * sK * 4, xoff = wbytes, yoff = xoff + sK * 4;
    kiln_memory *m = bw_memory(t, gpu, (yoff + sN * 4 + 65535) / 65536);
    if (m) {
      float *wp = (float *)kiln_memory_base(m);
      for (uint64_t e = 0; e < wbytes / 4; e++) wp[e] = (float)(e % 29) / 29.0f - 0.5f;
      kiln_op op = op_of(KILN_OP_GEMV);
      op.a = kiln_tensor_make(m, 0, KILN_DTYPE_F32, 2, ws);
      op.b = kiln_tensor_make(m, xoff, KILN_DTYPE_F32, 2, xs);
      op.c = kiln_tensor_make(m, yoff, KILN_DTYPE_F32, 2, ys);
      const double dk = time_op(t, gpu, &op);
      kiln_op bl = op_of(KILN_OP_GEMM);
      bl.flags = KILN_OP_TRANS_B;
      bl.a = op.b;
      bl.b = op.a;
      bl.c = op.c;
      const double db = time_op(t, gpu, &bl);
      printf("  gemv f32  %5lldx%-5lld M=1: GEMV op %6.1f us %5.0f GB/s | cuBLAS "
             "%6.1f us %5.0f GB/s\n",
             (long long)sN, (long long)sK, dk * 1e6, wbytes / dk / 1e9,
             db * 1e6, wbytes / db / 1e9);
      bw_memory_free(gpu, m);
    }
  }
  kiln_device_release(gpu);
}

/* Seconds per op of ops[0..n) replayed as one program, 20 times. */
static double time_ops(kiln_test *t, kiln_device *gpu, const kiln_op *ops, int n) {
  kiln_program *p = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(gpu, &p));
  if (!p) return 0;
  for (int i = 0; i < n; i++) KILN_EXPECT_OK(t, kiln_program_add(p, &ops[i]));
  KILN_EXPECT_OK(t, kiln_device_submit_program(gpu, p, NULL));   /* upload */
  KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  const int reps = 20;
  double t0 = now_s();
  for (int r = 0; r < reps; r++)
    KILN_EXPECT_OK(t, kiln_device_submit_program(gpu, p, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  double dt = (now_s() - t0) / (reps * n);
  kiln_program_release(p);
  return dt;
}

/* Seconds per op of `op` replayed as a program of 10, 20 times. */
static double time_op(kiln_test *t, kiln_device *gpu, const kiln_op *op) {
  KILN_EXPECT_OK(t, kiln_device_submit(gpu, op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  kiln_op ops[10];
  for (int r = 0; r < 10; r++) ops[r] = *op;
  return time_ops(t, gpu, ops, 10);
}

/* Attention over a bf16 cache (printed): decode at the end of a 4096-row
 * cache, and a 256-query prefill chunk. */
static void test_attention_speed(kiln_test *t) {
  kiln_device *gpu = cuda_or_skip(t);
  if (!gpu) return;
  const int64_t S = 4096, Hq = 32, Hkv = 8, D = 128, Tp = 256;
  kiln_memory *m = new_memory(t, 512, "attn"); /* 32 MiB */
  if (!m) goto out;
  KILN_EXPECT_OK(t, kiln_device_attach(gpu, m));
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, 0, kiln_memory_size(m),
                                      KILN_PLACEMENT_RESIDENT));
  const int64_t cs[3] = {S, Hkv, D}, qs[3] = {Tp, Hq, D};
  uint64_t cbytes = (uint64_t)S * Hkv * D * 2, qbytes = (uint64_t)Tp * Hq * D * 4;
  kiln_op op = op_of(KILN_OP_ATTENTION);
  op.b = kiln_tensor_make(m, 0, KILN_DTYPE_BF16, 3, cs);
  op.c = kiln_tensor_make(m, cbytes, KILN_DTYPE_BF16, 3, cs);
  op.a = kiln_tensor_make(m, 2 * cbytes, KILN_DTYPE_F32, 3, qs);
  op.d = kiln_tensor_make(m, 2 * cbytes + qbytes, KILN_DTYPE_F32, 3, qs);
  uint16_t *c = (uint16_t *)kiln_memory_base(m);
  for (uint64_t i = 0; i < cbytes; i++) c[i] = kiln_f32_to_bf16((float)(i % 97) / 97.0f - 0.5f);
  op.alpha = 0.088f;
  op.a.shape[0] = op.d.shape[0] = 1;
  op.pos = S - 1;
  double dt = time_op(t, gpu, &op);
  printf("  attention decode bf16 S=%lld Hq=%lld Hkv=%lld D=%lld: %.1f us/op, "
         "%.0f GB/s of cache\n",
         (long long)S, (long long)Hq, (long long)Hkv, (long long)D, dt * 1e6,
         2 * cbytes / dt / 1e9);
  op.a.shape[0] = op.d.shape[0] = Tp;
  op.pos = S - Tp;
  dt = time_op(t, gpu, &op);
  printf("  attention prefill bf16 T=%lld at %lld: %.1f us/op, %.1f TFLOP/s\n",
         (long long)Tp, (long long)(S - Tp), dt * 1e6,
         4.0 * Tp * Hq * D * (S - Tp / 2) / dt / 1e12);
  /* A 512-token prompt of the 1B shape (D = 64) from position 0 with an
   * f32 cache, as bench_llm's prefill. */
  const int64_t T1 = 512, D1 = 64, cs1[3] = {T1, Hkv, D1}, qs1[3] = {T1, Hq, D1};
  const uint64_t cb1 = (uint64_t)T1 * Hkv * D1 * 4;
  op.b = kiln_tensor_make(m, 0, KILN_DTYPE_F32, 3, cs1);
  op.c = kiln_tensor_make(m, cb1, KILN_DTYPE_F32, 3, cs1);
  op.a = kiln_tensor_make(m, 2 * cb1, KILN_DTYPE_F32, 3, qs1);
  op.d = kiln_tensor_make(m, 2 * cb1 + (uint64_t)T1 * Hq * D1 * 4, KILN_DTYPE_F32, 3, qs1);
  op.pos = 0;
  dt = time_op(t, gpu, &op);
  printf("  attention prefill f32 T=%lld D=%lld at 0: %.1f us/op, %.1f TFLOP/s\n",
         (long long)T1, (long long)D1, dt * 1e6,
         4.0 * T1 * Hq * D1 * (T1 / 2) / dt / 1e12);
  kiln_device_detach(gpu, m);
  kiln_memory_release(m);
out:
  kiln_device_release(gpu);
}

/* Prefill GEMV (M = 256 rows of x against a bf16 / f32 weight) and GEMM
 * 4096 through cuBLAS (printed). */
static void test_matmul_speed(kiln_test *t) {
  kiln_device *gpu = cuda_or_skip(t);
  if (!gpu) return;
  const int64_t N = 4096, K = 4096, M = 256;
  kiln_memory *m = new_memory(t, 2048, "mm"); /* 128 MiB */
  if (!m) goto out;
  KILN_EXPECT_OK(t, kiln_device_attach(gpu, m));
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, 0, kiln_memory_size(m),
                                      KILN_PLACEMENT_RESIDENT));
  float *f = (float *)kiln_memory_base(m);
  for (uint64_t i = 0; i < kiln_memory_size(m) / 4; i++) f[i] = (float)(i % 13) / 13.0f;
  static const kiln_dtype types[] = {KILN_DTYPE_BF16, KILN_DTYPE_F32,
                                     KILN_DTYPE_Q8_0};
  const int64_t ws[2] = {N, K}, xs[2] = {M, K}, ys[2] = {M, N};
  for (int i = 0; i < 3; i++) {
    kiln_op op = op_of(KILN_OP_GEMV);
    op.a = kiln_tensor_make(m, 0, types[i], 2, ws);
    op.b = kiln_tensor_make(m, 64 << 20, KILN_DTYPE_F32, 2, xs);
    op.c = kiln_tensor_make(m, 80 << 20, KILN_DTYPE_F32, 2, ys);
    double dt = time_op(t, gpu, &op);
    printf("  gemv %s prefill M=%lld N=%lld K=%lld: %.1f us/op, %.1f TFLOP/s\n",
           kiln_dtype_name(types[i]), (long long)M, (long long)N, (long long)K,
           dt * 1e6, 2.0 * M * N * K / dt / 1e12);
  }
  const int64_t g2[2] = {2048, 2048};
  static const kiln_dtype gt[] = {KILN_DTYPE_BF16, KILN_DTYPE_F32};
  for (int i = 0; i < 2; i++) {
    kiln_op op = op_of(KILN_OP_GEMM);
    op.a = kiln_tensor_make(m, 0, gt[i], 2, g2);
    op.b = kiln_tensor_make(m, 32 << 20, gt[i], 2, g2);
    op.c = kiln_tensor_make(m, 64 << 20, KILN_DTYPE_F32, 2, g2);
    double dt = time_op(t, gpu, &op);
    printf("  gemm %s 2048^3 (cuBLAS): %.1f us/op, %.1f TFLOP/s\n",
           kiln_dtype_name(gt[i]), dt * 1e6, 2.0 * 2048 * 2048 * 2048 / dt / 1e12);
  }
  kiln_device_detach(gpu, m);
  kiln_memory_release(m);
out:
  kiln_device_release(gpu);
}

/* The decode step of bench_zero_copy from C, timed in parts (printed):
 * the host writes x (16 KiB, RESIDENT, a hot page after two steps),
 * submits y = W x (W 4096 x 4096 f32, RESIDENT) and syncs (y comes back);
 * then the same with a NOP. p50 of the submit call, the sync call and the
 * step, to set against the native program's step. */
static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}
static void test_decode_step_parts(kiln_test *t) {
  kiln_device *gpu = cuda_or_skip(t);
  if (!gpu) return;
  const int64_t n = 4096, steps = 400;
  const uint64_t wbytes = (uint64_t)n * n * 4, xoff = wbytes, yoff = xoff + 65536;
  kiln_memory *m = bw_memory(t, gpu, (yoff + 65536) / 65536);
  if (!m) goto out;
  float *w = (float *)kiln_memory_base(m);
  for (uint64_t e = 0; e < wbytes / 4; e++) w[e] = (float)(e % 17) * 0.0625f - 0.5f;
  const int64_t ws[2] = {n, n}, xs[2] = {1, n}, ys[2] = {1, n};
  kiln_op ops[2];
  ops[0] = op_of(KILN_OP_GEMV);
  ops[0].a = kiln_tensor_make(m, 0, KILN_DTYPE_F32, 2, ws);
  ops[0].b = kiln_tensor_make(m, xoff, KILN_DTYPE_F32, 2, xs);
  ops[0].c = kiln_tensor_make(m, yoff, KILN_DTYPE_F32, 2, ys);
  ops[1] = op_of(KILN_OP_NOP);
  static const char *names[2] = {"GEMV 4096x4096 f32", "NOP"};
  double *sub = malloc(steps * sizeof *sub), *syn = malloc(steps * sizeof *syn),
         *all = malloc(steps * sizeof *all);
  for (int k = 0; k < 2 && sub && syn && all; k++) {
    volatile float sink = 0;
    for (int64_t st = 0; st < steps + 10; st++) {
      double t0 = now_s();
      float *x = (float *)(kiln_memory_base(m) + xoff);
      for (int64_t i = 0; i < n; i++) x[i] = (float)((i + st) % 5) * 0.25f;
      double t1 = now_s();
      KILN_EXPECT_OK(t, kiln_device_submit(gpu, &ops[k], NULL));
      double t2 = now_s();
      KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
      double t3 = now_s();
      const float *y = (const float *)(kiln_memory_base(m) + yoff);
      float sum = 0;
      for (int64_t i = 0; i < n; i++) sum += y[i];
      sink = sum;
      double t4 = now_s();
      if (st >= 10) {
        sub[st - 10] = (t2 - t1) * 1e6;
        syn[st - 10] = (t3 - t2) * 1e6;
        all[st - 10] = (t4 - t0) * 1e6;
      }
    }
    (void)sink;
    qsort(sub, steps, sizeof *sub, cmp_double);
    qsort(syn, steps, sizeof *syn, cmp_double);
    qsort(all, steps, sizeof *all, cmp_double);
    printf("  decode step from C, %s: submit %.1f us, sync %.1f us, step %.1f us (p50)\n",
           names[k], sub[steps / 2], syn[steps / 2], all[steps / 2]);
  }
  free(sub);
  free(syn);
  free(all);
  bw_memory_free(gpu, m);
out:
  kiln_device_release(gpu);
}

/* A memory that grew after attach has two host registrations; a RESIDENT
 * range across the boundary must still go up and come back (the driver
 * refuses one copy spanning two registrations, so kiln splits it). */
static void test_resident_range_across_grown_registrations(kiln_test *t) {
  kiln_device *gpu = open_gpu();
  if (!gpu) {
    KILN_TEST_SKIP(t, "%s", g_skip);
    return;
  }
  kiln_memory *m = new_memory(t, 1, "grown");
  KILN_EXPECT_OK(t, kiln_device_attach(gpu, m));
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 2, NULL));
  const int64_t n = 16384;              /* 64 KiB of f32 at 32 KiB .. 96 KiB */
  uint64_t a_off = 32768, b_off = a_off + (uint64_t)n * 4;
  float *a = (float *)(kiln_memory_base(m) + a_off);
  for (int64_t i = 0; i < n; i++) a[i] = (float)(i % 97) - 48.0f;
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, a_off, (uint64_t)n * 8,
                                      KILN_PLACEMENT_RESIDENT));
  kiln_op op = {.kind = KILN_OP_SCALE, .alpha = 0.5f};
  op.a = kiln_tensor_make(m, a_off, KILN_DTYPE_F32, 1, &n);
  op.b = kiln_tensor_make(m, b_off, KILN_DTYPE_F32, 1, &n);
  KILN_EXPECT_OK(t, kiln_device_submit(gpu, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  const float *b = (const float *)(kiln_memory_base(m) + b_off);
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad += b[i] != 0.5f * a[i];
  KILN_EXPECTF(t, bad == 0, "%d of %lld elements wrong", bad, (long long)n);
  kiln_device_detach(gpu, m);
  kiln_memory_release(m);
  kiln_device_release(gpu);
}

/* DEVICE on cuda: the range starts as the host's bytes, ops (direct and a
 * replayed graph) compute there, a sync copies nothing back, placing it
 * MAPPED brings the device's bytes back. */
static void test_device_range(kiln_test *t) {
  kiln_device *gpu = open_gpu();
  if (!gpu) {
    KILN_TEST_SKIP(t, "%s", g_skip);
    return;
  }
  kiln_memory *m = new_memory(t, 2, "device-only");   /* a and b: 128 KiB */
  KILN_EXPECT_OK(t, kiln_device_attach(gpu, m));
  const int64_t n = 16384;
  const uint64_t a_off = 0, b_off = (uint64_t)n * 4;
  float *a = (float *)(kiln_memory_base(m) + a_off);
  float *b = (float *)(kiln_memory_base(m) + b_off);
  for (int64_t i = 0; i < n; i++) a[i] = (float)(i % 97) - 48.0f, b[i] = -1;
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, a_off, (uint64_t)n * 8,
                                      KILN_PLACEMENT_DEVICE));
  KILN_EXPECT(t, kiln_device_placement(gpu, m, b_off) == KILN_PLACEMENT_DEVICE);
  kiln_op op = {.kind = KILN_OP_SCALE, .alpha = 0.5f};
  op.a = kiln_tensor_make(m, a_off, KILN_DTYPE_F32, 1, &n);
  op.b = kiln_tensor_make(m, b_off, KILN_DTYPE_F32, 1, &n);
  kiln_device_stats s0, s1;
  kiln_device_get_stats(gpu, &s0);
  KILN_EXPECT_OK(t, kiln_device_submit(gpu, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  kiln_op back = {.kind = KILN_OP_SCALE, .alpha = 2.0f};  /* b = 2b */
  back.a = op.b;
  back.b = op.b;
  kiln_program *p = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(gpu, &p));
  KILN_EXPECT_OK(t, kiln_program_add(p, &back));
  for (int i = 0; i < 3; i++) {
    KILN_EXPECT_OK(t, kiln_device_submit_program(gpu, p, NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(gpu, NULL));
  }
  kiln_device_get_stats(gpu, &s1);
  KILN_EXPECTF(t, s1.bytes_to_host == s0.bytes_to_host && b[7] == -1,
               "synced DEVICE bytes came back (%llu bytes, b[7] %g)",
               (unsigned long long)(s1.bytes_to_host - s0.bytes_to_host),
               (double)b[7]);
  KILN_EXPECT_OK(t, kiln_device_place(gpu, m, a_off, (uint64_t)n * 8,
                                      KILN_PLACEMENT_MAPPED));
  int bad = 0;
  for (int64_t i = 0; i < n; i++) {
    const float x = (float)(i % 97) - 48.0f;
    bad += b[i] != 4.0f * x || a[i] != x;   /* 0.5 x, doubled 3 times */
  }
  KILN_EXPECTF(t, bad == 0, "%d of %lld elements wrong after MAPPED", bad,
               (long long)n);
  kiln_program_release(p);
  kiln_device_detach(gpu, m);
  kiln_memory_release(m);
  kiln_device_release(gpu);
}

KILN_TEST_MAIN(test_no_gpu_fallback, test_mapped_pointer_identity,
               test_every_op_mapped, test_every_op_resident,
               test_graph_replay_mapped, test_graph_replay_resident,
               test_fused_program_mapped, test_fused_program_resident,
               test_gemv_chain_program, test_gemv_split_program,
               test_pdl_program,
               test_device_errors_then_valid_op,
               test_resident_range_across_grown_registrations, test_device_range,
               test_gemv_bandwidth,
               test_attention_speed, test_matmul_speed, test_decode_step_parts)
