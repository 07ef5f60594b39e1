/* Sampling: the chain llama.cpp uses by default, reduced to the steps vkllm exposes.
 *
 *   repetition penalty -> top-k -> top-p -> min-p -> temperature -> softmax -> draw
 *
 * Everything works on a candidate list of token ids (scratch->ids) whose logits are looked
 * up in a working copy of the row (scratch->probs, indexed by token id). Top-k and top-p
 * only order as much of the list as they need: a 150k vocabulary is never fully sorted for
 * top-k, and top-p orders the best tokens in growing chunks until the mass is reached. */
#include "sampling.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---- random numbers ---------------------------------------------------------------- */

/* splitmix64 turns one 64-bit seed into well-mixed state words (xoshiro must not start
 * from an all-zero state, and nearby seeds must give unrelated streams). */
static uint64_t splitmix64_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void vk_rng_seed(vk_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        rng->s[i] = splitmix64_next(&x);
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** (Blackman & Vigna). */
uint64_t vk_rng_next(vk_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = rotl64(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return result;
}

/* The top 53 bits as a double in [0, 1): every value is exactly representable. */
double vk_rng_uniform(vk_rng *rng) { return (double)(vk_rng_next(rng) >> 11) * 0x1.0p-53; }

/* ---- scratch ------------------------------------------------------------------------ */

vkllm_status vk_sampler_scratch_init(vk_sampler_scratch *s, uint32_t n_vocab)
{
    if (!s)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler scratch: NULL pointer");
    memset(s, 0, sizeof *s);
    if (n_vocab == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler scratch: n_vocab is 0");
    s->probs = malloc((size_t)n_vocab * sizeof *s->probs);
    s->ids = malloc((size_t)n_vocab * sizeof *s->ids);
    if (!s->probs || !s->ids) {
        vk_sampler_scratch_free(s);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                       "sampler scratch: cannot allocate buffers for %u tokens", n_vocab);
    }
    s->n_vocab = n_vocab;
    return VKLLM_OK;
}

void vk_sampler_scratch_free(vk_sampler_scratch *s)
{
    if (!s)
        return;
    free(s->probs);
    free(s->ids);
    memset(s, 0, sizeof *s);
}

/* ---- ordering candidates ------------------------------------------------------------ */

/* "a ranks before b": higher logit first, lower id first on equal logits. A strict total
 * order (ids are distinct), so selection and sorting give one well-defined answer. */
static int ranks_before(const float *logit, int32_t a, int32_t b)
{
    return logit[a] > logit[b] || (logit[a] == logit[b] && a < b);
}

static void swap_ids(int32_t *ids, size_t i, size_t j)
{
    int32_t t = ids[i];
    ids[i] = ids[j];
    ids[j] = t;
}

static void sift_down(int32_t *ids, size_t root, size_t end, const float *logit)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= end)
            return;
        /* the heap keeps the lowest-ranked id at the top */
        if (child + 1 < end && ranks_before(logit, ids[child], ids[child + 1]))
            child++;
        if (!ranks_before(logit, ids[root], ids[child]))
            return;
        swap_ids(ids, root, child);
        root = child;
    }
}

/* Heapsort into rank order (best first): O(n log n) in every case. */
static void sort_by_rank(int32_t *ids, size_t n, const float *logit)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(ids, i, n, logit);
    for (size_t end = n - 1; end > 0; end--) {
        swap_ids(ids, 0, end); /* lowest-ranked remaining goes to the back */
        sift_down(ids, 0, end, logit);
    }
}

/* Rearranges ids[0, n) so that ids[0, k) hold the k best-ranked ids (in no particular
 * order). Quickselect with a median-of-three pivot, expected O(n); after too many rounds
 * it falls back to heapsorting what is left, so the worst case stays O(n log n). */
static void select_best(int32_t *ids, size_t n, size_t k, const float *logit)
{
    size_t lo = 0, hi = n; /* the k-th boundary lies in [lo, hi) */
    int rounds_left = 64;
    if (k == 0 || k >= n)
        return;
    while (hi - lo > 1) {
        if (rounds_left-- == 0) {
            sort_by_rank(ids + lo, hi - lo, logit);
            return;
        }
        size_t mid = lo + (hi - lo) / 2, last = hi - 1;
        /* median of three into ids[last] as the pivot */
        if (ranks_before(logit, ids[mid], ids[lo]))
            swap_ids(ids, mid, lo);
        if (ranks_before(logit, ids[last], ids[lo]))
            swap_ids(ids, last, lo);
        if (ranks_before(logit, ids[mid], ids[last]))
            swap_ids(ids, mid, last);
        int32_t pivot = ids[last];
        size_t store = lo;
        for (size_t i = lo; i < last; i++)
            if (ranks_before(logit, ids[i], pivot))
                swap_ids(ids, i, store++);
        swap_ids(ids, store, last);
        /* now ids[lo, store) rank before the pivot at `store`, the rest after it */
        if (store == k || store + 1 == k)
            return;
        if (store > k)
            hi = store;
        else
            lo = store + 1;
    }
}

/* ---- the chain ---------------------------------------------------------------------- */

/* llama.cpp's penalty: each distinct token of the window once, positive logits divided,
 * the others multiplied, so the token always becomes less likely. ids[] is the identity
 * map on entry and is used to mark tokens already penalised; it is restored on exit. */
static void apply_repeat_penalty(float *logit, int32_t *ids, const int32_t *window, size_t n,
                                 float penalty)
{
    for (size_t i = 0; i < n; i++) {
        int32_t t = window[i];
        if (ids[t] != t)
            continue; /* seen earlier in the window */
        logit[t] = logit[t] > 0.0f ? logit[t] / penalty : logit[t] * penalty;
        ids[t] = -1;
    }
    for (size_t i = 0; i < n; i++)
        ids[window[i]] = window[i];
}

static int is_nan_f(float x) { return x != x; }

static vkllm_status check_params(const vkllm_sampler_params *p)
{
    if (p->size < sizeof(vkllm_sampler_params))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "sampler params: size %u is smaller than %zu (start from the defaults)",
                       p->size, sizeof(vkllm_sampler_params));
    if (is_nan_f(p->temperature))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler params: temperature is NaN");
    if (is_nan_f(p->top_p))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler params: top_p is NaN");
    if (is_nan_f(p->min_p))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sampler params: min_p is NaN");
    if (!(p->repeat_penalty > 0.0f) || isinf(p->repeat_penalty))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "sampler params: repeat_penalty %g must be finite and > 0 (1 = off)",
                       (double)p->repeat_penalty);
    return VKLLM_OK;
}

vkllm_status vk_sample(const float *logits, uint32_t n_vocab, const vkllm_sampler_params *params,
                       const int32_t *history, size_t n_history, vk_rng *rng,
                       vk_sampler_scratch *scratch, int32_t *out)
{
    if (!logits || !params || !scratch || !out)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: NULL %s",
                       !logits ? "logits" : !params ? "params" : !scratch ? "scratch" : "out");
    if (n_vocab == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: n_vocab is 0");
    if (!scratch->probs || !scratch->ids || scratch->n_vocab < n_vocab)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "sample: scratch holds %u tokens, the row has %u", scratch->n_vocab,
                       n_vocab);
    if (n_history > 0 && !history)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: NULL history with %zu tokens",
                       n_history);
    vkllm_status st = check_params(params);
    if (st != VKLLM_OK)
        return st;
    const int greedy = !(params->temperature > 0.0f);
    if (!greedy && !rng)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: NULL rng with temperature %g",
                       (double)params->temperature);

    float *logit = scratch->probs; /* working copy, indexed by token id */
    int32_t *ids = scratch->ids;
    for (uint32_t i = 0; i < n_vocab; i++) {
        float x = logits[i];
        if (is_nan_f(x))
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: logit of token %u is NaN", i);
        if (x == INFINITY)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: logit of token %u is +inf", i);
        logit[i] = x;
        ids[i] = (int32_t)i;
    }

    /* repetition penalty over the last repeat_last_n tokens (< 0: the whole history) */
    size_t n_window = n_history;
    if (params->repeat_last_n >= 0 && (size_t)params->repeat_last_n < n_window)
        n_window = (size_t)params->repeat_last_n;
    const int32_t *window = n_window > 0 ? history + (n_history - n_window) : NULL;
    for (size_t i = 0; i < n_window; i++)
        if (window[i] < 0 || (uint32_t)window[i] >= n_vocab)
            return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE,
                           "sample: history token %d is outside the vocabulary of %u",
                           window[i], n_vocab);
    if (params->repeat_penalty != 1.0f && n_window > 0)
        apply_repeat_penalty(logit, ids, window, n_window, params->repeat_penalty);

    /* candidates: every token that is not impossible */
    size_t n = 0;
    int32_t best = -1;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (logit[i] == -INFINITY)
            continue;
        ids[n++] = (int32_t)i;
        if (best < 0 || logit[i] > logit[best])
            best = (int32_t)i; /* strict >: the lowest id wins ties */
    }
    if (n == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "sample: every logit is -inf, there is no token to pick");
    if (greedy || n == 1) {
        *out = best;
        return VKLLM_OK;
    }
    const double max_logit = logit[best];
    int sorted = 0; /* ids[0, n) in rank order */

    /* top-k */
    if (params->top_k > 0 && (size_t)params->top_k < n) {
        select_best(ids, n, (size_t)params->top_k, logit);
        n = (size_t)params->top_k;
        sort_by_rank(ids, n, logit); /* k is small; top-p below wants rank order */
        sorted = 1;
    }

    /* top-p on the temperature-1 distribution: keep the shortest best-first prefix whose
     * probability reaches top_p. Without top-k the list is ordered in growing chunks
     * (select the next best chunk, sort it) only until the mass is reached. */
    if (params->top_p < 1.0f) {
        double z = 0.0;
        for (size_t i = 0; i < n; i++)
            z += exp((double)logit[ids[i]] - max_logit);
        const double target = (double)params->top_p * z; /* compare unnormalised masses */
        double cum = 0.0;
        size_t keep = n, done = 0, chunk = 256;
        while (done < n && keep == n) {
            size_t k = n - done;
            if (!sorted && chunk < k) {
                select_best(ids + done, n - done, chunk, logit);
                k = chunk;
            }
            if (!sorted)
                sort_by_rank(ids + done, k, logit);
            for (size_t i = done; i < done + k; i++) {
                cum += exp((double)logit[ids[i]] - max_logit);
                if (cum >= target) {
                    keep = i + 1;
                    break;
                }
            }
            done += k;
            chunk *= 2;
        }
        /* rounding may leave the full sum a hair under target: then all stay */
        n = keep;
    }

    /* min-p: p >= min_p * p_max  <=>  logit >= max_logit + log(min_p). The best token
     * always passes (min_p <= 1) or is kept anyway (min_p > 1), as llama.cpp keeps 1. */
    if (params->min_p > 0.0f) {
        const double threshold = max_logit + log((double)params->min_p);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            if ((double)logit[ids[i]] >= threshold || ids[i] == best)
                ids[kept++] = ids[i];
        n = kept;
    }

    /* temperature, softmax, draw. probabilities go back into the working row, by id. */
    const double inv_temp = 1.0 / (double)params->temperature;
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        double p = exp(((double)logit[t] - max_logit) * inv_temp);
        logit[t] = (float)p;
        z += (double)logit[t]; /* sum exactly what the draw below adds up */
    }
    const double u = vk_rng_uniform(rng) * z;
    double cum = 0.0;
    int32_t pick = best;
    for (size_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (logit[t] <= 0.0f)
            continue; /* underflowed: never drawn */
        cum += (double)logit[t];
        pick = t; /* also the fallback if rounding leaves u >= the final sum */
        if (u < cum)
            break;
    }
    *out = pick;
    return VKLLM_OK;
}
