/* test_serve_helpers.h: what the tests of `vlreward serve` share: the server process (started on a
 * free loopback port with its stderr in a log, its port read from "listening on http://HOST:PORT",
 * killed with the test process), HTTP with libcurl, raw sockets, and a watchdog (on_alarm). Every
 * transfer has a timeout and every wait a deadline. Include it once, from one test file. */
#ifndef VLR_TEST_SERVE_HELPERS_H
#define VLR_TEST_SERVE_HELPERS_H

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "test.h"

#define MODEL "tests/reference/models/tiny-a"
#define ROOT "tests/reference"

static char bin[512], tmpdir[256], log_path[300];
static volatile pid_t server_pid = -1;
static int port;
static const char *server_model = MODEL; /* --model of the next start_server */
static const char *server_extra[16];      /* more options for the next start_server, NULL-terminated */
static unsigned long long server_as_limit; /* RLIMIT_AS of the next start_server (0 = none) */

static inline void on_alarm(int sig) {
    (void)sig;
    if (server_pid > 0) kill(server_pid, SIGKILL);
    static const char msg[] = "FAIL: watchdog expired (a hung server or client)\n";
    ssize_t unused = write(2, msg, sizeof msg - 1);
    (void)unused;
    _exit(1);
}

static inline void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static inline char *read_log(void) {
    char *text = NULL;
    size_t len;
    vlr_err e;
    if (vlr_read_file(log_path, 1 << 24, &text, &len, &e)) return strdup("");
    return text;
}

/* ---- the server process ---------------------------------------------------------------------- */

/* Starts the server with stderr to log_path; waits (bounded) for "listening on http://HOST:P". */
static inline bool start_server(void) {
    snprintf(log_path, sizeof log_path, "%s/serve.log", tmpdir);
    pid_t pid = fork();
    if (pid < 0) return false;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) _exit(127);
        if (server_as_limit) {
            struct rlimit rl = {server_as_limit, server_as_limit};
            if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(127);
        }
        char *argv[40] = {bin, "serve", "--port", "0", "--model", (char *)server_model, "--precision", "f32", "--image-root", ROOT,
                          "--workers", "2", "--threads", "1", "--max-body-mb", "1"};
        for (int i = 0, k = 16; server_extra[i] && k < 39; i++) argv[k++] = (char *)server_extra[i];
        execv(bin, argv);
        _exit(127);
    }
    server_pid = pid;
    double deadline = vlr_now() + 60;
    while (vlr_now() < deadline) {
        char *log = read_log();
        const char *at = strstr(log, "listening on http://"), *eol = at ? strchr(at, '\n') : NULL;
        if (eol) { /* "listening on http://HOST:PORT\n": the port after the last ':' */
            const char *colon = eol;
            while (colon > at && *colon != ':') colon--;
            port = atoi(colon + 1);
        }
        free(log);
        if (port > 0) return true;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            server_pid = -1;
            return false;
        }
        sleep_ms(20);
    }
    return false;
}

/* Waits (bounded) for the server to exit; returns its exit status, or -1. */
static inline int wait_server(double seconds) {
    double deadline = vlr_now() + seconds;
    while (vlr_now() < deadline) {
        int st;
        if (waitpid(server_pid, &st, WNOHANG) == server_pid) {
            server_pid = -1;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        sleep_ms(20);
    }
    return -1;
}

/* Kills the server if it still runs. */
static inline void stop_server(void) {
    if (server_pid <= 0) return;
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
}

/* Starts a new server of model with the options of start_server plus extra (NULL-terminated), its
 * address space capped at as_limit bytes (0: no cap); one still running is killed first. */
static inline bool restart_server(const char *model, const char *const *extra, unsigned long long as_limit) {
    stop_server();
    size_t n = 0;
    for (; extra && extra[n] && n + 1 < sizeof server_extra / sizeof *server_extra; n++) server_extra[n] = extra[n];
    server_extra[n] = NULL;
    server_model = model;
    server_as_limit = as_limit;
    port = 0;
    unlink(log_path); /* start_server must not read the previous server's port from the old log */
    bool up = start_server();
    server_extra[0] = NULL;
    server_as_limit = 0;
    return up;
}

/* ---- HTTP with libcurl ----------------------------------------------------------------------- */

typedef struct http_resp {
    long status;     /* 0 when the transfer failed */
    CURLcode curl;
    vlr_buf body, headers;
    char content_type[64];
} http_resp;

static inline size_t on_data(char *p, size_t size, size_t n, void *ud) {
    vlr_buf_append(ud, p, size * n);
    return size * n;
}

typedef struct upload {
    const char *data;
    size_t len, pos;
    atomic_bool *sent; /* set when the last byte went out */
} upload;

static inline size_t on_read(char *dst, size_t size, size_t n, void *ud) {
    upload *u = ud;
    size_t k = size * n < u->len - u->pos ? size * n : u->len - u->pos;
    memcpy(dst, u->data + u->pos, k);
    u->pos += k;
    if (u->pos == u->len && u->sent) atomic_store(u->sent, true);
    return k;
}

/* One request. method "GET", "HEAD", "POST", "PUT"...; chunked sends the body without a length;
 * timeout_ms bounds the whole transfer (http(): 60 s). */
static inline void http_timed(const char *method, const char *path, const char *body, size_t len, bool chunked,
                              atomic_bool *sent, long timeout_ms, http_resp *out) {
    memset(out, 0, sizeof *out);
    CURL *h = curl_easy_init();
    if (!h) return;
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct curl_slist *hdrs = NULL;
    upload u = {body, len, 0, sent};
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_data);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &out->headers);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    } else if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(h, CURLOPT_READDATA, &u);
        if (chunked) hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
        else curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        if (strcmp(method, "POST") != 0) curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    out->curl = curl_easy_perform(h);
    if (out->curl == CURLE_OK) {
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->status);
        char *ct = NULL;
        curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
        snprintf(out->content_type, sizeof out->content_type, "%s", ct ? ct : "");
    }
    if (!out->body.data) vlr_buf_puts(&out->body, "");
    if (!out->headers.data) vlr_buf_puts(&out->headers, "");
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(h);
}

static inline void http(const char *method, const char *path, const char *body, size_t len, bool chunked,
                        atomic_bool *sent, http_resp *out) {
    http_timed(method, path, body, len, chunked, sent, 60000, out);
}

static inline void post(const char *body, http_resp *out) { http("POST", "/score", body, strlen(body), false, NULL, out); }

static inline void resp_free(http_resp *r) {
    vlr_buf_free(&r->body);
    vlr_buf_free(&r->headers);
}

static inline vlr_json_doc *parse_body(const http_resp *r) {
    vlr_err e;
    return vlr_json_parse(r->body.data, r->body.len, &e);
}

static inline const char *str_of(const vlr_json *v) { return vlr_json_is(v, VLR_JSON_STRING) ? v->str : ""; }

/* ---- a request in the background ---- */

/* A POST made on a thread of its own: fill body (and path, default /score), bg_start, bg_join. */
typedef struct bg_post {
    const char *path;
    vlr_buf body;
    atomic_bool sent; /* the last byte of the body went out */
    long timeout_ms;
    http_resp r;
    pthread_t thread;
    double took;
} bg_post;

static inline void *bg_main(void *arg) {
    bg_post *b = arg;
    double t0 = vlr_now();
    http_timed("POST", b->path, b->body.data, b->body.len, false, &b->sent, b->timeout_ms, &b->r);
    b->took = vlr_now() - t0;
    return NULL;
}

static inline bool bg_start(bg_post *b, long timeout_ms) {
    b->path = b->path ? b->path : "/score";
    b->timeout_ms = timeout_ms;
    atomic_init(&b->sent, false);
    return pthread_create(&b->thread, NULL, bg_main, b) == 0;
}

static inline void bg_join(bg_post *b) {
    pthread_join(b->thread, NULL);
}

static inline void bg_free(bg_post *b) {
    resp_free(&b->r);
    vlr_buf_free(&b->body);
}

/* ---- /metrics ---- */

/* The value of one series in a /metrics text ("name" or "name{labels}"); -1 when absent. */
static inline double metric_in(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, series, n) == 0 && line[n] == ' ') return strtod(line + n + 1, NULL);
    return -1;
}

static inline double metric(const char *series) {
    http_resp r;
    http("GET", "/metrics", NULL, 0, false, NULL, &r);
    double v = r.status == 200 ? metric_in(r.body.data, series) : -1;
    resp_free(&r);
    return v;
}

/* Waits (bounded) until metric(series) == value. */
static inline bool metric_reaches(const char *series, double value, double seconds) {
    for (double end = vlr_now() + seconds; vlr_now() < end; sleep_ms(10))
        if (metric(series) == value) return true;
    return false;
}

/* ---- raw connections ---- */

/* A TCP connection to the server from the loopback address src ("127.0.0.2": another client), or -1. */
static inline int raw_connect(const char *src) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, src, &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    if (bind(fd, (struct sockaddr *)&from, sizeof from) != 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Reads what the server sends for at most `seconds`: until it closes the connection (one = false), or
 * until one whole response, headers and Content-Length body, is in (one = true). True when that came. */
static inline bool read_reply(int fd, double seconds, bool one, vlr_buf *out) {
    double end = vlr_now() + seconds;
    for (;;) {
        const char *h = out->data ? strstr(out->data, "\r\n\r\n") : NULL;
        const char *cl = out->data ? strcasestr(out->data, "Content-Length: ") : NULL;
        if (one && h && cl && out->len >= (size_t)(h + 4 - out->data) + (size_t)atol(cl + 16)) return true;
        int left = (int)((end - vlr_now()) * 1000);
        if (left <= 0) return false;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) continue;
        char buf[4096];
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        if (k <= 0) return !one;
        vlr_buf_append(out, buf, (size_t)k);
    }
}

static inline bool read_until_close(int fd, double seconds, vlr_buf *out) { return read_reply(fd, seconds, false, out); }
static inline bool read_response(int fd, double seconds, vlr_buf *out) { return read_reply(fd, seconds, true, out); }

static inline void send_text(int fd, const char *text) { (void)!send(fd, text, strlen(text), MSG_NOSIGNAL); }

/* GET /health from the address src on a fresh connection: true when it answers 200. */
static inline bool health_from(const char *src) {
    int fd = raw_connect(src);
    if (fd < 0) return false;
    send_text(fd, "GET /health HTTP/1.1\r\nHost: t\r\n\r\n");
    vlr_buf b = {0};
    bool ok = read_response(fd, 5, &b) && strncmp(b.data, "HTTP/1.1 200", 12) == 0;
    vlr_buf_free(&b);
    close(fd);
    return ok;
}

#endif
