/* hub_http.c: talking to the hub: the revision API, the response headers the protocol reads
 * (X-Repo-Commit, X-Linked-Etag, X-Linked-Size, X-Error-Code...), and error answers turned into
 * messages that say what to do. The token travels only in an Authorization header to the endpoint's
 * own host and never appears in a message. */
#include "hub.h"

#include <ctype.h>
#include <stdlib.h>

#include "internal.h"

#define API_MAX_BYTES (16u << 20) /* the file list of a repository with some 100,000 files */

void hub_curl_defaults(CURL *h, char *errbuf) {
    errbuf[0] = '\0';
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "vlreward/" VLR_VERSION);
}

/* ---- response headers -------------------------------------------------------------------------- */

void hub_response_reset(hub_response *r) {
    free(r->location);
    memset(r, 0, sizeof *r);
    r->linked_size = r->content_length = -1;
}

/* Copies a header value (trimmed) into dst; values that do not fit are dropped, never cut. */
static void copy_value(char *dst, size_t cap, const char *v, size_t n, bool printable_only) {
    if (n >= cap) return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (printable_only && (c < 0x20 || c > 0x7e)) c = '?';
        dst[k++] = (char)c;
    }
    dst[k] = '\0';
}

static int64_t parse_size(const char *v, size_t n) {
    if (n == 0 || n > 18) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)v[i])) return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

size_t hub_response_header_cb(char *line, size_t size, size_t n, void *userdata) {
    hub_response *r = userdata;
    size_t len = size * n;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) { /* a new response (after a redirect or a 100) */
        hub_response_reset(r);
        const char *sp = memchr(line, ' ', len);
        if (sp) r->status = strtol(sp + 1, NULL, 10);
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t name_len = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t')) end--;
    size_t vn = (size_t)(end - v);
#define IS(name) (name_len == sizeof(name) - 1 && strncasecmp(line, name, name_len) == 0)
    if (IS("Location")) {
        free(r->location);
        r->location = strndup(v, vn);
    } else if (IS("X-Repo-Commit")) copy_value(r->repo_commit, sizeof r->repo_commit, v, vn, true);
    else if (IS("X-Linked-Etag")) copy_value(r->linked_etag, sizeof r->linked_etag, v, vn, true);
    else if (IS("ETag")) copy_value(r->etag, sizeof r->etag, v, vn, true);
    else if (IS("X-Linked-Size")) r->linked_size = parse_size(v, vn);
    else if (IS("Content-Length")) r->content_length = parse_size(v, vn);
    else if (IS("Content-Range")) copy_value(r->content_range, sizeof r->content_range, v, vn, true);
    else if (IS("Content-Encoding")) copy_value(r->content_encoding, sizeof r->content_encoding, v, vn, true);
    else if (IS("X-Error-Code")) copy_value(r->error_code, sizeof r->error_code, v, vn, true);
    else if (IS("X-Error-Message")) /* a long one is cut: it is only shown */
        copy_value(r->error_message, sizeof r->error_message, v, vn < sizeof r->error_message ? vn : sizeof r->error_message - 1,
                   true);
#undef IS
    return len;
}

/* ---- URLs ------------------------------------------------------------------------------------------ */

void hub_url_for_message(const char *url, char *out, size_t cap) {
    size_t n = strcspn(url, "?#");
    vlr_snprintf_utf8(out, cap, "%.*s", (int)(n < 4096 ? n : 4096), url);
}

/* Length of scheme://authority at the start of url, 0 when url has no scheme. */
static size_t origin_len(const char *url) {
    const char *sep = strstr(url, "://");
    if (!sep) return 0;
    return (size_t)(sep + 3 - url) + strcspn(sep + 3, "/?#");
}

bool hub_same_origin(const char *url, const char *endpoint) {
    size_t a = origin_len(url), b = origin_len(endpoint);
    return a && a == b && strncasecmp(url, endpoint, a) == 0;
}

char *hub_url_escape(const char *s, bool keep_slash) {
    vlr_buf b = {0};
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (isalnum(*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~' || (keep_slash && *c == '/'))
            vlr_buf_append(&b, c, 1);
        else vlr_buf_printf(&b, "%%%02X", *c);
    }
    if (!b.data) vlr_buf_puts(&b, "");
    if (b.oom) {
        vlr_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- errors ------------------------------------------------------------------------------------------ */

void hub_http_error(vlr_err *e, const hub_env *env, const hub_response *r, const char *url, const char *repo,
                    const char *rev, const char *file, bool gated) {
    char where[1024];
    hub_url_for_message(url, where, sizeof where);
    char detail[sizeof r->error_message + 64];
    if (r->error_message[0]) snprintf(detail, sizeof detail, "HTTP %ld: %s", r->status, r->error_message);
    else snprintf(detail, sizeof detail, "HTTP %ld", r->status);
    const char *code = r->error_code;
    const char *token_said = env->token ? env->token_source : NULL;
    bool denied = r->status == 401 || r->status == 403;
    if (strcmp(code, "GatedRepo") == 0 || (denied && gated && !code[0])) {
        if (token_said)
            vlr_fail(e, VLR_ERR_NETWORK, "%s is a gated repository and the token from %s has no access to it (%s): "
                                         "open %s/%s, accept its terms with the account of that token, and try again",
                     repo, token_said, detail, env->endpoint, repo);
        else
            vlr_fail(e, VLR_ERR_NETWORK, "%s is a gated repository and no token was sent (%s): open %s/%s, accept its "
                                         "terms, then set HF_TOKEN (or run `hf auth login`) and try again",
                     repo, detail, env->endpoint, repo);
    } else if (strcmp(r->error_message, "Invalid credentials in Authorization header") == 0) {
        vlr_fail(e, VLR_ERR_NETWORK, "the hub refused the token from %s (%s): set a valid token in HF_TOKEN or run "
                                     "`hf auth login`", token_said ? token_said : "the request", detail);
    } else if (strcmp(code, "RepoNotFound") == 0 || (!file && (r->status == 401 || r->status == 404) && !code[0])) {
        vlr_fail(e, VLR_ERR_NETWORK, "repository %s not found at %s (%s)%s", repo, env->endpoint, detail,
                 token_said ? "" : "; if it is private, set HF_TOKEN (or run `hf auth login`)");
    } else if (strcmp(code, "RevisionNotFound") == 0) {
        vlr_fail(e, VLR_ERR_NETWORK, "revision '%s' not found in %s (%s)", rev, repo, detail);
    } else if (file && (strcmp(code, "EntryNotFound") == 0 || r->status == 404)) {
        vlr_fail(e, VLR_ERR_NETWORK, "%s: not found in %s at revision %s (%s, %s)", file, repo, rev, detail, where);
    } else if (denied) {
        vlr_fail(e, VLR_ERR_NETWORK, "%s%saccess denied by %s (%s)%s", file ? file : "", file ? ": " : "", where, detail,
                 token_said ? "" : "; if the repository is private or gated, set HF_TOKEN (or run `hf auth login`)");
    } else {
        vlr_fail(e, VLR_ERR_NETWORK, "%s%s%s answered %s", file ? file : "", file ? ": " : "", where, detail);
    }
}

/* ---- the revision API ------------------------------------------------------------------------------ */

typedef struct body_sink {
    vlr_buf buf;
    bool too_big;
} body_sink;

static size_t body_write(char *data, size_t size, size_t n, void *userdata) {
    body_sink *s = userdata;
    size_t len = size * n;
    if (s->buf.len + len > API_MAX_BYTES) {
        s->too_big = true;
        return 0;
    }
    vlr_buf_append(&s->buf, data, len);
    return s->buf.oom ? 0 : len;
}

static vlr_status parse_revision(const char *text, size_t len, const char *url, hub_repo_info *info, vlr_err *e) {
    vlr_err pe;
    vlr_json_doc *doc = vlr_json_parse(text, len, &pe);
    if (!doc) return vlr_fail(e, VLR_ERR_FORMAT, "%s: the answer is not JSON: %s", url, pe.msg);
    const vlr_json *root = vlr_json_root(doc);
    const vlr_json *sha = vlr_json_get(root, "sha"), *siblings = vlr_json_get(root, "siblings");
    const vlr_json *gated = vlr_json_get(root, "gated");
    vlr_status rc = VLR_OK;
    if (!vlr_json_is(sha, VLR_JSON_STRING) || !hub_is_commit(sha->str)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: the answer has no \"sha\" commit hash", url);
    } else if (!vlr_json_is(siblings, VLR_JSON_ARRAY)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: the answer has no \"siblings\" file list", url);
    } else {
        memcpy(info->commit, sha->str, 41);
        /* "gated" is false, "auto" or "manual" */
        info->gated = gated && (vlr_json_is(gated, VLR_JSON_TRUE) || vlr_json_is(gated, VLR_JSON_STRING));
        info->files = calloc(siblings->len ? siblings->len : 1, sizeof *info->files);
        if (!info->files) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        for (size_t i = 0; rc == VLR_OK && i < siblings->len; i++) {
            const vlr_json *name = vlr_json_get(&siblings->items[i], "rfilename");
            const vlr_json *size = vlr_json_get(&siblings->items[i], "size");
            int64_t bytes;
            if (!vlr_json_is(name, VLR_JSON_STRING) || strlen(name->str) != name->len) {
                rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: siblings[%zu] has no \"rfilename\" string", url, i);
                break;
            }
            hub_file *f = &info->files[info->n_files];
            f->name = strdup(name->str);
            f->size = vlr_json_int(size, &bytes) && bytes >= 0 ? bytes : -1;
            if (!f->name) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
            else info->n_files++;
        }
    }
    vlr_json_free(doc);
    return rc;
}

vlr_status hub_api_revision(const hub_env *env, const char *repo, const char *rev, hub_repo_info *info,
                            vlr_err *e) {
    memset(info, 0, sizeof *info);
    char *rev_esc = hub_url_escape(rev, false);
    vlr_buf url = {0}, auth = {0};
    vlr_buf_printf(&url, "%s/api/models/%s/revision/%s?blobs=true", env->endpoint, repo, rev_esc ? rev_esc : "");
    free(rev_esc);
    if (env->token) vlr_buf_printf(&auth, "Authorization: Bearer %s", env->token);
    CURL *h = curl_easy_init();
    if (!h || url.oom || auth.oom) {
        if (h) curl_easy_cleanup(h);
        vlr_buf_free(&url);
        vlr_buf_free(&auth);
        return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    }
    char errbuf[CURL_ERROR_SIZE], where[1024];
    hub_url_for_message(url.data, where, sizeof where);
    hub_response resp = {0};
    hub_response_reset(&resp);
    body_sink body = {0};
    struct curl_slist *headers = auth.data ? curl_slist_append(NULL, auth.data) : NULL;
    hub_curl_defaults(h, errbuf);
    curl_easy_setopt(h, CURLOPT_URL, url.data);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_TIMEOUT, 60L);
    /* a renamed repository redirects; libcurl keeps the Authorization header on the same host only */
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, hub_response_header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &resp);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    CURLcode cr = curl_easy_perform(h);
    vlr_status rc = VLR_OK;
    if (body.too_big) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "%s: the answer is larger than %u MB", where, API_MAX_BYTES >> 20);
    } else if (cr != CURLE_OK && !(cr == CURLE_WRITE_ERROR && resp.status >= 400)) {
        rc = vlr_fail(e, VLR_ERR_NETWORK, "cannot reach %s: %s", where, errbuf[0] ? errbuf : curl_easy_strerror(cr));
    } else if (resp.status != 200) {
        hub_http_error(e, env, &resp, url.data, repo, rev, NULL, false);
        rc = e->code;
    } else {
        rc = parse_revision(body.buf.data ? body.buf.data : "", body.buf.len, where, info, e);
    }
    if (rc) hub_repo_info_free(info);
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    hub_response_reset(&resp);
    vlr_buf_free(&body.buf);
    vlr_buf_free(&url);
    if (auth.data) memset(auth.data, 0, auth.len);
    vlr_buf_free(&auth);
    return rc;
}

void hub_repo_info_free(hub_repo_info *info) {
    for (size_t i = 0; i < info->n_files; i++) free(info->files[i].name);
    free(info->files);
    memset(info, 0, sizeof *info);
}
