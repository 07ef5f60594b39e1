#version 450
// Row softmax, one workgroup per row: out = softmax(x * scale + mask_row). The mask
// (optional, -inf allowed) has mask_rows rows of n_cols; row r uses mask row
// (mask_phase + r) % mask_rows, so one mask row can be broadcast over many rows.
// A row whose every entry is -inf gives zeros (rather than 0/0).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "reduce.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer M { float mask[]; };
layout(std430, binding = 2) writeonly buffer Out { float result[]; };

layout(push_constant) uniform Push {
    uint n_cols;
    uint n_rows;
    float scale;
    uint x_shift;    // element index of row 0 in the x binding
    uint out_shift;
    uint mask_shift;
    uint mask_rows;  // 0: no mask
    uint mask_phase;
} p;

float value(uint xb, uint mb, uint c)
{
    float v = x[xb + c] * p.scale;
    return p.mask_rows != 0 ? v + mask[mb + c] : v;
}

void main()
{
    uint row = linear_group_id();
    if (row >= p.n_rows)
        return; // whole workgroup: the barriers below stay uniform
    uint lid = gl_LocalInvocationID.x, wg = gl_WorkGroupSize.x;
    uint xb = p.x_shift + row * p.n_cols, ob = p.out_shift + row * p.n_cols;
    uint mb = p.mask_rows != 0 ? p.mask_shift + ((p.mask_phase + row) % p.mask_rows) * p.n_cols : 0;

    float m = -1.0 / 0.0;
    for (uint c = lid; c < p.n_cols; c += wg)
        m = max(m, value(xb, mb, c));
    m = wg_max(m);
    if (isinf(m) && m < 0.0) { // fully masked row
        for (uint c = lid; c < p.n_cols; c += wg)
            result[ob + c] = 0.0;
        return;
    }
    float s = 0.0;
    for (uint c = lid; c < p.n_cols; c += wg)
        s += exp(value(xb, mb, c) - m);
    float inv = 1.0 / wg_sum(s);
    for (uint c = lid; c < p.n_cols; c += wg)
        result[ob + c] = exp(value(xb, mb, c) - m) * inv;
}
