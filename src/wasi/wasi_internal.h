/* Internals of kiln's WASI preview1: ABI constants, the descriptor table,
 * guest-memory helpers, and every preview1 function as a plain C function.
 *
 * Each preview1 function is implemented as
 *   uint32_t kiln_wasi_p1_NAME(kiln_wasi *w, kiln_memory *m, args...)
 * returning a WASI errno; wasi.c wraps them into native host functions
 * (taking w from kiln_caller_user and m from kiln_caller_memory(c, 0)). The
 * split lets unit tests drive every function directly with a hand-made
 * memory, hostile offsets included, without compiling a guest.
 *
 * m may be NULL (a guest without memory): functions that need guest memory
 * then return FAULT. */
#ifndef KILN_WASI_INTERNAL_H_
#define KILN_WASI_INTERNAL_H_

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kiln/memory.h"
#include "kiln/wasi.h"

/* ---- ABI constants (witx: wasi_snapshot_preview1) ------------------------ */

enum {
  WASI_ESUCCESS = 0,
  WASI_E2BIG = 1,
  WASI_EACCES = 2,
  WASI_EADDRINUSE = 3,
  WASI_EADDRNOTAVAIL = 4,
  WASI_EAFNOSUPPORT = 5,
  WASI_EAGAIN = 6,
  WASI_EALREADY = 7,
  WASI_EBADF = 8,
  WASI_EBADMSG = 9,
  WASI_EBUSY = 10,
  WASI_ECANCELED = 11,
  WASI_ECHILD = 12,
  WASI_ECONNABORTED = 13,
  WASI_ECONNREFUSED = 14,
  WASI_ECONNRESET = 15,
  WASI_EDEADLK = 16,
  WASI_EDESTADDRREQ = 17,
  WASI_EDOM = 18,
  WASI_EDQUOT = 19,
  WASI_EEXIST = 20,
  WASI_EFAULT = 21,
  WASI_EFBIG = 22,
  WASI_EHOSTUNREACH = 23,
  WASI_EIDRM = 24,
  WASI_EILSEQ = 25,
  WASI_EINPROGRESS = 26,
  WASI_EINTR = 27,
  WASI_EINVAL = 28,
  WASI_EIO = 29,
  WASI_EISCONN = 30,
  WASI_EISDIR = 31,
  WASI_ELOOP = 32,
  WASI_EMFILE = 33,
  WASI_EMLINK = 34,
  WASI_EMSGSIZE = 35,
  WASI_EMULTIHOP = 36,
  WASI_ENAMETOOLONG = 37,
  WASI_ENETDOWN = 38,
  WASI_ENETRESET = 39,
  WASI_ENETUNREACH = 40,
  WASI_ENFILE = 41,
  WASI_ENOBUFS = 42,
  WASI_ENODEV = 43,
  WASI_ENOENT = 44,
  WASI_ENOEXEC = 45,
  WASI_ENOLCK = 46,
  WASI_ENOLINK = 47,
  WASI_ENOMEM = 48,
  WASI_ENOMSG = 49,
  WASI_ENOPROTOOPT = 50,
  WASI_ENOSPC = 51,
  WASI_ENOSYS = 52,
  WASI_ENOTCONN = 53,
  WASI_ENOTDIR = 54,
  WASI_ENOTEMPTY = 55,
  WASI_ENOTRECOVERABLE = 56,
  WASI_ENOTSOCK = 57,
  WASI_ENOTSUP = 58,
  WASI_ENOTTY = 59,
  WASI_ENXIO = 60,
  WASI_EOVERFLOW = 61,
  WASI_EOWNERDEAD = 62,
  WASI_EPERM = 63,
  WASI_EPIPE = 64,
  WASI_EPROTO = 65,
  WASI_EPROTONOSUPPORT = 66,
  WASI_EPROTOTYPE = 67,
  WASI_ERANGE = 68,
  WASI_EROFS = 69,
  WASI_ESPIPE = 70,
  WASI_ESRCH = 71,
  WASI_ESTALE = 72,
  WASI_ETIMEDOUT = 73,
  WASI_ETXTBSY = 74,
  WASI_EXDEV = 75,
  WASI_ENOTCAPABLE = 76,
};

#define WASI_RIGHT_FD_DATASYNC (1ull << 0)
#define WASI_RIGHT_FD_READ (1ull << 1)
#define WASI_RIGHT_FD_SEEK (1ull << 2)
#define WASI_RIGHT_FD_FDSTAT_SET_FLAGS (1ull << 3)
#define WASI_RIGHT_FD_SYNC (1ull << 4)
#define WASI_RIGHT_FD_TELL (1ull << 5)
#define WASI_RIGHT_FD_WRITE (1ull << 6)
#define WASI_RIGHT_FD_ADVISE (1ull << 7)
#define WASI_RIGHT_FD_ALLOCATE (1ull << 8)
#define WASI_RIGHT_PATH_CREATE_DIRECTORY (1ull << 9)
#define WASI_RIGHT_PATH_CREATE_FILE (1ull << 10)
#define WASI_RIGHT_PATH_LINK_SOURCE (1ull << 11)
#define WASI_RIGHT_PATH_LINK_TARGET (1ull << 12)
#define WASI_RIGHT_PATH_OPEN (1ull << 13)
#define WASI_RIGHT_FD_READDIR (1ull << 14)
#define WASI_RIGHT_PATH_READLINK (1ull << 15)
#define WASI_RIGHT_PATH_RENAME_SOURCE (1ull << 16)
#define WASI_RIGHT_PATH_RENAME_TARGET (1ull << 17)
#define WASI_RIGHT_PATH_FILESTAT_GET (1ull << 18)
#define WASI_RIGHT_PATH_FILESTAT_SET_SIZE (1ull << 19)
#define WASI_RIGHT_PATH_FILESTAT_SET_TIMES (1ull << 20)
#define WASI_RIGHT_FD_FILESTAT_GET (1ull << 21)
#define WASI_RIGHT_FD_FILESTAT_SET_SIZE (1ull << 22)
#define WASI_RIGHT_FD_FILESTAT_SET_TIMES (1ull << 23)
#define WASI_RIGHT_PATH_SYMLINK (1ull << 24)
#define WASI_RIGHT_PATH_REMOVE_DIRECTORY (1ull << 25)
#define WASI_RIGHT_PATH_UNLINK_FILE (1ull << 26)
#define WASI_RIGHT_POLL_FD_READWRITE (1ull << 27)
#define WASI_RIGHT_SOCK_SHUTDOWN (1ull << 28)
#define WASI_RIGHT_SOCK_ACCEPT (1ull << 29)
#define WASI_RIGHTS_ALL ((1ull << 30) - 1)

/* What a descriptor of each kind can ever do; rights asked for in path_open
 * are cut down to these. A directory is not read, written or seeked as a
 * byte stream; a character device has no seek/tell (wasi-libc's isatty()
 * looks for exactly that). */
#define WASI_RIGHTS_REGULAR_FILE                                              \
  (WASI_RIGHT_FD_DATASYNC | WASI_RIGHT_FD_READ | WASI_RIGHT_FD_SEEK |         \
   WASI_RIGHT_FD_FDSTAT_SET_FLAGS | WASI_RIGHT_FD_SYNC | WASI_RIGHT_FD_TELL | \
   WASI_RIGHT_FD_WRITE | WASI_RIGHT_FD_ADVISE | WASI_RIGHT_FD_ALLOCATE |      \
   WASI_RIGHT_FD_FILESTAT_GET | WASI_RIGHT_FD_FILESTAT_SET_SIZE |             \
   WASI_RIGHT_FD_FILESTAT_SET_TIMES | WASI_RIGHT_POLL_FD_READWRITE)
#define WASI_RIGHTS_DIRECTORY                                         \
  (WASI_RIGHT_FD_DATASYNC | WASI_RIGHT_FD_FDSTAT_SET_FLAGS |          \
   WASI_RIGHT_FD_SYNC | WASI_RIGHT_PATH_CREATE_DIRECTORY |            \
   WASI_RIGHT_PATH_CREATE_FILE | WASI_RIGHT_PATH_LINK_SOURCE |        \
   WASI_RIGHT_PATH_LINK_TARGET | WASI_RIGHT_PATH_OPEN |               \
   WASI_RIGHT_FD_READDIR | WASI_RIGHT_PATH_READLINK |                 \
   WASI_RIGHT_PATH_RENAME_SOURCE | WASI_RIGHT_PATH_RENAME_TARGET |    \
   WASI_RIGHT_PATH_FILESTAT_GET | WASI_RIGHT_PATH_FILESTAT_SET_SIZE | \
   WASI_RIGHT_PATH_FILESTAT_SET_TIMES | WASI_RIGHT_FD_FILESTAT_GET |  \
   WASI_RIGHT_FD_FILESTAT_SET_TIMES | WASI_RIGHT_PATH_SYMLINK |       \
   WASI_RIGHT_PATH_REMOVE_DIRECTORY | WASI_RIGHT_PATH_UNLINK_FILE |   \
   WASI_RIGHT_POLL_FD_READWRITE)
#define WASI_RIGHTS_DIRECTORY_INHERITING \
  (WASI_RIGHTS_DIRECTORY | WASI_RIGHTS_REGULAR_FILE)
#define WASI_RIGHTS_CHARACTER_DEVICE \
  (WASI_RIGHTS_REGULAR_FILE & ~(WASI_RIGHT_FD_SEEK | WASI_RIGHT_FD_TELL))
#define WASI_RIGHTS_SOCKET                                                     \
  (WASI_RIGHT_FD_READ | WASI_RIGHT_FD_WRITE | WASI_RIGHT_FD_FDSTAT_SET_FLAGS | \
   WASI_RIGHT_FD_FILESTAT_GET | WASI_RIGHT_POLL_FD_READWRITE |                 \
   WASI_RIGHT_SOCK_SHUTDOWN | WASI_RIGHT_SOCK_ACCEPT)

enum {
  WASI_FILETYPE_UNKNOWN = 0,
  WASI_FILETYPE_BLOCK_DEVICE = 1,
  WASI_FILETYPE_CHARACTER_DEVICE = 2,
  WASI_FILETYPE_DIRECTORY = 3,
  WASI_FILETYPE_REGULAR_FILE = 4,
  WASI_FILETYPE_SOCKET_DGRAM = 5,
  WASI_FILETYPE_SOCKET_STREAM = 6,
  WASI_FILETYPE_SYMBOLIC_LINK = 7,
};

enum {
  WASI_FDFLAG_APPEND = 1 << 0,
  WASI_FDFLAG_DSYNC = 1 << 1,
  WASI_FDFLAG_NONBLOCK = 1 << 2,
  WASI_FDFLAG_RSYNC = 1 << 3,
  WASI_FDFLAG_SYNC = 1 << 4,
  WASI_FDFLAGS_ALL = (1 << 5) - 1,
};

enum {
  WASI_OFLAG_CREAT = 1 << 0,
  WASI_OFLAG_DIRECTORY = 1 << 1,
  WASI_OFLAG_EXCL = 1 << 2,
  WASI_OFLAG_TRUNC = 1 << 3,
  WASI_OFLAGS_ALL = (1 << 4) - 1,
};

enum { WASI_LOOKUP_SYMLINK_FOLLOW = 1 << 0 };

enum {
  WASI_FSTFLAG_ATIM = 1 << 0,
  WASI_FSTFLAG_ATIM_NOW = 1 << 1,
  WASI_FSTFLAG_MTIM = 1 << 2,
  WASI_FSTFLAG_MTIM_NOW = 1 << 3,
  WASI_FSTFLAGS_ALL = (1 << 4) - 1,
};

enum { WASI_WHENCE_SET = 0, WASI_WHENCE_CUR = 1, WASI_WHENCE_END = 2 };

enum {
  WASI_CLOCK_REALTIME = 0,
  WASI_CLOCK_MONOTONIC = 1,
  WASI_CLOCK_PROCESS_CPUTIME = 2,
  WASI_CLOCK_THREAD_CPUTIME = 3,
};

enum {
  WASI_EVENTTYPE_CLOCK = 0,
  WASI_EVENTTYPE_FD_READ = 1,
  WASI_EVENTTYPE_FD_WRITE = 2,
};
enum { WASI_EVENTRWFLAG_HANGUP = 1 };
enum { WASI_SUBCLOCKFLAG_ABSTIME = 1 };
enum { WASI_PREOPENTYPE_DIR = 0 };

enum {
  WASI_SDFLAG_RD = 1 << 0,
  WASI_SDFLAG_WR = 1 << 1,
  WASI_RIFLAG_RECV_PEEK = 1 << 0,
  WASI_RIFLAG_RECV_WAITALL = 1 << 1,
  WASI_ROFLAG_RECV_DATA_TRUNCATED = 1 << 0,
};

/* Sizes of the ABI structures in guest memory (wasm32). */
#define WASI_IOVEC_SIZE 8u
#define WASI_FDSTAT_SIZE 24u
#define WASI_FILESTAT_SIZE 64u
#define WASI_DIRENT_SIZE 24u
#define WASI_PRESTAT_SIZE 8u
#define WASI_SUBSCRIPTION_SIZE 48u
#define WASI_EVENT_SIZE 32u

/* Limits on what a guest may make the host allocate or process at once. */
#define WASI_IOV_MAX                                                 \
  1024u                      /* iovecs handled per call (the rest: a \
                              * short transfer, which POSIX allows) */
#define WASI_PATH_MAX 4096u  /* longer paths: NAMETOOLONG */
#define WASI_POLL_MAX 65536u /* more subscriptions: INVAL */
#define WASI_FD_MAX 65536u   /* guest descriptor numbers */

/* ---- Context and descriptor table ---------------------------------------- */

typedef struct kiln_wasi_fd {
  int host_fd; /* -1: this slot is free */
  uint8_t filetype;
  uint64_t rights_base;
  uint64_t rights_inheriting;
  char *preopen_name; /* guest name of a preopened directory, else NULL */
  size_t preopen_name_len;
  DIR *dir; /* readdir stream over its own descriptor, opened lazily */
} kiln_wasi_fd;

struct kiln_wasi {
  char **argv;
  uint32_t argc;
  uint64_t argv_buf_size; /* sum of strlen + 1 */
  char **env;
  uint32_t envc;
  uint64_t env_buf_size;
  kiln_wasi_fd *fds;
  uint32_t fd_cap; /* slots in fds */
};

/* The entry for guest descriptor fd if it is open and has every right in
 * `need` (BADF if closed or out of range, NOTCAPABLE if a right is
 * missing). */
uint32_t kiln_wasi_fd_get(kiln_wasi *w, uint32_t fd, uint64_t need,
                          kiln_wasi_fd **out);
/* Put host_fd into the lowest free slot >= 3. On failure (EMFILE/NOMEM)
 * host_fd is closed. */
uint32_t kiln_wasi_fd_insert(kiln_wasi *w, int host_fd, uint8_t filetype,
                             uint64_t base, uint64_t inheriting,
                             uint32_t *out_fd);
/* Close the host descriptor (and readdir stream) and free the slot. */
void kiln_wasi_fd_free(kiln_wasi_fd *e);
/* WASI filetype of an open host descriptor (fstat, SO_TYPE for sockets). */
uint8_t kiln_wasi_filetype_of(int host_fd);
uint8_t kiln_wasi_filetype_from_mode(unsigned mode);
/* Rights a descriptor of this filetype can have at most. */
uint64_t kiln_wasi_rights_for(uint8_t filetype);

/* Host errno -> WASI errno. */
uint32_t kiln_wasi_errno(int host_errno);
/* Fill a 64-byte WASI filestat from a host stat. */
struct stat;
void kiln_wasi_filestat_store(uint8_t *dst, const struct stat *st);
/* Validate fstflags and build the two timespecs for utimensat/futimens. */
struct timespec;
uint32_t kiln_wasi_times(uint64_t atim, uint64_t mtim, uint32_t fst_flags,
                         struct timespec ts[2]);

/* ---- Guest memory -------------------------------------------------------- */

/* Host pointer for guest [off, off + len), or NULL (then: FAULT). */
static inline uint8_t *kiln_wasi_mem(kiln_memory *m, uint64_t off,
                                     uint64_t len) {
  return m ? (uint8_t *)kiln_memory_range_or_null(m, off, len) : NULL;
}

/* Little-endian loads and stores (Wasm memory is little-endian whatever the
 * host is). */
static inline void kiln_wasi_st16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
static inline void kiln_wasi_st32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kiln_wasi_st64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t kiln_wasi_ld16(const uint8_t *p) {
  return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t kiln_wasi_ld32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static inline uint64_t kiln_wasi_ld64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* Store a u32 / u64 result at guest offset off. */
static inline uint32_t kiln_wasi_put32(kiln_memory *m, uint32_t off,
                                       uint32_t v) {
  uint8_t *p = kiln_wasi_mem(m, off, 4);
  if (!p) return WASI_EFAULT;
  kiln_wasi_st32(p, v);
  return WASI_ESUCCESS;
}
static inline uint32_t kiln_wasi_put64(kiln_memory *m, uint32_t off,
                                       uint64_t v) {
  uint8_t *p = kiln_wasi_mem(m, off, 8);
  if (!p) return WASI_EFAULT;
  kiln_wasi_st64(p, v);
  return WASI_ESUCCESS;
}

/* Gather a guest iovec array into host iovecs: checks the whole array
 * (count * 8 bytes, 64-bit) and every buffer; at most WASI_IOV_MAX entries
 * are used. */
struct iovec;
uint32_t kiln_wasi_iovecs(kiln_memory *m, uint32_t iovs, uint32_t count,
                          struct iovec *out, int *out_count);

/* Copy a guest path into a new NUL-terminated string: FAULT (bad range),
 * NAMETOOLONG (> WASI_PATH_MAX), INVAL (embedded NUL), ILSEQ (not UTF-8),
 * NOMEM. The caller frees *out. */
uint32_t kiln_wasi_read_path(kiln_memory *m, uint32_t off, uint32_t len,
                             char **out);

/* ---- Path resolution beneath a directory (wasi_path.c) ------------------- */

/* Open `path` relative to dirfd without leaving the tree below dirfd.
 * flags are open(2) flags (O_CLOEXEC is added); follow: whether a final
 * symlink is followed. Escapes: NOTCAPABLE. */
uint32_t kiln_wasi_open_beneath(int dirfd, const char *path, int flags,
                                unsigned mode, bool follow, int *out_fd);
/* For tests: force the component walk (true) or allow openat2 (false). */
void kiln_wasi_force_walk(bool on);

/* ---- The preview1 functions ---------------------------------------------- */

uint32_t kiln_wasi_p1_args_get(kiln_wasi *w, kiln_memory *m, uint32_t argv,
                               uint32_t buf);
uint32_t kiln_wasi_p1_args_sizes_get(kiln_wasi *w, kiln_memory *m,
                                     uint32_t argc_out, uint32_t size_out);
uint32_t kiln_wasi_p1_environ_get(kiln_wasi *w, kiln_memory *m, uint32_t env,
                                  uint32_t buf);
uint32_t kiln_wasi_p1_environ_sizes_get(kiln_wasi *w, kiln_memory *m,
                                        uint32_t count_out, uint32_t size_out);
uint32_t kiln_wasi_p1_clock_res_get(kiln_wasi *w, kiln_memory *m, uint32_t id,
                                    uint32_t out);
uint32_t kiln_wasi_p1_clock_time_get(kiln_wasi *w, kiln_memory *m, uint32_t id,
                                     uint64_t precision, uint32_t out);
uint32_t kiln_wasi_p1_random_get(kiln_wasi *w, kiln_memory *m, uint32_t buf,
                                 uint32_t len);
uint32_t kiln_wasi_p1_sched_yield(kiln_wasi *w, kiln_memory *m);
uint32_t kiln_wasi_p1_proc_raise(kiln_wasi *w, kiln_memory *m, uint32_t sig);

uint32_t kiln_wasi_p1_fd_advise(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint64_t offset, uint64_t len, uint32_t advice);
uint32_t kiln_wasi_p1_fd_allocate(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint64_t offset, uint64_t len);
uint32_t kiln_wasi_p1_fd_close(kiln_wasi *w, kiln_memory *m, uint32_t fd);
uint32_t kiln_wasi_p1_fd_datasync(kiln_wasi *w, kiln_memory *m, uint32_t fd);
uint32_t kiln_wasi_p1_fd_fdstat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t out);
uint32_t kiln_wasi_p1_fd_fdstat_set_flags(kiln_wasi *w, kiln_memory *m,
                                          uint32_t fd, uint32_t flags);
uint32_t kiln_wasi_p1_fd_fdstat_set_rights(kiln_wasi *w, kiln_memory *m,
                                           uint32_t fd, uint64_t base,
                                           uint64_t inheriting);
uint32_t kiln_wasi_p1_fd_filestat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                      uint32_t out);
uint32_t kiln_wasi_p1_fd_filestat_set_size(kiln_wasi *w, kiln_memory *m,
                                           uint32_t fd, uint64_t size);
uint32_t kiln_wasi_p1_fd_filestat_set_times(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint64_t atim,
                                            uint64_t mtim, uint32_t fst_flags);
uint32_t kiln_wasi_p1_fd_pread(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                               uint32_t iovs, uint32_t iovs_len,
                               uint64_t offset, uint32_t nread_out);
uint32_t kiln_wasi_p1_fd_prestat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                     uint32_t out);
uint32_t kiln_wasi_p1_fd_prestat_dir_name(kiln_wasi *w, kiln_memory *m,
                                          uint32_t fd, uint32_t path,
                                          uint32_t path_len);
uint32_t kiln_wasi_p1_fd_pwrite(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t iovs, uint32_t iovs_len,
                                uint64_t offset, uint32_t nwritten_out);
uint32_t kiln_wasi_p1_fd_read(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint32_t iovs, uint32_t iovs_len,
                              uint32_t nread_out);
uint32_t kiln_wasi_p1_fd_readdir(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                 uint32_t buf, uint32_t buf_len,
                                 uint64_t cookie, uint32_t bufused_out);
uint32_t kiln_wasi_p1_fd_renumber(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t to);
uint32_t kiln_wasi_p1_fd_seek(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint64_t offset, uint32_t whence,
                              uint32_t newoffset_out);
uint32_t kiln_wasi_p1_fd_sync(kiln_wasi *w, kiln_memory *m, uint32_t fd);
uint32_t kiln_wasi_p1_fd_tell(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint32_t out);
uint32_t kiln_wasi_p1_fd_write(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                               uint32_t iovs, uint32_t iovs_len,
                               uint32_t nwritten_out);

uint32_t kiln_wasi_p1_path_create_directory(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint32_t path,
                                            uint32_t path_len);
uint32_t kiln_wasi_p1_path_filestat_get(kiln_wasi *w, kiln_memory *m,
                                        uint32_t fd, uint32_t flags,
                                        uint32_t path, uint32_t path_len,
                                        uint32_t out);
uint32_t kiln_wasi_p1_path_filestat_set_times(kiln_wasi *w, kiln_memory *m,
                                              uint32_t fd, uint32_t flags,
                                              uint32_t path, uint32_t path_len,
                                              uint64_t atim, uint64_t mtim,
                                              uint32_t fst_flags);
uint32_t kiln_wasi_p1_path_link(kiln_wasi *w, kiln_memory *m, uint32_t old_fd,
                                uint32_t old_flags, uint32_t old_path,
                                uint32_t old_len, uint32_t new_fd,
                                uint32_t new_path, uint32_t new_len);
uint32_t kiln_wasi_p1_path_open(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t dirflags, uint32_t path,
                                uint32_t path_len, uint32_t oflags,
                                uint64_t base, uint64_t inheriting,
                                uint32_t fdflags, uint32_t fd_out);
uint32_t kiln_wasi_p1_path_readlink(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t path, uint32_t path_len,
                                    uint32_t buf, uint32_t buf_len,
                                    uint32_t bufused_out);
uint32_t kiln_wasi_p1_path_remove_directory(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint32_t path,
                                            uint32_t path_len);
uint32_t kiln_wasi_p1_path_rename(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t old_path, uint32_t old_len,
                                  uint32_t new_fd, uint32_t new_path,
                                  uint32_t new_len);
uint32_t kiln_wasi_p1_path_symlink(kiln_wasi *w, kiln_memory *m,
                                   uint32_t old_path, uint32_t old_len,
                                   uint32_t fd, uint32_t new_path,
                                   uint32_t new_len);
uint32_t kiln_wasi_p1_path_unlink_file(kiln_wasi *w, kiln_memory *m,
                                       uint32_t fd, uint32_t path,
                                       uint32_t path_len);

uint32_t kiln_wasi_p1_poll_oneoff(kiln_wasi *w, kiln_memory *m, uint32_t in,
                                  uint32_t out, uint32_t nsubscriptions,
                                  uint32_t nevents_out);

uint32_t kiln_wasi_p1_sock_accept(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t flags, uint32_t fd_out);
uint32_t kiln_wasi_p1_sock_recv(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t ri_data, uint32_t ri_data_len,
                                uint32_t ri_flags, uint32_t ro_datalen_out,
                                uint32_t ro_flags_out);
uint32_t kiln_wasi_p1_sock_send(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t si_data, uint32_t si_data_len,
                                uint32_t si_flags, uint32_t so_datalen_out);
uint32_t kiln_wasi_p1_sock_shutdown(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t how);

#endif /* KILN_WASI_INTERNAL_H_ */
