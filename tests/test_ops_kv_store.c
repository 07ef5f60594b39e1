/* KV store: f32 rows -> f16 cache row (params.n_past + t) % n_ctx, against lib/quant.c's
 * round-to-nearest-even conversion. Checks the rows written, that no other row or the
 * memory after the cache changes, the f16 and packed-uint paths (minimal profile), odd
 * widths (refused without 16-bit storage), positions past n_ctx (they wrap: the rolling
 * cache of windowed attention), src split across bindings, and a recording replayed as
 * n_past grows. */
#include "quant.h"
#include "vk_test.h"

#define SENTINEL 0x7e55u /* a NaN pattern no store produces */

/* Vulkan leaves the f32 -> f16 rounding mode to the implementation: allow one f16 ulp,
 * report how many are exact (all, on round-to-nearest-even devices). */
/* The cache as the stores should leave it: position p of a step in row p % n_ctx. */
static void apply_step(uint16_t *want, uint32_t n_ctx, uint32_t width, const float *src, uint32_t n_tokens,
                       uint32_t n_past)
{
    for (uint32_t t = 0; t < n_tokens; t++)
        for (uint32_t c = 0; c < width; c++)
            want[(size_t)((n_past + t) % n_ctx) * width + c] = vk_fp32_to_fp16(src[(size_t)t * width + c]);
}

/* Vulkan leaves the f32 -> f16 rounding mode to the implementation: allow one f16 ulp,
 * report how many are exact (all, on round-to-nearest-even devices). */
static int check_cache(const uint16_t *cache, const uint16_t *want, size_t n, const char *what)
{
    size_t exact = 0, near = 0, bad = 0, checked = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t got = cache[i];
        if (want[i] == SENTINEL) {
            bad += got != SENTINEL;
            continue;
        }
        checked++;
        int diff = (int)(got & 0x7fff) - (int)(want[i] & 0x7fff);
        if (got == want[i])
            exact++;
        else if ((got & 0x8000) == (want[i] & 0x8000) && (diff == 1 || diff == -1))
            near++;
        else
            bad++;
    }
    t_check(bad == 0, "%s: %zu values stored, %zu exact, %zu within 1 ulp, %zu wrong or stray",
            what, checked, exact, near, bad);
    return bad == 0;
}

static void check(vkr_device *dev, uint32_t width, uint32_t n_ctx, uint32_t n_tokens,
                  uint32_t n_past, uint32_t replay_n_past)
{
    size_t n = (size_t)n_tokens * width, cache_n = (size_t)n_ctx * width;
    float *src = malloc(n * 4), *src2 = malloc(n * 4);
    t_fill_random(src, n, width + n_tokens);
    t_fill_random(src2, n, width + n_tokens + 99);
    for (size_t i = 0; i < n; i++)
        src[i] *= 300.0f;
    const float specials[] = {0.0f, -0.0f, 65504.0f, -65504.0f, 6.0e-8f, 1e-6f, -3e-5f, 0.1f,
                              1.0009765625f, 1.00048828125f /* a tie: rounds to even */};
    for (size_t i = 0; i < n && i < sizeof specials / sizeof *specials; i++)
        src[i] = specials[i];
    uint16_t *cache = malloc(cache_n * 2 + 64);
    /* The cache tensor is followed by 64 guard bytes inside the same buffer. */
    op_tensor buf = t_tensor(dev, cache_n * 2 + 64);
    for (size_t i = 0; i < cache_n + 32; i++)
        ((uint16_t *)buf.buffer->mapped)[i] = SENTINEL;
    op_tensor tcache = {buf.buffer, 0, cache_n * 2};
    op_tensor tsrc = t_tensor_from(dev, src, n * 4);
    vk_step_params params = {n_past, n_tokens, {0, 0}};
    op_tensor tp = t_tensor_from(dev, &params, sizeof params);

    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_kv_store(cmd, dev, tsrc, tcache, tp, n_tokens, width);
    char what[120];
    snprintf(what, sizeof what, "kv_store width %u n_ctx %u tokens %u n_past %u (%s)", width, n_ctx,
             n_tokens, n_past, dev->caps.storage16 ? "f16 storage" : "packed uint");
    if (width % 2 && !dev->caps.storage16) {
        t_check(s == VKLLM_ERR_UNSUPPORTED, "%s refused: %s", what, vk_error_message());
        vkr_cmd_destroy(cmd);
    } else {
        t_check(!s, "record %s: %s", what, s ? vk_error_message() : "ok");
        if (vkr_cmd_end(cmd) || vkr_cmd_submit_wait(cmd)) {
            printf("FAIL: submit: %s\n", vk_error_message());
            exit(1);
        }
        memcpy(cache, buf.buffer->mapped, cache_n * 2 + 64);
        uint16_t *want = malloc(cache_n * 2);
        for (size_t i = 0; i < cache_n; i++)
            want[i] = SENTINEL;
        apply_step(want, n_ctx, width, src, n_tokens, n_past);
        check_cache(cache, want, cache_n, what);
        size_t guard_bad = 0;
        for (size_t i = cache_n; i < cache_n + 32; i++)
            guard_bad += cache[i] != SENTINEL;
        t_check(guard_bad == 0, "nothing written past the cache (%zu guard values changed)", guard_bad);

        /* replay: the next step's rows go to replay_n_past, the earlier rows stay */
        memcpy(tsrc.buffer->mapped, src2, n * 4);
        params.n_past = replay_n_past;
        memcpy(tp.buffer->mapped, &params, sizeof params);
        if (vkr_cmd_submit_wait(cmd)) {
            printf("FAIL: resubmit: %s\n", vk_error_message());
            exit(1);
        }
        memcpy(cache, buf.buffer->mapped, cache_n * 2);
        apply_step(want, n_ctx, width, src2, n_tokens, replay_n_past);
        snprintf(what, sizeof what, "replay at n_past %u", replay_n_past);
        check_cache(cache, want, cache_n, what);
        free(want);
        vkr_cmd_destroy(cmd);
    }
    t_tensor_free(dev, buf), t_tensor_free(dev, tsrc), t_tensor_free(dev, tp);
    free(src), free(src2), free(cache);
}

int main(void)
{
    vkr_device *dev = t_device();
    /* width, n_ctx, n_tokens, n_past, replay n_past */
    check(dev, 64, 16, 1, 0, 1);
    check(dev, 128, 64, 7, 33, 40);
    check(dev, 10, 9, 3, 5, 0);      /* rows straddle the alignment */
    check(dev, 5, 8, 2, 1, 3);       /* odd width: f16 storage only */
    check(dev, 64, 400, 300, 50, 0); /* src 75 KiB: split across small-range bindings */
    check(dev, 32, 20, 6, 17, 30);   /* positions past n_ctx wrap around (rolling cache) */
    return t_finish(dev);
}
