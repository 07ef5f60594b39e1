#!/usr/bin/env python3
"""Writes models/mistral-hf/: the conformance Mistral model as a Hugging Face folder, for
the test that loads a llama-family model from safetensors (lib/hf_model.c).

The weights come from models/mistral.q8_0.gguf, whose Q8_0 blocks hold exactly the float32
weights transformers ran for fixtures/mistral.ref (README.md: the weights were put on the
Q8_0 grid before conversion). Undoing the converter's work gives the original tensors:
dequantize, reverse the shape to PyTorch's [out][in], rename to transformers' names and
undo the Q/K row permutation llama.cpp applies for its adjacent-pair RoPE. The folder
stores matrices as float16 (so it stays under 1.5 MB) and norm weights as float32, in two
shards listed by model.safetensors.index.json (the sharded path is tested too).

Checks before writing (the script stops on failure):
  1. transformers (MistralForCausalLM, eager attention, float32) with the recovered
     float32 weights reproduces fixtures/mistral.ref within the fp16 storage error
     (0.004): the inverse mapping and un-permutation are right, independently of vkllm.
  2. transformers loading the written folder: its logits against the fixture (the F16
     rounding of the weights; reported, the C test allows 0.015 as for F16 GGUFs).

    venv-conformance/bin/python tests/conformance/make_mistral_hf.py

Versions: tests/conformance/requirements.txt (gguf 0.19.0, safetensors 0.8.0, torch
2.11.0, transformers 4.57.6, numpy 2.4.6). Running it twice gives identical files.
"""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GGUF = os.path.join(HERE, "models", "mistral.q8_0.gguf")
REF = os.path.join(HERE, "fixtures", "mistral.ref")
OUT = os.path.join(HERE, "models", "mistral-hf")


def read_ref(path):
    """VKLLMREF version 1 with one prompt (tests/fixtures/llama_reference.md)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"VKLLMREF"
    version, n_prompts = struct.unpack_from("<II", data, 8)
    assert version == 1 and n_prompts == 1
    pos = 16 + 32
    (text_len,) = struct.unpack_from("<I", data, pos)
    pos += 4 + text_len
    _add_bos, _special, n_tokens, n_vocab, n_gen, n_gen_rows = struct.unpack_from("<6I", data, pos)
    pos += 24
    tokens = np.frombuffer(data, "<i4", n_tokens, pos)
    pos += 4 * n_tokens + 4 * n_gen
    logits = np.frombuffer(data, "<f2", n_tokens * n_vocab, pos).astype(np.float32).reshape(n_tokens, n_vocab)
    return tokens.tolist(), logits


def unpermute(w, n_head):
    """Inverse of llama.cpp's convert_hf_to_gguf permute() for Q (n_head) and K (n_head_kv)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_model(path):
    import gguf
    reader = gguf.GGUFReader(path)
    kv = {}
    for f in reader.fields.values():
        if f.types and f.types[0] != gguf.GGUFValueType.ARRAY:
            v = f.contents()
            kv[f.name] = v.item() if hasattr(v, "item") else v
    tensors = {}
    for t in reader.tensors:
        vals = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        tensors[t.name] = vals.reshape(tuple(int(d) for d in reversed(t.shape)))
    return kv, tensors


def hf_state(kv, tensors):
    n_head, n_head_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    state = {}
    for name, w in tensors.items():
        if name in names:
            state[names[name]] = w
            continue
        _, l, module, param = name.split(".")
        if module == "attn_q":
            w = unpermute(w, n_head)
        elif module == "attn_k":
            w = unpermute(w, n_head_kv)
        state[f"model.layers.{l}.{layer[module]}.{param}"] = w
    return state


def config_of(kv, vocab):
    return {
        "architectures": ["MistralForCausalLM"],
        "model_type": "mistral",
        "vocab_size": vocab,
        "hidden_size": kv["llama.embedding_length"],
        "intermediate_size": kv["llama.feed_forward_length"],
        "num_hidden_layers": kv["llama.block_count"],
        "num_attention_heads": kv["llama.attention.head_count"],
        "num_key_value_heads": kv["llama.attention.head_count_kv"],
        "head_dim": kv["llama.embedding_length"] // kv["llama.attention.head_count"],
        "max_position_embeddings": kv["llama.context_length"],
        "rms_norm_eps": float(f'{kv["llama.attention.layer_norm_rms_epsilon"]:.7g}'),  # f32 in the GGUF
        "rope_theta": float(kv.get("llama.rope.freq_base", 10000.0)),
        "sliding_window": kv["llama.attention.sliding_window"],
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "dtype": "float16",
    }


def transformers_logits(model_or_dir, config, state, tokens):
    import torch
    from transformers import MistralConfig, MistralForCausalLM
    if state is not None:
        cfg = MistralConfig(**{k: v for k, v in config.items() if k not in ("architectures", "model_type", "dtype")})
        cfg._attn_implementation = "eager"
        model = MistralForCausalLM(cfg)
        missing, unexpected = model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()},
                                                    strict=False)
        if unexpected or [m for m in missing if "rotary" not in m]:
            sys.exit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    else:
        model = MistralForCausalLM.from_pretrained(model_or_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().numpy()


def main():
    from safetensors.numpy import save_file
    tokens, ref = read_ref(REF)
    kv, tensors = gguf_model(GGUF)
    state = hf_state(kv, tensors)
    config = config_of(kv, state["model.embed_tokens.weight"].shape[0])

    got = transformers_logits(None, config, state, tokens)
    err = float(np.max(np.abs(got - ref)))
    print(f"transformers on the recovered float32 weights vs {os.path.basename(REF)}: max abs {err:.5f}")
    if err > 0.004:
        sys.exit("the recovered weights do not reproduce the fixture")

    os.makedirs(OUT, exist_ok=True)
    for name in os.listdir(OUT):
        os.remove(os.path.join(OUT, name))
    stored = {k: (v.astype(np.float16) if v.ndim == 2 else v.astype(np.float32)) for k, v in state.items()}
    names = sorted(stored)
    first = [n for n in names if n.startswith("model.layers.0.") or n == "model.embed_tokens.weight"]
    shards = {"model-00001-of-00002.safetensors": first,
              "model-00002-of-00002.safetensors": [n for n in names if n not in first]}
    weight_map, total = {}, 0
    for file, part in shards.items():
        save_file({n: np.ascontiguousarray(stored[n]) for n in part}, os.path.join(OUT, file),
                  metadata={"format": "pt"})
        os.chmod(os.path.join(OUT, file), 0o644)
        for n in part:
            weight_map[n] = file
            total += stored[n].nbytes
    with open(os.path.join(OUT, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    got16 = transformers_logits(OUT, None, None, tokens)
    err16 = float(np.max(np.abs(got16 - ref)))
    same_top1 = int(np.sum(np.argmax(got16, 1) == np.argmax(ref, 1)))
    print(f"transformers on the written folder (F16 matrices) vs the fixture: max abs {err16:.5f}, "
          f"top-1 identical at {same_top1}/{len(tokens)}")
    size = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"{OUT}: {len(os.listdir(OUT))} files, {size} bytes")


if __name__ == "__main__":
    main()
