/* kiln's runtime support for wasm2c output, compiled into each module.
 * Everything forwards to libkiln through the table given to kiln_w2c_bind;
 * see kiln_w2c_abi.h. Included by the generated glue file. */
#include <stdarg.h>

#include "kiln_w2c_abi.h"
#include "wasm-rt.h"

static const kiln_w2c_rt *kiln_rt;

__attribute__((visibility("default"))) int kiln_w2c_bind(
    const kiln_w2c_rt *rt) {
  if (!rt || rt->abi_version != KILN_W2C_ABI_VERSION) return -1;
  kiln_rt = rt;
  return 0;
}

void wasm_rt_init(void) {}
bool wasm_rt_is_initialized(void) { return kiln_rt != NULL; }
void wasm_rt_free(void) {}

__attribute__((noinline)) void wasm_rt_trap(wasm_rt_trap_t code) {
  kiln_rt->trap((int)code, __builtin_return_address(0));
}

const char *wasm_rt_strerror(wasm_rt_trap_t trap) {
  (void)trap;
  return "trap";
}

uint32_t wasm_rt_register_func_type(uint32_t params, uint32_t results, ...) {
  int types[64];
  uint32_t n = params + results;
  va_list ap;
  va_start(ap, results);
  for (uint32_t i = 0; i < n; i++) {
    int t = va_arg(ap, int);
    if (i < 64) types[i] = t;
  }
  va_end(ap);
  /* Signatures longer than 64 values get a unique id per registration
   * (libkiln sees a count > 64 and cannot compare them). */
  return kiln_rt->register_func_type(params, results, types);
}

/* Exceptions are refused before compilation (the tag section marks them);
 * these exist so that the generated code links. */
uint32_t wasm_rt_register_tag(uint32_t size) { return size; }
void wasm_rt_load_exception(uint32_t tag, uint32_t size, const void *values) {
  (void)tag, (void)size, (void)values;
}
void wasm_rt_throw(void) {
  kiln_rt->trap(WASM_RT_TRAP_UNCAUGHT_EXCEPTION, __builtin_return_address(0));
}
static WASM_RT_UNWIND_TARGET *kiln_unwind_target;
WASM_RT_UNWIND_TARGET *wasm_rt_get_unwind_target(void) {
  return kiln_unwind_target;
}
void wasm_rt_set_unwind_target(WASM_RT_UNWIND_TARGET *t) {
  kiln_unwind_target = t;
}
uint32_t wasm_rt_exception_tag(void) { return 0; }
uint32_t wasm_rt_exception_size(void) { return 0; }
void *wasm_rt_exception(void) { return NULL; }

void wasm_rt_allocate_memory(wasm_rt_memory_t *m, uint32_t initial,
                             uint32_t max) {
  kiln_rt->allocate_memory(m, initial, max);
}
uint32_t wasm_rt_grow_memory(wasm_rt_memory_t *m, uint32_t pages) {
  return kiln_rt->grow_memory(m, pages);
}
void wasm_rt_free_memory(wasm_rt_memory_t *m) { kiln_rt->free_memory(m); }

void wasm_rt_allocate_funcref_table(wasm_rt_funcref_table_t *t, uint32_t n,
                                    uint32_t max) {
  kiln_rt->allocate_table(t, sizeof(wasm_rt_funcref_t), n, max);
}
void wasm_rt_free_funcref_table(wasm_rt_funcref_table_t *t) {
  kiln_rt->free_table(t);
}
void wasm_rt_allocate_externref_table(wasm_rt_externref_table_t *t, uint32_t n,
                                      uint32_t max) {
  kiln_rt->allocate_table(t, sizeof(wasm_rt_externref_t), n, max);
}
void wasm_rt_free_externref_table(wasm_rt_externref_table_t *t) {
  kiln_rt->free_table(t);
}
uint32_t wasm_rt_grow_funcref_table(wasm_rt_funcref_table_t *t, uint32_t delta,
                                    wasm_rt_funcref_t init) {
  return kiln_rt->grow_table(t, sizeof init, delta, &init);
}
uint32_t wasm_rt_grow_externref_table(wasm_rt_externref_table_t *t,
                                      uint32_t delta,
                                      wasm_rt_externref_t init) {
  return kiln_rt->grow_table(t, sizeof init, delta, &init);
}
