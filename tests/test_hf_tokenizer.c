/* Hugging Face tokenizer.json folders (lib/hf_tokenizer.c) against transformers.
 *
 * usage: test_hf_tokenizer fixtures FIXTURE_DIR
 *        test_hf_tokenizer abi PLUGIN FIXTURE_DIR OPT_FOLDER WORK_DIR
 *
 * fixtures: each folder of tests/fixtures/hf_tokenizers (made by
 *   tests/tools/make_hf_tokenizer_fixtures.py: GPT-2, OPT, GPT-NeoX, Falcon, SmolLM2,
 *   Qwen2, Llama-3 byte-level BPE; Llama-2 SentencePiece-style BPE in its two
 *   tokenizer.json forms) is converted to tokenizer.ggml.* keys and loaded by
 *   lib/tokenizer.c. For every string of expected.txt, with and without add_special, the
 *   ids must equal transformers' (added tokens in the text matched, as transformers always
 *   does), and detokenizing them must give transformers' decode(skip_special_tokens).
 *   Lines marked known-diff in expected.txt (see the generator) are counted, not failed.
 *   Then hostile variants of a small tokenizer.json must fail with a message naming the
 *   problem, and random edits of two fixtures must never fail without a message.
 * abi: opt-hf's weights with the "opt" fixture's tokenizer (356 tokens padded to the
 *   embedding's 361 rows) load through the plugin; model_info's BOS, the padding tokens'
 *   text, and tokenize/detokenize of the fixture's strings match transformers. Exit 77
 *   without a Vulkan device. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "gguf.h"
#include "hf_tokenizer.h"
#include "json.h"
#include "tokenizer.h"
#include "vkllm/vkllm.h"
#include "vkllm/vkllm_loader.h"
#include "host_instance.h"
#include "check.h"


/* ---- expected.txt ------------------------------------------------------------------- */

typedef struct ref_line {
    char name[64];
    int add_special;
    char *text;
    size_t text_len;
    int32_t *ids;
    size_t n_ids;
    char *decoded;
    size_t decoded_len;
    int known_diff;
} ref_line;

static char *read_text(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

static char *unhex(const char *h, size_t n, size_t *out_len)
{
    char *out = malloc(n / 2 + 1);
    for (size_t i = 0; out && i + 1 < n; i += 2) {
        unsigned v;
        sscanf(h + i, "%2x", &v);
        out[i / 2] = (char)v;
    }
    if (out)
        out[n / 2] = '\0';
    *out_len = n / 2;
    return out;
}

/* Fields split on tabs in place; returns the count. */
static int split_tabs(char *line, char **f, int max)
{
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == '\t') {
            *p = '\0';
            f[n++] = p + 1;
        }
    return n;
}

/* Lines of expected.txt; "# known-diff NAME HEX REASON" marks lines by name and text. */
static ref_line *read_expected(const char *path, size_t *n_out)
{
    size_t len;
    char *buf = read_text(path, &len);
    if (!buf)
        return NULL;
    ref_line *lines = calloc(len / 8 + 1, sizeof *lines);
    size_t n = 0;
    char *save = NULL;
    char *known[512];
    size_t n_known = 0;
    for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (!strncmp(line, "# known-diff ", 13) && n_known < 512) {
            known[n_known++] = line + 13;
            continue;
        }
        if (line[0] == '#')
            continue;
        char *f[6];
        if (split_tabs(line, f, 6) < 5)
            continue;
        ref_line *r = &lines[n++];
        snprintf(r->name, sizeof r->name, "%s", f[0]);
        r->add_special = atoi(f[1]);
        r->text = unhex(f[2], strlen(f[2]), &r->text_len);
        r->decoded = unhex(f[4], strlen(f[4]), &r->decoded_len);
        r->ids = malloc((strlen(f[3]) / 2 + 1) * sizeof *r->ids);
        for (char *p = f[3]; *p;) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            r->ids[r->n_ids++] = (int32_t)v;
            p = end;
        }
        char key[4096];
        snprintf(key, sizeof key, "%s %s ", f[0], f[2]);
        for (size_t k = 0; k < n_known; k++)
            if (!strncmp(known[k], key, strlen(key)))
                r->known_diff = 1;
    }
    free(buf);
    *n_out = n;
    return lines;
}

static void free_expected(ref_line *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(lines[i].text);
        free(lines[i].ids);
        free(lines[i].decoded);
    }
    free(lines);
}

static void print_ids(const char *label, const int32_t *ids, size_t n)
{
    printf("       %s:", label);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", ids[i]);
    printf(n > 40 ? " ...\n" : "\n");
}

/* ---- fixtures through lib ----------------------------------------------------------- */

static void test_folder(const char *dir, const char *name, const ref_line *lines, size_t n_lines, int *n_known)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    gguf_file *f = NULL;
    vk_vocab *v = NULL;
    vkllm_status s = hf_tokenizer_open(path, &f);
    if (!s && (s = vk_vocab_load(f, &v)))
        vk_fail_prefix(s, "vk_vocab_load");
    if (s) {
        check(0, "%s: %s", name, vk_error_message());
        gguf_close(f);
        return;
    }
    gguf_str model = {0}, pre = {0};
    gguf_get_str(f, "tokenizer.ggml.model", &model);
    gguf_get_str(f, "tokenizer.ggml.pre", &pre);
    int ids_ok = 0, text_ok = 0, total = 0, round_trips = 0, known = 0, known_same = 0;
    for (size_t i = 0; i < n_lines; i++) {
        const ref_line *r = &lines[i];
        if (strcmp(r->name, name))
            continue;
        int32_t ids[4096];
        size_t n = 0;
        s = vk_tokenize(v, r->text, r->text_len, r->add_special, 1, ids, 4096, &n);
        int same_ids = !s && n == r->n_ids && !memcmp(ids, r->ids, n * sizeof *ids);
        char text[16384];
        size_t tn = 0;
        vkllm_status ds = vk_detokenize(v, r->ids, r->n_ids, text, sizeof text, &tn);
        int same_text = !ds && tn == r->decoded_len && !memcmp(text, r->decoded, tn);
        if (r->known_diff) {
            known++;
            known_same += same_ids && same_text;
            continue;
        }
        total++;
        ids_ok += same_ids;
        text_ok += same_text;
        round_trips += same_text && tn == r->text_len && !memcmp(text, r->text, tn);
        if (!same_ids || !same_text) {
            printf("  FAIL %s add_special=%d text \"%.*s\"\n", name, r->add_special, (int)r->text_len, r->text);
            if (!same_ids) {
                print_ids("transformers", r->ids, r->n_ids);
                print_ids("vkllm       ", ids, n);
            }
            if (!same_text)
                printf("       decode: transformers \"%.*s\", vkllm \"%.*s\"\n", (int)r->decoded_len, r->decoded,
                       (int)tn, text);
        }
    }
    *n_known += known;
    check(total > 0 && ids_ok == total && text_ok == total,
          "%-20s %-5.*s pre %-9.*s %6u tokens: ids %d/%d, decode %d/%d as transformers (%d round trips); "
          "known differences %d (%d agree anyway)", name, (int)model.len, model.data, (int)pre.len, pre.data,
          vk_vocab_size(v), ids_ok, total, text_ok, total, round_trips, known, known_same);
    vk_vocab_free(v);
    gguf_close(f);
}

/* ---- hostile tokenizer.json --------------------------------------------------------- */

/* A small valid byte-level tokenizer; the cases below replace one piece of it. */
static const char k_base[] =
    "{\"added_tokens\":[{\"id\":5,\"content\":\"<|endoftext|>\",\"special\":true}],"
    "\"normalizer\":NORM,"
    "\"pre_tokenizer\":PRE,"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"TYPE\",\"byte_fallback\":FALLBACK,"
    "\"vocab\":VOCAB,"
    "\"merges\":MERGES}}";

typedef struct hostile {
    const char *what, *field, *value;
    vkllm_status status;
    const char *message; /* a part of the message */
    uint32_t n_vocab;
} hostile;

static char *replace(const char *s, const char *field, const char *value)
{
    const char *at = strstr(s, field);
    size_t fl = strlen(field), vl = strlen(value), n = strlen(s);
    char *out = malloc(n - fl + vl + 1);
    memcpy(out, s, (size_t)(at - s));
    memcpy(out + (at - s), value, vl);
    strcpy(out + (at - s) + vl, at + fl);
    return out;
}

static const char *const k_fields[][2] = {
    {"NORM", "null"},
    {"PRE", "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}"},
    {"TYPE", "BPE"},
    {"FALLBACK", "false"},
    {"VOCAB", "{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120ab\":4}"},
    {"MERGES", "[\"a b\",[\"\\u0120\",\"ab\"]]"},
};

static char *make_doc(const hostile *h)
{
    char *doc = strdup(k_base);
    for (size_t i = 0; i < sizeof k_fields / sizeof *k_fields; i++) {
        const char *value = h && !strcmp(h->field, k_fields[i][0]) ? h->value : k_fields[i][1];
        char *next = replace(doc, k_fields[i][0], value);
        free(doc);
        doc = next;
    }
    return doc;
}

static vkllm_status convert_doc(const char *text, uint32_t n_vocab, gguf_file **out)
{
    json_doc *doc = NULL;
    *out = NULL;
    vkllm_status s = json_parse(text, strlen(text), &doc);
    if (s)
        return s;
    gguf_file *f = calloc(1, sizeof *f);
    uint64_t cap = 0;
    hf_tokenizer *store = NULL;
    s = hf_tokenizer_add_json("t.json", json_root(doc), NULL, NULL, n_vocab, f, &cap, &store);
    f->owner = store;
    f->release = (void (*)(void *))hf_tokenizer_free;
    json_free(doc);
    if (s)
        gguf_close(f);
    else
        *out = f;
    return s;
}

static void test_hostile(void)
{
    /* the base document converts and tokenizes */
    char *doc = make_doc(NULL);
    gguf_file *f;
    vk_vocab *v = NULL;
    vkllm_status s = convert_doc(doc, 8, &f);
    if (!s)
        s = vk_vocab_load(f, &v);
    int32_t ids[8];
    size_t n = 0;
    if (!s)
        s = vk_tokenize(v, "a ab<|endoftext|>", 17, 0, 1, ids, 8, &n);
    const gguf_array *merges = NULL;
    if (!s)
        gguf_get_arr(f, "tokenizer.ggml.merges", &merges);
    check(!s && n == 3 && ids[0] == 0 && ids[1] == 4 && ids[2] == 5 && vk_vocab_size(v) == 8 && merges &&
              merges->n == 2 && merges->strings[1].len == 5 && !memcmp(merges->strings[1].data, "\xc4\xa0 ab", 5),
          "the base document: \"a ab<|endoftext|>\" -> %zu ids (0 4 5), 8 tokens with 2 padding, merges in both forms%s%s",
          n, s ? ": " : "", s ? vk_error_message() : "");
    vk_vocab_free(v);
    gguf_close(f);
    free(doc);

    static const hostile cases[] = {
        {"WordPiece", "TYPE", "WordPiece", VKLLM_ERR_UNSUPPORTED, "model type \"WordPiece\" is not supported", 0},
        {"unknown regex", "PRE",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\p{L}+|x\"},"
         "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
         "\"use_regex\":false}]}",
         VKLLM_ERR_UNSUPPORTED, "Split(Regex \"\\p{L}+|x\")", 0},
        {"prefix space", "PRE", "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}",
         VKLLM_ERR_UNSUPPORTED, "ByteLevel(add_prefix_space=1", 0},
        {"Lowercase normaliser", "NORM", "{\"type\":\"Lowercase\"}", VKLLM_ERR_BAD_FILE, "normalizer", 0},
        {"byte fallback + ByteLevel", "FALLBACK", "true", VKLLM_ERR_BAD_FILE, "byte_fallback", 0},
        {"neither kind", "PRE", "{\"type\":\"Whitespace\"}", VKLLM_ERR_UNSUPPORTED, "neither byte-level", 0},
        {"negative id", "VOCAB", "{\"a\":-1}", VKLLM_ERR_BAD_FILE, "entry \"a\" is not an id", 0},
        {"fractional id", "VOCAB", "{\"a\":1.5}", VKLLM_ERR_BAD_FILE, "entry \"a\" is not an id", 0},
        {"huge id", "VOCAB", "{\"a\":99999999999}", VKLLM_ERR_BAD_FILE, "entry \"a\" is not an id", 0},
        {"same id twice", "VOCAB", "{\"a\":0,\"b\":0}", VKLLM_ERR_BAD_FILE, "gives id 0 to \"a\" and to \"b\"", 0},
        {"vocab not an object", "VOCAB", "[1]", VKLLM_ERR_BAD_FILE, "model.vocab is missing or not an object", 0},
        {"merge of an unknown token", "MERGES", "[\"a z\"]", VKLLM_ERR_BAD_FILE, "merges[0] names \"z\"", 0},
        {"merge making an unknown token", "MERGES", "[\"b a\"]", VKLLM_ERR_BAD_FILE, "makes \"ba\"", 0},
        {"merge with two spaces", "MERGES", "[\"a b c\"]", VKLLM_ERR_BAD_FILE, "not two tokens separated", 0},
        {"merge of three", "MERGES", "[[\"a\",\"b\",\"c\"]]", VKLLM_ERR_BAD_FILE, "merges[0] is an array", 0},
        {"merges not an array", "MERGES", "7", VKLLM_ERR_BAD_FILE, "model.merges is not an array", 0},
        {"too small an embedding", "MERGES", "[]", VKLLM_ERR_BAD_FILE, "ids up to 5, but the model's token "
         "embedding has 4 rows", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const hostile *h = &cases[i];
        doc = make_doc(h);
        s = convert_doc(doc, h->n_vocab, &f);
        const char *msg = vk_error_message();
        check(s == h->status && strstr(msg, h->message) && !f, "%s: %s", h->what, msg);
        if (!s)
            gguf_close(f);
        free(doc);
    }

    /* SentencePiece-style documents */
    static const char spm[] =
        "{\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},{\"id\":1,\"content\":\"<s>\","
        "\"special\":true}],\"normalizer\":NORM,\"pre_tokenizer\":PRE,\"post_processor\":null,\"decoder\":null,"
        "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\",\"vocab\":{\"<unk>\":0,"
        "\"<s>\":1,\"<0x41>\":2,\"\\u2581\":3,\"a\":4,\"\\u2581a\":5,\"b\":6,\"ab\":7},"
        "\"merges\":[\"a b\",\"\\u2581 a\"]}}";
    static const struct {
        const char *what, *norm, *pre, *message;
    } spm_cases[] = {
        {"Metaspace that splits", "null", "{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"split\":true}",
         "split true"},
        {"no U+2581 for spaces", "null", "null", "does not write spaces as U+2581"},
        {"NFKC normaliser", "{\"type\":\"NFKC\"}", "null", "normalizer step is not supported"},
    };
    for (size_t i = 0; i < sizeof spm_cases / sizeof *spm_cases; i++) {
        char *a = replace(spm, "NORM", spm_cases[i].norm);
        doc = replace(a, "PRE", spm_cases[i].pre);
        s = convert_doc(doc, 0, &f);
        check(s && strstr(vk_error_message(), spm_cases[i].message) && !f, "%s: %s", spm_cases[i].what,
              vk_error_message());
        if (!s)
            gguf_close(f);
        free(a);
        free(doc);
    }
    /* the valid one: scores follow merge order */
    char *a = replace(spm, "NORM", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":"
                                   "\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":"
                                   "\"\\u2581\"}]}");
    doc = replace(a, "PRE", "null");
    v = NULL;
    s = convert_doc(doc, 0, &f);
    if (!s)
        s = vk_vocab_load(f, &v);
    n = 0;
    if (!s)
        s = vk_tokenize(v, "ab A", 4, 1, 0, ids, 8, &n);
    /* "_ab": "a b" (rank 0) before "_ a" (rank 1) -> _ ab, where merging left to right (as
     * llama.cpp's equal -1000 scores do) gives _a b; " A" -> _ <0x41>. The `tokenizers`
     * library gives 3 7 3 2 for this document. */
    check(!s && n == 5 && ids[0] == 1 && ids[1] == 3 && ids[2] == 7 && ids[3] == 3 && ids[4] == 2,
          "SentencePiece-style: \"ab A\" -> <s> _ ab _ <0x41> in merge order (%zu ids)%s%s", n, s ? ": " : "",
          s ? vk_error_message() : "");
    vk_vocab_free(v);
    if (!s)
        gguf_close(f);
    free(a);
    free(doc);
}

/* ---- mutations ---------------------------------------------------------------------- */

static uint64_t rng = 88172645463325252ull;

static uint32_t next_rand(uint32_t n) /* xorshift64 */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng % n);
}

/* Random edits of a valid tokenizer.json that mostly keep it JSON: digits changed (ids,
 * ranks), bytes replaced, short ranges deleted or repeated. Whatever parses goes through
 * the conversion, and what converts through vk_vocab_load, tokenize and detokenize; a
 * failure must come with a message. (Under -Db_sanitize=address this also checks every
 * read.) */
static void test_mutations(const char *fixtures, const char *name, int iterations)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/tokenizer.json", fixtures, name);
    size_t len;
    char *base = read_text(path, &len);
    if (!base) {
        check(0, "mutations: cannot read %s", path);
        return;
    }
    static const char text[] = "Hello world, 123 \xf0\x9f\xa6\x99 <|endoftext|></s>";
    int parsed = 0, converted = 0, loaded = 0, silent = 0;
    for (int it = 0; it < iterations; it++) {
        char *t = malloc(len * 2 + 64);
        memcpy(t, base, len);
        size_t n = len;
        for (uint32_t k = 0, edits = 1 + next_rand(4); k < edits && n > 16; k++) {
            uint32_t at = next_rand((uint32_t)n), kind = next_rand(4);
            if (kind == 0) {
                for (size_t p = at; p < n; p++)
                    if (t[p] >= '0' && t[p] <= '9') {
                        t[p] = (char)('0' + next_rand(10));
                        break;
                    }
            } else if (kind == 1) {
                t[at] = "\"{}[],:0123456789-aZ \\"[next_rand(22)];
            } else if (kind == 2) {
                uint32_t del = 1 + next_rand(16);
                if (at + del < n) {
                    memmove(t + at, t + at + del, n - at - del);
                    n -= del;
                }
            } else {
                uint32_t dup = 1 + next_rand(32);
                if (at + dup < n && n + dup < len * 2 + 64) {
                    memmove(t + at + dup, t + at, n - at);
                    n += dup;
                }
            }
        }
        json_doc *doc = NULL;
        if (json_parse(t, n, &doc) == VKLLM_OK) {
            parsed++;
            gguf_file *f = calloc(1, sizeof *f);
            uint64_t cap = 0;
            hf_tokenizer *store = NULL;
            vkllm_status s = hf_tokenizer_add_json("m.json", json_root(doc), NULL, NULL, 0, f, &cap, &store);
            f->owner = store;
            f->release = (void (*)(void *))hf_tokenizer_free;
            silent += s && !vk_error_message()[0];
            vk_vocab *v = NULL;
            if (!s) {
                converted++;
                if (vk_vocab_load(f, &v) == VKLLM_OK) {
                    loaded++;
                    int32_t ids[256];
                    size_t nid = 0, tn = 0;
                    char out[1024];
                    if (vk_tokenize(v, text, sizeof text - 1, 1, 1, ids, 256, &nid) == VKLLM_OK)
                        vk_detokenize(v, ids, nid, out, sizeof out, &tn);
                    vk_vocab_free(v);
                } else {
                    silent += !vk_error_message()[0];
                }
            }
            vk_error_clear();
            gguf_close(f);
            json_free(doc);
        }
        free(t);
    }
    free(base);
    check(silent == 0 && parsed > 0 && converted > 0,
          "mutations of %s/tokenizer.json: %d inputs, %d parse, %d convert, %d load and tokenize; %d failures without "
          "a message", name, iterations, parsed, converted, loaded, silent);
}

/* ---- the ABI: opt-hf's weights with the opt fixture's tokenizer --------------------- */

static int link_into(const char *dir, const char *src_dir, const char *name)
{
    char src[4096], dst[4096], abs_src[4096];
    snprintf(src, sizeof src, "%s/%s", src_dir, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    if (!realpath(src, abs_src))
        return -1;
    unlink(dst);
    return symlink(abs_src, dst);
}

/* The same folder with a chat_template in tokenizer_config.json (SmolLM2's chatml one, in
 * the list form newer transformers write): the model's template for chat_apply. */
static void check_chat_template(const vkllm_api *api, vkllm_instance inst, const char *dir, const char *tok_dir)
{
    static const char tmpl[] =
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
        "'<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    char src[4096], dst[4096], chat_dir[4096];
    snprintf(chat_dir, sizeof chat_dir, "%.4000s_chat", dir);
    snprintf(src, sizeof src, "%.4000s/tokenizer_config.json", tok_dir);
    snprintf(dst, sizeof dst, "%.4000s/tokenizer_config.json", chat_dir);
    FILE *in = fopen(src, "rb");
    static char cfg[1 << 16];
    size_t n = in ? fread(cfg, 1, sizeof cfg - 1, in) : 0;
    if (in)
        fclose(in);
    cfg[n] = 0;
    char *brace = strchr(cfg, '{');
    FILE *out = NULL;
    if (!brace || (mkdir(chat_dir, 0755) && errno != EEXIST) || link_into(chat_dir, dir, "config.json") ||
        link_into(chat_dir, dir, "model.safetensors") || link_into(chat_dir, dir, "tokenizer.json") ||
        !(out = fopen(dst, "wb"))) {
        check(0, "cannot make %s: %s", chat_dir, strerror(errno));
        if (out)
            fclose(out);
        return;
    }
    fprintf(out, "{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"{{ tools }}\"}, "
                 "{\"name\": \"default\", \"template\": \"%s\"}],%s", tmpl, brace + 1);
    fclose(out);

    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = chat_dir;
    vkllm_model m = NULL;
    vkllm_status s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_OK, "load %s%s%s", chat_dir, s ? ": " : "", s ? api->last_error() : "");
    if (!m)
        return;
    const char *stored = NULL;
    api->meta_string(m, "tokenizer.chat_template", &stored);
    check(stored && !strncmp(stored, "{% for message in messages %}", 29) && strstr(stored, "\n' + message"),
          "tokenizer.chat_template: the \"default\" template, JSON escapes decoded");
    vkllm_chat_message msgs[1] = {{"user", "Hi"}};
    char text[256];
    size_t len = 0;
    const char *want = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    s = api->chat_apply(m, NULL, msgs, 1, 1, text, sizeof text, &len);
    check(s == VKLLM_OK && len == strlen(want) && !memcmp(text, want, len), "chat_apply with the folder's template: "
          "chatml");
    api->model_free(m);
}

static int test_abi(const char *plugin, const char *fixtures, const char *opt_dir, const char *work)
{
    char dir[4096], tok_dir[4096], expected[4096];
    snprintf(dir, sizeof dir, "%s/hf_tokenizer_opt", work);
    snprintf(tok_dir, sizeof tok_dir, "%s/opt", fixtures);
    snprintf(expected, sizeof expected, "%s/expected.txt", fixtures);
    mkdir(work, 0755);
    if ((mkdir(dir, 0755) && errno != EEXIST) || link_into(dir, opt_dir, "config.json") ||
        link_into(dir, opt_dir, "model.safetensors") || link_into(dir, tok_dir, "tokenizer.json") ||
        link_into(dir, tok_dir, "tokenizer_config.json")) {
        printf("FAIL: cannot make %s: %s\n", dir, strerror(errno));
        return 1;
    }
    vkllm_loader loader;
    vkllm_instance inst;
    int rc = open_instance(plugin, NULL, &loader, &inst);
    if (rc)
        return rc;
    const vkllm_api *api = loader.api;
    vkllm_status s;
    vkllm_model_params mp;
    api->model_params_defaults(&mp, sizeof mp);
    mp.path = dir;
    vkllm_model m = NULL;
    s = api->model_load(inst, &mp, &m);
    check(s == VKLLM_OK, "load %s%s%s", dir, s ? ": " : "", s ? api->last_error() : "");
    if (m) {
        vkllm_model_info info = {.size = sizeof info};
        api->model_info(m, &info);
        const char *pad = NULL, *eos = NULL;
        api->token_text(m, 360, &pad);
        api->token_text(m, 2, &eos);
        check(info.n_vocab == 361 && info.bos == 2 && info.eos == 2 && pad && !strcmp(pad, "[PAD360]") && eos &&
                  !strcmp(eos, "</s>"),
              "model_info: vocab %u, bos %d, eos %d (tokenizer_config's </s>, not config.json's 360); token 360 "
              "\"%s\", token 2 \"%s\"", info.n_vocab, info.bos, info.eos, pad ? pad : "-", eos ? eos : "-");
        size_t n_lines = 0;
        ref_line *lines = read_expected(expected, &n_lines);
        int total = 0, ok = 0;
        for (size_t i = 0; lines && i < n_lines; i++) {
            const ref_line *r = &lines[i];
            if (strcmp(r->name, "opt") || r->known_diff)
                continue;
            vkllm_token ids[1024];
            size_t n = 0, tn = 0;
            char text[8192];
            vkllm_status ts = api->tokenize(m, r->text, r->text_len, r->add_special, 1, ids, 1024, &n);
            vkllm_status ds = api->detokenize(m, r->ids, r->n_ids, text, sizeof text, &tn);
            int same = !ts && !ds && n == r->n_ids && !memcmp(ids, r->ids, n * sizeof *ids) && tn == r->decoded_len &&
                       !memcmp(text, r->decoded, tn);
            total++;
            ok += same;
            if (!same)
                printf("  FAIL through the ABI: \"%.*s\" add_special=%d\n", (int)r->text_len, r->text,
                       r->add_special);
        }
        check(total > 0 && ok == total, "through the ABI: %d/%d strings tokenize and decode as transformers", ok,
              total);
        free_expected(lines, n_lines);
        char tmpl_text[16];
        size_t tn = 0;
        check(api->chat_apply(m, NULL, NULL, 0, 1, tmpl_text, sizeof tmpl_text, &tn) == VKLLM_ERR_UNSUPPORTED,
              "no chat_template in tokenizer_config.json: chat_apply asks for a format: %s", api->last_error());
        api->model_free(m);
    }
    check_chat_template(api, inst, dir, tok_dir);
    check(api->instance_destroy(inst) == VKLLM_OK, "teardown clean");
    vkllm_loader_close(&loader);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc == 6 && !strcmp(argv[1], "abi"))
        return test_abi(argv[2], argv[3], argv[4], argv[5]);
    if (argc != 3 || strcmp(argv[1], "fixtures")) {
        fprintf(stderr, "usage: %s fixtures FIXTURE_DIR | abi PLUGIN FIXTURE_DIR OPT_FOLDER WORK_DIR\n", argv[0]);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/expected.txt", argv[2]);
    size_t n_lines = 0;
    ref_line *lines = read_expected(path, &n_lines);
    if (!lines || !n_lines) {
        printf("FAIL: cannot read %s\n", path);
        return 1;
    }
    printf("%zu reference lines from transformers in %s\n", n_lines, path);
    int n_known = 0;
    char seen[64][64];
    int n_seen = 0;
    for (size_t i = 0; i < n_lines; i++) {
        int done = 0;
        for (int k = 0; k < n_seen; k++)
            done |= !strcmp(seen[k], lines[i].name);
        if (done || n_seen == 64)
            continue;
        snprintf(seen[n_seen++], sizeof seen[0], "%s", lines[i].name);
        test_folder(argv[2], lines[i].name, lines, n_lines, &n_known);
    }
    check(n_seen >= 9, "%d tokenizer folders checked", n_seen);
    test_hostile();
    test_mutations(argv[2], "opt", 3000);
    test_mutations(argv[2], "llama-spm", 300);
    free_expected(lines, n_lines);
    printf("%s: %d failures\n", failures ? "FAIL" : "PASS", failures);
    return failures ? 1 : 0;
}
