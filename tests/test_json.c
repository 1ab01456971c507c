/* test_json.c: the JSON reader on valid documents, escapes (NUL, surrogate pairs), error positions,
 * hostile nesting, and the real tokenizer.json (parse time printed for the record). */
#include <locale.h>
#include <math.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "test.h"

/* Switches LC_NUMERIC to a locale whose decimal point is ',' (as a host program that calls
 * setlocale(LC_ALL, "") under de_DE would have). An installed one is used when there is one;
 * otherwise a minimal one is built with localedef into a temporary LOCPATH. Returns false when
 * neither works (then the caller says so). */
static bool use_comma_locale(char *tmpdir, size_t cap) {
    static const char *const installed[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
    tmpdir[0] = '\0';
    for (size_t i = 0; i < sizeof installed / sizeof installed[0]; i++)
        if (setlocale(LC_NUMERIC, installed[i])) return true;
    snprintf(tmpdir, cap, "/tmp/vlr-locale-XXXXXX");
    if (!mkdtemp(tmpdir)) return false;
    char src[300], cmd[1024];
    snprintf(src, sizeof src, "%s/comma.src", tmpdir);
    FILE *f = fopen(src, "w");
    if (!f) return false;
    fputs("LC_NUMERIC\ndecimal_point \",\"\nthousands_sep \".\"\ngrouping 3;3\nEND LC_NUMERIC\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "localedef -c -i %s -f UTF-8 %s/comma >/dev/null 2>&1", src, tmpdir);
    if (system(cmd) == -1) return false;
    setenv("LOCPATH", tmpdir, 1);
    return setlocale(LC_NUMERIC, "comma") != NULL;
}

static void expect_error(const char *text, const char *needle) {
    vlr_err e = {0};
    vlr_json_doc *d = vlr_json_parse(text, strlen(text), &e);
    CHECK(d == NULL, "parse of [%s] should fail", text);
    CHECK(strstr(e.msg, needle) != NULL, "[%s]: message '%s' lacks '%s'", text, e.msg, needle);
    vlr_json_free(d);
}

/* A document with every value type, escapes (NUL, a surrogate pair), nesting and a big integer. */
static void test_document(void) {
    vlr_err e = {0};
    const char *doc_text = "{\"a\": [1, -2.5e3, true, false, null], \"s\": \"x\\u0000y\\ud83d\\ude00\\n\", "
                           "\"n\": {\"k\": \"\xc3\xa9\"}, \"big\": 12345678901}";
    vlr_json_doc *d = vlr_json_parse(doc_text, strlen(doc_text), &e);
    CHECK(d != NULL, "%s", e.msg);
    if (d) {
        const vlr_json *r = vlr_json_root(d);
        const vlr_json *a = vlr_json_get(r, "a");
        CHECK(vlr_json_is(a, VLR_JSON_ARRAY) && a->len == 5, "array");
        int64_t iv = 0;
        CHECK(vlr_json_int(vlr_json_at(a, 0), &iv) && iv == 1, "int");
        CHECK(vlr_json_at(a, 1)->number == -2500.0, "float");
        CHECK(!vlr_json_int(vlr_json_at(a, 1), &iv) || iv == -2500, "int of -2.5e3");
        CHECK(vlr_json_at(a, 2)->type == VLR_JSON_TRUE && vlr_json_at(a, 4)->type == VLR_JSON_NULL, "literals");
        CHECK(vlr_json_at(a, 5) == NULL, "out of range");
        const vlr_json *s = vlr_json_get(r, "s");
        CHECK(s && s->len == 8 && memcmp(s->str, "x\0y\xf0\x9f\x98\x80\n", 8) == 0, "escapes decode (len %zu)", s ? s->len : 0);
        CHECK(vlr_json_get(vlr_json_get(r, "n"), "k")->len == 2, "nested utf-8");
        CHECK(vlr_json_int(vlr_json_get(r, "big"), &iv) && iv == 12345678901LL, "big int");
        const vlr_json *num = vlr_json_at(a, 1);
        CHECK(num->len == 6 && memcmp(num->str, "-2.5e3", 6) == 0, "raw number text");
        CHECK(vlr_json_get(r, "missing") == NULL, "missing key");
    }
    vlr_json_free(d);
}

/* Duplicate keys: the last one wins, as in Python's json.loads. */
static void test_duplicate_keys(void) {
    vlr_err e = {0};
    const char *dup = "{\"k\": 1, \"k\": 2}";
    vlr_json_doc *d = vlr_json_parse(dup, strlen(dup), &e);
    CHECK(d && vlr_json_get(vlr_json_root(d), "k")->number == 2, "duplicate key: last wins");
    vlr_json_free(d);
}

/* Each malformed input fails with a message that says what and where. */
static void test_errors(void) {
    expect_error("{\"a\": 1,\n \"b\" 2}", "line 2, column 6");
    expect_error("[1, 2", "unterminated array");
    expect_error("\"abc", "unterminated string");
    expect_error("[01]", "expected ','");
    expect_error("[1.]", "digit expected");
    expect_error("\"\\ud800\"", "lone UTF-16 surrogate");
    expect_error("\"\\udc00x\"", "lone UTF-16 surrogate");
    expect_error("\"\xff\"", "invalid UTF-8");
    expect_error("\"\xed\xa0\x80\"", "invalid UTF-8");
    expect_error("\"\xc0\xaf\"", "invalid UTF-8");
    expect_error("\"a\tb\"", "control character");
    expect_error("\"\\x\"", "invalid escape");
    expect_error("[1] x", "after the JSON value");
    expect_error("", "unexpected end");
    expect_error("tru", "unexpected character");
    expect_error("{\"a\" 1}", "expected ':'");
    expect_error("{1: 2}", "expected a string key");
}

static void test_hostile(void) {
    vlr_err e = {0};
    /* Hostile nesting stops at the cap instead of exhausting the stack. */
    size_t deep = 100000;
    char *nest = malloc(deep + 1);
    memset(nest, '[', deep);
    nest[deep] = 0;
    vlr_json_doc *d = vlr_json_parse(nest, deep, &e);
    CHECK(d == NULL && strstr(e.msg, "nesting deeper") != NULL, "deep nesting: %s", e.msg);
    free(nest);

    /* A NUL byte inside the text is data, not an end. */
    d = vlr_json_parse("[1]\0[2]", 7, &e);
    CHECK(d == NULL, "NUL after value must be an error");

    CHECK(vlr_utf8_invalid_at("ab\xe2\x82", 4) == 2, "truncated sequence found");
    CHECK(vlr_utf8_invalid_at("ab\xe2\x82\xac", 5) == 5, "valid euro sign");
}

/* The real tokenizer.json: parses, has the vocab and merges. */
static void test_tokenizer_json(void) {
    vlr_err e = {0};
    vlr_json_doc *d = NULL;
    double t0 = vlr_now();
    vlr_status rc = vlr_json_parse_file("tests/reference/models/tiny-a/tokenizer.json", 1u << 30, &d, &e);
    double ms = (vlr_now() - t0) * 1e3;
    CHECK(rc == VLR_OK, "%s", e.msg);
    if (rc == VLR_OK) {
        const vlr_json *model = vlr_json_get(vlr_json_root(d), "model");
        CHECK(vlr_json_get(model, "vocab")->len == 151643, "vocab entries");
        CHECK(vlr_json_get(model, "merges")->len == 151387, "merges");
        printf("tokenizer.json parsed in %.1f ms\n", ms);
    }
    vlr_json_free(d);
}

/* Files: a missing one names itself; a FIFO is refused at once instead of blocking the open. */
static void test_files(void) {
    vlr_err e = {0};
    vlr_json_doc *d = NULL;
    vlr_status rc = vlr_json_parse_file("tests/reference/does-not-exist.json", 1 << 20, &d, &e);
    CHECK(rc == VLR_ERR_IO && strstr(e.msg, "does-not-exist.json") != NULL, "%s", e.msg);

    char fifo[64];
    snprintf(fifo, sizeof fifo, "/tmp/vlr-fifo-%d", (int)getpid());
    if (mkfifo(fifo, 0600) == 0) {
        rc = vlr_json_parse_file(fifo, 1 << 20, &d, &e);
        CHECK(rc == VLR_ERR_IO && strstr(e.msg, "not a regular file") != NULL, "fifo: %s", e.msg);
        unlink(fifo);
    } else {
        SKIP(1, "cannot make a FIFO %s: the FIFO check did not run", fifo);
    }
}

/* Numbers are read the JSON way whatever LC_NUMERIC the host program set: under a locale with a
     * decimal comma, plain strtod reads "0.48145466" (preprocessor_config.json's image_mean) as 0. */
static void test_numbers_locale(void) {
    vlr_err e = {0};
    vlr_json_doc *d = NULL;
    char tmpdir[64];
    if (use_comma_locale(tmpdir, sizeof tmpdir)) {
        const char *nums = "[0.48145466, 2.5e-1, -1.5, 1e-06]";
        d = vlr_json_parse(nums, strlen(nums), &e);
        CHECK(d != NULL, "%s", e.msg);
        if (d) {
            const vlr_json *r = vlr_json_root(d);
            CHECK(vlr_json_at(r, 0)->number == 0.48145466 && vlr_json_at(r, 1)->number == 0.25 &&
                      vlr_json_at(r, 2)->number == -1.5 && vlr_json_at(r, 3)->number == 1e-6,
                  "numbers under a decimal-comma locale: %g %g %g %g", vlr_json_at(r, 0)->number,
                  vlr_json_at(r, 1)->number, vlr_json_at(r, 2)->number, vlr_json_at(r, 3)->number);
        }
        vlr_json_free(d);
        /* ... and written the JSON way too. */
        vlr_buf out = {0};
        vlr_buf_json_double(&out, 0.5);
        vlr_buf_puts(&out, " ");
        vlr_buf_json_double(&out, -1.25e-7);
        vlr_jw w;
        vlr_jw_init(&w, &out, 0);
        vlr_buf_puts(&out, " ");
        vlr_jw_fixed(&w, 2.25, 1);
        CHECK(out.data && strcmp(out.data, "0.5 -1.25e-07 2.2") == 0, "doubles under a decimal-comma locale: %s", out.data);
        vlr_buf_free(&out);
        setlocale(LC_NUMERIC, "C");
    } else {
        SKIP(3, "no decimal-comma locale available (localedef missing?): the locale checks did not run");
    }
    if (tmpdir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    }
}

/* The JSON writer's output is valid UTF-8 whatever the bytes: each ill-formed sequence becomes one
 * U+FFFD (per maximal subpart), well-formed text passes unchanged, and the reader (strict about
 * UTF-8) reads it back. Truncation helpers never cut a character. */
static void test_writer_utf8(void) {
    struct { const char *in; size_t n; const char *want; } cases[] = {
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""},
        {"chunk \x89PNG", 0, "\"chunk \xef\xbf\xbdPNG\""},            /* a stray high byte */
        {"cut \xe2\x82", 0, "\"cut \xef\xbf\xbd\""},                  /* truncated at the end */
        {"a\xe2\x82" "b", 0, "\"a\xef\xbf\xbd" "b\""},               /* truncated in the middle */
        {"\xc0\xaf", 0, "\"\xef\xbf\xbd\xef\xbf\xbd\""},             /* overlong '/' */
        {"\xed\xa0\x80", 0, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* a surrogate (CESU) */
        {"\xf4\x90\x80\x80", 0, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""}, /* > U+10FFFF */
        {"\xf0\x9f\x98", 0, "\"\xef\xbf\xbd\""},                      /* maximal subpart: one U+FFFD */
        {"\xff\xfe\"\\\n", 0, "\"\xef\xbf\xbd\xef\xbf\xbd\\\"\\\\\\n\""},
        {"nul\0\x80", 5, "\"nul\\u0000\xef\xbf\xbd\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vlr_buf b = {0};
        size_t n = cases[i].n ? cases[i].n : strlen(cases[i].in);
        vlr_buf_json_string(&b, cases[i].in, n);
        CHECK(b.data && strcmp(b.data, cases[i].want) == 0, "case %zu: got %s", i, b.data ? b.data : "(null)");
        vlr_err e = {0};
        vlr_json_doc *d = b.data ? vlr_json_parse(b.data, b.len, &e) : NULL;
        CHECK(d != NULL, "case %zu reads back: %s", i, e.msg);
        vlr_json_free(d);
        vlr_buf_free(&b);
    }
    /* every byte string of up to 3 bytes from a few interesting bytes: output always reads back */
    const unsigned char pool[] = {0x41, 0x80, 0xbf, 0xc2, 0xe0, 0xed, 0xf0, 0xf4, 0xff, 0xa0, 0x9f};
    size_t np = sizeof pool, bad = 0;
    for (size_t x = 0; x < np * np * np; x++) {
        char in[3] = {(char)pool[x % np], (char)pool[x / np % np], (char)pool[x / np / np]};
        vlr_buf b = {0};
        vlr_buf_json_string(&b, in, 3);
        vlr_err e = {0};
        vlr_json_doc *d = vlr_json_parse(b.data, b.len, &e);
        bad += d == NULL;
        vlr_json_free(d);
        vlr_buf_free(&b);
    }
    CHECK(bad == 0, "%zu of %zu byte strings wrote invalid JSON", bad, np * np * np);

    /* cutting never splits a character */
    const char *euro = "ab\xe2\x82\xac"; /* 5 bytes */
    CHECK(vlr_utf8_cut(euro, 5) == 5 && vlr_utf8_cut(euro, 4) == 2 && vlr_utf8_cut(euro, 3) == 2 &&
              vlr_utf8_cut(euro, 2) == 2,
          "cut at the euro sign");
    char small[6];
    int r = vlr_snprintf_utf8(small, sizeof small, "%s!", "abc\xc3\xa9");
    CHECK(r == 6 && strcmp(small, "abc\xc3\xa9") == 0, "fits exactly minus '!': %s", small);
    r = vlr_snprintf_utf8(small, 5, "%s", "abc\xc3\xa9");
    CHECK(strcmp(small, "abc") == 0, "the half e-acute is dropped: %s", small);
    vlr_err e = {0};
    char big[2 * VLR_ERR_MSG_CAP];
    memset(big, 'x', sizeof big);
    for (size_t i = VLR_ERR_MSG_CAP - 8; i + 3 < sizeof big; i += 3) memcpy(big + i, "\xe2\x82\xac", 3);
    big[sizeof big - 1] = '\0';
    for (int shift = 0; shift < 3; shift++) { /* the cut falls at each byte of a character */
        vlr_fail(&e, VLR_ERR_FORMAT, "%.*s%s", shift, "yy", big);
        size_t len = strlen(e.msg);
        CHECK(len >= VLR_ERR_MSG_CAP - 4 && vlr_utf8_cut(e.msg, len) == len, "vlr_fail cut (shift %d)", shift);
        vlr_buf b = {0};
        vlr_buf_json_string(&b, e.msg, len);
        CHECK(strstr(b.data, "\xef\xbf\xbd") == NULL, "no replacement needed (shift %d)", shift);
        vlr_buf_free(&b);
        vlr_err_prefix(&e, "%.*sprefix: ", shift, "zz");
        len = strlen(e.msg);
        CHECK(vlr_utf8_cut(e.msg, len) == len, "vlr_err_prefix cut (shift %d)", shift);
        char copy[100];
        vlr_err_copy(&e, copy, sizeof copy - (size_t)shift);
        CHECK(vlr_utf8_cut(copy, strlen(copy)) == strlen(copy), "vlr_err_copy cut (shift %d)", shift);
    }
}

/* The structured writer: commas, nesting, every value kind, the multi-line layout, parsed nodes
 * written back, the depth cap; whatever the strings and numbers, the strict reader reads it. */
static void test_writer_structure(void) {
    vlr_buf b = {0};
    vlr_jw w;
    vlr_jw_init(&w, &b, 0);
    vlr_jw_object(&w);
    vlr_jw_key_str(&w, "id", "a\"b");
    vlr_jw_key_str(&w, "bad \xff key", "cut \xe2\x82");
    vlr_jw_key_str(&w, "none", NULL);
    vlr_jw_key_int(&w, "int", -9223372036854775807LL - 1);
    vlr_jw_key_uint(&w, "uint", 18446744073709551615ULL);
    vlr_jw_key(&w, "doubles");
    vlr_jw_array(&w);
    vlr_jw_double(&w, 0.1);
    vlr_jw_double(&w, NAN);
    vlr_jw_double(&w, INFINITY);
    vlr_jw_double(&w, -INFINITY);
    vlr_jw_fixed(&w, 1.23456, 2);
    vlr_jw_fixed(&w, NAN, 2);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "nested");
    vlr_jw_array(&w);
    vlr_jw_array(&w);
    vlr_jw_end(&w);
    vlr_jw_object(&w);
    vlr_jw_end(&w);
    vlr_jw_bool(&w, true);
    vlr_jw_bool(&w, false);
    vlr_jw_null(&w);
    vlr_jw_raw(&w, "17", 2);
    vlr_jw_end(&w);
    vlr_jw_end(&w);
    const char *want = "{\"id\": \"a\\\"b\", \"bad \xef\xbf\xbd key\": \"cut \xef\xbf\xbd\", \"none\": null, "
                       "\"int\": -9223372036854775808, \"uint\": 18446744073709551615, "
                       "\"doubles\": [0.1, null, null, null, 1.23, null], \"nested\": [[], {}, true, false, null, 17]}";
    CHECK(b.data && strcmp(b.data, want) == 0 && w.depth == 0 && !w.bad, "compact:\n%s\nwant\n%s", b.data, want);
    vlr_err e = {0};
    vlr_json_doc *d = vlr_json_parse(b.data, b.len, &e);
    CHECK(d != NULL, "compact reads back: %s", e.msg);
    vlr_json_free(d);

    /* one member per line at the first two levels, inline below; empty containers stay {} */
    vlr_buf_free(&b);
    vlr_jw_init(&w, &b, 2);
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "n", 1);
    vlr_jw_key(&w, "table");
    vlr_jw_object(&w);
    vlr_jw_key(&w, "x");
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "a", 1);
    vlr_jw_key_int(&w, "b", 2);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "y");
    vlr_jw_array(&w);
    vlr_jw_end(&w);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "empty");
    vlr_jw_object(&w);
    vlr_jw_end(&w);
    vlr_jw_end(&w);
    want = "{\n  \"n\": 1,\n  \"table\": {\n    \"x\": {\"a\": 1, \"b\": 2},\n    \"y\": []\n  },\n  \"empty\": {}\n}";
    CHECK(b.data && strcmp(b.data, want) == 0, "multi-line:\n%s\nwant\n%s", b.data, want);

    /* a parsed document written back: numbers keep their text, keys with NUL survive */
    const char *doc = "{\"k\\u0000ey\": [1.50, -0, 1e400, \"s\\u0001\", {\"t\": true, \"f\": false, \"n\": null}], \"e\": {}}";
    d = vlr_json_parse(doc, strlen(doc), &e);
    CHECK(d != NULL, "%s", e.msg);
    if (d) {
        vlr_buf_free(&b);
        vlr_jw_init(&w, &b, 0);
        vlr_jw_value(&w, vlr_json_root(d));
        want = "{\"k\\u0000ey\": [1.50, -0, 1e400, \"s\\u0001\", {\"t\": true, \"f\": false, \"n\": null}], \"e\": {}}";
        CHECK(b.data && strcmp(b.data, want) == 0, "written back: %s", b.data);
        vlr_json_free(d);
    }

    /* the reader's deepest document is written and read back; one level more is refused */
    vlr_buf deep = {0};
    for (int i = 0; i < VLR_JSON_MAX_DEPTH; i++) vlr_buf_puts(&deep, "[");
    for (int i = 0; i < VLR_JSON_MAX_DEPTH; i++) vlr_buf_puts(&deep, "]");
    d = vlr_json_parse(deep.data, deep.len, &e);
    CHECK(d != NULL, "deepest: %s", e.msg);
    if (d) {
        vlr_buf_free(&b);
        vlr_jw_init(&w, &b, 0);
        vlr_jw_value(&w, vlr_json_root(d));
        CHECK(b.len == deep.len && strcmp(b.data, deep.data) == 0 && !w.bad, "deepest written back");
        vlr_json_free(d);
    }
    vlr_buf_free(&b);
    vlr_jw_init(&w, &b, 0);
    for (int i = 0; i <= VLR_JW_MAX_DEPTH; i++) vlr_jw_array(&w);
    CHECK(w.bad && w.depth == VLR_JW_MAX_DEPTH && b.len == VLR_JW_MAX_DEPTH, "past the cap: bad %d depth %d len %zu",
          w.bad, w.depth, b.len);
    vlr_buf_free(&deep);
    vlr_buf_free(&b);
}

int main(void) {
    TEST_RUN(test_document);
    TEST_RUN(test_duplicate_keys);
    TEST_RUN(test_errors);
    TEST_RUN(test_hostile);
    TEST_RUN(test_tokenizer_json);
    TEST_RUN(test_files);
    TEST_RUN(test_numbers_locale);
    TEST_RUN(test_writer_utf8);
    TEST_RUN(test_writer_structure);
    return test_report();
}
