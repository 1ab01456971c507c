/* json.h: a small read-only JSON DOM (RFC 8259).
 *
 * Why our own: measured on the 5.2 MB tokenizer.json of tests/reference, jansson 2.14 parses in
 * ~200 ms and cJSON 1.7.15 in ~47 ms, but cJSON stores strings NUL-terminated and so silently cuts
 * "\u0000" (which occurs in real text), and jansson alone would spend the whole tokenizer-load
 * budget. This parser keeps string lengths, validates UTF-8, rejects lone surrogates, caps nesting
 * depth, reports errors as "line L, column C (byte B): ...", and allocates every node of a document
 * from one arena, so freeing is one call.
 *
 * Writing JSON is json_write.h's job. Nodes are immutable after parsing. Children of an array or object are stored contiguously
 * (node->items[0 .. node->len-1]); object members carry their key in key/key_len. */
#ifndef VLR_JSON_H
#define VLR_JSON_H

#include "common.h"
#include "json_write.h" /* the writer: the reader's counterpart */

typedef enum vlr_json_type {
    VLR_JSON_NULL = 0,
    VLR_JSON_FALSE,
    VLR_JSON_TRUE,
    VLR_JSON_NUMBER,
    VLR_JSON_STRING,
    VLR_JSON_ARRAY,
    VLR_JSON_OBJECT
} vlr_json_type;

typedef struct vlr_json vlr_json;
struct vlr_json {
    vlr_json_type type;
    uint32_t key_len; /* member of an object: key length in bytes */
    const char *key;  /* member of an object: the key (decoded, NUL-terminated), else NULL */
    size_t len;       /* STRING: bytes (NUL-terminated after them); NUMBER: length of the raw
                         text; ARRAY/OBJECT: number of children */
    const char *str;  /* STRING: decoded UTF-8 bytes; NUMBER: the raw text as written */
    double number;    /* NUMBER: value */
    vlr_json *items;  /* ARRAY/OBJECT: children */
};

typedef struct vlr_json_doc vlr_json_doc;

#define VLR_JSON_MAX_DEPTH 512

/* Parses len bytes of text (a NUL inside is data, not an end). On failure returns NULL and fills e
 * with VLR_ERR_FORMAT and "line L, column C (byte B): what". */
vlr_json_doc *vlr_json_parse(const char *text, size_t len, vlr_err *e);
/* Reads and parses a file; messages are prefixed with the path. */
vlr_status vlr_json_parse_file(const char *path, size_t max_bytes, vlr_json_doc **out, vlr_err *e);
void vlr_json_free(vlr_json_doc *doc); /* NULL is a no-op */
const vlr_json *vlr_json_root(const vlr_json_doc *doc);

/* Member lookup by key; with duplicate keys the last one wins, as in Python's json module, which
 * reads configs and requests in the reference pipeline. Linear scan. NULL when obj is not an object
 * or the key is absent. */
const vlr_json *vlr_json_get(const vlr_json *obj, const char *key);
/* Array element, NULL when out of range or not an array. */
const vlr_json *vlr_json_at(const vlr_json *arr, size_t i);

static inline bool vlr_json_is(const vlr_json *v, vlr_json_type t) { return v && v->type == t; }
/* Integer value: true when v is a number with an integral value representable in int64. */
bool vlr_json_int(const vlr_json *v, int64_t *out);
/* Name of a type for messages: "null", "boolean", "number", "string", "array", "object". */
const char *vlr_json_type_name(const vlr_json *v);

/* Validates UTF-8 (no overlongs, no surrogates, <= U+10FFFF). Returns the byte offset of the first
 * invalid sequence, or len when all is valid. */
size_t vlr_utf8_invalid_at(const char *s, size_t len);

#endif
