/* A guest that multiplies two matrices on the device it was given:
 *
 *   kiln run --device cpu build/guests/gpu_matmul.wasm [N]
 *
 * It fills a and b in its own linear memory, submits one GEMM naming them,
 * syncs, and checks c (read through the same pointer it passed) against
 * its own product. Prints the pointer identity when the host allows
 * address queries. Exit 0 when every element matches. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kiln_gpu.h"

static void report(const char *what, int32_t r) {
  char msg[256];
  kiln_gpu_last_error(msg, sizeof msg);
  fprintf(stderr, "gpu_matmul: %s failed (%d): %s\n", what, r, msg);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 128;
  if (n < 1 || n > 2048) {
    fprintf(stderr, "gpu_matmul: N must be 1..2048\n");
    return 2;
  }
  size_t count = (size_t)n * n;
  float *a = malloc(count * sizeof *a), *b = malloc(count * sizeof *b);
  float *c = malloc(count * sizeof *c);
  if (!a || !b || !c) return 3;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      a[i * n + j] = (float)((i * 7 + j * 3) % 11) - 5.0f;
      b[i * n + j] = (float)((i * 5 + j * 13) % 7) * 0.5f - 1.0f;
      c[i * n + j] = -1.0f; /* overwritten: beta = 0 */
    }

  int32_t r = kiln_gpu_gemm(kiln_gpu_tensor_2d(a, KILN_GPU_F32, n, n),
                            kiln_gpu_tensor_2d(b, KILN_GPU_F32, n, n),
                            kiln_gpu_tensor_2d(c, KILN_GPU_F32, n, n), 0,
                            1.0f, 0.0f);
  if (r) {
    report("submit", r);
    return 1;
  }
  if ((r = kiln_gpu_sync())) {
    report("sync", r);
    return 1;
  }

  /* Check against the guest's own product (exact: small integers). */
  int wrong = 0;
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      double want = 0;
      for (int k = 0; k < n; k++) want += (double)a[i * n + k] * b[k * n + j];
      if (fabs(c[i * n + j] - want) > 1e-3 * (1 + fabs(want))) {
        if (wrong++ < 5)
          fprintf(stderr, "c[%d,%d] = %g, want %g\n", i, j, c[i * n + j],
                  want);
      }
    }

  kiln_gpu_stats st;
  kiln_gpu_stats_get(&st);
  uint64_t dev = 0;
  printf("gpu_matmul: %dx%d f32 gemm on %s: %s\n", n, n,
         st.device_kind == 1 ? "cuda" : "cpu", wrong ? "WRONG" : "ok");
  printf("c[0,0] = %g, c[%d,%d] = %g\n", c[0], n - 1, n - 1, c[count - 1]);
  if (kiln_gpu_address(0, kiln_gpu_offset_of(c), &dev) == 0)
    printf("c: guest offset 0x%llx, device address 0x%llx, placement %s\n",
           (unsigned long long)kiln_gpu_offset_of(c), (unsigned long long)dev,
           kiln_gpu_placement(0, kiln_gpu_offset_of(c)) ==
                   KILN_GPU_PLACEMENT_RESIDENT
               ? "resident"
               : "mapped");
  free(a);
  free(b);
  free(c);
  return wrong ? 1 : 0;
}
