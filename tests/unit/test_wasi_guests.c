/* WASI preview1 with real guests (guests/wasi, built from C with
 * wasi-libc): hello world with arguments, environment, stdin and exit
 * codes; a file-system guest that uses every fd_* and path_* function; and
 * two hostile guests, one trying every way out of its sandbox and one
 * passing bad pointers and lengths. The sandbox tests run with both path
 * resolvers (openat2 and the fallback walk). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln/engine.h"
#include "kiln/wasi.h"
#include "kiln_test.h"
#include "kiln_test_guest.h"
#include "wasi/wasi_internal.h"

static kiln_engine *engine(void) { return kiln_test_engine(); }

typedef struct run_result {
  kiln_code code; /* OK, EXIT, TRAP, ... */
  int exit_code;  /* 0 for OK, the proc_exit code for EXIT */
  char out[8192];
  char err[8192];
} run_result;

static void read_all(int fd, char *buf, size_t size) {
  lseek(fd, 0, SEEK_SET);
  ssize_t n = read(fd, buf, size - 1);
  buf[n > 0 ? n : 0] = 0;
}

/* Run guest `name`'s _start with the given argv/env/preopen; stdin is
 * stdin_fd (-1: /dev/null); stdout and stderr are captured. */
static bool run_guest(kiln_test *t, const char *name, const char **argv,
                      int argc, const char **env, int envc,
                      const kiln_wasi_preopen *pre, int npre, int stdin_fd,
                      run_result *r) {
  memset(r, 0, sizeof *r);
  r->code = KILN_CODE_INTERNAL;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s.wasm", KILN_GUEST_DIR, name);
  kiln_module *m = NULL;
  kiln_linker *l = NULL;
  kiln_wasi *w = NULL;
  kiln_instance *inst = NULL;
  int out = memfd_create("stdout", MFD_CLOEXEC);
  int err = memfd_create("stderr", MFD_CLOEXEC);
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  bool ran = false;
  KILN_EXPECT_OK(t, kiln_module_load_file(engine(), path, &m));
  if (!m) goto done;
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  o.argv = argv;
  o.argc = argc;
  o.env = env;
  o.envc = envc;
  o.preopens = pre;
  o.preopen_count = npre;
  o.stdin_fd = stdin_fd >= 0 ? stdin_fd : devnull;
  o.stdout_fd = out;
  o.stderr_fd = err;
  KILN_EXPECT_OK(t, kiln_wasi_create(&o, &w));
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), &l));
  if (!w || !l) goto done;
  KILN_EXPECT_OK(t, kiln_wasi_define(w, l));
  KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &inst));
  if (!inst) goto done;
  kiln_status s = kiln_instance_call(inst, "_start", NULL, 0, NULL, 0);
  r->code = kiln_status_code(s);
  r->exit_code = r->code == KILN_CODE_EXIT ? kiln_status_exit_code(s) : 0;
  if (s && r->code != KILN_CODE_EXIT)
    fprintf(stderr, "  %s: %s\n", name, kiln_status_message(s));
  kiln_status_free(s);
  ran = true;
done:
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_wasi_release(w);
  kiln_module_release(m);
  read_all(out, r->out, sizeof r->out);
  read_all(err, r->err, sizeof r->err);
  close(out);
  close(err);
  close(devnull);
  return ran;
}

static bool make_temp_dir(kiln_test *t, char *buf, size_t size) {
  snprintf(buf, size, "/tmp/kiln-wasi-guest-XXXXXX");
  if (mkdtemp(buf)) return true;
  KILN_EXPECTF(t, 0, "mkdtemp: %s", strerror(errno));
  return false;
}

static void remove_tree(const char *dir) {
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

/* Names in a directory, sorted, joined with ' ' (no . and ..). */
static void list_dir(const char *dir, char *out, size_t size) {
  struct dirent **names;
  out[0] = 0;
  int n = scandir(dir, &names, NULL, alphasort);
  for (int i = 0; i < n; i++) {
    if (strcmp(names[i]->d_name, ".") && strcmp(names[i]->d_name, "..")) {
      if (out[0]) strncat(out, " ", size - strlen(out) - 1);
      strncat(out, names[i]->d_name, size - strlen(out) - 1);
    }
    free(names[i]);
  }
  if (n >= 0) free(names);
}

/* ---- hello --------------------------------------------------------------- */

static void test_hello_sees_args_and_only_given_env(kiln_test *t) {
  const char *argv[] = {"hello.wasm", "one", "two words"};
  const char *env[] = {"A=1", "B=x=y"};
  run_result r;
  if (!run_guest(t, "wasi_hello", argv, 3, env, 2, NULL, 0, -1, &r)) return;
  KILN_EXPECT(t, r.code == KILN_CODE_OK);
  KILN_EXPECTF(t,
               strcmp(r.out,
                      "hello from wasi\nargc=3\nargv[0]=hello.wasm\n"
                      "argv[1]=one\nargv[2]=two words\nenv A=1\n"
                      "env B=x=y\n") == 0,
               "stdout: %s", r.out);
  KILN_EXPECTF(t, strcmp(r.err, "to stderr\n") == 0, "stderr: %s", r.err);
}

static void test_hello_exit_code(kiln_test *t) {
  const char *argv[] = {"hello"};
  const char *env[] = {"EXIT_CODE=42"};
  run_result r;
  if (!run_guest(t, "wasi_hello", argv, 1, env, 1, NULL, 0, -1, &r)) return;
  KILN_EXPECT(t, r.code == KILN_CODE_EXIT);
  KILN_EXPECT(t, r.exit_code == 42);
  KILN_EXPECT(t, strstr(r.out, "env EXIT_CODE=42\n") != NULL);
}

static void test_hello_reads_stdin(kiln_test *t) {
  int p[2];
  if (pipe(p) != 0) return;
  KILN_EXPECT(t, write(p[1], "from the pipe\n", 14) == 14);
  close(p[1]);
  const char *argv[] = {"hello", "cat"};
  run_result r;
  if (run_guest(t, "wasi_hello", argv, 2, NULL, 0, NULL, 0, p[0], &r)) {
    KILN_EXPECT(t, r.code == KILN_CODE_OK);
    KILN_EXPECTF(t, strncmp(r.out, "from the pipe\nhello from wasi\n", 30) == 0,
                 "stdout: %s", r.out);
  }
  close(p[0]);
}

/* A guest blocked in fd_read (a pipe nobody writes to or closes) still
 * stops at its deadline, promptly. */
static void test_blocked_read_stops_at_deadline(kiln_test *t) {
  int p[2];
  if (pipe(p) != 0) return;
  const char *argv[] = {"hello", "cat"};
  run_result r;
  /* Compile (or fetch) the module first, so the deadline covers the run. */
  int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  run_guest(t, "wasi_hello", argv, 2, NULL, 0, NULL, 0, devnull, &r);
  close(devnull);
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  kiln_thread_set_deadline(0.3);
  if (run_guest(t, "wasi_hello", argv, 2, NULL, 0, NULL, 0, p[0], &r)) {
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9;
    KILN_EXPECTF(t, r.code == KILN_CODE_DEADLINE_EXCEEDED, "code %s",
                 kiln_code_name(r.code));
    KILN_EXPECTF(t, s >= 0.29 && s < 10, "stopped after %.3f s", s);
  }
  kiln_thread_set_deadline(0);
  close(p[0]);
  close(p[1]);
}

/* ---- file system --------------------------------------------------------- */

static void check_fs_guest(kiln_test *t, bool walk) {
  char dir[PATH_MAX];
  if (!make_temp_dir(t, dir, sizeof dir)) return;
  kiln_wasi_force_walk(walk);
  kiln_wasi_preopen pre = {dir, "/sandbox"};
  const char *argv[] = {"fs"};
  run_result r;
  if (run_guest(t, "wasi_fs", argv, 1, NULL, 0, &pre, 1, -1, &r)) {
    KILN_EXPECTF(t, r.code == KILN_CODE_OK, "code %s exit %d\n%s",
                 kiln_code_name(r.code), r.exit_code, r.err);
    KILN_EXPECTF(t, strcmp(r.out, "fs: all ok\n") == 0, "stdout: %s", r.out);
    char names[256];
    list_dir(dir, names, sizeof names);
    KILN_EXPECTF(t, names[0] == 0, "left behind: %s", names);
  }
  kiln_wasi_force_walk(false);
  remove_tree(dir);
}

static void test_fs_guest_openat2(kiln_test *t) { check_fs_guest(t, false); }
static void test_fs_guest_walk(kiln_test *t) { check_fs_guest(t, true); }

/* ---- hostile guests ------------------------------------------------------ */

static void check_escape_guest(kiln_test *t, bool walk) {
  char root[PATH_MAX], sandbox[PATH_MAX + 16], outside[PATH_MAX + 16];
  char p[2 * PATH_MAX + 32], q[2 * PATH_MAX + 32];
  if (!make_temp_dir(t, root, sizeof root)) return;
  snprintf(sandbox, sizeof sandbox, "%s/sandbox", root);
  snprintf(outside, sizeof outside, "%s/outside", root);
  mkdir(sandbox, 0755);
  mkdir(outside, 0755);
  snprintf(p, sizeof p, "%s/secret", outside);
  FILE *f = fopen(p, "w");
  if (f) {
    fputs("secret data\n", f);
    fclose(f);
  }
  struct stat before;
  stat(p, &before);
  snprintf(q, sizeof q, "%s/inner", sandbox);
  close(open(q, O_CREAT | O_WRONLY, 0644));
  snprintf(q, sizeof q, "%s/sub", sandbox);
  mkdir(q, 0755);
  struct {
    const char *name, *target;
  } links[] = {{"abs_link", "/"},
               {"out_link", outside},
               {"rel_out", "../outside"},
               {"file_link", p}};
  for (size_t i = 0; i < sizeof links / sizeof links[0]; i++) {
    snprintf(q, sizeof q, "%s/%s", sandbox, links[i].name);
    KILN_EXPECT(t, symlink(links[i].target, q) == 0);
  }
  kiln_wasi_force_walk(walk);
  kiln_wasi_preopen pre = {sandbox, "/sandbox"};
  const char *argv[] = {"escape"};
  run_result r;
  if (run_guest(t, "wasi_escape", argv, 1, NULL, 0, &pre, 1, -1, &r)) {
    KILN_EXPECTF(t, r.code == KILN_CODE_OK, "code %s exit %d\n%s",
                 kiln_code_name(r.code), r.exit_code, r.err);
    KILN_EXPECTF(t, strcmp(r.out, "escape: all refused\n") == 0, "stdout: %s",
                 r.out);
  }
  kiln_wasi_force_walk(false);
  /* Nothing outside the sandbox was touched. */
  char names[512];
  list_dir(root, names, sizeof names);
  KILN_EXPECTF(t, strcmp(names, "outside sandbox") == 0, "root: %s", names);
  list_dir(outside, names, sizeof names);
  KILN_EXPECTF(t, strcmp(names, "secret") == 0, "outside: %s", names);
  struct stat after;
  KILN_EXPECT(t, stat(p, &after) == 0);
  KILN_EXPECT(t, after.st_size == before.st_size);
  KILN_EXPECT(t, after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
                     after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
  KILN_EXPECT(t, after.st_nlink == 1);
  list_dir(sandbox, names, sizeof names);
  KILN_EXPECTF(
      t, strcmp(names, "abs_link file_link inner out_link rel_out sub") == 0,
      "sandbox: %s", names);
  remove_tree(root);
}

static void test_escape_guest_openat2(kiln_test *t) {
  check_escape_guest(t, false);
}
static void test_escape_guest_walk(kiln_test *t) {
  check_escape_guest(t, true);
}

static void test_badptr_guest(kiln_test *t) {
  char dir[PATH_MAX];
  if (!make_temp_dir(t, dir, sizeof dir)) return;
  kiln_wasi_preopen pre = {dir, "/sandbox"};
  const char *argv[] = {"badptr"};
  run_result r;
  if (run_guest(t, "wasi_badptr", argv, 1, NULL, 0, &pre, 1, -1, &r)) {
    KILN_EXPECTF(t, r.code == KILN_CODE_OK, "code %s exit %d\n%s",
                 kiln_code_name(r.code), r.exit_code, r.err);
    /* Nothing from the refused writes reached stdout. */
    KILN_EXPECTF(t, strcmp(r.out, "badptr: all ok\n") == 0, "stdout: %s",
                 r.out);
    char names[256];
    list_dir(dir, names, sizeof names);
    KILN_EXPECTF(t, names[0] == 0, "created: %s", names);
  }
  remove_tree(dir);
}

/* Every preview1 import, with the spec's types, links; calls go through. */
static void test_all_preview1_imports_link(kiln_test *t) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/wasi_all_imports.wasm", KILN_GUEST_DIR);
  kiln_module *m = NULL;
  kiln_linker *l = NULL;
  kiln_wasi *w = NULL;
  kiln_instance *inst = NULL;
  KILN_EXPECT_OK(t, kiln_module_load_file(engine(), path, &m));
  KILN_EXPECT_OK(t, kiln_wasi_create(NULL, &w));
  KILN_EXPECT_OK(t, kiln_linker_create(engine(), &l));
  if (!m || !w || !l) goto out;
  KILN_EXPECT(t, kiln_module_import_count(m) == 46);
  KILN_EXPECT_OK(t, kiln_wasi_define(w, l));
  KILN_EXPECT_OK(t, kiln_instance_create(m, l, NULL, &inst));
  if (!inst) goto out;
  kiln_val r;
  KILN_EXPECT_OK(t, kiln_instance_call(inst, "probe", NULL, 0, &r, 1));
  KILN_EXPECT(t, r.of.i32 == 57);
  kiln_val code = kiln_val_i32(9);
  kiln_status s = kiln_instance_call(inst, "exit", &code, 1, NULL, 0);
  KILN_EXPECT(t, kiln_status_code(s) == KILN_CODE_EXIT);
  KILN_EXPECT(t, kiln_status_exit_code(s) == 9);
  kiln_status_free(s);
  /* The instance stays usable after proc_exit. */
  KILN_EXPECT_OK(t, kiln_instance_call(inst, "probe", NULL, 0, &r, 1));
out:
  kiln_instance_release(inst);
  kiln_linker_release(l);
  kiln_wasi_release(w);
  kiln_module_release(m);
}

KILN_TEST_MAIN(test_all_preview1_imports_link,
               test_hello_sees_args_and_only_given_env, test_hello_exit_code,
               test_hello_reads_stdin, test_blocked_read_stops_at_deadline,
               test_fs_guest_openat2, test_fs_guest_walk,
               test_escape_guest_openat2, test_escape_guest_walk,
               test_badptr_guest)
