#version 450
// Mamba's selective scan. One invocation per channel c walks this dispatch's tokens in
// order, keeping the channel's d_state states in registers:
//   dt = softplus(dtbc[t][c])                                (log(1 + e^v); v itself past 20)
//   s[n] = exp(dt * a[c][n]) * s[n] + (dt * x[t][c]) * B[t][n]
//   out[t][c] = sum_n C[t][n] * s[n] + d[c] * x[t][c]
// with B[t] and C[t] at columns d_inner and d_inner + d_state of the dtbc row. The states
// come from and go back to state[c][n]. Per invocation the loops run about
// n_tokens * (d_state + 1) + 3 d_state iterations: the host splits the tokens into
// dispatches that stay far below lavapipe's 65,535 (see ops_ssm.c).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#define MAX_STATE 64

layout(std430, binding = 0) readonly buffer X { float x[]; };         // [n_tokens][d_inner]
layout(std430, binding = 1) readonly buffer DtBC { float dtbc[]; };   // [n_tokens][d_inner + 2 d_state]
layout(std430, binding = 2) readonly buffer A { float a[]; };         // [d_inner][d_state]
layout(std430, binding = 3) readonly buffer D { float dskip[]; };     // [d_inner]
layout(std430, binding = 4) buffer State { float state[]; };          // [d_inner][d_state]
layout(std430, binding = 5) writeonly buffer Out { float result[]; }; // [n_tokens][d_inner]

layout(push_constant) uniform Push {
    uint n_tokens;   // tokens of this dispatch
    uint d_inner;
    uint d_state;
    uint n_channels; // channels of this dispatch, from c0
    uint c0;
    // first element of this dispatch's rows / channels within each binding
    uint x_shift, dtbc_shift, a_shift, d_shift, state_shift, out_shift;
} p;

// log(1 + e^v) without losing e^v when it is tiny (1 + e^v rounds to 1): log1p(u) as
// log(1 + u) * u / ((1 + u) - 1), exact to a few ulp.
float softplus(float v)
{
    if (v > 20.0)
        return v;
    float u = exp(v);
    float w = 1.0 + u;
    return w == 1.0 ? u : log(w) * (u / (w - 1.0));
}

void main()
{
    uint cl = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (cl >= p.n_channels)
        return;
    uint c = p.c0 + cl;
    uint S = p.d_state;
    float s[MAX_STATE];
    float ac[MAX_STATE];
    for (uint n = 0; n < S; n++) {
        s[n] = state[p.state_shift + cl * S + n];
        ac[n] = a[p.a_shift + cl * S + n];
    }
    float dc = dskip[p.d_shift + cl];
    uint row = p.d_inner + 2 * S;
    for (uint t = 0; t < p.n_tokens; t++) {
        uint base = p.dtbc_shift + t * row;
        float dt = softplus(dtbc[base + c]);
        float xv = x[p.x_shift + t * p.d_inner + c];
        float dx = dt * xv;
        uint bc = base + p.d_inner;
        float y = 0.0;
        for (uint n = 0; n < S; n++) {
            s[n] = exp(dt * ac[n]) * s[n] + dx * dtbc[bc + n];
            y += s[n] * dtbc[bc + S + n];
        }
        result[p.out_shift + t * p.d_inner + c] = y + dc * xv;
    }
    for (uint n = 0; n < S; n++)
        state[p.state_shift + cl * S + n] = s[n];
}
