/* kiln kernel ABI: the guest side of a kernel executable.
 *
 * A kernel executable is a .wasm exporting any number of kernels. kiln loads
 * it into a device memory shared by every executable (include/kiln/
 * dispatch.h) and runs each dispatch's workgroups across a pool of worker
 * threads, each worker calling the kernel through its own instance state
 * over the same compiled code and the same memory.
 *
 * A kernel is an exported function of Wasm type (i32, i32, i32, i32) -> ():
 *
 *   KILN_KERNEL(my_kernel) {          // args, gx, gy, gz are in scope
 *     float *x = KILN_BINDING(args, 0, float);
 *     uint32_t n = args->push[0];
 *     ...work of workgroup (gx, gy, gz) of args->group_count[0..2]...
 *   }
 *
 * - args: the dispatch's argument block, in the shared memory, written by
 *   kiln when the dispatch is recorded and read-only for the kernel.
 * - gx, gy, gz: this workgroup's id; 0 <= g < args->group_count[axis].
 * - bindings: buffers as byte offsets into the shared memory; kiln checks
 *   at record time that each lies inside a live allocation of that memory.
 *   A kernel must stay inside its bindings: the memory is shared with other
 *   executables, and Wasm bounds checks only stop accesses past its end.
 * - push constants: up to KILN_KERNEL_MAX_PUSH 32-bit words.
 *
 * Workgroups of one dispatch run concurrently and in no particular order;
 * a kernel may write only what its workgroup owns. A trap (out-of-bounds
 * access, unreachable, division by zero) fails the command buffer with the
 * kernel and workgroup named; the pool and the memory keep working.
 *
 * Building (see sdk/LINKING.md, "Kernel executables"): kernels are
 * position-independent modules; kiln decides where each module's static
 * data and each worker's stack go, so two modules linked with the same
 * (default) flags never overlap:
 *
 *   clang --target=wasm32-unknown-emscripten -O2 -fPIC -fvisibility=hidden \
 *     -mbulk-memory -ffreestanding -nostdlib -I sdk -c k.c -o k.o
 *   wasm-ld --experimental-pic -shared --no-entry k.o -o k.wasm
 *
 * No libc: the module may use only this header and the compiler's own
 * freestanding headers (memcpy/memset become memory.copy/memory.fill).
 *
 * The same source also compiles natively (for references and benchmarks):
 * there a binding is kiln_kernel_native_base + offset, and kernel names get
 * the prefix KILN_KERNEL_NATIVE_PREFIX (default none). */
#ifndef KILN_KERNEL_H_
#define KILN_KERNEL_H_

#include <stddef.h>
#include <stdint.h>

#define KILN_KERNEL_MAX_BINDINGS 8
#define KILN_KERNEL_MAX_PUSH 16

/* The argument block, 160 bytes, little-endian, at a 16-byte aligned offset.
 * Layout is part of the ABI (version 1). */
typedef struct kiln_kernel_args {
  uint32_t group_count[3];  /* workgroups per axis */
  uint32_t binding_count;
  uint32_t push_count;      /* 32-bit words used in push[] */
  uint32_t abi_version;     /* 1 */
  uint32_t reserved[2];
  uint32_t binding[KILN_KERNEL_MAX_BINDINGS];      /* offsets in memory */
  uint32_t binding_size[KILN_KERNEL_MAX_BINDINGS]; /* bytes */
  uint32_t push[KILN_KERNEL_MAX_PUSH];
} kiln_kernel_args;

#define KILN_KERNEL_ABI_VERSION 1u

#define KILN_KCAT2_(a, b) a##b
#define KILN_KCAT_(a, b) KILN_KCAT2_(a, b)

#ifdef __wasm__
#define KILN_KERNEL(name)                                                    \
  __attribute__((export_name(#name))) void name(                            \
      const kiln_kernel_args *args, uint32_t gx, uint32_t gy, uint32_t gz)
#define KILN_BINDING(args, i, T) ((T *)(uintptr_t)(args)->binding[i])
#else
#ifndef KILN_KERNEL_NATIVE_PREFIX
#define KILN_KERNEL_NATIVE_PREFIX
#endif
/* Native builds: the base of the byte array that stands for the memory. */
extern unsigned char *kiln_kernel_native_base;
#define KILN_KERNEL(name)                                   \
  void KILN_KCAT_(KILN_KERNEL_NATIVE_PREFIX, name)(         \
      const kiln_kernel_args *args, uint32_t gx, uint32_t gy, uint32_t gz)
#define KILN_BINDING(args, i, T) \
  ((T *)(void *)(kiln_kernel_native_base + (args)->binding[i]))
#endif

/* Math that gives the same bits in Wasm and natively: sqrt is correctly
 * rounded everywhere; exp is ours (libm's differs between platforms and
 * is not available to kernels). */
static inline float kiln_sqrtf(float x) { return __builtin_sqrtf(x); }

/* e^x for float, max error about 2 ulp over [-87, 88]: x = k ln2 + r with
 * |r| <= ln2/2, a degree-6 polynomial for e^r, then scale by 2^k through
 * the exponent bits. Below -87 returns 0, above 88 +inf. */
static inline float kiln_expf(float x) {
  if (x != x) return x;
  if (x > 88.0f) return __builtin_inff();
  if (x < -87.0f) return 0.0f;
  float kf = x * 1.44269504088896341f;
  int k = (int)(kf + (kf >= 0 ? 0.5f : -0.5f));
  float r = x - (float)k * 0.693145751953125f; /* ln2 hi */
  r = r - (float)k * 1.428606765330187045e-06f; /* ln2 lo */
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f +
            r * (0.041666668f + r * (0.0083333338f + r * 0.0013888889f)))));
  union { uint32_t u; float f; } s;
  s.u = (uint32_t)(k + 127) << 23;
  return p * s.f;
}

#endif /* KILN_KERNEL_H_ */
