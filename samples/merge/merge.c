/* vkllm-merge: merges GGUF models (weighted averaging or TIES) through the vkllm plugin,
 * using only the public ABI (include/vkllm). The merging runs on the CPU; no Vulkan
 * device is needed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

#ifndef VKLLM_BUILD_PLUGIN
#define VKLLM_BUILD_PLUGIN VKLLM_LOADER_DEFAULT_NAME
#endif

enum { MAX_MODELS = 64 };

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -o OUT.gguf [options] MODEL.gguf[:WEIGHT[:DENSITY]] ...\n"
            "  -o, --output PATH       the merged model (written whole or not at all)\n"
            "  --method linear|ties    weighted average (default), or TIES-merging against --base\n"
            "  --base PATH             TIES: the model the others were fine-tuned from\n"
            "  --density D             TIES: fraction of each task vector kept (default 1)\n"
            "  --lambda L              TIES: scale of the merged task vector (default 1)\n"
            "  --no-normalize          do not divide by the sum of the weights\n"
            "  --type f32|f16|q8_0|q4_0  merged matrices' type (default: the first model's; F16 for K-quants)\n"
            "  --plugin PATH           plugin library (default: env VKLLM_PLUGIN, else the built one)\n"
            "The metadata and tokenizer are the first model's. WEIGHT defaults to 1, DENSITY to --density.\n",
            argv0);
}

static int parse_float(const char *what, const char *v, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end) {
        fprintf(stderr, "error: %s expects a number, got '%s'\n", what, v);
        return 0;
    }
    *out = x;
    return 1;
}

static int32_t on_progress(void *user, float p)
{
    int *last = user, percent = (int)(p * 100 + 0.5f);
    if (percent / 10 != *last / 10 || *last < 0) {
        if (*last < 0)
            fputs("merging", stderr);
        for (int step = (*last < 0 ? 0 : *last / 10 + 1) * 10; step <= percent; step += 10)
            fprintf(stderr, " %d%%", step);
        if (percent >= 100)
            fputc('\n', stderr);
        *last = percent;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *base = NULL, *plugin = getenv(VKLLM_LOADER_ENV) ? getenv(VKLLM_LOADER_ENV)
                                                                                  : VKLLM_BUILD_PLUGIN;
    const char *models[MAX_MODELS];
    float weights[MAX_MODELS], densities[MAX_MODELS];
    int has_density[MAX_MODELS];
    char *specs[MAX_MODELS];
    uint32_t n = 0;
    int method = VKLLM_MERGE_LINEAR, normalize = 1, weight_type = VKLLM_WEIGHTS_AS_STORED;
    float density = 1.0f, lambda = 1.0f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes_value = !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--method") ||
                          !strcmp(a, "--base") || !strcmp(a, "--density") || !strcmp(a, "--lambda") ||
                          !strcmp(a, "--type") || !strcmp(a, "--plugin");
        if (takes_value && !v) {
            fprintf(stderr, "error: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(argv[0]);
            return 0;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = v;
        } else if (!strcmp(a, "--method")) {
            if (strcmp(v, "linear") && strcmp(v, "ties")) {
                fprintf(stderr, "error: --method is linear or ties, not '%s'\n", v);
                return 2;
            }
            method = !strcmp(v, "ties") ? VKLLM_MERGE_TIES : VKLLM_MERGE_LINEAR;
        } else if (!strcmp(a, "--base")) {
            base = v;
        } else if (!strcmp(a, "--density")) {
            if (!parse_float(a, v, &density))
                return 2;
        } else if (!strcmp(a, "--lambda")) {
            if (!parse_float(a, v, &lambda))
                return 2;
        } else if (!strcmp(a, "--no-normalize")) {
            normalize = 0;
        } else if (!strcmp(a, "--type")) {
            static const char *const names[] = {"", "f32", "f16", "q8_0", "q4_0"};
            weight_type = -1;
            for (int t = 1; t < 5; t++)
                if (!strcmp(v, names[t]))
                    weight_type = t;
            if (weight_type < 0) {
                fprintf(stderr, "error: --type is f32, f16, q8_0 or q4_0, not '%s'\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--plugin")) {
            plugin = v;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "error: unknown flag %s (see --help)\n", a);
            return 2;
        } else if (n == MAX_MODELS) {
            fprintf(stderr, "error: more than %d models\n", MAX_MODELS);
            return 2;
        } else { /* PATH[:WEIGHT[:DENSITY]] */
            specs[n] = strdup(a);
            char *w = strchr(specs[n], ':'), *dn = w ? strchr(w + 1, ':') : NULL;
            weights[n] = 1.0f;
            has_density[n] = 0;
            if (w)
                *w = 0;
            if (dn)
                *dn = 0;
            if ((w && !parse_float("a model's weight", w + 1, &weights[n])) ||
                (dn && !parse_float("a model's density", dn + 1, &densities[n])))
                return 2;
            has_density[n] = dn != NULL;
            models[n] = specs[n];
            n++;
        }
        if (takes_value)
            i++;
    }
    if (!out || n == 0) {
        fprintf(stderr, "error: %s\n", !out ? "no output given (-o)" : "no models given");
        return 2;
    }
    for (uint32_t m = 0; m < n; m++)
        if (!has_density[m])
            densities[m] = density;

    vkllm_loader loader;
    if (vkllm_loader_open(&loader, plugin, 1, VKLLM_ABI_VERSION) != VKLLM_OK) {
        fprintf(stderr, "error: %s\n", loader.error);
        return 1;
    }
    const vkllm_api *api = loader.api;
    if (!VKLLM_API_HAS(api, merge)) {
        fprintf(stderr, "error: the plugin %s is too old to merge models\n", plugin);
        vkllm_loader_close(&loader);
        return 1;
    }
    vkllm_merge_desc d;
    api->merge_desc_defaults(&d, sizeof d);
    d.method = method;
    d.models = models;
    d.n_models = n;
    d.weights = weights;
    d.densities = densities;
    d.lambda = lambda;
    d.normalize = normalize;
    d.base = base;
    d.out_path = out;
    d.weight_type = weight_type;
    int last = -1;
    d.progress_fn = on_progress;
    d.progress_user = &last;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    vkllm_status s = api->merge(&d);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    int rc = 0;
    if (s) {
        fprintf(stderr, "%serror: %s\n", last >= 0 && last < 100 ? "\n" : "", api->last_error());
        rc = 1;
    } else {
        struct stat st;
        double mib = stat(out, &st) == 0 ? (double)st.st_size / (1 << 20) : 0;
        fprintf(stderr, "merged %u models (%s) into %s: %.1f MiB in %.2f s\n", n,
                method == VKLLM_MERGE_TIES ? "TIES" : "linear", out, mib,
                (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    }
    for (uint32_t m = 0; m < n; m++)
        free(specs[m]);
    vkllm_loader_close(&loader);
    return rc;
}
