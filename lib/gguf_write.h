/* GGUF v3 writer: the keys of a parsed file (as they are, or some replaced), then tensors
 * whose bytes are produced one at a time, so a file larger than memory can be written. */
#ifndef VKLLM_GGUF_WRITE_H
#define VKLLM_GGUF_WRITE_H

#include "gguf.h"

typedef struct gguf_write_tensor {
    const char *name;
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint32_t type; /* ggml_type */
} gguf_write_tensor;

/* Fills `buf` (`bytes` long) with tensor i's data; a nonzero status stops the writing. */
typedef vkllm_status (*gguf_fill_fn)(void *user, uint64_t i, uint8_t *buf, uint64_t bytes);

/* Writes `path` (through a temporary file renamed at the end, so a failure leaves no partial
 * file): every key of `meta` in its order, with `kv_override` (n_override keys, NULL allowed)
 * replacing keys of the same name or appended, then the tensors, aligned as `meta` is. */
vkllm_status gguf_write_file(const char *path, const gguf_file *meta, const gguf_kv *kv_override,
                             uint64_t n_override, const gguf_write_tensor *tensors, uint64_t n_tensors,
                             gguf_fill_fn fill, void *user);

#endif
