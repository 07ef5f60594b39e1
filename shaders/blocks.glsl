// Weight block decoding, shared by matmul.comp (matrix-vector and matrix-matrix) and
// get_rows.comp. The includer defines exactly one WTYPE_* and declares the weights as
//     layout(std430, binding = 0) readonly buffer W { uint w[]; };
// or, with WEIGHTS_TEXEL, as a texel buffer of R32UI words (faster on lavapipe, where a
// storage-buffer load is a loop over the lanes; see VKR_TEXEL_BINDING):
//     layout(binding = 8, r32ui) uniform readonly uimageBuffer wtex;
// Weights are read as 32-bit words whatever their type, so no 8/16-bit storage feature is
// needed. Blocks start at even byte offsets (ggml blocks are 18, 20, 22, 24 or 34 bytes), so
// a block is read as the aligned words covering it and its fields are cut out of those.
//
// A "block" here is what one invocation decodes at a time: a ggml block of 32 weights for
// the quantized types, 8 consecutive weights for f32/f16/bf16 (whose rows may end with a
// partial block: load_block zeroes the weights past `valid`).
//
//   wblock load_block(uint byte_offset, uint valid, bool aligned)  reads a block
//   vec4 block_q4(wblock b, uint g)    its quants 4g .. 4g+3 (g < BLOCK_GROUPS) as floats
//   vec4 block_vec4(wblock b, uint g)  its weights: block_q4 * b.d + b.m
// Every type is "quants times a scale plus an offset" (f32/f16/bf16: d = 1, m = 0), so a dot
// product with x can multiply by d once per block and add m * sum(x) (BLOCK_HAS_OFFSET).
// `aligned` (uniform) promises, for quantized types, that the block starts on a 4-byte
// boundary, which saves a word per block for the types whose blocks are a whole number of
// words; for plain types, that the block starts on a 16-byte boundary and is whole, so that
// it is read with 128-bit loads (for that the includer also declares, on the same binding,
//     layout(std430, binding = 0) readonly buffer W4 { uvec4 w4[]; };).

#if defined(WTYPE_Q4_0)
const uint BLOCK_WEIGHTS = 32, BLOCK_BYTES = 18, Q_WORDS = 4;
#define BLOCK_HAS_OFFSET
#elif defined(WTYPE_Q4_1)
const uint BLOCK_WEIGHTS = 32, BLOCK_BYTES = 20, Q_WORDS = 4;
#define BLOCK_HAS_OFFSET
#elif defined(WTYPE_Q5_0)
const uint BLOCK_WEIGHTS = 32, BLOCK_BYTES = 22, Q_WORDS = 4;
#define BLOCK_HAS_OFFSET
#elif defined(WTYPE_Q5_1)
const uint BLOCK_WEIGHTS = 32, BLOCK_BYTES = 24, Q_WORDS = 4;
#define BLOCK_HAS_OFFSET
#elif defined(WTYPE_Q8_0)
const uint BLOCK_WEIGHTS = 32, BLOCK_BYTES = 34, Q_WORDS = 8;
#elif defined(WTYPE_F32)
#define PLAIN_WEIGHTS
const uint BLOCK_WEIGHTS = 8, BLOCK_BYTES = 32, Q_WORDS = 8;
#elif defined(WTYPE_F16) || defined(WTYPE_BF16)
#define PLAIN_WEIGHTS
const uint BLOCK_WEIGHTS = 8, BLOCK_BYTES = 16, Q_WORDS = 4;
#else
#error "define one WTYPE_*"
#endif

// Word i of the weight binding, and the binding's size in words.
#ifdef WEIGHTS_TEXEL
uint w_word(uint i) { return imageLoad(wtex, int(i)).x; }
uint w_words() { return uint(imageSize(wtex)); }
uvec4 w_uvec4(uint i) // 16 bytes at word 4i
{
    return uvec4(w_word(4u * i), w_word(4u * i + 1u), w_word(4u * i + 2u), w_word(4u * i + 3u));
}
#else
uint w_word(uint i) { return w[i]; }
uint w_words() { return uint(w.length()); }
uvec4 w_uvec4(uint i) { return w4[i]; }
#endif

const uint BLOCK_GROUPS = BLOCK_WEIGHTS / 4;
// Aligned words covering BLOCK_BYTES that start at an even offset.
const uint RAW_WORDS = (BLOCK_BYTES + 2 + 3) / 4;

struct wblock {
    float d;         // scale (1 for plain types)
    float m;         // offset: the minimum (q4_1, q5_1), -8d (q4_0), -16d (q5_0), else 0
    uint qh;         // fifth bits (q5_*)
    uint q[Q_WORDS]; // packed quants, or the raw f32/f16/bf16 bits
};

// 16 / 32 bits at byte p of `raw` (p even, known at compile time after inlining).
uint raw_u16(uint raw[RAW_WORDS], uint p)
{
    return (p & 2u) == 0u ? raw[p >> 2] & 0xffffu : raw[p >> 2] >> 16;
}

uint raw_u32(uint raw[RAW_WORDS], uint p)
{
    // (the min only keeps the unused side of the select inside the array)
    uint next = min((p >> 2) + 1u, RAW_WORDS - 1u);
    return (p & 2u) == 0u ? raw[p >> 2] : (raw[p >> 2] >> 16) | (raw[next] << 16);
}

// A field at byte p of the block: the block starts at byte 0 or byte 2 of raw[0].
#define FIELD16(p) (odd ? raw_u16(raw, (p) + 2u) : raw_u16(raw, (p)))
#define FIELD32(p) (odd ? raw_u32(raw, (p) + 2u) : raw_u32(raw, (p)))

wblock load_block(uint byte_offset, uint valid, bool aligned)
{
    wblock b;
    b.d = 1.0;
    b.m = 0.0;
    b.qh = 0u;
#ifdef PLAIN_WEIGHTS
    if (aligned) {
        uvec4 v = w_uvec4(byte_offset >> 4);
        b.q[0] = v.x, b.q[1] = v.y, b.q[2] = v.z, b.q[3] = v.w;
#ifdef WTYPE_F32
        v = w_uvec4((byte_offset >> 4) + 1u);
        b.q[4] = v.x, b.q[5] = v.y, b.q[6] = v.z, b.q[7] = v.w;
#endif
        return b;
    }
#endif
    uint base = byte_offset >> 2;
    bool odd = (byte_offset & 2u) != 0u;
    // Clamped so the word past the end of the last block of a binding is never read
    // (and a bad offset cannot leave the binding).
    uint last = w_words() - 1u;
    uint raw[RAW_WORDS];
    [[unroll]] for (uint i = 0u; i + 1u < RAW_WORDS; i++)
        raw[i] = w_word(min(base + i, last));
    raw[RAW_WORDS - 1u] = 0u;
    if (BLOCK_BYTES % 4u != 0u || !aligned)
        raw[RAW_WORDS - 1u] = w_word(min(base + RAW_WORDS - 1u, last));

#if defined(WTYPE_Q4_0)
    b.d = unpackHalf2x16(FIELD16(0u)).x;
    b.m = -8.0 * b.d;
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = FIELD32(2u + 4u * i);
#elif defined(WTYPE_Q8_0)
    b.d = unpackHalf2x16(FIELD16(0u)).x;
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = FIELD32(2u + 4u * i);
#elif defined(WTYPE_Q4_1)
    b.d = unpackHalf2x16(FIELD16(0u)).x;
    b.m = unpackHalf2x16(FIELD16(2u)).x;
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = FIELD32(4u + 4u * i);
#elif defined(WTYPE_Q5_0)
    b.d = unpackHalf2x16(FIELD16(0u)).x;
    b.m = -16.0 * b.d;
    b.qh = FIELD32(2u);
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = FIELD32(6u + 4u * i);
#elif defined(WTYPE_Q5_1)
    b.d = unpackHalf2x16(FIELD16(0u)).x;
    b.m = unpackHalf2x16(FIELD16(2u)).x;
    b.qh = FIELD32(4u);
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = FIELD32(8u + 4u * i);
#elif defined(WTYPE_F32)
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++)
        b.q[i] = i < valid ? FIELD32(4u * i) : 0u;
#else // f16, bf16: two weights per word
    [[unroll]] for (uint i = 0u; i < Q_WORDS; i++) {
        uint v = FIELD32(4u * i);
        b.q[i] = 2u * i + 1u < valid ? v : (2u * i < valid ? v & 0xffffu : 0u);
    }
#endif
    return b;
}

#undef FIELD16
#undef FIELD32

// The four 4-bit quants of group g: weights j < 16 are the low nibbles of bytes j, weights
// j >= 16 the high nibbles of bytes j - 16.
uvec4 nibbles(wblock b, uint g)
{
    uint word = b.q[g & 3u];
    uint sh = g >= 4u ? 4u : 0u;
    return (uvec4(word) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 0xfu;
}

// Bit 4 of the q5 quants of group g: bit j of qh for weight j.
uvec4 fifth_bits(wblock b, uint g)
{
    return ((uvec4(b.qh >> (4u * g)) >> uvec4(0u, 1u, 2u, 3u)) & 1u) << 4;
}

vec4 block_q4(wblock b, uint g)
{
#if defined(WTYPE_Q4_0) || defined(WTYPE_Q4_1)
    return vec4(nibbles(b, g));
#elif defined(WTYPE_Q5_0) || defined(WTYPE_Q5_1)
    return vec4(nibbles(b, g) | fifth_bits(b, g));
#elif defined(WTYPE_Q8_0)
    // Sign-extend each byte: shift it to the top, then arithmetic-shift it down.
    return vec4((ivec4(int(b.q[g])) << ivec4(24, 16, 8, 0)) >> 24);
#elif defined(WTYPE_F32)
    return uintBitsToFloat(uvec4(b.q[4u * g], b.q[4u * g + 1u], b.q[4u * g + 2u], b.q[4u * g + 3u]));
#elif defined(WTYPE_F16)
    return vec4(unpackHalf2x16(b.q[2u * g]), unpackHalf2x16(b.q[2u * g + 1u]));
#else // bf16: the high 16 bits of an f32
    uint lo = b.q[2u * g], hi = b.q[2u * g + 1u];
    return uintBitsToFloat(uvec4(lo << 16, lo & 0xffff0000u, hi << 16, hi & 0xffff0000u));
#endif
}

vec4 block_vec4(wblock b, uint g)
{
#if defined(BLOCK_HAS_OFFSET)
    return block_q4(b, g) * b.d + b.m;
#else
    return block_q4(b, g) * b.d;
#endif
}
