/* Row normalisations: RMSNorm and LayerNorm, one workgroup per row. */
#include <stdio.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct norm_push {
    uint32_t n_cols, n_rows;
    float eps;
    uint32_t x_shift, out_shift;
    uint32_t has_bias;
} norm_push;

static vkllm_status norm(vkr_cmd *cmd, vkr_device *dev, const char *op, op_tensor x, op_tensor w,
                         op_tensor b, op_tensor out, uint32_t n_cols, uint32_t n_rows, float eps)
{
    if (n_rows == 0)
        return VKLLM_OK;
    uint64_t row_bytes = (uint64_t)n_cols * 4;
    if (n_cols == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: rows of 0 columns", op);
    if (!op_tensor_holds(x, row_bytes * n_rows) || !op_tensor_holds(out, row_bytes * n_rows))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: x or out smaller than %u rows of %u floats",
                       op, n_rows, n_cols);
    if (!op_tensor_holds(w, row_bytes) || (b.size && !op_tensor_holds(b, row_bytes)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "%s: weight or bias smaller than %u floats", op,
                       n_cols);
    uint32_t rows_per = op_rows_per_binding(dev, row_bytes);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "%s: a row of %u floats exceeds the device's binding range (%llu bytes)", op,
                       n_cols, (unsigned long long)dev->caps.max_storage_buffer_range);

    char shader[48];
    snprintf(shader, sizeof shader, "%s%s", op, dev->caps.subgroup_arithmetic ? "_subgroup" : "");
    uint32_t spec[] = {op_reduce_workgroup(dev, n_cols)};
    vkr_pipeline *pipe;
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    for (uint32_t begin = 0; begin < n_rows && !s; begin += rows_per) {
        uint32_t count = n_rows - begin < rows_per ? n_rows - begin : rows_per;
        norm_push push = {n_cols, count, eps, 0, 0, b.size != 0};
        vkr_binding bindings[] = {
            op_bind_span(dev, x, begin * row_bytes, count * row_bytes, 4, false, &push.x_shift),
            op_bind_range(w, 0, row_bytes, false),
            b.size ? op_bind_range(b, 0, row_bytes, false) : op_bind_range(w, 0, row_bytes, false),
            op_bind_span(dev, out, begin * row_bytes, count * row_bytes, 4, true, &push.out_shift),
        };
        uint32_t gx, gy;
        vkr_grid(dev, count, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 4, &push, sizeof push, gx, gy, 1, op);
    }
    return s;
}

vkllm_status op_rmsnorm(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor out,
                        uint32_t n_cols, uint32_t n_rows, float eps)
{
    op_tensor none = {0};
    return norm(cmd, dev, "rmsnorm", x, w, none, out, n_cols, n_rows, eps);
}

vkllm_status op_rmsnorm_eps_outside(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w,
                                    op_tensor out, uint32_t n_cols, uint32_t n_rows, float eps)
{
    op_tensor none = {0};
    return norm(cmd, dev, "rmsnorm_eps_outside", x, w, none, out, n_cols, n_rows, eps);
}

vkllm_status op_layernorm(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor b,
                          op_tensor out, uint32_t n_cols, uint32_t n_rows, float eps)
{
    return norm(cmd, dev, "layernorm", x, w, b, out, n_cols, n_rows, eps);
}
