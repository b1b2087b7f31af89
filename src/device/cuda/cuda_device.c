/* The cuda backend: device creation, host registration, device memory,
 * copies, sync with device-side error reporting, and CUDA graphs.
 *
 * One kiln_device is one CUDA stream in the device's primary context
 * (cuDevicePrimaryCtxRetain), the context the runtime API, and so cuBLAS,
 * uses too. Several kiln_devices on one GPU share that context and each
 * has its own stream, module, error record and scratch. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda/cuda_internal.h"

#define CU_CALL(cd, call) ((cd)->cu->call)

/* KILN_CUDA_TRACE=1: one line on stderr per step of creation and
 * destruction, to locate a driver call that hangs on some machine. */
static bool trace_on(void) {
  static int on = -1;
  if (on < 0) {
    const char *e = getenv("KILN_CUDA_TRACE");
    on = e && *e && strcmp(e, "0") != 0;
  }
  return on;
}
#define TRACE(...)                                  \
  do {                                              \
    if (trace_on()) {                               \
      fprintf(stderr, "kiln cuda: " __VA_ARGS__);   \
      fputc('\n', stderr);                          \
    }                                               \
  } while (0)

kiln_status kiln_cuda_make_current(kiln_cuda_device *cd) {
  CUresult r = cd->cu->cuCtxSetCurrent(cd->ctx);
  if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuCtxSetCurrent");
  return KILN_OK;
}

/* ---- host registration ---------------------------------------------------
 * cuMemHostRegister is per process and context, not per kiln_device: two
 * devices on one GPU (two guests) may attach the same memory, and the
 * second registration of a range would fail. Registrations are therefore
 * counted here, per (context, range). */

typedef struct host_reg {
  struct host_reg *next;
  CUcontext ctx;
  void *ptr;
  uint64_t len;
  int refs;
} host_reg;
static host_reg *g_regs;
static pthread_mutex_t g_regs_lock = PTHREAD_MUTEX_INITIALIZER;

static host_reg **find_reg(CUcontext ctx, void *p, uint64_t n) {
  for (host_reg **r = &g_regs; *r; r = &(*r)->next)
    if ((*r)->ctx == ctx && (*r)->ptr == p && (*r)->len == n) return r;
  return NULL;
}

static kiln_status cuda_register_host(kiln_device *d, void *p, uint64_t n,
                                      bool read_only) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  pthread_mutex_lock(&g_regs_lock);
  host_reg **found = find_reg(cd->ctx, p, n);
  if (found) {
    (*found)->refs++;
    pthread_mutex_unlock(&g_regs_lock);
    return KILN_OK;
  }
  kiln_status st = KILN_OK;
  host_reg *reg = calloc(1, sizeof *reg);
  if (!reg) {
    st = kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  unsigned flags = KILN_CU_MEMHOSTREGISTER_DEVICEMAP;
  if (read_only && cd->read_only_register)
    flags |= KILN_CU_MEMHOSTREGISTER_READ_ONLY;
  CUresult r = CU_CALL(cd, cuMemHostRegister)(p, (size_t)n, flags);
  if (r == KILN_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED) {
    st = kiln_make_status(
        KILN_CODE_FAILED_PRECONDITION,
        "cuMemHostRegister(%p, %" PRIu64 "): the range overlaps host memory "
        "already registered with CUDA in this process",
        p, n);
    goto out;
  }
  if (r) {
    char what[96];
    snprintf(what, sizeof what, "cuMemHostRegister(%p, %" PRIu64 ")", p, n);
    st = kiln_cuda_status(KILN_CODE_RESOURCE_EXHAUSTED, r, what);
    goto out;
  }
  /* Pointer identity: kernels get host addresses of MAPPED ranges as they
   * are; that is only right if the device maps them at the same address. */
  CUdeviceptr dp = 0;
  r = CU_CALL(cd, cuMemHostGetDevicePointer)(&dp, p, 0);
  if (r || dp != (CUdeviceptr)(uintptr_t)p) {
    CU_CALL(cd, cuMemHostUnregister)(p);
    st = r ? kiln_cuda_status(KILN_CODE_INTERNAL, r,
                              "cuMemHostGetDevicePointer")
           : kiln_make_status(
                 KILN_CODE_FAILED_PRECONDITION,
                 "cuda:%d maps registered host memory %p at device address "
                 "0x%llx: no pointer identity (the GPU lacks "
                 "CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM), so MAPPED "
                 "placement is impossible here",
                 cd->ordinal, p, dp);
    goto out;
  }
  reg->ctx = cd->ctx;
  reg->ptr = p;
  reg->len = n;
  reg->refs = 1;
  reg->next = g_regs;
  g_regs = reg;
  reg = NULL;
out:
  pthread_mutex_unlock(&g_regs_lock);
  free(reg);
  return st;
}

static void cuda_unregister_host(kiln_device *d, void *p, uint64_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  if (kiln_cuda_make_current(cd)) return;
  /* Kernels still queued may read the range: let them finish first. */
  CU_CALL(cd, cuStreamSynchronize)(cd->stream);
  pthread_mutex_lock(&g_regs_lock);
  host_reg **found = find_reg(cd->ctx, p, n);
  if (found && --(*found)->refs == 0) {
    host_reg *reg = *found;
    *found = reg->next;
    CU_CALL(cd, cuMemHostUnregister)(p);
    free(reg);
  }
  pthread_mutex_unlock(&g_regs_lock);
}

/* ---- device memory and copies ---------------------------------------------- */

static kiln_status cuda_alloc(kiln_device *d, uint64_t n, uint64_t *out) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  CUdeviceptr p = 0;
  CUresult r = CU_CALL(cd, cuMemAlloc)(&p, (size_t)(n ? n : 1));
  if (r) {
    char what[64];
    snprintf(what, sizeof what, "cuMemAlloc(%" PRIu64 ")", n);
    return kiln_cuda_status(KILN_CODE_RESOURCE_EXHAUSTED, r, what);
  }
  *out = (uint64_t)p;
  return KILN_OK;
}

static void cuda_free(kiln_device *d, uint64_t addr, uint64_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  if (!addr || kiln_cuda_make_current(cd)) return;
  CU_CALL(cd, cuMemFree)((CUdeviceptr)addr);
}

/* Bytes from `p` (at most n) that lie in one host registration, or, when
 * `p` is in none, before the next registration starts. The driver refuses
 * (CUDA_ERROR_INVALID_VALUE) a copy whose host side spans two
 * registrations, which a RESIDENT range does once its memory has grown
 * after attach (each grow registers its new pages separately). */
static uint64_t host_span(CUcontext ctx, const void *p, uint64_t n) {
  uintptr_t a = (uintptr_t)p;
  uint64_t span = n;
  pthread_mutex_lock(&g_regs_lock);
  for (host_reg *r = g_regs; r; r = r->next) {
    if (r->ctx != ctx) continue;
    uintptr_t lo = (uintptr_t)r->ptr, hi = lo + r->len;
    if (a >= lo && a < hi) {
      if (hi - a < span) span = hi - a;
    } else if (lo > a && lo - a < span) {
      span = lo - a;
    }
  }
  pthread_mutex_unlock(&g_regs_lock);
  return span;
}

double kiln_cuda_now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static kiln_status cuda_upload(kiln_device *d, uint64_t dst, const void *src,
                               uint64_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  if (cd->profile) cd->prof.uploads++, cd->prof.upload_bytes += n;
  const uint8_t *s = src;
  while (n) {
    uint64_t k = host_span(cd->ctx, s, n);
    CUresult r = CU_CALL(cd, cuMemcpyHtoDAsync)((CUdeviceptr)dst, s,
                                                 (size_t)k, cd->stream);
    if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuMemcpyHtoDAsync");
    s += k, dst += k, n -= k;
  }
  return KILN_OK;
}

static kiln_status cuda_download(kiln_device *d, void *dst, uint64_t src,
                                 uint64_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  if (cd->profile) cd->prof.downloads++, cd->prof.download_bytes += n;
  uint8_t *t = dst;
  while (n) {
    uint64_t k = host_span(cd->ctx, t, n);
    CUresult r = CU_CALL(cd, cuMemcpyDtoHAsync)(t, (CUdeviceptr)src,
                                                 (size_t)k, cd->stream);
    if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuMemcpyDtoHAsync");
    t += k, src += k, n -= k;
  }
  return KILN_OK;
}

/* ---- sync ------------------------------------------------------------------- */

static kiln_status error_status(const kc_error *e) {
  switch (e->code) {
    case KC_ERR_COPY_ROW:
      return kiln_make_status(
          KILN_CODE_OUT_OF_RANGE,
          "copy: index row %" PRId64 " plus %" PRId64
          " rows falls outside the destination's %" PRId64 " rows",
          e->value, e->extra, e->bound);
    case KC_ERR_GATHER_ID:
      return kiln_make_status(
          KILN_CODE_OUT_OF_RANGE,
          "gather: id %" PRId64 " (entry %" PRId64
          ") outside the table's %" PRId64 " rows",
          e->value, e->extra, e->bound);
    case KC_ERR_ATTN_POS:
      return kiln_make_status(
          KILN_CODE_OUT_OF_RANGE,
          "attention: position %" PRId64 " with %" PRId64
          " queries outside the cache's %" PRId64 " rows",
          e->value, e->extra, e->bound);
    default:
      return kiln_make_status(KILN_CODE_INTERNAL,
                              "device reported unknown failure %d", e->code);
  }
}

static kiln_status cuda_sync(kiln_device *d) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  double t0 = cd->profile ? kiln_cuda_now_s() : 0;
  CUresult r = CU_CALL(cd, cuStreamSynchronize)(cd->stream);
  if (cd->profile) cd->prof.sync_s += kiln_cuda_now_s() - t0, cd->prof.syncs++;
  if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuStreamSynchronize");
  volatile kc_error *rec = cd->err_record;
  if (rec->code == KC_ERR_NONE) return KILN_OK;
  kc_error e = {rec->code, rec->op_kind, rec->value, rec->bound, rec->extra};
  memset(cd->err_record, 0, sizeof *cd->err_record);
  /* Re-arm the claim flag, in stream order before any later kernel. */
  r = CU_CALL(cd, cuMemsetD32Async)(cd->err_claim, 0, 1, cd->stream);
  kiln_status st = error_status(&e);
  if (r)
    st = kiln_status_annotate(st, "(and re-arming the error flag failed: %d)",
                              r);
  return st;
}

/* ---- graphs ------------------------------------------------------------------ */

static kiln_status cuda_graph_begin(kiln_device *d, const kiln_dop *ops,
                                    size_t n) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  kiln_cuda_prepare(cd, ops, n);
  CUresult r = CU_CALL(cd, cuStreamBeginCapture)(
      cd->stream, KILN_CU_STREAM_CAPTURE_MODE_THREAD_LOCAL);
  if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuStreamBeginCapture");
  cd->capturing = true;
  return KILN_OK;
}

static kiln_status cuda_graph_end(kiln_device *d, void **out_graph) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  *out_graph = NULL;
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  CUgraph g = NULL;
  CUresult r = CU_CALL(cd, cuStreamEndCapture)(cd->stream, &g);
  cd->capturing = false;
  if (r) {
    if (g) CU_CALL(cd, cuGraphDestroy)(g);
    return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuStreamEndCapture");
  }
  CUgraphExec exec = NULL;
  r = CU_CALL(cd, cuGraphInstantiate)(&exec, g, 0);
  CU_CALL(cd, cuGraphDestroy)(g);
  if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuGraphInstantiate");
  *out_graph = exec;
  return KILN_OK;
}

static kiln_status cuda_graph_launch(kiln_device *d, void *graph) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  KILN_RETURN_IF_ERROR(kiln_cuda_make_current(cd));
  CUresult r = CU_CALL(cd, cuGraphLaunch)((CUgraphExec)graph, cd->stream);
  if (r) return kiln_cuda_status(KILN_CODE_INTERNAL, r, "cuGraphLaunch");
  return KILN_OK;
}

static void cuda_graph_free(kiln_device *d, void *graph) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  if (!graph || kiln_cuda_make_current(cd)) return;
  CU_CALL(cd, cuGraphExecDestroy)((CUgraphExec)graph);
}

/* ---- creation and destruction ------------------------------------------------ */

static void print_profile(const kiln_cuda_device *cd) {
  fprintf(stderr, "kiln cuda profile (each launch synced on its own):\n");
  double total = 0;
  for (int k = 0; k < KILN_OP_KIND_COUNT; k++) total += cd->prof.launch_s[k];
  for (int k = 0; k < KILN_OP_KIND_COUNT; k++) {
    if (!cd->prof.launches[k]) continue;
    fprintf(stderr, "  %-10s %9" PRIu64 " launches %10.3f ms %8.2f us each %5.1f%%\n",
            kiln_op_kind_name((kiln_op_kind)k), cd->prof.launches[k],
            1e3 * cd->prof.launch_s[k],
            1e6 * cd->prof.launch_s[k] / (double)cd->prof.launches[k],
            total > 0 ? 100 * cd->prof.launch_s[k] / total : 0);
  }
  fprintf(stderr, "  syncs %" PRIu64 " waiting %.3f ms; uploads %" PRIu64
          " (%.1f MB); downloads %" PRIu64 " (%.1f MB)\n",
          cd->prof.syncs, 1e3 * cd->prof.sync_s, cd->prof.uploads,
          cd->prof.upload_bytes / 1e6, cd->prof.downloads,
          cd->prof.download_bytes / 1e6);
}

static void cuda_destroy(kiln_device *d) {
  kiln_cuda_device *cd = kiln_cuda_of(d);
  if (!cd) return;
  const kiln_cuda_api *cu = cd->cu;
  TRACE("destroy cuda:%d", cd->ordinal);
  if (cd->profile) print_profile(cd);
  if (cd->ctx && cu->cuCtxSetCurrent(cd->ctx) == KILN_CUDA_SUCCESS) {
    if (cd->stream) cu->cuStreamSynchronize(cd->stream);
    TRACE("  stream idle");
    if (cd->blas_handle) cd->blas->cublasDestroy(cd->blas_handle);
    if (cd->blas_workspace) cu->cuMemFree(cd->blas_workspace);
    if (cd->scratch) cu->cuMemFree(cd->scratch);
    if (cd->aux) cu->cuMemFree(cd->aux);
    if (cd->xconv) cu->cuMemFree(cd->xconv);
    for (size_t i = 0; i < cd->xconv_old_n; i++) cu->cuMemFree(cd->xconv_old[i]);
    if (cd->err_claim) cu->cuMemFree(cd->err_claim);
    if (cd->err_record) cu->cuMemFreeHost(cd->err_record);
    if (cd->stream) cu->cuStreamDestroy(cd->stream);
    if (cd->module) cu->cuModuleUnload(cd->module);
    cu->cuDevicePrimaryCtxRelease(cd->dev);
    TRACE("  released");
  }
  free(cd->xconv_old);
  free(cd->seq_written);
  free(cd);
}

static const kiln_device_vtable kCudaVtable = {
    .destroy = cuda_destroy,
    .register_host = cuda_register_host,
    .unregister_host = cuda_unregister_host,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .upload = cuda_upload,
    .download = cuda_download,
    .launch = kiln_cuda_launch,
    .launch_seq = kiln_cuda_launch_seq,
    .sync = cuda_sync,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

#define TRY_CU(call, what)                                           \
  do {                                                               \
    CUresult r_ = (call);                                            \
    if (r_) {                                                        \
      st = kiln_cuda_status(KILN_CODE_UNAVAILABLE, r_, what);        \
      goto fail;                                                     \
    }                                                                \
  } while (0)

static kiln_status load_kernels(kiln_cuda_device *cd) {
  static const char *const kNames[KC_FN_COUNT] = {
#define X(id, name) name,
      KILN_CUDA_KERNELS(X)
#undef X
  };
  static const char *const kTypes[3] = {"f32", "f16", "bf16"};
  static const int kDpl[KC_ATTN_DPL_COUNT] = {1, 2, 4, 8};
  char name[64];
  CUresult r;
#define GET(slot, nm)                                                       \
  do {                                                                      \
    TRACE("    %s", (nm));                                                  \
    r = cd->cu->cuModuleGetFunction(&(slot), cd->module, (nm));             \
    if (r) return kiln_cuda_status(KILN_CODE_UNAVAILABLE, r, (nm));         \
  } while (0)
  for (int i = 0; i < KC_FN_COUNT; i++) GET(cd->fn[i], kNames[i]);
  for (int t = 0; t < 3; t++)
    for (int m = 0; m < KC_GEMV_MT_MAX; m++) {
      snprintf(name, sizeof name, "kiln_gemv_%s_%d", kTypes[t], m + 1);
      GET(cd->gemv[t][m], name);
    }
  static const char *const kGemv1[5] = {"", "_pair", "_norm", "_norm_pair",
                                        "_norm_rope"};
  for (int t = 0; t < 3; t++)
    for (int v = 0; v < 5; v++) {
      snprintf(name, sizeof name, "kiln_gemv1_%s%s", kTypes[t], kGemv1[v]);
      GET(cd->gemv1[t][v], name);
    }
  /* kiln_gemv1k: plain, norm + pair, norm + RoPE, U = 1, 2, 4, 8 (the two
   * fused variants have no U = 8: left NULL). */
  static const char *const kGemv1k[3] = {"", "_norm_pair", "_norm_rope"};
  for (int t = 0; t < 3; t++)
    for (int v = 0; v < 3; v++)
      for (int u = 0; u < 4; u++) {
        if (v > 0 && u == 3) continue;
        snprintf(name, sizeof name, "kiln_gemv1k_%s%s_u%d", kTypes[t], kGemv1k[v],
                 1 << u);
        GET(cd->gemv1k[t][v][u], name);
      }
  for (int m = 0; m < KC_GEMV_MT_MAX; m++) {
    snprintf(name, sizeof name, "kiln_gemv_q8_0_%d", m + 1);
    GET(cd->gemv_q8[m], name);
  }
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < KC_ATTN_DPL_COUNT; i++) {
      snprintf(name, sizeof name, "kiln_attn_%s_%d", kTypes[t], kDpl[i]);
      GET(cd->attn[t][i], name);
      snprintf(name, sizeof name, "kiln_attn_dec_%s_%d", kTypes[t], kDpl[i]);
      GET(cd->attn_dec[t][i], name);
      if (i >= 3) continue;
      snprintf(name, sizeof name, "kiln_attn_tile_%s_%d", kTypes[t], kDpl[i]);
      GET(cd->attn_tile[t][i], name);
    }
  /* Long prefills: head sizes up to 64 and 128, with more dynamic shared
   * memory than the default 48 KiB. */
  for (int t = 0; t < 3; t++)
    for (int i = 0; i < 2; i++) {
      const int dv = 64 << i;
      snprintf(name, sizeof name, "kiln_attn_flash_%s_%d", kTypes[t], dv);
      GET(cd->attn_flash[t][i], name);
      r = cd->cu->cuFuncSetAttribute(
          cd->attn_flash[t][i], KILN_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
          (int)KC_AF_SMEM(dv));
      if (r) return kiln_cuda_status(KILN_CODE_UNAVAILABLE, r, name);
    }
#undef GET
  return KILN_OK;
}

/* cuBLAS is optional: without it GEMM runs on kiln_tiled. `why` receives
 * the reason when it is absent. */
static void setup_cublas(kiln_cuda_device *cd, char *why, size_t why_len) {
  const kiln_cublas_api *blas = NULL;
  kiln_status st = kiln_cublas_api_get(&blas);
  if (st) {
    snprintf(why, why_len, "%s", kiln_status_message(st));
    kiln_status_free(st);
    return;
  }
  cublasHandle_t h = NULL;
  cublasStatus_t bs = blas->cublasCreate(&h);
  if (bs) {
    snprintf(why, why_len, "cublasCreate: %s", blas->cublasGetStatusString(bs));
    return;
  }
  CUdeviceptr ws = 0;
  if (cd->cu->cuMemAlloc(&ws, KILN_CUDA_CUBLAS_WORKSPACE) ||
      (bs = blas->cublasSetStream(h, cd->stream)) ||
      (bs = blas->cublasSetWorkspace(h, (void *)(uintptr_t)ws,
                                     KILN_CUDA_CUBLAS_WORKSPACE)) ||
      (bs = blas->cublasSetMathMode(h, KILN_CUBLAS_DEFAULT_MATH))) {
    snprintf(why, why_len, "cuBLAS setup failed (%d)", bs);
    blas->cublasDestroy(h);
    if (ws) cd->cu->cuMemFree(ws);
    return;
  }
  cd->blas = blas;
  cd->blas_handle = h;
  cd->blas_workspace = ws;
  int v = 0;
  blas->cublasGetVersion(h, &v);
  snprintf(why, why_len, "cuBLAS %d", v);
}

/* A switch that is on unless the environment sets it to "0" (the
 * KILN_CUDA_* comparisons). */
static bool env_on(const char *name) {
  const char *v = getenv(name);
  return !(v && strcmp(v, "0") == 0);
}

kiln_status kiln_cuda_device_create(const kiln_device_options *o, int ordinal,
                                    kiln_device **out) {
  (void)o;
  *out = NULL;
  const kiln_cuda_api *cu = NULL;
  TRACE("create cuda:%d: loading libcuda", ordinal);
  KILN_RETURN_IF_ERROR(kiln_cuda_api_get(&cu));
  TRACE("  cuInit");
  CUresult r = cu->cuInit(0);
  if (r == KILN_CUDA_ERROR_NO_DEVICE)
    return kiln_make_status(KILN_CODE_UNAVAILABLE, "no CUDA device");
  if (r) return kiln_cuda_status(KILN_CODE_UNAVAILABLE, r, "cuInit");
  int count = 0;
  r = cu->cuDeviceGetCount(&count);
  if (r) return kiln_cuda_status(KILN_CODE_UNAVAILABLE, r, "cuDeviceGetCount");
  if (count == 0)
    return kiln_make_status(KILN_CODE_UNAVAILABLE, "no CUDA device");
  if (ordinal < 0 || ordinal >= count)
    return kiln_make_status(KILN_CODE_UNAVAILABLE,
                            "no CUDA device %d (%d present)", ordinal, count);
  size_t fatbin_size = 0;
  const unsigned char *fatbin = kiln_cuda_fatbin(&fatbin_size);
  if (!fatbin_size)
    return kiln_make_status(KILN_CODE_UNAVAILABLE,
                            "built without CUDA kernels");

  kiln_cuda_device *cd = calloc(1, sizeof *cd);
  if (!cd) return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED, "out of memory");
  cd->cu = cu;
  cd->ordinal = ordinal;
  const char *prof = getenv("KILN_CUDA_PROFILE");
  cd->profile = prof && *prof ? atoi(prof) : 0;
  cd->base.no_graphs = cd->profile;
  /* Attached memories are registered (page-locked): copy-back is DMA. */
  cd->base.dma_downloads = true;
  cd->fuse = env_on("KILN_CUDA_FUSE");
  const char *sg = getenv("KILN_CUDA_SGEMV");
  cd->sgemv = sg && strcmp(sg, "cublas") == 0;
  cd->rope_epilogue = env_on("KILN_CUDA_ROPE_EPILOGUE");
  cd->vec4 = env_on("KILN_CUDA_VEC4");
  cd->tile_attention = env_on("KILN_CUDA_ATTN_TILE");
  cd->flash_attention = env_on("KILN_CUDA_ATTN_FLASH");
  cd->splitk = env_on("KILN_CUDA_SPLITK");
  cd->x_early = env_on("KILN_CUDA_X_EARLY");
  cd->dec_attention = env_on("KILN_CUDA_ATTN_DEC");
  cd->pdl = env_on("KILN_CUDA_PDL") && cu->cuLaunchKernelEx;
  const char *ab = getenv("KILN_CUDA_ATTN_BLOCKS");
  cd->attn_blocks = ab && atoi(ab) > 0 && atoi(ab) <= 64 ? atoi(ab) : 4;
  const char *amk = getenv("KILN_CUDA_ATTN_MIN_KEYS");
  cd->attn_min_keys = amk && atoi(amk) > 0 && atoi(amk) <= 4096 ? atoi(amk) : 16;
  kiln_status st = KILN_OK;
  TRY_CU(cu->cuDeviceGet(&cd->dev, ordinal), "cuDeviceGet");
  char gpu[128] = "?";
  cu->cuDeviceGetName(gpu, sizeof gpu, cd->dev);
  int v = 0;
  cu->cuDeviceGetAttribute(&cd->cc_major, KILN_CU_ATTR_CC_MAJOR, cd->dev);
  cu->cuDeviceGetAttribute(&cd->cc_minor, KILN_CU_ATTR_CC_MINOR, cd->dev);
  cu->cuDeviceGetAttribute(&cd->sm_count, KILN_CU_ATTR_MULTIPROCESSOR_COUNT,
                           cd->dev);
  if (cu->cuDeviceGetAttribute(
          &v, KILN_CU_ATTR_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM,
          cd->dev) == 0)
    cd->can_use_host_ptr = v != 0;
  if (cu->cuDeviceGetAttribute(
          &v, KILN_CU_ATTR_READ_ONLY_HOST_REGISTER_SUPPORTED, cd->dev) == 0)
    cd->read_only_register = v != 0;
  if (cd->sm_count <= 0) cd->sm_count = 1;
  size_t mem = 0;
  cu->cuDeviceTotalMem(&mem, cd->dev);
  if (cd->cc_major < 9) {
    st = kiln_make_status(KILN_CODE_UNAVAILABLE,
                          "cuda:%d (%s) is sm_%d%d; kiln's kernels are built "
                          "for sm_90 and newer",
                          ordinal, gpu, cd->cc_major, cd->cc_minor);
    goto fail;
  }
  TRACE("  %s sm_%d%d; retaining the primary context", gpu, cd->cc_major,
        cd->cc_minor);
  TRY_CU(cu->cuDevicePrimaryCtxRetain(&cd->ctx, cd->dev),
         "cuDevicePrimaryCtxRetain");
  TRY_CU(cu->cuCtxSetCurrent(cd->ctx), "cuCtxSetCurrent");
  TRACE("  cuModuleLoadData (%zu bytes)", fatbin_size);
  TRY_CU(cu->cuModuleLoadData(&cd->module, fatbin),
         "cuModuleLoadData(kiln kernels)");
  TRACE("  cuModuleGetFunction");
  if ((st = load_kernels(cd))) goto fail;
  TRACE("  stream, error record, scratch");
  TRY_CU(cu->cuStreamCreate(&cd->stream, KILN_CU_STREAM_NON_BLOCKING),
         "cuStreamCreate");
  TRY_CU(cu->cuMemAlloc(&cd->err_claim, sizeof(int32_t)), "cuMemAlloc");
  TRY_CU(cu->cuMemsetD32Async(cd->err_claim, 0, 1, cd->stream),
         "cuMemsetD32Async");
  TRY_CU(cu->cuMemHostAlloc((void **)&cd->err_record, sizeof(kc_error),
                            KILN_CU_MEMHOSTALLOC_DEVICEMAP),
         "cuMemHostAlloc");
  memset(cd->err_record, 0, sizeof(kc_error));
  TRY_CU(cu->cuMemHostGetDevicePointer(&cd->err_record_dev, cd->err_record, 0),
         "cuMemHostGetDevicePointer");
  TRY_CU(cu->cuMemAlloc(&cd->scratch, KILN_CUDA_SCRATCH_BYTES), "cuMemAlloc");
  TRY_CU(cu->cuMemAlloc(&cd->aux, KILN_CUDA_AUX_BYTES), "cuMemAlloc");
  TRY_CU(cu->cuMemsetD32Async(cd->aux, 0, KILN_CUDA_AUX_BYTES / 4, cd->stream),
         "cuMemsetD32Async");
  char blas[200] = "";
  TRACE("  cuBLAS");
  setup_cublas(cd, blas, sizeof blas);
  TRACE("  %s", blas);
  TRY_CU(cu->cuStreamSynchronize(cd->stream), "cuStreamSynchronize");

  cd->base.vt = &kCudaVtable;
  cd->base.kind = KILN_DEVICE_CUDA;
  snprintf(cd->base.describe, sizeof cd->base.describe,
           "cuda:%d (%s, sm_%d%d, %d SMs, %.0f GiB; driver %d.%d; %s%s)",
           ordinal, gpu, cd->cc_major, cd->cc_minor, cd->sm_count,
           (double)mem / (1u << 30), cu->driver_version / 1000,
           (cu->driver_version % 1000) / 10, cd->blas ? "" : "no cuBLAS: ",
           blas);
  *out = &cd->base;
  return KILN_OK;
fail:
  cuda_destroy(&cd->base);
  return st;
}
