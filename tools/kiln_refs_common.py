"""Shared pieces of kiln's reference-data tools: the generated training
corpus, the tokenizer builders, and the edge-case test corpus.

Everything is seeded so the tools write the same files on every run.
"""
import random

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

WORDS = ("the a an of to in and or is was were be been it its this that these those "
         "model token weight layer head attention kernel memory guest host device "
         "runtime sandbox tensor matrix vector cache decode prefill sample greedy "
         "llama rope theta scaling embedding norm value key query output input "
         "I you he she we they don't can't won't it's we're they've I'm you'll he'd "
         "quick brown fox jumps over lazy dog hello world kiln fire clay pot").split()
UNICODE_WORDS = ["café", "naïve", "über", "Ünïcödé", "東京", "日本語", "кошка", "Привет",
                 "مرحبا", "שלום", "γειά", "σου", "ﬁne", "ǅemal", "Ⅻ", "½", "٣٤٥", "१२३",
                 "😀", "🚀🔥", "👩‍💻", "e\u0301", "\u00a0nbsp", "tab\tsep"]


def corpus(n_lines=4000, seed=7):
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        k = rng.randrange(3, 14)
        ws = []
        for _ in range(k):
            r = rng.random()
            if r < 0.75:
                w = rng.choice(WORDS)
                if rng.random() < 0.15:
                    w = w.capitalize()
                ws.append(w)
            elif r < 0.85:
                ws.append(str(rng.randrange(0, 100000)))
            elif r < 0.93:
                ws.append(rng.choice(UNICODE_WORDS))
            else:
                ws.append(rng.choice([",", ".", "!", "?", "(x)", "{y}", "==", "->", "#", "$5"]))
        sep = rng.choice([" ", " ", " ", "  ", "\n", "\t"])
        lines.append(sep.join(ws) + rng.choice([".", "!", "?", "", "\n"]))
    return lines


def byte_alphabet():
    return pre_tokenizers.ByteLevel.alphabet()


def llama3_bytes():
    """The Llama 3 layout with no merges: the 256 byte tokens in byte order
    (as GPT-2's bytes_to_unicode numbers them), then BOS and EOS."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, [chr(c) for c in cs]))
    assert sorted(table.values()) == sorted(byte_alphabet())
    vocab = {table[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BOS, EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def llama3_bpe(vocab_size=384):
    """Byte-level BPE in the Llama 3 layout: Split(GPT-4 regex) + ByteLevel,
    ignore_merges, <|begin_of_text|> template."""
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size - 2, initial_alphabet=byte_alphabet(),
                             show_progress=False)
    tok.train_from_iterator(corpus(), tr)
    tok.add_special_tokens([BOS, EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return tok


def gpt2_bpe(vocab_size=320):
    """GPT-2 layout: ByteLevel pre-tokenizer with its own regex."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=vocab_size - 1, initial_alphabet=byte_alphabet(),
                             show_progress=False)
    tok.train_from_iterator(corpus(seed=8), tr)
    tok.add_special_tokens(["<|endoftext|>"])
    tok.add_tokens([AddedToken("kiln!", normalized=False), AddedToken(" <sep> ", lstrip=False)])
    return tok


SPM_SPECIALS = ["<unk>", "<s>", "</s>"]


def spm_bpe(vocab_size=560, metaspace=False):
    """Llama 2 layout: sentencepiece-style BPE with byte fallback. The legacy
    form normalizes (Prepend ▁, Replace ' ' -> ▁); the newer form uses the
    Metaspace pre-tokenizer (prepend_scheme first, no split)."""
    byte_toks = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tr = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPM_SPECIALS + byte_toks,
                             show_progress=False)
    tok.train_from_iterator(corpus(n_lines=1500, seed=9), tr)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    if metaspace:
        tok.normalizer = None
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first",
                                                     split=False)
        tok.decoder = decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="first",
                                                            split=False),
                                         decoders.ByteFallback(), decoders.Fuse()])
    return tok


def test_corpus():
    """Texts chosen to reach every branch of the pre-tokenizer regexes, the
    added-token split, byte fallback and lossy decoding."""
    t = [
        "", " ", "  ", "\n", "\n\n", " \n", "\t", "a", "hello world", "Hello, World!",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure you'll see it's what they've said: we'd, I'd, he's.",
        "SHOUTING I'M YOU'LL IT'S WE'D 'S 'T 'RE 'VE 'M 'LL 'D", "'sx 'tx 'rex",
        "ſ 'ſ 'ſt", "1 12 123 1234 12345 123456 1234567",
        "x=1+2*3; y = (a - b) / c; // comment", "   leading spaces", "trailing spaces   ",
        "multiple   spaces   between", "tabs\tand\t\ttabs", "line1\nline2\r\nline3\rline4",
        "para\n\n\nbreak", "  \n  \n", "end with newline\n", "\u00a0nbsp\u00a0 x",
        "ideographic\u3000space", "ogham\u1680space", "en\u2002em\u2003thin\u2009",
        "line\u2028sep\u2029para", "next\u0085line", "zero\u200bwidth", "\x1c\x1d\x1e\x1f",
        "café naïve über Ünïcödé", "東京は日本の首都です。", "Привет, мир!", "مرحبا بالعالم",
        "שלום עולם", "γειά σου κόσμε", "ﬁne ǅemal Ⅻ ½ ٣٤٥ १२३ ①②③", "e\u0301 combining",
        "😀 emoji 🚀🔥 👩‍💻 family 👨‍👩‍👧", "mixed123abc456", "$5.00 and 50% off!!!",
        "<html><body>text</body></html>", "def f(x):\n    return x * 2\n",
        "{\"json\": [1, 2, 3], \"k\": null}", "...!!!???---", " .a", "\n a", "a\n\nb",
        "??\n\n", " ?\n", "a ' b", "''", "it''s", "don't", "DON'T", "x's", "1'd",
        BOS, EOS, f"{BOS}hello{EOS}", f"text {BOS} in the middle", f"{EOS}{EOS}",
        "<s>", "</s>", "<unk>", "a<s>b</s>c", " <s> x", "<|endoftext|>", "kiln!kiln!",
        "a <sep> b", "<0x41>", "▁already▁metaspace", "▁", "\ud7ff\ue000\uffff",
        "\U0001F600\U0010FFFD", "x" * 300, "ab" * 150 + " " + "12" * 50,
    ]
    rng = random.Random(11)
    lines = corpus(n_lines=200, seed=12)
    for _ in range(40):
        t.append(" ".join(rng.sample(lines, 3)))
    return t
