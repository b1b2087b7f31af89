/* `generate` as a portable program (contract in llama_run.h). */
#define _POSIX_C_SOURCE 200809L
#include "model/llama_run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model/json.h"
#include "model/utf8.h"
#include "model/sampler.h"

/* Greedy decoding runs this many steps per submission by default
 * (lf_decode_chain; --chain N, at most LF_MAX_CHAIN): the GPU then goes
 * from token to token without waiting for the host to read each one and
 * submit the next step (a 1B step on an H200 is ~0.8 ms, the host's turn
 * between steps ~0.03 ms). Tokens stream out in groups of this many. */
#define LR_DECODE_CHAIN 8

/* ---- Files ---------------------------------------------------------------- */

typedef struct lr_fd {
  int fd;
} lr_fd;

static int fd_read(void *ctx, uint64_t offset, void *buf, size_t len) {
  int fd = ((lr_fd *)ctx)->fd;
  uint8_t *p = buf;
  while (len) {
    ssize_t n = pread(fd, p, len, (off_t)offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
    offset += (uint64_t)n;
  }
  return 0;
}

static char *join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  size_t k = a;
  if (a && dir[a - 1] != '/') p[k++] = '/';
  memcpy(p + k, name, b + 1);
  return p;
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

/* Reads a whole (small) file; NUL-terminated. */
static km_code slurp(const char *path, char **out, size_t *len, km_error *err) {
  *out = NULL;
  int fd = open(path, O_RDONLY);
  if (fd < 0)
    return km_fail(err, KM_ERR_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return km_fail(err, KM_ERR_IO, "%s: not a regular file", path);
  }
  if ((uint64_t)st.st_size > (1ull << 30)) {
    close(fd);
    return km_fail(err, KM_ERR_LIMIT, "%s: larger than 1 GiB", path);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    close(fd);
    return km_fail(err, KM_ERR_NOMEM, "%s: out of memory", path);
  }
  lr_fd f = {fd};
  if (st.st_size && fd_read(&f, 0, buf, (size_t)st.st_size)) {
    close(fd);
    free(buf);
    return km_fail(err, KM_ERR_IO, "%s: read failed", path);
  }
  close(fd);
  buf[st.st_size] = 0;
  *out = buf;
  *len = (size_t)st.st_size;
  return KM_OK;
}

/* Opens a file for header parsing: fd and size. */
static km_code open_sized(const char *path, lr_fd *f, uint64_t *size,
                          km_error *err) {
  f->fd = open(path, O_RDONLY);
  if (f->fd < 0)
    return km_fail(err, KM_ERR_IO, "%s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(f->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(f->fd);
    return km_fail(err, KM_ERR_IO, "%s: not a regular file", path);
  }
  *size = (uint64_t)st.st_size;
  return KM_OK;
}

/* Prefixes err's message with the file name. */
static km_code in_file(km_code rc, const char *name, km_error *err) {
  if (rc && err) {
    char tmp[sizeof err->message];
    snprintf(tmp, sizeof tmp, "%s", err->message);
    snprintf(err->message, sizeof err->message, "%s: %s", name, tmp);
  }
  return rc;
}

/* ---- Model ------------------------------------------------------------------ */

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

/* eos ids from generation_config.json, added to the config's. */
static void merge_generation_eos(lr_model *m) {
  char *path = join(m->dir, "generation_config.json");
  char *text = NULL;
  size_t len = 0;
  km_json_doc *doc = NULL;
  if (path && exists(path) && !slurp(path, &text, &len, NULL) &&
      !km_json_parse(text, len, NULL, &doc, NULL)) {
    const km_json *e = km_json_get(km_json_root(doc), "eos_token_id");
    size_t n = km_json_is(e, KM_JSON_ARRAY) ? e->len : 1;
    for (size_t i = 0; i < n; i++) {
      int64_t id;
      const km_json *v = km_json_is(e, KM_JSON_ARRAY) ? km_json_at(e, i) : e;
      if (!km_json_int(v, &id) || id < 0 || id >= m->cfg.vocab) continue;
      bool have = false;
      for (int k = 0; k < m->cfg.n_eos; k++) have |= m->cfg.eos_ids[k] == id;
      if (!have && m->cfg.n_eos < KM_MAX_EOS)
        m->cfg.eos_ids[m->cfg.n_eos++] = (int32_t)id;
    }
  }
  km_json_free(doc);
  free(text);
  free(path);
}

static km_code load_hf(lr_model *m, bool with_tokenizer, km_error *err) {
  km_code rc;
  char *text = NULL, *path = NULL;
  size_t len = 0;
  path = join(m->dir, "config.json");
  if (!path) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  rc = slurp(path, &text, &len, err);
  if (!rc) rc = in_file(km_llama_config_from_hf(text, len, &m->cfg, err),
                        "config.json", err);
  free(text);
  free(path);
  if (rc) return rc;
  merge_generation_eos(m);

  path = join(m->dir, "model.safetensors.index.json");
  if (!path) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  if (exists(path)) {
    rc = slurp(path, &text, &len, err);
    if (!rc)
      rc = in_file(km_st_index_parse(text, len, &m->index, err),
                   "model.safetensors.index.json", err);
    free(text);
    free(path);
    if (rc) return rc;
    m->has_index = true;
    if (m->index.n_files > LR_MAX_FILES)
      return km_fail(err, KM_ERR_LIMIT, "%u shards: at most %d", m->index.n_files,
                     LR_MAX_FILES);
    m->n_files = m->index.n_files;
    for (uint32_t i = 0; i < m->n_files; i++)
      if (!(m->files[i] = strdup(m->index.files[i])))
        return km_fail(err, KM_ERR_NOMEM, "out of memory");
  } else {
    free(path);
    m->n_files = 1;
    if (!(m->files[0] = strdup("model.safetensors")))
      return km_fail(err, KM_ERR_NOMEM, "out of memory");
  }
  m->shards = calloc(m->n_files, sizeof *m->shards);
  if (!m->shards) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  for (uint32_t i = 0; i < m->n_files; i++) {
    path = join(m->dir, m->files[i]);
    if (!path) return km_fail(err, KM_ERR_NOMEM, "out of memory");
    lr_fd f;
    rc = open_sized(path, &f, &m->file_sizes[i], err);
    free(path);
    if (rc) return rc;
    rc = km_safetensors_read(fd_read, &f, m->file_sizes[i], &m->shards[i], err);
    close(f.fd);
    if (rc) return in_file(rc, m->files[i], err);
  }
  if (m->has_index) {
    if ((rc = km_st_index_check(&m->index, m->shards, err))) return rc;
    km_sharded sh = {&m->index, m->shards};
    rc = km_llama_weights_resolve(&m->cfg, km_lookup_sharded, &sh, &m->weights, err);
  } else {
    rc = km_llama_weights_resolve(&m->cfg, km_lookup_safetensors, &m->shards[0],
                                  &m->weights, err);
    if (rc) in_file(rc, m->files[0], err);
  }
  if (rc) return rc;
  if (with_tokenizer) {
    path = join(m->dir, "tokenizer.json");
    if (!path) return km_fail(err, KM_ERR_NOMEM, "out of memory");
    rc = slurp(path, &text, &len, err);
    free(path);
    if (!rc)
      rc = in_file(km_tokenizer_from_json(text, len, &m->tok, err), "tokenizer.json",
                   err);
    free(text);
    if (rc) return rc;
  }
  return KM_OK;
}

static km_code load_gguf(lr_model *m, const char *file, bool with_tokenizer,
                         km_error *err) {
  km_code rc;
  m->is_gguf = true;
  m->n_files = 1;
  if (!(m->files[0] = strdup(file))) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  char *path = join(m->dir, file);
  if (!path) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  lr_fd f;
  rc = open_sized(path, &f, &m->file_sizes[0], err);
  free(path);
  if (rc) return rc;
  rc = km_gguf_read(fd_read, &f, m->file_sizes[0], &m->gguf, err);
  if (!rc) rc = km_llama_config_from_gguf(&m->gguf, &m->cfg, err);
  if (!rc)
    rc = km_llama_weights_resolve(&m->cfg, km_lookup_gguf, &m->gguf, &m->weights, err);
  if (!rc && m->cfg.has_rope_freqs) {
    const km_gguf_tensor *t = km_gguf_find_tensor(&m->gguf, "rope_freqs.weight");
    uint64_t want = (uint64_t)m->cfg.head_dim / 2;
    if (!t || t->info.dtype != KM_DTYPE_F32 || t->info.size != want * 4) {
      rc = km_fail(err, KM_ERR_SHAPE, "rope_freqs.weight must be F32 [%llu]",
                   (unsigned long long)want);
    } else if (!(m->rope_freqs = malloc(want * 4))) {
      rc = km_fail(err, KM_ERR_NOMEM, "out of memory");
    } else if (fd_read(&f, t->info.offset, m->rope_freqs, want * 4)) {
      rc = km_fail(err, KM_ERR_IO, "reading rope_freqs.weight");
    }
  }
  close(f.fd);
  if (!rc && with_tokenizer) rc = km_tokenizer_from_gguf(&m->gguf, &m->tok, err);
  return in_file(rc, file, err);
}

/* The one .gguf file in a folder without config.json, or NULL. */
static char *find_gguf(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char *found = NULL;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!ends_with(e->d_name, ".gguf")) continue;
    if (!n++) found = strdup(e->d_name);
  }
  closedir(d);
  if (n != 1) {
    free(found);
    return NULL;
  }
  return found;
}

km_code lr_model_load(const char *path, bool with_tokenizer, lr_model *m,
                      km_error *err) {
  memset(m, 0, sizeof *m);
  struct stat st;
  if (stat(path, &st) != 0)
    return km_fail(err, KM_ERR_IO, "%s: %s", path, strerror(errno));
  km_code rc;
  if (S_ISDIR(st.st_mode)) {
    if (!(m->dir = strdup(path))) return km_fail(err, KM_ERR_NOMEM, "out of memory");
    char *cfg = join(path, "config.json");
    bool hf = cfg && exists(cfg);
    free(cfg);
    if (hf) {
      rc = load_hf(m, with_tokenizer, err);
    } else {
      char *g = find_gguf(path);
      if (!g) {
        rc = km_fail(err, KM_ERR_NOT_FOUND,
                     "%s: no config.json and not exactly one .gguf file", path);
      } else {
        rc = load_gguf(m, g, with_tokenizer, err);
        free(g);
      }
    }
  } else {
    const char *slash = strrchr(path, '/');
    m->dir = slash ? strndup(path, (size_t)(slash - path + 1)) : strdup(".");
    if (!m->dir) return km_fail(err, KM_ERR_NOMEM, "out of memory");
    rc = load_gguf(m, slash ? slash + 1 : path, with_tokenizer, err);
  }
  if (!rc && m->tok && km_tokenizer_vocab_size(m->tok) > m->cfg.vocab) {
    /* Ids the tokenizer can produce must have embedding rows. */
    rc = km_fail(err, KM_ERR_SHAPE, "the tokenizer has %d ids, the model %d",
                 km_tokenizer_vocab_size(m->tok), m->cfg.vocab);
  }
  if (rc) lr_model_free(m);
  return rc;
}

void lr_model_free(lr_model *m) {
  km_llama_weights_free(&m->weights);
  km_tokenizer_free(m->tok);
  if (m->is_gguf) km_gguf_free(&m->gguf);
  if (m->shards)
    for (uint32_t i = 0; i < m->n_files; i++) km_safetensors_free(&m->shards[i]);
  free(m->shards);
  if (m->has_index) km_st_index_free(&m->index);
  for (uint32_t i = 0; i < m->n_files; i++) free(m->files[i]);
  free(m->rope_freqs);
  free(m->dir);
  memset(m, 0, sizeof *m);
}

uint64_t lr_model_bytes(const lr_model *m) {
  uint64_t b = 0;
  for (uint32_t i = 0; i < m->n_files; i++) b += m->file_sizes[i];
  return b;
}

/* ---- Generation ---------------------------------------------------------------- */

typedef struct lr_args {
  const char *model, *prompt, *label;
  int32_t n;
  float temp, top_p;
  int32_t top_k;
  uint64_t seed;
  bool json, ignore_eos, no_program, echo;
  int32_t max_seq, batch, chain;
  uint32_t kv;
} lr_args;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int usage(const char *msg, const char *arg) {
  fprintf(stderr, "llm: ");
  fprintf(stderr, msg, arg);
  fprintf(stderr, "\n");
  return 2;
}

static bool parse_i(const char *s, long long lo, long long hi, long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static int parse_args(int argc, char **argv, lr_args *a) {
  memset(a, 0, sizeof *a);
  a->n = 128;
  a->top_p = 1.0f;
  a->echo = true;
  a->kv = KILN_GPU_F32;
  a->chain = LR_DECODE_CHAIN;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    bool has = i + 1 < argc;
    const char *v = has ? argv[i + 1] : NULL;
    long long x;
    char *end;
#define NEED() \
  if (!has) return usage("option %s needs a value", o); \
  i++
    if (!strcmp(o, "--model")) {
      NEED();
      a->model = v;
    } else if (!strcmp(o, "--prompt")) {
      NEED();
      a->prompt = v;
    } else if (!strcmp(o, "--label")) {
      NEED();
      a->label = v;
    } else if (!strcmp(o, "-n")) {
      NEED();
      if (!parse_i(v, 0, 1 << 24, &x)) return usage("-n takes a count, not '%s'", v);
      a->n = (int32_t)x;
    } else if (!strcmp(o, "--temp")) {
      NEED();
      a->temp = strtof(v, &end);
      if (*end || !(a->temp >= 0)) return usage("--temp takes a number >= 0, not '%s'", v);
    } else if (!strcmp(o, "--top-p")) {
      NEED();
      a->top_p = strtof(v, &end);
      if (*end || !(a->top_p > 0 && a->top_p <= 1))
        return usage("--top-p takes a number in (0, 1], not '%s'", v);
    } else if (!strcmp(o, "--top-k")) {
      NEED();
      if (!parse_i(v, 0, 1 << 30, &x)) return usage("--top-k takes a count, not '%s'", v);
      a->top_k = (int32_t)x;
    } else if (!strcmp(o, "--seed")) {
      NEED();
      errno = 0;
      a->seed = strtoull(v, &end, 10);
      if (errno || *end || !*v || *v == '-')
        return usage("--seed takes an unsigned integer, not '%s'", v);
    } else if (!strcmp(o, "--max-seq")) {
      NEED();
      if (!parse_i(v, 1, 1 << 24, &x)) return usage("--max-seq takes a count, not '%s'", v);
      a->max_seq = (int32_t)x;
    } else if (!strcmp(o, "--batch")) {
      NEED();
      if (!parse_i(v, 1, 1 << 16, &x)) return usage("--batch takes a count, not '%s'", v);
      a->batch = (int32_t)x;
    } else if (!strcmp(o, "--chain")) {
      NEED();
      if (!parse_i(v, 0, LF_MAX_CHAIN, &x))
        return usage("--chain takes a count of steps from 0 to 64, not '%s'", v);
      a->chain = (int32_t)x;
    } else if (!strcmp(o, "--kv")) {
      NEED();
      if (!strcmp(v, "f32")) a->kv = KILN_GPU_F32;
      else if (!strcmp(v, "f16")) a->kv = KILN_GPU_F16;
      else if (!strcmp(v, "bf16")) a->kv = KILN_GPU_BF16;
      else return usage("--kv takes f32, f16 or bf16, not '%s'", v);
    } else if (!strcmp(o, "--json")) {
      a->json = true;
    } else if (!strcmp(o, "--ignore-eos")) {
      a->ignore_eos = true;
    } else if (!strcmp(o, "--no-program")) {
      a->no_program = true;
    } else if (!strcmp(o, "--no-echo")) {
      a->echo = false;
    } else {
      return usage("unknown option '%s'", o);
    }
#undef NEED
  }
  if (!a->model) return usage("--model is required%s", "");
  if (!a->prompt) a->prompt = "";
  return 0;
}

/* JSON string body (no quotes) of bytes that may hold invalid UTF-8
 * (written as U+FFFD, as tokenizers' decode does). */
static void json_str(FILE *f, const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = s[i];
    if (ch >= 0x80) {
      size_t k = km_utf8_len(s + i, n - i);
      if (k) {
        fwrite(s + i, 1, k, f);
        i += k - 1;
      } else {
        fputs("\\ufffd", f);
      }
    } else if (ch == '"' || ch == '\\') {
      fprintf(f, "\\%c", ch);
    } else if (ch == '\n') {
      fputs("\\n", f);
    } else if (ch < 0x20) {
      fprintf(f, "\\u%04x", ch);
    } else {
      fputc(ch, f);
    }
  }
}

/* Length of the longest prefix of buf[0,n) that does not end inside a
 * UTF-8 sequence (incomplete tails wait for the next token). */
static size_t utf8_complete(const char *buf, size_t n) {
  size_t i = n, back = 0;
  while (i > 0 && back < 4) {
    unsigned char ch = (unsigned char)buf[i - 1];
    if ((ch & 0xC0) != 0x80) {
      size_t need = ch >= 0xF0 ? 4 : ch >= 0xE0 ? 3 : ch >= 0xC0 ? 2 : 1;
      return back + 1 >= need ? n : i - 1;
    }
    i--;
    back++;
  }
  return n;
}

static bool is_eos(const km_llama_config *c, int32_t id) {
  for (int i = 0; i < c->n_eos; i++)
    if (c->eos_ids[i] == id) return true;
  return false;
}

int lr_main(int argc, char **argv, const lf_sink *sink) {
  lr_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  const char *who = a.label ? a.label : "llm";
  double t_load = now_ms();
  lr_model m;
  km_error err;
  if (lr_model_load(a.model, true, &m, &err)) {
    fprintf(stderr, "%s: %s\n", who, err.message);
    return 1;
  }
  char msg[512] = "";
  lf_weights w = {0};
  lf_state *st = NULL;
  int32_t *ids = NULL;
  size_t n_ids = 0;
  km_sampler smp = {0};
  rc = 1;

  /* Each weight file is the memory the host granted under its name. */
  uint32_t handles[LR_MAX_FILES];
  for (uint32_t i = 0; i < m.n_files; i++) {
    int32_t h = sink->memory_lookup(sink->ctx, m.files[i]);
    if (h < 0) {
      sink->last_error(sink->ctx, msg, sizeof msg);
      fprintf(stderr, "%s: weight file %s: %s\n", who, m.files[i], msg);
      goto out;
    }
    handles[i] = (uint32_t)h;
  }
  if (lf_weights_from_refs(&m.cfg, &m.weights, handles, m.n_files, &w, &err)) {
    fprintf(stderr, "%s: %s\n", who, err.message);
    goto out;
  }
  if (km_tokenizer_encode(m.tok, a.prompt, strlen(a.prompt), true, &ids, &n_ids, &err)) {
    fprintf(stderr, "%s: prompt: %s\n", who, err.message);
    goto out;
  }
  if (n_ids == 0) {
    fprintf(stderr, "%s: the prompt is empty and the model adds no BOS token\n", who);
    goto out;
  }
  if (km_sampler_init(&smp, m.cfg.vocab, a.temp, a.top_k, a.top_p, a.seed, &err)) {
    fprintf(stderr, "%s: %s\n", who, err.message);
    goto out;
  }
  int64_t need = (int64_t)n_ids + a.n;
  if (need > m.cfg.max_pos) need = m.cfg.max_pos;
  if ((int64_t)n_ids > need) {
    fprintf(stderr, "%s: the prompt has %zu tokens; the model's context is %d\n", who,
            n_ids, m.cfg.max_pos);
    goto out;
  }
  lf_options lo = {0};
  lo.max_seq = a.max_seq ? a.max_seq : (int32_t)need;
  lo.max_batch = a.batch ? a.batch : 128;
  lo.kv_dtype = a.kv;
  lo.no_program = a.no_program;
  lo.argmax_only = !(smp.temperature > 0); /* greedy: the argmax suffices */
  lo.chain = a.chain;
  if (lf_create(&m.cfg, &w, m.rope_freqs, &lo, sink, &st, msg, sizeof msg)) {
    fprintf(stderr, "%s: %s\n", who, msg);
    goto out;
  }
  t_load = now_ms() - t_load;

  if (!a.json && a.echo) {
    fputs(a.prompt, stdout);
    fflush(stdout);
  }
  const float *logits;
  double t0 = now_ms();
  if (lf_prefill(st, ids, (int32_t)n_ids, &logits, msg, sizeof msg)) {
    fprintf(stderr, "%s: prefill: %s\n", who, msg);
    goto out;
  }
  double t_prefill = now_ms() - t0;
  if (a.json)
    printf("{\"event\":\"prefill\",\"tokens\":%zu,\"ms\":%.3f,\"load_ms\":%.3f,"
           "\"decode_ops\":%d,\"weight_bytes_per_token\":%llu}\n",
           n_ids, t_prefill, t_load, lf_decode_op_count(st),
           (unsigned long long)lf_weight_bytes_per_token(st));

  char pend[64];
  size_t npend = 0;
  int32_t generated = 0;
  double t_decode = 0, t_first = 0;
  int32_t max_new = (int32_t)(lo.max_seq - (int32_t)n_ids + 1);
  if (a.n < max_new) max_new = a.n;
  int32_t next = km_sample(&smp, logits);
  /* Tokens decoded ahead by a chained decode (greedy: lf_decode_chain),
   * taken one per iteration; each is timed as its chain's time / length. */
  int32_t ahead[LF_MAX_CHAIN];
  int32_t n_ahead = 0, at_ahead = 0;
  double ahead_ms = 0;
  double t_tok = now_ms();
  for (int32_t i = 0; i < max_new; i++) {
    bool stop = !a.ignore_eos && is_eos(&m.cfg, next);
    double step_ms = i > 0 && n_ahead ? ahead_ms : now_ms() - t_tok;
    if (i == 0) t_first = t_prefill + step_ms;
    if (stop) break;
    generated++;
    /* Stream the token's bytes, holding back an incomplete UTF-8 tail. */
    char tb[256];
    int nb = km_tokenizer_is_special(m.tok, next)
                 ? 0
                 : km_tokenizer_token_bytes(m.tok, next, tb, sizeof tb);
    if (nb < 0) nb = 0;
    if (nb > (int)sizeof tb) nb = (int)sizeof tb;
    size_t nout = 0;
    if (npend + (size_t)nb <= sizeof pend) {
      memcpy(pend + npend, tb, (size_t)nb);
      npend += (size_t)nb;
      nout = utf8_complete(pend, npend);
    } else { /* a long token: flush everything */
      if (!a.json) fwrite(pend, 1, npend, stdout);
      memcpy(pend, tb, (size_t)nb < sizeof pend ? (size_t)nb : sizeof pend);
      npend = (size_t)nb < sizeof pend ? (size_t)nb : sizeof pend;
      nout = npend;
    }
    if (a.json) {
      printf("{\"event\":\"token\",\"i\":%d,\"id\":%d,\"ms\":%.3f,\"text\":\"", i, next,
             step_ms);
      json_str(stdout, pend, nout);
      printf("\"}\n");
    } else {
      fwrite(pend, 1, nout, stdout);
    }
    memmove(pend, pend + nout, npend - nout);
    npend -= nout;
    fflush(stdout);
    if (i + 1 == max_new) break;
    if (at_ahead < n_ahead) {   /* decoded by the last chain */
      next = ahead[at_ahead++];
      continue;
    }
    n_ahead = at_ahead = 0;
    t_tok = now_ms();
    const int32_t chain = lf_chain_len(st);
    if (chain > 1 && max_new - (i + 1) >= chain) {   /* chain <= LF_MAX_CHAIN */
      if (lf_decode_chain(st, next, ahead, msg, sizeof msg)) {
        fprintf(stderr, "%s: decode: %s\n", who, msg);
        goto out;
      }
      n_ahead = chain;
      next = ahead[at_ahead++];
    } else {
      int32_t am;
      if (lf_decode(st, next, &logits, &am, msg, sizeof msg)) {
        fprintf(stderr, "%s: decode: %s\n", who, msg);
        goto out;
      }
      next = smp.temperature > 0 ? km_sample(&smp, logits) : am;
    }
    const double took = now_ms() - t_tok;
    t_decode += took;
    ahead_ms = n_ahead ? took / n_ahead : 0;
  }
  if (npend && !a.json) fwrite(pend, 1, npend, stdout);
  int32_t steps = generated > 0 ? generated - 1 : 0;
  if (a.json) {
    printf("{\"event\":\"done\",\"prompt_tokens\":%zu,\"generated\":%d,"
           "\"prefill_ms\":%.3f,\"prefill_tok_s\":%.3f,\"first_token_ms\":%.3f,"
           "\"decode_ms\":%.3f,\"decode_steps\":%d,\"decode_tok_s\":%.3f}\n",
           n_ids, generated, t_prefill, t_prefill > 0 ? n_ids * 1e3 / t_prefill : 0,
           t_first, t_decode, steps, t_decode > 0 ? steps * 1e3 / t_decode : 0);
  } else {
    fputc('\n', stdout);
  }
  fflush(stdout);
  rc = 0;
out:
  lf_free(st);
  km_sampler_free(&smp);
  free(ids);
  lf_weights_free(&w);
  lr_model_free(&m);
  return rc;
}
