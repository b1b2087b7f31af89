#include "model/safetensors.h"

#include <stdlib.h>
#include <string.h>

#include "model/json.h"

static const struct { const char *name; km_dtype dtype; } st_dtypes[] = {
    {"F32", KM_DTYPE_F32}, {"F16", KM_DTYPE_F16}, {"BF16", KM_DTYPE_BF16},
    {"F64", KM_DTYPE_F64}, {"I64", KM_DTYPE_I64}, {"I32", KM_DTYPE_I32},
    {"I16", KM_DTYPE_I16}, {"I8", KM_DTYPE_I8},   {"U8", KM_DTYPE_U8},
    {"BOOL", KM_DTYPE_BOOL},
};

static char *dup_str(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const km_tensor_info *)a)->name, ((const km_tensor_info *)b)->name);
}

static int cmp_offset(const void *a, const void *b) {
  const km_tensor_info *x = *(const km_tensor_info *const *)a;
  const km_tensor_info *y = *(const km_tensor_info *const *)b;
  if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
  if (x->size != y->size) return x->size < y->size ? -1 : 1;
  return 0;
}

void km_safetensors_free(km_safetensors *st) {
  if (!st) return;
  for (uint32_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
  free(st->tensors);
  memset(st, 0, sizeof *st);
}

static km_code parse_tensor(const km_json_member *m, uint64_t data_size,
                            uint64_t data_offset, km_tensor_info *t, km_error *err) {
  const km_json *v = &m->value;
  if (!km_json_is(v, KM_JSON_OBJECT))
    return km_fail(err, KM_ERR_FORMAT, "safetensors: tensor \"%.80s\" is not an object", m->key);
  if (m->key_len != strlen(m->key) || !m->key_len)
    return km_fail(err, KM_ERR_FORMAT, "safetensors: empty or NUL-containing tensor name");
  const char *dt = km_json_str(km_json_get(v, "dtype"));
  const km_json *shape = km_json_get(v, "shape");
  const km_json *offs = km_json_get(v, "data_offsets");
  if (!dt || !km_json_is(shape, KM_JSON_ARRAY) || !km_json_is(offs, KM_JSON_ARRAY))
    return km_fail(err, KM_ERR_FORMAT,
                   "safetensors: tensor \"%.80s\" lacks dtype, shape or data_offsets", m->key);
  if (v->len != 3)
    return km_fail(err, KM_ERR_FORMAT, "safetensors: tensor \"%.80s\" has unknown fields", m->key);
  size_t k;
  for (k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
    if (!strcmp(dt, st_dtypes[k].name)) break;
  if (k == sizeof st_dtypes / sizeof st_dtypes[0])
    return km_fail(err, KM_ERR_UNSUPPORTED, "safetensors: tensor \"%.80s\": unknown dtype %.16s",
                   m->key, dt);
  t->dtype = st_dtypes[k].dtype;
  if (shape->len > KM_MAX_DIMS)
    return km_fail(err, KM_ERR_LIMIT, "safetensors: tensor \"%.80s\" has %u dims (max %d)",
                   m->key, shape->len, KM_MAX_DIMS);
  t->ndim = (int)shape->len;
  uint64_t count = 1;
  for (uint32_t i = 0; i < shape->len; i++) {
    int64_t d;
    if (!km_json_int(&shape->u.items[i], &d) || d < 0)
      return km_fail(err, KM_ERR_FORMAT, "safetensors: tensor \"%.80s\": bad dimension %u",
                     m->key, i);
    t->shape[i] = d;
    if (km_mul_u64(count, (uint64_t)d, &count))
      return km_fail(err, KM_ERR_LIMIT, "safetensors: tensor \"%.80s\": size overflows", m->key);
  }
  int64_t b, e;
  if (offs->len != 2 || !km_json_int(&offs->u.items[0], &b) ||
      !km_json_int(&offs->u.items[1], &e) || b < 0 || e < b)
    return km_fail(err, KM_ERR_FORMAT, "safetensors: tensor \"%.80s\": bad data_offsets", m->key);
  uint64_t bytes;
  if (km_dtype_bytes(t->dtype, count, &bytes))
    return km_fail(err, KM_ERR_LIMIT, "safetensors: tensor \"%.80s\": size overflows", m->key);
  if (bytes != (uint64_t)(e - b))
    return km_fail(err, KM_ERR_SHAPE,
                   "safetensors: tensor \"%.80s\": shape needs %llu bytes, offsets give %llu",
                   m->key, (unsigned long long)bytes, (unsigned long long)(e - b));
  if ((uint64_t)e > data_size)
    return km_fail(err, KM_ERR_RANGE,
                   "safetensors: tensor \"%.80s\" ends at %lld, past the data (%llu bytes)",
                   m->key, (long long)e, (unsigned long long)data_size);
  t->offset = data_offset + (uint64_t)b;
  t->size = bytes;
  return KM_OK;
}

km_code km_safetensors_read(km_read_fn read, void *ctx, uint64_t file_size,
                            km_safetensors *out, km_error *err) {
  memset(out, 0, sizeof *out);
  unsigned char lenbuf[8];
  if (file_size < 8)
    return km_fail(err, KM_ERR_TRUNCATED, "safetensors: file of %llu bytes has no header",
                   (unsigned long long)file_size);
  if (read(ctx, 0, lenbuf, 8)) return km_fail(err, KM_ERR_IO, "safetensors: read failed");
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | lenbuf[i];
  if (n > KM_ST_MAX_HEADER)
    return km_fail(err, KM_ERR_LIMIT, "safetensors: header length %llu exceeds %llu",
                   (unsigned long long)n, KM_ST_MAX_HEADER);
  if (n > file_size - 8)
    return km_fail(err, KM_ERR_TRUNCATED,
                   "safetensors: header length %llu but the file has %llu bytes after it",
                   (unsigned long long)n, (unsigned long long)(file_size - 8));
  if (n < 2) return km_fail(err, KM_ERR_FORMAT, "safetensors: header length %llu too small",
                            (unsigned long long)n);
  char *hdr = malloc((size_t)n);
  if (!hdr) return km_fail(err, KM_ERR_NOMEM, "safetensors: out of memory");
  if (read(ctx, 8, hdr, (size_t)n)) {
    free(hdr);
    return km_fail(err, KM_ERR_IO, "safetensors: read failed");
  }
  if (hdr[0] != '{') {
    free(hdr);
    return km_fail(err, KM_ERR_FORMAT, "safetensors: header does not start with '{'");
  }
  km_json_doc *doc;
  km_json_limits lim = {16, KM_ST_MAX_HEADER};
  km_error jerr;
  km_code c = km_json_parse(hdr, (size_t)n, &lim, &doc, &jerr);
  free(hdr);
  if (c) return km_fail(err, c, "safetensors header: %s", jerr.message);
  const km_json *root = km_json_root(doc);
  if (!km_json_is(root, KM_JSON_OBJECT)) {
    km_json_free(doc);
    return km_fail(err, KM_ERR_FORMAT, "safetensors: header is not an object");
  }
  out->file_size = file_size;
  out->header_size = n;
  out->data_offset = 8 + n;
  uint64_t data_size = file_size - out->data_offset;
  out->tensors = calloc(root->len ? root->len : 1, sizeof *out->tensors);
  km_tensor_info **by_off = calloc(root->len ? root->len : 1, sizeof *by_off);
  if (!out->tensors || !by_off) {
    c = km_fail(err, KM_ERR_NOMEM, "safetensors: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < root->len; i++) {
    const km_json_member *m = &root->u.members[i];
    if (!strcmp(m->key, "__metadata__")) {
      const km_json *md = &m->value;
      if (!km_json_is(md, KM_JSON_OBJECT)) {
        c = km_fail(err, KM_ERR_FORMAT, "safetensors: __metadata__ is not an object");
        goto done;
      }
      for (uint32_t j = 0; j < md->len; j++)
        if (!km_json_is(&md->u.members[j].value, KM_JSON_STRING)) {
          c = km_fail(err, KM_ERR_FORMAT, "safetensors: __metadata__ values must be strings");
          goto done;
        }
      continue;
    }
    km_tensor_info *t = &out->tensors[out->n_tensors];
    if ((c = parse_tensor(m, data_size, out->data_offset, t, err))) goto done;
    if (!(t->name = dup_str(m->key))) {
      c = km_fail(err, KM_ERR_NOMEM, "safetensors: out of memory");
      goto done;
    }
    by_off[out->n_tensors] = t;
    out->n_tensors++;
  }
  /* The data section must be tiled exactly, in offset order. */
  qsort(by_off, out->n_tensors, sizeof *by_off, cmp_offset);
  uint64_t at = out->data_offset;
  for (uint32_t i = 0; i < out->n_tensors; i++) {
    if (by_off[i]->offset != at) {
      c = km_fail(err, KM_ERR_FORMAT,
                  "safetensors: tensor \"%.80s\" %s at data offset %llu (expected %llu)",
                  by_off[i]->name, by_off[i]->offset < at ? "overlaps the previous one" : "leaves a hole",
                  (unsigned long long)(by_off[i]->offset - out->data_offset),
                  (unsigned long long)(at - out->data_offset));
      goto done;
    }
    at += by_off[i]->size;
  }
  if (at != file_size) {
    c = km_fail(err, KM_ERR_FORMAT,
                "safetensors: tensors cover %llu data bytes but the file has %llu",
                (unsigned long long)(at - out->data_offset), (unsigned long long)data_size);
    goto done;
  }
  qsort(out->tensors, out->n_tensors, sizeof *out->tensors, cmp_name);
done:
  free(by_off);
  km_json_free(doc);
  if (c) km_safetensors_free(out);
  return c;
}

const km_tensor_info *km_safetensors_find(const km_safetensors *st, const char *name) {
  size_t lo = 0, hi = st->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int r = strcmp(st->tensors[mid].name, name);
    if (!r) return &st->tensors[mid];
    if (r < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* ---- model.safetensors.index.json ---------------------------------------- */

void km_st_index_free(km_st_index *ix) {
  if (!ix) return;
  for (uint32_t i = 0; i < ix->n_files; i++) free(ix->files[i]);
  for (uint32_t i = 0; i < ix->n_tensors; i++) free(ix->names[i]);
  free(ix->files);
  free(ix->names);
  free(ix->file_of);
  memset(ix, 0, sizeof *ix);
}

typedef struct { char *name; uint32_t file; } name_file;

static int cmp_nf(const void *a, const void *b) {
  return strcmp(((const name_file *)a)->name, ((const name_file *)b)->name);
}

static int safe_file_name(const char *s, size_t len) {
  if (!len || len != strlen(s) || len > 255) return 0;
  if (!strcmp(s, ".") || !strcmp(s, "..")) return 0;
  for (size_t i = 0; i < len; i++)
    if (s[i] == '/' || s[i] == '\\' || (unsigned char)s[i] < 0x20) return 0;
  return 1;
}

km_code km_st_index_parse(const char *json, size_t len, km_st_index *out, km_error *err) {
  memset(out, 0, sizeof *out);
  km_json_doc *doc;
  km_error jerr;
  km_code c = km_json_parse(json, len, NULL, &doc, &jerr);
  if (c) return km_fail(err, c, "safetensors index: %s", jerr.message);
  const km_json *wm = km_json_get(km_json_root(doc), "weight_map");
  name_file *nf = NULL;
  if (!km_json_is(wm, KM_JSON_OBJECT)) {
    c = km_fail(err, KM_ERR_FORMAT, "safetensors index: no weight_map object");
    goto done;
  }
  nf = calloc(wm->len ? wm->len : 1, sizeof *nf);
  out->files = calloc(wm->len ? wm->len : 1, sizeof *out->files);
  if (!nf || !out->files) {
    c = km_fail(err, KM_ERR_NOMEM, "safetensors index: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < wm->len; i++) {
    const km_json_member *m = &wm->u.members[i];
    const km_json *f = &m->value;
    if (!km_json_is(f, KM_JSON_STRING) || !safe_file_name(f->u.str, f->len)) {
      c = km_fail(err, KM_ERR_FORMAT, "safetensors index: bad shard file name for \"%.80s\"",
                  m->key);
      goto done;
    }
    uint32_t k;
    for (k = 0; k < out->n_files; k++)
      if (!strcmp(out->files[k], f->u.str)) break;
    if (k == out->n_files) {
      if (!(out->files[k] = dup_str(f->u.str))) {
        c = km_fail(err, KM_ERR_NOMEM, "safetensors index: out of memory");
        goto done;
      }
      out->n_files++;
    }
    nf[i].file = k;
    if (!(nf[i].name = dup_str(m->key))) {
      c = km_fail(err, KM_ERR_NOMEM, "safetensors index: out of memory");
      goto done;
    }
    out->n_tensors++;
  }
  qsort(nf, out->n_tensors, sizeof *nf, cmp_nf);
  out->names = calloc(out->n_tensors ? out->n_tensors : 1, sizeof *out->names);
  out->file_of = calloc(out->n_tensors ? out->n_tensors : 1, sizeof *out->file_of);
  if (!out->names || !out->file_of) {
    c = km_fail(err, KM_ERR_NOMEM, "safetensors index: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < out->n_tensors; i++) {
    out->names[i] = nf[i].name;
    out->file_of[i] = nf[i].file;
    nf[i].name = NULL;
  }
done:
  if (nf)
    for (uint32_t i = 0; i < (wm ? wm->len : 0); i++) free(nf[i].name);
  free(nf);
  km_json_free(doc);
  if (c) km_st_index_free(out);
  return c;
}

int km_st_index_find(const km_st_index *ix, const char *name) {
  size_t lo = 0, hi = ix->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int r = strcmp(ix->names[mid], name);
    if (!r) return (int)ix->file_of[mid];
    if (r < 0) lo = mid + 1;
    else hi = mid;
  }
  return -1;
}

km_code km_st_index_check(const km_st_index *ix, const km_safetensors *shards, km_error *err) {
  for (uint32_t i = 0; i < ix->n_tensors; i++)
    if (!km_safetensors_find(&shards[ix->file_of[i]], ix->names[i]))
      return km_fail(err, KM_ERR_NOT_FOUND, "safetensors index: \"%.80s\" is not in %.80s",
                     ix->names[i], ix->files[ix->file_of[i]]);
  for (uint32_t f = 0; f < ix->n_files; f++)
    for (uint32_t j = 0; j < shards[f].n_tensors; j++) {
      int k = km_st_index_find(ix, shards[f].tensors[j].name);
      if (k != (int)f)
        return km_fail(err, KM_ERR_FORMAT,
                       "safetensors index: \"%.80s\" in %.80s is %s", shards[f].tensors[j].name,
                       ix->files[f], k < 0 ? "not in the index" : "indexed to another shard");
    }
  return KM_OK;
}
