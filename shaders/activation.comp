#version 450
// Activations, one invocation per element:
//  OP_SWIGLU: out = silu(a) * b     OP_SILU: out = a / (1 + exp(-a))
//  OP_GELU:   out = 0.5 a (1 + tanh(sqrt(2/pi) a (1 + 0.044715 a^2)))  (ggml_gelu's tanh form)
//  OP_GELU_ERF: out = 0.5 a (1 + erf(a / sqrt(2)))                      (the exact form)
//  OP_RELU:   out = max(a, 0)
//  OP_CLAMP:  out = clamp(a, -bound, bound)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n;
    uint a_shift, b_shift, out_shift; // element index of this chunk's first element per binding
    float bound;                      // OP_CLAMP
} p;

float silu(float v)
{
    return v / (1.0 + exp(-v)); // exp overflow gives v / inf = -0, the right limit
}

float gelu(float v)
{
    const float sqrt_2_over_pi = 0.79788456080286535588;
    // tanh's argument is clamped: tanh(10) is 1 in float, and some tanh implementations
    // return NaN for huge arguments (inf / inf).
    float u = clamp(sqrt_2_over_pi * v * (1.0 + 0.044715 * v * v), -10.0, 10.0);
    return 0.5 * v * (1.0 + tanh(u));
}

// erf, which GLSL lacks: Abramowitz & Stegun 7.1.28, absolute error under 3e-7.
float erf_approx(float x)
{
    float t = abs(x);
    float p2 = 1.0 + t * (0.0705230784 + t * (0.0422820123 + t * (0.0092705272 +
               t * (0.0001520143 + t * (0.0002765672 + t * 0.0000430638)))));
    p2 = p2 * p2;
    p2 = p2 * p2;
    p2 = p2 * p2;
    p2 = p2 * p2; // (polynomial)^16
    return sign(x) * (1.0 - 1.0 / p2);
}

void main()
{
    uint i = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= p.n)
        return;
    float v = a[p.a_shift + i];
#if defined(OP_SWIGLU)
    result[p.out_shift + i] = silu(v) * b[p.b_shift + i];
#elif defined(OP_SILU)
    result[p.out_shift + i] = silu(v);
#elif defined(OP_GELU)
    result[p.out_shift + i] = gelu(v);
#elif defined(OP_GELU_ERF)
    result[p.out_shift + i] = 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752440));
#elif defined(OP_RELU)
    result[p.out_shift + i] = max(v, 0.0);
#elif defined(OP_CLAMP)
    result[p.out_shift + i] = clamp(v, -p.bound, p.bound);
#endif
}
