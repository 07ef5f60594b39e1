/* Sampling from a row of logits: greedy, temperature, top-k, top-p, min-p, repetition
 * penalty. Deterministic for a given seed. */
#ifndef VKLLM_SAMPLING_H
#define VKLLM_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vkllm/vkllm.h"

typedef struct vk_rng {
    uint64_t s[4]; /* xoshiro256** state */
} vk_rng;

void vk_rng_seed(vk_rng *rng, uint64_t seed);
uint64_t vk_rng_next(vk_rng *rng);
double vk_rng_uniform(vk_rng *rng); /* [0, 1) */

typedef struct vk_sampler_scratch {
    float *probs;     /* n_vocab floats */
    int32_t *ids;     /* n_vocab ids */
    uint32_t n_vocab;
} vk_sampler_scratch;

vkllm_status vk_sampler_scratch_init(vk_sampler_scratch *s, uint32_t n_vocab);
void vk_sampler_scratch_free(vk_sampler_scratch *s);

/* Picks a token from `logits` (not modified). `history` holds the previous tokens of the
 * sequence, the penalty looks at the last params->repeat_last_n of them. Order of the
 * steps, as llama.cpp's default chain: repetition penalty, top-k, top-p, min-p,
 * temperature, then draw (greedy when temperature <= 0). */
vkllm_status vk_sample(const float *logits, uint32_t n_vocab, const vkllm_sampler_params *params,
                       const int32_t *history, size_t n_history, vk_rng *rng,
                       vk_sampler_scratch *scratch, int32_t *out);

/* vk_sample when the caller holds only the best-ranked candidates of the row: ids[i] with
 * values[i], i < n, in rank order (higher logit first, lower id first on equal logits; -inf
 * entries and ids outside the vocabulary end the list), as op_top_k gives them. When that is
 * all vk_sample would read (greedy, or 0 < top_k <= n, top_k < n_vocab; no repetition penalty
 * in effect; the best candidate neither NaN nor +inf) it sets *done and picks the same token,
 * drawing the same random numbers, or fails as vk_sample would; otherwise *done is false and
 * nothing is drawn: sample the whole row. */
vkllm_status vk_sample_top(const int32_t *ids, const float *values, size_t n, uint32_t n_vocab,
                           const vkllm_sampler_params *params, const int32_t *history, size_t n_history,
                           vk_rng *rng, vk_sampler_scratch *scratch, int32_t *out, bool *done);

#endif
