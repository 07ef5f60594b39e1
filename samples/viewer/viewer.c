/* vkllm-view: looks inside a model through the public ABI. It prints the model's metadata,
 * how a prompt tokenizes, and, step by step, the tokens the model ranks highest with their
 * probabilities, following the greedy choice.
 *
 *   vkllm-view -m MODEL.gguf [-p PROMPT] [-n STEPS] [--top K] [--meta] [--device D]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

#ifndef VKLLM_BUILD_PLUGIN
#define VKLLM_BUILD_PLUGIN VKLLM_LOADER_DEFAULT_NAME
#endif

static const vkllm_api *api;

/* Token text made printable: control bytes escaped, long texts cut. */
static void print_piece(vkllm_model model, vkllm_token t)
{
    char buf[64];
    size_t n = 0;
    if (api->detokenize(model, &t, 1, buf, sizeof buf, &n) != VKLLM_OK && n > sizeof buf)
        n = sizeof buf;
    putchar('\'');
    for (size_t i = 0; i < n && i < 24; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c == '\n')
            fputs("\\n", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c < 0x20)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('\'');
}

static void print_meta(vkllm_model model)
{
    uint32_t n = 0;
    api->meta_count(model, &n);
    printf("metadata (%u keys):\n", n);
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        int32_t type, elem;
        uint64_t len;
        if (api->meta_key(model, i, &key) || api->meta_type(model, key, &type, &elem, &len))
            continue;
        printf("  %-44s ", key);
        uint64_t u;
        int64_t v;
        double f;
        const char *s;
        switch (type) {
        case VKLLM_META_UINT: api->meta_uint(model, key, &u); printf("%llu\n", (unsigned long long)u); break;
        case VKLLM_META_INT: api->meta_int(model, key, &v); printf("%lld\n", (long long)v); break;
        case VKLLM_META_FLOAT: api->meta_float(model, key, &f); printf("%g\n", f); break;
        case VKLLM_META_STRING:
            api->meta_string(model, key, &s);
            printf("\"%.*s%s\"\n", 60, s, strlen(s) > 60 ? "..." : "");
            break;
        default: printf("[array of %llu]\n", (unsigned long long)len); break;
        }
    }
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *prompt = "Once upon a time", *device = NULL;
    const char *plugin = getenv(VKLLM_LOADER_ENV) ? getenv(VKLLM_LOADER_ENV) : VKLLM_BUILD_PLUGIN;
    int steps = 8, top = 5, meta = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && v)
            model_path = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && v)
            prompt = argv[++i];
        else if ((!strcmp(a, "-n") || !strcmp(a, "--n-predict")) && v)
            steps = atoi(argv[++i]);
        else if (!strcmp(a, "--top") && v)
            top = atoi(argv[++i]);
        else if (!strcmp(a, "--device") && v)
            device = argv[++i];
        else if (!strcmp(a, "--plugin") && v)
            plugin = argv[++i];
        else if (!strcmp(a, "--meta"))
            meta = 1;
        else {
            fprintf(stderr, "usage: %s -m MODEL.gguf [-p PROMPT] [-n STEPS] [--top K] [--meta] [--device D]\n",
                    argv[0]);
            return 2;
        }
    }
    if (!model_path || top < 1 || top > 50 || steps < 0) {
        fprintf(stderr, "error: need -m MODEL.gguf; --top in 1..50; -n >= 0\n");
        return 2;
    }
    vkllm_loader loader;
    if (vkllm_loader_open(&loader, plugin, 1, VKLLM_ABI_VERSION)) {
        fprintf(stderr, "error: %s\n", loader.error);
        return 1;
    }
    api = loader.api;
    int rc = 1;
    vkllm_instance inst = NULL;
    vkllm_model model = NULL;
    vkllm_context ctx = NULL;
    vkllm_token *ids = NULL;
    vkllm_instance_desc desc;
    api->instance_desc_defaults(&desc, sizeof desc);
    desc.device_name = device;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = model_path;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    if (api->instance_create(&desc, &inst) || api->model_load(inst, &mp, &model)) {
        fprintf(stderr, "error: %s\n", api->last_error());
        goto done;
    }
    vkllm_model_info info = {.size = sizeof info};
    api->model_info(model, &info);
    printf("%s (%s): %u layers, width %u, %u/%u heads, vocabulary %u, %.1fM parameters, %.1f MiB on the device\n",
           info.name[0] ? info.name : model_path, info.architecture, info.n_layer, info.n_embd, info.n_head,
           info.n_head_kv, info.n_vocab, info.n_params / 1e6, info.weight_bytes / 1048576.0);
    if (meta)
        print_meta(model);

    size_t cap = strlen(prompt) + 8, n_ids = 0;
    ids = malloc(cap * sizeof *ids);
    if (api->tokenize(model, prompt, strlen(prompt), 1, 1, ids, cap, &n_ids)) {
        fprintf(stderr, "error: %s\n", api->last_error());
        goto done;
    }
    printf("prompt: %zu tokens:", n_ids);
    for (size_t i = 0; i < n_ids; i++) {
        printf(" %d=", ids[i]);
        print_piece(model, ids[i]);
    }
    printf("\n");
    cp.n_ctx = (uint32_t)(n_ids + (size_t)steps + 1);
    if (api->context_create(model, &cp, &ctx) || api->decode(ctx, ids, n_ids, 0)) {
        fprintf(stderr, "error: %s\n", api->last_error());
        goto done;
    }
    for (int step = 0; step < steps; step++) {
        const float *logits;
        uint32_t rows, n_vocab;
        if (api->logits(ctx, &logits, &rows, &n_vocab))
            break;
        /* Softmax of the row, then the top K by selection (K is small). */
        float max = -INFINITY;
        for (uint32_t v = 0; v < n_vocab; v++)
            max = logits[v] > max ? logits[v] : max;
        double sum = 0;
        for (uint32_t v = 0; v < n_vocab; v++)
            sum += exp((double)logits[v] - max);
        vkllm_token best[50];
        int n_best = 0;
        for (uint32_t v = 0; v < n_vocab; v++) {
            int pos = n_best < top ? n_best++ : top;
            while (pos > 0 && logits[v] > logits[best[pos - 1]]) {
                if (pos < top)
                    best[pos] = best[pos - 1];
                pos--;
            }
            if (pos < top)
                best[pos] = (vkllm_token)v;
        }
        printf("step %2d:", step);
        for (int k = 0; k < n_best; k++) {
            printf("  %5.1f%% ", 100.0 * exp((double)logits[best[k]] - max) / sum);
            print_piece(model, best[k]);
        }
        printf("\n");
        if (best[0] == info.eos || api->decode(ctx, &best[0], 1, 0))
            break;
    }
    rc = 0;
done:
    free(ids);
    if (ctx)
        api->context_free(ctx);
    if (model)
        api->model_free(model);
    if (inst)
        api->instance_destroy(inst);
    vkllm_loader_close(&loader);
    return rc;
}
