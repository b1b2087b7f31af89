/* kiln generate end to end, on the cpu backend: the LLM guest (Wasm) and
 * its native twin give transformers' 64 greedy tokens on the tiny
 * reference models; sampling is reproducible under a seed and identical
 * in the guest and the twin; the default model is embedded; bad model
 * files fail with one line before any device work; a guest that passes
 * bad weight descriptors gets errors and nothing runs. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln/wasi.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"
#include "model/json.h"

#define MODELS KILN_SOURCE_DIR "/tests/data/models"
#define KILN KILN_BUILD_DIR "/kiln"

/* Runs a shell command; returns its exit status and stdout (+ stderr in
 * *err when err is not NULL), malloc'd. */
static int run(const char *cmd, char **out, char **err) {
  char errfile[] = "/tmp/kiln-test-llm-XXXXXX";
  int fd = mkstemp(errfile);
  if (fd >= 0) close(fd);
  char *full = NULL;
  if (asprintf(&full, "%s 2>%s", cmd, errfile) < 0) return -1;
  FILE *p = popen(full, "r");
  free(full);
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  size_t k;
  while (p && buf && (k = fread(buf + n, 1, cap - n - 1, p)) > 0) {
    n += k;
    if (n + 1 == cap) buf = realloc(buf, cap *= 2);
  }
  if (buf) buf[n] = 0;
  int st = p ? pclose(p) : -1;
  *out = buf;
  if (err) {
    FILE *f = fopen(errfile, "rb");
    char *e = calloc(1, 1 << 16);
    if (f && e) {
      size_t m = fread(e, 1, (1 << 16) - 1, f);
      e[m] = 0;
    }
    if (f) fclose(f);
    *err = e;
  }
  unlink(errfile);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Token ids of --json output, in order. */
static int json_ids(const char *out, int32_t *ids, int cap) {
  int n = 0;
  for (const char *p = out; n < cap && (p = strstr(p, "\"event\":\"token\""));) {
    const char *q = strstr(p, "\"id\":");
    if (!q) break;
    ids[n++] = (int32_t)atoi(q + 5);
    p = q;
  }
  return n;
}

static int ref_greedy(const char *json_path, int32_t *ids) {
  FILE *f = fopen(json_path, "rb");
  if (!f) return 0;
  static char text[1 << 16];
  size_t len = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[len] = 0;
  km_json_doc *doc = NULL;
  if (km_json_parse(text, len, NULL, &doc, NULL)) return 0;
  const km_json *g = km_json_get(km_json_root(doc), "greedy_ids");
  int n = 0;
  for (uint32_t i = 0; g && i < g->len && i < 64; i++) {
    int64_t v;
    if (km_json_int(km_json_at(g, i), &v)) ids[n++] = (int32_t)v;
  }
  km_json_free(doc);
  return n;
}

static const char *kPrompt =
    "The quick brown fox jumps over the lazy dog. kiln runs llama in a sandbox";

/* extra: more options for generate ("" for none). */
static void greedy_matches_with(kiln_test *t, const char *model,
                                const char *ref, bool native, const char *extra) {
  int32_t want[64], got[80];
  int nw = ref_greedy(ref, want);
  KILN_EXPECTF(t, nw == 64, "%s: %d reference tokens", ref, nw);
  char *cmd = NULL, *out = NULL, *err = NULL;
  if (asprintf(&cmd, "'%s' generate --device cpu --model '%s' --prompt '%s' "
                     "-n 64 --ignore-eos --json%s %s",
               KILN, model, kPrompt, native ? " --native" : "", extra) < 0)
    return;
  int rc = run(cmd, &out, &err);
  KILN_EXPECTF(t, rc == 0, "%s: status %d: %s", cmd, rc, err ? err : "");
  int n = out ? json_ids(out, got, 80) : 0;
  KILN_EXPECTF(t, n == 64, "%d tokens generated", n);
  int diff = -1;
  for (int i = 0; i < n && i < nw && diff < 0; i++)
    if (got[i] != want[i]) diff = i;
  KILN_EXPECTF(t, diff < 0, "%s: token %d is %d, transformers %d", model, diff,
               diff >= 0 ? got[diff] : 0, diff >= 0 ? want[diff] : 0);
  KILN_EXPECTF(t, out && strstr(out, "\"event\":\"done\""), "no summary: %s",
               out ? out : "");
  free(cmd);
  free(out);
  free(err);
}

static void greedy_matches(kiln_test *t, const char *model, const char *ref,
                           bool native) {
  greedy_matches_with(t, model, ref, native, "");
}

static void test_guest_greedy_matches_transformers_f32(kiln_test *t) {
  greedy_matches(t, MODELS "/gqa", MODELS "/gqa/reference.json", false);
}
static void test_native_twin_greedy_matches_transformers_f32(kiln_test *t) {
  greedy_matches(t, MODELS "/gqa", MODELS "/gqa/reference.json", true);
}
static void test_guest_greedy_matches_transformers_bf16_shards(kiln_test *t) {
  greedy_matches(t, MODELS "/gqa-bf16-sharded",
                 MODELS "/gqa-bf16-sharded/reference.json", false);
}
static void test_guest_greedy_matches_transformers_gguf_q8_0(kiln_test *t) {
  greedy_matches(t, MODELS "/gqa/model-q8_0.gguf",
                 MODELS "/gqa/reference-q8_0.json", false);
}
static void test_guest_greedy_matches_transformers_tied(kiln_test *t) {
  greedy_matches(t, MODELS "/mha-tied", MODELS "/mha-tied/reference.json",
                 false);
}
/* Greedy decoding one step a submission, and 5 (63 tokens after the
 * first: 12 chains and 3 single steps), as by default 8. */
static void test_guest_greedy_any_chain_length(kiln_test *t) {
  greedy_matches_with(t, MODELS "/gqa", MODELS "/gqa/reference.json", false,
                      "--chain 1");
  greedy_matches_with(t, MODELS "/gqa", MODELS "/gqa/reference.json", true,
                      "--chain 5");
}

/* The JSON lines without their timing fields. */
static char *strip_timings(const char *s) {
  char *o = malloc(strlen(s) + 1), *w = o;
  while (*s) {
    if (*s == '"' && (!strncmp(s, "\"ms\":", 5) ||
                      !strncmp(s, "\"load_ms\":", 10) ||
                      !strncmp(s, "\"prefill_ms\":", 13))) {
      while (*s && *s != ',' && *s != '}') s++;
      if (*s == ',') s++;
      continue;
    }
    if (*s == '\n' && !strncmp(s + 1, "{\"event\":\"done\"", 15)) {
      *w++ = *s;
      break; /* the summary holds only timings besides counts */
    }
    *w++ = *s++;
  }
  *w = 0;
  return o;
}

static void test_sampling_is_reproducible_in_guest_and_twin(kiln_test *t) {
  const char *modes[] = {"", " --native", "", " --native"};
  const char *seeds[] = {"7", "7", "7", "8"};
  char *res[4] = {0};
  for (int i = 0; i < 4; i++) {
    char *cmd = NULL, *out = NULL;
    if (asprintf(&cmd, "'%s' generate --device cpu --model '%s/gqa' --prompt "
                       "'%s' -n 40 --ignore-eos --json --temp 0.9 --top-k 50 "
                       "--top-p 0.95 --seed %s%s",
                 KILN, MODELS, kPrompt, seeds[i], modes[i]) < 0)
      return;
    int rc = run(cmd, &out, NULL);
    KILN_EXPECTF(t, rc == 0, "%s: status %d", cmd, rc);
    res[i] = out ? strip_timings(out) : strdup("");
    free(out);
    free(cmd);
  }
  KILN_EXPECTF(t, !strcmp(res[0], res[1]), "guest and twin differ:\n%s\n%s",
               res[0], res[1]);
  KILN_EXPECTF(t, !strcmp(res[0], res[2]), "two guest runs differ");
  KILN_EXPECTF(t, strcmp(res[0], res[3]), "seeds 7 and 8 give the same text");
  for (int i = 0; i < 4; i++) free(res[i]);
}

static void test_default_model_is_embedded(kiln_test *t) {
  char *out = NULL, *err = NULL;
  char dir[] = "/tmp/kiln-test-llm-cwd-XXXXXX";
  KILN_EXPECT(t, mkdtemp(dir));
  char *cmd = NULL;
  /* From another folder: nothing is read from the source tree. */
  if (asprintf(&cmd, "cd %s && '%s' generate --device cpu -n 8 --json "
                     "--ignore-eos", dir, KILN) < 0)
    return;
  int rc = run(cmd, &out, &err);
  KILN_EXPECTF(t, rc == 0, "status %d: %s", rc, err ? err : "");
  int32_t ids[16];
  KILN_EXPECTF(t, json_ids(out ? out : "", ids, 16) == 8, "output: %s",
               out ? out : "");
  rmdir(dir);
  free(cmd);
  free(out);
  free(err);
}

/* ---- Bad model files ----------------------------------------------------- */

static void copy_file(const char *from, const char *to, long keep) {
  FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
  char buf[65536];
  size_t n;
  long done = 0;
  while (a && b && (n = fread(buf, 1, sizeof buf, a)) > 0) {
    if (keep >= 0 && done + (long)n > keep) n = (size_t)(keep - done);
    fwrite(buf, 1, n, b);
    done += (long)n;
    if (keep >= 0 && done >= keep) break;
  }
  if (a) fclose(a);
  if (b) fclose(b);
}

/* A copy of tests/data/models/gqa in a fresh folder. */
static void make_model_copy(char *dir) {
  const char *files[] = {"config.json", "tokenizer.json", "model.safetensors",
                         "generation_config.json", "model-q8_0.gguf"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char a[512], b[512];
    snprintf(a, sizeof a, "%s/gqa/%s", MODELS, files[i]);
    snprintf(b, sizeof b, "%s/%s", dir, files[i]);
    copy_file(a, b, -1);
  }
}

static void replace_in_file(const char *path, const char *from,
                            const char *to) {
  FILE *f = fopen(path, "rb");
  if (!f) return;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  size_t got = fread(b, 1, (size_t)n, f);
  fclose(f);
  b[got] = 0;
  char *p = memmem(b, got, from, strlen(from));
  if (p && strlen(from) == strlen(to)) memcpy(p, to, strlen(to));
  f = fopen(path, "wb");
  fwrite(b, 1, got, f);
  fclose(f);
  free(b);
}

static void expect_model_error(kiln_test *t, const char *model,
                               const char *needle) {
  char *cmd = NULL, *out = NULL, *err = NULL;
  if (asprintf(&cmd, "'%s' generate -v --device cpu --model '%s' -n 4", KILN,
               model) < 0)
    return;
  int rc = run(cmd, &out, &err);
  KILN_EXPECTF(t, rc == 1, "%s: status %d (want 1)", model, rc);
  const char *e = err ? err : "";
  const char *nl = strchr(e, '\n');
  KILN_EXPECTF(t, nl && nl[1] == 0, "want one line, got: %s", e);
  KILN_EXPECTF(t, strstr(e, needle), "'%s' not in: %s", needle, e);
  /* Checked before any device work: the device line never came. */
  KILN_EXPECTF(t, !strstr(e, "device:"), "a device was opened: %s", e);
  free(cmd);
  free(out);
  free(err);
}

static void test_cli_errors_on_bad_model_files(kiln_test *t) {
  char dir[] = "/tmp/kiln-test-llm-bad-XXXXXX";
  KILN_EXPECT(t, mkdtemp(dir));
  char path[600], from[600];
  make_model_copy(dir);

  /* Truncated weights. */
  snprintf(from, sizeof from, "%s/gqa/model.safetensors", MODELS);
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  copy_file(from, path, 100000);
  expect_model_error(t, dir, "model.safetensors");
  copy_file(from, path, 4); /* shorter than the header length */
  expect_model_error(t, dir, "model.safetensors");

  /* An unknown dtype in the header. */
  copy_file(from, path, -1);
  replace_in_file(path, "\"dtype\":\"F32\"", "\"dtype\":\"X32\"");
  expect_model_error(t, dir, "X32");

  /* A shape that does not fit the config. */
  copy_file(from, path, -1);
  snprintf(path, sizeof path, "%s/config.json", dir);
  replace_in_file(path, "\"intermediate_size\": 96", "\"intermediate_size\": 80");
  expect_model_error(t, dir, "shape");

  /* Malformed config.json. */
  FILE *f = fopen(path, "wb");
  fputs("{\"hidden_size\": 64,", f);
  fclose(f);
  expect_model_error(t, dir, "config.json");

  /* No tokenizer. */
  snprintf(from, sizeof from, "%s/gqa/config.json", MODELS);
  copy_file(from, path, -1);
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  unlink(path);
  expect_model_error(t, dir, "tokenizer.json");

  /* A truncated GGUF file. */
  snprintf(from, sizeof from, "%s/gqa/model-q8_0.gguf", MODELS);
  snprintf(path, sizeof path, "%s/model-q8_0.gguf", dir);
  copy_file(from, path, 5000);
  expect_model_error(t, path, "model-q8_0.gguf");

  /* Not a model at all. */
  expect_model_error(t, "/nonexistent/model", "/nonexistent/model");

  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  KILN_EXPECT(t, system(cmd) == 0);
}

static void test_cli_usage_errors(kiln_test *t) {
  char *out = NULL, *err = NULL;
  int rc = run("'" KILN "' generate --temp hot", &out, &err);
  KILN_EXPECTF(t, rc == 2, "status %d", rc);
  free(out);
  free(err);
  rc = run("'" KILN "' generate --bogus", &out, &err);
  KILN_EXPECTF(t, rc == 2, "status %d", rc);
  free(out);
  free(err);
  rc = run("'" KILN "' generate -n 4 --chain 65", &out, &err);
  KILN_EXPECTF(t, rc == 2 && err && strstr(err, "--chain"),
               "status %d, stderr: %s", rc, err ? err : "");
  free(out);
  free(err);
}

/* ---- A guest with bad weight descriptors --------------------------------- */

static void test_guest_with_bad_weight_descriptors_gets_errors(kiln_test *t) {
  kiln_module *m = kiln_test_load_guest(t, "llm_hostile");
  if (!m) return;
  kiln_device *d = NULL;
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cpu";
  KILN_EXPECT_OK(t, kiln_device_open(&o, &d));
  kiln_gpu_session *s = NULL;
  KILN_EXPECT_OK(t, kiln_gpu_session_create(d, NULL, &s));
  kiln_memory *w = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(MODELS "/gqa/model.safetensors", &w));
  KILN_EXPECT_OK(t, kiln_gpu_session_grant_memory(s, "weights", w, NULL));
  kiln_linker *l = NULL;
  kiln_wasi *wasi = NULL;
  kiln_instance *inst = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(kiln_test_engine(), &l));
  KILN_EXPECT_OK(t, kiln_wasi_create(NULL, &wasi));
  KILN_EXPECT_OK(t, kiln_wasi_define(wasi, l));
  KILN_EXPECT_OK(t, kiln_gpu_define(l, s));
  KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &inst));
  if (inst) {
    kiln_status st = kiln_instance_call(inst, "_start", NULL, 0, NULL, 0);
    int code = kiln_status_code(st) == KILN_CODE_EXIT ? kiln_status_exit_code(st)
               : st                                   ? -1
                                                      : 0;
    KILN_EXPECTF(t, code == 0, "llm_hostile: exit %d (%s)", code,
                 st ? kiln_status_message(st) : "");
    kiln_status_free(st);
  }
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_wasi_release(wasi);
  kiln_gpu_session_release(s);
  kiln_memory_release(w);
  kiln_device_release(d);
  kiln_module_release(m);
}

KILN_TEST_MAIN(test_guest_greedy_matches_transformers_f32,
               test_native_twin_greedy_matches_transformers_f32,
               test_guest_greedy_matches_transformers_bf16_shards,
               test_guest_greedy_matches_transformers_gguf_q8_0,
               test_guest_greedy_matches_transformers_tied,
               test_guest_greedy_any_chain_length,
               test_sampling_is_reproducible_in_guest_and_twin,
               test_default_model_is_embedded,
               test_cli_errors_on_bad_model_files, test_cli_usage_errors,
               test_guest_with_bad_weight_descriptors_gets_errors)
