/* Claims about the WebAssembly binary parser and structural validator
 * (src/engine/wasm_binary.h): what it extracts from valid modules, what it
 * rejects and with which reason, and that hostile bytes never crash it.
 *
 * Modules are byte arrays written here, or produced at test time with
 * wat2wasm. The last test runs the WebAssembly spec test data through it:
 * every valid module must be accepted, and every invalid one whose fault
 * lies outside function bodies must be rejected. */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/wasm_binary.h"
#include "kiln_test.h"

#ifndef KILN_SOURCE_DIR
#define KILN_SOURCE_DIR "."
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KILN_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KILN_TEST_ASAN 1
#endif
#endif

/* ---- Helpers ------------------------------------------------------------ */

#define HDR 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00
/* A byte list as (pointer, size) arguments. */
#define BYTES(...) \
  (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

static kiln_status parse(const uint8_t *bytes, size_t size, bool multi_memory,
                         kiln_wasm_info **out) {
  kiln_wasm_parse_options opts = {.enable_multi_memory = multi_memory};
  return kiln_wasm_parse(bytes, size, &opts, out);
}

/* Parses and expects success; returns the info (caller frees) or NULL. */
static kiln_wasm_info *expect_valid_(kiln_test *t, int line, bool multi,
                                     const uint8_t *bytes, size_t size) {
  kiln_wasm_info *info = NULL;
  kiln_status s = parse(bytes, size, multi, &info);
  if (s) {
    char m[1200];
    snprintf(m, sizeof m, "expected a valid module, got %s: %s",
             kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
    kiln_test_fail_(t, __FILE__, line, m);
    kiln_status_free(s);
    return NULL;
  }
  return info;
}

/* Expects INVALID_MODULE with "at byte 0x" and `reason` in the message. */
static void expect_invalid_(kiln_test *t, int line, bool multi,
                            const char *reason, const uint8_t *bytes,
                            size_t size) {
  kiln_wasm_info *info = (kiln_wasm_info *)1;
  kiln_status s = parse(bytes, size, multi, &info);
  const char *msg = kiln_status_message(s);
  char m[1200];
  if (kiln_status_code(s) != KILN_CODE_INVALID_MODULE) {
    snprintf(m, sizeof m, "expected INVALID_MODULE (%s), got %s: %s", reason,
             kiln_code_name(kiln_status_code(s)), msg);
    kiln_test_fail_(t, __FILE__, line, m);
  } else if (!strstr(msg, reason) || strncmp(msg, "at byte 0x", 10) != 0) {
    snprintf(m, sizeof m, "expected \"at byte 0x..: ...%s...\", got \"%s\"",
             reason, msg);
    kiln_test_fail_(t, __FILE__, line, m);
  } else if (info != NULL) {
    kiln_test_fail_(t, __FILE__, line, "*out not cleared on error");
  }
  if (!s) kiln_wasm_info_free(info);
  kiln_status_free(s);
}

#define EXPECT_VALID(t, ...) \
  expect_valid_((t), __LINE__, false, BYTES(__VA_ARGS__))
#define EXPECT_VALID_MULTI(t, ...) \
  expect_valid_((t), __LINE__, true, BYTES(__VA_ARGS__))
#define EXPECT_INVALID(t, reason, ...) \
  expect_invalid_((t), __LINE__, false, (reason), BYTES(__VA_ARGS__))

/* A growable byte buffer for modules whose sizes are tedious by hand. */
typedef struct wbuf {
  uint8_t *b;
  size_t n, cap;
} wbuf;

static void wb_bytes(wbuf *w, const void *p, size_t n) {
  if (w->n + n > w->cap) {
    w->cap = (w->n + n) * 2 + 64;
    w->b = realloc(w->b, w->cap);
    if (!w->b) abort(); /* test code */
  }
  memcpy(w->b + w->n, p, n);
  w->n += n;
}
static void wb_u8(wbuf *w, uint8_t v) { wb_bytes(w, &v, 1); }
#define WB(w, ...) wb_bytes((w), BYTES(__VA_ARGS__))
static void wb_leb(wbuf *w, uint64_t v) {
  do {
    uint8_t b = v & 0x7f;
    v >>= 7;
    wb_u8(w, b | (v ? 0x80 : 0));
  } while (v);
}
static void wb_name(wbuf *w, const char *s, size_t n) {
  wb_leb(w, n);
  wb_bytes(w, s, n);
}
/* Appends section `id` with `payload` and frees the payload. */
static void wb_section(wbuf *m, uint8_t id, wbuf *payload) {
  wb_u8(m, id);
  wb_leb(m, payload->n);
  if (payload->n) wb_bytes(m, payload->b, payload->n);
  free(payload->b);
  *payload = (wbuf){0};
}
static wbuf wb_module(void) {
  wbuf m = {0};
  WB(&m, HDR);
  return m;
}

static uint8_t *read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  uint8_t *buf = NULL;
  size_t n = 0, cap = 0, got;
  do {
    if (n == cap) {
      cap = cap * 2 + 4096;
      buf = realloc(buf, cap);
      if (!buf) abort();
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
  } while (got > 0);
  fclose(f);
  *size = n;
  return buf;
}

static bool write_file(const char *path, const uint8_t *bytes, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return false;
  bool ok = fwrite(bytes, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

static bool have_tool(const char *name) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", name);
  return system(cmd) == 0;
}

static void remove_tree(const char *dir) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* Assembles WAT with wat2wasm (extra flags may be ""). NULL on failure,
 * which is reported. */
static uint8_t *wat_(kiln_test *t, int line, const char *flags,
                     const char *text, size_t *size) {
  char dir[] = "/tmp/kiln-test-wat-XXXXXX";
  if (!mkdtemp(dir)) {
    kiln_test_fail_(t, __FILE__, line, "mkdtemp failed");
    return NULL;
  }
  char in[128], out[128], cmd[512];
  snprintf(in, sizeof in, "%s/m.wat", dir);
  snprintf(out, sizeof out, "%s/m.wasm", dir);
  uint8_t *bytes = NULL;
  if (write_file(in, (const uint8_t *)text, strlen(text))) {
    snprintf(cmd, sizeof cmd, "wat2wasm %s '%s' -o '%s'", flags, in, out);
    if (system(cmd) == 0) bytes = read_file(out, size);
  }
  remove_tree(dir);
  if (!bytes) kiln_test_fail_(t, __FILE__, line, "wat2wasm failed");
  return bytes;
}
#define WAT(t, flags, text, size) wat_((t), __LINE__, (flags), (text), (size))

static bool same_types(const kiln_valtype *a, uint32_t n,
                       const kiln_valtype *b) {
  for (uint32_t i = 0; i < n; i++)
    if (a[i] != b[i]) return false;
  return true;
}

static bool functype_is(const kiln_functype *f, uint32_t np,
                        const kiln_valtype *p, uint32_t nr,
                        const kiln_valtype *r) {
  return f->param_count == np && f->result_count == nr &&
         same_types(f->params, np, p) && same_types(f->results, nr, r);
}

/* ---- Valid modules: what the info holds --------------------------------- */

static void test_minimal_module(kiln_test *t) {
  kiln_wasm_info *info = EXPECT_VALID(t, HDR);
  if (!info) return;
  KILN_EXPECT(t, info->type_count == 0 && info->func_count == 0);
  KILN_EXPECT(t, info->import_count == 0 && info->export_count == 0);
  KILN_EXPECT(t, !info->has_start && info->module_name == NULL);
  KILN_EXPECT(t, kiln_wasm_stack_pointer_global(info) == -1);
  kiln_wasm_info_free(info);
  kiln_wasm_info_free(NULL); /* allowed */
}

static const char kRichWat[] =
    "(module $mymod\n"
    "  (type $t0 (func (param i32 i64) (result f32)))\n"
    "  (import \"env\" \"f\" (func $imported_f (type $t0)))\n"
    "  (import \"env\" \"tab\" (table 2 10 funcref))\n"
    "  (import \"env\" \"mem\" (memory 1 2))\n"
    "  (import \"env\" \"g\" (global $ig i32))\n"
    "  (import \"env\" \"gm\" (global $igm (mut f64)))\n"
    "  (global $__stack_pointer (mut i32) (i32.const 65536))\n"
    "  (global $c i64 (i64.const -7))\n  (global $copy i32 (global.get $ig))\n"
    "  (global $r funcref (ref.func $local))\n"
    "  (global $f f32 (f32.const 1.5))\n"
    "  (func $local (param f64) (result i32 i32)\n"
    "    (local i32 i64) (i32.const 1) (i32.const 2))\n  (func $start\n"
    "    (block (loop (br_if 1 (i32.const 0)) (br_table 0 1 (i32.const 0))))\n"
    "    (drop (i32.load offset=4 (i32.const 0)))\n"
    "    (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))\n"
    "    (if (i32.const 1) (then (nop)) (else (nop))))\n  (start $start)\n"
    "  (export \"f_reexport\" (func $imported_f))\n"
    "  (export \"local\" (func $local))\n  (export \"tab\" (table 0))\n"
    "  (export \"mem\" (memory 0))\n"
    "  (export \"sp\" (global $__stack_pointer))\n"
    "  (elem (i32.const 0) $local)\n  (data (i32.const 16) \"hello\")\n"
    "  (data \"passive\"))\n";

static void test_imports_exports_and_types(kiln_test *t) {
  size_t size;
  uint8_t *bytes = WAT(t, "--debug-names", kRichWat, &size);
  if (!bytes) return;
  kiln_wasm_info *info = expect_valid_(t, __LINE__, false, bytes, size);
  if (!info) {
    free(bytes);
    return;
  }
  static const kiln_valtype i32_i64[] = {KILN_I32, KILN_I64};
  static const kiln_valtype f32[] = {KILN_F32}, f64[] = {KILN_F64};
  static const kiln_valtype i32_i32[] = {KILN_I32, KILN_I32};

  KILN_EXPECT(t, info->import_count == 5);
  if (info->import_count == 5) {
    const kiln_import *im = info->imports;
    KILN_EXPECT(t, !strcmp(im[0].module, "env") && !strcmp(im[0].name, "f"));
    KILN_EXPECT(t, im[0].type.kind == KILN_EXTERN_FUNC);
    KILN_EXPECT(t, functype_is(&im[0].type.of.func, 2, i32_i64, 1, f32));
    KILN_EXPECT(t, im[1].type.kind == KILN_EXTERN_TABLE);
    KILN_EXPECT(t, im[1].type.of.table.elem == KILN_FUNCREF);
    KILN_EXPECT(t, im[1].type.of.table.limits.min == 2);
    KILN_EXPECT(t, im[1].type.of.table.limits.has_max &&
                       im[1].type.of.table.limits.max == 10);
    KILN_EXPECT(t, im[2].type.kind == KILN_EXTERN_MEMORY);
    KILN_EXPECT(t,
                im[2].type.of.memory.min == 1 && im[2].type.of.memory.max == 2);
    KILN_EXPECT(t, im[3].type.kind == KILN_EXTERN_GLOBAL &&
                       im[3].type.of.global.type == KILN_I32 &&
                       !im[3].type.of.global.is_mutable);
    KILN_EXPECT(t, im[4].type.of.global.type == KILN_F64 &&
                       im[4].type.of.global.is_mutable);
    uint32_t want_index[] = {0, 0, 0, 0, 1};
    for (int i = 0; i < 5; i++) {
      KILN_EXPECTF(t, info->import_index[i] == want_index[i],
                   "import %d index %u", i, info->import_index[i]);
    }
  }
  KILN_EXPECT(t, info->func_count == 3 && info->func_import_count == 1);
  KILN_EXPECT(t, info->table_count == 1 && info->tables[0].imported);
  KILN_EXPECT(t, info->memory_count == 1 && info->memories[0].imported);
  KILN_EXPECT(t, info->global_count == 7);
  if (info->global_count == 7) {
    const kiln_wasm_global *g = info->globals;
    KILN_EXPECT(t, g[0].imported && g[1].imported && !g[2].imported);
    KILN_EXPECT(t, g[2].is_mutable && g[2].init.kind == KILN_CONST_I32 &&
                       g[2].init.value.i32 == 65536);
    KILN_EXPECT(t, g[3].type == KILN_I64 && g[3].init.kind == KILN_CONST_I64 &&
                       g[3].init.value.i64 == (uint64_t)-7);
    KILN_EXPECT(t, g[4].init.kind == KILN_CONST_GLOBAL_GET &&
                       g[4].init.value.index == 0);
    KILN_EXPECT(t, g[5].type == KILN_FUNCREF &&
                       g[5].init.kind == KILN_CONST_REF_FUNC &&
                       g[5].init.value.index == 1);
  }
  KILN_EXPECT(t, info->has_start && info->start_func == 2);
  KILN_EXPECT(t, info->export_count == 5);
  if (info->export_count == 5) {
    const kiln_wasm_export *e = info->exports;
    KILN_EXPECT(t, !strcmp(e[0].desc.name, "f_reexport") && e[0].index == 0);
    KILN_EXPECT(t, functype_is(&e[0].desc.type.of.func, 2, i32_i64, 1, f32));
    KILN_EXPECT(t, !strcmp(e[1].desc.name, "local") && e[1].index == 1);
    KILN_EXPECT(t, functype_is(&e[1].desc.type.of.func, 1, f64, 2, i32_i32));
    KILN_EXPECT(t, e[2].desc.type.kind == KILN_EXTERN_TABLE &&
                       e[2].desc.type.of.table.limits.max == 10);
    KILN_EXPECT(t, e[3].desc.type.kind == KILN_EXTERN_MEMORY &&
                       e[3].desc.type.of.memory.min == 1);
    KILN_EXPECT(t, e[4].desc.type.kind == KILN_EXTERN_GLOBAL &&
                       e[4].desc.type.of.global.type == KILN_I32 &&
                       e[4].desc.type.of.global.is_mutable && e[4].index == 2);
  }
  KILN_EXPECT(t, info->elem_count == 1);
  KILN_EXPECT(t, info->data_count == 2);
  if (info->data_count == 2) {
    const kiln_wasm_data_segment *d = info->data;
    KILN_EXPECT(t, d[0].active && d[0].memory == 0 &&
                       d[0].offset.kind == KILN_CONST_I32 &&
                       d[0].offset.value.i32 == 16);
    KILN_EXPECT(t, d[0].size == 5 && d[0].file_offset + 5 <= size &&
                       !memcmp(bytes + d[0].file_offset, "hello", 5));
    KILN_EXPECT(t, !d[1].active && d[1].size == 7 &&
                       !memcmp(bytes + d[1].file_offset, "passive", 7));
  }
  KILN_EXPECT(t, !info->features.simd && !info->features.threads &&
                     !info->features.memory64 && !info->features.exceptions &&
                     !info->features.multi_memory);
  kiln_wasm_info_free(info);
  free(bytes);
}

static void test_name_section_names(kiln_test *t) {
  size_t size;
  uint8_t *bytes = WAT(t, "--debug-names", kRichWat, &size);
  if (!bytes) return;
  kiln_wasm_info *info = expect_valid_(t, __LINE__, false, bytes, size);
  if (info) {
    KILN_EXPECT(t, info->module_name && !strcmp(info->module_name, "mymod"));
    KILN_EXPECT(t, info->func_names && info->func_names[0] &&
                       !strcmp(info->func_names[0], "imported_f"));
    KILN_EXPECT(t, info->func_names && info->func_names[2] &&
                       !strcmp(info->func_names[2], "start"));
    KILN_EXPECT(t, info->global_names && info->global_names[2] &&
                       !strcmp(info->global_names[2], "__stack_pointer"));
    KILN_EXPECT(t, kiln_wasm_stack_pointer_global(info) == 2);
    kiln_wasm_info_free(info);
  }
  free(bytes);

  /* Without names, or when the global is immutable or imported: -1. */
  bytes = WAT(t, "", kRichWat, &size);
  if (bytes) {
    info = expect_valid_(t, __LINE__, false, bytes, size);
    KILN_EXPECT(t, info && info->module_name == NULL &&
                       info->func_names == NULL &&
                       kiln_wasm_stack_pointer_global(info) == -1);
    kiln_wasm_info_free(info);
    free(bytes);
  }
  const char *not_sp[] = {
      "(module (global $__stack_pointer i32 (i32.const 0)))",
      "(module (global $__stack_pointer (mut i64) (i64.const 0)))",
      "(module (import \"env\" \"sp\" (global $__stack_pointer (mut i32))))",
  };
  for (size_t i = 0; i < sizeof not_sp / sizeof not_sp[0]; i++) {
    bytes = WAT(t, "--debug-names", not_sp[i], &size);
    if (!bytes) continue;
    info = expect_valid_(t, __LINE__, false, bytes, size);
    KILN_EXPECTF(t, info && kiln_wasm_stack_pointer_global(info) == -1, "%s",
                 not_sp[i]);
    kiln_wasm_info_free(info);
    free(bytes);
  }
}

/* Names are debug data: a broken name section must not fail the module. */
static void test_malformed_name_section_is_ignored(kiln_test *t) {
  /* Module name "m", then a function-name subsection whose count runs past
   * its bytes. */
  kiln_wasm_info *info = EXPECT_VALID(
      t, HDR, 0x00, 0x0d, 0x04, 'n', 'a', 'm', 'e', /* custom "name" */
      0x00, 0x02, 0x01, 'm',                        /* module name "m" */
      0x01, 0x02, 0x09, 0x00);                      /* 9 names, 1 byte */
  KILN_EXPECT(t, info && info->module_name == NULL && !info->func_names);
  kiln_wasm_info_free(info);
  /* Invalid UTF-8 inside the name section, and a subsection too long. */
  info = EXPECT_VALID(t, HDR, 0x00, 0x09, 0x04, 'n', 'a', 'm', 'e', 0x00, 0x02,
                      0x01, 0xff);
  KILN_EXPECT(t, info && info->module_name == NULL);
  kiln_wasm_info_free(info);
  info = EXPECT_VALID(t, HDR, 0x00, 0x07, 0x04, 'n', 'a', 'm', 'e', 0x00, 0x7f);
  KILN_EXPECT(t, info && info->module_name == NULL);
  kiln_wasm_info_free(info);
  /* A name for a function that does not exist. */
  info = EXPECT_VALID(t, HDR, 0x00, 0x0b, 0x04, 'n', 'a', 'm', 'e', 0x01, 0x04,
                      0x01, 0x05, 0x01, 'f');
  KILN_EXPECT(t, info && info->func_names == NULL);
  kiln_wasm_info_free(info);
  /* A well-formed one is read. */
  info = EXPECT_VALID(t, HDR, 0x00, 0x09, 0x04, 'n', 'a', 'm', 'e', 0x00, 0x02,
                      0x01, 'm');
  KILN_EXPECT(t, info && info->module_name && !strcmp(info->module_name, "m"));
  kiln_wasm_info_free(info);
  /* But a custom section's own name must be UTF-8. */
  EXPECT_INVALID(t, "malformed UTF-8 encoding", HDR, 0x00, 0x02, 0x01, 0xc0);
}

/* ---- Constant expressions ----------------------------------------------- */

/* The two cases wasm2c 1.0.32 accepts although the spec says invalid. */
static void test_empty_offset_in_active_data_segment(kiln_test *t) {
  EXPECT_INVALID(t, "type mismatch", HDR, 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b,
                 0x04, 0x01, 0x00, 0x0b, 0x00);
  /* Explicit memory index form (flags 2). */
  EXPECT_INVALID(t, "type mismatch", HDR, 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b,
                 0x05, 0x01, 0x02, 0x00, 0x0b, 0x00);
  /* The same with an offset is fine. */
  kiln_wasm_info *info =
      EXPECT_VALID(t, HDR, 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b, 0x07, 0x01, 0x00,
                   0x41, 0x08, 0x0b, 0x01, 'x');
  KILN_EXPECT(t, info && info->data_count == 1 && info->data[0].size == 1 &&
                     info->data[0].offset.value.i32 == 8);
  kiln_wasm_info_free(info);
}

static void test_empty_offset_in_active_element_segment(kiln_test *t) {
  EXPECT_INVALID(t, "type mismatch", HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                 0x03, 0x02, 0x01, 0x00, 0x04, 0x04, 0x01, 0x70, 0x00, 0x01,
                 0x09, 0x05, 0x01, 0x00, 0x0b, 0x01, 0x00, 0x0a, 0x04, 0x01,
                 0x02, 0x00, 0x0b);
  /* Flags 6: explicit table, expressions. */
  EXPECT_INVALID(t, "type mismatch", HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                 0x03, 0x02, 0x01, 0x00, 0x04, 0x04, 0x01, 0x70, 0x00, 0x01,
                 0x09, 0x09, 0x01, 0x06, 0x00, 0x0b, 0x70, 0x01, 0xd2, 0x00,
                 0x0b, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b);
}

/* A module with one imported global (type `gtype`, mutable or not) and one
 * defined global of type `type` initialised by `expr` (END appended). */
static wbuf global_module(uint8_t gtype, bool gmut, uint8_t type,
                          const uint8_t *expr, size_t n) {
  wbuf m = wb_module(), p = {0};
  if (gtype) {
    WB(&p, 0x01);
    wb_name(&p, "e", 1);
    wb_name(&p, "g", 1);
    WB(&p, 0x03);
    wb_u8(&p, gtype);
    wb_u8(&p, gmut);
    wb_section(&m, 2, &p);
  }
  WB(&p, 0x01);
  wb_u8(&p, type);
  WB(&p, 0x00);
  wb_bytes(&p, expr, n);
  WB(&p, 0x0b);
  wb_section(&m, 6, &p);
  return m;
}

static void expect_global_(kiln_test *t, int line, const char *reason,
                           uint8_t gtype, bool gmut, uint8_t type,
                           const uint8_t *expr, size_t n) {
  wbuf m = global_module(gtype, gmut, type, expr, n);
  if (reason) {
    expect_invalid_(t, line, false, reason, m.b, m.n);
  } else {
    kiln_wasm_info_free(expect_valid_(t, line, false, m.b, m.n));
  }
  free(m.b);
}
#define EXPECT_GLOBAL(t, reason, gtype, gmut, type, ...)           \
  expect_global_((t), __LINE__, (reason), (gtype), (gmut), (type), \
                 BYTES(__VA_ARGS__))

static void test_constant_expressions(kiln_test *t) {
  const uint8_t I32 = 0x7f, I64 = 0x7e, F32 = 0x7d, FUNCREF = 0x70;
  const uint8_t EXTERNREF = 0x6f, V128 = 0x7b;
  EXPECT_GLOBAL(t, NULL, 0, 0, I32, 0x41, 0x7f);
  EXPECT_GLOBAL(t, "type mismatch", 0, 0, I32, 0x43, 0, 0, 0, 0);
  EXPECT_GLOBAL(t, "type mismatch", 0, 0, I64, 0x41, 0x00);
  EXPECT_GLOBAL(t, "type mismatch", 0, 0, I32, 0x41, 0x00, 0x41, 0x00);
  EXPECT_GLOBAL(t, "constant expression required", 0, 0, I32, 0x41, 0x00,
                0x01); /* nop */
  EXPECT_GLOBAL(t, "constant expression required", 0, 0, I32, 0x41, 0x00, 0x41,
                0x00, 0x6a); /* i32.add */
  EXPECT_GLOBAL(t, "constant expression required", 0, 0, I32, 0x20, 0x00);
  /* global.get: only imported, immutable, of the right type. */
  EXPECT_GLOBAL(t, NULL, I32, false, I32, 0x23, 0x00);
  EXPECT_GLOBAL(t, "unknown global", I32, false, I32, 0x23, 0x01);
  EXPECT_GLOBAL(t, "unknown global", 0, 0, I32, 0x23, 0x00);
  EXPECT_GLOBAL(t, "constant expression required", I32, true, I32, 0x23, 0x00);
  EXPECT_GLOBAL(t, "type mismatch", I64, false, I32, 0x23, 0x00);
  EXPECT_GLOBAL(t, "type mismatch", EXTERNREF, false, FUNCREF, 0x23, 0x00);
  /* References. */
  EXPECT_GLOBAL(t, NULL, 0, 0, FUNCREF, 0xd0, 0x70);
  EXPECT_GLOBAL(t, NULL, 0, 0, EXTERNREF, 0xd0, 0x6f);
  EXPECT_GLOBAL(t, "type mismatch", 0, 0, FUNCREF, 0xd0, 0x6f);
  EXPECT_GLOBAL(t, "malformed reference type", 0, 0, FUNCREF, 0xd0, 0x7f);
  EXPECT_GLOBAL(t, "unknown function", 0, 0, FUNCREF, 0xd2, 0x00);

  /* Values come back decoded. */
  wbuf m = global_module(0, 0, F32, BYTES(0x43, 0x00, 0x00, 0xc0, 0x3f));
  kiln_wasm_info *info = expect_valid_(t, __LINE__, false, m.b, m.n);
  KILN_EXPECT(t, info && info->globals[0].init.kind == KILN_CONST_F32 &&
                     info->globals[0].init.value.f32_bits == 0x3fc00000);
  kiln_wasm_info_free(info);
  free(m.b);
  m = global_module(
      0, 0, I64,
      BYTES(0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x7f));
  info = expect_valid_(t, __LINE__, false, m.b, m.n);
  KILN_EXPECT(t, info && info->globals[0].init.value.i64 ==
                             UINT64_C(0x8000000000000000));
  kiln_wasm_info_free(info);
  free(m.b);
  /* v128.const: a SIMD module. */
  m = global_module(
      0, 0, V128,
      BYTES(0xfd, 0x0c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16));
  info = expect_valid_(t, __LINE__, false, m.b, m.n);
  KILN_EXPECT(t, info && info->features.simd &&
                     info->globals[0].init.kind == KILN_CONST_V128 &&
                     info->globals[0].init.value.v128[15] == 16);
  kiln_wasm_info_free(info);
  free(m.b);
}

/* ---- Structure ---------------------------------------------------------- */

static void test_header(kiln_test *t) {
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_MODULE,
                   kiln_wasm_parse(NULL, 0, NULL, &(kiln_wasm_info *){0}));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_wasm_parse(BYTES(HDR), NULL, NULL));
  EXPECT_INVALID(t, "unexpected end", 0x00);
  EXPECT_INVALID(t, "unexpected end", 0x00, 0x61, 0x73);
  EXPECT_INVALID(t, "magic header not detected", 'a', 's', 'm', 0x00);
  EXPECT_INVALID(t, "magic header not detected", 0xef, 0xbb, 0xbf, 0x00, 0x61,
                 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00);
  EXPECT_INVALID(t, "unexpected end", 0x00, 0x61, 0x73, 0x6d, 0x01, 0x00);
  EXPECT_INVALID(t, "unknown binary version", 0x00, 0x61, 0x73, 0x6d, 0x02,
                 0x00, 0x00, 0x00);
  EXPECT_INVALID(t, "unknown binary version", 0x00, 0x61, 0x73, 0x6d, 0x01,
                 0x00, 0x00, 0x01);
}

static void test_section_order_and_ids(kiln_test *t) {
  EXPECT_INVALID(t, "malformed section id", HDR, 0x0e, 0x00);
  EXPECT_INVALID(t, "malformed section id", HDR, 0x80, 0x00, 0x01, 0x00);
  EXPECT_INVALID(t, "out of order", HDR, 0x03, 0x01, 0x00, 0x01, 0x01, 0x00);
  EXPECT_INVALID(t, "junk after last section", HDR, 0x0b, 0x01, 0x00, 0x0a,
                 0x01, 0x00);
  EXPECT_INVALID(t, "duplicate type section", HDR, 0x01, 0x01, 0x00, 0x01, 0x01,
                 0x00);
  EXPECT_INVALID(t, "duplicate start section", HDR, 0x01, 0x04, 0x01, 0x60,
                 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x08, 0x01, 0x00, 0x08,
                 0x01, 0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b);
  /* Data count sits between element and code. */
  kiln_wasm_info_free(EXPECT_VALID(t, HDR, 0x09, 0x01, 0x00, 0x0c, 0x01, 0x00,
                                   0x0a, 0x01, 0x00, 0x0b, 0x01, 0x00));
  EXPECT_INVALID(t, "out of order", HDR, 0x0a, 0x01, 0x00, 0x0c, 0x01, 0x00);
  EXPECT_INVALID(t, "out of order", HDR, 0x0c, 0x01, 0x00, 0x09, 0x01, 0x00);
  /* Custom sections go anywhere, any number of times. */
  kiln_wasm_info_free(EXPECT_VALID(t, HDR, 0x00, 0x02, 0x01, 'a', 0x01, 0x01,
                                   0x00, 0x00, 0x02, 0x01, 'a', 0x00, 0x01,
                                   0x00));
  /* Leftover bytes inside a section; and a section cut short. */
  EXPECT_INVALID(t, "section size mismatch", HDR, 0x01, 0x02, 0x00, 0x00);
  EXPECT_INVALID(t, "unexpected end", HDR, 0x01, 0x01, 0x01);
  EXPECT_INVALID(t, "runs past the end", HDR, 0x01, 0x05, 0x00);
  EXPECT_INVALID(t, "unexpected end", HDR, 0x01);
}

static void test_huge_sizes_and_counts(kiln_test *t) {
  /* A section size of 2^32-1. */
  EXPECT_INVALID(t, "section size 4294967295 runs past the end", HDR, 0x01,
                 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00);
  /* A count of 2^32-1 in every section that has a vector: refused before
   * anything is allocated from it. */
  const uint8_t ids[] = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11};
  for (size_t i = 0; i < sizeof ids; i++) {
    uint8_t m[] = {HDR, ids[i], 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f};
    expect_invalid_(t, __LINE__, false, "unexpected end", m, sizeof m);
  }
  /* Start and data count hold a number, not a count. */
  EXPECT_INVALID(t, "unknown function", HDR, 0x08, 0x05, 0xff, 0xff, 0xff, 0xff,
                 0x0f);
  EXPECT_INVALID(t, "data count and data section have inconsistent lengths",
                 HDR, 0x0c, 0x05, 0xff, 0xff, 0xff, 0xff, 0x0f);
  /* Inside entries: a parameter count, a name length, a body size, a
   * local count, a data segment size. */
  EXPECT_INVALID(t, "unexpected end", HDR, 0x01, 0x07, 0x01, 0x60, 0xff, 0xff,
                 0xff, 0xff, 0x0f);
  EXPECT_INVALID(t, "unexpected end", HDR, 0x02, 0x06, 0x01, 0xff, 0xff, 0xff,
                 0xff, 0x0f);
  EXPECT_INVALID(t, "runs past the code section", HDR, 0x01, 0x04, 0x01, 0x60,
                 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x0a, 0x06, 0x01, 0xff,
                 0xff, 0xff, 0xff, 0x0f);
  EXPECT_INVALID(t, "too many locals", HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                 0x03, 0x02, 0x01, 0x00, 0x0a, 0x0a, 0x01, 0x08, 0x01, 0xff,
                 0xff, 0xff, 0xff, 0x0f, 0x7f, 0x0b);
  EXPECT_INVALID(t, "unexpected end", HDR, 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b,
                 0x09, 0x01, 0x00, 0x41, 0x00, 0x0b, 0xff, 0xff, 0xff, 0xff,
                 0x0f);
  /* A br_table with 2^32-1 targets. */
  EXPECT_INVALID(t, "unexpected end", HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                 0x03, 0x02, 0x01, 0x00, 0x0a, 0x0c, 0x01, 0x0a, 0x00, 0x41,
                 0x00, 0x0e, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b);
}

/* Local counts: kiln's bound is 50000 per function, params included. */
static void test_too_many_locals(kiln_test *t) {
  for (uint32_t n = 49999; n <= 50000; n++) {
    wbuf m = wb_module(), p = {0}, body = {0};
    WB(&p, 0x01, 0x60, 0x01, 0x7f, 0x00); /* (i32) -> () */
    wb_section(&m, 1, &p);
    WB(&p, 0x01, 0x00);
    wb_section(&m, 3, &p);
    WB(&body, 0x02);          /* two groups */
    wb_leb(&body, n - 10000); /* i32s */
    WB(&body, 0x7f);
    wb_leb(&body, 10000); /* f64s */
    WB(&body, 0x7c, 0x0b);
    WB(&p, 0x01);
    wb_leb(&p, body.n);
    wb_bytes(&p, body.b, body.n);
    free(body.b);
    wb_section(&m, 10, &p);
    if (n == 49999) {
      kiln_wasm_info_free(expect_valid_(t, __LINE__, false, m.b, m.n));
    } else {
      expect_invalid_(t, __LINE__, false, "too many locals", m.b, m.n);
    }
    free(m.b);
  }
}

static void test_overlong_leb(kiln_test *t) {
  /* Padded encodings within the width are fine. */
  kiln_wasm_info *info = EXPECT_VALID(t, HDR, 0x05, 0x07, 0x01, 0x00, 0x82,
                                      0x80, 0x80, 0x80, 0x00);
  KILN_EXPECT(t, info && info->memories[0].limits.min == 2);
  kiln_wasm_info_free(info);
  kiln_wasm_info_free(EXPECT_VALID(t, HDR, 0x06, 0x0a, 0x01, 0x7f, 0x00, 0x41,
                                   0xff, 0xff, 0xff, 0xff, 0x7f, 0x0b));
  /* One byte too many. */
  EXPECT_INVALID(t, "integer representation too long", HDR, 0x05, 0x08, 0x01,
                 0x00, 0x82, 0x80, 0x80, 0x80, 0x80, 0x00);
  EXPECT_INVALID(t, "integer representation too long", HDR, 0x01, 0x80, 0x80,
                 0x80, 0x80, 0x80, 0x00);
  EXPECT_INVALID(t, "integer representation too long", HDR, 0x06, 0x10, 0x01,
                 0x7e, 0x00, 0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                 0x80, 0x80, 0x80, 0x00, 0x0b);
  /* Unused bits of the last byte set (unsigned) or not a sign extension. */
  EXPECT_INVALID(t, "integer too large", HDR, 0x05, 0x07, 0x01, 0x00, 0x82,
                 0x80, 0x80, 0x80, 0x70);
  EXPECT_INVALID(t, "integer too large", HDR, 0x06, 0x0a, 0x01, 0x7f, 0x00,
                 0x41, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x0b);
  EXPECT_INVALID(t, "integer too large", HDR, 0x06, 0x0f, 0x01, 0x7e, 0x00,
                 0x42, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                 0x7e, 0x0b);
  /* A LEB cut off by the end of its section. */
  EXPECT_INVALID(t, "unexpected end", HDR, 0x05, 0x03, 0x01, 0x00, 0x82);
}

static void test_duplicate_export(kiln_test *t) {
  EXPECT_INVALID(t, "duplicate export name", HDR, 0x01, 0x04, 0x01, 0x60, 0x00,
                 0x00, 0x03, 0x02, 0x01, 0x00, 0x07, 0x09, 0x02, 0x01, 'a',
                 0x00, 0x00, 0x01, 'a', 0x00, 0x00, 0x0a, 0x04, 0x01, 0x02,
                 0x00, 0x0b);
  /* Different kinds do not make the same name unique. */
  EXPECT_INVALID(t, "duplicate export name", HDR, 0x05, 0x03, 0x01, 0x00, 0x01,
                 0x06, 0x06, 0x01, 0x7f, 0x00, 0x41, 0x00, 0x0b, 0x07, 0x09,
                 0x02, 0x01, 'x', 0x02, 0x00, 0x01, 'x', 0x03, 0x00);
  /* Names that differ after a U+0000 are distinct; so are "" and "\0". */
  kiln_wasm_info *info =
      EXPECT_VALID(t, HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01,
                   0x00, 0x07, 0x12, 0x04, 0x02, 0x00, 'a', 0x00, 0x00, 0x02,
                   0x00, 'b', 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
                   0x00, 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b);
  KILN_EXPECT(t, info && info->export_count == 4);
  kiln_wasm_info_free(info);
  /* Export indices must exist; kinds must be known. */
  EXPECT_INVALID(t, "unknown function 0", HDR, 0x07, 0x05, 0x01, 0x01, 'f',
                 0x00, 0x00);
  EXPECT_INVALID(t, "unknown memory 0", HDR, 0x07, 0x05, 0x01, 0x01, 'f', 0x02,
                 0x00);
  EXPECT_INVALID(t, "malformed export kind", HDR, 0x07, 0x05, 0x01, 0x01, 'f',
                 0x05, 0x00);
}

static void test_memory_and_table_limits(kiln_test *t) {
  /* 65536 pages is the most a 32-bit memory can have. */
  kiln_wasm_info *info =
      EXPECT_VALID(t, HDR, 0x05, 0x05, 0x01, 0x00, 0x80, 0x80, 0x04);
  KILN_EXPECT(t, info && info->memories[0].limits.min == 65536);
  kiln_wasm_info_free(info);
  EXPECT_INVALID(t, "memory size must be at most 65536 pages (4GiB)", HDR, 0x05,
                 0x05, 0x01, 0x00, 0x81, 0x80, 0x04);
  EXPECT_INVALID(t, "memory size must be at most 65536 pages (4GiB)", HDR, 0x05,
                 0x06, 0x01, 0x01, 0x00, 0x81, 0x80, 0x04);
  EXPECT_INVALID(t, "memory size must be at most 65536 pages (4GiB)", HDR, 0x02,
                 0x0a, 0x01, 0x01, 'e', 0x01, 'm', 0x02, 0x00, 0x81, 0x80,
                 0x04);
  EXPECT_INVALID(t, "size minimum must not be greater than maximum", HDR, 0x05,
                 0x04, 0x01, 0x01, 0x02, 0x01);
  EXPECT_INVALID(t, "size minimum must not be greater than maximum", HDR, 0x04,
                 0x05, 0x01, 0x70, 0x01, 0x02, 0x01);
  EXPECT_INVALID(t, "malformed limits flags", HDR, 0x04, 0x04, 0x01, 0x70, 0x02,
                 0x00);
  EXPECT_INVALID(t, "malformed limits flags", HDR, 0x05, 0x03, 0x01, 0x08,
                 0x00);
  /* Shared memory: threads, and it needs a maximum. */
  info = EXPECT_VALID(t, HDR, 0x05, 0x04, 0x01, 0x03, 0x01, 0x01);
  KILN_EXPECT(
      t, info && info->features.threads && info->memories[0].limits.shared);
  kiln_wasm_info_free(info);
  EXPECT_INVALID(t, "shared memory must have a maximum", HDR, 0x05, 0x03, 0x01,
                 0x02, 0x01);
  /* memory64: 64-bit limits, beyond 65536 pages, i64 data offsets. */
  info = EXPECT_VALID(t, HDR, 0x05, 0x05, 0x01, 0x04, 0x81, 0x80, 0x04, 0x0b,
                      0x06, 0x01, 0x00, 0x42, 0x00, 0x0b, 0x00);
  KILN_EXPECT(t, info && info->features.memory64 &&
                     info->memories[0].limits.is64 &&
                     info->memories[0].limits.min == 65537 &&
                     info->data[0].offset.kind == KILN_CONST_I64);
  kiln_wasm_info_free(info);
  EXPECT_INVALID(t, "type mismatch", HDR, 0x05, 0x03, 0x01, 0x04, 0x01, 0x0b,
                 0x06, 0x01, 0x00, 0x41, 0x00, 0x0b, 0x00);
  /* Tables: limits are u32, min <= max. */
  info = EXPECT_VALID(t, HDR, 0x04, 0x09, 0x01, 0x6f, 0x01, 0x00, 0xff, 0xff,
                      0xff, 0xff, 0x0f);
  KILN_EXPECT(t, info && info->tables[0].elem == KILN_EXTERNREF &&
                     info->tables[0].limits.max == UINT32_MAX);
  kiln_wasm_info_free(info);
}

static void test_multi_memory_off_and_on(kiln_test *t) {
  /* Two defined memories. */
  EXPECT_INVALID(t, "multiple memories", HDR, 0x05, 0x05, 0x02, 0x00, 0x01,
                 0x00, 0x01);
  kiln_wasm_info *info =
      EXPECT_VALID_MULTI(t, HDR, 0x05, 0x05, 0x02, 0x00, 0x01, 0x00, 0x02);
  KILN_EXPECT(t, info && info->memory_count == 2 &&
                     info->features.multi_memory &&
                     info->memories[1].limits.min == 2);
  kiln_wasm_info_free(info);
  /* One imported and one defined. */
  EXPECT_INVALID(t, "multiple memories", HDR, 0x02, 0x08, 0x01, 0x01, 'e', 0x01,
                 'm', 0x02, 0x00, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01);
  info =
      EXPECT_VALID_MULTI(t, HDR, 0x02, 0x08, 0x01, 0x01, 'e', 0x01, 'm', 0x02,
                         0x00, 0x01, 0x05, 0x03, 0x01, 0x00, 0x01,
                         /* data into memory 1 */
                         0x0b, 0x07, 0x01, 0x02, 0x01, 0x41, 0x00, 0x0b, 0x00);
  KILN_EXPECT(t, info && info->memory_count == 2 &&
                     info->memories[0].imported &&
                     !info->memories[1].imported && info->data[0].memory == 1);
  kiln_wasm_info_free(info);
  /* One memory is fine either way; a data segment needs a memory. */
  kiln_wasm_info_free(EXPECT_VALID(t, HDR, 0x05, 0x03, 0x01, 0x00, 0x01));
  EXPECT_INVALID(t, "unknown memory 0", HDR, 0x0b, 0x06, 0x01, 0x00, 0x41, 0x00,
                 0x0b, 0x00);
  EXPECT_INVALID(t, "unknown memory 1", HDR, 0x05, 0x03, 0x01, 0x00, 0x01, 0x0b,
                 0x07, 0x01, 0x02, 0x01, 0x41, 0x00, 0x0b, 0x00);
}

static void test_function_code_and_data_counts(kiln_test *t) {
  EXPECT_INVALID(t, "function and code section have inconsistent lengths", HDR,
                 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x03, 0x02, 0x00,
                 0x00);
  EXPECT_INVALID(t, "function and code section have inconsistent lengths", HDR,
                 0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b);
  EXPECT_INVALID(t, "unknown type", HDR, 0x03, 0x02, 0x01, 0x00);
  EXPECT_INVALID(t, "data count and data section have inconsistent lengths",
                 HDR, 0x0c, 0x01, 0x03, 0x0b, 0x05, 0x02, 0x01, 0x00, 0x01,
                 0x00);
  kiln_wasm_info_free(EXPECT_VALID(t, HDR, 0x0c, 0x01, 0x02, 0x0b, 0x05, 0x02,
                                   0x01, 0x00, 0x01, 0x00));
  /* memory.init and data.drop need the data count section. */
  EXPECT_INVALID(t, "data count section required", HDR, 0x01, 0x04, 0x01, 0x60,
                 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x05, 0x03, 0x01, 0x00,
                 0x00, 0x0a, 0x07, 0x01, 0x05, 0x00, 0xfc, 0x09, 0x00, 0x0b,
                 0x0b, 0x03, 0x01, 0x01, 0x00);
  kiln_wasm_info_free(EXPECT_VALID(
      t, HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x05,
      0x03, 0x01, 0x00, 0x00, 0x0c, 0x01, 0x01, 0x0a, 0x07, 0x01, 0x05, 0x00,
      0xfc, 0x09, 0x00, 0x0b, 0x0b, 0x03, 0x01, 0x01, 0x00));
  /* A body must end with END, and nothing may follow the final END. */
  EXPECT_INVALID(t, "END opcode expected", HDR, 0x01, 0x04, 0x01, 0x60, 0x00,
                 0x00, 0x03, 0x02, 0x01, 0x00, 0x0a, 0x06, 0x01, 0x04, 0x00,
                 0x41, 0x01, 0x1a);
  EXPECT_INVALID(t, "after the end of the function body", HDR, 0x01, 0x04, 0x01,
                 0x60, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x0a, 0x05, 0x01,
                 0x03, 0x00, 0x0b, 0x01);
  EXPECT_INVALID(t, "illegal opcode", HDR, 0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                 0x03, 0x02, 0x01, 0x00, 0x0a, 0x05, 0x01, 0x03, 0x00, 0xff,
                 0x0b);
}

static void test_start_function(kiln_test *t) {
#define START_MODULE(start)                                                    \
  HDR, 0x01, 0x08, 0x02, 0x60, 0x00, 0x00, 0x60, 0x01, 0x7f, 0x00, 0x03, 0x03, \
      0x02, 0x00, 0x01, 0x08, 0x01, (start), 0x0a, 0x07, 0x02, 0x02, 0x00,     \
      0x0b, 0x02, 0x00, 0x0b
  kiln_wasm_info *info = EXPECT_VALID(t, START_MODULE(0x00));
  KILN_EXPECT(t, info && info->has_start && info->start_func == 0);
  kiln_wasm_info_free(info);
  EXPECT_INVALID(t, "start function", START_MODULE(0x01));
  EXPECT_INVALID(t, "unknown function 2", START_MODULE(0x02));
#undef START_MODULE
}

/* Type, function, funcref table of 1, then the given element section
 * payload, then the code. */
static void expect_elems_(kiln_test *t, int line, const char *reason,
                          uint8_t table_type, const uint8_t *elems, size_t n) {
  wbuf m = wb_module(), p = {0};
  WB(&p, 0x01, 0x60, 0x00, 0x00);
  wb_section(&m, 1, &p);
  WB(&p, 0x01, 0x00);
  wb_section(&m, 3, &p);
  if (table_type) {
    WB(&p, 0x01);
    wb_u8(&p, table_type);
    WB(&p, 0x00, 0x01);
    wb_section(&m, 4, &p);
  }
  wb_bytes(&p, elems, n);
  wb_section(&m, 9, &p);
  WB(&p, 0x01, 0x02, 0x00, 0x0b);
  wb_section(&m, 10, &p);
  if (reason) {
    expect_invalid_(t, line, false, reason, m.b, m.n);
  } else {
    kiln_wasm_info *info = expect_valid_(t, line, false, m.b, m.n);
    if (info && info->elem_count != elems[0]) {
      kiln_test_fail_(t, __FILE__, line, "elem_count");
    }
    kiln_wasm_info_free(info);
  }
  free(m.b);
}
#define EXPECT_ELEMS(t, reason, table_type, ...) \
  expect_elems_((t), __LINE__, (reason), (table_type), BYTES(__VA_ARGS__))

static void test_element_segment_encodings(kiln_test *t) {
  /* All eight encodings in one section. */
  EXPECT_ELEMS(t, NULL, 0x70, 0x08, 0x00, 0x41, 0x00, 0x0b, 0x01, 0x00, /* 0 */
               0x01, 0x00, 0x01, 0x00,                                  /* 1 */
               0x02, 0x00, 0x41, 0x00, 0x0b, 0x00, 0x01, 0x00,          /* 2 */
               0x03, 0x00, 0x01, 0x00,                                  /* 3 */
               0x04, 0x41, 0x00, 0x0b, 0x01, 0xd2, 0x00, 0x0b,          /* 4 */
               0x05, 0x70, 0x02, 0xd2, 0x00, 0x0b, 0xd0, 0x70, 0x0b,    /* 5 */
               0x06, 0x00, 0x41, 0x00, 0x0b, 0x70, 0x01, 0xd0, 0x70,
               0x0b,                                /* 6 */
               0x07, 0x70, 0x01, 0xd2, 0x00, 0x0b); /* 7 */
  /* Passive externref segments need no table. */
  EXPECT_ELEMS(t, NULL, 0, 0x01, 0x05, 0x6f, 0x01, 0xd0, 0x6f, 0x0b);
  EXPECT_ELEMS(t, "unknown table 0", 0, 0x01, 0x00, 0x41, 0x00, 0x0b, 0x00);
  EXPECT_ELEMS(t, "unknown table 1", 0x70, 0x01, 0x02, 0x01, 0x41, 0x00, 0x0b,
               0x00, 0x00);
  EXPECT_ELEMS(t, "type mismatch", 0x6f, 0x01, 0x00, 0x41, 0x00, 0x0b, 0x00);
  EXPECT_ELEMS(t, "type mismatch", 0x70, 0x01, 0x05, 0x6f, 0x01, 0xd2, 0x00,
               0x0b);
  EXPECT_ELEMS(t, "type mismatch", 0x70, 0x01, 0x00, 0x42, 0x00, 0x0b, 0x00);
  EXPECT_ELEMS(t, "unknown function 1", 0x70, 0x01, 0x00, 0x41, 0x00, 0x0b,
               0x01, 0x01);
  EXPECT_ELEMS(t, "malformed element kind", 0x70, 0x01, 0x01, 0x01, 0x00);
  EXPECT_ELEMS(t, "malformed reference type", 0x70, 0x01, 0x05, 0x7f, 0x01,
               0xd2, 0x00, 0x0b);
  EXPECT_ELEMS(t, "malformed elements segment kind", 0x70, 0x01, 0x08);
  EXPECT_ELEMS(t, "constant expression required", 0x70, 0x01, 0x05, 0x70, 0x01,
               0xf3, 0x00, 0x0b);
}

static void test_imports_malformed(kiln_test *t) {
  EXPECT_INVALID(t, "malformed import kind", HDR, 0x02, 0x04, 0x01, 0x00, 0x00,
                 0x05);
  EXPECT_INVALID(t, "malformed mutability", HDR, 0x02, 0x06, 0x01, 0x00, 0x00,
                 0x03, 0x7f, 0x02);
  EXPECT_INVALID(t, "malformed value type", HDR, 0x02, 0x06, 0x01, 0x00, 0x00,
                 0x03, 0x40, 0x00);
  EXPECT_INVALID(t, "unknown type", HDR, 0x02, 0x05, 0x01, 0x00, 0x00, 0x00,
                 0x00);
  EXPECT_INVALID(t, "malformed UTF-8 encoding", HDR, 0x02, 0x07, 0x01, 0x02,
                 0xed, 0xa0, 0x00, 0x00, 0x00); /* surrogate half */
  EXPECT_INVALID(t, "malformed UTF-8 encoding", HDR, 0x02, 0x07, 0x01, 0x00,
                 0x02, 0xc0, 0x80, 0x03, 0x7f); /* overlong NUL */
  /* Names may hold any valid UTF-8, U+0000 included. */
  kiln_wasm_info *info =
      EXPECT_VALID(t, HDR, 0x02, 0x0b, 0x01, 0x04, 0xf0, 0x9f, 0x98, 0x80, 0x01,
                   0x00, 0x03, 0x7f, 0x00);
  KILN_EXPECT(t, info && !strcmp(info->imports[0].module, "\xf0\x9f\x98\x80"));
  kiln_wasm_info_free(info);
}

/* ---- Features ----------------------------------------------------------- */

static bool parse_wat_features_(kiln_test *t, int line, const char *flags,
                                const char *text, bool multi,
                                kiln_wasm_features *out) {
  size_t size;
  uint8_t *bytes = wat_(t, line, flags, text, &size);
  if (!bytes) return false;
  kiln_wasm_info *info = expect_valid_(t, line, multi, bytes, size);
  free(bytes);
  if (!info) return false;
  *out = info->features;
  kiln_wasm_info_free(info);
  return true;
}
#define WAT_FEATURES(t, flags, text, out) \
  parse_wat_features_((t), __LINE__, (flags), (text), false, (out))

static void test_features(kiln_test *t) {
  kiln_wasm_features f;
  /* SIMD used without any v128 in a signature, local or global. */
  if (WAT_FEATURES(t, "",
                   "(module (memory 1) (func (result i32)"
                   " (i32x4.extract_lane 0 (v128.load (i32.const 0)))))",
                   &f)) {
    KILN_EXPECT(t, f.simd && !f.threads);
  }
  if (WAT_FEATURES(t, "", "(module (func (local v128)))", &f)) {
    KILN_EXPECT(t, f.simd);
  }
  /* 0xFD bytes inside immediates are not SIMD: i32.const 253 is 41 fd 01. */
  if (WAT_FEATURES(t, "",
                   "(module (memory 1) (func (result i32)"
                   " (drop (i64.const 0xfdfdfdfd)) (drop (f32.const -1.5e38))"
                   " (drop (i32.load offset=253 (i32.const 253)))"
                   " (i32.const 253)))",
                   &f)) {
    KILN_EXPECT(t, !f.simd);
  }
  /* Atomics without a shared memory are threads too. */
  if (WAT_FEATURES(t, "--enable-threads",
                   "(module (memory 1) (func (result i32)"
                   " (i32.atomic.load (i32.const 0))))",
                   &f)) {
    KILN_EXPECT(t, f.threads && !f.simd);
  }
  if (WAT_FEATURES(t, "--enable-threads", "(module (memory 1 1 shared))", &f)) {
    KILN_EXPECT(t, f.threads);
  }
  if (WAT_FEATURES(t, "--enable-exceptions",
                   "(module (tag $e (param i32))"
                   " (func (throw $e (i32.const 1))) (export \"e\" (tag $e)))",
                   &f)) {
    KILN_EXPECT(t, f.exceptions);
  }
  if (WAT_FEATURES(t, "--enable-exceptions",
                   "(module (import \"m\" \"t\" (tag (param i64))))", &f)) {
    KILN_EXPECT(t, f.exceptions);
  }
  if (WAT_FEATURES(t, "--enable-memory64",
                   "(module (memory i64 1) (data (i64.const 8) \"x\")"
                   " (func (drop (i32.load offset=0x10 (i64.const 0)))))",
                   &f)) {
    KILN_EXPECT(t, f.memory64 && !f.multi_memory);
  }
  /* Multi-memory instructions are walked when the option allows them. */
  if (parse_wat_features_(t, __LINE__, "--enable-multi-memory",
                          "(module (memory 1) (memory $b 1)"
                          " (func (drop (i32.load $b (i32.const 0)))"
                          " (drop (memory.size $b))"
                          " (memory.copy $b 0 (i32.const 0) (i32.const 0)"
                          " (i32.const 0))))",
                          true, &f)) {
    KILN_EXPECT(t, f.multi_memory);
  }
}

/* ---- Hostile input ------------------------------------------------------ */

static bool read_leb_simple(const uint8_t *m, size_t n, size_t *pos,
                            uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*pos >= n) return false;
    uint8_t b = m[(*pos)++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/* Offsets where a module's top-level sections end (a prefix ending there
 * may itself be a valid module). */
static size_t section_ends(const uint8_t *m, size_t n, size_t *ends,
                           size_t max) {
  size_t count = 0, pos = 8;
  ends[count++] = 8;
  while (pos < n && count < max) {
    uint64_t size;
    pos++; /* id */
    if (!read_leb_simple(m, n, &pos, &size) || size > n - pos) break;
    pos += size;
    ends[count++] = pos;
  }
  return count;
}

static void test_truncated_module_every_prefix(kiln_test *t) {
  size_t size;
  uint8_t *bytes = WAT(t, "--debug-names", kRichWat, &size);
  if (!bytes) return;
  size_t ends[64];
  size_t nends = section_ends(bytes, size, ends, 64);
  int rejected = 0, valid_prefixes = 0;
  for (size_t len = 0; len <= size; len++) {
    /* A private heap copy, so that ASan sees any read past `len`. */
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, bytes, len);
    kiln_wasm_info *info = NULL;
    kiln_status s = parse(copy, len, false, &info);
    bool at_boundary = false;
    for (size_t i = 0; i < nends; i++) at_boundary |= ends[i] == len;
    if (len == size) {
      KILN_EXPECT_OK(t, s);
      s = NULL;
    } else if (s) {
      KILN_EXPECTF(t, kiln_status_code(s) == KILN_CODE_INVALID_MODULE,
                   "prefix %zu: %s", len, kiln_status_message(s));
      rejected++;
    } else {
      KILN_EXPECTF(t, at_boundary,
                   "prefix of %zu bytes (inside a section) was accepted", len);
      valid_prefixes++;
    }
    kiln_status_free(s);
    kiln_wasm_info_free(info);
    free(copy);
  }
  printf(
      "  %zu prefixes: %d rejected, %d valid (ending at a section "
      "boundary), 1 full\n",
      size, rejected, valid_prefixes);
  free(bytes);
}

static uint64_t rng_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Parses a private copy; any status must be OK or INVALID_MODULE. */
static bool fuzz_one(kiln_test *t, const uint8_t *bytes, size_t n) {
  uint8_t *copy = malloc(n ? n : 1);
  memcpy(copy, bytes, n);
  kiln_wasm_info *info = NULL;
  kiln_status s = parse(copy, n, rng_next(&(uint64_t){n + 1}) & 1, &info);
  KILN_EXPECTF(t, !s || kiln_status_code(s) == KILN_CODE_INVALID_MODULE,
               "%s: %s", kiln_code_name(kiln_status_code(s)),
               kiln_status_message(s));
  bool ok = !s;
  kiln_status_free(s);
  kiln_wasm_info_free(info);
  free(copy);
  return ok;
}

static void test_random_bytes(kiln_test *t) {
  uint64_t seed = 0x6b696c6e; /* fixed: failures reproduce */
  uint8_t buf[512];
  int accepted = 0, runs = 0;
  /* Pure noise, and noise after a valid header. */
  for (int i = 0; i < 4000; i++) {
    size_t n = rng_next(&seed) % sizeof buf;
    for (size_t k = 0; k < n; k++) buf[k] = (uint8_t)rng_next(&seed);
    if (i & 1 && n >= 8) memcpy(buf, (uint8_t[]){HDR}, 8);
    accepted += fuzz_one(t, buf, n);
    runs++;
  }
  /* Noise shaped like sections: small ids and sizes that mostly fit. */
  for (int i = 0; i < 4000; i++) {
    size_t n = 8;
    memcpy(buf, (uint8_t[]){HDR}, 8);
    while (n < sizeof buf - 40) {
      uint8_t len = rng_next(&seed) % 24;
      buf[n++] = rng_next(&seed) % 14;
      buf[n++] = len;
      for (int k = 0; k < len; k++) {
        uint64_t r = rng_next(&seed);
        buf[n++] = (r & 3) ? (uint8_t)(r >> 8) % 4 : (uint8_t)(r >> 8);
      }
      if (rng_next(&seed) % 3 == 0) break;
    }
    accepted += fuzz_one(t, buf, n);
    runs++;
  }
  /* Mutations of a real module: flipped bytes, inserted and cut ranges. */
  size_t size;
  uint8_t *real = WAT(t, "--debug-names", kRichWat, &size);
  if (real && size < sizeof buf - 16) {
    for (int i = 0; i < 4000; i++) {
      memcpy(buf, real, size);
      size_t n = size;
      int edits = 1 + rng_next(&seed) % 4;
      for (int e = 0; e < edits; e++) {
        size_t at = rng_next(&seed) % n;
        switch (rng_next(&seed) % 4) {
          case 0:
          case 1:
            buf[at] = (uint8_t)rng_next(&seed);
            break;
          case 2:
            buf[at] ^= (uint8_t)(1u << (rng_next(&seed) % 8));
            break;
          case 3: /* cut [at, at+k) */ {
            size_t k = 1 + rng_next(&seed) % 8;
            if (at + k > n) k = n - at;
            memmove(buf + at, buf + at + k, n - at - k);
            n -= k;
            if (n == 0) n = 1;
          }
        }
      }
      accepted += fuzz_one(t, buf, n);
      runs++;
    }
  }
  free(real);
  printf("  %d random inputs: %d accepted, %d rejected\n", runs, accepted,
         runs - accepted);
}

/* Running out of memory is a status, not a crash. A module of 16 MiB
 * whose one function type has 16Mi parameters needs a 64 MiB array; in a
 * child process whose address space is capped 32 MiB above what it uses,
 * that allocation fails and the parse must say RESOURCE_EXHAUSTED. */
static void test_allocation_failure_is_a_status(kiln_test *t) {
#ifdef KILN_TEST_ASAN
  KILN_TEST_SKIP(t, "address-space limits do not mix with AddressSanitizer");
#else
  const char *preload = getenv("LD_PRELOAD");
  if (preload && strstr(preload, "vgpreload")) {
    KILN_TEST_SKIP(t, "valgrind's allocator ignores address-space limits");
    return;
  }
  const uint32_t params = 16u << 20;
  uint8_t *many = malloc(params);
  if (!many) {
    KILN_TEST_SKIP(t, "not enough memory for the test module");
    return;
  }
  memset(many, 0x7f, params); /* i32 */
  wbuf m = wb_module(), p = {0};
  WB(&p, 0x01, 0x60);
  wb_leb(&p, params);
  wb_bytes(&p, many, params);
  WB(&p, 0x00);
  wb_section(&m, 1, &p);
  free(many);

  kiln_wasm_info *info = expect_valid_(t, __LINE__, false, m.b, m.n);
  KILN_EXPECT(t, info && info->types[0].param_count == params);
  kiln_wasm_info_free(info);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) _exit(3);
    fclose(f);
    rlim_t cap = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (32u << 20);
    struct rlimit rl = {cap, cap};
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(3);
    kiln_status s = parse(m.b, m.n, false, &info);
    _exit(kiln_status_code(s) == KILN_CODE_RESOURCE_EXHAUSTED ? 0 : s ? 1 : 2);
  }
  int status = 0;
  KILN_EXPECT(t, pid > 0 && waitpid(pid, &status, 0) == pid);
  KILN_EXPECTF(t, WIFEXITED(status) && WEXITSTATUS(status) == 0,
               "child: %s (status 0x%x)",
               WIFEXITED(status) && WEXITSTATUS(status) == 1
                   ? "another error code"
               : WIFEXITED(status) && WEXITSTATUS(status) == 2
                   ? "parsed although the allocation cannot succeed"
                   : "crashed or could not set the limit",
               status);
  free(m.b);
#endif
}

/* ---- WebAssembly spec test data ----------------------------------------- */

/* Files whose invalid modules must be rejected when the fault is outside
 * function bodies (the other files are checked for accepting valid ones). */
static bool structural_wast(const char *name) {
  static const char *const kNames[] = {
      "binary",  "binary-leb128", "custom", "data",   "elem",
      "exports", "imports",       "memory", "global", "start",
      "table",   "func",          "type",   "names",  NULL};
  for (int i = 0; kNames[i]; i++) {
    if (!strcmp(name, kNames[i])) return true;
  }
  return strncmp(name, "utf8-", 5) == 0;
}

/* The string value of "key": "value" in one wast2json command line. */
static bool json_field(const char *line, const char *key, char *out,
                       size_t size) {
  char pat[64];
  snprintf(pat, sizeof pat, "\"%s\": \"", key);
  const char *p = strstr(line, pat);
  if (!p) return false;
  p += strlen(pat);
  const char *q = strchr(p, '"');
  if (!q || (size_t)(q - p) >= size) return false;
  memcpy(out, p, (size_t)(q - p));
  out[q - p] = '\0';
  return true;
}

/* A copy of module m with every function body replaced by `unreachable`
 * (valid for any function type), or NULL when its sections or its code
 * section cannot be walked. What stays invalid after this is invalid
 * outside function bodies. */
static uint8_t *strip_bodies(const uint8_t *m, size_t n, size_t *out_n) {
  if (n < 8) return NULL;
  wbuf w = {0};
  wb_bytes(&w, m, 8);
  size_t pos = 8;
  while (pos < n) {
    uint8_t id = m[pos++];
    uint64_t size, count, body;
    if (!read_leb_simple(m, n, &pos, &size) || size > n - pos) goto fail;
    size_t end = pos + size, p = pos;
    if (id != 10) {
      wb_u8(&w, id);
      wb_leb(&w, size);
      wb_bytes(&w, m + pos, size);
    } else {
      if (!read_leb_simple(m, end, &p, &count) || count > size) goto fail;
      for (uint64_t i = 0; i < count; i++) {
        if (!read_leb_simple(m, end, &p, &body) || body > end - p) goto fail;
        p += body;
      }
      wbuf c = {0};
      wb_leb(&c, count);
      for (uint64_t i = 0; i < count; i++) WB(&c, 0x03, 0x00, 0x00, 0x0b);
      if (p != end) wb_bytes(&c, m + p, end - p); /* keep a size mismatch */
      wb_section(&w, 10, &c);
    }
    pos = end;
  }
  *out_n = w.n;
  return w.b;
fail:
  free(w.b);
  return NULL;
}

/* Whether wabt's validator rejects the module with its bodies stripped:
 * then the fault is structural and kiln must see it too. */
static bool structurally_invalid(const char *dir, const uint8_t *m, size_t n) {
  size_t sn;
  uint8_t *stripped = strip_bodies(m, n, &sn);
  if (!stripped) return true;
  char path[512], cmd[700];
  snprintf(path, sizeof path, "%s/stripped.wasm", dir);
  bool written = write_file(path, stripped, sn);
  free(stripped);
  if (!written) return true;
  snprintf(cmd, sizeof cmd, "wasm-validate '%s' >/dev/null 2>&1", path);
  return system(cmd) != 0;
}

typedef struct spec_counts {
  int valid_accepted, invalid_rejected, body_faults_left, files;
} spec_counts;

static void check_wast(kiln_test *t, const char *spec_dir, const char *dir,
                       const char *name, spec_counts *c) {
  char cmd[1200], json[600];
  snprintf(json, sizeof json, "%s/%s.json", dir, name);
  snprintf(cmd, sizeof cmd, "wast2json '%s/%s.wast' -o '%s' 2>/dev/null",
           spec_dir, name, json);
  if (system(cmd) != 0) {
    printf("  (wast2json cannot read %s.wast; skipped)\n", name);
    return;
  }
  c->files++;
  FILE *f = fopen(json, "r");
  if (!f) return;
  bool structural = structural_wast(name);
  char line[8192];
  while (fgets(line, sizeof line, f)) {
    char type[64], file[256], module_type[32], text[256] = "";
    if (!json_field(line, "type", type, sizeof type) ||
        !json_field(line, "filename", file, sizeof file)) {
      continue;
    }
    if (json_field(line, "module_type", module_type, sizeof module_type) &&
        strcmp(module_type, "binary") != 0) {
      continue; /* a text module wast2json could not convert */
    }
    json_field(line, "text", text, sizeof text);
    bool must_accept =
        !strcmp(type, "module") || !strcmp(type, "assert_uninstantiable") ||
        !strcmp(type, "assert_unlinkable") || !strcmp(type, "assert_trap");
    bool must_reject =
        !strcmp(type, "assert_malformed") || !strcmp(type, "assert_invalid");
    if (!must_accept && !must_reject) continue;
    char path[900];
    size_t n;
    snprintf(path, sizeof path, "%s/%s", dir, file);
    uint8_t *bytes = read_file(path, &n);
    if (!bytes) continue;
    kiln_wasm_info *info = NULL;
    kiln_status s = parse(bytes, n, false, &info);
    if (must_accept) {
      KILN_EXPECTF(t, !s, "%s.wast %s (%s) rejected: %s", name, file, type,
                   kiln_status_message(s));
      if (!s) c->valid_accepted++;
    } else if (s) {
      KILN_EXPECTF(t, kiln_status_code(s) == KILN_CODE_INVALID_MODULE, "%s: %s",
                   file, kiln_status_message(s));
      c->invalid_rejected++;
    } else if (structural && structurally_invalid(dir, bytes, n)) {
      KILN_EXPECTF(t, false, "%s.wast %s accepted; expected \"%s\"", name, file,
                   text);
    } else {
      c->body_faults_left++; /* a fault inside a body: wasm2c's to find */
    }
    kiln_status_free(s);
    kiln_wasm_info_free(info);
    free(bytes);
  }
  fclose(f);
}

static void test_spec_testsuite_modules(kiln_test *t) {
  const char *spec_dir = getenv("KILN_WASM_SPEC_DIR");
  char default_dir[600];
  if (!spec_dir) {
    snprintf(default_dir, sizeof default_dir, "%s/../shared/testdata/wasm-spec",
             KILN_SOURCE_DIR);
    spec_dir = default_dir;
  }
  DIR *d = opendir(spec_dir);
  if (!d) {
    KILN_TEST_SKIP(t, "no spec test data at %.200s", spec_dir);
    return;
  }
  if (!have_tool("wast2json") || !have_tool("wasm-validate")) {
    closedir(d);
    KILN_TEST_SKIP(t, "wast2json or wasm-validate not installed");
    return;
  }
  char dir[] = "/tmp/kiln-test-spec-XXXXXX";
  if (!mkdtemp(dir)) {
    closedir(d);
    KILN_EXPECT(t, false);
    return;
  }
  spec_counts c = {0};
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 6 || strcmp(e->d_name + len - 5, ".wast") != 0) continue;
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(len - 5), e->d_name);
    check_wast(t, spec_dir, dir, name, &c);
  }
  closedir(d);
  remove_tree(dir);
  printf(
      "  %d .wast files: %d valid modules accepted, %d invalid rejected, "
      "%d invalid only inside function bodies (left to wasm2c)\n",
      c.files, c.valid_accepted, c.invalid_rejected, c.body_faults_left);
  KILN_EXPECT(t, c.files > 0 && c.valid_accepted > 0);
}

KILN_TEST_MAIN(test_minimal_module, test_imports_exports_and_types,
               test_name_section_names, test_malformed_name_section_is_ignored,
               test_empty_offset_in_active_data_segment,
               test_empty_offset_in_active_element_segment,
               test_constant_expressions, test_header,
               test_section_order_and_ids, test_huge_sizes_and_counts,
               test_too_many_locals, test_overlong_leb, test_duplicate_export,
               test_memory_and_table_limits, test_multi_memory_off_and_on,
               test_function_code_and_data_counts, test_start_function,
               test_element_segment_encodings, test_imports_malformed,
               test_features, test_truncated_module_every_prefix,
               test_random_bytes, test_allocation_failure_is_a_status,
               test_spec_testsuite_modules)
