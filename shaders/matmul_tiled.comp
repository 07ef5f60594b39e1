#version 450
// y[t][r] = sum_c W[r][c] * x[t][c] (+ y[t][r] when accumulating) for prompts on GPUs: the
// matrix-matrix member of the matmul family that works through shared memory (matmul.comp's
// MATMUL shape keeps everything in registers, which suits CPUs, where shared memory and
// barriers are slow).
// A workgroup of 256 invocations computes a tile of BM = 64 rows x BN = 64 tokens. Columns go
// in steps of BK = 32: the workgroup decodes the 64 x 32 weight tile once into shared memory
// (four invocations per row, eight weights each) and copies the 64 x 32 activation tile
// beside it; then each invocation accumulates its TM x TN = 4 x 4 outputs, rows tr + 16 i
// and tokens tt + 16 j, so that neighbouring invocations read neighbouring shared words.
// The loop that grows with the sizes walks cols / 32 steps.
//  LARGE_TILE: 128 x 128 tiles in steps of BK = 16 (two invocations per row), 8 x 8 outputs
//              per invocation: twice the multiply-adds per shared-memory read and a quarter
//              of the workgroups, with as much shared memory (VKLLM_TILED=128).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(constant_id = 1) const bool W_ALIGNED = false; // see load_block (blocks.glsl)
layout(constant_id = 2) const bool X_VEC4 = false;    // activation rows start 16-byte aligned

layout(std430, binding = 0) readonly buffer W { uint w[]; };
layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; }; // see blocks.glsl
layout(std430, binding = 1) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly buffer XS { float xs[]; };
layout(std430, binding = 2) buffer Y { float y[]; };

// Same push constants as matmul.comp (ops_matmul.c fills one struct for both).
layout(push_constant) uniform Push {
    uint rows;       // rows of this chunk
    uint cols;
    uint n_tokens;
    uint row_bytes;
    uint w_skip;     // bytes from the weight binding's start to the chunk's first row
    uint x_skip;     // floats from the x binding's start to token 0
    uint y_skip;     // floats from the y binding's start to y[token 0][chunk row 0]
    uint y_stride;   // floats from one token's y row to the next
    uint accumulate;
} p;

#include "blocks.glsl"

#ifdef LARGE_TILE
#define BM 128
#define BN 128
#define BK 16
#define TM 8
#define TN 8
#else
#define BM 64
#define BN 64
#define BK 32
#define TM 4
#define TN 4
#endif
#define LANES_M (BM / TM) // 16 invocations along rows (and BN / TN = 16 along tokens)
#define PART 8            // columns one invocation loads per step
#define PARTS (BK / PART) // invocations per loaded row: 256 / PARTS = BM = BN rows

shared float w_tile[BK][BM + 1];
shared float x_tile[BK][BN + 1];

// x[t][c .. c+3], zeros from column cols on.
vec4 load_x4(uint t, uint c)
{
    uint i = p.x_skip + t * p.cols + c;
    if (c + 4u <= p.cols)
        return X_VEC4 ? x4[i >> 2] : vec4(xs[i], xs[i + 1u], xs[i + 2u], xs[i + 3u]);
    vec4 v = vec4(0.0);
    for (uint k = 0u; k < 4u && c + k < p.cols; k++)
        v[k] = xs[i + k];
    return v;
}

void main()
{
    uint tid = gl_LocalInvocationID.x;
    uint row0 = linear_group_id() * BM, tok0 = gl_WorkGroupID.z * BN;
    // The loaders: invocation tid fills row / token tid / PARTS, columns part * 8 .. + 7.
    uint ld = tid / PARTS, part = tid % PARTS;
    uint w_row = min(row0 + ld, p.rows - 1u);
    uint x_tok = min(tok0 + ld, p.n_tokens - 1u);
    // The computers: rows tr + 16 i, tokens tt + 16 j of the tile.
    uint tr = tid % LANES_M, tt = tid / LANES_M;

    float acc[TM * TN];
    [[unroll]] for (uint k = 0u; k < TM * TN; k++)
        acc[k] = 0.0;

    for (uint k0 = 0u; k0 < p.cols; k0 += BK) {
        uint col = k0 + part * PART;
        // Weights: the block holding `col` and the two 4-weight groups from there.
        vec4 wv[2];
        if (col < p.cols) {
            uint b = col / BLOCK_WEIGHTS;
            uint g0 = (col % BLOCK_WEIGHTS) / 4u;
            wblock blk = load_block(p.w_skip + w_row * p.row_bytes + b * BLOCK_BYTES,
                                    min(p.cols - b * BLOCK_WEIGHTS, BLOCK_WEIGHTS), W_ALIGNED);
            wv[0] = block_vec4(blk, g0);
            wv[1] = block_vec4(blk, g0 + 1u); // plain types: zeros past a ragged row end
        } else {
            wv[0] = wv[1] = vec4(0.0);
        }
        vec4 xv0 = load_x4(x_tok, col), xv1 = load_x4(x_tok, col + 4u);
        barrier(); // the previous step's reads are done
        [[unroll]] for (uint k = 0u; k < 4u; k++) {
            w_tile[part * PART + k][ld] = wv[0][k];
            w_tile[part * PART + 4u + k][ld] = wv[1][k];
            x_tile[part * PART + k][ld] = xv0[k];
            x_tile[part * PART + 4u + k][ld] = xv1[k];
        }
        barrier();
        for (uint k = 0u; k < BK; k++) {
            float a[TM], bv[TN];
            [[unroll]] for (uint i = 0u; i < TM; i++)
                a[i] = w_tile[k][tr + LANES_M * i];
            [[unroll]] for (uint j = 0u; j < TN; j++)
                bv[j] = x_tile[k][tt + (BN / TN) * j];
            [[unroll]] for (uint i = 0u; i < TM; i++)
                [[unroll]] for (uint j = 0u; j < TN; j++)
                    acc[i * TN + j] += a[i] * bv[j];
        }
    }

    [[unroll]] for (uint i = 0u; i < TM; i++) {
        uint r = row0 + tr + LANES_M * i;
        [[unroll]] for (uint j = 0u; j < TN; j++) {
            uint t = tok0 + tt + (BN / TN) * j;
            if (r < p.rows && t < p.n_tokens) {
                uint o = p.y_skip + t * p.y_stride + r;
                y[o] = p.accumulate != 0u ? y[o] + acc[i * TN + j] : acc[i * TN + j];
            }
        }
    }
}
