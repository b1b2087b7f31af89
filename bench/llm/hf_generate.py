#!/usr/bin/env python3
"""transformers generate() timings for issue 5's comparison, on the model
folders written by tools/make_random_llama.py (bf16, GPU).

Measures, with torch.cuda.synchronize around each timed region:
  - decode tokens/s of model.generate(): a P-token prompt (BOS + P-1 byte
    tokens), greedy, N new tokens with EOS ignored (min_new_tokens = N);
    decode rate = (N - 1) / (t(N new tokens) - t(1 new token)), so prefill
    and the first token are taken out as kiln's decode_tok_s does;
  - prefill tokens/s: one forward pass over a Q-token prompt;
  - device-to-device copy bandwidth (torch copy_ between two 1 GiB device
    tensors; bytes read + written per second, as bench_llm counts it).
Prints one JSON object.

Usage: python3 bench/llm/hf_generate.py --model DIR [--prompt-tokens 128]
       [--gen 256] [--prefill-tokens 512] [--reps 3] [--attn sdpa]
"""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - t0, out


def d2d_bandwidth(dev):
    n = 1 << 30
    a = torch.empty(n, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    best = 0.0
    for _ in range(5):
        t, _ = timed(lambda: [b.copy_(a) for _ in range(10)])
        best = max(best, 2.0 * n * 10 / t / 1e9)
    del a, b
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--device", default="cuda:0")
    a = ap.parse_args()
    dev = torch.device(a.device)
    bw = d2d_bandwidth(dev) if dev.type == "cuda" else 0.0
    t_load, model = timed(lambda: AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.bfloat16, attn_implementation=a.attn).to(dev).eval())
    bos = model.config.bos_token_id
    # The byte-level tokenizer of make_random_llama.py: ids 0..255 are bytes.
    prompt = torch.tensor([[bos] + [97 + i % 8 for i in range(a.prompt_tokens - 1)]], device=dev)
    long_prompt = torch.tensor([[bos] + [97 + i % 8 for i in range(a.prefill_tokens - 1)]],
                               device=dev)
    # An explicit mask: with pad_token_id == bos, generate() would infer one
    # that hides the BOS position.
    kw = dict(do_sample=False, eos_token_id=None, pad_token_id=bos,
              attention_mask=torch.ones_like(prompt))

    def gen(n):
        return model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **kw)

    with torch.inference_mode():
        gen(8)  # warm-up
        model(long_prompt)
        decode, prefill = [], []
        for _ in range(a.reps):
            t1, _ = timed(lambda: gen(1))
            tn, out = timed(lambda: gen(a.gen))
            assert out.shape[1] == a.prompt_tokens + a.gen, out.shape
            decode.append((a.gen - 1) / (tn - t1))
            tp, _ = timed(lambda: model(long_prompt))
            prefill.append(a.prefill_tokens / tp)
    print(json.dumps({
        "model": a.model,
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "attn": a.attn,
        "prompt_tokens": a.prompt_tokens,
        "generated": a.gen,
        "decode_tok_s": statistics.median(decode),
        "decode_tok_s_all": decode,
        "prefill_tokens": a.prefill_tokens,
        "prefill_tok_s": statistics.median(prefill),
        "d2d_copy_gb_s": bw,
        "load_s": t_load,
        "max_memory_allocated_gib": (torch.cuda.max_memory_allocated(dev) / 2**30
                                     if dev.type == "cuda" else 0),
    }))


if __name__ == "__main__":
    main()
