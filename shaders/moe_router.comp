#version 450
// Mixture-of-experts routing, one invocation per token: probabilities = softmax of the
// token's n_expert router logits; the n_used most probable experts in order (ties: the lower
// expert index first); their weights = their probabilities, renormalised to sum to 1 when
// `normalize` (Mixtral: the same as a softmax over the chosen logits), times `scale`.
//
// Output per token, 2 * n_used words: the expert ids (uint), then the weights (f32 bits).
// Top-k is n_used scans for "the best expert ranked after the previous pick", so no array of
// n_expert flags is needed; per invocation the loops run (n_used + 2) * n_expert times
// (the host keeps that far below lavapipe's 65,535-iteration limit).
//
// GROUP (moe_group) and TILES (moe_tiles): the routed tokens listed by slot and expert, for
// op_moe_matmul's grouped products (prompts), in one table of words from g_skip:
//   counts [n_used][n_expert]            tokens whose k-th pick is e
//   lists  [n_used][n_expert][n_tokens]  their indices, in order (a token picks an expert at
//                                        most once, so a list holds at most n_tokens)
//   n_tiles [n_used]                     the non-empty tiles of `tile` tokens of slot k's lists
//   tiles  [n_used][max_tiles]           each as e << 16 | tile index
// The tile list lets the products' grid cover ceil(n_tokens / tile) + n_expert tiles per slot
// instead of every list at its longest: on lavapipe the empty workgroups of such a grid cost
// 40 % of a Mixtral-shaped prompt. moe_group runs one invocation per list (its loop walks
// the tokens once); moe_tiles one per slot (its loops walk the experts and the tiles).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#if defined(GROUP) || defined(TILES)

layout(std430, binding = 0) readonly buffer Route { uint route[]; };
layout(std430, binding = 1) buffer Groups { uint groups[]; };

layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_expert;
    uint n_used;
    uint r_skip;    // words from the route binding's start to token 0
    uint g_skip;    // words from the groups binding's start to the table
    uint tile;      // TILES: tokens per tile
    uint max_tiles; // TILES: room per slot in `tiles`
} p;

#ifdef GROUP
void main()
{
    uint list = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x; // k * n_expert + e
    if (list >= p.n_used * p.n_expert)
        return;
    uint k = list / p.n_expert, e = list % p.n_expert;
    uint first = p.g_skip + p.n_used * p.n_expert + list * p.n_tokens;
    uint n = 0u;
    for (uint t = 0u; t < p.n_tokens; t++) {
        // Ids past the last expert count as the last one, as in the products.
        if (min(route[p.r_skip + t * 2u * p.n_used + k], p.n_expert - 1u) == e) {
            groups[first + n] = t;
            n++;
        }
    }
    groups[p.g_skip + list] = n;
}
#else
void main()
{
    uint k = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (k >= p.n_used)
        return;
    uint tiles_at = p.g_skip + p.n_used * p.n_expert * (1u + p.n_tokens);
    uint n = 0u;
    for (uint e = 0u; e < p.n_expert; e++) {
        uint count = groups[p.g_skip + k * p.n_expert + e];
        for (uint j = 0u; j * p.tile < count; j++) {
            groups[tiles_at + p.n_used + k * p.max_tiles + n] = e << 16 | j;
            n++;
        }
    }
    groups[tiles_at + k] = n;
}
#endif

#else

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) writeonly buffer Route { uint route[]; };

layout(push_constant) uniform Push {
    uint n_tokens;
    uint n_expert;
    uint n_used;
    uint normalize;
    float scale;
    uint l_skip; // floats from the logits binding's start to token 0
    uint r_skip; // words from the route binding's start to token 0
} p;

const uint MAX_USED = 8u; // the host checks n_used <= this

void main()
{
    uint t = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (t >= p.n_tokens)
        return;
    uint base = p.l_skip + t * p.n_expert;
    float m = -1.0 / 0.0;
    for (uint i = 0u; i < p.n_expert; i++)
        m = max(m, logits[base + i]);
    float total = 0.0;
    for (uint i = 0u; i < p.n_expert; i++)
        total += exp(logits[base + i] - m);

    uint ids[MAX_USED];
    float e[MAX_USED];
    float chosen = 0.0;
    float prev_v = 1.0 / 0.0;
    int prev_i = -1;
    for (uint s = 0u; s < p.n_used; s++) {
        int best = -1;
        float bv = 0.0;
        for (uint i = 0u; i < p.n_expert; i++) {
            float v = logits[base + i];
            bool after_prev = v < prev_v || (v == prev_v && int(i) > prev_i);
            if (after_prev && (best < 0 || v > bv)) {
                best = int(i);
                bv = v;
            }
        }
        // No candidate left (NaN logits): expert 0 with weight 0.
        ids[s] = best < 0 ? 0u : uint(best);
        e[s] = best < 0 ? 0.0 : exp(bv - m);
        chosen += e[s];
        prev_v = bv;
        prev_i = best < 0 ? int(p.n_expert) : best;
    }
    float inv = p.scale / (p.normalize != 0u ? chosen : total);
    uint out_base = p.r_skip + t * 2u * p.n_used;
    for (uint s = 0u; s < p.n_used; s++) {
        route[out_base + s] = ids[s];
        route[out_base + p.n_used + s] = floatBitsToUint(e[s] * inv);
    }
}

#endif
