/* test_json.c: the JSON reader on valid documents, escapes (NUL, surrogate pairs), error positions,
 * hostile nesting, and the real tokenizer.json (parse time printed for the record). */
#include "json.h"
#include "test.h"

static void expect_error(const char *text, const char *needle) {
    vlr_err e = {0};
    vlr_json_doc *d = vlr_json_parse(text, strlen(text), &e);
    CHECK(d == NULL, "parse of [%s] should fail", text);
    CHECK(strstr(e.msg, needle) != NULL, "[%s]: message '%s' lacks '%s'", text, e.msg, needle);
    vlr_json_free(d);
}

int main(void) {
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

    /* Hostile nesting stops at the cap instead of exhausting the stack. */
    size_t deep = 100000;
    char *nest = malloc(deep + 1);
    memset(nest, '[', deep);
    nest[deep] = 0;
    d = vlr_json_parse(nest, deep, &e);
    CHECK(d == NULL && strstr(e.msg, "nesting deeper") != NULL, "deep nesting: %s", e.msg);
    free(nest);

    /* A NUL byte inside the text is data, not an end. */
    d = vlr_json_parse("[1]\0[2]", 7, &e);
    CHECK(d == NULL, "NUL after value must be an error");

    CHECK(vlr_utf8_invalid_at("ab\xe2\x82", 4) == 2, "truncated sequence found");
    CHECK(vlr_utf8_invalid_at("ab\xe2\x82\xac", 5) == 5, "valid euro sign");

    /* The real tokenizer.json: parses, has the vocab and merges. */
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

    rc = vlr_json_parse_file("tests/reference/does-not-exist.json", 1 << 20, &d, &e);
    CHECK(rc == VLR_ERR_IO && strstr(e.msg, "does-not-exist.json") != NULL, "%s", e.msg);
    return test_report();
}
