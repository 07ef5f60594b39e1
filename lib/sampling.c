/* Sampling: the chain llama.cpp uses by default, reduced to the steps vkllm exposes.
 *
 *   repetition penalty -> top-k -> top-p -> min-p -> temperature -> softmax -> draw
 *
 * Everything works on a candidate list of token ids (scratch->ids) whose logits are looked
 * up in a working copy of the row (scratch->probs, indexed by token id). Nothing sorts a
 * whole 150k vocabulary: top-k keeps a k-entry heap during one scan of the row, and top-p
 * without top-k buckets the tokens by logit and sorts only the bucket where the cut falls. */
#include "sampling.h"

#include <math.h>
#include <stdbool.h>
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
 * order (ids are distinct), so every selection below has one well-defined answer. */
static int ranks_before(const float *logit, int32_t a, int32_t b)
{
    return logit[a] > logit[b] || (logit[a] == logit[b] && a < b);
}

/* Restores the heap below `root`; the heap keeps its lowest-ranked id on top. */
static void sift_down(int32_t *ids, size_t root, size_t end, const float *logit)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= end)
            return;
        if (child + 1 < end && ranks_before(logit, ids[child], ids[child + 1]))
            child++;
        if (!ranks_before(logit, ids[root], ids[child]))
            return;
        int32_t t = ids[root];
        ids[root] = ids[child];
        ids[child] = t;
        root = child;
    }
}

/* Heapsort into rank order (best first): O(n log n) in every case, no recursion. */
static void sort_by_rank(int32_t *ids, size_t n, const float *logit)
{
    if (n < 2)
        return;
    for (size_t i = n / 2; i-- > 0;)
        sift_down(ids, i, n, logit);
    for (size_t end = n - 1; end > 0; end--) {
        int32_t t = ids[0]; /* the lowest-ranked left goes to the back */
        ids[0] = ids[end];
        ids[end] = t;
        sift_down(ids, 0, end, logit);
    }
}

/* The k best-ranked finite tokens of the row into ids[0, *n_out), best first. One pass
 * keeping a k-entry heap whose top is the worst kept: most tokens lose one comparison
 * against it, so this is close to a plain scan of the row for the usual small k. */
static void select_top_k(const float *logit, uint32_t n_vocab, size_t k, int32_t *ids,
                         size_t *n_out)
{
    size_t n = 0;
    for (uint32_t i = 0; i < n_vocab; i++) {
        if (logit[i] == -INFINITY)
            continue;
        if (n < k) {
            ids[n++] = (int32_t)i;
            if (n == k) /* full: make it a heap */
                for (size_t j = k / 2; j-- > 0;)
                    sift_down(ids, j, k, logit);
        } else if (ranks_before(logit, (int32_t)i, ids[0])) {
            ids[0] = (int32_t)i;
            sift_down(ids, 0, k, logit);
        }
    }
    sort_by_rank(ids, n, logit);
    *n_out = n;
}

/* top-p over an unordered candidate list: the shortest best-first prefix whose share of
 * the mass (exp(logit - max_logit), summed in double) reaches top_p. Tokens are bucketed by logit
 * in one pass; only the bucket where the running mass crosses the target is sorted.
 * Keeps the chosen ids in ids[0, return value), in no particular order. */
enum { TOP_P_BUCKETS = 1024 };

/* Bucket of a logit: 0 for the highest; never decreases as the logit falls, because
 * float subtraction and multiplication by a positive constant are monotonic. */
static size_t bucket_of(float x, float max_logit, float scale)
{
    if (scale == 0.0f) /* all logits equal, or a range too wide for floats: one bucket */
        return 0;
    float f = (max_logit - x) * scale;
    return f < (float)(TOP_P_BUCKETS - 1) ? (size_t)f : TOP_P_BUCKETS - 1;
}

static size_t top_p_unordered(const float *logit, int32_t *ids, size_t n, float max_logit,
                              float min_logit, float top_p)
{
    double mass[TOP_P_BUCKETS] = {0};
    const float range = max_logit - min_logit;
    const float scale = range > 0.0f && isfinite(range) ? (float)TOP_P_BUCKETS / range : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float x = logit[ids[i]];
        mass[bucket_of(x, max_logit, scale)] += (double)expf(x - max_logit);
    }
    double z = 0.0;
    for (size_t b = 0; b < TOP_P_BUCKETS; b++)
        z += mass[b];
    const double target = (double)top_p * z;
    double cum = 0.0;
    size_t cut = 0; /* the bucket where the running mass reaches the target */
    while (cut < TOP_P_BUCKETS - 1 && cum + mass[cut] < target)
        cum += mass[cut++];
    /* three-way partition: buckets before `cut` | bucket `cut` | the rest (dropped) */
    size_t lo = 0, mid = 0, hi = n;
    while (mid < hi) {
        size_t b = bucket_of(logit[ids[mid]], max_logit, scale);
        int32_t t = ids[mid];
        if (b < cut) {
            ids[mid++] = ids[lo];
            ids[lo++] = t;
        } else if (b == cut) {
            mid++;
        } else {
            ids[mid] = ids[--hi];
            ids[hi] = t;
        }
    }
    sort_by_rank(ids + lo, mid - lo, logit);
    for (size_t i = lo; i < mid; i++) {
        cum += (double)expf(logit[ids[i]] - max_logit);
        if (cum >= target)
            return i + 1;
    }
    return mid; /* rounding left the mass a hair short: keep the whole bucket */
}

/* ---- the chain ---------------------------------------------------------------------- */

static int cmp_int32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* llama.cpp's penalty: each distinct token of the window once, positive logits divided,
 * the others multiplied, so the token always becomes less likely. `tmp` (n entries)
 * holds the sorted window to find the distinct tokens. */
static void apply_repeat_penalty(float *logit, const int32_t *window, size_t n, float penalty,
                                 int32_t *tmp)
{
    memcpy(tmp, window, n * sizeof *tmp);
    qsort(tmp, n, sizeof *tmp, cmp_int32);
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && tmp[i] == tmp[i - 1])
            continue;
        float *x = &logit[tmp[i]];
        *x = *x > 0.0f ? *x / penalty : *x * penalty;
    }
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

static vkllm_status sample_candidates(float *logit, int32_t *ids, size_t n, bool ranked, float min_logit,
                                      const vkllm_sampler_params *params, vk_rng *rng, int32_t *out);

/* The window of history the penalty looks at (repeat_last_n < 0: all of it): *n_window tokens
 * from the returned pointer (NULL when empty). *outside: the first of them outside the
 * vocabulary, or NULL. */
static const int32_t *penalty_window(const int32_t *history, size_t n_history, const vkllm_sampler_params *p,
                                     uint32_t n_vocab, size_t *n_window, const int32_t **outside)
{
    *n_window = n_history;
    if (p->repeat_last_n >= 0 && (size_t)p->repeat_last_n < *n_window)
        *n_window = (size_t)p->repeat_last_n;
    const int32_t *window = *n_window > 0 ? history + (n_history - *n_window) : NULL;
    *outside = NULL;
    for (size_t i = 0; i < *n_window && !*outside; i++)
        if (window[i] < 0 || (uint32_t)window[i] >= n_vocab)
            *outside = &window[i];
    return window;
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

    size_t n_window;
    const int32_t *outside;
    const int32_t *window = penalty_window(history, n_history, params, n_vocab, &n_window, &outside);
    if (outside)
        return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE, "sample: history token %d is outside the vocabulary of %u",
                       *outside, n_vocab);

    float *logit = scratch->probs; /* working copy, indexed by token id */
    int32_t *ids = scratch->ids;   /* the candidate list */
    memcpy(logit, logits, (size_t)n_vocab * sizeof *logit);
    /* NaN and +inf both fail x < inf; a branch-free pass, the slow search only on failure */
    int bad = 0;
    for (uint32_t i = 0; i < n_vocab; i++)
        bad |= !(logit[i] < INFINITY);
    if (bad)
        for (uint32_t i = 0; i < n_vocab; i++)
            if (!(logit[i] < INFINITY))
                return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: logit of token %u is %s",
                               i, is_nan_f(logit[i]) ? "NaN" : "+inf");
    if (n_window > 0 && params->repeat_penalty != 1.0f)
        apply_repeat_penalty(logit, window, n_window, params->repeat_penalty, ids);

    if (greedy) { /* argmax of the penalised row; the lowest id wins ties */
        int32_t best = 0;
        for (uint32_t i = 1; i < n_vocab; i++)
            if (logit[i] > logit[best])
                best = (int32_t)i;
        if (logit[best] == -INFINITY)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                           "sample: every logit is -inf, there is no token to pick");
        *out = best;
        return VKLLM_OK;
    }

    /* candidates: the top-k, or every token that is not impossible */
    size_t n = 0;
    float min_logit = INFINITY;
    if (params->top_k > 0 && (uint32_t)params->top_k < n_vocab) {
        select_top_k(logit, n_vocab, (size_t)params->top_k, ids, &n);
        return sample_candidates(logit, ids, n, true, min_logit, params, rng, out);
    }
    for (uint32_t i = 0; i < n_vocab; i++) {
        float x = logit[i];
        if (x == -INFINITY)
            continue;
        ids[n++] = (int32_t)i;
        min_logit = x < min_logit ? x : min_logit;
    }
    return sample_candidates(logit, ids, n, false, min_logit, params, rng, out);
}

/* The chain after the candidates (top-p, min-p, temperature, draw) over ids[0, n): the top-k in
 * rank order (ranked), or every finite token in id order (min_logit their lowest logit). logit
 * is indexed by id; the candidates' entries are overwritten. */
static vkllm_status sample_candidates(float *logit, int32_t *ids, size_t n, bool ranked, float min_logit,
                                      const vkllm_sampler_params *params, vk_rng *rng, int32_t *out)
{
    int32_t best = -1;
    if (ranked && n > 0)
        best = ids[0];
    for (size_t i = 0; !ranked && i < n; i++)
        if (best < 0 || logit[ids[i]] > logit[best])
            best = ids[i]; /* strict >: the lowest id wins ties */
    if (n == 0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT,
                       "sample: every logit is -inf, there is no token to pick");
    if (n == 1) {
        *out = best;
        return VKLLM_OK;
    }
    const float max_logit = logit[best];

    /* top-p on the temperature-1 distribution (temperature comes later in the chain) */
    if (params->top_p < 1.0f) {
        if (ranked) { /* a short list already in rank order */
            double z = 0.0, cum = 0.0;
            for (size_t i = 0; i < n; i++)
                z += (double)expf(logit[ids[i]] - max_logit);
            const double target = (double)params->top_p * z; /* unnormalised masses */
            size_t keep = n;
            for (size_t i = 0; i < n; i++) {
                cum += (double)expf(logit[ids[i]] - max_logit);
                if (cum >= target) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
        } else {
            n = top_p_unordered(logit, ids, n, max_logit, min_logit, params->top_p);
        }
        if (n == 0) /* cannot happen (the first token reaches a target <= 0); be safe */
            n = 1, ids[0] = best;
    }

    /* min-p: p >= min_p * p_max  <=>  logit >= max_logit + log(min_p). The best token
     * always passes (min_p <= 1) or is kept anyway (min_p > 1), as llama.cpp keeps 1. */
    if (params->min_p > 0.0f) {
        const float threshold = max_logit + logf(params->min_p);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++)
            if (logit[ids[i]] >= threshold || ids[i] == best)
                ids[kept++] = ids[i];
        n = kept;
    }

    /* temperature, softmax, draw. The probabilities replace the logits in the working row
     * (by id); the draw adds them in the same order as the sum, so it ends exactly at z. */
    const double inv_temp = 1.0 / (double)params->temperature; /* finite for any float > 0 */
    double z = 0.0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        const float d = logit[t] - max_logit; /* <= 0; -inf only if the subtraction overflows */
        double e = d == 0.0f ? 0.0 : (double)d * inv_temp;
        if (!(e > -150.0)) /* expf is 0 below ~-104 anyway; also catches -inf * 0 = NaN */
            e = -150.0;
        logit[t] = expf((float)e);
        z += (double)logit[t];
    }
    const double u = vk_rng_uniform(rng) * z;
    double cum = 0.0;
    int32_t pick = best;
    for (size_t i = 0; i < n; i++) {
        int32_t t = ids[i];
        if (logit[t] <= 0.0f)
            continue; /* underflowed to 0: never drawn */
        cum += (double)logit[t];
        pick = t;
        if (u < cum)
            break;
    }
    *out = pick;
    return VKLLM_OK;
}

vkllm_status vk_sample_top(const int32_t *ids, const float *values, size_t n, uint32_t n_vocab,
                           const vkllm_sampler_params *params, const int32_t *history, size_t n_history,
                           vk_rng *rng, vk_sampler_scratch *scratch, int32_t *out, bool *done)
{
    *done = false;
    if (!ids || !values || !params || !scratch || !out || n_vocab == 0 || !scratch->probs || !scratch->ids ||
        scratch->n_vocab < n_vocab)
        return VKLLM_OK; /* vk_sample reports it */
    vkllm_status st = check_params(params);
    if (st != VKLLM_OK) {
        *done = true;
        return st;
    }
    const bool greedy = !(params->temperature > 0.0f);
    size_t n_window;
    const int32_t *outside;
    penalty_window(history, n_history, params, n_vocab, &n_window, &outside);
    /* The candidates stand for the row only when nothing else is read: no penalty in effect,
     * greedy or a top-k among them, no NaN or +inf (those rank first), a rng to draw with; and
     * no history token outside the vocabulary (vk_sample reports it). */
    if ((n_window > 0 && params->repeat_penalty != 1.0f) || outside || n == 0 || (!greedy && !rng) ||
        (!greedy && !(params->top_k > 0 && (uint32_t)params->top_k < n_vocab && (size_t)params->top_k <= n)) ||
        !(values[0] < INFINITY))
        return VKLLM_OK;
    /* the best-ranked finite ones (they come first; -inf and padding end the list) */
    size_t k = greedy ? 1 : (size_t)params->top_k, m = 0;
    while (m < k && m < n && ids[m] >= 0 && (uint32_t)ids[m] < n_vocab && values[m] != -INFINITY) {
        scratch->ids[m] = ids[m];
        scratch->probs[ids[m]] = values[m];
        m++;
    }
    *done = true;
    if (greedy) {
        if (m == 0)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "sample: every logit is -inf, there is no token to pick");
        *out = ids[0];
        return VKLLM_OK;
    }
    return sample_candidates(scratch->probs, scratch->ids, m, true, INFINITY, params, rng, out);
}
