/* Weight type table and the plain C reference conversions.
 *
 * Block layouts and formulas follow ggml (ggml-common.h / ggml-quants.c), re-expressed
 * here; the fixture in tests/fixtures/quant_reference.bin (made with the `gguf` python
 * package) checks that the bytes and floats agree. Multi-byte fields inside blocks are
 * little-endian and read byte by byte, so the code does not depend on host byte order or
 * alignment. */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "vkllm/vkllm.h"

/* ---- the type table ------------------------------------------------------------------ */

#define QK_K 256

static const ggml_type_traits type_table[GGML_TYPE_COUNT] = {
    [GGML_F32] = {"f32", 1, 4, 1},
    [GGML_F16] = {"f16", 1, 2, 1},
    [GGML_Q4_0] = {"q4_0", 32, 2 + 16, 1},
    [GGML_Q4_1] = {"q4_1", 32, 2 + 2 + 16, 1},
    [GGML_Q5_0] = {"q5_0", 32, 2 + 4 + 16, 1},
    [GGML_Q5_1] = {"q5_1", 32, 2 + 2 + 4 + 16, 1},
    [GGML_Q8_0] = {"q8_0", 32, 2 + 32, 1},
    [GGML_Q8_1] = {"q8_1", 32, 2 + 2 + 32, 0}, /* d and s are fp16 in ggml's block_q8_1 */
    [GGML_Q2_K] = {"q2_K", QK_K, QK_K / 16 + QK_K / 4 + 2 + 2, 0},
    [GGML_Q3_K] = {"q3_K", QK_K, QK_K / 8 + QK_K / 4 + 12 + 2, 0},
    [GGML_Q4_K] = {"q4_K", QK_K, 2 + 2 + 12 + QK_K / 2, 0},
    [GGML_Q5_K] = {"q5_K", QK_K, 2 + 2 + 12 + QK_K / 8 + QK_K / 2, 0},
    [GGML_Q6_K] = {"q6_K", QK_K, QK_K / 2 + QK_K / 4 + QK_K / 16 + 2, 0},
    [GGML_Q8_K] = {"q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2, 0},
    [GGML_IQ2_XXS] = {"iq2_xxs", QK_K, 2 + QK_K / 4, 0},
    [GGML_IQ2_XS] = {"iq2_xs", QK_K, 2 + QK_K / 4 + QK_K / 32, 0},
    [GGML_IQ3_XXS] = {"iq3_xxs", QK_K, 2 + QK_K / 4 + QK_K / 8, 0},
    [GGML_IQ1_S] = {"iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16, 0},
    [GGML_IQ4_NL] = {"iq4_nl", 32, 2 + 16, 0},
    [GGML_IQ3_S] = {"iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, 0},
    [GGML_IQ2_S] = {"iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16, 0},
    [GGML_IQ4_XS] = {"iq4_xs", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, 0},
    [GGML_I8] = {"i8", 1, 1, 0},
    [GGML_I16] = {"i16", 1, 2, 0},
    [GGML_I32] = {"i32", 1, 4, 0},
    [GGML_I64] = {"i64", 1, 8, 0},
    [GGML_F64] = {"f64", 1, 8, 0},
    [GGML_IQ1_M] = {"iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, 0},
    [GGML_BF16] = {"bf16", 1, 2, 1},
    [GGML_TQ1_0] = {"tq1_0", QK_K, 2 + 4 * 13, 0},
    [GGML_TQ2_0] = {"tq2_0", QK_K, 2 + 64, 0},
    [GGML_MXFP4] = {"mxfp4", 32, 1 + 16, 0},
};

ggml_type_traits ggml_traits(uint32_t type)
{
    if (type >= GGML_TYPE_COUNT) {
        ggml_type_traits none = {0};
        return none;
    }
    return type_table[type];
}

uint64_t ggml_row_bytes(uint32_t type, uint64_t n)
{
    ggml_type_traits t = ggml_traits(type);
    if (!t.name || t.block_size == 0 || n % t.block_size != 0)
        return 0;
    uint64_t blocks = n / t.block_size;
    if (blocks > UINT64_MAX / t.block_bytes)
        return 0; /* would overflow: callers treat 0 for n > 0 as invalid */
    return blocks * t.block_bytes;
}

/* ---- fp16 / bf16 ----------------------------------------------------------------------- */

static uint32_t float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float vk_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf / nan: keep the payload */
        return bits_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        if (mant == 0)
            return bits_float(sign);
        /* subnormal: mant * 2^-24, normalise into a float */
        int e = -14;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            e--;
        }
        mant &= 0x3ffu;
        return bits_float(sign | (uint32_t)(e + 127) << 23 | (mant << 13));
    }
    return bits_float(sign | (exp + 127 - 15) << 23 | (mant << 13));
}

uint16_t vk_fp32_to_fp16(float f)
{
    uint32_t x = float_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;
    if (x > 0x7f800000u) /* nan: quiet it, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
    if (x >= 0x477ff000u) /* >= 65520 (halfway past the largest half, 65504) -> inf */
        return (uint16_t)(sign | 0x7c00u);
    if (x >= 0x38800000u) { /* normal half: rebias, round the 13 dropped bits to even */
        uint32_t r = x - 0x38000000u + 0xfffu + ((x >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    if (x <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 itself ties to even 0) */
        return sign;
    /* subnormal half: the value in units of 2^-24 is mant >> shift, rounded to even */
    uint32_t e = x >> 23;
    uint32_t mant = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e; /* 14..24 */
    uint32_t q = mant >> shift;
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u)))
        q++;
    return (uint16_t)(sign | q);
}

float vk_bf16_to_fp32(uint16_t h) { return bits_float((uint32_t)h << 16); }

uint16_t vk_fp32_to_bf16(float f)
{
    uint32_t x = float_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) /* nan: keep it a (quiet) nan after truncation */
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* ---- block helpers --------------------------------------------------------------------- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static float half_at(const uint8_t *p) { return vk_fp16_to_fp32(rd16(p)); }

/* ggml's `MIN(hi, (int8_t)v)` for v >= 0 (truncation), made total: NaN and negatives give
 * 0 instead of undefined behaviour. */
static int trunc_clamp(float v, int hi)
{
    if (!(v > 0.0f))
        return 0;
    if (v >= (float)hi)
        return hi;
    return (int)v;
}

/* Value with the largest magnitude, sign kept (first one wins on ties, as in ggml). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo)
            lo = x[j];
        if (x[j] > hi)
            hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

/* ---- dequantization -------------------------------------------------------------------- */

/* Blocks of 32 weights: byte j of qs holds weight j in its low nibble and weight j + 16
 * in its high nibble. Q5 types keep the fifth bits in a little-endian u32 qh, bit j for
 * weight j. The products are kept as separate statements so no compiler fuses a*b+c into
 * an fma (the reference rounds twice). */

static void dequant_q4_0(const uint8_t *b, float *y)
{
    float d = half_at(b);
    const uint8_t *qs = b + 2;
    for (int j = 0; j < 16; j++) {
        y[j] = (float)((qs[j] & 0x0f) - 8) * d;
        y[j + 16] = (float)((qs[j] >> 4) - 8) * d;
    }
}

static void dequant_q4_1(const uint8_t *b, float *y)
{
    float d = half_at(b), m = half_at(b + 2);
    const uint8_t *qs = b + 4;
    for (int j = 0; j < 16; j++) {
        float lo = (float)(qs[j] & 0x0f) * d;
        float hi = (float)(qs[j] >> 4) * d;
        y[j] = lo + m;
        y[j + 16] = hi + m;
    }
}

static void dequant_q5_0(const uint8_t *b, float *y)
{
    float d = half_at(b);
    uint32_t qh = rd32(b + 2);
    const uint8_t *qs = b + 6;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static void dequant_q5_1(const uint8_t *b, float *y)
{
    float d = half_at(b), m = half_at(b + 2);
    uint32_t qh = rd32(b + 4);
    const uint8_t *qs = b + 8;
    for (int j = 0; j < 16; j++) {
        int lo = (qs[j] & 0x0f) | (int)((qh >> j) & 1u) << 4;
        int hi = (qs[j] >> 4) | (int)((qh >> (j + 16)) & 1u) << 4;
        float a = (float)lo * d;
        float c = (float)hi * d;
        y[j] = a + m;
        y[j + 16] = c + m;
    }
}

static void dequant_q8_0(const uint8_t *b, float *y)
{
    float d = half_at(b);
    for (int j = 0; j < 32; j++)
        y[j] = (float)(int8_t)b[2 + j] * d;
}

/* K-quants: super-blocks of 256 weights in sub-blocks of 16 or 32, each with its own
 * scale (and min) stored as small integers that multiply the super-block's fp16 d (and
 * dmin). As in ggml's dequantize_row_q*_K. */

/* Scale and min of sub-block j (0..7) of a q4_K/q5_K super-block: 6 bits each, packed into
 * 12 bytes (the low 6 bits of bytes 0-7 for j < 4, nibbles of bytes 8-11 plus the top two
 * bits of bytes 0-7 for j >= 4). */
static void scale_min_k4(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0f) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

/* Quant l (0..31) of sub-block j of a q4_K/q5_K super-block: sub-blocks 2i and 2i + 1 are
 * the low and high nibbles of the same 32 bytes; q5_K's fifth bit j of byte l of qh. */
static int quant_q4_k(const uint8_t *qs, int j, int l) { return (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f; }
static int quant_q5_k(const uint8_t *qh, const uint8_t *qs, int j, int l)
{
    return quant_q4_k(qs, j, l) | ((qh[l] >> j) & 1) << 4;
}

/* q4_K, 144 bytes: d, dmin, scales[12], qs[128]; q5_K, 176 bytes: the same with qh[32] before
 * qs. w = d*sc*q - dmin*m. */
static void dequant_q45_k(const uint8_t *b, float *y, int five)
{
    float d = half_at(b), dmin = half_at(b + 2);
    for (int j = 0; j < 8; j++) {
        int sc, m;
        scale_min_k4(j, b + 4, &sc, &m);
        float dj = d * (float)sc, mj = dmin * (float)m;
        for (int l = 0; l < 32; l++) {
            float v = dj * (float)(five ? quant_q5_k(b + 16, b + 48, j, l) : quant_q4_k(b + 16, j, l));
            y[32 * j + l] = v - mj;
        }
    }
}

static void dequant_q4_k(const uint8_t *b, float *y) { dequant_q45_k(b, y, 0); }
static void dequant_q5_k(const uint8_t *b, float *y) { dequant_q45_k(b, y, 1); }

/* q6_K, 210 bytes: ql[128], qh[64], int8 scales[16], d. Each half of 128 weights takes 64
 * bytes of ql (low nibbles: weights 0-63, high nibbles: 64-127) and 32 of qh (two bits per
 * weight, for weights l, l + 32, l + 64, l + 96); sub-blocks of 16 weights. */
static void dequant_q6_k(const uint8_t *b, float *y)
{
    float d = half_at(b + 208);
    for (int half = 0; half < 2; half++) {
        const uint8_t *ql = b + 64 * half, *qh = b + 128 + 32 * half;
        const int8_t *sc = (const int8_t *)(b + 192 + 8 * half);
        for (int l = 0; l < 32; l++)
            for (int k = 0; k < 4; k++) {
                int q = ((ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 0x0f) | ((qh[l] >> (2 * k)) & 3) << 4;
                float dk = d * (float)sc[l / 16 + 2 * k];
                y[128 * half + 32 * k + l] = dk * (float)(q - 32);
            }
    }
}

/* q2_K, 84 bytes: scales[16] (scale in the low nibble, min in the high one), qs[64], d,
 * dmin. Each 128 weights take 32 bytes of qs, two bits per weight, sub-blocks of 16. */
static void dequant_q2_k(const uint8_t *b, float *y)
{
    float d = half_at(b + 80), dmin = half_at(b + 82);
    for (int i = 0; i < 256; i++) {
        int half = i / 128, shift = 2 * (i % 128 / 32), l = i % 32;
        uint8_t sc = b[i / 16];
        int q = (b[16 + 32 * half + l] >> shift) & 3;
        float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
        float v = dl * (float)q;
        y[i] = v - ml;
    }
}

/* q3_K, 110 bytes: hmask[32], qs[64], scales[12], d. Like q2_K plus a third bit (set: +0,
 * clear: -4) from hmask; 16 six-bit signed scales (offset 32): low nibbles from bytes 0-7,
 * top two bits from bytes 8-11. */
static void dequant_q3_k(const uint8_t *b, float *y)
{
    float d = half_at(b + 108);
    const uint8_t *hm = b, *qs = b + 32, *scales = b + 96;
    for (int i = 0; i < 256; i++) {
        int half = i / 128, pair = i % 128 / 32, l = i % 32, j = i / 16;
        int sc = ((j < 8 ? scales[j] : scales[j - 8] >> 4) & 0x0f) | ((scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4;
        int q = ((qs[32 * half + l] >> (2 * pair)) & 3) - ((hm[l] >> (4 * half + pair)) & 1 ? 0 : 4);
        float dl = d * (float)(sc - 32);
        y[i] = dl * (float)q;
    }
}

int vk_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n)
{
    const uint8_t *s = src;
    ggml_type_traits t = ggml_traits(type);
    if (!t.name || n % t.block_size != 0)
        return -1;
    void (*block_fn)(const uint8_t *, float *) = NULL;
    switch (type) {
    case GGML_F32:
        memcpy(dst, s, n * sizeof(float));
        return 0;
    case GGML_F16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = vk_fp16_to_fp32(rd16(s + 2 * i));
        return 0;
    case GGML_BF16:
        for (uint64_t i = 0; i < n; i++)
            dst[i] = vk_bf16_to_fp32(rd16(s + 2 * i));
        return 0;
    case GGML_Q4_0: block_fn = dequant_q4_0; break;
    case GGML_Q4_1: block_fn = dequant_q4_1; break;
    case GGML_Q5_0: block_fn = dequant_q5_0; break;
    case GGML_Q5_1: block_fn = dequant_q5_1; break;
    case GGML_Q8_0: block_fn = dequant_q8_0; break;
    case GGML_Q2_K: block_fn = dequant_q2_k; break;
    case GGML_Q3_K: block_fn = dequant_q3_k; break;
    case GGML_Q4_K: block_fn = dequant_q4_k; break;
    case GGML_Q5_K: block_fn = dequant_q5_k; break;
    case GGML_Q6_K: block_fn = dequant_q6_k; break;
    default: return -1;
    }
    for (uint64_t i = 0; i < n / t.block_size; i++)
        block_fn(s + i * t.block_bytes, dst + i * t.block_size);
    return 0;
}

/* ---- quantization (ggml's *_ref quantizers) -------------------------------------------- */

void vk_pack_q_1(uint32_t type, uint8_t *b, float d, float m, const uint8_t q[32])
{
    wr16(b, vk_fp32_to_fp16(d));
    wr16(b + 2, vk_fp32_to_fp16(m));
    uint8_t *qs = b + 4;
    if (type == GGML_Q5_1) {
        uint32_t qh = 0;
        for (int j = 0; j < 32; j++)
            qh |= (uint32_t)(q[j] >> 4) << j;
        wr32(b + 4, qh);
        qs = b + 8;
    }
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | (q[j + 16] & 0x0f) << 4);
}


/* Symmetric 4 bits: d = (value of largest magnitude) / -8, so that value maps to 0 and
 * the opposite extreme to 16, clamped to 15. */
static void quant_q4_0(const float *x, uint8_t *b)
{
    float max = signed_absmax(x, 32);
    float d = max / -8.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr16(b, vk_fp32_to_fp16(d));
    for (int j = 0; j < 16; j++) {
        int lo = trunc_clamp(x[j] * id + 8.5f, 15);
        int hi = trunc_clamp(x[j + 16] * id + 8.5f, 15);
        b[2 + j] = (uint8_t)(lo | hi << 4);
    }
}

/* Asymmetric 4 bits: d = (max - min) / 15, m = min. */
static void quant_q4_1(const float *x, uint8_t *b)
{
    float mn, mx;
    min_max(x, 32, &mn, &mx);
    float d = (mx - mn) / 15.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)trunc_clamp((x[j] - mn) * id + 0.5f, 15);
    vk_pack_q_1(GGML_Q4_1, b, d, mn, q);
}

static void quant_q5_0(const float *x, uint8_t *b)
{
    float max = signed_absmax(x, 32);
    float d = max / -16.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    wr16(b, vk_fp32_to_fp16(d));
    for (int j = 0; j < 16; j++) {
        int lo = trunc_clamp(x[j] * id + 16.5f, 31);
        int hi = trunc_clamp(x[j + 16] * id + 16.5f, 31);
        b[6 + j] = (uint8_t)((lo & 0x0f) | (hi & 0x0f) << 4);
        qh |= (uint32_t)(lo >> 4) << j;
        qh |= (uint32_t)(hi >> 4) << (j + 16);
    }
    wr32(b + 2, qh);
}

static void quant_q5_1(const float *x, uint8_t *b)
{
    float mn, mx;
    min_max(x, 32, &mn, &mx);
    float d = (mx - mn) / 31.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint8_t q[32];
    for (int j = 0; j < 32; j++)
        q[j] = (uint8_t)trunc_clamp((x[j] - mn) * id + 0.5f, 31);
    vk_pack_q_1(GGML_Q5_1, b, d, mn, q);
}

/* roundf (half away from zero) without the libm call it costs on baseline x86-64: the
 * K-quant conversions at load spend most of their time here. */
static float round_half_away(float v)
{
    if (!(fabsf(v) < 8388608.0f)) /* 2^23: already an integer, or inf/NaN */
        return v;
    float t = (float)(int32_t)v, r = v - t; /* truncation; the difference is exact */
    return t + (float)((r >= 0.5f) - (r <= -0.5f));
}

/* Symmetric 8 bits: d = amax / 127, q = round half away from zero (roundf). */
static void quant_q8_0(const float *x, uint8_t *b)
{
    float amax = 0.0f;
    for (int j = 0; j < 32; j++)
        if (fabsf(x[j]) > amax) /* (not fmaxf: a call too; a NaN is skipped either way) */
            amax = fabsf(x[j]);
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    wr16(b, vk_fp32_to_fp16(d));
    for (int j = 0; j < 32; j++) {
        float q = round_half_away(x[j] * id);
        if (!(q >= -128.0f)) /* also NaN: keeps the int8 conversion defined */
            q = q != q ? 0.0f : -128.0f;
        if (q > 127.0f)
            q = 127.0f;
        b[2 + j] = (uint8_t)(int8_t)q;
    }
}

uint64_t vk_quantize_row(uint32_t type, const float *src, void *dst, uint64_t n)
{
    uint8_t *d = dst;
    ggml_type_traits t = ggml_traits(type);
    if (!t.supported || n % t.block_size != 0)
        return 0;
    void (*block_fn)(const float *, uint8_t *) = NULL;
    switch (type) {
    case GGML_F32:
        memcpy(d, src, n * sizeof(float));
        return n * sizeof(float);
    case GGML_F16:
        for (uint64_t i = 0; i < n; i++)
            wr16(d + 2 * i, vk_fp32_to_fp16(src[i]));
        return n * 2;
    case GGML_BF16:
        for (uint64_t i = 0; i < n; i++)
            wr16(d + 2 * i, vk_fp32_to_bf16(src[i]));
        return n * 2;
    case GGML_Q4_0: block_fn = quant_q4_0; break;
    case GGML_Q4_1: block_fn = quant_q4_1; break;
    case GGML_Q5_0: block_fn = quant_q5_0; break;
    case GGML_Q5_1: block_fn = quant_q5_1; break;
    case GGML_Q8_0: block_fn = quant_q8_0; break;
    default: return 0;
    }
    for (uint64_t i = 0; i < n / t.block_size; i++)
        block_fn(src + i * t.block_size, d + i * t.block_bytes);
    return n / t.block_size * t.block_bytes;
}

/* ---- conversion to what the device computes with --------------------------------------- */

int32_t vk_weight_type_ggml(int32_t weight_type)
{
    switch (weight_type) {
    case VKLLM_WEIGHTS_F32: return GGML_F32;
    case VKLLM_WEIGHTS_F16: return GGML_F16;
    case VKLLM_WEIGHTS_Q8_0: return GGML_Q8_0;
    case VKLLM_WEIGHTS_Q4_0: return GGML_Q4_0;
    default: return -1;
    }
}

uint32_t vk_compute_type(uint32_t type)
{
    switch (type) {
    case GGML_Q4_K: return GGML_Q4_1;
    case GGML_Q5_K: return GGML_Q5_1;
    case GGML_Q2_K:
    case GGML_Q3_K:
    case GGML_Q6_K: return GGML_Q8_0;
    default: return ggml_traits(type).supported ? type : GGML_TYPE_COUNT;
    }
}

/* Sub-block j of a q4_K/q5_K super-block as one q4_1/q5_1 block: the same quants, with
 * d = fp16(d * sc) and m = fp16(-dmin * m). Returns 0 when those do not fit in fp16. */
static int k_sub_block_as_q_1(uint32_t type, const uint8_t *b, int j, uint8_t *out)
{
    int sc, m;
    scale_min_k4(j, b + 4, &sc, &m);
    float d = half_at(b) * (float)sc, mn = -(half_at(b + 2) * (float)m);
    if (!(fabsf(d) <= 65504.0f && fabsf(mn) <= 65504.0f))
        return 0;
    uint8_t q[32];
    for (int l = 0; l < 32; l++)
        q[l] = (uint8_t)(type == GGML_Q4_K ? quant_q4_k(b + 16, j, l) : quant_q5_k(b + 16, b + 48, j, l));
    vk_pack_q_1(type == GGML_Q4_K ? GGML_Q4_1 : GGML_Q5_1, out, d, mn, q);
    return 1;
}

/* Whether `type` can hold these floats: no NaN, and its fp16 fields (scales, values) stay
 * finite (a Q8_0 scale is amax / 127, and so on). */
static int fits(uint32_t type, const float *x, uint64_t n)
{
    float amax = 0.0f;
    for (uint64_t i = 0; i < n; i++) {
        if (x[i] != x[i])
            return 0;
        if (fabsf(x[i]) > amax)
            amax = fabsf(x[i]);
    }
    switch (type) {
    case GGML_F16:
    case GGML_Q4_1:
    case GGML_Q5_1: return amax <= 65504.0f;
    case GGML_Q4_0: return amax / 8.0f <= 65504.0f;
    case GGML_Q5_0: return amax / 16.0f <= 65504.0f;
    case GGML_Q8_0: return amax / 127.0f <= 65504.0f;
    default: return 1;
    }
}

uint64_t vk_convert_row(uint32_t src_type, const void *src, uint32_t dst_type, void *dst, uint64_t n,
                        float *scratch)
{
    ggml_type_traits st = ggml_traits(src_type), dt = ggml_traits(dst_type);
    uint64_t bytes = ggml_row_bytes(dst_type, n);
    if (!st.name || !dt.supported || bytes == 0 || ggml_row_bytes(src_type, n) == 0)
        return 0;
    const uint8_t *s = src;
    uint8_t *d = dst;
    if ((src_type == GGML_Q4_K && dst_type == GGML_Q4_1) || (src_type == GGML_Q5_K && dst_type == GGML_Q5_1)) {
        for (uint64_t i = 0; i < n / QK_K; i++)
            for (int j = 0; j < 8; j++)
                if (!k_sub_block_as_q_1(src_type, s + i * st.block_bytes, j, d + (8 * i + (uint64_t)j) * dt.block_bytes))
                    return 0;
        return bytes;
    }
    if (vk_dequantize_row(src_type, src, scratch, n) != 0 || !fits(dst_type, scratch, n))
        return 0;
    return vk_quantize_row(dst_type, scratch, dst, n);
}
