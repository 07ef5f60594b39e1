/* Row softmax with optional scale and additive mask, one workgroup per row. */
#include <stdio.h>

#include "error.h"
#include "ops.h"
#include "ops_rows.h"

typedef struct softmax_push {
    uint32_t n_cols, n_rows;
    float scale;
    uint32_t x_shift, out_shift, mask_shift;
    uint32_t mask_rows, mask_phase;
} softmax_push;

/* The mask holds mask.size / (4 n_cols) rows; row r of x uses mask row r % that count (a
 * full mask has n_rows rows; one row broadcasts). When the whole mask fits one binding it
 * is bound once; otherwise each chunk binds its own mask rows, which needs a full mask. */
vkllm_status op_softmax(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor mask, op_tensor out,
                        uint32_t n_cols, uint32_t n_rows, float scale)
{
    if (n_rows == 0)
        return VKLLM_OK;
    uint64_t row_bytes = (uint64_t)n_cols * 4;
    if (n_cols == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "softmax: rows of 0 columns");
    if (!op_tensor_holds(x, row_bytes * n_rows) || !op_tensor_holds(out, row_bytes * n_rows))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "softmax: x or out smaller than %u rows of %u floats", n_rows, n_cols);
    uint64_t mask_rows = mask.size / row_bytes;
    if (mask.size && (mask_rows == 0 || mask_rows > 0xffffffffu || !op_tensor_holds(mask, row_bytes)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "softmax: mask of %llu bytes holds no whole row of %u floats",
                       (unsigned long long)mask.size, n_cols);
    uint32_t rows_per = op_rows_per_binding(dev, row_bytes);
    if (rows_per == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "softmax: a row of %u floats exceeds the device's binding range (%llu bytes)",
                       n_cols, (unsigned long long)dev->caps.max_storage_buffer_range);
    bool mask_whole = mask_rows * row_bytes <= dev->caps.max_storage_buffer_range;
    if (mask.size && !mask_whole && mask_rows < n_rows)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "softmax: a broadcast mask of %llu rows exceeds one binding",
                       (unsigned long long)mask_rows);

    const char *shader = dev->caps.subgroup_arithmetic ? "softmax_subgroup" : "softmax";
    uint32_t spec[] = {op_reduce_workgroup(dev, n_cols)};
    vkr_pipeline *pipe;
    vkllm_status s = vkr_pipeline_get(dev, shader, spec, 1, &pipe);
    for (uint32_t begin = 0; begin < n_rows && !s; begin += rows_per) {
        uint32_t count = n_rows - begin < rows_per ? n_rows - begin : rows_per;
        softmax_push push = {n_cols, count, scale, 0, 0, 0, (uint32_t)mask_rows, 0};
        vkr_binding mask_binding;
        if (!mask.size) {
            mask_binding = op_bind_span(dev, x, begin * row_bytes, count * row_bytes, 4, false,
                                        &push.mask_shift); /* unused placeholder */
        } else if (mask_whole) {
            mask_binding = op_bind_range(mask, 0, mask_rows * row_bytes, false);
            push.mask_phase = (uint32_t)(begin % mask_rows);
        } else { /* a full mask too big for one binding: its rows follow x's */
            mask_binding = op_bind_span(dev, mask, begin * row_bytes, count * row_bytes, 4, false,
                                        &push.mask_shift);
            push.mask_rows = count;
        }
        vkr_binding bindings[] = {
            op_bind_span(dev, x, begin * row_bytes, count * row_bytes, 4, false, &push.x_shift),
            mask_binding,
            op_bind_span(dev, out, begin * row_bytes, count * row_bytes, 4, true, &push.out_shift),
        };
        uint32_t gx, gy;
        vkr_grid(dev, count, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 3, &push, sizeof push, gx, gy, 1, "softmax");
    }
    return s;
}
