/* json.c: a strict RFC 8259 parser producing the read-only DOM of json.h.
 *
 * One pass over the text. Children of an open array/object are collected on a growable work stack
 * and moved into the document's arena when the container closes, so every container's children are
 * contiguous and the whole document is freed at once. Strings are decoded into the arena with their
 * length (a "\u0000" escape is kept as a NUL byte); raw bytes must be valid UTF-8 and escapes must
 * not produce lone surrogates. Recursion depth is capped (VLR_JSON_MAX_DEPTH) so hostile nesting
 * cannot exhaust the C stack. Numbers are converted with strtod_l in the "C" locale: plain strtod
 * follows LC_NUMERIC, and a host program running under a decimal-comma locale would read "0.5" as 0.
 * It does not write JSON: see json_write.c. */
#include "json.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct arena_block {
    struct arena_block *next;
    size_t used, cap;
    max_align_t data[];
} arena_block;

struct vlr_json_doc {
    arena_block *blocks;
    vlr_json root;
};

typedef struct parser {
    const char *text;
    size_t len, pos;
    int depth;
    vlr_json_doc *doc;
    vlr_json *stack; /* children of the open containers */
    size_t stack_len, stack_cap;
    locale_t c_numeric; /* "C" LC_NUMERIC for strtod_l, made at the first number; 0 before */
    vlr_err *e;
    vlr_status rc;
} parser;

static void *arena_alloc(parser *p, size_t n) {
    n = (n + 15) & ~(size_t)15;
    arena_block *b = p->doc->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 65536 ? n : 65536;
        b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = p->doc->blocks;
        p->doc->blocks = b;
    }
    void *out = (char *)b->data + b->used;
    b->used += n;
    return out;
}

/* Records the first error with the position as line/column/byte. */
static vlr_status fail_at(parser *p, size_t at, vlr_status code, const char *what) {
    if (p->rc != VLR_OK) return p->rc;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < at && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)p->text[i] & 0xc0) != 0x80) {
            col++; /* columns count characters, not UTF-8 continuation bytes */
        }
    }
    p->rc = vlr_fail(p->e, code, "line %zu, column %zu (byte %zu): %s", line, col, at, what);
    return p->rc;
}

static vlr_status nomem(parser *p) {
    if (p->rc == VLR_OK) p->rc = vlr_fail(p->e, VLR_ERR_NOMEM, "out of memory while parsing JSON");
    return p->rc;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xc2) return 0; /* continuation byte or overlong 2-byte lead */
    if (c < 0xe0) return (n >= 2 && (s[1] & 0xc0) == 0x80) ? 2 : 0;
    if (c < 0xf0) {
        if (n < 3 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) return 0;
        if (c == 0xe0 && s[1] < 0xa0) return 0;  /* overlong */
        if (c == 0xed && s[1] >= 0xa0) return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c < 0xf5) {
        if (n < 4 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80 || (s[3] & 0xc0) != 0x80)
            return 0;
        if (c == 0xf0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xf4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

size_t vlr_utf8_invalid_at(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq_len(u + i, len - i);
        if (!k) return i;
        i += k;
    }
    return len;
}

static int hex4(const char *s) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *out, uint32_t cp) {
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

/* Parses the string starting at the opening quote; result in the arena. */
static vlr_status parse_string(parser *p, const char **out, size_t *out_len) {
    size_t start = ++p->pos; /* after the quote */
    const unsigned char *t = (const unsigned char *)p->text;
    /* First pass: find the end, validate, and learn whether there are escapes. Escapes never make
     * the text longer (\uXXXX -> at most 3 bytes, a surrogate pair 12 -> 4), so the raw length
     * bounds the decoded length. */
    size_t i = start;
    bool escapes = false;
    for (;;) {
        if (i >= p->len) return fail_at(p, start - 1, VLR_ERR_FORMAT, "unterminated string");
        unsigned c = t[i];
        if (c == '"') break;
        if (c == '\\') {
            escapes = true;
            i += 2;
            continue;
        }
        if (c < 0x20) return fail_at(p, i, VLR_ERR_FORMAT, "control character inside a string");
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_seq_len(t + i, p->len - i);
        if (!k) return fail_at(p, i, VLR_ERR_FORMAT, "invalid UTF-8 in a string");
        i += k;
    }
    size_t raw_len = i - start;
    char *dst = arena_alloc(p, raw_len + 1);
    if (!dst) return nomem(p);
    size_t n = 0;
    if (!escapes) {
        memcpy(dst, p->text + start, raw_len);
        n = raw_len;
    } else {
        for (size_t j = start; j < i;) {
            char c = p->text[j];
            if (c != '\\') {
                dst[n++] = c;
                j++;
                continue;
            }
            char esc = p->text[j + 1];
            switch (esc) {
            case '"': dst[n++] = '"'; j += 2; break;
            case '\\': dst[n++] = '\\'; j += 2; break;
            case '/': dst[n++] = '/'; j += 2; break;
            case 'b': dst[n++] = '\b'; j += 2; break;
            case 'f': dst[n++] = '\f'; j += 2; break;
            case 'n': dst[n++] = '\n'; j += 2; break;
            case 'r': dst[n++] = '\r'; j += 2; break;
            case 't': dst[n++] = '\t'; j += 2; break;
            case 'u': {
                int hi = (j + 6 <= i) ? hex4(p->text + j + 2) : -1;
                if (hi < 0) return fail_at(p, j, VLR_ERR_FORMAT, "invalid \\u escape");
                uint32_t cp = (uint32_t)hi;
                j += 6;
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    int lo = (j + 6 <= i && p->text[j] == '\\' && p->text[j + 1] == 'u')
                                 ? hex4(p->text + j + 2) : -1;
                    if (lo < 0xdc00 || lo > 0xdfff)
                        return fail_at(p, j - 6, VLR_ERR_FORMAT, "lone UTF-16 surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
                    j += 6;
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    return fail_at(p, j - 6, VLR_ERR_FORMAT, "lone UTF-16 surrogate in \\u escape");
                }
                n += put_utf8(dst + n, cp);
                break;
            }
            default:
                return fail_at(p, j, VLR_ERR_FORMAT, "invalid escape in a string");
            }
        }
    }
    dst[n] = '\0';
    p->pos = i + 1;
    *out = dst;
    *out_len = n;
    return VLR_OK;
}

static vlr_status parse_number(parser *p, vlr_json *v) {
    size_t s = p->pos, i = s;
    const char *t = p->text;
#define DIGIT(k) ((k) < p->len && t[k] >= '0' && t[k] <= '9')
    if (i < p->len && t[i] == '-') i++;
    if (!DIGIT(i)) return fail_at(p, s, VLR_ERR_FORMAT, "invalid number");
    if (t[i] == '0') i++;
    else while (DIGIT(i)) i++;
    if (i < p->len && t[i] == '.') {
        i++;
        if (!DIGIT(i)) return fail_at(p, i, VLR_ERR_FORMAT, "invalid number: digit expected after '.'");
        while (DIGIT(i)) i++;
    }
    if (i < p->len && (t[i] == 'e' || t[i] == 'E')) {
        i++;
        if (i < p->len && (t[i] == '+' || t[i] == '-')) i++;
        if (!DIGIT(i)) return fail_at(p, i, VLR_ERR_FORMAT, "invalid number: digit expected in exponent");
        while (DIGIT(i)) i++;
    }
#undef DIGIT
    /* The raw text is copied into the arena: it must outlive the source buffer (parse_file frees
     * it), and strtod needs it NUL-terminated. */
    size_t n = i - s;
    char *buf = arena_alloc(p, n + 1);
    if (!buf) return nomem(p);
    memcpy(buf, t + s, n);
    buf[n] = '\0';
    if (!p->c_numeric) {
        p->c_numeric = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
        if (!p->c_numeric) return nomem(p);
    }
    v->type = VLR_JSON_NUMBER;
    v->number = strtod_l(buf, NULL, p->c_numeric);
    v->str = buf;
    v->len = n;
    p->pos = i;
    return VLR_OK;
}

static bool literal(parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->text + p->pos, word, n) != 0) return false;
    p->pos += n;
    return true;
}

static vlr_status push(parser *p, const vlr_json *v) {
    if (p->stack_len == p->stack_cap) {
        size_t cap = p->stack_cap ? p->stack_cap * 2 : 256;
        vlr_json *s = realloc(p->stack, cap * sizeof *s);
        if (!s) return nomem(p);
        p->stack = s;
        p->stack_cap = cap;
    }
    p->stack[p->stack_len++] = *v;
    return VLR_OK;
}

/* Moves the children collected since `base` into the arena as v's items. */
static vlr_status close_container(parser *p, vlr_json *v, size_t base) {
    size_t n = p->stack_len - base;
    v->len = n;
    v->items = NULL;
    if (n) {
        vlr_json *items = arena_alloc(p, n * sizeof *items);
        if (!items) return nomem(p);
        memcpy(items, p->stack + base, n * sizeof *items);
        v->items = items;
    }
    p->stack_len = base;
    return VLR_OK;
}

static vlr_status parse_value(parser *p, vlr_json *v);

static vlr_status parse_array(parser *p, vlr_json *v) {
    size_t base = p->stack_len;
    v->type = VLR_JSON_ARRAY;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == ']') {
        p->pos++;
        return close_container(p, v, base);
    }
    for (;;) {
        vlr_json item = {0};
        if (parse_value(p, &item) || push(p, &item)) return p->rc;
        skip_ws(p);
        if (p->pos >= p->len) return fail_at(p, p->pos, VLR_ERR_FORMAT, "unterminated array");
        char c = p->text[p->pos++];
        if (c == ']') break;
        if (c != ',') return fail_at(p, p->pos - 1, VLR_ERR_FORMAT, "expected ',' or ']' in array");
        skip_ws(p);
    }
    return close_container(p, v, base);
}

static vlr_status parse_object(parser *p, vlr_json *v) {
    size_t base = p->stack_len;
    v->type = VLR_JSON_OBJECT;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->text[p->pos] == '}') {
        p->pos++;
        return close_container(p, v, base);
    }
    for (;;) {
        if (p->pos >= p->len || p->text[p->pos] != '"')
            return fail_at(p, p->pos, VLR_ERR_FORMAT, "expected a string key in object");
        const char *key;
        size_t key_len;
        if (parse_string(p, &key, &key_len)) return p->rc;
        if (key_len > UINT32_MAX) return fail_at(p, p->pos, VLR_ERR_LIMIT, "object key too long");
        skip_ws(p);
        if (p->pos >= p->len || p->text[p->pos] != ':')
            return fail_at(p, p->pos, VLR_ERR_FORMAT, "expected ':' after object key");
        p->pos++;
        skip_ws(p);
        vlr_json item = {0};
        if (parse_value(p, &item)) return p->rc;
        item.key = key;
        item.key_len = (uint32_t)key_len;
        if (push(p, &item)) return p->rc;
        skip_ws(p);
        if (p->pos >= p->len) return fail_at(p, p->pos, VLR_ERR_FORMAT, "unterminated object");
        char c = p->text[p->pos++];
        if (c == '}') break;
        if (c != ',') return fail_at(p, p->pos - 1, VLR_ERR_FORMAT, "expected ',' or '}' in object");
        skip_ws(p);
    }
    return close_container(p, v, base);
}

static vlr_status parse_value(parser *p, vlr_json *v) {
    skip_ws(p);
    if (p->pos >= p->len) return fail_at(p, p->pos, VLR_ERR_FORMAT, "unexpected end of input, expected a value");
    char c = p->text[p->pos];
    vlr_status rc;
    switch (c) {
    case '{':
    case '[':
        if (++p->depth > VLR_JSON_MAX_DEPTH)
            return fail_at(p, p->pos, VLR_ERR_LIMIT, "nesting deeper than 512 levels");
        rc = c == '{' ? parse_object(p, v) : parse_array(p, v);
        p->depth--;
        return rc;
    case '"':
        v->type = VLR_JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    case 't':
        if (literal(p, "true")) { v->type = VLR_JSON_TRUE; return VLR_OK; }
        break;
    case 'f':
        if (literal(p, "false")) { v->type = VLR_JSON_FALSE; return VLR_OK; }
        break;
    case 'n':
        if (literal(p, "null")) { v->type = VLR_JSON_NULL; return VLR_OK; }
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
        break;
    }
    return fail_at(p, p->pos, VLR_ERR_FORMAT, "unexpected character, expected a value");
}

vlr_json_doc *vlr_json_parse(const char *text, size_t len, vlr_err *e) {
    vlr_json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        vlr_fail(e, VLR_ERR_NOMEM, "out of memory while parsing JSON");
        return NULL;
    }
    parser p = {.text = text, .len = len, .doc = doc, .e = e, .rc = VLR_OK};
    if (parse_value(&p, &doc->root) == VLR_OK) {
        skip_ws(&p);
        if (p.pos != p.len) fail_at(&p, p.pos, VLR_ERR_FORMAT, "unexpected data after the JSON value");
    }
    free(p.stack);
    if (p.c_numeric) freelocale(p.c_numeric);
    if (p.rc != VLR_OK) {
        vlr_json_free(doc);
        return NULL;
    }
    return doc;
}

vlr_status vlr_json_parse_file(const char *path, size_t max_bytes, vlr_json_doc **out, vlr_err *e) {
    *out = NULL;
    char *text;
    size_t len;
    vlr_status rc = vlr_read_file(path, max_bytes, &text, &len, e);
    if (rc) return rc;
    *out = vlr_json_parse(text, len, e);
    free(text);
    if (!*out) {
        vlr_err_prefix(e, "%s: invalid JSON: ", path);
        return e ? e->code : VLR_ERR_FORMAT;
    }
    return VLR_OK;
}

void vlr_json_free(vlr_json_doc *doc) {
    if (!doc) return;
    arena_block *b = doc->blocks;
    while (b) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(doc);
}

const vlr_json *vlr_json_root(const vlr_json_doc *doc) { return doc ? &doc->root : NULL; }

const vlr_json *vlr_json_get(const vlr_json *obj, const char *key) {
    if (!obj || obj->type != VLR_JSON_OBJECT) return NULL;
    size_t n = strlen(key);
    for (size_t i = obj->len; i-- > 0;) {
        const vlr_json *m = &obj->items[i];
        if (m->key_len == n && memcmp(m->key, key, n) == 0) return m;
    }
    return NULL;
}

const vlr_json *vlr_json_at(const vlr_json *arr, size_t i) {
    if (!arr || arr->type != VLR_JSON_ARRAY || i >= arr->len) return NULL;
    return &arr->items[i];
}

bool vlr_json_int(const vlr_json *v, int64_t *out) {
    if (!v || v->type != VLR_JSON_NUMBER) return false;
    double d = v->number;
    if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(int64_t)d) return false;
    *out = (int64_t)d;
    return true;
}

const char *vlr_json_type_name(const vlr_json *v) {
    if (!v) return "nothing";
    switch (v->type) {
    case VLR_JSON_NULL: return "null";
    case VLR_JSON_FALSE:
    case VLR_JSON_TRUE: return "boolean";
    case VLR_JSON_NUMBER: return "number";
    case VLR_JSON_STRING: return "string";
    case VLR_JSON_ARRAY: return "array";
    case VLR_JSON_OBJECT: return "object";
    }
    return "unknown";
}
