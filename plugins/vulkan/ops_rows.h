/* Row-wise chunking for ops whose tensors may exceed one binding (maxStorageBufferRange):
 * a dispatch covers a run of whole rows, bound from the aligned offset at or below the run's
 * first byte; the shader adds the leftover distance ("shift", in elements) to its indices. */
#ifndef VKLLM_OPS_ROWS_H
#define VKLLM_OPS_ROWS_H

#include "ops_util.h"

/* Rows of `row_bytes` per dispatch such that any run of that many rows, bound from the
 * aligned-down start of its first row, fits one binding. 0 when not even one row fits. */
static inline uint32_t op_rows_per_binding(const vkr_device *dev, uint64_t row_bytes)
{
    uint64_t align = dev->caps.storage_offset_alignment ? dev->caps.storage_offset_alignment : 1;
    uint64_t range = dev->caps.max_storage_buffer_range;
    uint64_t slack = align - 1; /* the most an aligned-down start can sit before a row */
    if (row_bytes == 0 || row_bytes + slack > range)
        return 0;
    uint64_t n = (range - slack) / row_bytes;
    return n > 0x7fffffffu ? 0x7fffffffu : (uint32_t)n;
}

/* The binding for bytes [begin, begin + size) of t, starting at the aligned offset at or
 * below t.offset + begin. *shift receives the distance to `begin` in units of elem_bytes. */
static inline vkr_binding op_bind_span(const vkr_device *dev, op_tensor t, uint64_t begin,
                                       uint64_t size, uint32_t elem_bytes, bool write,
                                       uint32_t *shift)
{
    uint64_t align = dev->caps.storage_offset_alignment ? dev->caps.storage_offset_alignment : 1;
    uint64_t first = t.offset + begin;
    uint64_t start = first / align * align;
    *shift = (uint32_t)((first - start) / elem_bytes);
    return (vkr_binding){t.buffer, start, first + size - start, write};
}

/* Workgroup size for a reduction over rows of n_cols: a power of two (the shared-memory
 * reduction in reduce.glsl needs one), about four elements per invocation, at most 256. On
 * CPU devices one subgroup (lavapipe: 8 lanes): there each barrier is a context switch
 * between the workgroup's subgroups, which cost more than the loop (an RMSNorm of 768 took
 * 111 us with 256 invocations). */
static inline uint32_t op_reduce_workgroup(const vkr_device *dev, uint32_t n_cols)
{
    if (dev->caps.device_type == VKLLM_DEVICE_CPU && dev->caps.subgroup_size >= 4 &&
        (dev->caps.subgroup_size & (dev->caps.subgroup_size - 1)) == 0)
        return dev->caps.subgroup_size;
    uint32_t wg = 32;
    while (wg < 256 && (uint64_t)wg * 4 < n_cols && wg * 2 <= dev->caps.max_workgroup_size)
        wg *= 2;
    return wg;
}

/* Whether a tensor holds at least `bytes` inside its buffer. */
static inline bool op_tensor_holds(op_tensor t, uint64_t bytes)
{
    return t.buffer && t.size >= bytes && t.offset + t.size <= t.buffer->size;
}

#endif
