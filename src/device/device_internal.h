/* The device backend interface: what src/device/device.c (validation,
 * placement, coherence, programs, stats: everything backends share) asks
 * of a backend (cpu/, cuda/).
 *
 * The core validates an op, works out each operand's byte extent, makes
 * RESIDENT inputs current on the device, then hands the backend a resolved
 * op: every operand already turned into the address the device uses
 * (the host address for MAPPED ranges, the device copy for RESIDENT ones).
 * Backends never see guest offsets and never check bounds again; they only
 * launch work on their stream, in order.
 *
 * Backend methods are called from the one thread that uses the device. */
#ifndef KILN_DEVICE_INTERNAL_H_
#define KILN_DEVICE_INTERNAL_H_

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "kiln/device.h"

/* A resolved operand: device address of element [0,..,0], the view, and
 * whether it is present. */
typedef struct kiln_dtensor {
  uint64_t addr;               /* 0: absent */
  kiln_dtype dtype;
  uint32_t rank;
  int64_t shape[KILN_MAX_RANK];
  int64_t stride[KILN_MAX_RANK];  /* elements, never all-zero here */
} kiln_dtensor;

/* A validated op with device addresses. rows/cols are the flattened view
 * the core computed for row-wise ops (cols = last dimension). */
/* An op's operands, in kiln_dop's order. */
enum { KILN_OPND_A, KILN_OPND_B, KILN_OPND_C, KILN_OPND_D, KILN_OPND_INDEX,
       KILN_OPND_COUNT };

typedef struct kiln_dop {
  kiln_op_kind kind;
  uint32_t flags;
  uint32_t writes;             /* bit KILN_OPND_*: the operands it writes */
  kiln_dtensor a, b, c, d, index;
  float alpha, beta, eps;
  int64_t pos;
  int64_t rows, cols;          /* of operand a, for row-wise ops */
} kiln_dop;

/* Operand `which` (KILN_OPND_*) of op. */
static inline const kiln_dtensor *kiln_dop_operand(const kiln_dop *op, int which) {
  switch (which) {
    case KILN_OPND_A: return &op->a;
    case KILN_OPND_B: return &op->b;
    case KILN_OPND_C: return &op->c;
    case KILN_OPND_D: return &op->d;
    default: return &op->index;
  }
}

/* Same rank and dimensions (strides aside). */
static inline bool kiln_dtensor_same_shape(const kiln_dtensor *x,
                                           const kiln_dtensor *y) {
  if (x->rank != y->rank) return false;
  for (uint32_t k = 0; k < x->rank; k++)
    if (x->shape[k] != y->shape[k]) return false;
  return true;
}

typedef struct kiln_device_vtable {
  void (*destroy)(kiln_device *d);                        /* stays first */
  /* Makes host range [p, p + n) addressable by the device at address p
   * (CUDA: cuMemHostRegister, device pointer == host pointer). read_only:
   * the device only reads it. Page-aligned. NULL method: nothing needed. */
  kiln_status (*register_host)(kiln_device *d, void *p, uint64_t n,
                               bool read_only);
  void (*unregister_host)(kiln_device *d, void *p, uint64_t n);
  /* Device memory for RESIDENT copies. NULL alloc: the backend computes on
   * host memory, and RESIDENT behaves like MAPPED. */
  kiln_status (*alloc)(kiln_device *d, uint64_t n, uint64_t *out_addr);
  void (*free)(kiln_device *d, uint64_t addr, uint64_t n);
  /* Copies in stream order (queued behind earlier ops). The host side is
   * ordinary pageable memory that stays valid until the next sync. */
  kiln_status (*upload)(kiln_device *d, uint64_t dst, const void *src,
                        uint64_t n);
  kiln_status (*download)(kiln_device *d, void *dst, uint64_t src,
                          uint64_t n);
  /* Queues one op. Must not fail for a validated op except for resource
   * trouble on the device. */
  kiln_status (*launch)(kiln_device *d, const kiln_dop *op);
  /* Optional: queues ops[0..n) in order, as n launches would, but free to
   * run several with one kernel (a program's ops). NULL: launch each. */
  kiln_status (*launch_seq)(kiln_device *d, const kiln_dop *ops, size_t n);
  /* Waits for the stream. Returns a device-side failure recorded by a
   * kernel since the last sync (bad index, bad token id), or a backend
   * error. */
  kiln_status (*sync)(kiln_device *d);
  /* Optional: record the launches between begin and end into a replayable
   * graph (*out_graph), launch it, free it. NULL: the core replays a
   * program by launching its ops one by one. begin gets the ops that will
   * be launched (ops[0..n)), to set up what they need first: nothing can
   * be allocated while recording. */
  kiln_status (*graph_begin)(kiln_device *d, const kiln_dop *ops, size_t n);
  kiln_status (*graph_end)(kiln_device *d, void **out_graph);
  kiln_status (*graph_launch)(kiln_device *d, void *graph);
  void (*graph_free)(kiln_device *d, void *graph);
} kiln_device_vtable;

/* Fields every backend's device object starts with. The core owns
 * everything after `vt` and `kind`; the backend fills those and `name`. */
typedef struct kiln_device_attachment kiln_device_attachment;
struct kiln_device {
  const kiln_device_vtable *vt;
  kiln_device_kind kind;
  int refs;
  char describe[256];
  kiln_device_attachment *attachments;   /* core: attached memories */
  kiln_status pending_error;             /* core: first deferred error */
  kiln_device_stats stats;               /* core */
  /* Replay programs op by op even if the backend can record graphs (set by
   * a backend, e.g. cuda while profiling, or KILN_DEVICE_NO_GRAPHS=1). */
  bool no_graphs;
  /* Set by a backend whose downloads into attached (registered) host
   * memory are DMA, which page protection does not stop: copy-back then
   * leaves the protection of the pages it writes as it is (two mprotect
   * calls fewer per written range and sync). */
  bool dma_downloads;
  uint64_t resident_eager_max;           /* core: see kiln_device_options */
  uint64_t submit_gen;                   /* core: one per submit call */
  /* core: bumped by attach, detach and place, which change how operands
   * resolve; a program re-validates its ops only when it moved. */
  uint64_t placement_epoch;
  /* core, KILN_DEVICE_TIMING=1: host time spent in program submits and in
   * syncs, printed to stderr at release (where a step's time goes). */
  bool timing;
  /* KILN_DEVICE_ONLY=0: DEVICE placements are made RESIDENT (comparisons). */
  bool device_as_resident;
  uint64_t timing_submit_ns, timing_submits, timing_sync_ns, timing_syncs;
  uint64_t timing_coherence_ns, timing_launch_ns;   /* parts of submits */
};

/* Backend constructors. Each returns UNAVAILABLE with a one-line reason
 * when it cannot run here (cuda: no libcuda, no GPU, built without
 * kernels). `d` is allocated by the backend with its own state after the
 * common header; the core zeroes and fills the header fields it owns. */
kiln_status kiln_cpu_device_create(const kiln_device_options *o,
                                   kiln_device **out);
kiln_status kiln_cuda_device_create(const kiln_device_options *o,
                                    int ordinal, kiln_device **out);

/* Shared by backends and tests: the reference math for one op on host
 * addresses, rows [row_begin, row_end) of its parallel dimension (the
 * whole op when the op has none). Plain C, the definition of each op's
 * result. */
int64_t kiln_ref_parallel_rows(const kiln_dop *op);
kiln_status kiln_ref_run(const kiln_dop *op, int64_t row_begin,
                         int64_t row_end);

/* bf16/f16 conversions (round to nearest even). */
float kiln_bf16_to_f32(uint16_t h);
uint16_t kiln_f32_to_bf16(float f);
float kiln_f16_to_f32(uint16_t h);
uint16_t kiln_f32_to_f16(float f);

#endif /* KILN_DEVICE_INTERNAL_H_ */
