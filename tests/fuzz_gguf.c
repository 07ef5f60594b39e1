/* Fuzz target for the GGUF reader (lib/gguf.c).
 *
 * With clang this is a libFuzzer target; meson builds it as `fuzz_gguf` with
 * -fsanitize=fuzzer,address,undefined and the `fuzz_gguf` test runs 20000 inputs grown
 * from the seeds in tests/fuzz_corpus. A longer run (writes new inputs to the first
 * directory; crashes go to ./crash-*):
 *
 *     CC=clang meson setup build-fuzz && ninja -C build-fuzz tests/fuzz_gguf
 *     cp -r tests/fuzz_corpus /tmp/gguf-corpus
 *     build-fuzz/tests/fuzz_gguf -max_len=65536 -max_total_time=3600 -jobs=2 \
 *         /tmp/gguf-corpus
 *
 * With gcc (no libFuzzer), tests/fuzz_gguf_driver.c supplies main() and runs the target
 * over the corpus plus deterministic mutations.
 *
 * Besides "no crash, no sanitizer report", the target checks what a successful parse
 * promises: every string, array and tensor lies inside the input, every key and tensor
 * is found by name, and sizes agree with the shapes. A failed parse must return
 * VKLLM_ERR_BAD_FILE, no file, and a message. Any violation aborts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "quant.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t *map_lo, *map_hi;
static volatile uint8_t sink;

static void violation(const char *what)
{
    fprintf(stderr, "fuzz_gguf: invariant violated: %s\n", what);
    abort();
}

/* [p, p + n) must lie in the input; reading its ends lets ASan double-check. */
static void inside(const void *ptr, uint64_t n, const char *what)
{
    const uint8_t *p = ptr;
    if (n == 0)
        return;
    if (p < map_lo || p > map_hi || n > (uint64_t)(map_hi - p))
        violation(what);
    sink ^= p[0];
    sink ^= p[n - 1];
}

static void walk_array(const gguf_array *a, int depth)
{
    if (depth > GGUF_MAX_ARRAY_DEPTH)
        violation("array nesting deeper than the limit");
    if (a->elem_type >= GGUF_VALUE_TYPE_COUNT)
        violation("unknown element type accepted");
    size_t es = gguf_value_size(a->elem_type);
    if (es) {
        inside(a->data, a->n * es, "scalar array data");
        if (a->n) {
            double f = gguf_arr_f64(a, a->n / 2);
            uint64_t bits;
            memcpy(&bits, &f, sizeof bits);
            sink ^= (uint8_t)(gguf_arr_u64(a, a->n - 1) ^ (uint64_t)gguf_arr_i64(a, 0) ^ bits);
        }
    } else if (a->elem_type == GGUF_STRING) {
        for (uint64_t i = 0; i < a->n; i++)
            inside(a->strings[i].data, a->strings[i].len, "array string");
    } else {
        for (uint64_t i = 0; i < a->n; i++)
            walk_array(&a->arrays[i], depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gguf_file *f = NULL;
    vk_error_clear();
    vkllm_status st = gguf_parse(data, size, &f);
    if (st != VKLLM_OK) {
        if (f != NULL)
            violation("failed parse returned a file");
        if (st != VKLLM_ERR_BAD_FILE)
            violation("failed parse with a status other than BAD_FILE");
        if (vk_error_message()[0] == '\0')
            violation("failed parse without a message");
        return 0;
    }
    map_lo = data;
    map_hi = data + size;
    if (f->version != 2 && f->version != 3)
        violation("version");
    if (f->alignment == 0 || (f->alignment & (f->alignment - 1)))
        violation("alignment");
    for (uint64_t i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        if (gguf_find(f, kv->key) != kv)
            violation("key lookup");
        if (kv->type == GGUF_STRING)
            inside(kv->v.s.data, kv->v.s.len, "string value");
        else if (kv->type == GGUF_ARRAY)
            walk_array(&kv->v.a, 1);
        else if (kv->type >= GGUF_VALUE_TYPE_COUNT)
            violation("unknown value type accepted");
        uint64_t u;
        int64_t s;
        double d;
        gguf_str str;
        const gguf_array *arr;
        (void)gguf_get_u64(f, kv->key, &u);
        (void)gguf_get_i64(f, kv->key, &s);
        (void)gguf_get_f64(f, kv->key, &d);
        (void)gguf_get_str(f, kv->key, &str);
        (void)gguf_get_arr(f, kv->key, &arr);
    }
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        if (gguf_find_tensor(f, t->name) != t)
            violation("tensor lookup");
        if (t->n_dims > GGUF_MAX_DIMS || !ggml_traits(t->type).name)
            violation("tensor dims or type");
        if (t->offset % f->alignment)
            violation("tensor offset alignment");
        uint64_t bytes = ggml_row_bytes(t->type, t->ne[0]);
        for (int d = 1; d < GGUF_MAX_DIMS; d++)
            bytes *= t->ne[d]; /* cannot wrap: the parser checked the same product */
        if (bytes != t->size)
            violation("tensor size disagrees with its shape");
        inside(t->data, t->size, "tensor data");
        if (t->data != f->map + f->data_offset + t->offset)
            violation("tensor data pointer");
    }
    gguf_close(f);
    return 0;
}
