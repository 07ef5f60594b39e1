/* Self-test of the reference fixtures and their reader (tests/ref_fixture.c).
 *
 * Loads tests/fixtures/{smollm2,stories260k}_reference.bin and checks that each is
 * consistent in itself: the argmax of the last prompt row is the first greedy token, the
 * argmax of every stored decode-step row is the next greedy token, every logit is finite
 * and the rows are not degenerate. Then it feeds the reader damaged copies (every
 * truncation point of the small fixture, bad magic, version, sizes, trailing bytes) and
 * expects VKLLM_ERR_BAD_FILE each time, never a crash.
 *
 * Usage: test_ref_fixture <tests/fixtures directory> */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ref_fixture.h"

static int failures;

#define CHECK(cond, ...)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            printf(__VA_ARGS__);                                                          \
            printf("\n");                                                                 \
            failures++;                                                                   \
        }                                                                                 \
    } while (0)

static void test_half(void)
{
    const struct {
        uint16_t h;
        float f;
    } cases[] = {
        {0x0000, 0.0f},           {0x3c00, 1.0f},         {0xc000, -2.0f},
        {0x3555, 0.333251953125f}, {0x7bff, 65504.0f},     {0x0400, 6.103515625e-05f},
        {0x0001, 5.9604644775390625e-08f},                  {0x03ff, 6.097555160522461e-05f},
        {0x7c00, INFINITY},        {0xfc00, -INFINITY},    {0x4248, 3.140625f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float v = ref_half_to_float(cases[i].h);
        CHECK(v == cases[i].f, "half 0x%04x -> %.9g, expected %.9g", cases[i].h, (double)v,
              (double)cases[i].f);
    }
    CHECK(isnan(ref_half_to_float(0x7e00)), "half 0x7e00 must be NaN");
    CHECK(signbit(ref_half_to_float(0x8000)), "half 0x8000 must be -0");
    printf("half -> float: %zu exact values, NaN, -0\n", sizeof cases / sizeof cases[0]);
}

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = n > 0 ? malloc((size_t)n) : NULL;
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) {
        free(d);
        d = NULL;
    }
    fclose(f);
    *size = d ? (size_t)n : 0;
    return d;
}

/* Internal consistency of one loaded fixture. */
static void check_fixture(const char *name, const ref_fixture *fx, uint32_t want_vocab,
                          int want_gen_rows)
{
    int zero_sha = 1;
    for (int i = 0; i < 32; i++)
        zero_sha &= fx->model_sha256[i] == 0;
    CHECK(!zero_sha, "%s: model sha256 is all zero", name);
    for (uint32_t p = 0; p < fx->n_prompts; p++) {
        const ref_prompt *pr = &fx->prompts[p];
        CHECK(pr->n_vocab == want_vocab, "%s prompt %u: n_vocab %u, expected %u", name, p,
              pr->n_vocab, want_vocab);
        CHECK(pr->text_len > 0 && strlen(pr->text) == pr->text_len, "%s prompt %u: text", name,
              p);
        CHECK(pr->n_gen > 0, "%s prompt %u: no greedy tokens", name, p);
        CHECK(want_gen_rows ? pr->n_gen_rows == pr->n_gen : pr->n_gen_rows == 0,
              "%s prompt %u: n_gen_rows %u", name, p, pr->n_gen_rows);

        /* finite, and not degenerate: each row has a real spread */
        const uint32_t V = pr->n_vocab;
        double min_spread = INFINITY, max_abs = 0.0;
        int nonfinite = 0;
        for (uint32_t r = 0; r < pr->n_tokens + pr->n_gen_rows; r++) {
            const float *row = r < pr->n_tokens ? pr->logits + (size_t)r * V
                                                : pr->gen_logits + (size_t)(r - pr->n_tokens) * V;
            float lo = INFINITY, hi = -INFINITY;
            for (uint32_t i = 0; i < V; i++) {
                nonfinite += !isfinite(row[i]);
                lo = row[i] < lo ? row[i] : lo;
                hi = row[i] > hi ? row[i] : hi;
                max_abs = fabs(row[i]) > max_abs ? fabs(row[i]) : max_abs;
            }
            min_spread = hi - lo < min_spread ? hi - lo : min_spread;
        }
        CHECK(nonfinite == 0, "%s prompt %u: %d non-finite logits", name, p, nonfinite);
        CHECK(min_spread > 1.0, "%s prompt %u: a row spans only %.3f", name, p, min_spread);

        /* rows of different positions differ (the file is not one row repeated) */
        if (pr->n_tokens > 1)
            CHECK(memcmp(pr->logits, pr->logits + V, V * sizeof(float)) != 0,
                  "%s prompt %u: rows 0 and 1 identical", name, p);

        /* greedy consistency */
        uint32_t first = ref_argmax(pr->logits + (size_t)(pr->n_tokens - 1) * V, V);
        CHECK((int32_t)first == pr->gen[0], "%s prompt %u: argmax of the last prompt row %u, "
              "first greedy token %d", name, p, first, pr->gen[0]);
        int agree = 0;
        for (uint32_t j = 0; j + 1 < pr->n_gen_rows; j++)
            agree += (int32_t)ref_argmax(pr->gen_logits + (size_t)j * V, V) == pr->gen[j + 1];
        if (pr->n_gen_rows)
            CHECK(agree == (int)pr->n_gen_rows - 1, "%s prompt %u: %d of %u decode rows agree",
                  name, p, agree, pr->n_gen_rows - 1);
        char shown[41];
        size_t k = 0;
        for (uint32_t i = 0; i < pr->text_len && k + 2 < sizeof shown; i++) {
            if (pr->text[i] == '\n')
                shown[k++] = '\\', shown[k++] = 'n';
            else
                shown[k++] = pr->text[i];
        }
        shown[k] = '\0';
        printf("%s prompt %u %-40s: %u tokens, %u greedy, argmax(last row)=%u==gen[0]; "
               "%d/%d decode rows' argmax == next token; |logit| <= %.2f\n",
               name, p, shown, pr->n_tokens, pr->n_gen, first, agree,
               pr->n_gen_rows ? (int)pr->n_gen_rows - 1 : 0, max_abs);
    }
}

static void expect_bad(const uint8_t *data, size_t size, const char *what)
{
    ref_fixture fx;
    vkllm_status st = ref_fixture_parse(data, size, &fx);
    CHECK(st == VKLLM_ERR_BAD_FILE, "%s: status %d (%s)", what, st, vk_error_message());
    CHECK(fx.prompts == NULL, "%s: output not left empty", what);
    ref_fixture_free(&fx);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16),
    p[3] = (uint8_t)(v >> 24);
}

/* Damaged copies of a (small) fixture image. */
static void test_hostile(const uint8_t *good, size_t size)
{
    uint8_t *buf = malloc(size + 16);
    /* every truncation of the header and first prompt fields, then a stride through the
     * logits, then the last bytes */
    int n_trunc = 0;
    for (size_t cut = 0; cut < size; cut += cut < 512 ? 1 : cut + 997 < size - 16 ? 997 : 1) {
        memcpy(buf, good, cut);
        expect_bad(buf, cut, "truncated");
        n_trunc++;
    }
    memcpy(buf, good, size);
    buf[size] = 0;
    expect_bad(buf, size + 1, "one trailing byte");

    memcpy(buf, good, size);
    buf[0] = 'X';
    expect_bad(buf, size, "bad magic");

    memcpy(buf, good, size);
    put_u32(buf + 8, 2);
    expect_bad(buf, size, "version 2");

    memcpy(buf, good, size);
    put_u32(buf + 12, 0);
    expect_bad(buf, size, "0 prompts");
    put_u32(buf + 12, 0xffffffffu);
    expect_bad(buf, size, "2^32-1 prompts");

    /* first prompt: text_len at 48, then the 6 fields after the text */
    uint32_t text_len = (uint32_t)good[48] | (uint32_t)good[49] << 8;
    size_t fields = 52 + text_len;
    memcpy(buf, good, size);
    put_u32(buf + 48, 0x7fffffffu);
    expect_bad(buf, size, "huge text_len");
    const struct {
        int field;
        uint32_t value;
        const char *what;
    } bad_fields[] = {
        {0, 2, "add_bos 2"},           {2, 0, "0 tokens"},
        {2, 0xffffffffu, "2^32-1 tokens"}, {3, 0, "n_vocab 0"},
        {3, 0xffffffffu, "n_vocab 2^32-1"}, {3, 1, "n_vocab 1 (token ids out of range)"},
        {4, 0xffffffffu, "2^32-1 greedy tokens"}, {5, 7, "n_gen_rows neither 0 nor n_gen"},
    };
    for (size_t i = 0; i < sizeof bad_fields / sizeof bad_fields[0]; i++) {
        memcpy(buf, good, size);
        put_u32(buf + fields + 4 * (size_t)bad_fields[i].field, bad_fields[i].value);
        expect_bad(buf, size, bad_fields[i].what);
    }
    memcpy(buf, good, size);
    put_u32(buf + fields + 24, 0x80000000u); /* first token id negative */
    expect_bad(buf, size, "negative token id");

    ref_fixture fx;
    vkllm_status st = ref_fixture_load("/nonexistent/dir/x.bin", &fx);
    CHECK(st == VKLLM_ERR_IO, "missing file: status %d", st);
    printf("hostile input: %d truncations, trailing byte, magic, version, counts, sizes, ids "
           "-> all VKLLM_ERR_BAD_FILE; missing file -> VKLLM_ERR_IO\n", n_trunc);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        printf("usage: %s <tests/fixtures directory>\n", argv[0]);
        return 1;
    }
    test_half();

    const struct {
        const char *file;
        uint32_t n_vocab;
        int gen_rows;
    } fixtures[] = {{"smollm2_reference.bin", 49152, 0}, {"stories260k_reference.bin", 512, 1}};
    for (size_t i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", argv[1], fixtures[i].file);
        ref_fixture fx;
        vkllm_status st = ref_fixture_load(path, &fx);
        CHECK(st == VKLLM_OK, "load: %s", vk_error_message());
        if (st != VKLLM_OK)
            continue;
        check_fixture(fixtures[i].file, &fx, fixtures[i].n_vocab, fixtures[i].gen_rows);
        ref_fixture_free(&fx);
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/stories260k_reference.bin", argv[1]);
    size_t size;
    uint8_t *good = read_all(path, &size);
    CHECK(good != NULL, "cannot read %s", path);
    if (good) {
        test_hostile(good, size);
        free(good);
    }

    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("reference fixtures: all checks passed\n");
    return 0;
}
