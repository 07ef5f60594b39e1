/* A context: one sequence on a model. It owns the KV cache, the activation buffers planned
 * for its graphs, and a few recorded command buffers ("shape classes": decode of one token,
 * prompt batches of a given size) that are replayed, not re-recorded, token after token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch.h"
#include "error.h"
#include "sampling.h"

#define MAX_RECORDINGS 4

typedef struct recording {
    uint32_t n_tokens;
    bool all_logits;
    uint64_t last_used;
    vkr_cmd *cmd;
} recording;

struct vkllm_context_t {
    vkllm_model model;
    handle_error error;
    uint32_t n_ctx, n_batch;
    uint32_t cache_rows; /* n_ctx, or window + n_batch - 1 for a rolling windowed cache */
    /* Two graphs: logits of the last token only, or of every token. */
    g_graph graph_last, graph_all;
    dispatch_plan plan_last, plan_all;
    vkr_buffer *slots_last, *slots_all;
    vkr_buffer *k_cache, *v_cache;
    vkr_buffer *conv_state, *ssm_state; /* recurrent models (Mamba), per layer; NULL otherwise */
    vkr_buffer params, tokens, logits_last, logits_all;
    /* Sampling candidates (op_top_k) of the last-token graph, where the GPU picks them:
     * logits_last is then device-local and read back only when the row is needed. */
    bool gpu_candidates;
    vkr_buffer top_k, top_k_scratch;
    vkr_buffer positions; /* n_past + t per batch row, for learned positions (OPT) */
    vkr_buffer attention_partials; /* split key ranges' scratch; size 0: none */
    vkr_buffer moe_groups;         /* prompt tokens grouped by expert; size 0: none */
    recording recordings[MAX_RECORDINGS];
    uint64_t use_clock;

    uint32_t n_past;
    int32_t *history; /* the tokens in the cache */
    float *logits;    /* host copy when several batches contribute rows, or of logits_last */
    uint32_t logits_rows;
    const float *logits_ptr;
    bool logits_pending; /* decoded, the row still on the device (gpu_candidates) */
    vkr_cmd *last_cmd; /* the last recording submitted, for profiles */

    vk_rng rng;
    vk_sampler_scratch scratch;
    char pending[8]; /* bytes of an unfinished UTF-8 character */
    uint32_t n_pending;
    vkllm_context_stats stats;
};

handle_error *context_error_of(vkllm_context ctx) { return &ctx->error; }

static vkr_device *dev_of(vkllm_context ctx) { return ctx->model->inst->dev; }

static void free_slots(vkr_device *dev, vkr_buffer *slots, uint32_t n)
{
    if (!slots)
        return;
    for (uint32_t i = 0; i < n; i++)
        vkr_buffer_destroy(dev, &slots[i]);
    free(slots);
}

void context_free(vkllm_context ctx)
{
    if (!ctx)
        return;
    vkr_device *dev = dev_of(ctx);
    for (int i = 0; i < MAX_RECORDINGS; i++)
        vkr_cmd_destroy(ctx->recordings[i].cmd);
    free_slots(dev, ctx->slots_last, ctx->plan_last.n_slots);
    free_slots(dev, ctx->slots_all, ctx->plan_all.n_slots);
    uint32_t n_layer = ctx->graph_last.hp.n_layer;
    for (uint32_t l = 0; ctx->k_cache && l < n_layer; l++)
        vkr_buffer_destroy(dev, &ctx->k_cache[l]);
    for (uint32_t l = 0; ctx->v_cache && l < n_layer; l++)
        vkr_buffer_destroy(dev, &ctx->v_cache[l]);
    free(ctx->k_cache);
    free(ctx->v_cache);
    for (uint32_t l = 0; ctx->conv_state && l < n_layer; l++)
        vkr_buffer_destroy(dev, &ctx->conv_state[l]);
    for (uint32_t l = 0; ctx->ssm_state && l < n_layer; l++)
        vkr_buffer_destroy(dev, &ctx->ssm_state[l]);
    free(ctx->conv_state);
    free(ctx->ssm_state);
    vkr_buffer_destroy(dev, &ctx->params);
    vkr_buffer_destroy(dev, &ctx->tokens);
    vkr_buffer_destroy(dev, &ctx->positions);
    vkr_buffer_destroy(dev, &ctx->logits_last);
    vkr_buffer_destroy(dev, &ctx->logits_all);
    vkr_buffer_destroy(dev, &ctx->top_k);
    vkr_buffer_destroy(dev, &ctx->top_k_scratch);
    vkr_buffer_destroy(dev, &ctx->attention_partials);
    vkr_buffer_destroy(dev, &ctx->moe_groups);
    dispatch_plan_free(&ctx->plan_last);
    dispatch_plan_free(&ctx->plan_all);
    g_free(&ctx->graph_last);
    g_free(&ctx->graph_all);
    free(ctx->history);
    free(ctx->logits);
    vk_sampler_scratch_free(&ctx->scratch);
    atomic_fetch_sub(&ctx->model->n_contexts, 1);
    handle_error_destroy(&ctx->error);
    free(ctx);
}

static vkllm_status create_slots(vkr_device *dev, const dispatch_plan *plan, vkr_buffer **out)
{
    *out = calloc(plan->n_slots ? plan->n_slots : 1, sizeof **out);
    if (!*out)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    for (uint32_t i = 0; i < plan->n_slots; i++) {
        if (plan->slot_bytes[i] > dev->caps.max_storage_buffer_range)
            return vk_fail(VKLLM_ERR_INTERNAL, "activation buffer of %llu bytes exceeds a binding",
                           (unsigned long long)plan->slot_bytes[i]);
        vkllm_status s = vkr_buffer_create(dev, plan->slot_bytes[i], VKR_MEMORY_DEVICE, &(*out)[i]);
        if (s)
            return s;
    }
    return VKLLM_OK;
}

/* Largest activation row of a graph, in floats. */
static uint32_t widest_node(const g_graph *g)
{
    uint32_t w = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].width > w)
            w = g->nodes[i].width;
    return w;
}

static bool graph_has(const g_graph *g, g_op op)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op)
            return true;
    return false;
}

/* Channels of the conv state: Mamba's d_inner, StripedHyena's 3 n_embd (graph.h). */
static uint32_t conv_channels(const g_hparams *hp)
{
    return hp->ssm_conv_channels ? hp->ssm_conv_channels : hp->ssm_d_inner;
}

/* Zeroes the recurrent state: the start of a sequence. */
static vkllm_status reset_recurrent_state(vkllm_context ctx)
{
    const g_hparams *hp = &ctx->graph_last.hp;
    size_t conv = (size_t)conv_channels(hp) * (hp->ssm_d_conv - 1) * sizeof(float);
    size_t ssm = (size_t)hp->ssm_d_inner * hp->ssm_d_state * sizeof(float);
    void *zeros = calloc(1, conv > ssm ? conv : ssm);
    if (!zeros)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s = VKLLM_OK;
    for (uint32_t l = 0; l < hp->n_layer && !s; l++) {
        s = vkr_buffer_write(dev_of(ctx), &ctx->conv_state[l], 0, zeros, conv);
        if (!s)
            s = vkr_buffer_write(dev_of(ctx), &ctx->ssm_state[l], 0, zeros, ssm);
    }
    free(zeros);
    return s;
}

/* A recurrent model (Mamba) keeps per layer a conv state [d_inner][d_conv - 1] and an SSM
 * state [d_inner][d_state], f32, instead of a KV cache: a few hundred KiB whatever n_ctx.
 * StripedHyena keeps the same pair (FIR inputs, complex modal state) for its Hyena layers. */
static vkllm_status create_recurrent_state(vkllm_context ctx)
{
    const g_hparams *hp = &ctx->graph_last.hp;
    if (hp->ssm_d_conv < 2 || hp->ssm_d_inner == 0 || hp->ssm_d_state == 0)
        return vk_fail(VKLLM_ERR_INTERNAL, "recurrent state of sizes %u, %u, %u", hp->ssm_d_conv,
                       hp->ssm_d_inner, hp->ssm_d_state);
    ctx->conv_state = calloc(hp->n_layer, sizeof *ctx->conv_state);
    ctx->ssm_state = calloc(hp->n_layer, sizeof *ctx->ssm_state);
    if (!ctx->conv_state || !ctx->ssm_state)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        vkllm_status s;
        if ((s = vkr_buffer_create(dev_of(ctx), (VkDeviceSize)conv_channels(hp) * (hp->ssm_d_conv - 1) * sizeof(float),
                                   VKR_MEMORY_DEVICE, &ctx->conv_state[l])) ||
            (s = vkr_buffer_create(dev_of(ctx), (VkDeviceSize)hp->ssm_d_inner * hp->ssm_d_state * sizeof(float),
                                   VKR_MEMORY_DEVICE, &ctx->ssm_state[l])))
            return s;
    }
    return reset_recurrent_state(ctx);
}

/* Whether the GPU picks the sampling candidates: VKLLM_GPU_SAMPLING=on|off, by default on
 * GPUs (on a CPU device the logits are in host memory anyway, and the host sampler is faster
 * than the sort there), and only where op_top_k takes the row. */
static bool use_gpu_candidates(const vkr_device *dev, uint32_t n_vocab)
{
    const char *e = getenv("VKLLM_GPU_SAMPLING");
    bool on = e && !strcmp(e, "on") ? true : e && !strcmp(e, "off") ? false
                                                                      : dev->caps.device_type != VKLLM_DEVICE_CPU;
    return on && (uint64_t)n_vocab * 4 <= dev->caps.max_storage_buffer_range;
}

/* Scratch for attention rows whose keys are split across workgroups (decode on GPUs, long
 * contexts on lavapipe). graph_last's attention nodes are graph_all's (the two differ only
 * after the last layer), so one sizes it for both. */
static vkllm_status create_attention_partials(vkllm_context ctx)
{
    vkr_device *dev = dev_of(ctx);
    uint64_t bytes = dispatch_attention_partials_bytes(dev, &ctx->graph_all, ctx->cache_rows, ctx->n_batch);
    return bytes ? vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &ctx->attention_partials) : VKLLM_OK;
}

/* Scratch for prompt batches of mixture-of-experts models, whose tokens are grouped by
 * expert (graph_last's expert products are graph_all's). */
static vkllm_status create_moe_groups(vkllm_context ctx)
{
    uint64_t bytes = dispatch_moe_groups_bytes(dev_of(ctx), &ctx->graph_all, ctx->n_batch);
    return bytes ? vkr_buffer_create(dev_of(ctx), bytes, VKR_MEMORY_DEVICE, &ctx->moe_groups) : VKLLM_OK;
}

/* The last token's logits row: host-visible, or with GPU candidates device-local beside the
 * candidates (host-visible) and a host copy for when the row is read after all. */
static vkllm_status create_logits_last(vkllm_context ctx)
{
    vkr_device *dev = dev_of(ctx);
    uint32_t n_vocab = ctx->graph_last.hp.n_vocab;
    VkDeviceSize bytes = (VkDeviceSize)n_vocab * sizeof(float);
    ctx->gpu_candidates = use_gpu_candidates(dev, n_vocab);
    if (!ctx->gpu_candidates)
        return vkr_buffer_create(dev, bytes, VKR_MEMORY_HOST, &ctx->logits_last);
    uint64_t scratch = op_top_k_scratch_bytes(dev, n_vocab);
    vkllm_status s;
    if ((s = vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &ctx->logits_last)) ||
        (s = vkr_buffer_create(dev, OP_TOP_K * 8, VKR_MEMORY_HOST, &ctx->top_k)) ||
        (s = vkr_buffer_create(dev, scratch > 16 ? scratch : 16, VKR_MEMORY_DEVICE, &ctx->top_k_scratch)))
        return s;
    ctx->logits = malloc(bytes);
    if (!ctx->logits)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory for a logits row");
    return VKLLM_OK;
}

vkllm_status context_create(vkllm_model model, const vkllm_context_params *params, vkllm_context *out)
{
    vkr_device *dev = model->inst->dev;
    vkllm_context ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    handle_error_init(&ctx->error);
    ctx->model = model;
    atomic_fetch_add(&model->n_contexts, 1);
    vkllm_status s;
    if ((s = g_build(model->gguf, 1, &ctx->graph_last)) || (s = g_build(model->gguf, 0, &ctx->graph_all)))
        goto fail;
    const g_hparams *hp = &ctx->graph_last.hp;
    ctx->n_ctx = params->n_ctx ? params->n_ctx : hp->n_ctx_train;
    if (ctx->n_ctx == 0 || ctx->n_ctx > (1u << 20)) {
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "n_ctx %u is out of range", ctx->n_ctx);
        goto fail;
    }
    if (hp->n_pos && ctx->n_ctx > hp->n_pos) { /* learned positions end with their table */
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "n_ctx %u exceeds the %u positions the model has embeddings for",
                    ctx->n_ctx, hp->n_pos);
        goto fail;
    }
    /* A batch's activations must each fit one binding. */
    uint64_t range = dev->caps.max_storage_buffer_range;
    uint32_t widest = widest_node(&ctx->graph_all);
    uint64_t fit = range / ((uint64_t)widest * sizeof(float));
    ctx->n_batch = params->n_batch ? params->n_batch : 512;
    if (ctx->n_batch > fit)
        ctx->n_batch = (uint32_t)fit;
    if (ctx->n_batch > ctx->n_ctx)
        ctx->n_batch = ctx->n_ctx;
    if (ctx->n_batch == 0) {
        s = vk_fail(VKLLM_ERR_UNSUPPORTED, "a row of %u floats does not fit one storage binding", widest);
        goto fail;
    }
    /* A sliding window needs only the last window positions, plus room for the batch
     * being stored before its attention reads the cache. */
    uint64_t kv_row = 0; /* the widest layer's (DeciLM varies KV heads per layer) */
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if ((uint64_t)hp->n_head_kv_layer[l] * hp->head_dim * 2 > kv_row)
            kv_row = (uint64_t)hp->n_head_kv_layer[l] * hp->head_dim * 2;
    ctx->cache_rows = ctx->n_ctx;
    if (hp->n_swa && (uint64_t)hp->n_swa + ctx->n_batch - 1 < ctx->n_ctx)
        ctx->cache_rows = hp->n_swa + ctx->n_batch - 1;
    if (kv_row * ctx->cache_rows > range) {
        s = vk_fail(VKLLM_ERR_UNSUPPORTED,
                    "n_ctx %u needs a %llu-byte KV cache per layer, more than one binding holds (%llu); "
                    "use n_ctx <= %llu", ctx->n_ctx, (unsigned long long)(kv_row * ctx->cache_rows),
                    (unsigned long long)range, (unsigned long long)(range / kv_row));
        goto fail;
    }
    if ((s = dispatch_plan_graph(&ctx->graph_last, ctx->n_batch, &ctx->plan_last)) ||
        (s = dispatch_plan_graph(&ctx->graph_all, ctx->n_batch, &ctx->plan_all)) ||
        (s = create_slots(dev, &ctx->plan_last, &ctx->slots_last)) ||
        (s = create_slots(dev, &ctx->plan_all, &ctx->slots_all)))
        goto fail;
    ctx->k_cache = calloc(hp->n_layer, sizeof *ctx->k_cache);
    ctx->v_cache = calloc(hp->n_layer, sizeof *ctx->v_cache);
    ctx->history = calloc(ctx->n_ctx, sizeof *ctx->history);
    if (!ctx->k_cache || !ctx->v_cache || !ctx->history) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
        goto fail;
    }
    /* A graph without attention (Mamba) needs no KV cache. */
    bool attention = graph_has(&ctx->graph_all, G_ATTENTION);
    for (uint32_t l = 0; attention && l < hp->n_layer; l++) {
        uint64_t bytes = (uint64_t)hp->n_head_kv_layer[l] * hp->head_dim * 2 * ctx->cache_rows;
        if ((s = vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &ctx->k_cache[l])) ||
            (s = vkr_buffer_create(dev, bytes, VKR_MEMORY_DEVICE, &ctx->v_cache[l])))
            goto fail;
    }
    if ((graph_has(&ctx->graph_all, G_SSM_SCAN) || graph_has(&ctx->graph_all, G_HYENA_IIR)) &&
        (s = create_recurrent_state(ctx)))
        goto fail;
    if ((s = vkr_buffer_create(dev, sizeof(vk_step_params), VKR_MEMORY_HOST, &ctx->params)) ||
        (s = vkr_buffer_create(dev, ctx->n_batch * sizeof(int32_t), VKR_MEMORY_HOST, &ctx->tokens)) ||
        (s = vkr_buffer_create(dev, ctx->n_batch * sizeof(int32_t), VKR_MEMORY_HOST, &ctx->positions)) ||
        (s = create_attention_partials(ctx)) ||
        (s = create_moe_groups(ctx)) ||
        (s = create_logits_last(ctx)) ||
        (s = vkr_buffer_create(dev, (VkDeviceSize)hp->n_vocab * sizeof(float) * ctx->n_batch,
                               VKR_MEMORY_HOST, &ctx->logits_all)) ||
        (s = vk_sampler_scratch_init(&ctx->scratch, hp->n_vocab)))
        goto fail;
    vk_rng_seed(&ctx->rng, params->seed);
    ctx->stats.size = sizeof ctx->stats;
    *out = ctx;
    return VKLLM_OK;
fail:
    {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", vk_error_message());
        context_free(ctx);
        vk_fail(s, "%s", saved);
    }
    return s;
}

/* The recording for this shape class, recorded on first use. */
static vkllm_status get_recording(vkllm_context ctx, uint32_t n_tokens, bool all, vkr_cmd **out)
{
    recording *slot = &ctx->recordings[0];
    for (int i = 0; i < MAX_RECORDINGS; i++) {
        recording *r = &ctx->recordings[i];
        if (r->cmd && r->n_tokens == n_tokens && r->all_logits == all) {
            r->last_used = ++ctx->use_clock;
            *out = r->cmd;
            return VKLLM_OK;
        }
        if (!r->cmd || r->last_used < slot->last_used)
            slot = r;
    }
    vkr_device *dev = dev_of(ctx);
    const g_graph *g = all ? &ctx->graph_all : &ctx->graph_last;
    dispatch_buffers bufs = {
        .slots = all ? ctx->slots_all : ctx->slots_last,
        .k_cache = ctx->k_cache,
        .v_cache = ctx->v_cache,
        .conv_state = ctx->conv_state,
        .ssm_state = ctx->ssm_state,
        .params = &ctx->params,
        .tokens = &ctx->tokens,
        .positions = &ctx->positions,
        .logits = all ? &ctx->logits_all : &ctx->logits_last,
        .top_k = !all && ctx->gpu_candidates ? &ctx->top_k : NULL,
        .top_k_scratch = &ctx->top_k_scratch,
        .attention_partials = ctx->attention_partials.size ? &ctx->attention_partials : NULL,
        .moe_groups = ctx->moe_groups.size ? &ctx->moe_groups : NULL,
        .n_ctx = ctx->cache_rows,
    };
    vkllm_status s = VKLLM_OK;
    if (!slot->cmd)
        s = vkr_cmd_create(dev, 16 * g->n_nodes + 64, true, &slot->cmd);
    if (!s)
        s = dispatch_record(dev, ctx->model, g, all ? &ctx->plan_all : &ctx->plan_last, &bufs, n_tokens,
                            slot->cmd);
    if (s) {
        if (ctx->last_cmd == slot->cmd)
            ctx->last_cmd = NULL;
        vkr_cmd_destroy(slot->cmd);
        memset(slot, 0, sizeof *slot);
        return s;
    }
    slot->n_tokens = n_tokens;
    slot->all_logits = all;
    slot->last_used = ++ctx->use_clock;
    ctx->stats.recordings++;
    *out = slot->cmd;
    return VKLLM_OK;
}

vkllm_status context_decode(vkllm_context ctx, const vkllm_token *tokens, size_t n, int32_t all)
{
    uint32_t n_vocab = ctx->graph_last.hp.n_vocab;
    if (n == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "decode: no tokens");
    if (n > ctx->n_ctx - ctx->n_past)
        return vk_fail(VKLLM_ERR_CONTEXT_FULL,
                       "decode: %zu tokens after %u would exceed the context of %u tokens", n,
                       ctx->n_past, ctx->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= n_vocab)
            return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE,
                           "decode: token %d at index %zu is outside the vocabulary (0..%u)", tokens[i],
                           i, n_vocab - 1);
    bool want_all = all != 0;
    if (want_all && n > 1) {
        float *grown = realloc(ctx->logits, n * n_vocab * sizeof(float));
        if (!grown)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "decode: out of memory for %zu logits rows", n);
        ctx->logits = grown;
    }
    ctx->logits_ptr = NULL;
    ctx->logits_pending = false;
    double gpu_ms = 0;
    for (size_t done = 0; done < n;) {
        uint32_t batch = (uint32_t)(n - done < ctx->n_batch ? n - done : ctx->n_batch);
        vkr_cmd *cmd;
        vkllm_status s = get_recording(ctx, batch, want_all, &cmd);
        if (s)
            return s;
        memcpy(ctx->tokens.mapped, tokens + done, batch * sizeof(int32_t));
        for (uint32_t t = 0; t < batch; t++)
            ((int32_t *)ctx->positions.mapped)[t] = (int32_t)(ctx->n_past + t);
        vk_step_params p = {.n_past = ctx->n_past, .n_tokens = batch};
        memcpy(ctx->params.mapped, &p, sizeof p);
        if ((s = vkr_cmd_submit_wait(cmd)))
            return s;
        ctx->last_cmd = cmd;
        ctx->stats.submits++;
        double ms = vkr_cmd_gpu_ms(cmd);
        gpu_ms += ms > 0 ? ms : 0;
        memcpy(ctx->history + ctx->n_past, tokens + done, batch * sizeof(int32_t));
        ctx->n_past += batch;
        if (batch > 1)
            ctx->stats.tokens_prompt += batch;
        else
            ctx->stats.tokens_decoded++;
        if (want_all && n > 1)
            memcpy(ctx->logits + done * n_vocab, ctx->logits_all.mapped,
                   (size_t)batch * n_vocab * sizeof(float));
        done += batch;
    }
    ctx->logits_rows = want_all ? (uint32_t)n : 1;
    if (want_all && n > 1)
        ctx->logits_ptr = ctx->logits;
    else if (want_all || !ctx->gpu_candidates)
        ctx->logits_ptr = (const float *)(want_all ? ctx->logits_all.mapped : ctx->logits_last.mapped);
    else
        ctx->logits_pending = true; /* sample() may need only the candidates */
    if (ctx->logits_ptr)
        ctx->stats.logits_reads++;
    ctx->stats.gpu_ms_last = gpu_ms;
    return VKLLM_OK;
}

/* Reads the pending logits row back (GPU candidates: only when it is needed). */
static vkllm_status host_logits(vkllm_context ctx)
{
    if (!ctx->logits_pending)
        return VKLLM_OK;
    uint32_t n_vocab = ctx->graph_last.hp.n_vocab;
    vkllm_status s = vkr_buffer_read(dev_of(ctx), &ctx->logits_last, 0, ctx->logits, (VkDeviceSize)n_vocab * sizeof(float));
    if (s)
        return s;
    ctx->logits_ptr = ctx->logits;
    ctx->logits_pending = false;
    ctx->stats.logits_reads++;
    return VKLLM_OK;
}

vkllm_status context_logits(vkllm_context ctx, const float **out, uint32_t *n_rows, uint32_t *n_vocab)
{
    vkllm_status s = host_logits(ctx);
    if (s)
        return s;
    if (!ctx->logits_ptr)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "logits: nothing decoded yet");
    *out = ctx->logits_ptr;
    *n_rows = ctx->logits_rows;
    *n_vocab = ctx->graph_last.hp.n_vocab;
    return VKLLM_OK;
}

vkllm_status context_sample(vkllm_context ctx, const vkllm_sampler_params *params, vkllm_token *out)
{
    uint32_t n_vocab = ctx->graph_last.hp.n_vocab;
    if (ctx->logits_pending) { /* the GPU's candidates, when they are all the sampler reads */
        const uint32_t *pairs = (const uint32_t *)ctx->top_k.mapped;
        int32_t ids[OP_TOP_K];
        float values[OP_TOP_K];
        for (uint32_t i = 0; i < OP_TOP_K; i++) {
            memcpy(&values[i], &pairs[2 * i], sizeof(float));
            ids[i] = pairs[2 * i + 1] < n_vocab ? (int32_t)pairs[2 * i + 1] : -1;
        }
        bool done;
        vkllm_status s = vk_sample_top(ids, values, OP_TOP_K, n_vocab, params, ctx->history, ctx->n_past, &ctx->rng,
                                       &ctx->scratch, out, &done);
        if (done)
            return s;
    }
    vkllm_status s = host_logits(ctx);
    if (s)
        return s;
    if (!ctx->logits_ptr)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: nothing decoded yet");
    const float *row = ctx->logits_ptr + (size_t)(ctx->logits_rows - 1) * n_vocab;
    return vk_sample(row, n_vocab, params, ctx->history, ctx->n_past, &ctx->rng, &ctx->scratch, out);
}

/* Length of the UTF-8 sequence a lead byte starts; 0 for a continuation or invalid byte. */
static uint32_t utf8_length(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        return 2;
    if ((c & 0xf0) == 0xe0)
        return 3;
    if ((c & 0xf8) == 0xf0)
        return 4;
    return 0;
}

vkllm_status context_token_to_text_stream(vkllm_context ctx, vkllm_token token, char *text,
                                          size_t capacity, size_t *n_out)
{
    char piece[256];
    size_t n_piece;
    if (!ctx->model->vocab) /* a Hugging Face folder: tokenizer.json is not read */
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "no tokenizer: the model was loaded without a vocabulary");
    vkllm_status s = vk_token_to_piece(ctx->model->vocab, token, piece, sizeof piece, &n_piece);
    if (s == VKLLM_ERR_BUFFER_TOO_SMALL || n_piece > sizeof piece)
        return vk_fail(VKLLM_ERR_INTERNAL, "token %d has a text longer than %zu bytes", token, sizeof piece);
    if (s)
        return s;
    char all[sizeof piece + sizeof ctx->pending];
    size_t n = ctx->n_pending;
    memcpy(all, ctx->pending, n);
    memcpy(all + n, piece, n_piece);
    n += n_piece;
    /* Hold back a trailing character whose bytes have not all arrived. */
    size_t complete = n;
    for (size_t back = 1; back <= 4 && back <= n; back++) {
        unsigned char c = (unsigned char)all[n - back];
        uint32_t len = utf8_length(c);
        if (len == 0)
            continue; /* continuation byte: keep looking for the lead */
        if (len > back)
            complete = n - back;
        break;
    }
    *n_out = complete;
    if (complete > capacity)
        return vk_fail(VKLLM_ERR_BUFFER_TOO_SMALL, "token_to_text_stream: %zu bytes do not fit in %zu",
                       complete, capacity);
    memcpy(text, all, complete);
    ctx->n_pending = (uint32_t)(n - complete);
    memcpy(ctx->pending, all + complete, ctx->n_pending);
    return VKLLM_OK;
}

vkllm_status context_kv_truncate(vkllm_context ctx, uint32_t n_keep)
{
    if (n_keep > ctx->n_past)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "kv_truncate: cannot keep %u of %u tokens", n_keep,
                       ctx->n_past);
    /* A recurrent state folds the whole prefix together: it can start over, not go back. */
    if (ctx->ssm_state && n_keep != ctx->n_past) {
        if (n_keep != 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED,
                           "kv_truncate: %s is a recurrent model whose state cannot be rewound to %u of %u "
                           "tokens; only kv_truncate(0), which starts the sequence over, is possible",
                           ctx->graph_last.hp.arch, n_keep, ctx->n_past);
        vkllm_status s = reset_recurrent_state(ctx);
        if (s)
            return s;
    }
    /* Rows past n_past are overwritten before they are read again. A rolling cache holds
     * only the last cache_rows positions: the next token after n_keep needs the window
     * before it, so at most cache_rows + 1 - window positions can be dropped. */
    uint32_t droppable = ctx->cache_rows + 1 - ctx->graph_last.hp.n_swa;
    if (ctx->cache_rows < ctx->n_ctx && n_keep + droppable < ctx->n_past)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "kv_truncate: the rolling cache of a sliding-window model keeps the window "
                       "for positions from %u on only; cannot go back to %u",
                       ctx->n_past - droppable, n_keep);
    ctx->n_past = n_keep;
    ctx->logits_ptr = NULL;
    ctx->logits_pending = false;
    return VKLLM_OK;
}

vkllm_status context_profile_entry(vkllm_context ctx, uint32_t index, const char **label, double *ms,
                                   uint32_t *count)
{
    if (!ctx->last_cmd)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "profile_entry: nothing submitted yet");
    *count = vkr_cmd_dispatch_count(ctx->last_cmd);
    if (index >= *count)
        return vk_fail(VKLLM_ERR_NOT_FOUND, "profile_entry: index %u of %u dispatches", index, *count);
    if (!vkr_cmd_dispatch_time(ctx->last_cmd, index, label, ms))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "profile_entry: the device gave no timestamps");
    return VKLLM_OK;
}

vkllm_status context_stats(vkllm_context ctx, vkllm_context_stats *stats)
{
    *stats = ctx->stats;
    stats->n_past = ctx->n_past;
    return VKLLM_OK;
}
