/* K-quant files through the public ABI, beyond the logits (conformance_llama_kquants):
 * what a load converts them to, and hostile super-block scales. The plugin converts q4_K
 * and q5_K to q4_1/q5_1 and requantizes q2_K, q3_K and q6_K to q8_0 (lib/quant.h,
 * vk_compute_type); a scale that makes those overflow fp16, or a NaN, must fail the load
 * with VKLLM_ERR_UNSUPPORTED naming the tensor, not upload garbage or crash.
 *
 * usage: test_model_kquants PLUGIN tests/conformance/models/llama_kquants.gguf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "gguf.h"
#include "quant.h"
#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "host_instance.h"

static const vkllm_api *api;

static uint8_t *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = n > 0 ? malloc((size_t)n) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* Loads a copy of the file whose tensor `name` has the fp16 at byte `field` of super-block
 * `block` replaced by `half`; expects the load to fail naming the tensor. */
static void expect_refused(vkllm_instance inst, const gguf_file *f, const uint8_t *file, size_t size,
                           const char *name, uint32_t block, uint32_t field, uint16_t half, const char *what)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t) {
        check(0, "%s: no tensor %s", what, name);
        return;
    }
    size_t at = (size_t)(t->data - file) + (size_t)block * ggml_traits(t->type).block_bytes + field;
    uint8_t *copy = malloc(size);
    memcpy(copy, file, size);
    copy[at] = (uint8_t)half;
    copy[at + 1] = (uint8_t)(half >> 8);
    const char *path = "/tmp/vkllm_kquants_hostile.gguf";
    FILE *out = fopen(path, "wb");
    fwrite(copy, 1, size, out);
    fclose(out);
    free(copy);

    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = path;
    vkllm_model m = NULL;
    vkllm_status s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_ERR_UNSUPPORTED && m == NULL && strstr(api->last_error(), name),
          "%s (%s, %s): refused: %s", what, name, ggml_traits(t->type).name, api->last_error());
    if (m)
        api->model_free(m);
    remove(path);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 3) {
        fprintf(stderr, "usage: %s PLUGIN llama_kquants.gguf\n", argv[0]);
        return 2;
    }
    size_t size = 0;
    uint8_t *file = read_all(argv[2], &size);
    gguf_file *f = NULL;
    if (!file || gguf_parse(file, size, &f) != VKLLM_OK) {
        printf("FAIL: cannot read %s\n", argv[2]);
        return 1;
    }
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(argv[1], NULL, &loader, &inst);
    if (rc)
        return rc;
    api = loader.api;

    /* As stored: every matrix on the device in the type vk_compute_type names, so the
     * device holds more bytes than the file (q4_1 is 5 bits a weight where q4_K is 4.5). */
    uint64_t want = 0, file_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        file_bytes += t->size;
        want += t->n_dims == 1 ? t->ne[0] * 4 : rows * ggml_row_bytes(vk_compute_type(t->type), t->ne[0]);
    }
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = argv[2];
    vkllm_model m = NULL;
    check(api->model_load(inst, &mp, &m) == VKLLM_OK, "loads as stored: %s", m ? "" : api->last_error());
    if (m) {
        vkllm_model_info info = {.size = sizeof info};
        api->model_info(m, &info);
        check(info.weight_bytes == want && want > file_bytes,
              "device weights %llu bytes (q4_K, q5_K as q4_1, q5_1; q2_K, q3_K, q6_K as q8_0: %llu), file %llu",
              (unsigned long long)info.weight_bytes, (unsigned long long)want, (unsigned long long)file_bytes);
        api->model_free(m);
    }

    /* q6_K and q4_K keep d at bytes 208 and 0; q2_K d at byte 80. Super-block 1, so the
     * first rows convert before the bad one is reached. */
    expect_refused(inst, f, file, size, "output.weight", 1, 208, 0x7e00, "q6_K d = NaN");
    expect_refused(inst, f, file, size, "token_embd.weight", 1, 0, 0x7bff, "q4_K d = 65504 (d x scale > fp16)");
    expect_refused(inst, f, file, size, "blk.1.attn_q.weight", 1, 80, 0x7c00, "q2_K d = inf");
    expect_refused(inst, f, file, size, "blk.2.ffn_up.weight", 1, 2, 0xfc00, "q5_K dmin = -inf");

    close_instance(&loader, inst);
    gguf_close(f);
    free(file);
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}
