/* image_source.c: the bytes behind an image reference, the way qwen_vl_utils.fetch_image finds
 * them: "http://" / "https://" (downloaded with libcurl), "file://" (the rest is a path, taken as
 * is, no percent-decoding, as upstream), "data:image...base64," (base64 after the first
 * "base64,"), anything else a local path. Relative paths resolve against base_dir.
 *
 * Differences from upstream, on purpose: downloads have a timeout, a redirect limit and a size
 * cap, and may be restricted to the addresses a policy allows (fetch_policy.h); the base64 decoder
 * is strict (base64.c).
 * Not here: decoding the image (image_decode.c). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "base64.h"
#include "fetch_policy.h"
#include "image.h"

/* ---- http(s) ------------------------------------------------------------------------------- */

typedef struct download {
    vlr_buf body;
    uint64_t cap;
    bool too_large;
} download;

static size_t download_write(char *data, size_t size, size_t nmemb, void *user) {
    download *d = user;
    size_t n = size * nmemb; /* curl guarantees size == 1 */
    if (d->body.len + n > d->cap) {
        d->too_large = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    vlr_buf_append(&d->body, data, n);
    return d->body.oom ? 0 : n;
}

/* What the socket callback needs: the policy and the host of the hop under way. */
typedef struct fetch_ctx {
    const vlr_fetch_policy *policy;
    char host[256];
    char refused[300]; /* why the policy refused a connection; "" when none was refused */
} fetch_ctx;

/* libcurl asks here for the socket of every connection it makes, with the address it resolved: the
 * check cannot be raced by DNS answering differently later, and happy-eyeballs falls back to the next
 * address of the host when one is refused. */
static curl_socket_t open_checked(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
    fetch_ctx *x = clientp;
    if (x->policy && (purpose != CURLSOCKTYPE_IPCXN ||
                      !vlr_fetch_policy_allows(x->policy, x->host, &a->addr, x->refused, sizeof x->refused))) {
        if (purpose != CURLSOCKTYPE_IPCXN) snprintf(x->refused, sizeof x->refused, "not an IP connection");
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

/* The host of an http(s) URL (IPv6 brackets off), or false when libcurl cannot parse it. */
static bool url_host(const char *url, char *host, size_t cap) {
    CURLU *u = curl_url();
    char *h = NULL;
    bool ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK;
    if (ok) {
        size_t n = strlen(h);
        bool bracketed = n >= 2 && h[0] == '[' && h[n - 1] == ']';
        ok = snprintf(host, cap, "%.*s", (int)(bracketed ? n - 2 : n), bracketed ? h + 1 : h) < (int)cap;
    }
    curl_free(h);
    curl_url_cleanup(u);
    return ok;
}

#define VLR_MAX_REDIRECTS 5

/* Downloads url. Redirects are followed here, not by libcurl, so that each hop's host is known to the
 * policy check and its scheme checked (http and https only: never file:// or anything else). The
 * whole fetch, redirects included, ends by the per-image timeout and by lim->fetch_deadline. */
static vlr_status fetch_url(const char *url, const vlr_image_limits *lim, uint8_t **out, size_t *n, vlr_err *e) {
    uint64_t cap = lim && lim->max_download_bytes ? lim->max_download_bytes : VLR_IMAGE_DEFAULT_MAX_DOWNLOAD;
    long timeout = lim && lim->timeout_s > 0 ? lim->timeout_s : VLR_IMAGE_DEFAULT_TIMEOUT_S;
    double deadline = vlr_now() + (double)timeout;
    if (lim && lim->fetch_deadline > 0 && lim->fetch_deadline < deadline) deadline = lim->fetch_deadline;
    download d = {.cap = cap};
    fetch_ctx ctx = {.policy = lim ? lim->remote : NULL};
    char curl_msg[CURL_ERROR_SIZE] = "";
    char *hop = NULL;
    vlr_status rc = VLR_OK;
    if (vlr_fetch_policy_off(ctx.policy))
        return vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: remote images are off", url);
    CURL *h = curl_easy_init(); /* initialises libcurl on first use (thread-safe since 7.84) */
    if (!h) return vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: libcurl failed to start", url);
    /* The safety options must take: a libcurl that refuses one (older than 7.85 for the _STR
     * protocol lists) would otherwise fetch other protocols or download without bounds; with a
     * policy, a proxy would make the connection for us to an address we never see: none is used. */
    if (curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)(cap > INT64_MAX ? INT64_MAX : cap)) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_checked) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, &ctx) != CURLE_OK ||
        (ctx.policy && curl_easy_setopt(h, CURLOPT_PROXY, "") != CURLE_OK)) {
        curl_easy_cleanup(h);
        return vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: this libcurl (%s) lacks a required option "
                        "(protocol list, size cap, socket callback or proxy switch)", url, curl_version());
    }
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_msg);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, timeout < 10 ? timeout : 10L);
    curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "vlreward/" VLR_VERSION);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, download_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &d);
    CURLcode res = CURLE_OK;
    const char *current = url;
    for (int hops = 0;; hops++) {
        /* rounded up: a fetch cut by the deadline ends at or after it, so the caller's next look at the
         * clock finds the budget spent (rounded down, it could end a millisecond early and a next
         * fetch would start with nothing left) */
        long left_ms = (long)ceil((deadline - vlr_now()) * 1000);
        if (left_ms <= 0) {
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: out of time (%s)", url,
                          lim && lim->fetch_deadline > 0 ? "the request's fetch budget" : "the timeout");
            break;
        }
        if (!url_host(current, ctx.host, sizeof ctx.host)) {
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: cannot parse %s", url, current);
            break;
        }
        curl_easy_setopt(h, CURLOPT_URL, current);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, left_ms);
        d.body.len = 0; /* a redirect's own body is not the image */
        curl_msg[0] = ctx.refused[0] = '\0';
        res = curl_easy_perform(h);
        long status = 0;
        char *next = NULL;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (res != CURLE_OK || status < 300 || status > 399 || curl_easy_getinfo(h, CURLINFO_REDIRECT_URL, &next) != CURLE_OK ||
            !next)
            break;
        if (hops == VLR_MAX_REDIRECTS) {
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: more than %d redirects", url, VLR_MAX_REDIRECTS);
            break;
        }
        if (strncasecmp(next, "http://", 7) != 0 && strncasecmp(next, "https://", 8) != 0) {
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: redirect to a URL that is not http(s): %.200s", url,
                          next);
            break;
        }
        free(hop);
        if (!(hop = strdup(next))) {
            rc = vlr_fail(e, VLR_ERR_NOMEM, "cannot fetch URL: %s: out of memory", url);
            break;
        }
        current = hop;
    }
    if (rc) {
        /* the loop said why */
    } else if (d.too_large || res == CURLE_FILESIZE_EXCEEDED) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "cannot fetch URL: %s: larger than the limit of %llu bytes", url,
                      (unsigned long long)cap);
    } else if (d.body.oom) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "cannot fetch URL: %s: out of memory", url);
    } else if (ctx.refused[0] && res != CURLE_OK) {
        rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: refused by the remote-image policy: %s", url,
                      ctx.refused);
    } else if (res != CURLE_OK) {
        long status = 0;
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
        if (res == CURLE_HTTP_RETURNED_ERROR)
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: HTTP status %ld", url, status);
        else
            rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: %s", url,
                          curl_msg[0] ? curl_msg : curl_easy_strerror(res));
    } else if (d.body.len == 0) {
        rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot fetch URL: %s: empty response", url);
    }
    curl_easy_cleanup(h);
    free(hop);
    if (rc) {
        vlr_buf_free(&d.body);
        return rc;
    }
    *out = (uint8_t *)d.body.data;
    *n = d.body.len;
    return VLR_OK;
}

/* ---- entry --------------------------------------------------------------------------------- */

static bool is_remote(const char *source) {
    return strncmp(source, "http://", 7) == 0 || strncmp(source, "https://", 8) == 0;
}

/* The base64 text of a data:image URI, or NULL with the error. */
static const char *data_uri_base64(const char *source, vlr_err *e) {
    const char *b64 = strstr(source, "base64,");
    if (!b64) vlr_fail(e, VLR_ERR_INPUT, "data URI without \"base64,\": only base64 data URIs are supported");
    return b64 ? b64 + 7 : NULL;
}

/* The file a local reference names (file:// taken off, relative paths joined to base_dir): *path
 * points into source, or is *joined (malloc'd, to free). */
static vlr_status local_path(const char *source, const char *base_dir, const char **path, char **joined, vlr_err *e) {
    *joined = NULL;
    *path = strncmp(source, "file://", 7) == 0 ? source + 7 : source;
    if (!(*path)[0]) return vlr_fail(e, VLR_ERR_INPUT, "%s: empty path", source);
    if ((*path)[0] != '/' && base_dir && base_dir[0]) {
        if (!(*joined = vlr_path_join(base_dir, *path))) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        *path = *joined;
    }
    return VLR_OK;
}

static vlr_status not_an_image_uri(vlr_err *e) {
    return vlr_fail(e, VLR_ERR_INPUT, "data URI is not an image (expected data:image/...;base64,...)");
}

static uint64_t download_cap(const vlr_image_limits *lim) {
    return lim && lim->max_download_bytes ? lim->max_download_bytes : VLR_IMAGE_DEFAULT_MAX_DOWNLOAD;
}

vlr_status vlr_image_read_source(const char *source, const char *base_dir, const vlr_image_limits *lim,
                                 uint8_t **bytes, size_t *n, vlr_err *e) {
    *bytes = NULL;
    *n = 0;
    if (!source || !source[0]) return vlr_fail(e, VLR_ERR_INPUT, "empty image reference");
    if (is_remote(source)) return fetch_url(source, lim, bytes, n, e);
    if (strncmp(source, "data:image", 10) == 0) {
        const char *b64 = data_uri_base64(source, e);
        return b64 ? vlr_base64_decode(b64, strlen(b64), download_cap(lim), "data URI", bytes, n, e) : VLR_ERR_INPUT;
    }
    if (strncmp(source, "data:", 5) == 0) return not_an_image_uri(e);
    char *joined, *data = NULL;
    const char *path;
    vlr_status rc = local_path(source, base_dir, &path, &joined, e);
    if (!rc) rc = vlr_read_file(path, VLR_IMAGE_MAX_FILE_BYTES, &data, n, e);
    free(joined);
    if (rc) return rc;
    *bytes = (uint8_t *)data;
    return VLR_OK;
}

/* Image headers are in the first bytes, except a JPEG's after large metadata segments: this much is
 * read first, and all of the source only when the header lies further in. */
#define VLR_PROBE_PREFIX (64u << 10)

/* The first bytes of a local file (up to cap of them) into buf, opened as vlr_read_file opens it (a
 * FIFO or a device is refused, never waited on). */
static vlr_status read_prefix(const char *path, uint8_t *buf, size_t cap, size_t *n, vlr_err *e) {
    *n = 0;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return vlr_fail(e, VLR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    vlr_status rc = VLR_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = vlr_fail(e, VLR_ERR_IO, "%s: not a regular file", path);
    } else {
        while (*n < cap) {
            ssize_t k = read(fd, buf + *n, cap - *n);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) rc = vlr_fail(e, VLR_ERR_IO, "%s: cannot read: %s", path, strerror(errno));
            if (k <= 0) break;
            *n += (size_t)k;
        }
    }
    close(fd);
    return rc;
}

vlr_status vlr_image_probe_source(const char *source, const char *base_dir, const vlr_image_limits *lim,
                                  vlr_image_file_info *info, vlr_err *e) {
    memset(info, 0, sizeof *info);
    if (!source || !source[0]) return vlr_fail(e, VLR_ERR_INPUT, "empty image reference");
    if (is_remote(source))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: the size of a remote image is known once it is fetched", source);
    uint8_t *head = vlr_malloc(VLR_PROBE_PREFIX, e);
    if (!head) return VLR_ERR_NOMEM;
    size_t n = 0;
    char *joined = NULL;
    const char *path = NULL;
    vlr_status rc = VLR_OK;
    if (strncmp(source, "data:image", 10) == 0) {
        const char *b64 = data_uri_base64(source, e);
        if (b64) n = vlr_base64_decode_head(b64, strlen(b64), head, VLR_PROBE_PREFIX);
        else rc = VLR_ERR_INPUT;
    } else if (strncmp(source, "data:", 5) == 0) {
        rc = not_an_image_uri(e);
    } else if ((rc = local_path(source, base_dir, &path, &joined, e)) == VLR_OK) {
        rc = read_prefix(path, head, VLR_PROBE_PREFIX, &n, e);
    }
    bool need_more = false;
    const char *name = strncmp(source, "data:", 5) == 0 ? "data URI" : source;
    if (!rc) rc = vlr_image_probe(head, n, name, info, &need_more, e);
    free(head);
    free(joined);
    if (rc && need_more && n == VLR_PROBE_PREFIX) { /* the header lies further in: read it all */
        uint8_t *all = NULL;
        if ((rc = vlr_image_read_source(source, base_dir, lim, &all, &n, e)) == VLR_OK)
            rc = vlr_image_probe(all, n, name, info, &need_more, e);
        free(all);
    }
    return rc;
}
