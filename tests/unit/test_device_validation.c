/* Hostile ops: each is refused before anything runs, with a message that
 * names the op and the operand, and a following valid op still gives the
 * right answer. */
#include <stdlib.h>
#include <unistd.h>

#include "test_device_util.h"

typedef struct fixture {
  kiln_device *d;
  tmem x;
  uint64_t oa, ob, oc;
} fixture;

enum { N = 256 };

static fixture setup(kiln_test *t) {
  fixture f;
  f.d = open_cpu(t, 2, false);
  f.x = tmem_new(t, f.d, 1);
  f.oa = tmem_alloc(&f.x, N * 4, 64);
  f.ob = tmem_alloc(&f.x, N * 4, 64);
  f.oc = tmem_alloc(&f.x, N * 4, 64);
  return f;
}

static kiln_op valid_add(fixture *f) {
  kiln_op op = {.kind = KILN_OP_ADD};
  op.a = T1(&f->x, f->oa, KILN_DTYPE_F32, N);
  op.b = T1(&f->x, f->ob, KILN_DTYPE_F32, N);
  op.c = T1(&f->x, f->oc, KILN_DTYPE_F32, N);
  return op;
}

/* The device is still usable and right after a refused op. */
static void expect_valid_op_works(kiln_test *t, fixture *f) {
  float *a = tf32(&f->x, f->oa), *b = tf32(&f->x, f->ob), *c = tf32(&f->x, f->oc);
  for (int i = 0; i < N; i++) a[i] = rnd_val(), b[i] = rnd_val(), c[i] = -99;
  kiln_op op = valid_add(f);
  RUN(t, f->d, op);
  int bad = 0;
  for (int i = 0; i < N; i++)
    if (c[i] != a[i] + b[i]) bad++;
  KILN_EXPECT(t, !bad);
}

static void teardown(fixture *f) {
  kiln_device_release(f->d);
  kiln_memory_release(f->x.m);
}

/* Expects `code` from both validate and submit, a message containing
 * `needle`, and that c was not touched. */
static void expect_refused(kiln_test *t, fixture *f, const kiln_op *op,
                           kiln_code code, const char *needle) {
  float *c = tf32(&f->x, f->oc);
  for (int i = 0; i < N; i++) c[i] = 12345;
  KILN_EXPECT_CODE(t, code, kiln_device_validate(f->d, op));
  kiln_status s = kiln_device_submit(f->d, op, NULL);
  KILN_EXPECTF(t, kiln_status_code(s) == code, "code %s, message: %s",
               kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
  KILN_EXPECTF(t, s && strstr(kiln_status_message(s), needle),
               "message '%s' lacks '%s'", kiln_status_message(s), needle);
  kiln_status_free(s);
  KILN_EXPECT_OK(t, kiln_device_sync(f->d, NULL));
  int touched = 0;
  for (int i = 0; i < N; i++)
    if (c[i] != 12345) touched++;
  KILN_EXPECT(t, !touched);
  expect_valid_op_works(t, f);
}

static void test_offset_past_end(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = valid_add(&f);
  op.a.offset = KILN_WASM_PAGE_SIZE - 4 * (N - 1); /* last element past */
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "ADD: operand a");
  op = valid_add(&f);
  op.b.offset = KILN_WASM_PAGE_SIZE; /* exactly the end */
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "operand b");
  teardown(&f);
}

static void test_offset_plus_length_overflows_32_and_64_bits(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = valid_add(&f);
  op.a.offset = 0xFFFFFF00u; /* + 1024 bytes wraps a 32-bit sum to 0x300 */
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "operand a");
  op = valid_add(&f);
  op.c.offset = UINT64_MAX - 1020; /* 4-aligned; + 1024 wraps 64 bits */
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "overflows 64 bits");
  teardown(&f);
}

static void test_shape_products_that_overflow(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = valid_add(&f);
  int64_t big[3] = {(int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 31};
  op.a = kiln_tensor_make(f.x.m, f.oa, KILN_DTYPE_F32, 3, big);
  op.b = op.c = op.a;
  op.c.offset = f.oc;
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "element count");
  /* Strides chosen so that shape * stride wraps to a small extent. */
  op = valid_add(&f);
  op.a.rank = 2;
  op.a.shape[0] = 4, op.a.shape[1] = N / 4;
  op.a.stride[0] = (int64_t)1 << 62, op.a.stride[1] = 1;
  op.b.rank = op.c.rank = 2;
  op.b.shape[0] = op.c.shape[0] = 4, op.b.shape[1] = op.c.shape[1] = N / 4;
  op.b.stride[0] = op.c.stride[0] = N / 4, op.b.stride[1] = op.c.stride[1] = 1;
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "operand a");
  teardown(&f);
}

static void test_negative_zero_and_absurd_strides(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = valid_add(&f);
  op.a.stride[0] = -1;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "stride -1");
  op = valid_add(&f);
  op.a.rank = 2;
  op.a.shape[0] = 2, op.a.shape[1] = N / 2;
  op.a.stride[0] = 0, op.a.stride[1] = 1; /* 0 on a dimension of size 2 */
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "must be positive");
  op = valid_add(&f);
  op.a.stride[0] = INT64_MAX;
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "operand a");
  op = valid_add(&f);
  op.b.stride[0] = 1 << 20; /* in 64 bits fine, outside the memory */
  expect_refused(t, &f, &op, KILN_CODE_OUT_OF_RANGE, "outside memory");
  /* A size-1 dimension may have any stride >= 0. */
  op = valid_add(&f);
  for (kiln_tensor *x = &op.a; x <= &op.c; x++) {
    x->rank = 2;
    x->shape[0] = 1, x->shape[1] = N;
    x->stride[0] = 0, x->stride[1] = 1;
  }
  KILN_EXPECT_OK(t, kiln_device_validate(f.d, &op));
  teardown(&f);
}

static void test_misaligned_bf16_and_f32(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = {.kind = KILN_OP_COPY};
  op.a = T1(&f.x, f.oa + 1, KILN_DTYPE_BF16, 16);
  op.b = T1(&f.x, f.oc, KILN_DTYPE_F32, 16);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "not aligned");
  op = valid_add(&f);
  op.c.offset += 2;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "operand c: offset");
  teardown(&f);
}

static void test_another_guests_memory(kiln_test *t) {
  fixture f = setup(t);
  /* A memory attached to another device (another guest), and one attached
   * to none. */
  kiln_device *other = open_cpu(t, 1, false);
  tmem y = tmem_new(t, other, 1);
  tmem z = tmem_new(t, NULL, 1);
  kiln_op op = valid_add(&f);
  op.b = T1(&y, 0, KILN_DTYPE_F32, N);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "not attached");
  op = valid_add(&f);
  op.c = T1(&z, 0, KILN_DTYPE_F32, N);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "another guest");
  kiln_device_release(other);
  kiln_memory_release(y.m);
  kiln_memory_release(z.m);
  teardown(&f);
}

static void test_write_to_read_only_memory(kiln_test *t) {
  fixture f = setup(t);
  char path[] = "/tmp/kiln_device_ro_XXXXXX";
  int fd = mkstemp(path);
  float w[64 * 32];
  for (int i = 0; i < 64 * 32; i++) w[i] = rnd_val();
  KILN_EXPECT(t, fd >= 0 && write(fd, w, sizeof w) == (ssize_t)sizeof w);
  close(fd);
  kiln_memory *ro = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &ro));
  unlink(path);
  KILN_EXPECT_OK(t, kiln_device_attach(f.d, ro));
  KILN_EXPECT(t, kiln_device_placement(f.d, ro, 0) == KILN_PLACEMENT_RESIDENT);
  tmem r = {ro, 0};
  kiln_op op = valid_add(&f);
  op.c = T1(&r, 0, KILN_DTYPE_F32, N);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "read-only");
  /* As a weight it works: y[32] = W[32,64] x... using the file's bytes. */
  float *x = tf32(&f.x, f.oa), *y = tf32(&f.x, f.oc);
  for (int i = 0; i < 64; i++) x[i] = rnd_val();
  op = (kiln_op){.kind = KILN_OP_GEMV, .alpha = 1};
  op.a = T2(&r, 0, KILN_DTYPE_F32, 32, 64);
  op.b = T1(&f.x, f.oa, KILN_DTYPE_F32, 64);
  op.c = T1(&f.x, f.oc, KILN_DTYPE_F32, 32);
  RUN(t, f.d, op);
  int bad = 0;
  for (int n = 0; n < 32; n++) {
    double s = 0;
    for (int k = 0; k < 64; k++) s += (double)w[n * 64 + k] * x[k];
    if (!close_to(y[n], s, 1e-5)) bad++;
  }
  KILN_EXPECT(t, !bad);
  kiln_device_detach(f.d, ro);
  kiln_memory_release(ro);
  teardown(&f);
}

static void test_malformed_ops(kiln_test *t) {
  fixture f = setup(t);
  kiln_op op = valid_add(&f);
  op.a.rank = 0;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "rank 0");
  op = valid_add(&f);
  op.a.rank = 5;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "rank 5");
  op = valid_add(&f);
  op.a.shape[0] = 0;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "size 0");
  op = valid_add(&f);
  op.a.shape[0] = -3;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "size -3");
  op = valid_add(&f);
  op.a.dtype = (kiln_dtype)77;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "unknown dtype");
  op = valid_add(&f);
  op.a.dtype = KILN_DTYPE_BF16;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "bf16 is not accepted");
  op = valid_add(&f);
  op.b.memory = NULL;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "operand b is missing");
  op = valid_add(&f);
  op.d = op.a;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "not used by ADD");
  op = valid_add(&f);
  op.flags = KILN_OP_TRANS_A;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "flags");
  op = valid_add(&f);
  op.kind = (kiln_op_kind)99;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "unknown op kind");
  op = valid_add(&f);
  op.b.shape[0] = N / 2;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "one row");
  /* GEMM shapes that do not match. */
  op = (kiln_op){.kind = KILN_OP_GEMM, .alpha = 1};
  op.a = T2(&f.x, f.oa, KILN_DTYPE_F32, 8, 16);
  op.b = T2(&f.x, f.ob, KILN_DTYPE_F32, 15, 8);
  op.c = T2(&f.x, f.oc, KILN_DTYPE_F32, 8, 8);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "GEMM: shapes");
  op.b = T2(&f.x, f.ob, KILN_DTYPE_BF16, 16, 8);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "same dtype");
  /* Rows that do not collapse. */
  op = valid_add(&f);
  op.a.rank = 3;
  op.a.shape[0] = 2, op.a.shape[1] = 2, op.a.shape[2] = N / 4;
  op.a.stride[0] = N / 4, op.a.stride[1] = N / 2, op.a.stride[2] = 1;
  op.b = op.a, op.b.offset = f.ob, op.b.stride[0] = N / 2, op.b.stride[1] = N / 4;
  op.c = op.b, op.c.offset = f.oc;
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "do not collapse");
  /* q8_0 rules. */
  op = (kiln_op){.kind = KILN_OP_GEMV, .alpha = 1};
  op.a = T2(&f.x, f.oa, KILN_DTYPE_Q8_0, 2, 48);
  op.b = T1(&f.x, f.ob, KILN_DTYPE_F32, 48);
  op.c = T1(&f.x, f.oc, KILN_DTYPE_F32, 2);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "multiple of 32");
  op.a = T2(&f.x, f.oa + 1, KILN_DTYPE_Q8_0, 2, 32);
  op.b = T1(&f.x, f.ob, KILN_DTYPE_F32, 32);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "not aligned");
  /* An index must be i32, and only some ops take one. */
  op = valid_add(&f);
  op.index = T1(&f.x, f.oa, KILN_DTYPE_I32, 1);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "operand index");
  op = (kiln_op){.kind = KILN_OP_SOFTMAX, .alpha = 1};
  op.a = T1(&f.x, f.oa, KILN_DTYPE_F32, N);
  op.b = T1(&f.x, f.oc, KILN_DTYPE_F32, N);
  op.index = T1(&f.x, f.ob, KILN_DTYPE_F32, 1);
  expect_refused(t, &f, &op, KILN_CODE_INVALID_ARGUMENT, "operand index");
  teardown(&f);
}

static void test_operand_crossing_a_placement_boundary(kiln_test *t) {
  kiln_device *d = open_cpu(t, 2, true);
  tmem x = tmem_new(t, d, 1);
  KILN_EXPECT_OK(t, kiln_device_place(d, x.m, 4096, 4096, KILN_PLACEMENT_RESIDENT));
  kiln_op op = {.kind = KILN_OP_SCALE, .alpha = 2};
  op.a = T1(&x, 4096 - 64, KILN_DTYPE_F32, 32); /* half mapped, half resident */
  op.b = T1(&x, 16384, KILN_DTYPE_F32, 32);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_device_submit(d, &op, NULL));
  op.a.offset = 4096;
  for (int i = 0; i < 32; i++) tf32(&x, 4096)[i] = (float)i;
  RUN(t, d, op);
  KILN_EXPECT(t, tf32(&x, 16384)[31] == 62);
  kiln_device_release(d);
  kiln_memory_release(x.m);
}

KILN_TEST_MAIN(test_offset_past_end,
               test_offset_plus_length_overflows_32_and_64_bits,
               test_shape_products_that_overflow,
               test_negative_zero_and_absurd_strides,
               test_misaligned_bf16_and_f32, test_another_guests_memory,
               test_write_to_read_only_memory, test_malformed_ops,
               test_operand_crossing_a_placement_boundary)
