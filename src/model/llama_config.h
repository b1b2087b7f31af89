/* Llama-family configuration and weight names.
 *
 * A km_llama_config comes from a Hugging Face config.json (transformers 4
 * layout: rope_theta + rope_scaling; transformers 5 layout:
 * rope_parameters) or from a GGUF file's llama.* metadata. Either way
 * km_llama_config_validate has checked it: positive sizes within limits,
 * heads dividing evenly, grouped-query ratio whole, head_dim even, eps and
 * theta positive and finite, rope scaling parameters sane.
 *
 * Weights are named by kind and layer; km_llama_weight_name gives the name
 * in either layout (HF "model.layers.3.self_attn.q_proj.weight", GGUF
 * "blk.3.attn_q.weight"), km_llama_weight_shape the row-major shape the
 * config requires, and km_llama_weights_resolve finds every weight through
 * a lookup callback and checks names, shapes and dtypes before any byte of
 * weight data is touched. */
#ifndef KILN_MODEL_LLAMA_CONFIG_H_
#define KILN_MODEL_LLAMA_CONFIG_H_

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/km_error.h"
#include "model/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum km_rope_type {
  KM_ROPE_DEFAULT = 0,
  KM_ROPE_LINEAR,  /* inv_freq / factor */
  KM_ROPE_LLAMA3,  /* Llama 3.1 frequency-dependent scaling */
} km_rope_type;

typedef enum km_weight_layout {
  KM_LAYOUT_HF = 0, /* safetensors, HF names, rotate-half Q/K rows */
  KM_LAYOUT_GGUF,   /* GGUF names, Q/K rows permuted (see gguf.h) */
} km_weight_layout;

#define KM_MAX_EOS 8

typedef struct km_llama_config {
  int32_t hidden;        /* hidden_size, llama.embedding_length */
  int32_t intermediate;  /* intermediate_size, llama.feed_forward_length */
  int32_t n_layers;
  int32_t n_heads;
  int32_t n_kv_heads;
  int32_t head_dim;
  int32_t vocab;
  int32_t max_pos;       /* max_position_embeddings, llama.context_length */
  float rms_eps;
  double rope_theta;
  km_rope_type rope_type;
  double rope_factor;             /* LINEAR, LLAMA3 */
  double rope_low_freq_factor;    /* LLAMA3 */
  double rope_high_freq_factor;   /* LLAMA3 */
  int32_t rope_original_max_pos;  /* LLAMA3 */
  bool tie_word_embeddings;
  int32_t bos_id;                 /* -1 when absent */
  int32_t n_eos;
  int32_t eos_ids[KM_MAX_EOS];    /* any of them stops generation */
  km_weight_layout layout;
  /* GGUF from Llama 3.1+: per-frequency divisors live in the F32 tensor
   * rope_freqs.weight [head_dim/2]; see km_llama_rope_inv_freq. */
  bool has_rope_freqs;
} km_llama_config;

/* Limits that keep every size product far from overflow. */
#define KM_LLAMA_MAX_DIM (1 << 20)
#define KM_LLAMA_MAX_LAYERS 1024
#define KM_LLAMA_MAX_VOCAB (1 << 22)

km_code km_llama_config_from_hf(const char *json, size_t len, km_llama_config *out,
                                km_error *err);
km_code km_llama_config_from_gguf(const km_gguf *g, km_llama_config *out, km_error *err);
km_code km_llama_config_validate(const km_llama_config *c, km_error *err);

/* RoPE inverse frequencies, head_dim/2 floats, computed as transformers'
 * _compute_default_rope_parameters / _compute_llama3_parameters do: in
 * float32, with the same operation order. rope_freqs (may be NULL) are the
 * GGUF rope_freqs.weight values; when given, inv_freq[i] = base_inv[i] /
 * rope_freqs[i] as llama.cpp does, and the llama3 metadata is not needed.
 * Attention scaling is 1 for all three rope types. */
km_code km_llama_rope_inv_freq(const km_llama_config *c, const float *rope_freqs,
                               float *inv_freq, km_error *err);

typedef enum km_weight_kind {
  KM_W_TOK_EMBD = 0, /* [vocab, hidden] */
  KM_W_OUTPUT_NORM,  /* [hidden] */
  KM_W_OUTPUT,       /* [vocab, hidden]; tied: the embedding */
  KM_W_ATTN_NORM,    /* per layer from here: [hidden] */
  KM_W_Q,            /* [n_heads*head_dim, hidden] */
  KM_W_K,            /* [n_kv_heads*head_dim, hidden] */
  KM_W_V,            /* [n_kv_heads*head_dim, hidden] */
  KM_W_O,            /* [hidden, n_heads*head_dim] */
  KM_W_FFN_NORM,     /* [hidden] */
  KM_W_GATE,         /* [intermediate, hidden] */
  KM_W_UP,           /* [intermediate, hidden] */
  KM_W_DOWN,         /* [hidden, intermediate] */
  KM_W_KIND_COUNT
} km_weight_kind;
#define KM_W_FIRST_LAYER KM_W_ATTN_NORM
#define KM_W_PER_LAYER (KM_W_KIND_COUNT - KM_W_FIRST_LAYER)

/* Writes the tensor name; returns its length, or -1 if it does not fit or
 * layer is out of range for a per-layer kind. layer is ignored for the
 * global kinds. */
int km_llama_weight_name(km_weight_layout layout, km_weight_kind kind, int layer, char *buf,
                         size_t size);
/* Row-major shape the config requires: *ndim 1 or 2. */
void km_llama_weight_shape(const km_llama_config *c, km_weight_kind kind, int *ndim,
                           int64_t shape[2]);

/* Finds a tensor by name: returns it and its file index (0 for single-file
 * models, the shard index otherwise), or NULL. */
typedef const km_tensor_info *(*km_tensor_lookup)(void *ctx, const char *name, uint32_t *file);

typedef struct km_weight_ref {
  const km_tensor_info *t; /* owned by the safetensors/GGUF table */
  uint32_t file;
} km_weight_ref;

typedef struct km_llama_weights {
  km_weight_ref tok_embd, output_norm, output; /* output == tok_embd if tied */
  km_weight_ref *layers; /* n_layers * KM_W_PER_LAYER, by kind - KM_W_FIRST_LAYER */
} km_llama_weights;

/* Resolves and checks every weight. Matrices may be F32, F16, BF16 or
 * Q8_0; norms F32, F16 or BF16. For HF layout with tie_word_embeddings a
 * present lm_head.weight is ignored (transformers ties it); without it,
 * lm_head.weight is required. For GGUF a missing output.weight means tied
 * (and sets c->tie_word_embeddings), as in llama.cpp. */
km_code km_llama_weights_resolve(km_llama_config *c, km_tensor_lookup lookup, void *ctx,
                                 km_llama_weights *out, km_error *err);
void km_llama_weights_free(km_llama_weights *w);
static inline const km_weight_ref *km_llama_layer_weight(const km_llama_weights *w, int layer,
                                                         km_weight_kind kind) {
  return &w->layers[(size_t)layer * KM_W_PER_LAYER + (kind - KM_W_FIRST_LAYER)];
}

/* Lookups for the three file kinds; ctx is the table itself. */
const km_tensor_info *km_lookup_safetensors(void *st, const char *name, uint32_t *file);
const km_tensor_info *km_lookup_gguf(void *g, const char *name, uint32_t *file);
typedef struct km_sharded {
  const km_st_index *index;
  const km_safetensors *shards; /* index->n_files of them */
} km_sharded;
const km_tensor_info *km_lookup_sharded(void *sharded, const char *name, uint32_t *file);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_LLAMA_CONFIG_H_ */
