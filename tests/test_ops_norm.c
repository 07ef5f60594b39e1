/* RMSNorm and LayerNorm against a double-precision C reference (as ggml: mean of squares,
 * or mean then variance of x - mean, then 1 / sqrt(. + eps)), over awkward row lengths,
 * rows split across bindings (small-range profile) and a row longer than one binding. */
#include "vk_test.h"

/* Reference tolerance: float accumulation over a row vs double. */
#define NORM_ATOL 1e-6f
#define NORM_RTOL 1e-5f

static void ref_rmsnorm(const float *x, const float *w, float *out, uint32_t n_cols,
                        uint32_t n_rows, float eps)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * n_cols;
        double ss = 0;
        for (uint32_t c = 0; c < n_cols; c++)
            ss += (double)xr[c] * xr[c];
        double scale = 1.0 / sqrt(ss / n_cols + eps);
        for (uint32_t c = 0; c < n_cols; c++)
            out[(size_t)r * n_cols + c] = (float)(xr[c] * scale * w[c]);
    }
}

static void ref_layernorm(const float *x, const float *w, const float *b, float *out,
                          uint32_t n_cols, uint32_t n_rows, float eps)
{
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * n_cols;
        double mean = 0, var = 0;
        for (uint32_t c = 0; c < n_cols; c++)
            mean += xr[c];
        mean /= n_cols;
        for (uint32_t c = 0; c < n_cols; c++)
            var += (xr[c] - mean) * (xr[c] - mean);
        double scale = 1.0 / sqrt(var / n_cols + eps);
        for (uint32_t c = 0; c < n_cols; c++)
            out[(size_t)r * n_cols + c] = (float)((xr[c] - mean) * scale * w[c] + (b ? b[c] : 0.0f));
    }
}

static void check(vkr_device *dev, uint32_t n_cols, uint32_t n_rows, float mean)
{
    size_t n = (size_t)n_cols * n_rows;
    float *x = malloc(n * 4), *w = malloc(n_cols * 4), *b = malloc(n_cols * 4);
    float *want = malloc(n * 4), *got = malloc(n * 4);
    t_fill_random(x, n, n_cols * 31 + n_rows);
    for (size_t i = 0; i < n; i++)
        x[i] += mean;
    t_fill_random(w, n_cols, n_cols + 5);
    t_fill_random(b, n_cols, n_cols + 9);
    op_tensor tx = t_tensor_from(dev, x, n * 4), tw = t_tensor_from(dev, w, n_cols * 4);
    op_tensor tb = t_tensor_from(dev, b, n_cols * 4), none = {0};
    op_tensor o_rms = t_tensor(dev, n * 4), o_ln = t_tensor(dev, n * 4), o_ln0 = t_tensor(dev, n * 4);

    /* A row must fit one binding (its start may sit up to alignment - 1 bytes after it). */
    bool fits = (uint64_t)n_cols * 4 + dev->caps.storage_offset_alignment - 1 <=
                dev->caps.max_storage_buffer_range;
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s1 = op_rmsnorm(cmd, dev, tx, tw, o_rms, n_cols, n_rows, 1e-5f);
    vkllm_status s2 = op_layernorm(cmd, dev, tx, tw, tb, o_ln, n_cols, n_rows, 1e-5f);
    vkllm_status s3 = op_layernorm(cmd, dev, tx, tw, none, o_ln0, n_cols, n_rows, 1e-6f);
    t_run(cmd);
    if (!fits) {
        t_check(s1 == VKLLM_ERR_UNSUPPORTED && s2 == VKLLM_ERR_UNSUPPORTED &&
                    s3 == VKLLM_ERR_UNSUPPORTED,
                "a row of %u floats over a binding of %llu is refused: %s", n_cols,
                (unsigned long long)dev->caps.max_storage_buffer_range, vk_error_message());
    } else {
        t_check(!s1 && !s2 && !s3, "record %u x %u", n_rows, n_cols);
        char what[80];
        ref_rmsnorm(x, w, want, n_cols, n_rows, 1e-5f);
        t_read(dev, o_rms, got, n * 4);
        snprintf(what, sizeof what, "rmsnorm %u x %u", n_rows, n_cols);
        t_compare(what, got, want, n, NORM_ATOL, NORM_RTOL);
        ref_layernorm(x, w, b, want, n_cols, n_rows, 1e-5f);
        t_read(dev, o_ln, got, n * 4);
        snprintf(what, sizeof what, "layernorm+bias %u x %u mean %g", n_rows, n_cols, mean);
        t_compare(what, got, want, n, NORM_ATOL, NORM_RTOL);
        ref_layernorm(x, w, NULL, want, n_cols, n_rows, 1e-6f);
        t_read(dev, o_ln0, got, n * 4);
        snprintf(what, sizeof what, "layernorm %u x %u mean %g", n_rows, n_cols, mean);
        t_compare(what, got, want, n, NORM_ATOL, NORM_RTOL);
    }
    t_tensor_free(dev, tx), t_tensor_free(dev, tw), t_tensor_free(dev, tb);
    t_tensor_free(dev, o_rms), t_tensor_free(dev, o_ln), t_tensor_free(dev, o_ln0);
    free(x), free(w), free(b), free(want), free(got);
}

int main(void)
{
    vkr_device *dev = t_device();
    /* {n_cols, n_rows}: tiny, odd (rows straddle the 16-byte alignment), model widths,
     * many rows (split across 64 KiB bindings), and a 400 KB row (one workgroup loops
     * ~390 times per invocation; more than one small-range binding). */
    const uint32_t sizes[][2] = {{1, 1}, {7, 3}, {64, 5}, {257, 2}, {768, 9}, {4096, 17},
                                 {5003, 7}, {100003, 2}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        check(dev, sizes[i][0], sizes[i][1], 0.0f);
    check(dev, 2048, 3, 40.0f); /* a large mean: the two-pass variance keeps it exact */
    return t_finish(dev);
}
