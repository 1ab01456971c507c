/* common.c: the error record, allocation wrappers, the growable buffer (its JSON writer: json_write.c),
 * whole-file reading, number conversions. Small utilities every module uses; no policy here. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *vlr_status_str(vlr_status s) {
    switch (s) {
    case VLR_OK: return "ok";
    case VLR_ERR_IO: return "I/O error";
    case VLR_ERR_FORMAT: return "format error";
    case VLR_ERR_CONFIG: return "config error";
    case VLR_ERR_SHAPE: return "tensor shape error";
    case VLR_ERR_INPUT: return "input error";
    case VLR_ERR_LIMIT: return "limit exceeded";
    case VLR_ERR_NOMEM: return "out of memory";
    case VLR_ERR_UNSUPPORTED: return "unsupported";
    case VLR_ERR_NETWORK: return "network error";
    case VLR_ERR_INTERRUPTED: return "interrupted";
    case VLR_ERR_INTERNAL: return "internal error";
    case VLR_ERR_NUMERIC: return "numeric error";
    }
    return "unknown status";
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

int vlr_utf8_seq(const unsigned char *s, size_t n) {
    if (n == 0) return -1;
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned lo = 0x80, hi = 0xbf; /* the range of the second byte (RFC 3629's table) */
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0) lo = 0xa0;      /* no overlong forms */
        else if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0) lo = 0x90;      /* no overlong forms */
        else if (c == 0xf4) hi = 0x8f; /* nothing above U+10FFFF */
    } else {
        return -1; /* a continuation byte, C0, C1, F5..FF */
    }
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return -i;
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return -i;
    }
    return len;
}

size_t vlr_utf8_cut(const char *s, size_t len) {
    const unsigned char *u = (const unsigned char *)s;
    /* the start of the last character: at most 3 continuation bytes back */
    size_t i = len;
    while (i > 0 && len - i < 4 && (u[i - 1] & 0xc0) == 0x80) i--;
    if (i == 0 || len - i >= 4) return len;
    unsigned c = u[i - 1];
    size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return (i - 1) + need > len ? i - 1 : len;
}

int vlr_vsnprintf_utf8(char *dst, size_t cap, const char *fmt, va_list ap) {
    int n = vsnprintf(dst, cap, fmt, ap);
    if (cap > 0 && n >= 0 && (size_t)n >= cap) dst[vlr_utf8_cut(dst, cap - 1)] = '\0';
    return n;
}

int vlr_snprintf_utf8(char *dst, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vlr_vsnprintf_utf8(dst, cap, fmt, ap);
    va_end(ap);
    return n;
}

/* Messages are cut to VLR_ERR_MSG_CAP - 1 bytes at a character boundary, never inside one. */
vlr_status vlr_fail(vlr_err *e, vlr_status code, const char *fmt, ...) {
    if (e) {
        e->code = code;
        va_list ap;
        va_start(ap, fmt);
        vlr_vsnprintf_utf8(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

void vlr_err_prefix(vlr_err *e, const char *fmt, ...) {
    if (!e) return;
    char prefix[VLR_ERR_MSG_CAP], old[VLR_ERR_MSG_CAP];
    va_list ap;
    va_start(ap, fmt);
    vlr_vsnprintf_utf8(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, e->msg, sizeof old);
    old[sizeof old - 1] = '\0';
    size_t a = strlen(prefix), b = strlen(old);
    if (a > sizeof e->msg - 1) a = vlr_utf8_cut(prefix, sizeof e->msg - 1);
    if (b > sizeof e->msg - 1 - a) b = vlr_utf8_cut(old, sizeof e->msg - 1 - a);
    memcpy(e->msg, prefix, a);
    memcpy(e->msg + a, old, b);
    e->msg[a + b] = '\0';
}

void vlr_err_copy(const vlr_err *e, char *dst, size_t cap) {
    if (!dst || cap == 0) return;
    vlr_snprintf_utf8(dst, cap, "%s", e ? e->msg : "");
}

void *vlr_malloc(size_t n, vlr_err *e) {
    void *p = malloc(n ? n : 1);
    if (!p) vlr_fail(e, VLR_ERR_NOMEM, "out of memory (allocating %zu bytes)", n);
    return p;
}

void *vlr_malloc_huge(size_t n, vlr_err *e) {
    void *p = NULL;
#if defined(MADV_HUGEPAGE)
    const size_t huge = (size_t)2 << 20;
    if (n >= 2 * huge && posix_memalign(&p, huge, n) == 0) {
        (void)madvise(p, n & ~(huge - 1), MADV_HUGEPAGE); /* whole huge pages only; a hint */
        return p;
    }
#endif
    if (posix_memalign(&p, 64, n ? n : 1) != 0) {
        vlr_fail(e, VLR_ERR_NOMEM, "out of memory (allocating %zu bytes)", n);
        return NULL;
    }
    return p;
}

void *vlr_calloc(size_t count, size_t size, vlr_err *e) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) vlr_fail(e, VLR_ERR_NOMEM, "out of memory (allocating %zu x %zu bytes)", count, size);
    return p;
}

/* ---- growable buffer ---------------------------------------------------------------------- */

void vlr_buf_free(vlr_buf *b) {
    free(b->data);
    memset(b, 0, sizeof *b);
}

bool vlr_buf_reserve(vlr_buf *b, size_t extra) {
    if (b->oom) return false;
    size_t need;
    if (!vlr_add_ok(b->len, extra, &need) || !vlr_add_ok(need, 1, &need)) {
        b->oom = true;
        return false;
    }
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void vlr_buf_append(vlr_buf *b, const void *data, size_t n) {
    if (!vlr_buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void vlr_buf_puts(vlr_buf *b, const char *s) { vlr_buf_append(b, s, strlen(s)); }

void vlr_buf_printf(vlr_buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !vlr_buf_reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* ---- files -------------------------------------------------------------------------------- */

vlr_status vlr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, vlr_err *e) {
    *out = NULL;
    *len = 0;
    /* O_NONBLOCK so that a FIFO or device named as an input is refused instead of blocking the
     * open; regular files ignore the flag. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return vlr_fail(e, VLR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return vlr_fail(e, VLR_ERR_IO, "%s: not a regular file", path);
    }
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return vlr_fail(e, VLR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    vlr_status rc = VLR_OK;
    char *data = NULL;
    if ((uint64_t)st.st_size > max_bytes) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "%s: file is %lld bytes, more than the limit of %zu", path,
                      (long long)st.st_size, max_bytes);
        goto done;
    }
    size_t n = (size_t)st.st_size;
    data = vlr_malloc(n + 1, e);
    if (!data) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    if (n && fread(data, 1, n, f) != n) {
        rc = vlr_fail(e, VLR_ERR_IO, "%s: read failed", path);
        goto done;
    }
    data[n] = '\0';
    *out = data;
    *len = n;
    data = NULL;
done:
    free(data);
    fclose(f);
    return rc;
}

char *vlr_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a && dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

bool vlr_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- numbers ------------------------------------------------------------------------------ */

double vlr_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

struct timespec vlr_realtime_after(long ns) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += ns;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}
