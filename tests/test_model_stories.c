/* End to end through the public ABI on a real model: stories260K (a Llama trained on
 * TinyStories). Greedy generation must reproduce llama.cpp's text word for word
 * (../shared/models/stories260K.expected.md); batch and token-by-token logits must agree;
 * decode replays its recording; bad input gives clear errors. Validation layer on. */
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "host_instance.h"
#include "check.h"

static const vkllm_api *api;

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        buf[n] = '\0';
    fclose(f);
    return buf;
}

/* The text inside the first ``` block of the expected-output file. */
static char *expected_text(const char *md)
{
    const char *open = strstr(md, "```\n");
    if (!open)
        return NULL;
    open += 4;
    const char *close = strstr(open, "\n```");
    if (!close)
        return NULL;
    size_t n = (size_t)(close - open);
    char *t = malloc(n + 1);
    memcpy(t, open, n);
    t[n] = '\0';
    return t;
}

static void on_log(void *user, int32_t level, const char *msg)
{
    (void)user;
    printf("[log %d] %s\n", level, msg);
}

static int argmax(const float *x, uint32_t n)
{
    int best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = (int)i;
    return best;
}

static void bad_inputs(vkllm_instance inst, vkllm_model model, const char *dir)
{
    vkllm_model m = NULL;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = "/nonexistent/model.gguf";
    vkllm_status s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_ERR_IO && strstr(api->last_error(), "/nonexistent/model.gguf"),
          "missing file -> IO error: %s", api->last_error());

    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K.expected.md", dir);
    mp.path = path;
    s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_ERR_BAD_FILE, "not a GGUF file -> bad file: %s", api->last_error());
    check(!strcmp(api->instance_error(inst), api->last_error()), "instance error = thread error");

    /* A truncated copy of the model. */
    snprintf(path, sizeof path, "%s/stories260K.gguf", dir);
    char *tmp = "/tmp/vkllm_truncated.gguf";
    FILE *in = fopen(path, "rb"), *out = fopen(tmp, "wb");
    if (in && out) {
        char buf[65536];
        size_t n = fread(buf, 1, sizeof buf, in);
        fwrite(buf, 1, n, out);
    }
    if (in)
        fclose(in);
    if (out)
        fclose(out);
    mp.path = tmp;
    s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_ERR_BAD_FILE, "truncated GGUF -> bad file: %s", api->last_error());
    remove(tmp);

    vkllm_context ctx;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = 16;
    check(api->context_create(model, &cp, &ctx) == VKLLM_OK, "context n_ctx=16");
    vkllm_token bad[2] = {1, 512};
    s = api->decode(ctx, bad, 2, 0);
    check(s == VKLLM_ERR_TOKEN_OUT_OF_RANGE, "token 512 of 512 -> out of range: %s", api->context_error(ctx));
    bad[1] = -3;
    s = api->decode(ctx, bad, 2, 0);
    check(s == VKLLM_ERR_TOKEN_OUT_OF_RANGE, "token -3 -> out of range");
    vkllm_token many[17];
    for (int i = 0; i < 17; i++)
        many[i] = 1 + i;
    s = api->decode(ctx, many, 17, 0);
    check(s == VKLLM_ERR_CONTEXT_FULL, "17 tokens in a context of 16 -> context full: %s", api->last_error());
    check(api->decode(ctx, many, 16, 0) == VKLLM_OK, "16 tokens fit");
    s = api->decode(ctx, many, 1, 0);
    check(s == VKLLM_ERR_CONTEXT_FULL, "one more -> context full");
    check(api->kv_truncate(ctx, 8) == VKLLM_OK && api->decode(ctx, many, 1, 0) == VKLLM_OK,
          "after kv_truncate(8) a token fits again");
    api->context_free(ctx);
}

/* Sampling from the GPU's candidates (VKLLM_GPU_SAMPLING=on) against the host sampler over
 * whole rows (=off), 40 tokens from the same seed for each setting: the same tokens. With the
 * candidates no logits row reaches the host, unless the setting needs the whole row (a
 * repetition penalty, top-k off) or logits() asks, which then gives the same row. */
static void gpu_candidates(vkllm_model model, const vkllm_token *prompt, size_t n_prompt)
{
    const struct {
        float temperature;
        int32_t top_k;
        float top_p, min_p, repeat_penalty;
        bool needs_row;
    } settings[] = {
        {0.0f, 40, 1.0f, 0.0f, 1.0f, false},   /* greedy */
        {0.8f, 40, 0.95f, 0.05f, 1.0f, false}, /* llama.cpp's defaults without the penalty */
        {1.5f, 64, 1.0f, 0.0f, 1.0f, false},   /* top-k as far as the candidates go */
        {0.8f, 40, 0.95f, 0.05f, 1.1f, true},  /* a penalty reads the history's logits */
        {0.8f, 0, 0.9f, 0.0f, 1.0f, true},     /* top-k off */
    };
    const char *saved = getenv("VKLLM_GPU_SAMPLING");
    char saved_copy[16] = "";
    if (saved)
        snprintf(saved_copy, sizeof saved_copy, "%s", saved);
    enum { N = 40 };
    for (size_t k = 0; k < sizeof settings / sizeof *settings; k++) {
        vkllm_token out[2][N];
        uint64_t reads[2] = {0, 0};
        float *last_row[2] = {NULL, NULL};
        uint32_t n_vocab = 0;
        for (int on = 0; on < 2; on++) {
            setenv("VKLLM_GPU_SAMPLING", on ? "on" : "off", 1);
            vkllm_context ctx;
            vkllm_context_params cp;
            api->context_params_defaults(&cp, sizeof cp);
            cp.n_ctx = 128;
            cp.seed = 4242 + k;
            vkllm_sampler_params sp;
            api->sampler_params_defaults(&sp, sizeof sp);
            sp.temperature = settings[k].temperature;
            sp.top_k = settings[k].top_k;
            sp.top_p = settings[k].top_p;
            sp.min_p = settings[k].min_p;
            sp.repeat_penalty = settings[k].repeat_penalty;
            vkllm_status s = api->context_create(model, &cp, &ctx);
            if (!s)
                s = api->decode(ctx, prompt, n_prompt, 0);
            for (int i = 0; i < N && !s; i++)
                if (!(s = api->sample(ctx, &sp, &out[on][i])))
                    s = api->decode(ctx, &out[on][i], 1, 0);
            const float *row;
            uint32_t rows;
            if (!s && !(s = api->logits(ctx, &row, &rows, &n_vocab))) {
                last_row[on] = malloc(n_vocab * sizeof(float));
                memcpy(last_row[on], row, n_vocab * sizeof(float));
            }
            vkllm_context_stats st = {.size = sizeof st};
            api->context_stats(ctx, &st);
            reads[on] = st.logits_reads;
            check(s == VKLLM_OK, "GPU sampling %s, setting %zu: %s", on ? "on" : "off", k,
                  s ? api->context_error(ctx) : "ok");
            api->context_free(ctx);
        }
        uint64_t want_reads = settings[k].needs_row ? N : 0;
        check(!memcmp(out[0], out[1], sizeof out[0]),
              "setting %zu (temperature %.1f, top-k %d, penalty %.1f): %d tokens from the GPU's candidates as "
              "from whole rows", k, (double)settings[k].temperature, settings[k].top_k,
              (double)settings[k].repeat_penalty, N);
        check(reads[1] == want_reads + 1 && reads[0] == N + 1,
              "setting %zu: logits rows read back: %llu with candidates (want %llu: %s, and 1 for logits()), "
              "%llu without (want %d)", k, (unsigned long long)reads[1], (unsigned long long)want_reads + 1,
              settings[k].needs_row ? "each sample needs the row" : "none", (unsigned long long)reads[0], N + 1);
        check(last_row[0] && last_row[1] && !memcmp(last_row[0], last_row[1], n_vocab * sizeof(float)),
              "setting %zu: logits() gives the same last row either way", k);
        free(last_row[0]);
        free(last_row[1]);
    }
    if (saved)
        setenv("VKLLM_GPU_SAMPLING", saved_copy, 1);
    else
        unsetenv("VKLLM_GPU_SAMPLING");
}

int main(int argc, char **argv)
{
    const char *shared = getenv("VKLLM_SHARED_DIR");
    char dir[512], path[1024];
    snprintf(dir, sizeof dir, "%s/models", shared ? shared : "../shared");
    snprintf(path, sizeof path, "%s/stories260K.gguf", dir);
    FILE *probe = fopen(path, "rb");
    if (!probe) {
        printf("SKIP: %s not found (../shared is absent)\n", path);
        return 77;
    }
    fclose(probe);
    char exp_path[1024];
    snprintf(exp_path, sizeof exp_path, "%s/stories260K.expected.md", dir);
    char *md = read_file(exp_path);
    char *expected = md ? expected_text(md) : NULL;
    if (!expected) {
        printf("FAIL: cannot read the expected text from %s\n", exp_path);
        return 1;
    }

    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argc > 1 ? argv[1] : NULL, on_log, &loader, &inst);
    if (rc)
        return rc;
    api = loader.api;
    vkllm_status s;

    vkllm_model model;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = path;
    s = api->model_load(inst, &mp, &model);
    check(s == VKLLM_OK, "load %s: %s", path, s ? api->last_error() : "ok");
    if (s)
        return 1;
    vkllm_model_info info = {.size = sizeof info};
    api->model_info(model, &info);
    check(!strcmp(info.architecture, "llama") && info.n_vocab == 512 && info.n_layer == 5 &&
              info.n_embd == 64 && info.n_head == 8 && info.n_head_kv == 4,
          "info: %s vocab %u layers %u embd %u heads %u/%u params %llu", info.architecture, info.n_vocab,
          info.n_layer, info.n_embd, info.n_head, info.n_head_kv, (unsigned long long)info.n_params);
    const char *arch;
    check(api->meta_string(model, "general.architecture", &arch) == VKLLM_OK && !strcmp(arch, "llama"),
          "metadata general.architecture = llama");
    uint64_t ctx_len;
    check(api->meta_uint(model, "llama.context_length", &ctx_len) == VKLLM_OK && ctx_len == 128,
          "metadata llama.context_length = 128");
    check(api->meta_uint(model, "no.such.key", &ctx_len) == VKLLM_ERR_NOT_FOUND, "absent key -> not found");

    /* Greedy generation, token by token, exactly as llama.cpp's text. */
    vkllm_context ctx;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = 256;
    s = api->context_create(model, &cp, &ctx);
    check(s == VKLLM_OK, "context n_ctx=256: %s", s ? api->last_error() : "ok");
    if (s)
        return 1;
    const char *prompt = "Once upon a time";
    vkllm_token toks[64];
    size_t n_tok;
    s = api->tokenize(model, prompt, strlen(prompt), 1, 0, toks, 64, &n_tok);
    check(s == VKLLM_OK && n_tok == 5 && toks[0] == info.bos, "prompt -> %zu tokens with BOS", n_tok);
    vkllm_sampler_params greedy;
    api->sampler_params_defaults(&greedy, sizeof greedy);
    greedy.temperature = 0;
    greedy.repeat_penalty = 1.0f;
    char text[4096];
    size_t len = (size_t)snprintf(text, sizeof text, "%s", prompt);
    s = api->decode(ctx, toks, n_tok, 0);
    check(s == VKLLM_OK, "decode prompt: %s", s ? api->context_error(ctx) : "ok");
    for (int i = 0; i < 60 && !s; i++) {
        vkllm_token next;
        s = api->sample(ctx, &greedy, &next);
        size_t n;
        if (!s)
            s = api->token_to_text_stream(ctx, next, text + len, sizeof text - len - 1, &n);
        if (!s)
            len += n;
        if (!s)
            s = api->decode(ctx, &next, 1, 0);
    }
    text[len] = '\0';
    check(s == VKLLM_OK, "60 greedy tokens: %s", s ? api->context_error(ctx) : "ok");
    check(!strcmp(text, expected), "greedy text matches llama.cpp's:\n--- got ---\n%s\n--- want ---\n%s", text,
          expected);
    /* A Llama layer's decode step is fused into 5 dispatches (norm + Q|K|V + rope + KV store,
     * attention, output, norm + gate|up + SwiGLU, down) where the separate ops take 15; plus
     * the embedding and the output head (fused: with its norm). */
    {
        const char *fuse = getenv("VKLLM_FUSE");
        bool fused = !(fuse && !strcmp(fuse, "off"));
        uint32_t count = 0, want = fused ? 5 * info.n_layer + 2 : 15 * info.n_layer + 3, top_k = 0;
        const char *label;
        double ms;
        s = api->profile_entry(ctx, 0, &label, &ms, &count);
        /* where the GPU picks sampling candidates (GPUs, VKLLM_GPU_SAMPLING=on): one more */
        for (uint32_t i = 0; i < count && s == VKLLM_OK; i++) {
            label = NULL;
            if (api->profile_entry(ctx, i, &label, &ms, &(uint32_t){0}) == VKLLM_OK && label &&
                !strcmp(label, "top_k"))
                top_k++;
        }
        check((s == VKLLM_OK || s == VKLLM_ERR_UNSUPPORTED) && count - top_k == want && top_k <= 1,
              "one decode step (%s): %u dispatches (want %u) and %u picking sampling candidates",
              fused ? "fused" : "VKLLM_FUSE=off", count - top_k, want, top_k);
        s = VKLLM_OK;
    }
    vkllm_context_stats st = {.size = sizeof st};
    api->context_stats(ctx, &st);
    check(st.recordings == 2 && st.tokens_decoded == 60 && st.n_past == 65,
          "recorded %llu command buffers for 1 prompt + 60 decodes (want 2), n_past %u",
          (unsigned long long)st.recordings, st.n_past);

    /* The whole sequence at once (all logits) against token-by-token decoding. */
    vkllm_token seq[65];
    memcpy(seq, toks, n_tok * sizeof *seq);
    vkllm_context ctx2, ctx3;
    check(api->context_create(model, &cp, &ctx2) == VKLLM_OK && api->context_create(model, &cp, &ctx3) == VKLLM_OK,
          "two more contexts");
    size_t n_seq = 24;
    for (size_t i = n_tok; i < n_seq; i++)
        seq[i] = (vkllm_token)(3 + (i * 37) % 500);
    s = api->decode(ctx2, seq, n_seq, 1);
    const float *all = NULL;
    uint32_t rows = 0, n_vocab = 0;
    check(s == VKLLM_OK && api->logits(ctx2, &all, &rows, &n_vocab) == VKLLM_OK && rows == n_seq,
          "batch decode of %zu tokens with all logits", n_seq);
    if (rows != n_seq || !all) {
        printf("FAIL: cannot compare logits\n");
        return 1;
    }
    float *batch = malloc(rows * n_vocab * sizeof *batch);
    memcpy(batch, all, rows * n_vocab * sizeof *batch);
    double max_err = 0, max_logit = 0;
    int top1_same = 1;
    for (size_t i = 0; i < n_seq; i++) {
        const float *one;
        if (api->decode(ctx3, &seq[i], 1, 0) || api->logits(ctx3, &one, &rows, &n_vocab)) {
            check(0, "decode token %zu: %s", i, api->context_error(ctx3));
            break;
        }
        for (uint32_t v = 0; v < n_vocab; v++) {
            double e = fabs((double)one[v] - batch[i * n_vocab + v]);
            if (e > max_err)
                max_err = e;
            if (fabs(batch[i * n_vocab + v]) > max_logit)
                max_logit = fabs(batch[i * n_vocab + v]);
        }
        top1_same &= argmax(one, n_vocab) == argmax(batch + i * n_vocab, n_vocab);
    }
    /* The matrix-matrix and matrix-vector shaders sum in different orders: f32 rounding
     * only, so the difference stays tiny next to the logits' scale. */
    check(max_err < 2e-4 * max_logit && top1_same,
          "batch vs token-by-token logits: max abs diff %.2e (< 2e-4 x max |logit| %.1f), top-1 equal",
          max_err, max_logit);
    free(batch);
    api->context_free(ctx2);
    api->context_free(ctx3);
    api->context_free(ctx);

    gpu_candidates(model, toks, n_tok);
    bad_inputs(inst, model, dir);

    check(api->model_free(model) == VKLLM_OK, "model freed");
    vkllm_instance_stats is = {.size = sizeof is};
    api->instance_stats(inst, &is);
    check(is.validation_messages == 0, "validation messages: %llu", (unsigned long long)is.validation_messages);
    s = api->instance_destroy(inst);
    check(s == VKLLM_OK, "teardown clean: %s", s ? api->last_error() : "every object destroyed");
    vkllm_loader_close(&loader);
    free(expected);
    free(md);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
