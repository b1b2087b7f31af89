/* The Llama forward pass, once, for the Wasm guest and its native twin.
 *
 * Portable C with no kiln host dependency: the same file is compiled into
 * the wasm32-wasi guest (guests/llm) and natively into libkiln (the native
 * twin of `kiln generate --native`, the tests). It never computes on
 * tensors itself: every step is a list of kiln_gpu_op structs (the fixed
 * layout of sdk/kiln_gpu.h, operands named by memory handle + offset)
 * handed to a sink:
 *   - in the guest the sink is the kiln_gpu imports (one Wasm call each);
 *   - in the native twin it is kiln_gpu_session_submit_op() and friends
 *     (include/kiln/gpu_host.h): the same translation and validation, no
 *     Wasm boundary.
 * So the two differ only by the boundary, which is what the twin measures.
 *
 * Memory. Weights are tensors in read-only memories the host granted (one
 * per safetensors shard or GGUF file); lf_weights holds their descriptors
 * (mem = the granted handle, offset = the byte offset in the file). The run
 * state (activations, KV cache, token and position slots, f32 copies of
 * norm weights, RoPE inverse frequencies) is one block of memory 0 (the
 * guest's own linear memory), allocated through the sink. What only ops
 * use (activations, norm copies, the KV cache) is placed DEVICE: it lives
 * on the device and a sync copies none of it back (a 512-token prefill of
 * the 8B shape writes 230 MB there). What the host writes or reads
 * (tokens, positions, RoPE frequencies, logits, the argmax) is RESIDENT:
 * host writes go up, what ops wrote comes back at sync.
 *
 * Steps. lf_prefill runs T prompt tokens in one pass (GEMV with M = T rows,
 * causal attention over the cache), in chunks of max_batch. lf_decode runs
 * one token: a program recorded once at lf_create and replayed with the
 * token id and position written into memory 0 first (index operands), so a
 * step costs one program submit and one sync, not one call per op.
 *
 * GGUF. llama.cpp's converter permutes the rows of attn_q/attn_k for its
 * interleaved RoPE (see model/gguf.h). The pass undoes that on the
 * activations: one strided COPY of q and of k per layer, viewing the
 * projected rows as [T, H, 2, D/2] with strides [H*D, D, 1, 2], turns
 * them into rotate-half order, so the ROPE op (Hugging Face convention)
 * and everything after it are shared with the safetensors path. This
 * needs no new op and runs on every backend; it costs two small ops per
 * layer for GGUF models only.
 *
 * Errors: functions return 0 or a negative KILN_GPU_E_* code (from the
 * sink) or KM codes through km_error; msg buffers carry the sink's last
 * error text. Nothing aborts. */
#ifndef KILN_MODEL_LLAMA_FORWARD_H_
#define KILN_MODEL_LLAMA_FORWARD_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln_gpu.h"
#include "model/km_error.h"
#include "model/llama_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where ops go. Every function returns 0 (program_end: a handle >= 1) or a
 * negative KILN_GPU_E_* code. */
typedef struct lf_sink {
  void *ctx;
  int32_t (*submit)(void *ctx, const kiln_gpu_op *op);
  int32_t (*sync)(void *ctx);
  int32_t (*place)(void *ctx, uint32_t mem, uint64_t offset, uint64_t length,
                   uint32_t placement);
  int32_t (*program_begin)(void *ctx);
  int32_t (*program_end)(void *ctx);
  int32_t (*program_submit)(void *ctx, int32_t program);
  int32_t (*program_free)(void *ctx, int32_t program);
  /* Handle of the memory granted under `name` (>= 1), or a negative code. */
  int32_t (*memory_lookup)(void *ctx, const char *name);
  /* The message of the last failure (NUL-terminated, truncated). */
  void (*last_error)(void *ctx, char *buf, size_t len);
  /* Memory 0: `bytes` zeroed bytes aligned to 64 KiB; returns the host
   * pointer and sets *offset to its offset in memory 0 (handle 0), or
   * returns NULL. */
  void *(*alloc)(void *ctx, uint64_t bytes, uint64_t *offset);
  void (*free)(void *ctx, void *ptr);
} lf_sink;

typedef struct lf_layer {
  kiln_gpu_tensor attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
} lf_layer;

typedef struct lf_weights {
  kiln_gpu_tensor tok_embd, output_norm, output;
  lf_layer *layers; /* n_layers; malloc'd, freed by lf_weights_free */
} lf_weights;

/* Builds descriptors from resolved weights: file_mem[i] is the granted
 * memory handle of weight file i (the km_weight_ref.file index). */
km_code lf_weights_from_refs(const km_llama_config *c, const km_llama_weights *w,
                             const uint32_t *file_mem, uint32_t n_files,
                             lf_weights *out, km_error *err);
void lf_weights_free(lf_weights *w);

typedef struct lf_options {
  int32_t max_seq;    /* KV cache rows: prompt + generated tokens */
  int32_t max_batch;  /* prompt rows per prefill pass (0: 128) */
  bool all_logits;    /* prefill keeps logits of every row (tests) */
  uint32_t kv_dtype;  /* KILN_GPU_F32 (default), _F16 or _BF16 */
  bool no_program;    /* decode by direct submits (comparisons) */
  /* decode returns the argmax only (greedy): its logits stay on the
   * device, and lf_decode's *logits is NULL */
  bool argmax_only;
  /* with argmax_only and a program: steps per chained decode program
   * (lf_decode_chain), at most LF_MAX_CHAIN; 0 or 1: none */
  int32_t chain;
} lf_options;
#define LF_MAX_CHAIN 64

typedef struct lf_state lf_state;

/* Allocates and places the run state, converts norm weights to f32 on the
 * device, records the decode program. rope_freqs: GGUF rope_freqs.weight
 * values (head_dim/2) or NULL. On failure *out is NULL and msg says why. */
int32_t lf_create(const km_llama_config *c, const lf_weights *w,
                  const float *rope_freqs, const lf_options *o,
                  const lf_sink *sink, lf_state **out, char *msg, size_t msglen);
void lf_free(lf_state *s);

/* Tokens in the KV cache (the next position). */
int32_t lf_position(const lf_state *s);
/* Forget the cache (a new sequence). */
void lf_reset(lf_state *s);

/* Runs n tokens at positions lf_position() .. +n-1. On success
 * *logits points to the vocab logits of the last token (with all_logits and
 * n <= max_batch: to n rows of vocab logits), valid until the next call. */
int32_t lf_prefill(lf_state *s, const int32_t *ids, int32_t n,
                   const float **logits, char *msg, size_t msglen);
/* Runs one token at lf_position(). *logits: vocab floats (NULL with
 * argmax_only); *argmax (may be NULL): the device's argmax of them. */
int32_t lf_decode(lf_state *s, int32_t id, const float **logits,
                  int32_t *argmax, char *msg, size_t msglen);

/* Greedy decode of lf_chain_len() tokens in one submission (one graph on
 * cuda): the first step takes token id at lf_position(), each later step
 * the argmax of the step before; out[i] is step i's argmax. The device
 * goes from step to step without the host, which otherwise waits for
 * each token before it submits the next step. 0 when there is no chain
 * program (see lf_options.chain). */
int32_t lf_chain_len(const lf_state *s);
int32_t lf_decode_chain(lf_state *s, int32_t id, int32_t *out, char *msg,
                        size_t msglen);

/* Bytes of weights one decode step reads (for roofline figures). */
uint64_t lf_weight_bytes_per_token(const lf_state *s);
/* Ops per decode step (the program's length). */
int32_t lf_decode_op_count(const lf_state *s);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_LLAMA_FORWARD_H_ */
