/* kiln WASI preview1 (wasi_snapshot_preview1).
 *
 * A kiln_wasi is the world a WASI guest sees: its arguments, its
 * environment, its standard streams and the host directories it may touch
 * (preopens). kiln_wasi_define() puts every wasi_snapshot_preview1 function
 * into a linker, so any program built against wasi-libc links; the guest
 * then runs with kiln_instance_call(inst, "_start", ...).
 *
 * Sandbox: the guest reaches the host file system only through its
 * preopened directories. Every path is resolved beneath the directory file
 * descriptor it is relative to: with openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS) where the kernel has it (Linux >= 5.6), otherwise
 * by a component-by-component walk that opens every component with
 * O_NOFOLLOW, reads symlinks itself and keeps its own stack for "..".
 * Absolute paths, ".." above a preopen and symlinks that lead outside
 * (absolute, or through "..") fail with WASI errno NOTCAPABLE (76).
 * Operations on a final component (unlink, rmdir, mkdir, rename, symlink,
 * readlink, link, stat without following) resolve the parent directory
 * beneath the preopen and then use the *at system call on the last name,
 * which the kernel does not follow. Rights (WASI's capability bits) are
 * tracked per descriptor and enforced.
 *
 * Guest memory: every guest (offset, length) is checked with
 * kiln_memory_range_or_null() in 64-bit arithmetic before it is touched; a
 * bad pointer or length is WASI errno FAULT (21), never a host crash.
 * Errors the guest sees are WASI's own errno numbers (mapped from the host's
 * errno), never host errno values.
 *
 * proc_exit(code) abandons the guest call with kiln_make_exit(code): the
 * caller of kiln_instance_call() receives a status with code KILN_CODE_EXIT
 * and kiln_status_exit_code() gives the guest's code.
 *
 * Ownership: kiln_wasi_create() copies everything it is given (strings,
 * arrays) and duplicates the standard-stream file descriptors, so the
 * options may be freed right after; the caller owns *out and frees it with
 * kiln_wasi_release(). A linker that kiln_wasi_define() filled keeps a plain
 * pointer to the kiln_wasi: release the kiln_wasi only after every instance
 * created through that linker is released.
 *
 * Thread safety: a kiln_wasi holds mutable state (its descriptor table) and
 * serves one guest call at a time; instances that share one kiln_wasi must
 * not run concurrently. Different kiln_wasi objects are independent. */
#ifndef KILN_WASI_H_
#define KILN_WASI_H_

#include <stdint.h>

#include "kiln/engine.h"
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_wasi kiln_wasi;

/* A host directory the guest may use, and the name it has in the guest
 * (what fd_prestat_dir_name returns; wasi-libc resolves the guest's paths
 * against these names, so "/" makes the directory the guest's root). */
typedef struct kiln_wasi_preopen {
  const char *host_path;
  const char *guest_path; /* NULL: same as host_path */
} kiln_wasi_preopen;

typedef struct kiln_wasi_options {
  /* Guest arguments; argv[0] is the program name. argc 0: no arguments. */
  const char *const *argv;
  int argc;
  /* Guest environment as "KEY=VALUE" strings. The guest sees exactly these
   * (nothing of the host's environment is passed on implicitly). */
  const char *const *env;
  int envc;
  /* Preopened directories: guest descriptors 3, 4, ... in this order. */
  const kiln_wasi_preopen *preopens;
  int preopen_count;
  /* Host descriptors behind guest descriptors 0, 1, 2 (duplicated at
   * creation). -1: that guest descriptor is closed. Defaults 0, 1, 2 (set by
   * kiln_wasi_options_init; an options struct whose three fields are all 0
   * is taken as "not set" and gets the defaults too). */
  int stdin_fd;
  int stdout_fd;
  int stderr_fd;
} kiln_wasi_options;

/* Zero everything and set stdin_fd, stdout_fd, stderr_fd to 0, 1, 2. */
void kiln_wasi_options_init(kiln_wasi_options *o);

/* Create a WASI context. o may be NULL (no arguments, empty environment, no
 * preopens, the host's standard streams).
 * Errors: INVALID_ARGUMENT (negative counts, NULL strings, an environment
 * string without '='), NOT_FOUND / PERMISSION_DENIED / IO (a preopen that
 * cannot be opened as a directory; the message names it),
 * RESOURCE_EXHAUSTED (out of memory or descriptors). */
kiln_status kiln_wasi_create(const kiln_wasi_options *o, kiln_wasi **out);

/* Close every descriptor the context holds and free it. NULL is a no-op. */
void kiln_wasi_release(kiln_wasi *w);

/* Define every wasi_snapshot_preview1 function (46 of them, all of preview1)
 * in linker l, each with w as its user pointer. Redefining replaces earlier
 * definitions. Errors: whatever kiln_linker_define_func returns. */
kiln_status kiln_wasi_define(kiln_wasi *w, kiln_linker *l);

#ifdef __cplusplus
}
#endif
#endif /* KILN_WASI_H_ */
