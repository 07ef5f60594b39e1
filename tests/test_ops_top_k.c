/* op_top_k against a C sort of the whole row by lib/sampling.c's order (higher logit first,
 * lower id first on equal logits, -0 equal to +0; a NaN first of all): rows of one chunk and
 * of several rounds (152064: Qwen's vocabulary), ties, -0 and +0, -inf, a NaN, +inf, and rows
 * shorter than OP_TOP_K (padded with id 0xffffffff). */
#include "vk_test.h"

typedef struct entry {
    float value;
    uint32_t id;
} entry;

static int ranks_before(const entry *a, const entry *b)
{
    bool an = a->value != a->value, bn = b->value != b->value;
    if (an != bn)
        return an; /* NaN first */
    if (!an && a->value != b->value)
        return a->value > b->value;
    return a->id < b->id;
}

static int cmp_rank(const void *a, const void *b)
{
    return ranks_before(a, b) ? -1 : ranks_before(b, a) ? 1 : 0;
}

typedef enum { RANDOM, TIES, SOME_NEG_INF, ALL_NEG_INF, ONE_NAN, ONE_POS_INF } row_kind;
static const char *const kind_names[] = {"random", "ties with -0/+0", "some -inf", "all -inf", "a NaN",
                                         "a +inf"};

static void check(vkr_device *dev, uint32_t n, row_kind kind)
{
    float *x = malloc((size_t)n * 4);
    entry *want = malloc((size_t)n * sizeof *want);
    t_fill_random(x, n, n * 3 + kind);
    for (uint32_t i = 0; i < n; i++) {
        if (kind == TIES) /* few distinct values; zeros of both signs */
            x[i] = (i % 7 == 0) ? ((i / 7) % 2 ? -0.0f : 0.0f) : roundf(x[i] * 3.0f) / 3.0f;
        if (kind == ALL_NEG_INF || (kind == SOME_NEG_INF && i % 3 == 0))
            x[i] = -INFINITY;
        x[i] *= kind == RANDOM ? 20.0f : 1.0f;
    }
    if (kind == ONE_NAN)
        x[n / 2] = NAN;
    if (kind == ONE_POS_INF)
        x[n - 1] = INFINITY;
    for (uint32_t i = 0; i < n; i++)
        want[i] = (entry){x[i], i};
    qsort(want, n, sizeof *want, cmp_rank);

    op_tensor tx = t_tensor_from(dev, x, (size_t)n * 4), out = t_tensor(dev, OP_TOP_K * 8);
    uint64_t scratch_bytes = op_top_k_scratch_bytes(dev, n);
    op_tensor scratch = t_tensor(dev, scratch_bytes ? scratch_bytes : 16);
    vkr_cmd *cmd = t_begin(dev);
    uint32_t before = vkr_cmd_dispatch_count(cmd);
    vkllm_status s = op_top_k(cmd, dev, tx, n, scratch, out);
    uint32_t dispatches = vkr_cmd_dispatch_count(cmd) - before;
    t_run(cmd);
    char what[96];
    snprintf(what, sizeof what, "top_k of %u (%s)", n, kind_names[kind]);
    if ((uint64_t)n * 4 > dev->caps.max_storage_buffer_range) {
        t_check(s == VKLLM_ERR_UNSUPPORTED, "%s: a row over one binding is refused: %s", what, vk_error_message());
    } else if (s) {
        t_check(0, "%s: %s", what, vk_error_message());
    } else {
        uint32_t got[OP_TOP_K * 2];
        t_read(dev, out, got, sizeof got);
        uint32_t bad = 0, first_bad = OP_TOP_K;
        for (uint32_t i = 0; i < OP_TOP_K; i++) {
            uint32_t id = got[2 * i + 1];
            float v;
            memcpy(&v, &got[2 * i], 4);
            bool ok;
            if (i >= n)
                ok = id == 0xffffffffu;
            else if (want[i].value != want[i].value)
                ok = id == want[i].id && v != v;
            else
                ok = id == want[i].id && v == want[i].value; /* -0 == +0 */
            if (!ok && first_bad == OP_TOP_K)
                first_bad = i;
            bad += !ok;
        }
        t_check(bad == 0, "%s: %u dispatch(es), %u of %u candidates as the sorted row's%s", what, dispatches,
                OP_TOP_K - bad, OP_TOP_K, bad ? " (first wrong: rank " : "");
        if (bad)
            printf("    rank %u: got id %u, want id %u (%g)\n", first_bad, got[2 * first_bad + 1],
                   first_bad < n ? want[first_bad].id : 0xffffffffu, first_bad < n ? want[first_bad].value : 0.0);
    }
    t_tensor_free(dev, tx), t_tensor_free(dev, out), t_tensor_free(dev, scratch);
    free(x), free(want);
}

int main(void)
{
    vkr_device *dev = t_device();
    const uint32_t sizes[] = {1, 5, 63, 64, 65, 1000, 1024, 1025, 4097, 32000, 49152, 152064};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        check(dev, sizes[i], RANDOM);
    check(dev, 3000, TIES);
    check(dev, 50, TIES);
    check(dev, 32000, SOME_NEG_INF);
    check(dev, 100, ALL_NEG_INF);
    check(dev, 5000, ONE_NAN);
    check(dev, 2048, ONE_POS_INF);
    /* bad arguments are refused */
    {
        op_tensor tx = t_tensor(dev, 64), out = t_tensor(dev, OP_TOP_K * 8);
        vkr_cmd *cmd = t_begin(dev);
        t_check(op_top_k(cmd, dev, tx, 0, (op_tensor){0}, out) != VKLLM_OK, "an empty row is refused");
        t_check(op_top_k(cmd, dev, tx, 17, (op_tensor){0}, out) != VKLLM_OK,
                "a row longer than its tensor is refused: %s", vk_error_message());
        t_check(op_top_k(cmd, dev, tx, 16, (op_tensor){0}, (op_tensor){out.buffer, 0, 8}) != VKLLM_OK,
                "an output of less than OP_TOP_K pairs is refused: %s", vk_error_message());
        t_run(cmd);
        t_tensor_free(dev, tx), t_tensor_free(dev, out);
    }
    return t_finish(dev);
}
