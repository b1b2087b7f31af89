/* bench_dispatch: kernel executables on kiln's worker pool against native
 * baselines, all in one run (issue 4).
 *
 * 1. Dispatch overhead: a command buffer holding one dispatch of the empty
 *    kernel (1, 16, 1024 workgroups), submit + fence wait, against a native
 *    C thread pool doing the same (fork-join over an atomic workgroup
 *    counter, same worker count, same spin-then-futex waiting as kiln's
 *    pool, src/dispatch/wait.h), calling the natively compiled empty kernel.
 * 2. Every library kernel (guests/kernels/library.c) at 1 thread and at all
 *    threads: kiln (wasm32 -> wasm2c -> cc -O2) against the same source
 *    compiled natively with -O2 and with -O3 -march=native, run on the
 *    native pool.
 * 3. GEMM n=1024: speedup from 1 to all threads, kiln and native -O3.
 *
 * Usage: bench_dispatch [--quick] [--json PATH]  (scripts/bench.sh dispatch) */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "dispatch/wait.h"
#include "kiln/dispatch.h"
#include "kiln_kernel.h"

unsigned char *kiln_kernel_native_base;

typedef void (*native_kernel)(const kiln_kernel_args *, uint32_t, uint32_t,
                              uint32_t);
#define DECLARE(k)                                                         \
  void o2_##k(const kiln_kernel_args *, uint32_t, uint32_t, uint32_t);     \
  void o3_##k(const kiln_kernel_args *, uint32_t, uint32_t, uint32_t);
DECLARE(empty)
DECLARE(gemm_f32)
DECLARE(add_f32)
DECLARE(mul_f32)
DECLARE(axpy_f32)
DECLARE(sum_f32)
DECLARE(softmax_f32)
DECLARE(conv2d_f32)

static void check(kiln_status s, const char *what) {
  if (s) bench_die("%s: %s", what, kiln_status_message(s));
}

/* ---- The native thread pool (the baseline) ------------------------------------- */

typedef struct npool {
  int n;
  pthread_t *th;
  _Atomic uint32_t gen, done;
  atomic_bool stop;
  native_kernel fn;
  const kiln_kernel_args *args;
  uint32_t groups[3], total;
  _Atomic uint32_t next, left;
} npool;

static void *npool_main(void *arg) {
  npool *p = arg;
  uint32_t seen = 0;
  for (;;) {
    seen = kiln_wait_change(&p->gen, seen);
    if (atomic_load(&p->stop)) return NULL;
    const uint32_t total = p->total, gx = p->groups[0], gy = p->groups[1];
    for (;;) {
      uint32_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
      if (i >= total) break;
      uint32_t r = i / gx;
      p->fn(p->args, i - r * gx, r % gy, r / gy);
    }
    if (atomic_fetch_add_explicit(&p->left, 1, memory_order_acq_rel) + 1 ==
        (uint32_t)p->n) {
      atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
      kiln_wake_all(&p->done);
    }
  }
}

static npool *npool_create(int n) {
  npool *p = calloc(1, sizeof *p);
  p->n = n;
  p->th = calloc((size_t)n, sizeof *p->th);
  for (int i = 0; i < n; i++) pthread_create(&p->th[i], NULL, npool_main, p);
  return p;
}

static void npool_run(npool *p, native_kernel fn, const kiln_kernel_args *a,
                      const uint32_t groups[3]) {
  p->fn = fn;
  p->args = a;
  memcpy(p->groups, groups, sizeof p->groups);
  p->total = groups[0] * groups[1] * groups[2];
  atomic_store_explicit(&p->next, 0, memory_order_relaxed);
  atomic_store_explicit(&p->left, 0, memory_order_relaxed);
  uint32_t d = atomic_load(&p->done);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  kiln_wake_all(&p->gen);
  kiln_wait_change(&p->done, d);
}

static void npool_release(npool *p) {
  atomic_store(&p->stop, true);
  atomic_fetch_add(&p->gen, 1);
  kiln_wake_all(&p->gen);
  for (int i = 0; i < p->n; i++) pthread_join(p->th[i], NULL);
  free(p->th);
  free(p);
}

/* ---- Setup ---------------------------------------------------------------------- */

typedef struct side {
  int threads;
  kiln_pool *pool;
  kiln_executable *x;
  npool *native;
} side;

static kiln_dmem *dm;
static kiln_engine *engine;

static void side_open(side *s, int threads) {
  s->threads = threads;
  check(kiln_pool_create(dm, &(kiln_pool_options){.threads = threads}, &s->pool), "pool");
  char path[512];
  snprintf(path, sizeof path, "%s/kernels.wasm", KILN_GUEST_DIR);
  check(kiln_executable_load_file(s->pool, engine, path, &s->x), path);
  s->native = npool_create(threads);
}

static void side_close(side *s) {
  kiln_executable_release(s->x);
  kiln_pool_release(s->pool);
  npool_release(s->native);
}

static uint64_t buffer(uint64_t bytes) {
  uint64_t off;
  check(kiln_dmem_alloc(dm, bytes, 4096, &off), "alloc");
  return off;
}

static float *F(uint64_t off) {
  return (float *)(void *)(kiln_memory_base(kiln_dmem_memory(dm)) + off);
}

static void fill(uint64_t off, size_t n, float scale) {
  float *p = F(off);
  uint32_t s = (uint32_t)off;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    p[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * scale;
  }
}

/* One kernel launch, described for both kiln and native. */
typedef struct launch {
  const char *kernel;
  native_kernel o2, o3;
  uint32_t groups[3];
  uint32_t nb, np;
  kiln_binding b[4];
  uint32_t push[8];
} launch;

static kiln_kernel_args native_args(const launch *l) {
  kiln_kernel_args a;
  memset(&a, 0, sizeof a);
  memcpy(a.group_count, l->groups, sizeof a.group_count);
  a.binding_count = l->nb;
  a.push_count = l->np;
  for (uint32_t i = 0; i < l->nb; i++) {
    a.binding[i] = (uint32_t)l->b[i].offset;
    a.binding_size[i] = (uint32_t)l->b[i].size;
  }
  memcpy(a.push, l->push, l->np * 4);
  return a;
}

static kiln_cmdbuf *record(side *s, const launch *l) {
  kiln_cmdbuf *cb;
  check(kiln_cmdbuf_create(s->pool, &cb), "cmdbuf");
  kiln_dispatch_desc d = {.executable = s->x, .kernel = l->kernel,
                          .groups = {l->groups[0], l->groups[1], l->groups[2]},
                          .binding_count = l->nb, .bindings = l->b,
                          .push_count = l->np, .push = l->push};
  check(kiln_cmdbuf_dispatch(cb, &d), l->kernel);
  return cb;
}

/* Batch functions for bench_per_iter. */
typedef struct run_ctx {
  kiln_cmdbuf *cb;
  npool *np;
  native_kernel fn;
  kiln_kernel_args args;
  uint32_t groups[3];
} run_ctx;

static void run_kiln(void *c, uint64_t iters) {
  run_ctx *r = c;
  for (uint64_t i = 0; i < iters; i++) check(kiln_cmdbuf_run(r->cb), "run");
}

static void run_native(void *c, uint64_t iters) {
  run_ctx *r = c;
  for (uint64_t i = 0; i < iters; i++) npool_run(r->np, r->fn, &r->args, r->groups);
}

/* ---- 1. Dispatch overhead ---------------------------------------------------------- */

static void bench_overhead(bench_report *r, side *s) {
  bench_section(r, "dispatch overhead: empty kernel, submit + wait");
  int samples = r->quick ? 5 : 21;
  uint32_t sizes[3] = {1, 16, 1024};
  for (int k = 0; k < 3; k++) {
    launch l = {.kernel = "empty", .groups = {sizes[k], 1, 1}};
    run_ctx rk = {.cb = record(s, &l)};
    run_ctx rn = {.np = s->native, .fn = o2_empty, .args = native_args(&l),
                  .groups = {sizes[k], 1, 1}};
    bench_stats ns = bench_per_iter(run_native, &rn, samples, 20000000, 1u << 20);
    bench_stats ks = bench_per_iter(run_kiln, &rk, samples, 20000000, 1u << 20);
    char id[64], label[96];
    snprintf(id, sizeof id, "overhead.native.%u", sizes[k]);
    snprintf(label, sizeof label, "native pool, %u workgroups", sizes[k]);
    bench_add(r, id, label, "us", bench_stats_scale(ns, 1e-3), "%d threads", s->threads);
    snprintf(id, sizeof id, "overhead.kiln.%u", sizes[k]);
    snprintf(label, sizeof label, "kiln pool, %u workgroups", sizes[k]);
    bench_add(r, id, label, "us", bench_stats_scale(ks, 1e-3), "%.2fx native",
              ks.p50 / ns.p50);
    kiln_cmdbuf_release(rk.cb);
  }
}

/* ---- 2. Kernels ---------------------------------------------------------------------- */

/* Median seconds of one launch. */
static double time_kiln(side *s, const launch *l, int samples) {
  run_ctx rk = {.cb = record(s, l)};
  bench_stats st = bench_per_iter(run_kiln, &rk, samples, 50000000, 1u << 16);
  kiln_cmdbuf_release(rk.cb);
  return st.p50 * 1e-9;
}

static double time_native(side *s, const launch *l, native_kernel fn, int samples) {
  run_ctx rn = {.np = s->native, .fn = fn, .args = native_args(l),
                .groups = {l->groups[0], l->groups[1], l->groups[2]}};
  bench_stats st = bench_per_iter(run_native, &rn, samples, 50000000, 1u << 16);
  return st.p50 * 1e-9;
}

typedef struct kernel_case {
  const char *id, *label, *unit; /* unit GFLOP/s or GB/s */
  double work;                   /* flops or bytes per launch */
  launch l;
} kernel_case;

static void bench_kernel(bench_report *r, side *one, side *all, kernel_case *c) {
  int samples = r->quick ? 3 : 7;
  side *sides[2] = {one, all};
  for (int k = 0; k < 2; k++) {
    side *s = sides[k];
    double tk = time_kiln(s, &c->l, samples);
    double t2 = time_native(s, &c->l, c->l.o2, samples);
    double t3 = time_native(s, &c->l, c->l.o3, samples);
    double scale = 1e-9;
    char id[96], label[96];
    snprintf(id, sizeof id, "kernel.%s.kiln.t%d", c->id, s->threads);
    snprintf(label, sizeof label, "%s, %dT: kiln (wasm2c, cc -O2)", c->label, s->threads);
    bench_add_value(r, id, label, c->unit, c->work / tk * scale,
                    "%.2f of -O2, %.2f of -O3 -march=native", t2 / tk, t3 / tk);
    snprintf(id, sizeof id, "kernel.%s.o2.t%d", c->id, s->threads);
    snprintf(label, sizeof label, "%s, %dT: native gcc -O2", c->label, s->threads);
    bench_add_value(r, id, label, c->unit, c->work / t2 * scale, NULL);
    snprintf(id, sizeof id, "kernel.%s.o3.t%d", c->id, s->threads);
    snprintf(label, sizeof label, "%s, %dT: native -O3 -march=native", c->label, s->threads);
    bench_add_value(r, id, label, c->unit, c->work / t3 * scale, NULL);
  }
}

static launch gemm_launch(uint32_t n, uint64_t a, uint64_t b, uint64_t c) {
  launch l = {.kernel = "gemm_f32", .o2 = o2_gemm_f32, .o3 = o3_gemm_f32,
              .groups = {(n + 63) / 64, (n + 63) / 64, 1}, .nb = 3, .np = 3,
              .b = {{a, (uint64_t)n * n * 4}, {b, (uint64_t)n * n * 4}, {c, (uint64_t)n * n * 4}},
              .push = {n, n, n}};
  return l;
}

int main(int argc, char **argv) {
  bench_report *r = bench_begin("dispatch", argc, argv);
  int cores = (int)sysconf(_SC_NPROCESSORS_ONLN);
  kiln_engine_options eo;
  kiln_engine_options_init(&eo);
  check(kiln_engine_create(&eo, &engine), "engine");
  check(kiln_dmem_create(&(kiln_dmem_options){.initial_bytes = 256u << 20}, &dm), "dmem");
  side one, all;
  side_open(&one, 1);
  side_open(&all, cores);
  kiln_kernel_native_base = kiln_memory_base(kiln_dmem_memory(dm));
  bench_note(r, "%d cores online; 'all threads' = %d workers. Native "
                "baselines run on a native C pool with the same worker count "
                "and waiting policy.", cores, cores);

  bench_overhead(r, &all);

  bench_section(r, "kernels (median of batches; GB/s counts bytes read + written once)");
  const uint32_t N = 1u << 22; /* elementwise / reduction elements */
  uint64_t x = buffer(N * 4), y = buffer(N * 4), o = buffer(N * 4);
  fill(x, N, 2.0f);
  fill(y, N, 2.0f);
  const uint32_t G = 512;
  uint64_t ga = buffer(G * G * 4), gb = buffer(G * G * 4), gc = buffer(G * G * 4);
  fill(ga, G * G, 1.0f);
  fill(gb, G * G, 1.0f);
  const uint32_t rows = 4096, cols = 1024;
  uint64_t sx = buffer((uint64_t)rows * cols * 4), so = buffer((uint64_t)rows * cols * 4);
  fill(sx, (size_t)rows * cols, 10.0f);
  const uint32_t CI = 16, H = 128, W = 128, CO = 32, K = 3, OH = H - K + 1, OW = W - K + 1;
  uint64_t ci = buffer(CI * H * W * 4), cw = buffer(CO * CI * K * K * 4),
           cb = buffer(CO * 4), co = buffer((uint64_t)CO * OH * OW * 4);
  fill(ci, CI * H * W, 1.0f);
  fill(cw, CO * CI * K * K, 1.0f);
  fill(cb, CO, 1.0f);
  uint32_t per = 65536, groups = N / per;
  uint64_t partial = buffer(groups * 4);
  float alpha = 0.5f;
  uint32_t alpha_bits;
  memcpy(&alpha_bits, &alpha, 4);

  kernel_case cases[] = {
      {"gemm512", "GEMM 512x512x512", "GFLOP/s", 2.0 * G * G * G, gemm_launch(G, ga, gb, gc)},
      {"add", "add 4M f32", "GB/s", 12.0 * N,
       {.kernel = "add_f32", .o2 = o2_add_f32, .o3 = o3_add_f32, .groups = {groups, 1, 1},
        .nb = 3, .np = 2, .b = {{x, N * 4}, {y, N * 4}, {o, N * 4}}, .push = {N, per}}},
      {"axpy", "axpy 4M f32", "GB/s", 12.0 * N,
       {.kernel = "axpy_f32", .o2 = o2_axpy_f32, .o3 = o3_axpy_f32, .groups = {groups, 1, 1},
        .nb = 3, .np = 3, .b = {{x, N * 4}, {y, N * 4}, {o, N * 4}}, .push = {N, per, alpha_bits}}},
      {"sum", "sum 4M f32 (partials)", "GB/s", 4.0 * N,
       {.kernel = "sum_f32", .o2 = o2_sum_f32, .o3 = o3_sum_f32, .groups = {groups, 1, 1},
        .nb = 2, .np = 2, .b = {{x, N * 4}, {partial, groups * 4}}, .push = {N, per}}},
      {"softmax", "softmax 4096x1024", "GB/s", 8.0 * rows * cols,
       {.kernel = "softmax_f32", .o2 = o2_softmax_f32, .o3 = o3_softmax_f32,
        .groups = {rows / 32, 1, 1}, .nb = 2, .np = 3,
        .b = {{sx, (uint64_t)rows * cols * 4}, {so, (uint64_t)rows * cols * 4}},
        .push = {rows, cols, 32}}},
      {"conv2d", "conv2d 16x128x128 -> 32, 3x3", "GFLOP/s", 2.0 * CO * OH * OW * CI * K * K,
       {.kernel = "conv2d_f32", .o2 = o2_conv2d_f32, .o3 = o3_conv2d_f32,
        .groups = {CO, (OH + 7) / 8, 1}, .nb = 4, .np = 7,
        .b = {{ci, CI * H * W * 4}, {cw, CO * CI * K * K * 4}, {cb, CO * 4},
              {co, (uint64_t)CO * OH * OW * 4}},
        .push = {CI, H, W, CO, K, K, 8}}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    bench_kernel(r, &one, &all, &cases[i]);

  bench_section(r, "GEMM n=1024 thread scaling");
  const uint32_t B = 1024;
  uint64_t ba = buffer(B * B * 4), bb = buffer(B * B * 4), bc = buffer(B * B * 4);
  fill(ba, B * B, 1.0f);
  fill(bb, B * B, 1.0f);
  launch big = gemm_launch(B, ba, bb, bc);
  double flops = 2.0 * B * B * B, base_k = 0, base_n = 0;
  int samples = r->quick ? 1 : 3;
  for (int t = 1; t <= cores; t++) {
    side s;
    if (t == 1) s = one;
    else if (t == cores) s = all;
    else side_open(&s, t);
    double tk = time_kiln(&s, &big, samples), tn = time_native(&s, &big, o3_gemm_f32, samples);
    if (t == 1) base_k = tk, base_n = tn;
    char id[64], label[96];
    snprintf(id, sizeof id, "gemm1024.kiln.t%d", t);
    snprintf(label, sizeof label, "kiln, %d threads", t);
    bench_add_value(r, id, label, "GFLOP/s", flops / tk * 1e-9, "speedup %.2fx over 1 thread",
                    base_k / tk);
    snprintf(id, sizeof id, "gemm1024.o3.t%d", t);
    snprintf(label, sizeof label, "native -O3 -march=native, %d threads", t);
    bench_add_value(r, id, label, "GFLOP/s", flops / tn * 1e-9, "speedup %.2fx; kiln at %.2f of it",
                    base_n / tn, tn / tk);
    if (t != 1 && t != cores) side_close(&s);
  }

  side_close(&one);
  side_close(&all);
  kiln_dmem_release(dm);
  kiln_engine_release(engine);
  return bench_end(r);
}
