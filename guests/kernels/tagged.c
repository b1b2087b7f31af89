/* A module with static data, built twice (TAG=1, TAG=2) with identical,
 * default link flags: both put their data at the same module-relative
 * offsets, and kiln must place them apart in the shared memory.
 * bindings: 0 out (u32 [groups]). */
#include "../../sdk/kiln_kernel.h"

#ifndef TAG
#define TAG 1
#endif

static uint32_t table[256] = {TAG, TAG * 2, TAG * 3};
static uint32_t calls; /* mutable static data (.bss) */

/* out[gx] = TAG * 1000 + table[0] + calls-so-far-independent check. */
KILN_KERNEL(tag) {
  (void)gy, (void)gz;
  calls++; /* racy by design; only its location matters */
  KILN_BINDING(args, 0, uint32_t)[gx] = TAG * 1000 + table[gx % 3];
}

/* Rewrites this module's table from push[0]: static data is per module,
 * shared by all workers. */
KILN_KERNEL(set_table) {
  (void)args, (void)gx, (void)gy, (void)gz;
  for (int i = 0; i < 3; i++) table[i] = args->push[0] * (uint32_t)(i + 1);
}
