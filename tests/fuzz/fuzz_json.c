/* fuzz_json.c: libFuzzer target for the JSON reader (src/json.c) and the JSON writer
 * (src/json_write.c), which together carry every request line, config and tokenizer file.
 *
 * Each input is parsed. A rejected input must leave no document and a message that names a position.
 * An accepted one is walked completely (ASan checks every read) and checked against the DOM's
 * promises: strings and keys NUL-terminated after their length and valid UTF-8, numbers keep their
 * raw text, vlr_json_get finds the last member of a key (Python's rule for duplicates). It is then written back out by the
 * writer (vlr_jw_value: keys and strings escaped again, numbers as their raw text), parsed again, and the two trees
 * must be equal. Independently of parsing, vlr_utf8_invalid_at is compared with a decoder written
 * here from the Unicode table of well-formed byte sequences (Table 3-7). Any abort is a finding.
 *
 * Build and run: `make fuzz` (all targets), or from the repository root
 *   make build-fuzz/fuzz_json && build-fuzz/fuzz_json -max_total_time=120 build-fuzz/corpus_json tests/fuzz/corpus_json */
#include <stdio.h>
#include <stdlib.h>

#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* First invalid offset per Unicode Table 3-7 (well-formed UTF-8 byte sequences). */
static size_t utf8_invalid_at_oracle(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        size_t k;
        uint8_t lo = 0x80, hi = 0xBF;
        if (b <= 0x7F) k = 1;
        else if (b >= 0xC2 && b <= 0xDF) k = 2;
        else if (b == 0xE0) k = 3, lo = 0xA0;
        else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) k = 3;
        else if (b == 0xED) k = 3, hi = 0x9F;
        else if (b == 0xF0) k = 4, lo = 0x90;
        else if (b >= 0xF1 && b <= 0xF3) k = 4;
        else if (b == 0xF4) k = 4, hi = 0x8F;
        else return i;
        if (n - i < k) return i;
        for (size_t j = 1; j < k; j++) {
            uint8_t l = j == 1 ? lo : 0x80, h = j == 1 ? hi : 0xBF;
            if (s[i + j] < l || s[i + j] > h) return i;
        }
        i += k;
    }
    return n;
}

static void check_node(const vlr_json *v, int depth) {
    if (depth > VLR_JSON_MAX_DEPTH + 1) abort();
    if (v->key) {
        if (v->key[v->key_len] != '\0' || vlr_utf8_invalid_at(v->key, v->key_len) != v->key_len) abort();
    }
    switch (v->type) {
    case VLR_JSON_NULL:
    case VLR_JSON_FALSE:
    case VLR_JSON_TRUE:
        break;
    case VLR_JSON_NUMBER:
        if (!v->str || v->len == 0 || v->str[v->len] != '\0' || strlen(v->str) != v->len) abort();
        if (v->number != v->number) abort(); /* JSON numbers are never NaN */
        break;
    case VLR_JSON_STRING:
        if (!v->str || v->str[v->len] != '\0' || vlr_utf8_invalid_at(v->str, v->len) != v->len) abort();
        break;
    case VLR_JSON_ARRAY:
        for (size_t i = 0; i < v->len; i++) {
            if (v->items[i].key) abort();
            if (vlr_json_at(v, i) != &v->items[i]) abort();
            check_node(&v->items[i], depth + 1);
        }
        if (vlr_json_at(v, v->len) != NULL) abort();
        break;
    case VLR_JSON_OBJECT:
        for (size_t i = 0; i < v->len; i++) {
            const vlr_json *m = &v->items[i];
            if (!m->key) abort();
            check_node(m, depth + 1);
            /* vlr_json_get takes a C string: only keys without NUL can be looked up. */
            if (strlen(m->key) == m->key_len) {
                const vlr_json *found = vlr_json_get(v, m->key);
                if (!found || found < m || found->key_len != m->key_len ||
                    memcmp(found->key, m->key, m->key_len) != 0)
                    abort();
            }
        }
        break;
    default:
        abort();
    }
}

static void write_node(const vlr_json *v, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_value(&w, v);
    if (w.bad || w.depth != 0) abort();
}

static bool same_node(const vlr_json *a, const vlr_json *b) {
    if (a->type != b->type || a->len != b->len || a->key_len != b->key_len || !a->key != !b->key) return false;
    if (a->key && memcmp(a->key, b->key, a->key_len) != 0) return false;
    switch (a->type) {
    case VLR_JSON_NUMBER:
        return memcmp(a->str, b->str, a->len) == 0 && memcmp(&a->number, &b->number, sizeof a->number) == 0;
    case VLR_JSON_STRING:
        return memcmp(a->str, b->str, a->len) == 0;
    case VLR_JSON_ARRAY:
    case VLR_JSON_OBJECT:
        for (size_t i = 0; i < a->len; i++)
            if (!same_node(&a->items[i], &b->items[i])) return false;
        return true;
    default:
        return true;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (vlr_utf8_invalid_at((const char *)data, size) != utf8_invalid_at_oracle(data, size)) abort();

    vlr_err e = {0};
    vlr_json_doc *doc = vlr_json_parse((const char *)data, size, &e);
    if (!doc) {
        /* A rejection names where: "line L, column C (byte B): ..." (or is out of memory). */
        if (e.code == VLR_OK || (e.code != VLR_ERR_NOMEM && strncmp(e.msg, "line ", 5) != 0)) abort();
        return 0;
    }
    const vlr_json *root = vlr_json_root(doc);
    if (!root || root->key) abort();
    check_node(root, 0);

    vlr_buf text = {0};
    write_node(root, &text);
    if (text.oom) abort();
    vlr_err e2 = {0};
    vlr_json_doc *again = vlr_json_parse(text.data, text.len, &e2);
    if (!again) {
        fprintf(stderr, "re-parse failed: %s\n", e2.msg);
        abort();
    }
    if (!same_node(root, vlr_json_root(again))) abort();
    vlr_json_free(again);
    vlr_buf_free(&text);
    vlr_json_free(doc);
    return 0;
}
