/* Token sampling (contract in sampler.h). */
#include "model/sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void km_rng_seed(km_rng *r, uint64_t seed) {
  uint64_t x = seed;
  r->state = splitmix64(&x);
  if (!r->state) r->state = 0x2545f4914f6cdd1dull;
}

uint32_t km_rng_u32(km_rng *r) {
  r->state ^= r->state >> 12;
  r->state ^= r->state << 25;
  r->state ^= r->state >> 27;
  return (uint32_t)((r->state * 0x2545f4914f6cdd1dull) >> 32);
}

float km_rng_f32(km_rng *r) {
  return (float)(km_rng_u32(r) >> 8) / 16777216.0f;
}

km_code km_sampler_init(km_sampler *s, int32_t vocab, float temperature,
                        int32_t top_k, float top_p, uint64_t seed,
                        km_error *err) {
  s->cand = NULL;
  if (vocab <= 0) return km_fail(err, KM_ERR_ARGUMENT, "vocab %d", vocab);
  if (!(temperature >= 0) || !isfinite(temperature))
    return km_fail(err, KM_ERR_ARGUMENT, "temperature must be >= 0");
  if (top_k < 0) return km_fail(err, KM_ERR_ARGUMENT, "top-k must be >= 0");
  if (!(top_p > 0)) return km_fail(err, KM_ERR_ARGUMENT, "top-p must be > 0");
  s->vocab = vocab;
  s->temperature = temperature;
  s->top_k = top_k;
  s->top_p = top_p;
  km_rng_seed(&s->rng, seed);
  s->cand = malloc((size_t)vocab * sizeof *s->cand);
  if (!s->cand) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  return KM_OK;
}

void km_sampler_free(km_sampler *s) {
  free(s->cand);
  s->cand = NULL;
}

int32_t km_argmax(const float *x, int32_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < n; i++)
    if (x[i] > x[best]) best = i;
  return best;
}

/* Descending by probability, then ascending id: a total order, so the
 * result does not depend on qsort's algorithm. */
static int cmp_cand(const void *a, const void *b) {
  const struct km_cand *x = a, *y = b;
  if (x->p != y->p) return x->p > y->p ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

int32_t km_sample(km_sampler *s, const float *logits) {
  const int32_t n = s->vocab;
  if (s->temperature <= 0) return km_argmax(logits, n);
  /* Softmax of logits / T, max subtracted. */
  float mx = logits[0];
  for (int32_t i = 1; i < n; i++)
    if (logits[i] > mx) mx = logits[i];
  const float inv_t = 1.0f / s->temperature;
  float sum = 0;
  for (int32_t i = 0; i < n; i++) {
    float p = expf((logits[i] - mx) * inv_t);
    s->cand[i].p = p;
    s->cand[i].id = i;
    sum += p;
  }
  for (int32_t i = 0; i < n; i++) s->cand[i].p /= sum;
  int32_t m = n;
  bool sorted = false;
  if (s->top_k > 0 && s->top_k < n) {
    qsort(s->cand, (size_t)n, sizeof *s->cand, cmp_cand);
    sorted = true;
    m = s->top_k;
  }
  if (s->top_p < 1.0f) {
    if (!sorted) {
      /* Only candidates above (1 - p) / (n - 1) can be in the nucleus
       * (llama2.c's cut): sort those alone. */
      const float cut = (1.0f - s->top_p) / (float)(n > 1 ? n - 1 : 1);
      int32_t k = 0;
      for (int32_t i = 0; i < n; i++)
        if (s->cand[i].p >= cut) s->cand[k++] = s->cand[i];
      m = k;
      qsort(s->cand, (size_t)m, sizeof *s->cand, cmp_cand);
    }
    float total = 0;
    for (int32_t i = 0; i < m; i++) total += s->cand[i].p;
    float cum = 0;
    int32_t last = m - 1;
    for (int32_t i = 0; i < m; i++) {
      cum += s->cand[i].p;
      if (cum >= s->top_p * total) {
        last = i;
        break;
      }
    }
    m = last + 1;
  }
  float total = 0;
  for (int32_t i = 0; i < m; i++) total += s->cand[i].p;
  const float r = km_rng_f32(&s->rng) * total;
  float cum = 0;
  for (int32_t i = 0; i < m; i++) {
    cum += s->cand[i].p;
    if (r < cum) return s->cand[i].id;
  }
  return s->cand[m - 1].id;
}
