/* GGUF v3 writer (see gguf_write.h). Layout, as the GGUF spec gives it: magic "GGUF", u32
 * version, u64 tensor count, u64 key count, the keys (u64-length key string, u32 type,
 * value), the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset within
 * the data section), padding to the alignment, the data section with every tensor at an
 * aligned offset. All little-endian. */
#include "gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

typedef struct out_file {
    FILE *f;
    int failed;
} out_file;

static void put_bytes(out_file *o, const void *p, size_t n)
{
    if (!o->failed && n && fwrite(p, 1, n, o->f) != n)
        o->failed = 1;
}

static void put_uint(out_file *o, uint64_t v, unsigned bytes)
{
    uint8_t b[8];
    for (unsigned i = 0; i < bytes; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    put_bytes(o, b, bytes);
}

static void put_str(out_file *o, const char *s, uint64_t len)
{
    put_uint(o, len, 8);
    put_bytes(o, s, len);
}

static void put_array(out_file *o, const gguf_array *a)
{
    put_uint(o, a->elem_type, 4);
    put_uint(o, a->n, 8);
    if (a->elem_type == GGUF_STRING) {
        for (uint64_t i = 0; i < a->n; i++)
            put_str(o, a->strings[i].data, a->strings[i].len);
    } else if (a->elem_type == GGUF_ARRAY) {
        for (uint64_t i = 0; i < a->n; i++)
            put_array(o, &a->arrays[i]);
    } else {
        put_bytes(o, a->data, a->n * gguf_value_size(a->elem_type)); /* packed little-endian, as read */
    }
}

static void put_kv(out_file *o, const gguf_kv *kv)
{
    put_str(o, kv->key, strlen(kv->key));
    put_uint(o, kv->type, 4);
    switch (kv->type) {
    case GGUF_FLOAT32: {
        float f = (float)kv->v.f;
        uint32_t u;
        memcpy(&u, &f, 4);
        put_uint(o, u, 4);
        break;
    }
    case GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &kv->v.f, 8);
        put_uint(o, u, 8);
        break;
    }
    case GGUF_STRING: put_str(o, kv->v.s.data, kv->v.s.len); break;
    case GGUF_ARRAY: put_array(o, &kv->v.a); break;
    case GGUF_INT8: case GGUF_INT16: case GGUF_INT32: case GGUF_INT64:
        put_uint(o, (uint64_t)kv->v.i, (unsigned)gguf_value_size(kv->type));
        break;
    default: put_uint(o, kv->v.u, (unsigned)gguf_value_size(kv->type)); break;
    }
}

static const gguf_kv *override_of(const gguf_kv *ov, uint64_t n, const char *key)
{
    for (uint64_t i = 0; i < n; i++)
        if (!strcmp(ov[i].key, key))
            return &ov[i];
    return NULL;
}

static void pad_to(out_file *o, uint64_t *pos, uint64_t align)
{
    static const uint8_t zeros[256];
    uint64_t pad = (align - *pos % align) % align;
    for (uint64_t left = pad; left; ) {
        uint64_t n = left < sizeof zeros ? left : sizeof zeros;
        put_bytes(o, zeros, n);
        left -= n;
    }
    *pos += pad;
}

vkllm_status gguf_write_file(const char *path, const gguf_file *meta, const gguf_kv *ov, uint64_t n_ov,
                             const gguf_write_tensor *tensors, uint64_t n_tensors, gguf_fill_fn fill, void *user)
{
    uint64_t align = meta->alignment ? meta->alignment : 32;
    uint64_t *bytes = calloc(n_tensors + 1, sizeof *bytes);
    size_t tmp_len = strlen(path) + 8;
    char *tmp = malloc(tmp_len);
    if (!bytes || !tmp) {
        free(bytes);
        free(tmp);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory writing %s", path);
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        uint64_t rows = tensors[i].ne[1] * tensors[i].ne[2] * tensors[i].ne[3];
        bytes[i] = ggml_row_bytes(tensors[i].type, tensors[i].ne[0]) * rows;
    }
    snprintf(tmp, tmp_len, "%s.part", path);
    out_file o = {fopen(tmp, "wb"), 0};
    if (!o.f) {
        free(bytes);
        vkllm_status s = vk_fail(VKLLM_ERR_IO, "cannot write %s", tmp);
        free(tmp);
        return s;
    }
    uint64_t n_kv = meta->n_kv;
    for (uint64_t i = 0; i < n_ov; i++)
        n_kv += gguf_find(meta, ov[i].key) == NULL;
    put_bytes(&o, "GGUF", 4);
    put_uint(&o, 3, 4);
    put_uint(&o, n_tensors, 8);
    put_uint(&o, n_kv, 8);
    for (uint64_t i = 0; i < meta->n_kv; i++) {
        const gguf_kv *r = override_of(ov, n_ov, meta->kv[i].key);
        put_kv(&o, r ? r : &meta->kv[i]);
    }
    for (uint64_t i = 0; i < n_ov; i++)
        if (!gguf_find(meta, ov[i].key))
            put_kv(&o, &ov[i]);
    uint64_t offset = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        put_str(&o, tensors[i].name, strlen(tensors[i].name));
        put_uint(&o, tensors[i].n_dims, 4);
        for (uint32_t d = 0; d < tensors[i].n_dims; d++)
            put_uint(&o, tensors[i].ne[d], 8);
        put_uint(&o, tensors[i].type, 4);
        put_uint(&o, offset, 8);
        offset += (bytes[i] + align - 1) / align * align;
    }
    uint64_t pos = (uint64_t)ftell(o.f);
    pad_to(&o, &pos, align);
    vkllm_status s = VKLLM_OK;
    for (uint64_t i = 0; i < n_tensors && !s && !o.failed; i++) {
        uint8_t *buf = malloc(bytes[i] ? bytes[i] : 1);
        if (!buf) {
            s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory writing %s", tensors[i].name);
            break;
        }
        s = fill(user, i, buf, bytes[i]);
        if (!s) {
            put_bytes(&o, buf, bytes[i]);
            pos += bytes[i];
            pad_to(&o, &pos, align);
        }
        free(buf);
    }
    if (fclose(o.f) != 0)
        o.failed = 1;
    if (!s && o.failed)
        s = vk_fail(VKLLM_ERR_IO, "writing %s failed (disk full?)", tmp);
    if (!s && rename(tmp, path) != 0)
        s = vk_fail(VKLLM_ERR_IO, "cannot rename %s to %s", tmp, path);
    if (s)
        remove(tmp);
    free(tmp);
    free(bytes);
    return s;
}
