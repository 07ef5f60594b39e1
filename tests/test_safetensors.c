/* lib/json.c, lib/safetensors.c and lib/hf_model.c on valid and hostile input.
 *
 *   test_safetensors json
 *       Strict JSON: values, escapes (\u surrogate pairs to UTF-8), numbers, lookups; and
 *       texts each rule rejects (trailing commas, leading zeros, lone surrogates, bad
 *       UTF-8, duplicate keys, nesting past the limit...), each with a message.
 *   test_safetensors hostile
 *       A small valid safetensors image parsed and checked field by field; every
 *       truncation of it; every single-bit flip (no crash, and a failure is BAD_FILE with
 *       a message); and broken variants (huge header length, bad JSON, offsets past the
 *       end, shape/size mismatch, overlaps, duplicate names, unknown dtypes...), each
 *       failing with a message that names the problem and the tensor. Every image sits in
 *       its own exact-size allocation, so under ASan an over-read is caught.
 *   test_safetensors hf TMPDIR OPT_FOLDER
 *       Hugging Face folders written into TMPDIR: a tiny llama (single file and sharded
 *       with an index; F32, F16 and BF16 tensors) and a tiny OPT become gguf_files with
 *       llama.cpp's keys and tensor names and build graphs; broken folders fail naming
 *       the file, key or tensor. Then the committed OPT folder (tests/conformance). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "graph.h"
#include "hf_model.h"
#include "json.h"
#include "quant.h"
#include "safetensors.h"

static int failures, checks;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        checks++;                                                                       \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                 \
            printf(__VA_ARGS__);                                                        \
            printf("\n");                                                               \
        }                                                                               \
    } while (0)

/* ---- json ------------------------------------------------------------------------------ */

static json_doc *parse_ok(const char *text)
{
    json_doc *d = NULL;
    vkllm_status s = json_parse(text, strlen(text), &d);
    CHECK(s == VKLLM_OK && d, "valid JSON rejected: %s -> %s", text, vk_error_message());
    return d;
}

static void parse_bad(const char *text, size_t len, const char *expect)
{
    json_doc *d = NULL;
    vk_error_clear();
    vkllm_status s = json_parse(text, len, &d);
    CHECK(s == VKLLM_ERR_BAD_FILE && !d, "invalid JSON accepted (status %d): %.60s", s, text);
    CHECK(strstr(vk_error_message(), expect), "message for %.40s lacks \"%s\": %s", text, expect, vk_error_message());
    json_free(d);
}

static void test_json(void)
{
    json_doc *d = parse_ok(" {\"a\": [1, -2, 3.5, 1e3, -0, 9223372036854775807, 18446744073709551616],"
                           " \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\\u0041\", \"t\": true,"
                           " \"f\": false, \"n\": null, \"o\": {}, \"e\": [], \"caf\xc3\xa9\": \"\xe2\x82\xac\"} ");
    if (d) {
        const json_value *root = json_root(d);
        CHECK(root->type == JSON_OBJECT && root->n == 8, "root: type %d, %u members", root->type, root->n);
        const json_value *a = json_get(root, "a");
        CHECK(a && a->type == JSON_ARRAY && a->n == 7, "a");
        if (a && a->n == 7) {
            CHECK(a->u.items[0].u.num.is_int && a->u.items[0].u.num.i == 1, "1");
            CHECK(a->u.items[1].u.num.is_int && a->u.items[1].u.num.i == -2, "-2");
            CHECK(!a->u.items[2].u.num.is_int && a->u.items[2].u.num.d == 3.5, "3.5");
            CHECK(!a->u.items[3].u.num.is_int && a->u.items[3].u.num.d == 1000.0, "1e3");
            CHECK(a->u.items[4].u.num.is_int && a->u.items[4].u.num.i == 0, "-0");
            CHECK(a->u.items[5].u.num.is_int && a->u.items[5].u.num.i == INT64_MAX, "int64 max");
            CHECK(!a->u.items[6].u.num.is_int && a->u.items[6].u.num.d == 18446744073709551616.0,
                  "2^64 is a double, not an integer");
        }
        const json_value *s = json_get(root, "s");
        const char want[] = "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80" "A";
        CHECK(s && s->type == JSON_STRING && s->n == sizeof want - 1 && !memcmp(s->u.str, want, sizeof want),
              "escapes decoded: got %u bytes", s ? s->n : 0);
        CHECK(json_get(root, "t")->u.boolean == 1 && json_get(root, "f")->u.boolean == 0, "booleans");
        CHECK(json_get(root, "n")->type == JSON_NULL, "null");
        CHECK(json_get(root, "o")->type == JSON_OBJECT && json_get(root, "o")->n == 0, "empty object");
        CHECK(json_get(root, "caf\xc3\xa9") && !strcmp(json_get(root, "caf\xc3\xa9")->u.str, "\xe2\x82\xac"),
              "UTF-8 key and value");
        CHECK(!json_get(root, "missing") && !json_get(a, "x"), "absent keys, lookup in an array");
    }
    json_free(d);

    /* A NUL inside a string is kept (the length says so). */
    d = parse_ok("\"a\\u0000b\"");
    CHECK(d && json_root(d)->n == 3 && json_root(d)->u.str[1] == 0, "\\u0000 kept");
    json_free(d);
    /* An object with many keys: lookups by binary search all hit. */
    char big[40000];
    size_t n = 0;
    big[n++] = '{';
    for (int i = 0; i < 2000; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "%s\"k%d\":%d", i ? "," : "", (i * 7919) % 2000, i);
    big[n++] = '}';
    big[n] = 0;
    d = parse_ok(big);
    int found = 0;
    for (int i = 0; d && i < 2000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        const json_value *v = json_get(json_root(d), key);
        found += v && (v->u.num.i * 7919) % 2000 == i;
    }
    CHECK(found == 2000, "2000-key object: %d lookups right", found);
    json_free(d);

    static const struct {
        const char *text, *expect;
    } bad[] = {
        {"", "unexpected end"},
        {"   ", "expected a value"},
        {"{\"a\":1,}", "expected a string key"},
        {"[1,2,]", "expected a value"},
        {"[1 2]", "expected ',' or ']'"},
        {"{\"a\" 1}", "expected ':'"},
        {"{'a':1}", "expected a string key"},
        {"{\"a\":1} x", "unexpected text after"},
        {"01", "leading zero"},
        {"-", "expected a digit"},
        {"1.", "after the decimal point"},
        {"1e", "in the exponent"},
        {"NaN", "expected a value"},
        {"Infinity", "expected a value"},
        {"tru", "expected a value"},
        {"// c\n1", "expected a value"},
        {"\"abc", "unterminated string"},
        {"\"a\tb\"", "control character"},
        {"\"\\x\"", "invalid escape"},
        {"\"\\u12\"", "four hex digits"},
        {"\"\\ud800\"", "high surrogate"},
        {"\"\\ud800\\u0041\"", "high surrogate"},
        {"\"\\udc00\"", "lone low surrogate"},
        {"\"\xc3\"", "invalid UTF-8"},
        {"\"\xc0\xaf\"", "invalid UTF-8"},      /* overlong '/' */
        {"\"\xed\xa0\x80\"", "invalid UTF-8"},  /* encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", "invalid UTF-8"}, /* above U+10FFFF */
        {"{\"a\":1,\"b\":2,\"a\":3}", "duplicate key \"a\""},
        {"{\"a\\u0062\":1,\"ab\":2}", "duplicate key \"ab\""},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        parse_bad(bad[i].text, strlen(bad[i].text), bad[i].expect);
    /* An embedded NUL outside a string, and nesting one past the limit (and at it). */
    parse_bad("[1,\0 2]", 7, "found byte 0x00");
    char deep[2 * JSON_MAX_DEPTH + 8];
    memset(deep, '[', JSON_MAX_DEPTH + 1);
    memset(deep + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    parse_bad(deep, 2 * (JSON_MAX_DEPTH + 1), "nested deeper than");
    d = NULL;
    CHECK(json_parse(deep + 1, 2 * JSON_MAX_DEPTH, &d) == VKLLM_OK, "%d levels accepted: %s", JSON_MAX_DEPTH,
          vk_error_message());
    json_free(d);
    /* Messages give line and column. */
    const char *lines = "{\n  \"a\": 1,\n  \"b\": ?\n}";
    parse_bad(lines, strlen(lines), "line 3 column 8");
    printf("json: %d checks\n", checks);
}

/* ---- safetensors images ------------------------------------------------------------------ */

typedef struct image {
    uint8_t *p;
    size_t n;
} image;

/* 8-byte length, the header padded with spaces to a multiple of 8, data_len bytes of a
 * pattern. */
static image make_image(const char *header, size_t data_len)
{
    size_t h = strlen(header), padded = (h + 7) / 8 * 8;
    image im = {malloc(8 + padded + data_len), 8 + padded + data_len};
    for (int i = 0; i < 8; i++)
        im.p[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(im.p + 8, header, h);
    memset(im.p + 8 + h, ' ', padded - h);
    for (size_t i = 0; i < data_len; i++)
        im.p[8 + padded + i] = (uint8_t)(i * 13 + 5);
    return im;
}

/* Parses a copy in an exact-size allocation. */
static vkllm_status parse_copy(const uint8_t *p, size_t n, st_file **out)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    vkllm_status s = st_parse(copy, n, out);
    if (*out) { /* keep the copy alive with the file: reparse from a leaked copy is not needed */
        st_close(*out);
        *out = NULL;
    }
    free(copy);
    return s;
}

static void expect_bad(const char *what, const uint8_t *p, size_t n, const char *expect)
{
    st_file *f = NULL;
    vk_error_clear();
    vkllm_status s = parse_copy(p, n, &f);
    CHECK(s == VKLLM_ERR_BAD_FILE, "%s: accepted or wrong status %d", what, s);
    CHECK(strstr(vk_error_message(), expect), "%s: message lacks \"%s\": %s", what, expect, vk_error_message());
    printf("  %s: %s\n", what, vk_error_message());
}

static void expect_bad_header(const char *what, const char *header, size_t data_len, const char *expect)
{
    image im = make_image(header, data_len);
    expect_bad(what, im.p, im.n, expect);
    free(im.p);
}

#define VALID_HEADER                                                                                   \
    "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"\\u00e9\"},"                                        \
    "\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"                                 \
    "\"b\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[24,32]},"                                  \
    "\"c\\u00e9\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[32,34]},"                           \
    "\"e\":{\"dtype\":\"I64\",\"shape\":[0,5],\"data_offsets\":[34,34]}}"
#define VALID_DATA 34

static void test_hostile(void)
{
    int before = checks;
    image im = make_image(VALID_HEADER, VALID_DATA);
    st_file *f = NULL;
    vkllm_status s = st_parse(im.p, im.n, &f);
    CHECK(s == VKLLM_OK, "valid image: %s", vk_error_message());
    if (f) {
        uint64_t data = f->data_offset;
        CHECK(f->n_tensors == 4 && f->n_meta == 2, "%" PRIu64 " tensors, %" PRIu64 " metadata", f->n_tensors, f->n_meta);
        CHECK(st_meta_get(f, "format") && !strcmp(st_meta_get(f, "format"), "pt"), "metadata format");
        CHECK(st_meta_get(f, "note") && !strcmp(st_meta_get(f, "note"), "\xc3\xa9"), "metadata escape");
        const st_tensor *a = st_find(f, "a"), *b = st_find(f, "b"), *c = st_find(f, "c\xc3\xa9"), *e = st_find(f, "e");
        CHECK(a && a->dtype == ST_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->size == 24 &&
              a->data == im.p + data, "tensor a");
        CHECK(b && b->dtype == ST_F16 && b->n_dims == 1 && b->shape[0] == 4 && b->data == im.p + data + 24, "tensor b");
        CHECK(c && c->dtype == ST_BF16 && c->n_dims == 0 && c->size == 2 && c->data == im.p + data + 32, "tensor c");
        CHECK(e && e->dtype == ST_I64 && e->size == 0, "empty tensor e");
        CHECK(!st_find(f, "z") && !st_find(f, "__metadata__"), "absent names");
        CHECK(f->tensors[0].name[0] == 'a', "header order kept");
    }
    st_close(f);

    /* Every truncation fails (the last tensor ends at the end of the file). */
    int trunc_ok = 0;
    for (size_t len = 0; len < im.n; len++) {
        f = NULL;
        s = parse_copy(im.p, len, &f);
        trunc_ok += s == VKLLM_ERR_BAD_FILE && vk_error_message()[0];
    }
    CHECK(trunc_ok == (int)im.n, "truncations: %d of %zu rejected with a message", trunc_ok, im.n);
    /* Every single-bit flip: accepted, or BAD_FILE with a message; never a crash. */
    int flips = 0, flips_rejected = 0, flips_bad_status = 0;
    uint8_t *tmp = malloc(im.n);
    for (size_t bit = 0; bit < im.n * 8; bit++) {
        memcpy(tmp, im.p, im.n);
        tmp[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        vk_error_clear();
        s = parse_copy(tmp, im.n, &f);
        flips++;
        if (s) {
            flips_rejected++;
            flips_bad_status += s != VKLLM_ERR_BAD_FILE || !vk_error_message()[0];
        }
    }
    free(tmp);
    CHECK(flips_bad_status == 0 && flips_rejected > 0 && flips_rejected < flips,
          "bit flips: %d, %d rejected, %d without BAD_FILE and a message", flips, flips_rejected, flips_bad_status);
    printf("hostile: %zu truncations rejected; %d bit flips, %d rejected\n", im.n, flips, flips_rejected);

    /* Header length: huge, past the limit, past the end, zero. */
    uint8_t *h = malloc(im.n);
    memcpy(h, im.p, im.n);
    memset(h, 0xff, 8);
    expect_bad("length 2^64-1", h, im.n, "exceeds the limit");
    uint64_t lim = (uint64_t)ST_MAX_HEADER + 1;
    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t)(lim >> (8 * i));
    expect_bad("length limit + 1", h, im.n, "exceeds the limit");
    uint64_t past = im.n - 8 + 1;
    for (int i = 0; i < 8; i++)
        h[i] = (uint8_t)(past >> (8 * i));
    expect_bad("length past the end", h, im.n, "runs past the end of the file");
    memset(h, 0, 8);
    expect_bad("length 0", h, im.n, "does not start with '{'");
    free(h);
    free(im.p);
    expect_bad("7 bytes", (const uint8_t *)"\x01\0\0\0\0\0\0", 7, "too short");

    static const struct {
        const char *what, *header;
        size_t data;
        const char *expect;
    } cases[] = {
        {"not an object", "[1]", 0, "does not start with '{'"},
        {"bad JSON", "{\"a\":{\"dtype\":\"F32\",}}", 0, "safetensors header: JSON: expected a string key"},
        {"text after the object", "{} {}", 0, "unexpected text after"},
        {"unknown dtype", "{\"w\":{\"dtype\":\"F31\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': unknown dtype 'F31'"},
        {"dtype not a string", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
         "tensor 'w': \"dtype\" is not a string"},
        {"offsets past the end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 16,
         "tensor 'w': data_offsets [0, 400] run past the end of the data section (16 bytes"},
        {"offsets far past the end",
         "{\"w\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[9223372036854775000,9223372036854775016]}}", 16,
         "run past the end"},
        {"shape/size mismatch", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24,
         "tensor 'w': data_offsets [0, 20] hold 20 bytes, but F32 x shape [2, 3] needs 24"},
        {"end before begin", "{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
         "tensor 'w': data_offsets [8, 4] end before they begin"},
        {"overlap", "{\"p\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                    "\"q\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24,
         "tensor 'q' (bytes 8..24) overlaps tensor 'p' (bytes 0..16)"},
        {"duplicate name", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                           "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
         "duplicate key \"w\""},
        {"negative offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
         "tensor 'w': \"data_offsets\" are not non-negative integers"},
        {"fractional offset", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1.0]}}", 1,
         "\"data_offsets\" are not non-negative integers"},
        {"offset beyond int64", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,18446744073709551615]}}", 1,
         "\"data_offsets\" are not non-negative integers"},
        {"three offsets", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 2,
         "tensor 'w': \"data_offsets\" is not an array of two integers"},
        {"negative dimension", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
         "tensor 'w': shape entry 0 is not a non-negative integer"},
        {"fractional dimension", "{\"w\":{\"dtype\":\"U8\",\"shape\":[2,1.5],\"data_offsets\":[0,1]}}", 1,
         "shape entry 1 is not"},
        {"nine dimensions", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "tensor 'w': shape has 9 dimensions, at most 8"},
        {"shape overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
         0, "tensor 'w': the byte size of its shape overflows"},
        {"bytes overflow", "{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0,
         "overflows"},
        {"no dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor 'w': no \"dtype\""},
        {"no shape", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor 'w': no \"shape\""},
        {"no offsets", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, "tensor 'w': no \"data_offsets\""},
        {"entry not an object", "{\"w\":5}", 0, "tensor 'w': the entry is not an object but a number"},
        {"metadata not strings", "{\"__metadata__\":{\"k\":1}}", 0, "__metadata__ key 'k' is a number"},
        {"metadata not an object", "{\"__metadata__\":[]}", 0, "__metadata__ is an array"},
        {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "contains a NUL"},
        {"empty name", "{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "empty name"},
        {"bad UTF-8 name", "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "invalid UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_bad_header(cases[i].what, cases[i].header, cases[i].data, cases[i].expect);

    /* Deep nesting inside the header stops at the JSON limit. */
    char deep[400];
    size_t n = (size_t)snprintf(deep, sizeof deep, "{\"w\":");
    for (int i = 0; i < 100; i++)
        deep[n++] = '[';
    for (int i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = 0;
    expect_bad_header("deep nesting", deep, 0, "nested deeper than");
    /* Gaps between tensors are allowed; zero-size tensors may sit anywhere. */
    image gap = make_image("{\"p\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
                           "\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[5,5]}}", 8);
    f = NULL;
    CHECK(st_parse(gap.p, gap.n, &f) == VKLLM_OK, "gap and empty tensor: %s", vk_error_message());
    st_close(f);
    free(gap.p);
    printf("hostile: %d checks\n", checks - before);
}

/* ---- Hugging Face folders ---------------------------------------------------------------- */

typedef struct st_writer {
    char header[16384];
    size_t hn;
    uint8_t data[1 << 16];
    size_t dn;
} st_writer;

static void sw_init(st_writer *w)
{
    w->hn = (size_t)snprintf(w->header, sizeof w->header, "{\"__metadata__\":{\"format\":\"pt\"}");
    w->dn = 0;
}

/* Adds a tensor of `dtype` with shape dims[0..n); values are small floats in that dtype. */
static void sw_add(st_writer *w, const char *name, const char *dtype, int n, const uint64_t *dims)
{
    uint64_t elems = 1;
    for (int i = 0; i < n; i++)
        elems *= dims[i];
    uint32_t es = !strcmp(dtype, "F32") || !strcmp(dtype, "I32") ? 4 : !strcmp(dtype, "I64") ? 8 : 2;
    size_t begin = w->dn;
    for (uint64_t i = 0; i < elems; i++) {
        float v = (float)((int)((i * 37 + begin) % 17) - 8) / 16.0f;
        uint8_t *p = w->data + w->dn;
        if (es == 4) {
            memcpy(p, &v, 4);
        } else if (es == 8) {
            memset(p, 0, 8);
        } else {
            uint16_t h = !strcmp(dtype, "BF16") ? vk_fp32_to_bf16(v) : vk_fp32_to_fp16(v);
            memcpy(p, &h, 2);
        }
        w->dn += es;
    }
    w->hn += (size_t)snprintf(w->header + w->hn, sizeof w->header - w->hn, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                              name, dtype);
    for (int i = 0; i < n; i++)
        w->hn += (size_t)snprintf(w->header + w->hn, sizeof w->header - w->hn, "%s%" PRIu64, i ? "," : "", dims[i]);
    w->hn += (size_t)snprintf(w->header + w->hn, sizeof w->header - w->hn, "],\"data_offsets\":[%zu,%zu]}", begin,
                              w->dn);
}

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(p, 1, n, fp) != n) {
        printf("FAIL: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fclose(fp);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    write_file(dir, name, text, strlen(text));
}

static void sw_write(st_writer *w, const char *dir, const char *name)
{
    w->header[w->hn++] = '}';
    w->header[w->hn] = '\0';
    image im = make_image(w->header, 0);
    size_t total = im.n + w->dn;
    uint8_t *all = malloc(total);
    memcpy(all, im.p, im.n);
    memcpy(all + im.n, w->data, w->dn);
    write_file(dir, name, all, total);
    free(all);
    free(im.p);
}

static void remove_file(const char *dir, const char *name)
{
    char path[2048];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) < (int)sizeof path)
        unlink(path);
}

/* A fresh, empty folder under tmp. */
static const char *folder(const char *tmp, const char *name)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    mkdir(path, 0755);
    static const char *const files[] = {"config.json", "model.safetensors", "model.safetensors.index.json",
                                        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        remove_file(path, files[i]);
    return path;
}

#define LLAMA_CONFIG(extra)                                                                              \
    "{\"model_type\": \"llama\", \"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 8,"      \
    " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"num_hidden_layers\": 1,"              \
    " \"intermediate_size\": 16, \"vocab_size\": 10, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0," \
    " \"max_position_embeddings\": 128, \"hidden_act\": \"silu\", \"tie_word_embeddings\": false" extra "}"

/* The tensors of a 1-layer llama: embedding BF16, matrices F16, norms F32. `layer_of` moves
 * a tensor to the second writer (sharding). */
static void llama_tensors(st_writer *w1, st_writer *w2, const char *extra_name, const char *extra_dtype)
{
    uint64_t embd[2] = {10, 8}, vec[1] = {8}, q[2] = {8, 8}, kv[2] = {4, 8}, up[2] = {16, 8}, down[2] = {8, 16};
    sw_add(w1, "model.embed_tokens.weight", "BF16", 2, embd);
    sw_add(w1, "model.layers.0.input_layernorm.weight", "F32", 1, vec);
    sw_add(w1, "model.layers.0.self_attn.q_proj.weight", "F16", 2, q);
    sw_add(w1, "model.layers.0.self_attn.k_proj.weight", "F16", 2, kv);
    sw_add(w1, "model.layers.0.self_attn.v_proj.weight", "F16", 2, kv);
    sw_add(w1, "model.layers.0.self_attn.o_proj.weight", "F16", 2, q);
    sw_add(w2, "model.layers.0.post_attention_layernorm.weight", "F32", 1, vec);
    sw_add(w2, "model.layers.0.mlp.gate_proj.weight", "F16", 2, up);
    sw_add(w2, "model.layers.0.mlp.up_proj.weight", "F16", 2, up);
    sw_add(w2, "model.layers.0.mlp.down_proj.weight", "F32", 2, down);
    sw_add(w2, "model.norm.weight", "F32", 1, vec);
    sw_add(w2, "lm_head.weight", "F16", 2, embd);
    if (extra_name) {
        uint64_t one[2] = {8, 8};
        sw_add(w2, extra_name, extra_dtype, 2, one);
    }
}

static st_writer w1, w2;

static void write_llama(const char *dir, const char *config, const char *extra_name, const char *extra_dtype)
{
    write_text(dir, "config.json", config);
    sw_init(&w1);
    llama_tensors(&w1, &w1, extra_name, extra_dtype);
    sw_write(&w1, dir, "model.safetensors");
}

static vkllm_status open_expect(const char *dir, gguf_file **f, vkllm_status want, const char *expect)
{
    *f = NULL;
    vk_error_clear();
    vkllm_status s = hf_open(dir, f);
    if (want == VKLLM_OK) {
        CHECK(s == VKLLM_OK && *f, "%s: %s", dir, vk_error_message());
    } else {
        CHECK(s == want && !*f, "%s: status %d, expected %d (%s)", dir, s, want, vk_error_message());
        CHECK(strstr(vk_error_message(), expect), "%s: message lacks \"%s\": %s", dir, expect, vk_error_message());
        printf("  rejected: %s\n", vk_error_message());
    }
    return s;
}

static uint64_t kv_u64(const gguf_file *f, const char *key)
{
    uint64_t v = UINT64_MAX;
    gguf_get_u64(f, key, &v);
    return v;
}

static int kv_str_is(const gguf_file *f, const char *key, const char *want)
{
    gguf_str s;
    return gguf_get_str(f, key, &s) == VKLLM_OK && s.len == strlen(want) && !memcmp(s.data, want, s.len);
}

static int count_op(const g_graph *g, g_op op)
{
    int n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].op == op;
    return n;
}

static void check_llama(const gguf_file *f, const char *what)
{
    CHECK(kv_str_is(f, "general.architecture", "llama"), "%s: architecture", what);
    CHECK(kv_u64(f, "llama.embedding_length") == 8 && kv_u64(f, "llama.block_count") == 1 &&
              kv_u64(f, "llama.attention.head_count") == 2 && kv_u64(f, "llama.attention.head_count_kv") == 1 &&
              kv_u64(f, "llama.feed_forward_length") == 16 && kv_u64(f, "llama.context_length") == 128 &&
              kv_u64(f, "vkllm.rope.half") == 1,
          "%s: llama.* keys", what);
    double theta = 0, eps = 0;
    gguf_get_f64(f, "llama.rope.freq_base", &theta);
    gguf_get_f64(f, "llama.attention.layer_norm_rms_epsilon", &eps);
    CHECK(theta == 500000.0 && (float)eps == 1e-5f, "%s: rope base %g, eps %g", what, theta, eps);
    CHECK(f->n_tensors == 12, "%s: %" PRIu64 " tensors", what, f->n_tensors);
    const gguf_tensor *e = gguf_find_tensor(f, "token_embd.weight"), *d = gguf_find_tensor(f, "blk.0.ffn_down.weight"),
                      *k = gguf_find_tensor(f, "blk.0.attn_k.weight"), *n = gguf_find_tensor(f, "output_norm.weight"),
                      *o = gguf_find_tensor(f, "output.weight");
    CHECK(e && e->type == GGML_BF16 && e->ne[0] == 8 && e->ne[1] == 10 && e->n_dims == 2 && e->size == 160,
          "%s: token_embd BF16 [8, 10]", what);
    CHECK(d && d->type == GGML_F32 && d->ne[0] == 16 && d->ne[1] == 8, "%s: ffn_down F32 [16, 8] (in, out)", what);
    CHECK(k && k->type == GGML_F16 && k->ne[0] == 8 && k->ne[1] == 4, "%s: attn_k F16 [8, 4]", what);
    CHECK(n && n->type == GGML_F32 && n->n_dims == 1 && n->ne[0] == 8 && n->ne[1] == 1, "%s: output_norm", what);
    CHECK(o && o->type == GGML_F16, "%s: output.weight from lm_head", what);
    /* The data is the file's: the first BF16 value of the embedding is the writer's first. */
    if (e) {
        uint16_t h;
        memcpy(&h, e->data, 2);
        CHECK(vk_bf16_to_fp32(h) == -0.5f, "%s: embedding data %g", what, vk_bf16_to_fp32(h));
    }
    g_graph g;
    vkllm_status s = g_build(f, 1, &g);
    CHECK(s == VKLLM_OK, "%s: g_build: %s", what, vk_error_message());
    if (!s) {
        int half = 0, ropes = 0;
        for (uint32_t i = 0; i < g.n_nodes; i++)
            if (g.nodes[i].op == G_ROPE) {
                ropes++;
                half += g.nodes[i].rope.mode == 1;
            }
        CHECK(ropes == 2 && half == 2, "%s: %d of %d rope nodes half-split", what, half, ropes);
        CHECK(g.hp.n_vocab == 10 && g.hp.head_dim == 4 && g.hp.n_head_kv == 1 && g.hp.n_pos == 0, "%s: hparams", what);
        g_free(&g);
    }
}

static void test_hf(const char *tmp, const char *opt_dir)
{
    int before = checks;
    gguf_file *f;
    mkdir(tmp, 0755);

    /* llama, one file */
    const char *dir = folder(tmp, "llama");
    write_llama(dir, LLAMA_CONFIG(""), NULL, NULL);
    if (!open_expect(dir, &f, VKLLM_OK, NULL))
        check_llama(f, "llama single file");
    gguf_close(f);

    /* quantization_config: GPTQ and AWQ (GEMM) with 4 bits only (the layers themselves:
     * conformance_llama_gptq, conformance_llama_awq) */
    dir = folder(tmp, "llama-awq-gemv");
    write_llama(dir, LLAMA_CONFIG(", \"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4, \"version\": \"gemv\"}"),
                NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "only GPTQ (formats gptq, gptq_v2) and AWQ (GEMM");
    dir = folder(tmp, "llama-gptq8");
    write_llama(dir, LLAMA_CONFIG(", \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 8}"), NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "8 bits");
    dir = folder(tmp, "llama-awq-stray");
    write_llama(dir, LLAMA_CONFIG(", \"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 4}"),
                "model.layers.0.mlp.up_proj.scales", "F16");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "no model.layers.0.mlp.up_proj.qweight beside it in this AWQ");
    dir = folder(tmp, "llama-gptq-stray");
    write_llama(dir, LLAMA_CONFIG(", \"quantization_config\": {\"quant_method\": \"gptq\", \"bits\": 4}"),
                "model.layers.0.self_attn.q_proj.qzeros", "I32");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "no model.layers.0.self_attn.q_proj.qweight beside it in this GPTQ");

    /* llama, two shards and an index */
    dir = folder(tmp, "llama-sharded");
    write_text(dir, "config.json", LLAMA_CONFIG(""));
    sw_init(&w1);
    sw_init(&w2);
    llama_tensors(&w1, &w2, NULL, NULL);
    sw_write(&w1, dir, "model-00001-of-00002.safetensors");
    sw_write(&w2, dir, "model-00002-of-00002.safetensors");
    static const char *const first[] = {"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight",
                                        "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight",
                                        "model.layers.0.self_attn.v_proj.weight", "model.layers.0.self_attn.o_proj.weight"};
    static const char *const second[] = {"model.layers.0.post_attention_layernorm.weight",
                                         "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight",
                                         "model.layers.0.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"};
    char index[4096];
    size_t n = (size_t)snprintf(index, sizeof index, "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {");
    for (int i = 0; i < 6; i++)
        n += (size_t)snprintf(index + n, sizeof index - n, "%s\"%s\": \"model-00001-of-00002.safetensors\"",
                              i ? ", " : "", first[i]);
    for (int i = 0; i < 6; i++)
        n += (size_t)snprintf(index + n, sizeof index - n, ", \"%s\": \"model-00002-of-00002.safetensors\"", second[i]);
    snprintf(index + n, sizeof index - n, "}}");
    write_text(dir, "model.safetensors.index.json", index);
    if (!open_expect(dir, &f, VKLLM_OK, NULL))
        check_llama(f, "llama sharded");
    gguf_close(f);

    /* The index against the shards. */
    char *moved = strstr(index, "\"lm_head.weight\": \"model-00002");
    moved[strlen("\"lm_head.weight\": \"model-0000")] = '1';
    write_text(dir, "model.safetensors.index.json", index);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "holds tensor lm_head.weight, which the index places in another shard");
    moved[strlen("\"lm_head.weight\": \"model-0000")] = '2';
    char *end = strstr(index, "}}");
    snprintf(end, sizeof index - (size_t)(end - index), ", \"model.extra\": \"model-00002-of-00002.safetensors\"}}");
    write_text(dir, "model.safetensors.index.json", index);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "the index places tensor model.extra in model-00002-of-00002.safetensors, "
                                             "which does not hold it");
    end = strstr(index, ", \"model.extra\"");
    snprintf(end, sizeof index - (size_t)(end - index), ", \"x\": \"../model-00002-of-00002.safetensors\"}}");
    write_text(dir, "model.safetensors.index.json", index);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "weight_map entry x does not name a .safetensors file");
    end = strstr(index, ", \"x\"");
    snprintf(end, sizeof index - (size_t)(end - index), "}}");
    char *drop = strstr(index, ", \"model.norm.weight\"");
    memmove(drop, strstr(drop + 2, ", \"lm_head"), strlen(strstr(drop + 2, ", \"lm_head")) + 1);
    write_text(dir, "model.safetensors.index.json", index);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "holds tensor model.norm.weight, which the index does not list");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": []}");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "no \"weight_map\" object");
    /* A truncated shard: the reader's error, prefixed with the shard's path. */
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"model-00001-of-00002.safetensors\"}}");
    write_file(dir, "model-00001-of-00002.safetensors", "\x40\0\0\0\0\0\0\0{\"a\"", 12);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "model-00001-of-00002.safetensors: truncated file");

    /* Broken llama folders. */
    dir = folder(tmp, "broken");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "no config.json");
    write_text(dir, "config.json", LLAMA_CONFIG(""));
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "neither model.safetensors nor model.safetensors.index.json");
    write_llama(dir, "{\"model_type\": \"gpt2\"}", NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "model_type \"gpt2\" is not supported");
    write_llama(dir, "{\"hidden_size\": 8}", NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "no \"model_type\"");
    write_llama(dir, "{\"model_type\": \"llama\", \"hidden_size\": 8,}", NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "config.json: JSON: expected a string key in an object at line 1");
    write_llama(dir, "{\"model_type\": \"llama\", \"hidden_size\": \"8\"}", NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "\"hidden_size\" is a string, expected an integer");
    write_llama(dir, "{\"model_type\": \"llama\", \"hidden_size\": 8, \"num_hidden_layers\": 1}", NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "config.json: \"num_attention_heads\" is missing");
    write_llama(dir, LLAMA_CONFIG(", \"hidden_act\": \"gelu\""), NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "duplicate key \"hidden_act\"");
    write_llama(dir, LLAMA_CONFIG(", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0}"), NULL, NULL);
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "rope_scaling type \"llama3\" is not supported");
    write_llama(dir, LLAMA_CONFIG(", \"vocab_size_x\": 1"), "model.layers.0.self_attn.q_norm.weight", "F32");
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "tensor model.layers.0.self_attn.q_norm.weight: not a weight vkllm knows");
    write_llama(dir, LLAMA_CONFIG(""), "model.layers.3.mlp.up_proj.weight", "F16");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "tensor model.layers.3.mlp.up_proj.weight: layer 3, but config.json has 1");
    write_llama(dir, LLAMA_CONFIG(""), "model.layers.0.mlp.up_proj.bias", "I64");
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "tensor model.layers.0.mlp.up_proj.bias has dtype I64");
    write_llama(dir, LLAMA_CONFIG(""), "layers.0.mlp.up_proj.weight", "F16"); /* also under "model." */
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "two tensors of the folder map to blk.0.ffn_up.weight");
    /* The rotary buffer of old checkpoints is ignored, whatever its dtype. */
    write_llama(dir, LLAMA_CONFIG(""), "model.layers.0.self_attn.rotary_emb.inv_freq", "F32");
    if (!open_expect(dir, &f, VKLLM_OK, NULL))
        CHECK(f->n_tensors == 12, "inv_freq ignored: %" PRIu64 " tensors", f->n_tensors);
    gguf_close(f);
    /* vocab_size and lm_head against the tensors. */
    write_text(dir, "config.json",
               "{\"model_type\": \"llama\", \"hidden_size\": 8, \"num_attention_heads\": 2, \"num_hidden_layers\": 1,"
               " \"intermediate_size\": 16, \"vocab_size\": 11}");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "vocab_size 11, but the token embedding has 10 rows");
    write_text(dir, "config.json", LLAMA_CONFIG(""));
    sw_init(&w1);
    uint64_t embd[2] = {10, 8}, vec[1] = {8};
    sw_add(&w1, "model.embed_tokens.weight", "F32", 2, embd);
    sw_add(&w1, "model.norm.weight", "F32", 1, vec);
    sw_write(&w1, dir, "model.safetensors");
    open_expect(dir, &f, VKLLM_ERR_BAD_FILE, "lm_head.weight is missing and config.json does not tie it");

    /* mistral: the llama architecture with its window; qwen2: its own. */
    dir = folder(tmp, "mistral");
    const char *mistral = "{\"model_type\": \"mistral\", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                          " \"num_key_value_heads\": 1, \"num_hidden_layers\": 1, \"intermediate_size\": 16,"
                          " \"sliding_window\": 4, \"head_dim\": 8}";
    write_llama(dir, mistral, NULL, NULL);
    if (!open_expect(dir, &f, VKLLM_OK, NULL)) {
        CHECK(kv_str_is(f, "general.architecture", "llama") && kv_u64(f, "llama.attention.sliding_window") == 4 &&
                  kv_u64(f, "llama.attention.key_length") == 8 && kv_u64(f, "llama.rope.dimension_count") == 8,
              "mistral keys");
        g_graph g;
        /* head_dim 8 x 2 heads = 16 != hidden 8, but the q weight is [8, 8]: the graph says so. */
        vk_error_clear();
        CHECK(g_build(f, 1, &g) == VKLLM_ERR_BAD_FILE && strstr(vk_error_message(), "blk.0.attn_q.weight"),
              "head_dim contradicting attn_q: %s", vk_error_message());
    }
    gguf_close(f);
    write_llama(dir, "{\"model_type\": \"qwen2\", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                     " \"num_key_value_heads\": 1, \"num_hidden_layers\": 1, \"intermediate_size\": 16,"
                     " \"tie_word_embeddings\": true, \"sliding_window\": 4, \"use_sliding_window\": false}",
                NULL, NULL);
    if (!open_expect(dir, &f, VKLLM_OK, NULL)) {
        CHECK(kv_str_is(f, "general.architecture", "qwen2") && kv_u64(f, "qwen2.embedding_length") == 8 &&
                  !gguf_find(f, "qwen2.attention.sliding_window"),
              "qwen2 keys");
        g_graph g;
        CHECK(g_build(f, 0, &g) == VKLLM_OK, "qwen2 graph: %s", vk_error_message());
        g_free(&g);
    }
    gguf_close(f);

    /* A tiny OPT. */
    dir = folder(tmp, "opt");
    const char *opt_cfg = "{\"model_type\": \"opt\", \"hidden_size\": 8, \"num_attention_heads\": 2,"
                          " \"num_hidden_layers\": 2, \"ffn_dim\": 16, \"max_position_embeddings\": 6,"
                          " \"vocab_size\": 10, \"word_embed_proj_dim\": 8, \"do_layer_norm_before\": true,"
                          " \"activation_function\": \"%s\"%s}";
    char cfg[1024];
    sw_init(&w1);
    uint64_t pos[2] = {8, 8}, q[2] = {8, 8}, up[2] = {16, 8}, down[2] = {8, 16}, up_b[1] = {16};
    sw_add(&w1, "model.decoder.embed_tokens.weight", "F32", 2, embd);
    sw_add(&w1, "model.decoder.embed_positions.weight", "F16", 2, pos);
    sw_add(&w1, "model.decoder.final_layer_norm.weight", "F32", 1, vec);
    sw_add(&w1, "model.decoder.final_layer_norm.bias", "F32", 1, vec);
    for (int l = 0; l < 2; l++) {
        char name[128];
        static const char *const lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.out_proj"};
        for (int i = 0; i < 4; i++) {
            snprintf(name, sizeof name, "model.decoder.layers.%d.%s.weight", l, lin[i]);
            sw_add(&w1, name, "BF16", 2, q);
            snprintf(name, sizeof name, "model.decoder.layers.%d.%s.bias", l, lin[i]);
            sw_add(&w1, name, "F32", 1, vec);
        }
        static const char *const norms[] = {"self_attn_layer_norm", "final_layer_norm"};
        for (int i = 0; i < 2; i++) {
            snprintf(name, sizeof name, "model.decoder.layers.%d.%s.weight", l, norms[i]);
            sw_add(&w1, name, "F32", 1, vec);
            snprintf(name, sizeof name, "model.decoder.layers.%d.%s.bias", l, norms[i]);
            sw_add(&w1, name, "F32", 1, vec);
        }
        snprintf(name, sizeof name, "model.decoder.layers.%d.fc1.weight", l);
        sw_add(&w1, name, "F16", 2, up);
        snprintf(name, sizeof name, "model.decoder.layers.%d.fc1.bias", l);
        sw_add(&w1, name, "F32", 1, up_b);
        snprintf(name, sizeof name, "model.decoder.layers.%d.fc2.weight", l);
        sw_add(&w1, name, "F16", 2, down);
        snprintf(name, sizeof name, "model.decoder.layers.%d.fc2.bias", l);
        sw_add(&w1, name, "F32", 1, vec);
    }
    sw_write(&w1, dir, "model.safetensors");
    static const struct {
        const char *act;
        g_activation want;
    } acts[] = {{"relu", G_ACT_RELU}, {"gelu", G_ACT_GELU_ERF}, {"gelu_new", G_ACT_GELU}};
    for (int a = 0; a < 3; a++) {
        snprintf(cfg, sizeof cfg, opt_cfg, acts[a].act, "");
        write_text(dir, "config.json", cfg);
        if (open_expect(dir, &f, VKLLM_OK, NULL))
            continue;
        CHECK(kv_str_is(f, "general.architecture", "opt") && kv_u64(f, "opt.feed_forward_length") == 16 &&
                  kv_u64(f, "opt.context_length") == 6 && f->n_tensors == 36,
              "opt keys, %" PRIu64 " tensors", f->n_tensors);
        g_graph g;
        vkllm_status s = g_build(f, 1, &g);
        CHECK(s == VKLLM_OK, "opt graph: %s", vk_error_message());
        if (!s) {
            int ok_pos = 0, acts_ok = 0, n_act = 0;
            for (uint32_t i = 0; i < g.n_nodes; i++) {
                const g_node *nd = &g.nodes[i];
                if (nd->op == G_POS_EMBED)
                    ok_pos += nd->pos_offset == 2 && !strcmp(nd->weight[0], "position_embd.weight") &&
                              i + 1 < g.n_nodes && g.nodes[i + 1].op == G_ADD;
                if (nd->op == G_ACTIVATION) {
                    n_act++;
                    acts_ok += nd->activation == acts[a].want;
                }
            }
            CHECK(ok_pos == 1 && count_op(&g, G_ROPE) == 0 && count_op(&g, G_LAYERNORM) == 5,
                  "opt graph: position embedding then add, no rope, 5 LayerNorms");
            CHECK(n_act == 2 && acts_ok == 2, "opt %s: %d of %d activations as configured", acts[a].act, acts_ok, n_act);
            CHECK(g.hp.n_pos == 6 && g.hp.n_vocab == 10 && (float)g.hp.norm_eps == 1e-5f,
                  "opt hparams: %u positions", g.hp.n_pos);
            g_free(&g);
        }
        gguf_close(f);
    }
    static const struct {
        const char *act, *extra, *expect;
    } opt_bad[] = {
        {"relu", ", \"word_embed_proj_dim\": 4", "duplicate key"},
        {"silu", "", "activation_function \"silu\" is not supported"},
        {"relu", ", \"_remove_final_layer_norm\": true", "_remove_final_layer_norm"},
        {"relu", ", \"layer_norm_elementwise_affine\": false", "layer_norm_elementwise_affine"},
    };
    for (size_t i = 0; i < sizeof opt_bad / sizeof *opt_bad; i++) {
        snprintf(cfg, sizeof cfg, opt_cfg, opt_bad[i].act, opt_bad[i].extra);
        write_text(dir, "config.json", cfg);
        open_expect(dir, &f, strstr(opt_bad[i].expect, "duplicate") ? VKLLM_ERR_BAD_FILE : VKLLM_ERR_UNSUPPORTED,
                    opt_bad[i].expect);
    }
    write_text(dir, "config.json",
               "{\"model_type\": \"opt\", \"hidden_size\": 8, \"num_attention_heads\": 2, \"num_hidden_layers\": 2,"
               " \"ffn_dim\": 16, \"max_position_embeddings\": 6, \"word_embed_proj_dim\": 4}");
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "word_embed_proj_dim 4 != hidden_size 8 (project_in/project_out");
    write_text(dir, "config.json",
               "{\"model_type\": \"opt\", \"hidden_size\": 8, \"num_attention_heads\": 2, \"num_hidden_layers\": 2,"
               " \"ffn_dim\": 16, \"max_position_embeddings\": 6, \"do_layer_norm_before\": false}");
    open_expect(dir, &f, VKLLM_ERR_UNSUPPORTED, "do_layer_norm_before = false (post-LayerNorm");
    /* A position table too short for the offset. */
    write_text(dir, "config.json",
               "{\"model_type\": \"opt\", \"hidden_size\": 8, \"num_attention_heads\": 2, \"num_hidden_layers\": 2,"
               " \"ffn_dim\": 16, \"max_position_embeddings\": 6}");
    if (!open_expect(dir, &f, VKLLM_OK, NULL)) {
        gguf_tensor *t = (gguf_tensor *)gguf_find_tensor(f, "position_embd.weight");
        t->ne[1] = 2;
        g_graph g;
        vk_error_clear();
        CHECK(g_build(f, 1, &g) == VKLLM_ERR_BAD_FILE &&
                  strstr(vk_error_message(), "position_embd.weight has 2 rows; positions start at row 2"),
              "short position table: %s", vk_error_message());
    }
    gguf_close(f);

    /* The committed OPT folder (made by tests/conformance/make_fixtures.py with transformers). */
    if (!open_expect(opt_dir, &f, VKLLM_OK, NULL)) {
        CHECK(f->n_tensors == 52, "opt-hf: %" PRIu64 " tensors", f->n_tensors);
        const gguf_tensor *pe = gguf_find_tensor(f, "position_embd.weight");
        CHECK(pe && pe->type == GGML_F32 && pe->ne[0] == 96 && pe->ne[1] == 66, "opt-hf: position_embd [96, 66]");
        g_graph g;
        vkllm_status s = g_build(f, 0, &g);
        CHECK(s == VKLLM_OK, "opt-hf graph: %s", vk_error_message());
        if (!s) {
            CHECK(g.hp.n_vocab == 361 && g.hp.n_embd == 96 && g.hp.n_layer == 3 && g.hp.n_head == 3 &&
                      g.hp.n_ff == 192 && g.hp.n_pos == 64 && g.hp.n_ctx_train == 64,
                  "opt-hf hparams: vocab %u, embd %u, layers %u, positions %u", g.hp.n_vocab, g.hp.n_embd,
                  g.hp.n_layer, g.hp.n_pos);
            const char *output = NULL;
            for (uint32_t i = 0; i < g.n_nodes; i++)
                if (g.nodes[i].op == G_MATMUL)
                    output = g.nodes[i].weight[0];
            CHECK(output && !strcmp(output, "token_embd.weight"), "opt-hf: tied output (%s)", output ? output : "-");
            g_free(&g);
        }
    }
    gguf_close(f);
    printf("hf: %d checks\n", checks - before);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "json"))
        test_json();
    else if (!strcmp(mode, "hostile"))
        test_hostile();
    else if (!strcmp(mode, "hf") && argc == 4)
        test_hf(argv[2], argv[3]);
    else {
        fprintf(stderr, "usage: %s json | hostile | hf TMPDIR OPT_FOLDER\n", argv[0]);
        return 2;
    }
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}
