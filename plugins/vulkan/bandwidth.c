/* The device's streaming read bandwidth, measured with a probe shader and timestamps: the
 * bound that decode speed is compared against in benchmarks. */
#include "error.h"
#include "ops_util.h"
#include "vkr.h"

#define PER_THREAD 16u

vkllm_status vkr_measure_bandwidth(vkr_device *dev, uint64_t bytes, double *gbytes_per_s)
{
    if (!dev->caps.timestamps)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "measure_bandwidth: the device has no timestamps");
    if (bytes == 0)
        bytes = 256ull << 20;
    bytes = bytes / 16 * 16;
    if (bytes < 4096)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "measure_bandwidth: %llu bytes is too small",
                       (unsigned long long)bytes);
    vkr_buffer src = {0}, dst = {0};
    vkr_cmd *cmd = NULL;
    vkr_pipeline *pipe;
    uint32_t spec[] = {OP_WORKGROUP};
    vkllm_status s = vkr_pipeline_get(dev, "bandwidth", spec, 1, &pipe);
    if (!s)
        s = vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &src);
    if (!s)
        s = vkr_buffer_create(dev, 64, VKR_MEMORY_DEVICE, &dst);
    /* Chunks of whole workgroups that fit one binding each. */
    uint64_t per_group = (uint64_t)OP_WORKGROUP * PER_THREAD * 16;
    uint64_t chunk = dev->caps.max_storage_buffer_range / per_group * per_group;
    uint32_t n_chunks = (uint32_t)((bytes + chunk - 1) / chunk);
    if (!s)
        s = vkr_cmd_create(dev, n_chunks, true, &cmd);
    if (!s)
        s = vkr_cmd_begin(cmd);
    for (uint64_t off = 0; !s && off < bytes; off += chunk) {
        uint64_t n = bytes - off < chunk ? bytes - off : chunk;
        vkr_binding b[] = {{&src, off, n, false}, {&dst, 0, 64, false}};
        uint32_t push[] = {(uint32_t)(n / 16), PER_THREAD};
        uint32_t gx, gy;
        vkr_grid(dev, (uint32_t)((n + per_group - 1) / per_group), &gx, &gy);
        s = vkr_cmd_dispatch(cmd, pipe, b, 2, push, sizeof push, gx, gy, 1, "bandwidth");
    }
    if (!s)
        s = vkr_cmd_end(cmd);
    double best_ms = 0;
    for (int run = 0; run < 5 && !s; run++) {
        s = vkr_cmd_submit_wait(cmd);
        double ms = s ? -1 : vkr_cmd_gpu_ms(cmd);
        if (!s && ms > 0 && (best_ms == 0 || ms < best_ms))
            best_ms = ms;
    }
    vkr_cmd_destroy(cmd);
    vkr_buffer_destroy(dev, &src);
    vkr_buffer_destroy(dev, &dst);
    if (s)
        return s;
    if (best_ms <= 0)
        return vk_fail(VKLLM_ERR_VULKAN, "measure_bandwidth: no valid timestamps");
    *gbytes_per_s = (double)bytes / (best_ms * 1e-3) / 1e9;
    return VKLLM_OK;
}
