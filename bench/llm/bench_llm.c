/* bench_llm: issue 5's numbers for one model, in one process.
 *
 *   bench_llm [--model DIR] [--device SPEC] [--reps R] [--prompt-tokens P]
 *             [--gen N] [--prefill-tokens Q] [--kv f32|bf16] [--out FILE]
 *
 * 1. Device-to-device copy bandwidth of the device (cudaMemcpy between two
 *    device buffers, through libcudart loaded at run time; bytes read plus
 *    bytes written per second, as CUDA's bandwidthTest counts them), for
 *    the memory roofline: weight bytes read per decode token / bandwidth.
 * 2. Decode: a P-token prompt (default 128), N generated tokens (default
 *    256, greedy, end-of-sequence ignored), R times alternating the Wasm
 *    guest (build/guests/llm.wasm) and its native twin (the same
 *    src/model/llama_run.c natively over the same session API). Each run
 *    reports its own prefill and decode tokens/s (--json lines, parsed).
 * 3. Prefill: a Q-token prompt (default 512) in one pass (--batch Q).
 * 4. Host memory of this process: VmHWM (peak RSS), RssAnon (the process's
 *    own memory: guest memory, run state) and RssFile (pages of the mapped
 *    weight files the process touched, e.g. while uploading them).
 * The weights are granted once by a holder session that lives for the
 * whole benchmark, so every run finds them on the device already.
 *
 * Without --model it runs the tiny reference model on the cpu backend
 * (a smoke test for `make bench`). Prints a table; writes JSON to --out
 * (default build/bench/llm.json). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "llm/llm_host.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Device-to-device copy bandwidth (cudart via dlopen) ---------------- */

static double d2d_bandwidth_gbs(const char *device, char *why, size_t whylen) {
  if (!strstr(device, "cuda") && strcmp(device, "auto")) {
    snprintf(why, whylen, "not a cuda device");
    return 0;
  }
  const char *libs[] = {"libcudart.so", "libcudart.so.13", "libcudart.so.12",
                        "/usr/local/cuda/lib64/libcudart.so"};
  void *h = NULL;
  for (size_t i = 0; i < sizeof libs / sizeof libs[0] && !h; i++)
    h = dlopen(libs[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(why, whylen, "no libcudart: %s", dlerror());
    return 0;
  }
  int (*cmalloc)(void **, size_t) = (int (*)(void **, size_t))dlsym(h, "cudaMalloc");
  int (*cfree)(void *) = (int (*)(void *))dlsym(h, "cudaFree");
  int (*cmemcpy)(void *, const void *, size_t, int) =
      (int (*)(void *, const void *, size_t, int))dlsym(h, "cudaMemcpy");
  int (*csync)(void) = (int (*)(void))dlsym(h, "cudaDeviceSynchronize");
  int (*cset)(int) = (int (*)(int))dlsym(h, "cudaSetDevice");
  if (!cmalloc || !cfree || !cmemcpy || !csync || !cset) {
    snprintf(why, whylen, "libcudart lacks a symbol");
    return 0;
  }
  int dev = 0;
  const char *colon = strchr(device, ':');
  if (colon) dev = atoi(colon + 1);
  const size_t n = 1ull << 30; /* 1 GiB each way */
  void *a = NULL, *b = NULL;
  double best = 0;
  if (cset(dev) || cmalloc(&a, n) || cmalloc(&b, n)) {
    snprintf(why, whylen, "cudaMalloc failed");
  } else {
    enum { kDeviceToDevice = 3 };
    cmemcpy(b, a, n, kDeviceToDevice); /* warm up */
    csync();
    for (int r = 0; r < 5; r++) {
      double t0 = now_s();
      for (int i = 0; i < 10; i++) cmemcpy(b, a, n, kDeviceToDevice);
      csync();
      double bw = 2.0 * n * 10 / (now_s() - t0) / 1e9;
      if (bw > best) best = bw;
    }
  }
  if (a) cfree(a);
  if (b) cfree(b);
  return best;
}

/* ---- Runs -------------------------------------------------------------------- */

typedef struct run_result {
  double prefill_tok_s, decode_tok_s, prefill_ms, decode_ms;
  int generated;
  unsigned long long weight_bytes;
  int ok;
} run_result;

static double json_num(const char *s, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *p = strstr(s, k);
  return p ? strtod(p + strlen(k), NULL) : 0;
}

/* Runs the guest or the twin with stdout redirected to a temporary file
 * and parses its JSON lines. */
static run_result run_once(kiln_engine *e, kiln_device *d, kiln_llm_model *m,
                           const uint8_t *wasm, size_t wasm_size, bool guest,
                           int argc, char **argv) {
  run_result r = {0};
  char path[] = "/tmp/kiln-bench-llm-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return r;
  fflush(stdout);
  int saved = dup(1);
  dup2(fd, 1);
  kiln_gpu_session *s = NULL;
  kiln_status st = kiln_gpu_session_create(d, NULL, &s);
  if (!st) st = kiln_llm_model_grant(m, s, NULL, NULL);
  int rc = 1;
  if (!st) {
    if (guest) {
      char *gargv[64];
      int gargc = 0;
      for (int i = 0; i < argc && gargc < 63; i++)
        gargv[gargc++] = !strcmp(argv[i], m->m.dir) ? "/model" : argv[i];
      kiln_llm_guest_options go = {.engine = e, .wasm = wasm,
                                   .wasm_size = wasm_size,
                                   .model_dir = m->m.dir, .argc = gargc,
                                   .argv = gargv};
      st = kiln_llm_run_guest(&go, s, &rc);
    } else {
      rc = kiln_llm_run_native(s, argc, argv);
    }
  }
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  if (st) {
    fprintf(stderr, "bench_llm: %s\n", kiln_status_message(st));
    kiln_status_free(st);
  }
  kiln_gpu_session_release(s);
  FILE *f = fopen(path, "rb");
  static char buf[1 << 20];
  size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
  buf[n] = 0;
  if (f) fclose(f);
  close(fd);
  unlink(path);
  const char *done = strstr(buf, "\"event\":\"done\"");
  if (rc == 0 && done) {
    r.ok = 1;
    r.prefill_tok_s = json_num(done, "prefill_tok_s");
    r.decode_tok_s = json_num(done, "decode_tok_s");
    r.prefill_ms = json_num(done, "prefill_ms");
    r.decode_ms = json_num(done, "decode_ms");
    r.generated = (int)json_num(done, "generated");
    r.weight_bytes = (unsigned long long)json_num(buf, "weight_bytes_per_token");
  } else {
    fprintf(stderr, "bench_llm: %s run failed (status %d)\n",
            guest ? "guest" : "twin", rc);
  }
  return r;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  if (n <= 0) return 0;
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t k = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, k) && line[k] == ':') v = atol(line + k + 1);
  if (f) fclose(f);
  return v;
}

static uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc((size_t)n);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return b;
}

int main(int argc, char **argv) {
  const char *model = NULL, *device = NULL, *out = KILN_BENCH_DIR "/llm.json";
  const char *kv = "f32", *chain = "8";
  int reps = 3, prompt_tokens = 128, gen = 256, prefill_tokens = 512;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--model")) model = v, i++;
    else if (!strcmp(a, "--device")) device = v, i++;
    else if (!strcmp(a, "--reps")) reps = atoi(v), i++;
    else if (!strcmp(a, "--prompt-tokens")) prompt_tokens = atoi(v), i++;
    else if (!strcmp(a, "--gen")) gen = atoi(v), i++;
    else if (!strcmp(a, "--prefill-tokens")) prefill_tokens = atoi(v), i++;
    else if (!strcmp(a, "--kv")) kv = v, i++;
    else if (!strcmp(a, "--chain")) chain = v, i++;   /* generate's --chain */
    else if (!strcmp(a, "--out")) out = v, i++;
    else {
      fprintf(stderr, "bench_llm: unknown option '%s'\n", a);
      return 2;
    }
  }
  if (!model) { /* smoke test on the tiny reference model */
    model = KILN_SOURCE_DIR "/tests/data/models/gqa";
    if (!device) device = "cpu";
    prompt_tokens = 32, gen = 64, prefill_tokens = 128;
  }
  if (!device) device = "auto";

  char why[256] = "";
  double bw = d2d_bandwidth_gbs(device, why, sizeof why);

  size_t wasm_size = 0;
  uint8_t *wasm = read_file(KILN_GUEST_DIR "/llm.wasm", &wasm_size);
  if (!wasm) {
    fprintf(stderr, "bench_llm: cannot read %s/llm.wasm\n", KILN_GUEST_DIR);
    return 1;
  }
  kiln_llm_model *m = NULL;
  kiln_device *d = NULL;
  kiln_engine *e = NULL;
  kiln_gpu_session *holder = NULL;
  kiln_status st = kiln_llm_model_open(model, &m);
  kiln_device_options dopt;
  kiln_device_options_init(&dopt);
  dopt.spec = device;
  if (!st) st = kiln_device_open(&dopt, &d);
  kiln_engine_options eo;
  kiln_engine_options_init(&eo);
  if (!st) st = kiln_engine_create(&eo, &e);
  double t_load = now_s();
  if (!st) st = kiln_gpu_session_create(d, NULL, &holder);
  if (!st) st = kiln_llm_model_grant(m, holder, NULL, NULL);
  t_load = now_s() - t_load;
  if (st) {
    fprintf(stderr, "bench_llm: %s\n", kiln_status_message(st));
    return 1;
  }
  fprintf(stderr, "bench_llm: %s on %s; weights on the device in %.2f s\n",
          model, kiln_device_describe(d), t_load);

  /* Prompts of exactly P and Q tokens with the byte-level tokenizer of
   * tools/make_random_llama.py (BOS + one token per ASCII byte). */
  char *p_decode = malloc((size_t)prompt_tokens + 1);
  char *p_prefill = malloc((size_t)prefill_tokens + 1);
  for (int i = 0; i < prompt_tokens; i++) p_decode[i] = "abcdefgh"[i % 8];
  p_decode[prompt_tokens > 0 ? prompt_tokens - 1 : 0] = 0;
  for (int i = 0; i < prefill_tokens; i++) p_prefill[i] = "abcdefgh"[i % 8];
  p_prefill[prefill_tokens > 0 ? prefill_tokens - 1 : 0] = 0;
  char ngen[16], nbatch[16];
  snprintf(ngen, sizeof ngen, "%d", gen);
  snprintf(nbatch, sizeof nbatch, "%d", prefill_tokens);
  char *dargv[] = {"llm", "--model", m->m.dir, "--prompt", p_decode, "-n", ngen,
                   "--ignore-eos", "--json", "--no-echo", "--kv", (char *)kv,
                   "--batch", "128", "--chain", (char *)chain};
  char *pargv[] = {"llm", "--model", m->m.dir, "--prompt", p_prefill, "-n", "1",
                   "--ignore-eos", "--json", "--no-echo", "--kv", (char *)kv,
                   "--batch", nbatch};
  int dargc = sizeof dargv / sizeof dargv[0], pargc = sizeof pargv / sizeof pargv[0];

  /* Warm-up: compiles the guest into the cache, touches everything once,
   * in both configurations: the first Q-row prefill of a process loads
   * the cuBLAS kernels for its shapes (lazily, on first use), which
   * otherwise fell on whichever side ran it first (the guest: rep 1 of
   * session 5's 1B run was 23935 tok/s against the twin's 31294, rep 2
   * 30966 against 31093). */
  run_once(e, d, m, wasm, wasm_size, true, dargc, dargv);
  run_once(e, d, m, wasm, wasm_size, false, dargc, dargv);
  run_once(e, d, m, wasm, wasm_size, true, pargc, pargv);
  run_once(e, d, m, wasm, wasm_size, false, pargc, pargv);

  double g_dec[64], t_dec[64], g_pre[64], t_pre[64];
  unsigned long long wbytes = 0;
  int ng = 0, nt = 0, npg = 0, npt = 0;
  if (reps > 64) reps = 64;
  for (int r = 0; r < reps; r++) {
    run_result g = run_once(e, d, m, wasm, wasm_size, true, dargc, dargv);
    run_result t = run_once(e, d, m, wasm, wasm_size, false, dargc, dargv);
    if (g.ok) g_dec[ng++] = g.decode_tok_s, wbytes = g.weight_bytes;
    if (t.ok) t_dec[nt++] = t.decode_tok_s;
    fprintf(stderr, "  rep %d: decode tok/s guest %.2f twin %.2f\n", r + 1,
            g.decode_tok_s, t.decode_tok_s);
    g = run_once(e, d, m, wasm, wasm_size, true, pargc, pargv);
    t = run_once(e, d, m, wasm, wasm_size, false, pargc, pargv);
    if (g.ok) g_pre[npg++] = g.prefill_tok_s;
    if (t.ok) t_pre[npt++] = t.prefill_tok_s;
    fprintf(stderr, "  rep %d: prefill(%d) tok/s guest %.1f twin %.1f\n", r + 1,
            prefill_tokens, g.prefill_tok_s, t.prefill_tok_s);
  }
  double gd = median(g_dec, ng), td = median(t_dec, nt);
  double gp = median(g_pre, npg), tp = median(t_pre, npt);
  double roof = bw > 0 && wbytes ? bw * 1e9 / (double)wbytes : 0;
  long hwm = status_kb("VmHWM"), anon = status_kb("RssAnon"),
       file = status_kb("RssFile");
  uint64_t model_bytes = lr_model_bytes(&m->m);

  printf("kiln LLM benchmark: %s on %s\n", model, kiln_device_describe(d));
  printf("  prompt %d tokens, %d generated (greedy, %s steps a submission), "
         "%d reps, KV %s\n",
         prompt_tokens, gen, chain, reps, kv);
  printf("  decode tok/s     guest %.2f   native twin %.2f   ratio %.4f\n", gd,
         td, td > 0 ? gd / td : 0);
  if (roof > 0)
    printf("  roofline         %.2f tok/s (%.1f GB/s d2d copy, %.3f GB/token): "
           "guest at %.1f%%\n",
           roof, bw, wbytes / 1e9, 100 * gd / roof);
  else
    printf("  roofline         n/a (%s)\n", why);
  printf("  prefill(%d) tok/s guest %.1f   native twin %.1f\n", prefill_tokens,
         gp, tp);
  printf("  host memory      peak RSS %.1f MiB (anon %.1f, file %.1f); model "
         "%.1f MiB\n",
         hwm / 1024.0, anon / 1024.0, file / 1024.0, model_bytes / 1048576.0);

  FILE *f = fopen(out, "w");
  if (f) {
    fprintf(f,
            "{\"model\":\"%s\",\"device\":\"%s\",\"prompt_tokens\":%d,"
            "\"generated\":%d,\"reps\":%d,\"kv\":\"%s\",\"chain\":%d,"
            "\"decode_tok_s_guest\":%.4f,\"decode_tok_s_twin\":%.4f,"
            "\"guest_over_twin\":%.5f,\"d2d_copy_gb_s\":%.2f,"
            "\"weight_bytes_per_token\":%llu,\"roofline_tok_s\":%.3f,"
            "\"guest_over_roofline\":%.4f,\"prefill_tokens\":%d,"
            "\"prefill_tok_s_guest\":%.2f,\"prefill_tok_s_twin\":%.2f,"
            "\"peak_rss_kib\":%ld,\"rss_anon_kib\":%ld,\"rss_file_kib\":%ld,"
            "\"model_bytes\":%llu,\"weights_load_s\":%.3f}\n",
            model, kiln_device_describe(d), prompt_tokens, gen, reps, kv,
            atoi(chain), gd,
            td, td > 0 ? gd / td : 0, bw, wbytes, roof,
            roof > 0 ? gd / roof : 0, prefill_tokens, gp, tp, hwm, anon, file,
            (unsigned long long)model_bytes, t_load);
    fclose(f);
    printf("  wrote %s\n", out);
  }
  kiln_gpu_session_release(holder);
  kiln_engine_release(e);
  kiln_device_release(d);
  kiln_llm_model_close(m);
  free(wasm);
  free(p_decode);
  free(p_prefill);
  return ng && nt ? 0 : 1;
}
