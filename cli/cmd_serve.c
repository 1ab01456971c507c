/* cmd_serve.c: `vlreward serve`: rewards over HTTP for RL training loops (GRPO, PPO...), with
 * libmicrohttpd. POST /score takes one request (the `vlreward score` line format) or
 * {"requests": [...]}; GET /health, GET /info and GET /stats report liveness, the architecture and
 * counters.
 *
 * Threads: libmicrohttpd runs one thread per connection (a connection whose request waits for a
 * worker blocks only itself, and /health answers while every worker is busy); scoring happens on
 * the --workers threads of serve.c, each with its own session, the model shared read-only. Scores
 * are those of `vlreward score` bit for bit (same library call, results independent of the thread
 * count and of the vision cache).
 *
 * Signals: SIGINT/SIGTERM are blocked in every thread and taken by the main thread with
 * sigtimedwait, which also wakes it four times a second to enforce the read deadline. The first
 * closes the listening socket, closes the connections whose request has not fully arrived, answers
 * the requests that have (adding "Connection: close") within --drain-timeout, then stops and exits
 * 0; a second signal, or the drain timeout, exits at once with status 1.
 *
 * Not here: the worker pool, body parsing and the image-path policy (serve.c); the connection
 * registry behind the read deadline and the shutdown's cuts (serve_conns.c). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache_opts.h"
#include "internal.h"
#include "serve.h"
#include "serve_conns.h"
#include "serve_dedup.h"
#include "serve_metrics.h"
#include "serve_openrlhf.h"

static const char help[] =
    "usage: vlreward serve --model DIR [--host 127.0.0.1] [--port 8000] [--workers N] [--threads N]\n"
    "                      [--image-root DIR] [--allow-any-path] [--remote-images off|on|LIST]\n"
    "                      [--fetch-budget-mb 256] [--fetch-budget-s 120] [--max-body-mb 64] [--max-tokens N]\n"
    "                      [--max-batch 1024] [--max-image-pixels 33554432] [--max-batch-pixels 4294967296]\n"
    "                      [--vision-cache MB] [--prefix-cache MB] [--max-connections 64] [--max-connections-per-ip N]\n"
    "                      [--max-queue 4096] [--request-timeout S] [--max-pixels N] [--max-images N]\n"
    "                      [--fallback-reward X] [--read-timeout 30] [--idle-timeout 300] [--drain-timeout 120]\n"
    "                      [--quiet]\n"
    "\n"
    "Serves rewards over HTTP (see docs/serve.md). Responses are application/json (/metrics: text).\n"
    "  POST /score   one request ({\"id\", \"messages\"} or {\"id\", \"image\"|\"images\", \"question\",\n"
    "                \"answer\"}, as in `vlreward score`) -> 200 {\"id\", \"score\"}, or 422 {\"id\", \"error\"};\n"
    "                or {\"requests\": [...]} -> 200 {\"results\": [{\"id\", \"score\"} | {\"id\", \"error\"}, ...]}\n"
    "                in order. Invalid JSON -> 400; a body over --max-body-mb, a batch over --max-batch,\n"
    "                images over --max-batch-pixels -> 413; a request not arrived in --read-timeout -> 408.\n"
    "  POST /get_reward  OpenRLHF's remote reward model: {\"query\": [TEXT, ...], \"prompts\", \"labels\"} ->\n"
    "                {\"rewards\", \"scores\", \"extra_logs\"}; each query a Qwen-templated conversation ending\n"
    "                with the assistant turn, images in \"images\": [[SRC, ...], ...] or a label {\"images\": [...]}\n"
    "  Identical bodies in flight at once are computed once. A full queue or a connection beyond the\n"
    "  limits -> 503 with Retry-After; past --request-timeout -> 504; a client that disconnects cancels.\n"
    "  GET /health   {\"status\": \"ok\"}\n"
    "  GET /info     the object of `vlreward info --json` plus \"version\"\n"
    "  GET /stats    counters: workers, busy_workers, queued, in_flight, scored, failed, tokens, ...\n"
    "  GET /metrics  the same and more in the Prometheus text format (vlreward_*)\n"
    "\n"
    "  --model DIR           model directory, or ORG/NAME[@REV] from the Hugging Face cache\n"
    "  --host ADDR           address to bind (default 127.0.0.1, loopback only); 0.0.0.0 or :: expose\n"
    "                        the server, which reads local images (and fetches the URLs that\n"
    "                        --remote-images allows), to the network\n"
    "  --port N              TCP port (default 8000; 0 picks a free one). Once ready the server prints\n"
    "                        \"listening on http://HOST:PORT\" on stderr\n"
    "  --workers N           requests scored at the same time, one session each (default 1: on a small\n"
    "                        machine one request at a time with all threads is the fastest)\n"
    "  --threads N           threads per request (default: CPUs / workers); scores do not depend on it\n"
    "  --image-root DIR      folder that relative image paths resolve against (default: current)\n"
    "  --allow-any-path      also read local images outside the image root (absolute paths, \"..\")\n"
    "  --remote-images P     http(s) images: off, on (public addresses only) or a comma-separated\n"
    "                        allowlist of hosts and CIDR blocks (default: on when bound to loopback,\n"
    "                        else off); checked on the address each connection goes to\n"
    "  --fetch-budget-mb MB  http(s) bytes one body may fetch (default 256)\n"
    "  --fetch-budget-s S    and seconds its fetches may take (default 120)\n"
    "  --max-body-mb MB      largest request body (default 64); larger ones get 413\n"
    "  --max-tokens N        refuse requests longer than N tokens (default: the model's context); an\n"
    "                        image's tokens are checked from its header, before it is decoded\n"
    "  --max-batch N         requests in one body (default 1024); a larger batch gets 413\n"
    "  --max-image-pixels N  refuse an image whose header declares more pixels (default 33554432 =\n"
    "                        2^25, e.g. 8192x4096), or that would be resized to more\n"
    "  --max-batch-pixels N  decoded + resized pixels of all images of one body, from their headers\n"
    "                        (default 4294967296 = 2^32); a body that needs more gets 413\n"
    "  --precision P         auto (default: bf16 where this CPU runs it faster), f32 (exact), bf16, int8\n"
    "  --int8-cache          int8: keep the quantized weights in DIR/vlreward-int8.bin (see score --help)\n"
    "  --vision-cache MB     reuse vision-tower outputs of identical images, one cache for all workers\n"
    "                        (default 512, 0 = off); scores are bit-identical either way\n"
    "  --prefix-cache MB     keep the K/V rows of scored prefixes for all workers (16-token blocks,\n"
    "                        least recently used dropped first; 112 KiB a token at 7B), so interleaved\n"
    "                        prompts keep their reuse (default 1024, 0 = off); bit-identical either way\n"
    "  --max-connections N   simultaneous connections (default 64); more get 503 with Retry-After\n"
    "  --max-connections-per-ip N  simultaneous connections from one address (default: half of\n"
    "                        --max-connections); more get 503 with Retry-After\n"
    "  --max-queue N         requests (batch items) waiting for a worker (default 4096); a body that\n"
    "                        does not fit gets 503 with Retry-After\n"
    "  --request-timeout S   cancel a body's work S seconds after it arrived: 504 (default 0 = never)\n"
    "  --max-pixels N        max_pixels of an image that sets none (default: the model's preprocessor)\n"
    "  --max-images N        images in one request (default 0 = no limit); more: 422\n"
    "  --fallback-reward X   /get_reward: the reward of a sample that cannot be scored (default: the\n"
    "                        call fails with 422)\n"
    "  --read-timeout S      a request's headers and body must arrive within S seconds of its start\n"
    "                        (default 30), however steadily the bytes trickle; later: 408, closed\n"
    "  --idle-timeout S      close a connection idle for S seconds (default 300, 0 = never)\n"
    "  --drain-timeout S     on SIGINT/SIGTERM, wait at most S seconds for the requests that had fully\n"
    "                        arrived (default 120), then exit 1\n"
    "  --quiet               no startup summary and no per-request log lines on stderr\n"
    "\n"
    "SIGINT/SIGTERM: stop accepting, close the connections whose request has not fully arrived, finish\n"
    "the others, exit 0 (a second signal, or --drain-timeout: exit 1).\n"
    "exit status: 0 after a signal, 1 the model did not load, the address could not be bound or the\n"
    "drain timed out, 2 usage error\n";

typedef struct server {
    serve_pool *pool;
    serve_dedup *dedup;    /* identical bodies in flight computed once */
    serve_metrics *metrics;
    double fallback_reward; /* /get_reward: the reward of a sample that cannot be scored; NaN = none */
    serve_conns *conns;    /* read deadlines and the shutdown's cuts (serve_conns.h) */
    size_t max_body;       /* bytes */
    long max_body_mb;
    bool quiet;
    atomic_bool stopping;  /* set by the main thread on the first signal */
    atomic_long in_flight; /* requests presented to on_request and not yet completed */
    atomic_long scoring;   /* of those, POST /score requests (for /stats) */
    double t_start;
    char *info_json;       /* the /info body, built once */
} server;

typedef enum route {
    ROUTE_NONE = 0, ROUTE_SCORE, ROUTE_GET_REWARD, ROUTE_HEALTH, ROUTE_INFO, ROUTE_STATS, ROUTE_METRICS, N_ROUTES
} route;
/* the paths, and the labels of /metrics (an unknown path counts as "other") */
static const char *const route_names[N_ROUTES] = {"other", "/score", "/get_reward", "/health", "/info", "/stats",
                                                  "/metrics"};

/* What one HTTP request carries between the calls of on_request. */
typedef struct conn_req {
    double t0;
    vlr_buf body;
    int route;       /* enum route */
    bool keep_body;  /* a POST /score: the body is read into body */
    bool counted;    /* counted in server.scoring until answered */
    bool too_large;  /* the body passed max_body: the rest is dropped, 413 at the end */
    bool answered;   /* a response is queued */
    bool close;      /* end the connection after the response (ambiguous framing) */
    bool over;       /* the connection is beyond --max-connections(-per-ip): 503 */
    bool shared;     /* answered with the reply of an identical body in flight */
    int retry_after; /* > 0: a Retry-After header */
    const char *content_type; /* NULL: application/json */
} conn_req;

/* ---- /info ----------------------------------------------------------------------------------- */

/* The object of `vlreward info --json` plus "version" (tests/test_serve.c compares the two). */
static char *info_json(const vlr_model *m) {
    vlr_buf b = {0};
    cli_info_json(m, VLR_VERSION, &b);
    if (b.oom) vlr_buf_free(&b);
    return b.data;
}

/* ---- responses and the request log --------------------------------------------------------- */

static void log_request(const server *s, const char *method, const char *url, int status, const conn_req *r,
                        uint64_t tokens, const serve_reply *reply) {
    if (s->quiet) return;
    char m[16], u[256], batch[48] = "";
    serve_log_safe(m, sizeof m, method);
    serve_log_safe(u, sizeof u, url);
    if (reply && reply->batch) snprintf(batch, sizeof batch, " (batch of %zu)", reply->n_requests);
    /* one fprintf: stdio locks stderr per call, so concurrent lines never interleave */
    fprintf(stderr, "%s %s %d %.1f ms %llu tokens%s%s\n", m, u, status, (vlr_now() - r->t0) * 1e3,
            (unsigned long long)tokens, batch, r->shared ? " (shared with an identical request)" : "");
}

/* Queues body (taken over: freed by libmicrohttpd once sent) with the given status. */
static enum MHD_Result respond(server *s, struct MHD_Connection *c, conn_req *r, const char *method,
                               const char *url, int status, vlr_buf *body, const char *allow,
                               const serve_reply *reply) {
    if (r->counted) { /* answered: no longer in flight for /stats */
        r->counted = false;
        atomic_fetch_sub(&s->scoring, 1);
    }
    vlr_buf_puts(body, "\n");
    if (body->oom) {
        vlr_buf_free(body);
        return MHD_NO; /* libmicrohttpd closes the connection */
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(body->len, body->data, free);
    if (!resp) {
        vlr_buf_free(body);
        return MHD_NO;
    }
    memset(body, 0, sizeof *body);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type ? r->content_type : "application/json");
    if (allow) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    int retry_after = reply && reply->retry_after ? reply->retry_after : r->retry_after;
    if (retry_after > 0) {
        char seconds[16];
        snprintf(seconds, sizeof seconds, "%d", retry_after);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    /* while shutting down, let every kept-alive connection end with this response */
    if (r->close || atomic_load(&s->stopping)) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    r->answered = true;
    serve_metrics_record(s->metrics, r->route, status, vlr_now() - r->t0);
    log_request(s, method, url, status, r, reply ? reply->tokens : 0, reply);
    return ok;
}

static enum MHD_Result respond_error(server *s, struct MHD_Connection *c, conn_req *r, const char *method,
                                     const char *url, int status, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
static enum MHD_Result respond_error(server *s, struct MHD_Connection *c, conn_req *r, const char *method,
                                     const char *url, int status, const char *allow, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vlr_vsnprintf_utf8(msg, sizeof msg, fmt, ap);
    va_end(ap);
    vlr_buf b = {0};
    vlr_buf_puts(&b, "{\"error\": ");
    vlr_buf_json_string(&b, msg, strlen(msg));
    vlr_buf_puts(&b, "}");
    return respond(s, c, r, method, url, status, &b, allow, NULL);
}

/* ---- /stats ---------------------------------------------------------------------------------- */

static void stats_json(server *s, vlr_buf *b) {
    serve_stats st;
    serve_pool_stats(s->pool, &st);
    vlr_jw w;
    vlr_jw_init(&w, b, 0);
    vlr_jw_object(&w);
    vlr_jw_key(&w, "uptime_s");
    vlr_jw_fixed(&w, vlr_now() - s->t_start, 1);
    vlr_jw_key_int(&w, "workers", st.workers);
    vlr_jw_key_uint(&w, "busy_workers", st.busy);
    vlr_jw_key_uint(&w, "queued", st.queued);
    vlr_jw_key_int(&w, "in_flight", atomic_load(&s->scoring));
    vlr_jw_key_uint(&w, "scored", st.scored);
    vlr_jw_key_uint(&w, "failed", st.failed);
    vlr_jw_key_uint(&w, "tokens", st.tokens);
    vlr_jw_key_uint(&w, "vision_cache_hits", st.cache_hits);
    vlr_jw_key_uint(&w, "vision_cache_misses", st.cache_misses);
    vlr_jw_key_uint(&w, "reused_tokens", st.caches.reused_tokens);
    vlr_jw_key(&w, "reuse");
    vlr_jw_fixed(&w, st.caches.tokens ? (double)st.caches.reused_tokens / (double)st.caches.tokens : 0.0, 4);
    vlr_jw_key_uint(&w, "prefix_cache_hits", st.caches.prefix_hits);
    vlr_jw_key_uint(&w, "prefix_cache_misses", st.caches.prefix_misses);
    vlr_jw_key_uint(&w, "prefix_cache_bytes", st.caches.prefix_bytes);
    vlr_jw_key_uint(&w, "vision_cache_bytes", st.caches.vision_bytes);
    vlr_jw_key_uint(&w, "deduplicated", serve_dedup_followed(s->dedup));
    vlr_jw_key_uint(&w, "cancelled", st.cancelled);
    vlr_jw_key_uint(&w, "timeouts", st.timeouts);
    vlr_jw_key_uint(&w, "queue_full", st.queue_full);
    vlr_jw_end(&w);
}

/* Prometheus text format: the body does not end in a newline here, respond() adds it. */
static void metrics_text(server *s, conn_req *r, vlr_buf *b) {
    serve_stats st;
    serve_pool_stats(s->pool, &st);
    serve_gauges g = {.in_flight = atomic_load(&s->scoring), .deduplicated = serve_dedup_followed(s->dedup)};
    serve_conns_count(s->conns, &g.connections, &g.connections_over);
    serve_metrics_render(s->metrics, &st, &g, b);
    if (b->len && b->data[b->len - 1] == '\n') b->data[--b->len] = '\0';
    r->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- routing --------------------------------------------------------------------------------- */

static bool is_get(const char *method) {
    return strcmp(method, MHD_HTTP_METHOD_GET) == 0 || strcmp(method, MHD_HTTP_METHOD_HEAD) == 0;
}

static route route_of(const char *url) {
    for (int r = ROUTE_NONE + 1; r < N_ROUTES; r++)
        if (strcmp(url, route_names[r]) == 0) return (route)r;
    return ROUTE_NONE;
}

static bool scores(route r) { return r == ROUTE_SCORE || r == ROUTE_GET_REWARD; }

/* The framing headers of a request, as sent (libmicrohttpd keeps every header line). */
typedef struct framing {
    int content_length, transfer_encoding;
    bool chunked_only; /* the (single) Transfer-Encoding is exactly "chunked" */
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    framing *f = cls;
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) f->content_length++;
    if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        f->transfer_encoding++;
        f->chunked_only = value && strcasecmp(value, "chunked") == 0;
    }
    return MHD_YES;
}

/* RFC 9112 section 6.3: a message with both Transfer-Encoding and Content-Length, or with several
 * Content-Length headers, has no reliable end; libmicrohttpd 0.9.75 would take the first header it
 * finds (the rest of the bytes then read as a smuggled next request). Such a request gets 400 and the
 * connection is closed after it, so nothing it carries is read as a request. NULL when the framing is
 * sound. */
static const char *framing_problem(struct MHD_Connection *c) {
    framing f = {0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_framing, &f);
    if (f.transfer_encoding && f.content_length)
        return "both Transfer-Encoding and Content-Length: the body's end is ambiguous";
    if (f.content_length > 1) return "more than one Content-Length header";
    if (f.transfer_encoding > 1 || (f.transfer_encoding && !f.chunked_only))
        return "a Transfer-Encoding other than a single \"chunked\"";
    return NULL;
}

/* The first call for a request: headers are in, the body (if any) is not. Ambiguous framing and a
 * POST /score whose declared length is over the cap are answered now (400, 413), before the body is
 * read (a client that sent "Expect: 100-continue" then never sends it; libmicrohttpd closes the
 * connection after). The rest is answered once the request is complete, which keeps the connection
 * alive. */
static enum MHD_Result on_headers(server *s, struct MHD_Connection *c, conn_req *r, const char *url,
                                  const char *method) {
    r->route = route_of(url);
    serve_conns_reading(s->conns, c);
    const char *bad_framing = framing_problem(c);
    if (bad_framing) {
        r->close = true;
        if (!serve_conns_answering(s->conns, c)) return MHD_NO;
        return respond_error(s, c, r, method, url, 400, NULL, "bad request framing: %s", bad_framing);
    }
    /* beyond the connection limits: read (and drop) the request, answer 503 once it is in */
    if ((r->over = serve_conns_over(c))) return MHD_YES;
    if (!scores(r->route) || strcmp(method, MHD_HTTP_METHOD_POST) != 0) return MHD_YES;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno == 0 && end != cl && n > s->max_body) {
            if (!serve_conns_answering(s->conns, c)) return MHD_NO;
            return respond_error(s, c, r, method, url, 413, NULL,
                                 "request body of %llu bytes is over the %ld MiB cap (--max-body-mb)", n,
                                 s->max_body_mb);
        }
    }
    r->keep_body = true;
    r->counted = true;
    atomic_fetch_add(&s->scoring, 1);
    return MHD_YES;
}

/* The work of one scoring body (serve_dedup's compute): its route decides the endpoint. */
typedef struct scoring_call {
    server *s;
    route route;
} scoring_call;

static void compute_body(void *ctx, const char *body, size_t len, const serve_watch *w, serve_reply *out) {
    scoring_call *call = ctx;
    if (call->route == ROUTE_GET_REWARD) serve_get_reward(call->s->pool, body, len, call->s->fallback_reward, w, out);
    else serve_score_body(call->s->pool, body, len, w, out);
}

static bool client_gone(void *c) { return serve_conns_client_gone(c); }

/* POST /score, POST /get_reward: identical bodies in flight are computed once (serve_dedup.h). */
static enum MHD_Result answer_scoring(server *s, struct MHD_Connection *c, conn_req *r, const char *url,
                                      const char *method) {
    if (r->too_large)
        return respond_error(s, c, r, method, url, 413, NULL, "request body over the %ld MiB cap (--max-body-mb)",
                             s->max_body_mb);
    if (r->body.oom) return respond_error(s, c, r, method, url, 503, NULL, "out of memory reading the body");
    serve_reply reply = {0};
    scoring_call call = {s, (route)r->route};
    serve_dedup_run(s->dedup, r->route, r->body.data ? r->body.data : "", r->body.len, compute_body, &call, client_gone,
                    c, &reply, &r->shared);
    vlr_buf_free(&r->body);
    if (reply.status == SERVE_STATUS_GONE) { /* nobody to answer: counted, logged, closed */
        serve_metrics_record(s->metrics, r->route, reply.status, vlr_now() - r->t0);
        log_request(s, method, url, reply.status, r, 0, NULL);
        vlr_buf_free(&reply.body);
        return MHD_NO;
    }
    return respond(s, c, r, method, url, reply.status, &reply.body, NULL, &reply);
}

/* The request is complete: answer it. */
static enum MHD_Result on_complete_request(server *s, struct MHD_Connection *c, conn_req *r, const char *url,
                                           const char *method) {
    if (r->over) {
        r->close = true;
        r->retry_after = 1;
        return respond_error(s, c, r, method, url, 503, NULL,
                             "too many connections (--max-connections, --max-connections-per-ip): retry later");
    }
    if (scores(r->route)) {
        if (strcmp(method, MHD_HTTP_METHOD_POST) != 0)
            return respond_error(s, c, r, method, url, 405, "POST", "%s takes POST, not %s", url, method);
        return answer_scoring(s, c, r, url, method);
    }
    if (r->route != ROUTE_NONE) {
        if (!is_get(method))
            return respond_error(s, c, r, method, url, 405, "GET, HEAD", "%s takes GET, not %s", url, method);
        vlr_buf b = {0};
        if (r->route == ROUTE_HEALTH) vlr_buf_puts(&b, "{\"status\": \"ok\"}");
        else if (r->route == ROUTE_INFO) vlr_buf_puts(&b, s->info_json);
        else if (r->route == ROUTE_STATS) stats_json(s, &b);
        else metrics_text(s, r, &b);
        return respond(s, c, r, method, url, 200, &b, NULL, NULL);
    }
    return respond_error(s, c, r, method, url, 404, NULL,
                         "no endpoint %s (there are POST /score, POST /get_reward, GET /health, GET /info, GET /stats "
                         "and GET /metrics)", url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
    server *s = cls;
    conn_req *r = *con_cls;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r) return MHD_NO;
        r->t0 = vlr_now();
        *con_cls = r;
        atomic_fetch_add(&s->in_flight, 1);
        return on_headers(s, c, r, url, method);
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (r->answered || !r->keep_body) return MHD_YES; /* a body nobody reads: dropped */
        if (!r->too_large && (r->body.len + n < r->body.len || r->body.len + n > s->max_body)) {
            r->too_large = true; /* a chunked body has no Content-Length to refuse up front */
            vlr_buf_free(&r->body);
        }
        if (!r->too_large) vlr_buf_append(&r->body, upload_data, n);
        return MHD_YES;
    }
    if (r->answered) return MHD_YES;
    /* the whole request is in: from here on, no read deadline and the shutdown waits for it */
    if (!serve_conns_answering(s->conns, c)) return MHD_NO;
    return on_complete_request(s, c, r, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    server *s = cls;
    conn_req *r = *con_cls;
    serve_conns_idle(s->conns, c);
    if (!r) return;
    if (r->counted) atomic_fetch_sub(&s->scoring, 1);
    vlr_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    char msg[512];
    vlr_vsnprintf_utf8(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && msg[n - 1] == '\n') msg[--n] = '\0';
    fprintf(stderr, "vlreward serve: libmicrohttpd: %s\n", msg);
}

/* ---- addresses ------------------------------------------------------------------------------- */

static bool is_loopback(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
    return false;
}

/* Connections accepted beyond --max-connections to be answered 503 rather than reset: up to
 * SERVE_OVERFLOW more, as far as the descriptor limit allows (raised to its hard limit if needed). */
#define SERVE_OVERFLOW 1024
static long overflow_connections(long max_conn) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    rlim_t want = (rlim_t)(max_conn + SERVE_OVERFLOW + 64); /* 64: model files, listener, curl */
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) return SERVE_OVERFLOW;
    long room = (long)rl.rlim_cur - 64 - max_conn;
    return room > 0 ? room : 0;
}

/* ---- the command ----------------------------------------------------------------------------- */

int cmd_serve(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "serve"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *host = "127.0.0.1", *image_root = ".", *remote_arg = NULL;
    long port = 8000, workers = 1, max_body_mb = 64, cache_mb = 512, max_conn = 64, idle_s = 300;
    long prefix_mb = CLI_PREFIX_CACHE_DEFAULT_MB;
    long max_batch = 1024, max_image_pixels = 1L << 25, max_batch_pixels = 1L << 32;
    long per_ip = -1, read_s = 30, drain_s = 120, fetch_mb = 256, fetch_s = 120;
    long max_queue = 4096, request_timeout_s = 0, max_pixels = 0, max_images = 0;
    double fallback = NAN;
    bool bad = false, quiet = false, allow_any = false;
    while (a.i < argc && !bad) {
        const char *v = NULL;
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_opt(&a, "--host", true, &host, &bad)) continue;
        if (cli_opt(&a, "--image-root", true, &image_root, &bad)) continue;
        if (cli_opt(&a, "--remote-images", true, &remote_arg, &bad)) continue;
        if (cli_opt(&a, "--quiet", false, &v, &bad)) { quiet = true; continue; }
        if (cli_opt(&a, "--allow-any-path", false, &v, &bad)) { allow_any = true; continue; }
        if (cli_opt(&a, "--fallback-reward", true, &v, &bad)) {
            char *end = NULL;
            fallback = v ? strtod(v, &end) : NAN;
            if (v && (end == v || *end || !isfinite(fallback)))
                return cli_usage_error("serve", "--fallback-reward: expected a finite number, got '%s'", v);
            continue;
        }
        struct { const char *name; long lo, hi, *dst; const char *what; } ints[] = {
            {"--port", 0, 65535, &port, "a port (0..65535)"},
            {"--workers", 1, 256, &workers, "1..256"},
            {"--max-body-mb", 1, 4096, &max_body_mb, "megabytes (1..4096)"},
            {"--vision-cache", 0, 1L << 20, &cache_mb, "megabytes (0..1048576)"},
            {"--prefix-cache", 0, 1L << 20, &prefix_mb, "megabytes (0..1048576)"},
            {"--max-connections", 1, 10000, &max_conn, "1..10000"},
            {"--idle-timeout", 0, 86400, &idle_s, "seconds (0..86400)"},
            {"--max-batch", 1, 1L << 20, &max_batch, "1..1048576"},
            {"--max-image-pixels", 1, 1L << 31, &max_image_pixels, "1..2147483648"},
            {"--max-batch-pixels", 1, 1L << 50, &max_batch_pixels, "1..2^50"},
            {"--max-connections-per-ip", 1, 10000, &per_ip, "1..10000"},
            {"--read-timeout", 1, 3600, &read_s, "seconds (1..3600)"},
            {"--drain-timeout", 0, 86400, &drain_s, "seconds (0..86400)"},
            {"--fetch-budget-mb", 1, 65536, &fetch_mb, "megabytes (1..65536)"},
            {"--fetch-budget-s", 1, 86400, &fetch_s, "seconds (1..86400)"},
            {"--max-queue", 1, 1L << 20, &max_queue, "1..1048576"},
            {"--request-timeout", 0, 86400, &request_timeout_s, "seconds (0..86400)"},
            {"--max-pixels", 0, 1L << 31, &max_pixels, "0..2147483648"},
            {"--max-images", 0, 1L << 20, &max_images, "0..1048576"},
        };
        bool matched = false;
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !matched; k++) {
            if (!cli_opt(&a, ints[k].name, true, &v, &bad)) continue;
            matched = true;
            if (v && !cli_parse_int(v, ints[k].lo, ints[k].hi, ints[k].dst))
                return cli_usage_error("serve", "%s: expected %s, got '%s'", ints[k].name, ints[k].what, v);
        }
        if (matched) continue;
        return cli_usage_error("serve", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    if (!mo.model_dir) return cli_usage_error("serve", "--model DIR is required");
    if (per_ip < 0) per_ip = max_conn > 1 ? max_conn / 2 : 1; /* one client never takes every slot */
    vlr_fetch_policy *remote = NULL;
    vlr_err e = {0};
    if (remote_arg && vlr_fetch_policy_parse(remote_arg, &remote, &e) != VLR_OK)
        return cli_usage_error("serve", "--remote-images: %s (expected off, on or a list of hosts and CIDR blocks)",
                               e.msg);
    char *root = realpath(image_root, NULL);
    if (!root) {
        vlr_fetch_policy_free(remote);
        return cli_usage_error("serve", "--image-root %s: %s", image_root, strerror(errno));
    }
    /* Workers split the CPUs unless told otherwise: oversubscribed OpenMP teams only slow down. */
    if (mo.threads == 0 && workers > 1) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        mo.threads = cpus / workers > 1 ? (int)(cpus / workers) : 1;
    }

    /* Block the shutdown signals before any thread exists, so that every thread (libmicrohttpd's,
     * the workers', their OpenMP teams, libcurl's resolver) inherits the mask and only sigwait
     * below sees them. A client that hangs up must not kill the server: ignore SIGPIPE. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* curl_global_init is not guaranteed thread-safe: do it once here, before the workers run */
    curl_global_init(CURL_GLOBAL_DEFAULT);

    int status = EXIT_INPUT;
    server s = {.max_body = (size_t)max_body_mb << 20, .max_body_mb = max_body_mb, .quiet = quiet,
                .fallback_reward = fallback};
    atomic_init(&s.stopping, false);
    atomic_init(&s.in_flight, 0);
    atomic_init(&s.scoring, 0);
    s.t_start = vlr_now();
    struct MHD_Daemon *d = NULL;
    struct addrinfo *ai = NULL;
    vlr_model *m = NULL;
    char port_text[8];
    snprintf(port_text, sizeof port_text, "%ld", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int gai = getaddrinfo(host, port_text, &hints, &ai);
    if (gai) {
        ai = NULL;
        fprintf(stderr, "vlreward serve: --host %s: %s\n", host, gai_strerror(gai));
        goto done;
    }
    /* A server reachable from other machines fetches nothing unless told to: whoever can reach it
     * would otherwise make it fetch from its network position. */
    bool exposed = !is_loopback(ai->ai_addr);
    if (!remote && vlr_fetch_policy_parse(exposed ? "off" : "on", &remote, &e) != VLR_OK) {
        fprintf(stderr, "vlreward serve: %s\n", e.msg);
        goto done;
    }
    mo.max_image_pixels = (uint64_t)max_image_pixels;
    if (!(m = cli_load_model(&mo, "serve"))) goto done;
    serve_opts so = {.model = m, .workers = (int)workers, .vision_cache_bytes = (size_t)cache_mb << 20,
                     .prefix_cache_bytes = (size_t)prefix_mb << 20,
                     .image_root = root, .allow_any_path = allow_any, .max_batch = (size_t)max_batch,
                     .max_batch_pixels = (uint64_t)max_batch_pixels, .remote = remote,
                     .fetch_budget_bytes = (uint64_t)fetch_mb << 20, .fetch_budget_s = (double)fetch_s,
                     .quiet = quiet, .max_queue = (size_t)max_queue, .request_timeout_s = (double)request_timeout_s,
                     .default_max_pixels = max_pixels, .max_images = (size_t)max_images};
    if (serve_pool_start(&so, &s.pool, &e) != VLR_OK) {
        fprintf(stderr, "vlreward serve: %s\n", e.msg);
        goto done;
    }
    if (!(s.conns = serve_conns_new((double)read_s, (size_t)max_conn, (size_t)per_ip)) ||
        !(s.dedup = serve_dedup_new()) || !(s.metrics = serve_metrics_new(route_names, N_ROUTES)) ||
        !(s.info_json = info_json(m))) {
        fprintf(stderr, "vlreward serve: out of memory\n");
        goto done;
    }

    /* libmicrohttpd resets a connection beyond its limits: set them above ours, which answer 503 */
    long overflow = overflow_connections(max_conn);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, &s,
                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, &s,
                         MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, &s,
                         MHD_OPTION_NOTIFY_CONNECTION, serve_conns_notify, s.conns,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)(max_conn + overflow),
                         MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)(per_ip + overflow / 2),
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)idle_s,
                         MHD_OPTION_END);
    char numeric[NI_MAXHOST];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof numeric, NULL, 0, NI_NUMERICHOST))
        snprintf(numeric, sizeof numeric, "%s", host);
    if (!d) {
        fprintf(stderr, "vlreward serve: cannot listen on %s port %ld (in use? see the message above)\n", numeric, port);
        goto done;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound_port = di ? di->port : (unsigned)port;
    bool v6 = ai->ai_family == AF_INET6;
    const char *remote_text = remote_arg ? remote_arg : exposed ? "off" : "on";
    if (exposed)
        fprintf(stderr, "vlreward serve: warning: %s is not a loopback address: anyone who can reach it can make "
                        "the server read images under %s%s%s\n",
                numeric, root, allow_any ? " (and anywhere else: --allow-any-path)" : "",
                vlr_fetch_policy_off(remote) ? "" : " and fetch http(s) URLs (--remote-images)");
    vlr_model_info mi;
    vlr_model_get_info(m, &mi);
    if (!quiet)
        fprintf(stderr, "vlreward serve: model %s (precision %s, kernels %s), %ld worker%s x %d threads, vision "
                        "cache %ld MB, prefix cache %ld MB, image root %s%s, body cap %ld MiB, batch cap %ld requests, "
                        "%ld pixels per image, %ld per batch, %d tokens per request, remote images %s%s\n",
                mo.model_dir, mi.precision, mi.kernels, workers, workers == 1 ? "" : "s", vlr_model_n_threads(m), cache_mb, prefix_mb, root,
                allow_any ? " (any path allowed)" : "", max_body_mb, max_batch, max_image_pixels, max_batch_pixels,
                vlr_model_max_tokens(m), remote_text, strcmp(remote_text, "on") == 0 ? " (public addresses only)" : "");
    fprintf(stderr, "listening on http://%s%s%s:%u\n", v6 ? "[" : "", numeric, v6 ? "]" : "", bound_port);

    /* The main thread waits for a signal and, four times a second, enforces the read deadline. */
    int sig = -1;
    const struct timespec sweep_tick = {0, 250 * 1000 * 1000};
    while ((sig = sigtimedwait(&stop_signals, NULL, &sweep_tick)) <= 0) {
        size_t late = serve_conns_sweep(s.conns);
        if (late && !quiet)
            fprintf(stderr, "vlreward serve: 408: closed %zu connection%s whose request did not arrive within %ld s "
                            "(--read-timeout)\n", late, late == 1 ? "" : "s", read_s);
    }
    atomic_store(&s.stopping, true);
    MHD_socket listen_fd = MHD_quiesce_daemon(d);
    if (listen_fd != MHD_INVALID_SOCKET) close(listen_fd);
    size_t cut = serve_conns_cut_unfinished(s.conns), busy = serve_conns_answering_count(s.conns);
    fprintf(stderr, "vlreward serve: %s: stopped accepting connections, closed %zu whose request had not fully "
                    "arrived (or idle), finishing %zu request%s under way\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", cut, busy, busy == 1 ? "" : "s");
    const struct timespec tick = {0, 20 * 1000 * 1000};
    double drain_end = vlr_now() + (double)drain_s;
    while (atomic_load(&s.in_flight) > 0) {
        if (sigtimedwait(&stop_signals, NULL, &tick) > 0) {
            fprintf(stderr, "vlreward serve: second signal: exiting now\n");
            _exit(EXIT_INPUT);
        }
        serve_conns_cut_unfinished(s.conns); /* a kept-alive client may have begun another request */
        if (vlr_now() > drain_end) {
            fprintf(stderr, "vlreward serve: %zu request%s still under way after %ld s (--drain-timeout): exiting now\n",
                    serve_conns_answering_count(s.conns), serve_conns_answering_count(s.conns) == 1 ? "" : "s", drain_s);
            _exit(EXIT_INPUT);
        }
    }
    MHD_stop_daemon(d); /* closes idle kept-alive connections, joins the connection threads */
    d = NULL;
    if (!quiet) fprintf(stderr, "vlreward serve: stopped\n");
    status = EXIT_OK;
done:
    if (d) MHD_stop_daemon(d);
    if (ai) freeaddrinfo(ai);
    serve_pool_stop(s.pool);
    serve_conns_free(s.conns); /* after the daemon: its CLOSED notifications use it */
    serve_dedup_free(s.dedup);
    serve_metrics_free(s.metrics);
    vlr_fetch_policy_free(remote); /* after the pool: admission reads it */
    free(s.info_json);
    vlr_model_free(m);
    curl_global_cleanup();
    free(root);
    return status;
}
