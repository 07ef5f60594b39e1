#!/usr/bin/env python3
"""Builds the conformance models of the architectures transformers cannot check (Qwen v1
`qwen`, DeciLM `deci`: their Hugging Face code is remote code only) and the logits
llama.cpp computes for them, as references for the C tests.

Run by developers, not by CI. What it writes and why: tests/conformance/README.md,
"Architectures checked against llama.cpp".

The models are written directly as GGUF with the `gguf` package (there is no Hugging Face
model to convert), with tiny random weights on the Q8_0 grid as make_fixtures.py makes
them. Each is written twice: `models/NAME.q8_0.gguf` (committed, what the tests load) and
an all-F32 copy in the scratch folder holding the same numbers (Q8_0 is lossless on the
grid; checked). llama.cpp computes the reference from the F32 copy: for Q8_0 weights its
CPU backend also quantizes the activations to 8 bits (vec_dot_q8_0_q8_0), an error of
order 0.1 that is llama.cpp's, not the model's.

Pinned tools (the versions the committed files were made with):
    llama-cpp-python==0.3.36   (built from its PyPI sdist, CPU backend, as in
                                tests/fixtures/make_llama_reference.py; it vendors
                                llama.cpp at commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f)
    gguf==0.19.0
    numpy==2.4.6
All three in one Python (no torch or transformers needed).

Usage:
    python tests/conformance/make_llamacpp_fixtures.py --scratch /tmp/llamacpp-scratch \\
        [--only qwen] [--report report.json]
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The Q8_0 grid, the fixture writer and the comparison are make_fixtures.py's (its
# module level needs only numpy; torch is imported inside the functions not used here).
from make_fixtures import (N_CANDIDATES, N_TOKENS, byte_level_alphabet, check_versions,  # noqa: E402
                           compare, sha256_of, to_f16, to_q8_0_grid, top2_gap, write_fixture)

PINNED = {"llama_cpp_python": "0.3.36", "gguf": "0.19.0", "numpy": "2.4.6"}

# Shapes: 3 layers, vocabularies that are not a multiple of 32, head dim 80, matrix rows
# (ggml ne[0]) that are multiples of 32 so every matrix is Q8_0.
MODELS = [
    # Qwen v1: fused attn_qkv [hidden -> 3 x hidden] with bias, no GQA (llama.cpp's tensor
    # shapes fix Q, K and V at hidden each), RMSNorm, neox RoPE, SwiGLU, untied output.
    # qwen.feed_forward_length holds TWICE the MLP width, as Qwen's config.json
    # intermediate_size does (llama.cpp loads ffn_* with n_ff / 2).
    dict(name="qwen", arch="qwen", seed=201, vocab=351, hidden=160, n_head=2, head_dim=80,
         n_ff=64, rms_eps=1e-6,
         features="fused QKV with bias (2 heads of dim 80), neox RoPE, RMSNorm, SwiGLU of "
                  "width 64 (feed_forward_length 128 = 2 x 64, as Qwen writes it)"),
    # DeciLM: head_count_kv and feed_forward_length are per-layer arrays; attention width
    # 4 x 80 = 320 != hidden 128 (key_length 80). Layer 0 is MQA, 1 plain multi-head,
    # 2 GQA 4/2; three FFN widths.
    dict(name="deci", arch="deci", seed=202, vocab=337, hidden=128, n_head=4, head_dim=80,
         n_head_kv=[1, 4, 2], n_ff=[96, 160, 128], rms_eps=1e-5,
         features="4 query heads of dim 80 (width 320 != hidden 128) over 1, 4 and 2 KV "
                  "heads per layer, FFN widths 96/160/128 per layer, RMSNorm, normal RoPE, SwiGLU"),
    # Llama with its matrices in the five K-quant types, quantized by llama.cpp's
    # llama-quantize (K-quant rows are multiples of 256 long). The reference runs on an F32
    # copy of the dequantized K-quant weights, so it holds exactly the weights of the file.
    # Llama with a LoRA adapter in llama.cpp's adapter GGUF format (rank 4, alpha 8) on
    # token_embd, attn_q, attn_v, ffn_down and output, applied with scale 0.8; the reference
    # is llama.cpp applying it at run time (lora_path) to the F32 copy.
    dict(name="llama_lora", arch="llama", seed=204, vocab=300, hidden=128, n_head=4, head_dim=32,
         n_head_kv=2, n_ff=256, rms_eps=1e-5,
         lora=dict(rank=4, alpha=8.0, scale=0.8, targets=["token_embd", "attn_q", "attn_v", "ffn_down", "output"]),
         features="LoRA adapter (rank 4, alpha 8, scale 0.8) on token_embd, attn_q, attn_v, ffn_down and output"),
    dict(name="llama_kquants", arch="llama", seed=203, vocab=384, hidden=256, n_head=4, head_dim=64,
         n_head_kv=2, n_ff=512, rms_eps=1e-5,
         ktypes={"token_embd": "q4_k", "output": "q6_k", "attn_q": "q2_k", "attn_k": "q3_k",
                 "attn_v": "q6_k", "attn_output": "q5_k", "ffn_gate": "q4_k", "ffn_up": "q5_k",
                 "ffn_down": "q3_k"},
         features="K-quant weights (q2_K, q3_K, q4_K, q5_K, q6_K) by llama-quantize; 4 heads of "
                  "dim 64 over 2 KV heads, FFN 512, RMSNorm, normal RoPE, SwiGLU"),
]


def make_weights(spec):
    """name -> float32 array in ggml's row layout ([rows][ne0]). Linear weights
    N(0, 1/fan_in), token embeddings and the output head N(0, 4/hidden) (logits of order
    2), norm gains 1 + N(0, 0.1^2), biases N(0, 0.1^2). Matrices whose rows are a multiple
    of 32 long go on the Q8_0 grid, others on the fp16 grid; 1-D tensors stay float32."""
    rng = np.random.default_rng(spec["seed"])
    E, V, L, H, D = spec["hidden"], spec["vocab"], 3, spec["n_head"], spec["head_dim"]

    def per_layer(v):
        return list(v) if isinstance(v, list) else [v] * L

    kv_heads = per_layer(spec.get("n_head_kv", H))
    n_ff = per_layer(spec["n_ff"])

    def normal(shape, std):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def linear(rows, cols):
        return normal((rows, cols), 1.0 / np.sqrt(cols))

    w = {"token_embd.weight": normal((V, E), 2.0 / np.sqrt(E)),
         "output_norm.weight": 1.0 + normal((E,), 0.1),
         "output.weight": normal((V, E), 2.0 / np.sqrt(E))}
    for l in range(L):
        p = f"blk.{l}."
        q, kv = H * D, kv_heads[l] * D
        w[p + "attn_norm.weight"] = 1.0 + normal((E,), 0.1)
        if spec["arch"] == "qwen":
            w[p + "attn_qkv.weight"] = linear(q + 2 * kv, E)
            w[p + "attn_qkv.bias"] = normal((q + 2 * kv,), 0.1)
        else:
            w[p + "attn_q.weight"] = linear(q, E)
            w[p + "attn_k.weight"] = linear(kv, E)
            w[p + "attn_v.weight"] = linear(kv, E)
        w[p + "attn_output.weight"] = linear(E, q)
        w[p + "ffn_norm.weight"] = 1.0 + normal((E,), 0.1)
        w[p + "ffn_gate.weight"] = linear(n_ff[l], E)
        w[p + "ffn_up.weight"] = linear(n_ff[l], E)
        w[p + "ffn_down.weight"] = linear(E, n_ff[l])
    for name, a in w.items():
        if a.ndim == 2:
            w[name] = to_q8_0_grid(a) if a.shape[1] % 32 == 0 else a.astype(np.float16).astype(np.float32)
    return w, kv_heads, n_ff


def add_tokenizer(writer, vocab):
    """A byte-level BPE vocabulary of exactly `vocab` entries, as make_fixtures.py's
    save_tokenizer makes it and llama.cpp's converter writes it: the 256 GPT-2 byte
    symbols, merges of lowercase letter pairs, <|endoftext|> (control) at the last id.
    llama.cpp needs a tokenizer to load a model; the tests feed token ids."""
    tokens = byte_level_alphabet()
    merges = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            if len(tokens) == vocab - 1:
                break
            merges.append(f"{a} {b}")
            tokens.append(a + b)
    tokens.append("<|endoftext|>")
    assert len(tokens) == vocab
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - 1) + [3])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab - 1)
    writer.add_eos_token_id(vocab - 1)


def write_gguf(path, spec, weights, kv_heads, n_ff, quantized):
    """The model as llama.cpp reads it: Q8_0 for matrices with rows of a multiple of 32
    (all of them here) when `quantized`, else everything F32."""
    import gguf
    arch = spec["arch"]
    wr = gguf.GGUFWriter(path, arch=arch)
    wr.add_name(f"vkllm conformance {spec['name']}")
    wr.add_block_count(3)
    wr.add_context_length(64)
    wr.add_embedding_length(spec["hidden"])
    wr.add_head_count(spec["n_head"])
    if arch == "qwen":
        wr.add_feed_forward_length(2 * n_ff[0])  # Qwen's doubled intermediate_size
    else:
        uniform = len(set(n_ff)) == 1 and len(set(kv_heads)) == 1  # scalars, as converters write
        wr.add_feed_forward_length(n_ff[0] if uniform else n_ff)
        wr.add_head_count_kv(kv_heads[0] if uniform else kv_heads)
        wr.add_key_length(spec["head_dim"])
        wr.add_value_length(spec["head_dim"])
        wr.add_rope_dimension_count(spec["head_dim"])
    wr.add_layer_norm_rms_eps(spec["rms_eps"])
    wr.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantized else gguf.LlamaFileType.ALL_F32)
    wr.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_tokenizer(wr, spec["vocab"])
    for name, a in weights.items():
        if quantized and a.ndim == 2 and a.shape[1] % 32 == 0:
            wr.add_tensor(name, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0),
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        elif quantized and a.ndim == 2:
            wr.add_tensor(name, a.astype(np.float16))
        else:
            wr.add_tensor(name, a)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def check_lossless(q8_path, f32_path):
    """Every tensor of the Q8_0 file, dequantized by the gguf package, must equal the F32
    file's exactly. Returns {type: count}."""
    import gguf
    q8 = {t.name: t for t in gguf.GGUFReader(q8_path).tensors}
    f32 = {t.name: t for t in gguf.GGUFReader(f32_path).tensors}
    if set(q8) != set(f32):
        sys.exit(f"{q8_path}: tensor names differ from the F32 copy")
    types = {}
    for name, t in q8.items():
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        b = np.asarray(f32[name].data, dtype=np.float32)
        if a.shape != b.shape or np.any(a != b):
            sys.exit(f"{name}: the Q8_0 file's tensor differs from the F32 copy")
    return types


class LlamaCpp:
    """llama.cpp on the CPU through llama-cpp-python: float32 KV cache, no flash
    attention, logits for every position; optionally with a LoRA adapter."""

    def __init__(self, path, lora_path=None, lora_scale=1.0):
        import llama_cpp
        self.llm = llama_cpp.Llama(path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True,
                                   verbose=False, type_k=0, type_v=0, flash_attn=False,
                                   lora_path=lora_path, lora_scale=lora_scale)
        self.n_vocab = self.llm.n_vocab()

    def batch(self, tokens):
        """One forward pass over all tokens."""
        self.llm.reset()
        self.llm.eval(tokens)
        return np.array(self.llm.scores[:len(tokens), :self.n_vocab], dtype=np.float32)

    def decode(self, tokens):
        """Token by token through llama.cpp's KV cache."""
        self.llm.reset()
        rows = []
        for t in tokens:
            self.llm.eval([t])
            rows.append(np.array(self.llm.scores[self.llm.n_tokens - 1, :self.n_vocab], dtype=np.float32))
        return np.stack(rows)


def pick_tokens(ref, vocab, seed):
    """As make_fixtures.py: of N_CANDIDATES random sequences (numpy PCG64, seeded), the one
    whose smallest top-1 vs top-2 logit gap (llama.cpp's, F32 weights) is largest."""
    rng = np.random.default_rng(seed)
    best, best_gap = None, -1.0
    for _ in range(N_CANDIDATES):
        tokens = [int(t) for t in rng.integers(0, vocab, N_TOKENS)]
        gap = float(np.min(top2_gap(ref.batch(tokens))))
        if gap > best_gap:
            best, best_gap = tokens, gap
    return best


def write_lora(spec, weights, path):
    """A LoRA adapter as llama.cpp reads it (src/llama-adapter.cpp): general.type "adapter",
    adapter.type "lora", adapter.lora.alpha; NAME.lora_a [rank][cols] and NAME.lora_b
    [rows][rank] (ggml ne: [cols, rank] and [rank, rows]) for each adapted weight NAME.
    B is not zero (as after training), sized so the adapter moves the logits by O(1)."""
    import gguf
    lo = spec["lora"]
    rng = np.random.default_rng(spec["seed"] + 1000)
    wr = gguf.GGUFWriter(path, arch=spec["arch"])
    wr.add_string("general.type", "adapter")
    wr.add_string("adapter.type", "lora")
    wr.add_float32("adapter.lora.alpha", lo["alpha"])
    for name, w in weights.items():
        target = name.split(".")[-2] if name.startswith("blk.") else name.split(".")[0]
        if w.ndim != 2 or target not in lo["targets"]:
            continue
        rows, cols = w.shape
        if name == "token_embd.weight":  # the other way round (llama.cpp's llm_build_inp_embd)
            a = (rng.standard_normal((rows, lo["rank"])) / np.sqrt(lo["rank"])).astype(np.float32)
            b = (rng.standard_normal((cols, lo["rank"])) * 0.05).astype(np.float32)
        else:
            a = (rng.standard_normal((lo["rank"], cols)) / np.sqrt(cols)).astype(np.float32)
            b = (rng.standard_normal((rows, lo["rank"])) * 0.5 / np.sqrt(lo["rank"])).astype(np.float32)
        wr.add_tensor(name + ".lora_a", a)
        wr.add_tensor(name + ".lora_b", b)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def quantize_k(spec, args, f32_path, k_path):
    """llama-quantize the F32 file into the K-quant types of spec["ktypes"], then read it
    back: {name: float32 weights as the gguf package dequantizes them}, {type: count}."""
    import subprocess
    import gguf
    kt = dict(spec["ktypes"])
    cmd = [args.llama_quantize, "--token-embedding-type", kt.pop("token_embd"),
           "--output-tensor-type", kt.pop("output")]
    for name, t in kt.items():
        cmd += ["--tensor-type", f"{name}={t}"]
    subprocess.run(cmd + [f32_path, k_path, "Q4_K_M", "2"], check=True, stdout=subprocess.DEVNULL)
    weights, types = {}, {}
    for t in gguf.GGUFReader(k_path).tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        weights[t.name] = a.reshape([int(n) for n in reversed(t.shape)]) if a.ndim > 1 else a.reshape(-1)
    want = {t.upper() for t in spec["ktypes"].values()}
    if not want <= set(types):
        sys.exit(f"{k_path}: types {types}, wanted all of {want}")
    return weights, types


def make_one(spec, args, models_dir, fixtures_dir):
    name = spec["name"]
    os.makedirs(args.scratch, exist_ok=True)
    weights, kv_heads, n_ff = make_weights(spec)
    f32_path = os.path.join(args.scratch, f"{name}.f32.gguf")
    if "ktypes" in spec:
        # The committed file is llama.cpp's K-quants; the reference an F32 copy of them.
        q8_path = os.path.join(models_dir, f"{name}.gguf")
        write_gguf(os.path.join(args.scratch, f"{name}.src.f32.gguf"), spec, weights, kv_heads, n_ff,
                   quantized=False)
        weights, types = quantize_k(spec, args, os.path.join(args.scratch, f"{name}.src.f32.gguf"), q8_path)
        write_gguf(f32_path, spec, weights, kv_heads, n_ff, quantized=False)
    else:
        q8_path = os.path.join(models_dir, f"{name}.q8_0.gguf")
        write_gguf(q8_path, spec, weights, kv_heads, n_ff, quantized=True)
        write_gguf(f32_path, spec, weights, kv_heads, n_ff, quantized=False)
        types = check_lossless(q8_path, f32_path)
    rep = {"name": name, "features": spec["features"], "vocab": spec["vocab"],
           "tensor_types": types, "bytes": os.path.getsize(q8_path), "sha256": sha256_of(q8_path)}

    lora_path = None
    if "lora" in spec:
        lora_path = os.path.join(models_dir, f"{name}.adapter.gguf")
        write_lora(spec, weights, lora_path)
        rep["adapter_bytes"] = os.path.getsize(lora_path)
    ref = LlamaCpp(f32_path, lora_path, spec["lora"]["scale"] if lora_path else 1.0)
    if ref.n_vocab != spec["vocab"]:
        sys.exit(f"{name}: llama.cpp reports {ref.n_vocab} tokens, expected {spec['vocab']}")
    tokens = pick_tokens(ref, spec["vocab"], spec["seed"])
    logits = ref.batch(tokens)
    rep["tokens"] = tokens
    rep["min_top2_gap"] = float(np.min(top2_gap(logits)))
    rep["logit_std"] = float(np.std(logits))
    rep["logit_absmax"] = float(np.max(np.abs(logits)))
    rep["llama_cpp_f32_decode_vs_batch"] = compare(ref.decode(tokens), logits)
    if list(np.argmax(to_f16(logits), axis=1)) != list(np.argmax(logits, axis=1)):
        sys.exit(f"{name}: fp16 storage changes an argmax")
    rep["f16_storage_err"] = float(np.max(np.abs(to_f16(logits).astype(np.float32) - logits)))
    # For the record: llama.cpp on the committed file (its CPU backend quantizes the
    # activations too: to Q8_0 beside Q8_0 weights, to Q8_K beside K-quants).
    rep["llama_cpp_committed_file_vs_f32"] = compare(LlamaCpp(q8_path, lora_path,
                                                              spec["lora"]["scale"] if lora_path else 1.0).batch(tokens),
                                                     logits)
    if lora_path:  # the adapter must matter: without it the logits move by O(1)
        rep["without_the_adapter_vs_with"] = compare(LlamaCpp(f32_path).batch(tokens), logits)
        if rep["without_the_adapter_vs_with"][0] < 0.5:
            sys.exit(f"{name}: the adapter barely changes the logits")

    fx = os.path.join(fixtures_dir, f"{name}.ref")
    rep["fixture_bytes"] = write_fixture(fx, rep["sha256"], tokens, logits)
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scratch", required=True, help="work folder (the F32 copies)")
    ap.add_argument("--out", default=HERE, help="tests/conformance (models/ and fixtures/ go here)")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--report", help="write the per-model report as JSON here")
    ap.add_argument("--llama-quantize", default="llama-quantize",
                    help="llama.cpp's llama-quantize, built from the same commit (for llama_kquants)")
    args = ap.parse_args()
    check_versions(PINNED)
    models_dir = os.path.join(args.out, "models")
    fixtures_dir = os.path.join(args.out, "fixtures")
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(fixtures_dir, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    reports = []
    for spec in MODELS:
        if only and spec["name"] not in only:
            continue
        print(f"== {spec['name']}", flush=True)
        rep = make_one(spec, args, models_dir, fixtures_dir)
        reports.append(rep)
        print(json.dumps({k: v for k, v in rep.items() if k != "tokens"}), flush=True)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(reports, f, indent=1)


if __name__ == "__main__":
    main()
