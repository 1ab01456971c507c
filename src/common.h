/* common.h: internal helpers shared by every module: the error record, checked size arithmetic,
 * a growable byte buffer, whole-file reading, bf16/f16 conversions.
 *
 * Errors inside the library travel as a vlr_status return code plus a vlr_err record that holds the
 * message. Functions that can fail take a `vlr_err *e` last and return vlr_status; on failure they
 * fill the record with vlr_fail() and the caller may add context in front with vlr_err_prefix().
 * Nothing here is global or mutable. */
#ifndef VLR_COMMON_H
#define VLR_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "vlreward.h"

#define VLR_ERR_MSG_CAP 1024

typedef struct vlr_err {
    vlr_status code;
    char msg[VLR_ERR_MSG_CAP];
} vlr_err;

/* Records code + printf-style message in e (if e is not NULL) and returns code. */
vlr_status vlr_fail(vlr_err *e, vlr_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Puts printf-style context in front of the message already in e ("tokenizer.json: " + msg). */
void vlr_err_prefix(vlr_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Copies an error record's message into a caller buffer (truncating safely). */
void vlr_err_copy(const vlr_err *e, char *dst, size_t cap);

/* Overflow-checked size arithmetic: return false when the true result does not fit. */
static inline bool vlr_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool vlr_add_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_add_overflow(a, b, out);
}

/* Allocation that reports failure through e. Never returns NULL with VLR_OK. */
void *vlr_malloc(size_t n, vlr_err *e);
void *vlr_calloc(size_t count, size_t size, vlr_err *e);
/* For buffers of many MB that are written soon after (pixel values, int8 weights): first-touch page
 * faults cost more than the arithmetic there, so blocks of 4 MB and more are 2 MB aligned and asked
 * for as transparent huge pages (a hint). Always at least 64-byte aligned. Freed with free(). */
void *vlr_malloc_huge(size_t n, vlr_err *e);

/* Growable byte buffer, always NUL-terminated when data != NULL. */
typedef struct vlr_buf {
    char *data;
    size_t len, cap;
    bool oom; /* sticky: set when a grow failed; later appends are no-ops */
} vlr_buf;
void vlr_buf_free(vlr_buf *b);
bool vlr_buf_reserve(vlr_buf *b, size_t extra);
void vlr_buf_append(vlr_buf *b, const void *data, size_t n);
void vlr_buf_puts(vlr_buf *b, const char *s);
void vlr_buf_printf(vlr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* UTF-8 helpers. vlr_utf8_seq: the length (1..4) of the well-formed sequence at s[0..n), or minus
 * the length of its maximal ill-formed subpart (-1..-3). vlr_utf8_cut: the largest length <= len
 * that does not end inside a multi-byte character (what to keep when cutting text to len bytes). */
int vlr_utf8_seq(const unsigned char *s, size_t n);
size_t vlr_utf8_cut(const char *s, size_t len);
/* snprintf that never cuts a multi-byte character when the text does not fit (the string is
 * trimmed back to a character boundary). Returns what snprintf returns. */
int vlr_snprintf_utf8(char *dst, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vlr_vsnprintf_utf8(char *dst, size_t cap, const char *fmt, va_list ap);

/* Reads a whole file. max_bytes guards against absurd sizes. *out is NUL-terminated (not counted). */
vlr_status vlr_read_file(const char *path, size_t max_bytes, char **out, size_t *len, vlr_err *e);
/* Joins dir and name with one '/', into a malloc'd string (NULL on OOM). */
char *vlr_path_join(const char *dir, const char *name);
bool vlr_file_exists(const char *path);

/* Number formats. bf16 -> f32 is exact; f32 -> bf16 rounds to nearest even. */
static inline float vlr_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t vlr_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
static inline float vlr_f16_to_f32(uint16_t h) { /* exact, subnormals included */
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int shift = 0;
            while (!(mant & 0x400u)) {
                mant <<= 1;
                shift++;
            }
            u = sign | ((uint32_t)(127 - 15 + 1 - shift) << 23) | ((mant & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Monotonic clock in seconds. */
double vlr_now(void);
/* The CLOCK_REALTIME time `ns` nanoseconds (< 1 s) from now: the deadline of a pthread_cond_timedwait
 * that wakes up to check a flag (a cancel, a client gone) while it waits. */
struct timespec vlr_realtime_after(long ns);

#endif
