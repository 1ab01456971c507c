/* base64.h: the program's one base64 codec (RFC 4648, standard alphabet, '=' padding), used for
 * data: URIs (image_source.c), VL-RewardBench image bytes (eval.c) and the images the server fetches
 * (cli/serve.c). Whitespace is the six ASCII whitespace characters (space, \t, \n, \v, \f, \r), and it
 * is skipped wherever base64 text is read, so every reader accepts the same text. */
#ifndef VLR_BASE64_H
#define VLR_BASE64_H

#include "common.h"

/* 0..63 for a character of the alphabet, -1 for anything else ('=' included). */
int vlr_base64_value(unsigned char c);
bool vlr_base64_space(unsigned char c);

/* Strict decoding of all of s: whitespace skipped, any other character outside the alphabet refused,
 * '=' padding required to a multiple of 4 symbols and allowed only at the end, at least one byte of
 * data. At most cap bytes (VLR_ERR_LIMIT beyond; the buffer is sized by the cap, not by the text).
 * Messages start with what ("data URI"). *out is malloc'd. */
vlr_status vlr_base64_decode(const char *s, size_t len, uint64_t cap, const char *what, uint8_t **out, size_t *n,
                             vlr_err *e);

/* The first bytes of base64 text, up to cap of them: decoding stops at the first character that is
 * neither whitespace nor of the alphabet ('=' included). Returns the number of bytes written. For
 * sniffing a format or reading an image header without decoding the whole text. */
size_t vlr_base64_decode_head(const char *s, size_t len, uint8_t *out, size_t cap);

/* True when s holds only alphabet characters, '=' and whitespace. */
bool vlr_base64_is_text(const char *s, size_t len);

/* Appends the padded base64 text of d[0..n) to out (no whitespace). */
void vlr_base64_encode(vlr_buf *out, const uint8_t *d, size_t n);

#endif
