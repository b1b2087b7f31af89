/* kiln linear memories.
 *
 * A kiln_memory is a WebAssembly linear memory created by the host, apart
 * from any module. It is reserved once with guard pages (8 GiB of address
 * space for a 32-bit memory: 4 GiB of index range plus 4 GiB of static
 * offset, so compiled guest code needs no bounds checks), committed page by
 * page, and grown in place: its base pointer never changes for its whole
 * life. Any number of instances of any number of modules may import it at
 * once; the host sees the very bytes the guests see.
 *
 * Guest offsets and host pointers are different kinds of thing: a guest
 * (offset, length) becomes a host pointer only through kiln_memory_range(),
 * which checks it in 64-bit arithmetic.
 *
 * Thread safety: all functions are thread-safe. Growth is serialised by an
 * internal lock; readers of the size see either the old or the new size.
 * Reference counted: create/retain/release. */
#ifndef KILN_MEMORY_H_
#define KILN_MEMORY_H_

#include <stddef.h>
#include <stdint.h>

#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_WASM_PAGE_SIZE 65536u
/* A 32-bit memory holds at most 65536 pages (4 GiB). */
#define KILN_MEMORY_MAX_PAGES 65536u

typedef struct kiln_memory kiln_memory;

typedef struct kiln_memory_options {
  uint64_t initial_pages; /* pages committed at creation */
  uint64_t maximum_pages; /* 0 means KILN_MEMORY_MAX_PAGES */
  /* Refuse to grow past this many bytes even below maximum_pages (the CLI's
   * --max-memory). 0: no extra limit. */
  uint64_t max_bytes;
  const char *name;       /* for messages; copied; may be NULL */
} kiln_memory_options;

kiln_status kiln_memory_create(const kiln_memory_options *opts,
                               kiln_memory **out);

/* A read-only memory whose bytes are the file at `path`, mapped with mmap
 * (MAP_SHARED, PROT_READ): model weights are never read into the process.
 * The size is the file size rounded up to whole pages (the tail reads as
 * zero). Guest stores into it trap. It cannot grow. */
kiln_status kiln_memory_create_from_file(const char *path, kiln_memory **out);

void kiln_memory_retain(kiln_memory *m);
void kiln_memory_release(kiln_memory *m);

/* Base of the memory in the host's address space. Stable for the memory's
 * life. Do not turn guest offsets into pointers by hand: use range(). */
uint8_t *kiln_memory_base(const kiln_memory *m);
uint64_t kiln_memory_size(const kiln_memory *m);   /* bytes, up to 4 GiB */
uint64_t kiln_memory_pages(const kiln_memory *m);
uint64_t kiln_memory_max_pages(const kiln_memory *m);
int kiln_memory_is_read_only(const kiln_memory *m);
const char *kiln_memory_name(const kiln_memory *m);

/* Host pointer for guest range [offset, offset + length). Fails with
 * KILN_CODE_OUT_OF_RANGE unless offset + length <= size, computed without
 * overflow. length 0 at offset == size is valid (an empty range at the end).
 * The only way guest offsets become host pointers. */
kiln_status kiln_memory_range(const kiln_memory *m, uint64_t offset,
                              uint64_t length, void **out_ptr);

/* Same check without the status allocation, for hot paths (host functions
 * called by guests): returns NULL when out of range. */
void *kiln_memory_range_or_null(const kiln_memory *m, uint64_t offset,
                                uint64_t length);

/* Makes [p, p + length), host pointers into `m` from kiln_memory_range,
 * writable by a system call (read(2), getrandom(2)): a device may keep
 * pages of a RESIDENT range write-protected to learn what the host changes
 * (include/kiln/device.h), and the kernel answers a system call that
 * writes into such a page with EFAULT instead of a fault kiln could
 * handle. This stores into every page (an atomic add of zero: no value
 * changes), so protected pages fault here, in user space, and become
 * writable. Cheap: one atomic per 4 KiB. No-op for read-only memories. */
void kiln_memory_prepare_write(const kiln_memory *m, void *p, uint64_t length);

/* Grow by delta_pages. On success *out_old_pages (may be NULL) receives the
 * previous size in pages. Fails with RESOURCE_EXHAUSTED past the maximum or
 * max_bytes, with the errno's code if the OS refuses to commit pages, and
 * with a subscriber's status if one refuses (below). The base never moves.
 * Subscribers are told before this returns. */
kiln_status kiln_memory_grow(kiln_memory *m, uint64_t delta_pages,
                             uint64_t *out_old_pages);

/* Grow notifications. Called with the memory, the old and the new size in
 * bytes, after the new pages are committed, on the growing thread, with the
 * memory's grow lock held (so do not grow the same memory from inside).
 * Subscribers are called newest first. A subscriber may refuse the growth
 * by returning a status: the grow is then rolled back and that status
 * returned to the grower; subscribers after it are not called.
 * The device backend uses this to register new pages with the GPU. */
typedef kiln_status (*kiln_memory_grow_fn)(void *user, kiln_memory *m,
                                           uint64_t old_bytes,
                                           uint64_t new_bytes);
/* Rollback notification: a grow to new_bytes that this subscriber accepted
 * is being undone because a subscriber called after it refused. Called
 * before the pages [old_bytes, new_bytes) are decommitted (they are still
 * readable and writable), on the same thread and under the same lock as
 * the grow call, in the reverse of the order the grow calls were made; the
 * size stays old_bytes. A subscriber that set something up for the new
 * pages (a GPU registration, say) undoes it here. Cannot fail. */
typedef void (*kiln_memory_rollback_fn)(void *user, kiln_memory *m,
                                        uint64_t old_bytes,
                                        uint64_t new_bytes);
typedef struct kiln_memory_subscription kiln_memory_subscription;
/* Subscribes fn (and rollback, which may be NULL) with `user`. out may be
 * NULL: the subscription then lasts as long as the memory. */
kiln_status kiln_memory_subscribe_with_rollback(
    kiln_memory *m, kiln_memory_grow_fn fn, kiln_memory_rollback_fn rollback,
    void *user, kiln_memory_subscription **out);
/* The same without a rollback notification. */
kiln_status kiln_memory_subscribe(kiln_memory *m, kiln_memory_grow_fn fn,
                                  void *user,
                                  kiln_memory_subscription **out);
/* No notification of either kind runs after this returns. */
void kiln_memory_unsubscribe(kiln_memory *m, kiln_memory_subscription *sub);

/* Static-data regions claimed in this memory by the modules that import it
 * (see sdk/LINKING.md). Instantiation claims a module's region and fails if
 * it overlaps another live claim; freeing the instance releases it.
 * [begin, end) must hold at least one byte: an empty or reversed range is
 * INVALID_ARGUMENT (a caller's error), an overlap FAILED_PRECONDITION.
 * owner (may be NULL) names the claimant in messages. */
kiln_status kiln_memory_claim(kiln_memory *m, uint64_t begin, uint64_t end,
                              const char *owner, uint64_t *out_claim_id);
void kiln_memory_unclaim(kiln_memory *m, uint64_t claim_id);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MEMORY_H_ */
