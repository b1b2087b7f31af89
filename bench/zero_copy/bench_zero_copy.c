/* bench_zero_copy: the headline measurement of issue 3 (section 4).
 *
 * A Wasm guest (guests/gpu/zero_copy_bench.c) fills tensors in its own
 * linear memory and runs ops on them through the kiln_gpu imports; the
 * host times each guest call. Three modes, side by side in one run:
 *
 *   mapped    the guest's memory is MAPPED: the device computes on the
 *             guest's bytes in place (CUDA: registered, device pointer ==
 *             host pointer == memory base + guest offset).
 *   resident  the guest places its tensors RESIDENT: the device keeps a
 *             copy and kiln moves exactly the bytes that changed (inputs
 *             once, results back at each sync).
 *   copy      the explicit-copy baseline of wasi-nn runtimes: the host
 *             copies the guest's inputs into a separate staging buffer
 *             (its own memory, allocated at the first call: "load the
 *             graph"), computes there, and copies the result back into the
 *             guest (set_input/compute/get_output). The staging memory is
 *             RESIDENT on the device (--copy-staging mapped: MAPPED). Note
 *             that RESIDENT staging pays kiln's write tracking: the host's
 *             memcpy into it faults once per clean page, every step
 *             ("write_faults_per_step" in the JSON).
 *
 * Figures, for each mode: pointer identity (guest offset, host pointer,
 * device pointer as the host and as the guest see it), RSS growth around
 * the ops (/proc/self/statm, before the first op to after the last), op
 * latency p50/p99 (submit + sync + the guest reading the result through
 * its pointer), bytes moved per step (device transfers plus host copies).
 *
 *   gemm      c = a @ b, n x n, f32 and bf16 inputs (f32 out), n = 256 ..
 *             4096 (2048 f32: two 16 MiB inputs). Inputs written once
 *             before timing; each step runs the GEMM and reads c.
 *   decode    y = W x, W 4096 x 4096 f32 (64 MiB) reused for 200 steps;
 *             the guest writes x before and reads y after every step.
 *             Modes: mapped; resident (W resident, x and y mapped);
 *             resident_all (W, x and y resident: x goes up and y comes
 *             back every step, like the native program's cudaMemcpy);
 *             copy.
 *   empty op  NOP submitted from the guest vs kiln_device_submit from C.
 *
 * With --device cuda the native baseline (zero_copy_native_cuda, from
 * native_cuda.cu, built when nvcc exists) runs in the same invocation and
 * its figures are embedded under "native", with the ratios of issue 3.
 *
 * Usage: bench_zero_copy [--quick] [--json PATH] [--device SPEC]
 *          [--cpu-mirror] [--sizes 256,512,...] [--decode-n N]
 *          [--decode-steps N] [--no-native]
 *          [--copy-staging resident|mapped]
 * Writes build/bench/zero_copy.json (bench_util.h); plot with
 * bench/zero_copy/plot.py. */
#define _GNU_SOURCE
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>

#include "bench_util.h"
#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln/memory.h"

#ifndef KILN_GUEST_DIR
#error "KILN_GUEST_DIR must name the folder of built guests"
#endif
#ifndef KILN_NATIVE_CUDA
#define KILN_NATIVE_CUDA ""
#endif

#define CHECK(expr)                                                        \
  do {                                                                     \
    kiln_status s_ = (expr);                                               \
    if (s_)                                                                \
      bench_die("%s:%d: %s", __FILE__, __LINE__, kiln_status_message(s_)); \
  } while (0)

enum { MODE_MAPPED, MODE_RESIDENT, MODE_COPY, MODE_COUNT };
static const char *const kModeName[MODE_COUNT] = {"mapped", "resident",
                                                  "copy"};

/* ---- State ---------------------------------------------------------------- */

typedef struct staging {
  kiln_memory *mem;
  uint64_t a, b, c;  /* offsets of the staging tensors */
  uint32_t n, k, dtype;
} staging;

static struct {
  bench_report *r;
  const char *device_spec;
  bool cpu_mirror, no_native;
  kiln_placement staging_placement;
  int sizes[16], nsizes;
  int decode_n, decode_steps;
  double budget_ns;
  int min_steps, max_steps;

  kiln_device *dev;
  kiln_gpu_session *sess;
  kiln_memory *mem;
  kiln_instance *inst;
  staging gstage, dstage;
  uint64_t host_copy_bytes; /* memcpy'd by the copy baseline, all time */
} B;

static uint64_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%llu %llu", &size, &res) != 2) res = 0;
    fclose(f);
  }
  return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static kiln_func_ref func(const char *name) {
  kiln_func_ref f;
  CHECK(kiln_instance_func(B.inst, name, &f));
  return f;
}

/* Calls a guest export with up to two i32 arguments; returns its result
 * (i32, or the low bits of i64). Dies on a trap. */
static uint64_t call(kiln_func_ref f, int nargs, uint32_t a0, uint32_t a1) {
  kiln_val args[2] = {kiln_val_i32(a0), kiln_val_i32(a1)}, res = {0};
  const kiln_functype *t = kiln_func_type(f);
  CHECK(kiln_func_call(f, args, (size_t)nargs, &res, t->result_count));
  return t->result_count == 0 ? 0
         : res.type == KILN_I64 ? res.of.i64
                                : res.of.i32;
}

static void call_ok(kiln_func_ref f, const char *what, int nargs, uint32_t a0,
                    uint32_t a1) {
  int32_t r = (int32_t)call(f, nargs, a0, a1);
  if (r)
    bench_die("%s returned %d: %s", what, r,
              kiln_gpu_session_last_error(B.sess));
}

static char *hex(uint64_t v, char *buf) {
  sprintf(buf, "0x%" PRIx64, v);
  return buf;
}

/* ---- The copy baseline (host imports "bench.*") ------------------------ */

static void staging_release(staging *s) {
  if (!s->mem) return;
  kiln_device_detach(B.dev, s->mem);
  kiln_memory_release(s->mem);
  memset(s, 0, sizeof *s);
}

/* A separate buffer of `bytes`, RESIDENT on the device: what a wasi-nn
 * runtime's framework tensor is. */
static int staging_make(staging *s, uint64_t bytes) {
  staging_release(s);
  uint64_t pages = (bytes + KILN_WASM_PAGE_SIZE - 1) / KILN_WASM_PAGE_SIZE;
  kiln_memory_options mo = {.initial_pages = pages, .maximum_pages = pages,
                            .name = "staging"};
  kiln_status st = kiln_memory_create(&mo, &s->mem);
  if (!st) st = kiln_device_attach(B.dev, s->mem);
  if (!st && B.staging_placement == KILN_PLACEMENT_RESIDENT)
    st = kiln_device_place(B.dev, s->mem, 0, pages * KILN_WASM_PAGE_SIZE,
                           KILN_PLACEMENT_RESIDENT);
  if (st) {
    fprintf(stderr, "staging: %s\n", kiln_status_message(st));
    kiln_status_free(st);
    return -1;
  }
  return 0;
}

static uint64_t round64k(uint64_t v) { return (v + 65535) & ~(uint64_t)65535; }

static void *guest_ptr(kiln_caller *c, uint32_t off, uint64_t len) {
  return kiln_memory_range_or_null(kiln_caller_memory(c, 0), off, len);
}

static void *stage_ptr(staging *s, uint64_t off, uint64_t len) {
  return kiln_memory_range_or_null(s->mem, off, len);
}

static int32_t submit_sync(const kiln_op *op) {
  kiln_status st = kiln_device_submit(B.dev, op, NULL);
  if (!st) st = kiln_device_sync(B.dev, NULL);
  if (st) {
    fprintf(stderr, "copy baseline: %s\n", kiln_status_message(st));
    kiln_status_free(st);
    return -1;
  }
  return 0;
}

static uint32_t host_copy_gemm(kiln_caller *c, uint32_t a, uint32_t b,
                               uint32_t cc, uint32_t n, uint32_t dtype) {
  staging *s = &B.gstage;
  uint64_t esz = dtype == KILN_DTYPE_F32 ? 4 : 2;
  uint64_t in = (uint64_t)n * n * esz, out = (uint64_t)n * n * 4;
  if (!s->mem || s->n != n || s->dtype != dtype) {
    if (staging_make(s, 2 * round64k(in) + round64k(out))) return (uint32_t)-1;
    s->n = n;
    s->dtype = dtype;
    s->a = 0;
    s->b = round64k(in);
    s->c = 2 * round64k(in);
  }
  void *ga = guest_ptr(c, a, in), *gb = guest_ptr(c, b, in),
       *gc = guest_ptr(c, cc, out);
  void *sa = stage_ptr(s, s->a, in), *sb = stage_ptr(s, s->b, in),
       *sc = stage_ptr(s, s->c, out);
  if (!ga || !gb || !gc || !sa || !sb || !sc) return (uint32_t)-2;
  memcpy(sa, ga, in); /* set_input */
  memcpy(sb, gb, in);
  int64_t shape[2] = {n, n};
  kiln_op op = {.kind = KILN_OP_GEMM, .alpha = 1.0f};
  op.a = kiln_tensor_make(s->mem, s->a, (kiln_dtype)dtype, 2, shape);
  op.b = kiln_tensor_make(s->mem, s->b, (kiln_dtype)dtype, 2, shape);
  op.c = kiln_tensor_make(s->mem, s->c, KILN_DTYPE_F32, 2, shape);
  if (submit_sync(&op)) return (uint32_t)-3; /* compute */
  memcpy(gc, sc, out);                       /* get_output */
  B.host_copy_bytes += 2 * in + out;
  return 0;
}

static uint32_t host_copy_load_w(kiln_caller *c, uint32_t w, uint32_t n,
                                 uint32_t k) {
  staging *s = &B.dstage;
  uint64_t wb = (uint64_t)n * k * 4;
  if (staging_make(s, round64k(wb) + round64k((uint64_t)k * 4) +
                          round64k((uint64_t)n * 4)))
    return (uint32_t)-1;
  s->n = n;
  s->k = k;
  s->a = 0;
  s->b = round64k(wb);
  s->c = s->b + round64k((uint64_t)k * 4);
  void *gw = guest_ptr(c, w, wb), *sw = stage_ptr(s, 0, wb);
  if (!gw || !sw) return (uint32_t)-2;
  memcpy(sw, gw, wb); /* loading the graph copies the weights once */
  B.host_copy_bytes += wb;
  return 0;
}

static uint32_t host_copy_gemv(kiln_caller *c, uint32_t x, uint32_t y) {
  staging *s = &B.dstage;
  if (!s->mem) return (uint32_t)-1;
  uint64_t xb = (uint64_t)s->k * 4, yb = (uint64_t)s->n * 4;
  void *gx = guest_ptr(c, x, xb), *gy = guest_ptr(c, y, yb);
  void *sx = stage_ptr(s, s->b, xb), *sy = stage_ptr(s, s->c, yb);
  if (!gx || !gy || !sx || !sy) return (uint32_t)-2;
  memcpy(sx, gx, xb);
  int64_t ws[2] = {s->n, s->k}, xs[2] = {1, s->k}, ys[2] = {1, s->n};
  kiln_op op = {.kind = KILN_OP_GEMV, .alpha = 1.0f};
  op.a = kiln_tensor_make(s->mem, s->a, KILN_DTYPE_F32, 2, ws);
  op.b = kiln_tensor_make(s->mem, s->b, KILN_DTYPE_F32, 2, xs);
  op.c = kiln_tensor_make(s->mem, s->c, KILN_DTYPE_F32, 2, ys);
  if (submit_sync(&op)) return (uint32_t)-3;
  memcpy(gy, sy, yb);
  B.host_copy_bytes += xb + yb;
  return 0;
}

static kiln_status define_bench_imports(kiln_linker *l) {
  static const kiln_valtype p5[5] = {KILN_I32, KILN_I32, KILN_I32, KILN_I32,
                                     KILN_I32};
  static const kiln_valtype r1[1] = {KILN_I32};
  struct {
    const char *name;
    void *fn;
    uint32_t n;
  } fs[] = {{"copy_gemm", (void *)host_copy_gemm, 5},
            {"copy_load_w", (void *)host_copy_load_w, 3},
            {"copy_gemv", (void *)host_copy_gemv, 2}};
  for (size_t i = 0; i < 3; i++) {
    kiln_host_func f = {.module = "bench",
                        .name = fs[i].name,
                        .type = {fs[i].n, 1, p5, r1},
                        .native = fs[i].fn};
    KILN_RETURN_IF_ERROR(kiln_linker_define_func(l, &f));
  }
  return KILN_OK;
}

/* ---- Measurement helpers ------------------------------------------------ */

typedef struct counters {
  uint64_t to_device, to_host, host_copy, rss, faults;
} counters;

static counters snap(void) {
  kiln_device_stats ds;
  kiln_device_get_stats(B.dev, &ds);
  return (counters){ds.bytes_to_device, ds.bytes_to_host, B.host_copy_bytes,
                    rss_bytes(), ds.write_faults};
}

/* Pointer identity of byte `off` of `m`: host pointer through the one
 * checked function, device address as the host asks for it, and (for the
 * guest's own memory) as the guest's kiln_gpu.address import reports it. */
static cJSON *identity(kiln_memory *m, uint64_t off, bool ask_guest) {
  char b[32];
  cJSON *o = cJSON_CreateObject();
  void *host = NULL;
  CHECK(kiln_memory_range(m, off, 1, &host));
  uint64_t dev = 0;
  CHECK(kiln_device_address(B.dev, m, off, &dev));
  cJSON_AddStringToObject(o, "memory", kiln_memory_name(m));
  cJSON_AddNumberToObject(o, "guest_offset", (double)off);
  cJSON_AddStringToObject(o, "memory_base",
                          hex((uint64_t)(uintptr_t)kiln_memory_base(m), b));
  cJSON_AddStringToObject(o, "host_ptr", hex((uint64_t)(uintptr_t)host, b));
  cJSON_AddStringToObject(o, "device_ptr", hex(dev, b));
  if (ask_guest) {
    uint64_t g = call(func("device_address"), 1, (uint32_t)off, 0);
    cJSON_AddStringToObject(o, "device_ptr_seen_by_guest", hex(g, b));
  }
  cJSON_AddBoolToObject(o, "host_is_base_plus_offset",
                        (uint8_t *)host == kiln_memory_base(m) + off);
  cJSON_AddBoolToObject(o, "device_equals_host",
                        dev == (uint64_t)(uintptr_t)host);
  cJSON_AddStringToObject(o, "placement",
                          kiln_placement_name(
                              kiln_device_placement(B.dev, m, off)));
  return o;
}

static void add_stats(cJSON *o, bench_stats s, double first_us) {
  cJSON_AddNumberToObject(o, "steps", s.n);
  cJSON_AddNumberToObject(o, "first_us", first_us);
  cJSON_AddNumberToObject(o, "p50_us", s.p50);
  cJSON_AddNumberToObject(o, "p99_us", s.p99);
  cJSON_AddNumberToObject(o, "min_us", s.min);
  cJSON_AddNumberToObject(o, "max_us", s.max);
  cJSON_AddNumberToObject(o, "mean_us", s.mean);
}

static void add_moved(cJSON *o, counters before, counters first,
                      counters after, int steps) {
  double dev = (double)(after.to_device + after.to_host - first.to_device -
                        first.to_host) / steps;
  double host = (double)(after.host_copy - first.host_copy) / steps;
  cJSON_AddNumberToObject(o, "bytes_moved_per_step", dev + host);
  cJSON_AddNumberToObject(o, "device_bytes_per_step", dev);
  cJSON_AddNumberToObject(o, "host_copy_bytes_per_step", host);
  cJSON_AddNumberToObject(o, "first_step_bytes_moved",
                          (double)(first.to_device + first.to_host +
                                   first.host_copy - before.to_device -
                                   before.to_host - before.host_copy));
  cJSON_AddNumberToObject(o, "rss_growth_bytes",
                          (double)((int64_t)after.rss - (int64_t)before.rss));
  /* Without the first step, which pays one-time setup (cuBLAS picking a
   * kernel for a new shape, the copy baseline's staging memory). */
  cJSON_AddNumberToObject(o, "rss_growth_after_first_bytes",
                          (double)((int64_t)after.rss - (int64_t)first.rss));
  cJSON_AddNumberToObject(o, "write_faults_per_step",
                          (double)(after.faults - first.faults) / steps);
}

/* ---- gemm ----------------------------------------------------------------- */

static void bench_gemm(cJSON *out, uint32_t dtype, int n) {
  const char *dname = dtype == KILN_DTYPE_F32 ? "f32" : "bf16";
  call_ok(func("gemm_setup"), "gemm_setup", 2, (uint32_t)n, dtype);
  uint32_t a_off = (uint32_t)call(func("gemm_a"), 0, 0, 0);
  uint32_t c_off = (uint32_t)call(func("gemm_c"), 0, 0, 0);
  uint64_t in_bytes = (uint64_t)n * n * (dtype == KILN_DTYPE_F32 ? 4 : 2);
  kiln_func_ref step = func("gemm_step"), copy_step = func("gemm_copy_step");
  for (int mode = 0; mode < MODE_COUNT; mode++) {
    call(func("gemm_clear"), 0, 0, 0);
    if (mode == MODE_RESIDENT)
      call_ok(func("gemm_place"), "gemm_place", 1, KILN_PLACEMENT_RESIDENT, 0);
    kiln_func_ref f = mode == MODE_COPY ? copy_step : step;
    counters before = snap();
    uint64_t t0 = bench_now_ns();
    call_ok(f, "gemm step", 0, 0, 0);
    double first_us = (double)(bench_now_ns() - t0) / 1e3;
    counters first = snap();
    double *v = malloc(sizeof(double) * (size_t)B.max_steps);
    int steps = 0;
    uint64_t start = bench_now_ns();
    while (steps < B.max_steps &&
           (steps < B.min_steps ||
            (double)(bench_now_ns() - start) < B.budget_ns)) {
      uint64_t s0 = bench_now_ns();
      call_ok(f, "gemm step", 0, 0, 0);
      v[steps++] = (double)(bench_now_ns() - s0) / 1e3;
    }
    counters after = snap();
    int wrong = (int)call(func("gemm_check"), 0, 0, 0);
    bench_stats s = bench_stats_of(v, steps);
    free(v);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "dtype", dname);
    cJSON_AddNumberToObject(o, "n", n);
    cJSON_AddStringToObject(o, "mode", kModeName[mode]);
    cJSON_AddNumberToObject(o, "input_bytes", (double)in_bytes);
    add_stats(o, s, first_us);
    cJSON_AddNumberToObject(o, "gflops_p50",
                            2.0 * n * (double)n * n / (s.p50 * 1e3));
    add_moved(o, before, first, after, steps);
    cJSON_AddBoolToObject(o, "correct", wrong == 0);
    if (mode == MODE_COPY) {
      /* The guest's pointer never reaches the device: report the guest's
       * c and the staging copy the device computed on. */
      cJSON_AddItemToObject(o, "pointer", identity(B.mem, c_off, false));
      cJSON_AddItemToObject(o, "pointer_device_side",
                            identity(B.gstage.mem, B.gstage.c, false));
    } else {
      cJSON_AddItemToObject(o, "pointer", identity(B.mem, c_off, true));
      cJSON_AddItemToObject(o, "pointer_a", identity(B.mem, a_off, true));
    }
    cJSON_AddItemToArray(out, o);

    char id[96], label[96];
    snprintf(id, sizeof id, "gemm.%s.%d.%s", dname, n, kModeName[mode]);
    snprintf(label, sizeof label, "gemm %s %d %s", dname, n, kModeName[mode]);
    cJSON *pm = cJSON_GetObjectItem(o, "pointer");
    bench_add(B.r, id, label, "us", s,
              "%.1f GFLOP/s, %.3g MB moved/step, RSS %+.2f MB (%+.2f MB "
              "after step 1)%s%s",
              2.0 * n * (double)n * n / (s.p50 * 1e3),
              cJSON_GetObjectItem(o, "bytes_moved_per_step")->valuedouble / 1e6,
              cJSON_GetObjectItem(o, "rss_growth_bytes")->valuedouble / 1e6,
              cJSON_GetObjectItem(o, "rss_growth_after_first_bytes")->valuedouble /
                  1e6,
              mode != MODE_COPY &&
                      cJSON_IsTrue(cJSON_GetObjectItem(pm, "device_equals_host"))
                  ? ", dev ptr == host ptr"
                  : "",
              wrong ? ", WRONG RESULT" : "");
    if (wrong) bench_note(B.r, "%s: %d of 64 sampled elements wrong", label, wrong);
    if (mode == MODE_RESIDENT)
      call_ok(func("gemm_place"), "gemm_place", 1, KILN_PLACEMENT_MAPPED, 0);
  }
  staging_release(&B.gstage);
}

/* ---- decode ---------------------------------------------------------------- */

enum { DMODE_MAPPED, DMODE_RESIDENT, DMODE_RESIDENT_ALL, DMODE_COPY,
       DMODE_COUNT };
static const char *const kDecodeModeName[DMODE_COUNT] = {
    "mapped", "resident", "resident_all", "copy"};

static void bench_decode(cJSON *out) {
  int n = B.decode_n, steps = B.decode_steps;
  call_ok(func("decode_setup"), "decode_setup", 2, (uint32_t)n, (uint32_t)n);
  uint32_t w_off = (uint32_t)call(func("decode_w"), 0, 0, 0);
  uint32_t y_off = (uint32_t)call(func("decode_y"), 0, 0, 0);
  for (int mode = 0; mode < DMODE_COUNT; mode++) {
    bool placed = mode == DMODE_RESIDENT || mode == DMODE_RESIDENT_ALL;
    if (placed)
      call_ok(func("decode_place"), "decode_place", 2, KILN_PLACEMENT_RESIDENT,
              mode == DMODE_RESIDENT_ALL);
    counters before = snap();
    if (mode == DMODE_COPY)
      call_ok(func("decode_copy_load"), "decode_copy_load", 0, 0, 0);
    kiln_func_ref f = func(mode == DMODE_COPY ? "decode_copy_step"
                                              : "decode_step");
    uint64_t t0 = bench_now_ns();
    call_ok(f, "decode step", 1, 0, 0);
    double first_us = (double)(bench_now_ns() - t0) / 1e3;
    counters first = snap();
    double *v = malloc(sizeof(double) * (size_t)steps);
    uint64_t total0 = bench_now_ns();
    for (int i = 0; i < steps; i++) {
      uint64_t s0 = bench_now_ns();
      call_ok(f, "decode step", 1, (uint32_t)(i + 1), 0);
      v[i] = (double)(bench_now_ns() - s0) / 1e3;
    }
    double total_ms = (double)(bench_now_ns() - total0) / 1e6;
    counters after = snap();
    int wrong = (int)call(func("decode_check"), 1, (uint32_t)steps, 0);
    bench_stats s = bench_stats_of(v, steps);
    free(v);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mode", kDecodeModeName[mode]);
    cJSON_AddNumberToObject(o, "n", n);
    cJSON_AddNumberToObject(o, "k", n);
    cJSON_AddNumberToObject(o, "w_bytes", (double)n * n * 4);
    add_stats(o, s, first_us);
    cJSON_AddNumberToObject(o, "total_ms", total_ms);
    add_moved(o, before, first, after, steps);
    cJSON_AddBoolToObject(o, "correct", wrong == 0);
    cJSON_AddItemToObject(o, "pointer_w",
                          mode == DMODE_COPY
                              ? identity(B.dstage.mem, B.dstage.a, false)
                              : identity(B.mem, w_off, true));
    cJSON_AddItemToObject(o, "pointer_y", identity(B.mem, y_off, true));
    cJSON_AddItemToArray(out, o);

    char id[64], label[96];
    snprintf(id, sizeof id, "decode.%s", kDecodeModeName[mode]);
    snprintf(label, sizeof label, "decode y=Wx (W %d MiB) %s",
             (int)((double)n * n * 4 / 1048576), kDecodeModeName[mode]);
    bench_add(B.r, id, label, "us", s, "%d steps %.1f ms, %.3g MB moved/step%s",
              steps, total_ms,
              cJSON_GetObjectItem(o, "bytes_moved_per_step")->valuedouble / 1e6,
              wrong ? ", WRONG RESULT" : "");
    if (placed)
      call_ok(func("decode_place"), "decode_place", 2, KILN_PLACEMENT_MAPPED,
              mode == DMODE_RESIDENT_ALL);
  }
  /* The guest's own CPU work of a step (writing x, reading y: scalar code
   * from wasm2c), timed alone; the native program times the same loops. */
  {
    kiln_func_ref f = func("decode_cpu_only");
    double *v = malloc(sizeof(double) * (size_t)steps);
    for (int i = 0; i < steps; i++) {
      uint64_t s0 = bench_now_ns();
      call_ok(f, "decode_cpu_only", 1, (uint32_t)(i + 1), 0);
      v[i] = (double)(bench_now_ns() - s0) / 1e3;
    }
    bench_stats s = bench_stats_of(v, steps);
    free(v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "mode", "guest_cpu_only");
    cJSON_AddNumberToObject(o, "n", n);
    add_stats(o, s, 0);
    cJSON_AddItemToArray(out, o);
    bench_add(B.r, "decode.guest_cpu_only", "decode: the guest's CPU part alone",
              "us", s, "write x (%d f32) and read y, no GPU op", n);
  }
  staging_release(&B.dstage);
}

/* ---- empty op ---------------------------------------------------------------- */

static kiln_func_ref g_nop, g_nop_sync;

static void guest_nops(void *ctx, uint64_t iters) {
  (void)ctx;
  call_ok(g_nop, "nop_loop", 1, (uint32_t)iters, 0);
  kiln_status_free(kiln_device_sync(B.dev, NULL));
}
static void guest_nop_syncs(void *ctx, uint64_t iters) {
  (void)ctx;
  call_ok(g_nop_sync, "nop_sync_loop", 1, (uint32_t)iters, 0);
}
static void native_nops(void *ctx, uint64_t iters) {
  (void)ctx;
  kiln_op op = {.kind = KILN_OP_NOP};
  for (uint64_t i = 0; i < iters; i++) CHECK(kiln_device_submit(B.dev, &op, NULL));
  kiln_status_free(kiln_device_sync(B.dev, NULL));
}
static void native_nop_syncs(void *ctx, uint64_t iters) {
  (void)ctx;
  kiln_op op = {.kind = KILN_OP_NOP};
  for (uint64_t i = 0; i < iters; i++) {
    CHECK(kiln_device_submit(B.dev, &op, NULL));
    CHECK(kiln_device_sync(B.dev, NULL));
  }
}

static void bench_empty(cJSON *root) {
  g_nop = func("nop_loop");
  g_nop_sync = func("nop_sync_loop");
  int samples = B.r->quick ? 5 : 15;
  uint64_t target = B.r->quick ? 20000000 : 100000000;
  bench_stats gs = bench_per_iter(guest_nops, NULL, samples, target, 1 << 22);
  bench_stats ns = bench_per_iter(native_nops, NULL, samples, target, 1 << 22);
  bench_stats gss =
      bench_per_iter(guest_nop_syncs, NULL, samples, target, 1 << 20);
  bench_stats nss =
      bench_per_iter(native_nop_syncs, NULL, samples, target, 1 << 20);
  bench_add(B.r, "empty.guest_submit", "NOP submit from the guest", "ns", gs,
            NULL);
  bench_add(B.r, "empty.native_submit", "NOP kiln_device_submit from C", "ns",
            ns, NULL);
  bench_add(B.r, "empty.guest_submit_sync", "NOP submit+sync from the guest",
            "ns", gss, NULL);
  bench_add(B.r, "empty.native_submit_sync", "NOP submit+sync from C", "ns",
            nss, NULL);
  bench_add_value(B.r, "empty.overhead", "guest op overhead (p50 difference)",
                  "ns", gs.p50 - ns.p50, "target: <= 1000 ns");
  cJSON *o = cJSON_AddObjectToObject(root, "empty_op");
  cJSON_AddNumberToObject(o, "guest_submit_ns", gs.p50);
  cJSON_AddNumberToObject(o, "native_submit_ns", ns.p50);
  cJSON_AddNumberToObject(o, "guest_submit_sync_ns", gss.p50);
  cJSON_AddNumberToObject(o, "native_submit_sync_ns", nss.p50);
  cJSON_AddNumberToObject(o, "guest_overhead_ns", gs.p50 - ns.p50);
  cJSON_AddNumberToObject(o, "guest_overhead_with_sync_ns", gss.p50 - nss.p50);
}

/* ---- Native CUDA baseline ---------------------------------------------- */

static double best_kiln(cJSON *arr, const char *dtype, int n, char *mode_out) {
  double best = 0;
  cJSON *o;
  cJSON_ArrayForEach(o, arr) {
    cJSON *d = cJSON_GetObjectItem(o, "dtype");
    if (dtype && (!d || strcmp(d->valuestring, dtype))) continue;
    if (n && (int)cJSON_GetObjectItem(o, "n")->valuedouble != n) continue;
    double p = cJSON_GetObjectItem(o, "p50_us")->valuedouble;
    if (!cJSON_IsTrue(cJSON_GetObjectItem(o, "correct"))) continue;
    if (best == 0 || p < best) {
      best = p;
      strcpy(mode_out, cJSON_GetObjectItem(o, "mode")->valuestring);
    }
  }
  return best;
}

static void run_native(cJSON *root, cJSON *gemm, cJSON *decode) {
  const char *exe = KILN_NATIVE_CUDA;
  if (B.no_native) return;
  if (kiln_device_kind_of(B.dev) != KILN_DEVICE_CUDA) {
    bench_note(B.r, "native CUDA baseline not run: the device is not cuda");
    return;
  }
  if (!exe[0] || access(exe, X_OK) != 0) {
    bench_note(B.r, "native CUDA baseline not run: %s not built (needs nvcc; "
               "target zero_copy_native_cuda)", exe[0] ? exe : "binary");
    return;
  }
  char json[PATH_MAX], cmd[PATH_MAX * 2 + 512], sizes[256] = "";
  snprintf(json, sizeof json, "%s.native.json", B.r->json_path);
  size_t k = 0;
  for (int i = 0; i < B.nsizes; i++)
    k += (size_t)snprintf(sizes + k, sizeof sizes - k, "%s%d", i ? "," : "",
                          B.sizes[i]);
  snprintf(cmd, sizeof cmd, "'%s' --json '%s' --sizes %s --decode-n %d "
           "--decode-steps %d%s", exe, json, sizes, B.decode_n,
           B.decode_steps, B.r->quick ? " --quick" : "");
  fprintf(stderr, "running the native baseline: %s\n", cmd);
  fflush(NULL);
  if (system(cmd) != 0) {
    bench_note(B.r, "native CUDA baseline failed: %s", cmd);
    return;
  }
  FILE *f = fopen(json, "r");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc((size_t)len + 1);
  size_t got = fread(text, 1, (size_t)len, f);
  text[got] = 0;
  fclose(f);
  cJSON *nat = cJSON_Parse(text);
  free(text);
  if (!nat) return;
  cJSON_AddItemToObject(root, "native", nat);

  /* The ratios issue 3 asks for. */
  cJSON *cmp = cJSON_AddObjectToObject(root, "comparison");
  cJSON *ng = cJSON_GetObjectItem(nat, "gemm");
  const char *dts[2] = {"f32", "bf16"};
  for (int d = 0; d < 2; d++) {
    int n = B.sizes[B.nsizes - 1];
    char mode[32] = "";
    double kiln_us = best_kiln(gemm, dts[d], n, mode);
    /* Like for like: kiln's modes end with the guest reading c through its
     * pointer, so the native program brings c back to host memory too
     * ("device_readback": inputs on the GPU, GEMM, c copied back). The
     * bare GEMM ("device") is reported beside it. */
    double nat_us = 0, nat_bare_us = 0;
    cJSON *o;
    cJSON_ArrayForEach(o, ng) {
      if (strcmp(cJSON_GetObjectItem(o, "dtype")->valuestring, dts[d]) ||
          (int)cJSON_GetObjectItem(o, "n")->valuedouble != n)
        continue;
      const char *m = cJSON_GetObjectItem(o, "mode")->valuestring;
      double p = cJSON_GetObjectItem(o, "p50_us")->valuedouble;
      if (!strcmp(m, "device_readback")) nat_us = p;
      if (!strcmp(m, "device")) nat_bare_us = p;
    }
    if (kiln_us > 0 && nat_us > 0) {
      char key[64];
      snprintf(key, sizeof key, "gemm_%s_%d", dts[d], n);
      cJSON *c = cJSON_AddObjectToObject(cmp, key);
      cJSON_AddStringToObject(c, "kiln_best_mode", mode);
      cJSON_AddNumberToObject(c, "kiln_p50_us", kiln_us);
      cJSON_AddNumberToObject(c, "native_p50_us", nat_us);
      cJSON_AddStringToObject(c, "native_mode", "device_readback");
      cJSON_AddNumberToObject(c, "native_gemm_only_p50_us", nat_bare_us);
      cJSON_AddNumberToObject(c, "ratio", kiln_us / nat_us);
      cJSON_AddStringToObject(c, "target", "ratio <= 1.05");
      char label[96];
      snprintf(label, sizeof label, "gemm %s %d: kiln best / native", dts[d], n);
      bench_add_value(B.r, key, label, "x", kiln_us / nat_us,
                      "kiln %s %.1f us, native %.1f us with c back (GEMM "
                      "alone %.1f us); target <= 1.05", mode, kiln_us, nat_us,
                      nat_bare_us);
    }
  }
  char mode[32] = "";
  double kd = best_kiln(decode, NULL, 0, mode);
  cJSON *nd = cJSON_GetObjectItem(nat, "decode");
  double best_nat = 0;
  cJSON *o;
  double nat_cpu = 0;
  cJSON_ArrayForEach(o, nd) {
    double p = cJSON_GetObjectItem(o, "p50_us")->valuedouble;
    if (!strcmp(cJSON_GetObjectItem(o, "mode")->valuestring, "cpu_only")) {
      nat_cpu = p;   /* the CPU part alone, not a way to run the step */
      continue;
    }
    if (best_nat == 0 || p < best_nat) best_nat = p;
  }
  if (kd > 0 && best_nat > 0) {
    cJSON *c = cJSON_AddObjectToObject(cmp, "decode");
    cJSON_AddStringToObject(c, "kiln_best_mode", mode);
    cJSON_AddNumberToObject(c, "kiln_p50_us", kd);
    cJSON_AddNumberToObject(c, "native_best_p50_us", best_nat);
    cJSON_AddNumberToObject(c, "ratio", kd / best_nat);
    cJSON_AddStringToObject(c, "target", "ratio <= 1.1");
    bench_add_value(B.r, "decode.ratio", "decode: kiln best / native best",
                    "x", kd / best_nat,
                    "kiln %s %.1f us, native %.1f us (target <= 1.1)", mode, kd,
                    best_nat);
    /* How much of the difference is the guest's own CPU work. */
    double gcpu = 0;
    cJSON *kdec = cJSON_GetObjectItem(root, "decode");
    cJSON_ArrayForEach(o, kdec) {
      if (!strcmp(cJSON_GetObjectItem(o, "mode")->valuestring, "guest_cpu_only"))
        gcpu = cJSON_GetObjectItem(o, "p50_us")->valuedouble;
    }
    if (gcpu > 0 && nat_cpu > 0) {
      cJSON_AddNumberToObject(c, "guest_cpu_part_p50_us", gcpu);
      cJSON_AddNumberToObject(c, "native_cpu_part_p50_us", nat_cpu);
      bench_add_value(B.r, "decode.cpu_part", "decode: CPU part, guest - native",
                      "us", gcpu - nat_cpu,
                      "guest %.2f us, native %.2f us (writing x, reading y)",
                      gcpu, nat_cpu);
    }
  }
  cJSON *ne = cJSON_GetObjectItem(nat, "empty_kernel");
  cJSON *ke = cJSON_GetObjectItem(root, "empty_op");
  if (ne && ke) {
    cJSON *c = cJSON_AddObjectToObject(cmp, "empty_op");
    double g = cJSON_GetObjectItem(ke, "guest_submit_sync_ns")->valuedouble;
    double l = cJSON_GetObjectItem(ne, "launch_sync_ns")->valuedouble;
    cJSON_AddNumberToObject(c, "kiln_guest_submit_sync_ns", g);
    cJSON_AddNumberToObject(c, "native_launch_sync_ns", l);
    cJSON_AddNumberToObject(c, "difference_ns", g - l);
  }
}

/* ---- main ------------------------------------------------------------------- */

static void parse_args(void) {
  B.device_spec = "auto";
  B.staging_placement = KILN_PLACEMENT_RESIDENT;
  int defaults[] = {256, 512, 1024, 2048, 4096};
  int quick[] = {256, 512};
  if (B.r->quick) {
    memcpy(B.sizes, quick, sizeof quick);
    B.nsizes = 2;
  } else {
    memcpy(B.sizes, defaults, sizeof defaults);
    B.nsizes = 5;
  }
  B.decode_n = B.r->quick ? 2048 : 4096;
  B.decode_steps = B.r->quick ? 20 : 200;
  for (int i = 1; i < B.r->argc; i++) {
    const char *a = B.r->argv[i];
    const char *v = i + 1 < B.r->argc ? B.r->argv[i + 1] : NULL;
    if (!strcmp(a, "--device") && v) {
      B.device_spec = v;
      i++;
    } else if (!strcmp(a, "--cpu-mirror")) {
      B.cpu_mirror = true;
    } else if (!strcmp(a, "--no-native")) {
      B.no_native = true;
    } else if (!strcmp(a, "--copy-staging") && v) {
      if (!strcmp(v, "mapped"))
        B.staging_placement = KILN_PLACEMENT_MAPPED;
      else if (strcmp(v, "resident"))
        bench_die("--copy-staging takes resident or mapped");
      i++;
    } else if (!strcmp(a, "--sizes") && v) {
      B.nsizes = 0;
      char *copy = strdup(v), *save = NULL;
      for (char *t = strtok_r(copy, ",", &save); t && B.nsizes < 16;
           t = strtok_r(NULL, ",", &save)) {
        int n = atoi(t);
        if (n < 16 || n > 8192 || n % 16) bench_die("bad size '%s'", t);
        B.sizes[B.nsizes++] = n;
      }
      free(copy);
      i++;
    } else if (!strcmp(a, "--decode-n") && v) {
      B.decode_n = atoi(v);
      i++;
    } else if (!strcmp(a, "--decode-steps") && v) {
      B.decode_steps = atoi(v);
      i++;
    } else {
      bench_die("unknown option '%s' (see the comment at the top of "
                "bench/zero_copy/bench_zero_copy.c)", a);
    }
  }
  if (B.decode_n < 16 || B.decode_n > 8192 || B.decode_steps < 1)
    bench_die("bad --decode-n or --decode-steps");
  B.budget_ns = B.r->quick ? 3e8 : 3e9;
  B.min_steps = B.r->quick ? 3 : 10;
  B.max_steps = B.r->quick ? 20 : 200;
}

int main(int argc, char **argv) {
  B.r = bench_begin("zero_copy", argc, argv);
  parse_args();

  kiln_device_options dopt;
  kiln_device_options_init(&dopt);
  dopt.spec = B.device_spec;
  dopt.cpu_mirror = B.cpu_mirror;
  CHECK(kiln_device_open(&dopt, &B.dev));
  fprintf(stderr, "device: %s\n", kiln_device_describe(B.dev));
  cJSON_AddStringToObject(B.r->root, "device", kiln_device_describe(B.dev));
  cJSON_AddStringToObject(B.r->root, "device_kind",
                          kiln_device_kind_of(B.dev) == KILN_DEVICE_CUDA
                              ? "cuda"
                              : B.cpu_mirror ? "cpu (mirror)" : "cpu");

  kiln_engine_options eo;
  kiln_engine_options_init(&eo);
  kiln_engine *e = NULL;
  CHECK(kiln_engine_create(&eo, &e));
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/gpu_zero_copy_bench.wasm", KILN_GUEST_DIR);
  kiln_module *m = NULL;
  CHECK(kiln_module_load_file(e, path, &m));
  uint64_t min_pages = 2;
  for (size_t i = 0; i < kiln_module_import_count(m); i++) {
    const kiln_import *im = kiln_module_import(m, i);
    if (im->type.kind == KILN_EXTERN_MEMORY) min_pages = im->type.of.memory.min;
  }
  kiln_memory_options mo = {.initial_pages = min_pages,
                            .maximum_pages = KILN_MEMORY_MAX_PAGES,
                            .name = "guest"};
  CHECK(kiln_memory_create(&mo, &B.mem));

  kiln_gpu_session_options so;
  kiln_gpu_session_options_init(&so);
  so.allow_address_query = true;
  CHECK(kiln_gpu_session_create(B.dev, &so, &B.sess));
  CHECK(kiln_gpu_session_bind_memory(B.sess, B.mem));
  kiln_linker *l = NULL;
  CHECK(kiln_linker_create(e, &l));
  CHECK(kiln_linker_define_memory(l, "env", "memory", B.mem));
  CHECK(kiln_gpu_define(l, B.sess));
  CHECK(define_bench_imports(l));
  CHECK(kiln_instance_create(m, l, NULL, &B.inst));

  bench_note(B.r, "latency: one guest call = submit + sync + the guest "
             "reading the result through its own pointer; gemm inputs are "
             "written once before timing (decode writes x every step)");
  bench_note(B.r, "copy mode: the host copies guest inputs into a separate "
             "staging memory (%s on the device, made at the first call), "
             "computes there and copies the result back, as wasi-nn runtimes "
             "do; RSS growth includes that staging memory",
             kiln_placement_name(B.staging_placement));
  cJSON_AddStringToObject(B.r->root, "copy_staging",
                          kiln_placement_name(B.staging_placement));
  bench_note(B.r, "bytes moved per step: device transfers (kiln_device_stats) "
             "plus host memcpy of the copy baseline, after the first step");

  cJSON *gemm = cJSON_AddArrayToObject(B.r->root, "gemm");
  const uint32_t dtypes[2] = {KILN_DTYPE_F32, KILN_DTYPE_BF16};
  for (int d = 0; d < 2; d++) {
    bench_section(B.r, d == 0 ? "gemm f32 (c = a @ b, n x n)"
                              : "gemm bf16 inputs, f32 out");
    for (int i = 0; i < B.nsizes; i++) bench_gemm(gemm, dtypes[d], B.sizes[i]);
  }
  bench_section(B.r, "decode step: y = W x, the guest writes x, reads y");
  cJSON *decode = cJSON_AddArrayToObject(B.r->root, "decode");
  bench_decode(decode);
  bench_section(B.r, "empty op");
  bench_empty(B.r->root);
  bench_section(B.r, "against native CUDA");
  run_native(B.r->root, gemm, decode);

  int rc = bench_end(B.r);
  kiln_instance_release(B.inst);
  kiln_linker_release(l);
  kiln_gpu_session_release(B.sess);
  kiln_memory_release(B.mem);
  kiln_device_release(B.dev);
  kiln_module_release(m);
  kiln_engine_release(e);
  return rc;
}
