/* Internals of the device core (src/device/device.c, coherence.c): the
 * attachment of a memory to a device, RESIDENT ranges and their coherence
 * state, and the validated form of an op. Backends do not include this. */
#ifndef KILN_DEVICE_CORE_H_
#define KILN_DEVICE_CORE_H_

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "device/device_internal.h"

/* Byte intervals [lo, hi) of a memory, sorted, disjoint and coalesced
 * (touching intervals merge). */
typedef struct kiln_interval {
  uint64_t lo, hi;
} kiln_interval;
typedef struct kiln_interval_set {
  kiln_interval *v;
  size_t n, cap;
} kiln_interval_set;

/* One RESIDENT range of an attached memory. */
typedef struct kiln_resident {
  struct kiln_resident *next;
  kiln_device_attachment *att;
  uint64_t offset, length;   /* memory offsets, whole host pages */
  /* Device copy; 0 when the backend computes on host memory (no alloc):
   * then the range is bookkeeping only. */
  uint64_t dev_addr;
  uint64_t dev_alloc;        /* what alloc returned: dev_addr minus a shift */
  bool aligned;              /* allocated with 255 spare bytes for it */
  /* A DEVICE range: the device copy is the only current one (not
   * tracked; brought back to the host when the range ends). */
  bool device_only;
  /* Small tracked range (kiln_device_options.resident_eager_max): never
   * protected; every op that reads it sends the bytes it reads. */
  bool eager;
  /* Writable memory with a device copy: pages are write-protected while
   * clean, and `dirty` has one bit per host page (set by the fault hook). */
  bool tracked;
  _Atomic uint64_t *dirty;
  /* Pages that faulted again after being protected once more (`seen` then
   * `hot`): written between ops as a rule (a token's input), so they stay
   * writable and go up whenever an op reads them. Saves a fault per page
   * per step. Every KILN_HOT_COOL_SUBMITS submits (coherence.c) hot pages
   * cool: they turn dirty, are protected again when next sent, and must
   * fault twice more to turn hot again, so a page the host stopped
   * writing stops going up (cool_gen: the submit of the last cooling). */
  _Atomic uint64_t *seen, *hot;
  uint64_t cool_gen;
  /* Hot pages go up whole, once per submit call (the host cannot store
   * during one): `sent` marks those sent in submit `sent_gen`. */
  uint64_t *sent;
  uint64_t sent_gen;
  uint64_t npages;
  int slot;                  /* fault registry slot, -1: none */
  kiln_interval_set written; /* bytes ops wrote since the last sync */
} kiln_resident;

typedef struct kiln_host_reg {
  uint64_t offset, length;
} kiln_host_reg;

struct kiln_device_attachment {
  kiln_device_attachment *next;
  kiln_device *dev;
  kiln_memory *memory;       /* one reference held */
  bool read_only;
  kiln_memory_subscription *sub;
  /* Host registrations [0, registered), one per attach or grow. Guarded by
   * `lock` because grow notifications arrive on the growing thread. */
  pthread_mutex_t lock;
  uint64_t registered;
  kiln_host_reg *regs;
  size_t nregs, capregs;
  kiln_resident *residents;
};

/* Where an operand lies, from validation: memory offsets [lo, hi). */
typedef struct kiln_operand_extent {
  kiln_device_attachment *att; /* NULL: operand absent */
  kiln_resident *res;          /* the RESIDENT range holding it, or NULL */
  uint64_t lo, hi;
  bool read, write;
} kiln_operand_extent;

/* An op after validation: the caller's op with strides made explicit, the
 * resolved op for the backend, and each operand's extent. */
typedef struct kiln_vop {
  kiln_op op;
  kiln_dop dop;
  kiln_operand_extent ext[KILN_OPND_COUNT];
} kiln_vop;

kiln_status kiln_device_check_op(kiln_device *d, const kiln_op *op,
                                 kiln_vop *out);

/* ---- coherence.c -------------------------------------------------------- */

kiln_device_attachment *kiln_attachment_find(kiln_device *d,
                                             const kiln_memory *m);
/* The RESIDENT range of `att` holding [lo, hi), NULL when the bytes are
 * MAPPED; *straddles is set when the span crosses a placement boundary. */
kiln_resident *kiln_resident_find(kiln_device_attachment *att, uint64_t lo,
                                  uint64_t hi, bool *straddles);
/* Makes RESIDENT inputs of `v` current on the device and records the bytes
 * it will write; adds the bytes uploaded to *to_device. */
kiln_status kiln_coherence_before_op(kiln_device *d, const kiln_vop *v,
                                     uint64_t *to_device);
/* Copies every device-written RESIDENT byte back (called by sync after the
 * backend drained); adds the bytes to *to_host. */
/* Sync's copy-back of device-written RESIDENT bytes: begin queues the
 * downloads (before the backend's wait), end re-protects (after it). */
kiln_status kiln_coherence_copy_back_begin(kiln_device *d, uint64_t *to_host);
kiln_status kiln_coherence_copy_back_end(kiln_device *d);
void kiln_coherence_detach_all(kiln_device *d);

/* Interval sets. */
kiln_status kiln_intervals_add(kiln_interval_set *s, uint64_t lo, uint64_t hi);
void kiln_intervals_free(kiln_interval_set *s);

#endif /* KILN_DEVICE_CORE_H_ */
