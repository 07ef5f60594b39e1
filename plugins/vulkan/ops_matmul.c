/* The ops that read weight matrices: op_matmul (matrix-vector for a few tokens,
 * register-tiled matrix-matrix for prompts) and op_get_rows (embedding lookup), for f32, f16,
 * bf16, q8_0, q4_0, q4_1, q5_0 and q5_1 weights; plus op_weight_init, which splits a weight
 * into chunks of whole rows that each fit one binding.
 *
 * Every tensor may be larger than one binding (maxStorageBufferRange), so each dispatch
 * covers one weight chunk and a group of tokens (or ids) whose activations fit a binding;
 * bindings start at an aligned offset at or below their first element and the shader adds
 * the leftover distance ("skip"). Chunks are walked in the outer loop, so only the switch
 * from one chunk to the next can need a barrier (their y ranges interleave). */
#include "error.h"
#include "ops.h"
#include "ops_util.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Must match the push constants of shaders/matmul.comp. */
typedef struct matmul_push {
    uint32_t rows, cols, n_tokens, row_bytes;
    uint32_t w_skip, x_skip, y_skip, y_stride;
    uint32_t accumulate;
    uint32_t part_row[2], y1_skip, y2_skip; /* MATVEC split (op_matvec_split) */
    uint32_t glu_gate_row, glu_up_row;      /* MATVEC GLU (op_matvec_glu) */
    float norm_eps;                         /* MATVEC NORM (op_matvec_norm) */
    uint32_t nw_skip;
    uint32_t head_dim, n_rot;               /* MATVEC ROPE_KV (op_matvec_rope_kv) */
    float theta_scale, freq_scale;
    uint32_t n_ctx;
} matmul_push;

/* Must match shaders/get_rows.comp. */
typedef struct get_rows_push {
    uint32_t rows_total, row_begin, row_count, cols;
    uint32_t row_bytes, w_skip, ids_skip, out_skip;
    uint32_t n_ids;
} get_rows_push;

/* The largest binding size we use: a multiple of 4 (weights are read as words) that keeps
 * byte offsets inside a binding within uint32 in the shaders. */
static uint64_t binding_limit(const vkr_device *dev)
{
    uint64_t r = dev->caps.max_storage_buffer_range;
    if (r > 0xfffffffcu)
        r = 0xfffffffcu;
    return r & ~(uint64_t)3;
}

/* Alignment for activation bindings: the device's, and at least 16 bytes so that rows
 * which start 16-byte aligned in memory can be read as vec4. */
static uint64_t activation_align(const vkr_device *dev)
{
    uint64_t a = dev->caps.storage_offset_alignment;
    return a > 16 ? a : 16;
}

/* Binding over bytes [begin, end) of t, started at the aligned offset at or below; *skip is
 * the distance from there to `begin` in 4-byte elements. */
static vkr_binding span(const vkr_device *dev, op_tensor t, uint64_t begin, uint64_t end,
                        bool write, uint32_t *skip)
{
    uint64_t align = activation_align(dev);
    uint64_t first = t.offset + begin;
    uint64_t start = first / align * align;
    *skip = (uint32_t)((first - start) / 4);
    return (vkr_binding){t.buffer, start, t.offset + end - start, write};
}

/* How many 4-byte-element rows of `row_elems`, starting at element `first` of t, fit one
 * binding, when the last of them only needs `last_elems` elements. */
static uint64_t rows_fitting(const vkr_device *dev, op_tensor t, uint64_t first,
                             uint64_t row_elems, uint64_t last_elems)
{
    uint64_t align = activation_align(dev);
    uint64_t skip = (t.offset + first * 4) % align;
    uint64_t room = binding_limit(dev);
    if (room < skip + last_elems * 4)
        return 0;
    return (room - skip - last_elems * 4) / (row_elems * 4) + 1;
}

/* Chunk c of the layout in use: over the texel views (texel) or over storage bindings. */
static const op_weight_chunk *weight_chunk(const op_weight *w, bool texel, uint32_t c)
{
    return texel ? &w->texel_chunks[c] : &w->chunks[c];
}

/* Records a dispatch whose weight is chunk c: bound as storage binding 0 over the chunk, or
 * (texel) as texel binding 0, the chunk's whole view (the shader clamps its reads to the view).
 * x_texel, when given, is texel binding 1, and nw_texel (with x_texel; else x_texel again) binding
 * 2. bindings[0] is filled in here. */
static vkllm_status dispatch_weight(vkr_cmd *cmd, vkr_pipeline *pipe, const op_weight *w, bool texel,
                                    uint32_t c, vkr_binding *bindings, uint32_t n_bindings,
                                    const vkr_texel_binding *x_texel, const vkr_texel_binding *nw_texel,
                                    const void *push, uint32_t push_size, uint32_t gx, uint32_t gy, uint32_t gz)
{
    const op_weight_chunk *ch = weight_chunk(w, texel, c);
    if (texel) {
        vkr_texel_binding tb[3] = {op_texel_binding(ch->buffer, ch->view, VKR_TEXEL_R32)};
        if (x_texel) { /* the matrix-vector shader declares the norm weight's binding: never left empty */
            tb[1] = *x_texel;
            tb[2] = nw_texel ? *nw_texel : *x_texel;
        }
        bindings[0] = (vkr_binding){0};
        return vkr_cmd_dispatch_texel(cmd, pipe, bindings, n_bindings, tb, x_texel ? 3 : 1, push, push_size, gx, gy,
                                      gz, pipe->name);
    }
    uint64_t bytes = ch->skip_bytes + (uint64_t)ch->row_count * w->row_bytes;
    bindings[0] = (vkr_binding){ch->buffer, ch->offset, (bytes + 3) & ~(uint64_t)3, false};
    return vkr_cmd_dispatch(cmd, pipe, bindings, n_bindings, push, push_size, gx, gy, gz, pipe->name);
}

/* The texel layout of a weight whose buffer has texel views: chunks of whole rows, each inside
 * the view that starts at or below its first row (views start every texel_stride bytes and
 * span texel_range). Leaves n_texel_chunks 0 where that cannot be done. */
static void texel_layout(const vkr_buffer *buffer, VkDeviceSize offset, uint64_t row_quantum,
                         op_weight *out)
{
    out->n_texel_chunks = 0;
    if (!buffer->n_texel_views)
        return;
    uint32_t n_chunks = 0;
    for (uint32_t r = 0; r < out->rows;) {
        uint64_t first = offset + (uint64_t)r * out->row_bytes, start, end;
        uint32_t v = op_texel_view_at(buffer, first, &start, &end);
        uint64_t fit = end > first ? (end - first) / out->row_bytes : 0;
        /* byte offsets inside a view stay within uint32 in the shaders */
        if (fit == 0 || n_chunks == OP_MAX_CHUNKS || first - start > 0xffffffffu || end - start > 0xfffffffcu)
            return;
        uint64_t n = out->rows - r < fit ? out->rows - r : fit;
        if (n < out->rows - r && n >= row_quantum)
            n = n / row_quantum * row_quantum;
        out->texel_chunks[n_chunks++] = (op_weight_chunk){
            .buffer = buffer,
            .offset = start,
            .row_begin = r,
            .row_count = (uint32_t)n,
            .skip_bytes = (uint32_t)(first - start),
            .view = v,
        };
        r += (uint32_t)n;
    }
    out->n_texel_chunks = n_chunks;
}

vkllm_status op_weight_init(const vkr_device *dev, uint32_t type, uint32_t rows, uint32_t cols,
                            const vkr_buffer *buffer, VkDeviceSize offset, op_weight *out)
{
    memset(out, 0, sizeof *out);
    const char *name = op_weight_type_name(type);
    if (!name)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "weight type %u (%s) cannot be used for matmul", type,
                       ggml_traits(type).name ? ggml_traits(type).name : "unknown");
    uint64_t row_bytes = ggml_row_bytes(type, cols);
    if (rows == 0 || cols == 0 || row_bytes == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "%s weight of %u x %u: empty, or cols not a multiple of the block size", name,
                       rows, cols);
    if (!buffer || offset % 2 != 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s weight: offset %llu is not even", name,
                       (unsigned long long)offset);
    uint64_t total = (uint64_t)rows * row_bytes;
    /* The last binding is rounded up to whole words; vkr buffers are sized in words. */
    if (offset > buffer->size || ((offset + total + 3) & ~(uint64_t)3) > buffer->size)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "%s weight of %u x %u (%llu bytes at %llu) exceeds its buffer of %llu bytes",
                       name, rows, cols, (unsigned long long)total, (unsigned long long)offset,
                       (unsigned long long)buffer->size);
    uint64_t limit = binding_limit(dev);
    uint64_t align = dev->caps.storage_offset_alignment ? dev->caps.storage_offset_alignment : 1;
    /* Chunk boundaries on multiples of this many rows keep a single token's y ranges of
     * consecutive chunks apart (no barrier between them) when that is possible. */
    uint64_t row_quantum = activation_align(dev) / 4;

    out->type = type;
    out->rows = rows;
    out->cols = cols;
    out->row_bytes = row_bytes;
    out->buffer = buffer;
    out->offset = offset;
    for (uint32_t r = 0; r < rows;) {
        uint64_t first = offset + (uint64_t)r * row_bytes;
        uint64_t start = first / align * align;
        uint64_t skip = first - start;
        uint64_t fit = limit > skip ? (limit - skip) / row_bytes : 0;
        if (fit == 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED,
                           "%s weight: a row of %llu bytes does not fit one binding of %llu bytes",
                           name, (unsigned long long)row_bytes, (unsigned long long)limit);
        uint64_t n = rows - r < fit ? rows - r : fit;
        if (n < rows - r && n >= row_quantum)
            n = n / row_quantum * row_quantum;
        if (out->n_chunks == OP_MAX_CHUNKS)
            return vk_fail(VKLLM_ERR_UNSUPPORTED,
                           "%s weight of %u x %u needs more than %d chunks of at most %llu bytes",
                           name, rows, cols, OP_MAX_CHUNKS, (unsigned long long)limit);
        out->chunks[out->n_chunks++] = (op_weight_chunk){
            .buffer = buffer,
            .offset = start,
            .row_begin = r,
            .row_count = (uint32_t)n,
            .skip_bytes = (uint32_t)skip,
        };
        r += (uint32_t)n;
    }
    texel_layout(buffer, offset, row_quantum, out);
    return VKLLM_OK;
}

static vkllm_status check_weight(const op_weight *w, const char *op, const char **name)
{
    *name = w ? op_weight_type_name(w->type) : NULL;
    if (!*name)
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: weight type %u is not supported", op,
                       w ? w->type : 0);
    if (w->n_chunks == 0 || w->n_chunks > OP_MAX_CHUNKS || w->n_texel_chunks > OP_MAX_CHUNKS ||
        w->row_bytes != ggml_row_bytes(w->type, w->cols))
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: weight not set up by op_weight_init", op);
    return VKLLM_OK;
}

static bool holds(op_tensor t, uint64_t bytes)
{
    return t.buffer && t.size >= bytes && t.offset + t.size <= t.buffer->size;
}

/* Whether load_block (shaders/blocks.glsl) may take its aligned path for this chunk: plain
 * blocks of 8 weights start 16-byte aligned and are whole, or quant blocks of a whole number
 * of words (q4_1, q5_1) start word-aligned. False where it makes no difference (q4_0, q5_0 and
 * q8_0 blocks alternate), so that no second pipeline is built. */
static bool aligned_blocks(const op_weight *w, const op_weight_chunk *ch)
{
    ggml_type_traits t = ggml_traits(w->type);
    if (t.block_size == 1)
        return ch->skip_bytes % 16 == 0 && w->row_bytes % 16 == 0 && w->cols % 8 == 0;
    return t.block_bytes % 4 == 0 && ch->skip_bytes % 4 == 0 && w->row_bytes % 4 == 0;
}

/* Shapes, measured on lavapipe (tests/test_ops_matmul.c prints the timings) and guessed for
 * GPUs. On lavapipe every storage-buffer load instruction is a loop over the lanes, so what
 * counts is loads per multiply-add: big register tiles, vec4 loads, and uniform choices made
 * by specialization (lavapipe executes both sides of a branch). Big tiles cost compile time
 * at the first dispatch, though (q4_0: ~2.3 s for 16 x 8, over 10 s for 32 x 8): tiles stay
 * modest. */

/* Whether to use the shapes tuned for lavapipe. VKLLM_MATMUL_SHAPES=gpu or =cpu overrides
 * the choice by device type, so that tests on lavapipe also run the GPU shapes (which split
 * a row over several subgroups and tile tokens inside a workgroup). */
static bool cpu_shapes(const vkr_device *dev)
{
    const char *e = getenv("VKLLM_MATMUL_SHAPES");
    if (e && !strcmp(e, "gpu"))
        return false;
    if (e && !strcmp(e, "cpu"))
        return true;
    return dev->caps.device_type == VKLLM_DEVICE_CPU;
}

/* Up to this many tokens in a dispatch use the matrix-vector shader. */
static uint32_t matvec_max_tokens(const vkr_device *dev)
{
    return cpu_shapes(dev) ? 4 : 8;
}

/* Matrix-vector specialization {wg, rows, n_tokens} (the caller adds W_ALIGNED and X_VEC4):
 * wg invocations split the columns of `rows` rows for all tokens; each output row reads
 * w_rows rows of W (2 for GLU). pairs: rows must be even (ROPE_KV). *sg_rows (SUBGROUP_ROWS):
 * 0, or the subgroup size when each subgroup computes `rows` rows alone (a workgroup then
 * covers wg / sg_rows times as many). */
static void matvec_shape(const vkr_device *dev, uint32_t n_tokens, uint32_t w_rows, bool pairs, uint32_t spec[5],
                         uint32_t *sg_rows)
{
    const vkr_caps *c = &dev->caps;
    uint32_t sg = c->subgroup_size ? c->subgroup_size : 32;
    uint32_t wg, rows;
    *sg_rows = 0;
    if (cpu_shapes(dev)) {
        /* One subgroup per workgroup: no shared memory or barrier. Many rows share each x
         * load. */
        wg = sg;
        rows = n_tokens <= 2 ? 16 : 8;
    } else {
        /* Measured on an H200 (BENCHMARKS.md, decode of random Llama 1.1B and 6.7B in Q4_0,
         * 9 shapes): 128 invocations over 4 rows beat 32 over 2 by 10 % and 32 %. */
        wg = sg > 128 ? sg : 128;
        rows = 4;
        /* VKLLM_MATVEC_SHAPE=WG,ROWS overrides (for measuring shapes on a device); WG,ROWS,sg
         * gives each subgroup ROWS rows of its own (needs subgroup arithmetic). */
        const char *e = getenv("VKLLM_MATVEC_SHAPE");
        unsigned ew, er;
        char mode[4] = "";
        int got = e ? sscanf(e, "%u,%u,%3s", &ew, &er, mode) : 0;
        if (got >= 2 && ew >= sg && ew % sg == 0 && ew <= 1024 && er >= 1 && er <= 16) {
            wg = ew, rows = er;
            if (got == 3 && !strcmp(mode, "sg") && c->subgroup_arithmetic && c->subgroup_size)
                *sg_rows = sg;
        }
    }
    if (wg > c->max_workgroup_size)
        wg = c->max_workgroup_size;
    /* The reduction's shared memory: (w_rows * rows + 1) * n_tokens * wg floats (the 1: x's
     * squares, for a fused norm). */
    if (pairs)
        rows = rows < 2 ? 2 : rows & ~1u;
    uint32_t least = pairs ? 2 : 1, step = pairs ? 2 : 1;
    while (rows > least && (uint64_t)(w_rows * rows + 1) * n_tokens * wg * 4 > c->shared_memory_size)
        rows -= step;
    while (wg > 1 && (uint64_t)(w_rows * rows + 1) * n_tokens * wg * 4 > c->shared_memory_size)
        wg /= 2;
    if (wg < *sg_rows)
        *sg_rows = 0;
    spec[0] = wg, spec[1] = rows, spec[2] = n_tokens;
}

/* The texel matrix-vector shader (shaders/matmul.comp, MATVEC with WEIGHTS_TEXEL) gives each
 * invocation `rows` whole rows: specialization {wg, rows, n_tokens}; a workgroup covers
 * wg * rows rows. On lavapipe (one subgroup of 8 per workgroup) more rows per invocation
 * share each x load (q4_0 768 x 768: 3.0, 2.1, 1.6, 1.4 and 1.3 x86 instructions of the
 * compiled shader per weight at 1, 2, 4, 8 and 16 rows, counted with valgrind), but too few
 * workgroups leave cores idle: the choice minimizes ceil(workgroups / cores) * (rows + 2),
 * the +2 standing for the x loads. */
static void matvec_lanes_shape(const vkr_device *dev, uint32_t n_tokens, uint32_t total_rows,
                               uint32_t w_rows, bool pairs, uint32_t spec[5])
{
    const vkr_caps *c = &dev->caps;
    uint32_t wg = c->subgroup_size ? c->subgroup_size : 8, rows = pairs ? 2 : 1;
    if (cpu_shapes(dev)) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        uint64_t t = cores > 0 && cores < 1024 ? (uint64_t)cores : 1, best = UINT64_MAX;
        for (uint32_t r = n_tokens == 1 ? 16 : n_tokens == 2 ? 8 : 4; r >= rows; r /= 2) {
            uint64_t groups = (total_rows + (uint64_t)wg * r - 1) / ((uint64_t)wg * r);
            uint64_t cost = (groups + t - 1) / t * (w_rows * r + 2);
            if (cost < best)
                best = cost, rows = r;
        }
    } else {
        wg = wg > 64 ? wg : 64;
    }
    if (wg > c->max_workgroup_size)
        wg = c->max_workgroup_size;
    spec[0] = wg, spec[1] = rows, spec[2] = n_tokens;
}

void op_matmul_tile_shape(const vkr_device *dev, uint32_t type, uint32_t spec[4])
{
    const vkr_caps *c = &dev->caps;
    if (cpu_shapes(dev)) {
        /* All lanes of a workgroup share the tokens. A quant block's decoding is shared by
         * more rows x tokens with 16 x 8 (q4_0: 8.4 vs 6.9 G multiply-adds/s per core at
         * 8 x 8); plain types gain nothing from it. */
        uint32_t sg = c->subgroup_size ? c->subgroup_size : 8;
        spec[0] = sg, spec[1] = sg, spec[3] = 8;
        spec[2] = ggml_traits(type).block_size > 1 ? 16 : 8;
    } else {
        spec[0] = 64, spec[1] = 16, spec[2] = 4, spec[3] = 4;
    }
    if (spec[0] > c->max_workgroup_size)
        spec[0] = spec[1] = c->max_workgroup_size;
}

/* shaders/matmul_tiled.comp: 256 invocations per tile, two float tiles of shared memory. */
#define MATMUL_TILED_WG 256
typedef struct tiled_shape {
    const char *prefix; /* shader name before the weight type */
    uint32_t rows, tokens, shared_bytes;
} tiled_shape;

/* 64 rows x 64 tokens in steps of 32 columns; LARGE_TILE: 128 x 128 in steps of 16. */
static const tiled_shape tiled_64 = {"matmul_tiled_", 64, 64, 2 * 32 * 65 * 4};
static const tiled_shape tiled_128 = {"matmul_tiled_l_", 128, 128, 2 * 16 * 129 * 4};

/* Prompts on GPUs go through shared-memory tiles; CPUs (where shared memory and barriers are
 * slow) and devices short of shared memory or workgroup size keep the register tiles (NULL).
 * VKLLM_MATMUL_SHAPES=gpu selects this on lavapipe too (tests). VKLLM_TILED=128 takes the
 * larger tile, not the default until measured on a GPU (=64: the default one). */
static const tiled_shape *tiled_shape_for(const vkr_device *dev)
{
    const char *e = getenv("VKLLM_TILED");
    const tiled_shape *t = e && !strcmp(e, "128") ? &tiled_128 : &tiled_64;
    bool fits = dev->caps.shared_memory_size >= t->shared_bytes && dev->caps.max_workgroup_size >= MATMUL_TILED_WG;
    return !cpu_shapes(dev) && fits ? t : NULL;
}

/* Weights and x go through texel views where both have them (caps.texel_weights) and any
 * view of x holds at least one token's row (views start every texel_stride bytes). */
static bool reads_texel(const op_weight *w, op_tensor x)
{
    return w->n_texel_chunks && x.buffer->n_texel_views && (uint64_t)w->cols * 4 <= x.buffer->texel_stride;
}

/* The matrix-vector pipeline for chunk ch of w and n_tokens tokens, and its grid over `rows`
 * output rows. parts: outputs of a split product (1 = a plain one); glu: two rows of W per
 * output row; rope_kv: the rope and KV store after a Q, K, V split. */
static vkllm_status matvec_pipeline(vkr_device *dev, const op_weight *w, const op_weight_chunk *ch, bool texel,
                                    uint32_t n_tokens, uint32_t rows, bool x_vec4, uint32_t parts, bool glu,
                                    bool norm, bool rope_kv, vkr_pipeline **pipe, uint32_t *gx, uint32_t *gy)
{
    uint32_t spec[10], sg_rows = 0;
    if (texel)
        matvec_lanes_shape(dev, n_tokens, rows, glu ? 2 : 1, rope_kv, spec);
    else
        matvec_shape(dev, n_tokens, glu ? 2 : 1, rope_kv, spec, &sg_rows);
    spec[3] = aligned_blocks(w, ch);
    spec[4] = x_vec4;
    spec[5] = parts;
    spec[6] = glu;
    spec[7] = norm;
    spec[8] = rope_kv;
    spec[9] = sg_rows;
    char name[48];
    const char *tname = op_weight_type_name(w->type);
    if (texel)
        snprintf(name, sizeof name, "matvec_%s_tx", tname);
    else
        snprintf(name, sizeof name, "matvec_%s%s", tname, dev->caps.subgroup_arithmetic ? "_sg" : "");
    vkllm_status s = vkr_pipeline_get(dev, name, spec, 10, pipe);
    uint32_t group_rows = texel ? spec[0] * spec[1] : sg_rows ? spec[0] / sg_rows * spec[1] : spec[1];
    if (!s)
        vkr_grid(dev, (rows + group_rows - 1) / group_rows, gx, gy);
    return s;
}

vkllm_status op_matmul(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x, op_tensor y,
                       uint32_t n_tokens, bool accumulate)
{
    const char *tname;
    vkllm_status s = check_weight(w, "matmul", &tname);
    if (s || n_tokens == 0)
        return s;
    if (!holds(x, (uint64_t)n_tokens * w->cols * 4) || !holds(y, (uint64_t)n_tokens * w->rows * 4))
        return vk_fail(VKLLM_ERR_INTERNAL, "matmul %ux%u, %u tokens: x or y too small", w->rows,
                       w->cols, n_tokens);
    bool texel = reads_texel(w, x);
    uint32_t n_chunks = texel ? w->n_texel_chunks : w->n_chunks;
    uint64_t x_row = (uint64_t)w->cols * 4;
    const tiled_shape *tiled = tiled_shape_for(dev);

    for (uint32_t c = 0; c < n_chunks && !s; c++) {
        const op_weight_chunk *ch = weight_chunk(w, texel, c);
        uint32_t tc = 0;
        for (uint32_t t0 = 0; t0 < n_tokens && !s; t0 += tc) {
            /* As many tokens as fit the x and y bindings. */
            uint64_t x_first = x.offset + t0 * x_row, x_start = 0, x_end = 0;
            uint32_t x_view = texel ? op_texel_view_at(x.buffer, x_first, &x_start, &x_end) : 0;
            uint64_t fit_x = texel ? (x_end - x_first) / x_row
                                   : rows_fitting(dev, x, (uint64_t)t0 * w->cols, w->cols, w->cols);
            uint64_t fit_y = rows_fitting(dev, y, (uint64_t)t0 * w->rows + ch->row_begin, w->rows,
                                          ch->row_count);
            uint64_t fit = fit_x < fit_y ? fit_x : fit_y;
            if (fit == 0)
                return vk_fail(VKLLM_ERR_UNSUPPORTED,
                               "matmul %ux%u: one token's activations exceed a binding", w->rows,
                               w->cols);
            tc = n_tokens - t0 < fit ? n_tokens - t0 : (uint32_t)fit;

            matmul_push push = {
                .rows = ch->row_count,
                .cols = w->cols,
                .n_tokens = tc,
                .row_bytes = (uint32_t)w->row_bytes,
                .w_skip = ch->skip_bytes,
                .y_stride = w->rows,
                .accumulate = accumulate,
            };
            vkr_binding bindings[3] = {
                {0}, /* the weight: dispatch_weight */
                {0},
                span(dev, y, ((uint64_t)t0 * w->rows + ch->row_begin) * 4,
                     ((uint64_t)(t0 + tc - 1) * w->rows + ch->row_begin + ch->row_count) * 4, true,
                     &push.y_skip),
            };
            vkr_texel_binding x_texel = {0};
            if (texel)
                push.x_skip = (uint32_t)((x_first - x_start) / 4);
            else
                bindings[1] = span(dev, x, (uint64_t)t0 * w->cols * 4, (uint64_t)(t0 + tc) * w->cols * 4,
                                   false, &push.x_skip);
            bool x_vec4 = push.x_skip % 4 == 0 && w->cols % 4 == 0;
            if (texel)
                x_texel = op_texel_binding(x.buffer, x_view, VKR_TEXEL_RGBA32);

            char name[48];
            vkr_pipeline *pipe;
            uint32_t gx, gy, gz = 1;
            if (tc <= matvec_max_tokens(dev)) {
                if ((s = matvec_pipeline(dev, w, ch, texel, tc, ch->row_count, x_vec4, 1, false, false, false,
                                         &pipe, &gx, &gy)))
                    return s;
            } else if (!texel && tiled) {
                uint32_t spec[3] = {MATMUL_TILED_WG, aligned_blocks(w, ch), x_vec4};
                snprintf(name, sizeof name, "%s%s", tiled->prefix, tname);
                if ((s = vkr_pipeline_get(dev, name, spec, 3, &pipe)))
                    return s;
                vkr_grid(dev, (ch->row_count + tiled->rows - 1) / tiled->rows, &gx, &gy);
                gz = (tc + tiled->tokens - 1) / tiled->tokens;
            } else {
                uint32_t spec[6];
                op_matmul_tile_shape(dev, w->type, spec);
                spec[4] = aligned_blocks(w, ch);
                spec[5] = x_vec4;
                snprintf(name, sizeof name, "matmul_%s%s", tname, texel ? "_tx" : "");
                if ((s = vkr_pipeline_get(dev, name, spec, 6, &pipe)))
                    return s;
                uint32_t tile_rows = spec[1] * spec[2], tile_tokens = spec[0] / spec[1] * spec[3];
                vkr_grid(dev, (ch->row_count + tile_rows - 1) / tile_rows, &gx, &gy);
                gz = (tc + tile_tokens - 1) / tile_tokens;
            }
            s = dispatch_weight(cmd, pipe, w, texel, c, bindings, 3, texel ? &x_texel : NULL, NULL, &push,
                                sizeof push, gx, gy, gz);
        }
    }
    return s;
}

/* ---- several products of one x in one dispatch (decode) ----------------------------- */

bool op_matvec_fusable(const vkr_device *dev, const op_weight *w, op_tensor x, uint32_t n_tokens)
{
    const char *tname;
    if (check_weight(w, "matvec", &tname) || n_tokens == 0 || n_tokens > matvec_max_tokens(dev) ||
        !holds(x, (uint64_t)n_tokens * w->cols * 4))
        return false;
    bool texel = reads_texel(w, x);
    if ((texel ? w->n_texel_chunks : w->n_chunks) != 1)
        return false;
    uint64_t fit_x;
    if (texel) {
        uint64_t start, end;
        op_texel_view_at(x.buffer, x.offset, &start, &end);
        fit_x = (end - x.offset) / (w->cols * 4ull);
    } else {
        fit_x = rows_fitting(dev, x, 0, w->cols, w->cols);
    }
    /* Every output (at most all rows of W per token) must fit one binding too. */
    uint64_t y_bytes = (uint64_t)n_tokens * w->rows * 4 + activation_align(dev);
    return fit_x >= n_tokens && y_bytes <= binding_limit(dev);
}

/* The common part of op_matvec_split and op_matvec_glu: push constants and bindings of x, the
 * norm (NULL: none) and the weight chunk, then the dispatch over `rows` output rows. */
static vkllm_status record_fused_matvec(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                                        const op_matvec_norm *norm, uint32_t n_tokens, uint32_t rows,
                                        uint32_t parts, bool glu, bool rope_kv, matmul_push *push,
                                        vkr_binding bindings[7])
{
    if (norm && (w->cols % 4 || !holds(norm->w, (uint64_t)w->cols * 4) || norm->w.offset % 16 ||
                 !(norm->eps >= 0.0f)))
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec: norm weight of %llu bytes at %llu for %u columns (a multiple "
                       "of 4, 16-byte aligned), eps %g", (unsigned long long)norm->w.size,
                       (unsigned long long)norm->w.offset, w->cols, norm->eps);
    bool texel = reads_texel(w, x);
    vkr_texel_binding nw_texel = {0};
    if (norm) {
        push->norm_eps = norm->eps;
        uint64_t skip;
        if (texel) {
            if (!op_texel_view_holding(norm->w.buffer, norm->w.offset, (uint64_t)w->cols * 4, VKR_TEXEL_RGBA32,
                                       &nw_texel, &skip))
                return vk_fail(VKLLM_ERR_INTERNAL, "matvec: the norm weight lies across texel views");
            push->nw_skip = (uint32_t)(skip / 16);
        } else {
            bindings[5] = op_bind(norm->w, false);
            bindings[5].range = (uint64_t)w->cols * 4;
        }
    }
    const op_weight_chunk *ch = weight_chunk(w, texel, 0);
    push->cols = w->cols;
    push->n_tokens = n_tokens;
    push->row_bytes = (uint32_t)w->row_bytes;
    push->w_skip = ch->skip_bytes;
    vkr_texel_binding x_texel = {0};
    if (texel) {
        uint64_t start, end;
        uint32_t v = op_texel_view_at(x.buffer, x.offset, &start, &end);
        push->x_skip = (uint32_t)((x.offset - start) / 4);
        x_texel = op_texel_binding(x.buffer, v, VKR_TEXEL_RGBA32);
    } else {
        bindings[1] = span(dev, x, 0, (uint64_t)n_tokens * w->cols * 4, false, &push->x_skip);
    }
    bool x_vec4 = push->x_skip % 4 == 0 && w->cols % 4 == 0;
    vkr_pipeline *pipe;
    uint32_t gx, gy;
    vkllm_status s = matvec_pipeline(dev, w, ch, texel, n_tokens, rows, x_vec4, parts, glu, norm != NULL, rope_kv,
                                     &pipe, &gx, &gy);
    if (!s)
        s = dispatch_weight(cmd, pipe, w, texel, 0, bindings, 7, texel ? &x_texel : NULL, norm ? &nw_texel : NULL,
                            push, sizeof *push, gx, gy, 1);
    return s;
}

/* Binds op_matvec_rope_kv's caches and params in place of y1 and y2 (bindings 3, 4 and 6) and
 * sets its push constants, for q, k and v parts of q_rows, kv_rows and kv_rows. */
static vkllm_status bind_rope_kv(const vkr_device *dev, const op_matvec_rope_kv *r, uint32_t q_rows,
                                 uint32_t kv_rows, matmul_push *push, vkr_binding bindings[7])
{
    uint64_t cache_row = (uint64_t)kv_rows * 2, n_ctx = r->k_cache.size / cache_row;
    if (r->head_dim == 0 || q_rows % r->head_dim || kv_rows % r->head_dim || r->head_dim % 2 || r->n_rot % 2 ||
        r->n_rot > r->head_dim || (r->n_rot && (!(r->freq_base > 0.0f) || !isfinite(r->freq_scale))))
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: rope of %u of %u dims (base %g, scale %g) over q and k "
                       "of %u and %u rows", r->n_rot, r->head_dim, r->freq_base, r->freq_scale, q_rows, kv_rows);
    if (n_ctx == 0 || n_ctx > 0xffffffffu || r->v_cache.size / cache_row != n_ctx ||
        !holds(r->params, sizeof(vk_step_params)))
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: caches of %llu and %llu bytes must hold the same number "
                       "(>= 1) of rows of %u f16, params a vk_step_params", (unsigned long long)r->k_cache.size,
                       (unsigned long long)r->v_cache.size, kv_rows);
    /* The rows written depend on n_past, known only at run time: the whole caches are bound. */
    if (n_ctx * cache_row > binding_limit(dev))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "matvec_split: a cache (%llu rows x %u f16) exceeds a binding",
                       (unsigned long long)n_ctx, kv_rows);
    bindings[3] = op_bind_range(r->k_cache, 0, n_ctx * cache_row, true);
    bindings[4] = op_bind_range(r->v_cache, 0, n_ctx * cache_row, true);
    bindings[6] = op_bind_range(r->params, 0, sizeof(vk_step_params), false);
    push->head_dim = r->head_dim;
    push->n_rot = r->n_rot;
    push->theta_scale = op_rope_theta_scale(r->freq_base, r->n_rot);
    push->freq_scale = r->freq_scale;
    push->n_ctx = (uint32_t)n_ctx;
    return VKLLM_OK;
}

vkllm_status op_matvec_split(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                             const op_matvec_norm *norm, const op_matvec_part *parts, uint32_t n_parts,
                             const op_matvec_rope_kv *rope_kv, uint32_t n_tokens)
{
    if (!op_matvec_fusable(dev, w, x, n_tokens) || n_parts == 0 || n_parts > OP_MATVEC_MAX_PARTS)
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: %u parts of a %ux%u weight, %u tokens: not one dispatch",
                       n_parts, w ? w->rows : 0, w ? w->cols : 0, n_tokens);
    uint64_t total = 0;
    for (uint32_t j = 0; j < n_parts; j++) {
        if (parts[j].rows == 0 || !holds(parts[j].y, (uint64_t)n_tokens * parts[j].rows * 4))
            return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: part %u of %u rows: empty or y too small", j,
                           parts[j].rows);
        total += parts[j].rows;
    }
    if (total != w->rows)
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: parts hold %llu rows, the weight %u",
                       (unsigned long long)total, w->rows);
    if (rope_kv && (n_parts != 3 || parts[1].rows != parts[2].rows))
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_split: the rope and KV store need q, k and v parts (k and v "
                       "of one width)");
    matmul_push push = {.rows = w->rows, .y_stride = parts[0].rows};
    vkr_binding bindings[7] = {{0}};
    uint32_t *skips[OP_MATVEC_MAX_PARTS] = {&push.y_skip, &push.y1_skip, &push.y2_skip};
    for (uint32_t j = 0, row = 0; j < n_parts; row += parts[j].rows, j++) {
        if (j > 0)
            push.part_row[j - 1] = row;
        if (j == 0 || !rope_kv)
            bindings[2 + j] = span(dev, parts[j].y, 0, (uint64_t)n_tokens * parts[j].rows * 4, true, skips[j]);
    }
    vkllm_status s = rope_kv ? bind_rope_kv(dev, rope_kv, parts[0].rows, parts[1].rows, &push, bindings) : VKLLM_OK;
    if (!s)
        s = record_fused_matvec(cmd, dev, w, x, norm, n_tokens, w->rows, n_parts, false, rope_kv != NULL, &push,
                                bindings);
    return s;
}

vkllm_status op_matvec_glu(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                           const op_matvec_norm *norm, op_tensor out, uint32_t gate_row, uint32_t up_row, uint32_t n,
                           uint32_t n_tokens)
{
    if (!op_matvec_fusable(dev, w, x, n_tokens) || n == 0 || (uint64_t)gate_row + n > w->rows ||
        (uint64_t)up_row + n > w->rows || !holds(out, (uint64_t)n_tokens * n * 4))
        return vk_fail(VKLLM_ERR_INTERNAL, "matvec_glu: gate rows %u and up rows %u (+%u) of a %ux%u weight, "
                       "%u tokens: not one dispatch, or out too small", gate_row, up_row, n, w ? w->rows : 0,
                       w ? w->cols : 0, n_tokens);
    matmul_push push = {.rows = n, .y_stride = n, .glu_gate_row = gate_row, .glu_up_row = up_row};
    vkr_binding bindings[7] = {{0}};
    bindings[2] = span(dev, out, 0, (uint64_t)n_tokens * n * 4, true, &push.y_skip);
    return record_fused_matvec(cmd, dev, w, x, norm, n_tokens, n, 1, true, false, &push, bindings);
}

vkllm_status op_get_rows(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor ids,
                         op_tensor out, uint32_t n_ids)
{
    const char *tname;
    vkllm_status s = check_weight(w, "get_rows", &tname);
    if (s || n_ids == 0)
        return s;
    if (!holds(ids, (uint64_t)n_ids * 4) || !holds(out, (uint64_t)n_ids * w->cols * 4))
        return vk_fail(VKLLM_ERR_INTERNAL, "get_rows of %u ids x %u: ids or out too small", n_ids,
                       w->cols);
    bool texel = w->n_texel_chunks != 0;
    char name[48];
    snprintf(name, sizeof name, "get_rows_%s%s", tname, texel ? "_tx" : "");
    ggml_type_traits tr = ggml_traits(w->type);
    uint32_t shader_block = tr.block_size > 1 ? tr.block_size : 8; /* BLOCK_WEIGHTS */
    uint64_t n_blocks = (w->cols + shader_block - 1) / shader_block;

    for (uint32_t c = 0; c < (texel ? w->n_texel_chunks : w->n_chunks) && !s; c++) {
        const op_weight_chunk *ch = weight_chunk(w, texel, c);
        uint32_t n = 0;
        for (uint32_t i0 = 0; i0 < n_ids && !s; i0 += n) {
            uint64_t fit_out = rows_fitting(dev, out, (uint64_t)i0 * w->cols, w->cols, w->cols);
            uint64_t fit_ids = rows_fitting(dev, ids, i0, 1, 1);
            uint64_t fit = fit_out < fit_ids ? fit_out : fit_ids;
            /* keep the invocation count of a dispatch within uint32 */
            uint64_t max_ids = 0xffff0000u / n_blocks;
            fit = fit < max_ids ? fit : max_ids;
            if (fit == 0)
                return vk_fail(VKLLM_ERR_UNSUPPORTED, "get_rows: a row of %u floats exceeds a binding",
                               w->cols);
            n = n_ids - i0 < fit ? n_ids - i0 : (uint32_t)fit;
            get_rows_push push = {
                .rows_total = w->rows,
                .row_begin = ch->row_begin,
                .row_count = ch->row_count,
                .cols = w->cols,
                .row_bytes = (uint32_t)w->row_bytes,
                .w_skip = ch->skip_bytes,
                .n_ids = n,
            };
            vkr_binding bindings[3] = {
                {0}, /* the weight: dispatch_weight */
                span(dev, ids, (uint64_t)i0 * 4, (uint64_t)(i0 + n) * 4, false, &push.ids_skip),
                span(dev, out, (uint64_t)i0 * w->cols * 4, (uint64_t)(i0 + n) * w->cols * 4, true,
                     &push.out_skip),
            };
            vkr_pipeline *pipe;
            uint32_t spec[] = {OP_WORKGROUP, aligned_blocks(w, ch)};
            if ((s = vkr_pipeline_get(dev, name, spec, 2, &pipe)))
                return s;
            uint32_t gx, gy;
            vkr_grid(dev, (uint32_t)((n * n_blocks + OP_WORKGROUP - 1) / OP_WORKGROUP), &gx, &gy);
            s = dispatch_weight(cmd, pipe, w, texel, c, bindings, 3, NULL, NULL, &push, sizeof push, gx, gy, 1);
        }
    }
    return s;
}
