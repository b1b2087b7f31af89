/* Helpers shared by the device tests: a cpu device, a memory with a bump
 * allocator, random data, half-precision encoders written independently
 * of the device code. */
#ifndef KILN_TEST_DEVICE_UTIL_H_
#define KILN_TEST_DEVICE_UTIL_H_

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kiln/device.h"
#include "kiln/memory.h"
#include "kiln_test.h"

typedef struct tmem {
  kiln_memory *m;
  uint64_t next; /* bump allocator */
} tmem;

static inline kiln_device *open_cpu(kiln_test *t, int threads, bool mirror) {
  kiln_device_options o;
  kiln_device_options_init(&o);
  o.spec = "cpu";
  o.cpu_threads = threads;
  o.cpu_mirror = mirror;
  o.resident_eager_max = 0; /* these tests count the tracked protocol */
  kiln_device *d = NULL;
  KILN_EXPECT_OK(t, kiln_device_open(&o, &d));
  return d;
}

static inline tmem tmem_new(kiln_test *t, kiln_device *d, uint64_t pages) {
  tmem x = {NULL, 0};
  kiln_memory_options mo = {.initial_pages = pages, .name = "guest"};
  KILN_EXPECT_OK(t, kiln_memory_create(&mo, &x.m));
  if (d && x.m) KILN_EXPECT_OK(t, kiln_device_attach(d, x.m));
  return x;
}

static inline uint64_t tmem_alloc(tmem *x, uint64_t bytes, uint64_t align) {
  x->next = (x->next + align - 1) / align * align;
  uint64_t off = x->next;
  x->next += bytes;
  return off;
}

static inline void *tptr(tmem *x, uint64_t off) {
  return kiln_memory_base(x->m) + off;
}

static inline float *tf32(tmem *x, uint64_t off) {
  return (float *)(kiln_memory_base(x->m) + off);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static inline uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
/* Multiples of 1/16 in [-4, 4): exact in f16, bf16 and f32. */
static inline float rnd_val(void) { return (float)((int)(rnd() % 128) - 64) / 16.0f; }

/* Independent encoders: the values used are exact in both formats. */
static inline uint16_t t_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16); /* exact for values with <= 8 significant bits */
}
static inline float t_from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
#ifdef __FLT16_MAX__
static inline uint16_t t_f16(float f) {
  _Float16 h = (_Float16)f;
  uint16_t u;
  memcpy(&u, &h, 2);
  return u;
}
static inline float t_from_f16(uint16_t u) {
  _Float16 h;
  memcpy(&h, &u, 2);
  return (float)h;
}
#else
/* Normal numbers only; the values used are. */
static inline uint16_t t_f16(float f) {
  if (f == 0) return 0;
  uint32_t u;
  memcpy(&u, &f, 4);
  uint32_t s = (u >> 16) & 0x8000, e = (u >> 23) & 0xff, m = u & 0x7fffff;
  return (uint16_t)(s | ((e - 112) << 10) | (m >> 13));
}
static inline float t_from_f16(uint16_t h) {
  uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u = e ? s | ((e + 112) << 23) | (m << 13) : s;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
#endif

/* Stores n values as dtype t at p (f32, f16 or bf16). */
static inline void store_as(kiln_dtype t, void *p, const float *v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (t == KILN_DTYPE_F32) ((float *)p)[i] = v[i];
    else if (t == KILN_DTYPE_F16) ((uint16_t *)p)[i] = t_f16(v[i]);
    else ((uint16_t *)p)[i] = t_bf16(v[i]);
  }
}

static inline bool close_to(double got, double want, double tol) {
  return fabs(got - want) <= tol * (1.0 + fabs(want));
}

static inline kiln_tensor T1(tmem *x, uint64_t off, kiln_dtype t, int64_t n0) {
  return kiln_tensor_make(x->m, off, t, 1, (int64_t[]){n0});
}
static inline kiln_tensor T2(tmem *x, uint64_t off, kiln_dtype t, int64_t n0,
                             int64_t n1) {
  return kiln_tensor_make(x->m, off, t, 2, (int64_t[]){n0, n1});
}
static inline kiln_tensor T3(tmem *x, uint64_t off, kiln_dtype t, int64_t n0,
                             int64_t n1, int64_t n2) {
  return kiln_tensor_make(x->m, off, t, 3, (int64_t[]){n0, n1, n2});
}

/* Submits one op and syncs, expecting success. */
#define RUN(t, d, op)                                             \
  do {                                                            \
    KILN_EXPECT_OK((t), kiln_device_submit((d), &(op), NULL));    \
    KILN_EXPECT_OK((t), kiln_device_sync((d), NULL));             \
  } while (0)

#endif /* KILN_TEST_DEVICE_UTIL_H_ */
