/* Hugging Face folders through the public ABI (model_load with a directory).
 *
 * usage: test_model_hf PLUGIN OPT_FOLDER MISTRAL_FOLDER MISTRAL_GGUF MISTRAL_REF
 *
 * 1. The OPT folder (no tokenizer): it loads, model_info and metadata say what config.json
 *    says, tokenize/detokenize/token_text/token_to_text_stream fail with
 *    VKLLM_ERR_UNSUPPORTED "no tokenizer", the context is bounded by the learned position
 *    table (n_ctx 65 refused, 64 positions decode, the 65th is CONTEXT_FULL), and greedy
 *    sampling works on ids.
 * 2. The Mistral folder (tests/conformance/make_mistral_hf.py: the weights of
 *    mistral.q8_0.gguf un-permuted to transformers' layout, F16 matrices, two shards)
 *    against the GGUF loaded with weight_type F16: the same weights after the same
 *    rounding, one run with half-split RoPE on HF's row order and one with adjacent-pair
 *    RoPE on llama.cpp's permuted rows. The logits of the fixture's 24 tokens, all at once
 *    and token by token, must agree within twice the GGUF's own batch vs token-by-token
 *    difference (at least 1e-4; see test_mistral).
 * 3. A folder without config.json fails to load with a message naming it.
 * Exit 77 without a Vulkan device. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ref_fixture.h"
#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "check.h"
#include "host_instance.h"

static const vkllm_api *api;

static vkllm_model load(vkllm_instance inst, const char *path, int32_t weight_type)
{
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = path;
    mp.weight_type = weight_type;
    vkllm_model m = NULL;
    vkllm_status s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_OK, "load %s (weight_type %d)%s%s", path, weight_type, s ? ": " : "", s ? api->last_error() : "");
    return s ? NULL : m;
}

static void test_opt(vkllm_instance inst, const char *dir)
{
    vkllm_model m = load(inst, dir, 0);
    if (!m)
        return;
    vkllm_model_info info = {.size = sizeof info};
    api->model_info(m, &info);
    check(!strcmp(info.architecture, "opt") && info.n_vocab == 361 && info.n_embd == 96 && info.n_layer == 3 &&
              info.n_head == 3 && info.n_ctx_train == 64 && info.bos == -1 && info.eos == -1,
          "model_info: %s, vocab %u, embd %u, layers %u, heads %u, ctx %u, bos %d", info.architecture, info.n_vocab,
          info.n_embd, info.n_layer, info.n_head, info.n_ctx_train, info.bos);
    uint64_t width = 0;
    const char *type = NULL;
    vkllm_status s = api->meta_uint(m, "opt.embedding_length", &width);
    if (!s)
        s = api->meta_string(m, "vkllm.hf.model_type", &type);
    check(!s && width == 96 && !strcmp(type, "opt"), "metadata: opt.embedding_length %llu, vkllm.hf.model_type %s",
          (unsigned long long)width, type ? type : "-");

    vkllm_token ids[8];
    size_t n = 0;
    s = api->tokenize(m, "hello", 5, 1, 0, ids, 8, &n);
    check(s == VKLLM_ERR_UNSUPPORTED && strstr(api->model_error(m), "no tokenizer"), "tokenize: %s (%s)",
          api->status_string(s), api->model_error(m));
    char text[64];
    vkllm_token one = 5;
    s = api->detokenize(m, &one, 1, text, sizeof text, &n);
    check(s == VKLLM_ERR_UNSUPPORTED, "detokenize: %s", api->status_string(s));
    const char *piece;
    s = api->token_text(m, 5, &piece);
    check(s == VKLLM_ERR_UNSUPPORTED, "token_text: %s", api->status_string(s));

    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = 65;
    vkllm_context ctx = NULL;
    s = api->context_create(m, &cp, &ctx);
    check(s == VKLLM_ERR_INVALID_ARGUMENT && strstr(api->model_error(m), "64 positions"),
          "n_ctx 65 refused: %s", api->model_error(m));
    if (ctx)
        api->context_free(ctx);
    cp.n_ctx = 0; /* the model's: 64 */
    ctx = NULL;
    if (api->context_create(m, &cp, &ctx) != VKLLM_OK) {
        check(0, "context: %s", api->last_error());
    } else {
        vkllm_token seq[64];
        for (int i = 0; i < 64; i++)
            seq[i] = (vkllm_token)((i * 37) % 361);
        s = api->decode(ctx, seq, 64, 0);
        check(s == VKLLM_OK, "64 positions decoded in one batch%s%s", s ? ": " : "", s ? api->context_error(ctx) : "");
        vkllm_sampler_params greedy;
        api->sampler_params_defaults(&greedy, sizeof greedy);
        greedy.temperature = 0;
        vkllm_token next = -1;
        s = api->sample(ctx, &greedy, &next);
        check(s == VKLLM_OK && next >= 0 && next < 361, "greedy sample on ids: %d", next);
        s = api->decode(ctx, &next, 1, 0);
        check(s == VKLLM_ERR_CONTEXT_FULL, "the 65th position: %s", api->status_string(s));
        s = api->token_to_text_stream(ctx, next, text, sizeof text, &n);
        check(s == VKLLM_ERR_UNSUPPORTED && strstr(api->context_error(ctx), "no tokenizer"),
              "token_to_text_stream: %s", api->context_error(ctx));
        api->context_free(ctx);
    }
    api->model_free(m);
}

/* The logits of the prompt's tokens into out [n_tokens][n_vocab], decoded all at once or
 * token by token; 0, or -1 on failure. */
static double run_logits(vkllm_model m, const ref_prompt *p, int stepwise, float *out)
{
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = p->n_tokens + 8;
    vkllm_context ctx;
    if (api->context_create(m, &cp, &ctx) != VKLLM_OK)
        return -1;
    int ok = 1;
    const float *rows;
    uint32_t n_rows, n_vocab;
    if (!stepwise) {
        ok = api->decode(ctx, p->tokens, p->n_tokens, 1) == VKLLM_OK &&
             api->logits(ctx, &rows, &n_rows, &n_vocab) == VKLLM_OK && n_rows == p->n_tokens;
        if (ok)
            memcpy(out, rows, (size_t)n_rows * n_vocab * sizeof *out);
    } else {
        for (uint32_t t = 0; ok && t < p->n_tokens; t++) {
            ok = api->decode(ctx, &p->tokens[t], 1, 0) == VKLLM_OK &&
                 api->logits(ctx, &rows, &n_rows, &n_vocab) == VKLLM_OK;
            if (ok)
                memcpy(out + (size_t)t * p->n_vocab, rows, (size_t)n_vocab * sizeof *out);
        }
    }
    api->context_free(ctx);
    return ok ? 0 : -1;
}

static void test_mistral(vkllm_instance inst, const char *dir, const char *gguf, const char *ref)
{
    ref_fixture fx;
    if (ref_fixture_load(ref, &fx) != VKLLM_OK || fx.n_prompts != 1) {
        check(0, "fixture %s", ref);
        return;
    }
    const ref_prompt *p = &fx.prompts[0];
    vkllm_model hf = load(inst, dir, 0), gg = load(inst, gguf, 2);
    if (hf && gg) {
        vkllm_model_info a = {.size = sizeof a}, b = {.size = sizeof b};
        api->model_info(hf, &a);
        api->model_info(gg, &b);
        check(!strcmp(a.architecture, "llama") && a.n_vocab == b.n_vocab && a.n_params == b.n_params &&
                  a.weight_bytes == b.weight_bytes,
              "folder and GGUF: %s, vocab %u, %llu parameters, %llu bytes on the device (GGUF as F16: %llu)",
              a.architecture, a.n_vocab, (unsigned long long)a.n_params, (unsigned long long)a.weight_bytes,
              (unsigned long long)b.weight_bytes);
        size_t n = (size_t)p->n_tokens * p->n_vocab;
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        /* The tolerance: the same weights in another summation order (RoPE on other rows,
         * q.k over permuted dims) move these logits by about as much as the GGUF's own batch
         * and token-by-token kernels do (5.2e-4 on llvmpipe), so the bound is twice that
         * difference, at least 1e-4. A wrong mapping, permutation or RoPE mode moves them
         * by more than 1. */
        double tol = 1e-4;
        if (!run_logits(gg, p, 0, x) && !run_logits(gg, p, 1, y)) {
            double own = 0;
            for (size_t i = 0; i < n; i++)
                own = fmax(own, fabs((double)x[i] - y[i]));
            tol = fmax(tol, 2 * own);
            printf("       the GGUF's batch vs token-by-token logits: max abs %.2e; tolerance %.2e\n", own, tol);
        }
        static const char *const how[] = {"all at once", "token by token"};
        for (int stepwise = 0; stepwise < 2; stepwise++) {
            if (run_logits(hf, p, stepwise, x) || run_logits(gg, p, stepwise, y)) {
                check(0, "decode %s: %s", how[stepwise], api->last_error());
                continue;
            }
            double worst = 0, worst_ref = 0;
            for (size_t i = 0; i < n; i++) {
                double e = fabs((double)x[i] - y[i]);
                if (!(e <= worst))
                    worst = e;
                e = fabs((double)x[i] - p->logits[i]);
                if (!(e <= worst_ref))
                    worst_ref = e;
            }
            check(worst <= tol, "%s: folder vs GGUF (F16) max abs %.2e (<= %.2e); vs transformers %.4f",
                  how[stepwise], worst, tol, worst_ref);
        }
        free(x);
        free(y);
    }
    api->model_free(hf);
    api->model_free(gg);
    ref_fixture_free(&fx);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s PLUGIN OPT_FOLDER MISTRAL_FOLDER MISTRAL_GGUF MISTRAL_REF\n", argv[0]);
        return 2;
    }
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argv[1], NULL, &loader, &inst);
    if (rc)
        return rc;
    api = loader.api;
    test_opt(inst, argv[2]);
    test_mistral(inst, argv[3], argv[4], argv[5]);

    char empty[] = "/tmp/vkllm-hf-empty-XXXXXX";
    if (mkdtemp(empty)) {
        vkllm_model_params mp;
        api->model_params_defaults(&mp, sizeof mp);
        mp.path = empty;
        vkllm_model m = NULL;
        vkllm_status s = api->model_load(inst, &mp, &m);
        check(s == VKLLM_ERR_BAD_FILE && !m && strstr(api->last_error(), "no config.json"),
              "a folder without config.json: %s", api->last_error());
        rmdir(empty);
    }

    close_instance(&loader, inst);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
