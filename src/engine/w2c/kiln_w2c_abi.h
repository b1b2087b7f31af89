/* The binary interface between libkiln and a module compiled by kiln's
 * wasm2c engine. Compiled into libkiln and (embedded) into every module's
 * shared object; KILN_W2C_ABI_VERSION is part of the pipeline cache key, so
 * change it with any change here.
 *
 * libkiln -> module: kiln_w2c_describe() returns a kiln_w2c_module: sizes,
 * layout offsets, instantiate/free entry points and the export table.
 * module -> libkiln: kiln_w2c_bind() hands the module a kiln_w2c_rt, the
 * table of runtime functions (traps, types, memories, tables) the shim
 * forwards to.
 *
 * Imports: every import of the module (in import order) has a slot in a
 * kiln_w2c_frame that libkiln fills before instantiating. The generated
 * code passes that frame back as its "import module instance" pointer. */
#ifndef KILN_W2C_ABI_H_
#define KILN_W2C_ABI_H_

#include <stddef.h>
#include <stdint.h>

#define KILN_W2C_ABI_VERSION 2

/* Same layout as kiln_val. */
typedef struct kiln_w2c_val {
  int type;
  union {
    uint32_t i32;
    uint64_t i64;
    float f32;
    double f64;
    void *ref;
    uint8_t v128[16];
  } of;
} kiln_w2c_val;

typedef void (*kiln_w2c_generic_fn)(void *env, const kiln_w2c_val *args,
                                    kiln_w2c_val *results);

/* One resolved import. Functions: call fn(env, args...) or, when generic is
 * set, generic(env, args, results). Memories, tables and globals: env points
 * at the wasm_rt_memory_t, table or value. */
typedef struct kiln_w2c_slot {
  void *fn;
  void *env;
  kiln_w2c_generic_fn generic;
} kiln_w2c_slot;

typedef struct kiln_w2c_frame {
  struct kiln_w2c_frame *self;
  kiln_w2c_slot slots[1]; /* import_count entries */
} kiln_w2c_frame;

enum {
  KILN_W2C_EXPORT_FUNC = 0,
  KILN_W2C_EXPORT_TABLE = 1,
  KILN_W2C_EXPORT_MEMORY = 2,
  KILN_W2C_EXPORT_GLOBAL = 3,
};

typedef void (*kiln_w2c_invoke_fn)(void *instance, const kiln_w2c_val *args,
                                   kiln_w2c_val *results);

typedef struct kiln_w2c_export {
  const char *name;
  int kind;
  void *fn;                  /* FUNC: native export (instance, params...) */
  kiln_w2c_invoke_fn invoke; /* FUNC: generic entry */
  void *(*get)(void *instance); /* TABLE/MEMORY/GLOBAL: address in instance */
} kiln_w2c_export;

typedef struct kiln_w2c_module {
  uint32_t abi_version;
  size_t instance_size;
  uint32_t import_count;
  void (*instantiate)(void *instance, kiln_w2c_frame *frame);
  void (*free)(void *instance);
  uint32_t export_count;
  const kiln_w2c_export *exports;
  /* Offsets into the instance of defined memories, tables and globals, in
   * index order (imports excluded). */
  uint32_t memory_count;
  const size_t *memory_offsets;
  uint32_t table_count;
  const size_t *table_offsets;
  uint32_t global_count;
  const size_t *global_offsets;
} kiln_w2c_module;

typedef struct kiln_w2c_rt {
  uint32_t abi_version;
  __attribute__((noreturn)) void (*trap)(int wasm_rt_trap, void *pc);
  uint32_t (*register_func_type)(uint32_t params, uint32_t results,
                                 const int *types);
  void (*allocate_memory)(void *mem, uint32_t initial, uint32_t max);
  uint32_t (*grow_memory)(void *mem, uint32_t delta);
  void (*free_memory)(void *mem);
  /* Tables: `table` is a wasm_rt_*_table_t; elem_size the entry size. */
  void (*allocate_table)(void *table, size_t elem_size, uint32_t elements,
                         uint32_t max);
  uint32_t (*grow_table)(void *table, size_t elem_size, uint32_t delta,
                         const void *init);
  void (*free_table)(void *table);
} kiln_w2c_rt;

#endif /* KILN_W2C_ABI_H_ */
