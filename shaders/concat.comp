#version 450
// Rows side by side: out[r] = [a[r] (wa floats) | b[r] (wb floats)], one invocation per
// output element. (Mamba joins dt and B, C this way for the scan.)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n_rows; // rows of this dispatch
    uint wa, wb;
    uint a_shift, b_shift, out_shift; // first element of this dispatch's rows in each binding
} p;

void main()
{
    uint i = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint w = p.wa + p.wb;
    if (i >= p.n_rows * w)
        return;
    uint r = i / w, j = i % w;
    result[p.out_shift + i] = j < p.wa ? a[p.a_shift + r * p.wa + j] : b[p.b_shift + r * p.wb + (j - p.wa)];
}
