#version 450
// Stores f32 rows src [n_tokens][width] as f16 into the KV cache: position
// params.n_past + t0 + t goes to row position % n_ctx (a rolling cache for windowed
// attention; the identity otherwise, as the host keeps positions below n_ctx).
//  STORAGE16: one invocation per element, float16_t storage (16-bit storage feature);
//  otherwise: one invocation per pair of elements, written as a uint with packHalf2x16
//  (width is even).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#ifdef STORAGE16
#extension GL_EXT_shader_16bit_storage : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#endif

layout(std430, binding = 0) readonly buffer Src { float src[]; };
#ifdef STORAGE16
layout(std430, binding = 1) writeonly buffer Cache { float16_t cache[]; };
#else
layout(std430, binding = 1) writeonly buffer Cache { uint cache[]; };
#endif
layout(std430, binding = 2) readonly buffer Params {
    uint n_past;
    uint n_tokens_step;
    uint pad0, pad1;
} params;

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
