// zero_copy_native_cuda: the native baseline for bench_zero_copy, the best
// a plain CUDA program does for the same patterns, with cudart and cuBLAS
// linked directly (no kiln, no Wasm).
//
//   gemm     c = a @ b, n x n, f32 (and f32 with TF32 tensor cores) and
//            bf16 inputs with f32 out, operands already in device memory:
//            one cuBLAS call + stream sync per step. Also "gemm_copy": the
//            same with a and b copied host->device before and c copied
//            back after (pinned host buffers), the whole wasi-nn round trip
//            done natively.
//   decode   y = W x, W n x n f32 in device memory, x and y moved with
//            cudaMemcpy every step (pinned and pageable host buffers; the
//            best is what kiln is compared with); cublasSgemv.
//   empty    an empty kernel: launch only (queued), and launch + sync.
//
// Usage: zero_copy_native_cuda [--json PATH] [--sizes 256,512,...]
//          [--decode-n N] [--decode-steps N] [--quick]
// Writes JSON (default build/bench/zero_copy_native.json).
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../cuda_util.cuh"

#define CUBLAS_OK(x)                                                      \
  do {                                                                    \
    cublasStatus_t s_ = (x);                                              \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                    \
      fprintf(stderr, "%s:%d: %s: cublas status %d\n", __FILE__, __LINE__, \
              #x, (int)s_);                                               \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

static double now_us() {
  return std::chrono::duration<double, std::micro>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Stats {
  double p50, p99, min, max, mean;
  int n;
};

static Stats stats_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  Stats s{};
  s.n = (int)v.size();
  if (v.empty()) return s;
  auto pct = [&](double p) {
    int k = (int)(p / 100.0 * s.n + 0.999999999);
    k = std::max(1, std::min(k, s.n));
    return v[k - 1];
  };
  double sum = 0;
  for (double x : v) sum += x;
  s.p50 = pct(50);
  s.p99 = pct(99);
  s.min = v.front();
  s.max = v.back();
  s.mean = sum / s.n;
  return s;
}

static std::string stats_json(const Stats &s) {
  char b[256];
  snprintf(b, sizeof b,
           "\"steps\": %d, \"p50_us\": %.3f, \"p99_us\": %.3f, \"min_us\": "
           "%.3f, \"max_us\": %.3f, \"mean_us\": %.3f",
           s.n, s.p50, s.p99, s.min, s.max, s.mean);
  return b;
}

__global__ void empty_kernel() {}

static struct {
  std::string json = "build/bench/zero_copy_native.json";
  std::vector<int> sizes = {256, 512, 1024, 2048, 4096};
  int decode_n = 4096, decode_steps = 200;
  bool quick = false;
  double budget_us = 3e6;
  int min_steps = 10, max_steps = 200;
} cfg;

// Times `step` (which must synchronise) until the budget or max_steps.
template <class F>
static Stats time_steps(F step) {
  step();  // warm-up (cuBLAS heuristics, first launch)
  std::vector<double> v;
  double start = now_us();
  while ((int)v.size() < cfg.max_steps &&
         ((int)v.size() < cfg.min_steps || now_us() - start < cfg.budget_us)) {
    double t0 = now_us();
    step();
    v.push_back(now_us() - t0);
  }
  return stats_of(v);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (a == "--json" && v) {
      cfg.json = v;
      i++;
    } else if (a == "--sizes" && v) {
      cfg.sizes.clear();
      std::string s = v;
      size_t p = 0;
      while (p < s.size()) {
        size_t q = s.find(',', p);
        if (q == std::string::npos) q = s.size();
        cfg.sizes.push_back(atoi(s.substr(p, q - p).c_str()));
        p = q + 1;
      }
      i++;
    } else if (a == "--decode-n" && v) {
      cfg.decode_n = atoi(v);
      i++;
    } else if (a == "--decode-steps" && v) {
      cfg.decode_steps = atoi(v);
      i++;
    } else if (a == "--quick") {
      cfg.quick = true;
      cfg.budget_us = 3e5;
      cfg.min_steps = 3;
      cfg.max_steps = 20;
    } else {
      fprintf(stderr, "zero_copy_native_cuda: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  int dev = 0;
  CUDA_OK(cudaSetDevice(dev));
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  cudaStream_t stream;
  CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasHandle_t h;
  CUBLAS_OK(cublasCreate(&h));
  CUBLAS_OK(cublasSetStream(h, stream));

  std::string out = "{\n  \"benchmark\": \"zero_copy_native\",\n";
  out += "  \"gpu\": \"" + std::string(prop.name) + "\",\n";
  out += "  \"gemm\": [\n";
  bool first_row = true;
  int maxn = *std::max_element(cfg.sizes.begin(), cfg.sizes.end());
  size_t maxbytes = (size_t)maxn * maxn * 4;
  void *da, *db, *dc, *ha, *hb, *hc;
  CUDA_OK(cudaMalloc(&da, maxbytes));
  CUDA_OK(cudaMalloc(&db, maxbytes));
  CUDA_OK(cudaMalloc(&dc, maxbytes));
  CUDA_OK(cudaMallocHost(&ha, maxbytes));
  CUDA_OK(cudaMallocHost(&hb, maxbytes));
  CUDA_OK(cudaMallocHost(&hc, maxbytes));
  // Same values as the guest: small multiples of 1/8 (exact in bf16).
  for (size_t i = 0; i < (size_t)maxn * maxn; i++) {
    float x = (float)(i % 11) * 0.125f - 0.5f;
    ((float *)ha)[i] = x;
    ((float *)hb)[i] = x;
  }
  CUDA_OK(cudaMemcpy(da, ha, maxbytes, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(db, hb, maxbytes, cudaMemcpyHostToDevice));

  const char *variants[3] = {"f32", "f32_tf32", "bf16"};
  for (int var = 0; var < 3; var++) {
    for (int n : cfg.sizes) {
      bool bf = var == 2;
      size_t in = (size_t)n * n * (bf ? 2 : 4), outb = (size_t)n * n * 4;
      cublasComputeType_t ct = var == 1 ? CUBLAS_COMPUTE_32F_FAST_TF32
                                        : CUBLAS_COMPUTE_32F;
      cudaDataType_t it = bf ? CUDA_R_16BF : CUDA_R_32F;
      float alpha = 1, beta = 0;
      // Row-major c = a @ b is column-major c^T = b^T a^T: swap operands.
      auto gemm = [&]() {
        CUBLAS_OK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &alpha,
                               db, it, n, da, it, n, &beta, dc, CUDA_R_32F, n,
                               ct, CUBLAS_GEMM_DEFAULT));
      };
      Stats s = time_steps([&]() {
        gemm();
        CUDA_OK(cudaStreamSynchronize(stream));
      });
      // The native twin of kiln's RESIDENT mode: inputs stay on the GPU,
      // each step runs the GEMM and brings c back to (pinned) host memory,
      // where the program reads it.
      Stats sr = time_steps([&]() {
        gemm();
        CUDA_OK(cudaMemcpyAsync(hc, dc, outb, cudaMemcpyDeviceToHost, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
      });
      Stats sc = time_steps([&]() {
        CUDA_OK(cudaMemcpyAsync(da, ha, in, cudaMemcpyHostToDevice, stream));
        CUDA_OK(cudaMemcpyAsync(db, hb, in, cudaMemcpyHostToDevice, stream));
        gemm();
        CUDA_OK(cudaMemcpyAsync(hc, dc, outb, cudaMemcpyDeviceToHost, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
      });
      char row[1536];
      snprintf(row, sizeof row,
               "%s    {\"dtype\": \"%s\", \"n\": %d, \"mode\": \"device\", %s, "
               "\"gflops_p50\": %.1f},\n"
               "    {\"dtype\": \"%s\", \"n\": %d, \"mode\": \"device_readback\", "
               "%s, \"bytes_moved_per_step\": %zu},\n"
               "    {\"dtype\": \"%s\", \"n\": %d, \"mode\": \"copy_in_out\", "
               "%s, \"bytes_moved_per_step\": %zu}",
               first_row ? "" : ",\n", variants[var], n,
               stats_json(s).c_str(), 2.0 * n * (double)n * n / (s.p50 * 1e3),
               variants[var], n, stats_json(sr).c_str(), outb,
               variants[var], n, stats_json(sc).c_str(), 2 * in + outb);
      out += row;
      first_row = false;
      fprintf(stderr, "native gemm %-8s %5d: device %9.1f us, with c back "
              "%9.1f us, copy in/out %9.1f us\n", variants[var], n, s.p50,
              sr.p50, sc.p50);
    }
  }
  out += "\n  ],\n";
  CUDA_OK(cudaFree(da));
  CUDA_OK(cudaFree(db));
  CUDA_OK(cudaFree(dc));
  CUDA_OK(cudaFreeHost(ha));
  CUDA_OK(cudaFreeHost(hb));
  CUDA_OK(cudaFreeHost(hc));

  // Decode: W in device memory, x and y moved every step.
  int n = cfg.decode_n;
  size_t wb = (size_t)n * n * 4;
  float *dw, *dx, *dy;
  CUDA_OK(cudaMalloc(&dw, wb));
  CUDA_OK(cudaMalloc(&dx, n * 4));
  CUDA_OK(cudaMalloc(&dy, n * 4));
  std::vector<float> w((size_t)n * n);
  for (size_t i = 0; i < w.size(); i++) w[i] = (float)(i % 17) * 0.0625f - 0.5f;
  CUDA_OK(cudaMemcpy(dw, w.data(), wb, cudaMemcpyHostToDevice));
  out += "  \"decode\": [\n";
  for (int pinned = 1; pinned >= 0; pinned--) {
    float *hx, *hy;
    if (pinned) {
      CUDA_OK(cudaMallocHost(&hx, n * 4));
      CUDA_OK(cudaMallocHost(&hy, n * 4));
    } else {
      hx = (float *)malloc(n * 4);
      hy = (float *)malloc(n * 4);
    }
    std::vector<double> v;
    volatile float sink = 0;
    for (int step = 0; step <= cfg.decode_steps; step++) {
      double t0 = now_us();
      for (int i = 0; i < n; i++) hx[i] = (float)((i + step) % 5) * 0.25f;
      CUDA_OK(cudaMemcpyAsync(dx, hx, n * 4, cudaMemcpyHostToDevice, stream));
      float alpha = 1, beta = 0;
      // Row-major W[n][k] is column-major [k][n]: y = W^T_col x.
      CUBLAS_OK(cublasSgemv(h, CUBLAS_OP_T, n, n, &alpha, dw, n, dx, 1, &beta,
                            dy, 1));
      CUDA_OK(cudaMemcpyAsync(hy, dy, n * 4, cudaMemcpyDeviceToHost, stream));
      CUDA_OK(cudaStreamSynchronize(stream));
      float s = 0;
      for (int i = 0; i < n; i++) s += hy[i];
      sink = s;
      if (step > 0) v.push_back(now_us() - t0);  // step 0: warm-up
    }
    (void)sink;
    Stats s = stats_of(v);
    char row[512];
    snprintf(row, sizeof row,
             "%s    {\"mode\": \"w_device_xy_memcpy_%s\", \"n\": %d, "
             "\"w_bytes\": %zu, %s}",
             pinned ? "" : ",\n", pinned ? "pinned" : "pageable", n, wb,
             stats_json(s).c_str());
    out += row;
    fprintf(stderr, "native decode (%s x/y): %.1f us/step\n",
            pinned ? "pinned" : "pageable", s.p50);
    if (pinned) {
      CUDA_OK(cudaFreeHost(hx));
      CUDA_OK(cudaFreeHost(hy));
    } else {
      free(hx);
      free(hy);
    }
  }
  // The CPU part of a step alone (write x, read y), as the guest times it.
  {
    std::vector<float> hx(n), hy(n, 1.0f);
    std::vector<double> v;
    volatile float sink = 0;
    for (int step = 0; step <= cfg.decode_steps; step++) {
      double t0 = now_us();
      for (int i = 0; i < n; i++) hx[i] = (float)((i + step) % 5) * 0.25f;
      float s = 0;
      for (int i = 0; i < n; i++) s += hy[i] + hx[i] * 0.0f;
      sink = s;
      if (step > 0) v.push_back(now_us() - t0);
    }
    (void)sink;
    Stats s = stats_of(v);
    char row[512];
    snprintf(row, sizeof row,
             ",\n    {\"mode\": \"cpu_only\", \"n\": %d, %s}", n,
             stats_json(s).c_str());
    out += row;
    fprintf(stderr, "native decode CPU part alone: %.2f us/step\n", s.p50);
  }
  // The coherence alternative kiln measured and did not choose: CUDA
  // managed memory for W, x and y, W advised read-mostly and prefetched to
  // the GPU; the CPU writes x and reads y each step. With `prefetch_xy`
  // the program also prefetches x to the GPU before the product and y back
  // after it (the best a managed-memory runtime can do knowing the ranges).
  for (int prefetch_xy = 0; prefetch_xy <= 1; prefetch_xy++) {
    float *mw, *mx, *my;
    CUDA_OK(cudaMallocManaged(&mw, wb));
    CUDA_OK(cudaMallocManaged(&mx, n * 4));
    CUDA_OK(cudaMallocManaged(&my, n * 4));
    memcpy(mw, w.data(), wb);
    cudaMemLocation gpu = {}, cpu = {};
    gpu.type = cudaMemLocationTypeDevice;
    gpu.id = 0;
    cpu.type = cudaMemLocationTypeHost;
    CUDA_OK(cudaMemAdvise(mw, wb, cudaMemAdviseSetReadMostly, gpu));
    CUDA_OK(cudaMemPrefetchAsync(mw, wb, gpu, 0, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    std::vector<double> v;
    volatile float sink = 0;
    for (int step = 0; step <= cfg.decode_steps; step++) {
      double t0 = now_us();
      for (int i = 0; i < n; i++) mx[i] = (float)((i + step) % 5) * 0.25f;
      if (prefetch_xy) CUDA_OK(cudaMemPrefetchAsync(mx, n * 4, gpu, 0, stream));
      float alpha = 1, beta = 0;
      CUBLAS_OK(cublasSgemv(h, CUBLAS_OP_T, n, n, &alpha, mw, n, mx, 1, &beta,
                            my, 1));
      if (prefetch_xy) CUDA_OK(cudaMemPrefetchAsync(my, n * 4, cpu, 0, stream));
      CUDA_OK(cudaStreamSynchronize(stream));
      float s = 0;
      for (int i = 0; i < n; i++) s += my[i];
      sink = s;
      if (step > 0) v.push_back(now_us() - t0);
    }
    (void)sink;
    Stats s = stats_of(v);
    char row[512];
    snprintf(row, sizeof row,
             ",\n    {\"mode\": \"managed_w_readmostly%s\", \"n\": %d, "
             "\"w_bytes\": %zu, %s}",
             prefetch_xy ? "_prefetch_xy" : "", n, wb, stats_json(s).c_str());
    out += row;
    fprintf(stderr, "native decode (managed%s): %.1f us/step\n",
            prefetch_xy ? ", x/y prefetched" : "", s.p50);
    CUDA_OK(cudaFree(mw));
    CUDA_OK(cudaFree(mx));
    CUDA_OK(cudaFree(my));
  }
  out += "\n  ],\n";
  CUDA_OK(cudaFree(dw));
  CUDA_OK(cudaFree(dx));
  CUDA_OK(cudaFree(dy));

  // Empty kernel: launches queued back to back, and launch + sync.
  int reps = cfg.quick ? 2000 : 20000;
  empty_kernel<<<1, 1, 0, stream>>>();
  CUDA_OK(cudaStreamSynchronize(stream));
  std::vector<double> launch, launch_sync;
  for (int rep = 0; rep < 10; rep++) {
    double t0 = now_us();
    for (int i = 0; i < reps; i++) empty_kernel<<<1, 1, 0, stream>>>();
    double t1 = now_us();
    CUDA_OK(cudaStreamSynchronize(stream));
    launch.push_back((t1 - t0) * 1e3 / reps);
    t0 = now_us();
    for (int i = 0; i < reps / 10; i++) {
      empty_kernel<<<1, 1, 0, stream>>>();
      CUDA_OK(cudaStreamSynchronize(stream));
    }
    launch_sync.push_back((now_us() - t0) * 1e3 / (reps / 10));
  }
  Stats l = stats_of(launch), ls = stats_of(launch_sync);
  char row[256];
  snprintf(row, sizeof row,
           "  \"empty_kernel\": {\"launch_ns\": %.1f, \"launch_sync_ns\": "
           "%.1f}\n}\n", l.p50, ls.p50);
  out += row;
  fprintf(stderr, "native empty kernel: launch %.0f ns, launch+sync %.0f ns\n",
          l.p50, ls.p50);

  FILE *f = fopen(cfg.json.c_str(), "w");
  if (!f || fputs(out.c_str(), f) < 0 || fclose(f) != 0) {
    fprintf(stderr, "zero_copy_native_cuda: cannot write %s\n",
            cfg.json.c_str());
    return 1;
  }
  printf("wrote %s\n", cfg.json.c_str());
  cublasDestroy(h);
  cudaStreamDestroy(stream);
  return 0;
}
