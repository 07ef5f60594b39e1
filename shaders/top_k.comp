#version 450
// The K best-ranked entries of a logits row, so that the host can sample (greedy, top-k)
// from K candidates instead of reading the whole row back (op_top_k, ops_top_k.c).
// Rank, as lib/sampling.c's ranks_before: the higher logit first, the lower id first on equal
// logits (-0 equals +0). A NaN ranks first of all, so that a row holding one cannot pass for a
// good one: the host checks the best candidate and falls back to the whole row.
//
// Each workgroup sorts a chunk of WG * ITEMS entries in shared memory (bitonic sort, best
// first) and writes its first K as (value bits, id) pairs. A row longer than one chunk takes
// rounds: the next round reads those pairs (PAIRS_IN), until one workgroup is left. Past the
// input's end the chunk is padded with entries that rank below everything: id 0xffffffff,
// value -inf.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const uint K = 64;              // <= WG * ITEMS
layout(constant_id = 2) const bool PAIRS_IN = false;    // input: pairs of an earlier round
const uint ITEMS = 4;                                   // entries per invocation
const uint MAX_CHUNK = 1024;
// WG (constant 0) is a power of two up to MAX_CHUNK / ITEMS, so the chunk is one too.

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 0) readonly buffer PairsIn { uvec2 pairs_in[]; };
layout(std430, binding = 1) writeonly buffer PairsOut { uvec2 pairs_out[]; };

layout(push_constant) uniform Push {
    uint n;        // entries of the input
    uint in_skip;  // elements (floats or pairs) from the input binding's start to entry 0
    uint out_skip; // pairs from the output binding's start to workgroup 0's first
} p;

shared uint key_hi[MAX_CHUNK]; // the value, ordered as unsigned
shared uint key_lo[MAX_CHUNK]; // ~id: the lower id ranks higher

// A float's bits as an unsigned key in the float order; -0 as +0, every NaN above +inf.
uint value_key(uint bits)
{
    if ((bits & 0x7fffffffu) > 0x7f800000u)
        return 0xffffffffu; // NaN
    if (bits == 0x80000000u)
        bits = 0u;
    return (bits & 0x80000000u) != 0u ? ~bits : bits | 0x80000000u;
}

uint key_value(uint hi) // back to the float bits (a NaN stays a NaN; padding gives -inf)
{
    if (hi == 0u)
        return 0xff800000u;
    return (hi & 0x80000000u) != 0u ? hi & 0x7fffffffu : ~hi;
}

bool ranks_before(uint a, uint b)
{
    return key_hi[a] > key_hi[b] || (key_hi[a] == key_hi[b] && key_lo[a] > key_lo[b]);
}

void main()
{
    const uint CHUNK = gl_WorkGroupSize.x * ITEMS;
    uint tid = gl_LocalInvocationID.x, group = linear_group_id();
    [[unroll]] for (uint m = 0u; m < ITEMS; m++) {
        uint i = tid + m * gl_WorkGroupSize.x, e = group * CHUNK + i;
        uint hi = 0u, id = 0xffffffffu;
        uvec2 pair = uvec2(0u, 0xffffffffu); // padding
        if (e < p.n)
            pair = PAIRS_IN ? pairs_in[p.in_skip + e] : uvec2(floatBitsToUint(logits[p.in_skip + e]), e);
        if (pair.y != 0xffffffffu) { // an earlier round's padding stays padding
            hi = value_key(pair.x);
            id = pair.y;
        }
        key_hi[i] = hi;
        key_lo[i] = ~id;
    }
    barrier();
    // Bitonic sort, best first: runs of size k are merged, entry i with its partner i ^ j.
    for (uint k = 2u; k <= CHUNK; k <<= 1) {
        for (uint j = k >> 1; j > 0u; j >>= 1) {
            [[unroll]] for (uint m = 0u; m < ITEMS; m++) {
                uint i = tid + m * gl_WorkGroupSize.x, partner = i ^ j;
                // i < partner: i keeps the better one in runs sorted best first
                if (partner > i && ranks_before(partner, i) == ((i & k) == 0u)) {
                    uint h = key_hi[i], l = key_lo[i];
                    key_hi[i] = key_hi[partner];
                    key_lo[i] = key_lo[partner];
                    key_hi[partner] = h;
                    key_lo[partner] = l;
                }
            }
            barrier();
        }
    }
    for (uint i = tid; i < K; i += gl_WorkGroupSize.x)
        pairs_out[p.out_skip + group * K + i] = uvec2(key_value(key_hi[i]), ~key_lo[i]);
}
