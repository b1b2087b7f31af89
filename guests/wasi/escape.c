/* A hostile guest: tries every way out of its preopened directory.
 *
 * Runs with one preopen named /sandbox (guest descriptor 3) whose host
 * directory sits beside a directory "outside" holding a file "secret", and
 * which the host test fills with:
 *   inner            a regular file
 *   abs_link   ->  "/"                      (absolute)
 *   out_link   ->  "<host path of outside>" (absolute)
 *   rel_out    ->  "../outside"             (relative, climbs out)
 *   file_link  ->  "<host path of outside/secret>"
 *   sub/              a directory
 * Every attempt must fail (NOTCAPABLE where the path leaves the tree);
 * prints "escape: all refused" and exits 0, or names the attempt that got
 * through and exits 1. The host test then checks that nothing outside the
 * sandbox was read, changed, created or removed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <wasi/api.h>

#define D 3
#define FOLLOW __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW
#define NOTCAP __WASI_ERRNO_NOTCAPABLE

static int failures;

static void expect(int line, const char *what, int got, int want) {
  if (got == want) return;
  fprintf(stderr, "FAIL escape.c:%d: %s (got %d, want %d)\n", line, what, got,
          want);
  failures++;
}
#define ERR(expr, want) expect(__LINE__, #expr, (int)(expr), (int)(want))
#define OK(expr) ERR(expr, 0)
#define REFUSED(expr)                                                       \
  do {                                                                      \
    int r_ = (int)(expr);                                                   \
    if (r_ == 0) {                                                          \
      fprintf(stderr, "FAIL escape.c:%d: %s succeeded\n", __LINE__, #expr); \
      failures++;                                                           \
    }                                                                       \
  } while (0)

static const __wasi_rights_t R = __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE;

static int open_(__wasi_lookupflags_t lf, const char *path,
                 __wasi_oflags_t of) {
  __wasi_fd_t fd = 0;
  int r = __wasi_path_open(D, lf, path, of, R, R, 0, &fd);
  if (r == 0) {
    fprintf(stderr, "opened '%s' as %u\n", path, fd);
    (void)__wasi_fd_close(fd);
  }
  return r;
}

int main(void) {
  __wasi_filestat_t st;

  /* ".." and absolute paths. */
  ERR(open_(0, "..", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(0, "../outside/secret", 0), NOTCAP);
  ERR(open_(0, "sub/../../outside/secret", 0), NOTCAP);
  ERR(open_(0, "sub/../sub/../../outside", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(0, "/etc/passwd", 0), NOTCAP);
  ERR(open_(0, "/", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(0, "../outside/new", __WASI_OFLAGS_CREAT), NOTCAP);

  /* Symlinks that lead out, followed at the end or in the middle. */
  ERR(open_(FOLLOW, "abs_link", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(0, "abs_link/etc/passwd", 0), NOTCAP);
  ERR(open_(FOLLOW, "out_link/secret", 0), NOTCAP);
  ERR(open_(0, "out_link/secret", 0), NOTCAP);
  ERR(open_(0, "rel_out/secret", 0), NOTCAP);
  ERR(open_(FOLLOW, "rel_out", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(FOLLOW, "file_link", 0), NOTCAP);
  ERR(open_(FOLLOW, "file_link", __WASI_OFLAGS_CREAT | __WASI_OFLAGS_TRUNC),
      NOTCAP);
  ERR(open_(0, "out_link/", 0), NOTCAP); /* a trailing slash follows */
  /* Without FOLLOW a final symlink is not opened at all. */
  ERR(open_(0, "file_link", 0), __WASI_ERRNO_LOOP);

  /* Links the guest makes itself. */
  REFUSED(__wasi_path_symlink("/", D, "new_abs"));
  REFUSED(__wasi_path_symlink("/etc/passwd", D, "new_abs2"));
  OK(__wasi_path_symlink("../..", D, "sub/up")); /* allowed, never followed */
  ERR(open_(FOLLOW, "sub/up", __WASI_OFLAGS_DIRECTORY), NOTCAP);
  ERR(open_(0, "sub/up/outside/secret", 0), NOTCAP);
  OK(__wasi_path_symlink("up/x", D, "sub/chain")); /* link through a link */
  ERR(open_(FOLLOW, "sub/chain", 0), NOTCAP);
  OK(__wasi_path_symlink("loop", D, "loop"));
  ERR(open_(FOLLOW, "loop", 0), __WASI_ERRNO_LOOP);

  /* stat and utimes through links and dots. */
  ERR(__wasi_path_filestat_get(D, FOLLOW, "out_link", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, FOLLOW, "file_link", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, 0, "out_link/", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, 0, "out_link/secret", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, 0, "..", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, 0, "sub/../..", &st), NOTCAP);
  ERR(__wasi_path_filestat_get(D, 0, "/", &st), NOTCAP);
  OK(__wasi_path_filestat_get(D, 0, "out_link", &st)); /* the link itself */
  ERR(st.filetype, __WASI_FILETYPE_SYMBOLIC_LINK);
  ERR(__wasi_path_filestat_set_times(D, FOLLOW, "file_link", 0, 0,
                                     __WASI_FSTFLAGS_MTIM),
      NOTCAP);
  ERR(__wasi_path_filestat_set_times(D, 0, "out_link/", 0, 0,
                                     __WASI_FSTFLAGS_MTIM),
      NOTCAP);
  ERR(__wasi_path_filestat_set_times(D, 0, "rel_out/secret", 0, 0,
                                     __WASI_FSTFLAGS_MTIM),
      NOTCAP);
  ERR(__wasi_path_filestat_set_times(D, 0, "..", 0, 0, __WASI_FSTFLAGS_MTIM),
      NOTCAP);

  /* Creating, removing and renaming outside. */
  ERR(__wasi_path_create_directory(D, "../evil"), NOTCAP);
  ERR(__wasi_path_create_directory(D, "out_link/evil"), NOTCAP);
  ERR(__wasi_path_create_directory(D, "rel_out/evil"), NOTCAP);
  ERR(__wasi_path_unlink_file(D, "../outside/secret"), NOTCAP);
  ERR(__wasi_path_unlink_file(D, "out_link/secret"), NOTCAP);
  ERR(__wasi_path_unlink_file(D, "rel_out/secret"), NOTCAP);
  ERR(__wasi_path_remove_directory(D, ".."), NOTCAP);
  ERR(__wasi_path_remove_directory(D, "../outside"), NOTCAP);
  REFUSED(__wasi_path_remove_directory(D, "out_link/"));
  ERR(__wasi_path_rename(D, "inner", D, "../stolen"), NOTCAP);
  ERR(__wasi_path_rename(D, "inner", D, "out_link/stolen"), NOTCAP);
  ERR(__wasi_path_rename(D, "inner", D, "rel_out/stolen"), NOTCAP);
  ERR(__wasi_path_rename(D, "../outside/secret", D, "mine"), NOTCAP);
  ERR(__wasi_path_rename(D, "rel_out/secret", D, "mine"), NOTCAP);
  ERR(__wasi_path_rename(D, "sub", D, "../sub"), NOTCAP);
  ERR(__wasi_path_symlink("x", D, "../planted"), NOTCAP);
  ERR(__wasi_path_symlink("x", D, "out_link/planted"), NOTCAP);

  /* Hard links to outside files. */
  ERR(__wasi_path_link(D, 0, "out_link/secret", D, "hard"), NOTCAP);
  ERR(__wasi_path_link(D, 0, "../outside/secret", D, "hard"), NOTCAP);
  ERR(__wasi_path_link(D, FOLLOW, "file_link", D, "hard"), NOTCAP);
  ERR(__wasi_path_link(D, 0, "inner", D, "../outside/hard"), NOTCAP);
  /* Linking the symlink itself is harmless: it still cannot be followed. */
  OK(__wasi_path_link(D, 0, "file_link", D, "hard_to_link"));
  ERR(open_(FOLLOW, "hard_to_link", 0), NOTCAP);

  /* readlink shows a link's text but never reads through it. */
  char buf[256];
  __wasi_size_t used;
  OK(__wasi_path_readlink(D, "rel_out", (uint8_t *)buf, sizeof buf, &used));
  ERR(used, 10);
  ERR(__wasi_path_readlink(D, "out_link/", (uint8_t *)buf, sizeof buf, &used),
      NOTCAP);
  ERR(__wasi_path_readlink(D, "../outside/secret", (uint8_t *)buf, sizeof buf,
                           &used),
      NOTCAP);

  /* Through wasi-libc: paths under /sandbox resolve against the preopen. */
  const char *libc_paths[] = {"/sandbox/../outside/secret",
                              "/sandbox/out_link/secret",
                              "/sandbox/rel_out/secret", "/etc/passwd"};
  for (size_t i = 0; i < sizeof libc_paths / sizeof libc_paths[0]; i++) {
    errno = 0;
    FILE *f = fopen(libc_paths[i], "r");
    if (f) {
      fprintf(stderr, "FAIL: fopen(%s) succeeded\n", libc_paths[i]);
      failures++;
      fclose(f);
    }
  }

  /* Cleanup of what was legitimately made inside. */
  OK(__wasi_path_unlink_file(D, "sub/up"));
  OK(__wasi_path_unlink_file(D, "sub/chain"));
  OK(__wasi_path_unlink_file(D, "loop"));
  OK(__wasi_path_unlink_file(D, "hard_to_link"));
  if (failures) {
    fprintf(stderr, "escape: %d attempts were not refused\n", failures);
    return 1;
  }
  printf("escape: all refused\n");
  return 0;
}
