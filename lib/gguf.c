/* GGUF v2/v3 reader.
 *
 * Layout (all little-endian): "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv
 * key/value pairs (string key, u32 type, value); n_tensors tensor infos (string name,
 * u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset); padding to the alignment
 * (general.alignment, default 32); the data section. A string is a u64 length and that
 * many bytes; an array is a u32 element type, a u64 count and the elements.
 *
 * The file is untrusted. Every read goes through `need`, which checks the bytes left
 * before anything is touched, and every count is compared with the bytes left (each
 * element needs at least a known number of bytes) before anything is allocated, so the
 * allocations stay proportional to the file size; on top of that GGUF_MAX_META_ALLOC
 * caps them outright. Failures name what was being read and the file offset. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "quant.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
/* Fewest bytes a key/value pair (8-byte key length, type, 1-byte value), a tensor info
 * (name length, n_dims, type, offset), a string and an array header can take. */
#define MIN_KV_BYTES 13u
#define MIN_TENSOR_INFO_BYTES 24u
#define MIN_STRING_BYTES 8u
#define MIN_ARRAY_BYTES 12u
/* How much of a hostile key or tensor name goes into an error message. */
#define NAME_SHOWN 96

typedef struct parser {
    const uint8_t *p;
    uint64_t size;
    uint64_t pos;
    uint64_t allocated; /* bytes handed out by parser_alloc */
} parser;

/* ---- bounds-checked reads -------------------------------------------------------------- */

static uint64_t bytes_left(const parser *ps) { return ps->size - ps->pos; }

static vkllm_status need(const parser *ps, uint64_t n, const char *what)
{
    if (n > bytes_left(ps))
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "truncated file: %s at offset %" PRIu64 " needs %" PRIu64
                       " bytes, %" PRIu64 " left",
                       what, ps->pos, n, bytes_left(ps));
    return VKLLM_OK;
}

static uint64_t le_bytes(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static vkllm_status read_u32(parser *ps, uint32_t *out, const char *what)
{
    vkllm_status st = need(ps, 4, what);
    if (st)
        return st;
    *out = (uint32_t)le_bytes(ps->p + ps->pos, 4);
    ps->pos += 4;
    return VKLLM_OK;
}

static vkllm_status read_u64(parser *ps, uint64_t *out, const char *what)
{
    vkllm_status st = need(ps, 8, what);
    if (st)
        return st;
    *out = le_bytes(ps->p + ps->pos, 8);
    ps->pos += 8;
    return VKLLM_OK;
}

static vkllm_status read_str(parser *ps, gguf_str *out, const char *what)
{
    uint64_t len;
    vkllm_status st = read_u64(ps, &len, what);
    if (st)
        return st;
    if (len > bytes_left(ps))
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "%s at offset %" PRIu64 " has length %" PRIu64
                       ", past the end of the file (%" PRIu64 " bytes left)",
                       what, ps->pos - 8, len, bytes_left(ps));
    out->data = (const char *)ps->p + ps->pos;
    out->len = len;
    ps->pos += len;
    return VKLLM_OK;
}

/* Zeroed memory for `count` items, counted against GGUF_MAX_META_ALLOC. NULL for
 * count 0 is not an error; the caller sets *st. */
static void *parser_alloc(parser *ps, uint64_t count, size_t item, vkllm_status *st)
{
    *st = VKLLM_OK;
    if (count == 0)
        return NULL;
    if (count > GGUF_MAX_META_ALLOC / item ||
        ps->allocated + count * item > GGUF_MAX_META_ALLOC) {
        *st = vk_fail(VKLLM_ERR_BAD_FILE,
                      "metadata would need more than %llu bytes of memory (at offset %" PRIu64
                      ")",
                      (unsigned long long)GGUF_MAX_META_ALLOC, ps->pos);
        return NULL;
    }
    void *mem = calloc(count, item);
    if (!mem) {
        *st = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory reading GGUF metadata");
        return NULL;
    }
    ps->allocated += count * item;
    return mem;
}

/* A NUL-terminated copy of a key or tensor name; names with a NUL byte inside are
 * rejected (the copy would silently be a different name). */
static vkllm_status copy_name(parser *ps, gguf_str s, uint64_t at, const char *what,
                              char **out)
{
    vkllm_status st;
    if (memchr(s.data, 0, s.len))
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s at offset %" PRIu64 " contains a NUL byte",
                       what, at);
    char *c = parser_alloc(ps, s.len + 1, 1, &st);
    if (!c)
        return st;
    memcpy(c, s.data, s.len);
    c[s.len] = '\0';
    *out = c;
    return VKLLM_OK;
}

/* ---- lookup by name ------------------------------------------------------------------- */

typedef const char *(*name_of_fn)(const gguf_file *f, uint64_t i);

static const char *kv_name_of(const gguf_file *f, uint64_t i) { return f->kv[i].key; }
static const char *tensor_name_of(const gguf_file *f, uint64_t i) { return f->tensors[i].name; }

typedef struct name_ref {
    const char *name;
    uint32_t index;
} name_ref;

static int compare_name_refs(const void *a, const void *b)
{
    const name_ref *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* Sorts the indexes of the n entries by name into *out. When two entries share a name,
 * *dup is the index of the later one and *first that of the earlier one; else *dup = -1. */
static vkllm_status sort_by_name(parser *ps, const gguf_file *f, uint64_t n, name_of_fn name_of,
                                 uint32_t **out, int64_t *first, int64_t *dup)
{
    vkllm_status st;
    *dup = -1;
    *out = parser_alloc(ps, n, sizeof **out, &st);
    if (st)
        return st;
    name_ref *refs = parser_alloc(ps, n, sizeof *refs, &st);
    if (st)
        return st;
    for (uint64_t i = 0; i < n; i++)
        refs[i] = (name_ref){name_of(f, i), (uint32_t)i};
    if (n > 1)
        qsort(refs, n, sizeof *refs, compare_name_refs);
    for (uint64_t i = 0; i < n; i++) {
        (*out)[i] = refs[i].index;
        if (i > 0 && *dup < 0 && strcmp(refs[i - 1].name, refs[i].name) == 0) {
            *first = refs[i - 1].index;
            *dup = refs[i].index;
        }
    }
    free(refs);
    return VKLLM_OK;
}

static int64_t find_index(const uint32_t *sorted, uint64_t n, const char *name,
                          name_of_fn name_of, const gguf_file *f)
{
    if (!sorted) { /* a gguf_file built by hand */
        for (uint64_t i = 0; i < n; i++)
            if (name_of(f, i) && strcmp(name_of(f, i), name) == 0)
                return (int64_t)i;
        return -1;
    }
    uint64_t lo = 0, hi = n;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name_of(f, sorted[mid]), name);
        if (c == 0)
            return sorted[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* ---- values ---------------------------------------------------------------------------- */

size_t gguf_value_size(uint32_t type)
{
    switch (type) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

const char *gguf_value_type_name(uint32_t type)
{
    static const char *const names[GGUF_VALUE_TYPE_COUNT] = {
        "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
        "bool", "string", "array", "uint64", "int64", "float64"};
    return type < GGUF_VALUE_TYPE_COUNT ? names[type] : "unknown";
}

static int is_unsigned(uint32_t t)
{
    return t == GGUF_UINT8 || t == GGUF_UINT16 || t == GGUF_UINT32 || t == GGUF_UINT64 ||
           t == GGUF_BOOL;
}

static int is_signed(uint32_t t)
{
    return t == GGUF_INT8 || t == GGUF_INT16 || t == GGUF_INT32 || t == GGUF_INT64;
}

static int is_float(uint32_t t) { return t == GGUF_FLOAT32 || t == GGUF_FLOAT64; }

/* Decodes one little-endian scalar of `type` at p into whichever of u/i/f fits. */
static void decode_scalar(uint32_t type, const uint8_t *p, uint64_t *u, int64_t *i, double *f)
{
    uint64_t raw = le_bytes(p, (unsigned)gguf_value_size(type));
    switch (type) {
    case GGUF_BOOL: *u = raw != 0; break;
    case GGUF_UINT8: case GGUF_UINT16: case GGUF_UINT32: case GGUF_UINT64: *u = raw; break;
    case GGUF_INT8: *i = (int8_t)(uint8_t)raw; break;
    case GGUF_INT16: *i = (int16_t)(uint16_t)raw; break;
    case GGUF_INT32: *i = (int32_t)(uint32_t)raw; break;
    case GGUF_INT64: memcpy(i, &raw, 8); break;
    case GGUF_FLOAT32: {
        uint32_t b = (uint32_t)raw;
        float x;
        memcpy(&x, &b, 4);
        *f = x;
        break;
    }
    case GGUF_FLOAT64: memcpy(f, &raw, 8); break;
    default: break;
    }
}

static void free_array(gguf_array *a)
{
    if (a->arrays)
        for (uint64_t i = 0; i < a->n; i++)
            free_array(&a->arrays[i]);
    free(a->arrays);
    free(a->strings);
}

static vkllm_status parse_array(parser *ps, gguf_array *a, int depth)
{
    vkllm_status st;
    uint64_t at = ps->pos;
    uint32_t et;
    uint64_t n;
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "arrays nested deeper than %d levels at offset %" PRIu64,
                       GGUF_MAX_ARRAY_DEPTH, at);
    if ((st = read_u32(ps, &et, "array element type")) ||
        (st = read_u64(ps, &n, "array length")))
        return st;
    if (et >= GGUF_VALUE_TYPE_COUNT)
        return vk_fail(VKLLM_ERR_BAD_FILE, "array at offset %" PRIu64
                       " has unknown element type %" PRIu32, at, et);
    a->elem_type = et;

    size_t es = gguf_value_size(et);
    uint64_t min_bytes = es ? es : et == GGUF_STRING ? MIN_STRING_BYTES : MIN_ARRAY_BYTES;
    if (n > bytes_left(ps) / min_bytes)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "array at offset %" PRIu64 " claims %" PRIu64 " %s elements, more than"
                       " the %" PRIu64 " bytes left can hold",
                       at, n, gguf_value_type_name(et), bytes_left(ps));

    if (es) { /* scalars stay in the mapping */
        a->n = n;
        a->data = ps->p + ps->pos;
        ps->pos += n * es;
        return VKLLM_OK;
    }
    if (et == GGUF_STRING) {
        a->strings = parser_alloc(ps, n, sizeof *a->strings, &st);
        if (st)
            return st;
        a->n = n;
        /* The hot loop for tokenizer vocabularies (100k+ strings): the entries point
         * into the mapping, nothing is copied. */
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if (bytes_left(ps) < 8)
                return need(ps, 8, "string length in array");
            len = le_bytes(ps->p + ps->pos, 8);
            ps->pos += 8;
            if (len > bytes_left(ps))
                return vk_fail(VKLLM_ERR_BAD_FILE,
                               "string %" PRIu64 " of the array at offset %" PRIu64
                               " has length %" PRIu64 ", past the end of the file"
                               " (%" PRIu64 " bytes left)",
                               i, at, len, bytes_left(ps));
            a->strings[i].data = (const char *)ps->p + ps->pos;
            a->strings[i].len = len;
            ps->pos += len;
        }
        return VKLLM_OK;
    }
    /* arrays of arrays */
    a->arrays = parser_alloc(ps, n, sizeof *a->arrays, &st);
    if (st)
        return st;
    a->n = n;
    for (uint64_t i = 0; i < n; i++)
        if ((st = parse_array(ps, &a->arrays[i], depth + 1)))
            return st;
    return VKLLM_OK;
}

static vkllm_status parse_value(parser *ps, gguf_kv *kv)
{
    size_t es = gguf_value_size(kv->type);
    if (es) {
        vkllm_status st = need(ps, es, gguf_value_type_name(kv->type));
        if (st)
            return st;
        decode_scalar(kv->type, ps->p + ps->pos, &kv->v.u, &kv->v.i, &kv->v.f);
        ps->pos += es;
        return VKLLM_OK;
    }
    if (kv->type == GGUF_STRING)
        return read_str(ps, &kv->v.s, "string value");
    return parse_array(ps, &kv->v.a, 1);
}

/* ---- the file -------------------------------------------------------------------------- */

static vkllm_status parse_header(parser *ps, gguf_file *f, uint64_t *n_tensors,
                                 uint64_t *n_kv)
{
    vkllm_status st;
    if (ps->size < 4)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "not a GGUF file: %" PRIu64 " bytes, too short for the \"GGUF\" magic",
                       ps->size);
    if (memcmp(ps->p, "GGUF", 4) != 0)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "not a GGUF file: magic is %02x %02x %02x %02x, expected \"GGUF\"",
                       ps->p[0], ps->p[1], ps->p[2], ps->p[3]);
    ps->pos = 4;
    if ((st = read_u32(ps, &f->version, "header version")))
        return st;
    if (f->version == 1)
        return vk_fail(VKLLM_ERR_BAD_FILE, "GGUF version 1 is not supported (only versions 2"
                       " and 3; convert the file with a newer llama.cpp)");
    if (f->version != 2 && f->version != 3) {
        if ((f->version & 0xffffu) == 0)
            return vk_fail(VKLLM_ERR_BAD_FILE, "GGUF version 0x%08" PRIx32 " looks like a"
                           " big-endian file, which is not supported", f->version);
        return vk_fail(VKLLM_ERR_BAD_FILE, "unsupported GGUF version %" PRIu32
                       " (only versions 2 and 3)", f->version);
    }
    if ((st = read_u64(ps, n_tensors, "header tensor count")) ||
        (st = read_u64(ps, n_kv, "header key/value count")))
        return st;
    if (*n_kv > GGUF_MAX_KV || *n_kv > bytes_left(ps) / MIN_KV_BYTES)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "header claims %" PRIu64 " key/value pairs; the %" PRIu64
                       " bytes left hold at most %" PRIu64 " (limit %u)",
                       *n_kv, bytes_left(ps), bytes_left(ps) / MIN_KV_BYTES, GGUF_MAX_KV);
    if (*n_tensors > GGUF_MAX_TENSORS ||
        *n_tensors > bytes_left(ps) / MIN_TENSOR_INFO_BYTES)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "header claims %" PRIu64 " tensors; the %" PRIu64
                       " bytes left hold at most %" PRIu64 " (limit %u)",
                       *n_tensors, bytes_left(ps), bytes_left(ps) / MIN_TENSOR_INFO_BYTES,
                       GGUF_MAX_TENSORS);
    return VKLLM_OK;
}

static vkllm_status parse_kvs(parser *ps, gguf_file *f, uint64_t n_kv)
{
    vkllm_status st;
    f->kv = parser_alloc(ps, n_kv, sizeof *f->kv, &st);
    if (st)
        return st;
    f->n_kv = n_kv;
    uint64_t *offsets = parser_alloc(ps, n_kv, sizeof *offsets, &st); /* for messages */
    if (st)
        return st;
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &f->kv[i];
        uint64_t at = offsets[i] = ps->pos;
        gguf_str key = {0};
        if ((st = read_str(ps, &key, "key")) || (st = copy_name(ps, key, at, "key", &kv->key))) {
            free(offsets);
            return vk_fail_prefix(st, "key #%" PRIu64, i);
        }
        st = read_u32(ps, &kv->type, "value type");
        if (!st && kv->type >= GGUF_VALUE_TYPE_COUNT)
            st = vk_fail(VKLLM_ERR_BAD_FILE, "unknown value type %" PRIu32, kv->type);
        if (!st)
            st = parse_value(ps, kv);
        if (st) {
            free(offsets);
            return vk_fail_prefix(st, "key '%.*s' (at offset %" PRIu64 ")", NAME_SHOWN,
                                  kv->key, at);
        }
    }
    int64_t first, dup;
    st = sort_by_name(ps, f, n_kv, kv_name_of, &f->kv_by_name, &first, &dup);
    if (!st && dup >= 0)
        st = vk_fail(VKLLM_ERR_BAD_FILE,
                     "duplicate key '%.*s' at offsets %" PRIu64 " and %" PRIu64, NAME_SHOWN,
                     f->kv[dup].key, offsets[first], offsets[dup]);
    free(offsets);
    return st;
}

static vkllm_status read_alignment(gguf_file *f)
{
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *kv = gguf_find(f, "general.alignment");
    if (!kv)
        return VKLLM_OK;
    if (kv->type != GGUF_UINT32)
        return vk_fail(VKLLM_ERR_BAD_FILE, "general.alignment has type %s, expected uint32",
                       gguf_value_type_name(kv->type));
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "general.alignment is %" PRIu64 ", not a power of two", kv->v.u);
    f->alignment = (uint32_t)kv->v.u;
    return VKLLM_OK;
}

/* Tensor size in bytes from its shape and type, with every overflow checked. */
static vkllm_status tensor_bytes(const gguf_tensor *t, uint64_t *out)
{
    ggml_type_traits tr = ggml_traits(t->type);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] > (uint64_t)INT64_MAX)
            return vk_fail(VKLLM_ERR_BAD_FILE, "dimension %u is %" PRIu64 ", too large", d,
                           t->ne[d]);
        if (t->ne[d] != 0 && elems > (uint64_t)INT64_MAX / t->ne[d])
            return vk_fail(VKLLM_ERR_BAD_FILE,
                           "element count %" PRIu64 " x %" PRIu64 " x %" PRIu64 " x %" PRIu64
                           " overflows",
                           t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
        elems *= t->ne[d];
    }
    if (t->ne[0] % tr.block_size != 0)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "row of %" PRIu64 " weights is not a multiple of the %s block size %"
                       PRIu32, t->ne[0], tr.name, tr.block_size);
    uint64_t bytes = ggml_row_bytes(t->type, t->ne[0]);
    if (bytes == 0 && t->ne[0] != 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "row of %" PRIu64 " %s weights overflows",
                       t->ne[0], tr.name);
    for (uint32_t d = 1; d < GGUF_MAX_DIMS; d++) {
        if (t->ne[d] != 0 && bytes > UINT64_MAX / t->ne[d])
            return vk_fail(VKLLM_ERR_BAD_FILE, "byte size of %" PRIu64 " x %" PRIu64 " x %"
                           PRIu64 " x %" PRIu64 " %s overflows",
                           t->ne[0], t->ne[1], t->ne[2], t->ne[3], tr.name);
        bytes *= t->ne[d];
    }
    *out = bytes;
    return VKLLM_OK;
}

static vkllm_status parse_tensor_info(parser *ps, gguf_file *f, uint64_t i, uint64_t at)
{
    vkllm_status st;
    gguf_tensor *t = &f->tensors[i];
    gguf_str name = {0};
    if ((st = read_str(ps, &name, "tensor name")))
        return vk_fail_prefix(st, "tensor #%" PRIu64, i);
    if ((st = copy_name(ps, name, at, "tensor name", &t->name)))
        return vk_fail_prefix(st, "tensor #%" PRIu64, i);
    if ((st = read_u32(ps, &t->n_dims, "dimension count")))
        goto fail;
    if (t->n_dims > GGUF_MAX_DIMS) {
        st = vk_fail(VKLLM_ERR_BAD_FILE, "%" PRIu32 " dimensions, at most %d are allowed",
                     t->n_dims, GGUF_MAX_DIMS);
        goto fail;
    }
    for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && (st = read_u64(ps, &t->ne[d], "dimension")))
            goto fail;
    }
    if ((st = read_u32(ps, &t->type, "tensor type")))
        goto fail;
    if (!ggml_traits(t->type).name) {
        st = vk_fail(VKLLM_ERR_BAD_FILE, "unknown ggml type %" PRIu32, t->type);
        goto fail;
    }
    if ((st = read_u64(ps, &t->offset, "tensor data offset")))
        goto fail;
    if (t->offset % f->alignment != 0) {
        st = vk_fail(VKLLM_ERR_BAD_FILE, "data offset %" PRIu64
                     " is not a multiple of the alignment %" PRIu32, t->offset, f->alignment);
        goto fail;
    }
    if ((st = tensor_bytes(t, &t->size)))
        goto fail;
    return VKLLM_OK;
fail:
    return vk_fail_prefix(st, "tensor '%.*s' (info at offset %" PRIu64 ")", NAME_SHOWN,
                          t->name, at);
}

static vkllm_status parse_tensors(parser *ps, gguf_file *f, uint64_t n_tensors)
{
    vkllm_status st;
    /* The header check counted these bytes from before the key/value pairs; now that
     * those are read, check again against what is really left. */
    if (n_tensors > bytes_left(ps) / MIN_TENSOR_INFO_BYTES)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "header claims %" PRIu64 " tensors, but only %" PRIu64
                       " bytes are left for their infos at offset %" PRIu64,
                       n_tensors, bytes_left(ps), ps->pos);
    f->tensors = parser_alloc(ps, n_tensors, sizeof *f->tensors, &st);
    if (st)
        return st;
    f->n_tensors = n_tensors;
    uint64_t *offsets = parser_alloc(ps, n_tensors, sizeof *offsets, &st); /* for messages */
    if (st)
        return st;
    for (uint64_t i = 0; i < n_tensors && !st; i++)
        st = parse_tensor_info(ps, f, i, offsets[i] = ps->pos);
    int64_t first, dup;
    if (!st)
        st = sort_by_name(ps, f, n_tensors, tensor_name_of, &f->tensors_by_name, &first, &dup);
    if (!st && dup >= 0)
        st = vk_fail(VKLLM_ERR_BAD_FILE,
                     "duplicate tensor '%.*s' at offsets %" PRIu64 " and %" PRIu64, NAME_SHOWN,
                     f->tensors[dup].name, offsets[first], offsets[dup]);
    free(offsets);
    if (st)
        return st;

    /* The data section starts at the next multiple of the alignment. A file without
     * tensors may end before that padding (llama.cpp's vocab-only files do); its
     * data_offset then lies past the end, as in other readers, and nothing uses it. */
    uint64_t pad = (f->alignment - ps->pos % f->alignment) % f->alignment;
    f->data_offset = ps->pos + pad;
    if (n_tensors == 0)
        return VKLLM_OK;
    if (pad > bytes_left(ps))
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "truncated file: the data section would start at offset %" PRIu64
                       ", past the end of the file (%" PRIu64 " bytes)",
                       f->data_offset, ps->size);
    uint64_t data_bytes = ps->size - f->data_offset;
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor *t = &f->tensors[i];
        if (t->offset > data_bytes || t->size > data_bytes - t->offset)
            return vk_fail(VKLLM_ERR_BAD_FILE,
                           "tensor '%.*s': its %" PRIu64 " bytes at data offset %" PRIu64
                           " (data section at %" PRIu64 ") run past the end of the file (%"
                           PRIu64 " bytes)",
                           NAME_SHOWN, t->name, t->size, t->offset, f->data_offset, ps->size);
        t->data = ps->p + f->data_offset + t->offset;
    }
    return VKLLM_OK;
}

vkllm_status gguf_parse(const uint8_t *data, uint64_t size, gguf_file **out)
{
    vkllm_status st;
    uint64_t n_tensors = 0, n_kv = 0;
    *out = NULL;
    if (!data && size)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "gguf_parse: NULL data");
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory reading GGUF");
    f->map = data;
    f->map_size = size;
    parser ps = {data, size, 0, 0};
    if ((st = parse_header(&ps, f, &n_tensors, &n_kv)) || (st = parse_kvs(&ps, f, n_kv)) ||
        (st = read_alignment(f)) || (st = parse_tensors(&ps, f, n_tensors))) {
        gguf_close(f);
        return st;
    }
    *out = f;
    return VKLLM_OK;
}

vkllm_status gguf_open(const char *path, gguf_file **out)
{
    struct stat sb;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vk_fail(VKLLM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return vk_fail(VKLLM_ERR_IO, "cannot stat '%s': %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return vk_fail(VKLLM_ERR_IO, "'%s' is not a regular file", path);
    }
    if (sb.st_size == 0) {
        close(fd);
        return vk_fail(VKLLM_ERR_BAD_FILE, "'%s' is empty, not a GGUF file", path);
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size > SIZE_MAX) {
        close(fd);
        return vk_fail(VKLLM_ERR_IO, "'%s' (%" PRIu64 " bytes) is too large to map", path, size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return vk_fail(VKLLM_ERR_IO, "cannot map '%s' (%" PRIu64 " bytes): %s", path, size,
                       strerror(map_errno));
    gguf_file *f;
    vkllm_status st = gguf_parse(map, size, &f);
    if (st) {
        munmap(map, (size_t)size);
        return vk_fail_prefix(st, "%s", path);
    }
    f->owns_map = 1;
    *out = f;
    return VKLLM_OK;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    for (uint64_t i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        if (f->kv[i].type == GGUF_ARRAY)
            free_array(&f->kv[i].v.a);
    }
    free(f->kv);
    free(f->kv_by_name);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->tensors_by_name);
    if (f->owns_map)
        munmap((void *)f->map, (size_t)f->map_size);
    if (f->release)
        f->release(f->owner);
    free(f);
}

/* ---- lookups and getters --------------------------------------------------------------- */

const gguf_kv *gguf_find(const gguf_file *f, const char *key)
{
    int64_t i = f && key ? find_index(f->kv_by_name, f->n_kv, key, kv_name_of, f) : -1;
    return i < 0 ? NULL : &f->kv[i];
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    int64_t i = f && name ? find_index(f->tensors_by_name, f->n_tensors, name, tensor_name_of, f)
                          : -1;
    return i < 0 ? NULL : &f->tensors[i];
}

static vkllm_status find_kv(const gguf_file *f, const char *key, const gguf_kv **out)
{
    *out = gguf_find(f, key);
    if (!*out)
        return vk_fail(VKLLM_ERR_NOT_FOUND, "metadata key '%s' not found", key ? key : "(null)");
    return VKLLM_OK;
}

static vkllm_status wrong_type(const gguf_kv *kv, const char *expected)
{
    return vk_fail(VKLLM_ERR_BAD_FILE, "metadata key '%s' has type %s, expected %s", kv->key,
                   gguf_value_type_name(kv->type), expected);
}

vkllm_status gguf_get_u64(const gguf_file *f, const char *key, uint64_t *out)
{
    const gguf_kv *kv;
    vkllm_status st = find_kv(f, key, &kv);
    if (st)
        return st;
    if (is_unsigned(kv->type)) {
        *out = kv->v.u;
        return VKLLM_OK;
    }
    if (is_signed(kv->type)) {
        if (kv->v.i < 0)
            return vk_fail(VKLLM_ERR_BAD_FILE, "metadata key '%s' is %" PRId64
                           ", expected a non-negative integer", kv->key, kv->v.i);
        *out = (uint64_t)kv->v.i;
        return VKLLM_OK;
    }
    return wrong_type(kv, "an integer");
}

vkllm_status gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv;
    vkllm_status st = find_kv(f, key, &kv);
    if (st)
        return st;
    if (is_signed(kv->type)) {
        *out = kv->v.i;
        return VKLLM_OK;
    }
    if (is_unsigned(kv->type)) {
        if (kv->v.u > (uint64_t)INT64_MAX)
            return vk_fail(VKLLM_ERR_BAD_FILE, "metadata key '%s' is %" PRIu64
                           ", too large for a signed 64-bit integer", kv->key, kv->v.u);
        *out = (int64_t)kv->v.u;
        return VKLLM_OK;
    }
    return wrong_type(kv, "an integer");
}

vkllm_status gguf_get_f64(const gguf_file *f, const char *key, double *out)
{
    const gguf_kv *kv;
    vkllm_status st = find_kv(f, key, &kv);
    if (st)
        return st;
    if (is_float(kv->type))
        *out = kv->v.f;
    else if (is_unsigned(kv->type))
        *out = (double)kv->v.u;
    else if (is_signed(kv->type))
        *out = (double)kv->v.i;
    else
        return wrong_type(kv, "a number");
    return VKLLM_OK;
}

vkllm_status gguf_get_str(const gguf_file *f, const char *key, gguf_str *out)
{
    const gguf_kv *kv;
    vkllm_status st = find_kv(f, key, &kv);
    if (st)
        return st;
    if (kv->type != GGUF_STRING)
        return wrong_type(kv, "string");
    *out = kv->v.s;
    return VKLLM_OK;
}

vkllm_status gguf_get_arr(const gguf_file *f, const char *key, const gguf_array **out)
{
    const gguf_kv *kv;
    vkllm_status st = find_kv(f, key, &kv);
    if (st)
        return st;
    if (kv->type != GGUF_ARRAY)
        return wrong_type(kv, "array");
    *out = &kv->v.a;
    return VKLLM_OK;
}

/* Element conversions saturate: a negative value read as unsigned gives 0, an
 * out-of-range float gives the nearest limit, NaN gives 0. Out-of-range indexes and
 * non-scalar arrays give 0. */
static int array_elem(const gguf_array *a, uint64_t i, uint64_t *u, int64_t *s, double *f)
{
    size_t es = a ? gguf_value_size(a->elem_type) : 0;
    if (!es || !a->data || i >= a->n)
        return -1;
    decode_scalar(a->elem_type, a->data + i * es, u, s, f);
    return 0;
}

uint64_t gguf_arr_u64(const gguf_array *a, uint64_t i)
{
    uint64_t u = 0;
    int64_t s = 0;
    double f = 0;
    if (array_elem(a, i, &u, &s, &f))
        return 0;
    if (is_unsigned(a->elem_type))
        return u;
    if (is_signed(a->elem_type))
        return s < 0 ? 0 : (uint64_t)s;
    if (!(f > 0))
        return 0;
    return f >= 18446744073709551616.0 ? UINT64_MAX : (uint64_t)f;
}

int64_t gguf_arr_i64(const gguf_array *a, uint64_t i)
{
    uint64_t u = 0;
    int64_t s = 0;
    double f = 0;
    if (array_elem(a, i, &u, &s, &f))
        return 0;
    if (is_signed(a->elem_type))
        return s;
    if (is_unsigned(a->elem_type))
        return u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)u;
    if (f != f)
        return 0;
    if (f >= 9223372036854775808.0)
        return INT64_MAX;
    if (f < -9223372036854775808.0)
        return INT64_MIN;
    return (int64_t)f;
}

double gguf_arr_f64(const gguf_array *a, uint64_t i)
{
    uint64_t u = 0;
    int64_t s = 0;
    double f = 0;
    if (array_elem(a, i, &u, &s, &f))
        return 0;
    if (is_unsigned(a->elem_type))
        return (double)u;
    if (is_signed(a->elem_type))
        return (double)s;
    return f;
}
