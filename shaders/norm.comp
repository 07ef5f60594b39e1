#version 450
// Row normalisation, one workgroup per row of n_cols floats:
//  OP_RMS:   out = x / sqrt(mean(x^2) + eps) * w
//            (EPS_OUTSIDE: x / (sqrt(mean(x^2)) + eps) * w, StripedHyena's form)
//  OP_LAYER: out = (x - mean) / sqrt(var + eps) * w (+ b); the mean is refined and the
//            variance taken around it in a second pass, so rows with a large mean keep
//            full precision.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) readonly buffer B { float b[]; };
layout(std430, binding = 3) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n_cols;
    uint n_rows;
    float eps;
    uint x_shift;   // element index of row 0 in the x binding
    uint out_shift; // same for out
    uint has_bias;
} p;

void main()
{
    uint row = linear_group_id();
    if (row >= p.n_rows)
        return; // whole workgroup: the barriers below stay uniform
    uint lid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    uint xb = p.x_shift + row * p.n_cols, ob = p.out_shift + row * p.n_cols;
    float inv_n = 1.0 / float(p.n_cols);
#if defined(OP_RMS)
    float ss = 0.0;
    for (uint c = lid; c < p.n_cols; c += wg)
        ss += x[xb + c] * x[xb + c];
#ifdef EPS_OUTSIDE
    float scale = 1.0 / (sqrt(wg_sum(ss) * inv_n) + p.eps);
#else
    float scale = inversesqrt(wg_sum(ss) * inv_n + p.eps);
#endif
    for (uint c = lid; c < p.n_cols; c += wg)
        result[ob + c] = x[xb + c] * scale * w[c];
#elif defined(OP_LAYER)
    float s = 0.0;
    for (uint c = lid; c < p.n_cols; c += wg)
        s += x[xb + c];
    float mean0 = wg_sum(s) * inv_n;
    // mean0 carries the float sum's rounding (~1e-5 of |mean| for long rows); the second
    // pass measures what is left, c = mean(x - mean0), and the variance around it.
    float sd = 0.0, sd2 = 0.0;
    for (uint c = lid; c < p.n_cols; c += wg) {
        float d = x[xb + c] - mean0;
        sd += d;
        sd2 += d * d;
    }
    float corr = wg_sum(sd) * inv_n;
    float var = max(wg_sum(sd2) * inv_n - corr * corr, 0.0);
    float scale = inversesqrt(var + p.eps);
    for (uint c = lid; c < p.n_cols; c += wg) {
        float v = ((x[xb + c] - mean0) - corr) * scale * w[c];
        result[ob + c] = p.has_bias != 0 ? v + b[c] : v;
    }
#endif
}
