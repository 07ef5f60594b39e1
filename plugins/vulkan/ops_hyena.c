/* StripedHyena's own op (shaders/hyena.comp): the gated long convolution run as its modal
 * recurrence, carrying a complex state per channel from call to call. Its short FIR is
 * op_ssm_conv without SiLU; its RMSNorm, op_rmsnorm_eps_outside (ops_norm.c).
 *
 * The recurrence gives each channel one invocation that walks the tokens in order. lavapipe
 * silently leaves loops after 65,535 iterations per invocation (all loops together), so the
 * tokens are split into dispatches of at most HYENA_LOOP_BUDGET iterations; the state buffer
 * carries the recurrence from one dispatch to the next (the recorder puts a barrier between
 * them). With StripedHyena-7B's 2 modes a dispatch takes 10,920 tokens. Channels are split
 * too where the state or a row would exceed one binding. */
#include "error.h"
#include "ops.h"
#include "ops_rows.h"

#define HYENA_MAX_MODES 32 /* MAX_MODES in hyena.comp */
#define HYENA_LOOP_BUDGET 32768u

typedef struct hyena_iir_push {
    uint32_t n_tokens, width, n_modes, n_channels, c0;
    uint32_t z_shift, poles_shift, res_shift, d_shift, state_shift, out_shift;
} hyena_iir_push;

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

vkllm_status op_hyena_iir(vkr_cmd *cmd, vkr_device *dev, op_tensor z, op_tensor poles, op_tensor residues,
                          op_tensor d, op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t width,
                          uint32_t n_modes)
{
    if (n_tokens == 0)
        return VKLLM_OK;
    if (n_modes == 0 || n_modes > HYENA_MAX_MODES || width == 0 || width > 0x10000000u)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "hyena_iir: %u modes (1..%u) over %u channels", n_modes,
                       HYENA_MAX_MODES, width);
    uint64_t row_bytes = (uint64_t)width * 4, z_row_bytes = 3 * row_bytes, mode_bytes = 2ull * n_modes * 4;
    if (!op_tensor_holds(z, z_row_bytes * n_tokens) || !op_tensor_holds(out, row_bytes * n_tokens))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "hyena_iir: z or out smaller than %u rows of %u / %u floats",
                       n_tokens, 3 * width, width);
    if (!op_tensor_holds(poles, mode_bytes * width) || !op_tensor_holds(residues, mode_bytes * width) ||
        !op_tensor_holds(state, mode_bytes * width) || !op_tensor_holds(d, row_bytes))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "hyena_iir: poles, residues, state or d smaller than %u channels x %u / %u / %u / 1 floats",
                       width, 2 * n_modes, 2 * n_modes, 2 * n_modes);
    uint32_t channels = min_u32(width, op_rows_per_binding(dev, mode_bytes));
    uint32_t tokens = min_u32((HYENA_LOOP_BUDGET - 3 * n_modes) / (n_modes + 1),
                              min_u32(op_rows_per_binding(dev, z_row_bytes), op_rows_per_binding(dev, row_bytes)));
    if (channels == 0 || tokens == 0)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "hyena_iir: a row of %u floats exceeds the device's binding range "
                       "(%llu bytes)", 3 * width, (unsigned long long)dev->caps.max_storage_buffer_range);
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "hyena_iir", spec, 1, &pipe);
    /* Token runs in order (each continues the state the previous one left); channel runs are
     * independent. */
    for (uint32_t t0 = 0; t0 < n_tokens && !s; t0 += tokens) {
        uint32_t nt = min_u32(tokens, n_tokens - t0);
        for (uint32_t c0 = 0; c0 < width && !s; c0 += channels) {
            uint32_t nc = min_u32(channels, width - c0);
            hyena_iir_push push = {nt, width, n_modes, nc, c0, 0, 0, 0, 0, 0, 0};
            vkr_binding bindings[] = {
                op_bind_span(dev, z, t0 * z_row_bytes, nt * z_row_bytes, 4, false, &push.z_shift),
                op_bind_span(dev, poles, c0 * mode_bytes, nc * mode_bytes, 4, false, &push.poles_shift),
                op_bind_span(dev, residues, c0 * mode_bytes, nc * mode_bytes, 4, false, &push.res_shift),
                op_bind_span(dev, d, c0 * 4ull, nc * 4ull, 4, false, &push.d_shift),
                op_bind_span(dev, state, c0 * mode_bytes, nc * mode_bytes, 4, true, &push.state_shift),
                op_bind_span(dev, out, t0 * row_bytes, nt * row_bytes, 4, true, &push.out_shift),
            };
            uint32_t gx, gy;
            vkr_grid(dev, (nc + OP_WORKGROUP - 1) / OP_WORKGROUP, &gx, &gy);
            s = vkr_cmd_dispatch(cmd, pipe, bindings, 6, &push, sizeof push, gx, gy, 1, "hyena_iir");
        }
    }
    return s;
}
