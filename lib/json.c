/* Strict JSON parser; see json.h for what "strict" means here.
 *
 * Recursive descent over a length-delimited text. Every read checks the bytes left first.
 * Values go into an arena (one chunk list freed at once); the items of an array or object
 * are collected in a temporary vector and copied into the arena when it closes, so each
 * is one contiguous block. Depth, value count and arena bytes are capped (json.h). */
#include "json.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* ---- arena --------------------------------------------------------------------------- */

typedef struct arena_chunk {
    struct arena_chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
} arena_chunk;

struct json_doc {
    arena_chunk *chunks;
    size_t allocated;
    json_value root;
};

#define ARENA_CHUNK (64u << 10)

/* Zeroed, 16-byte aligned memory from the document's arena; NULL when the cap is reached
 * or memory is out (the caller reports which from doc->allocated). */
static void *arena_alloc(json_doc *doc, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n > JSON_MAX_ALLOC || doc->allocated + n > JSON_MAX_ALLOC)
        return NULL;
    arena_chunk *c = doc->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        c->next = doc->chunks;
        c->used = 0;
        c->cap = cap;
        doc->chunks = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    doc->allocated += n;
    memset(p, 0, n);
    return p;
}

/* ---- parser state -------------------------------------------------------------------- */

typedef struct parser {
    const unsigned char *p;
    size_t len, pos;
    uint32_t n_values;
    json_doc *doc;
    locale_t c_locale; /* for strtod_l, made on the first non-integer number */
} parser;

/* Line and column (1-based) of byte `at`, for messages. */
static void line_col(const parser *ps, size_t at, size_t *line, size_t *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < at && i < ps->len; i++) {
        if (ps->p[i] == '\n') {
            (*line)++;
            *col = 1;
        } else {
            (*col)++;
        }
    }
}

static vkllm_status syntax_error(const parser *ps, size_t at, const char *what)
{
    size_t line, col;
    line_col(ps, at, &line, &col);
    if (at >= ps->len)
        return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: %s at line %zu column %zu (byte %zu): unexpected end of text",
                       what, line, col, at);
    unsigned char c = ps->p[at];
    if (c >= 0x20 && c < 0x7f)
        return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: %s at line %zu column %zu (byte %zu), found '%c'", what, line,
                       col, at, c);
    return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: %s at line %zu column %zu (byte %zu), found byte 0x%02x", what, line,
                   col, at, c);
}

static vkllm_status out_of_memory(const parser *ps)
{
    if (ps->doc->allocated + 4096 >= JSON_MAX_ALLOC)
        return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: the document needs more than %llu bytes of memory (at byte %zu)",
                       (unsigned long long)JSON_MAX_ALLOC, ps->pos);
    return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "JSON: out of memory at byte %zu", ps->pos);
}

static void skip_space(parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        ps->pos++;
    }
}

static int at_char(const parser *ps, char c) { return ps->pos < ps->len && ps->p[ps->pos] == (unsigned char)c; }

/* ---- strings ------------------------------------------------------------------------- */

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at ps->p[at]; -1 if any is missing or not hex. */
static int32_t hex4(const parser *ps, size_t at)
{
    if (ps->len - at < 4)
        return -1;
    int32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(ps->p[at + i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), or 0 if it is not one:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_valid(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;
        if (c == 0xed)
            hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;
        if (c == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string starting at the opening quote. The decoded text is never longer than the raw
 * one (an escape of 2, 6 or 12 bytes gives at most 1, 3 or 4), so the raw length sizes
 * the allocation. */
static vkllm_status parse_string(parser *ps, const char **out, uint32_t *out_len)
{
    size_t start = ps->pos + 1, end = start;
    while (end < ps->len && ps->p[end] != '"')
        end += ps->p[end] == '\\' ? 2 : 1;
    if (end >= ps->len)
        return syntax_error(ps, ps->pos, "unterminated string starting");
    if (end - start > UINT32_MAX - 1)
        return syntax_error(ps, ps->pos, "string too long");
    char *s = arena_alloc(ps->doc, end - start + 1);
    if (!s)
        return out_of_memory(ps);
    size_t n = 0;
    size_t i = start;
    while (i < end) {
        unsigned char c = ps->p[i];
        if (c < 0x20)
            return syntax_error(ps, i, "control character inside a string (must be escaped)");
        if (c != '\\') {
            size_t l = utf8_valid(ps->p + i, end - i);
            if (!l)
                return syntax_error(ps, i, "invalid UTF-8 in a string");
            memcpy(s + n, ps->p + i, l);
            n += l;
            i += l;
            continue;
        }
        unsigned char e = ps->p[i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char map[] = "\"\\/\b\f\n\r\t";
            s[n++] = map[simple - "\"\\/bfnrt"];
            i += 2;
            continue;
        }
        if (e != 'u')
            return syntax_error(ps, i, "invalid escape in a string");
        int32_t cp = hex4(ps, i + 2);
        if (cp < 0 || i + 6 > end)
            return syntax_error(ps, i, "\\u needs four hex digits");
        i += 6;
        if (cp >= 0xdc00 && cp <= 0xdfff)
            return syntax_error(ps, i - 6, "lone low surrogate in a \\u escape");
        if (cp >= 0xd800 && cp <= 0xdbff) {
            int32_t lo = -1;
            if (i + 6 <= end && ps->p[i] == '\\' && ps->p[i + 1] == 'u')
                lo = hex4(ps, i + 2);
            if (lo < 0xdc00 || lo > 0xdfff)
                return syntax_error(ps, i - 6, "high surrogate not followed by a \\u low surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            i += 6;
        }
        n += put_utf8(s + n, (uint32_t)cp);
    }
    s[n] = '\0';
    ps->pos = end + 1;
    *out = s;
    *out_len = (uint32_t)n;
    return VKLLM_OK;
}

/* ---- numbers ------------------------------------------------------------------------- */

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static vkllm_status parse_number(parser *ps, json_value *v)
{
    size_t start = ps->pos, i = start;
    int negative = 0, integral = 1;
    if (i < ps->len && ps->p[i] == '-') {
        negative = 1;
        i++;
    }
    if (i >= ps->len || !is_digit(ps->p[i]))
        return syntax_error(ps, i, "expected a digit");
    if (ps->p[i] == '0' && i + 1 < ps->len && is_digit(ps->p[i + 1]))
        return syntax_error(ps, i, "leading zero in a number");
    /* The integer part, exactly, while it fits. */
    uint64_t mag = 0;
    int overflow = 0;
    while (i < ps->len && is_digit(ps->p[i])) {
        unsigned d = ps->p[i] - '0';
        if (mag > (UINT64_MAX - d) / 10)
            overflow = 1;
        else
            mag = mag * 10 + d;
        i++;
    }
    if (i < ps->len && ps->p[i] == '.') {
        integral = 0;
        i++;
        if (i >= ps->len || !is_digit(ps->p[i]))
            return syntax_error(ps, i, "expected a digit after the decimal point");
        while (i < ps->len && is_digit(ps->p[i]))
            i++;
    }
    if (i < ps->len && (ps->p[i] == 'e' || ps->p[i] == 'E')) {
        integral = 0;
        i++;
        if (i < ps->len && (ps->p[i] == '+' || ps->p[i] == '-'))
            i++;
        if (i >= ps->len || !is_digit(ps->p[i]))
            return syntax_error(ps, i, "expected a digit in the exponent");
        while (i < ps->len && is_digit(ps->p[i]))
            i++;
    }
    v->type = JSON_NUMBER;
    ps->pos = i;
    if (integral && !overflow && (negative ? mag <= (uint64_t)INT64_MAX + 1 : mag <= (uint64_t)INT64_MAX)) {
        v->u.num.is_int = 1;
        v->u.num.i = negative ? (int64_t)(0 - mag) : (int64_t)mag;
        v->u.num.d = (double)v->u.num.i;
        return VKLLM_OK;
    }
    /* strtod in the "C" locale (the host may have set one with a decimal comma) on a
     * NUL-terminated copy. */
    if (!ps->c_locale) {
        ps->c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
        if (!ps->c_locale)
            return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "JSON: cannot create the C locale");
    }
    char small[64];
    char *copy = i - start < sizeof small ? small : malloc(i - start + 1);
    if (!copy)
        return out_of_memory(ps);
    memcpy(copy, ps->p + start, i - start);
    copy[i - start] = '\0';
    v->u.num.d = strtod_l(copy, NULL, ps->c_locale);
    if (copy != small)
        free(copy);
    return VKLLM_OK;
}

/* ---- values -------------------------------------------------------------------------- */

static vkllm_status parse_value(parser *ps, json_value *v, int depth);

static int literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if (ps->len - ps->pos < n || memcmp(ps->p + ps->pos, word, n) != 0)
        return 0;
    ps->pos += n;
    return 1;
}

/* A growable vector of values or members while a container is open. */
typedef struct vec {
    void *items;
    uint32_t n, cap;
    size_t item;
} vec;

static void *vec_push(vec *v)
{
    if (v->n == v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 8;
        void *grown = realloc(v->items, (size_t)cap * v->item);
        if (!grown)
            return NULL;
        v->items = grown;
        v->cap = cap;
    }
    void *slot = (char *)v->items + (size_t)v->n++ * v->item;
    memset(slot, 0, v->item);
    return slot;
}

/* Copies a finished vector into the arena. */
static vkllm_status vec_finish(parser *ps, vec *v, void **out)
{
    *out = NULL;
    if (v->n == 0)
        return VKLLM_OK;
    void *dst = arena_alloc(ps->doc, (size_t)v->n * v->item);
    if (!dst)
        return out_of_memory(ps);
    memcpy(dst, v->items, (size_t)v->n * v->item);
    *out = dst;
    return VKLLM_OK;
}

static vkllm_status parse_array(parser *ps, json_value *v, int depth)
{
    vec items = {NULL, 0, 0, sizeof(json_value)};
    vkllm_status s = VKLLM_OK;
    ps->pos++; /* '[' */
    skip_space(ps);
    if (at_char(ps, ']')) {
        ps->pos++;
    } else {
        for (;;) {
            json_value *item = vec_push(&items);
            if (!item) {
                s = out_of_memory(ps);
                break;
            }
            if ((s = parse_value(ps, item, depth + 1)))
                break;
            skip_space(ps);
            if (at_char(ps, ',')) {
                ps->pos++;
                continue;
            }
            if (at_char(ps, ']')) {
                ps->pos++;
                break;
            }
            s = syntax_error(ps, ps->pos, "expected ',' or ']' in an array");
            break;
        }
    }
    void *stored = NULL;
    if (!s)
        s = vec_finish(ps, &items, &stored);
    v->type = JSON_ARRAY;
    v->n = items.n;
    v->u.items = stored;
    free(items.items);
    return s;
}

typedef struct key_ref {
    const char *key;
    uint32_t len, index;
} key_ref;

static int compare_keys(const char *a, uint32_t na, const char *b, uint32_t nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : (na > nb) - (na < nb);
}

static int compare_key_refs(const void *x, const void *y)
{
    const key_ref *a = x, *b = y;
    int c = compare_keys(a->key, a->len, b->key, b->len);
    return c ? c : (a->index > b->index) - (a->index < b->index);
}

/* Sorts the members' indexes by key into the arena and rejects duplicate keys (in
 * O(n log n), whatever keys a hostile text picks). */
static vkllm_status index_members(parser *ps, json_value *v)
{
    if (v->n == 0)
        return VKLLM_OK;
    key_ref *refs = malloc((size_t)v->n * sizeof *refs);
    v->sorted = arena_alloc(ps->doc, (size_t)v->n * sizeof *v->sorted);
    if (!refs || !v->sorted) {
        free(refs);
        return out_of_memory(ps);
    }
    for (uint32_t i = 0; i < v->n; i++)
        refs[i] = (key_ref){v->u.members[i].key, v->u.members[i].key_len, i};
    qsort(refs, v->n, sizeof *refs, compare_key_refs);
    vkllm_status s = VKLLM_OK;
    for (uint32_t i = 0; i < v->n; i++) {
        v->sorted[i] = refs[i].index;
        if (!s && i > 0 && compare_keys(refs[i - 1].key, refs[i - 1].len, refs[i].key, refs[i].len) == 0) {
            const json_member *dup = &v->u.members[refs[i].index];
            size_t line, col;
            line_col(ps, dup->value.offset, &line, &col);
            s = vk_fail(VKLLM_ERR_BAD_FILE, "JSON: duplicate key \"%.80s\" in the object at byte %zu (again at line %zu)",
                        dup->key, v->offset, line);
        }
    }
    free(refs);
    return s;
}

static vkllm_status parse_object(parser *ps, json_value *v, int depth)
{
    vec members = {NULL, 0, 0, sizeof(json_member)};
    vkllm_status s = VKLLM_OK;
    ps->pos++; /* '{' */
    skip_space(ps);
    if (at_char(ps, '}')) {
        ps->pos++;
    } else {
        for (;;) {
            json_member *m = vec_push(&members);
            if (!m) {
                s = out_of_memory(ps);
                break;
            }
            skip_space(ps);
            if (!at_char(ps, '"')) {
                s = syntax_error(ps, ps->pos, "expected a string key in an object");
                break;
            }
            if ((s = parse_string(ps, &m->key, &m->key_len)))
                break;
            skip_space(ps);
            if (!at_char(ps, ':')) {
                s = syntax_error(ps, ps->pos, "expected ':' after an object key");
                break;
            }
            ps->pos++;
            if ((s = parse_value(ps, &m->value, depth + 1)))
                break;
            skip_space(ps);
            if (at_char(ps, ',')) {
                ps->pos++;
                continue;
            }
            if (at_char(ps, '}')) {
                ps->pos++;
                break;
            }
            s = syntax_error(ps, ps->pos, "expected ',' or '}' in an object");
            break;
        }
    }
    void *stored = NULL;
    if (!s)
        s = vec_finish(ps, &members, &stored);
    v->type = JSON_OBJECT;
    v->n = members.n;
    v->u.members = stored;
    free(members.items);
    if (!s)
        s = index_members(ps, v);
    return s;
}

static vkllm_status parse_value(parser *ps, json_value *v, int depth)
{
    skip_space(ps);
    v->offset = ps->pos;
    if (++ps->n_values > JSON_MAX_VALUES)
        return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: more than %u values (at byte %zu)", JSON_MAX_VALUES, ps->pos);
    if (ps->pos >= ps->len)
        return syntax_error(ps, ps->pos, "expected a value");
    unsigned char c = ps->p[ps->pos];
    if (c == '{' || c == '[') {
        if (depth >= JSON_MAX_DEPTH)
            return vk_fail(VKLLM_ERR_BAD_FILE, "JSON: arrays and objects nested deeper than %d levels at byte %zu",
                           JSON_MAX_DEPTH, ps->pos);
        return c == '{' ? parse_object(ps, v, depth) : parse_array(ps, v, depth);
    }
    if (c == '"') {
        v->type = JSON_STRING;
        return parse_string(ps, &v->u.str, &v->n);
    }
    if (c == '-' || is_digit(c))
        return parse_number(ps, v);
    if (literal(ps, "true") || literal(ps, "false")) {
        v->type = JSON_BOOL;
        v->u.boolean = c == 't';
        return VKLLM_OK;
    }
    if (literal(ps, "null")) {
        v->type = JSON_NULL;
        return VKLLM_OK;
    }
    return syntax_error(ps, ps->pos, "expected a value");
}

/* ---- public -------------------------------------------------------------------------- */

vkllm_status json_parse(const char *text, size_t len, json_doc **out)
{
    *out = NULL;
    if (!text && len)
        return vk_fail(VKLLM_ERR_INVALID_ARGUMENT, "json_parse: NULL text");
    json_doc *doc = calloc(1, sizeof *doc);
    if (!doc)
        return vk_fail(VKLLM_ERR_OUT_OF_HOST_MEMORY, "JSON: out of memory");
    parser ps = {(const unsigned char *)text, len, 0, 0, doc, (locale_t)0};
    vkllm_status s = parse_value(&ps, &doc->root, 0);
    if (!s) {
        skip_space(&ps);
        if (ps.pos != ps.len)
            s = syntax_error(&ps, ps.pos, "unexpected text after the value");
    }
    if (ps.c_locale)
        freelocale(ps.c_locale);
    if (s) {
        json_free(doc);
        return s;
    }
    *out = doc;
    return VKLLM_OK;
}

void json_free(json_doc *doc)
{
    if (!doc)
        return;
    arena_chunk *c = doc->chunks;
    while (c) {
        arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    free(doc);
}

const json_value *json_root(const json_doc *doc) { return doc ? &doc->root : NULL; }

const json_value *json_get(const json_value *obj, const char *key)
{
    if (!obj || obj->type != JSON_OBJECT || !key || obj->n == 0)
        return NULL;
    size_t klen = strlen(key);
    if (klen > UINT32_MAX)
        return NULL;
    uint32_t lo = 0, hi = obj->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const json_member *m = &obj->u.members[obj->sorted[mid]];
        int c = compare_keys(m->key, m->key_len, key, (uint32_t)klen);
        if (c == 0)
            return &m->value;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *json_type_name(json_type t)
{
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    }
    return "unknown";
}
