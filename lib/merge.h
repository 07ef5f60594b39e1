/* Model merging: linear (weighted averaging) and TIES, as mergekit defines them, over whole
 * GGUF files of one architecture. */
#ifndef VKLLM_MERGE_H
#define VKLLM_MERGE_H

#include <stdint.h>

#include "vkllm/vkllm.h"

typedef struct merge_spec {
    int32_t method;       /* VKLLM_MERGE_LINEAR or VKLLM_MERGE_TIES */
    uint32_t n_models;
    const float *weights; /* one a model */
    const float *density; /* TIES: the fraction of each task vector kept, one a model */
    int normalize;        /* divide by the weights' sum (TIES: of those that agree in sign) */
    float lambda;         /* TIES: scale of the merged task vector */
} merge_spec;

/* Merges `n` floats of each model (x[i]) into `out`:
 *   linear: sum_i w_i x_i (/ sum_i w_i when normalizing);
 *   TIES: task vectors d_i = x_i - base, each trimmed to its int(density_i * n) largest
 *   magnitudes (at least one; none at density 0) and weighted; the sign of their sum elects
 *   a sign per element; the weighted vectors with that sign are summed (/ the sum of their
 *   weights when normalizing), scaled by lambda and added to `base`.
 * `scratch` holds (n_models + 1) * n floats. */
void merge_floats(const merge_spec *spec, const float *base, const float *const *x, uint64_t n, float *out,
                  float *scratch);

/* Merges the GGUF files desc->models (and desc->base for TIES) tensor by tensor into
 * desc->out_path (see vkllm_merge_desc in vkllm.h). */
vkllm_status merge_files(const vkllm_merge_desc *desc);

#endif
