/* Glue code for a module compiled by wasm2c: import trampolines into
 * kiln's import frame, export invoke thunks, and the kiln_w2c_module
 * descriptor (see w2c/kiln_w2c_abi.h). */
#ifndef KILN_ENGINE_W2C_CODEGEN_H_
#define KILN_ENGINE_W2C_CODEGEN_H_

#include "engine/wasm_binary.h"
#include "kiln/status.h"

/* The C module name kiln passes to wasm2c (-n): symbols are Z_m... */
#define KILN_W2C_MODULE_NAME "m"

/* wasm2c 1.0.32's name mangling: "Z_" then each byte kept when it is
 * alphanumeric (except 'Z') or '_', else "Z" and two hex digits. Writes a
 * malloc'd string to *out. */
kiln_status kiln_w2c_mangle(const char *name, char **out);

/* Writes the glue C source for `info` into a malloc'd string. `header` is
 * the header wasm2c generated (its instance struct gives field names).
 * `field_names` are the import field names wasm2c was given where they
 * differ from info's (see kiln_wasm_unique_import_names); NULL when none
 * do. Every import then has its own (module, name) pair, so its own C
 * symbol and frame slot. */
kiln_status kiln_w2c_generate_glue(const kiln_wasm_info *info,
                                   char *const *field_names,
                                   const char *header, char **out_source);

#endif /* KILN_ENGINE_W2C_CODEGEN_H_ */
