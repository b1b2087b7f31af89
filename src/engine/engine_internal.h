/* Internal structures of kiln's engine (wasm2c implementation). */
#ifndef KILN_ENGINE_INTERNAL_H_
#define KILN_ENGINE_INTERNAL_H_

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>

#include "engine/w2c/kiln_w2c_abi.h"
#include "engine/wasm_binary.h"
#include "kiln/engine.h"

/* What a second engine implementation provides: turning validated bytes
 * into loadable code. Instances, linking and calls are shared. */
typedef struct kiln_engine_backend {
  const char *name;
  kiln_status (*prepare)(kiln_engine *e, kiln_module *m, const uint8_t *bytes,
                         size_t size);
} kiln_engine_backend;

struct kiln_engine {
  atomic_int refs;
  const kiln_engine_backend *backend;
  char *cache_dir;      /* NULL when the cache is disabled */
  char *private_dir;    /* temp cache used when disabled */
  char *cc;
  int opt_level;
  bool multi_memory;
  kiln_progress_fn progress;
  void *progress_user;
  pthread_mutex_t lock;
  char toolchain[65];   /* hash of compiler identities, "" until known */
};

typedef struct kiln_symbol {
  uintptr_t addr;
  const char *name;
} kiln_symbol;

struct kiln_module {
  atomic_int refs;
  kiln_engine *engine;
  char *name;
  kiln_wasm_info *info;
  void *dl;
  const kiln_w2c_module *desc;
  bool cached;
  char key[65];
  char artifact[PATH_MAX];
  int code_slot;
  uintptr_t code_begin, code_end;
  int64_t sp_global;    /* index of __stack_pointer, -1 if unknown */
  size_t sp_offset;     /* its offset in the instance, when known */
  /* Symbols for naming trap sites, loaded on first trap. */
  pthread_mutex_t sym_lock;
  kiln_symbol *symbols;
  size_t symbol_count;
  char *symbol_names;
  bool symbols_loaded;
};

struct kiln_caller {
  kiln_instance *instance;
  kiln_host_func func; /* copy of the definition (user, generic, native) */
};

typedef struct kiln_host_global kiln_host_global;
typedef struct kiln_host_table kiln_host_table;

struct kiln_instance {
  atomic_int refs;
  kiln_module *module;
  void *w2c;                 /* the generated code's instance struct */
  kiln_w2c_frame *frame;
  kiln_caller *callers;      /* one per import */
  kiln_memory **memories;    /* per memory index (retained) */
  kiln_instance **deps;      /* instances whose exports we import */
  uint32_t dep_count;
  kiln_host_global **globals;/* host globals we import (retained) */
  uint32_t global_ref_count;
  kiln_host_table **tables;  /* host tables we import (retained) */
  uint32_t table_ref_count;
  uint64_t claim_id;         /* region claimed in memory 0, 0 if none */
  kiln_memory *claim_memory;
  bool instantiated;
  kiln_instance_options opts;
};

extern const kiln_engine_backend kiln_w2c_backend;
extern const kiln_w2c_rt kiln_w2c_runtime;

/* Name of m's function containing pc (backend-specific), or NULL. */
const char *kiln_module_symbol(kiln_module *m, uintptr_t pc, char *buf,
                               size_t size);
/* Name of the guest function containing pc, or NULL. */
const char *kiln_module_name_pc(uintptr_t pc, char *buf, size_t size);
void kiln_module_registry_add(kiln_module *m);
void kiln_module_registry_remove(kiln_module *m);

/* Instance being instantiated on this thread (for memory limits). */
extern __thread kiln_instance *kiln_instantiating;

void kiln_host_global_release(kiln_host_global *g);
void kiln_host_table_release(kiln_host_table *t);

#endif /* KILN_ENGINE_INTERNAL_H_ */
