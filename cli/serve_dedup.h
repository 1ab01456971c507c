/* serve_dedup.h: identical requests in flight at the same time are computed once. An RL trainer
 * retries a request whose reply is late (OpenRLHF: 5 tries, 180 s each); without this, every retry
 * that arrives while the first is still queued or scored would be computed again. Two requests are
 * identical when they go to the same endpoint with the same body bytes.
 *
 * The first one (the leader) computes on its own thread; the others wait for its reply and get a
 * copy. The leader's work is wanted while its own client is connected or any follower still waits:
 * a leader whose client went away keeps computing for its followers, and the work is cancelled only
 * when nobody waits for it. A follower whose client goes away just stops waiting. The leader's
 * deadline (--request-timeout) bounds the work, and a follower gets its 504 with it. Once the reply
 * is out, the entry is gone: a later identical request is computed again. */
#ifndef VLR_CLI_SERVE_DEDUP_H
#define VLR_CLI_SERVE_DEDUP_H

#include "serve.h"

typedef struct serve_dedup serve_dedup;

serve_dedup *serve_dedup_new(void); /* NULL when out of memory */
void serve_dedup_free(serve_dedup *d);

/* The work of a leader: fills out; w tells it when nobody wants the reply any more. */
typedef void (*serve_compute_fn)(void *ctx, const char *body, size_t len, const serve_watch *w, serve_reply *out);

/* Answers out for a request to endpoint `route` with body: as a leader through compute, or as a
 * follower with a copy of an identical leader's reply (*followed set). client_gone(client) says
 * whether this request's own client went away (polled a few times a second); a follower that sees
 * it gone gets SERVE_STATUS_GONE. */
void serve_dedup_run(serve_dedup *d, int route, const char *body, size_t len, serve_compute_fn compute,
                     void *compute_ctx, bool (*client_gone)(void *client), void *client, serve_reply *out,
                     bool *followed);

/* Requests answered as followers, since start. */
uint64_t serve_dedup_followed(serve_dedup *d);

#endif
