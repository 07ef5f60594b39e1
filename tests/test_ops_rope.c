/* RoPE against a C reference that follows ggml's float arithmetic (theta_scale =
 * powf(base, -2/n_rot), theta = pos * theta_scale^i by repeated multiplication, angle =
 * freq_scale * theta, cosf/sinf): both modes, partial rotation, base and linear scaling,
 * positions from the params buffer (n_past up to 100000), tokens split across bindings,
 * and a recording replayed with a new n_past. */
#include "vk_test.h"

/* The angle is bit-identical to ggml's; what differs is sin/cos of it (reduced by 2 pi in
 * the shader, then the device's sin/cos), i.e. a few 1e-7 absolute on |x| <= 1 inputs. */
#define ROPE_ATOL 3e-6f
#define ROPE_RTOL 1e-5f

static void ref_rope(float *x, const op_rope_desc *d, uint32_t n_past, bool exact)
{
    float theta_scale = powf(d->freq_base, -2.0f / (float)d->n_rot);
    uint32_t n_half = d->n_rot / 2;
    for (uint32_t t = 0; t < d->n_tokens; t++) {
        for (uint32_t h = 0; h < d->n_heads; h++) {
            float *v = x + ((size_t)t * d->n_heads + h) * d->head_dim;
            float theta = (float)(n_past + t);
            for (uint32_t i = 0; i < n_half; i++) {
                float c, s;
                if (exact) { /* the mathematically exact angle, for comparison only */
                    double a = (double)d->freq_scale * (n_past + t) *
                               pow(d->freq_base, -2.0 * i / d->n_rot);
                    c = (float)cos(a), s = (float)sin(a);
                } else {
                    float a = d->freq_scale * theta;
                    c = cosf(a), s = sinf(a);
                }
                uint32_t i0 = d->mode == OP_ROPE_ADJACENT ? 2 * i : i;
                uint32_t i1 = d->mode == OP_ROPE_ADJACENT ? 2 * i + 1 : i + n_half;
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * c - x1 * s;
                v[i1] = x0 * s + x1 * c;
                theta *= theta_scale;
            }
        }
    }
}

static void check(vkr_device *dev, op_rope_desc d, uint32_t n_past, uint32_t replay_n_past)
{
    size_t n = (size_t)d.n_tokens * d.n_heads * d.head_dim;
    float *x = malloc(n * 4), *want = malloc(n * 4), *got = malloc(n * 4), *exact = malloc(n * 4);
    t_fill_random(x, n, d.head_dim * 7 + d.n_tokens);
    op_tensor tx = t_tensor_from(dev, x, n * 4);
    vk_step_params params = {n_past, d.n_tokens, {0, 0}};
    op_tensor tp = t_tensor_from(dev, &params, sizeof params);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_rope(cmd, dev, tx, tp, &d);
    t_check(!s, "record rope: %s", s ? vk_error_message() : "ok");
    if (vkr_cmd_end(cmd) || vkr_cmd_submit_wait(cmd)) {
        printf("FAIL: submit: %s\n", vk_error_message());
        exit(1);
    }
    const char *mode = d.mode == OP_ROPE_ADJACENT ? "adjacent" : "half";
    for (int pass = 0; pass < 2; pass++) {
        uint32_t np = pass ? replay_n_past : n_past;
        memcpy(want, x, n * 4);
        ref_rope(want, &d, np, false);
        memcpy(exact, x, n * 4);
        ref_rope(exact, &d, np, true);
        t_read(dev, tx, got, n * 4);
        char what[160];
        snprintf(what, sizeof what, "rope %s %ux%ux%u n_rot %u base %g scale %g n_past %u%s", mode,
                 d.n_tokens, d.n_heads, d.head_dim, d.n_rot, d.freq_base, d.freq_scale, np,
                 pass ? " (replay)" : "");
        t_compare(what, got, want, n, ROPE_ATOL, ROPE_RTOL);
        double gap = 0; /* how far ggml's float angle itself is from the exact one */
        size_t passthrough_bad = 0;
        for (size_t i = 0; i < n; i++) {
            gap = fabs((double)want[i] - exact[i]) > gap ? fabs((double)want[i] - exact[i]) : gap;
            if (i % d.head_dim >= d.n_rot && got[i] != x[i])
                passthrough_bad++;
        }
        printf("     (ggml float vs exact-angle rope: max abs %.3g)\n", gap);
        t_check(passthrough_bad == 0, "dims %u..%u pass through unchanged (%zu changed)", d.n_rot,
                d.head_dim, passthrough_bad);
        if (pass == 0) { /* replay the same recording at another position */
            memcpy(tx.buffer->mapped, x, n * 4);
            params.n_past = replay_n_past;
            memcpy(tp.buffer->mapped, &params, sizeof params);
            if (vkr_cmd_submit_wait(cmd)) {
                printf("FAIL: resubmit: %s\n", vk_error_message());
                exit(1);
            }
        }
    }
    vkr_cmd_destroy(cmd);
    t_tensor_free(dev, tx), t_tensor_free(dev, tp);
    free(x), free(want), free(got), free(exact);
}

int main(void)
{
    vkr_device *dev = t_device();
    /* {n_tokens, n_heads, head_dim, n_rot, mode, base, scale} */
    check(dev, (op_rope_desc){7, 4, 64, 64, OP_ROPE_ADJACENT, 10000.0f, 1.0f}, 0, 33);
    check(dev, (op_rope_desc){7, 5, 80, 32, OP_ROPE_HALF, 10000.0f, 1.0f}, 33, 0); /* phi-2 */
    check(dev, (op_rope_desc){1, 32, 128, 128, OP_ROPE_ADJACENT, 10000.0f, 1.0f}, 8191, 4000);
    check(dev, (op_rope_desc){3, 4, 96, 64, OP_ROPE_ADJACENT, 10000.0f, 1.0f}, 5, 2047); /* gpt-j */
    check(dev, (op_rope_desc){3, 2, 128, 128, OP_ROPE_HALF, 1000000.0f, 0.25f}, 30000, 12345);
    check(dev, (op_rope_desc){2, 3, 64, 16, OP_ROPE_HALF, 10000.0f, 1.0f}, 100000, 65535);
    check(dev, (op_rope_desc){200, 8, 64, 64, OP_ROPE_HALF, 10000.0f, 1.0f}, 17, 1); /* 400 KB */
    check(dev, (op_rope_desc){5, 3, 6, 2, OP_ROPE_ADJACENT, 500.0f, 0.5f}, 3, 9);   /* tiny */
    return t_finish(dev);
}
