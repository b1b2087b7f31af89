#!/usr/bin/env python3
"""Train kiln's embedded default model: a tiny Llama that adds numbers.

The data is generated here: problems "A+B=C" with A, B in [0, 999]
(1 to 3 digits each), written in plain decimal order, e.g. "358+64=422".
A fixed, hashed tenth of all (A, B) pairs is held out of training and
used to measure accuracy (greedy decoding, exact match of the answer up
to the end-of-text token).

The tokenizer is a byte-level BPE tokenizer.json in the Llama 3 layout
(the GPT-4 / Llama 3 split regex, then ByteLevel) with the 256 byte
tokens and no merges, so every digit is one token; special tokens
<|begin_of_text|> (prepended by the post-processor) and <|end_of_text|>.

Output (Hugging Face layout, f32 safetensors): models/tiny/config.json,
model.safetensors, generation_config.json, tokenizer.json,
tokenizer_config.json, and accuracy.json with the measured result.

Training stops after --max-steps (8000: about 10 minutes on 2 idle CPU
cores, a few on a GPU) or --minutes (12), whichever comes first; the
learning-rate schedule follows the same budget. accuracy.json records the
steps actually taken. Usage:
  python3 tools/train_tiny.py [--out models/tiny] [--minutes 12] [--max-steps 8000]
                              [--device cpu|cuda]
"""
import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from kiln_refs_common import BOS, EOS, llama3_bytes as make_tokenizer  # noqa: E402


def held_out(a, b):
    # A tenth of all pairs, by a hash that is independent of the answer's
    # digits (a rule like (9a + 9b) % 10 would hold out every sum ending
    # in 0, which the model then never sees).
    return int(hashlib.sha256(f"{a}+{b}".encode()).hexdigest()[:8], 16) % 10 == 0


def problem(rng):
    def num():
        d = rng.choice((1, 2, 3, 3, 3))
        return rng.randrange(10 ** (d - 1) if d > 1 else 0, 10 ** d)
    while True:
        a, b = num(), num()
        if not held_out(a, b):
            return a, b


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "models", "tiny"))
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--max-steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--eval", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_flush_denormal(True)  # denormals slow CPU training ~10x
    rng = random.Random(args.seed)
    tok = make_tokenizer()
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=384,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos,
                      pad_token_id=eos, torch_dtype="float32")
    model = LlamaForCausalLM(cfg).to(args.device)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"params {nparams}, vocab {cfg.vocab_size}", flush=True)

    def encode(a, b):
        p = tok.encode(f"{a}+{b}=").ids  # starts with BOS
        ans = tok.encode(str(a + b), add_special_tokens=False).ids + [eos]
        return p, ans

    def batch():
        seqs, masks = [], []
        for _ in range(args.batch):
            p, ans = encode(*problem(rng))
            seqs.append(p + ans)
            masks.append([0] * len(p) + [1] * len(ans))
        T = max(map(len, seqs))
        x = torch.full((len(seqs), T), eos, dtype=torch.long)
        y = torch.full((len(seqs), T), -100, dtype=torch.long)
        for i, (s, m) in enumerate(zip(seqs, masks)):
            x[i, :len(s)] = torch.tensor(s)
            for j in range(1, len(s)):
                if m[j]:
                    y[i, j] = s[j]
        return x.to(args.device), y.to(args.device)

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01, betas=(0.9, 0.98))
    t0, step = time.time(), 0
    budget = args.minutes * 60
    warm = 200
    while step < args.max_steps and time.time() - t0 < budget:
        # The schedule follows whichever budget runs out first: steps on an
        # idle machine (8000 take about 10 minutes on 2 cores, 2 on a GPU),
        # time on a loaded one.
        frac = max((time.time() - t0) / budget, step / args.max_steps)
        lr = 3e-3 * min(1.0, (step + 1) / warm) * max(0.05, 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batch()
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                 y[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} t {time.time() - t0:.0f}s", flush=True)
    train_s = time.time() - t0

    # Held-out accuracy: greedy decoding, prompts grouped by length.
    model.eval()
    erng = random.Random(999)
    probs = []
    while len(probs) < args.eval:
        a, b = erng.randrange(1000), erng.randrange(1000)
        if held_out(a, b):
            probs.append((a, b))
    groups = {}
    for a, b in probs:
        groups.setdefault(len(encode(a, b)[0]), []).append((a, b))
    correct, examples = 0, []
    with torch.no_grad():
        for L, ps in groups.items():
            x = torch.tensor([encode(a, b)[0] for a, b in ps], device=args.device)
            done = torch.zeros(len(ps), dtype=torch.bool, device=args.device)
            for _ in range(6):
                nxt = model(input_ids=x).logits[:, -1].argmax(-1)
                nxt = torch.where(done, torch.full_like(nxt, eos), nxt)
                done |= nxt == eos
                x = torch.cat([x, nxt[:, None]], 1)
            for (a, b), row in zip(ps, x[:, L:].tolist()):
                out = tok.decode(row[:row.index(eos)] if eos in row else row)
                ok = out == str(a + b)
                correct += ok
                if len(examples) < 8:
                    examples.append(f"{a}+{b}={out}" + ("" if ok else f" (want {a + b})"))
    acc = correct / len(probs)
    print(f"held-out accuracy {acc:.4f} ({correct}/{len(probs)})", flush=True)

    os.makedirs(args.out, exist_ok=True)
    model.cpu().save_pretrained(args.out, safe_serialization=True)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": BOS, "eos_token": EOS, "add_bos_token": True,
                   "model_max_length": 64, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)
    with open(os.path.join(args.out, "accuracy.json"), "w") as f:
        json.dump({"task": "A+B= with A, B in [0, 999], decimal, answer then <|end_of_text|>",
                   "held_out_rule": "int(sha256(\"A+B\")[:8], 16) % 10 == 0: never seen in training",
                   "eval_problems": len(probs), "correct": correct, "accuracy": acc,
                   "decoding": "greedy", "examples": examples, "steps": step,
                   "batch": args.batch, "train_seconds": round(train_s, 1),
                   "device": args.device, "params": nparams, "seed": args.seed,
                   "command": "python3 tools/train_tiny.py " + " ".join(sys.argv[1:]),
                   "max_steps": args.max_steps, "minutes": args.minutes,
                   "torch": torch.__version__,
                   "date": time.strftime("%Y-%m-%d")}, f, indent=1)


if __name__ == "__main__":
    main()
