/* Model merging (see merge.h). The formulas are mergekit's (merge_methods/linear.py and
 * generalized_task_arithmetic.py with TIES' magnitude trimming and "sum" sign election),
 * re-expressed; tests/fixtures/merge_reference.bin holds mergekit's own results. */
#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "gguf.h"
#include "gguf_write.h"
#include "quant.h"

/* ---- floats ------------------------------------------------------------------------------ */

/* The k-th largest of a[0..n) (k >= 1), reordering a: quickselect. */
static float kth_largest(float *a, uint64_t n, uint64_t k)
{
    uint64_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        uint64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot)
                i++;
            while (a[j] < pivot)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[lo];
}

/* Keeps the k largest magnitudes of d (ties at the threshold: the first ones), zeroes the
 * rest. `tmp` holds n floats. */
static void trim_to_top(float *d, uint64_t n, uint64_t k, float *tmp)
{
    if (k >= n)
        return;
    if (k == 0) {
        memset(d, 0, n * sizeof *d);
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        tmp[i] = fabsf(d[i]);
    float thr = kth_largest(tmp, n, k);
    uint64_t above = 0;
    for (uint64_t i = 0; i < n; i++)
        above += fabsf(d[i]) > thr;
    uint64_t at_thr = k - above;
    for (uint64_t i = 0; i < n; i++) {
        float m = fabsf(d[i]);
        if (m < thr || (m == thr && at_thr == 0))
            d[i] = 0.0f;
        else if (m == thr)
            at_thr--;
    }
}

static float sign_of(float v) { return (float)((v > 0.0f) - (v < 0.0f)); }

void merge_floats(const merge_spec *s, const float *base, const float *const *x, uint64_t n, float *out,
                  float *scratch)
{
    uint32_t k = s->n_models;
    if (s->method == VKLLM_MERGE_LINEAR) {
        float wsum = 0.0f;
        for (uint32_t m = 0; m < k; m++)
            wsum += s->weights[m];
        for (uint64_t i = 0; i < n; i++) {
            float acc = 0.0f;
            for (uint32_t m = 0; m < k; m++)
                acc += x[m][i] * s->weights[m];
            out[i] = s->normalize ? acc / wsum : acc;
        }
        return;
    }
    /* TIES: the weighted, trimmed task vectors, then the elected sign per element. */
    float *tmp = scratch + (uint64_t)k * n;
    for (uint32_t m = 0; m < k; m++) {
        float *d = scratch + (uint64_t)m * n;
        for (uint64_t i = 0; i < n; i++)
            d[i] = x[m][i] - base[i];
        double density = s->density[m];
        uint64_t keep = density >= 1.0 ? n : density <= 0.0 ? 0 : (uint64_t)(density * (double)n);
        trim_to_top(d, n, density > 0.0 && keep == 0 ? 1 : keep, tmp);
        for (uint64_t i = 0; i < n; i++)
            d[i] *= s->weights[m];
    }
    for (uint64_t i = 0; i < n; i++) {
        float sum = 0.0f;
        for (uint32_t m = 0; m < k; m++)
            sum += scratch[(uint64_t)m * n + i];
        float elected = sum >= 0.0f ? 1.0f : -1.0f, mixed = 0.0f, divisor = 0.0f;
        for (uint32_t m = 0; m < k; m++) {
            float d = scratch[(uint64_t)m * n + i];
            if (sign_of(d) == elected) {
                mixed += d;
                divisor += s->weights[m];
            }
        }
        if (divisor == 0.0f)
            divisor = 1.0f;
        if (s->normalize)
            mixed /= divisor;
        if (s->lambda != 1.0f)
            mixed *= s->lambda;
        out[i] = base[i] + mixed;
    }
}

/* ---- files ------------------------------------------------------------------------------- */

typedef struct merge_job {
    const vkllm_merge_desc *desc;
    merge_spec spec;
    gguf_file **in;    /* the models, then the base (TIES) */
    uint32_t n_in;
    uint32_t *types;   /* output type per tensor of in[0] */
    float **rows;      /* one float copy per input */
    float *out, *scratch;
    uint64_t done_weights, total_weights;
} merge_job;

/* ggml type of a merged matrix stored as `type`, for weight_type `wt`: F16 where vkllm
 * cannot write the type (K-quants) or its blocks do not fit the rows. */
static uint32_t merged_type(uint32_t type, int32_t wt, uint64_t ne0)
{
    int32_t asked = vk_weight_type_ggml(wt);
    uint32_t t = asked < 0 ? type : (uint32_t)asked;
    return ggml_traits(t).supported && ggml_row_bytes(t, ne0) ? t : GGML_F16;
}

static vkllm_status fill_tensor(void *user, uint64_t i, uint8_t *buf, uint64_t bytes)
{
    merge_job *j = user;
    const gguf_tensor *t0 = &j->in[0]->tensors[i];
    uint64_t n = t0->ne[0] * t0->ne[1] * t0->ne[2] * t0->ne[3];
    for (uint32_t m = 0; m < j->n_in; m++) {
        const gguf_tensor *t = gguf_find_tensor(j->in[m], t0->name);
        if (vk_dequantize_row(t->type, t->data, j->rows[m], n) != 0)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "merge: tensor %s has type %s, which vkllm cannot decode",
                           t0->name, ggml_traits(t->type).name ? ggml_traits(t->type).name : "unknown");
    }
    const float *base = j->desc->method == VKLLM_MERGE_TIES ? j->rows[j->n_in - 1] : NULL;
    merge_floats(&j->spec, base, (const float *const *)j->rows, n, j->out, j->scratch);
    uint32_t type = j->types[i];
    uint64_t row = ggml_row_bytes(type, t0->ne[0]);
    for (uint64_t r = 0; r < n / t0->ne[0]; r++)
        if (vk_convert_row(GGML_F32, j->out + r * t0->ne[0], type, buf + r * row, t0->ne[0], j->scratch) != row)
            return vk_fail(VKLLM_ERR_UNSUPPORTED, "merge: tensor %s row %llu: merged weights that %s cannot "
                           "hold (NaN, or too large)", t0->name, (unsigned long long)r, ggml_traits(type).name);
    (void)bytes;
    j->done_weights += n;
    if (j->desc->progress_fn &&
        j->desc->progress_fn(j->desc->progress_user, (float)((double)j->done_weights / (double)j->total_weights)))
        return vk_fail(VKLLM_ERR_IO, "merge cancelled by the host");
    return VKLLM_OK;
}

/* Every input has the first one's architecture and tensors (names, shapes); float
 * tensors only. */
static vkllm_status check_inputs(merge_job *j, const char *const *paths)
{
    gguf_str arch0 = {0}, arch;
    gguf_get_str(j->in[0], "general.architecture", &arch0);
    for (uint32_t m = 0; m < j->n_in; m++) {
        const gguf_file *f = j->in[m];
        if (gguf_get_str(f, "general.architecture", &arch) || arch.len != arch0.len ||
            memcmp(arch.data, arch0.data, arch.len))
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: %s is not a %.*s model like %s", paths[m],
                           (int)arch0.len, arch0.data, paths[0]);
        if (f->n_tensors != j->in[0]->n_tensors)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: %s has %llu tensors, %s %llu", paths[m],
                           (unsigned long long)f->n_tensors, paths[0], (unsigned long long)j->in[0]->n_tensors);
        for (uint64_t i = 0; i < j->in[0]->n_tensors; i++) {
            const gguf_tensor *t0 = &j->in[0]->tensors[i], *t = gguf_find_tensor(f, t0->name);
            if (!t)
                return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: %s has no tensor %s", paths[m], t0->name);
            if (memcmp(t->ne, t0->ne, sizeof t->ne))
                return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: tensor %s has another shape in %s than in %s",
                               t0->name, paths[m], paths[0]);
            if (vk_compute_type(t->type) == GGML_TYPE_COUNT)
                return vk_fail(VKLLM_ERR_UNSUPPORTED, "merge: tensor %s of %s has type %s, which vkllm cannot "
                               "decode", t0->name, paths[m], ggml_traits(t->type).name ? ggml_traits(t->type).name
                                                                                        : "unknown");
        }
    }
    return VKLLM_OK;
}

vkllm_status merge_files(const vkllm_merge_desc *d)
{
    if (!d || d->size < sizeof(vkllm_merge_desc) || !d->models || d->n_models == 0 || !d->out_path)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: need models, n_models > 0 and out_path (and the "
                       "desc's size from merge_desc_defaults)");
    if (d->method != VKLLM_MERGE_LINEAR && d->method != VKLLM_MERGE_TIES)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: unknown method %d", d->method);
    if (d->method == VKLLM_MERGE_TIES && !d->base)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: TIES needs a base model");
    if (d->weight_type < VKLLM_WEIGHTS_AS_STORED || d->weight_type > VKLLM_WEIGHTS_Q4_0)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: unknown weight_type %d", d->weight_type);
    merge_job j = {.desc = d};
    j.n_in = d->n_models + (d->method == VKLLM_MERGE_TIES);
    float *weights = malloc(d->n_models * sizeof *weights), *dens = malloc(d->n_models * sizeof *dens);
    j.in = calloc(j.n_in, sizeof *j.in);
    j.rows = calloc(j.n_in, sizeof *j.rows);
    const char **paths = calloc(j.n_in, sizeof *paths);
    vkllm_status s = VKLLM_OK;
    if (!weights || !dens || !j.in || !j.rows || !paths) {
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "merge: out of memory");
        goto done;
    }
    float wsum = 0.0f;
    for (uint32_t m = 0; m < d->n_models; m++) {
        weights[m] = d->weights ? d->weights[m] : 1.0f;
        dens[m] = d->densities ? d->densities[m] : d->density;
        wsum += weights[m];
        paths[m] = d->models[m];
        if (!paths[m] || !(weights[m] == weights[m]) || !(dens[m] >= 0.0f && dens[m] <= 1.0f)) {
            s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: model %u: NULL path, NaN weight or density outside "
                        "[0, 1]", m);
            goto done;
        }
    }
    if (d->method == VKLLM_MERGE_LINEAR && d->normalize && wsum == 0.0f) {
        s = vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "merge: the weights sum to 0, so they cannot be normalized");
        goto done;
    }
    if (d->method == VKLLM_MERGE_TIES)
        paths[j.n_in - 1] = d->base;
    j.spec = (merge_spec){d->method, d->n_models, weights, dens, d->normalize != 0, d->lambda};
    for (uint32_t m = 0; m < j.n_in && !s; m++)
        if ((s = gguf_open(paths[m], &j.in[m])))
            s = vk_fail_prefix(s, "merge");
    if (s || (s = check_inputs(&j, paths)))
        goto done;

    const gguf_file *f0 = j.in[0];
    uint64_t n_max = 0;
    gguf_write_tensor *wt = calloc(f0->n_tensors + 1, sizeof *wt);
    j.types = calloc(f0->n_tensors + 1, sizeof *j.types);
    if (!wt || !j.types) {
        free(wt);
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "merge: out of memory");
        goto done;
    }
    int changed = 0;
    for (uint64_t i = 0; i < f0->n_tensors; i++) {
        const gguf_tensor *t = &f0->tensors[i];
        uint64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
        j.types[i] = t->n_dims == 1 ? GGML_F32 : merged_type(t->type, d->weight_type, t->ne[0]);
        changed |= t->n_dims > 1 && j.types[i] != t->type;
        wt[i] = (gguf_write_tensor){t->name, t->n_dims, {t->ne[0], t->ne[1], t->ne[2], t->ne[3]}, j.types[i]};
        n_max = n > n_max ? n : n_max;
        j.total_weights += n;
    }
    for (uint32_t m = 0; m < j.n_in && !s; m++)
        if (!(j.rows[m] = malloc(n_max * sizeof(float))))
            s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "merge: out of memory for tensors of %llu weights",
                        (unsigned long long)n_max);
    if (!s && (!(j.out = malloc(n_max * sizeof(float))) ||
               !(j.scratch = malloc((uint64_t)(d->n_models + 1) * n_max * sizeof(float)))))
        s = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "merge: out of memory for tensors of %llu weights",
                    (unsigned long long)n_max);
    /* general.file_type (llama.cpp's llama_ftype) no longer says what the matrices are when
     * they were converted: then it is what weight_type asked for, or mostly F16. */
    static const uint64_t ftype_of[] = {1, 0, 1, 7, 2};
    gguf_kv ftype = {.key = "general.file_type", .type = GGUF_UINT32, .v.u = ftype_of[d->weight_type]};
    if (!s)
        s = gguf_write_file(d->out_path, f0, &ftype, changed ? 1 : 0, wt, f0->n_tensors, fill_tensor, &j);
    free(wt);
done:
    for (uint32_t m = 0; j.in && m < j.n_in; m++) {
        if (j.in[m])
            gguf_close(j.in[m]);
        if (j.rows)
            free(j.rows[m]);
    }
    free(j.in);
    free(j.rows);
    free(j.types);
    free(j.out);
    free(j.scratch);
    free(paths);
    free(weights);
    free(dens);
    return s;
}
