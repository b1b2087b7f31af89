/* Errors and input sources shared by kiln's model-file code.
 *
 * src/model/ is portable C11 with no kiln dependencies: the same files are
 * compiled into libkiln (host pre-checks, the native twin, tests) and into
 * the wasm32-wasi guest, which reads config and tokenizer itself. So it
 * reports failure with its own small error value instead of kiln_status:
 * every function that can fail returns a km_code (KM_OK == 0) and, when
 * given a km_error, fills it with the code and a one-line message naming
 * what is wrong and where. Nothing here aborts, exits or asserts on input;
 * a failed malloc is KM_ERR_NOMEM. The host turns a km_error into a
 * kiln_status where it enters the runtime (see km_code_name for names). */
#ifndef KILN_MODEL_KM_ERROR_H_
#define KILN_MODEL_KM_ERROR_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum km_code {
  KM_OK = 0,
  KM_ERR_IO,          /* the read callback failed */
  KM_ERR_TRUNCATED,   /* the input ends before what its header promises */
  KM_ERR_FORMAT,      /* malformed: bad magic, bad JSON, bad UTF-8, ... */
  KM_ERR_LIMIT,       /* a count, size or depth beyond the parser's limits */
  KM_ERR_RANGE,       /* an offset or length outside the file or buffer */
  KM_ERR_UNSUPPORTED, /* well-formed but not handled: dtype, version, type */
  KM_ERR_SHAPE,       /* a tensor's shape or dtype does not fit the config */
  KM_ERR_NOT_FOUND,   /* a required key or tensor is missing */
  KM_ERR_NOMEM,       /* malloc failed */
  KM_ERR_ARGUMENT,    /* the caller passed something invalid */
} km_code;

typedef struct km_error {
  km_code code;
  char message[256];
} km_error;

const char *km_code_name(km_code c);

/* Sets *err (when err is not NULL) and returns code. printf-style. */
km_code km_fail(km_error *err, km_code code, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A source of file bytes: read exactly len bytes at offset into buf and
 * return 0, or return non-zero (the parser reports KM_ERR_IO). The guest
 * implements it over WASI fd_pread; the host over pread or an mmap. The
 * parsers check every offset against the file size they are given before
 * reading, so a reader never sees a read past the end of a well-sized file. */
typedef int (*km_read_fn)(void *ctx, uint64_t offset, void *buf, size_t len);

/* A km_read_fn over a memory buffer: ctx is a km_buffer. */
typedef struct km_buffer {
  const uint8_t *data;
  uint64_t size;
} km_buffer;
int km_buffer_read(void *ctx, uint64_t offset, void *buf, size_t len);

/* Element types of weights and the bytes they take. GGUF and safetensors
 * both map onto this one list; types the files name but kiln does not
 * compute with are rejected by name at parse time. */
typedef enum km_dtype {
  KM_DTYPE_F32 = 0,
  KM_DTYPE_F16,
  KM_DTYPE_BF16,
  KM_DTYPE_Q8_0, /* blocks of 32: f16 scale, then 32 int8 (34 bytes) */
  KM_DTYPE_F64,
  KM_DTYPE_I8,
  KM_DTYPE_I16,
  KM_DTYPE_I32,
  KM_DTYPE_I64,
  KM_DTYPE_U8,
  KM_DTYPE_BOOL,
  KM_DTYPE_COUNT
} km_dtype;

const char *km_dtype_name(km_dtype t);
/* Bytes taken by n elements of type t (Q8_0: n must be a multiple of 32).
 * Returns 0 and sets *out, or -1 on overflow or a bad block count. */
int km_dtype_bytes(km_dtype t, uint64_t n, uint64_t *out);

/* Overflow-checked helpers: return 0, or -1 on overflow. */
int km_mul_u64(uint64_t a, uint64_t b, uint64_t *out);
int km_add_u64(uint64_t a, uint64_t b, uint64_t *out);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_KM_ERROR_H_ */
