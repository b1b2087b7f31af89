/* WASI preview1, called directly (no guest compiled): context creation,
 * argument and environment layout, guest-range checks with hostile offsets
 * and counts, errno mapping, the sandbox (both resolvers, and that they
 * agree), readdir cookies, poll_oneoff clocks and descriptors, the
 * descriptor table, rights, and sockets handed in as stdio. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kiln/memory.h"
#include "kiln/wasi.h"
#include "kiln_test.h"
#include "wasi/wasi_internal.h"

#define PAGE 65536u

/* A guest world: one page of memory, a temp folder with a sandbox (guest
 * descriptor 3, named "/sandbox") and an "outside" beside it. */
typedef struct fixture {
  kiln_memory *m;
  uint8_t *mem;
  kiln_wasi *w;
  char root[PATH_MAX];
  char sandbox[PATH_MAX + 16];
  char outside[PATH_MAX + 16];
  int stdin_fd, stdout_fd; /* host ends we keep (pipes), or -1 */
} fixture;

static void sh(const char *fmt, const char *a, const char *b) {
  char cmd[3 * PATH_MAX];
  snprintf(cmd, sizeof cmd, fmt, a, b);
  if (system(cmd) != 0) fprintf(stderr, "command failed: %s\n", cmd);
}

static void path_join(char *out, size_t size, const char *a, const char *b) {
  snprintf(out, size, "%s/%s", a, b);
}

static void write_file(const char *dir, const char *name, const char *text) {
  char p[2 * PATH_MAX];
  path_join(p, sizeof p, dir, name);
  FILE *f = fopen(p, "w");
  if (f) {
    fputs(text, f);
    fclose(f);
  }
}

static void make_link(const char *target, const char *dir, const char *name) {
  char p[2 * PATH_MAX];
  path_join(p, sizeof p, dir, name);
  if (symlink(target, p) != 0) perror("symlink");
}

/* stdin_fd/stdout_fd: host descriptors for guest 0 and 1 (-2: /dev/null). */
static bool fixture_open(kiln_test *t, fixture *f, int stdin_fd,
                         int stdout_fd) {
  memset(f, 0, sizeof *f);
  snprintf(f->root, sizeof f->root, "/tmp/kiln-wasi-api-XXXXXX");
  if (!mkdtemp(f->root)) {
    KILN_EXPECTF(t, 0, "mkdtemp: %s", strerror(errno));
    return false;
  }
  path_join(f->sandbox, sizeof f->sandbox, f->root, "sandbox");
  path_join(f->outside, sizeof f->outside, f->root, "outside");
  mkdir(f->sandbox, 0755);
  mkdir(f->outside, 0755);
  write_file(f->outside, "secret", "secret data\n");
  KILN_EXPECT_OK(
      t, kiln_memory_create(&(kiln_memory_options){.initial_pages = 1}, &f->m));
  if (!f->m) return false;
  f->mem = kiln_memory_base(f->m);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  kiln_wasi_preopen pre = {f->sandbox, "/sandbox"};
  const char *argv[] = {"prog", "a", "bc"};
  const char *env[] = {"K=V", "EMPTY="};
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  o.argv = argv;
  o.argc = 3;
  o.env = env;
  o.envc = 2;
  o.preopens = &pre;
  o.preopen_count = 1;
  o.stdin_fd = stdin_fd == -2 ? devnull : stdin_fd;
  o.stdout_fd = stdout_fd == -2 ? devnull : stdout_fd;
  o.stderr_fd = devnull;
  KILN_EXPECT_OK(t, kiln_wasi_create(&o, &f->w));
  close(devnull);
  return f->w != NULL;
}

static void fixture_close(fixture *f) {
  kiln_wasi_release(f->w);
  kiln_memory_release(f->m);
  if (f->root[0]) sh("rm -rf '%s'%s", f->root, "");
  kiln_wasi_force_walk(false);
}

/* Put a string at guest offset off (no NUL needed by WASI). */
static uint32_t put(fixture *f, uint32_t off, const char *s) {
  memcpy(f->mem + off, s, strlen(s));
  return off;
}

/* path_open on the sandbox with a C string; returns errno, fd in *out. */
static uint32_t open_at(fixture *f, uint32_t dirfd, uint32_t lookup,
                        const char *path, uint32_t oflags, uint64_t rights,
                        uint32_t *out) {
  put(f, 1000, path);
  uint32_t e = kiln_wasi_p1_path_open(f->w, f->m, dirfd, lookup, 1000,
                                      (uint32_t)strlen(path), oflags, rights,
                                      rights, 0, 900);
  if (!e && out)
    *out = kiln_wasi_ld32(f->mem + 900);
  else if (!e)
    kiln_wasi_p1_fd_close(f->w, f->m, kiln_wasi_ld32(f->mem + 900));
  return e;
}

/* ---- Creation ------------------------------------------------------------ */

static void test_create_rejects_bad_options(kiln_test *t) {
  kiln_wasi *w = NULL;
  const char *bad_env[] = {"NOEQUALS"};
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  o.env = bad_env;
  o.envc = 1;
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_wasi_create(&o, &w));
  kiln_wasi_options_init(&o);
  o.argc = -1;
  KILN_EXPECT_CODE(t, KILN_CODE_INVALID_ARGUMENT, kiln_wasi_create(&o, &w));
  kiln_wasi_options_init(&o);
  kiln_wasi_preopen missing = {"/nonexistent/kiln/dir", NULL};
  o.preopens = &missing;
  o.preopen_count = 1;
  KILN_EXPECT_CODE(t, KILN_CODE_NOT_FOUND, kiln_wasi_create(&o, &w));
  kiln_wasi_preopen file = {"/dev/null", NULL}; /* not a directory */
  o.preopens = &file;
  kiln_status s = kiln_wasi_create(&o, &w);
  KILN_EXPECT(t, s != KILN_OK && w == NULL);
  kiln_status_free(s);
  /* NULL options and a zero-initialised struct both work. */
  KILN_EXPECT_OK(t, kiln_wasi_create(NULL, &w));
  kiln_wasi_release(w);
  kiln_wasi_options zero = {0};
  w = NULL;
  KILN_EXPECT_OK(t, kiln_wasi_create(&zero, &w));
  if (w) KILN_EXPECT(t, w->fds[1].host_fd >= 0 && w->fds[2].host_fd >= 0);
  kiln_wasi_release(w);
  kiln_wasi_release(NULL);
}

static void test_closed_stdio(kiln_test *t) {
  kiln_wasi *w = NULL;
  kiln_wasi_options o;
  kiln_wasi_options_init(&o);
  o.stdin_fd = -1;
  o.stdout_fd = -1;
  o.stderr_fd = 2;
  KILN_EXPECT_OK(t, kiln_wasi_create(&o, &w));
  if (!w) return;
  KILN_EXPECT(t, kiln_wasi_p1_fd_close(w, NULL, 0) == WASI_EBADF);
  KILN_EXPECT(t, kiln_wasi_p1_fd_close(w, NULL, 1) == WASI_EBADF);
  /* No memory at all: anything that needs it is FAULT. */
  KILN_EXPECT(t, kiln_wasi_p1_fd_fdstat_get(w, NULL, 2, 0) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_fd_close(w, NULL, 2) == WASI_ESUCCESS);
  kiln_wasi_release(w);
}

/* ---- Arguments, environment, ranges -------------------------------------- */

static void test_args_and_environ_layout(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  KILN_EXPECT(t, kiln_wasi_p1_args_sizes_get(f.w, f.m, 0, 4) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem) == 3);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 4) == 10); /* "prog\0a\0bc\0" */
  KILN_EXPECT(t, kiln_wasi_p1_args_get(f.w, f.m, 100, 200) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 100) == 200);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 104) == 205);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 108) == 207);
  KILN_EXPECT(t, memcmp(f.mem + 200, "prog\0a\0bc\0", 10) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_environ_sizes_get(f.w, f.m, 0, 4) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem) == 2 && kiln_wasi_ld32(f.mem + 4) == 11);
  KILN_EXPECT(t, kiln_wasi_p1_environ_get(f.w, f.m, 300, 400) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 304) == 404);
  KILN_EXPECT(t, memcmp(f.mem + 400, "K=V\0EMPTY=\0", 11) == 0);
out:
  fixture_close(&f);
}

static void test_guest_ranges_are_checked(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  kiln_wasi *w = f.w;
  kiln_memory *m = f.m;
  /* Results that straddle or pass the end of memory. */
  KILN_EXPECT(t, kiln_wasi_p1_args_sizes_get(w, m, PAGE - 2, 0) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_args_sizes_get(w, m, 0, PAGE) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_args_get(w, m, PAGE - 8, 0) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_args_get(w, m, 0, PAGE - 9) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_args_get(w, m, 0, PAGE - 10) == 0);
  KILN_EXPECT(t,
              kiln_wasi_p1_clock_time_get(w, m, 1, 0, PAGE - 7) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_clock_time_get(w, m, 1, 0, PAGE - 8) == 0);
  KILN_EXPECT(
      t, kiln_wasi_p1_clock_time_get(w, m, 1, 0, UINT32_MAX) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_random_get(w, m, PAGE - 1, 2) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_random_get(w, m, UINT32_MAX, 2) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_random_get(w, m, 16, UINT32_MAX) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_random_get(w, m, PAGE, 0) == 0); /* empty end */
  KILN_EXPECT(t, kiln_wasi_p1_random_get(w, m, PAGE + 1, 0) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_fd_fdstat_get(w, m, 3, PAGE - 23) == WASI_EFAULT);
  KILN_EXPECT(t,
              kiln_wasi_p1_fd_filestat_get(w, m, 3, PAGE - 63) == WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_fd_prestat_dir_name(w, m, 3, PAGE - 7, 100) ==
                     WASI_EFAULT);
  /* Paths. */
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(w, m, 3, PAGE - 1, 2) ==
                     WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(w, m, 3, 16, UINT32_MAX) ==
                     WASI_EFAULT);
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(w, m, 3, 0, 5000) ==
                     WASI_ENAMETOOLONG);
  put(&f, 0, "x\xc0\xaf"); /* overlong '/' */
  KILN_EXPECT(t,
              kiln_wasi_p1_path_create_directory(w, m, 3, 0, 3) == WASI_EILSEQ);
  /* path_open validates the result pointer before creating anything. */
  put(&f, 0, "newfile");
  KILN_EXPECT(t, kiln_wasi_p1_path_open(w, m, 3, 0, 0, 7, WASI_OFLAG_CREAT, 0,
                                        0, 0, PAGE - 2) == WASI_EFAULT);
  char p[2 * PATH_MAX];
  path_join(p, sizeof p, f.sandbox, "newfile");
  KILN_EXPECT(t, access(p, F_OK) != 0);
out:
  fixture_close(&f);
}

static void test_iovec_counts_and_overflow(kiln_test *t) {
  int pfd[2];
  if (pipe(pfd) != 0) return;
  fcntl(pfd[0], F_SETPIPE_SZ, 1 << 20);
  fixture f;
  if (!fixture_open(t, &f, -2, pfd[1])) goto out;
  kiln_wasi *w = f.w;
  kiln_memory *m = f.m;
  /* count * 8 overflows 32 bits: checked in 64. */
  KILN_EXPECT(
      t, kiln_wasi_p1_fd_write(w, m, 1, 0, 0x20000000u, 60000) == WASI_EFAULT);
  KILN_EXPECT(
      t, kiln_wasi_p1_fd_write(w, m, 1, 0, UINT32_MAX, 60000) == WASI_EFAULT);
  KILN_EXPECT(
      t, kiln_wasi_p1_fd_write(w, m, 1, PAGE - 4, 1, 60000) == WASI_EFAULT);
  /* buf + len wraps 32 bits. */
  kiln_wasi_st32(f.mem, 0xfffffff0u);
  kiln_wasi_st32(f.mem + 4, 0x20);
  KILN_EXPECT(t, kiln_wasi_p1_fd_write(w, m, 1, 0, 1, 60000) == WASI_EFAULT);
  kiln_wasi_st32(f.mem, 100);
  kiln_wasi_st32(f.mem + 4, UINT32_MAX);
  KILN_EXPECT(t, kiln_wasi_p1_fd_read(w, m, 0, 0, 1, 60000) == WASI_EFAULT);
  /* 2000 one-byte iovecs: only the first WASI_IOV_MAX are used. */
  for (uint32_t i = 0; i < 2000; i++) {
    kiln_wasi_st32(f.mem + 8 * i, 20000 + i);
    kiln_wasi_st32(f.mem + 8 * i + 4, 1);
  }
  KILN_EXPECT(t, kiln_wasi_p1_fd_write(w, m, 1, 0, 2000, 60000) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 60000) == WASI_IOV_MAX);
  /* A bad iovec after good ones: nothing is written. */
  kiln_wasi_st32(f.mem + 8, PAGE);
  kiln_wasi_st32(f.mem + 12, 1);
  KILN_EXPECT(t, kiln_wasi_p1_fd_write(w, m, 1, 0, 2, 60000) == WASI_EFAULT);
  char buf[2048];
  ssize_t n = read(pfd[0], buf, sizeof buf);
  KILN_EXPECT(t, n == (ssize_t)WASI_IOV_MAX);
out:
  fixture_close(&f);
  close(pfd[0]);
  close(pfd[1]);
}

/* A reader that went away must not kill the host with SIGPIPE. */
static void test_write_to_closed_pipe_is_epipe(kiln_test *t) {
  int pfd[2];
  if (pipe(pfd) != 0) return;
  fixture f;
  if (!fixture_open(t, &f, -2, pfd[1])) goto out;
  close(pfd[0]);
  pfd[0] = -1;
  put(&f, 100, "x");
  kiln_wasi_st32(f.mem, 100);
  kiln_wasi_st32(f.mem + 4, 1);
  KILN_EXPECT(t, kiln_wasi_p1_fd_write(f.w, f.m, 1, 0, 1, 8) == WASI_EPIPE);
  sigset_t pending;
  sigemptyset(&pending);
  sigpending(&pending);
  KILN_EXPECT(t, !sigismember(&pending, SIGPIPE));
out:
  fixture_close(&f);
  if (pfd[0] >= 0) close(pfd[0]);
  close(pfd[1]);
}

static void test_errno_mapping(kiln_test *t) {
  KILN_EXPECT(t, kiln_wasi_errno(0) == 0);
  KILN_EXPECT(t, kiln_wasi_errno(ENOENT) == 44);
  KILN_EXPECT(t, kiln_wasi_errno(EACCES) == 2);
  KILN_EXPECT(t, kiln_wasi_errno(EXDEV) == 75);
  KILN_EXPECT(t, kiln_wasi_errno(ENOTSUP) == 58);
  KILN_EXPECT(t, kiln_wasi_errno(EOPNOTSUPP) == 58);
  KILN_EXPECT(t, kiln_wasi_errno(EWOULDBLOCK) == 6);
  KILN_EXPECT(t, kiln_wasi_errno(ENOTEMPTY) == 55);
  KILN_EXPECT(t, kiln_wasi_errno(ELOOP) == 32);
  KILN_EXPECT(t, kiln_wasi_errno(ENOMEDIUM) == 29); /* host-only: EIO */
}

/* ---- The sandbox --------------------------------------------------------- */

static void make_escape_links(fixture *f) {
  char p[2 * PATH_MAX];
  make_link("/", f->sandbox, "abs");
  make_link(f->outside, f->sandbox, "out");
  make_link("../outside", f->sandbox, "rel_out");
  path_join(p, sizeof p, f->outside, "secret");
  make_link(p, f->sandbox, "secret_link");
  path_join(p, sizeof p, f->sandbox, "a");
  mkdir(p, 0755);
  path_join(p, sizeof p, f->sandbox, "a/b");
  mkdir(p, 0755);
  path_join(p, sizeof p, f->sandbox, "a");
  make_link("../..", p, "up2");       /* a/up2 -> sandbox/.. */
  make_link("..", p, "up1");          /* a/up1 -> sandbox: fine */
  make_link("b/../../a", p, "round"); /* a/round -> sandbox/a */
  write_file(f->sandbox, "file", "data");
  make_link("file", f->sandbox, "in_link");
  make_link("nowhere", f->sandbox, "dangling");
  make_link("loop", f->sandbox, "loop");
}

static void check_escapes(kiln_test *t, bool walk) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  kiln_wasi_force_walk(walk);
  make_escape_links(&f);
  const uint32_t F = WASI_LOOKUP_SYMLINK_FOLLOW;
  const char *out_paths[] = {
      "..",
      "../outside/secret",
      "a/../../outside",
      "a/b/../../..",
      "/etc/passwd",
      "/",
      "abs/etc",
      "out/secret",
      "rel_out/secret",
      "a/up2/outside",
      "a/up2",
      "secret_link",
      "abs",
      "out/",
      "a/round/../../..",
  };
  for (size_t i = 0; i < sizeof out_paths / sizeof out_paths[0]; i++) {
    uint32_t e = open_at(&f, 3, F, out_paths[i], 0, WASI_RIGHT_FD_READ, NULL);
    KILN_EXPECTF(t, e == WASI_ENOTCAPABLE, "%s open '%s': errno %u",
                 walk ? "walk" : "openat2", out_paths[i], e);
  }
  /* Inside the tree, links and ".." work. */
  const char *in_paths[] = {
      "a/up1/file", "a/round/b/..",       "in_link", "a/b/../..", ".",
      "a/b/",       "a/up1/a/up1/a/round"};
  for (size_t i = 0; i < sizeof in_paths / sizeof in_paths[0]; i++) {
    uint32_t e = open_at(&f, 3, F, in_paths[i], 0, 0, NULL);
    KILN_EXPECTF(t, e == 0, "%s open '%s': errno %u", walk ? "walk" : "openat2",
                 in_paths[i], e);
  }
  KILN_EXPECT(t, open_at(&f, 3, 0, "in_link", 0, 0, NULL) == WASI_ELOOP);
  KILN_EXPECT(t, open_at(&f, 3, F, "loop", 0, 0, NULL) == WASI_ELOOP);
  KILN_EXPECT(t, open_at(&f, 3, F, "dangling", 0, 0, NULL) == WASI_ENOENT);
  KILN_EXPECT(t, open_at(&f, 3, F, "file/", 0, 0, NULL) == WASI_ENOTDIR);
  /* O_CREAT through a dangling link creates inside the tree. */
  KILN_EXPECT(t, open_at(&f, 3, F, "dangling", WASI_OFLAG_CREAT, 0, NULL) == 0);
  char p[2 * PATH_MAX];
  path_join(p, sizeof p, f.sandbox, "nowhere");
  KILN_EXPECT(t, access(p, F_OK) == 0);
  /* Name operations through an escaping parent. */
  put(&f, 0, "out/new");
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(f.w, f.m, 3, 0, 7) ==
                     WASI_ENOTCAPABLE);
  put(&f, 0, "rel_out/secret");
  KILN_EXPECT(
      t, kiln_wasi_p1_path_unlink_file(f.w, f.m, 3, 0, 14) == WASI_ENOTCAPABLE);
  put(&f, 0, "file");
  put(&f, 100, "a/up2/stolen");
  KILN_EXPECT(t, kiln_wasi_p1_path_rename(f.w, f.m, 3, 0, 4, 3, 100, 12) ==
                     WASI_ENOTCAPABLE);
  put(&f, 0, "secret_link");
  KILN_EXPECT(t, kiln_wasi_p1_path_filestat_get(f.w, f.m, 3, F, 0, 11, 200) ==
                     WASI_ENOTCAPABLE);
  KILN_EXPECT(t,
              kiln_wasi_p1_path_filestat_get(f.w, f.m, 3, 0, 0, 11, 200) == 0);
  KILN_EXPECT(t, f.mem[216] == WASI_FILETYPE_SYMBOLIC_LINK);
  KILN_EXPECT(t, kiln_wasi_p1_path_filestat_set_times(
                     f.w, f.m, 3, F, 0, 11, 0, 0, WASI_FSTFLAG_MTIM_NOW) ==
                     WASI_ENOTCAPABLE);
  put(&f, 100, "hard");
  KILN_EXPECT(t, kiln_wasi_p1_path_link(f.w, f.m, 3, F, 0, 11, 3, 100, 4) ==
                     WASI_ENOTCAPABLE);
  put(&f, 0, "a/b/../..");
  KILN_EXPECT(t,
              kiln_wasi_p1_path_filestat_get(f.w, f.m, 3, 0, 0, 9, 200) == 0);
  put(&f, 0, "a/b/../../..");
  KILN_EXPECT(t, kiln_wasi_p1_path_filestat_get(f.w, f.m, 3, 0, 0, 12, 200) ==
                     WASI_ENOTCAPABLE);
  /* Nothing outside changed. */
  struct stat st;
  path_join(p, sizeof p, f.outside, "secret");
  KILN_EXPECT(t, stat(p, &st) == 0 && st.st_size == 12);
  path_join(p, sizeof p, f.outside, "new");
  KILN_EXPECT(t, access(p, F_OK) != 0);
  path_join(p, sizeof p, f.root, "stolen");
  KILN_EXPECT(t, access(p, F_OK) != 0);
out:
  fixture_close(&f);
}

static void test_escapes_refused_openat2(kiln_test *t) {
  check_escapes(t, false);
}
static void test_escapes_refused_walk(kiln_test *t) { check_escapes(t, true); }

/* The fallback walk must answer exactly like openat2 (which the kernel
 * implements): same errno, and on success the same object. */
static void test_walk_agrees_with_openat2(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  make_escape_links(&f);
  kiln_wasi_fd *pre;
  if (kiln_wasi_fd_get(f.w, 3, 0, &pre)) goto out;
  const char *paths[] = {
      "file",      "file/",    "a",      "a/",
      "a//b///",   "a/./b/.",  "a/b/..", "in_link",
      "in_link/",  "dangling", "loop",   "..",
      "a/..",      "a/../..",  "abs",    "out/secret",
      "rel_out",   "a/up1",    "a/up2",  "a/round",
      "missing/x", "file/x",   ".",      "a/up1/in_link",
  };
  const struct {
    int flags;
    bool follow;
  } modes[] = {
      {O_PATH, true},
      {O_PATH, false},
      {O_RDONLY, true},
      {O_RDONLY, false},
      {O_RDONLY | O_DIRECTORY, true},
      {O_RDONLY | O_DIRECTORY, false},
  };
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    for (size_t k = 0; k < sizeof modes / sizeof modes[0]; k++) {
      int fa = -1, fb = -1;
      kiln_wasi_force_walk(false);
      uint32_t ea = kiln_wasi_open_beneath(
          pre->host_fd, paths[i], modes[k].flags, 0, modes[k].follow, &fa);
      kiln_wasi_force_walk(true);
      uint32_t eb = kiln_wasi_open_beneath(
          pre->host_fd, paths[i], modes[k].flags, 0, modes[k].follow, &fb);
      KILN_EXPECTF(t, ea == eb, "'%s' flags %#x follow %d: openat2 %u, walk %u",
                   paths[i], modes[k].flags, modes[k].follow, ea, eb);
      if (!ea && !eb) {
        struct stat sa, sb;
        fstat(fa, &sa);
        fstat(fb, &sb);
        KILN_EXPECTF(t, sa.st_ino == sb.st_ino && sa.st_dev == sb.st_dev,
                     "'%s': different objects", paths[i]);
      }
      if (fa >= 0) close(fa);
      if (fb >= 0) close(fb);
    }
  }
out:
  fixture_close(&f);
}

/* ---- Directories, descriptors, rights ------------------------------------ */

static void test_readdir_cookies_resume(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  enum { N = 300 };
  char name[32];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "f%03d", i);
    write_file(f.sandbox, name, "");
  }
  static int seen[N];
  memset(seen, 0, sizeof seen);
  int dots = 0;
  uint64_t cookie = 0;
  const uint32_t buf = 4096, len = 100; /* cuts entries often */
  for (int round = 0; round < 10 * N; round++) {
    KILN_EXPECT(
        t, kiln_wasi_p1_fd_readdir(f.w, f.m, 3, buf, len, cookie, 64) == 0);
    uint32_t used = kiln_wasi_ld32(f.mem + 64), at = 0;
    while (at + WASI_DIRENT_SIZE <= used) {
      uint32_t namlen = kiln_wasi_ld32(f.mem + buf + at + 16);
      if (at + WASI_DIRENT_SIZE + namlen > used) break;
      const char *nm = (const char *)f.mem + buf + at + WASI_DIRENT_SIZE;
      if ((namlen == 1 && nm[0] == '.') ||
          (namlen == 2 && nm[0] == '.' && nm[1] == '.'))
        dots++;
      else if (namlen == 4 && nm[0] == 'f') /* names are not terminated */
        seen[(nm[1] - '0') * 100 + (nm[2] - '0') * 10 + (nm[3] - '0')]++;
      cookie = kiln_wasi_ld64(f.mem + buf + at);
      at += WASI_DIRENT_SIZE + namlen;
    }
    if (used < len) break;
  }
  int once = 0;
  for (int i = 0; i < N; i++) once += seen[i] == 1;
  KILN_EXPECT(t, once == N);
  KILN_EXPECT(t, dots == 2);
  /* Past the end: nothing. */
  KILN_EXPECT(t,
              kiln_wasi_p1_fd_readdir(f.w, f.m, 3, buf, len, cookie, 64) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 64) == 0);
out:
  fixture_close(&f);
}

static void test_fd_table_and_renumber(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  write_file(f.sandbox, "file", "0123456789");
  uint32_t fds[200];
  for (int i = 0; i < 200; i++) {
    KILN_EXPECT(t, open_at(&f, 3, 0, "file", 0, WASI_RIGHTS_REGULAR_FILE,
                           &fds[i]) == 0);
    KILN_EXPECT(t, fds[i] == (uint32_t)(4 + i));
  }
  /* Closing frees the lowest slot, which is reused first. */
  KILN_EXPECT(t, kiln_wasi_p1_fd_close(f.w, f.m, fds[10]) == 0);
  uint32_t again;
  KILN_EXPECT(
      t, open_at(&f, 3, 0, "file", 0, WASI_RIGHTS_REGULAR_FILE, &again) == 0);
  KILN_EXPECT(t, again == fds[10]);
  /* Renumber over the preopen: the preopen is gone, the file lives on. */
  KILN_EXPECT(t, kiln_wasi_p1_fd_renumber(f.w, f.m, fds[0], 3) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_fd_prestat_get(f.w, f.m, 3, 0) == WASI_EBADF);
  KILN_EXPECT(t, kiln_wasi_p1_fd_tell(f.w, f.m, 3, 0) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_fd_close(f.w, f.m, fds[0]) == WASI_EBADF);
  KILN_EXPECT(t, kiln_wasi_p1_fd_renumber(f.w, f.m, 3, 100000) == WASI_EBADF);
  for (int i = 1; i < 200; i++)
    KILN_EXPECT(t, kiln_wasi_p1_fd_close(f.w, f.m, fds[i]) == 0);
out:
  fixture_close(&f);
}

static void test_rights_are_inherited_and_enforced(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  char dpath[2 * PATH_MAX];
  path_join(dpath, sizeof dpath, f.sandbox, "d");
  mkdir(dpath, 0755);
  write_file(f.sandbox, "d/file", "x");
  /* A directory opened with few inheriting rights hands down no more. */
  uint32_t d, file;
  put(&f, 1000, "d");
  KILN_EXPECT(t, kiln_wasi_p1_path_open(
                     f.w, f.m, 3, 0, 1000, 1, WASI_OFLAG_DIRECTORY,
                     WASI_RIGHTS_DIRECTORY, WASI_RIGHT_FD_READ, 0, 900) == 0);
  d = kiln_wasi_ld32(f.mem + 900);
  KILN_EXPECT(t, kiln_wasi_p1_fd_fdstat_get(f.w, f.m, d, 0) == 0);
  KILN_EXPECT(t, f.mem[0] == WASI_FILETYPE_DIRECTORY);
  uint64_t base = kiln_wasi_ld64(f.mem + 8);
  KILN_EXPECT(t, base == WASI_RIGHTS_DIRECTORY); /* no read/seek on dirs */
  KILN_EXPECT(t, kiln_wasi_ld64(f.mem + 16) == WASI_RIGHT_FD_READ);
  KILN_EXPECT(t, open_at(&f, d, 0, "file", 0, WASI_RIGHTS_ALL, &file) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_fd_fdstat_get(f.w, f.m, file, 0) == 0);
  KILN_EXPECT(t, kiln_wasi_ld64(f.mem + 8) == WASI_RIGHT_FD_READ);
  KILN_EXPECT(t, kiln_wasi_ld64(f.mem + 16) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_fd_tell(f.w, f.m, file, 0) == WASI_ENOTCAPABLE);
  /* Creating needs PATH_CREATE_FILE on the directory. */
  KILN_EXPECT(
      t, kiln_wasi_p1_fd_fdstat_set_rights(f.w, f.m, d, WASI_RIGHT_PATH_OPEN,
                                           WASI_RIGHT_FD_READ) == 0);
  KILN_EXPECT(t, open_at(&f, d, 0, "new", WASI_OFLAG_CREAT, 0, NULL) ==
                     WASI_ENOTCAPABLE);
  KILN_EXPECT(t, open_at(&f, d, 0, "file", WASI_OFLAG_TRUNC, 0, NULL) ==
                     WASI_ENOTCAPABLE);
  KILN_EXPECT(
      t, kiln_wasi_p1_fd_fdstat_set_rights(f.w, f.m, d, WASI_RIGHTS_DIRECTORY,
                                           0) == WASI_ENOTCAPABLE);
  put(&f, 0, "x");
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(f.w, f.m, d, 0, 1) ==
                     WASI_ENOTCAPABLE);
  /* A file is not a directory to resolve paths in. */
  KILN_EXPECT(t, kiln_wasi_p1_path_create_directory(f.w, f.m, file, 0, 1) ==
                     WASI_ENOTCAPABLE);
out:
  fixture_close(&f);
}

/* ---- poll_oneoff --------------------------------------------------------- */

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sub_clock(fixture *f, uint32_t i, uint64_t ud, uint32_t id,
                      uint64_t timeout, uint16_t flags) {
  uint8_t *p = f->mem + 2000 + i * WASI_SUBSCRIPTION_SIZE;
  memset(p, 0, WASI_SUBSCRIPTION_SIZE);
  kiln_wasi_st64(p, ud);
  p[8] = WASI_EVENTTYPE_CLOCK;
  kiln_wasi_st32(p + 16, id);
  kiln_wasi_st64(p + 24, timeout);
  kiln_wasi_st16(p + 40, flags);
}

static void sub_fd(fixture *f, uint32_t i, uint64_t ud, uint8_t type,
                   uint32_t fd) {
  uint8_t *p = f->mem + 2000 + i * WASI_SUBSCRIPTION_SIZE;
  memset(p, 0, WASI_SUBSCRIPTION_SIZE);
  kiln_wasi_st64(p, ud);
  p[8] = type;
  kiln_wasi_st32(p + 16, fd);
}

static uint32_t poll_n(fixture *f, uint32_t n, uint32_t *nev) {
  uint32_t e = kiln_wasi_p1_poll_oneoff(f->w, f->m, 2000, 10000, n, 1996);
  *nev = kiln_wasi_ld32(f->mem + 1996);
  return e;
}

static const uint8_t *event(fixture *f, uint32_t i) {
  return f->mem + 10000 + i * WASI_EVENT_SIZE;
}

static void test_poll_clocks(kiln_test *t) {
  fixture f;
  if (!fixture_open(t, &f, -2, -2)) goto out;
  uint32_t n;
  uint64_t t0 = mono_ns();
  sub_clock(&f, 0, 7, WASI_CLOCK_MONOTONIC, 30000000, 0);
  KILN_EXPECT(t, poll_n(&f, 1, &n) == 0 && n == 1);
  KILN_EXPECT(t, mono_ns() - t0 >= 30000000);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 7);
  KILN_EXPECT(t, event(&f, 0)[10] == WASI_EVENTTYPE_CLOCK);
  /* Absolute: the earlier of two deadlines fires, alone. */
  t0 = mono_ns();
  sub_clock(&f, 0, 1, WASI_CLOCK_MONOTONIC, t0 + 2000000000ull,
            WASI_SUBCLOCKFLAG_ABSTIME);
  sub_clock(&f, 1, 2, WASI_CLOCK_MONOTONIC, t0 + 20000000ull,
            WASI_SUBCLOCKFLAG_ABSTIME);
  KILN_EXPECT(t, poll_n(&f, 2, &n) == 0 && n == 1);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 2);
  uint64_t dt = mono_ns() - t0;
  KILN_EXPECT(t, dt >= 20000000 && dt < 1500000000ull);
  /* An absolute deadline in the past (realtime) fires at once. */
  sub_clock(&f, 0, 3, WASI_CLOCK_REALTIME, 1, WASI_SUBCLOCKFLAG_ABSTIME);
  t0 = mono_ns();
  KILN_EXPECT(t, poll_n(&f, 1, &n) == 0 && n == 1);
  KILN_EXPECT(t, mono_ns() - t0 < 1000000000ull);
  /* Relative with a huge timeout does not overflow into the past. */
  sub_clock(&f, 0, 4, WASI_CLOCK_MONOTONIC, UINT64_MAX, 0);
  sub_clock(&f, 1, 5, WASI_CLOCK_MONOTONIC, 1000000, 0);
  KILN_EXPECT(t, poll_n(&f, 2, &n) == 0 && n == 1);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 5);
  /* CPU-time clocks and unknown clocks: INVAL per event. */
  sub_clock(&f, 0, 6, WASI_CLOCK_PROCESS_CPUTIME, 1, 0);
  sub_clock(&f, 1, 8, 99, 1, 0);
  KILN_EXPECT(t, poll_n(&f, 2, &n) == 0 && n == 2);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 0) + 8) == WASI_EINVAL);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 1) + 8) == WASI_EINVAL);
  KILN_EXPECT(t, poll_n(&f, 0, &n) == WASI_EINVAL);
  KILN_EXPECT(t, kiln_wasi_p1_poll_oneoff(f.w, f.m, 2000, 10000,
                                          WASI_POLL_MAX + 1, 1996) ==
                     WASI_EFAULT); /* 3 MiB of subscriptions: not in 64 KiB */
out:
  fixture_close(&f);
}

static void test_poll_descriptors(kiln_test *t) {
  int in[2], outp[2];
  if (pipe(in) != 0 || pipe(outp) != 0) return;
  fixture f;
  if (!fixture_open(t, &f, in[0], outp[1])) goto out;
  uint32_t n;
  /* Nothing to read yet: the clock fires. */
  sub_fd(&f, 0, 1, WASI_EVENTTYPE_FD_READ, 0);
  sub_clock(&f, 1, 2, WASI_CLOCK_MONOTONIC, 10000000, 0);
  KILN_EXPECT(t, poll_n(&f, 2, &n) == 0 && n == 1);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 2);
  /* Five bytes waiting. */
  KILN_EXPECT(t, write(in[1], "hello", 5) == 5);
  KILN_EXPECT(t, poll_n(&f, 2, &n) == 0 && n == 1);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 1);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 0) + 8) == 0);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0) + 16) == 5);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 0) + 24) == 0);
  /* Writer gone: hangup. */
  close(in[1]);
  in[1] = -1;
  KILN_EXPECT(t, poll_n(&f, 1, &n) == 0 && n == 1);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 0) + 24) == WASI_EVENTRWFLAG_HANGUP);
  /* stdout (a pipe with room) is writable; a regular file is ready at
   * once; a closed descriptor reports BADF. */
  write_file(f.sandbox, "file", "0123456789");
  uint32_t file;
  KILN_EXPECT(
      t, open_at(&f, 3, 0, "file", 0, WASI_RIGHTS_REGULAR_FILE, &file) == 0);
  kiln_wasi_p1_fd_seek(f.w, f.m, file, 4, WASI_WHENCE_SET, 0);
  sub_fd(&f, 0, 10, WASI_EVENTTYPE_FD_WRITE, 1);
  sub_fd(&f, 1, 11, WASI_EVENTTYPE_FD_READ, file);
  sub_fd(&f, 2, 12, WASI_EVENTTYPE_FD_READ, 77);
  KILN_EXPECT(t, poll_n(&f, 3, &n) == 0 && n == 3);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 0)) == 10);
  KILN_EXPECT(t, kiln_wasi_ld64(event(&f, 1) + 16) == 6);
  KILN_EXPECT(t, kiln_wasi_ld16(event(&f, 2) + 8) == WASI_EBADF);
  KILN_EXPECT(t, event(&f, 2)[10] == WASI_EVENTTYPE_FD_READ);
  /* Unknown event type: the whole call fails. */
  sub_fd(&f, 0, 13, 9, 1);
  KILN_EXPECT(t, poll_n(&f, 1, &n) == WASI_EINVAL);
out:
  fixture_close(&f);
  close(in[0]);
  if (in[1] >= 0) close(in[1]);
  close(outp[0]);
  close(outp[1]);
}

/* ---- Sockets ------------------------------------------------------------- */

static void test_sockets_as_stdio(kiln_test *t) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return;
  fixture f;
  if (!fixture_open(t, &f, sv[0], -2)) goto out;
  KILN_EXPECT(t, kiln_wasi_p1_fd_fdstat_get(f.w, f.m, 0, 0) == 0);
  KILN_EXPECT(t, f.mem[0] == WASI_FILETYPE_SOCKET_STREAM);
  put(&f, 100, "ping");
  kiln_wasi_st32(f.mem + 200, 100);
  kiln_wasi_st32(f.mem + 204, 4);
  KILN_EXPECT(t, kiln_wasi_p1_sock_send(f.w, f.m, 0, 200, 1, 0, 300) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 300) == 4);
  char buf[8] = {0};
  KILN_EXPECT(t, read(sv[1], buf, sizeof buf) == 4 && !memcmp(buf, "ping", 4));
  KILN_EXPECT(t, write(sv[1], "pong!", 5) == 5);
  kiln_wasi_st32(f.mem + 204, 8);
  KILN_EXPECT(t, kiln_wasi_p1_sock_recv(f.w, f.m, 0, 200, 1, 0, 300, 304) == 0);
  KILN_EXPECT(t, kiln_wasi_ld32(f.mem + 300) == 5);
  KILN_EXPECT(t, memcmp(f.mem + 100, "pong!", 5) == 0);
  KILN_EXPECT(t, kiln_wasi_p1_sock_shutdown(f.w, f.m, 0, WASI_SDFLAG_WR) == 0);
  KILN_EXPECT(t, read(sv[1], buf, sizeof buf) == 0); /* EOF */
  KILN_EXPECT(t, kiln_wasi_p1_sock_shutdown(f.w, f.m, 0, 7) == WASI_EINVAL);
  KILN_EXPECT(t, kiln_wasi_p1_sock_shutdown(f.w, f.m, 1, 1) == WASI_ENOTSOCK);
  KILN_EXPECT(t, kiln_wasi_p1_sock_shutdown(f.w, f.m, 99, 1) == WASI_EBADF);
  KILN_EXPECT(t, kiln_wasi_p1_sock_accept(f.w, f.m, 0, 0, 300) == WASI_EINVAL);
  KILN_EXPECT(t,
              kiln_wasi_p1_sock_accept(f.w, f.m, 3, 0, 300) == WASI_ENOTSOCK);
out:
  fixture_close(&f);
  close(sv[0]);
  close(sv[1]);
}

KILN_TEST_MAIN(test_create_rejects_bad_options, test_closed_stdio,
               test_args_and_environ_layout, test_guest_ranges_are_checked,
               test_iovec_counts_and_overflow,
               test_write_to_closed_pipe_is_epipe, test_errno_mapping,
               test_escapes_refused_openat2, test_escapes_refused_walk,
               test_walk_agrees_with_openat2, test_readdir_cookies_resume,
               test_fd_table_and_renumber,
               test_rights_are_inherited_and_enforced, test_poll_clocks,
               test_poll_descriptors, test_sockets_as_stdio)
