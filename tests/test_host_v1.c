/* An "old host": compiled against tests/abi/vkllm_v1.h, the frozen header of ABI
 * version 1, never against include/. It loads today's plugin the simplest way (dlopen +
 * dlsym, no loader helper) and checks that the version-1 layout still works: the table
 * it gets is at least as large as the version-1 table it knows, and the functions it
 * calls write exactly the version-1 structs, nothing past their end.
 *
 * usage: test_host_v1 PLUGIN */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "vkllm_v1.h" /* tests/abi only: the build gives this test no other include path */

#if VKLLM_ABI_VERSION != 1
#error "test_host_v1 must be compiled against the version-1 header"
#endif

static int failures;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        printf("  %s ", (cond) ? "ok  " : "FAIL");                                       \
        printf(__VA_ARGS__);                                                             \
        if (!(cond))                                                                     \
            failures++;                                                                  \
    } while (0)

#define CANARY 0x5A
#define PATTERN 0xA5

/* A struct followed by bytes the plugin must not touch. */
#define GUARDED(T)                                                                       \
    struct {                                                                             \
        T s;                                                                             \
        unsigned char after[256];                                                        \
    }

static int canary_intact(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != CANARY)
            return 0;
    return 1;
}

/* Field `f` of `s` differs from the same field of the PATTERN-filled `pat`: the defaults
 * function wrote it. */
#define WRITTEN(s, pat, f) (memcmp(&(s).f, &(pat).f, sizeof(s).f) != 0)

int main(int argc, char **argv)
{
    void *lib, *sym;
    vkllm_entry_fn entry;
    const vkllm_api *api = NULL;
    vkllm_status st;

    if (argc != 2) {
        fprintf(stderr, "usage: %s PLUGIN\n", argv[0]);
        return 2;
    }
    lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("FAIL: dlopen %s: %s\n", argv[1], dlerror());
        return 1;
    }
    sym = dlsym(lib, VKLLM_ENTRY_SYMBOL);
    if (!sym) {
        printf("FAIL: no symbol %s in %s\n", VKLLM_ENTRY_SYMBOL, argv[1]);
        return 1;
    }
    memcpy(&entry, &sym, sizeof entry);

    st = entry(1, 1, &api);
    CHECK(st == VKLLM_OK && api, "entry(1, 1) gives a table (status %d)\n", (int)st);
    if (st != VKLLM_OK || !api)
        return 1;
    printf("  plugin table %u bytes, version-1 table %zu bytes, ABI version %u\n",
           api->struct_size, sizeof(vkllm_api), api->abi_version);
    CHECK(api->struct_size >= sizeof(vkllm_api), "table is at least the version-1 size\n");
    CHECK(api->abi_version == 1, "negotiated version 1\n");

    {
        int bad = 0;
        for (vkllm_status s = VKLLM_OK; s <= VKLLM_ERR_INTERNAL; s++) {
            const char *str = api->status_string(s);
            if (!str || !str[0])
                bad++;
        }
        CHECK(bad == 0, "status_string non-empty for the %d version-1 codes\n",
              VKLLM_ERR_INTERNAL + 1);
        CHECK(api->status_string(VKLLM_ERR_ABI_VERSION) != api->status_string(VKLLM_OK) &&
                  strcmp(api->status_string(VKLLM_ERR_ABI_VERSION),
                         api->status_string(VKLLM_OK)) != 0,
              "status_string tells codes apart (\"%s\" vs \"%s\")\n",
              api->status_string(VKLLM_ERR_ABI_VERSION), api->status_string(VKLLM_OK));
    }

    /* Each *_defaults must fill every version-1 field and write nothing past the struct. */
    {
        GUARDED(vkllm_instance_desc) g;
        vkllm_instance_desc pat;
        memset(&pat, PATTERN, sizeof pat);
        memcpy(&g.s, &pat, sizeof pat);
        memset(g.after, CANARY, sizeof g.after);
        api->instance_desc_defaults(&g.s, sizeof g.s);
        CHECK(g.s.size == sizeof g.s, "instance_desc_defaults: size %u == %zu\n", g.s.size,
              sizeof g.s);
        CHECK(WRITTEN(g.s, pat, device_name) && WRITTEN(g.s, pat, device_index) &&
                  WRITTEN(g.s, pat, enable_validation) && WRITTEN(g.s, pat, log_fn) &&
                  WRITTEN(g.s, pat, log_user) && WRITTEN(g.s, pat, log_level),
              "instance_desc_defaults: every field written\n");
        CHECK(canary_intact(g.after, sizeof g.after),
              "instance_desc_defaults: nothing written past the version-1 struct\n");
    }
    {
        GUARDED(vkllm_model_params) g;
        vkllm_model_params pat;
        memset(&pat, PATTERN, sizeof pat);
        memcpy(&g.s, &pat, sizeof pat);
        memset(g.after, CANARY, sizeof g.after);
        api->model_params_defaults(&g.s, sizeof g.s);
        CHECK(g.s.size == sizeof g.s, "model_params_defaults: size %u == %zu\n", g.s.size,
              sizeof g.s);
        CHECK(WRITTEN(g.s, pat, path) && WRITTEN(g.s, pat, progress_fn) &&
                  WRITTEN(g.s, pat, progress_user) && WRITTEN(g.s, pat, weight_type),
              "model_params_defaults: every field written\n");
        CHECK(canary_intact(g.after, sizeof g.after),
              "model_params_defaults: nothing written past the version-1 struct\n");
    }
    {
        GUARDED(vkllm_context_params) g;
        vkllm_context_params pat;
        memset(&pat, PATTERN, sizeof pat);
        memcpy(&g.s, &pat, sizeof pat);
        memset(g.after, CANARY, sizeof g.after);
        api->context_params_defaults(&g.s, sizeof g.s);
        CHECK(g.s.size == sizeof g.s, "context_params_defaults: size %u == %zu\n", g.s.size,
              sizeof g.s);
        CHECK(WRITTEN(g.s, pat, n_ctx) && WRITTEN(g.s, pat, n_batch) && WRITTEN(g.s, pat, seed),
              "context_params_defaults: every field written\n");
        CHECK(canary_intact(g.after, sizeof g.after),
              "context_params_defaults: nothing written past the version-1 struct\n");
    }
    {
        GUARDED(vkllm_sampler_params) g;
        vkllm_sampler_params pat;
        memset(&pat, PATTERN, sizeof pat);
        memcpy(&g.s, &pat, sizeof pat);
        memset(g.after, CANARY, sizeof g.after);
        api->sampler_params_defaults(&g.s, sizeof g.s);
        CHECK(g.s.size == sizeof g.s, "sampler_params_defaults: size %u == %zu\n", g.s.size,
              sizeof g.s);
        CHECK(WRITTEN(g.s, pat, temperature) && WRITTEN(g.s, pat, top_k) &&
                  WRITTEN(g.s, pat, top_p) && WRITTEN(g.s, pat, min_p) &&
                  WRITTEN(g.s, pat, repeat_penalty) && WRITTEN(g.s, pat, repeat_last_n),
              "sampler_params_defaults: every field written\n");
        CHECK(canary_intact(g.after, sizeof g.after),
              "sampler_params_defaults: nothing written past the version-1 struct\n");
    }

    CHECK(api->last_error() != NULL, "last_error() is not NULL\n");
    dlclose(lib);
    printf("%s: %d failed checks\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
