/* Worker pool, kernel executables and command buffers (kiln/dispatch.h).
 *
 * How a pool runs work. At most one command buffer executes at a time;
 * others wait in a FIFO. Whoever finds the pool idle (the submitting
 * thread) or finishes the previous step (a worker) "advances" the running
 * buffer: it executes copies, fills and GPU ops itself, and for a dispatch
 * publishes a job and wakes the workers. A job is fork-join: every worker
 * takes part in every job, claims workgroups with one atomic fetch-add
 * each, and on running out increments `left`; the worker that brings
 * `left` to the worker count has seen every other worker leave, so the job
 * slot is free, and it advances the buffer. No lock and no allocation
 * between a submit and its fence except the FIFO's mutex, taken once per
 * command buffer.
 *
 * Per-worker instance state: an executable is instantiated once per worker
 * over the same compiled module (one shared object) and the same memory.
 * Kernel modules are position independent (sdk/LINKING.md): each instance
 * imports env.__memory_base (the executable's data region, the same for
 * all workers) and env.__stack_pointer (the worker's own stack region). A
 * worker uses one stack for every executable, since it runs one kernel at
 * a time. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/reserve.h"
#include "dispatch/wait.h"
#include "kiln/dispatch.h"
#include "dispatch/dispatch_internal.h"

static kiln_status oom(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
}

typedef void (*kernel_fn)(void *env, uint32_t args, uint32_t gx, uint32_t gy,
                          uint32_t gz);

/* ---- Structures ------------------------------------------------------------ */

typedef struct worker {
  kiln_pool *pool;
  int index;
  pthread_t thread;
  bool started;
  uint64_t stack_offset;
  uint32_t stack_top;
  uint32_t current; /* workgroup index being run, for trap reports */
} worker;

/* One worker's view of an executable. */
typedef struct xworker {
  kiln_instance *inst;
  void *env;
  uint32_t *sp; /* imported __stack_pointer, NULL if the module has none */
  kernel_fn *fns; /* per kernel */
} xworker;

struct kiln_executable {
  atomic_int refs;
  kiln_pool *pool;
  kiln_engine *engine;
  kiln_module *module;
  char *name;
  uint32_t kernel_count;
  char **kernel_names;
  uint64_t data_offset, data_size; /* data_size 0: no region */
  uint64_t claim_id;
  xworker *w; /* [pool->nworkers] */
};

typedef enum cmd_kind {
  CMD_DISPATCH,
  CMD_COPY,
  CMD_FILL,
  CMD_GPU,
  CMD_BARRIER
} cmd_kind;

typedef struct cmd {
  cmd_kind kind;
  union {
    struct {
      kiln_executable *x;
      uint32_t kernel;
      uint32_t groups[3];
      uint32_t total;
      uint32_t args; /* offset of the kiln_kernel_args block */
    } d;
    struct {
      uint64_t dst, src, size;
      uint32_t pattern;
    } c;
    kiln_op op;
  } u;
} cmd;

enum { CB_IDLE = 0, CB_PENDING = 1, CB_DONE = 2 };

struct kiln_fence {
  kiln_cmdbuf *cb;
};

struct kiln_cmdbuf {
  kiln_pool *pool;
  cmd *cmds;
  size_t n, cap;
  uint64_t *blocks; /* argument blocks allocated in the device memory */
  size_t nblocks, capblocks;
  /* Execution (owned by whoever advances the buffer). */
  size_t pc;
  bool gpu_pending;
  kiln_status status; /* owned by the buffer */
  bool status_given;  /* the original went to a waiter; this is a copy */
  _Atomic uint32_t state;
  kiln_fence fence;
  kiln_cmdbuf *next; /* in the pool's FIFO */
};

struct kiln_pool {
  atomic_int refs;
  kiln_dmem *dmem;
  kiln_memory *memory;
  kiln_device *device;
  pthread_mutex_t device_lock; /* kiln_device is one stream */
  int nworkers;
  worker *workers;
  uint32_t stack_bytes;

  /* The job (one dispatch) all workers run; written only while no worker
   * is inside it. gen publishes a new job (release) to waiting workers. */
  _Atomic uint32_t gen;
  atomic_bool shutdown;
  struct {
    kiln_cmdbuf *cb;
    size_t cmd_index;
    kiln_executable *x;
    uint32_t kernel;
    uint32_t groups[3];
    uint32_t total;
    uint32_t args;
    _Atomic uint32_t next; /* next workgroup to hand out */
    _Atomic uint32_t left; /* workers done with this job */
    atomic_bool stop;      /* a workgroup trapped: hand out no more */
    _Atomic(kiln_status) failure;
  } job;

  pthread_mutex_t qlock;
  pthread_cond_t idle_cv;
  bool busy; /* a command buffer is executing */
  kiln_cmdbuf *qhead, *qtail;
};

/* ---- Running jobs (the per-workgroup path) ---------------------------------- */

typedef struct batch {
  kiln_pool *p;
  worker *w;
  xworker *xw;
  kernel_fn fn;
} batch;

static void run_batch(void *u) {
  batch *b = u;
  kiln_pool *p = b->p;
  const uint32_t total = p->job.total, gx = p->job.groups[0],
                 gy = p->job.groups[1], args = p->job.args;
  void *env = b->xw->env;
  kernel_fn fn = b->fn;
  for (;;) {
    if (atomic_load_explicit(&p->job.stop, memory_order_relaxed)) return;
    uint32_t i = atomic_fetch_add_explicit(&p->job.next, 1,
                                           memory_order_relaxed);
    if (i >= total) return;
    b->w->current = i;
    uint32_t r = i / gx;
    fn(env, args, i - r * gx, r % gy, r / gy);
  }
}

static void run_job(kiln_pool *p, worker *w) {
  if (atomic_load_explicit(&p->job.next, memory_order_relaxed) >=
      p->job.total)
    return; /* nothing left for us: skip the trap scope */
  kiln_executable *x = p->job.x;
  xworker *xw = &x->w[w->index];
  batch b = {p, w, xw, xw->fns[p->job.kernel]};
  kiln_status s = kiln_instance_run(xw->inst, run_batch, &b);
  if (!s) return;
  /* The trap left this worker's stack pointer lowered: put it back. */
  if (xw->sp) *xw->sp = w->stack_top;
  atomic_store(&p->job.stop, true);
  uint32_t i = w->current, gx = p->job.groups[0], gy = p->job.groups[1];
  s = kiln_status_annotate(
      s, "kernel '%s' of %s, workgroup (%u, %u, %u) of (%u, %u, %u)",
      x->kernel_names[p->job.kernel], x->name, i % gx, (i / gx) % gy,
      i / gx / gy, gx, gy, p->job.groups[2]);
  kiln_status none = KILN_OK;
  if (!atomic_compare_exchange_strong(&p->job.failure, &none, s))
    kiln_status_free(s); /* another workgroup failed first */
}

static void advance(kiln_pool *p, kiln_cmdbuf *cb);

static void *worker_main(void *arg) {
  worker *w = arg;
  kiln_pool *p = w->pool;
  uint32_t seen = 0;
  for (;;) {
    seen = kiln_wait_change(&p->gen, seen);
    if (atomic_load(&p->shutdown)) break;
    run_job(p, w);
    if (atomic_fetch_add_explicit(&p->job.left, 1, memory_order_acq_rel) +
            1 ==
        (uint32_t)p->nworkers) {
      /* Last one out: every worker has left the job. */
      kiln_cmdbuf *cb = p->job.cb;
      kiln_status f = atomic_exchange(&p->job.failure, KILN_OK);
      if (f && !cb->status)
        cb->status = kiln_status_annotate(f, "command %zu (dispatch)",
                                          p->job.cmd_index);
      else
        kiln_status_free(f);
      advance(p, cb);
    }
  }
  return NULL;
}

static void post_job(kiln_pool *p, kiln_cmdbuf *cb, size_t index,
                     const cmd *c) {
  p->job.cb = cb;
  p->job.cmd_index = index;
  p->job.x = c->u.d.x;
  p->job.kernel = c->u.d.kernel;
  memcpy(p->job.groups, c->u.d.groups, sizeof p->job.groups);
  p->job.total = c->u.d.total;
  p->job.args = c->u.d.args;
  atomic_store_explicit(&p->job.next, 0, memory_order_relaxed);
  atomic_store_explicit(&p->job.left, 0, memory_order_relaxed);
  atomic_store_explicit(&p->job.stop, false, memory_order_relaxed);
  atomic_fetch_add_explicit(&p->gen, 1, memory_order_release);
  kiln_wake_all(&p->gen);
}

/* ---- Advancing command buffers ------------------------------------------------ */

static kiln_status device_sync(kiln_pool *p) {
  pthread_mutex_lock(&p->device_lock);
  kiln_status s = kiln_device_sync(p->device, NULL);
  pthread_mutex_unlock(&p->device_lock);
  return s;
}

static void fail(kiln_cmdbuf *cb, size_t index, const char *what,
                 kiln_status s) {
  if (!s) return;
  if (cb->status) {
    kiln_status_free(s);
    return;
  }
  cb->status = kiln_status_annotate(s, "command %zu (%s)", index, what);
}

/* Marks cb done and returns the next queued buffer (or NULL: pool idle). */
static kiln_cmdbuf *finish(kiln_pool *p, kiln_cmdbuf *cb) {
  pthread_mutex_lock(&p->qlock);
  kiln_cmdbuf *next = p->qhead;
  if (next) {
    p->qhead = next->next;
    if (!p->qhead) p->qtail = NULL;
  } else {
    p->busy = false;
    pthread_cond_broadcast(&p->idle_cv);
  }
  pthread_mutex_unlock(&p->qlock);
  /* After this store the owner may free cb: touch nothing of it after. */
  atomic_store_explicit(&cb->state, CB_DONE, memory_order_release);
  kiln_wake_all(&cb->state);
  return next;
}

static void advance(kiln_pool *p, kiln_cmdbuf *cb) {
  for (;;) {
    while (!cb->status && cb->pc < cb->n) {
      size_t index = cb->pc++;
      cmd *c = &cb->cmds[index];
      if (c->kind != CMD_GPU && cb->gpu_pending) {
        cb->gpu_pending = false;
        fail(cb, index, "waiting for GPU ops", device_sync(p));
        if (cb->status) break;
      }
      switch (c->kind) {
        case CMD_DISPATCH:
          post_job(p, cb, index, c);
          return; /* the last worker out continues */
        case CMD_COPY: {
          uint8_t *base = kiln_memory_base(p->memory);
          memmove(base + c->u.c.dst, base + c->u.c.src, c->u.c.size);
          break;
        }
        case CMD_FILL: {
          uint32_t *d = (uint32_t *)(void *)(kiln_memory_base(p->memory) +
                                             c->u.c.dst);
          for (uint64_t k = 0; k < c->u.c.size / 4; k++) d[k] = c->u.c.pattern;
          break;
        }
        case CMD_GPU:
          pthread_mutex_lock(&p->device_lock);
          fail(cb, index, kiln_op_kind_name(c->u.op.kind),
               kiln_device_submit(p->device, &c->u.op, NULL));
          pthread_mutex_unlock(&p->device_lock);
          cb->gpu_pending = true;
          break;
        case CMD_BARRIER:
          break; /* the device was synchronised above */
      }
    }
    if (cb->gpu_pending) {
      cb->gpu_pending = false;
      fail(cb, cb->n, "waiting for GPU ops", device_sync(p));
    }
    cb = finish(p, cb);
    if (!cb) return;
  }
}

/* ---- Pool ----------------------------------------------------------------------- */

static void pool_destroy(kiln_pool *p) {
  atomic_store(&p->shutdown, true);
  atomic_fetch_add(&p->gen, 1);
  kiln_wake_all(&p->gen);
  for (int i = 0; i < p->nworkers; i++) {
    worker *w = &p->workers[i];
    if (w->started) pthread_join(w->thread, NULL);
    if (w->stack_offset) kiln_status_free(kiln_dmem_free(p->dmem, w->stack_offset));
  }
  free(p->workers);
  if (p->device) {
    kiln_device_detach(p->device, p->memory);
    kiln_device_release(p->device);
  }
  pthread_mutex_destroy(&p->device_lock);
  pthread_mutex_destroy(&p->qlock);
  pthread_cond_destroy(&p->idle_cv);
  kiln_dmem_release(p->dmem);
  free(p);
}

static void pool_retain(kiln_pool *p) { atomic_fetch_add(&p->refs, 1); }
static void pool_unref(kiln_pool *p) {
  if (atomic_fetch_sub(&p->refs, 1) == 1) pool_destroy(p);
}

kiln_status kiln_pool_create(kiln_dmem *d, const kiln_pool_options *o,
                             kiln_pool **out) {
  *out = NULL;
  kiln_pool_options def = {0};
  if (!o) o = &def;
  int n = o->threads > 0 ? o->threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  if (n > 1024)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "pool: %d threads is more than 1024", n);
  uint32_t stack = o->stack_bytes ? o->stack_bytes : 256u << 10;
  if (stack < 4096 || stack % 16)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "pool: stack_bytes %u must be a multiple of 16 "
                            "and at least 4096", stack);
  kiln_pool *p = calloc(1, sizeof *p);
  if (!p) return oom();
  atomic_init(&p->refs, 1);
  kiln_dmem_retain(d);
  p->dmem = d;
  p->memory = kiln_dmem_memory(d);
  p->stack_bytes = stack;
  pthread_mutex_init(&p->device_lock, NULL);
  pthread_mutex_init(&p->qlock, NULL);
  pthread_cond_init(&p->idle_cv, NULL);
  p->workers = calloc((size_t)n, sizeof *p->workers);
  kiln_status s = p->workers ? KILN_OK : oom();
  if (!s) p->nworkers = n;
  if (!s && o->device) {
    s = kiln_device_attach(o->device, p->memory);
    if (!s) {
      kiln_device_retain(o->device);
      p->device = o->device;
    }
  }
  /* Each worker's shadow stack: its own region of the device memory. */
  for (int i = 0; i < n && !s; i++) {
    worker *w = &p->workers[i];
    w->pool = p;
    w->index = i;
    s = kiln_dmem_alloc(d, stack, 16, &w->stack_offset);
    if (!s) w->stack_top = (uint32_t)(w->stack_offset + stack);
  }
  for (int i = 0; i < n && !s; i++) {
    worker *w = &p->workers[i];
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc)
      s = kiln_status_from_errno(rc, "pool: starting worker %d", i);
    else
      w->started = true;
  }
  if (s) {
    pool_destroy(p);
    return s;
  }
  *out = p;
  return KILN_OK;
}

void kiln_pool_release(kiln_pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->qlock);
  while (p->busy) pthread_cond_wait(&p->idle_cv, &p->qlock);
  pthread_mutex_unlock(&p->qlock);
  pool_unref(p);
}

int kiln_pool_threads(const kiln_pool *p) { return p->nworkers; }
kiln_dmem *kiln_pool_dmem(kiln_pool *p) { return p->dmem; }

/* ---- Executables ------------------------------------------------------------------ */

static void executable_destroy(kiln_executable *x) {
  kiln_pool *p = x->pool;
  if (x->w) {
    for (int i = 0; i < p->nworkers; i++) {
      if (x->w[i].inst) kiln_instance_release(x->w[i].inst);
      free(x->w[i].fns);
    }
    free(x->w);
  }
  if (x->claim_id) kiln_memory_unclaim(p->memory, x->claim_id);
  if (x->data_size) kiln_status_free(kiln_dmem_free(p->dmem, x->data_offset));
  for (uint32_t k = 0; k < x->kernel_count; k++) free(x->kernel_names[k]);
  free(x->kernel_names);
  if (x->module) kiln_module_release(x->module);
  free(x->name);
  free(x);
  pool_unref(p);
}

void kiln_executable_retain(kiln_executable *x) {
  atomic_fetch_add(&x->refs, 1);
}
void kiln_executable_release(kiln_executable *x) {
  if (x && atomic_fetch_sub(&x->refs, 1) == 1) executable_destroy(x);
}
const char *kiln_executable_name(const kiln_executable *x) { return x->name; }
size_t kiln_executable_kernel_count(const kiln_executable *x) {
  return x->kernel_count;
}
const char *kiln_executable_kernel_name(const kiln_executable *x, size_t i) {
  return i < x->kernel_count ? x->kernel_names[i] : NULL;
}
void kiln_executable_region(const kiln_executable *x, uint64_t *begin,
                            uint64_t *end) {
  *begin = x->data_offset;
  *end = x->data_offset + x->data_size;
}

static bool is_kernel_type(const kiln_externtype *t) {
  if (t->kind != KILN_EXTERN_FUNC) return false;
  const kiln_functype *f = &t->of.func;
  if (f->param_count != 4 || f->result_count != 0) return false;
  for (int i = 0; i < 4; i++)
    if (f->params[i] != KILN_I32) return false;
  return true;
}

/* Checks that every import is one the kernel ABI provides; finds the
 * table's minimum size. */
static kiln_status check_imports(kiln_executable *x, uint64_t *table_min) {
  *table_min = 0;
  bool memory = false;
  for (size_t i = 0; i < kiln_module_import_count(x->module); i++) {
    const kiln_import *im = kiln_module_import(x->module, i);
    bool env = !strcmp(im->module, "env");
    if (env && !strcmp(im->name, "memory") &&
        im->type.kind == KILN_EXTERN_MEMORY) {
      memory = true;
      continue;
    }
    if (env && !strcmp(im->name, "__indirect_function_table") &&
        im->type.kind == KILN_EXTERN_TABLE) {
      *table_min = im->type.of.table.limits.min;
      continue;
    }
    if (env && im->type.kind == KILN_EXTERN_GLOBAL &&
        (!strcmp(im->name, "__memory_base") ||
         !strcmp(im->name, "__table_base") ||
         !strcmp(im->name, "__stack_pointer")))
      continue;
    const char *hint =
        !strncmp(im->module, "GOT.", 4)
            ? " (a symbol with default visibility: compile with "
              "-fvisibility=hidden)"
            : " (kernels have no host functions and no libc)";
    return kiln_make_status(KILN_CODE_LINK,
                            "%s: import '%s' '%s' is not part of the kernel "
                            "ABI%s",
                            x->name, im->module, im->name, hint);
  }
  if (!memory)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "%s: does not import env.memory: not a kernel "
                            "executable (see sdk/LINKING.md)", x->name);
  return KILN_OK;
}

static kiln_status instantiate_worker(kiln_executable *x, worker *w,
                                      uint64_t table_min, xworker *xw) {
  kiln_pool *p = x->pool;
  kiln_linker *l = NULL;
  KILN_RETURN_IF_ERROR(kiln_linker_create(x->engine, &l));
  kiln_status s = kiln_linker_define_memory(l, "env", "memory", p->memory);
  if (!s)
    s = kiln_linker_define_global(l, "env", "__memory_base",
                                  kiln_val_i32((uint32_t)x->data_offset),
                                  false);
  if (!s)
    s = kiln_linker_define_global(l, "env", "__table_base", kiln_val_i32(0),
                                  false);
  if (!s)
    s = kiln_linker_define_global(l, "env", "__stack_pointer",
                                  kiln_val_i32(w->stack_top), true);
  if (!s)
    s = kiln_linker_define_table(
        l, "env", "__indirect_function_table",
        (kiln_limits){.min = table_min, .max = 0, .has_max = false});
  if (!s) s = kiln_instance_create(x->module, l, NULL, &xw->inst);
  kiln_linker_release(l);
  if (s) return s;
  void *sp = NULL;
  kiln_status nf =
      kiln_instance_imported_global(xw->inst, "env", "__stack_pointer", &sp);
  kiln_status_free(nf); /* a module that uses no stack imports none */
  xw->sp = sp;
  xw->fns = calloc(x->kernel_count ? x->kernel_count : 1, sizeof *xw->fns);
  if (!xw->fns) return oom();
  for (uint32_t k = 0; k < x->kernel_count; k++) {
    void *fn = NULL, *env = NULL;
    KILN_RETURN_IF_ERROR(
        kiln_instance_native(xw->inst, x->kernel_names[k], &fn, &env));
    xw->fns[k] = (kernel_fn)fn;
    xw->env = env;
  }
  return KILN_OK;
}

kiln_status kiln_executable_load(kiln_pool *p, kiln_engine *e,
                                 const uint8_t *bytes, size_t size,
                                 const char *name, kiln_executable **out) {
  *out = NULL;
  if (!name) name = "kernel executable";
  kiln_dylink_info info;
  kiln_status s = kiln_dylink_read(bytes, size, &info);
  if (s) return kiln_status_annotate(s, "loading %s", name);
  if (!info.present)
    return kiln_make_status(
        KILN_CODE_FAILED_PRECONDITION,
        "loading %s: not a position-independent kernel executable (no "
        "dylink.0 section): link with -fPIC -shared as sdk/LINKING.md says, "
        "so that kiln can place its data and stacks",
        name);
  kiln_executable *x = calloc(1, sizeof *x);
  if (!x) return oom();
  atomic_init(&x->refs, 1);
  pool_retain(p);
  x->pool = p;
  x->engine = e;
  x->name = strdup(name);
  if (!x->name) {
    executable_destroy(x);
    return oom();
  }
  s = kiln_module_load(e, bytes, size, name, &x->module);
  uint64_t table_min = 0;
  if (!s) s = check_imports(x, &table_min);
  if (!s && info.table_size > table_min) table_min = info.table_size;
  /* Kernels: exports of type (i32, i32, i32, i32) -> (). */
  size_t ne = s ? 0 : kiln_module_export_count(x->module);
  if (!s) {
    x->kernel_names = calloc(ne ? ne : 1, sizeof *x->kernel_names);
    if (!x->kernel_names) s = oom();
  }
  for (size_t i = 0; i < ne && !s; i++) {
    const kiln_export *ex = kiln_module_export(x->module, i);
    if (!is_kernel_type(&ex->type)) continue;
    char *n = strdup(ex->name);
    if (!n) s = oom();
    else x->kernel_names[x->kernel_count++] = n;
  }
  /* The module's static data region. */
  if (!s && info.mem_size) {
    uint64_t align = (uint64_t)1 << (info.mem_p2align > 12 ? 12 : info.mem_p2align);
    if (align < 16) align = 16;
    s = kiln_dmem_alloc(p->dmem, info.mem_size, align, &x->data_offset);
    if (!s) {
      x->data_size = info.mem_size;
      s = kiln_memory_claim(p->memory, x->data_offset,
                            x->data_offset + x->data_size, x->name,
                            &x->claim_id);
    }
  }
  if (!s) {
    x->w = calloc((size_t)p->nworkers, sizeof *x->w);
    if (!x->w) s = oom();
  }
  /* Each worker's instance (the first applies the data segments; the
   * others write the same bytes again before any dispatch can see them). */
  for (int i = 0; i < p->nworkers && !s; i++)
    s = instantiate_worker(x, &p->workers[i], table_min, &x->w[i]);
  if (s) {
    executable_destroy(x);
    return kiln_status_annotate(s, "loading %s", name);
  }
  *out = x;
  return KILN_OK;
}

kiln_status kiln_executable_load_file(kiln_pool *p, kiln_engine *e,
                                      const char *path,
                                      kiln_executable **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_status_from_errno(errno, "opening %s", path);
  uint8_t *buf = NULL;
  size_t n = 0, cap = 0;
  kiln_status s = KILN_OK;
  for (;;) {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      uint8_t *b = realloc(buf, cap);
      if (!b) {
        s = oom();
        break;
      }
      buf = b;
    }
    size_t r = fread(buf + n, 1, cap - n, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) s = kiln_status_from_errno(errno, "reading %s", path);
      break;
    }
  }
  fclose(f);
  if (!s) s = kiln_executable_load(p, e, buf, n, path, out);
  free(buf);
  return s;
}

/* ---- Command buffers -------------------------------------------------------------- */

kiln_status kiln_cmdbuf_create(kiln_pool *p, kiln_cmdbuf **out) {
  kiln_cmdbuf *cb = calloc(1, sizeof *cb);
  if (!cb) return oom();
  pool_retain(p);
  cb->pool = p;
  cb->fence.cb = cb;
  atomic_init(&cb->state, CB_IDLE);
  *out = cb;
  return KILN_OK;
}

static void wait_done(kiln_cmdbuf *cb) {
  uint32_t st;
  while ((st = atomic_load_explicit(&cb->state, memory_order_acquire)) ==
         CB_PENDING)
    kiln_wait_change(&cb->state, CB_PENDING);
}

static void clear(kiln_cmdbuf *cb) {
  for (size_t i = 0; i < cb->n; i++)
    if (cb->cmds[i].kind == CMD_DISPATCH)
      kiln_executable_release(cb->cmds[i].u.d.x);
  for (size_t i = 0; i < cb->nblocks; i++)
    kiln_status_free(kiln_dmem_free(cb->pool->dmem, cb->blocks[i]));
  cb->n = cb->nblocks = 0;
  kiln_status_free(cb->status);
  cb->status = KILN_OK;
  cb->status_given = false;
  atomic_store(&cb->state, CB_IDLE);
}

void kiln_cmdbuf_release(kiln_cmdbuf *cb) {
  if (!cb) return;
  wait_done(cb);
  clear(cb);
  free(cb->cmds);
  free(cb->blocks);
  pool_unref(cb->pool);
  free(cb);
}

static kiln_status check_idle(kiln_cmdbuf *cb) {
  if (atomic_load(&cb->state) == CB_PENDING)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "command buffer is pending: wait on its fence "
                            "first");
  return KILN_OK;
}

kiln_status kiln_cmdbuf_reset(kiln_cmdbuf *cb) {
  KILN_RETURN_IF_ERROR(check_idle(cb));
  clear(cb);
  return KILN_OK;
}

size_t kiln_cmdbuf_command_count(const kiln_cmdbuf *cb) { return cb->n; }

static kiln_status push_cmd(kiln_cmdbuf *cb, const cmd *c) {
  KILN_RETURN_IF_ERROR(check_idle(cb));
  if (!kiln_reserve((void **)&cb->cmds, &cb->cap, cb->n + 1, sizeof *cb->cmds, 16))
    return oom();
  cb->cmds[cb->n++] = *c;
  /* A recorded buffer that already ran is recorded further: forget its
   * old outcome. */
  if (atomic_load(&cb->state) == CB_DONE) {
    kiln_status_free(cb->status);
    cb->status = KILN_OK;
    cb->status_given = false;
    atomic_store(&cb->state, CB_IDLE);
  }
  return KILN_OK;
}

kiln_status kiln_cmdbuf_dispatch(kiln_cmdbuf *cb,
                                 const kiln_dispatch_desc *d) {
  KILN_RETURN_IF_ERROR(check_idle(cb));
  kiln_pool *p = cb->pool;
  kiln_executable *x = d->executable;
  if (!x || !d->kernel)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "dispatch: no executable or kernel given");
  if (x->pool != p)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "dispatch: %s was loaded into another pool",
                            x->name);
  uint32_t k = 0;
  while (k < x->kernel_count && strcmp(x->kernel_names[k], d->kernel)) k++;
  if (k == x->kernel_count)
    return kiln_make_status(KILN_CODE_NOT_FOUND,
                            "dispatch: %s exports no kernel '%s' (a kernel "
                            "has type (i32, i32, i32, i32) -> ())",
                            x->name, d->kernel);
  uint32_t g[3];
  uint64_t total = 1;
  for (int a = 0; a < 3; a++) {
    g[a] = d->groups[a] ? d->groups[a] : 1;
    total *= g[a];
  }
  if (total > (1u << 30))
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "dispatch of '%s': %llu workgroups, more than "
                            "2^30", d->kernel, (unsigned long long)total);
  if (d->binding_count > KILN_KERNEL_MAX_BINDINGS ||
      (d->binding_count && !d->bindings))
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "dispatch of '%s': %u bindings, at most %u",
                            d->kernel, d->binding_count,
                            KILN_KERNEL_MAX_BINDINGS);
  if (d->push_count > KILN_KERNEL_MAX_PUSH || (d->push_count && !d->push))
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "dispatch of '%s': %u push constants, at most %u",
                            d->kernel, d->push_count, KILN_KERNEL_MAX_PUSH);
  kiln_kernel_args args;
  memset(&args, 0, sizeof args);
  for (uint32_t i = 0; i < d->binding_count; i++) {
    const kiln_binding *b = &d->bindings[i];
    kiln_status s = kiln_dmem_check(p->dmem, b->offset, b->size);
    if (!s && b->offset + b->size > UINT32_MAX)
      s = kiln_make_status(KILN_CODE_OUT_OF_RANGE, "past 4 GiB");
    if (s)
      return kiln_status_annotate(s, "dispatch of '%s' in %s: binding %u",
                                  d->kernel, x->name, i);
    args.binding[i] = (uint32_t)b->offset;
    args.binding_size[i] = (uint32_t)b->size;
  }
  memcpy(args.group_count, g, sizeof g);
  args.binding_count = d->binding_count;
  args.push_count = d->push_count;
  args.abi_version = KILN_KERNEL_ABI_VERSION;
  if (d->push_count) memcpy(args.push, d->push, d->push_count * 4);

  /* The argument block lives in the device memory; keep track of it. */
  if (!kiln_reserve((void **)&cb->blocks, &cb->capblocks, cb->nblocks + 1,
                    sizeof *cb->blocks, 16))
    return oom();
  uint64_t off;
  KILN_RETURN_IF_ERROR(kiln_dmem_alloc(p->dmem, sizeof args, 16, &off));
  void *dst = kiln_memory_range_or_null(p->memory, off, sizeof args);
  memcpy(dst, &args, sizeof args);
  cmd c = {.kind = CMD_DISPATCH};
  c.u.d.x = x;
  c.u.d.kernel = k;
  memcpy(c.u.d.groups, g, sizeof g);
  c.u.d.total = (uint32_t)total;
  c.u.d.args = (uint32_t)off;
  kiln_status s = push_cmd(cb, &c);
  if (s) {
    kiln_status_free(kiln_dmem_free(p->dmem, off));
    return s;
  }
  cb->blocks[cb->nblocks++] = off;
  kiln_executable_retain(x);
  return KILN_OK;
}

kiln_status kiln_cmdbuf_copy(kiln_cmdbuf *cb, uint64_t dst_offset,
                             uint64_t src_offset, uint64_t size) {
  kiln_dmem *d = cb->pool->dmem;
  kiln_status s = kiln_dmem_check(d, src_offset, size);
  if (s) return kiln_status_annotate(s, "copy source");
  s = kiln_dmem_check(d, dst_offset, size);
  if (s) return kiln_status_annotate(s, "copy destination");
  cmd c = {.kind = CMD_COPY};
  c.u.c.dst = dst_offset;
  c.u.c.src = src_offset;
  c.u.c.size = size;
  return push_cmd(cb, &c);
}

kiln_status kiln_cmdbuf_fill(kiln_cmdbuf *cb, uint64_t dst_offset,
                             uint64_t size, uint32_t pattern) {
  if (size % 4 || dst_offset % 4)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "fill: offset and size must be multiples of 4");
  kiln_status s = kiln_dmem_check(cb->pool->dmem, dst_offset, size);
  if (s) return kiln_status_annotate(s, "fill destination");
  cmd c = {.kind = CMD_FILL};
  c.u.c.dst = dst_offset;
  c.u.c.size = size;
  c.u.c.pattern = pattern;
  return push_cmd(cb, &c);
}

kiln_status kiln_cmdbuf_gpu(kiln_cmdbuf *cb, const kiln_op *op) {
  kiln_pool *p = cb->pool;
  if (!p->device)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "GPU op %s: the pool has no device",
                            kiln_op_kind_name(op->kind));
  pthread_mutex_lock(&p->device_lock);
  kiln_status s = kiln_device_validate(p->device, op);
  pthread_mutex_unlock(&p->device_lock);
  if (s) return kiln_status_annotate(s, "GPU op %s", kiln_op_kind_name(op->kind));
  cmd c = {.kind = CMD_GPU};
  c.u.op = *op;
  return push_cmd(cb, &c);
}

kiln_status kiln_cmdbuf_barrier(kiln_cmdbuf *cb) {
  cmd c = {.kind = CMD_BARRIER};
  return push_cmd(cb, &c);
}

kiln_status kiln_cmdbuf_submit(kiln_cmdbuf *cb, kiln_fence **out_fence) {
  KILN_RETURN_IF_ERROR(check_idle(cb));
  kiln_pool *p = cb->pool;
  kiln_status_free(cb->status);
  cb->status = KILN_OK;
  cb->status_given = false;
  cb->pc = 0;
  cb->gpu_pending = false;
  cb->next = NULL;
  atomic_store(&cb->state, CB_PENDING);
  if (out_fence) *out_fence = &cb->fence;
  pthread_mutex_lock(&p->qlock);
  if (p->busy) {
    if (p->qtail)
      p->qtail->next = cb;
    else
      p->qhead = cb;
    p->qtail = cb;
    pthread_mutex_unlock(&p->qlock);
    return KILN_OK;
  }
  p->busy = true;
  pthread_mutex_unlock(&p->qlock);
  advance(p, cb);
  return KILN_OK;
}

bool kiln_fence_is_done(const kiln_fence *f) {
  return atomic_load(&f->cb->state) != CB_PENDING;
}

kiln_status kiln_fence_wait(kiln_fence *f) {
  kiln_cmdbuf *cb = f->cb;
  wait_done(cb);
  if (!cb->status) return KILN_OK;
  kiln_status copy = kiln_make_status(kiln_status_code(cb->status), "%s",
                                      kiln_status_message(cb->status));
  if (cb->status_given) return copy;
  /* The first waiter gets the original (trap kind and function kept); the
   * buffer keeps a copy of its code and message for later waiters. */
  kiln_status s = cb->status;
  cb->status = copy;
  cb->status_given = true;
  return s;
}

kiln_status kiln_cmdbuf_run(kiln_cmdbuf *cb) {
  kiln_fence *f;
  KILN_RETURN_IF_ERROR(kiln_cmdbuf_submit(cb, &f));
  return kiln_fence_wait(f);
}
