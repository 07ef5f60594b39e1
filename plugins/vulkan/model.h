/* A model on the device: the GGUF file, its vocabulary and its weights in device buffers. */
#ifndef VKLLM_MODEL_H
#define VKLLM_MODEL_H

#include "gguf.h"
#include "graph.h"
#include "ops.h"
#include "plugin.h"
#include "tokenizer.h"

typedef struct model_weight {
    const gguf_tensor *tensor;
    vkr_buffer buffer; /* none for the members of a weight group but the first uploaded (model.c):
                          the matrix lies in that one's buffer */
    bool is_vector;  /* 1-D (norm weights, biases): stored as f32, used as op_tensor */
    op_weight matrix; /* 2-D: rows/chunks for matmul and get_rows */
    op_tensor vector;
} model_weight;

struct vkllm_model_t {
    vkllm_instance inst;
    handle_error error;
    gguf_file *gguf;
    vk_vocab *vocab;
    g_hparams hp;
    model_weight *weights;
    uint32_t n_weights;
    uint64_t weight_bytes;
    uint64_t n_params;
    atomic_int n_contexts;
    /* NUL-terminated copies of string metadata handed to the host, made on first request. */
    mtx_t strings_lock;
    struct model_cstring {
        const gguf_kv *kv;
        char *text;
    } *cstrings;
    uint32_t n_cstrings;
};

/* The weight with GGUF name `name`, or NULL. */
const model_weight *model_weight_find(const struct vkllm_model_t *m, const char *name);

#endif
