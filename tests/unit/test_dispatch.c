/* Kernel executables, the worker pool, the device memory's suballocator and
 * command buffers (include/kiln/dispatch.h). Kernels: guests/kernels. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "kiln/device.h"
#include "kiln/dispatch.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

/* ---- Helpers ----------------------------------------------------------------- */

typedef struct fixture {
  kiln_dmem *dm;
  kiln_pool *pool;
  kiln_memory *mem;
} fixture;

static bool setup(kiln_test *t, fixture *f, int threads) {
  memset(f, 0, sizeof *f);
  KILN_EXPECT_OK(t, kiln_dmem_create(&(kiln_dmem_options){.initial_bytes = 4u << 20}, &f->dm));
  if (!f->dm) return false;
  KILN_EXPECT_OK(t, kiln_pool_create(f->dm, &(kiln_pool_options){.threads = threads}, &f->pool));
  f->mem = kiln_dmem_memory(f->dm);
  return f->pool != NULL;
}

static void teardown(fixture *f) {
  kiln_pool_release(f->pool);
  kiln_dmem_release(f->dm);
}

static kiln_executable *load(kiln_test *t, fixture *f, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s.wasm", KILN_GUEST_DIR, name);
  kiln_executable *x = NULL;
  KILN_EXPECT_OK(t, kiln_executable_load_file(f->pool, kiln_test_engine(), path, &x));
  return x;
}

static uint64_t alloc(kiln_test *t, fixture *f, uint64_t bytes) {
  uint64_t off = 0;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(f->dm, bytes, 64, &off));
  return off;
}

static void *ptr(fixture *f, uint64_t off, uint64_t len) {
  return kiln_memory_range_or_null(f->mem, off, len);
}

/* Records one dispatch with up to 4 bindings and 4 push constants. */
static kiln_status dispatch(kiln_cmdbuf *cb, kiln_executable *x,
                            const char *kernel, uint32_t gx, uint32_t gy,
                            uint32_t nb, const kiln_binding *b, uint32_t np,
                            const uint32_t *push) {
  kiln_dispatch_desc d = {.executable = x, .kernel = kernel,
                          .groups = {gx, gy, 1}, .binding_count = nb,
                          .bindings = b, .push_count = np, .push = push};
  return kiln_cmdbuf_dispatch(cb, &d);
}

/* ---- Device memory ----------------------------------------------------------- */

static void test_dmem_alignment_free_reuse(kiln_test *t) {
  kiln_dmem *d = NULL;
  KILN_EXPECT_OK(t, kiln_dmem_create(NULL, &d));
  if (!d) return;
  uint64_t a, b, c;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 100, 4096, &a));
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 1, 0, &b));
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 5000, 256, &c));
  KILN_EXPECT(t, a % 4096 == 0 && b % 16 == 0 && c % 256 == 0);
  KILN_EXPECT(t, a >= 65536 && b >= 65536 && c >= 65536); /* 0 is NULL */
  KILN_EXPECT(t, b >= a + 100 || b + 1 <= a);
  /* Freeing and allocating the same size again reuses the block. */
  KILN_EXPECT_OK(t, kiln_dmem_free(d, b));
  uint64_t b2;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 1, 0, &b2));
  KILN_EXPECT(t, b2 == b);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_dmem_free(d, b2 + 1));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_dmem_alloc(d, 8, 3, &b2));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_dmem_alloc(d, 0, 0, &b2));
  /* Everything freed merges back into one block. */
  KILN_EXPECT_OK(t, kiln_dmem_free(d, a));
  KILN_EXPECT_OK(t, kiln_dmem_free(d, b));
  KILN_EXPECT_OK(t, kiln_dmem_free(d, c));
  kiln_dmem_stats st;
  kiln_dmem_get_stats(d, &st);
  KILN_EXPECTF(t, st.allocations == 0 && st.free_blocks == 1 &&
                      st.fragmentation == 0.0 && st.free == st.size - 65536,
               "allocations %llu free blocks %llu fragmentation %f",
               (unsigned long long)st.allocations,
               (unsigned long long)st.free_blocks, st.fragmentation);
  kiln_dmem_release(d);
}

static void test_dmem_fragmentation_and_growth(kiln_test *t) {
  kiln_dmem *d = NULL;
  KILN_EXPECT_OK(t, kiln_dmem_create(&(kiln_dmem_options){.initial_bytes = 1u << 20, .max_bytes = 64u << 20}, &d));
  if (!d) return;
  uint64_t off[64];
  for (int i = 0; i < 64; i++) KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 8192, 64, &off[i]));
  for (int i = 0; i < 64; i += 2) KILN_EXPECT_OK(t, kiln_dmem_free(d, off[i]));
  kiln_dmem_stats st;
  kiln_dmem_get_stats(d, &st);
  /* 32 holes of 8 KiB plus the tail: scattered free space. */
  KILN_EXPECTF(t, st.free_blocks >= 32 && st.fragmentation > 0.3,
               "free blocks %llu fragmentation %f",
               (unsigned long long)st.free_blocks, st.fragmentation);
  /* A hole is reused for a fitting request (best fit). */
  uint64_t h;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 8192, 64, &h));
  KILN_EXPECT(t, h == off[0] || (h < off[63] && (h - off[0]) % 16384 == 0));
  /* A request bigger than the memory grows it; the base never moves. */
  uint8_t *base = kiln_memory_base(kiln_dmem_memory(d));
  uint64_t big;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(d, 8u << 20, 4096, &big));
  kiln_dmem_get_stats(d, &st);
  KILN_EXPECT(t, st.grows >= 1 && st.size >= big + (8u << 20));
  KILN_EXPECT(t, kiln_memory_base(kiln_dmem_memory(d)) == base);
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED, kiln_dmem_alloc(d, 100u << 20, 0, &big));
  /* check(): inside one allocation only. */
  KILN_EXPECT_OK(t, kiln_dmem_check(d, off[1], 8192));
  KILN_EXPECT_OK(t, kiln_dmem_check(d, off[1] + 100, 8000));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_dmem_check(d, off[1], 8193));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_dmem_check(d, off[2], 4));
  kiln_dmem_release(d);
}

/* ---- Executables and regions ---------------------------------------------------- */

static void test_two_default_linked_modules_get_own_regions(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 2)) return;
  kiln_executable *a = load(t, &f, "kernel_tag1");
  kiln_executable *b = load(t, &f, "kernel_tag2");
  if (!a || !b) goto out;
  uint64_t ab, ae, bb, be;
  kiln_executable_region(a, &ab, &ae);
  kiln_executable_region(b, &bb, &be);
  KILN_EXPECTF(t, ae > ab && be > bb && (ae <= bb || be <= ab),
               "regions [%llu, %llu) and [%llu, %llu)", (unsigned long long)ab,
               (unsigned long long)ae, (unsigned long long)bb,
               (unsigned long long)be);
  KILN_EXPECT(t, kiln_executable_kernel_count(a) == 2);
  uint64_t out = alloc(t, &f, 64 * 4);
  kiln_binding bind = {out, 64 * 4};
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &cb));
  uint32_t v = 7;
  /* Rewrite module a's table, then read both tables. */
  KILN_EXPECT_OK(t, dispatch(cb, a, "set_table", 1, 1, 0, NULL, 1, &v));
  KILN_EXPECT_OK(t, dispatch(cb, b, "tag", 3, 1, 1, &bind, 0, NULL));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  uint32_t *o = ptr(&f, out, 64 * 4);
  KILN_EXPECTF(t, o[0] == 2002 && o[1] == 2004 && o[2] == 2006,
               "module b read %u %u %u", o[0], o[1], o[2]);
  KILN_EXPECT_OK(t, kiln_cmdbuf_reset(cb));
  KILN_EXPECT_OK(t, dispatch(cb, a, "tag", 3, 1, 1, &bind, 0, NULL));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  KILN_EXPECTF(t, o[0] == 1007 && o[1] == 1014 && o[2] == 1021,
               "module a read %u %u %u", o[0], o[1], o[2]);
  kiln_cmdbuf_release(cb);
out:
  kiln_executable_release(a);
  kiln_executable_release(b);
  teardown(&f);
}

static void test_non_pic_module_is_refused(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 1)) return;
  char path[512];
  snprintf(path, sizeof path, "%s/producer.wasm", KILN_GUEST_DIR);
  kiln_executable *x = NULL;
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_executable_load_file(f.pool, kiln_test_engine(), path, &x));
  KILN_EXPECT(t, x == NULL);
  teardown(&f);
}

static void test_each_worker_has_its_own_stack(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 4)) return;
  kiln_executable *x = load(t, &f, "kernel_faults");
  if (!x) goto out;
  uint64_t out = alloc(t, &f, 256 * 4);
  kiln_binding b = {out, 256 * 4};
  uint32_t push[2] = {UINT32_MAX, 150}; /* 150 frames of 1 KiB each */
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &cb));
  KILN_EXPECT_OK(t, dispatch(cb, x, "stack_depth", 256, 1, 1, &b, 2, push));
  for (int rep = 0; rep < 5; rep++) KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  uint32_t *o = ptr(&f, out, 256 * 4);
  int bad = 0;
  for (int i = 0; i < 256; i++) bad += o[i] != 150;
  KILN_EXPECTF(t, bad == 0, "%d workgroups saw a corrupted stack", bad);
  kiln_cmdbuf_release(cb);
out:
  kiln_executable_release(x);
  teardown(&f);
}

/* ---- Traps -------------------------------------------------------------------------- */

static void test_trap_fails_command_buffer_and_pool_keeps_working(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 2)) return;
  kiln_executable *x = load(t, &f, "kernel_faults");
  if (!x) goto out;
  uint64_t out = alloc(t, &f, 64 * 4);
  kiln_binding b = {out, 64 * 4};
  kiln_cmdbuf *cb = NULL, *after = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &cb));
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &after));
  uint32_t fail_at[2] = {37, 0};
  KILN_EXPECT_OK(t, dispatch(cb, x, "trap_at", 8, 8, 1, &b, 1, fail_at));
  KILN_EXPECT_OK(t, kiln_cmdbuf_fill(cb, out, 64 * 4, 0xdeadbeef)); /* skipped */
  kiln_fence *fence = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_submit(cb, &fence));
  kiln_status s = kiln_fence_wait(fence);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP);
  KILN_EXPECT(t, kiln_status_trap_kind(s) == KILN_TRAP_UNREACHABLE);
  const char *m = kiln_status_message(s);
  KILN_EXPECTF(t, strstr(m, "kernel 'trap_at'") && strstr(m, "kernel_faults") &&
                      strstr(m, "workgroup (5, 4, 0) of (8, 8, 1)"),
               "message: %s", m);
  kiln_status_free(s);
  /* Waiting again gives the same outcome. */
  s = kiln_fence_wait(fence);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP &&
                     strstr(kiln_status_message(s), "workgroup (5, 4, 0)"));
  kiln_status_free(s);
  uint32_t *o = ptr(&f, out, 64 * 4);
  KILN_EXPECT(t, o[0] != 0xdeadbeef); /* the fill after the trap did not run */

  /* Out of bounds: the trap kind is kept. */
  KILN_EXPECT_OK(t, kiln_cmdbuf_reset(cb));
  fail_at[0] = 3;
  KILN_EXPECT_OK(t, dispatch(cb, x, "oob_at", 64, 1, 1, &b, 1, fail_at));
  s = kiln_cmdbuf_run(cb);
  KILN_EXPECT(t, kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "workgroup (3, 0, 0)"), "%s",
               kiln_status_message(s));
  kiln_status_free(s);

  /* Many traps, then deep stacks and a full run: nothing leaked or broken. */
  for (int i = 0; i < 50; i++) kiln_status_free(kiln_cmdbuf_run(cb));
  uint32_t none[2] = {UINT32_MAX, 200};
  KILN_EXPECT_OK(t, dispatch(after, x, "stack_depth", 64, 1, 1, &b, 2, none));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(after));
  int bad = 0;
  for (int i = 0; i < 64; i++) bad += o[i] != 200;
  KILN_EXPECTF(t, bad == 0, "%d workgroups wrong after traps", bad);
  KILN_EXPECT_OK(t, kiln_cmdbuf_reset(after));
  KILN_EXPECT_OK(t, dispatch(after, x, "trap_at", 64, 1, 1, &b, 1, none));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(after));
  for (int i = 0; i < 64; i++) bad += o[i] != (uint32_t)i + 1;
  KILN_EXPECTF(t, bad == 0, "%d workgroups wrong after traps", bad);
  kiln_cmdbuf_release(cb);
  kiln_cmdbuf_release(after);
out:
  kiln_executable_release(x);
  teardown(&f);
}

/* ---- Record-time checks -------------------------------------------------------------- */

static void test_bindings_out_of_range_rejected_at_record(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 1)) return;
  kiln_executable *x = load(t, &f, "kernels");
  if (!x) goto out;
  uint64_t a = alloc(t, &f, 4096), b = alloc(t, &f, 4096);
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &cb));
  uint32_t push[2] = {1024, 1024};
  kiln_binding ok[3] = {{a, 4096}, {b, 4096}, {a, 4096}};
  KILN_EXPECT_OK(t, dispatch(cb, x, "add_f32", 1, 1, 3, ok, 2, push));
  kiln_binding past_end[3] = {{a, 4096}, {b, 4097}, {a, 4096}};
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, dispatch(cb, x, "add_f32", 1, 1, 3, past_end, 2, push));
  kiln_binding beyond_memory[3] = {{a, 4096}, {b, 4096}, {1ull << 33, 4}};
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, dispatch(cb, x, "add_f32", 1, 1, 3, beyond_memory, 2, push));
  kiln_binding null_page[3] = {{0, 16}, {b, 4096}, {a, 4096}};
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, dispatch(cb, x, "add_f32", 1, 1, 3, null_page, 2, push));
  kiln_binding wraps[3] = {{a, UINT64_MAX}, {b, 4096}, {a, 4096}};
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, dispatch(cb, x, "add_f32", 1, 1, 3, wraps, 2, push));
  KILN_EXPECT_OK(t, kiln_dmem_free(f.dm, b));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, dispatch(cb, x, "add_f32", 1, 1, 3, ok, 2, push));
  kiln_binding nine[9] = {{a, 4}};
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, dispatch(cb, x, "add_f32", 1, 1, 9, nine, 0, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_NOT_FOUND, dispatch(cb, x, "no_such_kernel", 1, 1, 0, NULL, 0, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_cmdbuf_copy(cb, a, a + 4000, 200));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_cmdbuf_fill(cb, a + 4000, 200, 0));
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION, kiln_cmdbuf_gpu(cb, &(kiln_op){.kind = KILN_OP_NOP}));
  KILN_EXPECT(t, kiln_cmdbuf_command_count(cb) == 1);
  kiln_cmdbuf_release(cb);
out:
  kiln_executable_release(x);
  teardown(&f);
}

/* ---- Copies, fills, resubmission, no allocation while running -------------------------- */

static void test_copy_fill_resubmit_without_allocating(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 2)) return;
  kiln_executable *x = load(t, &f, "kernels");
  if (!x) goto out;
  enum { N = 10000 };
  uint64_t a = alloc(t, &f, N * 4), b = alloc(t, &f, N * 4), c = alloc(t, &f, N * 4);
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(f.pool, &cb));
  float one = 1.0f, three = 3.0f;
  uint32_t one_bits, three_bits;
  memcpy(&one_bits, &one, 4);
  memcpy(&three_bits, &three, 4);
  uint32_t push[2] = {N, 512};
  kiln_binding bind[3] = {{a, N * 4}, {b, N * 4}, {c, N * 4}};
  KILN_EXPECT_OK(t, kiln_cmdbuf_fill(cb, a, N * 4, one_bits));
  KILN_EXPECT_OK(t, kiln_cmdbuf_fill(cb, b, N * 4, three_bits));
  KILN_EXPECT_OK(t, dispatch(cb, x, "add_f32", (N + 511) / 512, 1, 3, bind, 2, push));
  KILN_EXPECT_OK(t, kiln_cmdbuf_barrier(cb));
  KILN_EXPECT_OK(t, kiln_cmdbuf_copy(cb, a, c, N * 4));           /* a = 4 */
  KILN_EXPECT_OK(t, dispatch(cb, x, "mul_f32", (N + 511) / 512, 1, 3, bind, 2, push)); /* c = 12 */
  kiln_dmem_stats before, after;
  kiln_dmem_get_stats(f.dm, &before);
  for (int rep = 0; rep < 20; rep++) KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  kiln_dmem_get_stats(f.dm, &after);
  KILN_EXPECT(t, before.allocations == after.allocations && before.used == after.used);
  float *o = ptr(&f, c, N * 4);
  int bad = 0;
  for (int i = 0; i < N; i++) bad += o[i] != 12.0f;
  KILN_EXPECTF(t, bad == 0, "%d wrong (c[0] = %g)", bad, o[0]);
  kiln_cmdbuf_release(cb);
out:
  kiln_executable_release(x);
  teardown(&f);
}

/* ---- Concurrency ------------------------------------------------------------------------ */

typedef struct submitter {
  kiln_test *t;
  fixture *f;
  kiln_executable *x;
  int id;
  int iterations;
  atomic_int *errors;
} submitter;

/* Each thread owns three buffers (x, y, out) and two command buffers, and
 * checks its own results every round. */
static void *submit_loop(void *arg) {
  submitter *s = arg;
  enum { N = 4096 };
  uint64_t buf[3];
  for (int i = 0; i < 3; i++)
    if (kiln_dmem_alloc(s->f->dm, N * 4, 64, &buf[i])) {
      atomic_fetch_add(s->errors, 1);
      return NULL;
    }
  float *x = ptr(s->f, buf[0], N * 4), *y = ptr(s->f, buf[1], N * 4),
        *o = ptr(s->f, buf[2], N * 4);
  kiln_cmdbuf *cb[2] = {NULL, NULL};
  kiln_cmdbuf_create(s->f->pool, &cb[0]);
  kiln_cmdbuf_create(s->f->pool, &cb[1]);
  kiln_binding bind[3] = {{buf[0], N * 4}, {buf[1], N * 4}, {buf[2], N * 4}};
  uint32_t push[2] = {N, 256};
  kiln_status st = dispatch(cb[0], s->x, "add_f32", N / 256, 1, 3, bind, 2, push);
  if (!st) st = kiln_cmdbuf_barrier(cb[1]);
  if (!st) st = dispatch(cb[1], s->x, "mul_f32", N / 256, 1, 3, bind, 2, push);
  if (st) {
    kiln_status_free(st);
    atomic_fetch_add(s->errors, 1);
  }
  for (int it = 0; it < s->iterations; it++) {
    for (int i = 0; i < N; i++) {
      x[i] = (float)(s->id * 1000 + it);
      y[i] = (float)i;
    }
    kiln_fence *f0, *f1;
    kiln_status e = kiln_cmdbuf_submit(cb[0], &f0);
    if (!e) e = kiln_fence_wait(f0);
    if (!e) {
      for (int i = 0; i < N; i++)
        if (o[i] != x[i] + y[i]) {
          atomic_fetch_add(s->errors, 1);
          break;
        }
      e = kiln_cmdbuf_submit(cb[1], &f1);
      if (!e) e = kiln_fence_wait(f1);
    }
    if (e) {
      fprintf(stderr, "  submitter %d: %s\n", s->id, kiln_status_message(e));
      kiln_status_free(e);
      atomic_fetch_add(s->errors, 1);
      break;
    }
    for (int i = 0; i < N; i++)
      if (o[i] != x[i] * y[i]) {
        atomic_fetch_add(s->errors, 1);
        break;
      }
  }
  kiln_cmdbuf_release(cb[0]);
  kiln_cmdbuf_release(cb[1]);
  for (int i = 0; i < 3; i++) kiln_status_free(kiln_dmem_free(s->f->dm, buf[i]));
  return NULL;
}

static void test_eight_threads_submit_at_once(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 0)) return;
  kiln_executable *x = load(t, &f, "kernels");
  if (!x) goto out;
  atomic_int errors = 0;
  submitter s[8];
  pthread_t th[8];
  for (int i = 0; i < 8; i++) {
    s[i] = (submitter){t, &f, x, i, 200, &errors};
    pthread_create(&th[i], NULL, submit_loop, &s[i]);
  }
  for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
  KILN_EXPECTF(t, errors == 0, "%d errors", (int)errors);
out:
  kiln_executable_release(x);
  teardown(&f);
}

typedef struct loader {
  fixture *f;
  int iterations;
  atomic_int *errors;
  atomic_int *loads;
} loader;

/* Loads a module, dispatches on it, checks, unloads; releases the
 * executable while its command buffer is still pending every other time. */
static void *load_unload_loop(void *arg) {
  loader *l = arg;
  char path[512];
  uint64_t out;
  if (kiln_dmem_alloc(l->f->dm, 64 * 4, 64, &out)) {
    atomic_fetch_add(l->errors, 1);
    return NULL;
  }
  kiln_binding b = {out, 64 * 4};
  uint32_t *o = ptr(l->f, out, 64 * 4);
  for (int it = 0; it < l->iterations; it++) {
    int tag = 1 + it % 2;
    snprintf(path, sizeof path, "%s/kernel_tag%d.wasm", KILN_GUEST_DIR, tag);
    kiln_executable *x = NULL;
    kiln_cmdbuf *cb = NULL;
    kiln_status s = kiln_executable_load_file(l->f->pool, kiln_test_engine(), path, &x);
    if (!s) s = kiln_cmdbuf_create(l->f->pool, &cb);
    if (!s) s = dispatch(cb, x, "tag", 64, 1, 1, &b, 0, NULL);
    kiln_fence *fence = NULL;
    if (!s) s = kiln_cmdbuf_submit(cb, &fence);
    if (it % 2) {
      kiln_executable_release(x); /* the command buffer keeps it alive */
      x = NULL;
    }
    if (!s) s = kiln_fence_wait(fence);
    if (s) {
      fprintf(stderr, "  loader: %s\n", kiln_status_message(s));
      kiln_status_free(s);
      atomic_fetch_add(l->errors, 1);
    } else {
      for (int i = 0; i < 64; i++)
        if (o[i] != (uint32_t)tag * 1000 + (uint32_t)tag * (uint32_t)(i % 3 + 1)) {
          atomic_fetch_add(l->errors, 1);
          break;
        }
    }
    kiln_cmdbuf_release(cb);
    kiln_executable_release(x);
    atomic_fetch_add(l->loads, 1);
  }
  kiln_status_free(kiln_dmem_free(l->f->dm, out));
  return NULL;
}

static void test_load_unload_while_dispatching(kiln_test *t) {
  fixture f;
  if (!setup(t, &f, 0)) return;
  kiln_executable *x = load(t, &f, "kernels");
  if (!x) goto out;
  kiln_dmem_stats before, after;
  kiln_dmem_get_stats(f.dm, &before);
  atomic_int errors = 0, loads = 0;
  loader l[2] = {{&f, 60, &errors, &loads}, {&f, 60, &errors, &loads}};
  submitter s[2] = {{t, &f, x, 0, 300, &errors}, {t, &f, x, 1, 300, &errors}};
  pthread_t th[4];
  pthread_create(&th[0], NULL, load_unload_loop, &l[0]);
  pthread_create(&th[1], NULL, load_unload_loop, &l[1]);
  pthread_create(&th[2], NULL, submit_loop, &s[0]);
  pthread_create(&th[3], NULL, submit_loop, &s[1]);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  KILN_EXPECTF(t, errors == 0, "%d errors", (int)errors);
  KILN_EXPECT(t, loads == 120);
  /* Every unloaded module gave its region back. */
  kiln_dmem_get_stats(f.dm, &after);
  KILN_EXPECTF(t, after.allocations == before.allocations && after.used == before.used,
               "allocations %llu -> %llu", (unsigned long long)before.allocations,
               (unsigned long long)after.allocations);
out:
  kiln_executable_release(x);
  teardown(&f);
}

/* ---- GPU ops in command buffers --------------------------------------------------------- */

static void test_wasm_and_gpu_ops_share_buffers(kiln_test *t) {
  kiln_device *dev = NULL;
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cpu";
  kiln_status s = kiln_device_open(&o, &dev);
  if (s) {
    KILN_TEST_SKIP(t, "no cpu device: %s", kiln_status_message(s));
    kiln_status_free(s);
    return;
  }
  kiln_dmem *dm = NULL;
  kiln_pool *pool = NULL;
  kiln_executable *x = NULL;
  kiln_cmdbuf *cb = NULL;
  KILN_EXPECT_OK(t, kiln_dmem_create(NULL, &dm));
  KILN_EXPECT_OK(t, kiln_pool_create(dm, &(kiln_pool_options){.threads = 2, .device = dev}, &pool));
  if (!pool) goto out;
  char path[512];
  snprintf(path, sizeof path, "%s/kernels.wasm", KILN_GUEST_DIR);
  KILN_EXPECT_OK(t, kiln_executable_load_file(pool, kiln_test_engine(), path, &x));
  if (!x) goto out;
  enum { N = 4096 };
  kiln_memory *mem = kiln_dmem_memory(dm);
  uint64_t a, b, c;
  KILN_EXPECT_OK(t, kiln_dmem_alloc(dm, N * 4, 64, &a));
  KILN_EXPECT_OK(t, kiln_dmem_alloc(dm, N * 4, 64, &b));
  KILN_EXPECT_OK(t, kiln_dmem_alloc(dm, N * 4, 64, &c));
  float *pa = kiln_memory_range_or_null(mem, a, N * 4),
        *pb = kiln_memory_range_or_null(mem, b, N * 4),
        *pc = kiln_memory_range_or_null(mem, c, N * 4);
  for (int i = 0; i < N; i++) pa[i] = (float)i, pb[i] = 1.0f;
  KILN_EXPECT_OK(t, kiln_cmdbuf_create(pool, &cb));
  kiln_binding bind[3] = {{a, N * 4}, {b, N * 4}, {c, N * 4}};
  uint32_t push[2] = {N, 1024};
  int64_t shape[1] = {N};
  /* c = a + b (Wasm); b = 2 * c (GPU op, in place on the same bytes);
   * c = c * b (Wasm) = (i + 1) * 2 (i + 1). */
  KILN_EXPECT_OK(t, dispatch(cb, x, "add_f32", N / 1024, 1, 3, bind, 2, push));
  kiln_op scale = {.kind = KILN_OP_SCALE, .alpha = 2.0f,
                   .a = kiln_tensor_make(mem, c, KILN_DTYPE_F32, 1, shape),
                   .b = kiln_tensor_make(mem, b, KILN_DTYPE_F32, 1, shape)};
  KILN_EXPECT_OK(t, kiln_cmdbuf_barrier(cb));
  KILN_EXPECT_OK(t, kiln_cmdbuf_gpu(cb, &scale));
  KILN_EXPECT_OK(t, kiln_cmdbuf_barrier(cb));
  kiln_binding bind2[3] = {{c, N * 4}, {b, N * 4}, {c, N * 4}};
  KILN_EXPECT_OK(t, dispatch(cb, x, "mul_f32", N / 1024, 1, 3, bind2, 2, push));
  KILN_EXPECT_OK(t, kiln_cmdbuf_run(cb));
  int bad = 0;
  for (int i = 0; i < N; i++) bad += pc[i] != 2.0f * (float)(i + 1) * (float)(i + 1);
  KILN_EXPECTF(t, bad == 0, "%d wrong; c[3] = %g", bad, pc[3]);
  /* A GPU op that the device rejects is refused at record time. */
  kiln_op wrong = scale;
  wrong.b.shape[0] = N + 1;
  kiln_status rejected = kiln_cmdbuf_gpu(cb, &wrong);
  KILN_EXPECT(t, rejected != KILN_OK);
  kiln_status_free(rejected);
out:
  kiln_cmdbuf_release(cb);
  kiln_executable_release(x);
  kiln_pool_release(pool);
  kiln_dmem_release(dm);
  kiln_device_release(dev);
}

KILN_TEST_MAIN(test_dmem_alignment_free_reuse, test_dmem_fragmentation_and_growth,
               test_two_default_linked_modules_get_own_regions,
               test_non_pic_module_is_refused, test_each_worker_has_its_own_stack,
               test_trap_fails_command_buffer_and_pool_keeps_working,
               test_bindings_out_of_range_rejected_at_record,
               test_copy_fill_resubmit_without_allocating,
               test_eight_threads_submit_at_once, test_load_unload_while_dispatching,
               test_wasm_and_gpu_ops_share_buffers)
