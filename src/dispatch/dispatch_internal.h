/* Internal pieces of src/dispatch. */
#ifndef KILN_DISPATCH_INTERNAL_H_
#define KILN_DISPATCH_INTERNAL_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../sdk/kiln_kernel.h" /* kiln_kernel_args: the ABI's layout */
#include "kiln/status.h"

_Static_assert(sizeof(kiln_kernel_args) == 160, "kernel ABI v1 layout");

/* What a position-independent module's dylink.0 section says it needs
 * (tool-conventions/DynamicLinking.md, WASM_DYLINK_MEM_INFO). */
typedef struct kiln_dylink_info {
  bool present;          /* the module has a dylink.0 section */
  uint64_t mem_size;     /* bytes of static data */
  uint32_t mem_p2align;  /* its alignment, log2 */
  uint64_t table_size;   /* table entries */
  uint32_t table_p2align;
} kiln_dylink_info;

/* Reads the dylink.0 section of a .wasm (only that: the engine validates
 * the rest). INVALID_MODULE if the section is malformed. */
kiln_status kiln_dylink_read(const uint8_t *bytes, size_t size,
                             kiln_dylink_info *out);

#endif /* KILN_DISPATCH_INTERNAL_H_ */
