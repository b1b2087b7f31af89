/* Host side of `kiln generate` (contract in llm_host.h). */
#define _GNU_SOURCE
#include "llm/llm_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/memory.h"
#include "kiln/wasi.h"

/* ---- Model -------------------------------------------------------------- */

kiln_status kiln_llm_model_open(const char *path, kiln_llm_model **out) {
  *out = NULL;
  kiln_llm_model *m = calloc(1, sizeof *m);
  if (!m || !(m->path = strdup(path))) {
    free(m);
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  km_error err;
  if (lr_model_load(path, true, &m->m, &err)) {
    free(m->path);
    free(m);
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "%s", err.message);
  }
  for (uint32_t i = 0; i < m->m.n_files; i++) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", m->m.dir, m->m.files[i]) < 0) {
      kiln_llm_model_close(m);
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    kiln_status s = kiln_memory_create_from_file(p, &m->files[i]);
    free(p);
    if (s) {
      kiln_llm_model_close(m);
      return s;
    }
  }
  *out = m;
  return KILN_OK;
}

void kiln_llm_model_close(kiln_llm_model *m) {
  if (!m) return;
  for (uint32_t i = 0; i < LR_MAX_FILES; i++) kiln_memory_release(m->files[i]);
  lr_model_free(&m->m);
  free(m->path);
  free(m);
}

kiln_status kiln_llm_model_grant(kiln_llm_model *m, kiln_gpu_session *s,
                                 kiln_llm_progress_fn progress, void *user) {
  uint64_t total = lr_model_bytes(&m->m), done = 0;
  for (uint32_t i = 0; i < m->m.n_files; i++) {
    if (progress) progress(user, m->m.files[i], done, total);
    /* Tensors start where the file's header ends (safetensors: anywhere);
     * lay the device copy out so that they are aligned there. */
    uint64_t data_offset = m->m.is_gguf ? m->m.gguf.data_offset
                                        : m->m.shards[i].data_offset;
    KILN_RETURN_IF_ERROR(kiln_device_attach_aligned(
        kiln_gpu_session_device(s), m->files[i], data_offset));
    KILN_RETURN_IF_ERROR(kiln_gpu_session_grant_memory(s, m->m.files[i],
                                                       m->files[i], NULL));
    done += m->m.file_sizes[i];
  }
  if (progress) progress(user, NULL, done, total);
  return KILN_OK;
}

/* ---- The native twin's memory 0 and sink ---------------------------------- */

struct kiln_llm_native {
  kiln_gpu_session *session;
  kiln_memory *memory;
  uint64_t top;      /* bump allocator: bytes in use from offset 65536 */
  lf_sink sink;
};

static int32_t n_submit(void *c, const kiln_gpu_op *op) {
  return kiln_gpu_session_submit_op(((kiln_llm_native *)c)->session, op);
}
static int32_t n_sync(void *c) {
  return kiln_gpu_session_sync(((kiln_llm_native *)c)->session);
}
static int32_t n_place(void *c, uint32_t mem, uint64_t off, uint64_t len,
                       uint32_t p) {
  return kiln_gpu_session_place(((kiln_llm_native *)c)->session, mem, off, len,
                                p);
}
static int32_t n_begin(void *c) {
  return kiln_gpu_session_program_begin(((kiln_llm_native *)c)->session);
}
static int32_t n_end(void *c) {
  return kiln_gpu_session_program_end(((kiln_llm_native *)c)->session);
}
static int32_t n_psubmit(void *c, int32_t h) {
  return kiln_gpu_session_program_submit(((kiln_llm_native *)c)->session, h);
}
static int32_t n_pfree(void *c, int32_t h) {
  return kiln_gpu_session_program_free(((kiln_llm_native *)c)->session, h);
}
static int32_t n_lookup(void *c, const char *name) {
  return kiln_gpu_session_memory_lookup(((kiln_llm_native *)c)->session, name);
}
static void n_last_error(void *c, char *buf, size_t len) {
  if (len)
    snprintf(buf, len, "%s",
             kiln_gpu_session_last_error(((kiln_llm_native *)c)->session));
}

/* Allocations are 64 KiB-aligned and padded, like the guest's, so that a
 * RESIDENT placement of one covers nothing else. Offset 0 stays unused (a
 * null pointer in the guest's terms). */
static void *n_alloc(void *c, uint64_t bytes, uint64_t *offset) {
  kiln_llm_native *n = c;
  uint64_t start = 65536 + n->top;
  uint64_t size = (bytes + 65535) / 65536 * 65536;
  uint64_t end = start + size;
  if (end > (uint64_t)KILN_MEMORY_MAX_PAGES * 65536) return NULL;
  uint64_t have = kiln_memory_size(n->memory);
  if (end > have) {
    uint64_t old;
    kiln_status s =
        kiln_memory_grow(n->memory, (end - have + 65535) / 65536, &old);
    if (s) {
      kiln_status_free(s);
      return NULL;
    }
  }
  void *p = kiln_memory_range_or_null(n->memory, start, size);
  if (!p) return NULL;
  memset(p, 0, size);
  n->top += size;
  *offset = start;
  return p;
}

/* Frees only the last block (the forward pass makes one). */
static void n_free(void *c, void *p) {
  kiln_llm_native *n = c;
  if (!p) return;
  uint64_t off = (uint64_t)((uint8_t *)p - kiln_memory_base(n->memory));
  if (off >= 65536 && off < 65536 + n->top) n->top = off - 65536;
}

kiln_status kiln_llm_native_create(kiln_gpu_session *s, kiln_llm_native **out) {
  *out = NULL;
  kiln_llm_native *n = calloc(1, sizeof *n);
  if (!n) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  kiln_memory_options mo = {.initial_pages = 1, .name = "native-twin"};
  kiln_status st = kiln_memory_create(&mo, &n->memory);
  if (!st) st = kiln_gpu_session_bind_memory(s, n->memory);
  if (st) {
    kiln_memory_release(n->memory);
    free(n);
    return st;
  }
  n->session = s;
  n->sink = (lf_sink){
      .ctx = n,
      .submit = n_submit,
      .sync = n_sync,
      .place = n_place,
      .program_begin = n_begin,
      .program_end = n_end,
      .program_submit = n_psubmit,
      .program_free = n_pfree,
      .memory_lookup = n_lookup,
      .last_error = n_last_error,
      .alloc = n_alloc,
      .free = n_free,
  };
  *out = n;
  return KILN_OK;
}

void kiln_llm_native_release(kiln_llm_native *n) {
  if (!n) return;
  /* The session keeps its own reference to the bound memory. */
  kiln_memory_release(n->memory);
  free(n);
}

const lf_sink *kiln_llm_native_sink(kiln_llm_native *n) { return &n->sink; }
kiln_memory *kiln_llm_native_memory(kiln_llm_native *n) { return n->memory; }

int kiln_llm_run_native(kiln_gpu_session *s, int argc, char **argv) {
  kiln_llm_native *n = NULL;
  kiln_status st = kiln_llm_native_create(s, &n);
  if (st) {
    fprintf(stderr, "kiln: native twin: %s\n", kiln_status_message(st));
    kiln_status_free(st);
    return 1;
  }
  int rc = lr_main(argc, argv, kiln_llm_native_sink(n));
  kiln_llm_native_release(n);
  return rc;
}

/* ---- The guest ---------------------------------------------------------------- */

kiln_status kiln_llm_run_guest(const kiln_llm_guest_options *o,
                               kiln_gpu_session *s, int *exit_code) {
  *exit_code = 1;
  kiln_module *mod = NULL;
  kiln_linker *l = NULL;
  kiln_wasi *w = NULL;
  kiln_instance *inst = NULL;
  kiln_status st =
      kiln_module_load(o->engine, o->wasm, o->wasm_size, "llm.wasm", &mod);
  if (st) return st;
  kiln_wasi_preopen pre = {.host_path = o->model_dir, .guest_path = "/model"};
  kiln_wasi_options wo;
  kiln_wasi_options_init(&wo);
  wo.argv = (const char *const *)o->argv;
  wo.argc = o->argc;
  wo.preopens = &pre;
  wo.preopen_count = 1;
  st = kiln_wasi_create(&wo, &w);
  if (!st) st = kiln_linker_create(o->engine, &l);
  if (!st) st = kiln_wasi_define(w, l);
  if (!st) st = kiln_gpu_define(l, s);
  if (!st) st = kiln_instance_create(mod, l, NULL, &inst);
  if (!st && kiln_instance_memory(inst, 0))
    st = kiln_gpu_session_bind_memory(s, kiln_instance_memory(inst, 0));
  if (!st) {
    kiln_func_ref f;
    st = kiln_instance_func(inst, "_start", &f);
    if (!st) st = kiln_func_call(f, NULL, 0, NULL, 0);
    if (!st) {
      *exit_code = 0;
    } else if (kiln_status_code(st) == KILN_CODE_EXIT) {
      *exit_code = kiln_status_exit_code(st);
      kiln_status_free(st);
      st = KILN_OK;
    }
  }
  fflush(stdout);
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_wasi_release(w);
  kiln_module_release(mod);
  return st;
}
