#version 450
// out[i][c] = W[ids[i]][c] as f32, for the rows of W that this chunk holds (the host issues
// one dispatch per chunk; ids outside the chunk are left to the other dispatches). One
// invocation decodes one block of one id. Ids are clamped to [0, rows_total - 1]: the host
// validates them, the clamp only guarantees that a bad id cannot read outside the weights.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const bool W_ALIGNED = false; // see load_block (blocks.glsl)

#ifdef WEIGHTS_TEXEL
layout(binding = 8, r32ui) uniform readonly uimageBuffer wtex; // see blocks.glsl
#else
layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; }; // see blocks.glsl
#endif
layout(std430, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, binding = 2) writeonly buffer Out { float o[]; };

layout(push_constant) uniform Push {
    uint rows_total; // rows of the whole weight
    uint row_begin;  // first row held by this chunk
    uint row_count;
    uint cols;
    uint row_bytes;
    uint w_skip;     // bytes from the weight binding's start to the chunk's first row
    uint ids_skip;   // ints from the ids binding's start to this dispatch's first id
    uint out_skip;   // floats from the out binding's start to out[first id][0]
    uint n_ids;
} p;

#include "blocks.glsl"

void main()
{
    uint i = linear_group_id() * gl_WorkGroupSize.x + gl_LocalInvocationID.x;
    uint n_blocks = (p.cols + BLOCK_WEIGHTS - 1u) / BLOCK_WEIGHTS;
    if (i >= p.n_ids * n_blocks)
        return;
    uint k = i / n_blocks, b = i % n_blocks;
    uint row = uint(clamp(ids[p.ids_skip + k], 0, int(p.rows_total) - 1));
    if (row < p.row_begin || row - p.row_begin >= p.row_count)
        return;
    uint col = b * BLOCK_WEIGHTS;
    uint valid = min(p.cols - col, BLOCK_WEIGHTS);
    wblock blk = load_block(p.w_skip + (row - p.row_begin) * p.row_bytes + b * BLOCK_BYTES, valid,
                            W_ALIGNED);
    uint out0 = p.out_skip + k * p.cols + col;
    [[unroll]] for (uint g = 0u; g < BLOCK_GROUPS; g++) {
        vec4 v = block_vec4(blk, g);
        [[unroll]] for (uint j = 0u; j < 4u; j++)
            if (W_ALIGNED || 4u * g + j < valid)
                o[out0 + 4u * g + j] = v[j];
    }
}
