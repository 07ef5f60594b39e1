/* tokenizer.json -> tokenizer.ggml.* keys; see hf_tokenizer.h.
 *
 * The JSON is untrusted: every value is checked by type and range before use, ids must
 * be unique and inside the vocabulary, and every merge must name tokens the vocabulary
 * has (the `tokenizers` library refuses such files too). Strings are copied into the
 * store, so the parsed documents can be freed as soon as the keys exist. */
#include "hf_tokenizer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "hf_model.h"

/* Token ids must lie below this (the largest real vocabularies have about 2^18). */
#define HF_TOK_MAX_TOKENS (1u << 22)
/* Bytes of a token, regex or type name quoted in messages. */
#define SHOWN 80

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER_DEFINED = 4, TT_UNUSED = 5, TT_BYTE = 6 };

/* ---- the store: what the keys point into --------------------------------------------- */

struct hf_tokenizer {
    char **blocks; /* string storage, NUL-terminated copies back to back */
    uint32_t n_blocks;
    size_t used, cap; /* of the last block */
    float *scores;
    int32_t *types;
};

#define BLOCK_BYTES ((size_t)64 << 10)

void hf_tokenizer_free(hf_tokenizer *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->n_blocks; i++)
        free(t->blocks[i]);
    free(t->blocks);
    free(t->scores);
    free(t->types);
    free(t);
}

static vkllm_status no_memory(void) { return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "out of memory"); }

/* Room for n bytes in the store; NULL when memory is out. */
static char *store_alloc(hf_tokenizer *t, size_t n)
{
    if (!t->n_blocks || t->cap - t->used < n) {
        size_t cap = n > BLOCK_BYTES ? n : BLOCK_BYTES;
        char **grown = realloc(t->blocks, (t->n_blocks + 1) * sizeof *grown);
        if (!grown)
            return NULL;
        t->blocks = grown;
        if (!(t->blocks[t->n_blocks] = malloc(cap)))
            return NULL;
        t->n_blocks++;
        t->used = 0;
        t->cap = cap;
    }
    char *p = t->blocks[t->n_blocks - 1] + t->used;
    t->used += n;
    return p;
}

/* ---- small helpers over the JSON ----------------------------------------------------- */

/* Member `key` unless absent or null. */
static const json_value *get(const json_value *obj, const char *key)
{
    const json_value *v = json_get(obj, key);
    return v && v->type != JSON_NULL ? v : NULL;
}

static int is_type(const json_value *obj, const char *type)
{
    const json_value *t = get(obj, "type");
    return t && t->type == JSON_STRING && !strcmp(t->u.str, type);
}

static const char *type_of(const json_value *obj)
{
    const json_value *t = obj ? get(obj, "type") : NULL;
    return t && t->type == JSON_STRING ? t->u.str : "(no type)";
}

/* A boolean member: `fallback` when absent; -1 when it is not a boolean. */
static int get_bool(const json_value *obj, const char *key, int fallback)
{
    const json_value *v = get(obj, key);
    if (!v)
        return fallback;
    return v->type == JSON_BOOL ? v->u.boolean != 0 : -1;
}

static int str_is(const json_value *v, const char *s)
{
    return v && v->type == JSON_STRING && v->n == strlen(s) && !memcmp(v->u.str, s, v->n);
}

/* ---- the conversion ------------------------------------------------------------------ */

typedef struct added_token {
    const json_value *content;
    uint32_t id;
    bool special;
} added_token;

typedef struct conv {
    const char *what; /* the source, for messages */
    hf_tokenizer *store;
    bool spm;         /* SentencePiece-style ("llama"); else byte-level ("gpt2") */
    uint32_t n;       /* tokens, after padding */
    uint32_t n_base;  /* 1 + the largest id of model.vocab */
    /* model.vocab by id (NULL: no such id), and a hash map from its texts to ids */
    const char **vtext;
    uint32_t *vlen;
    uint32_t *slot; /* id + 1; 0 when empty */
    uint32_t mask;
    added_token *added;
    uint32_t n_added;
    int32_t *added_at; /* id -> index in added, -1 */
    const json_value *merges;
    float *scores; /* SPM */
    /* special ids (-1: not set) and add flags (-1: not said) */
    int64_t bos, eos, unk, sep, pad;
    int add_bos, add_eos;
    int add_space_prefix; /* SPM */
    const char *pre;      /* tokenizer.ggml.pre */
} conv;

static uint32_t hash_bytes(const char *s, size_t n, uint32_t h)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

#define HASH_SEED 2166136261u

/* The id of vocab text a + b (b may be empty); -1 when absent. */
static int64_t vocab_find2(const conv *c, const char *a, size_t alen, const char *b, size_t blen)
{
    uint32_t h = hash_bytes(b, blen, hash_bytes(a, alen, HASH_SEED));
    for (uint32_t i = h & c->mask;; i = (i + 1) & c->mask) {
        uint32_t s = c->slot[i];
        if (!s)
            return -1;
        uint32_t id = s - 1;
        if (c->vlen[id] == alen + blen && !memcmp(c->vtext[id], a, alen) && !memcmp(c->vtext[id] + alen, b, blen))
            return id;
    }
}

static int64_t vocab_find(const conv *c, const json_value *s)
{
    return vocab_find2(c, s->u.str, s->n, "", 0);
}

/* "<source>: <msg><detail>" */
static vkllm_status bad(const conv *c, const char *msg, const char *detail)
{
    return vk_fail(VKLLM_ERR_BAD_FILE, "%s: %s%.*s", c->what, msg, SHOWN, detail ? detail : "");
}

/* model.vocab: ids unique and in range, texts unique; the hash map. */
static vkllm_status read_vocab(conv *c, const json_value *vocab)
{
    if (!vocab || vocab->type != JSON_OBJECT)
        return bad(c, "model.vocab is missing or not an object", NULL);
    if (vocab->n == 0)
        return bad(c, "model.vocab is empty", NULL);
    uint32_t max_id = 0;
    for (uint32_t i = 0; i < vocab->n; i++) {
        const json_member *m = &vocab->u.members[i];
        const json_value *v = &m->value;
        if (v->type != JSON_NUMBER || !v->u.num.is_int || v->u.num.i < 0 || v->u.num.i >= HF_TOK_MAX_TOKENS)
            return vk_fail(VKLLM_ERR_BAD_FILE, "%s: model.vocab entry \"%.*s\" is not an id in [0, %u)", c->what,
                           SHOWN, m->key, HF_TOK_MAX_TOKENS);
        if ((uint32_t)v->u.num.i > max_id)
            max_id = (uint32_t)v->u.num.i;
    }
    c->n_base = max_id + 1;
    c->vtext = calloc(c->n_base, sizeof *c->vtext);
    c->vlen = calloc(c->n_base, sizeof *c->vlen);
    uint32_t cap = 16;
    while (cap < 2 * vocab->n)
        cap *= 2;
    c->slot = calloc(cap, sizeof *c->slot);
    c->mask = cap - 1;
    if (!c->vtext || !c->vlen || !c->slot)
        return no_memory();
    for (uint32_t i = 0; i < vocab->n; i++) {
        const json_member *m = &vocab->u.members[i];
        uint32_t id = (uint32_t)m->value.u.num.i;
        if (c->vtext[id])
            return vk_fail(VKLLM_ERR_BAD_FILE, "%s: model.vocab gives id %u to \"%.*s\" and to \"%.*s\"", c->what, id,
                           SHOWN, c->vtext[id], SHOWN, m->key);
        c->vtext[id] = m->key;
        c->vlen[id] = m->key_len;
        /* the parser refuses duplicate keys, so texts are unique */
        uint32_t h = hash_bytes(m->key, m->key_len, HASH_SEED);
        uint32_t k = h & c->mask;
        while (c->slot[k])
            k = (k + 1) & c->mask;
        c->slot[k] = id + 1;
    }
    return VKLLM_OK;
}

/* added_tokens: id, content, special. */
static vkllm_status read_added(conv *c, const json_value *added)
{
    if (!added)
        return VKLLM_OK;
    if (added->type != JSON_ARRAY)
        return bad(c, "added_tokens is not an array", NULL);
    c->added = calloc(added->n ? added->n : 1, sizeof *c->added);
    if (!c->added)
        return no_memory();
    for (uint32_t i = 0; i < added->n; i++) {
        const json_value *a = &added->u.items[i];
        const json_value *id = a->type == JSON_OBJECT ? get(a, "id") : NULL;
        const json_value *content = a->type == JSON_OBJECT ? get(a, "content") : NULL;
        int special = a->type == JSON_OBJECT ? get_bool(a, "special", 0) : -1;
        if (!id || id->type != JSON_NUMBER || !id->u.num.is_int || id->u.num.i < 0 ||
            id->u.num.i >= HF_TOK_MAX_TOKENS || !content || content->type != JSON_STRING || content->n == 0 ||
            special < 0)
            return vk_fail(VKLLM_ERR_BAD_FILE,
                           "%s: added_tokens[%u] is not an object with an id in [0, %u), a non-empty content "
                           "and a boolean special", c->what, i, HF_TOK_MAX_TOKENS);
        c->added[c->n_added++] = (added_token){content, (uint32_t)id->u.num.i, special != 0};
    }
    return VKLLM_OK;
}

/* The token count, padded to n_vocab; the id -> added token index. */
static vkllm_status size_vocab(conv *c, uint32_t n_vocab)
{
    uint32_t n = c->n_base;
    for (uint32_t i = 0; i < c->n_added; i++)
        if (c->added[i].id + 1 > n)
            n = c->added[i].id + 1;
    if (n_vocab && n > n_vocab)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: the tokenizer has ids up to %u, but the model's token embedding has "
                       "%u rows", c->what, n - 1, n_vocab);
    c->n = n_vocab ? n_vocab : n;
    c->added_at = malloc(c->n * sizeof *c->added_at);
    if (!c->added_at)
        return no_memory();
    for (uint32_t i = 0; i < c->n; i++)
        c->added_at[i] = -1;
    for (uint32_t i = 0; i < c->n_added; i++) {
        uint32_t id = c->added[i].id;
        if (c->added_at[id] >= 0)
            return vk_fail(VKLLM_ERR_BAD_FILE, "%s: added_tokens gives id %u to \"%.*s\" and to \"%.*s\"", c->what, id,
                           SHOWN, c->added[c->added_at[id]].content->u.str, SHOWN, c->added[i].content->u.str);
        c->added_at[id] = (int32_t)i;
    }
    return VKLLM_OK;
}

/* One merge as its two parts; an error naming it when malformed or outside the vocab. */
static vkllm_status merge_parts(const conv *c, uint32_t i, const char **a, size_t *alen, const char **b,
                                size_t *blen, int64_t *result)
{
    const json_value *m = &c->merges->u.items[i];
    if (m->type == JSON_STRING) {
        /* "left right": exactly one space */
        const char *sp = memchr(m->u.str, ' ', m->n);
        if (!sp || memchr(sp + 1, ' ', m->n - (size_t)(sp + 1 - m->u.str)))
            return vk_fail(VKLLM_ERR_BAD_FILE, "%s: merges[%u] \"%.*s\" is not two tokens separated by one space",
                           c->what, i, SHOWN, m->u.str);
        *a = m->u.str;
        *alen = (size_t)(sp - m->u.str);
        *b = sp + 1;
        *blen = m->n - *alen - 1;
    } else if (m->type == JSON_ARRAY && m->n == 2 && m->u.items[0].type == JSON_STRING &&
               m->u.items[1].type == JSON_STRING) {
        *a = m->u.items[0].u.str;
        *alen = m->u.items[0].n;
        *b = m->u.items[1].u.str;
        *blen = m->u.items[1].n;
    } else {
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: merges[%u] is %s, expected \"left right\" or [left, right]", c->what,
                       i, m->type == JSON_ARRAY ? "an array that is not two strings" : json_type_name(m->type));
    }
    if (vocab_find2(c, *a, *alen, "", 0) < 0 || vocab_find2(c, *b, *blen, "", 0) < 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: merges[%u] names \"%.*s\", which is not in model.vocab", c->what, i,
                       SHOWN, vocab_find2(c, *a, *alen, "", 0) < 0 ? *a : *b);
    *result = vocab_find2(c, *a, *alen, *b, *blen);
    if (*result < 0)
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s: merges[%u] makes \"%.*s%.*s\", which is not in model.vocab", c->what, i,
                       (int)(*alen < SHOWN ? *alen : SHOWN), *a, (int)(*blen < SHOWN ? *blen : SHOWN), *b);
    return VKLLM_OK;
}

/* ---- byte-level: the pre-tokenizer by structure ------------------------------------- */

/* The regexes of Llama-3's and Qwen2's tokenizer.json (Split, Isolated). */
static const char k_llama3_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char k_qwen2_regex[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

enum pre_set { SET_GPT2, SET_STARCODER, SET_FALCON, SET_LLAMA3, SET_QWEN2 };

/* tokenizer.ggml.pre names lib/tokenizer.c knows, by the regex set they run, whether
 * they clean up spaces when detokenizing, and whether they look whole words up before
 * merging (BPE ignore_merges). Several names share a set; the one whose clean-up matches
 * the folder's clean_up_tokenization_spaces is picked, so text decodes as transformers
 * decodes it. */
static const struct {
    int set;
    const char *name;
    int clean, ignore_merges;
} k_pre_names[] = {
    {SET_GPT2, "gpt-2", 1, 0},          {SET_GPT2, "trillion", 0, 0},  {SET_STARCODER, "starcoder", 1, 0},
    {SET_STARCODER, "smollm", 0, 0},    {SET_FALCON, "falcon", 1, 0},  {SET_LLAMA3, "llama-bpe", 1, 1},
    {SET_LLAMA3, "dbrx", 1, 0},         {SET_QWEN2, "qwen2", 0, 0},    {SET_QWEN2, "megrez", 1, 0},
};

static const char *const k_set_names[] = {"GPT-2", "StarCoder/SmolLM2", "Falcon", "Llama-3", "Qwen2"};

#define MAX_STEPS 8

/* ByteLevel without a prefix space, running its own GPT-2 regex or not. */
static int step_bytelevel(const json_value *s, int use_regex)
{
    return is_type(s, "ByteLevel") && get_bool(s, "add_prefix_space", 1) == 0 &&
           get_bool(s, "use_regex", 1) == use_regex;
}

static int step_split(const json_value *s, const char *regex)
{
    const json_value *p = get(s, "pattern");
    const json_value *behavior = get(s, "behavior");
    return is_type(s, "Split") && p && p->type == JSON_OBJECT && str_is(get(p, "Regex"), regex) &&
           str_is(behavior, "Isolated") && get_bool(s, "invert", 0) == 0;
}

static int step_digits(const json_value *s, int individual)
{
    return is_type(s, "Digits") && get_bool(s, "individual_digits", 0) == individual;
}

/* A readable account of the steps, for the message that refuses them. */
static void describe_steps(const json_value *const *steps, uint32_t n, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (uint32_t i = 0; i < n && at < cap; i++) {
        const json_value *s = steps[i];
        const json_value *p = get(s, "pattern");
        const json_value *re = p && p->type == JSON_OBJECT ? get(p, "Regex") : NULL;
        const json_value *str = p && p->type == JSON_OBJECT ? get(p, "String") : NULL;
        int n_out;
        if (is_type(s, "Split") && (re || str) && (re ? re : str)->type == JSON_STRING)
            n_out = snprintf(out + at, cap - at, "%sSplit(%s \"%.*s\")", i ? ", " : "", re ? "Regex" : "String", 200,
                             (re ? re : str)->u.str);
        else if (is_type(s, "ByteLevel"))
            n_out = snprintf(out + at, cap - at, "%sByteLevel(add_prefix_space=%d, use_regex=%d)", i ? ", " : "",
                             get_bool(s, "add_prefix_space", 1), get_bool(s, "use_regex", 1));
        else
            n_out = snprintf(out + at, cap - at, "%s%.*s", i ? ", " : "", SHOWN, type_of(s));
        if (n_out < 0)
            break;
        at += (size_t)n_out;
    }
}

static vkllm_status byte_level_pre(conv *c, const json_value *root, const json_value *tcfg, int ignore_merges)
{
    /* The normaliser: none, or NFC (accepted, not applied; see hf_tokenizer.h). */
    const json_value *norm = get(root, "normalizer");
    if (norm && !is_type(norm, "NFC")) {
        const json_value *list = is_type(norm, "Sequence") ? get(norm, "normalizers") : NULL;
        bool ok = list && list->type == JSON_ARRAY;
        for (uint32_t i = 0; ok && i < list->n; i++)
            ok = is_type(&list->u.items[i], "NFC");
        if (!ok)
            return bad(c, "normalizer is not supported for byte-level BPE (none or NFC): ",
                       norm->type == JSON_OBJECT ? type_of(norm) : "not an object");
    }
    const json_value *pre = get(root, "pre_tokenizer");
    const json_value *steps[MAX_STEPS];
    uint32_t n = 0;
    if (pre && is_type(pre, "Sequence")) {
        const json_value *list = get(pre, "pretokenizers");
        if (!list || list->type != JSON_ARRAY || list->n > MAX_STEPS)
            return bad(c, "pre_tokenizer Sequence without a \"pretokenizers\" array of at most 8 steps", NULL);
        for (uint32_t i = 0; i < list->n; i++)
            steps[n++] = &list->u.items[i];
    } else if (pre) {
        steps[n++] = pre;
    }
    int set = -1;
    if (n == 1 && step_bytelevel(steps[0], 1))
        set = SET_GPT2;
    else if (n == 2 && step_digits(steps[0], 1) && step_bytelevel(steps[1], 1))
        set = SET_STARCODER;
    else if (n == 4 && is_type(steps[0], "Punctuation") && str_is(get(steps[0], "behavior"), "Contiguous") &&
             step_bytelevel(steps[1], 1) && step_digits(steps[2], 0) && step_split(steps[3], "[0-9][0-9][0-9]"))
        set = SET_FALCON;
    else if (n == 2 && step_split(steps[0], k_llama3_regex) && step_bytelevel(steps[1], 0))
        set = SET_LLAMA3;
    else if (n == 2 && step_split(steps[0], k_qwen2_regex) && step_bytelevel(steps[1], 0))
        set = SET_QWEN2;
    if (set < 0) {
        char desc[1024];
        describe_steps(steps, n, desc, sizeof desc);
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "%s: pre_tokenizer [%s] is not one vkllm implements (the pre-tokenizers of GPT-2, Llama-3, "
                       "Qwen2, Falcon and StarCoder/SmolLM2, with ByteLevel's add_prefix_space false)",
                       c->what, desc);
    }
    const json_value *dec = get(root, "decoder");
    if (!dec || !is_type(dec, "ByteLevel"))
        return bad(c, "byte-level BPE without a ByteLevel decoder: decoder ", dec ? type_of(dec) : "null");
    /* transformers' default since 4.45 is false */
    int clean = tcfg ? get_bool(tcfg, "clean_up_tokenization_spaces", 0) : 0;
    if (clean < 0)
        return bad(c, "tokenizer_config.json: clean_up_tokenization_spaces is not a boolean", NULL);
    const char *fallback = NULL;
    for (size_t i = 0; i < sizeof k_pre_names / sizeof *k_pre_names; i++) {
        if (k_pre_names[i].set != set || k_pre_names[i].ignore_merges != ignore_merges)
            continue;
        if (k_pre_names[i].clean == clean) {
            c->pre = k_pre_names[i].name;
            return VKLLM_OK;
        }
        if (!fallback)
            fallback = k_pre_names[i].name; /* only detokenized spaces differ */
    }
    if (!fallback)
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "%s: the %s pre-tokenizer with ignore_merges %s is not supported", c->what,
                       k_set_names[set], ignore_merges ? "true" : "false");
    c->pre = fallback;
    return VKLLM_OK;
}

/* ---- SentencePiece-style: spaces as U+2581, scores from the merges ------------------- */

#define SPM_SPACE "\xe2\x96\x81"

static int is_spm_replace(const json_value *s)
{
    const json_value *p = get(s, "pattern");
    return is_type(s, "Replace") && p && p->type == JSON_OBJECT && str_is(get(p, "String"), " ") &&
           str_is(get(s, "content"), SPM_SPACE);
}

static vkllm_status spm_spaces(conv *c, const json_value *root)
{
    /* Llama-2 style: normaliser Prepend(U+2581) + Replace(" " -> U+2581) */
    const json_value *norm = get(root, "normalizer");
    bool replace = false, prepend = false;
    if (norm) {
        const json_value *one[1] = {norm};
        const json_value *const *list = one;
        uint32_t n = 1;
        const json_value *seq = is_type(norm, "Sequence") ? get(norm, "normalizers") : NULL;
        const json_value *items[MAX_STEPS];
        if (seq) {
            if (seq->type != JSON_ARRAY || seq->n > MAX_STEPS)
                return bad(c, "normalizer Sequence without a \"normalizers\" array of at most 8 steps", NULL);
            for (uint32_t i = 0; i < seq->n; i++)
                items[i] = &seq->u.items[i];
            list = items;
            n = seq->n;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (is_spm_replace(list[i]))
                replace = true;
            else if (is_type(list[i], "Prepend") && str_is(get(list[i], "prepend"), SPM_SPACE))
                prepend = true;
            else
                return bad(c, "normalizer step is not supported for SentencePiece-style BPE (Prepend U+2581, Replace "
                           "\" \" by U+2581): ", list[i]->type == JSON_OBJECT ? type_of(list[i]) : "not an object");
        }
    }
    /* newer uploads: pre-tokenizer Metaspace(U+2581, prepend_scheme, split false) */
    const json_value *pre = get(root, "pre_tokenizer");
    if (pre) {
        if (!is_type(pre, "Metaspace") || !str_is(get(pre, "replacement"), SPM_SPACE))
            return bad(c, "pre_tokenizer is not supported for SentencePiece-style BPE (none, or Metaspace with "
                       "U+2581): ", pre->type == JSON_OBJECT ? type_of(pre) : "not an object");
        if (get_bool(pre, "split", 1) != 0)
            return bad(c, "Metaspace with split true is not supported (SentencePiece does not split words)", NULL);
        const json_value *scheme = get(pre, "prepend_scheme");
        if (scheme) {
            if (str_is(scheme, "always") || str_is(scheme, "first"))
                prepend = true;
            else if (!str_is(scheme, "never"))
                return bad(c, "Metaspace prepend_scheme is not always, first or never", NULL);
        } else {
            int legacy = get_bool(pre, "add_prefix_space", 1);
            if (legacy < 0)
                return bad(c, "Metaspace add_prefix_space is not a boolean", NULL);
            prepend = legacy != 0;
        }
        if (replace)
            return bad(c, "both a Replace normaliser and a Metaspace pre-tokenizer", NULL);
        replace = true;
    }
    if (!replace)
        return bad(c, "SentencePiece-style BPE (byte_fallback) that does not write spaces as U+2581 (no Replace "
                   "normaliser, no Metaspace pre-tokenizer)", NULL);
    c->add_space_prefix = prepend;
    c->pre = "default";
    return VKLLM_OK;
}

/* Score = minus the rank of the first merge that makes the token, so that lib/tokenizer.c
 * (highest score first) merges in tokenizer.json's order. Tokens no merge makes (single
 * characters, bytes, specials) are never formed by merging there either; they get the
 * lowest score. */
static vkllm_status spm_scores(conv *c)
{
    c->scores = malloc(c->n * sizeof *c->scores);
    if (!c->scores)
        return no_memory();
    for (uint32_t i = 0; i < c->n; i++)
        c->scores[i] = -1e9f;
    for (uint32_t i = 0; i < c->merges->n; i++) {
        const char *a, *b;
        size_t alen, blen;
        int64_t made;
        vkllm_status s = merge_parts(c, i, &a, &alen, &b, &blen, &made);
        if (s)
            return s;
        if (c->scores[made] == -1e9f)
            c->scores[made] = -(float)i;
    }
    return VKLLM_OK;
}

/* ---- special tokens (llama.cpp's SpecialVocab) --------------------------------------- */

/* The id of the added token whose content is `text`; -1 when none. */
static int64_t added_id(const conv *c, const char *text)
{
    for (uint32_t i = 0; text && i < c->n_added; i++)
        if (!strcmp(c->added[i].content->u.str, text) && strlen(text) == c->added[i].content->n)
            return c->added[i].id;
    return -1;
}

/* tokenizer_config.json's <name>_token: a string or {"content": string}. */
static const char *config_token(const json_value *tcfg, const char *key)
{
    const json_value *v = tcfg ? get(tcfg, key) : NULL;
    if (v && v->type == JSON_OBJECT)
        v = get(v, "content");
    return v && v->type == JSON_STRING ? v->u.str : NULL;
}

static const char *template_special(const json_value *item)
{
    const json_value *st = item->type == JSON_OBJECT ? get(item, "SpecialToken") : NULL;
    const json_value *id = st && st->type == JSON_OBJECT ? get(st, "id") : NULL;
    return id && id->type == JSON_STRING ? id->u.str : NULL;
}

static vkllm_status specials(conv *c, const json_value *root, const json_value *tcfg, const json_value *config,
                             const json_value *model)
{
    const char *bos = config_token(tcfg, "bos_token"), *eos = config_token(tcfg, "eos_token");
    const char *cls = config_token(tcfg, "cls_token"), *sep_t = config_token(tcfg, "sep_token");
    if (!bos && cls)
        bos = cls;
    if (!eos && sep_t)
        eos = sep_t;
    /* the post-processor: what transformers' encode adds */
    const json_value *post = get(root, "post_processor");
    if (post && post->type == JSON_OBJECT) {
        const json_value *one = post;
        const json_value *list = is_type(post, "Sequence") ? get(post, "processors") : NULL;
        uint32_t n = list && list->type == JSON_ARRAY ? list->n : 1;
        for (uint32_t i = 0; i < n; i++) {
            const json_value *p = list && list->type == JSON_ARRAY ? &list->u.items[i] : one;
            if (is_type(p, "ByteLevel")) {
                if (c->add_bos < 0)
                    c->add_bos = 0;
                if (c->add_eos < 0)
                    c->add_eos = 0;
            } else if (is_type(p, "TemplateProcessing")) {
                const json_value *single = get(p, "single");
                if (!single || single->type != JSON_ARRAY)
                    return bad(c, "post_processor TemplateProcessing without a \"single\" array", NULL);
                if (single->n < 2)
                    continue;
                const char *first = template_special(&single->u.items[0]);
                const char *last = template_special(&single->u.items[single->n - 1]);
                if (first) {
                    if (!bos)
                        bos = first;
                    c->add_bos = !strcmp(first, bos) || (cls && !strcmp(first, cls));
                }
                if (last) {
                    if (!eos)
                        eos = last;
                    c->add_eos = !strcmp(last, eos);
                }
            } else if (is_type(p, "RobertaProcessing") || is_type(p, "BertProcessing")) {
                c->add_bos = c->add_eos = 1;
            }
        }
    }
    if (tcfg) {
        int ab = get_bool(tcfg, "add_bos_token", -2), ae = get_bool(tcfg, "add_eos_token", -2);
        if (ab == -1 || ae == -1)
            return bad(c, "tokenizer_config.json: add_bos_token / add_eos_token is not a boolean", NULL);
        if (c->add_bos < 0 && ab >= 0)
            c->add_bos = ab;
        if (c->add_eos < 0 && ae >= 0)
            c->add_eos = ae;
    }
    c->bos = added_id(c, bos);
    c->eos = added_id(c, eos);
    c->unk = added_id(c, config_token(tcfg, "unk_token"));
    c->sep = added_id(c, sep_t);
    c->pad = added_id(c, config_token(tcfg, "pad_token"));
    const json_value *unk = get(model, "unk_token");
    if (c->unk < 0 && unk && unk->type == JSON_STRING)
        c->unk = vocab_find(c, unk);
    /* config.json's ids fill what is still unset */
    static const char *const keys[] = {"bos_token_id", "eos_token_id", "unk_token_id", "sep_token_id",
                                       "pad_token_id"};
    int64_t *ids[] = {&c->bos, &c->eos, &c->unk, &c->sep, &c->pad};
    for (size_t i = 0; config && i < 5; i++) {
        const json_value *v = get(config, keys[i]);
        if (*ids[i] < 0 && v && v->type == JSON_NUMBER && v->u.num.is_int && v->u.num.i >= 0 && v->u.num.i < c->n)
            *ids[i] = v->u.num.i;
    }
    return VKLLM_OK;
}

/* ---- the keys ------------------------------------------------------------------------ */

static vkllm_status kv_push(gguf_file *f, uint64_t *cap_kv, const char *key, uint32_t type, gguf_kv **out)
{
    if (f->n_kv == *cap_kv) {
        uint64_t cap = *cap_kv ? *cap_kv * 2 : 32;
        gguf_kv *grown = realloc(f->kv, cap * sizeof *grown);
        if (!grown)
            return no_memory();
        f->kv = grown;
        *cap_kv = cap;
    }
    gguf_kv *kv = &f->kv[f->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = strdup(key)))
        return no_memory();
    kv->type = type;
    f->n_kv++;
    *out = kv;
    return VKLLM_OK;
}

static vkllm_status put_scalar(gguf_file *f, uint64_t *cap, const char *key, uint32_t type, uint64_t v)
{
    gguf_kv *kv;
    vkllm_status s = kv_push(f, cap, key, type, &kv);
    if (!s)
        kv->v.u = v;
    return s;
}

static vkllm_status put_str(gguf_file *f, uint64_t *cap, const char *key, const char *v)
{
    gguf_kv *kv;
    vkllm_status s = kv_push(f, cap, key, GGUF_STRING, &kv);
    if (!s)
        kv->v.s = (gguf_str){v, strlen(v)};
    return s;
}

/* A string array key; `strings` (malloc'd) belongs to the key from then on. */
static vkllm_status put_strings(gguf_file *f, uint64_t *cap, const char *key, gguf_str *strings, uint64_t n)
{
    gguf_kv *kv;
    vkllm_status s = kv_push(f, cap, key, GGUF_ARRAY, &kv);
    if (s) {
        free(strings);
        return s;
    }
    kv->v.a = (gguf_array){.elem_type = GGUF_STRING, .n = n, .strings = strings};
    return VKLLM_OK;
}

static vkllm_status put_scalars(gguf_file *f, uint64_t *cap, const char *key, uint32_t elem_type, const void *data,
                                uint64_t n)
{
    gguf_kv *kv;
    vkllm_status s = kv_push(f, cap, key, GGUF_ARRAY, &kv);
    if (!s)
        kv->v.a = (gguf_array){.elem_type = elem_type, .n = n, .data = data};
    return s;
}

/* Copies `len` bytes into the store; with spaces, U+2581 becomes " " (llama.cpp
 * pre-normalises user-defined tokens of byte-level vocabularies so). */
static const char *copy_text(conv *c, const char *s, size_t len, int spaces, uint64_t *out_len)
{
    char *p = store_alloc(c->store, len + 1);
    if (!p)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (spaces && i + 3 <= len && !memcmp(s + i, SPM_SPACE, 3)) {
            p[k++] = ' ';
            i += 2;
        } else {
            p[k++] = s[i];
        }
    }
    p[k] = '\0';
    *out_len = k;
    return p;
}

/* What llama.cpp's converter takes for special although transformers does not mark it. */
static int looks_special(const char *s, size_t n)
{
    static const char fw_open[] = "<\xef\xbd\x9c", fw_close[] = "\xef\xbd\x9c>"; /* <｜ ｜> */
    if ((n == 5 && !memcmp(s, "<pad>", 5)) || (n == 6 && !memcmp(s, "<mask>", 6)) ||
        (n == 7 && !memcmp(s, "<2mass>", 7)) || (n == 7 && !memcmp(s, "[@BOS@]", 7)))
        return 1;
    if (n >= 4 && !memcmp(s, "<|", 2) && !memcmp(s + n - 2, "|>", 2))
        return 1;
    if (n >= 8 && !memcmp(s, fw_open, 4) && !memcmp(s + n - 4, fw_close, 4))
        return 1;
    return n >= 8 && !memcmp(s, "<unused", 7) && s[n - 1] == '>';
}

static int is_byte_token(const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdefABCDEF";
    return n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && s[3] && s[4] && strchr(hex, s[3]) && strchr(hex, s[4]);
}

static vkllm_status emit(conv *c, gguf_file *f, uint64_t *cap)
{
    gguf_str *tokens = calloc(c->n, sizeof *tokens);
    int32_t *types = c->store->types = malloc(c->n * sizeof *types);
    if (!tokens || !types) {
        free(tokens);
        return no_memory();
    }
    for (uint32_t id = 0; id < c->n; id++) {
        const char *text;
        uint64_t len;
        int32_t a = c->added_at[id];
        if (a >= 0) {
            const added_token *t = &c->added[a];
            bool control = t->special || (!c->spm && looks_special(t->content->u.str, t->content->n));
            types[id] = control ? TT_CONTROL : TT_USER_DEFINED;
            text = copy_text(c, t->content->u.str, t->content->n, !c->spm && !control, &len);
        } else if (id < c->n_base && c->vtext[id]) {
            types[id] = c->spm && is_byte_token(c->vtext[id], c->vlen[id]) ? TT_BYTE : TT_NORMAL;
            text = copy_text(c, c->vtext[id], c->vlen[id], 0, &len);
        } else {
            char pad[32];
            snprintf(pad, sizeof pad, "[PAD%u]", id);
            types[id] = TT_UNUSED;
            text = copy_text(c, pad, strlen(pad), 0, &len);
        }
        if (!text) {
            free(tokens);
            return no_memory();
        }
        tokens[id] = (gguf_str){text, len};
    }
    vkllm_status s;
    if ((s = put_strings(f, cap, "tokenizer.ggml.tokens", tokens, c->n)) ||
        (s = put_str(f, cap, "tokenizer.ggml.model", c->spm ? "llama" : "gpt2")) ||
        (s = put_str(f, cap, "tokenizer.ggml.pre", c->pre)) ||
        (s = put_scalars(f, cap, "tokenizer.ggml.token_type", GGUF_INT32, types, c->n)))
        return s;
    if (c->spm) {
        c->store->scores = c->scores;
        c->scores = NULL;
        if ((s = put_scalars(f, cap, "tokenizer.ggml.scores", GGUF_FLOAT32, c->store->scores, c->n)) ||
            (s = put_scalar(f, cap, "tokenizer.ggml.add_space_prefix", GGUF_BOOL, (uint64_t)c->add_space_prefix)))
            return s;
    } else {
        /* merges as "left right"; a space inside a part is written as U+0120 (llama.cpp) */
        gguf_str *merges = calloc(c->merges->n ? c->merges->n : 1, sizeof *merges);
        if (!merges)
            return no_memory();
        for (uint32_t i = 0; i < c->merges->n; i++) {
            const char *a = NULL, *b = NULL;
            size_t alen = 0, blen = 0;
            int64_t made;
            if ((s = merge_parts(c, i, &a, &alen, &b, &blen, &made))) {
                free(merges);
                return s;
            }
            size_t spaces = 0;
            for (size_t k = 0; k < alen; k++)
                spaces += a[k] == ' ';
            for (size_t k = 0; k < blen; k++)
                spaces += b[k] == ' ';
            char *p = store_alloc(c->store, alen + blen + spaces + 2);
            if (!p) {
                free(merges);
                return no_memory();
            }
            size_t at = 0;
            for (int part = 0; part < 2; part++) {
                const char *q = part ? b : a;
                size_t ql = part ? blen : alen;
                if (part)
                    p[at++] = ' ';
                for (size_t k = 0; k < ql; k++) {
                    if (q[k] == ' ') {
                        p[at++] = '\xc4';
                        p[at++] = '\xa0';
                    } else {
                        p[at++] = q[k];
                    }
                }
            }
            p[at] = '\0';
            merges[i] = (gguf_str){p, at};
        }
        if ((s = put_strings(f, cap, "tokenizer.ggml.merges", merges, c->merges->n)))
            return s;
    }
    static const char *const id_keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                          "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.seperator_token_id",
                                          "tokenizer.ggml.padding_token_id"};
    const int64_t ids[] = {c->bos, c->eos, c->unk, c->sep, c->pad};
    for (size_t i = 0; i < 5; i++)
        if (ids[i] >= 0 && (s = put_scalar(f, cap, id_keys[i], GGUF_UINT32, (uint64_t)ids[i])))
            return s;
    if (c->add_bos >= 0 && (s = put_scalar(f, cap, "tokenizer.ggml.add_bos_token", GGUF_BOOL, (uint64_t)c->add_bos)))
        return s;
    if (c->add_eos >= 0 && (s = put_scalar(f, cap, "tokenizer.ggml.add_eos_token", GGUF_BOOL, (uint64_t)c->add_eos)))
        return s;
    return VKLLM_OK;
}

/* tokenizer_config.json's chat_template, as GGUF's tokenizer.chat_template: a string, or in
 * the list form ([{"name": ..., "template": ...}]) the one named "default". */
static vkllm_status chat_template(conv *c, const json_value *tcfg, gguf_file *f, uint64_t *cap)
{
    const json_value *t = tcfg ? get(tcfg, "chat_template") : NULL;
    for (uint32_t i = 0; t && t->type == JSON_ARRAY && i < t->n; i++) {
        const json_value *name = get(&t->u.items[i], "name");
        if (name && name->type == JSON_STRING && !strcmp(name->u.str, "default")) {
            t = get(&t->u.items[i], "template");
            break;
        }
    }
    if (!t || t->type != JSON_STRING)
        return VKLLM_OK; /* none (or a form vkllm does not read): chat_apply then asks for a format */
    uint64_t len;
    const char *text = copy_text(c, t->u.str, t->n, 0, &len);
    return text ? put_str(f, cap, "tokenizer.chat_template", text) : no_memory();
}

static vkllm_status convert(conv *c, const json_value *root, const json_value *tcfg, const json_value *config,
                            uint32_t n_vocab, gguf_file *f, uint64_t *cap)
{
    if (!root || root->type != JSON_OBJECT)
        return bad(c, "not a JSON object", NULL);
    if (tcfg && tcfg->type != JSON_OBJECT)
        return bad(c, "tokenizer_config.json is not a JSON object", NULL);
    const json_value *model = get(root, "model");
    if (!model || model->type != JSON_OBJECT)
        return bad(c, "no \"model\" object", NULL);
    if (!is_type(model, "BPE"))
        return vk_fail(VKLLM_ERR_UNSUPPORTED, "%s: model type \"%.*s\" is not supported (only BPE)", c->what, SHOWN,
                       type_of(model));
    const json_value *dropout = get(model, "dropout");
    if (dropout && !(dropout->type == JSON_NUMBER && dropout->u.num.d == 0))
        return bad(c, "BPE dropout is not supported", NULL);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const json_value *v = get(model, affixes[i]);
        if (v && !(v->type == JSON_STRING && v->n == 0))
            return bad(c, "BPE with a non-empty ", affixes[i]);
    }
    int byte_fallback = get_bool(model, "byte_fallback", 0), ignore_merges = get_bool(model, "ignore_merges", 0);
    if (byte_fallback < 0 || ignore_merges < 0)
        return bad(c, "model.byte_fallback / model.ignore_merges is not a boolean", NULL);
    c->merges = get(model, "merges");
    if (c->merges && c->merges->type != JSON_ARRAY)
        return bad(c, "model.merges is not an array", NULL);
    static const json_value no_merges = {.type = JSON_ARRAY};
    if (!c->merges)
        c->merges = &no_merges;
    vkllm_status s;
    if ((s = read_vocab(c, get(model, "vocab"))) || (s = read_added(c, get(root, "added_tokens"))) ||
        (s = size_vocab(c, n_vocab)))
        return s;

    /* which kind: a ByteLevel step anywhere in the pre-tokenizer makes it byte-level */
    const json_value *pre = get(root, "pre_tokenizer");
    bool byte_level = pre && is_type(pre, "ByteLevel");
    const json_value *list = pre && is_type(pre, "Sequence") ? get(pre, "pretokenizers") : NULL;
    for (uint32_t i = 0; list && list->type == JSON_ARRAY && i < list->n; i++)
        byte_level |= is_type(&list->u.items[i], "ByteLevel") != 0;
    if (byte_level) {
        if (byte_fallback)
            return bad(c, "byte-level BPE with byte_fallback is not supported", NULL);
        if ((s = byte_level_pre(c, root, tcfg, ignore_merges)))
            return s;
    } else if (byte_fallback) {
        c->spm = true;
        if (ignore_merges)
            return bad(c, "SentencePiece-style BPE with ignore_merges is not supported", NULL);
        if ((s = spm_spaces(c, root)) || (s = spm_scores(c)))
            return s;
    } else {
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "%s: BPE that is neither byte-level (a ByteLevel pre-tokenizer) nor SentencePiece-style "
                       "(byte_fallback) is not supported; pre_tokenizer %s", c->what, pre ? type_of(pre) : "null");
    }
    if ((s = specials(c, root, tcfg, config, model)) || (s = emit(c, f, cap)))
        return s;
    return chat_template(c, tcfg, f, cap);
}

vkllm_status hf_tokenizer_add_json(const char *what, const json_value *tokenizer, const json_value *tokenizer_config,
                                   const json_value *config, uint32_t n_vocab, gguf_file *f, uint64_t *cap_kv,
                                   hf_tokenizer **store)
{
    *store = calloc(1, sizeof **store);
    if (!*store)
        return no_memory();
    conv c = {.what = what, .store = *store, .bos = -1, .eos = -1, .unk = -1, .sep = -1, .pad = -1,
              .add_bos = -1, .add_eos = -1};
    vkllm_status s = convert(&c, tokenizer, tokenizer_config, config, n_vocab, f, cap_kv);
    free(c.vtext);
    free(c.vlen);
    free(c.slot);
    free(c.added);
    free(c.added_at);
    free(c.scores);
    return s;
}

/* ---- files --------------------------------------------------------------------------- */

/* Reads and parses a JSON file of at most HF_MAX_JSON_BYTES. */
static vkllm_status read_json_file(const char *path, json_doc **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return vk_fail(VKLLM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > HF_MAX_JSON_BYTES) {
        fclose(fp);
        return vk_fail(VKLLM_ERR_BAD_FILE, "%s is not a regular file of at most %u bytes", path, HF_MAX_JSON_BYTES);
    }
    size_t size = (size_t)sb.st_size;
    char *buf = malloc(size + 1);
    if (!buf) {
        fclose(fp);
        return no_memory();
    }
    size_t n = fread(buf, 1, size + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    vkllm_status s;
    if (err || n > size)
        s = vk_fail(VKLLM_ERR_IO, "cannot read %s (or it changed while being read)", path);
    else if ((s = json_parse(buf, n, out)))
        vk_fail_prefix(s, "%s", path);
    free(buf);
    return s;
}

static int regular_file(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

vkllm_status hf_tokenizer_add(const char *dir, const json_value *config, uint32_t n_vocab, gguf_file *f,
                              uint64_t *cap_kv, hf_tokenizer **store)
{
    char path[4096], cfg_path[4096];
    *store = NULL;
    int n1 = snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    int n2 = snprintf(cfg_path, sizeof cfg_path, "%s/tokenizer_config.json", dir);
    if (n1 < 0 || (size_t)n1 >= sizeof path || n2 < 0 || (size_t)n2 >= sizeof cfg_path)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "path %s/tokenizer_config.json is too long", dir);
    if (!regular_file(path))
        return VKLLM_OK;
    json_doc *doc = NULL, *cfg_doc = NULL;
    vkllm_status s = read_json_file(path, &doc);
    if (!s && regular_file(cfg_path))
        s = read_json_file(cfg_path, &cfg_doc);
    if (!s)
        s = hf_tokenizer_add_json(path, json_root(doc), cfg_doc ? json_root(cfg_doc) : NULL, config, n_vocab, f,
                                  cap_kv, store);
    json_free(doc);
    json_free(cfg_doc);
    return s;
}

static void release_store(void *owner) { hf_tokenizer_free(owner); }

vkllm_status hf_tokenizer_open(const char *dir, gguf_file **out)
{
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f)
        return no_memory();
    f->version = 3;
    f->alignment = 32;
    f->release = release_store;
    uint64_t cap = 0;
    hf_tokenizer *store = NULL;
    vkllm_status s = hf_tokenizer_add(dir, NULL, 0, f, &cap, &store);
    f->owner = store;
    if (!s && !store)
        s = vk_fail(VKLLM_ERR_NOT_FOUND, "%s has no tokenizer.json", dir);
    if (s) {
        gguf_close(f);
        return s;
    }
    *out = f;
    return VKLLM_OK;
}
