/* The guest half of bench/zero_copy (issue 3, section 4). A reactor
 * without WASI (libc only for memset): it imports env.memory (created by
 * the host, so it can hold 4096x4096 matrices), keeps its tensors in an arena above its data, and
 * exports one function per benchmark step. The host times the calls.
 *
 *   gemm:   the guest fills a and b (f32 or bf16, n x n) in its memory;
 *           each step submits one GEMM naming them, syncs, and reads c
 *           through the same pointer (kiln modes), or asks the host to do
 *           what wasi-nn runtimes do: copy a and b into a separate buffer,
 *           compute there, copy c back (bench.copy_gemm).
 *   decode: y = W x with W (n x k, f32) reused every step; the guest
 *           writes a new x before each step and reads y after it.
 *   nop:    n empty ops submitted back to back (submission cost). */
#include <stdint.h>

#include "kiln_gpu.h"

#define EXPORT(name) __attribute__((export_name(#name)))
#define BENCH_IMPORT(name) \
  __attribute__((import_module("bench"), import_name(#name)))

/* The copy baseline, done by the host (bench/zero_copy/bench_zero_copy.c). */
BENCH_IMPORT(copy_gemm) int32_t bench_copy_gemm(const void *a, const void *b,
                                                float *c, uint32_t n,
                                                uint32_t dtype);
BENCH_IMPORT(copy_load_w) int32_t bench_copy_load_w(const float *w, uint32_t n,
                                                    uint32_t k);
BENCH_IMPORT(copy_gemv) int32_t bench_copy_gemv(const float *x, float *y);

extern unsigned char __heap_base;

/* ---- arena ----------------------------------------------------------- */

static uint32_t arena_top;

static uint32_t align_up(uint32_t v, uint32_t a) { return (v + a - 1) & ~(a - 1); }

EXPORT(arena_reset) void arena_reset(void) {
  arena_top = align_up((uint32_t)(uintptr_t)&__heap_base, 65536);
}

/* 64 KiB-aligned block; grows the memory when needed. 0 on failure. */
static void *alloc(uint64_t bytes) {
  if (!arena_top) arena_reset();
  uint64_t end = (uint64_t)arena_top + align_up((uint32_t)bytes, 65536);
  if (bytes > 0xffff0000u || end > 0xffff0000u) return 0;
  uint64_t have = (uint64_t)__builtin_wasm_memory_size(0) * 65536u;
  if (end > have &&
      __builtin_wasm_memory_grow(0, (end - have + 65535) / 65536) == (size_t)-1)
    return 0;
  void *p = (void *)(uintptr_t)arena_top;
  arena_top = (uint32_t)end;
  return p;
}

/* ---- gemm ------------------------------------------------------------ */

static uint32_t g_n, g_dtype;
static void *g_a, *g_b;
static float *g_c;
static uint64_t g_bytes; /* a, b and c are contiguous: one range to place */
static volatile float g_sink;

static float val_a(uint32_t i, uint32_t j) {
  return (float)((i * 7 + j * 3) % 11) * 0.125f - 0.5f;
}
static float val_b(uint32_t i, uint32_t j) {
  return (float)((i * 5 + j * 13) % 7) * 0.25f - 0.75f;
}

EXPORT(gemm_setup) int32_t gemm_setup(uint32_t n, uint32_t dtype) {
  arena_reset();
  uint64_t esz = dtype == KILN_GPU_F32 ? 4 : 2;
  uint64_t in = (uint64_t)n * n * esz, out = (uint64_t)n * n * 4;
  g_a = alloc(in);
  g_b = alloc(in);
  g_c = alloc(out);
  if (!g_a || !g_b || !g_c) return -100;
  g_n = n;
  g_dtype = dtype;
  g_bytes = (uint64_t)((uintptr_t)g_c - (uintptr_t)g_a) + out;
  for (uint32_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < n; j++) {
      float x = val_a(i, j), y = val_b(i, j);
      if (dtype == KILN_GPU_F32) {
        ((float *)g_a)[i * n + j] = x;
        ((float *)g_b)[i * n + j] = y;
      } else {
        ((uint16_t *)g_a)[i * n + j] = kiln_gpu_f32_to_bf16(x);
        ((uint16_t *)g_b)[i * n + j] = kiln_gpu_f32_to_bf16(y);
      }
      g_c[i * n + j] = 0;
    }
  return 0;
}

EXPORT(gemm_a) uint32_t gemm_a(void) { return (uint32_t)(uintptr_t)g_a; }
EXPORT(gemm_c) uint32_t gemm_c(void) { return (uint32_t)(uintptr_t)g_c; }
EXPORT(gemm_bytes) uint64_t gemm_bytes(void) { return g_bytes; }

EXPORT(gemm_place) int32_t gemm_place(uint32_t placement) {
  return kiln_gpu_place(0, kiln_gpu_offset_of(g_a), g_bytes, placement);
}

/* The guest reads its result through the pointer it passed. */
static void read_result(void) {
  uint32_t n = g_n;
  g_sink = g_c[0] + g_c[(n / 2) * n + n / 3] + g_c[n * n - 1];
}

EXPORT(gemm_step) int32_t gemm_step(void) {
  uint32_t n = g_n;
  int32_t r = kiln_gpu_gemm(kiln_gpu_tensor_2d(g_a, g_dtype, n, n),
                            kiln_gpu_tensor_2d(g_b, g_dtype, n, n),
                            kiln_gpu_tensor_2d(g_c, KILN_GPU_F32, n, n), 0,
                            1.0f, 0.0f);
  if (r) return r;
  if ((r = kiln_gpu_sync())) return r;
  read_result();
  return 0;
}

EXPORT(gemm_copy_step) int32_t gemm_copy_step(void) {
  int32_t r = bench_copy_gemm(g_a, g_b, g_c, g_n, g_dtype);
  if (r) return r;
  read_result();
  return 0;
}

/* Clears c so that the next mode must write it again. */
EXPORT(gemm_clear) void gemm_clear(void) {
  for (uint64_t i = 0; i < (uint64_t)g_n * g_n; i++) g_c[i] = -1.0f;
}

/* Checks 64 elements of c against the guest's own dot products (bf16
 * inputs are exact in f32: small multiples of 1/8). Returns the number
 * wrong. */
EXPORT(gemm_check) int32_t gemm_check(void) {
  uint32_t n = g_n, wrong = 0, seed = 1;
  for (int s = 0; s < 64; s++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t i = (seed >> 8) % n;
    seed = seed * 1103515245u + 12345u;
    uint32_t j = (seed >> 8) % n;
    double want = 0;
    for (uint32_t k = 0; k < n; k++) want += (double)val_a(i, k) * val_b(k, j);
    double got = g_c[i * n + j], err = got - want;
    if (err < 0) err = -err;
    if (!(err <= 1e-3 * (1 + (want < 0 ? -want : want)))) wrong++;
  }
  return (int32_t)wrong;
}

/* ---- decode: y = W x -------------------------------------------------- */

static uint32_t d_n, d_k;
static float *d_w, *d_x, *d_y;

EXPORT(decode_setup) int32_t decode_setup(uint32_t n, uint32_t k) {
  arena_reset();
  d_w = alloc((uint64_t)n * k * 4);
  d_x = alloc((uint64_t)k * 4);
  d_y = alloc((uint64_t)n * 4);
  if (!d_w || !d_x || !d_y) return -100;
  d_n = n;
  d_k = k;
  for (uint64_t i = 0; i < (uint64_t)n * k; i++)
    d_w[i] = (float)(i % 17) * 0.0625f - 0.5f;
  return 0;
}

EXPORT(decode_w) uint32_t decode_w(void) { return (uint32_t)(uintptr_t)d_w; }
EXPORT(decode_y) uint32_t decode_y(void) { return (uint32_t)(uintptr_t)d_y; }

/* Places W alone, or (all != 0) W, x and y: the arena put them one after
 * the other, so [W, end of y) is one range. */
EXPORT(decode_place) int32_t decode_place(uint32_t placement, uint32_t all) {
  uint64_t len = all ? (uint64_t)((uintptr_t)d_y - (uintptr_t)d_w) + d_n * 4
                     : (uint64_t)d_n * d_k * 4;
  return kiln_gpu_place(0, kiln_gpu_offset_of(d_w), len, placement);
}

static void write_x(uint32_t step) {
  for (uint32_t i = 0; i < d_k; i++)
    d_x[i] = (float)((i + step) % 5) * 0.25f;
}

static float read_y(void) {
  float s = 0;
  for (uint32_t i = 0; i < d_n; i++) s += d_y[i];
  g_sink = s;
  return s;
}

EXPORT(decode_step) int32_t decode_step(uint32_t step) {
  write_x(step);
  int32_t r = kiln_gpu_gemv(kiln_gpu_tensor_2d(d_w, KILN_GPU_F32, d_n, d_k),
                            kiln_gpu_tensor_2d(d_x, KILN_GPU_F32, 1, d_k),
                            kiln_gpu_tensor_2d(d_y, KILN_GPU_F32, 1, d_n));
  if (r) return r;
  if ((r = kiln_gpu_sync())) return r;
  read_y();
  return 0;
}

/* The step's CPU part alone (write x, read y, no GPU op): what a decode
 * step costs the guest's own scalar code, to set against native C. */
EXPORT(decode_cpu_only) int32_t decode_cpu_only(uint32_t step) {
  write_x(step);
  read_y();
  return 0;
}

EXPORT(decode_copy_load) int32_t decode_copy_load(void) {
  return bench_copy_load_w(d_w, d_n, d_k);
}

EXPORT(decode_copy_step) int32_t decode_copy_step(uint32_t step) {
  write_x(step);
  int32_t r = bench_copy_gemv(d_x, d_y);
  if (r) return r;
  read_y();
  return 0;
}

/* y[row] for the last step, checked against the guest's own sum. Returns
 * the number of wrong rows among the first 16. */
EXPORT(decode_check) int32_t decode_check(uint32_t step) {
  int32_t wrong = 0;
  for (uint32_t r = 0; r < 16 && r < d_n; r++) {
    double want = 0;
    for (uint32_t i = 0; i < d_k; i++)
      want += (double)d_w[(uint64_t)r * d_k + i] *
              ((float)((i + step) % 5) * 0.25f);
    double err = d_y[r] - want;
    if (err < 0) err = -err;
    if (!(err <= 1e-3 * (1 + (want < 0 ? -want : want)))) wrong++;
  }
  return wrong;
}

/* ---- empty ops ------------------------------------------------------- */

EXPORT(nop_loop) int32_t nop_loop(uint32_t count) {
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_NOP);
  for (uint32_t i = 0; i < count; i++) {
    int32_t r = kiln_gpu_submit(&op);
    if (r) return r;
  }
  return 0;
}

EXPORT(nop_sync_loop) int32_t nop_sync_loop(uint32_t count) {
  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_NOP);
  for (uint32_t i = 0; i < count; i++) {
    int32_t r = kiln_gpu_submit(&op);
    if (r) return r;
    if ((r = kiln_gpu_sync())) return r;
  }
  return 0;
}

/* The device address of guest offset `off`, as the guest sees it. */
EXPORT(device_address) uint64_t device_address(uint32_t off) {
  uint64_t a = 0;
  if (kiln_gpu_address(0, off, &a)) return 0;
  return a;
}
