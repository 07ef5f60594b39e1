/* A small strict JSON parser (RFC 8259) for untrusted text: safetensors headers and
 * Hugging Face config.json files.
 *
 * Strict: no comments, no trailing commas, no leading zeros, no NaN/Infinity, no control
 * characters in strings, valid UTF-8 only, \u escapes with paired surrogates only, and no
 * duplicate key inside an object. Limits keep a hostile text from recursing deeply or
 * allocating without bound. The whole document lives in one arena freed by json_free. */
#ifndef VKLLM_JSON_H
#define VKLLM_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "vkllm/vkllm.h"

/* Arrays and objects nest at most this deep, ... */
#define JSON_MAX_DEPTH 64
/* ... a document holds at most this many values, ... */
#define JSON_MAX_VALUES (1u << 22)
/* ... and the parser allocates at most this many bytes for it. */
#define JSON_MAX_ALLOC (256ull << 20)

typedef enum json_type {
    JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} json_type;

typedef struct json_value json_value;
typedef struct json_member json_member;

struct json_value {
    json_type type;
    uint32_t n;    /* ARRAY: items; OBJECT: members; STRING: bytes (without the NUL) */
    size_t offset; /* of the value's first byte in the text, for messages */
    union {
        int boolean;
        struct {
            double d;
            int is_int; /* written without fraction or exponent and fits int64_t */
            int64_t i;  /* exact value when is_int */
        } num;
        const char *str;       /* UTF-8, NUL-terminated (may contain \u0000 as a NUL) */
        json_value *items;     /* ARRAY */
        json_member *members;  /* OBJECT, in text order */
    } u;
    uint32_t *sorted; /* OBJECT: member indexes sorted by key, for json_get */
};

struct json_member {
    const char *key; /* NUL-terminated */
    uint32_t key_len;
    json_value value;
};

typedef struct json_doc json_doc;

/* Parses `len` bytes of `text` (need not be NUL-terminated). On failure returns
 * VKLLM_ERR_BAD_FILE (or OUT_OF_HOST_MEMORY) with a message giving the line, column and
 * byte offset and what was expected. */
vkllm_status json_parse(const char *text, size_t len, json_doc **out);
void json_free(json_doc *doc);
const json_value *json_root(const json_doc *doc);

/* Member `key` of an object; NULL when absent or when `obj` is not an object. */
const json_value *json_get(const json_value *obj, const char *key);
const char *json_type_name(json_type t);

#endif
