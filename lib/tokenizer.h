/* Tokenizers read from GGUF metadata: SentencePiece-style BPE ("llama", with byte
 * fallback) and GPT-2 byte-level BPE ("gpt2", pre-tokenizer named by
 * tokenizer.ggml.pre). Behaviour follows llama.cpp's, so its test vectors apply. */
#ifndef VKLLM_TOKENIZER_H
#define VKLLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct vk_vocab vk_vocab;

/* Builds the vocabulary from tokenizer.ggml.* keys; a clear error for an unknown
 * tokenizer model or pre-tokenizer, or inconsistent arrays. */
vkllm_status vk_vocab_load(const gguf_file *f, vk_vocab **out);
void vk_vocab_free(vk_vocab *v);

uint32_t vk_vocab_size(const vk_vocab *v);
int32_t vk_vocab_bos(const vk_vocab *v); /* -1 when absent */
int32_t vk_vocab_eos(const vk_vocab *v); /* -1 when absent */
/* True for end-of-generation tokens (EOS, EOT, ...). */
int vk_vocab_is_eog(const vk_vocab *v, int32_t token);
/* The token's string as stored in the vocabulary (NUL-terminated), or NULL if out of range. */
const char *vk_vocab_text(const vk_vocab *v, int32_t token);

/* Text -> ids. Writes min(capacity, total) ids; *n_out = total. add_special adds BOS/EOS as
 * the metadata asks (tokenizer.ggml.add_bos_token / add_eos_token, else the model's
 * default); parse_special matches special/control token texts in the input.
 * Returns VKLLM_ERR_BUFFER_TOO_SMALL when total > capacity (ids written up to capacity). */
vkllm_status vk_tokenize(const vk_vocab *v, const char *text, size_t len, int add_special,
                         int parse_special, int32_t *out, size_t capacity, size_t *n_out);

/* The bytes a token stands for in output text (SPM: U+2581 -> space, <0xNN> -> byte;
 * GPT-2: byte-level mapping undone; control tokens -> nothing). Writes min(capacity,
 * total) bytes, *n_out = total. VKLLM_ERR_TOKEN_OUT_OF_RANGE for a bad id. */
vkllm_status vk_token_to_piece(const vk_vocab *v, int32_t token, char *buf, size_t capacity,
                               size_t *n_out);

/* Ids -> text, as llama.cpp's detokenizer does (drops the SPM leading space after BOS). */
vkllm_status vk_detokenize(const vk_vocab *v, const int32_t *tokens, size_t n, char *buf,
                           size_t capacity, size_t *n_out);

#endif
