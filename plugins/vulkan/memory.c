/* Memory: buffers sub-allocated from large VkDeviceMemory blocks (within
 * maxMemoryAllocationSize), and host<->device transfers through a staging buffer. */
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "vkr.h"

#define BLOCK_BYTES (256ull << 20)
#define STAGING_BYTES (16ull << 20)

typedef struct free_range {
    VkDeviceSize offset, size;
} free_range;

struct vkr_memory_block {
    VkDeviceMemory memory;
    VkDeviceSize size;
    uint32_t type_index;
    uint8_t *mapped;
    free_range *free; /* sorted by offset, coalesced */
    uint32_t n_free, cap_free;
    uint32_t n_live; /* buffers placed in the block */
    vkr_memory_block *next;
};

static int find_memory_type(const vkr_device *dev, uint32_t type_bits, VkMemoryPropertyFlags want,
                            VkMemoryPropertyFlags avoid)
{
    const VkPhysicalDeviceMemoryProperties *mp = &dev->memory_properties;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++)
        if ((type_bits & (1u << i)) && (mp->memoryTypes[i].propertyFlags & want) == want &&
            !(mp->memoryTypes[i].propertyFlags & avoid))
            return (int)i;
    return -1;
}

static VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }

/* First fit inside one block; returns the offset or VK_WHOLE_SIZE. */
static VkDeviceSize block_take(vkr_memory_block *b, VkDeviceSize size, VkDeviceSize alignment)
{
    for (uint32_t i = 0; i < b->n_free; i++) {
        free_range *r = &b->free[i];
        VkDeviceSize start = align_up(r->offset, alignment);
        if (start + size > r->offset + r->size)
            continue;
        VkDeviceSize end = start + size;
        VkDeviceSize tail = r->offset + r->size - end;
        VkDeviceSize head = start - r->offset;
        if (head && tail) {
            if (b->n_free == b->cap_free) {
                uint32_t cap = b->cap_free ? b->cap_free * 2 : 8;
                free_range *grown = realloc(b->free, cap * sizeof *grown);
                if (!grown)
                    return VK_WHOLE_SIZE;
                b->free = grown;
                b->cap_free = cap;
                r = &b->free[i];
            }
            memmove(&b->free[i + 2], &b->free[i + 1], (b->n_free - i - 1) * sizeof *r);
            b->free[i + 1] = (free_range){end, tail};
            r->size = head;
            b->n_free++;
        } else if (head) {
            r->size = head;
        } else if (tail) {
            r->offset = end;
            r->size = tail;
        } else {
            memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *r);
            b->n_free--;
        }
        return start;
    }
    return VK_WHOLE_SIZE;
}

static void block_give_back(vkr_memory_block *b, VkDeviceSize offset, VkDeviceSize size)
{
    uint32_t i = 0;
    while (i < b->n_free && b->free[i].offset < offset)
        i++;
    /* Merge with neighbours when they touch. */
    bool merge_prev = i > 0 && b->free[i - 1].offset + b->free[i - 1].size == offset;
    bool merge_next = i < b->n_free && offset + size == b->free[i].offset;
    if (merge_prev && merge_next) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
        b->n_free--;
    } else if (merge_prev) {
        b->free[i - 1].size += size;
    } else if (merge_next) {
        b->free[i].offset = offset;
        b->free[i].size += size;
    } else {
        if (b->n_free == b->cap_free) {
            uint32_t cap = b->cap_free ? b->cap_free * 2 : 8;
            free_range *grown = realloc(b->free, cap * sizeof *grown);
            if (!grown)
                return; /* leaks the range inside the block; the block is still freed whole */
            b->free = grown;
            b->cap_free = cap;
        }
        memmove(&b->free[i + 1], &b->free[i], (b->n_free - i) * sizeof *b->free);
        b->free[i] = (free_range){offset, size};
        b->n_free++;
    }
}

static vkllm_status block_create(vkr_device *dev, uint32_t type_index, VkDeviceSize size,
                                 vkr_memory_block **out)
{
    vkr_memory_block *b = calloc(1, sizeof *b);
    if (!b)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    VkMemoryAllocateInfo info = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = size,
        .memoryTypeIndex = type_index,
    };
    VkResult r = vkAllocateMemory(dev->device, &info, NULL, &b->memory);
    if (r != VK_SUCCESS) {
        free(b);
        vkllm_status s = vkr_check(r, "vkAllocateMemory");
        return vk_fail_prefix(s, "allocating %llu MiB of device memory",
                              (unsigned long long)(size >> 20));
    }
    atomic_fetch_add(&dev->live_objects, 1);
    b->size = size;
    b->type_index = type_index;
    if (dev->memory_properties.memoryTypes[type_index].propertyFlags &
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
        void *p;
        r = vkMapMemory(dev->device, b->memory, 0, VK_WHOLE_SIZE, 0, &p);
        if (r != VK_SUCCESS) {
            vkFreeMemory(dev->device, b->memory, NULL);
            atomic_fetch_sub(&dev->live_objects, 1);
            free(b);
            return vkr_check(r, "vkMapMemory");
        }
        b->mapped = p;
    }
    b->free = malloc(8 * sizeof *b->free);
    if (!b->free) {
        vkFreeMemory(dev->device, b->memory, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
        free(b);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    }
    b->cap_free = 8;
    b->free[0] = (free_range){0, size};
    b->n_free = 1;
    dev->bytes_allocated += size;
    *out = b;
    return VKLLM_OK;
}

static void block_destroy(vkr_device *dev, vkr_memory_block *b)
{
    vkFreeMemory(dev->device, b->memory, NULL);
    atomic_fetch_sub(&dev->live_objects, 1);
    dev->bytes_allocated -= b->size;
    free(b->free);
    free(b);
}

static void destroy_texel_views(vkr_device *dev, vkr_buffer *buf)
{
    for (uint32_t i = 0; i < buf->n_texel_views * VKR_TEXEL_FORMATS; i++) {
        if (buf->texel_views[i]) {
            vkDestroyBufferView(dev->device, buf->texel_views[i], NULL);
            atomic_fetch_sub(&dev->live_objects, 1);
        }
    }
    free(buf->texel_views);
    buf->texel_views = NULL;
    buf->n_texel_views = 0;
}

/* The buffer's texel views (see vkr_buffer), when weights and activations are read that way. */
static vkllm_status create_texel_views(vkr_device *dev, vkr_buffer *buf)
{
    static const VkFormat formats[VKR_TEXEL_FORMATS] = {VK_FORMAT_R32_UINT, VK_FORMAT_R32G32B32A32_UINT};
    if (!dev->caps.texel_weights)
        return VKLLM_OK;
    /* Views of the largest size, starting every half view (16-byte aligned at least, so that
     * 16-byte texels line up with the buffer), so that any range of up to half a view lies
     * inside one. */
    VkDeviceSize align = dev->caps.texel_offset_alignment > 16 ? dev->caps.texel_offset_alignment : 16;
    VkDeviceSize range = dev->caps.max_texel_elements * 4;
    if (range > 0xfffffff0u) /* byte offsets inside a view stay within uint32 in the shaders */
        range = 0xfffffff0u;
    VkDeviceSize stride = range / 2 / align * align;
    if (stride == 0)
        return vk_fail(VKLLM_ERR_INTERNAL, "texel views of %llu bytes cannot start %llu-byte aligned",
                       (unsigned long long)range, (unsigned long long)align);
    range = stride * 2;
    uint32_t n = 1;
    if (buf->size > range)
        n += (uint32_t)((buf->size - range + stride - 1) / stride);
    buf->texel_views = calloc((size_t)n * VKR_TEXEL_FORMATS, sizeof *buf->texel_views);
    if (!buf->texel_views)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    buf->n_texel_views = n;
    buf->texel_stride = stride;
    buf->texel_range = range;
    for (uint32_t i = 0; i < n; i++) {
        VkDeviceSize offset = (VkDeviceSize)i * stride;
        VkDeviceSize bytes = buf->size - offset < range ? buf->size - offset : range;
        for (uint32_t f = 0; f < VKR_TEXEL_FORMATS; f++) {
            VkBufferViewCreateInfo info = {
                .sType = VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO,
                .buffer = buf->buffer,
                .format = formats[f],
                .offset = offset,
                .range = bytes / 16 * 16, /* the buffer's size is a multiple of 16 (see below) */
            };
            vkllm_status s = vkr_check(vkCreateBufferView(dev->device, &info, NULL,
                                                          &buf->texel_views[i * VKR_TEXEL_FORMATS + f]),
                                       "vkCreateBufferView");
            if (s) {
                destroy_texel_views(dev, buf);
                return s;
            }
            atomic_fetch_add(&dev->live_objects, 1);
        }
    }
    return VKLLM_OK;
}

vkllm_status vkr_buffer_create(vkr_device *dev, VkDeviceSize size, vkr_memory_kind kind,
                               vkr_buffer *out)
{
    memset(out, 0, sizeof *out);
    if (size == 0)
        size = 4;
    size = align_up(size, dev->caps.texel_weights ? 16 : 4); /* whole 16-byte texels */
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    if (dev->caps.texel_buffers)
        info.usage |= VK_BUFFER_USAGE_STORAGE_TEXEL_BUFFER_BIT;
    vkllm_status s = vkr_check(vkCreateBuffer(dev->device, &info, NULL, &out->buffer), "vkCreateBuffer");
    if (s)
        return s;
    atomic_fetch_add(&dev->live_objects, 1);
    out->size = size;

    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev->device, out->buffer, &req);
    int type = -1;
    if (kind == VKR_MEMORY_HOST) {
        /* Prefer cached host memory for reads back; any coherent host-visible type works. */
        type = find_memory_type(dev, req.memoryTypeBits,
                                VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                    VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                                    VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                                0);
        if (type < 0)
            type = find_memory_type(dev, req.memoryTypeBits,
                                    VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                        VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                    0);
    } else {
        if (dev->caps.host_visible_weights)
            type = find_memory_type(dev, req.memoryTypeBits,
                                    VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT |
                                        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                        VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
                                    0);
        if (type < 0) /* device-local memory the host cannot see: written through staging */
            type = find_memory_type(dev, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
        if (type < 0)
            type = find_memory_type(dev, req.memoryTypeBits, 0, 0);
    }
    if (type < 0) {
        vkr_buffer_destroy(dev, out);
        return vk_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY, "no memory type fits a %s buffer",
                       kind == VKR_MEMORY_HOST ? "host-visible" : "device");
    }
    if (req.size > dev->caps.max_allocation_size) {
        vkr_buffer_destroy(dev, out);
        return vk_fail(VKLLM_ERR_OUT_OF_DEVICE_MEMORY,
                       "buffer of %llu bytes exceeds maxMemoryAllocationSize (%llu)",
                       (unsigned long long)req.size,
                       (unsigned long long)dev->caps.max_allocation_size);
    }

    mtx_lock(&dev->memory_lock);
    vkr_memory_block *block = NULL;
    VkDeviceSize offset = VK_WHOLE_SIZE;
    for (vkr_memory_block *b = dev->blocks; b && offset == VK_WHOLE_SIZE; b = b->next)
        if (b->type_index == (uint32_t)type) {
            offset = block_take(b, req.size, req.alignment);
            block = b;
        }
    if (offset == VK_WHOLE_SIZE) {
        VkDeviceSize block_size = BLOCK_BYTES;
        if (block_size > dev->caps.max_allocation_size)
            block_size = dev->caps.max_allocation_size;
        if (req.size > block_size / 2)
            block_size = req.size; /* big tensors get a block of their own */
        s = block_create(dev, (uint32_t)type, block_size, &block);
        if (s) {
            mtx_unlock(&dev->memory_lock);
            vkr_buffer_destroy(dev, out);
            return s;
        }
        block->next = dev->blocks;
        dev->blocks = block;
        offset = block_take(block, req.size, req.alignment);
    }
    block->n_live++;
    mtx_unlock(&dev->memory_lock);

    out->block = block;
    out->block_offset = offset;
    out->block_size = req.size;
    s = vkr_check(vkBindBufferMemory(dev->device, out->buffer, block->memory, offset),
                  "vkBindBufferMemory");
    if (s) {
        vkr_buffer_destroy(dev, out);
        return s;
    }
    if (block->mapped)
        out->mapped = block->mapped + offset;
    if ((s = create_texel_views(dev, out))) {
        vkr_buffer_destroy(dev, out);
        return s;
    }
    return VKLLM_OK;
}

void vkr_buffer_destroy(vkr_device *dev, vkr_buffer *buf)
{
    if (!buf || !buf->buffer)
        return;
    destroy_texel_views(dev, buf);
    vkDestroyBuffer(dev->device, buf->buffer, NULL);
    atomic_fetch_sub(&dev->live_objects, 1);
    if (buf->block) {
        mtx_lock(&dev->memory_lock);
        vkr_memory_block *b = buf->block;
        block_give_back(b, buf->block_offset, buf->block_size);
        if (--b->n_live == 0) { /* return empty blocks to the driver */
            vkr_memory_block **link = &dev->blocks;
            while (*link != b)
                link = &(*link)->next;
            *link = b->next;
            block_destroy(dev, b);
        }
        mtx_unlock(&dev->memory_lock);
    }
    memset(buf, 0, sizeof *buf);
}

void vkr_memory_destroy(vkr_device *dev)
{
    while (dev->blocks) {
        vkr_memory_block *b = dev->blocks;
        dev->blocks = b->next;
        vkr_log(dev, VKLLM_LOG_WARN, "memory block of %llu bytes still holds %u buffers at teardown",
                (unsigned long long)b->size, b->n_live);
        block_destroy(dev, b);
    }
}

/* ---- transfers --------------------------------------------------------------------- */

vkllm_status vkr_transfer_init(vkr_device *dev)
{
    VkCommandPoolCreateInfo pool = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = dev->queue_family,
    };
    vkllm_status s = vkr_check(vkCreateCommandPool(dev->device, &pool, NULL, &dev->transfer_pool),
                               "vkCreateCommandPool");
    if (s)
        return s;
    atomic_fetch_add(&dev->live_objects, 1);
    VkCommandBufferAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = dev->transfer_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    if ((s = vkr_check(vkAllocateCommandBuffers(dev->device, &alloc, &dev->transfer_cmd),
                       "vkAllocateCommandBuffers")))
        return s;
    VkFenceCreateInfo fence = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if ((s = vkr_check(vkCreateFence(dev->device, &fence, NULL, &dev->transfer_fence), "vkCreateFence")))
        return s;
    atomic_fetch_add(&dev->live_objects, 1);
    return VKLLM_OK;
}

void vkr_transfer_destroy(vkr_device *dev)
{
    if (dev->staging) {
        vkr_buffer_destroy(dev, dev->staging);
        free(dev->staging);
        dev->staging = NULL;
    }
    if (dev->transfer_fence) {
        vkDestroyFence(dev->device, dev->transfer_fence, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
    }
    if (dev->transfer_pool) {
        vkDestroyCommandPool(dev->device, dev->transfer_pool, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
    }
}

/* One staged copy of at most STAGING_BYTES; the caller holds transfer_lock. */
static vkllm_status staged_copy(vkr_device *dev, VkBuffer src, VkDeviceSize src_off, VkBuffer dst,
                                VkDeviceSize dst_off, VkDeviceSize size)
{
    VkCommandBufferBeginInfo begin = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
        .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
    };
    vkllm_status s = vkr_check(vkBeginCommandBuffer(dev->transfer_cmd, &begin), "vkBeginCommandBuffer");
    if (s)
        return s;
    /* Order against earlier compute work on the same queue, and publish to later work. */
    VkMemoryBarrier before = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_HOST_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
    };
    vkCmdPipelineBarrier(dev->transfer_cmd,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_HOST_BIT,
                         VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &before, 0, NULL, 0, NULL);
    VkBufferCopy region = {.srcOffset = src_off, .dstOffset = dst_off, .size = size};
    vkCmdCopyBuffer(dev->transfer_cmd, src, dst, 1, &region);
    VkMemoryBarrier after = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
        .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
        .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_HOST_READ_BIT,
    };
    vkCmdPipelineBarrier(dev->transfer_cmd, VK_PIPELINE_STAGE_TRANSFER_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                         &after, 0, NULL, 0, NULL);
    if ((s = vkr_check(vkEndCommandBuffer(dev->transfer_cmd), "vkEndCommandBuffer")))
        return s;
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &dev->transfer_cmd,
    };
    mtx_lock(&dev->queue_lock);
    VkResult r = vkQueueSubmit(dev->queue, 1, &submit, dev->transfer_fence);
    mtx_unlock(&dev->queue_lock);
    if ((s = vkr_check(r, "vkQueueSubmit")))
        return s;
    s = vkr_check(vkWaitForFences(dev->device, 1, &dev->transfer_fence, VK_TRUE, UINT64_MAX),
                  "vkWaitForFences");
    vkResetFences(dev->device, 1, &dev->transfer_fence);
    return s;
}

static vkllm_status ensure_staging(vkr_device *dev)
{
    if (dev->staging)
        return VKLLM_OK;
    vkr_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s = vkr_buffer_create(dev, STAGING_BYTES, VKR_MEMORY_HOST, b);
    if (s) {
        free(b);
        return s;
    }
    dev->staging = b;
    return VKLLM_OK;
}

static vkllm_status check_range(const vkr_buffer *b, VkDeviceSize offset, VkDeviceSize size)
{
    if (offset > b->size || size > b->size - offset)
        return vk_fail(VKLLM_ERR_INTERNAL, "transfer of %llu bytes at %llu outside a buffer of %llu",
                       (unsigned long long)size, (unsigned long long)offset,
                       (unsigned long long)b->size);
    return VKLLM_OK;
}

vkllm_status vkr_buffer_write(vkr_device *dev, vkr_buffer *dst, VkDeviceSize offset,
                              const void *src, VkDeviceSize size)
{
    vkllm_status s = check_range(dst, offset, size);
    if (s)
        return s;
    bool direct = dst->mapped && (dev->caps.host_visible_weights ||
                                  (dev->memory_properties.memoryTypes[dst->block->type_index].propertyFlags &
                                   VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) == 0);
    if (direct) {
        memcpy(dst->mapped + offset, src, size);
        return VKLLM_OK;
    }
    mtx_lock(&dev->transfer_lock);
    s = ensure_staging(dev);
    for (VkDeviceSize done = 0; !s && done < size;) {
        VkDeviceSize n = size - done < STAGING_BYTES ? size - done : STAGING_BYTES;
        memcpy(dev->staging->mapped, (const uint8_t *)src + done, n);
        s = staged_copy(dev, dev->staging->buffer, 0, dst->buffer, offset + done, n);
        done += n;
    }
    mtx_unlock(&dev->transfer_lock);
    return s;
}

vkllm_status vkr_buffer_read(vkr_device *dev, vkr_buffer *src, VkDeviceSize offset, void *dst,
                             VkDeviceSize size)
{
    vkllm_status s = check_range(src, offset, size);
    if (s)
        return s;
    if (src->mapped) {
        memcpy(dst, src->mapped + offset, size);
        return VKLLM_OK;
    }
    mtx_lock(&dev->transfer_lock);
    s = ensure_staging(dev);
    for (VkDeviceSize done = 0; !s && done < size;) {
        VkDeviceSize n = size - done < STAGING_BYTES ? size - done : STAGING_BYTES;
        s = staged_copy(dev, src->buffer, offset + done, dev->staging->buffer, 0, n);
        if (!s)
            memcpy((uint8_t *)dst + done, dev->staging->mapped, n);
        done += n;
    }
    mtx_unlock(&dev->transfer_lock);
    return s;
}
