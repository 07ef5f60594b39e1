/* vkr: the plugin's Vulkan runtime. Instance and device, capabilities (optionally reduced by
 * a profile), memory sub-allocation, buffers, pipelines from embedded SPIR-V, and command
 * recording with automatic minimal barriers. Everything above it (models, the dispatcher)
 * speaks in vkr_* terms. */
#ifndef VKLLM_VKR_H
#define VKLLM_VKR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <threads.h>

#include <volk.h>

#include "vkllm/vkllm.h"

/* ---- capabilities ------------------------------------------------------------------ */

/* What shader selection may rely on. Filled from the device, then reduced by the profile
 * in VKLLM_PROFILE (comma-separated): no-fp16, no-storage16, no-storage8, no-int8,
 * no-subgroup, no-coopmat, no-texel (no texel-buffer weights), staging (upload weights
 * through the staging ring even when device memory is host-visible), max-storage-range=BYTES
 * (texel views shrink to the same size, so that both kinds of binding get chunked),
 * max-shared=BYTES. */
typedef struct vkr_caps {
    bool fp16_arithmetic;
    bool storage16;
    bool storage8;
    bool int8_arithmetic;
    bool subgroup_arithmetic; /* subgroupAdd/Max in compute shaders */
    bool subgroup_shuffle;
    bool subgroup_size_control;
    bool cooperative_matrix;
    bool integer_dot_product;
    bool timestamps;
    bool host_visible_weights; /* weights can be written through a mapping */
    bool maintenance4;
    bool robust_buffer_access; /* enabled on the device (VKLLM_ROBUST=1) */
    /* Weights may be read through storage texel buffers (R32_UINT and R32G32B32A32_UINT
     * views): the formats support it. Then buffers carry the usage flag and the pipeline
     * layout has the texel bindings. */
    bool texel_buffers;
    /* ...and weights are read that way: where it is faster (lavapipe, see weight_read in
     * device.c), or VKLLM_WEIGHT_READ=texel; VKLLM_WEIGHT_READ=ssbo forces storage buffers. */
    bool texel_weights;
    uint32_t subgroup_size;
    uint32_t shared_memory_size;
    uint32_t max_workgroup_size;
    uint32_t max_workgroup_count[3];
    uint64_t max_storage_buffer_range;
    uint64_t max_allocation_size;
    uint64_t storage_offset_alignment;
    uint64_t max_texel_elements;      /* texels per view (maxTexelBufferElements) */
    uint64_t texel_offset_alignment;  /* of a view's offset (minTexelBufferOffsetAlignment) */
    uint32_t driver_id;               /* VkDriverId, 0 when unknown */
    float timestamp_period_ns;
    int device_type; /* vkllm_device_type */
} vkr_caps;

/* Applies a profile string to caps; returns false (with vk_fail) on an unknown item. */
bool vkr_caps_apply_profile(vkr_caps *caps, const char *profile);

/* ---- the device -------------------------------------------------------------------- */

typedef struct vkr_device_desc {
    const char *device_name; /* substring match, or NULL */
    int32_t device_index;    /* or -1 */
    bool validation;         /* VK_LAYER_KHRONOS_validation */
    bool gpu_assisted;       /* validation's GPU-assisted checks (VKLLM_GPU_AV=1 also) */
    bool robust;             /* robustBufferAccess (VKLLM_ROBUST=1 also) */
    vkllm_log_fn log_fn;
    void *log_user;
    int32_t log_level;
} vkr_device_desc;

typedef struct vkr_memory_block vkr_memory_block;
typedef struct vkr_pipeline vkr_pipeline;

typedef struct vkr_device {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    uint32_t n_physical;
    VkPhysicalDevice *physical;
    vkllm_device_info *infos; /* one per physical device */
    uint32_t selected;

    VkPhysicalDevice pd;
    VkDevice device;
    VkQueue queue;
    uint32_t queue_family;
    mtx_t queue_lock;
    vkr_caps caps;
    VkPhysicalDeviceMemoryProperties memory_properties;

    mtx_t memory_lock;
    vkr_memory_block *blocks;
    uint64_t bytes_allocated;

    mtx_t pipeline_lock;
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout pipeline_layout;
    VkPipelineCache pipeline_cache;
    vkr_pipeline *pipelines;
    uint64_t pipeline_cache_hash;

    /* Transfers (uploads/downloads through staging), serialised by transfer_lock. */
    mtx_t transfer_lock;
    VkCommandPool transfer_pool;
    VkCommandBuffer transfer_cmd;
    VkFence transfer_fence;
    struct vkr_buffer *staging;

    vkllm_log_fn log_fn;
    void *log_user;
    int32_t log_level;
    atomic_uint_fast64_t validation_messages;
    atomic_int_fast64_t live_objects;
} vkr_device;

/* Loads Vulkan (volk), creates the instance, enumerates and opens a device. */
vkllm_status vkr_device_create(const vkr_device_desc *desc, vkr_device **out);
/* Destroys everything. Returns VKLLM_ERR_INTERNAL (with a message) when Vulkan objects were
 * still alive or the validation layer reported anything during teardown. */
vkllm_status vkr_device_destroy(vkr_device *dev);
void vkr_log(vkr_device *dev, int32_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Turns a failed VkResult into a status and message naming the call. */
vkllm_status vkr_check(VkResult r, const char *what);

/* ---- memory and buffers ------------------------------------------------------------ */

typedef enum vkr_memory_kind {
    VKR_MEMORY_DEVICE,   /* device-local; written through staging (or mapped if allowed) */
    VKR_MEMORY_HOST,     /* host-visible, coherent, mapped: inputs, outputs, params */
} vkr_memory_kind;

/* Texel view formats: words (R32_UINT) and 16-byte texels (R32G32B32A32_UINT). */
enum { VKR_TEXEL_R32 = 0, VKR_TEXEL_RGBA32 = 1, VKR_TEXEL_FORMATS = 2 };

typedef struct vkr_buffer {
    VkBuffer buffer;
    VkDeviceSize size;
    uint8_t *mapped; /* non-NULL when host-visible */
    vkr_memory_block *block;
    VkDeviceSize block_offset;
    VkDeviceSize block_size;
    /* With caps.texel_weights, storage texel views over the whole buffer, made with it: view
     * i covers bytes [i * texel_stride, min(i * texel_stride + texel_range, size)), in each of
     * the VKR_TEXEL_FORMATS formats (texel_views[i * VKR_TEXEL_FORMATS + f]). Views overlap by
     * half, so any byte range of up to texel_stride bytes lies inside one. */
    VkBufferView *texel_views;
    uint32_t n_texel_views;
    VkDeviceSize texel_stride, texel_range;
} vkr_buffer;

vkllm_status vkr_buffer_create(vkr_device *dev, VkDeviceSize size, vkr_memory_kind kind,
                               vkr_buffer *out);
void vkr_buffer_destroy(vkr_device *dev, vkr_buffer *buf);
/* Writes host data into a buffer: memcpy when mapped (and the profile allows), else
 * through the staging ring. Thread-safe. */
vkllm_status vkr_buffer_write(vkr_device *dev, vkr_buffer *dst, VkDeviceSize offset,
                              const void *src, VkDeviceSize size);
vkllm_status vkr_buffer_read(vkr_device *dev, vkr_buffer *src, VkDeviceSize offset, void *dst,
                             VkDeviceSize size);

/* ---- pipelines --------------------------------------------------------------------- */

/* Every shader uses one layout: set 0 with VKR_MAX_BINDINGS storage buffers, and
 * VKR_PUSH_BYTES of push constants. Specialization constant 0 is the workgroup size. On
 * devices with caps.texel_buffers the set also has VKR_MAX_TEXEL_BINDINGS storage texel
 * buffers from binding VKR_TEXEL_BINDING on (see vkr_cmd_dispatch_texel). */
#define VKR_MAX_BINDINGS 8
#define VKR_TEXEL_BINDING 8
#define VKR_MAX_TEXEL_BINDINGS 3
#define VKR_PUSH_BYTES 128
#define VKR_MAX_SPEC 10

struct vkr_pipeline {
    char name[64];
    uint32_t spec[VKR_MAX_SPEC];
    uint32_t n_spec;
    VkPipeline pipeline;
    struct vkr_pipeline *next;
};

/* The pipeline for the embedded shader `name` with the given specialization constants
 * (spec[0] = workgroup size), created once and kept. Thread-safe. */
vkllm_status vkr_pipeline_get(vkr_device *dev, const char *name, const uint32_t *spec,
                              uint32_t n_spec, vkr_pipeline **out);
bool vkr_shader_exists(const char *name);

/* ---- command recording ------------------------------------------------------------- */

/* A range of a buffer as a shader sees it. */
typedef struct vkr_binding {
    const vkr_buffer *buffer;
    VkDeviceSize offset;
    VkDeviceSize range;
    bool write;
} vkr_binding;

/* One of a buffer's texel views (read-only), which covers bytes [offset, offset + range). */
typedef struct vkr_texel_binding {
    const vkr_buffer *buffer;
    VkBufferView view;
    VkDeviceSize offset, range;
} vkr_texel_binding;

typedef struct vkr_cmd vkr_cmd;

vkllm_status vkr_cmd_create(vkr_device *dev, uint32_t max_dispatches, bool timestamps,
                            vkr_cmd **out);
void vkr_cmd_destroy(vkr_cmd *cmd);
/* Starts a new recording; the previous one is discarded. */
vkllm_status vkr_cmd_begin(vkr_cmd *cmd);
/* Records a dispatch. A barrier is inserted first only when a binding overlaps a range that
 * an earlier dispatch since the last barrier wrote (or, for a write, read). */
vkllm_status vkr_cmd_dispatch(vkr_cmd *cmd, vkr_pipeline *pipeline, const vkr_binding *bindings,
                              uint32_t n_bindings, const void *push, uint32_t push_size,
                              uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                              const char *label);
/* The same with texel views at bindings VKR_TEXEL_BINDING + i (caps.texel_buffers). Storage
 * bindings whose buffer is NULL are slots the shader does not use. */
vkllm_status vkr_cmd_dispatch_texel(vkr_cmd *cmd, vkr_pipeline *pipeline, const vkr_binding *bindings,
                                    uint32_t n_bindings, const vkr_texel_binding *texel,
                                    uint32_t n_texel, const void *push, uint32_t push_size,
                                    uint32_t groups_x, uint32_t groups_y, uint32_t groups_z,
                                    const char *label);
vkllm_status vkr_cmd_copy(vkr_cmd *cmd, const vkr_buffer *src, VkDeviceSize src_offset,
                          const vkr_buffer *dst, VkDeviceSize dst_offset, VkDeviceSize size);
vkllm_status vkr_cmd_end(vkr_cmd *cmd);
/* Submits the recorded buffer and waits. May be called any number of times per recording
 * (replay). Results are visible to the host afterwards. */
vkllm_status vkr_cmd_submit_wait(vkr_cmd *cmd);
uint32_t vkr_cmd_dispatch_count(const vkr_cmd *cmd);
uint32_t vkr_cmd_barrier_count(const vkr_cmd *cmd);
/* GPU time of the last submit in ms (first to last timestamp), or -1 without timestamps. */
double vkr_cmd_gpu_ms(const vkr_cmd *cmd);
/* Per-dispatch GPU time of the last submit: label and ms of dispatch i. */
bool vkr_cmd_dispatch_time(const vkr_cmd *cmd, uint32_t i, const char **label, double *ms);

/* Streaming read bandwidth of device memory, in 1e9 bytes/s (probe shader, best of 5). */
vkllm_status vkr_measure_bandwidth(vkr_device *dev, uint64_t bytes, double *gbytes_per_s);

/* Workgroup grid for `n` groups along x, folded into y when n exceeds the device limit.
 * Shaders recover the linear index as gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x. */
void vkr_grid(const vkr_device *dev, uint32_t n, uint32_t *gx, uint32_t *gy);

#endif
