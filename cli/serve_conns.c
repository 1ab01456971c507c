/* serve_conns.c: see serve_conns.h. */
#include "serve_conns.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"

typedef enum phase { PHASE_READING, PHASE_ANSWERING, PHASE_IDLE } phase;

typedef struct conn_slot {
    struct conn_slot *prev, *next;
    int fd;
    phase phase;
    double since;   /* reading: when the request started; idle: when the last response was sent */
    bool cut;       /* shut down by a deadline or the shutdown: nothing more is answered on it */
    bool over;      /* beyond the limits: answered 503, holds no slot */
    int family;     /* the client's address, for the per-address count */
    unsigned char addr[16];
} conn_slot;

struct serve_conns {
    pthread_mutex_t lock;
    conn_slot *head;
    double read_timeout, last_sweep;
    size_t max_conns, per_ip;
};

serve_conns *serve_conns_new(double read_timeout_s, size_t max_conns, size_t per_ip) {
    serve_conns *cs = calloc(1, sizeof *cs);
    if (!cs) return NULL;
    pthread_mutex_init(&cs->lock, NULL);
    cs->read_timeout = read_timeout_s;
    cs->max_conns = max_conns;
    cs->per_ip = per_ip;
    cs->last_sweep = vlr_now();
    return cs;
}

void serve_conns_free(serve_conns *cs) {
    if (!cs) return;
    while (cs->head) {
        conn_slot *s = cs->head;
        cs->head = s->next;
        free(s);
    }
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}

static void client_address(struct MHD_Connection *c, conn_slot *s) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = info ? info->client_addr : NULL;
    if (!sa) return;
    s->family = sa->sa_family;
    if (sa->sa_family == AF_INET) memcpy(s->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    else if (sa->sa_family == AF_INET6) memcpy(s->addr, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
}

void serve_conns_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                        enum MHD_ConnectionNotificationCode toe) {
    serve_conns *cs = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn_slot *s = calloc(1, sizeof *s);
        *socket_context = s;
        if (!s || !fd) return; /* untracked: libmicrohttpd's own limits still apply */
        s->fd = fd->connect_fd;
        s->phase = PHASE_READING;
        s->since = vlr_now();
        client_address(c, s);
        pthread_mutex_lock(&cs->lock);
        size_t all = 0, same = 0;
        for (const conn_slot *o = cs->head; o; o = o->next) {
            if (o->over) continue;
            all++;
            same += o->family == s->family && memcmp(o->addr, s->addr, sizeof s->addr) == 0;
        }
        s->over = all >= cs->max_conns || same >= cs->per_ip;
        s->next = cs->head;
        if (cs->head) cs->head->prev = s;
        cs->head = s;
        pthread_mutex_unlock(&cs->lock);
        return;
    }
    conn_slot *s = *socket_context;
    *socket_context = NULL;
    if (!s) return;
    /* CLOSED comes before libmicrohttpd closes the descriptor: once the slot is out of the list
     * under the lock, no sweep can shut down a descriptor number that gets reused. */
    pthread_mutex_lock(&cs->lock);
    if (s->prev || s->next || cs->head == s) {
        if (s->prev) s->prev->next = s->next;
        else cs->head = s->next;
        if (s->next) s->next->prev = s->prev;
    }
    pthread_mutex_unlock(&cs->lock);
    free(s);
}

static conn_slot *slot_of(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info ? info->socket_context : NULL;
}

bool serve_conns_answering(serve_conns *cs, struct MHD_Connection *c) {
    conn_slot *s = slot_of(c);
    if (!s) return true;
    pthread_mutex_lock(&cs->lock);
    bool cut = s->cut;
    if (!cut) s->phase = PHASE_ANSWERING;
    pthread_mutex_unlock(&cs->lock);
    return !cut;
}

bool serve_conns_over(struct MHD_Connection *c) {
    const conn_slot *s = slot_of(c);
    return s && s->over; /* set before the connection's first request: no lock needed */
}

bool serve_conns_client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *fd = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!fd) return false;
    /* the request has been read whole: what the socket can still say is that the peer closed
     * (POLLRDHUP: its FIN; a pipelined next request is data and keeps it wanted) */
    struct pollfd p = {.fd = fd->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

void serve_conns_reading(serve_conns *cs, struct MHD_Connection *c) {
    conn_slot *s = slot_of(c);
    if (!s) return;
    pthread_mutex_lock(&cs->lock);
    if (s->phase == PHASE_IDLE) {
        s->phase = PHASE_READING;
        s->since = cs->last_sweep; /* it began after the sweep that still saw it idle */
    }
    pthread_mutex_unlock(&cs->lock);
}

void serve_conns_idle(serve_conns *cs, struct MHD_Connection *c) {
    conn_slot *s = slot_of(c);
    if (!s) return;
    pthread_mutex_lock(&cs->lock);
    s->phase = PHASE_IDLE;
    s->since = vlr_now();
    pthread_mutex_unlock(&cs->lock);
}

/* Writes a whole small response without blocking (the socket's buffer takes it whole or the client is
 * not reading: either way the connection is closed next) and shuts the socket down. The connection's
 * thread, blocked in poll(), then sees the end and closes it. */
static void cut(conn_slot *s, int status, const char *reason, const char *message) {
    char body[256], head[512];
    snprintf(body, sizeof body, "{\"error\": \"%s\"}\n", message);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s", status, reason, strlen(body), body);
    if (n > 0 && (size_t)n < sizeof head) (void)send(s->fd, head, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    shutdown(s->fd, SHUT_RDWR);
    s->cut = true;
}

/* An idle connection whose kernel counters show data received after its last response: the next
 * request has begun. (tcpi_last_data_recv has jiffy resolution: 20 ms of margin.) */
static bool data_since(const conn_slot *s, double now) {
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (getsockopt(s->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return false;
    return now - ti.tcpi_last_data_recv / 1000.0 > s->since + 0.02;
}

size_t serve_conns_sweep(serve_conns *cs) {
    size_t n = 0;
    double now = vlr_now();
    pthread_mutex_lock(&cs->lock);
    for (conn_slot *s = cs->head; s; s = s->next) {
        if (s->cut) continue;
        if (s->phase == PHASE_IDLE && data_since(s, now)) {
            s->phase = PHASE_READING;
            s->since = cs->last_sweep;
        }
        if (s->phase == PHASE_READING && now - s->since > cs->read_timeout) {
            char msg[160];
            snprintf(msg, sizeof msg, "the request did not arrive within %.0f s (--read-timeout)", cs->read_timeout);
            cut(s, 408, "Request Timeout", msg);
            n++;
        }
    }
    cs->last_sweep = now;
    pthread_mutex_unlock(&cs->lock);
    return n;
}

size_t serve_conns_cut_unfinished(serve_conns *cs) {
    size_t n = 0;
    pthread_mutex_lock(&cs->lock);
    for (conn_slot *s = cs->head; s; s = s->next) {
        if (s->cut || s->phase == PHASE_ANSWERING) continue;
        if (s->phase == PHASE_READING) {
            cut(s, 503, "Service Unavailable", "the server is shutting down: the request had not fully arrived");
        } else {
            shutdown(s->fd, SHUT_RDWR); /* idle: nothing to answer */
            s->cut = true;
        }
        n++;
    }
    pthread_mutex_unlock(&cs->lock);
    return n;
}

void serve_conns_count(serve_conns *cs, size_t *served, size_t *over) {
    *served = *over = 0;
    pthread_mutex_lock(&cs->lock);
    for (const conn_slot *s = cs->head; s; s = s->next) {
        if (s->over) (*over)++;
        else (*served)++;
    }
    pthread_mutex_unlock(&cs->lock);
}

size_t serve_conns_answering_count(serve_conns *cs) {
    size_t n = 0;
    pthread_mutex_lock(&cs->lock);
    for (conn_slot *s = cs->head; s; s = s->next) n += !s->cut && s->phase == PHASE_ANSWERING;
    pthread_mutex_unlock(&cs->lock);
    return n;
}
