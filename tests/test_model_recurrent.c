/* A recurrent model (Mamba) through the public ABI: its per-layer conv and SSM state in
 * place of a KV cache. With the conformance model and transformers' logits
 * (tests/conformance/fixtures/mamba.ref) it checks:
 *  - prompt batches of 5 tokens (n_batch 5: 5+5+5+5+4) carry the state from submit to
 *    submit and give transformers' logits at every position (same tolerance as the
 *    conformance test);
 *  - kv_truncate to anything but 0 or n_past fails with VKLLM_ERR_UNSUPPORTED and leaves
 *    n_past as it was;
 *  - kv_truncate(n_past) is a no-op, kv_truncate(0) starts over: decoding the sequence
 *    again gives bit-identical logits (the state was zeroed, not left over).
 * usage: test_model_recurrent PLUGIN FIXTURE MODEL.gguf TOL_ABS */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_fixture.h"
#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "host_instance.h"
#include "check.h"


static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > m || isnan(e))
            m = e;
    }
    return m;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s PLUGIN FIXTURE MODEL.gguf TOL_ABS\n", argv[0]);
        return 2;
    }
    double tol = atof(argv[4]);
    ref_fixture fx;
    if (ref_fixture_load(argv[2], &fx) != VKLLM_OK || fx.n_prompts < 1) {
        printf("FAIL: fixture %s unreadable\n", argv[2]);
        return 1;
    }
    const ref_prompt *p = &fx.prompts[0];
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argv[1], NULL, &loader, &inst);
    if (rc)
        return rc;
    const vkllm_api *api = loader.api;
    vkllm_status s;
    vkllm_model model;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = argv[3];
    if (api->model_load(inst, &mp, &model) != VKLLM_OK) {
        printf("FAIL: load %s: %s\n", argv[3], api->last_error());
        return 1;
    }
    const uint32_t n = p->n_tokens, nv = p->n_vocab;
    vkllm_context ctx;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = n + 8;
    cp.n_batch = 5;
    if (api->context_create(model, &cp, &ctx) != VKLLM_OK) {
        printf("FAIL: context: %s\n", api->last_error());
        return 1;
    }
    float *first = malloc((size_t)n * nv * sizeof *first);
    const float *logits;
    uint32_t rows = 0, n_vocab = 0;
    s = api->decode(ctx, p->tokens, n, 1);
    if (!s)
        s = api->logits(ctx, &logits, &rows, &n_vocab);
    check(!s && rows == n && n_vocab == nv, "decode %u tokens in batches of 5: %s", n, s ? api->context_error(ctx) : "ok");
    if (s || rows != n || n_vocab != nv)
        return 1;
    memcpy(first, logits, (size_t)n * nv * sizeof *first);
    double err = max_abs_diff(first, p->logits, (size_t)n * nv);
    check(err <= tol, "batches of 5 vs transformers: max abs error %.4f (<= %.4f)", err, tol);

    /* Rewinding part of the way is impossible for a recurrent state. */
    vkllm_context_stats st = {.size = sizeof st};
    s = api->kv_truncate(ctx, n - 4);
    check(s == VKLLM_ERR_UNSUPPORTED, "kv_truncate(%u) of %u: %s", n - 4, n, api->context_error(ctx));
    api->context_stats(ctx, &st);
    check(st.n_past == n, "  n_past still %u (%u)", n, st.n_past);
    check(api->kv_truncate(ctx, n) == VKLLM_OK, "kv_truncate(n_past) is a no-op");
    check(api->kv_truncate(ctx, n + 1) == VKLLM_ERR_INVALID_ARGUMENT, "kv_truncate(n_past + 1) refused");

    /* kv_truncate(0) starts over: the same tokens give the same logits, bit for bit. */
    s = api->kv_truncate(ctx, 0);
    check(s == VKLLM_OK, "kv_truncate(0): %s", s ? api->context_error(ctx) : "ok");
    s = api->decode(ctx, p->tokens, n, 1);
    if (!s)
        s = api->logits(ctx, &logits, &rows, &n_vocab);
    check(!s && rows == n, "decode again after kv_truncate(0): %s", s ? api->context_error(ctx) : "ok");
    if (!s && rows == n) {
        err = max_abs_diff(logits, first, (size_t)n * nv);
        check(err == 0, "  logits identical to the first pass (max abs difference %g)", err);
    }
    /* And once more token by token after a reset, through the decode recording. */
    check(api->kv_truncate(ctx, 0) == VKLLM_OK, "kv_truncate(0) again");
    double step_err = 0;
    uint32_t done = 0;
    for (; done < n; done++) {
        const float *row;
        uint32_t one, nv2;
        if (api->decode(ctx, &p->tokens[done], 1, 0) || api->logits(ctx, &row, &one, &nv2))
            break;
        double e = max_abs_diff(row, p->logits + (size_t)done * nv, nv);
        if (e > step_err)
            step_err = e;
    }
    check(done == n && step_err <= tol, "token by token after the reset: %u tokens, max abs error %.4f (<= %.4f)",
          done, step_err, tol);

    free(first);
    api->context_free(ctx);
    api->model_free(model);
    vkllm_instance_stats ist = {.size = sizeof ist};
    api->instance_stats(inst, &ist);
    check(ist.validation_messages == 0, "validation messages: %llu", (unsigned long long)ist.validation_messages);
    check(api->instance_destroy(inst) == VKLLM_OK, "teardown clean");
    vkllm_loader_close(&loader);
    ref_fixture_free(&fx);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
