/* serve.h: the scoring service behind `vlreward serve`, without the HTTP. A pool of worker threads,
 * each owning one vlr_session (the model is shared read-only), takes requests from one FIFO queue
 * guarded by a mutex and a condition variable; serve_score_body() turns the body of a POST /score
 * (one request object, or {"requests": [...]}) into an HTTP status and a JSON reply; the image-path
 * policy keeps local image reads inside the image root. The queue is bounded (max_queue), and the
 * thread that waits for a body cancels its requests when nobody wants the reply any more or its
 * deadline passes (queued ones leave the queue unrun, running ones stop at the session's cancel
 * flag). The HTTP side (routing, signals, logging) is cmd_serve.c over http_server.c; identical bodies
 * in flight are shared by serve_dedup.c, /get_reward is serve_openrlhf.c, /metrics serve_metrics.c. */
#ifndef VLR_CLI_SERVE_H
#define VLR_CLI_SERVE_H

#include "cli.h"
#include "internal.h"

typedef struct serve_pool serve_pool;

typedef struct serve_opts {
    vlr_model *model;          /* shared, read-only; must outlive the pool */
    int workers;               /* sessions = worker threads, >= 1 */
    size_t vision_cache_bytes; /* one vision cache for all workers; 0 = off */
    size_t prefix_cache_bytes; /* one prefix cache for all workers; 0 = off */
    const char *image_root;    /* absolute folder that relative image paths resolve against */
    bool allow_any_path;       /* allow local images outside image_root */
    size_t max_batch;          /* requests in one body (413 beyond); also sets the JSON value cap */
    uint64_t max_batch_pixels; /* decoded + resized image pixels of one body, from the headers (413) */
    const vlr_fetch_policy *remote; /* which http(s) images are fetched (must outlive the pool) */
    uint64_t fetch_budget_bytes;    /* http(s) bytes one body may fetch */
    double fetch_budget_s;          /* and the time its fetches may take */
    bool quiet;                     /* no fetch failures in the log */
    size_t max_queue;          /* requests (batch items) waiting for a worker; more: 503 */
    double request_timeout_s;  /* a body's work is cancelled this long after it arrived (504); 0 = never */
    int64_t default_max_pixels; /* max_pixels of an image item that sets none; 0 = the model's */
    size_t max_images;         /* images in one request (batch item); 0 = no limit */
} serve_opts;

/* Creates the sessions and starts the workers. On failure nothing is left running. */
vlr_status serve_pool_start(const serve_opts *o, serve_pool **out, vlr_err *e);
/* Lets the workers finish what is queued, joins them, frees the sessions. NULL is a no-op. */
void serve_pool_stop(serve_pool *p);

/* JSON values a body may hold per request of --max-batch (a request of the documented shapes has a
 * few dozen), so that the parse of a body is bounded before it starts. */
#define SERVE_VALUES_PER_REQUEST 1024

/* The status of a body whose client went away before its reply (nginx's "client closed request"):
 * nothing is sent, the request log and /metrics show it. */
#define SERVE_STATUS_GONE 499

typedef struct serve_reply {
    int status;         /* HTTP status: 200, 400, 413, 422, 500, 503, 504, SERVE_STATUS_GONE */
    vlr_buf body;       /* JSON object, no trailing newline */
    uint64_t tokens;    /* tokens scored (after image placeholder expansion) */
    size_t n_requests;  /* 1 for a single request, else the batch size */
    bool batch;
    int retry_after;    /* > 0: a Retry-After header of that many seconds (503 queue full) */
} serve_reply;

/* Sets out to status and {"error": MESSAGE} (the message never cut inside a character). */
void serve_reply_error(serve_reply *out, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A reply whose body ran out of memory while it was written becomes 503 "out of memory". */
void serve_reply_check_oom(serve_reply *out);

/* How the thread that waits for a body's requests learns that nobody wants the reply any more (its
 * client disconnected, and no identical request joined it): wanted() is asked a few times a second
 * while the requests are queued or scored; once it says false, the queued ones are dropped without
 * running and the running ones cancelled (the session's cancel flag), and the reply is
 * SERVE_STATUS_GONE. NULL: always wanted. */
typedef struct serve_watch {
    bool (*wanted)(void *ctx);
    void *ctx;
} serve_watch;

/* Parses a body for an endpoint: empty, over the JSON value cap (413), invalid JSON (400) or not an
 * object (400) answer out (the message says the body should be `expected`) and give NULL. The
 * document is the caller's. */
vlr_json_doc *serve_parse_body(serve_pool *p, const char *body, size_t len, const char *expected, serve_reply *out);

/* Handles a POST /score body: bounds its JSON values (413), parses it, bounds a batch to max_batch
 * requests (413), then admits the requests one by one: each is checked (fields, image paths), its
 * http(s) images are fetched here, on the caller's thread, under the remote policy and the body's
 * fetch budget (a worker never waits on the network; the client gets a generic error, the log the
 * reason) and become data: URIs, and its images are costed from their headers (pixel cap, token
 * limit: a request that fails gets its error, nothing decoded); the body's pixels are charged
 * against max_batch_pixels (413 for the whole body when it runs out, before anything is queued). Then it queues what was admitted, waits for
 * the workers and writes {"id", "score"} / {"id", "error"} or {"results": [...]}: the reply holds one
 * short object per admitted request, so it is bounded by max_batch. Blocks the calling thread until
 * its requests are scored. Thread-safe. out->body is owned by the caller.
 * The queue holds at most max_queue requests: a body that does not fit gets 503 with Retry-After
 * (413 when it alone is larger). Past request_timeout_s from its start, what is left of a body is
 * cancelled and it gets 504; a body that w says is no longer wanted is cancelled too. */
void serve_score_body(serve_pool *p, const char *body, size_t len, const serve_watch *w, serve_reply *out);

/* Counters for GET /stats. */
typedef struct serve_stats {
    int workers;
    uint64_t busy;          /* workers scoring now */
    uint64_t queued;        /* requests waiting for a worker */
    uint64_t scored;        /* requests answered with a score, since start */
    uint64_t failed;        /* requests answered with an error (batch items included) */
    uint64_t tokens;        /* tokens of the scored requests */
    uint64_t cache_hits, cache_misses; /* vision cache, all workers (= caches.vision_hits, _misses) */
    vlr_cache_stats caches;  /* the shared vision and prefix cache: hits, bytes, reused tokens */
    uint64_t images;        /* images of the scored requests */
    uint64_t cancelled;     /* requests dropped from the queue or stopped mid-way: client gone or timeout */
    uint64_t timeouts;      /* bodies answered 504 (--request-timeout) */
    uint64_t queue_full;    /* bodies answered 503 because the queue was full (--max-queue) */
    uint64_t coalesced;     /* requests a worker ran in one batch with queued answers to the same prompt */
    size_t max_queue;
} serve_stats;
void serve_pool_stats(serve_pool *p, serve_stats *out);

/* The image-path policy: every local image source of req (a plain path or file://...) must stay,
 * read lexically, inside root: no absolute path elsewhere, no ".." that climbs above it. Remote
 * (http, https) and data: sources are not local reads and pass. Symbolic links under root are
 * trusted: whoever controls root's contents already chooses what the server can read. */
vlr_status serve_check_image_paths(const vlr_request *req, const char *root, vlr_err *e);

/* Copies s for the log, at most cap - 1 bytes, with control bytes replaced, so that a hostile URL
 * cannot forge log lines. */
void serve_log_safe(char *dst, size_t cap, const char *s);

#endif
