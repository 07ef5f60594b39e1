/* safetensors reader; see safetensors.h for the layout.
 *
 * Order of checks: the 8-byte length against the file and ST_MAX_HEADER; the header as
 * strict JSON (json.c: duplicate names are duplicate keys and fail there); each entry's
 * fields and types; each tensor's byte size from dtype x shape with every product
 * overflow-checked, against its data_offsets; the offsets against the data section; and
 * finally no two tensors' byte ranges overlap. Failures name the tensor. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "json.h"

#define NAME_SHOWN 96

static const struct {
    const char *name;
    uint32_t size;
} dtypes[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1}, [ST_U8] = {"U8", 1},   [ST_I8] = {"I8", 1},
    [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_F8_E4M3] = {"F8_E4M3", 1},
    [ST_I16] = {"I16", 2},   [ST_U16] = {"U16", 2}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},   [ST_U32] = {"U32", 4}, [ST_F32] = {"F32", 4},
    [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8}, [ST_U64] = {"U64", 8},
};

const char *st_dtype_name(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].name : "?"; }
uint32_t st_dtype_size(st_dtype t) { return (unsigned)t < ST_DTYPE_COUNT ? dtypes[t].size : 0; }

static int dtype_from_name(const char *s, st_dtype *out)
{
    for (int i = 0; i < ST_DTYPE_COUNT; i++)
        if (!strcmp(s, dtypes[i].name)) {
            *out = (st_dtype)i;
            return 1;
        }
    return 0;
}

static char *copy_str(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

/* A JSON number that is a non-negative integer (exactly representable: json.c keeps
 * integers written without fraction or exponent exactly). */
static int json_u64(const json_value *v, uint64_t *out)
{
    if (!v || v->type != JSON_NUMBER || !v->u.num.is_int || v->u.num.i < 0)
        return 0;
    *out = (uint64_t)v->u.num.i;
    return 1;
}

static vkllm_status tensor_error(const char *name, const char *fmt, const char *detail)
{
    return vk_fail(VKLLM_ERR_BAD_FILE, "tensor '%.*s': %s%s", NAME_SHOWN, name, fmt, detail ? detail : "");
}

static vkllm_status parse_metadata(st_file *f, const json_value *v)
{
    if (v->type != JSON_OBJECT)
        return vk_fail(VKLLM_ERR_BAD_FILE, "__metadata__ is %s, expected an object of strings",
                       json_type_name(v->type));
    f->meta = calloc(v->n ? v->n : 1, sizeof *f->meta);
    if (!f->meta)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    for (uint32_t i = 0; i < v->n; i++) {
        const json_member *m = &v->u.members[i];
        if (m->value.type != JSON_STRING)
            return vk_fail(VKLLM_ERR_BAD_FILE, "__metadata__ key '%.*s' is %s, expected a string", NAME_SHOWN,
                           m->key, json_type_name(m->value.type));
        st_meta *e = &f->meta[f->n_meta++];
        e->key = copy_str(m->key, m->key_len);
        e->value = copy_str(m->value.u.str, m->value.n);
        if (!e->key || !e->value)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    }
    return VKLLM_OK;
}

/* One tensor entry: fields, byte size, bounds. */
static vkllm_status parse_tensor(st_file *f, const json_member *m, st_tensor *t)
{
    const char *name = m->key;
    char detail[160];
    if (m->key_len == 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "a tensor has an empty name");
    if (strlen(name) != m->key_len)
        return tensor_error(name, "the name contains a NUL character", NULL);
    if (m->value.type != JSON_OBJECT) {
        snprintf(detail, sizeof detail, "%s", json_type_name(m->value.type));
        return tensor_error(name, "the entry is not an object but ", detail);
    }
    t->name = copy_str(name, m->key_len);
    if (!t->name)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");

    const json_value *dtype = json_get(&m->value, "dtype");
    const json_value *shape = json_get(&m->value, "shape");
    const json_value *offsets = json_get(&m->value, "data_offsets");
    if (!dtype || dtype->type != JSON_STRING)
        return tensor_error(name, dtype ? "\"dtype\" is not a string" : "no \"dtype\"", NULL);
    if (!dtype_from_name(dtype->u.str, &t->dtype)) {
        snprintf(detail, sizeof detail, "'%.40s' (known: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, "
                 "I32, U32, F32, F64, I64, U64)", dtype->u.str);
        return tensor_error(name, "unknown dtype ", detail);
    }
    if (!shape || shape->type != JSON_ARRAY)
        return tensor_error(name, shape ? "\"shape\" is not an array" : "no \"shape\"", NULL);
    if (shape->n > ST_MAX_DIMS) {
        snprintf(detail, sizeof detail, "%u dimensions, at most %d", shape->n, ST_MAX_DIMS);
        return tensor_error(name, "shape has ", detail);
    }
    t->n_dims = shape->n;
    int empty = 0;
    for (uint32_t d = 0; d < shape->n; d++) {
        if (!json_u64(&shape->u.items[d], &t->shape[d])) {
            snprintf(detail, sizeof detail, "%u is not a non-negative integer", d);
            return tensor_error(name, "shape entry ", detail);
        }
        empty |= t->shape[d] == 0;
    }
    uint64_t elems = empty ? 0 : 1; /* a zero dimension makes the product empty, whatever the others */
    int overflow = 0;
    for (uint32_t d = 0; !empty && d < shape->n; d++) {
        if (elems > UINT64_MAX / t->shape[d])
            overflow = 1;
        else
            elems *= t->shape[d];
    }
    uint64_t es = st_dtype_size(t->dtype);
    if (overflow || elems > UINT64_MAX / es)
        return tensor_error(name, "the byte size of its shape overflows 64 bits", NULL);
    uint64_t bytes = elems * es;

    if (!offsets || offsets->type != JSON_ARRAY || offsets->n != 2)
        return tensor_error(name, offsets ? "\"data_offsets\" is not an array of two integers"
                                          : "no \"data_offsets\"", NULL);
    if (!json_u64(&offsets->u.items[0], &t->begin) || !json_u64(&offsets->u.items[1], &t->end))
        return tensor_error(name, "\"data_offsets\" are not non-negative integers", NULL);
    if (t->end < t->begin) {
        snprintf(detail, sizeof detail, "[%" PRIu64 ", %" PRIu64 "] end before they begin", t->begin, t->end);
        return tensor_error(name, "data_offsets ", detail);
    }
    t->size = t->end - t->begin;
    if (t->size != bytes) {
        char dims[96] = "";
        size_t n = 0;
        for (uint32_t d = 0; d < t->n_dims && n < sizeof dims - 24; d++)
            n += (size_t)snprintf(dims + n, sizeof dims - n, "%s%" PRIu64, d ? ", " : "", t->shape[d]);
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                       " bytes, but %s x shape [%s] needs %" PRIu64,
                       NAME_SHOWN, name, t->begin, t->end, t->size, st_dtype_name(t->dtype), dims, bytes);
    }
    uint64_t data_bytes = f->map_size - f->data_offset;
    if (t->end > data_bytes)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tensor '%.*s': data_offsets [%" PRIu64 ", %" PRIu64 "] run past the end of the data "
                       "section (%" PRIu64 " bytes from offset %" PRIu64 ")",
                       NAME_SHOWN, name, t->begin, t->end, data_bytes, f->data_offset);
    t->data = f->map + f->data_offset + t->begin;
    return VKLLM_OK;
}

typedef struct range_ref {
    uint64_t begin, end;
    uint32_t index;
} range_ref;

static int compare_ranges(const void *a, const void *b)
{
    const range_ref *x = a, *y = b;
    if (x->begin != y->begin)
        return (x->begin > y->begin) - (x->begin < y->begin);
    return (x->index > y->index) - (x->index < y->index);
}

typedef struct name_ref {
    const char *name;
    uint32_t index;
} name_ref;

static int compare_names(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

/* No two non-empty tensors may share a byte (gaps are allowed). */
static vkllm_status check_overlaps(const st_file *f)
{
    range_ref *r = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *r);
    if (!r)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    uint64_t n = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (f->tensors[i].size)
            r[n++] = (range_ref){f->tensors[i].begin, f->tensors[i].end, (uint32_t)i};
    qsort(r, n, sizeof *r, compare_ranges);
    vkllm_status s = VKLLM_OK;
    for (uint64_t i = 1; i < n && !s; i++)
        if (r[i].begin < r[i - 1].end)
            s = vk_fail(VKLLM_ERR_BAD_FILE,
                        "tensor '%.*s' (bytes %" PRIu64 "..%" PRIu64 ") overlaps tensor '%.*s' (bytes %" PRIu64
                        "..%" PRIu64 ")",
                        NAME_SHOWN, f->tensors[r[i].index].name, r[i].begin, r[i].end, NAME_SHOWN,
                        f->tensors[r[i - 1].index].name, r[i - 1].begin, r[i - 1].end);
    free(r);
    return s;
}

static vkllm_status parse_header(st_file *f, const json_value *root)
{
    if (root->type != JSON_OBJECT)
        return vk_fail(VKLLM_ERR_BAD_FILE, "the header is %s, expected an object", json_type_name(root->type));
    uint64_t n = root->n;
    const json_value *meta = json_get(root, "__metadata__");
    if (meta)
        n--;
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->by_name = calloc(n ? n : 1, sizeof *f->by_name);
    if (!f->tensors || !f->by_name)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s;
    if (meta && (s = parse_metadata(f, meta)))
        return s;
    for (uint32_t i = 0; i < root->n; i++) {
        const json_member *m = &root->u.members[i];
        if (&m->value == meta)
            continue;
        s = parse_tensor(f, m, &f->tensors[f->n_tensors]);
        f->n_tensors++; /* counted even on failure so st_close frees the name */
        if (s)
            return s;
    }
    /* Names are unique (json.c rejects duplicate keys); sort them for st_find. */
    name_ref *refs = malloc((f->n_tensors ? f->n_tensors : 1) * sizeof *refs);
    if (!refs)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    for (uint64_t i = 0; i < f->n_tensors; i++)
        refs[i] = (name_ref){f->tensors[i].name, (uint32_t)i};
    qsort(refs, f->n_tensors, sizeof *refs, compare_names);
    for (uint64_t i = 0; i < f->n_tensors; i++)
        f->by_name[i] = refs[i].index;
    free(refs);
    return check_overlaps(f);
}

vkllm_status st_parse(const uint8_t *data, uint64_t size, st_file **out)
{
    *out = NULL;
    if (!data && size)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "st_parse: NULL data");
    if (size < 8)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "not a safetensors file: %" PRIu64 " bytes, too short for the 8-byte header length", size);
    uint64_t n = 0;
    for (int i = 0; i < 8; i++)
        n |= (uint64_t)data[i] << (8 * i);
    if (n > ST_MAX_HEADER)
        return vk_fail(VKLLM_ERR_BAD_FILE, "safetensors header length %" PRIu64 " exceeds the limit of %u bytes", n,
                       ST_MAX_HEADER);
    if (n > size - 8)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "truncated file: the safetensors header of %" PRIu64 " bytes runs past the end of the file (%"
                       PRIu64 " bytes)", n, size);
    if (n < 2 || data[8] != '{')
        return vk_fail(VKLLM_ERR_BAD_FILE, "not a safetensors file: the header does not start with '{'");
    st_file *f = calloc(1, sizeof *f);
    if (!f)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    f->map = data;
    f->map_size = size;
    f->header_len = n;
    f->data_offset = 8 + n;
    json_doc *doc = NULL;
    vkllm_status s = json_parse((const char *)data + 8, (size_t)n, &doc);
    if (s)
        vk_fail_prefix(s, "safetensors header");
    else
        s = parse_header(f, json_root(doc));
    json_free(doc);
    if (s) {
        st_close(f);
        return s;
    }
    *out = f;
    return VKLLM_OK;
}

vkllm_status st_open(const char *path, st_file **out)
{
    struct stat sb;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return vk_fail(VKLLM_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        int e = errno;
        close(fd);
        return vk_fail(VKLLM_ERR_IO, "'%s' is not a readable regular file%s%s", path, e ? ": " : "",
                       e ? strerror(e) : "");
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: %" PRIu64 " bytes, too short for a safetensors file", path, size);
    }
    if (size > SIZE_MAX) {
        close(fd);
        return vk_fail(VKLLM_ERR_IO, "'%s' (%" PRIu64 " bytes) is too large to map", path, size);
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return vk_fail(VKLLM_ERR_IO, "cannot map '%s' (%" PRIu64 " bytes): %s", path, size, strerror(map_errno));
    st_file *f;
    vkllm_status s = st_parse(map, size, &f);
    if (s) {
        munmap(map, (size_t)size);
        return vk_fail_prefix(s, "%s", path);
    }
    f->owns_map = 1;
    *out = f;
    return VKLLM_OK;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->by_name);
    for (uint64_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->meta);
    if (f->owns_map)
        munmap((void *)f->map, (size_t)f->map_size);
    free(f);
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    uint64_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        const st_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *st_meta_get(const st_file *f, const char *key)
{
    for (uint64_t i = 0; f && key && i < f->n_meta; i++)
        if (!strcmp(f->meta[i].key, key))
            return f->meta[i].value;
    return NULL;
}
