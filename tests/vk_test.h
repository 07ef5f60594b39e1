/* Helpers for tests that drive the Vulkan runtime directly (they link the plugin's
 * internals). Every test device runs with VK_LAYER_KHRONOS_validation; a test fails on any
 * validation message or on objects left alive at teardown. */
#ifndef VKLLM_VK_TEST_H
#define VKLLM_VK_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "ops.h"
#include "vkr.h"

#define T_SKIP 77

extern int t_failures;

/* Creates the test device (validation on unless VKLLM_TEST_NO_VALIDATION=1). Exits 77 with a
 * message when no Vulkan loader or device exists. */
vkr_device *t_device(void);
/* Tears down; returns the process exit code: 0 when every check passed, no validation
 * message was seen and nothing leaked. */
int t_finish(vkr_device *dev);

/* A buffer holding `bytes`, host-visible so tests can fill and read it directly. */
op_tensor t_tensor(vkr_device *dev, size_t bytes);
op_tensor t_tensor_from(vkr_device *dev, const void *data, size_t bytes);
void t_tensor_free(vkr_device *dev, op_tensor t);
void t_read(vkr_device *dev, op_tensor t, void *dst, size_t bytes);

/* One-shot recording: begin, then the caller records, then t_run submits and waits. */
vkr_cmd *t_begin(vkr_device *dev);
void t_run(vkr_cmd *cmd);

/* Compares n floats; prints max abs / rel error; counts a failure past the tolerance
 * |got - want| <= atol + rtol * |want|. Returns 1 on pass. */
int t_compare(const char *what, const float *got, const float *want, size_t n, float atol,
              float rtol);
/* The same against a per-element scale of the terms (a dot product's rounding is relative to
 * its terms, not to its possibly cancelled sum): |got - want| <= atol + rtol * scale[i]. */
void t_compare_scaled(const char *what, const float *got, const float *want, const float *scale,
                      size_t n, double atol, double rtol);
void t_check(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Whether a dispatch labelled `label` (its shader's name; "" without timestamps: true) used
 * a texel-view shader (name ending in "_tx") exactly when `texel`. */
bool t_right_shader(bool texel, const char *label);

/* Deterministic pseudo-random floats in [-1, 1). */
void t_fill_random(float *x, size_t n, uint32_t seed);

/* The profile the device runs under (VKLLM_PROFILE), for messages. */
const char *t_profile(void);

#endif
