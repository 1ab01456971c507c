/* pretokenize.h: the Qwen2 pre-tokenizer split (private to tokenizer.c and its tests).
 *
 * vlr_pretok_next() returns where the piece that starts at `pos` ends, for the Hugging Face Split
 * pre-tokenizer (behaviour Isolated) with the Qwen2 regex
 *
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * with Oniguruma's meaning of the classes (\s = Unicode White_Space, \p{L} = General Category L*,
 * \p{N} = N*). The text must be valid UTF-8 (the caller validates it); the pattern matches every
 * character, so calling it repeatedly from 0 cuts the whole text into pieces. */
#ifndef VLR_PRETOKENIZE_H
#define VLR_PRETOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* The regex above, exactly as tokenizer.json spells it (pre_tokenizer.pretokenizers[0].pattern). */
#define VLR_QWEN2_SPLIT_REGEX                                                                     \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* End (exclusive byte offset) of the piece starting at pos; pos < len. Always > pos. */
size_t vlr_pretok_next(const char *text, size_t len, size_t pos);

/* The scanner's character classes of one code point (a bit set of VLR_CC_*). */
enum {
    VLR_CC_LETTER = 1,  /* \p{L}: Lu Ll Lt Lm Lo */
    VLR_CC_NUMBER = 2,  /* \p{N}: Nd Nl No */
    VLR_CC_SPACE = 4,   /* \s: Unicode White_Space */
    VLR_CC_NEWLINE = 8  /* \r or \n */
};
unsigned vlr_pretok_class(int32_t cp);

/* Decodes the code point at s[i] (valid UTF-8, i < len); returns its length in bytes. */
size_t vlr_utf8_decode_at(const char *s, size_t len, size_t i, int32_t *cp);

#endif
