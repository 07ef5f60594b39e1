/* The decoder-only transformer families, as one graph builder driven by a table: each row
 * says how a family normalises, where positions come from, what its MLP computes and how
 * its residual stream runs. Tensor and key names are the ones llama.cpp's converter writes,
 * so existing GGUF files load.
 *
 * Per layer (x = the residual stream):
 *   attn_in = norm(x)                     (Falcon-40B: attn_norm_2; MLP input stays attn_norm)
 *   q, k, v = W{q,k,v} attn_in (+ bias)   (fused attn_qkv: three row ranges of one matrix)
 *   [clamp q, k, v]  [rope q, k]  store k, v  a = attention(q)
 *   sequential: x += Wo a (+ b);  x += mlp(norm_ffn(x))
 *   parallel:   mlp_in = norm_ffn(x) or attn_in, taken before x changes;
 *               x += Wo a (+ b);  x += mlp(mlp_in)
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "graph.h"

typedef enum { NORM_RMS, NORM_LAYER } norm_kind;
typedef enum { POS_ROPE_ADJACENT, POS_ROPE_HALF, POS_ALIBI, POS_LEARNED } pos_kind;
typedef enum { MLP_SWIGLU, MLP_GELU, MLP_GELU_ERF, MLP_RELU } mlp_kind;

typedef struct arch_spec {
    const char *name; /* general.architecture */
    norm_kind norm;
    pos_kind pos;
    mlp_kind mlp;
    bool parallel;      /* parallel residual (gptneox: only when use_parallel_residual) */
    bool embed_norm;    /* BLOOM: LayerNorm right after the embedding */
    bool ff_doubled;    /* Qwen (v1): feed_forward_length is twice the MLP width, as its
                           config's intermediate_size (llama.cpp loads the FFN at n_ff / 2) */
} arch_spec;

/* GELU: transformers uses the exact (erf) form for Falcon, MPT and GPT-NeoX, the tanh
 * approximation for BLOOM and Phi-2 (llama.cpp uses tanh for all). */
static const arch_spec specs[] = {
    {"llama", NORM_RMS, POS_ROPE_ADJACENT, MLP_SWIGLU, false, false, false},
    {"deci", NORM_RMS, POS_ROPE_ADJACENT, MLP_SWIGLU, false, false, false},
    /* Qwen v1: fused attn_qkv with bias; the tensor shapes tie Q, K, V to the hidden width. */
    {"qwen", NORM_RMS, POS_ROPE_HALF, MLP_SWIGLU, false, false, true},
    {"qwen2", NORM_RMS, POS_ROPE_HALF, MLP_SWIGLU, false, false, false},
    {"stablelm", NORM_LAYER, POS_ROPE_HALF, MLP_SWIGLU, false, false, false},
    {"falcon", NORM_LAYER, POS_ROPE_HALF, MLP_GELU_ERF, true, false, false},
    {"gptneox", NORM_LAYER, POS_ROPE_HALF, MLP_GELU_ERF, true, false, false},
    {"phi2", NORM_LAYER, POS_ROPE_HALF, MLP_GELU, true, false, false},
    {"mpt", NORM_LAYER, POS_ALIBI, MLP_GELU_ERF, false, false, false},
    {"bloom", NORM_LAYER, POS_ALIBI, MLP_GELU, false, true, false},
    /* OPT/Galactica: vkllm's own name (llama.cpp has none; loaded from HF folders). */
    {"opt", NORM_LAYER, POS_LEARNED, MLP_RELU, false, false, false},
};

static const arch_spec *find_spec(const char *arch)
{
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++)
        if (!strcmp(specs[i].name, arch))
            return &specs[i];
    return NULL;
}

bool g_transformer_arch(const char *arch) { return find_spec(arch) != NULL; }

const char *g_supported_architectures(void)
{
    return "llama, deci, qwen, qwen2, stablelm, falcon, gptneox, phi2, mpt, bloom, opt, mamba, stripedhyena";
}

/* ---- metadata ---------------------------------------------------------------------- */

/* A per-layer count that is either one number or an array with a value per layer
 * (DeciLM's head_count, head_count_kv and feed_forward_length; llama.cpp reads these
 * three either way for every architecture). */
static vkllm_status key_per_layer(const gguf_file *f, const char *arch, const char *suffix, uint32_t n_layer,
                                  uint32_t *out, int required, uint32_t fallback)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    const gguf_kv *kv = gguf_find(f, key);
    if (kv && kv->type == GGUF_ARRAY) {
        const gguf_array *a = &kv->v.a;
        uint32_t t = a->elem_type;
        if (t == GGUF_FLOAT32 || t == GGUF_FLOAT64 || t == GGUF_BOOL || gguf_value_size(t) == 0)
            return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s is an array of %s, expected integers", key,
                           gguf_value_type_name(t));
        if (a->n != n_layer)
            return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s: an array of %llu numbers for %u layers "
                           "(block_count)", key, (unsigned long long)a->n, n_layer);
        for (uint32_t l = 0; l < n_layer; l++) {
            int64_t v = gguf_arr_i64(a, l);
            if (v < 0 || v > 0x7fffffff)
                return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s[%u] = %lld is out of range", key, l, (long long)v);
            out[l] = (uint32_t)v;
        }
        return VKLLM_OK;
    }
    uint32_t v;
    vkllm_status s = g_key_u32(f, arch, suffix, &v, required, fallback);
    for (uint32_t l = 0; !s && l < n_layer; l++)
        out[l] = v;
    return s;
}

static bool has_tensor(const gguf_file *f, const char *name) { return gguf_find_tensor(f, name) != NULL; }

/* ---- building ---------------------------------------------------------------------- */

typedef struct builder {
    g_graph *g;
    const gguf_file *f;
    const arch_spec *spec;
    int32_t last;
    /* From vkllm.* keys (hf_model.h): half-split RoPE for weights laid out as in HF; the
     * MLP activation where the config picks it. */
    bool rope_half;
    g_activation ffn_act;
} builder;

static vkllm_status add(builder *b, g_node node, int32_t *out)
{
    vkllm_status s = g_add(b->g, node, &b->last);
    if (!s && out)
        *out = b->last;
    return s;
}

/* "<prefix>.weight" must exist with `cols` entries (a vector); returns its name or NULL
 * when absent and optional. */
static vkllm_status vector(builder *b, const char *prefix, const char *what, uint32_t cols, int required,
                           const char **out)
{
    const char *name = g_strf(b->g, "%s.%s", prefix, what);
    if (!name)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    *out = NULL;
    const gguf_tensor *t = gguf_find_tensor(b->f, name);
    if (!t)
        return required ? vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s is missing", name) : VKLLM_OK;
    if (t->ne[0] != cols || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s has shape [%llu, %llu], expected [%u]", name,
                       (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], cols);
    *out = name;
    return VKLLM_OK;
}

/* norm(x) with "<prefix>.weight" and, for LayerNorm, an optional "<prefix>.bias". */
static vkllm_status norm(builder *b, int32_t x, const char *prefix, uint32_t width, int32_t *out)
{
    const char *w, *bias = NULL;
    vkllm_status s = vector(b, prefix, "weight", width, 1, &w);
    if (!s && b->spec->norm == NORM_LAYER)
        s = vector(b, prefix, "bias", width, 0, &bias);
    if (s)
        return s;
    g_node n = {.op = b->spec->norm == NORM_RMS ? G_RMSNORM : G_LAYERNORM, .in = {x, -1},
                .weight = {w, bias}, .width = width, .eps = b->g->hp.norm_eps, .label = w};
    return add(b, n, out);
}

/* out = W[row_begin, row_begin + rows) . x (+ bias range), optionally accumulated into acc. */
static vkllm_status matmul(builder *b, int32_t x, const char *prefix, uint32_t cols, uint32_t row_begin,
                           uint32_t rows, uint32_t total_rows, int32_t acc, int32_t *out)
{
    const char *w = g_strf(b->g, "%s.weight", prefix);
    const char *bias_name = g_strf(b->g, "%s.bias", prefix);
    if (!w || !bias_name)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    vkllm_status s = g_expect_tensor(b->f, w, cols, total_rows);
    if (s)
        return s;
    const char *bias;
    if ((s = vector(b, prefix, "bias", total_rows, 0, &bias)))
        return s;
    g_node n = {.op = G_MATMUL, .in = {x, acc}, .weight = {w, bias}, .width = rows,
                .rows = {row_begin, rows}, .accumulate = acc >= 0, .inplace = acc >= 0 ? 2 : 0, .label = w};
    return add(b, n, out);
}

/* A stack of experts: "<name>.weight" [cols, rows, n_expert] (ne order), product rows per
 * expert; the node reads the experts the router node picked. */
static vkllm_status experts(builder *b, int32_t in, int32_t route, const char *name, uint32_t cols,
                            uint32_t rows, bool weighted_sum, int32_t *out)
{
    const g_hparams *hp = &b->g->hp;
    const char *w = g_strf(b->g, "%s.weight", name);
    if (!w)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory");
    const gguf_tensor *t = gguf_find_tensor(b->f, w);
    if (!t)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s is missing", w);
    if (t->ne[0] != cols || t->ne[1] != rows || t->ne[2] != hp->n_expert || t->ne[3] != 1)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s has shape [%llu, %llu, %llu, %llu], expected [%u, %u, %u]",
                       w, (unsigned long long)t->ne[0], (unsigned long long)t->ne[1],
                       (unsigned long long)t->ne[2], (unsigned long long)t->ne[3], cols, rows, hp->n_expert);
    uint32_t K = hp->n_expert_used;
    g_node n = {.op = G_MOE_MATMUL, .in = {in, route}, .weight = {w}, .width = weighted_sum ? rows : K * rows,
                .moe = {hp->n_expert, K, false, 1.0f, weighted_sum}, .label = w};
    return add(b, n, out);
}

/* Mixtral's sparse MLP (llama.cpp's build_moe_ffn with softmax gating and renormalised
 * weights): the router ffn_gate_inp scores the experts, each token runs the SwiGLU MLPs of
 * its n_used best, stacked in ffn_{gate,up,down}_exps, and x += their weighted sum. */
static vkllm_status build_moe(builder *b, int32_t in, uint32_t l, uint32_t n_ff, int32_t x, int32_t *out)
{
    const g_hparams *hp = &b->g->hp;
    const uint32_t E = hp->n_embd, N = hp->n_expert, K = hp->n_expert_used;
    if (b->spec->mlp != MLP_SWIGLU)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "%s: experts are supported with SwiGLU MLPs only", hp->arch);
    if (K == 0 || K > N || K > G_MAX_EXPERTS_USED || N > G_MAX_EXPERTS)
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "%s: %u experts used of %u: need 1 <= expert_used_count <= min(expert_count, %d), "
                       "expert_count <= %d", hp->arch, K, N, G_MAX_EXPERTS_USED, G_MAX_EXPERTS);
    float scale;
    vkllm_status s = g_key_f32(b->f, hp->arch, "expert_weights_scale", &scale, 0.0f);
    if (s)
        return s;
    char name[64];
    int32_t logits = -1, route = -1, gate = -1, up = -1, act = -1, down = -1;
    snprintf(name, sizeof name, "blk.%u.ffn_gate_inp", l);
    if ((s = matmul(b, in, name, E, 0, N, N, -1, &logits)) ||
        (s = add(b, (g_node){.op = G_MOE_ROUTER, .in = {logits, -1}, .width = 2 * K,
                             .moe = {N, K, true, scale != 0.0f ? scale : 1.0f, false}, .label = "moe_router"},
                 &route)))
        return s;
    snprintf(name, sizeof name, "blk.%u.ffn_gate_exps", l);
    if ((s = experts(b, in, route, name, E, n_ff, false, &gate)))
        return s;
    snprintf(name, sizeof name, "blk.%u.ffn_up_exps", l);
    if ((s = experts(b, in, route, name, E, n_ff, false, &up)) ||
        (s = add(b, (g_node){.op = G_SWIGLU, .in = {gate, up}, .width = K * n_ff, .label = "swiglu"}, &act)))
        return s;
    snprintf(name, sizeof name, "blk.%u.ffn_down_exps", l);
    if ((s = experts(b, act, route, name, n_ff, E, true, &down)))
        return s;
    return add(b, (g_node){.op = G_ADD, .in = {x, down}, .width = E, .inplace = 1, .label = "moe_add"}, out);
}

static vkllm_status build_mlp(builder *b, int32_t in, uint32_t l, uint32_t n_ff, int32_t x, int32_t *out)
{
    const g_hparams *hp = &b->g->hp;
    char prefix[64];
    int32_t up = -1, act = -1;
    vkllm_status s;
    if (hp->n_expert)
        return build_moe(b, in, l, n_ff, x, out);
    snprintf(prefix, sizeof prefix, "blk.%u.ffn_up", l);
    if ((s = matmul(b, in, prefix, hp->n_embd, 0, n_ff, n_ff, -1, &up)))
        return s;
    if (b->spec->mlp == MLP_SWIGLU) {
        int32_t gate = -1;
        snprintf(prefix, sizeof prefix, "blk.%u.ffn_gate", l);
        if ((s = matmul(b, in, prefix, hp->n_embd, 0, n_ff, n_ff, -1, &gate)) ||
            (s = add(b, (g_node){.op = G_SWIGLU, .in = {gate, up}, .width = n_ff, .label = "swiglu"}, &act)))
            return s;
    } else {
        g_node n = {.op = G_ACTIVATION, .in = {up, -1}, .width = n_ff, .inplace = 1,
                    .activation = b->ffn_act, .label = b->ffn_act == G_ACT_RELU ? "relu" : "gelu"};
        if ((s = add(b, n, &act)))
            return s;
    }
    snprintf(prefix, sizeof prefix, "blk.%u.ffn_down", l);
    return matmul(b, act, prefix, n_ff, 0, hp->n_embd, hp->n_embd, x, out);
}

static vkllm_status build_layer(builder *b, uint32_t l, uint32_t n_head_kv, uint32_t n_ff, int32_t *x)
{
    const g_hparams *hp = &b->g->hp;
    const uint32_t E = hp->n_embd, D = hp->head_dim, Q = hp->n_head * D, KV = n_head_kv * D;
    char prefix[64], prefix2[64];
    vkllm_status s;
    int32_t attn_in = -1, mlp_in = -1, q = -1, k = -1, v = -1;

    snprintf(prefix, sizeof prefix, "blk.%u.attn_norm", l);
    if ((s = norm(b, *x, prefix, E, &attn_in)))
        return s;
    snprintf(prefix2, sizeof prefix2, "blk.%u.attn_norm_2.weight", l);
    if (has_tensor(b->f, prefix2)) { /* Falcon-40B: attention reads attn_norm_2, the MLP attn_norm */
        mlp_in = attn_in;
        snprintf(prefix2, sizeof prefix2, "blk.%u.attn_norm_2", l);
        if ((s = norm(b, *x, prefix2, E, &attn_in)))
            return s;
    }
    snprintf(prefix2, sizeof prefix2, "blk.%u.ffn_norm.weight", l);
    bool has_ffn_norm = has_tensor(b->f, prefix2);
    bool parallel = b->spec->parallel || !has_ffn_norm;
    if (!strcmp(b->spec->name, "gptneox")) {
        char key[64];
        snprintf(key, sizeof key, "gptneox.use_parallel_residual");
        uint64_t par = 1;
        gguf_get_u64(b->f, key, &par);
        parallel = par != 0;
    }
    if (parallel && mlp_in < 0) {
        if (has_ffn_norm) { /* GPT-NeoX: the MLP has its own norm of the same input */
            snprintf(prefix2, sizeof prefix2, "blk.%u.ffn_norm", l);
            if ((s = norm(b, *x, prefix2, E, &mlp_in)))
                return s;
        } else {
            mlp_in = attn_in;
        }
    }

    /* Q, K, V: separate matrices, or row ranges of the fused one. */
    snprintf(prefix, sizeof prefix, "blk.%u.attn_qkv.weight", l);
    if (has_tensor(b->f, prefix)) {
        snprintf(prefix, sizeof prefix, "blk.%u.attn_qkv", l);
        if ((s = matmul(b, attn_in, prefix, E, 0, Q, Q + 2 * KV, -1, &q)) ||
            (s = matmul(b, attn_in, prefix, E, Q, KV, Q + 2 * KV, -1, &k)) ||
            (s = matmul(b, attn_in, prefix, E, Q + KV, KV, Q + 2 * KV, -1, &v)))
            return s;
    } else {
        snprintf(prefix, sizeof prefix, "blk.%u.attn_q", l);
        if ((s = matmul(b, attn_in, prefix, E, 0, Q, Q, -1, &q)))
            return s;
        snprintf(prefix, sizeof prefix, "blk.%u.attn_k", l);
        if ((s = matmul(b, attn_in, prefix, E, 0, KV, KV, -1, &k)))
            return s;
        snprintf(prefix, sizeof prefix, "blk.%u.attn_v", l);
        if ((s = matmul(b, attn_in, prefix, E, 0, KV, KV, -1, &v)))
            return s;
    }
    if (hp->clamp_kqv > 0) {
        int32_t *t[] = {&q, &k, &v};
        uint32_t w[] = {Q, KV, KV};
        for (int i = 0; i < 3; i++)
            if ((s = add(b, (g_node){.op = G_ACTIVATION, .in = {*t[i], -1}, .width = w[i], .inplace = 1,
                                     .activation = G_ACT_CLAMP, .eps = hp->clamp_kqv, .label = "clamp_kqv"},
                         t[i])))
                return s;
    }
    if (b->spec->pos == POS_ROPE_ADJACENT || b->spec->pos == POS_ROPE_HALF) {
        uint32_t mode = b->spec->pos == POS_ROPE_HALF || b->rope_half;
        if ((s = add(b, (g_node){.op = G_ROPE, .in = {q, -1}, .width = Q, .inplace = 1,
                                 .rope = {hp->n_head, D, hp->n_rot, mode, hp->rope_freq_base,
                                          hp->rope_freq_scale},
                                 .label = "rope_q"},
                     &q)) ||
            (s = add(b, (g_node){.op = G_ROPE, .in = {k, -1}, .width = KV, .inplace = 1,
                                 .rope = {n_head_kv, D, hp->n_rot, mode, hp->rope_freq_base,
                                          hp->rope_freq_scale},
                                 .label = "rope_k"},
                     &k)))
            return s;
    }
    int32_t store = -1, a = -1;
    if ((s = add(b, (g_node){.op = G_KV_STORE, .in = {k, v}, .width = KV, .layer = l, .label = "kv_store"},
                 &store)) ||
        (s = add(b, (g_node){.op = G_ATTENTION, .in = {q, store}, .width = Q, .layer = l,
                             .attn = {hp->n_head, n_head_kv, D, 1.0f / sqrtf((float)D), hp->n_swa,
                                      b->spec->pos == POS_ALIBI ? hp->alibi_max_bias : 0.0f},
                             .label = "attention"},
                 &a)))
        return s;
    snprintf(prefix, sizeof prefix, "blk.%u.attn_output", l);
    if ((s = matmul(b, a, prefix, Q, 0, E, E, *x, x)))
        return s;
    if (!parallel) {
        snprintf(prefix2, sizeof prefix2, "blk.%u.ffn_norm", l);
        if ((s = norm(b, *x, prefix2, E, &mlp_in)))
            return s;
    }
    return build_mlp(b, mlp_in, l, n_ff, *x, x);
}

static vkllm_status read_hparams(const gguf_file *f, const arch_spec *spec, g_hparams *hp)
{
    const char *a = spec->name;
    vkllm_status s;
    snprintf(hp->arch, sizeof hp->arch, "%s", a);
    float rms_eps, ln_eps;
    if ((s = g_key_u32(f, a, "embedding_length", &hp->n_embd, 1, 0)) ||
        (s = g_key_u32(f, a, "block_count", &hp->n_layer, 1, 0)) ||
        (s = g_key_u32(f, a, "context_length", &hp->n_ctx_train, 0, 2048)) ||
        (s = g_key_f32(f, a, "attention.layer_norm_rms_epsilon", &rms_eps, 1e-5f)) ||
        (s = g_key_f32(f, a, "attention.layer_norm_epsilon", &ln_eps, 1e-5f)) ||
        (s = g_key_f32(f, a, "rope.freq_base", &hp->rope_freq_base, 10000.0f)) ||
        (s = g_key_u32(f, a, "attention.sliding_window", &hp->n_swa, 0, 0)) ||
        (s = g_key_f32(f, a, "attention.clamp_kqv", &hp->clamp_kqv, 0.0f)) ||
        (s = g_key_f32(f, a, "attention.max_alibi_bias", &hp->alibi_max_bias, 8.0f)))
        return s;
    hp->norm_eps = spec->norm == NORM_RMS ? rms_eps : ln_eps;
    if (hp->n_embd == 0 || hp->n_layer == 0 || hp->n_layer > G_MAX_LAYERS)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: embedding_length %u, block_count %u (at most %u): "
                       "neither may be zero", a, hp->n_embd, hp->n_layer, G_MAX_LAYERS);
    /* head_count may be per layer too (Nemotron-51B, arch deci): all layers must have the
     * same, non-zero count (0 marks an attention-free layer, which vkllm does not build). */
    uint32_t heads[G_MAX_LAYERS];
    if ((s = key_per_layer(f, a, "attention.head_count", hp->n_layer, heads, 1, 0)))
        return s;
    hp->n_head = 0;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        hp->n_head |= heads[l];
    if (hp->n_head == 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s.attention.head_count is 0", a);
    hp->n_head = heads[0];
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        if (heads[l] == 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "metadata %s.attention.head_count: layer %u has 0 heads "
                           "(an attention-free layer), which is not supported", a, l);
        if (heads[l] != hp->n_head)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "metadata %s.attention.head_count: layer %u has %u heads, "
                           "layer 0 %u; a head count per layer is not supported", a, l, heads[l], hp->n_head);
    }
    if ((s = key_per_layer(f, a, "attention.head_count_kv", hp->n_layer, hp->n_head_kv_layer, 0, hp->n_head)) ||
        (s = key_per_layer(f, a, "feed_forward_length", hp->n_layer, hp->n_ff_layer, 1, 0)))
        return s;
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        uint32_t kv = hp->n_head_kv_layer[l];
        /* llama.cpp (arch deci) runs a layer with 0 KV heads as "linear attention" (output
         * projection of the normed input, Nemotron-51B) and one with feed_forward_length 0
         * without its MLP (Nemotron-Ultra's no-op layers); vkllm builds neither. */
        if (kv == 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "metadata %s.attention.head_count_kv: layer %u has 0 KV "
                           "heads (a linear-attention layer), which is not supported", a, l);
        if (hp->n_head % kv)
            return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s.attention.head_count_kv: layer %u has %u KV heads, "
                           "which does not divide head_count %u", a, l, kv, hp->n_head);
        if (hp->n_ff_layer[l] == 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "metadata %s.feed_forward_length: layer %u has 0 (a layer "
                           "without MLP), which is not supported", a, l);
        if (spec->ff_doubled) {
            if (hp->n_ff_layer[l] % 2)
                return vk_fail(VKLLM_ERR_BAD_FILE, "metadata %s.feed_forward_length = %u is odd: %s stores "
                               "twice the MLP width", a, hp->n_ff_layer[l], a);
            hp->n_ff_layer[l] /= 2;
        }
    }
    hp->n_head_kv = hp->n_head_kv_layer[0];
    hp->n_ff = hp->n_ff_layer[0];
    uint32_t key_length;
    if ((s = g_key_u32(f, a, "attention.key_length", &key_length, 0, 0)))
        return s;
    if (key_length == 0 && hp->n_embd % hp->n_head)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: embedding_length %u is not a multiple of head_count %u", a,
                       hp->n_embd, hp->n_head);
    hp->head_dim = key_length ? key_length : hp->n_embd / hp->n_head;
    if ((s = g_key_u32(f, a, "rope.dimension_count", &hp->n_rot, 0, hp->head_dim)))
        return s;
    if (hp->n_rot > hp->head_dim || hp->n_rot % 2)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: rope.dimension_count %u does not fit head size %u", a,
                       hp->n_rot, hp->head_dim);

    /* Linear RoPE scaling: positions are divided by the factor. */
    hp->rope_freq_scale = 1.0f;
    float factor;
    if ((s = g_key_f32(f, a, "rope.scaling.factor", &factor, 0.0f)))
        return s;
    char key[96];
    snprintf(key, sizeof key, "%s.rope.scaling.type", a);
    gguf_str type;
    s = gguf_get_str(f, key, &type);
    if (s == VKLLM_OK) {
        if (type.len == 6 && !memcmp(type.data, "linear", 6)) {
            if (factor > 0)
                hp->rope_freq_scale = 1.0f / factor;
        } else if (!(type.len == 4 && !memcmp(type.data, "none", 4))) {
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "%s: rope scaling type '%.*s' is not supported", a,
                           (int)(type.len > 32 ? 32 : type.len), type.data);
        }
    } else if (s != VKLLM_ERR_NOT_FOUND) {
        return s;
    } else {
        float linear;
        if ((s = g_key_f32(f, a, "rope.scale_linear", &linear, 0.0f)))
            return s;
        if (linear > 0)
            hp->rope_freq_scale = 1.0f / linear;
    }
    if ((s = g_key_u32(f, a, "expert_count", &hp->n_expert, 0, 0)) ||
        (s = g_key_u32(f, a, "expert_used_count", &hp->n_expert_used, 0, 0)))
        return s;

    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    if (!embd)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor token_embd.weight is missing");
    if (embd->ne[1] == 0 || embd->ne[1] > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "token_embd.weight has %llu rows", (unsigned long long)embd->ne[1]);
    hp->n_vocab = (uint32_t)embd->ne[1];
    return VKLLM_OK;
}

/* vkllm.rope.half and vkllm.ffn_activation (hf_model.h), over the family's defaults. */
static vkllm_status read_builder_options(builder *b)
{
    uint64_t half = 0;
    vkllm_status s = gguf_get_u64(b->f, "vkllm.rope.half", &half);
    if (s && s != VKLLM_ERR_NOT_FOUND)
        return s;
    b->rope_half = half != 0;
    b->ffn_act = b->spec->mlp == MLP_GELU_ERF ? G_ACT_GELU_ERF : b->spec->mlp == MLP_RELU ? G_ACT_RELU : G_ACT_GELU;
    gguf_str act;
    s = gguf_get_str(b->f, "vkllm.ffn_activation", &act);
    if (s == VKLLM_ERR_NOT_FOUND)
        return VKLLM_OK;
    if (s)
        return s;
    if (act.len == 4 && !memcmp(act.data, "relu", 4))
        b->ffn_act = G_ACT_RELU;
    else if (act.len == 4 && !memcmp(act.data, "gelu", 4))
        b->ffn_act = G_ACT_GELU;
    else if (act.len == 8 && !memcmp(act.data, "gelu_erf", 8))
        b->ffn_act = G_ACT_GELU_ERF;
    else
        return vk_fail(VKLLM_ERR_BAD_FILE, "metadata vkllm.ffn_activation = '%.*s' is not relu, gelu or gelu_erf",
                       (int)(act.len > 32 ? 32 : act.len), act.data);
    return VKLLM_OK;
}

/* OPT: x += position_embd[n_past + t + 2]. The table's first two rows belong to no
 * position (fairseq's padding offset), so a context holds rows - 2 positions. */
static vkllm_status add_learned_positions(builder *b, int32_t *x)
{
    const uint32_t offset = 2, E = b->g->hp.n_embd;
    const char *name = "position_embd.weight";
    vkllm_status s = g_expect_tensor(b->f, name, E, 0);
    if (s)
        return s;
    uint64_t rows = gguf_find_tensor(b->f, name)->ne[1];
    if (rows <= offset || rows - offset > 0x7fffffff)
        return vk_fail(VKLLM_ERR_BAD_FILE, "tensor %s has %llu rows; positions start at row %u", name,
                       (unsigned long long)rows, offset);
    b->g->hp.n_pos = (uint32_t)(rows - offset);
    int32_t pos = -1;
    if ((s = add(b, (g_node){.op = G_POS_EMBED, .in = {-1, -1}, .weight = {name}, .width = E, .pos_offset = offset,
                             .label = "position_embd"},
                 &pos)))
        return s;
    return add(b, (g_node){.op = G_ADD, .in = {*x, pos}, .width = E, .inplace = 1, .label = "add_positions"}, x);
}

vkllm_status g_build_transformer(const gguf_file *f, const char *arch, int last_row_only, g_graph *g)
{
    const arch_spec *spec = find_spec(arch);
    if (!spec)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "architecture '%s' is not supported", arch);
    g_hparams *hp = &g->hp;
    vkllm_status s = read_hparams(f, spec, hp);
    if (s)
        return s;
    builder b = {g, f, spec, -1, false, G_ACT_GELU};
    if ((s = read_builder_options(&b)))
        return s;
    const uint32_t E = hp->n_embd;
    const char *output = has_tensor(f, "output.weight") ? "output" : "token_embd";
    if ((s = g_expect_tensor(f, "token_embd.weight", E, hp->n_vocab)))
        return s;

    int32_t x = -1;
    if ((s = add(&b, (g_node){.op = G_EMBED, .in = {-1, -1}, .weight = {"token_embd.weight"}, .width = E,
                              .label = "token_embd"},
                 &x)))
        return s;
    if (spec->embed_norm && (s = norm(&b, x, "token_embd_norm", E, &x)))
        return s;
    if (spec->pos == POS_LEARNED && (s = add_learned_positions(&b, &x)))
        return s;
    for (uint32_t l = 0; l < hp->n_layer; l++)
        if ((s = build_layer(&b, l, hp->n_head_kv_layer[l], hp->n_ff_layer[l], &x)))
            return s;
    if (last_row_only && (s = add(&b, (g_node){.op = G_LAST_ROW, .in = {x, -1}, .width = E, .label = "last_row"}, &x)))
        return s;
    int32_t h = -1, logits = -1;
    if ((s = norm(&b, x, "output_norm", E, &h)) ||
        (s = matmul(&b, h, output, E, 0, hp->n_vocab, hp->n_vocab, -1, &logits)) ||
        (s = add(&b, (g_node){.op = G_OUTPUT, .in = {logits, -1}, .width = hp->n_vocab, .label = "logits"}, NULL)))
        return s;
    g->logits_node = logits;
    return VKLLM_OK;
}
