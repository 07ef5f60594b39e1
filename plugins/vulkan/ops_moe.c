/* Mixture of experts: op_moe_router (softmax, top-k and the experts' weights, per token) and
 * op_moe_matmul (the chosen experts' matrix-vector products), see ops.h.
 *
 * The experts are chosen on the GPU: a dispatch of op_moe_matmul binds one chunk of the
 * stacked expert weights and computes, for every token and slot, the rows of the routed
 * expert that this chunk holds. Nothing is read back to the host, so a recorded command
 * buffer is replayed token after token whatever the router picks. When the whole stack fits
 * one binding (the usual case on GPUs, whose bindings reach 4 GiB) a matrix is one dispatch;
 * otherwise (lavapipe's 128 MiB, real Mixtral experts of 100+ MiB) it is one dispatch per
 * chunk, and a workgroup whose expert is elsewhere returns after reading two words.
 *
 * Cost: every token reads its experts' weights itself (a workgroup is rows x one token), so a
 * prompt batch costs n_tokens matrix-vector products per expert matrix, i.e. prompts run at
 * decode speed per token. Grouping the tokens routed to each expert into matrix-matrix tiles
 * is the next step for prompts. */
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"
#include "quant.h"

/* Must match shaders/moe_router.comp. */
typedef struct router_push {
    uint32_t n_tokens, n_expert, n_used, normalize;
    float scale;
    uint32_t l_skip, r_skip;
} router_push;

/* Must match shaders/moe_matmul.comp. */
typedef struct moe_matmul_push {
    uint32_t rows, cols, row_bytes, w_skip;
    uint32_t chunk_begin, chunk_rows, n_expert;
    uint32_t x_skip, x_stride, r_skip, y_skip, y_stride;
    uint32_t accumulate;
} moe_matmul_push;

#define ROUTER_WG 64u
/* Per invocation the router's loops run (n_used + 2) * n_expert times; lavapipe stops any
 * invocation at 65,535 loop iterations. */
#define ROUTER_MAX_ITERATIONS 60000u

static vkllm_status check_route(uint32_t n_expert, uint32_t n_used, const char *op)
{
    if (n_used == 0 || n_used > OP_MOE_MAX_USED || n_used > n_expert ||
        (uint64_t)(n_used + 2) * n_expert > ROUTER_MAX_ITERATIONS)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "%s: %u experts used of %u: need 1 <= used <= min(experts, %d) and "
                       "(used + 2) * experts <= %u",
                       op, n_used, n_expert, OP_MOE_MAX_USED, ROUTER_MAX_ITERATIONS);
    return VKLLM_OK;
}

/* Tokens per dispatch: as many as fit every binding (rows of these sizes, from any start),
 * and the workgroup grid. */
static uint32_t tokens_per_dispatch(const vkr_device *dev, const uint64_t *row_bytes, int n,
                                    uint64_t align)
{
    uint64_t range = dev->caps.max_storage_buffer_range, fit = 0xffffffffu;
    for (int i = 0; i < n; i++) {
        uint64_t f = range > align + row_bytes[i] ? (range - (align - 1)) / row_bytes[i] : 0;
        if (f < fit)
            fit = f;
    }
    return (uint32_t)fit;
}

vkllm_status op_moe_router(vkr_cmd *cmd, vkr_device *dev, op_tensor logits, op_tensor route,
                           uint32_t n_tokens, uint32_t n_expert, uint32_t n_used, bool normalize,
                           float scale)
{
    vkllm_status s = check_route(n_expert, n_used, "moe_router");
    if (s || n_tokens == 0)
        return s;
    uint64_t l_row = (uint64_t)n_expert * 4, r_row = (uint64_t)n_used * 8;
    if (!op_tensor_holds(logits, l_row * n_tokens) || !op_tensor_holds(route, r_row * n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "moe_router: logits or route smaller than %u tokens of %u experts", n_tokens,
                       n_expert);
    uint64_t align = dev->caps.storage_offset_alignment ? dev->caps.storage_offset_alignment : 1;
    uint64_t rows[2] = {l_row, r_row};
    uint32_t per = tokens_per_dispatch(dev, rows, 2, align);
    if (per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "moe_router: one token's logits exceed a binding");
    uint32_t spec[] = {ROUTER_WG};
    vkr_pipeline *pipe;
    if ((s = vkr_pipeline_get(dev, "moe_router", spec, 1, &pipe)))
        return s;
    for (uint32_t t0 = 0; t0 < n_tokens && !s; t0 += per) {
        uint32_t tc = n_tokens - t0 < per ? n_tokens - t0 : per;
        router_push push = {tc, n_expert, n_used, normalize, scale, 0, 0};
        vkr_binding bindings[] = {
            op_bind_span(dev, logits, t0 * l_row, tc * l_row, 4, false, &push.l_skip),
            op_bind_span(dev, route, t0 * r_row, tc * r_row, 4, true, &push.r_skip),
        };
        uint32_t gx, gy;
        vkr_grid(dev, (tc + ROUTER_WG - 1) / ROUTER_WG, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 2, &push, sizeof push, gx, gy, 1, "moe_router");
    }
    return s;
}

/* Activation bindings start 16-byte aligned (at least), so rows that are 16-byte aligned in
 * memory can be read as vec4. */
static uint64_t activation_align(const vkr_device *dev)
{
    uint64_t a = dev->caps.storage_offset_alignment;
    return a > 16 ? a : 16;
}

static vkr_binding span(const vkr_device *dev, op_tensor t, uint64_t begin, uint64_t size, bool write,
                        uint32_t *skip)
{
    uint64_t align = activation_align(dev);
    uint64_t first = t.offset + begin;
    uint64_t start = first / align * align;
    *skip = (uint32_t)((first - start) / 4);
    return (vkr_binding){t.buffer, start, first + size - start, write};
}

/* Whether load_block (shaders/blocks.glsl) may take its aligned path: plain blocks of 8 weights
 * start 16-byte aligned and are whole, or quant blocks of a whole number of words start
 * word-aligned. */
static bool aligned_blocks(const op_weight *w, const op_weight_chunk *ch)
{
    ggml_type_traits t = ggml_traits(w->type);
    if (t.block_size == 1)
        return ch->skip_bytes % 16 == 0 && w->row_bytes % 16 == 0 && w->cols % 8 == 0;
    return t.block_bytes % 4 == 0 && ch->skip_bytes % 4 == 0 && w->row_bytes % 4 == 0;
}

/* {wg, rows, n_used}: wg invocations split the columns of `rows` rows of each of the n_used
 * experts. lavapipe: one subgroup per workgroup (no shared memory or barrier), 16 rows in all
 * sharing each x load, as matmul.comp's matrix-vector shape. */
static void moe_shape(const vkr_device *dev, uint32_t n_used, uint32_t spec[3])
{
    const vkr_caps *c = &dev->caps;
    uint32_t sg = c->subgroup_size ? c->subgroup_size : 32;
    uint32_t wg, rows;
    if (c->device_type == VKLLM_DEVICE_CPU) {
        wg = sg;
        rows = 16 / n_used ? 16 / n_used : 1;
    } else {
        wg = sg > 32 ? sg : 32;
        rows = 2;
    }
    if (wg > c->max_workgroup_size)
        wg = c->max_workgroup_size;
    while (rows > 1 && (uint64_t)rows * n_used * wg * 4 > c->shared_memory_size)
        rows--;
    while (wg > 1 && (uint64_t)rows * n_used * wg * 4 > c->shared_memory_size)
        wg /= 2;
    spec[0] = wg, spec[1] = rows, spec[2] = n_used;
}

vkllm_status op_moe_matmul(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                           op_tensor route, op_tensor y, const op_moe_desc *d)
{
    const char *tname = w ? op_weight_type_name(w->type) : NULL;
    if (!tname || w->n_chunks == 0 || w->n_chunks > OP_MAX_CHUNKS ||
        w->row_bytes != ggml_row_bytes(w->type, w->cols))
        return vk_fail(VKLLM_ERR_INTERNAL, "moe_matmul: weight not set up by op_weight_init");
    vkllm_status s = check_route(d->n_expert, d->n_used, "moe_matmul");
    if (s || d->n_tokens == 0)
        return s;
    if (w->rows % d->n_expert)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "moe_matmul: %u rows are not %u experts' worth",
                       w->rows, d->n_expert);
    const uint32_t R = w->rows / d->n_expert, K = d->n_used, T = d->n_tokens;
    uint64_t x_row = (uint64_t)w->cols * (d->x_per_slot ? K : 1) * 4;
    uint64_t y_row = (uint64_t)R * (d->weighted_sum ? 1 : K) * 4;
    uint64_t r_row = (uint64_t)K * 8;
    if (!op_tensor_holds(x, x_row * T) || !op_tensor_holds(y, y_row * T) ||
        !op_tensor_holds(route, r_row * T))
        return vk_fail(VKLLM_ERR_INTERNAL, "moe_matmul %u experts of %ux%u, %u tokens: x, y or route too small",
                       d->n_expert, R, w->cols, T);
    uint64_t rows[3] = {x_row, y_row, r_row};
    uint32_t per = tokens_per_dispatch(dev, rows, 3, activation_align(dev));
    if (per > dev->caps.max_workgroup_count[2])
        per = dev->caps.max_workgroup_count[2];
    if (per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "moe_matmul: one token's activations exceed a binding");

    char name[48];
    snprintf(name, sizeof name, "moe_matmul_%s%s", tname, dev->caps.subgroup_arithmetic ? "_sg" : "");
    uint32_t spec[7];
    moe_shape(dev, K, spec);
    uint32_t gx, gy;
    vkr_grid(dev, (R + spec[1] - 1) / spec[1], &gx, &gy);
    spec[5] = !d->x_per_slot;
    spec[6] = d->weighted_sum;

    for (uint32_t c = 0; c < w->n_chunks && !s; c++) {
        const op_weight_chunk *ch = &w->chunks[c];
        uint64_t wbytes = ch->skip_bytes + (uint64_t)ch->row_count * w->row_bytes;
        vkr_binding wb = {ch->buffer, ch->offset, (wbytes + 3) & ~(uint64_t)3, false};
        spec[3] = aligned_blocks(w, ch);
        for (uint32_t t0 = 0; t0 < T && !s; t0 += per) {
            uint32_t tc = T - t0 < per ? T - t0 : per;
            moe_matmul_push push = {
                .rows = R,
                .cols = w->cols,
                .row_bytes = (uint32_t)w->row_bytes,
                .w_skip = ch->skip_bytes,
                .chunk_begin = ch->row_begin,
                .chunk_rows = ch->row_count,
                .n_expert = d->n_expert,
                .x_stride = (uint32_t)(x_row / 4),
                .y_stride = (uint32_t)(y_row / 4),
                /* The weighted sum adds each later chunk's experts to the first chunk's. */
                .accumulate = d->accumulate || (d->weighted_sum && c > 0),
            };
            vkr_binding bindings[4] = {
                wb,
                span(dev, x, t0 * x_row, tc * x_row, false, &push.x_skip),
                op_bind_span(dev, route, t0 * r_row, tc * r_row, 4, false, &push.r_skip),
                span(dev, y, t0 * y_row, tc * y_row, true, &push.y_skip),
            };
            spec[4] = push.x_skip % 4 == 0 && push.x_stride % 4 == 0 && w->cols % 4 == 0;
            vkr_pipeline *pipe;
            if ((s = vkr_pipeline_get(dev, name, spec, 7, &pipe)))
                return s;
            s = vkr_cmd_dispatch(cmd, pipe, bindings, 4, &push, sizeof push, gx, gy, tc, pipe->name);
        }
    }
    return s;
}
