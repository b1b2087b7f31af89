/* WASI preview1: paths and the sandbox.
 *
 * A guest path is always relative to a directory descriptor and must never
 * lead outside the tree below it. Two resolvers, same contract:
 *
 *  - openat2(dirfd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS): the
 *    kernel refuses absolute paths, ".." above dirfd and symlinks that leave
 *    the tree (EXDEV, which becomes NOTCAPABLE). Linux >= 5.6.
 *  - Where openat2 is missing (ENOSYS: old kernels, some seccomp filters), a
 *    walk: every component is opened with O_NOFOLLOW relative to the
 *    directory held for the previous one; symlinks are read with readlinkat
 *    and spliced into the rest of the path (absolute targets refused); ".."
 *    pops a stack of held directories and refuses to pop the starting one.
 *    The kernel never follows a link or a ".." for us, and every step is
 *    relative to a descriptor we hold, so renaming things under our feet
 *    cannot move the walk outside either.
 *
 * Operations on a final name (mkdir, unlink, rmdir, rename, symlink, link,
 * readlink, stat/utimes without following) resolve the parent beneath the
 * preopen and then call the *at function on the last name, which the kernel
 * does not follow. A trailing slash makes Linux follow a final symlink, so
 * those cases go through the full (beneath) resolution instead. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "wasi/wasi_internal.h"

#define MAX_SYMLINKS 40 /* as Linux's MAXSYMLINKS */

/* 0: not tried yet, 1: works, -1: missing (ENOSYS). */
static atomic_int g_openat2_state;
static atomic_bool g_force_walk;

void kiln_wasi_force_walk(bool on) { atomic_store(&g_force_walk, on); }

/* ---- The walk (fallback) ------------------------------------------------- */

typedef struct dir_stack {
  int *fds; /* fds[0] is the caller's dirfd, never closed here */
  size_t n, cap;
} dir_stack;

static void stack_clear(dir_stack *s) {
  for (size_t i = 1; i < s->n; i++) close(s->fds[i]);
  free(s->fds);
}

static bool stack_push(dir_stack *s, int fd) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 16;
    int *fds = realloc(s->fds, cap * sizeof *fds);
    if (!fds) return false;
    s->fds = fds;
    s->cap = cap;
  }
  s->fds[s->n++] = fd;
  return true;
}

/* rest := target + tail. tail is what followed the link's name: "" (the
 * link was the last component), "/" (it had a trailing slash, so the target
 * must be a directory) or "/more/components". */
static uint32_t splice_link(char **rest, const char *target, const char *tail) {
  if (target[0] == '/') return WASI_ENOTCAPABLE; /* absolute: leaves the tree */
  size_t a = strlen(target), b = strlen(tail);
  if (a + b + 1 > (size_t)MAX_SYMLINKS * (WASI_PATH_MAX + 1))
    return WASI_ENAMETOOLONG;
  char *s = malloc(a + b + 1);
  if (!s) return WASI_ENOMEM;
  memcpy(s, target, a);
  memcpy(s + a, tail, b + 1);
  free(*rest);
  *rest = s;
  return WASI_ESUCCESS;
}

/* readlinkat into a fresh string; false if name is not a symlink. */
static bool read_link(int dirfd, const char *name, char **out, int *err) {
  char buf[PATH_MAX + 1];
  ssize_t n = readlinkat(dirfd, name, buf, sizeof buf - 1);
  if (n < 0) {
    *err = errno;
    return false;
  }
  buf[n] = 0;
  *out = strdup(buf);
  if (!*out) {
    *err = ENOMEM;
    return false;
  }
  return true;
}

static uint32_t walk_open(int dirfd, const char *path, int flags, unsigned mode,
                          bool follow, int *out_fd) {
  if (path[0] == '/') return WASI_ENOTCAPABLE;
  if (path[0] == 0) return WASI_ENOENT;
  char *rest = strdup(path);
  if (!rest) return WASI_ENOMEM;
  dir_stack st = {0};
  uint32_t err = WASI_ESUCCESS;
  int links = 0;
  if (!stack_push(&st, dirfd)) {
    free(rest);
    return WASI_ENOMEM;
  }
  size_t pos = 0;
  for (;;) {
    while (rest[pos] == '/') pos++;
    /* Next component [pos, end). */
    size_t end = pos;
    while (rest[end] && rest[end] != '/') end++;
    size_t after = end;
    while (rest[after] == '/') after++;
    bool last = rest[after] == 0;
    bool slash = last && after > end; /* final component had a '/' after it */
    char comp[NAME_MAX + 2];
    size_t len = end - pos;
    if (len > NAME_MAX) {
      err = WASI_ENAMETOOLONG;
      break;
    }
    memcpy(comp, rest + pos, len);
    comp[len] = 0;
    int top = st.fds[st.n - 1];
    if (len == 0 || strcmp(comp, ".") == 0 || strcmp(comp, "..") == 0) {
      if (strcmp(comp, "..") == 0) {
        if (st.n == 1) {
          err = WASI_ENOTCAPABLE; /* ".." above the starting directory */
          break;
        }
        close(st.fds[--st.n]);
        top = st.fds[st.n - 1];
      }
      if (!last) {
        pos = after;
        continue;
      }
      /* The path ends at a directory we hold: open it as ".". */
      int fd = openat(top, ".", flags | O_CLOEXEC, mode);
      if (fd < 0)
        err = kiln_wasi_errno(errno);
      else
        *out_fd = fd;
      break;
    }
    if (!last || slash) {
      /* An intermediate component (or one that must be a directory): hold
       * it as O_PATH without following. */
      int fd = openat(top, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd >= 0) {
        if (!stack_push(&st, fd)) {
          close(fd);
          err = WASI_ENOMEM;
          break;
        }
        if (!last) {
          pos = after;
          continue;
        }
        /* "dir/" at the end: open the held directory itself. */
        int f2 = openat(fd, ".", flags | O_CLOEXEC, mode);
        if (f2 < 0)
          err = kiln_wasi_errno(errno);
        else
          *out_fd = f2;
        break;
      }
      int e = errno;
      char *target = NULL;
      int lerr = 0;
      if ((e == ENOTDIR || e == ELOOP) &&
          read_link(top, comp, &target, &lerr)) {
        if (++links > MAX_SYMLINKS)
          err = WASI_ELOOP;
        else
          err = splice_link(&rest, target, rest + end);
        free(target);
        if (err) break;
        pos = 0;
        continue;
      }
      if (e == ENOENT && last && (flags & O_CREAT)) e = EISDIR;
      err = kiln_wasi_errno(e);
      break;
    }
    /* The final component. */
    int fd = openat(top, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd >= 0 && (flags & O_PATH) && follow) {
      /* O_PATH | O_NOFOLLOW opens a symlink itself: look at what we got. */
      struct stat sb;
      if (fstat(fd, &sb) == 0 && S_ISLNK(sb.st_mode)) {
        close(fd);
        fd = -1;
        errno = ELOOP;
      }
    }
    if (fd >= 0) {
      *out_fd = fd;
      break;
    }
    int e = errno;
    char *target = NULL;
    int lerr = 0;
    if (follow && (e == ELOOP || e == ENOTDIR || e == EMLINK) &&
        read_link(top, comp, &target, &lerr)) {
      if (++links > MAX_SYMLINKS)
        err = WASI_ELOOP;
      else
        err = splice_link(&rest, target, "");
      free(target);
      if (err) break;
      pos = 0;
      continue;
    }
    err = kiln_wasi_errno(e);
    break;
  }
  stack_clear(&st);
  free(rest);
  return err;
}

/* ---- openat2 ------------------------------------------------------------- */

uint32_t kiln_wasi_open_beneath(int dirfd, const char *path, int flags,
                                unsigned mode, bool follow, int *out_fd) {
  *out_fd = -1;
  if (path[0] == '/') return WASI_ENOTCAPABLE;
  if (!follow) flags |= O_NOFOLLOW;
  if (atomic_load(&g_force_walk) || atomic_load(&g_openat2_state) < 0)
    return walk_open(dirfd, path, flags, mode, follow, out_fd);
  struct open_how how = {
      .flags = (uint64_t)(flags | O_CLOEXEC),
      .mode = (flags & O_CREAT) ? mode : 0, /* else openat2 says EINVAL */
      .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  for (int tries = 0;; tries++) {
    long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    if (fd >= 0) {
      atomic_store(&g_openat2_state, 1);
      *out_fd = (int)fd;
      return WASI_ESUCCESS;
    }
    int e = errno;
    if (e == ENOSYS) {
      atomic_store(&g_openat2_state, -1);
      return walk_open(dirfd, path, flags, mode, follow, out_fd);
    }
    /* EAGAIN: a concurrent rename raced with ".." resolution; retry. */
    if (e == EAGAIN && tries < 16) continue;
    if (e == EXDEV) return WASI_ENOTCAPABLE; /* would escape */
    return kiln_wasi_errno(e);
  }
}

/* ---- Parent + last name -------------------------------------------------- */

typedef struct split_path {
  int parent_fd; /* beneath the preopen; owned */
  char *name;    /* last component, trailing slashes kept; owned */
  bool slash;    /* name ends with '/' */
} split_path;

static void split_free(split_path *s) {
  if (s->parent_fd >= 0) close(s->parent_fd);
  free(s->name);
}

/* Resolve everything but the last name of `path` beneath dirfd. A last name
 * of "." or ".." is resolved too (it names a directory we must check), and
 * the operation then applies to "." in it. */
static uint32_t split_resolve(int dirfd, const char *path, split_path *out) {
  out->parent_fd = -1;
  out->name = NULL;
  out->slash = false;
  size_t len = strlen(path);
  if (len == 0) return WASI_ENOENT;
  if (path[0] == '/') return WASI_ENOTCAPABLE;
  size_t end = len;
  while (end > 0 && path[end - 1] == '/') end--;
  size_t start = end;
  while (start > 0 && path[start - 1] != '/') start--;
  out->slash = end < len;
  size_t nlen = end - start;
  bool dots = (nlen == 1 && path[start] == '.') ||
              (nlen == 2 && path[start] == '.' && path[start + 1] == '.');
  char *parent;
  if (dots) {
    parent = strndup(path, end);
    out->name = strdup(".");
    out->slash = false;
  } else {
    parent = start ? strndup(path, start) : strdup(".");
    out->name = strdup(path + start);
  }
  if (!parent || !out->name) {
    free(parent);
    free(out->name);
    out->name = NULL;
    return WASI_ENOMEM;
  }
  uint32_t err = kiln_wasi_open_beneath(dirfd, parent, O_PATH | O_DIRECTORY, 0,
                                        true, &out->parent_fd);
  free(parent);
  if (err) {
    free(out->name);
    out->name = NULL;
  }
  return err;
}

/* Read a guest path and look up the directory descriptor it is relative to,
 * which must have `need`. */
static uint32_t dir_and_path(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                             uint64_t need, uint32_t path, uint32_t path_len,
                             int *out_dirfd, char **out_path) {
  kiln_wasi_fd *e;
  uint32_t err = kiln_wasi_fd_get(w, fd, need, &e);
  if (err) return err;
  if (e->filetype != WASI_FILETYPE_DIRECTORY) return WASI_ENOTDIR;
  if ((err = kiln_wasi_read_path(m, path, path_len, out_path))) return err;
  *out_dirfd = e->host_fd;
  return WASI_ESUCCESS;
}

/* /proc/self/fd/N names the object an O_PATH descriptor holds: the way to
 * apply utimensat/linkat to it without resolving a guest path again. */
static void proc_fd_path(int fd, char buf[64]) {
  snprintf(buf, 64, "/proc/self/fd/%d", fd);
}

/* ---- path_open ----------------------------------------------------------- */

uint32_t kiln_wasi_p1_path_open(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                uint32_t dirflags, uint32_t path,
                                uint32_t path_len, uint32_t oflags,
                                uint64_t base, uint64_t inheriting,
                                uint32_t fdflags, uint32_t fd_out) {
  if (oflags & ~(uint32_t)WASI_OFLAGS_ALL) return WASI_EINVAL;
  if (fdflags & ~(uint32_t)WASI_FDFLAGS_ALL) return WASI_EINVAL;
  if (dirflags & ~(uint32_t)WASI_LOOKUP_SYMLINK_FOLLOW) return WASI_EINVAL;
  uint64_t need = WASI_RIGHT_PATH_OPEN;
  if (oflags & WASI_OFLAG_CREAT) need |= WASI_RIGHT_PATH_CREATE_FILE;
  if (oflags & WASI_OFLAG_TRUNC) need |= WASI_RIGHT_PATH_FILESTAT_SET_SIZE;
  kiln_wasi_fd *d;
  uint32_t err = kiln_wasi_fd_get(w, fd, need, &d);
  if (err) return err;
  if (d->filetype != WASI_FILETYPE_DIRECTORY) return WASI_ENOTDIR;
  if (!kiln_wasi_mem(m, fd_out, 4)) return WASI_EFAULT;
  /* A new descriptor gets at most what its directory may hand down. */
  uint64_t dir_inheriting = d->rights_inheriting;
  int dirfd = d->host_fd; /* d may move once the table grows */
  base &= dir_inheriting;
  inheriting &= dir_inheriting;

  /* The access mode follows the rights that need it. fdatasync works on a
   * read-only descriptor, and directories have that right: leaving it out
   * here lets a directory be opened with its own rights. */
  bool rd = base & (WASI_RIGHT_FD_READ | WASI_RIGHT_FD_READDIR);
  bool wr = base & (WASI_RIGHT_FD_WRITE | WASI_RIGHT_FD_ALLOCATE |
                    WASI_RIGHT_FD_FILESTAT_SET_SIZE);
  int flags = (wr ? (rd ? O_RDWR : O_WRONLY) : O_RDONLY) | O_NOCTTY;
  if (oflags & WASI_OFLAG_CREAT) flags |= O_CREAT;
  if (oflags & WASI_OFLAG_DIRECTORY) flags |= O_DIRECTORY;
  if (oflags & WASI_OFLAG_EXCL) flags |= O_EXCL;
  if (oflags & WASI_OFLAG_TRUNC) flags |= O_TRUNC;
  if (fdflags & WASI_FDFLAG_APPEND) flags |= O_APPEND;
  if (fdflags & WASI_FDFLAG_DSYNC) flags |= O_DSYNC;
  if (fdflags & WASI_FDFLAG_NONBLOCK) flags |= O_NONBLOCK;
  if (fdflags & (WASI_FDFLAG_SYNC | WASI_FDFLAG_RSYNC)) flags |= O_SYNC;

  char *p;
  if ((err = kiln_wasi_read_path(m, path, path_len, &p))) return err;
  int hfd;
  err = kiln_wasi_open_beneath(dirfd, p, flags, 0666,
                               dirflags & WASI_LOOKUP_SYMLINK_FOLLOW, &hfd);
  free(p);
  if (err) return err;
  uint8_t type = kiln_wasi_filetype_of(hfd);
  base &= kiln_wasi_rights_for(type);
  if (type != WASI_FILETYPE_DIRECTORY) inheriting = 0;
  uint32_t gfd;
  if ((err = kiln_wasi_fd_insert(w, hfd, type, base, inheriting, &gfd)))
    return err;
  return kiln_wasi_put32(m, fd_out, gfd);
}

/* ---- Operations on a final name ------------------------------------------ */

/* An operation on the last name of a path, in its (resolved) parent
 * directory: 0 or -1 with errno, as the *at() system calls. */
typedef int (*last_name_op)(int parent_fd, const char *name);

/* Resolves (fd, path) beneath fd, which must have `need`, and applies op
 * to the last name. */
static uint32_t on_last_name(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                             uint64_t need, uint32_t path, uint32_t path_len,
                             last_name_op op) {
  int dirfd;
  char *p;
  uint32_t err = dir_and_path(w, m, fd, need, path, path_len, &dirfd, &p);
  if (err) return err;
  split_path s;
  err = split_resolve(dirfd, p, &s);
  free(p);
  if (err) return err;
  if (op(s.parent_fd, s.name) != 0) err = kiln_wasi_errno(errno);
  split_free(&s);
  return err;
}

static int make_directory(int parent_fd, const char *name) {
  return mkdirat(parent_fd, name, 0777);
}

/* unlinkat on "name/" reports EISDIR/ENOTDIR without following. */
static int unlink_file(int parent_fd, const char *name) {
  return unlinkat(parent_fd, name, 0);
}

static int remove_directory(int parent_fd, const char *name) {
  return unlinkat(parent_fd, name, AT_REMOVEDIR);
}

uint32_t kiln_wasi_p1_path_create_directory(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint32_t path,
                                            uint32_t path_len) {
  return on_last_name(w, m, fd, WASI_RIGHT_PATH_CREATE_DIRECTORY, path,
                      path_len, make_directory);
}

uint32_t kiln_wasi_p1_path_unlink_file(kiln_wasi *w, kiln_memory *m,
                                       uint32_t fd, uint32_t path,
                                       uint32_t path_len) {
  return on_last_name(w, m, fd, WASI_RIGHT_PATH_UNLINK_FILE, path, path_len,
                      unlink_file);
}

uint32_t kiln_wasi_p1_path_remove_directory(kiln_wasi *w, kiln_memory *m,
                                            uint32_t fd, uint32_t path,
                                            uint32_t path_len) {
  return on_last_name(w, m, fd, WASI_RIGHT_PATH_REMOVE_DIRECTORY, path,
                      path_len, remove_directory);
}

/* A guest path to act on: the directory descriptor it is relative to, the
 * path, and (once split) its parent and last name. */
typedef struct guest_path {
  int dirfd;
  char *path;
  split_path last;
} guest_path;

/* An operation on a source and a target path (rename, link), both split. */
typedef uint32_t (*path_pair_op)(const guest_path *from, const guest_path *to,
                                 uint32_t flags);

/* Looks up both directories (with their rights) and reads both paths
 * before resolving either, so that the errors come in that order; then
 * splits both and applies op. */
static uint32_t on_path_pair(kiln_wasi *w, kiln_memory *m, uint32_t from_fd,
                             uint64_t from_need, uint32_t from_path,
                             uint32_t from_len, uint32_t to_fd,
                             uint64_t to_need, uint32_t to_path,
                             uint32_t to_len, path_pair_op op,
                             uint32_t flags) {
  guest_path a = {.path = NULL}, b = {.path = NULL};
  uint32_t err = dir_and_path(w, m, from_fd, from_need, from_path, from_len,
                              &a.dirfd, &a.path);
  if (!err)
    err = dir_and_path(w, m, to_fd, to_need, to_path, to_len, &b.dirfd,
                       &b.path);
  if (!err && !(err = split_resolve(a.dirfd, a.path, &a.last))) {
    if (!(err = split_resolve(b.dirfd, b.path, &b.last))) {
      err = op(&a, &b, flags);
      split_free(&b.last);
    }
    split_free(&a.last);
  }
  free(a.path);
  free(b.path);
  return err;
}

static uint32_t rename_last(const guest_path *from, const guest_path *to,
                            uint32_t flags) {
  (void)flags;
  if (renameat(from->last.parent_fd, from->last.name, to->last.parent_fd,
               to->last.name) != 0)
    return kiln_wasi_errno(errno);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_path_rename(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                  uint32_t old_path, uint32_t old_len,
                                  uint32_t new_fd, uint32_t new_path,
                                  uint32_t new_len) {
  return on_path_pair(w, m, fd, WASI_RIGHT_PATH_RENAME_SOURCE, old_path,
                      old_len, new_fd, WASI_RIGHT_PATH_RENAME_TARGET, new_path,
                      new_len, rename_last, 0);
}

uint32_t kiln_wasi_p1_path_symlink(kiln_wasi *w, kiln_memory *m,
                                   uint32_t old_path, uint32_t old_len,
                                   uint32_t fd, uint32_t new_path,
                                   uint32_t new_len) {
  int dirfd;
  char *target, *p;
  uint32_t err = dir_and_path(w, m, fd, WASI_RIGHT_PATH_SYMLINK, new_path,
                              new_len, &dirfd, &p);
  if (err) return err;
  if ((err = kiln_wasi_read_path(m, old_path, old_len, &target))) {
    free(p);
    return err;
  }
  /* An absolute target could never be followed inside the sandbox; refuse
   * it at creation (relative targets are checked when followed). */
  if (target[0] == '/') err = WASI_ENOTCAPABLE;
  split_path s;
  if (!err && !(err = split_resolve(dirfd, p, &s))) {
    if (symlinkat(target, s.parent_fd, s.name) != 0)
      err = kiln_wasi_errno(errno);
    split_free(&s);
  }
  free(target);
  free(p);
  return err;
}

uint32_t kiln_wasi_p1_path_readlink(kiln_wasi *w, kiln_memory *m, uint32_t fd,
                                    uint32_t path, uint32_t path_len,
                                    uint32_t buf, uint32_t buf_len,
                                    uint32_t bufused_out) {
  uint8_t *out = kiln_wasi_mem(m, buf, buf_len);
  uint8_t *used = kiln_wasi_mem(m, bufused_out, 4);
  int dirfd;
  char *p;
  uint32_t err = dir_and_path(w, m, fd, WASI_RIGHT_PATH_READLINK, path,
                              path_len, &dirfd, &p);
  if (err) return err;
  if (!out || !used) {
    free(p);
    return WASI_EFAULT;
  }
  split_path s;
  err = split_resolve(dirfd, p, &s);
  if (!err && s.slash) {
    /* "link/" means the directory the link leads to, never a link: resolve
     * it beneath for the right error, and it is not a symlink. */
    int t;
    err = kiln_wasi_open_beneath(dirfd, p, O_PATH, 0, true, &t);
    if (!err) {
      close(t);
      err = WASI_EINVAL;
    }
  } else if (!err) {
    char tmp[PATH_MAX];
    ssize_t n = readlinkat(s.parent_fd, s.name, tmp, sizeof tmp);
    if (n < 0) {
      err = kiln_wasi_errno(errno);
    } else {
      /* A target longer than the buffer is cut off, as readlink does. */
      uint32_t k = (uint64_t)n < buf_len ? (uint32_t)n : buf_len;
      memcpy(out, tmp, k);
      kiln_wasi_st32(used, k);
    }
  }
  if (s.name) split_free(&s);
  free(p);
  return err;
}

static bool ends_with_slash(const char *p) {
  size_t n = strlen(p);
  return n > 0 && p[n - 1] == '/';
}

/* stat a path. Following (asked for, or implied by a trailing slash):
 * resolve the whole path beneath and fstat what we hold. Not following:
 * fstatat on the last name in its parent. */
static uint32_t stat_path(int dirfd, const char *p, bool follow,
                          struct stat *st) {
  uint32_t err;
  if (follow || ends_with_slash(p)) {
    int t;
    err = kiln_wasi_open_beneath(dirfd, p, O_PATH, 0, true, &t);
    if (err) return err;
    if (fstat(t, st) != 0) err = kiln_wasi_errno(errno);
    close(t);
    return err;
  }
  split_path s;
  if ((err = split_resolve(dirfd, p, &s))) return err;
  if (fstatat(s.parent_fd, s.name, st, AT_SYMLINK_NOFOLLOW) != 0)
    err = kiln_wasi_errno(errno);
  split_free(&s);
  return err;
}

uint32_t kiln_wasi_p1_path_filestat_get(kiln_wasi *w, kiln_memory *m,
                                        uint32_t fd, uint32_t flags,
                                        uint32_t path, uint32_t path_len,
                                        uint32_t out) {
  if (flags & ~(uint32_t)WASI_LOOKUP_SYMLINK_FOLLOW) return WASI_EINVAL;
  int dirfd;
  char *p;
  uint32_t err = dir_and_path(w, m, fd, WASI_RIGHT_PATH_FILESTAT_GET, path,
                              path_len, &dirfd, &p);
  if (err) return err;
  uint8_t *o = kiln_wasi_mem(m, out, WASI_FILESTAT_SIZE);
  struct stat st;
  if (!o)
    err = WASI_EFAULT;
  else
    err = stat_path(dirfd, p, flags & WASI_LOOKUP_SYMLINK_FOLLOW, &st);
  free(p);
  if (err) return err;
  kiln_wasi_filestat_store(o, &st);
  return WASI_ESUCCESS;
}

uint32_t kiln_wasi_p1_path_filestat_set_times(kiln_wasi *w, kiln_memory *m,
                                              uint32_t fd, uint32_t flags,
                                              uint32_t path, uint32_t path_len,
                                              uint64_t atim, uint64_t mtim,
                                              uint32_t fst_flags) {
  if (flags & ~(uint32_t)WASI_LOOKUP_SYMLINK_FOLLOW) return WASI_EINVAL;
  struct timespec ts[2];
  uint32_t err = kiln_wasi_times(atim, mtim, fst_flags, ts);
  if (err) return err;
  int dirfd;
  char *p;
  err = dir_and_path(w, m, fd, WASI_RIGHT_PATH_FILESTAT_SET_TIMES, path,
                     path_len, &dirfd, &p);
  if (err) return err;
  if ((flags & WASI_LOOKUP_SYMLINK_FOLLOW) || ends_with_slash(p)) {
    /* Never let utimensat follow a guest link itself: hold the target
     * (resolved beneath) and name it through /proc/self/fd. */
    int t;
    err = kiln_wasi_open_beneath(dirfd, p, O_PATH, 0, true, &t);
    if (!err) {
      char proc[64];
      proc_fd_path(t, proc);
      if (utimensat(AT_FDCWD, proc, ts, 0) != 0) err = kiln_wasi_errno(errno);
      close(t);
    }
  } else {
    split_path s;
    if (!(err = split_resolve(dirfd, p, &s))) {
      if (utimensat(s.parent_fd, s.name, ts, AT_SYMLINK_NOFOLLOW) != 0)
        err = kiln_wasi_errno(errno);
      split_free(&s);
    }
  }
  free(p);
  return err;
}

static uint32_t link_last(const guest_path *from, const guest_path *to,
                          uint32_t old_flags) {
  const split_path *a = &from->last, *b = &to->last;
  if (!(old_flags & WASI_LOOKUP_SYMLINK_FOLLOW) && !a->slash) {
    if (linkat(a->parent_fd, a->name, b->parent_fd, b->name, 0) != 0)
      return kiln_wasi_errno(errno);
    return WASI_ESUCCESS;
  }
  /* Following: resolve the source beneath, link what we hold. */
  int t;
  uint32_t err =
      kiln_wasi_open_beneath(from->dirfd, from->path, O_PATH, 0, true, &t);
  if (err) return err;
  char proc[64];
  proc_fd_path(t, proc);
  if (linkat(AT_FDCWD, proc, b->parent_fd, b->name, AT_SYMLINK_FOLLOW) != 0)
    err = kiln_wasi_errno(errno);
  close(t);
  return err;
}

uint32_t kiln_wasi_p1_path_link(kiln_wasi *w, kiln_memory *m, uint32_t old_fd,
                                uint32_t old_flags, uint32_t old_path,
                                uint32_t old_len, uint32_t new_fd,
                                uint32_t new_path, uint32_t new_len) {
  if (old_flags & ~(uint32_t)WASI_LOOKUP_SYMLINK_FOLLOW) return WASI_EINVAL;
  return on_path_pair(w, m, old_fd, WASI_RIGHT_PATH_LINK_SOURCE, old_path,
                      old_len, new_fd, WASI_RIGHT_PATH_LINK_TARGET, new_path,
                      new_len, link_last, old_flags);
}
