/* Model files: the reference models (tests/data/models, written by
 * tools/make_reference_models.py) load from safetensors, sharded
 * safetensors and GGUF with the config and every weight checked; each kind
 * of malformed file (truncated, bad header length, offsets past the end,
 * overlapping tensors, unknown dtype, wrong shapes, forged counts, bad
 * JSON) fails with its own code before any weight byte is used; RoPE
 * frequencies match transformers'. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_test.h"
#include "model/gguf.h"
#include "model/json.h"
#include "model/llama_config.h"
#include "model/safetensors.h"

/* tests/data/<rel>, whole. */
static char *slurp(const char *rel, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/data/%s", KILN_SOURCE_DIR, rel);
  return kiln_test_read_file(path, len);
}

/* ---- JSON ---------------------------------------------------------------- */

static km_code json_code(const char *s) {
  km_json_doc *d = NULL;
  km_error e;
  km_code c = km_json_parse(s, strlen(s), NULL, &d, &e);
  km_json_free(d);
  return c;
}

static void test_json_is_strict(kiln_test *t) {
  KILN_EXPECT(t, json_code("{\"a\": [1, 2.5, -0, 1e3, true, false, null, \"x\"]}") == KM_OK);
  KILN_EXPECT(t, json_code("  7  ") == KM_OK);
  KILN_EXPECT(t, json_code("") == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, json_code("[1, 2") == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, json_code("\"abc") == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, json_code("[1, 2,]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("{\"a\": 1,}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[01]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[1.]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[.5]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[NaN]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[1] [2]") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("// c\n1") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("{'a': 1}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("\"tab\there\"") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("\"\\x\"") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("\"\\ud800\"") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("\"\\udc00\\ud800\"") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("\"\xC0\xAF\"") == KM_ERR_FORMAT);       /* overlong */
  KILN_EXPECT(t, json_code("\"\xED\xA0\x80\"") == KM_ERR_FORMAT);   /* surrogate */
  KILN_EXPECT(t, json_code("\"\xF4\x90\x80\x80\"") == KM_ERR_FORMAT); /* > U+10FFFF */
  KILN_EXPECT(t, json_code("\"\xE2\x82\"") == KM_ERR_FORMAT);       /* cut short */
  KILN_EXPECT(t, json_code("{\"a\": 1, \"a\": 2}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, json_code("[1234567890123456789012345678901234567890123456789012345678901234567890]") ==
                     KM_ERR_LIMIT);
  /* Deep nesting: 64 levels are fine, 65 are not, 100000 do not overflow
   * the stack. */
  char deep[200001];
  for (int n = 64; n <= 65; n++) {
    memset(deep, '[', (size_t)n);
    memset(deep + n, ']', (size_t)n);
    deep[2 * n] = 0;
    KILN_EXPECT(t, json_code(deep) == (n == 64 ? KM_OK : KM_ERR_LIMIT));
  }
  memset(deep, '[', 100000);
  memset(deep + 100000, ']', 100000);
  deep[200000] = 0;
  KILN_EXPECT(t, json_code(deep) == KM_ERR_LIMIT);
  /* Duplicate keys in a large object (the hashed path). */
  char big[4096] = "{";
  for (int i = 0; i < 100; i++) sprintf(big + strlen(big), "\"k%d\": %d,", i, i);
  strcat(big, "\"k7\": 0}");
  KILN_EXPECT(t, json_code(big) == KM_ERR_FORMAT);
}

static void test_json_values(kiln_test *t) {
  const char *s = "{\"n\": -9223372036854775808, \"f\": 1e-05, \"big\": 18446744073709551616,"
                  " \"s\": \"a\\u0000b\\u00e9\\ud83d\\ude00\", \"i\": 131072.0}";
  km_json_doc *d;
  km_error e;
  KILN_EXPECT(t, km_json_parse(s, strlen(s), NULL, &d, &e) == KM_OK);
  const km_json *r = km_json_root(d);
  int64_t i;
  double f;
  KILN_EXPECT(t, km_json_int(km_json_get(r, "n"), &i) && i == INT64_MIN);
  KILN_EXPECT(t, km_json_num(km_json_get(r, "f"), &f) && f == 1e-05);
  KILN_EXPECT(t, !km_json_int(km_json_get(r, "big"), &i));
  KILN_EXPECT(t, km_json_int(km_json_get(r, "i"), &i) && i == 131072);
  const km_json *str = km_json_get(r, "s");
  KILN_EXPECT(t, str && str->len == 9 && !memcmp(str->u.str, "a\0b\xC3\xA9\xF0\x9F\x98\x80", 9));
  KILN_EXPECT(t, km_json_get(r, "missing") == NULL && km_json_get(NULL, "x") == NULL);
  km_json_free(d);
}

/* ---- safetensors --------------------------------------------------------- */

static km_code st_parse(const void *data, size_t n, km_safetensors *st, km_error *e) {
  km_buffer b = {data, n};
  return km_safetensors_read(km_buffer_read, &b, n, st, e);
}

/* A safetensors file from a header string and data_len zero bytes. */
static char *st_make(const char *header, uint64_t declared_len, size_t data_len, size_t *n) {
  size_t h = strlen(header);
  *n = 8 + h + data_len;
  char *p = calloc(1, *n);
  for (int i = 0; i < 8; i++) p[i] = (char)(declared_len >> (8 * i));
  memcpy(p + 8, header, h);
  return p;
}

static km_code st_code(const char *header, size_t data_len) {
  size_t n;
  char *p = st_make(header, strlen(header), data_len, &n);
  km_safetensors st;
  km_error e;
  km_code c = st_parse(p, n, &st, &e);
  if (!c) km_safetensors_free(&st);
  free(p);
  return c;
}

static void test_safetensors_rejects_bad_files(kiln_test *t) {
  /* good: two F32 [2] tensors tiling 16 bytes */
  const char *good = "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                     " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]},"
                     " \"__metadata__\": {\"format\": \"pt\"}}";
  KILN_EXPECT(t, st_code(good, 16) == KM_OK);
  KILN_EXPECT(t, st_code(good, 15) == KM_ERR_RANGE);   /* data cut short */
  KILN_EXPECT(t, st_code(good, 17) == KM_ERR_FORMAT);  /* trailing bytes */
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                         " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12)
                     == KM_ERR_FORMAT); /* overlap */
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
                         " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]}}", 20)
                     == KM_ERR_FORMAT); /* hole */
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4)
                     == KM_ERR_RANGE); /* past the end */
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8)
                     == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8)
                     == KM_ERR_SHAPE);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296],"
                         " \"data_offsets\": [0, 8]}}", 8) == KM_ERR_LIMIT);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8)
                     == KM_ERR_FORMAT);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8)
                     == KM_ERR_FORMAT);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8) == KM_ERR_FORMAT);
  KILN_EXPECT(t, st_code("[1]", 0) == KM_ERR_FORMAT);
  KILN_EXPECT(t, st_code("{\"a\": 1", 0) == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, st_code("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4], "
                         "\"x\": 1}}", 4) == KM_ERR_FORMAT);
  /* Header length: past the file, huge, too small; file shorter than 8. */
  size_t n;
  km_safetensors st;
  km_error e;
  char *p = st_make("{}", 1000, 0, &n);
  KILN_EXPECT(t, st_parse(p, n, &st, &e) == KM_ERR_TRUNCATED);
  free(p);
  p = st_make("{}", UINT64_MAX, 0, &n);
  KILN_EXPECT(t, st_parse(p, n, &st, &e) == KM_ERR_LIMIT);
  free(p);
  p = st_make("{}", 2, 0, &n);
  KILN_EXPECT(t, st_parse(p, n, &st, &e) == KM_OK);
  km_safetensors_free(&st);
  KILN_EXPECT(t, st_parse(p, 5, &st, &e) == KM_ERR_TRUNCATED);
  free(p);
}

static void test_safetensors_truncated_anywhere(kiln_test *t) {
  size_t n;
  char *p = slurp("models/mha-tied/model.safetensors", &n);
  KILN_EXPECT(t, p != NULL);
  if (!p) return;
  km_safetensors st;
  km_error e;
  KILN_EXPECT(t, st_parse(p, n, &st, &e) == KM_OK);
  uint64_t hdr = st.data_offset;
  km_safetensors_free(&st);
  int ok = 0;
  for (size_t cut = 0; cut < n; cut += cut < hdr + 64 ? 1 : 997) {
    km_code c = st_parse(p, cut, &st, &e);
    if (c == KM_OK) km_safetensors_free(&st);
    ok += c != KM_OK;
    KILN_EXPECTF(t, c != KM_OK, "cut at %zu parsed", cut);
  }
  KILN_EXPECT(t, ok > 100);
  free(p);
}

/* ---- the reference models ------------------------------------------------ */

typedef struct model {
  km_llama_config cfg;
  km_safetensors st;
  km_st_index ix;
  km_safetensors *shards;
  km_llama_weights w;
} model;

static bool load_hf(kiln_test *t, const char *dir, model *m) {
  memset(m, 0, sizeof *m);
  char rel[256];
  size_t n;
  km_error e = {0};
  snprintf(rel, sizeof rel, "models/%s/config.json", dir);
  char *cfg = slurp(rel, &n);
  KILN_EXPECTF(t, cfg != NULL, "read %s", rel);
  if (!cfg) return false;
  km_code c = km_llama_config_from_hf(cfg, n, &m->cfg, &e);
  free(cfg);
  KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
  if (c) return false;
  snprintf(rel, sizeof rel, "models/%s/model.safetensors.index.json", dir);
  char *idx = slurp(rel, &n);
  if (idx) {
    c = km_st_index_parse(idx, n, &m->ix, &e);
    free(idx);
    KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
    if (c) return false;
    m->shards = calloc(m->ix.n_files, sizeof *m->shards);
    for (uint32_t i = 0; i < m->ix.n_files; i++) {
      snprintf(rel, sizeof rel, "models/%s/%s", dir, m->ix.files[i]);
      char *f = slurp(rel, &n);
      KILN_EXPECT(t, f != NULL);
      c = f ? st_parse(f, n, &m->shards[i], &e) : KM_ERR_IO;
      free(f);
      KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
      if (c) return false;
    }
    c = km_st_index_check(&m->ix, m->shards, &e);
    KILN_EXPECTF(t, c == KM_OK, "%s: %s", dir, e.message);
    km_sharded sh = {&m->ix, m->shards};
    c = km_llama_weights_resolve(&m->cfg, km_lookup_sharded, &sh, &m->w, &e);
  } else {
    snprintf(rel, sizeof rel, "models/%s/model.safetensors", dir);
    char *f = slurp(rel, &n);
    KILN_EXPECT(t, f != NULL);
    c = f ? st_parse(f, n, &m->st, &e) : KM_ERR_IO;
    free(f);
    KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
    if (c) return false;
    c = km_llama_weights_resolve(&m->cfg, km_lookup_safetensors, &m->st, &m->w, &e);
  }
  KILN_EXPECTF(t, c == KM_OK, "%s weights: %s", dir, e.message);
  return c == KM_OK;
}

static void free_model(model *m) {
  km_llama_weights_free(&m->w);
  km_safetensors_free(&m->st);
  for (uint32_t i = 0; m->shards && i < m->ix.n_files; i++) km_safetensors_free(&m->shards[i]);
  free(m->shards);
  km_st_index_free(&m->ix);
}

static void test_reference_models_load(kiln_test *t) {
  struct {
    const char *dir;
    int heads, kv, layers;
    bool tied;
    km_rope_type rope;
    km_dtype dtype;
  } want[] = {
      {"gqa", 4, 2, 2, false, KM_ROPE_DEFAULT, KM_DTYPE_F32},
      {"mha-tied", 4, 4, 2, true, KM_ROPE_DEFAULT, KM_DTYPE_F32},
      {"llama3-rope", 8, 2, 2, false, KM_ROPE_LLAMA3, KM_DTYPE_F32},
      {"mqa-deep", 4, 1, 3, false, KM_ROPE_DEFAULT, KM_DTYPE_F32},
      {"gqa-bf16-sharded", 4, 2, 2, false, KM_ROPE_DEFAULT, KM_DTYPE_BF16},
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    model m;
    if (load_hf(t, want[i].dir, &m)) {
      const km_llama_config *c = &m.cfg;
      KILN_EXPECTF(t, c->hidden == 64 && c->intermediate == 96 && c->vocab == 384 &&
                          c->n_heads == want[i].heads && c->n_kv_heads == want[i].kv &&
                          c->n_layers == want[i].layers && c->head_dim == 64 / want[i].heads &&
                          c->tie_word_embeddings == want[i].tied && c->rope_type == want[i].rope &&
                          c->bos_id == 382 && c->n_eos == 1 && c->eos_ids[0] == 383,
                   "%s config", want[i].dir);
      KILN_EXPECT(t, m.w.tok_embd.t && m.w.tok_embd.t->dtype == want[i].dtype);
      KILN_EXPECT(t, (m.w.output.t == m.w.tok_embd.t) == want[i].tied);
      const km_weight_ref *q = km_llama_layer_weight(&m.w, c->n_layers - 1, KM_W_Q);
      KILN_EXPECT(t, q->t && q->t->shape[0] == 64 && q->t->shape[1] == 64);
      const km_weight_ref *k = km_llama_layer_weight(&m.w, 0, KM_W_K);
      KILN_EXPECT(t, k->t && k->t->shape[0] == want[i].kv * c->head_dim);
    }
    free_model(&m);
  }
}

static void test_embedded_default_model_loads(kiln_test *t) {
  /* models/tiny (tools/train_tiny.py): what `make demo` runs. */
  model m;
  if (load_hf(t, "../../../models/tiny", &m)) {
    KILN_EXPECT(t, m.cfg.vocab == 258 && m.cfg.tie_word_embeddings && m.cfg.bos_id == 256 &&
                       m.cfg.n_eos == 1 && m.cfg.eos_ids[0] == 257);
    KILN_EXPECT(t, m.w.output.t == m.w.tok_embd.t && m.w.tok_embd.t->dtype == KM_DTYPE_F32);
  }
  free_model(&m);
}

static void test_gguf_models_match_hf(kiln_test *t) {
  model hf;
  bool ok = load_hf(t, "gqa", &hf);
  const char *files[] = {"models/gqa/model-f32.gguf", "models/gqa/model-q8_0.gguf"};
  for (int f = 0; f < 2 && ok; f++) {
    size_t n;
    char *p = slurp(files[f], &n);
    KILN_EXPECT(t, p != NULL);
    if (!p) continue;
    km_buffer b = {(const uint8_t *)p, n};
    km_gguf g;
    km_error e = {0};
    km_code c = km_gguf_read(km_buffer_read, &b, n, &g, &e);
    KILN_EXPECTF(t, c == KM_OK, "%s: %s", files[f], e.message);
    if (!c) {
      km_llama_config cfg;
      c = km_llama_config_from_gguf(&g, &cfg, &e);
      KILN_EXPECTF(t, c == KM_OK, "%s config: %s", files[f], e.message);
      KILN_EXPECT(t, cfg.layout == KM_LAYOUT_GGUF && g.version == 3 && g.alignment == 32);
      KILN_EXPECT(t, cfg.hidden == hf.cfg.hidden && cfg.intermediate == hf.cfg.intermediate &&
                         cfg.n_layers == hf.cfg.n_layers && cfg.n_heads == hf.cfg.n_heads &&
                         cfg.n_kv_heads == hf.cfg.n_kv_heads && cfg.head_dim == hf.cfg.head_dim &&
                         cfg.vocab == hf.cfg.vocab && cfg.max_pos == hf.cfg.max_pos &&
                         cfg.rms_eps == hf.cfg.rms_eps && cfg.rope_theta == hf.cfg.rope_theta &&
                         cfg.bos_id == hf.cfg.bos_id && cfg.eos_ids[0] == hf.cfg.eos_ids[0]);
      km_llama_weights w;
      c = km_llama_weights_resolve(&cfg, km_lookup_gguf, &g, &w, &e);
      KILN_EXPECTF(t, c == KM_OK, "%s weights: %s", files[f], e.message);
      if (!c) {
        KILN_EXPECT(t, !cfg.tie_word_embeddings && w.output.t != w.tok_embd.t);
        const km_weight_ref *q = km_llama_layer_weight(&w, 1, KM_W_Q);
        const km_weight_ref *norm = km_llama_layer_weight(&w, 1, KM_W_ATTN_NORM);
        KILN_EXPECT(t, q->t->dtype == (f ? KM_DTYPE_Q8_0 : KM_DTYPE_F32));
        KILN_EXPECT(t, q->t->size == (f ? 64u * 64 / 32 * 34 : 64u * 64 * 4));
        KILN_EXPECT(t, norm->t->dtype == KM_DTYPE_F32);
        KILN_EXPECT(t, q->t->offset % 32 == 0 && q->t->offset + q->t->size <= n);
        const km_gguf_tensor *gt = km_gguf_find_tensor(&g, "blk.0.ffn_down.weight");
        KILN_EXPECT(t, gt && gt->ne[0] == 96 && gt->ne[1] == 64 && gt->info.shape[0] == 64);
        if (!f) {
          /* The f32 GGUF holds the HF weights, Q/K rows permuted. */
          const km_tensor_info *hq = km_llama_layer_weight(&hf.w, 1, KM_W_Q)->t;
          char *hfile;
          size_t hn;
          hfile = slurp("models/gqa/model.safetensors", &hn);
          const float *a = (const float *)(hfile + hq->offset), *gq = (const float *)(p + q->t->offset);
          int same = 1;
          for (uint32_t r = 0; r < 64 && same; r++) {
            uint32_t head = r / 16, hr = km_gguf_rope_hf_row(r % 16, 16);
            KILN_EXPECT(t, km_gguf_rope_gguf_row(hr, 16) == r % 16);
            same = !memcmp(gq + r * 64, a + (head * 16 + hr) * 64, 64 * sizeof(float));
          }
          KILN_EXPECT(t, same);
          free(hfile);
        }
      }
      km_llama_weights_free(&w);
    }
    km_gguf_free(&g);
    free(p);
  }
  free_model(&hf);
}

static void test_rope_inv_freq_matches_transformers(kiln_test *t) {
  const char *dirs[] = {"gqa", "mha-tied", "llama3-rope", "mqa-deep"};
  for (size_t i = 0; i < 4; i++) {
    model m;
    if (!load_hf(t, dirs[i], &m)) {
      free_model(&m);
      continue;
    }
    char rel[256];
    size_t n;
    snprintf(rel, sizeof rel, "models/%s/reference.json", dirs[i]);
    char *s = slurp(rel, &n);
    km_json_doc *d;
    KILN_EXPECT(t, s && km_json_parse(s, n, NULL, &d, NULL) == KM_OK);
    const km_json *want = km_json_get(km_json_root(d), "inv_freq");
    float got[64];
    KILN_EXPECT(t, km_llama_rope_inv_freq(&m.cfg, NULL, got, NULL) == KM_OK);
    KILN_EXPECT(t, want && want->len == (uint32_t)m.cfg.head_dim / 2);
    double worst = 0;
    for (uint32_t k = 0; want && k < want->len; k++) {
      double w;
      km_json_num(&want->u.items[k], &w);
      double rel_err = fabs(got[k] - w) / w;
      if (rel_err > worst) worst = rel_err;
    }
    /* float32 within one rounding step (transformers takes powf in
     * float32 with its own vector math library). */
    KILN_EXPECTF(t, worst <= 1.2e-7, "%s: inv_freq relative error %g", dirs[i], worst);
    if (worst > 0) printf("  %s: inv_freq differs from transformers by up to %.2g (relative)\n", dirs[i], worst);
    km_json_free(d);
    free(s);
    free_model(&m);
  }
}

/* ---- configs ------------------------------------------------------------- */

static km_code cfg_code(const char *json) {
  km_llama_config c;
  km_error e;
  return km_llama_config_from_hf(json, strlen(json), &c, &e);
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 96, \"num_hidden_layers\": 2, " \
             "\"vocab_size\": 384, \"max_position_embeddings\": 256"

static void test_config_checks(kiln_test *t) {
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4}") == KM_OK);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"num_key_value_heads\": 3}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 0}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE "}") == KM_ERR_NOT_FOUND);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"head_dim\": 15}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"rms_norm_eps\": -1}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"model_type\": \"gpt2\"}") == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"hidden_size\": 1e10}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"rope_scaling\": {\"type\": \"yarn\", "
                          "\"factor\": 4}}") == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": "
                          "\"llama3\", \"factor\": 8}}") == KM_ERR_NOT_FOUND);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"eos_token_id\": 384}") == KM_ERR_FORMAT);
  KILN_EXPECT(t, cfg_code("{" BASE ", \"num_attention_heads\": 4, \"attention_bias\": true}") == KM_ERR_UNSUPPORTED);
  /* transformers 4 layout: top-level rope_theta, rope_scaling with "type";
   * eos as a list. */
  const char *v4 = "{" BASE ", \"num_attention_heads\": 4, \"rope_theta\": 500000.0, \"eos_token_id\": "
                   "[1, 2, 3], \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 32.0, "
                   "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
                   "\"original_max_position_embeddings\": 8192}}";
  km_llama_config c;
  KILN_EXPECT(t, km_llama_config_from_hf(v4, strlen(v4), &c, NULL) == KM_OK);
  KILN_EXPECT(t, c.rope_theta == 500000.0 && c.rope_type == KM_ROPE_LLAMA3 && c.rope_factor == 32.0 &&
                     c.rope_original_max_pos == 8192 && c.n_eos == 3 && c.eos_ids[2] == 3 &&
                     c.n_kv_heads == 4 && c.head_dim == 16 && !c.tie_word_embeddings);
  /* Llama 3.1 8B's rope, as transformers computes it (values from
   * transformers 5.23, float32). */
  c.head_dim = 128;
  float f[64];
  KILN_EXPECT(t, km_llama_rope_inv_freq(&c, NULL, f, NULL) == KM_OK);
  static const struct { int i; float v; } ref[] = {
      {0, 1.0f}, {20, 0.016560440883040428f}, {40, 8.570255886297673e-06f},
      {45, 3.0744097330170916e-06f}, {50, 1.1028836297555245e-06f}, {63, 7.672314694673332e-08f}};
  for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++)
    KILN_EXPECTF(t, fabsf(f[ref[i].i] - ref[i].v) <= 1.2e-7f * ref[i].v, "inv_freq[%d] = %.9g, want %.9g",
                 ref[i].i, (double)f[ref[i].i], (double)ref[i].v);
}

static void test_rope_scaling_variants(kiln_test *t) {
  km_llama_config c = {.hidden = 64, .intermediate = 96, .n_layers = 1, .n_heads = 4,
                       .n_kv_heads = 4, .head_dim = 16, .vocab = 10, .max_pos = 64,
                       .rms_eps = 1e-5f, .rope_theta = 10000.0, .bos_id = -1};
  float base[8], f[8], freqs[8] = {1, 1, 2, 2, 4, 4, 8, 8};
  KILN_EXPECT(t, km_llama_rope_inv_freq(&c, NULL, base, NULL) == KM_OK);
  KILN_EXPECT(t, base[0] == 1.0f && base[7] < base[6]);
  /* GGUF rope_freqs.weight divides, as llama.cpp does. */
  KILN_EXPECT(t, km_llama_rope_inv_freq(&c, freqs, f, NULL) == KM_OK);
  for (int i = 0; i < 8; i++) KILN_EXPECT(t, f[i] == base[i] / freqs[i]);
  freqs[3] = 0;
  KILN_EXPECT(t, km_llama_rope_inv_freq(&c, freqs, f, NULL) == KM_ERR_FORMAT);
  c.rope_type = KM_ROPE_LINEAR;
  c.rope_factor = 4;
  KILN_EXPECT(t, km_llama_rope_inv_freq(&c, NULL, f, NULL) == KM_OK);
  for (int i = 0; i < 8; i++) KILN_EXPECT(t, f[i] == base[i] / 4.0f);
}

static void test_gguf_config_errors(kiln_test *t);

static void test_weights_wrong_shape_or_missing(kiln_test *t) {
  model m;
  if (!load_hf(t, "gqa", &m)) {
    free_model(&m);
    return;
  }
  km_llama_weights w;
  km_error e;
  km_llama_config c = m.cfg;
  c.n_kv_heads = 4; /* k_proj is [32, 64]: the config now wants [64, 64] */
  KILN_EXPECT(t, km_llama_weights_resolve(&c, km_lookup_safetensors, &m.st, &w, &e) == KM_ERR_SHAPE);
  KILN_EXPECT(t, strstr(e.message, "k_proj") != NULL);
  c = m.cfg;
  c.intermediate = 128;
  KILN_EXPECT(t, km_llama_weights_resolve(&c, km_lookup_safetensors, &m.st, &w, &e) == KM_ERR_SHAPE);
  c = m.cfg;
  c.n_layers = 3;
  KILN_EXPECT(t, km_llama_weights_resolve(&c, km_lookup_safetensors, &m.st, &w, &e) == KM_ERR_NOT_FOUND);
  KILN_EXPECT(t, strstr(e.message, "model.layers.2.") != NULL);
  c = m.cfg;
  c.vocab = 400;
  KILN_EXPECT(t, km_llama_weights_resolve(&c, km_lookup_safetensors, &m.st, &w, &e) == KM_ERR_SHAPE);
  /* A weight of an integer dtype. */
  const char *hdr = "{\"model.embed_tokens.weight\": {\"dtype\": \"I32\", \"shape\": [384, 64], "
                    "\"data_offsets\": [0, 98304]}}";
  size_t n;
  char *p = st_make(hdr, strlen(hdr), 98304, &n);
  km_safetensors st;
  KILN_EXPECT(t, st_parse(p, n, &st, &e) == KM_OK);
  c = m.cfg;
  KILN_EXPECT(t, km_llama_weights_resolve(&c, km_lookup_safetensors, &st, &w, &e) == KM_ERR_UNSUPPORTED);
  km_safetensors_free(&st);
  free(p);
  free_model(&m);
}

static void test_shard_index_checks(kiln_test *t) {
  km_st_index ix;
  km_error e;
  const char *bad[] = {
      "{\"weight_map\": {\"a\": \"../x.safetensors\"}}",
      "{\"weight_map\": {\"a\": \"/etc/passwd\"}}",
      "{\"weight_map\": {\"a\": \"\"}}",
      "{\"weight_map\": {\"a\": 3}}",
      "{\"metadata\": {}}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    KILN_EXPECTF(t, km_st_index_parse(bad[i], strlen(bad[i]), &ix, &e) == KM_ERR_FORMAT, "%s", bad[i]);
  const char *ok = "{\"metadata\": {\"total_size\": 8}, \"weight_map\": {\"b\": \"s2\", \"a\": \"s1\","
                   " \"c\": \"s1\"}}";
  KILN_EXPECT(t, km_st_index_parse(ok, strlen(ok), &ix, &e) == KM_OK);
  KILN_EXPECT(t, ix.n_files == 2 && !strcmp(ix.files[0], "s2") && km_st_index_find(&ix, "c") == 1 &&
                     km_st_index_find(&ix, "d") == -1);
  /* Shards that disagree with the index. */
  size_t n1, n2;
  const char *h1 = "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
  const char *h2 = "{\"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}";
  char *p1 = st_make(h1, strlen(h1), 4, &n1);
  char *p2 = st_make(h2, strlen(h2), 4, &n2);
  km_safetensors sh[2];
  KILN_EXPECT(t, st_parse(p2, n2, &sh[0], &e) == KM_OK && st_parse(p1, n1, &sh[1], &e) == KM_OK);
  KILN_EXPECT(t, km_st_index_check(&ix, sh, &e) == KM_ERR_NOT_FOUND); /* c is not in s1 */
  km_safetensors_free(&sh[0]);
  km_safetensors_free(&sh[1]);
  free(p1);
  free(p2);
  km_st_index_free(&ix);
}

/* ---- GGUF ---------------------------------------------------------------- */

typedef struct gbuf {
  unsigned char *p;
  size_t n;
} gbuf;

static void put(gbuf *b, const void *s, size_t n) {
  b->p = realloc(b->p, b->n + n);
  memcpy(b->p + b->n, s, n);
  b->n += n;
}
static void put_u32(gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(gbuf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(gbuf *b, const char *s) {
  put_u64(b, strlen(s));
  put(b, s, strlen(s));
}

typedef struct gspec {
  uint32_t version;
  uint64_t n_kv_override, n_tensors_override;
  uint64_t arr_count;     /* count of the token array */
  uint32_t tensor_type;   /* of tensor "b" */
  uint64_t b_offset;
  uint64_t b_ne0;
  uint32_t alignment;
  bool dup_key, nested, b_at_zero;
  size_t cut;             /* truncate to this many bytes (0: whole) */
} gspec;

/* A small valid GGUF: metadata (a string, a u32 alignment when given, a
 * string array), two tensors a: F32 [8], b: <type> [b_ne0] at b_offset. */
static gbuf gguf_make(gspec s) {
  gbuf b = {0};
  put(&b, "GGUF", 4);
  put_u32(&b, s.version ? s.version : 3);
  put_u64(&b, s.n_tensors_override ? s.n_tensors_override : 2);
  uint64_t nkv = 2 + (s.alignment ? 1 : 0) + (s.dup_key ? 1 : 0) + (s.nested ? 1 : 0);
  put_u64(&b, s.n_kv_override ? s.n_kv_override : nkv);
  put_str(&b, "general.architecture");
  put_u32(&b, KM_GGUF_STRING);
  put_str(&b, "llama");
  if (s.dup_key) {
    put_str(&b, "general.architecture");
    put_u32(&b, KM_GGUF_STRING);
    put_str(&b, "llama");
  }
  if (s.alignment) {
    put_str(&b, "general.alignment");
    put_u32(&b, KM_GGUF_UINT32);
    put_u32(&b, s.alignment);
  }
  if (s.nested) { /* arrays nested 4 deep */
    put_str(&b, "x.nested");
    put_u32(&b, KM_GGUF_ARRAY);
    for (int i = 0; i < 3; i++) {
      put_u32(&b, KM_GGUF_ARRAY);
      put_u64(&b, 1);
    }
    put_u32(&b, KM_GGUF_UINT8);
    put_u64(&b, 0);
  }
  put_str(&b, "tokenizer.ggml.tokens");
  put_u32(&b, KM_GGUF_ARRAY);
  put_u32(&b, KM_GGUF_STRING);
  put_u64(&b, s.arr_count ? s.arr_count : 3);
  put_str(&b, "a");
  put_str(&b, "b");
  put_str(&b, "ab");
  put_str(&b, "a");
  put_u32(&b, 1);
  put_u64(&b, 8);
  put_u32(&b, 0);
  put_u64(&b, 0);
  put_str(&b, "b");
  put_u32(&b, 1);
  put_u64(&b, s.b_ne0 ? s.b_ne0 : 32);
  put_u32(&b, s.tensor_type);
  put_u64(&b, s.b_at_zero ? 0 : s.b_offset ? s.b_offset : 32);
  uint32_t al = s.alignment ? s.alignment : 32;
  while (b.n % al) put(&b, "", 1);
  unsigned char zero[256] = {0};
  put(&b, zero, sizeof zero); /* a (32 bytes) then room for b */
  if (s.cut) b.n = s.cut;
  return b;
}

static km_code gguf_code(gspec s, km_error *e) {
  gbuf b = gguf_make(s);
  km_buffer kb = {b.p, b.n};
  km_gguf g;
  km_code c = km_gguf_read(km_buffer_read, &kb, b.n, &g, e);
  if (!c) km_gguf_free(&g);
  free(b.p);
  return c;
}

static void test_gguf_rejects_bad_files(kiln_test *t) {
  km_error e;
  KILN_EXPECT(t, gguf_code((gspec){0}, &e) == KM_OK);
  KILN_EXPECT(t, gguf_code((gspec){.version = 2}, &e) == KM_OK);
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 8}, &e) == KM_OK);          /* Q8_0 [32] */
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 30, .b_ne0 = 64}, &e) == KM_OK); /* BF16 */
  KILN_EXPECT(t, gguf_code((gspec){.alignment = 64, .b_offset = 64}, &e) == KM_OK);
  KILN_EXPECT(t, gguf_code((gspec){.version = 1}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, gguf_code((gspec){.version = 0x03000000}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, strstr(e.message, "big-endian") != NULL);
  KILN_EXPECT(t, gguf_code((gspec){.version = 4}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 12}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, strstr(e.message, "Q4_K") != NULL);
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 2}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, strstr(e.message, "Q4_0") != NULL);
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 9999}, &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, gguf_code((gspec){.tensor_type = 8, .b_ne0 = 40}, &e) == KM_ERR_SHAPE);
  KILN_EXPECT(t, gguf_code((gspec){.b_offset = 48}, &e) == KM_ERR_FORMAT);    /* misaligned */
  KILN_EXPECT(t, gguf_code((gspec){.b_offset = 4096}, &e) == KM_ERR_RANGE);   /* past the end */
  KILN_EXPECT(t, gguf_code((gspec){.b_offset = UINT64_MAX - 31}, &e) == KM_ERR_RANGE);
  KILN_EXPECT(t, gguf_code((gspec){.b_ne0 = 1000}, &e) == KM_ERR_RANGE);
  KILN_EXPECT(t, gguf_code((gspec){.b_ne0 = UINT64_MAX / 2}, &e) == KM_ERR_LIMIT);
  KILN_EXPECT(t, gguf_code((gspec){.alignment = 48}, &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, gguf_code((gspec){.dup_key = true}, &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, gguf_code((gspec){.nested = true}, &e) == KM_ERR_LIMIT);
  KILN_EXPECT(t, gguf_code((gspec){.n_kv_override = 1ull << 40}, &e) == KM_ERR_LIMIT);
  KILN_EXPECT(t, gguf_code((gspec){.n_kv_override = 60000}, &e) == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, gguf_code((gspec){.n_tensors_override = 3}, &e) == KM_ERR_FORMAT); /* reads zeros */
  KILN_EXPECT(t, gguf_code((gspec){.n_tensors_override = 40}, &e) == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, gguf_code((gspec){.arr_count = 1ull << 60}, &e) == KM_ERR_TRUNCATED);
  gbuf b = gguf_make((gspec){0});
  b.p[0] = 'X';
  km_buffer kb = {b.p, b.n};
  km_gguf g;
  KILN_EXPECT(t, km_gguf_read(km_buffer_read, &kb, b.n, &g, &e) == KM_ERR_FORMAT);
  free(b.p);
}

static void test_gguf_overlapping_tensors(kiln_test *t) {
  /* Both tensors at offset 0. */
  gbuf b = gguf_make((gspec){.b_at_zero = true});
  km_buffer kb = {b.p, b.n};
  km_gguf g;
  km_error e;
  KILN_EXPECT(t, km_gguf_read(km_buffer_read, &kb, b.n, &g, &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, strstr(e.message, "overlap") != NULL);
  free(b.p);
}

static void test_gguf_truncated_anywhere(kiln_test *t) {
  size_t n;
  char *p = slurp("models/gqa/model-q8_0.gguf", &n);
  KILN_EXPECT(t, p != NULL);
  if (!p) return;
  km_gguf g;
  km_error e;
  km_buffer kb = {(const uint8_t *)p, n};
  KILN_EXPECT(t, km_gguf_read(km_buffer_read, &kb, n, &g, &e) == KM_OK);
  uint64_t data = g.data_offset;
  km_gguf_free(&g);
  int fails = 0;
  for (size_t cut = 0; cut < n; cut += cut < data + 64 ? 7 : 1499) {
    kb.size = cut;
    km_code c = km_gguf_read(km_buffer_read, &kb, cut, &g, &e);
    if (!c) km_gguf_free(&g);
    fails += c != KM_OK;
    KILN_EXPECTF(t, c == KM_ERR_TRUNCATED || c == KM_ERR_RANGE, "cut at %zu: %s (%s)", cut,
                 km_code_name(c), e.message);
  }
  KILN_EXPECT(t, fails > 100);
  free(p);
}

static void test_gguf_config_errors(kiln_test *t) {
  /* The builder's file says architecture llama but has no llama.* keys. */
  gbuf b = gguf_make((gspec){0});
  km_buffer kb = {b.p, b.n};
  km_gguf g;
  km_error e;
  km_llama_config c;
  KILN_EXPECT(t, km_gguf_read(km_buffer_read, &kb, b.n, &g, &e) == KM_OK);
  KILN_EXPECT(t, km_llama_config_from_gguf(&g, &c, &e) == KM_ERR_NOT_FOUND);
  KILN_EXPECT(t, strstr(e.message, "llama.embedding_length") != NULL);
  const km_gguf_value *toks = km_gguf_get_array(&g, "tokenizer.ggml.tokens", KM_GGUF_STRING);
  KILN_EXPECT(t, toks && toks->v.arr.n == 3 && !strcmp(((km_gguf_str *)toks->v.arr.data)[2].ptr, "ab"));
  km_gguf_free(&g);
  free(b.p);
}

static int failing_read(void *ctx, uint64_t off, void *buf, size_t len) {
  int *budget = ctx;
  return (*budget)-- > 0 ? 0 * (int)off * (int)len * (memset(buf, 0, len) != NULL) : -1;
}

static void test_read_errors_are_reported(kiln_test *t) {
  int budget = 0;
  km_gguf g;
  km_safetensors st;
  km_error e;
  KILN_EXPECT(t, km_gguf_read(failing_read, &budget, 1000, &g, &e) == KM_ERR_IO);
  budget = 0;
  KILN_EXPECT(t, km_safetensors_read(failing_read, &budget, 1000, &st, &e) == KM_ERR_IO);
}

KILN_TEST_MAIN(test_json_is_strict, test_json_values, test_safetensors_rejects_bad_files,
               test_safetensors_truncated_anywhere, test_reference_models_load,
               test_embedded_default_model_loads,
               test_gguf_models_match_hf, test_rope_inv_freq_matches_transformers,
               test_config_checks, test_rope_scaling_variants, test_gguf_config_errors,
               test_weights_wrong_shape_or_missing, test_shard_index_checks,
               test_gguf_rejects_bad_files, test_gguf_overlapping_tensors,
               test_gguf_truncated_anywhere, test_read_errors_are_reported)
