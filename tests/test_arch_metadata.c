/* The metadata the qwen and deci graphs are built from (lib/arch_transformer.c), on the
 * conformance models of tests/conformance/make_llamacpp_fixtures.py: the graph uses the
 * per-layer KV heads and FFN widths, Qwen's halved feed_forward_length, and bad values give
 * an error that names the key and the layer. Bad files are made by editing the parsed
 * metadata of the committed models in memory.
 *
 * usage: test_arch_metadata QWEN.gguf DECI.gguf   (exit 77 when a file is absent) */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "arch_test.h"

static gguf_kv *find_kv(gguf_file *f, const char *key) { return (gguf_kv *)gguf_find(f, key); }

/* The KV_STORE node of each layer: its width is that layer's KV heads x head dim. */
static uint32_t kv_store_width(const g_graph *g, uint32_t layer)
{
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == G_KV_STORE && g->nodes[i].layer == layer)
            return g->nodes[i].width;
    return 0;
}

/* The output width of the first MATMUL on "blk.<layer>.<name>.weight". */
static uint32_t matmul_width(const g_graph *g, uint32_t layer, const char *name)
{
    char w[64];
    snprintf(w, sizeof w, "blk.%u.%s.weight", layer, name);
    for (uint32_t i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == G_MATMUL && g->nodes[i].weight[0] && !strcmp(g->nodes[i].weight[0], w))
            return g->nodes[i].width;
    return 0;
}

static void test_qwen(const char *path)
{
    gguf_file *f;
    if (gguf_open(path, &f)) {
        check(0, "open %s: %s", path, vk_error_message());
        return;
    }
    g_graph g;
    vkllm_status s = g_build(f, 0, &g);
    check(s == VKLLM_OK, "qwen graph builds: %s", s ? vk_error_message() : "ok");
    if (!s) {
        /* feed_forward_length 128 in the file, the MLP 64 wide; Q, K, V 160 = 2 heads x 80 */
        check(g.hp.n_ff == 64 && matmul_width(&g, 2, "ffn_gate") == 64 && matmul_width(&g, 2, "ffn_up") == 64,
              "qwen: MLP width %u (gate %u, up %u) = feed_forward_length / 2 = 64", g.hp.n_ff,
              matmul_width(&g, 2, "ffn_gate"), matmul_width(&g, 2, "ffn_up"));
        check(g.hp.n_head == 2 && g.hp.n_head_kv == 2 && g.hp.head_dim == 80 && kv_store_width(&g, 0) == 160,
              "qwen: heads %u, KV heads %u, head dim %u, K/V width %u", g.hp.n_head, g.hp.n_head_kv,
              g.hp.head_dim, kv_store_width(&g, 0));
        g_free(&g);
    }
    gguf_kv *ff = find_kv(f, "qwen.feed_forward_length");
    check(ff && ff->type == GGUF_UINT32 && ff->v.u == 128, "qwen.feed_forward_length is uint32 128");
    if (ff) {
        uint64_t saved = ff->v.u;
        ff->v.u = 129;
        expect_error(f, VKLLM_ERR_BAD_FILE, "qwen.feed_forward_length = 129 (odd)", "qwen.feed_forward_length",
                     "odd", (const char *)NULL);
        ff->v.u = 192; /* 96 wide: the stored FFN tensors are 64 */
        expect_error(f, VKLLM_ERR_BAD_FILE, "qwen.feed_forward_length = 192", "blk.0.ffn_up.weight",
                     (const char *)NULL);
        ff->v.u = saved;
    }
    gguf_close(f);
}

static void test_deci(const char *path)
{
    gguf_file *f;
    if (gguf_open(path, &f)) {
        check(0, "open %s: %s", path, vk_error_message());
        return;
    }
    g_graph g;
    vkllm_status s = g_build(f, 0, &g);
    check(s == VKLLM_OK, "deci graph builds: %s", s ? vk_error_message() : "ok");
    if (!s) {
        static const uint32_t kv[3] = {1, 4, 2}, ff[3] = {96, 160, 128};
        for (uint32_t l = 0; l < 3; l++)
            check(g.hp.n_head_kv_layer[l] == kv[l] && kv_store_width(&g, l) == kv[l] * 80 &&
                      matmul_width(&g, l, "attn_k") == kv[l] * 80 && matmul_width(&g, l, "ffn_up") == ff[l],
                  "deci layer %u: %u KV heads (K/V width %u), FFN width %u", l, g.hp.n_head_kv_layer[l],
                  kv_store_width(&g, l), matmul_width(&g, l, "ffn_up"));
        g_free(&g);
    }

    gguf_kv *hkv = find_kv(f, "deci.attention.head_count_kv");
    gguf_kv *ffl = find_kv(f, "deci.feed_forward_length");
    gguf_kv *hc = find_kv(f, "deci.attention.head_count");
    int shape_ok = hkv && hkv->type == GGUF_ARRAY && hkv->v.a.elem_type == GGUF_INT32 && hkv->v.a.n == 3 && ffl &&
                   ffl->type == GGUF_ARRAY && ffl->v.a.elem_type == GGUF_INT32 && ffl->v.a.n == 3 && hc &&
                   hc->type == GGUF_UINT32;
    check(shape_ok, "deci: head_count_kv and feed_forward_length are int32 arrays of 3, head_count uint32");
    if (!shape_ok) {
        gguf_close(f);
        return;
    }
    const gguf_array saved = hkv->v.a;
    const char *key = "deci.attention.head_count_kv";

    hkv->v.a.n = 2; /* the first two entries of the file's array */
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv array of 2 for 3 layers", key, "3 layers",
                 (const char *)NULL);
    int32_t four[4] = {1, 4, 2, 2};
    hkv->v.a.n = 4;
    hkv->v.a.data = (const uint8_t *)four;
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv array of 4 for 3 layers", key, "3 layers",
                 (const char *)NULL);

    int32_t bad[3] = {1, 3, 2}; /* 3 does not divide 4 query heads */
    hkv->v.a.n = 3;
    hkv->v.a.data = (const uint8_t *)bad;
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv [1, 3, 2] with 4 heads", key, "layer 1", "does not divide",
                 (const char *)NULL);
    bad[1] = 8; /* more KV heads than query heads */
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv [1, 8, 2] with 4 heads", key, "layer 1", "does not divide",
                 (const char *)NULL);
    bad[1] = 0; /* llama.cpp: Nemotron-51B's linear attention */
    expect_error(f, VKLLM_ERR_UNSUPPORTED, "head_count_kv [1, 0, 2]", key, "layer 1", (const char *)NULL);
    bad[1] = -2;
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv [1, -2, 2]", key, (const char *)NULL);
    float fl[3] = {1.0f, 4.0f, 2.0f};
    hkv->v.a.elem_type = GGUF_FLOAT32;
    hkv->v.a.data = (const uint8_t *)fl;
    expect_error(f, VKLLM_ERR_BAD_FILE, "head_count_kv as float32 array", key, "float32", (const char *)NULL);
    hkv->v.a = saved;

    /* feed_forward_length with a 0 (llama.cpp: a layer without MLP) */
    const gguf_array saved_ff = ffl->v.a;
    int32_t ff0[3] = {96, 0, 128};
    ffl->v.a.data = (const uint8_t *)ff0;
    expect_error(f, VKLLM_ERR_UNSUPPORTED, "feed_forward_length [96, 0, 128]", "deci.feed_forward_length",
                 "layer 1", (const char *)NULL);
    ffl->v.a = saved_ff;

    /* head_count per layer (Nemotron-51B writes an array): equal counts build, a 0 (an
     * attention-free layer) or differing counts are refused naming the key. */
    const gguf_kv saved_hc = *hc;
    int32_t heads[3] = {4, 4, 4};
    hc->type = GGUF_ARRAY;
    hc->v.a = (gguf_array){.elem_type = GGUF_INT32, .n = 3, .data = (const uint8_t *)heads};
    s = g_build(f, 0, &g);
    check(s == VKLLM_OK && g.hp.n_head == 4, "head_count [4, 4, 4] builds: %s", s ? vk_error_message() : "ok");
    if (!s)
        g_free(&g);
    heads[2] = 0;
    expect_error(f, VKLLM_ERR_UNSUPPORTED, "head_count [4, 4, 0]", "deci.attention.head_count", "layer 2",
                 (const char *)NULL);
    heads[2] = 2;
    expect_error(f, VKLLM_ERR_UNSUPPORTED, "head_count [4, 4, 2]", "deci.attention.head_count", "layer 2",
                 (const char *)NULL);
    *hc = saved_hc;

    s = g_build(f, 0, &g);
    check(s == VKLLM_OK, "deci builds again with the file's own metadata");
    if (!s)
        g_free(&g);
    gguf_close(f);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s QWEN.gguf DECI.gguf\n", argv[0]);
        return 1;
    }
    if (access(argv[1], R_OK) || access(argv[2], R_OK)) {
        printf("SKIP: %s or %s is absent\n", argv[1], argv[2]);
        return 77;
    }
    test_qwen(argv[1]);
    test_deci(argv[2]);
    return finish();
}
