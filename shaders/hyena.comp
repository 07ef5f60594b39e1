#version 450
// StripedHyena's own ops (ops_hyena.c). Its short FIR is Mamba's conv without SiLU (ssm_conv.comp).
//
// OP_IIR: the long convolution as its modal recurrence, gated. Per channel c, with N complex
// poles p_n and residues R_n (rows of 2N floats, re/im pairs) and a row z = [x2 | x1 | v]:
//   u = x1[c] * v[c];  s_n = p_n * s_n + u  (complex, s from and back to state[c]);
//   out[t][c] = x2[c] * (Re sum_n R_n s_n + d[c] * u)
// which is the causal convolution of u with h[t] = Re sum_n R_n p_n^t, plus the D skip.
// One invocation per channel walks this dispatch's tokens in order; its loops run about
// n_tokens * (N + 1) + 3N iterations: the host splits the tokens into dispatches that stay far
// below lavapipe's 65,535 (see ops_hyena.c).
// (Its RMSNorm, eps added to the RMS, is norm.comp's EPS_OUTSIDE variant.)
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

#if defined(OP_IIR)

#define MAX_MODES 32

layout(std430, binding = 0) readonly buffer Z { float z[]; };          // [n_tokens][3 width]
layout(std430, binding = 1) readonly buffer Poles { float poles[]; };  // [width][2N]
layout(std430, binding = 2) readonly buffer Res { float residues[]; }; // [width][2N]
layout(std430, binding = 3) readonly buffer D { float dskip[]; };      // [width]
layout(std430, binding = 4) buffer State { float state[]; };           // [width][2N]
layout(std430, binding = 5) writeonly buffer Out { float result[]; };  // [n_tokens][width]

layout(push_constant) uniform Push {
    uint n_tokens;   // tokens of this dispatch
    uint width;      // channels (E); z rows hold 3 width floats
    uint n_modes;    // N
    uint n_channels; // channels of this dispatch, from c0
    uint c0;
    // first element of this dispatch's rows / channels within each binding
    uint z_shift, poles_shift, res_shift, d_shift, state_shift, out_shift;
} p;

void main()
{
    uint cl = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    if (cl >= p.n_channels)
        return;
    uint c = p.c0 + cl;
    uint N = p.n_modes, row = 2 * N * cl;
    vec2 s[MAX_MODES], pole[MAX_MODES], res[MAX_MODES];
    for (uint n = 0; n < N; n++) {
        s[n] = vec2(state[p.state_shift + row + 2 * n], state[p.state_shift + row + 2 * n + 1]);
        pole[n] = vec2(poles[p.poles_shift + row + 2 * n], poles[p.poles_shift + row + 2 * n + 1]);
        res[n] = vec2(residues[p.res_shift + row + 2 * n], residues[p.res_shift + row + 2 * n + 1]);
    }
    float dc = dskip[p.d_shift + cl];
    for (uint t = 0; t < p.n_tokens; t++) {
        uint zb = p.z_shift + t * 3 * p.width + c;
        float x2 = z[zb], u = z[zb + p.width] * z[zb + 2 * p.width];
        float y = 0.0;
        for (uint n = 0; n < N; n++) {
            s[n] = vec2(pole[n].x * s[n].x - pole[n].y * s[n].y + u, pole[n].x * s[n].y + pole[n].y * s[n].x);
            y += res[n].x * s[n].x - res[n].y * s[n].y;
        }
        result[p.out_shift + t * p.width + c] = x2 * (y + dc * u);
    }
    for (uint n = 0; n < N; n++) {
        state[p.state_shift + row + 2 * n] = s[n].x;
        state[p.state_shift + row + 2 * n + 1] = s[n].y;
    }
}

#endif
