/* GGUF reader: one sequential pass through a buffered reader over the
 * caller's read callback. Every length read from the file is checked
 * against the bytes left before anything is allocated for it. */
#include "model/gguf.h"

#include <stdlib.h>
#include <string.h>

typedef struct reader {
  km_read_fn read;
  void *ctx;
  uint64_t size, pos;   /* file size, logical position */
  uint64_t buf_start;   /* file offset of buf[0] */
  size_t buf_len;
  unsigned char buf[65536];
  km_error *err;
} reader;

static uint64_t left(const reader *r) { return r->size - r->pos; }

static km_code rd(reader *r, void *dst, uint64_t n, const char *what) {
  if (n > left(r))
    return km_fail(r->err, KM_ERR_TRUNCATED, "GGUF: file ends inside %s (offset %llu)", what,
                   (unsigned long long)r->pos);
  unsigned char *d = dst;
  while (n) {
    if (r->pos >= r->buf_start && r->pos < r->buf_start + r->buf_len) {
      size_t off = (size_t)(r->pos - r->buf_start);
      size_t k = r->buf_len - off;
      if (k > n) k = (size_t)n;
      memcpy(d, r->buf + off, k);
      d += k;
      n -= k;
      r->pos += k;
      continue;
    }
    uint64_t want = left(r) < sizeof r->buf ? left(r) : sizeof r->buf;
    if (r->read(r->ctx, r->pos, r->buf, (size_t)want))
      return km_fail(r->err, KM_ERR_IO, "GGUF: read failed at offset %llu",
                     (unsigned long long)r->pos);
    r->buf_start = r->pos;
    r->buf_len = (size_t)want;
  }
  return KM_OK;
}

static km_code rd_u32(reader *r, uint32_t *v, const char *what) {
  unsigned char b[4];
  km_code c = rd(r, b, 4, what);
  if (!c) *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
  return c;
}

static km_code rd_u64(reader *r, uint64_t *v, const char *what) {
  unsigned char b[8];
  km_code c = rd(r, b, 8, what);
  if (!c) {
    *v = 0;
    for (int i = 7; i >= 0; i--) *v = (*v << 8) | b[i];
  }
  return c;
}

static km_code rd_str(reader *r, km_gguf_str *s, uint64_t max, const char *what) {
  uint64_t n;
  km_code c = rd_u64(r, &n, what);
  if (c) return c;
  if (n > max)
    return km_fail(r->err, KM_ERR_LIMIT, "GGUF: %s of %llu bytes exceeds the limit", what,
                   (unsigned long long)n);
  if (n > left(r))
    return km_fail(r->err, KM_ERR_TRUNCATED, "GGUF: %s of %llu bytes runs past the end", what,
                   (unsigned long long)n);
  s->ptr = malloc((size_t)n + 1);
  if (!s->ptr) return km_fail(r->err, KM_ERR_NOMEM, "GGUF: out of memory");
  if ((c = rd(r, s->ptr, n, what))) {
    free(s->ptr);
    s->ptr = NULL;
    return c;
  }
  s->ptr[n] = 0;
  s->len = n;
  return KM_OK;
}

static const uint8_t scalar_size[KM_GGUF_TYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const char *const type_names[KM_GGUF_TYPE_COUNT] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64"};

const char *km_gguf_type_name(km_gguf_type t) {
  return (unsigned)t < KM_GGUF_TYPE_COUNT ? type_names[t] : "?";
}

static void free_value(km_gguf_value *v) {
  if (v->type == KM_GGUF_STRING) {
    free(v->v.s.ptr);
  } else if (v->type == KM_GGUF_ARRAY) {
    if (v->v.arr.type == KM_GGUF_STRING) {
      km_gguf_str *s = v->v.arr.data;
      for (uint64_t i = 0; s && i < v->v.arr.n; i++) free(s[i].ptr);
    } else if (v->v.arr.type == KM_GGUF_ARRAY) {
      km_gguf_value *a = v->v.arr.data;
      for (uint64_t i = 0; a && i < v->v.arr.n; i++) free_value(&a[i]);
    }
    free(v->v.arr.data);
  }
  v->type = KM_GGUF_UINT8;
}

static km_code read_value(reader *r, km_gguf_type t, km_gguf_value *v, int depth);

static km_code read_scalar(reader *r, km_gguf_type t, km_gguf_value *v) {
  unsigned char b[8] = {0};
  km_code c = rd(r, b, scalar_size[t], "a value");
  if (c) return c;
  uint64_t u = 0;
  for (int i = scalar_size[t] - 1; i >= 0; i--) u = (u << 8) | b[i];
  v->type = t;
  switch (t) {
    case KM_GGUF_UINT8: case KM_GGUF_UINT16: case KM_GGUF_UINT32: case KM_GGUF_UINT64:
      v->v.u = u;
      break;
    case KM_GGUF_BOOL:
      if (u > 1) return km_fail(r->err, KM_ERR_FORMAT, "GGUF: bool value %u", (unsigned)u);
      v->v.u = u;
      break;
    case KM_GGUF_INT8: v->v.i = (int8_t)u; break;
    case KM_GGUF_INT16: v->v.i = (int16_t)u; break;
    case KM_GGUF_INT32: v->v.i = (int32_t)u; break;
    case KM_GGUF_INT64: v->v.i = (int64_t)u; break;
    case KM_GGUF_FLOAT32: {
      uint32_t w = (uint32_t)u;
      float f;
      memcpy(&f, &w, 4);
      v->v.f = f;
      break;
    }
    case KM_GGUF_FLOAT64: memcpy(&v->v.f, &u, 8); break;
    default: break;
  }
  return KM_OK;
}

static km_code read_array(reader *r, km_gguf_value *v, int depth) {
  uint32_t et;
  uint64_t n;
  km_code c;
  if ((c = rd_u32(r, &et, "an array type")) || (c = rd_u64(r, &n, "an array length")))
    return c;
  if (et >= KM_GGUF_TYPE_COUNT)
    return km_fail(r->err, KM_ERR_FORMAT, "GGUF: unknown array element type %u", et);
  if (et == KM_GGUF_ARRAY && depth + 1 >= KM_GGUF_MAX_ARRAY_DEPTH)
    return km_fail(r->err, KM_ERR_LIMIT, "GGUF: arrays nested deeper than %d",
                   KM_GGUF_MAX_ARRAY_DEPTH);
  /* Smallest encoding of one element: bounds n by the bytes left. */
  uint64_t min = et == KM_GGUF_STRING ? 8 : et == KM_GGUF_ARRAY ? 12 : scalar_size[et];
  if (n > left(r) / min)
    return km_fail(r->err, KM_ERR_TRUNCATED, "GGUF: array of %llu %s runs past the end",
                   (unsigned long long)n, km_gguf_type_name((km_gguf_type)et));
  v->type = KM_GGUF_ARRAY;
  v->v.arr.type = (km_gguf_type)et;
  v->v.arr.n = 0;
  v->v.arr.data = NULL;
  if (et != KM_GGUF_STRING && et != KM_GGUF_ARRAY) {
    v->v.arr.data = malloc(n ? (size_t)(n * min) : 1);
    if (!v->v.arr.data) return km_fail(r->err, KM_ERR_NOMEM, "GGUF: out of memory");
    v->v.arr.n = n;
    if ((c = rd(r, v->v.arr.data, n * min, "an array"))) return c;
    if (et == KM_GGUF_BOOL)
      for (uint64_t i = 0; i < n; i++)
        if (((unsigned char *)v->v.arr.data)[i] > 1)
          return km_fail(r->err, KM_ERR_FORMAT, "GGUF: bool array element not 0/1");
    return KM_OK;
  }
  size_t esz = et == KM_GGUF_STRING ? sizeof(km_gguf_str) : sizeof(km_gguf_value);
  v->v.arr.data = calloc(n ? (size_t)n : 1, esz);
  if (!v->v.arr.data) return km_fail(r->err, KM_ERR_NOMEM, "GGUF: out of memory");
  for (uint64_t i = 0; i < n; i++) {
    if (et == KM_GGUF_STRING)
      c = rd_str(r, &((km_gguf_str *)v->v.arr.data)[i], UINT64_MAX, "an array string");
    else
      c = read_value(r, KM_GGUF_ARRAY, &((km_gguf_value *)v->v.arr.data)[i], depth + 1);
    v->v.arr.n = i + 1; /* a failed element is zeroed or partly filled: free_value copes */
    if (c) return c;
  }
  return KM_OK;
}

static km_code read_value(reader *r, km_gguf_type t, km_gguf_value *v, int depth) {
  memset(v, 0, sizeof *v);
  if (t == KM_GGUF_STRING) {
    v->type = KM_GGUF_STRING;
    return rd_str(r, &v->v.s, UINT64_MAX, "a string value");
  }
  if (t == KM_GGUF_ARRAY) return read_array(r, v, depth);
  return read_scalar(r, t, v);
}

/* ---- ggml tensor types --------------------------------------------------- */

static const char *const ggml_names[] = {
    "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1",
    "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS",
    "IQ1_S", "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64",
    "IQ1_M", "BF16", "Q4_0_4_4", "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0",
    "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};

const char *km_ggml_type_name(uint32_t t) {
  if (t < sizeof ggml_names / sizeof ggml_names[0]) return ggml_names[t];
  return "unknown";
}

static int ggml_to_dtype(uint32_t t, km_dtype *out) {
  switch (t) {
    case 0: *out = KM_DTYPE_F32; return 0;
    case 1: *out = KM_DTYPE_F16; return 0;
    case 8: *out = KM_DTYPE_Q8_0; return 0;
    case 24: *out = KM_DTYPE_I8; return 0;
    case 25: *out = KM_DTYPE_I16; return 0;
    case 26: *out = KM_DTYPE_I32; return 0;
    case 27: *out = KM_DTYPE_I64; return 0;
    case 28: *out = KM_DTYPE_F64; return 0;
    case 30: *out = KM_DTYPE_BF16; return 0;
    default: return -1;
  }
}

/* ---- the file ------------------------------------------------------------ */

void km_gguf_free(km_gguf *g) {
  if (!g) return;
  for (uint32_t i = 0; i < g->n_kv; i++) {
    free(g->kv[i].key.ptr);
    free_value(&g->kv[i].value);
  }
  for (uint32_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].info.name);
  free(g->kv);
  free(g->tensors);
  free(g->by_name);
  memset(g, 0, sizeof *g);
}

/* Sort keys: a name (or offset) with the index it came from. qsort has no
 * context argument in C11, so the key travels in the element. */
typedef struct sort_key {
  const char *name;
  uint64_t offset;
  uint32_t index;
} sort_key;

static int cmp_key_name(const void *a, const void *b) {
  return strcmp(((const sort_key *)a)->name, ((const sort_key *)b)->name);
}

static int cmp_key_off(const void *a, const void *b) {
  uint64_t x = ((const sort_key *)a)->offset, y = ((const sort_key *)b)->offset;
  return x < y ? -1 : x > y;
}

static km_code read_tensor_info(reader *r, km_gguf_tensor *t, km_error *err) {
  km_gguf_str name = {0};
  km_code c = rd_str(r, &name, KM_GGUF_MAX_NAME, "a tensor name");
  if (c) return c;
  t->info.name = name.ptr;
  if (!name.len || strlen(name.ptr) != name.len)
    return km_fail(err, KM_ERR_FORMAT, "GGUF: empty or NUL-containing tensor name");
  uint32_t nd;
  if ((c = rd_u32(r, &nd, "a tensor's dims"))) return c;
  if (nd < 1 || nd > 4)
    return km_fail(err, KM_ERR_FORMAT, "GGUF: tensor \"%.80s\" has %u dims (1..4)", name.ptr, nd);
  uint64_t count = 1;
  for (uint32_t i = 0; i < 4; i++) t->ne[i] = 1;
  for (uint32_t i = 0; i < nd; i++) {
    if ((c = rd_u64(r, &t->ne[i], "a tensor's dims"))) return c;
    if (t->ne[i] < 1 || t->ne[i] > INT64_MAX)
      return km_fail(err, KM_ERR_FORMAT, "GGUF: tensor \"%.80s\": bad dim %llu", name.ptr,
                     (unsigned long long)t->ne[i]);
    if (km_mul_u64(count, t->ne[i], &count))
      return km_fail(err, KM_ERR_LIMIT, "GGUF: tensor \"%.80s\": size overflows", name.ptr);
  }
  t->info.ndim = (int)nd;
  for (uint32_t i = 0; i < nd; i++) t->info.shape[i] = (int64_t)t->ne[nd - 1 - i];
  if ((c = rd_u32(r, &t->ggml_type, "a tensor type"))) return c;
  if (ggml_to_dtype(t->ggml_type, &t->info.dtype))
    return km_fail(err, KM_ERR_UNSUPPORTED,
                   "GGUF: tensor \"%.80s\" has type %s (%u), which kiln does not support "
                   "(F32, F16, BF16, Q8_0)",
                   name.ptr, km_ggml_type_name(t->ggml_type), t->ggml_type);
  if (t->info.dtype == KM_DTYPE_Q8_0 && t->ne[0] % 32)
    return km_fail(err, KM_ERR_SHAPE, "GGUF: Q8_0 tensor \"%.80s\" has rows of %llu (not a "
                   "multiple of 32)", name.ptr, (unsigned long long)t->ne[0]);
  if (km_dtype_bytes(t->info.dtype, count, &t->info.size))
    return km_fail(err, KM_ERR_LIMIT, "GGUF: tensor \"%.80s\": size overflows", name.ptr);
  return rd_u64(r, &t->info.offset, "a tensor offset");
}

km_code km_gguf_read(km_read_fn read, void *ctx, uint64_t file_size, km_gguf *out,
                     km_error *err) {
  memset(out, 0, sizeof *out);
  reader *r = malloc(sizeof *r);
  sort_key *keys = NULL;
  if (!r) return km_fail(err, KM_ERR_NOMEM, "GGUF: out of memory");
  *r = (reader){.read = read, .ctx = ctx, .size = file_size, .err = err};
  km_code c;
  unsigned char magic[4];
  uint32_t version;
  uint64_t n_tensors, n_kv;
  if ((c = rd(r, magic, 4, "the header"))) goto done;
  if (memcmp(magic, "GGUF", 4)) {
    c = km_fail(err, KM_ERR_FORMAT, "GGUF: bad magic");
    goto done;
  }
  if ((c = rd_u32(r, &version, "the header"))) goto done;
  if (version == 1 || version == 0x01000000 || version == 0x02000000 || version == 0x03000000) {
    c = km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: version %u%s is not supported (2, 3)",
                version > 0xFFFF ? version >> 24 : version, version > 0xFFFF ? " big-endian" : "");
    goto done;
  }
  if (version != 2 && version != 3) {
    c = km_fail(err, KM_ERR_UNSUPPORTED, "GGUF: unknown version %u", version);
    goto done;
  }
  out->version = version;
  out->file_size = file_size;
  if ((c = rd_u64(r, &n_tensors, "the header")) || (c = rd_u64(r, &n_kv, "the header")))
    goto done;
  if (n_kv > KM_GGUF_MAX_KV || n_tensors > KM_GGUF_MAX_TENSORS) {
    c = km_fail(err, KM_ERR_LIMIT, "GGUF: %llu metadata entries and %llu tensors exceed the "
                "limits (%u, %u)", (unsigned long long)n_kv, (unsigned long long)n_tensors,
                KM_GGUF_MAX_KV, KM_GGUF_MAX_TENSORS);
    goto done;
  }
  /* Each KV takes >= 8+4+1 bytes, each tensor info >= 8+1+4+8+4+8. */
  if (n_kv * 13 + n_tensors * 33 > left(r)) {
    c = km_fail(err, KM_ERR_TRUNCATED, "GGUF: %llu metadata entries and %llu tensors cannot "
                "fit in the file", (unsigned long long)n_kv, (unsigned long long)n_tensors);
    goto done;
  }
  out->kv = calloc(n_kv ? n_kv : 1, sizeof *out->kv);
  out->tensors = calloc(n_tensors ? n_tensors : 1, sizeof *out->tensors);
  if (!out->kv || !out->tensors) {
    c = km_fail(err, KM_ERR_NOMEM, "GGUF: out of memory");
    goto done;
  }
  for (uint64_t i = 0; i < n_kv; i++) {
    km_gguf_kv *kv = &out->kv[i];
    out->n_kv = (uint32_t)i + 1;
    uint32_t t;
    if ((c = rd_str(r, &kv->key, KM_GGUF_MAX_KEY, "a metadata key"))) goto done;
    if (!kv->key.len || strlen(kv->key.ptr) != kv->key.len) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: empty or NUL-containing metadata key");
      goto done;
    }
    if ((c = rd_u32(r, &t, "a metadata type"))) goto done;
    if (t >= KM_GGUF_TYPE_COUNT) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: key \"%.80s\" has unknown type %u", kv->key.ptr, t);
      goto done;
    }
    if ((c = read_value(r, (km_gguf_type)t, &kv->value, 0))) {
      if (err) {
        char m[sizeof err->message];
        memcpy(m, err->message, sizeof m);
        km_fail(err, c, "%s (key \"%.80s\")", m, kv->key.ptr);
      }
      goto done;
    }
  }
  keys = malloc((n_kv > n_tensors ? n_kv : n_tensors ? n_tensors : 1) * sizeof *keys);
  if (!keys) {
    c = km_fail(err, KM_ERR_NOMEM, "GGUF: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < out->n_kv; i++) keys[i] = (sort_key){out->kv[i].key.ptr, 0, i};
  qsort(keys, out->n_kv, sizeof *keys, cmp_key_name);
  for (uint32_t i = 1; i < out->n_kv; i++)
    if (!strcmp(keys[i].name, keys[i - 1].name)) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: duplicate key \"%.80s\"", keys[i].name);
      goto done;
    }
  out->alignment = KM_GGUF_DEFAULT_ALIGNMENT;
  const km_gguf_value *al = km_gguf_get(out, "general.alignment");
  if (al) {
    if (al->type != KM_GGUF_UINT32 || !al->v.u || (al->v.u & (al->v.u - 1)) || al->v.u > 65536) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: general.alignment must be a uint32 power of two");
      goto done;
    }
    out->alignment = (uint32_t)al->v.u;
  }
  for (uint64_t i = 0; i < n_tensors; i++) {
    out->n_tensors = (uint32_t)i + 1;
    if ((c = read_tensor_info(r, &out->tensors[i], err))) goto done;
  }
  uint64_t data = (r->pos + out->alignment - 1) / out->alignment * out->alignment;
  if (data > file_size) {
    c = km_fail(err, KM_ERR_TRUNCATED, "GGUF: file ends before its data section");
    goto done;
  }
  out->data_offset = data;
  out->by_name = malloc((out->n_tensors ? out->n_tensors : 1) * sizeof *out->by_name);
  if (!out->by_name) {
    c = km_fail(err, KM_ERR_NOMEM, "GGUF: out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < out->n_tensors; i++) {
    km_gguf_tensor *t = &out->tensors[i];

    if (t->info.offset % out->alignment) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: tensor \"%.80s\" offset %llu is not aligned to %u",
                  t->info.name, (unsigned long long)t->info.offset, out->alignment);
      goto done;
    }
    uint64_t end;
    if (t->info.offset > file_size - data ||
        km_add_u64(t->info.offset, t->info.size, &end) || end > file_size - data) {
      c = km_fail(err, KM_ERR_RANGE, "GGUF: tensor \"%.80s\" [%llu, +%llu) lies past the end of "
                  "the data (%llu bytes)", t->info.name, (unsigned long long)t->info.offset,
                  (unsigned long long)t->info.size, (unsigned long long)(file_size - data));
      goto done;
    }
    t->info.offset += data;
    keys[i] = (sort_key){t->info.name, t->info.offset, i};
  }
  qsort(keys, out->n_tensors, sizeof *keys, cmp_key_name);
  for (uint32_t i = 0; i < out->n_tensors; i++) {
    out->by_name[i] = keys[i].index;
    if (i && !strcmp(keys[i].name, keys[i - 1].name)) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: duplicate tensor \"%.80s\"", keys[i].name);
      goto done;
    }
  }
  qsort(keys, out->n_tensors, sizeof *keys, cmp_key_off);
  for (uint32_t i = 1; i < out->n_tensors; i++) {
    const km_tensor_info *a = &out->tensors[keys[i - 1].index].info;
    const km_tensor_info *b = &out->tensors[keys[i].index].info;
    if (a->offset + a->size > b->offset && a->size && b->size) {
      c = km_fail(err, KM_ERR_FORMAT, "GGUF: tensors \"%.80s\" and \"%.80s\" overlap", a->name,
                  b->name);
      goto done;
    }
  }
done:
  free(keys);
  free(r);
  if (c) km_gguf_free(out);
  return c;
}

const km_gguf_value *km_gguf_get(const km_gguf *g, const char *key) {
  for (uint32_t i = 0; i < g->n_kv; i++)
    if (g->kv[i].key.ptr && !strcmp(g->kv[i].key.ptr, key)) return &g->kv[i].value;
  return NULL;
}

const km_gguf_tensor *km_gguf_find_tensor(const km_gguf *g, const char *name) {
  size_t lo = 0, hi = g->n_tensors;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const km_gguf_tensor *t = &g->tensors[g->by_name[mid]];
    int r = strcmp(t->info.name, name);
    if (!r) return t;
    if (r < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

bool km_gguf_get_u64(const km_gguf *g, const char *key, uint64_t *out) {
  const km_gguf_value *v = km_gguf_get(g, key);
  if (!v) return false;
  switch (v->type) {
    case KM_GGUF_UINT8: case KM_GGUF_UINT16: case KM_GGUF_UINT32: case KM_GGUF_UINT64:
      *out = v->v.u;
      return true;
    case KM_GGUF_INT8: case KM_GGUF_INT16: case KM_GGUF_INT32: case KM_GGUF_INT64:
      if (v->v.i < 0) return false;
      *out = (uint64_t)v->v.i;
      return true;
    default: return false;
  }
}

bool km_gguf_get_f64(const km_gguf *g, const char *key, double *out) {
  const km_gguf_value *v = km_gguf_get(g, key);
  if (!v || (v->type != KM_GGUF_FLOAT32 && v->type != KM_GGUF_FLOAT64)) return false;
  *out = v->v.f;
  return true;
}

bool km_gguf_get_bool(const km_gguf *g, const char *key, bool *out) {
  const km_gguf_value *v = km_gguf_get(g, key);
  if (!v || v->type != KM_GGUF_BOOL) return false;
  *out = v->v.u != 0;
  return true;
}

const km_gguf_str *km_gguf_get_str(const km_gguf *g, const char *key) {
  const km_gguf_value *v = km_gguf_get(g, key);
  return v && v->type == KM_GGUF_STRING ? &v->v.s : NULL;
}

const km_gguf_value *km_gguf_get_array(const km_gguf *g, const char *key, km_gguf_type elem) {
  const km_gguf_value *v = km_gguf_get(g, key);
  return v && v->type == KM_GGUF_ARRAY && v->v.arr.type == elem ? v : NULL;
}

static uint64_t raw_elem(const km_gguf_value *a, uint64_t i) {
  const unsigned char *p = (const unsigned char *)a->v.arr.data + i * scalar_size[a->v.arr.type];
  uint64_t u = 0;
  for (int k = scalar_size[a->v.arr.type] - 1; k >= 0; k--) u = (u << 8) | p[k];
  return u;
}

int64_t km_gguf_array_i64(const km_gguf_value *a, uint64_t i) {
  uint64_t u = raw_elem(a, i);
  switch (a->v.arr.type) {
    case KM_GGUF_INT8: return (int8_t)u;
    case KM_GGUF_INT16: return (int16_t)u;
    case KM_GGUF_INT32: return (int32_t)u;
    case KM_GGUF_FLOAT32: case KM_GGUF_FLOAT64: return (int64_t)km_gguf_array_f64(a, i);
    default: return (int64_t)u;
  }
}

double km_gguf_array_f64(const km_gguf_value *a, uint64_t i) {
  uint64_t u = raw_elem(a, i);
  if (a->v.arr.type == KM_GGUF_FLOAT32) {
    uint32_t w = (uint32_t)u;
    float f;
    memcpy(&f, &w, 4);
    return f;
  }
  if (a->v.arr.type == KM_GGUF_FLOAT64) {
    double d;
    memcpy(&d, &u, 8);
    return d;
  }
  return (double)km_gguf_array_i64(a, i);
}
