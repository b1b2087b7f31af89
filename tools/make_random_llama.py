#!/usr/bin/env python3
"""Random-weight bf16 Llama checkpoints with real shapes, for benchmarks.

Writes a Hugging Face folder (config.json, generation_config.json,
tokenizer.json, model.safetensors or shards + model.safetensors.index.json)
directly with torch + safetensors: no download, no transformers model in
memory (an 8B model is generated one tensor at a time).

Shapes:
  1b  Llama-3.2-1B: hidden 2048, 16 layers, 32 heads / 8 kv heads (head_dim
      64), intermediate 8192, vocab 128256, tied embeddings, rope theta
      500000 with llama3 scaling (factor 32).
  8b  Llama-3.1-8B: hidden 4096, 32 layers, 32 / 8 heads (head_dim 128),
      intermediate 14336, vocab 128256, untied, llama3 scaling (factor 8).

Weights ~ N(0, 0.02) (norms 1), seeded. Shards are at most --shard-gb
(default 3.5) GiB because kiln maps each weight file as one read-only
memory of at most 4 GiB.

The tokenizer is byte-level BPE in the Llama 3 layout (split regex then
ByteLevel) with the 256 byte tokens, no merges, and <|begin_of_text|> (256,
prepended) / <|end_of_text|> (257): every prompt byte is one token, so a
prompt of N-1 ASCII characters is N tokens. Ids the model emits above 257
have no text (random weights produce any id); that only affects printing.

Usage: python3 tools/make_random_llama.py --shape 1b --out /data/llama-1b
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file

SHAPES = {
    "1b": dict(hidden=2048, layers=16, heads=32, kv_heads=8, head_dim=64, inter=8192,
               tied=True, rope_factor=32.0),
    "8b": dict(hidden=4096, layers=32, heads=32, kv_heads=8, head_dim=128, inter=14336,
               tied=False, rope_factor=8.0),
}
VOCAB = 128256


def byte_tokenizer():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import kiln_refs_common  # tokenizers, needed only here
    return kiln_refs_common.llama3_bytes()


def config(s):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": s["hidden"],
        "intermediate_size": s["inter"],
        "num_hidden_layers": s["layers"],
        "num_attention_heads": s["heads"],
        "num_key_value_heads": s["kv_heads"],
        "head_dim": s["head_dim"],
        "vocab_size": VOCAB,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": s["rope_factor"],
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "tie_word_embeddings": s["tied"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 256,
        "eos_token_id": 257,
        "torch_dtype": "bfloat16",
        "initializer_range": 0.02,
    }


def tensors(s, gen):
    """(name, shape) in file order; created lazily by the caller."""
    h, i, L = s["hidden"], s["inter"], s["layers"]
    q, kv = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    yield "model.embed_tokens.weight", (VOCAB, h)
    for l in range(L):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (h,)
        yield p + "self_attn.q_proj.weight", (q, h)
        yield p + "self_attn.k_proj.weight", (kv, h)
        yield p + "self_attn.v_proj.weight", (kv, h)
        yield p + "self_attn.o_proj.weight", (h, q)
        yield p + "post_attention_layernorm.weight", (h,)
        yield p + "mlp.gate_proj.weight", (i, h)
        yield p + "mlp.up_proj.weight", (i, h)
        yield p + "mlp.down_proj.weight", (h, i)
    yield "model.norm.weight", (h,)
    if not s["tied"]:
        yield "lm_head.weight", (VOCAB, h)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shard-gb", type=float, default=3.5)
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (tests)")
    a = ap.parse_args()
    s = dict(SHAPES[a.shape])
    if a.layers:
        s["layers"] = a.layers
    os.makedirs(a.out, exist_ok=True)
    gen = torch.Generator().manual_seed(a.seed)
    limit = int(a.shard_gb * (1 << 30))
    shards, cur, cur_bytes = [], {}, 0
    for name, shape in tensors(s, gen):
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02).to(torch.bfloat16)
        nbytes = t.numel() * 2
        if cur and cur_bytes + nbytes > limit:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name] = t
        cur_bytes += nbytes
    shards.append(cur)
    total = sum(t.numel() * 2 for sh in shards for t in sh.values())
    if len(shards) == 1:
        save_file(shards[0], os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for k, sh in enumerate(shards):
            fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(sh, os.path.join(a.out, fn), metadata={"format": "pt"})
            for name in sh:
                weight_map[name] = fn
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config(s), f, indent=1)
    with open(os.path.join(a.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 256, "eos_token_id": 257, "do_sample": False}, f, indent=1)
    byte_tokenizer().save(os.path.join(a.out, "tokenizer.json"))
    params = total // 2
    print(json.dumps({"out": a.out, "shape": a.shape, "params": params,
                      "bytes": total, "shards": len(shards),
                      "params_b": round(params / 1e9, 3)}))


if __name__ == "__main__":
    main()
