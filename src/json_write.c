/* json_write.c: the JSON writer (see json_write.h). */
#include "json_write.h"

#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void vlr_buf_json_string(vlr_buf *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    vlr_buf_append(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim, flushed in one append */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c >= 0x80) { /* a multi-byte character, copied as is when well-formed */
            int k = vlr_utf8_seq((const unsigned char *)s + i, n - i);
            if (k > 0) {
                run += (size_t)k;
                i += (size_t)k - 1;
                continue;
            }
            vlr_buf_append(b, s + i - run, run);
            run = 0;
            vlr_buf_puts(b, "\xef\xbf\xbd"); /* U+FFFD for the maximal ill-formed subpart */
            i += (size_t)(-k) - 1;
            continue;
        }
        if (c == '"') esc = "\\\"";
        else if (c == '\\') esc = "\\\\";
        else if (c == '\n') esc = "\\n";
        else if (c == '\r') esc = "\\r";
        else if (c == '\t') esc = "\\t";
        else if (c < 0x20 || c == 0x7f) {
            u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
            u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = 0;
            esc = u;
        }
        if (esc) {
            vlr_buf_append(b, s + i - run, run);
            run = 0;
            vlr_buf_puts(b, esc);
        } else {
            run++;
        }
    }
    vlr_buf_append(b, s + n - run, run);
    vlr_buf_append(b, "\"", 1);
}

/* Numbers are formatted (and read back) in the "C" locale: a host program under a decimal-comma
 * locale must still get JSON numbers. enter_c returns the thread's previous locale for leave_c. */
typedef struct {
    locale_t c, previous;
} c_numeric;

static c_numeric enter_c(void) {
    c_numeric l = {newlocale(LC_NUMERIC_MASK, "C", (locale_t)0), (locale_t)0};
    if (l.c) l.previous = uselocale(l.c);
    return l;
}

static void leave_c(c_numeric l) {
    if (!l.c) return;
    uselocale(l.previous);
    freelocale(l.c);
}

void vlr_buf_json_double(vlr_buf *b, double v) {
    if (!isfinite(v)) {
        vlr_buf_puts(b, "null"); /* JSON has no NaN/Inf */
        return;
    }
    /* Shortest of %.15g..%.17g that reads back exactly: readable and round-trip safe. */
    c_numeric l = enter_c();
    char tmp[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (strtod(tmp, NULL) == v) break;
    }
    leave_c(l);
    vlr_buf_puts(b, tmp);
}

/* ---- the structured writer ------------------------------------------------------------------ */

void vlr_jw_init(vlr_jw *w, vlr_buf *out, int multiline) {
    w->out = out;
    w->multiline = multiline;
    w->depth = 0;
    w->after_key = false;
    w->bad = false;
}

/* The separator and indentation before a member or element of the innermost container. */
static void next_member(vlr_jw *w) {
    if (w->depth == 0) return;
    bool first = !w->has_member[w->depth];
    w->has_member[w->depth] = true;
    if (!first) vlr_buf_puts(w->out, ",");
    if (w->depth <= w->multiline) {
        vlr_buf_puts(w->out, "\n");
        for (int i = 0; i < w->depth; i++) vlr_buf_puts(w->out, "  ");
    } else if (!first) {
        vlr_buf_puts(w->out, " ");
    }
}

static void before_value(vlr_jw *w) {
    if (w->after_key) w->after_key = false;
    else next_member(w);
}

static void open_container(vlr_jw *w, bool array) {
    before_value(w);
    if (w->depth >= VLR_JW_MAX_DEPTH) {
        w->bad = true;
        return;
    }
    vlr_buf_puts(w->out, array ? "[" : "{");
    w->depth++;
    w->has_member[w->depth] = false;
    w->is_array[w->depth] = array;
}

void vlr_jw_object(vlr_jw *w) { open_container(w, false); }
void vlr_jw_array(vlr_jw *w) { open_container(w, true); }

void vlr_jw_end(vlr_jw *w) {
    if (w->depth == 0) return;
    if (w->depth <= w->multiline && w->has_member[w->depth]) {
        vlr_buf_puts(w->out, "\n");
        for (int i = 1; i < w->depth; i++) vlr_buf_puts(w->out, "  ");
    }
    vlr_buf_puts(w->out, w->is_array[w->depth] ? "]" : "}");
    w->depth--;
}

void vlr_jw_key(vlr_jw *w, const char *key) {
    next_member(w);
    vlr_buf_json_string(w->out, key, strlen(key));
    vlr_buf_puts(w->out, ": ");
    w->after_key = true;
}

void vlr_jw_strn(vlr_jw *w, const char *s, size_t n) {
    before_value(w);
    vlr_buf_json_string(w->out, s, n);
}

void vlr_jw_str(vlr_jw *w, const char *s) {
    if (s) vlr_jw_strn(w, s, strlen(s));
    else vlr_jw_null(w);
}

void vlr_jw_double(vlr_jw *w, double v) {
    before_value(w);
    vlr_buf_json_double(w->out, v);
}

void vlr_jw_fixed(vlr_jw *w, double v, int decimals) {
    if (!isfinite(v)) {
        vlr_jw_null(w);
        return;
    }
    char tmp[400]; /* %.*f of a double up to 1e308 with up to 17 decimals */
    c_numeric l = enter_c();
    snprintf(tmp, sizeof tmp, "%.*f", decimals < 0 ? 0 : decimals > 17 ? 17 : decimals, v);
    leave_c(l);
    vlr_jw_raw(w, tmp, strlen(tmp));
}

void vlr_jw_int(vlr_jw *w, long long v) {
    before_value(w);
    vlr_buf_printf(w->out, "%lld", v);
}

void vlr_jw_uint(vlr_jw *w, unsigned long long v) {
    before_value(w);
    vlr_buf_printf(w->out, "%llu", v);
}

void vlr_jw_bool(vlr_jw *w, bool v) { vlr_jw_raw(w, v ? "true" : "false", v ? 4 : 5); }
void vlr_jw_null(vlr_jw *w) { vlr_jw_raw(w, "null", 4); }

void vlr_jw_raw(vlr_jw *w, const char *json, size_t n) {
    before_value(w);
    vlr_buf_append(w->out, json, n);
}

void vlr_jw_key_str(vlr_jw *w, const char *key, const char *s) {
    vlr_jw_key(w, key);
    vlr_jw_str(w, s);
}

void vlr_jw_key_double(vlr_jw *w, const char *key, double v) {
    vlr_jw_key(w, key);
    vlr_jw_double(w, v);
}

void vlr_jw_key_int(vlr_jw *w, const char *key, long long v) {
    vlr_jw_key(w, key);
    vlr_jw_int(w, v);
}

void vlr_jw_key_uint(vlr_jw *w, const char *key, unsigned long long v) {
    vlr_jw_key(w, key);
    vlr_jw_uint(w, v);
}

void vlr_jw_value(vlr_jw *w, const vlr_json *v) {
    switch (v->type) {
    case VLR_JSON_NULL: vlr_jw_null(w); break;
    case VLR_JSON_FALSE: vlr_jw_bool(w, false); break;
    case VLR_JSON_TRUE: vlr_jw_bool(w, true); break;
    case VLR_JSON_NUMBER: vlr_jw_raw(w, v->str, v->len); break;
    case VLR_JSON_STRING: vlr_jw_strn(w, v->str, v->len); break;
    case VLR_JSON_ARRAY:
    case VLR_JSON_OBJECT:
        if (v->type == VLR_JSON_ARRAY) vlr_jw_array(w);
        else vlr_jw_object(w);
        for (size_t i = 0; i < v->len; i++) {
            if (v->type == VLR_JSON_OBJECT) {
                next_member(w);
                vlr_buf_json_string(w->out, v->items[i].key, v->items[i].key_len);
                vlr_buf_puts(w->out, ": ");
                w->after_key = true;
            }
            vlr_jw_value(w, &v->items[i]);
        }
        vlr_jw_end(w);
        break;
    }
}
