/* kiln generate: text generation with a Llama-family model whose decode
 * loop runs in a Wasm guest (the LLM guest, embedded in this binary) and
 * whose math runs on a kiln device through kiln_gpu.
 *
 *   kiln generate [--model PATH] [--prompt TEXT] [-n N] [--temp T]
 *                 [--top-k K] [--top-p P] [--seed S] [--device SPEC]
 *                 [--json] [--native] [...]
 *
 * The model is checked natively first (config, every weight's name, shape
 * and dtype, the tokenizer): a bad file is one line and exit 1 before any
 * device is opened. Weight files are mapped read-only and granted to the
 * guest's session by file name; the guest reads config and tokenizer
 * itself through WASI (the model folder is preopened as /model).
 * --native runs the same program (src/model/llama_run.c) natively over the
 * same session instead of in the guest: the native twin, which exists to
 * measure what the Wasm boundary costs. Without --model, the default model
 * embedded in the binary is unpacked once into the cache folder. */
#define _GNU_SOURCE
#include "cli/generate.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "llm/llm_host.h"

#ifndef KILN_DEFAULT_MODEL_NAME
#define KILN_DEFAULT_MODEL_NAME "default"
#endif

/* Tables written by cmake/embed_blobs.cmake. */
struct kiln_blob {
  const char *name;
  const unsigned char *data;
  size_t size;
};
const struct kiln_blob *kiln_llm_guest_get(size_t i);
const struct kiln_blob *kiln_llm_model_get(size_t i);

static void gen_usage(FILE *f) {
  fprintf(f,
          "usage: kiln generate [options]\n\n"
          "  --model PATH      Hugging Face folder (config.json, "
          "tokenizer.json,\n"
          "                    *.safetensors) or a .gguf file (default: the "
          "embedded\n"
          "                    model '" KILN_DEFAULT_MODEL_NAME "')\n"
          "  --prompt TEXT     the prompt (default: empty, i.e. BOS only)\n"
          "  -n N              tokens to generate at most (default 128)\n"
          "  --temp T          temperature; 0 is greedy (default 0)\n"
          "  --top-k K         sample among the K likeliest (0: off)\n"
          "  --top-p P         nucleus sampling threshold (1: off)\n"
          "  --seed S          sampling seed (default 0)\n"
          "  --device SPEC     auto, cpu, cuda or cuda:N (default auto)\n"
          "  --json            per-token timings as JSON lines on stdout\n"
          "  --native          run the native twin instead of the guest\n"
          "  --ignore-eos      do not stop at end-of-sequence tokens\n"
          "  --max-seq N       KV cache rows (default prompt + N)\n"
          "  --batch N         prompt rows per prefill pass (default 128)\n"
          "  --kv f32|f16|bf16 KV cache element type (default f32)\n"
          "  --no-program      submit ops one by one instead of replaying\n"
          "  --chain N         greedy: decode steps per submission, each\n"
          "                    step's token the last one's argmax on the\n"
          "                    device (default 8; 0 or 1: one step)\n"
          "  -v, --verbose     say more on stderr\n"
          "  --cache-dir DIR   pipeline cache folder; --no-cache\n");
}

static int gen_usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "kiln: generate: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nRun 'kiln generate --help' for usage.\n");
  return 2;
}

static bool is_number(const char *s, bool allow_float) {
  char *end;
  errno = 0;
  if (allow_float) {
    double v = strtod(s, &end);
    return !errno && end != s && !*end && isfinite(v) && v >= 0;
  }
  unsigned long long v = strtoull(s, &end, 10);
  (void)v;
  return !errno && end != s && !*end && s[0] != '-';
}

/* ---- The embedded default model ------------------------------------------- */

static char *cache_base(const char *cache_dir) {
  char *p = NULL;
  const char *v;
  if (cache_dir) return strdup(cache_dir);
  if ((v = getenv("KILN_CACHE_DIR")) && *v) return strdup(v);
  if ((v = getenv("XDG_CACHE_HOME")) && *v) {
    if (asprintf(&p, "%s/kiln", v) < 0) return NULL;
    return p;
  }
  if ((v = getenv("HOME")) && *v) {
    if (asprintf(&p, "%s/.cache/kiln", v) < 0) return NULL;
    return p;
  }
  return strdup("/tmp/kiln-cache");
}

static int mkdirs(const char *path) {
  char buf[4096];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  return mkdir(buf, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Unpacks the embedded model into <cache>/models/<name>-<hash>/ (once;
 * files are written to a temporary name and renamed). */
static int unpack_default_model(const char *cache_dir, char **out_dir) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a over names and bytes */
  size_t n = 0;
  for (const struct kiln_blob *b; (b = kiln_llm_model_get(n)); n++) {
    for (const char *c = b->name; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    for (size_t i = 0; i < b->size; i++) h = (h ^ b->data[i]) * 1099511628211ull;
  }
  if (!n) {
    fprintf(stderr, "kiln: generate: no model is embedded in this build; use "
                    "--model\n");
    return 1;
  }
  char *base = cache_base(cache_dir), *dir = NULL;
  if (!base || asprintf(&dir, "%s/models/%s-%016llx", base,
                        KILN_DEFAULT_MODEL_NAME, (unsigned long long)h) < 0) {
    free(base);
    return 1;
  }
  free(base);
  if (mkdirs(dir) != 0) {
    fprintf(stderr, "kiln: generate: cannot create '%s': %s\n", dir,
            strerror(errno));
    free(dir);
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    const struct kiln_blob *b = kiln_llm_model_get(i);
    const char *name = b->name;
    const unsigned char *data = b->data;
    size_t size = b->size;
    char *path = NULL, *tmp = NULL;
    if (asprintf(&path, "%s/%s", dir, name) < 0 ||
        asprintf(&tmp, "%s/.%s.%d", dir, name, (int)getpid()) < 0) {
      free(path);
      free(dir);
      return 1;
    }
    struct stat st;
    bool ok = stat(path, &st) == 0 && (size_t)st.st_size == size;
    if (!ok) {
      FILE *f = fopen(tmp, "wb");
      ok = f && fwrite(data, 1, size, f) == size;
      if (f && fclose(f) != 0) ok = false;
      if (ok && rename(tmp, path) != 0) ok = false;
      if (!ok) {
        fprintf(stderr, "kiln: generate: writing '%s': %s\n", path,
                strerror(errno));
        unlink(tmp);
        free(tmp);
        free(path);
        free(dir);
        return 1;
      }
    }
    free(tmp);
    free(path);
  }
  *out_dir = dir;
  return 0;
}

/* ---- Progress --------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

typedef struct progress_state {
  bool tty;
  double t0;
} progress_state;

static void on_progress(void *user, const char *file, uint64_t done,
                        uint64_t total) {
  progress_state *p = user;
  if (!p->tty) return;
  if (file)
    fprintf(stderr, "\r\033[Kkiln: loading weights %.1f / %.1f MiB (%s)...",
            done / 1048576.0, total / 1048576.0, file);
  else
    fprintf(stderr, "\r\033[Kkiln: loaded %.1f MiB of weights in %.2f s\n",
            total / 1048576.0, now_s() - p->t0);
}

void kiln_cli_compile_progress(void *user, const char *module,
                               const char *stage, int done, int total) {
  (void)user;
  if (!strcmp(stage, "done"))
    fprintf(stderr, "\r\033[K");
  else
    fprintf(stderr, "\r\033[Kkiln: compiling %s (%s, step %d/%d)...", module,
            stage, done + 1, total);
}

/* ---- Command ------------------------------------------------------------------- */

int cmd_generate(int argc, char **argv) {
  const char *model = NULL, *device = NULL, *cache_dir = NULL;
  bool native = false, verbose = false, no_cache = false;
  /* Arguments for lr_main after "--model PATH": collected as given. */
  char **pass = calloc((size_t)argc + 8, sizeof *pass);
  int npass = 0;
  if (!pass) return 1;
  int rc = 0;
  char *unpacked = NULL, *gmodel = NULL;
  char **gargv = NULL;
  kiln_llm_model *lm = NULL;
  kiln_device *dev = NULL;
  kiln_gpu_session *gpu = NULL;
  kiln_engine *eng = NULL;
  kiln_status s = KILN_OK;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      gen_usage(stdout);
      free(pass);
      return 0;
    }
    bool takes = !strcmp(a, "--model") || !strcmp(a, "--prompt") ||
                 !strcmp(a, "-n") || !strcmp(a, "--temp") ||
                 !strcmp(a, "--top-k") || !strcmp(a, "--top-p") ||
                 !strcmp(a, "--seed") || !strcmp(a, "--device") ||
                 !strcmp(a, "--max-seq") || !strcmp(a, "--batch") ||
                 !strcmp(a, "--kv") || !strcmp(a, "--cache-dir") ||
                 !strcmp(a, "--chain");
    if (takes && !v) {
      rc = gen_usage_error("option '%s' needs a value", a);
      goto done;
    }
    if (!strcmp(a, "--model")) {
      model = argv[++i];
    } else if (!strcmp(a, "--device")) {
      device = argv[++i];
    } else if (!strcmp(a, "--cache-dir")) {
      cache_dir = argv[++i];
    } else if (!strcmp(a, "--no-cache")) {
      no_cache = true;
    } else if (!strcmp(a, "--native")) {
      native = true;
    } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      verbose = true;
    } else if (takes) {
      bool num_int = !strcmp(a, "-n") || !strcmp(a, "--top-k") ||
                     !strcmp(a, "--seed") || !strcmp(a, "--max-seq") ||
                     !strcmp(a, "--batch") || !strcmp(a, "--chain");
      bool num_float = !strcmp(a, "--temp") || !strcmp(a, "--top-p");
      if ((num_int && !is_number(v, false)) ||
          (num_float && !is_number(v, true))) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s takes a number, not '%%s'", a);
        rc = gen_usage_error(msg, v);
        goto done;
      }
      pass[npass++] = (char *)a;
      pass[npass++] = argv[++i];
    } else if (!strcmp(a, "--json") || !strcmp(a, "--ignore-eos") ||
               !strcmp(a, "--no-program") || !strcmp(a, "--no-echo")) {
      pass[npass++] = (char *)a;
    } else {
      rc = gen_usage_error("unknown option '%s'", a);
      goto done;
    }
  }

  if (!model) {
    if ((rc = unpack_default_model(cache_dir, &unpacked))) goto done;
    model = unpacked;
  }

  /* 1. Check the model and map its weights: before any device work. */
  s = kiln_llm_model_open(model, &lm);
  if (s) {
    fprintf(stderr, "kiln: generate: %s\n", kiln_status_message(s));
    kiln_status_free(s);
    rc = 1;
    goto done;
  }

  /* 2. Device, session, weights. */
  kiln_device_options dopt;
  kiln_device_options_init(&dopt);
  dopt.spec = device ? device : "auto";
  s = kiln_device_open(&dopt, &dev);
  if (s) {
    fprintf(stderr, "kiln: --device: %s\n", kiln_status_message(s));
    kiln_status_free(s);
    rc = 1;
    goto done;
  }
  if (device || verbose)
    fprintf(stderr, "kiln: device: %s\n", kiln_device_describe(dev));
  s = kiln_gpu_session_create(dev, NULL, &gpu);
  progress_state ps = {.tty = isatty(2) != 0, .t0 = now_s()};
  if (!s) s = kiln_llm_model_grant(lm, gpu, on_progress, &ps);
  if (s) {
    fprintf(stderr, "kiln: generate: %s\n", kiln_status_message(s));
    kiln_status_free(s);
    rc = 1;
    goto done;
  }

  /* 3. Run: the same arguments for the guest and the twin, but the guest
   * sees the model folder as /model. */
  const lr_model *pm = &lm->m;
  struct stat st;
  bool is_dir = stat(model, &st) == 0 && S_ISDIR(st.st_mode);
  if (native) {
    gmodel = strdup(model);
  } else if (!is_dir) {
    if (asprintf(&gmodel, "/model/%s", pm->files[0]) < 0) gmodel = NULL;
  } else {
    gmodel = strdup("/model");
  }
  gargv = calloc((size_t)npass + 4, sizeof *gargv);
  if (!gargv || !gmodel) {
    rc = 1;
    goto done;
  }
  int gargc = 0;
  gargv[gargc++] = native ? "kiln-native" : "llm";
  gargv[gargc++] = "--model";
  gargv[gargc++] = gmodel;
  for (int i = 0; i < npass; i++) gargv[gargc++] = pass[i];
  if (native) {
    rc = kiln_llm_run_native(gpu, gargc, gargv);
  } else {
    kiln_engine_options eo;
    kiln_engine_options_init(&eo);
    eo.cache_dir = cache_dir;
    eo.cache_disabled = no_cache;
    if (isatty(2)) eo.progress = kiln_cli_compile_progress;
    s = kiln_engine_create(&eo, &eng);
    const struct kiln_blob *wasm = kiln_llm_guest_get(0);
    if (!s) {
      kiln_llm_guest_options go = {
          .engine = eng,
          .wasm = wasm->data,
          .wasm_size = wasm->size,
          .model_dir = pm->dir,
          .argc = gargc,
          .argv = gargv,
      };
      s = kiln_llm_run_guest(&go, gpu, &rc);
    }
    if (s) {
      fprintf(stderr, "kiln: generate: %s\n", kiln_status_message(s));
      rc = kiln_status_code(s) == KILN_CODE_TRAP ? 134 : 1;
      kiln_status_free(s);
    }
  }
done:
  fflush(stdout);
  free(gmodel);
  free(gargv);
  kiln_gpu_session_release(gpu);
  kiln_device_release(dev);
  kiln_engine_release(eng);
  kiln_llm_model_close(lm);
  free(unpacked);
  free(pass);
  return rc;
}
