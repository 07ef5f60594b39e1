/* Instance, device choice, capability probing and profiles. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error.h"
#include "vkr.h"

static const char *vk_result_name(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED: return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "VkResult";
    }
}

vkllm_status vkr_check(VkResult r, const char *what)
{
    if (r == VK_SUCCESS)
        return VKLLM_OK;
    vkllm_status s = VKLLM_ERR_VULKAN;
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
        s = VKLLM_ERR_OUT_OF_DEVICE_MEMORY;
    else if (r == VK_ERROR_OUT_OF_HOST_MEMORY)
        s = VKLLM_ERR_OUT_OF_HOST_MEMORY;
    return vk_fail(s, "%s failed: %s (%d)", what, vk_result_name(r), (int)r);
}

void vkr_log(vkr_device *dev, int32_t level, const char *fmt, ...)
{
    if (level > dev->log_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (dev->log_fn)
        dev->log_fn(dev->log_user, level, msg);
    else
        fprintf(stderr, "vkllm: %s\n", msg);
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation_message(
    VkDebugUtilsMessageSeverityFlagBitsEXT severity, VkDebugUtilsMessageTypeFlagsEXT types,
    const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    vkr_device *dev = user;
    (void)types;
    if (severity & (VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                    VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT)) {
        atomic_fetch_add(&dev->validation_messages, 1);
        vkr_log(dev, VKLLM_LOG_ERROR, "validation: %s", data->pMessage);
    }
    return VK_FALSE;
}

/* ---- profiles ---------------------------------------------------------------------- */

bool vkr_caps_apply_profile(vkr_caps *caps, const char *profile)
{
    if (!profile)
        return true;
    const char *p = profile;
    while (*p) {
        size_t len = strcspn(p, ",");
        char item[96];
        if (len >= sizeof item) {
            vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "VKLLM_PROFILE item too long: %.*s", (int)len, p);
            return false;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        char *eq = strchr(item, '=');
        unsigned long long value = 0;
        if (eq) {
            *eq = '\0';
            char *end;
            value = strtoull(eq + 1, &end, 0);
            if (*end || end == eq + 1) {
                vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "VKLLM_PROFILE: bad number in %s=%s", item,
                        eq + 1);
                return false;
            }
        }
        if (!item[0]) {
            /* empty item: tolerate ",," */
        } else if (!strcmp(item, "no-fp16")) {
            caps->fp16_arithmetic = false;
        } else if (!strcmp(item, "no-storage16")) {
            caps->storage16 = false;
        } else if (!strcmp(item, "no-storage8")) {
            caps->storage8 = false;
        } else if (!strcmp(item, "no-int8")) {
            caps->int8_arithmetic = false;
        } else if (!strcmp(item, "no-subgroup")) {
            caps->subgroup_arithmetic = false;
            caps->subgroup_shuffle = false;
            caps->subgroup_size_control = false;
        } else if (!strcmp(item, "no-coopmat")) {
            caps->cooperative_matrix = false;
        } else if (!strcmp(item, "no-texel")) {
            caps->texel_buffers = false;
        } else if (!strcmp(item, "staging")) {
            caps->host_visible_weights = false;
        } else if (!strcmp(item, "max-storage-range") && eq) {
            if (value < 4096 || value > caps->max_storage_buffer_range) {
                vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                        "VKLLM_PROFILE: max-storage-range=%llu outside [4096, %llu]", value,
                        (unsigned long long)caps->max_storage_buffer_range);
                return false;
            }
            caps->max_storage_buffer_range = value;
            if (caps->max_texel_elements > value / 4)
                caps->max_texel_elements = value / 4;
        } else if (!strcmp(item, "max-shared") && eq) {
            if (value < 1024 || value > caps->shared_memory_size) {
                vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "VKLLM_PROFILE: max-shared=%llu outside [1024, %u]",
                        value, caps->shared_memory_size);
                return false;
            }
            caps->shared_memory_size = (uint32_t)value;
        } else {
            vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "VKLLM_PROFILE: unknown item '%s'", item);
            return false;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return true;
}

/* ---- enumeration ------------------------------------------------------------------- */

static bool has_extension(const VkExtensionProperties *exts, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(exts[i].extensionName, name))
            return true;
    return false;
}

static int device_rank(int32_t type)
{
    switch (type) {
    case VKLLM_DEVICE_DISCRETE: return 4;
    case VKLLM_DEVICE_INTEGRATED: return 3;
    case VKLLM_DEVICE_VIRTUAL: return 2;
    case VKLLM_DEVICE_CPU: return 1;
    default: return 0;
    }
}

static int32_t to_device_type(VkPhysicalDeviceType t)
{
    switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return VKLLM_DEVICE_INTEGRATED;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return VKLLM_DEVICE_DISCRETE;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return VKLLM_DEVICE_VIRTUAL;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return VKLLM_DEVICE_CPU;
    default: return VKLLM_DEVICE_OTHER;
    }
}

/* Reads what the device offers into caps (before any profile). */
static vkllm_status probe_caps(VkPhysicalDevice pd, vkr_caps *caps, vkllm_device_info *info)
{
    VkPhysicalDeviceVulkan13Properties p13 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_PROPERTIES};
    VkPhysicalDeviceVulkan12Properties p12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES};
    VkPhysicalDeviceVulkan11Properties p11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES};
    VkPhysicalDeviceProperties2 props = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                         .pNext = &p11};
    VkPhysicalDeviceProperties base;
    vkGetPhysicalDeviceProperties(pd, &base);
    if (base.apiVersion >= VK_API_VERSION_1_2)
        p11.pNext = &p12;
    if (base.apiVersion >= VK_API_VERSION_1_3)
        p12.pNext = &p13;
    vkGetPhysicalDeviceProperties2(pd, &props);

    VkPhysicalDeviceVulkan13Features f13 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES};
    VkPhysicalDeviceVulkan12Features f12 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
    VkPhysicalDeviceVulkan11Features f11 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
                                            .pNext = &f12};
    if (base.apiVersion >= VK_API_VERSION_1_3)
        f12.pNext = &f13;
    VkPhysicalDeviceFeatures2 feats = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                       .pNext = &f11};
    vkGetPhysicalDeviceFeatures2(pd, &feats);

    uint32_t n_ext = 0;
    vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, NULL);
    VkExtensionProperties *exts = calloc(n_ext ? n_ext : 1, sizeof *exts);
    if (!exts)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory enumerating extensions");
    vkEnumerateDeviceExtensionProperties(pd, NULL, &n_ext, exts);

    memset(caps, 0, sizeof *caps);
    const VkPhysicalDeviceLimits *lim = &props.properties.limits;
    caps->fp16_arithmetic = f12.shaderFloat16;
    caps->storage16 = f11.storageBuffer16BitAccess;
    caps->storage8 = f12.storageBuffer8BitAccess;
    caps->int8_arithmetic = f12.shaderInt8;
    bool compute_subgroups = p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT;
    caps->subgroup_arithmetic =
        compute_subgroups && (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    caps->subgroup_shuffle =
        compute_subgroups && (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    caps->subgroup_size_control = f13.subgroupSizeControl && f13.computeFullSubgroups;
    caps->maintenance4 = f13.maintenance4;
    caps->cooperative_matrix = has_extension(exts, n_ext, "VK_KHR_cooperative_matrix");
    caps->integer_dot_product = f13.shaderIntegerDotProduct;
    caps->timestamps = lim->timestampComputeAndGraphics && lim->timestampPeriod > 0;
    caps->timestamp_period_ns = lim->timestampPeriod;
    caps->subgroup_size = p11.subgroupSize;
    caps->shared_memory_size = lim->maxComputeSharedMemorySize;
    caps->max_workgroup_size = lim->maxComputeWorkGroupInvocations;
    if (caps->max_workgroup_size > lim->maxComputeWorkGroupSize[0])
        caps->max_workgroup_size = lim->maxComputeWorkGroupSize[0];
    memcpy(caps->max_workgroup_count, lim->maxComputeWorkGroupCount, sizeof caps->max_workgroup_count);
    caps->max_storage_buffer_range = lim->maxStorageBufferRange;
    caps->max_allocation_size = p11.maxMemoryAllocationSize;
    caps->storage_offset_alignment = lim->minStorageBufferOffsetAlignment;
    VkFormatProperties r32, rgba32;
    vkGetPhysicalDeviceFormatProperties(pd, VK_FORMAT_R32_UINT, &r32);
    vkGetPhysicalDeviceFormatProperties(pd, VK_FORMAT_R32G32B32A32_UINT, &rgba32);
    caps->max_texel_elements = lim->maxTexelBufferElements;
    caps->texel_offset_alignment = lim->minTexelBufferOffsetAlignment ? lim->minTexelBufferOffsetAlignment : 1;
    /* A view must at least hold what one storage binding can (64 Ki texels is the spec's
     * minimum). */
    caps->texel_buffers = (r32.bufferFeatures & VK_FORMAT_FEATURE_STORAGE_TEXEL_BUFFER_BIT) &&
                          (rgba32.bufferFeatures & VK_FORMAT_FEATURE_STORAGE_TEXEL_BUFFER_BIT) &&
                          caps->max_texel_elements >= 65536 && caps->texel_offset_alignment <= 65536;
    caps->driver_id = base.apiVersion >= VK_API_VERSION_1_2 ? (uint32_t)p12.driverID : 0;
    caps->device_type = to_device_type(props.properties.deviceType);

    VkPhysicalDeviceMemoryProperties mem;
    vkGetPhysicalDeviceMemoryProperties(pd, &mem);
    uint64_t biggest_local = 0;
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) &&
            mem.memoryHeaps[i].size > biggest_local)
            biggest_local = mem.memoryHeaps[i].size;
    caps->host_visible_weights = false;
    for (uint32_t i = 0; i < mem.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mem.memoryTypes[i].propertyFlags;
        if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
            (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) &&
            mem.memoryHeaps[mem.memoryTypes[i].heapIndex].size >= biggest_local)
            caps->host_visible_weights = true;
    }
    free(exts);

    if (info) {
        uint32_t size = info->size;
        memset(info, 0, sizeof *info);
        info->size = size;
        snprintf(info->name, sizeof info->name, "%s", props.properties.deviceName);
        info->type = caps->device_type;
        info->vendor_id = props.properties.vendorID;
        info->device_id = props.properties.deviceID;
        info->api_version = props.properties.apiVersion;
        info->driver_version = props.properties.driverVersion;
        info->device_local_memory = biggest_local;
        info->max_storage_buffer_range = caps->max_storage_buffer_range;
        info->subgroup_size = caps->subgroup_size;
        info->shared_memory_size = caps->shared_memory_size;
    }
    if (base.apiVersion < VK_API_VERSION_1_2)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "device %s offers Vulkan %u.%u; vkllm needs 1.2",
                       props.properties.deviceName, VK_API_VERSION_MAJOR(base.apiVersion),
                       VK_API_VERSION_MINOR(base.apiVersion));
    return VKLLM_OK;
}

static uint32_t caps_to_features(const vkr_caps *c)
{
    uint32_t f = 0;
    f |= c->fp16_arithmetic ? VKLLM_FEATURE_FP16_ARITHMETIC : 0;
    f |= c->storage16 ? VKLLM_FEATURE_STORAGE_16BIT : 0;
    f |= c->storage8 ? VKLLM_FEATURE_STORAGE_8BIT : 0;
    f |= c->int8_arithmetic ? VKLLM_FEATURE_INT8_ARITHMETIC : 0;
    f |= c->subgroup_arithmetic ? VKLLM_FEATURE_SUBGROUP_ARITHMETIC : 0;
    f |= c->subgroup_shuffle ? VKLLM_FEATURE_SUBGROUP_SHUFFLE : 0;
    f |= c->cooperative_matrix ? VKLLM_FEATURE_COOPERATIVE_MATRIX : 0;
    f |= c->integer_dot_product ? VKLLM_FEATURE_INTEGER_DOT_PRODUCT : 0;
    f |= c->subgroup_size_control ? VKLLM_FEATURE_SUBGROUP_SIZE_CONTROL : 0;
    return f;
}

/* Whether weights (and matmul's x) are read through texel buffers (caps->texel_weights). On
 * lavapipe a storage-buffer load is a loop over the lanes with bounds checks, while a load
 * from a texel buffer is one gather: decoding runs 1.4-1.9x faster that way (SmolLM2 Q4_1,
 * the 134M F16/Q8_0/Q4_0 bench models), prompts 1.5-1.8x. GPUs read storage buffers at full
 * speed and keep them. VKLLM_WEIGHT_READ=ssbo|texel overrides the rule. */
static bool weight_read(vkr_caps *caps)
{
    const char *e = getenv("VKLLM_WEIGHT_READ");
    bool texel = caps->driver_id == VK_DRIVER_ID_MESA_LLVMPIPE;
    if (e && !strcmp(e, "texel"))
        texel = true;
    else if (e && !strcmp(e, "ssbo"))
        texel = false;
    else if (e && *e) {
        vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "VKLLM_WEIGHT_READ=%s: expected ssbo or texel", e);
        return false;
    }
    caps->texel_weights = texel && caps->texel_buffers;
    return true;
}

/* Picks the device: explicit name, explicit index, VKLLM_DEVICE, else best type. */
static vkllm_status choose_device(vkr_device *dev, const vkr_device_desc *desc)
{
    const char *name = desc->device_name;
    int32_t index = desc->device_index;
    const char *env = getenv("VKLLM_DEVICE");
    if (!name && index < 0 && env && *env) {
        char *end;
        long v = strtol(env, &end, 10);
        if (*end == '\0')
            index = (int32_t)v;
        else
            name = env;
    }
    if (name) {
        for (uint32_t i = 0; i < dev->n_physical; i++)
            if (strcasestr(dev->infos[i].name, name)) {
                dev->selected = i;
                return VKLLM_OK;
            }
        return vk_fail(VKLLM_ERR_NO_DEVICE, "no Vulkan device matches '%s' (%u devices present)",
                       name, dev->n_physical);
    }
    if (index >= 0) {
        if ((uint32_t)index >= dev->n_physical)
            return vk_fail(VKLLM_ERR_NO_DEVICE, "device index %d out of range (%u devices present)",
                           index, dev->n_physical);
        dev->selected = (uint32_t)index;
        return VKLLM_OK;
    }
    int best = -1;
    for (uint32_t i = 0; i < dev->n_physical; i++)
        if (best < 0 || device_rank(dev->infos[i].type) > device_rank(dev->infos[best].type))
            best = (int)i;
    dev->selected = (uint32_t)best;
    return VKLLM_OK;
}

static bool layer_present(const char *name)
{
    uint32_t n = 0;
    vkEnumerateInstanceLayerProperties(&n, NULL);
    VkLayerProperties *layers = calloc(n ? n : 1, sizeof *layers);
    if (!layers)
        return false;
    vkEnumerateInstanceLayerProperties(&n, layers);
    bool found = false;
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(layers[i].layerName, name))
            found = true;
    free(layers);
    return found;
}

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static vkllm_status create_instance(vkr_device *dev, const vkr_device_desc *desc)
{
    static const char *validation_layer = "VK_LAYER_KHRONOS_validation";
    const char *layers[1];
    uint32_t n_layers = 0;
    const char *exts[2];
    uint32_t n_exts = 0;
    bool validation = desc->validation || env_flag("VKLLM_VALIDATION");
    if (validation) {
        if (!layer_present(validation_layer))
            return vk_fail(VKLLM_ERR_VULKAN,
                           "validation requested but %s is not installed (Debian: "
                           "vulkan-validationlayers)",
                           validation_layer);
        layers[n_layers++] = validation_layer;
        exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    }

    VkValidationFeatureEnableEXT gpu_av[] = {VK_VALIDATION_FEATURE_ENABLE_GPU_ASSISTED_EXT};
    VkValidationFeaturesEXT vfeatures = {
        .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
        .enabledValidationFeatureCount = 1,
        .pEnabledValidationFeatures = gpu_av,
    };
    VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_validation_message,
        .pUserData = dev,
    };
    if (validation && (desc->gpu_assisted || env_flag("VKLLM_GPU_AV")))
        messenger_info.pNext = &vfeatures;

    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "vkllm",
        .pEngineName = "vkllm",
        .apiVersion = VK_API_VERSION_1_3,
    };
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = validation ? &messenger_info : NULL,
        .pApplicationInfo = &app,
        .enabledLayerCount = n_layers,
        .ppEnabledLayerNames = layers,
        .enabledExtensionCount = n_exts,
        .ppEnabledExtensionNames = exts,
    };
    VkResult r = vkCreateInstance(&info, NULL, &dev->instance);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        return vk_fail(VKLLM_ERR_NO_DEVICE, "the Vulkan loader found no driver (for a CPU device "
                                            "install Mesa's lavapipe: mesa-vulkan-drivers)");
    vkllm_status s = vkr_check(r, "vkCreateInstance");
    if (s)
        return s;
    volkLoadInstanceOnly(dev->instance);
    if (validation) {
        messenger_info.pNext = NULL;
        s = vkr_check(vkCreateDebugUtilsMessengerEXT(dev->instance, &messenger_info, NULL,
                                                     &dev->messenger),
                      "vkCreateDebugUtilsMessengerEXT");
        if (s)
            return s;
    }
    return VKLLM_OK;
}

static vkllm_status open_device(vkr_device *dev, const vkr_device_desc *desc)
{
    dev->pd = dev->physical[dev->selected];
    uint32_t n_families = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(dev->pd, &n_families, NULL);
    VkQueueFamilyProperties families[32];
    if (n_families > 32)
        n_families = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(dev->pd, &n_families, families);
    int family = -1;
    for (uint32_t i = 0; i < n_families && family < 0; i++)
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            family = (int)i;
    if (family < 0)
        return vk_fail(VKLLM_ERR_NO_DEVICE, "device %s has no compute queue",
                       dev->infos[dev->selected].name);
    dev->queue_family = (uint32_t)family;
    if (families[family].timestampValidBits == 0)
        dev->caps.timestamps = false;

    /* Enable exactly what the (profile-reduced) caps promise, so a shader that uses a
     * masked feature trips the validation layer. */
    const vkr_caps *c = &dev->caps;
    VkPhysicalDeviceVulkan13Features f13 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES,
        .subgroupSizeControl = c->subgroup_size_control,
        .computeFullSubgroups = c->subgroup_size_control,
        .maintenance4 = c->maintenance4,
    };
    VkPhysicalDeviceVulkan12Features f12 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
        .shaderFloat16 = c->fp16_arithmetic,
        .shaderInt8 = c->int8_arithmetic,
        .storageBuffer8BitAccess = c->storage8,
        .pNext = dev->infos[dev->selected].api_version >= VK_API_VERSION_1_3 ? &f13 : NULL,
    };
    VkPhysicalDeviceVulkan11Features f11 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES,
        .storageBuffer16BitAccess = c->storage16,
        .pNext = &f12,
    };
    VkPhysicalDeviceFeatures2 features = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &f11,
    };
    features.features.robustBufferAccess = desc->robust || env_flag("VKLLM_ROBUST");
    features.features.shaderInt64 = VK_FALSE;
    dev->caps.robust_buffer_access = features.features.robustBufferAccess;

    float priority = 1.0f;
    VkDeviceQueueCreateInfo queue_info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = dev->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    VkDeviceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = &features,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue_info,
    };
    vkllm_status s = vkr_check(vkCreateDevice(dev->pd, &info, NULL, &dev->device), "vkCreateDevice");
    if (s)
        return s;
    volkLoadDevice(dev->device);
    vkGetDeviceQueue(dev->device, dev->queue_family, 0, &dev->queue);
    vkGetPhysicalDeviceMemoryProperties(dev->pd, &dev->memory_properties);
    return VKLLM_OK;
}

vkllm_status vkr_pipelines_init(vkr_device *dev);
void vkr_pipelines_destroy(vkr_device *dev);
vkllm_status vkr_transfer_init(vkr_device *dev);
void vkr_transfer_destroy(vkr_device *dev);
void vkr_memory_destroy(vkr_device *dev);

/* Loads the Vulkan loader: libvulkan.so.1 as the system finds it, or the library named by
 * VKLLM_VULKAN_LOADER (tests use it to stand for a machine without one). */
static vkllm_status load_vulkan(void)
{
    const char *path = getenv("VKLLM_VULKAN_LOADER");
    if (!path || !*path) {
        if (volkInitialize() != VK_SUCCESS)
            return vk_fail(VKLLM_ERR_NO_VULKAN_LOADER,
                           "no Vulkan loader: libvulkan.so.1 could not be loaded (Debian: libvulkan1)");
        return VKLLM_OK;
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    void *gipa = lib ? dlsym(lib, "vkGetInstanceProcAddr") : NULL;
    if (!gipa) {
        const char *why = dlerror();
        if (lib)
            dlclose(lib);
        return vk_fail(VKLLM_ERR_NO_VULKAN_LOADER, "the Vulkan loader %s (VKLLM_VULKAN_LOADER) cannot be loaded: %s",
                       path, why ? why : "no vkGetInstanceProcAddr");
    }
    /* The library stays loaded for the process: volk's function pointers point into it. */
    volkInitializeCustom((PFN_vkGetInstanceProcAddr)(uintptr_t)gipa);
    return VKLLM_OK;
}

vkllm_status vkr_device_create(const vkr_device_desc *desc, vkr_device **out)
{
    *out = NULL;
    vkllm_status loaded = load_vulkan();
    if (loaded)
        return loaded;
    vkr_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    dev->log_fn = desc->log_fn;
    dev->log_user = desc->log_user;
    dev->log_level = desc->log_level;
    mtx_init(&dev->queue_lock, mtx_plain);
    mtx_init(&dev->memory_lock, mtx_plain);
    mtx_init(&dev->pipeline_lock, mtx_plain);
    mtx_init(&dev->transfer_lock, mtx_plain);

    vkllm_status s = create_instance(dev, desc);
    if (s)
        goto fail;
    vkEnumeratePhysicalDevices(dev->instance, &dev->n_physical, NULL);
    if (dev->n_physical == 0) {
        s = vk_fail(VKLLM_ERR_NO_DEVICE, "the Vulkan loader found no device (for a CPU device "
                                         "install Mesa's lavapipe: mesa-vulkan-drivers)");
        goto fail;
    }
    dev->physical = calloc(dev->n_physical, sizeof *dev->physical);
    dev->infos = calloc(dev->n_physical, sizeof *dev->infos);
    if (!dev->physical || !dev->infos) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto fail;
    }
    vkEnumeratePhysicalDevices(dev->instance, &dev->n_physical, dev->physical);
    for (uint32_t i = 0; i < dev->n_physical; i++) {
        vkr_caps caps;
        dev->infos[i].size = sizeof dev->infos[i];
        probe_caps(dev->physical[i], &caps, &dev->infos[i]); /* too-old devices stay listed */
        dev->infos[i].index = i;
        dev->infos[i].features = caps_to_features(&caps);
    }
    if ((s = choose_device(dev, desc)))
        goto fail;
    if ((s = probe_caps(dev->physical[dev->selected], &dev->caps, NULL)))
        goto fail;
    if (!vkr_caps_apply_profile(&dev->caps, getenv("VKLLM_PROFILE")) || !weight_read(&dev->caps)) {
        s = VKLLM_ERR_INVALID_ARGUMENT;
        goto fail;
    }
    dev->infos[dev->selected].features = caps_to_features(&dev->caps);
    dev->infos[dev->selected].max_storage_buffer_range = dev->caps.max_storage_buffer_range;
    dev->infos[dev->selected].shared_memory_size = dev->caps.shared_memory_size;
    if ((s = open_device(dev, desc)))
        goto fail;
    if ((s = vkr_pipelines_init(dev)))
        goto fail;
    if ((s = vkr_transfer_init(dev)))
        goto fail;
    vkr_log(dev, VKLLM_LOG_INFO, "device %u: %s, weights read through %s", dev->selected,
            dev->infos[dev->selected].name, dev->caps.texel_weights ? "texel buffers" : "storage buffers");
    *out = dev;
    return VKLLM_OK;
fail:
    {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", vk_error_message());
        vkr_device_destroy(dev);
        vk_fail(s, "%s", saved); /* the failure, not the teardown, is the news */
    }
    return s;
}

vkllm_status vkr_device_destroy(vkr_device *dev)
{
    if (!dev)
        return VKLLM_OK;
    uint64_t messages_before = atomic_load(&dev->validation_messages);
    if (dev->device) {
        vkDeviceWaitIdle(dev->device);
        vkr_transfer_destroy(dev);
        vkr_pipelines_destroy(dev);
        vkr_memory_destroy(dev);
        vkDestroyDevice(dev->device, NULL);
    }
    if (dev->messenger)
        vkDestroyDebugUtilsMessengerEXT(dev->instance, dev->messenger, NULL);
    if (dev->instance)
        vkDestroyInstance(dev->instance, NULL);
    int64_t leaked = atomic_load(&dev->live_objects);
    uint64_t teardown_messages = atomic_load(&dev->validation_messages) - messages_before;
    free(dev->physical);
    free(dev->infos);
    mtx_destroy(&dev->queue_lock);
    mtx_destroy(&dev->memory_lock);
    mtx_destroy(&dev->pipeline_lock);
    mtx_destroy(&dev->transfer_lock);
    free(dev);
    if (leaked || teardown_messages)
        return vk_fail(VKLLM_ERR_INTERNAL,
                       "teardown: %lld Vulkan objects still alive, %llu validation messages",
                       (long long)leaked, (unsigned long long)teardown_messages);
    return VKLLM_OK;
}
