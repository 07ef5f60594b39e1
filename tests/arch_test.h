/* Checks shared by the graph-builder tests (test_arch_metadata.c, test_arch_hyena.c): a
 * graph build that must fail naming what is wrong, and the summary line (check() is
 * check.h's).
 * Header-only: each test is one translation unit. */
#ifndef VKLLM_TESTS_ARCH_TEST_H
#define VKLLM_TESTS_ARCH_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "error.h"
#include "gguf.h"
#include "graph.h"

/* g_build must fail with `want` and a message holding every one of the NULL-ended words. */
static void expect_error(const gguf_file *f, vkllm_status want, const char *what, ...)
{
    g_graph g;
    vkllm_status s = g_build(f, 0, &g);
    const char *msg = s ? vk_error_message() : "(built)";
    int ok = s == want;
    va_list ap;
    va_start(ap, what);
    for (const char *w; (w = va_arg(ap, const char *));)
        ok = ok && strstr(msg, w) != NULL;
    va_end(ap);
    check(ok, "%s: status %d (want %d): %s", what, (int)s, (int)want, msg);
    if (!s)
        g_free(&g);
}

/* The summary line and the exit code. */
static int finish(void)
{
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}

#endif
