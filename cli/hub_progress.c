/* hub_progress.c: what `vlreward pull` shows while it runs. On a terminal: one bar per file in flight
 * and a total bar (bytes, speed, ETA), redrawn in place at most ten times a second, finished files
 * scrolling above them. Otherwise (a log, a pipe): one line per finished file and a total line every
 * ten seconds, no control characters. */
#include "hub.h"

#include <stdlib.h>

#define BAR_WIDTH 20
#define NAME_WIDTH 28
#define TTY_INTERVAL_S 0.1
#define PLAIN_INTERVAL_S 10.0

typedef struct slot {
    const char *name;
    int64_t have, size, received; /* received: bytes that came over the network in this run */
    double t0;                     /* when this run started on it */
    bool active;
} slot;

struct hub_progress {
    FILE *out;
    bool tty;
    size_t n;
    slot *slots;
    int lines_drawn;       /* bar lines below the cursor's row start, to redraw over */
    double t0, last_draw, last_plain;
};

void hub_format_bytes(int64_t n, char *out, size_t cap) {
    static const char *units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4) v /= 1000, u++;
    if (u == 0) snprintf(out, cap, "%lld B", (long long)n);
    else snprintf(out, cap, "%.1f %s", v, units[u]);
}

static void format_eta(double s, char *out, size_t cap) {
    if (!(s >= 0) || s > 359999) {
        snprintf(out, cap, "--:--");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

hub_progress *hub_progress_new(FILE *out, bool tty, size_t n_files) {
    hub_progress *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->slots = calloc(n_files ? n_files : 1, sizeof *p->slots);
    if (!p->slots) {
        free(p);
        return NULL;
    }
    p->out = out, p->tty = tty, p->n = n_files;
    p->t0 = p->last_plain = vlr_now();
    for (size_t i = 0; i < n_files; i++) p->slots[i].size = -1;
    return p;
}

void hub_progress_free(hub_progress *p) {
    if (!p) return;
    free(p->slots);
    free(p);
}

void hub_progress_file(hub_progress *p, size_t i, const char *name, int64_t have, int64_t size) {
    slot *s = &p->slots[i];
    s->name = name, s->have = have, s->size = size;
}

void hub_progress_start(hub_progress *p, size_t i) {
    slot *s = &p->slots[i];
    if (!s->active) s->t0 = vlr_now();
    s->active = true;
}

void hub_progress_bytes(hub_progress *p, size_t i, int64_t have, int64_t received) {
    p->slots[i].have = have;
    p->slots[i].received = received;
}

/* "12.3/19.8 MB  8.1 MB/s  ETA 0:03" for have of size over `seconds` with `received` new bytes. */
static void format_stats(int64_t have, int64_t size, int64_t received, double seconds, char *out, size_t cap) {
    char h[32], s[32], rate[32], eta[32];
    hub_format_bytes(have, h, sizeof h);
    if (size >= 0) hub_format_bytes(size, s, sizeof s);
    else snprintf(s, sizeof s, "?");
    double speed = seconds > 0.2 ? (double)received / seconds : 0;
    hub_format_bytes((int64_t)speed, rate, sizeof rate);
    format_eta(speed > 0 && size >= have ? (double)(size - have) / speed : -1, eta, sizeof eta);
    snprintf(out, cap, "%s / %s  %s/s  ETA %s", h, s, rate, eta);
}

static void bar_line(FILE *out, const char *name, int64_t have, int64_t size, int64_t received, double seconds) {
    double frac = size > 0 ? (double)have / (double)size : 0;
    if (frac > 1) frac = 1;
    char bar[BAR_WIDTH + 1], stats[160];
    int filled = (int)(frac * BAR_WIDTH);
    for (int k = 0; k < BAR_WIDTH; k++) bar[k] = k < filled ? '#' : '-';
    bar[BAR_WIDTH] = '\0';
    format_stats(have, size, received, seconds, stats, sizeof stats);
    size_t len = strlen(name);
    if (len > NAME_WIDTH) fprintf(out, "...%-*s", NAME_WIDTH - 3, name + len - (NAME_WIDTH - 3));
    else fprintf(out, "%-*s", NAME_WIDTH, name);
    fprintf(out, " %3d%% [%s] %s\033[K\n", (int)(frac * 100), bar, stats);
}

static void totals(const hub_progress *p, int64_t *have, int64_t *size, int64_t *received) {
    *have = *size = *received = 0;
    for (size_t i = 0; i < p->n; i++) {
        *have += p->slots[i].have;
        *received += p->slots[i].received;
        if (p->slots[i].size > 0) *size += p->slots[i].size;
    }
}

/* Moves the cursor back over the bars of the last draw and clears them. */
static void erase_bars(hub_progress *p) {
    if (p->lines_drawn) fprintf(p->out, "\033[%dA\r\033[J", p->lines_drawn);
    p->lines_drawn = 0;
}

void hub_progress_draw(hub_progress *p, bool force) {
    double now = vlr_now();
    int64_t have, size, received;
    if (!p->tty) {
        if (!force && now - p->last_plain < PLAIN_INTERVAL_S) return;
        p->last_plain = now;
        totals(p, &have, &size, &received);
        char stats[160];
        format_stats(have, size, received, now - p->t0, stats, sizeof stats);
        fprintf(p->out, "pull: %s\n", stats);
        fflush(p->out);
        return;
    }
    if (!force && now - p->last_draw < TTY_INTERVAL_S) return;
    p->last_draw = now;
    erase_bars(p);
    for (size_t i = 0; i < p->n; i++) {
        const slot *s = &p->slots[i];
        if (!s->active) continue;
        bar_line(p->out, s->name, s->have, s->size, s->received, now - s->t0);
        p->lines_drawn++;
    }
    totals(p, &have, &size, &received);
    bar_line(p->out, "total", have, size, received, now - p->t0);
    p->lines_drawn++;
    fflush(p->out);
}

void hub_progress_print(hub_progress *p, const char *line) {
    if (p->tty) erase_bars(p);
    fprintf(p->out, "%s\n", line);
    if (p->tty) hub_progress_draw(p, true);
    else fflush(p->out);
}

void hub_progress_finish(hub_progress *p, size_t i, const char *line) {
    p->slots[i].active = false;
    if (line) hub_progress_print(p, line);
}
