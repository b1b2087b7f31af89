/* Linear memories: reservation, guard pages, in-place growth, claims. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "memory/memory_internal.h"

#define KILN_MAX_MIRRORS 4

typedef struct kiln_claim {
  uint64_t id, begin, end;
  char *owner;
  struct kiln_claim *next;
} kiln_claim;

struct kiln_memory_subscription {
  kiln_memory_grow_fn fn;
  kiln_memory_rollback_fn rollback; /* may be NULL */
  void *user;
  struct kiln_memory_subscription *next;
};

struct kiln_memory {
  atomic_int refs;
  kiln_memory_view view;
  uint8_t *reservation; /* == view.data */
  uint64_t reserved;    /* bytes of address space */
  uint64_t max_bytes;   /* extra limit from options, 0: none */
  bool read_only;
  int registry_slot;
  char *name;
  pthread_mutex_t lock; /* growth, subscribers, mirrors, claims */
  kiln_memory_view *mirrors[KILN_MAX_MIRRORS];
  kiln_memory_subscription *subs;
  kiln_claim *claims;
  uint64_t next_claim_id;
};

/* ---- Registry of guarded ranges, readable from signal handlers ---------- */

/* Each live memory takes 8 GiB of address space, so a 47-bit address
 * space holds at most 16384 of them. */
#define KILN_REGISTRY_SLOTS 16384
static _Atomic uintptr_t registry_begin[KILN_REGISTRY_SLOTS];
static _Atomic uintptr_t registry_end[KILN_REGISTRY_SLOTS];
static atomic_int registry_high; /* slots in use are below this */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

static int registry_add(uintptr_t begin, uintptr_t end) {
  pthread_mutex_lock(&registry_lock);
  int slot = -1;
  int high = atomic_load(&registry_high);
  for (int i = 0; i < high; i++) {
    if (atomic_load(&registry_begin[i]) == 0) {
      slot = i;
      break;
    }
  }
  if (slot < 0 && high < KILN_REGISTRY_SLOTS) slot = high;
  if (slot >= 0) {
    atomic_store(&registry_end[slot], end);
    atomic_store(&registry_begin[slot], begin);
    if (slot == high) atomic_store(&registry_high, high + 1);
  }
  pthread_mutex_unlock(&registry_lock);
  return slot;
}

static void registry_remove(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&registry_lock);
  atomic_store(&registry_begin[slot], 0);
  atomic_store(&registry_end[slot], 0);
  pthread_mutex_unlock(&registry_lock);
}

bool kiln_memory_address_is_guarded(uintptr_t addr) {
  int high = atomic_load(&registry_high);
  for (int i = 0; i < high; i++) {
    uintptr_t b = atomic_load(&registry_begin[i]);
    if (b && addr >= b && addr < atomic_load(&registry_end[i])) return true;
  }
  return false;
}

/* ---- Creation ------------------------------------------------------------ */

static kiln_status memory_reserve(kiln_memory *m) {
  void *p = mmap(NULL, KILN_MEMORY_RESERVATION, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    return kiln_status_from_errno(errno, "reserving 8 GiB of address space "
                                         "for memory '%s'", m->name);
  m->reservation = p;
  m->reserved = KILN_MEMORY_RESERVATION;
  m->view.data = p;
  m->registry_slot = registry_add((uintptr_t)p, (uintptr_t)p + m->reserved);
  if (m->registry_slot < 0) {
    munmap(p, m->reserved);
    m->reservation = NULL;
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "too many live memories (%d)", KILN_REGISTRY_SLOTS);
  }
  return KILN_OK;
}

static kiln_memory *memory_alloc(const char *name) {
  kiln_memory *m = calloc(1, sizeof *m);
  if (!m) return NULL;
  m->name = strdup(name ? name : "memory");
  if (!m->name) {
    free(m);
    return NULL;
  }
  atomic_init(&m->refs, 1);
  m->registry_slot = -1;
  m->view.owner = m;
  pthread_mutex_init(&m->lock, NULL);
  return m;
}

static void memory_destroy(kiln_memory *m) {
  if (m->reservation) munmap(m->reservation, m->reserved);
  registry_remove(m->registry_slot);
  for (kiln_memory_subscription *s = m->subs, *n; s; s = n) {
    n = s->next;
    free(s);
  }
  for (kiln_claim *c = m->claims, *n; c; c = n) {
    n = c->next;
    free(c->owner);
    free(c);
  }
  pthread_mutex_destroy(&m->lock);
  free(m->name);
  free(m);
}

static void set_size_locked(kiln_memory *m, uint64_t pages) {
  m->view.pages = (uint32_t)pages;
  m->view.size = pages * KILN_WASM_PAGE_SIZE;
  for (int i = 0; i < KILN_MAX_MIRRORS; i++)
    if (m->mirrors[i]) *m->mirrors[i] = m->view;
}

kiln_status kiln_memory_create(const kiln_memory_options *opts,
                               kiln_memory **out) {
  *out = NULL;
  uint64_t max = opts->maximum_pages ? opts->maximum_pages
                                     : KILN_MEMORY_MAX_PAGES;
  if (max > KILN_MEMORY_MAX_PAGES)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "maximum of %llu pages exceeds 65536 (4 GiB)",
                            (unsigned long long)max);
  if (opts->initial_pages > max)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "initial size %llu pages exceeds maximum %llu",
                            (unsigned long long)opts->initial_pages,
                            (unsigned long long)max);
  if (opts->max_bytes &&
      opts->initial_pages * KILN_WASM_PAGE_SIZE > opts->max_bytes)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "initial size %llu bytes exceeds the limit of "
                            "%llu bytes",
                            (unsigned long long)(opts->initial_pages *
                                                 KILN_WASM_PAGE_SIZE),
                            (unsigned long long)opts->max_bytes);
  kiln_memory *m = memory_alloc(opts->name);
  if (!m) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  m->view.max_pages = (uint32_t)(max > UINT32_MAX ? UINT32_MAX : max);
  m->max_bytes = opts->max_bytes;
  kiln_status s = memory_reserve(m);
  if (s) {
    memory_destroy(m);
    return s;
  }
  uint64_t bytes = opts->initial_pages * KILN_WASM_PAGE_SIZE;
  if (bytes && mprotect(m->reservation, bytes, PROT_READ | PROT_WRITE) != 0) {
    s = kiln_status_from_errno(errno, "committing %llu bytes for memory '%s'",
                               (unsigned long long)bytes, m->name);
    memory_destroy(m);
    return s;
  }
  set_size_locked(m, opts->initial_pages);
  *out = m;
  return KILN_OK;
}

kiln_status kiln_memory_create_from_file(const char *path, kiln_memory **out) {
  *out = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_status_from_errno(errno, "opening '%s'", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    kiln_status s = kiln_status_from_errno(errno, "stat '%s'", path);
    close(fd);
    return s;
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "'%s' is not a regular file", path);
  }
  uint64_t file_size = (uint64_t)st.st_size;
  uint64_t pages = (file_size + KILN_WASM_PAGE_SIZE - 1) / KILN_WASM_PAGE_SIZE;
  if (pages > KILN_MEMORY_MAX_PAGES) {
    close(fd);
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                            "'%s' is %llu bytes: larger than a 4 GiB memory",
                            path, (unsigned long long)file_size);
  }
  kiln_memory *m = memory_alloc(path);
  if (!m) {
    close(fd);
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  }
  m->read_only = true;
  m->view.max_pages = (uint32_t)pages;
  kiln_status s = memory_reserve(m);
  if (s) {
    close(fd);
    memory_destroy(m);
    return s;
  }
  /* The file is mapped shared and read-only over the start of the
   * reservation. Past the file's last OS page (up to the whole Wasm page)
   * map zero pages, since touching a shared mapping past EOF is SIGBUS. */
  long os_page = sysconf(_SC_PAGESIZE);
  uint64_t file_map = (file_size + os_page - 1) / os_page * os_page;
  if (file_map &&
      mmap(m->reservation, file_map, PROT_READ, MAP_SHARED | MAP_FIXED, fd,
           0) == MAP_FAILED) {
    s = kiln_status_from_errno(errno, "mapping '%s'", path);
    close(fd);
    memory_destroy(m);
    return s;
  }
  close(fd);
  uint64_t total = pages * KILN_WASM_PAGE_SIZE;
  if (total > file_map &&
      mmap(m->reservation + file_map, total - file_map, PROT_READ,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED) {
    s = kiln_status_from_errno(errno, "mapping the tail of '%s'", path);
    memory_destroy(m);
    return s;
  }
  set_size_locked(m, pages);
  *out = m;
  return KILN_OK;
}

void kiln_memory_retain(kiln_memory *m) {
  if (m) atomic_fetch_add(&m->refs, 1);
}

void kiln_memory_release(kiln_memory *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) memory_destroy(m);
}

uint8_t *kiln_memory_base(const kiln_memory *m) { return m->view.data; }
uint64_t kiln_memory_size(const kiln_memory *m) {
  return __atomic_load_n(&m->view.size, __ATOMIC_ACQUIRE);
}
uint64_t kiln_memory_pages(const kiln_memory *m) {
  return kiln_memory_size(m) / KILN_WASM_PAGE_SIZE;
}
uint64_t kiln_memory_max_pages(const kiln_memory *m) {
  return m->view.max_pages;
}
int kiln_memory_is_read_only(const kiln_memory *m) { return m->read_only; }
const char *kiln_memory_name(const kiln_memory *m) { return m->name; }

/* ---- Ranges -------------------------------------------------------------- */

void *kiln_memory_range_or_null(const kiln_memory *m, uint64_t offset,
                                uint64_t length) {
  uint64_t size = kiln_memory_size(m);
  /* offset <= size and length <= size - offset: no addition, no overflow. */
  if (offset > size || length > size - offset) return NULL;
  return m->view.data + offset;
}

void kiln_memory_prepare_write(const kiln_memory *m, void *p,
                               uint64_t length) {
  if (!length || kiln_memory_is_read_only(m)) return;
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t a = (uintptr_t)p, end = a + length;
  for (uintptr_t q = a; q < end; q = (q / page + 1) * page)
    __atomic_fetch_add((uint8_t *)q, 0, __ATOMIC_RELAXED);
}

kiln_status kiln_memory_range(const kiln_memory *m, uint64_t offset,
                              uint64_t length, void **out_ptr) {
  void *p = kiln_memory_range_or_null(m, offset, length);
  if (!p) {
    *out_ptr = NULL;
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                            "range [%llu, %llu + %llu) is outside memory '%s' "
                            "of %llu bytes",
                            (unsigned long long)offset,
                            (unsigned long long)offset,
                            (unsigned long long)length, m->name,
                            (unsigned long long)kiln_memory_size(m));
  }
  *out_ptr = p;
  return KILN_OK;
}

/* ---- Growth -------------------------------------------------------------- */

/* Gives committed pages [old_bytes, new_bytes) back to the OS, leaving
 * them inaccessible again, so that accesses past the size still trap. */
static kiln_status decommit_locked(kiln_memory *m, uint64_t old_bytes,
                                   uint64_t new_bytes) {
  void *p = m->reservation + old_bytes;
  size_t n = (size_t)(new_bytes - old_bytes);
  if (mmap(p, n, PROT_NONE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
           0) != MAP_FAILED)
    return KILN_OK;
  int err = errno;
  /* Out of mappings, say: at least take access away. The pages keep
   * their memory, and their bytes if grown into again, but they trap. */
  if (mprotect(p, n, PROT_NONE) == 0) return KILN_OK;
  return kiln_status_from_errno(err,
                                "decommitting [%llu, %llu) of memory '%s' "
                                "after a refused grow: accesses there will "
                                "not trap",
                                (unsigned long long)old_bytes,
                                (unsigned long long)new_bytes, m->name);
}

/* Subscribers from `first` up to (not including) `refuser` accepted the grow
 * to new_bytes: tell them it is undone, the most recent first. */
static void roll_back_locked(kiln_memory *m, uint64_t old_bytes,
                             uint64_t new_bytes,
                             kiln_memory_subscription *refuser) {
  size_t accepted = 0;
  for (kiln_memory_subscription *s = m->subs; s != refuser; s = s->next)
    accepted++;
  while (accepted--) {
    kiln_memory_subscription *s = m->subs;
    for (size_t k = 0; k < accepted; k++) s = s->next;
    if (s->rollback) s->rollback(s->user, m, old_bytes, new_bytes);
  }
}

kiln_status kiln_memory_grow(kiln_memory *m, uint64_t delta_pages,
                             uint64_t *out_old_pages) {
  pthread_mutex_lock(&m->lock);
  uint64_t old_pages = m->view.pages;
  if (out_old_pages) *out_old_pages = old_pages;
  kiln_status s = KILN_OK;
  if (delta_pages == 0) goto done;
  if (m->read_only) {
    s = kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                         "memory '%s' is read-only and cannot grow", m->name);
    goto done;
  }
  if (delta_pages > m->view.max_pages - old_pages) {
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                         "growing memory '%s' by %llu pages exceeds its "
                         "maximum of %u pages",
                         m->name, (unsigned long long)delta_pages,
                         m->view.max_pages);
    goto done;
  }
  uint64_t new_pages = old_pages + delta_pages;
  uint64_t old_bytes = old_pages * KILN_WASM_PAGE_SIZE;
  uint64_t new_bytes = new_pages * KILN_WASM_PAGE_SIZE;
  if (m->max_bytes && new_bytes > m->max_bytes) {
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                         "growing memory '%s' to %llu bytes exceeds the limit "
                         "of %llu bytes",
                         m->name, (unsigned long long)new_bytes,
                         (unsigned long long)m->max_bytes);
    goto done;
  }
  if (mprotect(m->reservation + old_bytes, new_bytes - old_bytes,
               PROT_READ | PROT_WRITE) != 0) {
    s = kiln_status_from_errno(errno, "committing pages of memory '%s'",
                               m->name);
    goto done;
  }
  for (kiln_memory_subscription *sub = m->subs; sub; sub = sub->next) {
    s = sub->fn(sub->user, m, old_bytes, new_bytes);
    if (!s) continue;
    /* Refused: undo what the earlier subscribers did, give the pages back
     * and keep the old size. */
    roll_back_locked(m, old_bytes, new_bytes, sub);
    kiln_status d = decommit_locked(m, old_bytes, new_bytes);
    if (d) { /* the refusal stays the news; the failure is added to it */
      kiln_status both = kiln_make_status(kiln_status_code(s), "%s (then %s)",
                                          kiln_status_message(s),
                                          kiln_status_message(d));
      kiln_status_free(s);
      kiln_status_free(d);
      s = both;
    }
    goto done;
  }
  set_size_locked(m, new_pages);
done:
  pthread_mutex_unlock(&m->lock);
  return s;
}

kiln_status kiln_memory_subscribe_with_rollback(
    kiln_memory *m, kiln_memory_grow_fn fn, kiln_memory_rollback_fn rollback,
    void *user, kiln_memory_subscription **out) {
  if (!fn)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "subscribing to memory '%s' needs a grow function",
                            m->name);
  kiln_memory_subscription *s = calloc(1, sizeof *s);
  if (!s) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  s->fn = fn;
  s->rollback = rollback;
  s->user = user;
  pthread_mutex_lock(&m->lock);
  s->next = m->subs;
  m->subs = s;
  pthread_mutex_unlock(&m->lock);
  if (out) *out = s;
  return KILN_OK;
}

kiln_status kiln_memory_subscribe(kiln_memory *m, kiln_memory_grow_fn fn,
                                  void *user,
                                  kiln_memory_subscription **out) {
  return kiln_memory_subscribe_with_rollback(m, fn, NULL, user, out);
}

void kiln_memory_unsubscribe(kiln_memory *m, kiln_memory_subscription *sub) {
  pthread_mutex_lock(&m->lock);
  for (kiln_memory_subscription **p = &m->subs; *p; p = &(*p)->next) {
    if (*p == sub) {
      *p = sub->next;
      free(sub);
      break;
    }
  }
  pthread_mutex_unlock(&m->lock);
}

/* ---- Views and mirrors (engine-internal) -------------------------------- */

kiln_memory_view *kiln_memory_view_of(kiln_memory *m) { return &m->view; }

kiln_status kiln_memory_add_mirror(kiln_memory *m, kiln_memory_view *mirror) {
  kiln_status s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                                   "too many views of memory '%s'", m->name);
  pthread_mutex_lock(&m->lock);
  for (int i = 0; i < KILN_MAX_MIRRORS; i++) {
    if (!m->mirrors[i]) {
      m->mirrors[i] = mirror;
      *mirror = m->view;
      kiln_status_free(s);
      s = KILN_OK;
      break;
    }
  }
  pthread_mutex_unlock(&m->lock);
  return s;
}

void kiln_memory_remove_mirror(kiln_memory *m, kiln_memory_view *mirror) {
  pthread_mutex_lock(&m->lock);
  for (int i = 0; i < KILN_MAX_MIRRORS; i++)
    if (m->mirrors[i] == mirror) m->mirrors[i] = NULL;
  pthread_mutex_unlock(&m->lock);
}

/* ---- Static-data claims -------------------------------------------------- */

kiln_status kiln_memory_claim(kiln_memory *m, uint64_t begin, uint64_t end,
                              const char *owner, uint64_t *out_claim_id) {
  if (!owner) owner = "?";
  if (begin >= end)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "%s: claim [%llu, %llu) in memory '%s' %s", owner,
                            (unsigned long long)begin,
                            (unsigned long long)end, m->name,
                            begin == end ? "is empty (holds no byte)"
                                         : "ends before it begins");
  kiln_status s = KILN_OK;
  pthread_mutex_lock(&m->lock);
  for (kiln_claim *c = m->claims; c; c = c->next) {
    if (begin < c->end && c->begin < end) {
      s = kiln_make_status(
          KILN_CODE_FAILED_PRECONDITION,
          "%s: static data and stack [%llu, %llu) overlap those of %s "
          "[%llu, %llu) in shared memory '%s'; link each module with its "
          "own --global-base (see sdk/LINKING.md)",
          owner, (unsigned long long)begin, (unsigned long long)end, c->owner,
          (unsigned long long)c->begin, (unsigned long long)c->end, m->name);
      goto done;
    }
  }
  kiln_claim *c = calloc(1, sizeof *c);
  char *o = strdup(owner);
  if (!c || !o) {
    free(c);
    free(o);
    s = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  c->id = ++m->next_claim_id;
  c->begin = begin;
  c->end = end;
  c->owner = o;
  c->next = m->claims;
  m->claims = c;
  *out_claim_id = c->id;
done:
  pthread_mutex_unlock(&m->lock);
  return s;
}

void kiln_memory_unclaim(kiln_memory *m, uint64_t claim_id) {
  pthread_mutex_lock(&m->lock);
  for (kiln_claim **p = &m->claims; *p; p = &(*p)->next) {
    if ((*p)->id == claim_id) {
      kiln_claim *c = *p;
      *p = c->next;
      free(c->owner);
      free(c);
      break;
    }
  }
  pthread_mutex_unlock(&m->lock);
}
