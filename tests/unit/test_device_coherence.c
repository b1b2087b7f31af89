/* Placement and the RESIDENT coherence protocol on the cpu backend with
 * cpu_mirror (separate buffers, like a discrete GPU): exactly the bytes
 * that changed move, host writes are caught by write faults, results are
 * visible after sync, programs replay with new positions. */
#include <errno.h>
#include <unistd.h>
#include <stdlib.h>

#include "test_device_util.h"

enum { PAGE = 4096 };

static void stats(kiln_device *d, kiln_device_stats *s) {
  kiln_device_get_stats(d, s);
}

static void gemv_ref(const float *w, const float *x, float *y, int n, int k) {
  for (int i = 0; i < n; i++) {
    float s = 0;
    for (int j = 0; j < k; j++) s += x[j] * w[i * k + j];
    y[i] = s;
  }
}

static bool all_close(const float *a, const float *b, int n) {
  for (int i = 0; i < n; i++)
    if (!close_to(a[i], b[i], 1e-5)) return false;
  return true;
}

/* b[n] = alpha * a[n], f32, a and b at those offsets of m. */
static kiln_op scale_op(tmem *m, uint64_t a, uint64_t b, int64_t n,
                        float alpha) {
  kiln_op op = {.kind = KILN_OP_SCALE, .alpha = alpha};
  op.a = T1(m, a, KILN_DTYPE_F32, n);
  op.b = T1(m, b, KILN_DTYPE_F32, n);
  return op;
}

/* y = W x with W [64,64] at 0 (4 pages), x at 16 KiB, y at 20 KiB, all
 * RESIDENT, W and x random: the op and the host's pointers. */
typedef struct gemv_case {
  kiln_op op;
  float *w, *x, *y;
} gemv_case;

static gemv_case gemv_case_make(kiln_test *t, kiln_device *d, tmem *m) {
  const int n = 64;
  const uint64_t ow = 0, ox = 16384, oy = 20480;
  KILN_EXPECT_OK(t, kiln_device_place(d, m->m, ow, n * n * 4, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT_OK(t, kiln_device_place(d, m->m, ox, n * 4, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT_OK(t, kiln_device_place(d, m->m, oy, n * 4, KILN_PLACEMENT_RESIDENT));
  gemv_case g = {.op = {.kind = KILN_OP_GEMV, .alpha = 1},
                 .w = tf32(m, ow), .x = tf32(m, ox), .y = tf32(m, oy)};
  for (int i = 0; i < n * n; i++) g.w[i] = rnd_val();
  for (int i = 0; i < n; i++) g.x[i] = rnd_val();
  g.op.a = T2(m, ow, KILN_DTYPE_F32, n, n);
  g.op.b = T1(m, ox, KILN_DTYPE_F32, n);
  g.op.c = T1(m, oy, KILN_DTYPE_F32, n);
  return g;
}

/* The gemv_case: W goes up once, host writes are tracked. */
static void test_resident_weight_reused_and_host_writes_tracked(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int n = 64;
  const uint64_t ox = 16384;
  gemv_case g = gemv_case_make(t, d, &m);
  KILN_EXPECT(t, kiln_device_placement(d, m.m, ox + 100) == KILN_PLACEMENT_RESIDENT);
  KILN_EXPECT(t, kiln_device_placement(d, m.m, 24576) == KILN_PLACEMENT_MAPPED);
  uint64_t addr = 0;
  KILN_EXPECT_OK(t, kiln_device_address(d, m.m, ox, &addr));
  KILN_EXPECT(t, addr != (uint64_t)(uintptr_t)tptr(&m, ox)); /* a device copy */
  KILN_EXPECT_OK(t, kiln_device_address(d, m.m, 30000, &addr));
  KILN_EXPECT(t, addr == (uint64_t)(uintptr_t)tptr(&m, 30000)); /* mapped */
  float *w = g.w, *x = g.x, *y = g.y, want[64];
  const kiln_op op = g.op;
  kiln_transfer_report up, down;
  kiln_device_stats s;

  /* Step 1: everything goes up once (W and x: whole pages), y comes back. */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECTF(t, up.bytes_to_device == 16384 + PAGE, "up %llu",
               (unsigned long long)up.bytes_to_device);
  KILN_EXPECTF(t, down.bytes_to_host == (uint64_t)n * 4, "down %llu",
               (unsigned long long)down.bytes_to_host);
  gemv_ref(w, x, want, n, n);
  KILN_EXPECT(t, all_close(y, want, n));
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == 0);
  KILN_EXPECT(t, s.resident_bytes == 16384 + 2 * PAGE);

  /* Step 2: the guest changes one element of x: one fault, one page up;
   * W is reused from the device. */
  x[5] = 3.5f;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == 1);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECTF(t, up.bytes_to_device == PAGE, "up %llu",
               (unsigned long long)up.bytes_to_device);
  KILN_EXPECT(t, down.bytes_to_host == (uint64_t)n * 4);
  gemv_ref(w, x, want, n, n);
  KILN_EXPECT(t, all_close(y, want, n));

  /* Step 3: several stores to the same page fault once. It is the page's
   * second fault since it was protected, so the page turns hot: it stays
   * writable from now on and goes up (whole, once per submit) whenever an
   * op reads it, with no more faults. */
  x[0] = -1, x[63] = 2, x[7] = 0.5f;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == 2);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECTF(t, up.bytes_to_device == PAGE, "s3 up %llu",
               (unsigned long long)up.bytes_to_device);
  /* Step 4: W did not change and stays on the device; hot x is sent. */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECTF(t, up.bytes_to_device == PAGE, "s4 up %llu",
               (unsigned long long)up.bytes_to_device);
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECT(t, down.bytes_to_host == (uint64_t)n * 4); /* y written twice, copied once */
  gemv_ref(w, x, want, n, n);
  KILN_EXPECT(t, all_close(y, want, n));

  /* Step 5: a weight update by the host goes up (one page of W), with x. */
  w[64 * 20 + 3] = 7;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECTF(t, up.bytes_to_device == 2 * PAGE, "s5 up %llu",
               (unsigned long long)up.bytes_to_device);
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  gemv_ref(w, x, want, n, n);
  KILN_EXPECT(t, all_close(y, want, n));

  /* x's page is hot, so a store to it does not fault; nor does one to y's
   * page, which the device never read: it stays host-owned (dirty,
   * writable). W's page is clean and protected again: a store faults. */
  stats(d, &s);
  uint64_t faults = s.write_faults;
  y[0] = 42;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == faults);
  x[9] = 1;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == faults);
  w[5] = 1;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == faults + 1);
  KILN_EXPECT(t, s.bytes_to_device == 16384 + 6 * PAGE);
  KILN_EXPECT(t, s.ops == 5 && s.syncs == 4);
  kiln_device_release(d);
  /* No protection is left behind: stores work with no device. */
  for (int i = 0; i < n * n; i++) w[i] = 1;
  x[1] = y[1] = 1;
  kiln_memory_release(m.m);
}

/* A hot page cools: once the host stops writing it, it goes up for at
 * most 64 more submits (the cooling period), then is clean and protected
 * (a store faults again); a page still written every step turns hot again
 * after cooling. */
static void test_hot_page_cools(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int n = 64;
  gemv_case g = gemv_case_make(t, d, &m);
  float *w = g.w, *x = g.x, *y = g.y, want[64];
  const kiln_op op = g.op;
  kiln_transfer_report up;
  kiln_device_stats s;
  /* x turns hot: written after two protections. */
  for (int i = 0; i < 3; i++) {
    if (i) x[i] = (float)i;
    KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  }
  stats(d, &s);
  KILN_EXPECTF(t, s.write_faults == 2, "faults %llu",
               (unsigned long long)s.write_faults);
  /* The host stops writing x: it goes up with each submit until it cools,
   * then never. */
  int sent = 0, last_sent = -1;
  for (int i = 0; i < 150; i++) {
    KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
    if (up.bytes_to_device) sent++, last_sent = i;
    KILN_EXPECTF(t, up.bytes_to_device == 0 || up.bytes_to_device == PAGE,
                 "submit %d: up %llu", i, (unsigned long long)up.bytes_to_device);
  }
  KILN_EXPECTF(t, sent >= 1 && sent <= 65 && last_sent < 100,
               "x went up %d times, last at submit %d", sent, last_sent);
  /* Cool x is protected: a store faults, and goes up once. */
  stats(d, &s);
  const uint64_t faults = s.write_faults;
  x[5] = 9.0f;
  stats(d, &s);
  KILN_EXPECTF(t, s.write_faults == faults + 1, "faults %llu, want %llu",
               (unsigned long long)s.write_faults,
               (unsigned long long)faults + 1);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  KILN_EXPECTF(t, up.bytes_to_device == PAGE, "up %llu",
               (unsigned long long)up.bytes_to_device);
  gemv_ref(w, x, want, n, n);
  KILN_EXPECT(t, all_close(y, want, n));
  /* Written every step across cooling periods: right each step, and hot
   * again after two faults a period. */
  stats(d, &s);
  const uint64_t before = s.write_faults;
  for (int i = 0; i < 200; i++) {
    x[i % n] = (float)i;
    KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
    KILN_EXPECTF(t, up.bytes_to_device == PAGE, "step %d: up %llu", i,
                 (unsigned long long)up.bytes_to_device);
    gemv_ref(w, x, want, n, n);
    if (!all_close(y, want, n)) {
      KILN_EXPECTF(t, false, "step %d: y wrong", i);
      break;
    }
  }
  stats(d, &s);
  KILN_EXPECTF(t, s.write_faults - before <= 12, "%llu faults in 200 steps",
               (unsigned long long)(s.write_faults - before));
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

static void test_kv_append_moves_exactly_the_rows(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int cap = 16, dim = 64;
  uint64_t ocache = 0, orow = 8192, oi = 12288;
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, ocache, cap * dim * 4, KILN_PLACEMENT_RESIDENT));
  memset(tptr(&m, ocache), 0, cap * dim * 4);
  kiln_op op = {.kind = KILN_OP_COPY};
  op.a = T2(&m, orow, KILN_DTYPE_F32, 1, dim);
  op.b = T2(&m, ocache, KILN_DTYPE_F32, cap, dim);
  op.index = T1(&m, oi, KILN_DTYPE_I32, 1);
  for (int p = 0; p < 5; p++) {
    for (int j = 0; j < dim; j++) tf32(&m, orow)[j] = (float)(p * 100 + j);
    *(int32_t *)tptr(&m, oi) = p;
    kiln_transfer_report up, down;
    KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
    /* The cache is only written: nothing goes up; one row comes back. */
    KILN_EXPECT(t, up.bytes_to_device == 0);
    KILN_EXPECTF(t, down.bytes_to_host == (uint64_t)dim * 4, "p=%d: down %llu", p,
                 (unsigned long long)down.bytes_to_host);
  }
  int bad = 0;
  for (int r = 0; r < cap; r++)
    for (int j = 0; j < dim; j++)
      if (tf32(&m, ocache)[r * dim + j] != (r < 5 ? (float)(r * 100 + j) : 0)) bad++;
  KILN_EXPECT(t, !bad);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* A strided output writes rows with gaps; the host's bytes in the gaps
 * (written between ops) survive the copy back. */
static void test_strided_output_keeps_host_bytes_in_gaps(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  uint64_t ob = 0, oa = 8192;
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, ob, PAGE, KILN_PLACEMENT_RESIDENT));
  float *b = tf32(&m, ob), *a = tf32(&m, oa);
  for (int i = 0; i < 32; i++) b[i] = -1;
  for (int i = 0; i < 16; i++) a[i] = (float)i;
  kiln_op warm = {.kind = KILN_OP_SCALE, .alpha = 1}; /* uploads b's page */
  warm.a = T1(&m, ob, KILN_DTYPE_F32, 32);
  warm.b = T1(&m, oa + 1024, KILN_DTYPE_F32, 32);
  RUN(t, d, warm);
  kiln_op op = {.kind = KILN_OP_COPY};
  op.a = T2(&m, oa, KILN_DTYPE_F32, 4, 4);
  op.b = T2(&m, ob, KILN_DTYPE_F32, 4, 4);
  op.b.stride[0] = 8, op.b.stride[1] = 1;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  for (int r = 0; r < 4; r++) b[r * 8 + 5] = 99; /* host writes into the gaps */
  kiln_transfer_report down;
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECT(t, down.bytes_to_host == 4 * 4 * 4);
  int bad = 0;
  for (int r = 0; r < 4; r++)
    for (int j = 0; j < 8; j++) {
      float want = j < 4 ? (float)(r * 4 + j) : j == 5 ? 99 : -1;
      if (b[r * 8 + j] != want) bad++;
    }
  KILN_EXPECT(t, !bad);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

static void test_grow_while_attached(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  kiln_device_stats s;
  stats(d, &s);
  KILN_EXPECT(t, s.mapped_bytes == KILN_WASM_PAGE_SIZE);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, PAGE, KILN_PLACEMENT_RESIDENT));
  for (int i = 0; i < 16; i++) tf32(&m, 0)[i] = (float)i;
  uint64_t old = 0;
  KILN_EXPECT_OK(t, kiln_memory_grow(m.m, 2, &old));
  KILN_EXPECT(t, old == 1);
  stats(d, &s);
  KILN_EXPECT(t, s.mapped_bytes == 3 * KILN_WASM_PAGE_SIZE);
  /* An op from the resident page into the new pages, and a resident range
   * placed in them. */
  uint64_t o2 = 2 * KILN_WASM_PAGE_SIZE + 64;
  kiln_op op = scale_op(&m, 0, o2, 16, 3);
  RUN(t, d, op);
  KILN_EXPECT(t, tf32(&m, o2)[15] == 45);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, KILN_WASM_PAGE_SIZE, PAGE,
                                      KILN_PLACEMENT_RESIDENT));
  op.a = T1(&m, o2, KILN_DTYPE_F32, 16);
  op.b = T1(&m, KILN_WASM_PAGE_SIZE, KILN_DTYPE_F32, 16);
  RUN(t, d, op);
  KILN_EXPECT(t, tf32(&m, KILN_WASM_PAGE_SIZE)[15] == 135);
  kiln_device_detach(d, m.m);
  stats(d, &s);
  KILN_EXPECT(t, s.mapped_bytes == 0 && s.resident_bytes == 0);
  KILN_EXPECT(t, kiln_device_placement(d, m.m, 0) == KILN_PLACEMENT_NONE);
  /* After detach: no protection, no subscription. */
  tf32(&m, 0)[0] = 1;
  tf32(&m, KILN_WASM_PAGE_SIZE)[0] = 1;
  KILN_EXPECT_OK(t, kiln_memory_grow(m.m, 1, NULL));
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

static void test_place_mapped_ends_residency_after_copy_back(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, 100, KILN_PLACEMENT_RESIDENT));
  /* Same range again: harmless; overlapping: refused. */
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, PAGE, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_device_place(d, m.m, 100, PAGE, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_device_place(d, m.m, UINT64_MAX - 10, 100, KILN_PLACEMENT_RESIDENT));
  for (int i = 0; i < 8; i++) tf32(&m, 8192)[i] = (float)i;
  kiln_op op = scale_op(&m, 8192, 0, 8, 2);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, PAGE, KILN_PLACEMENT_MAPPED));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, 0) == KILN_PLACEMENT_MAPPED);
  KILN_EXPECT(t, tf32(&m, 0)[7] == 14);
  tf32(&m, 0)[0] = 5; /* writable, no fault */
  kiln_device_stats s;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == 0 && s.resident_bytes == 0);
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

static void test_resident_without_mirror_is_bookkeeping(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem m = tmem_new(t, d, 1);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, PAGE, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, 0) == KILN_PLACEMENT_RESIDENT);
  uint64_t addr = 0;
  KILN_EXPECT_OK(t, kiln_device_address(d, m.m, 12, &addr));
  KILN_EXPECT(t, addr == (uint64_t)(uintptr_t)tptr(&m, 12));
  for (int i = 0; i < 8; i++) tf32(&m, 0)[i] = (float)i;
  kiln_op op = scale_op(&m, 0, 64, 8, 2);
  kiln_transfer_report up, down;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECT(t, up.bytes_to_device == 0 && down.bytes_to_host == 0);
  KILN_EXPECT(t, tf32(&m, 64)[7] == 14);
  tf32(&m, 0)[0] = 1;
  kiln_device_stats s;
  stats(d, &s);
  KILN_EXPECT(t, s.write_faults == 0 && s.resident_bytes == 0);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_device_address(d, m.m, 1 << 20, &addr));
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* ---- Programs -------------------------------------------------------------------
 * One decode step: rope q and k at the position in `index`, append k and v
 * to the caches, attend, project with a resident weight. Replayed with a
 * new position and new q/k/v each step, compared bit for bit with the same
 * ops submitted one by one on a plain cpu device. */

enum { H = 2, D = 16, CAP = 8, OUTN = 8 };
typedef struct layout {
  uint64_t q, k, v, kc, vc, out, w, y, freq, idx;
} layout;

static layout make_layout(void) {
  layout l;
  l.kc = 0;                 /* CAP*H*D*4 = 1 KiB: page 0 */
  l.vc = PAGE;              /* page 1 */
  l.w = 2 * PAGE;           /* OUTN x H*D f32 = 1 KiB: page 2 */
  l.q = 3 * PAGE;           /* page 3: q */
  l.k = 4 * PAGE, l.v = 4 * PAGE + 512, l.freq = 4 * PAGE + 1024,
  l.idx = 4 * PAGE + 2048;  /* page 4: mapped */
  l.out = 5 * PAGE, l.y = 6 * PAGE;
  return l;
}

static void step_ops(tmem *m, const layout *l, kiln_op ops[6]) {
  kiln_tensor idx = T1(m, l->idx, KILN_DTYPE_I32, 1);
  memset(ops, 0, 6 * sizeof *ops);
  ops[0] = (kiln_op){.kind = KILN_OP_ROPE, .index = idx};
  ops[0].a = ops[0].b = T3(m, l->q, KILN_DTYPE_F32, 1, H, D);
  ops[0].c = T1(m, l->freq, KILN_DTYPE_F32, D / 2);
  ops[1] = ops[0];
  ops[1].a = ops[1].b = T3(m, l->k, KILN_DTYPE_F32, 1, H, D);
  ops[2] = (kiln_op){.kind = KILN_OP_COPY, .index = idx};
  ops[2].a = T3(m, l->k, KILN_DTYPE_F32, 1, H, D);
  ops[2].b = T3(m, l->kc, KILN_DTYPE_F32, CAP, H, D);
  ops[3] = ops[2];
  ops[3].a = T3(m, l->v, KILN_DTYPE_F32, 1, H, D);
  ops[3].b = T3(m, l->vc, KILN_DTYPE_F32, CAP, H, D);
  ops[4] = (kiln_op){.kind = KILN_OP_ATTENTION, .alpha = 0.25f, .index = idx};
  ops[4].a = T3(m, l->q, KILN_DTYPE_F32, 1, H, D);
  ops[4].b = T3(m, l->kc, KILN_DTYPE_F32, CAP, H, D);
  ops[4].c = T3(m, l->vc, KILN_DTYPE_F32, CAP, H, D);
  ops[4].d = T3(m, l->out, KILN_DTYPE_F32, 1, H, D);
  ops[5] = (kiln_op){.kind = KILN_OP_GEMV, .alpha = 1};
  ops[5].a = T2(m, l->w, KILN_DTYPE_F32, OUTN, H * D);
  ops[5].b = T1(m, l->out, KILN_DTYPE_F32, H * D);
  ops[5].c = T1(m, l->y, KILN_DTYPE_F32, OUTN);
}

static void test_program_replay_matches_individual_submits(kiln_test *t) {
  kiln_device *dp = open_cpu(t, 2, true);  /* program, mirror, graphs */
  kiln_device *di = open_cpu(t, 3, false); /* individual ops, in place */
  tmem mp = tmem_new(t, dp, 1), mi = tmem_new(t, di, 1);
  layout l = make_layout();
  uint64_t res[] = {l.kc, l.vc, l.w, l.q, l.out, l.y};
  for (size_t i = 0; i < sizeof res / sizeof res[0]; i++)
    KILN_EXPECT_OK(t, kiln_device_place(dp, mp.m, res[i], PAGE, KILN_PLACEMENT_RESIDENT));
  float w[OUTN * H * D], freq[D / 2];
  for (int i = 0; i < OUTN * H * D; i++) w[i] = rnd_val();
  for (int i = 0; i < D / 2; i++) freq[i] = powf(10000.f, -2.f * i / D);
  tmem *both[2] = {&mp, &mi};
  for (int b = 0; b < 2; b++) {
    memset(tptr(both[b], 0), 0, 7 * PAGE);
    memcpy(tptr(both[b], l.w), w, sizeof w);
    memcpy(tptr(both[b], l.freq), freq, sizeof freq);
  }
  kiln_op ops[6], opsi[6];
  step_ops(&mp, &l, ops);
  step_ops(&mi, &l, opsi);
  kiln_program *p = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(dp, &p));
  for (int i = 0; i < 6; i++) KILN_EXPECT_OK(t, kiln_program_add(p, &ops[i]));
  KILN_EXPECT(t, kiln_program_op_count(p) == 6);
  /* A bad op is refused at add time. */
  kiln_op bad = ops[5];
  bad.c.offset = 1 << 20;
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE, kiln_program_add(p, &bad));
  for (int pos = 0; pos < 6; pos++) {
    float q[H * D], k[H * D], v[H * D];
    for (int i = 0; i < H * D; i++) q[i] = rnd_val(), k[i] = rnd_val(), v[i] = rnd_val();
    for (int b = 0; b < 2; b++) {
      memcpy(tptr(both[b], l.q), q, sizeof q);
      memcpy(tptr(both[b], l.k), k, sizeof k);
      memcpy(tptr(both[b], l.v), v, sizeof v);
      *(int32_t *)tptr(both[b], l.idx) = pos;
    }
    kiln_transfer_report up;
    KILN_EXPECT_OK(t, kiln_device_submit_program(dp, p, &up));
    /* Only q's page changed among the resident ranges (plus, on the first
     * step, every page read for the first time): whole, by its fault at
     * first, then as a hot page, once per submit. */
    uint64_t want_up = PAGE;
    if (pos > 0)
      KILN_EXPECTF(t, up.bytes_to_device == want_up, "pos %d: up %llu", pos,
                   (unsigned long long)up.bytes_to_device);
    KILN_EXPECT_OK(t, kiln_device_sync(dp, NULL));
    for (int i = 0; i < 6; i++) KILN_EXPECT_OK(t, kiln_device_submit(di, &opsi[i], NULL));
    KILN_EXPECT_OK(t, kiln_device_sync(di, NULL));
    KILN_EXPECTF(t, memcmp(tptr(&mp, l.y), tptr(&mi, l.y), OUTN * 4) == 0,
                 "pos %d: y differs", pos);
    KILN_EXPECTF(t, memcmp(tptr(&mp, l.kc), tptr(&mi, l.kc), CAP * H * D * 4) == 0,
                 "pos %d: k cache differs", pos);
    KILN_EXPECTF(t, memcmp(tptr(&mp, l.out), tptr(&mi, l.out), H * D * 4) == 0,
                 "pos %d: attention differs", pos);
  }
  kiln_device_stats s;
  stats(dp, &s);
  KILN_EXPECT(t, s.ops == 36);
  /* After detach the program's memory no longer resolves; releasing it is
   * fine, and the pages are writable without faults. */
  kiln_device_detach(dp, mp.m);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_device_submit_program(dp, p, NULL));
  uint64_t faults = s.write_faults;
  for (size_t i = 0; i < sizeof res / sizeof res[0]; i++) tf32(&mp, res[i])[3] = 1;
  stats(dp, &s);
  KILN_EXPECT(t, s.write_faults == faults);
  kiln_program_release(p);
  kiln_device_release(dp);
  kiln_device_release(di);
  kiln_memory_release(mp.m);
  kiln_memory_release(mi.m);
}

/* A program with a COPY whose index sits in a page the device writes:
 * the runtime cannot know the row on the host and must copy back the whole
 * cache, and still get the right answer. */
static void test_device_written_index(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, 0, 2 * PAGE, KILN_PLACEMENT_RESIDENT));
  uint64_t ocache = 0, oidx = PAGE, osrc = PAGE + 64, orow = 8 * PAGE;
  memset(tptr(&m, 0), 0, 2 * PAGE);
  *(int32_t *)tptr(&m, osrc) = 3;
  for (int j = 0; j < 4; j++) tf32(&m, orow)[j] = (float)(j + 1);
  kiln_op cp = {.kind = KILN_OP_COPY};
  cp.a = T1(&m, osrc, KILN_DTYPE_I32, 1);
  cp.b = T1(&m, oidx, KILN_DTYPE_I32, 1); /* the device writes index = 3 */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &cp, NULL));
  kiln_op app = {.kind = KILN_OP_COPY};
  app.a = T2(&m, orow, KILN_DTYPE_F32, 1, 4);
  app.b = T2(&m, ocache, KILN_DTYPE_F32, 8, 4);
  app.index = T1(&m, oidx, KILN_DTYPE_I32, 1);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &app, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  int bad = 0;
  for (int r = 0; r < 8; r++)
    for (int j = 0; j < 4; j++)
      if (tf32(&m, ocache)[r * 4 + j] != (r == 3 ? (float)(j + 1) : 0)) bad++;
  KILN_EXPECT(t, !bad);
  KILN_EXPECT(t, *(int32_t *)tptr(&m, oidx) == 3);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* A weights file whose data section starts at an odd place (safetensors:
 * 8 + header bytes): attach_aligned puts that byte on a 256-byte boundary
 * of the device copy, and ops on tensors there still read the right bytes. */
static void test_attach_aligned_file(kiln_test *t) {
  char path[] = "/tmp/kiln-aligned-XXXXXX";
  int fd = mkstemp(path);
  KILN_EXPECT(t, fd >= 0);
  if (fd < 0) return;
  const uint64_t data = 8 + 100;          /* where the tensors begin */
  const int64_t n = 1000;
  uint8_t *bytes = calloc(1, data + (uint64_t)n * 4);
  float *w = (float *)(bytes + data);      /* unaligned on purpose: memcpy */
  for (int64_t i = 0; i < n; i++) {
    float v = (float)(i % 13) - 6.0f;
    memcpy(&w[i], &v, 4);
  }
  KILN_EXPECT(t, write(fd, bytes, data + (uint64_t)n * 4) ==
                     (ssize_t)(data + (uint64_t)n * 4));
  close(fd);
  kiln_memory *file = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &file));
  unlink(path);
  kiln_device *d = open_cpu(t, 2, true);
  KILN_EXPECT_OK(t, kiln_device_attach_aligned(d, file, data));
  uint64_t addr = 0;
  KILN_EXPECT_OK(t, kiln_device_address(d, file, data, &addr));
  KILN_EXPECTF(t, addr % 256 == 0, "device address of the data 0x%llx",
               (unsigned long long)addr);
  tmem m = tmem_new(t, d, 1);
  uint64_t out = tmem_alloc(&m, (uint64_t)n * 4, 64);
  kiln_op op = {.kind = KILN_OP_SCALE, .alpha = 2.0f};
  op.a = kiln_tensor_make(file, data, KILN_DTYPE_F32, 1, &n);
  op.b = kiln_tensor_make(m.m, out, KILN_DTYPE_F32, 1, &n);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  int bad = 0;
  for (int64_t i = 0; i < n; i++)
    bad += tf32(&m, out)[i] != 2.0f * ((float)(i % 13) - 6.0f);
  KILN_EXPECTF(t, bad == 0, "%d wrong", bad);
  kiln_device_release(d);
  kiln_memory_release(m.m);
  kiln_memory_release(file);
  free(bytes);
}

/* Small RESIDENT ranges (at most resident_eager_max bytes) are not
 * write-protected: host stores take no fault, and every op that reads the
 * range sends exactly the bytes it reads. */
static void test_small_resident_range_is_sent_eagerly(kiln_test *t) {
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cpu";
  o.cpu_mirror = true;
  o.resident_eager_max = 64 * 1024;
  kiln_device *d = NULL;
  KILN_EXPECT_OK(t, kiln_device_open(&o, &d));
  if (!d) return;
  tmem m = tmem_new(t, d, 1);
  const int64_t n = 1024;
  uint64_t x = tmem_alloc(&m, 4096, 4096), y = tmem_alloc(&m, 4096, 4096);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, x, 8192, KILN_PLACEMENT_RESIDENT));
  kiln_op op = scale_op(&m, x, y, n, 3.0f);
  for (int step = 0; step < 3; step++) {
    for (int64_t i = 0; i < n; i++) tf32(&m, x)[i] = (float)(i + step);
    kiln_transfer_report up, down;
    KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
    KILN_EXPECT(t, up.bytes_to_device == (uint64_t)n * 4);
    KILN_EXPECT(t, down.bytes_to_host == (uint64_t)n * 4);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += tf32(&m, y)[i] != 3.0f * (float)(i + step);
    KILN_EXPECTF(t, bad == 0, "step %d: %d wrong", step, bad);
  }
  kiln_device_stats st;
  kiln_device_get_stats(d, &st);
  KILN_EXPECT(t, st.write_faults == 0);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* Host writes to scattered pages of a long RESIDENT range (at and around
 * the 64-page words of the dirty bitmap, which the scan before an op skips
 * a word at a time): exactly the written pages go up, for an op over the
 * whole range and for one over a part that starts and ends inside words. */
static void test_scattered_host_writes_in_a_long_range(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  if (!d) return;
  const uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE), npages = 300;
  const int64_t n = (int64_t)(npages * ps / 4);
  tmem m = tmem_new(t, d, (2 * npages * ps + 65535) / 65536 + 1);
  uint64_t a = tmem_alloc(&m, npages * ps, ps), b = tmem_alloc(&m, npages * ps, ps);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, npages * ps, KILN_PLACEMENT_RESIDENT));
  float *x = tf32(&m, a);
  for (int64_t i = 0; i < n; i++) x[i] = (float)(i % 1000);
  kiln_op op = scale_op(&m, a, b, n, 2.0f);
  kiln_transfer_report up, down;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));   /* all of it, once */
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECT(t, up.bytes_to_device == npages * ps);
  static const uint64_t pages[] = {0, 62, 63, 64, 65, 127, 128, 200, 299};
  const uint64_t per_page = ps / 4;
  for (size_t k = 0; k < sizeof pages / sizeof pages[0]; k++)
    x[pages[k] * per_page + 7] = -1.0f - (float)k;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECTF(t, up.bytes_to_device == 9 * ps, "up %llu bytes, want 9 pages",
               (unsigned long long)up.bytes_to_device);
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, b)[i] != 2.0f * x[i];
  KILN_EXPECTF(t, bad == 0, "%d wrong after scattered writes", bad);

  /* An op over pages 70..249 (inside words at both ends): of the pages
   * written next (69, 70, 130, 249, 250) the three inside go up. */
  const int64_t part = (int64_t)(180 * per_page);
  kiln_op op2 = op;
  op2.a = kiln_tensor_make(m.m, a + 70 * ps, KILN_DTYPE_F32, 1, &part);
  op2.b = kiln_tensor_make(m.m, b + 70 * ps, KILN_DTYPE_F32, 1, &part);
  static const uint64_t more[] = {69, 70, 130, 249, 250};
  for (size_t k = 0; k < sizeof more / sizeof more[0]; k++)
    x[more[k] * per_page + 3] = 100.0f + (float)k;
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op2, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECTF(t, up.bytes_to_device == 3 * ps, "up %llu bytes, want 3 pages",
               (unsigned long long)up.bytes_to_device);
  bad = 0;
  for (int64_t i = 70 * (int64_t)per_page; i < 250 * (int64_t)per_page; i++)
    bad += tf32(&m, b)[i] != 2.0f * x[i];
  KILN_EXPECTF(t, bad == 0, "%d wrong in the part", bad);
  /* The two outside pages are still dirty: the whole-range op takes them. */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, &up));
  KILN_EXPECT_OK(t, kiln_device_sync(d, &down));
  KILN_EXPECTF(t, up.bytes_to_device == 2 * ps, "up %llu bytes, want 2 pages",
               (unsigned long long)up.bytes_to_device);
  bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, b)[i] != 2.0f * x[i];
  KILN_EXPECTF(t, bad == 0, "%d wrong at the end", bad);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* A system call that writes into a write-protected RESIDENT page gets
 * EFAULT from the kernel; kiln_memory_prepare_write (what WASI's fd_read
 * does first) makes it fault in user space instead, so the read lands and
 * the device sees the new bytes. */
static void test_syscall_writes_into_resident_pages(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int64_t n = 1024;
  uint64_t x = tmem_alloc(&m, 4096, 4096), y = tmem_alloc(&m, 4096, 4096);
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, x, 4096, KILN_PLACEMENT_RESIDENT));
  for (int64_t i = 0; i < n; i++) tf32(&m, x)[i] = 1.0f;
  kiln_op op = scale_op(&m, x, y, n, 2.0f);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL)); /* x: clean, protected */
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  int fds[2];
  KILN_EXPECT(t, pipe(fds) == 0);
  float v[4] = {5, 6, 7, 8};
  KILN_EXPECT(t, write(fds[1], v, sizeof v) == (ssize_t)sizeof v);
  errno = 0;
  KILN_EXPECT(t, read(fds[0], tf32(&m, x), sizeof v) == -1 && errno == EFAULT);
  kiln_memory_prepare_write(m.m, tf32(&m, x), sizeof v);
  KILN_EXPECT(t, read(fds[0], tf32(&m, x), sizeof v) == (ssize_t)sizeof v);
  close(fds[0]);
  close(fds[1]);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  KILN_EXPECT(t, tf32(&m, y)[0] == 10.0f && tf32(&m, y)[3] == 16.0f &&
                     tf32(&m, y)[4] == 2.0f);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* A program keeps its validated ops between submits, and resolves them
 * again when a placement changes: replays stay right across MAPPED ->
 * RESIDENT -> MAPPED of its input. */
static void test_program_follows_placement_changes(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int64_t n = 512;
  uint64_t x = tmem_alloc(&m, 4096, 4096), y = tmem_alloc(&m, 4096, 4096);
  kiln_op op = scale_op(&m, x, y, n, 3.0f);
  kiln_program *p = NULL;
  KILN_EXPECT_OK(t, kiln_program_create(d, &p));
  KILN_EXPECT_OK(t, kiln_program_add(p, &op));
  static const kiln_placement order[] = {
      KILN_PLACEMENT_MAPPED, KILN_PLACEMENT_MAPPED, KILN_PLACEMENT_RESIDENT,
      KILN_PLACEMENT_RESIDENT, KILN_PLACEMENT_MAPPED};
  for (int step = 0; step < 5; step++) {
    if (step == 0 || order[step] != order[step - 1])
      KILN_EXPECT_OK(t, kiln_device_place(d, m.m, x, 4096, order[step]));
    for (int64_t i = 0; i < n; i++) tf32(&m, x)[i] = (float)(i + step);
    kiln_transfer_report up;
    KILN_EXPECT_OK(t, kiln_device_submit_program(d, p, &up));
    KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
    /* Resolved again: a RESIDENT x goes up (its page, written by the
     * host), a MAPPED one is read in place. */
    uint64_t want = order[step] == KILN_PLACEMENT_RESIDENT ? 4096 : 0;
    KILN_EXPECTF(t, up.bytes_to_device == want, "step %d: up %llu", step,
                 (unsigned long long)up.bytes_to_device);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += tf32(&m, y)[i] != 3.0f * (float)(i + step);
    KILN_EXPECTF(t, bad == 0, "step %d (%s): %d wrong", step,
                 kiln_placement_name(order[step]), bad);
  }
  kiln_program_release(p);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* DEVICE: the device copy starts as the host's bytes; ops read and write
 * it there; a sync copies nothing back and host writes do not reach it;
 * placing the range MAPPED brings the device's bytes back. */
static void test_device_range_stays_on_the_device(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int64_t n = 256;
  uint64_t a = tmem_alloc(&m, PAGE, PAGE), b = tmem_alloc(&m, PAGE, PAGE);
  uint64_t c = tmem_alloc(&m, PAGE, PAGE);
  for (int64_t i = 0; i < n; i++) tf32(&m, a)[i] = (float)i;
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, 2 * PAGE, KILN_PLACEMENT_DEVICE));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, a) == KILN_PLACEMENT_DEVICE);
  KILN_EXPECT(t, kiln_device_placement(d, m.m, b + PAGE - 1) == KILN_PLACEMENT_DEVICE);
  KILN_EXPECT(t, kiln_device_placement(d, m.m, c) == KILN_PLACEMENT_MAPPED);
  kiln_device_stats s0, s1;
  stats(d, &s0);
  KILN_EXPECT(t, s0.resident_bytes == 2 * PAGE && s0.bytes_to_device == 2 * PAGE);
  /* b = 2a on the device; nothing comes back at sync. */
  kiln_op op = scale_op(&m, a, b, n, 2);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  stats(d, &s1);
  KILN_EXPECT(t, s1.bytes_to_host == s0.bytes_to_host);
  KILN_EXPECT(t, tf32(&m, b)[5] == 0.0f);
  /* Host writes into the range stay on the host (no fault, no upload):
   * c = 3b reads the device's b. */
  tf32(&m, a)[5] = 1000;
  tf32(&m, b)[5] = 1000;
  op = scale_op(&m, b, c, n, 3);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  stats(d, &s1);
  KILN_EXPECT(t, s1.write_faults == 0 && s1.bytes_to_device == s0.bytes_to_device);
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, c)[i] != 6.0f * (float)i;
  KILN_EXPECTF(t, bad == 0, "c = 3b from the device's b: %d wrong", bad);
  /* An operand across the edge of the range is refused. */
  op = scale_op(&m, b + PAGE - 8, c, 4, 1);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_device_submit(d, &op, NULL));
  /* Overlapping it with another range is refused; the same range again is
   * harmless. */
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_device_place(d, m.m, b, 2 * PAGE, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_device_place(d, m.m, b, PAGE, KILN_PLACEMENT_DEVICE));
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, 2 * PAGE, KILN_PLACEMENT_DEVICE));
  /* MAPPED again: the device's bytes come back, over the host's writes. */
  op = scale_op(&m, a, a, n, -1);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, 2 * PAGE, KILN_PLACEMENT_MAPPED));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, a) == KILN_PLACEMENT_MAPPED);
  bad = 0;
  for (int64_t i = 0; i < n; i++)
    bad += tf32(&m, a)[i] != -(float)i || tf32(&m, b)[i] != 2.0f * (float)i;
  KILN_EXPECTF(t, bad == 0, "brought back: %d wrong", bad);
  stats(d, &s1);
  KILN_EXPECT(t, s1.resident_bytes == 0);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

/* The same range RESIDENT -> DEVICE -> RESIDENT keeps its bytes, including
 * what ops wrote that no sync has copied back yet; detaching or releasing
 * the device brings a DEVICE range back. */
static void test_device_range_changes_and_ends_without_loss(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem m = tmem_new(t, d, 1);
  const int64_t n = 256;
  uint64_t a = tmem_alloc(&m, PAGE, PAGE), b = tmem_alloc(&m, PAGE, PAGE);
  for (int64_t i = 0; i < n; i++) tf32(&m, a)[i] = (float)i;
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, PAGE, KILN_PLACEMENT_RESIDENT));
  kiln_op op = scale_op(&m, a, a, n, 2);   /* a = 2i, not synced */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, PAGE, KILN_PLACEMENT_DEVICE));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, a) == KILN_PLACEMENT_DEVICE);
  op = scale_op(&m, a, a, n, 3);           /* a = 6i on the device */
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  KILN_EXPECT(t, tf32(&m, a)[7] == 14.0f);  /* stale: the first result */
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, PAGE, KILN_PLACEMENT_RESIDENT));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, a) == KILN_PLACEMENT_RESIDENT);
  int bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, a)[i] != 6.0f * (float)i;
  KILN_EXPECTF(t, bad == 0, "RESIDENT -> DEVICE -> RESIDENT: %d wrong", bad);
  /* b DEVICE, written, then the memory detached: its bytes come back. */
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, b, PAGE, KILN_PLACEMENT_DEVICE));
  op = scale_op(&m, a, b, n, 0.5f);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  kiln_device_detach(d, m.m);
  bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, b)[i] != 3.0f * (float)i;
  KILN_EXPECTF(t, bad == 0, "after detach: %d wrong", bad);
  /* Attached again, b DEVICE, written, then the device released. */
  KILN_EXPECT_OK(t, kiln_device_attach(d, m.m));
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, b, PAGE, KILN_PLACEMENT_DEVICE));
  op = scale_op(&m, b, b, n, 2);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  kiln_device_release(d);
  bad = 0;
  for (int64_t i = 0; i < n; i++) bad += tf32(&m, b)[i] != 6.0f * (float)i;
  KILN_EXPECTF(t, bad == 0, "after release: %d wrong", bad);
  kiln_memory_release(m.m);
}

/* Without a mirror (the cpu backend computes on host memory) DEVICE is
 * bookkeeping: ops compute in place and the host sees their results. */
static void test_device_without_mirror_computes_in_place(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, false);
  tmem m = tmem_new(t, d, 1);
  uint64_t a = tmem_alloc(&m, PAGE, PAGE);
  for (int i = 0; i < 8; i++) tf32(&m, a)[i] = (float)i;
  KILN_EXPECT_OK(t, kiln_device_place(d, m.m, a, PAGE, KILN_PLACEMENT_DEVICE));
  KILN_EXPECT(t, kiln_device_placement(d, m.m, a) == KILN_PLACEMENT_DEVICE);
  kiln_op op = scale_op(&m, a, a, 8, 2);
  KILN_EXPECT_OK(t, kiln_device_submit(d, &op, NULL));
  KILN_EXPECT_OK(t, kiln_device_sync(d, NULL));
  KILN_EXPECT(t, tf32(&m, a)[7] == 14.0f);
  kiln_device_stats s;
  stats(d, &s);
  KILN_EXPECT(t, s.resident_bytes == 0 && s.bytes_to_host == 0);
  kiln_device_release(d);
  kiln_memory_release(m.m);
}

KILN_TEST_MAIN(test_resident_weight_reused_and_host_writes_tracked,
               test_hot_page_cools,
               test_scattered_host_writes_in_a_long_range,
               test_kv_append_moves_exactly_the_rows,
               test_strided_output_keeps_host_bytes_in_gaps,
               test_grow_while_attached,
               test_place_mapped_ends_residency_after_copy_back,
               test_resident_without_mirror_is_bookkeeping,
               test_program_replay_matches_individual_submits,
               test_device_written_index, test_attach_aligned_file,
               test_small_resident_range_is_sent_eagerly,
               test_syscall_writes_into_resident_pages,
               test_program_follows_placement_changes,
               test_device_range_stays_on_the_device,
               test_device_range_changes_and_ends_without_loss,
               test_device_without_mirror_computes_in_place)
