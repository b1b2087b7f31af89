/* Imports that repeat a (module, name) pair. The spec lets a module import
 * one pair several times, even with different types (a host may overload a
 * name); wasm2c 1.0.32 aborts on that, so kiln hands it a copy of the
 * module whose repeated import names are made unique, while linking keeps
 * the real names. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/wasm_binary.h"
#include "kiln/engine.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

/* The WAT text assembled by wat2wasm; NULL (and a failed expectation) when
 * that fails. */
static uint8_t *assemble(kiln_test *t, const char *text, size_t *size) {
  char dir[] = "/tmp/kiln-test-imports-XXXXXX";
  if (!mkdtemp(dir)) {
    KILN_EXPECTF(t, false, "mkdtemp failed");
    return NULL;
  }
  char wat[128], wasm[128], cmd[400];
  snprintf(wat, sizeof wat, "%s/m.wat", dir);
  snprintf(wasm, sizeof wasm, "%s/m.wasm", dir);
  snprintf(cmd, sizeof cmd, "wat2wasm '%s' -o '%s'", wat, wasm);
  uint8_t *bytes = NULL;
  FILE *f = fopen(wat, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
    if (system(cmd) == 0 && (f = fopen(wasm, "rb"))) {
      fseek(f, 0, SEEK_END);
      long n = ftell(f);
      fseek(f, 0, SEEK_SET);
      bytes = malloc(n > 0 ? (size_t)n : 1);
      if (bytes && fread(bytes, 1, (size_t)n, f) == (size_t)n) {
        *size = (size_t)n;
      } else {
        free(bytes);
        bytes = NULL;
      }
      fclose(f);
    }
  }
  unlink(wat);
  unlink(wasm);
  rmdir(dir);
  KILN_EXPECTF(t, bytes != NULL, "wat2wasm failed on: %s", text);
  return bytes;
}

/* "f" twice with one type, and "f#1": the name the second "f" would get
 * first, so it must get a longer one. */
static const char kRepeated[] =
    "(module\n"
    "  (import \"host\" \"f\" (func $a (result i32)))\n"
    "  (import \"host\" \"f\" (func $b (result i32)))\n"
    "  (import \"host\" \"f#1\" (func $c (result i32)))\n"
    "  (func (export \"sum\") (result i32)\n"
    "    (i32.add (i32.add (call $a) (i32.mul (call $b) (i32.const 10)))\n"
    "             (i32.mul (call $c) (i32.const 100)))))\n";

/* One pair imported as two functions of different types and a global. */
static const char kOverloaded[] =
    "(module\n"
    "  (import \"host\" \"f\" (func (result i32)))\n"
    "  (import \"host\" \"f\" (func (param i32) (result i32)))\n"
    "  (import \"host\" \"f\" (global i32)))\n";

static void test_unique_names_leave_distinct_imports_alone(kiln_test *t) {
  size_t size = 0;
  uint8_t *bytes = assemble(
      t, "(module (import \"a\" \"f\" (func)) (import \"b\" \"f\" (func)))",
      &size);
  kiln_wasm_info *info = NULL;
  if (bytes) KILN_EXPECT_OK(t, kiln_wasm_parse(bytes, size, NULL, &info));
  if (info) {
    char **names = NULL;
    uint8_t *copy = NULL;
    size_t copy_size = 1;
    KILN_EXPECT_OK(t, kiln_wasm_unique_import_names(bytes, size, info, &names,
                                                    &copy, &copy_size));
    KILN_EXPECT(t, !names && !copy && copy_size == 0);
  }
  kiln_wasm_info_free(info);
  free(bytes);
}

static void test_unique_names_rewrite_only_the_names(kiln_test *t) {
  size_t size = 0;
  uint8_t *bytes = assemble(t, kRepeated, &size);
  kiln_wasm_info *info = NULL, *renamed = NULL;
  if (bytes) KILN_EXPECT_OK(t, kiln_wasm_parse(bytes, size, NULL, &info));
  if (!info) {
    free(bytes);
    return;
  }
  char **names = NULL;
  uint8_t *copy = NULL;
  size_t copy_size = 0;
  KILN_EXPECT_OK(t, kiln_wasm_unique_import_names(bytes, size, info, &names,
                                                  &copy, &copy_size));
  KILN_EXPECT(t, names && copy);
  if (names) {
    KILN_EXPECT(t, names[0] == NULL && names[2] == NULL);
    KILN_EXPECTF(t, names[1] && !strcmp(names[1], "f#1#1"), "got %s",
                 names[1] ? names[1] : "(none)");
  }
  /* The copy parses to the same module with the new name, and only the
   * import section changed: everything after it is byte for byte equal. */
  if (copy) KILN_EXPECT_OK(t, kiln_wasm_parse(copy, copy_size, NULL, &renamed));
  if (renamed) {
    KILN_EXPECT(t, renamed->import_count == 3 && renamed->export_count == 1);
    KILN_EXPECT(t, !strcmp(renamed->imports[0].name, "f") &&
                       !strcmp(renamed->imports[1].name, "f#1#1") &&
                       !strcmp(renamed->imports[2].name, "f#1"));
    size_t tail = size - info->import_section_end;
    KILN_EXPECT(t, copy_size - renamed->import_section_end == tail);
    KILN_EXPECT(t, !memcmp(copy + renamed->import_section_end,
                           bytes + info->import_section_end, tail));
    KILN_EXPECT(t, !memcmp(copy, bytes, info->import_section_at));
  }
  kiln_wasm_info_free(renamed);
  kiln_wasm_names_free(names, info->import_count);
  free(copy);
  kiln_wasm_info_free(info);
  free(bytes);
}

static uint32_t host_one(kiln_caller *c) {
  (void)c;
  return 1;
}

static uint32_t host_two(kiln_caller *c) {
  (void)c;
  return 2;
}

/* Each import binds what its real name names, through its own slot. */
static void test_repeated_imports_link_by_real_name(kiln_test *t) {
  size_t size = 0;
  uint8_t *bytes = assemble(t, kRepeated, &size);
  if (!bytes) return;
  kiln_module *m = NULL;
  KILN_EXPECT_OK(t, kiln_module_load(kiln_test_engine(), bytes, size,
                                     "repeated.wasm", &m));
  free(bytes);
  if (!m) return;
  /* kiln's import table keeps the names the module wrote. */
  KILN_EXPECT(t, kiln_module_import_count(m) == 3 &&
                     !strcmp(kiln_module_import(m, 1)->name, "f") &&
                     !strcmp(kiln_module_import(m, 2)->name, "f#1"));
  static const kiln_valtype i32[] = {KILN_I32};
  kiln_host_func one = {"host", "f", {0, 1, NULL, i32}, (void *)host_one,
                        NULL, NULL};
  kiln_host_func two = {"host", "f#1", {0, 1, NULL, i32}, (void *)host_two,
                        NULL, NULL};
  kiln_linker *l = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(kiln_test_engine(), &l));
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &one));
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &two));
  kiln_instance *i = NULL;
  KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &i));
  if (i) {
    kiln_val r;
    KILN_EXPECT_OK(t, kiln_instance_call(i, "sum", NULL, 0, &r, 1));
    KILN_EXPECTF(t, r.of.i32 == 1 + 10 + 200, "sum = %u", r.of.i32);
    kiln_instance_release(i);
  }
  kiln_linker_release(l);
  kiln_module_release(m);
}

/* Overloads compile; a linker holds one definition per name, so linking
 * fails on the import whose type it does not match, naming it. */
static void test_overloaded_imports_load_and_fail_to_link(kiln_test *t) {
  size_t size = 0;
  uint8_t *bytes = assemble(t, kOverloaded, &size);
  if (!bytes) return;
  kiln_module *m = NULL;
  KILN_EXPECT_OK(t, kiln_module_load(kiln_test_engine(), bytes, size,
                                     "overloaded.wasm", &m));
  free(bytes);
  if (!m) return;
  static const kiln_valtype i32[] = {KILN_I32};
  kiln_host_func one = {"host", "f", {0, 1, NULL, i32}, (void *)host_one,
                        NULL, NULL};
  kiln_linker *l = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(kiln_test_engine(), &l));
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &one));
  kiln_instance *i = NULL;
  kiln_status s = kiln_instance_create(m, l, NULL, &i);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_LINK);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "'host' 'f'") &&
                      strstr(kiln_status_message(s), "(i32) -> (i32)"),
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  kiln_linker_release(l);
  kiln_module_release(m);
}

KILN_TEST_MAIN(test_unique_names_leave_distinct_imports_alone,
               test_unique_names_rewrite_only_the_names,
               test_repeated_imports_link_by_real_name,
               test_overloaded_imports_load_and_fail_to_link)
