/* hub_download.c: the file transfers of `vlreward pull`, as huggingface_hub makes them, several at
 * once on one libcurl multi handle:
 *
 *   1. HEAD ENDPOINT/ORG/NAME/resolve/COMMIT/FILE (Accept-Encoding: identity), following relative
 *      redirects only: X-Repo-Commit, the ETag (X-Linked-Etag, else ETag), the size (X-Linked-Size,
 *      else Content-Length) and, for large files, the CDN Location.
 *   2. GET the Location (or the resolve URL) into blobs/ETAG.incomplete, from its current size with
 *      Range when part of it is there; the token goes only to the endpoint's own host.
 *   3. The sha256 of an LFS file (its ETag is a sha256) is computed while it arrives and compared with
 *      the ETag; only a file that matches is renamed into blobs/ (atomic), then linked from
 *      snapshots/COMMIT/FILE. A mismatch deletes the .incomplete file and fails the file.
 *
 * Dropped connections and 408/429/5xx answers are retried (the Range picks up where the data
 * stopped) up to five times without progress. An .incomplete file is locked (flock) while written,
 * so two pulls never write into the same one. Files already in the cache cost no request. */
#include "hub.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define MAX_ATTEMPTS 5      /* failed attempts in a row (no byte received in between) before giving up */
#define MAX_RELATIVE_REDIRECTS 5
#define RETRY_DELAY_S 0.25  /* doubled at each attempt */
#define STALL_SECONDS 60L   /* a transfer that receives nothing for this long is retried */

enum stage { ST_QUEUED, ST_HEAD, ST_GET, ST_DONE, ST_FAILED };

typedef struct xfer {
    size_t index; /* into the files (and the progress slots) */
    const hub_file *file;
    enum stage stage;
    CURL *h; /* the request in flight */
    struct curl_slist *headers;
    hub_response resp;
    char errbuf[CURL_ERROR_SIZE];
    char *url; /* of the HEAD: the resolve URL, or where a relative redirect pointed */
    int redirects, attempts;
    double not_before; /* a retry waits until then */
    /* what the HEAD said */
    char etag[136];
    int64_t size;
    char *download_url;
    /* the destination */
    char *final_path, *part_path;
    int fd; /* the .incomplete file, locked, while open */
    int64_t offset, resumed_from, received;
    bool verify; /* the ETag is a sha256: hash while writing */
    EVP_MD_CTX *sha;
    bool body_checked, write_failed;
    double t0;
    vlr_err err;
} xfer;

typedef struct engine {
    const hub_pull_plan *plan;
    vlr_err fatal; /* an answer that dooms every file (401/403 from the hub): reported once */
    bool has_fatal;
    CURLM *multi;
    xfer *x;
    size_t n;
    hub_progress *progress;
    hub_pull_result *res;
    char *auth; /* "Authorization: Bearer ..." or NULL */
} engine;

static void note(engine *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(engine *g, const char *fmt, ...) {
    char line[VLR_ERR_MSG_CAP + 256];
    va_list ap;
    va_start(ap, fmt);
    vlr_vsnprintf_utf8(line, sizeof line, fmt, ap);
    va_end(ap);
    hub_progress_print(g->progress, line);
}

/* ---- ending a file ------------------------------------------------------------------------------ */

static void release_request(engine *g, xfer *x) {
    if (x->h) {
        curl_multi_remove_handle(g->multi, x->h);
        curl_easy_cleanup(x->h);
        x->h = NULL;
    }
    curl_slist_free_all(x->headers);
    x->headers = NULL;
}

static void close_part(xfer *x) {
    if (x->fd >= 0) close(x->fd); /* also releases the lock */
    x->fd = -1;
}

static void fail(engine *g, xfer *x) {
    release_request(g, x);
    close_part(x);
    x->stage = ST_FAILED;
    g->res->n_failed++;
    char line[VLR_ERR_MSG_CAP + 16];
    vlr_snprintf_utf8(line, sizeof line, "error: %s", x->err.msg);
    hub_progress_finish(g->progress, x->index, line);
}

/* Access to the repository is denied: the other files would only repeat it. */
static void cancel_all(engine *g) {
    g->has_fatal = true;
    for (size_t i = 0; i < g->n; i++) {
        xfer *x = &g->x[i];
        if (x->stage == ST_DONE || x->stage == ST_FAILED) continue;
        release_request(g, x);
        close_part(x);
        x->stage = ST_FAILED;
        g->res->n_failed++;
        hub_progress_finish(g->progress, x->index, NULL);
    }
}

static void done(engine *g, xfer *x, bool cached) {
    release_request(g, x);
    close_part(x);
    x->stage = ST_DONE;
    char size[32], line[1400];
    hub_format_bytes(x->size, size, sizeof size);
    if (cached) {
        g->res->n_cached++;
        vlr_snprintf_utf8(line, sizeof line, "%s  %s  already there", x->file->name, size);
    } else {
        g->res->n_downloaded++;
        double s = vlr_now() - x->t0;
        char rate[32], from[64] = "";
        hub_format_bytes(s > 0 ? (int64_t)((double)x->received / s) : 0, rate, sizeof rate);
        if (x->resumed_from > 0) {
            char at[32];
            hub_format_bytes(x->resumed_from, at, sizeof at);
            snprintf(from, sizeof from, ", resumed at %s", at);
        }
        vlr_snprintf_utf8(line, sizeof line, "%s  %s  downloaded in %.1f s (%s/s%s)%s", x->file->name, size, s, rate,
                          from, x->verify ? ", sha256 verified" : "");
    }
    hub_progress_file(g->progress, x->index, x->file->name, x->size, x->size);
    hub_progress_bytes(g->progress, x->index, x->size, x->received);
    hub_progress_finish(g->progress, x->index, line);
}

/* A transient failure: try again after a delay (the HEAD gets a fresh link; the .incomplete file and
 * its hash state stay), or give up after MAX_ATTEMPTS in a row. */
static void retry(engine *g, xfer *x, const char *why) {
    release_request(g, x);
    if (++x->attempts >= MAX_ATTEMPTS) {
        vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: %s (gave up after %d attempts)", x->file->name, why, x->attempts);
        fail(g, x);
        return;
    }
    double delay = RETRY_DELAY_S * (double)(1 << (x->attempts - 1));
    char at[32];
    hub_format_bytes(x->offset, at, sizeof at);
    note(g, "%s: %s; retrying from %s in %.2f s (attempt %d of %d)", x->file->name, why, at, delay, x->attempts + 1,
         MAX_ATTEMPTS);
    x->not_before = vlr_now() + delay;
    x->stage = ST_QUEUED;
}

/* ---- requests ------------------------------------------------------------------------------------ */

/* A new easy handle for x on url with the common options; the Authorization header only when url is
 * on the endpoint's host (a CDN link is signed and must not see the token). */
static bool new_request(engine *g, xfer *x, const char *url) {
    hub_response_reset(&x->resp);
    x->h = curl_easy_init();
    if (!x->h) return false;
    hub_curl_defaults(x->h, x->errbuf);
    curl_easy_setopt(x->h, CURLOPT_URL, url);
    curl_easy_setopt(x->h, CURLOPT_PRIVATE, x);
    curl_easy_setopt(x->h, CURLOPT_HEADERFUNCTION, hub_response_header_cb);
    curl_easy_setopt(x->h, CURLOPT_HEADERDATA, &x->resp);
    if (g->auth && hub_same_origin(url, g->plan->env->endpoint)) x->headers = curl_slist_append(x->headers, g->auth);
    return true;
}

static bool add_request(engine *g, xfer *x) {
    curl_easy_setopt(x->h, CURLOPT_HTTPHEADER, x->headers);
    return curl_multi_add_handle(g->multi, x->h) == CURLM_OK;
}

static void start_head(engine *g, xfer *x) {
    x->stage = ST_HEAD;
    if (!new_request(g, x, x->url)) {
        vlr_fail(&x->err, VLR_ERR_NOMEM, "%s: out of memory", x->file->name);
        fail(g, x);
        return;
    }
    /* the real size, not a compressed one */
    x->headers = curl_slist_append(x->headers, "Accept-Encoding: identity");
    curl_easy_setopt(x->h, CURLOPT_NOBODY, 1L);
    curl_easy_setopt(x->h, CURLOPT_TIMEOUT, 60L);
    if (!add_request(g, x)) {
        vlr_fail(&x->err, VLR_ERR_INTERNAL, "%s: cannot start a request", x->file->name);
        fail(g, x);
    }
}

static size_t body_cb(char *data, size_t size, size_t n, void *userdata);

static void start_get(engine *g, xfer *x) {
    x->stage = ST_GET;
    x->body_checked = false;
    if (!new_request(g, x, x->download_url)) {
        vlr_fail(&x->err, VLR_ERR_NOMEM, "%s: out of memory", x->file->name);
        fail(g, x);
        return;
    }
    if (x->offset > 0) {
        char range[64];
        snprintf(range, sizeof range, "Range: bytes=%" PRId64 "-", x->offset);
        x->headers = curl_slist_append(x->headers, range);
    }
    /* a CDN may redirect again; libcurl drops the Authorization header on the way to another host */
    curl_easy_setopt(x->h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(x->h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(x->h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(x->h, CURLOPT_LOW_SPEED_TIME, STALL_SECONDS);
    curl_easy_setopt(x->h, CURLOPT_BUFFERSIZE, 256L * 1024);
    curl_easy_setopt(x->h, CURLOPT_WRITEFUNCTION, body_cb);
    curl_easy_setopt(x->h, CURLOPT_WRITEDATA, x);
    if (x->resumed_from < 0) x->resumed_from = x->offset;
    hub_progress_file(g->progress, x->index, x->file->name, x->offset, x->size);
    hub_progress_start(g->progress, x->index);
    if (!add_request(g, x)) {
        vlr_fail(&x->err, VLR_ERR_INTERNAL, "%s: cannot start a request", x->file->name);
        fail(g, x);
    }
}

/* ---- the .incomplete file -------------------------------------------------------------------------- */

static bool sha_restart(xfer *x) { return !x->verify || EVP_DigestInit_ex(x->sha, EVP_sha256(), NULL) == 1; }

static bool truncate_part(xfer *x) {
    x->offset = 0;
    return ftruncate(x->fd, 0) == 0 && sha_restart(x);
}

/* Hashes the bytes already in the .incomplete file so the digest covers the whole file at the end. */
static vlr_status hash_existing(xfer *x, vlr_err *e) {
    static const size_t chunk = 1 << 20;
    char *buf = malloc(chunk);
    if (!buf) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    int64_t at = 0;
    vlr_status rc = VLR_OK;
    while (at < x->offset) {
        size_t want = (size_t)(x->offset - at < (int64_t)chunk ? x->offset - at : (int64_t)chunk);
        ssize_t got = pread(x->fd, buf, want, at);
        if (got <= 0) {
            rc = vlr_fail(e, VLR_ERR_IO, "cannot read %s: %s", x->part_path, got < 0 ? strerror(errno) : "file shrank");
            break;
        }
        EVP_DigestUpdate(x->sha, buf, (size_t)got);
        at += got;
    }
    free(buf);
    return rc;
}

/* sha256 of a whole file as lowercase hex (for a --local-dir file written by someone else). */
static bool file_sha256(const char *path, char hex[65]) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    char *buf = malloc(1 << 20);
    bool ok = fd >= 0 && ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    ssize_t got;
    while (ok && (got = read(fd, buf, 1 << 20)) != 0) {
        if (got < 0) ok = false;
        else EVP_DigestUpdate(ctx, buf, (size_t)got);
    }
    unsigned char md[32];
    unsigned len = 0;
    if (ok && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32)
        for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    else ok = false;
    if (fd >= 0) close(fd);
    EVP_MD_CTX_free(ctx);
    free(buf);
    return ok;
}

static bool is_sha256(const char *s) {
    size_t i = 0;
    for (; s[i]; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return i == 64;
}

static int64_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

/* ---- --local-dir metadata (huggingface_hub's DIR/.cache/huggingface/download/FILE.metadata:
 * commit, etag and a timestamp, one per line) ---------------------------------------------------------- */

static char *metadata_path(const hub_pull_plan *plan, const char *file, const char *suffix) {
    vlr_buf b = {0};
    vlr_buf_printf(&b, "%s/.cache/huggingface/download/%s%s", plan->local_dir, file, suffix);
    if (b.oom) vlr_buf_free(&b);
    return b.data;
}

/* True when the metadata says FILE in local_dir is the one of (commit or etag) and the file was not
 * modified since. */
static bool local_metadata_matches(const hub_pull_plan *plan, const char *file, const char *commit,
                                   const char *etag) {
    char *path = metadata_path(plan, file, ".metadata"), *dest = vlr_path_join(plan->local_dir, file);
    char *text = NULL;
    size_t len;
    vlr_err ignored;
    bool match = false;
    struct stat st;
    if (path && dest && stat(dest, &st) == 0 && S_ISREG(st.st_mode) &&
        vlr_read_file(path, 4096, &text, &len, &ignored) == VLR_OK) {
        char c[64] = "", t[160] = "";
        double stamp = 0;
        if (sscanf(text, "%63s %159s %lf", c, t, &stamp) == 3 && (double)st.st_mtime - 1 <= stamp)
            match = (commit && strcmp(c, commit) == 0) || (etag && strcmp(t, etag) == 0);
    }
    free(text);
    free(path);
    free(dest);
    return match;
}

static vlr_status write_local_metadata(const hub_pull_plan *plan, const char *file, const char *etag, vlr_err *e) {
    char *path = metadata_path(plan, file, ".metadata");
    if (!path) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    FILE *f = fopen(path, "w");
    bool ok = f && fprintf(f, "%s\n%s\n%.3f\n", plan->commit, etag,
                           (double)now.tv_sec + (double)now.tv_nsec * 1e-9) > 0;
    if (f && fclose(f) != 0) ok = false;
    vlr_status rc = ok ? VLR_OK : vlr_fail(e, VLR_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    free(path);
    return rc;
}

/* The snapshot link (cache) or the metadata (local dir) of a file whose content is in place. */
static vlr_status record_file(const hub_pull_plan *plan, const xfer *x, vlr_err *e) {
    if (plan->local_dir) return write_local_metadata(plan, x->file->name, x->etag, e);
    return hub_link_snapshot(plan->repo_dir, plan->commit, x->file->name, x->etag, e);
}

/* ---- after the HEAD --------------------------------------------------------------------------------- */

static void finish_file(engine *g, xfer *x);

static void warn_disk_space(engine *g, xfer *x) {
    char *dir = strndup(x->part_path, (size_t)(strrchr(x->part_path, '/') - x->part_path));
    struct statvfs vfs;
    int64_t need = x->size - x->offset;
    if (dir && statvfs(dir, &vfs) == 0 && (double)vfs.f_bavail * (double)vfs.f_frsize < (double)need) {
        char n[32], have[32];
        hub_format_bytes(need, n, sizeof n);
        hub_format_bytes((int64_t)((double)vfs.f_bavail * (double)vfs.f_frsize), have, sizeof have);
        note(g, "warning: %s needs %s more but only %s are free in %s", x->file->name, n, have, dir);
    }
    free(dir);
}

/* Another file of this pull has the same content and is downloading it now. */
static bool same_blob_in_flight(const engine *g, const xfer *x) {
    for (size_t i = 0; i < g->n; i++)
        if (&g->x[i] != x && g->x[i].fd >= 0 && strcmp(g->x[i].etag, x->etag) == 0) return true;
    return false;
}

/* Opens (creating or resuming) the .incomplete file, locked, and starts the GET. */
static void open_part(engine *g, xfer *x) {
    char *dir = strndup(x->part_path, (size_t)(strrchr(x->part_path, '/') - x->part_path));
    char *final_dir = strndup(x->final_path, (size_t)(strrchr(x->final_path, '/') - x->final_path));
    vlr_status rc = !dir || !final_dir ? vlr_fail(&x->err, VLR_ERR_NOMEM, "out of memory") : hub_mkdirs(dir, &x->err);
    if (rc == VLR_OK) rc = hub_mkdirs(final_dir, &x->err);
    free(dir);
    free(final_dir);
    if (rc) return fail(g, x);
    x->fd = open(x->part_path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (x->fd < 0) {
        vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot open %s: %s", x->file->name, x->part_path, strerror(errno));
        return fail(g, x);
    }
    if (flock(x->fd, LOCK_EX | LOCK_NB) != 0) {
        if (same_blob_in_flight(g, x)) { /* two names, one content: link it when the other one is done */
            close_part(x);
            x->not_before = vlr_now() + RETRY_DELAY_S;
            x->stage = ST_QUEUED;
            return;
        }
        vlr_fail(&x->err, VLR_ERR_IO, "%s: %s is being written by another download (another `vlreward pull` of "
                                      "this repository?)", x->file->name, x->part_path);
        return fail(g, x);
    }
    struct stat st;
    if (fstat(x->fd, &st) != 0) {
        vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot stat %s: %s", x->file->name, x->part_path, strerror(errno));
        return fail(g, x);
    }
    x->offset = (int64_t)st.st_size;
    if (!x->sha) x->sha = EVP_MD_CTX_new();
    if (!x->sha || !sha_restart(x) || (x->offset > x->size && !truncate_part(x))) {
        vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot prepare %s", x->file->name, x->part_path);
        return fail(g, x);
    }
    if (x->verify && x->offset > 0 && hash_existing(x, &x->err)) return fail(g, x);
    warn_disk_space(g, x);
    if (x->offset == x->size) finish_file(g, x);
    else start_get(g, x);
}

/* ETag: "abc" or W/"abc" -> abc */
static void normalize_etag(const char *raw, char *out, size_t cap) {
    if (strncmp(raw, "W/", 2) == 0) raw += 2;
    size_t n = strlen(raw);
    if (n >= 2 && raw[0] == '"' && raw[n - 1] == '"') raw++, n -= 2;
    snprintf(out, cap, "%.*s", (int)n, raw);
}

static char *join3(const char *a, const char *b, const char *c) {
    vlr_buf s = {0};
    vlr_buf_printf(&s, "%s%s%s", a, b, c);
    if (s.oom) vlr_buf_free(&s);
    return s.data;
}

/* The HEAD told us what the file is: where it goes, whether it is already there, else fetch it. */
static void after_head(engine *g, xfer *x) {
    const hub_pull_plan *plan = g->plan;
    const hub_response *r = &x->resp;
    char where[1024];
    hub_url_for_message(x->url, where, sizeof where);
    if (strcmp(r->repo_commit, plan->commit) != 0) {
        vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: %s answered %s '%s', not commit %s (is HF_ENDPOINT a Hugging Face "
                 "hub?)", x->file->name, where, "X-Repo-Commit", r->repo_commit, plan->commit);
        return fail(g, x);
    }
    char etag[136];
    normalize_etag(r->linked_etag[0] ? r->linked_etag : r->etag, etag, sizeof etag);
    int64_t size = r->linked_size >= 0 ? r->linked_size : (r->status == 200 ? r->content_length : -1);
    if (!hub_etag_valid(etag) || size < 0) {
        vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: %s answered without a usable %s", x->file->name, where,
                 size < 0 ? "size (X-Linked-Size or Content-Length)" : "ETag (X-Linked-Etag or ETag)");
        return fail(g, x);
    }
    if (x->fd >= 0) { /* a retry: the link is fresh, the data and the hash state are kept */
        if (strcmp(etag, x->etag) != 0 || size != x->size) {
            vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: changed on the hub during the download", x->file->name);
            return fail(g, x);
        }
        return start_get(g, x);
    }
    memcpy(x->etag, etag, sizeof etag);
    x->size = size;
    x->verify = is_sha256(etag);
    hub_progress_file(g->progress, x->index, x->file->name, 0, size);
    free(x->final_path);
    free(x->part_path);
    if (plan->local_dir) {
        x->final_path = vlr_path_join(plan->local_dir, x->file->name);
        char suffix[160];
        snprintf(suffix, sizeof suffix, ".%s.incomplete", etag);
        x->part_path = metadata_path(plan, x->file->name, suffix);
    } else {
        x->final_path = join3(plan->repo_dir, "/blobs/", etag);
        x->part_path = x->final_path ? join3(x->final_path, ".incomplete", "") : NULL;
    }
    if (!x->final_path || !x->part_path) {
        vlr_fail(&x->err, VLR_ERR_NOMEM, "out of memory");
        return fail(g, x);
    }
    /* Already there: a blob of another revision, or a local file from an earlier pull or another tool. */
    char hex[65];
    bool present = plan->local_dir
                       ? local_metadata_matches(plan, x->file->name, NULL, etag) ||
                             (x->verify && file_size(x->final_path) == size && file_sha256(x->final_path, hex) &&
                              strcmp(hex, etag) == 0)
                       : file_size(x->final_path) == size;
    if (present) {
        if (record_file(plan, x, &x->err)) return fail(g, x);
        return done(g, x, true);
    }
    open_part(g, x);
}

/* ---- the body ---------------------------------------------------------------------------------------- */

/* "bytes A-B/T": A must be where the file stands and T its size. */
static bool content_range_ok(const xfer *x) {
    long long a, b;
    char total[32];
    if (sscanf(x->resp.content_range, "bytes %lld-%lld/%31s", &a, &b, total) != 3) return false;
    return a == x->offset && (strcmp(total, "*") == 0 || strtoll(total, NULL, 10) == x->size);
}

static size_t body_cb(char *data, size_t size, size_t n, void *userdata) {
    xfer *x = userdata;
    size_t len = size * n;
    long status = x->resp.status;
    if (status != 200 && status != 206) return len; /* an error page: the status says it all */
    if (!x->body_checked) {
        x->body_checked = true;
        if (status == 206 && !content_range_ok(x)) {
            vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: asked for bytes %" PRId64 "- of %" PRId64 ", the server sent "
                     "Content-Range '%s'", x->file->name, x->offset, x->size, x->resp.content_range);
            x->write_failed = true;
            return 0;
        }
        /* the server ignored the Range: start over rather than append a second copy */
        if (status == 200 && x->offset > 0) {
            if (!truncate_part(x)) {
                vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot truncate %s: %s", x->file->name, x->part_path,
                         strerror(errno));
                x->write_failed = true;
                return 0;
            }
            x->resumed_from = 0;
        }
    }
    if ((int64_t)len > x->size - x->offset) {
        vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: the server sent more than the %" PRId64 " bytes the hub announced",
                 x->file->name, x->size);
        x->write_failed = true;
        return 0;
    }
    for (size_t done_bytes = 0; done_bytes < len;) {
        ssize_t w = pwrite(x->fd, data + done_bytes, len - done_bytes, x->offset + (int64_t)done_bytes);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot write %s: %s", x->file->name, x->part_path,
                     w < 0 ? strerror(errno) : "short write");
            x->write_failed = true;
            return 0;
        }
        done_bytes += (size_t)w;
    }
    if (x->verify) EVP_DigestUpdate(x->sha, data, len);
    x->offset += (int64_t)len;
    x->received += (int64_t)len;
    x->attempts = 0; /* progress: the retry budget starts again */
    return len;
}

/* ---- the end of a file --------------------------------------------------------------------------------- */

static void finish_file(engine *g, xfer *x) {
    release_request(g, x);
    if (x->verify) {
        unsigned char md[32];
        unsigned len = 0;
        char hex[65] = "";
        if (EVP_DigestFinal_ex(x->sha, md, &len) == 1 && len == 32)
            for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
        if (strcmp(hex, x->etag) != 0) {
            /* corrupt bytes are not worth resuming from: the next pull starts this file afresh */
            unlink(x->part_path);
            vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: sha256 mismatch: the downloaded bytes hash to %s but the hub's "
                     "X-Linked-Etag is %s; the corrupt download was deleted and did not enter the cache (run the "
                     "pull again)", x->file->name, hex[0] ? hex : "(no digest)", x->etag);
            return fail(g, x);
        }
    }
    /* renamed while still locked, so no other pull can start appending to it in between */
    if (fsync(x->fd) != 0 || rename(x->part_path, x->final_path) != 0) {
        vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot move %s to %s: %s", x->file->name, x->part_path, x->final_path,
                 strerror(errno));
        return fail(g, x);
    }
    close_part(x);
    if (record_file(g->plan, x, &x->err)) return fail(g, x);
    g->res->bytes_transferred += x->received;
    done(g, x, false);
}

static bool transient_status(long status) { return status == 408 || status == 429 || status >= 500; }

static void on_done(engine *g, xfer *x, CURLcode cr) {
    char where[1024], why[VLR_ERR_MSG_CAP];
    const char *url = x->stage == ST_HEAD ? x->url : x->download_url;
    hub_url_for_message(url, where, sizeof where);
    long status = x->resp.status;
    if (x->stage == ST_GET && x->write_failed) return fail(g, x);
    if (cr != CURLE_OK) {
        vlr_snprintf_utf8(why, sizeof why, "%s from %s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(cr), where);
        return retry(g, x, why);
    }
    if (transient_status(status)) {
        vlr_snprintf_utf8(why, sizeof why, "%s answered HTTP %ld", where, status);
        return retry(g, x, why);
    }
    if (x->stage == ST_HEAD) {
        if (status >= 300 && status < 400 && x->resp.location && x->resp.location[0] == '/' &&
            x->resp.location[1] != '/') {
            /* a renamed repository: same host, new path; anything else is the CDN link */
            if (++x->redirects > MAX_RELATIVE_REDIRECTS) {
                vlr_fail(&x->err, VLR_ERR_NETWORK, "%s: more than %d redirects from %s", x->file->name,
                         MAX_RELATIVE_REDIRECTS, where);
                return fail(g, x);
            }
            const char *sep = strstr(x->url, "://");
            size_t origin = (size_t)(sep + 3 - x->url) + strcspn(sep + 3, "/?#");
            vlr_buf next = {0};
            vlr_buf_printf(&next, "%.*s%s", (int)origin, x->url, x->resp.location);
            free(x->url);
            x->url = next.data;
            release_request(g, x);
            return start_head(g, x);
        }
        if (status >= 300 && status < 400 && x->resp.location) {
            free(x->download_url);
            x->download_url = strdup(x->resp.location);
        } else if (status == 200) {
            free(x->download_url);
            x->download_url = strdup(x->url);
        } else if (status == 401 || status == 403) {
            hub_http_error(&g->fatal, g->plan->env, &x->resp, x->url, g->plan->repo, g->plan->commit, NULL,
                           g->plan->gated);
            return cancel_all(g);
        } else {
            hub_http_error(&x->err, g->plan->env, &x->resp, x->url, g->plan->repo, g->plan->commit, x->file->name,
                           g->plan->gated);
            return fail(g, x);
        }
        if (!x->download_url) {
            vlr_fail(&x->err, VLR_ERR_NOMEM, "out of memory");
            return fail(g, x);
        }
        release_request(g, x);
        return after_head(g, x);
    }
    /* the GET */
    if (status == 416 && x->offset > 0) { /* the server has less than we hold: start over */
        if (!truncate_part(x)) {
            vlr_fail(&x->err, VLR_ERR_IO, "%s: cannot truncate %s: %s", x->file->name, x->part_path, strerror(errno));
            return fail(g, x);
        }
        return retry(g, x, "the server refused the Range (HTTP 416), starting over");
    }
    if (status == 200 || status == 206) {
        if (x->offset == x->size) return finish_file(g, x);
        vlr_snprintf_utf8(why, sizeof why, "%s ended the body early", where);
        return retry(g, x, why);
    }
    /* a signed CDN link may have expired: the HEAD of a retry gets a new one */
    if ((status == 401 || status == 403 || status == 410) && !hub_same_origin(url, g->plan->env->endpoint)) {
        vlr_snprintf_utf8(why, sizeof why, "%s answered HTTP %ld", where, status);
        return retry(g, x, why);
    }
    hub_http_error(&x->err, g->plan->env, &x->resp, url, g->plan->repo, g->plan->commit, x->file->name,
                   g->plan->gated);
    fail(g, x);
}

/* ---- the loop ---------------------------------------------------------------------------------------------- */

/* The size of the file when it is already complete in the destination for this commit (no request
 * needed), else -1. */
static int64_t already_there(const hub_pull_plan *plan, const hub_file *f) {
    vlr_buf p = {0};
    if (plan->local_dir) {
        if (!local_metadata_matches(plan, f->name, plan->commit, NULL)) return -1;
        vlr_buf_printf(&p, "%s/%s", plan->local_dir, f->name);
    } else {
        vlr_buf_printf(&p, "%s/snapshots/%s/%s", plan->repo_dir, plan->commit, f->name);
    }
    int64_t size = p.oom ? -1 : file_size(p.data); /* follows the snapshot link into blobs/ */
    vlr_buf_free(&p);
    return size;
}

static int by_size_desc(const void *a, const void *b) {
    const xfer *x = a, *y = b;
    return (x->file->size < y->file->size) - (x->file->size > y->file->size);
}

static vlr_status run(engine *g) {
    const hub_pull_plan *plan = g->plan;
    char *commit_esc = hub_url_escape(plan->commit, false);
    for (size_t i = 0; i < g->n; i++) {
        xfer *x = &g->x[i];
        hub_progress_file(g->progress, x->index, x->file->name, 0, x->file->size);
        if ((x->size = already_there(plan, x->file)) >= 0) {
            done(g, x, true);
            continue;
        }
        char *name_esc = hub_url_escape(x->file->name, true);
        vlr_buf url = {0};
        vlr_buf_printf(&url, "%s/%s/resolve/%s/%s", plan->env->endpoint, plan->repo, commit_esc ? commit_esc : "",
                       name_esc ? name_esc : "");
        free(name_esc);
        if (url.oom || !commit_esc) {
            vlr_buf_free(&url);
            free(commit_esc);
            return VLR_ERR_NOMEM;
        }
        x->url = url.data;
    }
    free(commit_esc);
    for (;;) {
        double now = vlr_now();
        size_t active = 0, waiting = 0;
        for (size_t i = 0; i < g->n; i++) {
            if (g->x[i].stage == ST_HEAD || g->x[i].stage == ST_GET) active++;
            else if (g->x[i].stage == ST_QUEUED) waiting++;
        }
        if (active == 0 && waiting == 0) break;
        for (size_t i = 0; i < g->n && active < (size_t)plan->parallel; i++) {
            xfer *x = &g->x[i];
            if (x->stage != ST_QUEUED || x->not_before > now) continue;
            if (x->t0 == 0) x->t0 = now;
            start_head(g, x);
            active++;
        }
        int running = 0;
        curl_multi_perform(g->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(g->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            xfer *x = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            CURLcode cr = msg->data.result;
            on_done(g, x, cr);
        }
        for (size_t i = 0; i < g->n; i++)
            if (g->x[i].stage == ST_GET) hub_progress_bytes(g->progress, g->x[i].index, g->x[i].offset, g->x[i].received);
        hub_progress_draw(g->progress, false);
        curl_multi_poll(g->multi, NULL, 0, 100, NULL);
    }
    return VLR_OK;
}

vlr_status hub_download(const hub_pull_plan *plan, const hub_file *files, size_t n, hub_pull_result *res,
                        vlr_err *e) {
    memset(res, 0, sizeof *res);
    engine g = {.plan = plan, .n = n, .res = res};
    g.x = calloc(n ? n : 1, sizeof *g.x);
    g.multi = curl_multi_init();
    g.progress = hub_progress_new(plan->log, plan->tty, n);
    if (plan->env->token) {
        vlr_buf a = {0};
        vlr_buf_printf(&a, "Authorization: Bearer %s", plan->env->token);
        g.auth = a.data;
    }
    vlr_status rc = VLR_OK;
    if (!g.x || !g.multi || !g.progress || (plan->env->token && !g.auth)) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            g.x[i].index = i, g.x[i].file = &files[i], g.x[i].fd = -1, g.x[i].resumed_from = -1;
            hub_response_reset(&g.x[i].resp);
        }
        /* the largest first: the long transfers set the total time */
        qsort(g.x, n, sizeof *g.x, by_size_desc);
        if (run(&g) != VLR_OK) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        if (plan->tty) hub_progress_draw(g.progress, true); /* the final bars; a log has the summary line */
        if (rc == VLR_OK && g.has_fatal) {
            *e = g.fatal;
            rc = e->code;
        } else if (rc == VLR_OK && res->n_failed)
            rc = vlr_fail(e, VLR_ERR_NETWORK, "%zu of %zu files failed (see the errors above)", res->n_failed, n);
    }
    for (size_t i = 0; g.x && i < n; i++) {
        xfer *x = &g.x[i];
        release_request(&g, x);
        close_part(x);
        hub_response_reset(&x->resp);
        EVP_MD_CTX_free(x->sha);
        free(x->url);
        free(x->download_url);
        free(x->final_path);
        free(x->part_path);
    }
    if (g.multi) curl_multi_cleanup(g.multi);
    hub_progress_free(g.progress);
    if (g.auth) memset(g.auth, 0, strlen(g.auth));
    free(g.auth);
    free(g.x);
    return rc;
}
