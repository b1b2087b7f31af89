/* Choosing the next token from logits: greedy, temperature, top-k, top-p,
 * with a deterministic PRNG (the same seed gives the same tokens on every
 * machine, natively and in the guest: only integer arithmetic and IEEE f32
 * operations in a fixed order).
 *
 * Portable C (compiled into the guest and into libkiln). */
#ifndef KILN_MODEL_SAMPLER_H_
#define KILN_MODEL_SAMPLER_H_

#include <stdint.h>

#include "model/km_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* xorshift64* seeded through splitmix64 (any seed, 0 included, is fine). */
typedef struct km_rng {
  uint64_t state;
} km_rng;
void km_rng_seed(km_rng *r, uint64_t seed);
uint32_t km_rng_u32(km_rng *r);
/* Uniform in [0, 1), 24 bits. */
float km_rng_f32(km_rng *r);

typedef struct km_sampler {
  int32_t vocab;
  float temperature; /* <= 0: greedy (argmax) */
  int32_t top_k;     /* 0: off */
  float top_p;       /* >= 1: off */
  km_rng rng;
  struct km_cand { float p; int32_t id; } *cand; /* vocab scratch */
} km_sampler;

km_code km_sampler_init(km_sampler *s, int32_t vocab, float temperature,
                        int32_t top_k, float top_p, uint64_t seed,
                        km_error *err);
void km_sampler_free(km_sampler *s);
/* The index of the largest logit (the first on ties). */
int32_t km_argmax(const float *logits, int32_t n);
/* Picks a token. Greedy does not consume random numbers. */
int32_t km_sample(km_sampler *s, const float *logits);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_SAMPLER_H_ */
