#include "model/llama_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/json.h"

static km_code get_i32(const km_json *o, const char *key, bool required, int32_t *out,
                       km_error *err) {
  const km_json *v = km_json_get(o, key);
  int64_t x;
  if (!v || km_json_is(v, KM_JSON_NULL)) {
    if (required) return km_fail(err, KM_ERR_NOT_FOUND, "config.json: missing \"%s\"", key);
    return KM_OK;
  }
  if (!km_json_int(v, &x) || x < INT32_MIN || x > INT32_MAX)
    return km_fail(err, KM_ERR_FORMAT, "config.json: \"%s\" is not a 32-bit integer", key);
  *out = (int32_t)x;
  return KM_OK;
}

static km_code get_f64(const km_json *o, const char *key, bool required, double *out,
                       km_error *err) {
  const km_json *v = km_json_get(o, key);
  if (!v || km_json_is(v, KM_JSON_NULL)) {
    if (required) return km_fail(err, KM_ERR_NOT_FOUND, "config.json: missing \"%s\"", key);
    return KM_OK;
  }
  if (!km_json_num(v, out)) return km_fail(err, KM_ERR_FORMAT, "config.json: \"%s\" is not a number", key);
  return KM_OK;
}

/* bos/eos: an integer, a list of integers, or null. */
static km_code get_ids(const km_json *o, const char *key, int32_t *ids, int32_t max,
                       int32_t *n, km_error *err) {
  const km_json *v = km_json_get(o, key);
  *n = 0;
  if (!v || km_json_is(v, KM_JSON_NULL)) return KM_OK;
  int64_t x;
  if (km_json_is(v, KM_JSON_ARRAY)) {
    if (v->len > (uint32_t)max)
      return km_fail(err, KM_ERR_LIMIT, "config.json: \"%s\" lists more than %d ids", key, max);
    for (uint32_t i = 0; i < v->len; i++) {
      if (!km_json_int(&v->u.items[i], &x) || x < 0 || x > INT32_MAX)
        return km_fail(err, KM_ERR_FORMAT, "config.json: \"%s\" has a bad id", key);
      ids[(*n)++] = (int32_t)x;
    }
    return KM_OK;
  }
  if (!km_json_int(v, &x) || x < 0 || x > INT32_MAX)
    return km_fail(err, KM_ERR_FORMAT, "config.json: \"%s\" is not a token id", key);
  ids[(*n)++] = (int32_t)x;
  return KM_OK;
}

static km_code parse_rope(const km_json *rs, km_llama_config *c, km_error *err) {
  if (!rs || km_json_is(rs, KM_JSON_NULL)) return KM_OK;
  if (!km_json_is(rs, KM_JSON_OBJECT))
    return km_fail(err, KM_ERR_FORMAT, "config.json: rope scaling is not an object");
  const char *type = km_json_str(km_json_get(rs, "rope_type"));
  if (!type) type = km_json_str(km_json_get(rs, "type"));
  if (!type || !strcmp(type, "default")) {
    c->rope_type = KM_ROPE_DEFAULT;
  } else if (!strcmp(type, "linear")) {
    c->rope_type = KM_ROPE_LINEAR;
  } else if (!strcmp(type, "llama3")) {
    c->rope_type = KM_ROPE_LLAMA3;
  } else {
    return km_fail(err, KM_ERR_UNSUPPORTED, "config.json: rope type \"%.32s\" is not supported "
                   "(default, linear, llama3)", type);
  }
  km_code e;
  if (c->rope_type != KM_ROPE_DEFAULT &&
      (e = get_f64(rs, "factor", true, &c->rope_factor, err)))
    return e;
  if (c->rope_type == KM_ROPE_LLAMA3) {
    if ((e = get_f64(rs, "low_freq_factor", true, &c->rope_low_freq_factor, err)) ||
        (e = get_f64(rs, "high_freq_factor", true, &c->rope_high_freq_factor, err)) ||
        (e = get_i32(rs, "original_max_position_embeddings", true, &c->rope_original_max_pos, err)))
      return e;
  }
  /* transformers 5 keeps rope_theta inside rope_parameters. */
  if ((e = get_f64(rs, "rope_theta", false, &c->rope_theta, err))) return e;
  double prf = 1.0;
  if ((e = get_f64(rs, "partial_rotary_factor", false, &prf, err))) return e;
  if (prf != 1.0)
    return km_fail(err, KM_ERR_UNSUPPORTED, "config.json: partial_rotary_factor %g", prf);
  return KM_OK;
}

km_code km_llama_config_from_hf(const char *json, size_t len, km_llama_config *out,
                                km_error *err) {
  memset(out, 0, sizeof *out);
  out->bos_id = -1;
  out->rope_theta = 10000.0;
  out->rms_eps = 1e-6f;
  km_json_doc *doc;
  km_error jerr;
  km_json_limits lim = {32, 16u << 20};
  km_code e = km_json_parse(json, len, &lim, &doc, &jerr);
  if (e) return km_fail(err, e, "config.json: %s", jerr.message);
  const km_json *r = km_json_root(doc);
  if (!km_json_is(r, KM_JSON_OBJECT)) {
    e = km_fail(err, KM_ERR_FORMAT, "config.json: not an object");
    goto done;
  }
  const char *mt = km_json_str(km_json_get(r, "model_type"));
  if (mt && strcmp(mt, "llama")) {
    e = km_fail(err, KM_ERR_UNSUPPORTED, "config.json: model_type \"%.32s\" is not llama", mt);
    goto done;
  }
  const char *act = km_json_str(km_json_get(r, "hidden_act"));
  if (act && strcmp(act, "silu")) {
    e = km_fail(err, KM_ERR_UNSUPPORTED, "config.json: hidden_act \"%.32s\" is not silu", act);
    goto done;
  }
  bool b;
  if ((km_json_bool(km_json_get(r, "attention_bias"), &b) && b) ||
      (km_json_bool(km_json_get(r, "mlp_bias"), &b) && b)) {
    e = km_fail(err, KM_ERR_UNSUPPORTED, "config.json: attention/MLP biases are not supported");
    goto done;
  }
  out->head_dim = 0;
  out->n_kv_heads = 0;
  double eps = 1e-6;
  if ((e = get_i32(r, "hidden_size", true, &out->hidden, err)) ||
      (e = get_i32(r, "intermediate_size", true, &out->intermediate, err)) ||
      (e = get_i32(r, "num_hidden_layers", true, &out->n_layers, err)) ||
      (e = get_i32(r, "num_attention_heads", true, &out->n_heads, err)) ||
      (e = get_i32(r, "num_key_value_heads", false, &out->n_kv_heads, err)) ||
      (e = get_i32(r, "head_dim", false, &out->head_dim, err)) ||
      (e = get_i32(r, "vocab_size", true, &out->vocab, err)) ||
      (e = get_i32(r, "max_position_embeddings", true, &out->max_pos, err)) ||
      (e = get_f64(r, "rms_norm_eps", false, &eps, err)) ||
      (e = get_f64(r, "rope_theta", false, &out->rope_theta, err)))
    goto done;
  out->rms_eps = (float)eps;
  if (!out->n_kv_heads) out->n_kv_heads = out->n_heads;
  if (!out->head_dim && out->n_heads > 0) out->head_dim = out->hidden / out->n_heads;
  const km_json *rs = km_json_get(r, "rope_parameters");
  if (!rs || km_json_is(rs, KM_JSON_NULL)) rs = km_json_get(r, "rope_scaling");
  if ((e = parse_rope(rs, out, err))) goto done;
  out->tie_word_embeddings = false;
  const km_json *tie = km_json_get(r, "tie_word_embeddings");
  if (tie && !km_json_is(tie, KM_JSON_NULL) && !km_json_bool(tie, &out->tie_word_embeddings)) {
    e = km_fail(err, KM_ERR_FORMAT, "config.json: tie_word_embeddings is not a bool");
    goto done;
  }
  int32_t bos[KM_MAX_EOS], nb;
  if ((e = get_ids(r, "bos_token_id", bos, KM_MAX_EOS, &nb, err)) ||
      (e = get_ids(r, "eos_token_id", out->eos_ids, KM_MAX_EOS, &out->n_eos, err)))
    goto done;
  if (nb) out->bos_id = bos[0];
  out->layout = KM_LAYOUT_HF;
  e = km_llama_config_validate(out, err);
done:
  km_json_free(doc);
  return e;
}

static km_code gguf_i32(const km_gguf *g, const char *key, bool required, int32_t *out,
                        km_error *err) {
  uint64_t v;
  if (!km_gguf_get(g, key)) {
    if (required) return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: missing %s", key);
    return KM_OK;
  }
  if (!km_gguf_get_u64(g, key, &v) || v > INT32_MAX)
    return km_fail(err, KM_ERR_FORMAT, "GGUF: %s is not a non-negative 32-bit integer", key);
  *out = (int32_t)v;
  return KM_OK;
}

km_code km_llama_config_from_gguf(const km_gguf *g, km_llama_config *out, km_error *err) {
  memset(out, 0, sizeof *out);
  out->bos_id = -1;
  out->rope_theta = 10000.0;
  const km_gguf_str *arch = km_gguf_get_str(g, "general.architecture");
  if (!arch) return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: missing general.architecture");
  if (strcmp(arch->ptr, "llama"))
    return km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: architecture \"%.32s\" is not llama", arch->ptr);
  km_code e;
  int32_t rope_dim = 0, vocab = 0;
  if ((e = gguf_i32(g, "llama.embedding_length", true, &out->hidden, err)) ||
      (e = gguf_i32(g, "llama.feed_forward_length", true, &out->intermediate, err)) ||
      (e = gguf_i32(g, "llama.block_count", true, &out->n_layers, err)) ||
      (e = gguf_i32(g, "llama.attention.head_count", true, &out->n_heads, err)) ||
      (e = gguf_i32(g, "llama.attention.head_count_kv", false, &out->n_kv_heads, err)) ||
      (e = gguf_i32(g, "llama.attention.key_length", false, &out->head_dim, err)) ||
      (e = gguf_i32(g, "llama.rope.dimension_count", false, &rope_dim, err)) ||
      (e = gguf_i32(g, "llama.context_length", true, &out->max_pos, err)) ||
      (e = gguf_i32(g, "llama.vocab_size", false, &vocab, err)))
    return e;
  if (!out->n_kv_heads) out->n_kv_heads = out->n_heads;
  if (!out->head_dim && out->n_heads > 0) out->head_dim = out->hidden / out->n_heads;
  if (rope_dim && rope_dim != out->head_dim)
    return km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: partial RoPE (%d of %d dims)", rope_dim,
                   out->head_dim);
  int32_t vlen = 0;
  if (km_gguf_get(g, "llama.attention.value_length") &&
      ((e = gguf_i32(g, "llama.attention.value_length", true, &vlen, err)) ||
       vlen != out->head_dim))
    return e ? e : km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: value_length %d != key_length %d",
                           vlen, out->head_dim);
  double eps;
  if (!km_gguf_get_f64(g, "llama.attention.layer_norm_rms_epsilon", &eps))
    return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: missing llama.attention.layer_norm_rms_epsilon");
  out->rms_eps = (float)eps;
  if (km_gguf_get(g, "llama.rope.freq_base") &&
      !km_gguf_get_f64(g, "llama.rope.freq_base", &out->rope_theta))
    return km_fail(err, KM_ERR_FORMAT, "GGUF: llama.rope.freq_base is not a float");
  const km_gguf_str *st = km_gguf_get_str(g, "llama.rope.scaling.type");
  if (st && strcmp(st->ptr, "none")) {
    if (strcmp(st->ptr, "linear"))
      return km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: rope scaling \"%.32s\"", st->ptr);
    out->rope_type = KM_ROPE_LINEAR;
    if (!km_gguf_get_f64(g, "llama.rope.scaling.factor", &out->rope_factor))
      return km_fail(err, KM_ERR_NOT_FOUND, "GGUF: missing llama.rope.scaling.factor");
  }
  if (!vocab) {
    const km_gguf_value *toks = km_gguf_get_array(g, "tokenizer.ggml.tokens", KM_GGUF_STRING);
    if (toks && toks->v.arr.n <= INT32_MAX) vocab = (int32_t)toks->v.arr.n;
  }
  if (!vocab) {
    const km_gguf_tensor *t = km_gguf_find_tensor(g, "token_embd.weight");
    if (t && t->info.ndim == 2 && t->info.shape[0] <= INT32_MAX) vocab = (int32_t)t->info.shape[0];
  }
  out->vocab = vocab;
  out->has_rope_freqs = km_gguf_find_tensor(g, "rope_freqs.weight") != NULL;
  out->tie_word_embeddings = km_gguf_find_tensor(g, "output.weight") == NULL;
  uint64_t id;
  if (km_gguf_get_u64(g, "tokenizer.ggml.bos_token_id", &id) && id <= INT32_MAX)
    out->bos_id = (int32_t)id;
  if (km_gguf_get_u64(g, "tokenizer.ggml.eos_token_id", &id) && id <= INT32_MAX)
    out->eos_ids[out->n_eos++] = (int32_t)id;
  if (km_gguf_get_u64(g, "tokenizer.ggml.eot_token_id", &id) && id <= INT32_MAX &&
      (!out->n_eos || out->eos_ids[0] != (int32_t)id))
    out->eos_ids[out->n_eos++] = (int32_t)id;
  out->layout = KM_LAYOUT_GGUF;
  return km_llama_config_validate(out, err);
}

static bool in_range(int32_t v, int32_t hi) { return v > 0 && v <= hi; }

km_code km_llama_config_validate(const km_llama_config *c, km_error *err) {
  if (!in_range(c->hidden, KM_LLAMA_MAX_DIM) || !in_range(c->intermediate, KM_LLAMA_MAX_DIM) ||
      !in_range(c->n_layers, KM_LLAMA_MAX_LAYERS) || !in_range(c->n_heads, 4096) ||
      !in_range(c->n_kv_heads, 4096) || !in_range(c->head_dim, 4096) ||
      !in_range(c->vocab, KM_LLAMA_MAX_VOCAB) || !in_range(c->max_pos, 1 << 24))
    return km_fail(err, KM_ERR_FORMAT,
                   "llama config: a size is out of range (hidden %d, intermediate %d, layers "
                   "%d, heads %d/%d, head_dim %d, vocab %d, max positions %d)",
                   c->hidden, c->intermediate, c->n_layers, c->n_heads, c->n_kv_heads,
                   c->head_dim, c->vocab, c->max_pos);
  if (c->n_heads % c->n_kv_heads)
    return km_fail(err, KM_ERR_FORMAT, "llama config: %d heads not a multiple of %d kv heads",
                   c->n_heads, c->n_kv_heads);
  if (c->head_dim % 2)
    return km_fail(err, KM_ERR_FORMAT, "llama config: head_dim %d is odd", c->head_dim);
  if ((int64_t)c->n_heads * c->head_dim > KM_LLAMA_MAX_DIM)
    return km_fail(err, KM_ERR_FORMAT, "llama config: heads * head_dim too large");
  if (!(c->rms_eps > 0) || !isfinite(c->rms_eps) || c->rms_eps > 1)
    return km_fail(err, KM_ERR_FORMAT, "llama config: rms eps %g", (double)c->rms_eps);
  if (!(c->rope_theta > 1) || !isfinite(c->rope_theta))
    return km_fail(err, KM_ERR_FORMAT, "llama config: rope theta %g", c->rope_theta);
  if (c->rope_type != KM_ROPE_DEFAULT && (!(c->rope_factor > 0) || !isfinite(c->rope_factor)))
    return km_fail(err, KM_ERR_FORMAT, "llama config: rope factor %g", c->rope_factor);
  if (c->rope_type == KM_ROPE_LLAMA3 &&
      (!(c->rope_low_freq_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) ||
       !isfinite(c->rope_high_freq_factor) || c->rope_original_max_pos <= 0))
    return km_fail(err, KM_ERR_FORMAT, "llama config: llama3 rope parameters (low %g, high %g, "
                   "original %d)", c->rope_low_freq_factor, c->rope_high_freq_factor,
                   c->rope_original_max_pos);
  if (c->bos_id >= c->vocab)
    return km_fail(err, KM_ERR_FORMAT, "llama config: bos id %d >= vocab %d", c->bos_id, c->vocab);
  for (int i = 0; i < c->n_eos; i++)
    if (c->eos_ids[i] >= c->vocab)
      return km_fail(err, KM_ERR_FORMAT, "llama config: eos id %d >= vocab %d", c->eos_ids[i],
                     c->vocab);
  return KM_OK;
}

km_code km_llama_rope_inv_freq(const km_llama_config *c, const float *rope_freqs,
                               float *inv_freq, km_error *err) {
  int dim = c->head_dim, half = dim / 2;
  /* transformers: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), where
   * the exponent is a float32 division and the power is taken in float32
   * with the base rounded to float32. powf's result is correctly rounded
   * here by computing in double and rounding once. */
  float base = (float)c->rope_theta;
  for (int i = 0; i < half; i++) {
    float e = (float)(2 * i) / (float)dim;
    float p = (float)pow((double)base, (double)e);
    inv_freq[i] = 1.0f / p;
  }
  if (rope_freqs) {
    for (int i = 0; i < half; i++) {
      if (!(rope_freqs[i] > 0) || !isfinite(rope_freqs[i]))
        return km_fail(err, KM_ERR_FORMAT, "rope_freqs[%d] = %g", i, (double)rope_freqs[i]);
      inv_freq[i] = inv_freq[i] / rope_freqs[i];
    }
    return KM_OK;
  }
  if (c->rope_type == KM_ROPE_LINEAR) {
    float f = (float)c->rope_factor;
    for (int i = 0; i < half; i++) inv_freq[i] = inv_freq[i] / f;
  } else if (c->rope_type == KM_ROPE_LLAMA3) {
    /* _compute_llama3_parameters, step by step in float32 tensor math;
     * Python scalars enter float32 ops rounded to float32. */
    double old = c->rope_original_max_pos;
    float low_wavelen = (float)(old / c->rope_low_freq_factor);
    float high_wavelen = (float)(old / c->rope_high_freq_factor);
    float factor = (float)c->rope_factor;
    float lowf = (float)c->rope_low_freq_factor;
    float span = (float)(c->rope_high_freq_factor - c->rope_low_freq_factor);
    float two_pi = (float)(2 * 3.14159265358979323846);
    float oldf = (float)old;
    for (int i = 0; i < half; i++) {
      float f = inv_freq[i];
      float wavelen = two_pi / f;
      float llama = wavelen > low_wavelen ? f / factor : f;
      float smooth = (oldf / wavelen - lowf) / span;
      float smoothed = (1.0f - smooth) * llama / factor + smooth * llama;
      bool medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
      inv_freq[i] = medium ? smoothed : llama;
    }
  }
  return KM_OK;
}

/* ---- weights ------------------------------------------------------------- */

static const char *const hf_names[KM_W_KIND_COUNT] = {
    "model.embed_tokens.weight",
    "model.norm.weight",
    "lm_head.weight",
    "model.layers.%d.input_layernorm.weight",
    "model.layers.%d.self_attn.q_proj.weight",
    "model.layers.%d.self_attn.k_proj.weight",
    "model.layers.%d.self_attn.v_proj.weight",
    "model.layers.%d.self_attn.o_proj.weight",
    "model.layers.%d.post_attention_layernorm.weight",
    "model.layers.%d.mlp.gate_proj.weight",
    "model.layers.%d.mlp.up_proj.weight",
    "model.layers.%d.mlp.down_proj.weight",
};

static const char *const gguf_names[KM_W_KIND_COUNT] = {
    "token_embd.weight",
    "output_norm.weight",
    "output.weight",
    "blk.%d.attn_norm.weight",
    "blk.%d.attn_q.weight",
    "blk.%d.attn_k.weight",
    "blk.%d.attn_v.weight",
    "blk.%d.attn_output.weight",
    "blk.%d.ffn_norm.weight",
    "blk.%d.ffn_gate.weight",
    "blk.%d.ffn_up.weight",
    "blk.%d.ffn_down.weight",
};

int km_llama_weight_name(km_weight_layout layout, km_weight_kind kind, int layer, char *buf,
                         size_t size) {
  if ((unsigned)kind >= KM_W_KIND_COUNT) return -1;
  const char *f = (layout == KM_LAYOUT_GGUF ? gguf_names : hf_names)[kind];
  int n;
  if (kind >= KM_W_FIRST_LAYER) {
    if (layer < 0) return -1;
    n = snprintf(buf, size, f, layer);
  } else {
    n = snprintf(buf, size, "%s", f);
  }
  return n < 0 || (size_t)n >= size ? -1 : n;
}

void km_llama_weight_shape(const km_llama_config *c, km_weight_kind kind, int *ndim,
                           int64_t s[2]) {
  int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
  *ndim = 2;
  s[1] = c->hidden;
  switch (kind) {
    case KM_W_TOK_EMBD: case KM_W_OUTPUT: s[0] = c->vocab; break;
    case KM_W_OUTPUT_NORM: case KM_W_ATTN_NORM: case KM_W_FFN_NORM:
      *ndim = 1; s[0] = c->hidden; s[1] = 0; break;
    case KM_W_Q: s[0] = q; break;
    case KM_W_K: case KM_W_V: s[0] = kv; break;
    case KM_W_O: s[0] = c->hidden; s[1] = q; break;
    case KM_W_GATE: case KM_W_UP: s[0] = c->intermediate; break;
    case KM_W_DOWN: s[0] = c->hidden; s[1] = c->intermediate; break;
    default: *ndim = 0; break;
  }
}

static km_code resolve_one(const km_llama_config *c, km_tensor_lookup lookup, void *ctx,
                           km_weight_kind kind, int layer, bool optional, km_weight_ref *out,
                           km_error *err) {
  char name[128];
  if (km_llama_weight_name(c->layout, kind, layer, name, sizeof name) < 0)
    return km_fail(err, KM_ERR_ARGUMENT, "weight name too long");
  uint32_t file = 0;
  const km_tensor_info *t = lookup(ctx, name, &file);
  out->t = t;
  out->file = file;
  if (!t) {
    if (optional) return KM_OK;
    return km_fail(err, KM_ERR_NOT_FOUND, "weights: missing tensor %s", name);
  }
  int nd;
  int64_t s[2];
  km_llama_weight_shape(c, kind, &nd, s);
  bool ok = t->ndim == nd && t->shape[0] == s[0] && (nd == 1 || t->shape[1] == s[1]);
  if (!ok) {
    char got[96] = "", *p = got;
    for (int i = 0; i < t->ndim && i < 4; i++)
      p += snprintf(p, (size_t)(got + sizeof got - p), "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (nd == 1)
      return km_fail(err, KM_ERR_SHAPE, "weights: %s has shape [%s], the config needs [%lld]",
                     name, got, (long long)s[0]);
    return km_fail(err, KM_ERR_SHAPE, "weights: %s has shape [%s], the config needs [%lld, %lld]",
                   name, got, (long long)s[0], (long long)s[1]);
  }
  bool is_float = t->dtype == KM_DTYPE_F32 || t->dtype == KM_DTYPE_F16 || t->dtype == KM_DTYPE_BF16;
  if (!(is_float || (nd == 2 && t->dtype == KM_DTYPE_Q8_0)))
    return km_fail(err, KM_ERR_UNSUPPORTED, "weights: %s has dtype %s (%s)", name,
                   km_dtype_name(t->dtype),
                   nd == 1 ? "norms must be F32, F16 or BF16" : "F32, F16, BF16 or Q8_0");
  return KM_OK;
}

void km_llama_weights_free(km_llama_weights *w) {
  if (!w) return;
  free(w->layers);
  w->layers = NULL;
}

km_code km_llama_weights_resolve(km_llama_config *c, km_tensor_lookup lookup, void *ctx,
                                 km_llama_weights *out, km_error *err) {
  memset(out, 0, sizeof *out);
  km_code e = km_llama_config_validate(c, err);
  if (e) return e;
  out->layers = calloc((size_t)c->n_layers * KM_W_PER_LAYER, sizeof *out->layers);
  if (!out->layers) return km_fail(err, KM_ERR_NOMEM, "weights: out of memory");
  if ((e = resolve_one(c, lookup, ctx, KM_W_TOK_EMBD, 0, false, &out->tok_embd, err)) ||
      (e = resolve_one(c, lookup, ctx, KM_W_OUTPUT_NORM, 0, false, &out->output_norm, err)))
    goto fail;
  if (c->layout == KM_LAYOUT_GGUF) {
    if ((e = resolve_one(c, lookup, ctx, KM_W_OUTPUT, 0, true, &out->output, err))) goto fail;
    c->tie_word_embeddings = out->output.t == NULL;
  } else if (!c->tie_word_embeddings) {
    if ((e = resolve_one(c, lookup, ctx, KM_W_OUTPUT, 0, false, &out->output, err))) goto fail;
  }
  if (c->tie_word_embeddings) out->output = out->tok_embd;
  for (int l = 0; l < c->n_layers; l++)
    for (int k = KM_W_FIRST_LAYER; k < KM_W_KIND_COUNT; k++)
      if ((e = resolve_one(c, lookup, ctx, (km_weight_kind)k, l, false,
                           &out->layers[(size_t)l * KM_W_PER_LAYER + (k - KM_W_FIRST_LAYER)],
                           err)))
        goto fail;
  return KM_OK;
fail:
  km_llama_weights_free(out);
  return e;
}

const km_tensor_info *km_lookup_safetensors(void *st, const char *name, uint32_t *file) {
  *file = 0;
  return km_safetensors_find(st, name);
}

const km_tensor_info *km_lookup_gguf(void *g, const char *name, uint32_t *file) {
  *file = 0;
  const km_gguf_tensor *t = km_gguf_find_tensor(g, name);
  return t ? &t->info : NULL;
}

const km_tensor_info *km_lookup_sharded(void *ctx, const char *name, uint32_t *file) {
  const km_sharded *s = ctx;
  int f = km_st_index_find(s->index, name);
  if (f < 0) return NULL;
  *file = (uint32_t)f;
  return km_safetensors_find(&s->shards[f], name);
}
