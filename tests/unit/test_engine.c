/* The engine: loading, calls, every trap kind on the main thread and on
 * worker threads, timeouts, host functions, the pipeline cache, sizes up
 * to 4 GiB, and a host crash that must not be swallowed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kiln/engine.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"

static kiln_engine *engine(void) { return kiln_test_engine(); }

static kiln_module *load(kiln_test *t, const char *name) {
  return kiln_test_load_guest(t, name);
}

static kiln_instance *instantiate(kiln_test *t, kiln_module *m,
                                  kiln_linker *l) {
  kiln_instance *i = NULL;
  if (m) KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &i));
  return i;
}

static void test_add(kiln_test *t) {
  kiln_module *m = load(t, "traps");
  kiln_instance *i = instantiate(t, m, NULL);
  if (!i) return;
  kiln_val args[2] = {kiln_val_i32(40), kiln_val_i32(2)}, r;
  KILN_EXPECT_OK(t, kiln_instance_call(i, "add", args, 2, &r, 1));
  KILN_EXPECT(t, r.type == KILN_I32 && r.of.i32 == 42);
  /* Wrong arity and types are refused before any guest code runs. */
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_instance_call(i, "add", args, 1, &r, 1));
  args[1] = kiln_val_i64(2);
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT,
                   kiln_instance_call(i, "add", args, 2, &r, 1));
  KILN_EXPECT_CODE(t, KILN_CODE_NOT_FOUND,
                   kiln_instance_call(i, "nope", NULL, 0, NULL, 0));
  kiln_instance_release(i);
  kiln_module_release(m);
}

typedef struct trap_case {
  const char *export;
  int nargs;
  kiln_trap_kind kind;
} trap_case;

static const trap_case trap_cases[] = {
    {"oob", 0, KILN_TRAP_OUT_OF_BOUNDS},
    {"oob_store", 1, KILN_TRAP_OUT_OF_BOUNDS},
    {"div_zero", 1, KILN_TRAP_DIVIDE_BY_ZERO},
    {"int_overflow", 0, KILN_TRAP_INTEGER_OVERFLOW},
    {"bad_convert", 0, KILN_TRAP_INVALID_CONVERSION},
    {"unreachable", 0, KILN_TRAP_UNREACHABLE},
    {"bad_indirect_type", 0, KILN_TRAP_INDIRECT_CALL},
    {"null_indirect", 0, KILN_TRAP_INDIRECT_CALL},
    {"recurse", 1, KILN_TRAP_STACK_EXHAUSTED},
};

/* Runs every trap case on instance i; returns the number of mismatches. */
static int run_trap_cases(kiln_instance *i, char *err, size_t errsize) {
  int bad = 0;
  for (size_t k = 0; k < sizeof trap_cases / sizeof *trap_cases; k++) {
    const trap_case *c = &trap_cases[k];
    kiln_val args[1] = {kiln_val_i32(0)}, r[1];
    kiln_func_ref f;
    kiln_status s = kiln_instance_func(i, c->export, &f);
    if (!s)
      s = kiln_func_call(f, args, c->nargs, r, kiln_func_type(f)->result_count);
    if (kiln_status_code(s) != KILN_CODE_TRAP ||
        kiln_status_trap_kind(s) != c->kind) {
      snprintf(err, errsize, "%s: got %s: %s", c->export,
               kiln_code_name(kiln_status_code(s)), kiln_status_message(s));
      bad++;
    }
    kiln_status_free(s);
    /* The instance stays usable after each trap. */
    kiln_val a2[2] = {kiln_val_i32(1), kiln_val_i32(2)};
    s = kiln_instance_call(i, "add", a2, 2, r, 1);
    if (s || r[0].of.i32 != 3) bad++;
    kiln_status_free(s);
  }
  return bad;
}

static void test_traps_main_thread(kiln_test *t) {
  kiln_module *m = load(t, "traps");
  kiln_instance *i = instantiate(t, m, NULL);
  if (!i) return;
  char err[512] = "";
  KILN_EXPECTF(t, run_trap_cases(i, err, sizeof err) == 0, "%s", err);
  /* The trap names the function it happened in. */
  kiln_status s = kiln_instance_call(i, "div_zero", &(kiln_val){KILN_I32, {0}},
                                     1, &(kiln_val){0}, 1);
  KILN_EXPECTF(t, strstr(kiln_status_message(s), "divide by zero") != NULL,
               "message: %s", kiln_status_message(s));
  kiln_status_free(s);
  kiln_instance_release(i);
  kiln_module_release(m);
}

typedef struct worker {
  kiln_module *m;
  int bad;
  char err[512];
} worker;

static void *trap_worker(void *arg) {
  worker *w = arg;
  for (int round = 0; round < 20; round++) {
    kiln_instance *i = NULL;
    kiln_status s = kiln_instance_create(w->m, NULL, NULL, &i);
    if (s) {
      snprintf(w->err, sizeof w->err, "%s", kiln_status_message(s));
      kiln_status_free(s);
      w->bad++;
      return NULL;
    }
    w->bad += run_trap_cases(i, w->err, sizeof w->err);
    kiln_instance_release(i);
  }
  return NULL;
}

static void test_traps_eight_threads_at_once(kiln_test *t) {
  kiln_module *m = load(t, "traps");
  if (!m) return;
  pthread_t th[8];
  worker w[8];
  for (int k = 0; k < 8; k++) {
    w[k] = (worker){m, 0, ""};
    pthread_create(&th[k], NULL, trap_worker, &w[k]);
  }
  for (int k = 0; k < 8; k++) {
    pthread_join(th[k], NULL);
    KILN_EXPECTF(t, w[k].bad == 0, "thread %d: %s", k, w[k].err);
  }
  kiln_module_release(m);
}

static void test_timeout_stops_runaway_guest(kiln_test *t) {
  kiln_module *m = load(t, "traps");
  kiln_instance *i = instantiate(t, m, NULL);
  if (!i) return;
  kiln_thread_set_deadline(0.2);
  kiln_val r;
  kiln_status s = kiln_instance_call(i, "spin", &(kiln_val){KILN_I32, {0}}, 1,
                                     &r, 1);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_DEADLINE_EXCEEDED);
  KILN_EXPECT(t, kiln_status_trap_kind(s) == KILN_TRAP_TIMEOUT);
  kiln_status_free(s);
  kiln_thread_set_deadline(0);
  kiln_val a2[2] = {kiln_val_i32(5), kiln_val_i32(6)};
  KILN_EXPECT_OK(t, kiln_instance_call(i, "add", a2, 2, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 11);
  kiln_instance_release(i);
  kiln_module_release(m);
}

static uint32_t host_mul(kiln_caller *c, uint32_t a, uint32_t b) {
  (void)c;
  return a * b;
}

static kiln_status host_pair(kiln_caller *c, const kiln_val *args,
                             kiln_val *results) {
  int *calls = kiln_caller_user(c);
  (*calls)++;
  results[0] = kiln_val_i64(args[0].of.i64 + 1);
  results[1] = kiln_val_f64((double)args[0].of.i64 / 2);
  return KILN_OK;
}

static void host_fail(kiln_caller *c, uint32_t code) {
  kiln_caller_trap(c, kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                                       "host refused %u", code));
}

static void test_host_functions_and_memory(kiln_test *t) {
  kiln_module *m = load(t, "host_calls");
  if (!m) return;
  kiln_linker *l = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), &l));
  static const kiln_valtype ii[] = {KILN_I32, KILN_I32, KILN_I32};
  static const kiln_valtype pair_types[] = {KILN_I64, KILN_I64, KILN_F64};
  static const kiln_valtype one_i32[] = {KILN_I32};
  int calls = 0;
  kiln_host_func mul = {"host", "mul", {2, 1, ii, ii + 2}, (void *)host_mul,
                        NULL, NULL};
  kiln_host_func pair = {"host", "pair", {1, 2, pair_types, pair_types + 1},
                         NULL, host_pair, &calls};
  kiln_host_func fail = {"host", "fail", {1, 0, one_i32, NULL},
                         (void *)host_fail, NULL, NULL};
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &mul));
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &pair));
  /* Missing import: a LINK error naming it. */
  kiln_instance *i = NULL;
  kiln_status s = kiln_instance_create(m, l, NULL, &i);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_LINK);
  KILN_EXPECT(t, strstr(kiln_status_message(s), "fail") != NULL);
  kiln_status_free(s);
  KILN_EXPECT_OK(t, kiln_linker_define_func(l, &fail));
  kiln_memory *mem = NULL;
  KILN_EXPECT_OK(t, kiln_memory_create(
                        &(kiln_memory_options){.initial_pages = 1}, &mem));
  KILN_EXPECT_OK(t, kiln_linker_define_memory(l, "host", "mem", mem));
  i = instantiate(t, m, l);
  if (i) {
    kiln_val r;
    KILN_EXPECT_OK(t, kiln_instance_call(i, "use_mul",
                                         &(kiln_val){KILN_I32, {.i32 = 14}}, 1,
                                         &r, 1));
    KILN_EXPECT(t, r.of.i32 == 42);
    KILN_EXPECT_OK(t, kiln_instance_call(i, "use_pair",
                                         &(kiln_val){KILN_I64, {.i64 = 9}}, 1,
                                         &r, 1));
    KILN_EXPECT(t, r.type == KILN_F64 && r.of.f64 == 4.5 && calls == 1);
    s = kiln_instance_call(i, "use_fail", &(kiln_val){KILN_I32, {.i32 = 7}}, 1,
                           NULL, 0);
    KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_INVALID_ARGUMENT);
    KILN_EXPECT(t, strstr(kiln_status_message(s), "refused 7") != NULL);
    kiln_status_free(s);
    /* The host's bytes are the guest's bytes. */
    uint32_t *p = NULL;
    KILN_EXPECT_OK(t, kiln_memory_range(mem, 100, 4, (void **)&p));
    if (p) *p = 0xfeedf00d;
    KILN_EXPECT_OK(t, kiln_instance_call(i, "peek",
                                         &(kiln_val){KILN_I32, {.i32 = 100}},
                                         1, &r, 1));
    KILN_EXPECT(t, r.of.i32 == 0xfeedf00d);
    KILN_EXPECT(t, kiln_instance_memory(i, 0) == mem);
    kiln_instance_release(i);
  }
  kiln_memory_release(mem);
  kiln_linker_release(l);
  kiln_module_release(m);
}

typedef struct blocking_host {
  bool wait;            /* wait for the deadline, then end the call */
  int calls;
  bool passed_at_entry; /* kiln_caller_deadline_passed() on entry */
} blocking_host;

/* Stands in for a host call that blocks past the guest call's deadline
 * (where the watchdog cannot stop it) and then ends the call itself. */
static void host_wait_for_deadline(kiln_caller *c, uint32_t arg) {
  (void)arg;
  blocking_host *h = kiln_caller_user(c);
  h->calls++;
  h->passed_at_entry = kiln_caller_deadline_passed(c);
  if (!h->wait) return;
  while (!kiln_caller_deadline_passed(c)) {
  }
  kiln_caller_trap(c, kiln_make_trap(KILN_TRAP_TIMEOUT, NULL));
}

static void test_host_function_sees_the_callers_deadline(kiln_test *t) {
  kiln_module *m = load(t, "host_calls");
  if (!m) return;
  static const kiln_valtype ii[] = {KILN_I32, KILN_I32, KILN_I32};
  static const kiln_valtype pair_types[] = {KILN_I64, KILN_I64, KILN_F64};
  blocking_host h = {0};
  kiln_host_func funcs[] = {
      {"host", "mul", {2, 1, ii, ii + 2}, (void *)host_mul, NULL, NULL},
      {"host", "pair", {1, 2, pair_types, pair_types + 1}, NULL, host_pair,
       &(int){0}},
      {"host", "fail", {1, 0, ii, NULL}, (void *)host_wait_for_deadline, NULL,
       &h},
  };
  kiln_linker *l = NULL;
  kiln_memory *mem = NULL;
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), &l));
  for (size_t k = 0; k < sizeof funcs / sizeof *funcs; k++)
    KILN_EXPECT_OK(t, kiln_linker_define_func(l, &funcs[k]));
  KILN_EXPECT_OK(t, kiln_memory_create(
                        &(kiln_memory_options){.initial_pages = 1}, &mem));
  KILN_EXPECT_OK(t, kiln_linker_define_memory(l, "host", "mem", mem));
  kiln_instance *i = instantiate(t, m, l);
  if (i) {
    kiln_val arg = kiln_val_i32(0);
    /* No deadline: never passed. */
    KILN_EXPECT_OK(t, kiln_instance_call(i, "use_fail", &arg, 1, NULL, 0));
    KILN_EXPECT(t, h.calls == 1 && !h.passed_at_entry);
    /* A deadline that passes while the host function blocks. */
    h.wait = true;
    kiln_thread_set_deadline(0.05);
    kiln_status s = kiln_instance_call(i, "use_fail", &arg, 1, NULL, 0);
    kiln_thread_set_deadline(0);
    KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_DEADLINE_EXCEEDED &&
                       kiln_status_trap_kind(s) == KILN_TRAP_TIMEOUT);
    KILN_EXPECT(t, h.calls == 2 && !h.passed_at_entry);
    kiln_status_free(s);
    /* Cleared again: not passed, and the instance still works. */
    h.wait = false;
    KILN_EXPECT_OK(t, kiln_instance_call(i, "use_fail", &arg, 1, NULL, 0));
    KILN_EXPECT(t, h.calls == 3 && !h.passed_at_entry);
    kiln_instance_release(i);
  }
  kiln_memory_release(mem);
  kiln_linker_release(l);
  kiln_module_release(m);
}

static void test_memory_sizes_up_to_4gib(kiln_test *t) {
  kiln_module *m = load(t, "big");
  kiln_instance *i = instantiate(t, m, NULL);
  if (!i) return;
  kiln_val r;
  KILN_EXPECT_OK(t, kiln_instance_call(i, "grow",
                                       &(kiln_val){KILN_I32, {.i32 = 65536}},
                                       1, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 0);
  KILN_EXPECT_OK(t, kiln_instance_call(i, "size", NULL, 0, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 65536);
  kiln_memory *mem = kiln_instance_memory(i, 0);
  KILN_EXPECT(t, mem && kiln_memory_size(mem) == (4ull << 30));
  KILN_EXPECT_OK(t, kiln_instance_call(i, "fill_tail", NULL, 0, NULL, 0));
  KILN_EXPECT_OK(t, kiln_instance_call(i, "load_last", NULL, 0, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 0x07070707);
  /* Growing past 65536 pages fails with -1, not a wrap. */
  KILN_EXPECT_OK(t, kiln_instance_call(i, "grow",
                                       &(kiln_val){KILN_I32, {.i32 = 1}}, 1,
                                       &r, 1));
  KILN_EXPECT(t, r.of.i32 == UINT32_MAX);
  kiln_instance_release(i);
  kiln_module_release(m);
}

static void test_cache_hit_and_corruption_rebuild(kiln_test *t) {
  char dir[] = "/tmp/kiln-cache-test-XXXXXX";
  KILN_EXPECT(t, mkdtemp(dir) != NULL);
  kiln_engine_options o;
  kiln_engine_options_init(&o);
  o.cache_dir = dir;
  o.opt_level = 0;
  kiln_engine *e = NULL;
  KILN_EXPECT_OK(t, kiln_engine_create(&o, &e));
  char path[512];
  snprintf(path, sizeof path, "%s/traps.wasm", KILN_GUEST_DIR);
  kiln_module *a = NULL, *b = NULL, *c = NULL;
  KILN_EXPECT_OK(t, kiln_module_load_file(e, path, &a));
  KILN_EXPECT_OK(t, kiln_module_load_file(e, path, &b));
  if (a && b) {
    KILN_EXPECT(t, !kiln_module_was_cached(a));
    KILN_EXPECT(t, kiln_module_was_cached(b));
    KILN_EXPECT(t, !strcmp(kiln_module_cache_key(a), kiln_module_cache_key(b)));
    /* Flip a byte in the cached artifact: the next load notices and
     * rebuilds instead of loading corrupt code. */
    FILE *f = fopen(kiln_module_artifact_path(a), "r+b");
    KILN_EXPECT(t, f != NULL);
    if (f) {
      fseek(f, 200, SEEK_SET);
      int ch = fgetc(f);
      fseek(f, 200, SEEK_SET);
      fputc(ch ^ 0xff, f);
      fclose(f);
    }
    KILN_EXPECT_OK(t, kiln_module_load_file(e, path, &c));
    if (c) KILN_EXPECT(t, !kiln_module_was_cached(c));
  }
  kiln_module_release(a);
  kiln_module_release(b);
  if (c) kiln_module_release(c);
  kiln_engine_release(e);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  KILN_EXPECT(t, system(cmd) == 0);
}

static void test_hostile_files_get_clean_errors(kiln_test *t) {
  static const uint8_t truncated[] = {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00};
  static const uint8_t huge_section[] = {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00,
                                         0x00, 0x00, 0x01, 0xff, 0xff, 0xff,
                                         0xff, 0x0f};
  kiln_module *m = NULL;
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_MODULE,
                   kiln_module_load(engine(), truncated, sizeof truncated,
                                    "truncated.wasm", &m));
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_MODULE,
                   kiln_module_load(engine(), huge_section,
                                    sizeof huge_section, "huge.wasm", &m));
  uint8_t junk[4096];
  srand(1234);
  for (int round = 0; round < 50; round++) {
    for (size_t k = 0; k < sizeof junk; k++) junk[k] = (uint8_t)rand();
    if (round % 2) memcpy(junk, "\0asm\1\0\0\0", 8);
    KILN_EXPECT_CODE(t, KILN_CODE_INVALID_MODULE,
                     kiln_module_load(engine(), junk, sizeof junk, "junk", &m));
  }
}

/* A crash in host code (not in a guest) must still kill the process. */
static void test_host_crash_is_not_swallowed(kiln_test *t) {
  kiln_module *m = load(t, "traps");
  kiln_instance *i = instantiate(t, m, NULL);
  if (!i) return;
  pid_t pid = fork();
  if (pid == 0) {
    /* Make sure kiln's handlers are installed on this thread. */
    kiln_val r;
    kiln_status s = kiln_instance_call(i, "oob", NULL, 0, &r, 1);
    kiln_status_free(s);
    volatile uintptr_t bad = 16;
    *(volatile int *)bad = 1; /* a host bug */
    _exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  KILN_EXPECTF(t, WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV,
               "child status %#x", st);
  kiln_instance_release(i);
  kiln_module_release(m);
}

KILN_TEST_MAIN(test_add, test_traps_main_thread,
               test_traps_eight_threads_at_once,
               test_timeout_stops_runaway_guest,
               test_host_functions_and_memory,
               test_host_function_sees_the_callers_deadline,
               test_memory_sizes_up_to_4gib,
               test_cache_hit_and_corruption_rebuild,
               test_hostile_files_get_clean_errors,
               test_host_crash_is_not_swallowed)
