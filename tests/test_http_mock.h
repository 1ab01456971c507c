/* test_http_mock.h: a minimal HTTP/1.1 server on loopback, for tests that stand in for a remote
 * service (test_pull's mock Hugging Face hub and CDN). Request heads are parsed by cli/http_parse.h,
 * the server's own parser; everything else is deliberately small: an accept thread and one thread per
 * connection, keep-alive (a client such as libcurl reuses a connection: requests are read in a loop,
 * and bytes after a head belong to the next one), no request bodies, HEAD answered with the headers of
 * the GET (its Content-Length too) and no body.
 *
 * A handler fills a mock_reply: a status, any response headers, a body. Two faults can be injected
 * per reply: drop_after (the connection is closed after that many body bytes, while Content-Length
 * still announces them all) and corrupt_at (one body byte flipped on the wire). The `sent` hook is
 * told how many body bytes each reply handed to the socket, so a test can say what was transferred.
 *
 * Sockets are close-on-exec: a child that the test spawns must not hold a connection open after the
 * server closed it. mock_stop() ends every connection and joins every thread. Include it once, from
 * one test file. */
#ifndef VLR_TEST_HTTP_MOCK_H
#define VLR_TEST_HTTP_MOCK_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "http_parse.h"

#define MOCK_CHUNK (64 * 1024) /* body bytes per send() */

typedef struct mock_reply {
    int status;
    vlr_buf headers;       /* "Name: value\r\n" lines (mock_header) */
    vlr_buf text;          /* a body made for this reply (mock_text); freed once sent */
    const char *body;      /* text.data, or bytes that outlive the server (a fixture's) */
    size_t body_len;
    long long drop_after;  /* >= 0: close the connection after this many body bytes */
    long long corrupt_at;  /* >= 0: this body byte is sent XOR 0x5a */
    int tag;               /* handed to the sent hook; < 0: do not report this reply's bytes */
} mock_reply;

/* Answers one request: h holds the method and headers (http_head_value), path the target's path
 * without the query, NUL-terminated. The reply starts as an empty 500. */
typedef void (*mock_handler)(void *ctx, const http_head *h, const char *path, mock_reply *r);
/* n body bytes of the reply tagged `tag` are about to go to the socket (counted before send(), so a
 * client that has read them finds them counted); a negative n takes back what send() refused. */
typedef void (*mock_sent_hook)(void *ctx, int tag, long long n);

typedef struct mock_conn {
    struct mock_server *server;
    pthread_t thread;
    int fd;     /* -1 once the connection's thread has closed it */
    bool done;  /* the thread has ended: join it */
    struct mock_conn *next;
} mock_conn;

typedef struct mock_server {
    int port;
    mock_handler handle;
    mock_sent_hook sent;
    void *ctx;
    int listen_fd, wake[2]; /* a byte on wake[1] stops the accept thread */
    pthread_t acceptor;
    pthread_mutex_t lock;   /* conns, and each one's fd and done */
    mock_conn *conns;
} mock_server;

static void mock_header(mock_reply *r, const char *name, const char *value) {
    vlr_buf_printf(&r->headers, "%s: %s\r\n", name, value);
}

/* status and a copy of text as the body */
static void mock_text(mock_reply *r, int status, const char *text) {
    r->status = status;
    r->text.len = 0;
    vlr_buf_puts(&r->text, text);
    r->body = r->text.data ? r->text.data : "";
    r->body_len = r->text.data ? r->text.len : 0;
}

/* The bytes of data[0..n) that send() took before it failed (n when it did not). */
static size_t mock_send_all(int fd, const char *data, size_t n) {
    size_t at = 0;
    while (at < n) {
        ssize_t k = send(fd, data + at, n - at, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        at += (size_t)k;
    }
    return at;
}

/* Sends r: false when the connection must close (a send failed, or the drop fault fired). */
static bool mock_send_reply(mock_server *s, int fd, const mock_reply *r, bool head_only, bool keep_alive,
                            char *chunk) {
    bool drop = !head_only && r->drop_after >= 0 && (unsigned long long)r->drop_after < r->body_len;
    vlr_buf out = {0};
    vlr_buf_printf(&out, "HTTP/1.1 %d %s\r\nContent-Length: %zu\r\n", r->status, http_reason(r->status), r->body_len);
    if (r->headers.data) vlr_buf_append(&out, r->headers.data, r->headers.len);
    /* a dropped connection is a fault: nothing announces it */
    vlr_buf_puts(&out, keep_alive ? "\r\n" : "Connection: close\r\n\r\n");
    bool ok = !out.oom && mock_send_all(fd, out.data, out.len) == out.len;
    vlr_buf_free(&out);
    size_t body_end = head_only ? 0 : drop ? (size_t)r->drop_after : r->body_len;
    for (size_t at = 0; ok && at < body_end; at += MOCK_CHUNK) {
        size_t n = body_end - at < MOCK_CHUNK ? body_end - at : MOCK_CHUNK;
        memcpy(chunk, r->body + at, n);
        if (r->corrupt_at >= 0 && (unsigned long long)r->corrupt_at >= at && (unsigned long long)r->corrupt_at < at + n)
            chunk[r->corrupt_at - (long long)at] ^= 0x5a;
        bool report = r->tag >= 0 && s->sent;
        if (report) s->sent(s->ctx, r->tag, (long long)n);
        size_t put = mock_send_all(fd, chunk, n);
        if (put < n) {
            if (report) s->sent(s->ctx, r->tag, -(long long)(n - put));
            ok = false;
        }
    }
    return ok && !drop;
}

/* One connection: requests in a loop until the client closes, asks to close, or a fault ends it. */
static void *mock_conn_main(void *arg) {
    mock_conn *c = arg;
    mock_server *s = c->server;
    char *buf = malloc(HTTP_MAX_HEAD), *chunk = malloc(MOCK_CHUNK);
    http_head *h = malloc(sizeof *h);
    size_t len = 0;
    bool open = buf && chunk && h;
    while (open) {
        size_t head_len = 0;
        http_error err;
        http_parse_result pr = http_parse_head(buf, len, 0, h, &head_len, &err);
        if (pr == HTTP_PARSE_MORE) {
            ssize_t n = recv(c->fd, buf + len, HTTP_MAX_HEAD - len, 0);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            len += (size_t)n;
            continue;
        }
        mock_reply r = {.status = 500, .body = "", .drop_after = -1, .corrupt_at = -1, .tag = -1};
        bool head_only = false, keep_alive = false;
        char path[HTTP_MAX_TARGET + 1];
        if (pr == HTTP_PARSE_ERROR) {
            mock_text(&r, err.status, err.msg);
        } else if (h->chunked || h->content_length > 0) {
            mock_text(&r, 400, "this mock takes no request bodies");
        } else {
            snprintf(path, sizeof path, "%.*s", (int)h->path_len, h->path);
            head_only = strcmp(h->method, "HEAD") == 0;
            keep_alive = h->keep_alive;
            s->handle(s->ctx, h, path, &r);
        }
        open = mock_send_reply(s, c->fd, &r, head_only, keep_alive, chunk) && keep_alive;
        vlr_buf_free(&r.headers);
        vlr_buf_free(&r.text);
        memmove(buf, buf + head_len, len - head_len); /* the start of the next request, if any */
        len -= head_len;
    }
    free(buf);
    free(chunk);
    free(h);
    pthread_mutex_lock(&s->lock);
    close(c->fd);
    c->fd = -1;
    c->done = true;
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Joins the connections whose thread has ended (all of them with `all`, after mock_stop shut them
 * down), so that a long test does not pile up threads. */
static void mock_reap(mock_server *s, bool all) {
    mock_conn *ended = NULL;
    pthread_mutex_lock(&s->lock);
    for (mock_conn **pp = &s->conns; *pp;) {
        mock_conn *c = *pp;
        if (c->done || all) {
            *pp = c->next;
            c->next = ended;
            ended = c;
        } else {
            pp = &c->next;
        }
    }
    pthread_mutex_unlock(&s->lock);
    while (ended) {
        mock_conn *next = ended->next;
        pthread_join(ended->thread, NULL);
        free(ended);
        ended = next;
    }
}

static void *mock_accept_main(void *arg) {
    mock_server *s = arg;
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (p[1].revents) break;
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) continue;
        mock_reap(s, false);
        mock_conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        *c = (mock_conn){.server = s, .fd = fd};
        pthread_mutex_lock(&s->lock);
        if (pthread_create(&c->thread, NULL, mock_conn_main, c) == 0) {
            c->next = s->conns;
            s->conns = c;
        } else {
            close(fd);
            free(c);
        }
        pthread_mutex_unlock(&s->lock);
    }
    return NULL;
}

static void mock_release(mock_server *s) {
    if (s->listen_fd >= 0) close(s->listen_fd);
    for (int i = 0; i < 2; i++)
        if (s->wake[i] >= 0) close(s->wake[i]);
    pthread_mutex_destroy(&s->lock);
}

/* Listens on 127.0.0.1 at a free port (s->port); false when it cannot. */
static bool mock_start(mock_server *s, mock_handler handle, mock_sent_hook sent, void *ctx) {
    *s = (mock_server){.handle = handle, .sent = sent, .ctx = ctx, .listen_fd = -1, .wake = {-1, -1}};
    pthread_mutex_init(&s->lock, NULL);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t addr_len = sizeof addr;
    s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s->listen_fd < 0 || bind(s->listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(s->listen_fd, 64) != 0 || getsockname(s->listen_fd, (struct sockaddr *)&addr, &addr_len) != 0 ||
        pipe2(s->wake, O_CLOEXEC) != 0 || pthread_create(&s->acceptor, NULL, mock_accept_main, s) != 0) {
        mock_release(s);
        return false;
    }
    s->port = ntohs(addr.sin_port);
    return true;
}

/* Stops accepting, ends every connection (a client still connected sees it closed) and joins every
 * thread. */
static void mock_stop(mock_server *s) {
    ssize_t unused = write(s->wake[1], "x", 1);
    (void)unused;
    pthread_join(s->acceptor, NULL);
    pthread_mutex_lock(&s->lock);
    for (mock_conn *c = s->conns; c; c = c->next)
        if (c->fd >= 0) shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->lock);
    mock_reap(s, true);
    mock_release(s);
}

#endif
