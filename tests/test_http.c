/* test_http.c: the server's HTTP/1.1 framing (cli/http_parse.c) on valid heads, on every refusal of
 * issue 16 item 11 (each with its status: 400, 413, 414, 431, 505) and on chunked bodies fed whole,
 * byte by byte and in random splits (same data, same end, the bytes after the body untouched). Each
 * parse runs on a heap copy of exactly the input's length, so ASan catches a read past its end. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http_parse.h"
#include "test.h"

#define MAX_BODY (64ull << 20)

/* Parses text (a heap copy of exactly its length); the result, with h and err filled. */
static http_parse_result parse(const char *text, http_head *h, size_t *head_len, http_error *err, char **copy) {
    size_t n = strlen(text);
    *copy = malloc(n ? n : 1);
    memcpy(*copy, text, n);
    *err = (http_error){0};
    return http_parse_head(*copy, n, MAX_BODY, h, head_len, err);
}

static void expect_refused(const char *text, int status, const char *needle) {
    http_head h;
    http_error err;
    size_t head_len;
    char *copy;
    http_parse_result r = parse(text, &h, &head_len, &err, &copy);
    CHECK(r == HTTP_PARSE_ERROR && err.status == status && strstr(err.msg, needle),
          "[%.60s]: result %d status %d '%s' (want %d '%s')", text, r, err.status, err.msg, status, needle);
    free(copy);
}

static void test_valid_heads(void) {
    http_head h;
    http_error err;
    size_t head_len;
    char *copy;
    const char *req = "\r\nPOST /score?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length:  12 \r\nX-Empty:\r\n"
                      "Expect: 100-continue\r\n\r\n{\"id\": \"ab\"}";
    http_parse_result r = parse(req, &h, &head_len, &err, &copy);
    CHECK(r == HTTP_PARSE_DONE, "a POST head parses: %s", err.msg);
    if (r == HTTP_PARSE_DONE) {
        CHECK(strcmp(h.method, "POST") == 0 && strcmp(h.target, "/score?x=1") == 0, "method %s target %s", h.method,
              h.target);
        CHECK(h.path_len == 6 && memcmp(h.path, "/score", 6) == 0, "the path stops at '?'");
        CHECK(h.minor == 1 && h.keep_alive && h.has_length && h.content_length == 12 && !h.chunked &&
                  h.expect_continue, "framing: length 12, kept alive, 100-continue");
        CHECK(strcmp(http_head_value(&h, "content-length"), "12") == 0, "values lose their surrounding spaces");
        CHECK(strcmp(http_head_value(&h, "X-EMPTY"), "") == 0 && http_head_value(&h, "Nope") == NULL,
              "an empty value; a missing header");
        CHECK(head_len == strlen(req) - 12, "the head ends before the body (%zu)", head_len);
    }
    free(copy);

    /* bare LF line ends, HTTP/1.0 (closes unless asked), absolute-form targets, chunked */
    r = parse("GET http://example.com:80/health?q HTTP/1.0\nConnection: keep-alive\n\n", &h, &head_len, &err, &copy);
    CHECK(r == HTTP_PARSE_DONE && h.minor == 0 && h.keep_alive && h.path_len == 7 && memcmp(h.path, "/health", 7) == 0,
          "absolute-form, LF line ends, HTTP/1.0 keep-alive: %d %s", r, err.msg);
    free(copy);
    r = parse("GET http://example.com HTTP/1.0\r\n\r\n", &h, &head_len, &err, &copy);
    CHECK(r == HTTP_PARSE_DONE && !h.keep_alive && h.path_len == 1 && h.path[0] == '/',
          "an absolute URL without a path asks for /; HTTP/1.0 closes");
    free(copy);
    r = parse("POST /s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\nConnection: x, close\r\n\r\n", &h, &head_len,
              &err, &copy);
    CHECK(r == HTTP_PARSE_DONE && h.chunked && !h.has_length && !h.keep_alive, "chunked; Connection: close in a list");
    free(copy);

    /* an unfinished head asks for more, whatever the cut */
    const char *whole = "GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    for (size_t cut = 0; cut < strlen(whole); cut++) {
        char part[64];
        snprintf(part, sizeof part, "%.*s", (int)cut, whole);
        r = parse(part, &h, &head_len, &err, &copy);
        CHECK(r == HTTP_PARSE_MORE, "cut at %zu: more (got %d %s)", cut, r, err.msg);
        free(copy);
    }
}

static void test_refusals(void) {
    /* request lines */
    expect_refused("GET /health\r\n\r\n", 400, "malformed request line");      /* HTTP/0.9: no version */
    expect_refused("GET  /health HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed request line");
    expect_refused("GET /health HTTP/1.1 \r\nHost: t\r\n\r\n", 400, "the version is not");
    expect_refused("GET /health HTTP/2.0\r\nHost: t\r\n\r\n", 505, "version not supported");
    expect_refused("GET /health HTTP/1.2\r\nHost: t\r\n\r\n", 505, "version not supported");
    expect_refused("GET /health FOO/1.1\r\nHost: t\r\n\r\n", 400, "the version is not");
    expect_refused("G@T /health HTTP/1.1\r\nHost: t\r\n\r\n", 400, "malformed request line");
    expect_refused("GET health HTTP/1.1\r\nHost: t\r\n\r\n", 400, "not a path or an absolute URL");
    expect_refused("GET /a\x01 HTTP/1.1\r\nHost: t\r\n\r\n", 400, "control byte in the target");
    expect_refused("GET /h\rx HTTP/1.1\r\nHost: t\r\n\r\n", 400, "a CR inside");
    /* header lines */
    expect_refused("GET / HTTP/1.1\r\nHost : t\r\n\r\n", 400, "malformed header line");
    expect_refused("GET / HTTP/1.1\r\nHost: t\r\nNo colon\r\n\r\n", 400, "malformed header line");
    expect_refused("GET / HTTP/1.1\r\nHost: t\r\nX: a\r\n  folded\r\n\r\n", 400, "obs-fold");
    expect_refused("GET / HTTP/1.1\r\nHost: t\r\nX: a\x7f\r\n\r\n", 400, "control byte in a value");
    expect_refused("GET / HTTP/1.1\r\nHost: t\r\nX: a\rb\r\n\r\n", 400, "a CR inside");
    expect_refused("GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host");
    expect_refused("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host");
    /* framing */
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12a\r\n\r\n", 400, "Content-Length is not a number");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, "Content-Length is not a number");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\r\n", 400, "Content-Length is not a number");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413, "cap");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 67108865\r\n\r\n", 413, "--max-body-mb");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
                   "both Transfer-Encoding and Content-Length");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\nContent-Length: 1\r\n\r\n",
                   400, "more than one Content-Length");
    expect_refused("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 400,
                   "Transfer-Encoding other than a single");
    expect_refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "Transfer-Encoding other than a single");

    /* sizes: a long target (414), a long request line still arriving (414), a long head (431) */
    size_t big = HTTP_MAX_HEAD + 100;
    char *text = malloc(big + 1100);
    memcpy(text, "GET /", 5);
    memset(text + 5, 'a', HTTP_MAX_TARGET + 1);
    strcpy(text + 5 + HTTP_MAX_TARGET + 1, " HTTP/1.1\r\nHost: t\r\n\r\n");
    expect_refused(text, 414, "request target over");
    memset(text + 5, 'a', HTTP_MAX_TARGET + 100);
    text[5 + HTTP_MAX_TARGET + 100] = '\0';
    expect_refused(text, 414, "request line over");
    int n = snprintf(text, big, "GET / HTTP/1.1\r\nHost: t\r\n");
    while ((size_t)n < HTTP_MAX_HEAD) n += snprintf(text + n, big + 1100 - (size_t)n, "X-Pad: %01000d\r\n", 0);
    expect_refused(text, 431, "request head over");          /* still arriving */
    strcpy(text + n, "\r\n");
    expect_refused(text, 431, "request head over");          /* whole */
    n = snprintf(text, big, "GET / HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS; i++) n += snprintf(text + n, big - (size_t)n, "X: %d\r\n", i);
    strcpy(text + n, "\r\n");
    expect_refused(text, 431, "more than 100 header lines");
    free(text);
}

/* Feeds a chunked body in pieces (split = 0: whole; 1: byte by byte; else random pieces of at most
 * split bytes) into an exact-size output buffer with a sentinel after it. */
static bool feed(const char *wire, size_t wire_len, size_t split, char *out, size_t out_cap, size_t *out_len,
                 size_t *used_total, http_error *err, http_chunked *c) {
    *c = (http_chunked){.max_body = 1000};
    *out_len = *used_total = 0;
    char *buf = malloc(out_cap + 1);
    buf[out_cap] = (char)0xA5;
    bool ok = true;
    for (size_t at = 0; at < wire_len && ok && !c->done;) {
        size_t n = split == 0 ? wire_len - at : split == 1 ? 1 : 1 + (size_t)rand() % split;
        if (n > wire_len - at) n = wire_len - at;
        char *piece = malloc(n); /* exact size: a read past the piece is an ASan report */
        memcpy(piece, wire + at, n);
        size_t used, got;
        ok = http_chunked_feed(c, piece, n, buf + *out_len, &used, &got, err);
        free(piece);
        CHECK(used <= n && got <= used, "consumed %zu of %zu, produced %zu", used, n, got);
        *out_len += got;
        at += used;
        *used_total = at;
        if (ok && used < n && !c->done) ok = false; /* stopped short without finishing: a bug */
    }
    CHECK((unsigned char)buf[out_cap] == 0xA5, "the sentinel after the data is intact");
    memcpy(out, buf, *out_len);
    free(buf);
    return ok;
}

static void test_chunked(void) {
    const char *env = getenv("VLR_TEST_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    printf("test_chunked: seed %u (VLR_TEST_SEED replays it)\n", seed);
    srand(seed);
    static const struct { const char *wire, *data; size_t tail; } good[] = {
        {"5\r\nhello\r\n6;name=v\r\n world\r\n0\r\n\r\nGET", "hello world", 3},
        {"1\nx\n0\n\n", "x", 0},                                    /* bare LF line ends */
        {"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", "0123456789", 0},
        {"0\r\n\r\n", "", 0},
        {"00003\r\nabc\r\n0;ext\r\n\r\nPOST", "abc", 4},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        size_t len = strlen(good[i].wire);
        for (size_t split = 0; split < 6; split++) {
            char out[64];
            size_t out_len, used;
            http_error err = {0};
            http_chunked c;
            bool ok = feed(good[i].wire, len, split, out, sizeof out - 1, &out_len, &used, &err, &c);
            CHECK(ok && c.done && out_len == strlen(good[i].data) && memcmp(out, good[i].data, out_len) == 0 &&
                      used == len - good[i].tail,
                  "case %zu split %zu: ok %d done %d data '%.*s' used %zu of %zu (%s)", i, split, ok, c.done,
                  (int)out_len, out, used, len, err.msg);
        }
    }
    static const struct { const char *wire; int status; const char *needle; } bad[] = {
        {"x\r\n", 400, "not hexadecimal"},
        {"\r\n", 400, "not hexadecimal"},
        {";ext\r\n", 400, "not hexadecimal"},
        {"5\r\nhello!\r\n", 400, "longer than its size"},
        {"5\r\nhello\rX", 400, "CR without LF"},
        {"5\rX", 400, "CR without LF"},
        {"3e9\r\n", 413, "over the 0 MiB cap"},                /* 1001 bytes > the 1000 cap */
        {"fffffffffffffffffffff\r\n", 413, "cap"},            /* a size over 64 bits */
        {"1;a\x01\r\n", 400, "control byte in a chunk extension"},
        {"0\r\nX: a\x02\r\n\r\n", 400, "control byte in a trailer"},
        {"0\r\nX: a\rZ", 400, "CR without LF in the trailers"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (size_t split = 0; split < 3; split++) {
            char out[64];
            size_t out_len, used;
            http_error err = {0};
            http_chunked c;
            bool ok = feed(bad[i].wire, strlen(bad[i].wire), split, out, sizeof out - 1, &out_len, &used, &err, &c);
            CHECK(!ok && err.status == bad[i].status && strstr(err.msg, bad[i].needle),
                  "bad case %zu split %zu: ok %d status %d '%s'", i, split, ok, err.status, err.msg);
        }
    }
    /* the chunk-size line and trailer lines are bounded */
    char *line = malloc(HTTP_MAX_CHUNK_LINE + 16);
    memset(line, 'a', HTTP_MAX_CHUNK_LINE + 8);
    memcpy(line, "1;", 2);
    http_chunked c = {.max_body = 1000};
    char out[8];
    size_t used, got;
    http_error err = {0};
    CHECK(!http_chunked_feed(&c, line, HTTP_MAX_CHUNK_LINE + 8, out, &used, &got, &err) && err.status == 400 &&
              strstr(err.msg, "chunk-size line over"), "a chunk-size line over 4096 bytes: %s", err.msg);
    free(line);
}

int main(void) {
    TEST_RUN(test_valid_heads);
    TEST_RUN(test_refusals);
    TEST_RUN(test_chunked);
    return test_report();
}
