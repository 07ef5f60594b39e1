/* SwiGLU, SiLU, GELU (tanh form, as ggml_gelu) and ReLU against double-precision C, over
 * sizes that fold the grid and split across 64 KiB bindings, with saturating inputs. */
#include "vk_test.h"

/* exp/tanh in float vs double; gelu's 1 + tanh(u) cancels for very negative inputs, which
 * the absolute term covers (ggml's float code has the same cancellation). */
#define ACT_ATOL 1e-6f
#define ACT_RTOL 1e-5f

static double silu(double v) { return v / (1.0 + exp(-v)); }

static double gelu(double v)
{
    const double sqrt_2_over_pi = 0.79788456080286535588, coef_a = 0.044715;
    return 0.5 * v * (1.0 + tanh(sqrt_2_over_pi * v * (1.0 + coef_a * v * v)));
}

static void check(vkr_device *dev, uint32_t n, float amp)
{
    float *a = malloc(n * 4), *b = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4);
    t_fill_random(a, n, n + 1);
    t_fill_random(b, n, n + 2);
    for (uint32_t i = 0; i < n; i++)
        a[i] *= amp;
    const float specials[] = {0.0f, -0.0f, 100.0f, -100.0f, 20.0f, -20.0f, 1e-8f, -1e-8f, 88.0f, -88.0f};
    for (uint32_t i = 0; i < n && i < sizeof specials / sizeof *specials; i++)
        a[i] = specials[i];
    op_tensor ta = t_tensor_from(dev, a, n * 4), tb = t_tensor_from(dev, b, n * 4);
    op_tensor o[4];
    for (int k = 0; k < 4; k++)
        o[k] = t_tensor(dev, n * 4);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_swiglu(cmd, dev, ta, tb, o[0], n);
    s = s ? s : op_silu(cmd, dev, ta, o[1], n);
    s = s ? s : op_gelu(cmd, dev, ta, o[2], n);
    s = s ? s : op_relu(cmd, dev, ta, o[3], n);
    t_check(!s, "record n=%u: %s", n, s ? vk_error_message() : "ok");
    t_run(cmd);
    const char *names[] = {"swiglu", "silu", "gelu", "relu"};
    for (int k = 0; k < 4; k++) {
        for (uint32_t i = 0; i < n; i++) {
            double v = a[i];
            want[i] = (float)(k == 0 ? silu(v) * b[i] : k == 1 ? silu(v) : k == 2 ? gelu(v)
                                                                                  : (v > 0 ? v : 0));
        }
        t_read(dev, o[k], got, n * 4);
        char what[64];
        snprintf(what, sizeof what, "%s n=%u amp %g", names[k], n, amp);
        t_compare(what, got, want, n, k == 3 ? 0 : ACT_ATOL, k == 3 ? 0 : ACT_RTOL);
    }
    t_tensor_free(dev, ta), t_tensor_free(dev, tb);
    for (int k = 0; k < 4; k++)
        t_tensor_free(dev, o[k]);
    free(a), free(b), free(want), free(got);
}

int main(void)
{
    vkr_device *dev = t_device();
    check(dev, 1, 1.0f);
    check(dev, 17, 4.0f);
    check(dev, 4097, 12.0f);
    check(dev, 100003, 6.0f);  /* 400 KB: several small-range bindings */
    check(dev, 6300001, 3.0f); /* 98k workgroups: the grid folds into y */
    return t_finish(dev);
}
