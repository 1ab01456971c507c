/* tokenizer.h: the Qwen2 / Qwen2.5-VL byte-level BPE tokenizer, with Hugging Face `tokenizers`
 * semantics (tests/reference/tokenizer/README.md describes the pipeline).
 *
 * Encoding: added tokens are cut out of the raw text first (leftmost, then longest), each stretch
 * between them is normalized to NFC, split by the Qwen2 pre-tokenizer regex (pretokenize.c),
 * mapped byte by byte onto GPT-2's printable characters and merged by BPE rank. Decoding maps ids
 * back to bytes and replaces invalid UTF-8 with U+FFFD like Rust's String::from_utf8_lossy.
 *
 * Only tokenizer.json files of this shape load: normalizer NFC (or none), pre-tokenizer Split with
 * the Qwen2 regex followed by ByteLevel, model BPE without dropout or subword affixes, decoder
 * ByteLevel. Anything else fails with a message saying what differs, rather than tokenizing wrongly.
 *
 * Threading: a vlr_tokenizer is immutable after vlr_tok_load and may be shared by any number of
 * threads. A vlr_tok_cache (piece -> ids) is mutable: use one per thread, or none. */
#ifndef VLR_TOKENIZER_H
#define VLR_TOKENIZER_H

#include "common.h"

typedef struct vlr_tokenizer vlr_tokenizer; /* immutable after load; shared by threads */
typedef struct vlr_tok_cache vlr_tok_cache; /* per-thread word -> ids cache (bounded) */

/* Growable id list; free(data) when done. */
typedef struct vlr_ids {
    int32_t *data;
    size_t len, cap;
} vlr_ids;
bool vlr_ids_push(vlr_ids *v, int32_t id); /* false on OOM (v unchanged) */

/* Loads tokenizer.json. On failure *out is NULL and e says what is wrong, prefixed by the path. */
vlr_status vlr_tok_load(const char *tokenizer_json_path, vlr_tokenizer **out, vlr_err *e);
void vlr_tok_free(vlr_tokenizer *t); /* NULL is a no-op */

/* A cache of at most max_entries pieces (0 = VLR_TOK_CACHE_DEFAULT); when full it starts over.
 * It remembers which tokenizer filled it and clears itself when used with another. NULL on OOM. */
#define VLR_TOK_CACHE_DEFAULT 16384
vlr_tok_cache *vlr_tok_cache_new(size_t max_entries);
void vlr_tok_cache_free(vlr_tok_cache *c); /* NULL is a no-op */

/* Appends the ids of text (len bytes, may contain NUL) to out. Added tokens are matched on the raw
 * text. Invalid UTF-8 -> VLR_ERR_INPUT "invalid UTF-8 at byte N". cache may be NULL. On failure
 * out keeps the ids appended before the failure (its length may have grown). */
vlr_status vlr_tok_encode(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *text, size_t len,
                          vlr_ids *out, vlr_err *e);

/* Appends the decoded UTF-8 text to out (invalid byte sequences -> U+FFFD as HF does). Added
 * tokens decode to their content; with skip_special the special ones are dropped. An id that is
 * neither in the vocabulary nor an added token is an error (VLR_ERR_INPUT), where HF would drop it
 * silently. */
vlr_status vlr_tok_decode(const vlr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                          vlr_buf *out, vlr_err *e);

/* Id of an added token or vocabulary entry (vocabulary entries in their byte-level spelling, e.g.
 * "Ġthe"); -1 if none. Added tokens take precedence, as in HF token_to_id. */
int32_t vlr_tok_find(const vlr_tokenizer *t, const char *token, size_t len);

/* Largest id (vocabulary or added token) + 1. */
size_t vlr_tok_vocab_size(const vlr_tokenizer *t);
/* The longest text (in bytes) a single id stands for: a text of n bytes needs at least
 * n / vlr_tok_max_token_bytes ids, which bounds a request's length before it is tokenized. */
size_t vlr_tok_max_token_bytes(const vlr_tokenizer *t);

#endif
