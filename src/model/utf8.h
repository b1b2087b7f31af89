/* UTF-8 helpers shared by the model-file code (JSON strings, tokenizer
 * pieces, streamed text). Header-only: src/model is compiled both into
 * libkiln and into the wasm32-wasi guest from explicit file lists. */
#ifndef KILN_MODEL_UTF8_H_
#define KILN_MODEL_UTF8_H_

#include <stddef.h>
#include <stdint.h>

/* The UTF-8 sequence that starts at s (n >= 1 bytes there), as Unicode's
 * table 3-7 allows it (no overlong forms, no surrogates, nothing above
 * U+10FFFF): returns its full length, 0 when s[0] cannot start one; *fit
 * gets how many bytes at s fit its pattern (at least 1: the maximal
 * prefix, which a lossy decoder replaces as one). Valid when *fit equals
 * the length. */
static inline size_t km_utf8_scan(const unsigned char *s, size_t n,
                                  size_t *fit) {
  unsigned c = s[0];
  *fit = 1;
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) { len = 3; lo = 0xA0; }
  else if (c == 0xED) { len = 3; hi = 0x9F; }
  else if (c >= 0xE1 && c <= 0xEF) len = 3;
  else if (c == 0xF0) { len = 4; lo = 0x90; }
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) { len = 4; hi = 0x8F; }
  else return 0;
  if (n > 1 && s[1] >= lo && s[1] <= hi) {
    size_t k = 2;
    while (k < len && k < n && (s[k] & 0xC0) == 0x80) k++;
    *fit = k;
  }
  return len;
}

/* Length of the valid UTF-8 sequence at s (at most n bytes, n >= 1), or
 * 0 (km_utf8_scan's rules). */
static inline size_t km_utf8_len(const unsigned char *s, size_t n) {
  size_t fit;
  const size_t len = km_utf8_scan(s, n, &fit);
  return len && fit == len ? len : 0;
}

/* Writes code point cp (<= U+10FFFF) as UTF-8 at o; returns its length. */
static inline size_t km_utf8_put(char *o, uint32_t cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

#endif /* KILN_MODEL_UTF8_H_ */
