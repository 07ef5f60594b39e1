#version 450
// Mixture-of-experts matrix-vector products. The weight is a stack of n_expert matrices of
// `rows` x `cols` (GGUF's 3-D expert tensors: expert e holds stacked rows
// [e * rows, (e + 1) * rows)); this dispatch binds one chunk of whole stacked rows
// [chunk_begin, chunk_begin + chunk_rows). The experts come from the router's output
// (moe_router.comp: per token NK ids, then NK weights), read here on the GPU, so a recorded
// command buffer stays valid whatever the router picks.
//
// A workgroup computes ROWS rows of the chosen experts for one token (z) and all NK slots;
// its WG invocations split the row's blocks, as matmul.comp's MATVEC does, and the partial
// sums are reduced at the end. Rows whose expert lies outside this chunk are left to the
// dispatch of the chunk that holds them. Two outputs:
//  - slots (SUM false): y[t][k][r] = (W_{id[t][k]} x[t][k])[r]
//  - SUM: y[t][r] = sum_k weight[t][k] (W_{id[t][k]} x[t][k])[r]; with several chunks the
//    host sets `accumulate` after the first, so each chunk adds its experts' share.
// x[t][k] is one row per token shared by all slots (SHARED_X: the FFN input) or one row per
// slot (the down projection's input).
// Per invocation the only loop that grows with the sizes walks cols / (32 WG) blocks (cols /
// (8 WG) for f32/f16/bf16); the rest is unrolled: far from lavapipe's 65,535-iteration limit.
// LANES (per token on lavapipe, with WEIGHTS_TEXEL): each invocation computes ROWS whole rows
// instead, see main below.
//
// GROUPED (prompts): the products as matrix-matrix tiles over the tokens routed to each
// expert, which moe_group and moe_tiles (moe_router.comp) list per slot and expert. Per token,
// MATVEC reads all its experts' weights; here a workgroup decodes a weight block once for TN
// tokens per invocation, as matmul.comp's MATMUL shape does. Workgroup z is (slot k_first + k,
// entry j of the slot's tile list: an expert and a tile of its list; past the slot's tiles
// it returns); each invocation computes TM rows x TN listed tokens, a workgroup
// WG_ROWS x (WG / WG_ROWS) invocations. Each (token, slot) is one list entry, so with SUM one
// dispatch per slot (k_first) keeps the additions to y[t] in order and free of races: slot 0
// stores weight * product (or adds it with `accumulate`), later slots add theirs.
#extension GL_GOOGLE_include_directive : require
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif
#include "common.glsl"

layout(constant_id = 0) const uint WG = 32;
layout(constant_id = 1) const uint ROWS = 1;          // expert rows per workgroup (LANES: per invocation)
layout(constant_id = 2) const uint NK = 1;            // slots: experts used per token
layout(constant_id = 3) const bool W_ALIGNED = false; // see load_block (blocks.glsl)
layout(constant_id = 4) const bool X_VEC4 = false;    // x rows start 16-byte aligned
layout(constant_id = 5) const bool SHARED_X = false;  // one x row per token for all slots
layout(constant_id = 6) const bool SUM = false;       // weighted sum of the slots
#ifdef GROUPED
layout(constant_id = 7) const uint WG_ROWS = 8; // invocations along rows
layout(constant_id = 8) const uint TM = 8;      // rows per invocation
layout(constant_id = 9) const uint TN = 8;      // listed tokens per invocation
layout(std430, binding = 4) readonly buffer Groups { uint groups[]; }; // see moe_group
#endif
#ifdef LANES
layout(constant_id = 7) const bool GLU = false; // gate and up stacks end to end: silu(gate) * up
#endif

#ifdef WEIGHTS_TEXEL
// GROUPED and LANES on lavapipe: weights and x through storage texel buffers, as matmul.comp's _tx
// variants read them (an imageLoad there is a gather; a storage-buffer load, a loop over the
// lanes).
layout(binding = 8, r32ui) uniform readonly uimageBuffer wtex; // see blocks.glsl
layout(binding = 9, rgba32ui) uniform readonly uimageBuffer xtex;
float xs_at(uint i) { return uintBitsToFloat(imageLoad(xtex, int(i >> 2))[i & 3u]); }
vec4 x4_at(uint i) { return uintBitsToFloat(imageLoad(xtex, int(i))); } // floats 4i .. 4i+3
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; }; // see blocks.glsl
layout(std430, binding = 1) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer XS { float xs[]; };
float xs_at(uint i) { return xs[i]; }
vec4 x4_at(uint i) { return x4[i]; }
#endif
layout(std430, binding = 2) readonly buffer Route { uint route[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint rows;        // rows of one expert
    uint cols;
    uint row_bytes;
    uint w_skip;      // bytes from the weight binding's start to the chunk's first row
    uint chunk_begin; // first stacked row held by this chunk
    uint chunk_rows;
    uint n_expert;
    uint x_skip;      // floats from the x binding's start to token 0
    uint x_stride;    // floats from one token's x to the next
    uint r_skip;      // words from the route binding's start to token 0
    uint y_skip;      // floats from the y binding's start to token 0
    uint y_stride;    // floats from one token's y to the next
    uint accumulate;
    // GROUPED
    uint g_skip;       // words from the groups binding's start to the table
    uint group_tokens; // tokens the table lists (the length of each list)
    uint max_tiles;    // room per slot in the table's tile list (workgroups along z per slot)
    uint k_first;      // the first slot of this dispatch
    uint up_rows;      // LANES with GLU: stacked rows from a gate row to its up row
} p;

#include "blocks.glsl"

const uint NR = NK * ROWS; // outputs of a workgroup before the slots are summed

// x[t][slot k][c .. c+3] (zeros past the end of the row, which only plain types can reach).
vec4 load_x4(uint t, uint k, uint c)
{
    uint i = p.x_skip + t * p.x_stride + (SHARED_X ? 0u : k * p.cols) + c;
#ifdef PLAIN_WEIGHTS
    if (!W_ALIGNED && c + 4u > p.cols) {
        vec4 v = vec4(0.0);
        [[unroll]] for (uint j = 0u; j < 4u; j++)
            if (c + j < p.cols)
                v[j] = xs_at(i + j);
        return v;
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

// Where row `row` of expert e lies in this dispatch's chunk of stacked rows, `extra` stacked
// rows further on (GLU's up stack; else 0): the byte offset, clamped into the chunk, and
// whether the chunk holds it (rows past the expert's last never are).
uint expert_row_at(uint e, uint row, uint extra, out bool held)
{
    uint local = e * p.rows + min(row, p.rows - 1u) - p.chunk_begin; // wraps below the chunk
    held = local < p.chunk_rows && row < p.rows && local + extra < p.chunk_rows;
    return p.w_skip + min(local + extra, p.chunk_rows - 1u) * p.row_bytes;
}

#ifdef GROUPED

void main()
{
    const uint TILE = WG / WG_ROWS * TN; // listed tokens per workgroup
    uint tid = gl_LocalInvocationID.x;
    uint k = p.k_first + gl_WorkGroupID.z / p.max_tiles, j = gl_WorkGroupID.z % p.max_tiles;
    uint lists = NK * p.n_expert, tiles_at = p.g_skip + lists * (1u + p.group_tokens);
    if (j >= groups[tiles_at + k])
        return; // past slot k's tiles
    uint entry = groups[tiles_at + NK + k * p.max_tiles + j];
    uint e = entry >> 16, tile = entry & 0xffffu;
    uint list = k * p.n_expert + e;
    uint n = groups[p.g_skip + list];
    uint i0 = tile * TILE + (tid / WG_ROWS) * TN;
    uint row0 = linear_group_id() * (WG_ROWS * TM) + (tid % WG_ROWS) * TM;
    if (row0 >= p.rows || i0 >= n)
        return; // no barriers below

    // Where each row of expert e lives in this chunk, if it does.
    uint at[TM];
    bool held[TM];
    bool any = false;
    [[unroll]] for (uint r = 0u; r < TM; r++) {
        at[r] = expert_row_at(e, row0 + r, 0u, held[r]);
        any = any || held[r];
    }
    if (!any)
        return;
    uint first = p.g_skip + lists + list * p.group_tokens;
    uint toks[TN];
    [[unroll]] for (uint t = 0u; t < TN; t++)
        toks[t] = groups[first + min(i0 + t, n - 1u)];

    float acc[TM * TN];
    [[unroll]] for (uint j = 0u; j < TM * TN; j++)
        acc[j] = 0.0;
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    for (uint b = 0u; b < n_blocks; b++) {
        uint col = b * BLOCK_WEIGHTS;
        wblock blk[TM];
        [[unroll]] for (uint r = 0u; r < TM; r++)
            blk[r] = load_block(at[r] + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
        [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
            vec4 wv[TM];
            [[unroll]] for (uint r = 0u; r < TM; r++)
                wv[r] = block_vec4(blk[r], g);
            [[unroll]] for (uint t = 0u; t < TN; t++) {
                vec4 xv = load_x4(toks[t], k, col + 4u * g);
                [[unroll]] for (uint r = 0u; r < TM; r++)
                    acc[r * TN + t] += dot(wv[r], xv);
            }
        }
    }

    [[unroll]] for (uint t = 0u; t < TN; t++) {
        if (i0 + t >= n)
            continue;
        uint tok = toks[t];
        float wk = SUM ? uintBitsToFloat(route[p.r_skip + tok * 2u * NK + NK + k]) : 1.0;
        uint base = p.y_skip + tok * p.y_stride + (SUM ? 0u : k * p.rows) + row0;
        [[unroll]] for (uint r = 0u; r < TM; r++) {
            if (held[r]) {
                float v = wk * acc[r * TN + t];
                y[base + r] = p.accumulate != 0u ? y[base + r] + v : v;
            }
        }
    }
}

#elif defined(LANES)

// Per token on lavapipe, with WEIGHTS_TEXEL: each invocation computes ROWS whole rows of every
// slot's expert in turn (a workgroup WG * ROWS rows of token z), as matmul.comp's texel
// MATVEC does: no reduction across invocations, which costs more than a dozen blocks there.
// The weighted sum is summed in registers over the slots, so one dispatch per chunk serves
// it; as in the shape below, a chunk's dispatch after the first adds only the rows it holds.
// GLU: the weight is a gate stack and then an up stack (up_rows further on, in this chunk);
// each output row reads both and stores silu(gate) * up (a MoE MLP's gate, up and SwiGLU).
const uint NW = GLU ? 2u : 1u; // weight rows per output row

void main()
{
    uint row0 = (linear_group_id() * WG + gl_LocalInvocationID.x) * ROWS;
    uint t = gl_WorkGroupID.z;
    if (row0 >= p.rows)
        return;
    uint rbase = p.r_skip + t * 2u * NK;
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    float total[ROWS];
    bool here[ROWS];
    [[unroll]] for (uint r = 0u; r < ROWS; r++) {
        total[r] = 0.0;
        here[r] = false;
    }
    [[unroll]] for (uint k = 0u; k < NK; k++) {
        uint e = min(route[rbase + k], p.n_expert - 1u);
        uint at[ROWS * NW]; // row r's gate (or only) row at r, its up row at ROWS + r
        bool held[ROWS];
        bool any = false;
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            at[r] = expert_row_at(e, row0 + r, 0u, held[r]);
            if (GLU) // held: the up row is here too (and so the gate row)
                at[ROWS + r] = expert_row_at(e, row0 + r, p.up_rows, held[r]);
            any = any || held[r];
        }
        if (!any)
            continue;
        float acc[ROWS * NW];
        [[unroll]] for (uint i = 0u; i < ROWS * NW; i++)
            acc[i] = 0.0;
        for (uint b = 0u; b < n_blocks; b++) {
            uint col = b * BLOCK_WEIGHTS;
            wblock blk[ROWS * NW];
            [[unroll]] for (uint i = 0u; i < ROWS * NW; i++)
                blk[i] = load_block(at[i] + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
#ifdef PLAIN_WEIGHTS
            [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
                vec4 xv = load_x4(t, k, col + 4u * g);
                [[unroll]] for (uint i = 0u; i < ROWS * NW; i++)
                    acc[i] += dot(block_q4(blk[i], g), xv);
            }
#else
            // Quants times x, then the block's scale (and offset times sum(x)) once per row.
            float qdot[ROWS * NW];
            [[unroll]] for (uint i = 0u; i < ROWS * NW; i++)
                qdot[i] = 0.0;
            float xsum = 0.0;
            [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
                vec4 xv = load_x4(t, k, col + 4u * g);
                xsum += (xv.x + xv.y) + (xv.z + xv.w);
                [[unroll]] for (uint i = 0u; i < ROWS * NW; i++)
                    qdot[i] += dot(block_q4(blk[i], g), xv);
            }
            [[unroll]] for (uint i = 0u; i < ROWS * NW; i++) {
#ifdef BLOCK_HAS_OFFSET
                acc[i] += blk[i].d * qdot[i] + blk[i].m * xsum;
#else
                acc[i] += blk[i].d * qdot[i];
#endif
            }
#endif
        }
        if (GLU) {
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                float gate = acc[r];
                acc[r] = gate / (1.0 + exp(-gate)) * acc[ROWS + r]; // as activation.comp's swiglu
            }
        }
        if (SUM) {
            float wk = uintBitsToFloat(route[rbase + NK + k]);
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                if (held[r]) {
                    total[r] += wk * acc[r];
                    here[r] = true;
                }
            }
        } else {
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                if (held[r]) {
                    uint i = p.y_skip + t * p.y_stride + k * p.rows + row0 + r;
                    y[i] = p.accumulate != 0u ? y[i] + acc[r] : acc[r];
                }
            }
        }
    }
    if (SUM) {
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            uint i = p.y_skip + t * p.y_stride + row0 + r;
            if (row0 + r >= p.rows)
                continue;
            if (p.accumulate == 0u)
                y[i] = total[r];
            else if (here[r])
                y[i] += total[r];
        }
    }
}

#else // matrix-vector per token

// Partial sums of the invocations (of the subgroups with USE_SUBGROUP).
shared float partial[NR * WG];

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint row0 = linear_group_id() * ROWS;
    uint t = gl_WorkGroupID.z;
    uint rbase = p.r_skip + t * 2u * NK;
    if (row0 >= p.rows)
        return; // whole workgroup: the barrier below stays uniform

    // Where each (slot, row) lives in this chunk, if it does.
    uint at[NR];
    bool held[NR];
    bool any = false;
    [[unroll]] for (uint k = 0u; k < NK; k++) {
        uint e = min(route[rbase + k], p.n_expert - 1u);
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            at[k * ROWS + r] = expert_row_at(e, row0 + r, 0u, held[k * ROWS + r]);
            any = any || held[k * ROWS + r];
        }
    }
    if (!any) { // none of this token's experts is here (uniform over the workgroup)
        if (SUM && p.accumulate == 0u && tid == 0u) {
            [[unroll]] for (uint r = 0u; r < ROWS; r++)
                if (row0 + r < p.rows)
                    y[p.y_skip + t * p.y_stride + row0 + r] = 0.0;
        }
        return;
    }

    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    float acc[NR];
    [[unroll]] for (uint j = 0u; j < NR; j++)
        acc[j] = 0.0;

    for (uint b = tid; b < n_blocks; b += WG) {
        uint col = b * BLOCK_WEIGHTS;
        wblock blk[NR];
        [[unroll]] for (uint j = 0u; j < NR; j++)
            blk[j] = load_block(at[j] + b * BLOCK_BYTES, valid_weights(col), W_ALIGNED);
#ifdef PLAIN_WEIGHTS
#define qdot acc // d = 1 and no offset: accumulate directly
#else
        float qdot[NR];
        [[unroll]] for (uint j = 0u; j < NR; j++)
            qdot[j] = 0.0;
#endif
#ifdef BLOCK_HAS_OFFSET
        float xsum[NK];
        [[unroll]] for (uint k = 0u; k < NK; k++)
            xsum[k] = 0.0;
#endif
        [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
            vec4 x0 = load_x4(t, 0u, col + 4u * g);
            [[unroll]] for (uint k = 0u; k < NK; k++) {
                vec4 xv = SHARED_X || k == 0u ? x0 : load_x4(t, k, col + 4u * g);
#ifdef BLOCK_HAS_OFFSET
                xsum[k] += (xv.x + xv.y) + (xv.z + xv.w);
#endif
                [[unroll]] for (uint r = 0u; r < ROWS; r++)
                    qdot[k * ROWS + r] += dot(block_q4(blk[k * ROWS + r], g), xv);
            }
        }
#ifdef PLAIN_WEIGHTS
#undef qdot
#else
        [[unroll]] for (uint k = 0u; k < NK; k++)
            [[unroll]] for (uint r = 0u; r < ROWS; r++)
#ifdef BLOCK_HAS_OFFSET
                acc[k * ROWS + r] += blk[k * ROWS + r].d * qdot[k * ROWS + r] + blk[k * ROWS + r].m * xsum[k];
#else
                acc[k * ROWS + r] += blk[k * ROWS + r].d * qdot[k * ROWS + r];
#endif
#endif
    }

    // Reduce over the workgroup; afterwards invocation 0 holds the sums in acc.
#ifdef USE_SUBGROUP
    [[unroll]] for (uint j = 0u; j < NR; j++)
        acc[j] = subgroupAdd(acc[j]);
    if (gl_NumSubgroups > 1u) {
        if (subgroupElect()) {
            [[unroll]] for (uint j = 0u; j < NR; j++)
                partial[j * WG + gl_SubgroupID] = acc[j];
        }
        barrier();
        if (tid == 0u) {
            [[unroll]] for (uint j = 0u; j < NR; j++) {
                float s = 0.0;
                for (uint i = 0u; i < gl_NumSubgroups; i++)
                    s += partial[j * WG + i];
                acc[j] = s;
            }
        }
    }
#else
    [[unroll]] for (uint j = 0u; j < NR; j++)
        partial[j * WG + tid] = acc[j];
    barrier();
    if (tid == 0u) {
        [[unroll]] for (uint j = 0u; j < NR; j++) {
            float s = 0.0;
            for (uint i = 0u; i < WG; i++)
                s += partial[j * WG + i];
            acc[j] = s;
        }
    }
#endif
    if (tid != 0u)
        return;

    if (SUM) {
        [[unroll]] for (uint r = 0u; r < ROWS; r++) {
            if (row0 + r >= p.rows)
                continue;
            float s = 0.0;
            bool here = false;
            [[unroll]] for (uint k = 0u; k < NK; k++) {
                if (held[k * ROWS + r]) {
                    s += uintBitsToFloat(route[rbase + NK + k]) * acc[k * ROWS + r];
                    here = true;
                }
            }
            uint i = p.y_skip + t * p.y_stride + row0 + r;
            if (p.accumulate == 0u)
                y[i] = s;
            else if (here)
                y[i] += s;
        }
    } else {
        [[unroll]] for (uint k = 0u; k < NK; k++) {
            [[unroll]] for (uint r = 0u; r < ROWS; r++) {
                if (held[k * ROWS + r]) {
                    uint i = p.y_skip + t * p.y_stride + k * p.rows + row0 + r;
                    y[i] = p.accumulate != 0u ? y[i] + acc[k * ROWS + r] : acc[k * ROWS + r];
                }
            }
        }
    }
}

#endif
