/* spec_runner: the WebAssembly core spec tests, run through kiln's engine.
 *
 *   spec_runner [-v] [--jobs N] [--filter SUBSTR] [--timeout SECONDS]
 *               [--keep] [--no-fork] [--wast2json PATH] SPEC_DIR
 *
 * --keep leaves wast2json's output folders behind; --no-fork runs the files
 * one after another in this process, for a debugger (a crash then ends the
 * whole run).
 *
 * Every .wast file in SPEC_DIR is split by `wast2json` (plain: no extra
 * features, so that what this testsuite revision calls invalid stays
 * invalid) into binary modules and a JSON list of commands, which are then
 * run against a fresh engine, linker and "spectest" host module.
 *
 * One child process per .wast file, up to --jobs at once (default: the
 * number of cores). A child that crashes or hangs costs only its own file:
 * the parent reports it FAILED with the signal and counts the file's
 * remaining commands as failed. Counts live in a shared anonymous mapping
 * that the child updates after every command, so the parent knows how far
 * a child got even when it died mid-command; the child's text (failure
 * lines, notes, compiler messages) comes back through a pipe and is printed
 * under the file's line, in file-name order, whatever the finishing order.
 *
 * What counts: every command except `register` (module, action and all
 * assert_* commands), which is how wabt's spectest-interp counts its
 * "tests", so the totals compare directly with it.
 *  - module: loads, validates, compiles and instantiates.
 *  - action: the call returns without trapping.
 *  - assert_return: results equal bit for bit; "nan:canonical" and
 *    "nan:arithmetic" as the spec defines them; externref N is the host
 *    pointer (void *)(N + 1), so that 0 is not NULL.
 *  - assert_trap: the call traps (KILN_CODE_TRAP). A trap kind other than
 *    the spec's text suggests is printed as a note and still passes.
 *  - assert_exhaustion: a trap of kind KILN_TRAP_STACK_EXHAUSTED.
 *  - assert_invalid, assert_malformed (binary): rejected with
 *    KILN_CODE_INVALID_MODULE by kiln_module_validate or kiln_module_load.
 *  - assert_malformed (text): skipped. The module is malformed *text*,
 *    which wast2json can only save as .wat; kiln reads binaries, so there
 *    is nothing for it to reject.
 *  - assert_unlinkable: instantiation fails with KILN_CODE_LINK.
 *  - assert_uninstantiable: instantiation fails with KILN_CODE_TRAP.
 * simd_*.wast files are skipped whole (kiln's wasm2c engine cannot run
 * SIMD) and their commands counted as skipped. A guest call or start
 * function is given GUEST_DEADLINE_S; a whole file --timeout (default
 * 900 s), after which its child is killed.
 *
 * Output: one line per file, "FILE: P passed, F failed, S skipped", with
 * "  FILE:LINE: ..." lines under it for failures, and last the line
 * "wasm-spec: N passed, M failed, K skipped". Exit status 1 if anything
 * failed, 2 on a usage or setup error. */
#define _GNU_SOURCE
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln/status.h"

#ifndef KILN_WAST2JSON
#define KILN_WAST2JSON "wast2json"
#endif

#define SIMD_REASON \
  "SIMD: not supported by the wasm2c engine (wasm2c 1.0.32 aborts on SIMD)"

/* Failure lines printed per file unless -v; the rest are only counted. */
enum { MAX_FAILURE_LINES = 40 };
/* Most arguments or results one spec-test call has is far below this. */
enum { MAX_VALUES = 64 };
/* A guest call or instantiation (start function) running longer than this
 * is stopped with a TIMEOUT status: the command fails, the file goes on.
 * Spec-test calls take microseconds; this only catches endless loops. */
#define GUEST_DEADLINE_S 60.0

/* Why commands were skipped: one bit per reason, shown on the file line. */
enum {
  SKIP_SIMD = 1u << 0,
  SKIP_TEXT = 1u << 1,
  SKIP_NUL_NAME = 1u << 2,
};
static const char *const kSkipReasons[] = {
    SIMD_REASON,
    "text-format module",
    "export name with a NUL byte (kiln's API takes C strings)",
};

/* ---- Options ------------------------------------------------------------ */

typedef struct options {
  bool verbose;
  bool keep;    /* keep the wast2json output folders */
  bool no_fork; /* run files one by one in this process (for debuggers) */
  int jobs;
  double timeout_s; /* per file, wall clock */
  const char *filter;
  const char *wast2json;
  const char *spec_dir;
} options;

/* ---- State shared between a child and the parent ------------------------ */

/* One per file, in a MAP_SHARED anonymous mapping made before any fork.
 * Only the file's child writes it; the parent reads it after the child is
 * gone, so no synchronisation is needed beyond the child's exit. */
typedef struct file_slot {
  int total; /* commands that count; -1 until the JSON is parsed */
  int passed;
  int failed;
  int skipped;
  int line;          /* .wast line of the command being run */
  unsigned skip_why; /* SKIP_* bits */
} file_slot;

/* ---- Small helpers ------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "spec_runner: out of memory\n");
    exit(2);
  }
  return p;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(xmalloc(n), s, n);
}

static char *path_join(const char *dir, const char *name) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = xmalloc(n);
  snprintf(p, n, "%s/%s", dir, name);
  return p;
}

/* Whole file into a malloc'd buffer with a NUL after the last byte. */
static bool read_file(const char *path, uint8_t **out, size_t *out_size) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  size_t cap = 1 << 16, len = 0;
  uint8_t *buf = xmalloc(cap);
  for (;;) {
    if (len + 1 >= cap) {
      cap *= 2;
      uint8_t *nb = realloc(buf, cap);
      if (!nb) {
        free(buf);
        fclose(f);
        return false;
      }
      buf = nb;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0) break;
  }
  bool ok = !ferror(f);
  fclose(f);
  if (!ok) {
    free(buf);
    return false;
  }
  buf[len] = 0;
  *out = buf;
  *out_size = len;
  return true;
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char *p = path_join(dir, e->d_name);
      unlink(p);
      free(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

static bool is_simd_file(const char *name) {
  return strncmp(name, "simd_", 5) == 0;
}

/* cJSON stops a decoded string at its first NUL, so "\u0000" inside a name
 * would silently become a shorter, different name (names.wast exports both
 * "" and "\00\01..."). Before parsing, each real "\u0000" escape becomes the
 * byte 0xFF, which valid UTF-8 never holds and cJSON copies through, so a
 * name that held a NUL can be recognised and skipped. In place: the text
 * only gets shorter. */
static void mark_nul_escapes(char *text) {
  char *r = text, *w = text;
  bool in_string = false;
  while (*r) {
    char ch = *r;
    if (!in_string) {
      if (ch == '"') in_string = true;
      *w++ = *r++;
      continue;
    }
    if (ch == '"') {
      in_string = false;
      *w++ = *r++;
    } else if (ch == '\\' && r[1] == 'u' && !strncmp(r + 2, "0000", 4)) {
      *w++ = (char)0xFF;
      r += 6;
    } else if (ch == '\\' && r[1]) {
      *w++ = *r++;
      *w++ = *r++;
    } else {
      *w++ = *r++;
    }
  }
  *w = 0;
}

static bool has_nul_mark(const char *s) {
  return strchr(s, (char)0xFF) != NULL;
}

/* ---- A file's run (in the child) ---------------------------------------- */

typedef struct named_instance {
  char *name;
  kiln_instance *inst;
} named_instance;

typedef struct spec_ctx {
  const options *opt;
  const char *file; /* base name, for messages */
  const char *dir;  /* wast2json output folder */
  file_slot *slot;
  int failure_lines; /* printed so far */

  kiln_engine *engine;
  kiln_linker *linker;
  kiln_memory *spectest_memory;
  kiln_instance_options inst_opts;
  kiln_instance *current; /* the last module instantiated, or NULL */
  named_instance *named;
  size_t named_count;
} spec_ctx;

static void pass(spec_ctx *c) { c->slot->passed++; }

static void skip(spec_ctx *c, unsigned why) {
  c->slot->skipped++;
  c->slot->skip_why |= why;
}

static void fail(spec_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(spec_ctx *c, int line, const char *fmt, ...) {
  c->slot->failed++;
  if (!c->opt->verbose && c->failure_lines >= MAX_FAILURE_LINES) return;
  c->failure_lines++;
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("  %s:%d: %s\n", c->file, line, msg);
}

static void note(spec_ctx *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(spec_ctx *c, int line, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  printf("  %s:%d: note: %s\n", c->file, line, msg);
}

/* "CODE: message" of a status into buf, for failure lines. */
static const char *status_text(kiln_status s, char *buf, size_t size) {
  if (!s) {
    snprintf(buf, size, "ok");
  } else if (kiln_status_code(s) == KILN_CODE_TRAP) {
    snprintf(buf, size, "trap (%s): %s",
             kiln_trap_kind_message(kiln_status_trap_kind(s)),
             kiln_status_message(s));
  } else {
    snprintf(buf, size, "%s: %s", kiln_code_name(kiln_status_code(s)),
             kiln_status_message(s));
  }
  return buf;
}

/* ---- Values -------------------------------------------------------------- */

static bool parse_valtype(const char *s, kiln_valtype *out) {
  static const struct {
    const char *name;
    kiln_valtype type;
  } kTypes[] = {
      {"i32", KILN_I32},
      {"i64", KILN_I64},
      {"f32", KILN_F32},
      {"f64", KILN_F64},
      {"v128", KILN_V128},
      {"funcref", KILN_FUNCREF},
      {"externref", KILN_EXTERNREF},
  };
  for (size_t i = 0; i < sizeof kTypes / sizeof kTypes[0]; i++) {
    if (!strcmp(s, kTypes[i].name)) {
      *out = kTypes[i].type;
      return true;
    }
  }
  return false;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
  if (!s || !*s || *s == '-') return false;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > max) return false;
  *out = v;
  return true;
}

/* An externref value N from the JSON as a host pointer: N + 1, so that
 * (ref.extern 0) is not the null reference. */
static void *extern_ptr(uint64_t n) { return (void *)(uintptr_t)(n + 1); }

/* A number of type t with the given bits. */
static kiln_val val_of_bits(kiln_valtype t, uint64_t bits) {
  kiln_val v;
  memset(&v, 0, sizeof v);
  v.type = t;
  switch (t) {
    case KILN_I32:
      v.of.i32 = (uint32_t)bits;
      break;
    case KILN_I64:
      v.of.i64 = bits;
      break;
    case KILN_F32: {
      uint32_t b = (uint32_t)bits;
      memcpy(&v.of.f32, &b, 4);
      break;
    }
    case KILN_F64:
      memcpy(&v.of.f64, &bits, 8);
      break;
    default:
      break;
  }
  return v;
}

static uint64_t val_bits(const kiln_val *v) {
  switch (v->type) {
    case KILN_I32:
      return v->of.i32;
    case KILN_I64:
      return v->of.i64;
    case KILN_F32: {
      uint32_t b;
      memcpy(&b, &v->of.f32, 4);
      return b;
    }
    case KILN_F64: {
      uint64_t b;
      memcpy(&b, &v->of.f64, 8);
      return b;
    }
    default:
      return (uint64_t)(uintptr_t)v->of.ref;
  }
}

/* {"type": T, "value": V} as wast2json writes an argument or an expected
 * result (`role`, for messages): numbers as the decimal of their bits,
 * references as "null" or, for externref, a number N. The special values
 * of expected results are left to the caller: *out_text is V (NULL when
 * absent) and *out_type T; false (with a message) only when T is unknown. */
static bool parse_typed(const cJSON *j, const char *role, kiln_valtype *out_type,
                        const char **out_text, char *err, size_t esize) {
  const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "type");
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "value");
  if (!cJSON_IsString(t) || !parse_valtype(t->valuestring, out_type)) {
    snprintf(err, esize, "%s of unknown type", role);
    return false;
  }
  *out_text = cJSON_IsString(v) ? v->valuestring : NULL;
  return true;
}

/* The value `text` of type `type` (see parse_typed). */
static bool parse_value(kiln_valtype type, const char *text, const char *role,
                        kiln_val *out, char *err, size_t esize) {
  memset(out, 0, sizeof *out);
  out->type = type;
  uint64_t bits = 0;
  switch (type) {
    case KILN_I32:
    case KILN_F32:
    case KILN_I64:
    case KILN_F64: {
      bool narrow = type == KILN_I32 || type == KILN_F32;
      if (!parse_u64(text, narrow ? UINT32_MAX : UINT64_MAX, &bits)) break;
      *out = val_of_bits(type, bits);
      return true;
    }
    case KILN_FUNCREF:
    case KILN_EXTERNREF:
      if (text && !strcmp(text, "null")) return true; /* ref stays NULL */
      if (type == KILN_EXTERNREF && parse_u64(text, UINTPTR_MAX - 1, &bits)) {
        out->of.ref = extern_ptr(bits);
        return true;
      }
      break;
    case KILN_V128:
      snprintf(err, esize, "v128 %ss are not supported", role);
      return false;
  }
  snprintf(err, esize, "bad %s %s \"%s\"", kiln_valtype_name(type), role,
           text ? text : "(none)");
  return false;
}

static bool parse_arg(const cJSON *j, kiln_val *out, char *err, size_t esize) {
  kiln_valtype type;
  const char *text;
  return parse_typed(j, "argument", &type, &text, err, esize) &&
         parse_value(type, text, "argument", out, err, esize);
}

/* What an expected result accepts. */
typedef enum expect_how {
  EXPECT_VALUE,          /* bits equal (numbers), or ref equal */
  EXPECT_NAN_CANONICAL,  /* any sign, canonical payload */
  EXPECT_NAN_ARITHMETIC, /* any sign, payload's top bit set */
  EXPECT_REF_NONNULL,    /* funcref with no value: any non-null function */
} expect_how;

typedef struct expect {
  expect_how how;
  kiln_val value; /* its type always; its bits or ref for EXPECT_VALUE */
} expect;

static bool parse_expect(const cJSON *j, expect *out, char *err, size_t esize) {
  kiln_valtype type;
  const char *text;
  memset(out, 0, sizeof *out);
  if (!parse_typed(j, "result", &type, &text, err, esize)) return false;
  out->value.type = type;
  bool is_float = type == KILN_F32 || type == KILN_F64;
  if (is_float && text && !strcmp(text, "nan:canonical")) {
    out->how = EXPECT_NAN_CANONICAL;
  } else if (is_float && text && !strcmp(text, "nan:arithmetic")) {
    out->how = EXPECT_NAN_ARITHMETIC;
  } else if (!text && type == KILN_FUNCREF) {
    out->how = EXPECT_REF_NONNULL;
  } else {
    out->how = EXPECT_VALUE;
    return parse_value(type, text, "result", &out->value, err, esize);
  }
  return true;
}

static bool expect_matches(const expect *e, const kiln_val *v) {
  kiln_valtype type = e->value.type;
  if (v->type != type) return false;
  uint64_t bits = val_bits(v);
  bool f32 = type == KILN_F32;
  uint64_t exp_mask = f32 ? 0x7f800000u : 0x7ff0000000000000u;
  uint64_t frac_mask = f32 ? 0x007fffffu : 0x000fffffffffffffu;
  uint64_t quiet = f32 ? 0x00400000u : 0x0008000000000000u;
  switch (e->how) {
    case EXPECT_VALUE:
      if (type == KILN_FUNCREF || type == KILN_EXTERNREF)
        return v->of.ref == e->value.of.ref;
      return bits == val_bits(&e->value);
    case EXPECT_NAN_CANONICAL:
      return (bits & exp_mask) == exp_mask && (bits & frac_mask) == quiet;
    case EXPECT_NAN_ARITHMETIC:
      return (bits & exp_mask) == exp_mask && (bits & quiet) != 0;
    case EXPECT_REF_NONNULL:
      return v->of.ref != NULL;
  }
  return false;
}

static const char *format_val(const kiln_val *v, char *buf, size_t size) {
  switch (v->type) {
    case KILN_I32:
      snprintf(buf, size, "i32:%" PRIu32 " (0x%08" PRIx32 ")", v->of.i32,
               v->of.i32);
      break;
    case KILN_I64:
      snprintf(buf, size, "i64:%" PRIu64 " (0x%016" PRIx64 ")", v->of.i64,
               v->of.i64);
      break;
    case KILN_F32:
      snprintf(buf, size, "f32:%.9g (0x%08" PRIx64 ")", (double)v->of.f32,
               val_bits(v));
      break;
    case KILN_F64:
      snprintf(buf, size, "f64:%.17g (0x%016" PRIx64 ")", v->of.f64,
               val_bits(v));
      break;
    case KILN_FUNCREF:
    case KILN_EXTERNREF:
      if (!v->of.ref)
        snprintf(buf, size, "%s:null", kiln_valtype_name(v->type));
      else if (v->type == KILN_EXTERNREF)
        snprintf(buf, size, "externref:%" PRIuPTR, (uintptr_t)v->of.ref - 1);
      else
        snprintf(buf, size, "funcref:%p", v->of.ref);
      break;
    default:
      snprintf(buf, size, "%s", kiln_valtype_name(v->type));
      break;
  }
  return buf;
}

static const char *format_expect(const expect *e, char *buf, size_t size) {
  const char *tn = kiln_valtype_name(e->value.type);
  switch (e->how) {
    case EXPECT_NAN_CANONICAL:
      snprintf(buf, size, "%s:nan:canonical", tn);
      return buf;
    case EXPECT_NAN_ARITHMETIC:
      snprintf(buf, size, "%s:nan:arithmetic", tn);
      return buf;
    case EXPECT_REF_NONNULL:
      snprintf(buf, size, "%s:(any non-null)", tn);
      return buf;
    case EXPECT_VALUE:
      break;
  }
  return format_val(&e->value, buf, size);
}

/* ---- The spectest host module ------------------------------------------- */

static bool g_verbose;

static kiln_status spectest_print(kiln_caller *caller, const kiln_val *args,
                                  kiln_val *results) {
  const kiln_host_func *f = kiln_caller_user(caller);
  if (!g_verbose) return KILN_OK;
  char line[512], v[96];
  size_t n =
      (size_t)snprintf(line, sizeof line, "called host spectest.%s(", f->name);
  for (uint32_t i = 0; i < f->type.param_count && n < sizeof line; i++)
    n += (size_t)snprintf(line + n, sizeof line - n, "%s%s", i ? ", " : "",
                          format_val(&args[i], v, sizeof v));
  printf("  %s) =>\n", line);
  return KILN_OK;
}

static kiln_status define_spectest(spec_ctx *c) {
  static const kiln_valtype kI32[] = {KILN_I32};
  static const kiln_valtype kI64[] = {KILN_I64};
  static const kiln_valtype kF32[] = {KILN_F32};
  static const kiln_valtype kF64[] = {KILN_F64};
  static const kiln_valtype kI32F32[] = {KILN_I32, KILN_F32};
  static const kiln_valtype kF64F64[] = {KILN_F64, KILN_F64};
#define SPECTEST_PRINT(fname, nparams, ptypes)              \
  {                                                         \
    .module = "spectest", .name = (fname),                  \
    .type = {.param_count = (nparams), .params = (ptypes)}, \
    .generic = spectest_print                               \
  }
  static kiln_host_func funcs[] = {
      SPECTEST_PRINT("print", 0, NULL),
      SPECTEST_PRINT("print_i32", 1, kI32),
      SPECTEST_PRINT("print_i64", 1, kI64),
      SPECTEST_PRINT("print_f32", 1, kF32),
      SPECTEST_PRINT("print_f64", 1, kF64),
      SPECTEST_PRINT("print_i32_f32", 2, kI32F32),
      SPECTEST_PRINT("print_f64_f64", 2, kF64F64),
  };
#undef SPECTEST_PRINT
  for (size_t i = 0; i < sizeof funcs / sizeof funcs[0]; i++) {
    funcs[i].user = &funcs[i];
    KILN_RETURN_IF_ERROR(kiln_linker_define_func(c->linker, &funcs[i]));
  }
  KILN_RETURN_IF_ERROR(kiln_linker_define_global(
      c->linker, "spectest", "global_i32", kiln_val_i32(666), false));
  KILN_RETURN_IF_ERROR(kiln_linker_define_global(
      c->linker, "spectest", "global_i64", kiln_val_i64(666), false));
  KILN_RETURN_IF_ERROR(kiln_linker_define_global(
      c->linker, "spectest", "global_f32", kiln_val_f32(666.6f), false));
  KILN_RETURN_IF_ERROR(kiln_linker_define_global(
      c->linker, "spectest", "global_f64", kiln_val_f64(666.6), false));
  kiln_limits table_limits = {.min = 10, .max = 20, .has_max = true};
  KILN_RETURN_IF_ERROR(
      kiln_linker_define_table(c->linker, "spectest", "table", table_limits));
  /* One memory for the whole file: every module that imports
   * spectest.memory sees the same bytes. */
  kiln_memory_options mo = {
      .initial_pages = 1, .maximum_pages = 2, .name = "spectest.memory"};
  KILN_RETURN_IF_ERROR(kiln_memory_create(&mo, &c->spectest_memory));
  return kiln_linker_define_memory(c->linker, "spectest", "memory",
                                   c->spectest_memory);
}

/* ---- Modules and instances ---------------------------------------------- */

static kiln_instance *find_instance(spec_ctx *c, const char *name) {
  if (!name) return c->current;
  for (size_t i = 0; i < c->named_count; i++)
    if (!strcmp(c->named[i].name, name)) return c->named[i].inst;
  return NULL;
}

/* The new last module; also under `name` when it has one (a name defined
 * again refers to the newer module from then on). */
static void set_current(spec_ctx *c, kiln_instance *inst, const char *name) {
  if (c->current) kiln_instance_release(c->current);
  c->current = inst; /* takes the caller's reference; may be NULL */
  if (!inst || !name) return;
  kiln_instance_retain(inst);
  for (size_t i = 0; i < c->named_count; i++) {
    if (!strcmp(c->named[i].name, name)) {
      kiln_instance_release(c->named[i].inst);
      c->named[i].inst = inst;
      return;
    }
  }
  named_instance *n =
      realloc(c->named, (c->named_count + 1) * sizeof *c->named);
  if (!n) {
    kiln_instance_release(inst);
    return;
  }
  c->named = n;
  c->named[c->named_count].name = xstrdup(name);
  c->named[c->named_count].inst = inst;
  c->named_count++;
}

static kiln_status read_module(spec_ctx *c, const char *filename,
                               uint8_t **bytes, size_t *size) {
  char *path = path_join(c->dir, filename);
  bool ok = read_file(path, bytes, size);
  free(path);
  if (!ok)
    return kiln_make_status(KILN_CODE_IO, "cannot read %s (from wast2json)",
                            filename);
  return KILN_OK;
}

static kiln_status load_module(spec_ctx *c, const char *filename,
                               kiln_module **out) {
  uint8_t *bytes;
  size_t size;
  KILN_RETURN_IF_ERROR(read_module(c, filename, &bytes, &size));
  kiln_status s = kiln_module_load(c->engine, bytes, size, filename, out);
  free(bytes);
  if (!s && c->opt->verbose)
    printf("  %s: %s %s\n", c->file, filename,
           kiln_module_was_cached(*out) ? "from cache" : "compiled");
  return s;
}

/* Instantiates m (the reference passes) against the file's linker, its
 * start function under the guest deadline. */
static kiln_status instantiate(spec_ctx *c, kiln_module *m,
                               kiln_instance **out) {
  kiln_thread_set_deadline(GUEST_DEADLINE_S);
  kiln_status s = kiln_instance_create(m, c->linker, &c->inst_opts, out);
  kiln_thread_set_deadline(0);
  kiln_module_release(m);
  return s;
}

static const char *json_str(const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void cmd_module(spec_ctx *c, const cJSON *cmd, int line) {
  const char *filename = json_str(cmd, "filename");
  const char *name = json_str(cmd, "name");
  char buf[1024];
  set_current(c, NULL, NULL);
  kiln_module *m = NULL;
  kiln_status s = load_module(c, filename ? filename : "(none)", &m);
  if (s) {
    fail(c, line, "module %s failed to load: %s", filename,
         status_text(s, buf, sizeof buf));
    kiln_status_free(s);
    return;
  }
  kiln_instance *inst = NULL;
  s = instantiate(c, m, &inst);
  if (s) {
    fail(c, line, "module %s failed to instantiate: %s", filename,
         status_text(s, buf, sizeof buf));
    kiln_status_free(s);
    return;
  }
  set_current(c, inst, name);
  pass(c);
}

static void cmd_register(spec_ctx *c, const cJSON *cmd, int line) {
  const char *as = json_str(cmd, "as");
  const char *name = json_str(cmd, "name");
  kiln_instance *inst = find_instance(c, name);
  char buf[1024];
  if (!as || !inst) {
    /* Not a counted command; the failures show up in what imports it. */
    note(c, line, "register %s: no such module instance",
         name ? name : "(last module)");
    return;
  }
  kiln_status s = kiln_linker_define_instance(c->linker, as, inst);
  if (s) {
    note(c, line, "register as \"%s\" failed: %s", as,
         status_text(s, buf, sizeof buf));
    kiln_status_free(s);
  }
}

/* assert_invalid / assert_malformed with a binary module: must be refused
 * as INVALID_MODULE. Validation alone is tried first since it compiles
 * nothing; what it lets through must still be refused by a full load. */
static void cmd_assert_rejected(spec_ctx *c, const cJSON *cmd, int line,
                                const char *type) {
  const char *filename = json_str(cmd, "filename");
  const char *text = json_str(cmd, "text");
  uint8_t *bytes;
  size_t size;
  char buf[1024];
  kiln_status s = read_module(c, filename ? filename : "(none)", &bytes, &size);
  if (s) {
    fail(c, line, "%s: %s", type, status_text(s, buf, sizeof buf));
    kiln_status_free(s);
    return;
  }
  s = kiln_module_validate(c->engine, bytes, size, filename);
  if (!s) {
    kiln_module *m = NULL;
    s = kiln_module_load(c->engine, bytes, size, filename, &m);
    if (!s) kiln_module_release(m);
  }
  free(bytes);
  if (s && kiln_status_code(s) == KILN_CODE_INVALID_MODULE) {
    if (c->opt->verbose)
      printf("  %s:%d: %s ok (\"%s\"): %s\n", c->file, line, type,
             text ? text : "", kiln_status_message(s));
    pass(c);
  } else if (s) {
    fail(c, line, "%s %s (\"%s\"): expected INVALID_MODULE, got %s", type,
         filename, text ? text : "", status_text(s, buf, sizeof buf));
  } else {
    fail(c, line, "%s %s (\"%s\"): module was accepted", type, filename,
         text ? text : "");
  }
  kiln_status_free(s);
}

/* assert_unlinkable (want LINK) and assert_uninstantiable (want TRAP). */
static void cmd_assert_instantiate_fails(spec_ctx *c, const cJSON *cmd,
                                         int line, const char *type,
                                         kiln_code want) {
  const char *filename = json_str(cmd, "filename");
  const char *text = json_str(cmd, "text");
  char buf[1024];
  kiln_module *m = NULL;
  kiln_status s = load_module(c, filename ? filename : "(none)", &m);
  if (s) {
    fail(c, line, "%s %s (\"%s\"): module failed to load: %s", type, filename,
         text ? text : "", status_text(s, buf, sizeof buf));
    kiln_status_free(s);
    return;
  }
  kiln_instance *inst = NULL;
  s = instantiate(c, m, &inst);
  if (!s) {
    kiln_instance_release(inst);
    fail(c, line, "%s %s (\"%s\"): instantiation succeeded", type, filename,
         text ? text : "");
  } else if (kiln_status_code(s) != want) {
    fail(c, line, "%s %s (\"%s\"): expected %s, got %s", type, filename,
         text ? text : "", kiln_code_name(want),
         status_text(s, buf, sizeof buf));
  } else {
    if (c->opt->verbose)
      printf("  %s:%d: %s ok (\"%s\"): %s\n", c->file, line, type,
             text ? text : "", kiln_status_message(s));
    pass(c);
  }
  kiln_status_free(s);
}

/* ---- Actions ------------------------------------------------------------ */

typedef struct action_result {
  kiln_status status; /* of the call; owned */
  bool setup_failed;  /* the runner could not make the call; see why */
  bool skipped;       /* the call cannot be expressed; see why */
  char why[512];
  char desc[512]; /* e.g. invoke "add"(i32:1 (0x1), ...) for messages */
  kiln_val results[MAX_VALUES];
  size_t nresults;
} action_result;

/* Runs an invoke or get action expecting `nresults` results. */
static void run_action(spec_ctx *c, const cJSON *action, size_t nresults,
                       action_result *r) {
  memset(r, 0, sizeof *r);
  const char *type = json_str(action, "type");
  const char *field = json_str(action, "field");
  const char *module = json_str(action, "module");
  snprintf(r->desc, sizeof r->desc, "%s \"%s\"", type ? type : "?",
           field ? field : "?");
  if (!type || !field) {
    r->setup_failed = true;
    snprintf(r->why, sizeof r->why, "malformed action");
    return;
  }
  if (has_nul_mark(field)) {
    r->skipped = true;
    return;
  }
  kiln_instance *inst = find_instance(c, module);
  if (!inst) {
    r->setup_failed = true;
    snprintf(r->why, sizeof r->why, "no module instance %s",
             module ? module : "(the last module failed)");
    return;
  }
  if (nresults > MAX_VALUES) {
    r->setup_failed = true;
    snprintf(r->why, sizeof r->why, "too many results");
    return;
  }
  r->nresults = nresults;

  if (!strcmp(type, "get")) {
    if (nresults != 1) {
      r->setup_failed = true;
      snprintf(r->why, sizeof r->why, "get expects one result");
      return;
    }
    r->status = kiln_instance_global_get(inst, field, &r->results[0]);
    return;
  }
  if (strcmp(type, "invoke")) {
    r->setup_failed = true;
    snprintf(r->why, sizeof r->why, "unknown action type %s", type);
    return;
  }
  const cJSON *args = cJSON_GetObjectItemCaseSensitive(action, "args");
  kiln_val argv[MAX_VALUES];
  size_t nargs = 0;
  size_t dlen = strlen(r->desc);
  dlen += (size_t)snprintf(r->desc + dlen, sizeof r->desc - dlen, "(");
  const cJSON *a;
  cJSON_ArrayForEach(a, args) {
    if (nargs == MAX_VALUES) {
      r->setup_failed = true;
      snprintf(r->why, sizeof r->why, "too many arguments");
      return;
    }
    if (!parse_arg(a, &argv[nargs], r->why, sizeof r->why)) {
      r->setup_failed = true;
      return;
    }
    char v[96];
    if (dlen < sizeof r->desc)
      dlen += (size_t)snprintf(r->desc + dlen, sizeof r->desc - dlen, "%s%s",
                               nargs ? ", " : "",
                               format_val(&argv[nargs], v, sizeof v));
    nargs++;
  }
  if (dlen < sizeof r->desc)
    snprintf(r->desc + dlen, sizeof r->desc - dlen, ")");
  kiln_thread_set_deadline(GUEST_DEADLINE_S);
  r->status =
      kiln_instance_call(inst, field, argv, nargs, r->results, nresults);
  kiln_thread_set_deadline(0);
}

static const cJSON *expected_list(const cJSON *cmd, size_t *n) {
  const cJSON *e = cJSON_GetObjectItemCaseSensitive(cmd, "expected");
  *n = cJSON_IsArray(e) ? (size_t)cJSON_GetArraySize(e) : 0;
  return e;
}

/* Runs the command's action; reports and returns false when the command is
 * already settled (skipped, or the runner could not make the call). */
static bool start_action(spec_ctx *c, const cJSON *cmd, int line,
                         action_result *r) {
  size_t n;
  expected_list(cmd, &n);
  run_action(c, cJSON_GetObjectItemCaseSensitive(cmd, "action"), n, r);
  if (r->skipped) {
    skip(c, SKIP_NUL_NAME);
    return false;
  }
  if (r->setup_failed) {
    fail(c, line, "%s: %s", r->desc, r->why);
    return false;
  }
  return true;
}

static void cmd_action(spec_ctx *c, const cJSON *cmd, int line) {
  action_result r;
  char buf[1024];
  if (!start_action(c, cmd, line, &r)) return;
  if (r.status)
    fail(c, line, "%s: %s", r.desc, status_text(r.status, buf, sizeof buf));
  else
    pass(c);
  kiln_status_free(r.status);
}

static void cmd_assert_return(spec_ctx *c, const cJSON *cmd, int line) {
  action_result r;
  char buf[1024], got[128], want[128];
  if (!start_action(c, cmd, line, &r)) return;
  if (r.status) {
    fail(c, line, "%s: expected a return, got %s", r.desc,
         status_text(r.status, buf, sizeof buf));
    kiln_status_free(r.status);
    return;
  }
  size_t n;
  const cJSON *exp = expected_list(cmd, &n);
  size_t i = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, exp) {
    expect x;
    if (!parse_expect(e, &x, buf, sizeof buf)) {
      fail(c, line, "%s: %s", r.desc, buf);
      return;
    }
    if (!expect_matches(&x, &r.results[i])) {
      fail(c, line, "%s: result %zu: expected %s, got %s", r.desc, i,
           format_expect(&x, want, sizeof want),
           format_val(&r.results[i], got, sizeof got));
      return;
    }
    i++;
  }
  pass(c);
}

/* Trap kinds kiln may report for the spec's trap text. */
static bool trap_kind_fits(const char *text, kiln_trap_kind k) {
  if (!text) return true;
  if (!strncmp(text, "out of bounds memory access", 27))
    return k == KILN_TRAP_OUT_OF_BOUNDS;
  if (!strncmp(text, "out of bounds table access", 26) ||
      !strncmp(text, "undefined element", 17) ||
      !strncmp(text, "uninitialized element", 21))
    return k == KILN_TRAP_OUT_OF_BOUNDS || k == KILN_TRAP_INDIRECT_CALL;
  if (!strncmp(text, "indirect call type mismatch", 27))
    return k == KILN_TRAP_INDIRECT_CALL;
  if (!strncmp(text, "integer divide by zero", 22))
    return k == KILN_TRAP_DIVIDE_BY_ZERO;
  if (!strncmp(text, "integer overflow", 16))
    return k == KILN_TRAP_INTEGER_OVERFLOW;
  if (!strncmp(text, "invalid conversion to integer", 29))
    return k == KILN_TRAP_INVALID_CONVERSION;
  if (!strncmp(text, "unreachable", 11)) return k == KILN_TRAP_UNREACHABLE;
  if (!strncmp(text, "call stack exhausted", 20))
    return k == KILN_TRAP_STACK_EXHAUSTED;
  return true;
}

static void cmd_assert_trap(spec_ctx *c, const cJSON *cmd, int line,
                            bool exhaustion) {
  action_result r;
  char buf[1024];
  const char *text = json_str(cmd, "text");
  if (!start_action(c, cmd, line, &r)) return;
  if (!r.status) {
    fail(c, line, "%s: expected trap \"%s\", returned normally", r.desc,
         text ? text : "");
    return;
  }
  kiln_trap_kind k = kiln_status_trap_kind(r.status);
  if (kiln_status_code(r.status) != KILN_CODE_TRAP) {
    fail(c, line, "%s: expected trap \"%s\", got %s", r.desc, text ? text : "",
         status_text(r.status, buf, sizeof buf));
  } else if (exhaustion && k != KILN_TRAP_STACK_EXHAUSTED) {
    fail(c, line, "%s: expected stack exhaustion, got %s", r.desc,
         status_text(r.status, buf, sizeof buf));
  } else {
    if (!trap_kind_fits(text, k))
      note(c, line,
           "%s: trapped as expected, but with \"%s\" where the "
           "spec says \"%s\"",
           r.desc, kiln_trap_kind_message(k), text);
    pass(c);
  }
  kiln_status_free(r.status);
}

/* ---- A whole file ------------------------------------------------------- */

static bool counts(const char *type) { return strcmp(type, "register") != 0; }

static void run_command(spec_ctx *c, const cJSON *cmd) {
  const char *type = json_str(cmd, "type");
  const cJSON *l = cJSON_GetObjectItemCaseSensitive(cmd, "line");
  int line = cJSON_IsNumber(l) ? l->valueint : 0;
  c->slot->line = line;
  if (!type) {
    fail(c, line, "command without a type");
    return;
  }
  const char *module_type = json_str(cmd, "module_type");
  if (module_type && strcmp(module_type, "binary")) {
    skip(c, SKIP_TEXT);
    return;
  }
  if (!strcmp(type, "module"))
    cmd_module(c, cmd, line);
  else if (!strcmp(type, "register"))
    cmd_register(c, cmd, line);
  else if (!strcmp(type, "action"))
    cmd_action(c, cmd, line);
  else if (!strcmp(type, "assert_return"))
    cmd_assert_return(c, cmd, line);
  else if (!strcmp(type, "assert_trap"))
    cmd_assert_trap(c, cmd, line, false);
  else if (!strcmp(type, "assert_exhaustion"))
    cmd_assert_trap(c, cmd, line, true);
  else if (!strcmp(type, "assert_invalid") || !strcmp(type, "assert_malformed"))
    cmd_assert_rejected(c, cmd, line, type);
  else if (!strcmp(type, "assert_unlinkable"))
    cmd_assert_instantiate_fails(c, cmd, line, type, KILN_CODE_LINK);
  else if (!strcmp(type, "assert_uninstantiable"))
    cmd_assert_instantiate_fails(c, cmd, line, type, KILN_CODE_TRAP);
  else
    fail(c, line, "unknown command type %s", type);
}

/* Runs wast2json on `wast` into `dir`/x.json; its messages go to stdout
 * (the pipe to the parent). */
static bool split_wast(const options *o, const char *wast, const char *dir) {
  char *json = path_join(dir, "x.json");
  pid_t pid = fork();
  if (pid == 0) {
    execlp(o->wast2json, o->wast2json, wast, "-o", json, (char *)NULL);
    printf("spec_runner: cannot run %s: %s\n", o->wast2json, strerror(errno));
    fflush(stdout);
    _exit(127);
  }
  free(json);
  if (pid < 0) return false;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return false;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* The child's work for one file. Exit status 0 when the file ran to its
 * end (whatever failed); otherwise setup broke and the message says why. */
static int run_file(const options *o, const char *wast, const char *name,
                    const char *dir, file_slot *slot) {
  if (!split_wast(o, wast, dir)) {
    printf("  %s: wast2json failed\n", name);
    return 1;
  }
  char *json_path = path_join(dir, "x.json");
  uint8_t *text;
  size_t size;
  bool ok = read_file(json_path, &text, &size);
  free(json_path);
  if (!ok) {
    printf("  %s: cannot read wast2json output\n", name);
    return 1;
  }
  mark_nul_escapes((char *)text);
  cJSON *root = cJSON_Parse((const char *)text);
  free(text);
  const cJSON *commands = cJSON_GetObjectItemCaseSensitive(root, "commands");
  if (!cJSON_IsArray(commands)) {
    printf("  %s: wast2json output is not a command list\n", name);
    cJSON_Delete(root);
    return 1;
  }
  int total = 0;
  const cJSON *cmd;
  cJSON_ArrayForEach(cmd, commands) {
    const char *type = json_str(cmd, "type");
    if (!type || counts(type)) total++;
  }
  slot->total = total;

  if (is_simd_file(name)) {
    slot->skipped = total;
    slot->skip_why |= SKIP_SIMD;
    cJSON_Delete(root);
    return 0;
  }

  spec_ctx c;
  memset(&c, 0, sizeof c);
  c.opt = o;
  c.file = name;
  c.dir = dir;
  c.slot = slot;
  c.inst_opts.allow_region_overlap = true; /* spec modules share memory */
  kiln_engine_options eo;
  kiln_engine_options_init(&eo);
  eo.opt_level = 0;               /* conformance, not speed: compile fast */
  eo.enable_multi_memory = false; /* invalid at this testsuite revision */
  char buf[1024];
  kiln_status s = kiln_engine_create(&eo, &c.engine);
  if (!s) s = kiln_linker_create(c.engine, &c.linker);
  if (!s) s = define_spectest(&c);
  if (s) {
    printf("  %s: engine setup failed: %s\n", name,
           status_text(s, buf, sizeof buf));
    kiln_status_free(s);
    return 1;
  }

  cJSON_ArrayForEach(cmd, commands) {
    run_command(&c, cmd);
    fflush(stdout);
  }
  int shown = c.failure_lines;
  if (slot->failed > shown)
    printf("  %s: ... and %d more failures not shown (use -v)\n", name,
           slot->failed - shown);

  /* Tear down in an order that leaves no instance behind its linker. */
  set_current(&c, NULL, NULL);
  for (size_t i = 0; i < c.named_count; i++) {
    kiln_instance_release(c.named[i].inst);
    free(c.named[i].name);
  }
  free(c.named);
  kiln_linker_release(c.linker);
  kiln_memory_release(c.spectest_memory);
  kiln_engine_release(c.engine);
  cJSON_Delete(root);
  return 0;
}

/* ---- The parent: scheduling, collecting, reporting ----------------------- */

typedef struct job {
  char *name; /* base name, e.g. "i32.wast" */
  char *path;
  off_t size;
  char dir[PATH_MAX]; /* wast2json output, made by the parent */
  pid_t pid;
  int fd; /* read end of the child's stdout/stderr, -1 when closed */
  char *out;
  size_t out_len, out_cap;
  double start, elapsed;
  bool running, done, timed_out;
  int wait_status;
} job;

static volatile sig_atomic_t g_interrupted;
static void on_interrupt(int sig) { g_interrupted = sig; }

static void append_out(job *j, const char *data, size_t n) {
  if (j->out_len + n + 1 > j->out_cap) {
    size_t cap = j->out_cap ? j->out_cap : 4096;
    while (j->out_len + n + 1 > cap) cap *= 2;
    char *nb = realloc(j->out, cap);
    if (!nb) return; /* drop text rather than counts */
    j->out = nb;
    j->out_cap = cap;
  }
  memcpy(j->out + j->out_len, data, n);
  j->out_len += n;
  j->out[j->out_len] = 0;
}

static bool make_job_dir(job *j) {
  const char *tmp = getenv("TMPDIR");
  snprintf(j->dir, sizeof j->dir, "%s/kiln-spec-XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (mkdtemp(j->dir)) return true;
  j->dir[0] = 0;
  char m[256];
  int n =
      snprintf(m, sizeof m, "  %s: mkdtemp: %s\n", j->name, strerror(errno));
  append_out(j, m, (size_t)n);
  return false;
}

/* --no-fork: the file's work in this process. */
static void run_job_here(const options *o, job *j, file_slot *slot) {
  j->start = now_s();
  int rc = make_job_dir(j) ? run_file(o, j->path, j->name, j->dir, slot) : 2;
  fflush(stdout);
  j->wait_status = rc << 8; /* as if the child had exited with rc */
  j->elapsed = now_s() - j->start;
  j->done = true;
}

static bool start_job(const options *o, job *j, file_slot *slot) {
  if (!make_job_dir(j)) return false;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return false;
  fflush(stdout);
  fflush(stderr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return false;
  }
  if (pid == 0) {
    /* Own process group, so that a timeout also stops the compilers the
     * engine runs for this file; and gone when the parent is (killed by a
     * test driver's timeout, say) rather than left running. */
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(2);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    dup2(fds[1], STDOUT_FILENO);
    dup2(fds[1], STDERR_FILENO);
    setvbuf(stdout, NULL, _IOLBF, 0);
    g_verbose = o->verbose;
    int rc = run_file(o, j->path, j->name, j->dir, slot);
    fflush(stdout);
    _exit(rc);
  }
  setpgid(pid, pid);
  close(fds[1]);
  j->pid = pid;
  j->fd = fds[0];
  j->start = now_s();
  j->running = true;
  return true;
}

/* Reads what the child wrote; on end of file reaps it. */
static void drain_job(job *j) {
  char buf[8192];
  ssize_t n = read(j->fd, buf, sizeof buf);
  if (n > 0) {
    append_out(j, buf, (size_t)n);
    return;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
  close(j->fd);
  j->fd = -1;
  while (waitpid(j->pid, &j->wait_status, 0) < 0 && errno == EINTR) {
  }
  j->elapsed = now_s() - j->start;
  j->running = false;
  j->done = true;
}

typedef struct totals {
  long passed, failed, skipped;
} totals;

/* Prints the file's line and the child's text; adds to the totals. */
static void report_job(const options *o, job *j, file_slot *slot, totals *t) {
  int passed = slot->passed, failed = slot->failed, skipped = slot->skipped;
  int done = passed + failed + skipped;
  char problem[256] = "";
  int ws = j->wait_status;
  bool broke = !(WIFEXITED(ws) && WEXITSTATUS(ws) == 0) || j->timed_out;
  if (broke) {
    /* Whatever the child did not get to counts as failed (at least one
     * failure, even if it never got as far as counting). */
    int rest = slot->total > done ? slot->total - done : 0;
    failed += rest > 0 ? rest : (slot->total < 0 || failed == 0 ? 1 : 0);
    if (j->timed_out)
      snprintf(problem, sizeof problem,
               "FAILED: timed out after %.0f s at line %d", o->timeout_s,
               slot->line);
    else if (WIFSIGNALED(ws))
      snprintf(problem, sizeof problem,
               "FAILED: crashed with signal %d (%s) at line %d", WTERMSIG(ws),
               strsignal(WTERMSIG(ws)), slot->line);
    else
      snprintf(problem, sizeof problem, "FAILED: setup error (exit %d)",
               WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
  }
  printf("%s: %d passed, %d failed, %d skipped", j->name, passed, failed,
         skipped);
  if (slot->skip_why) {
    printf(" (skipped: ");
    bool first = true;
    for (size_t i = 0; i < sizeof kSkipReasons / sizeof kSkipReasons[0]; i++) {
      if (!(slot->skip_why & (1u << i))) continue;
      printf("%s%s", first ? "" : "; ", kSkipReasons[i]);
      first = false;
    }
    printf(")");
  }
  if (o->verbose) printf(" [%.2f s]", j->elapsed);
  printf("\n");
  if (problem[0]) printf("  %s: %s\n", j->name, problem);
  if (j->out_len) {
    fputs(j->out, stdout);
    if (j->out[j->out_len - 1] != '\n') putchar('\n');
  }
  fflush(stdout);
  t->passed += passed;
  t->failed += failed;
  t->skipped += skipped;
}

static int cmp_job_name(const void *a, const void *b) {
  return strcmp(((const job *)a)->name, ((const job *)b)->name);
}

/* Larger files first, so that a big file started last does not leave the
 * other cores idle at the end. */
static const job *g_jobs_for_sort;
static int cmp_size_desc(const void *a, const void *b) {
  const job *x = &g_jobs_for_sort[*(const size_t *)a];
  const job *y = &g_jobs_for_sort[*(const size_t *)b];
  if (x->size != y->size) return x->size < y->size ? 1 : -1;
  return strcmp(x->name, y->name);
}

static size_t list_files(const options *o, job **out) {
  DIR *d = opendir(o->spec_dir);
  if (!d) {
    fprintf(stderr, "spec_runner: cannot open %s: %s\n", o->spec_dir,
            strerror(errno));
    exit(2);
  }
  size_t n = 0, cap = 0;
  job *jobs = NULL;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".wast")) continue;
    if (o->filter && !strstr(e->d_name, o->filter)) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      jobs = realloc(jobs, cap * sizeof *jobs);
      if (!jobs) exit(2);
    }
    job *j = &jobs[n++];
    memset(j, 0, sizeof *j);
    j->name = xstrdup(e->d_name);
    j->path = path_join(o->spec_dir, e->d_name);
    j->fd = -1;
    struct stat st;
    if (stat(j->path, &st) == 0) j->size = st.st_size;
  }
  closedir(d);
  if (n) qsort(jobs, n, sizeof *jobs, cmp_job_name);
  *out = jobs;
  return n;
}

static void usage(void) {
  fprintf(stderr,
          "usage: spec_runner [-v] [--jobs N] [--filter SUBSTR] "
          "[--timeout SECONDS] [--keep] [--no-fork] [--wast2json PATH] "
          "SPEC_DIR\n");
  exit(2);
}

static void parse_options(int argc, char **argv, options *o) {
  memset(o, 0, sizeof *o);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  o->jobs = cores > 0 ? (int)cores : 1;
  o->timeout_s = 900;
  o->wast2json = getenv("KILN_WAST2JSON");
  if (!o->wast2json || !*o->wast2json) o->wast2json = KILN_WAST2JSON;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
      o->verbose = true;
    } else if (!strcmp(a, "--keep")) {
      o->keep = true;
    } else if (!strcmp(a, "--no-fork")) {
      o->no_fork = true;
    } else if ((!strcmp(a, "--jobs") || !strcmp(a, "-j")) && val) {
      o->jobs = atoi(val);
      i++;
    } else if (!strncmp(a, "-j", 2) && a[2]) {
      o->jobs = atoi(a + 2);
    } else if (!strcmp(a, "--filter") && val) {
      o->filter = val;
      i++;
    } else if (!strcmp(a, "--timeout") && val) {
      o->timeout_s = atof(val);
      i++;
    } else if (!strcmp(a, "--wast2json") && val) {
      o->wast2json = val;
      i++;
    } else if (a[0] == '-' || o->spec_dir) {
      usage();
    } else {
      o->spec_dir = a;
    }
  }
  if (!o->spec_dir || o->jobs < 1 || o->timeout_s <= 0) usage();
}

int main(int argc, char **argv) {
  options o;
  parse_options(argc, argv, &o);
  g_verbose = o.verbose;
  double t0 = now_s();

  job *jobs;
  size_t n = list_files(&o, &jobs);
  if (n == 0) {
    fprintf(stderr, "spec_runner: no .wast files in %s%s%s\n", o.spec_dir,
            o.filter ? " matching " : "", o.filter ? o.filter : "");
    return 2;
  }
  file_slot *slots = mmap(NULL, n * sizeof *slots, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (slots == MAP_FAILED) {
    perror("spec_runner: mmap");
    return 2;
  }
  for (size_t i = 0; i < n; i++) slots[i].total = -1;
  size_t *order = xmalloc(n * sizeof *order);
  for (size_t i = 0; i < n; i++) order[i] = i;
  g_jobs_for_sort = jobs;
  qsort(order, n, sizeof *order, cmp_size_desc);

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  totals t = {0, 0, 0};
  size_t next_start = 0, next_report = 0, running = 0;
  struct pollfd *pfds = xmalloc(n * sizeof *pfds);
  size_t *pjob = xmalloc(n * sizeof *pjob);
  while (next_report < n) {
    if (g_interrupted) {
      for (size_t i = 0; i < n; i++)
        if (jobs[i].running) kill(-jobs[i].pid, SIGKILL);
      for (size_t i = 0; i < n; i++) {
        if (jobs[i].running) waitpid(jobs[i].pid, NULL, 0);
        if (jobs[i].dir[0] && !o.keep) remove_tree(jobs[i].dir);
      }
      fprintf(stderr, "spec_runner: interrupted\n");
      return 130;
    }
    while (running < (size_t)o.jobs && next_start < n) {
      job *j = &jobs[order[next_start++]];
      if (o.no_fork) {
        run_job_here(&o, j, &slots[j - jobs]);
      } else if (start_job(&o, j, &slots[j - jobs])) {
        running++;
      } else {
        j->done = true;
        j->wait_status = 2 << 8; /* a setup error, as if exit(2) */
      }
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      if (!jobs[i].running) continue;
      pfds[k].fd = jobs[i].fd;
      pfds[k].events = POLLIN;
      pfds[k].revents = 0;
      pjob[k++] = i;
    }
    if (k) {
      int r = poll(pfds, k, 1000);
      if (r < 0 && errno != EINTR) {
        perror("spec_runner: poll");
        return 2;
      }
      for (size_t i = 0; r > 0 && i < k; i++) {
        if (!pfds[i].revents) continue;
        drain_job(&jobs[pjob[i]]);
        if (!jobs[pjob[i]].running) running--;
      }
      double now = now_s();
      for (size_t i = 0; i < k; i++) {
        job *j = &jobs[pjob[i]];
        if (j->running && !j->timed_out && now - j->start > o.timeout_s) {
          j->timed_out = true;
          kill(-j->pid, SIGKILL);
        }
      }
    }
    while (next_report < n && jobs[next_report].done) {
      job *j = &jobs[next_report];
      report_job(&o, j, &slots[next_report], &t);
      if (j->dir[0] && !o.keep) remove_tree(j->dir);
      next_report++;
    }
  }

  for (size_t i = 0; i < n; i++) {
    free(jobs[i].name);
    free(jobs[i].path);
    free(jobs[i].out);
  }
  free(jobs);
  free(order);
  free(pfds);
  free(pjob);
  munmap(slots, n * sizeof *slots);

  printf("spec_runner: %zu files in %.1f s with %d jobs\n", n, now_s() - t0,
         o.jobs);
  printf("wasm-spec: %ld passed, %ld failed, %ld skipped\n", t.passed, t.failed,
         t.skipped);
  fflush(stdout);
  return t.failed ? 1 : 0;
}
