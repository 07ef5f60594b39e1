#version 450
// Stores f32 rows src [n_tokens][width] as f16 into the KV cache: position
// params.n_past + t0 + t goes to row position % n_ctx (a rolling cache for windowed
// attention; the identity otherwise, as the host keeps positions below n_ctx).
//  STORAGE16: one invocation per element, float16_t storage (16-bit storage feature);
//  otherwise: one invocation per pair of elements, written as a uint with packHalf2x16
//  (width is even).
//  ROPE_KV: rope and both stores of a layer in one dispatch (op_rope_kv_store). Per token:
//  q's rotation pairs, rotated in place (one invocation owns a pair: it reads and writes
//  both); then k's elements (or pairs), rotated into the K cache, each computed from itself
//  and its rotation partner (k itself is not written, so there is no race); then v's, stored
//  as they are. Bit for bit what rope on q, rope on k and kv_store of k and v write.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#ifdef ROPE_KV
#include "rope.glsl"
#endif
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#define CACHE_T float16_t
#else
#define CACHE_T uint
#endif

#ifdef ROPE_KV
layout(std430, binding = 0) buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) writeonly buffer KCache { CACHE_T k_cache[]; };
layout(std430, binding = 4) writeonly buffer VCache { CACHE_T v_cache[]; };
#define PARAMS_BINDING 5
#else
layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) writeonly buffer Cache { CACHE_T cache[]; };
#define PARAMS_BINDING 2
#endif
layout(std430, binding = PARAMS_BINDING) readonly buffer Params {
    uint n_past;
    uint n_tokens_step;
    uint pad0, pad1;
} params;

#ifdef ROPE_KV
layout(push_constant) uniform Push {
    uint n_tokens;   // tokens in this dispatch
    uint n_heads;    // q heads; 0 = no q work
    uint n_heads_kv;
    uint head_dim;
    uint n_rot;      // 0 = no rotation
    uint mode;       // 0 adjacent, 1 half
    float theta_scale;
    float freq_scale;
    uint q_shift;    // element index of this dispatch's first token in each binding
    uint k_shift;
    uint v_shift;
    uint t0;         // batch index of this dispatch's first token
    uint n_ctx;      // rows of each cache
} p;

// Element e of k's row at token t (of this dispatch), rotated for position pos.
float k_rotated(uint t, uint e, uint pos)
{
    uint at = p.k_shift + t * p.n_heads_kv * p.head_dim + e;
    uint d = e % p.head_dim;
    if (d >= p.n_rot)
        return k[at];
    uint n_half = p.n_rot / 2;
    bool second = p.mode == 0 ? (d & 1u) != 0u : d >= n_half;
    uint i = p.mode == 0 ? d / 2 : (second ? d - n_half : d);
    uint step = p.mode == 0 ? 1u : n_half; // distance to the partner
    float s, c;
    rope_sincos(pos, i, p.theta_scale, p.freq_scale, s, c);
    if (second)
        return rope_rotate(k[at - step], k[at], s, c).y;
    return rope_rotate(k[at], k[at + step], s, c).x;
}

void main()
{
    uint id = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint n_half = p.n_rot / 2;
    uint width = p.n_heads_kv * p.head_dim;
#ifdef STORAGE16
    uint kv_items = width;
#else
    uint kv_items = width / 2;
#endif
    uint q_items = p.n_heads * n_half;
    uint per_token = q_items + 2 * kv_items;
    if (id >= p.n_tokens * per_token)
        return;
    uint t = id / per_token, r = id % per_token;
    uint pos = params.n_past + p.t0 + t;
    if (r < q_items) {
        uint i = r % n_half;
        uint base = p.q_shift + (t * p.n_heads + r / n_half) * p.head_dim;
        uint i0 = p.mode == 0 ? base + 2 * i : base + i;
        uint i1 = p.mode == 0 ? i0 + 1 : i0 + n_half;
        float s, c;
        rope_sincos(pos, i, p.theta_scale, p.freq_scale, s, c);
        vec2 y = rope_rotate(q[i0], q[i1], s, c);
        q[i0] = y.x;
        q[i1] = y.y;
        return;
    }
    r -= q_items;
    uint row = pos % p.n_ctx;
    if (r < kv_items) {
#ifdef STORAGE16
        k_cache[row * width + r] = float16_t(k_rotated(t, r, pos));
#else
        k_cache[row * kv_items + r] = packHalf2x16(vec2(k_rotated(t, 2 * r, pos),
                                                        k_rotated(t, 2 * r + 1, pos)));
#endif
        return;
    }
    r -= kv_items;
#ifdef STORAGE16
    v_cache[row * width + r] = float16_t(v[p.v_shift + t * width + r]);
#else
    uint e = p.v_shift + t * width + 2 * r;
    v_cache[row * kv_items + r] = packHalf2x16(vec2(v[e], v[e + 1]));
#endif
}

#else
layout(push_constant) uniform Push {
    uint n_tokens;  // tokens in this dispatch
    uint width;     // floats per row
    uint src_shift; // element index of this dispatch's first row in the src binding
    uint t0;        // batch index of this dispatch's first token
    uint n_ctx;     // rows of the cache
} p;

void main()
{
    uint id = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
#ifdef STORAGE16
    if (id >= p.n_tokens * p.width)
        return;
    uint t = id / p.width, c = id % p.width;
    uint row = (params.n_past + p.t0 + t) % p.n_ctx;
    cache[row * p.width + c] = float16_t(src[p.src_shift + id]);
#else
    uint half_width = p.width / 2;
    if (id >= p.n_tokens * half_width)
        return;
    uint t = id / half_width, c2 = id % half_width;
    uint row = (params.n_past + p.t0 + t) % p.n_ctx;
    uint e = p.src_shift + t * p.width + 2 * c2;
    cache[row * half_width + c2] = packHalf2x16(vec2(src[e], src[e + 1]));
#endif
}
#endif
