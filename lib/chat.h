/* Chat templates: how a conversation becomes one prompt for the chat and instruct models of
 * 2023 (and a few later formats their fine-tunes use). A GGUF's tokenizer.chat_template is
 * a Jinja program; vkllm does not run Jinja. As llama.cpp's llama_chat_apply_template does,
 * it recognizes which known format a template writes by the marks in its text, and then
 * writes that format itself, with the same output as llama.cpp (checked against it:
 * tests/fixtures/chat_templates.txt). */
#ifndef VKLLM_CHAT_H
#define VKLLM_CHAT_H

#include <stddef.h>

#include "vkllm/vkllm.h"

typedef enum chat_format {
    CHAT_UNKNOWN = 0,
    CHAT_CHATML,           /* <|im_start|>role\n...<|im_end|>\n (Qwen, MPT-chat, SmolLM2, OpenHermes) */
    CHAT_LLAMA2,           /* [INST] ... [/INST] ...</s>, a system message as plain text */
    CHAT_LLAMA2_SYS,       /* ... with <<SYS>> (Llama 2 chat) */
    CHAT_LLAMA2_SYS_BOS,   /* ... and <s> before each later [INST] */
    CHAT_LLAMA2_SYS_STRIP, /* ... and contents stripped of surrounding white space */
    CHAT_MISTRAL_V1,       /* " [INST] ... [/INST]" (Mistral/Mixtral Instruct v0.1-v0.2) */
    CHAT_MISTRAL_V3,
    CHAT_MISTRAL_V3_TEKKEN,
    CHAT_MISTRAL_V7,
    CHAT_PHI3,             /* <|role|>\n...<|end|>\n */
    CHAT_ZEPHYR,           /* <|role|>\n...<|endoftext|>\n (StableLM Zephyr) */
    CHAT_MONARCH,          /* role\n...</s>\n<s>... */
    CHAT_GEMMA,            /* <start_of_turn>role\n...<end_of_turn>\n */
    CHAT_ORION,            /* Human: ...\n\nAssistant: </s> */
    CHAT_OPENCHAT,         /* GPT4 Correct User: ...<|end_of_turn|> */
    CHAT_VICUNA,           /* USER: ...\nASSISTANT: ...</s>\n */
    CHAT_VICUNA_ORCA,      /* ... with SYSTEM: */
    CHAT_DEEPSEEK,         /* ### Instruction:\n...\n### Response:\n (DeepSeek Coder) */
    CHAT_COMMAND_R,
    CHAT_LLAMA3,           /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_FORMAT_COUNT
} chat_format;

/* The format `tmpl` names ("chatml", "llama2", "mistral-v1", ...: chat_format_name's
 * names), or, for anything else, the format recognized in it as a Jinja template.
 * CHAT_UNKNOWN when neither. */
chat_format chat_format_find(const char *tmpl);
/* The name of a format, "" for CHAT_UNKNOWN and out-of-range values. */
const char *chat_format_name(chat_format f);

/* chat_apply in the format `tmpl` names or writes (chat_format_find); VKLLM_ERR_UNSUPPORTED,
 * listing the formats, when it is none of them. */
vkllm_status chat_apply_template(const char *tmpl, const vkllm_chat_message *messages, size_t n_messages,
                                 int add_assistant, char *text, size_t capacity, size_t *n_out);

/* Writes the conversation in format `f`: at most `capacity` bytes into `text` (no
 * terminator), *n_out the full length. add_assistant: end with the opening of an assistant
 * turn, for the model to write. VKLLM_ERR_BUFFER_TOO_SMALL when the text does not fit,
 * VKLLM_ERR_INVALID_ARGUMENT for a NULL role or content, VKLLM_ERR_UNSUPPORTED for
 * CHAT_UNKNOWN. */
vkllm_status chat_apply(chat_format f, const vkllm_chat_message *messages, size_t n_messages,
                        int add_assistant, char *text, size_t capacity, size_t *n_out);

#endif
