#!/usr/bin/env python3
"""Builds the conformance models (tiny, randomly initialised, one per architecture) and
the Hugging Face transformers logits the C tests compare vkllm against.

Run by developers, not by CI. What it writes and why: tests/conformance/README.md.

Pinned tools (the versions the committed files were made with; tests/conformance/requirements.txt):
    torch==2.11.0           (PyPI wheel, run on the CPU)
    transformers==4.57.6    (the version llama.cpp's converter asks for)
    tokenizers==0.22.2
    safetensors==0.8.0
    numpy==2.4.6
    gguf==0.19.0            (reading the GGUF files back; the converter uses its own gguf-py)
llama.cpp's HF -> GGUF converter: convert_hf_to_gguf.py from the llama.cpp that
llama-cpp-python 0.3.36 vendors (commit 0c1e57098bba43ac29e6e3b677cdceebdd22334f):
    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz   # -> llama_cpp_python-0.3.36/vendor/llama.cpp
Optional cross-check with llama.cpp itself (--llama-python): a Python that has
llama-cpp-python 0.3.36 (built as in tests/fixtures/make_llama_reference.py) and numpy.

Usage:
    python tests/conformance/make_fixtures.py \\
        --llama-cpp llama_cpp_python-0.3.36/vendor/llama.cpp \\
        --scratch /tmp/conformance-scratch \\
        [--llama-python /path/to/venv-with-llama-cpp/bin/python] [--only llama,mamba]
"""
import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np

MAGIC = b"VKLLMREF"
VERSION = 1
N_TOKENS = 24
N_CANDIDATES = 32
PINNED = {"torch": "2.11.0", "transformers": "4.57.6", "tokenizers": "0.22.2",
          "safetensors": "0.8.0", "numpy": "2.4.6", "gguf": "0.19.0"}
HERE = os.path.dirname(os.path.abspath(__file__))

# Every architecture: 3 layers, a vocabulary that is not a multiple of 32, and widths whose
# matrix-product input dimensions are multiples of 32 so that llama.cpp's converter can
# store them as Q8_0 (a row length that is not a multiple of 32 makes it fall back to F16).
# "cfg" goes to the transformers config class as keyword arguments.
MODELS = [
    dict(name="llama", cls="Llama", seed=101, gguf=True,
         features="RMSNorm, RoPE (normal mode), 5 query heads of dim 80 over 1 KV head "
                  "(attention width 400 != hidden 160; key_length 80), SwiGLU",
         cfg=dict(vocab_size=389, hidden_size=160, intermediate_size=192, num_hidden_layers=3,
                  num_attention_heads=5, num_key_value_heads=1, head_dim=80,
                  max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False)),
    dict(name="mistral", cls="Mistral", seed=102, gguf=True,
         extra_kv={"llama.attention.sliding_window": 8},
         features="as llama, GQA 4/2, sliding window 8 < 24 tokens",
         cfg=dict(vocab_size=355, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  sliding_window=8, max_position_embeddings=64, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)),
    dict(name="mixtral", cls="Mixtral", seed=103, gguf=True, candidates=256,
         features="MoE: 4 SwiGLU experts, top-2, softmax over the chosen two; GQA 4/2",
         cfg=dict(vocab_size=347, hidden_size=128, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                  num_local_experts=4, num_experts_per_tok=2, sliding_window=None,
                  max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False)),
    dict(name="falcon7b", cls="Falcon", seed=104, gguf=True,
         features="Falcon-7B layout: one LayerNorm, parallel attention+MLP, multi-query "
                  "(2 heads of dim 80 over 1 KV head), neox RoPE, GELU 4x, tied output",
         cfg=dict(vocab_size=331, hidden_size=160, num_hidden_layers=3, num_attention_heads=2,
                  num_kv_heads=1, multi_query=True, new_decoder_architecture=False,
                  parallel_attn=True, bias=False, alibi=False, layer_norm_epsilon=1e-5,
                  max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True)),
    dict(name="falcon40b", cls="Falcon", seed=105, gguf=True,
         features="Falcon-40B layout: two LayerNorms (ln_attn, ln_mlp), parallel, "
                  "4 heads of dim 40 in 2 KV groups (grouped fused QKV), GELU 4x, tied output",
         cfg=dict(vocab_size=339, hidden_size=160, num_hidden_layers=3, num_attention_heads=4,
                  num_kv_heads=2, new_decoder_architecture=True, num_ln_in_parallel_attn=2,
                  parallel_attn=True, bias=False, alibi=False, layer_norm_epsilon=1e-5,
                  max_position_embeddings=64, rope_theta=10000.0, tie_word_embeddings=True)),
    dict(name="mpt", cls="Mpt", seed=106, gguf=True, hub_architecture="MPTForCausalLM",
         features="ALiBi (2 heads of dim 80, bias max 8), LayerNorm without bias, no biases, "
                  "GELU 4x, tied output",
         cfg=dict(vocab_size=373, d_model=160, n_heads=2, n_layers=3, expansion_ratio=4,
                  max_seq_len=64, no_bias=True, layer_norm_epsilon=1e-5,
                  attn_config=dict(alibi=True, alibi_bias_max=8, clip_qkv=None))),
    dict(name="mpt_clip", cls="Mpt", seed=107, gguf=True, hub_architecture="MPTForCausalLM",
         features="MPT with clip_qkv 1.25 (clamps a good share of the fused QKV outputs) and "
                  "ALiBi over 3 heads (non-power-of-two slopes)",
         cfg=dict(vocab_size=363, d_model=96, n_heads=3, n_layers=3, expansion_ratio=4,
                  max_seq_len=64, no_bias=True, layer_norm_epsilon=1e-5,
                  attn_config=dict(alibi=True, alibi_bias_max=8, clip_qkv=1.25))),
    # With tied embeddings, random weights let the input token's own embedding dominate the
    # output (top-1 = input token at every position); a smaller embedding LayerNorm gain
    # (BLOOM) or a larger mixer output (Mamba) gives the layers their share.
    dict(name="bloom", cls="Bloom", seed=108, gguf=True,
         init_scale={"word_embeddings_layernorm.": 0.25},
         features="ALiBi over 6 heads (non-power-of-two), LayerNorm after the embedding, "
                  "fused QKV, biases, GELU (tanh) 4x, tied output",
         cfg=dict(vocab_size=367, hidden_size=96, n_layer=3, n_head=6, layer_norm_epsilon=1e-5,
                  tie_word_embeddings=True)),
    dict(name="gptneox", cls="GPTNeoX", seed=109, gguf=True,
         features="partial RoPE 25 % (16 of 64 dims, neox mode), parallel residual with two "
                  "LayerNorms, fused QKV, biases, GELU, untied output",
         cfg=dict(vocab_size=379, hidden_size=128, num_hidden_layers=3, num_attention_heads=2,
                  intermediate_size=256, rotary_pct=0.25, rotary_emb_base=10000,
                  max_position_embeddings=64, use_parallel_residual=True, layer_norm_eps=1e-5,
                  hidden_act="gelu", tie_word_embeddings=False)),
    dict(name="phi2", cls="Phi", seed=110, gguf=True,
         features="Phi-2 layout: one LayerNorm, parallel, partial RoPE 32 of 80 dims (neox), "
                  "biases everywhere including the output head, GELU (tanh) 4x",
         cfg=dict(vocab_size=353, hidden_size=160, intermediate_size=640, num_hidden_layers=3,
                  num_attention_heads=2, num_key_value_heads=2, partial_rotary_factor=0.4,
                  max_position_embeddings=64, layer_norm_eps=1e-5, hidden_act="gelu_new",
                  rope_theta=10000.0, qk_layernorm=False, tie_word_embeddings=False)),
    dict(name="qwen2", cls="Qwen2", seed=111, gguf=True,
         features="RMSNorm, RoPE base 1e6, GQA 4/2, biases on Q, K, V only, SwiGLU",
         cfg=dict(vocab_size=397, hidden_size=128, intermediate_size=224, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rms_norm_eps=1e-6, rope_theta=1000000.0, use_sliding_window=False,
                  tie_word_embeddings=False)),
    dict(name="stablelm", cls="StableLm", seed=112, gguf=True,
         features="LayerNorm, partial RoPE 25 % (8 of 32 dims, neox), GQA 4/2, Q/K/V biases, "
                  "SwiGLU, sequential residual",
         cfg=dict(vocab_size=341, hidden_size=128, intermediate_size=256, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.25,
                  use_qkv_bias=True, qk_layernorm=False, use_parallel_residual=False,
                  layer_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=64,
                  tie_word_embeddings=False)),
    dict(name="mamba", cls="Mamba", seed=113, gguf=True, init_scale={"mixer.out_proj.": 3.0},
         features="selective SSM: d_inner 256, d_state 16, conv kernel 4, dt_rank 8 "
                  "(dt_proj stays F16: rows of 8), RMSNorm, tied output",
         cfg=dict(vocab_size=328, hidden_size=128, state_size=16, num_hidden_layers=3, expand=2,
                  conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
                  layer_norm_epsilon=1e-5, residual_in_fp32=True, tie_word_embeddings=True)),
    dict(name="opt", cls="OPT", seed=114, gguf=False,
         features="learned positions (offset 2), pre-LayerNorm, ReLU, biases, tied output; "
                  "llama.cpp's converter has no OPT: Hugging Face folder only",
         cfg=dict(vocab_size=361, hidden_size=96, num_hidden_layers=3, ffn_dim=192,
                  num_attention_heads=3, max_position_embeddings=64, do_layer_norm_before=True,
                  word_embed_proj_dim=96, enable_bias=True, activation_function="relu",
                  tie_word_embeddings=True)),
]
# Not here: DeciLM and Qwen (v1) exist only as remote code on the Hub (transformers 4.57.6
# has no native class for them); make_llamacpp_fixtures.py checks them against llama.cpp.
# StripedHyena: make_stripedhyena.py, against Together's stripedhyena package.


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Weights on the Q8_0 grid


def round_half_away(x):
    """roundf(): halves go away from zero (numpy's round goes to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def to_q8_0_grid(w):
    """Rounds each block of 32 along the last axis (ggml's ne[0], a matrix row) to what a
    Q8_0 block can hold: d = fp16(amax / 127), q = round(x / d), x' = q * d. Quantizing x'
    again (llama.cpp's converter) gives back the same d and q, so Q8_0 stores x' exactly."""
    shape = w.shape
    b = w.reshape(-1, 32).astype(np.float32)
    d = (np.abs(b).max(axis=1, keepdims=True) / np.float32(127)).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d == 0, 0, round_half_away(b / d))
    assert np.abs(q).max() <= 127
    return (q * d).astype(np.float32).reshape(shape)


def snap_weights(model):
    """Every tensor of 2+ dimensions is put on the Q8_0 grid when its last (input) dimension
    is a multiple of 32, else on the fp16 grid (what the converter falls back to). 1-D
    tensors (norms, biases) stay float32: the converter keeps them in F32."""
    import torch
    counts = {"q8_0 grid": 0, "f16 grid": 0, "f32": 0}
    with torch.no_grad():
        for _, p in model.named_parameters():
            w = p.detach().numpy()
            if p.ndim >= 2 and w.shape[-1] % 32 == 0:
                p.copy_(torch.from_numpy(to_q8_0_grid(w)))
                counts["q8_0 grid"] += 1
            elif p.ndim >= 2:
                p.copy_(torch.from_numpy(w.astype(np.float16).astype(np.float32)))
                counts["f16 grid"] += 1
            else:
                counts["f32"] += 1
    return counts


# ---------------------------------------------------------------------------------------
# Model construction


def init_weights(model, spec, gen):
    """Random weights at scales where every part of the block matters: linear weights
    N(0, 1/fan_in), embeddings and the output head N(0, 4/hidden) (logits of order 2),
    norm gains 1 + N(0, 0.1^2), biases N(0, 0.1^2); Mamba's A, D, dt as the Mamba paper
    initialises them, with noise."""
    import torch

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    hidden = model.config.hidden_size
    with torch.no_grad():
        for mname, mod in model.named_modules():
            kind = type(mod).__name__
            if "Norm" in kind:
                if getattr(mod, "weight", None) is not None:
                    mod.weight.copy_(1.0 + normal(mod.weight.shape, 0.1))
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(normal(mod.bias.shape, 0.1))
            elif isinstance(mod, torch.nn.Embedding):
                if mod.num_embeddings > 100 and mod.embedding_dim == hidden and "pos" not in mname:
                    mod.weight.copy_(normal(mod.weight.shape, 2.0 / hidden ** 0.5))
                else:  # OPT's learned positions
                    mod.weight.copy_(normal(mod.weight.shape, 0.5))
            elif isinstance(mod, (torch.nn.Linear, torch.nn.Conv1d)):
                fan_in = mod.weight[0].numel()
                std = 1.0 / fan_in ** 0.5
                if mod.weight.shape[0] == model.config.vocab_size:  # output head
                    std = 2.0 / fan_in ** 0.5
                mod.weight.copy_(normal(mod.weight.shape, std))
                if mod.bias is not None:
                    mod.bias.copy_(normal(mod.bias.shape, 0.1))
        if spec["cls"] == "Mamba":
            for layer in model.backbone.layers:
                mx = layer.mixer
                d_inner, d_state = mx.A_log.shape
                a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
                mx.A_log.copy_(torch.log(a) + normal(mx.A_log.shape, 0.1))
                mx.D.copy_(1.0 + normal(mx.D.shape, 0.1))
                lo, hi = np.log(1e-3), np.log(1e-1)
                dt = torch.exp(torch.rand(d_inner, generator=gen) * (hi - lo) + lo)
                mx.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        # per-model rescaling (see MODELS): keeps the top-1 from being just the input token
        for pattern, factor in spec.get("init_scale", {}).items():
            hit = [p for n, p in model.named_parameters() if pattern in n]
            assert hit, pattern
            for p in hit:
                p.mul_(factor)
    model.tie_weights()


def build_model(spec):
    import torch
    import transformers
    config_cls = getattr(transformers, spec["cls"] + "Config")
    model_cls = getattr(transformers, spec["cls"] + "ForCausalLM")
    cfg = dict(spec["cfg"])
    vocab = cfg["vocab_size"]
    # the tokenizer's one special token sits at the last id
    cfg.update(bos_token_id=vocab - 1, eos_token_id=vocab - 1, pad_token_id=None)
    config = config_cls(**cfg)
    config._attn_implementation = "eager"
    torch.manual_seed(spec["seed"])
    model = model_cls(config).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(spec["seed"])
    init_weights(model, spec, gen)
    counts = snap_weights(model)
    return model, counts


def byte_level_alphabet():
    """GPT-2's byte -> printable character map, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def save_tokenizer(out_dir, vocab_size):
    """A byte-level BPE tokenizer with exactly vocab_size entries: the 256 byte symbols,
    merges of lowercase letter pairs ("aa", "ab", ...) and <|endoftext|> at the last id.
    Its content does not matter for the logits (the tests feed token ids); llama.cpp's
    converter needs a tokenizer whose size matches the embedding rows."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    n_merges = vocab_size - 256 - 1
    alpha = byte_level_alphabet()
    vocab = {c: i for i, c in enumerate(alpha)}
    merges = []
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in letters:
            if len(merges) == n_merges:
                break
            merges.append((a, b))
            vocab[a + b] = len(vocab)
    assert len(merges) == n_merges
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>")
    assert len(fast) == vocab_size, (len(fast), vocab_size)
    fast.save_pretrained(out_dir)


def set_architecture(hf_dir, arch):
    """MPT checkpoints on the Hub (mosaicml/mpt-7b, ...) name their class MPTForCausalLM
    (remote code), and that is the name llama.cpp's converter registers; transformers' own
    class, with the same tensor names and config keys, is MptForCausalLM."""
    path = os.path.join(hf_dir, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["architectures"] = [arch]
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def hf_logits(model, tokens):
    import torch
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0].to(torch.float32).numpy()


def top2_gap(logits):
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def router_margins(model, tokens):
    """MoE only: for every layer and token, the router logit of the last chosen expert minus
    the best of the others. A small margin lets a tiny numerical difference pick another
    expert (a large change of the output), so the test sequence keeps these margins wide."""
    layers = getattr(getattr(model, "model", None), "layers", [])
    gates = [l.block_sparse_moe.gate for l in layers if hasattr(l, "block_sparse_moe")]
    if not gates:
        return None
    k = model.config.num_experts_per_tok
    seen = []
    hooks = [g.register_forward_hook(lambda m, i, o: seen.append(o.detach().numpy())) for g in gates]
    try:
        hf_logits(model, tokens)
    finally:
        for h in hooks:
            h.remove()
    r = np.sort(np.concatenate(seen), axis=1)[:, ::-1]
    return r[:, k - 1] - r[:, k]


def pick_tokens(model, vocab, seed, candidates):
    """`candidates` sequences of N_TOKENS uniform random ids (numpy PCG64, seeded); keeps the
    one whose smallest best-vs-second logit gap (and, for MoE, smallest router margin) is
    largest, so that a small numerical difference cannot flip a top-1 comparison or an
    expert choice by accident (a random model is close to ties at many positions)."""
    rng = np.random.default_rng(seed)
    best, best_score = None, -1.0
    for _ in range(candidates):
        tokens = [int(t) for t in rng.integers(0, vocab, N_TOKENS)]
        score = float(np.min(top2_gap(hf_logits(model, tokens))))
        margins = router_margins(model, tokens)
        if margins is not None:
            score = min(score, float(np.min(margins)))
        if score > best_score:
            best, best_score = tokens, score
    return best


def hf_decode_logits(model, tokens):
    """Token by token through the model's own cache: a second HF path to compare with."""
    import torch
    rows = []
    with torch.no_grad():
        past = None
        cache_params = None
        for i, t in enumerate(tokens):
            ids = torch.tensor([[t]], dtype=torch.long)
            if type(model).__name__ == "MambaForCausalLM":
                # transformers writes the new conv input at slot clamp(cache_position, 0, k-1)
                # after shifting the state left, which is only right for positions >= k-1
                # (generate() always prefills a whole prompt first): pass k-1 from step 1 on.
                k = model.config.conv_kernel
                out = model(input_ids=ids, cache_params=cache_params, use_cache=True,
                            cache_position=torch.tensor([max(i, k - 1)]))
                cache_params = out.cache_params
            else:
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
            rows.append(out.logits[0, -1].to(torch.float32).numpy())
    return np.stack(rows)


GELU_CLASSES = ("GELU", "GELUActivation", "NewGELUActivation", "BloomGelu", "PytorchGELUTanh",
                "FastGELUActivation", "GELUTanh")


def with_ggml_gelu(model):
    """A copy of the model whose GELUs compute what ggml's CPU backend does: the tanh form,
    looked up in a table indexed by the fp16-rounded input and stored as fp16 (identity
    above 10, zero below -10). Only to explain llama.cpp's differences from transformers
    on the GELU models; the fixtures hold transformers' own logits."""
    import copy
    import torch

    class GgmlGelu(torch.nn.Module):
        def forward(self, x):
            h = x.to(torch.float16).to(torch.float32)
            y = 0.5 * h * (1.0 + torch.tanh(0.7978845608028654 * h * (1.0 + 0.044715 * h * h)))
            y = y.to(torch.float16).to(torch.float32)
            return torch.where(x >= 10.0, x, torch.where(x <= -10.0, torch.zeros_like(x), y))

    m = copy.deepcopy(model)
    found = 0
    for parent in list(m.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child).__name__ in GELU_CLASSES:
                setattr(parent, child_name, GgmlGelu())
                found += 1
    return m if found else None


def mpt_clip_fraction(model, tokens):
    """Share of the fused QKV outputs that clip_qkv clamps (so the test can fail)."""
    import torch
    seen = []
    clip = model.config.attn_config.clip_qkv
    hooks = [blk.attn.Wqkv.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
             for blk in model.transformer.blocks]
    hf_logits(model, tokens)
    for h in hooks:
        h.remove()
    v = torch.cat([s.flatten() for s in seen])
    return float((v.abs() > clip).float().mean())


# ---------------------------------------------------------------------------------------
# Conversion and checks


CONVERT_SHIM = r"""
import sys
sys.path[:0] = [sys.argv[1]]
import conversion.base as base
# A tiny tokenizer hashes to no known pre-tokenizer; it uses GPT-2's regex, so say so.
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
import convert_hf_to_gguf
sys.argv = ["convert_hf_to_gguf.py"] + sys.argv[2:]
convert_hf_to_gguf.main()
"""


def convert(llama_cpp_dir, hf_dir, outtype, outfile, log_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(llama_cpp_dir, "gguf-py"), llama_cpp_dir])
    cmd = [sys.executable, "-c", CONVERT_SHIM, llama_cpp_dir, hf_dir,
           "--outtype", outtype, "--outfile", outfile]
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"converter failed for {hf_dir} ({outtype}); log: {log_path}")


def add_gguf_keys(path, keys):
    """Adds uint32 metadata keys to a converted file (tensors and other keys copied as they
    are) with gguf's own gguf_new_metadata copy routine. Used for Mistral: llama.cpp's
    converter drops config.json's sliding_window (llama.cpp runs Mistral with full
    attention), so the window is written under llama.cpp's key name for it."""
    import gguf
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata
    tmp = path + ".tmp"
    reader = gguf.GGUFReader(path)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    align = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if align is not None:
        writer.data_alignment = align.contents()
    new = {k: MetadataDetails(gguf.GGUFValueType.UINT32, int(v)) for k, v in keys.items()}
    copy_with_new_metadata(reader, writer, new, [])
    del reader
    os.replace(tmp, path)


def gguf_tensors(path):
    """name -> (ggml type name, float32 array in the file's own row layout)."""
    import gguf
    reader = gguf.GGUFReader(path)
    out = {}
    for t in reader.tensors:
        vals = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (t.tensor_type.name, np.asarray(vals, dtype=np.float32))
    return out


def check_lossless(q8_path, f32_path):
    """The Q8_0 file, dequantized, must equal the all-F32 conversion of the same folder
    (same converter transforms) exactly. Returns (max abs diff, {type: count})."""
    q8, f32 = gguf_tensors(q8_path), gguf_tensors(f32_path)
    if set(q8) != set(f32):
        sys.exit(f"{q8_path}: tensor names differ from the F32 conversion")
    worst, types = 0.0, {}
    for name, (qt, qv) in q8.items():
        ft, fv = f32[name]
        types[qt] = types.get(qt, 0) + 1
        if ft != "F32" or qv.shape != fv.shape:
            sys.exit(f"{name}: F32 file has {ft} {fv.shape}, Q8_0 file {qt} {qv.shape}")
        worst = max(worst, float(np.max(np.abs(qv - fv))) if qv.size else 0.0)
    return worst, types


def gguf_kv_summary(path):
    import gguf
    reader = gguf.GGUFReader(path)
    out = {}
    for f in reader.fields.values():
        if f.name.startswith(("tokenizer.", "general.")) and f.name not in ("general.architecture",):
            continue
        if f.types and f.types[0] != gguf.GGUFValueType.ARRAY:
            v = f.contents()
            out[f.name] = v.item() if hasattr(v, "item") else v
    return out


def to_f16(rows):
    rows = np.asarray(rows, dtype=np.float32)
    if not np.all(np.isfinite(rows)):
        sys.exit("non-finite logits")
    half = rows.astype(np.float16)
    if not np.all(np.isfinite(half)):
        sys.exit("a logit is outside the float16 range")
    return half


def write_fixture(path, model_sha256, tokens, logits):
    """VKLLMREF version 1 (tests/fixtures/llama_reference.md): one prompt with no text,
    add_bos 0, parse_special 0, the token ids, the logits of every position, no greedy
    continuation."""
    n_tokens, n_vocab = logits.shape
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<II", VERSION, 1))
        f.write(bytes.fromhex(model_sha256))
        f.write(struct.pack("<I", 0))
        f.write(struct.pack("<6I", 0, 0, n_tokens, n_vocab, 0, 0))
        f.write(np.asarray(tokens, dtype="<i4").tobytes())
        f.write(to_f16(logits).astype("<f2").tobytes())
    return os.path.getsize(path)


def compare(a, b):
    """max abs error, smallest row cosine, positions where the argmax differs."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return (float(np.max(np.abs(a - b))), float(np.min(cos)),
            [int(i) for i in np.nonzero(np.argmax(a, axis=1) != np.argmax(b, axis=1))[0]])


LLAMA_CHECK = r"""
import json, sys
import numpy as np
import llama_cpp
path, tokens_json, out_batch, out_decode = sys.argv[1:5]
tokens = json.loads(tokens_json)
# float32 KV cache (the default F16 cache alone adds errors of order 1e-3), no flash attention
llm = llama_cpp.Llama(path, n_ctx=64, n_batch=64, n_threads=2, logits_all=True, verbose=False,
                      type_k=0, type_v=0, flash_attn=False)
n_vocab = llm.n_vocab()
llm.reset()
llm.eval(tokens)
np.save(out_batch, np.array(llm.scores[:len(tokens), :n_vocab], dtype=np.float32))
llm.reset()
rows = []
for t in tokens:
    llm.eval([t])
    rows.append(np.array(llm.scores[llm.n_tokens - 1, :n_vocab], dtype=np.float32))
np.save(out_decode, np.stack(rows))
print(llama_cpp.__version__)
"""


def llama_cpp_logits(python, gguf_path, tokens, scratch):
    batch = os.path.join(scratch, "llamacpp_batch.npy")
    decode = os.path.join(scratch, "llamacpp_decode.npy")
    r = subprocess.run([python, "-c", LLAMA_CHECK, gguf_path, json.dumps(tokens), batch, decode],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, (r.stderr or r.stdout).strip().splitlines()[-1:]
    return np.load(batch), np.load(decode), []


# ---------------------------------------------------------------------------------------


def make_one(spec, args, models_dir, fixtures_dir):
    name = spec["name"]
    scratch = os.path.join(args.scratch, name)
    shutil.rmtree(scratch, ignore_errors=True)
    os.makedirs(scratch)
    model, counts = build_model(spec)
    vocab = model.config.vocab_size
    tokens = pick_tokens(model, vocab, spec["seed"], spec.get("candidates", N_CANDIDATES))

    hf_dir = os.path.join(scratch, "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    save_tokenizer(hf_dir, vocab)
    if spec.get("hub_architecture"):
        set_architecture(hf_dir, spec["hub_architecture"])

    logits = hf_logits(model, tokens)
    dec = hf_decode_logits(model, tokens)
    rep = {"name": name, "features": spec["features"], "vocab": vocab, "tokens": tokens,
           "weights": counts}
    rep["hf_decode_vs_batch"] = compare(logits, dec)
    rep["min_top2_gap"] = float(np.min(top2_gap(logits)))
    margins = router_margins(model, tokens)
    if margins is not None:
        rep["min_router_margin"] = float(np.min(margins))
    rep["logit_std"] = float(np.std(logits))
    rep["logit_absmax"] = float(np.max(np.abs(logits)))
    if list(np.argmax(logits.astype(np.float16), axis=1)) != list(np.argmax(logits, axis=1)):
        sys.exit(f"{name}: fp16 storage changes an argmax")
    rep["f16_storage_err"] = float(np.max(np.abs(logits.astype(np.float16).astype(np.float32) - logits)))
    if spec["cls"] == "Mpt" and model.config.attn_config.clip_qkv:
        rep["clip_fraction"] = mpt_clip_fraction(model, tokens)

    if spec["gguf"]:
        gguf_path = os.path.join(models_dir, f"{name}.q8_0.gguf")
        f32_path = os.path.join(scratch, f"{name}.f32.gguf")
        convert(args.llama_cpp, hf_dir, "q8_0", gguf_path, os.path.join(scratch, "convert_q8_0.log"))
        convert(args.llama_cpp, hf_dir, "f32", f32_path, os.path.join(scratch, "convert_f32.log"))
        if spec.get("extra_kv"):
            add_gguf_keys(gguf_path, spec["extra_kv"])
        rep["lossless_maxdiff"], rep["tensor_types"] = check_lossless(gguf_path, f32_path)
        if rep["lossless_maxdiff"] != 0.0:
            sys.exit(f"{name}: Q8_0 file differs from the F32 conversion by {rep['lossless_maxdiff']}")
        rep["file"] = os.path.relpath(gguf_path, HERE)
        rep["bytes"] = os.path.getsize(gguf_path)
        rep["sha256"] = sha256_of(gguf_path)
        rep["kv"] = gguf_kv_summary(gguf_path)
        if args.llama_python:
            # the Q8_0 file as committed, and the F32 conversion (no weight or activation
            # quantization in llama.cpp: isolates the converter's mapping and the graph)
            for key, path in (("llama_cpp_q8_0", gguf_path), ("llama_cpp_f32", f32_path)):
                lb, ld, err = llama_cpp_logits(args.llama_python, path, tokens, scratch)
                if err:
                    rep[key] = {"error": err}
                elif lb.shape != logits.shape:
                    rep[key] = {"error": [f"llama.cpp logits {lb.shape} vs HF {logits.shape}"]}
                else:
                    rep[key] = {"batch": compare(lb, logits), "decode": compare(ld, logits),
                                "per_position_maxerr": [round(float(x), 6) for x in
                                                        np.max(np.abs(lb - logits), axis=1)]}
                    if key == "llama_cpp_f32" and (gm := with_ggml_gelu(model)) is not None:
                        rep[key]["batch_vs_hf_with_ggml_gelu"] = compare(lb, hf_logits(gm, tokens))
    else:
        hf_out = os.path.join(models_dir, f"{name}-hf")
        shutil.rmtree(hf_out, ignore_errors=True)
        os.makedirs(hf_out)
        for f in ("config.json", "model.safetensors"):
            shutil.copyfile(os.path.join(hf_dir, f), os.path.join(hf_out, f))
        st = os.path.join(hf_out, "model.safetensors")
        rep["file"] = os.path.relpath(hf_out, HERE) + "/"
        rep["bytes"] = os.path.getsize(st) + os.path.getsize(os.path.join(hf_out, "config.json"))
        rep["sha256"] = sha256_of(st)

    fx = os.path.join(fixtures_dir, f"{name}.ref")
    rep["fixture_bytes"] = write_fixture(fx, rep["sha256"], tokens, logits)
    return rep


def check_versions(pinned=PINNED):
    """Warn about installed packages whose versions differ from those pinned."""
    import importlib.metadata as md
    for pkg, want in pinned.items():
        got = md.version(pkg)
        if got.split("+")[0] != want:
            print(f"warning: {pkg} {got}, the committed files were made with {want}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", required=True,
                    help="llama.cpp source tree with convert_hf_to_gguf.py and gguf-py/")
    ap.add_argument("--scratch", required=True, help="work folder (HF folders, F32 GGUFs, logs)")
    ap.add_argument("--out", default=HERE, help="tests/conformance (models/ and fixtures/ go here)")
    ap.add_argument("--llama-python", help="python with llama-cpp-python: cross-check with llama.cpp")
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--report", help="write the per-model report as JSON here")
    args = ap.parse_args()
    check_versions()
    import torch
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)

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
        print(json.dumps({k: v for k, v in rep.items() if k not in ("tokens", "kv")}, indent=None),
              flush=True)
    if args.report:
        with open(args.report, "w") as f:
            json.dump(reports, f, indent=1)
    total = 0
    for dirpath, _, files in os.walk(args.out):
        if os.sep + "models" in dirpath or os.sep + "fixtures" in dirpath:
            total += sum(os.path.getsize(os.path.join(dirpath, fn)) for fn in files)
    print(f"models/ + fixtures/: {total} bytes")


if __name__ == "__main__":
    main()
