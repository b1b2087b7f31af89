/* Producer half of the shared-memory pair (tests/unit/test_shared_memory.c).
 *
 * Imports its memory (env.memory) and keeps an n x n float matrix in its
 * own static data. Linked at its own --global-base so that its data and
 * stack stay apart from the consumer's (see guests/shared/CMakeLists.txt
 * and sdk/LINKING.md). Uses no libc, so it has no WASI imports. */

#define PRODUCER_MAX_N 256

/* Initialised (not zero) so that it lands in an active data segment the
 * linker must emit, whatever it does with .bss for imported memories. */
static float matrix[PRODUCER_MAX_N * PRODUCER_MAX_N] = {1.0f};

/* The value the pattern puts at (row, col): exact in float for n <= 256,
 * and exact after scaling by small integers. */
static float pattern(int row, int col) {
  return (float)(row * 1000 + col) + 0.25f;
}

/* Writes the pattern into the first n*n floats; returns n*n, or -1 when n
 * is out of range. */
__attribute__((export_name("fill_matrix"))) int fill_matrix(int n) {
  if (n <= 0 || n > PRODUCER_MAX_N) return -1;
  for (int row = 0; row < n; row++)
    for (int col = 0; col < n; col++) matrix[row * n + col] = pattern(row, col);
  return n * n;
}

/* Guest address of the matrix. */
__attribute__((export_name("matrix_ptr"))) float *matrix_ptr(void) {
  return matrix;
}

/* Element k as the producer sees it (to prove the consumer's writes reach
 * the producer through the same address). */
__attribute__((export_name("element"))) float element(int k) {
  if (k < 0 || k >= PRODUCER_MAX_N * PRODUCER_MAX_N) return -1.0f;
  return matrix[k];
}
