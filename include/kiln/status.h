/* kiln status values.
 *
 * A kiln_status is a pointer that is NULL on success and otherwise owns a
 * heap payload with a code, the file and line where it was made, a message,
 * and (for traps) the trap kind and the guest function it happened in.
 * Success costs nothing: KILN_OK is a null pointer.
 *
 * Ownership: whoever receives a non-OK status owns it and must either return
 * it further up or free it with kiln_status_free(). All functions here accept
 * KILN_OK. Thread-safe: statuses are plain values with no shared state.
 *
 * If allocating a payload fails, kiln returns a static "out of memory"
 * status that kiln_status_free() leaves alone, so error paths never fail. */
#ifndef KILN_STATUS_H_
#define KILN_STATUS_H_

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kiln_code {
  KILN_CODE_OK = 0,
  KILN_CODE_INVALID_ARGUMENT,   /* caller passed something malformed */
  KILN_CODE_OUT_OF_RANGE,       /* offset/length/index outside an object */
  KILN_CODE_NOT_FOUND,          /* file, export, import, device absent */
  KILN_CODE_ALREADY_EXISTS,
  KILN_CODE_PERMISSION_DENIED,  /* sandbox refused (e.g. path escapes) */
  KILN_CODE_RESOURCE_EXHAUSTED, /* memory, address space, limits */
  KILN_CODE_FAILED_PRECONDITION,/* object in the wrong state */
  KILN_CODE_UNIMPLEMENTED,      /* feature not supported by this engine */
  KILN_CODE_UNAVAILABLE,        /* e.g. no GPU / driver on this machine */
  KILN_CODE_DATA_LOSS,          /* corrupt file, cache entry, snapshot */
  KILN_CODE_INTERNAL,           /* a kiln bug or a failing tool */
  KILN_CODE_IO,                 /* an OS call failed */
  KILN_CODE_INVALID_MODULE,     /* .wasm is malformed or fails validation */
  KILN_CODE_LINK,               /* imports do not match what was supplied */
  KILN_CODE_TRAP,               /* the guest trapped: see trap kind */
  KILN_CODE_EXIT,               /* the guest called proc_exit: see exit code */
  KILN_CODE_DEADLINE_EXCEEDED,  /* --timeout fired (also a trap kind) */
} kiln_code;

/* Why a guest stopped. Mirrors the Wasm spec's trap reasons plus kiln's own. */
typedef enum kiln_trap_kind {
  KILN_TRAP_NONE = 0,
  KILN_TRAP_OUT_OF_BOUNDS,      /* memory or table access out of bounds */
  KILN_TRAP_INTEGER_OVERFLOW,   /* signed division overflow, float->int */
  KILN_TRAP_DIVIDE_BY_ZERO,
  KILN_TRAP_INVALID_CONVERSION, /* NaN to integer */
  KILN_TRAP_UNREACHABLE,
  KILN_TRAP_INDIRECT_CALL,      /* call_indirect: null, bad index or type */
  KILN_TRAP_STACK_EXHAUSTED,    /* call stack exhausted */
  KILN_TRAP_TIMEOUT,            /* interrupted by a deadline */
  KILN_TRAP_HOST,               /* a host function failed the call */
  KILN_TRAP_UNCAUGHT_EXCEPTION,
} kiln_trap_kind;

typedef struct kiln_status_payload *kiln_status;
#define KILN_OK ((kiln_status)0)

#define KILN_RETURN_IF_ERROR(expr)  \
  do {                              \
    kiln_status s_ = (expr);        \
    if (s_) return s_;              \
  } while (0)

kiln_status kiln_make_status_at(const char *file, int line, kiln_code code,
                                const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
kiln_status kiln_make_status_v(const char *file, int line, kiln_code code,
                               const char *fmt, va_list ap);
#define kiln_make_status(code, ...) \
  kiln_make_status_at(__FILE__, __LINE__, (code), __VA_ARGS__)

/* A trap status: code KILN_CODE_TRAP (or DEADLINE_EXCEEDED for timeouts),
 * with the trap kind and the guest function name (may be NULL). */
kiln_status kiln_make_trap(kiln_trap_kind kind, const char *function);
/* A proc_exit status: code KILN_CODE_EXIT carrying the guest's exit code. */
kiln_status kiln_make_exit(int exit_code);

kiln_code kiln_status_code(kiln_status s);
/* The message (never NULL; "ok" for KILN_OK). Valid until the status is
 * freed. For traps: "<reason> in function '<name>'". */
const char *kiln_status_message(kiln_status s);
kiln_trap_kind kiln_status_trap_kind(kiln_status s);
/* Guest function a trap happened in, or NULL when unknown. */
const char *kiln_status_trap_function(kiln_status s);
int kiln_status_exit_code(kiln_status s);
const char *kiln_status_file(kiln_status s);
int kiln_status_line(kiln_status s);

/* Prefix more context to a status' message ("loading x.wasm: ...").
 * Takes ownership of s and returns it (or a replacement). KILN_OK stays OK. */
kiln_status kiln_status_annotate(kiln_status s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void kiln_status_free(kiln_status s);

const char *kiln_code_name(kiln_code code);
const char *kiln_trap_kind_message(kiln_trap_kind kind);

/* Status from errno at the place an OS call failed. */
#define kiln_status_from_errno(err, ...) \
  kiln_make_status_errno_at(__FILE__, __LINE__, (err), __VA_ARGS__)
kiln_status kiln_make_status_errno_at(const char *file, int line, int err,
                                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#ifdef __cplusplus
}
#endif
#endif /* KILN_STATUS_H_ */
