/* Elementwise add/mul/scale against C, over awkward sizes, including grids that fold into y. */
#include "vk_test.h"

static void check_size(vkr_device *dev, uint32_t n, uint32_t n_b)
{
    float *a = malloc(n * sizeof *a), *b = malloc(n_b * sizeof *b);
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    t_fill_random(a, n, n);
    t_fill_random(b, n_b, n_b + 7);
    op_tensor ta = t_tensor_from(dev, a, n * sizeof *a), tb = t_tensor_from(dev, b, n_b * sizeof *b);
    op_tensor out_add = t_tensor(dev, n * sizeof(float)), out_mul = t_tensor(dev, n * sizeof(float));
    op_tensor out_scale = t_tensor(dev, n * sizeof(float));
    vkr_cmd *cmd = t_begin(dev);
    t_check(!op_add(cmd, dev, ta, tb, out_add, n, n_b) && !op_mul(cmd, dev, ta, tb, out_mul, n, n_b) &&
                !op_scale(cmd, dev, ta, out_scale, n, 0.37f),
            "record n=%u n_b=%u", n, n_b);
    t_run(cmd);
    char what[64];
    for (uint32_t i = 0; i < n; i++)
        want[i] = a[i] + b[i % n_b];
    t_read(dev, out_add, got, n * sizeof *got);
    snprintf(what, sizeof what, "add n=%u n_b=%u", n, n_b);
    t_compare(what, got, want, n, 0, 0);
    for (uint32_t i = 0; i < n; i++)
        want[i] = a[i] * b[i % n_b];
    t_read(dev, out_mul, got, n * sizeof *got);
    snprintf(what, sizeof what, "mul n=%u n_b=%u", n, n_b);
    t_compare(what, got, want, n, 0, 0);
    for (uint32_t i = 0; i < n; i++)
        want[i] = a[i] * 0.37f;
    t_read(dev, out_scale, got, n * sizeof *got);
    snprintf(what, sizeof what, "scale n=%u", n);
    t_compare(what, got, want, n, 0, 0);
    t_tensor_free(dev, ta);
    t_tensor_free(dev, tb);
    t_tensor_free(dev, out_add);
    t_tensor_free(dev, out_mul);
    t_tensor_free(dev, out_scale);
    free(a), free(b), free(want), free(got);
}

int main(void)
{
    vkr_device *dev = t_device();
    const uint32_t sizes[][2] = {{1, 1}, {3, 3}, {127, 1}, {4097, 4097}, {4097, 17}, {100003, 4097},
                                 /* 6.3M elements = 98k workgroups of 64: folds the grid into y */
                                 {6300001, 576}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        check_size(dev, sizes[i][0], sizes[i][1]);
    return t_finish(dev);
}
