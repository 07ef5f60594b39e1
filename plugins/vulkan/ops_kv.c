/* KV cache store: f32 rows -> f16 cache rows at params.n_past + t. */
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
