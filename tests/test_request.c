/* test_request.c: request parsing (both shapes, every validation error) and the chat template,
 * checked against the rendered prompts of tests/reference/expected.jsonl. */
#include "chat.h"
#include "request.h"
#include "test.h"

static vlr_json_doc *load_lines(const char *path, const vlr_json ***rows, size_t *n) {
    /* Wraps the JSON Lines file into one array so one parse gives every line. */
    char *text;
    size_t len;
    vlr_err e = {0};
    *n = 0;
    if (vlr_read_file(path, 1 << 26, &text, &len, &e)) {
        CHECK(0, "%s", e.msg);
        return NULL;
    }
    vlr_buf b = {0};
    vlr_buf_puts(&b, "[");
    size_t start = 0;
    bool first = true;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            if (i > start) {
                if (!first) vlr_buf_puts(&b, ",");
                vlr_buf_append(&b, text + start, i - start);
                first = false;
            }
            start = i + 1;
        }
    }
    vlr_buf_puts(&b, "]");
    free(text);
    vlr_json_doc *doc = vlr_json_parse(b.data, b.len, &e);
    vlr_buf_free(&b);
    CHECK(doc != NULL, "%s: %s", path, e.msg);
    if (!doc) return NULL;
    const vlr_json *root = vlr_json_root(doc);
    *rows = malloc(root->len * sizeof **rows);
    for (size_t i = 0; i < root->len; i++) (*rows)[i] = &root->items[i];
    *n = root->len;
    return doc;
}

static void expect_request_error(const char *json, const char *needle, const char *want_id) {
    vlr_parsed_request r;
    vlr_err e = {0};
    vlr_status rc = vlr_request_parse(json, strlen(json), 7, ".", &r, &e);
    CHECK(rc != VLR_OK, "[%s] should fail", json);
    CHECK(strstr(e.msg, needle) != NULL, "[%s]: message '%s' lacks '%s'", json, e.msg, needle);
    CHECK(r.id_json.data && strcmp(r.id_json.data, want_id) == 0, "[%s]: id %s, want %s", json,
          r.id_json.data ? r.id_json.data : "(none)", want_id);
    vlr_parsed_request_free(&r);
}

/* The 13 reference conversations render to the golden prompts with the golden image counts. */
static void test_reference_cases(void) {
    const vlr_json **cases = NULL, **expected = NULL;
    size_t n_cases = 0, n_expected = 0;
    vlr_json_doc *cd = load_lines("tests/reference/cases.jsonl", &cases, &n_cases);
    vlr_json_doc *ed = load_lines("tests/reference/expected.jsonl", &expected, &n_expected);
    CHECK(n_cases == 13 && n_expected == 13, "13 cases (%zu, %zu)", n_cases, n_expected);
    for (size_t i = 0; i < n_cases && i < n_expected; i++) {
        vlr_parsed_request r = {0};
        vlr_err e = {0};
        vlr_status rc = vlr_request_from_json(cases[i], i, "tests/reference", &r, &e);
        const vlr_json *id = vlr_json_get(expected[i], "id");
        CHECK(rc == VLR_OK, "case %s: %s", id->str, e.msg);
        vlr_buf prompt = {0};
        size_t n_images = 0;
        rc = vlr_chat_render(&r.req, &prompt, &n_images, &e);
        const vlr_json *want = vlr_json_get(expected[i], "prompt");
        CHECK(rc == VLR_OK && prompt.len == want->len && memcmp(prompt.data, want->str, want->len) == 0,
              "case %s: prompt differs", id->str);
        const vlr_json *grids = vlr_json_get(expected[i], "image_grid_thw");
        CHECK(n_images == grids->len, "case %s: %zu images, want %zu", id->str, n_images, grids->len);
        /* The id is echoed as given, with its JSON quotes. */
        CHECK(r.id_json.len == id->len + 2 && memcmp(r.id_json.data + 1, id->str, id->len) == 0, "id echo");
        vlr_buf_free(&prompt);
        vlr_parsed_request_free(&r);
    }
    vlr_json_free(cd);
    vlr_json_free(ed);
    free(cases);
    free(expected);
}

/* Shorthand = user turn (images, then the question) + assistant turn. */
static void test_shorthand(void) {
    const char *shorthand = "{\"id\": 42, \"images\": [\"a.png\", {\"image\": \"b.jpg\", \"max_pixels\": 50176}],"
                            " \"question\": \"Q?\", \"answer\": \"A.\"}";
    vlr_parsed_request r;
    vlr_err e = {0};
    CHECK(vlr_request_parse(shorthand, strlen(shorthand), 0, "dir", &r, &e) == VLR_OK, "%s", e.msg);
    vlr_buf prompt = {0};
    size_t n_images = 0;
    vlr_chat_render(&r.req, &prompt, &n_images, &e);
    const char *want = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                       "<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>Q?"
                       "<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>\n";
    CHECK(prompt.data && strcmp(prompt.data, want) == 0, "shorthand prompt: %s", prompt.data);
    CHECK(n_images == 2 && r.items[1].max_pixels == 50176 && strcmp(r.items[1].image, "b.jpg") == 0, "items");
    CHECK(strcmp(r.id_json.data, "42") == 0 && strcmp(r.req.base_dir, "dir") == 0, "numeric id, base dir");
    vlr_buf_free(&prompt);
    vlr_parsed_request_free(&r);
}

/* image_url items, both spellings, and an explicit system turn (no default one). */
static void test_image_url(void) {
    vlr_parsed_request r;
    vlr_err e = {0};
    vlr_buf prompt = {0};
    size_t n_images = 0;
    const char *urls = "{\"messages\": [{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": ["
                       "{\"type\": \"image_url\", \"image_url\": {\"url\": \"x.png\"}}, {\"image_url\": \"y.png\"},"
                       "{\"type\": \"text\", \"text\": \"a\\u0000b\"}]}, {\"role\": \"assistant\", \"content\": \"ok\"}]}";
    CHECK(vlr_request_parse(urls, strlen(urls), 3, NULL, &r, &e) == VLR_OK, "%s", e.msg);
    vlr_chat_render(&r.req, &prompt, &n_images, &e);
    static const char want2[] = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>"
                                "<|vision_end|><|vision_start|><|image_pad|><|vision_end|>a\0b<|im_end|>\n"
                                "<|im_start|>assistant\nok<|im_end|>\n";
    CHECK(prompt.len == sizeof want2 - 1 && memcmp(prompt.data, want2, prompt.len) == 0, "image_url prompt");
    CHECK(strcmp(r.req.messages[1].items[0].image, "x.png") == 0 && strcmp(r.req.messages[1].items[1].image, "y.png") == 0, "url sources");
    CHECK(strcmp(r.id_json.data, "3") == 0, "missing id = line number");
    vlr_buf_free(&prompt);
    vlr_parsed_request_free(&r);
}

static void test_errors(void) {
    expect_request_error("{\"id\": \"x\", \"messages\": [{\"role\": \"bot\", \"content\": \"hi\"}]}", "unknown role \"bot\"", "\"x\"");
    expect_request_error("{\"id\": 5, \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}", "must be the assistant turn", "5");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"audio\", \"audio\": \"a\"}]}]}", "unknown content type \"audio\"", "7");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"video\", \"video\": \"v.mp4\"}]}]}", "video items are not supported", "7");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", "expected a string or a list", "7");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": 3}]}]}", "messages[0].content[0].image", "7");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"a\", \"max_pixels\": -1}]}]}", "max_pixels", "7");
    expect_request_error("{\"messages\": []}", "empty conversation", "7");
    expect_request_error("{\"id\": \"q\", \"question\": \"Q\"}", "answer", "\"q\"");
    expect_request_error("{\"id\": 1, \"foo\": 2}", "nothing to score", "1");
    expect_request_error("[1, 2]", "expected a JSON object", "7");
    expect_request_error("{\"id\": \"broken\", ", "invalid JSON", "7");
    expect_request_error("{\"question\": \"\xff\", \"answer\": \"a\"}", "invalid UTF-8", "7");
    expect_request_error("{\"id\": [1], \"question\": \"q\", \"answer\": \"a\"}", "id: expected a string or a number", "7");

    /* Fuzz finding (fuzz_request): a role with a NUL byte ("user\u0000x") was read as "user" and
     * rendered as "<|im_start|>user", where the chat template renders the whole string. */
    expect_request_error("{\"messages\": [{\"role\": \"user\\u0000x\", \"content\": \"hi\"}, "
                         "{\"role\": \"assistant\", \"content\": \"A\"}]}",
                         "messages[0].role: NUL byte", "7");
    expect_request_error("{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, "
                         "{\"role\": \"assistant\\u0000\", \"content\": \"A\"}]}",
                         "messages[1].role: NUL byte", "7");
}

/* Fuzz finding (fuzz_request): a request nested deeper than the JSON depth cap returned
 * VLR_ERR_FORMAT while its error record said VLR_ERR_LIMIT; the status must be the record's. */
static void test_too_deep(void) {
    {
        char deep[2 * VLR_JSON_MAX_DEPTH + 8];
        size_t n = 0;
        for (int i = 0; i <= VLR_JSON_MAX_DEPTH; i++) deep[n++] = '[';
        for (int i = 0; i <= VLR_JSON_MAX_DEPTH; i++) deep[n++] = ']';
        vlr_parsed_request r;
        vlr_err e = {0};
        vlr_status rc = vlr_request_parse(deep, n, 7, ".", &r, &e);
        CHECK(rc == VLR_ERR_LIMIT && e.code == rc, "too deep: status %d, record %d (%s)", (int)rc, (int)e.code, e.msg);
        CHECK(strstr(e.msg, "nesting deeper") != NULL, "too deep: message '%s'", e.msg);
        vlr_parsed_request_free(&r);
    }
}

int main(void) {
    TEST_RUN(test_reference_cases);
    TEST_RUN(test_shorthand);
    TEST_RUN(test_image_url);
    TEST_RUN(test_errors);
    TEST_RUN(test_too_deep);
    return test_report();
}
