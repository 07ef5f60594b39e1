#!/usr/bin/env python3
"""Builds models/llama-awq/, a tiny Llama as an AWQ 4-bit Hugging Face folder (AutoAWQ's GEMM
layout), and fixtures/llama-awq.ref: the reference for vkllm's AWQ loader.

Run by developers, not by CI, with the Python of make_fixtures.py (transformers, torch) and
AutoAWQ's source distribution unpacked (only its pure-torch awq/utils/packing_utils.py is
used, loaded by path: the package's kernels are not needed):
    pip download --no-deps autoawq==0.2.9 && tar xzf autoawq-0.2.9.tar.gz
    python tests/conformance/make_awq.py --autoawq autoawq-0.2.9

How: make_fixtures.py's recipe builds a random Llama (hidden 128, 4 heads of 32 over 2 KV
heads, FFN 256, 2 layers, vocabulary 300). Every linear weight is quantized here, round to
nearest, asymmetric, groups of 64 inputs, into AWQ's GEMM layout:
    qweight int32 [in, out/8]      (8 outputs a word, in AWQ's order 0 2 4 6 1 3 5 7)
    qzeros  int32 [in/64, out/8]   (the same packing), scales fp16 [in/64, out]
The other tensors are fp16. The reference logits are transformers' (float32, eager) with
each linear weight set to what AutoAWQ's own dequantize_gemm reads from those tensors, so the
layout is AutoAWQ's and the arithmetic transformers'.
"""
import argparse
import importlib.util
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import (build_model, hf_logits, pick_tokens, sha256_of, top2_gap,  # noqa: E402
                           write_fixture)
from make_gptq import GROUP, LINEARS, SPEC as GPTQ_SPEC  # noqa: E402  (the same model shape)

SPEC = dict(GPTQ_SPEC, name="llama-awq", seed=401, gguf=False)
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's packing order (packing_utils.AWQ_ORDER)


def pack_awq(q):
    """uint4 [rows, cols] -> int32 [rows, cols/8]: of each 8 columns, column AWQ_ORDER[k]
    in bits 4k."""
    r, c = q.shape
    q = q.reshape(r, c // 8, 8).astype(np.uint32)
    return np.ascontiguousarray(sum(q[:, :, AWQ_ORDER[k]] << (4 * k) for k in range(8)).astype(np.uint32)).view(np.int32)


def quantize(w):
    """w [out, in] -> AWQ tensors (qweight, qzeros, scales)."""
    wt = w.T.reshape(w.shape[1] // GROUP, GROUP, w.shape[0])  # [groups, 64, out]
    lo, hi = np.minimum(wt.min(1), 0), np.maximum(wt.max(1), 0)
    s = ((hi - lo) / 15).astype(np.float16)
    s[s == 0] = 1
    z = np.clip(np.round(-lo / s.astype(np.float32)), 0, 15).astype(np.int64)
    q = np.clip(np.round(wt / s.astype(np.float32)[:, None, :]) + z[:, None, :], 0, 15).reshape(w.shape[1], -1)
    return pack_awq(q), pack_awq(z), s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--autoawq", required=True, help="AutoAWQ's unpacked source distribution")
    args = ap.parse_args()
    import torch
    from safetensors.numpy import save_file
    spec = importlib.util.spec_from_file_location(
        "awq_packing", os.path.join(args.autoawq, "awq", "utils", "packing_utils.py"))
    packing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(packing)
    torch.set_num_threads(2)

    model, _ = build_model(SPEC)
    vocab = model.config.vocab_size
    tensors = {}
    for name, p in model.state_dict().items():
        a = p.detach().numpy().astype(np.float32)
        if name.endswith(".weight") and name.rsplit(".", 2)[-2] in LINEARS:
            qw, qz, sc = quantize(a)
            base = name[: -len(".weight")]
            tensors.update({base + ".qweight": qw, base + ".qzeros": qz, base + ".scales": sc})
            held = packing.dequantize_gemm(torch.from_numpy(qw), torch.from_numpy(qz), torch.from_numpy(sc), 4,
                                           GROUP)  # [in, out], fp16
            with torch.no_grad():
                p.copy_(held.T.float())
        else:
            a = a.astype(np.float16)
            tensors[name] = a
            with torch.no_grad():
                p.copy_(torch.from_numpy(a.astype(np.float32)))
    out_dir = os.path.join(HERE, "models", SPEC["name"])
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    os.remove(os.path.join(out_dir, "model.safetensors"))
    for f in os.listdir(out_dir):
        if f != "config.json":
            os.remove(os.path.join(out_dir, f))
    # (safetensors' numpy writer takes the array's memory as C order: make it so)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(out_dir, "model.safetensors"),
              metadata={"format": "pt"})
    cfg_path = os.path.join(out_dir, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": GROUP, "zero_point": True,
                                  "version": "gemm"}
    json.dump(cfg, open(cfg_path, "w"), indent=2)

    tokens = pick_tokens(model, vocab, SPEC["seed"], 32)
    logits = hf_logits(model, tokens)
    st = os.path.join(out_dir, "model.safetensors")
    rep = {"tokens": tokens, "min_top2_gap": float(np.min(top2_gap(logits))),
           "bytes": os.path.getsize(st) + os.path.getsize(cfg_path)}
    rep["fixture_bytes"] = write_fixture(os.path.join(HERE, "fixtures", SPEC["name"] + ".ref"), sha256_of(st),
                                         tokens, logits)
    print(json.dumps(rep))


if __name__ == "__main__":
    main()
