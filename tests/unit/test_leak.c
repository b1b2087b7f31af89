/* 100,000 instantiate/call/free cycles of a module that defines its own
 * memory (guests/engine/traps.wat): each cycle reserves 8 GiB of address
 * space, commits and touches a page, and must give all of it back. Virtual
 * size and RSS from /proc/self/status must stay flat after a warm-up.
 *
 * (wasm2c's stock runtime leaks most of each reservation and aborts after
 * about 16k cycles; see DESIGN.md.) KILN_LEAK_CYCLES overrides the count. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/engine.h"
#include "kiln_test.h"

#define WARMUP_CYCLES 1000
#define DEFAULT_CYCLES 100000
#define MIB (1024.0 * 1024.0)
/* Flat means within these bounds (bytes). */
#define VM_SLACK (4ull << 20)
#define RSS_SLACK (10ull << 20)

/* Under AddressSanitizer freed blocks wait in a quarantine (256 MiB by
 * default) before they are reused, so RSS would climb by the quarantine's
 * size without any leak. Keep it small in this program only; ASAN_OPTIONS
 * set in the environment still win. LeakSanitizer still checks at exit. */
#if defined(__SANITIZE_ADDRESS__)
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "quarantine_size_mb=1"; }
#endif

/* VmSize and VmRSS in bytes; 0 when unreadable. */
static void read_status(uint64_t *vm, uint64_t *rss) {
  *vm = *rss = 0;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return;
  char line[256];
  unsigned long long kb;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "VmSize: %llu kB", &kb) == 1) *vm = kb * 1024;
    if (sscanf(line, "VmRSS: %llu kB", &kb) == 1) *rss = kb * 1024;
  }
  fclose(f);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One cycle: instantiate, touch the first and last word of the memory
 * from the guest, grow it by a page and touch that too, free. Returns
 * nonzero on failure (message in err). */
static int cycle(kiln_module *m, uint32_t k, char *err, size_t errsize) {
  kiln_instance *i = NULL;
  kiln_status s = kiln_instance_create(m, NULL, NULL, &i);
  kiln_val r;
  if (!s) {
    kiln_val a[2] = {kiln_val_i32(0), kiln_val_i32(k)};
    s = kiln_instance_call(i, "store", a, 2, NULL, 0);
  }
  if (!s)
    s = kiln_instance_call(i, "grow", &(kiln_val){KILN_I32, {.i32 = 1}}, 1, &r,
                           1);
  if (!s) {
    kiln_val a[2] = {kiln_val_i32(2 * KILN_WASM_PAGE_SIZE - 4),
                     kiln_val_i32(k)};
    s = kiln_instance_call(i, "store", a, 2, NULL, 0);
  }
  if (!s)
    s = kiln_instance_call(i, "load", &(kiln_val){KILN_I32, {.i32 = 0}}, 1, &r,
                           1);
  if (!s && r.of.i32 != k)
    s = kiln_make_status(KILN_CODE_INTERNAL, "read back %u, wrote %u", r.of.i32,
                         k);
  if (i) kiln_instance_release(i);
  if (s) {
    snprintf(err, errsize, "cycle %u: %s: %s", k,
             kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
    kiln_status_free(s);
    return 1;
  }
  return 0;
}

static void test_instantiate_free_cycles_stay_flat(kiln_test *t) {
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  kiln_engine *e = NULL;
  KILN_EXPECT_OK(t, kiln_engine_create(&o, &e));
  if (!e) return;
  char path[512];
  snprintf(path, sizeof path, "%s/traps.wasm", KILN_GUEST_DIR);
  kiln_module *m = NULL;
  KILN_EXPECT_OK(t, kiln_module_load_file(e, path, &m));
  if (!m) {
    kiln_engine_release(e);
    return;
  }
  long cycles = DEFAULT_CYCLES;
  const char *env = getenv("KILN_LEAK_CYCLES");
  if (env && atol(env) > WARMUP_CYCLES) cycles = atol(env);

  char err[1024] = "";
  int failed = 0;
  uint32_t k = 0;
  for (; k < WARMUP_CYCLES && !failed; k++)
    failed = cycle(m, k, err, sizeof err);
  uint64_t vm0, rss0, vm1, rss1;
  read_status(&vm0, &rss0);
  double t0 = now();
  for (; k < (uint32_t)cycles && !failed; k++)
    failed = cycle(m, k, err, sizeof err);
  double t1 = now();
  read_status(&vm1, &rss1);
  KILN_EXPECTF(t, !failed, "%s", err);

  long measured = (long)k - WARMUP_CYCLES;
  printf("  %ld cycles after %d warm-up: %.2f s (%.1f us/cycle)\n", measured,
         WARMUP_CYCLES, t1 - t0, measured ? (t1 - t0) * 1e6 / measured : 0.0);
  printf("  VmSize %.1f MiB -> %.1f MiB (%+.2f MiB)\n", vm0 / MIB, vm1 / MIB,
         ((double)vm1 - (double)vm0) / MIB);
  printf("  VmRSS  %.1f MiB -> %.1f MiB (%+.2f MiB)\n", rss0 / MIB, rss1 / MIB,
         ((double)rss1 - (double)rss0) / MIB);
  KILN_EXPECT(t, vm0 && rss0);
  KILN_EXPECTF(t, vm1 <= vm0 + VM_SLACK, "VmSize grew by %.2f MiB",
               ((double)vm1 - (double)vm0) / MIB);
  KILN_EXPECTF(t, rss1 <= rss0 + RSS_SLACK, "VmRSS grew by %.2f MiB",
               ((double)rss1 - (double)rss0) / MIB);
  kiln_module_release(m);
  kiln_engine_release(e);
}

KILN_TEST_MAIN(test_instantiate_free_cycles_stay_flat)
