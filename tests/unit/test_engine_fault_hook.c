/* The engine's fault hook (engine/trap.h): called first for every SIGSEGV,
 * from guest code and from host code on any thread, with whether the access
 * was a write; when it handles the fault the instruction runs again. The
 * GPU coherence code tracks writes to write-protected pages of a guest
 * memory this way. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "engine/trap.h"
#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

/* The page the hook watches, and what it saw; all plain atomics, as the
 * hook runs in a signal handler. */
static _Atomic uintptr_t watched_page;
static atomic_size_t page_size;
static atomic_int faults_seen, faults_handled;
static _Atomic uintptr_t last_addr;
static atomic_bool last_is_write;

static bool record_and_unprotect(void *addr, bool is_write) {
  uintptr_t a = (uintptr_t)addr, page = atomic_load(&watched_page);
  atomic_fetch_add(&faults_seen, 1);
  if (!page || a < page || a >= page + atomic_load(&page_size)) return false;
  atomic_store(&last_addr, a);
  atomic_store(&last_is_write, is_write);
  if (mprotect((void *)page, atomic_load(&page_size),
               PROT_READ | PROT_WRITE) != 0)
    return false;
  atomic_fetch_add(&faults_handled, 1);
  return true;
}

/* Protects the page at `offset` of m with `prot` and watches it. */
static uint8_t *watch(kiln_memory *m, uint64_t offset, int prot) {
  uint8_t *page = kiln_memory_base(m) + offset;
  mprotect(page, atomic_load(&page_size), prot);
  atomic_store(&watched_page, (uintptr_t)page);
  atomic_store(&last_addr, 0);
  atomic_store(&last_is_write, false);
  atomic_store(&faults_handled, 0);
  return page;
}

static void *write_from_plain_thread(void *arg) {
  *(volatile uint32_t *)arg = 0xc0ffee;
  return NULL;
}

static void test_hook_sees_guest_and_host_writes(kiln_test *t) {
  atomic_store(&page_size, (size_t)sysconf(_SC_PAGESIZE));
  kiln_module *mod = kiln_test_load_guest(t, "traps");
  kiln_instance *i = NULL;
  if (mod) KILN_EXPECT_OK(t, kiln_instance_create(mod, NULL, NULL, &i));
  kiln_memory *m = i ? kiln_instance_memory(i, 0) : NULL;
  if (!m) {
    kiln_instance_release(i);
    kiln_module_release(mod);
    return;
  }
  const uint64_t off = 2 * atomic_load(&page_size);
  kiln_fault_hook_set(record_and_unprotect);

  /* A guest store into the read-only page: seen as a write, then done. */
  uint8_t *page = watch(m, off, PROT_READ);
  kiln_val args[2] = {kiln_val_i32((uint32_t)off + 16),
                      kiln_val_i32(0x12345678)};
  KILN_EXPECT_OK(t, kiln_instance_call(i, "store", args, 2, NULL, 0));
  KILN_EXPECT(t, atomic_load(&faults_handled) == 1);
  KILN_EXPECT(t, atomic_load(&last_addr) == (uintptr_t)(page + 16));
  KILN_EXPECT(t, atomic_load(&last_is_write));
  uint32_t v = 0;
  memcpy(&v, page + 16, 4);
  KILN_EXPECT(t, v == 0x12345678);

  /* A host store on this thread, outside any guest call. */
  page = watch(m, off, PROT_READ);
  *(volatile uint32_t *)(page + 32) = 7;
  KILN_EXPECT(t, atomic_load(&faults_handled) == 1);
  KILN_EXPECT(t, atomic_load(&last_addr) == (uintptr_t)(page + 32));
  KILN_EXPECT(t, atomic_load(&last_is_write));
  KILN_EXPECT(t, *(volatile uint32_t *)(page + 32) == 7);

  /* A host store on a thread that never ran a guest. */
  page = watch(m, off, PROT_READ);
  pthread_t th;
  pthread_create(&th, NULL, write_from_plain_thread, page + 48);
  pthread_join(th, NULL);
  KILN_EXPECT(t, atomic_load(&faults_handled) == 1);
  KILN_EXPECT(t, atomic_load(&last_is_write));
  KILN_EXPECT(t, *(volatile uint32_t *)(page + 48) == 0xc0ffee);

  /* A read of an inaccessible page is reported as a read. */
  page = watch(m, off, PROT_NONE);
  KILN_EXPECT(t, *(volatile uint32_t *)(page + 16) == 0x12345678);
  KILN_EXPECT(t, atomic_load(&faults_handled) == 1);
  KILN_EXPECT(t, !atomic_load(&last_is_write));

  /* Faults the hook declines go on to the usual decision: a guest's
   * access past the memory's size is still an out-of-bounds trap. */
  atomic_store(&watched_page, 0);
  int seen = atomic_load(&faults_seen);
  args[0] = kiln_val_i32((uint32_t)kiln_memory_size(m));
  kiln_status s = kiln_instance_call(i, "store", args, 2, NULL, 0);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_TRAP &&
                     kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  KILN_EXPECT(t, atomic_load(&faults_seen) == seen + 1);

  /* Removed: no longer called. */
  kiln_fault_hook_set(NULL);
  s = kiln_instance_call(i, "store", args, 2, NULL, 0);
  KILN_EXPECT(t, kiln_status_trap_kind(s) == KILN_TRAP_OUT_OF_BOUNDS);
  kiln_status_free(s);
  KILN_EXPECT(t, atomic_load(&faults_seen) == seen + 1);
  kiln_instance_release(i);
  kiln_module_release(mod);
}

KILN_TEST_MAIN(test_hook_sees_guest_and_host_writes)
