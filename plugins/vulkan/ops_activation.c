/* Activations: SwiGLU (silu(gate) * up), SiLU, GELU (tanh and exact forms), ReLU, clamp. */
#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct activation_push {
    uint32_t n;
    uint32_t a_shift, b_shift, out_shift;
    float bound;
} activation_push;

static vkllm_status activation(vkr_cmd *cmd, vkr_device *dev, const char *shader, op_tensor a,
                               op_tensor b, op_tensor out, uint32_t n, float bound)
{
    if (n == 0)
        return VKLLM_OK;
    uint64_t bytes = (uint64_t)n * 4;
    if (!op_tensor_holds(a, bytes) || !op_tensor_holds(out, bytes) ||
        (b.size && !op_tensor_holds(b, bytes)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: an operand holds fewer than %u floats",
                       shader, n);
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    /* Tensors larger than one binding go in chunks; all three move together. */
    uint32_t chunk = op_rows_per_binding(dev, 4);
    for (uint32_t begin = 0; begin < n && !s; begin += chunk) {
        uint32_t count = n - begin < chunk ? n - begin : chunk;
        uint64_t off = (uint64_t)begin * 4, size = (uint64_t)count * 4;
        activation_push push = {count, 0, 0, 0, bound};
        vkr_binding bindings[] = {
            op_bind_span(dev, a, off, size, 4, false, &push.a_shift),
            b.size ? op_bind_span(dev, b, off, size, 4, false, &push.b_shift)
                   : op_bind_span(dev, a, off, size, 4, false, &push.b_shift),
            op_bind_span(dev, out, off, size, 4, true, &push.out_shift),
        };
        uint32_t gx, gy;
        vkr_grid(dev, (count + OP_WORKGROUP - 1) / OP_WORKGROUP, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 3, &push, sizeof push, gx, gy, 1, shader);
    }
    return s;
}

vkllm_status op_swiglu(vkr_cmd *cmd, vkr_device *dev, op_tensor gate, op_tensor up, op_tensor out,
                       uint32_t n)
{
    if (!up.size)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "swiglu: no up operand");
    return activation(cmd, dev, "activation_swiglu", gate, up, out, n, 0);
}

vkllm_status op_silu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n)
{
    op_tensor none = {0};
    return activation(cmd, dev, "activation_silu", a, none, out, n, 0);
}

vkllm_status op_gelu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n)
{
    op_tensor none = {0};
    return activation(cmd, dev, "activation_gelu", a, none, out, n, 0);
}

vkllm_status op_relu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n)
{
    op_tensor none = {0};
    return activation(cmd, dev, "activation_relu", a, none, out, n, 0);
}

vkllm_status op_gelu_erf(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n)
{
    op_tensor none = {0};
    return activation(cmd, dev, "activation_gelu_erf", a, none, out, n, 0);
}

vkllm_status op_clamp(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n, float bound)
{
    op_tensor none = {0};
    if (!(bound > 0))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "clamp: bound %g must be positive", bound);
    return activation(cmd, dev, "activation_clamp", a, none, out, n, bound);
}
