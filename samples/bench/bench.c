/* vkllm-bench: prompt-processing and generation speed of GGUF models through the vkllm
 * plugin, using only the public ABI (include/vkllm). Flags and tests follow llama.cpp's
 * llama-bench:
 *
 *   ppN  one decode() call of N tokens on an empty context (the model's BOS first when it
 *        has one, then random ids from a fixed seed); t/s = N / wall time of the call.
 *   tgN  a context holding one token (BOS, or a random id), then N decode() calls of one
 *        token each. Like llama-bench the tokens are fed, not sampled (random ids from a
 *        fixed seed): each step's logits are computed (on GPUs with the sampling
 *        candidates, the row staying on the device; on lavapipe read back) but nothing
 *        samples from them, so the figure is the forward pass. t/s = N / wall time of the
 *        N calls.
 *
 * Each test runs once untimed first (lavapipe compiles shaders at the first dispatch and
 * the plugin records a command buffer per batch size), then -r times on the same context,
 * cleared with kv_truncate(ctx, 0). Reported: the median and the range [min-max] of the
 * repetitions' tokens/s. For tg rows the bandwidth bound is measure_bandwidth divided by
 * the model's weight bytes: the tokens/s a decoder reading every weight once per token
 * could reach at the device's streaming read speed (KV-cache reads are not counted).
 *
 * Exit status: 0 done, 1 a failure, 2 bad arguments, 3 no Vulkan loader or device. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

#ifndef VKLLM_BUILD_PLUGIN
#define VKLLM_BUILD_PLUGIN VKLLM_LOADER_DEFAULT_NAME
#endif

#define MAX_LIST 32
#define TEST_SEED 1234u

typedef struct options {
    const char *models[MAX_LIST];
    int n_models;
    int prompts[MAX_LIST];
    int n_prompts;
    int gens[MAX_LIST];
    int n_gens;
    int depths[MAX_LIST]; /* tokens already in the context when a test starts */
    int n_depths;
    int reps;
    int n_batch;
    int json;
    int bandwidth;
    int verbose;
    int validation;
    const char *device;
    const char *plugin;
} options;

/* One op label of a profile: GPU time summed over the dispatches that carry it. */
typedef struct op_time {
    const char *label;
    double ms;
    uint32_t count;
} op_time;

typedef struct profile {
    op_time *ops;
    uint32_t n_ops;
    uint32_t n_dispatches;
    double sum_ms;  /* sum of the dispatch times */
    double wall_ms; /* wall time of the decode call that was profiled */
    uint32_t n_tokens, n_past; /* the profiled call: tokens in it, tokens before it */
} profile;

typedef struct model_run {
    const char *path;
    char name[256];
    char arch[64];
    char type[32];
    int64_t file_type; /* general.file_type, -1 when absent */
    uint64_t file_bytes;
    uint64_t n_params;
    uint64_t weight_bytes;
    double load_s[2];
} model_run;

typedef struct row {
    int model; /* index into the model runs */
    int is_gen;
    int n;
    int depth; /* tokens in the context before the test's */
    double *samples; /* tokens/s of each repetition */
    double *gpu_ms;  /* GPU time of each repetition (sum of its submits) */
    int n_samples;
    double median, min, max, mean, stddev, gpu_ms_median;
    profile prof; /* with -v */
} row;

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -m MODEL.gguf [options]\n"
            "  -m, --model PATH[,PATH]   GGUF model(s); repeatable\n"
            "  -p, --n-prompt N[,N]      prompt tokens per pp test (default 512; 0 = no pp test)\n"
            "  -n, --n-gen N[,N]         generated tokens per tg test (default 128; 0 = no tg test)\n"
            "  -d, --n-depth N[,N]       tokens in the context before each test (default 0)\n"
            "  -r, --repetitions N       timed runs per test (default 5)\n"
            "  -b, --batch-size N        prompt tokens per submit (default 512)\n"
            "  -o, --output md|json      output format (default md)\n"
            "  --device NAME|INDEX       Vulkan device (default: best; env VKLLM_DEVICE)\n"
            "  --plugin PATH             plugin library (default: env VKLLM_PLUGIN, else the built one)\n"
            "  --no-bandwidth            skip the device bandwidth probe\n"
            "  --validation              enable VK_LAYER_KHRONOS_validation (count its messages)\n"
            "  -v, --verbose             per-op GPU time of one decode step and one prompt batch\n"
            "Tests follow llama-bench: pp N decodes N prompt tokens in one call; tg N decodes N\n"
            "single tokens after one, fed without sampling; \"@ dD\" runs them after D tokens of\n"
            "context (decoded once, untimed). t/s is the median [min-max] of -r runs.\n",
            argv0);
}

static int parse_count(const char *flag, const char *v, int min, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > (1 << 20)) {
        fprintf(stderr, "error: %s expects an integer >= %d, got '%s'\n", flag, min, v);
        return 0;
    }
    *out = (int)x;
    return 1;
}

/* "512,1024" -> list. */
static int parse_list(const char *flag, const char *v, int *list, int *n)
{
    char buf[256];
    if (strlen(v) >= sizeof buf) {
        fprintf(stderr, "error: %s: list too long\n", flag);
        return 0;
    }
    strcpy(buf, v);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= MAX_LIST) {
            fprintf(stderr, "error: %s: more than %d values\n", flag, MAX_LIST);
            return 0;
        }
        if (!parse_count(flag, tok, 0, &list[*n]))
            return 0;
        (*n)++;
    }
    return 1;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->reps = 5;
    o->n_batch = 512;
    o->bandwidth = 1;
    o->plugin = getenv(VKLLM_LOADER_ENV) && getenv(VKLLM_LOADER_ENV)[0] ? getenv(VKLLM_LOADER_ENV)
                                                                       : VKLLM_BUILD_PLUGIN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(s, l) (!strcmp(a, s) || !strcmp(a, l))
#define NEED_VALUE                                                                          \
    if (!v) {                                                                               \
        fprintf(stderr, "error: %s needs a value\n", a);                                   \
        return 0;                                                                           \
    }                                                                                       \
    i++
        if (FLAG("-h", "--help")) {
            usage(argv[0]);
            exit(0);
        } else if (FLAG("-m", "--model")) {
            NEED_VALUE;
            /* Split on commas in place: argv strings are writable. */
            for (char *save = NULL, *tok = strtok_r(argv[i], ",", &save); tok;
                 tok = strtok_r(NULL, ",", &save)) {
                if (o->n_models >= MAX_LIST) {
                    fprintf(stderr, "error: more than %d models\n", MAX_LIST);
                    return 0;
                }
                o->models[o->n_models++] = tok;
            }
        } else if (FLAG("-p", "--n-prompt")) {
            NEED_VALUE;
            if (!parse_list(a, v, o->prompts, &o->n_prompts))
                return 0;
        } else if (FLAG("-n", "--n-gen")) {
            NEED_VALUE;
            if (!parse_list(a, v, o->gens, &o->n_gens))
                return 0;
        } else if (FLAG("-d", "--n-depth")) {
            NEED_VALUE;
            if (!parse_list(a, v, o->depths, &o->n_depths))
                return 0;
        } else if (FLAG("-r", "--repetitions")) {
            NEED_VALUE;
            if (!parse_count(a, v, 1, &o->reps))
                return 0;
        } else if (FLAG("-b", "--batch-size")) {
            NEED_VALUE;
            if (!parse_count(a, v, 1, &o->n_batch))
                return 0;
        } else if (FLAG("-o", "--output")) {
            NEED_VALUE;
            if (!strcmp(v, "md"))
                o->json = 0;
            else if (!strcmp(v, "json"))
                o->json = 1;
            else {
                fprintf(stderr, "error: --output expects md or json, got '%s'\n", v);
                return 0;
            }
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE;
            o->device = v;
        } else if (!strcmp(a, "--plugin")) {
            NEED_VALUE;
            o->plugin = v;
        } else if (!strcmp(a, "--no-bandwidth")) {
            o->bandwidth = 0;
        } else if (!strcmp(a, "--validation")) {
            o->validation = 1;
        } else if (FLAG("-v", "--verbose")) {
            o->verbose = 1;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
            return 0;
        }
#undef FLAG
#undef NEED_VALUE
    }
    /* Lists not given take llama-bench's defaults. */
    if (!o->n_prompts)
        o->prompts[o->n_prompts++] = 512;
    if (!o->n_gens)
        o->gens[o->n_gens++] = 128;
    if (!o->n_depths)
        o->depths[o->n_depths++] = 0;
    if (o->n_models == 0) {
        fprintf(stderr, "error: no model given (-m MODEL.gguf)\n");
        return 0;
    }
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* xorshift64*: the same token ids on every run and machine. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1Dull;
}

static void random_tokens(vkllm_token *out, int n, uint32_t n_vocab, vkllm_token bos, uint64_t seed)
{
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < n; i++)
        out[i] = (vkllm_token)(rng_next(&s) % n_vocab);
    if (n > 0 && bos >= 0)
        out[0] = bos;
}

static void on_log(void *user, int32_t level, const char *msg)
{
    (void)user;
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "vkllm %s: %s\n", level >= 0 && level <= 3 ? names[level] : "log", msg);
}

/* llama.cpp's llama_ftype numbering (general.file_type). */
static const char *file_type_name(uint64_t t)
{
    switch (t) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 19: return "IQ2_XXS";
    case 20: return "IQ2_XS";
    case 21: return "Q2_K_S";
    case 22: return "IQ3_XS";
    case 23: return "IQ3_XXS";
    case 24: return "IQ1_S";
    case 25: return "IQ4_NL";
    case 26: return "IQ3_S";
    case 27: return "IQ3_M";
    case 28: return "IQ2_S";
    case 29: return "IQ2_M";
    case 30: return "IQ4_XS";
    case 31: return "IQ1_M";
    case 32: return "BF16";
    case 36: return "TQ1_0";
    case 37: return "TQ2_0";
    default: return NULL;
    }
}

/* The weight type: general.file_type when the file has it, else a guess from the bits
 * per weight on the device (marked with '~'). */
static void weight_type(const vkllm_api *api, vkllm_model model, const vkllm_model_info *info, model_run *m)
{
    uint64_t ft;
    m->file_type = -1;
    if (api->meta_uint(model, "general.file_type", &ft) == VKLLM_OK) {
        m->file_type = (int64_t)ft;
        const char *name = file_type_name(ft);
        if (name)
            snprintf(m->type, sizeof m->type, "%s", name);
        else
            snprintf(m->type, sizeof m->type, "ftype %llu", (unsigned long long)ft);
        return;
    }
    double bpw = info->n_params ? 8.0 * (double)info->weight_bytes / (double)info->n_params : 0;
    if (fabs(bpw - 32) < 0.5)
        snprintf(m->type, sizeof m->type, "~F32");
    else if (fabs(bpw - 16) < 0.5)
        snprintf(m->type, sizeof m->type, "~F16");
    else
        snprintf(m->type, sizeof m->type, "~%.2f bpw", bpw);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median_of(const double *v, int n)
{
    double *s = malloc((size_t)n * sizeof *s);
    if (!s)
        return 0;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static void summarize(row *r)
{
    int n = r->n_samples;
    r->median = median_of(r->samples, n);
    r->gpu_ms_median = median_of(r->gpu_ms, n);
    r->min = r->max = r->samples[0];
    double sum = 0;
    for (int i = 0; i < n; i++) {
        sum += r->samples[i];
        if (r->samples[i] < r->min)
            r->min = r->samples[i];
        if (r->samples[i] > r->max)
            r->max = r->samples[i];
    }
    r->mean = sum / n;
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (r->samples[i] - r->mean) * (r->samples[i] - r->mean);
    r->stddev = n > 1 ? sqrt(ss / (n - 1)) : 0;
}

static int cmp_op(const void *a, const void *b)
{
    const op_time *x = a, *y = b;
    return x->ms > y->ms ? -1 : x->ms < y->ms;
}

/* Reads the per-dispatch times of the context's last submit and sums them by label. */
static vkllm_status read_profile(const vkllm_api *api, vkllm_context ctx, profile *p)
{
    const char *label;
    double ms;
    uint32_t count = 0;
    vkllm_status s = api->profile_entry(ctx, 0, &label, &ms, &count);
    if (s != VKLLM_OK)
        return s;
    p->ops = calloc(count ? count : 1, sizeof *p->ops);
    if (!p->ops)
        return VKLLM_ERR_OUT_OF_HOST_MEMORY;
    p->n_dispatches = count;
    for (uint32_t i = 0; i < count; i++) {
        if ((s = api->profile_entry(ctx, i, &label, &ms, &count)) != VKLLM_OK)
            return s;
        if (!label)
            label = "?";
        uint32_t j = 0;
        while (j < p->n_ops && strcmp(p->ops[j].label, label))
            j++;
        if (j == p->n_ops)
            p->ops[p->n_ops++].label = label;
        p->ops[j].ms += ms;
        p->ops[j].count++;
        p->sum_ms += ms;
    }
    qsort(p->ops, p->n_ops, sizeof *p->ops, cmp_op);
    return VKLLM_OK;
}

static const char *test_name(const row *r, char *buf, size_t n)
{
    if (r->depth)
        snprintf(buf, n, "%s%d @ d%d", r->is_gen ? "tg" : "pp", r->n, r->depth);
    else
        snprintf(buf, n, "%s%d", r->is_gen ? "tg" : "pp", r->n);
    return buf;
}

typedef struct bench {
    const vkllm_api *api;
    const options *o;
    vkllm_instance inst;
    vkllm_device_info dev;
    char driver[64];
    double bandwidth_gbs; /* 0 when not measured */
    uint64_t validation_messages;
    model_run *models;
    int n_models;
    row *rows;
    int n_rows;
} bench;

static void fail_msg(const bench *b, const char *what)
{
    fprintf(stderr, "error: %s: %s\n", what, b->api->last_error());
}

static double bound_ts(const bench *b, const row *r)
{
    const model_run *m = &b->models[r->model];
    /* Weights only: at depth the KV cache is read too. */
    if (!r->is_gen || r->depth || b->bandwidth_gbs <= 0 || m->weight_bytes == 0)
        return 0;
    return b->bandwidth_gbs * 1e9 / (double)m->weight_bytes;
}

static void format_count(uint64_t n, char *buf, size_t len)
{
    if (n >= 1000000000ull)
        snprintf(buf, len, "%.2f B", n / 1e9);
    else if (n >= 1000000ull)
        snprintf(buf, len, "%.2f M", n / 1e6);
    else
        snprintf(buf, len, "%.2f K", n / 1e3);
}

static void print_md_header(void)
{
    printf("| model | type | size | params | test | t/s median [min-max] | bound t/s | %% of bound |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    fflush(stdout);
}

static void print_md_row(const bench *b, const row *r)
{
    const model_run *m = &b->models[r->model];
    char params[32], test[32], bound[32] = "-", frac[32] = "-";
    format_count(m->n_params, params, sizeof params);
    double bt = bound_ts(b, r);
    if (bt > 0) {
        snprintf(bound, sizeof bound, "%.1f", bt);
        snprintf(frac, sizeof frac, "%.2f %%", 100.0 * r->median / bt);
    }
    const char *base = strrchr(m->path, '/') ? strrchr(m->path, '/') + 1 : m->path;
    printf("| %s | %s | %.2f MiB | %s | %s | %.2f [%.2f-%.2f] | %s | %s |\n", base, m->type, m->file_bytes / 1048576.0, params,
           test_name(r, test, sizeof test), r->median, r->min, r->max, bound, frac);
    fflush(stdout);
}

static void print_md_footer(const bench *b)
{
    printf("\ndevice: %s, driver %s, Vulkan %u.%u.%u, plugin %s %s", b->dev.name, b->driver,
           (b->dev.api_version >> 22) & 0x7f, (b->dev.api_version >> 12) & 0x3ff,
           b->dev.api_version & 0xfff, b->api->plugin_name, b->api->plugin_version);
    if (b->bandwidth_gbs > 0)
        printf(", read bandwidth %.2f GB/s (measure_bandwidth)\n", b->bandwidth_gbs);
    else
        printf(", read bandwidth not measured\n");
    printf("repetitions: %d timed after 1 warm-up; batch %d; bound = bandwidth / weight bytes "
           "(every weight read once per token)\n",
           b->o->reps, b->o->n_batch);
    for (int i = 0; i < b->n_models; i++) {
        const model_run *m = &b->models[i];
        double mib = m->weight_bytes / 1048576.0;
        printf("load %s: first %.3f s (%.1f MiB/s), second %.3f s (%.1f MiB/s); %.2f MiB of weights\n",
               m->path, m->load_s[0], mib / m->load_s[0], m->load_s[1], mib / m->load_s[1], mib);
    }
    if (b->o->validation)
        printf("validation messages: %llu\n", (unsigned long long)b->validation_messages);
    for (int i = 0; i < b->n_rows; i++) {
        const row *r = &b->rows[i];
        const profile *p = &r->prof;
        if (!p->ops)
            continue;
        char test[32];
        printf("\nprofile %s %s: one %s call (%u token%s after %u): %u dispatches, GPU sum %.3f ms, "
               "call wall %.3f ms\n\n",
               b->models[r->model].path, test_name(r, test, sizeof test), r->is_gen ? "decode" : "prompt",
               p->n_tokens, p->n_tokens == 1 ? "" : "s", p->n_past, p->n_dispatches, p->sum_ms, p->wall_ms);
        printf("| op | total ms | count | share |\n| --- | ---: | ---: | ---: |\n");
        for (uint32_t j = 0; j < p->n_ops; j++)
            printf("| %s | %.3f | %u | %.1f %% |\n", p->ops[j].label, p->ops[j].ms, p->ops[j].count,
                   p->sum_ms > 0 ? 100.0 * p->ops[j].ms / p->sum_ms : 0.0);
    }
}

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* A JSON number; non-finite values (no run, a zero time) become null. */
static void json_num(double x)
{
    if (isfinite(x))
        printf("%.6g", x);
    else
        printf("null");
}

static void print_json(const bench *b)
{
    printf("[");
    for (int i = 0; i < b->n_rows; i++) {
        const row *r = &b->rows[i];
        const model_run *m = &b->models[r->model];
        char test[32];
        printf("%s\n  {", i ? "," : "");
        printf("\"model\": ");
        json_string(m->path);
        printf(", \"model_name\": ");
        json_string(m->name);
        printf(", \"architecture\": ");
        json_string(m->arch);
        printf(", \"type\": ");
        json_string(m->type);
        printf(", \"file_type\": ");
        if (m->file_type >= 0)
            printf("%lld", (long long)m->file_type);
        else
            printf("null");
        printf(", \"file_bytes\": %llu, \"n_params\": %llu, \"weight_bytes\": %llu",
               (unsigned long long)m->file_bytes, (unsigned long long)m->n_params,
               (unsigned long long)m->weight_bytes);
        printf(", \"load_first_s\": ");
        json_num(m->load_s[0]);
        printf(", \"load_second_s\": ");
        json_num(m->load_s[1]);
        printf(", \"upload_first_mib_s\": ");
        json_num(m->weight_bytes / 1048576.0 / m->load_s[0]);
        printf(", \"upload_second_mib_s\": ");
        json_num(m->weight_bytes / 1048576.0 / m->load_s[1]);
        printf(",\n   \"test\": \"%s\", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, \"n_batch\": %d, "
               "\"repetitions\": %d",
               test_name(r, test, sizeof test), r->is_gen ? 0 : r->n, r->is_gen ? r->n : 0, r->depth, b->o->n_batch,
               r->n_samples);
        printf(", \"ts_median\": ");
        json_num(r->median);
        printf(", \"ts_min\": ");
        json_num(r->min);
        printf(", \"ts_max\": ");
        json_num(r->max);
        printf(", \"ts_mean\": ");
        json_num(r->mean);
        printf(", \"ts_stddev\": ");
        json_num(r->stddev);
        printf(", \"samples_ts\": [");
        for (int j = 0; j < r->n_samples; j++) {
            printf("%s", j ? ", " : "");
            json_num(r->samples[j]);
        }
        printf("], \"gpu_ms_median\": ");
        json_num(r->gpu_ms_median);
        printf(",\n   \"device\": ");
        json_string(b->dev.name);
        printf(", \"driver_version\": ");
        json_string(b->driver);
        printf(", \"driver_version_raw\": %u, \"vulkan_api\": \"%u.%u.%u\", \"plugin\": ", b->dev.driver_version,
               (b->dev.api_version >> 22) & 0x7f, (b->dev.api_version >> 12) & 0x3ff,
               b->dev.api_version & 0xfff);
        json_string(b->api->plugin_name);
        printf(", \"plugin_version\": ");
        json_string(b->api->plugin_version);
        printf(", \"bandwidth_gbs\": ");
        if (b->bandwidth_gbs > 0)
            json_num(b->bandwidth_gbs);
        else
            printf("null");
        double bt = bound_ts(b, r);
        printf(", \"bound_ts\": ");
        if (bt > 0)
            json_num(bt);
        else
            printf("null");
        printf(", \"bound_fraction\": ");
        if (bt > 0)
            json_num(r->median / bt);
        else
            printf("null");
        if (b->o->validation)
            printf(", \"validation_messages\": %llu", (unsigned long long)b->validation_messages);
        if (r->prof.ops) {
            const profile *p = &r->prof;
            printf(",\n   \"profile\": {\"n_tokens\": %u, \"n_past\": %u, \"dispatches\": %u, \"gpu_sum_ms\": ",
                   p->n_tokens, p->n_past, p->n_dispatches);
            json_num(p->sum_ms);
            printf(", \"wall_ms\": ");
            json_num(p->wall_ms);
            printf(", \"ops\": [");
            for (uint32_t j = 0; j < p->n_ops; j++) {
                printf("%s{\"label\": ", j ? ", " : "");
                json_string(p->ops[j].label);
                printf(", \"ms\": ");
                json_num(p->ops[j].ms);
                printf(", \"count\": %u, \"share\": ", p->ops[j].count);
                json_num(p->sum_ms > 0 ? p->ops[j].ms / p->sum_ms : 0);
                printf("}");
            }
            printf("]}");
        }
        printf("}");
    }
    printf("\n]\n");
}

static void format_driver(const vkllm_device_info *d, char *buf, size_t n)
{
    uint32_t v = d->driver_version;
    if (d->vendor_id == 0x10DE) /* NVIDIA: 10.8.8.6 bits */
        snprintf(buf, n, "%u.%u.%u.%u", v >> 22, (v >> 14) & 0xff, (v >> 6) & 0xff, v & 0x3f);
    else /* Mesa and most others: VK_MAKE_VERSION */
        snprintf(buf, n, "%u.%u.%u", v >> 22, (v >> 12) & 0x3ff, v & 0xfff);
}

static int load_model(bench *b, const char *path, vkllm_model *out, double *seconds)
{
    vkllm_model_params mp;
    b->api->model_params_defaults(&mp, sizeof mp);
    mp.path = path;
    double t0 = now_s();
    if (b->api->model_load(b->inst, &mp, out) != VKLLM_OK) {
        fail_msg(b, path);
        return 0;
    }
    *seconds = now_s() - t0;
    return 1;
}

/* One pp run: n tokens in one call after the first `depth` tokens of the context. */
static int run_prompt(bench *b, vkllm_context ctx, int depth, const vkllm_token *toks, int n, double *secs,
                      double *gpu_ms)
{
    const vkllm_api *api = b->api;
    const float *logits;
    uint32_t rows, nv;
    if (api->kv_truncate(ctx, (uint32_t)depth) != VKLLM_OK) {
        fail_msg(b, "kv_truncate");
        return 0;
    }
    double t0 = now_s();
    if (api->decode(ctx, toks, (size_t)n, 0) != VKLLM_OK || api->logits(ctx, &logits, &rows, &nv) != VKLLM_OK) {
        fail_msg(b, "decode");
        return 0;
    }
    *secs = now_s() - t0;
    vkllm_context_stats st = {.size = sizeof st};
    *gpu_ms = api->context_stats(ctx, &st) == VKLLM_OK ? st.gpu_ms_last : 0;
    return 1;
}

/* One tg run after the first `depth` tokens of the context: toks[0] untimed, then
 * toks[1..n] one call each. *last_ms gets the wall time of the last call (the one a profile
 * would read). */
static int run_gen(bench *b, vkllm_context ctx, int depth, const vkllm_token *toks, int n, double *secs,
                   double *gpu_ms, double *last_ms)
{
    const vkllm_api *api = b->api;
    const float *logits;
    uint32_t rows, nv;
    volatile float sink = 0;
    if (api->kv_truncate(ctx, (uint32_t)depth) != VKLLM_OK || api->decode(ctx, toks, 1, 0) != VKLLM_OK) {
        fail_msg(b, "decode");
        return 0;
    }
    double gpu = 0, t0 = now_s(), t_step = t0;
    for (int i = 1; i <= n; i++) {
        t_step = now_s();
        if (api->decode(ctx, &toks[i], 1, 0) != VKLLM_OK || api->logits(ctx, &logits, &rows, &nv) != VKLLM_OK) {
            fail_msg(b, "decode");
            return 0;
        }
        sink += logits[0]; /* the logits are there to read; nothing samples from them */
        vkllm_context_stats st = {.size = sizeof st};
        if (api->context_stats(ctx, &st) == VKLLM_OK)
            gpu += st.gpu_ms_last;
    }
    double t1 = now_s();
    (void)sink;
    *secs = t1 - t0;
    *gpu_ms = gpu;
    *last_ms = (t1 - t_step) * 1e3;
    return 1;
}

/* Test r (its tokens in toks): a warm-up, then the timed repetitions; with -v the profile of
 * the last repetition's last call. Prints its markdown row. */
static int run_test(bench *b, vkllm_context ctx, row *r, const vkllm_token *toks)
{
    const options *o = b->o;
    const char *path = b->models[r->model].path;
    char test[32];
    test_name(r, test, sizeof test);
    if (o->verbose)
        fprintf(stderr, "bench: %s %s: warm-up\n", path, test);
    for (int rep = -1; rep < o->reps; rep++) { /* -1: the warm-up */
        double secs, gpu, last_ms = 0;
        if (!(r->is_gen ? run_gen(b, ctx, r->depth, toks, r->n, &secs, &gpu, &last_ms)
                        : run_prompt(b, ctx, r->depth, toks, r->n, &secs, &gpu)))
            return 0;
        if (rep < 0)
            continue;
        r->samples[rep] = r->n / secs;
        r->gpu_ms[rep] = gpu;
        r->n_samples++;
        if (o->verbose)
            fprintf(stderr, "bench: %s %s: run %d: %.3f s, %.2f t/s, GPU %.1f ms\n", path, test, rep + 1, secs,
                    r->n / secs, gpu);
        if (o->verbose && rep == o->reps - 1) {
            profile *pr = &r->prof;
            if (r->is_gen) { /* the last decode step */
                pr->wall_ms = last_ms;
                pr->n_tokens = 1;
                pr->n_past = (uint32_t)(r->depth + r->n);
            } else { /* the prompt's last batch */
                pr->wall_ms = secs * 1e3;
                pr->n_past = (uint32_t)(r->depth + r->n - (r->n - 1) % o->n_batch - 1);
                pr->n_tokens = (uint32_t)(r->depth + r->n) - pr->n_past;
            }
            if (read_profile(b->api, ctx, pr) != VKLLM_OK)
                fprintf(stderr, "warning: no profile: %s\n", b->api->last_error());
        }
    }
    summarize(r);
    if (!o->json)
        print_md_row(b, r);
    return 1;
}

static int add_row(bench *b, int model, int is_gen, int n, int depth, row **out)
{
    row *grown = realloc(b->rows, (size_t)(b->n_rows + 1) * sizeof *grown);
    if (!grown)
        return 0;
    b->rows = grown;
    row *r = &b->rows[b->n_rows++];
    memset(r, 0, sizeof *r);
    r->model = model;
    r->is_gen = is_gen;
    r->n = n;
    r->depth = depth;
    r->samples = calloc((size_t)b->o->reps, sizeof *r->samples);
    r->gpu_ms = calloc((size_t)b->o->reps, sizeof *r->gpu_ms);
    *out = r;
    return r->samples && r->gpu_ms;
}

static int bench_model(bench *b, int mi)
{
    const vkllm_api *api = b->api;
    const options *o = b->o;
    model_run *m = &b->models[mi];
    vkllm_model model = NULL;
    vkllm_context ctx = NULL;
    vkllm_token *toks = NULL;
    int ok = 0;

    m->path = o->models[mi];
    struct stat stt;
    if (stat(m->path, &stt) != 0) {
        fprintf(stderr, "error: %s: %s\n", m->path, strerror(errno));
        return 0;
    }
    m->file_bytes = (uint64_t)stt.st_size;
    /* Load twice: the second load finds the file in the page cache. */
    if (!load_model(b, m->path, &model, &m->load_s[0]))
        return 0;
    api->model_free(model);
    model = NULL;
    if (!load_model(b, m->path, &model, &m->load_s[1]))
        return 0;
    vkllm_model_info info = {.size = sizeof info};
    if (api->model_info(model, &info) != VKLLM_OK) {
        fail_msg(b, "model_info");
        goto done;
    }
    snprintf(m->name, sizeof m->name, "%s", info.name);
    snprintf(m->arch, sizeof m->arch, "%s", info.architecture);
    m->n_params = info.n_params;
    m->weight_bytes = info.weight_bytes;
    weight_type(api, model, &info, m);

    int longest = 1, deepest = 0;
    for (int i = 0; i < o->n_prompts; i++)
        longest = o->prompts[i] > longest ? o->prompts[i] : longest;
    for (int i = 0; i < o->n_gens; i++)
        longest = o->gens[i] + 1 > longest ? o->gens[i] + 1 : longest;
    for (int i = 0; i < o->n_depths; i++)
        deepest = o->depths[i] > deepest ? o->depths[i] : deepest;
    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = (uint32_t)(deepest + longest);
    cp.n_batch = (uint32_t)o->n_batch;
    cp.seed = TEST_SEED;
    if (api->context_create(model, &cp, &ctx) != VKLLM_OK) {
        fail_msg(b, "context_create");
        goto done;
    }
    toks = malloc((size_t)(deepest > longest + 1 ? deepest : longest + 1) * sizeof *toks);
    if (!toks)
        goto done;

    for (int di = 0; di < o->n_depths; di++) {
        int depth = o->depths[di];
        if (depth > 0) { /* the context the tests start from, decoded once */
            random_tokens(toks, depth, info.n_vocab, info.bos, TEST_SEED + 104729u * (uint64_t)depth);
            if (o->verbose)
                fprintf(stderr, "bench: %s: filling %d tokens of context\n", m->path, depth);
            if (api->kv_truncate(ctx, 0) != VKLLM_OK || api->decode(ctx, toks, (size_t)depth, 0) != VKLLM_OK) {
                fail_msg(b, "decode (depth)");
                goto done;
            }
        }
        for (int is_gen = 0; is_gen < 2; is_gen++) { /* the pp tests, then the tg ones */
            const int *sizes = is_gen ? o->gens : o->prompts;
            for (int t = 0; t < (is_gen ? o->n_gens : o->n_prompts); t++) {
                int n = sizes[t];
                if (n <= 0)
                    continue;
                row *r;
                if (!add_row(b, mi, is_gen, n, depth, &r))
                    goto done;
                random_tokens(toks, is_gen ? n + 1 : n, info.n_vocab, info.bos,
                              TEST_SEED + (is_gen ? 7919u : 1u) * (uint64_t)n);
                if (!run_test(b, ctx, r, toks))
                    goto done;
            }
        }
    }
    ok = 1;
done:
    free(toks);
    if (ctx)
        api->context_free(ctx);
    api->model_free(model);
    return ok;
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, &o))
        return 2;
    vkllm_loader loader;
    if (vkllm_loader_open(&loader, o.plugin, 1, VKLLM_ABI_VERSION) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", loader.error);
        return 1;
    }
    bench b;
    memset(&b, 0, sizeof b);
    b.api = loader.api;
    b.o = &o;
    const vkllm_api *api = b.api;
    int rc = 1;

    vkllm_instance_desc idesc;
    api->instance_desc_defaults(&idesc, sizeof idesc);
    idesc.enable_validation = o.validation;
    idesc.log_fn = on_log;
    idesc.log_level = o.verbose ? VKLLM_LOG_INFO : VKLLM_LOG_WARN;
    if (o.device) {
        char *end;
        long idx = strtol(o.device, &end, 10);
        if (*end == '\0')
            idesc.device_index = (int32_t)idx;
        else
            idesc.device_name = o.device;
    }
    vkllm_status s = api->instance_create(&idesc, &b.inst);
    if (s != VKLLM_OK) {
        fail_msg(&b, "instance_create");
        rc = (s == VKLLM_ERR_NO_VULKAN_LOADER || s == VKLLM_ERR_NO_DEVICE) ? 3 : 1;
        goto done;
    }
    uint32_t selected = 0;
    b.dev.size = sizeof b.dev;
    if (api->selected_device(b.inst, &selected) != VKLLM_OK || api->device_info(b.inst, selected, &b.dev) != VKLLM_OK) {
        fail_msg(&b, "device_info");
        goto done;
    }
    format_driver(&b.dev, b.driver, sizeof b.driver);
    if (o.verbose)
        fprintf(stderr, "bench: device %u: %s, driver %s\n", selected, b.dev.name, b.driver);
    if (o.bandwidth) {
        s = api->measure_bandwidth(b.inst, 0, &b.bandwidth_gbs);
        if (s != VKLLM_OK) {
            fprintf(stderr, "warning: measure_bandwidth: %s\n", api->last_error());
            b.bandwidth_gbs = 0;
        }
    }

    b.models = calloc((size_t)o.n_models, sizeof *b.models);
    if (!b.models)
        goto done;
    if (!o.json)
        print_md_header();
    for (int i = 0; i < o.n_models; i++) {
        b.n_models = i + 1;
        if (!bench_model(&b, i))
            goto done;
    }
    if (o.validation) {
        vkllm_instance_stats st = {.size = sizeof st};
        if (api->instance_stats(b.inst, &st) == VKLLM_OK)
            b.validation_messages = st.validation_messages;
    }
    if (o.json)
        print_json(&b);
    else
        print_md_footer(&b);
    rc = 0;
done:
    for (int i = 0; i < b.n_rows; i++) {
        free(b.rows[i].samples);
        free(b.rows[i].gpu_ms);
        free(b.rows[i].prof.ops);
    }
    free(b.rows);
    free(b.models);
    if (b.inst && api->instance_destroy(b.inst) != VKLLM_OK) {
        fail_msg(&b, "instance_destroy");
        rc = 1;
    }
    vkllm_loader_close(&loader);
    return rc;
}
