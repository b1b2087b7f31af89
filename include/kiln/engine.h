/* kiln engine: modules, instances, host functions, calls, traps.
 *
 * An engine loads .wasm modules, validates them, compiles them ahead of time
 * to native code (kept in a content-addressed pipeline cache), instantiates
 * them against host-owned memories and host functions, and calls their
 * exports. A trap is a status (KILN_CODE_TRAP with a trap kind and the
 * function it happened in), never a crash.
 *
 * The engine is an interface: the first implementation turns Wasm into C
 * with Debian's wasm2c (wabt 1.0.32) and the system C compiler. Everything
 * in this header is independent of that choice.
 *
 * Thread safety: engines and modules are immutable after creation and may be
 * shared by any number of threads. An instance may be called from one
 * thread at a time (concurrent calls into one instance are the caller's to
 * serialise); different instances may run on different threads at once.
 * Every thread that runs guest code gets its own trap state and alternate
 * signal stack on first use. */
#ifndef KILN_ENGINE_H_
#define KILN_ENGINE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/memory.h"
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_engine kiln_engine;
typedef struct kiln_module kiln_module;
typedef struct kiln_instance kiln_instance;
typedef struct kiln_linker kiln_linker;
typedef struct kiln_caller kiln_caller;

/* ---- Values and types ---------------------------------------------------- */

typedef enum kiln_valtype {
  KILN_I32 = 0,
  KILN_I64,
  KILN_F32,
  KILN_F64,
  KILN_V128,
  KILN_FUNCREF,
  KILN_EXTERNREF,
} kiln_valtype;

typedef struct kiln_val {
  kiln_valtype type;
  union {
    uint32_t i32;
    uint64_t i64;
    float f32;
    double f64;
    void *ref; /* funcref: opaque non-NULL when set; externref: host value */
    uint8_t v128[16];
  } of;
} kiln_val;

static inline kiln_val kiln_val_i32(uint32_t v) {
  kiln_val r = {KILN_I32, {.i32 = v}};
  return r;
}
static inline kiln_val kiln_val_i64(uint64_t v) {
  kiln_val r = {KILN_I64, {.i64 = v}};
  return r;
}
static inline kiln_val kiln_val_f32(float v) {
  kiln_val r = {KILN_F32, {.f32 = v}};
  return r;
}
static inline kiln_val kiln_val_f64(double v) {
  kiln_val r = {KILN_F64, {.f64 = v}};
  return r;
}

typedef struct kiln_functype {
  uint32_t param_count;
  uint32_t result_count;
  const kiln_valtype *params;
  const kiln_valtype *results;
} kiln_functype;

typedef struct kiln_limits {
  uint64_t min;
  uint64_t max; /* valid when has_max */
  bool has_max;
  bool shared;
  bool is64;
} kiln_limits;

typedef enum kiln_extern_kind {
  KILN_EXTERN_FUNC = 0,
  KILN_EXTERN_TABLE = 1,
  KILN_EXTERN_MEMORY = 2,
  KILN_EXTERN_GLOBAL = 3,
  KILN_EXTERN_TAG = 4,
} kiln_extern_kind;

typedef struct kiln_externtype {
  kiln_extern_kind kind;
  union {
    kiln_functype func;
    struct {
      kiln_valtype elem;
      kiln_limits limits;
    } table;
    kiln_limits memory;
    struct {
      kiln_valtype type;
      bool is_mutable;
    } global;
  } of;
} kiln_externtype;

typedef struct kiln_import {
  const char *module;
  const char *name;
  kiln_externtype type;
} kiln_import;

typedef struct kiln_export {
  const char *name;
  kiln_externtype type;
} kiln_export;

const char *kiln_valtype_name(kiln_valtype t);
const char *kiln_extern_kind_name(kiln_extern_kind k);
/* Writes e.g. "(i32, i64) -> (f32)" into buf; returns buf. */
char *kiln_functype_format(const kiln_functype *t, char *buf, size_t size);
bool kiln_functype_equal(const kiln_functype *a, const kiln_functype *b);

/* ---- Engine -------------------------------------------------------------- */

/* Progress of long work (compiling a module): stage is a short word such
 * as "wasm2c" or "cc"; done/total count steps. May be NULL. */
typedef void (*kiln_progress_fn)(void *user, const char *module_name,
                                 const char *stage, int done, int total);

typedef struct kiln_engine_options {
  /* Pipeline cache folder. NULL: $KILN_CACHE_DIR, else
   * $XDG_CACHE_HOME/kiln, else $HOME/.cache/kiln. */
  const char *cache_dir;
  bool cache_disabled;      /* compile into a private temp folder */
  const char *cc;           /* C compiler; NULL: $KILN_CC, else "cc" */
  int opt_level;            /* -O level for generated C; <0: default 2 */
  bool enable_multi_memory; /* default true via kiln_engine_options_init */
  kiln_progress_fn progress;
  void *progress_user;
} kiln_engine_options;

void kiln_engine_options_init(kiln_engine_options *o);
kiln_status kiln_engine_create(const kiln_engine_options *o,
                               kiln_engine **out);
void kiln_engine_release(kiln_engine *e);
/* The name of the implementation, e.g. "wasm2c". */
const char *kiln_engine_name(const kiln_engine *e);

/* ---- Modules ------------------------------------------------------------- */

/* Load a module from bytes: parse, validate, compile (or fetch from the
 * cache). name is used in messages (e.g. the file name); may be NULL.
 * Errors: INVALID_MODULE (with the reason and byte offset where known),
 * INTERNAL (compiler failure, message kept), IO. A module the code
 * generator refuses as invalid is remembered in the cache, so loading it
 * again fails at once with the same reason. */
kiln_status kiln_module_load(kiln_engine *e, const uint8_t *bytes,
                             size_t size, const char *name,
                             kiln_module **out);
kiln_status kiln_module_load_file(kiln_engine *e, const char *path,
                                  kiln_module **out);
/* Parse and validate only (no compilation): for `kiln inspect`. Checks the
 * module's structure, every section and index, but not the instructions of
 * function bodies against their types: kiln_module_load does that (through
 * the code generator), so a module that passes here may still be refused
 * there. */
kiln_status kiln_module_validate(kiln_engine *e, const uint8_t *bytes,
                                 size_t size, const char *name);
void kiln_module_retain(kiln_module *m);
void kiln_module_release(kiln_module *m);

const char *kiln_module_name(const kiln_module *m);
size_t kiln_module_import_count(const kiln_module *m);
const kiln_import *kiln_module_import(const kiln_module *m, size_t i);
size_t kiln_module_export_count(const kiln_module *m);
const kiln_export *kiln_module_export(const kiln_module *m, size_t i);
/* Memories the module defines itself (not imported). */
size_t kiln_module_memory_count(const kiln_module *m);
kiln_limits kiln_module_memory(const kiln_module *m, size_t i);
/* Whether the module came from the pipeline cache (true) or was compiled
 * by this load (false); and the cache entry's key as hex. */
bool kiln_module_was_cached(const kiln_module *m);
const char *kiln_module_cache_key(const kiln_module *m);
/* Path of the compiled artifact (shared object) backing this module. */
const char *kiln_module_artifact_path(const kiln_module *m);

/* ---- Host functions ------------------------------------------------------ */

/* A host function as seen by the guest. Two calling conventions:
 *
 * Native (fast): `native` points to a C function whose parameters are
 * (kiln_caller *caller, P1, P2, ...) and whose return type is R, where each
 * Wasm type maps to uint32_t (i32), uint64_t (i64), float (f32), double
 * (f64), and R is void (no result) or one of those (one result). Types with
 * more than one result must use the generic convention.
 *
 * Generic: `generic` receives the arguments as kiln_val (already typed) and
 * fills `results`. A non-OK return abandons the guest call with that status
 * (the caller of kiln_instance_call receives it).
 *
 * A native host function stops the guest with kiln_caller_trap(). */
typedef kiln_status (*kiln_host_generic_fn)(kiln_caller *caller,
                                            const kiln_val *args,
                                            kiln_val *results);

typedef struct kiln_host_func {
  const char *module;
  const char *name;
  kiln_functype type;
  void *native;                 /* or NULL */
  kiln_host_generic_fn generic; /* or NULL; exactly one of the two */
  void *user;                   /* returned by kiln_caller_user() */
} kiln_host_func;

/* The instance whose guest called a host function. */
kiln_instance *kiln_caller_instance(kiln_caller *c);
void *kiln_caller_user(kiln_caller *c);
/* The calling instance's memory `index` (imported or its own), or NULL. */
kiln_memory *kiln_caller_memory(kiln_caller *c, uint32_t index);
/* Abandon the current guest call with `status` (ownership passes). Never
 * returns. Use it only from a host function called by a guest, and only
 * with no host locks held and nothing to clean up. */
__attribute__((noreturn)) void kiln_caller_trap(kiln_caller *c,
                                                kiln_status status);
/* Whether the deadline of the guest call that called this host function
 * (kiln_thread_set_deadline) has passed; false when it has none. The
 * deadline stops a guest only while it runs its own code, so a host
 * function that blocks (I/O, sleeping) or retries after an interrupted
 * system call asks this and ends the call itself, e.g. with
 * kiln_caller_trap(c, kiln_make_trap(KILN_TRAP_TIMEOUT, NULL)).
 * Async-signal-safe apart from that: it reads the clock and a value. */
bool kiln_caller_deadline_passed(const kiln_caller *c);

/* ---- Linker: what imports resolve to ------------------------------------ */

kiln_status kiln_linker_create(kiln_engine *e, kiln_linker **out);
void kiln_linker_release(kiln_linker *l);
/* Define (module, name). Redefinition replaces the old definition. */
kiln_status kiln_linker_define_func(kiln_linker *l, const kiln_host_func *f);
kiln_status kiln_linker_define_memory(kiln_linker *l, const char *module,
                                      const char *name, kiln_memory *m);
/* A host global of the given type and initial value. */
kiln_status kiln_linker_define_global(kiln_linker *l, const char *module,
                                      const char *name, kiln_val value,
                                      bool is_mutable);
/* A host funcref table with `size` null entries and optional maximum. */
kiln_status kiln_linker_define_table(kiln_linker *l, const char *module,
                                     const char *name, kiln_limits limits);
/* Make every export of `inst` importable as (module, export name). The
 * linker keeps a reference on the instance. */
kiln_status kiln_linker_define_instance(kiln_linker *l, const char *module,
                                        kiln_instance *inst);

/* ---- Instances ----------------------------------------------------------- */

typedef struct kiln_instance_options {
  /* Upper bound in bytes for memories this instance defines (imported
   * memories carry their own limits). 0: no extra bound. */
  uint64_t max_memory_bytes;
  /* Skip the check that modules sharing a memory keep their static data
   * and stacks apart (sdk/LINKING.md). Default false. */
  bool allow_region_overlap;
} kiln_instance_options;

/* Resolve imports through `l` (may be NULL when there are none), check
 * their types, allocate the instance's own memories, tables and globals,
 * apply data and element segments and run the start function.
 * Errors: LINK (missing or mismatched import; the message names it), TRAP
 * (start function or segment initialisation trapped), FAILED_PRECONDITION
 * (static-data regions overlap in a shared memory). */
kiln_status kiln_instance_create(kiln_module *m, kiln_linker *l,
                                 const kiln_instance_options *opts,
                                 kiln_instance **out);
void kiln_instance_retain(kiln_instance *i);
void kiln_instance_release(kiln_instance *i);
kiln_module *kiln_instance_module(const kiln_instance *i);

/* Call export `name` with typed arguments. nargs/nresults must match its
 * type (INVALID_ARGUMENT otherwise; arguments are type-checked). A trap
 * returns KILN_CODE_TRAP; proc_exit returns KILN_CODE_EXIT. After a trap
 * the instance stays usable where the spec allows: kiln restores the
 * guest's shadow-stack pointer (__stack_pointer) to its value at entry. */
kiln_status kiln_instance_call(kiln_instance *i, const char *name,
                               const kiln_val *args, size_t nargs,
                               kiln_val *results, size_t nresults);

/* Faster repeated calls: look the export up once. */
typedef struct kiln_func_ref {
  kiln_instance *instance;
  uint32_t export_index;
} kiln_func_ref;
kiln_status kiln_instance_func(kiln_instance *i, const char *name,
                               kiln_func_ref *out);
kiln_status kiln_func_call(kiln_func_ref f, const kiln_val *args,
                           size_t nargs, kiln_val *results, size_t nresults);
const kiln_functype *kiln_func_type(kiln_func_ref f);

/* Direct native access for hot loops: the export's native C function
 * (parameters: (void *env, P1, ...), same type mapping as host functions)
 * and its env. Call it only inside kiln_instance_run(), which sets the trap
 * point once for a whole batch of calls. */
kiln_status kiln_instance_native(kiln_instance *i, const char *name,
                                 void **out_fn, void **out_env);
typedef void (*kiln_run_fn)(void *user);
kiln_status kiln_instance_run(kiln_instance *i, kiln_run_fn fn, void *user);

/* The storage of a global that `i` imports, for hosts that own per-instance
 * state the guest keeps in an imported global: e.g. kernel executables
 * (include/kiln/dispatch.h) import `env.__stack_pointer` per worker and put
 * it back after a trap, since kiln_instance_run() does not. *out_value
 * points at the value (uint32_t, uint64_t, float or double by the global's
 * type), stays valid for the instance's life, and may be read and written
 * only while no guest code of `i` runs on another thread. NOT_FOUND when `i`
 * imports no global (module, name). */
kiln_status kiln_instance_imported_global(kiln_instance *i, const char *module,
                                          const char *name, void **out_value);

/* Memories: by index in the module's memory index space (imports first),
 * or by export name. NULL when absent. The instance keeps its reference. */
kiln_memory *kiln_instance_memory(kiln_instance *i, uint32_t index);
kiln_memory *kiln_instance_memory_export(kiln_instance *i, const char *name);

/* Read or write an exported global. */
kiln_status kiln_instance_global_get(kiln_instance *i, const char *name,
                                     kiln_val *out);
kiln_status kiln_instance_global_set(kiln_instance *i, const char *name,
                                     kiln_val v);

/* ---- Deadlines ----------------------------------------------------------- */

/* Calls made on this thread after this stop with KILN_TRAP_TIMEOUT
 * (status code DEADLINE_EXCEEDED) once `seconds` pass from now, even in a
 * guest loop that never calls the host. 0 clears it. The host stays
 * healthy: only the guest call is abandoned. */
void kiln_thread_set_deadline(double seconds);

#ifdef __cplusplus
}
#endif
#endif /* KILN_ENGINE_H_ */
