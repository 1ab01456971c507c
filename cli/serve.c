/* serve.c: the worker pool and the /score body handling of `vlreward serve` (see serve.h).
 *
 * Why worker threads that own the sessions, rather than HTTP threads that borrow one: every thread
 * that enters an OpenMP parallel region gets its own libgomp team, which lives as long as that
 * thread. Connection threads come and go, so borrowing would spawn and tear down a team per
 * connection; a fixed worker keeps its team warm. It also lets one batch spread over every worker
 * while requests of several clients interleave in arrival order (the queue is per request, not per
 * HTTP body).
 *
 * Not here: HTTP, routing, signals, logging (cmd_serve.c). */
#include "serve.h"

#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

/* The requests of one HTTP body that were queued; the body's thread waits until pending is 0. */
typedef struct serve_group {
    size_t pending;       /* guarded by the pool lock */
    pthread_cond_t done;  /* signalled when pending reaches 0 */
} serve_group;

typedef enum job_state { JOB_WAITING, JOB_RUNNING, JOB_DONE } job_state;

/* At most this many queued requests run as one batch: their suffix passes are bounded by the library
 * (vlr_score_batch's rounds) and the queue stays roughly first come, first served. */
#define COALESCE_MAX 64

/* Queued single requests that answer the same prompt, run by one worker as one vlr_score_batch call
 * (the prompt and its images once, the answers as one batch of suffixes after it). A job cancelled
 * while its batch runs leaves it at once: its body is answered (504, or nobody) without waiting for
 * the others, and the worker no longer touches it (its body frees it). The session's cancel flag is
 * the batch's, set once every job has left. Guarded by the pool lock but cancel, which the library
 * reads. */
typedef struct serve_batch {
    volatile int cancel;
    size_t live;                 /* jobs still in the batch */
    bool left[COALESCE_MAX];     /* the job at that place was cancelled and has left */
} serve_batch;

typedef struct serve_job {
    const vlr_request *req;
    vlr_parsed_request *parsed; /* req's owner: a group's answers are put in turn into req */
    double *scores;       /* a group: [parsed->n_answers] (score: the best one's), else NULL */
    char **fetched;       /* data: URIs of the http(s) images fetched at admission (the request points at them) */
    size_t n_fetched;
    size_t n_images;
    serve_group *group;
    uint64_t prompt;      /* vlr_request_prompt_digest(req) of a single request; 0: never runs in a batch */
    serve_batch *batch;   /* while it runs in a batch with others (guarded by the pool lock) */
    size_t batch_index;   /* its place in the batch */
    struct serve_job *prev, *next; /* the queue: a cancelled body unlinks its waiting jobs */
    job_state state;      /* guarded by the pool lock */
    volatile int cancel;  /* the session's cancel flag while the job runs (written under the pool lock) */
    /* results, written by the worker before it decrements group->pending */
    double score;
    uint64_t tokens;
    vlr_err err;          /* err.code != VLR_OK when the request failed */
    bool queued;          /* false: it failed before scoring (err says why) */
} serve_job;

typedef struct serve_worker {
    serve_pool *pool;
    vlr_session *session;
    pthread_t thread;
} serve_worker;

struct serve_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;  /* signalled when a job is queued or stop is set */
    serve_job *head, *tail;
    bool stop;
    uint64_t n_queued, n_busy, n_scored, n_failed, n_tokens; /* for serve_pool_stats */
    uint64_t n_images, n_cancelled, n_timeouts, n_queue_full, n_coalesced;
    int n_workers, n_running;
    serve_worker *workers;
    vlr_cache *cache;     /* the vision and prefix cache every worker's session shares */
    const char *image_root;
    bool allow_any_path;
    size_t max_batch, max_values;
    uint64_t max_batch_pixels;
    const vlr_model *model;
    const vlr_fetch_policy *remote;
    uint64_t fetch_budget_bytes;
    double fetch_budget_s;
    bool quiet;
    size_t max_queue, max_images;
    double request_timeout_s;
    int64_t default_max_pixels;
};

/* One request, or a group's answers in turn on the same session (the prompt's KV cache and vision rows
 * are reused by every answer after the first; each score is that of the answer alone). */
static void run_job(vlr_session *s, serve_job *job) {
    const size_t n = job->scores ? job->parsed->n_answers : 1;
    size_t failed = 0;
    vlr_status rc;
    job->tokens = 0;
    if (job->scores) { /* a group: the prompt once, the answers batched as suffixes after it */
        rc = vlr_score_answers(s, job->parsed, job->scores, &job->tokens, &failed);
    } else {
        rc = vlr_score(s, job->req, &job->score);
        job->tokens = vlr_session_last_n_tokens(s);
    }
    if (rc != VLR_OK) {
        job->err.code = rc;
        if (job->scores) snprintf(job->err.msg, sizeof job->err.msg, "answers[%zu]: %s", failed, vlr_session_errmsg(s));
        else snprintf(job->err.msg, sizeof job->err.msg, "%s", vlr_session_errmsg(s));
        return;
    }
    for (size_t i = 0; job->scores && i < n; i++)
        if (i == 0 || job->scores[i] > job->score) job->score = job->scores[i];
}

/* {"id", "score"} or, for a group, {"id", "scores": [...], "best": i}. */
static void result_object(vlr_buf *b, const char *id, const serve_job *job) {
    if (job->scores) cli_result_line(b, id, strlen(id), job->scores, job->parsed->n_answers, true);
    else cli_result_line(b, id, strlen(id), &job->score, 1, false);
}

/* The bytes of an item's pixel rows: the last row ends after its 3 * width bytes, not at a stride. */
static size_t pixel_bytes(const vlr_content_item *it) {
    size_t row = 3 * (size_t)it->width, stride = it->stride ? it->stride : row;
    return it->pixels && it->height > 0 ? (size_t)(it->height - 1) * stride + row : 0;
}

/* A deep copy of a request (its turns, items, texts, image sources and bytes) in one allocation:
 * a batch runs on copies, because a job that leaves it is freed by its body while the batch goes on.
 * NULL when out of memory. */
static vlr_request *request_copy(const vlr_request *r) {
    size_t n_items = 0, chars = r->base_dir ? strlen(r->base_dir) + 1 : 0;
    for (size_t m = 0; m < r->n_messages; m++) {
        const vlr_message *msg = &r->messages[m];
        n_items += msg->n_items;
        chars += msg->role ? strlen(msg->role) + 1 : 0;
        for (size_t i = 0; i < msg->n_items; i++) {
            const vlr_content_item *it = &msg->items[i];
            chars += (it->text ? it->text_len + 1 : 0) + (it->image ? strlen(it->image) + 1 : 0) +
                     (it->image_bytes ? it->image_len : 0) + pixel_bytes(it);
        }
    }
    size_t head = sizeof(vlr_request) + r->n_messages * sizeof(vlr_message) + n_items * sizeof(vlr_content_item);
    char *block = malloc(head + chars);
    if (!block) return NULL;
    vlr_request *copy = (vlr_request *)block;
    vlr_message *msgs = (vlr_message *)(copy + 1);
    vlr_content_item *items = (vlr_content_item *)(msgs + r->n_messages);
    char *at = block + head;
#define COPY_BYTES(dst, src, n) do { memcpy(at, (src), (n)); (dst) = (void *)at; at += (n); } while (0)
    *copy = (vlr_request){msgs, r->n_messages, NULL};
    if (r->base_dir) COPY_BYTES(copy->base_dir, r->base_dir, strlen(r->base_dir) + 1);
    for (size_t m = 0; m < r->n_messages; m++) {
        const vlr_message *msg = &r->messages[m];
        msgs[m] = (vlr_message){NULL, items, msg->n_items};
        if (msg->role) COPY_BYTES(msgs[m].role, msg->role, strlen(msg->role) + 1);
        for (size_t i = 0; i < msg->n_items; i++, items++) {
            const vlr_content_item *it = &msg->items[i];
            *items = *it;
            if (it->text) {
                COPY_BYTES(items->text, it->text, it->text_len);
                *at++ = '\0';
            }
            if (it->image) COPY_BYTES(items->image, it->image, strlen(it->image) + 1);
            if (it->image_bytes) COPY_BYTES(items->image_bytes, it->image_bytes, it->image_len);
            if (it->pixels) COPY_BYTES(items->pixels, it->pixels, pixel_bytes(it));
        }
    }
#undef COPY_BYTES
    return copy;
}

static void unlink_job(serve_pool *p, serve_job *job) {
    if (job->prev) job->prev->next = job->next;
    else p->head = job->next;
    if (job->next) job->next->prev = job->prev;
    else p->tail = job->prev;
    job->prev = job->next = NULL;
}

static void *worker_main(void *arg) {
    serve_worker *w = arg;
    serve_pool *p = w->pool;
    serve_job *jobs[COALESCE_MAX];
    vlr_request reqs[COALESCE_MAX], *copies[COALESCE_MAX];
    uint64_t tokens[COALESCE_MAX];
    vlr_batch_result *results = malloc(COALESCE_MAX * sizeof *results); /* 1 KiB each */
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->work, &p->lock);
        if (!p->head) break; /* stop, and nothing left to do */
        /* the first job in the queue, and the queued answers to its prompt (a GRPO group's
         * completions sent as separate requests arrive together) */
        size_t m = 0;
        jobs[m++] = p->head;
        uint64_t prompt = p->head->prompt;
        unlink_job(p, p->head);
        copies[0] = prompt && results ? request_copy(jobs[0]->req) : NULL;
        for (serve_job *o = p->head, *next; copies[0] && o && m < COALESCE_MAX; o = next) {
            next = o->next;
            if (o->prompt != prompt) continue;
            if (!(copies[m] = request_copy(o->req))) break; /* out of memory: it stays queued */
            unlink_job(p, o);
            jobs[m++] = o;
        }
        if (m == 1) {
            free(copies[0]);
            copies[0] = NULL;
        }
        serve_batch batch = {.live = m};
        for (size_t i = 0; i < m; i++) {
            jobs[i]->state = JOB_RUNNING;
            jobs[i]->batch = m > 1 ? &batch : NULL;
            jobs[i]->batch_index = i;
            if (m > 1) reqs[i] = *copies[i];
        }
        p->n_queued -= m;
        p->n_busy++;
        if (m > 1) p->n_coalesced += m;
        pthread_mutex_unlock(&p->lock);
        /* a body's thread may set the cancel flag from now on: the library checks it between images,
         * layers and prefill chunks */
        vlr_session_set_cancel_flag(w->session, m > 1 ? &batch.cancel : &jobs[0]->cancel);
        /* each result that of the request alone, bit for bit (the library's contract): the batch
         * only saves the prompt's repeats, and a key collision only the batching (the library
         * compares the requests themselves) */
        if (m > 1) vlr_score_requests(w->session, reqs, m, results, tokens);
        else run_job(w->session, jobs[0]);
        vlr_session_set_cancel_flag(w->session, NULL);
        pthread_mutex_lock(&p->lock);
        p->n_busy--;
        for (size_t i = 0; i < m; i++) {
            if (m > 1) {
                if (batch.left[i]) continue; /* answered already, perhaps freed */
                jobs[i]->batch = NULL;
                jobs[i]->tokens = tokens[i];
                if (results[i].status == VLR_OK) jobs[i]->score = results[i].score;
                else vlr_fail(&jobs[i]->err, results[i].status, "%s", results[i].message);
            }
            jobs[i]->state = JOB_DONE;
            if (--jobs[i]->group->pending == 0) pthread_cond_signal(&jobs[i]->group->done);
        }
        for (size_t i = 0; i < m && m > 1; i++) free(copies[i]);
    }
    pthread_mutex_unlock(&p->lock);
    free(results);
    return NULL;
}

void serve_pool_stop(serve_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n_running; i++) pthread_join(p->workers[i].thread, NULL);
    for (int i = 0; i < p->n_workers; i++) vlr_session_free(p->workers[i].session);
    vlr_cache_free(p->cache);
    pthread_cond_destroy(&p->work);
    pthread_mutex_destroy(&p->lock);
    free(p->workers);
    free(p);
}

vlr_status serve_pool_start(const serve_opts *o, serve_pool **out, vlr_err *e) {
    *out = NULL;
    if (o->workers < 1) return vlr_fail(e, VLR_ERR_INTERNAL, "serve: %d workers", o->workers);
    serve_pool *p = vlr_calloc(1, sizeof *p, e);
    if (!p) return VLR_ERR_NOMEM;
    vlr_status rc = VLR_OK;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->work, NULL);
    p->image_root = o->image_root;
    p->allow_any_path = o->allow_any_path;
    p->model = o->model;
    p->max_batch = o->max_batch;
    p->max_values = (o->max_batch > 64 ? o->max_batch : 64) * (size_t)SERVE_VALUES_PER_REQUEST;
    p->max_batch_pixels = o->max_batch_pixels;
    p->remote = o->remote;
    p->fetch_budget_bytes = o->fetch_budget_bytes;
    p->fetch_budget_s = o->fetch_budget_s;
    p->quiet = o->quiet;
    p->max_queue = o->max_queue;
    p->max_images = o->max_images;
    p->request_timeout_s = o->request_timeout_s;
    p->default_max_pixels = o->default_max_pixels;
    p->workers = vlr_calloc((size_t)o->workers, sizeof *p->workers, e);
    if (!p->workers) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    p->n_workers = o->workers;
    if ((rc = vlr_cache_new(o->model, o->vision_cache_bytes, o->prefix_cache_bytes, &p->cache)) != VLR_OK) {
        vlr_fail(e, rc, "cannot create the caches: %s", vlr_status_str(rc));
        goto done;
    }
    for (int i = 0; i < o->workers; i++) {
        serve_worker *w = &p->workers[i];
        w->pool = p;
        if ((rc = vlr_session_init(o->model, &w->session)) != VLR_OK) {
            vlr_fail(e, rc, "cannot create session %d of %d: %s", i + 1, o->workers, vlr_status_str(rc));
            goto done;
        }
        vlr_session_set_cache(w->session, p->cache);
    }
    for (int i = 0; i < o->workers; i++) {
        int err = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
        if (err) {
            rc = vlr_fail(e, VLR_ERR_NOMEM, "cannot start worker thread %d: %s", i + 1, strerror(err));
            goto done;
        }
        p->n_running++;
    }
done:
    if (rc) serve_pool_stop(p);
    else *out = p;
    return rc;
}

void serve_pool_stats(serve_pool *p, serve_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->lock);
    out->workers = p->n_workers;
    out->busy = p->n_busy;
    out->queued = p->n_queued;
    out->scored = p->n_scored;
    out->failed = p->n_failed;
    out->tokens = p->n_tokens;
    out->images = p->n_images;
    out->cancelled = p->n_cancelled;
    out->timeouts = p->n_timeouts;
    out->queue_full = p->n_queue_full;
    out->coalesced = p->n_coalesced;
    out->max_queue = p->max_queue;
    pthread_mutex_unlock(&p->lock);
    vlr_cache_get_stats(p->cache, &out->caches);
    out->cache_hits = out->caches.vision_hits;
    out->cache_misses = out->caches.vision_misses;
}

/* ---- image-path policy ----------------------------------------------------------------------- */

/* True when the relative path rel (components separated by '/') never climbs above its start. */
static bool stays_below(const char *rel) {
    long depth = 0;
    const char *s = rel;
    while (*s) {
        const char *end = strchr(s, '/');
        size_t n = end ? (size_t)(end - s) : strlen(s);
        if (n == 2 && s[0] == '.' && s[1] == '.') {
            if (depth == 0) return false;
            depth--;
        } else if (n > 0 && !(n == 1 && s[0] == '.')) {
            depth++;
        }
        s += n;
        if (*s == '/') s++;
    }
    return true;
}

/* The lexical check of one local path against the (absolute, resolved) root. */
static bool path_inside_root(const char *path, const char *root) {
    if (path[0] != '/') return stays_below(path);
    size_t n = strlen(root);
    while (n > 1 && root[n - 1] == '/') n--;
    if (n == 1 && root[0] == '/') return stays_below(path + 1);
    if (strncmp(path, root, n) != 0 || (path[n] != '/' && path[n] != '\0')) return false;
    return stays_below(path + n);
}

vlr_status serve_check_image_paths(const vlr_request *req, const char *root, vlr_err *e) {
    for (size_t m = 0; m < req->n_messages; m++) {
        const vlr_message *msg = &req->messages[m];
        for (size_t i = 0; i < msg->n_items; i++) {
            const char *src = msg->items[i].image;
            if (msg->items[i].kind != VLR_ITEM_IMAGE || !src) continue;
            if (strncmp(src, "http://", 7) == 0 || strncmp(src, "https://", 8) == 0 || strncmp(src, "data:", 5) == 0)
                continue;
            /* file:// is followed by a plain path, exactly as image_source.c reads it */
            const char *path = strncmp(src, "file://", 7) == 0 ? src + 7 : src;
            if (!path_inside_root(path, root))
                return vlr_fail(e, VLR_ERR_INPUT,
                                "image \"%s\": outside the image root %s (absolute paths must lie under it and "
                                "\"..\" may not climb above it; start the server with --allow-any-path to allow)",
                                src, root);
        }
    }
    return VLR_OK;
}

/* ---- /score bodies --------------------------------------------------------------------------- */

static void error_object(vlr_buf *out, const char *id_json, const char *msg) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    vlr_jw_key(&w, "id");
    vlr_jw_raw(&w, id_json, strlen(id_json));
    vlr_jw_key_str(&w, "error", msg);
    vlr_jw_end(&w);
}

void serve_reply_error(serve_reply *out, int status, const char *fmt, ...) {
    char msg[VLR_ERR_MSG_CAP + 64];
    va_list ap;
    va_start(ap, fmt);
    vlr_vsnprintf_utf8(msg, sizeof msg, fmt, ap); /* never cuts a character */
    va_end(ap);
    out->status = status;
    out->body.len = 0;
    cli_error_object(&out->body, msg);
}

void serve_reply_check_oom(serve_reply *out) {
    if (!out->body.oom) return;
    vlr_buf_free(&out->body);
    out->status = 503;
    vlr_buf_puts(&out->body, "{\"error\": \"out of memory writing the reply\"}");
}

/* A failed single request: the client's fault (422) unless the server ran out of memory (503,
 * worth retrying), hit a bug (500) or computed a non-finite score (500: the model's fault). */
static int failure_status(vlr_status code) {
    if (code == VLR_ERR_NOMEM) return 503;
    if (code == VLR_ERR_INTERNAL || code == VLR_ERR_NUMERIC) return 500;
    return 422;
}

/* How the wait for a body's jobs ended. */
typedef enum group_end { GROUP_DONE, GROUP_QUEUE_FULL, GROUP_TIMEOUT, GROUP_GONE } group_end;

/* Cancels what is left of a body (pool lock held): its waiting jobs leave the queue without running,
 * its running ones get their cancel flag set and stop at the library's next check. */
static void cancel_jobs(serve_pool *p, serve_job *jobs, size_t n) {
    for (size_t i = 0; i < n; i++) {
        serve_job *job = &jobs[i];
        if (!job->queued) continue;
        if (job->state == JOB_RUNNING && job->batch) {
            /* it leaves its batch now (the others go on; the work stops when none is left) */
            serve_batch *b = job->batch;
            b->left[job->batch_index] = true;
            if (--b->live == 0) b->cancel = 1;
            job->batch = NULL;
            job->state = JOB_DONE;
            vlr_fail(&job->err, VLR_ERR_INTERRUPTED, "interrupted");
            job->group->pending--;
        } else if (job->state == JOB_RUNNING) {
            job->cancel = 1;
        } else if (job->state == JOB_WAITING) {
            unlink_job(p, job);
            job->state = JOB_DONE;
            p->n_queued--;
            vlr_fail(&job->err, VLR_ERR_INTERRUPTED, "cancelled before it ran");
            job->group->pending--;
        }
    }
}

/* How often the thread of a body looks at its deadline and asks whether its reply is still wanted. */
#define WATCH_TICK_NS (100 * 1000 * 1000)

/* Queues every job that passed the checks as one group, unless the queue cannot take them all, and
 * waits for the workers to finish it, or for the deadline (0 = none) or w to cancel it. */
static group_end run_group(serve_pool *p, serve_job *jobs, size_t n, double deadline, const serve_watch *w) {
    size_t n_queued = 0;
    for (size_t i = 0; i < n; i++) n_queued += jobs[i].queued;
    serve_group g = {0};
    pthread_cond_init(&g.done, NULL);
    pthread_mutex_lock(&p->lock);
    if (n_queued && p->n_queued + n_queued > p->max_queue) {
        p->n_queue_full++;
        pthread_mutex_unlock(&p->lock);
        pthread_cond_destroy(&g.done);
        return GROUP_QUEUE_FULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (!jobs[i].queued) continue;
        jobs[i].group = &g;
        jobs[i].state = JOB_WAITING;
        jobs[i].next = NULL;
        jobs[i].prev = p->tail;
        if (p->tail) p->tail->next = &jobs[i];
        else p->head = &jobs[i];
        p->tail = &jobs[i];
        g.pending++;
        p->n_queued++;
    }
    if (g.pending) pthread_cond_broadcast(&p->work);
    group_end end = GROUP_DONE;
    while (g.pending) {
        const struct timespec t = vlr_realtime_after(WATCH_TICK_NS);
        pthread_cond_timedwait(&g.done, &p->lock, &t);
        if (!g.pending || end != GROUP_DONE) continue;
        bool late = deadline > 0 && vlr_now() > deadline, gone = false;
        if (!late && w && w->wanted) { /* the probe may take other locks: not under this one */
            pthread_mutex_unlock(&p->lock);
            gone = !w->wanted(w->ctx);
            pthread_mutex_lock(&p->lock);
        }
        if (late || gone) {
            end = late ? GROUP_TIMEOUT : GROUP_GONE;
            cancel_jobs(p, jobs, n);
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (end != GROUP_DONE && jobs[i].queued && jobs[i].err.code == VLR_ERR_INTERRUPTED) {
            p->n_cancelled++;
        } else if (jobs[i].err.code) {
            p->n_failed++;
        } else {
            p->n_scored++;
            p->n_tokens += jobs[i].tokens;
            p->n_images += jobs[i].n_images;
        }
    }
    if (end == GROUP_TIMEOUT) p->n_timeouts++;
    pthread_mutex_unlock(&p->lock);
    pthread_cond_destroy(&g.done);
    return end;
}

void serve_log_safe(char *dst, size_t cap, const char *s) {
    size_t i = 0;
    for (; s && s[i] && i + 1 < cap; i++) dst[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    dst[i] = '\0';
}

/* What the admission of one body has spent of its fetch budget. */
typedef struct fetch_budget {
    uint64_t bytes;   /* fetched so far */
    double deadline;  /* vlr_now() time by which every fetch of the body ends */
} fetch_budget;

/* Fetches the http(s) images of a request under the remote policy and the body's budget, and points
 * the items at data: URIs of the bytes (owned by the job): the worker then reads them like any data:
 * image. The client learns only that a fetch failed (libcurl's text would tell it which ports are
 * open and which hosts answer); the reason goes to the log. */
static vlr_status fetch_remote(serve_pool *p, vlr_parsed_request *pr, serve_job *job, fetch_budget *budget, vlr_err *e) {
    const vlr_params *params = vlr_model_params(p->model);
    uint64_t per_image = params->max_download_bytes ? params->max_download_bytes : VLR_IMAGE_DEFAULT_MAX_DOWNLOAD;
    size_t index = 0;
    for (size_t m = 0; m < pr->req.n_messages; m++) {
        const vlr_message *msg = &pr->req.messages[m];
        for (size_t i = 0; i < msg->n_items; i++) {
            /* the items are pr->items, which the request owns: writable */
            vlr_content_item *it = (vlr_content_item *)&msg->items[i];
            if (it->kind != VLR_ITEM_IMAGE) continue;
            index++;
            if (strncmp(it->image, "http://", 7) != 0 && strncmp(it->image, "https://", 8) != 0) continue;
            if (vlr_fetch_policy_off(p->remote))
                return vlr_fail(e, VLR_ERR_UNSUPPORTED, "image %zu: remote images are off on this server (--remote-images; "
                                "send the image as a data: URI)", index);
            if (budget->bytes >= p->fetch_budget_bytes || vlr_now() >= budget->deadline)
                return vlr_fail(e, VLR_ERR_LIMIT, "image %zu: not fetched: this body's fetch budget (%llu MiB, %.0f s: "
                                "--fetch-budget-mb, --fetch-budget-s) is spent", index,
                                (unsigned long long)(p->fetch_budget_bytes >> 20), p->fetch_budget_s);
            uint64_t left = p->fetch_budget_bytes - budget->bytes;
            vlr_image_limits lim = {.max_download_bytes = per_image < left ? per_image : left,
                                    .timeout_s = params->download_timeout_s,
                                    .remote = p->remote,
                                    .fetch_deadline = budget->deadline};
            uint8_t *bytes = NULL;
            size_t n = 0;
            vlr_err why = {0};
            if (vlr_image_read_source(it->image, NULL, &lim, &bytes, &n, &why) != VLR_OK) {
                if (!p->quiet) {
                    char line[VLR_ERR_MSG_CAP];
                    serve_log_safe(line, sizeof line, why.msg);
                    fprintf(stderr, "vlreward serve: image fetch failed: %s\n", line);
                }
                return vlr_fail(e, VLR_ERR_NETWORK, "image %zu: cannot fetch the image URL (refused by the server's "
                                "--remote-images policy, unreachable, or over a limit; the server's log says which)", index);
            }
            budget->bytes += n;
            vlr_buf uri = {0};
            vlr_buf_puts(&uri, "data:image/fetched;base64,");
            vlr_base64_encode(&uri, bytes, n);
            free(bytes);
            char **list = uri.oom ? NULL : realloc(job->fetched, (job->n_fetched + 1) * sizeof *list);
            if (!list) {
                vlr_buf_free(&uri);
                return vlr_fail(e, VLR_ERR_NOMEM, "image %zu: out of memory for the fetched image", index);
            }
            job->fetched = list;
            job->fetched[job->n_fetched++] = uri.data;
            it->image = uri.data;
        }
    }
    return VLR_OK;
}

/* The server's per-request image rules: at most max_images images, and max_pixels for an image that
 * sets none (never below its own min_pixels, which would make its resize impossible). */
static vlr_status image_rules(serve_pool *p, vlr_parsed_request *pr, serve_job *job, vlr_err *e) {
    job->n_images = 0;
    for (size_t m = 0; m < pr->req.n_messages; m++) {
        const vlr_message *msg = &pr->req.messages[m];
        for (size_t i = 0; i < msg->n_items; i++) {
            vlr_content_item *it = (vlr_content_item *)&msg->items[i]; /* pr->items: the request's own */
            if (it->kind == VLR_ITEM_TEXT) continue;
            job->n_images++;
            if (p->default_max_pixels && it->max_pixels == 0)
                it->max_pixels = it->min_pixels > p->default_max_pixels ? it->min_pixels : p->default_max_pixels;
        }
    }
    if (p->max_images && job->n_images > p->max_images)
        return vlr_fail(e, VLR_ERR_LIMIT, "%zu images: more than the %zu this server takes in one request (--max-images)",
                        job->n_images, p->max_images);
    return VLR_OK;
}

/* Admission of one parsed request: the image-path policy and image rules, its remote images fetched,
 * then its images costed from their headers against the model's limits (nothing is decoded). */
static vlr_status admit(serve_pool *p, vlr_parsed_request *pr, serve_job *job, fetch_budget *budget, vlr_cost *cost,
                        vlr_err *e) {
    memset(cost, 0, sizeof *cost);
    vlr_status rc;
    if (!p->allow_any_path && (rc = serve_check_image_paths(&pr->req, p->image_root, e))) return rc;
    if ((rc = image_rules(p, pr, job, e))) return rc;
    if ((rc = fetch_remote(p, pr, job, budget, e))) return rc;
    const vlr_params *params = vlr_model_params(p->model);
    vlr_image_limits lim = {.max_pixels = params->max_image_pixels,
                            .max_download_bytes = params->max_download_bytes,
                            .max_tokens = (uint64_t)vlr_model_max_tokens(p->model)};
    return vlr_request_cost(&pr->req, &vlr_model_config(p->model)->preproc, &lim, cost, e);
}

vlr_json_doc *serve_parse_body(serve_pool *p, const char *body, size_t len, const char *expected, serve_reply *out) {
    vlr_err e = {0};
    vlr_json_doc *doc = NULL;
    if (len == 0) {
        serve_reply_error(out, 400, "empty body: expected %s", expected);
        return NULL;
    }
    /* Each JSON value costs the parser ~50 bytes whatever its text: "0," is two bytes. */
    if (vlr_json_value_bound(body, len) > p->max_values) {
        serve_reply_error(out, 413, "the body holds more than %zu JSON values, the cap for batches of up to %zu requests "
                              "(--max-batch)", p->max_values, p->max_batch);
        return NULL;
    }
    if (!(doc = vlr_json_parse(body, len, &e))) {
        serve_reply_error(out, e.code == VLR_ERR_NOMEM ? 503 : 400, "invalid JSON: %s", e.msg);
        return NULL;
    }
    const vlr_json *root = vlr_json_root(doc);
    if (!vlr_json_is(root, VLR_JSON_OBJECT)) {
        serve_reply_error(out, 400, "the body is a JSON %s: expected %s", vlr_json_type_name(root), expected);
        vlr_json_free(doc);
        return NULL;
    }
    return doc;
}

void serve_score_body(serve_pool *p, const char *body, size_t len, const serve_watch *w, serve_reply *out) {
    double deadline = p->request_timeout_s > 0 ? vlr_now() + p->request_timeout_s : 0;
    out->status = 200;
    out->tokens = 0;
    out->n_requests = 0;
    out->batch = false;
    out->retry_after = 0;
    vlr_parsed_request *parsed = NULL;
    serve_job *jobs = NULL;
    size_t n = 0;
    vlr_json_doc *doc = serve_parse_body(p, body, len, "a request object or {\"requests\": [...]}", out);
    if (!doc) goto done;
    const vlr_json *root = vlr_json_root(doc);
    const vlr_json *list = vlr_json_get(root, "requests");
    const vlr_json *items = root;
    n = 1;
    if (list) {
        if (!vlr_json_is(list, VLR_JSON_ARRAY)) {
            serve_reply_error(out, 400, "requests: expected a list of request objects, found %s", vlr_json_type_name(list));
            goto done;
        }
        out->batch = true;
        items = list->items;
        n = list->len;
        if (n > p->max_batch) {
            serve_reply_error(out, 413, "a batch of %zu requests is over the cap of %zu (--max-batch): split it", n,
                        p->max_batch);
            goto done;
        }
        if (n > p->max_queue) {
            serve_reply_error(out, 413, "a batch of %zu requests is larger than the server's queue (--max-queue %zu): split it",
                        n, p->max_queue);
            goto done;
        }
    }
    out->n_requests = n;
    if (n) {
        parsed = calloc(n, sizeof *parsed);
        jobs = calloc(n, sizeof *jobs);
        if (!parsed || !jobs) {
            serve_reply_error(out, 503, "out of memory for %zu requests", n);
            goto done;
        }
    }
    uint64_t pixels = 0;
    fetch_budget budget = {.deadline = vlr_now() + p->fetch_budget_s};
    for (size_t i = 0; i < n; i++) {
        serve_job *job = &jobs[i];
        vlr_cost cost;
        vlr_status rc = vlr_request_from_json(&items[i], i, p->image_root, &parsed[i], &job->err);
        if (rc == VLR_OK) rc = admit(p, &parsed[i], job, &budget, &cost, &job->err);
        if (rc == VLR_OK && parsed[i].n_answers &&
            !(job->scores = calloc(parsed[i].n_answers, sizeof *job->scores)))
            rc = vlr_fail(&job->err, VLR_ERR_NOMEM, "out of memory for %zu answers", parsed[i].n_answers);
        job->err.code = rc;
        job->req = &parsed[i].req;
        job->parsed = &parsed[i];
        job->queued = rc == VLR_OK;
        job->prompt = rc == VLR_OK && !job->scores ? vlr_request_prompt_digest(job->req) : 0;
        if (rc == VLR_OK && (pixels += cost.pixels) > p->max_batch_pixels) {
            serve_reply_error(out, 413, "the images of %s take more than %llu decoded and resized pixels (--max-batch-pixels)%s",
                        out->batch ? "this batch" : "this request", (unsigned long long)p->max_batch_pixels,
                        out->batch ? ": split the batch" : "");
            goto done;
        }
    }
    switch (run_group(p, jobs, n, deadline, w)) {
    case GROUP_DONE: break;
    case GROUP_QUEUE_FULL:
        serve_reply_error(out, 503, "the server's queue is full (%zu requests waiting, --max-queue): retry later", p->max_queue);
        out->retry_after = 1;
        goto done;
    case GROUP_TIMEOUT:
        serve_reply_error(out, 504, "not finished within %.0f s (--request-timeout): cancelled", p->request_timeout_s);
        goto done;
    case GROUP_GONE:
        serve_reply_error(out, SERVE_STATUS_GONE, "the client went away: cancelled");
        goto done;
    }

    if (!out->batch) {
        /* A single request without a usable "id" echoes null (in a batch, the index stands in). */
        const vlr_json *given = vlr_json_get(root, "id");
        bool has_id = vlr_json_is(given, VLR_JSON_STRING) || vlr_json_is(given, VLR_JSON_NUMBER);
        const char *id = has_id && parsed[0].id_json.data ? parsed[0].id_json.data : "null";
        if (jobs[0].err.code) {
            out->status = failure_status(jobs[0].err.code);
            error_object(&out->body, id, jobs[0].err.msg);
        } else {
            out->tokens = jobs[0].tokens;
            result_object(&out->body, id, &jobs[0]);
        }
        goto done;
    }
    vlr_jw rw;
    vlr_buf item = {0};
    vlr_jw_init(&rw, &out->body, 0);
    vlr_jw_object(&rw);
    vlr_jw_key(&rw, "results");
    vlr_jw_array(&rw);
    for (size_t i = 0; i < n; i++) {
        const char *id = parsed[i].id_json.data ? parsed[i].id_json.data : "null";
        item.len = 0;
        if (jobs[i].err.code) {
            error_object(&item, id, jobs[i].err.msg);
        } else {
            out->tokens += jobs[i].tokens;
            result_object(&item, id, &jobs[i]);
        }
        if (item.oom) out->body.oom = true;
        else vlr_jw_raw(&rw, item.data, item.len);
    }
    vlr_jw_end(&rw);
    vlr_jw_end(&rw);
    vlr_buf_free(&item);
done:
    serve_reply_check_oom(out);
    for (size_t i = 0; parsed && i < n; i++) vlr_parsed_request_free(&parsed[i]);
    for (size_t i = 0; jobs && i < n; i++) {
        for (size_t k = 0; k < jobs[i].n_fetched; k++) free(jobs[i].fetched[k]);
        free(jobs[i].fetched);
        free(jobs[i].scores);
    }
    free(parsed);
    free(jobs);
    vlr_json_free(doc);
}
