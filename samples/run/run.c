/* vkllm-run: generate text with a GGUF model through the vkllm plugin, using only the
 * public ABI (include/vkllm). Flags follow llama.cpp's tools. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

#ifndef VKLLM_BUILD_PLUGIN
#define VKLLM_BUILD_PLUGIN VKLLM_LOADER_DEFAULT_NAME
#endif

typedef struct options {
    const char *model;
    const char *prompt;
    const char *plugin;
    const char *device;
    int n_predict;
    int n_ctx;
    int n_batch;
    int validation;
    int list_devices;
    int verbose;
    int conversation;          /* -cnv: chat turns from stdin, in the model's chat format */
    const char *system_prompt; /* -sys */
    const char *chat_template; /* --chat-template: a format name or a template; NULL: the model's */
    vkllm_lora loras[8];       /* --lora, --lora-scaled */
    uint32_t n_loras;
    unsigned long long seed;
    vkllm_sampler_params sampler;
} options;

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -m MODEL.gguf [-p PROMPT] [options]\n"
            "  -m, --model PATH        GGUF model file\n"
            "  -p, --prompt TEXT       prompt (default: empty, BOS only); with -cnv, the first user turn\n"
            "  -cnv, --conversation    chat: each line of stdin is a user turn (until end of input),\n"
            "                          written in the model's chat template; replies end at end of turn\n"
            "  -sys, --system-prompt TEXT  system message of the conversation\n"
            "  --chat-template NAME    chat format instead of the model's: chatml, llama2, llama2-sys,\n"
            "                          mistral-v1, mistral-v3, mistral-v7, zephyr, gemma, vicuna,\n"
            "                          openchat, deepseek, llama3, phi3, ... (or a template's text)\n"
            "  --lora FILE             LoRA adapter (llama.cpp's GGUF adapter format), added into the weights\n"
            "  --lora-scaled FILE S    the same with scale S (several adapters: repeat the flag)\n"
            "  -n, --n-predict N       tokens to generate (default 128; -1 = until end or context full)\n"
            "  -c, --ctx-size N        context length (default: the model's, at most 4096)\n"
            "  -b, --batch-size N      prompt tokens per submit (default 512)\n"
            "  --temp T                temperature (default 0.8; 0 = greedy)\n"
            "  --top-k N               top-k (default 40; 0 = off)\n"
            "  --top-p P               top-p (default 0.95; 1 = off)\n"
            "  --min-p P               min-p (default 0.05; 0 = off)\n"
            "  --repeat-penalty F      repetition penalty (default 1.0 = off)\n"
            "  --repeat-last-n N       tokens the penalty looks at (default 64)\n"
            "  -s, --seed N            sampler seed (default: time)\n"
            "  --device NAME|INDEX     Vulkan device (default: best; env VKLLM_DEVICE)\n"
            "  --list-devices          list Vulkan devices and exit\n"
            "  --plugin PATH           plugin library (default: env VKLLM_PLUGIN, else the built one)\n"
            "  --validation            enable VK_LAYER_KHRONOS_validation\n"
            "  -v, --verbose           log more\n",
            argv0);
}

static int parse_int(const char *flag, const char *v, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < -1 || x > 1 << 30) {
        fprintf(stderr, "error: %s expects an integer, got '%s'\n", flag, v);
        return 0;
    }
    *out = (int)x;
    return 1;
}

static int parse_float(const char *flag, const char *v, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || *end || end == v) {
        fprintf(stderr, "error: %s expects a number, got '%s'\n", flag, v);
        return 0;
    }
    *out = x;
    return 1;
}

static int parse_args(int argc, char **argv, const vkllm_api *api, options *o)
{
    memset(o, 0, sizeof *o);
    o->n_predict = 128;
    o->n_batch = 512;
    o->seed = (unsigned long long)time(NULL);
    o->plugin = getenv(VKLLM_LOADER_ENV) ? getenv(VKLLM_LOADER_ENV) : VKLLM_BUILD_PLUGIN;
    o->sampler.size = sizeof o->sampler;
    o->sampler.temperature = 0.8f;
    o->sampler.top_k = 40;
    o->sampler.top_p = 0.95f;
    o->sampler.min_p = 0.05f;
    o->sampler.repeat_penalty = 1.0f;
    o->sampler.repeat_last_n = 64;
    (void)api;
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
            o->model = v;
        } else if (FLAG("-p", "--prompt")) {
            NEED_VALUE;
            o->prompt = v;
        } else if (FLAG("-cnv", "--conversation")) {
            o->conversation = 1;
        } else if (FLAG("-sys", "--system-prompt")) {
            NEED_VALUE;
            o->system_prompt = v;
        } else if (!strcmp(a, "--chat-template")) {
            NEED_VALUE;
            o->chat_template = v;
        } else if (!strcmp(a, "--lora") || !strcmp(a, "--lora-scaled")) {
            NEED_VALUE;
            float scale = 1.0f;
            if (!strcmp(a, "--lora-scaled")) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "error: --lora-scaled needs a file and a scale\n");
                    return 0;
                }
                if (!parse_float(a, argv[++i], &scale))
                    return 0;
            }
            if (o->n_loras == sizeof o->loras / sizeof o->loras[0]) {
                fprintf(stderr, "error: more than %zu LoRA adapters\n", sizeof o->loras / sizeof o->loras[0]);
                return 0;
            }
            o->loras[o->n_loras++] = (vkllm_lora){v, scale};
        } else if (FLAG("-n", "--n-predict")) {
            NEED_VALUE;
            if (!parse_int(a, v, &o->n_predict))
                return 0;
        } else if (FLAG("-c", "--ctx-size")) {
            NEED_VALUE;
            if (!parse_int(a, v, &o->n_ctx))
                return 0;
        } else if (FLAG("-b", "--batch-size")) {
            NEED_VALUE;
            if (!parse_int(a, v, &o->n_batch))
                return 0;
        } else if (!strcmp(a, "--temp")) {
            NEED_VALUE;
            if (!parse_float(a, v, &o->sampler.temperature))
                return 0;
        } else if (!strcmp(a, "--top-k")) {
            NEED_VALUE;
            if (!parse_int(a, v, &o->sampler.top_k))
                return 0;
        } else if (!strcmp(a, "--top-p")) {
            NEED_VALUE;
            if (!parse_float(a, v, &o->sampler.top_p))
                return 0;
        } else if (!strcmp(a, "--min-p")) {
            NEED_VALUE;
            if (!parse_float(a, v, &o->sampler.min_p))
                return 0;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NEED_VALUE;
            if (!parse_float(a, v, &o->sampler.repeat_penalty))
                return 0;
        } else if (!strcmp(a, "--repeat-last-n")) {
            NEED_VALUE;
            if (!parse_int(a, v, &o->sampler.repeat_last_n))
                return 0;
        } else if (FLAG("-s", "--seed")) {
            NEED_VALUE;
            char *end;
            o->seed = strtoull(v, &end, 10);
            if (*end || end == v) {
                fprintf(stderr, "error: --seed expects an integer, got '%s'\n", v);
                return 0;
            }
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE;
            o->device = v;
        } else if (!strcmp(a, "--plugin")) {
            NEED_VALUE;
            o->plugin = v;
        } else if (!strcmp(a, "--validation")) {
            o->validation = 1;
        } else if (!strcmp(a, "--list-devices")) {
            o->list_devices = 1;
        } else if (FLAG("-v", "--verbose")) {
            o->verbose = 1;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", a);
            return 0;
        }
    }
    if (!o->model && !o->list_devices) {
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

static int32_t on_progress(void *user, float p)
{
    int *last_percent = user;
    int percent = (int)(p * 100 + 0.5f);
    if (percent == *last_percent)
        return 0; /* redraw only when the number changes */
    if (!isatty(fileno(stderr))) { /* a log file: one line, a mark every 10 % */
        if (*last_percent < 0)
            fputs("loading", stderr);
        for (int step = (*last_percent < 0 ? 0 : *last_percent / 10 + 1) * 10; step <= percent; step += 10)
            fprintf(stderr, " %d%%", step);
        if (percent >= 100)
            fputc('\n', stderr);
        *last_percent = percent;
        return 0;
    }
    *last_percent = percent;
    int width = 40, filled = (int)(p * width + 0.5f);
    fprintf(stderr, "\rloading [");
    for (int i = 0; i < width; i++)
        fputc(i < filled ? '#' : ' ', stderr);
    fprintf(stderr, "] %3d%%", percent);
    if (percent >= 100) /* (the last report may round up from just below 1) */
        fputc('\n', stderr);
    return 0;
}

static void on_log(void *user, int32_t level, const char *msg)
{
    (void)user;
    static const char *names[] = {"error", "warning", "info", "debug"};
    fprintf(stderr, "vkllm %s: %s\n", level >= 0 && level <= 3 ? names[level] : "log", msg);
}

static const char *type_name(int32_t t)
{
    static const char *names[] = {"other", "integrated GPU", "discrete GPU", "virtual GPU", "CPU"};
    return t >= 0 && t <= 4 ? names[t] : "?";
}

typedef struct run_stats {
    size_t n_prompt;
    int n_gen;
    double t_prompt, t_gen;
} run_stats;

/* A growing string. */
typedef struct text_buf {
    char *p;
    size_t len, cap;
} text_buf;

static int text_append(text_buf *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->len + n + 1) * 2;
        char *p = realloc(t->p, cap);
        if (!p)
            return 0;
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = 0;
    return 1;
}

/* Tokenizes `text` and runs the model over it (the prompt, or a chat turn). */
static int feed(const vkllm_api *api, vkllm_model model, vkllm_context ctx, const char *text, size_t len,
                int add_special, uint32_t n_ctx, size_t *n_past, run_stats *st)
{
    size_t cap = len + 8, n_tok = 0;
    vkllm_token *tokens = malloc(cap * sizeof *tokens);
    if (!tokens || api->tokenize(model, text, len, add_special, 1, tokens, cap, &n_tok) != VKLLM_OK) {
        fprintf(stderr, "\nerror: %s\n", tokens ? api->last_error() : "out of memory");
        free(tokens);
        return 0;
    }
    int ok = 0;
    if (n_tok == 0 && *n_past == 0) {
        fprintf(stderr, "error: the prompt is empty and the model adds no BOS token\n");
    } else if (*n_past + n_tok >= n_ctx) {
        fprintf(stderr, "\nerror: the prompt has %zu tokens; the context holds %u (%zu in use)\n", n_tok, n_ctx,
                *n_past);
    } else {
        double t = now_s();
        ok = n_tok == 0 || api->decode(ctx, tokens, n_tok, 0) == VKLLM_OK;
        if (!ok)
            fprintf(stderr, "\nerror: %s\n", api->last_error());
        st->t_prompt += now_s() - t;
        st->n_prompt += n_tok;
        *n_past += n_tok;
    }
    free(tokens);
    return ok;
}

/* Samples and prints up to -n tokens after the last decode, until an end-of-generation
 * token or a full context; the text also goes to `reply` when not NULL. */
static int generate(const vkllm_api *api, vkllm_model model, vkllm_context ctx, const options *o, uint32_t n_ctx,
                    size_t *n_past, run_stats *st, text_buf *reply)
{
    double t = now_s();
    char text[1024];
    for (int n = 0; o->n_predict < 0 || n < o->n_predict; n++) {
        vkllm_token next;
        int32_t end = 0;
        if (api->sample(ctx, &o->sampler, &next) != VKLLM_OK || api->token_is_eog(model, next, &end) != VKLLM_OK) {
            fprintf(stderr, "\nerror: %s\n", api->last_error());
            return 0;
        }
        if (end)
            break;
        size_t n_text;
        if (api->token_to_text_stream(ctx, next, text, sizeof text, &n_text) == VKLLM_OK) {
            fwrite(text, 1, n_text, stdout);
            fflush(stdout);
            if (reply && !text_append(reply, text, n_text)) {
                fprintf(stderr, "\nerror: out of memory\n");
                return 0;
            }
        }
        st->n_gen++;
        if (*n_past + 1 > n_ctx) {
            fprintf(stderr, "\n[context full: %u tokens]\n", n_ctx);
            break;
        }
        if (api->decode(ctx, &next, 1, 0) != VKLLM_OK) {
            fprintf(stderr, "\nerror: %s\n", api->last_error());
            return 0;
        }
        (*n_past)++;
    }
    st->t_gen += now_s() - t;
    return 1;
}

/* Plain completion: the prompt, echoed, then what the model writes after it. */
static int complete(const vkllm_api *api, vkllm_model model, vkllm_context ctx, const options *o, uint32_t n_ctx,
                    run_stats *st)
{
    const char *prompt = o->prompt ? o->prompt : "";
    size_t n_past = 0;
    fputs(prompt, stdout);
    fflush(stdout);
    if (!feed(api, model, ctx, prompt, strlen(prompt), 1, n_ctx, &n_past, st) ||
        !generate(api, model, ctx, o, n_ctx, &n_past, st, NULL))
        return 0;
    printf("\n");
    return 1;
}

/* The conversation so far, in the chat format, with an assistant turn opened. */
static char *format_chat(const vkllm_api *api, vkllm_model model, const options *o, const vkllm_chat_message *msgs,
                         size_t n, size_t *len)
{
    size_t need = 0;
    vkllm_status s = api->chat_apply(model, o->chat_template, msgs, n, 1, NULL, 0, &need);
    char *text = s == VKLLM_ERR_BUFFER_TOO_SMALL || s == VKLLM_OK ? malloc(need + 1) : NULL;
    if (text && api->chat_apply(model, o->chat_template, msgs, n, 1, text, need, len) == VKLLM_OK) {
        text[*len] = 0;
        return text;
    }
    fprintf(stderr, "error: %s\n", text ? api->last_error() : s ? api->last_error() : "out of memory");
    free(text);
    return NULL;
}

/* -cnv: user turns from -p and then stdin, one a line, each answered in turn. The cache
 * keeps the conversation: each turn feeds only the text past what it holds (all of it
 * again when the format rewrites earlier turns). */
static int chat(const vkllm_api *api, vkllm_model model, vkllm_context ctx, const options *o, uint32_t n_ctx,
                run_stats *st)
{
    enum { MAX_MESSAGES = 1024 };
    vkllm_chat_message msgs[MAX_MESSAGES];
    char *owned[MAX_MESSAGES];
    size_t n = 0, n_past = 0;
    text_buf in_cache = {0}; /* the text the context holds */
    int ok = 1, interactive = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t line_cap = 0;
    if (o->system_prompt) {
        owned[n] = NULL;
        msgs[n++] = (vkllm_chat_message){"system", o->system_prompt};
    }
    for (int turn = 0; ok && n + 2 <= MAX_MESSAGES; turn++) {
        const char *user = turn == 0 ? o->prompt : NULL;
        if (!user) {
            if (interactive) {
                printf("\n> ");
                fflush(stdout);
            }
            ssize_t got = getline(&line, &line_cap, stdin);
            if (got < 0)
                break;
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
                line[--got] = 0;
            user = line;
        }
        owned[n] = strdup(user);
        msgs[n] = (vkllm_chat_message){"user", owned[n]};
        n++;
        size_t len = 0;
        char *full = format_chat(api, model, o, msgs, n, &len);
        if (!full) {
            ok = 0;
            break;
        }
        size_t from = in_cache.len;
        if (len < from || memcmp(full, in_cache.p, from) != 0) {
            api->kv_truncate(ctx, 0);
            n_past = from = 0;
        }
        in_cache.len = 0;
        ok = feed(api, model, ctx, full + from, len - from, from == 0, n_ctx, &n_past, st) &&
             text_append(&in_cache, full, len);
        free(full);
        text_buf reply = {0};
        ok = ok && generate(api, model, ctx, o, n_ctx, &n_past, st, &reply) &&
             text_append(&in_cache, reply.p ? reply.p : "", reply.len);
        printf("\n");
        owned[n] = reply.p ? reply.p : strdup("");
        msgs[n] = (vkllm_chat_message){"assistant", owned[n]};
        n++;
    }
    free(line);
    free(in_cache.p);
    for (size_t i = 0; i < n; i++)
        free(owned[i]); /* (NULL for the system message, which is -sys's) */
    return ok;
}

int main(int argc, char **argv)
{
    options o;
    if (!parse_args(argc, argv, NULL, &o))
        return 2;
    vkllm_loader loader;
    if (vkllm_loader_open(&loader, o.plugin, 1, VKLLM_ABI_VERSION) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", loader.error);
        return 1;
    }
    const vkllm_api *api = loader.api;
    int rc = 1;
    vkllm_instance inst = NULL;
    vkllm_model model = NULL;
    vkllm_context ctx = NULL;

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
    if (api->instance_create(&idesc, &inst) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", api->last_error());
        goto done;
    }
    uint32_t n_dev = 0, selected = 0;
    api->device_count(inst, &n_dev);
    api->selected_device(inst, &selected);
    for (uint32_t i = 0; i < n_dev; i++) {
        vkllm_device_info info = {.size = sizeof info};
        if (api->device_info(inst, i, &info) == VKLLM_OK && (o.list_devices || i == selected))
            fprintf(o.list_devices ? stdout : stderr, "%s device %u: %s (%s, %.0f MiB, subgroup %u)\n",
                    i == selected ? "*" : " ", i, info.name, type_name(info.type),
                    (double)info.device_local_memory / (1 << 20), info.subgroup_size);
    }
    if (o.list_devices) {
        rc = 0;
        goto done;
    }

    double t0 = now_s();
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = o.model;
    int last_percent = -1;
    mp.progress_fn = on_progress;
    mp.progress_user = &last_percent;
    if ((o.n_loras ? api->model_load_lora(inst, &mp, o.loras, o.n_loras, &model) : api->model_load(inst, &mp, &model)) !=
        VKLLM_OK) {
        /* End the progress bar's line first, if it was drawn. */
        fprintf(stderr, "%serror: %s\n", last_percent >= 0 && last_percent < 100 ? "\n" : "",
                api->last_error());
        goto done;
    }
    double t_load = now_s() - t0;
    vkllm_model_info info = {.size = sizeof info};
    api->model_info(model, &info);

    vkllm_context_params cp;
    api->context_params_defaults(&cp, sizeof cp);
    cp.n_ctx = o.n_ctx > 0 ? (uint32_t)o.n_ctx : (info.n_ctx_train < 4096 ? info.n_ctx_train : 4096);
    cp.n_batch = o.n_batch > 0 ? (uint32_t)o.n_batch : 512;
    cp.seed = o.seed;
    if (api->context_create(model, &cp, &ctx) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", api->last_error());
        goto done;
    }

    run_stats st = {0};
    if (o.conversation ? !chat(api, model, ctx, &o, cp.n_ctx, &st) : !complete(api, model, ctx, &o, cp.n_ctx, &st))
        goto done;
    fprintf(stderr, "\nload: %.2f s (%.1f MiB of weights, %.1f MiB/s)\n", t_load,
            (double)info.weight_bytes / (1 << 20), (double)info.weight_bytes / (1 << 20) / t_load);
    fprintf(stderr, "prompt: %zu tokens in %.3f s, %.2f tokens/s\n", st.n_prompt, st.t_prompt,
            st.t_prompt > 0 ? st.n_prompt / st.t_prompt : 0.0);
    fprintf(stderr, "generation: %d tokens in %.3f s, %.2f tokens/s\n", st.n_gen, st.t_gen,
            st.n_gen > 0 ? st.n_gen / st.t_gen : 0.0);
    rc = 0;
done:
    if (ctx)
        api->context_free(ctx);
    if (model)
        api->model_free(model);
    if (inst && api->instance_destroy(inst) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", api->last_error());
        rc = 1;
    }
    vkllm_loader_close(&loader);
    return rc;
}
