/* Weight types (ggml numbering, as GGUF stores them), their block layouts, and plain C
 * conversion routines. The C code here is the reference the shaders are tested against. */
#ifndef VKLLM_QUANT_H
#define VKLLM_QUANT_H

#include <stddef.h>
#include <stdint.h>

enum ggml_type {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q4_1 = 3,
    GGML_Q5_0 = 6, GGML_Q5_1 = 7, GGML_Q8_0 = 8, GGML_Q8_1 = 9,
    GGML_Q2_K = 10, GGML_Q3_K = 11, GGML_Q4_K = 12, GGML_Q5_K = 13, GGML_Q6_K = 14,
    GGML_Q8_K = 15, GGML_IQ2_XXS = 16, GGML_IQ2_XS = 17, GGML_IQ3_XXS = 18,
    GGML_IQ1_S = 19, GGML_IQ4_NL = 20, GGML_IQ3_S = 21, GGML_IQ2_S = 22, GGML_IQ4_XS = 23,
    GGML_I8 = 24, GGML_I16 = 25, GGML_I32 = 26, GGML_I64 = 27, GGML_F64 = 28,
    GGML_IQ1_M = 29, GGML_BF16 = 30, GGML_TQ1_0 = 34, GGML_TQ2_0 = 35,
    GGML_MXFP4 = 39,
    GGML_TYPE_COUNT = 40
};

typedef struct ggml_type_traits {
    const char *name;  /* "q4_0"; NULL for unknown ids */
    uint32_t block_size;  /* weights per block (1 for plain types) */
    uint32_t block_bytes; /* bytes per block */
    int supported;        /* the device computes with it as stored (see vk_compute_type) */
} ggml_type_traits;

/* Traits of a type id; a zeroed struct (name NULL) for ids ggml does not define. */
ggml_type_traits ggml_traits(uint32_t type);
/* Bytes of a row of `n` weights; 0 when n is not a multiple of the block size or the
 * type is unknown. */
uint64_t ggml_row_bytes(uint32_t type, uint64_t n);

float vk_fp16_to_fp32(uint16_t h);
uint16_t vk_fp32_to_fp16(float f); /* round to nearest even */
float vk_bf16_to_fp32(uint16_t h);
uint16_t vk_fp32_to_bf16(float f); /* round to nearest even */

/* Decodes `n` weights (a multiple of the block size) of `type` from `src` into `dst`: the
 * supported types and the K-quants (q2_K..q6_K). Returns 0 on success, -1 otherwise. */
int vk_dequantize_row(uint32_t type, const void *src, float *dst, uint64_t n);
/* Encodes `n` floats into `type` blocks, as llama.cpp's reference quantizers do.
 * Returns bytes written, 0 for an unsupported type. */
uint64_t vk_quantize_row(uint32_t type, const float *src, void *dst, uint64_t n);
/* Writes one q4_1 or q5_1 (`type`) block of weights q[j] * d + m, j < 32 (quants below 16,
 * or 32): d and m rounded to fp16, the quants packed as the type lays them out. */
void vk_pack_q_1(uint32_t type, uint8_t *block, float d, float m, const uint8_t q[32]);

/* The ggml type of a vkllm_weight_type (vkllm.h); -1 for "as stored" and unknown values. */
int32_t vk_weight_type_ggml(int32_t weight_type);
/* The type the device computes with for matrices stored as `type`: the type itself when
 * supported, else what it is converted to at load: q4_K -> q4_1 and q5_K -> q5_1 (each
 * sub-block of 32 becomes a block with the same quants, its scale and min rounded to fp16),
 * q2_K, q3_K, q6_K -> q8_0 (requantized: their sub-blocks of 16 have scales of their own).
 * GGML_TYPE_COUNT when there is none. */
uint32_t vk_compute_type(uint32_t type);
/* Converts a row of `n` weights from `src_type` to the supported `dst_type`: q4_K -> q4_1
 * and q5_K -> q5_1 quant for quant, anything else through floats (`scratch`: n floats).
 * Returns bytes written; 0 when either type or n does not allow it, or when the weights
 * do not fit `dst_type` (NaN, or fp16 scales that would overflow). */
uint64_t vk_convert_row(uint32_t src_type, const void *src, uint32_t dst_type, void *dst, uint64_t n,
                        float *scratch);

#endif
