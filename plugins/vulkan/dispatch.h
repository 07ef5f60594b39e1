/* The dispatcher: plans activation buffers for a graph (reusing a buffer once its last
 * reader has run) and records the whole graph into one command buffer. */
#ifndef VKLLM_DISPATCH_H
#define VKLLM_DISPATCH_H

#include "graph.h"
#include "model.h"
#include "ops.h"

typedef struct dispatch_plan {
    uint32_t n_slots;
    VkDeviceSize *slot_bytes; /* size of each activation buffer at max_tokens */
    int32_t *node_slot;       /* slot of each node's output; -1 for nodes without one */
    bool *node_single_row;    /* nodes after G_LAST_ROW hold one row */
} dispatch_plan;

/* Everything a recording binds. */
typedef struct dispatch_buffers {
    vkr_buffer *slots;        /* plan.n_slots activation buffers */
    vkr_buffer *k_cache, *v_cache; /* one per layer, f16 [n_ctx][n_head_kv * head_dim] */
    vkr_buffer *params;       /* vk_step_params, host-visible */
    vkr_buffer *tokens;       /* int32 [max_tokens], host-visible */
    vkr_buffer *logits;       /* f32 logits rows (device-local where top_k is set) */
    /* Sampling candidates (op_top_k) of a one-row output: OP_TOP_K pairs, host-visible, and
     * the op's scratch. NULL: none. */
    vkr_buffer *top_k, *top_k_scratch;
    uint32_t n_ctx;           /* rows of each cache: position k lives in row k % n_ctx */
    /* Recurrent models (Mamba), one per layer, f32: conv state [d_inner][d_conv - 1] and
     * SSM state [d_inner][d_state]. NULL for models without G_SSM_* nodes. */
    vkr_buffer *conv_state, *ssm_state;
    /* int32 [max_tokens], host-visible: n_past + t, for G_POS_EMBED (learned positions). */
    vkr_buffer *positions;
    /* Scratch for attention's split key ranges (dispatch_attention_partials_bytes); NULL
     * where that is 0. */
    vkr_buffer *attention_partials;
    /* Scratch for grouping prompt tokens by expert (dispatch_moe_groups_bytes); NULL where that
     * is 0 (then expert products run per token). */
    vkr_buffer *moe_groups;
} dispatch_buffers;

vkllm_status dispatch_plan_graph(const g_graph *g, uint32_t max_tokens, dispatch_plan *plan);
void dispatch_plan_free(dispatch_plan *plan);

/* The attention scratch a recording of g needs for batches of up to max_tokens tokens over
 * a cache of n_ctx rows (0: none). */
uint64_t dispatch_attention_partials_bytes(const vkr_device *dev, const g_graph *g, uint32_t n_ctx,
                                           uint32_t max_tokens);

/* The expert-grouping scratch a recording of g needs for batches of up to max_tokens tokens
 * (0: none, or batches too small to group). */
uint64_t dispatch_moe_groups_bytes(const vkr_device *dev, const g_graph *g, uint32_t max_tokens);

/* Records graph `g` for a batch of n_tokens into cmd (begun and ended here). */
vkllm_status dispatch_record(vkr_device *dev, const struct vkllm_model_t *model, const g_graph *g,
                             const dispatch_plan *plan, const dispatch_buffers *bufs,
                             uint32_t n_tokens, vkr_cmd *cmd);

#endif
