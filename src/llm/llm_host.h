/* The host side of `kiln generate`: check a model, map its weight files,
 * grant them to a guest's kiln_gpu session, and run the generation either
 * in the LLM guest (guests/llm, a .wasm) or natively (the native twin:
 * the same src/model/llama_run.c driving the same session through
 * kiln_gpu_session_submit_op and friends, with no Wasm boundary).
 *
 * Both paths run lr_main with the same arguments, so their outputs are
 * identical and their timings differ only by the boundary. Model checking
 * is lr_model_load, natively, before any device is opened: a malformed or
 * truncated file, an unknown dtype or a wrong shape is one clear line. */
#ifndef KILN_LLM_LLM_HOST_H_
#define KILN_LLM_LLM_HOST_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/gpu_host.h"
#include "kiln/status.h"
#include "model/llama_forward.h"
#include "model/llama_run.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A checked model and its weight files mapped read-only (not yet on any
 * device). */
typedef struct kiln_llm_model {
  lr_model m;                          /* parsed by lr_model_load */
  kiln_memory *files[LR_MAX_FILES];    /* mapped weight files */
  char *path;                          /* as given */
} kiln_llm_model;

/* Checks the model at `path` (folder or .gguf) and maps its weight files.
 * Errors: INVALID_ARGUMENT with the file and what is wrong. */
kiln_status kiln_llm_model_open(const char *path, kiln_llm_model **out);
void kiln_llm_model_close(kiln_llm_model *m);

/* Loading progress: called with bytes done and total (per granted file). */
typedef void (*kiln_llm_progress_fn)(void *user, const char *file,
                                     uint64_t done, uint64_t total);

/* Grants every weight file to the session under its file name (read-only
 * memories attach RESIDENT: on a GPU the weights go to device memory). */
kiln_status kiln_llm_model_grant(kiln_llm_model *m, kiln_gpu_session *s,
                                 kiln_llm_progress_fn progress, void *user);

/* Memory 0 of the native twin: a kiln_memory bound to the session, with a
 * bump allocator behind lf_sink.alloc. */
typedef struct kiln_llm_native kiln_llm_native;
kiln_status kiln_llm_native_create(kiln_gpu_session *s, kiln_llm_native **out);
void kiln_llm_native_release(kiln_llm_native *n);
const lf_sink *kiln_llm_native_sink(kiln_llm_native *n);
kiln_memory *kiln_llm_native_memory(kiln_llm_native *n);

/* Runs lr_main natively. argv[0] is a program name; --model must name the
 * host path. Returns lr_main's exit status. */
int kiln_llm_run_native(kiln_gpu_session *s, int argc, char **argv);

typedef struct kiln_llm_guest_options {
  kiln_engine *engine;
  const uint8_t *wasm;      /* the LLM guest module */
  size_t wasm_size;
  const char *model_dir;    /* host folder preopened as /model */
  int argc;                 /* guest arguments (argv[0] included); --model */
  char **argv;              /* must name /model or /model/FILE */
} kiln_llm_guest_options;

/* Loads, instantiates and runs the guest with the session's imports. The
 * guest's exit status goes to *exit_code. Errors: loading or a trap. */
kiln_status kiln_llm_run_guest(const kiln_llm_guest_options *o,
                               kiln_gpu_session *s, int *exit_code);

#ifdef __cplusplus
}
#endif
#endif /* KILN_LLM_LLM_HOST_H_ */
