/* The device memory of kernel executables and its suballocator.
 *
 * Blocks are kept in two arrays sorted by offset: free blocks and live
 * allocations. Allocation is best fit over the free blocks (ties to the
 * lowest offset), splitting off alignment padding as its own free block;
 * freeing merges with both neighbours. Both arrays are searched by
 * bisection. Everything is under one mutex: allocation happens when
 * executables load and dispatches are recorded, never while they run. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/reserve.h"
#include "kiln/dispatch.h"

typedef struct block {
  uint64_t offset, size;
} block;

typedef struct block_list {
  block *v;
  size_t n, cap;
} block_list;

struct kiln_dmem {
  atomic_int refs;
  kiln_memory *memory;
  uint64_t max_bytes;
  pthread_mutex_t lock;
  block_list free_blocks; /* sorted by offset, never adjacent */
  block_list live;        /* sorted by offset */
  uint64_t grows;
};

/* Guest address 0 is NULL: the first 64 KiB are never handed out. */
#define DMEM_RESERVED 65536u

static kiln_status oom(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
}

/* Index of the first block with offset >= off. */
static size_t lower_bound(const block_list *l, uint64_t off) {
  size_t lo = 0, hi = l->n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (l->v[mid].offset < off)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static kiln_status list_insert(block_list *l, size_t at, block b) {
  if (!kiln_reserve((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v, 64))
    return oom();
  memmove(l->v + at + 1, l->v + at, (l->n - at) * sizeof *l->v);
  l->v[at] = b;
  l->n++;
  return KILN_OK;
}

static kiln_status list_reserve(block_list *l, size_t n) {
  return kiln_reserve((void **)&l->v, &l->cap, n, sizeof *l->v, 64) ? KILN_OK
                                                                    : oom();
}

static void list_remove(block_list *l, size_t at) {
  memmove(l->v + at, l->v + at + 1, (l->n - at - 1) * sizeof *l->v);
  l->n--;
}

/* Returns [off, off+size) to the free list, merging with neighbours. */
static kiln_status add_free(kiln_dmem *d, uint64_t off, uint64_t size) {
  if (!size) return KILN_OK;
  block_list *f = &d->free_blocks;
  size_t i = lower_bound(f, off);
  bool merge_prev = i > 0 && f->v[i - 1].offset + f->v[i - 1].size == off;
  bool merge_next = i < f->n && off + size == f->v[i].offset;
  if (merge_prev && merge_next) {
    f->v[i - 1].size += size + f->v[i].size;
    list_remove(f, i);
  } else if (merge_prev) {
    f->v[i - 1].size += size;
  } else if (merge_next) {
    f->v[i].offset = off;
    f->v[i].size += size;
  } else {
    return list_insert(f, i, (block){off, size});
  }
  return KILN_OK;
}

kiln_status kiln_dmem_create(const kiln_dmem_options *o, kiln_dmem **out) {
  *out = NULL;
  kiln_dmem_options def = {0};
  if (!o) o = &def;
  uint64_t max = o->max_bytes ? o->max_bytes : (uint64_t)KILN_MEMORY_MAX_PAGES * KILN_WASM_PAGE_SIZE;
  uint64_t init = o->initial_bytes ? o->initial_bytes : (1u << 20);
  if (init < 2 * DMEM_RESERVED) init = 2 * DMEM_RESERVED;
  if (init > max)
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "device memory: initial size %llu is above the "
                            "maximum %llu", (unsigned long long)init,
                            (unsigned long long)max);
  kiln_dmem *d = calloc(1, sizeof *d);
  if (!d) return oom();
  atomic_init(&d->refs, 1);
  d->max_bytes = max;
  pthread_mutex_init(&d->lock, NULL);
  kiln_memory_options mo = {
      .initial_pages = (init + KILN_WASM_PAGE_SIZE - 1) / KILN_WASM_PAGE_SIZE,
      .maximum_pages = (max + KILN_WASM_PAGE_SIZE - 1) / KILN_WASM_PAGE_SIZE,
      .max_bytes = max,
      .name = o->name ? o->name : "device memory",
  };
  kiln_status s = kiln_memory_create(&mo, &d->memory);
  if (!s) {
    uint64_t size = kiln_memory_size(d->memory);
    s = add_free(d, DMEM_RESERVED, size - DMEM_RESERVED);
  }
  if (s) {
    kiln_dmem_release(d);
    return s;
  }
  *out = d;
  return KILN_OK;
}

void kiln_dmem_retain(kiln_dmem *d) { atomic_fetch_add(&d->refs, 1); }

void kiln_dmem_release(kiln_dmem *d) {
  if (!d || atomic_fetch_sub(&d->refs, 1) != 1) return;
  if (d->memory) kiln_memory_release(d->memory);
  free(d->free_blocks.v);
  free(d->live.v);
  pthread_mutex_destroy(&d->lock);
  free(d);
}

kiln_memory *kiln_dmem_memory(kiln_dmem *d) { return d->memory; }

/* Best fit: the free block leaving the least room after aligning. */
static bool find_fit(const kiln_dmem *d, uint64_t size, uint64_t align,
                     size_t *out_i, uint64_t *out_off) {
  bool found = false;
  uint64_t best_waste = UINT64_MAX;
  for (size_t i = 0; i < d->free_blocks.n; i++) {
    const block *b = &d->free_blocks.v[i];
    uint64_t off = (b->offset + align - 1) & ~(align - 1);
    if (off + size > b->offset + b->size) continue;
    uint64_t waste = b->size - size;
    if (waste < best_waste) {
      best_waste = waste;
      *out_i = i;
      *out_off = off;
      found = true;
      if (!waste) break;
    }
  }
  return found;
}

/* Grows the memory so that a block of `size` at `align` fits at its end. */
static kiln_status grow_for(kiln_dmem *d, uint64_t size, uint64_t align) {
  uint64_t old = kiln_memory_size(d->memory);
  /* The free block touching the end (if any) counts toward the need. */
  uint64_t tail_start = old;
  if (d->free_blocks.n) {
    const block *last = &d->free_blocks.v[d->free_blocks.n - 1];
    if (last->offset + last->size == old) tail_start = last->offset;
  }
  uint64_t off = (tail_start + align - 1) & ~(align - 1);
  uint64_t need = off + size - old;
  /* Grow geometrically (by at least a quarter) to keep growth rare. */
  uint64_t want = need > old / 4 ? need : old / 4;
  if (old + want > d->max_bytes) want = need;
  if (old + need > d->max_bytes)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "device memory: %llu more bytes needed, past its "
                            "maximum of %llu",
                            (unsigned long long)need,
                            (unsigned long long)d->max_bytes);
  uint64_t pages = (want + KILN_WASM_PAGE_SIZE - 1) / KILN_WASM_PAGE_SIZE;
  KILN_RETURN_IF_ERROR(kiln_memory_grow(d->memory, pages, NULL));
  d->grows++;
  return add_free(d, old, kiln_memory_size(d->memory) - old);
}

kiln_status kiln_dmem_alloc(kiln_dmem *d, uint64_t size, uint64_t align,
                            uint64_t *out_offset) {
  if (!align) align = 16;
  if (size > d->max_bytes)
    return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                            "device memory: %llu bytes is more than its "
                            "maximum of %llu", (unsigned long long)size,
                            (unsigned long long)d->max_bytes);
  if (!size || (align & (align - 1)) || align > (1u << 30))
    return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                            "device memory: cannot allocate %llu bytes "
                            "aligned to %llu",
                            (unsigned long long)size,
                            (unsigned long long)align);
  pthread_mutex_lock(&d->lock);
  size_t i;
  uint64_t off;
  kiln_status s = KILN_OK;
  if (!find_fit(d, size, align, &i, &off)) {
    s = grow_for(d, size, align);
    if (!s && !find_fit(d, size, align, &i, &off))
      s = kiln_make_status(KILN_CODE_INTERNAL, "device memory: no fit after "
                                               "growing");
  }
  /* Splitting the block can add one free block: reserve room first so
   * that nothing after the allocation is recorded can fail. */
  if (!s) s = list_reserve(&d->free_blocks, d->free_blocks.n + 1);
  if (!s) {
    size_t li = lower_bound(&d->live, off);
    s = list_insert(&d->live, li, (block){off, size});
  }
  if (!s) {
    block b = d->free_blocks.v[i];
    list_remove(&d->free_blocks, i);
    /* Padding before and room after go back; capacity was reserved. */
    kiln_status_free(add_free(d, b.offset, off - b.offset));
    kiln_status_free(add_free(d, off + size, b.offset + b.size - off - size));
    *out_offset = off;
  }
  pthread_mutex_unlock(&d->lock);
  return s;
}

kiln_status kiln_dmem_free(kiln_dmem *d, uint64_t offset) {
  pthread_mutex_lock(&d->lock);
  size_t i = lower_bound(&d->live, offset);
  kiln_status s;
  if (i < d->live.n && d->live.v[i].offset == offset) {
    block b = d->live.v[i];
    list_remove(&d->live, i);
    s = add_free(d, b.offset, b.size);
  } else {
    s = kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                         "device memory: %llu is not the start of a live "
                         "allocation", (unsigned long long)offset);
  }
  pthread_mutex_unlock(&d->lock);
  return s;
}

kiln_status kiln_dmem_check(kiln_dmem *d, uint64_t offset, uint64_t size) {
  pthread_mutex_lock(&d->lock);
  /* The last allocation starting at or before offset. */
  size_t i = lower_bound(&d->live, offset + 1);
  bool ok = false;
  if (i > 0) {
    const block *b = &d->live.v[i - 1];
    ok = offset >= b->offset && offset - b->offset <= b->size &&
         size <= b->size - (offset - b->offset);
  }
  pthread_mutex_unlock(&d->lock);
  if (ok) return KILN_OK;
  return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                          "[%llu, %llu) is not inside one live allocation "
                          "of the device memory (size %llu)",
                          (unsigned long long)offset,
                          (unsigned long long)(offset + size),
                          (unsigned long long)kiln_memory_size(d->memory));
}

void kiln_dmem_get_stats(kiln_dmem *d, kiln_dmem_stats *out) {
  memset(out, 0, sizeof *out);
  pthread_mutex_lock(&d->lock);
  out->size = kiln_memory_size(d->memory);
  for (size_t i = 0; i < d->free_blocks.n; i++) {
    uint64_t s = d->free_blocks.v[i].size;
    out->free += s;
    if (s > out->largest_free) out->largest_free = s;
  }
  for (size_t i = 0; i < d->live.n; i++) out->used += d->live.v[i].size;
  out->allocations = d->live.n;
  out->free_blocks = d->free_blocks.n;
  out->grows = d->grows;
  pthread_mutex_unlock(&d->lock);
  out->fragmentation =
      out->free ? 1.0 - (double)out->largest_free / (double)out->free : 0.0;
}
