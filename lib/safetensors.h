/* safetensors reader. The file is untrusted: the header length, the JSON header and every
 * tensor's dtype, shape and data offsets are checked against each other and against the
 * file before anything points into it.
 *
 * Layout: u64 little-endian N; N bytes of JSON: an object mapping each tensor name to
 * {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]} plus an optional
 * "__metadata__" object of string values; then the data section, which the offsets
 * index (row-major, last dimension contiguous, little-endian). */
#ifndef VKLLM_SAFETENSORS_H
#define VKLLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "vkllm/vkllm.h"

/* Headers above this size are refused (the format's reference implementation uses the
 * same bound); so are more dimensions than ST_MAX_DIMS. */
#define ST_MAX_HEADER (100u * 1000u * 1000u)
#define ST_MAX_DIMS 8

typedef enum st_dtype {
    ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_I16, ST_U16, ST_F16, ST_BF16,
    ST_I32, ST_U32, ST_F32, ST_F64, ST_I64, ST_U64,
    ST_DTYPE_COUNT
} st_dtype;

typedef struct st_tensor {
    char *name;        /* NUL-terminated copy */
    st_dtype dtype;
    uint32_t n_dims;
    uint64_t shape[ST_MAX_DIMS]; /* as in the file: shape[n_dims - 1] is contiguous */
    uint64_t begin, end;         /* data_offsets, relative to the data section */
    const uint8_t *data;         /* inside the mapping */
    uint64_t size;               /* end - begin = elements x dtype size */
} st_tensor;

typedef struct st_meta {
    char *key, *value; /* NUL-terminated copies */
} st_meta;

typedef struct st_file {
    const uint8_t *map;
    uint64_t map_size;
    int owns_map;
    uint64_t header_len;  /* N */
    uint64_t data_offset; /* 8 + N */
    uint64_t n_tensors;
    st_tensor *tensors;   /* in header order */
    uint32_t *by_name;    /* indexes of tensors sorted by name */
    uint64_t n_meta;
    st_meta *meta;
} st_file;

/* Parses an in-memory image (not copied; must outlive the result). Errors are
 * VKLLM_ERR_BAD_FILE with a message naming the tensor and the problem. */
vkllm_status st_parse(const uint8_t *data, uint64_t size, st_file **out);
/* Maps and parses `path`; errors are prefixed with the path. */
vkllm_status st_open(const char *path, st_file **out);
void st_close(st_file *f);

const st_tensor *st_find(const st_file *f, const char *name);
/* "F32" etc.; "?" for out-of-range values. */
const char *st_dtype_name(st_dtype t);
/* Bytes per element. */
uint32_t st_dtype_size(st_dtype t);
/* The value of __metadata__[key], or NULL. */
const char *st_meta_get(const st_file *f, const char *key);

#endif
