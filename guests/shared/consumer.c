/* Consumer half of the shared-memory pair (tests/unit/test_shared_memory.c).
 *
 * Imports its memory (env.memory) and works on a matrix at a guest address
 * it is given, which lies in the producer's static data. Linked at its own
 * --global-base, far above the producer's. Uses no libc. */

/* A few bytes of static data of its own, so the consumer has a data
 * segment (and thus a claimed region) too. */
static volatile int calls = 7;

/* Weighted checksum of the n x n floats at guest address ptr: the weights
 * (k % 7 + 1) make it sensitive to order, not only to the values. Computed
 * in double: exact for the producer's pattern. */
__attribute__((export_name("sum_matrix"))) double sum_matrix(const float *ptr,
                                                             int n) {
  calls++;
  double sum = 0;
  for (int k = 0; k < n * n; k++) sum += (double)ptr[k] * (double)(k % 7 + 1);
  return sum;
}

/* Multiplies the n x n floats at guest address ptr by k, in place. */
__attribute__((export_name("scale"))) void scale(float *ptr, int n, float k) {
  calls++;
  for (int i = 0; i < n * n; i++) ptr[i] *= k;
}

__attribute__((export_name("calls"))) int get_calls(void) { return calls; }
