/* Tokenizers built from GGUF tokenizer.ggml.* metadata, following llama.cpp's behaviour
 * (its test vectors are the reference):
 *   "llama": SentencePiece BPE over the text with spaces as U+2581, merging the adjacent
 *            pair whose merged text is the highest-scoring token, byte fallback <0xNN>;
 *   "gpt2":  byte-level BPE: a pre-tokenizer (chosen by tokenizer.ggml.pre) splits the
 *            text into words, each word's bytes are mapped to GPT-2's printable
 *            characters, then merges are applied lowest rank first;
 *   "bert":  WordPiece, greedy longest match after BERT's basic normalisation.
 * Special tokens (control, user-defined, unknown) are cut out of the text first.
 *
 * The pre-tokenizers are hand-written scanners. llama.cpp runs each pre-tokenizer as a
 * list of regexes applied one after the other: every regex splits each piece left by the
 * previous one into matches and the unmatched gaps between them. Two regexes (GPT-2's
 * and Llama-3's) go through llama.cpp's own scanners; the others through std::regex
 * (ECMAScript: leftmost match, first alternative that matches, greedy with
 * backtracking). The scanners below reproduce both behaviours. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "unicode.h"

/* ---- token attributes (llama.cpp's llama_token_attr bits) --------------------------- */

#define ATTR_UNKNOWN (1u << 0)
#define ATTR_UNUSED (1u << 1)
#define ATTR_NORMAL (1u << 2)
#define ATTR_CONTROL (1u << 3)
#define ATTR_USER_DEFINED (1u << 4)
#define ATTR_BYTE (1u << 5)
#define ATTR_LSTRIP (1u << 7)
#define ATTR_RSTRIP (1u << 8)

enum vocab_type { VOCAB_SPM, VOCAB_BPE, VOCAB_WPM };

/* Pre-tokenizer regex sets (see pre_passes()). */
enum pre_type {
    PRE_DEFAULT,
    PRE_GPT2,
    PRE_FALCON,
    PRE_STARCODER,
    PRE_LLAMA3,
    PRE_QWEN2,
    PRE_DEEPSEEK_LLM,
    PRE_DEEPSEEK_CODER
};

/* Strings stored back to back; entry i is blob[off[i] .. off[i]+len[i]) plus a NUL. */
typedef struct strtab {
    char *blob;
    uint64_t *off;
    uint32_t *len;
    uint32_t n;
} strtab;

/* Open-addressing hash map from a strtab's strings to their index. */
typedef struct strmap {
    int32_t *slot; /* index into the strtab, -1 when empty */
    uint32_t *hash;
    uint32_t mask;
} strmap;

struct vk_vocab {
    int type;
    int pre;
    uint32_t n;
    strtab tok;
    float *score;
    uint32_t *attr;
    strmap tok_map;
    strtab merges; /* "left right", index = rank */
    strmap merge_map;

    int32_t bos, eos, eot, eom, unk, sep, pad;
    int32_t *eog;
    uint32_t n_eog;
    int32_t *special; /* control/user-defined/unknown tokens, longest text first */
    uint32_t n_special;

    int add_space_prefix, add_bos, add_eos, ignore_merges, clean_spaces;
    int wpm_lowercase, wpm_strip_accents;
    uint32_t max_token_len;

    /* GPT-2 byte <-> printable character mapping */
    char byte_utf8[256][2];
    uint8_t byte_utf8_len[256];
    int16_t cp_byte[324]; /* code point -> byte, -1 if none */
};

/* ---- small containers --------------------------------------------------------------- */

typedef struct ivec {
    int32_t *v;
    size_t n, cap;
    int oom;
} ivec;

static void ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, cap * sizeof *nv);
        if (!nv) {
            a->oom = 1;
            return;
        }
        a->v = nv;
        a->cap = cap;
    }
    a->v[a->n++] = x;
}

typedef struct span {
    uint32_t a, b; /* [a, b) */
} span;

typedef struct spanvec {
    span *v;
    size_t n, cap;
    int oom;
} spanvec;

static void spans_push(spanvec *s, uint32_t a, uint32_t b) {
    if (a >= b) {
        return;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        span *nv = realloc(s->v, cap * sizeof *nv);
        if (!nv) {
            s->oom = 1;
            return;
        }
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n].a = a;
    s->v[s->n].b = b;
    s->n++;
}

typedef struct bytebuf {
    char *v;
    size_t n, cap;
    int oom;
} bytebuf;

static void buf_add(bytebuf *b, const char *s, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) {
            cap *= 2;
        }
        char *nv = realloc(b->v, cap);
        if (!nv) {
            b->oom = 1;
            return;
        }
        b->v = nv;
        b->cap = cap;
    }
    memcpy(b->v + b->n, s, n);
    b->n += n;
}

/* ---- string table and hash map ------------------------------------------------------ */

static uint32_t fnv1a(uint32_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 16777619u;
    }
    return h;
}
#define FNV_SEED 2166136261u

static void strtab_free(strtab *t) {
    free(t->blob);
    free(t->off);
    free(t->len);
    memset(t, 0, sizeof *t);
}

static int strmap_build(strmap *m, const strtab *t, int keep_first_duplicate,
                        uint32_t *dup_a, uint32_t *dup_b) {
    uint32_t cap = 16;
    while (cap < 2u * t->n + 2u) {
        cap *= 2;
    }
    m->slot = malloc((size_t)cap * sizeof *m->slot);
    m->hash = malloc((size_t)cap * sizeof *m->hash);
    if (!m->slot || !m->hash) {
        return -1;
    }
    memset(m->slot, 0xFF, (size_t)cap * sizeof *m->slot);
    m->mask = cap - 1;
    for (uint32_t i = 0; i < t->n; i++) {
        const char *s = t->blob + t->off[i];
        const uint32_t h = fnv1a(FNV_SEED, s, t->len[i]);
        uint32_t k = h & m->mask;
        for (;; k = (k + 1) & m->mask) {
            const int32_t j = m->slot[k];
            if (j < 0) {
                m->slot[k] = (int32_t)i;
                m->hash[k] = h;
                break;
            }
            if (m->hash[k] == h && t->len[j] == t->len[i] &&
                memcmp(t->blob + t->off[j], s, t->len[i]) == 0) {
                if (!keep_first_duplicate) {
                    *dup_a = (uint32_t)j;
                    *dup_b = i;
                    return 1;
                }
                break; /* the earlier entry wins */
            }
        }
    }
    return 0;
}

static void strmap_free(strmap *m) {
    free(m->slot);
    free(m->hash);
    memset(m, 0, sizeof *m);
}

/* Looks up the concatenation of up to three byte strings without building it. */
static int32_t strmap_find3(const strmap *m, const strtab *t, const char *s1, size_t n1,
                            const char *s2, size_t n2, const char *s3, size_t n3) {
    if (!m->slot) {
        return -1;
    }
    uint32_t h = fnv1a(FNV_SEED, s1, n1);
    h = fnv1a(h, s2, n2);
    h = fnv1a(h, s3, n3);
    const size_t n = n1 + n2 + n3;
    for (uint32_t k = h & m->mask;; k = (k + 1) & m->mask) {
        const int32_t j = m->slot[k];
        if (j < 0) {
            return -1;
        }
        if (m->hash[k] == h && t->len[j] == n) {
            const char *e = t->blob + t->off[j];
            if (memcmp(e, s1, n1) == 0 && memcmp(e + n1, s2, n2) == 0 &&
                memcmp(e + n1 + n2, s3, n3) == 0) {
                return j;
            }
        }
    }
}

static int32_t token_find(const vk_vocab *v, const char *s, size_t n) {
    return strmap_find3(&v->tok_map, &v->tok, s, n, "", 0, "", 0);
}

static const char *tok_text(const vk_vocab *v, int32_t id) {
    return v->tok.blob + v->tok.off[id];
}

/* ---- GGUF metadata helpers ---------------------------------------------------------- */

static int meta_bool(const gguf_file *f, const char *key, int *out) {
    uint64_t u;
    if (gguf_get_u64(f, key, &u) != VKLLM_OK) {
        vk_error_clear();
        return 0;
    }
    *out = u != 0;
    return 1;
}

/* Special token ids are advisory in llama.cpp: an absent key keeps the default, an id past
 * the vocabulary (e.g. 0xFFFFFFFF for "none") is ignored. We do the same. */
static void meta_token_id(const gguf_file *f, const char *key, uint32_t n, int32_t *id) {
    uint64_t u;
    if (gguf_get_u64(f, key, &u) != VKLLM_OK) {
        vk_error_clear();
        return;
    }
    if (u < n) {
        *id = (int32_t)u;
    }
}

static vkllm_status meta_string_array(const gguf_file *f, const char *key, int required,
                                      const gguf_array **out) {
    *out = NULL;
    vkllm_status st = gguf_get_arr(f, key, out);
    if (st == VKLLM_ERR_NOT_FOUND) {
        vk_error_clear();
        *out = NULL;
        return required ? vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: missing key %s", key)
                        : VKLLM_OK;
    }
    if (st != VKLLM_OK) {
        return vk_fail_prefix(VKLLM_ERR_BAD_FILE, "tokenizer");
    }
    if ((*out)->elem_type != GGUF_STRING) {
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: %s must be an array of strings, not of %s",
                       key, gguf_value_type_name((*out)->elem_type));
    }
    return VKLLM_OK;
}

/* Copies a string array. With rename_empty, an empty string becomes "[EMPTY_<i>]" as
 * llama.cpp names empty tokens (so that they stay distinct). */
static vkllm_status strtab_from_array(strtab *t, const gguf_array *a, const char *key,
                                      int rename_empty) {
    uint64_t total = 0;
    if (a->n > (uint64_t)INT32_MAX) {
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: %s has %llu entries, too many", key,
                       (unsigned long long)a->n);
    }
    for (uint64_t i = 0; i < a->n; i++) {
        if (a->strings[i].len > UINT32_MAX / 2) {
            return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: %s[%llu] is %llu bytes long", key,
                           (unsigned long long)i, (unsigned long long)a->strings[i].len);
        }
        total += (a->strings[i].len ? a->strings[i].len : 24) + 1;
    }
    t->n = (uint32_t)a->n;
    t->blob = malloc(total ? total : 1);
    t->off = malloc((a->n ? a->n : 1) * sizeof *t->off);
    t->len = malloc((a->n ? a->n : 1) * sizeof *t->len);
    if (!t->blob || !t->off || !t->len) {
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory for %s", key);
    }
    uint64_t pos = 0;
    for (uint64_t i = 0; i < a->n; i++) {
        t->off[i] = pos;
        t->len[i] = (uint32_t)a->strings[i].len;
        if (a->strings[i].len) {
            memcpy(t->blob + pos, a->strings[i].data, a->strings[i].len);
        } else if (rename_empty) {
            t->len[i] =
                (uint32_t)snprintf(t->blob + pos, 24, "[EMPTY_%llu]", (unsigned long long)i);
        }
        pos += a->strings[i].len ? a->strings[i].len : 24;
        t->blob[pos++] = '\0';
    }
    return VKLLM_OK;
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct pre_info {
    const char *name;
    int pre;
    int clean_spaces; /* -1: keep the default (on) */
    int ignore_merges;
    int add_bos;
    int no_bos; /* the model has no BOS token by default */
} pre_info;

/* tokenizer.ggml.pre values and what llama.cpp sets for them. Only names whose regexes
 * are implemented here are listed; any other name is refused. */
static const pre_info k_pre[] = {
    {"default", PRE_DEFAULT, -1, 0, 0, 0},
    {"gpt-2", PRE_GPT2, -1, 0, 0, 0},
    {"phi-2", PRE_GPT2, -1, 0, 0, 0},
    {"jina-es", PRE_GPT2, -1, 0, 0, 0},
    {"jina-de", PRE_GPT2, -1, 0, 0, 0},
    {"jina-v2-es", PRE_GPT2, -1, 0, 0, 0},
    {"jina-v2-de", PRE_GPT2, -1, 0, 0, 0},
    {"gigachat", PRE_GPT2, -1, 0, 0, 0},
    {"mellum", PRE_GPT2, -1, 0, 0, 0},
    {"mpt", PRE_GPT2, -1, 0, 0, 0},
    {"olmo", PRE_GPT2, -1, 0, 0, 0},
    {"jais", PRE_GPT2, -1, 0, 0, 0},
    {"exaone4", PRE_GPT2, -1, 0, 0, 0},
    {"a.x-4.0", PRE_GPT2, -1, 0, 0, 0},
    {"trillion", PRE_GPT2, 0, 0, 0, 0},
    {"granite-docling", PRE_GPT2, 0, 0, 0, 0},
    {"falcon", PRE_FALCON, -1, 0, 0, 0},
    {"starcoder", PRE_STARCODER, -1, 0, 0, 0},
    {"refact", PRE_STARCODER, -1, 0, 0, 0},
    {"codeshell", PRE_STARCODER, -1, 0, 0, 0},
    {"exaone", PRE_STARCODER, -1, 0, 0, 0},
    {"minerva-7b", PRE_STARCODER, -1, 0, 0, 0},
    {"mellum2", PRE_STARCODER, -1, 0, 0, 0},
    {"command-r", PRE_STARCODER, 0, 0, 0, 0},
    {"smollm", PRE_STARCODER, 0, 0, 0, 0},
    {"llama3", PRE_LLAMA3, -1, 1, 1, 0},
    {"llama-v3", PRE_LLAMA3, -1, 1, 1, 0},
    {"llama-bpe", PRE_LLAMA3, -1, 1, 1, 0},
    {"falcon3", PRE_LLAMA3, -1, 1, 1, 0},
    {"falcon-h1", PRE_LLAMA3, -1, 1, 1, 0},
    {"pixtral", PRE_LLAMA3, -1, 1, 1, 0},
    {"midm-2.0", PRE_LLAMA3, -1, 1, 1, 0},
    {"lfm2", PRE_LLAMA3, -1, 1, 1, 0},
    {"dbrx", PRE_LLAMA3, -1, 0, 0, 0},
    {"smaug-bpe", PRE_LLAMA3, -1, 0, 0, 0},
    {"chatglm-bpe", PRE_LLAMA3, -1, 0, 0, 1},
    {"glm4", PRE_LLAMA3, -1, 0, 0, 1},
    {"qwen2", PRE_QWEN2, 0, 0, 0, 0},
    {"deepseek-r1-qwen", PRE_QWEN2, 0, 0, 0, 0},
    {"kormo", PRE_QWEN2, 0, 0, 0, 0},
    {"megrez", PRE_QWEN2, -1, 0, 0, 0},
    {"stablelm2", PRE_QWEN2, -1, 0, 0, 0},
    {"deepseek-llm", PRE_DEEPSEEK_LLM, 0, 0, 0, 0},
    {"deepseek-coder", PRE_DEEPSEEK_CODER, 0, 0, 0, 0},
};

static int name_in(const char *s, const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, names[i]) == 0) {
            return 1;
        }
    }
    return 0;
}
#define NAME_IN(s, list) name_in((s), (list), sizeof(list) / sizeof((list)[0]))

/* Token texts by which llama.cpp recognises special tokens that metadata does not name.
 * \xef\xbd\x9c is U+FF5C (fullwidth bar), \xe2\x96\x81 is U+2581. */
static const char *const k_eot_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]",
    ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"),
    "<end_of_utterance>"};
static const char *const k_eom_names[] = {"<|eom_id|>"};
static const char *const k_fim_pre_names[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>",
    ("<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>"),
    "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", "<|prefix|>"};
static const char *const k_fim_suf_names[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>",
    ("<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>"),
    "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", "<|suffix|>"};
static const char *const k_fim_mid_names[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>",
    ("<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>"),
    "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", "<|middle|>"};
static const char *const k_fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
                                              "[PAD]"};
static const char *const k_fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                              "<REPO>", "<reponame>"};
static const char *const k_fim_sep_names[] = {"<|file_sep|>"};
static const char *const k_eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]",
    "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    ("<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"), "[e~["};
static const char *const k_always_user_defined[] = {"<|channel|>", "<|message|>", "<|start|>",
                                                    "<|constrain|>"};

static void eog_add(vk_vocab *v, int32_t id) {
    if (id < 0) {
        return;
    }
    for (uint32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) {
            return;
        }
    }
    v->eog[v->n_eog++] = id; /* capacity is n + 8, see vk_vocab_load */
}

static void eog_remove(vk_vocab *v, int32_t id) {
    for (uint32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) {
            v->eog[i] = v->eog[--v->n_eog];
            return;
        }
    }
}

static int32_t eog_find_text(const vk_vocab *v, const char *text) {
    for (uint32_t i = 0; i < v->n_eog; i++) {
        if (strcmp(tok_text(v, v->eog[i]), text) == 0) {
            return v->eog[i];
        }
    }
    return -1;
}

/* What llama.cpp derives from token texts: EOT/EOM/FIM ids when the metadata has none,
 * the end-of-generation set, and CONTROL marks on all of those. Ids are visited in
 * increasing order (llama.cpp walks a hash map, so its pick among several candidate EOT
 * texts is arbitrary; every candidate is marked CONTROL either way). */
static void detect_special_by_text(vk_vocab *v, int32_t fim[6]) {
    for (uint32_t id = 0; id < v->n; id++) {
        const char *t = tok_text(v, (int32_t)id);
        uint32_t *attr = &v->attr[id];
        if (v->eot < 0 && NAME_IN(t, k_eot_names)) {
            v->eot = (int32_t)id;
            *attr |= ATTR_CONTROL;
        }
        if (v->eom < 0 && NAME_IN(t, k_eom_names)) {
            v->eom = (int32_t)id;
            *attr |= ATTR_CONTROL;
        }
        static const char *const *const fim_lists[6] = {k_fim_pre_names, k_fim_suf_names,
                                                         k_fim_mid_names, k_fim_pad_names,
                                                         k_fim_rep_names, k_fim_sep_names};
        static const size_t fim_n[6] = {
            sizeof k_fim_pre_names / sizeof *k_fim_pre_names,
            sizeof k_fim_suf_names / sizeof *k_fim_suf_names,
            sizeof k_fim_mid_names / sizeof *k_fim_mid_names,
            sizeof k_fim_pad_names / sizeof *k_fim_pad_names,
            sizeof k_fim_rep_names / sizeof *k_fim_rep_names,
            sizeof k_fim_sep_names / sizeof *k_fim_sep_names};
        for (int k = 0; k < 6; k++) {
            if (fim[k] < 0 && name_in(t, fim_lists[k], fim_n[k])) {
                fim[k] = (int32_t)id;
                *attr |= ATTR_CONTROL;
            }
        }
    }
    eog_add(v, fim[3]);
    eog_add(v, fim[4]);
    eog_add(v, fim[5]);
    for (uint32_t id = 0; id < v->n; id++) {
        if (NAME_IN(tok_text(v, (int32_t)id), k_eog_names)) {
            eog_add(v, (int32_t)id);
            v->attr[id] |= ATTR_CONTROL;
        }
    }
    for (uint32_t id = 0; id < v->n; id++) {
        if (NAME_IN(tok_text(v, (int32_t)id), k_always_user_defined)) {
            v->attr[id] = ATTR_USER_DEFINED;
        }
    }
    eog_add(v, v->eos);
    eog_add(v, v->eot);
    eog_add(v, v->eom);
    /* gpt-oss style vocabularies: "<|end|>" ends a message, not the generation */
    const int32_t end_id = eog_find_text(v, "<|end|>");
    const int harmony = eog_find_text(v, "<|return|>") >= 0 && eog_find_text(v, "<|call|>") >= 0;
    const int solar = eog_find_text(v, "<|calls|>") >= 0 && eog_find_text(v, "<|flush|>") >= 0;
    if (end_id >= 0 && (harmony || solar)) {
        eog_remove(v, end_id);
        v->attr[end_id] = ATTR_USER_DEFINED;
    }
    /* Gemma-4 style: "</s>" is ordinary text there */
    const int32_t s_id = eog_find_text(v, "</s>");
    if (s_id >= 0 && eog_find_text(v, "<|tool_response>") >= 0) {
        eog_remove(v, s_id);
        v->attr[s_id] = ATTR_NORMAL;
    }
}

typedef struct len_id {
    uint32_t len;
    int32_t id;
} len_id;

/* longest text first; equal lengths by id (llama.cpp's std::sort leaves those unordered) */
static int cmp_len_id(const void *pa, const void *pb) {
    const len_id *a = pa, *b = pb;
    if (a->len != b->len) {
        return a->len > b->len ? -1 : 1;
    }
    return a->id < b->id ? -1 : (a->id > b->id);
}

static void build_byte_maps(vk_vocab *v) {
    /* GPT-2: printable bytes map to themselves, the other 68 to U+0100 + k in order */
    uint32_t next = 256;
    for (int i = 0; i < 324; i++) {
        v->cp_byte[i] = -1;
    }
    for (uint32_t b = 0; b < 256; b++) {
        const int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) ||
                              (b >= 0xAE && b <= 0xFF);
        const uint32_t cp = printable ? b : next++;
        char u[4];
        const size_t n = vk_utf8_encode(cp, u);
        memcpy(v->byte_utf8[b], u, n);
        v->byte_utf8_len[b] = (uint8_t)n;
        v->cp_byte[cp] = (int16_t)b;
    }
}

static int ascii_lower_contains(const char *s, size_t n, const char *needle) {
    const size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++) {
        size_t j = 0;
        while (j < m) {
            char c = s[i + j];
            if (c >= 'A' && c <= 'Z') {
                c = (char)(c - 'A' + 'a');
            }
            if (c != needle[j]) {
                break;
            }
            j++;
        }
        if (j == m) {
            return 1;
        }
    }
    return 0;
}

static vkllm_status load_tokens(vk_vocab *v, const gguf_file *f) {
    const gguf_array *toks, *scores = NULL, *types = NULL;
    vkllm_status st = meta_string_array(f, "tokenizer.ggml.tokens", 1, &toks);
    if (st) {
        return st;
    }
    if (toks->n == 0) {
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: tokenizer.ggml.tokens is empty");
    }
    st = strtab_from_array(&v->tok, toks, "tokenizer.ggml.tokens", 1);
    if (st) {
        return st;
    }
    v->n = v->tok.n;

    st = gguf_get_arr(f, "tokenizer.ggml.scores", &scores);
    if (st == VKLLM_ERR_NOT_FOUND) {
        vk_error_clear();
        scores = NULL;
    } else if (st) {
        return vk_fail_prefix(VKLLM_ERR_BAD_FILE, "tokenizer");
    } else if (scores->elem_type != GGUF_FLOAT32 && scores->elem_type != GGUF_INT32) {
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tokenizer: tokenizer.ggml.scores must be an array of f32 or i32, not of %s",
                       gguf_value_type_name(scores->elem_type));
    } else if (scores->n < v->n) {
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tokenizer: tokenizer.ggml.scores has %llu entries for %u tokens",
                       (unsigned long long)scores->n, v->n);
    }
    st = gguf_get_arr(f, "tokenizer.ggml.token_type", &types);
    if (st == VKLLM_ERR_NOT_FOUND) {
        vk_error_clear();
        types = NULL;
    } else if (st) {
        return vk_fail_prefix(VKLLM_ERR_BAD_FILE, "tokenizer");
    } else if (types->elem_type != GGUF_INT32) {
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tokenizer: tokenizer.ggml.token_type must be an array of i32, not of %s",
                       gguf_value_type_name(types->elem_type));
    } else if (types->n < v->n) {
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tokenizer: tokenizer.ggml.token_type has %llu entries for %u tokens",
                       (unsigned long long)types->n, v->n);
    }

    v->score = calloc(v->n, sizeof *v->score);
    v->attr = calloc(v->n, sizeof *v->attr);
    if (!v->score || !v->attr) {
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    for (uint32_t i = 0; i < v->n; i++) {
        if (v->tok.len[i] > v->max_token_len) {
            v->max_token_len = v->tok.len[i];
        }
        v->score[i] = scores ? (float)gguf_arr_f64(scores, i) : 0.0f;
        uint32_t attr = ATTR_NORMAL;
        if (types) {
            switch (gguf_arr_i64(types, i)) {
            case 1: attr = ATTR_NORMAL; break;
            case 2: attr = ATTR_UNKNOWN; break;
            case 3: attr = ATTR_CONTROL; break;
            case 4: attr = ATTR_USER_DEFINED; break;
            case 5: attr = ATTR_UNUSED; break;
            case 6: attr = ATTR_BYTE; break;
            default: attr = 0; break; /* undefined */
            }
        }
        v->attr[i] = attr;
    }
    uint32_t da = 0, db = 0;
    const int r = strmap_build(&v->tok_map, &v->tok, 0, &da, &db);
    if (r < 0) {
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    if (r > 0) {
        return vk_fail(VKLLM_ERR_BAD_FILE,
                       "tokenizer: duplicate token in vocabulary: '%.64s' has ids %u and %u",
                       tok_text(v, (int32_t)da), da, db);
    }
    return VKLLM_OK;
}

vkllm_status vk_vocab_load(const gguf_file *f, vk_vocab **out) {
    if (!f || !out) {
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vk_vocab_load: NULL argument");
    }
    *out = NULL;

    gguf_str model;
    vkllm_status st = gguf_get_str(f, "tokenizer.ggml.model", &model);
    if (st == VKLLM_ERR_NOT_FOUND) {
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: missing key tokenizer.ggml.model");
    }
    if (st) {
        return vk_fail_prefix(VKLLM_ERR_BAD_FILE, "tokenizer");
    }
    char model_name[64];
    snprintf(model_name, sizeof model_name, "%.*s", (int)(model.len < 63 ? model.len : 63),
             model.data);

    vk_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    const pre_info *pre = &k_pre[0];
    if (model.len == 5 && memcmp(model.data, "llama", 5) == 0) {
        v->type = VOCAB_SPM;
        v->bos = 1;
        v->eos = 2;
        v->unk = 0;
        v->sep = v->pad = -1;
        v->add_space_prefix = 1;
        v->add_bos = 1;
    } else if (model.len == 4 && memcmp(model.data, "gpt2", 4) == 0) {
        v->type = VOCAB_BPE;
        v->bos = v->eos = 11;
        v->unk = v->sep = v->pad = -1;
        v->clean_spaces = 1;
        gguf_str pre_name = {NULL, 0};
        st = gguf_get_str(f, "tokenizer.ggml.pre", &pre_name);
        if (st && st != VKLLM_ERR_NOT_FOUND) {
            vk_vocab_free(v);
            return vk_fail_prefix(VKLLM_ERR_BAD_FILE, "tokenizer");
        }
        vk_error_clear();
        pre = NULL;
        if (st == VKLLM_ERR_NOT_FOUND || pre_name.len == 0) {
            pre = &k_pre[0]; /* llama.cpp warns and uses "default" */
        } else {
            for (size_t i = 0; i < sizeof k_pre / sizeof k_pre[0]; i++) {
                if (strlen(k_pre[i].name) == pre_name.len &&
                    memcmp(k_pre[i].name, pre_name.data, pre_name.len) == 0) {
                    pre = &k_pre[i];
                }
            }
        }
        if (!pre) {
            vk_vocab_free(v);
            return vk_fail(VKLLM_ERR_UNSUPPORTED,
                           "tokenizer: pre-tokenizer '%.*s' (tokenizer.ggml.pre) is not supported",
                           (int)(pre_name.len < 64 ? pre_name.len : 64), pre_name.data);
        }
        v->pre = pre->pre;
        if (pre->clean_spaces >= 0) {
            v->clean_spaces = pre->clean_spaces;
        }
        v->ignore_merges = pre->ignore_merges;
        v->add_bos = pre->add_bos;
        if (pre->no_bos) {
            v->bos = -1;
        }
    } else if (model.len == 4 && memcmp(model.data, "bert", 4) == 0) {
        v->type = VOCAB_WPM;
        v->bos = 101;
        v->eos = -1;
        v->unk = 100;
        v->sep = 102;
        v->pad = 0;
        v->add_bos = 1;
        v->clean_spaces = 1;
        v->wpm_lowercase = 1;
    } else {
        vk_vocab_free(v);
        return vk_fail(VKLLM_ERR_UNSUPPORTED,
                       "tokenizer: tokenizer model '%s' (tokenizer.ggml.model) is not supported; "
                       "supported: llama, gpt2, bert",
                       model_name);
    }
    v->eot = v->eom = -1;
    meta_bool(f, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);

    st = load_tokens(v, f);
    if (st) {
        vk_vocab_free(v);
        return st;
    }

    if (v->type == VOCAB_BPE) {
        const gguf_array *merges;
        st = meta_string_array(f, "tokenizer.ggml.merges", 1, &merges);
        if (!st) {
            st = strtab_from_array(&v->merges, merges, "tokenizer.ggml.merges", 0);
        }
        if (!st && strmap_build(&v->merge_map, &v->merges, 1, NULL, NULL) < 0) {
            st = vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
        }
        if (st) {
            vk_vocab_free(v);
            return st;
        }
        build_byte_maps(v);
    }

    /* special ids: defaults outside the vocabulary are dropped, metadata overrides */
    int32_t *ids[] = {&v->bos, &v->eos, &v->unk, &v->sep, &v->pad};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        if (*ids[i] >= (int32_t)v->n) {
            *ids[i] = -1;
        }
    }
    int32_t fim[6] = {-1, -1, -1, -1, -1, -1};
    meta_token_id(f, "tokenizer.ggml.bos_token_id", v->n, &v->bos);
    meta_token_id(f, "tokenizer.ggml.eos_token_id", v->n, &v->eos);
    meta_token_id(f, "tokenizer.ggml.eot_token_id", v->n, &v->eot);
    meta_token_id(f, "tokenizer.ggml.eom_token_id", v->n, &v->eom);
    meta_token_id(f, "tokenizer.ggml.unknown_token_id", v->n, &v->unk);
    meta_token_id(f, "tokenizer.ggml.seperator_token_id", v->n, &v->sep);
    meta_token_id(f, "tokenizer.ggml.padding_token_id", v->n, &v->pad);
    meta_token_id(f, "tokenizer.ggml.fim_pre_token_id", v->n, &fim[0]);
    meta_token_id(f, "tokenizer.ggml.fim_suf_token_id", v->n, &fim[1]);
    meta_token_id(f, "tokenizer.ggml.fim_mid_token_id", v->n, &fim[2]);
    meta_token_id(f, "tokenizer.ggml.fim_pad_token_id", v->n, &fim[3]);
    meta_token_id(f, "tokenizer.ggml.fim_rep_token_id", v->n, &fim[4]);
    meta_token_id(f, "tokenizer.ggml.fim_sep_token_id", v->n, &fim[5]);
    meta_bool(f, "tokenizer.ggml.add_bos_token", &v->add_bos);
    meta_bool(f, "tokenizer.ggml.add_eos_token", &v->add_eos);
    if (v->add_bos && v->bos < 0) {
        vk_vocab_free(v);
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: tokenizer.ggml.add_bos_token is true, but "
                                           "tokenizer.ggml.bos_token_id is not set");
    }
    if (v->add_eos && v->eos < 0) {
        vk_vocab_free(v);
        return vk_fail(VKLLM_ERR_BAD_FILE, "tokenizer: tokenizer.ggml.add_eos_token is true, but "
                                           "tokenizer.ggml.eos_token_id is not set");
    }
    if (v->type == VOCAB_WPM) {
        meta_bool(f, "tokenizer.ggml.normalizer.lowercase", &v->wpm_lowercase);
        v->wpm_strip_accents = v->wpm_lowercase;
        meta_bool(f, "tokenizer.ggml.normalizer.strip_accents", &v->wpm_strip_accents);
    }

    v->eog = malloc((v->n + 8) * sizeof *v->eog);
    v->special = malloc(v->n * sizeof *v->special);
    if (!v->eog || !v->special) {
        vk_vocab_free(v);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    detect_special_by_text(v, fim);

    len_id *order = malloc(v->n * sizeof *order);
    if (!order) {
        vk_vocab_free(v);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "tokenizer: out of memory");
    }
    for (uint32_t id = 0; id < v->n; id++) {
        if (v->attr[id] & (ATTR_CONTROL | ATTR_USER_DEFINED | ATTR_UNKNOWN)) {
            order[v->n_special].len = v->tok.len[id];
            order[v->n_special].id = (int32_t)id;
            v->n_special++;
        }
    }
    qsort(order, v->n_special, sizeof *order, cmp_len_id);
    for (uint32_t i = 0; i < v->n_special; i++) {
        v->special[i] = order[i].id;
    }
    free(order);

    /* llama.cpp's per-model attributes: Phi-3 strips spaces after its special tokens */
    gguf_str gname;
    if (gguf_get_str(f, "general.name", &gname) == VKLLM_OK &&
        (ascii_lower_contains(gname.data, gname.len, "phi-3") ||
         ascii_lower_contains(gname.data, gname.len, "phi3"))) {
        for (uint32_t i = 0; i < v->n_special; i++) {
            v->attr[v->special[i]] |= ATTR_RSTRIP;
        }
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>"};
        int32_t id = token_find(v, "</s>", 4);
        if (id >= 0) {
            v->attr[id] |= ATTR_RSTRIP;
        }
        for (size_t i = 0; i < 3; i++) {
            id = token_find(v, keep[i], strlen(keep[i]));
            if (id >= 0) {
                v->attr[id] &= ~ATTR_RSTRIP;
            }
        }
    }
    vk_error_clear();
    *out = v;
    return VKLLM_OK;
}

void vk_vocab_free(vk_vocab *v) {
    if (!v) {
        return;
    }
    strtab_free(&v->tok);
    strtab_free(&v->merges);
    strmap_free(&v->tok_map);
    strmap_free(&v->merge_map);
    free(v->score);
    free(v->attr);
    free(v->eog);
    free(v->special);
    free(v);
}

uint32_t vk_vocab_size(const vk_vocab *v) {
    return v ? v->n : 0;
}

int32_t vk_vocab_bos(const vk_vocab *v) {
    return v ? v->bos : -1;
}

int32_t vk_vocab_eos(const vk_vocab *v) {
    return v ? v->eos : -1;
}

int vk_vocab_is_eog(const vk_vocab *v, int32_t token) {
    if (!v || token < 0) {
        return 0;
    }
    for (uint32_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == token) {
            return 1;
        }
    }
    return 0;
}

const char *vk_vocab_text(const vk_vocab *v, int32_t token) {
    if (!v || token < 0 || (uint32_t)token >= v->n) {
        return NULL;
    }
    return tok_text(v, token);
}

/* ---- pre-tokenizers ------------------------------------------------------------------ */

/* The text of one fragment as code points, with their flags. */
typedef struct cptext {
    uint32_t *cp;
    uint16_t *fl;
    uint32_t n;
} cptext;

#define OUT_OF_RANGE 0xFFFFFFFFu

/* code point / flags at i, as seen from inside the piece [a, b) */
static inline uint32_t CP(const cptext *t, uint32_t a, uint32_t b, uint32_t i) {
    return (i >= a && i < b) ? t->cp[i] : OUT_OF_RANGE;
}
static inline uint16_t FL(const cptext *t, uint32_t a, uint32_t b, uint32_t i) {
    return (i >= a && i < b) ? t->fl[i] : 0;
}

/* llama.cpp's own scanner for GPT-2's regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)
 * with a final \s+ and one-character pieces where nothing matches. */
static void split_gpt2(const cptext *t, uint32_t a, uint32_t b, spanvec *out) {
    uint32_t pos = a;
    while (pos < b) {
        const uint32_t start = pos;
        const uint32_t cp = t->cp[pos];
        const uint16_t f = t->fl[pos];
        if (cp == '\'' && pos + 1 < b) {
            const uint32_t c1 = t->cp[pos + 1];
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                spans_push(out, start, pos + 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < b) {
                const uint32_t c2 = t->cp[pos + 2];
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                    (c1 == 'l' && c2 == 'l')) {
                    spans_push(out, start, pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        const uint16_t f2 = cp == ' ' ? FL(t, a, b, pos + 1) : f;
        const uint16_t other = VK_UF_SPACE | VK_UF_LETTER | VK_UF_NUMBER;
        if (f2 & VK_UF_LETTER) {
            pos += cp == ' ';
            while (FL(t, a, b, pos) & VK_UF_LETTER) {
                pos++;
            }
        } else if (f2 & VK_UF_NUMBER) {
            pos += cp == ' ';
            while (FL(t, a, b, pos) & VK_UF_NUMBER) {
                pos++;
            }
        } else if (!(f2 & other) && f2) {
            pos += cp == ' ';
            while (!(FL(t, a, b, pos) & other) && FL(t, a, b, pos)) {
                pos++;
            }
        } else {
            uint32_t nws = 0;
            while (FL(t, a, b, pos + nws) & VK_UF_SPACE) {
                nws++;
            }
            if (nws > 1 && pos + nws < b) {
                pos += nws - 1; /* \s+(?!\S): leave the last space to the next word */
            } else if (nws > 0) {
                pos += nws;
            } else {
                pos++;
            }
        }
        spans_push(out, start, pos);
    }
}

/* The Llama-3 regex (llama.cpp's own scanner; with max_digits 1 it is also exactly what
 * std::regex does with Qwen2's variant, whose only difference is \p{N} for \p{N}{1,3}):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static void split_llama3(const cptext *t, uint32_t a, uint32_t b, uint32_t max_digits,
                         spanvec *out) {
    uint32_t pos = a;
    const uint16_t other = VK_UF_SPACE | VK_UF_LETTER | VK_UF_NUMBER;
    while (pos < b) {
        const uint32_t start = pos;
        const uint32_t cp = t->cp[pos];
        const uint16_t f = t->fl[pos];
        if (cp == '\'' && pos + 1 < b) {
            const uint32_t c1 = vk_ucp_tolower(t->cp[pos + 1]);
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                spans_push(out, start, pos + 2);
                pos += 2;
                continue;
            }
            if (pos + 2 < b) {
                const uint32_t c2 = vk_ucp_tolower(t->cp[pos + 2]);
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                    (c1 == 'l' && c2 == 'l')) {
                    spans_push(out, start, pos + 3);
                    pos += 3;
                    continue;
                }
            }
        }
        if (!(cp == '\r' || cp == '\n' || (f & VK_UF_NUMBER)) &&
            ((f & VK_UF_LETTER) || (FL(t, a, b, pos + 1) & VK_UF_LETTER))) {
            pos++;
            while (FL(t, a, b, pos) & VK_UF_LETTER) {
                pos++;
            }
            spans_push(out, start, pos);
            continue;
        }
        if (f & VK_UF_NUMBER) {
            uint32_t ini = pos;
            while (FL(t, a, b, pos) & VK_UF_NUMBER) {
                pos++;
                if (pos - ini >= max_digits) {
                    spans_push(out, ini, pos);
                    ini = pos;
                }
            }
            spans_push(out, ini, pos);
            continue;
        }
        const uint16_t f2 = cp == ' ' ? FL(t, a, b, pos + 1) : f;
        if (!(f2 & other) && f) {
            pos += cp == ' ';
            while (!(FL(t, a, b, pos) & other) && FL(t, a, b, pos)) {
                pos++;
            }
            while (CP(t, a, b, pos) == '\r' || CP(t, a, b, pos) == '\n') {
                pos++;
            }
            spans_push(out, start, pos);
            continue;
        }
        uint32_t nws = 0, last_crlf_end = 0;
        while (FL(t, a, b, pos + nws) & VK_UF_SPACE) {
            const uint32_t c = t->cp[pos + nws];
            if (c == '\r' || c == '\n') {
                last_crlf_end = pos + nws + 1;
            }
            nws++;
        }
        if (last_crlf_end > 0) {
            pos = last_crlf_end; /* \s*[\r\n]+ */
        } else if (nws > 1 && pos + nws < b) {
            pos += nws - 1; /* \s+(?!\S) */
        } else if (nws > 0) {
            pos += nws;
        } else {
            pos++;
        }
        spans_push(out, start, pos);
    }
}

/* The regexes llama.cpp hands to std::regex. Each matcher returns the length of the
 * match starting at p (0: none). */
typedef uint32_t (*matcher_fn)(const cptext *t, uint32_t p, uint32_t b);

static inline int is_ws(const cptext *t, uint32_t i) {
    return (t->fl[i] & VK_UF_SPACE) != 0;
}
/* What std::wregex sees: llama.cpp replaces non-ASCII white space by U+000B first. */
static inline uint32_t wchar_of(const cptext *t, uint32_t i) {
    return (t->cp[i] > 0x7F && is_ws(t, i)) ? 0x0Bu : t->cp[i];
}

static uint32_t run_flags(const cptext *t, uint32_t p, uint32_t b, uint16_t mask) {
    uint32_t q = p;
    while (q < b && (t->fl[q] & mask)) {
        q++;
    }
    return q - p;
}

static int falcon_extra(uint32_t c) {
    return c == '$' || c == '+' || c == '<' || c == '=' || c == '>' || c == '^' || c == '~' ||
           c == '|' || c == '`';
}

/* [\p{P}\$\+<=>\^~\|`]+ (falcon) */
static uint32_t m_punct_falcon(const cptext *t, uint32_t p, uint32_t b) {
    uint32_t q = p;
    while (q < b && ((t->fl[q] & VK_UF_PUNCT) || falcon_extra(t->cp[q]))) {
        q++;
    }
    return q - p;
}

/* [\p{P}\$\+<=>\^~\|]+ (default) */
static uint32_t m_punct_default(const cptext *t, uint32_t p, uint32_t b) {
    uint32_t q = p;
    while (q < b && ((t->fl[q] & VK_UF_PUNCT) || (falcon_extra(t->cp[q]) && t->cp[q] != '`'))) {
        q++;
    }
    return q - p;
}

/* [0-9][0-9][0-9] */
static uint32_t m_digits3(const cptext *t, uint32_t p, uint32_t b) {
    if (p + 3 > b) {
        return 0;
    }
    for (uint32_t i = p; i < p + 3; i++) {
        if (t->cp[i] < '0' || t->cp[i] > '9') {
            return 0;
        }
    }
    return 3;
}

/* \p{N} */
static uint32_t m_num1(const cptext *t, uint32_t p, uint32_t b) {
    (void)b;
    return (t->fl[p] & VK_UF_NUMBER) ? 1 : 0;
}

/* \p{N}+ */
static uint32_t m_num_run(const cptext *t, uint32_t p, uint32_t b) {
    return run_flags(t, p, b, VK_UF_NUMBER);
}

/* [\r\n] */
static uint32_t m_crlf(const cptext *t, uint32_t p, uint32_t b) {
    (void)b;
    return (t->cp[p] == '\r' || t->cp[p] == '\n') ? 1 : 0;
}

/* \s?X+ where X is a flag class: greedy optional space first, then without it */
static uint32_t ws_opt_run(const cptext *t, uint32_t p, uint32_t b, uint16_t mask) {
    if (is_ws(t, p) && p + 1 < b && (t->fl[p + 1] & mask)) {
        return 1 + run_flags(t, p + 1, b, mask);
    }
    return run_flags(t, p, b, mask);
}

/* \s?\p{L}+ */
static uint32_t m_ws_letters(const cptext *t, uint32_t p, uint32_t b) {
    return ws_opt_run(t, p, b, VK_UF_LETTER);
}

/* \s?\p{P}+ */
static uint32_t m_ws_punct(const cptext *t, uint32_t p, uint32_t b) {
    return ws_opt_run(t, p, b, VK_UF_PUNCT);
}

/* [一-龥ࠀ-一가-퟿]+ : U+4E00..U+9FA5, U+0800..U+4E00, U+AC00..U+D7FF */
static int cjk_class(uint32_t c) {
    return (c >= 0x0800 && c <= 0x9FA5) || (c >= 0xAC00 && c <= 0xD7FF);
}
static uint32_t m_cjk(const cptext *t, uint32_t p, uint32_t b) {
    uint32_t q = p;
    while (q < b && cjk_class(wchar_of(t, q))) {
        q++;
    }
    return q - p;
}

/* DeepSeek-LLM: \s?[A-Za-zµÀ-Ö...]+ (the Cased_Letter list in the tables) */
static int dsllm_letter(const cptext *t, uint32_t i) {
    return vk_ucp_in_ranges(wchar_of(t, i), vk_dsllm_letters, vk_dsllm_letters_n);
}
static uint32_t m_dsllm_letters(const cptext *t, uint32_t p, uint32_t b) {
    uint32_t q = p;
    if (is_ws(t, p) && p + 1 < b && dsllm_letter(t, p + 1)) {
        q = p + 1;
    }
    const uint32_t r0 = q;
    while (q < b && dsllm_letter(t, q)) {
        q++;
    }
    return q > r0 ? q - p : 0;
}

/* DeepSeek-LLM: \s?[!-/:-~！-／：-～‘-‟　-。]+ */
static int dsllm_punct(const cptext *t, uint32_t i) {
    const uint32_t c = wchar_of(t, i);
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x7E) || (c >= 0xFF01 && c <= 0xFF0F) ||
           (c >= 0xFF1A && c <= 0xFF5E) || (c >= 0x2018 && c <= 0x201F) ||
           (c >= 0x3000 && c <= 0x3002);
}
static uint32_t m_dsllm_punct(const cptext *t, uint32_t p, uint32_t b) {
    uint32_t q = p;
    if (is_ws(t, p) && p + 1 < b && dsllm_punct(t, p + 1)) {
        q = p + 1;
    }
    const uint32_t r0 = q;
    while (q < b && dsllm_punct(t, q)) {
        q++;
    }
    return q > r0 ? q - p : 0;
}

/* std::regex_iterator over [a, b): matches and the gaps between them become pieces. */
static void split_search(const cptext *t, uint32_t a, uint32_t b, matcher_fn m, spanvec *out) {
    uint32_t gap = a, p = a;
    while (p < b) {
        const uint32_t len = m(t, p, b);
        if (len) {
            spans_push(out, gap, p);
            spans_push(out, p, p + len);
            p += len;
            gap = p;
        } else {
            p++;
        }
    }
    spans_push(out, gap, b);
}

/* \s+$ : the trailing white space of the piece (the only place it can match) */
static void split_trailing_ws(const cptext *t, uint32_t a, uint32_t b, spanvec *out) {
    uint32_t q = b;
    while (q > a && is_ws(t, q - 1)) {
        q--;
    }
    spans_push(out, a, q);
    spans_push(out, q, b);
}

enum pass_kind {
    PASS_GPT2,
    PASS_LLAMA3,
    PASS_QWEN2,
    PASS_TRAILING_WS,
    PASS_SEARCH
};

typedef struct pass {
    int kind;
    matcher_fn m;
} pass;

static size_t pre_passes(int pre, pass *p) {
    size_t n = 0;
#define ADD(k, fn) (p[n].kind = (k), p[n].m = (fn), n++)
    switch (pre) {
    case PRE_GPT2:
        ADD(PASS_GPT2, NULL);
        break;
    case PRE_FALCON:
        ADD(PASS_SEARCH, m_punct_falcon);
        ADD(PASS_GPT2, NULL);
        ADD(PASS_SEARCH, m_digits3);
        break;
    case PRE_STARCODER:
        ADD(PASS_SEARCH, m_num1);
        ADD(PASS_GPT2, NULL);
        break;
    case PRE_LLAMA3:
        ADD(PASS_LLAMA3, NULL);
        break;
    case PRE_QWEN2:
        ADD(PASS_QWEN2, NULL);
        break;
    case PRE_DEEPSEEK_LLM:
        ADD(PASS_SEARCH, m_crlf);
        ADD(PASS_SEARCH, m_dsllm_letters);
        ADD(PASS_SEARCH, m_dsllm_punct);
        ADD(PASS_TRAILING_WS, NULL);
        ADD(PASS_SEARCH, m_cjk);
        ADD(PASS_SEARCH, m_num_run);
        break;
    case PRE_DEEPSEEK_CODER:
        ADD(PASS_SEARCH, m_crlf);
        ADD(PASS_SEARCH, m_ws_letters);
        ADD(PASS_SEARCH, m_ws_punct);
        ADD(PASS_SEARCH, m_cjk);
        ADD(PASS_SEARCH, m_num1);
        break;
    case PRE_DEFAULT:
    default:
        ADD(PASS_SEARCH, m_punct_default);
        ADD(PASS_GPT2, NULL);
        ADD(PASS_SEARCH, m_num_run);
        ADD(PASS_SEARCH, m_digits3);
        break;
    }
#undef ADD
    return n;
}

/* Splits the whole text into words; the result is in *words (code point spans). */
static int pre_tokenize(int pre, const cptext *t, spanvec *words) {
    pass passes[8];
    const size_t np = pre_passes(pre, passes);
    spanvec cur = {0}, next = {0};
    spans_push(&cur, 0, t->n);
    for (size_t k = 0; k < np && !cur.oom; k++) {
        next.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            const uint32_t a = cur.v[i].a, b = cur.v[i].b;
            switch (passes[k].kind) {
            case PASS_GPT2: split_gpt2(t, a, b, &next); break;
            case PASS_LLAMA3: split_llama3(t, a, b, 3, &next); break;
            case PASS_QWEN2: split_llama3(t, a, b, 1, &next); break;
            case PASS_TRAILING_WS: split_trailing_ws(t, a, b, &next); break;
            default: split_search(t, a, b, passes[k].m, &next); break;
            }
        }
        if (next.oom) {
            cur.oom = 1;
            break;
        }
        spanvec tmp = cur;
        cur = next;
        next = tmp;
    }
    free(next.v);
    *words = cur;
    return cur.oom ? -1 : 0;
}

/* ---- BPE merging ---------------------------------------------------------------------- */

typedef struct symbol {
    int32_t prev, next;
    uint32_t off, n; /* bytes in the word */
} symbol;

typedef struct bigram {
    int32_t left, right;
    float score; /* SPM */
    int32_t rank; /* BPE */
    uint32_t size;
} bigram;

typedef struct heap {
    bigram *v;
    size_t n, cap;
    int spm; /* ordering: SPM highest score first, BPE lowest rank first; ties: leftmost */
    int oom;
} heap;

static int bg_before(const heap *h, const bigram *x, const bigram *y) {
    if (h->spm) {
        if (x->score != y->score) {
            return x->score > y->score;
        }
    } else if (x->rank != y->rank) {
        return x->rank < y->rank;
    }
    return x->left < y->left;
}

static void heap_push(heap *h, bigram g) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *nv = realloc(h->v, cap * sizeof *nv);
        if (!nv) {
            h->oom = 1;
            return;
        }
        h->v = nv;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!bg_before(h, &g, &h->v[parent])) {
            break;
        }
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = g;
}

static bigram heap_pop(heap *h) {
    bigram top = h->v[0];
    bigram last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && bg_before(h, &h->v[c + 1], &h->v[c])) {
            c++;
        }
        if (!bg_before(h, &h->v[c], &last)) {
            break;
        }
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) {
        h->v[i] = last;
    }
    return top;
}

typedef struct session {
    const vk_vocab *v;
    ivec *out;
    symbol *sym;
    size_t nsym, capsym;
    heap h;
    bytebuf word;
    int oom;
} session;

static int symbols_from_utf8(session *s, const char *w, size_t n) {
    s->nsym = 0;
    if (n > s->capsym) {
        symbol *ns = realloc(s->sym, n * sizeof *ns);
        if (!ns) {
            s->oom = 1;
            return -1;
        }
        s->sym = ns;
        s->capsym = n;
    }
    size_t off = 0;
    while (off < n) {
        size_t len = vk_utf8_len((uint8_t)w[off]);
        if (len > n - off) {
            len = n - off;
        }
        symbol *y = &s->sym[s->nsym];
        y->off = (uint32_t)off;
        y->n = (uint32_t)len;
        y->prev = (int32_t)s->nsym - 1;
        off += len;
        y->next = off == n ? -1 : (int32_t)s->nsym + 1;
        s->nsym++;
    }
    return 0;
}

static void spm_try_bigram(session *s, const char *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) {
        return;
    }
    const symbol *L = &s->sym[l], *R = &s->sym[r];
    const int32_t id = token_find(s->v, w + L->off, L->n + R->n);
    if (id < 0) {
        return;
    }
    bigram g = {l, r, s->v->score[id], 0, L->n + R->n};
    heap_push(&s->h, g);
}

static void merge_into_left(session *s, int32_t l) {
    symbol *L = &s->sym[l];
    symbol *R = &s->sym[L->next];
    L->n += R->n;
    R->n = 0;
    L->next = R->next;
    if (R->next >= 0) {
        s->sym[R->next].prev = l;
    }
}

static void emit_byte_token_spm(session *s, uint8_t byte) {
    static const char hex[] = "0123456789ABCDEF";
    const char name[6] = {'<', '0', 'x', hex[byte >> 4], hex[byte & 15], '>'};
    int32_t id = token_find(s->v, name, 6);
    if (id < 0) {
        const char c = (char)byte;
        id = token_find(s->v, &c, 1);
    }
    if (id < 0) {
        id = s->v->unk; /* llama.cpp aborts here; a vocabulary without byte tokens */
    }
    if (id >= 0) {
        ivec_push(s->out, id);
    }
}

/* SentencePiece BPE over one fragment (already with U+2581 for spaces). */
static void spm_tokenize(session *s, const char *w, size_t n) {
    if (n == 0 || symbols_from_utf8(s, w, n) < 0) {
        return;
    }
    s->h.n = 0;
    s->h.spm = 1;
    for (size_t i = 1; i < s->nsym; i++) {
        spm_try_bigram(s, w, (int32_t)i - 1, (int32_t)i);
    }
    while (s->h.n && !s->h.oom) {
        const bigram g = heap_pop(&s->h);
        const symbol *L = &s->sym[g.left], *R = &s->sym[g.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != g.size) {
            continue; /* one side was merged away since */
        }
        merge_into_left(s, g.left);
        spm_try_bigram(s, w, s->sym[g.left].prev, g.left);
        spm_try_bigram(s, w, g.left, s->sym[g.left].next);
    }
    for (int32_t i = 0; i != -1; i = s->sym[i].next) {
        const symbol *y = &s->sym[i];
        const int32_t id = token_find(s->v, w + y->off, y->n);
        if (id >= 0) {
            ivec_push(s->out, id);
        } else {
            for (uint32_t j = 0; j < y->n; j++) {
                emit_byte_token_spm(s, (uint8_t)w[y->off + j]);
            }
        }
    }
    if (s->h.oom) {
        s->oom = 1;
    }
}

static void bpe_try_bigram(session *s, const char *w, int32_t l, int32_t r) {
    if (l < 0 || r < 0) {
        return;
    }
    const symbol *L = &s->sym[l], *R = &s->sym[r];
    const int32_t rank = strmap_find3(&s->v->merge_map, &s->v->merges, w + L->off, L->n, " ", 1,
                                      w + R->off, R->n);
    if (rank < 0) {
        return;
    }
    bigram g = {l, r, 0.0f, rank, L->n + R->n};
    heap_push(&s->h, g);
}

/* Byte-level BPE over one pre-tokenized, byte-encoded word. */
static void bpe_word(session *s, const char *w, size_t n) {
    if (n == 0) {
        return;
    }
    if (s->v->ignore_merges) {
        const int32_t id = token_find(s->v, w, n);
        if (id >= 0) {
            ivec_push(s->out, id);
            return;
        }
    }
    if (symbols_from_utf8(s, w, n) < 0) {
        return;
    }
    s->h.n = 0;
    s->h.spm = 0;
    for (size_t i = 1; i < s->nsym; i++) {
        bpe_try_bigram(s, w, (int32_t)i - 1, (int32_t)i);
    }
    while (s->h.n && !s->h.oom) {
        const bigram g = heap_pop(&s->h);
        const symbol *L = &s->sym[g.left], *R = &s->sym[g.right];
        if (L->n == 0 || R->n == 0 || L->n + R->n != g.size) {
            continue;
        }
        merge_into_left(s, g.left);
        bpe_try_bigram(s, w, s->sym[g.left].prev, g.left);
        bpe_try_bigram(s, w, g.left, s->sym[g.left].next);
    }
    for (int32_t i = 0; i != -1; i = s->sym[i].next) {
        const symbol *y = &s->sym[i];
        const int32_t id = token_find(s->v, w + y->off, y->n);
        if (id >= 0) {
            ivec_push(s->out, id);
            continue;
        }
        /* as llama.cpp: each byte of the symbol's text that is itself a token */
        for (uint32_t j = 0; j < y->n; j++) {
            const int32_t bid = token_find(s->v, w + y->off + j, 1);
            if (bid >= 0) {
                ivec_push(s->out, bid);
            }
        }
    }
    if (s->h.oom) {
        s->oom = 1;
    }
}

static int decode_cptext(const char *text, size_t len, cptext *t) {
    t->cp = malloc((len ? len : 1) * sizeof *t->cp);
    t->fl = malloc((len ? len : 1) * sizeof *t->fl);
    t->n = 0;
    if (!t->cp || !t->fl) {
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        size_t adv;
        const uint32_t cp = vk_utf8_decode(text + off, len - off, &adv);
        t->cp[t->n] = cp;
        t->fl[t->n] = vk_ucp_flags(cp);
        t->n++;
        off += adv;
    }
    return 0;
}

static void bpe_fragment(session *s, const char *text, size_t len) {
    cptext t = {0};
    spanvec words = {0};
    if (decode_cptext(text, len, &t) < 0 || pre_tokenize(s->v->pre, &t, &words) < 0) {
        s->oom = 1;
    } else {
        for (size_t i = 0; i < words.n && !s->oom; i++) {
            s->word.n = 0;
            for (uint32_t k = words.v[i].a; k < words.v[i].b; k++) {
                char u[4];
                const size_t nb = vk_utf8_encode(t.cp[k], u);
                for (size_t j = 0; j < nb; j++) {
                    const uint8_t by = (uint8_t)u[j];
                    buf_add(&s->word, s->v->byte_utf8[by], s->v->byte_utf8_len[by]);
                }
            }
            if (s->word.oom) {
                s->oom = 1;
                break;
            }
            bpe_word(s, s->word.v, s->word.n);
        }
    }
    free(t.cp);
    free(t.fl);
    free(words.v);
}

/* ---- WordPiece ------------------------------------------------------------------------ */

static int wpm_is_chinese(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static void wpm_word(session *s, const char *w, size_t n) {
    const vk_vocab *v = s->v;
    if (n == 0) {
        return;
    }
    /* the word with its U+2581 prefix, greedy longest match from the left */
    s->word.n = 0;
    buf_add(&s->word, "\xe2\x96\x81", 3);
    buf_add(&s->word, w, n);
    if (s->word.oom) {
        s->oom = 1;
        return;
    }
    const char *x = s->word.v;
    const size_t m = s->word.n;
    const size_t before = s->out->n;
    for (size_t i = 0; i < m;) {
        size_t j = i + v->max_token_len + 1 < m ? i + v->max_token_len + 1 : m;
        int32_t id = -1;
        for (; j > i; j--) {
            id = token_find(v, x + i, j - i);
            if (id >= 0) {
                break;
            }
        }
        if (id < 0) {
            s->out->n = before; /* no match: the whole word becomes [UNK] */
            break;
        }
        ivec_push(s->out, id);
        i = j;
    }
    if (s->out->n == before && v->unk >= 0) {
        ivec_push(s->out, v->unk);
    }
}

static void wpm_fragment(session *s, const char *text, size_t len) {
    const vk_vocab *v = s->v;
    bytebuf cur = {0};
    size_t off = 0;
    while (off < len) {
        size_t adv;
        uint32_t cp = vk_utf8_decode(text + off, len - off, &adv);
        off += adv;
        if (v->wpm_strip_accents) {
            cp = vk_ucp_nfd_first(cp);
        }
        const uint16_t f = vk_ucp_flags(cp);
        if (f & VK_UF_SPACE) {
            wpm_word(s, cur.v, cur.n);
            cur.n = 0;
            continue;
        }
        if (cp == 0 || cp == VK_CP_REPLACEMENT || (f & VK_UF_CONTROL)) {
            continue;
        }
        if (v->wpm_strip_accents && (f & VK_UF_MARK)) {
            continue;
        }
        char u[4];
        const size_t nb = vk_utf8_encode(v->wpm_lowercase ? vk_ucp_tolower(cp) : cp, u);
        if ((f & VK_UF_PUNCT) || (cp < 0x7F && (f & VK_UF_SYMBOL)) || wpm_is_chinese(cp)) {
            wpm_word(s, cur.v, cur.n);
            cur.n = 0;
            wpm_word(s, u, nb);
        } else {
            buf_add(&cur, u, nb);
        }
        if (cur.oom) {
            s->oom = 1;
            break;
        }
    }
    wpm_word(s, cur.v, cur.n);
    free(cur.v);
}

/* ---- special tokens in the text ------------------------------------------------------- */

typedef struct fragment {
    int32_t token; /* -1: raw text */
    size_t off, len;
} fragment;

typedef struct fragvec {
    fragment *v;
    size_t n, cap;
    int oom;
} fragvec;

static void frag_push(fragvec *f, int32_t token, size_t off, size_t len) {
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        fragment *nv = realloc(f->v, cap * sizeof *nv);
        if (!nv) {
            f->oom = 1;
            return;
        }
        f->v = nv;
        f->cap = cap;
    }
    f->v[f->n].token = token;
    f->v[f->n].off = off;
    f->v[f->n].len = len;
    f->n++;
}

static int c_isspace(char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* As llama.cpp: for each special token, longest first, every raw fragment is cut at each
 * occurrence of its text. Without parse_special only user-defined tokens are cut out. */
static int partition_special(const vk_vocab *v, const char *text, size_t len, int parse_special,
                             fragvec *out) {
    fragvec cur = {0}, next = {0};
    if (len) {
        frag_push(&cur, -1, 0, len);
    }
    /* Which byte pairs occur in the text: a token whose first two bytes never occur
     * cannot match, which skips most of a large list of user-defined tokens at once. */
    uint8_t *pairs = len && v->n_special ? calloc(65536 / 8, 1) : NULL;
    uint8_t firsts[256 / 8] = {0};
    if (len && v->n_special && !pairs) {
        cur.oom = 1;
    }
    for (size_t i = 0; pairs && i < len; i++) {
        const uint8_t c = (uint8_t)text[i];
        firsts[c >> 3] |= (uint8_t)(1u << (c & 7));
        if (i + 1 < len) {
            const unsigned pr = (unsigned)c << 8 | (uint8_t)text[i + 1];
            pairs[pr >> 3] |= (uint8_t)(1u << (pr & 7));
        }
    }
    for (uint32_t k = 0; k < v->n_special && !cur.oom; k++) {
        const int32_t id = v->special[k];
        const uint32_t attr = v->attr[id];
        if (!parse_special && (attr & (ATTR_CONTROL | ATTR_UNKNOWN))) {
            continue;
        }
        const char *st = tok_text(v, id);
        const size_t sl = v->tok.len[id];
        const uint8_t c0 = (uint8_t)st[0];
        if (sl > len || !(firsts[c0 >> 3] & (1u << (c0 & 7)))) {
            continue;
        }
        if (sl >= 2) {
            const unsigned pr = (unsigned)c0 << 8 | (uint8_t)st[1];
            if (!(pairs[pr >> 3] & (1u << (pr & 7)))) {
                continue;
            }
        }
        int changed = 0;
        next.n = 0;
        for (size_t i = 0; i < cur.n; i++) {
            fragment fr = cur.v[i];
            if (fr.token >= 0 || fr.len < sl) {
                frag_push(&next, fr.token, fr.off, fr.len);
                continue;
            }
            size_t base = fr.off, blen = fr.len;
            for (;;) {
                const char *hit = blen >= sl ? memmem(text + base, blen, st, sl) : NULL;
                if (!hit) {
                    if (blen) {
                        frag_push(&next, -1, base, blen);
                    }
                    break;
                }
                changed = 1;
                const size_t m = (size_t)(hit - text);
                size_t llen = m - base;
                if (attr & ATTR_LSTRIP) {
                    while (llen > 0 && c_isspace(text[base + llen - 1])) {
                        llen--;
                    }
                }
                if (llen) {
                    frag_push(&next, -1, base, llen);
                }
                frag_push(&next, id, 0, 0);
                size_t roff = m + sl, rlen = base + blen - roff;
                if (attr & ATTR_RSTRIP) {
                    while (rlen > 0 && c_isspace(text[roff])) {
                        roff++;
                        rlen--;
                    }
                }
                base = roff;
                blen = rlen;
            }
        }
        if (next.oom) {
            cur.oom = 1;
            break;
        }
        if (changed) {
            fragvec tmp = cur;
            cur = next;
            next = tmp;
        }
    }
    free(next.v);
    free(pairs);
    *out = cur;
    return cur.oom ? -1 : 0;
}

/* ---- tokenize --------------------------------------------------------------------------- */

vkllm_status vk_tokenize(const vk_vocab *v, const char *text, size_t len, int add_special,
                         int parse_special, int32_t *out, size_t capacity, size_t *n_out) {
    if (!v || !n_out || (!text && len) || (!out && capacity)) {
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vk_tokenize: NULL argument");
    }
    *n_out = 0;
    if (len > (size_t)INT32_MAX / 4) { /* positions are kept in 32 bits, U+2581 triples spaces */
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vk_tokenize: text of %zu bytes is too long",
                       len);
    }
    ivec ids = {0};
    fragvec frags = {0};
    session s = {0};
    s.v = v;
    s.out = &ids;
    if (partition_special(v, text, len, parse_special, &frags) < 0) {
        s.oom = 1;
    }

    if (add_special && v->add_bos && v->type != VOCAB_WPM) {
        ivec_push(&ids, v->bos);
    }
    if (add_special && v->type == VOCAB_WPM && v->bos >= 0) {
        ivec_push(&ids, v->bos); /* [CLS] */
    }
    int prev_special = 1; /* SPM: a fragment after a special token gets the space prefix */
    for (size_t i = 0; i < frags.n && !s.oom; i++) {
        const fragment *fr = &frags.v[i];
        if (fr->token >= 0) {
            ivec_push(&ids, fr->token);
            prev_special = 1;
            continue;
        }
        const char *t = text + fr->off;
        switch (v->type) {
        case VOCAB_SPM: {
            bytebuf esc = {0};
            if (v->add_space_prefix && prev_special) {
                buf_add(&esc, "\xe2\x96\x81", 3);
            }
            for (size_t j = 0; j < fr->len; j++) {
                if (t[j] == ' ') {
                    buf_add(&esc, "\xe2\x96\x81", 3);
                } else {
                    buf_add(&esc, t + j, 1);
                }
            }
            if (esc.oom) {
                s.oom = 1;
            } else {
                spm_tokenize(&s, esc.v, esc.n);
            }
            free(esc.v);
            break;
        }
        case VOCAB_BPE:
            bpe_fragment(&s, t, fr->len);
            break;
        default:
            wpm_fragment(&s, t, fr->len);
            break;
        }
        prev_special = 0;
    }
    if (add_special && v->add_eos && v->type != VOCAB_WPM) {
        ivec_push(&ids, v->eos);
    }
    if (add_special && v->type == VOCAB_WPM && v->sep >= 0) {
        ivec_push(&ids, v->sep); /* [SEP] */
    }

    free(frags.v);
    free(s.sym);
    free(s.h.v);
    free(s.word.v);
    if (s.oom || ids.oom) {
        free(ids.v);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                       "vk_tokenize: out of memory (%zu bytes of text)", len);
    }
    *n_out = ids.n;
    const size_t n_copy = ids.n < capacity ? ids.n : capacity;
    if (n_copy) {
        memcpy(out, ids.v, n_copy * sizeof *out);
    }
    free(ids.v);
    if (ids.n > capacity) {
        return vk_fail(VKLLM_ERR_BUFFER_TOO_SMALL, "vk_tokenize: %zu tokens, room for %zu", ids.n,
                       capacity);
    }
    return VKLLM_OK;
}

/* ---- ids -> text ------------------------------------------------------------------------ */

static int hexval(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* "<0xNN>" -> NN, as llama.cpp's strtol on the two characters after "<0x" */
static uint8_t byte_token_value(const char *t, uint32_t len) {
    int v = 0;
    for (uint32_t i = 3; i < 5 && i < len; i++) {
        const int h = hexval(t[i]);
        if (h < 0) {
            break;
        }
        v = v * 16 + h;
    }
    return (uint8_t)v;
}

/* Appends the text of token `id` to b (no bounds check on id). */
static void piece_append(const vk_vocab *v, int32_t id, bytebuf *b) {
    const uint32_t attr = v->attr[id];
    const char *t = tok_text(v, id);
    const uint32_t n = v->tok.len[id];
    if (attr & (ATTR_UNKNOWN | ATTR_CONTROL)) {
        return;
    }
    if (attr & ATTR_USER_DEFINED) {
        buf_add(b, t, n);
        return;
    }
    if (attr & ATTR_NORMAL) {
        if (v->type == VOCAB_BPE) {
            /* undo the byte-level mapping, code point by code point */
            size_t off = 0;
            while (off < n) {
                size_t adv;
                const uint32_t cp = vk_utf8_decode(t + off, n - off, &adv);
                if (cp < 324 && v->cp_byte[cp] >= 0) {
                    const char c = (char)v->cp_byte[cp];
                    buf_add(b, &c, 1);
                } else { /* llama.cpp's marker for a character outside the mapping */
                    char tmp[32];
                    buf_add(b, "[UNK_BYTE_0x", 12);
                    for (size_t j = 0; j < adv; j++) {
                        snprintf(tmp, sizeof tmp, "%02x", (uint8_t)t[off + j]);
                        buf_add(b, tmp, 2);
                    }
                    buf_add(b, t, n);
                    buf_add(b, "]", 1);
                }
                off += adv;
            }
        } else {
            for (uint32_t i = 0; i < n; i++) { /* U+2581 -> space */
                if (i + 2 < n && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                    buf_add(b, " ", 1);
                    i += 2;
                } else {
                    buf_add(b, t + i, 1);
                }
            }
        }
        return;
    }
    if (attr & ATTR_BYTE) {
        const char c = (char)byte_token_value(t, n);
        buf_add(b, &c, 1);
    }
}

static vkllm_status copy_out(const bytebuf *b, char *buf, size_t capacity, size_t *n_out,
                             const char *what) {
    *n_out = b->n;
    const size_t n_copy = b->n < capacity ? b->n : capacity;
    if (n_copy) {
        memcpy(buf, b->v, n_copy);
    }
    if (b->n > capacity) {
        return vk_fail(VKLLM_ERR_BUFFER_TOO_SMALL, "%s: %zu bytes, room for %zu", what, b->n,
                       capacity);
    }
    return VKLLM_OK;
}

vkllm_status vk_token_to_piece(const vk_vocab *v, int32_t token, char *buf, size_t capacity,
                               size_t *n_out) {
    if (!v || !n_out || (!buf && capacity)) {
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vk_token_to_piece: NULL argument");
    }
    *n_out = 0;
    if (token < 0 || (uint32_t)token >= v->n) {
        return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE, "vk_token_to_piece: token %d outside [0, %u)",
                       token, v->n);
    }
    bytebuf b = {0};
    piece_append(v, token, &b);
    vkllm_status st = b.oom ? vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY,
                                      "vk_token_to_piece: out of memory")
                            : copy_out(&b, buf, capacity, n_out, "vk_token_to_piece");
    free(b.v);
    return st;
}

/* llama.cpp's clean_up_tokenization_spaces passes: " ?" " !" " ." " ," lose the space,
 * " ' " becomes "'", and " 's" " 'm" " 're" " 've" lose the space. */
static size_t clean_spaces(char *x, size_t n) {
    size_t t = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        const char c = x[i];
        if (x[i - 1] == ' ' && (c == '?' || c == '!' || c == '.' || c == ',')) {
            t--;
        }
        x[t++] = c;
    }
    n = t;
    t = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        const char c = x[i];
        if (c == '\'' && i + 1 < n && x[i - 1] == ' ' && x[i + 1] == ' ') {
            t--;
            x[++i] = '\0';
        }
        x[t++] = c;
    }
    n = t;
    t = n ? 1 : 0;
    for (size_t i = 1; i < n; i++) {
        const char c = x[i];
        if (x[i - 1] == ' ' && c == '\'' && i + 1 < n) {
            const char c1 = x[i + 1];
            if (c1 == 's' || c1 == 'm') {
                t--;
            } else if (i + 2 < n && (c1 == 'r' || c1 == 'v') && x[i + 2] == 'e') {
                t--;
            }
        }
        x[t++] = c;
    }
    return t;
}

vkllm_status vk_detokenize(const vk_vocab *v, const int32_t *tokens, size_t n, char *buf,
                           size_t capacity, size_t *n_out) {
    if (!v || !n_out || (!tokens && n) || (!buf && capacity)) {
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "vk_detokenize: NULL argument");
    }
    *n_out = 0;
    bytebuf b = {0};
    /* The space SPM put in front of the text is dropped from the first piece that has
     * text; control tokens such as BOS render as nothing and do not count. */
    int strip_space = v->add_space_prefix;
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= v->n) {
            free(b.v);
            return vk_fail(VKLLM_ERR_TOKEN_OUT_OF_RANGE,
                           "vk_detokenize: token %d (position %zu) outside [0, %u)", tokens[i], i,
                           v->n);
        }
        const size_t before = b.n;
        piece_append(v, tokens[i], &b);
        if (strip_space && b.n > before) {
            if (b.v[before] == ' ') {
                memmove(b.v + before, b.v + before + 1, b.n - before - 1);
                b.n--;
            }
            strip_space = 0;
        }
    }
    if (b.oom) {
        free(b.v);
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "vk_detokenize: out of memory");
    }
    if (v->clean_spaces) {
        b.n = clean_spaces(b.v, b.n);
    }
    vkllm_status st = copy_out(&b, buf, capacity, n_out, "vk_detokenize");
    free(b.v);
    return st;
}
