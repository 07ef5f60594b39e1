#include "ref_fixture.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

#define REF_MAGIC "VKLLMREF"
#define REF_VERSION 1u
/* Sanity limits: far above any fixture we write, low enough that a hostile header
 * cannot make us allocate absurd amounts before the size checks catch it. */
#define REF_MAX_PROMPTS 4096u
#define REF_MAX_VOCAB (1u << 22)

float ref_half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h >> 15);
    const uint32_t exp = (h >> 10) & 0x1f;
    const uint32_t mant = h & 0x3ff;
    float v;
    if (exp == 0)
        v = ldexpf((float)mant, -24); /* zero and subnormals: mant * 2^-24 */
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexpf((float)(mant | 0x400), (int)exp - 25); /* 1.mant * 2^(exp-15) */
    return sign ? -v : v;
}

uint32_t ref_argmax(const float *row, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (row[i] > row[best])
            best = i;
    return best;
}

/* A cursor over the image; every read checks what is left. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
    size_t size;
} reader;

static size_t reader_offset(const reader *r) { return r->size - r->left; }

static vkllm_status take(reader *r, void *dst, size_t n, const char *what)
{
    if (n > r->left)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "reference fixture: truncated reading %s (%zu bytes at offset %zu, %zu left)",
                       what, n, reader_offset(r), r->left);
    if (dst) /* NULL: only reporting a truncation (see take_i32s) */
        memcpy(dst, r->p, n);
    r->p += n;
    r->left -= n;
    return VKLLM_OK;
}

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static vkllm_status take_u32(reader *r, uint32_t *v, const char *what)
{
    if (r->left < 4)
        return take(r, NULL, 4, what); /* reports the truncation */
    *v = le32(r->p);
    r->p += 4;
    r->left -= 4;
    return VKLLM_OK;
}

/* n little-endian int32 into a fresh array */
static vkllm_status take_i32s(reader *r, uint32_t n, int32_t **out, const char *what)
{
    *out = NULL;
    if ((size_t)n * 4 > r->left)
        return take(r, NULL, (size_t)n * 4, what); /* reports the truncation */
    int32_t *a = malloc(((size_t)n + 1) * sizeof *a);
    if (!a)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "reference fixture: %s", what);
    for (uint32_t i = 0; i < n; i++)
        a[i] = (int32_t)le32(r->p + 4 * (size_t)i);
    r->p += 4 * (size_t)n;
    r->left -= 4 * (size_t)n;
    *out = a;
    return VKLLM_OK;
}

/* rows x cols halves widened to floats */
static vkllm_status take_halves(reader *r, uint32_t rows, uint32_t cols, float **out,
                                const char *what)
{
    *out = NULL;
    const size_t n = (size_t)rows * cols; /* both < 2^32, fits a 64-bit size_t */
    if (rows != 0 && n / rows != cols)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: %s: size overflows", what);
    if (n > r->left / 2)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "reference fixture: truncated reading %s (%u x %u halves at offset %zu, "
                       "%zu bytes left)",
                       what, rows, cols, reader_offset(r), r->left);
    float *a = malloc((n + 1) * sizeof *a);
    if (!a)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "reference fixture: %s: %zu floats", what,
                       n);
    for (size_t i = 0; i < n; i++)
        a[i] = ref_half_to_float((uint16_t)(r->p[2 * i] | r->p[2 * i + 1] << 8));
    r->p += 2 * n;
    r->left -= 2 * n;
    *out = a;
    return VKLLM_OK;
}

static vkllm_status parse_prompt(reader *r, uint32_t index, ref_prompt *pr)
{
    vkllm_status st;
    char what[64];
    snprintf(what, sizeof what, "prompt %u header", index);
    if ((st = take_u32(r, &pr->text_len, what)) != VKLLM_OK)
        return st;
    if (pr->text_len > r->left)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "reference fixture: prompt %u: text of %u bytes, only %zu left", index,
                       pr->text_len, r->left);
    pr->text = malloc((size_t)pr->text_len + 1);
    if (!pr->text)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "reference fixture: prompt text");
    take(r, pr->text, pr->text_len, what);
    pr->text[pr->text_len] = '\0';
    uint32_t *fields[6] = {&pr->add_bos, &pr->parse_special, &pr->n_tokens,
                           &pr->n_vocab, &pr->n_gen, &pr->n_gen_rows};
    for (int i = 0; i < 6; i++)
        if ((st = take_u32(r, fields[i], what)) != VKLLM_OK)
            return st;
    if (pr->add_bos > 1 || pr->parse_special > 1)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: prompt %u: flags %u %u not 0/1",
                       index, pr->add_bos, pr->parse_special);
    if (pr->n_vocab == 0 || pr->n_vocab > REF_MAX_VOCAB)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: prompt %u: n_vocab %u", index,
                       pr->n_vocab);
    if (pr->n_tokens == 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: prompt %u has no tokens", index);
    if (pr->n_gen_rows != 0 && pr->n_gen_rows != pr->n_gen)
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "reference fixture: prompt %u: n_gen_rows %u is neither 0 nor n_gen %u",
                       index, pr->n_gen_rows, pr->n_gen);
    snprintf(what, sizeof what, "prompt %u tokens", index);
    if ((st = take_i32s(r, pr->n_tokens, &pr->tokens, what)) != VKLLM_OK)
        return st;
    snprintf(what, sizeof what, "prompt %u greedy tokens", index);
    if ((st = take_i32s(r, pr->n_gen, &pr->gen, what)) != VKLLM_OK)
        return st;
    for (size_t i = 0; i < (size_t)pr->n_tokens + pr->n_gen; i++) {
        int32_t t = i < pr->n_tokens ? pr->tokens[i] : pr->gen[i - pr->n_tokens];
        if (t < 0 || (uint32_t)t >= pr->n_vocab)
            return vk_fail(VKLLM_ERR_BAD_FILE,
                           "reference fixture: prompt %u: token %d outside the vocabulary of %u",
                           index, t, pr->n_vocab);
    }
    snprintf(what, sizeof what, "prompt %u logits", index);
    if ((st = take_halves(r, pr->n_tokens, pr->n_vocab, &pr->logits, what)) != VKLLM_OK)
        return st;
    snprintf(what, sizeof what, "prompt %u greedy-step logits", index);
    return take_halves(r, pr->n_gen_rows, pr->n_vocab, &pr->gen_logits, what);
}

vkllm_status ref_fixture_parse(const uint8_t *data, size_t size, ref_fixture *out)
{
    if (!out)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "reference fixture: NULL output");
    memset(out, 0, sizeof *out);
    if (!data && size)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "reference fixture: NULL data");
    reader r = {data, size, size};
    char magic[8];
    vkllm_status st;
    if ((st = take(&r, magic, sizeof magic, "magic")) != VKLLM_OK)
        return st;
    if (memcmp(magic, REF_MAGIC, sizeof magic) != 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: bad magic (not \"" REF_MAGIC "\")");
    if ((st = take_u32(&r, &out->version, "version")) != VKLLM_OK)
        return st;
    if (out->version != REF_VERSION)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: version %u, this reader knows %u",
                       out->version, REF_VERSION);
    uint32_t n_prompts = 0;
    if ((st = take_u32(&r, &n_prompts, "n_prompts")) != VKLLM_OK)
        return st;
    if ((st = take(&r, out->model_sha256, 32, "model sha256")) != VKLLM_OK)
        return st;
    if (n_prompts == 0 || n_prompts > REF_MAX_PROMPTS)
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: n_prompts %u", n_prompts);
    out->prompts = calloc(n_prompts, sizeof *out->prompts);
    if (!out->prompts)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "reference fixture: %u prompts", n_prompts);
    out->n_prompts = n_prompts;
    for (uint32_t i = 0; i < n_prompts; i++) {
        if ((st = parse_prompt(&r, i, &out->prompts[i])) != VKLLM_OK) {
            ref_fixture_free(out);
            return st;
        }
    }
    if (r.left != 0) {
        ref_fixture_free(out);
        return vk_fail(VKLLM_ERR_BAD_FILE, "reference fixture: %zu bytes after the last prompt",
                       r.left);
    }
    return VKLLM_OK;
}

vkllm_status ref_fixture_load(const char *path, ref_fixture *out)
{
    if (out)
        memset(out, 0, sizeof *out);
    if (!path || !out)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "reference fixture: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f)
        return vk_fail(VKLLM_ERR_IO, "%s: %s", path, strerror(errno));
    uint8_t *data = NULL;
    size_t size = 0, cap = 0;
    for (;;) {
        if (size == cap) {
            size_t ncap = cap ? cap * 2 : (size_t)1 << 20;
            uint8_t *nd = realloc(data, ncap);
            if (!nd) {
                free(data);
                fclose(f);
                return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "%s: reading", path);
            }
            data = nd;
            cap = ncap;
        }
        size_t got = fread(data + size, 1, cap - size, f);
        size += got;
        if (got == 0)
            break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        return vk_fail(VKLLM_ERR_IO, "%s: read error", path);
    }
    vkllm_status st = ref_fixture_parse(data, size, out);
    free(data);
    if (st != VKLLM_OK)
        return vk_fail_prefix(st, "%s", path);
    return VKLLM_OK;
}

void ref_fixture_free(ref_fixture *f)
{
    if (!f)
        return;
    for (uint32_t i = 0; f->prompts && i < f->n_prompts; i++) {
        ref_prompt *p = &f->prompts[i];
        free(p->text);
        free(p->tokens);
        free(p->gen);
        free(p->logits);
        free(p->gen_logits);
    }
    free(f->prompts);
    memset(f, 0, sizeof *f);
}
