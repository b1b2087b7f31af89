/* WASI preview1: the context (arguments, environment, descriptor table),
 * errno mapping, arguments/environment/clocks/random/process functions,
 * sockets, and the table that binds every preview1 import to its host
 * function. Files: wasi_fd.c (descriptors), wasi_path.c (paths and the
 * sandbox), wasi_poll.c (poll_oneoff). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "wasi/wasi_internal.h"

/* ---- Errno --------------------------------------------------------------- */

uint32_t kiln_wasi_errno(int e) {
  switch (e) {
    case 0: return WASI_ESUCCESS;
    case E2BIG: return WASI_E2BIG;
    case EACCES: return WASI_EACCES;
    case EADDRINUSE: return WASI_EADDRINUSE;
    case EADDRNOTAVAIL: return WASI_EADDRNOTAVAIL;
    case EAFNOSUPPORT: return WASI_EAFNOSUPPORT;
    case EAGAIN: return WASI_EAGAIN;
    case EALREADY: return WASI_EALREADY;
    case EBADF: return WASI_EBADF;
    case EBADMSG: return WASI_EBADMSG;
    case EBUSY: return WASI_EBUSY;
    case ECANCELED: return WASI_ECANCELED;
    case ECHILD: return WASI_ECHILD;
    case ECONNABORTED: return WASI_ECONNABORTED;
    case ECONNREFUSED: return WASI_ECONNREFUSED;
    case ECONNRESET: return WASI_ECONNRESET;
    case EDEADLK: return WASI_EDEADLK;
    case EDESTADDRREQ: return WASI_EDESTADDRREQ;
    case EDOM: return WASI_EDOM;
    case EDQUOT: return WASI_EDQUOT;
    case EEXIST: return WASI_EEXIST;
    case EFAULT: return WASI_EFAULT;
    case EFBIG: return WASI_EFBIG;
    case EHOSTUNREACH: return WASI_EHOSTUNREACH;
    case EIDRM: return WASI_EIDRM;
    case EILSEQ: return WASI_EILSEQ;
    case EINPROGRESS: return WASI_EINPROGRESS;
    case EINTR: return WASI_EINTR;
    case EINVAL: return WASI_EINVAL;
    case EIO: return WASI_EIO;
    case EISCONN: return WASI_EISCONN;
    case EISDIR: return WASI_EISDIR;
    case ELOOP: return WASI_ELOOP;
    case EMFILE: return WASI_EMFILE;
    case EMLINK: return WASI_EMLINK;
    case EMSGSIZE: return WASI_EMSGSIZE;
    case EMULTIHOP: return WASI_EMULTIHOP;
    case ENAMETOOLONG: return WASI_ENAMETOOLONG;
    case ENETDOWN: return WASI_ENETDOWN;
    case ENETRESET: return WASI_ENETRESET;
    case ENETUNREACH: return WASI_ENETUNREACH;
    case ENFILE: return WASI_ENFILE;
    case ENOBUFS: return WASI_ENOBUFS;
    case ENODEV: return WASI_ENODEV;
    case ENOENT: return WASI_ENOENT;
    case ENOEXEC: return WASI_ENOEXEC;
    case ENOLCK: return WASI_ENOLCK;
    case ENOLINK: return WASI_ENOLINK;
    case ENOMEM: return WASI_ENOMEM;
    case ENOMSG: return WASI_ENOMSG;
    case ENOPROTOOPT: return WASI_ENOPROTOOPT;
    case ENOSPC: return WASI_ENOSPC;
    case ENOSYS: return WASI_ENOSYS;
    case ENOTCONN: return WASI_ENOTCONN;
    case ENOTDIR: return WASI_ENOTDIR;
    case ENOTEMPTY: return WASI_ENOTEMPTY;
    case ENOTRECOVERABLE: return WASI_ENOTRECOVERABLE;
    case ENOTSOCK: return WASI_ENOTSOCK;
    case ENOTSUP: return WASI_ENOTSUP; /* == EOPNOTSUPP on Linux */
    case ENOTTY: return WASI_ENOTTY;
    case ENXIO: return WASI_ENXIO;
    case EOVERFLOW: return WASI_EOVERFLOW;
    case EOWNERDEAD: return WASI_EOWNERDEAD;
    case EPERM: return WASI_EPERM;
    case EPIPE: return WASI_EPIPE;
    case EPROTO: return WASI_EPROTO;
    case EPROTONOSUPPORT: return WASI_EPROTONOSUPPORT;
    case EPROTOTYPE: return WASI_EPROTOTYPE;
    case ERANGE: return WASI_ERANGE;
    case EROFS: return WASI_EROFS;
    case ESPIPE: return WASI_ESPIPE;
    case ESRCH: return WASI_ESRCH;
    case ESTALE: return WASI_ESTALE;
    case ETIMEDOUT: return WASI_ETIMEDOUT;
    case ETXTBSY: return WASI_ETXTBSY;
    case EXDEV: return WASI_EXDEV;
    default: return WASI_EIO; /* host-only errnos (ENOMEDIUM, ...) */
  }
}

/* ---- Context ------------------------------------------------------------- */

void kiln_wasi_options_init(kiln_wasi_options *o) {
  memset(o, 0, sizeof *o);
  o->stdin_fd = 0;
  o->stdout_fd = 1;
  o->stderr_fd = 2;
}

static void free_strings(char **v, uint32_t n) {
  if (!v) return;
  for (uint32_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

/* Copy n strings; *out_size gets the sum of their lengths + 1 each. */
static kiln_status copy_strings(const char *const *src, int n, const char *what,
                                bool need_eq, char ***out, uint64_t *out_size) {
  *out = NULL;
  *out_size = 0;
  if (n < 0)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "negative %s count",
                            what);
  if (n == 0) return KILN_OK;
  if (!src)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "%s is NULL", what);
  char **v = calloc((size_t)n, sizeof *v);
  if (!v)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  uint64_t size = 0;
  for (int i = 0; i < n; i++) {
    if (!src[i] || (need_eq && !strchr(src[i], '='))) {
      free_strings(v, (uint32_t)n);
      return kiln_make_status(KILN_CODE_INVALID_ARGUMENT, "%s[%d] is %s", what,
                              i, src[i] ? "not KEY=VALUE" : "NULL");
    }
    v[i] = strdup(src[i]);
    if (!v[i]) {
      free_strings(v, (uint32_t)n);
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    }
    size += strlen(src[i]) + 1;
  }
  /* The guest learns the sizes as u32: refuse what it could not hold. */
  if (size > UINT32_MAX) {
    free_strings(v, (uint32_t)n);
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "%s take more than 4 GiB", what);
  }
  *out = v;
  *out_size = size;
  return KILN_OK;
}

static kiln_status add_stdio(kiln_wasi *w, uint32_t slot, int host_fd) {
  w->fds[slot].host_fd = -1;
  if (host_fd < 0) return KILN_OK;
  int fd = fcntl(host_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == EBADF) return KILN_OK; /* closed on the host: closed here */
    return kiln_status_from_errno(errno, "duplicating host descriptor %d",
                                  host_fd);
  }
  uint8_t type = kiln_wasi_filetype_of(fd);
  w->fds[slot].host_fd = fd;
  w->fds[slot].filetype = type;
  w->fds[slot].rights_base = kiln_wasi_rights_for(type);
  w->fds[slot].rights_inheriting = 0;
  return KILN_OK;
}

kiln_status kiln_wasi_create(const kiln_wasi_options *opts, kiln_wasi **out) {
  *out = NULL;
  kiln_wasi_options defaults;
  kiln_wasi_options_init(&defaults);
  const kiln_wasi_options *o = opts ? opts : &defaults;
  int std_fds[3] = {o->stdin_fd, o->stdout_fd, o->stderr_fd};
  if (!std_fds[0] && !std_fds[1] && !std_fds[2]) { /* not set: defaults */
    std_fds[1] = 1;
    std_fds[2] = 2;
  }
  if (o->preopen_count < 0 || (o->preopen_count > 0 && !o->preopens) ||
      (uint64_t)o->preopen_count > WASI_FD_MAX - 3)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "bad preopen list (%d entries)", o->preopen_count);

  kiln_wasi *w = calloc(1, sizeof *w);
  if (!w)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  kiln_status s = copy_strings(o->argv, o->argc, "argv", false, &w->argv,
                               &w->argv_buf_size);
  if (!s) {
    w->argc = (uint32_t)(o->argc > 0 ? o->argc : 0);
    s = copy_strings(o->env, o->envc, "env", true, &w->env, &w->env_buf_size);
    if (!s) w->envc = (uint32_t)(o->envc > 0 ? o->envc : 0);
  }
  if (s) {
    kiln_wasi_release(w);
    return s;
  }

  w->fd_cap = 3 + (uint32_t)o->preopen_count + 13;
  w->fds = calloc(w->fd_cap, sizeof *w->fds);
  if (!w->fds) {
    kiln_wasi_release(w);
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  for (uint32_t i = 0; i < w->fd_cap; i++) w->fds[i].host_fd = -1;
  for (uint32_t i = 0; i < 3 && !s; i++) s = add_stdio(w, i, std_fds[i]);
  for (int i = 0; i < o->preopen_count && !s; i++) {
    const kiln_wasi_preopen *p = &o->preopens[i];
    if (!p->host_path) {
      s = kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                           "preopen %d has no host path", i);
      break;
    }
    const char *guest = p->guest_path ? p->guest_path : p->host_path;
    int fd = open(p->host_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      s = kiln_status_from_errno(errno, "preopening directory '%s'",
                                 p->host_path);
      break;
    }
    kiln_wasi_fd *e = &w->fds[3 + i];
    e->host_fd = fd;
    e->filetype = WASI_FILETYPE_DIRECTORY;
    e->rights_base = WASI_RIGHTS_DIRECTORY;
    e->rights_inheriting = WASI_RIGHTS_DIRECTORY_INHERITING;
    e->preopen_name = strdup(guest);
    e->preopen_name_len = strlen(guest);
    if (!e->preopen_name)
      s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  if (s) {
    kiln_wasi_release(w);
    return s;
  }
  *out = w;
  return KILN_OK;
}

void kiln_wasi_release(kiln_wasi *w) {
  if (!w) return;
  if (w->fds)
    for (uint32_t i = 0; i < w->fd_cap; i++) kiln_wasi_fd_free(&w->fds[i]);
  free(w->fds);
  free_strings(w->argv, w->argc);
  free_strings(w->env, w->envc);
  free(w);
}

/* ---- Arguments and environment ------------------------------------------- */

/* Write n pointers at ptrs_off and the NUL-terminated strings at buf_off. */
static uint32_t put_strings(kiln_memory *m, char **v, uint32_t n,
                            uint64_t buf_size, uint32_t ptrs_off,
                            uint32_t buf_off) {
  uint8_t *ptrs = kiln_wasi_mem(m, ptrs_off, (uint64_t)n * 4);
  uint8_t *buf = kiln_wasi_mem(m, buf_off, buf_size);
  if (!ptrs || !buf) return WASI_EFAULT;
  uint64_t at = 0;
  for (uint32_t i = 0; i < n; i++) {
    size_t len = strlen(v[i]) + 1;
    kiln_wasi_st32(ptrs + 4 * (uint64_t)i, (uint32_t)(buf_off + at));
    memcpy(buf + at, v[i], len);
    at += len;
  }
  return WASI_ESUCCESS;
}

static uint32_t put_sizes(kiln_memory *m, uint32_t n, uint64_t size,
                          uint32_t count_out, uint32_t size_out) {
  uint8_t *a = kiln_wasi_mem(m, count_out, 4);
  uint8_t *b = kiln_wasi_mem(m, size_out, 4);
  if (!a || !b) return WASI_EFAULT;
  kiln_wasi_st32(a, n);
  kiln_wasi_st32(b, (uint32_t)size);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_args_get(kiln_wasi *w, kiln_memory *m, uint32_t argv,
                               uint32_t buf) {
  return put_strings(m, w->argv, w->argc, w->argv_buf_size, argv, buf);
}

uint32_t kiln_wasi_p1_args_sizes_get(kiln_wasi *w, kiln_memory *m,
                                     uint32_t argc_out, uint32_t size_out) {
  return put_sizes(m, w->argc, w->argv_buf_size, argc_out, size_out);
}

uint32_t kiln_wasi_p1_environ_get(kiln_wasi *w, kiln_memory *m, uint32_t env,
                                  uint32_t buf) {
  return put_strings(m, w->env, w->envc, w->env_buf_size, env, buf);
}

uint32_t kiln_wasi_p1_environ_sizes_get(kiln_wasi *w, kiln_memory *m,
                                        uint32_t count_out, uint32_t size_out) {
  return put_sizes(m, w->envc, w->env_buf_size, count_out, size_out);
}

/* ---- Clocks, randomness, scheduling -------------------------------------- */

static bool host_clock(uint32_t id, clockid_t *out) {
  switch (id) {
    case WASI_CLOCK_REALTIME: *out = CLOCK_REALTIME; return true;
    case WASI_CLOCK_MONOTONIC: *out = CLOCK_MONOTONIC; return true;
    case WASI_CLOCK_PROCESS_CPUTIME:
      *out = CLOCK_PROCESS_CPUTIME_ID;
      return true;
    case WASI_CLOCK_THREAD_CPUTIME: *out = CLOCK_THREAD_CPUTIME_ID; return true;
    default: return false;
  }
}

static uint64_t ts_ns(const struct timespec *ts) {
  return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

uint32_t kiln_wasi_p1_clock_res_get(kiln_wasi *w, kiln_memory *m, uint32_t id,
                                    uint32_t out) {
  clockid_t cid;
  struct timespec ts;
  if (!host_clock(id, &cid)) return WASI_EINVAL;
  if (clock_getres(cid, &ts) != 0) return kiln_wasi_errno(errno);
  return kiln_wasi_put64(m, out, ts_ns(&ts));
}

uint32_t kiln_wasi_p1_clock_time_get(kiln_wasi *w, kiln_memory *m, uint32_t id,
                                     uint64_t precision, uint32_t out) {
  clockid_t cid;
  struct timespec ts;
  if (!host_clock(id, &cid)) return WASI_EINVAL;
  if (clock_gettime(cid, &ts) != 0) return kiln_wasi_errno(errno);
  return kiln_wasi_put64(m, out, ts_ns(&ts));
}

uint32_t kiln_wasi_p1_random_get(kiln_wasi *w, kiln_memory *m, uint32_t buf,
                                 uint32_t len) {
  uint8_t *p = kiln_wasi_mem(m, buf, len);
  if (!p) return WASI_EFAULT;
  kiln_memory_prepare_write(m, p, len);   /* the kernel writes: memory.h */
  /* getrandom returns at most 32 MiB per call for large requests. */
  for (uint32_t done = 0; done < len;) {
    ssize_t n = getrandom(p + done, len - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return kiln_wasi_errno(errno);
    }
    done += (uint32_t)n;
  }
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_sched_yield(kiln_wasi *w, kiln_memory *m) {
  sched_yield();
  return WASI_ESUCCESS;
}

/* Raising a signal in the guest has no meaning for a Wasm instance (and was
 * dropped after preview1): refuse it. */
uint32_t kiln_wasi_p1_proc_raise(kiln_wasi *w, kiln_memory *m, uint32_t sig) {
  return WASI_ENOSYS;
}

/* ---- Sockets ------------------------------------------------------------- */
/* A guest cannot create sockets in preview1; it may only be handed one (as a
 * standard stream, say). On such descriptors these work; on anything else
 * they fail with NOTSOCK, and on a closed descriptor with BADF. */

static uint32_t socket_fd(kiln_wasi *w, uint32_t fd, uint64_t need,
                          kiln_wasi_fd **out) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, 0, &e);
  if (err) return err;
  if (e->filetype != WASI_FILETYPE_SOCKET_STREAM &&
      e->filetype != WASI_FILETYPE_SOCKET_DGRAM)
    return WASI_ENOTSOCK;
  if ((e->rights_base & need) != need) return WASI_ENOTCAPABLE;
  *out = e;
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_sock_accept(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t flags, uint32_t fd_out) {
  kiln_wasi_fd *e;
  uint32_t err = socket_fd(w, fd, WASI_RIGHT_SOCK_ACCEPT, &e);
  if (err) return err;
  if (flags & ~(uint32_t)WASI_FDFLAG_NONBLOCK) return WASI_EINVAL;
  if (!kiln_wasi_mem(m, fd_out, 4)) return WASI_EFAULT;
  int nfd = accept4(
      e->host_fd, NULL, NULL,
      SOCK_CLOEXEC | ((flags & WASI_FDFLAG_NONBLOCK) ? SOCK_NONBLOCK : 0));
  if (nfd < 0) return kiln_wasi_errno(errno);
  uint8_t type = kiln_wasi_filetype_of(nfd);
  uint32_t gfd;
  err = kiln_wasi_fd_insert(w, nfd, type, kiln_wasi_rights_for(type), 0, &gfd);
  if (err) return err;
  return kiln_wasi_put32(m, fd_out, gfd);
}

uint32_t kiln_wasi_p1_sock_recv(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t ri_data, uint32_t ri_data_len,
                                uint32_t ri_flags, uint32_t ro_datalen_out,
                                uint32_t ro_flags_out) {
  kiln_wasi_fd *e;
  uint32_t err = socket_fd(w, fd, WASI_RIGHT_FD_READ, &e);
  if (err) return err;
  if (ri_flags & ~(uint32_t)(WASI_RIFLAG_RECV_PEEK | WASI_RIFLAG_RECV_WAITALL))
    return WASI_EINVAL;
  uint8_t *len_p = kiln_wasi_mem(m, ro_datalen_out, 4);
  uint8_t *flags_p = kiln_wasi_mem(m, ro_flags_out, 2);
  if (!len_p || !flags_p) return WASI_EFAULT;
  struct iovec iov[WASI_IOV_MAX];
  int n;
  err = kiln_wasi_iovecs(m, ri_data, ri_data_len, iov, &n);
  if (err) return err;
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
  int fl = ((ri_flags & WASI_RIFLAG_RECV_PEEK) ? MSG_PEEK : 0) |
           ((ri_flags & WASI_RIFLAG_RECV_WAITALL) ? MSG_WAITALL : 0);
  ssize_t got = recvmsg(e->host_fd, &msg, fl);
  if (got < 0) return kiln_wasi_errno(errno);
  kiln_wasi_st32(len_p, (uint32_t)got);
  kiln_wasi_st16(flags_p, (msg.msg_flags & MSG_TRUNC)
                              ? WASI_ROFLAG_RECV_DATA_TRUNCATED
                              : 0);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_sock_send(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t si_data, uint32_t si_data_len,
                                uint32_t si_flags, uint32_t so_datalen_out) {
  kiln_wasi_fd *e;
  uint32_t err = socket_fd(w, fd, WASI_RIGHT_FD_WRITE, &e);
  if (err) return err;
  if (si_flags) return WASI_EINVAL; /* no siflags are defined */
  uint8_t *len_p = kiln_wasi_mem(m, so_datalen_out, 4);
  if (!len_p) return WASI_EFAULT;
  struct iovec iov[WASI_IOV_MAX];
  int n;
  err = kiln_wasi_iovecs(m, si_data, si_data_len, iov, &n);
  if (err) return err;
  struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
  ssize_t put = sendmsg(e->host_fd, &msg, MSG_NOSIGNAL);
  if (put < 0) return kiln_wasi_errno(errno);
  kiln_wasi_st32(len_p, (uint32_t)put);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_sock_shutdown(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t how) {
  kiln_wasi_fd *e;
  uint32_t err = socket_fd(w, fd, WASI_RIGHT_SOCK_SHUTDOWN, &e);
  if (err) return err;
  int h;
  switch (how) {
    case WASI_SDFLAG_RD: h = SHUT_RD; break;
    case WASI_SDFLAG_WR: h = SHUT_WR; break;
    case WASI_SDFLAG_RD | WASI_SDFLAG_WR: h = SHUT_RDWR; break;
    default: return WASI_EINVAL;
  }
  if (shutdown(e->host_fd, h) != 0) return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

/* ---- Binding to the engine ----------------------------------------------- */

typedef uint32_t u32;
typedef uint64_t u64;

/* A blocking call (read, write, poll, sleep) is interrupted by the engine's
 * deadline signal, which repeats every millisecond but only stops the guest
 * when it lands in guest code. Handing EINTR back alone livelocks a guest
 * that retries at once (sleep loops, read loops): every signal then lands in
 * the host again. So a call that comes back INTR after the guest call's
 * deadline ends the guest call with the TIMEOUT trap right here. */
static u32 checked(kiln_caller *c, u32 err) {
  if (err == WASI_EINTR && kiln_caller_deadline_passed(c))
    kiln_caller_trap(c, kiln_make_trap(KILN_TRAP_TIMEOUT, NULL));
  return err;
}

#define W_ ((kiln_wasi *)kiln_caller_user(c))
#define M_ kiln_caller_memory(c, 0)
#define HOST(name, ...) static u32 host_##name(kiln_caller *c, __VA_ARGS__)
#define HOST0(name) static u32 host_##name(kiln_caller *c)
#define CALL(name, ...) \
  return checked(c, kiln_wasi_p1_##name(W_, M_, __VA_ARGS__))

HOST(args_get, u32 a, u32 b) { CALL(args_get, a, b); }
HOST(args_sizes_get, u32 a, u32 b) { CALL(args_sizes_get, a, b); }
HOST(environ_get, u32 a, u32 b) { CALL(environ_get, a, b); }
HOST(environ_sizes_get, u32 a, u32 b) { CALL(environ_sizes_get, a, b); }
HOST(clock_res_get, u32 a, u32 b) { CALL(clock_res_get, a, b); }
HOST(clock_time_get, u32 a, u64 b, u32 d) { CALL(clock_time_get, a, b, d); }
HOST(random_get, u32 a, u32 b) { CALL(random_get, a, b); }
HOST0(sched_yield) { return kiln_wasi_p1_sched_yield(W_, M_); }
HOST(proc_raise, u32 a) { CALL(proc_raise, a); }
HOST(fd_advise, u32 a, u64 b, u64 d, u32 e) { CALL(fd_advise, a, b, d, e); }
HOST(fd_allocate, u32 a, u64 b, u64 d) { CALL(fd_allocate, a, b, d); }
HOST(fd_close, u32 a) { CALL(fd_close, a); }
HOST(fd_datasync, u32 a) { CALL(fd_datasync, a); }
HOST(fd_fdstat_get, u32 a, u32 b) { CALL(fd_fdstat_get, a, b); }
HOST(fd_fdstat_set_flags, u32 a, u32 b) { CALL(fd_fdstat_set_flags, a, b); }
HOST(fd_fdstat_set_rights, u32 a, u64 b, u64 d) {
  CALL(fd_fdstat_set_rights, a, b, d);
}
HOST(fd_filestat_get, u32 a, u32 b) { CALL(fd_filestat_get, a, b); }
HOST(fd_filestat_set_size, u32 a, u64 b) { CALL(fd_filestat_set_size, a, b); }
HOST(fd_filestat_set_times, u32 a, u64 b, u64 d, u32 e) {
  CALL(fd_filestat_set_times, a, b, d, e);
}
HOST(fd_pread, u32 a, u32 b, u32 d, u64 e, u32 f) {
  CALL(fd_pread, a, b, d, e, f);
}
HOST(fd_prestat_get, u32 a, u32 b) { CALL(fd_prestat_get, a, b); }
HOST(fd_prestat_dir_name, u32 a, u32 b, u32 d) {
  CALL(fd_prestat_dir_name, a, b, d);
}
HOST(fd_pwrite, u32 a, u32 b, u32 d, u64 e, u32 f) {
  CALL(fd_pwrite, a, b, d, e, f);
}
HOST(fd_read, u32 a, u32 b, u32 d, u32 e) { CALL(fd_read, a, b, d, e); }
HOST(fd_readdir, u32 a, u32 b, u32 d, u64 e, u32 f) {
  CALL(fd_readdir, a, b, d, e, f);
}
HOST(fd_renumber, u32 a, u32 b) { CALL(fd_renumber, a, b); }
HOST(fd_seek, u32 a, u64 b, u32 d, u32 e) { CALL(fd_seek, a, b, d, e); }
HOST(fd_sync, u32 a) { CALL(fd_sync, a); }
HOST(fd_tell, u32 a, u32 b) { CALL(fd_tell, a, b); }
HOST(fd_write, u32 a, u32 b, u32 d, u32 e) { CALL(fd_write, a, b, d, e); }
HOST(path_create_directory, u32 a, u32 b, u32 d) {
  CALL(path_create_directory, a, b, d);
}
HOST(path_filestat_get, u32 a, u32 b, u32 d, u32 e, u32 f) {
  CALL(path_filestat_get, a, b, d, e, f);
}
HOST(path_filestat_set_times, u32 a, u32 b, u32 d, u32 e, u64 f, u64 g, u32 h) {
  CALL(path_filestat_set_times, a, b, d, e, f, g, h);
}
HOST(path_link, u32 a, u32 b, u32 d, u32 e, u32 f, u32 g, u32 h) {
  CALL(path_link, a, b, d, e, f, g, h);
}
HOST(path_open, u32 a, u32 b, u32 d, u32 e, u32 f, u64 g, u64 h, u32 i, u32 j) {
  CALL(path_open, a, b, d, e, f, g, h, i, j);
}
HOST(path_readlink, u32 a, u32 b, u32 d, u32 e, u32 f, u32 g) {
  CALL(path_readlink, a, b, d, e, f, g);
}
HOST(path_remove_directory, u32 a, u32 b, u32 d) {
  CALL(path_remove_directory, a, b, d);
}
HOST(path_rename, u32 a, u32 b, u32 d, u32 e, u32 f, u32 g) {
  CALL(path_rename, a, b, d, e, f, g);
}
HOST(path_symlink, u32 a, u32 b, u32 d, u32 e, u32 f) {
  CALL(path_symlink, a, b, d, e, f);
}
HOST(path_unlink_file, u32 a, u32 b, u32 d) { CALL(path_unlink_file, a, b, d); }
HOST(poll_oneoff, u32 a, u32 b, u32 d, u32 e) { CALL(poll_oneoff, a, b, d, e); }
HOST(sock_accept, u32 a, u32 b, u32 d) { CALL(sock_accept, a, b, d); }
HOST(sock_recv, u32 a, u32 b, u32 d, u32 e, u32 f, u32 g) {
  CALL(sock_recv, a, b, d, e, f, g);
}
HOST(sock_send, u32 a, u32 b, u32 d, u32 e, u32 f) {
  CALL(sock_send, a, b, d, e, f);
}
HOST(sock_shutdown, u32 a, u32 b) { CALL(sock_shutdown, a, b); }

/* proc_exit never returns: it abandons the guest call with an EXIT status
 * (nothing is held here, as kiln_caller_trap requires). */
static void host_proc_exit(kiln_caller *c, u32 code) {
  kiln_caller_trap(c, kiln_make_exit((int)code));
}

#undef W_
#undef M_

/* Parameter lists by signature: 'i' = i32, 'I' = i64. */
typedef struct host_export {
  const char *name;
  void *fn;
  const char *sig;
} host_export;

#define E(name, sig) \
  { #name, (void *)host_##name, sig }
static const host_export kExports[] = {
    E(args_get, "ii"),
    E(args_sizes_get, "ii"),
    E(environ_get, "ii"),
    E(environ_sizes_get, "ii"),
    E(clock_res_get, "ii"),
    E(clock_time_get, "iIi"),
    E(fd_advise, "iIIi"),
    E(fd_allocate, "iII"),
    E(fd_close, "i"),
    E(fd_datasync, "i"),
    E(fd_fdstat_get, "ii"),
    E(fd_fdstat_set_flags, "ii"),
    E(fd_fdstat_set_rights, "iII"),
    E(fd_filestat_get, "ii"),
    E(fd_filestat_set_size, "iI"),
    E(fd_filestat_set_times, "iIIi"),
    E(fd_pread, "iiiIi"),
    E(fd_prestat_get, "ii"),
    E(fd_prestat_dir_name, "iii"),
    E(fd_pwrite, "iiiIi"),
    E(fd_read, "iiii"),
    E(fd_readdir, "iiiIi"),
    E(fd_renumber, "ii"),
    E(fd_seek, "iIii"),
    E(fd_sync, "i"),
    E(fd_tell, "ii"),
    E(fd_write, "iiii"),
    E(path_create_directory, "iii"),
    E(path_filestat_get, "iiiii"),
    E(path_filestat_set_times, "iiiiIIi"),
    E(path_link, "iiiiiii"),
    E(path_open, "iiiiiIIii"),
    E(path_readlink, "iiiiii"),
    E(path_remove_directory, "iii"),
    E(path_rename, "iiiiii"),
    E(path_symlink, "iiiii"),
    E(path_unlink_file, "iii"),
    E(poll_oneoff, "iiii"),
    E(proc_exit, "i"),
    E(proc_raise, "i"),
    E(random_get, "ii"),
    E(sched_yield, ""),
    E(sock_accept, "iii"),
    E(sock_recv, "iiiiii"),
    E(sock_send, "iiiii"),
    E(sock_shutdown, "ii"),
};
#undef E

#define MAX_PARAMS 9
/* Static so the type arrays outlive the linker whatever it keeps. */
static const kiln_valtype kParamsI32[MAX_PARAMS] = {
    KILN_I32, KILN_I32, KILN_I32, KILN_I32, KILN_I32,
    KILN_I32, KILN_I32, KILN_I32, KILN_I32};
static const kiln_valtype kResultI32[1] = {KILN_I32};

/* Parameter arrays for the signatures that mix in i64s, one per export. */
static kiln_valtype gParams[sizeof kExports / sizeof kExports[0]][MAX_PARAMS];

static void fill_params(void) {
  for (size_t i = 0; i < sizeof kExports / sizeof kExports[0]; i++)
    for (size_t j = 0; kExports[i].sig[j] && j < MAX_PARAMS; j++)
      gParams[i][j] = kExports[i].sig[j] == 'I' ? KILN_I64 : KILN_I32;
}

kiln_status kiln_wasi_define(kiln_wasi *w, kiln_linker *l) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, fill_params);
  for (size_t i = 0; i < sizeof kExports / sizeof kExports[0]; i++) {
    const host_export *x = &kExports[i];
    size_t n = strlen(x->sig);
    bool all_i32 = !strchr(x->sig, 'I');
    bool is_exit = strcmp(x->name, "proc_exit") == 0;
    kiln_host_func f = {
        .module = "wasi_snapshot_preview1",
        .name = x->name,
        .type = {.param_count = (uint32_t)n,
                 .result_count = is_exit ? 0 : 1,
                 .params = all_i32 ? kParamsI32 : gParams[i],
                 /* never NULL, even with no result: some linkers copy
                  * the arrays with memcpy, which must not see NULL */
                 .results = kResultI32},
        .native = x->fn,
        .generic = NULL,
        .user = w,
    };
    KILN_RETURN_IF_ERROR(kiln_linker_define_func(l, &f));
  }
  return KILN_OK;
}
