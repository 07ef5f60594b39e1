/* op_moe_router and op_moe_matmul against C references.
 *
 * Router: ids must equal a reference that sorts each token's logits (descending, equal logits
 * by lower index) exactly, weights within 1e-6 of a double-precision softmax (renormalised over
 * the chosen experts, or not, times a scale). Logit rows include ties: all equal, the best two
 * equal, and a tie straddling the k-th place. Expert counts 4 and 8 with k = 1 and 2, and 60
 * with k = 8 (the router's loops then run 600 times per token).
 *
 * Expert products: stacked weights of every type, quantized with vk_quantize_row; the
 * reference multiplies the vk_dequantize_row'd weights in double, so the only difference is
 * the GPU's f32 summation order; errors are relative to sum |w x| per output (times |weight|
 * for the weighted sum), as in test_ops_matmul.c. Each case runs the four forms the graph
 * uses or could use: slots with one x per token (gate, up), slots with one x per slot, the
 * weighted sum (down), and the weighted sum accumulated into y. Routes are random distinct
 * experts per token, some experts never chosen. Under the small-range profile (64 KiB
 * bindings) the stacked weights span several chunks whose boundaries fall inside experts.
 * Every case runs per token both ways the device reads weights (lavapipe: texel views, in the
 * LANES shape, and storage buffers). Batches of 8 tokens or more run again grouped by expert
 * (the prompt path, given its scratch), also both ways: lists of one partial tile, of several
 * tiles (40 tokens, 3 in 4 of them routed to expert 0 first), empty lists, and a scratch too
 * small for the whole batch, so that it is grouped in several rounds.
 *
 * Gate, up and SwiGLU in one dispatch (op_moe_matmul_glu) against silu(gate x) * (up x).
 *
 * Finally a whole MoE feed-forward block (router on the GPU feeding the expert products,
 * SwiGLU, weighted down projection added to a residual) is recorded once and replayed with a
 * second input that routes differently: the replay must follow the new routing, i.e. the
 * experts are chosen on the GPU, not when recording. */
#include "vk_test.h"

#include "quant.h"

static const uint32_t all_types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0,
                                     GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1};

static double tolerance(uint32_t type)
{
    return type == GGML_F32 ? 1e-5 : 1e-4;
}

/* ---- router ------------------------------------------------------------------------ */

/* Reference routing of one token: ids by (logit descending, index ascending). */
static void ref_route(const float *l, uint32_t n_expert, uint32_t k, bool normalize, float scale,
                      uint32_t *ids, float *weights)
{
    bool taken[256] = {false};
    double m = -INFINITY, total = 0, chosen = 0;
    for (uint32_t i = 0; i < n_expert; i++)
        m = l[i] > m ? l[i] : m;
    for (uint32_t i = 0; i < n_expert; i++)
        total += exp((double)l[i] - m);
    double e[16];
    for (uint32_t s = 0; s < k; s++) {
        int best = -1;
        for (uint32_t i = 0; i < n_expert; i++)
            if (!taken[i] && (best < 0 || l[i] > l[best]))
                best = (int)i;
        taken[best] = true;
        ids[s] = (uint32_t)best;
        e[s] = exp((double)l[best] - m);
        chosen += e[s];
    }
    for (uint32_t s = 0; s < k; s++)
        weights[s] = (float)(e[s] / (normalize ? chosen : total) * scale);
}

static void check_router(vkr_device *dev, uint32_t n_tokens, uint32_t n_expert, uint32_t k,
                         bool normalize, float scale)
{
    size_t nl = (size_t)n_tokens * n_expert;
    float *logits = malloc(nl * sizeof *logits);
    t_fill_random(logits, nl, n_expert * 101 + k);
    for (size_t i = 0; i < nl; i++)
        logits[i] *= 4.0f;
    /* Ties: token 0 all equal, token 1 its best two equal, token 2 a tie at places k, k+1
     * (the lower index must win), token 3 all equal but one lower. */
    for (uint32_t i = 0; i < n_expert; i++)
        logits[i] = 0.5f;
    if (n_tokens > 3) {
        float *l1 = logits + n_expert, *l2 = logits + 2 * n_expert, *l3 = logits + 3 * n_expert;
        l1[n_expert - 1] = l1[1] = 9.0f;
        for (uint32_t i = 0; i < n_expert; i++)
            l2[i] = -(float)i; /* distinct, descending by index */
        if (k < n_expert) {
            l2[n_expert - 1] = l2[k - 1]; /* equal to the k-th best, at a higher index */
        }
        for (uint32_t i = 0; i < n_expert; i++)
            l3[i] = -1.0f;
        l3[0] = -2.0f;
    }
    op_tensor tl = t_tensor_from(dev, logits, nl * sizeof *logits);
    op_tensor tr = t_tensor(dev, (size_t)n_tokens * 2 * k * 4);
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_moe_router(cmd, dev, tl, tr, n_tokens, n_expert, k, normalize, scale);
    uint32_t dispatches = vkr_cmd_dispatch_count(cmd);
    if (s) {
        t_check(0, "router record: %s", vk_error_message());
        vkr_cmd_destroy(cmd);
    } else {
        t_run(cmd);
    }
    uint32_t *got = malloc((size_t)n_tokens * 2 * k * 4);
    t_read(dev, tr, got, (size_t)n_tokens * 2 * k * 4);
    size_t bad_ids = 0;
    double max_err = 0;
    for (uint32_t t = 0; t < n_tokens; t++) {
        uint32_t ids[16];
        float w[16];
        ref_route(logits + (size_t)t * n_expert, n_expert, k, normalize, scale, ids, w);
        for (uint32_t j = 0; j < k; j++) {
            uint32_t gid = got[(size_t)t * 2 * k + j];
            float gw;
            memcpy(&gw, &got[(size_t)t * 2 * k + k + j], 4);
            if (gid != ids[j]) {
                if (bad_ids++ < 3)
                    printf("  token %u slot %u: expert %u, want %u\n", t, j, gid, ids[j]);
            }
            double e = fabs((double)gw - w[j]);
            if (!(e <= max_err))
                max_err = e;
        }
    }
    bool ok = !bad_ids && max_err <= 1e-6 * (scale > 1 ? scale : 1);
    printf("%s router %3u tokens, %2u experts, top %u%s x%.2g: %u dispatch(es), %zu wrong ids, "
           "max weight err %.2g (tol 1e-6)\n",
           ok ? "ok  " : "FAIL", n_tokens, n_expert, k, normalize ? " renormalised" : "", scale,
           dispatches, bad_ids, max_err);
    if (!ok)
        t_failures++;
    t_tensor_free(dev, tl);
    t_tensor_free(dev, tr);
    free(logits);
    free(got);
}

/* ---- expert products ---------------------------------------------------------------- */

typedef struct test_experts {
    uint32_t type, n_expert, rows, cols; /* rows per expert */
    vkr_buffer buffer;
    op_weight w;
    float *deq; /* n_expert * rows * cols */
} test_experts;

static void make_experts(vkr_device *dev, uint32_t type, uint32_t n_expert, uint32_t rows, uint32_t cols,
                         uint64_t offset, uint32_t seed, test_experts *te)
{
    memset(te, 0, sizeof *te);
    te->type = type, te->n_expert = n_expert, te->rows = rows, te->cols = cols;
    uint32_t total_rows = n_expert * rows;
    uint64_t row_bytes = ggml_row_bytes(type, cols);
    size_t n = (size_t)total_rows * cols;
    float *src = malloc(n * sizeof *src);
    uint8_t *bytes = malloc(total_rows * row_bytes);
    te->deq = malloc(n * sizeof *te->deq);
    if (!src || !bytes || !te->deq) {
        printf("FAIL: out of memory\n");
        exit(1);
    }
    t_fill_random(src, n, seed);
    for (uint32_t r = 0; r < total_rows; r++)
        if (vk_quantize_row(type, src + (size_t)r * cols, bytes + r * row_bytes, cols) != row_bytes ||
            vk_dequantize_row(type, bytes + r * row_bytes, te->deq + (size_t)r * cols, cols) != 0) {
            printf("FAIL: reference quantization of type %u\n", type);
            exit(1);
        }
    if (vkr_buffer_create(dev, offset + total_rows * row_bytes, VKR_MEMORY_DEVICE, &te->buffer) ||
        vkr_buffer_write(dev, &te->buffer, offset, bytes, total_rows * row_bytes) ||
        op_weight_init(dev, type, total_rows, cols, &te->buffer, offset, &te->w)) {
        printf("FAIL: expert weights: %s\n", vk_error_message());
        exit(1);
    }
    free(src);
    free(bytes);
}

static void free_experts(vkr_device *dev, test_experts *te)
{
    vkr_buffer_destroy(dev, &te->buffer);
    free(te->deq);
}

/* Whether some chunk boundary falls inside an expert's rows. */
static bool splits_experts(const test_experts *te)
{
    for (uint32_t c = 1; c < te->w.n_chunks; c++)
        if (te->w.chunks[c].row_begin % te->rows)
            return true;
    return false;
}

/* Random routes: distinct experts per token, drawn from the first n_expert - 1 experts
 * (the last is never chosen), weights in (0, 1]. */
static void random_route(uint32_t n_tokens, uint32_t n_expert, uint32_t k, uint32_t seed, uint32_t *route)
{
    uint32_t state = seed;
    uint32_t pool = n_expert > k ? n_expert - 1 : n_expert;
    for (uint32_t t = 0; t < n_tokens; t++) {
        uint32_t *ids = route + (size_t)t * 2 * k;
        for (uint32_t j = 0; j < k; j++) {
            uint32_t e;
            bool dup;
            do {
                state = state * 1664525u + 1013904223u;
                e = (state >> 8) % pool;
                dup = false;
                for (uint32_t i = 0; i < j; i++)
                    dup = dup || ids[i] == e;
            } while (dup);
            ids[j] = e;
            state = state * 1664525u + 1013904223u;
            float w = (float)((state >> 8) % 1000 + 1) / 1000.0f;
            memcpy(&ids[k + j], &w, 4);
        }
    }
}

/* Skews a route so that 3 of every 4 tokens pick expert 0 first: one list of many tiles beside
 * short ones (grouped products). */
static void skew_route(uint32_t n_tokens, uint32_t k, uint32_t *route)
{
    for (uint32_t t = 0; t < n_tokens; t++) {
        uint32_t *ids = route + (size_t)t * 2 * k;
        if (t % 4 == 3)
            continue;
        uint32_t j = 0;
        while (j < k && ids[j] != 0)
            j++;
        if (j == k) { /* expert 0 not picked: it replaces the first pick */
            ids[0] = 0;
        } else {
            uint32_t id = ids[0], w = ids[k];
            ids[0] = ids[j], ids[k] = ids[k + j];
            ids[j] = id, ids[k + j] = w;
        }
    }
}

typedef enum { FORM_SLOTS_SHARED, FORM_SLOTS_PER_SLOT, FORM_SUM, FORM_SUM_ACC } moe_form;
static const char *form_names[] = {"slots, shared x", "slots, x per slot", "weighted sum", "weighted sum +="};
static double worst_err[GGML_TYPE_COUNT];
static bool gpu_av; /* VKLLM_GPU_AV: the validation layer's GPU-assisted checks */

/* op_moe_matmul; given the scratch, grouped whenever the batch allows (VKLLM_MOE_GROUPED=on:
 * by default lavapipe groups only batches of a tile per expert). Under gpu-av, grouped products
 * take the GPU's 4 x 4 register tiles (the same code with smaller specialization constants):
 * lavapipe compiles the instrumented 16 x 8 tiles for minutes. */
static vkllm_status moe_matmul(vkr_cmd *cmd, vkr_device *dev, const op_weight *w, op_tensor x, op_tensor route,
                               op_tensor y, const op_moe_desc *d)
{
    bool grouped = d->groups.buffer != NULL, small_tiles = gpu_av && grouped;
    if (grouped)
        setenv("VKLLM_MOE_GROUPED", "on", 1);
    if (small_tiles)
        setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
    vkllm_status s = op_moe_matmul(cmd, dev, w, x, route, y, d);
    unsetenv("VKLLM_MOE_GROUPED");
    if (small_tiles)
        unsetenv("VKLLM_MATMUL_SHAPES");
    return s;
}

/* Ways to run a batch: per token (no scratch) or grouped by expert, each also reading the
 * weights through storage buffers where the device would take texel views (the weight's
 * texel_chunks dropped, as in test_ops_matmul.c), or grouped with scratch for only 8 tokens at
 * a time. */
typedef enum {
    RUN_PER_TOKEN,
    RUN_PER_TOKEN_STORAGE,
    RUN_GROUPED,
    RUN_GROUPED_STORAGE,
    RUN_GROUPED_IN_ROUNDS
} moe_run;
static const char *run_names[] = {"", ", storage", ", grouped", ", grouped, storage", ", grouped by 8"};

static void check_experts_run(vkr_device *dev, test_experts *te, uint32_t n_tokens, uint32_t k, moe_form form,
                              moe_run run)
{
    const uint32_t R = te->rows, C = te->cols, E = te->n_expert;
    bool per_slot = form == FORM_SLOTS_PER_SLOT || form == FORM_SUM || form == FORM_SUM_ACC;
    bool sum = form == FORM_SUM || form == FORM_SUM_ACC, acc = form == FORM_SUM_ACC;
    size_t nx = (size_t)n_tokens * C * (per_slot ? k : 1);
    size_t ny = (size_t)n_tokens * R * (sum ? 1 : k);
    float *x = malloc(nx * 4), *y0 = malloc(ny * 4), *got = malloc(ny * 4);
    uint32_t *route = malloc((size_t)n_tokens * 2 * k * 4);
    t_fill_random(x, nx, n_tokens * 7 + C + form);
    t_fill_random(y0, ny, R + 3);
    if (!acc)
        for (size_t i = 0; i < ny; i++)
            y0[i] = 1e30f; /* must be overwritten */
    random_route(n_tokens, E, k, n_tokens * 13 + E + k + form, route);
    if (n_tokens >= 40)
        skew_route(n_tokens, k, route);

    op_tensor tx = t_tensor_from(dev, x, nx * 4), ty = t_tensor_from(dev, y0, ny * 4);
    op_tensor troute = t_tensor_from(dev, route, (size_t)n_tokens * 2 * k * 4);
    bool grouped = run >= RUN_GROUPED;
    uint64_t group_bytes = op_moe_groups_bytes(dev, E, k, run == RUN_GROUPED_IN_ROUNDS ? 8 : n_tokens);
    op_moe_desc d = {n_tokens, E, k, per_slot, sum, acc, grouped ? t_tensor(dev, group_bytes) : (op_tensor){0}};
    vkr_cmd *cmd = t_begin(dev);
    op_weight w = te->w;
    if (run == RUN_GROUPED_STORAGE || run == RUN_PER_TOKEN_STORAGE)
        w.n_texel_chunks = 0;
    vkllm_status s = moe_matmul(cmd, dev, &w, tx, troute, ty, &d);
    uint32_t dispatches = vkr_cmd_dispatch_count(cmd);
    if (grouped) {
        /* Grouped: per round, moe_group, moe_tiles and a dispatch per chunk of the way the
         * weight is read (per slot and chunk for the weighted sum). Rounds: at least those the
         * scratch needs (more where the activations exceed a binding, under small-range). */
        uint32_t min_rounds = run == RUN_GROUPED_IN_ROUNDS ? (n_tokens + 7) / 8 : 1;
        uint32_t per_round = 2 + (sum ? k : 1) * (w.n_texel_chunks ? w.n_texel_chunks : w.n_chunks);
        t_check(dispatches % per_round == 0 && dispatches / per_round >= min_rounds,
                "grouped: %u dispatches, %u rounds of %u (at least %u rounds)", dispatches,
                dispatches / per_round, per_round, min_rounds);
    }
    if (s) {
        t_check(0, "moe_matmul record: %s", vk_error_message());
        vkr_cmd_destroy(cmd);
    } else if (vkr_cmd_end(cmd) || vkr_cmd_submit_wait(cmd)) {
        printf("FAIL: submit: %s\n", vk_error_message());
        exit(1);
    } else {
        /* The products (grouped: dispatch 2, after moe_group and moe_tiles) read texel views
         * exactly when the weight has them and a token's x fits one view of x. */
        uint64_t x_row = (uint64_t)C * (per_slot ? k : 1) * 4;
        bool want_texel = w.n_texel_chunks && tx.buffer->n_texel_views && x_row <= tx.buffer->texel_stride;
        const char *label = "";
        double ms;
        if (vkr_cmd_dispatch_time(cmd, grouped ? 2 : 0, &label, &ms))
            t_check(t_right_shader(want_texel, label), "products ran %s", label);
        vkr_cmd_destroy(cmd);
    }
    t_read(dev, ty, got, ny * 4);

    double max_err = 0;
    size_t bad = 0;
    for (uint32_t t = 0; t < n_tokens; t++) {
        const uint32_t *ids = route + (size_t)t * 2 * k;
        for (uint32_t r = 0; r < R; r++) {
            double total = 0, total_scale = 0;
            for (uint32_t j = 0; j < k; j++) {
                const float *wr = te->deq + ((size_t)ids[j] * R + r) * C;
                const float *xt = x + ((size_t)t * (per_slot ? k : 1) + (per_slot ? j : 0)) * C;
                double dot = 0, scale = 0;
                for (uint32_t c = 0; c < C; c++) {
                    dot += (double)wr[c] * xt[c];
                    scale += fabs((double)wr[c] * xt[c]);
                }
                if (sum) {
                    float wk;
                    memcpy(&wk, &ids[k + j], 4);
                    total += wk * dot;
                    total_scale += wk * scale;
                } else {
                    size_t i = ((size_t)t * k + j) * R + r;
                    double err = fabs(got[i] - dot) / (scale > 0 ? scale : 1e-30);
                    if (!(err <= tolerance(te->type)))
                        bad++;
                    if (!(err <= max_err))
                        max_err = err;
                }
            }
            if (sum) {
                size_t i = (size_t)t * R + r;
                if (acc) {
                    total += y0[i];
                    total_scale += fabs(y0[i]);
                }
                double err = fabs(got[i] - total) / (total_scale > 0 ? total_scale : 1e-30);
                if (!(err <= tolerance(te->type)))
                    bad++;
                if (!(err <= max_err))
                    max_err = err;
            }
        }
    }
    if (max_err > worst_err[te->type])
        worst_err[te->type] = max_err;
    printf("%s moe %-4s %u experts of %3ux%-5u top %u, tokens %2u, %-17s%s: %u chunk(s)%s, %u dispatch(es), "
           "max err %.2g (tol %.0e)%s\n",
           bad ? "FAIL" : "ok  ", ggml_traits(te->type).name, E, R, C, k, n_tokens, form_names[form],
           run_names[run], te->w.n_chunks, splits_experts(te) ? " splitting experts" : "", dispatches, max_err,
           tolerance(te->type), bad ? " BAD" : "");
    if (bad)
        t_failures++;
    if (d.groups.buffer)
        t_tensor_free(dev, d.groups);
    t_tensor_free(dev, tx);
    t_tensor_free(dev, ty);
    t_tensor_free(dev, troute);
    free(x), free(y0), free(got), free(route);
}

/* A batch per token, and grouped by expert where it has enough tokens. */
static void check_experts(vkr_device *dev, test_experts *te, uint32_t n_tokens, uint32_t k, moe_form form)
{
    check_experts_run(dev, te, n_tokens, k, form, RUN_PER_TOKEN);
    if (te->w.n_texel_chunks)
        check_experts_run(dev, te, n_tokens, k, form, RUN_PER_TOKEN_STORAGE);
    if (op_moe_groups_bytes(dev, te->n_expert, k, n_tokens)) {
        check_experts_run(dev, te, n_tokens, k, form, RUN_GROUPED);
        if (te->w.n_texel_chunks)
            check_experts_run(dev, te, n_tokens, k, form, RUN_GROUPED_STORAGE);
    }
}

/* ---- a whole MoE feed-forward block, replayed with a different routing ----------------- */

static void ref_ffn(const test_experts *gate_w, const test_experts *up_w, const test_experts *down_w,
                    const float *router_w, const float *x, const float *res, uint32_t n_tokens,
                    uint32_t n_expert, uint32_t k, float *out, uint32_t *chosen)
{
    const uint32_t E = down_w->rows, F = gate_w->rows;
    float *l = malloc(n_expert * 4);
    double *h = malloc(F * sizeof *h);
    for (uint32_t t = 0; t < n_tokens; t++) {
        const float *xt = x + (size_t)t * E;
        for (uint32_t e = 0; e < n_expert; e++) {
            double s = 0;
            for (uint32_t c = 0; c < E; c++)
                s += (double)router_w[(size_t)e * E + c] * xt[c];
            l[e] = (float)s;
        }
        uint32_t ids[16];
        float w[16];
        ref_route(l, n_expert, k, true, 1.0f, ids, w);
        for (uint32_t j = 0; j < k; j++)
            chosen[t * k + j] = ids[j];
        for (uint32_t r = 0; r < E; r++)
            out[(size_t)t * E + r] = res[(size_t)t * E + r];
        for (uint32_t j = 0; j < k; j++) {
            for (uint32_t f = 0; f < F; f++) {
                double g = 0, u = 0;
                const float *gr = gate_w->deq + ((size_t)ids[j] * F + f) * E;
                const float *ur = up_w->deq + ((size_t)ids[j] * F + f) * E;
                for (uint32_t c = 0; c < E; c++) {
                    g += (double)gr[c] * xt[c];
                    u += (double)ur[c] * xt[c];
                }
                h[f] = g / (1 + exp(-g)) * u;
            }
            for (uint32_t r = 0; r < E; r++) {
                const float *dr = down_w->deq + ((size_t)ids[j] * E + r) * F;
                double s = 0;
                for (uint32_t f = 0; f < F; f++)
                    s += (double)dr[f] * h[f];
                out[(size_t)t * E + r] += (float)(w[j] * s);
            }
        }
    }
    free(l);
    free(h);
}

/* op_moe_matmul_glu: gate and up stacks end to end (2 n_expert experts of R rows: gate e is
 * expert e, up e expert n_expert + e) against silu(gate_e x) * (up_e x) in double; where
 * op_moe_glu_fusable says no, that the stacks are not in one texel chunk (GPUs: no texel
 * views; small-range: 64 KiB views). */
static void check_glu(vkr_device *dev, uint32_t type, uint32_t n_tokens, uint32_t k)
{
    const uint32_t E = 4, R = 40, C = 96;
    test_experts te;
    make_experts(dev, type, 2 * E, R, C, 0, 60 + type, &te);
    size_t nx = (size_t)n_tokens * C, ny = (size_t)n_tokens * k * R;
    float *x = malloc(nx * 4), *want = malloc(ny * 4), *scale = malloc(ny * 4), *got = malloc(ny * 4);
    uint32_t *route = malloc((size_t)n_tokens * 2 * k * 4);
    t_fill_random(x, nx, 70 + n_tokens);
    random_route(n_tokens, E, k, 80 + n_tokens, route);
    op_tensor tx = t_tensor_from(dev, x, nx * 4), ty = t_tensor(dev, ny * 4);
    op_tensor troute = t_tensor_from(dev, route, (size_t)n_tokens * 2 * k * 4);
    op_moe_desc d = {n_tokens, E, k, false, false, false, {0}};
    if (!op_moe_glu_fusable(dev, &te.w, tx, &d)) {
        t_check(te.w.n_texel_chunks != 1, "moe glu %s: not fusable, the stacks in %u texel chunks (one needed)",
                ggml_traits(type).name, te.w.n_texel_chunks);
    } else {
        vkr_cmd *cmd = t_begin(dev);
        vkllm_status s = op_moe_matmul_glu(cmd, dev, &te.w, tx, troute, ty, &d);
        t_check(s == VKLLM_OK && vkr_cmd_dispatch_count(cmd) == 1, "moe glu %s: one dispatch (%s)",
                ggml_traits(type).name, s ? vk_error_message() : "ok");
        t_run(cmd);
        t_read(dev, ty, got, ny * 4);
        for (uint32_t t = 0; t < n_tokens; t++)
            for (uint32_t j = 0; j < k; j++)
                for (uint32_t r = 0; r < R; r++) {
                    uint32_t e = route[(size_t)t * 2 * k + j];
                    const float *gw = te.deq + ((size_t)e * R + r) * C, *uw = te.deq + ((size_t)(E + e) * R + r) * C;
                    double g = 0, u = 0, gs = 0, us = 0;
                    for (uint32_t c = 0; c < C; c++) {
                        g += (double)gw[c] * x[(size_t)t * C + c];
                        u += (double)uw[c] * x[(size_t)t * C + c];
                        gs += fabs((double)gw[c] * x[(size_t)t * C + c]);
                        us += fabs((double)uw[c] * x[(size_t)t * C + c]);
                    }
                    double silu = g / (1 + exp(-g));
                    size_t i = ((size_t)t * k + j) * R + r;
                    want[i] = (float)(silu * u);
                    scale[i] = (float)(gs * fabs(u) + fabs(silu) * us); /* first-order rounding bound */
                }
        char what[80];
        snprintf(what, sizeof what, "moe glu %s, %u token(s), top %u", ggml_traits(type).name, n_tokens, k);
        t_compare_scaled(what, got, want, scale, ny, 1e-6, tolerance(type));
    }
    t_tensor_free(dev, tx), t_tensor_free(dev, ty), t_tensor_free(dev, troute);
    free(x), free(want), free(scale), free(got), free(route);
    free_experts(dev, &te);
}

static void check_ffn(vkr_device *dev, uint32_t type, uint32_t n_tokens, bool grouped)
{
    const uint32_t E = 64, F = 96, N = 8, K = 2;
    test_experts gate_w, up_w, down_w;
    make_experts(dev, type, N, F, E, 0, 11, &gate_w);
    make_experts(dev, type, N, F, E, 10, 12, &up_w);
    make_experts(dev, type, N, E, F, 2, 13, &down_w);
    /* The router in f32, as GGUF files keep it. */
    float *router_w = malloc((size_t)N * E * 4);
    t_fill_random(router_w, (size_t)N * E, 14);
    vkr_buffer router_buf;
    op_weight router;
    if (vkr_buffer_create(dev, (size_t)N * E * 4, VKR_MEMORY_DEVICE, &router_buf) ||
        vkr_buffer_write(dev, &router_buf, 0, router_w, (size_t)N * E * 4) ||
        op_weight_init(dev, GGML_F32, N, E, &router_buf, 0, &router)) {
        printf("FAIL: router weight: %s\n", vk_error_message());
        exit(1);
    }
    size_t nx = (size_t)n_tokens * E;
    op_tensor tx = t_tensor(dev, nx * 4), tres = t_tensor(dev, nx * 4);
    op_tensor tl = t_tensor(dev, (size_t)n_tokens * N * 4), troute = t_tensor(dev, (size_t)n_tokens * 2 * K * 4);
    op_tensor tg = t_tensor(dev, (size_t)n_tokens * K * F * 4), tu = t_tensor(dev, (size_t)n_tokens * K * F * 4);
    op_tensor th = t_tensor(dev, (size_t)n_tokens * K * F * 4);

    vkr_cmd *cmd;
    if (vkr_cmd_create(dev, 256, false, &cmd) || vkr_cmd_begin(cmd)) {
        printf("FAIL: cmd: %s\n", vk_error_message());
        exit(1);
    }
    op_tensor groups = grouped ? t_tensor(dev, op_moe_groups_bytes(dev, N, K, n_tokens)) : (op_tensor){0};
    op_moe_desc gate_d = {n_tokens, N, K, false, false, false, groups};
    op_moe_desc down_d = {n_tokens, N, K, true, true, true, groups};
    vkllm_status s = op_matmul(cmd, dev, &router, tx, tl, n_tokens, false);
    if (!s)
        s = op_moe_router(cmd, dev, tl, troute, n_tokens, N, K, true, 1.0f);
    if (!s)
        s = moe_matmul(cmd, dev, &gate_w.w, tx, troute, tg, &gate_d);
    if (!s)
        s = moe_matmul(cmd, dev, &up_w.w, tx, troute, tu, &gate_d);
    if (!s)
        s = op_swiglu(cmd, dev, tg, tu, th, n_tokens * K * F);
    if (!s)
        s = moe_matmul(cmd, dev, &down_w.w, th, troute, tres, &down_d);
    if (!s)
        s = vkr_cmd_end(cmd);
    if (s) {
        printf("FAIL: ffn record: %s\n", vk_error_message());
        exit(1);
    }
    float *x = malloc(nx * 4), *res = malloc(nx * 4), *want = malloc(nx * 4), *got = malloc(nx * 4);
    uint32_t *chosen[2];
    for (int rep = 0; rep < 2; rep++) {
        chosen[rep] = malloc((size_t)n_tokens * K * 4);
        t_fill_random(x, nx, 100 + rep);
        t_fill_random(res, nx, 200 + rep);
        memcpy(tx.buffer->mapped, x, nx * 4);
        memcpy(tres.buffer->mapped, res, nx * 4);
        ref_ffn(&gate_w, &up_w, &down_w, router_w, x, res, n_tokens, N, K, want, chosen[rep]);
        if (vkr_cmd_submit_wait(cmd)) {
            printf("FAIL: submit: %s\n", vk_error_message());
            exit(1);
        }
        t_read(dev, tres, got, nx * 4);
        uint32_t *route = malloc((size_t)n_tokens * 2 * K * 4);
        t_read(dev, troute, route, (size_t)n_tokens * 2 * K * 4);
        size_t wrong = 0;
        for (uint32_t t = 0; t < n_tokens; t++)
            for (uint32_t j = 0; j < K; j++)
                wrong += route[(size_t)t * 2 * K + j] != chosen[rep][t * K + j];
        free(route);
        t_check(wrong == 0, "ffn %s %u tokens, %s: the GPU routed %zu of %u slots like the reference",
                ggml_traits(type).name, n_tokens, rep ? "replay" : "first run",
                (size_t)n_tokens * K - wrong, n_tokens * K);
        char what[96];
        snprintf(what, sizeof what, "ffn %s %u tokens%s, %s", ggml_traits(type).name, n_tokens,
                 grouped ? " grouped by expert" : "", rep ? "replay with new input" : "first run");
        /* Outputs are O(1): the residual plus two weighted rows of 96-term sums. */
        t_compare(what, got, want, nx, type == GGML_F32 ? 5e-5f : 1e-4f, 1e-4f);
    }
    size_t changed = 0;
    for (size_t i = 0; i < (size_t)n_tokens * K; i++)
        changed += chosen[0][i] != chosen[1][i];
    t_check(changed > 0, "the replay's input routes %zu of %u slots to other experts", changed, n_tokens * K);
    free(chosen[0]), free(chosen[1]);
    vkr_cmd_destroy(cmd);
    t_tensor_free(dev, tx), t_tensor_free(dev, tres), t_tensor_free(dev, tl);
    t_tensor_free(dev, troute), t_tensor_free(dev, tg), t_tensor_free(dev, tu), t_tensor_free(dev, th);
    if (grouped)
        t_tensor_free(dev, groups);
    vkr_buffer_destroy(dev, &router_buf);
    free_experts(dev, &gate_w), free_experts(dev, &up_w), free_experts(dev, &down_w);
    free(router_w), free(x), free(res), free(want), free(got);
}

/* Speed of the expert product against a dense product doing the same multiply-adds: 8 q4_0
 * experts of 1024 x 4096, top 2 (2048 x 4096 weights per token), and op_matmul of 2048 x 4096,
 * for 1 token (decode) and 64 (a prompt; random routes; per token and grouped by expert). Best of 4 replays, GPU timestamps;
 * printed, not asserted. */
static void time_experts(vkr_device *dev)
{
    const uint32_t N = 8, R = 1024, C = 4096, K = 2, T = 64;
    test_experts te;
    make_experts(dev, GGML_Q4_0, N, R, C, 0, 5, &te);
    op_weight dense;
    if (op_weight_init(dev, GGML_Q4_0, K * R, C, &te.buffer, 0, &dense)) {
        t_check(0, "timing weight: %s", vk_error_message());
        free_experts(dev, &te);
        return;
    }
    uint32_t *route = malloc((size_t)T * 2 * K * 4);
    random_route(T, N, K, 9, route);
    op_tensor tx = t_tensor(dev, (size_t)T * C * 4), ty = t_tensor(dev, (size_t)T * K * R * 4);
    op_tensor tr = t_tensor_from(dev, route, (size_t)T * 2 * K * 4);
    op_tensor groups = t_tensor(dev, op_moe_groups_bytes(dev, N, K, T));
    for (int k = 0; k < 5; k++) { /* decode: moe, dense; prompt: moe per token, dense, grouped */
        uint32_t nt = k < 2 ? 1 : T;
        bool moe = k % 2 == 0, grouped = k == 4;
        vkr_cmd *cmd = t_begin(dev);
        op_moe_desc d = {nt, N, K, false, false, false, grouped ? groups : (op_tensor){0}};
        vkllm_status s = moe ? op_moe_matmul(cmd, dev, &te.w, tx, tr, ty, &d) : op_matmul(cmd, dev, &dense, tx, ty, nt, false);
        if (s || vkr_cmd_end(cmd)) {
            t_check(0, "timing: %s", vk_error_message());
            vkr_cmd_destroy(cmd);
            continue;
        }
        double best = 1e30;
        for (int i = 0; i < 4; i++) { /* the first run compiles the shader on lavapipe */
            if (vkr_cmd_submit_wait(cmd))
                break;
            double ms = vkr_cmd_gpu_ms(cmd);
            if (ms > 0 && ms < best)
                best = ms;
        }
        if (best < 1e30)
            printf("time %-40s q4_0, %2u token(s): %8.3f ms  %5.2f G weights/s per token\n",
                   grouped ? "moe_matmul grouped, 2 of 8 of 1024x4096"
                   : moe   ? "moe_matmul, 2 of 8 experts of 1024x4096"
                           : "matmul (dense), 2048x4096",
                   nt, best,
                   (double)K * R * C * nt / (best * 1e6));
        vkr_cmd_destroy(cmd);
    }
    t_tensor_free(dev, tx), t_tensor_free(dev, ty), t_tensor_free(dev, tr), t_tensor_free(dev, groups);
    free(route);
    free_experts(dev, &te);
}

int main(void)
{
    vkr_device *dev = t_device();
    printf("max binding %llu bytes, offset alignment %llu\n",
           (unsigned long long)dev->caps.max_storage_buffer_range,
           (unsigned long long)dev->caps.storage_offset_alignment);

    /* Router: 70 tokens (two workgroups of 64); 300 tokens of 60 experts exceed a 64 KiB
     * binding of logits. */
    const uint32_t router_cases[][2] = {{4, 1}, {4, 2}, {8, 1}, {8, 2}, {60, 8}};
    for (size_t i = 0; i < sizeof router_cases / sizeof *router_cases; i++)
        check_router(dev, 70, router_cases[i][0], router_cases[i][1], true, 1.0f);
    check_router(dev, 300, 60, 4, true, 1.0f);
    check_router(dev, 70, 8, 2, false, 2.5f);

    /* Refusals. */
    {
        op_tensor a = t_tensor(dev, 4096), b = t_tensor(dev, 4096);
        vkr_cmd *cmd = t_begin(dev);
        t_check(op_moe_router(cmd, dev, a, b, 1, 4, 0, true, 1) != VKLLM_OK, "router refuses top 0");
        t_check(op_moe_router(cmd, dev, a, b, 1, 4, 5, true, 1) != VKLLM_OK, "router refuses top 5 of 4");
        t_check(op_moe_router(cmd, dev, a, b, 1, 16, 9, true, 1) != VKLLM_OK, "router refuses top 9");
        t_check(op_moe_router(cmd, dev, a, b, 1, 20000, 2, true, 1) != VKLLM_OK,
                "router refuses 20000 experts (loop limit)");
        t_check(op_moe_router(cmd, dev, a, b, 300, 8, 2, true, 1) != VKLLM_OK,
                "router refuses logits smaller than the tokens");
        t_run(cmd);
        t_tensor_free(dev, a);
        t_tensor_free(dev, b);
    }

    /* Expert products: every type, n_expert 4 and 8, top 1 and 2, decode and small batches.
     * 8 experts of 100 x 256 are 217 KB in q8_0: four 64 KiB chunks under small-range. The
     * second size stores the weight 6 bytes into its buffer (off word and binding alignment).
     * Under the validation layer's GPU-assisted checks every new pipeline takes 20-70 s to
     * compile on lavapipe (each storage access is instrumented), so that profile runs q4_0
     * only, in the two forms that between them take every indexing path (x shared or per slot,
     * y per slot or summed), chunked and at an offset, and the q4_0 block. Block decoding and
     * partial blocks are blocks.glsl's and matmul.comp's code, checked under gpu-av by
     * test_ops_matmul. */
    const char *av = getenv("VKLLM_GPU_AV");
    gpu_av = av && *av && strcmp(av, "0");
    for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++) {
        uint32_t type = all_types[ti];
        if (gpu_av && type != GGML_Q4_0)
            continue;
        test_experts te;
        make_experts(dev, type, 4, 40, 96, 0, 1 + (uint32_t)ti, &te);
        for (int form = 0; form < 4; form++) {
            if (gpu_av && form != FORM_SLOTS_SHARED && form != FORM_SUM)
                continue;
            check_experts(dev, &te, 1, 2, (moe_form)form);
            check_experts(dev, &te, 5, 2, (moe_form)form);
            /* Grouped: 42 slots over 3 experts, lists of ~14 tokens (over a CPU tile of 8).
             * Every type in the forms the graph uses (gate and up, down); the indexing of the
             * other two with f32 and q4_0. A cold compile of a grouped pipeline takes
             * seconds on lavapipe. */
            bool graph_form = form == FORM_SLOTS_SHARED || form == FORM_SUM;
            if (graph_form || type == GGML_F32 || type == GGML_Q4_0)
                check_experts(dev, &te, 21, 2, (moe_form)form);
        }
        if (!gpu_av)
            check_experts(dev, &te, 3, 1, FORM_SUM);
        free_experts(dev, &te);

        make_experts(dev, type, 8, 100, 256, 6, 20 + (uint32_t)ti, &te);
        for (int form = 0; form < 4; form++)
            if (!gpu_av || form == FORM_SLOTS_SHARED || form == FORM_SUM)
                check_experts(dev, &te, form == 0 ? 1 : 4, 2, (moe_form)form);
        if (!gpu_av) {
            check_experts(dev, &te, 2, 1, FORM_SLOTS_SHARED);
            check_experts(dev, &te, 2, 1, FORM_SUM_ACC);
            if (type == GGML_F32 || type == GGML_Q4_0) {
                /* 40 tokens, top 3 of 8 (lists of ~17 tokens); grouped 8 tokens at a time. */
                check_experts(dev, &te, 40, 3, FORM_SLOTS_PER_SLOT);
                check_experts_run(dev, &te, 21, 2, FORM_SUM_ACC, RUN_GROUPED_IN_ROUNDS);
            }
        }
        free_experts(dev, &te);
    }
    /* Long rows (Mixtral's down projection reads 14336 inputs; half that where two slots'
     * inputs must fit a 64 KiB binding) and rows of a partial block. */
    {
        uint32_t long_cols = dev->caps.max_storage_buffer_range >= (1u << 20) ? 14336 : 7168;
        test_experts te;
        if (!gpu_av) {
            make_experts(dev, GGML_F16, 4, 16, long_cols, 0, 77, &te);
            check_experts(dev, &te, 1, 2, FORM_SUM_ACC);
            free_experts(dev, &te);
        }
        make_experts(dev, GGML_Q4_0, 4, 16, long_cols, 0, 78, &te);
        check_experts(dev, &te, 2, 2, FORM_SUM);
        free_experts(dev, &te);
        if (!gpu_av) {
            make_experts(dev, GGML_F32, 4, 13, 37, 0, 79, &te);
            check_experts(dev, &te, 3, 2, FORM_SLOTS_PER_SLOT);
            check_experts(dev, &te, 3, 2, FORM_SUM);
            free_experts(dev, &te);
        }
    }

    /* Top 8 of 60 experts: the grouping table takes ~2 KB per token, so under small-range
     * (64 KiB bindings) 40 tokens are grouped in rounds that fit a binding. */
    {
        test_experts te;
        make_experts(dev, GGML_Q8_0, 60, 4, 64, 0, 95, &te);
        check_experts(dev, &te, 40, 8, FORM_SUM);
        free_experts(dev, &te);
    }

    /* The grouped tiles GPUs get (64 rows x 16 tokens per workgroup): lists longer than a
     * tile and shorter. */
    if (!gpu_av) {
        setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
        printf("-- with VKLLM_MATMUL_SHAPES=gpu\n");
        const uint32_t gpu_types[] = {GGML_F16, GGML_Q4_0};
        for (size_t ti = 0; ti < 2; ti++) {
            test_experts te;
            make_experts(dev, gpu_types[ti], 8, 100, 256, 6, 90 + (uint32_t)ti, &te);
            check_experts_run(dev, &te, 40, 3, FORM_SLOTS_SHARED, RUN_GROUPED);
            check_experts_run(dev, &te, 40, 2, FORM_SUM, RUN_GROUPED);
            free_experts(dev, &te);
        }
        unsetenv("VKLLM_MATMUL_SHAPES");
    }

    /* Gate, up and SwiGLU in one dispatch (decode fusion on lavapipe). */
    const uint32_t glu_types[] = {GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1};
    for (size_t ti = 0; ti < sizeof glu_types / sizeof *glu_types; ti++)
        if (!gpu_av || glu_types[ti] == GGML_Q4_0) {
            check_glu(dev, glu_types[ti], 1, 2);
            check_glu(dev, glu_types[ti], 3, 1);
        }

    if (gpu_av) {
        check_ffn(dev, GGML_Q4_0, 6, false);
        check_ffn(dev, GGML_Q4_0, 24, true);
    } else {
        check_ffn(dev, GGML_Q8_0, 1, false);
        check_ffn(dev, GGML_Q8_0, 6, false);
        check_ffn(dev, GGML_F32, 6, false);
        check_ffn(dev, GGML_Q8_0, 24, true);
        check_ffn(dev, GGML_F32, 24, true);
    }

    printf("worst expert-product error relative to sum|w x|, per type:\n");
    for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++)
        printf("  %-5s %.2e\n", ggml_traits(all_types[ti]).name, worst_err[all_types[ti]]);
    const char *profile = getenv("VKLLM_PROFILE"), *timing = getenv("VKLLM_TEST_TIMING");
    if ((!profile || !*profile) && !getenv("VKLLM_GPU_AV") && !(timing && !strcmp(timing, "0")))
        time_experts(dev);
    return t_finish(dev);
}
