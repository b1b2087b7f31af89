/* Traps: per-thread trap state, the signal handler, guest code ranges, and
 * deadlines. Independent of how guest code was compiled.
 *
 * A guest call runs inside a trap scope (kiln_trap_scope_enter sets a
 * jump target in this thread's state; KILN_TRAP_SCOPE_TRY is _setjmp on
 * it). Compiled code traps by calling kiln_trap_raise(); hardware faults in
 * guest code (guard pages of a memory, the thread's stack guard) arrive as
 * SIGSEGV/SIGBUS on an alternate signal stack and are turned into the same
 * jump. A fault whose program counter is not in guest code, or that is not
 * a guard-page access, is a host crash: the handler restores the default
 * action so the process crashes normally (core dump, exit status). */
#ifndef KILN_ENGINE_TRAP_H_
#define KILN_ENGINE_TRAP_H_

#include <setjmp.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "kiln/status.h"

typedef struct kiln_trap_scope {
  jmp_buf jb;
  struct kiln_trap_scope *prev;
} kiln_trap_scope;

typedef struct kiln_thread_state {
  kiln_trap_scope *scope;  /* innermost active scope, NULL outside guests */
  kiln_trap_kind kind;     /* set before jumping */
  uintptr_t pc;            /* where the trap happened (0: unknown) */
  kiln_status host_status; /* a host function's status (kind HOST/EXIT) */
  bool ready;              /* alternate stack installed */
  uintptr_t stack_lo, stack_hi;
  /* Deadline (CLOCK_MONOTONIC ns; 0: none) and whether this thread is
   * inside a guest call the watchdog may interrupt. */
  int64_t deadline_ns;
  volatile int in_call;
} kiln_thread_state;

/* This thread's state, prepared on first use (alternate signal stack,
 * stack bounds, process-wide handlers). NULL if preparation failed. */
kiln_thread_state *kiln_thread_prepare(kiln_status *out_error);
kiln_thread_state *kiln_thread_current(void);

/* Enter/leave a scope. Usage:
 *   kiln_trap_scope sc; kiln_thread_state *ts = ...;
 *   kiln_trap_scope_push(ts, &sc);
 *   if (_setjmp(sc.jb) == 0) { ...guest code...; kiln_trap_scope_pop(ts, &sc); }
 *   else { kiln_status s = kiln_trap_take_status(ts, &sc, namer); } */
void kiln_trap_scope_push(kiln_thread_state *ts, kiln_trap_scope *sc);
void kiln_trap_scope_pop(kiln_thread_state *ts, kiln_trap_scope *sc);

/* Jump to the innermost scope with a trap (from compiled code). */
__attribute__((noreturn)) void kiln_trap_raise(kiln_trap_kind kind, void *pc);
/* Jump to the innermost scope with a host status (ownership passes). */
__attribute__((noreturn)) void kiln_trap_raise_status(kiln_status s);

/* After the jump: pop the scope and build the status. `name_of_pc` maps a
 * code address to a guest function name (may return NULL). */
typedef const char *(*kiln_pc_namer)(uintptr_t pc, char *buf, size_t size);
kiln_status kiln_trap_take_status(kiln_thread_state *ts, kiln_trap_scope *sc,
                                  kiln_pc_namer namer);

/* Guest code ranges, readable from the signal handler. */
int kiln_code_range_add(uintptr_t begin, uintptr_t end);
void kiln_code_range_remove(int slot);
bool kiln_code_range_contains(uintptr_t pc);

/* A hook the SIGSEGV/SIGBUS handler calls first, for a fault on any thread
 * (guest or host code, inside a guest call or not), before it decides
 * between a guest trap and a host crash. addr is the faulting address;
 * is_write comes from the x86-64 page-fault error code (always false on
 * other architectures). Returning true means the hook dealt with the fault
 * (made a write-protected page writable, say): the handler returns and the
 * faulting instruction runs again. Returning false lets the handler go on
 * as if there were no hook.
 *
 * The hook runs in a signal handler: only async-signal-safe work (atomics,
 * mprotect; no locks, no malloc); errno is preserved around it. One hook
 * per process; NULL removes it; setting is atomic and may race with faults
 * (a fault sees the old or the new hook). Setting a hook also installs
 * kiln's signal handlers, process-wide. The device's coherence code uses it
 * to track guest and host writes to write-protected pages. */
typedef bool (*kiln_fault_hook)(void *addr, bool is_write);
void kiln_fault_hook_set(kiln_fault_hook fn);

/* Deadlines (see kiln_thread_set_deadline in kiln/engine.h). */
int64_t kiln_now_ns(void);
/* Marks the start/end of an outermost guest call for the watchdog. Returns
 * a TIMEOUT status at entry when the deadline has already passed. */
kiln_status kiln_deadline_enter(kiln_thread_state *ts);
void kiln_deadline_leave(kiln_thread_state *ts);

#endif /* KILN_ENGINE_TRAP_H_ */
