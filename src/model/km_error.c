#include "model/km_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *km_code_name(km_code c) {
  switch (c) {
    case KM_OK: return "ok";
    case KM_ERR_IO: return "io";
    case KM_ERR_TRUNCATED: return "truncated";
    case KM_ERR_FORMAT: return "format";
    case KM_ERR_LIMIT: return "limit";
    case KM_ERR_RANGE: return "range";
    case KM_ERR_UNSUPPORTED: return "unsupported";
    case KM_ERR_SHAPE: return "shape";
    case KM_ERR_NOT_FOUND: return "not found";
    case KM_ERR_NOMEM: return "out of memory";
    case KM_ERR_ARGUMENT: return "argument";
  }
  return "unknown";
}

km_code km_fail(km_error *err, km_code code, const char *fmt, ...) {
  if (err) {
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

int km_buffer_read(void *ctx, uint64_t offset, void *buf, size_t len) {
  const km_buffer *b = ctx;
  if (offset > b->size || len > b->size - offset) return -1;
  if (len) memcpy(buf, b->data + offset, len);
  return 0;
}

static const char *const dtype_names[KM_DTYPE_COUNT] = {
    "F32", "F16", "BF16", "Q8_0", "F64", "I8", "I16", "I32", "I64", "U8",
    "BOOL"};

const char *km_dtype_name(km_dtype t) {
  return (unsigned)t < KM_DTYPE_COUNT ? dtype_names[t] : "?";
}

int km_mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (a && b > UINT64_MAX / a) return -1;
  *out = a * b;
  return 0;
}

int km_add_u64(uint64_t a, uint64_t b, uint64_t *out) {
  if (b > UINT64_MAX - a) return -1;
  *out = a + b;
  return 0;
}

int km_dtype_bytes(km_dtype t, uint64_t n, uint64_t *out) {
  static const uint8_t size[KM_DTYPE_COUNT] = {4, 2, 2, 0, 8, 1, 2, 4, 8, 1, 1};
  if ((unsigned)t >= KM_DTYPE_COUNT) return -1;
  if (t == KM_DTYPE_Q8_0) {
    if (n % 32) return -1;
    return km_mul_u64(n / 32, 34, out);
  }
  return km_mul_u64(n, size[t], out);
}
