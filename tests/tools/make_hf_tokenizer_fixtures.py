#!/usr/bin/env python3
"""Writes tests/fixtures/hf_tokenizers/: small Hugging Face tokenizer folders
(tokenizer.json + tokenizer_config.json) and, in expected.txt, the token ids and decoded
text that Hugging Face `transformers` (AutoTokenizer, i.e. the Rust `tokenizers` library
under it) gives for a set of tricky strings. tests/test_hf_tokenizer.c loads each folder
through lib/hf_tokenizer.c + lib/tokenizer.c and must produce the same ids and text.

    /work/venv-conformance/bin/python tests/tools/make_hf_tokenizer_fixtures.py \\
        ../shared/models tests/fixtures/hf_tokenizers

(transformers 4.57.6, tokenizers 0.22.2, sentencepiece, protobuf, gguf.)

The folders stand for the 2023 model families. Real vocabularies are too large to
commit, so each is cut down; the cut keeps the real tokens, merges and pre-tokenizer:
  gpt2      GPT-2's vocab and first 1500 merges (ggml-vocab-gpt-2.gguf), turned into
            tokenizer.json by transformers' own GPT2 converter (vocab.json + merges.txt).
  opt       the same with OPT's four specials (<s> <pad> </s> <unk>) in front, </s> as BOS
            added by a TemplateProcessing post-processor (what the converter writes for
            add_bos_token); 356 tokens, so the test can pad it to opt-hf's 361 rows and
            load it with those weights through the ABI.
  neox      GPT-NeoX's vocab (ggml-vocab-gpt-neox.gguf), NFC normaliser, plus runs of
            spaces as non-special added tokens as in gpt-neox-20b.
  falcon    Falcon's vocab (ggml-vocab-falcon.gguf) and its pre-tokenizer (Punctuation,
            ByteLevel, Digits, Split on three digits), specials >>TITLE<< ... first.
  smollm2   StarCoder's vocab (ggml-vocab-starcoder.gguf; SmolLM2 uses the same
            pipeline: Digits(individual) + ByteLevel), SmolLM2's chat specials,
            clean_up_tokenization_spaces false.
  qwen2     a BPE trained here with Qwen2's exact pipeline (NFC, Split on Qwen2's regex,
            ByteLevel without regex) and its specials.
  llama3    the same with Llama-3's regex, ignore_merges and <|begin_of_text|> added by a
            TemplateProcessing post-processor.
  llama-spm Llama-2's SentencePiece vocab (ggml-vocab-llama-spm.gguf; the first 2000
            pieces after the bytes and the single characters of Latin, Greek, Cyrillic and
            of the test strings) as a tokenizer.model, converted by transformers'
            LlamaTokenizerFast (legacy: Prepend + Replace normaliser, byte fallback,
            merges generated from the vocab); tokenizer.model is then removed.
  llama-spm-metaspace  the same with legacy=False (Metaspace pre-tokenizer, prepend
            scheme "first"), the form newer Llama/Mistral uploads have.

expected.txt lines: NAME <TAB> ADD_SPECIAL <TAB> TEXT_HEX <TAB> IDS <TAB> DECODED_HEX
where IDS = tokenizer(text, add_special_tokens=ADD_SPECIAL).input_ids (added tokens in the
text are always matched, as HF does) and DECODED = tokenizer.decode(IDS,
skip_special_tokens=True). Lines starting with '#' are comments; "# known-diff NAME HEX"
marks a string on which vkllm (like llama.cpp) is known to differ, with the reason
(see known_difference(); the C test counts those lines and does not fail on them).
"""
import json
import os
import shutil
import sys
import tempfile
import unicodedata

from gguf import GGUFReader

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello World!",
    "Hello, world! How are you?",
    "Once upon a time, there was a little girl named Lily.",
    "  two leading spaces and trailing  ",
    "   ",
    " ",
    "\n",
    "\n\n\n",
    "line one\nline two\n\n\ttabbed",
    "windows\r\nline\r\n",
    "numbers 1234567 and 3.14159",
    "3 33 333 3333 33333 333333",
    "3..3 3...3",
    "naïve café, Ünïcödé: Привет мир, 你好世界, 🦙🚀",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅",
    "កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～",
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!??????",
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL",
    "don't won't I'm you're we've they'll she'd",
    "mixed\u00a0nbsp\u3000ideographic space",
    "def main():\n    print(\"hi\")  # comment\n\treturn 0\n",
    "int x = a+b*c; if (x<=y) { y ^= ~z | w; }",
    "$100 + 20% = ?",
    "Äpfel",
    "ied 4 ½ months",
    "e\u0301 combining accent",
    "\u0000nul byte",
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
    types = [int(t[0]) for t in arr("tokenizer.ggml.token_type")]
    merges = arr("tokenizer.ggml.merges")
    merges = [bytes(p).decode("utf-8") for p in merges] if merges else None
    return toks, scores, types, merges


def byte_alphabet():
    """GPT-2's 256 printable stand-ins for the bytes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def cut_bpe(path, n_merges):
    """The byte alphabet (what the vocab has of it) plus what the first n_merges merges make, in the GGUF's id
    order; the control tokens of the GGUF separately."""
    toks, _, types, merges = gguf_vocab(path)
    keep = set(byte_alphabet()) & set(toks)  # GPT-NeoX lacks the bytes UTF-8 never uses
    pairs = []
    for m in merges[:n_merges]:
        a, b = m.split(" ")
        assert a in keep and b in keep, m
        keep.add(a + b)
        pairs.append((a, b))
    normal = [t for t, ty in zip(toks, types) if t in keep and ty == 1]
    assert len(normal) == len(keep), (len(normal), len(keep))
    control = [t for t, ty in zip(toks, types) if ty == 3]
    return normal, pairs, control


def compact(folder):
    """Rewrites tokenizer.json without indentation (same content, a third of the size)."""
    p = os.path.join(folder, "tokenizer.json")
    with open(p, encoding="utf-8") as f:
        data = json.load(f)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
    # save_pretrained records from_slow: a folder as uploaded loads from tokenizer.json
    p = os.path.join(folder, "tokenizer_config.json")
    with open(p, encoding="utf-8") as f:
        config = json.load(f)
    config.pop("from_slow", None)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    for extra in ("special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt",
                  "added_tokens.json"):
        if os.path.exists(os.path.join(folder, extra)):
            os.remove(os.path.join(folder, extra))


def via_gpt2_converter(out, vocab, pairs, config):
    """vocab.json + merges.txt + tokenizer_config.json through transformers'
    GPT2TokenizerFast(from_slow), saved as tokenizer.json."""
    from transformers import GPT2TokenizerFast
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(tmp, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in pairs:
            f.write("%s %s\n" % (a, b))
    with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    tok = GPT2TokenizerFast.from_pretrained(tmp, from_slow=True)
    tok.save_pretrained(out)
    shutil.rmtree(tmp)


def make_gpt2(models, out):
    normal, pairs, control = cut_bpe(models + "/ggml-vocab-gpt-2.gguf", 1500)
    vocab = {t: i for i, t in enumerate(normal + control)}
    via_gpt2_converter(out, vocab, pairs, {
        "tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "model_max_length": 1024})


def make_opt(models, out):
    normal, pairs, _ = cut_bpe(models + "/ggml-vocab-gpt-2.gguf", 96)
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + normal)}
    via_gpt2_converter(out, vocab, pairs, {
        "tokenizer_class": "GPT2Tokenizer", "add_bos_token": True, "bos_token": "</s>", "eos_token": "</s>",
        "unk_token": "</s>", "pad_token": "<pad>", "errors": "replace"})


def build_bpe(out, vocab, pairs, normalizer, pre, decoder, post, added, config, ignore_merges=False,
              byte_fallback=False, unk=None):
    """A tokenizer.json made directly with the `tokenizers` library."""
    from tokenizers import AddedToken, Tokenizer, models
    tk = Tokenizer(models.BPE(vocab=vocab, merges=pairs, dropout=None, unk_token=unk,
                              continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                              byte_fallback=byte_fallback, ignore_merges=ignore_merges))
    if normalizer is not None:
        tk.normalizer = normalizer
    tk.pre_tokenizer = pre
    tk.decoder = decoder
    if post is not None:
        tk.post_processor = post
    tk.add_tokens([AddedToken(t, special=s, normalized=not s) for t, s in added])
    os.makedirs(out, exist_ok=True)
    tk.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=1)


def make_neox(models, out):
    from tokenizers import decoders, normalizers, pre_tokenizers, processors
    normal, pairs, _ = cut_bpe(models + "/ggml-vocab-gpt-neox.gguf", 1500)
    specials = ["<|endoftext|>", "<|padding|>"]
    vocab = {t: i for i, t in enumerate(specials + normal)}
    spaces = [" " * n for n in range(24, 1, -1)]
    build_bpe(out, vocab, pairs, normalizers.NFC(),
              pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
              decoders.ByteLevel(), processors.ByteLevel(trim_offsets=False),
              [(s, True) for s in specials] + [(s, False) for s in spaces],
              {"tokenizer_class": "GPTNeoXTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "add_bos_token": False, "add_eos_token": False,
               "clean_up_tokenization_spaces": False})


def make_falcon(models, out):
    from tokenizers import Regex, decoders, pre_tokenizers, processors
    normal, pairs, control = cut_bpe(models + "/ggml-vocab-falcon.gguf", 1500)
    vocab = {t: i for i, t in enumerate(control + normal)}
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.Split(Regex("[0-9][0-9][0-9]"), behavior="isolated", invert=False),
    ])
    build_bpe(out, vocab, pairs, None, pre, decoders.ByteLevel(), processors.ByteLevel(trim_offsets=True),
              [(t, True) for t in control],
              {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>",
               "add_prefix_space": False, "clean_up_tokenization_spaces": True})


def make_smollm2(models, out):
    from tokenizers import decoders, pre_tokenizers, processors
    normal, pairs, control = cut_bpe(models + "/ggml-vocab-starcoder.gguf", 1500)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>"]
    vocab = {t: i for i, t in enumerate(specials + normal)}
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    build_bpe(out, vocab, pairs, None, pre, decoders.ByteLevel(), processors.ByteLevel(trim_offsets=True),
              [(t, True) for t in specials],
              {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>", "add_prefix_space": False,
               "clean_up_tokenization_spaces": False})


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")


def training_text(models):
    """Text to train the qwen2/llama3 fixtures on: llama.cpp's tokenizer test inputs,
    this script's docstring and source, and the test strings."""
    lines = []
    for name in sorted(os.listdir(models)):
        if name.endswith(".inp"):
            with open(os.path.join(models, name), encoding="utf-8") as f:
                lines += [t for t in f.read().split("\n__ggml_vocab_test__\n") if t]
    lines += __doc__.split("\n\n")
    return lines + TEXTS


def trained(models, regex, size, specials, ignore_merges):
    from tokenizers import Regex, Tokenizer, models as tm, normalizers, pre_tokenizers, trainers
    tk = Tokenizer(tm.BPE(ignore_merges=ignore_merges))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tr = trainers.BpeTrainer(vocab_size=size, min_frequency=1, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(training_text(models), tr)
    d = json.loads(tk.to_str())
    vocab = d["model"]["vocab"]
    pairs = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in d["model"]["merges"]]
    return vocab, pairs


def make_qwen2(models, out):
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
    vocab, pairs = trained(models, QWEN2_REGEX, 1800, [], False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    build_bpe(out, vocab, pairs, normalizers.NFC(), pre, decoders.ByteLevel(),
              processors.ByteLevel(trim_offsets=False), [(t, True) for t in specials],
              {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
               "clean_up_tokenization_spaces": False, "split_special_tokens": False})


def make_llama3(models, out):
    from tokenizers import Regex, decoders, pre_tokenizers, processors
    vocab, pairs = trained(models, LLAMA3_REGEX, 1800, [], True)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    bos = len(vocab)
    post = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    build_bpe(out, vocab, pairs, None, pre, decoders.ByteLevel(), post, [(t, True) for t in specials],
              {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
               "eos_token": "<|end_of_text|>", "clean_up_tokenization_spaces": True,
               "model_input_names": ["input_ids", "attention_mask"]},
              ignore_merges=True)


def make_spm(models, out, legacy, n_pieces=2000):
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        # sentencepiece's generated code wants a newer protobuf than the venv has;
        # transformers ships the same schema, and its converter imports it by this name
        from transformers.utils import sentencepiece_model_pb2_new as pb
        sys.modules["sentencepiece.sentencepiece_model_pb2"] = pb
    from transformers import LlamaTokenizerFast
    toks, scores, types, _ = gguf_vocab(models + "/ggml-vocab-llama-spm.gguf")
    first = next(i for i, ty in enumerate(types) if ty == 1)
    # the first pieces by score, and the single characters (at the end of Llama's vocab)
    # of the scripts the test strings use
    chars = set("".join(TEXTS)) | {"\u2581"}
    keep = [i for i in range(len(toks)) if i < first + n_pieces or
            (len(toks[i]) == 1 and (ord(toks[i]) < 0x500 or toks[i] in chars))]
    m = pb.ModelProto()
    for i in keep:
        p = m.pieces.add()
        p.piece = toks[i]
        p.score = scores[i]
        p.type = {1: p.NORMAL, 2: p.UNKNOWN, 3: p.CONTROL, 4: p.USER_DEFINED, 6: p.BYTE}[types[i]]
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(m.pieces)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    tmp = tempfile.mkdtemp()
    with open(os.path.join(tmp, "tokenizer.model"), "wb") as f:
        f.write(m.SerializeToString())
    tok = LlamaTokenizerFast(vocab_file=os.path.join(tmp, "tokenizer.model"), legacy=legacy, from_slow=True,
                             add_bos_token=True, add_eos_token=False, add_prefix_space=True)
    from tokenizers import AddedToken
    # a non-special added token after the vocabulary (normalized=False: with the legacy
    # Prepend normaliser transformers would match only "\u2581<custom_user>")
    tok.add_tokens([AddedToken("<custom_user>", normalized=False)])
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tok.save_pretrained(out)
    shutil.rmtree(tmp)
    # add_prefix_space in the config makes LlamaTokenizerFast rebuild from tokenizer.model;
    # uploads leave it out and tokenizer.json (Prepend / Metaspace) carries it
    p = os.path.join(out, "tokenizer_config.json")
    with open(p, encoding="utf-8") as f:
        config = json.load(f)
    config.pop("add_prefix_space", None)
    with open(p, "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)


FIXTURES = [
    ("gpt2", make_gpt2),
    ("opt", make_opt),
    ("neox", make_neox),
    ("falcon", make_falcon),
    ("smollm2", make_smollm2),
    ("qwen2", make_qwen2),
    ("llama3", make_llama3),
    ("llama-spm", lambda models, out: make_spm(models, out, True)),
    ("llama-spm-metaspace", lambda models, out: make_spm(models, out, False)),
]


def texts_for(tok):
    """TEXTS plus strings around each added token of the folder."""
    texts = list(TEXTS)
    for t in sorted(tok.get_added_vocab()):
        texts += [t, "Hello" + t + "world", t + " Hello " + t, "a " + t + "\n" + t + t + "b"]
    return texts


def known_difference(name, folder, tok, text, loaded):
    """Why vkllm's tokenizer (lib/tokenizer.c, llama.cpp's behaviour) cannot give
    transformers' ids for this string, or None. Decided by transformers itself:
      - an NFC normaliser on text that NFC changes (lib/tokenizer.c does not normalise);
      - Metaspace with prepend_scheme "first": transformers adds no U+2581 after an added
        token nor in front of text that starts with a space; the llama.cpp-style
        SentencePiece tokenizer does, as the legacy Prepend normaliser does. The string is
        a known difference when the legacy folder (same vocabulary) tokenizes it
        differently."""
    with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
        normalizer = json.load(f).get("normalizer") or {}
    if "NFC" in json.dumps(normalizer) and unicodedata.normalize("NFC", text) != text:
        return "NFC normaliser on text that is not NFC"
    if name == "llama-spm-metaspace":
        legacy = loaded["llama-spm"]
        if legacy(text, add_special_tokens=False).input_ids != tok(text, add_special_tokens=False).input_ids:
            return "Metaspace prepend_scheme first: no U+2581 after added tokens or before a leading space"
    return None


def main():
    models, out_dir = sys.argv[1], sys.argv[2]
    from transformers import AutoTokenizer
    os.makedirs(out_dir, exist_ok=True)
    lines = ["# generated by tests/tools/make_hf_tokenizer_fixtures.py; see its docstring",
             "# NAME\tADD_SPECIAL\tTEXT_HEX\tIDS\tDECODED_HEX"]
    loaded = {}
    for name, make in FIXTURES:
        out = os.path.join(out_dir, name)
        if os.path.exists(out):
            shutil.rmtree(out)
        make(models, out)
        compact(out)
        tok = loaded[name] = AutoTokenizer.from_pretrained(out)
        assert tok.is_fast, name
        for text in texts_for(tok):
            why = known_difference(name, out, tok, text, loaded)
            if why:
                lines.append("# known-diff %s %s %s" % (name, text.encode("utf-8").hex(), why))
            for add_special in (0, 1):
                ids = tok(text, add_special_tokens=bool(add_special)).input_ids
                dec = tok.decode(ids, skip_special_tokens=True)
                lines.append("%s\t%d\t%s\t%s\t%s" % (name, add_special, text.encode("utf-8").hex(),
                                                     " ".join(map(str, ids)), dec.encode("utf-8").hex()))
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print("%-20s %6d tokens %8d bytes" % (name, len(tok), size), file=sys.stderr)
    with open(os.path.join(out_dir, "expected.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
