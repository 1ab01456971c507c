/* fuzz_tokenizer.c: libFuzzer target for the tokenizer (src/tokenizer.c, src/pretokenize.c) with
 * the tiny-a tokenizer.json of tests/reference (the real Qwen2 vocabulary, merges and added tokens).
 *
 * The first byte picks what the rest is:
 *   - text (any first byte but 'I' and 'U'): invalid UTF-8 must fail with "invalid UTF-8 at byte
 *     N" at the offset vlr_utf8_invalid_at gives; valid text must encode, every piece boundary of the pre-tokenizer
 *     must move forward, encoding with a long-lived cache must give the ids of encoding without one,
 *     and decoding must give back the text as Hugging Face would: the added tokens found by a naive
 *     leftmost-longest search written here, and every stretch between them NFC-normalized whole
 *     (utf8proc_map over the stretch). That last check guards the tokenizer's shortcut of
 *     normalizing only the chunks around non-ASCII bytes.
 *   - ids ('I'): the rest as little-endian int32 token ids; decode must either name a bad id or give
 *     valid UTF-8, with and without skip_special.
 *   - code points ('U'): each further byte picks a character from a table of ones that NFC and the
 *     pre-tokenizer treat specially (combining marks of several classes, Hangul jamo, letters that
 *     compose, composition exclusions, the Unicode spaces, an added token), then the text checks
 *     above run on the result: random bytes alone rarely form such sequences.
 * The tokenizer path can be overridden with VLR_FUZZ_TOKENIZER; run from the repository root. */
#include <stdio.h>
#include <stdlib.h>

#include <utf8proc.h>

#include "json.h"
#include "pretokenize.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

typedef struct added {
    char *content;
    size_t len;
    int32_t id;
} added;

/* Loaded once for the whole run; the fuzzer is one process. */
static vlr_tokenizer *g_tok;
static vlr_tok_cache *g_cache;
static added *g_added;
static size_t g_n_added;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("VLR_FUZZ_TOKENIZER");
    if (!path) path = "tests/reference/models/tiny-a/tokenizer.json";
    vlr_err e = {0};
    vlr_json_doc *doc = NULL;
    if (vlr_tok_load(path, &g_tok, &e) || vlr_json_parse_file(path, (size_t)1 << 28, &doc, &e)) {
        fprintf(stderr, "fuzz_tokenizer: %s (run from the repository root)\n", e.msg);
        exit(1);
    }
    const vlr_json *list = vlr_json_get(vlr_json_root(doc), "added_tokens");
    g_added = calloc(list ? list->len + 1 : 1, sizeof *g_added);
    for (size_t i = 0; list && i < list->len; i++) {
        const vlr_json *a = &list->items[i], *content = vlr_json_get(a, "content");
        int64_t id;
        if (!vlr_json_is(content, VLR_JSON_STRING) || !vlr_json_int(vlr_json_get(a, "id"), &id)) exit(1);
        /* The oracle below knows only plain matching: refuse a file whose added tokens strip or
         * match single words, rather than checking it wrongly. */
        const char *flags[] = {"lstrip", "rstrip", "single_word", "normalized"};
        for (int f = 0; f < 4; f++)
            if (vlr_json_get(a, flags[f]) && vlr_json_get(a, flags[f])->type == VLR_JSON_TRUE) {
                fprintf(stderr, "fuzz_tokenizer: added token %s has %s: not modelled\n", content->str, flags[f]);
                exit(1);
            }
        g_added[g_n_added].content = malloc(content->len + 1);
        memcpy(g_added[g_n_added].content, content->str, content->len + 1);
        g_added[g_n_added].len = content->len;
        g_added[g_n_added].id = (int32_t)id;
        g_n_added++;
    }
    vlr_json_free(doc);
    g_cache = vlr_tok_cache_new(512); /* small: fills and starts over during the run */
    return 0;
}

/* Leftmost, then longest added token in s[from..n). */
static const added *next_added(const char *s, size_t n, size_t from, size_t *at) {
    for (size_t p = from; p < n; p++) {
        const added *best = NULL;
        for (size_t k = 0; k < g_n_added; k++) {
            const added *a = &g_added[k];
            if (a->len && a->len <= n - p && memcmp(s + p, a->content, a->len) == 0 && (!best || a->len > best->len))
                best = a;
        }
        if (best) {
            *at = p;
            return best;
        }
    }
    return NULL;
}

static void append_nfc(vlr_buf *out, const char *s, size_t n) {
    if (n == 0) return;
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0) abort();
    vlr_buf_append(out, nfc, (size_t)r);
    free(nfc);
}

static void fuzz_text(const char *text, size_t len) {
    vlr_err e = {0};
    vlr_ids ids = {0}, cached = {0};
    vlr_status rc = vlr_tok_encode(g_tok, NULL, text, len, &ids, &e);
    size_t bad = vlr_utf8_invalid_at(text, len);
    if (bad < len) {
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad);
        if (rc != VLR_ERR_INPUT || strcmp(e.msg, want) != 0) abort();
        free(ids.data);
        return;
    }
    if (rc != VLR_OK) {
        fprintf(stderr, "encode failed on valid UTF-8: %s\n", e.msg);
        abort();
    }
    size_t vocab = vlr_tok_vocab_size(g_tok);
    for (size_t i = 0; i < ids.len; i++)
        if (ids.data[i] < 0 || (size_t)ids.data[i] >= vocab) abort();

    /* The pre-tokenizer cuts any valid text into non-empty pieces that cover it. */
    for (size_t pos = 0; pos < len;) {
        size_t end = vlr_pretok_next(text, len, pos);
        if (end <= pos || end > len) abort();
        pos = end;
    }

    if (vlr_tok_encode(g_tok, g_cache, text, len, &cached, &e) != VLR_OK || cached.len != ids.len ||
        (ids.len && memcmp(cached.data, ids.data, ids.len * sizeof *ids.data) != 0))
        abort();

    vlr_buf want = {0}, got = {0};
    size_t pos = 0, at = 0;
    const added *a;
    while ((a = next_added(text, len, pos, &at))) {
        append_nfc(&want, text + pos, at - pos);
        vlr_buf_append(&want, a->content, a->len);
        pos = at + a->len;
    }
    append_nfc(&want, text + pos, len - pos);
    if (vlr_tok_decode(g_tok, ids.data, ids.len, false, &got, &e) != VLR_OK) abort();
    if (got.oom || want.oom || got.len != want.len || (got.len && memcmp(got.data, want.data, got.len) != 0)) {
        fprintf(stderr, "decode(encode(x)) differs from x with NFC stretches:\n got  %zu bytes: %.*s\n want %zu bytes: %.*s\n",
                got.len, (int)got.len, got.data ? got.data : "", want.len, (int)want.len, want.data ? want.data : "");
        abort();
    }
    vlr_buf_free(&want);
    vlr_buf_free(&got);
    free(ids.data);
    free(cached.data);
}

static void fuzz_ids(const uint8_t *data, size_t size) {
    size_t n = size / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return;
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 | (uint32_t)data[4 * i + 2] << 16 |
                     (uint32_t)data[4 * i + 3] << 24;
        ids[i] = (int32_t)u;
    }
    for (int skip = 0; skip < 2; skip++) {
        vlr_buf out = {0};
        vlr_err e = {0};
        vlr_status rc = vlr_tok_decode(g_tok, ids, n, skip != 0, &out, &e);
        if (rc == VLR_OK) {
            if (out.len && vlr_utf8_invalid_at(out.data, out.len) != out.len) abort();
        } else if (rc != VLR_ERR_INPUT || strstr(e.msg, "token id") == NULL) {
            abort();
        }
        vlr_buf_free(&out);
    }
    free(ids);
}

/* Characters for the 'U' mode. */
static const char *const k_pieces[] = {
    "a", "e", "o", "A", "E", "s", "l", "k", "<", ">", "=", "'", " ", "\n", "\r", "1", "|",
    "\u0300", "\u0301", "\u0308", "\u0327", "\u0338", "\u0323", "\u031B", "\u0345", "\u05B0",
    "\u0951", "\u093C", "\u0915", "\u0958", "\u1100", "\u1161", "\u11A8", "\uAC00", "\u0F71",
    "\u0F72", "\u0F73", "\u0344", "\u0385", "\u00E9", "\u00C5", "\u212B", "\u2126", "\u3099",
    "\u304B", "\u0CC6", "\u0CC2", "\u0CD5", "\u0B47", "\u0B3E", "\u09C7", "\u09BE", "\u0DD9",
    "\u0DCF", "\u0DCA", "\U00011099", "\U000110BA", "\U0001D15E", "\U0001D165", "\u00A0", "\u3000",
    "\u2028", "\xC2\x85", "\uFEFF", "\u200D", "\U0001F44D", "\U0001F3FD", "\u0130", "\u017F",
    "\u212A", "\u1E0B", "\u1E63", "\u0387", "\u00B7", "\u4E2D", "\u0660", "\u2167",
    "<|im_end|>", "<|im_start|>"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    if (data[0] == 'I') {
        fuzz_ids(data + 1, size - 1);
        return 0;
    }
    if (data[0] == 'U') {
        vlr_buf b = {0};
        const size_t n_pieces = sizeof k_pieces / sizeof *k_pieces;
        for (size_t i = 1; i < size; i++) vlr_buf_puts(&b, k_pieces[data[i] % n_pieces]);
        char *text = malloc(b.len ? b.len : 1);
        if (text) {
            if (b.len) memcpy(text, b.data, b.len);
            fuzz_text(text, b.len);
            free(text);
        }
        vlr_buf_free(&b);
        return 0;
    }
    /* An exact-size heap copy so ASan sees any read past the text. */
    char *text = malloc(size - 1 ? size - 1 : 1);
    if (!text) return 0;
    memcpy(text, data + 1, size - 1);
    fuzz_text(text, size - 1);
    free(text);
    return 0;
}
