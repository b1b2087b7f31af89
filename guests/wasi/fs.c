/* A tour of kiln's WASI file system and the rest of preview1: every fd_* and
 * path_* function, poll_oneoff with clocks and descriptors, clocks, random,
 * sockets on non-sockets, and the same through wasi-libc's POSIX calls.
 *
 * Expects exactly one preopened, empty, writable directory named /sandbox
 * (guest descriptor 3). Prints "fs: all ok" and exits 0, or names the first
 * failed check on stderr and exits 1. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

#define D 3 /* the preopen */

static void fail(int line, const char *what, int got, int want) {
  fprintf(stderr, "FAIL fs.c:%d: %s (got %d, want %d)\n", line, what, got,
          want);
  exit(1);
}
#define CHECK(c)                        \
  do {                                  \
    if (!(c)) fail(__LINE__, #c, 0, 1); \
  } while (0)
#define ERR(expr, want)                                                \
  do {                                                                 \
    int got_ = (int)(expr);                                            \
    if (got_ != (int)(want)) fail(__LINE__, #expr, got_, (int)(want)); \
  } while (0)
#define OK(expr) ERR(expr, 0)

static const __wasi_rights_t kFileRights =
    __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_SEEK |
    __WASI_RIGHTS_FD_TELL | __WASI_RIGHTS_FD_FILESTAT_GET |
    __WASI_RIGHTS_FD_FILESTAT_SET_SIZE | __WASI_RIGHTS_FD_FILESTAT_SET_TIMES |
    __WASI_RIGHTS_FD_SYNC | __WASI_RIGHTS_FD_DATASYNC |
    __WASI_RIGHTS_FD_ADVISE | __WASI_RIGHTS_FD_ALLOCATE |
    __WASI_RIGHTS_FD_FDSTAT_SET_FLAGS | __WASI_RIGHTS_POLL_FD_READWRITE;

static size_t write_str(__wasi_fd_t fd, const char *s) {
  __wasi_ciovec_t iov = {(const uint8_t *)s, strlen(s)};
  __wasi_size_t n = 0;
  OK(__wasi_fd_write(fd, &iov, 1, &n));
  return n;
}

static size_t read_buf(__wasi_fd_t fd, char *buf, size_t len) {
  __wasi_iovec_t iov = {(uint8_t *)buf, len};
  __wasi_size_t n = 0;
  OK(__wasi_fd_read(fd, &iov, 1, &n));
  return n;
}

static void test_preopen(void) {
  __wasi_prestat_t ps;
  OK(__wasi_fd_prestat_get(D, &ps));
  CHECK(ps.tag == __WASI_PREOPENTYPE_DIR);
  CHECK(ps.u.dir.pr_name_len == strlen("/sandbox"));
  char name[16] = {0};
  ERR(__wasi_fd_prestat_dir_name(D, (uint8_t *)name, 3),
      __WASI_ERRNO_NAMETOOLONG);
  OK(__wasi_fd_prestat_dir_name(D, (uint8_t *)name, sizeof name));
  CHECK(strcmp(name, "/sandbox") == 0);
  ERR(__wasi_fd_prestat_get(0, &ps), __WASI_ERRNO_BADF); /* not a preopen */
  ERR(__wasi_fd_prestat_get(4, &ps), __WASI_ERRNO_BADF); /* closed */
  __wasi_fdstat_t st;
  OK(__wasi_fd_fdstat_get(D, &st));
  CHECK(st.fs_filetype == __WASI_FILETYPE_DIRECTORY);
  CHECK(st.fs_rights_base & __WASI_RIGHTS_PATH_OPEN);
  CHECK(!(st.fs_rights_base & __WASI_RIGHTS_FD_READ));
  CHECK(st.fs_rights_inheriting & __WASI_RIGHTS_FD_WRITE);
}

static void test_file_io(void) {
  OK(__wasi_path_create_directory(D, "sub"));
  ERR(__wasi_path_create_directory(D, "sub"), __WASI_ERRNO_EXIST);
  __wasi_fd_t f;
  OK(__wasi_path_open(D, 0, "sub/file.txt",
                      __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, kFileRights, 0,
                      0, &f));
  CHECK(f > 3);
  ERR(__wasi_path_open(D, 0, "sub/file.txt",
                       __WASI_OFLAGS_CREAT | __WASI_OFLAGS_EXCL, kFileRights, 0,
                       0, &(__wasi_fd_t){0}),
      __WASI_ERRNO_EXIST);
  CHECK(write_str(f, "hello world") == 11);
  __wasi_filesize_t pos;
  OK(__wasi_fd_tell(f, &pos));
  CHECK(pos == 11);
  OK(__wasi_fd_seek(f, 0, __WASI_WHENCE_SET, &pos));
  CHECK(pos == 0);
  char buf[64] = {0};
  CHECK(read_buf(f, buf, sizeof buf) == 11);
  CHECK(memcmp(buf, "hello world", 11) == 0);
  CHECK(read_buf(f, buf, sizeof buf) == 0); /* end of file */
  OK(__wasi_fd_seek(f, -5, __WASI_WHENCE_END, &pos));
  CHECK(pos == 6);
  OK(__wasi_fd_seek(f, 2, __WASI_WHENCE_CUR, &pos));
  CHECK(pos == 8);
  ERR(__wasi_fd_seek(f, -100, __WASI_WHENCE_CUR, &pos), __WASI_ERRNO_INVAL);
  ERR(__wasi_fd_seek(f, 0, 7, &pos), __WASI_ERRNO_INVAL);

  /* pwrite/pread leave the offset alone; two iovecs gather and scatter. */
  __wasi_ciovec_t w2[2] = {{(const uint8_t *)"HE", 2},
                           {(const uint8_t *)"LLO", 3}};
  __wasi_size_t n;
  OK(__wasi_fd_pwrite(f, w2, 2, 0, &n));
  CHECK(n == 5);
  char a[4] = {0}, b[16] = {0};
  __wasi_iovec_t r2[2] = {{(uint8_t *)a, 3}, {(uint8_t *)b, 8}};
  OK(__wasi_fd_pread(f, r2, 2, 0, &n));
  CHECK(n == 11);
  CHECK(memcmp(a, "HEL", 3) == 0 && memcmp(b, "LO world", 8) == 0);
  OK(__wasi_fd_tell(f, &pos));
  CHECK(pos == 8);

  __wasi_filestat_t fs;
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.size == 11 && fs.filetype == __WASI_FILETYPE_REGULAR_FILE);
  CHECK(fs.nlink == 1);
  OK(__wasi_fd_filestat_set_size(f, 20));
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.size == 20);
  OK(__wasi_fd_filestat_set_size(f, 11));
  OK(__wasi_fd_filestat_set_times(f, 1000000000000ull, 2000000000000ull,
                                  __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.atim == 1000000000000ull && fs.mtim == 2000000000000ull);
  ERR(__wasi_fd_filestat_set_times(
          f, 0, 0, __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_ATIM_NOW),
      __WASI_ERRNO_INVAL);
  OK(__wasi_fd_filestat_set_times(f, 0, 0, __WASI_FSTFLAGS_MTIM_NOW));
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.mtim > 2000000000000ull && fs.atim == 1000000000000ull);

  OK(__wasi_fd_sync(f));
  OK(__wasi_fd_datasync(f));
  OK(__wasi_fd_advise(f, 0, 11, __WASI_ADVICE_SEQUENTIAL));
  ERR(__wasi_fd_advise(f, 0, 11, 99), __WASI_ERRNO_INVAL);
  int r = __wasi_fd_allocate(f, 0, 100);
  CHECK(r == 0 || r == __WASI_ERRNO_NOTSUP);
  if (r == 0) {
    OK(__wasi_fd_filestat_get(f, &fs));
    CHECK(fs.size == 100);
  }
  OK(__wasi_fd_filestat_set_size(f, 11));

  /* Append mode on and off. */
  OK(__wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_APPEND));
  __wasi_fdstat_t st;
  OK(__wasi_fd_fdstat_get(f, &st));
  CHECK(st.fs_flags == __WASI_FDFLAGS_APPEND);
  CHECK(st.fs_filetype == __WASI_FILETYPE_REGULAR_FILE);
  OK(__wasi_fd_seek(f, 0, __WASI_WHENCE_SET, &pos));
  CHECK(write_str(f, "!") == 1);
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.size == 12);
  OK(__wasi_fd_fdstat_set_flags(f, 0));
  ERR(__wasi_fd_fdstat_set_flags(f, __WASI_FDFLAGS_SYNC), __WASI_ERRNO_NOTSUP);
  ERR(__wasi_fd_fdstat_set_flags(f, 0x100), __WASI_ERRNO_INVAL);

  /* Rights only shrink, and are enforced. */
  OK(__wasi_fd_fdstat_set_rights(f, kFileRights & ~__WASI_RIGHTS_FD_WRITE, 0));
  __wasi_ciovec_t one = {(const uint8_t *)"x", 1};
  ERR(__wasi_fd_write(f, &one, 1, &n), __WASI_ERRNO_NOTCAPABLE);
  ERR(__wasi_fd_fdstat_set_rights(f, kFileRights, 0), __WASI_ERRNO_NOTCAPABLE);
  OK(__wasi_fd_close(f));
  ERR(__wasi_fd_close(f), __WASI_ERRNO_BADF);
  ERR(__wasi_fd_write(f, &one, 1, &n), __WASI_ERRNO_BADF);

  /* Open modes follow the rights asked for. */
  OK(__wasi_path_open(D, 0, "sub/file.txt", 0, __WASI_RIGHTS_FD_READ, 0, 0,
                      &f));
  ERR(__wasi_fd_write(f, &one, 1, &n), __WASI_ERRNO_NOTCAPABLE);
  OK(__wasi_fd_close(f));
  OK(__wasi_path_open(D, 0, "sub/file.txt", __WASI_OFLAGS_TRUNC,
                      __WASI_RIGHTS_FD_WRITE | __WASI_RIGHTS_FD_FILESTAT_GET, 0,
                      0, &f));
  OK(__wasi_fd_filestat_get(f, &fs));
  CHECK(fs.size == 0);
  CHECK(write_str(f, "hello world") == 11);
  OK(__wasi_fd_close(f));

  ERR(__wasi_path_open(D, 0, "missing", 0, 0, 0, 0, &f), __WASI_ERRNO_NOENT);
  ERR(__wasi_path_open(D, 0, "sub/file.txt", __WASI_OFLAGS_DIRECTORY, 0, 0, 0,
                       &f),
      __WASI_ERRNO_NOTDIR);
  ERR(__wasi_path_open(D, 0, "sub/file.txt/", 0, 0, 0, 0, &f),
      __WASI_ERRNO_NOTDIR);
  ERR(__wasi_path_open(D, 0, "sub", __WASI_OFLAGS_DIRECTORY,
                       __WASI_RIGHTS_FD_READ | __WASI_RIGHTS_FD_WRITE, 0, 0,
                       &f),
      __WASI_ERRNO_ISDIR);
  ERR(__wasi_path_open(D, 0, "sub/file.txt", 0x40, 0, 0, 0, &f),
      __WASI_ERRNO_INVAL);
}

static void test_links(void) {
  __wasi_filestat_t fs, ls;
  OK(__wasi_path_filestat_get(D, 0, "sub/file.txt", &fs));
  CHECK(fs.size == 11 && fs.filetype == __WASI_FILETYPE_REGULAR_FILE);

  OK(__wasi_path_symlink("file.txt", D, "sub/link"));
  ERR(__wasi_path_symlink("file.txt", D, "sub/link"), __WASI_ERRNO_EXIST);
  char buf[32] = {0};
  __wasi_size_t used;
  OK(__wasi_path_readlink(D, "sub/link", (uint8_t *)buf, sizeof buf, &used));
  CHECK(used == 8 && memcmp(buf, "file.txt", 8) == 0);
  memset(buf, 0, sizeof buf);
  OK(__wasi_path_readlink(D, "sub/link", (uint8_t *)buf, 4, &used));
  CHECK(used == 4 && memcmp(buf, "file", 4) == 0 && buf[4] == 0);
  ERR(__wasi_path_readlink(D, "sub/file.txt", (uint8_t *)buf, 4, &used),
      __WASI_ERRNO_INVAL);

  OK(__wasi_path_filestat_get(D, 0, "sub/link", &ls));
  CHECK(ls.filetype == __WASI_FILETYPE_SYMBOLIC_LINK);
  OK(__wasi_path_filestat_get(D, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "sub/link",
                              &ls));
  CHECK(ls.filetype == __WASI_FILETYPE_REGULAR_FILE && ls.ino == fs.ino);

  /* Times on the link itself, then through it. */
  OK(__wasi_path_filestat_set_times(D, 0, "sub/link", 0, 5000000000ull,
                                    __WASI_FSTFLAGS_MTIM));
  OK(__wasi_path_filestat_get(D, 0, "sub/link", &ls));
  CHECK(ls.mtim == 5000000000ull);
  OK(__wasi_path_filestat_get(D, 0, "sub/file.txt", &ls));
  CHECK(ls.mtim == fs.mtim);
  OK(__wasi_path_filestat_set_times(D, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW,
                                    "sub/link", 0, 7000000000ull,
                                    __WASI_FSTFLAGS_MTIM));
  OK(__wasi_path_filestat_get(D, 0, "sub/file.txt", &ls));
  CHECK(ls.mtim == 7000000000ull);
  ERR(__wasi_path_filestat_set_times(
          D, 0, "sub/file.txt", 0, 0,
          __WASI_FSTFLAGS_MTIM | __WASI_FSTFLAGS_MTIM_NOW),
      __WASI_ERRNO_INVAL);

  /* Opening through the link follows only when asked. */
  __wasi_fd_t f;
  ERR(__wasi_path_open(D, 0, "sub/link", 0, __WASI_RIGHTS_FD_READ, 0, 0, &f),
      __WASI_ERRNO_LOOP);
  OK(__wasi_path_open(D, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "sub/link", 0,
                      __WASI_RIGHTS_FD_READ, 0, 0, &f));
  OK(__wasi_fd_close(f));

  /* Hard links. */
  OK(__wasi_path_link(D, 0, "sub/file.txt", D, "sub/hard"));
  OK(__wasi_path_filestat_get(D, 0, "sub/hard", &ls));
  CHECK(ls.ino == fs.ino && ls.nlink == 2);
  ERR(__wasi_path_link(D, 0, "sub/file.txt", D, "sub/hard"),
      __WASI_ERRNO_EXIST);
  ERR(__wasi_path_link(D, 0, "sub", D, "dirlink"), __WASI_ERRNO_PERM);
  OK(__wasi_path_link(D, __WASI_LOOKUPFLAGS_SYMLINK_FOLLOW, "sub/link", D,
                      "sub/hard3"));
  OK(__wasi_path_filestat_get(D, 0, "sub/hard3", &ls));
  CHECK(ls.ino == fs.ino && ls.nlink == 3);
  OK(__wasi_path_unlink_file(D, "sub/hard3"));

  /* Rename, unlink, rmdir. */
  OK(__wasi_path_rename(D, "sub/hard", D, "hard2"));
  ERR(__wasi_path_filestat_get(D, 0, "sub/hard", &ls), __WASI_ERRNO_NOENT);
  OK(__wasi_path_filestat_get(D, 0, "hard2", &ls));
  OK(__wasi_path_unlink_file(D, "hard2"));
  ERR(__wasi_path_unlink_file(D, "hard2"), __WASI_ERRNO_NOENT);
  ERR(__wasi_path_unlink_file(D, "sub"), __WASI_ERRNO_ISDIR);
  ERR(__wasi_path_unlink_file(D, "sub/file.txt/"), __WASI_ERRNO_NOTDIR);
  ERR(__wasi_path_remove_directory(D, "sub"), __WASI_ERRNO_NOTEMPTY);
  ERR(__wasi_path_remove_directory(D, "sub/file.txt"), __WASI_ERRNO_NOTDIR);
  OK(__wasi_path_create_directory(D, "empty/"));
  OK(__wasi_path_rename(D, "empty/", D, "empty2"));
  OK(__wasi_path_remove_directory(D, "empty2/"));
}

static void test_readdir(void) {
  __wasi_fd_t d;
  OK(__wasi_path_open(D, 0, "sub", __WASI_OFLAGS_DIRECTORY,
                      __WASI_RIGHTS_FD_READDIR | __WASI_RIGHTS_FD_FILESTAT_GET,
                      0, 0, &d));
  __wasi_filestat_t ds, fs;
  OK(__wasi_fd_filestat_get(d, &ds));
  OK(__wasi_path_filestat_get(D, 0, "sub/file.txt", &fs));
  /* A small buffer forces entries to be cut and resumed by cookie. */
  uint8_t buf[40];
  __wasi_dircookie_t cookie = 0;
  int seen_dot = 0, seen_dotdot = 0, seen_file = 0, seen_link = 0, total = 0;
  for (int rounds = 0; rounds < 100; rounds++) {
    __wasi_size_t used;
    OK(__wasi_fd_readdir(d, buf, sizeof buf, cookie, &used));
    size_t at = 0;
    int complete = 0;
    while (at + sizeof(__wasi_dirent_t) <= used) {
      __wasi_dirent_t de;
      memcpy(&de, buf + at, sizeof de);
      if (at + sizeof de + de.d_namlen > used) break; /* cut off */
      const char *name = (const char *)buf + at + sizeof de;
      if (de.d_namlen == 1 && name[0] == '.') {
        seen_dot++;
        CHECK(de.d_type == __WASI_FILETYPE_DIRECTORY && de.d_ino == ds.ino);
      } else if (de.d_namlen == 2 && memcmp(name, "..", 2) == 0) {
        seen_dotdot++;
      } else if (de.d_namlen == 8 && memcmp(name, "file.txt", 8) == 0) {
        seen_file++;
        CHECK(de.d_type == __WASI_FILETYPE_REGULAR_FILE && de.d_ino == fs.ino);
      } else if (de.d_namlen == 4 && memcmp(name, "link", 4) == 0) {
        seen_link++;
        CHECK(de.d_type == __WASI_FILETYPE_SYMBOLIC_LINK);
      } else {
        CHECK(!"unexpected directory entry");
      }
      total++;
      complete++;
      cookie = de.d_next;
      at += sizeof de + de.d_namlen;
    }
    if (used < sizeof buf) break; /* end of directory */
    CHECK(complete > 0);
  }
  CHECK(seen_dot == 1 && seen_dotdot == 1 && seen_file == 1 && seen_link == 1);
  CHECK(total == 4);
  __wasi_size_t used;
  ERR(__wasi_fd_readdir(D + 100, buf, sizeof buf, 0, &used), __WASI_ERRNO_BADF);
  /* A file is not a directory (and has no readdir right). */
  __wasi_fd_t f;
  OK(__wasi_path_open(D, 0, "sub/file.txt", 0, __WASI_RIGHTS_FD_READDIR, 0, 0,
                      &f));
  ERR(__wasi_fd_readdir(f, buf, sizeof buf, 0, &used), __WASI_ERRNO_NOTCAPABLE);
  OK(__wasi_fd_close(f));
  /* Directories cannot be read, written or seeked as streams. */
  ERR(__wasi_fd_seek(d, 0, __WASI_WHENCE_CUR, &(__wasi_filesize_t){0}),
      __WASI_ERRNO_NOTCAPABLE);
  OK(__wasi_fd_close(d));
}

static void test_renumber(void) {
  __wasi_fd_t a, b;
  OK(__wasi_path_open(D, 0, "sub/file.txt", 0, kFileRights, 0, 0, &a));
  OK(__wasi_path_open(D, 0, "sub/file.txt", 0, __WASI_RIGHTS_FD_READ, 0, 0,
                      &b));
  OK(__wasi_fd_seek(a, 6, __WASI_WHENCE_SET, &(__wasi_filesize_t){0}));
  OK(__wasi_fd_renumber(a, b));
  ERR(__wasi_fd_close(a), __WASI_ERRNO_BADF);
  __wasi_filesize_t pos;
  OK(__wasi_fd_tell(b, &pos)); /* b is a now, with a's rights and offset */
  CHECK(pos == 6);
  ERR(__wasi_fd_renumber(b, 1000), __WASI_ERRNO_BADF);
  ERR(__wasi_fd_renumber(1000, b), __WASI_ERRNO_BADF);
  OK(__wasi_fd_renumber(b, b));
  OK(__wasi_fd_close(b));
}

static void test_poll(void) {
  __wasi_timestamp_t t0, t1, res;
  OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t0));
  __wasi_subscription_t sub[3];
  __wasi_event_t ev[3];
  __wasi_size_t n;
  memset(sub, 0, sizeof sub);
  /* Relative monotonic: 20 ms. */
  sub[0].userdata = 42;
  sub[0].u.tag = __WASI_EVENTTYPE_CLOCK;
  sub[0].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
  sub[0].u.u.clock.timeout = 20000000;
  OK(__wasi_poll_oneoff(sub, ev, 1, &n));
  OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t1));
  CHECK(n == 1 && ev[0].userdata == 42 && ev[0].error == 0 &&
        ev[0].type == __WASI_EVENTTYPE_CLOCK);
  CHECK(t1 - t0 >= 20000000);
  /* Absolute monotonic deadline 15 ms ahead, and a later relative one. */
  sub[0].u.u.clock.timeout = t1 + 15000000;
  sub[0].u.u.clock.flags = __WASI_SUBCLOCKFLAGS_SUBSCRIPTION_CLOCK_ABSTIME;
  sub[1] = sub[0];
  sub[1].userdata = 43;
  sub[1].u.u.clock.flags = 0;
  sub[1].u.u.clock.timeout = 10000000000ull;
  OK(__wasi_poll_oneoff(sub, ev, 2, &n));
  OK(__wasi_clock_time_get(__WASI_CLOCKID_MONOTONIC, 1, &t0));
  CHECK(n == 1 && ev[0].userdata == 42 && t0 >= t1 + 15000000);
  CHECK(t0 - t1 < 5000000000ull);
  /* Realtime, relative. */
  sub[0].u.u.clock.id = __WASI_CLOCKID_REALTIME;
  sub[0].u.u.clock.flags = 0;
  sub[0].u.u.clock.timeout = 1000000;
  OK(__wasi_poll_oneoff(sub, ev, 1, &n));
  CHECK(n == 1 && ev[0].userdata == 42);
  /* A regular file is ready at once; a bad descriptor reports BADF; the
   * long clock does not fire. */
  __wasi_fd_t f;
  OK(__wasi_path_open(D, 0, "sub/file.txt", 0, kFileRights, 0, 0, &f));
  memset(sub, 0, sizeof sub);
  sub[0].userdata = 1;
  sub[0].u.tag = __WASI_EVENTTYPE_FD_READ;
  sub[0].u.u.fd_read.file_descriptor = f;
  sub[1].userdata = 2;
  sub[1].u.tag = __WASI_EVENTTYPE_FD_WRITE;
  sub[1].u.u.fd_write.file_descriptor = 999;
  sub[2].userdata = 3;
  sub[2].u.tag = __WASI_EVENTTYPE_CLOCK;
  sub[2].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
  sub[2].u.u.clock.timeout = 10000000000ull;
  OK(__wasi_poll_oneoff(sub, ev, 3, &n));
  CHECK(n == 2);
  CHECK(ev[0].userdata == 1 && ev[0].error == 0 &&
        ev[0].type == __WASI_EVENTTYPE_FD_READ &&
        ev[0].fd_readwrite.nbytes == 11);
  CHECK(ev[1].userdata == 2 && ev[1].error == __WASI_ERRNO_BADF &&
        ev[1].type == __WASI_EVENTTYPE_FD_WRITE);
  OK(__wasi_fd_close(f));
  /* CPU-time clocks cannot be waited for. */
  sub[0].u.tag = __WASI_EVENTTYPE_CLOCK;
  sub[0].u.u.clock.id = __WASI_CLOCKID_THREAD_CPUTIME_ID;
  sub[0].u.u.clock.timeout = 1;
  OK(__wasi_poll_oneoff(sub, ev, 1, &n));
  CHECK(n == 1 && ev[0].error == __WASI_ERRNO_INVAL);
  sub[0].u.tag = 9;
  ERR(__wasi_poll_oneoff(sub, ev, 1, &n), __WASI_ERRNO_INVAL);
  ERR(__wasi_poll_oneoff(sub, ev, 0, &n), __WASI_ERRNO_INVAL);

  for (int id = 0; id < 4; id++) {
    OK(__wasi_clock_res_get(id, &res));
    CHECK(res > 0);
    OK(__wasi_clock_time_get(id, 0, &t0));
  }
  ERR(__wasi_clock_res_get(4, &res), __WASI_ERRNO_INVAL);
  ERR(__wasi_clock_time_get(4, 0, &t0), __WASI_ERRNO_INVAL);
  OK(__wasi_clock_time_get(__WASI_CLOCKID_REALTIME, 0, &t0));
  CHECK(t0 > 1600000000ull * 1000000000ull); /* after 2020 */
}

static void test_misc(void) {
  uint8_t r[64] = {0};
  OK(__wasi_random_get(r, sizeof r));
  int nonzero = 0;
  for (size_t i = 0; i < sizeof r; i++) nonzero |= r[i];
  CHECK(nonzero);
  OK(__wasi_random_get(r, 0));
  OK(__wasi_sched_yield());
  ERR(__wasi_sock_shutdown(1, __WASI_SDFLAGS_RD), __WASI_ERRNO_NOTSOCK);
  ERR(__wasi_sock_shutdown(999, __WASI_SDFLAGS_RD), __WASI_ERRNO_BADF);
  __wasi_fd_t f;
  ERR(__wasi_sock_accept(D, 0, &f), __WASI_ERRNO_NOTSOCK);
  __wasi_size_t n;
  __wasi_roflags_t ro;
  __wasi_iovec_t iov = {r, 1};
  ERR(__wasi_sock_recv(1, &iov, 1, 0, &n, &ro), __WASI_ERRNO_NOTSOCK);
  ERR(__wasi_sock_send(1, (const __wasi_ciovec_t *)&iov, 1, 0, &n),
      __WASI_ERRNO_NOTSOCK);
  __wasi_fdstat_t st;
  OK(__wasi_fd_fdstat_get(1, &st));
  CHECK(st.fs_rights_base & __WASI_RIGHTS_FD_WRITE);
}

/* The same through wasi-libc: paths under "/sandbox" map to the preopen. */
static void test_libc(void) {
  FILE *f = fopen("/sandbox/libc.txt", "w");
  CHECK(f != NULL);
  CHECK(fprintf(f, "line %d\n", 42) == 8);
  CHECK(fclose(f) == 0);
  f = fopen("/sandbox/libc.txt", "r");
  CHECK(f != NULL);
  char line[32];
  CHECK(fgets(line, sizeof line, f) && strcmp(line, "line 42\n") == 0);
  fclose(f);
  struct stat sb;
  CHECK(stat("/sandbox/libc.txt", &sb) == 0 && sb.st_size == 8);
  CHECK(S_ISREG(sb.st_mode));
  CHECK(mkdir("/sandbox/d2", 0755) == 0);
  CHECK(rename("/sandbox/libc.txt", "/sandbox/d2/moved.txt") == 0);
  DIR *dir = opendir("/sandbox/d2");
  CHECK(dir != NULL);
  int found = 0;
  for (struct dirent *de; (de = readdir(dir));)
    if (strcmp(de->d_name, "moved.txt") == 0) found = 1;
  closedir(dir);
  CHECK(found);
  CHECK(symlink("moved.txt", "/sandbox/d2/sl") == 0);
  char target[32] = {0};
  CHECK(readlink("/sandbox/d2/sl", target, sizeof target) == 9);
  CHECK(strcmp(target, "moved.txt") == 0);
  CHECK(lstat("/sandbox/d2/sl", &sb) == 0 && S_ISLNK(sb.st_mode));
  CHECK(unlink("/sandbox/d2/sl") == 0);
  CHECK(unlink("/sandbox/d2/moved.txt") == 0);
  CHECK(rmdir("/sandbox/d2") == 0);
  errno = 0;
  CHECK(open("/sandbox/nope", O_RDONLY) < 0 && errno == ENOENT);
  int fd = open("/sandbox/a.bin", O_CREAT | O_RDWR | O_TRUNC, 0644);
  CHECK(fd >= 0);
  CHECK(pwrite(fd, "abc", 3, 10) == 3);
  CHECK(lseek(fd, 0, SEEK_END) == 13);
  char c;
  CHECK(pread(fd, &c, 1, 11) == 1 && c == 'b');
  CHECK(ftruncate(fd, 2) == 0);
  CHECK(fstat(fd, &sb) == 0 && sb.st_size == 2);
  CHECK(close(fd) == 0);
  CHECK(unlink("/sandbox/a.bin") == 0);
}

static void cleanup(void) {
  OK(__wasi_path_unlink_file(D, "sub/link"));
  OK(__wasi_path_unlink_file(D, "sub/file.txt"));
  OK(__wasi_path_remove_directory(D, "sub"));
}

int main(void) {
  test_preopen();
  test_file_io();
  test_links();
  test_readdir();
  test_renumber();
  test_poll();
  test_misc();
  test_libc();
  cleanup();
  printf("fs: all ok\n");
  return 0;
}
