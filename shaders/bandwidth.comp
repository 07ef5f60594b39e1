#version 450
// Streaming-read probe: every invocation sums `per_thread` vec4s, coalesced across the
// workgroup. The result is written only under a condition the compiler cannot decide, so
// the reads stay and the writes cost nothing.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(std430, binding = 0) readonly buffer Src { vec4 src[]; };
layout(std430, binding = 1) writeonly buffer Dst { float dst[]; };

layout(push_constant) uniform Push {
    uint n_vec4;
    uint per_thread;
} p;

void main()
{
    uint base = linear_group_id() * gl_WorkGroupSize.x * p.per_thread + gl_LocalInvocationID.x;
    vec4 acc = vec4(0.0);
    for (uint i = 0; i < p.per_thread; i++) {
        uint idx = base + i * gl_WorkGroupSize.x;
        if (idx < p.n_vec4)
            acc += src[idx];
    }
    if (dot(acc, vec4(1.0)) == -1.0)
        dst[0] = acc.x;
}
