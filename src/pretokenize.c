/* pretokenize.c: a hand-written scanner for the Qwen2 pre-tokenizer regex.
 *
 * Hugging Face `tokenizers` runs the Split regex through Oniguruma. Instead of a regex engine we
 * walk code points and implement each alternative as a small branch, labelled below with the regex
 * fragment it stands for. This avoids engine differences in the classes (PCRE2 10.42 with UCP counts
 * U+180E as \s, Python's re counts U+001C..U+001F, JavaScript counts U+FEFF) and needs no regex
 * library. Classes: \p{L} and \p{N} from utf8proc_category() (General Category L* and N*),
 * \s = the Unicode White_Space property, listed explicitly below.
 *
 * Alternatives are tried left to right at each position, with the backtracking an Oniguruma match
 * would do worked out by hand for each branch. Input must be valid UTF-8; nothing here allocates,
 * normalizes or looks at added tokens (tokenizer.c does those). */
#include "pretokenize.h"

#include <stdbool.h>

#include <utf8proc.h>

static inline size_t decode_at(const char *text, size_t len, size_t i, int32_t *cp) {
    const unsigned char *s = (const unsigned char *)text;
    unsigned char b = s[i];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    /* Valid UTF-8 is promised; the bounds checks only keep a broken caller from reading past len. */
    if (b < 0xE0 && i + 1 < len) {
        *cp = ((int32_t)(b & 0x1F) << 6) | (s[i + 1] & 0x3F);
        return 2;
    }
    if (b < 0xF0 && i + 2 < len) {
        *cp = ((int32_t)(b & 0x0F) << 12) | ((int32_t)(s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
        return 3;
    }
    if (i + 3 < len) {
        *cp = ((int32_t)(b & 0x07) << 18) | ((int32_t)(s[i + 1] & 0x3F) << 12) |
              ((int32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
        return 4;
    }
    *cp = 0xFFFD;
    return 1;
}

size_t vlr_utf8_decode_at(const char *text, size_t len, size_t i, int32_t *cp) {
    return decode_at(text, len, i, cp);
}

/* Unicode White_Space (PropList.txt), which is what Oniguruma and Rust's regex mean by \s.
 * Not included, on purpose: U+180E (a format character since Unicode 6.3), U+200B, U+FEFF,
 * U+001C..U+001F. */
static bool is_white_space(int32_t cp) {
    if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D);
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

static inline unsigned cp_class(int32_t cp) {
    if (cp < 0x80) {
        if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return VLR_CC_LETTER;
        if (cp >= '0' && cp <= '9') return VLR_CC_NUMBER;
        if (cp == '\n' || cp == '\r') return VLR_CC_SPACE | VLR_CC_NEWLINE;
        if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return VLR_CC_SPACE;
        return 0;
    }
    if (is_white_space(cp)) return VLR_CC_SPACE;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return VLR_CC_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return VLR_CC_NUMBER;
    default:
        return 0;
    }
}

unsigned vlr_pretok_class(int32_t cp) { return cp_class(cp); }

/* Simple case folding onto the ASCII letters of the contraction branch. Only U+017F LATIN SMALL
 * LONG S (folds to s) and U+212A KELVIN SIGN (folds to k, unused here) fold onto ASCII letters
 * from outside ASCII (CaseFolding.txt, status C/S). */
static int32_t fold_ascii(int32_t cp) {
    if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
    if (cp == 0x17F) return 's';
    if (cp == 0x212A) return 'k';
    return cp;
}

/* End of the run of characters at pos whose class has any bit of `want` and none of `reject`. */
static size_t run_end(const char *text, size_t len, size_t pos, unsigned want, unsigned reject) {
    while (pos < len) {
        int32_t cp;
        size_t n = decode_at(text, len, pos, &cp);
        unsigned k = cp_class(cp);
        if (!(k & want) || (k & reject)) break;
        pos += n;
    }
    return pos;
}

/* End of the run of "other" characters ([^\s\p{L}\p{N}]) at pos. */
static size_t other_run_end(const char *text, size_t len, size_t pos) {
    while (pos < len) {
        int32_t cp;
        size_t n = decode_at(text, len, pos, &cp);
        if (cp_class(cp) & (VLR_CC_SPACE | VLR_CC_LETTER | VLR_CC_NUMBER)) break;
        pos += n;
    }
    return pos;
}

size_t vlr_pretok_next(const char *text, size_t len, size_t pos) {
    int32_t c0;
    size_t n0 = decode_at(text, len, pos, &c0);
    unsigned k0 = cp_class(c0);
    size_t p1 = pos + n0; /* start of the second character */

    /* regex branch: (?i:'s|'t|'re|'ve|'m|'ll|'d) -- the alternatives have distinct first letters,
     * so at most one can apply; 're/'ve/'ll need their second letter or the branch fails. */
    if (c0 == '\'' && p1 < len) {
        int32_t c1;
        size_t n1 = decode_at(text, len, p1, &c1);
        int32_t f1 = fold_ascii(c1);
        if (f1 == 's' || f1 == 't' || f1 == 'm' || f1 == 'd') return p1 + n1;
        if ((f1 == 'r' || f1 == 'v' || f1 == 'l') && p1 + n1 < len) {
            int32_t c2;
            size_t n2 = decode_at(text, len, p1 + n1, &c2);
            int32_t f2 = fold_ascii(c2);
            if ((f1 == 'l' && f2 == 'l') || (f1 != 'l' && f2 == 'e')) return p1 + n1 + n2;
        }
    }

    /* regex branch: [^\r\n\p{L}\p{N}]?\p{L}+ -- the optional prefix is taken when c0 is neither a
     * letter, a number nor \r\n and a letter follows; if c0 is a letter the prefix matches empty. */
    if (k0 & VLR_CC_LETTER) return run_end(text, len, p1, VLR_CC_LETTER, 0);
    if (!(k0 & (VLR_CC_NUMBER | VLR_CC_NEWLINE)) && p1 < len) {
        int32_t c1;
        decode_at(text, len, p1, &c1);
        if (cp_class(c1) & VLR_CC_LETTER) return run_end(text, len, p1, VLR_CC_LETTER, 0);
    }

    /* regex branch: \p{N} -- one number character per piece. */
    if (k0 & VLR_CC_NUMBER) return p1;

    /* regex branch: ` ?[^\s\p{L}\p{N}]+[\r\n]*` -- an optional U+0020, a run of "other" characters,
     * then any \r\n that follow. If c0 is a space not followed by an "other" character, the
     * optional space backtracks to empty and the run would have to start at the space (\s): fail. */
    size_t other_start = (c0 == ' ') ? p1 : pos;
    size_t other_end = other_run_end(text, len, other_start);
    if (other_end > other_start) {
        while (other_end < len && (text[other_end] == '\r' || text[other_end] == '\n')) other_end++;
        return other_end;
    }

    /* Here c0 is whitespace (letters, numbers and "other" characters were all handled above). */
    if (!(k0 & VLR_CC_SPACE)) return p1; /* cannot happen; keeps the scan moving regardless */

    /* One pass over the whitespace run [pos, ws_end): remember the end of its last \r\n and the
     * start of its last character. */
    size_t ws_end = pos, last_newline_end = 0, last_char_start = pos;
    while (ws_end < len) {
        int32_t cp;
        size_t n = decode_at(text, len, ws_end, &cp);
        if (!(cp_class(cp) & VLR_CC_SPACE)) break;
        last_char_start = ws_end;
        ws_end += n;
        if (cp == '\r' || cp == '\n') last_newline_end = ws_end;
    }

    /* regex branch: \s*[\r\n]+ -- \s* takes the whole run, then gives back characters until
     * [\r\n]+ can match: the piece ends right after the run's last \r or \n. */
    if (last_newline_end) return last_newline_end;

    /* regex branch: \s+(?!\S) -- at the end of the text the whole run matches; before a non-space
     * the run gives back its last character, which is possible when the run has two or more. */
    if (ws_end == len) return ws_end;
    if (last_char_start > pos) return last_char_start;

    /* regex branch: \s+ -- a single whitespace character before a non-space. */
    return ws_end;
}
