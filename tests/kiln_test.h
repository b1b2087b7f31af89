/* A small test harness: a test file is a list of claims.
 *
 *   static void test_range_rejects_wraparound(kiln_test *t) { ... }
 *   KILN_TEST_MAIN(test_range_rejects_wraparound, test_other)
 *
 * Each failed expectation prints file:line and the message and marks the
 * test failed; the test goes on. The program prints one line per test and
 * exits non-zero if any failed. KILN_TEST_SKIP(t, why) marks a test skipped
 * with a visible reason (e.g. no GPU). */
#ifndef KILN_TEST_H_
#define KILN_TEST_H_

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln/status.h"

typedef struct kiln_test {
  const char *name;
  int failures;
  int skipped;
  char skip_reason[256];
} kiln_test;

/* A whole file, NUL-terminated, or NULL; *len (when given) its size. */
static inline char *kiln_test_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) b[n] = 0;
  if (b && len) *len = (size_t)n;
  return b;
}

static inline void kiln_test_fail_(kiln_test *t, const char *file, int line,
                                   const char *what) {
  fprintf(stderr, "  %s:%d: %s: %s\n", file, line, t->name, what);
  t->failures++;
}

#define KILN_EXPECT(t, cond)                                         \
  do {                                                               \
    if (!(cond)) kiln_test_fail_((t), __FILE__, __LINE__, #cond);    \
  } while (0)

#define KILN_EXPECTF(t, cond, ...)                                   \
  do {                                                               \
    if (!(cond)) {                                                   \
      char m_[1024];                                                 \
      snprintf(m_, sizeof m_, __VA_ARGS__);                          \
      kiln_test_fail_((t), __FILE__, __LINE__, m_);                  \
    }                                                                \
  } while (0)

/* Expect an OK status; otherwise print its message. Frees the status. */
#define KILN_EXPECT_OK(t, expr)                                         \
  do {                                                                  \
    kiln_status s_ = (expr);                                            \
    if (s_) {                                                           \
      char m_[1400];                                                    \
      snprintf(m_, sizeof m_, "%s: %s: %s", #expr,                      \
               kiln_code_name(kiln_status_code(s_)),                    \
               kiln_status_message(s_));                                \
      kiln_test_fail_((t), __FILE__, __LINE__, m_);                     \
      kiln_status_free(s_);                                             \
    }                                                                   \
  } while (0)

/* Expect a status with the given code. Frees the status. */
#define KILN_EXPECT_CODE(t, code, expr)                                 \
  do {                                                                  \
    kiln_status s_ = (expr);                                            \
    if (kiln_status_code(s_) != (code)) {                               \
      char m_[1400];                                                    \
      snprintf(m_, sizeof m_, "%s: expected %s, got %s: %s", #expr,     \
               kiln_code_name(code), kiln_code_name(kiln_status_code(s_)), \
               kiln_status_message(s_));                                \
      kiln_test_fail_((t), __FILE__, __LINE__, m_);                     \
    }                                                                   \
    kiln_status_free(s_);                                               \
  } while (0)

#define KILN_TEST_SKIP(t, ...)                                          \
  do {                                                                  \
    (t)->skipped = 1;                                                   \
    snprintf((t)->skip_reason, sizeof (t)->skip_reason, __VA_ARGS__);   \
  } while (0)

typedef void (*kiln_test_fn)(kiln_test *t);
typedef struct kiln_test_case {
  const char *name;
  kiln_test_fn fn;
} kiln_test_case;

static inline int kiln_test_run_all(const char *program,
                                    const kiln_test_case *cases, int n,
                                    int argc, char **argv) {
  int passed = 0, failed = 0, skipped = 0;
  const char *only = argc > 1 ? argv[1] : NULL;
  for (int i = 0; i < n; i++) {
    if (only && !strstr(cases[i].name, only)) continue;
    kiln_test t = {cases[i].name, 0, 0, {0}};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    cases[i].fn(&t);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    if (t.failures) {
      failed++;
      printf("FAIL %s (%.1f ms)\n", t.name, ms);
    } else if (t.skipped) {
      skipped++;
      printf("SKIP %s: %s\n", t.name, t.skip_reason);
    } else {
      passed++;
      printf("ok   %s (%.1f ms)\n", t.name, ms);
    }
    fflush(stdout);
  }
  printf("%s: %d passed, %d failed, %d skipped\n", program, passed, failed,
         skipped);
  return failed ? 1 : 0;
}

#define KILN_TEST_CASE_(fn) {#fn, fn},
#define KILN_TEST_MAP_(M, ...) KILN_TEST_MAP_N_(M, __VA_ARGS__)
/* Up to 64 tests per file via a simple variadic expansion. */
#define KILN_TEST_MAIN(...)                                              \
  int main(int argc, char **argv) {                                      \
    kiln_test_fn fns_[] = {__VA_ARGS__};                                 \
    static const char names_[] = #__VA_ARGS__;                           \
    enum { n_ = sizeof fns_ / sizeof fns_[0] };                          \
    kiln_test_case cases_[n_];                                           \
    char buf_[sizeof names_];                                            \
    memcpy(buf_, names_, sizeof names_);                                 \
    char *save_ = NULL, *tok_ = strtok_r(buf_, ", \n\t", &save_);        \
    for (int i_ = 0; i_ < n_; i_++) {                                    \
      cases_[i_].name = tok_ ? strdup(tok_) : "?";                       \
      cases_[i_].fn = fns_[i_];                                          \
      tok_ = strtok_r(NULL, ", \n\t", &save_);                           \
    }                                                                    \
    int rc_ = kiln_test_run_all(argv[0], cases_, n_, argc, argv);        \
    for (int i_ = 0; i_ < n_; i_++) free((char *)cases_[i_].name);       \
    return rc_;                                                          \
  }

#endif /* KILN_TEST_H_ */
