/* The StripedHyena graph (lib/arch_hyena.c) on the conformance model of
 * tests/conformance/make_stripedhyena.py, no GPU: which blocks attend and which run Hyena,
 * the recurrent-state sizes the context allocates from, the norm form the metadata picks,
 * and errors naming the key or tensor for bad files (made by editing the parsed metadata
 * and tensor table of the committed model in memory).
 *
 * usage: test_arch_hyena STRIPEDHYENA.gguf   (exit 77 when the file is absent) */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arch_test.h"
#include "quant.h"

static uint32_t count_ops(const g_graph *g, g_op op, int layer)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->n_nodes; i++)
        n += g->nodes[i].op == op && (layer < 0 || g->nodes[i].layer == (uint32_t)layer);
    return n;
}

static gguf_kv *find_kv(gguf_file *f, const char *key) { return (gguf_kv *)gguf_find(f, key); }
static gguf_tensor *find_tensor(gguf_file *f, const char *name) { return (gguf_tensor *)gguf_find_tensor(f, name); }

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s STRIPEDHYENA.gguf\n", argv[0]);
        return 1;
    }
    if (access(argv[1], R_OK)) {
        printf("SKIP: %s is absent\n", argv[1]);
        return 77;
    }
    gguf_file *f;
    if (gguf_open(argv[1], &f)) {
        printf("FAIL: open %s: %s\n", argv[1], vk_error_message());
        return 1;
    }
    g_graph g;
    vkllm_status s = g_build(f, 0, &g);
    check(s == VKLLM_OK, "graph builds: %s", s ? vk_error_message() : "ok");
    if (!s) {
        const g_hparams *hp = &g.hp;
        /* blocks: hyena, attention, hyena, attention (E 192, 6 heads over 2 KV heads, N 3, K 3) */
        check(hp->n_layer == 4 && hp->n_head_kv_layer[0] == 0 && hp->n_head_kv_layer[1] == 2 &&
                  hp->n_head_kv_layer[2] == 0 && hp->n_head_kv_layer[3] == 2,
              "KV heads per layer %u %u %u %u (0 = a Hyena block, no KV cache)", hp->n_head_kv_layer[0],
              hp->n_head_kv_layer[1], hp->n_head_kv_layer[2], hp->n_head_kv_layer[3]);
        check(count_ops(&g, G_ATTENTION, -1) == 2 && count_ops(&g, G_ATTENTION, 1) == 1 &&
                  count_ops(&g, G_ATTENTION, 3) == 1,
              "attention nodes in layers 1 and 3 only");
        check(count_ops(&g, G_HYENA_FIR, 0) == 1 && count_ops(&g, G_HYENA_IIR, 0) == 1 &&
                  count_ops(&g, G_HYENA_FIR, 2) == 1 && count_ops(&g, G_HYENA_IIR, 2) == 1 &&
                  count_ops(&g, G_HYENA_IIR, -1) == 2,
              "FIR and IIR nodes in layers 0 and 2 only");
        check(hp->ssm_d_conv == 3 && hp->ssm_d_inner == 192 && hp->ssm_d_state == 6 && hp->ssm_conv_channels == 576,
              "recurrent state sizes: FIR %u taps over %u channels, %u floats (3 complex modes) x %u channels",
              hp->ssm_d_conv, hp->ssm_conv_channels, hp->ssm_d_state, hp->ssm_d_inner);
        check(count_ops(&g, G_HYENA_NORM, -1) == 9 && count_ops(&g, G_RMSNORM, -1) == 0,
              "rms_norm_eps_outside = 1: all 9 norms eps outside the root");
        g_free(&g);
    }

    gguf_kv *outside = find_kv(f, "stripedhyena.rms_norm_eps_outside");
    gguf_kv *modes = find_kv(f, "stripedhyena.hyena.state_size");
    gguf_kv *fir = find_kv(f, "stripedhyena.hyena.short_filter_length");
    gguf_kv *kv = find_kv(f, "stripedhyena.attention.head_count_kv");
    int keys_ok = outside && outside->type == GGUF_UINT32 && modes && modes->type == GGUF_UINT32 && fir &&
                  fir->type == GGUF_UINT32 && kv && kv->type == GGUF_UINT32;
    check(keys_ok, "the file's stripedhyena keys are uint32");
    if (keys_ok) {
        outside->v.u = 0;
        s = g_build(f, 0, &g);
        check(s == VKLLM_OK && count_ops(&g, G_RMSNORM, -1) == 9 && count_ops(&g, G_HYENA_NORM, -1) == 0,
              "rms_norm_eps_outside = 0: flash-attn's form (eps under the root) everywhere");
        if (!s)
            g_free(&g);
        outside->v.u = 1;
        modes->v.u = 33;
        expect_error(f, VKLLM_ERR_UNSUPPORTED, "hyena.state_size 33", "hyena.state_size", (const char *)NULL);
        modes->v.u = 2; /* the poles hold 3 */
        expect_error(f, VKLLM_ERR_BAD_FILE, "hyena.state_size 2 for poles of 3", "blk.0.hyena_poles",
                     (const char *)NULL);
        modes->v.u = 3;
        fir->v.u = 9;
        expect_error(f, VKLLM_ERR_UNSUPPORTED, "hyena.short_filter_length 9", "short_filter_length",
                     (const char *)NULL);
        fir->v.u = 3;
        kv->v.u = 4;
        expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv 4 of 6 heads", "head_count_kv", "does not divide",
                     (const char *)NULL);
        kv->v.u = 2;
    }
    gguf_tensor *conv = find_tensor(f, "blk.2.hyena_conv.weight");
    gguf_tensor *qkv = find_tensor(f, "blk.1.attn_qkv.weight");
    gguf_tensor *in = find_tensor(f, "blk.2.hyena_in.weight");
    check(conv && qkv && in, "tensors blk.2.hyena_conv.weight, blk.1.attn_qkv.weight, blk.2.hyena_in.weight exist");
    if (conv && qkv && in) {
        uint32_t type = conv->type;
        conv->type = GGML_Q8_0;
        expect_error(f, VKLLM_ERR_UNSUPPORTED, "a Q8_0 FIR kernel", "blk.2.hyena_conv.weight", (const char *)NULL);
        conv->type = type;
        uint64_t rows = in->ne[1];
        in->ne[1] = 3 * 192 - 1;
        expect_error(f, VKLLM_ERR_BAD_FILE, "hyena_in one row short", "blk.2.hyena_in.weight", (const char *)NULL);
        in->ne[1] = rows;
        /* A block with neither mixer: layer 1's QKV renamed to a name that sorts in the same
         * place (the name index stays in order) but names nothing the builder asks for. */
        char *saved = qkv->name;
        char renamed[] = "blk.1.attn_qkv.weighz";
        qkv->name = renamed;
        expect_error(f, VKLLM_ERR_BAD_FILE, "block 1 with neither attn_qkv nor hyena_in", "block 1", "neither",
                     (const char *)NULL);
        qkv->name = saved;
    }
    s = g_build(f, 0, &g);
    check(s == VKLLM_OK, "builds again with the file's own metadata");
    if (!s)
        g_free(&g);
    gguf_close(f);
    return finish();
}
