/* Helpers for tests that run guests: one shared engine per test program
 * (opt level 1: fast to compile) and loading guests built into
 * KILN_GUEST_DIR. */
#ifndef KILN_TEST_GUEST_H_
#define KILN_TEST_GUEST_H_

#include <stdio.h>
#include <stdlib.h>

#include "kiln/engine.h"
#include "kiln_test.h"

static inline kiln_engine *kiln_test_engine(void) {
  static kiln_engine *e;
  if (!e) {
    kiln_engine_options o;
    kiln_engine_options_init(&o);
    o.opt_level = 1;
    kiln_status s = kiln_engine_create(&o, &e);
    if (s) {
      fprintf(stderr, "engine: %s\n", kiln_status_message(s));
      exit(2);
    }
  }
  return e;
}

/* Loads KILN_GUEST_DIR/NAME.wasm; NULL (and a failed expectation) if not. */
static inline kiln_module *kiln_test_load_guest(kiln_test *t, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s.wasm", KILN_GUEST_DIR, name);
  kiln_module *m = NULL;
  KILN_EXPECT_OK(t, kiln_module_load_file(kiln_test_engine(), path, &m));
  return m;
}

#endif /* KILN_TEST_GUEST_H_ */
