/* A host program that knows vkllm only through include/ (vkllm.h + vkllm_loader.h), the
 * way an application would: it opens the plugin by path and talks to it through the table.
 *
 * usage: test_host loader  PLUGIN NOT_A_PLUGIN FAKE_PLUGIN
 *            loading, version negotiation and every loader error, no Vulkan needed
 *        test_host devices PLUGIN
 *            instance creation and device enumeration; exit 77 (skip) when the machine
 *            has no Vulkan loader or device, after checking that the plugin says so */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"

static int failures;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (cond) {                                                                      \
            printf("  ok   " __VA_ARGS__);                                               \
        } else {                                                                         \
            printf("  FAIL " __VA_ARGS__);                                               \
            printf("       (%s:%d: %s)\n", __FILE__, __LINE__, #cond);                   \
            failures++;                                                                  \
        }                                                                                \
    } while (0)

/* Every field of the version-1 table; the plugin must fill all of them. */
#define API_V1_FUNCTIONS(X)                                                              \
    X(status_string) X(last_error) X(instance_desc_defaults) X(instance_create)          \
    X(instance_destroy) X(instance_error) X(device_count) X(device_info)                 \
    X(selected_device) X(instance_stats) X(model_params_defaults) X(model_load)          \
    X(model_free) X(model_error) X(model_info) X(meta_count) X(meta_key) X(meta_type)    \
    X(meta_uint) X(meta_int) X(meta_float) X(meta_string) X(tokenize) X(detokenize)      \
    X(token_text) X(context_params_defaults) X(context_create) X(context_free)           \
    X(context_error) X(decode) X(logits) X(sampler_params_defaults) X(sample)            \
    X(token_to_text_stream) X(kv_truncate) X(context_stats) X(measure_bandwidth) X(profile_entry) \
    X(chat_apply) X(token_is_eog) X(merge_desc_defaults) X(merge) X(model_load_lora)

/* Opens `path` with [lo, hi] and checks the status and that the message contains each
 * of the non-NULL `want` strings. The loader is left closed. */
static void expect_open_failure(const char *what, const char *path, uint32_t lo, uint32_t hi,
                                vkllm_status want_status, const char *want1,
                                const char *want2)
{
    vkllm_loader l;
    vkllm_status st = vkllm_loader_open(&l, path, lo, hi);
    printf("%s: status %d, error \"%s\"\n", what, (int)st, l.error);
    CHECK(st == want_status, "status is %d (want %d)\n", (int)st, (int)want_status);
    CHECK(l.lib == NULL && l.api == NULL, "loader left closed\n");
    if (want1)
        CHECK(strstr(l.error, want1) != NULL, "message contains \"%s\"\n", want1);
    if (want2)
        CHECK(strstr(l.error, want2) != NULL, "message contains \"%s\"\n", want2);
    vkllm_loader_close(&l);
}

static int test_loader(const char *plugin, const char *not_plugin, const char *fake)
{
    vkllm_loader l, l2;
    vkllm_status st;
    char buf[600], text_path[64];
    int fd;

    printf("plugin: %s\n", plugin);
    st = vkllm_loader_open(&l, plugin, 1, VKLLM_ABI_VERSION);
    CHECK(st == VKLLM_OK, "opens with ABI range 1..%u (status %d, error \"%s\")\n",
          VKLLM_ABI_VERSION, (int)st, l.error);
    if (st != VKLLM_OK)
        return 1;
    printf("  %s %s, ABI version %u, table %u bytes (this host's: %zu)\n",
           l.api->plugin_name ? l.api->plugin_name : "(null)",
           l.api->plugin_version ? l.api->plugin_version : "(null)", l.abi_version,
           l.api->struct_size, sizeof(vkllm_api));
    CHECK(l.abi_version == VKLLM_ABI_VERSION && l.api->abi_version == VKLLM_ABI_VERSION,
          "negotiated the highest common version %u\n", VKLLM_ABI_VERSION);
    CHECK(l.api->struct_size >= sizeof(vkllm_api), "table is at least this header's size\n");
    CHECK(l.api->plugin_name && l.api->plugin_name[0], "plugin_name is set\n");
    CHECK(l.api->plugin_version && l.api->plugin_version[0], "plugin_version is set\n");
    {
        int missing = 0;
#define HAS(f)                                                                           \
    if (!VKLLM_API_HAS(l.api, f)) {                                                      \
        printf("       missing table field %s\n", #f);                                   \
        missing++;                                                                       \
    }
        API_V1_FUNCTIONS(HAS)
#undef HAS
        CHECK(missing == 0, "every version-1 table field is present (%d missing)\n", missing);
    }

    /* Status strings: never NULL, for known and unknown codes alike. */
    {
        int bad = 0;
        for (vkllm_status s = -2; s <= VKLLM_ERR_INTERNAL + 3; s++) {
            const char *str = l.api->status_string(s);
            if (!str || !str[0]) {
                printf("       status_string(%d) is %s\n", (int)s, str ? "empty" : "NULL");
                bad++;
            } else if (s >= VKLLM_OK && s <= VKLLM_ERR_INTERNAL) {
                printf("       %2d: %s\n", (int)s, str);
            }
        }
        CHECK(bad == 0, "status_string is non-empty for codes -2..%d\n", VKLLM_ERR_INTERNAL + 3);
        CHECK(l.api->status_string(INT32_MIN) != NULL, "status_string(INT32_MIN) is not NULL\n");
        CHECK(l.api->last_error() != NULL, "last_error() is not NULL\n");
    }

    /* Chat formats need no instance or model when named (lib/chat.c is tested against
     * llama.cpp by test_chat; this checks the table's entry and its errors). */
    {
        vkllm_chat_message msgs[2] = {{"system", "Be brief."}, {"user", "Hi"}};
        char text[256];
        size_t n = 0;
        const char *want = "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                           "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n";
        vkllm_status cs = l.api->chat_apply(NULL, "llama3", msgs, 2, 1, text, sizeof text, &n);
        CHECK(cs == VKLLM_OK && n == strlen(want) && !memcmp(text, want, n), "chat_apply(NULL, \"llama3\")\n");
        cs = l.api->chat_apply(NULL, "{{ messages }}", msgs, 2, 1, text, sizeof text, &n);
        CHECK(cs == VKLLM_ERR_UNSUPPORTED && strstr(l.api->last_error(), "chatml"),
              "an unknown template is refused, listing the formats: %s\n", l.api->last_error());
        cs = l.api->chat_apply(NULL, NULL, msgs, 2, 1, text, sizeof text, &n);
        CHECK(cs == VKLLM_ERR_INVALID_ARGUMENT, "no model and no template: invalid argument\n");
    }

    /* The table is static: a second open gets the same one. */
    st = vkllm_loader_open(&l2, plugin, 1, VKLLM_ABI_VERSION);
    CHECK(st == VKLLM_OK && l2.api == l.api, "a second open returns the same table\n");
    vkllm_loader_close(&l2);
    vkllm_loader_close(&l);
    CHECK(l.lib == NULL && l.api == NULL, "close clears the loader\n");
    vkllm_loader_close(&l); /* twice is allowed */
    vkllm_loader_close(NULL);

    /* Failures, each with its own status and message. */
    expect_open_failure("missing file", "/nonexistent-vkllm-dir/libvkllm_vulkan.so", 1,
                        VKLLM_ABI_VERSION, VKLLM_ERR_IO,
                        "no such file: /nonexistent-vkllm-dir/libvkllm_vulkan.so", NULL);

    snprintf(text_path, sizeof text_path, "/tmp/vkllm-test-host-XXXXXX");
    fd = mkstemp(text_path);
    CHECK(fd >= 0, "created a text file %s\n", text_path);
    if (fd >= 0) {
        const char text[] = "this is a text file, not a shared library\n";
        CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1), "wrote it\n");
        close(fd);
        expect_open_failure("text file", text_path, 1, VKLLM_ABI_VERSION, VKLLM_ERR_BAD_FILE,
                            "cannot load", text_path);
        unlink(text_path);
    }
    expect_open_failure("a directory", "/tmp", 1, VKLLM_ABI_VERSION, VKLLM_ERR_BAD_FILE,
                        "cannot load /tmp as a library", NULL);

    snprintf(buf, sizeof buf, "%s is not a vkllm plugin: no symbol vkllm_entry", not_plugin);
    expect_open_failure("shared library without the entry", not_plugin, 1, VKLLM_ABI_VERSION,
                        VKLLM_ERR_BAD_FILE, buf, NULL);

    snprintf(buf, sizeof buf, "..%u, host needs 999..999", VKLLM_ABI_VERSION);
    expect_open_failure("ABI range 999..999", plugin, 999, 999, VKLLM_ERR_ABI_VERSION,
                        "plugin serves ABI versions ", buf);

    expect_open_failure("min above max", plugin, 2, 1, VKLLM_ERR_INVALID_ARGUMENT,
                        "minimum above maximum", NULL);
    expect_open_failure("NULL path", NULL, 1, 1, VKLLM_ERR_INVALID_ARGUMENT, "no plugin path",
                        NULL);
    CHECK(vkllm_loader_open(NULL, plugin, 1, 1) == VKLLM_ERR_INVALID_ARGUMENT,
          "NULL loader is refused\n");

    /* A misbehaving plugin reaches the remaining checks. */
    setenv("VKLLM_FAKE_PLUGIN_MODE", "range", 1);
    expect_open_failure("fake plugin serving 3..5", fake, 1, 2, VKLLM_ERR_ABI_VERSION,
                        "plugin serves ABI versions 3..5, host needs 1..2", NULL);
    st = vkllm_loader_open(&l, fake, 4, 9);
    CHECK(st == VKLLM_OK && l.abi_version == 5,
          "fake plugin serving 3..5 with host 4..9 negotiates 5 (got status %d, version %u)\n",
          (int)st, l.abi_version);
    vkllm_loader_close(&l);
    setenv("VKLLM_FAKE_PLUGIN_MODE", "small", 1);
    expect_open_failure("table too small", fake, 1, 1, VKLLM_ERR_ABI_VERSION,
                        "plugin table is 16 bytes, smaller than the", "of ABI version 1");
    setenv("VKLLM_FAKE_PLUGIN_MODE", "null", 1);
    expect_open_failure("no table", fake, 1, 1, VKLLM_ERR_ABI_VERSION, "returned no table",
                        NULL);
    setenv("VKLLM_FAKE_PLUGIN_MODE", "fail", 1);
    expect_open_failure("entry fails", fake, 1, 1, VKLLM_ERR_INTERNAL,
                        "vkllm_entry(1, 1) failed with status 16", NULL);
    setenv("VKLLM_FAKE_PLUGIN_MODE", "liar", 1);
    expect_open_failure("version outside the range", fake, 1, 2, VKLLM_ERR_ABI_VERSION,
                        "plugin chose ABI version 7, outside the host's range 1..2", NULL);
    unsetenv("VKLLM_FAKE_PLUGIN_MODE");

    /* Default path. */
    unsetenv(VKLLM_LOADER_ENV);
    CHECK(strcmp(vkllm_loader_default_path(), VKLLM_LOADER_DEFAULT_NAME) == 0,
          "default path without %s is %s\n", VKLLM_LOADER_ENV, VKLLM_LOADER_DEFAULT_NAME);
    setenv(VKLLM_LOADER_ENV, plugin, 1);
    CHECK(strcmp(vkllm_loader_default_path(), plugin) == 0, "default path follows %s\n",
          VKLLM_LOADER_ENV);
    unsetenv(VKLLM_LOADER_ENV);
    return 0;
}

static const char *device_type_name(int32_t t)
{
    switch (t) {
    case VKLLM_DEVICE_OTHER: return "other";
    case VKLLM_DEVICE_INTEGRATED: return "integrated";
    case VKLLM_DEVICE_DISCRETE: return "discrete";
    case VKLLM_DEVICE_VIRTUAL: return "virtual";
    case VKLLM_DEVICE_CPU: return "cpu";
    default: return "INVALID";
    }
}

/* Preference of vkllm_instance_desc's automatic choice: discrete > integrated > virtual >
 * CPU (> other). */
static int device_rank(int32_t t)
{
    switch (t) {
    case VKLLM_DEVICE_DISCRETE: return 4;
    case VKLLM_DEVICE_INTEGRATED: return 3;
    case VKLLM_DEVICE_VIRTUAL: return 2;
    case VKLLM_DEVICE_CPU: return 1;
    default: return 0;
    }
}

static void print_features(uint32_t f)
{
    static const char *names[] = {"fp16-arithmetic", "storage-16bit", "storage-8bit",
                                  "int8-arithmetic", "subgroup-arithmetic", "subgroup-shuffle",
                                  "cooperative-matrix", "integer-dot-product",
                                  "subgroup-size-control"};
    printf("       features 0x%03x:", (unsigned)f);
    for (unsigned i = 0; i < sizeof names / sizeof names[0]; i++)
        if (f & (1u << i))
            printf(" %s", names[i]);
    printf("\n");
}

static int test_devices(const char *plugin)
{
    vkllm_loader l;
    const vkllm_api *api;
    vkllm_instance_desc desc;
    vkllm_instance inst = NULL;
    vkllm_status st;
    uint32_t count = 0, selected = UINT32_MAX;
    int best_rank = -1, selected_rank = -1;

    st = vkllm_loader_open(&l, plugin, 1, VKLLM_ABI_VERSION);
    CHECK(st == VKLLM_OK, "opens %s (%s)\n", plugin, l.error);
    if (st != VKLLM_OK)
        return 1;
    api = l.api;

    memset(&desc, 0xA5, sizeof desc);
    api->instance_desc_defaults(&desc, sizeof desc);
    CHECK(desc.size == sizeof desc, "instance_desc_defaults sets size %u (want %zu)\n",
          desc.size, sizeof desc);
    desc.enable_validation = 0;
    st = api->instance_create(&desc, &inst);
    if (st == VKLLM_ERR_NO_DEVICE || st == VKLLM_ERR_NO_VULKAN_LOADER) {
        const char *msg = api->last_error();
        printf("instance_create: %s: %s\n", api->status_string(st), msg);
        CHECK(msg && msg[0], "the failure comes with a message\n");
        vkllm_loader_close(&l);
        if (failures)
            return 1;
        printf("SKIP: no usable Vulkan device on this machine; device checks not run\n");
        return 77;
    }
    CHECK(st == VKLLM_OK && inst, "instance_create with defaults (status %d: %s)\n", (int)st,
          st == VKLLM_OK ? "" : api->last_error());
    if (st != VKLLM_OK) {
        vkllm_loader_close(&l);
        return 1;
    }

    st = api->device_count(inst, &count);
    CHECK(st == VKLLM_OK && count > 0, "device_count = %u\n", count);
    for (uint32_t i = 0; i < count; i++) {
        vkllm_device_info info;
        memset(&info, 0, sizeof info);
        info.size = sizeof info;
        st = api->device_info(inst, i, &info);
        CHECK(st == VKLLM_OK, "device_info(%u)\n", i);
        if (st != VKLLM_OK)
            continue;
        printf("       [%u] %s: %s, vendor 0x%04x device 0x%04x, Vulkan %u.%u.%u\n",
               info.index, info.name, device_type_name(info.type), info.vendor_id,
               info.device_id, info.api_version >> 22, (info.api_version >> 12) & 0x3ffu,
               info.api_version & 0xfffu);
        printf("       device-local memory %.1f MiB, max storage buffer range %.1f MiB, "
               "shared memory %u B, subgroup size %u\n",
               (double)info.device_local_memory / (1024.0 * 1024.0),
               (double)info.max_storage_buffer_range / (1024.0 * 1024.0),
               info.shared_memory_size, info.subgroup_size);
        print_features(info.features);
        CHECK(info.size == sizeof info, "size kept\n");
        CHECK(info.index == i, "index %u\n", i);
        CHECK(info.name[0] != '\0' && memchr(info.name, '\0', sizeof info.name),
              "name is a terminated non-empty string\n");
        CHECK(info.type >= VKLLM_DEVICE_OTHER && info.type <= VKLLM_DEVICE_CPU,
              "type %d is a vkllm_device_type\n", (int)info.type);
        CHECK(info.api_version >= (1u << 22 | 1u << 12),
              "Vulkan version is at least 1.1 (vkllm needs subgroups)\n");
        CHECK(info.device_local_memory > 0, "device-local memory > 0\n");
        CHECK(info.max_storage_buffer_range >= (1u << 27),
              "maxStorageBufferRange >= 128 MiB (Vulkan 1.3 minimum is 128 MiB)\n");
        CHECK(info.shared_memory_size >= 16384, "shared memory >= 16 KiB (Vulkan minimum)\n");
        CHECK(info.subgroup_size >= 1 && info.subgroup_size <= 128 &&
                  (info.subgroup_size & (info.subgroup_size - 1)) == 0,
              "subgroup size %u is a power of two in 1..128\n", info.subgroup_size);
        CHECK((info.features >> 9) == 0, "no undefined feature bits\n");
        if (device_rank(info.type) > best_rank)
            best_rank = device_rank(info.type);
    }

    st = api->selected_device(inst, &selected);
    CHECK(st == VKLLM_OK && selected < count, "selected_device = %u\n", selected);
    if (st == VKLLM_OK && selected < count) {
        vkllm_device_info info;
        memset(&info, 0, sizeof info);
        info.size = sizeof info;
        if (api->device_info(inst, selected, &info) == VKLLM_OK)
            selected_rank = device_rank(info.type);
        if (!getenv("VKLLM_DEVICE"))
            CHECK(selected_rank == best_rank,
                  "without VKLLM_DEVICE the selected device is of the preferred type "
                  "(discrete > integrated > virtual > cpu)\n");
        else
            printf("       VKLLM_DEVICE=%s: preference order not checked\n",
                   getenv("VKLLM_DEVICE"));
    }

    {
        vkllm_instance_stats stats;
        memset(&stats, 0, sizeof stats);
        stats.size = sizeof stats;
        st = api->instance_stats(inst, &stats);
        CHECK(st == VKLLM_OK, "instance_stats\n");
        printf("       validation messages %llu, live Vulkan objects %llu, device bytes %llu\n",
               (unsigned long long)stats.validation_messages,
               (unsigned long long)stats.live_vulkan_objects,
               (unsigned long long)stats.device_bytes_allocated);
        CHECK(stats.validation_messages == 0, "no validation messages (validation is off)\n");
    }

    /* Misuse is refused with a message, not a crash. */
    {
        vkllm_device_info info;
        memset(&info, 0, sizeof info);
        info.size = sizeof info;
        st = api->device_info(inst, count, &info);
        CHECK(st != VKLLM_OK, "device_info(%u), one past the end, fails (status %d: %s)\n",
              count, (int)st, api->instance_error(inst));
        CHECK(api->instance_error(inst)[0] != '\0', "instance_error names the problem\n");
        memset(&info, 0, sizeof info);
        st = api->device_info(inst, 0, &info);
        CHECK(st == VKLLM_ERR_INVALID_ARGUMENT,
              "device_info with info.size = 0 is an invalid argument (status %d)\n", (int)st);
        st = api->device_count(NULL, &count);
        CHECK(st == VKLLM_ERR_INVALID_ARGUMENT,
              "device_count(NULL instance) is an invalid argument (status %d: %s)\n", (int)st,
              api->last_error());
        CHECK(api->last_error()[0] != '\0', "last_error names the problem\n");
    }

    CHECK(api->instance_destroy(inst) == VKLLM_OK, "instance_destroy\n");
    CHECK(api->instance_destroy(NULL) == VKLLM_OK, "instance_destroy(NULL)\n");
    vkllm_loader_close(&l);
    return 0;
}

int main(int argc, char **argv)
{
    int rc;
    if (argc == 5 && strcmp(argv[1], "loader") == 0) {
        rc = test_loader(argv[2], argv[3], argv[4]);
    } else if (argc == 3 && strcmp(argv[1], "devices") == 0) {
        rc = test_devices(argv[2]);
        if (rc == 77)
            return 77;
    } else {
        fprintf(stderr, "usage: %s loader PLUGIN NOT_A_PLUGIN FAKE_PLUGIN\n"
                        "       %s devices PLUGIN\n", argv[0], argv[0]);
        return 2;
    }
    printf("%s: %d failed checks\n", failures || rc ? "FAIL" : "PASS", failures);
    return failures || rc ? 1 : 0;
}
