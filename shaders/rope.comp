#version 450
// Rotary position embedding, in place on x [n_tokens][n_heads][head_dim], one invocation per
// rotated pair. Token t sits at position params.n_past + t0 + t. As ggml computes it:
// theta_i = freq_scale * (pos * theta_scale^i) with theta_scale = base^(-2/n_rot) (passed
// from the host, powf) and the power formed by repeated float multiplication, so the angle
// is bit-identical to ggml's. Pairs: (2i, 2i+1) in adjacent mode, (i, i + n_rot/2) in half
// mode; dims from n_rot on pass through.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

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

// sin and cos of a float angle, accurate for large angles: GPU sin/cos are specified only
// on [-pi, pi], so the angle is first reduced by 2 pi in four parts (Cody-Waite). The
// first three parts have at most 11 significant bits, so k * part is exact for k < 2^13
// (angles up to ~51000 rad) and each subtraction is exact.
void sincos_reduced(float a, out float s, out float c)
{
    const float inv_2pi = 0.15915494309189535;
    const float c1 = 6.28125;
    const float c2 = 0.0019350051879882812;
    const float c3 = 3.019813448190689e-07;
    const float c4 = 1.0253376273028358e-11;
    precise float k = round(a * inv_2pi);
    precise float r = a - k * c1;
    r = r - k * c2;
    r = r - k * c3;
    r = r - k * c4;
    s = sin(r);
    c = cos(r);
}

void main()
{
    uint n_half = p.n_rot / 2;
    uint id = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (id >= p.n_tokens * p.n_heads * n_half)
        return;
    uint i = id % n_half;
    uint row = id / n_half; // token * n_heads + head
    uint t = row / p.n_heads;
    precise float theta = float(params.n_past + p.t0 + t);
    for (uint k = 0; k < i; k++)
        theta = theta * p.theta_scale;
    theta = p.freq_scale * theta;
    float s, c;
    sincos_reduced(theta, s, c);
    uint base = p.x_shift + row * p.head_dim;
    uint i0 = p.mode == 0 ? base + 2 * i : base + i;
    uint i1 = p.mode == 0 ? i0 + 1 : i0 + n_half;
    float x0 = x[i0], x1 = x[i1];
    x[i0] = x0 * c - x1 * s;
    x[i1] = x0 * s + x1 * c;
}
