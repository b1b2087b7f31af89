/* The kernels' fatbin, built by nvcc (cmake/cuda.cmake), included into
 * libkiln's read-only data by the assembler: no generated C array, no
 * extra build step. Compiled only when nvcc was found; none.c otherwise. */
#include <stddef.h>

#include "device/cuda/cuda_api.h"

#ifndef KILN_CUDA_FATBIN_PATH
#error "KILN_CUDA_FATBIN_PATH must name the fatbin built from kernels.cu"
#endif

/* cuModuleLoadData wants the image suitably aligned; 64 is plenty. */
__asm__(".pushsection .rodata.kiln_cuda_fatbin, \"a\", @progbits\n"
        ".balign 64\n"
        ".hidden kiln_cuda_fatbin_begin\n"
        ".globl kiln_cuda_fatbin_begin\n"
        "kiln_cuda_fatbin_begin:\n"
        ".incbin \"" KILN_CUDA_FATBIN_PATH "\"\n"
        ".hidden kiln_cuda_fatbin_end\n"
        ".globl kiln_cuda_fatbin_end\n"
        "kiln_cuda_fatbin_end:\n"
        ".byte 0\n"
        ".popsection\n");

extern const unsigned char kiln_cuda_fatbin_begin[];
extern const unsigned char kiln_cuda_fatbin_end[];

const unsigned char *kiln_cuda_fatbin(size_t *out_size) {
  *out_size = (size_t)(kiln_cuda_fatbin_end - kiln_cuda_fatbin_begin);
  return kiln_cuda_fatbin_begin;
}
