/* Reader for the llama.cpp reference fixtures (smollm2_reference.bin and
 * stories260k_reference.bin in tests/fixtures; format in tests/fixtures/llama_reference.md). Everything is bounds-checked: a truncated or
 * malformed file gives VKLLM_ERR_BAD_FILE with a message (vk_error_message()). */
#ifndef VKLLM_REF_FIXTURE_H
#define VKLLM_REF_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "vkllm/vkllm.h"

typedef struct ref_prompt {
    char *text;              /* UTF-8, NUL-terminated copy (text_len bytes before the NUL) */
    uint32_t text_len;
    uint32_t add_bos;        /* tokenized with add_special */
    uint32_t parse_special;  /* special-token text was parsed */
    uint32_t n_tokens;       /* prompt tokens, BOS included when llama.cpp added it */
    uint32_t n_vocab;
    uint32_t n_gen;          /* greedy continuation */
    uint32_t n_gen_rows;     /* 0 or n_gen */
    int32_t *tokens;         /* n_tokens */
    int32_t *gen;            /* n_gen */
    float *logits;           /* n_tokens * n_vocab, row i after prompt token i */
    float *gen_logits;       /* n_gen_rows * n_vocab, row j after decoding gen[j] */
} ref_prompt;

typedef struct ref_fixture {
    uint32_t version;
    uint32_t n_prompts;
    uint8_t model_sha256[32];
    ref_prompt *prompts;
} ref_fixture;

/* Parses a fixture image. On failure *out is left empty (safe to free). */
vkllm_status ref_fixture_parse(const uint8_t *data, size_t size, ref_fixture *out);
/* Reads and parses a file (VKLLM_ERR_IO when it cannot be read). */
vkllm_status ref_fixture_load(const char *path, ref_fixture *out);
void ref_fixture_free(ref_fixture *f);

/* IEEE half -> float, exact for every input (subnormals, infinities, NaN). */
float ref_half_to_float(uint16_t h);
/* Index of the largest value (the lowest index on ties), as numpy's argmax. */
uint32_t ref_argmax(const float *row, uint32_t n);

#endif
