/* KV store: f32 rows -> f16 cache row (params.n_past + t) % n_ctx, against lib/quant.c's
 * round-to-nearest-even conversion. Checks the rows written, that no other row or the
 * memory after the cache changes, the f16 and packed-uint paths (minimal profile), odd
 * widths (refused without 16-bit storage), positions past n_ctx (they wrap: the rolling
 * cache of windowed attention), src split across bindings, and a recording replayed as
 * n_past grows.
 *
 * The fused op_rope_kv_store (rope of q in place, rope of k into the K cache, v into the V
 * cache, one dispatch): bit for bit against op_rope(q) + op_rope(k) + op_kv_store(k) +
 * op_kv_store(v) on the same inputs (what lets the recorder swap one for the other), and
 * against a plain C reference (ggml's float rope, then vk_fp32_to_fp16). Both rope modes,
 * partial rotation, grouped KV heads, no rotation / no q, wrapping positions, a replay at
 * another n_past, tokens split across bindings (small-range profile), k left unchanged,
 * nothing written outside the rows of the step, and bad arguments refused. */
#include "ops_rows.h"
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


/* ---- op_rope_kv_store ---- */

/* As in test_ops_rope.c: the device's sin/cos of the (bit-identical) angle differ from
 * cosf/sinf by a few 1e-7 on |x| <= 1 inputs. */
#define ROPE_ATOL 3e-6f
#define ROPE_RTOL 1e-5f

/* RoPE as ggml computes it, in place on x [n_tokens][n_heads][head_dim] at positions
 * n_past + t: theta_scale = powf(base, -2/n_rot), theta = pos * theta_scale^i by repeated
 * float multiplication, angle = freq_scale * theta, cosf/sinf. */
static void ref_rope(float *x, uint32_t n_tokens, uint32_t n_heads, uint32_t head_dim,
                     uint32_t n_rot, op_rope_mode mode, float base, float scale, uint32_t n_past)
{
    if (n_rot == 0)
        return;
    float theta_scale = powf(base, -2.0f / (float)n_rot);
    uint32_t n_half = n_rot / 2;
    for (uint32_t t = 0; t < n_tokens; t++)
        for (uint32_t h = 0; h < n_heads; h++) {
            float *r = x + ((size_t)t * n_heads + h) * head_dim;
            float theta = (float)(n_past + t);
            for (uint32_t i = 0; i < n_half; i++) {
                float a = scale * theta, c = cosf(a), s = sinf(a);
                uint32_t i0 = mode == OP_ROPE_ADJACENT ? 2 * i : i;
                uint32_t i1 = mode == OP_ROPE_ADJACENT ? 2 * i + 1 : i + n_half;
                float x0 = r[i0], x1 = r[i1];
                r[i0] = x0 * c - x1 * s;
                r[i1] = x0 * s + x1 * c;
                theta *= theta_scale;
            }
        }
}

/* The f16 cache against f32 reference values (NAN: a slot no step writes, which must keep
 * SENTINEL): exact when it is the reference rounded to f16, else within one f16 ulp of that,
 * else within the rope tolerance plus one f16 ulp (values near 0, where f16 steps are finer
 * than the rope's error). */
static int check_cache_ref(const uint16_t *cache, const float *want, size_t n, const char *what)
{
    size_t exact = 0, near = 0, tol = 0, bad = 0, checked = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t got = cache[i];
        if (isnan(want[i])) {
            bad += got != SENTINEL;
            continue;
        }
        checked++;
        uint16_t w = vk_fp32_to_fp16(want[i]);
        int diff = (int)(got & 0x7fff) - (int)(w & 0x7fff);
        int e;
        frexpf(want[i], &e);
        float ulp = ldexpf(1.0f, e - 11 < -24 ? -24 : e - 11);
        if (got == w)
            exact++;
        else if ((got & 0x8000) == (w & 0x8000) && (diff == 1 || diff == -1))
            near++;
        else if (fabsf(vk_fp16_to_fp32(got) - want[i]) <=
                 ROPE_ATOL + ROPE_RTOL * fabsf(want[i]) + ulp)
            tol++;
        else
            bad++;
    }
    t_check(bad == 0, "%s: %zu values, %zu exact, %zu within 1 f16 ulp, %zu within the rope "
            "tolerance, %zu wrong or stray", what, checked, exact, near, tol, bad);
    return bad == 0;
}

/* An f16 cache of n values set to SENTINEL, followed by 64 guard bytes (also SENTINEL) in its
 * buffer; *buf receives the whole buffer. */
static op_tensor sentinel_cache(vkr_device *dev, size_t n, op_tensor *buf)
{
    *buf = t_tensor(dev, n * 2 + 64);
    for (size_t i = 0; i < n + 32; i++)
        ((uint16_t *)buf->buffer->mapped)[i] = SENTINEL;
    return (op_tensor){buf->buffer, 0, n * 2};
}

/* Floats of a and b that differ bit for bit. */
static size_t count_bit_diffs(const void *a, const void *b, size_t n_floats)
{
    size_t d = 0;
    for (size_t i = 0; i < n_floats; i++)
        d += memcmp((const char *)a + 4 * i, (const char *)b + 4 * i, 4) != 0;
    return d;
}

typedef struct fused_case {
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim, n_rot;
    op_rope_mode mode;
    float base, scale;
    uint32_t n_ctx, n_past, replay_n_past;
    bool with_q;
} fused_case;

static void submit(vkr_cmd *cmd)
{
    if (vkr_cmd_submit_wait(cmd)) {
        printf("FAIL: submit: %s\n", vk_error_message());
        exit(1);
    }
}

static void check_fused(vkr_device *dev, fused_case c)
{
    uint32_t width = c.n_heads_kv * c.head_dim, q_width = c.n_heads * c.head_dim;
    size_t nq = (size_t)c.n_tokens * q_width, nkv = (size_t)c.n_tokens * width;
    size_t cache_n = (size_t)c.n_ctx * width;
    float *q = malloc(nq * 4), *k = malloc(nkv * 4), *v = malloc(nkv * 4);
    t_fill_random(q, nq, c.head_dim * 3 + c.n_tokens);
    t_fill_random(k, nkv, c.head_dim * 5 + c.n_tokens);
    t_fill_random(v, nkv, c.head_dim * 11 + c.n_tokens);
    vk_step_params params = {c.n_past, c.n_tokens, {0, 0}};
    op_tensor tp = t_tensor_from(dev, &params, sizeof params);
    /* the fused op's tensors, and the separate ops' */
    op_tensor fq = c.with_q ? t_tensor_from(dev, q, nq * 4) : (op_tensor){0};
    op_tensor fk = t_tensor_from(dev, k, nkv * 4), fv = t_tensor_from(dev, v, nkv * 4);
    op_tensor fkb, fvb, skb, svb;
    op_tensor fkc = sentinel_cache(dev, cache_n, &fkb), fvc = sentinel_cache(dev, cache_n, &fvb);
    op_tensor sq = t_tensor_from(dev, q, nq * 4);
    op_tensor sk = t_tensor_from(dev, k, nkv * 4), sv = t_tensor_from(dev, v, nkv * 4);
    op_tensor skc = sentinel_cache(dev, cache_n, &skb), svc = sentinel_cache(dev, cache_n, &svb);

    const char *mode = c.n_rot == 0                  ? "no rotation"
                       : c.mode == OP_ROPE_ADJACENT ? "adjacent"
                                                    : "half";
    char what[200];
    snprintf(what, sizeof what,
             "rope_kv_store %s %s q %ux%u kv %ux%u n_rot %u tokens %u n_ctx %u (%s)", mode,
             c.with_q ? "with" : "without", c.n_heads, c.head_dim, c.n_heads_kv, c.head_dim,
             c.n_rot, c.n_tokens, c.n_ctx, dev->caps.storage16 ? "f16 storage" : "packed uint");
    op_rope_kv_desc d = {
        .q = fq, .k = fk, .v = fv, .k_cache = fkc, .v_cache = fvc, .params = tp,
        .n_tokens = c.n_tokens, .n_heads = c.n_heads, .n_heads_kv = c.n_heads_kv,
        .head_dim = c.head_dim, .n_rot = c.n_rot, .mode = c.mode, .freq_base = c.base,
        .freq_scale = c.scale,
    };
    vkr_cmd *fused = t_begin(dev);
    vkllm_status s = op_rope_kv_store(fused, dev, &d);
    if (width % 2 && !dev->caps.storage16) {
        t_check(s == VKLLM_ERR_UNSUPPORTED && vkr_cmd_dispatch_count(fused) == 0, "%s refused: %s",
                what, vk_error_message());
        vkr_cmd_destroy(fused);
        goto done;
    }
    t_check(!s && !vkr_cmd_end(fused), "record %s: %s", what, s ? vk_error_message() : "ok");

    vkr_cmd *sep = t_begin(dev);
    op_rope_desc rq = {c.n_tokens, c.n_heads, c.head_dim, c.n_rot, c.mode, c.base, c.scale};
    op_rope_desc rk = {c.n_tokens, c.n_heads_kv, c.head_dim, c.n_rot, c.mode, c.base, c.scale};
    s = c.with_q ? op_rope(sep, dev, sq, tp, &rq) : VKLLM_OK;
    s = s ? s : op_rope(sep, dev, sk, tp, &rk);
    s = s ? s : op_kv_store(sep, dev, sk, skc, tp, c.n_tokens, width);
    s = s ? s : op_kv_store(sep, dev, sv, svc, tp, c.n_tokens, width);
    t_check(!s && !vkr_cmd_end(sep), "record rope + rope + kv_store + kv_store: %s",
            s ? vk_error_message() : "ok");
    /* One dispatch per run of tokens whose rows fit a binding: one unless the batch is split. */
    uint64_t row = (c.with_q && c.n_rot ? q_width : width) * 4ull;
    uint32_t rows_per = op_rows_per_binding(dev, row > width * 4ull ? row : width * 4ull);
    uint32_t runs = (c.n_tokens + rows_per - 1) / rows_per;
    t_check(vkr_cmd_dispatch_count(fused) == runs, "fused: %u dispatches (%u token runs); "
            "separate: %u dispatches", vkr_cmd_dispatch_count(fused), runs,
            vkr_cmd_dispatch_count(sep));

    float *want_q = malloc(nq * 4), *kr = malloc(nkv * 4), *got = malloc((nq > nkv ? nq : nkv) * 4);
    float *want_k = malloc(cache_n * 4);
    uint16_t *want_v = malloc(cache_n * 2);
    uint16_t *fcache = malloc(cache_n * 2 + 64), *scache = malloc(cache_n * 2 + 64);
    for (size_t i = 0; i < cache_n; i++)
        want_k[i] = NAN, want_v[i] = SENTINEL;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t np = pass ? c.replay_n_past : c.n_past;
        if (pass) { /* replay both recordings at another position, from fresh inputs */
            params.n_past = np;
            memcpy(tp.buffer->mapped, &params, sizeof params);
            if (c.with_q)
                memcpy(fq.buffer->mapped, q, nq * 4);
            memcpy(sq.buffer->mapped, q, nq * 4);
            memcpy(sk.buffer->mapped, k, nkv * 4);
        }
        submit(fused);
        submit(sep);
        char tag[240];
        snprintf(tag, sizeof tag, "%s n_past %u%s", what, np, pass ? " (replay)" : "");
        printf("  %s\n", tag);

        /* bit for bit against the separate ops */
        size_t q_diff = 0;
        if (c.with_q)
            q_diff = count_bit_diffs(fq.buffer->mapped, sq.buffer->mapped, nq);
        size_t cache_words = (cache_n * 2 + 64) / 4; /* with the guard */
        size_t kc_diff = count_bit_diffs(fkb.buffer->mapped, skb.buffer->mapped, cache_words);
        size_t vc_diff = count_bit_diffs(fvb.buffer->mapped, svb.buffer->mapped, cache_words);
        t_check(q_diff == 0 && kc_diff == 0 && vc_diff == 0,
                "bit-identical to the separate ops: q %zu floats, K and V caches %zu f16 each "
                "(with guards): %zu / %zu / %zu differ", c.with_q ? nq : 0, cache_n + 32, q_diff,
                kc_diff, vc_diff);
        size_t k_changed = count_bit_diffs(fk.buffer->mapped, k, nkv);
        size_t v_changed = count_bit_diffs(fv.buffer->mapped, v, nkv);
        t_check(k_changed == 0 && v_changed == 0,
                "k and v left unchanged (%zu / %zu floats changed)", k_changed, v_changed);

        /* against the C reference */
        if (c.with_q) {
            memcpy(want_q, q, nq * 4);
            ref_rope(want_q, c.n_tokens, c.n_heads, c.head_dim, c.n_rot, c.mode, c.base, c.scale,
                     np);
            memcpy(got, fq.buffer->mapped, nq * 4);
            t_compare("  q against the C rope", got, want_q, nq, ROPE_ATOL, ROPE_RTOL);
            size_t pass_bad = 0;
            for (size_t i = 0; i < nq; i++)
                pass_bad += i % c.head_dim >= c.n_rot && memcmp(&got[i], &q[i], 4);
            if (c.n_rot < c.head_dim)
                t_check(pass_bad == 0, "q dims %u..%u pass through unchanged (%zu changed)",
                        c.n_rot, c.head_dim - 1, pass_bad);
        }
        memcpy(kr, k, nkv * 4);
        ref_rope(kr, c.n_tokens, c.n_heads_kv, c.head_dim, c.n_rot, c.mode, c.base, c.scale, np);
        for (uint32_t t = 0; t < c.n_tokens; t++)
            memcpy(want_k + (size_t)((np + t) % c.n_ctx) * width, kr + (size_t)t * width,
                   width * 4);
        apply_step(want_v, c.n_ctx, width, v, c.n_tokens, np);
        memcpy(fcache, fkb.buffer->mapped, cache_n * 2 + 64);
        check_cache_ref(fcache, want_k, cache_n, "  K cache against C rope + vk_fp32_to_fp16");
        memcpy(scache, fvb.buffer->mapped, cache_n * 2 + 64);
        check_cache(scache, want_v, cache_n, "  V cache against vk_fp32_to_fp16");
        size_t guard_bad = 0;
        for (size_t i = cache_n; i < cache_n + 32; i++)
            guard_bad += (fcache[i] != SENTINEL) + (scache[i] != SENTINEL);
        t_check(guard_bad == 0, "nothing written past the caches (%zu guard values changed)",
                guard_bad);
    }
    vkr_cmd_destroy(fused), vkr_cmd_destroy(sep);
    free(want_q), free(kr), free(got), free(want_k), free(want_v), free(fcache), free(scache);
done:
    if (c.with_q)
        t_tensor_free(dev, fq);
    t_tensor_free(dev, fk), t_tensor_free(dev, fv);
    t_tensor_free(dev, fkb), t_tensor_free(dev, fvb);
    t_tensor_free(dev, sq), t_tensor_free(dev, sk), t_tensor_free(dev, sv);
    t_tensor_free(dev, skb), t_tensor_free(dev, svb), t_tensor_free(dev, tp);
    free(q), free(k), free(v);
}

/* Bad arguments: refused with a message, nothing recorded. */
static void expect_refused(vkr_device *dev, op_rope_kv_desc d, vkllm_status want, const char *what)
{
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_rope_kv_store(cmd, dev, &d);
    t_check(s == want && vkr_cmd_dispatch_count(cmd) == 0, "refused: %s -> %s", what,
            s ? vk_error_message() : "accepted");
    vkr_cmd_destroy(cmd);
}

static void check_refusals(vkr_device *dev)
{
    const uint32_t n_tokens = 2, heads = 4, heads_kv = 2, head_dim = 16, n_ctx = 8;
    const uint32_t width = heads_kv * head_dim;
    op_tensor tq = t_tensor(dev, n_tokens * heads * head_dim * 4);
    op_tensor tk = t_tensor(dev, n_tokens * width * 4), tv = t_tensor(dev, n_tokens * width * 4);
    op_tensor tkc = t_tensor(dev, n_ctx * width * 2), tvc = t_tensor(dev, n_ctx * width * 2);
    op_tensor tp = t_tensor(dev, sizeof(vk_step_params));
    const op_rope_kv_desc good = {
        .q = tq, .k = tk, .v = tv, .k_cache = tkc, .v_cache = tvc, .params = tp,
        .n_tokens = n_tokens, .n_heads = heads, .n_heads_kv = heads_kv, .head_dim = head_dim,
        .n_rot = head_dim, .mode = OP_ROPE_HALF, .freq_base = 10000.0f, .freq_scale = 1.0f,
    };
    op_rope_kv_desc d = good;
    d.v_cache.size -= width * 2;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "V cache one row shorter than the K cache");
    d = good, d.k_cache.size = d.v_cache.size = width * 2 - 2;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "caches smaller than one row");
    d = good, d.n_rot = 15;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "odd n_rot");
    d = good, d.n_rot = 18;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "n_rot > head_dim");
    d = good, d.mode = (op_rope_mode)7;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "unknown mode");
    d = good, d.freq_base = 0.0f;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "freq_base 0");
    d = good, d.q.size -= 4;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "q one float short");
    d = good, d.v.size -= 4;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "v one float short");
    d = good, d.n_heads_kv = 0;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "no KV heads");
    d = good, d.params.size = 8;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "params smaller than vk_step_params");
    op_tensor qk = t_tensor(dev, tq.size + tk.size); /* k's first 64 bytes are q's last */
    d = good, d.q = (op_tensor){qk.buffer, 0, tq.size};
    d.k = (op_tensor){qk.buffer, tq.size - 64, tk.size};
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "q overlaps k (in-place q would race)");
    t_tensor_free(dev, qk);
    op_tensor shared = t_tensor(dev, n_ctx * width * 2); /* v inside the V cache's bytes */
    d = good, d.v_cache = shared, d.v = (op_tensor){shared.buffer, shared.size - tv.size, tv.size};
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "V cache overlaps v");
    t_tensor_free(dev, shared);
    d = good, d.v_cache = tkc;
    expect_refused(dev, d, VKLLM_ERR_INVALID_ARGUMENT, "V cache is the K cache");
    /* a cache larger than one binding, where the profile makes that cheap to allocate */
    uint64_t range = dev->caps.max_storage_buffer_range;
    if (range <= (1u << 20)) {
        size_t bytes = (size_t)(range / (width * 2) + 1) * width * 2;
        op_tensor bk = t_tensor(dev, bytes), bv = t_tensor(dev, bytes);
        d = good, d.k_cache = bk, d.v_cache = bv;
        expect_refused(dev, d, VKLLM_ERR_UNSUPPORTED, "caches larger than a binding");
        t_tensor_free(dev, bk), t_tensor_free(dev, bv);
    } else {
        printf("     (cache larger than a binding: checked under the small-range profile)\n");
    }
    t_tensor_free(dev, tq), t_tensor_free(dev, tk), t_tensor_free(dev, tv);
    t_tensor_free(dev, tkc), t_tensor_free(dev, tvc), t_tensor_free(dev, tp);
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

    /* {n_tokens, n_heads, n_heads_kv, head_dim, n_rot, mode, base, scale, n_ctx, n_past,
     *  replay n_past, with q} */
    const fused_case cases[] = {
        {1, 4, 4, 64, 64, OP_ROPE_ADJACENT, 10000.0f, 1.0f, 16, 0, 1, true},   /* decode */
        {7, 5, 5, 80, 32, OP_ROPE_HALF, 10000.0f, 1.0f, 64, 33, 40, true},     /* phi-2, partial */
        {3, 8, 2, 128, 128, OP_ROPE_ADJACENT, 1e6f, 0.25f, 40, 30000, 4000, true}, /* GQA, far */
        {5, 6, 3, 96, 64, OP_ROPE_HALF, 10000.0f, 1.0f, 20, 17, 2, true},      /* wraps n_ctx */
        {4, 6, 3, 96, 64, OP_ROPE_ADJACENT, 10000.0f, 1.0f, 24, 5, 21, true},  /* GQA, partial */
        {4, 4, 2, 64, 0, OP_ROPE_ADJACENT, 10000.0f, 1.0f, 10, 8, 3, false},   /* ALiBi: no rope */
        {3, 4, 2, 64, 64, OP_ROPE_HALF, 10000.0f, 1.0f, 10, 8, 3, false},      /* k only */
        {3, 4, 2, 5, 4, OP_ROPE_HALF, 500.0f, 0.5f, 9, 2, 7, true},  /* f16 pairs straddle heads */
        {2, 3, 3, 5, 2, OP_ROPE_ADJACENT, 500.0f, 1.0f, 8, 1, 3, true}, /* odd width: f16 only */
        /* q 400 KiB: split across small-range bindings; the 64 KiB caches just fit one */
        {200, 8, 2, 64, 64, OP_ROPE_HALF, 10000.0f, 1.0f, 256, 100, 0, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_fused(dev, cases[i]);
    check_refusals(dev);
    return t_finish(dev);
}
