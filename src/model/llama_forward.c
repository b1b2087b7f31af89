/* The Llama forward pass as kiln_gpu ops (contract in llama_forward.h).
 * Read it like llama2.c's forward(): config, weights as views, run state,
 * then one function that emits a step top to bottom, shapes in comments.
 * B = max_batch rows, T = rows in this step (T <= B), S = max_seq,
 * H = hidden, I = intermediate, Hq/Hkv = query/kv heads, D = head_dim,
 * V = vocab, L = layers. */
#include "model/llama_forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Weights ------------------------------------------------------------ */

static bool gpu_dtype(km_dtype t, uint32_t *out) {
  switch (t) {
    case KM_DTYPE_F32: *out = KILN_GPU_F32; return true;
    case KM_DTYPE_F16: *out = KILN_GPU_F16; return true;
    case KM_DTYPE_BF16: *out = KILN_GPU_BF16; return true;
    case KM_DTYPE_Q8_0: *out = KILN_GPU_Q8_0; return true;
    default: return false;
  }
}

static km_code weight_tensor(const km_weight_ref *r, const uint32_t *file_mem,
                             uint32_t n_files, kiln_gpu_tensor *out,
                             km_error *err) {
  memset(out, 0, sizeof *out);
  if (!r->t) return km_fail(err, KM_ERR_NOT_FOUND, "a weight is missing");
  if (r->file >= n_files)
    return km_fail(err, KM_ERR_ARGUMENT, "%s: file %u of %u", r->t->name,
                   r->file, n_files);
  uint32_t dt;
  if (!gpu_dtype(r->t->dtype, &dt))
    return km_fail(err, KM_ERR_UNSUPPORTED, "%s: dtype %s is not computable",
                   r->t->name, km_dtype_name(r->t->dtype));
  if (r->t->ndim < 1 || r->t->ndim > KILN_GPU_MAX_RANK)
    return km_fail(err, KM_ERR_SHAPE, "%s: rank %d", r->t->name, r->t->ndim);
  out->mem = file_mem[r->file];
  out->dtype = dt;
  out->rank = (uint32_t)r->t->ndim;
  out->offset = r->t->offset;
  for (int k = 0; k < r->t->ndim; k++) out->shape[k] = r->t->shape[k];
  return KM_OK;
}

km_code lf_weights_from_refs(const km_llama_config *c, const km_llama_weights *w,
                             const uint32_t *file_mem, uint32_t n_files,
                             lf_weights *out, km_error *err) {
  memset(out, 0, sizeof *out);
  out->layers = calloc((size_t)c->n_layers, sizeof *out->layers);
  if (!out->layers) return km_fail(err, KM_ERR_NOMEM, "out of memory");
  km_code rc;
  if ((rc = weight_tensor(&w->tok_embd, file_mem, n_files, &out->tok_embd, err)) ||
      (rc = weight_tensor(&w->output_norm, file_mem, n_files, &out->output_norm,
                          err)) ||
      (rc = weight_tensor(&w->output, file_mem, n_files, &out->output, err)))
    goto fail;
  for (int l = 0; l < c->n_layers; l++) {
    lf_layer *ly = &out->layers[l];
    kiln_gpu_tensor *dst[KM_W_PER_LAYER] = {
        &ly->attn_norm, &ly->wq, &ly->wk,     &ly->wv,    &ly->wo,
        &ly->ffn_norm,  &ly->w_gate, &ly->w_up, &ly->w_down};
    for (int k = 0; k < KM_W_PER_LAYER; k++) {
      const km_weight_ref *r =
          km_llama_layer_weight(w, l, (km_weight_kind)(KM_W_FIRST_LAYER + k));
      if ((rc = weight_tensor(r, file_mem, n_files, dst[k], err))) goto fail;
    }
  }
  return KM_OK;
fail:
  lf_weights_free(out);
  return rc;
}

void lf_weights_free(lf_weights *w) {
  free(w->layers);
  w->layers = NULL;
}

/* ---- Run state ----------------------------------------------------------- */

/* A buffer in memory 0: its offset (for descriptors) and host pointer. */
typedef struct lf_buf {
  uint64_t off;
  void *ptr;
} lf_buf;

/* The activations of one step: T rows of each (T <= rows). */
typedef struct lf_acts {
  int64_t rows;
  lf_buf x, xb, q, k, v, qp, kp, att, hb, hb2, logits, next;
} lf_acts;

struct lf_state {
  km_llama_config c;
  lf_weights w;          /* descriptors copied; layers owned by the caller */
  lf_layer *layers;      /* copy of the caller's array (norms may move) */
  lf_sink sink;
  lf_options o;
  bool permuted;         /* GGUF Q/K rows: un-permute after projection */
  void *block;           /* the one allocation in memory 0 */
  uint64_t block_off, block_bytes;
  /* Prefill activations (max_batch rows) and decode activations (one row,
   * packed without gaps: q, k and v of a token lie back to back). */
  lf_acts pre, dec;
  lf_buf norms, inv_freq, tok, pos;
  /* KV cache, [S, L, 2, Hkv, D]: position p of every layer's k and v is
   * one contiguous row (one COPY appends a decode step's k and v); layer
   * l's k cache is the strided view [S, Hkv, D] at (2l) * Hkv * D. */
  lf_buf kv;
  /* The block's first device_bytes (activations, norms, KV cache) are
   * placed DEVICE: only ops use them, and a sync copies none of them back.
   * The rest (what the host writes: tokens, positions, RoPE frequencies;
   * and reads: logits, argmax) is RESIDENT. */
  uint64_t device_bytes;
  uint64_t kv_row_elems;  /* L * 2 * Hkv * D */
  int32_t program;       /* decode program handle, 0: none */
  /* The chained decode program (o.chain steps, 0: none): step i reads its
   * position from chain_pos[i], its token from tok (i = 0) or
   * chain_next[i - 1], and writes its argmax to chain_next[i]. */
  int32_t chain_program;
  lf_buf chain_pos, chain_next;
  int32_t n_ops;         /* ops emitted in the current recording */
  int32_t n_pos;
  char *msg;             /* current call's message buffer */
  size_t msglen;
};

static int32_t sink_fail(lf_state *s, int32_t rc, const char *what) {
  if (s->msg && s->msglen) {
    char e[400] = "";
    if (s->sink.last_error) s->sink.last_error(s->sink.ctx, e, sizeof e);
    snprintf(s->msg, s->msglen, "%s: %s", what, e[0] ? e : "failed");
  }
  return rc;
}

/* ---- Descriptors ---------------------------------------------------------- */

static kiln_gpu_tensor own(const lf_buf *b, uint64_t byte_off, uint32_t dt,
                           uint32_t rank, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3) {
  kiln_gpu_tensor t = {0};
  t.mem = 0;
  t.dtype = dt;
  t.rank = rank;
  t.offset = b->off + byte_off;
  int64_t d[4] = {d0, d1, d2, d3};
  for (uint32_t k = 0; k < rank; k++) t.shape[k] = d[k];
  return t;
}
#define F32_2(b, off, r, c) own(&(b), (off), KILN_GPU_F32, 2, (r), (c), 0, 0)
#define F32_3(b, off, x, y, z) own(&(b), (off), KILN_GPU_F32, 3, (x), (y), (z), 0)

static int32_t emit(lf_state *s, const kiln_gpu_op *op) {
  int32_t rc = s->sink.submit(s->sink.ctx, op);
  if (rc < 0) return sink_fail(s, rc, "submit");
  s->n_ops++;
  return 0;
}

static kiln_gpu_op mk(uint32_t kind) {
  kiln_gpu_op op;
  memset(&op, 0, sizeof op);
  op.kind = kind;
  op.alpha = 1.0f;
  return op;
}

#define EMIT(op)                          \
  do {                                    \
    int32_t rc_ = emit(s, &(op));         \
    if (rc_) return rc_;                  \
  } while (0)

/* ---- The step --------------------------------------------------------------
 * Rows 0..T-1 of the buffers hold tokens at positions pos[0] .. pos[0]+T-1
 * (pos read on the device: a recorded step replays at any position).
 * logit_rows: 1 = logits of the last row only, T = of every row.
 * io: where a step of a chained decode program takes its token ids and
 * position and puts its argmax (NULL: tok, pos and A->next). */
typedef struct lf_io {
  kiln_gpu_tensor tok, pos, next;
} lf_io;

static int32_t forward(lf_state *s, const lf_acts *A, int64_t T,
                       int64_t logit_rows, const lf_io *io) {
  const km_llama_config *c = &s->c;
  const int64_t H = c->hidden, I = c->intermediate, Hq = c->n_heads,
                Hkv = c->n_kv_heads, D = c->head_dim, V = c->vocab,
                S = s->o.max_seq;
  const uint32_t kvt = s->o.kv_dtype;
  const kiln_gpu_tensor pos =
      io ? io->pos : own(&s->pos, 0, KILN_GPU_I32, 1, 1, 0, 0, 0);
  kiln_gpu_op op;

  /* x[T,H] = tok_embd[tok[t]] */
  op = mk(KILN_GPU_OP_GATHER);
  op.a = s->w.tok_embd;
  op.b = io ? io->tok : own(&s->tok, 0, KILN_GPU_I32, 1, T, 0, 0, 0);
  op.c = F32_2(A->x, 0, T, H);
  EMIT(op);

  for (int l = 0; l < c->n_layers; l++) {
    const lf_layer *w = &s->layers[l];

    /* xb[T,H] = rmsnorm(x) * attn_norm */
    op = mk(KILN_GPU_OP_RMSNORM);
    op.a = F32_2(A->x, 0, T, H);
    op.b = w->attn_norm;
    op.c = F32_2(A->xb, 0, T, H);
    op.eps = c->rms_eps;
    EMIT(op);

    /* q[T,Hq*D] = xb @ wq^T; k, v[T,Hkv*D] likewise (GGUF: into qp, kp) */
    const lf_buf *qdst = s->permuted ? &A->qp : &A->q;
    const lf_buf *kdst = s->permuted ? &A->kp : &A->k;
    op = mk(KILN_GPU_OP_GEMV);
    op.a = w->wq;
    op.b = F32_2(A->xb, 0, T, H);
    op.c = F32_2(*qdst, 0, T, Hq * D);
    EMIT(op);
    op.a = w->wk;
    op.c = F32_2(*kdst, 0, T, Hkv * D);
    EMIT(op);
    op.a = w->wv;
    op.c = F32_2(A->v, 0, T, Hkv * D);
    EMIT(op);

    if (s->permuted) {
      /* q[t,h,j,i] = qp[t,h,2i+j]: GGUF row order -> rotate-half order */
      op = mk(KILN_GPU_OP_COPY);
      op.a = own(&A->qp, 0, KILN_GPU_F32, 4, T, Hq, 2, D / 2);
      op.a.stride[0] = Hq * D, op.a.stride[1] = D, op.a.stride[2] = 1,
      op.a.stride[3] = 2;
      op.b = own(&A->q, 0, KILN_GPU_F32, 4, T, Hq, 2, D / 2);
      EMIT(op);
      op.a = own(&A->kp, 0, KILN_GPU_F32, 4, T, Hkv, 2, D / 2);
      op.a.stride[0] = Hkv * D, op.a.stride[1] = D, op.a.stride[2] = 1,
      op.a.stride[3] = 2;
      op.b = own(&A->k, 0, KILN_GPU_F32, 4, T, Hkv, 2, D / 2);
      EMIT(op);
    }

    /* One token's q, k and v lie back to back (take_acts packs them), so a
     * decode step rotates q and k with one op and appends k and v with
     * one: two launches fewer per layer. */
    const bool packed = T == 1 && A->k.off == A->q.off + (uint64_t)(Hq * D) * 4 &&
                        A->v.off == A->k.off + (uint64_t)(Hkv * D) * 4;

    /* q[T,Hq,D], k[T,Hkv,D] rotated in place at positions pos..pos+T-1 */
    op = mk(KILN_GPU_OP_ROPE);
    op.a = op.b = F32_3(A->q, 0, T, packed ? Hq + Hkv : Hq, D);
    op.c = own(&s->inv_freq, 0, KILN_GPU_F32, 1, D / 2, 0, 0, 0);
    op.index = pos;
    EMIT(op);
    if (!packed) {
      op.a = op.b = F32_3(A->k, 0, T, Hkv, D);
      EMIT(op);
    }

    /* kcache[l][pos..pos+T-1] = k; vcache likewise   [S,Hkv,D] views */
    const uint64_t kv_es = kvt == KILN_GPU_F32 ? 4 : 2;
    kiln_gpu_tensor kcache = own(&s->kv, (uint64_t)(2 * l) * Hkv * D * kv_es,
                                 kvt, 3, S, Hkv, D, 0);
    kcache.stride[0] = (int64_t)s->kv_row_elems, kcache.stride[1] = D,
    kcache.stride[2] = 1;
    kiln_gpu_tensor vcache = kcache;
    vcache.offset += (uint64_t)Hkv * D * kv_es;
    op = mk(KILN_GPU_OP_COPY);
    op.index = pos;
    if (packed) {   /* [1, 2*Hkv, D]: k then v, as in a cache row */
      op.a = F32_3(A->k, 0, 1, 2 * Hkv, D);
      op.b = kcache;
      op.b.shape[1] = 2 * Hkv;
      EMIT(op);
    } else {
      op.a = F32_3(A->k, 0, T, Hkv, D);
      op.b = kcache;
      EMIT(op);
      op.a = F32_3(A->v, 0, T, Hkv, D);
      op.b = vcache;
      EMIT(op);
    }

    /* att[T,Hq,D] = causal softmax(q k^T / sqrt(D)) v over the cache */
    op = mk(KILN_GPU_OP_ATTENTION);
    op.a = F32_3(A->q, 0, T, Hq, D);
    op.b = kcache;
    op.c = vcache;
    op.d = F32_3(A->att, 0, T, Hq, D);
    op.alpha = 1.0f / sqrtf((float)D);
    op.index = pos;
    EMIT(op);

    /* x[T,H] += att[T,Hq*D] @ wo^T */
    op = mk(KILN_GPU_OP_GEMV);
    op.a = w->wo;
    op.b = F32_2(A->att, 0, T, Hq * D);
    op.c = F32_2(A->x, 0, T, H);
    op.beta = 1.0f;
    EMIT(op);

    /* xb[T,H] = rmsnorm(x) * ffn_norm */
    op = mk(KILN_GPU_OP_RMSNORM);
    op.a = F32_2(A->x, 0, T, H);
    op.b = w->ffn_norm;
    op.c = F32_2(A->xb, 0, T, H);
    op.eps = c->rms_eps;
    EMIT(op);

    /* hb[T,I] = xb @ gate^T, hb2[T,I] = xb @ up^T, hb = silu(hb) * hb2 */
    op = mk(KILN_GPU_OP_GEMV);
    op.a = w->w_gate;
    op.b = F32_2(A->xb, 0, T, H);
    op.c = F32_2(A->hb, 0, T, I);
    EMIT(op);
    op.a = w->w_up;
    op.c = F32_2(A->hb2, 0, T, I);
    EMIT(op);
    op = mk(KILN_GPU_OP_SWIGLU);
    op.a = F32_2(A->hb, 0, T, I);
    op.b = F32_2(A->hb2, 0, T, I);
    op.c = F32_2(A->hb, 0, T, I);
    EMIT(op);

    /* x[T,H] += hb[T,I] @ down^T */
    op = mk(KILN_GPU_OP_GEMV);
    op.a = w->w_down;
    op.b = F32_2(A->hb, 0, T, I);
    op.c = F32_2(A->x, 0, T, H);
    op.beta = 1.0f;
    EMIT(op);
  }

  /* xb[R,H] = rmsnorm(x[rows T-R..T-1]) * output_norm, R = logit_rows */
  const uint64_t first = (uint64_t)(T - logit_rows) * (uint64_t)H * 4;
  op = mk(KILN_GPU_OP_RMSNORM);
  op.a = F32_2(A->x, first, logit_rows, H);
  op.b = s->w.output_norm;
  op.c = F32_2(A->xb, 0, logit_rows, H);
  op.eps = c->rms_eps;
  EMIT(op);

  /* logits[R,V] = xb @ output^T */
  op = mk(KILN_GPU_OP_GEMV);
  op.a = s->w.output;
  op.b = F32_2(A->xb, 0, logit_rows, H);
  op.c = F32_2(A->logits, 0, logit_rows, V);
  EMIT(op);

  /* next = argmax of the last row of logits */
  op = mk(KILN_GPU_OP_ARGMAX);
  op.a = F32_2(A->logits, (uint64_t)(logit_rows - 1) * (uint64_t)V * 4, 1, V);
  op.b = io ? io->next : own(&A->next, 0, KILN_GPU_I32, 1, 1, 0, 0, 0);
  EMIT(op);
  return 0;
}

/* ---- Create / free --------------------------------------------------------- */

/* Steps of the chained decode program (0: none). */
static int32_t chain_steps(const lf_state *s) {
  if (!s->o.argmax_only || s->o.no_program || s->o.chain <= 1) return 0;
  return s->o.chain < LF_MAX_CHAIN ? s->o.chain : LF_MAX_CHAIN;
}

/* Records a decode program into *out: k = 0, the one step lf_decode
 * replays (token, position and argmax in tok, pos, dec.next); k > 0, the
 * chain lf_decode_chain replays (k steps, each one's token the argmax of
 * the step before). */
static int32_t record_decode(lf_state *s, int32_t k, int32_t *out) {
  int32_t rc = s->sink.program_begin(s->sink.ctx);
  if (rc < 0) return sink_fail(s, rc, "program_begin");
  s->n_ops = 0;
  if (k == 0) rc = forward(s, &s->dec, 1, 1, NULL);
  for (int32_t i = 0; i < k && !rc; i++) {
    lf_io io;
    io.tok = i ? own(&s->chain_next, (uint64_t)(i - 1) * 4, KILN_GPU_I32, 1, 1, 0, 0, 0)
               : own(&s->tok, 0, KILN_GPU_I32, 1, 1, 0, 0, 0);
    io.pos = own(&s->chain_pos, (uint64_t)i * 4, KILN_GPU_I32, 1, 1, 0, 0, 0);
    io.next = own(&s->chain_next, (uint64_t)i * 4, KILN_GPU_I32, 1, 1, 0, 0, 0);
    rc = forward(s, &s->dec, 1, 1, &io);
  }
  const int32_t h = s->sink.program_end(s->sink.ctx);
  if (rc || h < 0) {
    if (!rc) rc = sink_fail(s, h, "program_end");
    if (h > 0) s->sink.program_free(s->sink.ctx, h);
    return rc;
  }
  *out = h;
  return 0;
}

static uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

/* Lays out buffers in one block: first pass sizes, second pass pointers. */
typedef struct layout {
  uint64_t at;
} layout;

static void take(layout *L, lf_buf *b, uint64_t bytes, uint64_t align) {
  L->at = align_up(L->at, align);
  b->off = L->at; /* relative for now */
  L->at += bytes;
}

/* One activation set of `rows` rows, without its logits and argmax.
 * Packed (16-byte alignment only): a one-row set's q, k and v lie back to
 * back, so one ROPE rotates q and k and one COPY appends k and v. */
static void take_acts(layout *L, lf_acts *a, const km_llama_config *c,
                      uint64_t rows, bool permuted) {
  const uint64_t H = (uint64_t)c->hidden, I = (uint64_t)c->intermediate,
                 Q = (uint64_t)c->n_heads * (uint64_t)c->head_dim,
                 K = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
  a->rows = (int64_t)rows;
  L->at = align_up(L->at, 256);
  take(L, &a->x, rows * H * 4, 16);
  take(L, &a->xb, rows * H * 4, 16);
  take(L, &a->q, rows * Q * 4, 16);
  take(L, &a->k, rows * K * 4, 16);
  take(L, &a->v, rows * K * 4, 16);
  take(L, &a->qp, permuted ? rows * Q * 4 : 0, 16);
  take(L, &a->kp, permuted ? rows * K * 4 : 0, 16);
  take(L, &a->att, rows * Q * 4, 16);
  take(L, &a->hb, rows * I * 4, 16);
  take(L, &a->hb2, rows * I * 4, 16);
}

static void fix_acts(lf_acts *a, uint8_t *block, uint64_t block_off) {
  lf_buf *b[] = {&a->x,  &a->xb,  &a->q,  &a->k,   &a->v,      &a->qp,
                 &a->kp, &a->att, &a->hb, &a->hb2, &a->logits, &a->next};
  for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
    b[i]->ptr = block + b[i]->off;
    b[i]->off += block_off;
  }
}

static bool norm_is_f32(const kiln_gpu_tensor *t) {
  return t->dtype == KILN_GPU_F32 && t->rank == 1 && t->offset % 4 == 0;
}

int32_t lf_create(const km_llama_config *c, const lf_weights *w,
                  const float *rope_freqs, const lf_options *o,
                  const lf_sink *sink, lf_state **out, char *msg,
                  size_t msglen) {
  *out = NULL;
  lf_state *s = calloc(1, sizeof *s);
  if (!s) {
    snprintf(msg, msglen, "out of memory");
    return KILN_GPU_E_RESOURCE;
  }
  s->c = *c;
  s->w = *w;
  s->sink = *sink;
  s->o = *o;
  s->msg = msg;
  s->msglen = msglen;
  if (s->o.max_batch <= 0) s->o.max_batch = 128;
  if (s->o.max_seq <= 0 || s->o.max_seq > c->max_pos) s->o.max_seq = c->max_pos;
  if (s->o.max_batch > s->o.max_seq) s->o.max_batch = s->o.max_seq;
  if (s->o.kv_dtype != KILN_GPU_F16 && s->o.kv_dtype != KILN_GPU_BF16)
    s->o.kv_dtype = KILN_GPU_F32;
  s->permuted = c->layout == KM_LAYOUT_GGUF;
  s->layers = malloc((size_t)c->n_layers * sizeof *s->layers);
  if (!s->layers) {
    free(s);
    snprintf(msg, msglen, "out of memory");
    return KILN_GPU_E_RESOURCE;
  }
  memcpy(s->layers, w->layers, (size_t)c->n_layers * sizeof *s->layers);

  const uint64_t B = (uint64_t)s->o.max_batch, H = (uint64_t)c->hidden,
                 Hkv = (uint64_t)c->n_kv_heads, D = (uint64_t)c->head_dim,
                 S = (uint64_t)s->o.max_seq, L = (uint64_t)c->n_layers;
  const uint64_t kv_es = s->o.kv_dtype == KILN_GPU_F32 ? 4 : 2;
  s->kv_row_elems = L * 2 * Hkv * D;
  const uint64_t V4 = (uint64_t)c->vocab * 4;
  layout lay = {0};
  /* DEVICE: what only the ops use. */
  take_acts(&lay, &s->pre, c, B, s->permuted);
  take_acts(&lay, &s->dec, c, 1, s->permuted);
  take(&lay, &s->norms, (2 * L + 1) * H * 4, 256);
  take(&lay, &s->kv, S * s->kv_row_elems * kv_es, 256);
  if (s->o.argmax_only) take(&lay, &s->dec.logits, V4, 256);
  /* 64 KiB: whole guest pages, and whole host pages on any host. */
  s->device_bytes = align_up(lay.at, 65536);
  lay.at = s->device_bytes;
  /* RESIDENT: what the host writes or reads. */
  take(&lay, &s->inv_freq, D / 2 * 4, 256);
  take(&lay, &s->pos, 4, 256); /* pos and tok: one page the host writes */
  take(&lay, &s->tok, B * 4, 16);
  take(&lay, &s->pre.logits, (s->o.all_logits ? B : 1) * V4, 256);
  take(&lay, &s->pre.next, 4, 16);
  if (!s->o.argmax_only) take(&lay, &s->dec.logits, V4, 256);
  take(&lay, &s->dec.next, 4, 16);
  const int32_t K = chain_steps(s);
  take(&lay, &s->chain_pos, (uint64_t)K * 4, 16);
  take(&lay, &s->chain_next, (uint64_t)K * 4, 16);
  s->block_bytes = align_up(lay.at, 65536);
  if (s->block_bytes > 0xF0000000ull) {
    snprintf(msg, msglen,
             "the run state needs %llu MiB, more than a 32-bit guest memory "
             "holds (lower --max-seq or --batch)",
             (unsigned long long)(s->block_bytes >> 20));
    lf_free(s);
    return KILN_GPU_E_RESOURCE;
  }
  s->block = sink->alloc(sink->ctx, s->block_bytes, &s->block_off);
  if (!s->block) {
    snprintf(msg, msglen, "cannot allocate %llu MiB of run state",
             (unsigned long long)(s->block_bytes >> 20));
    lf_free(s);
    return KILN_GPU_E_RESOURCE;
  }
  fix_acts(&s->pre, s->block, s->block_off);
  fix_acts(&s->dec, s->block, s->block_off);
  lf_buf *bufs[] = {&s->norms,     &s->inv_freq,  &s->tok, &s->pos,
                    &s->chain_pos, &s->chain_next, &s->kv};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
    bufs[i]->ptr = (uint8_t *)s->block + bufs[i]->off;
    bufs[i]->off += s->block_off;
  }

  /* RoPE inverse frequencies, computed as transformers does. */
  km_error kerr;
  if (km_llama_rope_inv_freq(c, rope_freqs, (float *)s->inv_freq.ptr, &kerr)) {
    snprintf(msg, msglen, "rope: %s", kerr.message);
    lf_free(s);
    return KILN_GPU_E_INVALID;
  }

  int32_t rc = sink->place(sink->ctx, 0, s->block_off, s->device_bytes,
                           KILN_GPU_PLACEMENT_DEVICE);
  if (rc >= 0)
    rc = sink->place(sink->ctx, 0, s->block_off + s->device_bytes,
                     s->block_bytes - s->device_bytes,
                     KILN_GPU_PLACEMENT_RESIDENT);
  if (rc < 0) {
    sink_fail(s, rc, "placing the run state");
    lf_free(s);
    return rc;
  }

  /* Norm weights the ops cannot read as they are (bf16, f16) become f32
   * copies in the run state, converted on the device. */
  for (int i = 0; i < 2 * c->n_layers + 1; i++) {
    kiln_gpu_tensor *t = i == 0       ? &s->w.output_norm
                         : i % 2 == 1 ? &s->layers[(i - 1) / 2].attn_norm
                                      : &s->layers[(i - 1) / 2].ffn_norm;
    if (norm_is_f32(t)) continue;
    kiln_gpu_tensor dst =
        own(&s->norms, (uint64_t)i * H * 4, KILN_GPU_F32, 1, (int64_t)H, 0, 0, 0);
    kiln_gpu_op op = mk(KILN_GPU_OP_COPY);
    op.a = *t;
    op.b = dst;
    if ((rc = emit(s, &op))) {
      lf_free(s);
      return rc;
    }
    *t = dst;
  }
  if ((rc = sink->sync(sink->ctx)) < 0) {
    sink_fail(s, rc, "converting norm weights");
    lf_free(s);
    return rc;
  }

  if (!s->o.no_program) {
    if ((rc = record_decode(s, 0, &s->program)) != 0 ||
        (K > 1 && (rc = record_decode(s, K, &s->chain_program)) != 0)) {
      lf_free(s);
      return rc;
    }
  }
  s->msg = NULL;
  *out = s;
  return 0;
}

void lf_free(lf_state *s) {
  if (!s) return;
  if (s->program) s->sink.program_free(s->sink.ctx, s->program);
  if (s->chain_program) s->sink.program_free(s->sink.ctx, s->chain_program);
  if (s->block) {
    /* Give the range back to MAPPED so the device forgets it before the
     * bytes are reused by the allocator. */
    s->sink.place(s->sink.ctx, 0, s->block_off, s->block_bytes,
                  KILN_GPU_PLACEMENT_MAPPED);
    s->sink.free(s->sink.ctx, s->block);
  }
  free(s->layers);
  free(s);
}

int32_t lf_position(const lf_state *s) { return s->n_pos; }
void lf_reset(lf_state *s) { s->n_pos = 0; }

static int32_t check_room(lf_state *s, int32_t n) {
  if (n < 0 || s->n_pos + (int64_t)n > s->o.max_seq) {
    snprintf(s->msg, s->msglen,
             "the sequence would reach %lld tokens; the cache holds %d",
             (long long)s->n_pos + n, s->o.max_seq);
    return KILN_GPU_E_RANGE;
  }
  return 0;
}

int32_t lf_prefill(lf_state *s, const int32_t *ids, int32_t n,
                   const float **logits, char *msg, size_t msglen) {
  s->msg = msg;
  s->msglen = msglen;
  int32_t rc = check_room(s, n);
  if (rc) return rc;
  if (n == 0) {
    snprintf(msg, msglen, "prefill: no tokens");
    return KILN_GPU_E_INVALID;
  }
  for (int32_t done = 0; done < n;) {
    int32_t T = n - done < s->o.max_batch ? n - done : s->o.max_batch;
    memcpy(s->tok.ptr, ids + done, (size_t)T * 4);
    *(int32_t *)s->pos.ptr = s->n_pos;
    bool last = done + T == n;
    int64_t rows = last && s->o.all_logits && done == 0 ? T : 1;
    if ((rc = forward(s, &s->pre, T, rows, NULL))) return rc;
    if ((rc = s->sink.sync(s->sink.ctx)) < 0) return sink_fail(s, rc, "sync");
    s->n_pos += T;
    done += T;
  }
  *logits = (const float *)s->pre.logits.ptr;
  return 0;
}

int32_t lf_decode(lf_state *s, int32_t id, const float **logits,
                  int32_t *argmax, char *msg, size_t msglen) {
  s->msg = msg;
  s->msglen = msglen;
  int32_t rc = check_room(s, 1);
  if (rc) return rc;
  *(int32_t *)s->tok.ptr = id;
  *(int32_t *)s->pos.ptr = s->n_pos;
  if (s->program) {
    rc = s->sink.program_submit(s->sink.ctx, s->program);
    if (rc < 0) return sink_fail(s, rc, "program_submit");
  } else if ((rc = forward(s, &s->dec, 1, 1, NULL))) {
    return rc;
  }
  if ((rc = s->sink.sync(s->sink.ctx)) < 0) return sink_fail(s, rc, "sync");
  s->n_pos++;
  *logits = s->o.argmax_only ? NULL : (const float *)s->dec.logits.ptr;
  if (argmax) *argmax = *(const int32_t *)s->dec.next.ptr;
  return 0;
}

int32_t lf_chain_len(const lf_state *s) {
  return s->chain_program ? chain_steps(s) : 0;
}

int32_t lf_decode_chain(lf_state *s, int32_t id, int32_t *out, char *msg,
                        size_t msglen) {
  s->msg = msg;
  s->msglen = msglen;
  const int32_t k = lf_chain_len(s);
  if (!k) {
    snprintf(msg, msglen, "decode chain: none recorded");
    return KILN_GPU_E_INVALID;
  }
  int32_t rc = check_room(s, k);
  if (rc) return rc;
  *(int32_t *)s->tok.ptr = id;
  for (int32_t i = 0; i < k; i++) ((int32_t *)s->chain_pos.ptr)[i] = s->n_pos + i;
  rc = s->sink.program_submit(s->sink.ctx, s->chain_program);
  if (rc < 0) return sink_fail(s, rc, "program_submit");
  if ((rc = s->sink.sync(s->sink.ctx)) < 0) return sink_fail(s, rc, "sync");
  s->n_pos += k;
  memcpy(out, s->chain_next.ptr, (size_t)k * 4);
  return 0;
}

static uint64_t tensor_bytes(const kiln_gpu_tensor *t) {
  uint64_t n = 1;
  for (uint32_t k = 0; k < t->rank; k++) n *= (uint64_t)t->shape[k];
  switch (t->dtype) {
    case KILN_GPU_F32: return n * 4;
    case KILN_GPU_Q8_0: return n / 32 * 34;
    default: return n * 2;
  }
}

uint64_t lf_weight_bytes_per_token(const lf_state *s) {
  uint64_t b = tensor_bytes(&s->w.output) + (uint64_t)s->c.hidden * 2;
  for (int l = 0; l < s->c.n_layers; l++) {
    const lf_layer *w = &s->layers[l];
    b += tensor_bytes(&w->wq) + tensor_bytes(&w->wk) + tensor_bytes(&w->wv) +
         tensor_bytes(&w->wo) + tensor_bytes(&w->w_gate) +
         tensor_bytes(&w->w_up) + tensor_bytes(&w->w_down);
  }
  return b;
}

int32_t lf_decode_op_count(const lf_state *s) {
  int32_t per_layer = s->permuted ? 17 : 15;
  return 1 + per_layer * s->c.n_layers + 3;
}
