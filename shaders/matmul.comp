#version 450
// y[t][r] = sum_c W[r][c] * x[t][c] (+ y[t][r] when accumulating), for one chunk of rows of W
// and one group of tokens. Shapes, chosen by define:
//  - MATVEC (few tokens, decode): a workgroup computes ROWS rows for all NT tokens; its
//    invocations split the row's blocks and the partial sums are reduced at the end
//    (subgroupAdd with USE_SUBGROUP, else through shared memory). With SUBGROUP_ROWS each
//    subgroup computes ROWS rows of its own instead, and a workgroup several such groups.
//  - MATVEC with WEIGHTS_TEXEL (lavapipe): each invocation computes ROWS whole rows for all
//    NT tokens, a workgroup WG * ROWS rows. On lavapipe that is cheaper: no reduction across
//    invocations (subgroupAdd and the stores after it cost as much as a dozen blocks), and
//    the invocations of a workgroup read the same x.
//  - MATMUL (prompts): each invocation computes a TM x TN tile (rows x tokens) in registers,
//    decoding each weight block once and using it for all TN tokens; a workgroup is
//    WG_ROWS x (WG / WG_ROWS) invocations.
// MATVEC can also compute several products of one x in one dispatch (op_matvec_split and
// op_matvec_glu): with PARTS > 1 rows from part_row[0] and part_row[1] on are stored to the
// y1 and y2 bindings (Q, K and V of a layer); with GLU each output row r reads two rows of W,
// glu_gate_row + r and glu_up_row + r, and stores silu(gate) * up (a SwiGLU MLP's gate and up).
// With NORM they multiply RMSNorm(x) * nw instead of x: x is scaled by the norm weight nw as
// it is read, its sum of squares gathered on the way, and the sums are scaled by
// 1 / sqrt(mean(x^2) + eps) at the end (the RMSNorm before a layer's products).
// With ROPE_KV (and PARTS = 3: Q, K and V of a layer) the products go on to the attention's
// inputs: q and k rotated (adjacent pairs, as ggml's rope), q stored to y, k and v stored as
// f16 pairs into the KV cache rows of their positions (bindings 3 and 4 are the caches then).
// An invocation owns both rows of each rotation pair: it computes pairs of adjacent rows.
// The bits are those of op_rope_kv_store after the split product (rope.glsl).
// MATVEC multiplies quants by x and applies the block's scale (and offset times sum(x)) once
// per block and output, see blocks.glsl.
// Per invocation the only loop that grows with the sizes walks one row's blocks (cols / 32,
// or cols / 8 for f32/f16/bf16, divided by WG for MATVEC without WEIGHTS_TEXEL): the inner
// loops are unrolled, so lavapipe's 65,535-iteration loop limit is far away even for
// cols = 16384.
#extension GL_GOOGLE_include_directive : require
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

layout(constant_id = 0) const uint WG = 32;
#ifdef MATVEC
layout(constant_id = 1) const uint ROWS = 1; // rows per workgroup (per invocation with WEIGHTS_TEXEL)
layout(constant_id = 2) const uint NT = 1;   // tokens (all of this dispatch's)
layout(constant_id = 3) const bool W_ALIGNED = false; // see load_block (blocks.glsl)
layout(constant_id = 4) const bool X_VEC4 = false;    // see load_x4
layout(constant_id = 5) const uint PARTS = 1;         // outputs of a split product (1-3)
layout(constant_id = 6) const uint GLU = 0;           // 1: gate and up rows, silu(gate) * up
layout(constant_id = 7) const uint NORM = 0;          // 1: RMSNorm(x) * nw instead of x
layout(constant_id = 8) const uint ROPE_KV = 0;       // 1: rope q and k, store k and v to the cache
layout(constant_id = 9) const uint SUBGROUP_ROWS = 0; // storage MATVEC with subgroups: see main_subgroup_rows
const uint NR = ROWS + GLU * ROWS; // rows of W read per workgroup (per invocation with WEIGHTS_TEXEL)
#else
layout(constant_id = 1) const uint WG_ROWS = 16; // invocations along rows
layout(constant_id = 2) const uint TM = 4;       // rows per invocation
layout(constant_id = 3) const uint TN = 4;       // tokens per invocation
layout(constant_id = 4) const bool W_ALIGNED = false; // see load_block (blocks.glsl)
layout(constant_id = 5) const bool X_VEC4 = false;    // see load_x4
#endif

#ifdef WEIGHTS_TEXEL
// Weights and activations through storage texel buffers (VKR_TEXEL_BINDING): on lavapipe an
// imageLoad from one is a gather, where a storage-buffer load is a loop over the lanes with a
// bounds check each. The weights are words (R32UI); x is 16-byte texels (RGBA32UI), whose
// view starts 16-byte aligned. (Uniform texel buffers, which lavapipe reads through a call
// per texelFetch, measured 7-12 % slower; weights read as RGBA32UI texels slower still.)
layout(binding = 8, r32ui) uniform readonly uimageBuffer wtex; // see blocks.glsl
layout(binding = 9, rgba32ui) uniform readonly uimageBuffer xtex;
layout(binding = 10, rgba32ui) uniform readonly uimageBuffer nwtex; // NORM: the norm's weight
float xs_at(uint i) { return uintBitsToFloat(imageLoad(xtex, int(i >> 2))[i & 3u]); }
vec4 x4_at(uint i) { return uintBitsToFloat(imageLoad(xtex, int(i))); } // floats 4i .. 4i+3
#define NW4_AT(i) uintBitsToFloat(imageLoad(nwtex, int(p.nw_skip + (i))))
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; }; // see blocks.glsl
// The activations, seen as vec4 when every token's row starts 16-byte aligned (X_VEC4).
layout(std430, binding = 1) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer XS { float xs[]; };
float xs_at(uint i) { return xs[i]; }
vec4 x4_at(uint i) { return x4[i]; }
#endif
layout(std430, binding = 2) buffer Y { float y[]; };
layout(std430, binding = 3) writeonly buffer Y1 { float y1[]; }; // split parts 1 and 2
layout(std430, binding = 4) writeonly buffer Y2 { float y2[]; };
#ifdef MATVEC
// ROPE_KV: the K and V caches in place of y1 and y2, f16 pairs; the step's first position.
layout(std430, binding = 3) writeonly buffer KCache { uint k_cache[]; };
layout(std430, binding = 4) writeonly buffer VCache { uint v_cache[]; };
layout(std430, binding = 6) readonly buffer Params { uint n_past; } params;
#endif
#ifndef WEIGHTS_TEXEL
layout(std430, binding = 5) readonly buffer NW { vec4 nw4[]; }; // NORM: the norm's weight
#define NW4_AT(i) nw4[i]
#endif

layout(push_constant) uniform Push {
    uint rows;       // rows of this chunk
    uint cols;
    uint n_tokens;   // tokens of this dispatch (MATMUL; MATVEC uses NT)
    uint row_bytes;
    uint w_skip;     // bytes from the weight binding's start to the chunk's first row
    uint x_skip;     // floats from the x binding's start to token 0
    uint y_skip;     // floats from the y binding's start to y[token 0][chunk row 0]
    uint y_stride;   // floats from one token's y row to the next
    uint accumulate;
    uint part_row[2]; // PARTS > 1: first rows of parts 1 and 2 (local to this dispatch)
    uint y1_skip;     // floats from the y1 / y2 binding's start to token 0's row
    uint y2_skip;
    uint glu_gate_row; // GLU: rows from the chunk's first row to gate row 0 and up row 0
    uint glu_up_row;
    float norm_eps;    // NORM
    uint nw_skip;      // NORM with WEIGHTS_TEXEL: texels from nwtex's start to the norm weight
    uint head_dim;     // ROPE_KV: dims per head, of which the first n_rot rotate
    uint n_rot;
    float theta_scale;
    float freq_scale;
    uint n_ctx;        // ROPE_KV: rows of each cache (position pos goes to row pos % n_ctx)
} p;

#include "blocks.glsl"
#ifdef MATVEC
#include "rope.glsl"
#endif

// x[t][c .. c+3], zeros past the end of the row (which only plain types can reach).
// Uniform choices are specialization constants, not push constants, and the tail is handled
// with clamps and selects, not branches: lavapipe runs both sides of every branch.
vec4 load_x4(uint t, uint c)
{
    uint i = p.x_skip + t * p.cols + c;
#ifdef PLAIN_WEIGHTS
    if (!W_ALIGNED) { // rows may end inside this group: stay inside the row, zero the rest
        uint last = p.x_skip + t * p.cols + p.cols - 1u;
        vec4 v = X_VEC4 ? x4_at(min(i, last) >> 2)
                        : vec4(xs_at(min(i, last)), xs_at(min(i + 1u, last)), xs_at(min(i + 2u, last)),
                               xs_at(min(i + 3u, last)));
        return mix(vec4(0.0), v, lessThan(uvec4(c) + uvec4(0u, 1u, 2u, 3u), uvec4(p.cols)));
    }
#endif
    if (X_VEC4)
        return x4_at(i >> 2);
    return vec4(xs_at(i), xs_at(i + 1u), xs_at(i + 2u), xs_at(i + 3u));
}

uint valid_weights(uint col)
{
    return min(p.cols - col, BLOCK_WEIGHTS);
}

void store(uint t, uint r, float v)
{
#ifdef MATVEC
    // Split parts are stored as [n_tokens][rows of the part], never accumulated.
    if (PARTS > 2u && r >= p.part_row[1]) {
        y2[p.y2_skip + t * (p.rows - p.part_row[1]) + r - p.part_row[1]] = v;
        return;
    }
    if (PARTS > 1u && r >= p.part_row[0]) {
        uint end = PARTS > 2u ? p.part_row[1] : p.rows;
        y1[p.y1_skip + t * (end - p.part_row[0]) + r - p.part_row[0]] = v;
        return;
    }
#endif
    uint i = p.y_skip + t * p.y_stride + r;
    y[i] = p.accumulate != 0u ? y[i] + v : v;
}

#ifdef MATVEC
float silu(float v)
{
    return v / (1.0 + exp(-v)); // as activation.comp, so that fused and separate agree
}

// Byte offset of the row of W that row slot s (< NR) of output row `row` reads: with GLU,
// slots [0, ROWS) are gate rows and [ROWS, NR) up rows.
uint w_row_at(uint row, uint s)
{
    uint r = min(row, p.rows - 1u);
    if (GLU != 0u)
        r += s < ROWS ? p.glu_gate_row : p.glu_up_row;
    return p.w_skip + r * p.row_bytes;
}

// The value output row slot r (< ROWS) of token t stores, from its NR * NT sums (already
// scaled by the norm).
#define OUTPUT(acc, r, t) (GLU != 0u ? silu(acc[(r) * NT + (t)]) * acc[(ROWS + (r)) * NT + (t)] : acc[(r) * NT + (t)])

// NORM: x[t][c .. c+3] times the norm weight; sq gathers x's squares.
vec4 load_x4_normed(uint t, uint c, inout float sq)
{
    vec4 v = load_x4(t, c);
    if (NORM == 0u)
        return v;
    sq += dot(v, v);
    return v * NW4_AT(c >> 2);
}

// The RMSNorm scale of a row whose squares sum to sq.
float norm_scale(float sq)
{
    return NORM != 0u ? inversesqrt(sq / float(p.cols) + p.norm_eps) : 1.0;
}

// ROPE_KV: output rows r and r + 1 (r even) of token t, whose products are v0 and v1: a
// rotation pair of q (stored to y) or of k (into the K cache), or two values of v.
void store_pair_rope_kv(uint t, uint r, float v0, float v1)
{
    uint pos = params.n_past + t;
    bool is_v = r >= p.part_row[1];
    uint d = (r < p.part_row[0] ? r : r - p.part_row[0]) % p.head_dim;
    if (!is_v && d < p.n_rot) {
        float s, c;
        rope_sincos(pos, d / 2u, p.theta_scale, p.freq_scale, s, c);
        vec2 rotated = rope_rotate(v0, v1, s, c);
        v0 = rotated.x;
        v1 = rotated.y;
    }
    if (r < p.part_row[0]) {
        store(t, r, v0);
        store(t, r + 1u, v1);
        return;
    }
    uint width = p.part_row[1] - p.part_row[0]; // of k and of v
    uint at = pos % p.n_ctx * (width / 2u) + (r - (is_v ? p.part_row[1] : p.part_row[0])) / 2u;
    if (is_v)
        v_cache[at] = packHalf2x16(vec2(v0, v1));
    else
        k_cache[at] = packHalf2x16(vec2(v0, v1));
}
#endif

#if defined(MATVEC) && defined(WEIGHTS_TEXEL)

// Output row r (< ROWS) of this invocation: row0 + lane + WG * r, or with ROPE_KV (ROWS even)
// adjacent rows in pairs, row0 + 2 lane + r % 2 + 2 WG (r / 2), for all NT tokens.
// (Reading two blocks at a time, where their alignment alternates, saves 6 % of the JIT
// instructions for q4_0 and q8_0 but measured no faster.)
uint out_row(uint r)
{
    uint lane = gl_LocalInvocationID.x, row0 = linear_group_id() * (WG * ROWS);
    return ROPE_KV != 0u ? row0 + 2u * lane + r % 2u + 2u * WG * (r / 2u) : row0 + lane + WG * r;
}

void main()
{
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    uint at[NR];
    [[unroll]] for (uint s = 0u; s < NR; s++)
        at[s] = w_row_at(out_row(s % ROWS), s);
    float acc[NR * NT];
    [[unroll]] for (uint k = 0u; k < NR * NT; k++)
        acc[k] = 0.0;
    float sq[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++)
        sq[t] = 0.0;

    for (uint b = 0u; b < n_blocks; b++) {
        // x of this block for every token (the same for all invocations)
        uint col = b * BLOCK_WEIGHTS;
        vec4 xv[NT * BLOCK_GROUPS];
        float xsum[NT];
        [[unroll]] for (uint t = 0u; t < NT; t++) {
            vec4 s4 = vec4(0.0);
            [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
                xv[t * BLOCK_GROUPS + g] = load_x4_normed(t, col + 4u * g, sq[t]);
                s4 += xv[t * BLOCK_GROUPS + g];
            }
            xsum[t] = (s4.x + s4.y) + (s4.z + s4.w); // unused (and dropped) without an offset
        }
        [[unroll]] for (uint r = 0u; r < NR; r++) {
            wblock blk = load_block(at[r] + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
            [[unroll]] for (uint t = 0u; t < NT; t++) {
                float q = 0.0; // quants times x (lavapipe computes fma as a multiply and an add)
                [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
                    vec4 qv = block_q4(blk, g);
                    vec4 xg = xv[t * BLOCK_GROUPS + g];
                    q = fma(qv.x, xg.x, fma(qv.y, xg.y, fma(qv.z, xg.z, fma(qv.w, xg.w, q))));
                }
#ifdef BLOCK_HAS_OFFSET
                acc[r * NT + t] = fma(blk.d, q, fma(blk.m, xsum[t], acc[r * NT + t]));
#else
                acc[r * NT + t] = fma(blk.d, q, acc[r * NT + t]);
#endif
            }
        }
    }
    [[unroll]] for (uint t = 0u; t < NT; t++) {
        float scale = norm_scale(sq[t]);
        [[unroll]] for (uint r = 0u; r < NR; r++)
            acc[r * NT + t] *= scale;
    }
    if (ROPE_KV != 0u) {
        [[unroll]] for (uint r = 0u; r < ROWS; r += 2u)
            [[unroll]] for (uint t = 0u; t < NT; t++)
                if (out_row(r) < p.rows)
                    store_pair_rope_kv(t, out_row(r), acc[r * NT + t], acc[min(r + 1u, NR - 1u) * NT + t]);
        return;
    }
    [[unroll]] for (uint r = 0u; r < ROWS; r++)
        [[unroll]] for (uint t = 0u; t < NT; t++)
            if (out_row(r) < p.rows)
                store(t, out_row(r), OUTPUT(acc, r, t));
}

#elif defined(MATVEC)

// Partial sums of the invocations (one per subgroup with USE_SUBGROUP): NR * NT products, then
// (NORM) NT sums of x's squares.
shared float partial[(NR + NORM) * NT * WG];

// This invocation's sums: NR * NT products (row slot r, token t at r * NT + t) and (NORM) NT
// sums of x's squares. (Globals: arrays sized by specialization constants do not pass well as
// function arguments.)
float acc[NR * NT], sq[NT];

void clear_sums()
{
    [[unroll]] for (uint k = 0u; k < NR * NT; k++)
        acc[k] = 0.0;
    [[unroll]] for (uint t = 0u; t < NT; t++)
        sq[t] = 0.0;
}

// Adds block b of rows row0 .. row0 + ROWS - 1 (and their GLU up rows) times x, for every token,
// to acc; with NORM x's squares to sq.
void add_block(uint b, uint row0)
{
    uint col = b * BLOCK_WEIGHTS;
    wblock blk[NR];
    [[unroll]] for (uint r = 0u; r < NR; r++)
        blk[r] = load_block(w_row_at(row0 + r % ROWS, r) + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
#ifdef PLAIN_WEIGHTS
#define qdot acc // d = 1 and no offset: accumulate directly
#else
    float qdot[NR * NT];
    [[unroll]] for (uint k = 0u; k < NR * NT; k++)
        qdot[k] = 0.0;
#endif
#ifdef BLOCK_HAS_OFFSET
    float xsum[NT];
    [[unroll]] for (uint t = 0u; t < NT; t++)
        xsum[t] = 0.0;
#endif
    [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
        vec4 qv[NR];
        [[unroll]] for (uint r = 0u; r < NR; r++)
            qv[r] = block_q4(blk[r], g);
        [[unroll]] for (uint t = 0u; t < NT; t++) {
            vec4 xv = load_x4_normed(t, col + 4u * g, sq[t]);
#ifdef BLOCK_HAS_OFFSET
            xsum[t] += (xv.x + xv.y) + (xv.z + xv.w);
#endif
            [[unroll]] for (uint r = 0u; r < NR; r++)
                qdot[r * NT + t] += dot(qv[r], xv);
        }
    }
#ifdef PLAIN_WEIGHTS
#undef qdot
#else
    [[unroll]] for (uint r = 0u; r < NR; r++)
        [[unroll]] for (uint t = 0u; t < NT; t++)
#ifdef BLOCK_HAS_OFFSET
            acc[r * NT + t] += blk[r].d * qdot[r * NT + t] + blk[r].m * xsum[t];
#else
            acc[r * NT + t] += blk[r].d * qdot[r * NT + t];
#endif
#endif
}

// Stores rows row0 .. row0 + ROWS - 1 from their whole sums in acc (GLU: and the up rows'; NORM:
// sq whole too).
void store_rows(uint row0)
{
    [[unroll]] for (uint k = 0u; k < NR * NT; k++)
        acc[k] *= norm_scale(sq[k % NT]);
    [[unroll]] for (uint r = 0u; r < ROWS; r++)
        [[unroll]] for (uint t = 0u; t < NT; t++)
            if (row0 + r < p.rows) {
                if (ROPE_KV == 0u)
                    store(t, row0 + r, OUTPUT(acc, r, t));
                else if (r % 2u == 0u) // ROWS and row0 are even (the min: ROWS odd never runs)
                    store_pair_rope_kv(t, row0 + r, acc[r * NT + t], acc[min(r + 1u, NR - 1u) * NT + t]);
            }
}

#ifdef USE_SUBGROUP
// Sums acc (and with NORM sq) over the subgroup's invocations: each gets the totals.
void add_across_subgroup()
{
    [[unroll]] for (uint k = 0u; k < NR * NT; k++)
        acc[k] = subgroupAdd(acc[k]);
    if (NORM != 0u)
        [[unroll]] for (uint t = 0u; t < NT; t++)
            sq[t] = subgroupAdd(sq[t]);
}

// SUBGROUP_ROWS (the host's subgroup size, not 0): each subgroup computes ROWS rows alone, its
// lanes splitting the blocks and one subgroupAdd summing them; a workgroup covers WG /
// SUBGROUP_ROWS such row groups. No shared memory or barrier. A device whose subgroups are
// larger than the host assumed has fewer of them: each then takes several row groups.
void main_subgroup_rows()
{
    uint slots = WG / SUBGROUP_ROWS;
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    for (uint slot = gl_SubgroupID; slot < slots; slot += gl_NumSubgroups) {
        uint row0 = (linear_group_id() * slots + slot) * ROWS;
        clear_sums();
        for (uint b = gl_SubgroupInvocationID; b < n_blocks; b += gl_SubgroupSize)
            add_block(b, row0);
        add_across_subgroup();
        if (subgroupElect())
            store_rows(row0);
    }
}
#endif

void main()
{
#ifdef USE_SUBGROUP
    if (SUBGROUP_ROWS != 0u) {
        main_subgroup_rows();
        return;
    }
#endif
    uint tid = gl_LocalInvocationID.x;
    uint row0 = linear_group_id() * ROWS;
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    clear_sums();
    for (uint b = tid; b < n_blocks; b += WG)
        add_block(b, row0);

#ifdef USE_SUBGROUP
    add_across_subgroup();
    if (gl_NumSubgroups == 1u) {
        if (tid == 0u)
            store_rows(row0);
        return;
    }
    uint part = subgroupElect() ? gl_SubgroupID : WG; // WG: this invocation stores nothing
    uint n_parts = gl_NumSubgroups;
#else
    uint part = tid;
    uint n_parts = WG;
#endif
    if (part < WG) {
        [[unroll]] for (uint k = 0u; k < NR * NT; k++)
            partial[k * WG + part] = acc[k];
        if (NORM != 0u)
            [[unroll]] for (uint t = 0u; t < NT; t++)
                partial[(NR * NT + t) * WG + part] = sq[t];
    }
    barrier();
    // One invocation per output sums the parts (a single barrier: on lavapipe each barrier
    // is a context switch, and the parts are few). With GLU it sums the up row's parts too,
    // with ROPE_KV the next row's (one invocation per rotation pair).
    uint n_outputs = ROPE_KV != 0u ? ROWS / 2u * NT : ROWS * NT;
    for (uint j = tid; j < n_outputs; j += WG) {
        uint k = ROPE_KV != 0u ? j / NT * 2u * NT + j % NT : j; // output index: row * NT + token
        uint k2 = GLU != 0u ? ROWS * NT + k : k + NT;          // the second sum's
        float s[2] = {0.0, 0.0}, squares = 0.0;
        for (uint i = 0u; i < n_parts; i++) {
            s[0] += partial[k * WG + i];
            if (GLU != 0u || ROPE_KV != 0u)
                s[1] += partial[k2 * WG + i];
            if (NORM != 0u)
                squares += partial[(NR * NT + k % NT) * WG + i];
        }
        float scale = norm_scale(squares);
        s[0] *= scale;
        s[1] *= scale;
        if (row0 + k / NT < p.rows) {
            if (ROPE_KV != 0u)
                store_pair_rope_kv(k % NT, row0 + k / NT, s[0], s[1]);
            else
                store(k % NT, row0 + k / NT, GLU != 0u ? silu(s[0]) * s[1] : s[0]);
        }
    }
}

#else // MATMUL

void main()
{
    const uint WG_TOKENS = WG / WG_ROWS;
    uint tid = gl_LocalInvocationID.x;
    uint row0 = linear_group_id() * (WG_ROWS * TM) + (tid % WG_ROWS) * TM;
    uint tok0 = gl_WorkGroupID.z * (WG_TOKENS * TN) + (WG_TOKENS == 1u ? 0u : (tid / WG_ROWS) * TN);
    if (row0 >= p.rows || tok0 >= p.n_tokens)
        return; // no barriers below

    uint rows_at[TM];
    [[unroll]] for (uint r = 0u; r < TM; r++)
        rows_at[r] = p.w_skip + min(row0 + r, p.rows - 1u) * p.row_bytes;
    uint toks[TN];
    [[unroll]] for (uint t = 0u; t < TN; t++)
        toks[t] = min(tok0 + t, p.n_tokens - 1u);

    float acc[TM * TN];
    [[unroll]] for (uint k = 0u; k < TM * TN; k++)
        acc[k] = 0.0;

    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    for (uint b = 0u; b < n_blocks; b++) {
        uint col = b * BLOCK_WEIGHTS;
        wblock blk[TM];
        [[unroll]] for (uint r = 0u; r < TM; r++)
            blk[r] = load_block(rows_at[r] + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
        // Dequantized once per row and group, then used for TN tokens (keeping a separate
        // quant-times-x sum per output, as MATVEC does, would double the live registers).
        [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
            vec4 wv[TM];
            [[unroll]] for (uint r = 0u; r < TM; r++)
                wv[r] = block_vec4(blk[r], g);
            [[unroll]] for (uint t = 0u; t < TN; t++) {
                vec4 xv = load_x4(toks[t], col + 4u * g);
                [[unroll]] for (uint r = 0u; r < TM; r++)
                    acc[r * TN + t] += dot(wv[r], xv);
            }
        }
    }

    [[unroll]] for (uint r = 0u; r < TM; r++)
        [[unroll]] for (uint t = 0u; t < TN; t++)
            if (row0 + r < p.rows && tok0 + t < p.n_tokens)
                store(tok0 + t, row0 + r, acc[r * TN + t]);
}

#endif
