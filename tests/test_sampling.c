/* Tests of lib/sampling.c: the generator against published xoshiro256** / splitmix64
 * values, determinism, each step of the chain by its effect on draw frequencies, and the
 * error cases. Frequencies are checked against the exact distribution with absolute
 * tolerances of at least 5 standard deviations, so a correct sampler fails with odds far
 * below one in a million while a wrong cut (one token too many or too few) fails for sure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "sampling.h"

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

static vkllm_sampler_params params_off(void)
{
    vkllm_sampler_params p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    return p;
}

static vk_sampler_scratch scratch;

static int32_t sample_ok(const float *logits, uint32_t n_vocab, const vkllm_sampler_params *p,
                         const int32_t *hist, size_t n_hist, vk_rng *rng)
{
    int32_t tok = -1;
    vkllm_status st = vk_sample(logits, n_vocab, p, hist, n_hist, rng, &scratch, &tok);
    CHECK(st == VKLLM_OK, "vk_sample failed: %d %s", st, vk_error_message());
    return tok;
}

/* Draws `n_draws` tokens and compares frequencies with `expect` (n_vocab entries). */
static double freq_max_error(const float *logits, uint32_t n_vocab, const vkllm_sampler_params *p,
                             uint64_t seed, int n_draws, const double *expect)
{
    vk_rng rng;
    vk_rng_seed(&rng, seed);
    int *count = calloc(n_vocab, sizeof *count);
    for (int i = 0; i < n_draws; i++) {
        int32_t t = sample_ok(logits, n_vocab, p, NULL, 0, &rng);
        if (t >= 0 && (uint32_t)t < n_vocab)
            count[t]++;
    }
    double worst = 0.0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        double f = (double)count[i] / n_draws;
        double e = fabs(f - expect[i]);
        if (e > worst)
            worst = e;
        if (expect[i] == 0.0)
            CHECK(count[i] == 0, "token %u has probability 0 but was drawn %d times", i,
                  count[i]);
    }
    free(count);
    return worst;
}

static void test_rng(void)
{
    /* splitmix64 from seed 0: its first outputs as published by Vigna */
    vk_rng rng;
    vk_rng_seed(&rng, 0);
    CHECK(rng.s[0] == 0xe220a8397b1dcdafull && rng.s[1] == 0x6e789e6aa1b965f4ull &&
              rng.s[2] == 0x06c45d188009454full && rng.s[3] == 0xf88bb8a8724c81ecull,
          "splitmix64(0) state %016llx %016llx %016llx %016llx",
          (unsigned long long)rng.s[0], (unsigned long long)rng.s[1],
          (unsigned long long)rng.s[2], (unsigned long long)rng.s[3]);
    /* xoshiro256** from state {1,2,3,4}: the test vector of the reference implementation
     * (also used by rand_xoshiro) */
    rng.s[0] = 1, rng.s[1] = 2, rng.s[2] = 3, rng.s[3] = 4;
    const uint64_t expect[4] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull};
    for (int i = 0; i < 4; i++) {
        uint64_t v = vk_rng_next(&rng);
        CHECK(v == expect[i], "xoshiro256** output %d: %llu, expected %llu", i,
              (unsigned long long)v, (unsigned long long)expect[i]);
    }
    /* uniform: range and mean of 1e6 draws (sd of the mean 2.9e-4) */
    vk_rng_seed(&rng, 42);
    double sum = 0.0, lo = 1.0, hi = 0.0;
    for (int i = 0; i < 1000000; i++) {
        double u = vk_rng_uniform(&rng);
        sum += u;
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    CHECK(lo >= 0.0 && hi < 1.0, "uniform out of [0,1): %g %g", lo, hi);
    CHECK(fabs(sum / 1e6 - 0.5) < 0.002, "uniform mean %g", sum / 1e6);
    printf("rng: splitmix64/xoshiro256** vectors match; uniform mean %.5f over 1e6\n",
           sum / 1e6);
}

static void test_determinism(void)
{
    enum { V = 1000, N = 500 };
    float *logits = malloc(V * sizeof *logits);
    vk_rng g;
    vk_rng_seed(&g, 7);
    for (int i = 0; i < V; i++)
        logits[i] = (float)(vk_rng_uniform(&g) * 8.0 - 4.0);
    vkllm_sampler_params p = params_off();
    p.temperature = 0.8f;
    p.top_k = 50;
    p.top_p = 0.9f;
    p.min_p = 0.02f;
    int32_t a[N], b[N], c[N];
    vk_rng r1, r2, r3;
    vk_rng_seed(&r1, 1234);
    vk_rng_seed(&r2, 1234);
    vk_rng_seed(&r3, 1235);
    for (int i = 0; i < N; i++) {
        a[i] = sample_ok(logits, V, &p, NULL, 0, &r1);
        b[i] = sample_ok(logits, V, &p, NULL, 0, &r2);
        c[i] = sample_ok(logits, V, &p, NULL, 0, &r3);
    }
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < N; i++) {
        same_ab += a[i] == b[i];
        same_ac += a[i] == c[i];
    }
    CHECK(same_ab == N, "same seed gave different tokens (%d/%d equal)", same_ab, N);
    CHECK(same_ac < N, "seeds 1234 and 1235 gave identical sequences");
    printf("determinism: seed 1234 twice -> %d/%d equal; seed 1235 -> %d/%d equal\n", same_ab,
           N, same_ac, N);
    free(logits);
}

static void test_temperature(void)
{
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    vkllm_sampler_params p = params_off();
    const double e1[3] = {0.5, 0.3, 0.2};
    double err = freq_max_error(logits, 3, &p, 1, 100000, e1);
    CHECK(err < 0.01, "temperature 1: max frequency error %.4f >= 0.01", err);
    printf("temperature 1 over log(.5,.3,.2): max |freq - p| = %.4f over 1e5 draws (tol 0.01)\n",
           err);

    /* temperature 0.5 squares the probabilities: .25,.09,.04 over .38 */
    p.temperature = 0.5f;
    const double e2[3] = {0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38};
    err = freq_max_error(logits, 3, &p, 2, 100000, e2);
    CHECK(err < 0.01, "temperature 0.5: max frequency error %.4f", err);
    printf("temperature 0.5: max |freq - p^2/sum| = %.4f (tol 0.01)\n", err);

    /* temperature 2 takes square roots */
    p.temperature = 2.0f;
    double s = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
    const double e3[3] = {sqrt(0.5) / s, sqrt(0.3) / s, sqrt(0.2) / s};
    err = freq_max_error(logits, 3, &p, 3, 100000, e3);
    CHECK(err < 0.01, "temperature 2: max frequency error %.4f", err);
    printf("temperature 2: max |freq - sqrt(p)/sum| = %.4f (tol 0.01)\n", err);
}

static void test_greedy(void)
{
    const float logits[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, -INFINITY};
    vkllm_sampler_params p = params_off();
    p.temperature = 0.0f;
    CHECK(sample_ok(logits, 6, &p, NULL, 0, NULL) == 1, "greedy tie must pick lowest id 1");
    p.temperature = -1.0f;
    CHECK(sample_ok(logits, 6, &p, NULL, 0, NULL) == 1, "negative temperature is greedy");

    /* top_k = 1 is greedy for any temperature and seed */
    enum { V = 5000 };
    float *big = malloc(V * sizeof *big);
    vk_rng g, r;
    vk_rng_seed(&g, 99);
    vk_rng_seed(&r, 5);
    int agree = 0, trials = 200;
    for (int t = 0; t < trials; t++) {
        for (int i = 0; i < V; i++)
            big[i] = (float)(vk_rng_uniform(&g) * 4.0);
        vkllm_sampler_params pg = params_off();
        pg.temperature = 0.0f;
        int32_t want = sample_ok(big, V, &pg, NULL, 0, NULL);
        vkllm_sampler_params pk = params_off();
        pk.top_k = 1;
        pk.temperature = 1.5f;
        agree += sample_ok(big, V, &pk, NULL, 0, &r) == want;
        int32_t ref = 0;
        for (int i = 1; i < V; i++)
            if (big[i] > big[ref])
                ref = i;
        CHECK(want == ref, "greedy %d != argmax %d", want, ref);
    }
    CHECK(agree == trials, "top_k=1 agreed with greedy %d/%d times", agree, trials);
    printf("greedy: ties -> lowest id; top_k=1 == greedy in %d/%d random rows of %d\n", agree,
           trials, V);
    free(big);
}

static void test_top_p_min_p(void)
{
    const float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    vkllm_sampler_params p = params_off();
    double err;

    p.top_p = 0.75f; /* 0.5 < 0.75 <= 0.8: keeps tokens 0, 1 */
    const double e_2[3] = {0.5 / 0.8, 0.3 / 0.8, 0.0};
    err = freq_max_error(logits, 3, &p, 10, 100000, e_2);
    CHECK(err < 0.01, "top_p 0.75: max frequency error %.4f", err);
    printf("top_p 0.75 keeps {0,1}: max freq error %.4f, token 2 never drawn\n", err);

    p.top_p = 0.45f; /* the first token alone reaches it */
    const double e_1[3] = {1.0, 0.0, 0.0};
    err = freq_max_error(logits, 3, &p, 11, 20000, e_1);
    CHECK(err == 0.0, "top_p 0.45 must always pick token 0 (err %.4f)", err);

    p.top_p = 0.85f; /* needs all three */
    const double e_3[3] = {0.5, 0.3, 0.2};
    err = freq_max_error(logits, 3, &p, 12, 100000, e_3);
    CHECK(err < 0.01, "top_p 0.85: max frequency error %.4f", err);

    p.top_p = 0.0f; /* keeps at least one */
    err = freq_max_error(logits, 3, &p, 13, 1000, e_1);
    CHECK(err == 0.0, "top_p 0 must keep the best token only");
    printf("top_p 0.45 -> only token 0; 0.85 -> all three; 0 -> best only\n");

    /* min_p on the same row: p >= min_p * 0.5 */
    p = params_off();
    p.min_p = 0.5f; /* threshold .25: keeps 0, 1 */
    err = freq_max_error(logits, 3, &p, 14, 100000, e_2);
    CHECK(err < 0.01, "min_p 0.5: max frequency error %.4f", err);
    p.min_p = 0.7f; /* threshold .35: keeps 0 */
    err = freq_max_error(logits, 3, &p, 15, 20000, e_1);
    CHECK(err == 0.0, "min_p 0.7 must keep token 0 only");
    p.min_p = 0.35f; /* threshold .175: keeps all */
    err = freq_max_error(logits, 3, &p, 16, 100000, e_3);
    CHECK(err < 0.01, "min_p 0.35: max frequency error %.4f", err);
    p.min_p = 2.0f; /* nothing qualifies: the best is kept */
    err = freq_max_error(logits, 3, &p, 17, 1000, e_1);
    CHECK(err == 0.0, "min_p 2 must keep the best token");
    printf("min_p 0.5 -> {0,1}; 0.7 -> {0}; 0.35 -> all; 2 -> best\n");

    /* top-k then top-p on the renormalised top-k: .5,.3,.15 of .95 -> .526,.316,.158;
     * top_p 0.75 is reached at the second token */
    const float four[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    p = params_off();
    p.top_k = 3;
    p.top_p = 0.75f;
    const double e_k3p[4] = {0.625, 0.375, 0.0, 0.0};
    err = freq_max_error(four, 4, &p, 19, 100000, e_k3p);
    CHECK(err < 0.01, "top_k 3 + top_p 0.75: max frequency error %.4f", err);
    p.top_p = 0.85f; /* .842 < .85: needs the third */
    const double e_k3[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0};
    err = freq_max_error(four, 4, &p, 20, 100000, e_k3);
    CHECK(err < 0.01, "top_k 3 + top_p 0.85: max frequency error %.4f", err);
    printf("top_k 3 then top_p 0.75 -> {0,1}, 0.85 -> {0,1,2}\n");

    /* ties at the top-k boundary go to the lowest ids (vkllm's rule; llama.cpp leaves the
     * order of equal logits unspecified) */
    const float ties[5] = {0.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    p = params_off();
    p.top_k = 2;
    const double e_ties[5] = {0.0, 0.5, 0.5, 0.0, 0.0};
    err = freq_max_error(ties, 5, &p, 21, 100000, e_ties);
    CHECK(err < 0.01, "top_k 2 over ties: max frequency error %.4f", err);
    p.top_k = 0;
    p.top_p = 0.3f; /* unordered path: one tied token holds 0.229 < 0.3, two reach it */
    const double e_ties_p[5] = {0.0, 0.5, 0.5, 0.0, 0.0};
    err = freq_max_error(ties, 5, &p, 22, 100000, e_ties_p);
    CHECK(err < 0.01, "top_p 0.3 over ties: max frequency error %.4f", err);
    printf("ties: top_k 2 and top_p 0.3 over four equal logits keep the two lowest ids\n");

    /* order: top-p and min-p see temperature-1 probabilities, temperature comes after.
     * top_p 0.75 keeps {0,1} even at temperature 0.25 (where token 0 alone has 0.94). */
    p = params_off();
    p.top_p = 0.75f;
    p.temperature = 0.25f;
    double a = pow(0.5, 4), b = pow(0.3, 4);
    const double e_t[3] = {a / (a + b), b / (a + b), 0.0};
    err = freq_max_error(logits, 3, &p, 18, 100000, e_t);
    CHECK(err < 0.01, "top_p before temperature: max frequency error %.4f", err);
    printf("top_p before temperature 0.25: max freq error %.4f\n", err);
}

static double *softmax_d(const float *logits, int n, double temp)
{
    double *p = malloc((size_t)n * sizeof *p), m = -INFINITY, z = 0.0;
    for (int i = 0; i < n; i++)
        m = logits[i] > m ? logits[i] : m;
    for (int i = 0; i < n; i++)
        z += p[i] = exp((logits[i] - m) / temp);
    for (int i = 0; i < n; i++)
        p[i] /= z;
    return p;
}

static const float *g_sort_logits;
static int cmp_rank(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    float lx = g_sort_logits[x], ly = g_sort_logits[y];
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : 1;
}

/* A 151936-entry row (Qwen-sized): top-k and top-p checked against a full qsort. */
static void test_large_vocab(void)
{
    enum { V = 151936 };
    float *logits = malloc(V * sizeof *logits);
    int *order = malloc(V * sizeof *order);
    vk_rng g;
    vk_rng_seed(&g, 2024);
    for (int i = 0; i < V; i++)
        logits[i] = (float)(vk_rng_uniform(&g) * 10.0 - 5.0);
    /* a head of 3000 likelier tokens (every 50th id) holding about half the mass */
    for (int i = 0; i < 3000; i++)
        logits[i * 50 + 7] = (float)(6.0 + vk_rng_uniform(&g));
    for (int i = 0; i < V; i++)
        order[i] = i;
    g_sort_logits = logits;
    qsort(order, V, sizeof *order, cmp_rank);

    /* top_k = 5: frequencies equal the renormalised softmax of the 5 best */
    vkllm_sampler_params p = params_off();
    p.top_k = 5;
    double *expect = calloc(V, sizeof *expect);
    double z = 0.0;
    for (int i = 0; i < 5; i++)
        z += exp(logits[order[i]] - logits[order[0]]);
    for (int i = 0; i < 5; i++)
        expect[order[i]] = exp(logits[order[i]] - logits[order[0]]) / z;
    double err = freq_max_error(logits, V, &p, 21, 10000, expect);
    CHECK(err < 0.025, "top_k 5 on %d: max frequency error %.4f", V, err);
    printf("top_k 5 over %d logits: max freq error %.4f over 1e4 (tol 0.025), none outside\n",
           V, err);

    /* top_k = 40 at a high temperature: all 40 are reached, nothing else */
    p.top_k = 40;
    p.temperature = 50.0f;
    vk_rng r;
    vk_rng_seed(&r, 22);
    char *in_top = calloc(V, 1);
    int *hits = calloc(V, sizeof *hits);
    for (int i = 0; i < 40; i++)
        in_top[order[i]] = 1;
    int outside = 0, distinct = 0;
    for (int i = 0; i < 3000; i++) {
        int32_t t = sample_ok(logits, V, &p, NULL, 0, &r);
        if (!in_top[t])
            outside++;
        else if (hits[t]++ == 0)
            distinct++;
    }
    CHECK(outside == 0 && distinct == 40, "top_k 40: %d outside, %d of 40 reached", outside,
          distinct);
    printf("top_k 40, temperature 50: %d of 40 reached, %d draws outside\n", distinct, outside);

    /* top_p = 0.9 without top_k cuts deep in the tail (tens of thousands of tokens):
     * nothing past the qsort cut is drawn, and the share of draws falling in the head
     * matches the kept distribution (sd ~0.013 over 1500 draws; tol 0.065) */
    p = params_off();
    p.top_p = 0.9f;
    double *prob = softmax_d(logits, V, 1.0);
    double cum = 0.0;
    int keep = 0;
    while (keep < V && cum < 0.9)
        cum += prob[order[keep++]];
    double head_kept = 0.0;
    for (int i = 0; i < keep; i++)
        if (order[i] % 50 == 7 && order[i] / 50 < 3000)
            head_kept += prob[order[i]];
    const double head_share = head_kept / cum;
    int *rank = malloc(V * sizeof *rank);
    for (int i = 0; i < V; i++)
        rank[order[i]] = i;
    vk_rng_seed(&r, 23);
    int max_rank = 0, in_head = 0, n_draws = 1500;
    for (int i = 0; i < n_draws; i++) {
        int32_t t = sample_ok(logits, V, &p, NULL, 0, &r);
        max_rank = rank[t] > max_rank ? rank[t] : max_rank;
        in_head += t % 50 == 7 && t / 50 < 3000;
    }
    CHECK(max_rank < keep, "top_p 0.9: drew rank %d, qsort keeps %d", max_rank, keep);
    CHECK(fabs((double)in_head / n_draws - head_share) < 0.065, "top_p 0.9: head share %.4f vs %.4f",
          (double)in_head / n_draws, head_share);
    printf("top_p 0.9 over %d logits keeps %d (qsort): highest drawn rank %d; head share %.4f "
           "vs %.4f expected\n", V, keep, max_rank, (double)in_head / n_draws, head_share);

    /* top_p = 0.02 cuts inside the head, ~80 tokens down. At a flat
     * temperature each kept token is drawn ~1/keep of the time, so the exact cut shows:
     * the last kept token is drawn, the next one never. */
    p.top_p = 0.02f;
    cum = 0.0;
    keep = 0;
    while (keep < V && cum < 0.02)
        cum += prob[order[keep++]];
    p.temperature = 1e6f;
    vk_rng_seed(&r, 24);
    memset(hits, 0, V * sizeof *hits);
    max_rank = 0;
    n_draws = 15 * keep;
    for (int i = 0; i < n_draws; i++) {
        int32_t t = sample_ok(logits, V, &p, NULL, 0, &r);
        hits[t]++;
        max_rank = rank[t] > max_rank ? rank[t] : max_rank;
    }
    CHECK(max_rank == keep - 1 && hits[order[keep - 1]] > 0 && hits[order[keep]] == 0,
          "top_p 0.02: kept %d by qsort, highest drawn rank %d, last kept drawn %d times, "
          "first dropped %d times", keep, max_rank, hits[order[keep - 1]], hits[order[keep]]);
    printf("top_p 0.02 keeps %d (qsort): highest drawn rank %d in %d flat draws; last kept "
           "drawn %d times, first dropped %d\n", keep, max_rank, n_draws, hits[order[keep - 1]],
           hits[order[keep]]);

    /* timing (printed, not asserted) */
    const struct {
        const char *name;
        int top_k;
        float top_p;
    } cases[] = {{"top_k 40 + top_p 0.95", 40, 0.95f}, {"top_p 0.95", 0, 0.95f},
                 {"plain temperature", 0, 1.0f}, {"greedy", 0, 1.0f}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        p = params_off();
        p.top_k = cases[c].top_k;
        p.top_p = cases[c].top_p;
        p.temperature = c == 3 ? 0.0f : 0.8f;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 50; i++)
            sample_ok(logits, V, &p, NULL, 0, &r);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = ((double)(t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
        printf("timing %s over %d: %.3f ms per sample\n", cases[c].name, V, ms / 50);
    }
    free(rank);
    free(prob);
    free(hits);
    free(in_top);
    free(expect);
    free(order);
    free(logits);
}

static void test_repeat_penalty(void)
{
    vkllm_sampler_params p = params_off();
    p.temperature = 0.0f;
    p.repeat_penalty = 1.1f;

    const float pos[4] = {2.0f, 1.9f, -1.0f, -0.5f};
    CHECK(sample_ok(pos, 4, &p, NULL, 0, NULL) == 0, "no history: argmax 0");
    const int32_t h0[1] = {0};
    CHECK(sample_ok(pos, 4, &p, h0, 1, NULL) == 1, "2.0/1.1 = 1.82 < 1.9: must pick 1");

    const float neg[2] = {-1.0f, -1.05f};
    CHECK(sample_ok(neg, 2, &p, h0, 1, NULL) == 1, "-1.0*1.1 = -1.1 < -1.05: must pick 1");

    /* each distinct token is penalised once: 2/1.2 = 1.67 > 1.5, but 2/1.2^3 = 1.16 */
    const float two[2] = {2.0f, 1.5f};
    const int32_t h000[3] = {0, 0, 0};
    p.repeat_penalty = 1.2f;
    CHECK(sample_ok(two, 2, &p, h000, 3, NULL) == 0, "repeated history token penalised twice");

    /* the window: token 0 outside the last 2 of {0, 2, 3} */
    const int32_t h023[3] = {0, 2, 3};
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 2;
    CHECK(sample_ok(pos, 4, &p, h023, 3, NULL) == 0, "token outside the window penalised");
    p.repeat_last_n = 3;
    CHECK(sample_ok(pos, 4, &p, h023, 3, NULL) == 1, "token inside the window not penalised");
    p.repeat_last_n = 0;
    CHECK(sample_ok(pos, 4, &p, h023, 3, NULL) == 0, "repeat_last_n 0 must disable");
    p.repeat_last_n = -1;
    CHECK(sample_ok(pos, 4, &p, h023, 3, NULL) == 1, "repeat_last_n -1 = whole history");

    /* penalty before top-k: with top_k 1 the penalised token is no longer the best */
    p = params_off();
    p.repeat_penalty = 1.1f;
    p.top_k = 1;
    vk_rng r;
    vk_rng_seed(&r, 3);
    CHECK(sample_ok(pos, 4, &p, h0, 1, &r) == 1, "penalty must act before top-k");

    /* the caller's logits are not modified */
    CHECK(pos[0] == 2.0f && neg[0] == -1.0f, "input logits modified");
    printf("repetition penalty: argmax moves as llama.cpp's rule predicts; distinct tokens "
           "once; window honoured\n");
}

static void test_edges(void)
{
    vkllm_sampler_params p = params_off();
    vk_rng r;
    vk_rng_seed(&r, 77);
    int32_t tok = -1;
    vkllm_status st;

    float one_left[10];
    for (int i = 0; i < 10; i++)
        one_left[i] = -INFINITY;
    one_left[7] = -3.0f;
    for (int i = 0; i < 100; i++)
        CHECK(sample_ok(one_left, 10, &p, NULL, 0, &r) == 7, "only token 7 is finite");
    p.temperature = 0.0f;
    CHECK(sample_ok(one_left, 10, &p, NULL, 0, NULL) == 7, "greedy: only token 7 is finite");
    p.temperature = 1.0f;
    p.top_p = 0.5f;
    p.top_k = 3;
    p.min_p = 0.1f;
    CHECK(sample_ok(one_left, 10, &p, NULL, 0, &r) == 7, "full chain: only token 7");

    one_left[7] = -INFINITY;
    st = vk_sample(one_left, 10, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vk_error_message(), "-inf"),
          "all -inf: status %d msg '%s'", st, vk_error_message());

    float nan_row[5] = {0.1f, 0.2f, 0.3f, NAN, 0.5f};
    p = params_off();
    st = vk_sample(nan_row, 5, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vk_error_message(), "NaN") &&
              strstr(vk_error_message(), "token 3"),
          "NaN: status %d msg '%s'", st, vk_error_message());
    printf("NaN logit -> '%s'\n", vk_error_message());
    p.temperature = 0.0f;
    st = vk_sample(nan_row, 5, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "NaN must fail in greedy mode too");

    float inf_row[3] = {0.0f, INFINITY, 1.0f};
    st = vk_sample(inf_row, 3, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT && strstr(vk_error_message(), "+inf"),
          "+inf logit: %d '%s'", st, vk_error_message());

    /* extreme temperatures: a denormal one is still greedy-like, +inf is uniform */
    const float three[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    p = params_off();
    p.temperature = 1e-40f;
    const double e_first[3] = {1.0, 0.0, 0.0};
    double err = freq_max_error(three, 3, &p, 30, 1000, e_first);
    CHECK(err == 0.0, "temperature 1e-40 must always pick the best");
    p.temperature = INFINITY;
    const double e_flat[3] = {1.0 / 3, 1.0 / 3, 1.0 / 3};
    const double err_flat = freq_max_error(three, 3, &p, 31, 100000, e_flat);
    CHECK(err_flat < 0.01, "temperature +inf: max frequency error %.4f from uniform", err_flat);
    const float wide[2] = {3e38f, -3e38f}; /* the difference overflows to -inf */
    p.temperature = 1.0f;
    err = freq_max_error(wide, 2, &p, 32, 1000, e_first);
    CHECK(err == 0.0, "logits 3e38, -3e38 must always pick token 0");
    printf("temperature 1e-40 -> best only; +inf -> uniform (max err %.4f); 3e38/-3e38 ok\n",
           err_flat);

    const float single[1] = {-123.0f};
    p = params_off();
    CHECK(sample_ok(single, 1, &p, NULL, 0, &r) == 0, "n_vocab 1, sampled");
    p.temperature = 0.0f;
    CHECK(sample_ok(single, 1, &p, NULL, 0, NULL) == 0, "n_vocab 1, greedy");
    p = params_off();
    p.top_k = 5;
    p.top_p = 0.05f;
    p.min_p = 0.9f;
    p.repeat_penalty = 1.3f;
    const int32_t h0[2] = {0, 0};
    CHECK(sample_ok(single, 1, &p, h0, 2, &r) == 0, "n_vocab 1, full chain");

    /* argument errors */
    p = params_off();
    const float row[4] = {1, 2, 3, 4};
    const int32_t bad_hist[2] = {1, 4};
    st = vk_sample(row, 4, &p, bad_hist, 2, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_TOKEN_OUT_OF_RANGE, "history token 4 of 4: status %d", st);
    const int32_t neg_hist[1] = {-1};
    st = vk_sample(row, 4, &p, neg_hist, 1, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_TOKEN_OUT_OF_RANGE, "history token -1: status %d", st);
    st = vk_sample(row, 0, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "n_vocab 0: status %d", st);
    st = vk_sample(row, scratch.n_vocab + 1, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "row larger than scratch: status %d", st);
    st = vk_sample(row, 4, &p, NULL, 0, NULL, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "NULL rng when sampling: status %d", st);
    p.temperature = NAN;
    st = vk_sample(row, 4, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "NaN temperature: status %d", st);
    p = params_off();
    p.repeat_penalty = 0.0f;
    st = vk_sample(row, 4, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "repeat_penalty 0: status %d", st);
    p = params_off();
    p.size = 8;
    st = vk_sample(row, 4, &p, NULL, 0, &r, &scratch, &tok);
    CHECK(st == VKLLM_ERR_INVALID_ARGUMENT, "params size 8: status %d", st);
    printf("edges: one finite logit, all -inf, NaN, +inf, n_vocab 1, bad history, bad params\n");
}

/* vk_sample_top against vk_sample: rows of random logits (ties, -0 and +0, -inf; rows shorter
 * than the candidates), their 64 best-ranked as candidates (as op_top_k gives them, -0 as +0),
 * over greedy and top-k settings with top-p, min-p and temperature: where it says it can, it
 * must pick the same token and leave the generator in the same state; it must decline where
 * the whole row is needed (top-k off or past the candidates, a penalty, a NaN or +inf). */
static void test_sample_top(void)
{
    enum { K = 64 };
    const uint32_t vocabs[] = {10, 64, 100, 1000, 32000};
    const int32_t top_ks[] = {1, 2, 5, 40, 64, 65, 0};
    int same = 0, declined = 0, compared = 0;
    vk_rng g;
    vk_rng_seed(&g, 99);
    for (size_t vi = 0; vi < sizeof vocabs / sizeof *vocabs; vi++) {
        uint32_t V = vocabs[vi];
        float *row = malloc(V * sizeof *row);
        int *order = malloc(V * sizeof *order);
        for (int trial = 0; trial < 40; trial++) {
            for (uint32_t i = 0; i < V; i++) {
                double u = vk_rng_uniform(&g);
                row[i] = trial % 3 == 0 ? (float)(int)(u * 6.0) - 3.0f : (float)(u * 12.0 - 6.0); /* ties */
                if (trial % 5 == 1 && i % 4 == 0)
                    row[i] = -INFINITY;
                if (trial % 3 == 0 && i % 11 == 0)
                    row[i] = i % 2 ? -0.0f : 0.0f;
            }
            if (trial == 7)
                row[V / 2] = NAN;
            if (trial == 8)
                row[V - 1] = INFINITY;
            for (uint32_t i = 0; i < V; i++)
                order[i] = (int)i;
            g_sort_logits = row;
            if (trial != 7) /* (qsort with a NaN has no order; the candidates only need it first) */
                qsort(order, V, sizeof *order, cmp_rank);
            int32_t ids[K];
            float values[K];
            for (int i = 0; i < K; i++) {
                ids[i] = i < (int)V ? order[i] : -1;
                values[i] = i < (int)V ? row[order[i]] + 0.0f : -INFINITY; /* -0 comes back +0 */
            }
            if (trial == 7)
                ids[0] = (int32_t)(V / 2), values[0] = NAN;
            for (size_t ki = 0; ki < sizeof top_ks / sizeof *top_ks; ki++) {
                vkllm_sampler_params p = params_off();
                p.top_k = top_ks[ki];
                p.temperature = ki == 0 && trial % 2 ? 0.0f : 0.5f + 0.25f * (float)(trial % 4);
                p.top_p = trial % 4 == 3 ? 1.0f : 0.9f;
                p.min_p = trial % 3 == 1 ? 0.05f : 0.0f;
                int32_t hist[3] = {1, 2, 3};
                if (trial == 9)
                    p.repeat_penalty = 1.3f;
                uint64_t seed = 1000 + (uint64_t)trial * 10 + ki;
                vk_rng r_full, r_top;
                vk_rng_seed(&r_full, seed);
                vk_rng_seed(&r_top, seed);
                int32_t t_full = -1, t_top = -2;
                bool done = false;
                vkllm_status s_top = vk_sample_top(ids, values, K, V, &p, hist, 3, &r_top, &scratch, &t_top, &done);
                vkllm_status s_full = vk_sample(row, V, &p, hist, 3, &r_full, &scratch, &t_full);
                bool need_row = trial == 7 || trial == 8 || trial == 9 ||
                                (p.temperature > 0.0f && !(p.top_k > 0 && (uint32_t)p.top_k < V && p.top_k <= K));
                if (!done) {
                    declined++;
                    CHECK(need_row, "V %u trial %d top_k %d temp %g: vk_sample_top declined", V, trial, p.top_k,
                          (double)p.temperature);
                    continue;
                }
                compared++;
                CHECK(!need_row, "V %u trial %d top_k %d: vk_sample_top answered where the row is needed", V,
                      trial, p.top_k);
                bool ok = s_top == s_full && (s_full != VKLLM_OK || t_top == t_full) &&
                          vk_rng_next(&r_top) == vk_rng_next(&r_full);
                same += ok;
                CHECK(ok, "V %u trial %d top_k %d temp %g: candidates %d (status %d), row %d (status %d)", V,
                      trial, p.top_k, (double)p.temperature, t_top, s_top, t_full, s_full);
            }
        }
        free(row);
        free(order);
    }
    printf("sample_top: %d of %d answers as vk_sample's (token and generator state), %d declined\n", same,
           compared, declined);
}

int main(void)
{
    if (vk_sampler_scratch_init(&scratch, 151936) != VKLLM_OK) {
        printf("FAIL scratch init: %s\n", vk_error_message());
        return 1;
    }
    test_rng();
    test_determinism();
    test_temperature();
    test_greedy();
    test_top_p_min_p();
    test_large_vocab();
    test_repeat_penalty();
    test_edges();
    test_sample_top();
    vk_sampler_scratch_free(&scratch);
    if (failures) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all sampling checks passed\n");
    return 0;
}
