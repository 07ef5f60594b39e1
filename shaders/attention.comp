#version 450
// Causal attention with an f16 KV cache, one workgroup per (token, query head).
// Token t (position pos = params.n_past + t0 + t) attends positions [begin, pos] (begin = 0,
// or pos + 1 - window with a sliding window); position k lives in cache row k % n_ctx, so a
// windowed model keeps a rolling cache of window + batch - 1 rows; query head h reads KV head
// h / (n_heads / n_heads_kv). scores = scale * q.k (+ ALiBi slope_h * (key - pos)).
//
// Keys go in tiles of KPT * WG (WG = the workgroup size): the tile's scores land in
// shared memory, the tile max is a workgroup reduction, the running max/sum are rescaled
// once per tile (online softmax, as flash attention), and the output columns accumulate
// p * V. For the output, invocation lid owns vec4 column c = lid % D4 for the key subset
// g = lid / D4 (G = WG / D4 subsets); the subsets are added at the end. Several keys per
// invocation per tile keep the reduction and its barriers (costly on llvmpipe) rare.
// Per invocation and tile the loops run about KPT * D4 (scores) + KPT * WG / G (values) +
// the reduction's trips, so a context of n_ctx keys costs ~ n_ctx / WG * 2 D4 trips: far
// below llvmpipe's 65,535 cut for n_ctx 8192, head_dim 128 (~6,000 with the subgroup
// variant); the host refuses shapes that would get near it (measured cut: ~90,000 keys).
//  USE_SUBGROUP: a subgroup computes each score (lanes split the columns, subgroupAdd),
//                so neighbouring lanes read neighbouring K memory;
//  otherwise one invocation per key scores the whole row.
//  STORAGE16: the cache is read as f16vec4 (16-bit storage); otherwise as uvec2 pairs
//             unpacked with unpackHalf2x16.
//  PREFILL:   for prompts, a different shape: one invocation per query token, a workgroup
//             holds WG consecutive tokens of one head. Each key row is read once per
//             workgroup and used by all its queries (the rows above read it once per query),
//             the query and its output accumulator live in registers (D4 vec4 each, D4 a
//             specialization constant, head_dim <= 128) and keys go in chunks of KC with
//             one online-softmax rescale per chunk. No shared memory and no barriers. Keys
//             past a query's position (or before its window) are masked with selects; the
//             key loop is the only one whose length depends on the sizes.
//  LANES:     decode on CPUs (with PREFILL's code): a workgroup is one subgroup per (token,
//             query head), lane j takes keys j, j + WG, ... with its own online softmax, and
//             the lanes' (max, sum, accumulator) are combined with subgroup operations. No
//             shared memory and no barriers, which on llvmpipe cost more than the keys.
//  KV_TEXEL:  (with LANES or PREFILL and ROLLED, the CPU shapes) the caches are read
//             through texel views, each texel of a row once (load_row_texels).
// Split keys (p.n_splits > 1, every shape; flash decoding): the keys a workgroup walks (a row's,
// or PREFILL's block's) go in n_splits equal ranges, a workgroup each, which store their
// unnormalised output, max and sum per row in the partials; MERGE, a second dispatch, combines
// a row's ranges: m = max m_s, out = sum_s exp(m_s - m) acc_s / sum_s exp(m_s - m) l_s. On
// GPUs a decode step has only n_tokens * n_heads rows, too few workgroups to fill the device
// while each walks the whole context; on llvmpipe ranges keep each invocation's loops clear
// of its cut at any context length.
//  MERGE:     that second dispatch, one workgroup per (token, query head).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif

#define MAX_D4 64 // head_dim <= 256
#define KPT 4     // keys per invocation per tile

layout(std430, binding = 0) readonly buffer Q { float q[]; };
#if defined(KV_TEXEL)
// The caches through RGBA32UI texel views (lavapipe gathers those, where a storage-buffer
// load is a loop over the lanes): a texel holds two vec4s of f16; k_skip / v_skip (push
// constants) are the caches' distance from their view's start in vec4s. Rows are read whole
// (load_row_texels, with the LANES and PREFILL code).
layout(binding = 8, rgba32ui) uniform readonly uimageBuffer ktex;
layout(binding = 9, rgba32ui) uniform readonly uimageBuffer vtex;
#elif defined(STORAGE16)
layout(std430, binding = 1) readonly buffer K { f16vec4 k4[]; };
layout(std430, binding = 2) readonly buffer V { f16vec4 v4[]; };
vec4 load_k(uint i) { return vec4(k4[i]); }
vec4 load_v(uint i) { return vec4(v4[i]); }
#else
layout(std430, binding = 1) readonly buffer K { uvec2 k4[]; };
layout(std430, binding = 2) readonly buffer V { uvec2 v4[]; };
vec4 load_k(uint i) { uvec2 u = k4[i]; return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y)); }
vec4 load_v(uint i) { uvec2 u = v4[i]; return vec4(unpackHalf2x16(u.x), unpackHalf2x16(u.y)); }
#endif
layout(std430, binding = 3) readonly buffer Params {
    uint n_past;
    uint n_tokens_step;
    uint pad0, pad1;
} params;
layout(std430, binding = 4) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n_tokens;   // tokens in this dispatch
    uint n_heads;
    uint n_heads_kv;
    uint head_dim;
    uint n_ctx;      // rows of the cache (position k is in row k % n_ctx)
    float scale;
    uint q_shift;    // element index of this dispatch's first token in the q binding
    uint out_shift;  // same for out
    uint t0;         // batch index of this dispatch's first token
    uint window;     // 0: none; else keys with pos - key < window
    uint alibi;      // 0: none
    float alibi_e0;  // log2 of ggml's m0 = -max_bias / n_head_log2
    float alibi_e1;  // log2 of m1 = -max_bias / 2 / n_head_log2
    uint n_head_log2;
    uint k_skip, v_skip; // KV_TEXEL
    uint n_splits;       // key ranges per row (see Split keys above); 0 or 1: one
} p;

// Per (row, split): head_dim floats of unnormalised output, then the range's max and sum.
layout(std430, binding = 5) buffer Partials { float partial[]; };

// Range `split` of n_splits equal ranges of the keys [begin, end); the last may be empty.
uvec2 split_range(uint begin, uint end, uint split, uint n_splits)
{
    uint n_keys = end - begin, per = (n_keys + n_splits - 1u) / n_splits;
    uint b = begin + min(split * per, n_keys);
    return uvec2(b, min(b + per, end));
}

#if defined(PREFILL) || defined(LANES)
#ifdef LANES
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#endif

layout(constant_id = 1) const uint D4 = 16; // head_dim / 4
// Loops over the head's columns are unrolled (qv and acc stay in registers). The loops over
// a chunk's keys are too, except in the CPU decode shape (LANES, ROLLED), where unrolling
// both took llvmpipe seconds to compile per head size. The CPU prompt shape unrolls them:
// its attention took 600 instead of 912 ms for a 512-token prompt of a 12-layer, 64-dim-head
// model, and a cold compile of test_ops_attention under GPU-assisted validation 143 s.
#if defined(ROLLED) && !defined(PREFILL)
#define HEAD_LOOP [[unroll]]
#define KEY_LOOP [[dont_unroll]]
#else
#define HEAD_LOOP [[unroll]]
#define KEY_LOOP [[unroll]]
#endif
#define KC 4 // keys per chunk: one rescale of the accumulator per chunk

#ifdef KV_TEXEL
// Whether every row starts at an even vec4, a texel's start (D4, the cache row and the views'
// skips all even: the host knows). Then a row is its D4 / 2 texels; otherwise the D4 / 2 + 1
// that cover it, as a row may start in a texel's second half. Reading the one texel fewer
// and dropping the selects took decode attention at 1,056 positions (12 heads of 64) from
// 10.5-11.8 to 8.4-8.8 ms a step on lavapipe.
layout(constant_id = 2) const bool ROWS_EVEN = false;
const uint ROW_TEXELS = ROWS_EVEN ? D4 / 2u : D4 / 2u + 1u;
// A cache row's D4 vec4s from vec4 index i of the K (or V) view on, each texel read once.
// Returns whether it starts in a texel's second half. The last texel, unused when it does
// not, is clamped into the view.
bool load_row_texels(bool v_cache, uint i, out uvec4 row[ROW_TEXELS])
{
    uint last = uint(v_cache ? imageSize(vtex) : imageSize(ktex)) - 1u;
    HEAD_LOOP for (uint t = 0u; t < ROW_TEXELS; t++) {
        int at = int(min((i >> 1) + t, last));
        row[t] = v_cache ? imageLoad(vtex, at) : imageLoad(ktex, at);
    }
    return !ROWS_EVEN && (i & 1u) != 0u;
}
// vec4 c of the row: half (c + odd) % 2 of texel (c + odd) / 2.
vec4 row_vec4(uvec4 row[ROW_TEXELS], bool odd, uint c)
{
    uvec2 w = odd ? ((c & 1u) == 0u ? row[c >> 1].zw : row[(c + 1u) >> 1].xy)
                  : ((c & 1u) == 0u ? row[c >> 1].xy : row[c >> 1].zw);
    return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
}
#endif

float alibi_slope(uint h)
{
    // ggml's ALiBi slope: m0^(h+1) for the first n_head_log2 heads, m1^(2(h-n)+1) after.
    if (p.alibi == 0u)
        return 0.0;
    return h < p.n_head_log2 ? exp2(p.alibi_e0 * float(h + 1u))
                             : exp2(p.alibi_e1 * float(2u * (h - p.n_head_log2) + 1u));
}

// Online softmax of the query qv (already scaled) at position pos over the keys key_begin,
// key_begin + stride, ... below keys_end; those before own_begin or after pos are masked.
// m, l and acc carry the running max, sum of exp(score - m) and sum of exp(score - m) * v.
void attend(vec4 qv[D4], uint key_begin, uint keys_end, uint stride, uint own_begin, uint pos, float slope,
            uint row4, uint kv_base, inout float m, inout float l, inout vec4 acc[D4])
{
    for (uint key0 = key_begin; key0 < keys_end; key0 += KC * stride) {
        float s[KC];
        bool ok[KC];
        float chunk_max = -1.0 / 0.0;
        KEY_LOOP for (uint j = 0u; j < KC; j++) {
            uint key = key0 + j * stride;
            uint kb = (min(key, keys_end - 1u) % p.n_ctx) * row4 + kv_base;
            float d = 0.0;
#ifdef KV_TEXEL
            uvec4 row[ROW_TEXELS];
            bool odd = load_row_texels(false, kb + p.k_skip, row);
            HEAD_LOOP for (uint c = 0u; c < D4; c++)
                d += dot(qv[c], row_vec4(row, odd, c));
#else
            HEAD_LOOP for (uint c = 0u; c < D4; c++)
                d += dot(qv[c], load_k(kb + c));
#endif
            ok[j] = key >= own_begin && key <= pos && key < keys_end; // (a split range ends before pos)
            s[j] = d + slope * (float(key) - float(pos));
            chunk_max = ok[j] ? max(chunk_max, s[j]) : chunk_max;
        }
        float m_new = max(m, chunk_max);
        // While nothing was valid (m = -inf) acc and l are 0: any finite factor will do.
        float rescale = m == m_new ? 1.0 : (isinf(m) ? 0.0 : exp(m - m_new));
        l *= rescale;
        HEAD_LOOP for (uint c = 0u; c < D4; c++)
            acc[c] *= rescale;
        KEY_LOOP for (uint j = 0u; j < KC; j++) {
            float pj = ok[j] ? exp(s[j] - m_new) : 0.0;
            l += pj;
            uint vb = (min(key0 + j * stride, keys_end - 1u) % p.n_ctx) * row4 + kv_base;
#ifdef KV_TEXEL
            uvec4 row[ROW_TEXELS];
            bool odd = load_row_texels(true, vb + p.v_skip, row);
            HEAD_LOOP for (uint c = 0u; c < D4; c++)
                acc[c] += pj * row_vec4(row, odd, c);
#else
            HEAD_LOOP for (uint c = 0u; c < D4; c++)
                acc[c] += pj * load_v(vb + c);
#endif
        }
        m = m_new;
    }
}

void store_head(uint t, uint h, vec4 acc[D4], float l)
{
    float inv = l > 0.0 ? 1.0 / l : 0.0;
    uint ob = p.out_shift + (t * p.n_heads + h) * p.head_dim;
    HEAD_LOOP for (uint c = 0u; c < D4; c++) {
        vec4 o = acc[c] * inv;
        result[ob + 4u * c] = o.x;
        result[ob + 4u * c + 1u] = o.y;
        result[ob + 4u * c + 2u] = o.z;
        result[ob + 4u * c + 3u] = o.w;
    }
}

// A range's unnormalised output, max and sum, for MERGE (slot: (token * n_heads + head) *
// n_splits + split).
void store_partial(uint slot, vec4 acc[D4], float m, float l)
{
    uint pb = slot * (p.head_dim + 2u);
    HEAD_LOOP for (uint c = 0u; c < D4; c++) {
        partial[pb + 4u * c] = acc[c].x;
        partial[pb + 4u * c + 1u] = acc[c].y;
        partial[pb + 4u * c + 2u] = acc[c].z;
        partial[pb + 4u * c + 3u] = acc[c].w;
    }
    partial[pb + p.head_dim] = m;
    partial[pb + p.head_dim + 1u] = l;
}

void load_query(uint t, uint h, out vec4 qv[D4])
{
    uint qb = p.q_shift + (t * p.n_heads + h) * p.head_dim;
    HEAD_LOOP for (uint c = 0u; c < D4; c++)
        qv[c] = vec4(q[qb + 4u * c], q[qb + 4u * c + 1u], q[qb + 4u * c + 2u], q[qb + 4u * c + 3u]) * p.scale;
}

#ifdef LANES

void main()
{
    const uint WG = gl_WorkGroupSize.x; // one subgroup (the host makes it so)
    uint n_splits = max(p.n_splits, 1u);
    uint group = linear_group_id();
    if (group >= p.n_tokens * p.n_heads * n_splits)
        return; // the whole workgroup
    uint item = group / n_splits, split = group % n_splits;
    uint lane = gl_LocalInvocationID.x;
    uint t = item / p.n_heads, h = item % p.n_heads;
    uint hk = h / (p.n_heads / p.n_heads_kv);
    uint pos = params.n_past + p.t0 + t;
    uint own_begin = p.window != 0u && pos + 1u > p.window ? pos + 1u - p.window : 0u;
    uvec2 keys = split_range(own_begin, pos + 1u, split, n_splits);
    vec4 qv[D4], acc[D4];
    load_query(t, h, qv);
    HEAD_LOOP for (uint c = 0u; c < D4; c++)
        acc[c] = vec4(0.0);
    float m = -1.0 / 0.0, l = 0.0;
    attend(qv, keys.x + lane, keys.y, WG, own_begin, pos, alibi_slope(h), p.n_heads_kv * D4, hk * D4, m, l, acc);
    // Unsplit, lane 0 always has a key (own_begin), so the maximum is finite; a split range
    // may be empty (m_all = -inf, every f 0).
    float m_all = subgroupMax(m);
    float f = isinf(m) ? 0.0 : exp(m - m_all);
    float l_all = subgroupAdd(l * f);
    HEAD_LOOP for (uint c = 0u; c < D4; c++)
        acc[c] = subgroupAdd(acc[c] * f);
    if (lane == 0u && n_splits > 1u)
        store_partial(group, acc, m_all, l_all);
    else if (lane == 0u)
        store_head(t, h, acc, l_all);
}

#else // PREFILL

void main()
{
    const uint WG = gl_WorkGroupSize.x;
    uint n_blocks = (p.n_tokens + WG - 1u) / WG;
    uint n_splits = max(p.n_splits, 1u);
    uint group = linear_group_id();
    if (group >= n_blocks * p.n_heads * n_splits)
        return;
    uint item = group / n_splits, split = group % n_splits;
    uint blk = item / p.n_heads, h = item % p.n_heads;
    uint first = blk * WG, last = min(first + WG, p.n_tokens) - 1u;
    uint t = first + gl_LocalInvocationID.x;
    bool has_token = t <= last;
    t = min(t, last); // idle lanes shadow the last token and store nothing
    uint hk = h / (p.n_heads / p.n_heads_kv);
    uint row4 = p.n_heads_kv * D4, kv_base = hk * D4;
    uint pos = params.n_past + p.t0 + t;
    uint own_begin = p.window != 0u && pos + 1u > p.window ? pos + 1u - p.window : 0u;
    // The keys any query of this workgroup needs (uniform over the workgroup).
    uint pos_first = params.n_past + p.t0 + first;
    uint keys_begin = p.window != 0u && pos_first + 1u > p.window ? pos_first + 1u - p.window : 0u;
    uint keys_end = params.n_past + p.t0 + last + 1u;
    // Split: this workgroup's range of those keys; a token may have none of its own in it.
    uvec2 keys = split_range(keys_begin, keys_end, split, n_splits);
    float slope = alibi_slope(h);

    vec4 qv[D4], acc[D4];
    load_query(t, h, qv);
    HEAD_LOOP for (uint c = 0u; c < D4; c++)
        acc[c] = vec4(0.0);
    float m = -1.0 / 0.0, l = 0.0;
    attend(qv, keys.x, keys.y, 1u, own_begin, pos, slope, row4, kv_base, m, l, acc);
    if (has_token && n_splits > 1u)
        store_partial((t * p.n_heads + h) * n_splits + split, acc, m, l);
    else if (has_token)
        store_head(t, h, acc, l);
}

#endif // LANES / PREFILL

#elif defined(MERGE)

void main()
{
    uint item = linear_group_id();
    if (item >= p.n_tokens * p.n_heads)
        return;
    const uint WG = gl_WorkGroupSize.x;
    uint n_splits = p.n_splits, stride = p.head_dim + 2u;
    uint pb = item * n_splits * stride;
    // Some range holds the row's own position, so m_all is finite; ranges without keys of
    // the row have m = -inf and weigh 0.
    float m_all = -1.0 / 0.0;
    for (uint s = 0u; s < n_splits; s++)
        m_all = max(m_all, partial[pb + s * stride + p.head_dim]);
    float l_all = 0.0;
    for (uint s = 0u; s < n_splits; s++) {
        float ms = partial[pb + s * stride + p.head_dim];
        l_all += isinf(ms) ? 0.0 : partial[pb + s * stride + p.head_dim + 1u] * exp(ms - m_all);
    }
    float inv = l_all > 0.0 ? 1.0 / l_all : 0.0;
    for (uint c = gl_LocalInvocationID.x; c < p.head_dim; c += WG) {
        float o = 0.0;
        for (uint s = 0u; s < n_splits; s++) {
            float ms = partial[pb + s * stride + p.head_dim];
            o += isinf(ms) ? 0.0 : partial[pb + s * stride + c] * exp(ms - m_all);
        }
        result[p.out_shift + item * p.head_dim + c] = o * inv;
    }
}

#else // one workgroup per (token, query head), or per (token, query head, key range)

shared vec4 q_sh[MAX_D4];
shared float score_sh[RED_MAX * KPT];
shared vec4 acc_sh[RED_MAX];
shared float sum_sh[RED_MAX];

void main()
{
    uint n_splits = max(p.n_splits, 1u);
    uint group = linear_group_id();
    if (group >= p.n_tokens * p.n_heads * n_splits)
        return; // whole workgroup: the barriers below stay uniform
    uint item = group / n_splits, split = group % n_splits;
    const uint WG = gl_WorkGroupSize.x;
    uint lid = gl_LocalInvocationID.x;
    uint t = item / p.n_heads, h = item % p.n_heads;
    uint hk = h / (p.n_heads / p.n_heads_kv);
    uint d4 = p.head_dim / 4;
    uint pos = params.n_past + p.t0 + t;
    uint kv_end = pos + 1;
    uint kv_begin = p.window != 0 && pos + 1 > p.window ? pos + 1 - p.window : 0;
    if (n_splits > 1u) { // this workgroup's range of the row's keys
        uvec2 keys = split_range(kv_begin, kv_end, split, n_splits);
        kv_begin = keys.x;
        kv_end = keys.y;
    }
    uint row4 = p.n_heads_kv * d4; // vec4s per cache row
    uint kv_base = hk * d4;

    // ggml's ALiBi slope: m0^(h+1) for the first n_head_log2 heads, m1^(2(h-n)+1) after.
    float slope = 0.0;
    if (p.alibi != 0)
        slope = h < p.n_head_log2 ? exp2(p.alibi_e0 * float(h + 1))
                                  : exp2(p.alibi_e1 * float(2 * (h - p.n_head_log2) + 1));

    uint qb = p.q_shift + item * p.head_dim;
    for (uint c = lid; c < d4; c += WG)
        q_sh[c] = vec4(q[qb + 4 * c], q[qb + 4 * c + 1], q[qb + 4 * c + 2], q[qb + 4 * c + 3]);
    barrier();

    uint n_groups = WG / d4;
    uint g = lid / d4, col = lid % d4;
    bool owns_col = g < n_groups;
    float m = -1.0 / 0.0; // running max of the scores seen
    float l = 0.0;        // this group's running sum of exp(score - m)
    vec4 acc = vec4(0.0); // this group's running sum of exp(score - m) * v

    for (uint key0 = kv_begin; key0 < kv_end; key0 += KPT * WG) {
        uint len = min(KPT * WG, kv_end - key0);
#ifdef USE_SUBGROUP
        for (uint j = gl_SubgroupID; j < len; j += gl_NumSubgroups) {
            uint kb = ((key0 + j) % p.n_ctx) * row4 + kv_base;
            float d = 0.0;
            for (uint c = gl_SubgroupInvocationID; c < d4; c += gl_SubgroupSize)
                d += dot(q_sh[c], load_k(kb + c));
            d = subgroupAdd(d);
            if (subgroupElect())
                score_sh[j] = d * p.scale + slope * (float(key0 + j) - float(pos));
        }
#else
        for (uint j = lid; j < len; j += WG) {
            uint kb = ((key0 + j) % p.n_ctx) * row4 + kv_base;
            float d = 0.0;
            for (uint c = 0; c < d4; c++)
                d += dot(q_sh[c], load_k(kb + c));
            score_sh[j] = d * p.scale + slope * (float(key0 + j) - float(pos));
        }
#endif
        barrier();
        float s_max = -1.0 / 0.0;
        for (uint j = lid; j < len; j += WG)
            s_max = max(s_max, score_sh[j]);
        float m_new = max(m, wg_max(s_max)); // finite: the tile holds a key
        float rescale = exp(m - m_new);      // 0 on the first tile (m = -inf)
        for (uint j = lid; j < len; j += WG)
            score_sh[j] = exp(score_sh[j] - m_new);
        barrier();
        l *= rescale;
        acc *= rescale;
        if (owns_col) {
            for (uint j = g; j < len; j += n_groups) {
                float pj = score_sh[j];
                l += pj;
                acc += pj * load_v(((key0 + j) % p.n_ctx) * row4 + kv_base + col);
            }
        }
        m = m_new;
        barrier();
    }

    if (owns_col) {
        acc_sh[lid] = acc;
        if (col == 0)
            sum_sh[g] = l;
    }
    barrier();
    if (lid < d4) {
        vec4 o = vec4(0.0);
        float total = 0.0;
        for (uint gg = 0; gg < n_groups; gg++) {
            o += acc_sh[gg * d4 + lid];
            total += sum_sh[gg];
        }
        if (n_splits > 1u) {
            uint pb = group * (p.head_dim + 2u);
            partial[pb + 4u * lid] = o.x;
            partial[pb + 4u * lid + 1u] = o.y;
            partial[pb + 4u * lid + 2u] = o.z;
            partial[pb + 4u * lid + 3u] = o.w;
            if (lid == 0u) {
                partial[pb + p.head_dim] = m;
                partial[pb + p.head_dim + 1u] = total;
            }
            return;
        }
        o = total > 0.0 ? o / total : vec4(0.0);
        uint ob = p.out_shift + item * p.head_dim + 4 * lid;
        result[ob] = o.x;
        result[ob + 1] = o.y;
        result[ob + 2] = o.z;
        result[ob + 3] = o.w;
    }
}

#endif
