/* KV cache store: f32 rows -> f16 cache rows at params.n_past + t; and the same fused with
 * the rope of q and k (one dispatch instead of four per layer). */
#include <math.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct kv_store_push {
    uint32_t n_tokens, width, src_shift, t0, n_ctx;
} kv_store_push;

vkllm_status op_kv_store(vkr_cmd *cmd, vkr_device *dev, op_tensor src, op_tensor cache,
                         op_tensor params, uint32_t n_tokens, uint32_t width)
{
    if (n_tokens == 0)
        return VKLLM_OK;
    bool s16 = dev->caps.storage16;
    if (width == 0 || (!s16 && width % 2))
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "kv_store: row width %u must be even without 16-bit storage (f16 pairs are "
                       "written as one uint)", width);
    uint64_t row_bytes = (uint64_t)width * 4, cache_row_bytes = (uint64_t)width * 2;
    uint64_t n_ctx = cache.size / cache_row_bytes;
    if (!op_tensor_holds(src, row_bytes * n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv_store: src smaller than %u rows of %u floats",
                       n_tokens, width);
    if (n_ctx == 0 || !op_tensor_holds(cache, n_ctx * cache_row_bytes) || n_ctx > 0xffffffffu)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv_store: cache of %llu bytes holds no row of %u",
                       (unsigned long long)cache.size, width);
    /* The rows written depend on n_past, known only at run time: the whole cache is bound. */
    if (n_ctx * cache_row_bytes > dev->caps.max_storage_buffer_range)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "kv_store: the cache (%llu rows x %u f16 = %llu bytes) exceeds the device's "
                       "binding range (%llu bytes)", (unsigned long long)n_ctx, width,
                       (unsigned long long)(n_ctx * cache_row_bytes),
                       (unsigned long long)dev->caps.max_storage_buffer_range);
    if (!op_tensor_holds(params, sizeof(vk_step_params)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv_store: params smaller than vk_step_params");
    uint32_t rows_per = op_rows_per_binding(dev, row_bytes);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "kv_store: a row of %u floats exceeds a binding", width);

    const char *shader = s16 ? "kv_store_f16" : "kv_store_packed";
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    for (uint32_t begin = 0; begin < n_tokens && !s; begin += rows_per) {
        uint32_t count = n_tokens - begin < rows_per ? n_tokens - begin : rows_per;
        kv_store_push push = {count, width, 0, begin, (uint32_t)n_ctx};
        vkr_binding bindings[] = {
            op_bind_span(dev, src, begin * row_bytes, count * row_bytes, 4, false, &push.src_shift),
            op_bind_range(cache, 0, n_ctx * cache_row_bytes, true),
            op_bind_range(params, 0, sizeof(vk_step_params), false),
        };
        uint64_t n = (uint64_t)count * (s16 ? width : width / 2);
        if (n > 0xffffffffu - OP_WORKGROUP)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "kv_store: %llu elements in one dispatch",
                           (unsigned long long)n);
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)((n + OP_WORKGROUP - 1) / OP_WORKGROUP), &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 3, &push, sizeof push, gx, gy, 1, "kv_store");
    }
    return s;
}

typedef struct rope_kv_push {
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim, n_rot, mode;
    float theta_scale, freq_scale;
    uint32_t q_shift, k_shift, v_shift, t0, n_ctx;
} rope_kv_push;

/* Whether two tensors share bytes. */
static bool tensors_overlap(op_tensor a, op_tensor b)
{
    return a.buffer && a.buffer == b.buffer && a.offset < b.offset + b.size &&
           b.offset < a.offset + a.size;
}

vkllm_status op_rope_kv_store(vkr_cmd *cmd, vkr_device *dev, const op_rope_kv_desc *d)
{
    if (d->n_tokens == 0)
        return VKLLM_OK;
    bool s16 = dev->caps.storage16, has_q = d->q.buffer != NULL;
    if (d->n_heads_kv == 0 || d->head_dim == 0 || (has_q && d->n_heads == 0))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "rope_kv_store: %u KV heads / %u q heads of %u dims: none may be 0",
                       d->n_heads_kv, d->n_heads, d->head_dim);
    if (d->n_rot) {
        if (d->n_rot % 2 || d->n_rot > d->head_dim)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                           "rope_kv_store: n_rot %u must be even and <= head_dim %u", d->n_rot,
                           d->head_dim);
        if (d->mode != OP_ROPE_ADJACENT && d->mode != OP_ROPE_HALF)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope_kv_store: unknown rope mode %d",
                           (int)d->mode);
        if (!(d->freq_base > 0.0f) || !isfinite(d->freq_scale))
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                           "rope_kv_store: freq_base %g / freq_scale %g invalid", d->freq_base,
                           d->freq_scale);
    }
    uint64_t width = (uint64_t)d->n_heads_kv * d->head_dim;
    if (width > 0x7fffffffu || (!s16 && width % 2))
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "rope_kv_store: K/V row width %llu must be even without 16-bit storage (f16 "
                       "pairs are written as one uint)", (unsigned long long)width);
    uint64_t kv_row = width * 4, cache_row = width * 2;
    uint64_t q_row = has_q ? (uint64_t)d->n_heads * d->head_dim * 4 : 0;
    if (has_q && !op_tensor_holds(d->q, q_row * d->n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "rope_kv_store: q smaller than %u tokens of %u x %u floats", d->n_tokens,
                       d->n_heads, d->head_dim);
    if (!op_tensor_holds(d->k, kv_row * d->n_tokens) ||
        !op_tensor_holds(d->v, kv_row * d->n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "rope_kv_store: k or v smaller than %u tokens of %llu floats", d->n_tokens,
                       (unsigned long long)width);
    uint64_t n_ctx = d->k_cache.size / cache_row;
    if (n_ctx == 0 || n_ctx > 0xffffffffu || !op_tensor_holds(d->k_cache, n_ctx * cache_row) ||
        !op_tensor_holds(d->v_cache, n_ctx * cache_row) || d->v_cache.size / cache_row != n_ctx)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "rope_kv_store: caches of %llu and %llu bytes must hold the same number "
                       "(>= 1) of rows of %llu f16", (unsigned long long)d->k_cache.size,
                       (unsigned long long)d->v_cache.size, (unsigned long long)width);
    /* The rows written depend on n_past, known only at run time: the whole caches are bound. */
    if (n_ctx * cache_row > dev->caps.max_storage_buffer_range)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "rope_kv_store: a cache (%llu rows x %llu f16 = %llu bytes) exceeds the "
                       "device's binding range (%llu bytes)", (unsigned long long)n_ctx,
                       (unsigned long long)width, (unsigned long long)(n_ctx * cache_row),
                       (unsigned long long)dev->caps.max_storage_buffer_range);
    if (!op_tensor_holds(d->params, sizeof(vk_step_params)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "rope_kv_store: params smaller than vk_step_params");
    /* One dispatch reads k and v while it writes q and the caches: no hazard may lie inside it. */
    /* The first three are written. */
    const op_tensor t[] = {d->q, d->k_cache, d->v_cache, d->k, d->v};
    static const char *const names[] = {"q", "k_cache", "v_cache", "k", "v"};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 5; j++)
            if (tensors_overlap(t[i], t[j]))
                return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope_kv_store: %s overlaps %s",
                               names[i], names[j]);
    uint32_t q_heads = has_q && d->n_rot ? d->n_heads : 0; /* 0: the shader does no q work */
    uint64_t bound_row = q_heads && q_row > kv_row ? q_row : kv_row;
    uint32_t rows_per = op_rows_per_binding(dev, bound_row);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "rope_kv_store: a token of %u (q) or %u (KV) heads x %u exceeds a binding",
                       d->n_heads, d->n_heads_kv, d->head_dim);
    float theta_scale = op_rope_theta_scale(d->freq_base, d->n_rot);
    uint64_t per_token = (uint64_t)q_heads * (d->n_rot / 2) + 2 * (s16 ? width : width / 2);

    const char *shader = s16 ? "rope_kv_store_f16" : "rope_kv_store_packed";
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    for (uint32_t begin = 0; begin < d->n_tokens && !s; begin += rows_per) {
        uint32_t count = d->n_tokens - begin < rows_per ? d->n_tokens - begin : rows_per;
        uint64_t n = count * per_token;
        if (n > 0xffffffffu - OP_WORKGROUP)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "rope_kv_store: %llu invocations in one dispatch",
                           (unsigned long long)n);
        rope_kv_push push = {count, q_heads, d->n_heads_kv, d->head_dim, d->n_rot,
                             (uint32_t)d->mode, theta_scale, d->freq_scale, 0, 0, 0, begin,
                             (uint32_t)n_ctx};
        vkr_binding bindings[6] = {
            [1] = op_bind_span(dev, d->k, begin * kv_row, count * kv_row, 4, false, &push.k_shift),
            [2] = op_bind_span(dev, d->v, begin * kv_row, count * kv_row, 4, false, &push.v_shift),
            [3] = op_bind_range(d->k_cache, 0, n_ctx * cache_row, true),
            [4] = op_bind_range(d->v_cache, 0, n_ctx * cache_row, true),
            [5] = op_bind_range(d->params, 0, sizeof(vk_step_params), false),
        };
        /* Without q work binding 0 stays empty: the recorder binds a dummy, never read. */
        if (q_heads)
            bindings[0] = op_bind_span(dev, d->q, begin * q_row, count * q_row, 4, true,
                                       &push.q_shift);
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)((n + OP_WORKGROUP - 1) / OP_WORKGROUP), &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 6, &push, sizeof push, gx, gy, 1,
                             "rope_kv_store");
    }
    return s;
}
