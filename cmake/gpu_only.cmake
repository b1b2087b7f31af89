# -DKILN_GPU_ONLY=ON: libkiln's base, memory and device layers with the
# device unit tests only. For GPU machines that have CUDA, gcc and cmake
# but not the wasm toolchain (wabt, clang, wasi-libc) or libcjson/libssl
# headers:
#   cmake -S . -B build-gpu -DKILN_GPU_ONLY=ON && cmake --build build-gpu
#   build-gpu/tests/test_device_cuda
file(GLOB KILN_LIB_SOURCES CONFIGURE_DEPENDS
  src/base/*.c src/memory/*.c src/device/*.c src/device/cpu/*.c
  src/device/cuda/*.c
  src/engine/trap.c)   # the fault handler the device coherence uses
add_library(kiln_lib STATIC ${KILN_LIB_SOURCES})
set_target_properties(kiln_lib PROPERTIES OUTPUT_NAME kiln)
target_include_directories(kiln_lib PUBLIC include PRIVATE src ${CMAKE_BINARY_DIR})
target_compile_definitions(kiln_lib PRIVATE KILN_VERSION="${PROJECT_VERSION}")
target_link_libraries(kiln_lib PUBLIC Threads::Threads ${CMAKE_DL_LIBS} m)
include(cmake/cuda.cmake)

enable_testing()
file(GLOB KILN_DEVICE_TESTS CONFIGURE_DEPENDS tests/unit/test_device*.c)
foreach(src ${KILN_DEVICE_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(${name} PRIVATE kiln_lib)
  target_compile_definitions(${name} PRIVATE
    KILN_SOURCE_DIR="${CMAKE_SOURCE_DIR}" KILN_BUILD_DIR="${CMAKE_BINARY_DIR}"
    KILN_GUEST_DIR="${CMAKE_BINARY_DIR}/guests")
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
endforeach()
