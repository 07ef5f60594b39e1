/* lib/chat.c against llama.cpp's llama_chat_apply_template.
 *
 * usage: test_chat tests/fixtures/chat_templates.txt
 * The fixture (tests/fixtures/make_chat_fixture.py) holds real chat templates (those of
 * llama.cpp's tests/test-chat-template.cpp for the formats vkllm writes, and the formats'
 * names) and llama.cpp's text for four conversations, with and without the assistant
 * opening. Each must be recognized and written byte for byte the same. Then: templates
 * vkllm must not claim, short buffers, bad messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "check.h"

typedef struct cursor {
    const char *p, *end;
    int bad;
} cursor;

static long take_number(cursor *c)
{
    char *e;
    long v = strtol(c->p, &e, 10);
    if (e == c->p || e >= c->end) {
        c->bad = 1;
        return 0;
    }
    c->p = e + 1; /* one separator: a space or a newline (a string's bytes may start with either) */
    return v;
}

/* "<len>\n<bytes>\n" as a NUL-terminated copy. */
static char *take_string(cursor *c, size_t *len)
{
    long n = take_number(c);
    if (c->bad || n < 0 || n + 1 > c->end - c->p) {
        c->bad = 1;
        return calloc(1, 1);
    }
    char *s = malloc((size_t)n + 1);
    memcpy(s, c->p, (size_t)n);
    s[n] = 0;
    c->p += n + 1;
    if (len)
        *len = (size_t)n;
    return s;
}

static void take_word(cursor *c, const char *word)
{
    size_t n = strlen(word);
    if (c->end - c->p < (long)n || memcmp(c->p, word, n))
        c->bad = 1;
    else
        c->p += n;
}

typedef struct conversation {
    size_t n;
    vkllm_chat_message *msgs;
} conversation;

static void check_fixture(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        check(0, "cannot read %s", path);
        return;
    }
    static char buf[1 << 20];
    size_t size = fread(buf, 1, sizeof buf, f);
    fclose(f);
    cursor c = {buf, buf + size, 0};
    take_word(&c, "VKCHAT 1\nconversations ");
    long n_conv = take_number(&c);
    conversation conv[16] = {{0}};
    for (long i = 0; i < n_conv && i < 16 && !c.bad; i++) {
        conv[i].n = (size_t)take_number(&c);
        conv[i].msgs = calloc(conv[i].n + 1, sizeof *conv[i].msgs);
        for (size_t k = 0; k < conv[i].n; k++) {
            conv[i].msgs[k].role = take_string(&c, NULL);
            conv[i].msgs[k].content = take_string(&c, NULL);
        }
    }
    take_word(&c, "templates ");
    long n_tmpl = take_number(&c);
    char *labels[64] = {0}, *tmpls[64] = {0};
    for (long i = 0; i < n_tmpl && i < 64 && !c.bad; i++) {
        labels[i] = take_string(&c, NULL);
        tmpls[i] = take_string(&c, NULL);
    }
    take_word(&c, "cases ");
    long n_cases = take_number(&c);
    check(!c.bad && n_conv <= 16 && n_tmpl <= 64, "fixture %s: %ld conversations, %ld templates, %ld cases",
          path, n_conv, n_tmpl, n_cases);
    int same = 0, recognized = 0;
    static char out[1 << 16];
    for (long i = 0; i < n_cases && !c.bad; i++) {
        long t = take_number(&c), ci = take_number(&c), add = take_number(&c);
        size_t want_len;
        char *want = take_string(&c, &want_len);
        if (c.bad || t < 0 || t >= n_tmpl || ci < 0 || ci >= n_conv) {
            c.bad = 1;
            free(want);
            break;
        }
        chat_format fmt = chat_format_find(tmpls[t]);
        recognized += fmt != CHAT_UNKNOWN;
        size_t n = 0;
        vkllm_status s = chat_apply(fmt, conv[ci].msgs, conv[ci].n, (int)add, out, sizeof out, &n);
        int ok = s == VKLLM_OK && n == want_len && !memcmp(out, want, n);
        same += ok;
        if (!ok)
            printf("FAIL %s (as %s), conversation %ld, add_assistant %ld:\n  llama.cpp: [%s]\n  vkllm:     [%.*s]\n",
                   labels[t], chat_format_name(fmt), ci, add, want, (int)n, out);
        free(want);
    }
    check(!c.bad && c.p == c.end, "fixture read to its end");
    check(recognized == n_cases, "templates recognized in %d of %ld cases", recognized, n_cases);
    check(same == n_cases, "text identical to llama.cpp's in %d of %ld cases", same, n_cases);
    for (long i = 0; i < n_conv && i < 16; i++) {
        for (size_t k = 0; k < conv[i].n; k++) {
            free((char *)conv[i].msgs[k].role);
            free((char *)conv[i].msgs[k].content);
        }
        free(conv[i].msgs);
    }
    for (long i = 0; i < n_tmpl && i < 64; i++) {
        free(labels[i]);
        free(tmpls[i]);
    }
}

static void check_edges(void)
{
    /* Templates llama.cpp gives formats vkllm does not write, or none. */
    const char *not_ours[] = {
        "{{ messages }}",
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '<|im_sep|>' + m['content'] + '<|im_end|>'}}{% endfor %}",
        /* StableLM 2 Zephyr's: <|user|> with <|assistant|> is GLM-Edge/Falcon 3 to llama.cpp */
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
        "eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + "
        "eos_token }}\n{% endif %}\n{% endfor %}",
        "[gMASK]<sop>{% for item in messages %}<|{{ item['role'] }}|>{% endfor %}",
        "",
    };
    for (size_t i = 0; i < sizeof not_ours / sizeof not_ours[0]; i++)
        check(chat_format_find(not_ours[i]) == CHAT_UNKNOWN, "not recognized: %.40s", not_ours[i]);
    check(chat_format_find(NULL) == CHAT_UNKNOWN, "NULL template");
    for (int f = 1; f < CHAT_FORMAT_COUNT; f++)
        if (chat_format_find(chat_format_name((chat_format)f)) != (chat_format)f)
            check(0, "format %d's name %s finds it", f, chat_format_name((chat_format)f));
    check(!strcmp(chat_format_name(CHAT_UNKNOWN), "") && !strcmp(chat_format_name((chat_format)999), ""),
          "no name for unknown formats");

    vkllm_chat_message msgs[2] = {{"user", "Hello"}, {"assistant", "Hi"}};
    char small[8];
    size_t n = 0;
    const char *want = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi<|im_end|>\n";
    vkllm_status s = chat_apply(CHAT_CHATML, msgs, 2, 0, small, sizeof small, &n);
    check(s == VKLLM_ERR_BUFFER_TOO_SMALL && n == strlen(want) && !memcmp(small, want, sizeof small),
          "8-byte buffer: too small, the full length (%zu), the first 8 bytes", n);
    s = chat_apply(CHAT_CHATML, msgs, 2, 1, NULL, 0, &n);
    check(s == VKLLM_ERR_BUFFER_TOO_SMALL && n == strlen(want) + strlen("<|im_start|>assistant\n"),
          "NULL buffer of 0 bytes: the length (%zu)", n);
    s = chat_apply(CHAT_CHATML, msgs, 0, 1, small, sizeof small, &n);
    check(s == VKLLM_ERR_BUFFER_TOO_SMALL && n == 22, "no messages: the assistant opening alone (%zu)", n);
    vkllm_chat_message bad[1] = {{"user", NULL}};
    check(chat_apply(CHAT_CHATML, bad, 1, 1, small, sizeof small, &n) == VKLLM_ERR_INVALID_ARGUMENT,
          "NULL content refused");
    check(chat_apply(CHAT_UNKNOWN, msgs, 2, 1, small, sizeof small, &n) == VKLLM_ERR_UNSUPPORTED,
          "CHAT_UNKNOWN refused");
    check(chat_apply(CHAT_LLAMA3, msgs, 2, 1, small, sizeof small, NULL) == VKLLM_ERR_INVALID_ARGUMENT,
          "NULL n_out refused");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s chat_templates.txt\n", argv[0]);
        return 2;
    }
    check_fixture(argv[1]);
    check_edges();
    printf("%s: %d of %d checks failed\n", failures ? "FAIL" : "PASS", failures, checks);
    return failures ? 1 : 0;
}
