/* Fuzz target for the safetensors reader (lib/safetensors.c) and the JSON parser under it
 * (lib/json.c).
 *
 * With clang this is a libFuzzer target; meson builds it as `fuzz_safetensors` with
 * -fsanitize=fuzzer,address,undefined and the test of that name runs it from the seeds in
 * tests/fuzz_corpus_safetensors (written by tests/fixtures/make_safetensors_corpus.py with
 * the `safetensors` package). A longer run:
 *
 *     CC=clang meson setup build-fuzz && ninja -C build-fuzz tests/fuzz_safetensors
 *     cp -r tests/fuzz_corpus_safetensors /tmp/st-corpus
 *     build-fuzz/tests/fuzz_safetensors -max_len=65536 -max_total_time=3600 /tmp/st-corpus
 *
 * With gcc, tests/fuzz_safetensors_driver.c supplies main() and runs this target over the
 * corpus plus deterministic, header-aware mutations.
 *
 * Checked beyond "no crash, no sanitizer report": after a successful parse every tensor
 * lies inside the input at data_offset + begin, its size is elements x dtype size, no two
 * non-empty tensors overlap, every name is found by st_find, and metadata is complete. A
 * failed parse returns VKLLM_ERR_BAD_FILE, no file and a message. The input is also fed
 * to json_parse as a whole: a success must give a tree whose strings are valid UTF-8 of
 * the stated length, whose objects find each of their keys, nested within the limit. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "json.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void violation(const char *what)
{
    fprintf(stderr, "fuzz_safetensors: invariant violated: %s\n", what);
    abort();
}

static void check_file(const st_file *f, const uint8_t *data, size_t size)
{
    if (f->data_offset != 8 + f->header_len || f->data_offset > size)
        violation("data section outside the input");
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!t->name || !t->name[0])
            violation("tensor without a name");
        if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->n_dims > ST_MAX_DIMS)
            violation("dtype or rank out of range");
        uint64_t bytes = st_dtype_size(t->dtype);
        for (uint32_t d = 0; d < t->n_dims; d++)
            bytes *= t->shape[d]; /* cannot overflow when the reader accepted it */
        if (t->end < t->begin || t->size != t->end - t->begin || t->size != bytes)
            violation("size does not match dtype x shape");
        if (t->data != data + f->data_offset + t->begin || t->end > size - f->data_offset)
            violation("tensor data outside the input");
        if (t->size) {
            sink ^= t->data[0];
            sink ^= t->data[t->size - 1];
        }
        if (st_find(f, t->name) != t)
            violation("st_find does not find a tensor by its name");
        for (uint64_t j = 0; j < i && j < 512; j++) {
            const st_tensor *u = &f->tensors[j];
            if (t->size && u->size && t->begin < u->end && u->begin < t->end)
                violation("overlapping tensors accepted");
            if (!strcmp(t->name, u->name))
                violation("duplicate names accepted");
        }
    }
    for (uint64_t i = 0; i < f->n_meta; i++)
        if (!f->meta[i].key || !f->meta[i].value || st_meta_get(f, f->meta[i].key) == NULL)
            violation("incomplete metadata");
}

/* A strict decoder of UTF-8, independent of json.c's. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        uint32_t cp, len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if ((c & 0xe0) == 0xc0)
            len = 2, cp = c & 0x1f;
        else if ((c & 0xf0) == 0xe0)
            len = 3, cp = c & 0x0f;
        else if ((c & 0xf8) == 0xf0)
            len = 4, cp = c & 0x07;
        else
            return 0;
        if (n - i < len)
            return 0;
        for (uint32_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += len;
    }
    return 1;
}

static void walk_json(const json_value *v, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        violation("JSON nested deeper than the limit");
    switch (v->type) {
    case JSON_STRING:
        if (v->u.str[v->n] != '\0' || !valid_utf8((const unsigned char *)v->u.str, v->n))
            violation("JSON string not valid UTF-8 of its length");
        break;
    case JSON_ARRAY:
        for (uint32_t i = 0; i < v->n; i++)
            walk_json(&v->u.items[i], depth + 1);
        break;
    case JSON_OBJECT:
        for (uint32_t i = 0; i < v->n; i++) {
            const json_member *m = &v->u.members[i];
            if (!valid_utf8((const unsigned char *)m->key, m->key_len))
                violation("JSON key not valid UTF-8");
            if (strlen(m->key) == m->key_len && json_get(v, m->key) != &m->value)
                violation("json_get does not find a member by its key");
            walk_json(&m->value, depth + 1);
        }
        break;
    case JSON_NUMBER:
        if (v->u.num.is_int && (double)v->u.num.i != v->u.num.d)
            violation("JSON integer and double disagree");
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file *f = (st_file *)1;
    vk_error_clear();
    vkllm_status s = st_parse(data, size, &f);
    if (s == VKLLM_OK) {
        if (!f)
            violation("success without a file");
        check_file(f, data, size);
        st_close(f);
    } else {
        if (f)
            violation("failure left a file");
        if (s != VKLLM_ERR_BAD_FILE && s != VKLLM_ERR_OUT_OF_HOST_MEMORY)
            violation("failure with a status other than BAD_FILE");
        if (!vk_error_message()[0])
            violation("failure without a message");
    }
    json_doc *doc = NULL;
    vk_error_clear();
    s = json_parse((const char *)data, size, &doc);
    if (s == VKLLM_OK)
        walk_json(json_root(doc), 0);
    else if (doc || !vk_error_message()[0])
        violation("JSON failure without a message, or with a document");
    json_free(doc);
    return 0;
}
