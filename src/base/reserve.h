/* Growing arrays: one place for the doubling that kiln's tables, lists
 * and interval sets share. */
#ifndef KILN_BASE_RESERVE_H_
#define KILN_BASE_RESERVE_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Makes *v (elements of `elem` bytes, capacity *cap) hold at least `need`
 * elements, doubling the capacity from `first`. False, with *v and *cap
 * unchanged, when out of memory or the size would overflow. */
static inline bool kiln_reserve(void **v, size_t *cap, size_t need,
                                size_t elem, size_t first) {
  if (need <= *cap) return true;
  size_t c = *cap ? *cap : first;
  while (c < need) {
    if (c > SIZE_MAX / 2) return false;
    c *= 2;
  }
  if (elem && c > SIZE_MAX / elem) return false;
  void *p = realloc(*v, c * elem);
  if (!p) return false;
  *v = p;
  *cap = c;
  return true;
}

#endif /* KILN_BASE_RESERVE_H_ */
