/* The Vulkan runtime's own behaviour: errors as statuses with messages (no loader, unknown
 * device, bad profile, out of device memory, unknown shader), sub-allocation, minimal
 * barriers, replaying a recording with new inputs, the pipeline cache file, the bandwidth
 * probe. Validation layer on throughout. */
#include <stdlib.h>
#include <sys/stat.h>

#include "vk_test.h"

static vkr_device_desc base_desc(void)
{
    return (vkr_device_desc){.device_index = -1, .validation = true, .log_level = VKLLM_LOG_WARN};
}

static void expect_create_failure(const char *env, const char *value, vkllm_status want, const char *needle)
{
    setenv(env, value, 1);
    vkr_device_desc d = base_desc();
    vkr_device *dev = NULL;
    vkllm_status s = vkr_device_create(&d, &dev);
    t_check(s == want && dev == NULL && strstr(vk_error_message(), needle), "%s=%s -> status %d: %s", env,
            value, s, vk_error_message());
    if (dev)
        vkr_device_destroy(dev);
    unsetenv(env);
}

static void elementwise_replay_and_barriers(vkr_device *dev)
{
    enum { N = 1000 };
    float a[N], b[N], out[N];
    t_fill_random(a, N, 1);
    t_fill_random(b, N, 2);
    op_tensor ta = t_tensor_from(dev, a, sizeof a), tb = t_tensor_from(dev, b, sizeof b);
    op_tensor t1 = t_tensor(dev, sizeof a), t2 = t_tensor(dev, sizeof a), t3 = t_tensor(dev, sizeof a);
    vkr_cmd *cmd;
    t_check(!vkr_cmd_create(dev, 16, true, &cmd) && !vkr_cmd_begin(cmd), "recording");
    /* Two independent products, then one that reads both: one barrier is enough. */
    op_mul(cmd, dev, ta, tb, t1, N, N);
    op_add(cmd, dev, ta, tb, t2, N, N);
    op_add(cmd, dev, t1, t2, t3, N, N);
    t_check(vkr_cmd_barrier_count(cmd) == 1, "barriers for 2 independent + 1 dependent dispatch: %u (want 1)",
            vkr_cmd_barrier_count(cmd));
    t_check(!vkr_cmd_end(cmd), "end");
    for (int run = 0; run < 3; run++) {
        for (int i = 0; i < N; i++)
            a[i] = (float)(run + 1) * 0.5f + (float)i * 1e-3f;
        memcpy(ta.buffer->mapped, a, sizeof a);
        t_check(!vkr_cmd_submit_wait(cmd), "replay %d", run);
        t_read(dev, t3, out, sizeof out);
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += out[i] != a[i] * b[i] + (a[i] + b[i]);
        t_check(bad == 0, "replay %d follows the new input (%d mismatches)", run, bad);
    }
    t_check(vkr_cmd_gpu_ms(cmd) > 0, "timestamps give GPU time: %.3f ms", vkr_cmd_gpu_ms(cmd));
    const char *label = NULL;
    double ms = -1;
    bool timed = vkr_cmd_dispatch_time(cmd, 2, &label, &ms);
    t_check(timed && label && !strcmp(label, "elementwise_add") && ms >= 0,
            "per-dispatch time of dispatch 2: %s %.4f ms", label ? label : "-", ms);
    vkr_cmd_destroy(cmd);
    t_tensor_free(dev, ta);
    t_tensor_free(dev, tb);
    t_tensor_free(dev, t1);
    t_tensor_free(dev, t2);
    t_tensor_free(dev, t3);
}

int main(void)
{
    expect_create_failure("VKLLM_VULKAN_LOADER", "/nonexistent/libvulkan.so.1", VKLLM_ERR_NO_VULKAN_LOADER,
                          "/nonexistent/libvulkan.so.1");
    expect_create_failure("VKLLM_DEVICE", "no-such-gpu", VKLLM_ERR_NO_DEVICE, "no-such-gpu");
    expect_create_failure("VKLLM_DEVICE", "7", VKLLM_ERR_NO_DEVICE, "index 7");
    expect_create_failure("VKLLM_PROFILE", "no-fp16,warp-drive", VKLLM_ERR_INVALID_ARGUMENT, "warp-drive");
    expect_create_failure("VKLLM_PROFILE", "max-storage-range=12", VKLLM_ERR_INVALID_ARGUMENT,
                          "max-storage-range");

    const char *cache = "/tmp/vkllm_test_pipeline_cache.bin";
    remove(cache);
    setenv("VKLLM_PIPELINE_CACHE", cache, 1);
    vkr_device *dev = t_device();

    /* Out of device memory: a buffer past maxMemoryAllocationSize is refused cleanly. */
    vkr_buffer huge;
    vkllm_status s = vkr_buffer_create(dev, dev->caps.max_allocation_size + (1ull << 20), VKR_MEMORY_DEVICE, &huge);
    t_check(s == VKLLM_ERR_OUT_OF_DEVICE_MEMORY && huge.buffer == VK_NULL_HANDLE,
            "buffer past maxMemoryAllocationSize -> out of device memory: %s", vk_error_message());

    vkr_pipeline *p;
    uint32_t spec[] = {64};
    s = vkr_pipeline_get(dev, "no_such_shader", spec, 1, &p);
    t_check(s == VKLLM_ERR_INTERNAL && strstr(vk_error_message(), "no_such_shader"), "unknown shader: %s",
            vk_error_message());

    /* Many small buffers share one block; freeing them returns it. */
    uint64_t before = dev->bytes_allocated;
    vkr_buffer small[100];
    for (int i = 0; i < 100; i++)
        vkr_buffer_create(dev, 1000 + (VkDeviceSize)i * 16, VKR_MEMORY_DEVICE, &small[i]);
    uint64_t during = dev->bytes_allocated;
    for (int i = 0; i < 100; i++)
        vkr_buffer_destroy(dev, &small[i]);
    t_check(during - before <= (256ull << 20) && dev->bytes_allocated == before,
            "100 small buffers: %llu bytes of blocks while alive, back to %llu after",
            (unsigned long long)(during - before), (unsigned long long)dev->bytes_allocated);

    elementwise_replay_and_barriers(dev);

    double gbps = 0;
    s = vkr_measure_bandwidth(dev, 32u << 20, &gbps);
    t_check(s == VKLLM_OK && gbps > 0, "bandwidth probe: %.2f GB/s", gbps);

    int rc = t_finish(dev);
    struct stat st;
    int cached = stat(cache, &st) == 0 && st.st_size > 0;
    printf("%s pipeline cache written at teardown (%lld bytes)\n", cached ? "ok  " : "FAIL",
           cached ? (long long)st.st_size : 0ll);
    remove(cache);
    return rc || !cached;
}
