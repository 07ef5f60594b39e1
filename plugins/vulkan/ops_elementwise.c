/* Elementwise ops: add, mul (with broadcast), scale. */
#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct elementwise_push {
    uint32_t n, n_b;
    float scale;
    uint32_t b_phase; /* index into b of this chunk's first element */
    uint32_t b_shift; /* b's first element within its binding (b may start unaligned) */
} elementwise_push;

static vkllm_status elementwise(vkr_cmd *cmd, vkr_device *dev, const char *shader, op_tensor a,
                                op_tensor b, op_tensor out, uint32_t n, uint32_t n_b, float scale)
{
    if (n == 0)
        return VKLLM_OK;
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    if (s)
        return s;
    n_b = n_b ? n_b : 1;
    if (b.size && (uint64_t)n_b * 4 > dev->caps.max_storage_buffer_range)
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: broadcast operand of %u floats exceeds a binding",
                       shader, n_b);
    /* Tensors larger than one binding are processed in chunks. */
    uint32_t chunk = op_chunk_elements(dev, 4);
    for (uint32_t begin = 0; begin < n && !s; begin += chunk) {
        uint32_t count = n - begin < chunk ? n - begin : chunk;
        elementwise_push push = {count, n_b, scale, begin % n_b, 0};
        vkr_binding bindings[] = {
            op_bind_range(a, (VkDeviceSize)begin * 4, (VkDeviceSize)count * 4, false),
            b.size ? op_bind_span(dev, b, 0, (VkDeviceSize)n_b * 4, 4, false, &push.b_shift)
                   : op_bind_range(a, (VkDeviceSize)begin * 4, (VkDeviceSize)count * 4, false),
            op_bind_range(out, (VkDeviceSize)begin * 4, (VkDeviceSize)count * 4, true),
        };
        uint32_t gx, gy;
        vkr_grid(dev, (count + OP_WORKGROUP - 1) / OP_WORKGROUP, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 3, &push, sizeof push, gx, gy, 1, shader);
    }
    return s;
}

vkllm_status op_add(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                    uint32_t n, uint32_t n_b)
{
    return elementwise(cmd, dev, "elementwise_add", a, b, out, n, n_b, 1.0f);
}

vkllm_status op_mul(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                    uint32_t n, uint32_t n_b)
{
    return elementwise(cmd, dev, "elementwise_mul", a, b, out, n, n_b, 1.0f);
}

vkllm_status op_scale(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n,
                      float scale)
{
    op_tensor none = {0};
    return elementwise(cmd, dev, "elementwise_scale", a, none, out, n, 1, scale);
}
