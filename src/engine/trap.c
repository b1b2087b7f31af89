/* Trap state, signal handling, guest code ranges and the deadline watchdog. */
#define _GNU_SOURCE
#include "engine/trap.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "kiln/engine.h"
#include "memory/memory_internal.h"

/* initial-exec: the state lives in the static TLS block, so the signal
 * handler reads it without calling into the dynamic loader. */
static __thread kiln_thread_state kiln_tls
    __attribute__((tls_model("initial-exec")));

#define KILN_ALTSTACK_SIZE (64 * 1024)
#define KILN_DEADLINE_SIGNAL (SIGRTMIN + 5)

static pthread_once_t handlers_once = PTHREAD_ONCE_INIT;
static struct sigaction old_segv, old_bus;
static int handlers_error;
static pthread_key_t altstack_key;

/* ---- Guest code ranges ---------------------------------------------------- */

#define KILN_CODE_SLOTS 8192
static _Atomic uintptr_t code_begin[KILN_CODE_SLOTS];
static _Atomic uintptr_t code_end[KILN_CODE_SLOTS];
static atomic_int code_high;
static pthread_mutex_t code_lock = PTHREAD_MUTEX_INITIALIZER;

int kiln_code_range_add(uintptr_t begin, uintptr_t end) {
  pthread_mutex_lock(&code_lock);
  int high = atomic_load(&code_high), slot = -1;
  for (int i = 0; i < high && slot < 0; i++)
    if (!atomic_load(&code_begin[i])) slot = i;
  if (slot < 0 && high < KILN_CODE_SLOTS) slot = high;
  if (slot >= 0) {
    atomic_store(&code_end[slot], end);
    atomic_store(&code_begin[slot], begin);
    if (slot == high) atomic_store(&code_high, high + 1);
  }
  pthread_mutex_unlock(&code_lock);
  return slot;
}

void kiln_code_range_remove(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&code_lock);
  atomic_store(&code_begin[slot], 0);
  atomic_store(&code_end[slot], 0);
  pthread_mutex_unlock(&code_lock);
}

bool kiln_code_range_contains(uintptr_t pc) {
  int high = atomic_load(&code_high);
  for (int i = 0; i < high; i++) {
    uintptr_t b = atomic_load(&code_begin[i]);
    if (b && pc >= b && pc < atomic_load(&code_end[i])) return true;
  }
  return false;
}

/* ---- Signals ------------------------------------------------------------- */

static void chain_or_crash(int sig, siginfo_t *info, void *uctx,
                           const struct sigaction *old) {
  if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction) {
    old->sa_sigaction(sig, info, uctx);
    return;
  }
  if (old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN &&
      old->sa_handler) {
    old->sa_handler(sig);
    return;
  }
  /* Not a guest trap: restore the default action and return, so the
   * faulting instruction runs again and the process crashes as it would
   * without kiln (core dump, "Segmentation fault"). */
  signal(sig, SIG_DFL);
}

/* What the signal context says about a fault, per architecture. */
#if defined(__x86_64__)
static uintptr_t context_pc(const ucontext_t *uc) {
  return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
}
/* The page-fault error code: bit 1 is set for a write. */
static bool context_is_write(const ucontext_t *uc) {
  return (uc->uc_mcontext.gregs[REG_ERR] & 2) != 0;
}
#elif defined(__aarch64__)
static uintptr_t context_pc(const ucontext_t *uc) {
  return (uintptr_t)uc->uc_mcontext.pc;
}
/* The syndrome register (ESR) sits in a record of __reserved; not read
 * yet, so every fault reports a read. */
static bool context_is_write(const ucontext_t *uc) {
  (void)uc;
  return false;
}
#else
#error "kiln's trap handler reads x86-64 and AArch64 signal contexts only"
#endif

static _Atomic(kiln_fault_hook) fault_hook;

/* Asks the fault hook, if one is set, whether it handled the fault. */
static bool hook_handled(const siginfo_t *info, const ucontext_t *uc) {
  kiln_fault_hook hook = atomic_load(&fault_hook);
  if (!hook) return false;
  int saved = errno; /* the hook may make system calls (mprotect) */
  bool handled = hook(info->si_addr, context_is_write(uc));
  errno = saved;
  return handled;
}

static void fault_handler(int sig, siginfo_t *info, void *uctx) {
  ucontext_t *uc = uctx;
  /* First the hook, for faults on any thread, in guest or host code:
   * handled means the faulting instruction runs again. */
  if (hook_handled(info, uc)) return;
  uintptr_t pc = context_pc(uc);
  uintptr_t addr = (uintptr_t)info->si_addr;
  kiln_thread_state *ts = &kiln_tls;
  if (ts->scope) {
    kiln_trap_kind kind = KILN_TRAP_NONE;
    /* The thread's stack guard: at or below the lowest stack address. */
    if (ts->stack_lo && addr < ts->stack_lo + 4096 &&
        addr + (64u << 20) >= ts->stack_lo)
      kind = KILN_TRAP_STACK_EXHAUSTED;
    else if (kiln_code_range_contains(pc) &&
             kiln_memory_address_is_guarded(addr))
      kind = KILN_TRAP_OUT_OF_BOUNDS;
    if (kind != KILN_TRAP_NONE) {
      ts->kind = kind;
      ts->pc = pc;
      _longjmp(ts->scope->jb, 1);
    }
  }
  chain_or_crash(sig, info, uctx, sig == SIGBUS ? &old_bus : &old_segv);
}

static void deadline_handler(int sig, siginfo_t *info, void *uctx) {
  (void)sig, (void)info;
  uintptr_t pc = context_pc(uctx);
  kiln_thread_state *ts = &kiln_tls;
  /* Only abandon the guest while it runs its own code: host code (WASI,
   * libc) may hold locks. The watchdog signals again until it lands. */
  if (ts->scope && ts->in_call && ts->deadline_ns &&
      kiln_code_range_contains(pc)) {
    ts->kind = KILN_TRAP_TIMEOUT;
    ts->pc = pc;
    _longjmp(ts->scope->jb, 1);
  }
}

static void free_altstack(void *p) {
  stack_t ss = {.ss_flags = SS_DISABLE};
  sigaltstack(&ss, NULL);
  munmap(p, KILN_ALTSTACK_SIZE);
}

static void install_handlers(void) {
  if (pthread_key_create(&altstack_key, free_altstack) != 0) {
    handlers_error = errno ? errno : EAGAIN;
    return;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = fault_handler;
  /* SA_NODEFER: we leave the handler with _longjmp, which does not restore
   * the signal mask, so the signal must not be blocked while it runs. */
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSEGV, &sa, &old_segv) != 0 ||
      sigaction(SIGBUS, &sa, &old_bus) != 0) {
    handlers_error = errno;
    return;
  }
  struct sigaction da;
  memset(&da, 0, sizeof da);
  da.sa_sigaction = deadline_handler;
  da.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
  sigemptyset(&da.sa_mask);
  if (sigaction(KILN_DEADLINE_SIGNAL, &da, NULL) != 0) handlers_error = errno;
}

void kiln_fault_hook_set(kiln_fault_hook fn) {
  /* Faults on threads that never ran a guest reach the hook too, so the
   * process-wide handlers go in now rather than at the first guest call. */
  pthread_once(&handlers_once, install_handlers);
  atomic_store(&fault_hook, fn);
}

kiln_thread_state *kiln_thread_current(void) { return &kiln_tls; }

kiln_thread_state *kiln_thread_prepare(kiln_status *out_error) {
  kiln_thread_state *ts = &kiln_tls;
  *out_error = KILN_OK;
  if (ts->ready) return ts;
  pthread_once(&handlers_once, install_handlers);
  if (handlers_error) {
    *out_error = kiln_status_from_errno(handlers_error,
                                        "installing kiln's trap handlers");
    return NULL;
  }
  stack_t old;
  if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE) &&
      old.ss_size >= KILN_ALTSTACK_SIZE) {
    /* The thread already has a large enough alternate stack: keep it. */
  } else {
    void *p = mmap(NULL, KILN_ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      *out_error = kiln_status_from_errno(errno, "allocating a signal stack");
      return NULL;
    }
    stack_t ss = {.ss_sp = p, .ss_size = KILN_ALTSTACK_SIZE, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
      *out_error = kiln_status_from_errno(errno, "sigaltstack");
      munmap(p, KILN_ALTSTACK_SIZE);
      return NULL;
    }
    pthread_setspecific(altstack_key, p);
  }
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void *addr;
    size_t size;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      ts->stack_lo = (uintptr_t)addr;
      ts->stack_hi = (uintptr_t)addr + size;
    }
    pthread_attr_destroy(&attr);
  }
  ts->ready = true;
  return ts;
}

/* ---- Scopes --------------------------------------------------------------- */

void kiln_trap_scope_push(kiln_thread_state *ts, kiln_trap_scope *sc) {
  sc->prev = ts->scope;
  ts->scope = sc;
}

void kiln_trap_scope_pop(kiln_thread_state *ts, kiln_trap_scope *sc) {
  ts->scope = sc->prev;
}

void kiln_trap_raise(kiln_trap_kind kind, void *pc) {
  kiln_thread_state *ts = &kiln_tls;
  ts->kind = kind;
  ts->pc = (uintptr_t)pc;
  if (!ts->scope) abort(); /* compiled code runs only inside a scope */
  _longjmp(ts->scope->jb, 1);
}

void kiln_trap_raise_status(kiln_status s) {
  kiln_thread_state *ts = &kiln_tls;
  kiln_status_free(ts->host_status);
  ts->host_status = s;
  ts->kind = KILN_TRAP_HOST;
  ts->pc = 0;
  if (!ts->scope) abort();
  _longjmp(ts->scope->jb, 1);
}

kiln_status kiln_trap_take_status(kiln_thread_state *ts, kiln_trap_scope *sc,
                                  kiln_pc_namer namer) {
  ts->scope = sc->prev;
  if (ts->kind == KILN_TRAP_HOST && ts->host_status) {
    kiln_status s = ts->host_status;
    ts->host_status = NULL;
    return s;
  }
  char buf[256];
  const char *name = ts->pc && namer ? namer(ts->pc, buf, sizeof buf) : NULL;
  return kiln_make_trap(ts->kind, name);
}

/* ---- Deadlines ------------------------------------------------------------ */

typedef struct watch {
  pthread_t thread;
  kiln_thread_state *ts;
  int64_t deadline_ns;
  struct watch *next;
} watch;

static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
/* Waits use CLOCK_MONOTONIC deadlines: set on first use (watch_init). */
static pthread_cond_t watch_cond;
static watch *watches;
static bool watchdog_started;

int64_t kiln_now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *watchdog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&watch_lock);
  for (;;) {
    int64_t now = kiln_now_ns(), next = 0;
    for (watch *w = watches; w; w = w->next) {
      if (w->deadline_ns <= now) {
        pthread_kill(w->thread, KILN_DEADLINE_SIGNAL);
        w->deadline_ns = now + 1000000; /* again in 1 ms until it lands */
      }
      if (!next || w->deadline_ns < next) next = w->deadline_ns;
    }
    if (!next) {
      pthread_cond_wait(&watch_cond, &watch_lock);
    } else {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t wait = next - kiln_now_ns();
      if (wait < 0) wait = 0;
      int64_t t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + wait;
      ts.tv_sec = t / 1000000000;
      ts.tv_nsec = t % 1000000000;
      pthread_cond_timedwait(&watch_cond, &watch_lock, &ts);
    }
  }
  return NULL;
}

void kiln_thread_set_deadline(double seconds) {
  kiln_thread_state *ts = &kiln_tls;
  ts->deadline_ns = seconds > 0 ? kiln_now_ns() + (int64_t)(seconds * 1e9) : 0;
}

kiln_status kiln_deadline_enter(kiln_thread_state *ts) {
  if (!ts->deadline_ns || ts->in_call++) return KILN_OK;
  if (kiln_now_ns() >= ts->deadline_ns) {
    ts->in_call = 0;
    return kiln_make_trap(KILN_TRAP_TIMEOUT, NULL);
  }
  watch *w = malloc(sizeof *w);
  if (!w) {
    ts->in_call = 0;
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  w->thread = pthread_self();
  w->ts = ts;
  w->deadline_ns = ts->deadline_ns;
  pthread_mutex_lock(&watch_lock);
  if (!watchdog_started) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&watch_cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    /* The watchdog must not receive its own signal. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    if (pthread_create(&t, &a, watchdog_main, NULL) == 0)
      watchdog_started = true;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&a);
  }
  w->next = watches;
  watches = w;
  pthread_cond_signal(&watch_cond);
  pthread_mutex_unlock(&watch_lock);
  return KILN_OK;
}

void kiln_deadline_leave(kiln_thread_state *ts) {
  if (!ts->in_call || --ts->in_call) return;
  pthread_mutex_lock(&watch_lock);
  for (watch **p = &watches; *p; p = &(*p)->next) {
    if ((*p)->ts == ts) {
      watch *w = *p;
      *p = w->next;
      free(w);
      break;
    }
  }
  pthread_mutex_unlock(&watch_lock);
}
