/* Internals of kiln_memory shared with the engine.
 *
 * Compiled guest code reads a memory through a small "view" record (base,
 * pages, byte size). The wasm2c engine's wasm_rt_memory_t is laid out
 * exactly like kiln_memory_view (the engine checks this with static
 * asserts). A memory owns one view; a module that defines its own memory
 * keeps a copy inside its instance, registered as a mirror so that growth
 * updates it too. */
#ifndef KILN_MEMORY_INTERNAL_H_
#define KILN_MEMORY_INTERNAL_H_

#include <stdbool.h>
#include <stdint.h>

#include "kiln/memory.h"

typedef struct kiln_memory_view {
  uint8_t *data;
  uint32_t pages;
  uint32_t max_pages;
  uint64_t size;  /* bytes; 64-bit so that 65536 pages is 4 GiB, not 0 */
  void *owner;    /* the kiln_memory */
} kiln_memory_view;

/* The memory's own view, for guests that import it. Stable address. */
kiln_memory_view *kiln_memory_view_of(kiln_memory *m);

/* Keep *mirror equal to the memory's view (now and after every grow).
 * At most a few mirrors per memory. Remove before *mirror is freed. */
kiln_status kiln_memory_add_mirror(kiln_memory *m, kiln_memory_view *mirror);
void kiln_memory_remove_mirror(kiln_memory *m, kiln_memory_view *mirror);

/* Async-signal-safe: whether addr lies in the reserved (guarded) address
 * range of any live memory. The trap handler uses it to tell a guest's
 * out-of-bounds access from a host crash. */
bool kiln_memory_address_is_guarded(uintptr_t addr);

/* Bytes of address space reserved per 32-bit memory: 4 GiB of index range
 * plus 4 GiB of static offset plus one guard page. */
#define KILN_MEMORY_RESERVATION ((uint64_t)8 << 30)

#endif /* KILN_MEMORY_INTERNAL_H_ */
