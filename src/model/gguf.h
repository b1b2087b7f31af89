/* GGUF files (llama.cpp's model format), versions 2 and 3, little-endian.
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count; the
 * metadata key/value pairs (key: u64 length + bytes; u32 value type;
 * value); the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 ggml
 * type, u64 offset relative to the data section); padding to
 * general.alignment (default 32); the data section.
 *
 * km_gguf_read reads all of that through a read callback and checks it
 * before any tensor is used: magic and version (v1 and big-endian files
 * are rejected); counts, string lengths and array lengths against both
 * fixed limits and the bytes left in the file (so a forged count cannot
 * make it allocate more than a small multiple of the file size); value
 * types; nested arrays at most KM_GGUF_MAX_ARRAY_DEPTH deep; keys and
 * tensor names unique; general.alignment a power of two; each tensor's
 * type (F32, F16, BF16, Q8_0, I8..I64, F64 accepted; the other ggml
 * types, e.g. Q4_K, rejected by name), dims (1..4, each >= 1, product
 * without overflow, Q8_0 rows a multiple of 32), offset aligned, range
 * inside the file, and no two tensors overlapping.
 *
 * Dimension order: GGUF's ne[0] is the innermost (contiguous) dimension.
 * km_gguf_tensor.info.shape is in row-major order like safetensors, so a
 * Hugging Face weight [out, in] appears as ne = {in, out} and shape =
 * {out, in}: the same bytes either way.
 *
 * Q/K rows and RoPE. llama.cpp's converter (convert_hf_to_gguf.py,
 * LlamaModel.permute) reorders the rows of attn_q (n_head heads) and attn_k
 * (n_head_kv heads) so that its RoPE can rotate adjacent pairs:
 *     w.reshape(n_head, 2, head_dim/2, in).swapaxes(1, 2).reshape(w.shape)
 * Within one head of head_dim rows, GGUF row r holds Hugging Face row
 *     hf(r) = (r % 2) * (head_dim/2) + r / 2
 * and HF row j is at GGUF row gguf(j) = 2 * (j % (head_dim/2)) + j / (head_dim/2).
 * Two equivalent ways for a forward pass written with HF rotate-half
 * RoPE (pairs (i, i + head_dim/2) rotated by inv_freq[i]):
 *   1. use the GGUF weights as they are and rotate adjacent pairs
 *      (2i, 2i+1) by inv_freq[i] instead ("interleaved" RoPE): q and k are
 *      permuted the same way, so q.k and thus attention are unchanged, and
 *      v/o are not permuted; or
 *   2. view attn_q/attn_k as [n_head, 2, head_dim/2, in] with element
 *      strides [head_dim*in, in, 2*in, 1], which is the HF layout without
 *      copying (a strided, not contiguous, view).
 * km_gguf_rope_hf_row / km_gguf_rope_gguf_row give the row mapping. Q8_0
 * blocks run along ne[0] (within a row), so row permutation keeps blocks
 * intact. */
#ifndef KILN_MODEL_GGUF_H_
#define KILN_MODEL_GGUF_H_

#include <stdbool.h>
#include <stdint.h>

#include "model/km_error.h"
#include "model/safetensors.h" /* km_tensor_info */

#ifdef __cplusplus
extern "C" {
#endif

#define KM_GGUF_MAX_KV (1u << 16)
#define KM_GGUF_MAX_TENSORS (1u << 20)
#define KM_GGUF_MAX_ARRAY_DEPTH 3
#define KM_GGUF_MAX_NAME 1024 /* tensor name bytes */
#define KM_GGUF_MAX_KEY 65535
#define KM_GGUF_DEFAULT_ALIGNMENT 32

typedef enum km_gguf_type {
  KM_GGUF_UINT8 = 0,
  KM_GGUF_INT8 = 1,
  KM_GGUF_UINT16 = 2,
  KM_GGUF_INT16 = 3,
  KM_GGUF_UINT32 = 4,
  KM_GGUF_INT32 = 5,
  KM_GGUF_FLOAT32 = 6,
  KM_GGUF_BOOL = 7,
  KM_GGUF_STRING = 8,
  KM_GGUF_ARRAY = 9,
  KM_GGUF_UINT64 = 10,
  KM_GGUF_INT64 = 11,
  KM_GGUF_FLOAT64 = 12,
  KM_GGUF_TYPE_COUNT
} km_gguf_type;

typedef struct km_gguf_str {
  char *ptr; /* NUL-terminated copy; len excludes the NUL */
  uint64_t len;
} km_gguf_str;

typedef struct km_gguf_value {
  km_gguf_type type;
  union {
    uint64_t u;   /* UINT8..UINT64, BOOL (0/1) */
    int64_t i;    /* INT8..INT64 */
    double f;     /* FLOAT32, FLOAT64 */
    km_gguf_str s;
    struct {
      km_gguf_type type; /* element type */
      uint64_t n;
      /* numbers and BOOL: n packed little-endian elements of the file's
       * width; STRING: km_gguf_str[n]; ARRAY: km_gguf_value[n] */
      void *data;
    } arr;
  } v;
} km_gguf_value;

typedef struct km_gguf_kv {
  km_gguf_str key;
  km_gguf_value value;
} km_gguf_kv;

typedef struct km_gguf_tensor {
  km_tensor_info info; /* absolute offset, bytes, row-major shape */
  uint32_t ggml_type;
  uint64_t ne[4];      /* GGUF order: ne[0] innermost; unused dims 1 */
} km_gguf_tensor;

typedef struct km_gguf {
  uint32_t version;
  uint64_t file_size;
  uint32_t alignment;
  uint64_t data_offset; /* absolute start of the data section */
  uint32_t n_kv;
  km_gguf_kv *kv;          /* file order */
  uint32_t n_tensors;
  km_gguf_tensor *tensors; /* file order */
  uint32_t *by_name;       /* tensor indices sorted by name */
} km_gguf;

km_code km_gguf_read(km_read_fn read, void *ctx, uint64_t file_size, km_gguf *out,
                     km_error *err);
void km_gguf_free(km_gguf *g);

const char *km_gguf_type_name(km_gguf_type t);
/* ggml tensor type name ("Q4_K") or "type N" for ids not known here. */
const char *km_ggml_type_name(uint32_t ggml_type);

const km_gguf_value *km_gguf_get(const km_gguf *g, const char *key);
const km_gguf_tensor *km_gguf_find_tensor(const km_gguf *g, const char *name);
/* Typed lookups: false when absent or of a type that does not convert
 * exactly (any integer type for ints if in range; FLOAT32/64 for floats). */
bool km_gguf_get_u64(const km_gguf *g, const char *key, uint64_t *out);
bool km_gguf_get_f64(const km_gguf *g, const char *key, double *out);
bool km_gguf_get_bool(const km_gguf *g, const char *key, bool *out);
const km_gguf_str *km_gguf_get_str(const km_gguf *g, const char *key);
/* An array value whose elements have type elem, or NULL. */
const km_gguf_value *km_gguf_get_array(const km_gguf *g, const char *key, km_gguf_type elem);
/* Element i of a numeric array as double/int64 (no range check on i). */
double km_gguf_array_f64(const km_gguf_value *arr, uint64_t i);
int64_t km_gguf_array_i64(const km_gguf_value *arr, uint64_t i);

/* RoPE row permutation within one head (see above). */
static inline uint32_t km_gguf_rope_hf_row(uint32_t gguf_row, uint32_t head_dim) {
  return (gguf_row % 2) * (head_dim / 2) + gguf_row / 2;
}
static inline uint32_t km_gguf_rope_gguf_row(uint32_t hf_row, uint32_t head_dim) {
  return 2 * (hf_row % (head_dim / 2)) + hf_row / (head_dim / 2);
}

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_GGUF_H_ */
