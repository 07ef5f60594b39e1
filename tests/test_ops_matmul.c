/* op_matmul and op_get_rows for every weight type against a C reference: random weights are
 * quantized with vk_quantize_row, and the reference result is computed in double precision
 * from the vk_dequantize_row'd weights, so the shader and the reference multiply the same
 * weight values and the only difference is the GPU's f32 accumulation order.
 *
 * Errors are measured per output relative to sum_c |w x| (+ |y0| when accumulating), the
 * scale of the rounding error of any f32 summation order. Sizes include the ones that expose
 * lavapipe's 65,535 loop iterations per invocation (cols = 14336 matvec, 4096 x 512 tokens
 * matmul), rows not multiple of any tile, and weights stored at an offset that is neither
 * word- nor binding-aligned. Under the small-range profile (64 KiB bindings) weights, x and
 * y are split into chunks, including weights whose rows are 2 mod 4 bytes long. Barrier
 * counts are checked against what the chunking allows. A second pass runs a few types with the
 * GPU shapes (VKLLM_MATMUL_SHAPES=gpu: rows split over several subgroups, tokens tiled inside a
 * workgroup); under GPU-assisted validation only a reduced set runs.
 *
 * Weights are read two ways: through storage buffers, and (where caps.texel_weights, i.e. on
 * lavapipe or with VKLLM_WEIGHT_READ=texel) through texel views of the weights and x. Every
 * case runs on each way the device offers (the storage-buffer pass drops the weight's
 * texel_chunks, as op_matmul does when x has no views), and checks that the dispatch used the
 * shader of that way. Under the small-range profile the texel views shrink to 64 KiB too, so
 * that weights are split over several views.
 *
 * In the full profile the test also prints the throughput of 4096 x 4096 q4_0 and f16
 * matvec and matmul (not asserted). */
#include "vk_test.h"

#include "quant.h"

#include <time.h>

static const uint32_t all_types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0,
                                     GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1};

/* Largest error allowed, relative to sum |w x| per output, for every type: shader and
 * reference multiply the same weight values, so only the f32 summation (and, for quantized
 * types, applying the scale once per block) differs. Measured worst cases (printed at the end)
 * are 1e-7 .. 3e-7 on lavapipe; a wrong quant or index gives errors near 1. */
#define TOLERANCE 1e-5

typedef struct test_weight {
    uint32_t type, rows, cols;
    vkr_buffer buffer;
    op_weight w;
    float *deq; /* rows * cols, what the shaders should see */
} test_weight;

static double worst_err[GGML_TYPE_COUNT], worst_rows_err[GGML_TYPE_COUNT];

/* The pass: weights read through storage buffers (the weight's texel layout dropped), or
 * through texel views where the weight has them. */
static bool ssbo_pass;

/* The weight as this pass reads it. */
static op_weight pass_weight(const test_weight *tw)
{
    op_weight w = tw->w;
    if (ssbo_pass)
        w.n_texel_chunks = 0;
    return w;
}

/* Ends, submits and frees cmd; *label is the shader name of its first dispatch ("" without
 * timestamps). */
static void run_labelled(vkr_cmd *cmd, const char **label)
{
    double ms;
    *label = "";
    if (vkr_cmd_end(cmd) || vkr_cmd_submit_wait(cmd)) {
        printf("FAIL: submit: %s\n", vk_error_message());
        exit(1);
    }
    if (!vkr_cmd_dispatch_time(cmd, 0, label, &ms))
        *label = "";
    vkr_cmd_destroy(cmd);
}

/* Random weights in [-1, 1), quantized to `type`, uploaded at byte `offset` of a device
 * buffer, laid out by op_weight_init (whose status is returned). */
static vkllm_status make_weight(vkr_device *dev, uint32_t type, uint32_t rows, uint32_t cols,
                                uint64_t offset, uint32_t seed, test_weight *tw)
{
    memset(tw, 0, sizeof *tw);
    tw->type = type, tw->rows = rows, tw->cols = cols;
    uint64_t row_bytes = ggml_row_bytes(type, cols);
    size_t n = (size_t)rows * cols;
    float *src = malloc(n * sizeof *src);
    uint8_t *bytes = malloc(rows * row_bytes);
    tw->deq = malloc(n * sizeof *tw->deq);
    if (!src || !bytes || !tw->deq) {
        printf("FAIL: out of memory\n");
        exit(1);
    }
    t_fill_random(src, n, seed);
    for (uint32_t r = 0; r < rows; r++) {
        if (vk_quantize_row(type, src + (size_t)r * cols, bytes + r * row_bytes, cols) != row_bytes ||
            vk_dequantize_row(type, bytes + r * row_bytes, tw->deq + (size_t)r * cols, cols) != 0) {
            printf("FAIL: reference quantization of type %u\n", type);
            exit(1);
        }
    }
    vkllm_status s = vkr_buffer_create(dev, offset + rows * row_bytes, VKR_MEMORY_DEVICE, &tw->buffer);
    if (!s)
        s = vkr_buffer_write(dev, &tw->buffer, offset, bytes, rows * row_bytes);
    if (s) {
        printf("FAIL: weight upload: %s\n", vk_error_message());
        exit(1);
    }
    s = op_weight_init(dev, type, rows, cols, &tw->buffer, offset, &tw->w);
    free(src);
    free(bytes);
    return s;
}

static void free_weight(vkr_device *dev, test_weight *tw)
{
    vkr_buffer_destroy(dev, &tw->buffer);
    free(tw->deq);
}

/* Chunks laid out as documented: consecutive whole rows, bindings aligned and within range;
 * texel chunks (where the buffer has views) each inside the view they name. */
static void check_layout(vkr_device *dev, const test_weight *tw, uint64_t offset)
{
    const op_weight *w = &tw->w;
    int ok = w->n_chunks >= 1 && w->row_bytes == ggml_row_bytes(tw->type, tw->cols);
    uint32_t next = 0;
    for (uint32_t c = 0; c < w->n_chunks && ok; c++) {
        const op_weight_chunk *ch = &w->chunks[c];
        uint64_t first = offset + (uint64_t)ch->row_begin * w->row_bytes;
        ok = ch->row_begin == next && ch->row_count > 0 &&
             ch->offset % dev->caps.storage_offset_alignment == 0 && ch->offset + ch->skip_bytes == first &&
             ch->skip_bytes + (uint64_t)ch->row_count * w->row_bytes <= dev->caps.max_storage_buffer_range;
        next += ch->row_count;
    }
    t_check(ok && next == tw->rows, "layout %s %ux%u at offset %llu: %u chunk(s)",
            ggml_traits(tw->type).name, tw->rows, tw->cols, (unsigned long long)offset, w->n_chunks);

    const vkr_buffer *b = &tw->buffer;
    if (!dev->caps.texel_weights)
        return;
    /* With views every weight gets a texel layout, unless a chunk would need more than
     * OP_MAX_CHUNKS views' worth (the test's largest weights under the small-range profile). */
    uint64_t per_view = b->texel_stride / w->row_bytes;
    bool expected = b->n_texel_views > 0 && per_view > 0 &&
                    (tw->rows + per_view - 1) / per_view <= OP_MAX_CHUNKS;
    ok = b->n_texel_views > 0 && (w->n_texel_chunks > 0 || !expected);
    next = 0;
    for (uint32_t c = 0; c < w->n_texel_chunks && ok; c++) {
        const op_weight_chunk *ch = &w->texel_chunks[c];
        uint64_t first = offset + (uint64_t)ch->row_begin * w->row_bytes;
        uint64_t view_end = ch->offset + b->texel_range < b->size ? ch->offset + b->texel_range : b->size;
        ok = ch->row_begin == next && ch->row_count > 0 && ch->buffer == b && ch->view < b->n_texel_views &&
             ch->offset == (uint64_t)ch->view * b->texel_stride && ch->offset + ch->skip_bytes == first &&
             first + (uint64_t)ch->row_count * w->row_bytes <= view_end;
        next += ch->row_count;
    }
    if (w->n_texel_chunks)
        ok = ok && next == tw->rows;
    t_check(ok, "texel layout %s %ux%u at offset %llu: %u chunk(s) over %u view(s) of %llu bytes",
            ggml_traits(tw->type).name, tw->rows, tw->cols, (unsigned long long)offset, w->n_texel_chunks,
            b->n_texel_views, (unsigned long long)b->texel_range);
}

static void check_matmul(vkr_device *dev, test_weight *tw, uint32_t n_tokens, bool accumulate)
{
    uint32_t rows = tw->rows, cols = tw->cols;
    size_t nx = (size_t)n_tokens * cols, ny = (size_t)n_tokens * rows;
    float *x = malloc(nx * sizeof *x), *y0 = malloc(ny * sizeof *y0), *got = malloc(ny * sizeof *got);
    t_fill_random(x, nx, n_tokens * 31 + cols);
    t_fill_random(y0, ny, rows + 5);
    if (!accumulate)
        for (size_t i = 0; i < ny; i++)
            y0[i] = 1e30f; /* must be overwritten */
    op_tensor tx = t_tensor_from(dev, x, nx * sizeof *x), ty = t_tensor_from(dev, y0, ny * sizeof *y0);

    op_weight w = pass_weight(tw);
    const char *label = "";
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_matmul(cmd, dev, &w, tx, ty, n_tokens, accumulate);
    uint32_t dispatches = vkr_cmd_dispatch_count(cmd), barriers = vkr_cmd_barrier_count(cmd);
    if (s) {
        t_check(0, "matmul record: %s", vk_error_message());
        vkr_cmd_destroy(cmd);
    } else {
        run_labelled(cmd, &label);
    }
    bool texel = w.n_texel_chunks && tx.buffer->n_texel_views && (uint64_t)cols * 4 <= tx.buffer->texel_stride;
    bool right = t_right_shader(texel, label);
    t_read(dev, ty, got, ny * sizeof *got);

    double max_err = 0;
    size_t bad = 0, worst = 0;
    double want_worst = 0;
    for (uint32_t t = 0; t < n_tokens; t++) {
        for (uint32_t r = 0; r < rows; r++) {
            const float *wr = tw->deq + (size_t)r * cols, *xt = x + (size_t)t * cols;
            double sum = 0, scale = 0;
            for (uint32_t c = 0; c < cols; c++) {
                double p = (double)wr[c] * (double)xt[c];
                sum += p;
                scale += fabs(p);
            }
            size_t i = (size_t)t * rows + r;
            if (accumulate) {
                sum += y0[i];
                scale += fabs(y0[i]);
            }
            double err = fabs((double)got[i] - sum) / (scale > 0 ? scale : 1e-30);
            if (!(err <= TOLERANCE))
                bad++;
            if (!(err <= max_err)) {
                max_err = err;
                worst = i;
                want_worst = sum;
            }
        }
    }
    if (max_err > worst_err[tw->type])
        worst_err[tw->type] = max_err;
    /* One token: consecutive chunks write apart, so no barrier where chunks start on
     * aligned rows. Otherwise chunks interleave in y: at most one barrier per chunk switch. */
    uint32_t n_chunks = texel ? w.n_texel_chunks : w.n_chunks;
    const op_weight_chunk *chunks = texel ? w.texel_chunks : w.chunks;
    uint32_t max_barriers = n_chunks - 1;
    if (n_tokens == 1) {
        uint64_t align = dev->caps.storage_offset_alignment > 16 ? dev->caps.storage_offset_alignment : 16;
        max_barriers = 0; /* only where a chunk's y range cannot start aligned (y.offset is 0) */
        for (uint32_t c = 1; c < n_chunks; c++)
            max_barriers += (uint64_t)chunks[c].row_begin * 4 % align != 0;
    }
    bool fail = bad || barriers > max_barriers || !right;
    printf("%s matmul %-4s %5ux%-5u tokens %3u%s: %u dispatch(es) of %s, %u barrier(s), max err %.2g "
           "(tol %.0e)",
           fail ? "FAIL" : "ok  ", ggml_traits(tw->type).name, rows, cols, n_tokens,
           accumulate ? " +=" : "   ", dispatches, *label ? label : "?", barriers, max_err, TOLERANCE);
    if (bad)
        printf(" %zu bad, worst y[%zu] got %g want %g", bad, worst, got[worst], want_worst);
    if (barriers > max_barriers)
        printf(" more than %u barriers", max_barriers);
    if (!right)
        printf(" (expected the %s shader)", texel ? "texel" : "storage-buffer");
    printf("\n");
    if (fail)
        t_failures++;
    t_tensor_free(dev, tx);
    t_tensor_free(dev, ty);
    free(x), free(y0), free(got);
}

static void check_get_rows(vkr_device *dev, test_weight *tw, uint32_t n_ids)
{
    uint32_t rows = tw->rows, cols = tw->cols;
    int32_t *ids = malloc(n_ids * sizeof *ids);
    uint32_t state = rows * 7 + n_ids;
    for (uint32_t i = 0; i < n_ids; i++) {
        state = state * 1664525u + 1013904223u;
        ids[i] = (int32_t)((state >> 8) % rows);
    }
    ids[0] = (int32_t)rows - 1;
    if (n_ids > 3) {
        ids[1] = 0;
        ids[2] = -5;                 /* clamped to row 0 */
        ids[3] = (int32_t)rows + 3;  /* clamped to the last row */
    }
    size_t n = (size_t)n_ids * cols;
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    for (uint32_t i = 0; i < n_ids; i++) {
        int32_t r = ids[i] < 0 ? 0 : ids[i] >= (int32_t)rows ? (int32_t)rows - 1 : ids[i];
        memcpy(want + (size_t)i * cols, tw->deq + (size_t)r * cols, cols * sizeof *want);
    }
    op_tensor tids = t_tensor_from(dev, ids, n_ids * sizeof *ids), tout = t_tensor(dev, n * sizeof(float));
    op_weight w = pass_weight(tw);
    const char *label = "";
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_get_rows(cmd, dev, &w, tids, tout, n_ids);
    uint32_t barriers = vkr_cmd_barrier_count(cmd);
    if (s) {
        t_check(0, "get_rows record: %s", vk_error_message());
        vkr_cmd_destroy(cmd);
    } else {
        run_labelled(cmd, &label);
    }
    t_check(t_right_shader(w.n_texel_chunks != 0, label), "get_rows %s: shader %s", ggml_traits(tw->type).name,
            label);
    t_read(dev, tout, got, n * sizeof *got);
    char what[96];
    snprintf(what, sizeof what, "get_rows %s %ux%u ids %u (%u barriers)", ggml_traits(tw->type).name,
             rows, cols, n_ids, barriers);
    /* The same values, up to an fma in q*d + m (q4_1, q5_1). */
    t_compare(what, got, want, n, 1e-6f, 1e-6f);
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]);
        if (e > worst_rows_err[tw->type])
            worst_rows_err[tw->type] = e;
    }
    t_check(barriers + 1 <= (w.n_texel_chunks ? w.n_texel_chunks : w.n_chunks), "get_rows barriers %u <= chunks - 1",
            barriers);
    t_tensor_free(dev, tids);
    t_tensor_free(dev, tout);
    free(ids), free(want), free(got);
}

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Throughput of 4096 x 4096 matvec (replayed) and matmul, from GPU timestamps. */
static void time_type(vkr_device *dev, uint32_t type)
{
    const uint32_t n = 4096, prompt = 512;
    test_weight tw;
    if (make_weight(dev, type, n, n, 0, 99, &tw)) {
        t_check(0, "timing weight: %s", vk_error_message());
        return;
    }
    op_tensor tx = t_tensor(dev, (size_t)prompt * n * 4), ty = t_tensor(dev, (size_t)prompt * n * 4);
    uint32_t token_counts[] = {1, 4, 8, prompt};
    for (size_t k = 0; k < sizeof token_counts / sizeof *token_counts; k++) {
        uint32_t nt = token_counts[k];
        op_weight w = pass_weight(&tw);
        vkr_cmd *cmd = t_begin(dev);
        if (op_matmul(cmd, dev, &w, tx, ty, nt, false) || vkr_cmd_end(cmd)) {
            t_check(0, "timing: %s", vk_error_message());
            vkr_cmd_destroy(cmd);
            continue;
        }
        /* The first run compiles the shader on lavapipe. Besides GPU time, the process's CPU
         * time (lavapipe's threads included) per run: on a busy host that figure holds still. */
        if (vkr_cmd_submit_wait(cmd)) {
            t_check(0, "timing: %s", vk_error_message());
            vkr_cmd_destroy(cmd);
            continue;
        }
        double best = 1e30;
        int reps = nt == prompt ? 2 : 6;
        double cpu0 = cpu_ms();
        for (int i = 0; i < reps; i++) {
            if (vkr_cmd_submit_wait(cmd))
                break;
            double ms = vkr_cmd_gpu_ms(cmd);
            if (ms > 0 && ms < best)
                best = ms;
        }
        double cpu = (cpu_ms() - cpu0) / reps;
        const char *label = "?";
        double ms;
        vkr_cmd_dispatch_time(cmd, 0, &label, &ms);
        if (best < 1e30)
            printf("time %-16s 4096x4096 tokens %3u: %8.2f ms %6.2f G weights/s %6.2f GFLOP/s;"
                   " cpu %8.2f ms: %6.2f GFLOP/s per cpu-second\n",
                   label, nt, best, (double)n * n / (best * 1e6), 2.0 * n * n * nt / (best * 1e6),
                   cpu, 2.0 * n * n * nt / (cpu * 1e6));
        vkr_cmd_destroy(cmd);
    }
    t_tensor_free(dev, tx);
    t_tensor_free(dev, ty);
    free_weight(dev, &tw);
}

/* Runs a recording whose recording returned s, or (s failed) counts the failure and drops it.
 * Whether it ran. */
static bool run_recorded(vkr_cmd *cmd, vkllm_status s, const char *what)
{
    if (s) {
        t_check(0, "%s record: %s", what, vk_error_message());
        vkr_cmd_destroy(cmd);
        return false;
    }
    const char *label = "";
    run_labelled(cmd, &label);
    return true;
}

/* One weight: layout, matmul for each token count (with and without accumulation where it
 * adds a path), get_rows. */
/* op_matvec_split and op_matvec_glu: several products of one x in one dispatch. parts[] lists
 * the row counts of W's parts (split), or for GLU two equal halves (gate_first: gate rows
 * first); with_norm: of RMSNorm(x) * nw. Checked against the double-precision reference
 * (split: as check_matmul; GLU: error relative to sum|w x| of gate times |up| plus |silu(gate)|
 * times sum|w x| of up), and against op_rmsnorm and op_matmul of each part (and op_swiglu)
 * run separately, which the recorder swaps for them: the count of bit-identical outputs is
 * printed (with the norm the sums of squares add up in another order). */
static void check_fused(vkr_device *dev, test_weight *tw, const uint32_t *parts, uint32_t n_parts, bool glu,
                        bool gate_first, bool with_norm, uint32_t n_tokens)
{
    uint32_t rows = tw->rows, cols = tw->cols;
    op_weight w = pass_weight(tw);
    size_t nx = (size_t)n_tokens * cols, ny = (size_t)n_tokens * rows;
    float *x = malloc(nx * sizeof *x), *got = malloc(ny * sizeof *got), *sep = malloc(ny * sizeof *sep);
    float *nw = malloc(cols * sizeof *nw);
    double *xr = malloc(nx * sizeof *xr); /* what the products multiply: x, or its norm */
    const float eps = 1e-5f;
    t_fill_random(x, nx, n_tokens * 7 + rows);
    t_fill_random(nw, cols, cols + 3);
    for (uint32_t c = 0; c < cols; c++)
        nw[c] += 1.5f; /* around 1.5, as trained norm weights are positive */
    for (uint32_t t = 0; t < n_tokens; t++) {
        double sq = 0;
        for (uint32_t c = 0; c < cols; c++)
            sq += (double)x[(size_t)t * cols + c] * x[(size_t)t * cols + c];
        double scale = with_norm ? 1.0 / sqrt(sq / cols + eps) : 1.0;
        for (uint32_t c = 0; c < cols; c++)
            xr[(size_t)t * cols + c] = x[(size_t)t * cols + c] * (with_norm ? scale * nw[c] : 1.0);
    }
    op_tensor tx = t_tensor_from(dev, x, nx * sizeof *x), tnw = t_tensor_from(dev, nw, cols * sizeof *nw);
    op_tensor txn = t_tensor(dev, nx * sizeof *x);
    op_matvec_norm norm = {tnw, eps};
    char what[128];
    snprintf(what, sizeof what, "%s%s %s %ux%u tokens %u%s", glu ? "matvec_glu" : "matvec_split",
             with_norm ? " +norm" : "", ggml_traits(tw->type).name, rows, cols, n_tokens,
             glu ? (gate_first ? " gate|up" : " up|gate") : "");
    if (!op_matvec_fusable(dev, &w, tx, n_tokens)) {
        /* only where the weight is split over bindings (small-range profile) */
        bool texel = w.n_texel_chunks && tx.buffer->n_texel_views && (uint64_t)cols * 4 <= tx.buffer->texel_stride;
        t_check((texel ? w.n_texel_chunks : w.n_chunks) > 1, "%s: not fusable, as the weight has %u chunks", what,
                texel ? w.n_texel_chunks : w.n_chunks);
        t_tensor_free(dev, tx);
        t_tensor_free(dev, tnw);
        t_tensor_free(dev, txn);
        free(x), free(got), free(sep), free(nw), free(xr);
        return;
    }
    /* separate products of each part (in one buffer, part after part) */
    op_tensor ty_sep = t_tensor(dev, ny * 4), ty[OP_MATVEC_MAX_PARTS], out = {0}, out_sep = {0};
    uint32_t n_out = glu ? parts[0] : 0;
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = with_norm ? op_rmsnorm(cmd, dev, tx, tnw, txn, cols, n_tokens, eps) : VKLLM_OK;
    for (uint32_t j = 0, row = 0; j < n_parts && !s; row += parts[j], j++) {
        op_weight pw;
        if ((s = op_weight_init(dev, w.type, parts[j], cols, w.buffer, w.offset + (VkDeviceSize)row * w.row_bytes,
                                &pw)))
            break;
        if (ssbo_pass)
            pw.n_texel_chunks = 0;
        op_tensor part_y = {ty_sep.buffer, (VkDeviceSize)n_tokens * row * 4, (VkDeviceSize)n_tokens * parts[j] * 4};
        s = op_matmul(cmd, dev, &pw, with_norm ? txn : tx, part_y, n_tokens, false);
    }
    if (glu) {
        out = t_tensor(dev, (size_t)n_tokens * n_out * 4);
        out_sep = t_tensor(dev, (size_t)n_tokens * n_out * 4);
        op_tensor first = {ty_sep.buffer, 0, (VkDeviceSize)n_tokens * n_out * 4};
        op_tensor second = {ty_sep.buffer, (VkDeviceSize)n_tokens * n_out * 4, (VkDeviceSize)n_tokens * n_out * 4};
        if (!s)
            s = op_swiglu(cmd, dev, gate_first ? first : second, gate_first ? second : first, out_sep,
                          n_tokens * n_out);
    }
    uint32_t before = vkr_cmd_dispatch_count(cmd);
    if (!s && glu) {
        s = op_matvec_glu(cmd, dev, &w, tx, with_norm ? &norm : NULL, out, gate_first ? 0 : n_out,
                          gate_first ? n_out : 0, n_out, n_tokens);
    } else if (!s) {
        op_matvec_part p[OP_MATVEC_MAX_PARTS];
        for (uint32_t j = 0; j < n_parts; j++) {
            ty[j] = t_tensor(dev, (size_t)n_tokens * parts[j] * 4);
            p[j] = (op_matvec_part){parts[j], ty[j]};
        }
        s = op_matvec_split(cmd, dev, &w, tx, with_norm ? &norm : NULL, p, n_parts, NULL, n_tokens);
    }
    uint32_t fused_dispatches = vkr_cmd_dispatch_count(cmd) - before;
    run_recorded(cmd, s, what);
    /* y as [part][token][row of part], the layout of both ty_sep and the split outputs */
    size_t n_got = glu ? (size_t)n_tokens * n_out : ny;
    if (glu) {
        t_read(dev, out, got, n_got * 4);
        t_read(dev, out_sep, sep, n_got * 4);
    } else {
        t_read(dev, ty_sep, sep, ny * 4);
        for (uint32_t j = 0, row = 0; j < n_parts; row += parts[j], j++)
            t_read(dev, ty[j], got + (size_t)n_tokens * row, (size_t)n_tokens * parts[j] * 4);
    }
    double max_err = 0;
    size_t bad = 0, same = 0;
    for (uint32_t j = 0, row = 0; j < (glu ? 1 : n_parts); row += parts[j], j++)
        for (uint32_t t = 0; t < n_tokens; t++)
            for (uint32_t r = 0; r < parts[j]; r++) {
                double sum[2] = {0, 0}, scale[2] = {0, 0};
                for (int h = 0; h < (glu ? 2 : 1); h++) {
                    /* GLU: h 0 reads the gate row, h 1 the up row */
                    uint32_t wr = !glu ? row + r : (h == 0) == gate_first ? r : n_out + r;
                    for (uint32_t c = 0; c < cols; c++) {
                        double pr = (double)tw->deq[(size_t)wr * cols + c] * xr[(size_t)t * cols + c];
                        sum[h] += pr;
                        scale[h] += fabs(pr);
                    }
                }
                double want = sum[0], bound = scale[0];
                if (glu) {
                    double sg = sum[0] / (1.0 + exp(-sum[0]));
                    want = sg * sum[1];
                    bound = 1.1 * scale[0] * fabs(sum[1]) + fabs(sg) * scale[1];
                }
                size_t i = (size_t)n_tokens * row + (size_t)t * parts[j] + r;
                double err = fabs((double)got[i] - want) / (bound > 0 ? bound : 1e-30);
                bad += !(err <= TOLERANCE);
                if (err > max_err)
                    max_err = err;
                same += memcmp(&got[i], &sep[i], 4) == 0;
            }
    bool fail = bad || fused_dispatches != 1;
    printf("%s %s: %u dispatch, max err %.2g (tol %.0e), %zu of %zu bit-identical to the separate ops\n",
           fail ? "FAIL" : "ok  ", what, fused_dispatches, max_err, TOLERANCE, same, n_got);
    if (fail)
        t_failures++;
    for (uint32_t j = 0; !glu && j < n_parts; j++)
        t_tensor_free(dev, ty[j]);
    if (glu) {
        t_tensor_free(dev, out);
        t_tensor_free(dev, out_sep);
    }
    t_tensor_free(dev, ty_sep);
    t_tensor_free(dev, tx);
    t_tensor_free(dev, tnw);
    t_tensor_free(dev, txn);
    free(x), free(got), free(sep), free(nw), free(xr);
}

/* op_matvec_split with op_matvec_rope_kv: Q, K and V products (parts qkv[]: heads of
 * head_dim), then the rope of q and k and the KV store, in one dispatch, against
 * op_matvec_split followed by op_rope_kv_store (which the recorder swaps for it; that one is
 * tested against separate rope and KV stores, and those against C references). q and both
 * whole caches (rows not written included) must be bit-identical. The cache has 8 rows and
 * the step starts at position 13, so that a 4-token step wraps around it. */
static void check_fused_rope_kv(vkr_device *dev, test_weight *tw, const uint32_t qkv[3], uint32_t head_dim,
                                uint32_t n_rot, bool with_norm, uint32_t n_tokens)
{
    const uint32_t n_ctx = 8, n_past = 13;
    uint32_t cols = tw->cols, kv = qkv[1];
    op_weight w = pass_weight(tw);
    size_t nx = (size_t)n_tokens * cols, nq = (size_t)n_tokens * qkv[0], cache_bytes = (size_t)n_ctx * kv * 2;
    float *x = malloc(nx * sizeof *x), *nw = malloc(cols * sizeof *nw);
    float *q_got = malloc(nq * 4), *q_want = malloc(nq * 4);
    uint8_t *cache_init = malloc(cache_bytes), *got[2] = {malloc(cache_bytes), malloc(cache_bytes)},
            *want[2] = {malloc(cache_bytes), malloc(cache_bytes)};
    t_fill_random(x, nx, n_tokens * 5 + n_rot);
    t_fill_random(nw, cols, cols + 5);
    for (size_t i = 0; i < cache_bytes; i++)
        cache_init[i] = (uint8_t)(i * 37 + 11); /* rows nobody writes keep this */
    vk_step_params params = {n_past, n_tokens, {0, 0}};
    op_tensor tx = t_tensor_from(dev, x, nx * 4), tnw = t_tensor_from(dev, nw, cols * 4);
    op_tensor tp = t_tensor_from(dev, &params, sizeof params);
    op_tensor caches[2][2], ty[2][3];
    for (int path = 0; path < 2; path++) /* 0: separate (want), 1: fused (got) */
        for (int j = 0; j < 3; j++) {
            if (j < 2)
                caches[path][j] = t_tensor_from(dev, cache_init, cache_bytes);
            ty[path][j] = t_tensor(dev, (size_t)n_tokens * qkv[j] * 4);
        }
    op_matvec_norm norm = {tnw, 1e-5f};
    op_matvec_rope_kv rkv = {caches[1][0], caches[1][1], tp, head_dim, n_rot, 10000.0f, 0.5f};
    op_rope_kv_desc d = {
        .q = ty[0][0], .k = ty[0][1], .v = ty[0][2], .k_cache = caches[0][0], .v_cache = caches[0][1],
        .params = tp, .n_tokens = n_tokens, .n_heads = qkv[0] / head_dim, .n_heads_kv = kv / head_dim,
        .head_dim = head_dim, .n_rot = n_rot, .mode = OP_ROPE_ADJACENT, .freq_base = rkv.freq_base,
        .freq_scale = rkv.freq_scale,
    };
    char what[128];
    snprintf(what, sizeof what, "matvec_split%s +rope_kv %s %ux%u, heads of %u (%u rotated), tokens %u",
             with_norm ? " +norm" : "", ggml_traits(tw->type).name, tw->rows, cols, head_dim, n_rot, n_tokens);
    op_matvec_part p[2][3];
    for (int path = 0; path < 2; path++)
        for (int j = 0; j < 3; j++)
            p[path][j] = (op_matvec_part){qkv[j], ty[path][j]};
    vkr_cmd *cmd = t_begin(dev);
    vkllm_status s = op_matvec_split(cmd, dev, &w, tx, with_norm ? &norm : NULL, p[0], 3, NULL, n_tokens);
    if (!s)
        s = op_rope_kv_store(cmd, dev, &d);
    uint32_t before = vkr_cmd_dispatch_count(cmd);
    if (!s)
        s = op_matvec_split(cmd, dev, &w, tx, with_norm ? &norm : NULL, p[1], 3, &rkv, n_tokens);
    uint32_t fused_dispatches = vkr_cmd_dispatch_count(cmd) - before;
    if (run_recorded(cmd, s, what)) {
        t_read(dev, ty[1][0], q_got, nq * 4);
        t_read(dev, ty[0][0], q_want, nq * 4);
        for (int j = 0; j < 2; j++) {
            t_read(dev, caches[1][j], got[j], cache_bytes);
            t_read(dev, caches[0][j], want[j], cache_bytes);
        }
        size_t q_same = 0, k_same = 0, v_same = 0, rotated = 0;
        for (size_t i = 0; i < nq; i++)
            q_same += memcmp(&q_got[i], &q_want[i], 4) == 0;
        for (size_t i = 0; i < cache_bytes; i += 2) {
            k_same += memcmp(got[0] + i, want[0] + i, 2) == 0;
            v_same += memcmp(got[1] + i, want[1] + i, 2) == 0;
            rotated += memcmp(want[0] + i, cache_init + i, 2) != 0;
        }
        bool ok = s == VKLLM_OK && fused_dispatches == 1 && q_same == nq && k_same == cache_bytes / 2 &&
                  v_same == cache_bytes / 2 && rotated > 0;
        t_check(ok, "%s: %u dispatch; bit-identical to the separate ops: q %zu of %zu, K cache %zu and V cache %zu "
                "of %zu (%zu K values written)", what, fused_dispatches, q_same, nq, k_same, v_same,
                cache_bytes / 2, rotated);
    }
    for (int path = 0; path < 2; path++)
        for (int j = 0; j < 3; j++) {
            if (j < 2)
                t_tensor_free(dev, caches[path][j]);
            t_tensor_free(dev, ty[path][j]);
        }
    t_tensor_free(dev, tx);
    t_tensor_free(dev, tnw);
    t_tensor_free(dev, tp);
    free(x), free(nw), free(q_got), free(q_want), free(cache_init);
    free(got[0]), free(got[1]), free(want[0]), free(want[1]);
}

/* The fused cases of one type: Q, K, V-like parts (GQA: K and V narrower), two parts, and
 * GLU halves in both orders, for 1 and 2 tokens and the most the matrix-vector shape takes;
 * with and without the RMSNorm of x. */
static void check_fused_cases(vkr_device *dev, uint32_t type, uint32_t cols, uint64_t offset, uint32_t seed)
{
    const uint32_t qkv[] = {96, 32, 32}, all[] = {160}, two[] = {40, 24}, half[] = {72, 72};
    const uint32_t token_counts[] = {1, 2, 4};
    test_weight tw;
    if (make_weight(dev, type, 160, cols, offset, seed, &tw)) {
        t_check(0, "fused weight: %s", vk_error_message());
        free_weight(dev, &tw);
        return;
    }
    for (size_t k = 0; k < 3; k++) {
        check_fused(dev, &tw, qkv, 3, false, false, false, token_counts[k]);
        check_fused(dev, &tw, qkv, 3, false, false, true, token_counts[k]);
    }
    check_fused(dev, &tw, all, 1, false, false, false, 1); /* one part: a plain product */
    check_fused(dev, &tw, all, 1, false, false, true, 2);  /* the norm before an output head */
    /* with the rope and KV store: 6 q heads over 2 KV heads of 16, all or half rotated */
    for (size_t k = 0; k < 3; k++) {
        op_weight w = pass_weight(&tw);
        op_tensor probe = t_tensor(dev, (size_t)token_counts[k] * cols * 4);
        bool fusable = op_matvec_fusable(dev, &w, probe, token_counts[k]); /* as check_fused says */
        t_tensor_free(dev, probe);
        if (fusable)
            check_fused_rope_kv(dev, &tw, qkv, 16, k == 1 ? 8 : 16, k != 0, token_counts[k]);
    }
    free_weight(dev, &tw);
    if (make_weight(dev, type, 64, cols, offset, seed + 1, &tw) == VKLLM_OK)
        check_fused(dev, &tw, two, 2, false, false, false, 2);
    free_weight(dev, &tw);
    if (make_weight(dev, type, 144, cols, offset, seed + 2, &tw) == VKLLM_OK)
        for (size_t k = 0; k < 3; k++) {
            check_fused(dev, &tw, half, 2, true, true, false, token_counts[k]);
            check_fused(dev, &tw, half, 2, true, false, k == 1, token_counts[k]);
        }
    free_weight(dev, &tw);
    /* Past the matrix-vector shape's tokens, or with a part that does not cover W, it refuses. */
    if (make_weight(dev, type, 64, cols, offset, seed + 3, &tw) == VKLLM_OK) {
        op_tensor tx = t_tensor(dev, (size_t)64 * cols * 4), ty = t_tensor(dev, 64 * 64 * 4);
        op_weight w = pass_weight(&tw);
        t_check(!op_matvec_fusable(dev, &w, tx, 64), "%s: 64 tokens are not a matrix-vector product",
                ggml_traits(type).name);
        op_matvec_part p[2] = {{32, ty}, {16, ty}};
        vkr_cmd *cmd = t_begin(dev);
        t_check(op_matvec_split(cmd, dev, &w, tx, NULL, p, 2, NULL, 1) != VKLLM_OK,
                "%s: matvec_split refuses parts of 48 rows for a weight of 64: %s", ggml_traits(type).name,
                vk_error_message());
        vkr_cmd_destroy(cmd);
        t_tensor_free(dev, tx);
        t_tensor_free(dev, ty);
    }
    free_weight(dev, &tw);
}

static void check_weight_case(vkr_device *dev, uint32_t type, uint32_t rows, uint32_t cols,
                              uint64_t offset, uint32_t seed, const uint32_t *token_counts,
                              size_t n_counts)
{
    test_weight tw;
    vkllm_status s = make_weight(dev, type, rows, cols, offset, seed, &tw);
    if (s) {
        /* Only acceptable when the weight really needs more than OP_MAX_CHUNKS. */
        uint64_t per_chunk = dev->caps.max_storage_buffer_range / ggml_row_bytes(type, cols);
        bool too_many = (rows + per_chunk - 1) / per_chunk > OP_MAX_CHUNKS;
        t_check(too_many, "op_weight_init %s %ux%u fails: %s", ggml_traits(type).name, rows, cols,
                vk_error_message());
        free_weight(dev, &tw);
        return;
    }
    check_layout(dev, &tw, offset);
    for (size_t k = 0; k < n_counts; k++) {
        uint32_t nt = token_counts[k];
        if (nt == 512 && !(rows == 64 && cols == 4096))
            continue;
        if (cols == 14336 && nt > 64)
            continue;
        check_matmul(dev, &tw, nt, false);
        /* accumulate on the matrix-vector and matrix-matrix paths */
        if (nt == 2 || nt == 64 || rows * cols <= 4096)
            check_matmul(dev, &tw, nt, true);
    }
    check_get_rows(dev, &tw, 1);
    check_get_rows(dev, &tw, 9);
    free_weight(dev, &tw);
}

int main(void)
{
    vkr_device *dev = t_device();
    const char *profile = getenv("VKLLM_PROFILE");
    const char *timing = getenv("VKLLM_TEST_TIMING"); /* 0: no timings; only: nothing else */
    const char *gpu_av_env = getenv("VKLLM_GPU_AV");
    bool timing_only = timing && !strcmp(timing, "only");
    /* GPU-assisted validation instruments every storage access, which makes lavapipe compile
     * a big unrolled shader for minutes: a reduced set of cases (plain weights with partial
     * blocks, q4_0's alternating alignment, q4_1's whole-word blocks), with the smaller GPU
     * shapes (32 x 2 for the matrix-vector one: 128 x 4, the GPU default, took three
     * minutes to compile here). The addressing code is the same for all shapes. */
    bool gpu_av = gpu_av_env && !strcmp(gpu_av_env, "1");
    if (gpu_av) {
        setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
        setenv("VKLLM_MATVEC_SHAPE", "32,2", 1);
    }
    printf("max binding %llu bytes, offset alignment %llu%s\n",
           (unsigned long long)dev->caps.max_storage_buffer_range,
           (unsigned long long)dev->caps.storage_offset_alignment,
           gpu_av ? ", GPU-assisted validation: reduced set" : "");

    /* rows x cols; the 14336-column case only for f32 and q4_0; 2049 x 96 gives rows of
     * 2 mod 4 bytes (q4_0 54, q5_0 66, q8_0 102) that span several 64 KiB chunks; 33 x 37
     * (plain types only) ends rows with a partial block and unaligned x rows. */
    const uint32_t sizes[][2] = {{1, 32},    {3, 64},   {127, 96},   {4097, 64},
                                 {2049, 96}, {64, 4096}, {256, 14336}, {33, 37}};
    const uint32_t token_counts[] = {1, 2, 7, 64, 512};
    /* 64: matmul_tiled.comp's path; storage buffers only (the texel matmul adds ~20 s of
     * compiling under GPU-assisted validation, and the other profiles run it). */
    const uint32_t av_token_counts[] = {1, 7, 64};
    /* Texel views where the device reads weights that way, then storage buffers. */
    for (int pass = dev->caps.texel_weights ? 0 : 1; pass < 2 && !timing_only; pass++) {
        ssbo_pass = pass == 1;
        printf("-- weights read through %s\n", ssbo_pass ? "storage buffers" : "texel views");
        uint32_t case_index = 0;
        for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++) {
            uint32_t type = all_types[ti];
            bool plain = ggml_traits(type).block_size == 1;
            for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
                uint32_t rows = sizes[si][0], cols = sizes[si][1];
                if (cols == 14336 && type != GGML_F32 && type != GGML_Q4_0)
                    continue;
                if (cols % 32 && !plain)
                    continue;
                if (gpu_av && (rows * cols > 127 * 96 ||
                               (type != GGML_F32 && type != GGML_Q4_0 && type != GGML_Q4_1)))
                    continue;
                /* Every other case stores the weight 34 bytes into its buffer: 2 mod 4, and
                 * off the binding alignment, so chunks start with a skip. */
                uint64_t offset = case_index++ % 2 ? 34 : 0;
                if (gpu_av) {
                    check_weight_case(dev, type, rows, cols, offset, (uint32_t)(si * 16 + ti),
                                      av_token_counts, ssbo_pass ? 3 : 2);
                    if (ssbo_pass && type == GGML_Q4_0 && rows == 127) { /* the 128 x 128 tiles */
                        setenv("VKLLM_TILED", "128", 1);
                        check_weight_case(dev, type, rows, cols, offset, 17, av_token_counts + 2, 1);
                        unsetenv("VKLLM_TILED");
                    }
                }
                else
                    check_weight_case(dev, type, rows, cols, offset, (uint32_t)(si * 16 + ti),
                                      token_counts, sizeof token_counts / sizeof *token_counts);
            }
        }

        /* The shapes for GPUs (several subgroups per row, tokens tiled inside a workgroup),
         * on whatever device this is. */
        if (!gpu_av) {
            setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
            printf("-- with VKLLM_MATMUL_SHAPES=gpu\n");
            const uint32_t gpu_types[] = {GGML_F16, GGML_Q4_0, GGML_Q4_1};
            for (size_t ti = 0; ti < sizeof gpu_types / sizeof *gpu_types; ti++) {
                check_weight_case(dev, gpu_types[ti], 127, 96, 34, 7, token_counts, 4);
                check_weight_case(dev, gpu_types[ti], 4097, 64, 0, 8, token_counts, 4);
            }
            unsetenv("VKLLM_MATMUL_SHAPES");
        }
        /* The storage-buffer shaders' other shapes (the texel ones have neither): other
         * matrix-vector shapes, as VKLLM_MATVEC_SHAPE selects them when measuring, and
         * prompts through shared-memory tiles (matmul_tiled.comp) where the device has the
         * shared memory: every type, a partial row/token tile, ragged plain rows (33 x 37),
         * a 2 mod 4 byte offset, 512 tokens. */
        if (!gpu_av && ssbo_pass) {
            setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
            setenv("VKLLM_MATVEC_SHAPE", "32,2", 1);
            check_weight_case(dev, GGML_Q4_0, 127, 96, 34, 10, token_counts, 3);
            check_weight_case(dev, GGML_F16, 4097, 64, 0, 11, token_counts, 3);
            /* each subgroup its own rows (where the device has subgroup arithmetic) */
            const char *sg_shapes[] = {"32,2,sg", "64,3,sg"};
            for (size_t k = 0; k < 2 && dev->caps.subgroup_arithmetic; k++) {
                setenv("VKLLM_MATVEC_SHAPE", sg_shapes[k], 1);
                printf("-- VKLLM_MATVEC_SHAPE=%s\n", sg_shapes[k]);
                check_weight_case(dev, GGML_Q4_0, 127, 96, 34, 12, token_counts, 3);
                check_weight_case(dev, GGML_F16, 4097, 64, 0, 13, token_counts, 3);
                check_weight_case(dev, GGML_Q8_0, 33, 2048, 0, 14, token_counts, 2);
            }
            unsetenv("VKLLM_MATVEC_SHAPE");
            for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++) {
                bool plain = ggml_traits(all_types[ti]).block_size == 1;
                check_weight_case(dev, all_types[ti], plain ? 33 : 127, plain ? 37 : 96, 34, 9,
                                  token_counts + 3, 2);
            }
            /* The 128 x 128 tiles (VKLLM_TILED=128): partial row and token tiles, ragged
             * plain rows, several row tiles, 512 tokens. Block decoding is the 64 x 64
             * tile's, checked above on every type: three types (each a cold compile of ~10 s
             * here) cover the tile's own indexing. */
            setenv("VKLLM_TILED", "128", 1);
            printf("-- VKLLM_TILED=128\n");
            const uint32_t large_types[] = {GGML_F32, GGML_Q4_0, GGML_Q4_1};
            for (size_t ti = 0; ti < sizeof large_types / sizeof *large_types; ti++) {
                bool plain = ggml_traits(large_types[ti]).block_size == 1;
                check_weight_case(dev, large_types[ti], plain ? 33 : 127, plain ? 37 : 96, 34, 15,
                                  token_counts + 3, 2);
            }
            check_weight_case(dev, GGML_Q4_0, 4097, 64, 0, 16, token_counts + 3, 2);
            unsetenv("VKLLM_TILED");
            unsetenv("VKLLM_MATMUL_SHAPES");
        }
    }
    /* Several products of one x in one dispatch (decode fusion), on each way of reading
     * weights, with the shapes of this device and the GPU ones. */
    for (int pass = dev->caps.texel_weights ? 0 : 1; pass < 2 && !timing_only; pass++) {
        ssbo_pass = pass == 1;
        printf("-- fused matrix-vector products, weights through %s\n", ssbo_pass ? "storage buffers" : "texel views");
        const uint32_t fused_types[] = {GGML_F32, GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1};
        for (size_t ti = 0; ti < sizeof fused_types / sizeof *fused_types; ti++) {
            if (gpu_av && fused_types[ti] != GGML_F32 && fused_types[ti] != GGML_Q4_1)
                continue;
            check_fused_cases(dev, fused_types[ti], 96, ti % 2 ? 34 : 0, (uint32_t)(40 + ti));
        }
        if (!gpu_av && ssbo_pass) {
            setenv("VKLLM_MATMUL_SHAPES", "gpu", 1);
            printf("-- fused, with VKLLM_MATMUL_SHAPES=gpu\n");
            check_fused_cases(dev, GGML_Q4_0, 96, 34, 50);
            check_fused_cases(dev, GGML_F16, 64, 0, 51);
            if (dev->caps.subgroup_arithmetic) {
                setenv("VKLLM_MATVEC_SHAPE", "32,4,sg", 1);
                printf("-- fused, with VKLLM_MATVEC_SHAPE=32,4,sg\n");
                check_fused_cases(dev, GGML_Q4_1, 96, 34, 52);
                unsetenv("VKLLM_MATVEC_SHAPE");
            }
            unsetenv("VKLLM_MATMUL_SHAPES");
        }
    }
    ssbo_pass = false;

    /* Bad layouts are refused. */
    {
        vkr_buffer b;
        op_weight w;
        if (!vkr_buffer_create(dev, 4096, VKR_MEMORY_DEVICE, &b)) {
            t_check(op_weight_init(dev, GGML_Q4_0, 2, 48, &b, 0, &w) != VKLLM_OK,
                    "op_weight_init refuses cols not a multiple of 32");
            t_check(op_weight_init(dev, GGML_Q4_K, 1, 256, &b, 0, &w) != VKLLM_OK,
                    "op_weight_init refuses an unsupported type");
            t_check(op_weight_init(dev, GGML_F32, 2, 1024, &b, 0, &w) != VKLLM_OK,
                    "op_weight_init refuses a weight larger than its buffer");
            t_check(op_weight_init(dev, GGML_F16, 1, 32, &b, 1, &w) != VKLLM_OK,
                    "op_weight_init refuses an odd offset");
            vkr_buffer_destroy(dev, &b);
        }
    }

    printf("worst matmul error relative to sum|w x| / worst get_rows abs error, per type:\n");
    for (size_t ti = 0; ti < sizeof all_types / sizeof *all_types; ti++)
        printf("  %-5s %.2e / %.2e\n", ggml_traits(all_types[ti]).name, worst_err[all_types[ti]],
               worst_rows_err[all_types[ti]]);

    if ((!profile || !*profile) && !gpu_av && !(timing && !strcmp(timing, "0"))) {
        for (int pass = dev->caps.texel_weights ? 0 : 1; pass < 2; pass++) {
            ssbo_pass = pass == 1;
            time_type(dev, GGML_Q4_0);
            time_type(dev, GGML_F16);
        }
    }
    return t_finish(dev);
}
