#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char thread_message[1024];

vkllm_status vk_fail(vkllm_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(thread_message, sizeof thread_message, fmt, ap);
    va_end(ap);
    return status;
}

vkllm_status vk_fail_prefix(vkllm_status status, const char *fmt, ...)
{
    char prefix[512];
    char old[sizeof thread_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, thread_message, sizeof old);
    /* Truncation is fine: the message is for people. */
    size_t n = strlen(prefix);
    if (n > sizeof thread_message - 3)
        n = sizeof thread_message - 3;
    memcpy(thread_message, prefix, n);
    memcpy(thread_message + n, ": ", 2);
    size_t room = sizeof thread_message - n - 3;
    size_t m = strnlen(old, room);
    memcpy(thread_message + n + 2, old, m);
    thread_message[n + 2 + m] = '\0';
    return status;
}

const char *vk_error_message(void) { return thread_message; }

void vk_error_clear(void) { thread_message[0] = '\0'; }

const char *vk_status_string(vkllm_status status)
{
    switch (status) {
    case VKLLM_OK: return "ok";
    case VKLLM_ERR_INVALID_ARGUMENT: return "invalid argument";
    case VKLLM_ERR_ABI_VERSION: return "ABI version out of range";
    case VKLLM_ERR_NO_VULKAN_LOADER: return "no Vulkan loader";
    case VKLLM_ERR_NO_DEVICE: return "no Vulkan device";
    case VKLLM_ERR_VULKAN: return "Vulkan error";
    case VKLLM_ERR_OUT_OF_HOST_MEMORY: return "out of host memory";
    case VKLLM_ERR_OUT_OF_DEVICE_MEMORY: return "out of device memory";
    case VKLLM_ERR_IO: return "I/O error";
    case VKLLM_ERR_BAD_FILE: return "malformed model file";
    case VKLLM_ERR_UNSUPPORTED: return "unsupported";
    case VKLLM_ERR_NOT_IMPLEMENTED: return "not supported yet";
    case VKLLM_ERR_TOKEN_OUT_OF_RANGE: return "token id out of range";
    case VKLLM_ERR_CONTEXT_FULL: return "context full";
    case VKLLM_ERR_NOT_FOUND: return "not found";
    case VKLLM_ERR_BUFFER_TOO_SMALL: return "buffer too small";
    case VKLLM_ERR_INTERNAL: return "internal error";
    default: return "unknown status";
    }
}
