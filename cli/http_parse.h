/* http_parse.h: HTTP/1.1 request framing (RFC 9112) as pure functions over bytes, for the server of
 * `vlreward serve` (http_server.c) and its fuzz target. No I/O, no allocation beyond the caller's
 * buffers: a request head is parsed in place, a chunked body is decoded incrementally.
 *
 * What is refused, and with which status (the server answers each in JSON and closes):
 *   400  a request line, header line or chunk line that is not the grammar's (bare CR, NUL or other
 *        control bytes, a space before a header's colon, obs-fold, a non-digit Content-Length, a
 *        chunk size that is not hex), HTTP/1.1 without exactly one Host, ambiguous framing (RFC 9112
 *        section 6.3: Transfer-Encoding with Content-Length, more than one Content-Length, a
 *        Transfer-Encoding other than one "chunked")
 *   413  a Content-Length, or chunks adding up to, more than the body cap
 *   414  a request target over HTTP_MAX_TARGET bytes
 *   431  a head over HTTP_MAX_HEAD bytes or with more than HTTP_MAX_HEADERS header lines
 *   505  a version other than HTTP/1.0 and HTTP/1.1 */
#ifndef VLR_CLI_HTTP_PARSE_H
#define VLR_CLI_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEAD (32 * 1024)  /* request line and header lines, with their line ends */
#define HTTP_MAX_TARGET (8 * 1024) /* the request target */
#define HTTP_MAX_HEADERS 100
#define HTTP_MAX_CHUNK_LINE 4096   /* a chunk-size line with its extensions, or a trailer line */

/* Why a request is refused: an HTTP status and a message for the client. */
typedef struct http_error {
    int status;
    char msg[160];
} http_error;

typedef struct http_header {
    const char *name, *value; /* NUL-terminated, inside the parsed buffer; value without surrounding whitespace */
} http_header;

typedef struct http_head {
    const char *method, *target; /* NUL-terminated, inside the parsed buffer */
    const char *path;            /* the target's path: origin-form up to '?', or that of an absolute-form */
    size_t path_len;
    int minor;                   /* HTTP/1.<minor>: 0 or 1 */
    http_header headers[HTTP_MAX_HEADERS];
    size_t n_headers;
    bool has_length, chunked;    /* the body's framing; neither: no body */
    uint64_t content_length;
    bool keep_alive;             /* the connection may carry another request after this one */
    bool expect_continue;        /* "Expect: 100-continue" */
} http_head;

typedef enum http_parse_result { HTTP_PARSE_DONE, HTTP_PARSE_MORE, HTTP_PARSE_ERROR } http_parse_result;

/* Parses the request head at the start of buf[0..len) (empty lines before it are skipped, as RFC 9112
 * section 2.2 allows). DONE: *head_len is the bytes the head took, and buf was changed in place
 * (line ends become NULs) so h's strings point into it; MORE: the head has not ended yet (len is
 * under HTTP_MAX_HEAD, else that is 431); ERROR: *err says why. Bytes after the head (the body, a
 * pipelined next request) are not looked at. max_body: the largest body accepted (413 beyond). */
http_parse_result http_parse_head(char *buf, size_t len, uint64_t max_body, http_head *h, size_t *head_len,
                                  http_error *err);

/* The value of header `name` (case-insensitive), or NULL. */
const char *http_head_value(const http_head *h, const char *name);

/* A chunked body being decoded (RFC 9112 section 7.1): chunk data is passed on, chunk extensions and
 * trailer fields are read and dropped. Zero-initialise, set max_body. */
typedef struct http_chunked {
    uint64_t max_body;   /* the body's cap: 413 beyond */
    uint64_t body_len;   /* data bytes so far */
    uint64_t remaining;  /* of the current chunk's data */
    int state;
    size_t line_len;     /* bytes of the current size or trailer line so far */
    bool size_seen, in_ext;
    bool done;           /* the last chunk and the trailers have been read */
} http_chunked;

/* Decodes in[0..n): data bytes are moved to the front of out (out may be in itself: they never run
 * ahead of the input). *used: input bytes consumed (stops right after the body's end, leaving a
 * pipelined request in place); *out_len: data bytes written. False with *err on a framing error. */
bool http_chunked_feed(http_chunked *c, const char *in, size_t n, char *out, size_t *used, size_t *out_len,
                       http_error *err);

/* "OK", "Bad Request", ... ("Unknown" for a status it does not name). */
const char *http_reason(int status);

#endif
