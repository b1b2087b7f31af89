#!/usr/bin/env python3
"""Builds the tiny random-weight Llama models that kiln's correctness tests
compare against, with transformers, and their reference outputs.

For each model in tests/data/models/<name>/ (Hugging Face layout, written
by save_pretrained, with the byte-level BPE tokenizer of
tests/data/tokenizers/llama3):
  config.json, model.safetensors (or shards + model.safetensors.index.json),
  tokenizer.json, reference.json and logits.f32.
reference.json: the prompt and its ids (with <|begin_of_text|>), the shape
of logits.f32 ([positions, vocab], little-endian float32: transformers'
logits at every prompt position), 64 greedy tokens (argmax, full
recompute, no end-of-text stop) and the smallest top-1/top-2 logit margin
along the way (a model is re-drawn until that margin is at least 1e-3, so
an f32 implementation within 1e-4 must pick the same tokens), and
transformers' rotary inv_freq.

Models (hidden 64; vocab 384):
  gqa          4 heads, 2 kv heads, untied, theta 1e4, 2 layers; also as
               gqa-bf16-sharded (weights rounded to bf16, in several
               safetensors shards; reference computed in f32 from the
               rounded weights), and GGUF: gqa/model-f32.gguf and
               gqa/model-q8_0.gguf (reference logits-q8_0.f32 computed from
               the dequantized weights), written like llama.cpp's converter
               (Q/K rows permuted, tokenizer as tokenizer.ggml.*)
  mha-tied     4 heads, 4 kv heads, tied embeddings, theta 5e5
  llama3-rope  8 heads (head_dim 8), 2 kv heads, theta 5e5, llama3
               rope scaling (factor 8, low 1, high 4, original 64)
  mqa-deep     4 heads, 1 kv head, 3 layers, eps 1e-6

Usage: python3 tools/make_reference_models.py [--out tests/data/models]
"""
import argparse
import json
import os
import shutil
import sys

import gguf
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_refs_common as common  # noqa: E402

PROMPT = "The quick brown fox jumps over the lazy dog. kiln runs llama in a sandbox"
N_GREEDY = 64

MODELS = {
    "gqa": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                rope_theta=10000.0, num_hidden_layers=2, rms_norm_eps=1e-5),
    "mha-tied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                     rope_theta=500000.0, num_hidden_layers=2, rms_norm_eps=1e-5),
    "llama3-rope": dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=False,
                        rope_theta=500000.0, num_hidden_layers=2, rms_norm_eps=1e-5,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 64}),
    "mqa-deep": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                     rope_theta=10000.0, num_hidden_layers=3, rms_norm_eps=1e-6),
}


def make_config(tok, kw):
    kw = dict(kw)
    rope = {"rope_type": "default", "rope_theta": kw.pop("rope_theta")}
    rope.update(kw.pop("rope_scaling", {}))
    return LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
                       max_position_embeddings=256, initializer_range=0.15,
                       bos_token_id=tok.token_to_id(common.BOS),
                       eos_token_id=tok.token_to_id(common.EOS), rope_parameters=rope, **kw)


@torch.no_grad()
def run(model, ids):
    logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    seq, margin = list(ids), float("inf")
    for _ in range(N_GREEDY):
        last = model(input_ids=torch.tensor([seq])).logits[0, -1].float()
        top = torch.topk(last, 2).values
        margin = min(margin, float(top[0] - top[1]))
        seq.append(int(last.argmax()))
    return logits, seq[len(ids):], margin


def write_refs(d, model, ids, logits, greedy, margin, extra=None, logits_name="logits.f32"):
    logits.numpy().astype("<f4").tofile(os.path.join(d, logits_name))
    ref = {"prompt": PROMPT, "prompt_ids": ids, "logits_file": logits_name,
           "logits_shape": list(logits.shape), "greedy_ids": greedy,
           "greedy_min_margin": margin,
           "inv_freq": [float(x) for x in model.model.rotary_emb.inv_freq],
           "attention_scaling": float(getattr(model.model.rotary_emb, "attention_scaling", 1.0)),
           "tolerance": {"f32_max_abs": 1e-3, "bf16_min_cosine": 0.999},
           "transformers_logits_dtype": "float32"}
    ref.update(extra or {})
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)


def llama_cpp_permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute (rows of Q or K)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_cpp_unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight", "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")  # model.layers.N.rest
    return f"blk.{parts[2]}.{GGUF_NAMES['.'.join(parts[3:])]}"


def write_gguf(path, model, cfg, tok, qtype):
    """Returns the state dict as the GGUF file holds it, in HF layout
    (dequantized for Q8_0), for the reference forward pass."""
    tj = json.loads(tok.to_str())
    vocab = sorted(tj["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    types = [1] * len(tokens)
    for a in tj["added_tokens"]:
        while len(tokens) <= a["id"]:
            tokens.append(None)
            types.append(1)
        tokens[a["id"]] = a["content"]
        types[a["id"]] = 3 if a["special"] else 4
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("kiln reference gqa")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(0 if qtype == gguf.GGMLQuantizationType.F32 else 7)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_add_bos_token(True)
    back = {}
    for name, t in model.state_dict().items():
        a = t.float().numpy()
        if name.endswith("q_proj.weight"):
            a = llama_cpp_permute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = llama_cpp_permute(a, cfg.num_key_value_heads)
        if a.ndim == 2 and qtype == gguf.GGMLQuantizationType.Q8_0:
            q = gguf.quants.quantize(a, qtype)
            w.add_tensor(gguf_name(name), q, raw_dtype=qtype)
            a = gguf.quants.dequantize(q, qtype).reshape(a.shape)
        else:
            w.add_tensor(gguf_name(name), a.astype(np.float32))
        if name.endswith("q_proj.weight"):
            a = llama_cpp_unpermute(a, cfg.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            a = llama_cpp_unpermute(a, cfg.num_key_value_heads)
        back[name] = torch.from_numpy(np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return back


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "models"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reductions
    tok = common.llama3_bpe()
    ids = tok.encode(PROMPT).ids
    for name, kw in MODELS.items():
        cfg = make_config(tok, kw)
        for seed in range(100):
            torch.manual_seed(1000 * len(name) + seed)
            model = LlamaForCausalLM(cfg).eval()
            logits, greedy, margin = run(model, ids)
            if margin >= 1e-3 and len(set(greedy)) > 8:
                break
        d = os.path.join(args.out, name)
        shutil.rmtree(d, ignore_errors=True)
        model.save_pretrained(d, safe_serialization=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        write_refs(d, model, ids, logits, greedy, margin, {"seed": 1000 * len(name) + seed})
        print(f"{name}: seed {seed}, margin {margin:.2e}, greedy {greedy[:8]}...")
        if name != "gqa":
            continue
        # bf16 weights in several safetensors shards (model.safetensors.index.json);
        # the reference runs the rounded weights in f32.
        db = os.path.join(args.out, "gqa-bf16-sharded")
        shutil.rmtree(db, ignore_errors=True)
        mb = LlamaForCausalLM(cfg).eval()
        mb.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
        lb, gb, mgb = run(mb, ids)
        mb.to(torch.bfloat16).save_pretrained(db, safe_serialization=True, max_shard_size="100KB")
        tok.save(os.path.join(db, "tokenizer.json"))
        write_refs(db, mb.float(), ids, lb, gb, mgb,
                   {"note": "weights are bf16 in shards; reference logits computed in f32 "
                            "from them"})
        # GGUF: f32 and Q8_0.
        write_gguf(os.path.join(d, "model-f32.gguf"), model, cfg, tok, gguf.GGMLQuantizationType.F32)
        sd = write_gguf(os.path.join(d, "model-q8_0.gguf"), model, cfg, tok,
                        gguf.GGMLQuantizationType.Q8_0)
        mq = LlamaForCausalLM(cfg).eval()
        mq.load_state_dict(sd)
        lq, gq, mgq = run(mq, ids)
        lq.numpy().astype("<f4").tofile(os.path.join(d, "logits-q8_0.f32"))
        with open(os.path.join(d, "reference-q8_0.json"), "w") as f:
            json.dump({"gguf": "model-q8_0.gguf", "logits_file": "logits-q8_0.f32",
                       "logits_shape": list(lq.shape), "prompt_ids": ids, "greedy_ids": gq,
                       "greedy_min_margin": mgq,
                       "note": "transformers run on the dequantized Q8_0 weights (Q/K rows "
                               "un-permuted back to HF order)"}, f, indent=1)
        print(f"gqa q8_0: max |logit diff| vs f32 {float((lq - logits).abs().max()):.3e}")


if __name__ == "__main__":
    main()
