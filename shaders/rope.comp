#version 450
// Rotary position embedding, in place on x [n_tokens][n_heads][head_dim], one invocation per
// rotated pair. Token t sits at position params.n_past + t0 + t. The angle and rotation
// (ggml's float arithmetic) are in rope.glsl.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "rope.glsl"

layout(std430, binding = 0) buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Params {
    uint n_past;
    uint n_tokens_step;
    uint pad0, pad1;
} params;

layout(push_constant) uniform Push {
    uint n_tokens; // tokens in this dispatch
    uint n_heads;
    uint head_dim;
    uint n_rot;
    uint mode;     // 0 adjacent, 1 half
    float theta_scale;
    float freq_scale;
    uint x_shift;  // element index of this dispatch's first token in the x binding
    uint t0;       // batch index of this dispatch's first token
} p;

void main()
{
    uint n_half = p.n_rot / 2;
    uint id = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (id >= p.n_tokens * p.n_heads * n_half)
        return;
    uint i = id % n_half;
    uint row = id / n_half; // token * n_heads + head
    uint t = row / p.n_heads;
    float s, c;
    rope_sincos(params.n_past + p.t0 + t, i, p.theta_scale, p.freq_scale, s, c);
    uint base = p.x_shift + row * p.head_dim;
    uint i0 = p.mode == 0 ? base + 2 * i : base + i;
    uint i1 = p.mode == 0 ? i0 + 1 : i0 + n_half;
    vec2 y = rope_rotate(x[i0], x[i1], s, c);
    x[i0] = y.x;
    x[i1] = y.y;
}
