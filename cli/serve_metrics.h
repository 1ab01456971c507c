/* serve_metrics.h: GET /metrics of `vlreward serve` in the Prometheus text exposition format
 * (version 0.0.4): HTTP requests by endpoint and status, their latency as a histogram, and the
 * pool's counters (scored, failed, cancelled, tokens, images, queue, workers, caches). Names are
 * vlreward_*; counters end in _total. */
#ifndef VLR_CLI_SERVE_METRICS_H
#define VLR_CLI_SERVE_METRICS_H

#include "serve.h"

#define SERVE_METRICS_MAX_ROUTES 8

typedef struct serve_metrics serve_metrics;

/* route_names[i]: the label of route i (e.g. "/score"), n_routes <= SERVE_METRICS_MAX_ROUTES; the
 * strings must outlive the metrics. NULL when out of memory. */
serve_metrics *serve_metrics_new(const char *const *route_names, int n_routes);
void serve_metrics_free(serve_metrics *m);

/* One answered HTTP request: its route, its status (100..599; SERVE_STATUS_GONE included) and the
 * seconds from its headers to its reply. Thread-safe. */
void serve_metrics_record(serve_metrics *m, int route, int status, double seconds);

/* What the HTTP side knows beyond the pool's counters. */
typedef struct serve_gauges {
    long in_flight;         /* HTTP requests received and not yet answered */
    uint64_t deduplicated;  /* requests answered with the reply of an identical one in flight */
    size_t connections;     /* open connections within --max-connections */
    size_t connections_over; /* open connections beyond it, being answered 503 */
} serve_gauges;

/* Appends the whole exposition to out. */
void serve_metrics_render(serve_metrics *m, const serve_stats *st, const serve_gauges *g, vlr_buf *out);

#endif
