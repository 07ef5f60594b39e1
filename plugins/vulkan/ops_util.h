/* Small helpers shared by the ops_*.c files. */
#ifndef VKLLM_OPS_UTIL_H
#define VKLLM_OPS_UTIL_H

#include <math.h>

#include "ops.h"
#include "quant.h"

/* The shader-name suffix of a weight type ("q4_0" in "matvec_q4_0"), or NULL for types
 * the weight-reading shaders (blocks.glsl) cannot decode. */
static inline const char *op_weight_type_name(uint32_t type)
{
    switch (type) {
    case GGML_F32: return "f32";
    case GGML_F16: return "f16";
    case GGML_BF16: return "bf16";
    case GGML_Q8_0: return "q8_0";
    case GGML_Q4_0: return "q4_0";
    case GGML_Q4_1: return "q4_1";
    case GGML_Q5_0: return "q5_0";
    case GGML_Q5_1: return "q5_1";
    default: return NULL;
    }
}

/* The texel view of buffer b (see vkr_buffer) that starts at or below byte `first` and holds
 * the most after it: bytes [*start, *end) of b. */
static inline uint32_t op_texel_view_at(const vkr_buffer *b, uint64_t first, uint64_t *start, uint64_t *end)
{
    uint64_t v = first / b->texel_stride;
    if (v >= b->n_texel_views)
        v = b->n_texel_views - 1;
    *start = v * b->texel_stride;
    *end = (*start + b->texel_range < b->size ? *start + b->texel_range : b->size) / 4 * 4;
    return (uint32_t)v;
}

/* View v of buffer b in `format` (VKR_TEXEL_R32 or VKR_TEXEL_RGBA32), as a texel binding. */
static inline vkr_texel_binding op_texel_binding(const vkr_buffer *b, uint32_t v, uint32_t format)
{
    uint64_t start, end;
    op_texel_view_at(b, (uint64_t)v * b->texel_stride, &start, &end);
    return (vkr_texel_binding){b, b->texel_views[v * VKR_TEXEL_FORMATS + format], start, end - start};
}

/* The view of buffer b in `format` that holds bytes [offset, offset + bytes), as a texel
 * binding, and *skip: offset's distance from the view's start in bytes. False when the view at
 * offset ends sooner. */
static inline bool op_texel_view_holding(const vkr_buffer *b, uint64_t offset, uint64_t bytes, uint32_t format,
                                         vkr_texel_binding *out, uint64_t *skip)
{
    uint64_t start, end;
    uint32_t v = op_texel_view_at(b, offset, &start, &end);
    if (offset + bytes > end)
        return false;
    *out = op_texel_binding(b, v, format);
    *skip = offset - start;
    return true;
}

/* RoPE's angle step theta_scale = freq_base^(-2 / n_rot), as ggml computes it: powf, in float on
 * the host (1 without rotation). Every rope shader (rope.glsl) takes it from here, so that the
 * fused ops rotate by the same angles as op_rope. */
static inline float op_rope_theta_scale(float freq_base, uint32_t n_rot)
{
    return n_rot ? powf(freq_base, -2.0f / (float)n_rot) : 1.0f;
}

/* Default workgroup size for simple one-thread-per-element shaders. */
#define OP_WORKGROUP 64u

static inline vkr_binding op_bind(op_tensor t, bool write)
{
    return (vkr_binding){t.buffer, t.offset, t.size, write};
}

/* A sub-range [offset, offset + size) of a tensor as a binding. Callers keep `offset` a
 * multiple of the storage offset alignment (see op_chunk_elements). */
static inline vkr_binding op_bind_range(op_tensor t, VkDeviceSize offset, VkDeviceSize size,
                                        bool write)
{
    return (vkr_binding){t.buffer, t.offset + offset, size, write};
}

/* Elements of `elem_bytes` per chunk when a tensor exceeds one binding: as many as fit in
 * maxStorageBufferRange, keeping each chunk's start aligned. */
static inline uint32_t op_chunk_elements(const vkr_device *dev, uint32_t elem_bytes)
{
    uint64_t align = dev->caps.storage_offset_alignment > elem_bytes
                         ? dev->caps.storage_offset_alignment
                         : elem_bytes;
    uint64_t bytes = dev->caps.max_storage_buffer_range / align * align;
    uint64_t n = bytes / elem_bytes;
    return n > 0x7fffffffu ? 0x7fffffffu : (uint32_t)n;
}

#endif
