/* The start the public-ABI tests share: the plugin through vkllm_loader and an instance on
 * it with the validation layer on. Header-only, like check.h. */
#ifndef VKLLM_TESTS_HOST_INSTANCE_H
#define VKLLM_TESTS_HOST_INSTANCE_H

#include <stdio.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

/* Opens the plugin at `path` (NULL: the loader's default) and an instance with validation
 * on (logging through `log_fn` when not NULL). Returns 0 when both are open; otherwise the
 * test's exit status, having printed why: 77 (SKIP) without a Vulkan loader or device,
 * 1 (FAIL) for anything else. */
static int open_instance(const char *path, vkllm_log_fn log_fn, vkllm_loader *loader, vkllm_instance *inst)
    __attribute__((unused));
static int open_instance(const char *path, vkllm_log_fn log_fn, vkllm_loader *loader, vkllm_instance *inst)
{
    if (vkllm_loader_open(loader, path, 1, VKLLM_ABI_VERSION)) {
        printf("FAIL: %s\n", loader->error);
        return 1;
    }
    const vkllm_api *api = loader->api;
    vkllm_instance_desc desc;
    api->instance_desc_defaults(&desc, sizeof desc);
    desc.enable_validation = 1;
    desc.log_fn = log_fn;
    vkllm_status s = api->instance_create(&desc, inst);
    if (s == VKLLM_ERR_NO_VULKAN_LOADER || s == VKLLM_ERR_NO_DEVICE) {
        printf("SKIP: %s\n", api->last_error());
        vkllm_loader_close(loader);
        return 77;
    }
    if (s) {
        printf("FAIL: instance: %s\n", api->last_error());
        vkllm_loader_close(loader);
        return 1;
    }
    return 0;
}

#ifdef VKLLM_TESTS_CHECK_H
/* The end check.h's tests share: no validation message on the instance, a clean teardown,
 * the loader closed. */
static void close_instance(vkllm_loader *loader, vkllm_instance inst) __attribute__((unused));
static void close_instance(vkllm_loader *loader, vkllm_instance inst)
{
    const vkllm_api *api = loader->api;
    vkllm_instance_stats st = {.size = sizeof st};
    api->instance_stats(inst, &st);
    check(st.validation_messages == 0, "validation messages: %llu", (unsigned long long)st.validation_messages);
    check(api->instance_destroy(inst) == VKLLM_OK, "teardown clean");
    vkllm_loader_close(loader);
}
#endif

#endif
