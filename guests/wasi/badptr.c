/* A hostile guest: hands kiln's WASI functions pointers and lengths that do
 * not fit in its memory. Every call must come back with an errno (FAULT for
 * a bad range) and leave the host running; nothing may be written or created
 * by a call that failed its checks.
 *
 * Calls the preview1 imports directly (raw i32/i64 arguments), so wasi-libc
 * never sees or checks them. Expects one preopen (guest descriptor 3).
 * Prints "badptr: all ok" and exits 0, or lists what went wrong and exits
 * 1. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define IMPORT(name) \
  __attribute__((import_module("wasi_snapshot_preview1"), import_name(#name)))
IMPORT(fd_write) int32_t raw_fd_write(int32_t, int32_t, int32_t, int32_t);
IMPORT(fd_read) int32_t raw_fd_read(int32_t, int32_t, int32_t, int32_t);
IMPORT(fd_pread)
int32_t raw_fd_pread(int32_t, int32_t, int32_t, int64_t, int32_t);
IMPORT(fd_pwrite)
int32_t raw_fd_pwrite(int32_t, int32_t, int32_t, int64_t, int32_t);
IMPORT(args_get) int32_t raw_args_get(int32_t, int32_t);
IMPORT(args_sizes_get) int32_t raw_args_sizes_get(int32_t, int32_t);
IMPORT(environ_get) int32_t raw_environ_get(int32_t, int32_t);
IMPORT(environ_sizes_get) int32_t raw_environ_sizes_get(int32_t, int32_t);
IMPORT(clock_time_get) int32_t raw_clock_time_get(int32_t, int64_t, int32_t);
IMPORT(clock_res_get) int32_t raw_clock_res_get(int32_t, int32_t);
IMPORT(random_get) int32_t raw_random_get(int32_t, int32_t);
IMPORT(path_open)
int32_t raw_path_open(int32_t, int32_t, int32_t, int32_t, int32_t, int64_t,
                      int64_t, int32_t, int32_t);
IMPORT(path_filestat_get)
int32_t raw_path_filestat_get(int32_t, int32_t, int32_t, int32_t, int32_t);
IMPORT(path_readlink)
int32_t raw_path_readlink(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t);
IMPORT(path_symlink)
int32_t raw_path_symlink(int32_t, int32_t, int32_t, int32_t, int32_t);
IMPORT(path_create_directory)
int32_t raw_path_create_directory(int32_t, int32_t, int32_t);
IMPORT(fd_readdir)
int32_t raw_fd_readdir(int32_t, int32_t, int32_t, int64_t, int32_t);
IMPORT(fd_prestat_get) int32_t raw_fd_prestat_get(int32_t, int32_t);
IMPORT(fd_prestat_dir_name)
int32_t raw_fd_prestat_dir_name(int32_t, int32_t, int32_t);
IMPORT(fd_fdstat_get) int32_t raw_fd_fdstat_get(int32_t, int32_t);
IMPORT(fd_filestat_get) int32_t raw_fd_filestat_get(int32_t, int32_t);
IMPORT(fd_seek) int32_t raw_fd_seek(int32_t, int64_t, int32_t, int32_t);
IMPORT(fd_tell) int32_t raw_fd_tell(int32_t, int32_t);
IMPORT(fd_close) int32_t raw_fd_close(int32_t);
IMPORT(poll_oneoff) int32_t raw_poll_oneoff(int32_t, int32_t, int32_t, int32_t);
IMPORT(sock_recv)
int32_t raw_sock_recv(int32_t, int32_t, int32_t, int32_t, int32_t, int32_t);
IMPORT(path_unlink_file)
int32_t raw_path_unlink_file(int32_t, int32_t, int32_t);

enum {
  FAULT = 21,
  INVAL = 28,
  ILSEQ = 25,
  BADF = 8,
  NAMETOOLONG = 37,
  NOENT = 44
};

static int failures;
static void expect(int line, const char *what, int got, int want) {
  if (got == want) return;
  fprintf(stderr, "FAIL badptr.c:%d: %s (got %d, want %d)\n", line, what, got,
          want);
  failures++;
}
#define ERR(expr, want) expect(__LINE__, #expr, (int)(expr), (int)(want))

/* Guest addresses as plain numbers. */
#define A(p) ((int32_t)(uintptr_t)(p))

static uint8_t scratch[256];
static uint32_t iov[8];
static uint64_t out64;
static uint32_t out32[2];

int main(void) {
  /* The end of memory; every test pointer is built from it. */
  uint64_t size = (uint64_t)__builtin_wasm_memory_size(0) * 65536;
  int32_t end = (int32_t)(uint32_t)size; /* first invalid byte */
  const char msg[] = "should not appear\n";

  /* fd_write: the iovec array, each buffer, and the result pointer. */
  iov[0] = (uint32_t)A(msg);
  iov[1] = sizeof msg - 1;
  ERR(raw_fd_write(1, end, 1, A(out32)), FAULT);     /* array past end */
  ERR(raw_fd_write(1, end - 4, 1, A(out32)), FAULT); /* straddles end */
  ERR(raw_fd_write(1, A(iov), 0x20000000, A(out32)), FAULT); /* 4 GiB */
  ERR(raw_fd_write(1, A(iov), -1, A(out32)), FAULT);         /* 32 GiB */
  ERR(raw_fd_write(1, A(iov), 1, end), FAULT);               /* nwritten */
  ERR(raw_fd_write(1, A(iov), 1, -2), FAULT);                /* wraps 32 bits */
  iov[0] = 0xfffffff0u;                                      /* off+len wraps */
  iov[1] = 0x20;
  ERR(raw_fd_write(1, A(iov), 1, A(out32)), FAULT);
  iov[0] = 16;
  iov[1] = 0xffffffffu;
  ERR(raw_fd_write(1, A(iov), 1, A(out32)), FAULT);
  iov[0] = (uint32_t)end - 8;
  iov[1] = 16;
  ERR(raw_fd_write(1, A(iov), 1, A(out32)), FAULT);
  iov[0] = (uint32_t)end + 1; /* empty, but starts past the end */
  iov[1] = 0;
  ERR(raw_fd_write(1, A(iov), 1, A(out32)), FAULT);
  /* Second iovec bad, first fine: nothing is written. */
  iov[0] = (uint32_t)A(msg);
  iov[1] = sizeof msg - 1;
  iov[2] = (uint32_t)end;
  iov[3] = 1;
  ERR(raw_fd_write(1, A(iov), 2, A(out32)), FAULT);

  /* fd_read / pread / pwrite into or from bad buffers. */
  iov[0] = (uint32_t)end - 2;
  iov[1] = 100;
  ERR(raw_fd_read(0, A(iov), 1, A(out32)), FAULT);
  ERR(raw_fd_pread(3, A(iov), 1, 0, A(out32)), 76); /* dir: no right first */
  /* A file of our own for pwrite: its buffer is bad, nothing is written. */
  const char tmp[] = "badptr.tmp";
  ERR(raw_path_open(3, 0, A(tmp), sizeof tmp - 1, 1 /* creat */,
                    1 << 6 /* fd_write */ | 1 << 2 /* fd_seek */, 0, 0,
                    A(out32)),
      0);
  int32_t f = (int32_t)out32[0];
  ERR(raw_fd_pwrite(f, A(iov), 1, 0, A(out32)), FAULT);
  ERR(raw_fd_pwrite(f, A(iov), 1, 0, end), FAULT);
  ERR(raw_fd_filestat_get(f, A(scratch)), 76); /* no filestat right */
  ERR(raw_fd_close(f), 0);
  ERR(raw_path_unlink_file(3, A(tmp), sizeof tmp - 1), 0);

  /* Arguments, environment, clocks, random. */
  ERR(raw_args_sizes_get(end, A(out32)), FAULT);
  ERR(raw_args_sizes_get(A(out32), end - 3), FAULT);
  ERR(raw_args_get(end - 2, A(scratch)), FAULT);
  ERR(raw_args_get(A(scratch), end - 1), FAULT);
  ERR(raw_environ_sizes_get(-4, A(out32)), FAULT);
  ERR(raw_environ_get(A(scratch), -1), FAULT);
  ERR(raw_clock_time_get(1, 0, end - 4), FAULT);
  ERR(raw_clock_time_get(1, 0, -1), FAULT);
  ERR(raw_clock_res_get(0, end), FAULT);
  ERR(raw_random_get(end - 8, 16), FAULT);
  ERR(raw_random_get(16, -1), FAULT);
  ERR(raw_random_get(-16, 32), FAULT);

  /* Paths: bad ranges, lengths, embedded NUL, invalid UTF-8. */
  const char name[] = "created-by-badptr";
  ERR(raw_path_open(3, 0, end - 2, 10, 1, 0, 0, 0, A(out32)), FAULT);
  ERR(raw_path_open(3, 0, A(name), -1, 1, 0, 0, 0, A(out32)), FAULT);
  ERR(raw_path_open(3, 0, -8, 16, 1, 0, 0, 0, A(out32)), FAULT);
  /* The result pointer is checked before anything is created. */
  ERR(raw_path_open(3, 0, A(name), sizeof name - 1, 1, 0, 0, 0, end), FAULT);
  ERR(raw_path_filestat_get(3, 0, A(name), sizeof name - 1, A(scratch)), NOENT);
  ERR(raw_path_open(3, 0, A("a\0b"), 3, 1, 0, 0, 0, A(out32)), INVAL);
  ERR(raw_path_open(3, 0, A("\xff\xfe"), 2, 1, 0, 0, 0, A(out32)), ILSEQ);
  ERR(raw_path_open(3, 0, A("\xed\xa0\x80"), 3, 1, 0, 0, 0, A(out32)), ILSEQ);
  ERR(raw_path_open(3, 0, A(name), sizeof name - 1, 0x10, 0, 0, 0, A(out32)),
      INVAL);
  static char longpath[5000];
  memset(longpath, 'a', sizeof longpath);
  ERR(raw_path_open(3, 0, A(longpath), sizeof longpath, 0, 0, 0, 0, A(out32)),
      NAMETOOLONG);
  ERR(raw_path_filestat_get(3, 0, A("."), 1, end - 8), FAULT);
  ERR(raw_path_readlink(3, A("x"), 1, end - 1, 10, A(out32)), FAULT);
  ERR(raw_path_readlink(3, A("x"), 1, A(scratch), 10, end), FAULT);
  ERR(raw_path_symlink(end, 4, 3, A(name), sizeof name - 1), FAULT);
  ERR(raw_path_create_directory(3, end - 1, 2), FAULT);
  ERR(raw_path_unlink_file(3, -1, 2), FAULT);

  /* Directory reading, preopens, stat results. */
  ERR(raw_fd_readdir(3, end - 10, 100, 0, A(out32)), FAULT);
  ERR(raw_fd_readdir(3, A(scratch), 100, 0, -3), FAULT);
  ERR(raw_fd_readdir(3, A(scratch), -1, 0, A(out32)), FAULT);
  ERR(raw_fd_prestat_get(3, end - 4), FAULT);
  ERR(raw_fd_prestat_dir_name(3, end - 1, 100), FAULT);
  ERR(raw_fd_prestat_dir_name(3, A(scratch), 0), NAMETOOLONG);
  ERR(raw_fd_fdstat_get(1, end - 8), FAULT);
  ERR(raw_fd_filestat_get(3, -64), FAULT);
  ERR(raw_fd_seek(0, 0, 9, A(&out64)), INVAL);
  ERR(raw_fd_tell(3, end), 76); /* a directory has no tell right */

  /* poll_oneoff: counts and arrays. */
  memset(scratch, 0, sizeof scratch);
  ERR(raw_poll_oneoff(A(scratch), A(scratch + 64), 0, A(out32)), INVAL);
  ERR(raw_poll_oneoff(A(scratch), A(scratch + 64), 0x10000000, A(out32)),
      FAULT);
  ERR(raw_poll_oneoff(A(scratch), A(scratch + 64), -1, A(out32)), FAULT);
  ERR(raw_poll_oneoff(end - 8, A(scratch + 64), 1, A(out32)), FAULT);
  ERR(raw_poll_oneoff(A(scratch), end - 8, 1, A(out32)), FAULT);
  ERR(raw_poll_oneoff(A(scratch), A(scratch + 64), 1, end), FAULT);

  /* Bad descriptors of every kind. */
  ERR(raw_fd_close(-1), BADF);
  ERR(raw_fd_close(1 << 20), BADF);
  ERR(raw_sock_recv(12345, A(iov), 1, 0, A(out32), A(out32 + 1)), BADF);

  if (failures) {
    fprintf(stderr, "badptr: %d checks failed\n", failures);
    return 1;
  }
  printf("badptr: all ok\n");
  return 0;
}
