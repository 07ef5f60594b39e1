/* Pipelines from the embedded SPIR-V, one shared layout (storage buffers, and storage
 * texel buffers where the device has them), created lazily once per
 * (shader, specialization) and kept; a VkPipelineCache persisted under the user's cache
 * directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "shader_registry.h"
#include "vkr.h"

static const vk_shader_blob *find_blob(const char *name)
{
    for (size_t i = 0; i < vk_shader_blob_count; i++)
        if (!strcmp(vk_shader_blobs[i].name, name))
            return &vk_shader_blobs[i];
    return NULL;
}

bool vkr_shader_exists(const char *name) { return find_blob(name) != NULL; }

/* $XDG_CACHE_HOME/vkllm/pipelines-<vendor>-<device>-<driver>.bin, or ~/.cache/... */
static bool cache_path(const vkr_device *dev, char *path, size_t size, bool make_dirs)
{
    const char *env = getenv("VKLLM_PIPELINE_CACHE");
    if (env) {
        if (!*env)
            return false; /* explicitly disabled */
        snprintf(path, size, "%s", env);
        return true;
    }
    char dir[768];
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/vkllm", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.cache/vkllm", home);
    else
        return false;
    if (make_dirs) {
        char parent[768];
        snprintf(parent, sizeof parent, "%.*s", (int)(strrchr(dir, '/') - dir), dir);
        mkdir(parent, 0755);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST)
            return false;
    }
    const vkllm_device_info *info = &dev->infos[dev->selected];
    snprintf(path, size, "%s/pipelines-%04x-%04x-%08x.bin", dir, info->vendor_id, info->device_id,
             info->driver_version);
    return true;
}

vkllm_status vkr_pipelines_init(vkr_device *dev)
{
    VkDescriptorSetLayoutBinding bindings[VKR_MAX_BINDINGS + VKR_MAX_TEXEL_BINDINGS];
    for (uint32_t i = 0; i < VKR_MAX_BINDINGS; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    /* Data seen through texel views (the *_tx shaders), where the device has them. */
    for (uint32_t i = 0; i < VKR_MAX_TEXEL_BINDINGS; i++)
        bindings[VKR_MAX_BINDINGS + i] = (VkDescriptorSetLayoutBinding){
            .binding = VKR_TEXEL_BINDING + i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_TEXEL_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = VKR_MAX_BINDINGS + (dev->caps.texel_buffers ? VKR_MAX_TEXEL_BINDINGS : 0),
        .pBindings = bindings,
    };
    vkllm_status s = vkr_check(vkCreateDescriptorSetLayout(dev->device, &set_info, NULL, &dev->set_layout),
                               "vkCreateDescriptorSetLayout");
    if (s)
        return s;
    atomic_fetch_add(&dev->live_objects, 1);
    VkPushConstantRange push = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .offset = 0,
        .size = VKR_PUSH_BYTES,
    };
    VkPipelineLayoutCreateInfo layout_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &dev->set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    if ((s = vkr_check(vkCreatePipelineLayout(dev->device, &layout_info, NULL, &dev->pipeline_layout),
                       "vkCreatePipelineLayout")))
        return s;
    atomic_fetch_add(&dev->live_objects, 1);

    /* A stale or foreign cache file is harmless: the driver validates the header. */
    void *initial = NULL;
    size_t initial_size = 0;
    char path[1024];
    if (cache_path(dev, path, sizeof path, false)) {
        FILE *f = fopen(path, "rb");
        if (f) {
            if (fseek(f, 0, SEEK_END) == 0) {
                long n = ftell(f);
                if (n > 0 && n < (64l << 20) && fseek(f, 0, SEEK_SET) == 0) {
                    initial = malloc((size_t)n);
                    if (initial && fread(initial, 1, (size_t)n, f) == (size_t)n)
                        initial_size = (size_t)n;
                }
            }
            fclose(f);
        }
    }
    VkPipelineCacheCreateInfo cache_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
        .initialDataSize = initial_size,
        .pInitialData = initial_size ? initial : NULL,
    };
    VkResult r = vkCreatePipelineCache(dev->device, &cache_info, NULL, &dev->pipeline_cache);
    if (r != VK_SUCCESS && initial_size) {
        cache_info.initialDataSize = 0;
        cache_info.pInitialData = NULL;
        r = vkCreatePipelineCache(dev->device, &cache_info, NULL, &dev->pipeline_cache);
    }
    free(initial);
    if ((s = vkr_check(r, "vkCreatePipelineCache")))
        return s;
    atomic_fetch_add(&dev->live_objects, 1);
    return VKLLM_OK;
}

static void save_pipeline_cache(vkr_device *dev)
{
    char path[1024];
    size_t size = 0;
    if (!dev->pipelines || !cache_path(dev, path, sizeof path, true))
        return;
    if (vkGetPipelineCacheData(dev->device, dev->pipeline_cache, &size, NULL) != VK_SUCCESS || !size)
        return;
    void *data = malloc(size);
    if (!data)
        return;
    if (vkGetPipelineCacheData(dev->device, dev->pipeline_cache, &size, data) == VK_SUCCESS) {
        char tmp[1040];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        FILE *f = fopen(tmp, "wb");
        if (f) {
            bool ok = fwrite(data, 1, size, f) == size;
            if (fclose(f) == 0 && ok)
                rename(tmp, path); /* atomic: concurrent processes never see half a file */
            else
                remove(tmp);
        }
    }
    free(data);
}

void vkr_pipelines_destroy(vkr_device *dev)
{
    if (dev->pipeline_cache)
        save_pipeline_cache(dev);
    while (dev->pipelines) {
        vkr_pipeline *p = dev->pipelines;
        dev->pipelines = p->next;
        vkDestroyPipeline(dev->device, p->pipeline, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
        free(p);
    }
    if (dev->pipeline_cache) {
        vkDestroyPipelineCache(dev->device, dev->pipeline_cache, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
    }
    if (dev->pipeline_layout) {
        vkDestroyPipelineLayout(dev->device, dev->pipeline_layout, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
    }
    if (dev->set_layout) {
        vkDestroyDescriptorSetLayout(dev->device, dev->set_layout, NULL);
        atomic_fetch_sub(&dev->live_objects, 1);
    }
}

vkllm_status vkr_pipeline_get(vkr_device *dev, const char *name, const uint32_t *spec,
                              uint32_t n_spec, vkr_pipeline **out)
{
    if (n_spec == 0 || n_spec > VKR_MAX_SPEC || strlen(name) >= sizeof((vkr_pipeline *)0)->name)
        return vk_fail(VKLLM_ERR_INTERNAL, "pipeline %s: bad specialization (%u constants)", name,
                       n_spec);
    if (spec[0] == 0 || spec[0] > dev->caps.max_workgroup_size)
        return vk_fail(VKLLM_ERR_INTERNAL, "pipeline %s: workgroup size %u outside [1, %u]", name,
                       spec[0], dev->caps.max_workgroup_size);
    mtx_lock(&dev->pipeline_lock);
    for (vkr_pipeline *p = dev->pipelines; p; p = p->next)
        if (p->n_spec == n_spec && !strcmp(p->name, name) &&
            !memcmp(p->spec, spec, n_spec * sizeof *spec)) {
            mtx_unlock(&dev->pipeline_lock);
            *out = p;
            return VKLLM_OK;
        }
    vkllm_status s = VKLLM_OK;
    const vk_shader_blob *blob = find_blob(name);
    vkr_pipeline *p = NULL;
    VkShaderModule module = VK_NULL_HANDLE;
    if (!blob) {
        s = vk_fail(VKLLM_ERR_INTERNAL, "no embedded shader named '%s'", name);
        goto done;
    }
    VkShaderModuleCreateInfo module_info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = blob->size_bytes,
        .pCode = blob->code,
    };
    if ((s = vkr_check(vkCreateShaderModule(dev->device, &module_info, NULL, &module),
                       "vkCreateShaderModule")))
        goto done;
    VkSpecializationMapEntry entries[VKR_MAX_SPEC];
    for (uint32_t i = 0; i < n_spec; i++)
        entries[i] = (VkSpecializationMapEntry){.constantID = i,
                                                .offset = i * sizeof(uint32_t),
                                                .size = sizeof(uint32_t)};
    VkSpecializationInfo spec_info = {
        .mapEntryCount = n_spec,
        .pMapEntries = entries,
        .dataSize = n_spec * sizeof(uint32_t),
        .pData = spec,
    };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = module,
            .pName = "main",
            .pSpecializationInfo = &spec_info,
        },
        .layout = dev->pipeline_layout,
    };
    p = calloc(1, sizeof *p);
    if (!p) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto done;
    }
    if ((s = vkr_check(vkCreateComputePipelines(dev->device, dev->pipeline_cache, 1, &info, NULL,
                                                &p->pipeline),
                       "vkCreateComputePipelines"))) {
        vk_fail_prefix(s, "shader %s", name);
        free(p);
        p = NULL;
        goto done;
    }
    atomic_fetch_add(&dev->live_objects, 1);
    snprintf(p->name, sizeof p->name, "%s", name);
    memcpy(p->spec, spec, n_spec * sizeof *spec);
    p->n_spec = n_spec;
    p->next = dev->pipelines;
    dev->pipelines = p;
    *out = p;
done:
    if (module)
        vkDestroyShaderModule(dev->device, module, NULL);
    mtx_unlock(&dev->pipeline_lock);
    return s;
}
