/* Tokenizers: kiln's encode and decode give exactly what Hugging Face
 * `tokenizers` gives on a test corpus (references written by
 * tools/make_tokenizer_refs.py into tests/data/tokenizers/), for byte-level
 * BPE in the Llama 3 and GPT-2 layouts, sentencepiece-style BPE in both
 * Llama 2 layouts, and tokenizers read from GGUF metadata; malformed
 * tokenizer files and inputs fail with a clear code. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_test.h"
#include "model/gguf.h"
#include "model/json.h"
#include "model/tokenizer.h"

/* tests/data/<rel>, whole. */
static char *slurp(const char *rel, size_t *len) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/data/%s", KILN_SOURCE_DIR, rel);
  return kiln_test_read_file(path, len);
}

static km_tokenizer *load_json(kiln_test *t, const char *rel) {
  size_t n;
  char *s = slurp(rel, &n);
  KILN_EXPECTF(t, s != NULL, "cannot read %s", rel);
  if (!s) return NULL;
  km_tokenizer *tok = NULL;
  km_error e = {0};
  km_code c = km_tokenizer_from_json(s, n, &tok, &e);
  KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
  free(s);
  return tok;
}

static km_tokenizer *load_gguf(kiln_test *t, const char *rel, km_gguf *g) {
  size_t n;
  memset(g, 0, sizeof *g);
  char *s = slurp(rel, &n);
  KILN_EXPECTF(t, s != NULL, "cannot read %s", rel);
  if (!s) return NULL;
  km_buffer b = {(const uint8_t *)s, n};
  km_error e = {0};
  km_tokenizer *tok = NULL;
  km_code c = km_gguf_read(km_buffer_read, &b, n, g, &e);
  KILN_EXPECTF(t, c == KM_OK, "%s: %s", rel, e.message);
  if (!c) {
    c = km_tokenizer_from_gguf(g, &tok, &e);
    KILN_EXPECTF(t, c == KM_OK, "%s tokenizer: %s", rel, e.message);
  }
  free(s);
  return tok;
}

static bool ids_equal(const km_json *want, const int32_t *got, size_t n) {
  if (!km_json_is(want, KM_JSON_ARRAY) || want->len != n) return false;
  for (size_t i = 0; i < n; i++) {
    int64_t v;
    if (!km_json_int(&want->u.items[i], &v) || v != got[i]) return false;
  }
  return true;
}

static void show_ids(char *buf, size_t cap, const int32_t *ids, size_t n) {
  size_t o = 0;
  buf[0] = 0;
  for (size_t i = 0; i < n && o + 16 < cap; i++) o += (size_t)snprintf(buf + o, cap - o, "%d ", ids[i]);
}

/* Checks every reference case of refs.json against tok. */
static void check_refs(kiln_test *t, km_tokenizer *tok, const char *refs_rel) {
  if (!tok) return;
  size_t n;
  char *s = slurp(refs_rel, &n);
  KILN_EXPECTF(t, s != NULL, "cannot read %s", refs_rel);
  if (!s) return;
  km_json_doc *doc;
  km_error e;
  KILN_EXPECTF(t, km_json_parse(s, n, NULL, &doc, &e) == KM_OK, "%s: %s", refs_rel, e.message);
  const km_json *cases = km_json_get(km_json_root(doc), "cases");
  int checked = 0, failed = 0;
  for (uint32_t i = 0; cases && i < cases->len; i++) {
    const km_json *c = &cases->u.items[i];
    const km_json *text = km_json_get(c, "text");
    for (int special = 0; special < 2; special++) {
      int32_t *ids;
      size_t nid;
      km_code r = km_tokenizer_encode(tok, text->u.str, text->len, special, &ids, &nid, &e);
      const km_json *want = km_json_get(c, special ? "ids" : "ids_plain");
      if (r || !ids_equal(want, ids, nid)) {
        char got[512];
        show_ids(got, sizeof got, ids, r ? 0 : nid);
        if (failed++ < 8)
          KILN_EXPECTF(t, 0, "%s case %u (special %d) \"%.60s\": got [%s] %s", refs_rel, i,
                       special, text->u.str, got, r ? e.message : "");
      }
      /* decode(ids_plain, skip=false) and decode(ids, skip=true) */
      char *out = NULL;
      size_t olen;
      const km_json *dw = km_json_get(c, special ? "decoded_skip" : "decoded");
      const km_json *src = want;
      int32_t *wid = malloc((src->len + 1) * sizeof *wid);
      for (uint32_t k = 0; k < src->len; k++) {
        int64_t v;
        km_json_int(&src->u.items[k], &v);
        wid[k] = (int32_t)v;
      }
      r = km_tokenizer_decode(tok, wid, src->len, special, &out, &olen, &e);
      if (r || olen != dw->len || memcmp(out, dw->u.str, olen)) {
        if (failed++ < 8)
          KILN_EXPECTF(t, 0, "%s case %u decode (skip %d): got \"%.80s\" want \"%.80s\"", refs_rel, i,
                       special, out ? out : e.message, dw->u.str);
      }
      free(out);
      free(wid);
      free(ids);
      checked++;
    }
  }
  const km_json *rd = km_json_get(km_json_root(doc), "random_decode");
  for (uint32_t i = 0; rd && i < rd->len; i++) {
    const km_json *c = &rd->u.items[i], *idsj = km_json_get(c, "ids");
    int32_t wid[64];
    for (uint32_t k = 0; k < idsj->len && k < 64; k++) {
      int64_t v;
      km_json_int(&idsj->u.items[k], &v);
      wid[k] = (int32_t)v;
    }
    for (int skip = 0; skip < 2; skip++) {
      char *out = NULL;
      size_t olen;
      const km_json *dw = km_json_get(c, skip ? "decoded_skip" : "decoded");
      km_code r = km_tokenizer_decode(tok, wid, idsj->len, skip, &out, &olen, &e);
      if (r || olen != dw->len || memcmp(out, dw->u.str, olen)) {
        if (failed++ < 8)
          KILN_EXPECTF(t, 0, "%s random %u (skip %d): got \"%.80s\" want \"%.80s\"", refs_rel, i,
                       skip, out ? out : e.message, dw->u.str);
      }
      free(out);
      checked++;
    }
  }
  KILN_EXPECTF(t, checked > 100, "%s: only %d checks", refs_rel, checked);
  if (failed) printf("  %s: %d of %d checks differ\n", refs_rel, failed, checked);
  km_json_free(doc);
  free(s);
}

static void test_llama3_matches_tokenizers(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/llama3/tokenizer.json");
  check_refs(t, tok, "tokenizers/llama3/refs.json");
  km_tokenizer_free(tok);
}

static void test_gpt2_matches_tokenizers(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/gpt2/tokenizer.json");
  check_refs(t, tok, "tokenizers/gpt2/refs.json");
  km_tokenizer_free(tok);
}

static void test_spm_legacy_matches_tokenizers(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/spm/tokenizer.json");
  check_refs(t, tok, "tokenizers/spm/refs.json");
  km_tokenizer_free(tok);
}

static void test_metaspace_matches_tokenizers(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/metaspace/tokenizer.json");
  check_refs(t, tok, "tokenizers/metaspace/refs.json");
  km_tokenizer_free(tok);
}

static void test_gguf_llama_tokenizer_matches(kiln_test *t) {
  km_gguf g;
  km_tokenizer *tok = load_gguf(t, "tokenizers/spm_gguf/tokenizer.gguf", &g);
  check_refs(t, tok, "tokenizers/spm_gguf/refs.json");
  km_tokenizer_free(tok);
  km_gguf_free(&g);
  /* The converted tokenizer.json agrees too. */
  tok = load_json(t, "tokenizers/spm_gguf/tokenizer.json");
  check_refs(t, tok, "tokenizers/spm_gguf/refs.json");
  km_tokenizer_free(tok);
}

static void test_gguf_gpt2_tokenizer_matches(kiln_test *t) {
  /* The reference model's GGUF export carries the llama3 tokenizer as
   * tokenizer.ggml.model "gpt2", pre "llama-bpe". */
  km_gguf g;
  km_tokenizer *tok = load_gguf(t, "models/gqa/model-f32.gguf", &g);
  check_refs(t, tok, "tokenizers/llama3/refs.json");
  km_tokenizer_free(tok);
  km_gguf_free(&g);
}

static void test_round_trip_byte_level(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/llama3/tokenizer.json");
  if (!tok) return;
  /* Every byte string that is valid UTF-8 comes back unchanged. */
  const char *texts[] = {"", "a", "Hello, World!\n", "  \t\r\n ", "日本語 😀 ſ 'S",
                         "<|begin_of_text|>x<|end_of_text|>", "\xF4\x8F\xBF\xBF"};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    int32_t *ids;
    size_t n, len;
    char *out;
    KILN_EXPECT(t, km_tokenizer_encode(tok, texts[i], strlen(texts[i]), false, &ids, &n, NULL) == KM_OK);
    KILN_EXPECT(t, km_tokenizer_decode(tok, ids, n, false, &out, &len, NULL) == KM_OK);
    KILN_EXPECTF(t, len == strlen(texts[i]) && !memcmp(out, texts[i], len), "round trip of \"%s\"",
                 texts[i]);
    /* Streaming pieces concatenate to the same bytes. */
    char cat[256];
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
      int m = km_tokenizer_token_bytes(tok, ids[k], cat + o, sizeof cat - o);
      KILN_EXPECT(t, m >= 0);
      o += (size_t)m;
    }
    KILN_EXPECTF(t, o == len && !memcmp(cat, out, len), "token_bytes of \"%s\"", texts[i]);
    free(out);
    free(ids);
  }
  int32_t bos = km_tokenizer_find(tok, "<|begin_of_text|>", 17);
  KILN_EXPECT(t, bos >= 0 && km_tokenizer_is_special(tok, bos));
  KILN_EXPECT(t, km_tokenizer_token(tok, -1, NULL) == NULL);
  KILN_EXPECT(t, km_tokenizer_token(tok, km_tokenizer_vocab_size(tok), NULL) == NULL);
  km_tokenizer_free(tok);
}

static void test_streaming_pieces_sentencepiece(kiln_test *t) {
  const char *dirs[] = {"tokenizers/spm/tokenizer.json", "tokenizers/metaspace/tokenizer.json"};
  for (int d = 0; d < 2; d++) {
    km_tokenizer *tok = load_json(t, dirs[d]);
    if (!tok) continue;
    KILN_EXPECT(t, km_tokenizer_strips_first_space(tok));
    const char *text = "Hello  world, caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xF0\x9F\x98\x80!";
    int32_t *ids;
    size_t n, len;
    char *out;
    KILN_EXPECT(t, km_tokenizer_encode(tok, text, strlen(text), false, &ids, &n, NULL) == KM_OK);
    KILN_EXPECT(t, km_tokenizer_decode(tok, ids, n, false, &out, &len, NULL) == KM_OK);
    KILN_EXPECTF(t, len == strlen(text) && !memcmp(out, text, len), "%s: \"%s\"", dirs[d], out);
    char cat[256];
    size_t o = 0;
    for (size_t k = 0; k < n; k++) o += (size_t)km_tokenizer_token_bytes(tok, ids[k], cat + o, sizeof cat - o);
    KILN_EXPECTF(t, o == len + 1 && cat[0] == ' ' && !memcmp(cat + 1, out, len), "%s pieces", dirs[d]);
    free(out);
    free(ids);
    km_tokenizer_free(tok);
  }
}

static void test_rejects_invalid_utf8_text(kiln_test *t) {
  km_tokenizer *tok = load_json(t, "tokenizers/llama3/tokenizer.json");
  if (!tok) return;
  const char *bad[] = {"\xFF", "a\xC0\x80", "\xED\xA0\x80", "\xE2\x82", "\xF4\x90\x80\x80"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int32_t *ids;
    size_t n;
    km_error e;
    KILN_EXPECT(t, km_tokenizer_encode(tok, bad[i], strlen(bad[i]), true, &ids, &n, &e) == KM_ERR_FORMAT);
    KILN_EXPECT(t, ids == NULL);
  }
  km_tokenizer_free(tok);
}

static km_code from_str(const char *s, km_error *e) {
  km_tokenizer *tok = NULL;
  km_code c = km_tokenizer_from_json(s, strlen(s), &tok, e);
  km_tokenizer_free(tok);
  return c;
}

static void test_rejects_bad_tokenizer_json(kiln_test *t) {
  km_error e;
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [", &e) == KM_ERR_TRUNCATED);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, "
                          "\"merges\": [\"a b\"]}}", &e) == KM_ERR_FORMAT); /* "ab" missing */
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}, "
                          "\"merges\": []}}", &e) == KM_ERR_FORMAT); /* id twice */
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}", &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999}, \"merges\": []}}", &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                          "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"\\\\w+\"}, "
                          "\"behavior\": \"Isolated\", \"invert\": false}}", &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                          "\"normalizer\": {\"type\": \"NFKC\"}}", &e) == KM_ERR_UNSUPPORTED);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\\ud800\": 0}, \"merges\": []}}", &e) == KM_ERR_FORMAT);
  KILN_EXPECT(t, from_str("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}", &e) == KM_OK);
}

KILN_TEST_MAIN(test_llama3_matches_tokenizers, test_gpt2_matches_tokenizers,
               test_spm_legacy_matches_tokenizers, test_metaspace_matches_tokenizers,
               test_gguf_llama_tokenizer_matches, test_gguf_gpt2_tokenizer_matches,
               test_round_trip_byte_level, test_streaming_pieces_sentencepiece,
               test_rejects_invalid_utf8_text,
               test_rejects_bad_tokenizer_json)
