/* Rotary position embedding (adjacent-pair and half-split modes, partial rotation). */
#include <math.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct rope_push {
    uint32_t n_tokens, n_heads, head_dim, n_rot, mode;
    float theta_scale, freq_scale;
    uint32_t x_shift, t0;
} rope_push;

vkllm_status op_rope(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor params,
                     const op_rope_desc *d)
{
    if (d->n_tokens == 0 || d->n_heads == 0 || d->n_rot == 0)
        return VKLLM_OK;
    if (d->n_rot % 2 || d->n_rot > d->head_dim)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope: n_rot %u must be even and <= head_dim %u",
                       d->n_rot, d->head_dim);
    if (d->mode != OP_ROPE_ADJACENT && d->mode != OP_ROPE_HALF)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope: unknown mode %d", (int)d->mode);
    if (!(d->freq_base > 0.0f) || !isfinite(d->freq_scale))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope: freq_base %g / freq_scale %g invalid",
                       d->freq_base, d->freq_scale);
    uint64_t row_bytes = (uint64_t)d->n_heads * d->head_dim * 4;
    if (!op_tensor_holds(x, row_bytes * d->n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope: x smaller than %u tokens of %u x %u floats",
                       d->n_tokens, d->n_heads, d->head_dim);
    if (!op_tensor_holds(params, sizeof(vk_step_params)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "rope: params buffer smaller than vk_step_params");
    uint32_t rows_per = op_rows_per_binding(dev, row_bytes);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "rope: a token of %u heads x %u exceeds the device's binding range", d->n_heads,
                       d->head_dim);
    float theta_scale = op_rope_theta_scale(d->freq_base, d->n_rot);

    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "rope", spec, 1, &pipe);
    for (uint32_t begin = 0; begin < d->n_tokens && !s; begin += rows_per) {
        uint32_t count = d->n_tokens - begin < rows_per ? d->n_tokens - begin : rows_per;
        rope_push push = {count, d->n_heads, d->head_dim, d->n_rot, (uint32_t)d->mode,
                          theta_scale, d->freq_scale, 0, begin};
        vkr_binding bindings[] = {
            op_bind_span(dev, x, begin * row_bytes, count * row_bytes, 4, true, &push.x_shift),
            op_bind_range(params, 0, sizeof(vk_step_params), false),
        };
        uint64_t n = (uint64_t)count * d->n_heads * (d->n_rot / 2);
        if (n > 0xffffffffu - OP_WORKGROUP)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "rope: %llu pairs in one dispatch",
                           (unsigned long long)n);
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)((n + OP_WORKGROUP - 1) / OP_WORKGROUP), &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 2, &push, sizeof push, gx, gy, 1, "rope");
    }
    return s;
}
