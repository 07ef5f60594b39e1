#include "vk_test.h"
#include "check.h"

#include <stdarg.h>

int t_failures;

const char *t_profile(void)
{
    const char *p = getenv("VKLLM_PROFILE");
    return p && *p ? p : "(full)";
}

static void on_log(void *user, int32_t level, const char *msg)
{
    (void)user;
    fprintf(stderr, "[vkllm %d] %s\n", level, msg);
}

vkr_device *t_device(void)
{
    const char *nv = getenv("VKLLM_TEST_NO_VALIDATION");
    vkr_device_desc desc = {
        .device_index = -1,
        .validation = !(nv && !strcmp(nv, "1")),
        .log_fn = on_log,
        .log_level = VKLLM_LOG_WARN,
    };
    vkr_device *dev;
    vkllm_status s = vkr_device_create(&desc, &dev);
    if (s == VKLLM_ERR_NO_VULKAN_LOADER || s == VKLLM_ERR_NO_DEVICE) {
        printf("SKIP: %s\n", vk_error_message());
        exit(T_SKIP);
    }
    if (s) {
        printf("FAIL: device: %s\n", vk_error_message());
        exit(1);
    }
    printf("device: %s, profile %s, subgroup %u%s\n", dev->infos[dev->selected].name, t_profile(),
           dev->caps.subgroup_size, dev->caps.subgroup_arithmetic ? " (arith)" : "");
    return dev;
}

int t_finish(vkr_device *dev)
{
    uint64_t messages = atomic_load(&dev->validation_messages);
    if (vkr_device_destroy(dev) != VKLLM_OK) {
        printf("FAIL: %s\n", vk_error_message());
        t_failures++;
    }
    if (messages) {
        printf("FAIL: %llu validation messages\n", (unsigned long long)messages);
        t_failures++;
    }
    printf("%s: %d failures\n", t_failures ? "FAIL" : "PASS", t_failures);
    return t_failures ? 1 : 0;
}

op_tensor t_tensor(vkr_device *dev, size_t bytes)
{
    vkr_buffer *b = calloc(1, sizeof *b);
    if (!b || vkr_buffer_create(dev, bytes ? bytes : 4, VKR_MEMORY_HOST, b)) {
        printf("FAIL: buffer of %zu bytes: %s\n", bytes, vk_error_message());
        exit(1);
    }
    memset(b->mapped, 0, b->size);
    return (op_tensor){b, 0, b->size};
}

op_tensor t_tensor_from(vkr_device *dev, const void *data, size_t bytes)
{
    op_tensor t = t_tensor(dev, bytes);
    memcpy(t.buffer->mapped, data, bytes);
    return t;
}

void t_tensor_free(vkr_device *dev, op_tensor t)
{
    vkr_buffer *b = (vkr_buffer *)t.buffer;
    vkr_buffer_destroy(dev, b);
    free(b);
}

void t_read(vkr_device *dev, op_tensor t, void *dst, size_t bytes)
{
    if (vkr_buffer_read(dev, (vkr_buffer *)t.buffer, t.offset, dst, bytes)) {
        printf("FAIL: read: %s\n", vk_error_message());
        exit(1);
    }
}

static vkr_device *cmd_dev;

vkr_cmd *t_begin(vkr_device *dev)
{
    vkr_cmd *cmd;
    if (vkr_cmd_create(dev, 4096, true, &cmd) || vkr_cmd_begin(cmd)) {
        printf("FAIL: cmd: %s\n", vk_error_message());
        exit(1);
    }
    cmd_dev = dev;
    return cmd;
}

void t_run(vkr_cmd *cmd)
{
    if (vkr_cmd_end(cmd) || vkr_cmd_submit_wait(cmd)) {
        printf("FAIL: submit: %s\n", vk_error_message());
        exit(1);
    }
    vkr_cmd_destroy(cmd);
}

int t_compare(const char *what, const float *got, const float *want, size_t n, float atol, float rtol)
{
    double max_abs = 0, max_rel = 0;
    size_t worst = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= atol + rtol * fabs(want[i])))
            bad++;
        if (d > max_abs || isnan(d)) {
            max_abs = d;
            worst = i;
        }
        double rel = d / (fabs(want[i]) + 1e-30);
        if (rel > max_rel && fabs(want[i]) > 1e-6)
            max_rel = rel;
    }
    printf("%s %s: n=%zu max_abs=%.3g max_rel=%.3g (atol %.1g rtol %.1g)", bad ? "FAIL" : "ok  ", what,
           n, max_abs, max_rel, atol, rtol);
    if (bad) {
        printf(" %zu bad, worst [%zu] got %g want %g", bad, worst, got[worst], want[worst]);
        t_failures++;
    }
    printf("\n");
    return bad == 0;
}

void t_compare_scaled(const char *what, const float *got, const float *want, const float *scale,
                      size_t n, double atol, double rtol)
{
    double worst = 0;
    size_t bad = 0, at = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]), q = e / (atol + rtol * scale[i]);
        bad += !(q <= 1);
        if (!(q <= worst)) {
            worst = q;
            at = i;
        }
    }
    printf("%s %s: n=%zu worst error %.3g at a term scale of %.3g = %.2f of the tolerance "
           "(atol %.1g + rtol %.1g x scale)\n", bad ? "FAIL" : "ok  ", what, n,
           fabs((double)got[at] - want[at]), scale[at], worst, atol, rtol);
    t_failures += bad != 0;
}

bool t_right_shader(bool texel, const char *label)
{
    size_t n = strlen(label);
    bool tx = n > 3 && !strcmp(label + n - 3, "_tx");
    return !*label || tx == texel;
}

void t_check(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    check_print(cond, fmt, ap);
    va_end(ap);
    if (!cond)
        t_failures++;
}

void t_fill_random(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 12345u;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        x[i] = (float)((double)s / 4294967296.0 * 2.0 - 1.0);
    }
}
