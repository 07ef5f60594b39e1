/* The OP_TOP_K best-ranked logits of a row (shaders/top_k.comp), for sampling without reading
 * the whole row back: rounds of chunk sorts until one chunk's best are left. */
#include "error.h"
#include "ops.h"
#include "ops_rows.h"

/* Must match shaders/top_k.comp. */
typedef struct top_k_push {
    uint32_t n, in_skip, out_skip;
} top_k_push;

#define TOP_K_ITEMS 4u      /* entries per invocation (ITEMS) */
#define TOP_K_MAX_CHUNK 1024u

/* Workgroup size: a power of two, at most 256 (the shader's chunk of 1024) and the device's
 * limit, and large enough that a chunk holds OP_TOP_K. */
static uint32_t top_k_workgroup(const vkr_device *dev)
{
    uint32_t wg = TOP_K_MAX_CHUNK / TOP_K_ITEMS;
    while (wg > dev->caps.max_workgroup_size)
        wg /= 2;
    return wg;
}

static uint64_t groups_for(uint64_t n, uint32_t chunk) { return (n + chunk - 1) / chunk; }

/* Bytes of one of the two halves of the scratch: the first round's output. */
static uint64_t scratch_half(const vkr_device *dev, uint32_t n)
{
    uint64_t align = dev->caps.storage_offset_alignment > 8 ? dev->caps.storage_offset_alignment : 8;
    uint64_t groups = groups_for(n, top_k_workgroup(dev) * TOP_K_ITEMS);
    uint64_t bytes = groups > 1 ? groups * OP_TOP_K * 8 : 0;
    return (bytes + align - 1) / align * align;
}

uint64_t op_top_k_scratch_bytes(const vkr_device *dev, uint32_t n)
{
    return 2 * scratch_half(dev, n);
}

vkllm_status op_top_k(vkr_cmd *cmd, vkr_device *dev, op_tensor logits, uint32_t n, op_tensor scratch, op_tensor out)
{
    uint32_t wg = top_k_workgroup(dev), chunk = wg * TOP_K_ITEMS;
    if (n == 0 || n > 0x7fffffffu || chunk < OP_TOP_K)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "top_k: a row of %u logits (chunks of %u)", n, chunk);
    uint64_t half = scratch_half(dev, n);
    if (!op_tensor_holds(logits, (uint64_t)n * 4) || !op_tensor_holds(out, OP_TOP_K * 8) ||
        !op_tensor_holds(scratch, 2 * half))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "top_k: logits (%u floats), out (%u pairs) or scratch (%llu bytes) too small", n,
                       OP_TOP_K, (unsigned long long)(2 * half));
    if ((uint64_t)n * 4 > dev->caps.max_storage_buffer_range)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "top_k: a row of %u logits exceeds a binding", n);
    vkr_pipeline *first, *later = NULL;
    uint32_t spec[] = {wg, OP_TOP_K, 0};
    vkllm_status s = vkr_pipeline_get(dev, "top_k", spec, 3, &first);
    spec[2] = 1;
    if (!s && groups_for(n, chunk) > 1)
        s = vkr_pipeline_get(dev, "top_k", spec, 3, &later);
    op_tensor in = logits;
    uint32_t count = n, elem = 4;
    for (uint32_t round = 0; !s; round++) {
        uint32_t groups = (uint32_t)groups_for(count, chunk);
        op_tensor to = groups == 1 ? out : (op_tensor){scratch.buffer, scratch.offset + (round % 2) * half, half};
        top_k_push push = {count, 0, 0};
        vkr_binding bindings[] = {
            op_bind_span(dev, in, 0, (uint64_t)count * elem, elem, false, &push.in_skip),
            op_bind_span(dev, to, 0, (uint64_t)groups * OP_TOP_K * 8, 8, true, &push.out_skip),
        };
        uint32_t gx, gy;
        vkr_grid(dev, groups, &gx, &gy);
        s = vkr_cmd_dispatch(cmd, round ? later : first, bindings, 2, &push, sizeof push, gx, gy, 1, "top_k");
        if (groups == 1)
            break;
        in = to;
        count = groups * OP_TOP_K;
        elem = 8;
    }
    return s;
}
