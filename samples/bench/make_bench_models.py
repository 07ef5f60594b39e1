#!/usr/bin/env python3
"""Write random-weight Llama benchmark models as GGUF (F16, Q8_0, Q4_0).

Two shapes (--shape):
  134M  Karpathy's stories110M (dim 768, 12 layers, 12 heads, FFN 2048, vocab
        32000) with an untied output matrix as in Llama, so 134M parameters in
        all (110M without the output matrix). The default.
  1.1B  TinyLlama-1.1B (dim 2048, 22 layers, 32 query heads over 4 KV heads,
        FFN 5632, vocab 32000), for real GPUs.
  6.7B  LLaMA-7B (dim 4096, 32 layers, 32 heads, FFN 11008, vocab 32000): large
        enough to be bandwidth-bound on a real GPU. F16 only is practical here
        (13.5 GB, ~1 min); quantize it with llama-quantize.
  8x134M  Mixtral's layout on the 134M shape: each FFN is 8 experts of width
        1024 of which a token uses 2 (llama.expert_count, expert_used_count;
        stacked ffn_{gate,up,down}_exps and an F32 router ffn_gate_inp, as
        llama.cpp writes them), so a token reads as many FFN weights as the
        134M model's; 305M parameters in all.
Context length 2048.

The weights are random (normal * 0.02, norms 1): the files are for timing only,
their text is gibberish. They are never committed; run this script to make them:

    pip install gguf==0.19.0 numpy
    python3 samples/bench/make_bench_models.py OUT_DIR \
        --vocab ../shared/models/ggml-vocab-llama-spm.gguf

The tokenizer (tokenizer.ggml.*) is copied from a vocab-only GGUF holding a
32000-token Llama SentencePiece vocabulary, such as llama.cpp's
models/ggml-vocab-llama-spm.gguf (shared/models here). Quantization uses the
`gguf` package's reference quantizers (gguf.quants.quantize); every 2-D weight,
token embedding and output included, gets the file's type ("pure" files), the
RMSNorm weights stay F32. The same seed gives the same bytes.
"""
import argparse
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("make_bench_models.py: needs the gguf package (pip install gguf==0.19.0 numpy)")

QT = gguf.GGMLQuantizationType
FILE_TYPES = {  # weight type -> (tensor type, general.file_type)
    "F16": (QT.F16, gguf.LlamaFileType.MOSTLY_F16),
    "Q8_0": (QT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "Q4_0": (QT.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
}

# name -> (dim, layers, query heads, KV heads, FFN width, experts, experts used); all use
# the 32000-token vocab; 0 experts: a dense FFN
SHAPES = {
    "134M": (768, 12, 12, 12, 2048, 0, 0),    # stories110M, Llama-2 style
    "1.1B": (2048, 22, 32, 4, 5632, 0, 0),    # TinyLlama-1.1B
    "6.7B": (4096, 32, 32, 32, 11008, 0, 0),  # LLaMA-7B
    "8x134M": (768, 12, 12, 12, 1024, 8, 2),  # mixture of experts
}
DIM, N_LAYERS, N_HEADS, N_KV_HEADS, FFN, N_EXPERT, N_EXPERT_USED = SHAPES["134M"]  # set by main()
VOCAB, CTX = 32000, 2048
NORM_EPS, ROPE_BASE = 1e-5, 10000.0

TOKENIZER_KEYS = [
    "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
]


def tensor_list(tied):
    """(name, numpy shape [rows, cols] or [n]) in llama.cpp's tensor naming."""
    out = [("token_embd.weight", (VOCAB, DIM))]
    for i in range(N_LAYERS):
        p = f"blk.{i}."
        out += [
            (p + "attn_norm.weight", (DIM,)),
            (p + "attn_q.weight", (DIM, DIM)),
            (p + "attn_k.weight", (DIM // N_HEADS * N_KV_HEADS, DIM)),
            (p + "attn_v.weight", (DIM // N_HEADS * N_KV_HEADS, DIM)),
            (p + "attn_output.weight", (DIM, DIM)),
            (p + "ffn_norm.weight", (DIM,)),
        ]
        if N_EXPERT:
            out += [
                (p + "ffn_gate_inp.weight", (N_EXPERT, DIM)),
                (p + "ffn_gate_exps.weight", (N_EXPERT, FFN, DIM)),
                (p + "ffn_up_exps.weight", (N_EXPERT, FFN, DIM)),
                (p + "ffn_down_exps.weight", (N_EXPERT, DIM, FFN)),
            ]
        else:
            out += [
                (p + "ffn_gate.weight", (FFN, DIM)),
                (p + "ffn_up.weight", (FFN, DIM)),
                (p + "ffn_down.weight", (DIM, FFN)),
            ]
    out.append(("output_norm.weight", (DIM,)))
    if not tied:
        out.append(("output.weight", (VOCAB, DIM)))
    return out


def read_tokenizer(path):
    reader = gguf.GGUFReader(path)
    fields = {}
    for key in TOKENIZER_KEYS:
        f = reader.fields.get(key)
        if f is not None:
            fields[key] = (f.types, f.contents())
    tokens = fields.get("tokenizer.ggml.tokens", (None, []))[1]
    if len(tokens) != VOCAB:
        sys.exit(f"{path}: vocabulary has {len(tokens)} tokens, need {VOCAB}")
    return fields


def add_tokenizer(w, fields):
    for key, (types, value) in fields.items():
        vtype = types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_array(key, value)
        elif vtype == gguf.GGUFValueType.STRING:
            w.add_string(key, value)
        elif vtype == gguf.GGUFValueType.BOOL:
            w.add_bool(key, value)
        elif vtype == gguf.GGUFValueType.UINT32:
            w.add_uint32(key, value)
        else:
            sys.exit(f"tokenizer key {key}: unexpected type {vtype.name}")


def make_weight(seed, index, shape):
    if len(shape) == 1:
        return np.ones(shape, dtype=np.float32)  # RMSNorm gains
    rng = np.random.default_rng([seed, index])  # per tensor: same bytes every run
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)


def write_model(path, base, wtype, tok_fields, seed, tied):
    qtype, ftype = FILE_TYPES[wtype]
    name = f"{base} (random weights, benchmark only)"
    w = gguf.GGUFWriter(path, "llama")
    w.add_name(name)
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(N_LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEADS)
    w.add_head_count_kv(N_KV_HEADS)
    w.add_rope_dimension_count(DIM // N_HEADS)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_layer_norm_rms_eps(NORM_EPS)
    w.add_vocab_size(VOCAB)
    if N_EXPERT:
        w.add_expert_count(N_EXPERT)
        w.add_expert_used_count(N_EXPERT_USED)
    w.add_file_type(ftype)
    add_tokenizer(w, tok_fields)

    n_params = 0
    for index, (tname, shape) in enumerate(tensor_list(tied)):
        data = make_weight(seed, index, shape)
        n_params += data.size
        if data.ndim == 1 or tname.endswith("ffn_gate_inp.weight"):  # norms, routers: F32
            w.add_tensor(tname, data)
        elif qtype == QT.F16:
            w.add_tensor(tname, data.astype(np.float16))
        else:
            w.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return n_params


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", help="directory for the .gguf files (created if missing)")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vocab", default=os.path.join(here, "..", "..", "..", "shared", "models",
                                                      "ggml-vocab-llama-spm.gguf"),
                    help="vocab-only GGUF with a 32000-token Llama SPM tokenizer "
                         "(default: ../shared/models/ggml-vocab-llama-spm.gguf)")
    ap.add_argument("--types", default="F16,Q8_0,Q4_0",
                    help="comma-separated weight types among " + ",".join(FILE_TYPES))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tied", action="store_true",
                    help="share token_embd as output (110M params) instead of an output matrix")
    ap.add_argument("--shape", default="134M", choices=sorted(SHAPES),
                    help="model shape (default 134M)")
    args = ap.parse_args()
    global DIM, N_LAYERS, N_HEADS, N_KV_HEADS, FFN, N_EXPERT, N_EXPERT_USED
    DIM, N_LAYERS, N_HEADS, N_KV_HEADS, FFN, N_EXPERT, N_EXPERT_USED = SHAPES[args.shape]

    types = [t.strip() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in FILE_TYPES:
            ap.error(f"unknown type {t}; known: {', '.join(FILE_TYPES)}")
    if not os.path.isfile(args.vocab):
        ap.error(f"vocab GGUF not found: {args.vocab}")
    tok_fields = read_tokenizer(args.vocab)
    os.makedirs(args.out_dir, exist_ok=True)
    family = "rand-mixtral" if N_EXPERT else "rand-llama"
    base = f"{family}-{args.shape}" + ("-tied" if args.tied else "")
    if args.shape == "134M" and args.tied:
        base = "rand-llama-110M-tied"  # the name it has always had
    for t in types:
        path = os.path.join(args.out_dir, f"{base}.{t}.gguf")
        n = write_model(path, base, t, tok_fields, args.seed, args.tied)
        print(f"{path}: {n / 1e6:.1f}M parameters, {os.path.getsize(path) / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
