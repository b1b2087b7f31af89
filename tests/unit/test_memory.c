/* Linear memories: the one checked range function (wraparound, overflow,
 * the exact end), in-place growth with its limits and subscribers, guard
 * pages seen from a guest, read-only file-backed memories, and the
 * static-data claims that keep modules apart in a shared memory. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

#define PAGE ((uint64_t)KILN_WASM_PAGE_SIZE)

static kiln_engine *engine(void) { return kiln_test_engine(); }

static kiln_module *load(kiln_test *t, const char *name) {
  return kiln_test_load_guest(t, name);
}

static kiln_memory *memory(kiln_test *t, uint64_t initial, uint64_t maximum,
                           uint64_t max_bytes) {
  kiln_memory *m = NULL;
  kiln_memory_options o = {.initial_pages = initial,
                           .maximum_pages = maximum,
                           .max_bytes = max_bytes,
                           .name = "test"};
  KILN_EXPECT_OK(t, kiln_memory_create(&o, &m));
  return m;
}

/* Calls a (i32) -> i32 export. */
static kiln_status call_i32(kiln_instance *i, const char *name, uint32_t arg,
                            uint32_t *out) {
  kiln_val r = {0};
  kiln_status s = kiln_instance_call(
      i, name, &(kiln_val){KILN_I32, {.i32 = arg}}, 1, &r, 1);
  if (!s && out) *out = r.of.i32;
  return s;
}

static kiln_status call_store(kiln_instance *i, uint32_t offset,
                              uint32_t value) {
  kiln_val a[2] = {kiln_val_i32(offset), kiln_val_i32(value)};
  return kiln_instance_call(i, "store", a, 2, NULL, 0);
}

/* Expects `s` to be an out-of-bounds trap; frees it. */
#define EXPECT_OOB_TRAP(t, expr)                                            \
  do {                                                                      \
    kiln_status st_ = (expr);                                               \
    KILN_EXPECTF(t,                                                         \
                 kiln_status_code(st_) == KILN_CODE_TRAP &&                 \
                     kiln_status_trap_kind(st_) == KILN_TRAP_OUT_OF_BOUNDS, \
                 "%s: got %s: %s", #expr,                                   \
                 kiln_code_name(kiln_status_code(st_)),                     \
                 kiln_status_message(st_));                                 \
    kiln_status_free(st_);                                                  \
  } while (0)

/* ---- kiln_memory_range --------------------------------------------------- */

static void test_range_rejects_wraparound(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 0, 0);
  if (!m) return;
  void *p = (void *)1;
  /* offset + length wraps past 2^64 back into [0, size). */
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT64_MAX, 1, &p));
  KILN_EXPECT(t, p == NULL);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT64_MAX, 0, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT64_MAX - 3, 8, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT64_MAX - 7, 8, &p));
  /* 32-bit wraparound: (UINT32_MAX - 3) + 8 is 4 in 32-bit arithmetic. */
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT32_MAX - 3, 8, &p));
  KILN_EXPECT(t, kiln_memory_range_or_null(m, UINT32_MAX - 3, 8) == NULL);
  kiln_memory_release(m);
}

/* At 4 GiB the 32-bit edge is inside the memory: the last 4 bytes are in
 * range, 8 bytes from UINT32_MAX - 3 are not. */
static void test_range_at_the_4gib_edge(kiln_test *t) {
  kiln_memory *m = memory(t, KILN_MEMORY_MAX_PAGES, 0, 0);
  if (!m) return;
  uint8_t *base = kiln_memory_base(m);
  KILN_EXPECT(t, kiln_memory_size(m) == (4ull << 30));
  void *p = NULL;
  KILN_EXPECT_OK(t, kiln_memory_range(m, UINT32_MAX - 3, 4, &p));
  KILN_EXPECT(t, p == base + UINT32_MAX - 3);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, UINT32_MAX - 3, 8, &p));
  KILN_EXPECT_OK(t, kiln_memory_range(m, 4ull << 30, 0, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 4ull << 30, 1, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 0, (4ull << 30) + 1, &p));
  kiln_memory_release(m);
}

static void test_range_rejects_length_overflow(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 0, 0);
  if (!m) return;
  void *p;
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 0, UINT64_MAX, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 1, UINT64_MAX, &p));
  /* These sums are exactly 2^64, i.e. 0 after wrapping. */
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 16, UINT64_MAX - 15, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, PAGE - 1, UINT64_MAX - (PAGE - 2), &p));
  /* Lengths that only fit in 32 bits when truncated. */
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 0, (1ull << 32) + 4, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 0, PAGE + 1, &p));
  kiln_memory_release(m);
}

static void test_range_exactly_at_the_end(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 0, 0);
  if (!m) return;
  uint64_t size = kiln_memory_size(m);
  uint8_t *base = kiln_memory_base(m);
  void *p = NULL;
  KILN_EXPECT(t, size == PAGE);
  /* The empty range at the very end is valid. */
  KILN_EXPECT_OK(t, kiln_memory_range(m, size, 0, &p));
  KILN_EXPECT(t, p == base + size);
  KILN_EXPECT_OK(t, kiln_memory_range(m, size - 4, 4, &p));
  KILN_EXPECT(t, p == base + size - 4);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, size - 4, 5, &p));
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, size + 1, 0, &p));
  KILN_EXPECT_OK(t, kiln_memory_range(m, 0, size, &p));
  KILN_EXPECT(t, p == base);
  KILN_EXPECT_CODE(t, KILN_CODE_OUT_OF_RANGE,
                   kiln_memory_range(m, 0, size + 1, &p));
  /* The message names the memory and the range. */
  kiln_status s = kiln_memory_range(m, size - 4, 5, &p);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "test") != NULL, "message: %s",
               kiln_status_message(s));
  kiln_status_free(s);
  kiln_memory_release(m);
}

static void test_range_or_null_agrees_with_range(kiln_test *t) {
  kiln_memory *m = memory(t, 2, 0, 0);
  if (!m) return;
  uint64_t size = kiln_memory_size(m);
  const uint64_t offsets[] = {
      0,         1,    size - 5,       size - 4,   size - 1,   size,
      size + 1,  PAGE, UINT32_MAX - 3, UINT32_MAX, 1ull << 32, UINT64_MAX - 7,
      UINT64_MAX};
  const uint64_t lengths[] = {
      0,         1, 4, 5, 8, PAGE, size, size + 1, UINT32_MAX, UINT64_MAX - 3,
      UINT64_MAX};
  int disagreements = 0;
  for (size_t a = 0; a < sizeof offsets / sizeof *offsets; a++) {
    for (size_t b = 0; b < sizeof lengths / sizeof *lengths; b++) {
      uint64_t off = offsets[a], len = lengths[b];
      void *p = (void *)1;
      kiln_status s = kiln_memory_range(m, off, len, &p);
      void *q = kiln_memory_range_or_null(m, off, len);
      /* The reference answer, in 128-bit arithmetic. */
      int fits = (unsigned __int128)off + len <= size;
      int agree = fits ? (!s && p == q && q == kiln_memory_base(m) + off)
                       : (kiln_status_code(s) == KILN_CODE_OUT_OF_RANGE &&
                          p == NULL && q == NULL);
      if (!agree) {
        KILN_EXPECTF(t, agree,
                     "offset %" PRIu64 " length %" PRIu64
                     ": range %s, or_null %p, expected %s",
                     off, len, kiln_code_name(kiln_status_code(s)), q,
                     fits ? "in range" : "out of range");
        disagreements++;
      }
      kiln_status_free(s);
    }
  }
  KILN_EXPECT(t, disagreements == 0);
  kiln_memory_release(m);
}

/* ---- Growth -------------------------------------------------------------- */

static void test_grow_in_place(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 1100, 0);
  if (!m) return;
  uint8_t *base = kiln_memory_base(m);
  int moved = 0, bad_old = 0, bad_bytes = 0;
  for (uint64_t k = 1; k <= 1000; k++) {
    uint64_t old = 0;
    KILN_EXPECT_OK(t, kiln_memory_grow(m, 1, &old));
    if (old != k) bad_old++;
    if (kiln_memory_base(m) != base) moved++;
    /* Stamp the last byte of the new page through the checked path. */
    uint8_t *p = kiln_memory_range_or_null(m, (k + 1) * PAGE - 1, 1);
    if (p != base + (k + 1) * PAGE - 1) {
      bad_bytes++;
      continue;
    }
    *p = (uint8_t)k;
  }
  KILN_EXPECT(t, moved == 0);
  KILN_EXPECT(t, bad_old == 0);
  KILN_EXPECT(t, bad_bytes == 0);
  KILN_EXPECT(t, kiln_memory_pages(m) == 1001);
  KILN_EXPECT(t, kiln_memory_size(m) == 1001 * PAGE);
  /* Every stamp survived the later grows: nothing was copied or lost. */
  for (uint64_t k = 1; k <= 1000; k++)
    if (base[(k + 1) * PAGE - 1] != (uint8_t)k) bad_bytes++;
  KILN_EXPECT(t, bad_bytes == 0);
  /* Growing by 0 returns the size and changes nothing. */
  uint64_t old = 0;
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 0, &old));
  KILN_EXPECT(t, old == 1001 && kiln_memory_pages(m) == 1001);
  kiln_memory_release(m);
}

static void test_grow_enforces_maximum(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 4, 0);
  if (!m) return;
  KILN_EXPECT(t, kiln_memory_max_pages(m) == 4);
  uint64_t old = 0;
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 3, &old));
  KILN_EXPECT(t, old == 1 && kiln_memory_pages(m) == 4);
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                   kiln_memory_grow(m, 1, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                   kiln_memory_grow(m, UINT64_MAX, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                   kiln_memory_grow(m, UINT32_MAX, NULL));
  KILN_EXPECT(t, kiln_memory_pages(m) == 4);
  KILN_EXPECT(t, kiln_memory_range_or_null(m, 4 * PAGE, 1) == NULL);
  kiln_memory_release(m);

  /* Without a maximum the limit is 65536 pages. */
  m = memory(t, 0, 0, 0);
  if (m) {
    KILN_EXPECT(t, kiln_memory_max_pages(m) == KILN_MEMORY_MAX_PAGES);
    KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                     kiln_memory_grow(m, KILN_MEMORY_MAX_PAGES + 1, NULL));
    KILN_EXPECT(t, kiln_memory_size(m) == 0);
    kiln_memory_release(m);
  }
  /* Impossible options are refused at creation. */
  kiln_memory *bad = NULL;
  KILN_EXPECT_CODE(
      t, KILN_CODE_INVALID_ARGUMENT,
      kiln_memory_create(
          &(kiln_memory_options){.maximum_pages = KILN_MEMORY_MAX_PAGES + 1},
          &bad));
  KILN_EXPECT_CODE(
      t, KILN_CODE_INVALID_ARGUMENT,
      kiln_memory_create(
          &(kiln_memory_options){.initial_pages = 5, .maximum_pages = 4},
          &bad));
  KILN_EXPECT(t, bad == NULL);
}

static void test_grow_enforces_max_bytes(kiln_test *t) {
  /* A byte limit that is not a whole number of pages: 3 pages fit. */
  kiln_memory *m = memory(t, 1, 100, 3 * PAGE + 100);
  if (!m) return;
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 2, NULL));
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                   kiln_memory_grow(m, 1, NULL));
  KILN_EXPECT(t, kiln_memory_pages(m) == 3);
  kiln_memory_release(m);

  kiln_memory *bad = NULL;
  KILN_EXPECT_CODE(
      t, KILN_CODE_RESOURCE_EXHAUSTED,
      kiln_memory_create(
          &(kiln_memory_options){.initial_pages = 2, .max_bytes = PAGE}, &bad));
  KILN_EXPECT(t, bad == NULL);
}

typedef struct grow_log {
  int calls;
  uint64_t old_bytes, new_bytes;
  int wrote_new_pages; /* the new pages were writable in the callback */
  kiln_code refuse;    /* refuse with this code when not OK */
} grow_log;

static kiln_status on_grow(void *user, kiln_memory *m, uint64_t old_bytes,
                           uint64_t new_bytes) {
  grow_log *g = user;
  g->calls++;
  g->old_bytes = old_bytes;
  g->new_bytes = new_bytes;
  /* The new pages are committed before subscribers hear of them (a device
   * backend registers them right here). */
  uint8_t *base = kiln_memory_base(m);
  base[old_bytes] = 0xab;
  base[new_bytes - 1] = 0xcd;
  g->wrote_new_pages = 1;
  if (g->refuse != KILN_CODE_OK)
    return kiln_make_status(g->refuse, "subscriber refuses %llu bytes",
                            (unsigned long long)new_bytes);
  return KILN_OK;
}

static void test_grow_notifies_subscribers(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 16, 0);
  if (!m) return;
  grow_log a = {0}, b = {0};
  kiln_memory_subscription *sa = NULL, *sb = NULL;
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &a, &sa));
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &b, &sb));
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 2, NULL));
  KILN_EXPECT(t, a.calls == 1 && b.calls == 1);
  KILN_EXPECT(t, a.old_bytes == PAGE && a.new_bytes == 3 * PAGE);
  KILN_EXPECT(t, b.old_bytes == PAGE && b.new_bytes == 3 * PAGE);
  KILN_EXPECT(t, a.wrote_new_pages && b.wrote_new_pages);
  KILN_EXPECT(t, kiln_memory_base(m)[PAGE] == 0xab);
  /* Growth that fails a limit tells nobody. */
  KILN_EXPECT_CODE(t, KILN_CODE_RESOURCE_EXHAUSTED,
                   kiln_memory_grow(m, 100, NULL));
  /* Growth by 0 tells nobody either. */
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 0, NULL));
  KILN_EXPECT(t, a.calls == 1 && b.calls == 1);
  kiln_memory_unsubscribe(m, sa);
  kiln_memory_unsubscribe(m, sb);
  kiln_memory_release(m);
}

static void test_refusing_subscriber_rolls_back(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 16, 0);
  if (!m) return;
  grow_log g = {.refuse = KILN_CODE_PERMISSION_DENIED};
  kiln_memory_subscription *sub = NULL;
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &g, &sub));
  /* The subscriber's status reaches the grower unchanged. */
  kiln_status s = kiln_memory_grow(m, 2, NULL);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_PERMISSION_DENIED);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "subscriber refuses") != NULL,
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  KILN_EXPECT(t, g.calls == 1 && g.wrote_new_pages);
  KILN_EXPECT(t, kiln_memory_pages(m) == 1);
  KILN_EXPECT(t, kiln_memory_size(m) == PAGE);
  KILN_EXPECT(t, kiln_memory_range_or_null(m, PAGE, 1) == NULL);
  /* Once the subscriber is gone the same growth succeeds, and the pages it
   * scribbled on were given back: they come back zeroed. */
  kiln_memory_unsubscribe(m, sub);
  uint64_t old = 0;
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 2, &old));
  KILN_EXPECT(t, old == 1 && kiln_memory_pages(m) == 3);
  KILN_EXPECT(t, g.calls == 1);
  uint8_t *p = kiln_memory_range_or_null(m, PAGE, 2 * PAGE);
  KILN_EXPECT(t, p != NULL);
  if (p) KILN_EXPECT(t, p[0] == 0 && p[2 * PAGE - 1] == 0);
  kiln_memory_release(m);
}

/* Grow and rollback calls of several subscribers, in the order made. */
typedef struct event_log {
  char text[256];
} event_log;

typedef struct listener {
  event_log *log;
  char name;
  bool refuse;
  bool pages_writable_in_rollback;
  uint64_t rolled_old, rolled_new;
} listener;

static void log_event(event_log *log, char what, char name) {
  size_t n = strlen(log->text);
  if (n + 3 < sizeof log->text) {
    log->text[n] = what;
    log->text[n + 1] = name;
    log->text[n + 2] = ' ';
    log->text[n + 3] = 0;
  }
}

static kiln_status listen_grow(void *user, kiln_memory *m, uint64_t old_bytes,
                               uint64_t new_bytes) {
  listener *l = user;
  log_event(l->log, '+', l->name);
  kiln_memory_base(m)[new_bytes - 1] = (uint8_t)l->name; /* committed */
  if (l->refuse)
    return kiln_make_status(KILN_CODE_UNAVAILABLE, "%c cannot map %llu bytes",
                            l->name, (unsigned long long)new_bytes);
  return KILN_OK;
}

static void listen_rollback(void *user, kiln_memory *m, uint64_t old_bytes,
                            uint64_t new_bytes) {
  listener *l = user;
  log_event(l->log, '-', l->name);
  l->rolled_old = old_bytes;
  l->rolled_new = new_bytes;
  /* Still committed while the subscriber undoes its part. */
  uint8_t *last = kiln_memory_base(m) + new_bytes - 1;
  *last ^= 1;
  l->pages_writable_in_rollback = true;
}

/* Subscribers are called newest first; when one refuses, those that
 * accepted are told, most recent first, and those after it hear nothing. */
static void test_refused_grow_rolls_back_accepting_subscribers(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 16, 0);
  if (!m) return;
  event_log log = {""};
  listener a = {.log = &log, .name = 'a', .refuse = true};
  listener b = {.log = &log, .name = 'b'}, c = {.log = &log, .name = 'c'};
  listener d = {.log = &log, .name = 'd'}, e = {.log = &log, .name = 'e'};
  kiln_memory_subscription *sa = NULL, *sb = NULL, *sc = NULL, *sd = NULL,
                           *se = NULL;
  KILN_EXPECT_OK(t, kiln_memory_subscribe_with_rollback(
                        m, listen_grow, listen_rollback, &a, &sa));
  KILN_EXPECT_OK(t, kiln_memory_subscribe_with_rollback(
                        m, listen_grow, listen_rollback, &b, &sb));
  /* c has no rollback function: it is simply not told. */
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, listen_grow, &c, &sc));
  KILN_EXPECT_OK(t, kiln_memory_subscribe_with_rollback(
                        m, listen_grow, listen_rollback, &d, &sd));
  KILN_EXPECT_OK(t, kiln_memory_subscribe_with_rollback(
                        m, listen_grow, listen_rollback, &e, &se));
  /* Unsubscribed before the grow: hears nothing. */
  kiln_memory_unsubscribe(m, se);

  kiln_status s = kiln_memory_grow(m, 2, NULL);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_UNAVAILABLE);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "a cannot map") != NULL,
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  KILN_EXPECTF(t, !strcmp(log.text, "+d +c +b +a -b -d "), "events: %s",
               log.text);
  KILN_EXPECT(t, b.rolled_old == PAGE && b.rolled_new == 3 * PAGE);
  KILN_EXPECT(t, d.rolled_old == PAGE && d.rolled_new == 3 * PAGE);
  KILN_EXPECT(t, b.pages_writable_in_rollback && d.pages_writable_in_rollback);
  KILN_EXPECT(t, !a.pages_writable_in_rollback && e.rolled_new == 0);
  KILN_EXPECT(t, kiln_memory_pages(m) == 1);
  KILN_EXPECT(t, kiln_memory_range_or_null(m, PAGE, 1) == NULL);

  /* Without the refuser the grow goes through: nobody is rolled back, and
   * the pages scribbled on before come back zeroed. */
  kiln_memory_unsubscribe(m, sa);
  log.text[0] = 0;
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 2, NULL));
  KILN_EXPECTF(t, !strcmp(log.text, "+d +c +b "), "events: %s", log.text);
  uint8_t *p = kiln_memory_range_or_null(m, PAGE, 2 * PAGE);
  KILN_EXPECT(t, p != NULL);
  /* d, called first, wrote its name; b and c after it. */
  if (p) KILN_EXPECT(t, p[0] == 0 && p[2 * PAGE - 1] == 'b');
  kiln_memory_unsubscribe(m, sb);
  kiln_memory_unsubscribe(m, sc);
  kiln_memory_unsubscribe(m, sd);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_memory_subscribe(m, NULL, &a, NULL));
  kiln_memory_release(m);
}

static void test_unsubscribe_stops_notifications(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 16, 0);
  if (!m) return;
  grow_log a = {0}, b = {0};
  kiln_memory_subscription *sa = NULL, *sb = NULL;
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &a, &sa));
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &b, &sb));
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 1, NULL));
  kiln_memory_unsubscribe(m, sa);
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 1, NULL));
  KILN_EXPECT(t, a.calls == 1);
  KILN_EXPECT(t, b.calls == 2);
  KILN_EXPECT(t, b.old_bytes == 2 * PAGE && b.new_bytes == 3 * PAGE);
  kiln_memory_unsubscribe(m, sb);
  KILN_EXPECT_OK(t, kiln_memory_grow(m, 1, NULL));
  KILN_EXPECT(t, a.calls == 1 && b.calls == 2);
  /* A subscription left in place is freed with the memory (ASan checks). */
  KILN_EXPECT_OK(t, kiln_memory_subscribe(m, on_grow, &a, NULL));
  kiln_memory_release(m);
}

/* ---- Guard pages --------------------------------------------------------- */

static void test_guard_page_traps_just_past_size(kiln_test *t) {
  kiln_module *mod = load(t, "traps");
  if (!mod) return;
  kiln_instance *i = NULL;
  KILN_EXPECT_OK(t, kiln_instance_create(mod, NULL, NULL, &i));
  if (!i) {
    kiln_module_release(mod);
    return;
  }
  kiln_memory *m = kiln_instance_memory(i, 0);
  KILN_EXPECT(t, m != NULL);
  uint64_t size = m ? kiln_memory_size(m) : 0;
  KILN_EXPECT(t, size == PAGE);
  uint32_t v = 1;
  KILN_EXPECT_OK(t, call_store(i, (uint32_t)size - 4, 0x11223344));
  KILN_EXPECT_OK(t, call_i32(i, "load", (uint32_t)size - 4, &v));
  KILN_EXPECT(t, v == 0x11223344);
  /* The first byte past the committed size, and a load straddling it. */
  EXPECT_OOB_TRAP(t, call_i32(i, "load", (uint32_t)size, NULL));
  EXPECT_OOB_TRAP(t, call_i32(i, "load", (uint32_t)size - 2, NULL));
  EXPECT_OOB_TRAP(t, call_store(i, (uint32_t)size, 1));
  /* Host growth moves the edge for the guest at once. */
  if (m) KILN_EXPECT_OK(t, kiln_memory_grow(m, 1, NULL));
  v = 1;
  KILN_EXPECT_OK(t, call_i32(i, "load", (uint32_t)size, &v));
  KILN_EXPECT(t, v == 0);
  EXPECT_OOB_TRAP(t, call_i32(i, "load", (uint32_t)(2 * size), NULL));
  /* And guest growth does too. */
  kiln_val r;
  KILN_EXPECT_OK(
      t, kiln_instance_call(i, "grow", &(kiln_val){KILN_I32, {.i32 = 1}}, 1, &r,
                            1));
  KILN_EXPECT(t, r.of.i32 == 2);
  KILN_EXPECT_OK(t, call_i32(i, "load", (uint32_t)(3 * size) - 4, &v));
  EXPECT_OOB_TRAP(t, call_i32(i, "load", (uint32_t)(3 * size), NULL));
  KILN_EXPECT(t, m && kiln_memory_size(m) == 3 * size);
  kiln_instance_release(i);
  kiln_module_release(mod);
}

/* ---- File-backed read-only memories -------------------------------------- */

#define FILE_BYTES 100000u

static uint8_t file_byte(uint32_t k) { return (uint8_t)(k * 7 + 3); }

/* Writes a FILE_BYTES-byte file with a known pattern; returns its path in
 * buf (caller unlinks). */
static int make_weights_file(char *buf, size_t size) {
  snprintf(buf, size, "/tmp/kiln-weights-XXXXXX");
  int fd = mkstemp(buf);
  if (fd < 0) return -1;
  uint8_t *bytes = malloc(FILE_BYTES);
  if (!bytes) {
    close(fd);
    return -1;
  }
  for (uint32_t k = 0; k < FILE_BYTES; k++) bytes[k] = file_byte(k);
  ssize_t n = write(fd, bytes, FILE_BYTES);
  free(bytes);
  close(fd);
  return n == (ssize_t)FILE_BYTES ? 0 : -1;
}

static void test_file_backed_memory_from_the_host(kiln_test *t) {
  char path[64];
  KILN_EXPECT(t, make_weights_file(path, sizeof path) == 0);
  kiln_memory *m = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &m));
  if (!m) {
    unlink(path);
    return;
  }
  KILN_EXPECT(t, kiln_memory_is_read_only(m));
  /* 100000 bytes round up to two whole pages. */
  KILN_EXPECT(t, kiln_memory_size(m) == 2 * PAGE);
  KILN_EXPECT(t, kiln_memory_pages(m) == 2);
  KILN_EXPECT(t, kiln_memory_max_pages(m) == 2);
  const uint8_t *p = kiln_memory_range_or_null(m, 0, 2 * PAGE);
  KILN_EXPECT(t, p == kiln_memory_base(m));
  if (p) {
    uint32_t wrong = 0, tail_nonzero = 0;
    for (uint32_t k = 0; k < FILE_BYTES; k++) wrong += p[k] != file_byte(k);
    for (uint64_t k = FILE_BYTES; k < 2 * PAGE; k++) tail_nonzero += p[k] != 0;
    KILN_EXPECT(t, wrong == 0);
    KILN_EXPECT(t, tail_nonzero == 0);
  }
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_grow(m, 1, NULL));
  KILN_EXPECT(t, kiln_memory_size(m) == 2 * PAGE);
  KILN_EXPECT(t, kiln_memory_range_or_null(m, 2 * PAGE, 1) == NULL);
  kiln_memory_release(m);

  /* An empty file is an empty memory; a missing file or a folder is an
   * error, not a crash. */
  int fd = open(path, O_WRONLY | O_TRUNC);
  KILN_EXPECT(t, fd >= 0);
  if (fd >= 0) close(fd);
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &m));
  if (m) {
    KILN_EXPECT(t, kiln_memory_size(m) == 0);
    KILN_EXPECT(t, kiln_memory_range_or_null(m, 0, 0) != NULL);
    KILN_EXPECT(t, kiln_memory_range_or_null(m, 0, 1) == NULL);
    kiln_memory_release(m);
  }
  unlink(path);
  m = NULL;
  kiln_status s = kiln_memory_create_from_file(path, &m);
  KILN_EXPECT(t, s != KILN_OK && m == NULL);
  kiln_status_free(s);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_memory_create_from_file("/tmp", &m));
}

static void test_file_backed_memory_in_a_guest(kiln_test *t) {
  char path[64];
  KILN_EXPECT(t, make_weights_file(path, sizeof path) == 0);
  kiln_memory *m = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create_from_file(path, &m));
  unlink(path); /* the mapping keeps the bytes */
  kiln_module *mod = load(t, "ro");
  kiln_linker *l = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), &l));
  kiln_instance *i = NULL;
  if (m && mod && l) {
    KILN_EXPECT_OK(t, kiln_linker_define_memory(l, "env", "weights", m));
    KILN_EXPECT_OK(t, kiln_instance_create(mod, l, NULL, &i));
  }
  if (i) {
    KILN_EXPECT(t, kiln_instance_memory(i, 0) == m);
    uint32_t v = 0, wrong = 0;
    /* Loads read the file's bytes, up to the last one. */
    for (uint32_t k = 0; k < FILE_BYTES; k += 997) {
      KILN_EXPECT_OK(t, call_i32(i, "load8", k, &v));
      wrong += v != file_byte(k);
    }
    KILN_EXPECT_OK(t, call_i32(i, "load8", FILE_BYTES - 1, &v));
    wrong += v != file_byte(FILE_BYTES - 1);
    KILN_EXPECT(t, wrong == 0);
    uint32_t want = 0;
    for (int b = 3; b >= 0; b--)
      want = want << 8 | file_byte(FILE_BYTES - 4 + b);
    KILN_EXPECT_OK(t, call_i32(i, "load", FILE_BYTES - 4, &v));
    KILN_EXPECT(t, v == want);
    /* Past the file, up to the page end: zeros. Past the page end: trap. */
    KILN_EXPECT_OK(t, call_i32(i, "load", FILE_BYTES, &v));
    KILN_EXPECT(t, v == 0);
    KILN_EXPECT_OK(t, call_i32(i, "load", 2 * PAGE - 4, &v));
    KILN_EXPECT(t, v == 0);
    EXPECT_OOB_TRAP(t, call_i32(i, "load", 2 * PAGE, NULL));
    /* Stores trap as out of bounds, in the file and in the zero tail, and
     * change nothing. */
    EXPECT_OOB_TRAP(t, call_store(i, 0, 0xdeadbeef));
    EXPECT_OOB_TRAP(t, call_store(i, FILE_BYTES - 4, 0xdeadbeef));
    EXPECT_OOB_TRAP(t, call_store(i, FILE_BYTES + 8, 0xdeadbeef));
    KILN_EXPECT_OK(t, call_i32(i, "load8", 0, &v));
    KILN_EXPECT(t, v == file_byte(0));
    /* memory.grow fails the Wasm way: -1. */
    KILN_EXPECT_OK(t, call_i32(i, "grow", 1, &v));
    KILN_EXPECT(t, v == UINT32_MAX);
    kiln_val r;
    KILN_EXPECT_OK(t, kiln_instance_call(i, "size", NULL, 0, &r, 1));
    KILN_EXPECT(t, r.of.i32 == 2);
    kiln_instance_release(i);
  }
  kiln_linker_release(l);
  kiln_module_release(mod);
  kiln_memory_release(m);
}

/* ---- Static-data claims -------------------------------------------------- */

static void test_claims_detect_overlap(kiln_test *t) {
  kiln_memory *m = memory(t, 1, 0, 0);
  if (!m) return;
  uint64_t a = 0, b = 0, c = 0, d = 0, x = 0;
  KILN_EXPECT_OK(t, kiln_memory_claim(m, 100, 200, "alpha.wasm", &a));
  /* Overlaps at either end, inside, or around: refused, naming both. */
  kiln_status s = kiln_memory_claim(m, 150, 250, "beta.wasm", &x);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_FAILED_PRECONDITION);
  KILN_EXPECTF(t,
               strstr(kiln_status_message(s), "alpha.wasm") &&
                   strstr(kiln_status_message(s), "beta.wasm"),
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_claim(m, 50, 101, "beta.wasm", &x));
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_claim(m, 199, 300, "beta.wasm", &x));
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_claim(m, 120, 130, "beta.wasm", &x));
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_claim(m, 0, 1000, "beta.wasm", &x));
  /* Adjacent claims on either side are fine (ends are exclusive). */
  KILN_EXPECT_OK(t, kiln_memory_claim(m, 200, 300, "beta.wasm", &b));
  KILN_EXPECT_OK(t, kiln_memory_claim(m, 0, 100, "gamma.wasm", &c));
  KILN_EXPECT(t, a != b && b != c && a != c);
  /* An empty or reversed range is a caller error, and says which. */
  s = kiln_memory_claim(m, 500, 400, "delta.wasm", &x);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_INVALID_ARGUMENT);
  KILN_EXPECTF(t,
               strstr(kiln_status_message(s), "delta.wasm") &&
                   strstr(kiln_status_message(s), "[500, 400)") &&
                   strstr(kiln_status_message(s), "ends before it begins"),
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  s = kiln_memory_claim(m, 700, 700, NULL, &x);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_INVALID_ARGUMENT);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "[700, 700)") &&
                      strstr(kiln_status_message(s), "is empty"),
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  /* Unclaiming frees the range for someone else. */
  kiln_memory_unclaim(m, a);
  KILN_EXPECT_OK(t, kiln_memory_claim(m, 100, 200, "delta.wasm", &d));
  KILN_EXPECT_CODE(t, KILN_CODE_FAILED_PRECONDITION,
                   kiln_memory_claim(m, 150, 160, "alpha.wasm", &x));
  /* Unclaiming an unknown id is harmless; live claims are freed with the
   * memory (ASan checks). */
  kiln_memory_unclaim(m, 987654);
  kiln_memory_unclaim(m, b);
  KILN_EXPECT_OK(t, kiln_memory_claim(m, 250, 260, "beta.wasm", &b));
  kiln_memory_release(m);
}

KILN_TEST_MAIN(test_range_rejects_wraparound, test_range_at_the_4gib_edge,
               test_range_rejects_length_overflow,
               test_range_exactly_at_the_end,
               test_range_or_null_agrees_with_range, test_grow_in_place,
               test_grow_enforces_maximum, test_grow_enforces_max_bytes,
               test_grow_notifies_subscribers,
               test_refusing_subscriber_rolls_back,
               test_refused_grow_rolls_back_accepting_subscribers,
               test_unsubscribe_stops_notifications,
               test_guard_page_traps_just_past_size,
               test_file_backed_memory_from_the_host,
               test_file_backed_memory_in_a_guest, test_claims_detect_overlap)
