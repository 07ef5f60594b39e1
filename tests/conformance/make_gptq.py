#!/usr/bin/env python3
"""Builds models/llama-gptq/, a tiny Llama as a GPTQ 4-bit Hugging Face folder, and
fixtures/llama-gptq.ref, llama.cpp's logits for it: the reference for vkllm's GPTQ loader.

Run by developers, not by CI (same tools as make_fixtures.py: transformers and torch in this
Python, llama.cpp's source tree for its converter, a Python with llama-cpp-python):
    python tests/conformance/make_gptq.py --llama-cpp LLAMA_CPP_DIR --llama-python PY \\
        --scratch /tmp/gptq-scratch [--format gptq_v2]
The default writes models/llama-gptq/ and fixtures/llama-gptq.ref; --format gptq_v2 the same
model in GPTQModel's v2 format (zero points stored as they are) as llama-gptq-v2.

How: make_fixtures.py's recipe builds a random Llama (hidden 128, 4 heads of 32 over 2 KV
heads, FFN 256, 2 layers, vocabulary 300); every linear weight is then quantized here,
round-to-nearest, into GPTQ's checkpoint layout (AutoGPTQ/GPTQModel "gptq" format v1, 4
bits, asymmetric, group size 64; the other tensors fp16, as GPTQ checkpoints keep them):
    qweight int32 [in/8, out]  (input 8r+j in bits 4j..4j+3 of row r)
    qzeros  int32 [groups, out/8] (zero point - 1 (v2: the zero point), output 8c+j in bits 4j..)
    scales  fp16  [groups, out],  g_idx int32 [in] (the group of each input)
Layer 1's weights use act-order: g_idx is a permutation of the groups over the inputs
(desc_act), so blocks of 32 inputs mix groups. The reference is llama.cpp: its converter
(convert_hf_to_gguf.py, which dequantizes GPTQ itself) writes an F32 GGUF, and llama.cpp
computes the logits of 24 token ids from it. vkllm reads the same bytes on its own.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import (build_model, compare, convert, llama_cpp_logits, pick_tokens,  # noqa: E402
                           save_tokenizer, sha256_of, top2_gap, write_fixture)

SPEC = dict(name="llama-gptq", cls="Llama", seed=301, gguf=True,
            cfg=dict(vocab_size=300, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                     max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                     tie_word_embeddings=False))
GROUP = 64
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def pack_rows(q):
    """uint4 [rows, cols] -> int32 [rows/8, cols]: row 8r+j in bits 4j of row r."""
    r, c = q.shape
    q = q.reshape(r // 8, 8, c).astype(np.uint32)
    return sum(q[:, j, :] << (4 * j) for j in range(8)).astype(np.uint32).view(np.int32)


def pack_cols(q):
    """uint4 [rows, cols] -> int32 [rows, cols/8]: column 8c+j in bits 4j of column c."""
    r, c = q.shape
    q = q.reshape(r, c // 8, 8).astype(np.uint32)
    return sum(q[:, :, j] << (4 * j) for j in range(8)).astype(np.uint32).view(np.int32)


def quantize(w, g_idx, n_groups, v2):
    """w [out, in] float32 -> GPTQ tensors, and the weights they hold (for the report)."""
    out_f, in_f = w.shape
    wt = w.T  # [in, out]
    scales = np.zeros((n_groups, out_f), np.float16)
    zeros = np.zeros((n_groups, out_f), np.int64)
    q = np.zeros((in_f, out_f), np.int64)
    for g in range(n_groups):
        rows = np.nonzero(g_idx == g)[0]
        lo, hi = np.minimum(wt[rows].min(0), 0), np.maximum(wt[rows].max(0), 0)
        s = ((hi - lo) / 15).astype(np.float16)
        s[s == 0] = 1
        z = np.clip(np.round(-lo / s.astype(np.float32)), 1, 15).astype(np.int64)  # (v1 stores z - 1 >= 0)
        q[rows] = np.clip(np.round(wt[rows] / s.astype(np.float32)) + z, 0, 15)
        scales[g], zeros[g] = s, z
    held = (scales.astype(np.float32)[g_idx] * (q - zeros[g_idx])).T
    return dict(qweight=pack_rows(q), qzeros=pack_cols(zeros if v2 else zeros - 1), scales=scales,
                g_idx=g_idx.astype(np.int32)), held


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", required=True)
    ap.add_argument("--llama-python", required=True)
    ap.add_argument("--scratch", required=True)
    ap.add_argument("--format", default="gptq", choices=["gptq", "gptq_v2"])
    args = ap.parse_args()
    import torch
    from safetensors.numpy import save_file
    torch.set_num_threads(2)
    shutil.rmtree(args.scratch, ignore_errors=True)
    os.makedirs(args.scratch)

    model, _ = build_model(SPEC)
    vocab = model.config.vocab_size
    rng = np.random.default_rng(SPEC["seed"])
    tensors = {}
    for name, p in model.state_dict().items():
        a = p.detach().numpy().astype(np.float32)
        mod = name.rsplit(".", 2)
        if name.endswith(".weight") and mod[-2] in LINEARS:
            in_f = a.shape[1]
            n_groups = in_f // GROUP
            g_idx = np.arange(in_f) // GROUP
            if ".layers.1." in name:  # act-order: a permutation of the groups
                g_idx = g_idx[rng.permutation(in_f)]
            q, held = quantize(a, g_idx, n_groups, args.format == "gptq_v2")
            base = name[: -len(".weight")]
            for k, v in q.items():
                tensors[f"{base}.{k}"] = v
            with torch.no_grad():
                p.copy_(torch.from_numpy(held))
        else:
            a = a.astype(np.float16)
            tensors[name] = a
            with torch.no_grad():
                p.copy_(torch.from_numpy(a.astype(np.float32)))
    hf_dir = os.path.join(args.scratch, "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)  # config.json, then our weights
    os.remove(os.path.join(hf_dir, "model.safetensors"))
    # (safetensors' numpy writer takes the array's memory as C order: make it so)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(hf_dir, "model.safetensors"),
              metadata={"format": "pt"})
    cfg_path = os.path.join(hf_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": GROUP, "desc_act": True,
                                  "sym": False, "checkpoint_format": args.format}
    json.dump(cfg, open(cfg_path, "w"), indent=2)
    save_tokenizer(hf_dir, vocab)

    tokens = pick_tokens(model, vocab, SPEC["seed"], 32)  # (model holds the GPTQ weights)
    name = "llama-gptq" + ("-v2" if args.format == "gptq_v2" else "")
    f32_path = os.path.join(args.scratch, name + ".f32.gguf")
    convert(args.llama_cpp, hf_dir, "f32", f32_path, os.path.join(args.scratch, "convert.log"))
    logits, dec, err = llama_cpp_logits(args.llama_python, f32_path, tokens, args.scratch)
    if err:
        sys.exit(f"llama.cpp: {err}")
    from make_fixtures import hf_logits
    out_dir = os.path.join(HERE, "models", name)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    for f in ("config.json", "model.safetensors"):
        shutil.copyfile(os.path.join(hf_dir, f), os.path.join(out_dir, f))
    st = os.path.join(out_dir, "model.safetensors")
    rep = {"tokens": tokens, "min_top2_gap": float(np.min(top2_gap(logits))),
           "llama_cpp_decode_vs_batch": compare(dec, logits),
           "transformers_with_the_held_weights_vs_llama_cpp": compare(hf_logits(model, tokens), logits),
           "bytes": os.path.getsize(st) + os.path.getsize(os.path.join(out_dir, "config.json"))}
    rep["fixture_bytes"] = write_fixture(os.path.join(HERE, "fixtures", name + ".ref"), sha256_of(st), tokens,
                                         logits)
    print(json.dumps(rep))


if __name__ == "__main__":
    main()
