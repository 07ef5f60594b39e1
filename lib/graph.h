/* The decoder as a graph of ops, built per architecture from GGUF metadata. No Vulkan here:
 * nodes name their weights by GGUF tensor name and their activations by node index; the
 * dispatcher (plugins/) turns the graph into buffers and command buffers.
 *
 * Every activation is f32 [n_tokens][width]; n_tokens is chosen when the graph is recorded,
 * so one graph serves decode (1 token) and prompt batches alike. */
#ifndef VKLLM_GRAPH_H
#define VKLLM_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

typedef enum g_op {
    G_EMBED,     /* out = rows of weight[0] picked by the batch's token ids */
    G_RMSNORM,   /* out = rmsnorm(in[0]) * weight[0] */
    G_LAYERNORM, /* out = layernorm(in[0]) * weight[0] + weight[1] (optional) */
    G_MATMUL,    /* out = weight[0] . in[0] (+ bias weight[1]); with `accumulate`, added into in[1] */
    G_ADD,       /* out = in[0] + in[1] */
    G_SWIGLU,    /* out = silu(in[0]) * in[1] */
    G_ROPE,      /* in place on in[0] */
    G_ACTIVATION,/* out = activation(in[0]) (gelu, gelu_erf, relu, silu, clamp to +-eps) */
    G_KV_STORE,  /* writes in[0] (K) and in[1] (V) into the layer's cache; no output */
    G_ATTENTION, /* out = attention(in[0] = Q, layer cache); depends on in[1] (the store) */
    G_LAST_ROW,  /* out = the last token's row of in[0] (width unchanged, 1 token) */
    G_OUTPUT,    /* marks in[0] as the logits */
    /* Mamba (arch_mamba.c); `layer` picks the layer's recurrent state. */
    G_SSM_CONV,  /* out = silu(causal depthwise conv1d of in[0] with the layer's conv state,
                    kernel weight[0] [width][d_conv] + bias weight[1]); updates the state */
    G_SSM_SCAN,  /* out = selective scan of x = in[0] with in[1] = [dt | B | C] rows (dt before
                    softplus), A = weight[0] [width][d_state], D = weight[1]; updates the state */
    G_CONCAT,    /* out = [in[0] | in[1]] per row; width = the two widths together */
    G_POS_EMBED, /* out = rows of weight[0] at positions n_past + t, from row pos_offset on
                    (OPT's learned positions) */
    /* Mixture of experts (Mixtral); see the moe fields of g_node. */
    G_MOE_ROUTER, /* out = per token the moe.n_used experts picked from the router logits
                     in[0] [moe.n_expert]: n_used ids (uint32 bits), then their weights */
    G_MOE_MATMUL, /* expert products of the stacked weight[0] for the experts in in[1] (a
                     G_MOE_ROUTER): out [n_used][rows] per token (W_e in[0]), or with
                     moe.weighted_sum [rows] = sum of the weighted products of in[0]'s n_used rows */
    /* StripedHyena (arch_hyena.c); `layer` picks the layer's recurrent state. */
    G_HYENA_NORM, /* out = in[0] / (sqrt(mean(in[0]^2)) + eps) * weight[0] (eps outside the root) */
    G_HYENA_FIR,  /* out = causal depthwise conv1d of in[0] (no activation) with the layer's conv
                     state, kernel weight[0] [width][ssm_d_conv] + bias weight[1]; updates the state */
    G_HYENA_IIR   /* out [width] = x2 * (h * (x1 v) + D x1 v) for in[0] rows [x2 | x1 | v] of
                     3 width, h the modal filter of poles weight[0] and residues weight[1]
                     [width][2 N], D weight[2]; runs as a recurrence on the layer's state */
} g_op;

typedef enum g_activation {
    G_ACT_GELU,     /* tanh approximation */
    G_ACT_GELU_ERF, /* exact */
    G_ACT_RELU,
    G_ACT_SILU,
    G_ACT_CLAMP     /* to [-eps, eps] */
} g_activation;

#define G_MAX_INPUTS 2
#define G_MAX_LAYERS 512
#define G_MAX_WEIGHTS 3
#define G_MAX_EXPERTS 4096    /* mixture of experts: experts per layer */
#define G_MAX_EXPERTS_USED 8  /* and per token */

/* G_ROPE: rotary position embedding of n_heads heads. */
typedef struct g_rope {
    uint32_t n_heads, head_dim, n_rot, mode; /* mode: 0 adjacent pairs, 1 half split */
    float freq_base, freq_scale;
} g_rope;

typedef struct g_node {
    g_op op;
    int32_t in[G_MAX_INPUTS];           /* node indices, -1 = none */
    const char *weight[G_MAX_WEIGHTS];  /* GGUF tensor names (owned by the graph), NULL = none */
    uint32_t width;                     /* elements per token of the output */
    uint32_t layer;                     /* for KV_STORE and ATTENTION */
    int inplace;                        /* output reuses in[inplace - 1]'s storage (0 = no) */
    int accumulate;                     /* MATMUL: out = W.in[0] + in[1], in place on in[1] */
    float eps;                          /* norms; the bound of G_ACT_CLAMP */
    g_activation activation;            /* G_ACTIVATION */
    struct {
        uint32_t begin, count;          /* MATMUL: rows of weight[0] used (count 0 = all) */
    } rows;
    g_rope rope;
    struct {
        uint32_t n_heads, n_heads_kv, head_dim;
        float scale;
        uint32_t window;      /* sliding window (0: none): keys with pos - key < window */
        float alibi_max_bias; /* ALiBi (0: none) */
    } attn;
    const char *label; /* for profiles: "blk.3.attn_q" */
    uint32_t pos_offset; /* G_POS_EMBED: the table row of position 0 (OPT: 2) */
    struct {
        uint32_t n_expert, n_used;
        bool normalize;     /* ROUTER: weights renormalised over the chosen experts */
        float scale;        /* ROUTER: weights times this */
        bool weighted_sum;  /* MATMUL: in[0] has a row per slot; out = their weighted sum */
    } moe;
} g_node;

/* Hyperparameters every architecture fills from metadata. */
typedef struct g_hparams {
    char arch[32];
    uint32_t n_vocab;
    uint32_t n_ctx_train;
    uint32_t n_embd;
    uint32_t n_layer;
    uint32_t n_head;
    uint32_t n_head_kv;
    uint32_t head_dim;
    uint32_t n_ff;
    uint32_t n_rot;
    float norm_eps;
    float rope_freq_base;
    float rope_freq_scale;
    uint32_t n_swa; /* sliding-window attention: window length, 0 = none */
    float clamp_kqv;      /* MPT: clamp Q, K, V to +-this (0 = off) */
    float alibi_max_bias; /* ALiBi families */
    uint32_t n_head_kv_layer[G_MAX_LAYERS]; /* DeciLM varies these per layer */
    uint32_t n_ff_layer[G_MAX_LAYERS];
    /* Mamba: conv kernel, inner width, state size, dt rank (0 for other families). */
    uint32_t ssm_d_conv, ssm_d_inner, ssm_d_state, ssm_dt_rank;
    /* Learned positions: positions the table holds (a context may not exceed it); 0 = no limit. */
    uint32_t n_pos;
    /* Mixture of experts: experts per layer and used per token (0 = a dense MLP). */
    uint32_t n_expert, n_expert_used;
    /* StripedHyena reuses the ssm_* sizes for its recurrent state: ssm_d_conv = its FIR length,
     * ssm_d_inner = n_embd, ssm_d_state = 2 N (N complex modes per channel as re/im floats);
     * its FIR state spans ssm_conv_channels = 3 n_embd channels (0: ssm_d_inner, as Mamba). */
    uint32_t ssm_conv_channels;
} g_hparams;

typedef struct g_graph {
    g_hparams hp;
    g_node *nodes;
    uint32_t n_nodes, cap_nodes;
    char **strings; /* owned names and labels */
    uint32_t n_strings, cap_strings;
    int32_t logits_node;
} g_graph;

/* Reads hyperparameters and builds the decoder graph for the file's architecture. Errors
 * name the key or tensor that is missing or inconsistent, or the unsupported architecture.
 * `last_row_only`: logits only for the last token of a batch. */
vkllm_status g_build(const gguf_file *f, int last_row_only, g_graph *out);
void g_free(g_graph *g);

/* Builders shared by architecture files. */
int32_t g_add_node(g_graph *g, const g_node *node);
const char *g_strf(g_graph *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Metadata "<arch>.<suffix>": an unsigned count below 2^31, or a finite float. Absent keys
 * give `fallback` (g_key_u32: an error when `required`); errors name the key. */
vkllm_status g_key_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t *out,
                       int required, uint32_t fallback);
vkllm_status g_key_f32(const gguf_file *f, const char *arch, const char *suffix, float *out,
                       float fallback);

/* Checks a tensor exists with the expected 2-D shape [cols, rows] (ne order); rows == 0
 * accepts any row count. Errors name the tensor and both shapes. */
vkllm_status g_expect_tensor(const gguf_file *f, const char *name, uint64_t cols, uint64_t rows);
/* A 1-D tensor of n entries. */
vkllm_status g_expect_vector(const gguf_file *f, const char *name, uint32_t n);
/* A tensor the recurrent ops (SSM, Hyena) read as a flat f32 array: F32 or F16, shape
 * [cols, rows]. */
vkllm_status g_expect_array(const gguf_file *f, const char *name, uint32_t cols, uint32_t rows);
/* g_add_node, with the out-of-memory error; *out (when not NULL) gets the node's index. */
vkllm_status g_add(g_graph *g, g_node node, int32_t *out);
/* A MATMUL node out = W[row_begin, row_begin + rows) . x (+ acc when acc >= 0, in place) with
 * W = "blk.<l>.<what>.weight" [cols, total_rows] and its bias "blk.<l>.<what>.bias" when the
 * file has one; the shapes are checked. */
vkllm_status g_add_layer_matmul(g_graph *g, const gguf_file *f, int32_t x, const char *what, uint32_t l,
                                uint32_t cols, uint32_t row_begin, uint32_t rows, uint32_t total_rows,
                                int32_t acc, int32_t *out);
/* The end of the recurrent builders' graphs: the last token's row when last_row_only, then
 * logits = output . norm(x) with "output_norm.weight" (norm_op: G_RMSNORM or G_HYENA_NORM,
 * eps hp.norm_eps), marked as the graph's logits. */
vkllm_status g_add_output_head(g_graph *g, int32_t x, int last_row_only, g_op norm_op, const char *output);
/* *out = fmt with the layer number l, allocated in the graph. */
vkllm_status g_layer_name(g_graph *g, const char **out, const char *fmt, uint32_t l);

/* Architecture builders (arch_*.c). */
vkllm_status g_build_transformer(const gguf_file *f, const char *arch, int last_row_only, g_graph *g);
vkllm_status g_build_mamba(const gguf_file *f, int last_row_only, g_graph *g);
vkllm_status g_build_hyena(const gguf_file *f, int last_row_only, g_graph *g);
/* Whether arch_transformer.c builds `arch`. */
bool g_transformer_arch(const char *arch);
/* The architectures g_build accepts, for messages. */
const char *g_supported_architectures(void);

#endif
