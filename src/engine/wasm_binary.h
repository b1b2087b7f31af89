/* Parser and structural validator for the WebAssembly binary format.
 *
 * kiln reads every .wasm itself before handing it to a code generator: to
 * list imports and exports with their types, to know memories, globals and
 * data segments (for the shared-memory region check), to find the shadow
 * stack pointer, and to reject what the code generator would wrongly accept.
 *
 * Input is hostile: every length, count and index is checked against the
 * bytes that remain, in 64-bit arithmetic; counts are bounded before any
 * allocation is sized from them; nothing is read past `size`. Errors are
 * KILN_CODE_INVALID_MODULE with the byte offset and a reason, e.g.
 * "at byte 0x1f: section size 4294967295 runs past the end of the module".
 *
 * What is checked here (the full instruction-level type checking of function
 * bodies is left to the code generator, which validates them):
 *  - header magic and version; section ids, order, sizes, trailing bytes;
 *  - LEB128 encodings (length, unused bits), UTF-8 names;
 *  - type, import, function, table, memory, global, export, start, element,
 *    data count, code and data sections, with every index in range;
 *  - limits (min <= max, memory pages <= 65536, table sizes);
 *  - constant expressions: exactly one value of the expected type, only
 *    allowed instructions, global.get only of imported immutable globals
 *    (an empty offset expression is invalid: wasm2c 1.0.32 misses this);
 *  - export names unique; start function of type [] -> [];
 *  - function and code counts equal; data count equals data segments;
 *  - with multi_memory off, at most one memory.
 * Features kiln's wasm2c engine cannot run are reported in `features` so the
 * engine can refuse them with a clear UNIMPLEMENTED status. */
#ifndef KILN_ENGINE_WASM_BINARY_H_
#define KILN_ENGINE_WASM_BINARY_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/status.h"

typedef enum kiln_wasm_const_kind {
  KILN_CONST_I32,
  KILN_CONST_I64,
  KILN_CONST_F32,
  KILN_CONST_F64,
  KILN_CONST_V128,
  KILN_CONST_REF_NULL,
  KILN_CONST_REF_FUNC,   /* value.index = function index */
  KILN_CONST_GLOBAL_GET, /* value.index = global index */
} kiln_wasm_const_kind;

typedef struct kiln_wasm_const {
  kiln_wasm_const_kind kind;
  kiln_valtype type; /* type of the value produced */
  union {
    uint32_t i32;
    uint64_t i64;
    uint32_t f32_bits;
    uint64_t f64_bits;
    uint8_t v128[16];
    uint32_t index;
  } value;
} kiln_wasm_const;

typedef struct kiln_wasm_global {
  kiln_valtype type;
  bool is_mutable;
  bool imported;        /* then init is unused */
  kiln_wasm_const init;
} kiln_wasm_global;

typedef struct kiln_wasm_table {
  kiln_valtype elem;
  kiln_limits limits;
  bool imported;
} kiln_wasm_table;

typedef struct kiln_wasm_memory {
  kiln_limits limits;
  bool imported;
} kiln_wasm_memory;

typedef struct kiln_wasm_data_segment {
  bool active;
  uint32_t memory;          /* when active */
  kiln_wasm_const offset;   /* when active */
  uint64_t file_offset;     /* where the bytes start in the module */
  uint64_t size;
} kiln_wasm_data_segment;

typedef struct kiln_wasm_export {
  kiln_export desc;         /* name and type (resolved from the index) */
  uint32_t index;           /* in the index space of its kind */
} kiln_wasm_export;

typedef struct kiln_wasm_features {
  bool simd;                /* any v128 type or 0xFD-prefixed opcode seen */
  bool threads;             /* shared memory or atomics */
  bool memory64;
  bool exceptions;          /* tag section */
  bool multi_memory;        /* more than one memory */
} kiln_wasm_features;

typedef struct kiln_wasm_parse_options {
  bool enable_multi_memory;
} kiln_wasm_parse_options;

/* Everything the engine needs to know about a module. All arrays and
 * strings are owned by the info and freed with kiln_wasm_info_free(). */
typedef struct kiln_wasm_info {
  uint32_t type_count;
  kiln_functype *types;

  uint32_t import_count;
  kiln_import *imports;
  uint32_t *import_index; /* per import: index in its kind's index space */
  /* Where the import section and each import's field name (its length
   * prefix included) lie in the module, as byte offsets from its start:
   * what kiln_wasm_unique_import_names() rewrites. */
  uint64_t import_section_at;   /* the section's id byte */
  uint64_t import_section_body; /* its first byte after the size */
  uint64_t import_section_end;  /* one past its last byte */
  uint64_t *import_field_at;    /* per import */
  uint64_t *import_field_end;   /* per import: one past the name */

  uint32_t func_count;        /* imported + defined */
  uint32_t func_import_count;
  uint32_t *func_types;       /* type index per function */

  uint32_t table_count;       /* imported + defined */
  kiln_wasm_table *tables;
  uint32_t memory_count;      /* imported + defined */
  kiln_wasm_memory *memories;
  uint32_t global_count;      /* imported + defined */
  kiln_wasm_global *globals;

  uint32_t export_count;
  kiln_wasm_export *exports;

  bool has_start;
  uint32_t start_func;

  uint32_t elem_count;
  uint32_t data_count;
  kiln_wasm_data_segment *data;

  /* From the "name" custom section when present (NULL otherwise). */
  char *module_name;
  char **func_names;   /* func_count entries, each may be NULL */
  char **global_names; /* global_count entries, each may be NULL */

  kiln_wasm_features features;
} kiln_wasm_info;

kiln_status kiln_wasm_parse(const uint8_t *bytes, size_t size,
                            const kiln_wasm_parse_options *opts,
                            kiln_wasm_info **out);
void kiln_wasm_info_free(kiln_wasm_info *info);

/* Import names a code generator can tell apart. wasm2c 1.0.32 declares one
 * C symbol per (module, name) pair and aborts when a module imports a pair
 * twice with different types (the spec allows that: the host may overload).
 * So every import whose pair, compared as C strings, repeats an earlier
 * import's, or whose field name holds a U+0000 (C strings would cut it),
 * gets a new field name: "<name>#<import index>", with "#<index>" added
 * again while that is another import's name in the same module.
 *
 * When no name needs changing, *out_names and *out_bytes are NULL. Else
 * *out_names has info->import_count entries, each the new name or NULL for
 * an import that keeps its own, and *out_bytes (*out_size bytes) is a copy
 * of the module with the new names written in; everything else is
 * unchanged, byte for byte. The caller frees both with
 * kiln_wasm_names_free() and free(). `info` must be the parse of `bytes`.
 * Linking still uses the real names in info->imports. */
kiln_status kiln_wasm_unique_import_names(const uint8_t *bytes, size_t size,
                                          const kiln_wasm_info *info,
                                          char ***out_names,
                                          uint8_t **out_bytes,
                                          size_t *out_size);
void kiln_wasm_names_free(char **names, uint32_t count);

/* Index of the global named "__stack_pointer" in the name section, if it
 * is a defined (not imported) mutable i32; -1 otherwise. */
int64_t kiln_wasm_stack_pointer_global(const kiln_wasm_info *info);

#endif /* KILN_ENGINE_WASM_BINARY_H_ */
