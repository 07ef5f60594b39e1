/* A deliberately misbehaving plugin for test_host: its vkllm_entry does what the
 * environment variable VKLLM_FAKE_PLUGIN_MODE says, so that every check of
 * vkllm_loader_open can be reached:
 *   "range"  serves ABI versions 3..5 (a correct plugin, just not version 1)
 *   "small"  returns a table smaller than the version-1 table
 *   "null"   returns VKLLM_OK without a table
 *   "fail"   fails with VKLLM_ERR_INTERNAL
 *   "liar"   answers every request with a table of version 7 */
#include <stdlib.h>
#include <string.h>

#include "vkllm/vkllm.h"

static vkllm_api tables[8];

VKLLM_EXPORT vkllm_status vkllm_entry(uint32_t min_version, uint32_t max_version,
                                      const vkllm_api **out);

VKLLM_EXPORT vkllm_status vkllm_entry(uint32_t min_version, uint32_t max_version,
                                      const vkllm_api **out)
{
    const char *mode = getenv("VKLLM_FAKE_PLUGIN_MODE");
    uint32_t lo = 3, hi = 5, v;
    if (!out || !mode)
        return VKLLM_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (strcmp(mode, "null") == 0)
        return VKLLM_OK;
    if (strcmp(mode, "fail") == 0)
        return VKLLM_ERR_INTERNAL;
    if (strcmp(mode, "liar") == 0) {
        tables[7].struct_size = sizeof(vkllm_api);
        tables[7].abi_version = 7;
        *out = &tables[7];
        return VKLLM_OK;
    }
    if (strcmp(mode, "small") == 0)
        lo = hi = 1;
    if (min_version > hi || max_version < lo)
        return VKLLM_ERR_ABI_VERSION;
    v = max_version < hi ? max_version : hi; /* the highest version both sides know */
    tables[v].struct_size = strcmp(mode, "small") == 0 ? 16 : (uint32_t)sizeof(vkllm_api);
    tables[v].abi_version = v;
    tables[v].plugin_name = "fake";
    tables[v].plugin_version = "0";
    *out = &tables[v];
    return VKLLM_OK;
}
