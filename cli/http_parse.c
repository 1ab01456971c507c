/* http_parse.c: see http_parse.h. The grammar is RFC 9112's, read strictly where leniency lets two
 * parsers disagree on where a request ends (framing headers, line ends inside a line), and leniently
 * where it cannot (a bare LF ends a line, as section 2.2 allows; empty lines before a request). */
#include "http_parse.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static bool fail(http_error *err, int status, const char *msg) {
    err->status = status;
    snprintf(err->msg, sizeof err->msg, "%s", msg);
    return false;
}

static http_parse_result refuse(http_error *err, int status, const char *msg) {
    fail(err, status, msg);
    return HTTP_PARSE_ERROR;
}

/* tchar of RFC 9110 section 5.6.2: the bytes of a method or a header name. */
static bool is_tchar(unsigned char c) {
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* field-vchar, SP, HTAB and obs-text: what a header value may hold. */
static bool is_value_byte(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* The line starting at p (before end): its length without the line end, and *next the byte after
 * the line end. False when the line has not ended yet. A CR anywhere but before the LF is an error
 * (*bad_cr), since parsers disagree on it. */
static bool line_at(const char *p, const char *end, size_t *len, const char **next, bool *bad_cr) {
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    *bad_cr = false;
    const char *scan_end = lf ? lf : end;
    const char *cr = memchr(p, '\r', (size_t)(scan_end - p));
    if (cr && cr + 1 != lf && cr + 1 < end) { /* a CR not (or not yet known to be) just before the LF */
        *bad_cr = true;
        return false;
    }
    if (!lf) return false;
    *len = (size_t)(lf - p) - (lf > p && lf[-1] == '\r');
    *next = lf + 1;
    return true;
}

static bool token_list_has(const char *value, size_t len, const char *token) {
    size_t tl = strlen(token);
    for (size_t i = 0; i < len;) {
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ',')) i++;
        size_t start = i;
        while (i < len && value[i] != ',') i++;
        size_t e = i;
        while (e > start && (value[e - 1] == ' ' || value[e - 1] == '\t')) e--;
        if (e - start == tl && strncasecmp(value + start, token, tl) == 0) return true;
    }
    return false;
}

/* The request line "METHOD SP TARGET SP HTTP/1.x" of len bytes at p. Offsets of the NULs to write
 * on success go to cuts[0..2] (after the method, the target, the version). */
static bool request_line(const char *p, size_t len, http_head *h, size_t cuts[3], http_error *err) {
    size_t m = 0;
    while (m < len && is_tchar((unsigned char)p[m])) m++;
    if (m == 0 || m >= len || p[m] != ' ') return fail(err, 400, "malformed request line (expected METHOD /path HTTP/1.1)");
    if (m > 32) return fail(err, 400, "malformed request line: a method of more than 32 characters");
    size_t t0 = m + 1, t = t0;
    while (t < len && p[t] != ' ') {
        unsigned char c = (unsigned char)p[t];
        if (c <= 0x20 || c == 0x7f) return fail(err, 400, "malformed request line: a control byte in the target");
        t++;
    }
    if (t - t0 > HTTP_MAX_TARGET) return fail(err, 414, "request target over 8192 bytes");
    if (t == t0 || t >= len) return fail(err, 400, "malformed request line (expected METHOD /path HTTP/1.1)");
    const char *v = p + t + 1;
    size_t vlen = len - t - 1;
    if (vlen == 8 && memcmp(v, "HTTP/1.", 7) == 0 && (v[7] == '0' || v[7] == '1')) {
        h->minor = v[7] - '0';
    } else if (vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' && v[7] >= '0' &&
               v[7] <= '9') {
        return fail(err, 505, "HTTP version not supported (this server speaks HTTP/1.0 and HTTP/1.1)");
    } else {
        return fail(err, 400, "malformed request line: the version is not HTTP/1.0 or HTTP/1.1");
    }
    /* origin-form "/path?query", or absolute-form "http://authority/path?query" (RFC 9112 3.2) */
    const char *target = p + t0, *path = target, *path_end = p + t;
    if (target[0] != '/') {
        const char *sep = memmem(target, t - t0, "://", 3);
        if (!sep || sep == target)
            return fail(err, 400, "malformed request line: the target is not a path or an absolute URL");
        const char *slash = memchr(sep + 3, '/', (size_t)(path_end - (sep + 3)));
        path = slash ? slash : "/";
        if (!slash) path_end = path + 1; /* "http://host" asks for "/" */
    }
    const char *q = memchr(path, '?', (size_t)(path_end - path));
    h->path = path;
    h->path_len = (size_t)((q ? q : path_end) - path);
    h->method = p;
    h->target = target;
    cuts[0] = m;
    cuts[1] = t;
    cuts[2] = len;
    return true;
}

http_parse_result http_parse_head(char *buf, size_t len, uint64_t max_body, http_head *h, size_t *head_len,
                                  http_error *err) {
    memset(h, 0, sizeof *h);
    const char *p = buf, *end = buf + len;
    /* empty lines before the request line */
    while (p < end && (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))) p += *p == '\r' ? 2 : 1;
    size_t line_len;
    const char *next;
    bool bad_cr;
    if (!line_at(p, end, &line_len, &next, &bad_cr)) {
        if (bad_cr) return refuse(err, 400, "malformed request line: a CR inside the line");
        if ((size_t)(end - p) > HTTP_MAX_TARGET + 64) return refuse(err, 414, "request line over 8256 bytes");
        if (len >= HTTP_MAX_HEAD) return refuse(err, 431, "request head over 32768 bytes");
        return HTTP_PARSE_MORE;
    }
    size_t cuts[3 + 2 * HTTP_MAX_HEADERS], n_cuts = 3; /* the request line's three, two a header */
    size_t line0 = (size_t)(p - buf);
    if (!request_line(p, line_len, h, cuts, err)) return HTTP_PARSE_ERROR;
    for (int i = 0; i < 3; i++) cuts[i] += line0;
    /* header lines: "name: value"; the offsets of name and value are kept, NULs written at the end */
    size_t name_off[HTTP_MAX_HEADERS], value_off[HTTP_MAX_HEADERS];
    int lengths = 0, encodings = 0, hosts = 0;
    bool ended = false, conn_close = false, conn_keep = false, length_over = false;
    char over_msg[sizeof err->msg];
    for (p = next; !ended;) {
        if (!line_at(p, end, &line_len, &next, &bad_cr)) {
            if (bad_cr) return refuse(err, 400, "malformed header line: a CR inside the line");
            if (len >= HTTP_MAX_HEAD) return refuse(err, 431, "request head over 32768 bytes");
            return HTTP_PARSE_MORE;
        }
        if ((size_t)(next - buf) > HTTP_MAX_HEAD) return refuse(err, 431, "request head over 32768 bytes");
        if (line_len == 0) {
            ended = true;
            break;
        }
        if (*p == ' ' || *p == '\t')
            return refuse(err, 400, "malformed header line: a continuation line (obs-fold) is not accepted");
        if (h->n_headers == HTTP_MAX_HEADERS) return refuse(err, 431, "more than 100 header lines");
        size_t n = 0;
        while (n < line_len && is_tchar((unsigned char)p[n])) n++;
        if (n == 0 || n == line_len || p[n] != ':')
            return refuse(err, 400, "malformed header line (expected Name: value)");
        size_t v = n + 1, ve = line_len;
        while (v < ve && (p[v] == ' ' || p[v] == '\t')) v++;
        while (ve > v && (p[ve - 1] == ' ' || p[ve - 1] == '\t')) ve--;
        for (size_t i = v; i < ve; i++)
            if (!is_value_byte((unsigned char)p[i]))
                return refuse(err, 400, "malformed header line: a control byte in a value");
        size_t k = h->n_headers++, base = (size_t)(p - buf);
        name_off[k] = base;
        value_off[k] = base + v;
        cuts[n_cuts++] = base + n;  /* the colon */
        cuts[n_cuts++] = base + ve; /* after the value: a space, the CR or the LF */
        const char *name = p, *value = p + v;
        size_t vlen = ve - v;
        if (n == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
            lengths++;
            uint64_t cl = 0;
            bool over = false;
            if (vlen == 0) return refuse(err, 400, "Content-Length is not a number");
            for (size_t i = 0; i < vlen; i++) {
                if (value[i] < '0' || value[i] > '9') return refuse(err, 400, "Content-Length is not a number");
                if (cl > (UINT64_MAX - 9) / 10) over = true;
                else cl = cl * 10 + (uint64_t)(value[i] - '0');
            }
            if (over || cl > max_body) {
                length_over = true;
                snprintf(over_msg, sizeof over_msg, "request body of %.*s bytes is over the %" PRIu64
                         " MiB cap (--max-body-mb)", vlen > 40 ? 40 : (int)vlen, value, max_body >> 20);
            }
            h->content_length = cl;
            h->has_length = true;
        } else if (n == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0) {
            encodings++;
            h->chunked = vlen == 7 && strncasecmp(value, "chunked", 7) == 0;
        } else if (n == 4 && strncasecmp(name, "Host", 4) == 0) {
            hosts++;
        } else if (n == 10 && strncasecmp(name, "Connection", 10) == 0) {
            conn_close = conn_close || token_list_has(value, vlen, "close");
            conn_keep = conn_keep || token_list_has(value, vlen, "keep-alive");
        } else if (n == 6 && strncasecmp(name, "Expect", 6) == 0) {
            h->expect_continue = vlen == 12 && strncasecmp(value, "100-continue", 12) == 0;
        }
        p = next;
    }
    h->keep_alive = !conn_close && (h->minor == 1 || conn_keep);
    if (encodings && lengths)
        return refuse(err, 400, "bad request framing: both Transfer-Encoding and Content-Length: the body's end is ambiguous");
    if (lengths > 1) return refuse(err, 400, "bad request framing: more than one Content-Length header");
    if (encodings > 1 || (encodings && !h->chunked) || (encodings && h->minor == 0))
        return refuse(err, 400, "bad request framing: a Transfer-Encoding other than a single \"chunked\" (HTTP/1.1)");
    if (length_over) return refuse(err, 413, over_msg);
    if (h->minor == 1 && hosts != 1) return refuse(err, 400, "an HTTP/1.1 request needs exactly one Host header");
    /* the head is sound: NUL-terminate its strings in place */
    for (size_t i = 0; i < n_cuts; i++) buf[cuts[i]] = '\0';
    for (size_t k = 0; k < h->n_headers; k++) h->headers[k] = (http_header){buf + name_off[k], buf + value_off[k]};
    *head_len = (size_t)(next - buf);
    return HTTP_PARSE_DONE;
}

const char *http_head_value(const http_head *h, const char *name) {
    for (size_t k = 0; k < h->n_headers; k++)
        if (strcasecmp(h->headers[k].name, name) == 0) return h->headers[k].value;
    return NULL;
}

/* ---- chunked bodies ------------------------------------------------------------------------------ */

enum { CH_SIZE, CH_SIZE_LF, CH_DATA, CH_DATA_CR, CH_DATA_LF, CH_TRAILER, CH_TRAILER_LF };

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool over_cap(const http_chunked *c, http_error *err) {
    err->status = 413;
    snprintf(err->msg, sizeof err->msg, "chunked request body over the %" PRIu64 " MiB cap (--max-body-mb)",
             c->max_body >> 20);
    return false;
}

static bool bad_chunk(http_error *err, const char *what) {
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "malformed chunked body: %s", what);
    return fail(err, 400, msg);
}

/* A byte of a chunk-size line before its line end: the size's hex digits, then extensions. */
static bool size_line_byte(http_chunked *c, char ch, http_error *err) {
    if (++c->line_len > HTTP_MAX_CHUNK_LINE) return bad_chunk(err, "a chunk-size line over 4096 bytes");
    if (c->in_ext) {
        if (ch != '\t' && ((unsigned char)ch < 0x20 || ch == 0x7f)) return bad_chunk(err, "a control byte in a chunk extension");
        return true;
    }
    if (c->size_seen && (ch == ';' || ch == ' ' || ch == '\t')) {
        c->in_ext = true;
        return true;
    }
    if (hex_digit(ch) < 0) return bad_chunk(err, "a chunk size is not hexadecimal");
    if (c->remaining >> 59) return over_cap(c, err);
    c->remaining = c->remaining << 4 | (uint64_t)hex_digit(ch);
    c->size_seen = true;
    return true;
}

/* The chunk-size line has ended: its data follows, or for size 0 the trailers. */
static bool size_line_end(http_chunked *c, http_error *err) {
    if (!c->size_seen) return bad_chunk(err, "a chunk size is not hexadecimal");
    c->line_len = 0;
    c->size_seen = c->in_ext = false;
    if (c->remaining > c->max_body - c->body_len) return over_cap(c, err);
    c->state = c->remaining ? CH_DATA : CH_TRAILER;
    return true;
}

bool http_chunked_feed(http_chunked *c, const char *in, size_t n, char *out, size_t *used, size_t *out_len,
                       http_error *err) {
    size_t i = 0, o = 0;
    bool ok = true;
    while (i < n && !c->done && ok) {
        char ch = in[i];
        if (c->state == CH_DATA) { /* the bulk: moved, not looked at */
            size_t take = n - i < c->remaining ? n - i : (size_t)c->remaining;
            memmove(out + o, in + i, take);
            o += take;
            i += take;
            c->remaining -= take;
            c->body_len += take;
            if (c->remaining == 0) c->state = CH_DATA_CR;
            continue;
        }
        i++;
        switch (c->state) {
        case CH_SIZE:
            if (ch == '\r') c->state = CH_SIZE_LF;
            else if (ch == '\n') ok = size_line_end(c, err);
            else ok = size_line_byte(c, ch, err);
            break;
        case CH_SIZE_LF:
            ok = ch == '\n' ? size_line_end(c, err) : bad_chunk(err, "a CR without LF after a chunk size");
            break;
        case CH_DATA_CR: /* the line end after a chunk's data */
            if (ch == '\r') c->state = CH_DATA_LF;
            else if (ch == '\n') c->state = CH_SIZE;
            else ok = bad_chunk(err, "a chunk's data is longer than its size");
            break;
        case CH_DATA_LF:
            if (ch == '\n') c->state = CH_SIZE;
            else ok = bad_chunk(err, "a CR without LF after a chunk's data");
            break;
        case CH_TRAILER: /* trailer fields, read and dropped, up to an empty line */
            if (ch == '\r') {
                c->state = CH_TRAILER_LF;
            } else if (ch == '\n') {
                c->done = c->line_len == 0;
                c->line_len = 0;
            } else if (++c->line_len > HTTP_MAX_CHUNK_LINE) {
                ok = bad_chunk(err, "a trailer line over 4096 bytes");
            } else if (ch != '\t' && ((unsigned char)ch < 0x20 || ch == 0x7f)) {
                ok = bad_chunk(err, "a control byte in a trailer line");
            }
            break;
        case CH_TRAILER_LF:
            if (ch != '\n') {
                ok = bad_chunk(err, "a CR without LF in the trailers");
                break;
            }
            c->done = c->line_len == 0;
            c->line_len = 0;
            c->state = CH_TRAILER;
            break;
        }
    }
    *used = i;
    *out_len = o;
    return ok;
}

const char *http_reason(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 206: return "Partial Content";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
