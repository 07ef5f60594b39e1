/* LoRA adapters through the ABI (model_load_lora), beyond the logits (conformance_llama_lora):
 * an adapter must fit the model, or the load fails naming the problem; scale 0 gives the
 * model's own logits; two adapters add up.
 *
 * usage: test_model_lora PLUGIN MODEL.gguf ADAPTER.gguf OTHER_ARCH.gguf */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "host_instance.h"

static const vkllm_api *api;

/* Logits of 6 tokens (one row each), with the adapters; NULL when the load fails. */
static float *logits(vkllm_instance inst, const char *model, const vkllm_lora *loras, uint32_t n, uint32_t *n_vocab)
{
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = model;
    mp.weight_type = VKLLM_WEIGHTS_F32; /* the sums as they are */
    vkllm_model m = NULL;
    vkllm_context ctx = NULL;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = 16;
    const float *rows;
    uint32_t n_rows = 0;
    float *copy = NULL;
    vkllm_token toks[6] = {3, 50, 101, 7, 250, 12};
    if (api->model_load_lora(inst, &mp, loras, n, &m) == VKLLM_OK && api->context_create(m, &cp, &ctx) == VKLLM_OK &&
        api->decode(ctx, toks, 6, 1) == VKLLM_OK && api->logits(ctx, &rows, &n_rows, n_vocab) == VKLLM_OK &&
        (copy = malloc((size_t)6 * *n_vocab * sizeof *copy)))
        memcpy(copy, rows, (size_t)6 * *n_vocab * sizeof *copy);
    if (ctx)
        api->context_free(ctx);
    if (m)
        api->model_free(m);
    return copy;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double d = 0;
    for (size_t i = 0; i < n; i++)
        d = fmax(d, fabs((double)a[i] - b[i]));
    return d;
}

static void expect_refused(vkllm_instance inst, const char *model, const char *adapter, vkllm_status want,
                           const char *text)
{
    vkllm_lora l = {adapter, 1.0f};
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = model;
    vkllm_model m = NULL;
    vkllm_status s = api->model_load_lora(inst, &mp, &l, 1, &m);
    check(s == want && !m && strstr(api->last_error(), text), "adapter %s refused (%d): %s", adapter, s,
          api->last_error());
    if (m)
        api->model_free(m);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 5) {
        fprintf(stderr, "usage: %s PLUGIN MODEL.gguf ADAPTER.gguf OTHER_ARCH.gguf\n", argv[0]);
        return 2;
    }
    const char *model = argv[2], *adapter = argv[3], *other = argv[4];
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argv[1], NULL, &loader, &inst);
    if (rc)
        return rc;
    api = loader.api;

    uint32_t nv = 0;
    vkllm_lora none = {adapter, 0.0f}, one = {adapter, 0.8f}, halves[2] = {{adapter, 0.4f}, {adapter, 0.4f}};
    float *base = logits(inst, model, NULL, 0, &nv), *zero = logits(inst, model, &none, 1, &nv);
    float *full = logits(inst, model, &one, 1, &nv), *split = logits(inst, model, halves, 2, &nv);
    size_t n = (size_t)6 * nv;
    check(base && zero && max_diff(base, zero, n) == 0, "scale 0: the model's own logits");
    check(base && full && max_diff(base, full, n) > 0.5, "scale 0.8 moves the logits (max %.3f)",
          base && full ? max_diff(base, full, n) : -1.0);
    check(full && split && max_diff(full, split, n) < 1e-3, "the adapter twice at 0.4 = once at 0.8 (max %.2g)",
          full && split ? max_diff(full, split, n) : -1.0);
    free(base), free(zero), free(full), free(split);

    expect_refused(inst, model, "/nonexistent/adapter.gguf", VKLLM_ERR_IO, "/nonexistent/adapter.gguf");
    expect_refused(inst, model, model, VKLLM_ERR_BAD_FILE, "is not a LoRA adapter");
    expect_refused(inst, other, adapter, VKLLM_ERR_INVALID_ARGUMENT, "another architecture");
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = model;
    vkllm_model m = NULL;
    check(api->model_load_lora(inst, &mp, NULL, 1, &m) == VKLLM_ERR_INVALID_ARGUMENT && !m, "NULL adapters: %s",
          api->last_error());

    close_instance(&loader, inst);
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}
