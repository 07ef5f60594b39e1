/* Mamba (the selective state space model), as llama.cpp's converter writes it: GGUF
 * architecture "mamba", keys mamba.ssm.{conv_kernel, inner_size, state_size,
 * time_step_rank}, tensors blk.N.ssm_{in, conv1d, x, dt, a, d, out}. The converter stores
 * ssm_a as A = -exp(A_log) already, and ssm_conv1d squeezed to [d_inner][d_conv].
 *
 * Per layer (x = the residual stream, di = d_inner, ds = d_state, r = dt_rank):
 *   h = rmsnorm(x)
 *   u = ssm_in[0, di) h      z = ssm_in[di, 2 di) h          (row ranges, no split op)
 *   u = silu(conv1d(u) + b)                                  (G_SSM_CONV, conv state)
 *   dt = ssm_dt (ssm_x[0, r) u) + dt_bias   BC = ssm_x[r, r + 2 ds) u
 *   y = scan(u, [dt | BC], A, D)                             (G_SSM_SCAN, SSM state; softplus inside)
 *   x += ssm_out (silu(z) * y)
 * The recurrent state replaces the KV cache: the context keeps both per layer. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "graph.h"
#include "quant.h"

#define MAMBA_MAX_CONV 8   /* what op_ssm_conv supports */
#define MAMBA_MAX_STATE 64 /* what op_ssm_scan supports */

static vkllm_status read_hparams(const gguf_file *f, g_hparams *hp)
{
    snprintf(hp->arch, sizeof hp->arch, "mamba");
    vkllm_status s;
    uint32_t dt_b_c_rms;
    if ((s = g_key_u32(f, "mamba", "embedding_length", &hp->n_embd, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "block_count", &hp->n_layer, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "context_length", &hp->n_ctx_train, 0, 2048)) ||
        (s = g_key_u32(f, "mamba", "ssm.conv_kernel", &hp->ssm_d_conv, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "ssm.inner_size", &hp->ssm_d_inner, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "ssm.state_size", &hp->ssm_d_state, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "ssm.time_step_rank", &hp->ssm_dt_rank, 1, 0)) ||
        (s = g_key_u32(f, "mamba", "ssm.dt_b_c_rms", &dt_b_c_rms, 0, 0)))
        return s;
    float eps;
    if ((s = g_key_f32(f, "mamba", "attention.layer_norm_rms_epsilon", &eps, 1e-5f)))
        return s;
    if (eps < 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata mamba.attention.layer_norm_rms_epsilon is not a "
                       "finite non-negative number");
    hp->norm_eps = eps;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_layer > G_MAX_LAYERS)
        return vk_fail(VKLLM_ERR_BAD_FILE, "mamba: embedding_length %u, block_count %u (1..%u)", hp->n_embd,
                       hp->n_layer, G_MAX_LAYERS);
    if (hp->ssm_d_conv < 2 || hp->ssm_d_conv > MAMBA_MAX_CONV || hp->ssm_d_inner == 0 ||
        hp->ssm_d_state == 0 || hp->ssm_d_state > MAMBA_MAX_STATE || hp->ssm_dt_rank == 0 ||
        hp->ssm_d_inner > 0x1000000 || hp->ssm_dt_rank > 0x1000000)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "mamba: ssm.conv_kernel %u (2..%u), ssm.inner_size %u, "
                       "ssm.state_size %u (1..%u), ssm.time_step_rank %u: out of the supported range",
                       hp->ssm_d_conv, MAMBA_MAX_CONV, hp->ssm_d_inner, hp->ssm_d_state, MAMBA_MAX_STATE,
                       hp->ssm_dt_rank);
    if (dt_b_c_rms)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "mamba: ssm.dt_b_c_rms (FalconMamba's RMS norms of dt, B "
                       "and C) is not supported");
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor token_embd.weight is missing");
    if (embd->ne[1] == 0 || embd->ne[1] > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "token_embd.weight has %llu rows", (unsigned long long)embd->ne[1]);
    hp->n_vocab = (uint32_t)embd->ne[1];
    return VKLLM_OK;
}

typedef struct builder {
    g_graph *g;
    const gguf_file *f;
} builder;

static vkllm_status build_layer(builder *b, uint32_t l, int32_t *x)
{
    const g_hparams *hp = &b->g->hp;
    const uint32_t E = hp->n_embd, DI = hp->ssm_d_inner, DS = hp->ssm_d_state, R = hp->ssm_dt_rank;
    const uint32_t K = hp->ssm_d_conv;
    const char *norm_w, *conv_w, *conv_b, *a, *d, *label;
    vkllm_status s;
    if ((s = g_layer_name(b->g, &norm_w, "blk.%u.attn_norm.weight", l)) ||
        (s = g_layer_name(b->g, &conv_w, "blk.%u.ssm_conv1d.weight", l)) ||
        (s = g_layer_name(b->g, &conv_b, "blk.%u.ssm_conv1d.bias", l)) ||
        (s = g_layer_name(b->g, &a, "blk.%u.ssm_a", l)) ||
        (s = g_layer_name(b->g, &d, "blk.%u.ssm_d", l)) || (s = g_expect_vector(b->f, norm_w, E)) ||
        (s = g_expect_array(b->f, conv_w, K, DI)) || (s = g_expect_vector(b->f, conv_b, DI)) ||
        (s = g_expect_array(b->f, a, DS, DI)) || (s = g_expect_vector(b->f, d, DI)))
        return s;
    int32_t h = -1, u = -1, z = -1, dt_in = -1, bc = -1, dt = -1, dtbc = -1, y = -1, gated = -1;
    if ((s = g_add(b->g, (g_node){.op = G_RMSNORM, .in = {*x, -1}, .weight = {norm_w}, .width = E,
                                  .eps = hp->norm_eps, .label = norm_w},
                         &h)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "ssm_in", l, E, 0, DI, 2 * DI, -1, &u)) ||
        (s = g_add_layer_matmul(b->g, b->f, h, "ssm_in", l, E, DI, DI, 2 * DI, -1, &z)) ||
        (s = g_layer_name(b->g, &label, "blk.%u.ssm_conv", l)) ||
        (s = g_add(b->g, (g_node){.op = G_SSM_CONV, .in = {u, -1}, .weight = {conv_w, conv_b}, .width = DI,
                                  .layer = l, .label = label},
                         &u)) ||
        (s = g_add_layer_matmul(b->g, b->f, u, "ssm_x", l, DI, 0, R, R + 2 * DS, -1, &dt_in)) ||
        (s = g_add_layer_matmul(b->g, b->f, u, "ssm_x", l, DI, R, 2 * DS, R + 2 * DS, -1, &bc)) ||
        (s = g_add_layer_matmul(b->g, b->f, dt_in, "ssm_dt", l, R, 0, DI, DI, -1, &dt)) ||
        (s = g_add(b->g, (g_node){.op = G_CONCAT, .in = {dt, bc}, .width = DI + 2 * DS, .label = "ssm_dt_bc"},
                         &dtbc)) ||
        (s = g_layer_name(b->g, &label, "blk.%u.ssm_scan", l)) ||
        (s = g_add(b->g, (g_node){.op = G_SSM_SCAN, .in = {u, dtbc}, .weight = {a, d}, .width = DI,
                                  .layer = l, .label = label},
                         &y)) ||
        (s = g_add(b->g, (g_node){.op = G_SWIGLU, .in = {z, y}, .width = DI, .label = "ssm_gate"}, &gated)))
        return s;
    return g_add_layer_matmul(b->g, b->f, gated, "ssm_out", l, DI, 0, E, E, *x, x);
}

vkllm_status g_build_mamba(const gguf_file *f, int last_row_only, g_graph *g)
{
    g_hparams *hp = &g->hp;
    vkllm_status s = read_hparams(f, hp);
    if (s)
        return s;
    builder b = {g, f};
    const uint32_t E = hp->n_embd;
    if ((s = g_expect_tensor(f, "token_embd.weight", E, hp->n_vocab)) ||
        (s = g_expect_vector(f, "output_norm.weight", E)))
        return s;
    const char *output = gguf_find_tensor(f, "output.weight") ? "output.weight" : "token_embd.weight";
    if ((s = g_expect_tensor(f, output, E, hp->n_vocab)))
        return s;
    int32_t x = -1;
    if ((s = g_add(b.g, (g_node){.op = G_EMBED, .in = {-1, -1}, .weight = {"token_embd.weight"}, .width = E,
                                 .label = "token_embd"},
                        &x)))
        return s;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if ((s = build_layer(&b, l, &x)))
            return s;
    return g_add_output_head(g, x, last_row_only, G_RMSNORM, output);
}
