/* Causal attention over the f16 KV cache (online softmax, GQA, sliding window, ALiBi). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"

#define ATTENTION_MAX_HEAD_DIM 256 /* MAX_D4 * 4 in attention.comp */
#define ATTENTION_KPT 4            /* KPT in attention.comp */

typedef struct attention_push {
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim, n_ctx;
    float scale;
    uint32_t q_shift, out_shift, t0, window, alibi;
    float alibi_e0, alibi_e1;
    uint32_t n_head_log2;
    uint32_t k_skip, v_skip; /* vec4s of f16 from the texel view's start to the cache's */
    uint32_t n_splits;       /* key ranges per (token, head) row, for the attention and the merge */
} attention_push;

/* The texel view (RGBA32, read by the LANES shape) that holds bytes [offset, offset + bytes)
 * of t's buffer starting 16-byte aligned; false when there is none. *skip: the distance from the
 * view's start in vec4s of f16. */
static bool cache_texel_view(op_tensor t, uint64_t bytes, vkr_texel_binding *out, uint32_t *skip)
{
    uint64_t skip_bytes;
    if (!t.buffer->n_texel_views || t.offset % 16 ||
        !op_texel_view_holding(t.buffer, t.offset, bytes, VKR_TEXEL_RGBA32, out, &skip_bytes) ||
        skip_bytes / 8 > 0xffffffffu)
        return false;
    *skip = (uint32_t)(skip_bytes / 8);
    return true;
}

/* Loop trips one invocation runs for a full context (see attention.comp): tiles of
 * KPT * wg keys, each with the score loop, the tile max and exp loops, the reduction and the
 * value loop, plus a margin. Calibrated on llvmpipe with head_dim 128: the subgroup variant
 * is cut between 90,000 and 100,000 keys (this estimate reaches 65,535 at ~93,000), the
 * shared one between 110,000 and 120,000 (~103,000). */
static uint64_t attention_trips(const vkr_device *dev, uint32_t wg, uint32_t d4, uint64_t n_keys)
{
    uint64_t sub = dev->caps.subgroup_size ? dev->caps.subgroup_size : 1;
    uint64_t groups = wg / d4, kpt = ATTENTION_KPT;
    uint64_t score = dev->caps.subgroup_arithmetic
                         ? kpt * sub * ((d4 + sub - 1) / sub + 1) /* kpt * sub keys per subgroup */
                         : kpt * (d4 + 1);
    uint64_t reduce = dev->caps.subgroup_arithmetic ? wg / sub : 8;
    uint64_t per_tile = score + 2 * kpt + reduce + (kpt * wg + groups - 1) / groups + 48;
    return (n_keys + kpt * wg - 1) / (kpt * wg) * per_tile;
}

/* The prompt shape (PREFILL in attention.comp): one invocation per query token, a workgroup
 * per block of tokens of one head, head_dim <= 128 (query and accumulator in registers). */
#define ATTENTION_PREFILL_MAX_HEAD_DIM 128
#define ATTENTION_KC 4 /* KC in attention.comp */

static uint32_t prefill_workgroup(const vkr_device *dev)
{
    /* On CPUs one SIMD batch of lanes; on GPUs two 32-wide subgroups, whose lanes all read
     * the same key row at once. */
    uint32_t wg = dev->caps.device_type == VKLLM_DEVICE_CPU && dev->caps.subgroup_size
                      ? dev->caps.subgroup_size
                      : 64;
    return wg <= dev->caps.max_workgroup_size ? wg : dev->caps.max_workgroup_size;
}

/* Loop trips of one PREFILL invocation over n_keys keys, counting the inner loops as if the
 * compiler kept them (llvmpipe's cut is per invocation). */
static uint64_t prefill_trips(uint32_t d4, uint64_t n_keys)
{
    uint64_t per_chunk = 2 * ATTENTION_KC * (d4 + 1) + 2 * d4 + 8;
    return (n_keys + ATTENTION_KC - 1) / ATTENTION_KC * per_chunk;
}

/* Whether a batch of n_tokens takes the PREFILL shape: enough tokens to fill half a
 * workgroup and a head that fits the registers (on llvmpipe, long contexts split the keys to
 * keep its loops inside the cut: attention_shape_for). VKLLM_ATTENTION=prefill, =rows or
 * =lanes forces the choice where the shape allows (tests). */
static bool use_prefill(const op_attention_desc *d, uint32_t wg)
{
    if (d->head_dim > ATTENTION_PREFILL_MAX_HEAD_DIM)
        return false;
    const char *e = getenv("VKLLM_ATTENTION");
    if (e && !strcmp(e, "prefill"))
        return true;
    if (e && (!strcmp(e, "rows") || !strcmp(e, "lanes")))
        return false;
    return (uint64_t)d->n_tokens * 2 >= wg;
}

/* The decode shape for CPUs (LANES in attention.comp): a workgroup of one subgroup per
 * (token, head) whose lanes split the keys, combined with subgroup operations; it needs
 * subgroup arithmetic and a head that fits the registers.
 * (On lavapipe it took a 256-position step of a 12-head layer from 910 us to 130 us: the
 * per-row shape's barriers are context switches there.) VKLLM_ATTENTION=rows keeps the
 * per-row shape; =lanes takes this one for prompts too (tests). */
static bool use_lanes(const vkr_device *dev, const op_attention_desc *d)
{
    uint32_t sg = dev->caps.subgroup_size;
    if (dev->caps.device_type != VKLLM_DEVICE_CPU || !dev->caps.subgroup_arithmetic || sg < 4 || sg > 64 ||
        (sg & (sg - 1)) || sg > dev->caps.max_workgroup_size || d->head_dim > ATTENTION_PREFILL_MAX_HEAD_DIM)
        return false;
    const char *e = getenv("VKLLM_ATTENTION");
    return !(e && !strcmp(e, "rows"));
}

/* Key ranges per row (flash decoding, see attention.comp), each its own workgroup, merged by
 * a second dispatch.
 * - GPUs, the per-row shape, decode steps of up to ATTENTION_SPLIT_MAX_TOKENS tokens: enough
 *   ranges for ~ATTENTION_SPLIT_GROUPS workgroups, each at least ATTENTION_SPLIT_MIN_KEYS keys
 *   of a full cache (a decode step has n_heads workgroups otherwise, each walking the whole
 *   context).
 * - CPUs: one, since n_heads workgroups already fill llvmpipe's threads, but as many as keep
 *   an invocation's loops under llvmpipe's cut (the prompt shape past ~1,000 keys of 64-wide
 *   heads, the lanes one past ~8,700, the per-row one past ~93,000).
 * Never more than ATTENTION_MAX_SPLITS, nor than a token's partials in one binding allow.
 * VKLLM_ATTENTION_SPLIT=N asks for at least N (tests, tuning). */
#define ATTENTION_MAX_SPLITS 64
#define ATTENTION_SPLIT_MAX_TOKENS 8
#define ATTENTION_SPLIT_GROUPS 256
#define ATTENTION_SPLIT_MIN_KEYS 256
#define ATTENTION_MAX_TRIPS 48000 /* llvmpipe stops loops at 65,535 trips: a margin */

typedef enum { SHAPE_ROWS, SHAPE_PREFILL, SHAPE_LANES } shape_kind;

/* The most keys a row attends: the window, or the whole cache. */
static uint64_t cache_keys(const op_attention_desc *d)
{
    return d->window && d->window < d->n_ctx ? d->window : d->n_ctx;
}

/* The bytes of partials per token of a split run (see attention.comp's Partials). */
static uint64_t partial_bytes_per_token(const op_attention_desc *d, uint32_t n_splits)
{
    return (uint64_t)d->n_heads * n_splits * (d->head_dim + 2) * sizeof(float);
}

/* Loop trips of one invocation of a shape (workgroup wg) whose keys go in n ranges. */
static uint64_t shape_trips(const vkr_device *dev, const op_attention_desc *d, shape_kind kind, uint32_t wg,
                            uint64_t n)
{
    uint64_t keys = cache_keys(d);
    uint32_t d4 = d->head_dim / 4;
    switch (kind) {
    case SHAPE_PREFILL: /* a block of wg tokens walks up to keys + wg - 1 */
        return prefill_trips(d4, (keys + wg + n - 1) / n);
    case SHAPE_LANES: /* lane j takes every wg-th key of its range */
        return prefill_trips(d4, ((keys + n - 1) / n + wg - 1) / wg + ATTENTION_KC);
    default:
        return attention_trips(dev, wg, d4, (keys + n - 1) / n);
    }
}

static uint32_t key_splits(const vkr_device *dev, const op_attention_desc *d, shape_kind kind, uint32_t wg)
{
    uint64_t keys = cache_keys(d);
    uint64_t rows = (uint64_t)d->n_tokens * d->n_heads, n = 1;
    bool cpu = dev->caps.device_type == VKLLM_DEVICE_CPU;
    const char *e = getenv("VKLLM_ATTENTION_SPLIT");
    if (e && *e)
        n = strtoul(e, NULL, 10);
    else if (!cpu && kind == SHAPE_ROWS && d->n_tokens <= ATTENTION_SPLIT_MAX_TOKENS && rows < ATTENTION_SPLIT_GROUPS) {
        n = (ATTENTION_SPLIT_GROUPS + rows - 1) / rows;
        if (n > keys / ATTENTION_SPLIT_MIN_KEYS)
            n = keys / ATTENTION_SPLIT_MIN_KEYS;
    }
    uint64_t most = dev->caps.max_storage_buffer_range / partial_bytes_per_token(d, 1);
    most = most < ATTENTION_MAX_SPLITS ? most : ATTENTION_MAX_SPLITS;
    n = n > most ? most : n;
    n = n < 1 ? 1 : n;
    while (cpu && n < most && shape_trips(dev, d, kind, wg, n) > ATTENTION_MAX_TRIPS)
        n++;
    return (uint32_t)n;
}

/* How op_attention runs a batch: the prompt shape, the CPU decode shape, or the per-row
 * shape, with n_splits key ranges per row. The prompt and lanes shapes are taken only where
 * their ranges keep llvmpipe's loops inside its cut; the per-row shape is refused where
 * its do not (op_attention). */
typedef struct attention_shape {
    bool prefill, lanes;
    uint32_t wg;       /* the per-row shape's workgroup */
    uint32_t n_splits; /* key ranges per row (1: no merge) */
} attention_shape;

static attention_shape attention_shape_for(const vkr_device *dev, const op_attention_desc *d)
{
    attention_shape sh = {.wg = dev->caps.max_workgroup_size >= 128 ? 128 : 64, .n_splits = 1};
    bool cpu = dev->caps.device_type == VKLLM_DEVICE_CPU;
    uint32_t prefill_wg = prefill_workgroup(dev), sg = dev->caps.subgroup_size;
    if (use_prefill(d, prefill_wg)) {
        sh.n_splits = key_splits(dev, d, SHAPE_PREFILL, prefill_wg);
        sh.prefill = !cpu || shape_trips(dev, d, SHAPE_PREFILL, prefill_wg, sh.n_splits) <= ATTENTION_MAX_TRIPS;
    }
    if (!sh.prefill && use_lanes(dev, d)) {
        sh.n_splits = key_splits(dev, d, SHAPE_LANES, sg);
        sh.lanes = shape_trips(dev, d, SHAPE_LANES, sg, sh.n_splits) <= ATTENTION_MAX_TRIPS;
    }
    if (!sh.prefill && !sh.lanes)
        sh.n_splits = key_splits(dev, d, SHAPE_ROWS, sh.wg);
    return sh;
}

/* The tokens a dispatch takes so that its partials fit one binding. */
static uint32_t split_tokens_per_dispatch(const vkr_device *dev, const op_attention_desc *d, uint32_t n_splits,
                                          uint32_t rows_per)
{
    uint64_t fit = dev->caps.max_storage_buffer_range / partial_bytes_per_token(d, n_splits);
    return fit < rows_per ? (uint32_t)fit : rows_per;
}

uint64_t op_attention_partials_bytes(const vkr_device *dev, const op_attention_desc *d)
{
    uint64_t most = 0;
    uint32_t rows_per = op_rows_per_binding(dev, (uint64_t)d->n_heads * d->head_dim * 4);
    for (uint32_t n = 1; n <= d->n_tokens; n = n < ATTENTION_SPLIT_MAX_TOKENS ? n + 1 : d->n_tokens) {
        op_attention_desc at = *d;
        at.n_tokens = n;
        attention_shape sh = attention_shape_for(dev, &at);
        if (sh.n_splits > 1) {
            uint32_t per = split_tokens_per_dispatch(dev, &at, sh.n_splits, rows_per ? rows_per : 1);
            uint64_t bytes = (uint64_t)(n < per ? n : per) * partial_bytes_per_token(&at, sh.n_splits);
            most = bytes > most ? bytes : most;
        }
        if (n == d->n_tokens)
            break;
    }
    return most;
}

vkllm_status op_attention(vkr_cmd *cmd, vkr_device *dev, op_tensor q, op_tensor k_cache,
                          op_tensor v_cache, op_tensor params, op_tensor out, op_tensor partials,
                          const op_attention_desc *d)
{
    if (d->n_tokens == 0)
        return VKLLM_OK;
    if (!d->n_heads || !d->n_heads_kv || d->n_heads % d->n_heads_kv)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "attention: %u query heads do not group over %u KV heads", d->n_heads,
                       d->n_heads_kv);
    if (!d->head_dim || d->head_dim % 4 || d->head_dim > ATTENTION_MAX_HEAD_DIM)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "attention: head_dim %u unsupported (a multiple of 4, at most %u)",
                       d->head_dim, ATTENTION_MAX_HEAD_DIM);
    if (d->n_ctx == 0 || !(d->alibi_max_bias >= 0.0f) || !isfinite(d->scale))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: n_ctx %u, scale %g, alibi %g invalid",
                       d->n_ctx, d->scale, d->alibi_max_bias);
    uint64_t row_bytes = (uint64_t)d->n_heads * d->head_dim * 4;
    uint64_t cache_bytes = (uint64_t)d->n_ctx * d->n_heads_kv * d->head_dim * 2;
    if (!op_tensor_holds(q, row_bytes * d->n_tokens) || !op_tensor_holds(out, row_bytes * d->n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "attention: q or out smaller than %u tokens of %u heads x %u floats",
                       d->n_tokens, d->n_heads, d->head_dim);
    if (!op_tensor_holds(k_cache, cache_bytes) || !op_tensor_holds(v_cache, cache_bytes))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "attention: K or V cache smaller than %u rows of %u x %u f16", d->n_ctx,
                       d->n_heads_kv, d->head_dim);
    if (!op_tensor_holds(params, sizeof(vk_step_params)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "attention: params smaller than vk_step_params");
    /* The keys read depend on n_past, known only at run time: each cache is bound whole. */
    if (cache_bytes > dev->caps.max_storage_buffer_range)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "attention: a layer's K/V cache (%u rows x %u heads x %u f16 = %llu bytes) "
                       "exceeds the device's binding range (%llu bytes)", d->n_ctx, d->n_heads_kv,
                       d->head_dim, (unsigned long long)cache_bytes,
                       (unsigned long long)dev->caps.max_storage_buffer_range);
    uint32_t rows_per = op_rows_per_binding(dev, row_bytes);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "attention: a token's q row exceeds a binding");

    attention_shape sh = attention_shape_for(dev, d);
    uint32_t d4 = d->head_dim / 4;
    if (d4 > sh.wg)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "attention: head_dim %u needs workgroups of %u",
                       d->head_dim, d4);
    /* llvmpipe stops a shader invocation's loops after 65,535 trips, silently (the prompt
     * and lanes shapes are only chosen well inside it). */
    uint64_t keys = cache_keys(d);
    uint64_t trips = shape_trips(dev, d, SHAPE_ROWS, sh.wg, sh.n_splits);
    if (dev->caps.device_type == VKLLM_DEVICE_CPU && !sh.prefill && !sh.lanes && trips > ATTENTION_MAX_TRIPS)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "attention: %llu keys x head_dim %u in %u ranges need ~%llu loop trips per "
                       "invocation; llvmpipe cuts loops at 65,535 (limit kept: %u)",
                       (unsigned long long)keys, d->head_dim, sh.n_splits, (unsigned long long)trips,
                       ATTENTION_MAX_TRIPS);
    uint64_t split_bytes = partial_bytes_per_token(d, sh.n_splits);
    if (sh.n_splits > 1) {
        rows_per = split_tokens_per_dispatch(dev, d, sh.n_splits, rows_per);
        uint64_t need = (uint64_t)(d->n_tokens < rows_per ? d->n_tokens : rows_per) * split_bytes;
        if (rows_per == 0 || !op_tensor_holds(partials, need))
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                           "attention: %u key ranges per row need %llu bytes of partials "
                           "(op_attention_partials_bytes)", sh.n_splits, (unsigned long long)need);
    }

    attention_push base = {.n_heads = d->n_heads, .n_heads_kv = d->n_heads_kv,
                           .head_dim = d->head_dim, .n_ctx = d->n_ctx, .scale = d->scale,
                           .window = d->window};
    if (d->alibi_max_bias > 0.0f) {
        /* ggml_soft_max_ext: n_head_log2 = 2^floor(log2(n_head)), m0 = 2^(-max_bias /
         * n_head_log2), m1 = 2^(-max_bias / 2 / n_head_log2); the shader takes the exponents. */
        uint32_t n_log2 = 1;
        while (n_log2 * 2 <= d->n_heads)
            n_log2 *= 2;
        base.alibi = 1;
        base.n_head_log2 = n_log2;
        base.alibi_e0 = -d->alibi_max_bias / (float)n_log2;
        base.alibi_e1 = -(d->alibi_max_bias / 2.0f) / (float)n_log2;
    }

    char shader[48];
    uint32_t prefill_wg = prefill_workgroup(dev);
    bool prefill = sh.prefill, lanes = sh.lanes;
    bool cpu = dev->caps.device_type == VKLLM_DEVICE_CPU;
    /* The CPU shapes (lanes, rolled prefill) read the caches through texel views where they
     * have them. */
    vkr_texel_binding kv_texel[2];
    bool texel = (lanes || (prefill && cpu)) && cache_texel_view(k_cache, cache_bytes, &kv_texel[0], &base.k_skip) &&
                 cache_texel_view(v_cache, cache_bytes, &kv_texel[1], &base.v_skip);
    snprintf(shader, sizeof shader, "attention%s%s",
             prefill ? (cpu ? "_prefill_rolled" : "_prefill")
             : lanes ? "_lanes"
             : dev->caps.subgroup_arithmetic ? "_subgroup" : "",
             texel ? "_tx" : dev->caps.storage16 ? "_f16" : "_packed");
    /* Texel reads: whether every row starts at a texel (two vec4s of f16). */
    uint32_t rows_even = texel && d4 % 2 == 0 && (d->n_heads_kv * d4) % 2 == 0 && base.k_skip % 2 == 0 &&
                         base.v_skip % 2 == 0;
    uint32_t spec[] = {prefill ? prefill_wg : lanes ? dev->caps.subgroup_size : sh.wg, d4, rows_even};
    vkr_pipeline *pipe, *merge = NULL;
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, texel ? 3 : prefill || lanes ? 2 : 1, &pipe);
    uint32_t merge_wg = 64;
    if (!s && sh.n_splits > 1)
        s = vkr_pipeline_get(dev, "attention_merge", &merge_wg, 1, &merge);
    base.n_splits = sh.n_splits;
    for (uint32_t begin = 0; begin < d->n_tokens && !s; begin += rows_per) {
        uint32_t count = d->n_tokens - begin < rows_per ? d->n_tokens - begin : rows_per;
        attention_push push = base;
        push.n_tokens = count;
        push.t0 = begin;
        vkr_binding bindings[] = {
            op_bind_span(dev, q, begin * row_bytes, count * row_bytes, 4, false, &push.q_shift),
            texel ? (vkr_binding){0} : op_bind_range(k_cache, 0, cache_bytes, false),
            texel ? (vkr_binding){0} : op_bind_range(v_cache, 0, cache_bytes, false),
            op_bind_range(params, 0, sizeof(vk_step_params), false),
            op_bind_span(dev, out, begin * row_bytes, count * row_bytes, 4, true, &push.out_shift),
            merge ? op_bind_range(partials, 0, count * split_bytes, true) : (vkr_binding){0},
        };
        uint64_t n = (prefill ? (uint64_t)(count + prefill_wg - 1) / prefill_wg : count) * d->n_heads * sh.n_splits;
        if (n > 0xffffffffu)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "attention: %llu workgroups", (unsigned long long)n);
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)n, &gx, &gy);
        const char *label = prefill ? "attention_prefill" : lanes ? "attention_lanes"
                            : merge ? "attention_split" : "attention";
        s = texel ? vkr_cmd_dispatch_texel(cmd, pipe, bindings, 6, kv_texel, 2, &push, sizeof push, gx, gy, 1, label)
                  : vkr_cmd_dispatch(cmd, pipe, bindings, 6, &push, sizeof push, gx, gy, 1, label);
        if (!s && merge) {
            /* The merge reads the partials (binding 5) and writes out (binding 4). */
            vkr_binding merge_bindings[] = {{0}, {0}, {0}, {0}, bindings[4], bindings[5]};
            merge_bindings[5].write = false;
            vkr_grid(dev, count * d->n_heads, &gx, &gy);
            s = vkr_cmd_dispatch(cmd, merge, merge_bindings, 6, &push, sizeof push, gx, gy, 1, "attention_merge");
        }
    }
    return s;
}
