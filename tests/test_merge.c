/* Model merging (lib/merge.c, the ABI's merge).
 *
 * usage: test_merge floats tests/fixtures/merge_reference.bin
 *        test_merge files PLUGIN MODEL.gguf OTHER_ARCH.gguf WORK_DIR
 * floats: merge_floats against mergekit's own linear and TIES merges of the fixture's
 *   tensors (make_merge_fixture.py).
 * files: through the ABI, MODEL (a Q8_0 file whose weights are on the Q8_0 grid) merged with
 *   itself: linear (1, 1) and TIES against itself must give back its weights exactly, as
 *   stored (Q8_0 requantized to the same bytes) and as F32; the written GGUF keeps every key
 *   and tensor, and loads and runs with the same logits as MODEL. Then bad requests. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "host_instance.h"
#include "merge.h"
#include "quant.h"

static float *take_floats(FILE *f, uint64_t n)
{
    float *p = malloc(n * sizeof *p);
    if (p && fread(p, sizeof *p, n, f) != n) {
        free(p);
        p = NULL;
    }
    return p;
}

static int test_floats(const char *path)
{
    FILE *f = fopen(path, "rb");
    char magic[8];
    uint32_t n_cases = 0;
    if (!f || fread(magic, 1, 8, f) != 8 || memcmp(magic, "VKMERGE1", 8) || fread(&n_cases, 4, 1, f) != 1) {
        printf("FAIL: cannot read %s\n", path);
        return 1;
    }
    for (uint32_t c = 0; c < n_cases; c++) {
        struct {
            uint32_t method, k, n;
            int32_t normalize;
            float lambda;
        } h;
        if (fread(&h, sizeof h, 1, f) != 1 || h.k == 0 || h.k > 16 || h.n == 0 || h.n > 1u << 20) {
            check(0, "case %u: bad header", c);
            break;
        }
        float *w = take_floats(f, h.k), *dens = take_floats(f, h.k), *base = take_floats(f, h.n);
        float *x[16] = {0};
        for (uint32_t m = 0; m < h.k; m++)
            x[m] = take_floats(f, h.n);
        float *want = take_floats(f, h.n), *got = malloc(h.n * sizeof *got);
        float *scratch = malloc((uint64_t)(h.k + 1) * h.n * sizeof *scratch);
        if (want && got && scratch && base && w && dens) {
            merge_spec spec = {(int32_t)h.method, h.k, w, dens, h.normalize, h.lambda};
            merge_floats(&spec, base, (const float *const *)x, h.n, got, scratch);
            double worst = 0;
            uint32_t kept = 0;
            for (uint32_t i = 0; i < h.n; i++) {
                double e = fabs((double)got[i] - want[i]) / (1.0 + fabs(want[i]));
                worst = e > worst ? e : worst;
                kept += h.method == VKLLM_MERGE_TIES && want[i] != base[i];
            }
            check(worst <= 2e-6, "case %u: %s of %u models, n %u, normalize %d, lambda %.2f: max error %.3g "
                  "(relative to 1 + |value|; %u of %u elements moved from the base)", c,
                  h.method ? "TIES" : "linear", h.k, h.n, h.normalize, h.lambda, worst, kept, h.n);
        } else {
            check(0, "case %u: truncated fixture", c);
        }
        for (uint32_t m = 0; m < h.k; m++)
            free(x[m]);
        free(w), free(dens), free(base), free(want), free(got), free(scratch);
    }
    check(n_cases == 7 && fgetc(f) == EOF, "fixture read whole: %u cases", n_cases);
    fclose(f);
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}

/* The merged file against the model: every key and tensor, each tensor's floats equal (and
 * its bytes, when `same_types`). */
static void compare_files(const char *what, const char *merged, const char *model, int same_types)
{
    gguf_file *a = NULL, *b = NULL;
    if (gguf_open(merged, &a) || gguf_open(model, &b)) {
        check(0, "%s: cannot read %s", what, merged);
        if (a)
            gguf_close(a);
        return;
    }
    uint64_t keys_ok = 0;
    for (uint64_t i = 0; i < b->n_kv; i++)
        keys_ok += gguf_find(a, b->kv[i].key) != NULL && gguf_find(a, b->kv[i].key)->type == b->kv[i].type;
    check(a->n_kv == b->n_kv && keys_ok == b->n_kv, "%s: %llu keys, all of the model's (%llu)", what,
          (unsigned long long)a->n_kv, (unsigned long long)keys_ok);
    uint64_t equal = 0, bytes_equal = 0;
    for (uint64_t i = 0; i < b->n_tensors; i++) {
        const gguf_tensor *tb = &b->tensors[i], *ta = gguf_find_tensor(a, tb->name);
        if (!ta || memcmp(ta->ne, tb->ne, sizeof ta->ne))
            continue;
        uint64_t n = tb->ne[0] * tb->ne[1] * tb->ne[2] * tb->ne[3];
        float *fa = malloc(n * sizeof *fa), *fb = malloc(n * sizeof *fb);
        if (fa && fb && !vk_dequantize_row(ta->type, ta->data, fa, n) && !vk_dequantize_row(tb->type, tb->data, fb, n))
            equal += !memcmp(fa, fb, n * sizeof *fa);
        bytes_equal += ta->type == tb->type && ta->size == tb->size && !memcmp(ta->data, tb->data, ta->size);
        free(fa);
        free(fb);
    }
    check(a->n_tensors == b->n_tensors && equal == b->n_tensors, "%s: %llu of %llu tensors hold the model's weights "
          "exactly", what, (unsigned long long)equal, (unsigned long long)b->n_tensors);
    if (same_types)
        check(bytes_equal == b->n_tensors, "%s: %llu of %llu tensors byte-identical (Q8_0 requantized to the same "
              "blocks)", what, (unsigned long long)bytes_equal, (unsigned long long)b->n_tensors);
    gguf_close(a);
    gguf_close(b);
}

/* Logits of the first 8 tokens of the vocabulary after them, one row a token. */
static float *logits_of(const vkllm_api *api, vkllm_instance inst, const char *path, uint32_t *n_vocab)
{
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = path;
    vkllm_model m = NULL;
    vkllm_context ctx = NULL;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = 16;
    float *copy = NULL;
    const float *rows;
    uint32_t n_rows = 0;
    vkllm_token toks[8] = {1, 5, 9, 13, 17, 21, 25, 29};
    if (api->model_load(inst, &mp, &m) == VKLLM_OK && api->context_create(m, &cp, &ctx) == VKLLM_OK &&
        api->decode(ctx, toks, 8, 1) == VKLLM_OK && api->logits(ctx, &rows, &n_rows, n_vocab) == VKLLM_OK &&
        (copy = malloc((size_t)n_rows * *n_vocab * sizeof *copy)))
        memcpy(copy, rows, (size_t)n_rows * *n_vocab * sizeof *copy);
    else
        printf("       %s: %s\n", path, api->last_error());
    if (ctx)
        api->context_free(ctx);
    if (m)
        api->model_free(m);
    return copy;
}

static int32_t count_progress(void *user, float p)
{
    (void)p;
    ++*(int *)user;
    return 0;
}

static int test_files(const char *plugin, const char *model, const char *other, const char *work)
{
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(plugin, NULL, &loader, &inst);
    if (rc)
        return rc;
    const vkllm_api *api = loader.api;
    char out[4096];
    snprintf(out, sizeof out, "%.4000s/merged.gguf", work);
    const char *two[2] = {model, model};
    vkllm_merge_desc d;
    api->merge_desc_defaults(&d, sizeof d);
    check(d.size == sizeof d && d.method == VKLLM_MERGE_LINEAR && d.density == 1.0f && d.lambda == 1.0f &&
          d.normalize == 1, "merge_desc_defaults: linear, density 1, lambda 1, normalized");
    int calls = 0;
    d.models = two;
    d.n_models = 2;
    d.out_path = out;
    d.progress_fn = count_progress;
    d.progress_user = &calls;
    vkllm_status s = api->merge(&d);
    check(s == VKLLM_OK && calls > 1, "linear (1, 1) as stored: %s (%d progress calls)", s ? api->last_error() : "ok",
          calls);
    compare_files("linear as stored", out, model, 1);

    uint32_t nv_a = 0, nv_b = 0;
    float *la = logits_of(api, inst, model, &nv_a), *lb = logits_of(api, inst, out, &nv_b);
    check(la && lb && nv_a == nv_b && !memcmp(la, lb, (size_t)8 * nv_a * sizeof *la),
          "the merged file loads and gives the model's logits, bit for bit (8 tokens, vocabulary %u)", nv_a);
    free(la);
    free(lb);

    d.method = VKLLM_MERGE_TIES;
    d.base = model;
    d.density = 0.5f;
    d.weight_type = VKLLM_WEIGHTS_F32;
    s = api->merge(&d);
    check(s == VKLLM_OK, "TIES of the model against itself as F32: %s", s ? api->last_error() : "ok");
    compare_files("TIES as F32", out, model, 0);
    gguf_file *g = NULL;
    uint64_t ftype = 99;
    if (!gguf_open(out, &g)) {
        gguf_get_u64(g, "general.file_type", &ftype);
        gguf_close(g);
    }
    check(ftype == 0, "general.file_type of the F32 merge: %llu (ALL_F32)", (unsigned long long)ftype);

    /* Bad requests: each refused with a message, and no file left behind. */
    remove(out);
    d.base = NULL;
    check(api->merge(&d) == VKLLM_ERR_INVALID_ARGUMENT && strstr(api->last_error(), "base"), "TIES without a base: %s",
          api->last_error());
    d.method = VKLLM_MERGE_LINEAR;
    const char *mixed[2] = {model, other};
    d.models = mixed;
    check(api->merge(&d) == VKLLM_ERR_INVALID_ARGUMENT && strstr(api->last_error(), other),
          "another architecture: %s", api->last_error());
    const char *missing[2] = {model, "/nonexistent/x.gguf"};
    d.models = missing;
    check(api->merge(&d) == VKLLM_ERR_IO && strstr(api->last_error(), "/nonexistent/x.gguf"), "a missing file: %s",
          api->last_error());
    d.models = two;
    float zero_sum[2] = {1.0f, -1.0f};
    d.weights = zero_sum;
    check(api->merge(&d) == VKLLM_ERR_INVALID_ARGUMENT, "weights summing to 0, normalized: %s", api->last_error());
    d.weights = NULL;
    d.progress_fn = NULL;
    d.out_path = "/nonexistent-dir/merged.gguf";
    check(api->merge(&d) == VKLLM_ERR_IO, "an unwritable output path: %s", api->last_error());
    FILE *left = fopen(out, "rb");
    check(!left, "no merged file left by the failed merges");
    if (left)
        fclose(left);

    close_instance(&loader, inst);
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "floats"))
        return test_floats(argv[2]);
    if (argc == 6 && !strcmp(argv[1], "files"))
        return test_files(argv[2], argv[3], argv[4], argv[5]);
    fprintf(stderr, "usage: %s floats FIXTURE | files PLUGIN MODEL.gguf OTHER_ARCH.gguf WORK_DIR\n", argv[0]);
    return 2;
}
