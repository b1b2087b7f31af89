/* Engines, modules, linkers, instances and calls (engine-independent part;
 * code generation sits behind kiln_engine_backend). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/cache.h"
#include "engine/engine_internal.h"
#include "engine/trap.h"
#include "memory/memory_internal.h"

static kiln_status oom(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- Types ----------------------------------------------------------------- */

const char *kiln_valtype_name(kiln_valtype t) {
  static const char *names[] = {"i32", "i64", "f32", "f64", "v128", "funcref",
                                "externref"};
  return (unsigned)t < 7 ? names[t] : "?";
}

const char *kiln_extern_kind_name(kiln_extern_kind k) {
  static const char *names[] = {"func", "table", "memory", "global", "tag"};
  return (unsigned)k < 5 ? names[k] : "?";
}

char *kiln_functype_format(const kiln_functype *t, char *buf, size_t size) {
  size_t n = 0;
  n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "(");
  for (uint32_t i = 0; i < t->param_count; i++)
    n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s",
                          i ? ", " : "", kiln_valtype_name(t->params[i]));
  n += (size_t)snprintf(buf + n, n < size ? size - n : 0, ") -> (");
  for (uint32_t i = 0; i < t->result_count; i++)
    n += (size_t)snprintf(buf + n, n < size ? size - n : 0, "%s%s",
                          i ? ", " : "", kiln_valtype_name(t->results[i]));
  snprintf(buf + n, n < size ? size - n : 0, ")");
  return buf;
}

bool kiln_functype_equal(const kiln_functype *a, const kiln_functype *b) {
  if (a->param_count != b->param_count || a->result_count != b->result_count)
    return false;
  for (uint32_t i = 0; i < a->param_count; i++)
    if (a->params[i] != b->params[i]) return false;
  for (uint32_t i = 0; i < a->result_count; i++)
    if (a->results[i] != b->results[i]) return false;
  return true;
}

/* ---- Engine ------------------------------------------------------------------ */

void kiln_engine_options_init(kiln_engine_options *o) {
  memset(o, 0, sizeof *o);
  o->opt_level = -1;
  o->enable_multi_memory = true;
}

static char *default_cache_dir(void) {
  const char *v = getenv("KILN_CACHE_DIR");
  char buf[PATH_MAX];
  if (v && *v) return strdup(v);
  if ((v = getenv("XDG_CACHE_HOME")) && *v) {
    snprintf(buf, sizeof buf, "%s/kiln", v);
    return strdup(buf);
  }
  if ((v = getenv("HOME")) && *v) {
    snprintf(buf, sizeof buf, "%s/.cache/kiln", v);
    return strdup(buf);
  }
  snprintf(buf, sizeof buf, "/tmp/kiln-cache-%d", (int)getuid());
  return strdup(buf);
}

kiln_status kiln_engine_create(const kiln_engine_options *o,
                               kiln_engine **out) {
  kiln_engine_options def;
  if (!o) {
    kiln_engine_options_init(&def);
    o = &def;
  }
  kiln_engine *e = calloc(1, sizeof *e);
  if (!e) return oom();
  atomic_init(&e->refs, 1);
  e->backend = &kiln_w2c_backend;
  e->opt_level = o->opt_level < 0 ? 2 : (o->opt_level > 3 ? 3 : o->opt_level);
  e->multi_memory = o->enable_multi_memory;
  e->progress = o->progress;
  e->progress_user = o->progress_user;
  pthread_mutex_init(&e->lock, NULL);
  const char *cc = o->cc ? o->cc : getenv("KILN_CC");
  e->cc = strdup(cc && *cc ? cc : "cc");
  if (o->cache_disabled) {
    char tmpl[] = "/tmp/kiln-nocache-XXXXXX";
    if (mkdtemp(tmpl)) e->private_dir = strdup(tmpl);
  } else {
    e->cache_dir = o->cache_dir ? strdup(o->cache_dir) : default_cache_dir();
  }
  if (!e->cc || (!e->cache_dir && !e->private_dir)) {
    kiln_engine_release(e);
    return oom();
  }
  *out = e;
  return KILN_OK;
}

static void engine_retain(kiln_engine *e) { atomic_fetch_add(&e->refs, 1); }

void kiln_engine_release(kiln_engine *e) {
  if (!e || atomic_fetch_sub(&e->refs, 1) != 1) return;
  if (e->private_dir) kiln_remove_tree(e->private_dir);
  free(e->private_dir);
  free(e->cache_dir);
  free(e->cc);
  pthread_mutex_destroy(&e->lock);
  free(e);
}

const char *kiln_engine_name(const kiln_engine *e) { return e->backend->name; }

/* ---- Module registry (naming trap sites) ------------------------------------ */

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static kiln_module **registry;
static size_t registry_count, registry_cap;

void kiln_module_registry_add(kiln_module *m) {
  pthread_mutex_lock(&registry_lock);
  if (registry_count == registry_cap) {
    size_t cap = registry_cap ? registry_cap * 2 : 16;
    kiln_module **r = realloc(registry, cap * sizeof *r);
    if (r) {
      registry = r;
      registry_cap = cap;
    }
  }
  if (registry_count < registry_cap) registry[registry_count++] = m;
  pthread_mutex_unlock(&registry_lock);
}

void kiln_module_registry_remove(kiln_module *m) {
  pthread_mutex_lock(&registry_lock);
  for (size_t i = 0; i < registry_count; i++) {
    if (registry[i] == m) {
      registry[i] = registry[--registry_count];
      break;
    }
  }
  pthread_mutex_unlock(&registry_lock);
}

const char *kiln_module_name_pc(uintptr_t pc, char *buf, size_t size) {
  kiln_module *found = NULL;
  pthread_mutex_lock(&registry_lock);
  for (size_t i = 0; i < registry_count && !found; i++)
    if (pc >= registry[i]->code_begin && pc < registry[i]->code_end)
      found = registry[i];
  if (found) kiln_module_retain(found);
  pthread_mutex_unlock(&registry_lock);
  if (!found) return NULL;
  const char *n = kiln_module_symbol(found, pc, buf, size);
  kiln_module_release(found);
  return n;
}

/* ---- Modules ------------------------------------------------------------------- */

static kiln_status check_features(const kiln_wasm_info *info) {
  const kiln_wasm_features *f = &info->features;
  const char *what = f->simd       ? "SIMD (v128)"
                     : f->threads  ? "threads (shared memory)"
                     : f->memory64 ? "memory64"
                     : f->exceptions ? "exception handling"
                                     : NULL;
  if (what)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "the module uses %s, which the wasm2c engine does "
                            "not support", what);
  return KILN_OK;
}

static kiln_status parse(kiln_engine *e, const uint8_t *bytes, size_t size,
                         kiln_wasm_info **out) {
  kiln_wasm_parse_options po = {.enable_multi_memory = e->multi_memory};
  KILN_RETURN_IF_ERROR(kiln_wasm_parse(bytes, size, &po, out));
  kiln_status s = check_features(*out);
  if (s) {
    kiln_wasm_info_free(*out);
    *out = NULL;
  }
  return s;
}

static void module_destroy(kiln_module *m) {
  kiln_module_registry_remove(m);
  kiln_code_range_remove(m->code_slot);
  /* The shared object stays loaded: compiled code may still be referenced
   * by funcrefs in other modules' tables, and dlclose buys little. */
  kiln_wasm_info_free(m->info);
  free(m->symbols);
  free(m->symbol_names);
  pthread_mutex_destroy(&m->sym_lock);
  if (m->engine) kiln_engine_release(m->engine);
  free(m->name);
  free(m);
}

kiln_status kiln_module_load(kiln_engine *e, const uint8_t *bytes, size_t size,
                             const char *name, kiln_module **out) {
  *out = NULL;
  kiln_module *m = calloc(1, sizeof *m);
  if (!m) return oom();
  atomic_init(&m->refs, 1);
  m->code_slot = -1;
  m->sp_global = -1;
  pthread_mutex_init(&m->sym_lock, NULL);
  m->name = strdup(name ? name : "module");
  engine_retain(e);
  m->engine = e;
  kiln_status s = m->name ? KILN_OK : oom();
  if (!s) s = parse(e, bytes, size, &m->info);
  if (!s) s = e->backend->prepare(e, m, bytes, size);
  if (!s) {
    m->sp_global = kiln_wasm_stack_pointer_global(m->info);
    if (m->sp_global >= 0) {
      uint32_t imported = 0;
      for (uint32_t i = 0; i < m->info->global_count; i++)
        imported += m->info->globals[i].imported;
      uint64_t k = (uint64_t)m->sp_global - imported;
      if (k < m->desc->global_count)
        m->sp_offset = m->desc->global_offsets[k];
      else
        m->sp_global = -1;
    }
    kiln_module_registry_add(m);
    *out = m;
    return KILN_OK;
  }
  module_destroy(m);
  return kiln_status_annotate(s, "%s", name ? name : "module");
}

kiln_status kiln_module_load_file(kiln_engine *e, const char *path,
                                  kiln_module **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_status_from_errno(errno, "%s", path);
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "%s: not a regular file", path);
  }
  /* A 32-bit module cannot usefully exceed 1 GiB of bytes. */
  if ((uint64_t)st.st_size > (1ull << 30)) {
    close(fd);
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                            "%s: %lld bytes is too large for a module", path,
                            (long long)st.st_size);
  }
  uint8_t *buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    close(fd);
    return oom();
  }
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  kiln_status s = kiln_module_load(e, buf, got, path, out);
  free(buf);
  return s;
}

kiln_status kiln_module_validate(kiln_engine *e, const uint8_t *bytes,
                                 size_t size, const char *name) {
  kiln_wasm_info *info = NULL;
  kiln_status s = parse(e, bytes, size, &info);
  kiln_wasm_info_free(info);
  return kiln_status_annotate(s, "%s", name ? name : "module");
}

void kiln_module_retain(kiln_module *m) { atomic_fetch_add(&m->refs, 1); }
void kiln_module_release(kiln_module *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) module_destroy(m);
}
const char *kiln_module_name(const kiln_module *m) { return m->name; }
size_t kiln_module_import_count(const kiln_module *m) {
  return m->info->import_count;
}
const kiln_import *kiln_module_import(const kiln_module *m, size_t i) {
  return i < m->info->import_count ? &m->info->imports[i] : NULL;
}
size_t kiln_module_export_count(const kiln_module *m) {
  return m->info->export_count;
}
const kiln_export *kiln_module_export(const kiln_module *m, size_t i) {
  return i < m->info->export_count ? &m->info->exports[i].desc : NULL;
}
size_t kiln_module_memory_count(const kiln_module *m) {
  size_t n = 0;
  for (uint32_t i = 0; i < m->info->memory_count; i++)
    n += !m->info->memories[i].imported;
  return n;
}
kiln_limits kiln_module_memory(const kiln_module *m, size_t i) {
  size_t n = 0;
  for (uint32_t k = 0; k < m->info->memory_count; k++) {
    if (m->info->memories[k].imported) continue;
    if (n++ == i) return m->info->memories[k].limits;
  }
  kiln_limits none = {0};
  return none;
}
bool kiln_module_was_cached(const kiln_module *m) { return m->cached; }
const char *kiln_module_cache_key(const kiln_module *m) { return m->key; }
const char *kiln_module_artifact_path(const kiln_module *m) {
  return m->artifact;
}
