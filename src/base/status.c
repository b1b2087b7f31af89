/* kiln status payloads: heap records behind the kiln_status pointer. */
#include "kiln/status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct kiln_status_payload {
  kiln_code code;
  kiln_trap_kind trap_kind;
  int exit_code;
  int line;
  const char *file;
  char *function; /* trap: guest function, may be NULL */
  char message[];
};

/* Returned when a payload cannot be allocated: never freed. */
static struct {
  struct kiln_status_payload p;
  char text[32];
} kiln_oom_status = {{KILN_CODE_RESOURCE_EXHAUSTED, KILN_TRAP_NONE, 0, 0,
                      __FILE__, NULL},
                     "out of memory"};

static kiln_status kiln_oom(void) { return &kiln_oom_status.p; }

static kiln_status status_alloc(const char *file, int line, kiln_code code,
                                const char *msg) {
  size_t n = strlen(msg);
  kiln_status s = malloc(sizeof *s + n + 1);
  if (!s) return kiln_oom();
  s->code = code;
  s->trap_kind = KILN_TRAP_NONE;
  s->exit_code = 0;
  s->line = line;
  s->file = file;
  s->function = NULL;
  memcpy(s->message, msg, n + 1);
  return s;
}

kiln_status kiln_make_status_v(const char *file, int line, kiln_code code,
                               const char *fmt, va_list ap) {
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, ap);
  return status_alloc(file, line, code, buf);
}

kiln_status kiln_make_status_at(const char *file, int line, kiln_code code,
                                const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  kiln_status s = kiln_make_status_v(file, line, code, fmt, ap);
  va_end(ap);
  return s;
}

kiln_status kiln_make_status_errno_at(const char *file, int line, int err,
                                      const char *fmt, ...) {
  char buf[1800];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  kiln_code code = KILN_CODE_IO;
  switch (err) {
    case ENOENT: code = KILN_CODE_NOT_FOUND; break;
    case EACCES:
    case EPERM: code = KILN_CODE_PERMISSION_DENIED; break;
    case ENOMEM: code = KILN_CODE_RESOURCE_EXHAUSTED; break;
    case EEXIST: code = KILN_CODE_ALREADY_EXISTS; break;
    case EINVAL: code = KILN_CODE_INVALID_ARGUMENT; break;
    default: break;
  }
  return kiln_make_status_at(file, line, code, "%s: %s", buf, strerror(err));
}

kiln_status kiln_make_trap(kiln_trap_kind kind, const char *function) {
  char buf[512];
  if (function)
    snprintf(buf, sizeof buf, "wasm trap: %s in function '%s'",
             kiln_trap_kind_message(kind), function);
  else
    snprintf(buf, sizeof buf, "wasm trap: %s", kiln_trap_kind_message(kind));
  kiln_code code =
      kind == KILN_TRAP_TIMEOUT ? KILN_CODE_DEADLINE_EXCEEDED : KILN_CODE_TRAP;
  kiln_status s = status_alloc(__FILE__, __LINE__, code, buf);
  if (s == kiln_oom()) return s;
  s->trap_kind = kind;
  if (function) s->function = strdup(function);
  return s;
}

kiln_status kiln_make_exit(int exit_code) {
  char buf[64];
  snprintf(buf, sizeof buf, "guest exited with code %d", exit_code);
  kiln_status s = status_alloc(__FILE__, __LINE__, KILN_CODE_EXIT, buf);
  if (s != kiln_oom()) s->exit_code = exit_code;
  return s;
}

kiln_code kiln_status_code(kiln_status s) { return s ? s->code : KILN_CODE_OK; }
const char *kiln_status_message(kiln_status s) { return s ? s->message : "ok"; }
kiln_trap_kind kiln_status_trap_kind(kiln_status s) {
  return s ? s->trap_kind : KILN_TRAP_NONE;
}
const char *kiln_status_trap_function(kiln_status s) {
  return s ? s->function : NULL;
}
int kiln_status_exit_code(kiln_status s) { return s ? s->exit_code : 0; }
const char *kiln_status_file(kiln_status s) { return s ? s->file : ""; }
int kiln_status_line(kiln_status s) { return s ? s->line : 0; }

kiln_status kiln_status_annotate(kiln_status s, const char *fmt, ...) {
  if (!s || s == kiln_oom()) return s;
  char prefix[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  size_t a = strlen(prefix), b = strlen(s->message);
  kiln_status n = malloc(sizeof *n + a + 2 + b + 1);
  if (!n) return s; /* keep the original: context is a nicety */
  *n = *s;
  memcpy(n->message, prefix, a);
  memcpy(n->message + a, ": ", 2);
  memcpy(n->message + a + 2, s->message, b + 1);
  s->function = NULL; /* moved to n */
  free(s);
  return n;
}

void kiln_status_free(kiln_status s) {
  if (!s || s == kiln_oom()) return;
  free(s->function);
  free(s);
}

const char *kiln_code_name(kiln_code code) {
  switch (code) {
    case KILN_CODE_OK: return "OK";
    case KILN_CODE_INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case KILN_CODE_OUT_OF_RANGE: return "OUT_OF_RANGE";
    case KILN_CODE_NOT_FOUND: return "NOT_FOUND";
    case KILN_CODE_ALREADY_EXISTS: return "ALREADY_EXISTS";
    case KILN_CODE_PERMISSION_DENIED: return "PERMISSION_DENIED";
    case KILN_CODE_RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case KILN_CODE_FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case KILN_CODE_UNIMPLEMENTED: return "UNIMPLEMENTED";
    case KILN_CODE_UNAVAILABLE: return "UNAVAILABLE";
    case KILN_CODE_DATA_LOSS: return "DATA_LOSS";
    case KILN_CODE_INTERNAL: return "INTERNAL";
    case KILN_CODE_IO: return "IO";
    case KILN_CODE_INVALID_MODULE: return "INVALID_MODULE";
    case KILN_CODE_LINK: return "LINK";
    case KILN_CODE_TRAP: return "TRAP";
    case KILN_CODE_EXIT: return "EXIT";
    case KILN_CODE_DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
  }
  return "UNKNOWN";
}

const char *kiln_trap_kind_message(kiln_trap_kind kind) {
  switch (kind) {
    case KILN_TRAP_NONE: return "no trap";
    case KILN_TRAP_OUT_OF_BOUNDS: return "out of bounds memory or table access";
    case KILN_TRAP_INTEGER_OVERFLOW: return "integer overflow";
    case KILN_TRAP_DIVIDE_BY_ZERO: return "integer divide by zero";
    case KILN_TRAP_INVALID_CONVERSION: return "invalid conversion to integer";
    case KILN_TRAP_UNREACHABLE: return "unreachable executed";
    case KILN_TRAP_INDIRECT_CALL: return "indirect call to null, out of range or mismatched type";
    case KILN_TRAP_STACK_EXHAUSTED: return "call stack exhausted";
    case KILN_TRAP_TIMEOUT: return "interrupted: deadline exceeded";
    case KILN_TRAP_HOST: return "host function failed";
    case KILN_TRAP_UNCAUGHT_EXCEPTION: return "uncaught exception";
  }
  return "unknown trap";
}
