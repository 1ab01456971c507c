/* serve_metrics.c: see serve_metrics.h. */
#include "serve_metrics.h"

#include <pthread.h>
#include <stdlib.h>

/* Upper bounds of the latency buckets, in seconds: a cached text request on the tiny model takes
 * ~1 ms, a 7B request on a CPU seconds to minutes. */
static const double bucket_le[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
#define N_BUCKETS (sizeof bucket_le / sizeof bucket_le[0])
#define MIN_STATUS 100
#define N_STATUS 500 /* 100..599 */

typedef struct route_counts {
    uint64_t by_status[N_STATUS];
    uint64_t bucket[N_BUCKETS]; /* not cumulative here: the render adds them up */
    uint64_t count;
    double sum;
} route_counts;

struct serve_metrics {
    pthread_mutex_t lock;
    const char *const *names;
    int n_routes;
    route_counts routes[SERVE_METRICS_MAX_ROUTES];
};

serve_metrics *serve_metrics_new(const char *const *route_names, int n_routes) {
    if (n_routes < 0 || n_routes > SERVE_METRICS_MAX_ROUTES) return NULL;
    serve_metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    pthread_mutex_init(&m->lock, NULL);
    m->names = route_names;
    m->n_routes = n_routes;
    return m;
}

void serve_metrics_free(serve_metrics *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->lock);
    free(m);
}

void serve_metrics_record(serve_metrics *m, int route, int status, double seconds) {
    if (route < 0 || route >= m->n_routes || status < MIN_STATUS || status >= MIN_STATUS + N_STATUS) return;
    size_t b = 0;
    while (b < N_BUCKETS && seconds > bucket_le[b]) b++;
    pthread_mutex_lock(&m->lock);
    route_counts *r = &m->routes[route];
    r->by_status[status - MIN_STATUS]++;
    if (b < N_BUCKETS) r->bucket[b]++;
    r->count++;
    r->sum += seconds;
    pthread_mutex_unlock(&m->lock);
}

static void metric_head(vlr_buf *b, const char *name, const char *type, const char *help) {
    vlr_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(vlr_buf *b, const char *name, const char *help, uint64_t v) {
    metric_head(b, name, "counter", help);
    vlr_buf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(vlr_buf *b, const char *name, const char *help, double v) {
    metric_head(b, name, "gauge", help);
    vlr_buf_printf(b, "%s %.17g\n", name, v);
}

void serve_metrics_render(serve_metrics *m, const serve_stats *st, const serve_gauges *g, vlr_buf *b) {
    route_counts snap[SERVE_METRICS_MAX_ROUTES];
    pthread_mutex_lock(&m->lock);
    memcpy(snap, m->routes, sizeof snap);
    pthread_mutex_unlock(&m->lock);

    metric_head(b, "vlreward_http_requests_total", "counter",
                "HTTP requests answered, by endpoint and status (499: the client went away first).");
    for (int r = 0; r < m->n_routes; r++)
        for (int s = 0; s < N_STATUS; s++)
            if (snap[r].by_status[s])
                vlr_buf_printf(b, "vlreward_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n", m->names[r],
                               s + MIN_STATUS, (unsigned long long)snap[r].by_status[s]);
    metric_head(b, "vlreward_http_request_duration_seconds", "histogram",
                "Time from a request's headers to its reply, by endpoint.");
    for (int r = 0; r < m->n_routes; r++) {
        if (!snap[r].count) continue;
        uint64_t cumulative = 0;
        for (size_t k = 0; k < N_BUCKETS; k++) {
            cumulative += snap[r].bucket[k];
            vlr_buf_printf(b, "vlreward_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", m->names[r],
                           bucket_le[k], (unsigned long long)cumulative);
        }
        vlr_buf_printf(b, "vlreward_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", m->names[r],
                       (unsigned long long)snap[r].count);
        vlr_buf_printf(b, "vlreward_http_request_duration_seconds_sum{route=\"%s\"} %.17g\n", m->names[r], snap[r].sum);
        vlr_buf_printf(b, "vlreward_http_request_duration_seconds_count{route=\"%s\"} %llu\n", m->names[r],
                       (unsigned long long)snap[r].count);
    }
    counter(b, "vlreward_scored_total", "Requests (batch items, groups) scored.", st->scored);
    counter(b, "vlreward_failed_total", "Requests (batch items, groups) answered with an error.", st->failed);
    counter(b, "vlreward_cancelled_total",
            "Requests dropped from the queue or stopped mid-way: client gone or --request-timeout.", st->cancelled);
    counter(b, "vlreward_request_timeouts_total", "Bodies answered 504 (--request-timeout).", st->timeouts);
    counter(b, "vlreward_queue_full_total", "Bodies answered 503 because the queue was full (--max-queue).",
            st->queue_full);
    counter(b, "vlreward_coalesced_total",
            "Requests run in one batch with other queued answers to the same prompt (the prompt once).",
            st->coalesced);
    counter(b, "vlreward_deduplicated_total",
            "Requests answered with the reply of an identical request in flight, without computing.", g->deduplicated);
    counter(b, "vlreward_tokens_total", "Tokens of the scored requests, images expanded.", st->tokens);
    counter(b, "vlreward_images_total", "Images of the scored requests.", st->images);
    counter(b, "vlreward_vision_cache_hits_total", "Vision-tower outputs reused from the vision cache.", st->cache_hits);
    counter(b, "vlreward_vision_cache_misses_total", "Images that ran the vision tower.", st->cache_misses);
    counter(b, "vlreward_prefix_cache_hits_total", "Requests that restored K/V rows from the prefix cache.",
            st->caches.prefix_hits);
    counter(b, "vlreward_prefix_cache_misses_total",
            "Requests that found nothing in the prefix cache beyond their worker's own reuse.", st->caches.prefix_misses);
    counter(b, "vlreward_reused_tokens_total",
            "Tokens whose K/V rows came from the prefix cache or the worker's previous request.",
            st->caches.reused_tokens);
    gauge(b, "vlreward_queue_depth", "Requests waiting for a worker.", (double)st->queued);
    gauge(b, "vlreward_queue_capacity", "The most requests that may wait (--max-queue).", (double)st->max_queue);
    gauge(b, "vlreward_busy_workers", "Workers scoring now.", (double)st->busy);
    gauge(b, "vlreward_workers", "Worker threads (--workers).", (double)st->workers);
    gauge(b, "vlreward_in_flight", "HTTP requests received and not yet answered.", (double)g->in_flight);
    gauge(b, "vlreward_connections", "Open connections within --max-connections.", (double)g->connections);
    gauge(b, "vlreward_connections_over_limit", "Open connections beyond the limits, being answered 503.",
          (double)g->connections_over);
}
