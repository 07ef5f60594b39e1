/* Mamba's ops: the causal depthwise conv1d and the selective scan, each carrying its
 * per-sequence state from call to call, and the row concatenation that joins dt with B, C
 * for the scan.
 *
 * Both recurrences give each channel one invocation that walks the tokens in order. lavapipe
 * silently leaves loops after 65,535 iterations per invocation (all loops together), so the
 * tokens are split into dispatches of at most SSM_LOOP_BUDGET iterations each; the state
 * buffer carries the recurrence from one dispatch to the next (the recorder puts a barrier
 * between them). With Mamba's sizes (d_conv 4, d_state 16) a dispatch takes up to 3,639
 * tokens for the conv and 1,924 for the scan, so a batch of 512 is one dispatch. Channels
 * are split too where the state or a row would exceed one binding. */
#include "error.h"
#include "ops.h"
#include "ops_rows.h"

#define SSM_MAX_CONV 8   /* MAX_CONV in ssm_conv.comp */
#define SSM_MAX_STATE 64 /* MAX_STATE in ssm_scan.comp */
#define SSM_LOOP_BUDGET 32768u

typedef struct ssm_conv_push {
    uint32_t n_tokens, d_inner, n_channels, c0, d_conv, has_bias, silu;
    uint32_t x_shift, w_shift, bias_shift, state_shift, out_shift;
} ssm_conv_push;

typedef struct ssm_scan_push {
    uint32_t n_tokens, d_inner, d_state, n_channels, c0;
    uint32_t x_shift, dtbc_shift, a_shift, d_shift, state_shift, out_shift;
} ssm_scan_push;

typedef struct concat_push {
    uint32_t n_rows, wa, wb, a_shift, b_shift, out_shift;
} concat_push;

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* Tokens per dispatch: what the loop budget allows, and what fits one binding per row. */
static uint32_t tokens_per_dispatch(uint32_t per_token, uint32_t fixed, uint32_t rows_fit)
{
    return min_u32((SSM_LOOP_BUDGET - fixed) / per_token, rows_fit);
}

vkllm_status op_ssm_conv(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor bias,
                         op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t d_inner,
                         uint32_t d_conv, bool silu)
{
    if (n_tokens == 0)
        return VKLLM_OK;
    if (d_conv < 2 || d_conv > SSM_MAX_CONV || d_inner == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "ssm_conv: kernel %u (2..%u) over %u channels", d_conv,
                       SSM_MAX_CONV, d_inner);
    uint64_t row_bytes = (uint64_t)d_inner * 4, K = d_conv;
    if (!op_tensor_holds(x, row_bytes * n_tokens) || !op_tensor_holds(out, row_bytes * n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "ssm_conv: x or out smaller than %u rows of %u floats",
                       n_tokens, d_inner);
    if (!op_tensor_holds(w, row_bytes * K) || !op_tensor_holds(state, row_bytes * (K - 1)) ||
        (bias.size && !op_tensor_holds(bias, row_bytes)))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "ssm_conv: weight, state or bias smaller than %u channels x %u / %u / 1 floats",
                       d_inner, d_conv, d_conv - 1);
    uint32_t channels = min_u32(d_inner, op_rows_per_binding(dev, K * 4));
    uint32_t tokens = tokens_per_dispatch(2 * d_conv + 1, 3 * d_conv, op_rows_per_binding(dev, row_bytes));
    if (channels == 0 || tokens == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "ssm_conv: a row of %u floats exceeds the device's binding "
                       "range (%llu bytes)", d_inner, (unsigned long long)dev->caps.max_storage_buffer_range);
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "ssm_conv", spec, 1, &pipe);
    /* Token runs in order (each continues the state the previous one left); channel runs
     * are independent. */
    for (uint32_t t0 = 0; t0 < n_tokens && !s; t0 += tokens) {
        uint32_t nt = min_u32(tokens, n_tokens - t0);
        for (uint32_t c0 = 0; c0 < d_inner && !s; c0 += channels) {
            uint32_t nc = min_u32(channels, d_inner - c0);
            ssm_conv_push push = {nt, d_inner, nc, c0, d_conv, bias.size != 0, silu, 0, 0, 0, 0, 0};
            vkr_binding bindings[] = {
                op_bind_span(dev, x, t0 * row_bytes, nt * row_bytes, 4, false, &push.x_shift),
                op_bind_span(dev, w, c0 * K * 4, nc * K * 4, 4, false, &push.w_shift),
                bias.size ? op_bind_span(dev, bias, c0 * 4ull, nc * 4ull, 4, false, &push.bias_shift)
                          : op_bind_span(dev, w, c0 * K * 4, nc * K * 4, 4, false, &push.bias_shift),
                op_bind_span(dev, state, c0 * (K - 1) * 4, nc * (K - 1) * 4, 4, true, &push.state_shift),
                op_bind_span(dev, out, t0 * row_bytes, nt * row_bytes, 4, true, &push.out_shift),
            };
            uint32_t gx, gy;
            vkr_grid(dev, (nc + OP_WORKGROUP - 1) / OP_WORKGROUP, &gx, &gy);
            s = vkr_cmd_dispatch(cmd, pipe, bindings, 5, &push, sizeof push, gx, gy, 1, "ssm_conv");
        }
    }
    return s;
}

vkllm_status op_ssm_scan(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor dtbc, op_tensor a,
                         op_tensor d, op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t d_inner,
                         uint32_t d_state)
{
    if (n_tokens == 0)
        return VKLLM_OK;
    if (d_state == 0 || d_state > SSM_MAX_STATE || d_inner == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "ssm_scan: state size %u (1..%u) over %u channels", d_state,
                       SSM_MAX_STATE, d_inner);
    uint64_t row_bytes = (uint64_t)d_inner * 4, dtbc_row_bytes = ((uint64_t)d_inner + 2 * d_state) * 4;
    uint64_t S = d_state;
    if (!op_tensor_holds(x, row_bytes * n_tokens) || !op_tensor_holds(out, row_bytes * n_tokens) ||
        !op_tensor_holds(dtbc, dtbc_row_bytes * n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "ssm_scan: x, out or dtbc smaller than %u rows of %u (dtbc %u) floats", n_tokens,
                       d_inner, d_inner + 2 * d_state);
    if (!op_tensor_holds(a, row_bytes * S) || !op_tensor_holds(state, row_bytes * S) ||
        !op_tensor_holds(d, row_bytes))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "ssm_scan: a, state or d smaller than %u channels x %u / %u / 1 floats", d_inner,
                       d_state, d_state);
    uint32_t channels = min_u32(d_inner, op_rows_per_binding(dev, S * 4));
    uint32_t tokens = tokens_per_dispatch(d_state + 1, 3 * d_state,
                                          min_u32(op_rows_per_binding(dev, row_bytes),
                                                  op_rows_per_binding(dev, dtbc_row_bytes)));
    if (channels == 0 || tokens == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "ssm_scan: a row of %u floats exceeds the device's binding "
                       "range (%llu bytes)", d_inner + 2 * d_state,
                       (unsigned long long)dev->caps.max_storage_buffer_range);
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "ssm_scan", spec, 1, &pipe);
    for (uint32_t t0 = 0; t0 < n_tokens && !s; t0 += tokens) {
        uint32_t nt = min_u32(tokens, n_tokens - t0);
        for (uint32_t c0 = 0; c0 < d_inner && !s; c0 += channels) {
            uint32_t nc = min_u32(channels, d_inner - c0);
            ssm_scan_push push = {nt, d_inner, d_state, nc, c0, 0, 0, 0, 0, 0, 0};
            vkr_binding bindings[] = {
                op_bind_span(dev, x, t0 * row_bytes, nt * row_bytes, 4, false, &push.x_shift),
                op_bind_span(dev, dtbc, t0 * dtbc_row_bytes, nt * dtbc_row_bytes, 4, false, &push.dtbc_shift),
                op_bind_span(dev, a, c0 * S * 4, nc * S * 4, 4, false, &push.a_shift),
                op_bind_span(dev, d, c0 * 4ull, nc * 4ull, 4, false, &push.d_shift),
                op_bind_span(dev, state, c0 * S * 4, nc * S * 4, 4, true, &push.state_shift),
                op_bind_span(dev, out, t0 * row_bytes, nt * row_bytes, 4, true, &push.out_shift),
            };
            uint32_t gx, gy;
            vkr_grid(dev, (nc + OP_WORKGROUP - 1) / OP_WORKGROUP, &gx, &gy);
            s = vkr_cmd_dispatch(cmd, pipe, bindings, 6, &push, sizeof push, gx, gy, 1, "ssm_scan");
        }
    }
    return s;
}

vkllm_status op_concat_rows(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                            uint32_t n_rows, uint32_t wa, uint32_t wb)
{
    if (n_rows == 0)
        return VKLLM_OK;
    uint64_t w = (uint64_t)wa + wb;
    if (wa == 0 || wb == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "concat_rows: rows of %u and %u floats", wa, wb);
    if (!op_tensor_holds(a, (uint64_t)wa * 4 * n_rows) || !op_tensor_holds(b, (uint64_t)wb * 4 * n_rows) ||
        !op_tensor_holds(out, w * 4 * n_rows))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "concat_rows: an operand is smaller than %u rows", n_rows);
    /* Rows per dispatch: out's rows fit one binding (a's and b's are shorter), and the
     * element count stays well inside 32 bits. */
    uint32_t rows = min_u32(op_rows_per_binding(dev, w * 4), (uint32_t)(0x40000000u / w));
    if (rows == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "concat_rows: a row of %llu floats exceeds a binding",
                       (unsigned long long)w);
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "concat_rows", spec, 1, &pipe);
    for (uint32_t r0 = 0; r0 < n_rows && !s; r0 += rows) {
        uint32_t nr = min_u32(rows, n_rows - r0);
        concat_push push = {nr, wa, wb, 0, 0, 0};
        vkr_binding bindings[] = {
            op_bind_span(dev, a, (uint64_t)r0 * wa * 4, (uint64_t)nr * wa * 4, 4, false, &push.a_shift),
            op_bind_span(dev, b, (uint64_t)r0 * wb * 4, (uint64_t)nr * wb * 4, 4, false, &push.b_shift),
            op_bind_span(dev, out, (uint64_t)r0 * w * 4, (uint64_t)nr * w * 4, 4, true, &push.out_shift),
        };
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)(((uint64_t)nr * w + OP_WORKGROUP - 1) / OP_WORKGROUP), &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, bindings, 3, &push, sizeof push, gx, gy, 1, "concat_rows");
    }
    return s;
}
