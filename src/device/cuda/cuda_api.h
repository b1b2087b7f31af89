/* The CUDA driver API and cuBLAS, loaded at run time.
 *
 * Nothing in kiln links against CUDA: libcuda.so.1 (the driver API) and
 * libcublas (with the libcublasLt it needs) are opened with dlopen the
 * first time a cuda device is asked for, and their entry points land in a
 * table, as IREE's cuda HAL does. The few types and constants kiln needs
 * are declared here from the CUDA 12/13 headers (ABI-stable: the versioned
 * entry points below, e.g. cuMemAlloc_v2, are what cuda.h's macros
 * resolve to), so kiln builds where no CUDA headers exist.
 *
 * The tables are loaded once per process and never unloaded (a driver
 * library is not safe to dlclose while contexts exist). Thread-safe. */
#ifndef KILN_DEVICE_CUDA_CUDA_API_H_
#define KILN_DEVICE_CUDA_CUDA_API_H_

#include <stddef.h>
#include <stdint.h>

#include "kiln/status.h"

typedef int CUresult;                 /* 0: CUDA_SUCCESS */
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

enum {
  KILN_CUDA_SUCCESS = 0,
  KILN_CUDA_ERROR_NO_DEVICE = 100,
  KILN_CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED = 712,
  /* cuDeviceGetAttribute */
  KILN_CU_ATTR_MULTIPROCESSOR_COUNT = 16,
  KILN_CU_ATTR_CAN_MAP_HOST_MEMORY = 19,
  KILN_CU_ATTR_CC_MAJOR = 75,
  KILN_CU_ATTR_CC_MINOR = 76,
  KILN_CU_ATTR_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM = 91,
  KILN_CU_ATTR_READ_ONLY_HOST_REGISTER_SUPPORTED = 113,
  /* flags */
  KILN_CU_STREAM_NON_BLOCKING = 0x1,
  KILN_CU_MEMHOSTALLOC_DEVICEMAP = 0x02,
  KILN_CU_MEMHOSTREGISTER_DEVICEMAP = 0x02,
  KILN_CU_MEMHOSTREGISTER_READ_ONLY = 0x08,
  KILN_CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1,
  KILN_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};

/* cuLaunchKernelEx's launch description: cuda.h's CUlaunchConfig and
 * CUlaunchAttribute (an attribute id, then a 64-byte union of values, 8
 * bytes aligned). Only the attribute kiln sets is named: a kernel that
 * may start before the kernel before it in the stream finishes (it waits
 * with griddepcontrol.wait; kernels.cu, pdl_wait). */
enum { KILN_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6 };
typedef struct kiln_cu_launch_attr {
  int id;
  union {
    char bytes[64];
    uint64_t align;
    int programmatic_stream_serialization;
  } value;
} kiln_cu_launch_attr;
typedef struct kiln_cu_launch_config {
  unsigned grid_x, grid_y, grid_z;
  unsigned block_x, block_y, block_z;
  unsigned shared_bytes;
  CUstream stream;
  kiln_cu_launch_attr *attrs;
  unsigned n_attrs;
} kiln_cu_launch_config;
_Static_assert(sizeof(kiln_cu_launch_attr) == 72, "CUlaunchAttribute");
_Static_assert(sizeof(kiln_cu_launch_config) == 56, "CUlaunchConfig");

typedef struct kiln_cuda_api {
  CUresult (*cuInit)(unsigned flags);
  CUresult (*cuDriverGetVersion)(int *v);
  CUresult (*cuGetErrorName)(CUresult e, const char **s);
  CUresult (*cuGetErrorString)(CUresult e, const char **s);
  CUresult (*cuDeviceGetCount)(int *n);
  CUresult (*cuDeviceGet)(CUdevice *d, int ordinal);
  CUresult (*cuDeviceGetName)(char *name, int len, CUdevice d);
  CUresult (*cuDeviceGetAttribute)(int *v, int attr, CUdevice d);
  CUresult (*cuDeviceTotalMem)(size_t *bytes, CUdevice d);
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *c, CUdevice d);
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice d);
  CUresult (*cuCtxSetCurrent)(CUcontext c);
  CUresult (*cuModuleLoadData)(CUmodule *m, const void *image);
  CUresult (*cuModuleUnload)(CUmodule m);
  CUresult (*cuModuleGetFunction)(CUfunction *f, CUmodule m,
                                  const char *name);
  CUresult (*cuFuncSetAttribute)(CUfunction f, int attr, int value);
  CUresult (*cuStreamCreate)(CUstream *s, unsigned flags);
  CUresult (*cuStreamDestroy)(CUstream s);
  CUresult (*cuStreamSynchronize)(CUstream s);
  CUresult (*cuMemAlloc)(CUdeviceptr *p, size_t n);
  CUresult (*cuMemFree)(CUdeviceptr p);
  CUresult (*cuMemHostAlloc)(void **p, size_t n, unsigned flags);
  CUresult (*cuMemFreeHost)(void *p);
  CUresult (*cuMemHostRegister)(void *p, size_t n, unsigned flags);
  CUresult (*cuMemHostUnregister)(void *p);
  CUresult (*cuMemHostGetDevicePointer)(CUdeviceptr *d, void *p,
                                        unsigned flags);
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr dst, const void *src, size_t n,
                                CUstream s);
  CUresult (*cuMemcpyDtoHAsync)(void *dst, CUdeviceptr src, size_t n,
                                CUstream s);
  CUresult (*cuMemsetD32Async)(CUdeviceptr dst, unsigned v, size_t n,
                               CUstream s);
  CUresult (*cuLaunchKernel)(CUfunction f, unsigned gx, unsigned gy,
                             unsigned gz, unsigned bx, unsigned by,
                             unsigned bz, unsigned shmem, CUstream s,
                             void **params, void **extra);
  /* Optional (driver 11.8 on): NULL where the driver lacks it. */
  CUresult (*cuLaunchKernelEx)(const kiln_cu_launch_config *c, CUfunction f,
                               void **params, void **extra);
  CUresult (*cuStreamBeginCapture)(CUstream s, int mode);
  CUresult (*cuStreamEndCapture)(CUstream s, CUgraph *g);
  CUresult (*cuGraphInstantiate)(CUgraphExec *e, CUgraph g,
                                 unsigned long long flags);
  CUresult (*cuGraphLaunch)(CUgraphExec e, CUstream s);
  CUresult (*cuGraphDestroy)(CUgraph g);
  CUresult (*cuGraphExecDestroy)(CUgraphExec e);
  int driver_version;
} kiln_cuda_api;

/* cuBLAS (libcublas, which loads its libcublasLt). Only what GEMM and the
 * f32 one-row GEMV need. */
typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t;           /* 0: CUBLAS_STATUS_SUCCESS */
enum {
  KILN_CUBLAS_OP_N = 0,
  KILN_CUBLAS_OP_T = 1,
  KILN_CUDA_R_32F = 0,
  KILN_CUDA_R_16F = 2,
  KILN_CUDA_R_16BF = 14,
  KILN_CUBLAS_COMPUTE_32F = 68,       /* full f32, never TF32 */
  KILN_CUBLAS_GEMM_DEFAULT = -1,
  KILN_CUBLAS_DEFAULT_MATH = 0,
};
typedef struct kiln_cublas_api {
  cublasStatus_t (*cublasCreate)(cublasHandle_t *h);
  cublasStatus_t (*cublasDestroy)(cublasHandle_t h);
  cublasStatus_t (*cublasSetStream)(cublasHandle_t h, CUstream s);
  cublasStatus_t (*cublasSetWorkspace)(cublasHandle_t h, void *ws,
                                       size_t bytes);
  cublasStatus_t (*cublasSetMathMode)(cublasHandle_t h, int mode);
  cublasStatus_t (*cublasGetVersion)(cublasHandle_t h, int *v);
  const char *(*cublasGetStatusString)(cublasStatus_t s);
  cublasStatus_t (*cublasGemmEx)(cublasHandle_t h, int transa, int transb,
                                 int m, int n, int k, const void *alpha,
                                 const void *A, int atype, int lda,
                                 const void *B, int btype, int ldb,
                                 const void *beta, void *C, int ctype,
                                 int ldc, int compute, int algo);
  cublasStatus_t (*cublasSgemv)(cublasHandle_t h, int trans, int m, int n,
                                const float *alpha, const float *A, int lda,
                                const float *x, int incx, const float *beta,
                                float *y, int incy);
  char path[256];                     /* where it was found */
} kiln_cublas_api;

/* The driver table, or UNAVAILABLE with a one-line reason
 * ("libcuda.so.1: not found", "libcuda.so.1: no symbol cuInit"). The
 * result (table or reason) is computed once and remembered. */
kiln_status kiln_cuda_api_get(const kiln_cuda_api **out);
/* The cuBLAS table, or UNAVAILABLE ("libcublas: not found (tried ...)").
 * Also computed once. */
kiln_status kiln_cublas_api_get(const kiln_cublas_api **out);

/* A status for a failed driver call: code INTERNAL (or `code`), message
 * "<what>: <CUDA_ERROR_NAME>: <description>". */
kiln_status kiln_cuda_status_at(const char *file, int line, kiln_code code,
                                CUresult r, const char *what);
#define kiln_cuda_status(code, r, what) \
  kiln_cuda_status_at(__FILE__, __LINE__, (code), (r), (what))

/* The fatbin of kernels.cu embedded at build time; size 0 when kiln was
 * built without nvcc. */
const unsigned char *kiln_cuda_fatbin(size_t *out_size);

#endif /* KILN_DEVICE_CUDA_CUDA_API_H_ */
