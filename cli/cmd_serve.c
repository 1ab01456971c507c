/* cmd_serve.c: `vlreward serve`: rewards over HTTP for RL training loops (GRPO, PPO...). POST /score
 * takes one request (the `vlreward score` line format) or {"requests": [...]}; POST /get_reward is
 * OpenRLHF's remote reward model; GET /health, /info, /stats and /metrics report liveness, the
 * architecture and counters.
 *
 * Threads: the HTTP server (http_server.c) runs one thread per connection (a connection whose
 * request waits for a worker blocks only itself, and /health answers while every worker is busy);
 * scoring happens on the --workers threads of serve.c, each with its own session, the model shared
 * read-only. Scores are those of `vlreward score` bit for bit (same library call, results independent
 * of the thread count and of the caches).
 *
 * Signals: SIGINT/SIGTERM are blocked in every thread and taken by the main thread with sigwaitinfo.
 * The first closes the listening socket, answers 503 to the requests that have not fully arrived,
 * closes idle connections, answers the requests that have (adding "Connection: close") within
 * --drain-timeout, then stops and exits 0; a second signal, or the drain timeout, exits at once with
 * status 1.
 *
 * Not here: the worker pool, body parsing and the image-path policy (serve.c); HTTP framing,
 * deadlines and connection limits (http_server.c). */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
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
#include "http_server.h"
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
    http_server *http;
    double fallback_reward; /* /get_reward: the reward of a sample that cannot be scored; NaN = none */
    bool quiet;
    atomic_long scoring;   /* POST /score and /get_reward requests being answered (for /stats) */
    double t_start;
    char *info_json;       /* the /info body, built once */
} server;

typedef enum route {
    ROUTE_NONE = 0, ROUTE_SCORE, ROUTE_GET_REWARD, ROUTE_HEALTH, ROUTE_INFO, ROUTE_STATS, ROUTE_METRICS, N_ROUTES
} route;
/* the paths, and the labels of /metrics (an unknown path counts as "other") */
static const char *const route_names[N_ROUTES] = {"other", "/score", "/get_reward", "/health", "/info", "/stats",
                                                  "/metrics"};

/* ---- /info ----------------------------------------------------------------------------------- */

/* The object of `vlreward info --json` plus "version" (tests/test_serve.c compares the two). */
static char *info_json(const vlr_model *m) {
    vlr_buf b = {0};
    cli_info_json(m, VLR_VERSION, &b);
    if (b.oom) vlr_buf_free(&b);
    return b.data;
}

/* ---- the request log and /metrics ------------------------------------------------------------ */

static route route_of(const http_head *h) {
    for (int r = ROUTE_NONE + 1; h && r < N_ROUTES; r++)
        if (strlen(route_names[r]) == h->path_len && memcmp(h->path, route_names[r], h->path_len) == 0) return (route)r;
    return ROUTE_NONE;
}

/* One line a request on stderr, and its count and latency in /metrics. */
static void record(server *s, const http_request *req, int status, uint64_t tokens, const serve_reply *reply,
                   bool shared) {
    serve_metrics_record(s->metrics, route_of(req->head), status, vlr_now() - req->t0);
    if (s->quiet) return;
    char m[16] = "-", u[256] = "-", batch[48] = "";
    if (req->head) {
        serve_log_safe(m, sizeof m, req->head->method);
        serve_log_safe(u, sizeof u, req->head->target);
    }
    if (reply && reply->batch) snprintf(batch, sizeof batch, " (batch of %zu)", reply->n_requests);
    /* one fprintf: stdio locks stderr per call, so concurrent lines never interleave */
    fprintf(stderr, "%s %s %d %.1f ms %llu tokens%s%s\n", m, u, status, (vlr_now() - req->t0) * 1e3,
            (unsigned long long)tokens, batch, shared ? " (shared with an identical request)" : "");
}

/* The server refused the request itself (http_server.h): logged and counted like the others. */
static void on_refused(void *ctx, const http_request *req, int status, const char *message) {
    record(ctx, req, status, 0, NULL, false);
}

static void respond_error(http_response *resp, int status, const char *allow, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void respond_error(http_response *resp, int status, const char *allow, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vlr_vsnprintf_utf8(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cli_error_object(&resp->body, msg);
    resp->status = status;
    resp->allow = allow;
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
    vlr_jw_key_uint(&w, "coalesced", st.coalesced);
    vlr_jw_end(&w);
}

/* Prometheus text format: the body does not end in a newline here, the server adds it. */
static void metrics_text(server *s, http_response *resp) {
    serve_stats st;
    serve_pool_stats(s->pool, &st);
    serve_gauges g = {.in_flight = atomic_load(&s->scoring), .deduplicated = serve_dedup_followed(s->dedup)};
    http_server_count(s->http, &g.connections, &g.connections_over);
    serve_metrics_render(s->metrics, &st, &g, &resp->body);
    if (resp->body.len && resp->body.data[resp->body.len - 1] == '\n') resp->body.data[--resp->body.len] = '\0';
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

/* ---- routing --------------------------------------------------------------------------------- */

static bool is_get(const char *method) { return strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0; }

static bool scores(route r) { return r == ROUTE_SCORE || r == ROUTE_GET_REWARD; }

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

static bool client_gone(void *c) { return http_conn_client_gone(c); }

/* POST /score, POST /get_reward: identical bodies in flight are computed once (serve_dedup.h). */
static void answer_scoring(server *s, const http_request *req, route r, http_response *resp) {
    serve_reply reply = {0};
    scoring_call call = {s, r};
    bool shared = false;
    atomic_fetch_add(&s->scoring, 1);
    serve_dedup_run(s->dedup, r, req->body, req->body_len, compute_body, &call, client_gone, req->conn, &reply,
                    &shared);
    atomic_fetch_sub(&s->scoring, 1);
    resp->status = reply.status;
    resp->body = reply.body;
    resp->retry_after = reply.retry_after;
    resp->no_reply = reply.status == SERVE_STATUS_GONE; /* nobody to answer: counted, logged, closed */
    record(s, req, reply.status, reply.status == SERVE_STATUS_GONE ? 0 : reply.tokens, &reply, shared);
}

/* A whole request (http_server.h): answer it. */
static void on_request(void *ctx, const http_request *req, http_response *resp) {
    server *s = ctx;
    const char *method = req->head->method, *url = req->head->target;
    route r = route_of(req->head);
    if (req->over) {
        resp->retry_after = 1;
        respond_error(resp, 503, NULL, "too many connections (--max-connections, --max-connections-per-ip): retry later");
    } else if (scores(r) && strcmp(method, "POST") == 0) {
        answer_scoring(s, req, r, resp);
        return;
    } else if (scores(r)) {
        respond_error(resp, 405, "POST", "%s takes POST, not %s", route_names[r], method);
    } else if (r != ROUTE_NONE && !is_get(method)) {
        respond_error(resp, 405, "GET, HEAD", "%s takes GET, not %s", route_names[r], method);
    } else if (r != ROUTE_NONE) {
        resp->status = 200;
        if (r == ROUTE_HEALTH) {
            vlr_jw w;
            vlr_jw_init(&w, &resp->body, 0);
            vlr_jw_object(&w);
            vlr_jw_key_str(&w, "status", "ok");
            vlr_jw_end(&w);
        } else if (r == ROUTE_INFO) {
            vlr_buf_puts(&resp->body, s->info_json);
        } else if (r == ROUTE_STATS) {
            stats_json(s, &resp->body);
        } else {
            metrics_text(s, resp);
        }
    } else {
        respond_error(resp, 404, NULL,
                      "no endpoint %s (there are POST /score, POST /get_reward, GET /health, GET /info, GET /stats "
                      "and GET /metrics)", url);
    }
    record(s, req, resp->status, 0, NULL, false);
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

    /* Block the shutdown signals before any thread exists, so that every thread (the HTTP server's,
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
    server s = {.quiet = quiet, .fallback_reward = fallback};
    atomic_init(&s.scoring, 0);
    s.t_start = vlr_now();
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
    if (!(s.dedup = serve_dedup_new()) || !(s.metrics = serve_metrics_new(route_names, N_ROUTES)) ||
        !(s.info_json = info_json(m))) {
        fprintf(stderr, "vlreward serve: out of memory\n");
        goto done;
    }

    /* connections beyond --max-connections are answered 503 rather than reset, up to an overflow */
    http_server_opts ho = {.addr = ai->ai_addr, .addr_len = ai->ai_addrlen, .max_conns = (size_t)max_conn,
                           .per_ip = (size_t)per_ip, .max_open = (size_t)(max_conn + overflow_connections(max_conn)),
                           .read_timeout_s = (double)read_s, .idle_timeout_s = (double)idle_s,
                           .max_body = (uint64_t)max_body_mb << 20, .handler = on_request, .refused = on_refused,
                           .ctx = &s};
    char listen_err[256];
    s.http = http_server_start(&ho, listen_err, sizeof listen_err);
    char numeric[NI_MAXHOST];
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof numeric, NULL, 0, NI_NUMERICHOST))
        snprintf(numeric, sizeof numeric, "%s", host);
    if (!s.http) {
        fprintf(stderr, "vlreward serve: cannot listen on %s port %ld: %s\n", numeric, port, listen_err);
        goto done;
    }
    unsigned bound_port = http_server_port(s.http);
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

    /* The main thread waits for a signal; the connections keep their own deadlines. */
    int sig;
    while ((sig = sigwaitinfo(&stop_signals, NULL)) < 0) {
    }
    size_t busy = http_server_answering(s.http), cut = http_server_quiesce(s.http);
    fprintf(stderr, "vlreward serve: %s: stopped accepting connections, closed %zu whose request had not fully "
                    "arrived (or idle), finishing %zu request%s under way\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", cut, busy, busy == 1 ? "" : "s");
    const struct timespec tick = {0, 20 * 1000 * 1000};
    double drain_end = vlr_now() + (double)drain_s;
    while (http_server_open(s.http) > 0) {
        if (sigtimedwait(&stop_signals, NULL, &tick) > 0) {
            fprintf(stderr, "vlreward serve: second signal: exiting now\n");
            _exit(EXIT_INPUT);
        }
        if (vlr_now() > drain_end) {
            size_t left = http_server_answering(s.http);
            fprintf(stderr, "vlreward serve: %zu request%s still under way after %ld s (--drain-timeout): exiting now\n",
                    left, left == 1 ? "" : "s", drain_s);
            _exit(EXIT_INPUT);
        }
    }
    http_server_free(s.http); /* every connection has ended */
    s.http = NULL;
    if (!quiet) fprintf(stderr, "vlreward serve: stopped\n");
    status = EXIT_OK;
done:
    http_server_free(s.http); /* before the pool: its connections call into it */
    if (ai) freeaddrinfo(ai);
    serve_pool_stop(s.pool);
    serve_dedup_free(s.dedup);
    serve_metrics_free(s.metrics);
    vlr_fetch_policy_free(remote); /* after the pool: admission reads it */
    free(s.info_json);
    vlr_model_free(m);
    curl_global_cleanup();
    free(root);
    return status;
}
