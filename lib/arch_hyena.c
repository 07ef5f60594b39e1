/* StripedHyena (Together, Dec 2023: StripedHyena-Hessian-7B, -Nous-7B), as Together's
 * `stripedhyena` package (0.2.2) computes it. llama.cpp has no such architecture: the GGUF
 * layout is vkllm's own (tests/conformance/make_stripedhyena.py writes it, README there):
 * general.architecture "stripedhyena", llama.cpp-style keys stripedhyena.* and tensor names.
 *
 * Blocks are either attention or Hyena (which one: the tensors present); both are
 *   x += mixer(norm(x));  x += W_down (silu(W_gate h) * W_up h),  h = norm(x)   (attn_norm, ffn_norm)
 * norm(x) = x / (sqrt(mean(x^2)) + eps) * g: the package's RMSNorm, eps added to the RMS
 * (stripedhyena.rms_norm_eps_outside = 1); with 0, flash-attn's fused form x / sqrt(mean(x^2) + eps).
 *
 * Attention mixer (flash-attn's MHA): q | k | v = attn_qkv x (+ bias) (GQA: head h reads KV
 * head h / (H / Hkv)); RoPE on whole heads in half-split ("neox") pairs, base rope.freq_base,
 * optional linear position scaling; causal softmax(q k / sqrt(D)) v; attn_output (+ bias).
 *
 * Hyena mixer (ParallelGatedConvBlock), per channel c of E:
 *   z = hyena_in x + b                               3E rows, stored as [x2 | x1 | v]
 *   z = fir(z): z[t] = b_c + sum_k w_c[k] z[t - K + 1 + k]   (short depthwise causal FIR, K taps)
 *   u = x1 * v
 *   y[t] = x2[t] * (sum_{s <= t} h[t - s] u[s] + D_c u[t]),  h[t] = Re sum_n R_n p_n^t
 *   x += hyena_out y + b
 * The long filter h is in modal form (N complex poles p and residues R per channel), so the
 * convolution equals the diagonal linear recurrence s_n = p_n s_n + u, y = x2 (Re sum_n R_n s_n
 * + D u), with the complex state s (N per channel) carried between calls: prompts and decode
 * both run it (G_HYENA_IIR), and the FIR keeps its last K - 1 inputs (G_HYENA_FIR). The
 * context keeps both states per layer as for Mamba; attention layers keep a KV cache. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "graph.h"
#include "quant.h"

#define HYENA_MAX_FIR 8    /* what op_ssm_conv supports */
#define HYENA_MAX_MODES 32 /* what op_hyena_iir supports */

typedef struct builder {
    g_graph *g;
    const gguf_file *f;
    bool eps_outside; /* the package's RMSNorm form */
} builder;

static bool has_tensor(const gguf_file *f, const char *name) { return gguf_find_tensor(f, name) != NULL; }

static vkllm_status norm(builder *b, int32_t x, const char *what, uint32_t l, int32_t *out)
{
    const g_hparams *hp = &b->g->hp;
    const char *w;
    vkllm_status s = g_layer_name(b->g, &w, what, l);
    if (s || (s = g_expect_vector(b->f, w, hp->n_embd)))
        return s;
    return g_add(b->g, (g_node){.op = b->eps_outside ? G_HYENA_NORM : G_RMSNORM, .in = {x, -1}, .weight = {w},
                                .width = hp->n_embd, .eps = hp->norm_eps, .label = w},
                       out);
}

/* x += W_down (silu(W_gate h) * W_up h), h = ffn_norm(x). */
static vkllm_status build_mlp(builder *b, uint32_t l, int32_t *x)
{
    const uint32_t E = b->g->hp.n_embd, F = b->g->hp.n_ff;
    int32_t h = -1, gate = -1, up = -1, act = -1;
    vkllm_status s;
    if ((s = norm(b, *x, "blk.%u.ffn_norm.weight", l, &h)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "ffn_gate", l, E, 0, F, F, -1, &gate)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "ffn_up", l, E, 0, F, F, -1, &up)) ||
        (s = g_add(b->g, (g_node){.op = G_SWIGLU, .in = {gate, up}, .width = F, .label = "swiglu"}, &act)))
        return s;
    return g_add_layer_matmul(b->g, b->f, act, "ffn_down", l, F, 0, E, E, *x, x);
}

static vkllm_status build_attention(builder *b, uint32_t l, int32_t *x)
{
    const g_hparams *hp = &b->g->hp;
    const uint32_t E = hp->n_embd, D = hp->head_dim, Q = hp->n_head * D, KV = hp->n_head_kv * D;
    int32_t h = -1, q = -1, k = -1, v = -1, store = -1, a = -1;
    vkllm_status s;
    if ((s = norm(b, *x, "blk.%u.attn_norm.weight", l, &h)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "attn_qkv", l, E, 0, Q, Q + 2 * KV, -1, &q)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "attn_qkv", l, E, Q, KV, Q + 2 * KV, -1, &k)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "attn_qkv", l, E, Q + KV, KV, Q + 2 * KV, -1, &v)) ||
        (s = g_add(b->g, (g_node){.op = G_ROPE, .in = {q, -1}, .width = Q, .inplace = 1,
                                  .rope = {hp->n_head, D, hp->n_rot, 1, hp->rope_freq_base, hp->rope_freq_scale},
                                  .label = "rope_q"},
                         &q)) ||
        (s = g_add(b->g, (g_node){.op = G_ROPE, .in = {k, -1}, .width = KV, .inplace = 1,
                                  .rope = {hp->n_head_kv, D, hp->n_rot, 1, hp->rope_freq_base, hp->rope_freq_scale},
                                  .label = "rope_k"},
                         &k)) ||
        (s = g_add(b->g, (g_node){.op = G_KV_STORE, .in = {k, v}, .width = KV, .layer = l,
                                  .label = "kv_store"},
                         &store)) ||
        (s = g_add(b->g, (g_node){.op = G_ATTENTION, .in = {q, store}, .width = Q, .layer = l,
                                  .attn = {hp->n_head, hp->n_head_kv, D, 1.0f / sqrtf((float)D), 0, 0.0f},
                                  .label = "attention"},
                         &a)) ||
        (s = g_add_layer_matmul(b->g, b->f, a, "attn_output", l, Q, 0, E, E, *x, x)))
        return s;
    return build_mlp(b, l, x);
}

static vkllm_status build_hyena(builder *b, uint32_t l, int32_t *x)
{
    const g_hparams *hp = &b->g->hp;
    const uint32_t E = hp->n_embd, K = hp->ssm_d_conv, M2 = hp->ssm_d_state;
    const char *conv_w, *conv_b, *poles, *residues, *d, *label;
    int32_t h = -1, z = -1, y = -1;
    vkllm_status s;
    if ((s = g_layer_name(b->g, &conv_w, "blk.%u.hyena_conv.weight", l)) ||
        (s = g_layer_name(b->g, &conv_b, "blk.%u.hyena_conv.bias", l)) ||
        (s = g_layer_name(b->g, &poles, "blk.%u.hyena_poles", l)) ||
        (s = g_layer_name(b->g, &residues, "blk.%u.hyena_residues", l)) ||
        (s = g_layer_name(b->g, &d, "blk.%u.hyena_d", l)) ||
        (s = g_expect_array(b->f, conv_w, K, 3 * E)) || (s = g_expect_array(b->f, poles, M2, E)) ||
        (s = g_expect_array(b->f, residues, M2, E)) || (s = g_expect_vector(b->f, d, E)))
        return s;
    if (!has_tensor(b->f, conv_b))
        conv_b = NULL;
    else if ((s = g_expect_vector(b->f, conv_b, 3 * E)))
        return s;
    if ((s = norm(b, *x, "blk.%u.attn_norm.weight", l, &h)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "hyena_in", l, E, 0, 3 * E, 3 * E, -1, &z)) ||
        (s = g_layer_name(b->g, &label, "blk.%u.hyena_fir", l)) ||
        (s = g_add(b->g, (g_node){.op = G_HYENA_FIR, .in = {z, -1}, .weight = {conv_w, conv_b},
                                  .width = 3 * E, .layer = l, .label = label},
                         &z)) ||
        (s = g_layer_name(b->g, &label, "blk.%u.hyena_iir", l)) ||
        (s = g_add(b->g, (g_node){.op = G_HYENA_IIR, .in = {z, -1}, .weight = {poles, residues, d},
                                  .width = E, .layer = l, .label = label},
                         &y)) ||
        (s = g_add_layer_matmul(b->g, b->f, y, "hyena_out", l, E, 0, E, E, *x, x)))
        return s;
    return build_mlp(b, l, x);
}

static vkllm_status read_hparams(const gguf_file *f, builder *b)
{
    g_hparams *hp = &b->g->hp;
    const char *a = "stripedhyena";
    snprintf(hp->arch, sizeof hp->arch, "%s", a);
    uint32_t eps_outside, key_length, n_modes;
    float eps, factor = 0.0f;
    vkllm_status s;
    if ((s = g_key_u32(f, a, "embedding_length", &hp->n_embd, 1, 0)) ||
        (s = g_key_u32(f, a, "block_count", &hp->n_layer, 1, 0)) ||
        (s = g_key_u32(f, a, "feed_forward_length", &hp->n_ff, 1, 0)) ||
        (s = g_key_u32(f, a, "context_length", &hp->n_ctx_train, 0, 2048)) ||
        (s = g_key_u32(f, a, "attention.head_count", &hp->n_head, 1, 0)) ||
        (s = g_key_u32(f, a, "attention.head_count_kv", &hp->n_head_kv, 0, hp->n_head)) ||
        (s = g_key_u32(f, a, "attention.key_length", &key_length, 0, 0)) ||
        (s = g_key_f32(f, a, "attention.layer_norm_rms_epsilon", &eps, 1e-5f)) ||
        (s = g_key_u32(f, a, "rms_norm_eps_outside", &eps_outside, 0, 1)) ||
        (s = g_key_f32(f, a, "rope.freq_base", &hp->rope_freq_base, 10000.0f)) ||
        (s = g_key_f32(f, a, "rope.scaling.factor", &factor, 0.0f)) ||
        (s = g_key_u32(f, a, "hyena.short_filter_length", &hp->ssm_d_conv, 0, 3)) ||
        (s = g_key_u32(f, a, "hyena.state_size", &n_modes, 0, 0)))
        return s;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_layer > G_MAX_LAYERS || hp->n_ff == 0 || hp->n_head == 0 ||
        hp->n_embd > 0x1000000 || hp->n_ff > 0x1000000)
        return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: embedding_length %u, block_count %u (1..%u), "
                       "feed_forward_length %u, head_count %u: out of range", hp->n_embd, hp->n_layer,
                       G_MAX_LAYERS, hp->n_ff, hp->n_head);
    if (!(eps >= 0))
        return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: attention.layer_norm_rms_epsilon is negative");
    hp->norm_eps = eps;
    b->eps_outside = eps_outside != 0;
    if (hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv)
        return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: head_count_kv %u does not divide head_count %u",
                       hp->n_head_kv, hp->n_head);
    if (key_length == 0 && hp->n_embd % hp->n_head)
        return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: embedding_length %u is not a multiple of head_count %u",
                       hp->n_embd, hp->n_head);
    hp->head_dim = key_length ? key_length : hp->n_embd / hp->n_head;
    if ((s = g_key_u32(f, a, "rope.dimension_count", &hp->n_rot, 0, hp->head_dim)))
        return s;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: rope.dimension_count %u does not fit head size %u",
                       hp->n_rot, hp->head_dim);
    /* Linear scaling (use_interpolated_rotary_pos_emb): positions divided by the factor. */
    hp->rope_freq_scale = 1.0f;
    gguf_str type;
    s = gguf_get_str(f, "stripedhyena.rope.scaling.type", &type);
    if (s == VKLLM_OK) {
        if (type.len == 6 && !memcmp(type.data, "linear", 6)) {
            if (factor > 0)
                hp->rope_freq_scale = 1.0f / factor;
        } else if (!(type.len == 4 && !memcmp(type.data, "none", 4))) {
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "stripedhyena: rope scaling type '%.*s' is not supported",
                           (int)(type.len > 32 ? 32 : type.len), type.data);
        }
    } else if (s != VKLLM_ERR_NOT_FOUND) {
        return s;
    }

    /* Which blocks attend: the tensors say. Hyena layers keep no KV cache (0 KV heads). */
    bool hyena = false;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        char qkv[64], in[64];
        snprintf(qkv, sizeof qkv, "blk.%u.attn_qkv.weight", l);
        snprintf(in, sizeof in, "blk.%u.hyena_in.weight", l);
        bool is_attn = has_tensor(f, qkv), is_hyena = has_tensor(f, in);
        if (is_attn == is_hyena)
            return vk_fail(VKLLM_ERR_BAD_FILE, "stripedhyena: block %u has %s: expected either %s or %s", l,
                           is_attn ? "both" : "neither", qkv, in);
        hp->n_head_kv_layer[l] = is_attn ? hp->n_head_kv : 0;
        hp->n_ff_layer[l] = hp->n_ff;
        hyena |= is_hyena;
    }
    if (hyena) {
        if (hp->ssm_d_conv < 2 || hp->ssm_d_conv > HYENA_MAX_FIR || n_modes == 0 || n_modes > HYENA_MAX_MODES)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "stripedhyena: hyena.short_filter_length %u (2..%u), "
                           "hyena.state_size %u (1..%u): out of the supported range", hp->ssm_d_conv,
                           HYENA_MAX_FIR, n_modes, HYENA_MAX_MODES);
        hp->ssm_d_inner = hp->n_embd;
        hp->ssm_d_state = 2 * n_modes;
        hp->ssm_conv_channels = 3 * hp->n_embd;
    } else {
        hp->ssm_d_conv = 0;
    }
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor token_embd.weight is missing");
    if (embd->ne[1] == 0 || embd->ne[1] > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "token_embd.weight has %llu rows", (unsigned long long)embd->ne[1]);
    hp->n_vocab = (uint32_t)embd->ne[1];
    return VKLLM_OK;
}

vkllm_status g_build_hyena(const gguf_file *f, int last_row_only, g_graph *g)
{
    builder b = {g, f, true};
    vkllm_status s = read_hparams(f, &b);
    if (s)
        return s;
    const g_hparams *hp = &g->hp;
    const uint32_t E = hp->n_embd;
    const char *output = has_tensor(f, "output.weight") ? "output.weight" : "token_embd.weight";
    if ((s = g_expect_tensor(f, "token_embd.weight", E, hp->n_vocab)) ||
        (s = g_expect_tensor(f, output, E, hp->n_vocab)))
        return s;
    int32_t x = -1;
    if ((s = g_add(b.g, (g_node){.op = G_EMBED, .in = {-1, -1}, .weight = {"token_embd.weight"}, .width = E,
                                 .label = "token_embd"},
                        &x)))
        return s;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if ((s = hp->n_head_kv_layer[l] ? build_attention(&b, l, &x) : build_hyena(&b, l, &x)))
            return s;
    if ((s = g_expect_vector(f, "output_norm.weight", E)))
        return s;
    return g_add_output_head(g, x, last_row_only, b.eps_outside ? G_HYENA_NORM : G_RMSNORM, output);
}
