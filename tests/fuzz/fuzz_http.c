/* fuzz_http.c: libFuzzer target for the server's HTTP/1.1 framing (cli/http_parse.c): every byte a
 * client sends passes through it before anything else looks at the request.
 *
 * The first input byte picks the mode and the body cap; the rest is what a client sent.
 * Heads: the parse must end DONE, MORE or ERROR with a status the server documents (400, 413, 414,
 * 431, 505) and a message; MORE only below the head cap; DONE with its strings NUL-terminated inside
 * the buffer, the path inside the target, at most one of Content-Length and chunked framing, a
 * Content-Length within the cap, and no shorter prefix of the head DONE too (the end of a head is
 * where it is, not earlier).
 * Chunked bodies: decoding the input whole and in two pieces split at a point the input chooses must
 * agree on data, bytes consumed, end and error; data never exceeds the cap nor the input.
 *
 * Build and run: `make fuzz` (all targets), or from the repository root
 *   make build-fuzz/fuzz_http && build-fuzz/fuzz_http -max_total_time=120 build-fuzz/corpus_http tests/fuzz/corpus_http */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool documented(int status) {
    return status == 400 || status == 413 || status == 414 || status == 431 || status == 505;
}

static bool inside(const char *p, const char *buf, size_t len) { return p >= buf && p < buf + len; }

static void check_head(const uint8_t *data, size_t size, uint64_t max_body) {
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    http_head h;
    http_error err = {0};
    size_t head_len = 0;
    http_parse_result r = http_parse_head(buf, size, max_body, &h, &head_len, &err);
    if (r == HTTP_PARSE_ERROR && (!documented(err.status) || !err.msg[0])) abort();
    if (r == HTTP_PARSE_MORE && size >= HTTP_MAX_HEAD) abort();
    if (r == HTTP_PARSE_DONE) {
        if (head_len == 0 || head_len > size || head_len > HTTP_MAX_HEAD) abort();
        if (!inside(h.method, buf, head_len) || !inside(h.target, buf, head_len)) abort();
        if (strnlen(h.method, (size_t)(buf + head_len - h.method)) == (size_t)(buf + head_len - h.method)) abort();
        size_t tlen = strnlen(h.target, (size_t)(buf + head_len - h.target));
        if (tlen == (size_t)(buf + head_len - h.target) || tlen > HTTP_MAX_TARGET) abort();
        if (h.path[0] != '/' || h.path_len == 0 || (inside(h.path, buf, size) && !inside(h.path + h.path_len - 1, buf, head_len)))
            abort();
        if (h.minor != 0 && h.minor != 1) abort();
        if ((h.has_length && h.chunked) || (h.has_length && h.content_length > max_body)) abort();
        for (size_t k = 0; k < h.n_headers; k++)
            if (!inside(h.headers[k].name, buf, head_len) || !inside(h.headers[k].value, buf, head_len) ||
                !memchr(h.headers[k].value, '\0', (size_t)(buf + head_len - h.headers[k].value)))
                abort();
        /* the head does not end earlier */
        char *shorter = malloc(head_len);
        memcpy(shorter, data, head_len - 1);
        size_t len2;
        if (http_parse_head(shorter, head_len - 1, max_body, &h, &len2, &err) == HTTP_PARSE_DONE) abort();
        free(shorter);
    }
    free(buf);
}

typedef struct decoded {
    bool ok, done;
    int status;
    size_t used, len;
    char *data;
} decoded;

/* Decodes in[0..size) in pieces ending at the offsets cuts[0..n_cuts) (then the rest). */
static decoded decode(const uint8_t *in, size_t size, uint64_t max_body, const size_t *cuts, size_t n_cuts) {
    decoded d = {.ok = true, .data = malloc(size ? size : 1)};
    http_chunked c = {.max_body = max_body};
    size_t at = 0;
    for (size_t k = 0; k <= n_cuts && d.ok && !c.done && at < size; k++) {
        size_t end = k < n_cuts && cuts[k] > at && cuts[k] < size ? cuts[k] : size;
        if (k < n_cuts && end == size) continue;
        size_t n = end - at, used, got;
        char *piece = malloc(n); /* exact size: ASan sees a read past it */
        memcpy(piece, in + at, n);
        http_error err = {0};
        d.ok = http_chunked_feed(&c, piece, n, d.data + d.len, &used, &got, &err);
        free(piece);
        if (used > n || got > used) abort();
        if (!d.ok && (!documented(err.status) || !err.msg[0])) abort();
        d.status = d.ok ? 0 : err.status;
        d.len += got;
        at += used;
        if (d.ok && !c.done && used != n) abort(); /* stopped without a reason */
    }
    d.used = at;
    d.done = c.done;
    if (d.len > max_body || c.body_len != d.len) abort();
    return d;
}

static void check_chunked(const uint8_t *data, size_t size, uint64_t max_body) {
    size_t cut = size ? data[0] % size : 0;
    decoded whole = decode(data, size, max_body, NULL, 0), split = decode(data, size, max_body, &cut, 1);
    if (whole.ok != split.ok || whole.done != split.done || whole.status != split.status || whole.len != split.len ||
        memcmp(whole.data, split.data, whole.len) != 0)
        abort();
    if (whole.ok && whole.used != split.used) abort();
    free(whole.data);
    free(split.data);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    static const uint64_t caps[4] = {0, 10, 1000, 64ull << 20};
    uint64_t max_body = caps[(mode >> 1) & 3];
    if (mode & 1) check_chunked(data + 1, size - 1, max_body);
    else check_head(data + 1, size - 1, max_body);
    return 0;
}
