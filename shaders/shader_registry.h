/* The SPIR-V embedded at build time, by name (see shaders/meson.build for the names). */
#ifndef VKLLM_SHADER_REGISTRY_H
#define VKLLM_SHADER_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef struct vk_shader_blob {
    const char *name;
    const uint32_t *code;
    size_t size_bytes;
} vk_shader_blob;

extern const vk_shader_blob vk_shader_blobs[];
extern const size_t vk_shader_blob_count;

#endif
