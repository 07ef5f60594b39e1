/* The counted check the plain-C tests share: prints "ok  " or "FAIL" and the message, and
 * counts checks and failures for the test's summary line. Header-only: each test is one
 * translation unit. */
#ifndef VKLLM_TESTS_CHECK_H
#define VKLLM_TESTS_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int failures, checks;

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static void check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", cond ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    checks++;
    failures += !cond;
}

#endif
