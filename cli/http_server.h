/* http_server.h: the HTTP/1.1 server under `vlreward serve`: sockets, one thread per connection,
 * request framing (http_parse.h), deadlines, limits and a draining shutdown. The handler sees only
 * whole requests; every answer, the server's own refusals included, is JSON.
 *
 * Why not libmicrohttpd (the server before this file): its own answers to malformed requests (400, 413, 414, 431,
 * 505) are fixed HTML pages, some malformed requests are closed with no answer at all, connections
 * beyond its limits are reset, and its idle timeout restarts on every byte, so a request can trickle
 * forever; 0.9.75 (Debian 12) has no hook for any of these. Workarounds covered the last two (a
 * sweeper reading the kernel's TCP counters, limits set above ours); nothing could cover the first.
 *
 * A connection is in one of three phases:
 *   reading    its request (head and body) is arriving: it must be complete within read_timeout_s of
 *              its first byte (of the accept, for a connection's first request), however steadily
 *              the bytes trickle; later: 408, closed;
 *   answering  the request is complete and the handler runs, then the response is sent;
 *   idle       kept alive between requests, for at most idle_timeout_s.
 * Connections beyond max_conns (or per_ip from one address) are read like any other and passed to
 * the handler marked `over` (it answers 503); the connection closes after. Beyond max_open the
 * server closes a new connection at once. Shutdown (http_server_quiesce) stops accepting, answers 503
 * to the requests still arriving, closes idle connections and lets the answering ones finish. */
#ifndef VLR_CLI_HTTP_SERVER_H
#define VLR_CLI_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "http_parse.h"
#include "internal.h"

typedef struct http_server http_server;
typedef struct http_conn http_conn;

typedef struct http_request {
    const http_head *head; /* NULL in http_refused for a request whose head was refused */
    const char *body;      /* the whole body, NUL-terminated ("" when there is none) */
    size_t body_len;
    bool over;             /* the connection is beyond the limits: answer 503; it closes after */
    double t0;             /* when the request began (vlr_now) */
    http_conn *conn;       /* for http_conn_client_gone */
} http_request;

typedef struct http_response {
    int status;
    vlr_buf body;             /* taken over by the server (a newline is added) */
    const char *content_type; /* NULL: application/json */
    const char *allow;        /* an Allow header (405) */
    int retry_after;          /* > 0: a Retry-After header of that many seconds */
    bool close;               /* end the connection after this response */
    bool no_reply;            /* nobody to answer (the client is gone): close without a response */
} http_response;

/* On the connection's thread, once a request has fully arrived: fill resp (status 0 is 500). */
typedef void (*http_handler)(void *ctx, const http_request *req, http_response *resp);
/* When the server answers a request itself (malformed, too large, late, cut by the shutdown), before
 * it sends {"error": message} with that status. */
typedef void (*http_refused)(void *ctx, const http_request *req, int status, const char *message);

typedef struct http_server_opts {
    const struct sockaddr *addr; /* where to listen */
    socklen_t addr_len;
    size_t max_conns, per_ip;    /* connections served at once, in all and from one address */
    size_t max_open;             /* open at once, `over` ones included (>= max_conns) */
    double read_timeout_s;       /* > 0 */
    double idle_timeout_s;       /* 0: never */
    uint64_t max_body;           /* bytes; a larger body gets 413 */
    http_handler handler;
    http_refused refused;        /* may be NULL */
    void *ctx;
} http_server_opts;

/* Binds, listens and starts accepting. NULL with a message in err when it cannot. */
http_server *http_server_start(const http_server_opts *o, char *err, size_t err_cap);
/* The bound port (the one chosen when the address asked for port 0). */
unsigned http_server_port(const http_server *s);
/* True when the client of a request being answered has closed its end: nobody reads the reply. */
bool http_conn_client_gone(const http_conn *c);
/* Open connections: *served hold a slot, *over are being answered 503. */
void http_server_count(http_server *s, size_t *served, size_t *over);
/* Connections whose request is being answered. */
size_t http_server_answering(http_server *s);
/* Stops accepting and cuts every connection that is not being answered (503 to a request still
 * arriving, idle ones closed). Returns how many it cut. */
size_t http_server_quiesce(http_server *s);
/* Connections still open (after quiesce: those being answered). */
size_t http_server_open(http_server *s);
/* Quiesces if not done, waits for every connection's thread to end, frees. NULL is a no-op. */
void http_server_free(http_server *s);

#endif
