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
 * Per token (decode), every token reads its experts' weights itself: a workgroup is rows x one
 * token (on lavapipe, through texel views, each invocation whole rows: moe_matmul_lanes).
 * Batches large enough (group_tokens), given the scratch for it, are grouped instead:
 * moe_group lists the tokens routed to each (slot, expert) on the GPU, moe_tiles the
 * tiles of those lists, and the products run as matrix-matrix tiles over each list, so an
 * expert's weights are read once per tile of tokens rather than once per token. The grid
 * covers the most tiles a slot's lists can have (ceil(tokens / tile) + experts); workgroups
 * past the slot's tiles return at once. */
#include <stdio.h>
#include <stdlib.h>
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
    uint32_t g_skip, group_tokens, max_tiles, k_first; /* grouped */
    uint32_t up_rows;                                  /* lanes with GLU */
} moe_matmul_push;

/* Must match shaders/moe_router.comp (GROUP and TILES). */
typedef struct group_push {
    uint32_t n_tokens, n_expert, n_used, r_skip, g_skip, tile, max_tiles;
} group_push;

#define ROUTER_WG 64u
/* Batches of at least this many tokens are grouped by expert (with the scratch). Fewer leave
 * most of each expert's tile empty. */
#define MOE_GROUP_MIN_TOKENS 8u
/* Tokens per grouping: moe_group's loop walks them once per invocation, far below lavapipe's
 * 65,535-iteration cut. */
#define MOE_GROUP_MAX_TOKENS 8192u
/* Rows per invocation of the per-token texel shape (LANES). 8x134M Q4_0 tg128 on lavapipe:
 * 34.8, 36.0 and 34.1 t/s at 4, 8 and 16. */
#define MOE_LANES_ROWS 8u
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

/* Tokens per workgroup of the grouped products' tile shape (op_matmul_tile_shape). */
static uint32_t tile_tokens_of(const uint32_t shape[4])
{
    return shape[0] / shape[1] * shape[3];
}

/* Words of the grouping table (shaders/moe_router.comp) for n tokens: counts and lists, then
 * per slot its tile count and room for ceil(n / tile) + n_expert tiles (tile >= 1). */
static uint64_t table_words(uint64_t n_expert, uint64_t n_used, uint64_t n)
{
    return n_used * n_expert * (1 + n) + n_used * (1 + n + n_expert);
}

/* Tokens whose table fits one binding (bound from an aligned offset at or below its start). */
static uint64_t tokens_in_binding(const vkr_device *dev, uint64_t n_expert, uint64_t n_used)
{
    uint64_t align = dev->caps.storage_offset_alignment ? dev->caps.storage_offset_alignment : 1;
    uint64_t words = (dev->caps.max_storage_buffer_range - (align - 1)) / 4, fixed = table_words(n_expert, n_used, 0);
    return words > fixed ? (words - fixed) / (n_used * (n_expert + 1)) : 0;
}

uint64_t op_moe_groups_bytes(const vkr_device *dev, uint32_t n_expert, uint32_t n_used, uint32_t n_tokens)
{
    uint64_t n = n_tokens < MOE_GROUP_MAX_TOKENS ? n_tokens : MOE_GROUP_MAX_TOKENS;
    uint64_t fit = tokens_in_binding(dev, n_expert, n_used);
    n = n < fit ? n : fit;
    return n >= MOE_GROUP_MIN_TOKENS ? table_words(n_expert, n_used, n) * 4 : 0;
}

/* Whether to group a batch, and how many tokens per grouping: those fitting the bindings
 * (per), the scratch's table, moe_group's loop and the grid (slots x tiles along z). 0: per
 * token.
 * Where the per-token products read texel views (lanes: lavapipe), they beat tiles whose
 * lists are shorter than a tile, so batches are grouped from n_expert tiles of tokens on (a
 * slot's list then averages a tile). 8x134M Q4_0 on lavapipe, pp8/16/32/64 t/s, per token:
 * 101, 131, 144, 150; grouped: 65, 93, 119, 158 (tile 8, 8 experts: grouped from 64 tokens).
 * VKLLM_MOE_GROUPED=off|on: never, or from MOE_GROUP_MIN_TOKENS on (measuring, tests). */
static uint32_t group_tokens(const vkr_device *dev, const op_moe_desc *d, uint32_t per, uint32_t tile_tokens,
                             bool lanes)
{
    const char *e = getenv("VKLLM_MOE_GROUPED");
    bool off = e && !strcmp(e, "off"), on = e && !strcmp(e, "on");
    if (off || d->n_tokens < MOE_GROUP_MIN_TOKENS || !d->groups.buffer ||
        (lanes && !on && d->n_tokens < (uint64_t)d->n_expert * tile_tokens))
        return 0;
    const uint64_t E = d->n_expert, K = d->n_used;
    uint64_t fixed = table_words(E, K, 0), words = d->groups.size / 4;
    uint64_t n = words > fixed ? (words - fixed) / (K * (E + 1)) : 0;
    uint64_t z_slots = d->weighted_sum ? 1 : K; /* SUM: one slot per dispatch */
    uint64_t z_tiles = dev->caps.max_workgroup_count[2] / z_slots;
    uint64_t by_grid = z_tiles > E ? (z_tiles - E) * tile_tokens : 0;
    uint64_t limits[] = {per, MOE_GROUP_MAX_TOKENS, by_grid, d->n_tokens, tokens_in_binding(dev, E, K)};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++)
        n = limits[i] < n ? limits[i] : n;
    if (!op_tensor_holds(d->groups, table_words(E, K, n) * 4))
        return 0;
    return n >= MOE_GROUP_MIN_TOKENS || n == d->n_tokens ? (uint32_t)n : 0;
}

/* One token's rows in bytes: x, y and the route (see op_moe_desc). */
typedef struct moe_rows {
    uint64_t x, y, route;
} moe_rows;

static moe_rows rows_of(const op_weight *w, const op_moe_desc *d)
{
    uint64_t R = w->rows / d->n_expert, K = d->n_used;
    return (moe_rows){(uint64_t)w->cols * (d->x_per_slot ? K : 1) * 4, R * (d->weighted_sum ? 1 : K) * 4, K * 8};
}

/* Checks that x, y and the route hold the batch's rows; *per: tokens per dispatch (as many
 * as fit every binding and the grid's z). */
static vkllm_status fit_tokens(const vkr_device *dev, op_tensor x, op_tensor y, op_tensor route, moe_rows rw,
                               const op_moe_desc *d, const char *op, uint32_t *per)
{
    uint64_t T = d->n_tokens;
    if (!op_tensor_holds(x, rw.x * T) || !op_tensor_holds(y, rw.y * T) || !op_tensor_holds(route, rw.route * T))
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: %u experts, %llu tokens: x, y or route too small", op, d->n_expert,
                       (unsigned long long)T);
    uint64_t rows[3] = {rw.x, rw.y, rw.route};
    *per = tokens_per_dispatch(dev, rows, 3, activation_align(dev));
    if (*per > dev->caps.max_workgroup_count[2])
        *per = dev->caps.max_workgroup_count[2];
    if (*per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "%s: one token's activations exceed a binding", op);
    return VKLLM_OK;
}

/* The push constants every shape takes for weight chunk ch; the skips and the grouped fields
 * are the caller's. */
static moe_matmul_push chunk_push(const op_weight *w, const op_weight_chunk *ch, const op_moe_desc *d, moe_rows rw,
                                  bool accumulate)
{
    return (moe_matmul_push){
        .rows = w->rows / d->n_expert,
        .cols = w->cols,
        .row_bytes = (uint32_t)w->row_bytes,
        .w_skip = ch->skip_bytes,
        .chunk_begin = ch->row_begin,
        .chunk_rows = ch->row_count,
        .n_expert = d->n_expert,
        .x_stride = (uint32_t)(rw.x / 4),
        .y_stride = (uint32_t)(rw.y / 4),
        .accumulate = accumulate,
    };
}

/* Weights and x through texel views where both have them and a token's x fits a view (x_row
 * bytes; views start every texel_stride bytes). */
static bool reads_texel(const op_weight *w, op_tensor x, uint64_t x_row)
{
    return w->n_texel_chunks && x.buffer->n_texel_views && x_row <= x.buffer->texel_stride;
}

/* Tokens from t0 whose x lies inside the texel view at x's token t0, at most tc; *skip: floats
 * from the view's start to token t0, *view the view. */
static uint32_t tokens_in_view(op_tensor x, uint64_t x_row, uint32_t t0, uint32_t tc, uint32_t *view, uint32_t *skip)
{
    uint64_t first = x.offset + t0 * x_row, start, end;
    *view = op_texel_view_at(x.buffer, first, &start, &end);
    *skip = (uint32_t)((first - start) / 4);
    uint64_t fit = (end - first) / x_row; /* at least 1: x_row <= texel_stride */
    return fit < tc ? (uint32_t)fit : tc;
}

/* Per token through texel views (lavapipe): the LANES shape, ROWS whole rows per invocation,
 * one dispatch per weight chunk and group of tokens. up_rows: 0, or (GLU) the gate stack's
 * rows, after which w holds the up stack. */
static vkllm_status moe_matmul_lanes(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                                     op_tensor route, op_tensor y, const op_moe_desc *d, moe_rows rw, uint32_t per,
                                     uint32_t up_rows)
{
    const uint32_t R = (w->rows - up_rows) / d->n_expert, K = d->n_used, T = d->n_tokens;
    uint32_t wg = dev->caps.subgroup_size ? dev->caps.subgroup_size : 8, rows = MOE_LANES_ROWS;
    if (wg > dev->caps.max_workgroup_size)
        wg = dev->caps.max_workgroup_size;
    char name[48];
    snprintf(name, sizeof name, "moe_matmul_lanes_%s_tx", op_weight_type_name(w->type));
    uint32_t gx, gy;
    vkr_grid(dev, (R + wg * rows - 1) / (wg * rows), &gx, &gy);
    vkllm_status s = VKLLM_OK;
    for (uint32_t t0 = 0, tc = 0; t0 < T && !s; t0 += tc) {
        uint32_t x_view, x_skip;
        tc = tokens_in_view(x, rw.x, t0, T - t0 < per ? T - t0 : per, &x_view, &x_skip);
        for (uint32_t c = 0; c < w->n_texel_chunks && !s; c++) {
            const op_weight_chunk *ch = &w->texel_chunks[c];
            /* The weighted sum adds each later chunk's experts to the first chunk's. */
            moe_matmul_push push = chunk_push(w, ch, d, rw, d->accumulate || (d->weighted_sum && c > 0));
            push.rows = R;
            push.x_skip = x_skip;
            push.up_rows = up_rows;
            vkr_binding bindings[4] = {
                {0}, /* the weight and x: texel views */
                {0},
                op_bind_span(dev, route, t0 * rw.route, tc * rw.route, 4, false, &push.r_skip),
                span(dev, y, t0 * rw.y, tc * rw.y, true, &push.y_skip),
            };
            vkr_texel_binding tb[2] = {op_texel_binding(ch->buffer, ch->view, VKR_TEXEL_R32),
                                       op_texel_binding(x.buffer, x_view, VKR_TEXEL_RGBA32)};
            uint32_t spec[8] = {wg, rows, K, aligned_blocks(w, ch),
                                push.x_skip % 4 == 0 && push.x_stride % 4 == 0 && w->cols % 4 == 0,
                                !d->x_per_slot, d->weighted_sum, up_rows != 0};
            vkr_pipeline *pipe;
            if ((s = vkr_pipeline_get(dev, name, spec, 8, &pipe)))
                break;
            s = vkr_cmd_dispatch_texel(cmd, pipe, bindings, 4, tb, 2, &push, sizeof push, gx, gy, tc, pipe->name);
        }
    }
    return s;
}

/* The grouped products (see the top of this file): per grouping of tokens, moe_group lists
 * them and moe_tiles their tiles, then one dispatch per weight chunk (and, for the weighted
 * sum, per slot) runs the tiles. */
static vkllm_status moe_matmul_grouped(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                                       op_tensor route, op_tensor y, const op_moe_desc *d, moe_rows rw,
                                       uint32_t per, const uint32_t shape[4])
{
    const uint32_t R = w->rows / d->n_expert, K = d->n_used, E = d->n_expert, T = d->n_tokens;
    const uint32_t tile_rows = shape[1] * shape[2], tile_tokens = tile_tokens_of(shape);
    bool texel = reads_texel(w, x, rw.x);
    uint32_t n_chunks = texel ? w->n_texel_chunks : w->n_chunks;
    char name[48];
    snprintf(name, sizeof name, "moe_matmul_grouped_%s%s", op_weight_type_name(w->type), texel ? "_tx" : "");
    uint32_t group_spec[] = {ROUTER_WG};
    vkr_pipeline *group_pipe, *tiles_pipe;
    vkllm_status s = vkr_pipeline_get(dev, "moe_group", group_spec, 1, &group_pipe);
    if (!s)
        s = vkr_pipeline_get(dev, "moe_tiles", group_spec, 1, &tiles_pipe);
    uint32_t gx, gy, group_gx, group_gy, tiles_gx, tiles_gy;
    vkr_grid(dev, (R + tile_rows - 1) / tile_rows, &gx, &gy);
    vkr_grid(dev, (K * E + ROUTER_WG - 1) / ROUTER_WG, &group_gx, &group_gy);
    vkr_grid(dev, (K + ROUTER_WG - 1) / ROUTER_WG, &tiles_gx, &tiles_gy);
    const uint32_t passes = d->weighted_sum ? K : 1, slots_per_pass = d->weighted_sum ? 1 : K;

    for (uint32_t t0 = 0, tc = 0; t0 < T && !s; t0 += tc) {
        tc = T - t0 < per ? T - t0 : per;
        uint32_t x_view = 0, x_skip = 0;
        if (texel)
            tc = tokens_in_view(x, rw.x, t0, tc, &x_view, &x_skip);
        uint64_t table = table_words(E, K, tc) * 4;
        uint32_t max_tiles = (tc + tile_tokens - 1) / tile_tokens + E;
        group_push gp = {tc, E, K, 0, 0, tile_tokens, max_tiles};
        vkr_binding gb[] = {
            op_bind_span(dev, route, t0 * rw.route, tc * rw.route, 4, false, &gp.r_skip),
            op_bind_span(dev, d->groups, 0, table, 4, true, &gp.g_skip),
        };
        if ((s = vkr_cmd_dispatch(cmd, group_pipe, gb, 2, &gp, sizeof gp, group_gx, group_gy, 1, "moe_group")) ||
            (s = vkr_cmd_dispatch(cmd, tiles_pipe, gb, 2, &gp, sizeof gp, tiles_gx, tiles_gy, 1, "moe_tiles")))
            break;
        for (uint32_t k = 0; k < passes && !s; k++) {
            for (uint32_t c = 0; c < n_chunks && !s; c++) {
                const op_weight_chunk *ch = texel ? &w->texel_chunks[c] : &w->chunks[c];
                uint64_t wbytes = ch->skip_bytes + (uint64_t)ch->row_count * w->row_bytes;
                /* Each (token, slot) is stored by the one chunk holding its expert's row; the
                 * weighted sum's later slots add to the first's. */
                moe_matmul_push push = chunk_push(w, ch, d, rw, d->accumulate || k > 0);
                push.group_tokens = tc;
                push.max_tiles = max_tiles;
                push.k_first = k;
                vkr_binding bindings[5] = {
                    {0}, /* the weight and x: below */
                    {0},
                    op_bind_span(dev, route, t0 * rw.route, tc * rw.route, 4, false, &push.r_skip),
                    span(dev, y, t0 * rw.y, tc * rw.y, true, &push.y_skip),
                    op_bind_span(dev, d->groups, 0, table, 4, false, &push.g_skip),
                };
                vkr_texel_binding tb[2] = {{0}};
                if (texel) {
                    tb[0] = op_texel_binding(ch->buffer, ch->view, VKR_TEXEL_R32);
                    tb[1] = op_texel_binding(x.buffer, x_view, VKR_TEXEL_RGBA32);
                    push.x_skip = x_skip;
                } else {
                    bindings[0] = (vkr_binding){ch->buffer, ch->offset, (wbytes + 3) & ~(uint64_t)3, false};
                    bindings[1] = span(dev, x, t0 * rw.x, tc * rw.x, false, &push.x_skip);
                }
                uint32_t spec[10] = {shape[0], 1, K, aligned_blocks(w, ch),
                                     push.x_skip % 4 == 0 && push.x_stride % 4 == 0 && w->cols % 4 == 0,
                                     !d->x_per_slot, d->weighted_sum, shape[1], shape[2], shape[3]};
                vkr_pipeline *pipe;
                if ((s = vkr_pipeline_get(dev, name, spec, 10, &pipe)))
                    break;
                uint32_t gz = slots_per_pass * max_tiles;
                s = texel ? vkr_cmd_dispatch_texel(cmd, pipe, bindings, 5, tb, 2, &push, sizeof push, gx, gy, gz,
                                                   pipe->name)
                          : vkr_cmd_dispatch(cmd, pipe, bindings, 5, &push, sizeof push, gx, gy, gz, pipe->name);
            }
        }
    }
    return s;
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
    moe_rows rw = rows_of(w, d);
    uint32_t per;
    if ((s = fit_tokens(dev, x, y, route, rw, d, "moe_matmul", &per)))
        return s;

    uint32_t shape[4];
    op_matmul_tile_shape(dev, w->type, shape);
    bool lanes = reads_texel(w, x, rw.x);
    uint32_t grouped = group_tokens(dev, d, per, tile_tokens_of(shape), lanes);
    if (grouped)
        return moe_matmul_grouped(cmd, dev, w, x, route, y, d, rw, grouped, shape);
    if (lanes)
        return moe_matmul_lanes(cmd, dev, w, x, route, y, d, rw, per, 0);

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
            /* The weighted sum adds each later chunk's experts to the first chunk's. */
            moe_matmul_push push = chunk_push(w, ch, d, rw, d->accumulate || (d->weighted_sum && c > 0));
            vkr_binding bindings[4] = {
                wb,
                span(dev, x, t0 * rw.x, tc * rw.x, false, &push.x_skip),
                op_bind_span(dev, route, t0 * rw.route, tc * rw.route, 4, false, &push.r_skip),
                span(dev, y, t0 * rw.y, tc * rw.y, true, &push.y_skip),
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

/* ---- a MoE MLP's gate, up and SwiGLU in one dispatch (decode) ----------------------- */

/* One token's rows for the fused gate and up: those of the gate product alone (w holds two
 * stacks). */
static moe_rows glu_rows_of(const op_weight *w, const op_moe_desc *d)
{
    uint64_t R = w->rows / (2 * d->n_expert), K = d->n_used;
    return (moe_rows){(uint64_t)w->cols * 4, R * K * 4, K * 8};
}

/* Whether op_moe_matmul would run the gate product alone in the lanes shape (tokens not
 * grouped, x in texel views), and w's two stacks lie in one texel chunk. */
bool op_moe_glu_fusable(const vkr_device *dev, const op_weight *w, op_tensor x, const op_moe_desc *d)
{
    if (!w || d->weighted_sum || d->x_per_slot || d->n_tokens == 0 || d->n_expert == 0 ||
        w->rows % (2 * d->n_expert) || check_route(d->n_expert, d->n_used, "moe_glu") || w->n_texel_chunks != 1 ||
        w->texel_chunks[0].row_count != w->rows || w->texel_chunks[0].row_begin != 0)
        return false;
    moe_rows rw = glu_rows_of(w, d);
    uint64_t rows[3] = {rw.x, rw.y, rw.route};
    uint32_t per = tokens_per_dispatch(dev, rows, 3, activation_align(dev));
    uint32_t shape[4];
    op_matmul_tile_shape(dev, w->type, shape);
    return reads_texel(w, x, rw.x) && per > 0 && !group_tokens(dev, d, per, tile_tokens_of(shape), true);
}

vkllm_status op_moe_matmul_glu(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x, op_tensor route,
                               op_tensor y, const op_moe_desc *d)
{
    if (!op_moe_glu_fusable(dev, w, x, d))
        return vk_fail(VKLLM_ERR_INTERNAL, "moe_matmul_glu: not fusable (see op_moe_glu_fusable)");
    moe_rows rw = glu_rows_of(w, d);
    uint32_t per;
    vkllm_status s = fit_tokens(dev, x, y, route, rw, d, "moe_matmul_glu", &per);
    return s ? s : moe_matmul_lanes(cmd, dev, w, x, route, y, d, rw, per, w->rows / 2);
}
