/* json_write.h: the one JSON writer. Every JSON text the library and the CLI produce (result and error
 * lines, traces, info, bench and eval reports, server answers) is built here, into a vlr_buf.
 *
 * Guarantees, whatever the input: strings are valid UTF-8 (an ill-formed sequence becomes U+FFFD) with
 * every control character escaped; numbers are finite JSON numbers or null (JSON has no NaN or
 * infinity), formatted in the "C" locale whatever the host program's locale. Layout: ", " between
 * members and elements, ": " after keys; the containers at the first `multiline` nesting levels put
 * each member on its own line, indented by two spaces per level (eval's summary; 0 elsewhere).
 *
 * Low level: vlr_buf_json_string and vlr_buf_json_double append one string or number. High level:
 * vlr_jw tracks nesting and commas, so a producer states its structure instead of its punctuation:
 *
 *     vlr_jw w;
 *     vlr_jw_init(&w, &out, 0);
 *     vlr_jw_object(&w);
 *     vlr_jw_key_str(&w, "id", "a");            ->  {"id": "a", "scores": [0.5, 0.25]}
 *     vlr_jw_key(&w, "scores");
 *     vlr_jw_array(&w);
 *     vlr_jw_double(&w, 0.5);
 *     vlr_jw_double(&w, 0.25);
 *     vlr_jw_end(&w);
 *     vlr_jw_end(&w);
 *
 * The writer does not check that keys come only in objects; it never writes past VLR_JW_MAX_DEPTH
 * nesting levels (deeper opens are dropped and w->bad is set). */
#ifndef VLR_JSON_WRITE_H
#define VLR_JSON_WRITE_H

#include "common.h"

/* Appends s (n bytes, may contain NUL) as a JSON string literal with quotes and escapes. The
 * output is always valid UTF-8 (RFC 8259 requires it): each ill-formed sequence in s (a stray
 * continuation byte, a truncated sequence, an overlong form, a surrogate, a code point above
 * U+10FFFF, bytes F5..FF; one U+FFFD per maximal subpart, as Unicode recommends) is written as
 * U+FFFD. */
void vlr_buf_json_string(vlr_buf *b, const char *s, size_t n);
/* Appends a double as the shortest text that reads back to the same double ("%.17g" fallback);
 * null when it is not finite. */
void vlr_buf_json_double(vlr_buf *b, double v);

#define VLR_JW_MAX_DEPTH 513 /* the reader's VLR_JSON_MAX_DEPTH, plus the writer's own container */

typedef struct vlr_jw {
    vlr_buf *out;
    int multiline;  /* nesting levels laid out one member per line */
    int depth;      /* open containers */
    bool after_key; /* a key was written: the next value is its value */
    bool bad;       /* nesting went past VLR_JW_MAX_DEPTH */
    bool has_member[VLR_JW_MAX_DEPTH + 1]; /* per level: a member or element was written */
    bool is_array[VLR_JW_MAX_DEPTH + 1];
} vlr_jw;

void vlr_jw_init(vlr_jw *w, vlr_buf *out, int multiline);
void vlr_jw_object(vlr_jw *w); /* opens {, as a value */
void vlr_jw_array(vlr_jw *w);  /* opens [, as a value */
void vlr_jw_end(vlr_jw *w);    /* closes the innermost container */
void vlr_jw_key(vlr_jw *w, const char *key);
void vlr_jw_str(vlr_jw *w, const char *s); /* NULL writes null */
void vlr_jw_strn(vlr_jw *w, const char *s, size_t n);
void vlr_jw_double(vlr_jw *w, double v);                /* shortest round-trip text */
void vlr_jw_fixed(vlr_jw *w, double v, int decimals);   /* "%.*f" (bench's timings), null if not finite */
void vlr_jw_int(vlr_jw *w, long long v);
void vlr_jw_uint(vlr_jw *w, unsigned long long v);
void vlr_jw_bool(vlr_jw *w, bool v);
void vlr_jw_null(vlr_jw *w);
/* A value that is already JSON text (an id echoed as the input wrote it, a nested report). */
void vlr_jw_raw(vlr_jw *w, const char *json, size_t n);

/* A parsed node written back: numbers keep their text, strings are escaped again (keys with NUL
 * included). Recursion is bounded by the reader's depth cap. */
typedef struct vlr_json vlr_json;
void vlr_jw_value(vlr_jw *w, const vlr_json *v);

/* "key": value in one call. */
void vlr_jw_key_str(vlr_jw *w, const char *key, const char *s);
void vlr_jw_key_double(vlr_jw *w, const char *key, double v);
void vlr_jw_key_int(vlr_jw *w, const char *key, long long v);
void vlr_jw_key_uint(vlr_jw *w, const char *key, unsigned long long v);

#endif
