/* WASI preview1: the descriptor table, guest iovecs and paths, and the fd_*
 * functions. Every guest descriptor maps to one host descriptor that kiln
 * owns (stdio is duplicated at creation), with WASI rights kept beside it. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "wasi/wasi_internal.h"

/* ---- Descriptor table ---------------------------------------------------- */

uint32_t kiln_wasi_fd_get(kiln_wasi *w, uint32_t fd, uint64_t need,
                          kiln_wasi_fd **out) {
  if (fd >= w->fd_cap || w->fds[fd].host_fd < 0) return WASI_EBADF;
  kiln_wasi_fd *e = &w->fds[fd];
  if ((e->rights_base & need) != need) return WASI_ENOTCAPABLE;
  *out = e;
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_fd_insert(kiln_wasi *w, int host_fd, uint8_t filetype,
                             uint64_t base, uint64_t inheriting,
                             uint32_t *out_fd) {
  uint32_t slot = 3;
  while (slot < w->fd_cap && w->fds[slot].host_fd >= 0) slot++;
  if (slot == w->fd_cap) {
    if (w->fd_cap >= WASI_FD_MAX) {
      close(host_fd);
      return WASI_EMFILE;
    }
    uint32_t cap = w->fd_cap * 2 > WASI_FD_MAX ? WASI_FD_MAX : w->fd_cap * 2;
    kiln_wasi_fd *fds = realloc(w->fds, cap * sizeof *fds);
    if (!fds) {
      close(host_fd);
      return WASI_ENOMEM;
    }
    for (uint32_t i = w->fd_cap; i < cap; i++) {
      memset(&fds[i], 0, sizeof fds[i]);
      fds[i].host_fd = -1;
    }
    w->fds = fds;
    w->fd_cap = cap;
  }
  kiln_wasi_fd *e = &w->fds[slot];
  memset(e, 0, sizeof *e);
  e->host_fd = host_fd;
  e->filetype = filetype;
  e->rights_base = base;
  e->rights_inheriting = inheriting;
  *out_fd = slot;
  return WASI_ESUCCESS;
}

void kiln_wasi_fd_free(kiln_wasi_fd *e) {
  if (e->dir) closedir(e->dir);
  if (e->host_fd >= 0) close(e->host_fd);
  free(e->preopen_name);
  memset(e, 0, sizeof *e);
  e->host_fd = -1;
}

uint8_t kiln_wasi_filetype_from_mode(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return WASI_FILETYPE_REGULAR_FILE;
    case S_IFDIR: return WASI_FILETYPE_DIRECTORY;
    case S_IFCHR: return WASI_FILETYPE_CHARACTER_DEVICE;
    case S_IFBLK: return WASI_FILETYPE_BLOCK_DEVICE;
    case S_IFLNK: return WASI_FILETYPE_SYMBOLIC_LINK;
    case S_IFSOCK: return WASI_FILETYPE_SOCKET_STREAM;
    default: return WASI_FILETYPE_UNKNOWN; /* FIFOs have no WASI type */
  }
}

uint8_t kiln_wasi_filetype_of(int host_fd) {
  struct stat st;
  if (fstat(host_fd, &st) != 0) return WASI_FILETYPE_UNKNOWN;
  if (S_ISSOCK(st.st_mode)) {
    int type = 0;
    socklen_t len = sizeof type;
    if (getsockopt(host_fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
        type == SOCK_DGRAM)
      return WASI_FILETYPE_SOCKET_DGRAM;
  }
  return kiln_wasi_filetype_from_mode(st.st_mode);
}

uint64_t kiln_wasi_rights_for(uint8_t filetype) {
  switch (filetype) {
    case WASI_FILETYPE_DIRECTORY: return WASI_RIGHTS_DIRECTORY;
    case WASI_FILETYPE_CHARACTER_DEVICE: return WASI_RIGHTS_CHARACTER_DEVICE;
    case WASI_FILETYPE_SOCKET_DGRAM:
    case WASI_FILETYPE_SOCKET_STREAM: return WASI_RIGHTS_SOCKET;
    default: return WASI_RIGHTS_REGULAR_FILE;
  }
}

static uint64_t ts_to_ns(const struct timespec *ts) {
  return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

void kiln_wasi_filestat_store(uint8_t *dst, const struct stat *st) {
  memset(dst, 0, WASI_FILESTAT_SIZE);
  kiln_wasi_st64(dst + 0, (uint64_t)st->st_dev);
  kiln_wasi_st64(dst + 8, (uint64_t)st->st_ino);
  dst[16] = kiln_wasi_filetype_from_mode(st->st_mode);
  kiln_wasi_st64(dst + 24, (uint64_t)st->st_nlink);
  kiln_wasi_st64(dst + 32, (uint64_t)st->st_size);
  kiln_wasi_st64(dst + 40, ts_to_ns(&st->st_atim));
  kiln_wasi_st64(dst + 48, ts_to_ns(&st->st_mtim));
  kiln_wasi_st64(dst + 56, ts_to_ns(&st->st_ctim));
}

static struct timespec ns_to_ts(uint64_t ns) {
  struct timespec ts = {(time_t)(ns / 1000000000ull),
                        (long)(ns % 1000000000ull)};
  return ts;
}

uint32_t kiln_wasi_times(uint64_t atim, uint64_t mtim, uint32_t f,
                         struct timespec ts[2]) {
  if (f & ~(uint32_t)WASI_FSTFLAGS_ALL) return WASI_EINVAL;
  if ((f & WASI_FSTFLAG_ATIM) && (f & WASI_FSTFLAG_ATIM_NOW))
    return WASI_EINVAL;
  if ((f & WASI_FSTFLAG_MTIM) && (f & WASI_FSTFLAG_MTIM_NOW))
    return WASI_EINVAL;
  struct timespec omit = {0, UTIME_OMIT}, now = {0, UTIME_NOW};
  ts[0] = (f & WASI_FSTFLAG_ATIM_NOW) ? now
          : (f & WASI_FSTFLAG_ATIM)   ? ns_to_ts(atim)
                                      : omit;
  ts[1] = (f & WASI_FSTFLAG_MTIM_NOW) ? now
          : (f & WASI_FSTFLAG_MTIM)   ? ns_to_ts(mtim)
                                      : omit;
  return WASI_ESUCCESS;
}

/* ---- Guest memory: iovecs and strings ------------------------------------ */

uint32_t kiln_wasi_iovecs(kiln_memory *m, uint32_t iovs, uint32_t count,
                          struct iovec *out, int *out_count) {
  /* The whole array must be in memory even though only the first
   * WASI_IOV_MAX entries are used: count * 8 is computed in 64 bits. */
  uint8_t *arr = kiln_wasi_mem(m, iovs, (uint64_t)count * WASI_IOVEC_SIZE);
  if (!arr) return WASI_EFAULT;
  uint32_t n = count < WASI_IOV_MAX ? count : WASI_IOV_MAX;
  for (uint32_t i = 0; i < n; i++) {
    /* Read each field once: another thread may be changing guest memory. */
    uint32_t buf = kiln_wasi_ld32(arr + (uint64_t)i * WASI_IOVEC_SIZE);
    uint32_t len = kiln_wasi_ld32(arr + (uint64_t)i * WASI_IOVEC_SIZE + 4);
    uint8_t *p = kiln_wasi_mem(m, buf, len);
    if (!p) return WASI_EFAULT;
    out[i].iov_base = p;
    out[i].iov_len = len;
  }
  *out_count = (int)n;
  return WASI_ESUCCESS;
}

static bool valid_utf8(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0)
      len = 2, cp = c & 0x1f, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
      len = 3, cp = c & 0x0f, min = 0x800;
    else if ((c & 0xf8) == 0xf0)
      len = 4, cp = c & 0x07, min = 0x10000;
    else
      return false;
    if (n - i < len) return false;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

uint32_t kiln_wasi_read_path(kiln_memory *m, uint32_t off, uint32_t len,
                             char **out) {
  *out = NULL;
  const uint8_t *p = kiln_wasi_mem(m, off, len);
  if (!p) return WASI_EFAULT;
  if (len > WASI_PATH_MAX) return WASI_ENAMETOOLONG;
  if (memchr(p, 0, len)) return WASI_EINVAL;
  if (!valid_utf8(p, len)) return WASI_EILSEQ;
  char *s = malloc((size_t)len + 1);
  if (!s) return WASI_ENOMEM;
  memcpy(s, p, len);
  s[len] = 0;
  *out = s;
  return WASI_ESUCCESS;
}

/* ---- Reading and writing ------------------------------------------------- */

/* The kernel is about to write into these guest buffers: pages a device
 * keeps write-protected must fault in user space first (memory.h). */
static void prepare_iov_writes(kiln_memory *m, const struct iovec *iov, int n) {
  for (int i = 0; i < n; i++)
    kiln_memory_prepare_write(m, iov[i].iov_base, iov[i].iov_len);
}

/* The four vectored transfers share everything but the system call: the
 * rights, the (offset, iovec array, result) checks, and storing the count. */
typedef enum { IO_READ, IO_WRITE, IO_PREAD, IO_PWRITE } io_kind;

/* A write to a pipe or socket whose reader is gone raises SIGPIPE, which
 * kills the whole host process by default: a guest must not be able to do
 * that. Block SIGPIPE on this thread around the write and, if the write
 * raised it (EPIPE) and it was not already pending, take it back. Regular
 * files and terminals never raise it and skip the extra system calls. */
static ssize_t writev_no_sigpipe(const kiln_wasi_fd *e, const struct iovec *iov,
                                 int n) {
  if (e->filetype != WASI_FILETYPE_UNKNOWN &&
      e->filetype != WASI_FILETYPE_SOCKET_STREAM &&
      e->filetype != WASI_FILETYPE_SOCKET_DGRAM)
    return writev(e->host_fd, iov, n);
  sigset_t pipe_set, old, pending;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  sigemptyset(&pending);
  sigpending(&pending);
  bool was_pending = sigismember(&pending, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
  ssize_t r = writev(e->host_fd, iov, n);
  int saved = errno;
  if (r < 0 && saved == EPIPE && !was_pending) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = saved;
  return r;
}

static uint32_t transfer(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                         io_kind kind, uint32_t iovs, uint32_t iovs_len,
                         uint64_t offset, uint32_t count_out) {
  const bool writes = kind == IO_WRITE || kind == IO_PWRITE;
  const bool positioned = kind == IO_PREAD || kind == IO_PWRITE;
  uint64_t rights = writes ? WASI_RIGHT_FD_WRITE : WASI_RIGHT_FD_READ;
  if (positioned) rights |= WASI_RIGHT_FD_SEEK;
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, rights, &e);
  if (err) return err;
  if (positioned && offset > INT64_MAX) return WASI_EINVAL;
  uint8_t *out = kiln_wasi_mem(m, count_out, 4);
  if (!out) return WASI_EFAULT;
  struct iovec iov[WASI_IOV_MAX];
  int n;
  if ((err = kiln_wasi_iovecs(m, iovs, iovs_len, iov, &n))) return err;
  if (!writes) prepare_iov_writes(m, iov, n);
  ssize_t r;
  switch (kind) {
    case IO_READ: r = readv(e->host_fd, iov, n); break;
    case IO_PREAD: r = preadv(e->host_fd, iov, n, (off_t)offset); break;
    case IO_WRITE: r = writev_no_sigpipe(e, iov, n); break;
    default:
      /* With O_APPEND Linux writes at the end whatever the offset; the
       * testsuite accepts that (pwrite-with-append). */
      r = pwritev(e->host_fd, iov, n, (off_t)offset);
  }
  if (r < 0) return kiln_wasi_errno(errno);
  kiln_wasi_st32(out, (uint32_t)r);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_read(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint32_t iovs, uint32_t iovs_len,
                              uint32_t nread_out) {
  return transfer(w, m, fd, IO_READ, iovs, iovs_len, 0, nread_out);
}

uint32_t kiln_wasi_p1_fd_write(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                               uint32_t iovs, uint32_t iovs_len,
                               uint32_t nwritten_out) {
  return transfer(w, m, fd, IO_WRITE, iovs, iovs_len, 0, nwritten_out);
}

uint32_t kiln_wasi_p1_fd_pread(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                               uint32_t iovs, uint32_t iovs_len,
                               uint64_t offset, uint32_t nread_out) {
  return transfer(w, m, fd, IO_PREAD, iovs, iovs_len, offset, nread_out);
}

uint32_t kiln_wasi_p1_fd_pwrite(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t iovs, uint32_t iovs_len,
                                uint64_t offset, uint32_t nwritten_out) {
  return transfer(w, m, fd, IO_PWRITE, iovs, iovs_len, offset, nwritten_out);
}

uint32_t kiln_wasi_p1_fd_seek(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint64_t offset, uint32_t whence,
                              uint32_t newoffset_out) {
  int how;
  switch (whence) {
    case WASI_WHENCE_SET: how = SEEK_SET; break;
    case WASI_WHENCE_CUR: how = SEEK_CUR; break;
    case WASI_WHENCE_END: how = SEEK_END; break;
    default: return WASI_EINVAL;
  }
  /* Asking where we are is fd_tell's right; moving needs fd_seek's. */
  uint64_t need = (how == SEEK_CUR && offset == 0) ? WASI_RIGHT_FD_TELL
                                                   : WASI_RIGHT_FD_SEEK;
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, need, &e);
  if (err) return err;
  uint8_t *out = kiln_wasi_mem(m, newoffset_out, 8);
  if (!out) return WASI_EFAULT;
  off_t r = lseek(e->host_fd, (off_t)(int64_t)offset, how);
  if (r < 0) return kiln_wasi_errno(errno);
  kiln_wasi_st64(out, (uint64_t)r);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_tell(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                              uint32_t out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_TELL, &e);
  if (err) return err;
  uint8_t *p = kiln_wasi_mem(m, out, 8);
  if (!p) return WASI_EFAULT;
  off_t r = lseek(e->host_fd, 0, SEEK_CUR);
  if (r < 0) return kiln_wasi_errno(errno);
  kiln_wasi_st64(p, (uint64_t)r);
  return WASI_ESUCCESS;
}

/* ---- Descriptor state ---------------------------------------------------- */

uint32_t kiln_wasi_p1_fd_close(kiln_wasi *w, kiln_memory *m, uint32_t fd) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  kiln_wasi_fd_free(e);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_renumber(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t to) {
  kiln_wasi_fd *from_e, *to_e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &from_e);
  if (err) return err;
  if ((err = kiln_wasi_fd_get(w, to, 0, &to_e))) return err;
  if (fd == to) return WASI_ESUCCESS;
  kiln_wasi_fd_free(to_e);
  *to_e = *from_e;
  memset(from_e, 0, sizeof *from_e);
  from_e->host_fd = -1;
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_sync(kiln_wasi *w, kiln_memory *m, uint32_t fd) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_SYNC, &e);
  if (err) return err;
  if (fsync(e->host_fd) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_datasync(kiln_wasi *w, kiln_memory *m, uint32_t fd) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_DATASYNC, &e);
  if (err) return err;
  if (fdatasync(e->host_fd) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

static uint16_t fdflags_from_host(int fl) {
  uint16_t f = 0;
  if (fl & O_APPEND) f |= WASI_FDFLAG_APPEND;
  if (fl & O_NONBLOCK) f |= WASI_FDFLAG_NONBLOCK;
  /* On Linux O_SYNC includes O_DSYNC's bit, and O_RSYNC == O_SYNC. */
  if ((fl & O_SYNC) == O_SYNC)
    f |= WASI_FDFLAG_SYNC;
  else if (fl & O_DSYNC)
    f |= WASI_FDFLAG_DSYNC;
  return f;
}

uint32_t kiln_wasi_p1_fd_fdstat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  uint8_t *p = kiln_wasi_mem(m, out, WASI_FDSTAT_SIZE);
  if (!p) return WASI_EFAULT;
  int fl = fcntl(e->host_fd, F_GETFL);
  if (fl < 0) return kiln_wasi_errno(errno);
  memset(p, 0, WASI_FDSTAT_SIZE);
  p[0] = e->filetype;
  kiln_wasi_st16(p + 2, fdflags_from_host(fl));
  kiln_wasi_st64(p + 8, e->rights_base);
  kiln_wasi_st64(p + 16, e->rights_inheriting);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_fdstat_set_flags(kiln_wasi *w, kiln_memory *m,
                                          uint32_t fd, uint32_t flags) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_FDSTAT_SET_FLAGS, &e);
  if (err) return err;
  if (flags & ~(uint32_t)WASI_FDFLAGS_ALL) return WASI_EINVAL;
  int fl = fcntl(e->host_fd, F_GETFL);
  if (fl < 0) return kiln_wasi_errno(errno);
  /* Linux cannot change the sync flags of an open file: accept them only
   * when they stay as they are (fcntl(F_SETFL, F_GETFL | x) round trips). */
  const uint32_t sync_bits =
      WASI_FDFLAG_SYNC | WASI_FDFLAG_DSYNC | WASI_FDFLAG_RSYNC;
  uint32_t have = fdflags_from_host(fl) & sync_bits;
  uint32_t want = flags & sync_bits;
  if (want & WASI_FDFLAG_RSYNC)
    want = (want & ~WASI_FDFLAG_RSYNC) | WASI_FDFLAG_SYNC;
  if (want & WASI_FDFLAG_SYNC) want &= ~(uint32_t)WASI_FDFLAG_DSYNC;
  if (want != have) return WASI_ENOTSUP;
  int nfl = fl & ~(O_APPEND | O_NONBLOCK);
  if (flags & WASI_FDFLAG_APPEND) nfl |= O_APPEND;
  if (flags & WASI_FDFLAG_NONBLOCK) nfl |= O_NONBLOCK;
  if (fcntl(e->host_fd, F_SETFL, nfl) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_fdstat_set_rights(kiln_wasi *w, kiln_memory *m,
                                           uint32_t fd, uint64_t base,
                                           uint64_t inheriting) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  /* Rights only ever shrink. */
  if ((base & ~e->rights_base) || (inheriting & ~e->rights_inheriting))
    return WASI_ENOTCAPABLE;
  e->rights_base = base;
  e->rights_inheriting = inheriting;
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_filestat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                      uint32_t out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_FILESTAT_GET, &e);
  if (err) return err;
  uint8_t *p = kiln_wasi_mem(m, out, WASI_FILESTAT_SIZE);
  if (!p) return WASI_EFAULT;
  struct stat st;
  if (fstat(e->host_fd, &st) != 0) return kiln_wasi_errno(errno);
  kiln_wasi_filestat_store(p, &st);
  /* A pipe or socket reports what WASI calls it, not S_IFMT's view. */
  if (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode)) p[16] = e->filetype;
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_filestat_set_size(kiln_wasi *w, kiln_memory *m,
                                           uint32_t fd, uint64_t size) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_FILESTAT_SET_SIZE, &e);
  if (err) return err;
  if (size > INT64_MAX) return WASI_EINVAL;
  if (ftruncate(e->host_fd, (off_t)size) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_filestat_set_times(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint64_t atim,
                                            uint64_t mtim, uint32_t fst_flags) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_FILESTAT_SET_TIMES, &e);
  if (err) return err;
  struct timespec ts[2];
  if ((err = kiln_wasi_times(atim, mtim, fst_flags, ts))) return err;
  if (futimens(e->host_fd, ts) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_advise(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint64_t offset, uint64_t len,
                                uint32_t advice) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_ADVISE, &e);
  if (err) return err;
  static const int kAdvice[] = {POSIX_FADV_NORMAL,   POSIX_FADV_SEQUENTIAL,
                                POSIX_FADV_RANDOM,   POSIX_FADV_WILLNEED,
                                POSIX_FADV_DONTNEED, POSIX_FADV_NOREUSE};
  if (advice >= sizeof kAdvice / sizeof kAdvice[0]) return WASI_EINVAL;
  if (offset > INT64_MAX || len > INT64_MAX) return WASI_EINVAL;
  int r = posix_fadvise(e->host_fd, (off_t)offset, (off_t)len, kAdvice[advice]);
  return kiln_wasi_errno(r);
}

uint32_t kiln_wasi_p1_fd_allocate(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint64_t offset, uint64_t len) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_ALLOCATE, &e);
  if (err) return err;
  if (offset > INT64_MAX || len > INT64_MAX) return WASI_EINVAL;
  if (offset + len > INT64_MAX) return WASI_EFBIG;
  if (len == 0) return WASI_EINVAL; /* as posix_fallocate */
  int r = posix_fallocate(e->host_fd, (off_t)offset, (off_t)len);
  return r == EOPNOTSUPP ? WASI_ENOTSUP : kiln_wasi_errno(r);
}

/* ---- Preopens ------------------------------------------------------------ */

uint32_t kiln_wasi_p1_fd_prestat_get(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                     uint32_t out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  /* wasi-libc scans descriptors from 3 and stops at the first BADF. */
  if (!e->preopen_name) return WASI_EBADF;
  uint8_t *p = kiln_wasi_mem(m, out, WASI_PRESTAT_SIZE);
  if (!p) return WASI_EFAULT;
  memset(p, 0, WASI_PRESTAT_SIZE);
  p[0] = WASI_PREOPENTYPE_DIR;
  kiln_wasi_st32(p + 4, (uint32_t)e->preopen_name_len);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_fd_prestat_dir_name(kiln_wasi *w, kiln_memory *m,
                                          uint32_t fd, uint32_t path,
                                          uint32_t path_len) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  if (!e->preopen_name) return WASI_EBADF;
  if (path_len < e->preopen_name_len) return WASI_ENAMETOOLONG;
  uint8_t *p = kiln_wasi_mem(m, path, e->preopen_name_len);
  if (!p) return WASI_EFAULT;
  memcpy(p, e->preopen_name, e->preopen_name_len); /* no NUL */
  return WASI_ESUCCESS;
}

/* ---- Directories --------------------------------------------------------- */

static uint8_t filetype_from_dirent(DIR *d, const struct dirent *de) {
  switch (de->d_type) {
    case DT_REG: return WASI_FILETYPE_REGULAR_FILE;
    case DT_DIR: return WASI_FILETYPE_DIRECTORY;
    case DT_LNK: return WASI_FILETYPE_SYMBOLIC_LINK;
    case DT_CHR: return WASI_FILETYPE_CHARACTER_DEVICE;
    case DT_BLK: return WASI_FILETYPE_BLOCK_DEVICE;
    case DT_SOCK: return WASI_FILETYPE_SOCKET_STREAM;
    case DT_FIFO: return WASI_FILETYPE_UNKNOWN;
    default: {
      struct stat st;
      if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return WASI_FILETYPE_UNKNOWN;
      return kiln_wasi_filetype_from_mode(st.st_mode);
    }
  }
}

/* Cookies are the host's directory offsets (getdents64 d_off: where the
 * entry after this one starts), so a cookie from any earlier call resumes
 * right after the entry that carried it. Entries that do not fit are cut
 * off at the end of the buffer, as the spec asks: bufused == buf_len tells
 * the guest there may be more. */
uint32_t kiln_wasi_p1_fd_readdir(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                 uint32_t buf, uint32_t buf_len,
                                 uint64_t cookie, uint32_t bufused_out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, WASI_RIGHT_FD_READDIR, &e);
  if (err) return err;
  if (e->filetype != WASI_FILETYPE_DIRECTORY) return WASI_ENOTDIR;
  uint8_t *out = kiln_wasi_mem(m, buf, buf_len);
  uint8_t *used = kiln_wasi_mem(m, bufused_out, 4);
  if (!out || !used) return WASI_EFAULT;
  if (cookie > LONG_MAX) return WASI_EINVAL;
  if (!e->dir) {
    /* A descriptor of its own, so the guest's offset is not disturbed. */
    int dfd = openat(e->host_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return kiln_wasi_errno(errno);
    e->dir = fdopendir(dfd);
    if (!e->dir) {
      int saved = errno;
      close(dfd);
      return kiln_wasi_errno(saved);
    }
  }
  if (cookie == 0)
    rewinddir(e->dir);
  else
    seekdir(e->dir, (long)cookie);
  uint64_t at = 0;
  while (at < buf_len) {
    errno = 0;
    struct dirent *de = readdir(e->dir);
    if (!de) {
      if (errno) return kiln_wasi_errno(errno);
      break;
    }
    size_t namlen = strlen(de->d_name);
    uint8_t hdr[WASI_DIRENT_SIZE] = {0};
    kiln_wasi_st64(hdr, (uint64_t)de->d_off);
    kiln_wasi_st64(hdr + 8, (uint64_t)de->d_ino);
    kiln_wasi_st32(hdr + 16, (uint32_t)namlen);
    hdr[20] = filetype_from_dirent(e->dir, de);
    uint64_t n =
        buf_len - at < WASI_DIRENT_SIZE ? buf_len - at : WASI_DIRENT_SIZE;
    memcpy(out + at, hdr, n);
    at += n;
    n = buf_len - at < namlen ? buf_len - at : namlen;
    memcpy(out + at, de->d_name, n);
    at += n;
  }
  kiln_wasi_st32(used, (uint32_t)at);
  return WASI_ESUCCESS;
}
