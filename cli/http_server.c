/* http_server.c: see http_server.h. One acceptor thread; one detached thread per connection, which
 * reads its requests, calls the handler and writes the responses, so a request that waits for a
 * worker blocks only its own connection. Every wait is a poll() on the socket and on a pipe that
 * shutdown makes readable, with the phase's deadline as its timeout: no other thread ever touches a
 * connection's socket. */
#include "http_server.h"

#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* A connection's buffer: a head (up to HTTP_MAX_HEAD) and, behind it, the bytes received with it or
 * after it (a chunked body passes through this window; a pipelined next request waits in it). */
#define CONN_BUF (2 * HTTP_MAX_HEAD)
#define RECV_CHUNK (64 * 1024) /* a Content-Length body is received straight into its buffer */
#define LINGER_S 2.0

typedef enum phase { PHASE_READING, PHASE_ANSWERING, PHASE_IDLE } phase;

struct http_conn {
    http_server *srv;
    http_conn *prev, *next;
    int fd;
    int family; /* the client's address, for the per-address count */
    unsigned char addr[16];
    bool over;
    bool linger;  /* close with request bytes perhaps unread (a refusal): see linger_close */
    phase phase;  /* under srv->lock */
    char *buf;    /* [CONN_BUF]: the head being read or answered, then unconsumed bytes from start */
    size_t start, len;
};

struct http_server {
    http_server_opts o;
    int listen_fd, stop_pipe[2];
    unsigned port;
    pthread_t acceptor;
    bool acceptor_running;
    atomic_bool stopping;
    pthread_mutex_t lock;
    pthread_cond_t all_closed;
    http_conn *conns;
    size_t open;
};

/* ---- waiting and sending ------------------------------------------------------------------------ */

typedef enum wait_result { WAIT_READY, WAIT_TIMEOUT, WAIT_STOP, WAIT_ERROR } wait_result;

/* Waits until fd is ready for `events`, the deadline (vlr_now() seconds; 0 = none) passes or the
 * server stops (when `stoppable`). */
static wait_result wait_fd(http_conn *c, short events, double deadline, bool stoppable) {
    for (;;) {
        if (stoppable && atomic_load(&c->srv->stopping)) return WAIT_STOP;
        int timeout = -1;
        if (deadline > 0) {
            double left = deadline - vlr_now();
            if (left <= 0) return WAIT_TIMEOUT;
            timeout = left > 3600 ? 3600 * 1000 : (int)(left * 1000) + 1;
        }
        struct pollfd p[2] = {{.fd = c->fd, .events = events}, {.fd = c->srv->stop_pipe[0], .events = POLLIN}};
        int n = poll(p, stoppable ? 2 : 1, timeout);
        if (n < 0 && errno != EINTR) return WAIT_ERROR;
        if (n > 0 && p[0].revents) return WAIT_READY; /* an error or hang-up shows at the read or write */
    }
}

/* Sends iov whole, each stretch of no progress bounded by the idle timeout. */
static bool send_all(http_conn *c, struct iovec *iov, int n_iov) {
    double limit = c->srv->o.idle_timeout_s > 0 ? c->srv->o.idle_timeout_s : 0;
    while (n_iov > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)n_iov};
        ssize_t sent = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if ((errno != EAGAIN && errno != EWOULDBLOCK) ||
                wait_fd(c, POLLOUT, limit > 0 ? vlr_now() + limit : 0, false) != WAIT_READY)
                return false;
            continue;
        }
        size_t done = (size_t)sent;
        for (; n_iov > 0 && done >= iov->iov_len; n_iov--, iov++) done -= iov->iov_len;
        if (n_iov > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return true;
}

/* "Sun, 06 Dec 2026 08:00:00 GMT" (RFC 9110 section 5.6.7). */
static void http_date(char *out, size_t cap) {
    static const char days[] = "SunMonTueWedThuFriSat", months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    time_t now = time(NULL);
    struct tm t;
    gmtime_r(&now, &t);
    snprintf(out, cap, "%.3s, %02d %.3s %04d %02d:%02d:%02d GMT", days + 3 * t.tm_wday, t.tm_mday,
             months + 3 * t.tm_mon, t.tm_year + 1900, t.tm_hour, t.tm_min, t.tm_sec);
}

/* Writes the response (its body is freed). head_only: a HEAD request, no body bytes. */
static bool send_response(http_conn *c, http_response *r, bool head_only, bool close) {
    vlr_buf_puts(&r->body, "\n");
    if (r->body.oom) {
        vlr_buf_free(&r->body);
        return false;
    }
    char head[768], date[40];
    http_date(date, sizeof date);
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                     r->status, http_reason(r->status), date, r->content_type ? r->content_type : "application/json",
                     r->body.len);
    if (r->allow) n += snprintf(head + n, sizeof head - (size_t)n, "Allow: %s\r\n", r->allow);
    if (r->retry_after > 0) n += snprintf(head + n, sizeof head - (size_t)n, "Retry-After: %d\r\n", r->retry_after);
    n += snprintf(head + n, sizeof head - (size_t)n, "%s\r\n", close ? "Connection: close\r\n" : "");
    struct iovec iov[2] = {{head, (size_t)n}, {r->body.data, head_only ? 0 : r->body.len}};
    bool ok = (size_t)n < sizeof head && send_all(c, iov, head_only ? 1 : 2);
    vlr_buf_free(&r->body);
    return ok;
}

/* ---- the connection registry -------------------------------------------------------------------- */

/* Moves c to phase p; false (and no move) when the server is stopping and c would start reading. */
static bool set_phase(http_conn *c, phase p) {
    pthread_mutex_lock(&c->srv->lock);
    bool ok = p != PHASE_READING || !atomic_load(&c->srv->stopping);
    if (ok) c->phase = p;
    pthread_mutex_unlock(&c->srv->lock);
    return ok;
}

static void unregister(http_conn *c) {
    http_server *s = c->srv;
    pthread_mutex_lock(&s->lock);
    if (c->prev) c->prev->next = c->next;
    else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    if (--s->open == 0) pthread_cond_broadcast(&s->all_closed);
    pthread_mutex_unlock(&s->lock);
}

/* ---- one request ---------------------------------------------------------------------------------- */

typedef enum read_outcome { READ_OK, READ_REFUSED, READ_CLOSED } read_outcome;

/* Receives more bytes into dst[0..cap) before the deadline: how many, 0 at the client's end, -1 with
 * *why (408, or 503 when the server stops; 0: a broken connection) otherwise. Bytes that have already
 * arrived are taken even while the server stops: a request counts as arrived when its bytes have. */
static ssize_t receive(http_conn *c, char *dst, size_t cap, double deadline, int *why) {
    for (;;) {
        ssize_t n = recv(c->fd, dst, cap, MSG_DONTWAIT);
        if (n >= 0) return n;
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            *why = 0;
            return -1;
        }
        wait_result w = errno == EINTR ? WAIT_READY : wait_fd(c, POLLIN, deadline, true);
        if (w != WAIT_READY) {
            *why = w == WAIT_TIMEOUT ? 408 : w == WAIT_STOP ? 503 : 0;
            return -1;
        }
    }
}

static void refusal(http_error *err, int why, double read_timeout) {
    err->status = why;
    if (why == 408)
        snprintf(err->msg, sizeof err->msg, "the request did not arrive within %.0f s (--read-timeout)", read_timeout);
    else if (why == 503)
        snprintf(err->msg, sizeof err->msg, "the server is shutting down: the request had not fully arrived");
}

/* Where the head that starts at buf ends: the offset just past its empty line, or 0. Looks from
 * `from` on (earlier bytes were searched before); *lead: the line ends before the request line
 * (RFC 9112 section 2.2 lets a server skip them), counted across calls. */
static size_t head_end(const char *buf, size_t len, size_t from, size_t *lead) {
    while (*lead < len && (buf[*lead] == '\r' || buf[*lead] == '\n')) (*lead)++;
    for (size_t i = from > *lead + 2 ? from - 2 : *lead; i < len; i++) {
        if (buf[i] != '\n') continue;
        if (i + 1 < len && buf[i + 1] == '\n') return i + 2;
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') return i + 3;
    }
    return 0;
}

/* Reads a request's head into c->buf and parses it (h's strings point into c->buf, which keeps them
 * until the response is sent); *head_len: the bytes it took, and c->start is set past them.
 * READ_CLOSED: the client closed (or broke) the connection before a request began. */
static read_outcome read_head(http_conn *c, double deadline, http_head *h, size_t *head_len, http_error *err) {
    size_t scanned = 0, lead = 0;
    bool first_line_checked = false;
    for (;;) {
        bool whole = head_end(c->buf, c->len, scanned, &lead) != 0;
        scanned = c->len;
        /* parse once the head is whole, and once early when the request line is in: a line that
         * cannot start a request is refused before the client sends the rest */
        bool line_in = !first_line_checked && lead < c->len && memchr(c->buf + lead, '\n', c->len - lead) != NULL;
        if (whole || line_in || c->len >= HTTP_MAX_HEAD) {
            first_line_checked = first_line_checked || line_in;
            http_parse_result r = http_parse_head(c->buf, c->len, c->srv->o.max_body, h, head_len, err);
            if (r == HTTP_PARSE_DONE) {
                c->start = *head_len;
                return READ_OK;
            }
            if (r == HTTP_PARSE_ERROR) return READ_REFUSED;
        }
        int why;
        ssize_t n = receive(c, c->buf + c->len, HTTP_MAX_HEAD - c->len, deadline, &why);
        if (n <= 0) {
            bool began = lead < c->len; /* more than line ends were received */
            if (n == 0 || why == 0 || (!began && why == 503)) return READ_CLOSED;
            refusal(err, why, c->srv->o.read_timeout_s);
            return READ_REFUSED;
        }
        c->len += (size_t)n;
    }
}

/* Why a body stopped arriving: the client left (READ_CLOSED) or a deadline or the shutdown came. */
static read_outcome body_cut(http_conn *c, ssize_t n, int why, http_error *err) {
    if (n == 0 || why == 0) return READ_CLOSED;
    refusal(err, why, c->srv->o.read_timeout_s);
    return READ_REFUSED;
}

/* Reads the body that the head announced into body (NUL-terminated): first from the bytes behind the
 * head in c->buf, then from the socket. What follows the body stays in c->buf from c->start. */
static read_outcome read_body(http_conn *c, const http_head *h, size_t head_len, double deadline, vlr_buf *body,
                              http_error *err) {
    if (h->has_length) {
        uint64_t want = h->content_length;
        size_t here = c->len - c->start < want ? c->len - c->start : (size_t)want;
        vlr_buf_append(body, c->buf + c->start, here);
        c->start += here;
        while (body->len < want && !body->oom) {
            size_t chunk = want - body->len < RECV_CHUNK ? (size_t)(want - body->len) : RECV_CHUNK;
            int why;
            if (!vlr_buf_reserve(body, chunk)) break;
            ssize_t n = receive(c, body->data + body->len, chunk, deadline, &why);
            if (n <= 0) return body_cut(c, n, why, err);
            body->len += (size_t)n;
        }
    } else if (h->chunked) {
        http_chunked ch = {.max_body = c->srv->o.max_body};
        while (!ch.done && !body->oom) {
            if (c->start == c->len) { /* all consumed: the window behind the head takes the next bytes */
                c->start = c->len = head_len;
                int why;
                ssize_t n = receive(c, c->buf + c->len, CONN_BUF - c->len, deadline, &why);
                if (n <= 0) return body_cut(c, n, why, err);
                c->len += (size_t)n;
            }
            size_t used, got, avail = c->len - c->start;
            if (!vlr_buf_reserve(body, avail)) break;
            bool ok = http_chunked_feed(&ch, c->buf + c->start, avail, body->data + body->len, &used, &got, err);
            body->len += got;
            c->start += used;
            if (!ok) return READ_REFUSED;
        }
    }
    if (body->oom || !vlr_buf_reserve(body, 0)) {
        err->status = 503;
        snprintf(err->msg, sizeof err->msg, "out of memory reading the request");
        return READ_REFUSED;
    }
    body->data[body->len] = '\0';
    return READ_OK;
}

/* ---- a connection's thread ---------------------------------------------------------------------- */

/* Answers a refused request {"error": msg} and reports it; the connection closes after. */
static void refuse(http_conn *c, http_request *req, const http_error *err) {
    http_response resp = {.status = err->status, .close = true};
    cli_error_object(&resp.body, err->msg);
    bool head_only = req->head && strcmp(req->head->method, "HEAD") == 0;
    if (c->srv->o.refused) c->srv->o.refused(c->srv->o.ctx, req, resp.status, err->msg);
    send_response(c, &resp, head_only, true);
    c->linger = true; /* the rest of the request may still be on its way */
}

/* One request on c: read, handled, answered. False when the connection is to close. */
static bool serve_one(http_conn *c, double t0) {
    http_server *s = c->srv;
    double deadline = t0 + s->o.read_timeout_s;
    http_head h;
    http_error err = {0};
    size_t head_len = 0;
    http_request req = {.t0 = t0, .over = c->over, .conn = c};
    read_outcome got = read_head(c, deadline, &h, &head_len, &err);
    if (got == READ_CLOSED) return false;
    if (got == READ_REFUSED) {
        refuse(c, &req, &err);
        return false;
    }
    req.head = &h;
    bool body_follows = (h.has_length && h.content_length > 0) || h.chunked;
    if (h.expect_continue && h.minor == 1 && body_follows && c->len == c->start) {
        static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
        struct iovec iov = {(void *)go_on, sizeof go_on - 1};
        if (!send_all(c, &iov, 1)) return false;
    }
    vlr_buf body = {0};
    got = read_body(c, &h, head_len, deadline, &body, &err);
    if (got != READ_OK) {
        if (got == READ_REFUSED) refuse(c, &req, &err);
        vlr_buf_free(&body);
        return false;
    }
    /* the whole request is in: no deadline from here, and the shutdown waits for it */
    set_phase(c, PHASE_ANSWERING);
    req.body = body.data;
    req.body_len = body.len;
    http_response resp = {0};
    s->o.handler(s->o.ctx, &req, &resp);
    vlr_buf_free(&body);
    if (resp.status == 0) resp.status = 500;
    bool close = resp.close || c->over || !h.keep_alive || atomic_load(&s->stopping);
    bool sent = !resp.no_reply && send_response(c, &resp, strcmp(h.method, "HEAD") == 0, close);
    vlr_buf_free(&resp.body);
    /* the head is answered: a pipelined next request moves to the front */
    memmove(c->buf, c->buf + c->start, c->len - c->start);
    c->len -= c->start;
    c->start = 0;
    return sent && !close;
}

/* Closing a socket with received bytes unread makes the kernel answer with a reset, and a client that
 * has not yet read our last response may then lose it (a refused upload is still arriving, a
 * pipelined request was not answered). So: stop sending, then read and drop what comes until the
 * client closes, for at most LINGER_S (a quarter of it while the server stops: the drain waits). */
static void linger_close(http_conn *c) {
    shutdown(c->fd, SHUT_WR);
    double end = vlr_now() + (atomic_load(&c->srv->stopping) ? LINGER_S / 4 : LINGER_S);
    while (wait_fd(c, POLLIN, end, false) == WAIT_READY) {
        ssize_t n = recv(c->fd, c->buf, CONN_BUF, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
    }
}

static void *conn_main(void *arg) {
    http_conn *c = arg;
    http_server *s = c->srv;
    double t0 = vlr_now(); /* a connection's first request is under the read deadline from the accept */
    while (serve_one(c, t0)) {
        set_phase(c, PHASE_IDLE);
        if (c->len == 0) { /* wait for the next request (a pipelined one is already here) */
            wait_result w = wait_fd(c, POLLIN, s->o.idle_timeout_s > 0 ? vlr_now() + s->o.idle_timeout_s : 0, true);
            if (w != WAIT_READY) break;
        }
        t0 = vlr_now();
        if (!set_phase(c, PHASE_READING)) break; /* stopping: an idle connection just closes */
    }
    int unread = 0;
    if (c->linger || c->len > 0 || (ioctl(c->fd, FIONREAD, &unread) == 0 && unread > 0)) linger_close(c);
    close(c->fd);
    unregister(c);
    free(c->buf);
    free(c);
    return NULL;
}

/* ---- accepting ------------------------------------------------------------------------------------ */

static void peer_address(http_conn *c, const struct sockaddr_storage *sa) {
    c->family = sa->ss_family;
    if (sa->ss_family == AF_INET) memcpy(c->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa->ss_family == AF_INET6) memcpy(c->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

/* Registers a new connection (over the limits or not); NULL when max_open are open. */
static http_conn *admit(http_server *s, int fd, const struct sockaddr_storage *peer) {
    http_conn *c = calloc(1, sizeof *c);
    if (!c || !(c->buf = malloc(CONN_BUF))) {
        free(c);
        return NULL;
    }
    c->srv = s;
    c->fd = fd;
    c->phase = PHASE_READING;
    peer_address(c, peer);
    pthread_mutex_lock(&s->lock);
    size_t served = 0, same = 0;
    for (const http_conn *o = s->conns; o; o = o->next) {
        if (o->over) continue;
        served++;
        same += o->family == c->family && memcmp(o->addr, c->addr, sizeof c->addr) == 0;
    }
    bool full = s->open >= s->o.max_open;
    if (!full) {
        c->over = served >= s->o.max_conns || same >= s->o.per_ip;
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->open++;
    }
    pthread_mutex_unlock(&s->lock);
    if (full) {
        free(c->buf);
        free(c);
        return NULL;
    }
    return c;
}

static void *acceptor_main(void *arg) {
    http_server *s = arg;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        struct pollfd p[2] = {{.fd = s->listen_fd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        if (p[1].revents || atomic_load(&s->stopping)) break;
        if (!p[0].revents) continue;
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) usleep(10000);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        http_conn *c = admit(s, fd, &peer);
        pthread_t t;
        if (!c) {
            close(fd); /* beyond every limit: not even a 503 fits */
        } else if (pthread_create(&t, &attr, conn_main, c) != 0) {
            close(fd);
            unregister(c);
            free(c->buf);
            free(c);
        }
    }
    pthread_attr_destroy(&attr);
    return NULL;
}

/* ---- the server ------------------------------------------------------------------------------------ */

http_server *http_server_start(const http_server_opts *o, char *err, size_t err_cap) {
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    s->o = *o;
    s->listen_fd = s->stop_pipe[0] = s->stop_pipe[1] = -1;
    atomic_init(&s->stopping, false);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->all_closed, NULL);
    int one = 1;
    if (pipe2(s->stop_pipe, O_CLOEXEC) != 0 ||
        (s->listen_fd = socket(o->addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(s->listen_fd, o->addr, o->addr_len) != 0 || listen(s->listen_fd, SOMAXCONN) != 0) {
        snprintf(err, err_cap, "%s", strerror(errno));
        http_server_free(s);
        return NULL;
    }
    struct sockaddr_storage bound;
    socklen_t len = sizeof bound;
    if (getsockname(s->listen_fd, (struct sockaddr *)&bound, &len) == 0)
        s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                    : ((struct sockaddr_in *)&bound)->sin_port);
    if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
        snprintf(err, err_cap, "cannot start a thread");
        http_server_free(s);
        return NULL;
    }
    s->acceptor_running = true;
    return s;
}

unsigned http_server_port(const http_server *s) { return s->port; }

bool http_conn_client_gone(const http_conn *c) {
    /* the request has been read whole: what the socket can still say is that the peer closed
     * (POLLRDHUP: its FIN; a pipelined next request is data and keeps it wanted) */
    struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void http_server_count(http_server *s, size_t *served, size_t *over) {
    *served = *over = 0;
    pthread_mutex_lock(&s->lock);
    for (const http_conn *c = s->conns; c; c = c->next) {
        if (c->over) (*over)++;
        else (*served)++;
    }
    pthread_mutex_unlock(&s->lock);
}

static size_t count_phase(http_server *s, phase p, bool in_phase) {
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (const http_conn *c = s->conns; c; c = c->next) n += (c->phase == p) == in_phase;
    pthread_mutex_unlock(&s->lock);
    return n;
}

size_t http_server_answering(http_server *s) { return count_phase(s, PHASE_ANSWERING, true); }

size_t http_server_quiesce(http_server *s) {
    if (atomic_exchange(&s->stopping, true)) return 0;
    /* the pipe is never read: from now on every wait in every thread returns at once */
    if (s->stop_pipe[1] >= 0) {
        ssize_t w = write(s->stop_pipe[1], "x", 1); /* cannot fail but on a full pipe, readable too */
        (void)w;
    }
    if (s->acceptor_running) pthread_join(s->acceptor, NULL);
    s->acceptor_running = false;
    if (s->listen_fd >= 0) close(s->listen_fd);
    s->listen_fd = -1;
    return count_phase(s, PHASE_ANSWERING, false);
}

size_t http_server_open(http_server *s) {
    pthread_mutex_lock(&s->lock);
    size_t n = s->open;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void http_server_free(http_server *s) {
    if (!s) return;
    http_server_quiesce(s);
    pthread_mutex_lock(&s->lock);
    while (s->open) pthread_cond_wait(&s->all_closed, &s->lock);
    pthread_mutex_unlock(&s->lock);
    if (s->stop_pipe[0] >= 0) close(s->stop_pipe[0]);
    if (s->stop_pipe[1] >= 0) close(s->stop_pipe[1]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->all_closed);
    free(s);
}
