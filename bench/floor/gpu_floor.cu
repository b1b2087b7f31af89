// gpu_floor: what a kernel-per-op decode step can reach on this GPU, at
// best, with the weights of a 1B-shaped Llama layer.
//
// No GEMV here: each "op" is a kernel that only streams its weight bytes
// from cold memory (16-byte loads, evict-first, a use of every value), the
// least any GEMV of that matrix must do. Chains of such kernels are
// captured in a CUDA graph and replayed, as kiln replays a decode step, so
// the numbers are the floor of the one-launch-per-op design: launch gaps,
// the ramp and the tail of each kernel, nothing else. Against them: one
// kernel reading a whole layer's bytes, and the device-to-device copy that
// the issue's roofline divides by.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 bench/floor/gpu_floor.cu -o gpu_floor
//   ./gpu_floor [out.json]
//
// Prints a table; writes JSON. Sizes: a Llama-3.2-1B layer (bf16): q, k, v
// 12.6 MB, o 8.4 MB, gate + up 67.1 MB, down 33.5 MB; the LM head 525 MB.
#include <cuda_runtime.h>

#include "../cuda_util.cuh"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>


// ---- kernels ----------------------------------------------------------------

__device__ float sink_use(uint4 v) {   // a use of every byte, as a bf16 dot
  const uint32_t w[4] = {v.x, v.y, v.z, v.w};
  float a = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; i++)
    a += __uint_as_float(w[i] << 16) + __uint_as_float(w[i] & 0xffff0000u);
  return a;
}

__global__ void k_empty(float *sink) {
  if (sink && threadIdx.x == 1024) sink[0] = 0.0f;   // never true
}

// Streams n 16-byte vectors: a block takes U * blockDim.x vectors a step,
// grid-stride. WAIT: 0 = no dependency wait (plain launch), 1 = wait for
// the kernel before (PDL) first, 2 = issue the first step's loads, then
// wait (the weights do not depend on the kernel before; the activations
// would).
template <int U, int WAIT>
__global__ void k_stream(const uint4 *__restrict__ w, int64_t n, float *sink) {
  if (WAIT) asm volatile("griddepcontrol.launch_dependents;");
  if (WAIT == 1) asm volatile("griddepcontrol.wait;" ::: "memory");
  float acc = 0.0f;
  const int64_t step = (int64_t)gridDim.x * blockDim.x * U;
  bool first = true;
  for (int64_t b = (int64_t)blockIdx.x * blockDim.x * U + threadIdx.x; b < n;
       b += step) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int64_t i = b + (int64_t)u * blockDim.x;
      v[u] = i < n ? __ldcs(w + i) : make_uint4(0, 0, 0, 0);
    }
    if (WAIT == 2 && first) {
      asm volatile("griddepcontrol.wait;" ::: "memory");
      first = false;
    }
#pragma unroll
    for (int u = 0; u < U; u++) acc += sink_use(v[u]);
  }
  if (WAIT == 2 && first) asm volatile("griddepcontrol.wait;" ::: "memory");
  if (acc == 1.2345e-7f) sink[blockIdx.x] = acc;   // keeps the loads
}

// The GEMV's order: a warp per row of rowv vectors, U vectors a lane in
// flight, grid = rows / 8 blocks of 256 (kiln_gemv1's shape).
template <int U>
__global__ void k_rows(const uint4 *__restrict__ w, int64_t rows, int64_t rowv,
                       float *sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float acc = 0.0f;
  for (int64_t r = (int64_t)blockIdx.x * 8 + warp; r < rows;
       r += (int64_t)gridDim.x * 8) {
    const uint4 *row = w + r * rowv;
    for (int64_t v0 = lane; v0 < rowv; v0 += 32 * U) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; u++) {
        const int64_t i = v0 + 32 * u;
        v[u] = i < rowv ? __ldcs(row + i) : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < U; u++) acc += sink_use(v[u]);
    }
  }
  if (acc == 1.2345e-7f) sink[blockIdx.x] = acc;
}

__global__ void k_fill(uint4 *w, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t h = bench_hash(i, seed);
    // bf16 pairs of modest magnitude (exponent near 1), never zero
    const uint32_t a = 0x3f80u | (h & 0x7f), b = 0x3f00u | ((h >> 8) & 0x7f);
    w[i] = make_uint4(a << 16 | b, b << 16 | a, a << 16 | a, b << 16 | b);
  }
}

// ---- harness -----------------------------------------------------------------

static int g_sms;
static uint4 *g_pool;
static int64_t g_pool_vecs, g_cursor;
static float *g_sink;

// A fresh region of the pool (wraps; the pool is many times the L2, so a
// region is cold again by the time a replay comes back to it).
static const uint4 *region(int64_t bytes) {
  const int64_t v = (bytes + 15) / 16;
  if (g_cursor + v > g_pool_vecs) g_cursor = 0;
  const uint4 *p = g_pool + g_cursor;
  g_cursor += (v + 4095) / 4096 * 4096;   // 64 KiB apart
  return p;
}

struct op_cfg {
  int kind;   // 0 stream, 1 rows, 2 empty
  int U, bps, threads, wait;   // bps: blocks per SM (stream)
  int64_t rowv;                // rows: vectors a row
};

static void launch(cudaStream_t s, const op_cfg &c, const uint4 *w, int64_t bytes) {
  const int64_t n = bytes / 16;
  cudaLaunchConfig_t lc = {};
  cudaLaunchAttribute at[1];
  lc.stream = s;
  lc.blockDim = dim3(c.threads);
  if (c.wait) {
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = at;
    lc.numAttrs = 1;
  }
  if (c.kind == 2) {
    lc.gridDim = dim3(g_sms * 4);
    CUDA_OK(cudaLaunchKernelEx(&lc, k_empty, g_sink));
  } else if (c.kind == 1) {
    const int64_t rows = n / c.rowv;
    lc.gridDim = dim3((unsigned)((rows + 7) / 8));
    lc.blockDim = dim3(256);
    if (c.U == 4) CUDA_OK(cudaLaunchKernelEx(&lc, k_rows<4>, w, rows, c.rowv, g_sink));
    else CUDA_OK(cudaLaunchKernelEx(&lc, k_rows<8>, w, rows, c.rowv, g_sink));
  } else {
    const int64_t per = (int64_t)c.threads * c.U;
    int64_t grid = std::min<int64_t>((n + per - 1) / per, (int64_t)g_sms * c.bps);
    lc.gridDim = dim3((unsigned)grid);
#define KS(UU, WW) \
  if (c.U == UU && c.wait == WW) CUDA_OK(cudaLaunchKernelEx(&lc, k_stream<UU, WW>, w, n, g_sink));
    KS(2, 0) KS(2, 1) KS(2, 2) KS(4, 0) KS(4, 1) KS(4, 2) KS(8, 0) KS(8, 1) KS(8, 2)
#undef KS
  }
  CUDA_OK(cudaGetLastError());
}

struct step {
  op_cfg c;
  int64_t bytes;
};

// Captures reps x the steps (each step a fresh region) into a graph, replays
// it, returns the median replay time in microseconds.
static double time_chain(const std::vector<step> &steps, int reps, int iters) {
  cudaStream_t s;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<const uint4 *> regs;
  for (int r = 0; r < reps; r++)
    for (const step &st : steps) regs.push_back(region(st.bytes));
  cudaGraph_t g;
  CUDA_OK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
  size_t k = 0;
  for (int r = 0; r < reps; r++)
    for (const step &st : steps) launch(s, st.c, regs[k++], st.bytes);
  CUDA_OK(cudaStreamEndCapture(s, &g));
  cudaGraphExec_t ge;
  CUDA_OK(cudaGraphInstantiate(&ge, g, 0));
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) CUDA_OK(cudaGraphLaunch(ge, s));
  std::vector<double> t;
  for (int i = 0; i < iters; i++) t.push_back(graph_replay_us(ge, s, a, b));
  std::sort(t.begin(), t.end());
  CUDA_OK(cudaGraphExecDestroy(ge));
  CUDA_OK(cudaGraphDestroy(g));
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  CUDA_OK(cudaStreamDestroy(s));
  return t[t.size() / 2];
}

static FILE *g_json;
static bool g_first = true;
static void record(const char *name, double us, double bytes) {
  const double gbs = bytes > 0 ? bytes / us / 1e3 : 0.0;
  printf("%-48s %10.2f us %9.0f GB/s\n", name, us, gbs);
  fprintf(g_json, "%s\n  {\"name\": \"%s\", \"us\": %.3f, \"gbs\": %.1f}",
          g_first ? "" : ",", name, us, gbs);
  g_first = false;
}

int main(int argc, char **argv) {
  const char *out = argc > 1 ? argv[1] : "gpu_floor.json";
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  const int64_t pool_bytes = 4LL << 30;
  g_pool_vecs = pool_bytes / 16;
  CUDA_OK(cudaMalloc(&g_pool, pool_bytes));
  CUDA_OK(cudaMalloc(&g_sink, 1 << 20));
  k_fill<<<g_sms * 8, 256>>>(g_pool, g_pool_vecs, 12345u);
  CUDA_OK(cudaDeviceSynchronize());
  g_json = fopen(out, "w");
  if (!g_json) { perror(out); return 1; }
  fprintf(g_json, "{\"device\": \"%s\", \"sms\": %d, \"l2_bytes\": %d, \"results\": [",
          prop.name, g_sms, prop.l2CacheSize);
  printf("%s, %d SMs, L2 %d MB\n", prop.name, g_sms, prop.l2CacheSize >> 20);

  // The roofline's denominator: a 1 GiB device-to-device copy.
  {
    void *src, *dst;
    const size_t cb = 1ULL << 30;
    CUDA_OK(cudaMalloc(&src, cb));
    CUDA_OK(cudaMalloc(&dst, cb));
    cudaEvent_t a, b;
    CUDA_OK(cudaEventCreate(&a));
    CUDA_OK(cudaEventCreate(&b));
    std::vector<double> t;
    for (int i = 0; i < 12; i++) {
      CUDA_OK(cudaEventRecord(a));
      CUDA_OK(cudaMemcpyAsync(dst, src, cb, cudaMemcpyDeviceToDevice));
      CUDA_OK(cudaEventRecord(b));
      CUDA_OK(cudaEventSynchronize(b));
      float ms;
      CUDA_OK(cudaEventElapsedTime(&ms, a, b));
      if (i >= 2) t.push_back(ms * 1000.0);
    }
    std::sort(t.begin(), t.end());
    record("d2d copy 1 GiB (read + write)", t[t.size() / 2], 2.0 * cb);
    CUDA_OK(cudaFree(src));
    CUDA_OK(cudaFree(dst));
  }

  const double MB = 1e6;
  const int64_t sz_qkv = 3072LL * 2048 * 2, sz_o = 2048LL * 2048 * 2,
                sz_gu = 16384LL * 2048 * 2, sz_down = 2048LL * 8192 * 2,
                sz_head = 128256LL * 2048 * 2, sz_small = 512LL * 2048 * 2;
  const int64_t layer = sz_qkv + sz_o + sz_gu + sz_down;
  char name[128];

  // 1. Launch floor: empty kernels back to back in a graph.
  for (int wait = 0; wait <= 1; wait++) {
    op_cfg c = {2, 0, 4, 256, wait, 0};
    const int N = 200;
    const double us = time_chain({{c, 0}}, N, 20) / N;
    snprintf(name, sizeof name, "empty kernel%s", wait ? " (PDL)" : "");
    record(name, us, 0);
  }

  // 2. One op's floor: streams of each size, chains of 24 (fresh regions).
  const int64_t sizes[] = {sz_small, sz_o, sz_qkv, sz_down, sz_gu, layer};
  const char *snames[] = {"2.1MB", "o 8.4MB", "qkv 12.6MB", "down 33.5MB",
                          "gate+up 67.1MB", "layer 121.6MB"};
  struct { int U, bps, threads; } cfgs[] = {
      {4, 2, 256}, {4, 4, 256}, {8, 2, 256}, {8, 4, 256}, {4, 8, 256},
      {2, 8, 256}, {8, 1, 1024}, {4, 2, 1024}};
  double best[6];
  op_cfg bestc[6];
  for (int si = 0; si < 6; si++) {
    best[si] = 1e30;
    for (auto &cf : cfgs) {
      op_cfg c = {0, cf.U, cf.bps, cf.threads, 0, 0};
      const int N = 24;
      const double us = time_chain({{c, sizes[si]}}, N, 15) / N;
      snprintf(name, sizeof name, "stream %s U%d %dx%d/SM", snames[si], cf.U,
               cf.bps, cf.threads);
      record(name, us, (double)sizes[si]);
      if (us < best[si]) best[si] = us, bestc[si] = c;
    }
  }
  // The GEMV's order (a warp a row) for the layer's matrices.
  const int64_t rowvs[] = {0, 2048 * 2 / 16, 2048 * 2 / 16, 8192 * 2 / 16,
                           2048 * 2 / 16, 0};
  for (int si = 1; si <= 4; si++)
    for (int U = 4; U <= 8; U += 4) {
      op_cfg c = {1, U, 0, 256, 0, rowvs[si]};
      const int N = 24;
      const double us = time_chain({{c, sizes[si]}}, N, 15) / N;
      snprintf(name, sizeof name, "rows %s U%d (warp a row)", snames[si], U);
      record(name, us, (double)sizes[si]);
    }

  // 3. A 1B decode step of such kernels: per layer q,k,v / attention (a
  // 1.5 MB read on 544 blocks of 128) / o / gate+up / down, 16 layers, the
  // LM head; each op its best configuration from 2; plain, then PDL with
  // the wait first, then PDL with the first loads before the wait.
  for (int wait = 0; wait <= 2; wait++) {
    std::vector<step> st;
    op_cfg attn = {0, 2, 4, 128, wait, 0};
    const int64_t idx[] = {2, -1, 1, 4, 3};
    for (int64_t i : idx) {
      if (i < 0) { st.push_back({attn, 1536 * 1024}); continue; }
      op_cfg c = bestc[i];
      c.wait = wait;
      st.push_back({c, sizes[i]});
    }
    const double us16 = time_chain(st, 16, 15);
    op_cfg hc = bestc[4];
    hc.wait = wait;
    const double head = time_chain({{hc, sz_head}}, 4, 15) / 4;
    snprintf(name, sizeof name, "1B step: 16 layers x 5 kernels%s",
             wait == 0 ? "" : wait == 1 ? " (PDL, wait first)" : " (PDL, loads first)");
    record(name, us16, 16.0 * (double)layer + 16.0 * 1536 * 1024);
    snprintf(name, sizeof name, "1B step incl. LM head%s",
             wait == 0 ? "" : wait == 1 ? " (PDL, wait first)" : " (PDL, loads first)");
    record(name, us16 + head, 16.0 * (double)layer + (double)sz_head);
  }
  // One kernel a layer (no boundaries inside a layer).
  {
    const double us = time_chain({{bestc[5], layer}}, 16, 15);
    record("1B: 16 layers as 16 single-kernel reads", us, 16.0 * (double)layer);
  }
  // The whole step's weight bytes in one kernel.
  {
    const int64_t all = 16 * layer + sz_head;
    op_cfg c = bestc[5];
    const double us = time_chain({{c, all}}, 1, 15);
    record("1B: all weights in one kernel", us, (double)all);
  }
  fprintf(g_json, "\n]}\n");
  fclose(g_json);
  printf("(1B roofline per step: %.1f MB; at 70%% of the d2d rate a step must take\n"
         " weight bytes / (0.7 x copy GB/s))\n", (16.0 * layer + sz_head) / MB);
  return 0;
}
