/* StripedHyena's ops against plain C in double precision: the gated modal recurrence with
 * its complex state (ops_hyena.c), and the RMSNorm with eps outside the root (ops_norm.c's
 * op_rmsnorm_eps_outside). (Its short
 * FIR is op_ssm_conv without SiLU, checked in test_ops_ssm.c.) Checked: awkward sizes
 * (channel counts that are not multiples of the workgroup, 1..32 modes), a nonzero starting
 * state, the state carried across several calls recorded in one command buffer, batch vs
 * token-by-token equality (bit for bit: the same arithmetic per token), a sequence long
 * enough that one invocation looping over all tokens would pass lavapipe's 65,535-iteration
 * cap (the op must split it), and StripedHyena-7B's width. Under the small-range profile
 * (64 KiB bindings) the large cases are split into several bindings as well. The norm is
 * checked where eps decides the result (rows with an RMS near eps), so x / sqrt(ms + eps)
 * would fail. */
#include "vk_test.h"

#define IIR_ATOL 1e-6
#define IIR_RTOL 4e-6 /* of the terms' size: the state sums ~1 / (1 - |p|) inputs */
#define NORM_ATOL 1e-6f
#define NORM_RTOL 2e-6f

static float *random_floats(size_t n, uint32_t seed, float scale, float offset)
{
    float *v = malloc(n * sizeof *v);
    t_fill_random(v, n, seed);
    for (size_t i = 0; i < n; i++)
        v[i] = v[i] * scale + offset;
    return v;
}

/* One call: z [T][3E] = x2 | x1 | v, poles and residues [E][2N] (re, im), d [E], state [E][2N]
 * (double, updated). scale gets |x2| (sum_n |Re R s| + |d u|) per output: the size of the
 * terms whose sum may cancel, which the f32 rounding is relative to. */
static void iir_ref(const float *z, const float *p, const float *r, const float *d, double *state, float *out,
                    float *scale, uint32_t T, uint32_t E, uint32_t N)
{
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t c = 0; c < E; c++) {
            const float *row = z + (size_t)t * 3 * E;
            double x2 = row[c], u = (double)row[E + c] * row[2 * E + c], y = 0, mag = fabs(d[c] * u);
            for (uint32_t n = 0; n < N; n++) {
                size_t i = (size_t)c * 2 * N + 2 * n;
                double sr = state[i], si = state[i + 1];
                state[i] = p[i] * sr - p[i + 1] * si + u;
                state[i + 1] = p[i] * si + p[i + 1] * sr;
                double term = r[i] * state[i] - r[i + 1] * state[i + 1];
                y += term;
                mag += fabs(r[i] * state[i]) + fabs(r[i + 1] * state[i + 1]);
            }
            out[(size_t)t * E + c] = (float)(x2 * (y + d[c] * u));
            scale[(size_t)t * E + c] = (float)(fabs(x2) * mag);
        }
}

/* The sequence of T tokens in calls of `splits` tokens each (0-terminated; the last size
 * repeats), all recorded into one command buffer, against the reference; returns the GPU
 * outputs (caller frees) so runs can be compared with each other. */
static float *iir_run(vkr_device *dev, uint32_t T, uint32_t E, uint32_t N, const uint32_t *splits, const char *what)
{
    size_t nz = (size_t)T * 3 * E, no = (size_t)T * E, nm = (size_t)E * 2 * N;
    float *z = random_floats(nz, 41 + E, 1.5f, 0.0f), *d = random_floats(E, 42, 0.5f, 0.0f);
    float *r = random_floats(nm, 43 + N, 0.4f, 0.0f), *s0 = random_floats(nm, 44, 0.5f, 0.0f);
    /* poles of modulus 0.3 .. 0.97 at any angle: decaying memories of ~1 to ~33 tokens */
    float *mod = random_floats(nm / 2, 45, 0.335f, 0.635f), *ang = random_floats(nm / 2, 46, 3.14159f, 0.0f);
    float *p = malloc(nm * 4);
    for (size_t i = 0; i < nm / 2; i++) {
        p[2 * i] = mod[i] * cosf(ang[i]);
        p[2 * i + 1] = mod[i] * sinf(ang[i]);
    }
    double *state = malloc(nm * sizeof *state);
    for (size_t i = 0; i < nm; i++)
        state[i] = s0[i];
    float *want = malloc(no * 4), *got = malloc(no * 4), *scale = malloc(no * 4);
    float *want_s = malloc(nm * 4), *got_s = malloc(nm * 4);
    iir_ref(z, p, r, d, state, want, scale, T, E, N);
    for (size_t i = 0; i < nm; i++)
        want_s[i] = (float)state[i];

    op_tensor tz = t_tensor_from(dev, z, nz * 4), tp = t_tensor_from(dev, p, nm * 4);
    op_tensor tr = t_tensor_from(dev, r, nm * 4);
    op_tensor td = t_tensor_from(dev, d, E * 4), ts = t_tensor_from(dev, s0, nm * 4), to = t_tensor(dev, no * 4);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = VKLLM_OK;
    uint32_t done = 0, calls = 0;
    for (const uint32_t *sp = splits; done < T && !s; calls++) {
        uint32_t n = *sp < T - done ? *sp : T - done;
        if (sp[1])
            sp++;
        op_tensor zs = {tz.buffer, (VkDeviceSize)done * 3 * E * 4, (VkDeviceSize)n * 3 * E * 4};
        op_tensor os = {to.buffer, (VkDeviceSize)done * E * 4, (VkDeviceSize)n * E * 4};
        s = op_hyena_iir(cmd, dev, zs, tp, tr, td, ts, os, n, E, N);
        done += n;
    }
    t_check(!s, "record hyena_iir %s: %s", what, s ? vk_error_message() : "ok");
    t_run(cmd);
    t_read(dev, to, got, no * 4);
    t_read(dev, ts, got_s, nm * 4);
    char label[160];
    snprintf(label, sizeof label, "iir %s T=%u E=%u N=%u, %u calls: out", what, T, E, N, calls);
    t_compare_scaled(label, got, want, scale, no, IIR_ATOL, IIR_RTOL);
    snprintf(label, sizeof label, "iir %s: final state", what);
    t_compare(label, got_s, want_s, nm, 1e-5f, 2e-5f);
    t_tensor_free(dev, tz), t_tensor_free(dev, tp), t_tensor_free(dev, tr), t_tensor_free(dev, td);
    t_tensor_free(dev, ts), t_tensor_free(dev, to);
    free(z), free(d), free(r), free(s0), free(mod), free(ang), free(p), free(state), free(want), free(scale);
    free(want_s), free(got_s);
    return got;
}

static void same(const char *what, float *one, float *other, size_t n)
{
    t_compare(what, other, one, n, 0, 0);
    free(one);
    free(other);
}

/* rows x cols with values of RMS `rms`, against x / (sqrt(mean(x^2)) + eps) * w in double;
 * also reports how far the other form, x / sqrt(mean(x^2) + eps), would be. */
static void check_norm(vkr_device *dev, uint32_t rows, uint32_t cols, float rms, float eps)
{
    size_t n = (size_t)rows * cols;
    float *x = random_floats(n, 51 + cols, rms * 1.7320508f, 0.0f), *w = random_floats(cols, 52, 0.2f, 1.0f);
    float *want = malloc(n * 4), *got = malloc(n * 4);
    double other = 0;
    for (uint32_t r = 0; r < rows; r++) {
        double ss = 0;
        for (uint32_t c = 0; c < cols; c++)
            ss += (double)x[(size_t)r * cols + c] * x[(size_t)r * cols + c];
        double k = 1.0 / (sqrt(ss / cols) + eps), k_other = 1.0 / sqrt(ss / cols + eps);
        for (uint32_t c = 0; c < cols; c++) {
            size_t i = (size_t)r * cols + c;
            want[i] = (float)(x[i] * k * w[c]);
            double e = fabs(x[i] * (k - k_other) * w[c]);
            other = e > other ? e : other;
        }
    }
    op_tensor tx = t_tensor_from(dev, x, n * 4), tw = t_tensor_from(dev, w, cols * 4), to = t_tensor(dev, n * 4);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_rmsnorm_eps_outside(cmd, dev, tx, tw, to, cols, rows, eps);
    t_check(!s, "record rmsnorm_eps_outside: %s", s ? vk_error_message() : "ok");
    t_run(cmd);
    t_read(dev, to, got, n * 4);
    char label[160];
    snprintf(label, sizeof label, "rmsnorm %u x %u, rms %g, eps %g (eps under the root would be off by %.2g)",
             rows, cols, rms, eps, other);
    t_compare(label, got, want, n, NORM_ATOL, NORM_RTOL);
    t_tensor_free(dev, tx), t_tensor_free(dev, tw), t_tensor_free(dev, to);
    free(x), free(w), free(want), free(got);
}

static void check_errors(vkr_device *dev)
{
    op_tensor t = t_tensor(dev, 4096);
    vkr_cmd *cmd = t_begin(dev);
    t_check(op_hyena_iir(cmd, dev, t, t, t, t, t, t, 1, 4, 33) == VKLLM_ERR_UNSUPPORTED, "33 modes refused: %s",
            vk_error_message());
    t_check(op_hyena_iir(cmd, dev, t, t, t, t, t, t, 1, 4, 0) == VKLLM_ERR_UNSUPPORTED, "0 modes refused: %s",
            vk_error_message());
    t_check(op_hyena_iir(cmd, dev, t, t, t, t, t, t, 100, 16, 2) == VKLLM_ERR_INVALID_ARGUMENT,
            "hyena_iir on too small tensors refused: %s", vk_error_message());
    t_check(op_rmsnorm_eps_outside(cmd, dev, t, t, t, 4096, 1, 1e-5f) == VKLLM_ERR_INVALID_ARGUMENT,
            "rmsnorm_eps_outside on too small tensors refused: %s", vk_error_message());
    t_run(cmd);
    t_tensor_free(dev, t);
}

int main(void)
{
    vkr_device *dev = t_device();
    static const uint32_t whole[] = {1u << 30, 0}, steps[] = {1, 0}, mixed[] = {5, 1, 7, 1, 1, 25, 0};
    /* Awkward sizes, whole batch. */
    free(iir_run(dev, 1, 1, 1, whole, "tiny"));
    free(iir_run(dev, 17, 67, 3, whole, "batch"));
    free(iir_run(dev, 9, 130, 32, whole, "32 modes"));
    /* State across calls, and batch vs token-by-token vs uneven calls: identical. */
    float *b1 = iir_run(dev, 40, 67, 2, whole, "whole"), *b2 = iir_run(dev, 40, 67, 2, steps, "steps");
    float *b3 = iir_run(dev, 40, 67, 2, mixed, "mixed");
    same("iir: token by token == whole batch", b1, b2, 40 * 67);
    float *b4 = iir_run(dev, 40, 67, 2, whole, "whole");
    same("iir: calls of 5,1,7,1,1,25 == whole batch", b4, b3, 40 * 67);
    /* Past the loop cap in one call: 2,100 tokens x 33 iterations = 69,300 per channel, and
     * 70,000 tokens, which exceed it even when the compiler unrolls the loop over the modes
     * (lavapipe does: the first passes unsplit). The op splits them. */
    free(iir_run(dev, 2100, 5, 32, whole, "long, 32 modes"));
    free(iir_run(dev, 70000, 3, 1, whole, "long"));
    /* StripedHyena-7B: width 4096, 2 modes, a 256-token batch. */
    free(iir_run(dev, 256, 4096, 2, whole, "7B width"));

    check_norm(dev, 1, 1, 1.0f, 1e-5f);
    check_norm(dev, 7, 192, 0.14f, 1e-3f);  /* the conformance model's first norm */
    check_norm(dev, 5, 1000, 0.01f, 1e-2f); /* eps as large as the RMS */
    check_norm(dev, 3, 4096, 2.0f, 1e-5f);  /* StripedHyena-7B's width and eps */
    check_norm(dev, 300, 33, 1.0f, 1e-6f);  /* many short rows */
    check_errors(dev);
    return t_finish(dev);
}
