/* test_tokenizer.c: the Qwen2 tokenizer against the golden data of tests/reference/tokenizer
 * (4,650 corpus strings with the ids Hugging Face tokenizers gives, 240 decode cases), plus the
 * added-token rules, invalid input and load errors.
 *
 * Golden checks compare with ids produced by the reference implementations (README there). The
 * synthetic tokenizers built below check rules whose expected ids follow from the definitions
 * (merge order, leftmost-longest added tokens, lstrip/rstrip/single_word/normalized).
 *
 * `test_tokenizer --bench` instead measures load time and encoding speed (bench/tokenizer.md). */
#include <time.h>
#include <unistd.h>

#include <utf8proc.h>

#include "json.h"
#include "test.h"
#include "tokenizer.h"

#define TOK_JSON "tests/reference/tokenizer/tokenizer.json"
#define TINY_TOK_JSON "tests/reference/models/tiny-a/tokenizer.json"
#define CORPUS "tests/reference/tokenizer/corpus.jsonl"
#define DECODE "tests/reference/tokenizer/decode.jsonl"

/* ---- helpers ------------------------------------------------------------------------------ */

typedef struct golden_line {
    vlr_json_doc *doc;
    const vlr_json *obj;
} golden_line;

typedef struct golden_file {
    char *text;
    size_t len;
    golden_line *lines;
    size_t n;
} golden_file;

static void golden_free(golden_file *g) {
    for (size_t i = 0; i < g->n; i++) vlr_json_free(g->lines[i].doc);
    free(g->lines);
    free(g->text);
    memset(g, 0, sizeof *g);
}

/* Reads a JSON Lines file (lines separated by \n only). */
static bool golden_read(const char *path, golden_file *g) {
    vlr_err e = {0};
    memset(g, 0, sizeof *g);
    if (vlr_read_file(path, (size_t)1 << 28, &g->text, &g->len, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return false;
    }
    size_t cap = 0;
    for (size_t pos = 0; pos < g->len;) {
        const char *nl = memchr(g->text + pos, '\n', g->len - pos);
        size_t end = nl ? (size_t)(nl - g->text) : g->len;
        if (end > pos) {
            if (g->n == cap) {
                cap = cap ? cap * 2 : 1024;
                g->lines = realloc(g->lines, cap * sizeof *g->lines);
                if (!g->lines) return false;
            }
            golden_line *l = &g->lines[g->n];
            l->doc = vlr_json_parse(g->text + pos, end - pos, &e);
            if (!l->doc) {
                fprintf(stderr, "%s: line %zu: %s\n", path, g->n + 1, e.msg);
                return false;
            }
            l->obj = vlr_json_root(l->doc);
            g->n++;
        }
        pos = end + 1;
    }
    return true;
}

static bool json_to_ids(const vlr_json *arr, vlr_ids *out) {
    out->len = 0;
    if (!vlr_json_is(arr, VLR_JSON_ARRAY)) return false;
    for (size_t i = 0; i < arr->len; i++) {
        int64_t v;
        if (!vlr_json_int(&arr->items[i], &v) || !vlr_ids_push(out, (int32_t)v)) return false;
    }
    return true;
}

/* Encodes s (NUL-terminated, for the small hand-written cases) and compares with want. */
static bool encode_is(const vlr_tokenizer *t, const char *s, size_t len, const int32_t *want,
                      size_t n_want, const char *what) {
    vlr_ids got = {0};
    vlr_err e = {0};
    vlr_status rc = vlr_tok_encode(t, NULL, s, len, &got, &e);
    bool ok = rc == VLR_OK && got.len == n_want &&
              (n_want == 0 || !memcmp(got.data, want, n_want * sizeof *want));
    if (!ok) {
        fprintf(stderr, "%s: rc %d (%s), got [", what, rc, e.msg);
        for (size_t i = 0; i < got.len; i++) fprintf(stderr, "%s%d", i ? ", " : "", got.data[i]);
        fprintf(stderr, "], want [");
        for (size_t i = 0; i < n_want; i++) fprintf(stderr, "%s%d", i ? ", " : "", want[i]);
        fprintf(stderr, "]\n");
    }
    free(got.data);
    return ok;
}
#define ENCODE_IS(t, s, ...)                                                                      \
    do {                                                                                          \
        const int32_t want_[] = {__VA_ARGS__};                                                    \
        CHECK(encode_is(t, s, sizeof(s) - 1, want_, sizeof want_ / sizeof *want_, #s), "%s", #s); \
    } while (0)

static bool decode_is(const vlr_tokenizer *t, const int32_t *ids, size_t n, bool skip,
                      const char *want, size_t want_len) {
    vlr_buf out = {0};
    vlr_err e = {0};
    vlr_status rc = vlr_tok_decode(t, ids, n, skip, &out, &e);
    bool ok = rc == VLR_OK && out.len == want_len && (!want_len || !memcmp(out.data, want, want_len));
    vlr_buf_free(&out);
    return ok;
}

/* ---- golden corpus ------------------------------------------------------------------------ */

/* Every corpus string must give exactly the reference ids. Returns the bytes encoded. */
static size_t check_corpus(const vlr_tokenizer *t, vlr_tok_cache *cache, const golden_file *g,
                           const char *label) {
    vlr_ids got = {0}, want = {0};
    size_t bytes = 0, n_bad = 0;
    for (size_t i = 0; i < g->n; i++) {
        const vlr_json *text = vlr_json_get(g->lines[i].obj, "text");
        bool parsed = vlr_json_is(text, VLR_JSON_STRING) &&
                      json_to_ids(vlr_json_get(g->lines[i].obj, "ids"), &want);
        CHECK(parsed, "%s: corpus line %zu is malformed", label, i + 1);
        if (!parsed) continue;
        vlr_err e = {0};
        got.len = 0;
        vlr_status rc = vlr_tok_encode(t, cache, text->str, text->len, &got, &e);
        bytes += text->len;
        size_t diff = 0;
        while (diff < got.len && diff < want.len && got.data[diff] == want.data[diff]) diff++;
        bool same = rc == VLR_OK && got.len == want.len && diff == got.len;
        if (!same && n_bad++ < 20) {
            fprintf(stderr, "%s: corpus string %zu (line %zu, %zu bytes): rc %d %s; %zu ids, want %zu; "
                    "first difference at position %zu: got %d, want %d\n  text: ",
                    label, i, i + 1, text->len, rc, e.msg, got.len, want.len, diff,
                    diff < got.len ? got.data[diff] : -1, diff < want.len ? want.data[diff] : -1);
            vlr_buf esc = {0};
            vlr_buf_json_string(&esc, text->str, text->len > 300 ? 300 : text->len);
            fprintf(stderr, "%s\n", esc.data ? esc.data : "");
            vlr_buf_free(&esc);
        }
        CHECK(same, "%s: corpus string %zu differs (details above)", label, i);
    }
    free(got.data);
    free(want.data);
    return bytes;
}

static void check_decode_cases(const vlr_tokenizer *t, const golden_file *g) {
    vlr_ids ids = {0};
    size_t n_fffd = 0;
    for (size_t i = 0; i < g->n; i++) {
        const vlr_json *o = g->lines[i].obj;
        const vlr_json *text = vlr_json_get(o, "text"), *skip = vlr_json_get(o, "text_skip_special");
        bool parsed = vlr_json_is(text, VLR_JSON_STRING) && vlr_json_is(skip, VLR_JSON_STRING) &&
                      json_to_ids(vlr_json_get(o, "ids"), &ids);
        CHECK(parsed, "decode line %zu is malformed", i + 1);
        if (!parsed) continue;
        CHECK(decode_is(t, ids.data, ids.len, false, text->str, text->len),
              "decode line %zu: decode(ids) differs from \"text\"", i + 1);
        CHECK(decode_is(t, ids.data, ids.len, true, skip->str, skip->len),
              "decode line %zu: decode(ids, skip_special) differs from \"text_skip_special\"", i + 1);
        if (memmem(text->str, text->len, "\xEF\xBF\xBD", 3)) n_fffd++;
    }
    CHECK(g->n == 240, "decode.jsonl has %zu lines, want 240", g->n);
    CHECK(n_fffd >= 40, "only %zu decode cases contain U+FFFD", n_fffd);
    free(ids.data);
}

/* ---- the reference tokenizer: hand-picked cases ------------------------------------------ */

static void check_reference_cases(const vlr_tokenizer *t) {
    /* README: the 22 added tokens, with their ids. */
    static const char *const added[] = {
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
        "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
        "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
        "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
        "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"};
    for (int i = 0; i < 22; i++) {
        int32_t id = vlr_tok_find(t, added[i], strlen(added[i]));
        CHECK(id == 151643 + i, "find(%s) = %d, want %d", added[i], id, 151643 + i);
        /* Alone, each encodes to itself; decoding gives it back unless special and skipped. */
        int32_t want = 151643 + i;
        CHECK(encode_is(t, added[i], strlen(added[i]), &want, 1, added[i]), "encode %s", added[i]);
        CHECK(decode_is(t, &want, 1, false, added[i], strlen(added[i])), "decode %s", added[i]);
        bool special = i < 14;
        CHECK(decode_is(t, &want, 1, true, special ? "" : added[i], special ? 0 : strlen(added[i])),
              "decode %s with skip_special", added[i]);
    }
    CHECK(vlr_tok_vocab_size(t) == 151665, "vocab size %zu, want 151665",
          vlr_tok_vocab_size(t));
    /* README: <think> is plain text [13708, 766, 29] = "<th", "ink", ">". */
    CHECK(vlr_tok_find(t, "<th", 3) == 13708 && vlr_tok_find(t, "ink", 3) == 766 &&
              vlr_tok_find(t, ">", 1) == 29,
          "vocabulary lookups of <th / ink / >");
    CHECK(vlr_tok_find(t, "<think>", 7) == -1, "<think> is not a token");
    CHECK(vlr_tok_find(t, "", 0) == -1, "the empty string is not a token");
    ENCODE_IS(t, "<think>", 13708, 766, 29);
    /* README: added tokens are cut out of the raw text, glued or not. */
    ENCODE_IS(t, "a<|im_end|>b", 64, 151645, 65);
    ENCODE_IS(t, "<|im_end|>\xCC\xB8", 151645, 136, 116); /* > + U+0338 stays apart */
    /* Near misses are plain text: no id from the added range. */
    static const char *const near[] = {"<|IM_END|>", "<|im_end|", "< |im_end|>", "<|im_end |>"};
    for (int i = 0; i < 4; i++) {
        vlr_ids ids = {0};
        vlr_err e = {0};
        CHECK(vlr_tok_encode(t, NULL, near[i], strlen(near[i]), &ids, &e) == VLR_OK, "%s", e.msg);
        bool plain = ids.len > 1;
        for (size_t k = 0; k < ids.len; k++) plain = plain && ids.data[k] < 151643;
        CHECK(plain, "%s must be plain text", near[i]);
        CHECK(decode_is(t, ids.data, ids.len, false, near[i], strlen(near[i])), "%s round trip",
              near[i]);
        free(ids.data);
    }
    /* The empty string gives no ids; a NUL is text, not an end. */
    CHECK(encode_is(t, "", 0, NULL, 0, "empty"), "empty string");
    {
        const char s[] = "x\0y z\0";
        vlr_ids ids = {0};
        vlr_err e = {0};
        CHECK(vlr_tok_encode(t, NULL, s, sizeof s - 1, &ids, &e) == VLR_OK, "%s", e.msg);
        CHECK(ids.len >= 3, "NUL text gave %zu ids", ids.len);
        CHECK(decode_is(t, ids.data, ids.len, false, s, sizeof s - 1), "NUL text round trip");
        free(ids.data);
    }
    /* Invalid UTF-8 is rejected with the offset of the first bad byte. */
    static const struct {
        const char *s;
        size_t len, at;
    } bad[] = {
        {"ab\xC3(", 4, 2},           /* truncated 2-byte sequence */
        {"\x80", 1, 0},              /* lone continuation byte */
        {"ok \xC0\x80", 5, 3},       /* overlong NUL */
        {"<|im_end|>\xED\xA0\x80", 13, 10}, /* surrogate U+D800 after an added token */
        {"\xF4\x90\x80\x80", 4, 0},  /* above U+10FFFF */
        {"abc\xE2\x82", 5, 3},       /* cut at the end */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        vlr_ids ids = {0};
        vlr_err e = {0};
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", bad[i].at);
        vlr_status rc = vlr_tok_encode(t, NULL, bad[i].s, bad[i].len, &ids, &e);
        CHECK(rc == VLR_ERR_INPUT && strstr(e.msg, want), "bad case %zu: rc %d, message \"%s\"", i,
              rc, e.msg);
        free(ids.data);
    }
    /* Unknown ids are an error when decoding. */
    {
        int32_t ids[] = {64, 151665};
        vlr_buf out = {0};
        vlr_err e = {0};
        CHECK(vlr_tok_decode(t, ids, 2, false, &out, &e) == VLR_ERR_INPUT && strstr(e.msg, "151665"),
              "unknown id: %s", e.msg);
        int32_t neg = -1;
        CHECK(vlr_tok_decode(t, &neg, 1, false, &out, &e) == VLR_ERR_INPUT, "negative id");
        vlr_buf_free(&out);
    }
    /* Appending: encode adds to what out holds already. */
    {
        vlr_ids ids = {0};
        vlr_err e = {0};
        CHECK(vlr_ids_push(&ids, 7), "push");
        CHECK(vlr_tok_encode(t, NULL, "a", 1, &ids, &e) == VLR_OK && ids.len == 2 &&
                  ids.data[0] == 7 && ids.data[1] == 64,
              "encode appends");
        free(ids.data);
    }
}

/* ---- synthetic tokenizers ----------------------------------------------------------------- */

/* GPT-2 bytes_to_unicode, written from its definition (README step 4). */
static uint32_t byte_char(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return (uint32_t)b;
    uint32_t n = 0;
    for (int k = 0; k < b; k++)
        if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || k >= 0xAE)) n++;
    return 0x100 + n;
}

static void put_cp(vlr_buf *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    vlr_buf_append(b, u, n);
}

/* A byte-level BPE tokenizer.json whose ids 0..255 are the bytes themselves, plus the given
 * merges (JSON text of the array body) and added tokens (JSON text of the array body). */
static char *synthetic_json(const char *merges, const char *extra_vocab, const char *added,
                            const char *regex, int skip_byte) {
    vlr_buf b = {0};
    vlr_buf_printf(&b, "{\"version\":\"1.0\",\"added_tokens\":[%s],\"normalizer\":{\"type\":\"NFC\"},"
                   "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\","
                   "\"pattern\":{\"Regex\":",
                   added);
    vlr_buf_json_string(&b, regex, strlen(regex));
    vlr_buf_puts(&b, "},\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\","
                     "\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},"
                     "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
                     "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"vocab\":{");
    for (int c = 0; c < 256; c++) {
        if (c == skip_byte) continue;
        vlr_buf_puts(&b, c ? ",\"" : "\"");
        uint32_t cp = byte_char(c);
        if (cp == '"' || cp == '\\') vlr_buf_printf(&b, "\\%c", (char)cp);
        else put_cp(&b, cp);
        vlr_buf_printf(&b, "\":%d", c);
    }
    vlr_buf_printf(&b, "%s},\"merges\":[%s]}}", extra_vocab, merges);
    return b.data;
}

static const char qwen2_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static char tmp_dir_path[256];

static const char *write_tmp(const char *name, const char *text, size_t len) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp_dir_path, name);
    FILE *f = fopen(path, "wb");
    if (!f) return path;
    fwrite(text, 1, len, f);
    fclose(f);
    return path;
}

static vlr_tokenizer *load_text(const char *name, const char *json, vlr_status *rc, vlr_err *e) {
    vlr_tokenizer *t = NULL;
    const char *path = write_tmp(name, json, strlen(json));
    *rc = vlr_tok_load(path, &t, e);
    return t;
}

static void check_synthetic(void) {
    /* Merges: ab (256, rank 0), bc (257, rank 1), abc (258, rank 2), aa (259, rank 3), in the
     * array form and in the legacy "a b" form. */
    static const char extra[] = ",\"ab\":256,\"bc\":257,\"abc\":258,\"aa\":259";
    static const char merges_pairs[] = "[\"a\",\"b\"],[\"b\",\"c\"],[\"ab\",\"c\"],[\"a\",\"a\"]";
    static const char merges_legacy[] = "\"a b\",\"b c\",\"ab c\",\"a a\"";
    static const char added[] =
        "{\"id\":300,\"content\":\"<L>\",\"lstrip\":true,\"special\":true,\"normalized\":false},"
        "{\"id\":301,\"content\":\"<R>\",\"rstrip\":true,\"normalized\":false},"
        "{\"id\":302,\"content\":\"tok\",\"single_word\":true,\"normalized\":false},"
        "{\"id\":303,\"content\":\"e\\u0301!\",\"normalized\":true},"
        "{\"id\":304,\"content\":\"o\\u0301\",\"normalized\":false},"
        "{\"id\":305,\"content\":\"<ab\",\"normalized\":false},"
        "{\"id\":306,\"content\":\"<abc\",\"normalized\":false}";
    for (int form = 0; form < 2; form++) {
        char *json = synthetic_json(form ? merges_legacy : merges_pairs, extra, added, qwen2_regex, -1);
        vlr_status rc;
        vlr_err e = {0};
        vlr_tokenizer *t = load_text("synthetic.json", json, &rc, &e);
        free(json);
        CHECK(rc == VLR_OK && t, "synthetic tokenizer (%s merges): %s", form ? "legacy" : "pair",
              e.msg);
        if (!t) continue;
        /* Lowest rank first: ab (0) then ab+c (2), not b+c (1) first. */
        ENCODE_IS(t, "abc", 258);
        ENCODE_IS(t, "bc", 257);
        /* Equal ranks go to the leftmost pair: aaa = aa + a, not a + aa. */
        ENCODE_IS(t, "aaa", 259, 'a');
        ENCODE_IS(t, "aaaa", 259, 259);
        /* Contractions are pieces of their own: a'b is "a", "'b"; 's is one piece. */
        ENCODE_IS(t, "ab'sab", 256, '\'', 's', 256);
        /* lstrip takes the spaces before, rstrip those after. */
        ENCODE_IS(t, "x  <L>y", 'x', 300, 'y');
        ENCODE_IS(t, "x<R>  y", 'x', 301, 'y');
        ENCODE_IS(t, "x <R> <L> y", 'x', ' ', 301, 300, ' ', 'y');
        /* single_word: only where no word character touches the token. */
        ENCODE_IS(t, "a tok b", 'a', ' ', 302, ' ', 'b');
        ENCODE_IS(t, "tok", 302);
        ENCODE_IS(t, "atok", 'a', 't', 'o', 'k');
        ENCODE_IS(t, "tok_", 't', 'o', 'k', '_');
        ENCODE_IS(t, "(tok)", '(', 302, ')');
        /* normalized tokens match after NFC, composed or not in the input; raw tokens match the
         * raw bytes only. */
        ENCODE_IS(t, "x\xC3\xA9!", 'x', 303);
        ENCODE_IS(t, "xe\xCC\x81!", 'x', 303);
        ENCODE_IS(t, "o\xCC\x81", 304);
        ENCODE_IS(t, "\xC3\xB3", 0xC3, 0xB3);
        /* Leftmost, then longest. */
        ENCODE_IS(t, "<abc", 306);
        ENCODE_IS(t, "x<ab", 'x', 305);
        ENCODE_IS(t, "<a<abc", '<', 'a', 306);
        /* Decoding: special tokens are dropped only with skip_special. */
        int32_t ids[] = {300, 'x', 301, 303};
        CHECK(decode_is(t, ids, 4, false, "<L>x<R>e\xCC\x81!", 11), "synthetic decode");
        CHECK(decode_is(t, ids, 4, true, "x<R>e\xCC\x81!", 8), "synthetic decode, skip special");
        /* Lossy UTF-8: one U+FFFD per maximal invalid subpart (Unicode 15 ch. 3, table 3-8). */
        int32_t lossy[] = {0xE2, 0x82, 'a', 0xF0, 0x9F, 0xFF, 0xC0, 0xAF, 0xED, 0xA0, 0x80, 0xE2, 0x82, 0xAC};
        CHECK(decode_is(t, lossy, 14, false,
                        "\xEF\xBF\xBD" "a" "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"
                        "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD" "\xE2\x82\xAC",
                        3 + 1 + 7 * 3 + 3),
              "lossy decode");
        CHECK(vlr_tok_vocab_size(t) == 307, "synthetic vocab size %zu", vlr_tok_vocab_size(t));
        vlr_tok_free(t);
    }
}

static void check_load_errors(void) {
    vlr_tokenizer *t = (vlr_tokenizer *)1;
    vlr_err e = {0};
    vlr_status rc = vlr_tok_load("tests/reference/tokenizer/no-such-file.json", &t, &e);
    CHECK(rc == VLR_ERR_IO && !t && strstr(e.msg, "no-such-file.json"), "missing file: %d %s", rc,
          e.msg);

    static const char broken[] = "{\"model\": {\"vocab\": {\"a\": 1,}}";
    t = load_text("broken.json", broken, &rc, &e);
    CHECK(rc == VLR_ERR_FORMAT && !t && strstr(e.msg, "broken.json") && strstr(e.msg, "line"),
          "bad JSON: %d %s", rc, e.msg);

    t = load_text("array.json", "[1, 2]", &rc, &e);
    CHECK(rc == VLR_ERR_FORMAT && !t, "top-level array: %d %s", rc, e.msg);

    /* Another pre-tokenizer regex (GPT-2's): refused, not tokenized wrongly. */
    char *json = synthetic_json("", "", "", "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+", -1);
    t = load_text("gpt2.json", json, &rc, &e);
    free(json);
    CHECK(rc == VLR_ERR_UNSUPPORTED && !t && strstr(e.msg, "pre_tokenizer"), "other regex: %d %s",
          rc, e.msg);

    /* A merge whose parts are not in the vocabulary. */
    json = synthetic_json("[\"a\",\"zz\"]", "", "", qwen2_regex, -1);
    t = load_text("badmerge.json", json, &rc, &e);
    free(json);
    CHECK(rc == VLR_ERR_FORMAT && !t && strstr(e.msg, "merges[0]") && strstr(e.msg, "zz"),
          "bad merge: %d %s", rc, e.msg);

    /* A vocabulary without the token of byte 'q'. */
    json = synthetic_json("", "", "", qwen2_regex, 'q');
    t = load_text("nobyte.json", json, &rc, &e);
    free(json);
    CHECK(rc == VLR_ERR_UNSUPPORTED && !t && strstr(e.msg, "0x71"), "missing byte: %d %s", rc,
          e.msg);

    /* An added token without an id. */
    json = synthetic_json("", "", "{\"content\":\"<x>\"}", qwen2_regex, -1);
    t = load_text("noid.json", json, &rc, &e);
    free(json);
    CHECK(rc == VLR_ERR_FORMAT && !t && strstr(e.msg, "added_tokens[0]"), "added token: %d %s", rc,
          e.msg);
}

/* Writes the reference tokenizer.json back with its merges in the legacy "a b" string form. */
static void json_write(vlr_buf *b, const vlr_json *v, bool legacy_merges) {
    switch (v->type) {
    case VLR_JSON_NULL: vlr_buf_puts(b, "null"); break;
    case VLR_JSON_FALSE: vlr_buf_puts(b, "false"); break;
    case VLR_JSON_TRUE: vlr_buf_puts(b, "true"); break;
    case VLR_JSON_NUMBER: {
        /* Not v->str: after vlr_json_parse_file it points into the freed file text. */
        int64_t k;
        if (vlr_json_int(v, &k)) vlr_buf_printf(b, "%lld", (long long)k);
        else vlr_buf_json_double(b, v->number);
        break;
    }
    case VLR_JSON_STRING: vlr_buf_json_string(b, v->str, v->len); break;
    case VLR_JSON_ARRAY:
        vlr_buf_puts(b, "[");
        for (size_t i = 0; i < v->len; i++) {
            if (i) vlr_buf_puts(b, ",");
            json_write(b, &v->items[i], false);
        }
        vlr_buf_puts(b, "]");
        break;
    case VLR_JSON_OBJECT:
        vlr_buf_puts(b, "{");
        for (size_t i = 0; i < v->len; i++) {
            const vlr_json *m = &v->items[i];
            if (i) vlr_buf_puts(b, ",");
            vlr_buf_json_string(b, m->key, m->key_len);
            vlr_buf_puts(b, ":");
            if (legacy_merges && !strcmp(m->key, "merges") && m->type == VLR_JSON_ARRAY) {
                vlr_buf_puts(b, "[");
                for (size_t k = 0; k < m->len; k++) {
                    const vlr_json *p = &m->items[k];
                    vlr_buf tmp = {0};
                    vlr_buf_append(&tmp, p->items[0].str, p->items[0].len);
                    vlr_buf_puts(&tmp, " ");
                    vlr_buf_append(&tmp, p->items[1].str, p->items[1].len);
                    if (k) vlr_buf_puts(b, ",");
                    vlr_buf_json_string(b, tmp.data, tmp.len);
                    vlr_buf_free(&tmp);
                }
                vlr_buf_puts(b, "]");
            } else {
                json_write(b, m, legacy_merges && !strcmp(m->key, "model"));
            }
        }
        vlr_buf_puts(b, "}");
        break;
    }
}

static void check_legacy_merges(const golden_file *corpus) {
    vlr_json_doc *doc = NULL;
    vlr_err e = {0};
    vlr_status rc = vlr_json_parse_file(TOK_JSON, (size_t)1 << 30, &doc, &e);
    CHECK(rc == VLR_OK, "%s", e.msg);
    if (rc) return;
    vlr_buf b = {0};
    json_write(&b, vlr_json_root(doc), true);
    vlr_json_free(doc);
    CHECK(b.data && memmem(b.data, b.len, "\"merges\":[\"\xC4\xA0 \xC4\xA0\"", 15), "legacy form written");
    const char *path = write_tmp("legacy.json", b.data ? b.data : "", b.len);
    vlr_buf_free(&b);
    vlr_tokenizer *t = NULL;
    rc = vlr_tok_load(path, &t, &e);
    CHECK(rc == VLR_OK, "legacy merges: %s", e.msg);
    if (t) check_corpus(t, NULL, corpus, "legacy merges");
    vlr_tok_free(t);
}

/* Two threads share one tokenizer, each with its own cache: same ids as the reference. */
static void check_threads(const vlr_tokenizer *t, const golden_file *corpus) {
    int failures = 0;
#pragma omp parallel num_threads(2) reduction(+ : failures)
    {
        vlr_tok_cache *cache = vlr_tok_cache_new(64); /* small: forces the cache to start over */
        vlr_ids got = {0}, want = {0};
#pragma omp for schedule(dynamic, 16)
        for (size_t i = 0; i < corpus->n; i++) {
            const vlr_json *text = vlr_json_get(corpus->lines[i].obj, "text");
            got.len = 0;
            if (!json_to_ids(vlr_json_get(corpus->lines[i].obj, "ids"), &want) ||
                vlr_tok_encode(t, cache, text->str, text->len, &got, NULL) != VLR_OK ||
                got.len != want.len ||
                (got.len && memcmp(got.data, want.data, got.len * sizeof *got.data)))
                failures++;
        }
        free(got.data);
        free(want.data);
        vlr_tok_cache_free(cache);
    }
    CHECK(failures == 0, "%d corpus strings differ with 2 threads and small caches", failures);
}

/* Random text from characters the rules treat differently: decode(encode(x)) must be NFC(x)
 * (README: true whenever no added token is followed by a combining mark; none is generated). */
static void check_round_trip(const vlr_tokenizer *t) {
    static const char *const atoms[] = {
        "a", "Z", "s", "'", "'s", "'LL", "\xC5\xBF", " ", "  ", "\t", "\n", "\r\n", "\r", "\v",
        "\f", "\0", "\x1C", "\xC2\x85", "\xC2\xA0", "\xE1\xA0\x8E" /* U+180E */,
        "\xE2\x80\x83", "\xE3\x80\x80", "\xEF\xBB\xBF", "7", "\xC2\xB2", "\xD9\xA3",
        "\xE2\x85\xAB", "e\xCC\x81", "\xCC\x81", "\xCC\xB8", ">", "<", "|", "<|im_", "end|",
        "\xE4\xBD\xA0\xE5\xA5\xBD", "\xED\x95\x9C", "\xE1\x84\x92\xE1\x85\xA1",
        "\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "\xE2\x80\x8D", "\xEF\xBF\xBD", "\xC3\xA9",
        "(", "}", "...", "__", "http://x.y/z", "\xF4\x8F\xBF\xBF", "\xEF\xBF\xBF", "ab",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    const size_t n_atoms = sizeof atoms / sizeof *atoms;
    uint64_t state = 0x9E3779B97F4A7C15ull;
    int bad = 0;
    vlr_tok_cache *cache = vlr_tok_cache_new(256);
    for (int iter = 0; iter < 3000; iter++) {
        vlr_buf text = {0};
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        int len = 1 + (int)((state >> 33) % 24);
        for (int k = 0; k < len; k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = atoms[(state >> 33) % n_atoms];
            vlr_buf_append(&text, a, a[0] ? strlen(a) : 1); /* "\0" is one NUL byte */
        }
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t n_nfc = utf8proc_map((const utf8proc_uint8_t *)text.data,
                                              (utf8proc_ssize_t)text.len, &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        vlr_ids ids = {0};
        vlr_err e = {0};
        bool ok = n_nfc >= 0 && vlr_tok_encode(t, iter % 2 ? cache : NULL, text.data, text.len, &ids,
                                               &e) == VLR_OK;
        ok = ok && decode_is(t, ids.data, ids.len, false, (const char *)nfc, (size_t)n_nfc);
        if (!ok && bad++ < 5) {
            vlr_buf esc = {0};
            vlr_buf_json_string(&esc, text.data, text.len);
            fprintf(stderr, "round trip %d differs: %s (%s)\n", iter, esc.data, e.msg);
            vlr_buf_free(&esc);
        }
        free(nfc);
        free(ids.data);
        vlr_buf_free(&text);
    }
    vlr_tok_cache_free(cache);
    CHECK(bad == 0, "%d of 3000 random strings do not decode back to their NFC", bad);
}

/* ---- benchmark ---------------------------------------------------------------------------- */

/* CPU time of this thread: on a shared machine it is far steadier than wall time. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double encode_rate(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *text, size_t n,
                          size_t *n_ids) {
    vlr_ids ids = {0};
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        ids.len = 0;
        vlr_tok_cache *c = cache ? vlr_tok_cache_new(0) : NULL; /* each run starts cold */
        double t0 = cpu_now();
        vlr_tok_encode(t, c, text, n, &ids, NULL);
        double dt = cpu_now() - t0;
        if (dt < best) best = dt;
        vlr_tok_cache_free(c);
    }
    *n_ids = ids.len;
    free(ids.data);
    return (double)n / best / 1e6;
}

static int bench(void) {
    vlr_err e = {0};
    vlr_tokenizer *t = NULL;
    double best_load = 1e30, best_load_cpu = 1e30, best_parse_cpu = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        vlr_tok_free(t);
        double t0 = vlr_now(), c0 = cpu_now();
        if (vlr_tok_load(TOK_JSON, &t, &e)) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
        double dt = vlr_now() - t0, dc = cpu_now() - c0;
        if (dt < best_load) best_load = dt;
        if (dc < best_load_cpu) best_load_cpu = dc;
        vlr_json_doc *doc = NULL;
        c0 = cpu_now();
        vlr_json_parse_file(TOK_JSON, (size_t)1 << 30, &doc, &e);
        dc = cpu_now() - c0;
        if (dc < best_parse_cpu) best_parse_cpu = dc;
        vlr_json_free(doc);
    }
    printf("load %s: %.1f ms wall, %.1f ms CPU (best of 5); its JSON parse alone %.1f ms CPU\n",
           TOK_JSON, best_load * 1e3, best_load_cpu * 1e3, best_parse_cpu * 1e3);

    /* English prose: the reference READMEs repeated to about 8 MB. */
    vlr_buf prose = {0};
    const char *files[] = {"tests/reference/README.md", "tests/reference/tokenizer/README.md"};
    for (int f = 0; f < 2; f++) {
        char *s;
        size_t n;
        if (!vlr_read_file(files[f], (size_t)1 << 26, &s, &n, &e)) {
            vlr_buf_append(&prose, s, n);
            free(s);
        }
    }
    char *unit = malloc(prose.len ? prose.len : 1);
    size_t unit_len = prose.len;
    if (unit) memcpy(unit, prose.data, unit_len);
    while (unit && unit_len && prose.len < ((size_t)8 << 20)) vlr_buf_append(&prose, unit, unit_len);
    free(unit);
    size_t n_ids;
    double nocache = encode_rate(t, NULL, prose.data, prose.len, &n_ids);
    double cached = encode_rate(t, (vlr_tok_cache *)1, prose.data, prose.len, &n_ids);
    printf("English prose (%zu bytes of README text, %zu ids): %.1f MB/s without cache, %.1f MB/s "
           "with cache (one thread, MB per CPU-second, best of 3)\n", prose.len, n_ids, nocache, cached);

    /* The whole golden corpus (all scripts, long runs, added tokens). */
    golden_file corpus;
    if (golden_read(CORPUS, &corpus)) {
        vlr_buf all = {0};
        for (size_t i = 0; i < corpus.n; i++) {
            const vlr_json *text = vlr_json_get(corpus.lines[i].obj, "text");
            vlr_buf_append(&all, text->str, text->len);
            vlr_buf_append(&all, "\n", 1);
        }
        nocache = encode_rate(t, NULL, all.data, all.len, &n_ids);
        cached = encode_rate(t, (vlr_tok_cache *)1, all.data, all.len, &n_ids);
        printf("corpus.jsonl texts joined (%zu bytes, %zu ids): %.1f MB/s without cache, %.1f MB/s "
               "with cache\n", all.len, n_ids, nocache, cached);
        vlr_buf_free(&all);
        golden_free(&corpus);
    }
    vlr_buf_free(&prose);
    vlr_tok_free(t);
    return 0;
}

/* The 4,650-string corpus encodes to the golden ids without a cache, with a cold and a warm one, and
 * from several threads at once. */
static void test_corpus(const vlr_tokenizer *t, const golden_file *corpus) {
    size_t n_nul = 0;
    for (size_t i = 0; i < corpus->n; i++) {
        const vlr_json *text = vlr_json_get(corpus->lines[i].obj, "text");
        if (text && text->len && memchr(text->str, 0, text->len)) n_nul++;
    }
    CHECK(n_nul > 0, "the corpus has strings with U+0000 (%zu)", n_nul);
    double t0 = vlr_now();
    size_t bytes = check_corpus(t, NULL, corpus, "no cache");
    double dt = vlr_now() - t0;
    printf("corpus: %zu strings, %zu bytes in %.1f ms without cache\n", corpus->n, bytes, dt * 1e3);
    vlr_tok_cache *cache = vlr_tok_cache_new(0);
    CHECK(cache != NULL, "cache");
    check_corpus(t, cache, corpus, "cold cache");
    check_corpus(t, cache, corpus, "warm cache");
    vlr_tok_cache_free(cache);
    check_threads(t, corpus);
}

/* The tiny test model ships the same tokenizer (compact JSON). */
static void test_tiny_a_tokenizer(const vlr_tokenizer *t, const golden_file *corpus) {
    vlr_err e = {0};
    vlr_tokenizer *tiny = NULL;
    vlr_status rc = vlr_tok_load(TINY_TOK_JSON, &tiny, &e);
    CHECK(rc == VLR_OK, "load %s: %s", TINY_TOK_JSON, e.msg);
    if (tiny && corpus) {
        CHECK(vlr_tok_vocab_size(tiny) == vlr_tok_vocab_size(t), "tiny-a vocab size");
        check_corpus(tiny, NULL, corpus, "tiny-a tokenizer");
    }
    vlr_tok_free(tiny);
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--bench")) return bench();

    snprintf(tmp_dir_path, sizeof tmp_dir_path, "/tmp/vlr_test_tokenizer.XXXXXX");
    if (!mkdtemp(tmp_dir_path)) snprintf(tmp_dir_path, sizeof tmp_dir_path, "/tmp");

    vlr_err e = {0};
    vlr_tokenizer *t = NULL;
    double t0 = vlr_now();
    vlr_status rc = vlr_tok_load(TOK_JSON, &t, &e);
    double load_s = vlr_now() - t0;
    CHECK(rc == VLR_OK && t, "load %s: %s", TOK_JSON, e.msg);
    if (!t) return test_report();
    printf("loaded %s in %.1f ms\n", TOK_JSON, load_s * 1e3);

    golden_file corpus, decode;
    bool have_corpus = golden_read(CORPUS, &corpus), have_decode = golden_read(DECODE, &decode);
    CHECK(have_corpus && corpus.n == 4650, "corpus.jsonl: %zu lines, want 4650", corpus.n);
    CHECK(have_decode, "decode.jsonl unreadable");
    /* A missing golden file has failed above; the tests that read it are then passed over. */
    if (have_corpus) TEST_RUN_WITH(test_corpus, t, &corpus);
    if (have_decode) TEST_RUN_WITH(check_decode_cases, t, &decode);
    TEST_RUN_WITH(check_reference_cases, t);
    TEST_RUN_WITH(check_round_trip, t);
    TEST_RUN_WITH(test_tiny_a_tokenizer, t, have_corpus ? &corpus : NULL);
    TEST_RUN(check_synthetic);
    TEST_RUN(check_load_errors);
    if (have_corpus) TEST_RUN_WITH(check_legacy_merges, &corpus);

    if (have_corpus) golden_free(&corpus);
    if (have_decode) golden_free(&decode);
    vlr_tok_free(t);
    static const char *const written[] = {"synthetic.json", "broken.json", "array.json",
                                          "gpt2.json", "badmerge.json", "nobyte.json",
                                          "noid.json", "legacy.json"};
    for (size_t i = 0; i < sizeof written / sizeof *written; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", tmp_dir_path, written[i]);
        unlink(path);
    }
    if (strcmp(tmp_dir_path, "/tmp") != 0) rmdir(tmp_dir_path);
    return test_report();
}
