/* The cpu backend: the reference ops on a worker pool, behind an
 * asynchronous in-order queue like a GPU stream.
 *
 * submit (launch) copies the resolved op into the queue and returns; one
 * executor thread takes commands in order and splits each op's parallel
 * rows across the workers (the executor works too). sync waits for the
 * queue to drain and returns the first device-side error.
 *
 * With cpu_mirror, RESIDENT ranges get malloc'd buffers and uploads and
 * downloads are queued copies, so the coherence protocol behaves as on a
 * discrete GPU. An upload copies its source into a staging buffer at once
 * (like cuMemcpyHtoDAsync from pageable memory), so the guest may write the
 * source again right after. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "device/device_internal.h"

typedef enum cmd_kind { CMD_OP, CMD_OPS, CMD_COPY, CMD_FREE } cmd_kind;

typedef struct cmd {
  cmd_kind kind;
  struct cmd *next;
  kiln_dop op;        /* CMD_OP */
  kiln_dop *ops;      /* CMD_OPS: a graph's ops, owned */
  size_t nops;
  void *dst;          /* CMD_COPY */
  const void *src;
  uint64_t n;
  void *owned;        /* freed after the command (staging, CMD_FREE) */
} cmd;

typedef struct cpu_graph {
  kiln_dop *ops;
  size_t n, cap;
} cpu_graph;

typedef struct cpu_device {
  kiln_device base;
  int nthreads;
  bool mirror;
  /* Queue and executor. */
  pthread_mutex_t lock;
  pthread_cond_t has_work, idle;
  cmd *head, *tail;
  bool busy, stop;
  kiln_status error; /* first device-side error since the last sync */
  pthread_t executor;
  /* Worker pool for one op at a time. */
  pthread_mutex_t plock;
  pthread_cond_t pwork, pdone;
  const kiln_dop *job;
  int64_t job_rows, job_chunk;
  atomic_llong job_next;
  uint64_t generation;
  int pending;
  kiln_status job_error;
  bool pstop;
  pthread_t *workers;
  int nworkers;
  /* Graph being recorded (graph_begin .. graph_end). */
  cpu_graph *recording;
} cpu_device;

static cpu_device *cpu_of(kiln_device *d) { return (cpu_device *)d; }

/* ---- Worker pool ----------------------------------------------------------- */

static void job_record(cpu_device *c, kiln_status s) {
  if (!s) return;
  pthread_mutex_lock(&c->plock);
  if (!c->job_error) c->job_error = s;
  else kiln_status_free(s);
  pthread_mutex_unlock(&c->plock);
}

static void job_work(cpu_device *c) {
  for (;;) {
    int64_t i = atomic_fetch_add(&c->job_next, c->job_chunk);
    if (i >= c->job_rows) break;
    int64_t e = i + c->job_chunk < c->job_rows ? i + c->job_chunk : c->job_rows;
    job_record(c, kiln_ref_run(c->job, i, e));
  }
}

static void *worker_main(void *arg) {
  cpu_device *c = arg;
  uint64_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&c->plock);
    while (!c->pstop && c->generation == seen)
      pthread_cond_wait(&c->pwork, &c->plock);
    if (c->pstop) {
      pthread_mutex_unlock(&c->plock);
      return NULL;
    }
    seen = c->generation;
    pthread_mutex_unlock(&c->plock);
    job_work(c);
    pthread_mutex_lock(&c->plock);
    if (--c->pending == 0) pthread_cond_signal(&c->pdone);
    pthread_mutex_unlock(&c->plock);
  }
}

/* Work per row, roughly, to decide whether splitting pays. */
static int64_t op_work(const kiln_dop *op, int64_t rows) {
  int64_t per_row = op->cols > 0 ? op->cols : 1;
  if (op->kind == KILN_OP_GEMM || op->kind == KILN_OP_GEMV)
    per_row *= op->kind == KILN_OP_GEMM ? op->a.shape[1] + op->a.shape[0]
                                        : op->rows + 1;
  if (op->kind == KILN_OP_ATTENTION) per_row *= op->b.shape[0];
  return per_row * rows;
}

static kiln_status run_op(cpu_device *c, const kiln_dop *op) {
  int64_t rows = kiln_ref_parallel_rows(op);
  if (c->nworkers == 0 || rows < 2 || op_work(op, rows) < 32768)
    return kiln_ref_run(op, 0, rows);
  int64_t parts = (int64_t)(c->nworkers + 1) * 4;
  int64_t chunk = (rows + parts - 1) / parts;
  pthread_mutex_lock(&c->plock);
  c->job = op;
  c->job_rows = rows;
  c->job_chunk = chunk;
  atomic_store(&c->job_next, 0);
  c->job_error = KILN_OK;
  c->pending = c->nworkers;
  c->generation++;
  pthread_cond_broadcast(&c->pwork);
  pthread_mutex_unlock(&c->plock);
  job_work(c);
  pthread_mutex_lock(&c->plock);
  while (c->pending) pthread_cond_wait(&c->pdone, &c->plock);
  kiln_status s = c->job_error;
  c->job_error = KILN_OK;
  c->job = NULL;
  pthread_mutex_unlock(&c->plock);
  return s;
}

/* ---- Queue ------------------------------------------------------------------ */

static void record_error(cpu_device *c, kiln_status s) {
  if (!s) return;
  pthread_mutex_lock(&c->lock);
  if (!c->error) c->error = s;
  else kiln_status_free(s);
  pthread_mutex_unlock(&c->lock);
}

static void execute(cpu_device *c, cmd *k) {
  switch (k->kind) {
    case CMD_OP: record_error(c, run_op(c, &k->op)); break;
    case CMD_OPS:
      for (size_t i = 0; i < k->nops; i++) record_error(c, run_op(c, &k->ops[i]));
      break;
    case CMD_COPY: memcpy(k->dst, k->src, k->n); break;
    case CMD_FREE: break;
  }
  free(k->owned);
  free(k->ops);
  free(k);
}

static void *executor_main(void *arg) {
  cpu_device *c = arg;
  pthread_mutex_lock(&c->lock);
  for (;;) {
    while (!c->head && !c->stop) pthread_cond_wait(&c->has_work, &c->lock);
    if (!c->head && c->stop) break;
    cmd *k = c->head;
    c->head = k->next;
    if (!c->head) c->tail = NULL;
    c->busy = true;
    pthread_mutex_unlock(&c->lock);
    execute(c, k);
    pthread_mutex_lock(&c->lock);
    c->busy = false;
    if (!c->head) pthread_cond_broadcast(&c->idle);
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

static kiln_status enqueue(cpu_device *c, cmd *k) {
  k->next = NULL;
  pthread_mutex_lock(&c->lock);
  if (c->tail) c->tail->next = k;
  else c->head = k;
  c->tail = k;
  pthread_cond_signal(&c->has_work);
  pthread_mutex_unlock(&c->lock);
  return KILN_OK;
}

static cmd *cmd_new(cmd_kind kind) {
  cmd *k = calloc(1, sizeof *k);
  if (k) k->kind = kind;
  return k;
}

static kiln_status no_memory(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                          "cpu device: out of memory");
}

/* ---- Methods ----------------------------------------------------------------- */

static kiln_status cpu_sync(kiln_device *d) {
  cpu_device *c = cpu_of(d);
  pthread_mutex_lock(&c->lock);
  while (c->head || c->busy) pthread_cond_wait(&c->idle, &c->lock);
  kiln_status s = c->error;
  c->error = KILN_OK;
  pthread_mutex_unlock(&c->lock);
  return s;
}

static kiln_status cpu_launch(kiln_device *d, const kiln_dop *op) {
  cpu_device *c = cpu_of(d);
  if (c->recording) {
    cpu_graph *g = c->recording;
    if (g->n == g->cap) {
      size_t cap = g->cap ? g->cap * 2 : 16;
      kiln_dop *ops = realloc(g->ops, cap * sizeof *ops);
      if (!ops) return no_memory();
      g->ops = ops;
      g->cap = cap;
    }
    g->ops[g->n++] = *op;
    return KILN_OK;
  }
  cmd *k = cmd_new(CMD_OP);
  if (!k) return no_memory();
  k->op = *op;
  return enqueue(c, k);
}

static kiln_status cpu_alloc(kiln_device *d, uint64_t n, uint64_t *out) {
  (void)d;
  void *p = n <= SIZE_MAX ? calloc(1, (size_t)n) : NULL;
  if (!p) return no_memory();
  *out = (uint64_t)(uintptr_t)p;
  return KILN_OK;
}

static void cpu_free(kiln_device *d, uint64_t addr, uint64_t n) {
  (void)n;
  cmd *k = cmd_new(CMD_FREE);
  if (!k) { /* cannot queue: drain, then free now */
    kiln_status_free(cpu_sync(d));
    free((void *)(uintptr_t)addr);
    return;
  }
  k->owned = (void *)(uintptr_t)addr;
  enqueue(cpu_of(d), k);
}

static kiln_status cpu_upload(kiln_device *d, uint64_t dst, const void *src,
                              uint64_t n) {
  cmd *k = cmd_new(CMD_COPY);
  void *staging = k ? malloc(n ? n : 1) : NULL;
  if (!staging) {
    free(k);
    return no_memory();
  }
  memcpy(staging, src, n);
  k->dst = (void *)(uintptr_t)dst;
  k->src = staging;
  k->n = n;
  k->owned = staging;
  return enqueue(cpu_of(d), k);
}

static kiln_status cpu_download(kiln_device *d, void *dst, uint64_t src,
                                uint64_t n) {
  cmd *k = cmd_new(CMD_COPY);
  if (!k) return no_memory();
  k->dst = dst;
  k->src = (const void *)(uintptr_t)src;
  k->n = n;
  return enqueue(cpu_of(d), k);
}

/* Graphs: the recorded ops, replayed as one queued command. Exercises the
 * core's graph path in CI the way CUDA graphs use it. */
static kiln_status cpu_graph_begin(kiln_device *d, const kiln_dop *ops,
                                   size_t n) {
  (void)ops, (void)n;
  cpu_device *c = cpu_of(d);
  if (c->recording)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "cpu device: already recording a graph");
  c->recording = calloc(1, sizeof *c->recording);
  return c->recording ? KILN_OK : no_memory();
}

static kiln_status cpu_graph_end(kiln_device *d, void **out) {
  cpu_device *c = cpu_of(d);
  *out = c->recording;
  c->recording = NULL;
  return *out ? KILN_OK
              : kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                                 "cpu device: no graph being recorded");
}

static kiln_status cpu_graph_launch(kiln_device *d, void *graph) {
  cpu_graph *g = graph;
  cmd *k = cmd_new(CMD_OPS);
  if (!k) return no_memory();
  k->ops = malloc((g->n ? g->n : 1) * sizeof *k->ops);
  if (!k->ops) {
    free(k);
    return no_memory();
  }
  memcpy(k->ops, g->ops, g->n * sizeof *k->ops);
  k->nops = g->n;
  return enqueue(cpu_of(d), k);
}

static void cpu_graph_free(kiln_device *d, void *graph) {
  (void)d;
  cpu_graph *g = graph;
  if (!g) return;
  free(g->ops);
  free(g);
}

static void cpu_destroy(kiln_device *d) {
  cpu_device *c = cpu_of(d);
  kiln_status_free(cpu_sync(d));
  pthread_mutex_lock(&c->lock);
  c->stop = true;
  pthread_cond_broadcast(&c->has_work);
  pthread_mutex_unlock(&c->lock);
  pthread_join(c->executor, NULL);
  pthread_mutex_lock(&c->plock);
  c->pstop = true;
  pthread_cond_broadcast(&c->pwork);
  pthread_mutex_unlock(&c->plock);
  for (int i = 0; i < c->nworkers; i++) pthread_join(c->workers[i], NULL);
  free(c->workers);
  cpu_graph_free(d, c->recording);
  kiln_status_free(c->error);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->has_work);
  pthread_cond_destroy(&c->idle);
  pthread_mutex_destroy(&c->plock);
  pthread_cond_destroy(&c->pwork);
  pthread_cond_destroy(&c->pdone);
  free(c);
}

static const kiln_device_vtable cpu_vtable = {
    .destroy = cpu_destroy,
    .launch = cpu_launch,
    .sync = cpu_sync,
    .graph_begin = cpu_graph_begin,
    .graph_end = cpu_graph_end,
    .graph_launch = cpu_graph_launch,
    .graph_free = cpu_graph_free,
};

static const kiln_device_vtable cpu_mirror_vtable = {
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .launch = cpu_launch,
    .sync = cpu_sync,
    .graph_begin = cpu_graph_begin,
    .graph_end = cpu_graph_end,
    .graph_launch = cpu_graph_launch,
    .graph_free = cpu_graph_free,
};

kiln_status kiln_cpu_device_create(const kiln_device_options *o,
                                   kiln_device **out) {
  *out = NULL;
  cpu_device *c = calloc(1, sizeof *c);
  if (!c) return no_memory();
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  c->nthreads = o && o->cpu_threads > 0 ? o->cpu_threads
                                        : (cores > 0 ? (int)cores : 1);
  c->mirror = o && o->cpu_mirror;
  c->base.vt = c->mirror ? &cpu_mirror_vtable : &cpu_vtable;
  c->base.kind = KILN_DEVICE_CPU;
  snprintf(c->base.describe, sizeof c->base.describe, "cpu (%d thread%s%s)",
           c->nthreads, c->nthreads == 1 ? "" : "s",
           c->mirror ? ", mirror" : "");
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->has_work, NULL);
  pthread_cond_init(&c->idle, NULL);
  pthread_mutex_init(&c->plock, NULL);
  pthread_cond_init(&c->pwork, NULL);
  pthread_cond_init(&c->pdone, NULL);
  c->workers = calloc((size_t)c->nthreads, sizeof *c->workers);
  kiln_status s = KILN_OK;
  if (!c->workers) s = no_memory();
  for (int i = 0; !s && i + 1 < c->nthreads; i++) {
    if (pthread_create(&c->workers[i], NULL, worker_main, c) != 0)
      s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                           "cpu device: cannot start worker threads");
    else
      c->nworkers++;
  }
  if (!s && pthread_create(&c->executor, NULL, executor_main, c) != 0) {
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                         "cpu device: cannot start its executor thread");
    pthread_mutex_lock(&c->plock);
    c->pstop = true;
    pthread_cond_broadcast(&c->pwork);
    pthread_mutex_unlock(&c->plock);
    for (int i = 0; i < c->nworkers; i++) pthread_join(c->workers[i], NULL);
    free(c->workers);
    free(c);
    return s;
  }
  if (s) {
    /* Executor was not started; stop the workers we have. */
    pthread_mutex_lock(&c->plock);
    c->pstop = true;
    pthread_cond_broadcast(&c->pwork);
    pthread_mutex_unlock(&c->plock);
    for (int i = 0; i < c->nworkers; i++) pthread_join(c->workers[i], NULL);
    free(c->workers);
    free(c);
    return s;
  }
  *out = &c->base;
  return KILN_OK;
}
