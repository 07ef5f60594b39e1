/* lib/quant.c against the `gguf` python package's reference quantizers.
 *
 * Usage: test_quant <path to tests/fixtures/quant_reference.bin>
 * The fixture and its layout come from tests/fixtures/make_quant_fixture.py. Checks:
 *  - the type table (block sizes and bytes) against gguf-py's GGML_QUANT_SIZES;
 *  - fp16/bf16 conversions: hand-picked edge cases, and hashes over all 65536 halves and
 *    ~320k probe floats (around every fp16 rounding boundary) against numpy / gguf-py;
 *  - for F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: vk_quantize_row bytes identical to
 *    gguf-py's quantize(), vk_dequantize_row floats bit-identical to its dequantize();
 *  - for the K-quants (Q2_K..Q6_K): vk_dequantize_row bit-identical to gguf-py's
 *    dequantize() of random super-blocks, and vk_convert_row to the type the device
 *    computes with (vk_compute_type) within the error its fp16 scales allow. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

static int failures;

#define CHECK(cond, ...)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            failures++;                                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                 \
            printf(__VA_ARGS__);                                                        \
            printf("\n");                                                               \
        }                                                                               \
    } while (0)

static uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- fixture reading --------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    size_t size, pos;
    int bad;
} cursor;

static const uint8_t *take(cursor *c, size_t n)
{
    if (c->bad || n > c->size - c->pos) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *r = c->p + c->pos;
    c->pos += n;
    return r;
}

static uint64_t take_le(cursor *c, unsigned n)
{
    const uint8_t *p = take(c, n);
    uint64_t v = 0;
    for (unsigned i = 0; p && i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static float *take_floats(cursor *c, uint32_t n)
{
    float *out = malloc((size_t)n * sizeof(float) + 1);
    for (uint32_t i = 0; i < n; i++)
        out[i] = u2f((uint32_t)take_le(c, 4));
    return out;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n + 1);
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *size = (size_t)n;
    return buf;
}

/* ---- hashes as the fixture script computes them ---------------------------------- */

typedef struct fnv {
    uint64_t h;
} fnv;

static void fnv_bytes(fnv *s, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        s->h = (s->h ^ ((v >> (8 * i)) & 0xff)) * 0x100000001b3ull;
}

/* The probe floats of make_quant_fixture.py's probe_floats(), in the same order. */
static float *probe_floats(size_t *n_out)
{
    static const double special[] = {0.0, -0.0, INFINITY, -INFINITY, 65504, 65519.996, 65520,
                                     1e10, 5.960464477539063e-08, 2.9802322387695312e-08,
                                     2.98023259e-08, 6.103515625e-05, 6.1035156e-05,
                                     3.3895314e38};
    const size_t n_half = 0x7c00, n_special = sizeof special / sizeof special[0];
    const size_t n_pos = 4 * n_half + n_special;
    float *pos = malloc(n_pos * sizeof(float));
    for (size_t h = 0; h < n_half; h++) {
        double lo = vk_fp16_to_fp32((uint16_t)h);
        double hi = h + 1 < n_half ? vk_fp16_to_fp32((uint16_t)(h + 1)) : 65536.0;
        float mid = (float)((lo + hi) / 2);
        pos[h] = (float)lo;
        pos[n_half + h] = mid;
        pos[2 * n_half + h] = nextafterf(mid, 0.0f);
        pos[3 * n_half + h] = nextafterf(mid, INFINITY);
    }
    for (size_t i = 0; i < n_special; i++)
        pos[4 * n_half + i] = (float)special[i];

    float *all = malloc((2 * n_pos + 65536) * sizeof(float));
    size_t n = 0;
    for (size_t i = 0; i < n_pos; i++)
        all[n++] = pos[i];
    for (size_t i = 0; i < n_pos; i++)
        all[n++] = -pos[i];
    for (uint64_t b = 0; b < (1ull << 32); b += 65537) {
        float f = u2f((uint32_t)b);
        if (!isnan(f))
            all[n++] = f;
    }
    free(pos);
    *n_out = n;
    return all;
}

static void check_hashes(cursor *c)
{
    uint32_t n_checks = (uint32_t)take_le(c, 4);
    size_t n_probe;
    float *probe = probe_floats(&n_probe);
    for (uint32_t k = 0; k < n_checks && !c->bad; k++) {
        uint32_t kind = (uint32_t)take_le(c, 4);
        uint32_t n = (uint32_t)take_le(c, 4);
        uint64_t want = take_le(c, 8);
        fnv s = {0xcbf29ce484222325ull};
        if (kind == 0) {
            CHECK(n == 65536, "fp16 check over %u values", n);
            for (uint32_t h = 0; h < 65536; h++) {
                float f = vk_fp16_to_fp32((uint16_t)h);
                fnv_bytes(&s, isnan(f) ? 0x7fc00000u : f2u(f), 4);
            }
            printf("fp16->fp32, all 65536 halves vs numpy: %s\n", s.h == want ? "identical" : "DIFFER");
        } else {
            CHECK(n == n_probe, "probe count: fixture %u, here %zu", n, n_probe);
            for (size_t i = 0; i < n_probe; i++)
                fnv_bytes(&s, kind == 1 ? vk_fp32_to_fp16(probe[i]) : vk_fp32_to_bf16(probe[i]), 2);
            printf("fp32->%s, %zu probe floats vs %s: %s\n", kind == 1 ? "fp16" : "bf16", n_probe,
                   kind == 1 ? "numpy astype(float16)" : "gguf-py BF16", s.h == want ? "identical" : "DIFFER");
        }
        CHECK(s.h == want, "conversion hash kind %u: got %016llx want %016llx", kind,
              (unsigned long long)s.h, (unsigned long long)want);
    }
    free(probe);
}

/* ---- hand-picked conversion cases ------------------------------------------------- */

static void check_fp16_cases(void)
{
    const float tiny = 5.9604644775390625e-08f; /* 2^-24, the smallest fp16 subnormal */
    struct { float f; uint16_t h; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3c00}, {-2.0f, 0xc000},
        {65504.0f, 0x7bff}, {65519.99f, 0x7bff}, {65520.0f, 0x7c00}, {1e6f, 0x7c00},
        {-1e6f, 0xfc00}, {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
        {6.103515625e-05f, 0x0400},             /* 2^-14, smallest normal */
        {tiny, 0x0001}, {0.5f * tiny, 0x0000},   /* tie between 0 and 1: even is 0 */
        {u2f(f2u(0.5f * tiny) + 1), 0x0001},     /* just above the tie */
        {1.5f * tiny, 0x0002}, {2.5f * tiny, 0x0002}, {-3.5f * tiny, 0x8004},
        {1.0f + 1.0f / 2048, 0x3c00},            /* tie, even stays */
        {1.0f + 3.0f / 2048, 0x3c02},            /* tie, odd rounds up */
        {1.0f + 1.0f / 2048 + 1.0f / 65536, 0x3c01},
        {6.097555160522461e-05f, 0x03ff},        /* largest subnormal */
        {1e-10f, 0x0000}, {-1e-10f, 0x8000}, {u2f(0x00000001), 0x0000},
    };
    int n_bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = vk_fp32_to_fp16(cases[i].f);
        CHECK(h == cases[i].h, "fp32_to_fp16(%a) = 0x%04x, want 0x%04x", cases[i].f, h, cases[i].h);
        n_bad += h != cases[i].h;
    }
    CHECK(isnan(vk_fp16_to_fp32(vk_fp32_to_fp16(NAN))), "NaN survives fp16");
    CHECK(isnan(vk_fp16_to_fp32(vk_fp32_to_fp16(u2f(0x7f800001)))), "signalling NaN stays NaN");
    CHECK(vk_fp16_to_fp32(0x0001) == tiny, "fp16 0x0001 = 2^-24");
    CHECK(vk_fp16_to_fp32(0x03ff) == 6.097555160522461e-05f, "largest fp16 subnormal");
    CHECK(vk_fp16_to_fp32(0xfc00) == -INFINITY, "fp16 -inf");
    CHECK(f2u(vk_fp16_to_fp32(0x8000)) == 0x80000000u, "fp16 -0");

    /* Every non-NaN half survives fp16 -> fp32 -> fp16. */
    int trip_bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = vk_fp16_to_fp32((uint16_t)h);
        if (!isnan(f) && vk_fp32_to_fp16(f) != h)
            trip_bad++;
    }
    CHECK(trip_bad == 0, "%d halves do not round-trip", trip_bad);
    printf("fp16: %zu edge cases, %d wrong; round trip of all non-NaN halves: %d wrong\n",
           sizeof cases / sizeof cases[0], n_bad, trip_bad);
}

static void check_bf16_cases(void)
{
    struct { float f; uint16_t h; } cases[] = {
        {0.0f, 0x0000}, {-0.0f, 0x8000}, {1.0f, 0x3f80}, {-2.0f, 0xc000},
        {1.0f + 1.0f / 256, 0x3f80},           /* tie, even stays */
        {1.0f + 3.0f / 256, 0x3f82},           /* tie, odd rounds up */
        {1.0f + 1.0f / 256 + 1.0f / 65536, 0x3f81},
        {3.4028234663852886e38f, 0x7f80},      /* FLT_MAX rounds to inf */
        {INFINITY, 0x7f80}, {-INFINITY, 0xff80},
        {u2f(0x00000001), 0x0000}, {u2f(0x00008000), 0x0000}, {u2f(0x00018000), 0x0002},
    };
    int n_bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint16_t h = vk_fp32_to_bf16(cases[i].f);
        CHECK(h == cases[i].h, "fp32_to_bf16(%a) = 0x%04x, want 0x%04x", cases[i].f, h, cases[i].h);
        n_bad += h != cases[i].h;
    }
    uint16_t nan_h = vk_fp32_to_bf16(u2f(0x7f800001)); /* payload only in the low bits */
    CHECK(isnan(vk_bf16_to_fp32(nan_h)), "bf16 of a low-payload NaN is 0x%04x, not NaN", nan_h);
    CHECK(vk_bf16_to_fp32(0x3f80) == 1.0f && vk_bf16_to_fp32(0xff80) == -INFINITY, "bf16 decode");
    printf("bf16: %zu edge cases, %d wrong\n", sizeof cases / sizeof cases[0], n_bad);
}

/* ---- the type table ---------------------------------------------------------------- */

static void check_traits(cursor *c)
{
    uint32_t n = (uint32_t)take_le(c, 4);
    int seen[GGML_TYPE_COUNT] = {0};
    int matched = 0;
    for (uint32_t i = 0; i < n && !c->bad; i++) {
        uint32_t id = (uint32_t)take_le(c, 4);
        uint32_t bs = (uint32_t)take_le(c, 4);
        uint32_t tb = (uint32_t)take_le(c, 4);
        ggml_type_traits t = ggml_traits(id);
        if (!t.name) {
            /* gguf-py 0.19 knows types newer than vkllm's table (NVFP4 = 40, Q1_0 = 41) */
            CHECK(id >= GGML_TYPE_COUNT, "type %u is in gguf-py but not in vkllm's table", id);
            printf("note: type %u (%u/%u) is newer than vkllm's table: rejected as unknown\n",
                   id, bs, tb);
            continue;
        }
        seen[id] = 1;
        if (id == GGML_Q8_1 && tb == 40) {
            /* gguf-py still has the old float d, s layout; ggml's block_q8_1 has been
             * two fp16s + 32 quants = 36 bytes since 2024. */
            CHECK(t.block_size == bs && t.block_bytes == 36, "q8_1 is %u/%u", t.block_size,
                  t.block_bytes);
            printf("note: q8_1: gguf-py says 40 bytes (stale float layout), vkllm uses ggml's 36\n");
            matched++;
            continue;
        }
        CHECK(t.block_size == bs && t.block_bytes == tb, "%s: vkllm %u/%u, gguf-py %u/%u",
              t.name, t.block_size, t.block_bytes, bs, tb);
        matched += t.block_size == bs && t.block_bytes == tb;
    }
    for (uint32_t id = 0; id < GGML_TYPE_COUNT; id++)
        CHECK(!ggml_traits(id).name || seen[id], "vkllm type %u (%s) unknown to gguf-py", id,
              ggml_traits(id).name);
    printf("type table: %d types match gguf-py's GGML_QUANT_SIZES\n", matched);

    /* Which ids are unknown, and what `supported` says. */
    const uint32_t holes[] = {4, 5, 31, 32, 33, 36, 37, 38, 40, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof holes / sizeof holes[0]; i++)
        CHECK(ggml_traits(holes[i]).name == NULL && ggml_traits(holes[i]).block_size == 0,
              "type %u should be unknown", holes[i]);
    const uint32_t sup[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1,
                            GGML_Q5_0, GGML_Q5_1};
    int n_sup = 0;
    for (uint32_t id = 0; id < GGML_TYPE_COUNT; id++)
        n_sup += ggml_traits(id).supported;
    for (size_t i = 0; i < sizeof sup / sizeof sup[0]; i++)
        CHECK(ggml_traits(sup[i]).supported, "%s should be supported", ggml_traits(sup[i]).name);
    CHECK(n_sup == 8, "%d supported types, want 8", n_sup);
    CHECK(strcmp(ggml_traits(GGML_Q4_K).name, "q4_K") == 0, "q4_K name");

    CHECK(ggml_row_bytes(GGML_Q4_0, 64) == 36, "q4_0 row of 64");
    CHECK(ggml_row_bytes(GGML_Q4_0, 33) == 0, "q4_0 row of 33 is not whole blocks");
    CHECK(ggml_row_bytes(GGML_F32, 5) == 20, "f32 row of 5");
    CHECK(ggml_row_bytes(GGML_Q6_K, 512) == 420, "q6_K row of 512");
    CHECK(ggml_row_bytes(GGML_F32, 0) == 0, "empty row");
    CHECK(ggml_row_bytes(4, 32) == 0, "unknown type 4");
    CHECK(ggml_row_bytes(GGML_Q8_K, UINT64_MAX - 255) == 0, "q8_K row bytes overflow");
    CHECK(ggml_row_bytes(GGML_F64, UINT64_MAX / 4) == 0, "f64 row bytes overflow");

    float f[256];
    uint8_t buf[512];
    memset(f, 0, sizeof f);
    memset(buf, 0, sizeof buf);
    CHECK(vk_dequantize_row(GGML_IQ2_XXS, buf, f, 256) == -1, "iq2_xxs dequantize unsupported");
    CHECK(vk_dequantize_row(GGML_Q4_K, buf, f, 255) == -1, "q4_K partial super-block rejected");
    CHECK(vk_quantize_row(GGML_Q4_K, f, buf, 256) == 0, "q4_K quantize unsupported");
    CHECK(vk_compute_type(GGML_IQ2_XXS) == GGML_TYPE_COUNT && vk_compute_type(GGML_Q8_1) == GGML_TYPE_COUNT &&
          vk_compute_type(1000) == GGML_TYPE_COUNT, "no compute type for iq2_xxs, q8_1, 1000");
    CHECK(vk_compute_type(GGML_Q5_0) == GGML_Q5_0 && vk_compute_type(GGML_BF16) == GGML_BF16,
          "supported types compute as themselves");
    CHECK(vk_convert_row(GGML_Q4_K, buf, GGML_Q4_1, buf + 256, 32, f) == 0, "q4_K row of 32 not converted");
    CHECK(vk_convert_row(GGML_Q4_K, buf, GGML_Q4_K, buf + 256, 256, f) == 0, "no conversion to q4_K");
    f[0] = NAN;
    CHECK(vk_convert_row(GGML_F32, f, GGML_Q8_0, buf, 32, f + 32) == 0, "NaN does not convert");
    f[0] = 8e6f;
    CHECK(vk_convert_row(GGML_F32, f, GGML_Q8_0, buf, 32, f + 32) == 34, "8e6 fits q8_0 (d = 62992)");
    f[0] = 1e8f;
    CHECK(vk_convert_row(GGML_F32, f, GGML_Q4_0, buf, 32, f + 32) == 0, "1e8 overflows the q4_0 scale");
    CHECK(vk_quantize_row(GGML_Q8_0, f, buf, 33) == 0, "partial block rejected");
    CHECK(vk_dequantize_row(77, buf, f, 32) == -1, "unknown type rejected");
}

/* ---- quantize / dequantize against the reference --------------------------------- */

static void check_records(cursor *c, const float *x, uint32_t n)
{
    uint32_t n_rec = (uint32_t)take_le(c, 4);
    float *deq = malloc(n * sizeof(float));
    uint8_t *mine = malloc((size_t)n * 4);
    printf("%-5s %6s %12s %12s %14s %14s\n", "type", "bytes", "quant bytes", "dequant",
           "max err/amax", "rms err/amax");
    for (uint32_t r = 0; r < n_rec && !c->bad; r++) {
        uint32_t type = (uint32_t)take_le(c, 4);
        uint32_t nb = (uint32_t)take_le(c, 4);
        const uint8_t *ref = take(c, nb);
        float *ref_deq = take_floats(c, n);
        if (c->bad) {
            free(ref_deq);
            break;
        }
        ggml_type_traits t = ggml_traits(type);
        CHECK(t.supported, "fixture type %u should be supported", type);
        CHECK(ggml_row_bytes(type, n) == nb, "%s: row bytes %llu, fixture %u", t.name,
              (unsigned long long)ggml_row_bytes(type, n), nb);

        /* Quantize: bytes identical. */
        memset(mine, 0xa5, (size_t)n * 4);
        uint64_t written = vk_quantize_row(type, x, mine, n);
        CHECK(written == nb, "%s: quantize wrote %llu bytes, want %u", t.name,
              (unsigned long long)written, nb);
        uint32_t diff_bytes = 0, first_diff = UINT32_MAX;
        for (uint32_t i = 0; i < nb; i++)
            if (mine[i] != ref[i]) {
                diff_bytes++;
                if (first_diff == UINT32_MAX)
                    first_diff = i;
            }
        CHECK(diff_bytes == 0, "%s: %u of %u quantized bytes differ (first at byte %u, block %u)",
              t.name, diff_bytes, nb, first_diff, first_diff / t.block_bytes);

        /* Dequantize the reference bytes: floats bit-identical. */
        CHECK(vk_dequantize_row(type, ref, deq, n) == 0, "%s: dequantize failed", t.name);
        /* Error of the round trip relative to the largest magnitude in its 32-block
         * (what the block scale is made from), for the record; blocks below 1e-6 (the
         * 1e-9 block, whose scale underflows fp16 by design) are left out. */
        uint32_t diff_floats = 0;
        double max_err = 0, sq = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (f2u(deq[i]) != f2u(ref_deq[i]))
                diff_floats++;
            double amax = 0;
            for (uint32_t j = i / 32 * 32; j < i / 32 * 32 + 32; j++)
                amax = fmax(amax, fabs(x[j]));
            double e = amax > 1e-6 ? fabs((double)deq[i] - x[i]) / amax : 0;
            if (e > max_err)
                max_err = e;
            sq += e * e;
        }
        CHECK(diff_floats == 0, "%s: %u of %u dequantized floats differ", t.name, diff_floats, n);
        printf("%-5s %6u %12s %12s %14.6g %14.6g\n", t.name, nb,
               diff_bytes ? "DIFFER" : "identical", diff_floats ? "DIFFER" : "identical",
               max_err, sqrt(sq / n));
        free(ref_deq);
    }
    free(deq);
    free(mine);
}

/* ---- K-quants: decoding, and conversion to what the device computes with ----------- */

/* Largest error the conversion of a super-block may add: q4_K/q5_K keep the quants and
 * round d * sc and dmin * m (sc, m < 64) to fp16, so a weight moves by at most
 * qmax * ulp(63 d) / 2 + ulp(63 dmin) / 2, with ulp(v) <= max(v * 2^-10, 2^-24); q2_K,
 * q3_K and q6_K are requantized to q8_0, whose step d is amax / 127 over each 32 weights:
 * a weight moves by at most half a step plus 127 times the fp16 rounding of d (ggml's
 * quantizer rounds with the f32 d, the stored one is fp16). */
static double conversion_bound(uint32_t type, const uint8_t *b, const float *w)
{
    if (type == GGML_Q4_K || type == GGML_Q5_K) {
        double d = fabs(vk_fp16_to_fp32((uint16_t)(b[0] | b[1] << 8))) * 63;
        double dmin = fabs(vk_fp16_to_fp32((uint16_t)(b[2] | b[3] << 8))) * 63;
        double qmax = type == GGML_Q4_K ? 15 : 31, ulp_floor = ldexp(1, -24);
        return qmax * fmax(d * ldexp(1, -10), ulp_floor) / 2 + fmax(dmin * ldexp(1, -10), ulp_floor) / 2 +
               ldexp(qmax * d + dmin, -22); /* the f32 products and sum */
    }
    double amax = 0;
    for (int i = 0; i < 32; i++)
        amax = fmax(amax, fabs(w[i]));
    return amax / 127 * 0.5 + 127 * fmax(amax / 127 * ldexp(1, -11), ldexp(1, -25)) + ldexp(1, -24);
}

static void check_decoded(cursor *c)
{
    uint32_t n_rec = (uint32_t)take_le(c, 4);
    printf("%-5s %6s %10s %10s %12s %16s\n", "type", "bytes", "dequant", "as", "converted",
           "max err/bound");
    for (uint32_t r = 0; r < n_rec && !c->bad; r++) {
        uint32_t type = (uint32_t)take_le(c, 4), n = (uint32_t)take_le(c, 4), nb = (uint32_t)take_le(c, 4);
        const uint8_t *bytes = take(c, nb);
        float *ref = take_floats(c, n);
        if (c->bad) {
            free(ref);
            break;
        }
        ggml_type_traits t = ggml_traits(type);
        CHECK(t.name && t.block_size == 256 && !t.supported, "fixture type %u should be a K-quant", type);
        CHECK(ggml_row_bytes(type, n) == nb, "%s: row bytes %llu, fixture %u", t.name,
              (unsigned long long)ggml_row_bytes(type, n), nb);
        float *deq = malloc(n * sizeof(float)), *back = malloc(256 * sizeof(float)), scratch[256];
        uint8_t conv[256 * 34 / 32];

        CHECK(vk_dequantize_row(type, bytes, deq, n) == 0, "%s: dequantize failed", t.name);
        uint32_t diff = 0;
        for (uint32_t i = 0; i < n; i++)
            diff += f2u(deq[i]) != f2u(ref[i]);
        CHECK(diff == 0, "%s: %u of %u dequantized floats differ", t.name, diff, n);

        /* Convert each super-block alone: the fixture's block 4 has d = 4000, whose products
         * with the scales leave fp16 (q4_K, q5_K) or make a q8_0 scale overflow (q6_K). */
        uint32_t ct = vk_compute_type(type), refused = 0, unfit = 0, converted = 0;
        uint32_t want_ct = type == GGML_Q4_K ? GGML_Q4_1 : type == GGML_Q5_K ? GGML_Q5_1 : GGML_Q8_0;
        CHECK(ct == want_ct, "%s computes as %u, want %u", t.name, ct, want_ct);
        double worst = 0;
        for (uint32_t blk = 0; blk < n / 256; blk++) {
            const uint8_t *b = bytes + blk * t.block_bytes;
            uint64_t w = vk_convert_row(type, b, ct, conv, 256, scratch);
            double amax = 0;
            for (int i = 0; i < 256; i++)
                amax = fmax(amax, fabs(ref[blk * 256 + i]));
            int must_fit = (type == GGML_Q4_K || type == GGML_Q5_K) ? blk != 4 : amax / 127 <= 65504;
            unfit += !must_fit;
            if (!w) {
                refused++;
                CHECK(!must_fit, "%s: super-block %u not converted", t.name, blk);
                continue;
            }
            converted++;
            CHECK(w == ggml_row_bytes(ct, 256), "%s: converted to %llu bytes", t.name, (unsigned long long)w);
            CHECK(vk_dequantize_row(ct, conv, back, 256) == 0, "%s: converted block does not decode", t.name);
            for (int i = 0; i < 256; i++) {
                double bound = conversion_bound(type, b, ref + blk * 256 + i / 32 * 32);
                double e = fabs((double)back[i] - ref[blk * 256 + i]);
                CHECK(e <= bound, "%s block %u weight %d: %.9g converted to %.9g (bound %.3g)", t.name, blk, i,
                      ref[blk * 256 + i], back[i], bound);
                if (bound > 0 && e / bound > worst)
                    worst = e / bound;
            }
        }
        CHECK(refused == unfit, "%s: %u super-blocks refused, want %u", t.name, refused, unfit);
        CHECK(type == GGML_Q2_K || type == GGML_Q3_K || unfit == 1, "%s: the d = 4000 block should not fit", t.name);
        printf("%-5s %6u %10s %10s %5u of %-5u %16.4f\n", t.name, nb, diff ? "DIFFER" : "identical",
               ggml_traits(ct).name, converted, n / 256, worst);
        free(deq);
        free(back);
        free(ref);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep the log complete if a sanitizer aborts */
    if (argc < 2) {
        fprintf(stderr, "usage: %s quant_reference.bin\n", argv[0]);
        return 1;
    }
    size_t size;
    uint8_t *blob = read_file(argv[1], &size);
    if (!blob) {
        printf("FAIL: cannot read fixture %s\n", argv[1]);
        return 1;
    }
    cursor c = {blob, size, 0, 0};
    const uint8_t *magic = take(&c, 4);
    uint32_t version = (uint32_t)take_le(&c, 4);
    if (!magic || memcmp(magic, "VKQR", 4) != 0 || version != 2) {
        printf("FAIL: %s is not a version 2 quant fixture\n", argv[1]);
        return 1;
    }
    uint32_t n = (uint32_t)take_le(&c, 4);
    float *x = take_floats(&c, n);
    printf("fixture %s: %zu bytes, %u input floats\n", argv[1], size, n);

    check_fp16_cases();
    check_bf16_cases();
    check_traits(&c);
    check_records(&c, x, n);
    check_hashes(&c);
    check_decoded(&c);
    CHECK(!c.bad && c.pos == c.size, "fixture truncated or with trailing bytes (%zu of %zu read)",
          c.pos, c.size);

    free(x);
    free(blob);
    if (failures) {
        printf("%d check(s) FAILED\n", failures);
        return 1;
    }
    printf("all quant checks passed\n");
    return 0;
}
