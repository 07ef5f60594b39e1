/* Errors travel as values: a function that fails formats its message where the failure is
 * understood (into a thread-local buffer) and returns the status. The ABI layer copies
 * the message to the handle involved. */
#ifndef VKLLM_ERROR_H
#define VKLLM_ERROR_H

#include "vkllm/vkllm.h"

#if defined(__GNUC__)
#define VK_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define VK_PRINTF(a, b)
#endif

/* Sets the calling thread's message and returns `status`, so `return vk_fail(...)`. */
vkllm_status vk_fail(vkllm_status status, const char *fmt, ...) VK_PRINTF(2, 3);
/* Prepends "context: " to the calling thread's message and returns `status`. */
vkllm_status vk_fail_prefix(vkllm_status status, const char *fmt, ...) VK_PRINTF(2, 3);
/* The calling thread's last message ("" if none). */
const char *vk_error_message(void);
void vk_error_clear(void);
/* Static description of a status code. */
const char *vk_status_string(vkllm_status status);

#endif
