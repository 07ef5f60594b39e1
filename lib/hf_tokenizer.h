/* A Hugging Face tokenizer.json (+ tokenizer_config.json) as the tokenizer.ggml.* keys
 * llama.cpp's convert_hf_to_gguf.py would write, so lib/tokenizer.c reads a folder's
 * tokenizer as it reads a GGUF's.
 *
 * Two kinds of "model": {"type": "BPE"} are converted:
 *   byte-level BPE (a ByteLevel pre-tokenizer: GPT-2, OPT, GPT-NeoX, Falcon, Qwen2,
 *     StarCoder/SmolLM2, Llama-3) -> tokenizer.ggml.model "gpt2": tokens by id (added
 *     tokens under their own text), merges, token types (added special tokens CONTROL,
 *     other added tokens USER_DEFINED), and tokenizer.ggml.pre named after the
 *     pre-tokenizer section. llama.cpp names it by hashing a tokenization run through
 *     transformers; here the pre_tokenizer's structure and Split regex are matched
 *     against the ones lib/tokenizer.c implements. Anything else is refused with the
 *     pattern in the message.
 *   SentencePiece-style BPE (byte_fallback, spaces as U+2581 through a Prepend/Replace
 *     normaliser or a Metaspace pre-tokenizer: Llama 1/2, Mistral) -> "llama" with
 *     scores. llama.cpp's LlamaHfVocab writes -1000 for every score, which makes its
 *     highest-score-first merging run left to right instead of in merge order; here a
 *     token's score is minus the rank of the first merge that makes it, so the merges
 *     happen in tokenizer.json's order. (With -1000 everywhere, 48 of the 98 strings of
 *     the llama-spm fixture tokenize differently from transformers; with these scores
 *     none do.)
 *
 * Special ids and add_bos/add_eos follow llama.cpp's SpecialVocab: the post-processor
 * (TemplateProcessing / ByteLevel), then tokenizer_config.json (bos_token, add_bos_token,
 * ...), then config.json's *_token_id.
 *
 * Not reproduced, as in llama.cpp (transformers differs on such input): NFC is accepted
 * but not applied (text not in NFC form tokenizes differently); lstrip/rstrip/single_word
 * of added tokens; with a Metaspace pre-tokenizer transformers puts no U+2581 in front of
 * text that starts with a space, nor ("first") after an added token, where the "llama"
 * tokenizer prefixes every piece of text as the legacy Prepend normaliser does; under
 * that normaliser transformers matches an added token with normalized=true only after a
 * U+2581; a character with no byte token becomes one <unk> there, one per byte here.
 * Other normalisers are refused. */
#ifndef VKLLM_HF_TOKENIZER_H
#define VKLLM_HF_TOKENIZER_H

#include "gguf.h"
#include "json.h"

typedef struct hf_tokenizer hf_tokenizer;

/* Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json, and appends the
 * tokenizer.ggml.* keys to `f`, whose kv array has room for *cap_kv entries (grown as
 * needed). `config` is the model's config.json (NULL: none); `n_vocab` the rows of the
 * token embedding (the vocabulary is padded to it with [PADn] tokens, as llama.cpp does;
 * 0: as many as the tokenizer has). A folder without tokenizer.json adds nothing.
 * *store receives what the keys point into, also on failure: free it with
 * hf_tokenizer_free after the keys are gone. Errors name the file and the entry. */
vkllm_status hf_tokenizer_add(const char *dir, const json_value *config, uint32_t n_vocab, gguf_file *f,
                              uint64_t *cap_kv, hf_tokenizer **store);
void hf_tokenizer_free(hf_tokenizer *t);

/* The same from parsed documents (tokenizer_config may be NULL); `what` names the source
 * in messages. For tests and fuzzing. */
vkllm_status hf_tokenizer_add_json(const char *what, const json_value *tokenizer, const json_value *tokenizer_config,
                                   const json_value *config, uint32_t n_vocab, gguf_file *f, uint64_t *cap_kv,
                                   hf_tokenizer **store);

/* A gguf_file holding only the tokenizer keys of folder `dir` (VKLLM_ERR_NOT_FOUND when it
 * has no tokenizer.json). gguf_close frees it. */
vkllm_status hf_tokenizer_open(const char *dir, gguf_file **out);

#endif
