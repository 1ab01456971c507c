/* base64.c: see base64.h. Upstream (qwen_vl_utils) decodes data: URIs with Python's b64decode, which
 * silently drops characters outside the alphabet; the strict decoder here only skips whitespace and
 * refuses the rest, so a corrupted URI is an error instead of different pixels. */
#include "base64.h"

#include <stdlib.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int vlr_base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

bool vlr_base64_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

vlr_status vlr_base64_decode(const char *s, size_t len, uint64_t cap, const char *what, uint8_t **out, size_t *n,
                             vlr_err *e) {
    *out = NULL;
    *n = 0;
    size_t most = len / 4 * 3; /* whitespace only makes the data shorter */
    if (most > cap) most = (size_t)cap;
    uint8_t *buf = vlr_malloc(most + 3, e); /* + 3: the quantum that passes the cap */
    if (!buf) return VLR_ERR_NOMEM;
    size_t o = 0, symbols = 0, pad = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (vlr_base64_space(c)) continue;
        if (c == '=') {
            pad++;
            symbols++;
            if (pad > 2) goto bad_pad;
            continue;
        }
        int v = vlr_base64_value(c);
        if (v < 0) {
            free(buf);
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: invalid base64 character 0x%02x at offset %zu", what, c, i);
        }
        if (pad) goto bad_pad; /* data after padding */
        acc = acc << 6 | (uint32_t)v;
        symbols++;
        if (symbols % 4 == 0) {
            if (o > most) goto too_large; /* past the cap already; else the 3 bytes fit */
            buf[o++] = (uint8_t)(acc >> 16);
            buf[o++] = (uint8_t)(acc >> 8);
            buf[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    if (symbols % 4 != 0) goto bad_pad;
    if (pad) {
        /* the last quantum held 4 - pad symbols: acc has (4 - pad) * 6 bits */
        if (o > most) goto too_large;
        if (pad == 1) {
            buf[o++] = (uint8_t)(acc >> 10);
            buf[o++] = (uint8_t)(acc >> 2);
        } else {
            buf[o++] = (uint8_t)(acc >> 4);
        }
    }
    if (o == 0) {
        free(buf);
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: no base64 data", what);
    }
    if (o > cap) goto too_large;
    *out = buf;
    *n = o;
    return VLR_OK;
too_large:
    free(buf);
    return vlr_fail(e, VLR_ERR_LIMIT, "%s: more than the limit of %llu bytes", what, (unsigned long long)cap);
bad_pad:
    free(buf);
    return vlr_fail(e, VLR_ERR_FORMAT, "%s: incorrect base64 padding", what);
}

size_t vlr_base64_decode_head(const char *s, size_t len, uint8_t *out, size_t cap) {
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (size_t i = 0; i < len && n < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        int v = vlr_base64_value(c);
        if (v < 0) {
            if (vlr_base64_space(c)) continue;
            break;
        }
        acc = (acc << 6 | (uint32_t)v) & 0xffffffu; /* at most 6 + 7 pending bits matter */
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

bool vlr_base64_is_text(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (vlr_base64_value(c) < 0 && c != '=' && !vlr_base64_space(c)) return false;
    }
    return true;
}

void vlr_base64_encode(vlr_buf *out, const uint8_t *d, size_t n) {
    size_t groups = n / 3 + (n % 3 != 0), text;
    if (!vlr_mul_ok(groups, 4, &text) || !vlr_buf_reserve(out, text)) {
        out->oom = true;
        return;
    }
    char *p = out->data + out->len;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = alphabet[v >> 18];
        *p++ = alphabet[(v >> 12) & 63];
        *p++ = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        *p++ = i + 2 < n ? alphabet[v & 63] : '=';
    }
    out->len += text;
    out->data[out->len] = '\0';
}
