/* A small, strict, bounded JSON parser for model files: config.json,
 * tokenizer.json, safetensors headers, model.safetensors.index.json.
 *
 * Strict means RFC 8259 exactly: one value with only whitespace around it,
 * no comments, no trailing commas, no NaN/Infinity, no leading zeros, no
 * control characters in strings, valid UTF-8 only (no overlong forms, no
 * surrogates), \u escapes with surrogate pairs matched, duplicate keys in
 * one object rejected. Bounded means nesting depth and input size have
 * limits, and a number's text is at most 64 bytes.
 *
 * The whole document is one allocation arena (plain malloc) owned by the
 * km_json_doc; values point into it and live until km_json_free. Strings
 * are decoded, NUL-terminated, and carry their byte length (a \u0000
 * escape makes an embedded NUL). Objects keep members in file order.
 * Not thread-safe to parse into one doc from two threads; a finished doc
 * is read-only and may be shared. */
#ifndef KILN_MODEL_JSON_H_
#define KILN_MODEL_JSON_H_

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/km_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum km_json_type {
  KM_JSON_NULL = 0,
  KM_JSON_FALSE,
  KM_JSON_TRUE,
  KM_JSON_NUMBER,
  KM_JSON_STRING,
  KM_JSON_ARRAY,
  KM_JSON_OBJECT,
} km_json_type;

typedef struct km_json_member km_json_member;

typedef struct km_json {
  uint8_t type;   /* km_json_type */
  uint8_t is_int; /* NUMBER written without fraction/exponent, fits int64 */
  uint32_t len;   /* STRING: bytes; ARRAY: items; OBJECT: members */
  int64_t i;      /* NUMBER with is_int: the exact value */
  union {
    double num;               /* NUMBER */
    const char *str;          /* STRING: decoded, NUL-terminated */
    struct km_json *items;    /* ARRAY */
    km_json_member *members;  /* OBJECT */
  } u;
} km_json;

struct km_json_member {
  const char *key; /* decoded, NUL-terminated */
  uint32_t key_len;
  km_json value;
};

typedef struct km_json_doc km_json_doc;

typedef struct km_json_limits {
  uint32_t max_depth; /* arrays/objects nested deeper fail; 0 means 64 */
  uint64_t max_bytes; /* longer input fails; 0 means 1 GiB */
} km_json_limits;

/* Parses text[0, len). On success *out owns the document. On failure
 * *out is NULL and err names the problem and its byte offset. limits may
 * be NULL for the defaults. */
km_code km_json_parse(const char *text, size_t len, const km_json_limits *limits,
                      km_json_doc **out, km_error *err);
void km_json_free(km_json_doc *doc);
const km_json *km_json_root(const km_json_doc *doc);

/* Accessors. Each accepts NULL and returns NULL/false on a type mismatch,
 * so lookups chain: km_json_get(km_json_get(root, "model"), "vocab"). */
const km_json *km_json_get(const km_json *object, const char *key);
const km_json *km_json_at(const km_json *array, size_t index);
bool km_json_is(const km_json *v, km_json_type t);
/* The string, or NULL if v is not a string. */
const char *km_json_str(const km_json *v);
/* An integer: a NUMBER with is_int, or an integral double within 2^53. */
bool km_json_int(const km_json *v, int64_t *out);
bool km_json_num(const km_json *v, double *out);
/* true/false only. */
bool km_json_bool(const km_json *v, bool *out);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_JSON_H_ */
