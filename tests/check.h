/* The counted check the plain-C tests share: prints "ok  " or "FAIL" and the message, and
 * counts checks and failures for the test's summary line (the Vulkan tests' t_check prints
 * the same line and counts t_failures). Header-only: each test is one
 * translation unit. */
#ifndef VKLLM_TESTS_CHECK_H
#define VKLLM_TESTS_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int failures, checks;

/* The line of one check (also vk_test.c's t_check). */
static inline void check_print(int cond, const char *fmt, va_list ap)
{
    printf("%s ", cond ? "ok  " : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
}

static void check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3), unused));
static void check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    check_print(cond, fmt, ap);
    va_end(ap);
    checks++;
    failures += !cond;
}

#endif
