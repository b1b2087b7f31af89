/* Tokenizers for Llama-family models, matching Hugging Face `tokenizers`.
 *
 * Loaded from a tokenizer.json or from GGUF tokenizer metadata:
 *  - byte-level BPE (GPT-2 / Llama 3): pre-tokenizer ByteLevel with its
 *    GPT-2 regex, or Split with the GPT-4/Llama 3 regex followed by
 *    ByteLevel(use_regex=false); both regexes are implemented by hand with
 *    Unicode L/N tables (unicode_tables.c). Model BPE with merges applied by
 *    rank (the lowest-ranked pair first, the leftmost on ties), optional
 *    ignore_merges, byte_fallback, unk. Decoder ByteLevel.
 *  - sentencepiece-style BPE (Llama 2): normalizer Prepend("▁") +
 *    Replace(" ", "▁") or pre-tokenizer Metaspace; byte fallback <0xNN>;
 *    decoder Replace/ByteFallback/Fuse/Strip or Metaspace.
 *  - GGUF: tokenizer.ggml.model "gpt2" (tokens, merges, token_type,
 *    tokenizer.ggml.pre "llama-bpe"/"default"/"gpt2") and "llama" (tokens,
 *    scores, token_type: merges derived from the scores as transformers'
 *    SentencePieceExtractor does).
 * Added tokens (the added_tokens list, or GGUF control/user-defined
 * tokens) are split out of the text first, leftmost-longest, as HF does.
 * The post-processor's single-sequence template (e.g. "<|begin_of_text|>
 * $A") is applied when add_special is true.
 *
 * Anything else in a tokenizer.json (another model type, normalizer,
 * pattern or decoder) is refused with KM_ERR_UNSUPPORTED rather than
 * tokenized differently. A loaded tokenizer is immutable and may be used
 * from several threads. */
#ifndef KILN_MODEL_TOKENIZER_H_
#define KILN_MODEL_TOKENIZER_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/km_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct km_tokenizer km_tokenizer;

km_code km_tokenizer_from_json(const char *json, size_t len, km_tokenizer **out, km_error *err);
km_code km_tokenizer_from_gguf(const km_gguf *g, km_tokenizer **out, km_error *err);
void km_tokenizer_free(km_tokenizer *t);

/* Number of ids (model vocabulary plus added tokens): every id below it
 * has a token string. */
int32_t km_tokenizer_vocab_size(const km_tokenizer *t);
/* The token's string as stored (byte-level tokens are in GPT-2's byte
 * alphabet), or NULL for an unknown id. */
const char *km_tokenizer_token(const km_tokenizer *t, int32_t id, size_t *len);
/* The id of an exact token string, or -1. */
int32_t km_tokenizer_find(const km_tokenizer *t, const char *token, size_t len);
bool km_tokenizer_is_special(const km_tokenizer *t, int32_t id);

/* Encodes UTF-8 text (invalid UTF-8 is KM_ERR_FORMAT). *ids is malloc'd
 * and owned by the caller (free it even when *n_ids is 0). */
km_code km_tokenizer_encode(const km_tokenizer *t, const char *text, size_t len,
                            bool add_special, int32_t **ids, size_t *n_ids, km_error *err);
/* Decodes ids to UTF-8 as `tokenizers` decode() does (invalid byte
 * sequences become U+FFFD; unknown ids are dropped). *text is malloc'd,
 * NUL-terminated, owned by the caller. */
km_code km_tokenizer_decode(const km_tokenizer *t, const int32_t *ids, size_t n,
                            bool skip_special, char **text, size_t *len, km_error *err);

/* For streaming: the raw bytes one token contributes to the output
 * (byte-level: its bytes; sentencepiece: ▁ as a space, <0xNN> as that
 * byte). Writes at most cap bytes, returns the full length (-1 for an
 * unknown id). Concatenating these and holding back an incomplete UTF-8
 * tail reproduces decode(), except that sentencepiece decoders drop the
 * leading space of the first token: km_tokenizer_strips_first_space
 * says so. */
int km_tokenizer_token_bytes(const km_tokenizer *t, int32_t id, char *buf, size_t cap);
bool km_tokenizer_strips_first_space(const km_tokenizer *t);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_TOKENIZER_H_ */
