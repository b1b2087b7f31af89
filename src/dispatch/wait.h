/* Waiting on a 32-bit atomic word: spin briefly, then sleep in the kernel
 * (futex). The spin covers the common case where the awaited change is a
 * few microseconds away (a dispatch of small workgroups); the futex keeps
 * idle workers off the CPU. bench/dispatch's native baseline pool uses this
 * same policy so the comparison measures kiln, not the waiting scheme. */
#ifndef KILN_DISPATCH_WAIT_H_
#define KILN_DISPATCH_WAIT_H_

#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef KILN_WAIT_SPINS
#define KILN_WAIT_SPINS 2000
#endif

static inline void kiln_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

/* Returns the word's value once it differs from `old`. */
static inline uint32_t kiln_wait_change(_Atomic uint32_t *w, uint32_t old) {
  uint32_t v;
  for (int i = 0; i < KILN_WAIT_SPINS; i++) {
    v = atomic_load_explicit(w, memory_order_acquire);
    if (v != old) return v;
    kiln_cpu_relax();
  }
  for (;;) {
    v = atomic_load_explicit(w, memory_order_acquire);
    if (v != old) return v;
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, old, NULL, NULL, 0);
  }
}

static inline void kiln_wake_all(_Atomic uint32_t *w) {
  syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL,
          0);
}

#endif /* KILN_DISPATCH_WAIT_H_ */
