#!/usr/bin/env python3
"""Builds the StripedHyena conformance model (tiny, random) as GGUF and the logits of
Together's own `stripedhyena` package for it. Run by developers, not by CI.

llama.cpp has no StripedHyena, so there is no converter to borrow: this script defines the
GGUF layout (general.architecture = "stripedhyena", see GGUF_LAYOUT below and
tests/conformance/README.md) and writes the file with the `gguf` package. The reference is
the model class of the `stripedhyena` package, the code the Hugging Face checkpoints
(togethercomputer/StripedHyena-Hessian-7B, -Nous-7B) run.

Pinned tools (the versions the committed files were made with):
    torch==2.11.0          (PyPI wheel, run on the CPU)
    stripedhyena==0.2.2    (pip install --no-deps: it requires flash-attn)
    flash-attn==2.4.2      Python part only; its CUDA extension cannot be built here:
                           FLASH_ATTENTION_FORCE_BUILD=TRUE FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE \\
                               pip install --no-deps --no-build-isolation flash-attn==2.4.2
    einops==0.8.2
    numpy==2.4.6
    gguf==0.19.0

Shims (CUDA-only modules; the math is unchanged, see install_shims()):
  - `flash_attn_2_cuda` (flash-attn's CUDA extension, imported by flash_attn/__init__.py) is
    an empty module. Nothing calls it: the config sets use_flash_attn False, so flash-attn's
    MHA runs its plain-torch SelfAttention / CrossAttention.
  - `flash_attn.ops.triton.rotary.apply_rotary` (a Triton GPU kernel) is replaced by a
    function that slices the cos/sin tables at the sequence offset, as the kernel does, and
    calls flash-attn's own torch reference `apply_rotary_emb_torch`.
stripedhyena itself, its RMSNorm (use_flash_rmsnorm False: the package's torch formula),
its FIR (torch conv1d), its FFT long convolution and its recurrent decode run unchanged.

Usage:
    /work/venv-hyena/bin/python tests/conformance/make_stripedhyena.py [--report FILE]
Writes tests/conformance/models/stripedhyena.q8_0.gguf and fixtures/stripedhyena.ref.
"""
import argparse
import hashlib
import json
import os
import sys
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_fixtures as mf  # noqa: E402  (fixture writer, Q8_0 grid, byte alphabet)

PINNED = {"torch": "2.11.0", "stripedhyena": "0.2.2", "flash-attn": "2.4.2", "einops": "0.8.2",
          "numpy": "2.4.6", "gguf": "0.19.0"}
SEED = 115
N_TOKENS = mf.N_TOKENS

# The tiny model: 4 layers, Hyena - attention - Hyena - attention (StripedHyena-7B alternates
# the same way), GQA 6 heads over 2 KV heads (7B: 32 over 8), 3 modes per channel (7B: 2),
# vocabulary 349 (not a multiple of 32), MLP 224. eps 1e-3 instead of 7B's 1e-5: with the
# embeddings' RMS of ~0.14 it makes the package's form x / (rms + eps) measurably different
# from x / sqrt(ms + eps) (report: norm_form_effect), so a wrong form fails the test.
CONFIG = dict(
    vocab_size=349, hidden_size=192, num_filters=192, inner_mlp_size=224,
    attn_layer_idxs=[1, 3], hyena_layer_idxs=[0, 2], num_layers=4, tie_embeddings=False,
    short_filter_length=3, num_attention_heads=6, proj_groups=3, hyena_filter_groups=1,
    column_split_hyena=True, column_split=False, model_parallel_size=1, pipe_parallel_size=1,
    short_filter_bias=True, qkv_proj_bias=True, mha_out_proj_bias=False, final_norm=True,
    use_flash_attn=False, use_flash_rmsnorm=False, use_flash_depthwise=False, use_flashfft=False,
    use_interpolated_rotary_pos_emb=False, smeared_gqa=False, inference_mode=False,
    prefill_style="fft", max_seqlen=64, max_batch_size=1, eps=1e-3, state_size=3,
    rotary_emb_base=10000, mlp_activation="silu",
)

GGUF_LAYOUT = """
general.architecture = "stripedhyena"; keys stripedhyena.*:
  context_length (max_seqlen), embedding_length, block_count, feed_forward_length,
  attention.head_count, attention.head_count_kv (heads / proj_groups),
  attention.layer_norm_rms_epsilon (eps), rope.dimension_count (head dim), rope.freq_base,
  [rope.scaling.type "linear", rope.scaling.factor]   (use_interpolated_rotary_pos_emb),
  rms_norm_eps_outside (uint32: 1 = the package's RMSNorm x / (||x|| / sqrt(n) + eps),
                        0 = flash-attn's fused rms_norm x / sqrt(mean(x^2) + eps)),
  hyena.short_filter_length, hyena.state_size.
Tensors (shapes in ggml order [ne0, ne1]; E hidden, V vocab, F MLP, N modes, K FIR taps):
  token_embd.weight [E, V]   output_norm.weight [E]   output.weight [E, V] (absent: tied)
  every block:  blk.N.attn_norm.weight [E] (pre_norm)   blk.N.ffn_norm.weight [E] (post_norm)
                blk.N.ffn_gate.weight [E, F] (mlp.l1)  blk.N.ffn_up.weight [E, F] (mlp.l2)
                blk.N.ffn_down.weight [F, E] (mlp.l3)
  attention:    blk.N.attn_qkv.weight [E, (H + 2 Hkv) D] (+ .bias)   rows q | k | v (Wqkv)
                blk.N.attn_output.weight [E, E] (+ .bias)            (out_proj)
  hyena:        blk.N.hyena_in.weight [E, 3E] + .bias                (projections)
                blk.N.hyena_conv.weight [K, 3E] F32 (+ .bias [3E])    (short_filter_*)
                blk.N.hyena_poles [2N, E] F32, blk.N.hyena_residues [2N, E] F32
                    (per channel N complex numbers as (re, im) pairs)
                blk.N.hyena_d [E] F32                                (filter.D)
                blk.N.hyena_out.weight [E, E] + .bias                (out_filter_dense)
  The 3E rows of hyena_in and hyena_conv are reordered to [x2 | x1 | v] (column_split_hyena
  interleaves them per head: head h holds x2, x1, v of its D channels in turn).
"""


def install_shims():
    """CUDA-only pieces of flash-attn, replaced without changing the math (see the docstring)."""
    import torch
    sys.modules["flash_attn_2_cuda"] = types.ModuleType("flash_attn_2_cuda")
    triton_rotary = types.ModuleType("flash_attn.ops.triton.rotary")

    def apply_rotary(x, cos, sin, seqlen_offsets=0, cu_seqlens=None, max_seqlen=None,
                     interleaved=False, inplace=False, conjugate=False):
        # the Triton kernel: position t of x uses row seqlen_offsets + t of cos/sin, the first
        # 2 * cos.shape[-1] dims rotate, the rest are copied
        assert cu_seqlens is None and isinstance(seqlen_offsets, int) and not conjugate
        from flash_attn.layers.rotary import apply_rotary_emb_torch
        L = x.shape[1]
        assert seqlen_offsets + L <= cos.shape[0]
        y = apply_rotary_emb_torch(x, cos[seqlen_offsets:seqlen_offsets + L],
                                   sin[seqlen_offsets:seqlen_offsets + L], interleaved)
        if inplace:
            x.copy_(y)
            return x
        return y

    triton_rotary.apply_rotary = apply_rotary
    sys.modules["flash_attn.ops.triton.rotary"] = triton_rotary
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)


def build_model():
    import torch
    from stripedhyena.model import StripedHyena
    from stripedhyena.utils import dotdict
    cfg = dotdict(dict(CONFIG, params_dtype=torch.float32, attn_block_dtype=torch.float32,
                       mlp_dtype=torch.float32, hyena_block_dtype=torch.float32))
    torch.manual_seed(SEED)
    model = StripedHyena(cfg).to(torch.float32).eval()
    init_weights(model, torch.Generator().manual_seed(SEED))
    snap_weights(model)
    return model, cfg


def init_weights(model, gen):
    """As make_fixtures.py: linear weights N(0, 1/fan_in), embedding and output head
    N(0, 4/hidden), norm gains 1 + N(0, 0.1^2), biases N(0, 0.1^2). The Hyena filter: FIR taps
    N(0, 1/K); poles of modulus U(0.5, 0.95) and angle U(-pi, pi), so the long filter reaches
    across the 24 tokens (the package's init puts them near 0, a one-tap filter); residues
    N(0, 0.3^2) per part; D N(0, 0.5^2)."""
    import torch

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    E = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.copy_(1.0 + normal(p.shape, 0.1))
            elif name in ("embedding_layer.weight", "unembed.weight"):
                p.copy_(normal(p.shape, 2.0 / E ** 0.5))
            elif name.endswith("short_filter_weight"):
                p.copy_(normal(p.shape, 1.0 / p.shape[-1] ** 0.5))
            elif name.endswith(".bias") or name.endswith("short_filter_bias"):
                p.copy_(normal(p.shape, 0.1))
            elif name.endswith(".poles"):
                r = 0.5 + 0.45 * torch.rand(p.shape[:-1], generator=gen)
                a = (2 * torch.rand(p.shape[:-1], generator=gen) - 1) * np.pi
                p.copy_(torch.stack([r * torch.cos(a), r * torch.sin(a)], dim=-1))
            elif name.endswith(".residues"):
                p.copy_(normal(p.shape, 0.3))
            elif name.endswith(".D"):
                p.copy_(normal(p.shape, 0.5))
            elif p.ndim == 2:
                p.copy_(normal(p.shape, 1.0 / p.shape[1] ** 0.5))
            else:
                sys.exit(f"no init rule for {name} {tuple(p.shape)}")


def stored_as(name, shape):
    """How the GGUF stores a parameter: 'q8_0' for matrices whose rows are a multiple of 32,
    'f16' for other matrices, 'f32' for vectors and the Hyena filter (FIR taps, poles,
    residues, D: small, and the recurrence wants them exact)."""
    hyena_filter = any(s in name for s in ("short_filter", ".poles", ".residues", ".D"))
    if len(shape) == 2 and not hyena_filter:
        return "q8_0" if shape[1] % 32 == 0 else "f16"
    return "f32"


def snap_weights(model):
    """Weights on the grid of their GGUF type, so the file holds exactly what the package ran."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            w = p.detach().numpy()
            kind = stored_as(name, w.shape)
            if kind == "q8_0":
                p.copy_(torch.from_numpy(mf.to_q8_0_grid(w)))
            elif kind == "f16":
                p.copy_(torch.from_numpy(w.astype(np.float16).astype(np.float32)))


def full_logits(model, tokens):
    import torch
    with torch.no_grad():
        y, _ = model(torch.tensor([tokens], dtype=torch.long))
    return y[0].to(torch.float32).numpy()


def recurrent_logits(model, tokens, n_prefill):
    """The package's own cached generation: a prefill of n_prefill tokens (parallel FIR and FFT
    long convolution, whose states come from prefill_via_modal_fft), then one token at a time
    (step_fir, step_iir: the diagonal complex recurrence; flash-attn's KV cache), with
    seqlen_offset advanced as stripedhyena.generation.Generator does. Rows for every token."""
    import torch
    params = model.initialize_inference_params()
    rows = []
    with torch.no_grad():
        y, params = model(torch.tensor([tokens[:n_prefill]]), inference_params_dict=params)
        rows += list(y[0].numpy())
        for i in range(n_prefill, len(tokens)):
            params["mha"].seqlen_offset = i
            params["hyena"].seqlen_offset = i
            y, params = model(torch.tensor([[tokens[i]]]), inference_params_dict=params)
            rows.append(y[0, -1].numpy())
    return np.stack(rows)


def other_norm_form_logits(model, tokens):
    """The logits with x / sqrt(mean(x^2) + eps) instead of the package's x / (rms + eps): how
    much the test would notice the wrong form."""
    import copy
    import torch
    from stripedhyena.layers import RMSNorm
    m = copy.deepcopy(model)

    def forward(self, x):
        return self.scale * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    for mod in m.modules():
        if isinstance(mod, RMSNorm):
            mod.forward = types.MethodType(forward, mod)
    return full_logits(m, tokens)


def f16_matrices_logits(model, tokens):
    """The logits with every matrix rounded to fp16, as vkllm's load-time F16 conversion does
    (vectors and the Hyena filter stay f32): how far an exact F16 run lands from the fixture."""
    import copy
    import torch
    m = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if stored_as(name, tuple(p.shape)) != "f32":
                p.copy_(p.to(torch.float16).to(torch.float32))
    return full_logits(m, tokens)


def pick_tokens(model, vocab):
    """As make_fixtures.py: of 32 seeded candidate sequences, the one whose smallest top-1 vs
    top-2 logit gap is largest."""
    rng = np.random.default_rng(SEED)
    best, best_gap = None, -1.0
    for _ in range(mf.N_CANDIDATES):
        tokens = [int(t) for t in rng.integers(0, vocab, N_TOKENS)]
        gap = float(np.min(mf.top2_gap(full_logits(model, tokens))))
        if gap > best_gap:
            best, best_gap = tokens, gap
    return best


# ---------------------------------------------------------------------------------------
# GGUF


def column_split_order(E, heads):
    """Row order that turns column_split_hyena's per-head interleave into [x2 | x1 | v]:
    new row p*E + h*D + j takes old row h*3D + p*D + j."""
    D = E // heads
    return np.array([h * 3 * D + p * D + j for p in range(3) for h in range(heads) for j in range(D)])


def gguf_tensors_of(model, cfg):
    """name -> float32 array (numpy order: rows first) in the GGUF layout."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    E = cfg.hidden_size
    order = column_split_order(E, cfg.num_attention_heads) if cfg.column_split_hyena else np.arange(3 * E)
    out = {"token_embd.weight": sd["embedding_layer.weight"], "output_norm.weight": sd["norm.scale"]}
    if not cfg.tie_embeddings:
        out["output.weight"] = sd["unembed.weight"]
    for i in range(cfg.num_layers):
        b, n = f"blocks.{i}.", f"blk.{i}."
        out[n + "attn_norm.weight"] = sd[b + "pre_norm.scale"]
        out[n + "ffn_norm.weight"] = sd[b + "post_norm.scale"]
        out[n + "ffn_gate.weight"] = sd[b + "mlp.l1.weight"]
        out[n + "ffn_up.weight"] = sd[b + "mlp.l2.weight"]
        out[n + "ffn_down.weight"] = sd[b + "mlp.l3.weight"]
        if i in cfg.attn_layer_idxs:
            a = b + "inner_mha_cls."
            out[n + "attn_qkv.weight"] = sd[a + "Wqkv.weight"]
            if a + "Wqkv.bias" in sd:
                out[n + "attn_qkv.bias"] = sd[a + "Wqkv.bias"]
            out[n + "attn_output.weight"] = sd[a + "out_proj.weight"]
            if a + "out_proj.bias" in sd:
                out[n + "attn_output.bias"] = sd[a + "out_proj.bias"]
        else:
            f = b + "filter."
            out[n + "hyena_in.weight"] = sd[b + "projections.weight"][order]
            out[n + "hyena_in.bias"] = sd[b + "projections.bias"][order]
            out[n + "hyena_conv.weight"] = sd[f + "short_filter_weight"][order, 0, :]
            if f + "short_filter_bias" in sd:
                out[n + "hyena_conv.bias"] = sd[f + "short_filter_bias"][order]
            out[n + "hyena_poles"] = sd[f + "poles"].reshape(E, -1)      # [E][N][1][2] -> [E][2N]
            out[n + "hyena_residues"] = sd[f + "residues"].reshape(E, -1)
            out[n + "hyena_d"] = sd[f + "D"]
            out[n + "hyena_out.weight"] = sd[b + "out_filter_dense.weight"]
            out[n + "hyena_out.bias"] = sd[b + "out_filter_dense.bias"]
    return out


def gguf_type_of(name, arr):
    """As stored_as(), by GGUF name: the Hyena filter (hyena_conv, _poles, _residues, _d) and
    vectors F32; other matrices Q8_0 when their rows are a multiple of 32 long, else F16."""
    if arr.ndim == 2 and not any(s in name for s in ("hyena_conv", "hyena_poles", "hyena_residues")):
        return "q8_0" if arr.shape[1] % 32 == 0 else "f16"
    return "f32"


def write_gguf(path, model, cfg):
    import gguf
    Q = gguf.GGMLQuantizationType
    heads = cfg.num_attention_heads
    w = gguf.GGUFWriter(path, arch="stripedhyena")
    w.add_name("stripedhyena-conformance-tiny")
    w.add_context_length(cfg.max_seqlen)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_layers)
    w.add_feed_forward_length(model.blocks[0].mlp.l1.out_features)
    w.add_head_count(heads)
    w.add_head_count_kv(heads // cfg.proj_groups)
    w.add_layer_norm_rms_eps(cfg.eps)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(float(cfg.rotary_emb_base))
    if cfg.get("use_interpolated_rotary_pos_emb", False):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(cfg.get("rotary_emb_scaling_factor", 1.0)))
    w.add_uint32("stripedhyena.rms_norm_eps_outside", 0 if cfg.use_flash_rmsnorm else 1)
    w.add_uint32("stripedhyena.hyena.short_filter_length", cfg.short_filter_length)
    w.add_uint32("stripedhyena.hyena.state_size", cfg.state_size)
    # a byte-level BPE vocabulary of exactly vocab_size entries (content irrelevant: the tests
    # feed ids), as make_fixtures.py builds for the converter
    vocab = cfg.vocab_size
    alpha = mf.byte_level_alphabet()
    letters = "abcdefghijklmnopqrstuvwxyz"
    pairs = [a + b for a in letters for b in letters][: vocab - 256 - 1]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(alpha + pairs + ["<|endoftext|>"])
    w.add_token_types([1] * (vocab - 1) + [3])
    w.add_token_merges([p[0] + " " + p[1] for p in pairs])
    w.add_bos_token_id(vocab - 1)
    w.add_eos_token_id(vocab - 1)
    types_count = {}
    for name, arr in gguf_tensors_of(model, cfg).items():
        kind = gguf_type_of(name, arr)
        types_count[kind] = types_count.get(kind, 0) + 1
        if kind == "q8_0":
            w.add_tensor(name, gguf.quants.quantize(arr, Q.Q8_0), raw_dtype=Q.Q8_0)
        elif kind == "f16":
            w.add_tensor(name, arr.astype(np.float16))
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types_count


def check_lossless(path, model, cfg):
    """Every tensor of the file, dequantized with the gguf package, equals the weights the
    package ran (after the layout transforms): max abs difference."""
    import gguf
    want = gguf_tensors_of(model, cfg)
    reader = gguf.GGUFReader(path)
    names = {t.name for t in reader.tensors}
    if names != set(want):
        sys.exit(f"tensor names differ: {sorted(names ^ set(want))}")
    worst = 0.0
    for t in reader.tensors:
        got = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        ref = want[t.name]
        if got.shape != ref.shape:
            sys.exit(f"{t.name}: file shape {got.shape}, expected {ref.shape}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return worst


def filter_check(model, cfg):
    """The modal filter the package convolves with (compute_filter: Re sum_n R_n p_n^t via
    exp(t log p)) against the recurrence s_t = p s_{t-1} + x_t, y_t = Re sum_n R_n s_t driven by
    a unit impulse, in float64: the two forms of the long convolution the C code relies on."""
    import torch
    f = model.blocks[cfg.hyena_layer_idxs[0]].filter
    with torch.no_grad():
        h, _, _, _ = f.compute_filter(N_TOKENS, "cpu")
    h = h[0].numpy().astype(np.float64)  # [E][L]
    p = f.poles.detach().numpy()[..., 0, :].astype(np.float64)
    r = f.residues.detach().numpy()[..., 0, :].astype(np.float64)
    p = p[..., 0] + 1j * p[..., 1]
    r = r[..., 0] + 1j * r[..., 1]
    s = np.zeros_like(p)
    worst = 0.0
    for t in range(N_TOKENS):
        s = p * s + (1.0 if t == 0 else 0.0)
        worst = max(worst, float(np.max(np.abs((r * s).sum(-1).real - h[:, t]))))
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="tests/conformance (models/ and fixtures/ go here)")
    ap.add_argument("--report", help="write the figures as JSON here")
    args = ap.parse_args()
    mf.check_versions(PINNED)
    install_shims()
    model, cfg = build_model()
    tokens = pick_tokens(model, cfg.vocab_size)
    logits = full_logits(model, tokens)
    rep = {"tokens": tokens, "config": {k: v for k, v in CONFIG.items()}}
    rep["min_top2_gap"] = float(np.min(mf.top2_gap(logits)))
    rep["logit_std"] = float(np.std(logits))
    rep["logit_absmax"] = float(np.max(np.abs(logits)))
    rep["top1_is_input_token"] = int(np.sum(np.argmax(logits, axis=1) == np.array(tokens)))
    rep["filter_fft_form_vs_recurrence_f64"] = filter_check(model, cfg)
    for n_prefill in (2, 7):
        # the package's recurrent decode needs a prefill of at least short_filter_length - 1
        # tokens (its FIR state is the prefill's last K - 1 inputs)
        rep[f"package_recurrent_prefill{n_prefill}_vs_full"] = mf.compare(
            recurrent_logits(model, tokens, n_prefill), logits)
    rep["norm_form_effect"] = mf.compare(other_norm_form_logits(model, tokens), logits)
    rep["f16_matrices_effect"] = mf.compare(f16_matrices_logits(model, tokens), logits)
    if list(np.argmax(logits.astype(np.float16), axis=1)) != list(np.argmax(logits, axis=1)):
        sys.exit("fp16 storage changes an argmax")
    rep["f16_storage_err"] = float(np.max(np.abs(logits.astype(np.float16).astype(np.float32) - logits)))

    models_dir = os.path.join(args.out, "models")
    fixtures_dir = os.path.join(args.out, "fixtures")
    os.makedirs(models_dir, exist_ok=True)
    os.makedirs(fixtures_dir, exist_ok=True)
    path = os.path.join(models_dir, "stripedhyena.q8_0.gguf")
    rep["tensor_types"] = write_gguf(path, model, cfg)
    rep["lossless_maxdiff"] = check_lossless(path, model, cfg)
    if rep["lossless_maxdiff"] != 0.0:
        sys.exit(f"the GGUF differs from the model's weights by {rep['lossless_maxdiff']}")
    with open(path, "rb") as f:
        rep["sha256"] = hashlib.sha256(f.read()).hexdigest()
    rep["bytes"] = os.path.getsize(path)
    fx = os.path.join(fixtures_dir, "stripedhyena.ref")
    rep["fixture_bytes"] = mf.write_fixture(fx, rep["sha256"], tokens, logits)
    print(json.dumps({k: v for k, v in rep.items() if k not in ("tokens", "config")}, indent=1))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(rep, f, indent=1)


if __name__ == "__main__":
    main()
