/*
 * vkllm_loader.h: header-only helper that opens a vkllm plugin for a host.
 *
 * It dlopens the plugin, finds its single exported symbol (VKLLM_ENTRY_SYMBOL), asks it
 * for a function table inside the host's range of ABI versions and checks the table.
 * Every failure leaves a sentence in loader->error that says which of these steps failed
 * and why, so a host can print it as is:
 *
 *     vkllm_loader l;
 *     if (vkllm_loader_open(&l, "libvkllm_vulkan.so", 1, VKLLM_ABI_VERSION) != VKLLM_OK) {
 *         fprintf(stderr, "%s\n", l.error);
 *         return 1;
 *     }
 *     ... l.api->instance_create(...) ...
 *     vkllm_loader_close(&l);
 *
 * Plain C99 (also compiles as C++), no dependency beyond the C library and libdl
 * (link with -ldl on glibc older than 2.34). The Windows branch (LoadLibrary) is written
 * to the same contract but is not built or tested by vkllm's CI.
 */
#ifndef VKLLM_LOADER_H
#define VKLLM_LOADER_H

#include "vkllm.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(_WIN32)
#include <windows.h>
#else
#include <dlfcn.h>
#include <errno.h>
#include <sys/stat.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* File name of the Vulkan plugin as the build produces it. Without a directory part the
 * system's library search (LD_LIBRARY_PATH, rpath, ld.so.cache) finds it. */
#if defined(_WIN32)
#define VKLLM_LOADER_DEFAULT_NAME "vkllm_vulkan.dll"
#elif defined(__APPLE__)
#define VKLLM_LOADER_DEFAULT_NAME "libvkllm_vulkan.dylib"
#else
#define VKLLM_LOADER_DEFAULT_NAME "libvkllm_vulkan.so"
#endif

/* Environment variable that names the plugin to load (see vkllm_loader_default_path). */
#define VKLLM_LOADER_ENV "VKLLM_PLUGIN"

/* Size of the version-1 table: every field up to and including profile_entry. A plugin
 * that serves version 1 fills at least this much; the value stays fixed as the table
 * grows, because fields are only ever appended. */
#define VKLLM_LOADER_API_V1_SIZE                                                          \
    (offsetof(vkllm_api, profile_entry) + sizeof(((vkllm_api *)0)->profile_entry))

/* An opened plugin. All fields are zero/NULL when closed; `error` holds the message of
 * the last failed vkllm_loader_open ("" after a success). */
typedef struct vkllm_loader {
    void *lib;             /* dlopen / LoadLibrary handle */
    const vkllm_api *api;  /* the plugin's table; NULL when not open */
    uint32_t abi_version;  /* the version the plugin chose, == api->abi_version */
    char error[512];       /* why the last vkllm_loader_open failed */
} vkllm_loader;

/* ---- private helpers (vkllm_loader_priv_*: not part of the interface) --------------- */

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline void vkllm_loader_priv_set_error(vkllm_loader *l, const char *fmt, ...);

static inline void vkllm_loader_priv_set_error(vkllm_loader *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->error, sizeof l->error, fmt, ap);
    va_end(ap);
}

/* dlopen with a distinct status per cause: VKLLM_ERR_IO when the file is not there,
 * VKLLM_ERR_BAD_FILE when it is there but does not load. */
static inline vkllm_status vkllm_loader_priv_open_lib(vkllm_loader *l, const char *path,
                                                      void **out)
{
#if defined(_WIN32)
    *out = (void *)LoadLibraryA(path);
    if (!*out) {
        DWORD code = GetLastError();
        if (code == ERROR_FILE_NOT_FOUND || code == ERROR_PATH_NOT_FOUND) {
            vkllm_loader_priv_set_error(l, "no such file: %s", path);
            return VKLLM_ERR_IO;
        }
        vkllm_loader_priv_set_error(l, "cannot load %s as a library: Windows error %lu",
                                    path, (unsigned long)code);
        return VKLLM_ERR_BAD_FILE;
    }
    return VKLLM_OK;
#else
    /* A path with a directory names one file: say plainly when it is not there, since
     * dlerror's wording for that case varies between C libraries. A bare name goes to
     * the library search, which only dlerror can explain. */
    if (strchr(path, '/')) {
        struct stat st;
        if (stat(path, &st) != 0) {
            if (errno == ENOENT || errno == ENOTDIR)
                vkllm_loader_priv_set_error(l, "no such file: %s", path);
            else
                vkllm_loader_priv_set_error(l, "cannot access %s: %s", path, strerror(errno));
            return VKLLM_ERR_IO;
        }
    }
    (void)dlerror(); /* clear a stale message */
    *out = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!*out) {
        const char *why = dlerror();
        vkllm_loader_priv_set_error(l, "cannot load %s as a library: %s", path,
                                    why ? why : "unknown dlopen error");
        return VKLLM_ERR_BAD_FILE;
    }
    return VKLLM_OK;
#endif
}

static inline vkllm_entry_fn vkllm_loader_priv_find_entry(void *lib)
{
    vkllm_entry_fn fn = NULL;
#if defined(_WIN32)
    FARPROC sym = GetProcAddress((HMODULE)lib, VKLLM_ENTRY_SYMBOL);
#else
    void *sym = dlsym(lib, VKLLM_ENTRY_SYMBOL);
#endif
    /* Object pointer -> function pointer through memcpy: a cast is not ISO C. */
    if (sym && sizeof sym == sizeof fn)
        memcpy(&fn, &sym, sizeof fn);
    return fn;
}

static inline void vkllm_loader_priv_close_lib(void *lib)
{
    if (!lib)
        return;
#if defined(_WIN32)
    FreeLibrary((HMODULE)lib);
#else
    dlclose(lib);
#endif
}

/* Learns the versions a plugin serves after it refused the host's range. It serves a
 * contiguous range [lo, hi]: entry(1, UINT32_MAX) yields hi, and entry(1, v) succeeds
 * exactly when v >= lo, so lo is found by bisection (at most 32 more calls). Returns 0
 * when the plugin serves no version at all. */
static inline int vkllm_loader_priv_served_range(vkllm_entry_fn entry, uint32_t *lo,
                                                 uint32_t *hi)
{
    const vkllm_api *t = NULL;
    uint32_t a = 1, b;
    if (entry(1, UINT32_MAX, &t) != VKLLM_OK || !t)
        return 0;
    b = t->abi_version; /* entry(1, b) succeeds; find the least such v in [a, b] */
    *hi = b;
    while (a < b) {
        uint32_t mid = a + (b - a) / 2;
        t = NULL;
        if (entry(1, mid, &t) == VKLLM_OK && t)
            b = mid;
        else
            a = mid + 1;
    }
    *lo = a;
    return 1;
}

/* ---- interface ---------------------------------------------------------------------- */

/* The plugin a host should load when the user names none: the value of the environment
 * variable VKLLM_PLUGIN when set and non-empty, else VKLLM_LOADER_DEFAULT_NAME (found
 * through the system's library search). The string is static or the environment's. */
static inline const char *vkllm_loader_default_path(void)
{
    const char *env = getenv(VKLLM_LOADER_ENV);
    return (env && env[0]) ? env : VKLLM_LOADER_DEFAULT_NAME;
}

/* Opens the plugin at `path` and negotiates an ABI version in [min_version, max_version]
 * (a host normally passes 1 and the VKLLM_ABI_VERSION it was compiled with). On success
 * fills l->lib, l->api and l->abi_version, sets l->error to "" and returns VKLLM_OK; the
 * host then calls through l->api and, when done with everything the plugin created,
 * calls vkllm_loader_close. On failure *l is left closed (nothing to close), l->error
 * says why and the return value is:
 *   VKLLM_ERR_INVALID_ARGUMENT  l or path NULL, path empty, or min_version > max_version
 *   VKLLM_ERR_IO                a path with a directory part names no file ("no such
 *                               file: PATH") or one that cannot be accessed
 *   VKLLM_ERR_BAD_FILE          the file is not a loadable library (the dynamic linker's
 *                               reason is quoted; this also covers a bare name that the
 *                               library search does not find, and a library whose own
 *                               dependencies are missing), or a library without
 *                               vkllm_entry ("PATH is not a vkllm plugin: no symbol
 *                               vkllm_entry")
 *   VKLLM_ERR_ABI_VERSION       the plugin serves no version inside the host's range
 *                               ("plugin serves ABI versions X..Y, host needs A..B"), or
 *                               its table is inconsistent: smaller than the version-1
 *                               table, or for a version outside the host's range
 *   any other status            the entry itself failed with it (the message quotes it)
 */
static inline vkllm_status vkllm_loader_open(vkllm_loader *l, const char *path,
                                             uint32_t min_version, uint32_t max_version)
{
    void *lib = NULL;
    vkllm_entry_fn entry;
    const vkllm_api *api = NULL;
    vkllm_status st;

    if (!l)
        return VKLLM_ERR_INVALID_ARGUMENT;
    memset(l, 0, sizeof *l);
    if (!path || !path[0]) {
        vkllm_loader_priv_set_error(l, "no plugin path given");
        return VKLLM_ERR_INVALID_ARGUMENT;
    }
    if (min_version > max_version) {
        vkllm_loader_priv_set_error(l, "bad ABI version range %u..%u: minimum above maximum",
                                    (unsigned)min_version, (unsigned)max_version);
        return VKLLM_ERR_INVALID_ARGUMENT;
    }

    st = vkllm_loader_priv_open_lib(l, path, &lib);
    if (st != VKLLM_OK)
        return st;

    entry = vkllm_loader_priv_find_entry(lib);
    if (!entry) {
        vkllm_loader_priv_set_error(l, "%s is not a vkllm plugin: no symbol %s", path,
                                    VKLLM_ENTRY_SYMBOL);
        vkllm_loader_priv_close_lib(lib);
        return VKLLM_ERR_BAD_FILE;
    }

    st = entry(min_version, max_version, &api);
    if (st == VKLLM_ERR_ABI_VERSION) {
        uint32_t lo = 0, hi = 0;
        if (vkllm_loader_priv_served_range(entry, &lo, &hi))
            vkllm_loader_priv_set_error(
                l, "%s: plugin serves ABI versions %u..%u, host needs %u..%u", path,
                (unsigned)lo, (unsigned)hi, (unsigned)min_version, (unsigned)max_version);
        else
            vkllm_loader_priv_set_error(
                l, "%s: plugin serves no ABI version at all, host needs %u..%u", path,
                (unsigned)min_version, (unsigned)max_version);
        vkllm_loader_priv_close_lib(lib);
        return st;
    }
    if (st != VKLLM_OK) {
        vkllm_loader_priv_set_error(l, "%s: %s(%u, %u) failed with status %d", path,
                                    VKLLM_ENTRY_SYMBOL, (unsigned)min_version,
                                    (unsigned)max_version, (int)st);
        vkllm_loader_priv_close_lib(lib);
        return st;
    }
    if (!api) {
        vkllm_loader_priv_set_error(l, "%s: %s succeeded but returned no table", path,
                                    VKLLM_ENTRY_SYMBOL);
        vkllm_loader_priv_close_lib(lib);
        return VKLLM_ERR_ABI_VERSION;
    }
    if (api->struct_size < VKLLM_LOADER_API_V1_SIZE) {
        vkllm_loader_priv_set_error(
            l, "%s: plugin table is %u bytes, smaller than the %u bytes of ABI version 1",
            path, (unsigned)api->struct_size, (unsigned)VKLLM_LOADER_API_V1_SIZE);
        vkllm_loader_priv_close_lib(lib);
        return VKLLM_ERR_ABI_VERSION;
    }
    if (api->abi_version < min_version || api->abi_version > max_version) {
        vkllm_loader_priv_set_error(
            l, "%s: plugin chose ABI version %u, outside the host's range %u..%u", path,
            (unsigned)api->abi_version, (unsigned)min_version, (unsigned)max_version);
        vkllm_loader_priv_close_lib(lib);
        return VKLLM_ERR_ABI_VERSION;
    }

    l->lib = lib;
    l->api = api;
    l->abi_version = api->abi_version;
    l->error[0] = '\0';
    return VKLLM_OK;
}

/* Unloads the plugin and zeroes *l (l->error is kept). Every instance, model and context
 * the plugin created must have been destroyed first: their code goes away with it.
 * Safe on a loader that is closed or failed to open, and on NULL. */
static inline void vkllm_loader_close(vkllm_loader *l)
{
    if (!l)
        return;
    vkllm_loader_priv_close_lib(l->lib);
    l->lib = NULL;
    l->api = NULL;
    l->abi_version = 0;
}

#ifdef __cplusplus
}
#endif

#endif /* VKLLM_LOADER_H */
