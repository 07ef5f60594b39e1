#include "graph.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "quant.h"

int32_t g_add_node(g_graph *g, const g_node *node)
{
    if (g->n_nodes == g->cap_nodes) {
        uint32_t cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        g_node *grown = realloc(g->nodes, cap * sizeof *grown);
        if (!grown)
            return -1;
        g->nodes = grown;
        g->cap_nodes = cap;
    }
    g->nodes[g->n_nodes] = *node;
    return (int32_t)g->n_nodes++;
}

const char *g_strf(g_graph *g, const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (g->n_strings == g->cap_strings) {
        uint32_t cap = g->cap_strings ? g->cap_strings * 2 : 64;
        char **grown = realloc(g->strings, cap * sizeof *grown);
        if (!grown)
            return NULL;
        g->strings = grown;
        g->cap_strings = cap;
    }
    char *s = strdup(buf);
    if (s)
        g->strings[g->n_strings++] = s;
    return s;
}

void g_free(g_graph *g)
{
    for (uint32_t i = 0; i < g->n_strings; i++)
        free(g->strings[i]);
    free(g->strings);
    free(g->nodes);
    memset(g, 0, sizeof *g);
}

vkllm_status g_key_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t *out,
                            int required, uint32_t fallback)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
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
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s = %llu is out of range", key, (unsigned long long)v);
    *out = (uint32_t)v;
    return VKLLM_OK;
}

vkllm_status g_key_f32(const gguf_file *f, const char *arch, const char *suffix, float *out,
                            float fallback)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
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

vkllm_status g_expect_tensor(const gguf_file *f, const char *name, uint64_t cols, uint64_t rows)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s is missing", name);
    uint64_t want_rows = rows ? rows : t->ne[1];
    if (t->ne[0] != cols || t->ne[1] != want_rows || t->ne[2] != 1 || t->ne[3] != 1)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tensor %s has shape [%llu, %llu, %llu, %llu], expected [%llu, %llu]", name,
                       (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (unsigned long long)t->ne[2], (unsigned long long)t->ne[3],
                       (unsigned long long)cols, (unsigned long long)want_rows);
    return VKLLM_OK;
}

vkllm_status g_expect_vector(const gguf_file *f, const char *name, uint32_t n)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s is missing", name);
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s has shape [%llu, %llu], expected [%u]", name,
                       (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], n);
    return VKLLM_OK;
}

vkllm_status g_expect_array(const gguf_file *f, const char *name, uint32_t cols, uint32_t rows)
{
    vkllm_status s = g_expect_tensor(f, name, cols, rows);
    if (s)
        return s;
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (t->type != GGML_F32 && t->type != GGML_F16)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "tensor %s has type %u; only F32 and F16 are supported here",
                       name, t->type);
    return VKLLM_OK;
}

vkllm_status g_add(g_graph *g, g_node node, int32_t *out)
{
    int32_t id = g_add_node(g, &node);
    if (id < 0)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory building the graph");
    if (out)
        *out = id;
    return VKLLM_OK;
}

vkllm_status g_add_layer_matmul(g_graph *g, const gguf_file *f, int32_t x, const char *what, uint32_t l,
                                uint32_t cols, uint32_t row_begin, uint32_t rows, uint32_t total_rows,
                                int32_t acc, int32_t *out)
{
    char name[64];
    snprintf(name, sizeof name, "blk.%u.%s", l, what);
    const char *w = g_strf(g, "%s.weight", name), *bias = g_strf(g, "%s.bias", name);
    if (!w || !bias)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s = g_expect_tensor(f, w, cols, total_rows);
    if (s)
        return s;
    if (!gguf_find_tensor(f, bias))
        bias = NULL;
    else if ((s = g_expect_vector(f, bias, total_rows)))
        return s;
    g_node n = {.op = G_MATMUL, .in = {x, acc}, .weight = {w, bias}, .width = rows,
                .rows = {row_begin, rows}, .accumulate = acc >= 0, .inplace = acc >= 0 ? 2 : 0, .label = w};
    return g_add(g, n, out);
}

vkllm_status g_layer_name(g_graph *g, const char **out, const char *fmt, uint32_t l)
{
    *out = g_strf(g, fmt, l);
    return *out ? VKLLM_OK : vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
}

vkllm_status g_add_output_head(g_graph *g, int32_t x, int last_row_only, g_op norm_op, const char *output)
{
    const g_hparams *hp = &g->hp;
    int32_t h = -1, logits = -1;
    vkllm_status s = VKLLM_OK;
    if ((last_row_only &&
         (s = g_add(g, (g_node){.op = G_LAST_ROW, .in = {x, -1}, .width = hp->n_embd, .label = "last_row"}, &x))) ||
        (s = g_add(g, (g_node){.op = norm_op, .in = {x, -1}, .weight = {"output_norm.weight"}, .width = hp->n_embd,
                               .eps = hp->norm_eps, .label = "output_norm.weight"},
                   &h)) ||
        (s = g_add(g, (g_node){.op = G_MATMUL, .in = {h, -1}, .weight = {output}, .width = hp->n_vocab,
                               .label = output},
                   &logits)) ||
        (s = g_add(g, (g_node){.op = G_OUTPUT, .in = {logits, -1}, .width = hp->n_vocab, .label = "logits"}, NULL)))
        return s;
    g->logits_node = logits;
    return VKLLM_OK;
}

vkllm_status g_build(const gguf_file *f, int last_row_only, g_graph *out)
{
    memset(out, 0, sizeof *out);
    out->logits_node = -1;
    gguf_str arch;
    vkllm_status s = gguf_get_str(f, "general.architecture", &arch);
    if (s)
        return s == VKLLM_ERR_NOT_FOUND
                   ? vk_fail(VKLLM_ERR_BAD_FILE, "general.architecture is missing")
                   : s;
    char name[32];
    if (arch.len >= sizeof name)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "architecture '%.*s...' is not supported; supported: %s", 24,
                       arch.data, g_supported_architectures());
    memcpy(name, arch.data, arch.len);
    name[arch.len] = '\0';
    if (!strcmp(name, "mamba") || !strcmp(name, "stripedhyena")) {
        s = !strcmp(name, "mamba") ? g_build_mamba(f, last_row_only, out) : g_build_hyena(f, last_row_only, out);
        if (s)
            g_free(out);
        return s;
    }
    if (!g_transformer_arch(name))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "architecture '%s' is not supported (yet); supported: %s", name,
                       g_supported_architectures());
    s = g_build_transformer(f, name, last_row_only, out);
    if (s)
        g_free(out);
    return s;
}
