/* test_pull.c: `vlreward pull` and `--model ORG/NAME` against a mock Hugging Face Hub on loopback.
 *
 * Two loopback HTTP/1.1 servers (tests/test_http_mock.h) run inside this process: the "hub" (the
 * revision API, HEAD/GET on /ORG/NAME/resolve/REV/FILE with X-Repo-Commit, X-Linked-Etag,
 * X-Linked-Size and ETag headers as the real hub sends them, X-Error-Code answers for gated
 * repositories, missing repositories, revisions and files) and the "CDN" (the large files behind the
 * hub's 302, with Range support). They serve
 * tests/reference/models/tiny-a as the repository tiny/tiny-a and log every request, so the tests can
 * say what was transferred: a whole pull lays out the huggingface_hub cache that `info --model ORG/NAME`
 * reads offline, a second pull transfers nothing, a dropped connection resumes with Range for the
 * rest only, a corrupted byte never enters the cache, the token never reaches the CDN or a message.
 *
 * The vlreward binary is $VLR_BUILD/vlreward (default build/); every run gets its own HF_HOME and
 * the mock's HF_ENDPOINT, never the user's cache or token. An alarm() ends a hung run.
 * VLR_PULL_SHOW=1 prints the stderr (and terminal output) of every run, to see what users see. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <pty.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test.h"
#include "test_cmd.h"
#include "test_http_mock.h"

#define MODEL "tests/reference/models/tiny-a"
#define COMMIT "4a1f0c3e5b7d9f2a4c6e8b0d1f3a5c7e9b2d4f6a"
#define GOOD_TOKEN "hf_mockGoodToken1234567890abcdef"
#define BAD_TOKEN "hf_mockWrongToken0987654321fedcba"

/* ---- the repository ------------------------------------------------------------------------------ */

typedef struct mock_file {
    const char *name;
    bool lfs; /* served through the CDN, ETag = sha256 */
    char *data;
    size_t size;
    char sha256[65], sha1[41];
} mock_file;

static mock_file files[] = {
    {.name = "config.json"},    {.name = "chat_template.json"},    {.name = "preprocessor_config.json"},
    {.name = "tokenizer.json", .lfs = true},  {.name = "tokenizer_config.json"},
    {.name = "model.safetensors", .lfs = true}, {.name = "value_head.safetensors", .lfs = true},
};
#define N_FILES (sizeof files / sizeof files[0])

/* Listed by the API, served if asked, never wanted by vlreward. */
static const char *unwanted[] = {"pytorch_model.bin", "model.onnx", "onnx/model.onnx", "README.md",
                                 ".gitattributes", "training_args.bin", "sub/config.json"};
#define N_UNWANTED (sizeof unwanted / sizeof unwanted[0])

typedef struct mock_repo {
    const char *id;
    bool gated;
    const char *missing;  /* listed, but resolve answers 404 EntryNotFound */
    bool bin_only;        /* config.json and pytorch_model.bin only */
    const char *copy;     /* one more file with the content of config.json (the same blob) */
} mock_repo;

static const mock_repo repos[] = {
    {.id = "tiny/tiny-a"},
    {.id = "tiny/gated", .gated = true},
    {.id = "tiny/broken", .missing = "missing.json"},
    {.id = "tiny/bin-only", .bin_only = true},
    {.id = "tiny/copies", .copy = "config.copy.json"},
};

static const mock_repo *find_repo(const char *id, size_t len) {
    for (size_t i = 0; i < sizeof repos / sizeof repos[0]; i++)
        if (strlen(repos[i].id) == len && memcmp(repos[i].id, id, len) == 0) return &repos[i];
    return NULL;
}

static const mock_file *find_file(const char *name) {
    for (size_t i = 0; i < N_FILES; i++)
        if (strcmp(files[i].name, name) == 0) return &files[i];
    return NULL;
}

static const mock_file *find_blob(const char *sha256) {
    for (size_t i = 0; i < N_FILES; i++)
        if (files[i].lfs && strcmp(files[i].sha256, sha256) == 0) return &files[i];
    return NULL;
}

static void hex(const unsigned char *md, unsigned n, char *out) {
    for (unsigned i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool load_files(void) {
    for (size_t i = 0; i < N_FILES; i++) {
        mock_file *f = &files[i];
        char path[256];
        vlr_err e;
        snprintf(path, sizeof path, "%s/%s", MODEL, f->name);
        if (vlr_read_file(path, 1 << 26, &f->data, &f->size, &e) != VLR_OK) return false;
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        EVP_Digest(f->data, f->size, md, &n, EVP_sha256(), NULL);
        hex(md, n, f->sha256);
        /* git's blob id: sha1 of "blob SIZE\0" + content */
        char head[64];
        int hl = snprintf(head, sizeof head, "blob %zu", f->size) + 1;
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
        EVP_DigestUpdate(ctx, head, (size_t)hl);
        EVP_DigestUpdate(ctx, f->data, f->size);
        EVP_DigestFinal_ex(ctx, md, &n);
        EVP_MD_CTX_free(ctx);
        hex(md, n, f->sha1);
    }
    return true;
}

static const char *etag_of(const mock_file *f) { return f->lfs ? f->sha256 : f->sha1; }

/* ---- what the mock saw, and the faults it injects ----------------------------------------------- */

enum kind { K_API, K_HEAD, K_GET, K_CDN };

typedef struct seen {
    enum kind kind;
    char path[256];
    long long range_start; /* -1: no Range */
    char auth[96];         /* the Authorization header, "" when absent */
    long long bytes;       /* body bytes handed to the socket */
} seen;

#define LOG_CAP 4096
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static seen req_log[LOG_CAP];
static int n_log;

static struct {
    const char *drop_file;     /* the CDN closes the connection after drop_after bytes, once */
    long long drop_after;
    bool dropped;
    const char *corrupt_file;  /* the CDN flips one byte in the middle of this file */
} fault;

static int log_request(enum kind kind, const char *path, long long range_start, const char *auth) {
    pthread_mutex_lock(&log_lock);
    int i = n_log < LOG_CAP ? n_log++ : -1;
    if (i >= 0) {
        req_log[i] = (seen){.kind = kind, .range_start = range_start};
        snprintf(req_log[i].path, sizeof req_log[i].path, "%s", path);
        snprintf(req_log[i].auth, sizeof req_log[i].auth, "%s", auth ? auth : "");
    }
    pthread_mutex_unlock(&log_lock);
    return i;
}

static int log_count(void) {
    pthread_mutex_lock(&log_lock);
    int n = n_log;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* Requests of a kind from index `from` on (whose path contains `part` when not NULL). */
static int count_kind(int from, enum kind kind, const char *part) {
    int n = 0;
    pthread_mutex_lock(&log_lock);
    for (int i = from; i < n_log; i++)
        if (req_log[i].kind == kind && (!part || strstr(req_log[i].path, part))) n++;
    pthread_mutex_unlock(&log_lock);
    return n;
}

/* ---- the servers ----------------------------------------------------------------------------------- */

static mock_server hub_server, cdn_server;

static void reply(mock_reply *r, int status, const char *body, const char *const *headers) {
    mock_text(r, status, body);
    for (size_t i = 0; headers && headers[i]; i += 2) mock_header(r, headers[i], headers[i + 1]);
}

static void reply_error(mock_reply *r, int status, const char *code, const char *msg) {
    const char *h[] = {"X-Error-Code", code, "X-Error-Message", msg, "X-Repo-Commit", COMMIT, NULL};
    if (!code) h[0] = "X-Mock", h[1] = "none";
    char body[512];
    snprintf(body, sizeof body, "{\"error\": \"%s\"}", msg);
    reply(r, status, body, h);
}

static void api_json(const mock_repo *repo, vlr_buf *b) {
    vlr_buf_printf(b, "{\"_id\": \"mock\", \"id\": \"%s\", \"sha\": \"%s\", \"private\": false, \"gated\": %s, "
                      "\"siblings\": [", repo->id, COMMIT, repo->gated ? "\"manual\"" : "false");
    if (repo->bin_only) {
        vlr_buf_printf(b, "{\"rfilename\": \"config.json\", \"size\": %zu}, {\"rfilename\": \"pytorch_model.bin\", "
                          "\"size\": 1000}]}", files[0].size);
        return;
    }
    for (size_t i = 0; i < N_FILES; i++) {
        const mock_file *f = &files[i];
        vlr_buf_printf(b, "%s{\"rfilename\": \"%s\", \"size\": %zu, \"blobId\": \"%s\"", i ? ", " : "", f->name, f->size,
                       f->sha1);
        if (f->lfs)
            vlr_buf_printf(b, ", \"lfs\": {\"sha256\": \"%s\", \"size\": %zu, \"pointerSize\": 134}", f->sha256, f->size);
        vlr_buf_puts(b, "}");
    }
    for (size_t i = 0; i < N_UNWANTED; i++) vlr_buf_printf(b, ", {\"rfilename\": \"%s\", \"size\": 10}", unwanted[i]);
    if (repo->missing) vlr_buf_printf(b, ", {\"rfilename\": \"%s\", \"size\": 10}", repo->missing);
    /* listed twice, as a broken listing might: fetched once */
    if (repo->copy) vlr_buf_printf(b, ", {\"rfilename\": \"%s\", \"size\": %zu}, {\"rfilename\": \"%s\"}", repo->copy,
                                   files[0].size, repo->copy);
    vlr_buf_puts(b, "]}");
}

static bool revision_known(const char *rev) {
    return strcmp(rev, "main") == 0 || strcmp(rev, "v1") == 0 || strcmp(rev, COMMIT) == 0;
}

/* /api/models/ORG/NAME/revision/REV */
static void serve_api(mock_reply *r, const char *rest, const char *auth) {
    if (auth && strcmp(auth, "Bearer hf_invalid") == 0) {
        reply_error(r, 401, NULL, "Invalid credentials in Authorization header");
        return;
    }
    const char *sep = strstr(rest, "/revision/");
    const mock_repo *repo = sep ? find_repo(rest, (size_t)(sep - rest)) : NULL;
    if (!repo) {
        reply_error(r, 401, "RepoNotFound", "Repository not found");
        return;
    }
    if (!revision_known(sep + 10)) {
        reply_error(r, 404, "RevisionNotFound", "Invalid rev id");
        return;
    }
    vlr_buf b = {0};
    api_json(repo, &b);
    const char *h[] = {"Content-Type", "application/json", NULL};
    reply(r, 200, b.data, h);
    vlr_buf_free(&b);
}

/* /ORG/NAME/resolve/REV/FILE */
static void serve_resolve(mock_reply *r, const char *path, const char *auth) {
    const char *sep = strstr(path, "/resolve/");
    const mock_repo *repo = sep ? find_repo(path + 1, (size_t)(sep - path - 1)) : NULL;
    if (!repo) {
        reply_error(r, 401, "RepoNotFound", "Repository not found");
        return;
    }
    const char *rev = sep + 9, *slash = strchr(rev, '/');
    char revision[64];
    snprintf(revision, sizeof revision, "%.*s", slash ? (int)(slash - rev) : 0, rev);
    if (!slash || !revision_known(revision)) {
        reply_error(r, 404, "RevisionNotFound", "Invalid rev id");
        return;
    }
    if (repo->gated) {
        char want[128];
        snprintf(want, sizeof want, "Bearer %s", GOOD_TOKEN);
        /* the real hub's words */
        if (!auth) {
            reply_error(r, 401, "GatedRepo", "Access to model tiny/gated is restricted. You must have access to "
                                             "it and be authenticated to access it. Please log in.");
            return;
        }
        if (strcmp(auth, want) != 0) {
            reply_error(r, 403, "GatedRepo", "Access to model tiny/gated is restricted and you are not in the "
                                             "authorized list.");
            return;
        }
    }
    const char *name = slash + 1;
    const mock_file *f = repo->copy && strcmp(name, repo->copy) == 0 ? &files[0] : find_file(name);
    bool listed_extra = false;
    for (size_t i = 0; i < N_UNWANTED; i++) listed_extra |= strcmp(name, unwanted[i]) == 0;
    static const char *const extra_headers[] = {"X-Repo-Commit", COMMIT, "ETag", "\"0000\"", NULL};
    if (listed_extra) {
        reply(r, 200, "not for vlreward", extra_headers);
        return;
    }
    if (!f) {
        reply_error(r, 404, "EntryNotFound", "Entry not found");
        return;
    }
    char size[32], etag[80], location[256];
    snprintf(size, sizeof size, "%zu", f->size);
    if (f->lfs) {
        snprintf(etag, sizeof etag, "\"%s\"", f->sha256);
        snprintf(location, sizeof location, "http://127.0.0.1:%d/cdn/%s?X-Amz-Signature=mocksignature",
                 cdn_server.port, f->sha256);
        const char *h[] = {"X-Repo-Commit", COMMIT, "X-Linked-Etag", etag, "X-Linked-Size", size,
                           "ETag", "\"pointer-etag-not-the-blob\"", "Location", location, NULL};
        reply(r, 302, "", h);
        return;
    }
    snprintf(etag, sizeof etag, "\"%s\"", f->sha1);
    r->status = 200;
    r->body = f->data;
    r->body_len = f->size;
    mock_header(r, "X-Repo-Commit", COMMIT);
    mock_header(r, "ETag", etag);
}

static void on_hub(void *ctx, const http_head *h, const char *path, mock_reply *r) {
    const char *auth = http_head_value(h, "Authorization");
    bool head = strcmp(h->method, "HEAD") == 0;
    if (strncmp(path, "/api/models/", 12) == 0) {
        r->tag = log_request(K_API, path, -1, auth);
        serve_api(r, path + 12, auth);
        return;
    }
    r->tag = log_request(head ? K_HEAD : K_GET, path, -1, auth);
    serve_resolve(r, path, auth);
}

/* /cdn/SHA256, the whole blob or from Range's start on; the faults are set up here, injected by the
 * server. */
static void on_cdn(void *ctx, const http_head *h, const char *path, mock_reply *r) {
    const char *auth = http_head_value(h, "Authorization"), *range = http_head_value(h, "Range");
    long long start = -1;
    if (range && sscanf(range, "bytes=%lld-", &start) != 1) start = -1;
    r->tag = log_request(K_CDN, path, start, auth);
    const mock_file *f = strncmp(path, "/cdn/", 5) == 0 ? find_blob(path + 5) : NULL;
    if (!f) {
        reply(r, 404, "no such blob", NULL);
        return;
    }
    if (start >= (long long)f->size) {
        reply(r, 416, "", NULL);
        return;
    }
    long long from = start > 0 ? start : 0;
    r->status = 200;
    r->body = f->data + from;
    r->body_len = f->size - (size_t)from;
    if (start >= 0) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %lld-%zu/%zu", start, f->size - 1, f->size);
        mock_header(r, "Content-Range", cr);
        r->status = 206;
    }
    /* fault offsets are the blob's, the server's the body's */
    pthread_mutex_lock(&log_lock);
    if (fault.drop_file && !fault.dropped && strcmp(fault.drop_file, f->name) == 0) {
        r->drop_after = fault.drop_after > from ? fault.drop_after - from : 0;
        fault.dropped = true;
    }
    if (fault.corrupt_file && strcmp(fault.corrupt_file, f->name) == 0) r->corrupt_at = (long long)f->size / 2 - from;
    pthread_mutex_unlock(&log_lock);
}

/* the server's count of body bytes sent, into the request log */
static void on_sent(void *ctx, int log_index, long long n) {
    pthread_mutex_lock(&log_lock);
    req_log[log_index].bytes += n;
    pthread_mutex_unlock(&log_lock);
}

/* ---- running vlreward ----------------------------------------------------------------------------- */

static char bin[512], tmpdir[256], err_path[300];

/* One run of vlreward: exit status, stdout and stderr (malloc'd). */
typedef struct run {
    int rc;
    char *out, *err;
} run;

static void run_free(run *r) {
    free(r->out);
    free(r->err);
    *r = (run){0};
}

/* Runs `env EXTRA vlreward ARGS` with HF_HOME=tmpdir/HOME and the mock's endpoint; every other Hugging
 * Face variable is cleared. The result replaces what r held. */
static void vlr(run *r, const char *home, const char *extra_env, const char *args) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "env -u HF_TOKEN -u HUGGING_FACE_HUB_TOKEN -u HF_HUB_CACHE -u HUGGINGFACE_HUB_CACHE -u HF_TOKEN_PATH "
             "-u HF_HUB_OFFLINE -u TRANSFORMERS_OFFLINE -u XDG_CACHE_HOME -u HF_HUB_DISABLE_PROGRESS_BARS "
             "HF_ENDPOINT=http://127.0.0.1:%d HF_HOME=%s/%s %s %s %s",
             hub_server.port, tmpdir, home, extra_env ? extra_env : "", bin, args);
    run_free(r);
    r->rc = test_run(cmd, err_path, &r->out);
    r->err = test_read_text(err_path);
    if (getenv("VLR_PULL_SHOW")) fprintf(stderr, "==== %s\n%s---- exit %d\n", args, r->err, r->rc);
}

static char *cache_path(const char *home, const char *rel) {
    vlr_buf b = {0};
    vlr_buf_printf(&b, "%s/%s/hub/models--tiny--tiny-a/%s", tmpdir, home, rel);
    return b.data;
}

/* The file at path has exactly the bytes of f. */
static bool same_bytes(const char *path, const mock_file *f) {
    char *data = NULL;
    size_t len = 0;
    vlr_err e;
    if (vlr_read_file(path, 1 << 26, &data, &len, &e) != VLR_OK) return false;
    bool same = len == f->size && memcmp(data, f->data, len) == 0;
    free(data);
    return same;
}

static int count_incomplete(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *ent;
    while (d && (ent = readdir(d)))
        if (strstr(ent->d_name, ".incomplete")) n++;
    if (d) closedir(d);
    return n;
}

/* The cache of `home` holds every file of tiny-a at COMMIT as huggingface_hub lays it out. */
static void check_cache_layout(const char *home) {
    for (size_t i = 0; i < N_FILES; i++) {
        const mock_file *f = &files[i];
        char rel[200], link[256] = "", want[128];
        snprintf(rel, sizeof rel, "snapshots/%s/%s", COMMIT, f->name);
        char *pointer = cache_path(home, rel);
        ssize_t n = readlink(pointer, link, sizeof link - 1);
        if (n > 0) link[n] = '\0';
        snprintf(want, sizeof want, "../../blobs/%s", etag_of(f));
        CHECK(strcmp(link, want) == 0, "%s links to '%s', want '%s'", f->name, link, want);
        snprintf(rel, sizeof rel, "blobs/%s", etag_of(f));
        char *blob = cache_path(home, rel);
        struct stat st;
        CHECK(lstat(blob, &st) == 0 && S_ISREG(st.st_mode), "%s is a regular file", blob);
        CHECK(same_bytes(pointer, f), "%s has the repository's bytes", f->name);
        free(pointer);
        free(blob);
    }
    char *ref = cache_path(home, "refs/main"), *ref_text = test_read_text(ref);
    CHECK(strcmp(ref_text, COMMIT) == 0, "refs/main holds '%s', want the bare commit", ref_text);
    char *blobs = cache_path(home, "blobs");
    CHECK(count_incomplete(blobs) == 0, "no .incomplete file left in %s", blobs);
    for (size_t i = 0; i < N_UNWANTED; i++) {
        char rel[200];
        snprintf(rel, sizeof rel, "snapshots/%s/%s", COMMIT, unwanted[i]);
        char *p = cache_path(home, rel);
        struct stat st;
        CHECK(lstat(p, &st) != 0, "%s was not downloaded", unwanted[i]);
        free(p);
    }
    free(ref);
    free(ref_text);
    free(blobs);
}

/* ---- tests --------------------------------------------------------------------------------------------- */

/* The mock itself, over a raw socket: two requests in one write (the bytes after the first head are
 * the second request), HEAD with the GET's Content-Length and no body, Connection: close honoured. */
static void test_mock_server(void) {
    const mock_file *f = find_file("config.json");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)hub_server.port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval limit = {.tv_sec = 20};
    bool connected = fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit) == 0 &&
                     connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
    CHECK(connected, "connect to the mock hub on port %d", hub_server.port);
    if (!connected) {
        if (fd >= 0) close(fd);
        return;
    }
    static const char requests[] = "HEAD /tiny/tiny-a/resolve/main/config.json HTTP/1.1\r\nHost: mock\r\n\r\n"
                                   "GET /tiny/tiny-a/resolve/main/config.json HTTP/1.1\r\nHost: mock\r\n"
                                   "Connection: close\r\n\r\n";
    int from = log_count();
    CHECK(send(fd, requests, sizeof requests - 1, MSG_NOSIGNAL) == (ssize_t)(sizeof requests - 1), "send both");
    vlr_buf got = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = recv(fd, chunk, sizeof chunk, 0)) > 0) vlr_buf_append(&got, chunk, (size_t)n);
    CHECK(n == 0, "the mock closed the connection after the second reply (recv: %s)", n < 0 ? strerror(errno) : "EOF");
    close(fd);
    const char *text = got.data ? got.data : "", *end = text + got.len;
    char length[64], etag[64];
    snprintf(length, sizeof length, "\r\nContent-Length: %zu\r\n", f->size);
    snprintf(etag, sizeof etag, "\r\nETag: \"%s\"\r\n", f->sha1);
    const char *head1_end = strstr(text, "\r\n\r\n");
    const char *second = head1_end ? head1_end + 4 : end;
    const char *head2_end = strstr(second, "\r\n\r\n");
    const char *body = head2_end ? head2_end + 4 : end;
    CHECK(head1_end && strncmp(text, "HTTP/1.1 200 OK\r\n", 17) == 0 && memmem(text, (size_t)(head1_end + 2 - text), length,
          strlen(length)) && memmem(text, (size_t)(head1_end + 2 - text), etag, strlen(etag)),
          "HEAD: the GET's status and headers: %s", text);
    CHECK(head2_end && strncmp(second, "HTTP/1.1 200 OK\r\n", 17) == 0 &&
              memmem(second, (size_t)(head2_end + 2 - second), "\r\nConnection: close\r\n", 21),
          "right after the HEAD's headers, without a body, the GET's reply saying close: %s", second);
    CHECK((size_t)(end - body) == f->size && memcmp(body, f->data, f->size) == 0, "the GET's body is the file's %zu bytes, got %zu",
          f->size, (size_t)(end - body));
    CHECK(count_kind(from, K_HEAD, "/config.json") == 1 && count_kind(from, K_GET, "/config.json") == 1,
          "both logged as the hub saw them");
    vlr_buf_free(&got);
}

/* A first pull lays r.out the cache; info reads it by name with HF_HUB_OFFLINE=1; a second pull and an
 * offline pull transfer nothing; the token goes to the hub only. */
static void test_pull_cache(void) {
    run r = {0};
    char want[512];
    int from = log_count();
    vlr(&r, "cache", "HF_TOKEN=" GOOD_TOKEN, "pull tiny/tiny-a");
    snprintf(want, sizeof want, "%s/cache/hub/models--tiny--tiny-a/snapshots/%s\n", tmpdir, COMMIT);
    CHECK(r.rc == 0, "pull exit %d, stderr: %s", r.rc, r.err);
    CHECK(strcmp(r.out, want) == 0, "stdout '%s', want '%s'", r.out, want);
    check_cache_layout("cache");
    CHECK(count_kind(from, K_API, "/api/models/tiny/tiny-a/revision/main") == 1, "one API call");
    CHECK(count_kind(from, K_HEAD, NULL) == (int)N_FILES, "one HEAD per wanted file: %d", count_kind(from, K_HEAD, NULL));
    CHECK(count_kind(from, K_CDN, NULL) == 3, "the three LFS files came from the CDN: %d", count_kind(from, K_CDN, NULL));
    for (size_t i = 0; i < N_UNWANTED; i++) {
        char part[128];
        snprintf(part, sizeof part, "/%s", unwanted[i]);
        CHECK(count_kind(from, K_HEAD, part) + count_kind(from, K_GET, part) == 0, "%s never requested", unwanted[i]);
    }
    pthread_mutex_lock(&log_lock);
    int cdn_auth = 0, hub_noauth = 0;
    for (int i = from; i < n_log; i++) {
        if (req_log[i].kind == K_CDN && req_log[i].auth[0]) cdn_auth++;
        if (req_log[i].kind != K_CDN && strcmp(req_log[i].auth, "Bearer " GOOD_TOKEN) != 0) hub_noauth++;
    }
    pthread_mutex_unlock(&log_lock);
    CHECK(cdn_auth == 0, "%d CDN requests carried the Authorization header", cdn_auth);
    CHECK(hub_noauth == 0, "%d hub requests lacked the token", hub_noauth);
    CHECK(!strstr(r.out, GOOD_TOKEN) && !strstr(r.err, GOOD_TOKEN), "the token is never printed");
    CHECK(!strchr(r.err, '\033') && !strchr(r.err, '\r'), "no terminal control characters without a terminal: %s", r.err);
    CHECK(strstr(r.err, "model.safetensors") && strstr(r.err, "sha256 verified"), "a line per file: %s", r.err);

    /* the same architecture as the folder itself, read by name, offline, without any request */
    run folder = {0};
    vlr(&folder, "cache", NULL, "info --json --model " MODEL);
    from = log_count();
    vlr(&r, "cache", "HF_HUB_OFFLINE=1", "info --json --model tiny/tiny-a");
    CHECK(r.rc == 0 && strcmp(r.out, folder.out) == 0 && r.out[0] == '{', "info by name (exit %d): %s%s", r.rc, r.out,
          r.err);
    vlr(&r, "cache", "HF_HUB_OFFLINE=1", "info --json --model tiny/tiny-a@" COMMIT);
    CHECK(r.rc == 0 && strcmp(r.out, folder.out) == 0, "info by name@commit (exit %d): %s", r.rc, r.err);
    vlr(&r, "cache", NULL, "info --model tiny/tiny-a@main");
    CHECK(r.rc == 0 && strstr(r.out, "model      tiny/tiny-a@main"), "info names the model as given: %s%s", r.out, r.err);
    vlr(&r, "cache", "HF_HUB_OFFLINE=1", "score --model tiny/tiny-a --question 'Is it?' --answer 'Yes.'");
    char *end;
    double score = strtod(r.out, &end);
    CHECK(r.rc == 0 && end != r.out && isfinite(score), "score --model ORG/NAME (exit %d): %s%s", r.rc, r.out, r.err);
    CHECK(log_count() == from, "--model ORG/NAME makes no request");
    run_free(&folder);

    /* a second pull transfers nothing: the API call only */
    from = log_count();
    vlr(&r, "cache", NULL, "pull tiny/tiny-a");
    CHECK(r.rc == 0 && strstr(r.err, "0 downloaded") && strstr(r.err, "7 already there"), "second pull (exit %d): %s",
          r.rc, r.err);
    CHECK(log_count() - from == 1 && count_kind(from, K_API, NULL) == 1, "second pull: %d requests, want the API call only",
          log_count() - from);

    /* a tag at the same commit: still nothing to transfer, and refs/v1 records it */
    from = log_count();
    vlr(&r, "cache", NULL, "pull tiny/tiny-a --revision v1");
    char *ref = cache_path("cache", "refs/v1"), *ref_text = test_read_text(ref);
    CHECK(r.rc == 0 && strcmp(ref_text, COMMIT) == 0, "refs/v1 = '%s' (exit %d): %s", ref_text, r.rc, r.err);
    CHECK(count_kind(from, K_HEAD, NULL) + count_kind(from, K_CDN, NULL) == 0, "the tag transfers nothing");
    free(ref);
    free(ref_text);

    /* offline: the cached folder, no request at all */
    from = log_count();
    vlr(&r, "cache", "HF_HUB_OFFLINE=1", "pull tiny/tiny-a");
    CHECK(r.rc == 0 && strcmp(r.out, want) == 0, "offline pull prints the snapshot (exit %d): %s%s", r.rc, r.out, r.err);
    CHECK(log_count() == from, "offline pull makes no request");
    vlr(&r, "cache", "HF_HUB_OFFLINE=1", "pull tiny/gated");
    CHECK(r.rc == 1 && strstr(r.err, "HF_HUB_OFFLINE") && strstr(r.err, "not in the Hugging Face cache"),
          "offline pull of an uncached repository (exit %d): %s", r.rc, r.err);
    run_free(&r);
}

/* The CDN closes the connection 3 MB into model.safetensors: the pull goes on with Range for the rest
 * only and the blob is whole. */
static void test_pull_dropped_connection(void) {
    const mock_file *f = find_file("model.safetensors");
    fault.drop_file = f->name, fault.drop_after = 3 << 20, fault.dropped = false;
    run r = {0};
    char blob_path[128];
    int from = log_count();
    vlr(&r, "dropped", NULL, "pull tiny/tiny-a");
    fault.drop_file = NULL;
    CHECK(r.rc == 0, "pull exit %d: %s", r.rc, r.err);
    CHECK(fault.dropped, "the fault fired");
    CHECK(strstr(r.err, "retrying from"), "the retry is said: %s", r.err);
    snprintf(blob_path, sizeof blob_path, "/cdn/%s", f->sha256);
    seen first = {0}, second = {0};
    int n = 0;
    pthread_mutex_lock(&log_lock);
    for (int i = from; i < n_log; i++) {
        if (req_log[i].kind != K_CDN || !strstr(req_log[i].path, blob_path)) continue;
        if (n == 0) first = req_log[i];
        else if (n == 1) second = req_log[i];
        n++;
    }
    pthread_mutex_unlock(&log_lock);
    CHECK(n == 2, "%d CDN requests for the blob, want 2", n);
    CHECK(first.range_start == -1 && first.bytes == 3 << 20, "first: range %lld, %lld bytes", first.range_start, first.bytes);
    CHECK(second.range_start > 0 && second.range_start <= 3 << 20, "the second asks for the rest: Range bytes=%lld-",
          second.range_start);
    CHECK(second.bytes == (long long)f->size - second.range_start, "the second sends %lld bytes, the rest is %lld",
          second.bytes, (long long)f->size - second.range_start);
    check_cache_layout("dropped");
    run_free(&r);
}

/* An .incomplete file left by an interrupted pull is resumed with Range from its size. */
static void test_pull_resume_incomplete(void) {
    const mock_file *f = find_file("model.safetensors");
    run r = {0};
    char rel[128], *dir = cache_path("resume", "blobs");
    snprintf(rel, sizeof rel, "blobs/%s.incomplete", f->sha256);
    char *part = cache_path("resume", rel), mk[600];
    snprintf(mk, sizeof mk, "mkdir -p %s", dir);
    CHECK(system(mk) == 0, "%s", mk);
    FILE *fp = fopen(part, "wb");
    CHECK(fp && fwrite(f->data, 1, 1 << 20, fp) == 1 << 20, "write %s", part);
    if (fp) fclose(fp);
    int from = log_count();
    vlr(&r, "resume", NULL, "pull tiny/tiny-a");
    CHECK(r.rc == 0 && strstr(r.err, "resumed at 1.0 MB"), "pull exit %d: %s", r.rc, r.err);
    snprintf(rel, sizeof rel, "/cdn/%s", f->sha256);
    pthread_mutex_lock(&log_lock);
    int n = 0;
    for (int i = from; i < n_log; i++) {
        if (req_log[i].kind != K_CDN || !strstr(req_log[i].path, rel)) continue;
        n++;
        CHECK(req_log[i].range_start == 1 << 20 && req_log[i].bytes == (long long)f->size - (1 << 20),
              "Range bytes=%lld-, %lld bytes sent", req_log[i].range_start, req_log[i].bytes);
    }
    pthread_mutex_unlock(&log_lock);
    CHECK(n == 1, "one request for the rest of the blob, got %d", n);
    check_cache_layout("resume");
    free(dir);
    free(part);
    run_free(&r);
}

/* A flipped byte: the sha256 differs from X-Linked-Etag, the file never enters blobs/ or the snapshot,
 * the command fails naming it; the next pull fetches it afresh. */
static void test_pull_corrupted(void) {
    const mock_file *f = find_file("model.safetensors");
    fault.corrupt_file = f->name;
    run r = {0};
    char rel[160];
    vlr(&r, "corrupt", NULL, "pull tiny/tiny-a");
    fault.corrupt_file = NULL;
    CHECK(r.rc == 1, "exit %d", r.rc);
    CHECK(strstr(r.err, "model.safetensors: sha256 mismatch") && strstr(r.err, f->sha256), "names the file: %s", r.err);
    CHECK(strcmp(r.out, "") == 0, "nothing on stdout: %s", r.out);
    snprintf(rel, sizeof rel, "blobs/%s", f->sha256);
    char *blob = cache_path("corrupt", rel), *blobs = cache_path("corrupt", "blobs");
    snprintf(rel, sizeof rel, "snapshots/%s/model.safetensors", COMMIT);
    char *pointer = cache_path("corrupt", rel), *ref = cache_path("corrupt", "refs/main");
    struct stat st;
    CHECK(lstat(blob, &st) != 0, "the corrupt blob is not in the cache");
    CHECK(lstat(pointer, &st) != 0, "no snapshot entry for it");
    CHECK(count_incomplete(blobs) == 0, "the corrupt .incomplete file was deleted");
    CHECK(lstat(ref, &st) != 0, "refs/main is written only for a complete snapshot");
    int from = log_count();
    vlr(&r, "corrupt", NULL, "pull tiny/tiny-a");
    CHECK(r.rc == 0 && strstr(r.err, "1 downloaded") && strstr(r.err, "6 already there"), "the next pull (exit %d): %s",
          r.rc, r.err);
    CHECK(count_kind(from, K_CDN, NULL) == 1, "only the missing file is fetched again");
    check_cache_layout("corrupt");
    free(blob);
    free(blobs);
    free(pointer);
    free(ref);
    run_free(&r);
}

static int count_substr(const char *s, const char *part) {
    int n = 0;
    for (const char *p = s; (p = strstr(p, part)); p++) n++;
    return n;
}

/* Gated: without a token (401) and with a token that has no access (403) the message says to accept
 * the terms and set HF_TOKEN, once, without the token; the token of `hf auth login` or --token works. */
static void test_pull_gated(void) {
    run r = {0};
    vlr(&r, "gated", NULL, "pull tiny/gated");
    CHECK(r.rc == 1 && strstr(r.err, "tiny/gated is a gated repository and no token was sent (HTTP 401") &&
              strstr(r.err, "accept its terms") && strstr(r.err, "HF_TOKEN") && strstr(r.err, "/tiny/gated"),
          "401 (exit %d): %s", r.rc, r.err);
    CHECK(count_substr(r.err, "gated repository") == 1, "said once: %s", r.err);
    vlr(&r, "gated", "HF_TOKEN=" BAD_TOKEN, "pull tiny/gated");
    CHECK(r.rc == 1 && strstr(r.err, "the token from HF_TOKEN has no access to it (HTTP 403") &&
              strstr(r.err, "accept its terms"),
          "403 (exit %d): %s", r.rc, r.err);
    CHECK(!strstr(r.err, BAD_TOKEN) && !strstr(r.out, BAD_TOKEN), "the token is not printed: %s", r.err);
    vlr(&r, "gated", NULL, "pull tiny/gated --token hf_invalid");
    CHECK(r.rc == 1 && strstr(r.err, "refused the token from --token") && !strstr(r.err, "hf_invalid"),
          "invalid token (exit %d): %s", r.rc, r.err);
    char token_file[400];
    snprintf(token_file, sizeof token_file, "%s/gated", tmpdir);
    mkdir(token_file, 0700);
    snprintf(token_file, sizeof token_file, "%s/gated/token", tmpdir);
    FILE *fp = fopen(token_file, "w");
    CHECK(fp != NULL, "write %s", token_file);
    if (fp) {
        fputs("  " GOOD_TOKEN "\n", fp);
        fclose(fp);
    }
    vlr(&r, "gated", NULL, "pull tiny/gated");
    CHECK(r.rc == 0 && strstr(r.out, "models--tiny--gated/snapshots/" COMMIT), "the token file of hf auth login (exit %d): %s",
          r.rc, r.err);
    CHECK(!strstr(r.err, GOOD_TOKEN), "the token is not printed");
    unlink(token_file);
    int from = log_count();
    vlr(&r, "gated", NULL, "pull tiny/gated --token " GOOD_TOKEN);
    CHECK(r.rc == 0 && count_kind(from, K_HEAD, NULL) == 0, "--token, and nothing left to transfer (exit %d): %s", r.rc,
          r.err);
    run_free(&r);
}

/* Missing repositories, revisions and files; an endpoint that does not answer; a repository without
 * safetensors. */
static void test_pull_not_found(void) {
    run r = {0};
    vlr(&r, "nf", NULL, "pull tiny/absent");
    CHECK(r.rc == 1 && strstr(r.err, "repository tiny/absent not found at http://127.0.0.1:") && strstr(r.err, "HTTP 401") &&
              strstr(r.err, "if it is private, set HF_TOKEN"), "missing repository (exit %d): %s", r.rc, r.err);
    vlr(&r, "nf", NULL, "pull tiny/tiny-a --revision nope");
    CHECK(r.rc == 1 && strstr(r.err, "revision 'nope' not found in tiny/tiny-a (HTTP 404"), "missing revision (exit %d): %s",
          r.rc, r.err);
    vlr(&r, "nf", NULL, "pull tiny/broken");
    CHECK(r.rc == 1 && strstr(r.err, "missing.json: not found in tiny/broken at revision " COMMIT " (HTTP 404"),
          "missing file (exit %d): %s", r.rc, r.err);
    CHECK(strstr(r.err, "1 of 8 files failed"), "the other files were fetched: %s", r.err);
    vlr(&r, "nf", NULL, "pull tiny/bin-only");
    CHECK(r.rc == 1 && strstr(r.err, "has no *.safetensors"), "no safetensors (exit %d): %s", r.rc, r.err);
    /* a port nobody listens on */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int closed_port = 0;
    if (s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof addr) == 0 &&
        getsockname(s, (struct sockaddr *)&addr, &len) == 0)
        closed_port = ntohs(addr.sin_port);
    if (s >= 0) close(s);
    char env[128], want[160];
    snprintf(env, sizeof env, "HF_TOKEN=%s HF_ENDPOINT=http://127.0.0.1:%d", GOOD_TOKEN, closed_port);
    snprintf(want, sizeof want, "cannot reach http://127.0.0.1:%d/api/models/tiny/tiny-a/revision/main", closed_port);
    vlr(&r, "nf", env, "pull tiny/tiny-a");
    CHECK(r.rc == 1 && strstr(r.err, want) && !strstr(r.err, GOOD_TOKEN), "network failure (exit %d): %s", r.rc, r.err);
    run_free(&r);
}

/* --model ORG/NAME that is not cached: the error says how to get it; a path that cannot be a
 * repository id keeps the loader's message. */
static void test_model_arg(void) {
    run r = {0};
    vlr(&r, "empty", NULL, "info --model tiny/absent");
    CHECK(r.rc == 1 && strstr(r.err, "download it with `vlreward pull tiny/absent`") &&
              strstr(r.err, "not in the Hugging Face cache"),
          "exit %d: %s", r.rc, r.err);
    vlr(&r, "empty", NULL, "score --model tiny/absent@v9 --question q --answer a");
    CHECK(r.rc != 0 && strstr(r.err, "`vlreward pull tiny/absent --revision v9`"), "exit %d: %s", r.rc, r.err);
    vlr(&r, "empty", NULL, "info --model ./no/such/dir");
    CHECK(r.rc == 1 && !strstr(r.err, "vlreward pull") && strstr(r.err, "./no/such/dir"), "exit %d: %s", r.rc, r.err);
    run_free(&r);
}

/* HF_HUB_CACHE moves the cache away from HF_HOME/hub, for pull and --model alike. */
static void test_pull_hub_cache_variable(void) {
    run r = {0};
    char env[400], want[600];
    snprintf(env, sizeof env, "HF_HUB_CACHE=%s/elsewhere", tmpdir);
    snprintf(want, sizeof want, "%s/elsewhere/models--tiny--tiny-a/snapshots/%s\n", tmpdir, COMMIT);
    vlr(&r, "var", env, "pull tiny/tiny-a");
    CHECK(r.rc == 0 && strcmp(r.out, want) == 0, "exit %d, stdout %s: %s", r.rc, r.out, r.err);
    strcat(env, " HF_HUB_OFFLINE=1");
    vlr(&r, "var", env, "info --model tiny/tiny-a");
    CHECK(r.rc == 0, "info --model with HF_HUB_CACHE (exit %d): %s", r.rc, r.err);
    vlr(&r, "var", "HF_HUB_OFFLINE=1", "info --model tiny/tiny-a");
    CHECK(r.rc == 1 && strstr(r.err, "vlreward pull tiny/tiny-a"), "HF_HOME/hub is another cache (exit %d): %s", r.rc,
          r.err);
    run_free(&r);
}

/* --local-dir: plain files and huggingface_hub's metadata; a second pull makes no file request. */
static void test_pull_local_dir(void) {
    run r = {0};
    char args[512], dir[400], want[420];
    snprintf(dir, sizeof dir, "%s/local", tmpdir);
    snprintf(args, sizeof args, "pull tiny/tiny-a --local-dir %s", dir);
    vlr(&r, "ld", NULL, args);
    snprintf(want, sizeof want, "%s\n", dir);
    CHECK(r.rc == 0 && strcmp(r.out, want) == 0, "exit %d, stdout %s: %s", r.rc, r.out, r.err);
    for (size_t i = 0; i < N_FILES; i++) {
        char p[600];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, files[i].name);
        CHECK(lstat(p, &st) == 0 && S_ISREG(st.st_mode) && same_bytes(p, &files[i]), "%s is a plain copy", p);
        snprintf(p, sizeof p, "%s/.cache/huggingface/download/%s.metadata", dir, files[i].name);
        char *meta = test_read_text(p), first[64] = "", second[80] = "";
        sscanf(meta, "%63s %79s", first, second);
        CHECK(strcmp(first, COMMIT) == 0 && strcmp(second, etag_of(&files[i])) == 0, "%s: %s", p, meta);
        free(meta);
    }
    snprintf(args, sizeof args, "info --model %s", dir);
    vlr(&r, "ld", NULL, args);
    CHECK(r.rc == 0, "info --model DIR: %s", r.err);
    int from = log_count();
    snprintf(args, sizeof args, "pull tiny/tiny-a --local-dir %s", dir);
    vlr(&r, "ld", NULL, args);
    CHECK(r.rc == 0 && log_count() - from == 1, "second pull: %d requests (exit %d): %s", log_count() - from, r.rc, r.err);
    run_free(&r);
}

/* Two names with one content (one blob): one of them fetches it, the other waits and links it (never
 * failing on the blob's lock); a name listed twice counts once. */
static void test_pull_same_content(void) {
    run r = {0};
    int from = log_count();
    vlr(&r, "copies", NULL, "pull tiny/copies");
    CHECK(r.rc == 0 && strstr(r.err, "(commit " COMMIT "): 8 files"), "exit %d: %s", r.rc, r.err);
    int gets = count_kind(from, K_GET, "/config.json") + count_kind(from, K_GET, "/config.copy.json");
    CHECK(gets == 1, "the shared content is fetched once, got %d", gets);
    char a[600], b[600], la[128] = "", lb[128] = "";
    snprintf(a, sizeof a, "%s/copies/hub/models--tiny--copies/snapshots/%s/config.json", tmpdir, COMMIT);
    snprintf(b, sizeof b, "%s/copies/hub/models--tiny--copies/snapshots/%s/config.copy.json", tmpdir, COMMIT);
    ssize_t na = readlink(a, la, sizeof la - 1), nb = readlink(b, lb, sizeof lb - 1);
    if (na > 0) la[na] = '\0';
    if (nb > 0) lb[nb] = '\0';
    CHECK(na > 0 && strcmp(la, lb) == 0 && same_bytes(b, &files[0]), "one blob for both: '%s' '%s'", la, lb);
    run_free(&r);
}

static void test_pull_usage(void) {
    static const char *bad[] = {"pull", "pull tiny", "pull a/b/c", "pull tiny/../x", "pull -- tiny/tiny-a",
                                "pull tiny/tiny-a extra", "pull tiny/tiny-a --revision ../x", "pull tiny/tiny-a --nope"};
    run r = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int from = log_count();
        vlr(&r, "usage", NULL, bad[i]);
        CHECK(r.rc == 2 && strstr(r.err, "vlreward pull: ") && log_count() == from, "'%s': exit %d: %s", bad[i], r.rc, r.err);
    }
    vlr(&r, "usage", NULL, "pull --help");
    CHECK(r.rc == 0 && strstr(r.out, "--revision REV") && strstr(r.out, "--local-dir DIR") && strstr(r.out, "--token T"),
          "help: %s", r.out);
    run_free(&r);
}

/* Runs `vlreward pull tiny/tiny-a` on a pseudo-terminal with HF_HOME=tmpdir/HOME (and `extra`, a
 * NAME=VALUE or NULL); returns what the terminal showed (malloc'd) and the exit status, or NULL when
 * there is no pseudo-terminal. */
static char *pull_on_terminal(const char *home_name, const char *extra, int *status) {
    /* the child's environment is built before fork: the mock's threads may hold malloc's lock */
    extern char **environ;
    char endpoint[64], home[400];
    snprintf(endpoint, sizeof endpoint, "HF_ENDPOINT=http://127.0.0.1:%d", hub_server.port);
    snprintf(home, sizeof home, "HF_HOME=%s/%s", tmpdir, home_name);
    size_t n_env = 0;
    while (environ[n_env]) n_env++;
    char **envp = calloc(n_env + 4, sizeof *envp);
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++)
        if (strncmp(environ[i], "HF_", 3) != 0 && strncmp(environ[i], "HUGGING", 7) != 0 &&
            strncmp(environ[i], "TRANSFORMERS_", 13) != 0 && strncmp(environ[i], "XDG_CACHE_HOME=", 15) != 0)
            envp[k++] = environ[i];
    envp[k++] = endpoint, envp[k++] = home;
    if (extra) envp[k++] = (char *)extra;
    envp[k] = NULL;
    char *const argv[] = {bin, "pull", "tiny/tiny-a", NULL};
    int master;
    pid_t pid = forkpty(&master, NULL, NULL, NULL);
    if (pid < 0) {
        free(envp);
        return NULL;
    }
    if (pid == 0) {
        execve(bin, argv, envp);
        _exit(127);
    }
    free(envp);
    vlr_buf screen = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(master, chunk, sizeof chunk)) > 0) vlr_buf_append(&screen, chunk, (size_t)n);
    waitpid(pid, status, 0);
    close(master);
    if (!screen.data) vlr_buf_puts(&screen, "");
    if (getenv("VLR_PULL_SHOW")) fprintf(stderr, "==== terminal\n%s\n----\n", screen.data);
    return screen.data;
}

/* On a terminal: bars per file and in total, with bytes, speed and ETA; plain lines with
 * HF_HUB_DISABLE_PROGRESS_BARS=1. */
static void test_pull_tty_progress(void) {
    int status = 0;
    char *s = pull_on_terminal("tty", NULL, &status);
    if (!s) {
        SKIP(4, "forkpty failed: no pseudo-terminal here");
        return;
    }
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "pull on a terminal: %s", s);
    CHECK(strstr(s, "\033[") && strstr(s, "total") && strstr(s, "100% [####################]"), "bars drawn: %s", s);
    CHECK(strstr(s, "/s  ETA "), "speed and ETA: %s", s);
    free(s);
    s = pull_on_terminal("tty-plain", "HF_HUB_DISABLE_PROGRESS_BARS=1", &status);
    CHECK(s && !strchr(s, '\033') && strstr(s, "model.safetensors  19.8 MB  downloaded"), "plain lines: %s", s ? s : "");
    free(s);
}

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "FAIL test_pull: watchdog expired (a hung pull?)\n";
    ssize_t unused = write(2, msg, sizeof msg - 1);
    (void)unused;
    _exit(1);
}

int main(void) {
    if (!test_vlreward_bin(bin, sizeof bin)) {
        CHECK(0, "%s not built", bin);
        return test_report();
    }
    signal(SIGALRM, on_alarm);
    alarm(300);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlr_pull_XXXXXX");
    if (!mkdtemp(tmpdir) || !load_files()) {
        CHECK(0, "mkdtemp or reading %s", MODEL);
        return test_report();
    }
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    if (!mock_start(&hub_server, on_hub, on_sent, NULL) || !mock_start(&cdn_server, on_cdn, on_sent, NULL)) {
        CHECK(0, "cannot start the mock hub on 127.0.0.1");
        return test_report();
    }
    TEST_RUN(test_mock_server);
    TEST_RUN(test_pull_cache);
    TEST_RUN(test_pull_dropped_connection);
    TEST_RUN(test_pull_resume_incomplete);
    TEST_RUN(test_pull_corrupted);
    TEST_RUN(test_pull_gated);
    TEST_RUN(test_pull_not_found);
    TEST_RUN(test_model_arg);
    TEST_RUN(test_pull_local_dir);
    TEST_RUN(test_pull_hub_cache_variable);
    TEST_RUN(test_pull_same_content);
    TEST_RUN(test_pull_usage);
    TEST_RUN(test_pull_tty_progress);
    mock_stop(&hub_server);
    mock_stop(&cdn_server);
    char cmd[300], *out;
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    test_run(cmd, "/dev/null", &out);
    free(out);
    for (size_t i = 0; i < N_FILES; i++) free(files[i].data);
    return test_report();
}
