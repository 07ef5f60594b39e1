/* Chat formats (see chat.h). Which marks identify a format, and what each writes, follow
 * llama.cpp's src/llama-chat.cpp (commit 0c1e570), re-expressed here; the fixture
 * tests/fixtures/chat_templates.txt holds llama.cpp's own output for real templates. */
#include "chat.h"

#include <stdio.h>
#include <string.h>

#include "error.h"

static const char *const format_names[CHAT_FORMAT_COUNT] = {
    [CHAT_UNKNOWN] = "",
    [CHAT_CHATML] = "chatml",
    [CHAT_LLAMA2] = "llama2",
    [CHAT_LLAMA2_SYS] = "llama2-sys",
    [CHAT_LLAMA2_SYS_BOS] = "llama2-sys-bos",
    [CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [CHAT_MISTRAL_V1] = "mistral-v1",
    [CHAT_MISTRAL_V3] = "mistral-v3",
    [CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_MISTRAL_V7] = "mistral-v7",
    [CHAT_PHI3] = "phi3",
    [CHAT_ZEPHYR] = "zephyr",
    [CHAT_MONARCH] = "monarch",
    [CHAT_GEMMA] = "gemma",
    [CHAT_ORION] = "orion",
    [CHAT_OPENCHAT] = "openchat",
    [CHAT_VICUNA] = "vicuna",
    [CHAT_VICUNA_ORCA] = "vicuna-orca",
    [CHAT_DEEPSEEK] = "deepseek",
    [CHAT_COMMAND_R] = "command-r",
    [CHAT_LLAMA3] = "llama3",
};

const char *chat_format_name(chat_format f)
{
    return (unsigned)f < CHAT_FORMAT_COUNT ? format_names[f] : "";
}

static int has(const char *tmpl, const char *mark) { return strstr(tmpl, mark) != NULL; }

/* The same marks, in the same order, as llama.cpp's llm_chat_detect_template, so that a
 * template gets the format llama.cpp gives it; where that is a format vkllm does not write
 * (phi-4, SmolVLM, ChatGLM, GLM-Edge, Falcon 3, EXAONE, ...), CHAT_UNKNOWN. */
chat_format chat_format_find(const char *t)
{
    if (!t)
        return CHAT_UNKNOWN;
    for (int f = 1; f < CHAT_FORMAT_COUNT; f++)
        if (!strcmp(t, format_names[f]))
            return (chat_format)f;
    if (has(t, "<|im_start|>"))
        return has(t, "<|im_sep|>") || has(t, "<end_of_utterance>") ? CHAT_UNKNOWN : CHAT_CHATML;
    if (!strncmp(t, "mistral", 7) || has(t, "[INST]")) {
        if (has(t, "[SYSTEM_PROMPT]"))
            return CHAT_MISTRAL_V7;
        if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
            if (has(t, " [INST]"))
                return CHAT_MISTRAL_V1;
            return has(t, "\"[INST]\"") ? CHAT_MISTRAL_V3_TEKKEN : CHAT_MISTRAL_V3;
        }
        if (has(t, "content.strip()"))
            return CHAT_LLAMA2_SYS_STRIP;
        if (has(t, "bos_token + '[INST]"))
            return CHAT_LLAMA2_SYS_BOS;
        return has(t, "<<SYS>>") ? CHAT_LLAMA2_SYS : CHAT_LLAMA2;
    }
    if (has(t, "<|assistant|>") && has(t, "<|end|>"))
        return CHAT_PHI3;
    if (has(t, "[gMASK]<sop>") || (has(t, "<|assistant|>") && has(t, "<|user|>")) ||
        (has(t, "<|{{ item['role'] }}|>") && has(t, "<|begin_of_image|>")))
        return CHAT_UNKNOWN;
    if (has(t, "<|user|>") && has(t, "<|endoftext|>"))
        return CHAT_ZEPHYR;
    if (has(t, "bos_token + message['role']"))
        return CHAT_MONARCH;
    if (has(t, "<start_of_turn>"))
        return CHAT_GEMMA;
    if (has(t, "'\\n\\nAssistant: ' + eos_token"))
        return CHAT_ORION;
    if (has(t, "GPT4 Correct "))
        return CHAT_OPENCHAT;
    if (has(t, "USER: ") && has(t, "ASSISTANT: "))
        return has(t, "SYSTEM: ") ? CHAT_VICUNA_ORCA : CHAT_VICUNA;
    if (has(t, "### Instruction:") && has(t, "<|EOT|>"))
        return CHAT_DEEPSEEK;
    if (has(t, "<|START_OF_TURN_TOKEN|>") && has(t, "<|USER_TOKEN|>"))
        return CHAT_COMMAND_R;
    if (has(t, "<|start_header_id|>") && has(t, "<|end_header_id|>"))
        return CHAT_LLAMA3;
    return CHAT_UNKNOWN;
}

/* ---- writing ----------------------------------------------------------------------------- */

/* The caller's buffer: bytes past `capacity` are counted, not written. */
typedef struct out_text {
    char *text;
    size_t capacity, len;
} out_text;

static void put_n(out_text *o, const char *s, size_t n)
{
    if (o->len < o->capacity)
        memcpy(o->text + o->len, s, n < o->capacity - o->len ? n : o->capacity - o->len);
    o->len += n;
}

static void put(out_text *o, const char *s) { put_n(o, s, strlen(s)); }

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* The length of *s without leading and trailing white space (C isspace in the "C" locale,
 * as llama.cpp's trim), *s moved past the leading. */
static size_t trim(const char **s)
{
    size_t n = strlen(*s);
    while (n && is_space(**s))
        (*s)++, n--;
    while (n && is_space((*s)[n - 1]))
        n--;
    return n;
}

/* A message's content, trimmed or as it is. */
static void put_content(out_text *o, const char *s, int trimmed)
{
    put_n(o, s, trimmed ? trim(&s) : strlen(s));
}

static int role_is(const vkllm_chat_message *m, const char *role) { return !strcmp(m->role, role); }

static void write_llama2(out_text *o, chat_format f, const vkllm_chat_message *msgs, size_t n)
{
    int system_marks = f != CHAT_LLAMA2, bos_inside = f == CHAT_LLAMA2_SYS_BOS, strip = f == CHAT_LLAMA2_SYS_STRIP;
    int inside_turn = 1; /* the first [INST] is written here: the tokenizer adds the BOS */
    put(o, "[INST] ");
    for (size_t i = 0; i < n; i++) {
        if (!inside_turn) {
            inside_turn = 1;
            put(o, bos_inside ? "<s>[INST] " : "[INST] ");
        }
        int sys = role_is(&msgs[i], "system"), user = role_is(&msgs[i], "user");
        if (sys && system_marks)
            put(o, "<<SYS>>\n");
        put_content(o, msgs[i].content, strip);
        if (sys) {
            put(o, system_marks ? "\n<</SYS>>\n\n" : "\n");
        } else if (user) {
            put(o, " [/INST]");
        } else {
            put(o, "</s>");
            inside_turn = 0;
        }
    }
}

static void write_mistral(out_text *o, chat_format f, const vkllm_chat_message *msgs, size_t n)
{
    if (f == CHAT_MISTRAL_V7) {
        for (size_t i = 0; i < n; i++) {
            if (role_is(&msgs[i], "system")) {
                put(o, "[SYSTEM_PROMPT] ");
                put(o, msgs[i].content);
                put(o, "[/SYSTEM_PROMPT]");
            } else if (role_is(&msgs[i], "user")) {
                put(o, "[INST] ");
                put(o, msgs[i].content);
                put(o, "[/INST]");
            } else {
                put(o, " ");
                put(o, msgs[i].content);
                put(o, "</s>");
            }
        }
        return;
    }
    const char *lead = f == CHAT_MISTRAL_V1 ? " " : "", *trail = f == CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    int inside_turn = 0;
    for (size_t i = 0; i < n; i++) {
        if (!inside_turn) {
            put(o, lead);
            put(o, "[INST]");
            put(o, trail);
            inside_turn = 1;
        }
        if (role_is(&msgs[i], "system")) {
            put(o, msgs[i].content);
            put(o, "\n\n");
        } else if (role_is(&msgs[i], "user")) {
            put(o, msgs[i].content);
            put(o, lead);
            put(o, "[/INST]");
        } else {
            put(o, trail);
            put_content(o, msgs[i].content, f == CHAT_MISTRAL_V3);
            put(o, "</s>");
            inside_turn = 0;
        }
    }
}

/* Gemma and Orion hold system messages back and write them, joined, at the start of the
 * next user turn (Gemma: the next turn not the model's; each system message trimmed). */
static void write_gemma_orion(out_text *o, chat_format f, const vkllm_chat_message *msgs, size_t n)
{
    int gemma = f == CHAT_GEMMA;
    size_t held_from = 0, held_len = 0; /* system messages since held_from, their length */
    for (size_t i = 0; i < n; i++) {
        if (role_is(&msgs[i], "system")) {
            const char *content = msgs[i].content;
            held_len += gemma ? trim(&content) : strlen(content);
            continue;
        }
        int user = role_is(&msgs[i], "user"), model = role_is(&msgs[i], "assistant");
        if (gemma) {
            put(o, "<start_of_turn>");
            put(o, model ? "model" : msgs[i].role);
            put(o, "\n");
        } else if (user) {
            put(o, "Human: ");
        }
        if (held_len && (gemma ? !model : user)) {
            for (size_t k = held_from; k < i; k++)
                if (role_is(&msgs[k], "system"))
                    put_content(o, msgs[k].content, gemma);
            put(o, "\n\n");
            held_len = 0;
            held_from = i + 1;
        } else if (!held_len) {
            held_from = i + 1;
        }
        put_content(o, msgs[i].content, gemma);
        put(o, gemma ? "<end_of_turn>\n" : user ? "\n\nAssistant: </s>" : "</s>");
    }
}

vkllm_status chat_apply(chat_format f, const vkllm_chat_message *msgs, size_t n, int add_assistant, char *text,
                        size_t capacity, size_t *n_out)
{
    if (!n_out || (n && !msgs) || (capacity && !text))
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "chat_apply: NULL messages, text or n_out");
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "chat_apply: message %zu has a NULL role or content", i);
    if (f <= CHAT_UNKNOWN || f >= CHAT_FORMAT_COUNT)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "chat_apply: unknown chat format");
    out_text o = {text, capacity, 0};
    const char *assistant_opening = "";
    switch (f) {
    case CHAT_CHATML:
        for (size_t i = 0; i < n; i++) {
            put(&o, "<|im_start|>");
            put(&o, msgs[i].role);
            put(&o, "\n");
            put(&o, msgs[i].content);
            put(&o, "<|im_end|>\n");
        }
        assistant_opening = "<|im_start|>assistant\n";
        break;
    case CHAT_LLAMA2:
    case CHAT_LLAMA2_SYS:
    case CHAT_LLAMA2_SYS_BOS:
    case CHAT_LLAMA2_SYS_STRIP:
        write_llama2(&o, f, msgs, n);
        break;
    case CHAT_MISTRAL_V1:
    case CHAT_MISTRAL_V3:
    case CHAT_MISTRAL_V3_TEKKEN:
    case CHAT_MISTRAL_V7:
        write_mistral(&o, f, msgs, n);
        break;
    case CHAT_PHI3:
    case CHAT_ZEPHYR:
        for (size_t i = 0; i < n; i++) {
            put(&o, "<|");
            put(&o, msgs[i].role);
            put(&o, "|>\n");
            put(&o, msgs[i].content);
            put(&o, f == CHAT_PHI3 ? "<|end|>\n" : "<|endoftext|>\n");
        }
        assistant_opening = "<|assistant|>\n";
        break;
    case CHAT_MONARCH:
        for (size_t i = 0; i < n; i++) {
            put(&o, i ? "<s>" : ""); /* the tokenizer adds the first BOS */
            put(&o, msgs[i].role);
            put(&o, "\n");
            put(&o, msgs[i].content);
            put(&o, "</s>\n");
        }
        assistant_opening = "<s>assistant\n";
        break;
    case CHAT_GEMMA:
    case CHAT_ORION:
        write_gemma_orion(&o, f, msgs, n);
        assistant_opening = f == CHAT_GEMMA ? "<start_of_turn>model\n" : "";
        break;
    case CHAT_OPENCHAT:
        for (size_t i = 0; i < n; i++) {
            if (!role_is(&msgs[i], "system")) {
                char first[2] = {msgs[i].role[0], 0};
                if (first[0] >= 'a' && first[0] <= 'z')
                    first[0] = (char)(first[0] - 'a' + 'A');
                put(&o, "GPT4 Correct ");
                put(&o, first);
                put(&o, msgs[i].role[0] ? msgs[i].role + 1 : "");
                put(&o, ": ");
            }
            put(&o, msgs[i].content);
            put(&o, "<|end_of_turn|>");
        }
        assistant_opening = "GPT4 Correct Assistant:";
        break;
    case CHAT_VICUNA:
    case CHAT_VICUNA_ORCA:
    case CHAT_DEEPSEEK:
        for (size_t i = 0; i < n; i++) {
            int deepseek = f == CHAT_DEEPSEEK;
            if (role_is(&msgs[i], "system")) {
                put(&o, f == CHAT_VICUNA_ORCA ? "SYSTEM: " : "");
                put(&o, msgs[i].content);
                put(&o, f == CHAT_VICUNA_ORCA ? "\n" : f == CHAT_VICUNA ? "\n\n" : "");
            } else if (role_is(&msgs[i], "user")) {
                put(&o, deepseek ? "### Instruction:\n" : "USER: ");
                put(&o, msgs[i].content);
                put(&o, "\n");
            } else if (role_is(&msgs[i], "assistant")) {
                put(&o, deepseek ? "### Response:\n" : "ASSISTANT: ");
                put(&o, msgs[i].content);
                put(&o, deepseek ? "\n<|EOT|>\n" : "</s>\n");
            }
        }
        assistant_opening = f == CHAT_DEEPSEEK ? "### Response:\n" : "ASSISTANT:";
        break;
    case CHAT_COMMAND_R:
        for (size_t i = 0; i < n; i++) {
            const char *mark = role_is(&msgs[i], "system") ? "<|SYSTEM_TOKEN|>"
                               : role_is(&msgs[i], "user") ? "<|USER_TOKEN|>"
                               : role_is(&msgs[i], "assistant") ? "<|CHATBOT_TOKEN|>" : NULL;
            if (!mark)
                continue;
            put(&o, "<|START_OF_TURN_TOKEN|>");
            put(&o, mark);
            put_content(&o, msgs[i].content, 1);
            put(&o, "<|END_OF_TURN_TOKEN|>");
        }
        assistant_opening = "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
        break;
    case CHAT_LLAMA3:
        for (size_t i = 0; i < n; i++) {
            put(&o, "<|start_header_id|>");
            put(&o, msgs[i].role);
            put(&o, "<|end_header_id|>\n\n");
            put_content(&o, msgs[i].content, 1);
            put(&o, "<|eot_id|>");
        }
        assistant_opening = "<|start_header_id|>assistant<|end_header_id|>\n\n";
        break;
    default:
        break;
    }
    if (add_assistant)
        put(&o, assistant_opening);
    *n_out = o.len;
    if (o.len > capacity)
        return vk_fail(VKLLM_ERR_BUFFER_TOO_SMALL, "chat_apply: the text is %zu bytes, the buffer %zu", o.len,
                       capacity);
    return VKLLM_OK;
}

vkllm_status chat_apply_template(const char *tmpl, const vkllm_chat_message *messages, size_t n_messages,
                                 int add_assistant, char *text, size_t capacity, size_t *n_out)
{
    chat_format f = chat_format_find(tmpl);
    if (f == CHAT_UNKNOWN) {
        char names[512] = "";
        size_t len = 0;
        for (int i = 1; i < CHAT_FORMAT_COUNT && len < sizeof names; i++)
            len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i > 1 ? ", " : "", format_names[i]);
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "chat template not recognized (vkllm does not run Jinja; it writes "
                       "these formats, by name or recognized in a template: %s): \"%.60s%s\"", names,
                       tmpl ? tmpl : "", tmpl && strlen(tmpl) > 60 ? "..." : "");
    }
    return chat_apply(f, messages, n_messages, add_assistant, text, capacity, n_out);
}
