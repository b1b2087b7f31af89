/* WASI preview1: poll_oneoff.
 *
 * Clock subscriptions (realtime or monotonic, relative or absolute) become
 * the timeout of one ppoll(2) over the descriptor subscriptions. Regular
 * files and directories are always ready (as POSIX poll says of them), with
 * nbytes = bytes left to read; pipes, terminals and sockets are asked with
 * ppoll. A subscription on a bad descriptor completes at once with its
 * error. The call returns once at least one event is ready; EINTR (a
 * signal, e.g. a deadline) returns INTR to the guest. CPU-time clocks do not
 * advance while we sleep, so subscribing to them is INVAL (per event). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "wasi/wasi_internal.h"

typedef struct poll_sub {
  uint64_t userdata;
  uint8_t type;
  /* clocks */
  clockid_t clock;
  uint64_t deadline; /* absolute, in `clock`'s ns */
  /* descriptors */
  int pfd_index; /* into the pollfd array, -1 if none */
  /* result */
  bool ready;
  uint16_t error;
  uint64_t nbytes;
  uint16_t flags;
} poll_sub;

static uint64_t now_ns(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void set_ready(poll_sub *s, uint16_t error, uint64_t nbytes,
                      uint16_t flags) {
  s->ready = true;
  s->error = error;
  s->nbytes = nbytes;
  s->flags = flags;
}

/* A regular file or directory: ready now. */
static void file_ready(poll_sub *s, int fd, uint8_t filetype) {
  uint64_t left = 0;
  struct stat st;
  if (s->type == WASI_EVENTTYPE_FD_READ &&
      filetype == WASI_FILETYPE_REGULAR_FILE && fstat(fd, &st) == 0) {
    off_t pos = lseek(fd, 0, SEEK_CUR);
    if (pos >= 0 && st.st_size > pos) left = (uint64_t)(st.st_size - pos);
  }
  set_ready(s, WASI_ESUCCESS, left, 0);
}

uint32_t kiln_wasi_p1_poll_oneoff(kiln_wasi *w, kiln_memory *m, uint32_t in,
                                  uint32_t out, uint32_t nsubscriptions,
                                  uint32_t nevents_out) {
  if (nsubscriptions == 0) return WASI_EINVAL;
  const uint8_t *src =
      kiln_wasi_mem(m, in, (uint64_t)nsubscriptions * WASI_SUBSCRIPTION_SIZE);
  uint8_t *dst =
      kiln_wasi_mem(m, out, (uint64_t)nsubscriptions * WASI_EVENT_SIZE);
  uint8_t *nev = kiln_wasi_mem(m, nevents_out, 4);
  if (!src || !dst || !nev) return WASI_EFAULT;
  if (nsubscriptions > WASI_POLL_MAX) return WASI_EINVAL;

  uint32_t n = nsubscriptions;
  poll_sub *subs = calloc(n, sizeof *subs);
  struct pollfd *pfds = calloc(n, sizeof *pfds);
  if (!subs || !pfds) {
    free(subs);
    free(pfds);
    return WASI_ENOMEM;
  }
  uint32_t err = WASI_ESUCCESS;
  nfds_t npfd = 0;
  bool any_ready = false, any_clock = false;
  /* Copy each subscription out of guest memory once. */
  for (uint32_t i = 0; i < n && !err; i++) {
    const uint8_t *p = src + (uint64_t)i * WASI_SUBSCRIPTION_SIZE;
    poll_sub *s = &subs[i];
    s->userdata = kiln_wasi_ld64(p);
    s->type = p[8];
    s->pfd_index = -1;
    switch (s->type) {
      case WASI_EVENTTYPE_CLOCK: {
        uint32_t id = kiln_wasi_ld32(p + 16);
        uint64_t timeout = kiln_wasi_ld64(p + 24);
        uint16_t flags = kiln_wasi_ld16(p + 40);
        if (id == WASI_CLOCK_REALTIME)
          s->clock = CLOCK_REALTIME;
        else if (id == WASI_CLOCK_MONOTONIC)
          s->clock = CLOCK_MONOTONIC;
        else {
          set_ready(s, WASI_EINVAL, 0, 0);
          any_ready = true;
          break;
        }
        if (flags & WASI_SUBCLOCKFLAG_ABSTIME) {
          s->deadline = timeout;
        } else {
          uint64_t now = now_ns(s->clock);
          s->deadline = timeout > UINT64_MAX - now ? UINT64_MAX : now + timeout;
        }
        any_clock = true;
        break;
      }
      case WASI_EVENTTYPE_FD_READ:
      case WASI_EVENTTYPE_FD_WRITE: {
        uint32_t fd = kiln_wasi_ld32(p + 16);
        kiln_wasi_fd *e;
        uint32_t ferr = kiln_wasi_fd_get(w, fd, 0, &e);
        if (ferr) {
          set_ready(s, (uint16_t)ferr, 0, 0);
          any_ready = true;
        } else if (e->filetype == WASI_FILETYPE_REGULAR_FILE ||
                   e->filetype == WASI_FILETYPE_DIRECTORY) {
          file_ready(s, e->host_fd, e->filetype);
          any_ready = true;
        } else {
          s->pfd_index = (int)npfd;
          pfds[npfd].fd = e->host_fd;
          pfds[npfd].events =
              s->type == WASI_EVENTTYPE_FD_READ ? POLLIN : POLLOUT;
          npfd++;
        }
        break;
      }
      default: err = WASI_EINVAL; break;
    }
  }

  while (!err) {
    /* Wait for the nearest clock deadline, or not at all if something is
     * ready already. */
    struct timespec tmo, *tp = NULL;
    if (any_ready) {
      tmo = (struct timespec){0, 0};
      tp = &tmo;
    } else if (any_clock) {
      uint64_t wait = UINT64_MAX;
      for (uint32_t i = 0; i < n; i++) {
        if (subs[i].type != WASI_EVENTTYPE_CLOCK || subs[i].ready) continue;
        uint64_t now = now_ns(subs[i].clock);
        uint64_t left = subs[i].deadline > now ? subs[i].deadline - now : 0;
        if (left < wait) wait = left;
      }
      tmo.tv_sec = (time_t)(wait / 1000000000ull);
      tmo.tv_nsec = (long)(wait % 1000000000ull);
      tp = &tmo;
    }
    int r = ppoll(npfd ? pfds : NULL, npfd, tp, NULL);
    if (r < 0) {
      err = errno == EINTR ? WASI_EINTR : kiln_wasi_errno(errno);
      break;
    }
    for (uint32_t i = 0; i < n; i++) {
      poll_sub *s = &subs[i];
      if (s->ready) continue;
      if (s->type == WASI_EVENTTYPE_CLOCK) {
        if (now_ns(s->clock) >= s->deadline) {
          set_ready(s, WASI_ESUCCESS, 0, 0);
          any_ready = true;
        }
        continue;
      }
      if (s->pfd_index < 0) continue;
      short re = pfds[s->pfd_index].revents;
      if (!re) continue;
      any_ready = true;
      if (re & POLLNVAL) {
        set_ready(s, WASI_EBADF, 0, 0);
      } else if ((re & POLLERR) && !(re & (POLLIN | POLLOUT))) {
        set_ready(s, WASI_EIO, 0, 0);
      } else {
        int avail = 0;
        if (s->type == WASI_EVENTTYPE_FD_READ &&
            ioctl(pfds[s->pfd_index].fd, FIONREAD, &avail) != 0)
          avail = 0;
        set_ready(s, WASI_ESUCCESS, avail > 0 ? (uint64_t)avail : 0,
                  (re & POLLHUP) ? WASI_EVENTRWFLAG_HANGUP : 0);
      }
    }
    if (any_ready) break;
  }

  if (!err) {
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
      if (!subs[i].ready) continue;
      uint8_t *ev = dst + (uint64_t)k * WASI_EVENT_SIZE;
      memset(ev, 0, WASI_EVENT_SIZE);
      kiln_wasi_st64(ev, subs[i].userdata);
      kiln_wasi_st16(ev + 8, subs[i].error);
      ev[10] = subs[i].type;
      if (subs[i].type != WASI_EVENTTYPE_CLOCK) {
        kiln_wasi_st64(ev + 16, subs[i].nbytes);
        kiln_wasi_st16(ev + 24, subs[i].flags);
      }
      k++;
    }
    kiln_wasi_st32(nev, k);
  }
  free(subs);
  free(pfds);
  return err;
}
