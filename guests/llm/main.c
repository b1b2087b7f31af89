/* The LLM guest: `generate` inside a Wasm sandbox. The whole program is
 * src/model/llama_run.c (shared with the native twin); this file binds its
 * op sink to the kiln_gpu imports and gives it memory-0 allocations.
 * The host (kiln generate) preopens the model folder and grants each
 * weight file as a read-only memory named after the file. */
#include <stdlib.h>
#include <string.h>

#include "kiln_gpu.h"
#include "model/llama_run.h"

static int32_t g_submit(void *ctx, const kiln_gpu_op *op) {
  (void)ctx;
  return kiln_gpu_submit(op);
}
static int32_t g_sync(void *ctx) {
  (void)ctx;
  return kiln_gpu_sync();
}
static int32_t g_place(void *ctx, uint32_t mem, uint64_t off, uint64_t len,
                       uint32_t p) {
  (void)ctx;
  return kiln_gpu_place(mem, off, len, p);
}
static int32_t g_begin(void *ctx) {
  (void)ctx;
  return kiln_gpu_program_begin();
}
static int32_t g_end(void *ctx) {
  (void)ctx;
  return kiln_gpu_program_end();
}
static int32_t g_psubmit(void *ctx, int32_t h) {
  (void)ctx;
  return kiln_gpu_program_submit(h);
}
static int32_t g_pfree(void *ctx, int32_t h) {
  (void)ctx;
  return kiln_gpu_program_free(h);
}
static int32_t g_lookup(void *ctx, const char *name) {
  (void)ctx;
  return kiln_gpu_memory_lookup(name, (uint32_t)strlen(name));
}
static void g_last_error(void *ctx, char *buf, size_t len) {
  (void)ctx;
  if (len) kiln_gpu_last_error(buf, (uint32_t)len);
}
/* Page-aligned (64 KiB: whole host pages too) so that placing the block
 * RESIDENT covers no allocator data around it. */
static void *g_alloc(void *ctx, uint64_t bytes, uint64_t *offset) {
  (void)ctx;
  if (bytes > SIZE_MAX) return NULL;
  void *p = aligned_alloc(65536, (size_t)bytes);
  if (!p) return NULL;
  memset(p, 0, (size_t)bytes);
  *offset = kiln_gpu_offset_of(p);
  return p;
}
static void g_free(void *ctx, void *p) {
  (void)ctx;
  free(p);
}

int main(int argc, char **argv) {
  lf_sink sink = {
      .ctx = NULL,
      .submit = g_submit,
      .sync = g_sync,
      .place = g_place,
      .program_begin = g_begin,
      .program_end = g_end,
      .program_submit = g_psubmit,
      .program_free = g_pfree,
      .memory_lookup = g_lookup,
      .last_error = g_last_error,
      .alloc = g_alloc,
      .free = g_free,
  };
  return lr_main(argc, argv, &sink);
}
