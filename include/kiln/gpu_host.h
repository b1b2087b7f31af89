/* kiln_gpu host side: the import module "kiln_gpu" that lets a Wasm guest
 * run tensor ops on a kiln_device (include/kiln/device.h) over its own
 * linear memory. The guest side, with the ABI (struct layouts, error
 * codes, signatures), is sdk/kiln_gpu.h.
 *
 * A kiln_gpu_session is one guest's view of a device:
 *   - the device (retained);
 *   - a memory handle table: handle 0 is the guest's own memory (memory 0
 *     of the instance that calls), handles 1..n the extra memories the
 *     embedder granted by name (kiln_gpu_session_grant_memory), e.g. a
 *     read-only model file; plus named tensors inside them;
 *   - the guest's recorded programs and the message of its last failure.
 * Handles are per session: a guest can name only its own memory and what
 * was granted to it, never another guest's memory.
 *
 * Every guest call is checked before anything reaches the device: pointer
 * arguments with kiln_memory_range_or_null() in 64-bit arithmetic; op
 * structs copied out of guest memory first (no time-of-check to
 * time-of-use gap), then their fields (kind, dtype, rank, reserved, handle)
 * and finally the op as a whole by kiln_device_submit's validation. A bad
 * call returns a negative code to the guest, queues nothing, and never
 * traps it.
 *
 * Lifetime: the embedder creates the session (with a device it opened),
 * defines the imports into the linker used for the guest, instantiates,
 * optionally binds the guest's memory (kiln_gpu_session_bind_memory;
 * otherwise the first call binds the caller's memory 0), runs the guest,
 * releases the instance, then releases the session. The linker keeps a
 * plain pointer to the session: release the session only after every
 * instance created through that linker is released.
 *
 * Thread safety: a session serialises its guest calls with a lock (a
 * kiln_device is one stream); give each concurrently running guest its own
 * session and its own device. Host functions here are thread-safe. */
#ifndef KILN_GPU_HOST_H_
#define KILN_GPU_HOST_H_

#include <stdbool.h>
#include <stdint.h>

#include "kiln/device.h"
#include "kiln/engine.h"
#include "kiln/memory.h"
#include "kiln/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_gpu_session kiln_gpu_session;

typedef struct kiln_gpu_session_options {
  /* Let the guest learn device and host addresses (kiln_gpu_address).
   * Host addresses weaken ASLR for the host process, so this is off by
   * default; benchmarks and the kiln CLI turn it on for pointer-identity
   * reports. */
  bool allow_address_query;
  /* Limits against a guest exhausting host memory: live programs and ops
   * per program. 0: defaults (256 programs, 65536 ops). */
  uint32_t max_programs;
  uint32_t max_program_ops;
} kiln_gpu_session_options;

void kiln_gpu_session_options_init(kiln_gpu_session_options *o);

/* Creates a session on device `d` (retained). opts may be NULL. */
kiln_status kiln_gpu_session_create(kiln_device *d,
                                    const kiln_gpu_session_options *opts,
                                    kiln_gpu_session **out);
/* Frees programs, detaches from the device the memories the session
 * attached, releases its references. NULL is fine. */
void kiln_gpu_session_release(kiln_gpu_session *s);

kiln_device *kiln_gpu_session_device(const kiln_gpu_session *s);

/* Binds handle 0 to `m` (the guest's memory 0) and attaches it to the
 * device (MAPPED). Calls from an instance whose memory 0 is another
 * memory then fail with KILN_GPU_E_HANDLE. FAILED_PRECONDITION if a
 * different memory is bound already. Without this call the first guest
 * call binds its caller's memory 0. */
kiln_status kiln_gpu_session_bind_memory(kiln_gpu_session *s, kiln_memory *m);
/* The memory bound to handle 0, or NULL. */
kiln_memory *kiln_gpu_session_memory(const kiln_gpu_session *s);

/* Grants memory `m` to the guest under `name` (at most 255 bytes), attaches
 * it to the device (read-only memories attach RESIDENT: weights go to the
 * device without passing through the guest) and returns its handle (>= 1)
 * in *out_handle (may be NULL). ALREADY_EXISTS for a name in use. */
kiln_status kiln_gpu_session_grant_memory(kiln_gpu_session *s,
                                          const char *name, kiln_memory *m,
                                          uint32_t *out_handle);
/* Names a tensor for kiln_gpu_tensor_lookup. t->memory must be granted to
 * (or bound in) this session already. The descriptor is copied. */
kiln_status kiln_gpu_session_grant_tensor(kiln_gpu_session *s,
                                          const char *name,
                                          const kiln_tensor *t);

/* Defines every function of import module "kiln_gpu" (sdk/kiln_gpu.h) in
 * `l`, bound to session `s`. */
kiln_status kiln_gpu_define(kiln_linker *l, kiln_gpu_session *s);

/* Whether module `m` imports anything from "kiln_gpu". */
bool kiln_gpu_module_uses(const kiln_module *m);

/* The message of the session's last failed call ("" when none). Read it
 * from the thread that uses the session. */
const char *kiln_gpu_session_last_error(const kiln_gpu_session *s);

/* The guest calls, made by the host: the same translation and checks (and
 * the same codes: 0, a handle, or a negative KILN_GPU_E_*), with no Wasm
 * boundary. For a native twin of a guest (the same op lists run natively,
 * to measure what the boundary costs) and for tests. `op` has the layout
 * of sdk/kiln_gpu.h's kiln_gpu_op (472 bytes, copied before use); handle 0
 * is the memory bound with kiln_gpu_session_bind_memory. */
struct kiln_gpu_op;
int32_t kiln_gpu_session_submit_op(kiln_gpu_session *s,
                                   const struct kiln_gpu_op *op);
int32_t kiln_gpu_session_sync(kiln_gpu_session *s);
int32_t kiln_gpu_session_place(kiln_gpu_session *s, uint32_t mem,
                               uint64_t offset, uint64_t length,
                               uint32_t placement);
int32_t kiln_gpu_session_program_begin(kiln_gpu_session *s);
int32_t kiln_gpu_session_program_end(kiln_gpu_session *s);
int32_t kiln_gpu_session_program_submit(kiln_gpu_session *s, int32_t h);
int32_t kiln_gpu_session_program_free(kiln_gpu_session *s, int32_t h);
int32_t kiln_gpu_session_memory_lookup(kiln_gpu_session *s, const char *name);

/* Guest error code (KILN_GPU_E_*, negative) for a kiln status code. */
int32_t kiln_gpu_error_code(kiln_code code);

#ifdef __cplusplus
}
#endif
#endif /* KILN_GPU_HOST_H_ */
