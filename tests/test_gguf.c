/* lib/gguf.c: the reader on real files and on hostile ones.
 *
 *   test_gguf hostile
 *       Builds small GGUF images in memory and checks the parsed values, then feeds
 *       broken variants (bad counts, lengths, offsets, types, duplicates...) and every
 *       truncation of a valid file: each must fail with VKLLM_ERR_BAD_FILE and a message
 *       naming the problem, and none may crash (run it under ASan/UBSan to make "crash"
 *       include out-of-bounds reads: each image sits in its own exact-size allocation).
 *   test_gguf models <shared dir> <tests/fixtures/gguf_models_summary.txt>
 *       Parses every .gguf in <shared dir>/models and compares each key, value and tensor
 *       with what the `gguf` python package's reader saw (the summary fixture, made by
 *       tests/fixtures/make_gguf_summary.py), plus known facts about stories260K.
 *       Exits 77 (skip) when <shared dir> is absent. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "quant.h"

static int failures;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                 \
            printf(__VA_ARGS__);                                                        \
            printf("\n");                                                               \
        }                                                                               \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- an in-memory GGUF writer ------------------------------------------------------ */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void put_le(buf *b, uint64_t v, unsigned n)
{
    uint8_t t[8];
    for (unsigned i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    put(b, t, n);
}

static void put_u32(buf *b, uint32_t v) { put_le(b, v, 4); }
static void put_u64(buf *b, uint64_t v) { put_le(b, v, 8); }

static void put_f32(buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}

static void put_str(buf *b, const char *s)
{
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

static void put_key(buf *b, const char *key, uint32_t type)
{
    put_str(b, key);
    put_u32(b, type);
}

/* The broken (and a few valid) variants of the test file. */
enum variant {
    V_OK, V_VERSION2, V_NESTING_AT_LIMIT, V_ZERO_DIM, V_NO_TENSORS_NO_PAD,
    V_FIRST_BAD, /* every variant from here on must be rejected */
    V_BAD_MAGIC = V_FIRST_BAD, V_VERSION1, V_VERSION4, V_BIG_ENDIAN, V_HUGE_KV,
    V_HUGE_TENSORS, V_TOO_MANY_TENSORS, V_HUGE_STRING_ARRAY, V_HUGE_NESTED, V_HUGE_F32_ARRAY,
    V_KEY_PAST_EOF, V_STRING_PAST_EOF, V_STRING_ELEM_PAST_EOF, V_UNKNOWN_VALUE_TYPE,
    V_UNKNOWN_ELEM_TYPE, V_DUP_KEY, V_KEY_NUL, V_DEEP_NESTING, V_ALIGN_NOT_POW2,
    V_ALIGN_ZERO, V_ALIGN_TYPE, V_DUP_TENSOR, V_TENSOR_NUL, V_NDIMS5, V_UNKNOWN_GGML_TYPE,
    V_HUGE_GGML_TYPE, V_OFFSET_PAST_EOF, V_OFFSET_OVERFLOW, V_MISALIGNED, V_DIMS_OVERFLOW,
    V_DIM_HUGE, V_BYTES_OVERFLOW, V_ELEMS_OVERFLOW, V_ROW_NOT_BLOCK, V_DATA_TRUNCATED, V_EMPTY,
    V_COUNT
};

static const struct {
    const char *name;
    const char *want[2]; /* substrings the error message must contain */
} variant_info[V_COUNT] = {
    [V_OK] = {"valid v3", {0}},
    [V_VERSION2] = {"valid v2", {0}},
    [V_NESTING_AT_LIMIT] = {"arrays nested to the limit", {0}},
    [V_ZERO_DIM] = {"tensor with a zero dimension", {0}},
    [V_NO_TENSORS_NO_PAD] = {"no tensors, no padding", {0}},
    [V_BAD_MAGIC] = {"bad magic", {"magic", "GGUF"}},
    [V_VERSION1] = {"version 1", {"version 1", "not supported"}},
    [V_VERSION4] = {"version 4", {"version 4", "2 and 3"}},
    [V_BIG_ENDIAN] = {"big-endian", {"big-endian"}},
    [V_HUGE_KV] = {"n_kv = 2^60", {"1152921504606846976", "key/value"}},
    [V_HUGE_TENSORS] = {"n_tensors = 2^62", {"4611686018427387904", "tensors"}},
    [V_TOO_MANY_TENSORS] = {"n_tensors = 1000", {"1000 tensors"}},
    [V_HUGE_STRING_ARRAY] = {"2^60 strings", {"t.strings", "1152921504606846976"}},
    [V_HUGE_NESTED] = {"2^61 nested arrays", {"t.nested", "2305843009213693952"}},
    [V_HUGE_F32_ARRAY] = {"2^62 floats", {"t.floats", "4611686018427387904"}},
    [V_KEY_PAST_EOF] = {"key length past EOF", {"key #2", "past the end"}},
    [V_STRING_PAST_EOF] = {"string value past EOF", {"general.architecture", "past the end"}},
    [V_STRING_ELEM_PAST_EOF] = {"array string past EOF", {"t.strings", "string 1"}},
    [V_UNKNOWN_VALUE_TYPE] = {"unknown value type", {"t.u8", "unknown value type 13"}},
    [V_UNKNOWN_ELEM_TYPE] = {"unknown element type", {"t.floats", "unknown element type 99"}},
    [V_DUP_KEY] = {"duplicate key", {"duplicate key 't.u8'"}},
    [V_KEY_NUL] = {"NUL in key", {"key #3", "NUL"}},
    [V_DEEP_NESTING] = {"arrays nested too deep", {"t.nested", "nested deeper"}},
    [V_ALIGN_NOT_POW2] = {"alignment 48", {"general.alignment", "power of two"}},
    [V_ALIGN_ZERO] = {"alignment 0", {"general.alignment", "power of two"}},
    [V_ALIGN_TYPE] = {"alignment as uint64", {"general.alignment", "uint64"}},
    [V_DUP_TENSOR] = {"duplicate tensor", {"duplicate tensor 'q.weight'"}},
    [V_TENSOR_NUL] = {"NUL in tensor name", {"tensor #2", "NUL"}},
    [V_NDIMS5] = {"5 dimensions", {"q.weight", "5 dimensions"}},
    [V_UNKNOWN_GGML_TYPE] = {"ggml type 4", {"q.weight", "unknown ggml type 4"}},
    [V_HUGE_GGML_TYPE] = {"ggml type 1000", {"q.weight", "unknown ggml type 1000"}},
    [V_OFFSET_PAST_EOF] = {"data offset past EOF", {"h.weight", "past the end"}},
    [V_OFFSET_OVERFLOW] = {"offset + size overflows", {"h.weight", "past the end"}},
    [V_MISALIGNED] = {"misaligned offset", {"h.weight", "alignment 64"}},
    [V_DIMS_OVERFLOW] = {"2^32 x 2^32 elements", {"tok.weight", "overflows"}},
    [V_DIM_HUGE] = {"dimension 2^63", {"tok.weight", "too large"}},
    [V_BYTES_OVERFLOW] = {"byte size overflows", {"tok.weight", "overflows"}},
    [V_ELEMS_OVERFLOW] = {"2^63 q4_0 weights", {"q.weight", "element count"}},
    [V_ROW_NOT_BLOCK] = {"row not whole blocks", {"q.weight", "block size 32"}},
    [V_DATA_TRUNCATED] = {"last tensor cut short", {"h.weight", "past the end"}},
    [V_EMPTY] = {"empty input", {"too short", "GGUF"}},
};

#define N_TENSORS 3
static const char *const tensor_names[N_TENSORS] = {"tok.weight", "q.weight", "h.weight"};
static const uint64_t tensor_offsets[N_TENSORS] = {0, 64, 256};
static const uint64_t tensor_sizes[N_TENSORS] = {48, 136, 16};
#define DATA_BYTES 272

static uint8_t data_byte(size_t i) { return (uint8_t)(i * 7 + 3); }

/* Arrays of arrays, `depth` levels in all; the innermost holds two uint32. */
static void put_nested(buf *b, int depth)
{
    if (depth == 1) {
        put_u32(b, GGUF_UINT32);
        put_u64(b, 2);
        put_u32(b, 1);
        put_u32(b, 2);
        return;
    }
    put_u32(b, GGUF_ARRAY);
    put_u64(b, 1);
    put_nested(b, depth - 1);
}

static buf build(enum variant v)
{
    buf b = {0};
    if (v == V_EMPTY)
        return b;
    int n_kv = 17;
    uint64_t n_tensors = v == V_NO_TENSORS_NO_PAD ? 0 : N_TENSORS;
    put(&b, v == V_BAD_MAGIC ? "GGUG" : "GGUF", 4);
    put_u32(&b, v == V_VERSION1 ? 1 : v == V_VERSION4 ? 4 : v == V_VERSION2 ? 2
                : v == V_BIG_ENDIAN ? 0x03000000u : 3);
    put_u64(&b, v == V_HUGE_TENSORS ? 1ull << 62 : v == V_TOO_MANY_TENSORS ? 1000 : n_tensors);
    put_u64(&b, v == V_HUGE_KV ? 1ull << 60 : (uint64_t)n_kv);

    /* 1, 2 */
    put_key(&b, "general.architecture", GGUF_STRING);
    if (v == V_STRING_PAST_EOF) {
        put_u64(&b, 1000000000);
        put(&b, "llama", 5);
    } else {
        put_str(&b, "llama");
    }
    if (v == V_ALIGN_TYPE) {
        put_key(&b, "general.alignment", GGUF_UINT64);
        put_u64(&b, 64);
    } else {
        put_key(&b, "general.alignment", GGUF_UINT32);
        put_u32(&b, v == V_ALIGN_NOT_POW2 ? 48 : v == V_ALIGN_ZERO ? 0 : 64);
    }
    /* 3..13: one of each scalar type */
    if (v == V_KEY_PAST_EOF) {
        put_u64(&b, 1ull << 63);
        put(&b, "t.u8", 4);
    } else {
        put_str(&b, "t.u8");
    }
    put_u32(&b, v == V_UNKNOWN_VALUE_TYPE ? 13 : GGUF_UINT8);
    put_le(&b, 200, 1);
    if (v == V_KEY_NUL) {
        put_u64(&b, 4);
        put(&b, "t.\0" "8", 4);
        put_u32(&b, GGUF_INT8);
    } else {
        put_key(&b, v == V_DUP_KEY ? "t.u8" : "t.i8", GGUF_INT8);
    }
    put_le(&b, (uint8_t)-5, 1);
    put_key(&b, "t.u16", GGUF_UINT16);
    put_le(&b, 60000, 2);
    put_key(&b, "t.i16", GGUF_INT16);
    put_le(&b, (uint16_t)-30000, 2);
    put_key(&b, "t.u32", GGUF_UINT32);
    put_u32(&b, 4000000000u);
    put_key(&b, "t.i32", GGUF_INT32);
    put_u32(&b, (uint32_t)-123456);
    put_key(&b, "t.f32", GGUF_FLOAT32);
    put_f32(&b, 1.5f);
    put_key(&b, "t.bool", GGUF_BOOL);
    put_le(&b, 1, 1);
    put_key(&b, "t.u64", GGUF_UINT64);
    put_u64(&b, (1ull << 63) + 5);
    put_key(&b, "t.i64", GGUF_INT64);
    put_u64(&b, UINT64_MAX); /* -1 */
    put_key(&b, "t.f64", GGUF_FLOAT64);
    double d = 2.25;
    uint64_t du;
    memcpy(&du, &d, 8);
    put_u64(&b, du);
    /* 14..17: arrays */
    put_key(&b, "t.strings", GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, v == V_HUGE_STRING_ARRAY ? 1ull << 60 : 3);
    put_str(&b, "a");
    if (v == V_STRING_ELEM_PAST_EOF) {
        put_u64(&b, 1ull << 40);
        put(&b, "bc", 2);
    } else {
        put_str(&b, "bc");
    }
    put_str(&b, "");
    put_key(&b, "t.floats", GGUF_ARRAY);
    put_u32(&b, v == V_UNKNOWN_ELEM_TYPE ? 99 : GGUF_FLOAT32);
    put_u64(&b, v == V_HUGE_F32_ARRAY ? 1ull << 62 : 3);
    put_f32(&b, 0.5f);
    put_f32(&b, -1.0f);
    put_f32(&b, 3.0f);
    put_key(&b, "t.nested", GGUF_ARRAY);
    if (v == V_DEEP_NESTING || v == V_NESTING_AT_LIMIT) {
        put_nested(&b, v == V_DEEP_NESTING ? GGUF_MAX_ARRAY_DEPTH + 1 : GGUF_MAX_ARRAY_DEPTH);
    } else { /* [[1, 2], [3]] */
        put_u32(&b, GGUF_ARRAY);
        put_u64(&b, v == V_HUGE_NESTED ? 1ull << 61 : 2);
        put_u32(&b, GGUF_UINT32);
        put_u64(&b, 2);
        put_u32(&b, 1);
        put_u32(&b, 2);
        put_u32(&b, GGUF_UINT32);
        put_u64(&b, 1);
        put_u32(&b, 3);
    }
    put_key(&b, "t.empty", GGUF_ARRAY);
    put_u32(&b, GGUF_INT32);
    put_u64(&b, 0);
    if (v == V_NO_TENSORS_NO_PAD)
        return b;

    /* tensor infos */
    put_str(&b, "tok.weight");
    put_u32(&b, 2);
    if (v == V_DIMS_OVERFLOW) {
        put_u64(&b, 1ull << 32);
        put_u64(&b, 1ull << 32);
    } else if (v == V_DIM_HUGE) {
        put_u64(&b, 1ull << 63);
        put_u64(&b, 1);
    } else if (v == V_BYTES_OVERFLOW) {
        put_u64(&b, 1ull << 61);
        put_u64(&b, 2);
    } else {
        put_u64(&b, v == V_ZERO_DIM ? 0 : 4);
        put_u64(&b, 3);
    }
    put_u32(&b, GGML_F32);
    put_u64(&b, tensor_offsets[0]);

    put_str(&b, "q.weight");
    put_u32(&b, v == V_NDIMS5 ? 5 : 2);
    if (v == V_ELEMS_OVERFLOW) { /* 2^63 weights but only 2^58 * 18 bytes */
        put_u64(&b, 1ull << 32);
        put_u64(&b, 1ull << 31);
    } else {
        put_u64(&b, v == V_ROW_NOT_BLOCK ? 48 : 64);
        put_u64(&b, 2);
    }
    if (v == V_NDIMS5) {
        put_u64(&b, 1);
        put_u64(&b, 1);
        put_u64(&b, 1);
    }
    put_u32(&b, v == V_UNKNOWN_GGML_TYPE ? 4 : v == V_HUGE_GGML_TYPE ? 1000
                : v == V_ELEMS_OVERFLOW ? GGML_Q4_0 : GGML_Q8_0);
    put_u64(&b, tensor_offsets[1]);

    if (v == V_TENSOR_NUL) {
        put_u64(&b, 3);
        put(&b, "h\0w", 3);
    } else {
        put_str(&b, v == V_DUP_TENSOR ? "q.weight" : "h.weight");
    }
    put_u32(&b, 1);
    put_u64(&b, 8);
    put_u32(&b, GGML_F16);
    put_u64(&b, v == V_OFFSET_PAST_EOF ? 1ull << 40
                : v == V_OFFSET_OVERFLOW ? UINT64_MAX - 63
                : v == V_MISALIGNED ? 260 : tensor_offsets[2]);

    while (b.n % 64)
        put_le(&b, 0, 1);
    for (size_t i = 0; i < DATA_BYTES; i++)
        put_le(&b, data_byte(i), 1);
    if (v == V_DATA_TRUNCATED)
        b.n--;
    return b;
}

/* Parses an exact-size copy (so ASan sees any read past the end). */
static vkllm_status parse_copy(const uint8_t *p, size_t n, gguf_file **out, uint8_t **copy)
{
    *copy = malloc(n ? n : 1);
    if (n)
        memcpy(*copy, p, n);
    return gguf_parse(*copy, n, out);
}

/* ---- checks on the valid file ------------------------------------------------------ */

static void check_valid(const gguf_file *f, uint32_t version, const uint8_t *image, size_t size)
{
    uint64_t u;
    int64_t i;
    double d;
    gguf_str s;
    const gguf_array *a;

    CHECK(f->version == version, "version %u", f->version);
    CHECK(f->n_kv == 17 && f->n_tensors == N_TENSORS, "counts %" PRIu64 " %" PRIu64, f->n_kv,
          f->n_tensors);
    CHECK(f->alignment == 64, "alignment %u", f->alignment);
    CHECK(f->data_offset % 64 == 0 && f->data_offset + DATA_BYTES == size,
          "data offset %" PRIu64 " in %zu bytes", f->data_offset, size);
    CHECK(f->map == image && f->map_size == size && !f->owns_map, "map fields");

    CHECK(gguf_get_str(f, "general.architecture", &s) == VKLLM_OK && s.len == 5 &&
              memcmp(s.data, "llama", 5) == 0, "architecture");
    CHECK(gguf_get_u64(f, "t.u8", &u) == VKLLM_OK && u == 200, "t.u8");
    CHECK(gguf_get_i64(f, "t.i8", &i) == VKLLM_OK && i == -5, "t.i8");
    CHECK(gguf_get_u64(f, "t.u16", &u) == VKLLM_OK && u == 60000, "t.u16");
    CHECK(gguf_get_i64(f, "t.i16", &i) == VKLLM_OK && i == -30000, "t.i16");
    CHECK(gguf_get_u64(f, "t.u32", &u) == VKLLM_OK && u == 4000000000u, "t.u32");
    CHECK(gguf_get_i64(f, "t.u32", &i) == VKLLM_OK && i == 4000000000, "t.u32 as i64");
    CHECK(gguf_get_i64(f, "t.i32", &i) == VKLLM_OK && i == -123456, "t.i32");
    CHECK(gguf_get_f64(f, "t.f32", &d) == VKLLM_OK && d == 1.5, "t.f32");
    CHECK(gguf_get_f64(f, "t.i32", &d) == VKLLM_OK && d == -123456.0, "t.i32 as f64");
    CHECK(gguf_get_u64(f, "t.bool", &u) == VKLLM_OK && u == 1, "t.bool");
    CHECK(gguf_get_u64(f, "t.u64", &u) == VKLLM_OK && u == (1ull << 63) + 5, "t.u64");
    CHECK(gguf_get_i64(f, "t.i64", &i) == VKLLM_OK && i == -1, "t.i64");
    CHECK(gguf_get_f64(f, "t.f64", &d) == VKLLM_OK && d == 2.25, "t.f64");

    /* wrong types and ranges are errors that name the key */
    vk_error_clear();
    CHECK(gguf_get_u64(f, "t.i32", &u) == VKLLM_ERR_BAD_FILE &&
              strstr(vk_error_message(), "t.i32") && strstr(vk_error_message(), "-123456"),
          "negative as u64: %s", vk_error_message());
    CHECK(gguf_get_i64(f, "t.u64", &i) == VKLLM_ERR_BAD_FILE &&
              strstr(vk_error_message(), "t.u64"), "u64 > INT64_MAX as i64: %s",
          vk_error_message());
    CHECK(gguf_get_str(f, "t.u8", &s) == VKLLM_ERR_BAD_FILE &&
              strstr(vk_error_message(), "t.u8") && strstr(vk_error_message(), "uint8"),
          "u8 as string: %s", vk_error_message());
    CHECK(gguf_get_u64(f, "t.f32", &u) == VKLLM_ERR_BAD_FILE, "float as u64");
    CHECK(gguf_get_f64(f, "t.strings", &d) == VKLLM_ERR_BAD_FILE, "array as f64");
    CHECK(gguf_get_arr(f, "t.u8", &a) == VKLLM_ERR_BAD_FILE, "u8 as array");
    CHECK(gguf_get_u64(f, "absent.key", &u) == VKLLM_ERR_NOT_FOUND &&
              strstr(vk_error_message(), "absent.key"), "absent key: %s", vk_error_message());
    CHECK(gguf_find(f, "t.u") == NULL && gguf_find(f, "") == NULL, "no prefix matches");

    CHECK(gguf_get_arr(f, "t.strings", &a) == VKLLM_OK && a->elem_type == GGUF_STRING &&
              a->n == 3 && a->strings[0].len == 1 && a->strings[0].data[0] == 'a' &&
              a->strings[1].len == 2 && memcmp(a->strings[1].data, "bc", 2) == 0 &&
              a->strings[2].len == 0, "t.strings");
    CHECK(a->strings[1].data > (const char *)image &&
              a->strings[1].data < (const char *)image + size, "strings point into the image");
    CHECK(gguf_get_arr(f, "t.floats", &a) == VKLLM_OK && a->elem_type == GGUF_FLOAT32 &&
              a->n == 3 && gguf_arr_f64(a, 0) == 0.5 && gguf_arr_f64(a, 1) == -1.0 &&
              gguf_arr_f64(a, 2) == 3.0, "t.floats");
    CHECK(gguf_arr_u64(a, 1) == 0 && gguf_arr_i64(a, 1) == -1 && gguf_arr_u64(a, 2) == 3,
          "float elements converted (saturating)");
    CHECK(gguf_arr_f64(a, 3) == 0 && gguf_arr_u64(a, UINT64_MAX) == 0, "index past the end");
    CHECK(gguf_get_arr(f, "t.nested", &a) == VKLLM_OK, "t.nested");
    if (a->n == 2 && a->elem_type == GGUF_ARRAY) {
        CHECK(a->arrays[0].n == 2 && a->arrays[1].n == 1 && gguf_arr_u64(&a->arrays[0], 1) == 2 &&
                  gguf_arr_i64(&a->arrays[1], 0) == 3, "nested values");
        CHECK(gguf_arr_u64(a, 0) == 0, "element of an array of arrays as scalar");
    }
    CHECK(gguf_get_arr(f, "t.empty", &a) == VKLLM_OK && a->n == 0 && a->elem_type == GGUF_INT32,
          "t.empty");

    static const uint32_t types[N_TENSORS] = {GGML_F32, GGML_Q8_0, GGML_F16};
    static const uint64_t ne0[N_TENSORS] = {4, 64, 8}, ne1[N_TENSORS] = {3, 2, 1};
    for (int t = 0; t < N_TENSORS; t++) {
        const gguf_tensor *ti = gguf_find_tensor(f, tensor_names[t]);
        CHECK(ti != NULL, "tensor %s", tensor_names[t]);
        if (!ti)
            continue;
        CHECK(ti == &f->tensors[t], "tensor order");
        CHECK(ti->type == types[t] && ti->ne[0] == ne0[t] && ti->ne[1] == ne1[t] &&
                  ti->ne[2] == 1 && ti->ne[3] == 1 && ti->n_dims == (t == 2 ? 1u : 2u),
              "%s shape/type", ti->name);
        CHECK(ti->offset == tensor_offsets[t] && ti->size == tensor_sizes[t], "%s offset %" PRIu64
              " size %" PRIu64, ti->name, ti->offset, ti->size);
        CHECK(ti->data == image + f->data_offset + ti->offset, "%s data pointer", ti->name);
        int same = 1;
        for (uint64_t k = 0; k < ti->size; k++)
            same &= ti->data[k] == data_byte(ti->offset + k);
        CHECK(same, "%s data bytes", ti->name);
    }
    CHECK(gguf_find_tensor(f, "nope") == NULL && gguf_find_tensor(f, "q.weigh") == NULL,
          "absent tensors");
}

/* A valid file with one tokenizer-sized string array: it must parse quickly. */
static void check_many_strings(void)
{
    const uint64_t n = 150000;
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_key(&b, "tokenizer.ggml.tokens", GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, n);
    char tok[32];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(tok, sizeof tok, "tok%" PRIu64, i);
        put_str(&b, tok);
    }
    gguf_file *f = NULL;
    double t0 = now_ms();
    vkllm_status st = gguf_parse(b.p, b.n, &f);
    double ms = now_ms() - t0;
    const gguf_array *a = NULL;
    CHECK(st == VKLLM_OK && gguf_get_arr(f, "tokenizer.ggml.tokens", &a) == VKLLM_OK &&
              a->n == n && a->strings[n - 1].len == 9 &&
              memcmp(a->strings[n - 1].data, "tok149999", 9) == 0,
          "150k string array: %s", vk_error_message());
    CHECK(ms < 500, "150k string array took %.1f ms", ms);
    printf("150000-string array (%zu bytes): parsed in %.2f ms\n", b.n, ms);
    gguf_close(f);
    free(b.p);
}

static void check_open(const uint8_t *image, size_t size)
{
    gguf_file *f = NULL;
    vk_error_clear();
    CHECK(gguf_open("/nonexistent/dir/model.gguf", &f) == VKLLM_ERR_IO && f == NULL &&
              strstr(vk_error_message(), "/nonexistent/dir/model.gguf") &&
              strstr(vk_error_message(), strerror(ENOENT)),
          "missing file: %s", vk_error_message());
    CHECK(gguf_open("/", &f) == VKLLM_ERR_IO && strstr(vk_error_message(), "regular"),
          "directory: %s", vk_error_message());

    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/vkllm_test_gguf_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp %s: %s", path, strerror(errno));
    if (fd < 0)
        return;
    CHECK(gguf_open(path, &f) == VKLLM_ERR_BAD_FILE && strstr(vk_error_message(), "empty"),
          "empty file: %s", vk_error_message());
    CHECK(write(fd, image, size - 1) == (ssize_t)(size - 1), "write");
    CHECK(gguf_open(path, &f) == VKLLM_ERR_BAD_FILE && strstr(vk_error_message(), path) &&
              strstr(vk_error_message(), "h.weight"),
          "truncated file names path and tensor: %s", vk_error_message());
    CHECK(write(fd, image + size - 1, 1) == 1, "write");
    close(fd);
    vkllm_status st = gguf_open(path, &f);
    CHECK(st == VKLLM_OK, "open valid file: %s", vk_error_message());
    if (st == VKLLM_OK) {
        CHECK(f->owns_map && f->map_size == size && memcmp(f->map, image, size) == 0,
              "mapping holds the file");
        const gguf_tensor *t = gguf_find_tensor(f, "q.weight");
        CHECK(t && t->data == f->map + f->data_offset + 64 && t->data[0] == data_byte(64),
              "tensor data in the mapping");
        gguf_close(f);
    }
    unlink(path);
    gguf_close(NULL);
    printf("gguf_open: missing file, directory, empty, truncated and valid files checked\n");
}

static int run_hostile(void)
{
    buf ok = build(V_OK);
    gguf_file *f = NULL;
    uint8_t *copy;

    /* the valid variants */
    for (int v = V_OK; v < V_FIRST_BAD; v++) {
        buf b = build((enum variant)v);
        vkllm_status st = parse_copy(b.p, b.n, &f, &copy);
        CHECK(st == VKLLM_OK, "%s: %s", variant_info[v].name, vk_error_message());
        if (st == VKLLM_OK && (v == V_OK || v == V_VERSION2))
            check_valid(f, v == V_VERSION2 ? 2 : 3, copy, b.n);
        if (st == VKLLM_OK && v == V_ZERO_DIM) {
            const gguf_tensor *t = gguf_find_tensor(f, "tok.weight");
            CHECK(t && t->size == 0 && t->ne[0] == 0, "zero-size tensor");
        }
        if (st == VKLLM_OK && v == V_NO_TENSORS_NO_PAD)
            CHECK(f->n_tensors == 0 && f->n_kv == 17, "vocab-only layout");
        printf("ok   %-28s %zu bytes\n", variant_info[v].name, b.n);
        gguf_close(f);
        free(copy);
        free(b.p);
    }

    /* the broken ones */
    int n_bad_ok = 0;
    for (int v = V_FIRST_BAD; v < V_COUNT; v++) {
        buf b = build((enum variant)v);
        vk_error_clear();
        f = (gguf_file *)&f; /* must come back NULL */
        vkllm_status st = parse_copy(b.p, b.n, &f, &copy);
        const char *msg = vk_error_message();
        int good = st == VKLLM_ERR_BAD_FILE && f == NULL;
        for (int k = 0; k < 2; k++)
            if (variant_info[v].want[k] && !strstr(msg, variant_info[v].want[k]))
                good = 0;
        CHECK(good, "%s: status %d, message \"%s\"", variant_info[v].name, st, msg);
        if (st == VKLLM_OK)
            gguf_close(f);
        n_bad_ok += good;
        printf("%s %-28s -> %s\n", good ? "rej " : "BAD ", variant_info[v].name, msg);
        free(copy);
        free(b.p);
    }
    printf("%d of %d broken variants rejected with the expected message\n", n_bad_ok,
           V_COUNT - V_FIRST_BAD);

    /* every strict prefix of the valid file must be rejected */
    int n_trunc_ok = 0;
    for (size_t len = 0; len < ok.n; len++) {
        vk_error_clear();
        vkllm_status st = parse_copy(ok.p, len, &f, &copy);
        int good = st == VKLLM_ERR_BAD_FILE && f == NULL && vk_error_message()[0] != '\0';
        if (!good) {
            CHECK(good, "prefix of %zu bytes: status %d (%s)", len, st, vk_error_message());
            gguf_close(f);
        }
        n_trunc_ok += good;
        free(copy);
    }
    printf("truncations: %d of %zu prefixes rejected\n", n_trunc_ok, ok.n);

    check_many_strings();
    check_open(ok.p, ok.n);
    free(ok.p);
    return failures ? 1 : 0;
}

/* ---- real files ---------------------------------------------------------------------- */

static uint64_t fnv_bytes(uint64_t h, const void *p, uint64_t n)
{
    const uint8_t *b = p;
    for (uint64_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The value as make_gguf_summary.py prints it. */
static void value_text(const gguf_kv *kv, char *out, size_t cap)
{
    const uint64_t seed = 0xcbf29ce484222325ull;
    switch (kv->type) {
    case GGUF_UINT8: case GGUF_UINT16: case GGUF_UINT32: case GGUF_UINT64: case GGUF_BOOL:
        snprintf(out, cap, "%" PRIu64, kv->v.u);
        break;
    case GGUF_INT8: case GGUF_INT16: case GGUF_INT32: case GGUF_INT64:
        snprintf(out, cap, "%" PRId64, kv->v.i);
        break;
    case GGUF_FLOAT32: {
        float x = (float)kv->v.f;
        uint32_t u;
        memcpy(&u, &x, 4);
        snprintf(out, cap, "%08" PRIx32, u);
        break;
    }
    case GGUF_FLOAT64: {
        uint64_t u;
        memcpy(&u, &kv->v.f, 8);
        snprintf(out, cap, "%016" PRIx64, u);
        break;
    }
    case GGUF_STRING:
        snprintf(out, cap, "%" PRIu64 " %016" PRIx64, kv->v.s.len,
                 fnv_bytes(seed, kv->v.s.data, kv->v.s.len));
        break;
    case GGUF_ARRAY: {
        const gguf_array *a = &kv->v.a;
        uint64_t h = seed;
        if (a->elem_type == GGUF_STRING) {
            for (uint64_t i = 0; i < a->n; i++) {
                uint8_t len[8];
                for (int k = 0; k < 8; k++)
                    len[k] = (uint8_t)(a->strings[i].len >> (8 * k));
                h = fnv_bytes(h, len, 8);
                h = fnv_bytes(h, a->strings[i].data, a->strings[i].len);
            }
        } else if (gguf_value_size(a->elem_type)) {
            h = fnv_bytes(h, a->data, a->n * gguf_value_size(a->elem_type));
        }
        snprintf(out, cap, "%s %" PRIu64 " %016" PRIx64, gguf_value_type_name(a->elem_type), a->n,
                 h);
        break;
    }
    default: snprintf(out, cap, "?");
    }
}

/* Compares the files named in the summary with the parser's view; returns files checked. */
static int compare_with_summary(const char *models, const char *summary)
{
    FILE *fp = fopen(summary, "r");
    CHECK(fp != NULL, "cannot read %s", summary);
    if (!fp)
        return 0;
    char line[4096], name[1024], path[2048], text[512];
    gguf_file *f = NULL;
    int n_files = 0, n_kv = 0, n_tensors = 0, kv_bad = 0, tensor_bad = 0;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "file ", 5) == 0) {
            unsigned version;
            uint64_t nkv, nt, data_offset;
            unsigned alignment;
            gguf_close(f);
            f = NULL;
            if (sscanf(line, "file %1023s %u %" SCNu64 " %" SCNu64 " %u %" SCNu64, name, &version,
                       &nkv, &nt, &alignment, &data_offset) != 6) {
                CHECK(0, "bad summary line: %s", line);
                continue;
            }
            snprintf(path, sizeof path, "%s/%s", models, name);
            vkllm_status st = gguf_open(path, &f);
            CHECK(st == VKLLM_OK, "%s: %s", path, vk_error_message());
            if (st != VKLLM_OK)
                continue;
            n_files++;
            CHECK(f->version == version && f->n_kv == nkv && f->n_tensors == nt &&
                      f->alignment == alignment && f->data_offset == data_offset,
                  "%s: header v%u kv %" PRIu64 " tensors %" PRIu64 " align %u data %" PRIu64
                  "; gguf-py: v%u %" PRIu64 " %" PRIu64 " %u %" PRIu64,
                  name, f->version, f->n_kv, f->n_tensors, f->alignment, f->data_offset, version,
                  nkv, nt, alignment, data_offset);
        } else if (f && strncmp(line, "kv ", 3) == 0) {
            char key[1024], type[32];
            int used = 0;
            if (sscanf(line, "kv %1023s %31s %n", key, type, &used) < 2 || !used) {
                CHECK(0, "bad summary line: %s", line);
                continue;
            }
            const gguf_kv *kv = gguf_find(f, key);
            n_kv++;
            if (!kv) {
                CHECK(0, "%s: key %s missing", name, key);
                kv_bad++;
                continue;
            }
            value_text(kv, text, sizeof text);
            int good = strcmp(type, gguf_value_type_name(kv->type)) == 0 &&
                       strcmp(text, line + used) == 0;
            CHECK(good, "%s: %s is %s %s; gguf-py: %s %s", name, key,
                  gguf_value_type_name(kv->type), text, type, line + used);
            kv_bad += !good;
        } else if (f && strncmp(line, "tensor ", 7) == 0) {
            char tname[1024];
            unsigned type, n_dims;
            uint64_t ne[4], offset, size;
            if (sscanf(line, "tensor %1023s %u %u %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
                       " %" SCNu64 " %" SCNu64, tname, &type, &n_dims, &ne[0], &ne[1], &ne[2],
                       &ne[3], &offset, &size) != 9) {
                CHECK(0, "bad summary line: %s", line);
                continue;
            }
            const gguf_tensor *t = gguf_find_tensor(f, tname);
            n_tensors++;
            int good = t && t->type == type && t->n_dims == n_dims && t->offset == offset &&
                       t->size == size && memcmp(t->ne, ne, sizeof ne) == 0 &&
                       t->data == f->map + f->data_offset + offset;
            CHECK(good, "%s: tensor %s differs from gguf-py's view (%s)", name, tname, line);
            tensor_bad += !good;
        }
    }
    gguf_close(f);
    fclose(fp);
    printf("vs gguf-py GGUFReader: %d files, %d keys (%d differ), %d tensors (%d differ)\n",
           n_files, n_kv, kv_bad, n_tensors, tensor_bad);
    return n_files;
}

static void check_stories(const char *models)
{
    char path[2048], path_org[2048];
    gguf_file *f = NULL, *g = NULL;
    snprintf(path, sizeof path, "%s/stories260K.gguf", models);
    snprintf(path_org, sizeof path_org, "%s/stories260K.ggml-org.gguf", models);
    vkllm_status st = gguf_open(path, &f);
    CHECK(st == VKLLM_OK, "%s: %s", path, vk_error_message());
    if (st != VKLLM_OK)
        return;
    gguf_str arch = {0};
    const gguf_array *tokens = NULL;
    uint64_t ctx = 0, embd = 0, layers = 0, heads = 0, heads_kv = 0, ff = 0;
    CHECK(gguf_get_str(f, "general.architecture", &arch) == VKLLM_OK && arch.len == 5 &&
              memcmp(arch.data, "llama", 5) == 0, "architecture llama");
    CHECK(gguf_get_arr(f, "tokenizer.ggml.tokens", &tokens) == VKLLM_OK &&
              tokens->elem_type == GGUF_STRING && tokens->n == 512, "512 tokens");
    CHECK(gguf_get_u64(f, "llama.context_length", &ctx) == VKLLM_OK && ctx == 128,
          "context length %" PRIu64, ctx);
    CHECK(gguf_get_u64(f, "llama.embedding_length", &embd) == VKLLM_OK && embd == 64, "n_embd");
    CHECK(gguf_get_u64(f, "llama.block_count", &layers) == VKLLM_OK && layers == 5, "layers");
    CHECK(gguf_get_u64(f, "llama.attention.head_count", &heads) == VKLLM_OK && heads == 8, "heads");
    CHECK(gguf_get_u64(f, "llama.attention.head_count_kv", &heads_kv) == VKLLM_OK && heads_kv == 4,
          "kv heads");
    CHECK(gguf_get_u64(f, "llama.feed_forward_length", &ff) == VKLLM_OK && ff == 172, "ffn");
    if (tokens && tokens->n == 512) /* llama2.c vocab: id 0 is <unk>, 3..258 are bytes */
        CHECK(tokens->strings[0].len == 5 && memcmp(tokens->strings[0].data, "<unk>", 5) == 0 &&
                  tokens->strings[3].len == 6 && memcmp(tokens->strings[3].data, "<0x00>", 6) == 0,
              "token texts");
    const gguf_tensor *emb = gguf_find_tensor(f, "token_embd.weight");
    CHECK(emb && emb->n_dims == 2 && emb->ne[0] == 64 && emb->ne[1] == 512 && emb->type == GGML_F32 &&
              emb->size == 64 * 512 * 4, "token_embd.weight [64, 512] f32");
    uint64_t params = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        params += f->tensors[i].ne[0] * f->tensors[i].ne[1] * f->tensors[i].ne[2] * f->tensors[i].ne[3];
    char name[64];
    int layer_tensors = 0;
    static const char *const per_layer[] = {"attn_q", "attn_k", "attn_v", "attn_output", "attn_norm",
                                            "ffn_gate", "ffn_up", "ffn_down", "ffn_norm"};
    for (int l = 0; l < 5; l++)
        for (size_t k = 0; k < sizeof per_layer / sizeof per_layer[0]; k++) {
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, per_layer[k]);
            layer_tensors += gguf_find_tensor(f, name) != NULL;
        }
    const gguf_tensor *wk = gguf_find_tensor(f, "blk.0.attn_k.weight");
    const gguf_tensor *wd = gguf_find_tensor(f, "blk.4.ffn_down.weight");
    CHECK(layer_tensors == 45 && f->n_tensors == 48, "%d layer tensors of 45, %" PRIu64 " in all",
          layer_tensors, f->n_tensors);
    CHECK(wk && wk->ne[0] == 64 && wk->ne[1] == 32, "attn_k [64, 32] (4 kv heads x 8)");
    CHECK(wd && wd->ne[0] == 172 && wd->ne[1] == 64, "ffn_down [172, 64]");
    printf("stories260K.gguf: llama, %" PRIu64 " tokens, ctx %" PRIu64 ", %" PRIu64
           " tensors, %" PRIu64 " parameters\n", tokens ? tokens->n : 0, ctx, f->n_tensors, params);

    /* SOURCES.md: every tensor is byte-identical to ggml-org's file. */
    st = gguf_open(path_org, &g);
    CHECK(st == VKLLM_OK, "%s: %s", path_org, vk_error_message());
    if (st == VKLLM_OK) {
        int same = 0;
        for (uint64_t i = 0; i < f->n_tensors; i++) {
            const gguf_tensor *a = &f->tensors[i], *b = gguf_find_tensor(g, a->name);
            same += b && a->size == b->size && memcmp(a->data, b->data, a->size) == 0;
        }
        CHECK(same == (int)f->n_tensors, "%d of %" PRIu64 " tensors identical to ggml-org's", same,
              f->n_tensors);
        CHECK(gguf_get_u64(g, "llama.context_length", &ctx) == VKLLM_OK && ctx == 2048,
              "ggml-org ctx 2048");
        printf("stories260K: %d of %" PRIu64 " tensors byte-identical to ggml-org's file\n", same,
               f->n_tensors);
        gguf_close(g);
    }
    gguf_close(f);
}

static int run_models(const char *shared, const char *summary)
{
    char models[1024];
    snprintf(models, sizeof models, "%s/models", shared);
    struct stat sb;
    if (stat(models, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        printf("SKIP: %s not found (shared model files are not part of the repository)\n", models);
        return 77;
    }
    /* Every .gguf in the directory must parse, whether or not the summary lists it. */
    DIR *dir = opendir(models);
    struct dirent *de;
    int n = 0;
    while (dir && (de = readdir(dir))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 5, ".gguf") != 0)
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", models, de->d_name);
        gguf_file *f = NULL;
        double t0 = now_ms();
        vkllm_status st = gguf_open(path, &f);
        double ms = now_ms() - t0;
        CHECK(st == VKLLM_OK, "%s: %s", path, vk_error_message());
        if (st == VKLLM_OK)
            printf("%-32s v%u %3" PRIu64 " keys %3" PRIu64 " tensors %9" PRIu64 " bytes %7.2f ms\n",
                   de->d_name, f->version, f->n_kv, f->n_tensors, f->map_size, ms);
        gguf_close(f);
        n++;
    }
    if (dir)
        closedir(dir);
    CHECK(n > 0, "no .gguf files in %s", models);
    int compared = compare_with_summary(models, summary);
    CHECK(compared >= 14, "only %d files compared with the summary", compared);
    check_stories(models);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    int rc;
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the log complete if a sanitizer aborts */
    if (argc >= 2 && strcmp(argv[1], "hostile") == 0)
        rc = run_hostile();
    else if (argc >= 4 && strcmp(argv[1], "models") == 0)
        rc = run_models(argv[2], argv[3]);
    else {
        fprintf(stderr, "usage: %s hostile | models <shared dir> <summary.txt>\n", argv[0]);
        return 1;
    }
    if (rc == 1)
        printf("%d check(s) FAILED\n", failures);
    else if (rc == 0)
        printf("all checks passed\n");
    return rc;
}
