/* A guest that names weights with bad descriptors: each call must fail
 * with the right code, queue nothing, and leave the session usable. The
 * host (tests/unit/test_llm.c) grants one weight file as "weights". Prints
 * one line per check; exit status 0 when every check held. */
#include <stdio.h>
#include <string.h>

#include "kiln_gpu.h"

static int failures;

static void expect(const char *what, int32_t got, int32_t want) {
  char msg[256] = "";
  if (got < 0) kiln_gpu_last_error(msg, sizeof msg);
  printf("%s: %d (want %d) %s\n", what, got, want, msg);
  if (got != want) failures++;
}

static float x[64], y[64];

int main(void) {
  int32_t w = kiln_gpu_memory_lookup("weights", 7);
  if (w < 1) {
    printf("no weights granted: %d\n", w);
    return 1;
  }
  expect("lookup of a name not granted", kiln_gpu_memory_lookup("nope", 4),
         KILN_GPU_E_NOT_FOUND);

  kiln_gpu_op op = kiln_gpu_op_make(KILN_GPU_OP_GEMV);
  int64_t ws[2] = {64, 64};
  op.a = kiln_gpu_tensor_at((uint32_t)w, 0, KILN_GPU_F32, 2, ws);
  op.b = kiln_gpu_tensor_2d(x, KILN_GPU_F32, 1, 64);
  op.c = kiln_gpu_tensor_2d(y, KILN_GPU_F32, 1, 64);
  expect("a good GEMV on the first bytes of the file", kiln_gpu_submit(&op), 0);
  expect("sync", kiln_gpu_sync(), 0);

  kiln_gpu_op bad = op;
  bad.a.offset = 1ull << 40;
  expect("weight offset past the end of the file", kiln_gpu_submit(&bad),
         KILN_GPU_E_RANGE);
  bad = op;
  bad.a.shape[0] = 1ll << 40;
  expect("weight rows past the end of the file", kiln_gpu_submit(&bad),
         KILN_GPU_E_RANGE);
  bad = op;
  bad.a.mem = 99;
  expect("weight in a memory handle not granted", kiln_gpu_submit(&bad),
         KILN_GPU_E_HANDLE);
  bad = op;
  bad.a.offset = 2;
  expect("misaligned f32 weight", kiln_gpu_submit(&bad), KILN_GPU_E_INVALID);
  bad = op;
  bad.a.dtype = 77;
  expect("unknown weight dtype", kiln_gpu_submit(&bad), KILN_GPU_E_INVALID);
  bad = op;
  bad.a.shape[1] = 32;
  expect("weight shape that does not match x", kiln_gpu_submit(&bad),
         KILN_GPU_E_INVALID);
  bad = op;
  bad.a.stride[0] = -64;
  expect("negative stride", kiln_gpu_submit(&bad), KILN_GPU_E_INVALID);
  bad = op;
  bad.a.reserved = 1;
  expect("reserved field set", kiln_gpu_submit(&bad), KILN_GPU_E_INVALID);
  bad = op;
  bad.c = op.a; /* write into the read-only model file */
  bad.c.shape[0] = 1;
  expect("output into the read-only weights", kiln_gpu_submit(&bad),
         KILN_GPU_E_INVALID);

  /* A bad descriptor while recording: refused; the program stays good. */
  expect("program_begin", kiln_gpu_program_begin(), 0);
  bad = op;
  bad.a.offset = 1ull << 40;
  expect("bad weight while recording", kiln_gpu_submit(&bad), KILN_GPU_E_RANGE);
  expect("good op while recording", kiln_gpu_submit(&op), 0);
  int32_t h = kiln_gpu_program_end();
  expect("program_end gives handle 1", h, 1);
  expect("program_submit", kiln_gpu_program_submit(h), 0);
  expect("sync after all that", kiln_gpu_sync(), 0);
  printf("%s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures ? 1 : 0;
}
