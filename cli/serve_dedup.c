/* serve_dedup.c: see serve_dedup.h. The entries in flight are few (one per distinct request being
 * computed, at most one per connection), so a list with a hash in front of memcmp is enough. */
#include "serve_dedup.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct entry {
    struct entry *next;
    int route;
    uint64_t hash;
    const char *body; /* the leader's, alive while the entry is listed */
    size_t len;
    size_t followers; /* waiting now */
    size_t refs;      /* the leader (until it publishes) + the followers: the last one frees */
    bool done;
    bool abandoned; /* nobody wanted it: its work is being cancelled, a newcomer must not join it */
    serve_reply reply; /* a copy of the leader's, once done (only when someone follows) */
    pthread_cond_t ready;
    bool (*client_gone)(void *);
    void *client;
    serve_dedup *owner;
} entry;

struct serve_dedup {
    pthread_mutex_t lock;
    entry *head;
    uint64_t followed;
};

serve_dedup *serve_dedup_new(void) {
    serve_dedup *d = calloc(1, sizeof *d);
    if (d) pthread_mutex_init(&d->lock, NULL);
    return d;
}

void serve_dedup_free(serve_dedup *d) {
    if (!d) return;
    pthread_mutex_destroy(&d->lock); /* every entry is freed by its last user */
    free(d);
}

uint64_t serve_dedup_followed(serve_dedup *d) {
    pthread_mutex_lock(&d->lock);
    uint64_t n = d->followed;
    pthread_mutex_unlock(&d->lock);
    return n;
}

/* FNV-1a: a cheap filter; equality is decided by memcmp. */
static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h;
}

static void release(entry *e) { /* lock held */
    if (--e->refs) return;
    vlr_buf_free(&e->reply.body);
    pthread_cond_destroy(&e->ready);
    free(e);
}

/* The leader's work is wanted while its client is there or someone follows it. */
static bool leader_wanted(void *ctx) {
    entry *e = ctx;
    bool gone = e->client_gone(e->client);
    pthread_mutex_lock(&e->owner->lock);
    bool wanted = !gone || e->followers > 0;
    if (!wanted) e->abandoned = true;
    pthread_mutex_unlock(&e->owner->lock);
    return wanted;
}

static void copy_reply(const serve_reply *from, serve_reply *to) {
    vlr_buf body = to->body;
    *to = *from;
    body.len = 0;
    vlr_buf_append(&body, from->body.data ? from->body.data : "", from->body.len);
    to->body = body;
    if (body.oom) { /* the status stands; the body says why it is not the leader's */
        vlr_buf_free(&to->body);
        to->status = 503;
        vlr_buf_puts(&to->body, "{\"error\": \"out of memory copying the reply\"}");
    }
}

static void follow(serve_dedup *d, entry *e, bool (*client_gone)(void *), void *client, serve_reply *out) {
    e->followers++;
    e->refs++;
    d->followed++;
    bool gone = false;
    while (!e->done && !gone) {
        const struct timespec t = vlr_realtime_after(100 * 1000 * 1000);
        pthread_cond_timedwait(&e->ready, &d->lock, &t);
        if (e->done) break;
        pthread_mutex_unlock(&d->lock);
        gone = client_gone(client);
        pthread_mutex_lock(&d->lock);
    }
    e->followers--;
    if (e->done) {
        copy_reply(&e->reply, out);
    } else {
        out->status = SERVE_STATUS_GONE;
        out->body.len = 0;
        vlr_buf_puts(&out->body, "{\"error\": \"the client went away\"}");
    }
    release(e);
}

void serve_dedup_run(serve_dedup *d, int route, const char *body, size_t len, serve_compute_fn compute,
                     void *compute_ctx, bool (*client_gone)(void *client), void *client, serve_reply *out,
                     bool *followed) {
    uint64_t hash = fnv1a(body, len);
    *followed = false;
    pthread_mutex_lock(&d->lock);
    for (entry *e = d->head; e; e = e->next) {
        if (e->done || e->abandoned || e->route != route || e->hash != hash || e->len != len || memcmp(e->body, body, len) != 0)
            continue;
        *followed = true;
        follow(d, e, client_gone, client, out);
        pthread_mutex_unlock(&d->lock);
        return;
    }
    entry *e = calloc(1, sizeof *e);
    if (!e) { /* no sharing, still an answer */
        pthread_mutex_unlock(&d->lock);
        serve_watch w = {NULL, NULL};
        compute(compute_ctx, body, len, &w, out);
        return;
    }
    *e = (entry){.route = route, .hash = hash, .body = body, .len = len, .refs = 1,
                 .client_gone = client_gone, .client = client, .owner = d};
    pthread_cond_init(&e->ready, NULL);
    e->next = d->head;
    d->head = e;
    pthread_mutex_unlock(&d->lock);

    serve_watch w = {leader_wanted, e};
    compute(compute_ctx, body, len, &w, out);

    pthread_mutex_lock(&d->lock);
    for (entry **at = &d->head; *at; at = &(*at)->next) {
        if (*at == e) {
            *at = e->next;
            break;
        }
    }
    e->done = true;
    e->body = NULL;
    if (e->followers) copy_reply(out, &e->reply);
    pthread_cond_broadcast(&e->ready);
    release(e);
    pthread_mutex_unlock(&d->lock);
}
