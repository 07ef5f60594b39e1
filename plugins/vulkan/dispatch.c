#include "dispatch.h"

#include <stdlib.h>
#include <string.h>

#include "error.h"

static bool has_output(g_op op) { return op != G_KV_STORE && op != G_OUTPUT; }

void dispatch_plan_free(dispatch_plan *plan)
{
    free(plan->slot_bytes);
    free(plan->node_slot);
    free(plan->node_single_row);
    memset(plan, 0, sizeof *plan);
}

vkllm_status dispatch_plan_graph(const g_graph *g, uint32_t max_tokens, dispatch_plan *plan)
{
    memset(plan, 0, sizeof *plan);
    uint32_t n = g->n_nodes;
    int32_t *last_use = malloc(n * sizeof *last_use);
    int32_t *slot_owner = malloc(n * sizeof *slot_owner); /* node currently holding a slot */
    plan->slot_bytes = calloc(n, sizeof *plan->slot_bytes);
    plan->node_slot = malloc(n * sizeof *plan->node_slot);
    plan->node_single_row = calloc(n, sizeof *plan->node_single_row);
    if (!last_use || !slot_owner || !plan->slot_bytes || !plan->node_slot || !plan->node_single_row) {
        free(last_use);
        free(slot_owner);
        dispatch_plan_free(plan);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory planning the graph");
    }
    for (uint32_t i = 0; i < n; i++) {
        slot_owner[i] = -1;
        last_use[i] = (int32_t)i;
        plan->node_slot[i] = -1;
        const g_node *node = &g->nodes[i];
        for (int j = 0; j < G_MAX_INPUTS; j++)
            if (node->in[j] >= 0)
                last_use[node->in[j]] = (int32_t)i;
        plan->node_single_row[i] = node->op == G_LAST_ROW ||
                                   (node->in[0] >= 0 && plan->node_single_row[node->in[0]]);
    }
    /* An in-place chain keeps its storage alive until the chain's last reader. */
    for (int32_t i = (int32_t)n - 1; i >= 0; i--) {
        const g_node *node = &g->nodes[i];
        if (node->inplace) {
            int32_t src = node->in[node->inplace - 1];
            if (last_use[i] > last_use[src])
                last_use[src] = last_use[i];
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        const g_node *node = &g->nodes[i];
        if (!has_output(node->op))
            continue;
        VkDeviceSize bytes = (VkDeviceSize)node->width * sizeof(float) *
                             (plan->node_single_row[i] ? 1 : max_tokens);
        int32_t slot = -1;
        if (node->inplace) {
            slot = plan->node_slot[node->in[node->inplace - 1]];
        } else {
            /* Best fit among free slots; a free slot can grow. */
            for (uint32_t s = 0; s < plan->n_slots; s++)
                if (slot_owner[s] < 0 &&
                    (slot < 0 || (plan->slot_bytes[s] >= bytes &&
                                  (plan->slot_bytes[slot] < bytes || plan->slot_bytes[s] < plan->slot_bytes[slot]))))
                    slot = (int32_t)s;
            if (slot < 0)
                slot = (int32_t)plan->n_slots++;
        }
        if (plan->slot_bytes[slot] < bytes)
            plan->slot_bytes[slot] = bytes;
        slot_owner[slot] = (int32_t)i;
        plan->node_slot[i] = slot;
        /* Release the slots whose holders are read for the last time by this node. */
        for (int j = 0; j < G_MAX_INPUTS; j++) {
            int32_t in = node->in[j];
            if (in >= 0 && last_use[in] == (int32_t)i && plan->node_slot[in] >= 0 &&
                slot_owner[plan->node_slot[in]] == in)
                slot_owner[plan->node_slot[in]] = -1;
        }
        if (last_use[i] == (int32_t)i) /* an output nobody reads */
            slot_owner[slot] = -1;
    }
    free(last_use);
    free(slot_owner);
    return VKLLM_OK;
}

static op_tensor slot_tensor(const dispatch_plan *plan, const dispatch_buffers *bufs, const g_graph *g,
                             int32_t node, uint32_t n_tokens)
{
    uint32_t rows = plan->node_single_row[node] ? 1 : n_tokens;
    const vkr_buffer *b = &bufs->slots[plan->node_slot[node]];
    return (op_tensor){b, 0, (VkDeviceSize)rows * g->nodes[node].width * sizeof(float)};
}

static op_tensor whole(const vkr_buffer *b) { return (op_tensor){b, 0, b->size}; }

static vkllm_status weight_of(const struct vkllm_model_t *m, const char *name, const model_weight **w)
{
    *w = model_weight_find(m, name);
    if (!*w)
        return vk_fail(VKLLM_ERR_INTERNAL, "weight %s was not loaded", name);
    return VKLLM_OK;
}

vkllm_status dispatch_record(vkr_device *dev, const struct vkllm_model_t *model, const g_graph *g,
                             const dispatch_plan *plan, const dispatch_buffers *bufs,
                             uint32_t n_tokens, vkr_cmd *cmd)
{
    vkllm_status s = vkr_cmd_begin(cmd);
    op_tensor params = whole(bufs->params);
    for (uint32_t i = 0; i < g->n_nodes && !s; i++) {
        const g_node *node = &g->nodes[i];
        uint32_t rows = plan->node_single_row[i] ? 1 : n_tokens;
        op_tensor out = has_output(node->op) ? slot_tensor(plan, bufs, g, (int32_t)i, n_tokens) : (op_tensor){0};
        op_tensor in0 = node->in[0] >= 0 ? slot_tensor(plan, bufs, g, node->in[0], n_tokens) : (op_tensor){0};
        op_tensor in1 = node->in[1] >= 0 && has_output(g->nodes[node->in[1]].op)
                            ? slot_tensor(plan, bufs, g, node->in[1], n_tokens)
                            : (op_tensor){0};
        const model_weight *w0 = NULL, *w1 = NULL, *w2 = NULL;
        if (node->weight[0] && (s = weight_of(model, node->weight[0], &w0)))
            break;
        if (node->weight[1] && (s = weight_of(model, node->weight[1], &w1)))
            break;
        if (node->weight[2] && (s = weight_of(model, node->weight[2], &w2)))
            break;
        switch (node->op) {
        case G_EMBED: {
            op_tensor ids = {bufs->tokens, 0, (VkDeviceSize)n_tokens * sizeof(int32_t)};
            s = op_get_rows(cmd, dev, &w0->matrix, ids, out, n_tokens);
            break;
        }
        case G_RMSNORM:
            s = op_rmsnorm(cmd, dev, in0, w0->vector, out, node->width, rows, node->eps);
            break;
        case G_LAYERNORM:
            s = op_layernorm(cmd, dev, in0, w0->vector, w1 ? w1->vector : (op_tensor){0}, out,
                             node->width, rows, node->eps);
            break;
        case G_MATMUL: {
            /* A row range of a fused matrix (Q, K, V of attn_qkv) is a weight of its own. */
            const op_weight *w = &w0->matrix;
            op_weight slice;
            op_tensor bias = w1 ? w1->vector : (op_tensor){0};
            if (node->rows.count && node->rows.count != w->rows) {
                s = op_weight_init(dev, w->type, node->rows.count, w->cols, &w0->buffer,
                                   (VkDeviceSize)node->rows.begin * w->row_bytes, &slice);
                w = &slice;
                if (w1) {
                    bias.offset += (VkDeviceSize)node->rows.begin * sizeof(float);
                    bias.size = (VkDeviceSize)node->rows.count * sizeof(float);
                }
            }
            if (!s)
                s = op_matmul(cmd, dev, w, in0, out, rows, node->accumulate != 0);
            if (!s && w1)
                s = op_add(cmd, dev, out, bias, out, rows * node->width, node->width);
            break;
        }
        case G_ACTIVATION:
            switch (node->activation) {
            case G_ACT_GELU: s = op_gelu(cmd, dev, in0, out, rows * node->width); break;
            case G_ACT_GELU_ERF: s = op_gelu_erf(cmd, dev, in0, out, rows * node->width); break;
            case G_ACT_RELU: s = op_relu(cmd, dev, in0, out, rows * node->width); break;
            case G_ACT_SILU: s = op_silu(cmd, dev, in0, out, rows * node->width); break;
            case G_ACT_CLAMP: s = op_clamp(cmd, dev, in0, out, rows * node->width, node->eps); break;
            }
            break;
        case G_ADD:
            s = op_add(cmd, dev, in0, in1, out, rows * node->width, rows * node->width);
            break;
        case G_SWIGLU:
            s = op_swiglu(cmd, dev, in0, in1, out, rows * node->width);
            break;
        case G_ROPE: {
            op_rope_desc d = {
                .n_tokens = rows,
                .n_heads = node->rope.n_heads,
                .head_dim = node->rope.head_dim,
                .n_rot = node->rope.n_rot,
                .mode = node->rope.mode ? OP_ROPE_HALF : OP_ROPE_ADJACENT,
                .freq_base = node->rope.freq_base,
                .freq_scale = node->rope.freq_scale,
            };
            s = op_rope(cmd, dev, out, params, &d);
            break;
        }
        case G_KV_STORE:
            s = op_kv_store(cmd, dev, in0, whole(&bufs->k_cache[node->layer]), params, rows, node->width);
            if (!s)
                s = op_kv_store(cmd, dev, in1, whole(&bufs->v_cache[node->layer]), params, rows,
                                node->width);
            break;
        case G_ATTENTION: {
            op_attention_desc d = {
                .n_tokens = rows,
                .n_heads = node->attn.n_heads,
                .n_heads_kv = node->attn.n_heads_kv,
                .head_dim = node->attn.head_dim,
                .n_ctx = bufs->n_ctx,
                .scale = node->attn.scale,
                .window = node->attn.window,
                .alibi_max_bias = node->attn.alibi_max_bias,
            };
            s = op_attention(cmd, dev, in0, whole(&bufs->k_cache[node->layer]),
                             whole(&bufs->v_cache[node->layer]), params, out, &d);
            break;
        }
        case G_SSM_CONV:
        case G_SSM_SCAN: {
            /* The SSM weights are uploaded as flat f32 arrays (model.c). */
            const vkr_buffer *state = node->op == G_SSM_CONV ? bufs->conv_state : bufs->ssm_state;
            if (!state || !w0 || !w0->is_vector || !w1 || !w1->is_vector) {
                s = vk_fail(VKLLM_ERR_INTERNAL, "%s needs its state and f32 weights", node->label);
                break;
            }
            if (node->op == G_SSM_CONV)
                s = op_ssm_conv(cmd, dev, in0, w0->vector, w1->vector, whole(&state[node->layer]), out, rows,
                                node->width, g->hp.ssm_d_conv, true);
            else
                s = op_ssm_scan(cmd, dev, in0, in1, w0->vector, w1->vector, whole(&state[node->layer]), out,
                                rows, node->width, g->hp.ssm_d_state);
            break;
        }
        case G_HYENA_NORM:
            s = op_rmsnorm_eps_outside(cmd, dev, in0, w0->vector, out, node->width, rows, node->eps);
            break;
        case G_HYENA_FIR:
        case G_HYENA_IIR: {
            /* StripedHyena: the FIR is Mamba's conv without SiLU; both keep per-layer state
             * in Mamba's buffers. Their weights are uploaded as flat f32 arrays (model.c). */
            bool iir = node->op == G_HYENA_IIR;
            const vkr_buffer *state = iir ? bufs->ssm_state : bufs->conv_state;
            if (!state || !w0 || !w0->is_vector || (w1 && !w1->is_vector) ||
                (iir && (!w1 || !w2 || !w2->is_vector))) {
                s = vk_fail(VKLLM_ERR_INTERNAL, "%s needs its state and f32 weights", node->label);
                break;
            }
            op_tensor st = whole(&state[node->layer]);
            if (iir)
                s = op_hyena_iir(cmd, dev, in0, w0->vector, w1->vector, w2->vector, st, out, rows, node->width,
                                 g->hp.ssm_d_state / 2);
            else
                s = op_ssm_conv(cmd, dev, in0, w0->vector, w1 ? w1->vector : (op_tensor){0}, st, out, rows,
                                node->width, g->hp.ssm_d_conv, false);
            break;
        }
        case G_POS_EMBED: {
            /* The table from row pos_offset on, looked up by position. */
            const op_weight *w = &w0->matrix;
            op_weight from;
            if (!bufs->positions || node->pos_offset >= w->rows) {
                s = vk_fail(VKLLM_ERR_INTERNAL, "%s: no positions buffer or offset %u past %u rows", node->label,
                            node->pos_offset, w->rows);
                break;
            }
            s = op_weight_init(dev, w->type, w->rows - node->pos_offset, w->cols, &w0->buffer,
                               (VkDeviceSize)node->pos_offset * w->row_bytes, &from);
            if (!s)
                s = op_get_rows(cmd, dev, &from,
                                (op_tensor){bufs->positions, 0, (VkDeviceSize)n_tokens * sizeof(int32_t)}, out,
                                n_tokens);
            break;
        }
        case G_CONCAT:
            s = op_concat_rows(cmd, dev, in0, in1, out, rows, g->nodes[node->in[0]].width,
                               g->nodes[node->in[1]].width);
            break;
        case G_MOE_ROUTER:
            s = op_moe_router(cmd, dev, in0, out, rows, node->moe.n_expert, node->moe.n_used, node->moe.normalize,
                              node->moe.scale);
            break;
        case G_MOE_MATMUL: {
            /* The experts are stacked rows of one weight; in[1] (the router) picks them on the GPU. */
            op_moe_desc d = {rows, node->moe.n_expert, node->moe.n_used, node->moe.weighted_sum,
                             node->moe.weighted_sum, false};
            s = op_moe_matmul(cmd, dev, &w0->matrix, in0, in1, out, &d);
            break;
        }
        case G_LAST_ROW:
            s = vkr_cmd_copy(cmd, in0.buffer, (VkDeviceSize)(n_tokens - 1) * node->width * sizeof(float),
                             out.buffer, 0, (VkDeviceSize)node->width * sizeof(float));
            break;
        case G_OUTPUT:
            s = vkr_cmd_copy(cmd, in0.buffer, 0, bufs->logits, 0, in0.size);
            break;
        }
        if (s)
            vk_fail_prefix(s, "recording %s", node->label ? node->label : "node");
    }
    if (!s)
        s = vkr_cmd_end(cmd);
    return s;
}
