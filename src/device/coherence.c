/* Placement of memories on a device and the RESIDENT coherence protocol
 * (see kiln/device.h).
 *
 * A RESIDENT range of a writable memory on a backend with device memory has
 * a device copy and one dirty bit per host page. Clean pages are kept
 * PROT_READ; the first store to one faults, the fault hook (below; async-
 * signal-safe) sets the page's bit and makes the page writable, and the
 * store is retried. Before an op reads the range, its dirty pages that the
 * op's extent touches go to the device whole (minus bytes that ops wrote on
 * the device and that have not been copied back yet: the device's bytes are
 * the newer ones), and are protected again. Bytes that ops write are kept
 * as an interval set per range and copied back at sync, exactly those.
 *
 * The page is the unit of host-change tracking: a dirty page is uploaded
 * once, whole, however few of its bytes changed.
 *
 * Limits: a device is used from one thread, and a guest that writes a
 * RESIDENT range runs on that thread or is quiescent while the device
 * thread uploads or copies back (a store racing with re-protection could
 * be missed). Host writes by system calls (read(2) into a protected page)
 * fail with EFAULT instead of faulting: buffers filled by I/O should stay
 * MAPPED. */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "base/reserve.h"
#include "device/device_core.h"
#include "engine/trap.h"

static uint64_t host_page(void) {
  static uint64_t ps;
  if (!ps) ps = (uint64_t)sysconf(_SC_PAGESIZE);
  return ps;
}

/* ---- Interval sets ------------------------------------------------------- */

kiln_status kiln_intervals_add(kiln_interval_set *s, uint64_t lo,
                               uint64_t hi) {
  if (lo >= hi) return KILN_OK;
  /* First interval whose end reaches lo (touching intervals merge). */
  size_t a = 0, b = s->n;
  while (a < b) {
    size_t mid = (a + b) / 2;
    if (s->v[mid].hi < lo) a = mid + 1;
    else b = mid;
  }
  size_t first = a, last = a; /* [first, last) merge with [lo, hi) */
  while (last < s->n && s->v[last].lo <= hi) {
    if (s->v[last].lo < lo) lo = s->v[last].lo;
    if (s->v[last].hi > hi) hi = s->v[last].hi;
    last++;
  }
  if (first == last) {
    if (!kiln_reserve((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v, 8))
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    memmove(s->v + first + 1, s->v + first, (s->n - first) * sizeof *s->v);
    s->n++;
  } else if (last - first > 1) {
    memmove(s->v + first + 1, s->v + last, (s->n - last) * sizeof *s->v);
    s->n -= last - first - 1;
  }
  s->v[first].lo = lo;
  s->v[first].hi = hi;
  return KILN_OK;
}

void kiln_intervals_free(kiln_interval_set *s) {
  free(s->v);
  memset(s, 0, sizeof *s);
}

static bool intervals_intersect(const kiln_interval_set *s, uint64_t lo,
                                uint64_t hi) {
  for (size_t i = 0; i < s->n; i++)
    if (s->v[i].lo < hi && lo < s->v[i].hi) return true;
  return false;
}

/* ---- Fault registry (read by the signal handler) --------------------------
 * A fixed table of protected ranges with atomics. Writers take a mutex;
 * the handler only loads. A slot is cleared after its pages are writable
 * again, then the remover waits for handlers already running. */

#define KILN_FAULT_SLOTS 1024
static _Atomic uintptr_t fault_begin[KILN_FAULT_SLOTS];
static _Atomic uintptr_t fault_end[KILN_FAULT_SLOTS];
static _Atomic(kiln_resident *) fault_range[KILN_FAULT_SLOTS];
static atomic_int fault_high;
static atomic_int fault_active;
static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fault_once = PTHREAD_ONCE_INIT;
static uint64_t fault_page;

static bool fault_hook(void *addr, bool is_write) {
  (void)is_write;
  uintptr_t a = (uintptr_t)addr;
  bool handled = false;
  atomic_fetch_add(&fault_active, 1);
  int high = atomic_load(&fault_high);
  for (int i = 0; i < high; i++) {
    uintptr_t b = atomic_load(&fault_begin[i]);
    if (!b || a < b || a >= atomic_load(&fault_end[i])) continue;
    kiln_resident *r = atomic_load(&fault_range[i]);
    if (!r) break;
    uint64_t page = (a - b) / fault_page, bit = (uint64_t)1 << (page % 64);
    atomic_fetch_or(&r->dirty[page / 64], bit);
    if (atomic_fetch_or(&r->seen[page / 64], bit) & bit)
      atomic_fetch_or(&r->hot[page / 64], bit);
    if (mprotect((void *)(b + page * fault_page), fault_page,
                 PROT_READ | PROT_WRITE) == 0) {
      __atomic_fetch_add(&r->att->dev->stats.write_faults, 1,
                         __ATOMIC_RELAXED);
      handled = true;
    }
    break;
  }
  atomic_fetch_sub(&fault_active, 1);
  return handled;
}

static void fault_install(void) {
  fault_page = host_page();
  kiln_fault_hook_set(fault_hook);
}

static int fault_slot_add(kiln_resident *r, uintptr_t begin, uintptr_t end) {
  pthread_once(&fault_once, fault_install);
  pthread_mutex_lock(&fault_lock);
  int high = atomic_load(&fault_high), slot = -1;
  for (int i = 0; i < high && slot < 0; i++)
    if (!atomic_load(&fault_begin[i])) slot = i;
  if (slot < 0 && high < KILN_FAULT_SLOTS) slot = high;
  if (slot >= 0) {
    atomic_store(&fault_range[slot], r);
    atomic_store(&fault_end[slot], end);
    atomic_store(&fault_begin[slot], begin);
    if (slot == high) atomic_store(&fault_high, high + 1);
  }
  pthread_mutex_unlock(&fault_lock);
  return slot;
}

static void fault_slot_remove(int slot) {
  if (slot < 0) return;
  pthread_mutex_lock(&fault_lock);
  atomic_store(&fault_begin[slot], 0);
  atomic_store(&fault_end[slot], 0);
  atomic_store(&fault_range[slot], NULL);
  pthread_mutex_unlock(&fault_lock);
  while (atomic_load(&fault_active)) sched_yield();
}

/* ---- Attachments ---------------------------------------------------------- */

kiln_device_attachment *kiln_attachment_find(kiln_device *d,
                                             const kiln_memory *m) {
  for (kiln_device_attachment *a = d->attachments; a; a = a->next)
    if (a->memory == m) return a;
  return NULL;
}

kiln_resident *kiln_resident_find(kiln_device_attachment *att, uint64_t lo,
                                  uint64_t hi, bool *straddles) {
  *straddles = false;
  for (kiln_resident *r = att->residents; r; r = r->next) {
    uint64_t end = r->offset + r->length;
    if (lo >= r->offset && hi <= end) return r;
    if (lo < end && r->offset < hi) *straddles = true;
  }
  return NULL;
}

static uint8_t *base_of(kiln_device_attachment *att) {
  return kiln_memory_base(att->memory);
}

/* Registers [registered, bytes) with the backend. Caller holds att->lock. */
static kiln_status register_up_to(kiln_device_attachment *att,
                                  uint64_t bytes) {
  if (bytes <= att->registered) return KILN_OK;
  kiln_device *d = att->dev;
  uint64_t n = bytes - att->registered;
  if (d->vt->register_host) {
    if (!kiln_reserve((void **)&att->regs, &att->capregs, att->nregs + 1,
                      sizeof *att->regs, 4))
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    KILN_RETURN_IF_ERROR(d->vt->register_host(
        d, base_of(att) + att->registered, n, false));
    att->regs[att->nregs++] = (kiln_host_reg){att->registered, n};
  }
  __atomic_fetch_add(&d->stats.mapped_bytes, n, __ATOMIC_RELAXED);
  att->registered = bytes;
  return KILN_OK;
}

static kiln_status on_grow(void *user, kiln_memory *m, uint64_t old_bytes,
                           uint64_t new_bytes) {
  (void)m, (void)old_bytes;
  kiln_device_attachment *att = user;
  pthread_mutex_lock(&att->lock);
  kiln_status s = register_up_to(att, new_bytes);
  pthread_mutex_unlock(&att->lock);
  return s;
}

static void resident_free(kiln_device *d, kiln_resident *r) {
  if (r->tracked) {
    /* Writable again first, so that no new fault can name this range. */
    mprotect(base_of(r->att) + r->offset, r->length, PROT_READ | PROT_WRITE);
    fault_slot_remove(r->slot);
  }
  if (r->dev_addr) {
    if (d->vt->free)
      d->vt->free(d, r->dev_alloc, r->length + (r->aligned ? 255 : 0));
    d->stats.resident_bytes -= r->length;
  }
  free((void *)r->dirty);
  free((void *)r->seen);
  free((void *)r->hot);
  free(r->sent);
  kiln_intervals_free(&r->written);
  free(r);
}

/* With `align`, the device copy starts up to 255 bytes into its allocation
 * so that memory byte `align_at` lands on a 256-byte boundary
 * (kiln_device_attach_aligned). `device_only`: a DEVICE range, whose copy
 * starts as the host's bytes and is never tracked. */
static kiln_status resident_create(kiln_device *d, kiln_device_attachment *att,
                                   uint64_t offset, uint64_t length,
                                   bool align, uint64_t align_at,
                                   bool device_only, kiln_resident **out) {
  kiln_resident *r = calloc(1, sizeof *r);
  if (!r) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  r->att = att;
  r->offset = offset;
  r->length = length;
  r->slot = -1;
  r->device_only = device_only;
  if (d->vt->alloc) {
    kiln_status s = d->vt->alloc(d, length + (align ? 255 : 0), &r->dev_alloc);
    if (s) {
      free(r);
      return kiln_status_annotate(s, "device memory for a RESIDENT range of "
                                     "%llu bytes",
                                  (unsigned long long)length);
    }
    r->dev_addr = r->dev_alloc;
    r->aligned = align;
    if (align)   /* dev_addr + (align_at - offset) == 0 (mod 256) */
      r->dev_addr += (256 - (r->dev_alloc + align_at - offset) % 256) % 256;
    d->stats.resident_bytes += length;
  }
  if (r->dev_addr && device_only) {
    kiln_status s = d->vt->upload(d, r->dev_addr, base_of(att) + offset, length);
    if (s) {
      resident_free(d, r);
      return kiln_status_annotate(s, "filling a DEVICE range");
    }
    d->stats.bytes_to_device += length;
  } else if (r->dev_addr && !att->read_only) {
    /* Every page starts dirty (and writable): the device copy is filled
     * lazily by the first ops that read it. */
    r->tracked = true;
    r->npages = length / host_page();
    size_t words = (r->npages + 63) / 64;
    r->dirty = calloc(words ? words : 1, sizeof(uint64_t));
    r->seen = calloc(words ? words : 1, sizeof(uint64_t));
    r->hot = calloc(words ? words : 1, sizeof(uint64_t));
    r->sent = calloc(words ? words : 1, sizeof(uint64_t));
    uintptr_t begin = (uintptr_t)(base_of(att) + offset);
    r->eager = length <= d->resident_eager_max;
    if (r->dirty && r->seen && r->hot && !r->eager) r->slot = fault_slot_add(r, begin, begin + length);
    if (!r->dirty || !r->seen || !r->hot || !r->sent ||
        (!r->eager && r->slot < 0)) {
      resident_free(d, r);
      return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                              "too many RESIDENT ranges or out of memory");
    }
    for (uint64_t p = 0; p < r->npages; p++)
      r->dirty[p / 64] |= (uint64_t)1 << (p % 64);
  }
  r->next = att->residents;
  att->residents = r;
  *out = r;
  return KILN_OK;
}

kiln_status kiln_device_attach(kiln_device *d, kiln_memory *m) {
  return kiln_device_attach_aligned(d, m, 0);
}

kiln_status kiln_device_attach_aligned(kiln_device *d, kiln_memory *m,
                                       uint64_t data_offset) {
  d->placement_epoch++;
  if (kiln_attachment_find(d, m)) return KILN_OK;
  kiln_device_attachment *att = calloc(1, sizeof *att);
  if (!att) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  att->dev = d;
  att->memory = m;
  att->read_only = kiln_memory_is_read_only(m);
  pthread_mutex_init(&att->lock, NULL);
  kiln_memory_retain(m);
  kiln_status s = KILN_OK;
  if (att->read_only) {
    /* Read-only memories (model files) go to the device once, whole,
     * without passing through any guest. */
    uint64_t size = kiln_memory_size(m);
    kiln_resident *r = NULL;
    if (size)
      s = resident_create(d, att, 0, size, data_offset != 0, data_offset,
                          false, &r);
    if (!s && r && r->dev_addr) {
      s = d->vt->upload(d, r->dev_addr, kiln_memory_base(m), size);
      if (!s) d->stats.bytes_to_device += size;
    }
  } else {
    s = kiln_memory_subscribe(m, on_grow, att, &att->sub);
    if (!s) {
      pthread_mutex_lock(&att->lock);
      s = register_up_to(att, kiln_memory_size(m));
      pthread_mutex_unlock(&att->lock);
    }
  }
  att->next = d->attachments;
  d->attachments = att;
  if (s) {
    kiln_device_detach(d, m);
    return kiln_status_annotate(s, "attaching memory '%s'",
                                kiln_memory_name(m));
  }
  return KILN_OK;
}

/* Keeps s (or frees it) for the next kiln_device_sync to report. */
static void keep_error(kiln_device *d, kiln_status s) {
  if (!d->pending_error) d->pending_error = s;
  else kiln_status_free(s);
}

/* Syncs the device before placement changes; a device-side error is kept
 * for the next kiln_device_sync. */
static void sync_keep_error(kiln_device *d) {
  uint64_t down = 0;
  kiln_status s2 = kiln_coherence_copy_back_begin(d, &down);
  kiln_status s = d->vt->sync(d);
  kiln_status s3 = kiln_coherence_copy_back_end(d);
  if (!s2) s2 = s3;
  else kiln_status_free(s3);
  d->stats.bytes_to_host += down;
  if (!d->pending_error) {
    d->pending_error = s ? s : s2;
    if (s) kiln_status_free(s2);
  } else {
    kiln_status_free(s);
    kiln_status_free(s2);
  }
}

/* A DEVICE range holds the only current copy of its bytes: before it ends
 * (placed again, detached, the device released) they are queued to come
 * back to the host, behind the ops that may still write them; the caller
 * then syncs. Ranges of att overlapping [lo, hi). */
static kiln_status bring_back(kiln_device *d, kiln_device_attachment *att,
                              uint64_t lo, uint64_t hi) {
  for (kiln_resident *r = att->residents; r; r = r->next) {
    if (!r->device_only || !r->dev_addr || r->offset >= hi ||
        lo >= r->offset + r->length)
      continue;
    KILN_RETURN_IF_ERROR(d->vt->download(d, base_of(att) + r->offset,
                                         r->dev_addr, r->length));
    d->stats.bytes_to_host += r->length;
  }
  return KILN_OK;
}

static void attachment_free(kiln_device *d, kiln_device_attachment *att) {
  while (att->residents) {
    kiln_resident *r = att->residents;
    att->residents = r->next;
    resident_free(d, r);
  }
  if (att->sub) kiln_memory_unsubscribe(att->memory, att->sub);
  /* No grow notification runs after unsubscribe returns. */
  for (size_t i = 0; i < att->nregs; i++)
    if (d->vt->unregister_host)
      d->vt->unregister_host(d, base_of(att) + att->regs[i].offset,
                             att->regs[i].length);
  __atomic_fetch_sub(&d->stats.mapped_bytes, att->registered,
                     __ATOMIC_RELAXED);
  free(att->regs);
  pthread_mutex_destroy(&att->lock);
  kiln_memory_release(att->memory);
  free(att);
}

void kiln_device_detach(kiln_device *d, kiln_memory *m) {
  d->placement_epoch++;
  kiln_device_attachment **p = &d->attachments;
  while (*p && (*p)->memory != m) p = &(*p)->next;
  if (!*p) return;
  kiln_device_attachment *att = *p;
  keep_error(d, bring_back(d, att, 0, UINT64_MAX));
  sync_keep_error(d);
  *p = att->next;
  attachment_free(d, att);
}

void kiln_coherence_detach_all(kiln_device *d) {
  /* The device may be failing by now: what cannot come back is lost
   * with it, and the release goes on. */
  for (kiln_device_attachment *att = d->attachments; att; att = att->next)
    kiln_status_free(bring_back(d, att, 0, UINT64_MAX));
  if (d->attachments) kiln_status_free(d->vt->sync(d));
  while (d->attachments) {
    kiln_device_attachment *att = d->attachments;
    d->attachments = att->next;
    attachment_free(d, att);
  }
}

kiln_status kiln_device_place(kiln_device *d, kiln_memory *m, uint64_t offset,
                              uint64_t length, kiln_placement p) {
  d->placement_epoch++;
  kiln_device_attachment *att = kiln_attachment_find(d, m);
  if (!att)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "memory '%s' is not attached to this device",
                            kiln_memory_name(m));
  if (p != KILN_PLACEMENT_MAPPED && p != KILN_PLACEMENT_RESIDENT &&
      p != KILN_PLACEMENT_DEVICE)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "placement must be mapped, resident or device");
  if (p == KILN_PLACEMENT_DEVICE && d->device_as_resident)
    p = KILN_PLACEMENT_RESIDENT;
  uint64_t ps = host_page(), end, size = kiln_memory_size(m);
  if (__builtin_add_overflow(offset, length, &end) || end > size)
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                            "range [%llu, %llu + %llu) is outside memory '%s' "
                            "of %llu bytes",
                            (unsigned long long)offset,
                            (unsigned long long)offset,
                            (unsigned long long)length, kiln_memory_name(m),
                            (unsigned long long)size);
  if (!length) return KILN_OK;
  uint64_t lo = offset / ps * ps, hi = (end + ps - 1) / ps * ps;
  if (att->read_only) {
    if (p == KILN_PLACEMENT_RESIDENT) return KILN_OK;
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "read-only memory '%s' stays RESIDENT",
                            kiln_memory_name(m));
  }
  /* The same range again: harmless when the placement is the same; a
   * RESIDENT range may become DEVICE and back (below). Any other overlap
   * with a range on the device is refused. */
  kiln_resident *same = NULL;
  for (kiln_resident *r = att->residents; r; r = r->next) {
    if (r->offset >= hi || lo >= r->offset + r->length) continue;
    if (r->offset == lo && r->length == hi - lo) {
      same = r;
    } else if (p != KILN_PLACEMENT_MAPPED) {
      return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                              "[%llu, %llu) overlaps the %s range "
                              "[%llu, %llu) of memory '%s'",
                              (unsigned long long)lo, (unsigned long long)hi,
                              r->device_only ? "DEVICE" : "RESIDENT",
                              (unsigned long long)r->offset,
                              (unsigned long long)(r->offset + r->length),
                              kiln_memory_name(m));
    }
  }
  if (same && p != KILN_PLACEMENT_MAPPED &&
      same->device_only == (p == KILN_PLACEMENT_DEVICE))
    return KILN_OK;
  /* Ranges that end come back to the host first: after this sync the
   * host's bytes are the current ones everywhere in [lo, hi). */
  keep_error(d, bring_back(d, att, lo, hi));
  sync_keep_error(d);
  for (kiln_resident **q = &att->residents; *q;) {
    kiln_resident *r = *q;
    if (r->offset < hi && lo < r->offset + r->length) {
      *q = r->next;
      resident_free(d, r);
    } else {
      q = &r->next;
    }
  }
  if (p == KILN_PLACEMENT_MAPPED) return KILN_OK;
  kiln_resident *r;
  KILN_RETURN_IF_ERROR(resident_create(d, att, lo, hi - lo, false, 0,
                                       p == KILN_PLACEMENT_DEVICE, &r));
  /* A DEVICE range starts as the host's bytes at this call: the upload is
   * done before the guest runs again, so its later writes stay on the host
   * as documented, not racing the copy. */
  if (r->device_only && r->dev_addr) sync_keep_error(d);
  return KILN_OK;
}

kiln_placement kiln_device_placement(kiln_device *d, const kiln_memory *m,
                                     uint64_t offset) {
  kiln_device_attachment *att = kiln_attachment_find(d, m);
  if (!att) return KILN_PLACEMENT_NONE;
  bool straddles;
  const kiln_resident *r = kiln_resident_find(att, offset, offset + 1, &straddles);
  if (r) return r->device_only ? KILN_PLACEMENT_DEVICE : KILN_PLACEMENT_RESIDENT;
  return KILN_PLACEMENT_MAPPED;
}

kiln_status kiln_device_address(kiln_device *d, const kiln_memory *m,
                                uint64_t offset, uint64_t *out_address) {
  *out_address = 0;
  kiln_device_attachment *att = kiln_attachment_find(d, m);
  if (!att)
    return kiln_make_status(KILN_CODE_FAILED_PRECONDITION,
                            "memory '%s' is not attached to this device",
                            kiln_memory_name(m));
  if (offset >= kiln_memory_size(m))
    return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                            "offset %llu is outside memory '%s' of %llu bytes",
                            (unsigned long long)offset, kiln_memory_name(m),
                            (unsigned long long)kiln_memory_size(m));
  bool straddles;
  kiln_resident *r = kiln_resident_find(att, offset, offset + 1, &straddles);
  if (r && r->dev_addr)
    *out_address = r->dev_addr + (offset - r->offset);
  else
    *out_address = (uint64_t)(uintptr_t)kiln_memory_base(m) + offset;
  return KILN_OK;
}

/* ---- Coherence around ops ------------------------------------------------- */

static bool page_dirty(const kiln_resident *r, uint64_t p) {
  return (atomic_load(&r->dirty[p / 64]) >> (p % 64)) & 1;
}

static bool page_hot(const kiln_resident *r, uint64_t p) {
  return (atomic_load(&r->hot[p / 64]) >> (p % 64)) & 1;
}

/* Uploads [lo, hi) of r minus the bytes ops wrote on the device. */
static kiln_status upload_minus_written(kiln_device *d, kiln_resident *r,
                                        uint64_t lo, uint64_t hi,
                                        uint64_t *bytes) {
  uint8_t *base = base_of(r->att);
  uint64_t cur = lo;
  for (size_t i = 0; i <= r->written.n && cur < hi; i++) {
    uint64_t stop = i < r->written.n ? r->written.v[i].lo : hi;
    if (stop > hi) stop = hi;
    if (stop > cur) {
      KILN_RETURN_IF_ERROR(d->vt->upload(d, r->dev_addr + (cur - r->offset),
                                         base + cur, stop - cur));
      *bytes += stop - cur;
    }
    if (i < r->written.n && r->written.v[i].hi > cur) cur = r->written.v[i].hi;
  }
  return KILN_OK;
}

/* Hot pages cool this often (in submits): a page still written every step
 * costs two faults per period, one the host stopped writing goes up at
 * most this many times more. */
#define KILN_HOT_COOL_SUBMITS 64

/* Every hot page of r turns dirty and forgets its first fault: sent (and
 * protected) like any dirty page when an op next reads it. It is writable
 * until then, as dirty pages are. */
static void cool_hot(kiln_resident *r) {
  for (uint64_t w = 0; w < (r->npages + 63) / 64; w++) {
    const uint64_t h = atomic_exchange(&r->hot[w], 0);
    if (!h) continue;
    atomic_fetch_or(&r->dirty[w], h);
    atomic_fetch_and(&r->seen[w], ~h);
  }
}

/* Sends the dirty pages of r that [lo, hi) touches, whole, and protects
 * them again. */
static kiln_status upload_dirty(kiln_device *d, kiln_resident *r, uint64_t lo,
                                uint64_t hi, uint64_t *bytes) {
  if (r->eager) return upload_minus_written(d, r, lo, hi, bytes);
  if (d->submit_gen - r->cool_gen >= KILN_HOT_COOL_SUBMITS) {
    cool_hot(r);
    r->cool_gen = d->submit_gen;
  }
  uint64_t ps = host_page();
  uint64_t p = (lo - r->offset) / ps;
  uint64_t p1 = (hi - r->offset + ps - 1) / ps;
  if (p1 > r->npages) p1 = r->npages;
  uint8_t *base = base_of(r->att);
  while (p < p1) {
    /* Clean stretches a word of the bitmaps at a time: an op's operand
     * can span thousands of pages (weights, a KV cache), and this runs
     * for every operand of every op at every submit. */
    const uint64_t any = (atomic_load(&r->dirty[p / 64]) |
                          atomic_load(&r->hot[p / 64])) >> (p % 64);
    if (!any) {
      p = (p / 64 + 1) * 64;
      continue;
    }
    p += (uint64_t)__builtin_ctzll(any);
    if (p >= p1) break;
    if (page_hot(r, p)) {   /* writable for good: up once per submit */
      if (r->sent_gen != d->submit_gen) {
        memset(r->sent, 0, (r->npages + 63) / 64 * sizeof(uint64_t));
        r->sent_gen = d->submit_gen;
      }
      uint64_t q = p;
      while (q < p1 && page_hot(r, q) && !((r->sent[q / 64] >> (q % 64)) & 1)) {
        r->sent[q / 64] |= (uint64_t)1 << (q % 64);
        q++;
      }
      if (q == p) {   /* already sent during this submit */
        p++;
        continue;
      }
      uint64_t a = r->offset + p * ps, b = r->offset + q * ps;
      KILN_RETURN_IF_ERROR(upload_minus_written(d, r, a, b, bytes));
      p = q;
      continue;
    }
    if (!page_dirty(r, p)) {
      p++;
      continue;
    }
    uint64_t q = p;
    /* Clear the bit, then protect, then copy: a store after the clear is
     * either in the copy or faults and marks the page again. */
    while (q < p1 && page_dirty(r, q) && !page_hot(r, q)) {
      atomic_fetch_and(&r->dirty[q / 64], ~((uint64_t)1 << (q % 64)));
      q++;
    }
    uint64_t off = r->offset + p * ps, len = (q - p) * ps;
    if (mprotect(base + off, len, PROT_READ) != 0)
      return kiln_status_from_errno(errno, "protecting a RESIDENT range");
    KILN_RETURN_IF_ERROR(upload_minus_written(d, r, off, off + len, bytes));
    p = q;
  }
  return KILN_OK;
}

/* Calls fn for every contiguous byte run of a tensor view; false when there
 * would be more than `limit` runs. */
#define KILN_MAX_WRITE_RUNS 4096
static bool count_runs(const kiln_tensor *t, uint64_t *runs,
                       uint64_t *run_elems, uint32_t *outer) {
  uint32_t r = t->rank;
  uint64_t inner = t->stride[r - 1] == 1 ? (uint64_t)t->shape[r - 1] : 1;
  uint32_t k = t->stride[r - 1] == 1 ? r - 1 : r;
  while (k > 0 && (uint64_t)t->stride[k - 1] == inner) {
    inner *= (uint64_t)t->shape[k - 1];
    k--;
  }
  uint64_t n = 1;
  for (uint32_t j = 0; j < k; j++) n *= (uint64_t)t->shape[j];
  *runs = n;
  *run_elems = inner;
  *outer = k;
  return n <= KILN_MAX_WRITE_RUNS;
}

static kiln_status add_runs(kiln_resident *r, const kiln_tensor *t) {
  uint64_t runs, elems;
  uint32_t outer;
  count_runs(t, &runs, &elems, &outer);
  uint64_t es = kiln_dtype_size(t->dtype);
  int64_t idx[KILN_MAX_RANK] = {0};
  for (uint64_t i = 0; i < runs; i++) {
    uint64_t off = t->offset;
    for (uint32_t k = 0; k < outer; k++)
      off += (uint64_t)idx[k] * (uint64_t)t->stride[k] * es;
    KILN_RETURN_IF_ERROR(kiln_intervals_add(&r->written, off, off + elems * es));
    for (uint32_t k = outer; k-- > 0;) {
      if (++idx[k] < t->shape[k]) break;
      idx[k] = 0;
    }
  }
  return KILN_OK;
}

/* The value of op's index operand as the op will read it, when the host
 * knows it (not written by a pending device op). */
static bool host_index(const kiln_vop *v, int32_t *out) {
  const kiln_operand_extent *e = &v->ext[KILN_OPND_INDEX];
  if (!e->att) return false;
  if (e->res && e->res->tracked &&
      intervals_intersect(&e->res->written, e->lo, e->lo + 4))
    return false;
  memcpy(out, kiln_memory_base(e->att->memory) + e->lo, 4);
  return true;
}

kiln_status kiln_coherence_before_op(kiln_device *d, const kiln_vop *v,
                                     uint64_t *to_device) {
  /* The tensor each written operand really writes, and whether its bytes
   * must be current on the device first (too fragmented to track: the
   * whole extent is then treated as written, so it must hold the host's
   * bytes where the op does not write). */
  kiln_tensor wt[KILN_OPND_COUNT];
  bool whole[KILN_OPND_COUNT] = {false}, skip[KILN_OPND_COUNT] = {false};
  bool any = false;
  for (int w = 0; w < KILN_OPND_COUNT; w++) {
    const kiln_operand_extent *e = &v->ext[w];
    if (e->att && e->res && e->res->tracked) any = true;
  }
  if (!any) return KILN_OK;
  for (int w = 0; w < KILN_OPND_COUNT; w++) {
    const kiln_operand_extent *e = &v->ext[w];
    if (!e->write || !e->res || !e->res->tracked) continue;
    const kiln_tensor *src = w == KILN_OPND_B   ? &v->op.b
                             : w == KILN_OPND_C ? &v->op.c
                             : w == KILN_OPND_D ? &v->op.d
                                                : &v->op.a;
    wt[w] = *src;
    if (v->op.kind == KILN_OP_COPY && v->op.index.memory) {
      int32_t pos;
      if (!host_index(v, &pos)) {
        whole[w] = true;
        continue;
      }
      int64_t n = v->op.a.shape[0];
      if (pos < 0 || pos > wt[w].shape[0] - n) {
        skip[w] = true; /* the op fails on the device, writing nothing */
        continue;
      }
      wt[w].offset += (uint64_t)pos * (uint64_t)wt[w].stride[0] *
                      kiln_dtype_size(wt[w].dtype);
      wt[w].shape[0] = n;
    }
    uint64_t runs, elems;
    uint32_t outer;
    if (!count_runs(&wt[w], &runs, &elems, &outer)) whole[w] = true;
  }
  for (int w = 0; w < KILN_OPND_COUNT; w++) {
    const kiln_operand_extent *e = &v->ext[w];
    if (!e->res || !e->res->tracked || !(e->read || whole[w])) continue;
    KILN_RETURN_IF_ERROR(upload_dirty(d, e->res, e->lo, e->hi, to_device));
  }
  for (int w = 0; w < KILN_OPND_COUNT; w++) {
    const kiln_operand_extent *e = &v->ext[w];
    if (!e->write || !e->res || !e->res->tracked || skip[w]) continue;
    if (whole[w])
      KILN_RETURN_IF_ERROR(kiln_intervals_add(&e->res->written, e->lo, e->hi));
    else
      KILN_RETURN_IF_ERROR(add_runs(e->res, &wt[w]));
  }
  return KILN_OK;
}

static kiln_status protect_clean(kiln_resident *r, uint64_t lo, uint64_t hi) {
  if (r->eager) return KILN_OK;
  uint64_t ps = host_page();
  uint64_t p = (lo - r->offset) / ps, p1 = (hi - r->offset + ps - 1) / ps;
  uint8_t *base = base_of(r->att);
  while (p < p1) {
    if (page_dirty(r, p) || page_hot(r, p)) {
      p++;
      continue;
    }
    uint64_t q = p;
    while (q < p1 && !page_dirty(r, q) && !page_hot(r, q)) q++;
    if (mprotect(base + r->offset + p * ps, (q - p) * ps, PROT_READ) != 0)
      return kiln_status_from_errno(errno, "protecting a RESIDENT range");
    p = q;
  }
  return KILN_OK;
}

/* Copy-back in two halves around the one stream wait of a sync: begin
 * unprotects the pages that ops wrote and queues their downloads behind
 * the ops (the guest is blocked in sync, so nothing stores to them), end
 * protects them again once the stream is idle. One wait instead of two. */
kiln_status kiln_coherence_copy_back_begin(kiln_device *d, uint64_t *to_host) {
  uint64_t ps = host_page();
  kiln_status s = KILN_OK;
  for (kiln_device_attachment *att = d->attachments; att; att = att->next) {
    for (kiln_resident *r = att->residents; r; r = r->next) {
      if (!r->tracked || !r->written.n) continue;
      uint8_t *base = base_of(att);
      for (size_t i = 0; i < r->written.n && !s; i++) {
        uint64_t lo = r->written.v[i].lo, hi = r->written.v[i].hi;
        uint64_t plo = lo / ps * ps, phi = (hi + ps - 1) / ps * ps;
        if (!d->dma_downloads &&
            mprotect(base + plo, phi - plo, PROT_READ | PROT_WRITE) != 0) {
          s = kiln_status_from_errno(errno, "unprotecting a RESIDENT range");
          break;
        }
        s = d->vt->download(d, base + lo, r->dev_addr + (lo - r->offset),
                            hi - lo);
        if (!s) *to_host += hi - lo;
      }
    }
  }
  return s;
}

kiln_status kiln_coherence_copy_back_end(kiln_device *d) {
  uint64_t ps = host_page();
  kiln_status s = KILN_OK;
  for (kiln_device_attachment *att = d->attachments; att; att = att->next) {
    for (kiln_resident *r = att->residents; r; r = r->next) {
      if (!r->tracked || !r->written.n) continue;
      /* Pages a DMA download wrote kept their protection; a page is
       * writable only while dirty or hot, which protect_clean leaves. */
      for (size_t i = 0; i < r->written.n && !d->dma_downloads; i++) {
        kiln_status p = protect_clean(r, r->written.v[i].lo / ps * ps,
                                      r->written.v[i].hi);
        if (!s) s = p;
        else kiln_status_free(p);
      }
      r->written.n = 0;
    }
  }
  return s;
}
