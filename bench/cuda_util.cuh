// Shared by the benchmarks' CUDA programs (bench/zero_copy/native_cuda.cu,
// bench/floor/*.cu): a checked CUDA runtime call, the hash their fill
// kernels draw values from, a timed graph replay.
#ifndef KILN_BENCH_CUDA_UTIL_CUH_
#define KILN_BENCH_CUDA_UTIL_CUH_

#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

// Exits with the call, the place and CUDA's message when x fails.
#define CUDA_OK(x)                                                        \
  do {                                                                    \
    cudaError_t e_ = (x);                                                 \
    if (e_ != cudaSuccess) {                                              \
      fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x,          \
              cudaGetErrorString(e_));                                    \
      exit(1);                                                            \
    }                                                                     \
  } while (0)

// 32 well-mixed bits for element i under seed.
__device__ __forceinline__ uint32_t bench_hash(int64_t i, uint32_t seed) {
  uint32_t h = (uint32_t)i * 2654435761u ^ seed;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  return h;
}

// One replay of graph e on stream s, timed by events a and b: microseconds.
static inline double graph_replay_us(cudaGraphExec_t e, cudaStream_t s,
                                     cudaEvent_t a, cudaEvent_t b) {
  CUDA_OK(cudaEventRecord(a, s));
  CUDA_OK(cudaGraphLaunch(e, s));
  CUDA_OK(cudaEventRecord(b, s));
  CUDA_OK(cudaEventSynchronize(b));
  float ms;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  return ms * 1000.0;
}

#endif  // KILN_BENCH_CUDA_UTIL_CUH_
