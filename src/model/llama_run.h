/* `generate`, as a portable program: the body of the LLM guest
 * (guests/llm) and of its native twin (kiln generate --native).
 *
 * lr_model_load reads a model with plain POSIX file calls (open, pread,
 * fstat: WASI in the guest, the OS natively): a Hugging Face directory
 * (config.json, tokenizer.json, model.safetensors or a sharded
 * model.safetensors.index.json) or a GGUF file. It checks everything a
 * forward pass relies on (config, every weight's name, shape and dtype,
 * the tokenizer) and reads no weight data (except GGUF's small
 * rope_freqs). The host runs the very same function first, natively, so
 * a bad model fails with one clear line before any device work.
 *
 * lr_main parses a guest command line, loads the model, binds each weight
 * file to the memory the host granted under its file name, and runs:
 * encode the prompt, prefill, then decode with sampling, streaming text to
 * stdout as tokens come (or JSON lines with --json). Arguments:
 *   --model PATH --prompt TEXT [-n N] [--temp T] [--top-k K] [--top-p P]
 *   [--seed S] [--json] [--ignore-eos] [--max-seq N] [--batch N]
 *   [--kv f32|f16|bf16] [--no-program] [--no-echo] [--label NAME]
 * Exit status: 0, 1 for errors (one line on stderr), 2 for usage. */
#ifndef KILN_MODEL_LLAMA_RUN_H_
#define KILN_MODEL_LLAMA_RUN_H_

#include <stdbool.h>
#include <stdint.h>

#include "model/gguf.h"
#include "model/km_error.h"
#include "model/llama_config.h"
#include "model/llama_forward.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LR_MAX_FILES 64

typedef struct lr_model {
  char *dir;                       /* folder of the files */
  bool is_gguf;
  km_llama_config cfg;
  km_tokenizer *tok;
  km_gguf gguf;                    /* is_gguf */
  bool has_index;
  km_st_index index;               /* sharded safetensors */
  km_safetensors *shards;          /* n_files (safetensors) */
  uint32_t n_files;
  char *files[LR_MAX_FILES];       /* weight file names, relative to dir */
  uint64_t file_sizes[LR_MAX_FILES];
  km_llama_weights weights;
  float *rope_freqs;               /* GGUF rope_freqs.weight or NULL */
} lr_model;

/* path: a model folder or a .gguf file. with_tokenizer false skips the
 * tokenizer (weights-only checks). */
km_code lr_model_load(const char *path, bool with_tokenizer, lr_model *m,
                      km_error *err);
void lr_model_free(lr_model *m);
/* Bytes of all weight files. */
uint64_t lr_model_bytes(const lr_model *m);

int lr_main(int argc, char **argv, const lf_sink *sink);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_LLAMA_RUN_H_ */
