/* Row softmax with scale and optional mask against a double-precision C reference:
 * long rows (vocabulary), causal masks with -inf, a mask row broadcast over rows, a fully
 * masked row (zeros), large logits (no overflow: the max is subtracted), rows split across
 * bindings (small-range profile). */
#include "vk_test.h"

/* float exp and sums vs double; outputs are probabilities in [0, 1]. */
#define SOFTMAX_ATOL 1e-7f
#define SOFTMAX_RTOL 2e-5f

static void ref_softmax(const float *x, const float *mask, uint32_t mask_rows, float *out,
                        uint32_t n_cols, uint32_t n_rows, float scale)
{
    double *v = malloc(n_cols * sizeof *v);
    for (uint32_t r = 0; r < n_rows; r++) {
        const float *mr = mask ? mask + (size_t)(r % mask_rows) * n_cols : NULL;
        double m = -INFINITY, sum = 0;
        for (uint32_t c = 0; c < n_cols; c++) {
            v[c] = (double)x[(size_t)r * n_cols + c] * scale + (mr ? mr[c] : 0.0);
            m = v[c] > m ? v[c] : m;
        }
        for (uint32_t c = 0; c < n_cols; c++)
            sum += m == -INFINITY ? 0 : exp(v[c] - m);
        for (uint32_t c = 0; c < n_cols; c++)
            out[(size_t)r * n_cols + c] = m == -INFINITY ? 0.0f : (float)(exp(v[c] - m) / sum);
    }
    free(v);
}

typedef enum { NO_MASK, CAUSAL_MASK, BROADCAST_MASK } mask_kind;

static void check(vkr_device *dev, uint32_t n_cols, uint32_t n_rows, float scale, float amp,
                  mask_kind kind)
{
    size_t n = (size_t)n_cols * n_rows;
    uint32_t mask_rows = kind == CAUSAL_MASK ? n_rows : 1;
    size_t n_mask = (size_t)mask_rows * n_cols;
    float *x = malloc(n * 4), *mask = malloc(n_mask * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    t_fill_random(x, n, n_cols + 3 * n_rows);
    for (size_t i = 0; i < n; i++)
        x[i] *= amp;
    for (uint32_t r = 0; r < mask_rows; r++)
        for (uint32_t c = 0; c < n_cols; c++) {
            /* causal: row r sees columns <= r + n_cols - n_rows (cycling when rows outnumber
             * columns); the broadcast mask mixes -inf and finite biases */
            uint32_t last = n_cols >= n_rows ? r + n_cols - n_rows : r % n_cols;
            mask[(size_t)r * n_cols + c] =
                kind == CAUSAL_MASK ? (c > last ? -INFINITY : 0.0f)
                                    : (c % 3 == 0 ? -INFINITY : 0.25f * (float)(c % 5));
        }
    if (kind == CAUSAL_MASK && n_rows > 1 && n_cols > 2) /* one fully masked row */
        for (uint32_t c = 0; c < n_cols; c++)
            mask[c] = -INFINITY;
    op_tensor tx = t_tensor_from(dev, x, n * 4), out = t_tensor(dev, n * 4);
    op_tensor tm = kind == NO_MASK ? (op_tensor){0} : t_tensor_from(dev, mask, n_mask * 4);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_softmax(cmd, dev, tx, tm, out, n_cols, n_rows, scale);
    t_run(cmd);
    bool fits = (uint64_t)n_cols * 4 + dev->caps.storage_offset_alignment - 1 <=
                dev->caps.max_storage_buffer_range;
    const char *kinds[] = {"no mask", "causal mask", "broadcast mask"};
    if (!fits) {
        t_check(s == VKLLM_ERR_UNSUPPORTED, "softmax row of %u floats over one binding refused: %s",
                n_cols, vk_error_message());
    } else {
        t_check(!s, "record softmax %u x %u: %s", n_rows, n_cols, s ? vk_error_message() : "ok");
        ref_softmax(x, kind == NO_MASK ? NULL : mask, mask_rows, want, n_cols, n_rows, scale);
        t_read(dev, out, got, n * 4);
        char what[96];
        snprintf(what, sizeof what, "softmax %u x %u scale %g amp %g %s", n_rows, n_cols, scale,
                 amp, kinds[kind]);
        t_compare(what, got, want, n, SOFTMAX_ATOL, SOFTMAX_RTOL);
        /* every unmasked row sums to 1 */
        double worst = 0;
        for (uint32_t r = (kind == CAUSAL_MASK && n_rows > 1 && n_cols > 2); r < n_rows; r++) {
            double sum = 0;
            for (uint32_t c = 0; c < n_cols; c++)
                sum += got[(size_t)r * n_cols + c];
            worst = fabs(sum - 1) > worst ? fabs(sum - 1) : worst;
        }
        t_check(worst < 1e-5, "row sums within %.2g of 1", worst);
    }
    t_tensor_free(dev, tx), t_tensor_free(dev, out);
    if (kind != NO_MASK)
        t_tensor_free(dev, tm);
    free(x), free(mask), free(want), free(got);
}

int main(void)
{
    vkr_device *dev = t_device();
    check(dev, 1, 1, 1.0f, 1.0f, NO_MASK);
    check(dev, 5, 3, 1.0f, 1.0f, NO_MASK);
    check(dev, 32000, 2, 1.0f, 8.0f, NO_MASK);      /* a vocabulary row */
    check(dev, 100003, 1, 1.0f, 4.0f, NO_MASK);     /* over a small-range binding */
    check(dev, 77, 77, 0.125f, 30.0f, CAUSAL_MASK); /* square causal, one row fully masked */
    check(dev, 1000, 37, 0.5f, 200.0f, CAUSAL_MASK); /* logits to +-100: overflow without max */
    check(dev, 4099, 19, 1.0f, 2.0f, BROADCAST_MASK); /* many rows over 64 KiB, broadcast mask */
    check(dev, 3, 5000, 2.0f, 1.0f, CAUSAL_MASK);    /* many short rows, full mask over 64 KiB */
    return t_finish(dev);
}
