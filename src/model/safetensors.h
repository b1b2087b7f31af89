/* safetensors files and sharded Hugging Face checkpoints.
 *
 * A safetensors file is: 8 bytes little-endian header length N, N bytes of
 * JSON header (an object: tensor name -> {"dtype", "shape", "data_offsets":
 * [begin, end]}, plus an optional "__metadata__" object of strings), then
 * the data section. Offsets are relative to the data section (8 + N).
 *
 * km_safetensors_read checks, before any tensor is used: N within limits
 * and the file; the header is strict JSON starting with '{'; every dtype
 * known (F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL; others rejected by
 * name); every shape has at most 8 non-negative dims whose product times
 * the dtype size equals end - begin without overflow; tensors, sorted by
 * offset, tile the data section exactly (no overlap, no hole, last end ==
 * data size), as the reference implementation requires. Tensor byte
 * ranges are then absolute file offsets, safe to map.
 *
 * Sharded checkpoints: model.safetensors.index.json maps each tensor name
 * to a shard file name; km_st_index_parse reads it and rejects file names
 * that could leave the model directory ('/', '\\', "..", empty). */
#ifndef KILN_MODEL_SAFETENSORS_H_
#define KILN_MODEL_SAFETENSORS_H_

#include <stdint.h>

#include "model/km_error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KM_MAX_DIMS 8
/* The reference implementation's header limit (100 MB). */
#define KM_ST_MAX_HEADER 100000000ull

typedef struct km_tensor_info {
  char *name;
  km_dtype dtype;
  int ndim;
  int64_t shape[KM_MAX_DIMS]; /* row-major, outermost first (PyTorch order) */
  uint64_t offset;            /* absolute byte offset in the file */
  uint64_t size;              /* bytes */
} km_tensor_info;

typedef struct km_safetensors {
  uint64_t file_size;
  uint64_t header_size;  /* N */
  uint64_t data_offset;  /* 8 + N */
  uint32_t n_tensors;
  km_tensor_info *tensors; /* sorted by name */
} km_safetensors;

/* Reads and checks the header of a file of file_size bytes through read.
 * On success the caller owns *out and frees it with km_safetensors_free. */
km_code km_safetensors_read(km_read_fn read, void *ctx, uint64_t file_size,
                            km_safetensors *out, km_error *err);
void km_safetensors_free(km_safetensors *st);
/* The tensor called name, or NULL (binary search). */
const km_tensor_info *km_safetensors_find(const km_safetensors *st, const char *name);

typedef struct km_st_index {
  uint32_t n_files;
  char **files;       /* distinct shard names, in order of first mention */
  uint32_t n_tensors;
  char **names;       /* sorted */
  uint32_t *file_of;  /* names[i] lives in files[file_of[i]] */
} km_st_index;

km_code km_st_index_parse(const char *json, size_t len, km_st_index *out, km_error *err);
void km_st_index_free(km_st_index *ix);
/* Index of the shard that holds name, or -1. */
int km_st_index_find(const km_st_index *ix, const char *name);
/* Checks that every tensor the index names is present in its shard
 * (shards[i] parsed from ix->files[i]) and that no tensor appears in two
 * shards. */
km_code km_st_index_check(const km_st_index *ix, const km_safetensors *shards,
                          km_error *err);

#ifdef __cplusplus
}
#endif
#endif /* KILN_MODEL_SAFETENSORS_H_ */
