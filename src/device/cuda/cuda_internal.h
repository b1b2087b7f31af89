/* The cuda backend's device object, shared by cuda_device.c (creation,
 * memory, sync, graphs) and cuda_launch.c (ops to kernels). */
#ifndef KILN_DEVICE_CUDA_CUDA_INTERNAL_H_
#define KILN_DEVICE_CUDA_CUDA_INTERNAL_H_

#include <stdbool.h>

#include "device/cuda/cuda_api.h"
#include "device/cuda/kernels_abi.h"
#include "device/device_internal.h"

/* Kernels looked up in the module, by name. */
#define KILN_CUDA_KERNELS(X)                                              \
  X(NOP, "kiln_nop") X(EW, "kiln_ew") X(RMSNORM, "kiln_rmsnorm")          \
  X(SOFTMAX, "kiln_softmax") X(ROPE, "kiln_rope")                         \
  X(ARGMAX, "kiln_argmax") X(COPY, "kiln_copy") X(GATHER, "kiln_gather")  \
  X(GEMV_ANY, "kiln_gemv_any") X(TILED, "kiln_tiled")                     \
  X(ATTN_COMBINE, "kiln_attn_combine") X(ARGMAX_WIDE, "kiln_argmax_wide")  \
  X(ROPE_COPY, "kiln_rope_copy")
enum {
#define X(id, name) KC_FN_##id,
  KILN_CUDA_KERNELS(X)
#undef X
  KC_FN_COUNT
};
/* Families indexed by dtype and rows (GEMV) or dtype and D/32 (attention). */
enum { KC_GEMV_MT_MAX = 8, KC_ATTN_DPL_COUNT = 4 };  /* DPL 1, 2, 4, 8 */

/* Bytes of device scratch for split attention (fixed at creation, so that
 * graphs capture a stable address). */
#define KILN_CUDA_SCRATCH_BYTES ((uint64_t)8 << 20)
/* cuBLAS workspace: set explicitly so that GEMMs never allocate, which
 * makes them capturable into CUDA graphs (cuBLAS' advice for Hopper). */
/* Layout of `aux`. */
#define KILN_CUDA_AUX_GEMV_COUNTER 0
#define KILN_CUDA_AUX_ARGMAX_COUNTER 64
#define KILN_CUDA_AUX_ARGMAX_PARTIALS 1024
#define KILN_CUDA_AUX_ATTN_COUNTERS 8192    /* one int per (query, head) */
#define KILN_CUDA_AUX_ATTN_SLOTS 8192
#define KILN_CUDA_AUX_BYTES ((uint64_t)65536)
#define KILN_CUDA_CUBLAS_WORKSPACE ((uint64_t)32 << 20)

typedef struct kiln_cuda_device {
  kiln_device base;                 /* stays first */
  const kiln_cuda_api *cu;
  int ordinal;
  CUdevice dev;
  CUcontext ctx;                    /* the device's primary context */
  CUstream stream;
  CUmodule module;
  CUfunction fn[KC_FN_COUNT];
  CUfunction gemv[3][KC_GEMV_MT_MAX];        /* f32, f16, bf16 */
  CUfunction gemv_q8[KC_GEMV_MT_MAX];
  /* One-row GEMV by dtype and variant: plain, pair, norm, norm + pair,
   * norm + RoPE epilogue (kernels_abi.h, kc_gemv1_params). */
  CUfunction gemv1[3][5];
  /* The same with K shared by a block's warps (kiln_gemv1k_*): plain,
   * norm + pair, norm + RoPE epilogue, by U = 1, 2, 4, 8 vectors a lane
   * (NULL: none). */
  CUfunction gemv1k[3][3][4];
  CUfunction attn[3][KC_ATTN_DPL_COUNT];     /* k/v f32, f16, bf16 */
  CUfunction attn_dec[3][KC_ATTN_DPL_COUNT]; /* decode: clusters */
  CUfunction attn_tile[3][3];               /* prefill: DPL 1, 2, 4 */
  CUfunction attn_flash[3][2];              /* long prefill: D <= 64, 128 */
  int sm_count;
  int cc_major, cc_minor;
  bool can_use_host_ptr;
  bool read_only_register;
  /* Device-side failures: a claim flag in device memory and a record in
   * host-mapped pinned memory (kernels_abi.h says why). */
  CUdeviceptr err_claim;
  kc_error *err_record;             /* host pointer */
  CUdeviceptr err_record_dev;
  CUdeviceptr scratch;
  /* Zeroed device ints that kernels use to find the last block of a
   * launch (each resets its own), then ARGMAX partials. */
  CUdeviceptr aux;
  /* Fuse the ops of a program that one kernel can do (KILN_CUDA_FUSE=0
   * turns it off, for comparisons). */
  bool fuse;
  /* KILN_CUDA_SGEMV=cublas: one-row f32 GEMVs by cublasSgemv. */
  bool sgemv;
  /* RMSNORM + q, k, v GEMVs + ROPE + KV append in one launch (the one-row
   * GEMV's RoPE epilogue); KILN_CUDA_ROPE_EPILOGUE=0: ROPE + append by
   * kiln_rope_copy after the GEMVs, for comparisons. */
  bool rope_epilogue;
  /* Attention blocks per SM that decode's splits of the cache aim at
   * (KILN_CUDA_ATTN_BLOCKS, default 4) and the fewest cache rows a split
   * takes (KILN_CUDA_ATTN_MIN_KEYS, default 16), for comparisons. */
  int attn_blocks, attn_min_keys;
  /* Attention of at least KC_AT_Q queries (prefill) by kiln_attn_tile_*
   * (KILN_CUDA_ATTN_TILE=0: by kiln_attn_*, for comparisons). */
  bool tile_attention;
  /* Attention of at least KC_AF_Q queries, D <= 128, by kiln_attn_flash_*
   * (KILN_CUDA_ATTN_FLASH=0: as shorter prefills, for comparisons). */
  bool flash_attention;
  /* Elementwise ops, RMSNORM and COPY four elements a thread where rows
   * allow, ROPE of short heads several heads a block (KILN_CUDA_VEC4=0:
   * one element a thread, for comparisons). */
  bool vec4;
  /* One-row GEMVs (plain, RMSNORM + gate/up, RMSNORM + q/k/v + RoPE) by
   * kiln_gemv1k_* where they qualify (KILN_CUDA_SPLITK=0: by kiln_gemv1_*
   * and kiln_gemv_*, for comparisons), and
   * fused RMSNORM outputs stored early when not in place
   * (KILN_CUDA_X_EARLY=0: by the last block, for comparisons). */
  bool splitk, x_early;
  /* Decode attention by kiln_attn_dec_* (a cluster of blocks per query and
   * head; KILN_CUDA_ATTN_DEC=0: by kiln_attn_*'s splits, for comparisons). */
  bool dec_attention;
  /* kiln_gemv1k and kiln_attn_dec recorded into graphs as programmatic
   * dependents of the kernel before them, so that they request their
   * weights while it runs (KILN_CUDA_PDL=0, or a driver without
   * cuLaunchKernelEx: launched plainly, for comparisons). */
  bool pdl;
  /* While kiln_cuda_launch_seq records a program: the byte ranges its ops
   * launched so far write, merged (what pdl_may checks a kernel's early
   * reads against), whether the sequence is under way, and whether the
   * ranges could not be kept (then no kernel is launched early). */
  struct { uint64_t lo, hi; } *seq_written;
  size_t seq_written_n, seq_written_cap;
  bool seq_active, seq_lost;
  /* cuBLAS, when present (otherwise GEMM uses kiln_tiled). */
  const kiln_cublas_api *blas;
  cublasHandle_t blas_handle;
  CUdeviceptr blas_workspace;
  bool capturing;
  /* KILN_CUDA_PROFILE=1: each launch is timed on its own (stream synced
   * around it; graphs are not used) and per-kind totals, sync waits and
   * copies are printed to stderr when the device is released. For finding
   * where time goes, never for measurements. */
  /* Prefill activations converted to the weights' 16-bit type for cuBLAS:
   * grown before a program is recorded (kiln_cuda_prepare) or at an
   * unrecorded launch; outgrown buffers stay until the device goes, since
   * graphs recorded before may use them. */
  CUdeviceptr xconv;
  uint64_t xconv_bytes;
  CUdeviceptr *xconv_old;
  size_t xconv_old_n, xconv_old_cap;
  int profile;                      /* 0, 1 totals, 2 every launch */
  struct {
    double launch_s[KILN_OP_KIND_COUNT];
    uint64_t launches[KILN_OP_KIND_COUNT];
    double sync_s, upload_s, download_s;
    uint64_t syncs, uploads, downloads, upload_bytes, download_bytes;
  } prof;
} kiln_cuda_device;

double kiln_cuda_now_s(void);

static inline kiln_cuda_device *kiln_cuda_of(kiln_device *d) {
  return (kiln_cuda_device *)d;
}

/* Makes the device's context current on the calling thread (the device may
 * be used from any one thread at a time). */
kiln_status kiln_cuda_make_current(kiln_cuda_device *cd);

/* Sets up what launching ops[0..n) will need (the prefill's 16-bit x):
 * before a program is recorded into a graph, when nothing can be
 * allocated (cuda_launch.c). */
void kiln_cuda_prepare(kiln_cuda_device *cd, const kiln_dop *ops, size_t n);

/* The vtable's launch (cuda_launch.c). */
kiln_status kiln_cuda_launch(kiln_device *d, const kiln_dop *op);
/* The vtable's launch_seq: a program's ops, fused where one kernel can do
 * several (cuda_launch.c). */
kiln_status kiln_cuda_launch_seq(kiln_device *d, const kiln_dop *ops, size_t n);

#endif /* KILN_DEVICE_CUDA_CUDA_INTERNAL_H_ */
