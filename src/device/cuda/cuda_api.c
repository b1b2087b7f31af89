/* Run-time loading of the CUDA driver API and cuBLAS (see cuda_api.h). */
#include "device/cuda/cuda_api.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- driver ------------------------------------------------------------- */

static kiln_cuda_api g_api;
static char g_api_error[256];
static pthread_once_t g_api_once = PTHREAD_ONCE_INIT;

/* Where the driver lives: the loader's path first (the driver installer
 * puts libcuda.so.1 there), then the usual places of container runtimes.
 * Never the toolkit's stubs/libcuda.so, which only fails. */
static const char *const kDriverPaths[] = {
    "libcuda.so.1",
    "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
    "/usr/local/nvidia/lib64/libcuda.so.1",
    "/usr/lib64/libcuda.so.1",
    "/usr/lib/wsl/lib/libcuda.so.1",
};

static void api_load(void) {
  void *h = NULL;
  for (size_t i = 0; i < sizeof kDriverPaths / sizeof *kDriverPaths && !h;
       i++)
    h = dlopen(kDriverPaths[i], RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    snprintf(g_api_error, sizeof g_api_error, "libcuda.so.1: not found");
    return;
  }
  struct {
    const char *name;
    void **slot;
  } syms[] = {
#define S(field, sym) {sym, (void **)&g_api.field}
      S(cuInit, "cuInit"),
      S(cuDriverGetVersion, "cuDriverGetVersion"),
      S(cuGetErrorName, "cuGetErrorName"),
      S(cuGetErrorString, "cuGetErrorString"),
      S(cuDeviceGetCount, "cuDeviceGetCount"),
      S(cuDeviceGet, "cuDeviceGet"),
      S(cuDeviceGetName, "cuDeviceGetName"),
      S(cuDeviceGetAttribute, "cuDeviceGetAttribute"),
      S(cuDeviceTotalMem, "cuDeviceTotalMem_v2"),
      S(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"),
      S(cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"),
      S(cuCtxSetCurrent, "cuCtxSetCurrent"),
      S(cuModuleLoadData, "cuModuleLoadData"),
      S(cuModuleUnload, "cuModuleUnload"),
      S(cuModuleGetFunction, "cuModuleGetFunction"),
      S(cuFuncSetAttribute, "cuFuncSetAttribute"),
      S(cuStreamCreate, "cuStreamCreate"),
      S(cuStreamDestroy, "cuStreamDestroy_v2"),
      S(cuStreamSynchronize, "cuStreamSynchronize"),
      S(cuMemAlloc, "cuMemAlloc_v2"),
      S(cuMemFree, "cuMemFree_v2"),
      S(cuMemHostAlloc, "cuMemHostAlloc"),
      S(cuMemFreeHost, "cuMemFreeHost"),
      S(cuMemHostRegister, "cuMemHostRegister_v2"),
      S(cuMemHostUnregister, "cuMemHostUnregister"),
      S(cuMemHostGetDevicePointer, "cuMemHostGetDevicePointer_v2"),
      S(cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"),
      S(cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"),
      S(cuMemsetD32Async, "cuMemsetD32Async"),
      S(cuLaunchKernel, "cuLaunchKernel"),
      S(cuStreamBeginCapture, "cuStreamBeginCapture_v2"),
      S(cuStreamEndCapture, "cuStreamEndCapture"),
      S(cuGraphInstantiate, "cuGraphInstantiateWithFlags"),
      S(cuGraphLaunch, "cuGraphLaunch"),
      S(cuGraphDestroy, "cuGraphDestroy"),
      S(cuGraphExecDestroy, "cuGraphExecDestroy"),
#undef S
  };
  for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
    *syms[i].slot = dlsym(h, syms[i].name);
    if (!*syms[i].slot) {
      snprintf(g_api_error, sizeof g_api_error,
               "libcuda.so.1: no symbol %s (driver too old)", syms[i].name);
      memset(&g_api, 0, sizeof g_api);
      return;   /* the handle stays open: harmless, and never reloaded */
    }
  }
  *(void **)&g_api.cuLaunchKernelEx = dlsym(h, "cuLaunchKernelEx");   /* optional */
  if (g_api.cuDriverGetVersion(&g_api.driver_version) != KILN_CUDA_SUCCESS)
    g_api.driver_version = 0;
}

kiln_status kiln_cuda_api_get(const kiln_cuda_api **out) {
  pthread_once(&g_api_once, api_load);
  if (g_api_error[0])
    return kiln_make_status(KILN_CODE_UNAVAILABLE, "%s", g_api_error);
  *out = &g_api;
  return KILN_OK;
}

kiln_status kiln_cuda_status_at(const char *file, int line, kiln_code code,
                                CUresult r, const char *what) {
  const char *name = NULL, *desc = NULL;
  if (g_api.cuGetErrorName) g_api.cuGetErrorName(r, &name);
  if (g_api.cuGetErrorString) g_api.cuGetErrorString(r, &desc);
  return kiln_make_status_at(file, line, code, "%s: %s (%d): %s", what,
                             name ? name : "CUDA error", r,
                             desc ? desc : "unknown");
}

/* ---- cuBLAS ------------------------------------------------------------- */

static kiln_cublas_api g_blas;
static char g_blas_error[400];
static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

/* libcublas needs libcublasLt of the same version. Both are opened from
 * the same place; Lt first and RTLD_GLOBAL so that libcublas's dependency
 * is already satisfied whatever the loader's path says. */
static void *try_blas_dir(const char *dir, const char *suffix,
                          char *path, size_t path_len) {
  char lt[512];
  snprintf(lt, sizeof lt, "%s%slibcublasLt.so%s", dir, *dir ? "/" : "",
           suffix);
  snprintf(path, path_len, "%s%slibcublas.so%s", dir, *dir ? "/" : "",
           suffix);
  void *hlt = dlopen(lt, RTLD_NOW | RTLD_GLOBAL);
  if (!hlt) return NULL;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) dlclose(hlt);
  return h;
}

static void blas_load(void) {
  static const char *const suffixes[] = {".13", ".12", ""};
  const char *dirs[4] = {"", "/usr/local/cuda/lib64", NULL, NULL};
  const char *cuda_path = getenv("CUDA_PATH");
  char env_dir[300];
  if (cuda_path && *cuda_path) {
    snprintf(env_dir, sizeof env_dir, "%s/lib64", cuda_path);
    dirs[2] = env_dir;
  }
  void *h = NULL;
  for (size_t s = 0; s < 3 && !h; s++)
    for (size_t d = 0; d < 4 && dirs[d] && !h; d++)
      h = try_blas_dir(dirs[d], suffixes[s], g_blas.path,
                       sizeof g_blas.path);
  if (!h) {
    snprintf(g_blas_error, sizeof g_blas_error,
             "libcublas.so.13/.12: not found (also in /usr/local/cuda/lib64)");
    return;
  }
  struct {
    const char *name;
    void **slot;
  } syms[] = {
#define S(field, sym) {sym, (void **)&g_blas.field}
      S(cublasCreate, "cublasCreate_v2"),
      S(cublasDestroy, "cublasDestroy_v2"),
      S(cublasSetStream, "cublasSetStream_v2"),
      S(cublasSetWorkspace, "cublasSetWorkspace_v2"),
      S(cublasSetMathMode, "cublasSetMathMode"),
      S(cublasGetVersion, "cublasGetVersion_v2"),
      S(cublasGetStatusString, "cublasGetStatusString"),
      S(cublasGemmEx, "cublasGemmEx"),
      S(cublasSgemv, "cublasSgemv_v2"),
#undef S
  };
  for (size_t i = 0; i < sizeof syms / sizeof *syms; i++) {
    *syms[i].slot = dlsym(h, syms[i].name);
    if (!*syms[i].slot) {
      snprintf(g_blas_error, sizeof g_blas_error, "%s: no symbol %s",
               g_blas.path, syms[i].name);
      return;
    }
  }
}

kiln_status kiln_cublas_api_get(const kiln_cublas_api **out) {
  pthread_once(&g_blas_once, blas_load);
  if (g_blas_error[0])
    return kiln_make_status(KILN_CODE_UNAVAILABLE, "%s", g_blas_error);
  *out = &g_blas;
  return KILN_OK;
}
