/* ops: one host function per op family. Each records its dispatch(es) into a vkr_cmd,
 * picking the shader variant from the device's (profile-reduced) capabilities. The
 * dispatcher composes these; tests call them directly against plain C references.
 *
 * Data conventions:
 *  - Activations are f32, row-major, contiguous: a "row" is one token's vector.
 *  - A weight matrix has `rows` output rows of `cols` inputs, stored as ggml rows of
 *    ggml_row_bytes(type, cols) bytes. It may be split into chunks, each inside one binding
 *    (<= maxStorageBufferRange); a chunk always holds whole rows.
 *  - Per-step numbers that change between replays of a recording (the position of the
 *    first token of the batch) live in a small params buffer (vk_step_params) that the
 *    shaders read, so a recorded command buffer stays valid from token to token.
 *  - The KV cache is f16, one buffer per layer for K and one for V, laid out
 *    [n_ctx][n_head_kv * head_dim].
 */
#ifndef VKLLM_OPS_H
#define VKLLM_OPS_H

#include "vkr.h"

/* Written by the host before each submit; read by rope, kv_store and attention. */
typedef struct vk_step_params {
    uint32_t n_past;   /* tokens already in the KV cache = position of this batch's first token */
    uint32_t n_tokens; /* tokens in this batch */
    uint32_t pad[2];
} vk_step_params;

typedef struct op_tensor {
    const vkr_buffer *buffer;
    VkDeviceSize offset; /* bytes; a multiple of the device's storage offset alignment */
    VkDeviceSize size;   /* bytes */
} op_tensor;

#define OP_MAX_CHUNKS 64

typedef struct op_weight_chunk {
    const vkr_buffer *buffer;
    VkDeviceSize offset; /* aligned start of the binding */
    uint32_t row_begin;  /* first row held */
    uint32_t row_count;
    uint32_t skip_bytes; /* from `offset` to the first row (offset is aligned down) */
    uint32_t view;       /* texel_chunks: the buffer's texel view that holds the chunk */
} op_weight_chunk;

typedef struct op_weight {
    uint32_t type; /* ggml_type */
    uint32_t rows, cols;
    uint64_t row_bytes;
    const vkr_buffer *buffer; /* row 0 is at byte `offset` of it; the rows follow contiguously */
    VkDeviceSize offset;
    uint32_t n_chunks;
    op_weight_chunk chunks[OP_MAX_CHUNKS];
    /* The same rows laid out over the buffer's texel views (see vkr_buffer), where it has
     * them: op_matmul and op_get_rows then read the weight through those. 0 = none. */
    uint32_t n_texel_chunks;
    op_weight_chunk texel_chunks[OP_MAX_CHUNKS];
} op_weight;

typedef enum op_rope_mode {
    OP_ROPE_ADJACENT = 0, /* rotate pairs (2i, 2i+1): llama.cpp "normal" mode */
    OP_ROPE_HALF = 1      /* rotate pairs (i, i + n_rot/2): "neox" mode */
} op_rope_mode;

typedef struct op_rope_desc {
    uint32_t n_tokens, n_heads, head_dim;
    uint32_t n_rot; /* dims rotated per head (<= head_dim, even); the rest pass through */
    op_rope_mode mode;
    float freq_base;  /* theta = pos * freq_scale * base^(-2i/n_rot) */
    float freq_scale; /* 1 / linear scaling factor */
} op_rope_desc;

typedef struct op_attention_desc {
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim;
    uint32_t n_ctx; /* rows of the cache */
    float scale;    /* usually 1/sqrt(head_dim) */
    /* Mask kinds beyond causal, 0 = off. window: token at pos sees keys k with
     * pos - k < window (llama.cpp's standard SWA). alibi_max_bias: adds ggml's ALiBi bias
     * slope_h * (k - pos) to the scores (slopes as ggml_soft_max_ext with max_bias). */
    uint32_t window;
    float alibi_max_bias;
} op_attention_desc;

/* out = a + b (b broadcast with period n_b elements). n counts elements of a. */
vkllm_status op_add(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                    uint32_t n, uint32_t n_b);
/* out = a * b (b broadcast with period n_b). */
vkllm_status op_mul(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                    uint32_t n, uint32_t n_b);
/* out = a * scale */
vkllm_status op_scale(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n,
                      float scale);

/* Per row of n_cols: out = x / sqrt(mean(x^2) + eps) * w (w: n_cols f32). */
vkllm_status op_rmsnorm(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor out,
                        uint32_t n_cols, uint32_t n_rows, float eps);
/* StripedHyena's form, eps added to the RMS: out = x / (sqrt(mean(x^2)) + eps) * w. */
vkllm_status op_rmsnorm_eps_outside(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w,
                                    op_tensor out, uint32_t n_cols, uint32_t n_rows, float eps);
/* Per row: out = (x - mean) / sqrt(var + eps) * w + b (b may have size 0 = no bias). */
vkllm_status op_layernorm(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor b,
                          op_tensor out, uint32_t n_cols, uint32_t n_rows, float eps);
/* Per row: out = softmax(x * scale + mask_row), mask (n_cols f32 per row, -inf allowed)
 * optional (size 0). */
vkllm_status op_softmax(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor mask, op_tensor out,
                        uint32_t n_cols, uint32_t n_rows, float scale);
/* out = silu(gate) * up, n elements. */
vkllm_status op_swiglu(vkr_cmd *cmd, vkr_device *dev, op_tensor gate, op_tensor up, op_tensor out,
                       uint32_t n);

/* In place on x: [n_tokens][n_heads][head_dim]; token t is at position params.n_past + t. */
vkllm_status op_rope(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor params,
                     const op_rope_desc *desc);

/* Lays out a weight stored contiguously (rows * ggml_row_bytes(type, cols) bytes at `offset`
 * in `buffer`, offset even) as chunks of whole rows that each fit one binding
 * (caps.max_storage_buffer_range), each bound from its first row's offset aligned down to
 * caps.storage_offset_alignment; and, when the buffer has texel views, as texel_chunks that
 * each lie inside one view. Supported types: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0,
 * q5_1. Fails when a row alone exceeds a binding or more than OP_MAX_CHUNKS are needed. */
vkllm_status op_weight_init(const vkr_device *dev, uint32_t type, uint32_t rows, uint32_t cols,
                            const vkr_buffer *buffer, VkDeviceSize offset, op_weight *out);

/* Rows of W (any supported type) picked by int32 ids -> f32 rows of out [n_ids][cols].
 * The caller validates ids (0 <= id < rows); the shader clamps them into that range, so a
 * bad id yields row 0 or the last row, never a read outside the weights. The weights are
 * read through texel views when w has texel_chunks. */
vkllm_status op_get_rows(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor ids,
                         op_tensor out, uint32_t n_ids);

/* y[t][r] = sum_c W[r][c] * x[t][c] (+ y[t][r] when accumulate), t < n_tokens. One dispatch
 * per weight chunk and group of tokens whose x and y rows fit a binding (one token's must).
 * Weights and x are read through texel views when w has texel_chunks, x's buffer has views
 * and one row of x (cols floats) fits its texel_stride; through storage buffers otherwise. */
vkllm_status op_matmul(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x, op_tensor y,
                       uint32_t n_tokens, bool accumulate);

/* The register tiles of the matrix-matrix shape (matmul.comp's MATMUL, and the grouped expert
 * products of moe_matmul.comp) for weights of `type`: {wg, wg_rows, tm, tn}, a workgroup of wg
 * invocations, wg_rows of them along the rows, each computing tm rows x tn tokens. */
void op_matmul_tile_shape(const vkr_device *dev, uint32_t type, uint32_t spec[4]);

/* Several products of one x in one dispatch, for decode, where op_matmul would record
 * one dispatch per product (the recorder fuses a layer's Q, K and V, and a SwiGLU MLP's gate,
 * up and activation). Both need op_matvec_fusable(w, x, n_tokens). */
#define OP_MATVEC_MAX_PARTS 3
typedef struct op_matvec_part {
    uint32_t rows; /* rows of W in this part; the parts lie end to end from row 0 */
    op_tensor y;   /* [n_tokens][rows] */
} op_matvec_part;
/* An RMSNorm the products apply to x first: they multiply x / sqrt(mean(x^2) + eps) * w (w:
 * cols f32, 16-byte aligned; cols a multiple of 4), as op_rmsnorm before them would. */
typedef struct op_matvec_norm {
    op_tensor w;
    float eps;
} op_matvec_norm;
/* Whether w . x for n_tokens tokens fits one matrix-vector dispatch: few tokens (the
 * matrix-vector shape), w one chunk of the layout op_matmul would read, x and the outputs
 * within a binding. */
bool op_matvec_fusable(const vkr_device *dev, const op_weight *w, op_tensor x, uint32_t n_tokens);
/* The rope and KV store that follow a layer's Q, K and V products (op_matvec_split with
 * three parts: q, k, v of head_dim-dim heads), done by the same dispatch: the bits of
 * op_rope_kv_store (adjacent pairs) after op_matvec_split. q is rotated before it is stored to
 * parts[0].y; k rotated and v go into the f16 caches (as op_rope_kv_store's: the same number
 * of rows of k's width) at row (params.n_past + t) % n_ctx, and parts[1].y and parts[2].y are
 * not written. */
typedef struct op_matvec_rope_kv {
    op_tensor k_cache, v_cache;
    op_tensor params; /* vk_step_params */
    uint32_t head_dim, n_rot; /* n_rot even, <= head_dim; 0: no rotation */
    float freq_base, freq_scale;
} op_matvec_rope_kv;
/* parts[j].y = (rows of part j of W) . x, for n_parts <= OP_MATVEC_MAX_PARTS parts holding all
 * of W's rows (x normed first when norm is not NULL). Same results as op_matmul on each part.
 * rope_kv (not NULL) goes on to the rope and KV store, see op_matvec_rope_kv. */
vkllm_status op_matvec_split(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                             const op_matvec_norm *norm, const op_matvec_part *parts, uint32_t n_parts,
                             const op_matvec_rope_kv *rope_kv, uint32_t n_tokens);
/* out[t][r] = silu(W[gate_row + r] . x[t]) * (W[up_row + r] . x[t]), r < n (x normed first when
 * norm is not NULL): the same as op_matmul of the two row ranges followed by op_swiglu. */
vkllm_status op_matvec_glu(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                           const op_matvec_norm *norm, op_tensor out, uint32_t gate_row, uint32_t up_row, uint32_t n,
                           uint32_t n_tokens);

/* Writes src [n_tokens][width] f32 into the f16 cache: position params.n_past + t goes to
 * row (params.n_past + t) % rows, rows = cache.size / (2 * width). */
vkllm_status op_kv_store(vkr_cmd *cmd, vkr_device *dev, op_tensor src, op_tensor cache,
                         op_tensor params, uint32_t n_tokens, uint32_t width);

typedef struct op_rope_kv_desc {
    op_tensor q;                /* f32 [n_tokens][n_heads * head_dim], rotated in place;
                                   buffer NULL = no q */
    op_tensor k, v;             /* f32 [n_tokens][n_heads_kv * head_dim]; read only */
    op_tensor k_cache, v_cache; /* f16 [n_ctx][n_heads_kv * head_dim], the same n_ctx */
    op_tensor params;           /* vk_step_params */
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim;
    /* as op_rope_desc; n_rot = 0: no rotation (K and V are stored as they are, q untouched) */
    uint32_t n_rot;
    op_rope_mode mode;
    float freq_base, freq_scale;
} op_rope_kv_desc;

/* A layer's rope and KV store in one dispatch (per binding-sized run of tokens): q is rotated
 * in place, k rotated into k_cache and v stored into v_cache at row (params.n_past + t) %
 * n_ctx; k itself is left unchanged. Bit for bit what op_rope on q, op_rope on k, then
 * op_kv_store of k and of v write. The written tensors (q, k_cache, v_cache) must not overlap
 * each other or k and v. */
vkllm_status op_rope_kv_store(vkr_cmd *cmd, vkr_device *dev, const op_rope_kv_desc *d);

/* Causal attention of q [n_tokens][n_heads][head_dim] against positions
 * [0, params.n_past + t] for token t (position k in cache row k % n_ctx; with a window the
 * cache may be a rolling one of at least window + n_tokens - 1 rows); out like q. Grouped KV heads: query head h uses
 * KV head h / (n_heads / n_heads_kv). partials: scratch where a row's keys are split across
 * workgroups (decode on GPUs, very long contexts on CPUs), of op_attention_partials_bytes;
 * unused (may be empty) where that is 0. */
vkllm_status op_attention(vkr_cmd *cmd, vkr_device *dev, op_tensor q, op_tensor k_cache,
                          op_tensor v_cache, op_tensor params, op_tensor out, op_tensor partials,
                          const op_attention_desc *desc);
/* The partials op_attention needs for any batch of up to desc->n_tokens tokens (0: none). */
uint64_t op_attention_partials_bytes(const vkr_device *dev, const op_attention_desc *desc);

/* Activations, n elements: silu(a) = a / (1 + exp(-a)); gelu as ggml_gelu (tanh
 * approximation); relu = max(a, 0). */
vkllm_status op_silu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n);
vkllm_status op_gelu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n);
vkllm_status op_relu(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n);
/* out = 0.5 a (1 + erf(a / sqrt 2)): the exact GELU (Falcon, MPT, GPT-NeoX in transformers). */
vkllm_status op_gelu_erf(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n);
/* out = clamp(a, -bound, bound) (MPT's clip_qkv). */
vkllm_status op_clamp(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor out, uint32_t n, float bound);

/* ---- mixture of experts (ops_moe.c) ---- */

#define OP_MOE_MAX_USED 8

/* Routing, per token t of logits [n_tokens][n_expert]: p = softmax(logits[t]); the n_used
 * most probable experts, best first (equal logits: the lower index first); their weights
 * p_k / sum of the chosen p (normalize: the same as a softmax over the chosen logits) or
 * p_k, times scale. route [n_tokens][2 * n_used] 32-bit words: the n_used expert ids
 * (uint32), then their n_used weights (f32). 1 <= n_used <= min(n_expert, OP_MOE_MAX_USED). */
vkllm_status op_moe_router(vkr_cmd *cmd, vkr_device *dev, op_tensor logits, op_tensor route,
                           uint32_t n_tokens, uint32_t n_expert, uint32_t n_used, bool normalize,
                           float scale);

typedef struct op_moe_desc {
    uint32_t n_tokens, n_expert, n_used;
    bool x_per_slot;   /* x is [n_tokens][n_used][cols] (one row per slot), else [n_tokens][cols] */
    bool weighted_sum; /* y [n_tokens][R] = sum over slots of weight * product, else y [n_tokens][n_used][R] */
    bool accumulate;   /* y += instead of y = */
    /* Scratch for prompts (op_moe_groups_bytes): with it, batches of enough tokens list the
     * tokens routed to each expert on the GPU and run matrix-matrix tiles per expert, reading
     * each expert's weights once per tile instead of once per token. Size 0: per token. */
    op_tensor groups;
} op_moe_desc;

/* The scratch that lets op_moe_matmul group batches of up to n_tokens tokens by expert (in
 * rounds of fewer where a table for all would exceed a binding); 0 where per-token products
 * serve (batches too small to gain from grouping). */
uint64_t op_moe_groups_bytes(const vkr_device *dev, uint32_t n_expert, uint32_t n_used, uint32_t n_tokens);

/* Expert products for routed tokens. w stacks n_expert matrices of R = w->rows / n_expert rows
 * (expert e holds rows [e R, (e + 1) R), GGUF's 3-D expert tensors). For token t and slot k with
 * expert e = id[t][k] (from `route`, as op_moe_router writes it, read on the GPU):
 * product[t][k] = W_e x[t] (or W_e x[t][k] with x_per_slot). Ids >= n_expert are clamped. */
vkllm_status op_moe_matmul(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                           op_tensor route, op_tensor y, const op_moe_desc *desc);

/* A MoE MLP's gate and up products and SwiGLU in one dispatch, for decode: w is the gate
 * stack followed in memory by the up stack (2 * n_expert matrices of R rows, as model.c
 * uploads them), x one row per token, y [n_tokens][n_used][R] = silu(gate_e x) * (up_e x).
 * desc as for op_moe_matmul's gate (not summed, x shared); only where op_moe_glu_fusable:
 * the per-token texel shape (lavapipe), over one texel chunk, for a batch not grouped. */
bool op_moe_glu_fusable(const vkr_device *dev, const op_weight *w, op_tensor x, const op_moe_desc *desc);
vkllm_status op_moe_matmul_glu(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x,
                               op_tensor route, op_tensor y, const op_moe_desc *desc);

/* Mamba (ops_ssm.c). Tokens are processed in order; the state carries the recurrence
 * from one call to the next (zero it to start a sequence).
 * Causal depthwise conv1d of x [n_tokens][d_inner] with kernel w [d_inner][d_conv]
 * (2 <= d_conv <= 8), per channel c:
 *   out[t][c] = act(bias[c] + sum_k w[c][k] * u[t - d_conv + 1 + k][c])
 * where u is x preceded by the state [d_inner][d_conv - 1] (the previous inputs, oldest
 * first), which is then updated to the last d_conv - 1 inputs. act = SiLU when `silu`;
 * bias may have size 0 (none). */
vkllm_status op_ssm_conv(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor w, op_tensor bias,
                         op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t d_inner,
                         uint32_t d_conv, bool silu);
/* Selective scan, per channel c and state n (1 <= d_state <= 64), token after token:
 *   dt = softplus(dtbc[t][c]);  s[c][n] = exp(dt a[c][n]) s[c][n] + dt x[t][c] B[t][n]
 *   out[t][c] = sum_n C[t][n] s[c][n] + d[c] x[t][c]
 * dtbc [n_tokens][d_inner + 2 d_state] holds dt (before softplus), then B, then C;
 * a [d_inner][d_state] (Mamba's -exp(A_log)), d [d_inner], state [d_inner][d_state]. */
vkllm_status op_ssm_scan(vkr_cmd *cmd, vkr_device *dev, op_tensor x, op_tensor dtbc, op_tensor a,
                         op_tensor d, op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t d_inner,
                         uint32_t d_state);
/* out[r] = [a[r] | b[r]] for rows of wa and wb floats. */
vkllm_status op_concat_rows(vkr_cmd *cmd, vkr_device *dev, op_tensor a, op_tensor b, op_tensor out,
                            uint32_t n_rows, uint32_t wa, uint32_t wb);

/* StripedHyena (ops_hyena.c). Its short FIR is op_ssm_conv with silu false.
 * The gated long convolution as its modal recurrence, token after token, per channel c of
 * width with n_modes (1..32) complex modes n (re/im float pairs in rows of 2 n_modes):
 *   u = x1[t][c] v[t][c];  s[c][n] = p[c][n] s[c][n] + u;
 *   out[t][c] = x2[t][c] (Re sum_n r[c][n] s[c][n] + d[c] u)
 * z [n_tokens][3 width] holds x2, then x1, then v; poles p, residues r and state s are
 * [width][2 n_modes], d [width]. The state carries the recurrence from call to call. */
vkllm_status op_hyena_iir(vkr_cmd *cmd, vkr_device *dev, op_tensor z, op_tensor poles, op_tensor residues,
                          op_tensor d, op_tensor state, op_tensor out, uint32_t n_tokens, uint32_t width,
                          uint32_t n_modes);

/* The OP_TOP_K best-ranked of a row of n logits (higher logit first, lower id first on equal
 * logits, -0 equal to +0: lib/sampling.c's order; a NaN ranks first of all), written to out as
 * OP_TOP_K pairs of (value bits, id), best first; past the row's end ids are 0xffffffff. Rows
 * longer than a workgroup's chunk (1024 on most devices) take more than one dispatch, through
 * scratch (op_top_k_scratch_bytes; 0 for a short row). */
#define OP_TOP_K 64u
uint64_t op_top_k_scratch_bytes(const vkr_device *dev, uint32_t n);
vkllm_status op_top_k(vkr_cmd *cmd, vkr_device *dev, op_tensor logits, uint32_t n, op_tensor scratch, op_tensor out);

#endif
