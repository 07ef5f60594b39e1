#version 450
// out[i] = a[i] (op) b[i % n_b] : add, mul (b broadcast over rows), or a[i] * scale.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n;    // elements of a and out
    uint n_b;  // elements of b (broadcast period)
    float scale;
    uint b_phase; // index into b of element 0 (chunks of a long tensor start mid-period)
    uint b_shift; // b's first element within its binding
} p;

void main()
{
    uint i = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (i >= p.n)
        return;
#if defined(OP_ADD)
    result[i] = a[i] + b[p.b_shift + (i + p.b_phase) % p.n_b];
#elif defined(OP_MUL)
    result[i] = a[i] * b[p.b_shift + (i + p.b_phase) % p.n_b];
#elif defined(OP_SCALE)
    result[i] = a[i] * p.scale;
#endif
}
