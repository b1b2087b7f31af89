/* kiln dispatch: Wasm kernel executables run across a worker pool over one
 * shared device memory, driven by command buffers.
 *
 * The pieces, bottom up:
 *
 * - kiln_dmem: one growable linear memory (a kiln_memory) for every
 *   executable, with a suballocator for buffers (alignment, free, reuse,
 *   fragmentation reported). Its base never moves, so offsets and host
 *   pointers stay valid across growth. Guest address 0 stays unused.
 * - kiln_pool: N worker threads (default: one per core). Each worker owns a
 *   shadow-stack region in the device memory. A pool may carry a
 *   kiln_device for GPU ops recorded in its command buffers.
 * - kiln_executable: a .wasm exporting any number of kernels
 *   (sdk/kiln_kernel.h), compiled through the engine's pipeline cache and
 *   loaded into a pool: kiln places its static data in its own region of
 *   the device memory and gives each worker its own instance state (the
 *   instance struct, tables, its stack pointer) over the same compiled code
 *   and the same memory. Load and unload at any time, while workers run
 *   other executables' work.
 * - kiln_cmdbuf: a recorded list of kernel dispatches, GPU ops, copies and
 *   barriers; submitted to the pool, waited on through its fence, and
 *   submitted again as often as wanted.
 *
 * Execution: a pool runs submitted command buffers one at a time in
 * submission order (any number of threads may submit at once), and the
 * commands of one buffer in record order: a dispatch starts after the
 * commands before it have finished, GPU ops included (consecutive GPU ops
 * are queued together; the device is synchronised before the next non-GPU
 * command and at the end of the buffer). A dispatch's workgroups run on all
 * workers at once in no set order, handed out by an atomic counter: no lock
 * and no allocation on the per-workgroup path, nor anywhere between submit
 * and the fence (argument blocks are written when a dispatch is recorded).
 *
 * Failures: a trap in a workgroup stops that dispatch (workgroups already
 * running finish), skips the rest of its command buffer, and fails the
 * buffer's fence with a KILN_CODE_TRAP status naming the kernel, the
 * executable and the workgroup. Pool, memory and executables stay usable.
 *
 * Thread safety: dmem, pool and executable functions are thread-safe. A
 * command buffer is recorded by one thread at a time and must not be
 * recorded, reset or released while it is pending (submitted, fence not yet
 * waited). All objects are reference counted where a retain is offered;
 * everything else is created/released by its one owner. */
#ifndef KILN_DISPATCH_H_
#define KILN_DISPATCH_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_dmem kiln_dmem;
typedef struct kiln_pool kiln_pool;
typedef struct kiln_executable kiln_executable;
typedef struct kiln_cmdbuf kiln_cmdbuf;
typedef struct kiln_fence kiln_fence;

/* ---- Device memory and its suballocator ---------------------------------- */

typedef struct kiln_dmem_options {
  uint64_t initial_bytes; /* committed at creation; 0: 1 MiB */
  uint64_t max_bytes;     /* growth limit; 0: 4 GiB */
  const char *name;       /* for messages; may be NULL */
} kiln_dmem_options;

kiln_status kiln_dmem_create(const kiln_dmem_options *o, kiln_dmem **out);
void kiln_dmem_retain(kiln_dmem *d);
void kiln_dmem_release(kiln_dmem *d);
/* The memory itself (the dmem keeps its reference): attach it to a device,
 * turn offsets into pointers with kiln_memory_range(). */
kiln_memory *kiln_dmem_memory(kiln_dmem *d);

/* Allocates `size` bytes (> 0) at an offset that is a multiple of `align`
 * (a power of two; 0 means 16). Best fit among free blocks; grows the
 * memory when none fits. Errors: INVALID_ARGUMENT, RESOURCE_EXHAUSTED (past
 * max_bytes). The bytes are not cleared. */
kiln_status kiln_dmem_alloc(kiln_dmem *d, uint64_t size, uint64_t align,
                            uint64_t *out_offset);
/* Frees an allocation by its offset; neighbouring free blocks merge.
 * INVALID_ARGUMENT if `offset` does not start a live allocation. */
kiln_status kiln_dmem_free(kiln_dmem *d, uint64_t offset);
/* OK if [offset, offset + size) lies inside one live allocation, else
 * OUT_OF_RANGE saying what it overlaps. */
kiln_status kiln_dmem_check(kiln_dmem *d, uint64_t offset, uint64_t size);

typedef struct kiln_dmem_stats {
  uint64_t size;          /* bytes committed (the memory's size) */
  uint64_t used;          /* bytes in live allocations (incl. padding) */
  uint64_t free;          /* bytes in free blocks */
  uint64_t largest_free;  /* the largest free block */
  uint64_t allocations;   /* live allocations */
  uint64_t free_blocks;
  uint64_t grows;         /* times the memory grew */
  /* 1 - largest_free / free: 0 when all free space is one block, near 1
   * when it is scattered in small pieces. */
  double fragmentation;
} kiln_dmem_stats;
void kiln_dmem_get_stats(kiln_dmem *d, kiln_dmem_stats *out);

/* ---- Worker pool --------------------------------------------------------- */

typedef struct kiln_pool_options {
  int threads;           /* workers; 0: one per online core */
  uint32_t stack_bytes;  /* each worker's shadow stack; 0: 256 KiB */
  /* Device for GPU ops in command buffers (optional; retained). The pool
   * attaches the device memory to it. The pool is then the device's one
   * user while command buffers run (kiln_device is one stream). */
  kiln_device *device;
} kiln_pool_options;

kiln_status kiln_pool_create(kiln_dmem *d, const kiln_pool_options *o,
                             kiln_pool **out);
/* Waits for submitted command buffers, stops the workers and releases the
 * pool's share of the memory. Executables keep the pool alive: release
 * them first or after; the workers stop when the last one goes. */
void kiln_pool_release(kiln_pool *p);
int kiln_pool_threads(const kiln_pool *p);
kiln_dmem *kiln_pool_dmem(kiln_pool *p);

/* ---- Executables ----------------------------------------------------------- */

/* Compiles (or fetches from the pipeline cache) and loads a kernel
 * executable into the pool: allocates its static-data region, creates one
 * instance per worker. Errors: INVALID_MODULE, FAILED_PRECONDITION (not a
 * position-independent kernel module: see sdk/LINKING.md), LINK (imports
 * other than the kernel ABI's), RESOURCE_EXHAUSTED. `name` is used in
 * messages; may be NULL. */
kiln_status kiln_executable_load(kiln_pool *p, kiln_engine *e,
                                 const uint8_t *bytes, size_t size,
                                 const char *name, kiln_executable **out);
kiln_status kiln_executable_load_file(kiln_pool *p, kiln_engine *e,
                                      const char *path,
                                      kiln_executable **out);
void kiln_executable_retain(kiln_executable *x);
/* Unloads when the last reference goes: command buffers that recorded a
 * dispatch of it hold one, so releasing while they run is safe. */
void kiln_executable_release(kiln_executable *x);
const char *kiln_executable_name(const kiln_executable *x);
size_t kiln_executable_kernel_count(const kiln_executable *x);
const char *kiln_executable_kernel_name(const kiln_executable *x, size_t i);
/* The static-data region kiln placed the module at: [*begin, *end). */
void kiln_executable_region(const kiln_executable *x, uint64_t *begin,
                            uint64_t *end);

/* ---- Command buffers ------------------------------------------------------- */

/* A buffer binding: [offset, offset + size) of the pool's device memory. */
typedef struct kiln_binding {
  uint64_t offset;
  uint64_t size;
} kiln_binding;

typedef struct kiln_dispatch_desc {
  kiln_executable *executable;
  const char *kernel;
  uint32_t groups[3];           /* workgroups per axis; 0 counts as 1 */
  uint32_t binding_count;       /* <= 8 */
  const kiln_binding *bindings;
  uint32_t push_count;          /* <= 16 */
  const uint32_t *push;
} kiln_dispatch_desc;

kiln_status kiln_cmdbuf_create(kiln_pool *p, kiln_cmdbuf **out);
/* Waits for the buffer if it is pending, then frees it. */
void kiln_cmdbuf_release(kiln_cmdbuf *cb);
/* Empties the buffer for recording again. FAILED_PRECONDITION if pending. */
kiln_status kiln_cmdbuf_reset(kiln_cmdbuf *cb);
size_t kiln_cmdbuf_command_count(const kiln_cmdbuf *cb);

/* Records a dispatch. Checked now, not when it runs: the executable belongs
 * to this pool, the kernel exists, every binding lies inside one live
 * allocation of the device memory (OUT_OF_RANGE otherwise, naming the
 * binding), counts are within limits (INVALID_ARGUMENT). The argument block
 * is allocated in the device memory and written here. */
kiln_status kiln_cmdbuf_dispatch(kiln_cmdbuf *cb, const kiln_dispatch_desc *d);
/* Records a copy of `size` bytes from src to dst (device memory offsets;
 * each range inside one live allocation; may overlap). */
kiln_status kiln_cmdbuf_copy(kiln_cmdbuf *cb, uint64_t dst_offset,
                             uint64_t src_offset, uint64_t size);
/* Records a fill of [dst, dst + size) with a 32-bit pattern (size a
 * multiple of 4). */
kiln_status kiln_cmdbuf_fill(kiln_cmdbuf *cb, uint64_t dst_offset,
                             uint64_t size, uint32_t pattern);
/* Records a GPU op on the pool's device (validated now with
 * kiln_device_validate; FAILED_PRECONDITION if the pool has no device). Its
 * tensors may name the device memory: Wasm kernels and GPU ops then work on
 * the same bytes with no copies. */
kiln_status kiln_cmdbuf_gpu(kiln_cmdbuf *cb, const kiln_op *op);
/* Records a barrier: everything before it, GPU ops included, completes
 * before anything after it starts. */
kiln_status kiln_cmdbuf_barrier(kiln_cmdbuf *cb);

/* Submits the buffer to its pool. *out_fence (may be NULL) belongs to the
 * buffer and stays valid until it is reset, released or submitted again.
 * FAILED_PRECONDITION if already pending. */
kiln_status kiln_cmdbuf_submit(kiln_cmdbuf *cb, kiln_fence **out_fence);
/* Blocks until the buffer has run; returns its outcome (the caller owns
 * it): OK, or the first failure (a trap naming kernel and workgroup, a GPU
 * op's error). Waiting again returns the same outcome again. */
kiln_status kiln_fence_wait(kiln_fence *f);
bool kiln_fence_is_done(const kiln_fence *f);
/* Submit and wait. */
kiln_status kiln_cmdbuf_run(kiln_cmdbuf *cb);

#ifdef __cplusplus
}
#endif
#endif /* KILN_DISPATCH_H_ */
