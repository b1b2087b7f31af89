/* bench_engine: the engine figures of issue 2, each beside a baseline
 * measured in the same run.
 *
 * 1. Call cost. Host to guest: an exported (i32, i32) -> i32 "add" called
 *    through kiln_instance_call (by name), kiln_func_call (looked up once)
 *    and the typed fast path (kiln_instance_native inside one
 *    kiln_instance_run), against a native C function of the same signature
 *    called through a function pointer. Guest to host: a guest loop calling
 *    a host import (native and generic conventions), against a C loop
 *    calling the same host function through a pointer.
 * 2. Instantiate a module with about 1 MB of code (guests/bench/gen_big.py)
 *    from a warm cache: in a new process (what `kiln run` pays: fork per
 *    sample, the shared object not mapped yet) and repeated in one process.
 * 3. The cache hit path: kiln_module_load of a cached module (hash the
 *    bytes, parse and validate, look the entry up and check the artifact's
 *    hash, dlopen), with its parts timed on their own.
 * 4. Compile time of guests/bench/interp.c (a bytecode interpreter, 1350
 *    lines of C): clang to wasm32-wasi, then kiln's wasm2c + cc on a cold
 *    cache, by stage, at cc -O2 (the default), -O1 and -O0.
 * 5. Peers: wasmtime from PyPI on the same guests (bench/peers/), when
 *    installed; KILN_BENCH_PEERS=0 skips it.
 *
 * The persistent cache is private to the benchmarks: $KILN_CACHE_DIR (set
 * by scripts/bench.sh to build/bench/cache), else KILN_BENCH_DIR/cache.
 * Cold-cache compiles use fresh folders under KILN_BENCH_DIR, removed after.
 * KILN_CC, when set, is the C compiler of every engine made here.
 *
 * Usage: bench_engine [--quick] [--json PATH] */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench_util.h"
#include "kiln/engine.h"
#include "kiln/wasi.h"

#ifndef KILN_GUEST_DIR
#error "KILN_GUEST_DIR must name the folder of built guests"
#endif
#ifndef KILN_WASM_CLANG
#define KILN_WASM_CLANG "clang"
#endif

extern char **environ;

#define CHECK(expr)                                                       \
  do {                                                                    \
    kiln_status s_ = (expr);                                              \
    if (s_) bench_die("%s:%d: %s", __FILE__, __LINE__, kiln_status_message(s_)); \
  } while (0)

static struct {
  int quick;
  int call_samples;      /* batches per call-cost figure */
  uint64_t call_target;  /* ns per batch */
  int proc_samples;      /* new processes per figure */
  int inst_samples;      /* in-process instantiate samples */
  int clang_reps, compile_reps;
  char cache_dir[PATH_MAX];
  char calls[PATH_MAX], interp[PATH_MAX], big[PATH_MAX];
} cfg;

static void guest_path(char *out, const char *name) {
  snprintf(out, PATH_MAX, "%s/%s.wasm", KILN_GUEST_DIR, name);
  if (access(out, R_OK) != 0)
    bench_die("%s is missing: build the target kiln_bench_guests "
              "(scripts/bench.sh does)", out);
}

static kiln_engine *new_engine(const char *cache_dir, kiln_progress_fn progress,
                               void *user) {
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  o.cache_dir = cache_dir;
  o.progress = progress;
  o.progress_user = user;
  kiln_engine *e = NULL;
  CHECK(kiln_engine_create(&o, &e));
  return e;
}

static uint64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) bench_die("cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc((size_t)n + 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) bench_die("cannot read %s", path);
  fclose(f);
  *size = (size_t)n;
  return buf;
}

/* A linker with WASI (output to /dev/null) for the wasi-libc guests. */
typedef struct wasi_env {
  kiln_wasi *wasi;
  kiln_linker *linker;
} wasi_env;

static wasi_env wasi_env_create(kiln_engine *e) {
  wasi_env w;
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  o.stdin_fd = o.stdout_fd = o.stderr_fd = devnull;
  CHECK(kiln_wasi_create(&o, &w.wasi));
  close(devnull);
  CHECK(kiln_linker_create(e, &w.linker));
  CHECK(kiln_wasi_define(w.wasi, w.linker));
  return w;
}

static void wasi_env_release(wasi_env *w) {
  kiln_linker_release(w->linker);
  kiln_wasi_release(w->wasi);
}

/* ---- Samples taken in child processes ------------------------------------- */

/* Runs fn in a fork()ed child, which fills up to n doubles; returns them in
 * out. The child starts with this process's memory but not with shared
 * objects this process has not loaded yet: call it before loading the
 * modules measured. */
typedef void (*child_fn)(void *ctx, double *out, int n);

static void in_child(child_fn fn, void *ctx, double *out, int n) {
  int fds[2];
  if (pipe(fds) != 0) bench_die("pipe: %s", strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) bench_die("fork: %s", strerror(errno));
  if (pid == 0) {
    close(fds[0]);
    double *v = calloc((size_t)n, sizeof(double));
    fn(ctx, v, n);
    ssize_t want = (ssize_t)(sizeof(double) * (size_t)n);
    _exit(write(fds[1], v, (size_t)want) == want ? 0 : 3);
  }
  close(fds[1]);
  size_t want = sizeof(double) * (size_t)n, got = 0;
  while (got < want) {
    ssize_t r = read(fds[0], (char *)out + got, want - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fds[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (got != want || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    bench_die("a measuring child process failed (status %d)", st);
}

/* Stage times of one compile, from the engine's progress callback. */
typedef struct stages {
  uint64_t wasm2c, cc, done;
} stages;

static void on_progress(void *user, const char *module, const char *stage,
                        int done, int total) {
  (void)module, (void)done, (void)total;
  stages *s = user;
  uint64_t now = bench_now_ns();
  if (!strcmp(stage, "wasm2c"))
    s->wasm2c = now;
  else if (!strcmp(stage, "cc"))
    s->cc = now;
  else if (!strcmp(stage, "done"))
    s->done = now;
}

/* The smallest module: 8 bytes, no sections. Loading it first in a new
 * engine isolates the engine's one-time work (the toolchain's identity). */
static const uint8_t empty_module[8] = {0, 'a', 's', 'm', 1, 0, 0, 0};

/* Warm-up child: make sure every guest is in the persistent cache. out:
 * per guest (calls, interp, big): 1 if it was compiled now, total load
 * seconds, wasm2c seconds, cc seconds. */
static void child_warm_cache(void *ctx, double *out, int n) {
  (void)ctx, (void)n;
  stages st;
  kiln_engine *e = new_engine(cfg.cache_dir, on_progress, &st);
  kiln_module *empty = NULL;
  CHECK(kiln_module_load(e, empty_module, sizeof empty_module, "empty", &empty));
  kiln_module_release(empty);
  const char *paths[3] = {cfg.calls, cfg.interp, cfg.big};
  for (int i = 0; i < 3; i++) {
    memset(&st, 0, sizeof st);
    if (i == 2) fprintf(stderr, "  (compiling bench_big.wasm if the cache is cold: about a minute)\n");
    uint64_t t0 = bench_now_ns();
    kiln_module *m = NULL;
    CHECK(kiln_module_load_file(e, paths[i], &m));
    uint64_t t1 = bench_now_ns();
    out[4 * i] = !kiln_module_was_cached(m);
    out[4 * i + 1] = (double)(t1 - t0) * 1e-9;
    out[4 * i + 2] = st.cc && st.wasm2c ? (double)(st.cc - st.wasm2c) * 1e-9 : 0;
    out[4 * i + 3] = st.done && st.cc ? (double)(st.done - st.cc) * 1e-9 : 0;
    kiln_module_release(m);
  }
  kiln_engine_release(e);
}

/* A fresh process loading and instantiating bench_big, as `kiln run` would
 * (less exec and WASI's own setup). out (ns): [0] all of it, [1] load +
 * instantiate, [2] engine create + its first load (of the empty module:
 * the toolchain's identity), [3] load, [4] instantiate. */
static void child_big_first(void *ctx, double *out, int n) {
  (void)ctx, (void)n;
  uint64_t t0 = bench_now_ns();
  kiln_engine *e = new_engine(cfg.cache_dir, NULL, NULL);
  kiln_module *empty = NULL;
  CHECK(kiln_module_load(e, empty_module, sizeof empty_module, "empty", &empty));
  uint64_t t1 = bench_now_ns();
  kiln_module *m = NULL;
  CHECK(kiln_module_load_file(e, cfg.big, &m));
  uint64_t t2 = bench_now_ns();
  wasi_env w = wasi_env_create(e); /* not timed: WASI's own setup */
  uint64_t t3 = bench_now_ns();
  kiln_instance *inst = NULL;
  CHECK(kiln_instance_create(m, w.linker, NULL, &inst));
  uint64_t t4 = bench_now_ns();
  if (!kiln_module_was_cached(m) || !kiln_module_was_cached(empty))
    bench_die("a module was not cached");
  out[0] = (double)((t2 - t0) + (t4 - t3));
  out[1] = (double)((t2 - t1) + (t4 - t3));
  out[2] = (double)(t1 - t0);
  out[3] = (double)(t2 - t1);
  out[4] = (double)(t4 - t3);
  kiln_instance_release(inst);
  wasi_env_release(&w);
  kiln_module_release(m);
  kiln_module_release(empty);
  kiln_engine_release(e);
}

/* A fresh process: the engine's first load (which works out the toolchain's
 * identity by running `cc --version` and `wasm2c --version`), then the first
 * load of each guest. out (ns): [0] first load of the empty module in a new
 * engine, [1] a second load of it, [2..4] calls, interp, big (first load in
 * the process: dlopen maps the shared object). */
static void child_first_loads(void *ctx, double *out, int n) {
  (void)ctx, (void)n;
  kiln_engine *e = new_engine(cfg.cache_dir, NULL, NULL);
  kiln_module *m = NULL;
  uint64_t t0 = bench_now_ns();
  CHECK(kiln_module_load(e, empty_module, sizeof empty_module, "empty", &m));
  uint64_t t1 = bench_now_ns();
  kiln_module_release(m);
  uint64_t t2 = bench_now_ns();
  CHECK(kiln_module_load(e, empty_module, sizeof empty_module, "empty", &m));
  uint64_t t3 = bench_now_ns();
  kiln_module_release(m);
  out[0] = (double)(t1 - t0);
  out[1] = (double)(t3 - t2);
  const char *paths[3] = {cfg.calls, cfg.interp, cfg.big};
  for (int i = 0; i < 3; i++) {
    uint64_t a = bench_now_ns();
    CHECK(kiln_module_load_file(e, paths[i], &m));
    uint64_t b = bench_now_ns();
    kiln_module_release(m);
    out[2 + i] = (double)(b - a);
  }
  kiln_engine_release(e);
}

/* dlopen of an artifact in a process that has not mapped it. out[0] ns. */
static void child_dlopen(void *ctx, double *out, int n) {
  (void)n;
  const char *so = ctx;
  uint64_t t0 = bench_now_ns();
  void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  uint64_t t1 = bench_now_ns();
  if (!h) bench_die("dlopen %s: %s", so, dlerror());
  out[0] = (double)(t1 - t0);
}

static bench_stats children(child_fn fn, void *ctx, int nout, int which,
                            int samples, bench_stats *more) {
  double *all = calloc((size_t)(samples * nout), sizeof(double));
  double *col = calloc((size_t)samples, sizeof(double));
  if (!all || !col) bench_die("out of memory");
  for (int i = 0; i < samples; i++) in_child(fn, ctx, all + i * nout, nout);
  bench_stats first = {0};
  for (int k = 0; k < nout; k++) {
    for (int i = 0; i < samples; i++) col[i] = all[i * nout + k];
    bench_stats s = bench_stats_of(col, samples);
    if (k == which) first = s;
    if (more) more[k] = s;
  }
  free(all);
  free(col);
  return first;
}

/* ---- Call cost ------------------------------------------------------------------ */

/* The native baselines have the signatures of the generated code they are
 * compared with: an export is (void *env, u32, u32) -> u32, a native host
 * import (kiln_caller *, u32) -> u32. They are reached through pointers read
 * from volatiles, so the compiler can neither inline nor fold them. */
typedef uint32_t (*add_fn)(void *env, uint32_t a, uint32_t b);
typedef uint32_t (*inc_fn)(kiln_caller *c, uint32_t x);

__attribute__((noinline)) static uint32_t native_add(void *env, uint32_t a, uint32_t b) {
  (void)env;
  return a + b;
}

static uint32_t host_inc(kiln_caller *c, uint32_t x) {
  (void)c;
  return x + 1;
}

static kiln_status host_inc_generic(kiln_caller *c, const kiln_val *args,
                                    kiln_val *results) {
  (void)c;
  results[0] = kiln_val_i32(args[0].of.i32 + 1);
  return KILN_OK;
}

static add_fn volatile native_add_ptr = native_add;
static inc_fn volatile host_inc_ptr = host_inc;

typedef struct calls_ctx {
  kiln_instance *inst;
  kiln_func_ref add_ref;
  add_fn add_native;
  void *env;
  kiln_func_ref loop;
  uint64_t iters; /* for run bodies */
} calls_ctx;

static void batch_native_add(void *ctx, uint64_t iters) {
  (void)ctx;
  add_fn f = native_add_ptr;
  uint32_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) acc = f(NULL, acc, 1);
  bench_use(acc);
}

static void run_native_batch(void *user) {
  calls_ctx *c = user;
  add_fn f = c->add_native;
  void *env = c->env;
  uint32_t acc = 0;
  for (uint64_t i = 0; i < c->iters; i++) acc = f(env, acc, 1);
  bench_use(acc);
  if (acc != (uint32_t)c->iters) bench_die("add returned %u, not %u", acc, (uint32_t)c->iters);
}

static void batch_kiln_native(void *ctx, uint64_t iters) {
  calls_ctx *c = ctx;
  c->iters = iters;
  CHECK(kiln_instance_run(c->inst, run_native_batch, c));
}

static void run_one_call(void *user) {
  calls_ctx *c = user;
  bench_use(c->add_native(c->env, 1, 2));
}

static void batch_run_one(void *ctx, uint64_t iters) {
  calls_ctx *c = ctx;
  for (uint64_t i = 0; i < iters; i++) CHECK(kiln_instance_run(c->inst, run_one_call, c));
}

static void batch_func_call(void *ctx, uint64_t iters) {
  calls_ctx *c = ctx;
  kiln_val args[2] = {kiln_val_i32(0), kiln_val_i32(1)}, res[1];
  for (uint64_t i = 0; i < iters; i++) {
    CHECK(kiln_func_call(c->add_ref, args, 2, res, 1));
    args[0] = res[0];
  }
  bench_use(args[0].of.i32);
}

static void batch_instance_call(void *ctx, uint64_t iters) {
  calls_ctx *c = ctx;
  kiln_val args[2] = {kiln_val_i32(0), kiln_val_i32(1)}, res[1];
  for (uint64_t i = 0; i < iters; i++) {
    CHECK(kiln_instance_call(c->inst, "add", args, 2, res, 1));
    args[0] = res[0];
  }
  bench_use(args[0].of.i32);
}

static void batch_native_inc(void *ctx, uint64_t iters) {
  (void)ctx;
  inc_fn f = host_inc_ptr;
  uint32_t acc = 0;
  for (uint64_t i = 0; i < iters; i++) acc = f(NULL, acc);
  bench_use(acc);
}

/* One guest call running a loop of `iters` iterations. */
static void batch_guest_loop(void *ctx, uint64_t iters) {
  calls_ctx *c = ctx;
  kiln_val arg = kiln_val_i32((uint32_t)iters), res;
  CHECK(kiln_func_call(c->loop, &arg, 1, &res, 1));
  if (res.of.i32 != (uint32_t)iters) bench_die("guest loop returned %u", res.of.i32);
}

static void bench_calls(bench_report *r) {
  static const kiln_valtype i32[1] = {KILN_I32};
  kiln_engine *e = new_engine(cfg.cache_dir, NULL, NULL);
  kiln_linker *l = NULL;
  CHECK(kiln_linker_create(e, &l));
  kiln_host_func inc = {.module = "host", .name = "inc",
                        .type = {1, 1, i32, i32}, .native = (void *)host_inc};
  kiln_host_func inc_g = {.module = "host", .name = "inc_generic",
                          .type = {1, 1, i32, i32}, .generic = host_inc_generic};
  CHECK(kiln_linker_define_func(l, &inc));
  CHECK(kiln_linker_define_func(l, &inc_g));
  kiln_module *m = NULL;
  CHECK(kiln_module_load_file(e, cfg.calls, &m));
  calls_ctx c = {0};
  CHECK(kiln_instance_create(m, l, NULL, &c.inst));
  CHECK(kiln_instance_func(c.inst, "add", &c.add_ref));
  void *fn = NULL;
  CHECK(kiln_instance_native(c.inst, "add", &fn, &c.env));
  c.add_native = (add_fn)fn;

  int n = cfg.call_samples;
  uint64_t tgt = cfg.call_target, cap = 1ull << 31;
  bench_section(r, "host to guest call");
  bench_stats base = bench_per_iter(batch_native_add, &c, n, tgt, cap);
  bench_add(r, "call.h2g.native_baseline", "native C call through a function pointer",
            "ns", base, "baseline: (env, i32, i32) -> i32");
  bench_stats s = bench_per_iter(batch_kiln_native, &c, n, tgt, cap);
  bench_add(r, "call.h2g.native", "kiln_instance_native in one kiln_instance_run", "ns",
            s, "%.2fx the baseline", s.p50 / base.p50);
  s = bench_per_iter(batch_run_one, &c, n, tgt, cap);
  bench_add(r, "call.h2g.run_one", "kiln_instance_run around a single call", "ns", s,
            "trap point set per run");
  s = bench_per_iter(batch_func_call, &c, n, tgt, cap);
  bench_add(r, "call.h2g.func_call", "kiln_func_call (export looked up once)", "ns", s,
            "typed kiln_val arguments, checked");
  s = bench_per_iter(batch_instance_call, &c, n, tgt, cap);
  bench_add(r, "call.h2g.instance_call", "kiln_instance_call (export by name)", "ns", s,
            NULL);

  bench_section(r, "guest to host call (loop inside the guest)");
  base = bench_per_iter(batch_native_inc, &c, n, tgt, cap);
  bench_add(r, "call.g2h.native_baseline", "native C loop calling the host function",
            "ns", base, "baseline: same function, through a pointer");
  struct {
    const char *id, *label, *export, *note;
  } loops[] = {
      {"call.g2h.native", "guest loop calling a native host import", "loop_import",
       "kiln_host_func.native"},
      {"call.g2h.generic", "guest loop calling a generic host import",
       "loop_import_generic", "kiln_host_func.generic (kiln_val arrays)"},
      {"call.g2g.indirect", "guest loop, call_indirect to a guest function",
       "loop_indirect", "for reference: guest to guest"},
      {"call.g2g.direct", "guest loop, direct call to a guest function", "loop_guest",
       "cc inlines the callee and folds the loop"},
  };
  for (size_t i = 0; i < sizeof loops / sizeof loops[0]; i++) {
    CHECK(kiln_instance_func(c.inst, loops[i].export, &c.loop));
    s = bench_per_iter(batch_guest_loop, &c, n, tgt, cap);
    if (i == 0)
      bench_add(r, loops[i].id, loops[i].label, "ns", s, "%s; %.2fx the baseline",
                loops[i].note, s.p50 / base.p50);
    else
      bench_add(r, loops[i].id, loops[i].label, "ns", s, "%s", loops[i].note);
  }
  kiln_instance_release(c.inst);
  kiln_module_release(m);
  kiln_linker_release(l);
  kiln_engine_release(e);
}

/* ---- Instantiate and the cache hit path ------------------------------------------ */

static double sha256_ns(const uint8_t *data, size_t size) {
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  uint64_t t0 = bench_now_ns();
  if (EVP_Digest(data, size, md, &len, EVP_sha256(), NULL) != 1) bench_die("sha256 failed");
  return (double)(bench_now_ns() - t0);
}

typedef struct module_info {
  const char *name, *path;
  uint64_t wasm_bytes, so_bytes;
  uint32_t funcs, exports;
} module_info;

static void bench_instantiate_and_hits(bench_report *r, bench_stats *first_big,
                                       bench_stats *first_loads) {
  kiln_engine *e = new_engine(cfg.cache_dir, NULL, NULL);
  module_info mods[3] = {{"bench_calls", cfg.calls, 0, 0, 0, 0},
                         {"bench_interp", cfg.interp, 0, 0, 0, 0},
                         {"bench_big", cfg.big, 0, 0, 0, 0}};
  kiln_module *ms[3];
  for (int i = 0; i < 3; i++) {
    CHECK(kiln_module_load_file(e, mods[i].path, &ms[i]));
    mods[i].wasm_bytes = file_size(mods[i].path);
    mods[i].so_bytes = file_size(kiln_module_artifact_path(ms[i]));
  }
  module_info *big = &mods[2];
  int n = cfg.inst_samples;
  double *v = calloc((size_t)n, sizeof(double));
  if (!v) bench_die("out of memory");
  wasi_env w = wasi_env_create(e);

  char sec[96];
  snprintf(sec, sizeof sec, "instantiate bench_big (%.2f MB wasm) from a warm cache",
           (double)big->wasm_bytes / 1e6);
  bench_section(r, sec);
  bench_add(r, "instantiate.big.new_process", "new process: load + instantiate", "ms",
            bench_stats_scale(first_big[1], 1e-6), "target < 5 ms");
  bench_add(r, "instantiate.big.new_process_load", "  of which kiln_module_load_file", "ms",
            bench_stats_scale(first_big[3], 1e-6), "dlopen maps the .so");
  bench_add(r, "instantiate.big.new_process_instantiate", "  of which kiln_instance_create",
            "ms", bench_stats_scale(first_big[4], 1e-6), NULL);
  bench_add(r, "instantiate.big.new_process_engine", "new process: engine's first load", "ms",
            bench_stats_scale(first_big[2], 1e-6),
            "once per engine: the toolchain identity, remembered in the cache folder");
  bench_add(r, "instantiate.big.new_process_total", "new process: all of the above", "ms",
            bench_stats_scale(first_big[0], 1e-6), "what `kiln run` pays before _start");
  for (int i = 0; i < n; i++) {
    uint64_t t0 = bench_now_ns();
    kiln_module *m = NULL;
    kiln_instance *inst = NULL;
    CHECK(kiln_module_load_file(e, big->path, &m));
    CHECK(kiln_instance_create(m, w.linker, NULL, &inst));
    v[i] = (double)(bench_now_ns() - t0) * 1e-6;
    kiln_instance_release(inst);
    kiln_module_release(m);
  }
  bench_add(r, "instantiate.big.repeat", "same process again: load + instantiate", "ms",
            bench_stats_of(v, n), ".so already mapped");
  double *rel = calloc((size_t)n, sizeof(double));
  if (!rel) bench_die("out of memory");
  for (int i = 0; i < n; i++) {
    kiln_instance *inst = NULL;
    uint64_t t0 = bench_now_ns();
    CHECK(kiln_instance_create(ms[2], w.linker, NULL, &inst));
    uint64_t t1 = bench_now_ns();
    kiln_instance_release(inst);
    uint64_t t2 = bench_now_ns();
    v[i] = (double)(t1 - t0) * 1e-3;
    rel[i] = (double)(t2 - t1) * 1e-3;
  }
  bench_add(r, "instantiate.big.instance_create", "kiln_instance_create alone", "us",
            bench_stats_of(v, n), "memory, tables, data and element segments");
  bench_add(r, "instantiate.big.instance_release", "kiln_instance_release", "us",
            bench_stats_of(rel, n), NULL);
  free(rel);

  bench_section(r, "cache hit path: kiln_module_load_file of a cached module");
  bench_add(r, "cache.empty.first_in_engine", "empty module, first load in a new engine", "ms",
            bench_stats_scale(first_loads[0], 1e-6), "includes the toolchain's identity");
  bench_add(r, "cache.empty.repeat", "empty module, second load", "us",
            bench_stats_scale(first_loads[1], 1e-3), "the fixed cost of a hit");
  for (int k = 0; k < 3; k++) {
    module_info *mi = &mods[k];
    char label[96], id[64];
    snprintf(label, sizeof label, "%s (%.*f KB wasm, %.0f KB .so): first in process",
             mi->name, mi->wasm_bytes < 10000 ? 1 : 0, (double)mi->wasm_bytes / 1e3,
             (double)mi->so_bytes / 1e3);
    snprintf(id, sizeof id, "cache.%s.first_in_process", mi->name + 6);
    bench_add(r, id, label, "ms", bench_stats_scale(first_loads[2 + k], 1e-6),
              "new process: dlopen maps it");
    for (int i = 0; i < n; i++) {
      uint64_t t0 = bench_now_ns();
      kiln_module *m = NULL;
      CHECK(kiln_module_load_file(e, mi->path, &m));
      v[i] = (double)(bench_now_ns() - t0) * 1e-6;
      if (!kiln_module_was_cached(m)) bench_die("%s was not cached", mi->name);
      kiln_module_release(m);
    }
    snprintf(label, sizeof label, "%s: again in the same process", mi->name);
    snprintf(id, sizeof id, "cache.%s.repeat", mi->name + 6);
    bench_add(r, id, label, "ms", bench_stats_of(v, n), NULL);
  }

  /* The parts of bench_big's hit path, each on its own. */
  snprintf(sec, sizeof sec, "parts of the hit path, bench_big");
  bench_section(r, sec);
  size_t wasm_size = 0;
  uint8_t *wasm = read_file(big->path, &wasm_size);
  for (int i = 0; i < n; i++) v[i] = sha256_ns(wasm, wasm_size) * 1e-6;
  bench_add(r, "cache.big.part.hash_module", "SHA-256 of the module bytes (cache key)", "ms",
            bench_stats_of(v, n), "%.2f MB, libcrypto", (double)wasm_size / 1e6);
  for (int i = 0; i < n; i++) {
    uint64_t t0 = bench_now_ns();
    CHECK(kiln_module_validate(e, wasm, wasm_size, "bench_big"));
    v[i] = (double)(bench_now_ns() - t0) * 1e-6;
  }
  bench_add(r, "cache.big.part.validate", "parse + validate (kiln_module_validate)", "ms",
            bench_stats_of(v, n), NULL);
  size_t so_size = 0;
  uint8_t *so = read_file(kiln_module_artifact_path(ms[2]), &so_size);
  for (int i = 0; i < n; i++) v[i] = sha256_ns(so, so_size) * 1e-6;
  bench_add(r, "cache.big.part.hash_artifact", "SHA-256 of the .so (entry integrity check)",
            "ms", bench_stats_of(v, n), "%.2f MB", (double)so_size / 1e6);
  free(wasm);
  /* This process has the artifact mapped, and so would a fork()ed child;
   * glibc recognises a file it has loaded by device and inode, so a copy
   * (a new inode, in the page cache since just written) loads afresh. */
  char copy[PATH_MAX];
  snprintf(copy, sizeof copy, "%s/dlopen-probe.so", KILN_BENCH_DIR);
  FILE *f = fopen(copy, "wb");
  if (!f || fwrite(so, 1, so_size, f) != so_size || fclose(f) != 0)
    bench_die("cannot write %s", copy);
  free(so);
  bench_stats dl = children(child_dlopen, copy, 1, 0, cfg.proc_samples, NULL);
  unlink(copy);
  bench_add(r, "cache.big.part.dlopen", "dlopen of the .so, new process", "ms",
            bench_stats_scale(dl, 1e-6), "RTLD_NOW, a copy not mapped yet");

  free(v);
  wasi_env_release(&w);
  for (int i = 0; i < 3; i++) kiln_module_release(ms[i]);
  kiln_engine_release(e);
}

/* ---- Compile time ---------------------------------------------------------------------- */

static double spawn_seconds(char *const argv[]) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  uint64_t t0 = bench_now_ns();
  pid_t pid;
  int err = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err) bench_die("running %s: %s", argv[0], strerror(err));
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  uint64_t t1 = bench_now_ns();
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bench_die("%s failed", argv[0]);
  return (double)(t1 - t0) * 1e-9;
}

static void bench_compile(bench_report *r) {
  char src[PATH_MAX], out[PATH_MAX], sdk[PATH_MAX + 2];
  snprintf(src, sizeof src, "%s/guests/bench/interp.c", KILN_SOURCE_DIR);
  snprintf(out, sizeof out, "%s/interp-bench.wasm", KILN_BENCH_DIR);
  snprintf(sdk, sizeof sdk, "-I%s/sdk", KILN_SOURCE_DIR);
  char sec[96];
  snprintf(sec, sizeof sec, "compile guests/bench/interp.c (%d lines of C)",
           count_lines(src));
  bench_section(r, sec);
  char *argv[] = {KILN_WASM_CLANG, "--target=wasm32-wasi", "--sysroot=/usr", "-O2",
                  sdk, src, "-o", out, NULL};
  int n = cfg.clang_reps;
  double *v = calloc((size_t)n, sizeof(double));
  if (!v) bench_die("out of memory");
  for (int i = 0; i < n; i++) v[i] = spawn_seconds(argv);
  bench_add(r, "compile.interp.clang", "clang -O2 to wasm32-wasi", "s",
            bench_stats_of(v, n), "%.0f KB of wasm", (double)file_size(out) / 1e3);
  free(v);

  static const int levels[] = {2, 1, 0};
  n = cfg.compile_reps;
  double *total = calloc((size_t)n, sizeof(double));
  double *w2c = calloc((size_t)n, sizeof(double));
  double *cc = calloc((size_t)n, sizeof(double));
  if (!total || !w2c || !cc) bench_die("out of memory");
  for (size_t l = 0; l < sizeof levels / sizeof levels[0]; l++) {
    int reps = levels[l] == 2 ? n : 1 + (n > 1);
    uint64_t so_bytes = 0;
    for (int i = 0; i < reps; i++) {
      char dir[PATH_MAX];
      snprintf(dir, sizeof dir, "%s/cold-XXXXXX", KILN_BENCH_DIR);
      if (!mkdtemp(dir)) bench_die("mkdtemp %s: %s", dir, strerror(errno));
      stages st = {0};
      kiln_engine_options o;
      kiln_engine_options_init(&o);
      o.cache_dir = dir;
      o.opt_level = levels[l];
      o.progress = on_progress;
      o.progress_user = &st;
      kiln_engine *e = NULL;
      CHECK(kiln_engine_create(&o, &e));
      kiln_module *m = NULL;
      uint64_t t0 = bench_now_ns();
      CHECK(kiln_module_load_file(e, out, &m));
      uint64_t t1 = bench_now_ns();
      if (kiln_module_was_cached(m) || !st.cc || !st.done)
        bench_die("the cold compile did not compile");
      total[i] = (double)(t1 - t0) * 1e-9;
      w2c[i] = (double)(st.cc - st.wasm2c) * 1e-9;
      cc[i] = (double)(st.done - st.cc) * 1e-9;
      so_bytes = file_size(kiln_module_artifact_path(m));
      kiln_module_release(m);
      kiln_engine_release(e);
      char rm[PATH_MAX + 16];
      snprintf(rm, sizeof rm, "rm -rf '%s'", dir);
      if (system(rm) != 0) bench_die("%s failed", rm);
    }
    char id[64], label[96];
    snprintf(id, sizeof id, "compile.interp.kiln_O%d", levels[l]);
    snprintf(label, sizeof label, "kiln cold compile, cc -O%d%s: total", levels[l],
             levels[l] == 2 ? " (default)" : "");
    bench_add(r, id, label, "s", bench_stats_of(total, reps), "%.0f KB .so",
              (double)so_bytes / 1e3);
    snprintf(id, sizeof id, "compile.interp.kiln_O%d.wasm2c", levels[l]);
    snprintf(label, sizeof label, "  of which wasm2c (and kiln's glue)");
    bench_add(r, id, label, "s", bench_stats_of(w2c, reps), NULL);
    snprintf(id, sizeof id, "compile.interp.kiln_O%d.cc", levels[l]);
    snprintf(label, sizeof label, "  of which cc -O%d", levels[l]);
    bench_add(r, id, label, "s", bench_stats_of(cc, reps), NULL);
  }
  free(total);
  free(w2c);
  free(cc);
  unlink(out);
}

/* ---- Peers ------------------------------------------------------------------------------ */

/* wasmtime through PyPI's package (bench/peers/wasmtime_engine.py), on the
 * same guests. Skipped with a note when python3 or wasmtime is missing, or
 * when KILN_BENCH_PEERS=0. */
static void bench_peers(bench_report *r) {
  const char *want = getenv("KILN_BENCH_PEERS");
  if (want && !strcmp(want, "0")) {
    bench_note(r, "Peers skipped (KILN_BENCH_PEERS=0).");
    return;
  }
  fprintf(stderr, "running the wasmtime peer\n");
  char cmd[PATH_MAX * 2 + 64];
  snprintf(cmd, sizeof cmd, "python3 '%s/bench/peers/wasmtime_engine.py' '%s'%s",
           KILN_SOURCE_DIR, KILN_GUEST_DIR, cfg.quick ? " --quick" : "");
  FILE *p = popen(cmd, "r");
  size_t cap = 1 << 16, len = 0;
  char *text = malloc(cap);
  if (!p || !text) bench_die("cannot run %s", cmd);
  size_t got;
  while ((got = fread(text + len, 1, cap - len - 1, p)) > 0) {
    len += got;
    if (len + 1 == cap && !(text = realloc(text, cap *= 2))) bench_die("out of memory");
  }
  text[len] = 0;
  int rc = pclose(p);
  cJSON *j = cJSON_Parse(text);
  free(text);
  cJSON *skipped = cJSON_GetObjectItem(j, "skipped");
  cJSON *results = cJSON_GetObjectItem(j, "results");
  if (rc != 0 || !cJSON_IsArray(results)) {
    bench_note(r, "wasmtime peer: %s.",
               cJSON_IsString(skipped) ? skipped->valuestring : "failed (run it by hand: " KILN_SOURCE_DIR "/bench/peers/wasmtime_engine.py)");
    cJSON_Delete(j);
    return;
  }
  cJSON *version = cJSON_GetObjectItem(j, "version");
  char sec[96];
  snprintf(sec, sizeof sec, "peer: wasmtime %s (PyPI package, driven from Python)",
           cJSON_IsString(version) ? version->valuestring : "");
  bench_section(r, sec);
  cJSON *o;
  cJSON_ArrayForEach(o, results) {
    bench_stats st = {0};
    st.p50 = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "p50"));
    st.p99 = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "p99"));
    st.min = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "min"));
    st.max = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "max"));
    st.mean = cJSON_GetNumberValue(cJSON_GetObjectItem(o, "mean"));
    st.n = (int)cJSON_GetNumberValue(cJSON_GetObjectItem(o, "samples"));
    cJSON *it = cJSON_GetObjectItem(o, "iterations_per_sample");
    st.iterations = cJSON_IsNumber(it) ? (uint64_t)it->valuedouble : 1;
    cJSON *note = cJSON_GetObjectItem(o, "note");
    bench_add(r, cJSON_GetStringValue(cJSON_GetObjectItem(o, "id")),
              cJSON_GetStringValue(cJSON_GetObjectItem(o, "label")),
              cJSON_GetStringValue(cJSON_GetObjectItem(o, "unit")), st, "%s",
              cJSON_IsString(note) ? note->valuestring : "");
  }
  cJSON_Delete(j);
}

/* ---- Main ------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  bench_report *r = bench_begin("engine", argc, argv);
  cfg.quick = r->quick;
  cfg.call_samples = cfg.quick ? 7 : 31;
  cfg.call_target = cfg.quick ? 5000000 : 20000000;
  cfg.proc_samples = cfg.quick ? 5 : 30;
  cfg.inst_samples = cfg.quick ? 20 : 200;
  cfg.clang_reps = cfg.quick ? 1 : 5;
  cfg.compile_reps = cfg.quick ? 1 : 3;
  const char *cd = getenv("KILN_CACHE_DIR");
  if (cd && *cd)
    snprintf(cfg.cache_dir, sizeof cfg.cache_dir, "%s", cd);
  else
    snprintf(cfg.cache_dir, sizeof cfg.cache_dir, "%s/cache", KILN_BENCH_DIR);
  guest_path(cfg.calls, "bench_calls");
  guest_path(cfg.interp, "bench_interp");
  guest_path(cfg.big, "bench_big");

  /* Everything measured in new processes runs first, while this process has
   * not mapped any of the modules. */
  fprintf(stderr, "warming the cache %s\n", cfg.cache_dir);
  double warm[12];
  in_child(child_warm_cache, NULL, warm, 12);
  fprintf(stderr, "measuring new processes\n");
  bench_stats first_big[5], first_loads[5];
  children(child_big_first, NULL, 5, 0, cfg.proc_samples, first_big);
  children(child_first_loads, NULL, 5, 0, cfg.proc_samples, first_loads);

  bench_calls(r);
  bench_instantiate_and_hits(r, first_big, first_loads);
  bench_compile(r);
  if (warm[8]) {
    bench_section(r, "compile bench_big (only when this run found the cache cold)");
    bench_add_value(r, "compile.big.kiln_O2", "kiln cold compile of bench_big, cc -O2", "s",
                    warm[9], "wasm2c %.1f s, cc %.1f s", warm[10], warm[11]);
  }
  bench_peers(r);

  bench_note(r, "Times are CLOCK_MONOTONIC. p50/p99 are nearest-rank over the samples; "
                "with fewer than 100 samples p99 is the slowest one.");
  bench_note(r, "Call figures are per call: each sample is one batch of many calls "
                "(samples column: batches x calls per batch).");
  bench_note(r, "\"new process\" figures are taken in a fork()ed child per sample that "
                "has not mapped the module yet; the page cache is warm.");
  bench_note(r, "Cache: %s (persistent); cold compiles use fresh folders.", cfg.cache_dir);
  return bench_end(r);
}
