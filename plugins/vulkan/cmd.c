/* Command recording: dispatches with one descriptor set each, barriers only where a hazard
 * exists, optional timestamps per dispatch. A recording can be submitted many times. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "vkr.h"

typedef struct access_range {
    VkBuffer buffer;
    VkDeviceSize begin, end;
    bool write;
} access_range;

struct vkr_cmd {
    vkr_device *dev;
    VkCommandPool pool;
    VkCommandBuffer cb;
    VkFence fence;
    VkDescriptorPool descriptor_pool;
    VkQueryPool query_pool;
    vkr_buffer dummy; /* bound to unused slots so every binding of the layout is valid */
    uint32_t max_dispatches;
    uint32_t n_dispatches;
    uint32_t n_barriers;
    bool recording, recorded;
    const char **labels;
    uint64_t *timestamps;
    bool timestamps_valid;
    access_range *pending; /* accesses since the last barrier */
    uint32_t n_pending, cap_pending;
};

static void count(vkr_device *dev, int delta) { atomic_fetch_add(&dev->live_objects, delta); }

vkllm_status vkr_cmd_create(vkr_device *dev, uint32_t max_dispatches, bool timestamps,
                            vkr_cmd **out)
{
    *out = NULL;
    vkr_cmd *c = calloc(1, sizeof *c);
    if (!c)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    c->dev = dev;
    c->max_dispatches = max_dispatches ? max_dispatches : 1;
    c->labels = calloc(c->max_dispatches, sizeof *c->labels);
    c->timestamps = calloc(c->max_dispatches + 1, sizeof *c->timestamps);
    vkllm_status s = VKLLM_OK;
    if (!c->labels || !c->timestamps) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto fail;
    }
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = dev->queue_family,
    };
    if ((s = vkr_check(vkCreateCommandPool(dev->device, &pool, NULL, &c->pool), "vkCreateCommandPool")))
        goto fail;
    count(dev, 1);
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = c->pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    if ((s = vkr_check(vkAllocateCommandBuffers(dev->device, &alloc, &c->cb), "vkAllocateCommandBuffers")))
        goto fail;
    VkFenceCreateInfo fence = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((s = vkr_check(vkCreateFence(dev->device, &fence, NULL, &c->fence), "vkCreateFence")))
        goto fail;
    count(dev, 1);
    VkDescriptorPoolSize sizes[2] = {
        {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, c->max_dispatches * VKR_MAX_BINDINGS},
        {VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER, c->max_dispatches * VKR_MAX_TEXEL_BINDINGS},
    };
    VkDescriptorPoolCreateInfo dp = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = c->max_dispatches,
        .poolSizeCount = dev->caps.texel_buffers ? 2 : 1,
        .pPoolSizes = sizes,
    };
    if ((s = vkr_check(vkCreateDescriptorPool(dev->device, &dp, NULL, &c->descriptor_pool),
                       "vkCreateDescriptorPool")))
        goto fail;
    count(dev, 1);
    if (timestamps && dev->caps.timestamps) {
        VkQueryPoolCreateInfo q = {
            .sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
            .queryType = VK_QUERY_TYPE_TIMESTAMP,
            .queryCount = c->max_dispatches + 1,
        };
        if ((s = vkr_check(vkCreateQueryPool(dev->device, &q, NULL, &c->query_pool), "vkCreateQueryPool")))
            goto fail;
        count(dev, 1);
    }
    if ((s = vkr_buffer_create(dev, 256, VKR_MEMORY_DEVICE, &c->dummy)))
        goto fail;
    *out = c;
    return VKLLM_OK;
fail:
    vkr_cmd_destroy(c);
    return s;
}

void vkr_cmd_destroy(vkr_cmd *c)
{
    if (!c)
        return;
    vkr_device *dev = c->dev;
    vkr_buffer_destroy(dev, &c->dummy);
    if (c->query_pool) {
        vkDestroyQueryPool(dev->device, c->query_pool, NULL);
        count(dev, -1);
    }
    if (c->descriptor_pool) {
        vkDestroyDescriptorPool(dev->device, c->descriptor_pool, NULL);
        count(dev, -1);
    }
    if (c->fence) {
        vkDestroyFence(dev->device, c->fence, NULL);
        count(dev, -1);
    }
    if (c->pool) {
        vkDestroyCommandPool(dev->device, c->pool, NULL);
        count(dev, -1);
    }
    free(c->pending);
    free(c->labels);
    free(c->timestamps);
    free(c);
}

vkllm_status vkr_cmd_begin(vkr_cmd *c)
{
    vkr_device *dev = c->dev;
    vkllm_status s = vkr_check(vkResetDescriptorPool(dev->device, c->descriptor_pool, 0),
                               "vkResetDescriptorPool");
    if (s)
        return s;
    if ((s = vkr_check(vkResetCommandBuffer(c->cb, 0), "vkResetCommandBuffer")))
        return s;
    VkCommandBufferBeginInfo begin = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    if ((s = vkr_check(vkBeginCommandBuffer(c->cb, &begin), "vkBeginCommandBuffer")))
        return s;
    c->n_dispatches = 0;
    c->n_barriers = 0;
    c->n_pending = 0;
    c->recording = true;
    c->recorded = false;
    c->timestamps_valid = false;
    /* Host writes to inputs and parameters before the submit must be visible. */
    VkMemoryBarrier host = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_HOST_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT,
    };
    vkCmdPipelineBarrier(c->cb, VK_PIPELINE_STAGE_HOST_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1,
                         &host, 0, NULL, 0, NULL);
    if (c->query_pool) {
        vkCmdResetQueryPool(c->cb, c->query_pool, 0, c->max_dispatches + 1);
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, c->query_pool, 0);
    }
    return VKLLM_OK;
}

static bool overlaps(const access_range *a, VkBuffer buffer, VkDeviceSize begin, VkDeviceSize end)
{
    return a->buffer == buffer && a->begin < end && begin < a->end;
}

/* Inserts a barrier when any new access conflicts with a pending one (RAW, WAR, WAW). */
static vkllm_status track_accesses(vkr_cmd *c, const access_range *acc, uint32_t n)
{
    bool hazard = false;
    for (uint32_t i = 0; i < n && !hazard; i++)
        for (uint32_t j = 0; j < c->n_pending && !hazard; j++)
            if ((acc[i].write || c->pending[j].write) &&
                overlaps(&c->pending[j], acc[i].buffer, acc[i].begin, acc[i].end))
                hazard = true;
    if (hazard) {
        VkMemoryBarrier b = {
            .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
            .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
            .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                             VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        };
        VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
        vkCmdPipelineBarrier(c->cb, stages, stages, 0, 1, &b, 0, NULL, 0, NULL);
        c->n_barriers++;
        c->n_pending = 0;
    }
    if (c->n_pending + n > c->cap_pending) {
        uint32_t cap = (c->n_pending + n) * 2;
        access_range *grown = realloc(c->pending, cap * sizeof *grown);
        if (!grown)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        c->pending = grown;
        c->cap_pending = cap;
    }
    memcpy(c->pending + c->n_pending, acc, n * sizeof *acc);
    c->n_pending += n;
    return VKLLM_OK;
}

static vkllm_status record_dispatch(vkr_cmd *c, vkr_pipeline *pipeline, const vkr_binding *bindings,
                                    uint32_t n_bindings, const vkr_texel_binding *texel,
                                    uint32_t n_texel, const void *push, uint32_t push_size, uint32_t groups_x,
                                    uint32_t groups_y, uint32_t groups_z, const char *label)
{
    vkr_device *dev = c->dev;
    if (!c->recording)
        return vk_fail(VKLLM_ERR_INTERNAL, "dispatch outside a recording");
    if (c->n_dispatches == c->max_dispatches)
        return vk_fail(VKLLM_ERR_INTERNAL, "recording holds more than %u dispatches", c->max_dispatches);
    if (n_bindings > VKR_MAX_BINDINGS || push_size > VKR_PUSH_BYTES)
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: %u bindings / %u push bytes exceed the layout", label,
                       n_bindings, push_size);
    const uint32_t *limit = dev->caps.max_workgroup_count;
    if (!groups_x || !groups_y || !groups_z || groups_x > limit[0] || groups_y > limit[1] ||
        groups_z > limit[2])
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: grid %ux%ux%u outside the device's limits", label,
                       groups_x, groups_y, groups_z);

    access_range acc[VKR_MAX_BINDINGS + VKR_MAX_TEXEL_BINDINGS];
    VkDescriptorBufferInfo infos[VKR_MAX_BINDINGS];
    VkWriteDescriptorSet writes[VKR_MAX_BINDINGS + VKR_MAX_TEXEL_BINDINGS];
    uint32_t n_acc = 0, n_writes = VKR_MAX_BINDINGS;
    if (n_texel > VKR_MAX_TEXEL_BINDINGS || (n_texel && !dev->caps.texel_buffers))
        return vk_fail(VKLLM_ERR_INTERNAL, "%s: %u texel bindings exceed the layout", label, n_texel);
    for (uint32_t i = 0; i < n_texel; i++) {
        const vkr_texel_binding *t = &texel[i];
        if (!t->view || t->range == 0 || t->offset + t->range > t->buffer->size)
            return vk_fail(VKLLM_ERR_INTERNAL, "%s: texel binding %u invalid", label, i);
        writes[n_writes++] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstBinding = VKR_TEXEL_BINDING + i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER,
            .pTexelBufferView = &t->view,
        };
        acc[n_acc++] = (access_range){t->buffer->buffer, t->offset, t->offset + t->range, false};
    }
    for (uint32_t i = 0; i < VKR_MAX_BINDINGS; i++) {
        if (i < n_bindings && bindings[i].buffer) {
            const vkr_binding *b = &bindings[i];
            if (b->range == 0 || b->offset + b->range > b->buffer->size ||
                b->range > dev->caps.max_storage_buffer_range ||
                b->offset % dev->caps.storage_offset_alignment)
                return vk_fail(VKLLM_ERR_INTERNAL,
                               "%s: binding %u [%llu, +%llu) invalid for a buffer of %llu bytes", label,
                               i, (unsigned long long)b->offset, (unsigned long long)b->range,
                               (unsigned long long)b->buffer->size);
            infos[i] = (VkDescriptorBufferInfo){b->buffer->buffer, b->offset, b->range};
            acc[n_acc++] = (access_range){b->buffer->buffer, b->offset, b->offset + b->range, b->write};
        } else {
            infos[i] = (VkDescriptorBufferInfo){c->dummy.buffer, 0, c->dummy.size};
        }
        writes[i] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &infos[i],
        };
    }
    VkDescriptorSet set;
    VkDescriptorSetAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = c->descriptor_pool,
        .descriptorSetCount = 1,
        .pSetLayouts = &dev->set_layout,
    };
    vkllm_status s = vkr_check(vkAllocateDescriptorSets(dev->device, &alloc, &set), "vkAllocateDescriptorSets");
    if (s)
        return s;
    for (uint32_t i = 0; i < n_writes; i++)
        writes[i].dstSet = set;
    vkUpdateDescriptorSets(dev->device, n_writes, writes, 0, NULL);

    if ((s = track_accesses(c, acc, n_acc)))
        return s;
    vkCmdBindPipeline(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline->pipeline);
    vkCmdBindDescriptorSets(c->cb, VK_PIPELINE_BIND_POINT_COMPUTE, dev->pipeline_layout, 0, 1, &set,
                            0, NULL);
    uint8_t pushed[VKR_PUSH_BYTES] = {0};
    if (push_size)
        memcpy(pushed, push, push_size);
    vkCmdPushConstants(c->cb, dev->pipeline_layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, VKR_PUSH_BYTES,
                       pushed);
    vkCmdDispatch(c->cb, groups_x, groups_y, groups_z);
    c->labels[c->n_dispatches] = label;
    c->n_dispatches++;
    if (c->query_pool)
        vkCmdWriteTimestamp(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, c->query_pool, c->n_dispatches);
    return VKLLM_OK;
}

vkllm_status vkr_cmd_dispatch(vkr_cmd *c, vkr_pipeline *pipeline, const vkr_binding *bindings,
                              uint32_t n_bindings, const void *push, uint32_t push_size,
                              uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                              const char *label)
{
    return record_dispatch(c, pipeline, bindings, n_bindings, NULL, 0, push, push_size, groups_x,
                           groups_y, groups_z, label);
}

vkllm_status vkr_cmd_dispatch_texel(vkr_cmd *c, vkr_pipeline *pipeline, const vkr_binding *bindings,
                                    uint32_t n_bindings, const vkr_texel_binding *texel,
                                    uint32_t n_texel, const void *push, uint32_t push_size,
                                    uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                                    const char *label)
{
    return record_dispatch(c, pipeline, bindings, n_bindings, texel, n_texel, push, push_size,
                           groups_x, groups_y, groups_z, label);
}

vkllm_status vkr_cmd_copy(vkr_cmd *c, const vkr_buffer *src, VkDeviceSize src_offset,
                          const vkr_buffer *dst, VkDeviceSize dst_offset, VkDeviceSize size)
{
    if (!c->recording)
        return vk_fail(VKLLM_ERR_INTERNAL, "copy outside a recording");
    if (src_offset + size > src->size || dst_offset + size > dst->size)
        return vk_fail(VKLLM_ERR_INTERNAL, "copy of %llu bytes outside its buffers",
                       (unsigned long long)size);
    access_range acc[2] = {
        {src->buffer, src_offset, src_offset + size, false},
        {dst->buffer, dst_offset, dst_offset + size, true},
    };
    vkllm_status s = track_accesses(c, acc, 2);
    if (s)
        return s;
    VkBufferCopy region = {src_offset, dst_offset, size};
    vkCmdCopyBuffer(c->cb, src->buffer, dst->buffer, 1, &region);
    return VKLLM_OK;
}

vkllm_status vkr_cmd_end(vkr_cmd *c)
{
    if (!c->recording)
        return vk_fail(VKLLM_ERR_INTERNAL, "end outside a recording");
    VkMemoryBarrier host = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
    };
    vkCmdPipelineBarrier(c->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &host, 0, NULL, 0, NULL);
    c->recording = false;
    vkllm_status s = vkr_check(vkEndCommandBuffer(c->cb), "vkEndCommandBuffer");
    c->recorded = s == VKLLM_OK;
    return s;
}

vkllm_status vkr_cmd_submit_wait(vkr_cmd *c)
{
    vkr_device *dev = c->dev;
    if (!c->recorded)
        return vk_fail(VKLLM_ERR_INTERNAL, "submit of an unfinished recording");
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &c->cb,
    };
    mtx_lock(&dev->queue_lock);
    VkResult r = vkQueueSubmit(dev->queue, 1, &submit, c->fence);
    mtx_unlock(&dev->queue_lock);
    vkllm_status s = vkr_check(r, "vkQueueSubmit");
    if (s)
        return s;
    s = vkr_check(vkWaitForFences(dev->device, 1, &c->fence, VK_TRUE, UINT64_MAX), "vkWaitForFences");
    vkResetFences(dev->device, 1, &c->fence);
    if (s)
        return s;
    c->timestamps_valid = false;
    if (c->query_pool && c->n_dispatches) {
        r = vkGetQueryPoolResults(dev->device, c->query_pool, 0, c->n_dispatches + 1,
                                  (c->n_dispatches + 1) * sizeof(uint64_t), c->timestamps,
                                  sizeof(uint64_t), VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        c->timestamps_valid = r == VK_SUCCESS;
    }
    return VKLLM_OK;
}

uint32_t vkr_cmd_dispatch_count(const vkr_cmd *c) { return c->n_dispatches; }
uint32_t vkr_cmd_barrier_count(const vkr_cmd *c) { return c->n_barriers; }

double vkr_cmd_gpu_ms(const vkr_cmd *c)
{
    if (!c->timestamps_valid)
        return -1.0;
    return (double)(c->timestamps[c->n_dispatches] - c->timestamps[0]) *
           c->dev->caps.timestamp_period_ns * 1e-6;
}

bool vkr_cmd_dispatch_time(const vkr_cmd *c, uint32_t i, const char **label, double *ms)
{
    if (!c->timestamps_valid || i >= c->n_dispatches)
        return false;
    *label = c->labels[i];
    *ms = (double)(c->timestamps[i + 1] - c->timestamps[i]) * c->dev->caps.timestamp_period_ns * 1e-6;
    return true;
}

void vkr_grid(const vkr_device *dev, uint32_t n, uint32_t *gx, uint32_t *gy)
{
    uint32_t max_x = dev->caps.max_workgroup_count[0];
    if (n <= max_x) {
        *gx = n ? n : 1;
        *gy = 1;
    } else {
        *gy = (n + max_x - 1) / max_x;
        *gx = (n + *gy - 1) / *gy;
    }
}
