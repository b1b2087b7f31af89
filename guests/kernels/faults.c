/* Kernels that fail on purpose, for tests/unit/test_dispatch.c.
 * bindings: 0 out (u32 [groups]). push: the workgroup that fails, as a
 * linear index i = gx + nx * (gy + ny * gz). */
#include "../../sdk/kiln_kernel.h"

static uint32_t linear(const kiln_kernel_args *args, uint32_t gx, uint32_t gy,
                       uint32_t gz) {
  return gx + args->group_count[0] * (gy + args->group_count[1] * gz);
}

/* out[i] = i + 1, except workgroup push[0], which hits `unreachable`. */
KILN_KERNEL(trap_at) {
  uint32_t i = linear(args, gx, gy, gz);
  if (i == args->push[0]) __builtin_trap();
  KILN_BINDING(args, 0, uint32_t)[i] = i + 1;
}

/* Workgroup push[0] reads past the end of the memory (a guard-page fault
 * turned into an out-of-bounds trap); the others write out[i] = i + 1. */
KILN_KERNEL(oob_at) {
  uint32_t i = linear(args, gx, gy, gz), v = 0;
  if (i == args->push[0]) v = *(volatile uint32_t *)(uintptr_t)0xfffffff0u;
  KILN_BINDING(args, 0, uint32_t)[i] = i + 1 + v;
}

/* Recurses push[1] levels with a 1 KiB frame on the shadow stack each, then
 * writes out[gx] = depth reached: exercises each worker's own stack. */
static uint32_t deep(uint32_t n) {
  volatile uint8_t frame[1024];
  frame[n & 1023] = (uint8_t)n;
  return n ? 1 + deep(n - 1) + (frame[n & 1023] - (uint8_t)n) : 0;
}
KILN_KERNEL(stack_depth) {
  (void)gy, (void)gz;
  KILN_BINDING(args, 0, uint32_t)[gx] = deep(args->push[1]);
}
