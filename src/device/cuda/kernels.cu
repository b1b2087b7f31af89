// kiln's CUDA kernels: one per op kind (several for GEMV and attention).
//
// Built by nvcc at kiln's build time into a fatbin (sm_90 machine code and
// compute_90 PTX) that libkiln embeds and loads with cuModuleLoadData.
// Every kernel is extern "C" (looked up by name) and takes one parameter
// struct from kernels_abi.h by value.
//
// Addresses are device addresses the core resolved: the host address of a
// MAPPED range (registered, pointer identity) or a RESIDENT device copy.
// Operands are already validated; the only checks here are the ones that
// depend on values read on the device (positions, row and token indices),
// and those never let a kernel touch memory outside its operands: a bad
// value claims the error flag and the work that depends on it is skipped.
//
// Numerics: f32 everywhere inside (products, sums, exponentials with the
// precise expf/sincosf, no fast-math), so results follow the cpu
// reference to rounding; f16/bf16 are converted on load and rounded to
// nearest even on store.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "kernels_abi.h"

#ifndef KC_GLOBAL   // bench/floor/layer_chain.cu includes this file
#define KC_GLOBAL extern "C" __global__
#endif

// ---- element access ---------------------------------------------------------

__device__ __forceinline__ float bf16_to_f32(uint16_t h) {
  return __uint_as_float((uint32_t)h << 16);
}
__device__ __forceinline__ float f16_to_f32(uint16_t h) {
  return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ uint16_t f32_to_bf16(float f) {
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ uint16_t f32_to_f16(float f) {
  return __half_as_ushort(__float2half_rn(f));
}

// Element e (counted in elements from the tensor's first element) as f32.
// Q8_0: e / 32 is the block (34 bytes: f16 scale, 32 int8), read bytewise
// so that any block alignment is safe.
__device__ __forceinline__ float load_f(uint64_t addr, int dt, int64_t e) {
  switch (dt) {
    case KC_F32:
      return ((const float *)addr)[e];
    case KC_F16:
      return f16_to_f32(((const uint16_t *)addr)[e]);
    case KC_BF16:
      return bf16_to_f32(((const uint16_t *)addr)[e]);
    case KC_I32:
      return (float)((const int32_t *)addr)[e];
    case KC_Q8_0: {
      const uint8_t *blk = (const uint8_t *)addr + (e >> 5) * 34;
      uint16_t s = (uint16_t)(blk[0] | (blk[1] << 8));
      return f16_to_f32(s) * (float)(int8_t)blk[2 + (e & 31)];
    }
  }
  return 0.0f;
}

__device__ __forceinline__ void store_f(uint64_t addr, int dt, int64_t e,
                                        float v) {
  switch (dt) {
    case KC_F32:
      ((float *)addr)[e] = v;
      break;
    case KC_F16:
      ((uint16_t *)addr)[e] = f32_to_f16(v);
      break;
    case KC_BF16:
      ((uint16_t *)addr)[e] = f32_to_bf16(v);
      break;
    case KC_I32:
      ((int32_t *)addr)[e] = (int32_t)v;
      break;
  }
}

// Elements e .. e + 3 of a float-typed tensor, e a multiple of 4 and the
// address aligned for it (the host's vec4 check): one 16- or 8-byte access.
__device__ __forceinline__ float4 load4(uint64_t addr, int dt, int64_t e) {
  if (dt == KC_F32) return *(const float4 *)((const float *)addr + e);
  const uint2 u = *(const uint2 *)((const uint16_t *)addr + e);
  const uint16_t h0 = (uint16_t)u.x, h1 = (uint16_t)(u.x >> 16);
  const uint16_t h2 = (uint16_t)u.y, h3 = (uint16_t)(u.y >> 16);
  if (dt == KC_BF16)
    return make_float4(bf16_to_f32(h0), bf16_to_f32(h1), bf16_to_f32(h2),
                       bf16_to_f32(h3));
  return make_float4(f16_to_f32(h0), f16_to_f32(h1), f16_to_f32(h2),
                     f16_to_f32(h3));
}

__device__ __forceinline__ void store4(uint64_t addr, int dt, int64_t e,
                                       float4 v) {
  if (dt == KC_F32) {
    *(float4 *)((float *)addr + e) = v;
    return;
  }
  uint32_t h0, h1, h2, h3;
  if (dt == KC_BF16) {
    h0 = f32_to_bf16(v.x), h1 = f32_to_bf16(v.y);
    h2 = f32_to_bf16(v.z), h3 = f32_to_bf16(v.w);
  } else {
    h0 = f32_to_f16(v.x), h1 = f32_to_f16(v.y);
    h2 = f32_to_f16(v.z), h3 = f32_to_f16(v.w);
  }
  *(uint2 *)((uint16_t *)addr + e) = make_uint2(h0 | h1 << 16, h2 | h3 << 16);
}

// Offset (elements) of row r of t, rows being all dimensions but the last.
__device__ __forceinline__ int64_t row_off(const kc_tensor &t, int64_t r) {
  int64_t off = 0;
  for (int k = t.rank - 2; k >= 0; k--) {
    int64_t n = t.shape[k];
    off += (r % n) * t.stride[k];
    r /= n;
  }
  return off;
}

// Offset of flat element i over all dimensions of t.
__device__ __forceinline__ int64_t flat_off(const kc_tensor &t, int64_t i) {
  int64_t off = 0;
  for (int k = t.rank - 1; k >= 0; k--) {
    int64_t n = t.shape[k];
    off += (i % n) * t.stride[k];
    i /= n;
  }
  return off;
}

__device__ __forceinline__ int64_t read_index(uint64_t index) {
  return (int64_t)*(const volatile int32_t *)index;
}

__device__ void report(const kc_err_ref &e, int code, int kind, int64_t value,
                       int64_t bound, int64_t extra) {
  if (atomicCAS((int *)e.claim, 0, code) != 0) return;
  volatile kc_error *r = (volatile kc_error *)e.record;
  r->op_kind = kind;
  r->value = value;
  r->bound = bound;
  r->extra = extra;
  __threadfence_system();
  r->code = code;
  __threadfence_system();
}

// ---- reductions ------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Whole-block sum/max; every thread gets the result. `red` holds 32 floats.
__device__ float block_sum(float v, float *red) {
  v = warp_sum(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = threadIdx.x < (unsigned)nw ? red[threadIdx.x] : 0.0f;
  if (threadIdx.x < 32) v = warp_sum(v);
  if (threadIdx.x == 0) red[0] = v;
  __syncthreads();
  return red[0];
}
__device__ float block_max(float v, float *red) {
  v = warp_max(v);
  __syncthreads();
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = v;
  __syncthreads();
  int nw = (blockDim.x + 31) >> 5;
  v = threadIdx.x < (unsigned)nw ? red[threadIdx.x] : -INFINITY;
  if (threadIdx.x < 32) v = warp_max(v);
  if (threadIdx.x == 0) red[0] = v;
  __syncthreads();
  return red[0];
}

// ---- programmatic dependent launch -----------------------------------------
//
// Within a recorded program the backend may launch kiln_gemv1k and
// kiln_attn_dec as programmatic dependents of the kernel before them
// (cuda_launch.c, pdl_may and launch_pdl): such a kernel lets its own
// dependents start (pdl_release) and may request what no earlier op of the
// program writes (a GEMV's weights) before it waits for the kernel before
// it to finish and flush (pdl_wait); everything else comes after the wait,
// and data other kernels write is never read through the non-coherent
// path (__ldg), which assumes it constant for the kernel's whole life.
// Every block waits, so a kernel completes only after the one before it.
// Launched normally, both are no-ops.
__device__ __forceinline__ void pdl_release() {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}
__device__ __forceinline__ void pdl_wait() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
}

// ---- NOP ---------------------------------------------------------------------

KC_GLOBAL void kiln_nop(void) {}

// ---- elementwise ---------------------------------------------------------------

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

__device__ __forceinline__ float ew_apply(int op, float x, float y,
                                         float alpha) {
  switch (op) {
    case KC_EW_ADD: return x + y;
    case KC_EW_MUL: return x * y;
    case KC_EW_SCALE: return alpha * x;
    case KC_EW_SILU: return silu(x);
    case KC_EW_GELU:
      return 0.5f * x *
             (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case KC_EW_SWIGLU: return silu(x) * y;
  }
  return 0.0f;
}

// vec4 (rows of a multiple of 4 elements, every tensor aligned for it):
// four elements a thread, 16-byte accesses for f32.
KC_GLOBAL void kiln_ew(kc_ew_params p) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const int64_t ao = row_off(p.a, r), co = row_off(p.c, r);
    // A one-row b has leading shape 1 (or rank 1): row_off gives 0.
    const int64_t bo = p.b.addr ? row_off(p.b, r) : 0;
    if (p.vec4) {
      for (int64_t j = 4 * first; j < p.cols; j += 4 * step) {
        const float4 x = load4(p.a.addr, p.a.dtype, ao + j);
        const float4 y = p.b.addr ? load4(p.b.addr, p.b.dtype, bo + j)
                                  : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        store4(p.c.addr, p.c.dtype, co + j,
               make_float4(ew_apply(p.op, x.x, y.x, p.alpha),
                           ew_apply(p.op, x.y, y.y, p.alpha),
                           ew_apply(p.op, x.z, y.z, p.alpha),
                           ew_apply(p.op, x.w, y.w, p.alpha)));
      }
      continue;
    }
    for (int64_t j = first; j < p.cols; j += step) {
      const float x = load_f(p.a.addr, p.a.dtype, ao + j);
      const float y = p.b.addr ? load_f(p.b.addr, p.b.dtype, bo + j) : 0.0f;
      store_f(p.c.addr, p.c.dtype, co + j, ew_apply(p.op, x, y, p.alpha));
    }
  }
}

// ---- RMSNORM -----------------------------------------------------------------

KC_GLOBAL void kiln_rmsnorm(kc_rmsnorm_params p) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t ao = row_off(p.a, r), co = row_off(p.c, r);
    if (p.vec4) {   // the same sums and products, four elements a thread
      float ss = 0.0f;
      for (int64_t j = 4 * threadIdx.x; j < p.cols; j += 4 * blockDim.x) {
        const float4 x = load4(p.a.addr, p.a.dtype, ao + j);
        ss += x.x * x.x;
        ss += x.y * x.y;
        ss += x.z * x.z;
        ss += x.w * x.w;
      }
      ss = block_sum(ss, red);
      const float inv = 1.0f / sqrtf(ss / (float)p.cols + p.eps);
      for (int64_t j = 4 * threadIdx.x; j < p.cols; j += 4 * blockDim.x) {
        const float4 x = load4(p.a.addr, p.a.dtype, ao + j);
        const float4 w = load4(p.w.addr, p.w.dtype, j);
        store4(p.c.addr, p.c.dtype, co + j,
               make_float4(x.x * inv * w.x, x.y * inv * w.y, x.z * inv * w.z,
                           x.w * inv * w.w));
      }
      continue;
    }
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
      float x = load_f(p.a.addr, p.a.dtype, ao + j);
      ss += x * x;
    }
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)p.cols + p.eps);
    for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
      float x = load_f(p.a.addr, p.a.dtype, ao + j);
      float w = load_f(p.w.addr, p.w.dtype, j * p.w.stride[p.w.rank - 1]);
      store_f(p.c.addr, p.c.dtype, co + j, x * inv * w);
    }
  }
}

// ---- SOFTMAX -----------------------------------------------------------------

KC_GLOBAL void kiln_softmax(kc_softmax_params p) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t ao = row_off(p.a, r), bo = row_off(p.b, r);
    int64_t n = p.cols;
    if (p.index) {
      int64_t last = read_index(p.index) + r / p.rows_per_t;
      n = last < 0 ? 0 : (last + 1 < p.cols ? last + 1 : p.cols);
    }
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      mx = fmaxf(mx, p.alpha * load_f(p.a.addr, p.a.dtype, ao + j));
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
      sum += expf(p.alpha * load_f(p.a.addr, p.a.dtype, ao + j) - mx);
    sum = block_sum(sum, red);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t j = threadIdx.x; j < p.cols; j += blockDim.x) {
      float v = 0.0f;
      if (j < n) v = expf(p.alpha * load_f(p.a.addr, p.a.dtype, ao + j) - mx) * inv;
      store_f(p.b.addr, p.b.dtype, bo + j, v);
    }
  }
}

// ---- ROPE (Hugging Face rotate-half) ---------------------------------------

// Element i and i + D/2 of a head at position pos: one formula for
// kiln_rope, kiln_rope_copy and the one-row GEMV's RoPE epilogue.
__device__ __forceinline__ void rope_pair(float pos, float inv_freq, float x0,
                                          float x1, float &y0, float &y1) {
  float sn, cs;
  sincosf(pos * inv_freq, &sn, &cs);
  y0 = x0 * cs - x1 * sn;
  y1 = x1 * cs + x0 * sn;
}

// rpb > 1: a block holds rpb rows (heads) of half threads each, a thread
// a pair (short heads would leave most of a block idle); rpb = 1: the
// block's threads and blockIdx.x go along one row.
KC_GLOBAL void kiln_rope(kc_rope_params p) {
  const int64_t half = p.D / 2;
  const int64_t pos0 = p.index ? read_index(p.index) : p.pos;
  const float *inv_freq = (const float *)p.inv_freq;
  const int64_t rpb = p.rpb > 1 ? p.rpb : 1;
  const int64_t sub = rpb > 1 ? threadIdx.x / half : 0;
  if (sub >= rpb) return;
  const int64_t i0 = rpb > 1 ? threadIdx.x % half
                             : (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  const int64_t step = rpb > 1 ? half : (int64_t)gridDim.x * blockDim.x;
  for (int64_t r = blockIdx.y * rpb + sub; r < p.T * p.H; r += gridDim.y * rpb) {
    const int64_t t = r / p.H, h = r % p.H;
    const int64_t ao = t * p.a.stride[0] + h * p.a.stride[1];
    const int64_t bo = t * p.b.stride[0] + h * p.b.stride[1];
    const int64_t as = p.a.stride[2], bs = p.b.stride[2];
    const float pos = (float)(pos0 + t);
    for (int64_t i = i0; i < half; i += step) {
      float y0, y1;
      rope_pair(pos, inv_freq[i], load_f(p.a.addr, p.a.dtype, ao + i * as),
                load_f(p.a.addr, p.a.dtype, ao + (i + half) * as), y0, y1);
      store_f(p.b.addr, p.b.dtype, bo + i * bs, y0);
      store_f(p.b.addr, p.b.dtype, bo + (i + half) * bs, y1);
    }
  }
}

// ROPE + KV append (kc_rope_copy_params): block = head of the rope
// tensor's numbering. Each value stored into the cache is the one the
// ROPE stores into the activations, converted as kiln_copy would.
KC_GLOBAL void kiln_rope_copy(kc_rope_copy_params p) {
  const kc_rope_params &r = p.rope;
  const kc_copy_params &c = p.copy;
  const int64_t head = blockIdx.x, half = r.D / 2;
  const int64_t first = read_index(c.index), cap = c.b.shape[0];
  const bool row_ok = first >= 0 && first <= cap - 1;
  if (!row_ok && head == 0 && threadIdx.x == 0)
    report(c.err, KC_ERR_COPY_ROW, 0, first, cap, 1);
  const int64_t ch = head - p.hs;
  const bool to_cache = row_ok && ch >= 0 && ch < c.a.shape[1];
  const int64_t bo = first * c.b.stride[0] + ch * c.b.stride[1];
  const int64_t bs = c.b.stride[2];
  if (head < r.H) {
    const float pos = (float)(r.index ? read_index(r.index) : r.pos);
    const float *inv_freq = (const float *)r.inv_freq;
    const int64_t ao = head * r.a.stride[1], as = r.a.stride[2];
    for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
      float y0, y1;
      rope_pair(pos, inv_freq[i], load_f(r.a.addr, r.a.dtype, ao + i * as),
                load_f(r.a.addr, r.a.dtype, ao + (i + half) * as), y0, y1);
      store_f(r.b.addr, r.b.dtype, ao + i * as, y0);
      store_f(r.b.addr, r.b.dtype, ao + (i + half) * as, y1);
      if (to_cache) {
        store_f(c.b.addr, c.b.dtype, bo + i * bs, y0);
        store_f(c.b.addr, c.b.dtype, bo + (i + half) * bs, y1);
      }
    }
  } else if (to_cache) {
    const int64_t co = ch * c.a.stride[1], cs = c.a.stride[2];
    for (int64_t d = threadIdx.x; d < r.D; d += blockDim.x)
      store_f(c.b.addr, c.b.dtype, bo + d * bs, load_f(c.a.addr, c.a.dtype, co + d * cs));
  }
}

// ---- ARGMAX ------------------------------------------------------------------

// (value, index) with the first index winning ties; index -1 is "none".
__device__ __forceinline__ void amax_merge(float &v, int64_t &i, float v2,
                                           int64_t i2) {
  if (i2 < 0) return;
  if (i < 0 || v2 > v || (v2 == v && i2 < i)) {
    v = v2;
    i = i2;
  }
}

// The block's best (thread 0 holds it); sv and si hold 32 entries. Safe to
// call again on the same arrays (it syncs before writing them).
__device__ __forceinline__ void amax_block(float &bv, int64_t &bi, float *sv,
                                           int64_t *si) {
  for (int o = 16; o > 0; o >>= 1) {
    float v2 = __shfl_xor_sync(0xffffffffu, bv, o);
    int64_t i2 = __shfl_xor_sync(0xffffffffu, bi, o);
    amax_merge(bv, bi, v2, i2);
  }
  __syncthreads();
  if ((threadIdx.x & 31) == 0) {
    sv[threadIdx.x >> 5] = bv;
    si[threadIdx.x >> 5] = bi;
  }
  __syncthreads();
  if (threadIdx.x == 0)
    for (int w = 1; w < (int)(blockDim.x + 31) >> 5; w++)
      amax_merge(bv, bi, sv[w], si[w]);
}

KC_GLOBAL void kiln_argmax(kc_argmax_params p) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int64_t ao = row_off(p.a, r);
    float bv = 0.0f;
    int64_t bi = -1;
    // Four independent loads in flight per thread: one long row (logits over
    // a 128k vocabulary) is latency-bound otherwise.
    const int64_t bd = blockDim.x;
    int64_t j = threadIdx.x;
    for (; j + 3 * bd < p.cols; j += 4 * bd) {
      float v0 = load_f(p.a.addr, p.a.dtype, ao + j);
      float v1 = load_f(p.a.addr, p.a.dtype, ao + j + bd);
      float v2 = load_f(p.a.addr, p.a.dtype, ao + j + 2 * bd);
      float v3 = load_f(p.a.addr, p.a.dtype, ao + j + 3 * bd);
      amax_merge(bv, bi, v0, j);
      amax_merge(bv, bi, v1, j + bd);
      amax_merge(bv, bi, v2, j + 2 * bd);
      amax_merge(bv, bi, v3, j + 3 * bd);
    }
    for (; j < p.cols; j += bd) amax_merge(bv, bi, load_f(p.a.addr, p.a.dtype, ao + j), j);
    amax_block(bv, bi, sv, si);
    if (threadIdx.x == 0)
      ((int32_t *)p.b.addr)[flat_off(p.b, r)] = (int32_t)(bi < 0 ? 0 : bi);
  }
}

// One row over many blocks (greedy decoding over a 128k vocabulary): each
// block's best to partials, then the last block to finish merges them.
// amax_merge keeps the first index among equal values whatever the order.
KC_GLOBAL void __launch_bounds__(256) kiln_argmax_wide(kc_argmax_wide_params p) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  __shared__ int last;
  float bv = 0.0f;
  int64_t bi = -1;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; j + 3 * step < p.cols; j += 4 * step) {
    float v0 = load_f(p.a.addr, p.a.dtype, j);
    float v1 = load_f(p.a.addr, p.a.dtype, j + step);
    float v2 = load_f(p.a.addr, p.a.dtype, j + 2 * step);
    float v3 = load_f(p.a.addr, p.a.dtype, j + 3 * step);
    amax_merge(bv, bi, v0, j);
    amax_merge(bv, bi, v1, j + step);
    amax_merge(bv, bi, v2, j + 2 * step);
    amax_merge(bv, bi, v3, j + 3 * step);
  }
  for (; j < p.cols; j += step) amax_merge(bv, bi, load_f(p.a.addr, p.a.dtype, j), j);
  amax_block(bv, bi, sv, si);
  volatile float *pv = (volatile float *)p.partials;
  volatile int64_t *pi = (volatile int64_t *)(p.partials + 8 * KC_ARGMAX_BLOCKS);
  if (threadIdx.x == 0) {
    pv[blockIdx.x] = bv;
    pi[blockIdx.x] = bi;
    __threadfence();
    last = atomicAdd((int *)p.counter, 1) == (int)gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  bv = 0.0f;
  bi = -1;
  for (int k = threadIdx.x; k < (int)gridDim.x; k += blockDim.x)
    amax_merge(bv, bi, pv[k], pi[k]);
  amax_block(bv, bi, sv, si);
  if (threadIdx.x == 0) {
    ((int32_t *)p.b.addr)[flat_off(p.b, 0)] = (int32_t)(bi < 0 ? 0 : bi);
    *(volatile int *)p.counter = 0;
  }
}

// ---- COPY / convert ----------------------------------------------------------

KC_GLOBAL void kiln_copy(kc_copy_params p) {
  int64_t row0 = 0;
  if (p.index) {
    const int64_t first = read_index(p.index);
    const int64_t n = p.a.shape[0], cap = p.b.shape[0];
    if (first < 0 || first > cap - n) {
      if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
        report(p.err, KC_ERR_COPY_ROW, 0, first, cap, n);
      return;
    }
    row0 = first;
  }
  const int last = p.a.rank - 1;
  const int64_t as = p.a.stride[last], bs = p.b.stride[last];
  const bool raw32 = p.a.dtype == KC_I32 && p.b.dtype == KC_I32;
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  const int64_t first = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    // Leading indices of a's row r, applied to both tensors (same shape
    // except b's dimension 0 is offset by row0 when indexed).
    int64_t rr = r, ao = 0, bo = row0 * p.b.stride[0];
    for (int k = p.a.rank - 2; k >= 0; k--) {
      int64_t i = rr % p.a.shape[k];
      rr /= p.a.shape[k];
      ao += i * p.a.stride[k];
      bo += i * p.b.stride[k];
    }
    if (p.vec4) {   // float types, contiguous rows, 4 elements a thread
      for (int64_t j = 4 * first; j < p.cols; j += 4 * step)
        store4(p.b.addr, p.b.dtype, bo + j, load4(p.a.addr, p.a.dtype, ao + j));
      continue;
    }
    for (int64_t j = first; j < p.cols; j += step) {
      if (raw32)
        ((int32_t *)p.b.addr)[bo + j * bs] =
            ((const int32_t *)p.a.addr)[ao + j * as];
      else
        store_f(p.b.addr, p.b.dtype, bo + j * bs,
                load_f(p.a.addr, p.a.dtype, ao + j * as));
    }
  }
}

// ---- GATHER ------------------------------------------------------------------

KC_GLOBAL void kiln_gather(kc_gather_params p) {
  const int64_t step = (int64_t)gridDim.x * blockDim.x;
  for (int64_t t = blockIdx.y; t < p.T; t += gridDim.y) {
    const int64_t id =
        ((const int32_t *)p.ids.addr)[flat_off(p.ids, t)];
    if (id < 0 || id >= p.V) {
      if (blockIdx.x == 0 && threadIdx.x == 0)
        report(p.err, KC_ERR_GATHER_ID, 0, id, p.V, t);
      continue;
    }
    const int64_t ao = id * p.table.stride[0], co = row_off(p.out, t);
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < p.D;
         j += step)
      store_f(p.out.addr, p.out.dtype, co + j,
              load_f(p.table.addr, p.table.dtype, ao + j));
  }
}

// ---- GEMV: y[M,N] = alpha * x[M,K] @ w[N,K]^T + beta * y ---------------------
//
// The decode hot path (M = 1) is bound by reading w once from HBM. One warp
// per output row; each lane streams 16-byte vectors of its row with several
// loads in flight (evict-first, so that x stays in L1), and applies each
// w vector to all MT rows of x. Launched when M <= 8, K is a multiple of the
// weight rows are contiguous (any alignment); else gemv_any.

template <int DT>
struct wvec;
template <>
struct wvec<KC_F32> {
  static constexpr int N = 4;
  __device__ static void unpack(uint4 v, float *f) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
};
template <>
struct wvec<KC_BF16> {
  static constexpr int N = 8;
  __device__ static void unpack(uint4 v, float *f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      f[2 * i] = __uint_as_float(w[i] << 16);
      f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  }
};
template <>
struct wvec<KC_F16> {
  static constexpr int N = 8;
  __device__ static void unpack(uint4 v, float *f) {
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
      float2 t = __half22float2(*(const __half2 *)&w[i]);
      f[2 * i] = t.x;
      f[2 * i + 1] = t.y;
    }
  }
};

__device__ __forceinline__ void gemv_store(const kc_gemv_params &p, int64_t m,
                                           int64_t n, float acc) {
  float *y = (float *)p.y + m * p.ys + n;
  float v = p.alpha * acc;
  if (p.beta != 0.0f) v += p.beta * *y;
  *y = v;
}

template <int DT, int MT>
__device__ __forceinline__ void gemv_vec(const kc_gemv_params &p) {
  constexpr int V = wvec<DT>::N;
  constexpr int U = 4;  // vectors in flight per lane
  const int lane = threadIdx.x & 31;
  const int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= p.N) return;
  constexpr int esize = DT == KC_F32 ? 4 : 2;
  // A row need not start on 16 bytes (safetensors data begins wherever the
  // header ends): read from the 16-byte boundary below it and skip the h
  // elements before the row (and those past its end) in the first and last
  // vectors. Those reads stay inside the 16-byte blocks that hold the row.
  const uint64_t row = p.w + (uint64_t)(n * p.ws) * esize;
  const int hb = (int)(row & 15);
  const int h = hb / esize;
  const uint4 *w = (const uint4 *)(row - hb);
  const int64_t nv = (p.K + h + V - 1) / V;
  const bool xvec = hb == 0 && p.xvec;
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) acc[m] = 0.0f;
  for (int64_t v0 = lane; v0 < nv; v0 += 32 * U) {
    uint4 wv[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      int64_t v = v0 + 32 * u;
      wv[u] = v < nv ? __ldcs(w + v) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
      int64_t v = v0 + 32 * u;
      if (v >= nv) break;
      float wf[V];
      wvec<DT>::unpack(wv[u], wf);
      if (xvec && (v + 1) * V <= p.K) {
#pragma unroll
        for (int m = 0; m < MT; m++) {
          const float4 *x = (const float4 *)((const float *)p.x + m * p.xs + v * V);
#pragma unroll
          for (int q = 0; q < V / 4; q++) {
            float4 xv = __ldg(x + q);
            acc[m] += wf[4 * q] * xv.x + wf[4 * q + 1] * xv.y +
                      wf[4 * q + 2] * xv.z + wf[4 * q + 3] * xv.w;
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < V; i++) {
          const int64_t j = v * V + i - h;
          if (j < 0 || j >= p.K) continue;
#pragma unroll
          for (int m = 0; m < MT; m++)
            acc[m] += wf[i] * __ldg((const float *)p.x + m * p.xs + j);
        }
      }
    }
  }
#pragma unroll
  for (int m = 0; m < MT; m++) {
    float s = warp_sum(acc[m]);
    if (lane == 0) gemv_store(p, m, n, s);
  }
}

// Q8_0 rows (34-byte blocks: an f16 scale, 32 int8; rows 2-byte aligned).
// A warp reads 32 blocks of its row at a time (a chunk) with 16-byte loads
// from the 16-byte boundary below them (whole sectors, as gemv_vec reads),
// the next chunk's loads in flight while it works on this one, which it
// puts in shared memory, where lane b decodes block b and applies it to
// the MT rows of x. (Each lane reading its own block from memory, 2 bytes
// at a time, reached 255 GB/s on the H200.)
struct q8_chunk {
  uint4 v[3];   // 16-byte vectors lane, lane + 32, lane + 64 of the chunk
  int h, cnt, nvec;
};

__device__ __forceinline__ void q8_load(q8_chunk &c, uint64_t row, int64_t b0,
                                        int64_t nb, int lane) {
  c.cnt = nb - b0 < 32 ? (int)(nb - b0) : 32;
  const uint64_t lo = row + (uint64_t)b0 * 34;
  c.h = (int)(lo & 15);
  c.nvec = (c.h + c.cnt * 34 + 15) / 16;   // at most 69
  const uint4 *src = (const uint4 *)(lo - c.h);
#pragma unroll
  for (int r = 0; r < 3; r++)
    if (lane + 32 * r < c.nvec) c.v[r] = __ldcs(src + lane + 32 * r);
}

template <int MT>
__device__ __forceinline__ void gemv_q8(const kc_gemv_params &p) {
  __shared__ uint4 stage[8][72];   // a chunk (1088 bytes) + the lead-in
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + warp;
  if (n >= p.N) return;   // the whole warp: only warp-level syncs below
  const uint64_t row = p.w + (uint64_t)(n * p.ws / 32) * 34;
  const int64_t nb = p.K / 32;
  float acc[MT];
#pragma unroll
  for (int m = 0; m < MT; m++) acc[m] = 0.0f;
  q8_chunk next;
  if (nb > 0) q8_load(next, row, 0, nb, lane);
  for (int64_t b0 = 0; b0 < nb; b0 += 32) {
    const q8_chunk cur = next;
#pragma unroll
    for (int r = 0; r < 3; r++)
      if (lane + 32 * r < cur.nvec) stage[warp][lane + 32 * r] = cur.v[r];
    __syncwarp();
    if (b0 + 32 < nb) q8_load(next, row, b0 + 32, nb, lane);
    const int h = cur.h, cnt = cur.cnt;
    if (lane < cnt) {
      const uint8_t *blk = (const uint8_t *)stage[warp] + h + lane * 34;
      const float d = f16_to_f32(*(const uint16_t *)blk);
      // The 32 quants as 8 words: aligned words shifted into place (the
      // quants start 0 or 2 bytes into a word). Each byte v + 128 becomes
      // the float 2^23 + v + 128 by setting the exponent bits, then v by a
      // subtraction: no int-to-float conversions (the slow unit).
      const uint8_t *qb = blk + 2;
      const uint32_t *wa = (const uint32_t *)((uintptr_t)qb & ~(uintptr_t)3);
      const int sh = (int)((uintptr_t)qb & 3) * 8;
      uint32_t w9[9];
#pragma unroll
      for (int j = 0; j < 9; j++) w9[j] = wa[j];   // inside the stage
      float q[32];
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const uint32_t w = __funnelshift_r(w9[j], w9[j + 1], sh) ^ 0x80808080u;
#pragma unroll
        for (int i = 0; i < 4; i++)
          q[4 * j + i] =
              __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7650 | i)) -
              8388736.0f;
      }
#pragma unroll
      for (int m = 0; m < MT; m++) {
        const float *x = (const float *)p.x + m * p.xs + (b0 + lane) * 32;
        float s = 0.0f;
        if (p.xvec) {
#pragma unroll
          for (int i = 0; i < 8; i++) {
            const float4 xv = __ldg((const float4 *)x + i);
            s += q[4 * i] * xv.x + q[4 * i + 1] * xv.y + q[4 * i + 2] * xv.z +
                 q[4 * i + 3] * xv.w;
          }
        } else {
#pragma unroll
          for (int i = 0; i < 32; i++) s += q[i] * __ldg(x + i);
        }
        acc[m] += d * s;
      }
    }
    __syncwarp();   // every lane is done with the stage
  }
#pragma unroll
  for (int m = 0; m < MT; m++) {
    float s = warp_sum(acc[m]);
    if (lane == 0) gemv_store(p, m, n, s);
  }
}

// Any dtype, alignment and M: one warp per output row, rows of x in groups
// of 8.
KC_GLOBAL void kiln_gemv_any(kc_gemv_params p) {
  const int lane = threadIdx.x & 31;
  const int64_t n = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
  if (n >= p.N) return;
  for (int64_t m0 = 0; m0 < p.M; m0 += 8) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const int mt = p.M - m0 < 8 ? (int)(p.M - m0) : 8;
    for (int64_t k = lane; k < p.K; k += 32) {
      float w = load_f(p.w, p.wdtype, n * p.ws + k);
#pragma unroll
      for (int m = 0; m < 8; m++)
        if (m < mt) acc[m] += w * ((const float *)p.x)[(m0 + m) * p.xs + k];
    }
#pragma unroll
    for (int m = 0; m < 8; m++) {
      float s = warp_sum(acc[m]);
      if (m < mt && lane == 0) gemv_store(p, m0 + m, n, s);
    }
  }
}

#define KC_GEMV(NAME, DT, MT) \
  KC_GLOBAL void __launch_bounds__(256) NAME(kc_gemv_params p) { gemv_vec<DT, MT>(p); }
#define KC_GEMV_ALL(TAG, DT)         \
  KC_GEMV(kiln_gemv_##TAG##_1, DT, 1) \
  KC_GEMV(kiln_gemv_##TAG##_2, DT, 2) \
  KC_GEMV(kiln_gemv_##TAG##_3, DT, 3) \
  KC_GEMV(kiln_gemv_##TAG##_4, DT, 4) \
  KC_GEMV(kiln_gemv_##TAG##_5, DT, 5) \
  KC_GEMV(kiln_gemv_##TAG##_6, DT, 6) \
  KC_GEMV(kiln_gemv_##TAG##_7, DT, 7) \
  KC_GEMV(kiln_gemv_##TAG##_8, DT, 8)
KC_GEMV_ALL(f32, KC_F32)
KC_GEMV_ALL(f16, KC_F16)
KC_GEMV_ALL(bf16, KC_BF16)
#define KC_GEMV_Q8(MT) \
  KC_GLOBAL void __launch_bounds__(256) kiln_gemv_q8_0_##MT(kc_gemv_params p) { gemv_q8<MT>(p); }
KC_GEMV_Q8(1)
KC_GEMV_Q8(2)
KC_GEMV_Q8(3)
KC_GEMV_Q8(4)
KC_GEMV_Q8(5)
KC_GEMV_Q8(6)
KC_GEMV_Q8(7)
KC_GEMV_Q8(8)

// ---- one-row GEMV and its fusions (kc_gemv1_params) --------------------------
//
// gemv_vec's loop for M = 1 (a warp per row, U 16-byte vectors of it in
// flight per lane, evict-first), over the rows of up to four matrices
// that share x, so that q, k and v (or gate and up) are one launch:
// a matrix with few rows alone cannot keep the GPU's memory busy, and
// every launch pays a ramp and a tail. With the RMSNORM prologue each
// block first normalises x into shared memory (the formula of
// kiln_rmsnorm), then loops over rows; with pair, a warp computes row n
// of gate and of up together and applies SWIGLU to the two.

template <int DT, bool SMEM>
__device__ __forceinline__ void gemv1_use(const kc_gemv1_params &p,
                                          const float *x, uint4 wv, int64_t v,
                                          int h, float &acc) {
  constexpr int V = wvec<DT>::N;
  float wf[V];
  wvec<DT>::unpack(wv, wf);
  if ((SMEM || p.xvec) && h == 0 && (v + 1) * V <= p.K) {
#pragma unroll
    for (int q = 0; q < V / 4; q++) {
      const float4 *x4 = (const float4 *)(x + v * V) + q;
      const float4 xv = SMEM ? *x4 : __ldg(x4);
      acc += wf[4 * q] * xv.x + wf[4 * q + 1] * xv.y + wf[4 * q + 2] * xv.z +
             wf[4 * q + 3] * xv.w;
    }
  } else {
#pragma unroll
    for (int i = 0; i < V; i++) {
      const int64_t j = v * V + i - h;
      if (j >= 0 && j < p.K) acc += wf[i] * (SMEM ? x[j] : __ldg(x + j));
    }
  }
}

// The RoPE epilogue (ROPE: kernels *_norm_rope, the q, k and v of one
// token, kc_gemv1_params.rope): a warp computes rows n and n + D/2 of a
// head (the PAIR loop), then stores them as the ROPE op (rotated, for q and
// k) and the COPY of k and v into the cache row after it would. v[0], v[1]:
// the two rows' GEMV values.
__device__ __forceinline__ void gemv1_rope_store(const kc_gemv1_params &p,
                                                 int64_t n, const float *v,
                                                 float pos, int64_t cache_row,
                                                 bool cache_ok) {
  const kc_rope_params &r = p.rope.rope;
  const kc_copy_params &c = p.rope.copy;
  const int64_t D = r.D, half = D / 2, head = n / D, d = n % D;
  const int64_t ch = head - p.rope.hs;  // head of the cache row
  const bool to_cache = cache_ok && ch >= 0 && ch < c.a.shape[1];
  const int64_t bo = cache_row * c.b.stride[0] + ch * c.b.stride[1];
  float y0 = v[0], y1 = v[1];
  if (head < r.H) rope_pair(pos, ((const float *)r.inv_freq)[d], v[0], v[1], y0, y1);
  float *y = (float *)p.seg[0].y;     // q, k and v lie back to back
  y[n] = y0;
  y[n + half] = y1;
  if (to_cache) {
    store_f(c.b.addr, c.b.dtype, bo + d * c.b.stride[2], y0);
    store_f(c.b.addr, c.b.dtype, bo + (d + half) * c.b.stride[2], y1);
  }
}

// Stores unit n's results as the fused ops would (acc: the sums of its NR
// rows; s, nl: segment and row in it; row0: first row over all segments):
// the RoPE epilogue, gate/up + SWIGLU, or y = alpha * acc + beta * y, with
// y_old y's value (read by the caller, which may ask for it early; only
// used when beta != 0).
template <bool PAIR, bool ROPE, int NR>
__device__ __forceinline__ void gemv1_store(const kc_gemv1_params &p, int64_t n,
                                            int s, int64_t nl, int64_t row0,
                                            const float (&acc)[NR], float y_old,
                                            float rope_pos, int64_t cache_row,
                                            bool cache_ok) {
  if (ROPE) {
    const int64_t half = p.rope.rope.D / 2;
    float v[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
      v[r] = p.seg[s].alpha * acc[r];
      if (p.seg[s].beta != 0.0f)
        v[r] += p.seg[s].beta * ((float *)p.seg[s].y)[nl + r * half];
    }
    gemv1_rope_store(p, row0, v, rope_pos, cache_row, cache_ok);
  } else if (PAIR) {
    float *y0 = (float *)p.seg[0].y + n, *y1 = (float *)p.seg[1].y + n;
    float gt = p.seg[0].alpha * acc[0], up = p.seg[1].alpha * acc[NR - 1];
    if (p.seg[0].beta != 0.0f) gt += p.seg[0].beta * *y0;
    if (p.seg[1].beta != 0.0f) up += p.seg[1].beta * *y1;
    *y1 = up;
    if (p.act != p.seg[0].y) *y0 = gt;
    ((float *)p.act)[n] = silu(gt) * up;
  } else {
    float v = p.seg[s].alpha * acc[0];
    if (p.seg[s].beta != 0.0f) v += p.seg[s].beta * y_old;
    ((float *)p.seg[s].y)[nl] = v;
  }
}

// Where unit n of a one-row GEMV lies (a warp's unit in kiln_gemv1, a
// block's in kiln_gemv1k): its first row over all segments (ROPE: rows i
// and i + D/2 of a head, half = D/2; PAIR: row n of gate and of up), that
// row's segment and row in it, and the address of its r-th weight row.
template <bool PAIR, bool ROPE>
struct gemv1_unit {
  int64_t row0, nl;
  int s;
  __device__ __forceinline__ gemv1_unit(const kc_gemv1_params &p, int64_t n,
                                        int64_t half) {
    row0 = ROPE ? n / half * 2 * half + n % half : n;
    s = 0;
    nl = row0;
    if (!PAIR)
      while (s + 1 < p.nseg && nl >= p.seg[s].N) nl -= p.seg[s++].N;
  }
  template <int esize>
  __device__ __forceinline__ uint64_t row(const kc_gemv1_params &p, int r,
                                          int64_t half) const {
    const kc_gemv_seg &sg = p.seg[PAIR ? r : s];
    const int64_t rl = ROPE ? nl + r * half : nl;
    return sg.w + (uint64_t)(rl * sg.ws) * esize;
  }
};

template <int DT, int PRO, bool PAIR, bool ROPE = false>
__device__ __forceinline__ void gemv1(const kc_gemv1_params &p) {
  constexpr int V = wvec<DT>::N;
  constexpr int NR = PAIR || ROPE ? 2 : 1;   // rows a warp works on at once
  constexpr int U = 4;               // vectors in flight per lane and row
  constexpr int esize = DT == KC_F32 ? 4 : 2;
  constexpr bool SMEM = PRO == KC_PRO_RMSNORM;
  extern __shared__ float4 xs4[];    // K floats with the prologue
  __shared__ float red[32];
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float *x = (const float *)p.x;
  if (SMEM) {   // as kiln_rmsnorm: a * (1 / sqrt(mean(a^2) + eps)) * g
    // Every block waits for this before its first weight load, so it takes
    // one trip to memory (K <= 16 floats a thread: g waits in registers) or
    // two, not one per element a thread handles: a goes to shared memory on
    // the way in (16-byte loads, several in flight), and the scaling pass
    // reads it back from there.
    const float *a = (const float *)p.a, *g = (const float *)p.g;
    float *xs = (float *)xs4;
    float ss = 0.0f;
    if (p.xvec && p.K % 4 == 0 && p.K <= 16 * (int64_t)blockDim.x) {
      const int64_t K4 = p.K / 4;
      const float4 *a4 = (const float4 *)a, *g4 = (const float4 *)g;
      float4 gr[4];
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t j = threadIdx.x + i * (int64_t)blockDim.x;
        if (j < K4) {
          gr[i] = __ldg(g4 + j);
          const float4 v = a4[j];
          xs4[j] = v;
          ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
      }
      ss = block_sum(ss, red);
      const float inv = 1.0f / sqrtf(ss / (float)p.K + p.eps);
#pragma unroll
      for (int i = 0; i < 4; i++) {
        const int64_t j = threadIdx.x + i * (int64_t)blockDim.x;
        if (j < K4) {
          float4 v = xs4[j];
          v.x = v.x * inv * gr[i].x;
          v.y = v.y * inv * gr[i].y;
          v.z = v.z * inv * gr[i].z;
          v.w = v.w * inv * gr[i].w;
          xs4[j] = v;
        }
      }
    } else if (p.xvec && p.K % 4 == 0) {
      const int64_t K4 = p.K / 4;
      const float4 *a4 = (const float4 *)a, *g4 = (const float4 *)g;
#pragma unroll 4
      for (int64_t j = threadIdx.x; j < K4; j += blockDim.x) {
        const float4 v = a4[j];
        xs4[j] = v;
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
      }
      ss = block_sum(ss, red);
      const float inv = 1.0f / sqrtf(ss / (float)p.K + p.eps);
#pragma unroll 4
      for (int64_t j = threadIdx.x; j < K4; j += blockDim.x) {
        float4 v = xs4[j];
        const float4 w = __ldg(g4 + j);
        v.x = v.x * inv * w.x;
        v.y = v.y * inv * w.y;
        v.z = v.z * inv * w.z;
        v.w = v.w * inv * w.w;
        xs4[j] = v;
      }
    } else {
      for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x) ss += a[j] * a[j];
      ss = block_sum(ss, red);
      const float inv = 1.0f / sqrtf(ss / (float)p.K + p.eps);
      for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x)
        xs[j] = a[j] * inv * g[j];
    }
    __syncthreads();
    x = xs;
    if (p.x_early && blockIdx.x == 0)   // the RMSNORM op's output
      for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x)
        ((float *)p.x)[j] = xs[j];
  }
  const kc_copy_params &cp = p.rope.copy;
  int64_t cache_row = 0;
  bool cache_ok = false;
  float rope_pos = 0.0f;
  if (ROPE) {
    rope_pos = (float)(p.rope.rope.index ? read_index(p.rope.rope.index)
                                         : p.rope.rope.pos);
    cache_row = read_index(cp.index);
    cache_ok = cache_row >= 0 && cache_row <= cp.b.shape[0] - 1;
    if (!cache_ok && blockIdx.x == 0 && threadIdx.x == 0)
      report(cp.err, KC_ERR_COPY_ROW, 0, cache_row, cp.b.shape[0], 1);
  }
  // ROPE: unit n is the pair of rows i and i + D/2 of a head of q, k or v
  // (heads never straddle segments).
  const int64_t units = ROPE ? p.rows / 2 : p.rows;
  const int64_t half = p.rope.rope.D / 2;
  for (int64_t n = (int64_t)blockIdx.x * 8 + warp; n < units;
       n += (int64_t)gridDim.x * 8) {
    const gemv1_unit<PAIR, ROPE> un(p, n, half);
    const int64_t row0 = un.row0, nl = un.nl;
    const int s = un.s;
    // Rows need not start on 16 bytes: read from the boundary below and
    // skip the h elements before the row (as gemv_vec).
    const uint4 *w[NR];
    int h[NR];
    int64_t nv[NR], nvmax = 0;
#pragma unroll
    for (int r = 0; r < NR; r++) {
      const uint64_t row = un.template row<esize>(p, r, half);
      const int hb = (int)(row & 15);
      h[r] = hb / esize;
      w[r] = (const uint4 *)(row - hb);
      nv[r] = (p.K + h[r] + V - 1) / V;
      nvmax = nv[r] > nvmax ? nv[r] : nvmax;
    }
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = 0.0f;
    for (int64_t v0 = lane; v0 < nvmax; v0 += 32 * U) {
      uint4 wv[NR][U];
#pragma unroll
      for (int r = 0; r < NR; r++)
#pragma unroll
        for (int u = 0; u < U; u++) {
          const int64_t v = v0 + 32 * u;
          wv[r][u] = v < nv[r] ? __ldcs(w[r] + v) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
      for (int r = 0; r < NR; r++)
#pragma unroll
        for (int u = 0; u < U; u++) {
          const int64_t v = v0 + 32 * u;
          if (v < nv[r]) gemv1_use<DT, SMEM>(p, x, wv[r][u], v, h[r], acc[r]);
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = warp_sum(acc[r]);
    if (lane != 0) continue;
    const float y_old = !ROPE && !PAIR && p.seg[s].beta != 0.0f
                            ? ((const float *)p.seg[s].y)[nl] : 0.0f;
    gemv1_store<PAIR, ROPE, NR>(p, n, s, nl, row0, acc, y_old, rope_pos,
                                cache_row, cache_ok);
  }
  if (SMEM && !p.x_early) {
    // The RMSNORM op's output in place, stored by the last block to
    // finish: every other block is done reading a, which it overwrites.
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      last = atomicAdd((int *)p.counter, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (last) {
      for (int64_t j = threadIdx.x; j < p.K; j += blockDim.x)
        ((float *)p.x)[j] = x[j];
      if (threadIdx.x == 0) *(volatile int *)p.counter = 0;
    }
  }
}

// Registers capped for 4 blocks (32 warps) per SM, 3 with the fusions.
#define KC_GEMV1_KERNEL(NAME, DT, PRO, PAIR, MINB, ROPE)                \
  KC_GLOBAL void __launch_bounds__(256, MINB) NAME(kc_gemv1_params p) { \
    gemv1<DT, PRO, PAIR, ROPE>(p);                                      \
  }
#define KC_GEMV1(TAG, DT)                                                 \
  KC_GEMV1_KERNEL(kiln_gemv1_##TAG, DT, KC_PRO_NONE, false, 4, false)           \
  KC_GEMV1_KERNEL(kiln_gemv1_##TAG##_pair, DT, KC_PRO_NONE, true, 3, false)     \
  KC_GEMV1_KERNEL(kiln_gemv1_##TAG##_norm, DT, KC_PRO_RMSNORM, false, 3, false) \
  KC_GEMV1_KERNEL(kiln_gemv1_##TAG##_norm_pair, DT, KC_PRO_RMSNORM, true, 3,    \
                  false)                                                        \
  KC_GEMV1_KERNEL(kiln_gemv1_##TAG##_norm_rope, DT, KC_PRO_RMSNORM, false, 3,   \
                  true)
KC_GEMV1(f32, KC_F32)
KC_GEMV1(f16, KC_F16)
KC_GEMV1(bf16, KC_BF16)

// ---- one-row GEMV with K shared by the warps of a block (kc_gemv1_params) --
//
// kiln_gemv1's ops (the same params, fusions and epilogues) with the work
// divided the other way: the 8 warps of a block share K (warp w takes the
// w-th eighth of every row's 16-byte vectors, lane l the vectors l,
// l + 32, ... of that eighth) and a block takes RB units at once, so that
// every load a lane makes is issued before the first is used, and a
// 2048-row matrix occupies 8 times the warps of one warp a row: enough
// requests in flight to keep the memory busy, which one warp a row on a
// 1B model's matrices is not (bench/floor/layer_chain.cu, a 1B layer: o
// 5.3 -> 4.2 us, down 14.3 -> 9.5, RMSNORM + gate/up 21.6 -> 19.0, RMSNORM
// + q, k, v + RoPE 9.3 -> 7.7). A lane keeps its columns of x in registers. With
// the RMSNORM prologue a block sums the squares of all of a while its
// first weights are in flight, then scales only its lanes' columns. The
// 8 partial sums of a row are added in warp order by one thread: the order
// depends on K alone, so results do not depend on the grid or the device.
//
// The host launches it (cuda_launch.c, gemv1_split) when every row starts
// on 16 bytes, K is a multiple of the vector, x (or a and g) is 16-byte
// aligned, and an eighth of a row is at most 32 * U vectors.

// x = a * inv * g over all of K (K % 4 == 0, a and g 16-byte aligned), by
// the block: gemv1k's RMSNORM output.
__device__ __forceinline__ void rmsnorm_store(const kc_gemv1_params &p, float inv) {
  const float4 *a4 = (const float4 *)p.a, *g4 = (const float4 *)p.g;
  float *x = (float *)p.x;
  for (int64_t j = threadIdx.x; j < p.K / 4; j += blockDim.x) {
    const float4 v = a4[j], g = g4[j];
    x[4 * j] = v.x * inv * g.x;
    x[4 * j + 1] = v.y * inv * g.y;
    x[4 * j + 2] = v.z * inv * g.z;
    x[4 * j + 3] = v.w * inv * g.w;
  }
}

// Stores a lane's columns of x (gemv1k's RMSNORM output in place, by the
// last block: a may be overwritten now; the 8 warps of a block hold all of
// K between them).
template <int U, int V>
__device__ __forceinline__ void xr_store(const kc_gemv1_params &p,
                                         const float (&xr)[U][V],
                                         const int (&col)[U], const bool (&ok)[U]) {
  float *x = (float *)p.x;
#pragma unroll
  for (int u = 0; u < U; u++)
    if (ok[u])
#pragma unroll
      for (int i = 0; i < V; i++) x[(int64_t)col[u] * V + i] = xr[u][i];
}

// PF: a block that takes several steps of RB units requests the next
// step's weights before it uses this step's.
template <int DT, int PRO, bool PAIR, bool ROPE, int U, int RB, bool PF = false>
__device__ __forceinline__ void gemv1k(const kc_gemv1_params &p) {
  constexpr int V = wvec<DT>::N;
  constexpr int esize = DT == KC_F32 ? 4 : 2;
  constexpr int NR = PAIR || ROPE ? 2 : 1;
  using unit_t = gemv1_unit<PAIR, ROPE>;
  __shared__ float part[8][RB][NR];
  __shared__ float red[32];
  __shared__ int last;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t nv = p.K / V, per = (nv + 7) / 8;
  const int64_t units = ROPE ? p.rows / 2 : p.rows;
  const int64_t half = ROPE ? p.rope.rope.D / 2 : 1;
  int col[U];   // K < 2^31 (host checks)
  bool ok[U];
#pragma unroll
  for (int u = 0; u < U; u++) {
    const int j = lane + 32 * u;
    col[u] = warp * (int)per + j;
    ok[u] = j < per && col[u] < nv;
  }
  auto load = [&](int64_t u0, uint4 (&wv)[RB][NR][U]) {
#pragma unroll
    for (int b = 0; b < RB; b++) {
      const bool in = u0 + b < units;
      const unit_t un(p, in ? u0 + b : 0, half);
#pragma unroll
      for (int r = 0; r < NR; r++) {
        const uint4 *w = (const uint4 *)un.template row<esize>(p, r, half);
#pragma unroll
        for (int u = 0; u < U; u++)
          wv[b][r][u] = in && ok[u] ? __ldcs(w + col[u]) : make_uint4(0, 0, 0, 0);
      }
    }
  };
  int64_t u0 = (int64_t)blockIdx.x * RB;
  uint4 wv[RB][NR][U];
  load(u0, wv);
  pdl_release();
  pdl_wait();
  // The RoPE epilogue's positions, requested first after the wait.
  const kc_copy_params &cp = p.rope.copy;
  int64_t cache_row = 0;
  float rope_pos = 0.0f;
  if (ROPE) {
    rope_pos = (float)(p.rope.rope.index ? read_index(p.rope.rope.index)
                                         : p.rope.rope.pos);
    cache_row = read_index(cp.index);
  }
  // This lane's columns of x; with the RMSNORM prologue, its columns of a
  // (and of g, where registers allow) are requested with the weights,
  // before the sum of squares over all of a that the scale waits for.
  constexpr bool GEARLY = U <= 2;
  float xr[U][V], gr[GEARLY ? U : 1][V];
  float inv = 0.0f;
  if (PRO == KC_PRO_RMSNORM) {   // as kiln_rmsnorm: a * (1 / sqrt(mean(a^2) + eps)) * g
    const float4 *a4 = (const float4 *)p.a, *g4 = (const float4 *)p.g;
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int q = 0; q < V / 4; q++) {
        float4 v = make_float4(0, 0, 0, 0), g = v;
        if (ok[u]) {
          v = a4[col[u] * (V / 4) + q];
          if (GEARLY) g = g4[col[u] * (V / 4) + q];
        }
        xr[u][4 * q] = v.x, xr[u][4 * q + 1] = v.y;
        xr[u][4 * q + 2] = v.z, xr[u][4 * q + 3] = v.w;
        if (GEARLY) {
          gr[GEARLY ? u : 0][4 * q] = g.x, gr[GEARLY ? u : 0][4 * q + 1] = g.y;
          gr[GEARLY ? u : 0][4 * q + 2] = g.z, gr[GEARLY ? u : 0][4 * q + 3] = g.w;
        }
      }
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < p.K / 4; j += blockDim.x) {
      const float4 v = a4[j];
      ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = block_sum(ss, red);
    inv = 1.0f / sqrtf(ss / (float)p.K + p.eps);
    // The RMSNORM op's output, by block 0 as soon as it has the scale
    // (storing it from the lanes' registers after scaling instead, as the
    // last block does in place, measured 0.3 us slower on a 1B q, k, v).
    if (p.x_early && blockIdx.x == 0) rmsnorm_store(p, inv);
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int q = 0; q < V / 4; q++) {
        float4 g = make_float4(0, 0, 0, 0);
        if (GEARLY)
          g = make_float4(gr[GEARLY ? u : 0][4 * q], gr[GEARLY ? u : 0][4 * q + 1],
                          gr[GEARLY ? u : 0][4 * q + 2], gr[GEARLY ? u : 0][4 * q + 3]);
        else if (ok[u])
          g = g4[col[u] * (V / 4) + q];
        xr[u][4 * q] = xr[u][4 * q] * inv * g.x;
        xr[u][4 * q + 1] = xr[u][4 * q + 1] * inv * g.y;
        xr[u][4 * q + 2] = xr[u][4 * q + 2] * inv * g.z;
        xr[u][4 * q + 3] = xr[u][4 * q + 3] * inv * g.w;
      }
  } else {
    const float4 *x4 = (const float4 *)p.x;
#pragma unroll
    for (int u = 0; u < U; u++)
#pragma unroll
      for (int q = 0; q < V / 4; q++) {
        const float4 v = ok[u] ? x4[col[u] * (V / 4) + q] : make_float4(0, 0, 0, 0);
        xr[u][4 * q] = v.x;
        xr[u][4 * q + 1] = v.y;
        xr[u][4 * q + 2] = v.z;
        xr[u][4 * q + 3] = v.w;
      }
  }
  bool cache_ok = false;
  if (ROPE) {
    cache_ok = cache_row >= 0 && cache_row <= cp.b.shape[0] - 1;
    if (!cache_ok && blockIdx.x == 0 && threadIdx.x == 0)
      report(cp.err, KC_ERR_COPY_ROW, 0, cache_row, cp.b.shape[0], 1);
  }
  const int64_t ustep = (int64_t)gridDim.x * RB;
  for (; u0 < units; u0 += ustep) {
    uint4 nx[RB][NR][U];   // PF only (otherwise never used)
    if (PF && u0 + ustep < units) load(u0 + ustep, nx);
    // A plain GEMV's y (beta), which the epilogue thread reads besides the
    // sums, requested before it waits on them (a 1B down projection 10.5 ->
    // 9.5 us). Asking for RoPE's inverse frequency early made no difference.
    float y_old = 0.0f;
    if (!ROPE && !PAIR && threadIdx.x < RB && u0 + threadIdx.x < units) {
      const unit_t un(p, u0 + threadIdx.x, half);
      if (p.seg[un.s].beta != 0.0f) y_old = ((const float *)p.seg[un.s].y)[un.nl];
    }
#pragma unroll
    for (int b = 0; b < RB; b++)
#pragma unroll
      for (int r = 0; r < NR; r++) {
        float acc = 0.0f;
#pragma unroll
        for (int u = 0; u < U; u++) {
          float f[V];
          wvec<DT>::unpack(wv[b][r][u], f);
#pragma unroll
          for (int i = 0; i < V; i++) acc += f[i] * xr[u][i];
        }
        acc = warp_sum(acc);
        if (lane == 0) part[warp][b][r] = acc;
      }
    __syncthreads();
    const int64_t n = u0 + threadIdx.x;
    if (threadIdx.x < RB && n < units) {
      const unit_t un(p, n, half);
      float acc[NR];
#pragma unroll
      for (int r = 0; r < NR; r++) {
        acc[r] = 0.0f;
#pragma unroll
        for (int w = 0; w < 8; w++) acc[r] += part[w][threadIdx.x][r];
      }
      gemv1_store<PAIR, ROPE, NR>(p, n, un.s, un.nl, un.row0, acc, y_old,
                                  rope_pos, cache_row, cache_ok);
    }
    __syncthreads();
    if (u0 + ustep < units) {
      if (PF) {
#pragma unroll
        for (int b = 0; b < RB; b++)
#pragma unroll
          for (int r = 0; r < NR; r++)
#pragma unroll
            for (int u = 0; u < U; u++) wv[b][r][u] = nx[b][r][u];
      } else {
        load(u0 + ustep, wv);
      }
    }
  }
  if (PRO == KC_PRO_RMSNORM && !p.x_early) {
    // The RMSNORM op's output in place, stored by the last block to
    // finish: every other block is done reading a, which it overwrites.
    if (threadIdx.x == 0) {
      __threadfence();
      last = atomicAdd((int *)p.counter, 1) == (int)gridDim.x - 1;
    }
    __syncthreads();
    if (last) {
      xr_store(p, xr, col, ok);
      if (threadIdx.x == 0) *(volatile int *)p.counter = 0;
    }
  }
}

// Registers capped for 3 blocks an SM (24 warps) where the loads and x fit
// without spilling (down's U = 4: 10.5 us against 12.0 at 2), else 2 (U = 8,
// gate/up with the next step's weights in flight, RoPE from U = 2).
#define KC_GEMV1K_MINB(PAIR, ROPE, U) ((U) == 8 || (PAIR) || ((ROPE) && (U) >= 2) ? 2 : 3)
#define KC_GEMV1K_KERNEL(NAME, DT, PRO, PAIR, ROPE, U)                        \
  KC_GLOBAL void __launch_bounds__(256, KC_GEMV1K_MINB(PAIR, ROPE, U))        \
      NAME(kc_gemv1_params p) {                                               \
    gemv1k<DT, PRO, PAIR, ROPE, U, KC_GEMV1K_RB(U, (PAIR || ROPE) ? 2 : 1),   \
           PRO == KC_PRO_RMSNORM && PAIR>(p);                                 \
  }
// The variants cuda_launch.c uses (measured faster than kiln_gemv1 on a 1B
// layer's matrices): plain (o, down), RMSNORM + pair (gate, up) and RMSNORM
// + RoPE epilogue (q, k, v); with two rows a unit U = 8 does not fit in
// registers (kiln_gemv1 does those). RMSNORM alone (the LM head's 128k
// rows) stays with kiln_gemv1.
#define KC_GEMV1K(TAG, DT)                                                          \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_u1, DT, KC_PRO_NONE, false, false, 1)        \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_u2, DT, KC_PRO_NONE, false, false, 2)        \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_u4, DT, KC_PRO_NONE, false, false, 4)        \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_u8, DT, KC_PRO_NONE, false, false, 8)        \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_pair_u1, DT, KC_PRO_RMSNORM, true, false, 1) \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_pair_u2, DT, KC_PRO_RMSNORM, true, false, 2) \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_pair_u4, DT, KC_PRO_RMSNORM, true, false, 4) \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_rope_u1, DT, KC_PRO_RMSNORM, false, true, 1) \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_rope_u2, DT, KC_PRO_RMSNORM, false, true, 2) \
  KC_GEMV1K_KERNEL(kiln_gemv1k_##TAG##_norm_rope_u4, DT, KC_PRO_RMSNORM, false, true, 4)
KC_GEMV1K(f32, KC_F32)
KC_GEMV1K(f16, KC_F16)
KC_GEMV1K(bf16, KC_BF16)

// ---- tiled matrix product (GEMV prefill, GEMM without cuBLAS) ---------------
//
// C[M,N] = alpha * sum_k L(m,k) R(n,k) + beta * C. 64x64 tiles, k steps of
// 32 (one Q8_0 block), operands converted to f32 in shared memory, 4x4
// outputs per thread. Plain SIMT: correct for every layout and dtype.

KC_GLOBAL void __launch_bounds__(256) kiln_tiled(kc_tiled_params p) {
  __shared__ float ls[32][65];
  __shared__ float rs[32][65];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t m0 = (int64_t)blockIdx.y * 64, n0 = (int64_t)blockIdx.x * 64;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; i++)
#pragma unroll
    for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
  for (int64_t k0 = 0; k0 < p.K; k0 += 32) {
#pragma unroll
    for (int i = 0; i < 8; i++) {
      const int e = tid + 256 * i, rr = e >> 5, kk = e & 31;
      const int64_t k = k0 + kk, m = m0 + rr, n = n0 + rr;
      ls[kk][rr] = (m < p.M && k < p.K)
                       ? load_f(p.l, p.ldtype, m * p.ls0 + k * p.ls1)
                       : 0.0f;
      rs[kk][rr] = (n < p.N && k < p.K)
                       ? load_f(p.r, p.rdtype, n * p.rs0 + k * p.rs1)
                       : 0.0f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < 32; kk++) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; i++) a[i] = ls[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; j++) b[j] = rs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int64_t m = m0 + ty + 16 * i;
    if (m >= p.M) continue;
#pragma unroll
    for (int j = 0; j < 4; j++) {
      const int64_t n = n0 + tx + 16 * j;
      if (n >= p.N) continue;
      float *c = (float *)p.c + m * p.cs0 + n;
      float v = p.alpha * acc[i][j];
      if (p.beta != 0.0f) v += p.beta * *c;
      *c = v;
    }
  }
}

// ---- ATTENTION (causal, grouped queries, online softmax) ---------------------
//
// Block (split, h, t): query t of head h against cache rows
// [split * chunk, min((split + 1) * chunk, pos0 + t + 1)), chunk =
// ceil((pos0 + T) / splits) computed when the kernel runs. Each warp takes
// every nwarps-th key: a warp-wide dot product (lane owns elements
// lane + 32 i), then a running max / sum / weighted V (online softmax).
// Warps merge in shared memory. With one split the block writes the output;
// with several it writes (max, sum, acc[D]) for kiln_attn_combine. Splits
// give decode (T = 1, few heads) enough blocks to read a long cache at
// bandwidth; the grid depends only on shapes, so a captured graph replays
// for any position.

template <int KT>
__device__ __forceinline__ float load_kv(const void *base, int64_t d) {
  if (KT == KC_F32) return ((const float *)base)[d];
  if (KT == KC_F16) return f16_to_f32(((const uint16_t *)base)[d]);
  return bf16_to_f32(((const uint16_t *)base)[d]);
}

// A lane's dims (lane, lane + 32, ...) of query t, head h, times the
// scale (0 past D), and its output accumulators, zeroed.
template <int DPL>
__device__ __forceinline__ void load_q_scaled(const kc_attn_params &p, int64_t t,
                                              int64_t h, int64_t D, int lane,
                                              float (&qr)[DPL], float (&acc)[DPL]) {
  const float *q = (const float *)p.q.addr + t * p.q.stride[0] + h * p.q.stride[1];
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    const int64_t d = lane + 32 * i;
    qr[i] = d < D ? q[d] * p.scale : 0.0f;
    acc[i] = 0.0f;
  }
}

// A lane's dims (lane, lane + 32, ...) of key row j and value row j of
// cache head hk, as f32 (0 past D).
template <int KT, int DPL>
__device__ __forceinline__ void load_kv_rows(const kc_attn_params &p, int64_t j,
                                             int64_t hk, int64_t D, int lane,
                                             float (&kr)[DPL], float (&vr)[DPL]) {
  const size_t ksz = KT == KC_F32 ? 4 : 2;
  const char *kb = (const char *)p.k.addr + (j * p.k.stride[0] + hk * p.k.stride[1]) * ksz;
  const char *vb = (const char *)p.v.addr + (j * p.v.stride[0] + hk * p.v.stride[1]) * ksz;
#pragma unroll
  for (int i = 0; i < DPL; i++) {
    const int64_t d = lane + 32 * i;
    kr[i] = d < D ? load_kv<KT>(kb, d) : 0.0f;
    vr[i] = d < D ? load_kv<KT>(vb, d) : 0.0f;
  }
}

__device__ __forceinline__ bool attn_pos_ok(const kc_attn_params &p,
                                            int64_t *pos0) {
  const int64_t T = p.q.shape[0], S = p.k.shape[0];
  *pos0 = p.index ? read_index(p.index) : p.pos;
  return *pos0 >= 0 && *pos0 <= S - T;
}

// attn_pos_ok, with the failure reported once, by the grid's first block
// (first: this block is it).
__device__ __forceinline__ bool attn_pos_checked(const kc_attn_params &p,
                                                 bool first, int64_t *pos0) {
  if (attn_pos_ok(p, pos0)) return true;
  if (first && threadIdx.x == 0)
    report(p.err, KC_ERR_ATTN_POS, 0, *pos0, p.k.shape[0], p.q.shape[0]);
  return false;
}

// The online-softmax states (m, l, acc) of a block's warps, merged: each
// warp's state goes to shared memory (sm, sl: a float a warp; sacc: DPL x
// 32 a warp), then every thread gets the block's max (mx) and sum (L);
// warps_merged_acc gives a dim's merged value. Warps in order.
template <int DPL>
__device__ __forceinline__ void warps_merge(float m, float l, const float (&acc)[DPL],
                                            int nwarps, float *sm, float *sl,
                                            float (*sacc)[DPL * 32], float &mx,
                                            float &L) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < DPL; i++) sacc[warp][lane + 32 * i] = acc[i];
  __syncthreads();
  mx = -INFINITY;
  for (int w = 0; w < nwarps; w++) mx = fmaxf(mx, sm[w]);
  L = 0.0f;
  for (int w = 0; w < nwarps; w++)
    if (sm[w] != -INFINITY) L += sl[w] * expf(sm[w] - mx);
}
template <int DPL>
__device__ __forceinline__ float warps_merged_acc(int64_t d, int nwarps,
                                                  const float *sm,
                                                  const float (*sacc)[DPL * 32],
                                                  float mx) {
  float a = 0.0f;
  for (int w = 0; w < nwarps; w++)
    if (sm[w] != -INFINITY) a += sacc[w][d] * expf(sm[w] - mx);
  return a;
}

__device__ void attn_combine_one(const kc_attn_params &p, int64_t h, int64_t t);

template <int KT, int DPL>
__device__ __forceinline__ void attn_impl(const kc_attn_params &p) {
  __shared__ float sm[8], sl[8];
  __shared__ float sacc[8][DPL * 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int nwarps = blockDim.x >> 5;
  const int64_t T = p.q.shape[0], Hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t Hkv = p.k.shape[1];
  const int64_t split = blockIdx.x, h = blockIdx.y, t = blockIdx.z;
  int64_t pos0;
  if (!attn_pos_checked(p, split == 0 && h == 0 && t == 0, &pos0)) return;
  const int64_t n_keys = pos0 + t + 1;
  const int64_t hk = h / (Hq / Hkv);
  // The grid is fixed (a graph replays it at every position); the keys in
  // use, pos0 + T, are shared evenly among the splits at run time, so a
  // short context is not left to the first few blocks.
  const int64_t chunk = (pos0 + T + p.splits - 1) / p.splits;
  const int64_t s_begin = split * chunk;
  const int64_t s_end = s_begin + chunk < n_keys ? s_begin + chunk : n_keys;

  float qr[DPL], acc[DPL];
  load_q_scaled<DPL>(p, t, h, D, lane, qr, acc);
  float m = -INFINITY, l = 0.0f;
  // Two keys a step (the warp's j and j + nwarps): both rows' loads are
  // in flight together; the online softmax still takes them in order.
  for (int64_t j = s_begin + warp; j < s_end; j += 2 * nwarps) {
    const bool two = j + nwarps < s_end;
    float kr[2][DPL], vr[2][DPL];
#pragma unroll
    for (int e = 0; e < 2; e++)
      load_kv_rows<KT, DPL>(p, e ? (two ? j + nwarps : j) : j, hk, D, lane,
                            kr[e], vr[e]);
    float dot[2] = {0.0f, 0.0f};
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
      for (int i = 0; i < DPL; i++) dot[e] += qr[i] * kr[e][i];
    dot[0] = warp_sum(dot[0]);
    dot[1] = warp_sum(dot[1]);
#pragma unroll
    for (int e = 0; e < 2; e++) {
      if (e && !two) break;
      const float m_new = fmaxf(m, dot[e]);
      const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
      const float pe = expf(dot[e] - m_new);
      l = l * corr + pe;
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[i] = acc[i] * corr + pe * vr[e][i];
      m = m_new;
    }
  }
  float mx, L;
  warps_merge<DPL>(m, l, acc, nwarps, sm, sl, sacc, mx, L);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    const float a = warps_merged_acc<DPL>(d, nwarps, sm, sacc, mx);
    if (p.splits == 1) {
      float *o = (float *)p.o.addr + t * p.o.stride[0] + h * p.o.stride[1];
      o[d] = a / L;
    } else {
      float *part = (float *)p.scratch + ((t * Hq + h) * p.splits + split) * (D + 2);
      part[2 + d] = a;
    }
  }
  if (p.splits > 1 && threadIdx.x == 0) {
    float *part = (float *)p.scratch + ((t * Hq + h) * p.splits + split) * (D + 2);
    part[0] = mx;
    part[1] = L;
  }
  if (p.splits > 1 && p.counters) {   // the last of the splits merges
    __shared__ int last;
    __syncthreads();
    if (threadIdx.x == 0) {
      __threadfence();
      int *c = (int *)p.counters + t * Hq + h;
      last = atomicAdd(c, 1) == p.splits - 1;
      if (last) *c = 0;
    }
    __syncthreads();
    if (last) {
      __threadfence();
      attn_combine_one(p, h, t);
    }
  }
}

// Decode attention (fewer than KC_AT_Q queries): the keys in use are
// shared among a cluster of KC_AD_SPLITS blocks per (query, head); a warp
// loads B consecutive keys at once (all their loads in flight together)
// and takes them into its online softmax as one step; a block merges its
// warps in shared memory, and block 0 of the cluster merges the blocks
// through distributed shared memory. No partials in global memory, no
// counters, no second pass: attn_impl's splits cost a trip through L2, a
// fence and an atomic per (query, head), and its warps took two keys a
// step (bench/floor/layer_chain.cu: a 1B layer's attention at 384 keys
// 8.7 -> 6.3 us). Keys are taken in order within a warp, warps
// and blocks merged in order: results do not depend on timing.
template <int KT, int DPL>
__device__ __forceinline__ void attn_dec_impl(const kc_attn_params &p) {
  constexpr int NW = 8, B = DPL <= 2 ? 8 : 16 / DPL;
  __shared__ float wm[NW], wl[NW], wacc[NW][DPL * 32];
  __shared__ float bm, bl, bacc[DPL * 32];
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t T = p.q.shape[0], D = p.q.shape[2];
  const int64_t Hq = p.q.shape[1], Hkv = p.k.shape[1];
  const int split = (int)cluster.block_rank();
  const int64_t h = blockIdx.y, t = blockIdx.z;
  pdl_release();
  pdl_wait();
  // q first: its loads need not wait for the position's.
  float qr[DPL], acc[DPL];
  load_q_scaled<DPL>(p, t, h, D, lane, qr, acc);
  int64_t pos0;
  // Every block of a cluster sees the same position: all return or none.
  if (!attn_pos_checked(p, blockIdx.x == 0 && h == 0 && t == 0, &pos0)) return;
  const int64_t n_keys = pos0 + t + 1, hk = h / (Hq / Hkv);
  const int64_t chunk = (pos0 + T + KC_AD_SPLITS - 1) / KC_AD_SPLITS;
  const int64_t s_begin = split * chunk;
  const int64_t s_end = s_begin + chunk < n_keys ? s_begin + chunk : n_keys;
  float m = -INFINITY, l = 0.0f;
  for (int64_t j0 = s_begin + (int64_t)warp * B; j0 < s_end; j0 += (int64_t)NW * B) {
    float kr[B][DPL], vr[B][DPL];
#pragma unroll
    for (int b = 0; b < B; b++)
      load_kv_rows<KT, DPL>(p, j0 + b < s_end ? j0 + b : j0, hk, D, lane,
                            kr[b], vr[b]);
    float dot[B];
#pragma unroll
    for (int b = 0; b < B; b++) {
      dot[b] = 0.0f;
#pragma unroll
      for (int i = 0; i < DPL; i++) dot[b] += qr[i] * kr[b][i];
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
      for (int b = 0; b < B; b++) dot[b] += __shfl_xor_sync(0xffffffffu, dot[b], o);
    float mb = m;
#pragma unroll
    for (int b = 0; b < B; b++)
      if (j0 + b < s_end) mb = fmaxf(mb, dot[b]);
    const float corr = m == -INFINITY ? 0.0f : expf(m - mb);
    l *= corr;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[i] *= corr;
#pragma unroll
    for (int b = 0; b < B; b++)
      if (j0 + b < s_end) {
        const float pe = expf(dot[b] - mb);
        l += pe;
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[i] += pe * vr[b][i];
      }
    m = mb;
  }
  float mx, L;
  warps_merge<DPL>(m, l, acc, NW, wm, wl, wacc, mx, L);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
    bacc[d] = warps_merged_acc<DPL>(d, NW, wm, wacc, mx);
  if (threadIdx.x == 0) {
    bm = mx;
    bl = L;
  }
  cluster.sync();   // every block's (bm, bl, bacc) is ready
  // Block 0 merges (each block storing a share of the dims instead was
  // slower: 7.2 us against 6.3 for a 1B layer, bench/floor/).
  if (split == 0) {
    float cm[KC_AD_SPLITS], cw[KC_AD_SPLITS];
    float M = -INFINITY;
#pragma unroll
    for (int r = 0; r < KC_AD_SPLITS; r++) {
      cm[r] = *cluster.map_shared_rank(&bm, r);
      M = fmaxf(M, cm[r]);
    }
    float L = 0.0f;
#pragma unroll
    for (int r = 0; r < KC_AD_SPLITS; r++) {
      cw[r] = cm[r] == -INFINITY ? 0.0f : expf(cm[r] - M);
      L += *cluster.map_shared_rank(&bl, r) * cw[r];
    }
    float *o = (float *)p.o.addr + t * p.o.stride[0] + h * p.o.stride[1];
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
      float a = 0.0f;
#pragma unroll
      for (int r = 0; r < KC_AD_SPLITS; r++)
        if (cw[r] != 0.0f) a += cluster.map_shared_rank(bacc, r)[d] * cw[r];
      o[d] = a / L;
    }
  }
  cluster.sync();   // block 0 is done reading the others' shared memory
}

// Merges the splits' partial results of query t, head h (the block's
// threads share D). Partials come from other blocks: read past L1. Each
// split's max and sum are read once, into shared memory, and its weight
// exp(m_s - max) computed once; the sums over splits then load values that
// do not wait on each other.
__device__ void attn_combine_one(const kc_attn_params &p, int64_t h, int64_t t) {
  __shared__ float cm[KC_ATTN_MAX_SPLITS], cw[KC_ATTN_MAX_SPLITS];
  const int64_t Hq = p.q.shape[1], D = p.q.shape[2];
  const int S = p.splits;
  const float *part = (const float *)p.scratch + (t * Hq + h) * S * (D + 2);
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    cm[s] = __ldcg(part + s * (D + 2));
    cw[s] = __ldcg(part + s * (D + 2) + 1);
  }
  __syncthreads();
  float mx = -INFINITY;
  for (int s = 0; s < S; s++) mx = fmaxf(mx, cm[s]);
  float L = 0.0f;
  for (int s = 0; s < S; s++)
    if (cm[s] != -INFINITY) L += cw[s] * expf(cm[s] - mx);
  __syncthreads();   // every thread has read the sums in cw
  for (int s = threadIdx.x; s < S; s += blockDim.x)
    cw[s] = cm[s] == -INFINITY ? 0.0f : expf(cm[s] - mx);
  __syncthreads();
  float *o = (float *)p.o.addr + t * p.o.stride[0] + h * p.o.stride[1];
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float a = 0.0f;
#pragma unroll 8
    for (int s = 0; s < S; s++) a += cw[s] * __ldcg(part + s * (D + 2) + 2 + d);
    o[d] = a / L;
  }
}

// grid (Hq, T): merges the splits' partial results (when there are more
// (query, head) pairs than counters).
KC_GLOBAL void kiln_attn_combine(kc_attn_params p) {
  int64_t pos0;
  if (!attn_pos_ok(p, &pos0)) return;   // kiln_attn_* reported it
  attn_combine_one(p, blockIdx.x, blockIdx.y);
}

// ---- ATTENTION for many queries (prefill): key tiles in shared memory --------
//
// Block (tile, h): queries t0 .. t0 + KC_AT_Q - 1 of head h, two per warp.
// The keys they see are taken KC_AT_K at a time into shared memory (as
// f32; K rows padded by one float so that lane j reading row j hits its
// own bank), where all the block's queries use them: each key and value
// row leaves L2 once per tile of queries, not once per query as in
// attn_impl. For a query, lane j scores key j of the tile (the query is
// read from shared memory, the same address for every lane); the online
// softmax goes through the tiles in key order, and lane l accumulates
// output dimensions l + 32 i.
// The prefill attention kernels' tile loads (attn_tile_impl,
// attn_flash_impl), as f32 into shared memory with zeros past the ends.
// Queries t0 .. t0 + rows - 1 of head h, times the scale, into qs (rows of
// qstride floats, dm of them filled; zero past nq queries and D).
__device__ __forceinline__ void attn_load_q(const kc_attn_params &p,
                                            int64_t t0, int64_t h, int nq,
                                            int rows, int dm, int qstride,
                                            float *qs) {
  const int64_t D = p.q.shape[2];
  for (int i = threadIdx.x; i < rows * dm; i += blockDim.x) {
    const int qi = i / dm, d = i % dm;
    float v = 0.0f;
    if (qi < nq && d < D)
      v = ((const float *)p.q.addr)[(t0 + qi) * p.q.stride[0] +
                                    h * p.q.stride[1] + d] * p.scale;
    qs[qi * qstride + d] = v;
  }
}

// Cache rows k0 .. k0 + rows - 1 of kv head hk: keys into ks, values into
// vs (rows of kstride and vstride floats, dm filled; zero from row kend
// and past D).
template <int KT>
__device__ __forceinline__ void attn_load_kv(const kc_attn_params &p,
                                             int64_t k0, int64_t kend,
                                             int64_t hk, int rows, int dm,
                                             float *ks, int kstride, float *vs,
                                             int vstride) {
  const int64_t D = p.q.shape[2];
  const size_t ksz = KT == KC_F32 ? 4 : 2;
  for (int i = threadIdx.x; i < rows * dm; i += blockDim.x) {
    const int j = i / dm, d = i % dm;
    const int64_t kk = k0 + j;
    float kv = 0.0f, vv = 0.0f;
    if (kk < kend && d < D) {
      kv = load_kv<KT>((const char *)p.k.addr +
                           (kk * p.k.stride[0] + hk * p.k.stride[1]) * ksz, d);
      vv = load_kv<KT>((const char *)p.v.addr +
                           (kk * p.v.stride[0] + hk * p.v.stride[1]) * ksz, d);
    }
    ks[j * kstride + d] = kv;
    vs[j * vstride + d] = vv;
  }
}

static_assert(KC_AT_Q == 2 * 8 && KC_AT_K == 32,
              "256 threads: 8 warps of two queries; a lane per key of a tile");
template <int KT, int DPL>
__device__ __forceinline__ void attn_tile_impl(const kc_attn_params &p) {
  constexpr int DM = 32 * DPL;   // the head size this instance holds
  __shared__ float qs[KC_AT_Q][DM];
  __shared__ float ks[KC_AT_K][DM + 1];
  __shared__ float vs[KC_AT_K][DM];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t T = p.q.shape[0], Hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t Hkv = p.k.shape[1];
  const int64_t t0 = (int64_t)blockIdx.x * KC_AT_Q, h = blockIdx.y;
  int64_t pos0;
  if (!attn_pos_checked(p, blockIdx.x == 0 && h == 0, &pos0)) return;
  const int64_t hk = h / (Hq / Hkv);
  const int nq = T - t0 < KC_AT_Q ? (int)(T - t0) : KC_AT_Q;
  attn_load_q(p, t0, h, nq, KC_AT_Q, DM, DM, &qs[0][0]);
  float m[2], l[2], acc[2][DPL];
#pragma unroll
  for (int e = 0; e < 2; e++) {
    m[e] = -INFINITY;
    l[e] = 0.0f;
#pragma unroll
    for (int i = 0; i < DPL; i++) acc[e][i] = 0.0f;
  }
  const int64_t kend = pos0 + t0 + nq;   // keys the block's queries see
  for (int64_t k0 = 0; k0 < kend; k0 += KC_AT_K) {
    __syncthreads();   // the tile before is used up (and qs is written)
    attn_load_kv<KT>(p, k0, kend, hk, KC_AT_K, DM, &ks[0][0], DM + 1,
                     &vs[0][0], DM);
    __syncthreads();
#pragma unroll
    for (int e = 0; e < 2; e++) {
      const int qi = warp * 2 + e;
      if (qi >= nq) break;   // the whole warp
      const int64_t kk = k0 + lane;
      float s = -INFINITY;
      if (kk <= pos0 + t0 + qi) {   // causal: keys up to the query's position
        float dot = 0.0f;
#pragma unroll 16
        for (int d = 0; d < DM; d++) dot += qs[qi][d] * ks[lane][d];
        s = dot;
      }
      const float tmax = warp_max(s);
      if (tmax == -INFINITY) continue;   // no key of this tile: the whole warp
      const float m_new = fmaxf(m[e], tmax);
      const float corr = m[e] == -INFINITY ? 0.0f : expf(m[e] - m_new);
      const float pj = s == -INFINITY ? 0.0f : expf(s - m_new);
      l[e] = l[e] * corr + warp_sum(pj);
#pragma unroll
      for (int i = 0; i < DPL; i++) acc[e][i] *= corr;
#pragma unroll 8
      for (int j = 0; j < KC_AT_K; j++) {
        const float pb = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
        for (int i = 0; i < DPL; i++) acc[e][i] += pb * vs[j][lane + 32 * i];
      }
      m[e] = m_new;
    }
  }
#pragma unroll
  for (int e = 0; e < 2; e++) {
    const int qi = warp * 2 + e;
    if (qi >= nq) break;
    float *o = (float *)p.o.addr + (t0 + qi) * p.o.stride[0] + h * p.o.stride[1];
#pragma unroll
    for (int i = 0; i < DPL; i++) {
      const int64_t d = lane + 32 * i;
      if (d < D) o[d] = acc[e][i] / l[e];
    }
  }
}

// Entry points of the attention templates, one per cache dtype and size
// parameter: kiln_<NAME>_<TAG>_<N> runs IMPL<KT, N>.
#define KC_ATTN_ENTRY(NAME, IMPL, TAG, KT, N)                          \
  KC_GLOBAL void __launch_bounds__(256) kiln_##NAME##_##TAG##_##N(      \
      kc_attn_params p) {                                              \
    IMPL<KT, N>(p);                                                    \
  }
#define KC_ATTN_TILE(TAG, KT, DPL) \
  KC_ATTN_ENTRY(attn_tile, attn_tile_impl, TAG, KT, DPL)
KC_ATTN_TILE(f32, KC_F32, 1)
KC_ATTN_TILE(f32, KC_F32, 2)
KC_ATTN_TILE(f32, KC_F32, 4)
KC_ATTN_TILE(f16, KC_F16, 1)
KC_ATTN_TILE(f16, KC_F16, 2)
KC_ATTN_TILE(f16, KC_F16, 4)
KC_ATTN_TILE(bf16, KC_BF16, 1)
KC_ATTN_TILE(bf16, KC_BF16, 2)
KC_ATTN_TILE(bf16, KC_BF16, 4)

// ---- ATTENTION for long prefills: register-blocked tiles (T >= KC_AF_Q) ------
//
// Block (tile, h): queries t0 .. t0 + 63 of head h against the keys they
// see, KC_AF_K at a time, in f32 as attn_tile_impl, but each thread holds
// a 4 x 2 block of scores and a 4 x DV/16 block of the output, so every
// value it reads from shared memory feeds several multiply-adds (attn_tile
// reads two operands for each one). Thread (ty, tx) = (tid / 16, tid % 16)
// owns queries ty + 16 i (i < 4), keys tx + 16 j of a tile (j < 2) and
// output dimensions 4 tx + 64 g + c (c < 4, g < DV / 64).
//   S = Q K^T: rows of Q and K in shared memory with DV + 4 floats (16-byte
//     loads; rows tx + 16 j of K fall on distinct banks);
//   online softmax per query: its 32 scores of the tile lie with the 16
//     threads of its ty, which share a half-warp (max and sum by xor
//     shuffles over tx), then P goes to shared memory as [key][query];
//   O += P V: V rows in shared memory, 16-byte loads of 4 dimensions.
// Dynamic shared memory: KC_AF_SMEM(DV) bytes (cuda_device.c raises the
// limit).
static_assert(KC_AF_Q == 64 && KC_AF_K == 32,
              "256 threads: 16 x 16, 4 queries and 2 keys of a tile each");
template <int KT, int DV>
__device__ __forceinline__ void attn_flash_impl(const kc_attn_params &p) {
  constexpr int QS = KC_AF_QK_ROW(DV), PS = KC_AF_P_ROW, NG = DV / 64;
  extern __shared__ float4 af_smem4[];
  float *qs = (float *)af_smem4;            // [KC_AF_Q][QS]
  float *ks = qs + KC_AF_Q * QS;            // [KC_AF_K][QS]
  float *vs = ks + KC_AF_K * QS;            // [KC_AF_K][DV]
  float *ps = vs + KC_AF_K * DV;            // [KC_AF_K][PS]
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int64_t T = p.q.shape[0], Hq = p.q.shape[1], D = p.q.shape[2];
  const int64_t Hkv = p.k.shape[1];
  const int64_t t0 = (int64_t)blockIdx.x * KC_AF_Q, h = blockIdx.y;
  int64_t pos0;
  if (!attn_pos_checked(p, blockIdx.x == 0 && h == 0, &pos0)) return;
  const int64_t hk = h / (Hq / Hkv);
  const int nq = T - t0 < KC_AF_Q ? (int)(T - t0) : KC_AF_Q;
  attn_load_q(p, t0, h, nq, KC_AF_Q, DV, QS, qs);
  float m[4], l[4], acc[4][4 * NG];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    m[i] = -INFINITY;
    l[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < 4 * NG; c++) acc[i][c] = 0.0f;
  }
  const int64_t kend = pos0 + t0 + nq;   // keys the block's queries see
  for (int64_t k0 = 0; k0 < kend; k0 += KC_AF_K) {
    __syncthreads();   // the tile before is used up (and qs is written)
    attn_load_kv<KT>(p, k0, kend, hk, KC_AF_K, DV, ks, QS, vs, DV);
    __syncthreads();
    float sc[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++) sc[i][0] = sc[i][1] = 0.0f;
#pragma unroll 4
    for (int d = 0; d < DV; d += 4) {
      float4 qv[4], kv[2];
#pragma unroll
      for (int i = 0; i < 4; i++)
        qv[i] = *(const float4 *)&qs[(ty + 16 * i) * QS + d];
#pragma unroll
      for (int j = 0; j < 2; j++)
        kv[j] = *(const float4 *)&ks[(tx + 16 * j) * QS + d];
#pragma unroll
      for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 2; j++)
          sc[i][j] += qv[i].x * kv[j].x + qv[i].y * kv[j].y +
                      qv[i].z * kv[j].z + qv[i].w * kv[j].w;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int qi = ty + 16 * i;
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const int64_t kk = k0 + tx + 16 * j;
        // causal: keys up to the query's position; rows past nq see none
        if (qi >= nq || kk > pos0 + t0 + qi) sc[i][j] = -INFINITY;
        mx = fmaxf(mx, sc[i][j]);
      }
#pragma unroll
      for (int o = 1; o < 16; o <<= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m[i], mx);
      const float corr = m[i] == -INFINITY ? 0.0f : expf(m[i] - m_new);
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 2; j++) {
        const float pj = sc[i][j] == -INFINITY ? 0.0f : expf(sc[i][j] - m_new);
        ps[(tx + 16 * j) * PS + qi] = pj;
        sum += pj;
      }
#pragma unroll
      for (int o = 1; o < 16; o <<= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
      if (m_new != -INFINITY) {   // else nothing seen yet: all stays 0
        l[i] = l[i] * corr + sum;
#pragma unroll
        for (int c = 0; c < 4 * NG; c++) acc[i][c] *= corr;
        m[i] = m_new;
      }
    }
    __syncthreads();
#pragma unroll 4
    for (int j = 0; j < KC_AF_K; j++) {
      float pv[4];
#pragma unroll
      for (int i = 0; i < 4; i++) pv[i] = ps[j * PS + ty + 16 * i];
#pragma unroll
      for (int g = 0; g < NG; g++) {
        const float4 v = *(const float4 *)&vs[j * DV + 64 * g + 4 * tx];
#pragma unroll
        for (int i = 0; i < 4; i++) {
          acc[i][4 * g + 0] += pv[i] * v.x;
          acc[i][4 * g + 1] += pv[i] * v.y;
          acc[i][4 * g + 2] += pv[i] * v.z;
          acc[i][4 * g + 3] += pv[i] * v.w;
        }
      }
    }
  }
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int qi = ty + 16 * i;
    if (qi >= nq) continue;
    float *o = (float *)p.o.addr + (t0 + qi) * p.o.stride[0] + h * p.o.stride[1];
#pragma unroll
    for (int g = 0; g < NG; g++)
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int64_t d = 64 * g + 4 * tx + c;
        if (d < D) o[d] = acc[i][4 * g + c] / l[i];
      }
  }
}

#define KC_ATTN_FLASH(TAG, KT, DV) \
  KC_ATTN_ENTRY(attn_flash, attn_flash_impl, TAG, KT, DV)
KC_ATTN_FLASH(f32, KC_F32, 64)
KC_ATTN_FLASH(f32, KC_F32, 128)
KC_ATTN_FLASH(f16, KC_F16, 64)
KC_ATTN_FLASH(f16, KC_F16, 128)
KC_ATTN_FLASH(bf16, KC_BF16, 64)
KC_ATTN_FLASH(bf16, KC_BF16, 128)

#define KC_ATTN(TAG, KT, DPL) KC_ATTN_ENTRY(attn, attn_impl, TAG, KT, DPL)  \
  KC_GLOBAL void __launch_bounds__(256) __cluster_dims__(KC_AD_SPLITS, 1, 1) \
      kiln_attn_dec_##TAG##_##DPL(kc_attn_params p) {                     \
    attn_dec_impl<KT, DPL>(p);                                            \
  }
#define KC_ATTN_ALL(TAG, KT) \
  KC_ATTN(TAG, KT, 1)        \
  KC_ATTN(TAG, KT, 2)        \
  KC_ATTN(TAG, KT, 4)        \
  KC_ATTN(TAG, KT, 8)
KC_ATTN_ALL(f32, KC_F32)
KC_ATTN_ALL(f16, KC_F16)
KC_ATTN_ALL(bf16, KC_BF16)
