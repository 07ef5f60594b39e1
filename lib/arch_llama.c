/* LLaMA, Llama 2, Mistral (sliding window from llama.attention.sliding_window), Yi, SOLAR,
 * TinyLlama, SmolLM2...:
 * pre-RMSNorm, RoPE on adjacent pairs (GGUF stores Q/K permuted for it), attention with
 * MHA/GQA/MQA, SwiGLU MLP, sequential residual, tied or separate output matrix. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "graph.h"

/* Reads an unsigned key "<arch>.<suffix>"; `fallback` when absent and optional. */
static vkllm_status read_u32(const gguf_file *f, const char *suffix, uint32_t *out, int required,
                             uint32_t fallback)
{
    char key[128];
    snprintf(key, sizeof key, "llama.%s", suffix);
    uint64_t v;
    vkllm_status s = gguf_get_u64(f, key, &v);
    if (s == VKLLM_ERR_NOT_FOUND && !required) {
        *out = fallback;
        return VKLLM_OK;
    }
    if (s == VKLLM_ERR_NOT_FOUND)
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata key %s is missing", key);
    if (s)
        return s;
    if (v > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s = %llu is out of range", key,
                       (unsigned long long)v);
    *out = (uint32_t)v;
    return VKLLM_OK;
}

static vkllm_status read_f32(const gguf_file *f, const char *suffix, float *out, float fallback)
{
    char key[128];
    snprintf(key, sizeof key, "llama.%s", suffix);
    double v;
    vkllm_status s = gguf_get_f64(f, key, &v);
    if (s == VKLLM_ERR_NOT_FOUND) {
        *out = fallback;
        return VKLLM_OK;
    }
    if (s)
        return s;
    if (!isfinite(v))
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s is not finite", key);
    *out = (float)v;
    return VKLLM_OK;
}

static vkllm_status read_hparams(const gguf_file *f, g_hparams *hp)
{
    vkllm_status s;
    snprintf(hp->arch, sizeof hp->arch, "llama");
    if ((s = read_u32(f, "embedding_length", &hp->n_embd, 1, 0)) ||
        (s = read_u32(f, "block_count", &hp->n_layer, 1, 0)) ||
        (s = read_u32(f, "feed_forward_length", &hp->n_ff, 1, 0)) ||
        (s = read_u32(f, "attention.head_count", &hp->n_head, 1, 0)) ||
        (s = read_u32(f, "attention.head_count_kv", &hp->n_head_kv, 0, hp->n_head)) ||
        (s = read_u32(f, "context_length", &hp->n_ctx_train, 0, 2048)) ||
        (s = read_f32(f, "attention.layer_norm_rms_epsilon", &hp->norm_eps, 1e-5f)) ||
        (s = read_f32(f, "rope.freq_base", &hp->rope_freq_base, 10000.0f)) ||
        (s = read_u32(f, "attention.sliding_window", &hp->n_swa, 0, 0)))
        return s;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_head == 0 || hp->n_head_kv == 0 || hp->n_ff == 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "llama: a zero size in metadata (embd %u, layers %u, "
                       "heads %u, kv heads %u, ff %u)", hp->n_embd, hp->n_layer, hp->n_head,
                       hp->n_head_kv, hp->n_ff);
    if (hp->n_embd % hp->n_head)
        return vk_fail(VKLLM_ERR_BAD_FILE, "llama: embedding_length %u is not a multiple of "
                       "head_count %u", hp->n_embd, hp->n_head);
    if (hp->n_head % hp->n_head_kv)
        return vk_fail(VKLLM_ERR_BAD_FILE, "llama: head_count %u is not a multiple of head_count_kv %u",
                       hp->n_head, hp->n_head_kv);
    hp->head_dim = hp->n_embd / hp->n_head;
    if ((s = read_u32(f, "rope.dimension_count", &hp->n_rot, 0, hp->head_dim)))
        return s;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return vk_fail(VKLLM_ERR_BAD_FILE, "llama: rope.dimension_count %u does not fit head size %u",
                       hp->n_rot, hp->head_dim);

    /* Linear RoPE scaling: positions are divided by the factor. */
    hp->rope_freq_scale = 1.0f;
    gguf_str type;
    float factor = 0.0f;
    if ((s = read_f32(f, "rope.scaling.factor", &factor, 0.0f)))
        return s;
    s = gguf_get_str(f, "llama.rope.scaling.type", &type);
    if (s == VKLLM_OK) {
        if (type.len == 6 && !memcmp(type.data, "linear", 6)) {
            if (factor > 0)
                hp->rope_freq_scale = 1.0f / factor;
        } else if (!(type.len == 4 && !memcmp(type.data, "none", 4))) {
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "llama: rope scaling type '%.*s' is not supported",
                           (int)(type.len > 32 ? 32 : type.len), type.data);
        }
    } else if (s != VKLLM_ERR_NOT_FOUND) {
        return s;
    } else {
        float linear;
        if ((s = read_f32(f, "rope.scale_linear", &linear, 0.0f)))
            return s;
        if (linear > 0)
            hp->rope_freq_scale = 1.0f / linear;
    }

    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor token_embd.weight is missing");
    if (embd->ne[1] == 0 || embd->ne[1] > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "token_embd.weight has %llu rows",
                       (unsigned long long)embd->ne[1]);
    hp->n_vocab = (uint32_t)embd->ne[1];
    return VKLLM_OK;
}

#define ADD(...)                                                                            \
    do {                                                                                    \
        g_node n_ = {__VA_ARGS__};                                                         \
        last = g_add_node(g, &n_);                                                          \
        if (last < 0)                                                                       \
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory building the graph"); \
    } while (0)

vkllm_status g_build_llama(const gguf_file *f, int last_row_only, g_graph *g)
{
    g_hparams *hp = &g->hp;
    vkllm_status s = read_hparams(f, hp);
    if (s)
        return s;
    const uint32_t E = hp->n_embd, D = hp->head_dim, Q = hp->n_head * D, KV = hp->n_head_kv * D;
    const char *output = gguf_find_tensor(f, "output.weight") ? "output.weight" : "token_embd.weight";
    if ((s = g_expect_tensor(f, "token_embd.weight", E, hp->n_vocab)) ||
        (s = g_expect_tensor(f, output, E, hp->n_vocab)) ||
        (s = g_expect_tensor(f, "output_norm.weight", E, 1)))
        return s;

    int32_t last;
    ADD(.op = G_EMBED, .in = {-1, -1}, .weight = {"token_embd.weight"}, .width = E, .label = "token_embd");
    int32_t x = last;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const char *attn_norm = g_strf(g, "blk.%u.attn_norm.weight", l);
        const char *wq = g_strf(g, "blk.%u.attn_q.weight", l);
        const char *wk = g_strf(g, "blk.%u.attn_k.weight", l);
        const char *wv = g_strf(g, "blk.%u.attn_v.weight", l);
        const char *wo = g_strf(g, "blk.%u.attn_output.weight", l);
        const char *ffn_norm = g_strf(g, "blk.%u.ffn_norm.weight", l);
        const char *gate = g_strf(g, "blk.%u.ffn_gate.weight", l);
        const char *up = g_strf(g, "blk.%u.ffn_up.weight", l);
        const char *down = g_strf(g, "blk.%u.ffn_down.weight", l);
        if (!attn_norm || !wq || !wk || !wv || !wo || !ffn_norm || !gate || !up || !down)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory building the graph");
        if ((s = g_expect_tensor(f, attn_norm, E, 1)) || (s = g_expect_tensor(f, wq, E, Q)) ||
            (s = g_expect_tensor(f, wk, E, KV)) || (s = g_expect_tensor(f, wv, E, KV)) ||
            (s = g_expect_tensor(f, wo, Q, E)) || (s = g_expect_tensor(f, ffn_norm, E, 1)) ||
            (s = g_expect_tensor(f, gate, E, hp->n_ff)) || (s = g_expect_tensor(f, up, E, hp->n_ff)) ||
            (s = g_expect_tensor(f, down, hp->n_ff, E)))
            return s;

        ADD(.op = G_RMSNORM, .in = {x, -1}, .weight = {attn_norm}, .width = E, .eps = hp->norm_eps,
            .label = attn_norm);
        int32_t h = last;
        ADD(.op = G_MATMUL, .in = {h, -1}, .weight = {wq}, .width = Q, .label = wq);
        int32_t q = last;
        ADD(.op = G_MATMUL, .in = {h, -1}, .weight = {wk}, .width = KV, .label = wk);
        int32_t k = last;
        ADD(.op = G_MATMUL, .in = {h, -1}, .weight = {wv}, .width = KV, .label = wv);
        int32_t v = last;
        ADD(.op = G_ROPE, .in = {q, -1}, .width = Q, .inplace = 1,
            .rope = {hp->n_head, D, hp->n_rot, 0, hp->rope_freq_base, hp->rope_freq_scale},
            .label = "rope_q");
        q = last;
        ADD(.op = G_ROPE, .in = {k, -1}, .width = KV, .inplace = 1,
            .rope = {hp->n_head_kv, D, hp->n_rot, 0, hp->rope_freq_base, hp->rope_freq_scale},
            .label = "rope_k");
        k = last;
        ADD(.op = G_KV_STORE, .in = {k, v}, .width = KV, .layer = l, .label = "kv_store");
        int32_t store = last;
        ADD(.op = G_ATTENTION, .in = {q, store}, .width = Q, .layer = l,
            .attn = {hp->n_head, hp->n_head_kv, D, 1.0f / sqrtf((float)D), hp->n_swa, 0.0f},
            .label = "attention");
        int32_t a = last;
        ADD(.op = G_MATMUL, .in = {a, x}, .weight = {wo}, .width = E, .accumulate = 1, .inplace = 2,
            .label = wo);
        x = last;
        ADD(.op = G_RMSNORM, .in = {x, -1}, .weight = {ffn_norm}, .width = E, .eps = hp->norm_eps,
            .label = ffn_norm);
        h = last;
        ADD(.op = G_MATMUL, .in = {h, -1}, .weight = {gate}, .width = hp->n_ff, .label = gate);
        int32_t gt = last;
        ADD(.op = G_MATMUL, .in = {h, -1}, .weight = {up}, .width = hp->n_ff, .label = up);
        int32_t u = last;
        ADD(.op = G_SWIGLU, .in = {gt, u}, .width = hp->n_ff, .label = "swiglu");
        int32_t sw = last;
        ADD(.op = G_MATMUL, .in = {sw, x}, .weight = {down}, .width = E, .accumulate = 1, .inplace = 2,
            .label = down);
        x = last;
    }
    if (last_row_only) {
        ADD(.op = G_LAST_ROW, .in = {x, -1}, .width = E, .label = "last_row");
        x = last;
    }
    ADD(.op = G_RMSNORM, .in = {x, -1}, .weight = {"output_norm.weight"}, .width = E,
        .eps = hp->norm_eps, .label = "output_norm");
    ADD(.op = G_MATMUL, .in = {last, -1}, .weight = {output}, .width = hp->n_vocab, .label = "output");
    int32_t logits = last;
    ADD(.op = G_OUTPUT, .in = {logits, -1}, .width = hp->n_vocab, .label = "logits");
    g->logits_node = logits;
    return VKLLM_OK;
}
