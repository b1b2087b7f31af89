/* The wasm2c engine: .wasm -> C (wasm2c) -> shared object (cc) -> dlopen.
 * Also the runtime table (kiln_w2c_rt) that compiled modules call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <link.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/cache.h"
#include "engine/engine_internal.h"
#include "engine/trap.h"
#include "engine/w2c_codegen.h"
#include "memory/memory_internal.h"

extern char **environ;

struct kiln_embedded_file {
  const char *name;
  const unsigned char *data;
  size_t size;
};
extern const struct kiln_embedded_file kiln_embedded_files[];

_Static_assert(sizeof(kiln_w2c_val) == sizeof(kiln_val), "val layout");

/* ---- Files and processes --------------------------------------------------- */

static kiln_status write_file(const char *path, const void *data, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return kiln_status_from_errno(errno, "creating '%s'", path);
  const char *p = data;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      kiln_status s = kiln_status_from_errno(errno, "writing '%s'", path);
      close(fd);
      return s;
    }
    p += w;
    n -= (size_t)w;
  }
  if (close(fd) != 0) return kiln_status_from_errno(errno, "writing '%s'", path);
  return KILN_OK;
}

static kiln_status read_file(const char *path, size_t limit, char **out,
                             size_t *out_size) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_status_from_errno(errno, "opening '%s'", path);
  struct stat st;
  if (fstat(fd, &st) != 0 || (size_t)st.st_size > limit) {
    close(fd);
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE, "'%s' is too large", path);
  }
  char *buf = malloc((size_t)st.st_size + 1);
  if (!buf) {
    close(fd);
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  buf[got] = 0;
  *out = buf;
  if (out_size) *out_size = got;
  return KILN_OK;
}

/* Runs argv with stdout+stderr into log_path. Returns the exit status
 * (or 128+signal) in *out_rc. */
static kiln_status run_tool(char *const argv[], const char *log_path,
                            int *out_rc) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_path,
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  pid_t pid;
  int err = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err) return kiln_status_from_errno(err, "running '%s'", argv[0]);
  int st;
  while (waitpid(pid, &st, 0) < 0) {
    if (errno != EINTR)
      return kiln_status_from_errno(errno, "waiting for '%s'", argv[0]);
  }
  *out_rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return KILN_OK;
}

/* First lines of a tool's log, for messages, without the build folder's
 * path `dir` (a temp folder: the text is cached and should not vary). */
static void log_excerpt(const char *log_path, const char *dir, char *out,
                        size_t size) {
  char *text = NULL;
  kiln_status s = read_file(log_path, 1 << 20, &text, NULL);
  out[0] = 0;
  if (s) {
    kiln_status_free(s);
    return;
  }
  size_t n = 0, dir_len = strlen(dir);
  int lines = 0;
  for (char *p = text; *p && n + 1 < size && lines < 6; p++) {
    if (dir_len && !strncmp(p, dir, dir_len) && p[dir_len] == '/') {
      p += dir_len; /* the loop steps over the '/' */
      continue;
    }
    if (*p == '\n') {
      lines++;
      if (lines == 6) break;
      out[n++] = ' ';
      continue;
    }
    out[n++] = *p;
  }
  while (n && out[n - 1] == ' ') n--;
  out[n] = 0;
  free(text);
}

/* ---- Toolchain identity (part of every cache key) ---------------------------- */

/* Hashes `tool --version`. The output goes to a file of this call's own:
 * processes sharing a cache folder run this at the same time, and a shared
 * log file would let one read another's half-written output, hash it into
 * a wrong toolchain identity and so miss (and refill) the whole cache. */
static kiln_status tool_version(const char *tool, const char *dir,
                                kiln_sha256_ctx *h) {
  char tmp[PATH_MAX], log[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  KILN_RETURN_IF_ERROR(kiln_mkdirs(tmp));
  snprintf(log, sizeof log, "%s/version-XXXXXX", tmp);
  int fd = mkostemp(log, O_CLOEXEC);
  if (fd < 0)
    return kiln_status_from_errno(errno, "creating a file in '%s'", tmp);
  close(fd);
  char *argv[] = {(char *)tool, "--version", NULL};
  int rc = 0;
  char *text = NULL;
  size_t n = 0;
  kiln_status s = run_tool(argv, log, &rc);
  if (!s && rc != 0)
    s = kiln_make_status(KILN_CODE_NOT_FOUND,
                         "'%s --version' failed (exit %d): is it installed?",
                         tool, rc);
  if (!s) s = read_file(log, 1 << 16, &text, &n);
  unlink(log);
  if (s) return s;
  kiln_sha256_update(h, text, n);
  free(text);
  return KILN_OK;
}

/* A tool's file identity, "path dev inode size mtime", the path found on
 * $PATH when it has no slash and with symlinks resolved (/usr/bin/cc ->
 * gcc-12): what changes when the tool is replaced or upgraded. */
static bool tool_file(const char *tool, char *out, size_t cap) {
  char found[PATH_MAX] = "";
  if (strchr(tool, '/')) {
    snprintf(found, sizeof found, "%s", tool);
  } else {
    const char *path = getenv("PATH");
    while (path && *path && !found[0]) {
      const char *end = strchr(path, ':');
      size_t n = end ? (size_t)(end - path) : strlen(path);
      char cand[PATH_MAX];
      if (n && n < sizeof cand - strlen(tool) - 2) {
        snprintf(cand, sizeof cand, "%.*s/%s", (int)n, path, tool);
        if (access(cand, X_OK) == 0) snprintf(found, sizeof found, "%s", cand);
      }
      path = end ? end + 1 : NULL;
    }
  }
  char real[PATH_MAX];
  struct stat st;
  if (!found[0] || !realpath(found, real) || stat(real, &st) != 0) return false;
  int n = snprintf(out, cap, "%s %llu %llu %lld %lld.%09ld", real,
                   (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                   (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                   st.st_mtim.tv_nsec);
  return n > 0 && (size_t)n < cap;
}

/* kiln's own part of the toolchain identity: version, code-generation
 * settings and the runtime files compiled into every module. */
static kiln_status kiln_part(const kiln_engine *e, char out[65]) {
  kiln_sha256_ctx *h;
  KILN_RETURN_IF_ERROR(kiln_sha256_begin(&h));
  char head[128];
  int n = snprintf(head, sizeof head, "kiln %s abi %d opt %d mm %d", KILN_VERSION,
                   KILN_W2C_ABI_VERSION, e->opt_level, (int)e->multi_memory);
  kiln_sha256_update(h, head, (size_t)n);
  for (const struct kiln_embedded_file *f = kiln_embedded_files; f->name; f++)
    kiln_sha256_update(h, f->data, f->size);
  kiln_sha256 d;
  kiln_sha256_end(h, &d);
  kiln_sha256_hex(&d, out);
  return KILN_OK;
}

/* The identity remembered at memo, when it holds one. */
static bool memo_read(const char *memo, char id[65]) {
  char *text = NULL;
  size_t len = 0;
  kiln_status r = read_file(memo, 256, &text, &len);
  bool ok = !r && len == 64;
  for (size_t i = 0; ok && i < 64; i++)
    ok = (text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f');
  if (ok) {
    memcpy(id, text, 64);
    id[64] = 0;
  }
  free(text);
  kiln_status_free(r);
  return ok;
}

/* Remembers id at memo (in dir) through a rename, so that readers see all
 * of it or nothing. Failing costs the next start 3 ms, nothing more. */
static void memo_write(const char *dir, const char *memo, const char *id) {
  char tmp[PATH_MAX + 32];
  snprintf(tmp, sizeof tmp, "%s/.memo-XXXXXX", dir);
  kiln_status w = kiln_mkdirs(dir);
  int fd = w ? -1 : mkostemp(tmp, O_CLOEXEC);
  if (fd >= 0) {
    close(fd);
    w = write_file(tmp, id, 64);
    if (!w && rename(tmp, memo) != 0)
      w = kiln_status_from_errno(errno, "renaming '%s'", tmp);
    if (w) unlink(tmp);
  }
  kiln_status_free(w);
}

/* The toolchain identity: kiln's part (kiln_part) with `cc --version` and
 * `wasm2c --version`. Running the two tools costs a new process 3-4 ms,
 * so the result is remembered in the cache folder (toolchain/<hash>),
 * under a hash of kiln's part and the tools' file identities (tool_file):
 * a replaced or upgraded tool gets a new memo. A compiler behind a wrapper
 * script that stays the same is not seen changing; its code is still
 * correct for this machine, only from an older compiler. */
static kiln_status engine_toolchain(kiln_engine *e, const char *work_dir) {
  if (e->toolchain[0]) return KILN_OK;
  char base[65];
  KILN_RETURN_IF_ERROR(kiln_part(e, base));
  char cc_file[PATH_MAX + 128], w2c_file[PATH_MAX + 128];
  char dir[PATH_MAX], memo[PATH_MAX + 80] = "";
  kiln_sha256_ctx *h;
  if (tool_file(e->cc, cc_file, sizeof cc_file) &&
      tool_file(KILN_WASM2C, w2c_file, sizeof w2c_file)) {
    KILN_RETURN_IF_ERROR(kiln_sha256_begin(&h));
    kiln_sha256_update(h, base, 64);
    kiln_sha256_update(h, cc_file, strlen(cc_file) + 1);
    kiln_sha256_update(h, w2c_file, strlen(w2c_file) + 1);
    kiln_sha256 mk;
    kiln_sha256_end(h, &mk);
    char mk_hex[65];
    kiln_sha256_hex(&mk, mk_hex);
    snprintf(dir, sizeof dir, "%s/toolchain", work_dir);
    snprintf(memo, sizeof memo, "%s/%s", dir, mk_hex);
    if (memo_read(memo, e->toolchain)) return KILN_OK;
  }
  KILN_RETURN_IF_ERROR(kiln_sha256_begin(&h));
  kiln_sha256_update(h, base, 64);
  kiln_status s = tool_version(e->cc, work_dir, h);
  if (!s) s = tool_version(KILN_WASM2C, work_dir, h);
  kiln_sha256 out;
  kiln_sha256_end(h, &out);
  if (s) return s;
  kiln_sha256_hex(&out, e->toolchain);
  if (memo[0]) memo_write(dir, memo, e->toolchain);
  return KILN_OK;
}

/* ---- Compilation ----------------------------------------------------------- */

static void progress(kiln_engine *e, kiln_module *m, const char *stage,
                     int done, int total) {
  if (e->progress) e->progress(e->progress_user, m->name, stage, done, total);
}

/* wasm2c on dir/module.wasm. *rejected: wasm2c refused the module as
 * invalid (its validator type-checks function bodies, kiln's does not), a
 * verdict that holds for these bytes for good and may be cached. */
static kiln_status run_wasm2c(kiln_engine *e, const char *dir, bool *rejected) {
  char path[PATH_MAX], log[PATH_MAX], out_c[PATH_MAX];
  snprintf(path, sizeof path, "%s/module.wasm", dir);
  snprintf(log, sizeof log, "%s/build.log", dir);
  snprintf(out_c, sizeof out_c, "%s/m.c", dir);
  char *argv[] = {KILN_WASM2C, path, "-n", KILN_W2C_MODULE_NAME, "-o", out_c,
                  e->multi_memory ? "--enable-multi-memory" : NULL, NULL};
  int rc = 0;
  KILN_RETURN_IF_ERROR(run_tool(argv, log, &rc));
  if (rc == 0) return KILN_OK;
  char why[1024];
  log_excerpt(log, dir, why, sizeof why);
  if (rc >= 128)
    return kiln_make_status(KILN_CODE_UNIMPLEMENTED,
                            "wasm2c crashed (signal %d) translating the "
                            "module: %s", rc - 128, why);
  /* A validation error reads "module.wasm:<hex offset>: error: ...";
   * anything else (a file it could not read, say) may not happen again. */
  for (const char *at = why; !*rejected && (at = strstr(at, "module.wasm:"));) {
    at += strlen("module.wasm:");
    size_t hex = strspn(at, "0123456789abcdefABCDEF");
    *rejected = hex > 0 && !strncmp(at + hex, ": error: ", 9);
  }
  return kiln_make_status(KILN_CODE_INVALID_MODULE, "%s", why);
}

static kiln_status write_glue(kiln_module *m, char *const *field_names,
                              const char *dir) {
  for (const struct kiln_embedded_file *f = kiln_embedded_files; f->name; f++) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, f->name);
    KILN_RETURN_IF_ERROR(write_file(p, f->data, f->size));
  }
  char out_h[PATH_MAX], glue_path[PATH_MAX];
  snprintf(out_h, sizeof out_h, "%s/m.h", dir);
  snprintf(glue_path, sizeof glue_path, "%s/glue.c", dir);
  char *header = NULL, *glue = NULL;
  KILN_RETURN_IF_ERROR(read_file(out_h, 64u << 20, &header, NULL));
  kiln_status s = kiln_w2c_generate_glue(m->info, field_names, header, &glue);
  free(header);
  if (s) return s;
  s = write_file(glue_path, glue, strlen(glue));
  free(glue);
  return s;
}

static kiln_status run_cc(kiln_engine *e, const char *dir) {
  char opt[8], inc[PATH_MAX + 4], so[PATH_MAX], log[PATH_MAX];
  char out_c[PATH_MAX], glue_path[PATH_MAX];
  snprintf(opt, sizeof opt, "-O%d", e->opt_level);
  snprintf(inc, sizeof inc, "-I%s", dir);
  snprintf(so, sizeof so, "%s/%s", dir, KILN_CACHE_ARTIFACT_FILE);
  snprintf(log, sizeof log, "%s/build.log", dir);
  snprintf(out_c, sizeof out_c, "%s/m.c", dir);
  snprintf(glue_path, sizeof glue_path, "%s/glue.c", dir);
  char *argv[] = {e->cc, "-shared", "-fPIC", opt, "-w",
                  "-fstack-clash-protection", "-fvisibility=hidden",
                  "-fno-strict-aliasing", inc, out_c, glue_path, "-o", so,
                  "-Wl,-Bsymbolic", "-lm", NULL};
  int rc = 0;
  KILN_RETURN_IF_ERROR(run_tool(argv, log, &rc));
  if (rc == 0) return KILN_OK;
  char why[1024];
  log_excerpt(log, dir, why, sizeof why);
  return kiln_make_status(KILN_CODE_INTERNAL,
                          "the C compiler '%s' failed (exit %d) on "
                          "wasm2c's output: %s", e->cc, rc, why);
}

/* Builds dir/module.so from the module's bytes. wasm2c is given a copy
 * whose import names are unique (kiln_wasm_unique_import_names): a module
 * may import one (module, name) pair several times, with different types,
 * which wasm2c cannot declare. m->info keeps the real names for linking. */
static kiln_status compile_into(kiln_engine *e, kiln_module *m,
                                const uint8_t *bytes, size_t size,
                                const char *dir, bool *rejected) {
  *rejected = false;
  char **field_names = NULL;
  uint8_t *copy = NULL;
  size_t copy_size = 0;
  KILN_RETURN_IF_ERROR(kiln_wasm_unique_import_names(
      bytes, size, m->info, &field_names, &copy, &copy_size));
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/module.wasm", dir);
  kiln_status s =
      copy ? write_file(path, copy, copy_size) : write_file(path, bytes, size);
  free(copy);
  progress(e, m, "wasm2c", 0, 2);
  if (!s) s = run_wasm2c(e, dir, rejected);
  if (!s) s = write_glue(m, field_names, dir);
  kiln_wasm_names_free(field_names, m->info->import_count);
  if (s) return s;
  progress(e, m, "cc", 1, 2);
  KILN_RETURN_IF_ERROR(run_cc(e, dir));
  progress(e, m, "done", 2, 2);
  return KILN_OK;
}

static kiln_status cache_key(kiln_engine *e, const uint8_t *bytes, size_t size,
                             char key[65]) {
  kiln_sha256_ctx *h;
  KILN_RETURN_IF_ERROR(kiln_sha256_begin(&h));
  kiln_sha256_update(h, e->toolchain, 64);
  kiln_sha256_update(h, bytes, size);
  kiln_sha256 out;
  kiln_sha256_end(h, &out);
  kiln_sha256_hex(&out, key);
  return KILN_OK;
}

/* ---- Loading ---------------------------------------------------------------- */

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;

typedef struct phdr_query {
  uintptr_t base, begin, end;
} phdr_query;

static int find_text(struct dl_phdr_info *info, size_t n, void *arg) {
  (void)n;
  phdr_query *q = arg;
  if (info->dlpi_addr != q->base) return 0;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X)) {
      uintptr_t b = info->dlpi_addr + ph->p_vaddr;
      if (!q->begin || b < q->begin) q->begin = b;
      if (b + ph->p_memsz > q->end) q->end = b + ph->p_memsz;
    }
  }
  return 1;
}

static kiln_status load_artifact(kiln_module *m) {
  pthread_mutex_lock(&load_lock);
  kiln_status s = KILN_OK;
  m->dl = dlopen(m->artifact, RTLD_NOW | RTLD_LOCAL);
  if (!m->dl) {
    s = kiln_make_status(KILN_CODE_DATA_LOSS, "loading compiled module '%s': %s",
                         m->artifact, dlerror());
    goto done;
  }
  int (*bind)(const kiln_w2c_rt *) =
      (int (*)(const kiln_w2c_rt *))dlsym(m->dl, "kiln_w2c_bind");
  const kiln_w2c_module *(*describe)(void) =
      (const kiln_w2c_module *(*)(void))dlsym(m->dl, "kiln_w2c_describe");
  if (!bind || !describe || bind(&kiln_w2c_runtime) != 0) {
    s = kiln_make_status(KILN_CODE_DATA_LOSS,
                         "'%s' is not a kiln module of ABI version %d",
                         m->artifact, KILN_W2C_ABI_VERSION);
    goto done;
  }
  m->desc = describe();
  if (!m->desc || m->desc->abi_version != KILN_W2C_ABI_VERSION ||
      m->desc->import_count != m->info->import_count ||
      m->desc->export_count != m->info->export_count) {
    s = kiln_make_status(KILN_CODE_DATA_LOSS,
                         "'%s' does not match its module", m->artifact);
    goto done;
  }
  Dl_info di;
  if (dladdr((void *)describe, &di) && di.dli_fbase) {
    phdr_query q = {(uintptr_t)di.dli_fbase, 0, 0};
    dl_iterate_phdr(find_text, &q);
    if (q.begin) {
      m->code_begin = q.begin;
      m->code_end = q.end;
      m->code_slot = kiln_code_range_add(q.begin, q.end);
    }
  }
done:
  pthread_mutex_unlock(&load_lock);
  return s;
}

/* The status for a cached refusal: the code generator's message, kept in
 * the entry's file. */
static kiln_status cached_rejection(const char *path) {
  char *why = NULL;
  kiln_status s = read_file(path, 1 << 16, &why, NULL);
  if (s) return s;
  s = kiln_make_status(KILN_CODE_INVALID_MODULE, "%s", why);
  free(why);
  return s;
}

/* Compiles the module into a new cache entry (with the key's lock held).
 * A module wasm2c refuses becomes a rejected entry, and its status is
 * returned. Sets *found to what the entry now holds. */
static kiln_status build_entry(kiln_engine *e, kiln_module *m,
                               const uint8_t *bytes, size_t size,
                               const char *dir, kiln_cache_entry *found) {
  char tmp[PATH_MAX];
  KILN_RETURN_IF_ERROR(kiln_cache_make_temp(dir, tmp, sizeof tmp));
  bool rejected = false;
  kiln_status s = compile_into(e, m, bytes, size, tmp, &rejected);
  if (!s) {
    *found = KILN_CACHE_ARTIFACT;
    return kiln_cache_publish(dir, m->key, tmp, KILN_CACHE_ARTIFACT_FILE,
                              m->artifact, sizeof m->artifact);
  }
  if (!rejected) {
    kiln_remove_tree(tmp);
    return s;
  }
  /* Remember the refusal. Failing to is no reason to hide it. */
  char why_path[PATH_MAX];
  snprintf(why_path, sizeof why_path, "%s/%s", tmp, KILN_CACHE_REJECTED_FILE);
  const char *why = kiln_status_message(s);
  kiln_status w = write_file(why_path, why, strlen(why));
  if (!w)
    w = kiln_cache_publish(dir, m->key, tmp, KILN_CACHE_REJECTED_FILE,
                           m->artifact, sizeof m->artifact);
  else
    kiln_remove_tree(tmp);
  kiln_status_free(w);
  *found = KILN_CACHE_REJECTED;
  return s;
}

static kiln_status w2c_prepare(kiln_engine *e, kiln_module *m,
                               const uint8_t *bytes, size_t size) {
  const char *dir = e->cache_dir ? e->cache_dir : e->private_dir;
  KILN_RETURN_IF_ERROR(kiln_mkdirs(dir));
  pthread_mutex_lock(&e->lock);
  kiln_status s = engine_toolchain(e, dir);
  pthread_mutex_unlock(&e->lock);
  if (s) return s;
  KILN_RETURN_IF_ERROR(cache_key(e, bytes, size, m->key));

  kiln_cache_entry found =
      kiln_cache_lookup(dir, m->key, m->artifact, sizeof m->artifact, NULL);
  if (found == KILN_CACHE_MISS) {
    int lock = kiln_cache_lock(dir, m->key);
    /* Another process may have finished it while we waited. */
    found =
        kiln_cache_lookup(dir, m->key, m->artifact, sizeof m->artifact, NULL);
    if (found == KILN_CACHE_MISS) {
      s = build_entry(e, m, bytes, size, dir, &found);
    } else {
      m->cached = true;
    }
    kiln_cache_unlock(lock);
    if (s) return s;
  } else {
    m->cached = true;
  }
  if (found == KILN_CACHE_REJECTED) return cached_rejection(m->artifact);
  return load_artifact(m);
}

const kiln_engine_backend kiln_w2c_backend = {"wasm2c", w2c_prepare};

/* ---- Symbols for trap messages ------------------------------------------------ */

static int symbol_cmp(const void *a, const void *b) {
  uintptr_t x = ((const kiln_symbol *)a)->addr,
            y = ((const kiln_symbol *)b)->addr;
  return x < y ? -1 : x > y;
}

/* Reads the artifact's ELF .symtab: function symbols with their load
 * addresses. Only used to name the function a trap happened in. */
static void load_symbols(kiln_module *m) {
  m->symbols_loaded = true;
  char *img = NULL;
  size_t size = 0;
  kiln_status s = read_file(m->artifact, 256u << 20, &img, &size);
  if (s) {
    kiln_status_free(s);
    return;
  }
  const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
  if (size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
      eh->e_shoff > size || eh->e_shnum > (size - eh->e_shoff) / sizeof(Elf64_Shdr))
    goto out;
  const Elf64_Shdr *sh = (const Elf64_Shdr *)(img + eh->e_shoff);
  Dl_info di;
  void *desc = dlsym(m->dl, "kiln_w2c_describe");
  if (!desc || !dladdr(desc, &di)) goto out;
  uintptr_t base = (uintptr_t)di.dli_fbase;
  for (int i = 0; i < eh->e_shnum; i++) {
    if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum) continue;
    const Elf64_Shdr *str = &sh[sh[i].sh_link];
    if (sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset ||
        str->sh_offset > size || str->sh_size > size - str->sh_offset)
      goto out;
    size_t n = sh[i].sh_size / sizeof(Elf64_Sym);
    const Elf64_Sym *syms = (const Elf64_Sym *)(img + sh[i].sh_offset);
    m->symbols = calloc(n ? n : 1, sizeof *m->symbols);
    m->symbol_names = malloc(str->sh_size + 1);
    if (!m->symbols || !m->symbol_names) goto out;
    memcpy(m->symbol_names, img + str->sh_offset, str->sh_size);
    m->symbol_names[str->sh_size] = 0;
    for (size_t k = 0; k < n; k++) {
      if (ELF64_ST_TYPE(syms[k].st_info) != STT_FUNC || !syms[k].st_value ||
          syms[k].st_name >= str->sh_size)
        continue;
      m->symbols[m->symbol_count].addr = base + syms[k].st_value;
      m->symbols[m->symbol_count].name = m->symbol_names + syms[k].st_name;
      m->symbol_count++;
    }
    qsort(m->symbols, m->symbol_count, sizeof *m->symbols, symbol_cmp);
    break;
  }
out:
  free(img);
}

const char *kiln_module_symbol(kiln_module *m, uintptr_t pc, char *buf,
                               size_t size) {
  pthread_mutex_lock(&m->sym_lock);
  if (!m->symbols_loaded) load_symbols(m);
  const char *found = NULL;
  size_t lo = 0, hi = m->symbol_count;
  while (lo < hi) { /* last symbol with addr <= pc */
    size_t mid = (lo + hi) / 2;
    if (m->symbols[mid].addr <= pc) lo = mid + 1;
    else hi = mid;
  }
  if (lo > 0) found = m->symbols[lo - 1].name;
  if (found) {
    /* w2c_NAME: an internal function; Z_mZ_NAME: an export wrapper whose
     * name is mangled (ZXX is the byte 0xXX). */
    const char *export_prefix = "Z_" KILN_W2C_MODULE_NAME "Z_";
    if (!strncmp(found, "w2c_", 4)) {
      snprintf(buf, size, "%s", found + 4);
    } else if (!strncmp(found, export_prefix, strlen(export_prefix))) {
      size_t n = 0;
      for (const char *q = found + strlen(export_prefix); *q && n + 1 < size;
           q++) {
        unsigned v;
        if (*q == 'Z' && sscanf(q + 1, "%2x", &v) == 1) {
          buf[n++] = (char)v;
          q += 2;
        } else {
          buf[n++] = *q;
        }
      }
      buf[n] = 0;
    } else {
      snprintf(buf, size, "%s", found);
    }
    found = buf;
  }
  pthread_mutex_unlock(&m->sym_lock);
  return found;
}

/* ---- The runtime table --------------------------------------------------------- */

static kiln_trap_kind trap_kind_of(int code) {
  switch (code) {
    case 1: return KILN_TRAP_OUT_OF_BOUNDS;
    case 2: return KILN_TRAP_INTEGER_OVERFLOW;
    case 3: return KILN_TRAP_DIVIDE_BY_ZERO;
    case 4: return KILN_TRAP_INVALID_CONVERSION;
    case 5: return KILN_TRAP_UNREACHABLE;
    case 6: return KILN_TRAP_INDIRECT_CALL;
    case 7: return KILN_TRAP_UNCAUGHT_EXCEPTION;
    case 8: return KILN_TRAP_STACK_EXHAUSTED;
  }
  return KILN_TRAP_UNREACHABLE;
}

__attribute__((noreturn)) static void rt_trap(int code, void *pc) {
  /* pc is a return address: step back into the call instruction. */
  kiln_trap_raise(trap_kind_of(code), (char *)pc - 1);
}

typedef struct functype_entry {
  uint32_t params, results;
  int types[64];
} functype_entry;

static pthread_mutex_t types_lock = PTHREAD_MUTEX_INITIALIZER;
static functype_entry *types;
static uint32_t type_count, type_cap;

static uint32_t rt_register_func_type(uint32_t params, uint32_t results,
                                      const int *t) {
  uint32_t n = params + results;
  pthread_mutex_lock(&types_lock);
  uint32_t id = 0;
  for (uint32_t i = 0; n <= 64 && i < type_count && !id; i++) {
    if (types[i].params == params && types[i].results == results &&
        !memcmp(types[i].types, t, n * sizeof(int)))
      id = i + 1;
  }
  if (!id) {
    if (type_count == type_cap) {
      uint32_t cap = type_cap ? type_cap * 2 : 64;
      functype_entry *nt = realloc(types, cap * sizeof *nt);
      if (!nt) {
        pthread_mutex_unlock(&types_lock);
        kiln_trap_raise_status(
            kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory"));
      }
      types = nt;
      type_cap = cap;
    }
    functype_entry *e = &types[type_count++];
    e->params = params;
    e->results = n <= 64 ? results : UINT32_MAX; /* never equal to another */
    memcpy(e->types, t, (n <= 64 ? n : 64) * sizeof(int));
    id = type_count;
  }
  pthread_mutex_unlock(&types_lock);
  return id;
}

__thread kiln_instance *kiln_instantiating;

static void rt_allocate_memory(void *mem, uint32_t initial, uint32_t max) {
  kiln_memory_view *v = mem;
  memset(v, 0, sizeof *v);
  kiln_memory_options o = {0};
  o.initial_pages = initial;
  o.maximum_pages = max > KILN_MEMORY_MAX_PAGES ? KILN_MEMORY_MAX_PAGES : max;
  if (kiln_instantiating) o.max_bytes = kiln_instantiating->opts.max_memory_bytes;
  o.name = "memory";
  kiln_memory *m = NULL;
  kiln_status s = kiln_memory_create(&o, &m);
  if (!s) {
    s = kiln_memory_add_mirror(m, v);
    if (s) kiln_memory_release(m);
  }
  if (s) kiln_trap_raise_status(s);
}

static uint32_t rt_grow_memory(void *mem, uint32_t delta) {
  kiln_memory_view *v = mem;
  if (!v->owner) return UINT32_MAX;
  uint64_t old = 0;
  kiln_status s = kiln_memory_grow(v->owner, delta, &old);
  if (s) {
    kiln_status_free(s);
    return UINT32_MAX;
  }
  return (uint32_t)old;
}

static void rt_free_memory(void *mem) {
  kiln_memory_view *v = mem;
  kiln_memory *m = v->owner;
  if (!m) return;
  kiln_memory_remove_mirror(m, v);
  kiln_memory_release(m);
  memset(v, 0, sizeof *v);
}

/* Both wasm2c table structs are {data, max_size, size}. */
typedef struct table_view {
  void *data;
  uint32_t max_size;
  uint32_t size;
} table_view;

/* A table larger than this is refused (a guest asking for 4 billion
 * entries would otherwise take 96 GiB). */
#define KILN_MAX_TABLE_ELEMENTS (10u * 1000 * 1000)

static void rt_allocate_table(void *table, size_t elem_size, uint32_t n,
                              uint32_t max) {
  table_view *t = table;
  memset(t, 0, sizeof *t);
  if (n > KILN_MAX_TABLE_ELEMENTS)
    kiln_trap_raise_status(kiln_make_status(
        KILN_CODE_RESOURCE_EXHAUSTED,
        "table of %u elements exceeds kiln's limit of %u", n,
        KILN_MAX_TABLE_ELEMENTS));
  t->data = calloc(n ? n : 1, elem_size);
  if (!t->data)
    kiln_trap_raise_status(
        kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory"));
  t->size = n;
  t->max_size = max;
}

static uint32_t rt_grow_table(void *table, size_t elem_size, uint32_t delta,
                              const void *init) {
  table_view *t = table;
  uint32_t old = t->size;
  if (delta == 0) return old;
  if ((uint64_t)old + delta > t->max_size ||
      (uint64_t)old + delta > KILN_MAX_TABLE_ELEMENTS)
    return UINT32_MAX;
  uint32_t n = old + delta;
  char *d = realloc(t->data, (size_t)n * elem_size);
  if (!d) return UINT32_MAX;
  for (uint32_t i = old; i < n; i++) memcpy(d + (size_t)i * elem_size, init, elem_size);
  t->data = d;
  t->size = n;
  return old;
}

static void rt_free_table(void *table) {
  table_view *t = table;
  free(t->data);
  memset(t, 0, sizeof *t);
}

const kiln_w2c_rt kiln_w2c_runtime = {
    KILN_W2C_ABI_VERSION, rt_trap,          rt_register_func_type,
    rt_allocate_memory,   rt_grow_memory,   rt_free_memory,
    rt_allocate_table,    rt_grow_table,    rt_free_table,
};
