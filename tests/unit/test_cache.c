/* The pipeline cache: rejected modules are remembered, entries of either
 * kind are checked on lookup, and engines sharing a cache folder agree on
 * every key however they interleave. */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/cache.h"
#include "kiln/engine.h"
#include "kiln_test.h"

/* Structurally valid, but the body of a () -> i32 function is empty: only
 * a type check of the body (wasm2c's) refuses it. */
static const uint8_t kBadBody[] = {
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, /* header */
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f,       /* type: () -> i32 */
    0x03, 0x02, 0x01, 0x00,                         /* func 0: type 0 */
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b,             /* code: no locals, end */
};

static char *make_dir(kiln_test *t) {
  char tmpl[] = "/tmp/kiln-test-cache-XXXXXX";
  char *d = mkdtemp(tmpl);
  KILN_EXPECT(t, d != NULL);
  return d ? strdup(d) : NULL;
}

static void remove_dir(char *dir) {
  if (dir) kiln_remove_tree(dir);
  free(dir);
}

static kiln_engine *make_engine(kiln_test *t, const char *dir) {
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  o.cache_dir = dir;
  o.opt_level = 0;
  kiln_engine *e = NULL;
  KILN_EXPECT_OK(t, kiln_engine_create(&o, &e));
  return e;
}

static bool write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) return false;
  bool ok = fputs(text, f) >= 0;
  return fclose(f) == 0 && ok;
}

/* Publishes an entry holding `file` with `text` for key. */
static void publish(kiln_test *t, const char *dir, const char *key,
                    const char *file, const char *text) {
  char tmp[512], path[600];
  KILN_EXPECT_OK(t, kiln_cache_make_temp(dir, tmp, sizeof tmp));
  snprintf(path, sizeof path, "%s/%s", tmp, file);
  KILN_EXPECT(t, write_text(path, text));
  KILN_EXPECT_OK(t, kiln_cache_publish(dir, key, tmp, file, path, sizeof path));
}

/* The one entry folder under dir/v1 (these tests make one at a time). */
static bool find_entry(const char *dir, char *out, size_t size) {
  char v1[512];
  snprintf(v1, sizeof v1, "%s/v1", dir);
  DIR *d = opendir(v1);
  bool found = false;
  struct dirent *a;
  while (d && !found && (a = readdir(d))) {
    if (a->d_name[0] == '.') continue;
    char sub[600];
    snprintf(sub, sizeof sub, "%s/%s", v1, a->d_name);
    DIR *s = opendir(sub);
    struct dirent *b;
    while (s && !found && (b = readdir(s))) {
      if (b->d_name[0] == '.' || strchr(b->d_name, '.')) continue;
      snprintf(out, size, "%s/%s", sub, b->d_name);
      found = true;
    }
    if (s) closedir(s);
  }
  if (d) closedir(d);
  return found;
}

static const char kKey[] =
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

static void test_lookup_tells_artifact_from_rejection(kiln_test *t) {
  char *dir = make_dir(t);
  if (!dir) return;
  char path[600];
  bool corrupt = true;
  KILN_EXPECT(t, kiln_cache_lookup(dir, kKey, path, sizeof path, &corrupt) ==
                     KILN_CACHE_MISS);
  KILN_EXPECT(t, !corrupt);
  publish(t, dir, kKey, KILN_CACHE_REJECTED_FILE, "bad body");
  KILN_EXPECT(t, kiln_cache_lookup(dir, kKey, path, sizeof path, &corrupt) ==
                     KILN_CACHE_REJECTED);
  KILN_EXPECT(t, strstr(path, "/" KILN_CACHE_REJECTED_FILE) != NULL);
  /* A changed reason is a corrupt entry: removed, reported as a miss. */
  KILN_EXPECT(t, write_text(path, "bad bodY"));
  KILN_EXPECT(t, kiln_cache_lookup(dir, kKey, path, sizeof path, &corrupt) ==
                     KILN_CACHE_MISS);
  KILN_EXPECT(t, corrupt);
  struct stat st;
  KILN_EXPECT(t, stat(path, &st) != 0);
  /* Only the two known files can be published. */
  char tmp[512];
  KILN_EXPECT_OK(t, kiln_cache_make_temp(dir, tmp, sizeof tmp));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_cache_publish(dir, kKey, tmp, "../x", path,
                                      sizeof path));
  remove_dir(dir);
}

/* Entries written before rejections were cached have no "file" line. */
static void test_lookup_reads_entries_without_a_file_line(kiln_test *t) {
  char *dir = make_dir(t);
  if (!dir) return;
  publish(t, dir, kKey, KILN_CACHE_ARTIFACT_FILE, "not really an ELF file");
  char edir[600], meta[700], path[600];
  KILN_EXPECT(t, find_entry(dir, edir, sizeof edir));
  snprintf(meta, sizeof meta, "%s/meta", edir);
  char text[256] = "";
  FILE *f = fopen(meta, "r");
  if (f) {
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = 0;
    fclose(f);
  }
  char *line = strstr(text, "file " KILN_CACHE_ARTIFACT_FILE "\n");
  KILN_EXPECTF(t, line != NULL, "meta: %s", text);
  if (line) *line = 0;
  KILN_EXPECT(t, write_text(meta, text));
  KILN_EXPECT(t, kiln_cache_lookup(dir, kKey, path, sizeof path, NULL) ==
                     KILN_CACHE_ARTIFACT);
  remove_dir(dir);
}

/* An invalid module is refused with the code generator's reason, which is
 * then cached: the next load refuses it from the cache without running
 * wasm2c (shown here by a reason wasm2c would never give). */
static void test_rejected_module_is_refused_from_the_cache(kiln_test *t) {
  char *dir = make_dir(t);
  kiln_engine *e = dir ? make_engine(t, dir) : NULL;
  if (!e) {
    remove_dir(dir);
    return;
  }
  kiln_module *m = NULL;
  kiln_status s = kiln_module_load(e, kBadBody, sizeof kBadBody, "bad", &m);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_INVALID_MODULE && !m);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "type mismatch") != NULL,
               "message: %s", kiln_status_message(s));
  /* The build folder's temp path is not part of the reason. */
  KILN_EXPECTF(t, !strstr(kiln_status_message(s), "/tmp/"), "message: %s",
               kiln_status_message(s));
  kiln_status_free(s);

  char edir[600], path[700];
  KILN_EXPECT(t, find_entry(dir, edir, sizeof edir));
  const char *key = strrchr(edir, '/') + 1;
  KILN_EXPECT(t, kiln_cache_lookup(dir, key, path, sizeof path, NULL) ==
                     KILN_CACHE_REJECTED);
  kiln_remove_tree(edir);
  publish(t, dir, key, KILN_CACHE_REJECTED_FILE, "remembered refusal");
  s = kiln_module_load(e, kBadBody, sizeof kBadBody, "bad", &m);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_INVALID_MODULE);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "remembered refusal"),
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  kiln_engine_release(e);
  remove_dir(dir);
}

typedef struct loader {
  const char *dir;
  const uint8_t *bytes;
  size_t size;
  char key[65];
  char err[512];
} loader;

static void *load_in_own_engine(void *arg) {
  loader *l = arg;
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  o.cache_dir = l->dir;
  o.opt_level = 0;
  kiln_engine *e = NULL;
  kiln_module *m = NULL;
  kiln_status s = kiln_engine_create(&o, &e);
  if (!s) s = kiln_module_load(e, l->bytes, l->size, "empty", &m);
  if (s) {
    snprintf(l->err, sizeof l->err, "%s", kiln_status_message(s));
    kiln_status_free(s);
  } else {
    snprintf(l->key, sizeof l->key, "%s", kiln_module_cache_key(m));
  }
  kiln_module_release(m);
  kiln_engine_release(e);
  return NULL;
}

/* Engines that start at once on one cache folder all learn the same
 * compiler identity, so all compute the same key (they used to share one
 * `--version` log file and could hash each other's half-written output). */
static void test_engines_sharing_a_folder_agree_on_keys(kiln_test *t) {
  static const uint8_t kEmpty[] = {0x00, 0x61, 0x73, 0x6d,
                                   0x01, 0x00, 0x00, 0x00};
  char *dir = make_dir(t);
  if (!dir) return;
  enum { N = 8 };
  pthread_t th[N];
  loader ls[N];
  for (int round = 0; round < 3; round++) {
    for (int k = 0; k < N; k++) {
      ls[k] = (loader){dir, kEmpty, sizeof kEmpty, "", ""};
      pthread_create(&th[k], NULL, load_in_own_engine, &ls[k]);
    }
    for (int k = 0; k < N; k++) {
      pthread_join(th[k], NULL);
      KILN_EXPECTF(t, !ls[k].err[0], "engine %d: %s", k, ls[k].err);
      KILN_EXPECTF(t, !strcmp(ls[k].key, ls[0].key), "key %d: %s vs %s", k,
                   ls[k].key, ls[0].key);
    }
  }
  /* No per-call log files are left behind. */
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  DIR *d = opendir(tmp);
  KILN_EXPECT(t, d != NULL);
  struct dirent *a;
  while (d && (a = readdir(d)))
    KILN_EXPECTF(t, strncmp(a->d_name, "version", 7), "left over: %s",
                 a->d_name);
  if (d) closedir(d);
  remove_dir(dir);
}

/* The compiler's identity is learnt once per cache folder, not per
 * process: a second engine on the folder does not run `cc --version`
 * (a wrapper script counts its calls), and replacing the compiler (a new
 * version string, so a new file) changes the key. */
static const char *count_calls(const char *dir) {
  static char path[600];
  snprintf(path, sizeof path, "%s/calls", dir);
  return path;
}
static int version_calls(const char *dir) {
  FILE *f = fopen(count_calls(dir), "r");
  if (!f) return 0;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}
static bool write_cc(const char *path, const char *dir, int version) {
  char text[1200];
  snprintf(text, sizeof text,
           "#!/bin/sh\n"
           "if [ \"$1\" = --version ]; then echo call >> '%s'; "
           "echo 'wrapped cc %d'; exit 0; fi\n"
           "exec cc \"$@\"\n",
           count_calls(dir), version);
  return write_text(path, text) && chmod(path, 0755) == 0;
}
static bool key_with_cc(kiln_test *t, const char *dir, const char *cc,
                        char *key, size_t cap) {
  static const uint8_t kEmpty[] = {0x00, 0x61, 0x73, 0x6d,
                                   0x01, 0x00, 0x00, 0x00};
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  o.cache_dir = dir;
  o.opt_level = 0;
  o.cc = cc;
  kiln_engine *e = NULL;
  kiln_module *m = NULL;
  KILN_EXPECT_OK(t, kiln_engine_create(&o, &e));
  if (e) KILN_EXPECT_OK(t, kiln_module_load(e, kEmpty, sizeof kEmpty, "empty", &m));
  if (m) snprintf(key, cap, "%s", kiln_module_cache_key(m));
  kiln_module_release(m);
  kiln_engine_release(e);
  return m != NULL;
}
static void test_compiler_identity_is_remembered_per_folder(kiln_test *t) {
  char *dir = make_dir(t);
  if (!dir) return;
  char cc[600], k1[80] = "", k2[80] = "", k3[80] = "";
  snprintf(cc, sizeof cc, "%s/cc-wrapper", dir);
  KILN_EXPECT(t, write_cc(cc, dir, 1));
  KILN_EXPECT(t, key_with_cc(t, dir, cc, k1, sizeof k1));
  KILN_EXPECTF(t, version_calls(dir) == 1, "%d --version calls", version_calls(dir));
  KILN_EXPECT(t, key_with_cc(t, dir, cc, k2, sizeof k2));
  KILN_EXPECTF(t, version_calls(dir) == 1, "%d --version calls after a second engine",
               version_calls(dir));
  KILN_EXPECTF(t, !strcmp(k1, k2), "keys %s, %s", k1, k2);
  KILN_EXPECT(t, write_cc(cc, dir, 22));   /* a new compiler: new size */
  KILN_EXPECT(t, key_with_cc(t, dir, cc, k3, sizeof k3));
  KILN_EXPECTF(t, version_calls(dir) == 2, "%d --version calls after the change",
               version_calls(dir));
  KILN_EXPECTF(t, strcmp(k1, k3), "same key %s after the compiler changed", k1);
  remove_dir(dir);
}

KILN_TEST_MAIN(test_lookup_tells_artifact_from_rejection,
               test_lookup_reads_entries_without_a_file_line,
               test_rejected_module_is_refused_from_the_cache,
               test_engines_sharing_a_folder_agree_on_keys,
               test_compiler_identity_is_remembered_per_folder)
