// layer_chain: kiln's own decode kernels for a Llama-3.2-1B-shaped step
// (bf16 weights, f32 KV cache at position 383), launched as the cuda
// backend launches them, captured in a graph and replayed; two builds of
// kernels.cu side by side (namespace base: an earlier commit's file, made
// by scripts/gpu-floor.sh; namespace cur: this checkout's), in the
// variants listed in main, kiln_gemv1k and kiln_attn_dec also as
// programmatic dependents of the kernel before them (pdl). Against gpu_floor's
// numbers (the same step as kernels that only read the weights) it says
// how far the kernels are from what one launch per op allows.
//
// Per layer, as session 7's backend fused them (the variants replace
// kernels with kiln_gemv1k and kiln_attn_dec): RMSNORM + q, k, v + RoPE + KV
// append (kiln_gemv1_bf16_norm_rope), attention (kiln_attn_f32_2, 17
// splits), o + residual (kiln_gemv1_bf16), RMSNORM + gate, up + SWIGLU
// (kiln_gemv1_bf16_norm_pair), down + residual (kiln_gemv1_bf16); then the
// final RMSNORM + LM head (kiln_gemv1_bf16_norm). Every variant's first
// step is checked bit for bit against base's from the same state.
//
//   sh scripts/gpu-floor.sh        (builds both programs, runs them)
#include <cooperative_groups.h>   // before kernels.cu goes into a namespace
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../../src/device/cuda/kernels_abi.h"
#include "../cuda_util.cuh"

#define KC_GLOBAL __global__
namespace cur {
#include "../../src/device/cuda/kernels.cu"
}
#ifdef KILN_BASE_KERNELS
// kernels.cu's instantiation macros, which the other build may define
// differently.
#undef KC_GEMV1K_KERNEL
#undef KC_GEMV1K_MINB
#undef KC_GEMV1K
#undef KC_ATTN
namespace base {
#include KILN_BASE_KERNELS
}
#endif


typedef void (*gemv1_fn)(kc_gemv1_params);
typedef void (*attn_fn)(kc_attn_params);
struct kernels {
  const char *name;
  gemv1_fn qkv, o, gu, down, head;
  attn_fn attn;
  // units a block of q/k/v, o, gate/up, down: 0 for kiln_gemv1 (a warp a
  // unit), else kiln_gemv1k's RB
  int qkv_rpb, o_rpb, gu_rpb, down_rpb;
  bool x_early;   // RMSNORM outputs stored by block 0 (kc_gemv1_params)
  int norm_cap;   // kiln_gemv1k with RMSNORM: at most this many blocks an SM (0: no cap)
  bool attn_dec;  // attn is kiln_attn_dec (clusters)
  bool pdl;       // kiln_gemv1k, kiln_attn_dec as programmatic dependents
};

// The launch attribute that makes a kernel a programmatic dependent of the
// one before it in the stream (lc.attrs, when on).
static cudaLaunchAttribute g_pdl_attr;
static void pdl_attr(cudaLaunchConfig_t &lc, bool on) {
  g_pdl_attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  g_pdl_attr.val.programmaticStreamSerializationAllowed = 1;
  lc.attrs = on ? &g_pdl_attr : nullptr;
  lc.numAttrs = on ? 1 : 0;
}

// 1B shape
enum { H = 2048, F = 8192, NQ = 32, NKV = 8, D = 64, L = 16, CAP = 640,
       POS = 383, SPLITS = 17 };
static const int64_t VOCAB = 128256;

__global__ void k_fill_bf16(uint16_t *w, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t h = bench_hash(i, seed);
    // |w| in [2^-7, 2^-5), random sign: about a trained layer's scale
    w[i] = (uint16_t)((h & 0x8000u) | (0x3c00u + ((h >> 4) & 0xff)));
  }
}
__global__ void k_fill_f32(float *a, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    const uint32_t h = bench_hash(i, seed);
    a[i] = lo + (hi - lo) * (float)(h & 0xffffff) / 16777216.0f;
  }
}

struct layer_w {
  uint16_t *qkv, *o, *gu, *down;
  float *g_attn, *g_mlp;
};
struct state {
  float *resid, *xn, *qkv, *attn_o, *gate, *up, *act, *cache, *logits,
      *inv_freq, *scratch;
  int *pos, *counter, *attn_counters, *claim;
  kc_error *record;
};

static int g_sms;
static std::vector<layer_w> g_layers;   // several sets, rotated (cold)
static uint16_t *g_head;
static float *g_g_final;
static state g_s;

static kc_tensor tens(const void *addr, int dt, std::initializer_list<int64_t> shape,
                      std::initializer_list<int64_t> stride) {
  kc_tensor t = {};
  t.addr = (uint64_t)addr;
  t.dtype = dt;
  t.rank = (int)shape.size();
  int i = 0;
  for (int64_t v : shape) t.shape[i++] = v;
  i = 0;
  for (int64_t v : stride) t.stride[i++] = v;
  return t;
}

// A one-row GEMV launched as cuda_launch.c would: kiln_gemv1 (rpb 0) a
// warp a unit, at most 3 blocks an SM with the RMSNORM prologue;
// kiln_gemv1k rpb units a block, RMSNORM + gate/up at most norm_cap blocks
// an SM (0: no cap).
static void gemv1_launch(cudaStream_t s, gemv1_fn fn, const kc_gemv1_params &p,
                         bool norm, bool rope, int rpb = 0, int norm_cap = 0,
                         bool pdl = false) {
  const int64_t units = rope ? p.rows / 2 : p.rows;
  const bool split = rpb > 0;
  if (!split) rpb = 8;
  int64_t blocks = (units + rpb - 1) / rpb;
  if (norm && !split) blocks = std::min<int64_t>(blocks, 3 * (int64_t)g_sms);
  if (norm && split && !rope && norm_cap)
    blocks = std::min<int64_t>(blocks, (int64_t)norm_cap * g_sms);
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3((unsigned)blocks);
  lc.blockDim = dim3(256);
  lc.stream = s;
  lc.dynamicSmemBytes = norm && !split ? (unsigned)(p.K * 4) : 0;
  pdl_attr(lc, pdl && split);
  void *args[1] = {(void *)&p};
  CUDA_OK(cudaLaunchKernelExC(&lc, (const void *)fn, args));
}

static kc_gemv_seg seg(const void *w, const void *y, int64_t N, int64_t ws,
                       float beta) {
  kc_gemv_seg g = {};
  g.w = (uint64_t)w;
  g.y = (uint64_t)y;
  g.N = N;
  g.ws = ws;
  g.alpha = 1.0f;
  g.beta = beta;
  return g;
}

// resid[H] += w[H, K] @ x: the o and down projections.
static kc_gemv1_params residual_gemv(const uint16_t *w, const float *x, int64_t K) {
  kc_gemv1_params p = {};
  p.seg[0] = seg(w, g_s.resid, H, K, 1.0f);
  p.nseg = 1;
  p.x = (uint64_t)x;
  p.rows = H;
  p.K = K;
  p.xvec = 1;
  return p;
}

// One decode step: L layers (weights of set `set`), the LM head.
enum { OP_QKV = 1, OP_ATTN = 2, OP_O = 4, OP_GU = 8, OP_DOWN = 16, OP_HEAD = 32,
       OP_ALL = 63 };
static void step(cudaStream_t s, const kernels &k, int set, unsigned ops = OP_ALL) {
  const state &st = g_s;
  kc_err_ref err = {(uint64_t)st.claim, (uint64_t)st.record};
  for (int l = 0; l < L; l++) {
    const layer_w &w = g_layers[(size_t)set * L + l];
    if (ops & OP_QKV) {   // RMSNORM + q, k, v + RoPE + KV append
      kc_gemv1_params p = {};
      p.seg[0] = seg(w.qkv, st.qkv, NQ * D, H, 0.0f);
      p.seg[1] = seg(w.qkv + (int64_t)NQ * D * H, st.qkv + NQ * D, NKV * D, H, 0.0f);
      p.seg[2] = seg(w.qkv + (int64_t)(NQ + NKV) * D * H, st.qkv + (NQ + NKV) * D,
                     NKV * D, H, 0.0f);
      p.nseg = 3;
      p.x = (uint64_t)st.xn;
      p.a = (uint64_t)st.resid;
      p.g = (uint64_t)w.g_attn;
      p.counter = (uint64_t)st.counter;
      p.rows = (NQ + 2 * NKV) * D;
      p.K = H;
      p.eps = 1e-5f;
      p.xvec = 1;
      p.x_early = k.x_early;
      kc_rope_params &r = p.rope.rope;
      r.inv_freq = (uint64_t)st.inv_freq;
      r.index = (uint64_t)st.pos;
      r.T = 1;
      r.H = NQ + NKV;
      r.D = D;
      kc_copy_params &c = p.rope.copy;
      c.a = tens(st.qkv + NQ * D, KC_F32, {1, 2 * NKV, D}, {2 * NKV * D, D, 1});
      c.b = tens(st.cache, KC_F32, {CAP, 2 * NKV, D}, {2 * NKV * D, D, 1});
      c.index = (uint64_t)st.pos;
      c.err = err;
      c.rows = 1;
      c.cols = 2 * NKV * D;
      p.rope.hs = NQ;
      gemv1_launch(s, k.qkv, p, true, true, k.qkv_rpb, 0, k.pdl && l > 0);
    }
    if (ops & OP_ATTN) {   // attention
      kc_attn_params p = {};
      p.q = tens(st.qkv, KC_F32, {1, NQ, D}, {(NQ + 2 * NKV) * D, D, 1});
      p.k = tens(st.cache, KC_F32, {CAP, NKV, D}, {2 * NKV * D, D, 1});
      p.v = tens(st.cache + NKV * D, KC_F32, {CAP, NKV, D}, {2 * NKV * D, D, 1});
      p.o = tens(st.attn_o, KC_F32, {1, NQ, D}, {NQ * D, D, 1});
      p.index = (uint64_t)st.pos;
      p.err = err;
      p.scratch = (uint64_t)st.scratch;
      p.counters = (uint64_t)st.attn_counters;
      p.scale = 0.125f;
      p.splits = SPLITS;
      cudaLaunchConfig_t lc = {};
      lc.gridDim = dim3(SPLITS, NQ, 1);
      lc.blockDim = dim3(128);
      if (k.attn_dec) {   // kiln_attn_dec: clusters of KC_AD_SPLITS
        p.splits = KC_AD_SPLITS;
        lc.gridDim = dim3(KC_AD_SPLITS, NQ, 1);
        lc.blockDim = dim3(256);
      }
      lc.stream = s;
      pdl_attr(lc, k.pdl && k.attn_dec);
      void *args[1] = {(void *)&p};
      CUDA_OK(cudaLaunchKernelExC(&lc, (const void *)k.attn, args));
    }
    if (ops & OP_O)   // o + residual
      gemv1_launch(s, k.o, residual_gemv(w.o, st.attn_o, NQ * D), false, false,
                   k.o_rpb, 0, k.pdl);
    if (ops & OP_GU) {   // RMSNORM + gate, up + SWIGLU
      kc_gemv1_params p = {};
      p.seg[0] = seg(w.gu, st.gate, F, H, 0.0f);
      p.seg[1] = seg(w.gu + (int64_t)F * H, st.up, F, H, 0.0f);
      p.nseg = 2;
      p.x = (uint64_t)st.xn;
      p.a = (uint64_t)st.resid;
      p.g = (uint64_t)w.g_mlp;
      p.act = (uint64_t)st.act;
      p.counter = (uint64_t)st.counter;
      p.rows = F;
      p.K = H;
      p.eps = 1e-5f;
      p.xvec = 1;
      p.x_early = k.x_early;
      gemv1_launch(s, k.gu, p, true, false, k.gu_rpb, k.norm_cap, k.pdl);
    }
    if (ops & OP_DOWN)   // down + residual
      gemv1_launch(s, k.down, residual_gemv(w.down, st.act, F), false, false,
                   k.down_rpb, 0, k.pdl);
  }
  if (!(ops & OP_HEAD)) return;
  kc_gemv1_params p = {};   // final RMSNORM + LM head
  p.seg[0] = seg(g_head, st.logits, VOCAB, H, 0.0f);
  p.nseg = 1;
  p.x = (uint64_t)st.xn;
  p.a = (uint64_t)st.resid;
  p.g = (uint64_t)g_g_final;
  p.counter = (uint64_t)st.counter;
  p.rows = VOCAB;
  p.K = H;
  p.eps = 1e-5f;
  p.xvec = 1;
  gemv1_launch(s, k.head, p, true, false);
}

static void reset_state() {
  k_fill_f32<<<64, 256>>>(g_s.resid, H, 7u, -1.0f, 1.0f);
  k_fill_f32<<<256, 256>>>(g_s.cache, (int64_t)CAP * 2 * NKV * D, 8u, -1.0f, 1.0f);
  CUDA_OK(cudaMemset(g_s.claim, 0, 4));
  CUDA_OK(cudaDeviceSynchronize());
}

int main(int argc, char **argv) {
  const char *out = argc > 1 ? argv[1] : "layer_chain.json";
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  g_sms = prop.multiProcessorCount;
  // Weight sets: each 16 layers (1.95 GB); 2 sets rotate so a replay reads
  // cold weights (2 x 1.95 GB + head >> 60 MB of L2).
  const int SETS = 2;
  const int64_t lw = (int64_t)(NQ + 2 * NKV) * D * H + (int64_t)H * NQ * D +
                     2LL * F * H + (int64_t)H * F;
  for (int i = 0; i < SETS * L; i++) {
    layer_w w;
    uint16_t *b;
    CUDA_OK(cudaMalloc(&b, lw * 2));
    k_fill_bf16<<<g_sms * 8, 256>>>(b, lw, 100u + i);
    w.qkv = b;
    w.o = w.qkv + (int64_t)(NQ + 2 * NKV) * D * H;
    w.gu = w.o + (int64_t)H * NQ * D;
    w.down = w.gu + 2LL * F * H;
    CUDA_OK(cudaMalloc(&w.g_attn, H * 4));
    CUDA_OK(cudaMalloc(&w.g_mlp, H * 4));
    k_fill_f32<<<8, 256>>>(w.g_attn, H, 200u + i, 0.5f, 1.5f);
    k_fill_f32<<<8, 256>>>(w.g_mlp, H, 300u + i, 0.5f, 1.5f);
    g_layers.push_back(w);
  }
  CUDA_OK(cudaMalloc(&g_head, VOCAB * H * 2));
  k_fill_bf16<<<g_sms * 8, 256>>>(g_head, VOCAB * H, 999u);
  CUDA_OK(cudaMalloc(&g_g_final, H * 4));
  k_fill_f32<<<8, 256>>>(g_g_final, H, 998u, 0.5f, 1.5f);
  state &s = g_s;
  CUDA_OK(cudaMalloc(&s.resid, H * 4));
  CUDA_OK(cudaMalloc(&s.xn, H * 4));
  CUDA_OK(cudaMalloc(&s.qkv, (NQ + 2 * NKV) * D * 4));
  CUDA_OK(cudaMalloc(&s.attn_o, NQ * D * 4));
  CUDA_OK(cudaMalloc(&s.gate, F * 4));
  CUDA_OK(cudaMalloc(&s.up, F * 4));
  CUDA_OK(cudaMalloc(&s.act, F * 4));
  CUDA_OK(cudaMalloc(&s.cache, (int64_t)CAP * 2 * NKV * D * 4));
  CUDA_OK(cudaMalloc(&s.logits, VOCAB * 4));
  CUDA_OK(cudaMalloc(&s.inv_freq, D / 2 * 4));
  CUDA_OK(cudaMalloc(&s.scratch, (int64_t)NQ * SPLITS * (D + 2) * 4));
  CUDA_OK(cudaMalloc(&s.pos, 4));
  CUDA_OK(cudaMalloc(&s.counter, 4));
  CUDA_OK(cudaMalloc(&s.attn_counters, NQ * 4));
  CUDA_OK(cudaMalloc(&s.claim, 4));
  CUDA_OK(cudaMallocHost(&s.record, sizeof(kc_error)));
  float inv[D / 2];
  for (int i = 0; i < D / 2; i++) inv[i] = powf(500000.0f, -2.0f * i / D);
  CUDA_OK(cudaMemcpy(s.inv_freq, inv, sizeof inv, cudaMemcpyHostToDevice));
  const int pos = POS;
  CUDA_OK(cudaMemcpy(s.pos, &pos, 4, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemset(s.counter, 0, 4));
  CUDA_OK(cudaMemset(s.attn_counters, 0, NQ * 4));

  std::vector<kernels> ks;
#ifdef KILN_BASE_KERNELS
  ks.push_back({"base", base::kiln_gemv1_bf16_norm_rope, base::kiln_gemv1_bf16,
                base::kiln_gemv1_bf16_norm_pair, base::kiln_gemv1_bf16,
                base::kiln_gemv1_bf16_norm, base::kiln_attn_f32_2});
#endif
  // 1B: K = 2048 -> U 1 (4 units a block), K = 8192 -> U 4 (2 a block)
  ks.push_back({"cur gemv1 (warp a row)", cur::kiln_gemv1_bf16_norm_rope,
                cur::kiln_gemv1_bf16, cur::kiln_gemv1_bf16_norm_pair,
                cur::kiln_gemv1_bf16, cur::kiln_gemv1_bf16_norm,
                cur::kiln_attn_f32_2});
  // Split K for o, down, gate/up (next step's weights early, at most 2
  // blocks an SM), RMSNORM outputs early, decode attention in clusters;
  // q, k, v by kiln_gemv1 or kiln_gemv1k.
  ks.push_back({"splitk, attn_dec; qkv gemv1", cur::kiln_gemv1_bf16_norm_rope,
                cur::kiln_gemv1k_bf16_u1, cur::kiln_gemv1k_bf16_norm_pair_u1,
                cur::kiln_gemv1k_bf16_u4, cur::kiln_gemv1_bf16_norm,
                cur::kiln_attn_dec_f32_2, 0, 4, 4, 2, true, 2, true});
  ks.push_back({"splitk, attn_dec; qkv gemv1k", cur::kiln_gemv1k_bf16_norm_rope_u1,
                cur::kiln_gemv1k_bf16_u1, cur::kiln_gemv1k_bf16_norm_pair_u1,
                cur::kiln_gemv1k_bf16_u4, cur::kiln_gemv1_bf16_norm,
                cur::kiln_attn_dec_f32_2, 4, 4, 4, 2, true, 2, true});
  // The same kernels as programmatic dependents: must equal the line above
  // bit for bit.
  ks.push_back(ks.back());
  ks.back().name = "the same, PDL";
  ks.back().pdl = true;
#ifdef KILN_BASE_KERNELS
  // The base build's kernels the same way (only for a base from session 9
  // on: earlier kernels do not wait for the kernel before them).
  ks.push_back(ks.back());
  ks.back().name = "base's, PDL";
  ks.back().qkv = base::kiln_gemv1k_bf16_norm_rope_u1;
  ks.back().o = base::kiln_gemv1k_bf16_u1;
  ks.back().gu = base::kiln_gemv1k_bf16_norm_pair_u1;
  ks.back().down = base::kiln_gemv1k_bf16_u4;
  ks.back().attn = base::kiln_attn_dec_f32_2;
#endif
  cudaStream_t st;
  CUDA_OK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  // Bit-for-bit check: one step of each variant from the same state.
  std::vector<float> ref(VOCAB), got(VOCAB), prev(VOCAB), rres(H), gres(H);
  bool all_ok = true;
  for (size_t i = 0; i < ks.size(); i++) {
    reset_state();
    step(st, ks[i], 0);
    CUDA_OK(cudaStreamSynchronize(st));
    CUDA_OK(cudaMemcpy(i ? got.data() : ref.data(), s.logits, VOCAB * 4,
                  cudaMemcpyDeviceToHost));
    CUDA_OK(cudaMemcpy(i ? gres.data() : rres.data(), s.resid, H * 4,
                  cudaMemcpyDeviceToHost));
    int claim;
    CUDA_OK(cudaMemcpy(&claim, s.claim, 4, cudaMemcpyDeviceToHost));
    if (claim) printf("%s: kernel error %d\n", ks[i].name, claim), all_ok = false;
    if (ks[i].pdl) {   // the kernels of the variant before it
      if (memcmp(prev.data(), got.data(), VOCAB * 4)) {
        printf("%s: logits differ from %s's\n", ks[i].name, ks[i - 1].name);
        all_ok = false;
      }
    } else if (i && !strstr(ks[i].name, "warp a row")) {   // another order of sums
      double md = 0, mr = 0;
      for (int j = 0; j < VOCAB; j++) {
        md = std::max(md, (double)fabsf(ref[j] - got[j]));
        mr = std::max(mr, (double)fabsf(ref[j]));
      }
      printf("%s: logits max |diff| %.3g of max |logit| %.3g\n", ks[i].name, md, mr);
      if (!(md <= 1e-3 * mr)) all_ok = false;
    } else if (i && (memcmp(ref.data(), got.data(), VOCAB * 4) ||
                     memcmp(rres.data(), gres.data(), H * 4))) {
      int bad = 0;
      for (int j = 0; j < VOCAB; j++) bad += memcmp(&ref[j], &got[j], 4) != 0;
      printf("%s: logits differ from %s's in %d of %lld\n", ks[i].name,
             ks[0].name, bad, (long long)VOCAB);
      all_ok = false;
    }
    if (i) prev = got;
  }
  bool finite = true;
  for (int j = 0; j < VOCAB; j++) finite = finite && std::isfinite(ref[j]);
  printf("bit-for-bit against %s: %s; logits finite: %s (logit[0] %g)\n",
         ks[0].name, all_ok ? "all equal" : "DIFFER", finite ? "yes" : "NO",
         ref[0]);

  // Timing: graphs of one step on each weight set, replayed round robin.
  FILE *js = fopen(out, "w");
  fprintf(js, "{\"device\": \"%s\", \"bit_equal\": %s, \"results\": [", prop.name,
          all_ok ? "true" : "false");
  std::vector<std::vector<double>> times(ks.size());
  std::vector<std::vector<cudaGraphExec_t>> ge(ks.size());
  for (size_t i = 0; i < ks.size(); i++)
    for (int set = 0; set < SETS; set++) {
      cudaGraph_t g;
      CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      step(st, ks[i], set);
      CUDA_OK(cudaStreamEndCapture(st, &g));
      cudaGraphExec_t e;
      CUDA_OK(cudaGraphInstantiate(&e, g, 0));
      CUDA_OK(cudaGraphDestroy(g));
      ge[i].push_back(e);
    }
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  // Interleaved: round r times every variant once on each set.
  for (int r = 0; r < 40; r++)
    for (size_t i = 0; i < ks.size(); i++)
      for (int set = 0; set < SETS; set++) {
        const double us = graph_replay_us(ge[i][set], st, a, b);
        if (r >= 2) times[i].push_back(us);
      }
  const double bytes = (double)L * lw * 2 + (double)VOCAB * H * 2;
  printf("%-28s %10s %10s %10s %9s\n", "1B decode step", "median us", "min us",
         "tok/s", "GB/s");
  for (size_t i = 0; i < ks.size(); i++) {
    std::vector<double> &t = times[i];
    std::sort(t.begin(), t.end());
    const double med = t[t.size() / 2];
    printf("%-28s %10.1f %10.1f %10.1f %9.0f\n", ks[i].name, med, t[0],
           1e6 / med, bytes / med / 1e3);
    fprintf(js, "%s\n  {\"name\": \"%s\", \"median_us\": %.2f, \"min_us\": %.2f}",
            i ? "," : "", ks[i].name, med, t[0]);
  }
  fprintf(js, "\n], \"per_op\": [");
  // Each op alone: 16 of it (one a layer, its own weights) in a graph.
  const unsigned opv[] = {OP_QKV, OP_ATTN, OP_O, OP_GU, OP_DOWN, OP_HEAD};
  const char *opn[] = {"qkv", "attn", "o", "gate_up", "down", "head"};
  printf("\nper op (us, each alone, 16 in a graph; head: 1)\n%-28s", "");
  for (int o = 0; o < 6; o++) printf(" %8s", opn[o]);
  printf(" %8s\n", "layer");
  for (size_t i = 0; i < ks.size(); i++) {
    printf("%-28s", ks[i].name);
    double lay = 0;
    for (int o = 0; o < 6; o++) {
      cudaGraphExec_t e[2];
      for (int set = 0; set < SETS; set++) {
        cudaGraph_t g;
        CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        step(st, ks[i], set, opv[o]);
        CUDA_OK(cudaStreamEndCapture(st, &g));
        CUDA_OK(cudaGraphInstantiate(&e[set], g, 0));
        CUDA_OK(cudaGraphDestroy(g));
      }
      std::vector<double> t;
      for (int r = 0; r < 24; r++) {
        const double us = graph_replay_us(e[r & 1], st, a, b);
        if (r >= 4) t.push_back(us);
      }
      std::sort(t.begin(), t.end());
      const double us = t[t.size() / 2] / (opv[o] == OP_HEAD ? 1 : L);
      if (opv[o] != OP_HEAD) lay += us;
      printf(" %8.2f", us);
      fprintf(js, "%s\n  {\"name\": \"%s\", \"op\": \"%s\", \"us\": %.3f}",
              i || o ? "," : "", ks[i].name, opn[o], us);
      CUDA_OK(cudaGraphExecDestroy(e[0]));
      CUDA_OK(cudaGraphExecDestroy(e[1]));
    }
    printf(" %8.2f\n", lay);
  }
  // Several steps in one graph (as kiln's chained decode records them),
  // the weight sets alternating: the time a step, per variant.
  fprintf(js, "\n], \"steps_a_graph\": [");
  printf("\nsteps in one graph (us a step)\n%-28s %8s %8s %8s\n", "", "1", "2", "8");
  int entries = 0;
  for (size_t i = 0; i < ks.size(); i++) {
    if (ks[i].qkv_rpb == 0) continue;   // the split-K variants only
    printf("%-28s", ks[i].name);
    for (int n : {1, 2, 8}) {
      cudaGraph_t g;
      CUDA_OK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
      for (int k = 0; k < n; k++) step(st, ks[i], k % SETS);
      CUDA_OK(cudaStreamEndCapture(st, &g));
      cudaGraphExec_t e;
      CUDA_OK(cudaGraphInstantiate(&e, g, 0));
      CUDA_OK(cudaGraphDestroy(g));
      std::vector<double> t;
      for (int r = 0; r < 12; r++) {
        const double us = graph_replay_us(e, st, a, b);
        if (r >= 2) t.push_back(us / n);
      }
      std::sort(t.begin(), t.end());
      printf(" %8.1f", t[t.size() / 2]);
      fprintf(js, "%s\n  {\"name\": \"%s\", \"steps\": %d, \"us_a_step\": %.2f}",
              entries++ ? "," : "", ks[i].name, n, t[t.size() / 2]);
      CUDA_OK(cudaGraphExecDestroy(e));
    }
    printf("\n");
  }
  fprintf(js, "\n], \"weight_bytes\": %.0f}\n", bytes);
  fclose(js);
  int claim;
  CUDA_OK(cudaMemcpy(&claim, s.claim, 4, cudaMemcpyDeviceToHost));
  if (claim) printf("kernel error %d during timing\n", claim);
  return all_ok && finite && !claim ? 0 : 1;
}
