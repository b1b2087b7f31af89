#!/usr/bin/env python3
"""Writes tokenizer test data for kiln's C tokenizer: tokenizer.json files
built with `tokenizers`, and the encodings and decodings that `tokenizers`
itself produces for a test corpus (tests/data/tokenizers/<name>/).

  llama3     byte-level BPE, Split(GPT-4/Llama 3 regex) + ByteLevel,
             ignore_merges, <|begin_of_text|> template (also the tokenizer
             of the reference models in tests/data/models/)
  gpt2       ByteLevel with the GPT-2 regex, added tokens
  spm        Llama 2 legacy: Prepend/Replace normalizer, byte fallback
  metaspace  Llama 2 newer: Metaspace pre-tokenizer (prepend first)
  spm_gguf   a GGUF file with tokenizer.ggml.model "llama" (tokens, scores,
             token types) and, as tokenizer.json, what transformers would
             convert it to (merges from scores, SentencePieceExtractor)

Each refs.json holds, per text: ids (add_special_tokens=True), ids_plain
(False), decoded (decode(ids_plain, skip_special_tokens=False)) and
decoded_skip (decode(ids, skip_special_tokens=True)); plus decodings of
random id sequences (which exercise the lossy UTF-8 path).

Usage: python3 tools/make_tokenizer_refs.py [--out tests/data/tokenizers]
"""
import argparse
import json
import os
import random
import sys

import gguf
from tokenizers import Tokenizer, decoders, models, normalizers, processors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kiln_refs_common as common  # noqa: E402


def refs(tok, texts, seed):
    cases = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=True).ids
        plain = tok.encode(text, add_special_tokens=False).ids
        cases.append({"text": text, "ids": ids, "ids_plain": plain,
                      "decoded": tok.decode(plain, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    rng = random.Random(seed)
    n = tok.get_vocab_size(with_added_tokens=True)
    rand = []
    for _ in range(60):
        ids = [rng.randrange(n) for _ in range(rng.randrange(1, 12))]
        rand.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                     "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return {"cases": cases, "random_decode": rand}


def spm_extract(vocab, scores):
    """transformers' SentencePieceExtractor.extract with vocab scores."""
    merges = []
    for piece, score in zip(vocab, scores):
        local = []
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab_ids and right in vocab_ids:
                local.append((left, right, score))
        local.sort(key=lambda x: (vocab_ids[x[0]], vocab_ids[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    return [(m[0], m[1]) for m in merges]


vocab_ids = {}


def spm_gguf(base, out_dir):
    """A llama-model GGUF tokenizer and its transformers equivalent."""
    global vocab_ids
    data = json.loads(base.to_str())
    vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    vocab_ids = {t: i for i, t in enumerate(tokens)}
    rank = {}
    for r, m in enumerate(data["model"]["merges"]):
        a, b = m if isinstance(m, list) else m.split(" ", 1)
        rank.setdefault(a + b, r)
    scores, types = [], []
    for t in tokens:
        if t in common.SPM_SPECIALS:
            scores.append(0.0)
            types.append(2 if t == "<unk>" else 3)
        elif t.startswith("<0x") and len(t) == 6:
            scores.append(0.0)
            types.append(6)
        else:
            scores.append(float(-rank[t]) if t in rank else -1e6)
            types.append(1)
    merges = spm_extract(tokens, scores)
    tok = Tokenizer(models.BPE(vocab=vocab_ids, merges=merges, unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(common.SPM_SPECIALS)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    w = gguf.GGUFWriter(os.path.join(out_dir, "tokenizer.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(vocab_ids["<s>"])
    w.add_eos_token_id(vocab_ids["</s>"])
    w.add_unk_token_id(vocab_ids["<unk>"])
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "tokenizers"))
    args = ap.parse_args()
    texts = common.test_corpus()
    spm = common.spm_bpe()
    toks = {"llama3": common.llama3_bpe(), "gpt2": common.gpt2_bpe(), "spm": spm,
            "metaspace": common.spm_bpe(metaspace=True)}
    for i, (name, tok) in enumerate(list(toks.items()) + [("spm_gguf", None)]):
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        if tok is None:
            tok = spm_gguf(spm, d)
        tok.save(os.path.join(d, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))  # as kiln will see it
        with open(os.path.join(d, "refs.json"), "w", encoding="utf-8") as f:
            json.dump(refs(tok, texts, seed=100 + i), f, ensure_ascii=False, indent=0)
        print(name, tok.get_vocab_size(), "tokens")


if __name__ == "__main__":
    main()
