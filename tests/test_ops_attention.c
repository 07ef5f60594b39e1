/* Causal attention over an f16 KV cache against a double-precision C reference that reads
 * the same f16 values (so the comparison measures the shader's arithmetic, not f16
 * rounding). Covers long contexts that would trip llvmpipe's 65,535-trip loop cut if the
 * keys were not split across a workgroup (kv length 4000 and 8192, head_dim 128), GQA and
 * MQA (5 query heads over 1 KV head), head_dim 80 and 256, n_tokens 1 and 7 with n_past 0
 * and 33, large logits (online softmax stability), sliding windows, ALiBi (ggml slopes,
 * non-power-of-two head count), q/out split across bindings, caches too large for one
 * binding (refused), and a recording of kv_store + attention replayed as n_past grows.
 * Every case runs through the three shapes of the shader (VKLLM_ATTENTION=rows, =prefill and
 * =lanes, the last on CPU devices with subgroups), each also with its keys split across
 * workgroups (VKLLM_ATTENTION_SPLIT, flash decoding), then prompt-sized batches take the
 * default choice. */
#include <float.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "quant.h"
#include "vk_test.h"

/* Same f16 inputs; float dot products, exp and sums vs double. A score s carries float
 * rounding of about |s| * 2^-23 per term, which exp turns into a relative error of the
 * weights: cases with large logits get ATT_ATOL + 4 * FLT_EPSILON * max|s| (still far
 * below the 2e-3 an f16-unaware comparison would need). */
#define ATT_ATOL 2e-5f
#define ATT_RTOL 1e-4f

typedef struct att_case {
    uint32_t n_tokens, n_heads, n_heads_kv, head_dim, n_ctx, n_past;
    float q_amp, scale; /* scale 0: 1/sqrt(head_dim) */
    uint32_t window;
    float alibi;
    bool cpu_split; /* a CPU device must split the keys, whatever the shape (llvmpipe's loop cut) */
} att_case;

/* Scratch for split key ranges, as the context sizes it. */
static op_tensor t_partials(vkr_device *dev, const op_attention_desc *d)
{
    uint64_t bytes = op_attention_partials_bytes(dev, d);
    return t_tensor(dev, bytes > 16 ? bytes : 16);
}

/* Whether the shapes are asked to split keys (VKLLM_ATTENTION_SPLIT > 1). */
static bool split_asked(void)
{
    const char *e = getenv("VKLLM_ATTENTION_SPLIT");
    return e && atoi(e) > 1;
}

/* Returns the largest |score|. */
static double ref_attention(const float *q, const uint16_t *kc, const uint16_t *vc,
                            const op_attention_desc *d, uint32_t n_past, float *out)
{
    double max_score = 0;
    uint32_t group = d->n_heads / d->n_heads_kv, hd = d->head_dim;
    size_t row = (size_t)d->n_heads_kv * hd;
    uint32_t n_log2 = 1;
    while (n_log2 * 2 <= d->n_heads)
        n_log2 *= 2;
    double *s = malloc(d->n_ctx * sizeof *s), *o = malloc(hd * sizeof *o);
    for (uint32_t t = 0; t < d->n_tokens; t++) {
        uint32_t pos = n_past + t;
        uint32_t end = pos + 1 < d->n_ctx ? pos + 1 : d->n_ctx;
        uint32_t begin = d->window && pos + 1 > d->window ? pos + 1 - d->window : 0;
        for (uint32_t h = 0; h < d->n_heads; h++) {
            const float *qh = q + ((size_t)t * d->n_heads + h) * hd;
            uint32_t hk = h / group;
            /* ggml_soft_max_ext's ALiBi slope */
            double slope = 0;
            if (d->alibi_max_bias > 0) {
                float m0 = powf(2.0f, -d->alibi_max_bias / n_log2);
                float m1 = powf(2.0f, -(d->alibi_max_bias / 2.0f) / n_log2);
                slope = h < n_log2 ? powf(m0, h + 1) : powf(m1, 2 * (h - n_log2) + 1);
            }
            double m = -INFINITY, sum = 0;
            for (uint32_t j = begin; j < end; j++) {
                double dot = 0;
                for (uint32_t c = 0; c < hd; c++)
                    dot += (double)qh[c] * vk_fp16_to_fp32(kc[j * row + hk * hd + c]);
                s[j] = dot * d->scale + slope * ((double)j - pos);
                max_score = fabs(s[j]) > max_score ? fabs(s[j]) : max_score;
                m = s[j] > m ? s[j] : m;
            }
            for (uint32_t c = 0; c < hd; c++)
                o[c] = 0;
            for (uint32_t j = begin; j < end; j++) {
                double p = exp(s[j] - m);
                sum += p;
                for (uint32_t c = 0; c < hd; c++)
                    o[c] += p * vk_fp16_to_fp32(vc[j * row + hk * hd + c]);
            }
            float *oh = out + ((size_t)t * d->n_heads + h) * hd;
            for (uint32_t c = 0; c < hd; c++)
                oh[c] = sum > 0 ? (float)(o[c] / sum) : 0.0f;
        }
    }
    free(s), free(o);
    return max_score;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void check(vkr_device *dev, att_case c)
{
    op_attention_desc d = {c.n_tokens, c.n_heads, c.n_heads_kv, c.head_dim, c.n_ctx,
                           c.scale ? c.scale : 1.0f / sqrtf((float)c.head_dim), c.window, c.alibi};
    size_t nq = (size_t)c.n_tokens * c.n_heads * c.head_dim;
    size_t nc = (size_t)c.n_ctx * c.n_heads_kv * c.head_dim;
    float *q = malloc(nq * 4), *want = malloc(nq * 4), *got = malloc(nq * 4), *tmp = malloc(nc * 4);
    uint16_t *kc = malloc(nc * 2), *vc = malloc(nc * 2);
    t_fill_random(q, nq, c.head_dim * 13 + c.n_tokens);
    for (size_t i = 0; i < nq; i++)
        q[i] *= c.q_amp;
    t_fill_random(tmp, nc, c.n_ctx + 1);
    for (size_t i = 0; i < nc; i++)
        kc[i] = vk_fp32_to_fp16(tmp[i]);
    t_fill_random(tmp, nc, c.n_ctx + 2);
    for (size_t i = 0; i < nc; i++)
        vc[i] = vk_fp32_to_fp16(tmp[i]);
    op_tensor tq = t_tensor_from(dev, q, nq * 4), tout = t_tensor(dev, nq * 4);
    op_tensor tk = t_tensor_from(dev, kc, nc * 2), tv = t_tensor_from(dev, vc, nc * 2);
    vk_step_params params = {c.n_past, c.n_tokens, {0, 0}};
    op_tensor tp = t_tensor_from(dev, &params, sizeof params);

    char what[160];
    snprintf(what, sizeof what,
             "attention tok %u heads %u/%u dim %u ctx %u n_past %u amp %g%s%s window %u alibi %g",
             c.n_tokens, c.n_heads, c.n_heads_kv, c.head_dim, c.n_ctx, c.n_past, c.q_amp,
             dev->caps.subgroup_arithmetic ? " subgroup" : " shared",
             dev->caps.storage16 ? " f16" : " packed", c.window, c.alibi);
    op_tensor tpart = t_partials(dev, &d);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_attention(cmd, dev, tq, tk, tv, tp, tout, tpart, &d);
    if (nc * 2 > dev->caps.max_storage_buffer_range) {
        t_check(s == VKLLM_ERR_UNSUPPORTED, "cache over one binding refused: %s", vk_error_message());
        vkr_cmd_destroy(cmd);
    } else {
        t_check(!s, "record %s: %s", what, s ? vk_error_message() : "ok");
        /* Split keys take a second dispatch (the merge) per binding-sized run of tokens.
         * They split where asked, on a CPU device where llvmpipe's loop cut needs it, and
         * the per-row shape does not on a CPU device below ~93,000 keys (GPUs choose for
         * themselves). */
        uint32_t n_dispatch = vkr_cmd_dispatch_count(cmd);
        bool split = op_attention_partials_bytes(dev, &d) > 0;
        const char *shape = getenv("VKLLM_ATTENTION");
        bool cpu = dev->caps.device_type == VKLLM_DEVICE_CPU;
        if (split)
            t_check(n_dispatch >= 2 && n_dispatch % 2 == 0, "keys split: %u dispatches (attention + merge)",
                    n_dispatch);
        if (split_asked())
            t_check(split, "keys split as asked");
        if (cpu && c.cpu_split)
            t_check(split, "keys split on a CPU device");
        if (cpu && !split_asked() && shape && !strcmp(shape, "rows") && c.n_ctx <= 8192)
            t_check(!split, "per-row shape: keys not split on a CPU device");
        double t0 = now_ms();
        t_run(cmd);
        double gpu = now_ms() - t0;
        double max_score = ref_attention(q, kc, vc, &d, c.n_past, want);
        t_read(dev, tout, got, nq * 4);
        float atol = ATT_ATOL + 4 * FLT_EPSILON * (float)max_score;
        printf("     (max |score| %.3g)\n", max_score);
        t_compare(what, got, want, nq, atol, ATT_RTOL);
        printf("     (submit+wait %.1f ms)\n", gpu);
    }
    t_tensor_free(dev, tq), t_tensor_free(dev, tout), t_tensor_free(dev, tk);
    t_tensor_free(dev, tv), t_tensor_free(dev, tp), t_tensor_free(dev, tpart);
    free(q), free(want), free(got), free(tmp), free(kc), free(vc);
}

/* Decode as the dispatcher will run it: one recording (kv_store K, kv_store V, attention)
 * replayed for each step with only params.n_past changed. The reference reads the cache
 * the GPU wrote. */
static void check_replay(vkr_device *dev, uint32_t n_tokens, uint32_t steps)
{
    const uint32_t n_heads = 6, n_kv = 2, hd = 32, n_ctx = steps * n_tokens + 3;
    uint32_t width = n_kv * hd;
    size_t nq = (size_t)n_tokens * n_heads * hd, nkv = (size_t)n_tokens * width;
    size_t nc = (size_t)n_ctx * width;
    op_attention_desc d = {n_tokens, n_heads, n_kv, hd, n_ctx, 1.0f / sqrtf((float)hd), 0, 0};
    op_tensor tq = t_tensor(dev, nq * 4), tk_new = t_tensor(dev, nkv * 4), tv_new = t_tensor(dev, nkv * 4);
    op_tensor tout = t_tensor(dev, nq * 4), tk = t_tensor(dev, nc * 2), tv = t_tensor(dev, nc * 2);
    op_tensor tp = t_tensor(dev, sizeof(vk_step_params)), tpart = t_partials(dev, &d);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_kv_store(cmd, dev, tk_new, tk, tp, n_tokens, width);
    s = s ? s : op_kv_store(cmd, dev, tv_new, tv, tp, n_tokens, width);
    s = s ? s : op_attention(cmd, dev, tq, tk, tv, tp, tout, tpart, &d);
    t_check(!s && !vkr_cmd_end(cmd), "record kv_store + attention (%u dispatches, %u barriers)",
            vkr_cmd_dispatch_count(cmd), vkr_cmd_barrier_count(cmd));
    float *q = malloc(nq * 4), *want = malloc(nq * 4), *got = malloc(nq * 4);
    uint16_t *kc = malloc(nc * 2), *vc = malloc(nc * 2);
    double worst = 0;
    int bad = 0;
    for (uint32_t step = 0; step < steps; step++) {
        vk_step_params params = {step * n_tokens, n_tokens, {0, 0}};
        memcpy(tp.buffer->mapped, &params, sizeof params);
        t_fill_random(q, nq, 1000 + step);
        memcpy(tq.buffer->mapped, q, nq * 4);
        t_fill_random((float *)tk_new.buffer->mapped, nkv, 2000 + step);
        t_fill_random((float *)tv_new.buffer->mapped, nkv, 3000 + step);
        if (vkr_cmd_submit_wait(cmd)) {
            printf("FAIL: submit: %s\n", vk_error_message());
            exit(1);
        }
        memcpy(kc, tk.buffer->mapped, nc * 2);
        memcpy(vc, tv.buffer->mapped, nc * 2);
        ref_attention(q, kc, vc, &d, params.n_past, want);
        memcpy(got, tout.buffer->mapped, nq * 4);
        for (size_t i = 0; i < nq; i++) {
            double e = fabs((double)got[i] - want[i]);
            worst = e > worst ? e : worst;
            bad += !(e <= ATT_ATOL + ATT_RTOL * fabs(want[i]));
        }
    }
    t_check(bad == 0, "replayed %u steps of %u tokens (n_past 0..%u): max abs %.3g, %d bad", steps,
            n_tokens, (steps - 1) * n_tokens, worst, bad);
    vkr_cmd_destroy(cmd);
    t_tensor_free(dev, tq), t_tensor_free(dev, tk_new), t_tensor_free(dev, tv_new);
    t_tensor_free(dev, tout), t_tensor_free(dev, tk), t_tensor_free(dev, tv), t_tensor_free(dev, tp);
    t_tensor_free(dev, tpart);
    free(q), free(want), free(got), free(kc), free(vc);
}

/* A windowed model's rolling cache: window W, batches of T tokens, only W + T - 1 cache rows
 * (position k in row k % rows), run far past the rows. The reference keeps every position
 * (f16-rounded like the cache) and applies the window. */
static void check_rolling(vkr_device *dev, uint32_t window, uint32_t n_tokens, uint32_t steps)
{
    const uint32_t n_heads = 4, n_kv = 2, hd = 32, rows = window + n_tokens - 1;
    const uint32_t total = steps * n_tokens;
    uint32_t width = n_kv * hd;
    size_t nq = (size_t)n_tokens * n_heads * hd, nkv = (size_t)n_tokens * width;
    op_attention_desc d = {n_tokens, n_heads, n_kv, hd, rows, 1.0f / sqrtf((float)hd), window, 0};
    op_attention_desc d_ref = d;
    d_ref.n_ctx = total;
    op_tensor tq = t_tensor(dev, nq * 4), tk_new = t_tensor(dev, nkv * 4), tv_new = t_tensor(dev, nkv * 4);
    op_tensor tout = t_tensor(dev, nq * 4), tk = t_tensor(dev, (size_t)rows * width * 2);
    op_tensor tv = t_tensor(dev, (size_t)rows * width * 2), tp = t_tensor(dev, sizeof(vk_step_params));
    op_tensor tpart = t_partials(dev, &d);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_kv_store(cmd, dev, tk_new, tk, tp, n_tokens, width);
    s = s ? s : op_kv_store(cmd, dev, tv_new, tv, tp, n_tokens, width);
    s = s ? s : op_attention(cmd, dev, tq, tk, tv, tp, tout, tpart, &d);
    t_check(!s && !vkr_cmd_end(cmd), "record rolling cache: window %u, %u tokens, %u rows", window, n_tokens,
            rows);
    float *q = malloc(nq * 4), *want = malloc(nq * 4), *got = malloc(nq * 4);
    float *kn = malloc(nkv * 4), *vn = malloc(nkv * 4);
    uint16_t *kall = malloc((size_t)total * width * 2), *vall = malloc((size_t)total * width * 2);
    double worst = 0;
    int bad = 0;
    for (uint32_t step = 0; step < steps; step++) {
        vk_step_params params = {step * n_tokens, n_tokens, {0, 0}};
        memcpy(tp.buffer->mapped, &params, sizeof params);
        t_fill_random(q, nq, 5000 + step);
        t_fill_random(kn, nkv, 6000 + step);
        t_fill_random(vn, nkv, 7000 + step);
        memcpy(tq.buffer->mapped, q, nq * 4);
        memcpy(tk_new.buffer->mapped, kn, nkv * 4);
        memcpy(tv_new.buffer->mapped, vn, nkv * 4);
        for (size_t i = 0; i < nkv; i++) {
            kall[(size_t)params.n_past * width + i] = vk_fp32_to_fp16(kn[i]);
            vall[(size_t)params.n_past * width + i] = vk_fp32_to_fp16(vn[i]);
        }
        if (vkr_cmd_submit_wait(cmd)) {
            printf("FAIL: submit: %s\n", vk_error_message());
            exit(1);
        }
        ref_attention(q, kall, vall, &d_ref, params.n_past, want);
        memcpy(got, tout.buffer->mapped, nq * 4);
        for (size_t i = 0; i < nq; i++) {
            double e = fabs((double)got[i] - want[i]);
            worst = e > worst ? e : worst;
            bad += !(e <= ATT_ATOL + ATT_RTOL * fabs(want[i]));
        }
    }
    t_check(bad == 0, "rolling cache over %u positions (%u rows, window %u): max abs %.3g, %d bad", total,
            rows, window, worst, bad);
    vkr_cmd_destroy(cmd);
    t_tensor_free(dev, tq), t_tensor_free(dev, tk_new), t_tensor_free(dev, tv_new);
    t_tensor_free(dev, tout), t_tensor_free(dev, tk), t_tensor_free(dev, tv), t_tensor_free(dev, tp);
    t_tensor_free(dev, tpart);
    free(q), free(want), free(got), free(kn), free(vn), free(kall), free(vall);
}

int main(void)
{
    vkr_device *dev = t_device();
    const att_case cases[] = {
        /* tokens heads kv dim ctx n_past amp scale window alibi; caches over 64 KiB are
         * refused under the small-range profile (checked), the rest run everywhere */
        {1, 2, 2, 128, 4000, 3999, 1, 0, 0, 0, false},  /* kv length 4000: 512k trips if unsplit */
        {1, 4, 1, 128, 8192, 8191, 1, 0, 0, 0, false},  /* the full 8192 context */
        {1, 5, 1, 80, 64, 0, 1, 0, 0, 0, false},        /* MQA, dim 80, first token */
        {7, 5, 1, 80, 64, 0, 1, 0, 0, 0, false},
        {1, 5, 1, 80, 64, 33, 1, 0, 0, 0, false},
        {7, 5, 1, 80, 64, 33, 1, 0, 0, 0, false},
        {7, 8, 2, 64, 250, 240, 30, 1.0f, 0, 0, false}, /* logits to ~+-300: online softmax */
        {3, 2, 2, 256, 400, 300, 2, 0, 0, 0, false},    /* dim 256 */
        {5, 3, 3, 4, 9, 2, 1, 0, 0, 0, false},          /* dim 4 */
        {7, 4, 2, 64, 250, 200, 1, 0, 100, 0, false},   /* sliding window 100 */
        {7, 4, 2, 64, 64, 3, 1, 0, 8, 0, false},        /* window across the first positions */
        {7, 12, 12, 64, 40, 30, 1, 0, 0, 8.0f, false},  /* ALiBi, 12 heads: both slope series */
        {3, 8, 8, 32, 40, 30, 1, 0, 16, 8.0f, false},   /* ALiBi + window */
        {200, 4, 1, 64, 256, 56, 1, 0, 0, 0, false},    /* prefill: q/out over 64 KiB bindings */
        /* 100,000 keys: llvmpipe cuts a workgroup's loops (measured: wrong output from
         * 90,000-100,000 keys), so CPU devices split its keys in ranges */
        {1, 1, 1, 128, 100000, 99999, 1, 0, 0, 0, true},
    };
    /* The shapes of the shader on every case where the shape allows it: one workgroup per
     * token and head ("rows"), one invocation per token ("prefill", head_dim <= 128), and one
     * subgroup per token and head ("lanes": CPU devices with subgroups, head_dim <= 128);
     * each also with its keys split in 3 ranges merged by a second dispatch, and the first in
     * 64 (ranges of one key, and empty ones, included). Under GPU-assisted validation (slow)
     * all but the first skip the long contexts and replays with many steps; the split prompt
     * and lanes shapes and 64 ranges always do. */
    const char *gpu_av = getenv("VKLLM_GPU_AV");
    bool reduced = gpu_av && !strcmp(gpu_av, "1");
    const struct { const char *shape, *split; } modes[] = {
        {"rows", NULL}, {"rows", "3"}, {"rows", "64"}, {"prefill", NULL}, {"prefill", "3"},
        {"lanes", NULL}, {"lanes", "3"},
    };
    for (size_t m = 0; m < sizeof modes / sizeof *modes; m++) {
        bool many = modes[m].split && atoi(modes[m].split) > 8;
        /* (the split prompt and lanes shapes: the cases up to 400 keys) */
        bool brief = (reduced && m >= 1) || many || (modes[m].split && strcmp(modes[m].shape, "rows"));
        bool lanes = !strcmp(modes[m].shape, "lanes");
        setenv("VKLLM_ATTENTION", modes[m].shape, 1);
        if (modes[m].split)
            setenv("VKLLM_ATTENTION_SPLIT", modes[m].split, 1);
        else
            unsetenv("VKLLM_ATTENTION_SPLIT");
        printf("-- VKLLM_ATTENTION=%s%s%s%s\n", modes[m].shape, modes[m].split ? " VKLLM_ATTENTION_SPLIT=" : "",
               modes[m].split ? modes[m].split : "", brief ? " (reduced set)" : "");
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            /* (each head size is a shader compile of 6-40 s under gpu-av: lanes checks two) */
            if (!brief || (cases[i].n_ctx <= 400 && (!lanes || cases[i].head_dim <= 64)))
                check(dev, cases[i]);
        if (!brief || many)
            check_replay(dev, 1, 40);
        check_replay(dev, 7, 6);
        if (!brief || many)
            check_rolling(dev, 8, 1, 40);
        check_rolling(dev, 8, 5, 12);
    }
    unsetenv("VKLLM_ATTENTION");
    unsetenv("VKLLM_ATTENTION_SPLIT");
    /* The default choice, on prompt-sized batches. */
    const att_case prompts[] = {
        {64, 6, 2, 128, 600, 500, 1, 0, 0, 0, false},  /* after a long prefix, dim 128 */
        {67, 9, 3, 64, 128, 0, 1, 0, 0, 0, false},     /* 67 tokens: a partial last block */
        {40, 4, 2, 64, 100, 20, 1, 0, 16, 0, false},   /* window inside the batch */
        {33, 12, 12, 64, 64, 0, 1, 0, 0, 8.0f, false}, /* ALiBi */
        /* after 2,900 positions: on CPUs the prompt shape splits its keys */
        {64, 6, 2, 64, 3000, 2900, 1, 0, 0, 0, true},
        {40, 4, 2, 64, 3000, 2950, 1, 0, 1500, 0, false}, /* a window of 1,500 */
    };
    /* (under gpu-av the prompt shape for 128-wide heads alone took 195 s to compile) */
    for (size_t i = 0; i < sizeof prompts / sizeof *prompts; i++)
        if (!reduced || prompts[i].head_dim <= 64)
            check(dev, prompts[i]);
    return t_finish(dev);
}
