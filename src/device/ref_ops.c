/* The reference math: the definition of every op's result, in plain C on
 * host addresses, f32 accumulation. The cpu backend runs it split by rows
 * across its workers; other backends are tested against it. */
/* The inner loops are written to vectorize; gcc does so at -O3 (its -O2
 * cost model leaves loops of unknown trip count scalar: 6x slower GEMM). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3")
#endif

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_internal.h"

/* ---- Conversions ---------------------------------------------------------- */

static inline float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}
static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

float kiln_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t kiln_f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1); /* round to nearest, ties to even */
  return (uint16_t)(u >> 16);
}

/* IEEE half precision, after Marat Dukhan's FP16 library: exact, with
 * subnormals, round to nearest even through f32 arithmetic. */
float kiln_f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16;
  uint32_t sign = w & 0x80000000u;
  uint32_t two_w = w + w;
  float normalized = bits_f32((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
  float denormalized = bits_f32((two_w >> 17) | (126u << 23)) - 0.5f;
  uint32_t r = sign | (two_w < (1u << 27) ? f32_bits(denormalized)
                                          : f32_bits(normalized));
  return bits_f32(r);
}

uint16_t kiln_f32_to_f16(float f) {
  float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
  uint32_t w = f32_bits(f);
  uint32_t shl1_w = w + w;
  uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  uint32_t bits = f32_bits(base);
  uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  uint32_t mantissa_bits = bits & 0x00000FFFu;
  uint32_t nonsign = exp_bits + mantissa_bits;
  return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

/* ---- Element access ------------------------------------------------------- */

#define PTR(addr) ((uint8_t *)(uintptr_t)(addr))

static inline float load(kiln_dtype t, const uint8_t *p) {
  uint16_t h;
  switch (t) {
    case KILN_DTYPE_F32: {
      float f;
      memcpy(&f, p, 4);
      return f;
    }
    case KILN_DTYPE_F16:
      memcpy(&h, p, 2);
      return kiln_f16_to_f32(h);
    case KILN_DTYPE_BF16:
      memcpy(&h, p, 2);
      return kiln_bf16_to_f32(h);
    case KILN_DTYPE_I32: {
      int32_t i;
      memcpy(&i, p, 4);
      return (float)i;
    }
    default: return 0;
  }
}

static inline void store(kiln_dtype t, uint8_t *p, float v) {
  uint16_t h;
  switch (t) {
    case KILN_DTYPE_F32: memcpy(p, &v, 4); break;
    case KILN_DTYPE_F16:
      h = kiln_f32_to_f16(v);
      memcpy(p, &h, 2);
      break;
    case KILN_DTYPE_BF16:
      h = kiln_f32_to_bf16(v);
      memcpy(p, &h, 2);
      break;
    default: break;
  }
}

static inline float *f32p(uint64_t addr) { return (float *)PTR(addr); }

/* Byte offset of the start of row i of a rank-2 (or row-view) tensor whose
 * row stride is `rs` elements. */
static inline uint64_t row_bytes_at(kiln_dtype t, int64_t rs, int64_t i) {
  if (t == KILN_DTYPE_Q8_0) return (uint64_t)(i * rs / 32) * 34;
  return (uint64_t)(i * rs) * kiln_dtype_size(t);
}

/* Decodes n elements of a contiguous row starting at p into out. */
static void decode_row(kiln_dtype t, const uint8_t *p, int64_t n, float *out) {
  switch (t) {
    case KILN_DTYPE_F32: memcpy(out, p, (size_t)n * 4); break;
    case KILN_DTYPE_Q8_0:
      for (int64_t blk = 0; blk < n / 32; blk++) {
        const uint8_t *q = p + blk * 34;
        uint16_t h;
        memcpy(&h, q, 2);
        float d = kiln_f16_to_f32(h);
        for (int j = 0; j < 32; j++)
          out[blk * 32 + j] = d * (float)(int8_t)q[2 + j];
      }
      break;
    default: {
      size_t es = kiln_dtype_size(t);
      for (int64_t j = 0; j < n; j++) out[j] = load(t, p + j * es);
    }
  }
}

/* Row stride (elements) of a tensor viewed as rows x last dimension. */
static inline int64_t row_stride(const kiln_dtensor *t) {
  return t->rank >= 2 ? t->stride[t->rank - 2] : 0;
}

static kiln_status oom(void) {
  return kiln_make_status(KILN_CODE_RESOURCE_EXHAUSTED,
                          "out of memory in the reference ops");
}

static inline int32_t index0(const kiln_dop *op, int64_t fallback) {
  if (!op->index.addr) return (int32_t)fallback;
  int32_t v;
  memcpy(&v, PTR(op->index.addr), 4);
  return v;
}

/* ---- GEMM / GEMV ---------------------------------------------------------- */

static kiln_status gemm(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *a = &op->a, *b = &op->b, *c = &op->c;
  bool ta = op->flags & KILN_OP_TRANS_A, tb = op->flags & KILN_OP_TRANS_B;
  int64_t N = c->shape[1], K = ta ? a->shape[0] : a->shape[1];
  int64_t lda = a->stride[0], ldb = b->stride[0], ldc = c->stride[0];
  kiln_dtype dt = a->dtype;
  size_t es = kiln_dtype_size(dt);
  enum { MB = 16, KB = 128 };
  bool direct = dt == KILN_DTYPE_F32 && !tb; /* rows of b used in place */
  float *acc = malloc((size_t)MB * N * sizeof(float));
  float *panel = direct ? NULL : malloc((size_t)KB * N * sizeof(float));
  if (!acc || (!direct && !panel)) {
    free(acc);
    free(panel);
    return oom();
  }
  const uint8_t *A = PTR(a->addr), *B = PTR(b->addr);
  for (int64_t m0 = r0; m0 < r1; m0 += MB) {
    int64_t mb = r1 - m0 < MB ? r1 - m0 : MB;
    memset(acc, 0, (size_t)mb * N * sizeof(float));
    for (int64_t k0 = 0; k0 < K; k0 += KB) {
      int64_t kb = K - k0 < KB ? K - k0 : KB;
      if (!direct) {
        for (int64_t kk = 0; kk < kb; kk++) {
          float *pr = panel + kk * N;
          int64_t k = k0 + kk;
          if (tb)
            for (int64_t n = 0; n < N; n++)
              pr[n] = load(dt, B + (n * ldb + k) * es);
          else
            decode_row(dt, B + k * ldb * es, N, pr);
        }
      }
      for (int64_t i = 0; i < mb; i++) {
        float *restrict ac = acc + i * N;
        int64_t m = m0 + i;
        for (int64_t kk = 0; kk < kb; kk++) {
          int64_t k = k0 + kk;
          float av = load(dt, A + (ta ? k * lda + m : m * lda + k) * es);
          const float *restrict pr =
              direct ? (const float *)(B + k * ldb * 4) : panel + kk * N;
          for (int64_t n = 0; n < N; n++) ac[n] += av * pr[n];
        }
      }
    }
    for (int64_t i = 0; i < mb; i++) {
      float *cr = f32p(c->addr) + (m0 + i) * ldc;
      const float *ac = acc + i * N;
      if (op->beta != 0)
        for (int64_t n = 0; n < N; n++)
          cr[n] = op->alpha * ac[n] + op->beta * cr[n];
      else
        for (int64_t n = 0; n < N; n++) cr[n] = op->alpha * ac[n];
    }
  }
  free(acc);
  free(panel);
  return KILN_OK;
}

/* Parallel over weight rows n: c[m, n] for every m. */
static kiln_status gemv(const kiln_dop *op, int64_t n0, int64_t n1) {
  const kiln_dtensor *w = &op->a, *x = &op->b, *y = &op->c;
  int64_t K = w->shape[1], M = op->rows;
  int64_t ldx = row_stride(x), ldy = row_stride(y);
  float *wr = malloc((size_t)K * sizeof(float));
  if (!wr) return oom();
  for (int64_t n = n0; n < n1; n++) {
    decode_row(w->dtype,
               PTR(w->addr) + row_bytes_at(w->dtype, w->stride[0], n), K, wr);
    for (int64_t m = 0; m < M; m++) {
      const float *restrict xr = f32p(x->addr) + m * ldx;
      float s = 0;
      for (int64_t k = 0; k < K; k++) s += xr[k] * wr[k];
      float *yp = f32p(y->addr) + m * ldy + n;
      *yp = op->beta != 0 ? op->alpha * s + op->beta * *yp : op->alpha * s;
    }
  }
  free(wr);
  return KILN_OK;
}

/* ---- Row-wise ops ---------------------------------------------------------- */

static float gelu(float x) {
  const float k = 0.7978845608028654f; /* sqrt(2 / pi) */
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static float silu(float x) { return x / (1.0f + expf(-x)); }

static kiln_status rowwise(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *a = &op->a, *b = &op->b, *c = &op->c;
  int64_t C = op->cols, lda = row_stride(a), ldb = row_stride(b),
          ldc = row_stride(c);
  if ((op->kind == KILN_OP_ADD || op->kind == KILN_OP_MUL) &&
      !kiln_dtensor_same_shape(a, b))
    ldb = 0; /* one row of b for every row of a */
  for (int64_t r = r0; r < r1; r++) {
    const float *x = f32p(a->addr) + r * lda;
    switch (op->kind) {
      case KILN_OP_ADD: {
        const float *y = f32p(b->addr) + r * ldb;
        float *z = f32p(c->addr) + r * ldc;
        for (int64_t j = 0; j < C; j++) z[j] = x[j] + y[j];
        break;
      }
      case KILN_OP_MUL: {
        const float *y = f32p(b->addr) + r * ldb;
        float *z = f32p(c->addr) + r * ldc;
        for (int64_t j = 0; j < C; j++) z[j] = x[j] * y[j];
        break;
      }
      case KILN_OP_SWIGLU: {
        const float *y = f32p(b->addr) + r * ldb;
        float *z = f32p(c->addr) + r * ldc;
        for (int64_t j = 0; j < C; j++) z[j] = silu(x[j]) * y[j];
        break;
      }
      case KILN_OP_SCALE: {
        float *z = f32p(b->addr) + r * ldb;
        for (int64_t j = 0; j < C; j++) z[j] = op->alpha * x[j];
        break;
      }
      case KILN_OP_SILU: {
        float *z = f32p(b->addr) + r * ldb;
        for (int64_t j = 0; j < C; j++) z[j] = silu(x[j]);
        break;
      }
      case KILN_OP_GELU: {
        float *z = f32p(b->addr) + r * ldb;
        for (int64_t j = 0; j < C; j++) z[j] = gelu(x[j]);
        break;
      }
      case KILN_OP_RMSNORM: {
        const float *w = f32p(b->addr);
        float *z = f32p(c->addr) + r * ldc;
        float ss = 0;
        for (int64_t j = 0; j < C; j++) ss += x[j] * x[j];
        float inv = 1.0f / sqrtf(ss / (float)C + op->eps);
        for (int64_t j = 0; j < C; j++) z[j] = x[j] * inv * w[j];
        break;
      }
      case KILN_OP_SOFTMAX: {
        float *z = f32p(b->addr) + r * ldb;
        int64_t n = C;
        if (op->index.addr) {
          int64_t per_t = a->rank >= 2 ? op->rows / a->shape[0] : op->rows;
          int64_t t = a->rank >= 2 ? r / per_t : 0;
          int64_t lim = (int64_t)index0(op, 0) + t + 1;
          n = lim < 0 ? 0 : lim > C ? C : lim;
        }
        float mx = -INFINITY;
        for (int64_t j = 0; j < n; j++)
          if (op->alpha * x[j] > mx) mx = op->alpha * x[j];
        float sum = 0;
        for (int64_t j = 0; j < n; j++) {
          z[j] = expf(op->alpha * x[j] - mx);
          sum += z[j];
        }
        for (int64_t j = 0; j < n; j++) z[j] /= sum;
        for (int64_t j = n; j < C; j++) z[j] = 0;
        break;
      }
      case KILN_OP_ARGMAX: {
        int64_t best = 0;
        for (int64_t j = 1; j < C; j++)
          if (x[j] > x[best]) best = j;
        int32_t v = (int32_t)best;
        memcpy(PTR(b->addr) + (uint64_t)(r * b->stride[0]) * 4, &v, 4);
        break;
      }
      default: break;
    }
  }
  return KILN_OK;
}

static kiln_status rope(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *a = &op->a, *b = &op->b;
  int64_t H = a->shape[1], D = a->shape[2], half = D / 2;
  int64_t lda = a->stride[1], ldb = b->stride[1];
  const float *inv = f32p(op->c.addr);
  int64_t pos0 = index0(op, op->pos);
  for (int64_t r = r0; r < r1; r++) {
    float p = (float)(pos0 + r / H);
    const float *x = f32p(a->addr) + r * lda;
    float *y = f32p(b->addr) + r * ldb;
    for (int64_t i = 0; i < half; i++) {
      float th = p * inv[i], cs = cosf(th), sn = sinf(th);
      float x1 = x[i], x2 = x[i + half];
      y[i] = x1 * cs - x2 * sn;
      y[i + half] = x2 * cs + x1 * sn;
    }
  }
  return KILN_OK;
}

/* ---- COPY / GATHER / ATTENTION ---------------------------------------------- */

/* Byte offset of a "line" (all indices but the last) of a tensor. */
static uint64_t line_offset(const kiln_dtensor *t, const int64_t *idx) {
  uint64_t off = 0;
  for (uint32_t k = 0; k + 1 < t->rank; k++) off += (uint64_t)(idx[k] * t->stride[k]);
  if (t->dtype == KILN_DTYPE_Q8_0) return off / 32 * 34;
  return off * kiln_dtype_size(t->dtype);
}

static void copy_line(const kiln_dtensor *a, const uint8_t *src,
                      const kiln_dtensor *b, uint8_t *dst, int64_t j0,
                      int64_t j1) {
  int64_t sa = a->stride[a->rank - 1], sb = b->stride[b->rank - 1];
  size_t ea = kiln_dtype_size(a->dtype), eb = kiln_dtype_size(b->dtype);
  if (a->dtype == b->dtype && sa == 1 && sb == 1) {
    memcpy(dst + j0 * eb, src + j0 * ea, (size_t)(j1 - j0) * ea);
    return;
  }
  if (a->dtype == b->dtype) { /* raw, bit-exact (NaN payloads, i32) */
    for (int64_t j = j0; j < j1; j++)
      memcpy(dst + j * sb * eb, src + j * sa * ea, ea);
    return;
  }
  if (a->dtype == KILN_DTYPE_Q8_0) {
    for (int64_t j = j0; j < j1; j++) {
      const uint8_t *q = src + (j / 32) * 34;
      uint16_t h;
      memcpy(&h, q, 2);
      store(b->dtype, dst + j * sb * eb,
            kiln_f16_to_f32(h) * (float)(int8_t)q[2 + j % 32]);
    }
    return;
  }
  for (int64_t j = j0; j < j1; j++)
    store(b->dtype, dst + j * sb * eb, load(a->dtype, src + j * sa * ea));
}

static kiln_status copy(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *a = &op->a, *b = &op->b;
  int64_t dst0 = 0;
  if (op->index.addr) {
    int64_t p = index0(op, 0);
    if (p < 0 || p > b->shape[0] - a->shape[0])
      return kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                              "COPY: rows %lld .. %lld are outside a capacity "
                              "of %lld",
                              (long long)p, (long long)(p + a->shape[0] - 1),
                              (long long)b->shape[0]);
    dst0 = p;
  }
  uint8_t *A = PTR(a->addr), *B = PTR(b->addr);
  if (a->rank == 1) {
    int64_t ia[1] = {0}, ib[1] = {0};
    copy_line(a, A + line_offset(a, ia), b,
              B + line_offset(b, ib) +
                  (uint64_t)(dst0 * b->stride[0]) * kiln_dtype_size(b->dtype),
              r0, r1);
    return KILN_OK;
  }
  int64_t last = a->shape[a->rank - 1];
  for (int64_t r = r0; r < r1; r++) {
    int64_t idx[KILN_MAX_RANK] = {r, 0, 0, 0}, jdx[KILN_MAX_RANK];
    for (;;) {
      memcpy(jdx, idx, sizeof idx);
      jdx[0] = r + dst0;
      copy_line(a, A + line_offset(a, idx), b, B + line_offset(b, jdx), 0,
                last);
      /* Next line over dims 1 .. rank-2. */
      int k = (int)a->rank - 2;
      for (; k >= 1; k--) {
        if (++idx[k] < a->shape[k]) break;
        idx[k] = 0;
      }
      if (k < 1) break;
    }
  }
  return KILN_OK;
}

static kiln_status gather(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *tab = &op->a, *ids = &op->b, *out = &op->c;
  int64_t V = tab->shape[0], D = tab->shape[1];
  kiln_status err = KILN_OK;
  for (int64_t t = r0; t < r1; t++) {
    int32_t id;
    memcpy(&id, PTR(ids->addr) + (uint64_t)(t * ids->stride[0]) * 4, 4);
    if (id < 0 || id >= V) {
      if (!err)
        err = kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                               "GATHER: id %d at position %lld is outside a "
                               "table of %lld rows",
                               id, (long long)t, (long long)V);
      continue;
    }
    decode_row(tab->dtype,
               PTR(tab->addr) + row_bytes_at(tab->dtype, tab->stride[0], id),
               D, f32p(out->addr) + t * out->stride[0]);
  }
  return err;
}

static kiln_status attention(const kiln_dop *op, int64_t r0, int64_t r1) {
  const kiln_dtensor *q = &op->a, *k = &op->b, *v = &op->c, *o = &op->d;
  int64_t Hq = q->shape[1], D = q->shape[2], S = k->shape[0];
  int64_t group = Hq / k->shape[1];
  int64_t pos0 = index0(op, op->pos);
  size_t es = kiln_dtype_size(k->dtype);
  float *acc = malloc((size_t)D * 2 * sizeof(float));
  if (!acc) return oom();
  float *kr = acc + D;
  kiln_status err = KILN_OK;
  for (int64_t r = r0; r < r1; r++) {
    int64_t t = r / Hq, h = r % Hq, kh = h / group, pos = pos0 + t;
    if (pos < 0 || pos >= S) {
      if (!err)
        err = kiln_make_status(KILN_CODE_OUT_OF_RANGE,
                               "ATTENTION: position %lld is outside a cache "
                               "of %lld rows",
                               (long long)pos, (long long)S);
      continue;
    }
    const float *qr = f32p(q->addr) + t * q->stride[0] + h * q->stride[1];
    float mx = -INFINITY, sum = 0;
    memset(acc, 0, (size_t)D * sizeof(float));
    for (int64_t j = 0; j <= pos; j++) {
      const uint8_t *kp = PTR(k->addr) + (uint64_t)(j * k->stride[0] + kh * k->stride[1]) * es;
      const uint8_t *vp = PTR(v->addr) + (uint64_t)(j * v->stride[0] + kh * v->stride[1]) * es;
      decode_row(k->dtype, kp, D, kr);
      float s = 0;
      for (int64_t d = 0; d < D; d++) s += qr[d] * kr[d];
      s *= op->alpha;
      float nm = s > mx ? s : mx;
      float corr = expf(mx - nm), p = expf(s - nm);
      sum = sum * corr + p;
      decode_row(v->dtype, vp, D, kr);
      for (int64_t d = 0; d < D; d++) acc[d] = acc[d] * corr + p * kr[d];
      mx = nm;
    }
    float *orow = f32p(o->addr) + t * o->stride[0] + h * o->stride[1];
    for (int64_t d = 0; d < D; d++) orow[d] = acc[d] / sum;
  }
  free(acc);
  return err;
}

/* ---- Entry points ------------------------------------------------------------ */

int64_t kiln_ref_parallel_rows(const kiln_dop *op) {
  switch (op->kind) {
    case KILN_OP_NOP: return 1;
    case KILN_OP_GEMV: return op->cols; /* weight rows */
    case KILN_OP_COPY: return op->a.shape[0];
    default: return op->rows;
  }
}

kiln_status kiln_ref_run(const kiln_dop *op, int64_t row_begin,
                         int64_t row_end) {
  if (row_begin >= row_end) return KILN_OK;
  switch (op->kind) {
    case KILN_OP_NOP: return KILN_OK;
    case KILN_OP_GEMM: return gemm(op, row_begin, row_end);
    case KILN_OP_GEMV: return gemv(op, row_begin, row_end);
    case KILN_OP_ROPE: return rope(op, row_begin, row_end);
    case KILN_OP_COPY: return copy(op, row_begin, row_end);
    case KILN_OP_GATHER: return gather(op, row_begin, row_end);
    case KILN_OP_ATTENTION: return attention(op, row_begin, row_end);
    case KILN_OP_ADD:
    case KILN_OP_MUL:
    case KILN_OP_SCALE:
    case KILN_OP_RMSNORM:
    case KILN_OP_SOFTMAX:
    case KILN_OP_SILU:
    case KILN_OP_GELU:
    case KILN_OP_SWIGLU:
    case KILN_OP_ARGMAX: return rowwise(op, row_begin, row_end);
    default:
      return kiln_make_status(KILN_CODE_INVALID_ARGUMENT,
                              "reference: unknown op kind %d", (int)op->kind);
  }
}
