# The cuda backend's kernels (src/device/cuda/kernels.cu), compiled by nvcc
# when it is found into a fatbin holding sm_90 machine code and compute_90
# PTX (so newer GPUs JIT it), embedded into libkiln and loaded at run time
# with cuModuleLoadData. Nothing links against CUDA. Without nvcc (or with
# -DKILN_CUDA_KERNELS=OFF) libkiln still builds and the cuda backend
# reports "built without CUDA kernels". Include after kiln_lib exists.
option(KILN_CUDA_KERNELS "Compile the CUDA kernels when nvcc is found" ON)
find_program(KILN_NVCC nvcc
  HINTS ENV CUDA_PATH ENV CUDA_HOME PATH_SUFFIXES bin
  PATHS /usr/local/cuda/bin)

set(KILN_CUDA_DIR ${CMAKE_SOURCE_DIR}/src/device/cuda)
if(KILN_CUDA_KERNELS AND KILN_NVCC)
  set(KILN_CUDA_FATBIN ${CMAKE_BINARY_DIR}/kiln_kernels.fatbin)
  add_custom_command(
    OUTPUT ${KILN_CUDA_FATBIN}
    COMMAND ${KILN_NVCC} -fatbin -O3 -std=c++17
            -gencode arch=compute_90,code=sm_90
            -gencode arch=compute_90,code=compute_90
            -I${KILN_CUDA_DIR} -o ${KILN_CUDA_FATBIN} ${KILN_CUDA_DIR}/kernels.cu
    DEPENDS ${KILN_CUDA_DIR}/kernels.cu ${KILN_CUDA_DIR}/kernels_abi.h
    COMMENT "nvcc: CUDA kernels (sm_90 + compute_90 PTX)"
    VERBATIM)
  add_custom_target(kiln_cuda_fatbin DEPENDS ${KILN_CUDA_FATBIN})
  add_dependencies(kiln_lib kiln_cuda_fatbin)
  target_sources(kiln_lib PRIVATE ${KILN_CUDA_DIR}/fatbin/embedded.c)
  set_source_files_properties(${KILN_CUDA_DIR}/fatbin/embedded.c PROPERTIES
    OBJECT_DEPENDS ${KILN_CUDA_FATBIN}
    COMPILE_DEFINITIONS "KILN_CUDA_FATBIN_PATH=\"${KILN_CUDA_FATBIN}\"")
  message(STATUS "kiln: CUDA kernels built with ${KILN_NVCC}")
else()
  target_sources(kiln_lib PRIVATE ${KILN_CUDA_DIR}/fatbin/none.c)
  message(STATUS "kiln: built without CUDA kernels (no nvcc, or KILN_CUDA_KERNELS=OFF)")
endif()
