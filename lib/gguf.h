/* GGUF v2/v3 reader. The file is untrusted: every count, length, offset and dimension is
 * checked before use. The file is memory-mapped; tensor data and string payloads point
 * into the mapping and live as long as the gguf_file. */
#ifndef VKLLM_GGUF_H
#define VKLLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "vkllm/vkllm.h"

enum gguf_value_type {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12,
    GGUF_VALUE_TYPE_COUNT
};

/* A length-delimited string inside the mapping (not NUL-terminated). */
typedef struct gguf_str {
    const char *data;
    uint64_t len;
} gguf_str;

typedef struct gguf_array {
    uint32_t elem_type; /* gguf_value_type; may itself be GGUF_ARRAY */
    uint64_t n;
    /* Scalars: `n` packed little-endian values starting at `data`.
     * Strings: `strings` holds n entries.
     * Nested arrays: `arrays` holds n entries. */
    const uint8_t *data;
    gguf_str *strings;
    struct gguf_array *arrays;
} gguf_array;

typedef struct gguf_kv {
    char *key; /* NUL-terminated copy */
    uint32_t type;
    union {
        uint64_t u; /* UINT8..UINT64, BOOL */
        int64_t i;  /* INT8..INT64 */
        double f;   /* FLOAT32, FLOAT64 */
        gguf_str s;
        gguf_array a;
    } v;
} gguf_kv;

#define GGUF_MAX_DIMS 4
/* Limits the reader enforces beyond the spec, so a hostile file cannot make it allocate
 * without bound or recurse deeply: arrays of arrays nest at most this deep (1 = a plain
 * array), ... */
#define GGUF_MAX_ARRAY_DEPTH 8
/* ... at most this many keys and tensors, ... */
#define GGUF_MAX_KV (1u << 20)
#define GGUF_MAX_TENSORS (1u << 20)
/* ... and at most this many bytes of parser allocations (tables, string arrays). */
#define GGUF_MAX_META_ALLOC (1ull << 30)

typedef struct gguf_tensor {
    char *name; /* NUL-terminated copy */
    uint32_t n_dims;
    uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous (row) dimension; unused dims = 1 */
    uint32_t type;              /* ggml_type */
    uint64_t offset;            /* relative to the data section */
    uint64_t size;              /* bytes */
    const uint8_t *data;        /* inside the mapping */
} gguf_tensor;

typedef struct gguf_file {
    uint32_t version;
    uint64_t n_kv;
    gguf_kv *kv;
    uint64_t n_tensors;
    gguf_tensor *tensors;
    uint32_t alignment;
    uint64_t data_offset; /* of the data section; may lie past the end when n_tensors == 0 */
    const uint8_t *map; /* the whole file */
    uint64_t map_size;
    int owns_map;       /* 1 when the mapping came from gguf_open */
    /* Private to gguf.c: indexes of kv[] and tensors[] sorted by name, for binary
     * search in gguf_find / gguf_find_tensor (a linear scan when NULL). Sorting also
     * finds duplicates in O(n log n) whatever names a hostile file picks. */
    uint32_t *kv_by_name;
    uint32_t *tensors_by_name;
    /* A gguf_file built in memory by another loader (hf_model.c: a Hugging Face folder)
     * has its keys, names and tables malloc'd like a parsed one, while its string values
     * and tensor data live in storage of that loader: gguf_close calls release(owner)
     * last to free it. NULL for files from gguf_parse / gguf_open. */
    void (*release)(void *owner);
    void *owner;
} gguf_file;

/* Opens and maps `path`, parses it. On failure returns a status and sets the thread's
 * error message naming the problem (file, key or tensor, offset). */
vkllm_status gguf_open(const char *path, gguf_file **out);
/* Parses an in-memory image (not copied; must outlive the result). For tests and fuzzing. */
vkllm_status gguf_parse(const uint8_t *data, uint64_t size, gguf_file **out);
void gguf_close(gguf_file *f);

/* Lookups: NULL when absent. */
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed getters: VKLLM_OK, VKLLM_ERR_NOT_FOUND (absent) or VKLLM_ERR_BAD_FILE (wrong
 * type, naming the key). get_u64 accepts any non-negative integer type and bool;
 * get_f64 accepts float and integer types. */
vkllm_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out);
vkllm_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
vkllm_status gguf_get_f64(const gguf_file *f, const char *key, double *out);
vkllm_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out);
vkllm_status gguf_get_arr(const gguf_file *f, const char *key, const gguf_array **out);
/* Element i of a scalar array, converted: */
uint64_t gguf_arr_u64(const gguf_array *a, uint64_t i);
int64_t gguf_arr_i64(const gguf_array *a, uint64_t i);
double gguf_arr_f64(const gguf_array *a, uint64_t i);

/* Bytes of one value of a scalar type; 0 for STRING/ARRAY/unknown. */
size_t gguf_value_size(uint32_t type);
const char *gguf_value_type_name(uint32_t type);

#endif
