/* Hugging Face model folders (config.json + model.safetensors, or shards listed by
 * model.safetensors.index.json; F32/F16/BF16 tensors) presented as a gguf_file, so the
 * graph builder and the loader downstream see what llama.cpp's converter would have
 * written: general.architecture and <arch>.* keys in llama.cpp's naming, tensors renamed
 * to llama.cpp's GGUF names, data pointing into the mapped safetensors files.
 *
 * Supported model_type values: llama, mistral (as llama.cpp's "llama" architecture),
 * qwen2, and opt (OPT/Galactica; vkllm's own "opt" architecture, which llama.cpp lacks).
 *
 * Two private keys carry what a GGUF would express differently:
 *   vkllm.rope.half (bool)       HF llama weights are laid out for half-split ("neox")
 *                                RoPE; llama.cpp's converter permutes Q/K rows for
 *                                adjacent pairs instead. The builder honours this key.
 *   vkllm.ffn_activation (str)   the MLP activation where a family lets the config pick
 *                                it ("relu", "gelu_erf", "gelu"; OPT: relu, Galactica:
 *                                gelu).
 * A folder's tokenizer.json (+ tokenizer_config.json) becomes tokenizer.ggml.* keys
 * (hf_tokenizer.h); without one the model loads without a tokenizer. */
#ifndef VKLLM_HF_MODEL_H
#define VKLLM_HF_MODEL_H

#include "gguf.h"

/* Limits on the JSON files read (config.json, the shard index). */
#define HF_MAX_JSON_BYTES (64u << 20)
#define HF_MAX_SHARDS 4096

/* Opens the folder `dir`. Errors name the file, key or tensor that is missing, malformed
 * or unsupported. gguf_close frees the result (and unmaps the shards). */
vkllm_status hf_open(const char *dir, gguf_file **out);

/* Whether `path` is a directory (hf_open's input) rather than a file. */
int hf_is_folder(const char *path);

#endif
