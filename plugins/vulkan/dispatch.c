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

/* After node i: frees the slots whose holders are not read after it (an output nobody reads
 * included). */
static void release_slots(const dispatch_plan *plan, int32_t *slot_owner, const int32_t *last_use, uint32_t i)
{
    for (uint32_t s = 0; s < plan->n_slots; s++)
        if (slot_owner[s] >= 0 && last_use[slot_owner[s]] <= (int32_t)i)
            slot_owner[s] = -1;
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
    /* The recorder may compute an RMSNorm, the products of its output and a SWIGLU of two of
     * them in one dispatch (record_fused_matmuls; for expert products record_moe_glu): what
     * that dispatch reads (the products' input, the norm's, the route) must not share storage
     * with what it writes. */
    for (uint32_t i = 0; i < n; i++) {
        const g_node *node = &g->nodes[i];
        for (int j = 0; j < G_MAX_INPUTS; j++) {
            int32_t product = node->op == G_SWIGLU ? node->in[j] : node->op == G_MATMUL && j == 0 ? (int32_t)i : -1;
            if (product >= 0 && g->nodes[product].op == G_MOE_MATMUL) {
                for (int k = 0; k < 2; k++) {
                    int32_t in = g->nodes[product].in[k];
                    if (in >= 0 && last_use[in] < (int32_t)i)
                        last_use[in] = (int32_t)i;
                }
                continue;
            }
            if (product < 0 || g->nodes[product].op != G_MATMUL || g->nodes[product].in[0] < 0)
                continue;
            int32_t x = g->nodes[product].in[0];
            if (last_use[x] < (int32_t)i)
                last_use[x] = (int32_t)i;
            int32_t norm_in = g->nodes[x].op == G_RMSNORM ? g->nodes[x].in[0] : -1;
            if (norm_in >= 0 && last_use[norm_in] < (int32_t)i)
                last_use[norm_in] = (int32_t)i;
        }
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
        if (!has_output(node->op)) {
            release_slots(plan, slot_owner, last_use, i);
            continue;
        }
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
        release_slots(plan, slot_owner, last_use, i);
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

static op_attention_desc attention_desc(const g_node *node, uint32_t n_tokens, uint32_t n_ctx)
{
    return (op_attention_desc){
        .n_tokens = n_tokens,
        .n_heads = node->attn.n_heads,
        .n_heads_kv = node->attn.n_heads_kv,
        .head_dim = node->attn.head_dim,
        .n_ctx = n_ctx,
        .scale = node->attn.scale,
        .window = node->attn.window,
        .alibi_max_bias = node->attn.alibi_max_bias,
    };
}

uint64_t dispatch_attention_partials_bytes(const vkr_device *dev, const g_graph *g, uint32_t n_ctx,
                                           uint32_t max_tokens)
{
    uint64_t most = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].op != G_ATTENTION)
            continue;
        op_attention_desc d = attention_desc(&g->nodes[i], max_tokens, n_ctx);
        uint64_t bytes = op_attention_partials_bytes(dev, &d);
        most = bytes > most ? bytes : most;
    }
    return most;
}

uint64_t dispatch_moe_groups_bytes(const vkr_device *dev, const g_graph *g, uint32_t max_tokens)
{
    uint64_t most = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++) {
        const g_node *n = &g->nodes[i];
        uint64_t bytes =
            n->op == G_MOE_MATMUL ? op_moe_groups_bytes(dev, n->moe.n_expert, n->moe.n_used, max_tokens) : 0;
        most = bytes > most ? bytes : most;
    }
    return most;
}

static vkllm_status weight_of(const struct vkllm_model_t *m, const char *name, const model_weight **w)
{
    *w = model_weight_find(m, name);
    if (!*w)
        return vk_fail(VKLLM_ERR_INTERNAL, "weight %s was not loaded", name);
    return VKLLM_OK;
}

/* The matrix a MATMUL node multiplies by: its weight, or the node's row range of it (Q, K and
 * V of a fused attn_qkv are row ranges of one matrix). */
static vkllm_status node_matrix(const vkr_device *dev, const struct vkllm_model_t *model, const g_node *node,
                                op_weight *out)
{
    const model_weight *w;
    vkllm_status s = weight_of(model, node->weight[0], &w);
    if (s)
        return s;
    *out = w->matrix;
    if (node->rows.count && node->rows.count != w->matrix.rows)
        s = op_weight_init(dev, out->type, node->rows.count, out->cols, out->buffer,
                           out->offset + (VkDeviceSize)node->rows.begin * out->row_bytes, out);
    return s;
}

/* Whether node j is read by any node outside [begin, end). */
static bool read_outside(const g_graph *g, int32_t j, uint32_t begin, uint32_t end)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < G_MAX_INPUTS; k++)
            if ((i < begin || i >= end) && g->nodes[i].in[k] == j)
                return true;
    return false;
}

static bool fusion_off(void)
{
    const char *env = getenv("VKLLM_FUSE");
    return env && !strcmp(env, "off");
}

/* Whether the three products from node `first` on (q, k, v) are followed by what
 * op_matvec_rope_kv does: the rope of q and of k in adjacent pairs, then the KV store of that
 * k and v, with k, v and the rotated k read by nothing else. */
static bool rope_kv_follows(const g_graph *g, uint32_t first)
{
    if (first + 5 >= g->n_nodes)
        return false;
    int32_t q = (int32_t)first, k = q + 1, v = q + 2;
    const g_node *rope_q = &g->nodes[first + 3], *rope_k = &g->nodes[first + 4], *store = &g->nodes[first + 5];
    if (rope_q->op != G_ROPE || rope_q->in[0] != q || rope_k->op != G_ROPE || rope_k->in[0] != k ||
        store->op != G_KV_STORE || store->in[0] != k + 3 || store->in[1] != v)
        return false;
    const g_rope *a = &rope_q->rope, *b = &rope_k->rope;
    return a->mode == 0 && b->mode == 0 && a->head_dim == b->head_dim && a->n_rot == b->n_rot &&
           a->freq_base == b->freq_base && a->freq_scale == b->freq_scale &&
           g->nodes[q].width == a->n_heads * a->head_dim && store->width == b->n_heads * b->head_dim &&
           g->nodes[k].width == store->width && g->nodes[v].width == store->width &&
           !read_outside(g, q, first + 3, first + 4) && !read_outside(g, k, first + 4, first + 5) &&
           !read_outside(g, k + 3, first + 5, first + 6) && !read_outside(g, v, first + 5, first + 6);
}

/* Decode fusion (VKLLM_FUSE=off turns it off): consecutive MATMUL nodes from node i on that
 * multiply the same x, none accumulating or adding a bias, whose matrices lie end to end in
 * one buffer (a weight group, model.c, or row ranges of one fused matrix) run as one
 * op_matvec_split dispatch; when a SWIGLU of exactly two of them follows and is their only
 * reader, as one op_matvec_glu dispatch that also computes it; when they are a layer's Q, K
 * and V and the rope and KV store follow (rope_kv_follows), as one dispatch that does those
 * too. When node i is an RMSNorm read only by such products (one or more) that follow it, the
 * dispatch computes it too. *n_fused gets the nodes recorded (0: none; record node i alone). */
static vkllm_status record_fused_matmuls(vkr_device *dev, const struct vkllm_model_t *model, const g_graph *g,
                                         const dispatch_plan *plan, const dispatch_buffers *bufs,
                                         uint32_t n_tokens, uint32_t i, vkr_cmd *cmd, uint32_t *n_fused)
{
    *n_fused = 0;
    if (fusion_off())
        return VKLLM_OK;
    const g_node *norm = g->nodes[i].op == G_RMSNORM ? &g->nodes[i] : NULL;
    uint32_t first = norm ? i + 1 : i;
    if (first >= g->n_nodes || (norm && g->nodes[first].in[0] != (int32_t)i))
        return VKLLM_OK;
    op_weight parts_w[OP_MATVEC_MAX_PARTS];
    uint32_t n = 0;
    for (; n < OP_MATVEC_MAX_PARTS && first + n < g->n_nodes; n++) {
        const g_node *node = &g->nodes[first + n];
        if (node->op != G_MATMUL || node->accumulate || node->weight[1] || node->in[0] != g->nodes[first].in[0] ||
            plan->node_single_row[first + n] != plan->node_single_row[first])
            break;
        vkllm_status s = node_matrix(dev, model, node, &parts_w[n]);
        if (s)
            return s;
        const op_weight *prev = n ? &parts_w[n - 1] : NULL;
        if (prev && (parts_w[n].buffer != prev->buffer || parts_w[n].type != prev->type ||
                     parts_w[n].cols != prev->cols ||
                     parts_w[n].offset != prev->offset + (VkDeviceSize)prev->rows * prev->row_bytes))
            break;
    }
    if (n < (norm ? 1 : 2))
        return VKLLM_OK;
    uint32_t rows = plan->node_single_row[first] ? 1 : n_tokens, total = 0;
    for (uint32_t k = 0; k < n; k++)
        total += parts_w[k].rows;
    op_weight whole_w;
    op_tensor x = slot_tensor(plan, bufs, g, norm ? norm->in[0] : g->nodes[first].in[0], n_tokens);
    if (op_weight_init(dev, parts_w[0].type, total, parts_w[0].cols, parts_w[0].buffer, parts_w[0].offset,
                       &whole_w) ||
        !op_matvec_fusable(dev, &whole_w, x, rows))
        return VKLLM_OK; /* recorded node by node */
    op_matvec_norm nm;
    if (norm) {
        const model_weight *nw;
        vkllm_status s = weight_of(model, norm->weight[0], &nw);
        if (s)
            return s;
        if (read_outside(g, (int32_t)i, first, first + n))
            return VKLLM_OK; /* the norm is read elsewhere too */
        nm = (op_matvec_norm){nw->vector, norm->eps};
        if (plan->node_single_row[i] != plan->node_single_row[first] || norm->width % 4 || nm.w.offset % 16)
            return VKLLM_OK;
    }

    /* gate and up, then silu(gate) * up */
    const g_node *next = first + 2 < g->n_nodes ? &g->nodes[first + 2] : NULL;
    int32_t p0 = (int32_t)first, p1 = p0 + 1;
    if (n == 2 && next && next->op == G_SWIGLU && parts_w[0].rows == parts_w[1].rows &&
        next->width == parts_w[0].rows && !read_outside(g, p0, first + 2, first + 3) &&
        !read_outside(g, p1, first + 2, first + 3) &&
        ((next->in[0] == p0 && next->in[1] == p1) || (next->in[0] == p1 && next->in[1] == p0))) {
        uint32_t gate = next->in[0] == p0 ? 0 : parts_w[0].rows;
        uint32_t up = gate ? 0 : parts_w[0].rows;
        *n_fused = (norm ? 1 : 0) + 3;
        return op_matvec_glu(cmd, dev, &whole_w, x, norm ? &nm : NULL,
                             slot_tensor(plan, bufs, g, (int32_t)first + 2, n_tokens), gate, up, parts_w[0].rows, rows);
    }
    op_matvec_part parts[OP_MATVEC_MAX_PARTS];
    for (uint32_t k = 0; k < n; k++)
        parts[k] = (op_matvec_part){parts_w[k].rows, slot_tensor(plan, bufs, g, (int32_t)(first + k), n_tokens)};
    *n_fused = (norm ? 1 : 0) + n;
    if (n == 3 && rope_kv_follows(g, first)) {
        const g_node *rope = &g->nodes[first + 3], *store = &g->nodes[first + 5];
        op_matvec_rope_kv rkv = {
            .k_cache = whole(&bufs->k_cache[store->layer]),
            .v_cache = whole(&bufs->v_cache[store->layer]),
            .params = whole(bufs->params),
            .head_dim = rope->rope.head_dim,
            .n_rot = rope->rope.n_rot,
            .freq_base = rope->rope.freq_base,
            .freq_scale = rope->rope.freq_scale,
        };
        *n_fused += 3;
        return op_matvec_split(cmd, dev, &whole_w, x, norm ? &nm : NULL, parts, n, &rkv, rows);
    }
    return op_matvec_split(cmd, dev, &whole_w, x, norm ? &nm : NULL, parts, n, NULL, rows);
}

/* A layer's KV store in one dispatch (op_rope_kv_store), with the rope of q and k when node i
 * and i + 1 rotate them in place and node i + 2 stores that k (nobody else reads it): the
 * store node, or those three nodes. *n_fused gets the nodes recorded (0: VKLLM_FUSE=off, or
 * node i is neither). */
static vkllm_status record_rope_kv_store(vkr_device *dev, const g_graph *g, const dispatch_plan *plan,
                                         const dispatch_buffers *bufs, uint32_t n_tokens, uint32_t i,
                                         vkr_cmd *cmd, uint32_t *n_fused)
{
    *n_fused = 0;
    const g_node *q = &g->nodes[i], *k = i + 1 < g->n_nodes ? &g->nodes[i + 1] : NULL;
    const g_node *store = i + 2 < g->n_nodes ? &g->nodes[i + 2] : NULL;
    bool with_rope = q->op == G_ROPE && k && k->op == G_ROPE && store && store->op == G_KV_STORE &&
                     store->in[0] == (int32_t)i + 1 && !read_outside(g, (int32_t)i + 1, i + 2, i + 3) &&
                     q->rope.head_dim == k->rope.head_dim && q->rope.n_rot == k->rope.n_rot &&
                     q->rope.mode == k->rope.mode && q->rope.freq_base == k->rope.freq_base &&
                     q->rope.freq_scale == k->rope.freq_scale &&
                     store->width == k->rope.n_heads * k->rope.head_dim;
    if (fusion_off() || (!with_rope && q->op != G_KV_STORE))
        return VKLLM_OK;
    if (!with_rope)
        store = q;
    uint32_t rows = plan->node_single_row[i] ? 1 : n_tokens;
    op_rope_kv_desc d = {
        .k = slot_tensor(plan, bufs, g, store->in[0], n_tokens),
        .v = slot_tensor(plan, bufs, g, store->in[1], n_tokens),
        .k_cache = whole(&bufs->k_cache[store->layer]),
        .v_cache = whole(&bufs->v_cache[store->layer]),
        .params = whole(bufs->params),
        .n_tokens = rows,
        .n_heads_kv = 1,
        .head_dim = store->width,
    };
    if (with_rope) {
        d.q = slot_tensor(plan, bufs, g, (int32_t)i, n_tokens);
        d.n_heads = q->rope.n_heads;
        d.n_heads_kv = k->rope.n_heads;
        d.head_dim = k->rope.head_dim;
        d.n_rot = q->rope.n_rot;
        d.mode = q->rope.mode ? OP_ROPE_HALF : OP_ROPE_ADJACENT;
        d.freq_base = q->rope.freq_base;
        d.freq_scale = q->rope.freq_scale;
    }
    *n_fused = with_rope ? 3 : 1;
    return op_rope_kv_store(cmd, dev, &d);
}

/* Decode fusion of a mixture-of-experts MLP: when node i and i + 1 are the gate and up expert
 * products of one x and route, read only by the SWIGLU at i + 2, and model.c put their stacks
 * end to end, one op_moe_matmul_glu dispatch computes all three where op_moe_glu_fusable.
 * *n_fused gets the nodes recorded (0: none). */
static vkllm_status record_moe_glu(vkr_device *dev, const struct vkllm_model_t *model, const g_graph *g,
                                   const dispatch_plan *plan, const dispatch_buffers *bufs, uint32_t n_tokens,
                                   uint32_t i, vkr_cmd *cmd, uint32_t *n_fused)
{
    *n_fused = 0;
    if (fusion_off() || i + 2 >= g->n_nodes)
        return VKLLM_OK;
    const g_node *gate = &g->nodes[i], *up = &g->nodes[i + 1], *act = &g->nodes[i + 2];
    if (up->op != G_MOE_MATMUL || act->op != G_SWIGLU || gate->moe.weighted_sum || up->moe.weighted_sum ||
        up->in[0] != gate->in[0] || up->in[1] != gate->in[1] || act->in[0] != (int32_t)i ||
        act->in[1] != (int32_t)i + 1 || up->moe.n_expert != gate->moe.n_expert ||
        up->moe.n_used != gate->moe.n_used || up->width != gate->width ||
        read_outside(g, (int32_t)i, i + 2, i + 3) || read_outside(g, (int32_t)i + 1, i + 2, i + 3) ||
        plan->node_single_row[i] != plan->node_single_row[i + 2])
        return VKLLM_OK;
    const model_weight *wg, *wu;
    vkllm_status s;
    if ((s = weight_of(model, gate->weight[0], &wg)) || (s = weight_of(model, up->weight[0], &wu)))
        return s;
    const op_weight *a = &wg->matrix, *b = &wu->matrix;
    op_weight both; /* the gate stack, then the up stack */
    if (a->buffer != b->buffer || a->type != b->type || a->cols != b->cols || a->rows != b->rows ||
        b->offset != a->offset + (VkDeviceSize)a->rows * a->row_bytes ||
        op_weight_init(dev, a->type, 2 * a->rows, a->cols, a->buffer, a->offset, &both))
        return VKLLM_OK;
    uint32_t rows = plan->node_single_row[i] ? 1 : n_tokens;
    op_tensor x = slot_tensor(plan, bufs, g, gate->in[0], n_tokens);
    op_moe_desc d = {rows, gate->moe.n_expert, gate->moe.n_used, false, false, false,
                     bufs->moe_groups ? whole(bufs->moe_groups) : (op_tensor){0}};
    if (!op_moe_glu_fusable(dev, &both, x, &d))
        return VKLLM_OK;
    *n_fused = 3;
    return op_moe_matmul_glu(cmd, dev, &both, x, slot_tensor(plan, bufs, g, gate->in[1], n_tokens),
                             slot_tensor(plan, bufs, g, (int32_t)i + 2, n_tokens), &d);
}

vkllm_status dispatch_record(vkr_device *dev, const struct vkllm_model_t *model, const g_graph *g,
                             const dispatch_plan *plan, const dispatch_buffers *bufs,
                             uint32_t n_tokens, vkr_cmd *cmd)
{
    vkllm_status s = vkr_cmd_begin(cmd);
    op_tensor params = whole(bufs->params);
    for (uint32_t i = 0; i < g->n_nodes && !s; i++) {
        uint32_t n_fused = 0;
        if (g->nodes[i].op == G_MATMUL || g->nodes[i].op == G_RMSNORM)
            s = record_fused_matmuls(dev, model, g, plan, bufs, n_tokens, i, cmd, &n_fused);
        else if (g->nodes[i].op == G_ROPE || g->nodes[i].op == G_KV_STORE)
            s = record_rope_kv_store(dev, g, plan, bufs, n_tokens, i, cmd, &n_fused);
        if (s) {
            vk_fail_prefix(s, "recording %s", g->nodes[i].label ? g->nodes[i].label : "node");
            break;
        }
        if (n_fused) {
            i += n_fused - 1;
            continue;
        }
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
            op_weight w;
            op_tensor bias = w1 ? w1->vector : (op_tensor){0};
            s = node_matrix(dev, model, node, &w);
            if (w1 && node->rows.count && node->rows.count != w0->matrix.rows) {
                bias.offset += (VkDeviceSize)node->rows.begin * sizeof(float);
                bias.size = (VkDeviceSize)node->rows.count * sizeof(float);
            }
            if (!s)
                s = op_matmul(cmd, dev, &w, in0, out, rows, node->accumulate != 0);
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
            op_attention_desc d = attention_desc(node, rows, bufs->n_ctx);
            s = op_attention(cmd, dev, in0, whole(&bufs->k_cache[node->layer]),
                             whole(&bufs->v_cache[node->layer]), params, out,
                             bufs->attention_partials ? whole(bufs->attention_partials) : (op_tensor){0}, &d);
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
            s = op_weight_init(dev, w->type, w->rows - node->pos_offset, w->cols, w->buffer,
                               w->offset + (VkDeviceSize)node->pos_offset * w->row_bytes, &from);
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
            uint32_t n_glu = 0;
            if ((s = record_moe_glu(dev, model, g, plan, bufs, n_tokens, i, cmd, &n_glu)))
                break;
            if (n_glu) {
                i += n_glu - 1;
                break;
            }
            /* The experts are stacked rows of one weight; in[1] (the router) picks them on the GPU.
             * A weighted sum that the next node only adds to the residual in place is added there
             * by this dispatch (x += sum): one dispatch less per layer. */
            const g_node *add = i + 1 < g->n_nodes ? &g->nodes[i + 1] : NULL;
            bool into_residual = !fusion_off() && node->moe.weighted_sum && add && add->op == G_ADD &&
                                 add->inplace == 1 && add->in[1] == (int32_t)i && add->in[0] != (int32_t)i &&
                                 add->width == node->width &&
                                 plan->node_single_row[i + 1] == plan->node_single_row[i] &&
                                 !read_outside(g, (int32_t)i, i + 1, i + 2);
            op_moe_desc d = {rows, node->moe.n_expert, node->moe.n_used, node->moe.weighted_sum,
                             node->moe.weighted_sum, into_residual,
                             bufs->moe_groups ? whole(bufs->moe_groups) : (op_tensor){0}};
            s = op_moe_matmul(cmd, dev, &w0->matrix, in0, in1,
                              into_residual ? slot_tensor(plan, bufs, g, (int32_t)i + 1, n_tokens) : out, &d);
            if (into_residual)
                i++; /* the add is done */
            break;
        }
        case G_LAST_ROW:
            s = vkr_cmd_copy(cmd, in0.buffer, (VkDeviceSize)(n_tokens - 1) * node->width * sizeof(float),
                             out.buffer, 0, (VkDeviceSize)node->width * sizeof(float));
            break;
        case G_OUTPUT:
            s = vkr_cmd_copy(cmd, in0.buffer, 0, bufs->logits, 0, in0.size);
            /* The candidates the host samples from, when it need not read the row. */
            if (!s && bufs->top_k && in0.size == (VkDeviceSize)node->width * sizeof(float))
                s = op_top_k(cmd, dev, in0, node->width, whole(bufs->top_k_scratch), whole(bufs->top_k));
            break;
        }
        if (s)
            vk_fail_prefix(s, "recording %s", node->label ? node->label : "node");
    }
    if (!s)
        s = vkr_cmd_end(cmd);
    return s;
}
