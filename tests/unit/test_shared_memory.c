/* Two modules built from C (guests/shared) share one host-created memory:
 * what the producer writes, the consumer and the host read at the very
 * same address, and what the consumer writes back the producer and the host
 * see. Modules linked with the defaults (both at --global-base 1024) are
 * refused. A module with two memories copies between the shared one and
 * its own. Layout and flags: guests/shared/CMakeLists.txt, sdk/LINKING.md. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

#define PAGE ((uint64_t)KILN_WASM_PAGE_SIZE)
/* guests/shared/CMakeLists.txt: producer data at 64 KiB, consumer's at
 * 4 MiB, in a memory of 8 MiB. */
#define PRODUCER_GLOBAL_BASE 65536u
#define CONSUMER_GLOBAL_BASE 4194304u
#define SHARED_PAGES 128u

static kiln_engine *engine(void) { return kiln_test_engine(); }

static kiln_module *load(kiln_test *t, const char *name) {
  return kiln_test_load_guest(t, name);
}

/* A shared memory defined as env.memory in a new linker. */
static kiln_memory *shared_memory(kiln_test *t, uint64_t pages,
                                  kiln_linker **out_linker) {
  kiln_memory *mem = NULL;
  *out_linker = NULL;
  KILN_EXPECT_OK(
      t, kiln_memory_create(&(kiln_memory_options){.initial_pages = pages,
                                                   .maximum_pages = 2 * pages,
                                                   .name = "shared"},
                            &mem));
  if (!mem) return NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), out_linker));
  if (*out_linker)
    KILN_EXPECT_OK(
        t, kiln_linker_define_memory(*out_linker, "env", "memory", mem));
  return mem;
}

/* The producer's pattern (guests/shared/producer.c). */
static float pattern(int row, int col) {
  return (float)(row * 1000 + col) + 0.25f;
}

/* The consumer's checksum (guests/shared/consumer.c), on host floats. */
static double checksum(const float *m, int n) {
  double sum = 0;
  for (int k = 0; k < n * n; k++) sum += (double)m[k] * (double)(k % 7 + 1);
  return sum;
}

static uint32_t call_u32(kiln_test *t, kiln_instance *i, const char *name,
                         const kiln_val *args, size_t nargs) {
  kiln_val r = {0};
  KILN_EXPECT_OK(t, kiln_instance_call(i, name, args, nargs, &r, 1));
  return r.of.i32;
}

static double sum_matrix(kiln_test *t, kiln_instance *consumer, uint32_t ptr,
                         int n) {
  kiln_val a[2] = {kiln_val_i32(ptr), kiln_val_i32((uint32_t)n)}, r = {0};
  KILN_EXPECT_OK(t, kiln_instance_call(consumer, "sum_matrix", a, 2, &r, 1));
  KILN_EXPECT(t, r.type == KILN_F64);
  return r.of.f64;
}

static float producer_element(kiln_test *t, kiln_instance *producer, int k) {
  kiln_val a = kiln_val_i32((uint32_t)k), r = {0};
  KILN_EXPECT_OK(t, kiln_instance_call(producer, "element", &a, 1, &r, 1));
  return r.of.f32;
}

static void test_both_modules_import_env_memory(kiln_test *t) {
  const char *names[] = {"producer", "consumer", "producer_default",
                         "consumer_default"};
  for (size_t k = 0; k < 4; k++) {
    kiln_module *m = load(t, names[k]);
    if (!m) continue;
    int memories = 0;
    for (size_t i = 0; i < kiln_module_import_count(m); i++) {
      const kiln_import *im = kiln_module_import(m, i);
      /* No other imports: the guests use no libc and no WASI. */
      KILN_EXPECTF(t,
                   im->type.kind == KILN_EXTERN_MEMORY &&
                       !strcmp(im->module, "env") &&
                       !strcmp(im->name, "memory"),
                   "%s imports %s.%s", names[k], im->module, im->name);
      memories++;
    }
    KILN_EXPECT(t, memories == 1);
    KILN_EXPECT(t, kiln_module_memory_count(m) == 0);
    kiln_module_release(m);
  }
}

static void test_producer_and_consumer_share_one_memory(kiln_test *t) {
  kiln_linker *l = NULL;
  kiln_memory *mem = shared_memory(t, SHARED_PAGES, &l);
  kiln_module *pm = load(t, "producer"), *cm = load(t, "consumer");
  kiln_instance *producer = NULL, *consumer = NULL;
  if (mem && l && pm && cm) {
    KILN_EXPECT_OK(t, kiln_instance_create(pm, l, NULL, &producer));
    KILN_EXPECT_OK(t, kiln_instance_create(cm, l, NULL, &consumer));
  }
  if (!producer || !consumer) goto out;
  KILN_EXPECT(t, kiln_instance_memory(producer, 0) == mem);
  KILN_EXPECT(t, kiln_instance_memory(consumer, 0) == mem);

  const int n = 64;
  const uint64_t bytes = (uint64_t)n * n * sizeof(float);
  kiln_val arg = kiln_val_i32((uint32_t)n);
  KILN_EXPECT(
      t, call_u32(t, producer, "fill_matrix", &arg, 1) == (uint32_t)(n * n));
  uint32_t ptr = call_u32(t, producer, "matrix_ptr", NULL, 0);
  /* The matrix is the producer's only static data: at its global base. */
  KILN_EXPECTF(t, ptr == PRODUCER_GLOBAL_BASE, "matrix_ptr %u", ptr);

  /* Pointer identity: the checked host pointer is base + guest address. */
  float *host = NULL;
  KILN_EXPECT_OK(t, kiln_memory_range(mem, ptr, bytes, (void **)&host));
  KILN_EXPECT(t, (uint8_t *)host == kiln_memory_base(mem) + ptr);
  if (!host) goto out;
  int wrong = 0;
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++) wrong += host[r * n + c] != pattern(r, c);
  KILN_EXPECT(t, wrong == 0);

  /* The consumer reads the producer's bytes at the producer's address. */
  double want = checksum(host, n);
  KILN_EXPECT(t, want != 0);
  double got = sum_matrix(t, consumer, ptr, n);
  KILN_EXPECTF(t, got == want, "consumer sum %.17g, host %.17g", got, want);

  /* The consumer scales in place; host and producer see it at once. */
  kiln_val sa[3] = {kiln_val_i32(ptr), kiln_val_i32((uint32_t)n),
                    kiln_val_f32(3.0f)};
  KILN_EXPECT_OK(t, kiln_instance_call(consumer, "scale", sa, 3, NULL, 0));
  wrong = 0;
  for (int r = 0; r < n; r++)
    for (int c = 0; c < n; c++)
      wrong += host[r * n + c] != 3.0f * pattern(r, c);
  KILN_EXPECT(t, wrong == 0);
  KILN_EXPECT(t, producer_element(t, producer, 0) == 3.0f * pattern(0, 0));
  KILN_EXPECT(t, producer_element(t, producer, n * n - 1) ==
                     3.0f * pattern(n - 1, n - 1));
  got = sum_matrix(t, consumer, ptr, n);
  KILN_EXPECTF(t, got == 3 * want, "after scale: %.17g, want %.17g", got,
               3 * want);

  /* A host write is seen by both guests. */
  host[5] = -42.5f;
  KILN_EXPECT(t, producer_element(t, producer, 5) == -42.5f);
  KILN_EXPECT(t, sum_matrix(t, consumer, ptr, n) ==
                     3 * want + (-42.5 - 3.0 * pattern(0, 5)) * (5 % 7 + 1));

  /* The consumer's own static data lives at its global base in the same
   * memory: its call counter (initially 7) counts the calls made so far. */
  uint32_t calls = call_u32(t, consumer, "calls", NULL, 0);
  KILN_EXPECTF(t, calls == 7 + 4, "calls %u", calls);
  int32_t *counter = kiln_memory_range_or_null(mem, CONSUMER_GLOBAL_BASE, 4);
  KILN_EXPECT(t, counter && *counter == (int32_t)calls);

  /* A consumer trap (reading past the end of the shared memory) leaves
   * both modules usable. */
  kiln_val oob[2] = {kiln_val_i32(SHARED_PAGES * KILN_WASM_PAGE_SIZE - 16),
                     kiln_val_i32(8)};
  kiln_val r;
  kiln_status s = kiln_instance_call(consumer, "sum_matrix", oob, 2, &r, 1);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP &&
                     kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  KILN_EXPECT(t, sum_matrix(t, consumer, ptr, n) ==
                     3 * want + (-42.5 - 3.0 * pattern(0, 5)) * (5 % 7 + 1));
  KILN_EXPECT(t, producer_element(t, producer, 1) == 3.0f * pattern(0, 1));

  /* The largest matrix the producer holds (256 x 256, 256 KiB). */
  arg = kiln_val_i32(256);
  KILN_EXPECT(t, call_u32(t, producer, "fill_matrix", &arg, 1) == 256 * 256);
  KILN_EXPECT_OK(t, kiln_memory_range(mem, ptr, 256 * 256 * 4, (void **)&host));
  if (host) {
    want = checksum(host, 256);
    KILN_EXPECT(t, host[256 * 256 - 1] == pattern(255, 255));
    KILN_EXPECT(t, sum_matrix(t, consumer, ptr, 256) == want);
  }

  /* A second producer instance would reuse the first one's static data:
   * refused too. */
  kiln_instance *again = NULL;
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_instance_create(pm, l, NULL, &again));
  KILN_EXPECT(t, again == NULL);
out:
  if (consumer) kiln_instance_release(consumer);
  if (producer) kiln_instance_release(producer);
  if (cm) kiln_module_release(cm);
  if (pm) kiln_module_release(pm);
  kiln_linker_release(l);
  kiln_memory_release(mem);
}

static void test_default_linked_pair_is_refused(kiln_test *t) {
  kiln_linker *l = NULL;
  kiln_memory *mem = shared_memory(t, SHARED_PAGES, &l);
  kiln_module *pm = load(t, "producer_default");
  kiln_module *cm = load(t, "consumer_default");
  kiln_instance *producer = NULL, *consumer = NULL;
  if (!mem || !l || !pm || !cm) goto out;
  KILN_EXPECT_OK(t, kiln_instance_create(pm, l, NULL, &producer));
  kiln_status s = kiln_instance_create(cm, l, NULL, &consumer);
  const char *msg = kiln_status_message(s);
  KILN_EXPECTF(t, kiln_status_code(s) == KILN_CODE_FAILED_PRECONDITION,
               "got %s: %s", kiln_code_name(kiln_status_code(s)), msg);
  KILN_EXPECTF(t,
               strstr(msg, "producer_default.wasm") &&
                   strstr(msg, "consumer_default.wasm") &&
                   strstr(msg, "--global-base"),
               "message: %s", msg);
  printf("  refused as expected: %s\n", msg);
  kiln_status_free(s);
  KILN_EXPECT(t, consumer == NULL);

  /* The refusal left nothing behind: once the producer is gone the
   * consumer fits, and the override lets both in (at the caller's risk). */
  kiln_instance_release(producer);
  producer = NULL;
  KILN_EXPECT_OK(t, kiln_instance_create(cm, l, NULL, &consumer));
  kiln_instance_options o = {.allow_region_overlap = true};
  KILN_EXPECT_OK(t, kiln_instance_create(pm, l, &o, &producer));
out:
  if (consumer) kiln_instance_release(consumer);
  if (producer) kiln_instance_release(producer);
  if (cm) kiln_module_release(cm);
  if (pm) kiln_module_release(pm);
  kiln_linker_release(l);
  kiln_memory_release(mem);
}

static kiln_status copy3(kiln_instance *i, const char *name, uint32_t a,
                         uint32_t b, uint32_t c) {
  kiln_val args[3] = {kiln_val_i32(a), kiln_val_i32(b), kiln_val_i32(c)};
  return kiln_instance_call(i, name, args, 3, NULL, 0);
}

static void test_multi_memory_copies_between_shared_and_own(kiln_test *t) {
  kiln_linker *l = NULL;
  kiln_memory *shared = shared_memory(t, 2, &l);
  kiln_module *m = load(t, "multi");
  kiln_instance *i = NULL;
  if (shared && l && m) KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &i));
  if (!i) goto out;
  kiln_memory *own = kiln_instance_memory(i, 1);
  KILN_EXPECT(t, kiln_instance_memory(i, 0) == shared);
  KILN_EXPECT(t, own != NULL && own != shared);
  KILN_EXPECT(t, kiln_instance_memory_export(i, "own") == own);
  KILN_EXPECT(t, kiln_instance_memory(i, 2) == NULL);
  if (!own) goto out;
  KILN_EXPECT(t, kiln_memory_size(own) == PAGE);

  /* Host -> shared -> (guest) -> own -> host. */
  uint8_t *src = kiln_memory_range_or_null(shared, 1000, 256);
  KILN_EXPECT(t, src != NULL);
  if (!src) goto out;
  for (int k = 0; k < 256; k++) src[k] = (uint8_t)(255 - k);
  KILN_EXPECT_OK(t, copy3(i, "copy_in", 64, 1000, 256));
  uint8_t *dst = kiln_memory_range_or_null(own, 64, 256);
  KILN_EXPECT(t, dst && memcmp(dst, src, 256) == 0);
  /* own -> shared at another place. */
  KILN_EXPECT_OK(t, copy3(i, "copy_out", 70000, 64, 256));
  uint8_t *back = kiln_memory_range_or_null(shared, 70000, 256);
  KILN_EXPECT(t, back && memcmp(back, src, 256) == 0);
  /* Word by word with loads from one memory and stores to the other. */
  uint32_t *words = kiln_memory_range_or_null(shared, 4096, 16 * 4);
  for (uint32_t k = 0; words && k < 16; k++) words[k] = 1000 + k;
  KILN_EXPECT_OK(t, copy3(i, "copy_in_plus1", 8192, 4096, 16));
  uint32_t *got = kiln_memory_range_or_null(own, 8192, 16 * 4);
  int wrong = 0;
  for (uint32_t k = 0; got && k < 16; k++) wrong += got[k] != 1001 + k;
  KILN_EXPECT(t, got && wrong == 0);
  /* The two memories keep their own bounds: the own memory is one page,
   * the shared one two. */
  kiln_status s = copy3(i, "copy_in", (uint32_t)PAGE - 8, 0, 16);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP &&
                     kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  s = copy3(i, "copy_out", 2 * (uint32_t)PAGE - 8, 0, 16);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP &&
                     kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  KILN_EXPECT_OK(t, copy3(i, "copy_out", 2 * (uint32_t)PAGE - 16, 0, 16));
  /* Host growth of the shared memory is visible to the guest's memory 0
   * only. */
  KILN_EXPECT_OK(t, kiln_memory_grow(shared, 1, NULL));
  uint32_t *p = kiln_memory_range_or_null(shared, 2 * PAGE, 4);
  if (p) *p = 0x5eed;
  kiln_val a = kiln_val_i32(2 * (uint32_t)PAGE), r;
  KILN_EXPECT_OK(t, kiln_instance_call(i, "load_shared", &a, 1, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 0x5eed);
  s = kiln_instance_call(i, "load_own", &a, 1, &r, 1);
  KILN_EXPECT(t, kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  KILN_EXPECT_OK(t, kiln_instance_call(i, "size_own", NULL, 0, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 1);
out:
  if (i) kiln_instance_release(i);
  if (m) kiln_module_release(m);
  kiln_linker_release(l);
  kiln_memory_release(shared);
}

KILN_TEST_MAIN(test_both_modules_import_env_memory,
               test_producer_and_consumer_share_one_memory,
               test_default_linked_pair_is_refused,
               test_multi_memory_copies_between_shared_and_own)
