/* Linkers, instances, calls. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine_internal.h"
#include "engine/trap.h"
#include "memory/memory_internal.h"

static kiln_status oom(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- Host globals and tables (reference counted) --------------------------- */

struct kiln_host_global {
  atomic_int refs;
  kiln_valtype type;
  bool is_mutable;
  _Alignas(16) union {
    uint32_t i32;
    uint64_t i64;
    float f32;
    double f64;
    void *ref;
    uint8_t bytes[24]; /* a wasm_rt_funcref_t */
  } value;
};

/* Both wasm2c table structs are {data, max_size, size}. */
typedef struct w2c_table {
  void *data;
  uint32_t max_size;
  uint32_t size;
} w2c_table;

struct kiln_host_table {
  atomic_int refs;
  kiln_valtype elem;
  w2c_table t;
};

void kiln_host_global_release(kiln_host_global *g) {
  if (g && atomic_fetch_sub(&g->refs, 1) == 1) free(g);
}

void kiln_host_table_release(kiln_host_table *t) {
  if (t && atomic_fetch_sub(&t->refs, 1) == 1) {
    kiln_w2c_runtime.free_table(&t->t);
    free(t);
  }
}

/* ---- Linker -------------------------------------------------------------------- */

typedef enum def_kind { DEF_FUNC, DEF_MEMORY, DEF_GLOBAL, DEF_TABLE, DEF_INSTANCE } def_kind;

typedef struct def {
  def_kind kind;
  char *module, *name; /* name NULL for DEF_INSTANCE */
  kiln_host_func func;
  kiln_valtype *types; /* owned copy of func.type's arrays */
  kiln_memory *memory;
  kiln_host_global *global;
  kiln_host_table *table;
  kiln_instance *instance;
  struct def *next;
} def;

struct kiln_linker {
  kiln_engine *engine;
  def *defs;
};

kiln_status kiln_linker_create(kiln_engine *e, kiln_linker **out) {
  kiln_linker *l = calloc(1, sizeof *l);
  if (!l) return oom();
  l->engine = e;
  *out = l;
  return KILN_OK;
}

static void def_free(def *d) {
  free(d->module);
  free(d->name);
  free(d->types);
  if (d->memory) kiln_memory_release(d->memory);
  kiln_host_global_release(d->global);
  kiln_host_table_release(d->table);
  if (d->instance) kiln_instance_release(d->instance);
  free(d);
}

void kiln_linker_release(kiln_linker *l) {
  if (!l) return;
  for (def *d = l->defs, *n; d; d = n) {
    n = d->next;
    def_free(d);
  }
  free(l);
}

static kiln_status add_def(kiln_linker *l, def_kind kind, const char *module,
                           const char *name, def **out) {
  def *d = calloc(1, sizeof *d);
  if (!d) return oom();
  d->kind = kind;
  d->module = strdup(module);
  d->name = name ? strdup(name) : NULL;
  if (!d->module || (name && !d->name)) {
    def_free(d);
    return oom();
  }
  /* Replace an earlier definition of the same name. */
  for (def **p = &l->defs; *p; p = &(*p)->next) {
    def *o = *p;
    if (o->kind != DEF_INSTANCE && kind != DEF_INSTANCE && name &&
        !strcmp(o->module, module) && !strcmp(o->name, name)) {
      *p = o->next;
      def_free(o);
      break;
    }
  }
  d->next = l->defs;
  l->defs = d;
  *out = d;
  return KILN_OK;
}

kiln_status kiln_linker_define_func(kiln_linker *l, const kiln_host_func *f) {
  if (!f->module || !f->name || (!f->native == !f->generic))
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "a host function needs a module, a name and "
                            "exactly one of native or generic");
  if (f->native && f->type.result_count > 1)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "host function '%s' '%s': native functions have "
                            "at most one result; use generic",
                            f->module, f->name);
  def *d;
  KILN_RETURN_IF_ERROR(add_def(l, DEF_FUNC, f->module, f->name, &d));
  d->func = *f;
  uint32_t n = f->type.param_count + f->type.result_count;
  d->types = calloc(n ? n : 1, sizeof *d->types);
  if (!d->types) return oom(); /* d stays defined with empty types: harmless */
  if (f->type.param_count) memcpy(d->types, f->type.params, f->type.param_count * sizeof *d->types);
  if (f->type.result_count) memcpy(d->types + f->type.param_count, f->type.results,
         f->type.result_count * sizeof *d->types);
  d->func.type.params = d->types;
  d->func.type.results = d->types + f->type.param_count;
  d->func.module = d->module;
  d->func.name = d->name;
  return KILN_OK;
}

kiln_status kiln_linker_define_memory(kiln_linker *l, const char *module,
                                      const char *name, kiln_memory *m) {
  def *d;
  KILN_RETURN_IF_ERROR(add_def(l, DEF_MEMORY, module, name, &d));
  kiln_memory_retain(m);
  d->memory = m;
  return KILN_OK;
}

kiln_status kiln_linker_define_global(kiln_linker *l, const char *module,
                                      const char *name, kiln_val value,
                                      bool is_mutable) {
  kiln_host_global *g = calloc(1, sizeof *g);
  if (!g) return oom();
  atomic_init(&g->refs, 1);
  g->type = value.type;
  g->is_mutable = is_mutable;
  switch (value.type) {
    case KILN_I32: g->value.i32 = value.of.i32; break;
    case KILN_I64: g->value.i64 = value.of.i64; break;
    case KILN_F32: g->value.f32 = value.of.f32; break;
    case KILN_F64: g->value.f64 = value.of.f64; break;
    default: g->value.ref = value.of.ref; break;
  }
  def *d;
  kiln_status s = add_def(l, DEF_GLOBAL, module, name, &d);
  if (s) {
    free(g);
    return s;
  }
  d->global = g;
  return KILN_OK;
}

kiln_status kiln_linker_define_table(kiln_linker *l, const char *module,
                                     const char *name, kiln_limits limits) {
  if (limits.min > 10000000)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "table too large");
  kiln_host_table *t = calloc(1, sizeof *t);
  if (!t) return oom();
  atomic_init(&t->refs, 1);
  t->elem = KILN_FUNCREF;
  t->t.data = calloc(limits.min ? limits.min : 1, 24);
  if (!t->t.data) {
    free(t);
    return oom();
  }
  t->t.size = (uint32_t)limits.min;
  t->t.max_size = limits.has_max ? (uint32_t)limits.max : UINT32_MAX;
  def *d;
  kiln_status s = add_def(l, DEF_TABLE, module, name, &d);
  if (s) {
    kiln_host_table_release(t);
    return s;
  }
  d->table = t;
  return KILN_OK;
}

kiln_status kiln_linker_define_instance(kiln_linker *l, const char *module,
                                        kiln_instance *inst) {
  /* A newer registration of the same module name shadows older ones. */
  for (def **p = &l->defs; *p; p = &(*p)->next) {
    if ((*p)->kind == DEF_INSTANCE && !strcmp((*p)->module, module)) {
      def *o = *p;
      *p = o->next;
      def_free(o);
      break;
    }
  }
  def *d;
  KILN_RETURN_IF_ERROR(add_def(l, DEF_INSTANCE, module, NULL, &d));
  kiln_instance_retain(inst);
  d->instance = inst;
  return KILN_OK;
}

/* ---- Import resolution ----------------------------------------------------------- */

static int64_t find_export(const kiln_instance *inst, const char *name) {
  const kiln_wasm_info *info = inst->module->info;
  for (uint32_t i = 0; i < info->export_count; i++)
    if (!strcmp(info->exports[i].desc.name, name)) return i;
  return -1;
}

static kiln_status link_error(const kiln_import *im, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static kiln_status link_error(const kiln_import *im, const char *fmt, ...) {
  char why[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  return kiln_make_status(KILN_CODE_LINK, "import '%s' '%s' (%s): %s",
                          im->module, im->name,
                          kiln_extern_kind_name(im->type.kind), why);
}

/* What an import is offered, from a host definition or another instance's
 * export: its type, and for a memory or table its current size and
 * maximum (in pages or elements). */
typedef struct import_offer {
  kiln_externtype type;
  uint64_t size, max;
  bool has_max;
} import_offer;

static kiln_status check_limits(const kiln_import *im, const import_offer *o) {
  const kiln_limits *want = im->type.kind == KILN_EXTERN_MEMORY
                                ? &im->type.of.memory
                                : &im->type.of.table.limits;
  if (o->size < want->min)
    return link_error(im, "incompatible import type: size %llu is below the "
                          "required minimum %llu",
                      (unsigned long long)o->size,
                      (unsigned long long)want->min);
  if (want->has_max && (!o->has_max || o->max > want->max))
    return link_error(im, "incompatible import type: maximum is larger than "
                          "the required %llu", (unsigned long long)want->max);
  return KILN_OK;
}

/* Whether the offer fits the import, as the spec's import matching says;
 * the same checks whatever the offer comes from. */
static kiln_status check_offer(const kiln_import *im, const import_offer *o) {
  if (o->type.kind != im->type.kind)
    return link_error(im, "incompatible import type: it is a %s",
                      kiln_extern_kind_name(o->type.kind));
  switch (im->type.kind) {
    case KILN_EXTERN_FUNC:
      if (!kiln_functype_equal(&im->type.of.func, &o->type.of.func)) {
        char a[256], b[256];
        return link_error(im, "incompatible import type: expected %s, got %s",
                          kiln_functype_format(&im->type.of.func, a, sizeof a),
                          kiln_functype_format(&o->type.of.func, b, sizeof b));
      }
      return KILN_OK;
    case KILN_EXTERN_MEMORY:
      return check_limits(im, o);
    case KILN_EXTERN_TABLE:
      if (o->type.of.table.elem != im->type.of.table.elem)
        return link_error(im, "incompatible import type: element type");
      return check_limits(im, o);
    case KILN_EXTERN_GLOBAL:
      if (o->type.of.global.type != im->type.of.global.type ||
          o->type.of.global.is_mutable != im->type.of.global.is_mutable)
        return link_error(im, "incompatible import type: global type or "
                              "mutability differs");
      return KILN_OK;
    default:
      return link_error(im, "unsupported import kind");
  }
}

static kiln_status grow_array(void **arr, uint32_t *count, size_t elem) {
  void *p = realloc(*arr, (*count + 1) * elem);
  if (!p) return oom();
  *arr = p;
  (*count)++;
  return KILN_OK;
}

static void generic_adapter(void *env, const kiln_w2c_val *args,
                            kiln_w2c_val *results) {
  kiln_caller *c = env;
  for (uint32_t i = 0; i < c->func.type.result_count; i++)
    results[i].type = (int)c->func.type.results[i];
  kiln_status s = c->func.generic(c, (const kiln_val *)args, (kiln_val *)results);
  if (s) kiln_trap_raise_status(s);
}

static kiln_status resolve_from_instance(kiln_instance *inst, uint32_t i,
                                         kiln_instance *src) {
  const kiln_import *im = &inst->module->info->imports[i];
  int64_t e = find_export(src, im->name);
  if (e < 0) return link_error(im, "unknown import: '%s' exports no '%s'",
                               im->module, im->name);
  const kiln_w2c_export *we = &src->module->desc->exports[e];
  import_offer o = {.type = src->module->info->exports[e].desc.type};
  /* Memories, tables and globals: what the instance holds. */
  void *env = o.type.kind != KILN_EXTERN_FUNC && we->get ? we->get(src->w2c)
                                                         : NULL;
  if (o.type.kind == KILN_EXTERN_MEMORY) {
    const kiln_memory_view *v = env;
    o.size = v->pages;
    o.max = v->max_pages;
    o.has_max = v->max_pages != 0;
  } else if (o.type.kind == KILN_EXTERN_TABLE) {
    const w2c_table *t = env;
    o.size = t->size;
    o.max = t->max_size;
    o.has_max = t->max_size != UINT32_MAX;
  }
  KILN_RETURN_IF_ERROR(check_offer(im, &o));
  kiln_w2c_slot *slot = &inst->frame->slots[i];
  if (o.type.kind == KILN_EXTERN_FUNC) {
    slot->fn = we->fn;
    slot->env = src->w2c;
  } else {
    slot->env = env;
  }
  /* Keep the exporter alive as long as we point into it. */
  for (uint32_t k = 0; k < inst->dep_count; k++)
    if (inst->deps[k] == src) return KILN_OK;
  KILN_RETURN_IF_ERROR(grow_array((void **)&inst->deps, &inst->dep_count,
                                  sizeof *inst->deps));
  kiln_instance_retain(src);
  inst->deps[inst->dep_count - 1] = src;
  return KILN_OK;
}

/* What a host definition offers. */
static import_offer host_offer(const def *d) {
  import_offer o = {.type.kind = KILN_EXTERN_TAG}; /* fits nothing */
  switch (d->kind) {
    case DEF_FUNC:
      o.type.kind = KILN_EXTERN_FUNC;
      o.type.of.func = d->func.type;
      break;
    case DEF_MEMORY:
      o.type.kind = KILN_EXTERN_MEMORY;
      o.size = kiln_memory_pages(d->memory);
      o.max = kiln_memory_max_pages(d->memory);
      o.has_max = true;
      break;
    case DEF_GLOBAL:
      o.type.kind = KILN_EXTERN_GLOBAL;
      o.type.of.global.type = d->global->type;
      o.type.of.global.is_mutable = d->global->is_mutable;
      break;
    case DEF_TABLE:
      o.type.kind = KILN_EXTERN_TABLE;
      o.type.of.table.elem = d->table->elem;
      o.size = d->table->t.size;
      o.max = d->table->t.max_size;
      o.has_max = d->table->t.max_size != UINT32_MAX;
      break;
    case DEF_INSTANCE:
      break;
  }
  return o;
}

static kiln_status resolve(kiln_instance *inst, kiln_linker *l, uint32_t i) {
  const kiln_import *im = &inst->module->info->imports[i];
  def *found = NULL;
  for (def *d = l ? l->defs : NULL; d && !found; d = d->next) {
    if (strcmp(d->module, im->module)) continue;
    if (d->kind == DEF_INSTANCE) {
      if (find_export(d->instance, im->name) >= 0) found = d;
    } else if (!strcmp(d->name, im->name)) {
      found = d;
    }
  }
  if (!found) return link_error(im, "unknown import: nothing by that name");
  if (found->kind == DEF_INSTANCE)
    return resolve_from_instance(inst, i, found->instance);

  import_offer o = host_offer(found);
  KILN_RETURN_IF_ERROR(check_offer(im, &o));
  kiln_w2c_slot *slot = &inst->frame->slots[i];
  switch (found->kind) {
    case DEF_FUNC: {
      kiln_caller *c = &inst->callers[i];
      c->instance = inst;
      c->func = found->func;
      slot->env = c;
      if (found->func.native)
        slot->fn = found->func.native;
      else
        slot->generic = generic_adapter;
      return KILN_OK;
    }
    case DEF_MEMORY:
      slot->env = kiln_memory_view_of(found->memory);
      return KILN_OK;
    case DEF_GLOBAL: {
      kiln_host_global *g = found->global;
      KILN_RETURN_IF_ERROR(grow_array((void **)&inst->globals,
                                      &inst->global_ref_count,
                                      sizeof *inst->globals));
      atomic_fetch_add(&g->refs, 1);
      inst->globals[inst->global_ref_count - 1] = g;
      slot->env = &g->value;
      return KILN_OK;
    }
    case DEF_TABLE: {
      kiln_host_table *t = found->table;
      KILN_RETURN_IF_ERROR(grow_array((void **)&inst->tables,
                                      &inst->table_ref_count,
                                      sizeof *inst->tables));
      atomic_fetch_add(&t->refs, 1);
      inst->tables[inst->table_ref_count - 1] = t;
      slot->env = &t->t;
      return KILN_OK;
    }
    case DEF_INSTANCE:
      break;
  }
  return link_error(im, "unsupported import kind");
}

/* ---- Shared-memory regions (sdk/LINKING.md) -------------------------------------- */

/* The static data and shadow stack a module places in its memory 0:
 * [lowest active data segment, max(end of data, initial stack pointer)). */
static bool module_region(const kiln_module *m, uint64_t *begin,
                          uint64_t *end) {
  const kiln_wasm_info *info = m->info;
  uint64_t lo = UINT64_MAX, hi = 0;
  for (uint32_t i = 0; i < info->data_count; i++) {
    const kiln_wasm_data_segment *d = &info->data[i];
    if (!d->active || d->memory != 0 || d->offset.kind != KILN_CONST_I32 ||
        d->size == 0)
      continue;
    uint64_t b = d->offset.value.i32;
    if (b < lo) lo = b;
    if (b + d->size > hi) hi = b + d->size;
  }
  if (m->sp_global >= 0) {
    const kiln_wasm_global *g = &info->globals[m->sp_global];
    if (g->init.kind == KILN_CONST_I32) {
      uint64_t sp = g->init.value.i32;
      if (lo == UINT64_MAX) lo = sp > 65536 ? sp - 65536 : 0;
      if (sp > hi) hi = sp;
    }
  }
  if (lo == UINT64_MAX || hi <= lo) return false;
  *begin = lo;
  *end = hi;
  return true;
}

/* ---- Instances ---------------------------------------------------------------------- */

static void instance_destroy(kiln_instance *inst) {
  if (inst->instantiated) inst->module->desc->free(inst->w2c);
  if (inst->claim_memory) {
    kiln_memory_unclaim(inst->claim_memory, inst->claim_id);
    kiln_memory_release(inst->claim_memory);
  }
  if (inst->memories) {
    for (uint32_t i = 0; i < inst->module->info->memory_count; i++)
      if (inst->memories[i]) kiln_memory_release(inst->memories[i]);
  }
  for (uint32_t i = 0; i < inst->dep_count; i++)
    kiln_instance_release(inst->deps[i]);
  for (uint32_t i = 0; i < inst->global_ref_count; i++)
    kiln_host_global_release(inst->globals[i]);
  for (uint32_t i = 0; i < inst->table_ref_count; i++)
    kiln_host_table_release(inst->tables[i]);
  free(inst->deps);
  free(inst->globals);
  free(inst->tables);
  free(inst->memories);
  free(inst->callers);
  free(inst->frame);
  free(inst->w2c);
  kiln_module_release(inst->module);
  free(inst);
}

/* Runs fn(arg) inside a trap scope on this thread. */
typedef void (*scoped_fn)(void *arg);
static kiln_status run_scoped(scoped_fn fn, void *arg) {
  kiln_status s = KILN_OK;
  kiln_thread_state *ts = kiln_thread_prepare(&s);
  if (!ts) return s;
  KILN_RETURN_IF_ERROR(kiln_deadline_enter(ts));
  kiln_trap_scope sc;
  kiln_trap_scope_push(ts, &sc);
  if (_setjmp(sc.jb) == 0) {
    fn(arg);
    kiln_trap_scope_pop(ts, &sc);
  } else {
    s = kiln_trap_take_status(ts, &sc, kiln_module_name_pc);
  }
  kiln_deadline_leave(ts);
  return s;
}

typedef struct instantiate_args {
  kiln_instance *inst;
} instantiate_args;

static void do_instantiate(void *arg) {
  kiln_instance *inst = arg;
  kiln_instantiating = inst;
  inst->module->desc->instantiate(inst->w2c, inst->frame);
  kiln_instantiating = NULL;
}

kiln_status kiln_instance_create(kiln_module *m, kiln_linker *l,
                                 const kiln_instance_options *opts,
                                 kiln_instance **out) {
  *out = NULL;
  const kiln_wasm_info *info = m->info;
  kiln_instance *inst = calloc(1, sizeof *inst);
  if (!inst) return oom();
  atomic_init(&inst->refs, 1);
  kiln_module_retain(m);
  inst->module = m;
  if (opts) inst->opts = *opts;
  size_t isz = m->desc->instance_size;
  inst->w2c = aligned_alloc(64, (isz + 63) / 64 * 64);
  inst->frame = calloc(1, sizeof(kiln_w2c_frame) + (info->import_count ? info->import_count : 1) *
                       sizeof(kiln_w2c_slot));
  if (inst->frame) inst->frame->self = inst->frame;
  inst->callers = calloc(info->import_count ? info->import_count : 1,
                         sizeof *inst->callers);
  inst->memories = calloc(info->memory_count ? info->memory_count : 1,
                          sizeof *inst->memories);
  kiln_status s = KILN_OK;
  if (!inst->w2c || !inst->frame || !inst->callers || !inst->memories) {
    s = oom();
    goto fail;
  }
  memset(inst->w2c, 0, isz);
  for (uint32_t i = 0; i < info->import_count && !s; i++)
    s = resolve(inst, l, i);
  if (s) goto fail;

  /* Modules sharing an imported memory 0 must keep their static data and
   * stacks apart. */
  if (info->memory_count && info->memories[0].imported &&
      !inst->opts.allow_region_overlap) {
    uint64_t b, e;
    for (uint32_t i = 0; i < info->import_count; i++) {
      if (info->imports[i].type.kind != KILN_EXTERN_MEMORY) continue;
      kiln_memory_view *v = inst->frame->slots[i].env;
      if (v && v->owner && module_region(m, &b, &e)) {
        s = kiln_memory_claim(v->owner, b, e, m->name, &inst->claim_id);
        if (s) goto fail;
        inst->claim_memory = v->owner;
        kiln_memory_retain(v->owner);
      }
      break; /* memory 0 is the first memory import */
    }
  }

  s = run_scoped(do_instantiate, inst);
  inst->instantiated = true; /* free() copes with partial instantiation */
  if (s) goto fail;

  /* Memories by index: imports first, then the module's own. */
  uint32_t mi = 0, defined = 0;
  for (uint32_t i = 0; i < info->import_count; i++) {
    if (info->imports[i].type.kind != KILN_EXTERN_MEMORY) continue;
    kiln_memory_view *v = inst->frame->slots[i].env;
    inst->memories[mi] = v->owner;
    kiln_memory_retain(v->owner);
    mi++;
  }
  for (; mi < info->memory_count; mi++, defined++) {
    kiln_memory_view *v =
        (kiln_memory_view *)((char *)inst->w2c +
                             m->desc->memory_offsets[defined]);
    inst->memories[mi] = v->owner;
    if (v->owner) kiln_memory_retain(v->owner);
  }
  *out = inst;
  return KILN_OK;
fail:
  instance_destroy(inst);
  return kiln_status_annotate(s, "instantiating %s", m->name);
}

void kiln_instance_retain(kiln_instance *i) { atomic_fetch_add(&i->refs, 1); }
void kiln_instance_release(kiln_instance *i) {
  if (i && atomic_fetch_sub(&i->refs, 1) == 1) instance_destroy(i);
}
kiln_module *kiln_instance_module(const kiln_instance *i) { return i->module; }

/* ---- Calls ------------------------------------------------------------------------- */

kiln_status kiln_instance_func(kiln_instance *i, const char *name,
                               kiln_func_ref *out) {
  int64_t e = find_export(i, name);
  if (e < 0 || i->module->info->exports[e].desc.type.kind != KILN_EXTERN_FUNC)
    return kiln_make_status(KILN_CODE_NOT_FOUND,
                            "%s: no exported function '%s'", i->module->name,
                            name);
  out->instance = i;
  out->export_index = (uint32_t)e;
  return KILN_OK;
}

const kiln_functype *kiln_func_type(kiln_func_ref f) {
  return &f.instance->module->info->exports[f.export_index].desc.type.of.func;
}

typedef struct call_args {
  kiln_w2c_invoke_fn invoke;
  void *w2c;
  const kiln_val *args;
  kiln_val *results;
} call_args;

static void do_call(void *arg) {
  call_args *c = arg;
  c->invoke(c->w2c, (const kiln_w2c_val *)c->args, (kiln_w2c_val *)c->results);
}

kiln_status kiln_func_call(kiln_func_ref f, const kiln_val *args, size_t nargs,
                           kiln_val *results, size_t nresults) {
  kiln_instance *inst = f.instance;
  const kiln_functype *t = kiln_func_type(f);
  const char *name = inst->module->info->exports[f.export_index].desc.name;
  if (nargs != t->param_count || nresults != t->result_count) {
    char buf[256];
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "'%s' has type %s: got %zu arguments and %zu "
                            "result slots", name,
                            kiln_functype_format(t, buf, sizeof buf), nargs,
                            nresults);
  }
  for (size_t k = 0; k < nargs; k++)
    if (args[k].type != t->params[k])
      return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                              "'%s': argument %zu is %s, expected %s", name, k,
                              kiln_valtype_name(args[k].type),
                              kiln_valtype_name(t->params[k]));
  kiln_module *m = inst->module;
  uint32_t *sp = m->sp_global >= 0
                     ? (uint32_t *)((char *)inst->w2c + m->sp_offset)
                     : NULL;
  uint32_t saved_sp = sp ? *sp : 0;
  call_args c = {m->desc->exports[f.export_index].invoke, inst->w2c, args,
                 results};
  kiln_status s = run_scoped(do_call, &c);
  /* A trap leaves the shadow stack pointer lowered; put it back so the
   * instance stays usable (the spec keeps globals as they were, but
   * __stack_pointer is the toolchain's, not the program's). */
  if (s && sp && kiln_status_code(s) != KILN_CODE_EXIT) *sp = saved_sp;
  return s;
}

kiln_status kiln_instance_call(kiln_instance *i, const char *name,
                               const kiln_val *args, size_t nargs,
                               kiln_val *results, size_t nresults) {
  kiln_func_ref f;
  KILN_RETURN_IF_ERROR(kiln_instance_func(i, name, &f));
  return kiln_func_call(f, args, nargs, results, nresults);
}

kiln_status kiln_instance_native(kiln_instance *i, const char *name,
                                 void **out_fn, void **out_env) {
  kiln_func_ref f;
  KILN_RETURN_IF_ERROR(kiln_instance_func(i, name, &f));
  *out_fn = i->module->desc->exports[f.export_index].fn;
  *out_env = i->w2c;
  return KILN_OK;
}

kiln_status kiln_instance_imported_global(kiln_instance *i, const char *module,
                                          const char *name, void **out_value) {
  const kiln_wasm_info *info = i->module->info;
  for (uint32_t k = 0; k < info->import_count; k++) {
    const kiln_import *im = &info->imports[k];
    if (im->type.kind == KILN_EXTERN_GLOBAL && !strcmp(im->module, module) &&
        !strcmp(im->name, name)) {
      *out_value = i->frame->slots[k].env;
      return KILN_OK;
    }
  }
  return kiln_make_status(KILN_CODE_NOT_FOUND,
                          "%s: imports no global '%s' '%s'", i->module->name,
                          module, name);
}

typedef struct run_args {
  kiln_run_fn fn;
  void *user;
} run_args;

static void do_run(void *arg) {
  run_args *r = arg;
  r->fn(r->user);
}

kiln_status kiln_instance_run(kiln_instance *i, kiln_run_fn fn, void *user) {
  (void)i;
  run_args r = {fn, user};
  return run_scoped(do_run, &r);
}

/* ---- Host-function callers ----------------------------------------------------------- */

kiln_instance *kiln_caller_instance(kiln_caller *c) { return c->instance; }
void *kiln_caller_user(kiln_caller *c) { return c->func.user; }
kiln_memory *kiln_caller_memory(kiln_caller *c, uint32_t index) {
  return kiln_instance_memory(c->instance, index);
}
void kiln_caller_trap(kiln_caller *c, kiln_status status) {
  (void)c;
  kiln_trap_raise_status(status);
}
bool kiln_caller_deadline_passed(const kiln_caller *c) {
  (void)c; /* a host function runs on the thread of the guest call */
  const kiln_thread_state *ts = kiln_thread_current();
  return ts->deadline_ns && kiln_now_ns() >= ts->deadline_ns;
}

/* ---- Memories and globals ------------------------------------------------------------ */

kiln_memory *kiln_instance_memory(kiln_instance *i, uint32_t index) {
  if (index >= i->module->info->memory_count) return NULL;
  return i->memories[index];
}

kiln_memory *kiln_instance_memory_export(kiln_instance *i, const char *name) {
  int64_t e = find_export(i, name);
  if (e < 0 || i->module->info->exports[e].desc.type.kind != KILN_EXTERN_MEMORY)
    return NULL;
  kiln_memory_view *v = i->module->desc->exports[e].get(i->w2c);
  return v ? v->owner : NULL;
}

static kiln_status global_ptr(kiln_instance *i, const char *name, void **p,
                              kiln_valtype *type, bool *mut) {
  int64_t e = find_export(i, name);
  if (e < 0 || i->module->info->exports[e].desc.type.kind != KILN_EXTERN_GLOBAL)
    return kiln_make_status(KILN_CODE_NOT_FOUND, "%s: no exported global '%s'",
                            i->module->name, name);
  *p = i->module->desc->exports[e].get(i->w2c);
  *type = i->module->info->exports[e].desc.type.of.global.type;
  *mut = i->module->info->exports[e].desc.type.of.global.is_mutable;
  return KILN_OK;
}

kiln_status kiln_instance_global_get(kiln_instance *i, const char *name,
                                     kiln_val *out) {
  void *p;
  bool mut;
  KILN_RETURN_IF_ERROR(global_ptr(i, name, &p, &out->type, &mut));
  switch (out->type) {
    case KILN_I32: memcpy(&out->of.i32, p, 4); break;
    case KILN_I64: memcpy(&out->of.i64, p, 8); break;
    case KILN_F32: memcpy(&out->of.f32, p, 4); break;
    case KILN_F64: memcpy(&out->of.f64, p, 8); break;
    case KILN_FUNCREF: {
      /* wasm_rt_funcref_t: {u32 type; fn; instance}: expose fn. */
      struct { uint32_t t; void *fn; void *inst; } r;
      memcpy(&r, p, sizeof r);
      out->of.ref = r.fn;
      break;
    }
    default: memcpy(&out->of.ref, p, sizeof(void *)); break;
  }
  return KILN_OK;
}

kiln_status kiln_instance_global_set(kiln_instance *i, const char *name,
                                     kiln_val v) {
  void *p;
  kiln_valtype t;
  bool mut;
  KILN_RETURN_IF_ERROR(global_ptr(i, name, &p, &t, &mut));
  if (!mut)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "global '%s' is immutable", name);
  if (t != v.type)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "global '%s' is %s, not %s", name,
                            kiln_valtype_name(t), kiln_valtype_name(v.type));
  switch (t) {
    case KILN_I32: memcpy(p, &v.of.i32, 4); break;
    case KILN_I64: memcpy(p, &v.of.i64, 8); break;
    case KILN_F32: memcpy(p, &v.of.f32, 4); break;
    case KILN_F64: memcpy(p, &v.of.f64, 8); break;
    case KILN_EXTERNREF: memcpy(p, &v.of.ref, sizeof(void *)); break;
    default:
      return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                              "setting %s globals from the host",
                              kiln_valtype_name(t));
  }
  return KILN_OK;
}
