#version 450
// Mamba's causal depthwise conv1d over a sequence, with its per-sequence state, bias and
// (optionally) SiLU. One invocation per channel walks this dispatch's tokens in order:
//   window = [state[c][0], ..., state[c][K-2], x[t][c]]     (K = d_conv, state oldest first)
//   out[t][c] = act(bias[c] + sum_k w[c][k] * window[k])
// then the window slides; at the end state[c] holds the last K-1 inputs.
// Per invocation the loops run about n_tokens * (2K + 1) + 3K iterations: the host splits
// the tokens into dispatches that stay far below lavapipe's 65,535 (see ops_ssm.c).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#define MAX_CONV 8

layout(std430, binding = 0) readonly buffer X { float x[]; };         // [n_tokens][d_inner]
layout(std430, binding = 1) readonly buffer W { float w[]; };         // [d_inner][K]
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };   // [d_inner]
layout(std430, binding = 3) buffer State { float state[]; };          // [d_inner][K - 1]
layout(std430, binding = 4) writeonly buffer Out { float result[]; }; // [n_tokens][d_inner]

layout(push_constant) uniform Push {
    uint n_tokens;   // tokens of this dispatch
    uint d_inner;    // row length of x and out
    uint n_channels; // channels of this dispatch, from c0
    uint c0;
    uint d_conv;
    uint has_bias;
    uint silu;
    // first element of this dispatch's rows / channels within each binding
    uint x_shift, w_shift, bias_shift, state_shift, out_shift;
} p;

void main()
{
    uint cl = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (cl >= p.n_channels)
        return;
    uint c = p.c0 + cl;
    uint K = p.d_conv;
    float win[MAX_CONV];
    float wk[MAX_CONV];
    for (uint k = 0; k + 1 < K; k++)
        win[k] = state[p.state_shift + cl * (K - 1) + k];
    for (uint k = 0; k < K; k++)
        wk[k] = w[p.w_shift + cl * K + k];
    float b = p.has_bias != 0 ? bias[p.bias_shift + cl] : 0.0;
    for (uint t = 0; t < p.n_tokens; t++) {
        win[K - 1] = x[p.x_shift + t * p.d_inner + c];
        float sum = 0.0;
        for (uint k = 0; k < K; k++)
            sum += wk[k] * win[k];
        sum += b;
        if (p.silu != 0)
            sum = sum / (1.0 + exp(-sum));
        result[p.out_shift + t * p.d_inner + c] = sum;
        for (uint k = 0; k + 1 < K; k++)
            win[k] = win[k + 1];
    }
    for (uint k = 0; k + 1 < K; k++)
        state[p.state_shift + cl * (K - 1) + k] = win[k];
}
