/* tokenizer.c: loading tokenizer.json, byte-level BPE encoding with added tokens, and decoding,
 * matching Hugging Face `tokenizers` (Rust) for Qwen2-style tokenizers.
 *
 * Encoding pipeline (tokenizers TokenizerImpl::encode_single_sequence, as spelled out in
 * tests/reference/tokenizer/README.md): validate UTF-8; cut the added tokens with normalized=false
 * out of the raw text (AddedVocabulary::find_matches: leftmost, then longest, with the
 * single_word/lstrip/rstrip rules); normalize each stretch between them to NFC with utf8proc; cut
 * the added tokens with normalized=true out of the normalized stretch; split what remains with the
 * Qwen2 regex (pretokenize.c); BPE each piece on token ids: every byte starts as the id of its
 * GPT-2 byte-to-unicode character, then the adjacent pair of lowest merge rank is merged, leftmost
 * first (tokenizers models/bpe/word.rs merge_all): a binary heap of candidate pairs for long
 * pieces, a scan of per-pair ranks for short ones (the same order, cheaper bookkeeping).
 *
 * The vocabulary and the merges live in open-addressing hash tables keyed by token bytes and by
 * (left id, right id). A per-thread cache maps recent pieces to their ids. Decoding uses a table of
 * the bytes each id stands for, built at load time with the ByteLevel decoder's rule.
 *
 * Not supported (load fails with a message): other normalizers or pre-tokenizers, BPE dropout,
 * continuing_subword_prefix / end_of_word_suffix, vocabularies lacking one of the 256 byte tokens,
 * post-processors that add tokens. No truncation or padding: callers handle lengths. */
#include "tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "json.h"
#include "pretokenize.h"

#define TOK_MAX_FILE_BYTES ((size_t)1 << 30) /* tokenizer.json larger than 1 GiB is refused */
#define TOK_MAX_ID (1 << 24)                 /* ids index dense tables: 16M is far above any vocab */
#define TOK_CACHE_MAX_PIECE 128              /* longer pieces are not cached */
#define MERGE_AHEAD 8                        /* load: table slots prefetched this far ahead */
#define TOK_BPE_STACK 64                     /* pieces up to this long: bpe_short, on the stack */

enum { ID_KNOWN = 1, ID_SPECIAL = 2, ID_ADDED = 4 };

typedef struct str_ref {
    uint32_t off, len; /* bytes t->strings[off .. off+len) */
} str_ref;

typedef struct added_token {
    str_ref content; /* as written in tokenizer.json */
    str_ref match;   /* what is searched for: content, or NFC(content) when normalized */
    int32_t id;
    bool special, single_word, lstrip, rstrip, normalized;
} added_token;

/* The added tokens matched in one pass (raw text or normalized text), bucketed by first byte. */
typedef struct added_set {
    uint32_t *order;     /* indices into t->added: by first byte, longest first within a byte */
    uint32_t first[257]; /* order[first[b] .. first[b+1]) are the tokens starting with byte b */
    size_t n;
} added_set;

typedef struct vocab_entry {
    str_ref token; /* byte-level spelling, e.g. "Ġthe" */
    int32_t id;
} vocab_entry;

#define MERGE_EMPTY UINT64_MAX
typedef struct merge_slot {
    uint64_t pair;  /* left id << 32 | right id; MERGE_EMPTY when the slot is free */
    uint32_t rank;  /* index in model.merges: lower merges first */
    int32_t merged; /* id of the concatenation */
} merge_slot;

struct vlr_tokenizer {
    char *strings; /* every token text and decoded byte string, addressed by str_ref */
    size_t strings_len, strings_cap;
    vocab_entry *vocab; /* [n_vocab] */
    size_t n_vocab;
    uint32_t *vocab_slots; /* [vocab_mask+1] index+1 into vocab, 0 = free */
    size_t vocab_mask;
    merge_slot *merges; /* [merge_mask+1] */
    size_t merge_mask, n_merges;
    uint32_t byte_char[256];     /* GPT-2 bytes_to_unicode: byte -> code point */
    int16_t char_byte[0x144];    /* its inverse on code points < U+0144, -1 where none */
    int32_t byte_id[256];        /* id of the one-character token of each byte */
    size_t n_ids;                /* max id + 1 */
    str_ref *decoded;            /* [n_ids] the bytes each id decodes to */
    uint8_t *id_flags;           /* [n_ids] ID_* bits */
    added_token *added;          /* [n_added] in file order */
    size_t n_added;
    added_set raw_set, norm_set; /* normalized=false / normalized=true tokens */
    uint64_t instance;           /* tells caches filled by another tokenizer (even one loaded
                                    later at the same address) from ours */
    bool nfc;                    /* normalizer is NFC (else none) */
    bool ignore_merges;          /* model.ignore_merges: a piece in the vocab maps to its id */
    size_t max_token_bytes;      /* longest text one id stands for (vocab or added token) */
};

typedef struct cache_entry {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, ids_len;
} cache_entry;

struct vlr_tok_cache {
    uint64_t owner; /* instance of the tokenizer whose ids are stored; another one clears it */
    size_t max_entries, n_entries;
    uint32_t *slots; /* [mask+1] index+1 into entries, 0 = free */
    size_t mask;
    cache_entry *entries; /* [max_entries] */
    char *keys;           /* piece bytes */
    size_t keys_len, keys_cap;
    int32_t *ids;
    size_t ids_len, ids_cap;
};

/* ---- small helpers ------------------------------------------------------------------------ */

/* FNV-1a: token strings are short (a few bytes), where it is as fast as anything fancier. It is
 * also incremental: the hash of a + b continues from the hash of a. */
#define FNV_OFFSET 0xcbf29ce484222325ull
static uint64_t hash_more(uint64_t h, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
static uint64_t hash_bytes(const char *s, size_t n) { return hash_more(FNV_OFFSET, s, n); }

static uint64_t hash_pair(uint64_t x) { /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static size_t pow2_at_least(size_t n) {
    size_t p = 16;
    while (p < n && p < ((size_t)1 << 40)) p <<= 1;
    return p;
}

static bool ids_append(vlr_ids *v, const int32_t *ids, size_t n) {
    size_t need;
    if (!vlr_add_ok(v->len, n, &need)) return false;
    if (need > v->cap) {
        size_t cap = v->cap ? v->cap : 64;
        while (cap < need) {
            if (cap > SIZE_MAX / 2) return false;
            cap *= 2;
        }
        size_t bytes;
        if (!vlr_mul_ok(cap, sizeof *v->data, &bytes)) return false;
        int32_t *p = realloc(v->data, bytes);
        if (!p) return false;
        v->data = p;
        v->cap = cap;
    }
    if (n) memcpy(v->data + v->len, ids, n * sizeof *ids);
    v->len = need;
    return true;
}

bool vlr_ids_push(vlr_ids *v, int32_t id) {
    if (v->len < v->cap) {
        v->data[v->len++] = id;
        return true;
    }
    return ids_append(v, &id, 1);
}

/* Appends bytes to t->strings; false when it would pass 4 GiB (str_ref offsets) or on OOM. */
static bool strings_add(vlr_tokenizer *t, const char *s, size_t n, str_ref *ref) {
    size_t need;
    if (!vlr_add_ok(t->strings_len, n, &need) || need > UINT32_MAX) return false;
    if (need > t->strings_cap) {
        size_t cap = t->strings_cap ? t->strings_cap : 1 << 20;
        while (cap < need) cap *= 2;
        char *p = realloc(t->strings, cap);
        if (!p) return false;
        t->strings = p;
        t->strings_cap = cap;
    }
    if (n) memcpy(t->strings + t->strings_len, s, n);
    ref->off = (uint32_t)t->strings_len;
    ref->len = (uint32_t)n;
    t->strings_len = need;
    return true;
}

static bool json_str_is(const vlr_json *v, const char *want) {
    return vlr_json_is(v, VLR_JSON_STRING) && v->len == strlen(want) && !memcmp(v->str, want, v->len);
}

/* A JSON boolean member; absent or null gives dflt. Any other type: false return. */
static bool json_bool_member(const vlr_json *obj, const char *key, bool dflt, bool *out) {
    const vlr_json *v = vlr_json_get(obj, key);
    if (!v || v->type == VLR_JSON_NULL) *out = dflt;
    else if (v->type == VLR_JSON_TRUE) *out = true;
    else if (v->type == VLR_JSON_FALSE) *out = false;
    else return false;
    return true;
}

/* The "type" member of a component, for messages. */
static const char *json_type_member(const vlr_json *obj) {
    const vlr_json *v = vlr_json_get(obj, "type");
    return vlr_json_is(v, VLR_JSON_STRING) ? v->str : "(no type)";
}

static size_t utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- vocabulary and merge tables ---------------------------------------------------------- */

/* Lookup with the hash of s already computed (h = hash_bytes(s, n)). */
static int32_t vocab_lookup_hashed(const vlr_tokenizer *t, const char *s, size_t n, uint64_t h) {
    if (!t->vocab_slots) return -1;
    size_t i = (size_t)h & t->vocab_mask;
    for (;;) {
        uint32_t slot = t->vocab_slots[i];
        if (!slot) return -1;
        const vocab_entry *v = &t->vocab[slot - 1];
        if (v->token.len == n && !memcmp(t->strings + v->token.off, s, n)) return v->id;
        i = (i + 1) & t->vocab_mask;
    }
}

static int32_t vocab_lookup(const vlr_tokenizer *t, const char *s, size_t n) {
    return vocab_lookup_hashed(t, s, n, hash_bytes(s, n));
}

/* Adds entry t->vocab[index], whose token hashes to h; a repeated token string keeps the later
 * id (serde map semantics). */
static void vocab_insert(vlr_tokenizer *t, uint32_t index, uint64_t h) {
    const vocab_entry *v = &t->vocab[index];
    const char *s = t->strings + v->token.off;
    size_t i = (size_t)h & t->vocab_mask;
    for (;;) {
        uint32_t slot = t->vocab_slots[i];
        if (!slot) {
            t->vocab_slots[i] = index + 1;
            return;
        }
        const vocab_entry *o = &t->vocab[slot - 1];
        if (o->token.len == v->token.len && !memcmp(t->strings + o->token.off, s, v->token.len)) {
            t->vocab_slots[i] = index + 1;
            return;
        }
        i = (i + 1) & t->vocab_mask;
    }
}

static inline const merge_slot *merge_lookup(const vlr_tokenizer *t, int32_t left, int32_t right) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->pair == key) return m;
        if (m->pair == MERGE_EMPTY) return NULL;
        i = (i + 1) & t->merge_mask;
    }
}

/* A repeated pair keeps the later rank, as tokenizers' BpeBuilder collects merges into a map. */
static void merge_insert(vlr_tokenizer *t, uint64_t key, uint32_t rank, int32_t merged) {
    size_t i = (size_t)hash_pair(key) & t->merge_mask;
    while (t->merges[i].pair != MERGE_EMPTY && t->merges[i].pair != key) i = (i + 1) & t->merge_mask;
    t->merges[i].pair = key;
    t->merges[i].rank = rank;
    t->merges[i].merged = merged;
}

/* GPT-2 bytes_to_unicode: the printable bytes ! .. ~, ¡ .. ¬, ® .. ÿ map to themselves, the
 * other 68 bytes to U+0100, U+0101, ... in increasing byte order. */
static void build_byte_tables(vlr_tokenizer *t) {
    uint32_t next = 0x100;
    for (int i = 0; i < 0x144; i++) t->char_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->byte_char[b] = printable ? (uint32_t)b : next++;
        t->char_byte[t->byte_char[b]] = (int16_t)b;
    }
}

/* ---- loading ------------------------------------------------------------------------------ */

/* Checks that the pipeline around the model is the one we implement. */
static vlr_status check_pipeline(vlr_tokenizer *t, const vlr_json *root, const char *path,
                                 vlr_err *e) {
    const vlr_json *norm = vlr_json_get(root, "normalizer");
    if (!norm || norm->type == VLR_JSON_NULL) t->nfc = false;
    else if (json_str_is(vlr_json_get(norm, "type"), "NFC")) t->nfc = true;
    else
        return vlr_fail(e, VLR_ERR_UNSUPPORTED,
                        "%s: normalizer %s is not supported (only NFC or none)", path,
                        json_type_member(norm));

    const vlr_json *pre = vlr_json_get(root, "pre_tokenizer");
    const vlr_json *list = vlr_json_get(pre, "pretokenizers");
    const vlr_json *split = vlr_json_at(list, 0), *bytelevel = vlr_json_at(list, 1);
    const char *why = NULL;
    bool invert = false, prefix_space = true, use_regex = true;
    if (!json_str_is(vlr_json_get(pre, "type"), "Sequence") || !vlr_json_is(list, VLR_JSON_ARRAY) ||
        list->len != 2)
        why = "it is not a Sequence of two pre-tokenizers";
    else if (!json_str_is(vlr_json_get(split, "type"), "Split"))
        why = "the first is not Split";
    else if (!json_str_is(vlr_json_get(vlr_json_get(split, "pattern"), "Regex"),
                          VLR_QWEN2_SPLIT_REGEX))
        why = "the Split pattern is not the Qwen2 regex";
    else if (!json_str_is(vlr_json_get(split, "behavior"), "Isolated"))
        why = "the Split behavior is not Isolated";
    else if (!json_bool_member(split, "invert", false, &invert) || invert)
        why = "the Split is inverted";
    else if (!json_str_is(vlr_json_get(bytelevel, "type"), "ByteLevel"))
        why = "the second is not ByteLevel";
    else if (!json_bool_member(bytelevel, "add_prefix_space", true, &prefix_space) || prefix_space)
        why = "ByteLevel adds a prefix space";
    else if (!json_bool_member(bytelevel, "use_regex", true, &use_regex) || use_regex)
        why = "ByteLevel applies its own regex";
    if (why)
        return vlr_fail(e, VLR_ERR_UNSUPPORTED,
                        "%s: pre_tokenizer is not supported: %s (expected Sequence[Split(Qwen2 "
                        "regex, Isolated), ByteLevel(add_prefix_space=false, use_regex=false)])",
                        path, why);

    const vlr_json *post = vlr_json_get(root, "post_processor");
    if (post && post->type != VLR_JSON_NULL && !json_str_is(vlr_json_get(post, "type"), "ByteLevel"))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED,
                        "%s: post_processor %s is not supported (only ByteLevel or none, which add "
                        "no tokens)",
                        path, json_type_member(post));
    const vlr_json *dec = vlr_json_get(root, "decoder");
    if (!json_str_is(vlr_json_get(dec, "type"), "ByteLevel"))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: decoder %s is not supported (only ByteLevel)",
                        path, dec ? json_type_member(dec) : "(none)");

    const vlr_json *model = vlr_json_get(root, "model");
    if (!vlr_json_is(model, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: \"model\" is missing or not an object", path);
    const vlr_json *type = vlr_json_get(model, "type");
    if (type && !json_str_is(type, "BPE"))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: model type %s is not supported (only BPE)",
                        path, json_type_member(model));
    const vlr_json *dropout = vlr_json_get(model, "dropout");
    if (dropout && dropout->type != VLR_JSON_NULL)
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: model.dropout is set; BPE dropout is not "
                        "supported", path);
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const vlr_json *a = vlr_json_get(model, affixes[i]);
        if (a && a->type != VLR_JSON_NULL && !json_str_is(a, ""))
            return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: model.%s is set; it is not supported",
                            path, affixes[i]);
    }
    if (!json_bool_member(model, "ignore_merges", false, &t->ignore_merges))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: model.ignore_merges is not a boolean", path);
    return VLR_OK;
}

/* Reads an id: an integer in [0, TOK_MAX_ID). */
static bool json_id(const vlr_json *v, int32_t *out) {
    int64_t id;
    if (!vlr_json_int(v, &id) || id < 0 || id >= TOK_MAX_ID) return false;
    *out = (int32_t)id;
    return true;
}

static vlr_status load_vocab(vlr_tokenizer *t, const vlr_json *model, const char *path,
                             int32_t *max_id, vlr_err *e) {
    const vlr_json *vocab = vlr_json_get(model, "vocab");
    if (!vlr_json_is(vocab, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: model.vocab is missing or not an object", path);
    if (vocab->len == 0 || vocab->len >= TOK_MAX_ID)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: model.vocab has %zu entries", path, vocab->len);
    t->vocab = vlr_calloc(vocab->len, sizeof *t->vocab, e);
    if (!t->vocab) return VLR_ERR_NOMEM;
    t->vocab_mask = pow2_at_least(vocab->len * 2) - 1;
    t->vocab_slots = vlr_calloc(t->vocab_mask + 1, sizeof *t->vocab_slots, e);
    if (!t->vocab_slots) return VLR_ERR_NOMEM;
    /* Hash MERGE_AHEAD entries early and prefetch their slots: the inserts' cache misses then
     * overlap (see load_merges). */
    uint64_t ahead[MERGE_AHEAD];
    for (size_t i = 0; i < vocab->len && i < MERGE_AHEAD; i++)
        ahead[i] = hash_bytes(vocab->items[i].key, vocab->items[i].key_len);
    for (size_t i = 0; i < vocab->len; i++) {
        const vlr_json *m = &vocab->items[i];
        vocab_entry *v = &t->vocab[i];
        uint64_t h = ahead[i % MERGE_AHEAD];
        if (i + MERGE_AHEAD < vocab->len) {
            const vlr_json *later = &vocab->items[i + MERGE_AHEAD];
            ahead[i % MERGE_AHEAD] = hash_bytes(later->key, later->key_len);
            __builtin_prefetch(&t->vocab_slots[ahead[i % MERGE_AHEAD] & t->vocab_mask], 1);
        }
        if (!json_id(m, &v->id))
            return vlr_fail(e, VLR_ERR_FORMAT,
                            "%s: model.vocab[\"%s\"] is not an id (an integer in 0..%d)", path,
                            m->key, TOK_MAX_ID - 1);
        if (!strings_add(t, m->key, m->key_len, &v->token))
            return vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory storing the vocabulary", path);
        if (v->id > *max_id) *max_id = v->id;
        t->n_vocab = i + 1;
        vocab_insert(t, (uint32_t)i, h);
    }
    /* Every byte must have its token, or some text could not be encoded at all (tokenizers would
     * silently drop such bytes: no unk token, no byte fallback). */
    for (int b = 0; b < 256; b++) {
        char ch[4];
        size_t n = utf8_put(ch, t->byte_char[b]);
        t->byte_id[b] = vocab_lookup(t, ch, n);
        if (t->byte_id[b] < 0)
            return vlr_fail(e, VLR_ERR_UNSUPPORTED,
                            "%s: model.vocab has no token for byte 0x%02X (\"%.*s\"); only complete "
                            "byte-level vocabularies are supported",
                            path, b, (int)n, ch);
    }
    return VLR_OK;
}

/* One merge, in either tokenizer.json form: ["a", "b"] or the legacy "a b". */
static bool merge_parts(const vlr_json *m, const char **a, size_t *na, const char **b, size_t *nb) {
    if (vlr_json_is(m, VLR_JSON_ARRAY) && m->len == 2 &&
        vlr_json_is(&m->items[0], VLR_JSON_STRING) && vlr_json_is(&m->items[1], VLR_JSON_STRING)) {
        *a = m->items[0].str, *na = m->items[0].len;
        *b = m->items[1].str, *nb = m->items[1].len;
        return true;
    }
    if (vlr_json_is(m, VLR_JSON_STRING)) {
        /* Byte-level tokens never contain U+0020 (a space is spelled Ġ): split at the first one. */
        const char *sp = memchr(m->str, ' ', m->len);
        if (!sp) return false;
        *a = m->str, *na = (size_t)(sp - m->str);
        *b = sp + 1, *nb = m->len - *na - 1;
        return true;
    }
    return false;
}

/* One merge being resolved: its two parts and the hashes of a, b and a + b. */
typedef struct merge_todo {
    const char *a, *b;
    size_t na, nb;
    uint64_t ha, hb, hab;
    bool ok;
} merge_todo;

static void merge_prepare(const vlr_tokenizer *t, const vlr_json *m, merge_todo *todo) {
    todo->ok = merge_parts(m, &todo->a, &todo->na, &todo->b, &todo->nb);
    if (!todo->ok) return;
    todo->ha = hash_bytes(todo->a, todo->na);
    todo->hb = hash_bytes(todo->b, todo->nb);
    todo->hab = hash_more(todo->ha, todo->b, todo->nb);
    __builtin_prefetch(&t->vocab_slots[todo->ha & t->vocab_mask]);
    __builtin_prefetch(&t->vocab_slots[todo->hb & t->vocab_mask]);
    __builtin_prefetch(&t->vocab_slots[todo->hab & t->vocab_mask]);
}

/* model.merges: 151k entries of three vocabulary lookups each, the bulk of the load time after
 * the JSON parse. The hashes are computed MERGE_AHEAD merges early and their table slots
 * prefetched, so that the cache misses of consecutive merges overlap. */
static vlr_status load_merges(vlr_tokenizer *t, const vlr_json *model, const char *path,
                              vlr_err *e) {
    vlr_status rc = VLR_OK;
    char *joined = NULL;
    const vlr_json *merges = vlr_json_get(model, "merges");
    if (!merges || merges->type == VLR_JSON_NULL) merges = NULL;
    else if (merges->type != VLR_JSON_ARRAY)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: model.merges is not an array", path);
    size_t n = merges ? merges->len : 0;
    if (n >= UINT32_MAX / 4)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: model.merges has %zu entries", path, n);
    t->merge_mask = pow2_at_least(n + n / 2) - 1; /* load <= 2/3: 4 MB for Qwen's 151k merges */
    t->merges = vlr_malloc((t->merge_mask + 1) * sizeof *t->merges, e);
    if (!t->merges) return VLR_ERR_NOMEM;
    memset(t->merges, 0xFF, (t->merge_mask + 1) * sizeof *t->merges); /* pair = MERGE_EMPTY */
    merge_slot *pending = vlr_malloc(n * sizeof *pending, e); /* n < UINT32_MAX / 4 */
    if (!pending) return VLR_ERR_NOMEM;
    merge_todo ring[MERGE_AHEAD];
    for (size_t i = 0; i < n && i < MERGE_AHEAD; i++) merge_prepare(t, &merges->items[i], &ring[i]);
    size_t joined_cap = 0;
    for (size_t i = 0; i < n; i++) {
        merge_todo m = ring[i % MERGE_AHEAD];
        if (i + MERGE_AHEAD < n)
            merge_prepare(t, &merges->items[i + MERGE_AHEAD], &ring[i % MERGE_AHEAD]);
        if (!m.ok) {
            rc = vlr_fail(e, VLR_ERR_FORMAT,
                          "%s: model.merges[%zu] is neither [\"a\", \"b\"] nor \"a b\"", path, i);
            goto done;
        }
        if (m.na + m.nb > joined_cap) {
            free(joined);
            joined_cap = (m.na + m.nb) * 2 + 64;
            joined = vlr_malloc(joined_cap, e);
            if (!joined) {
                rc = VLR_ERR_NOMEM;
                goto done;
            }
        }
        memcpy(joined, m.a, m.na);
        memcpy(joined + m.na, m.b, m.nb);
        int32_t left = vocab_lookup_hashed(t, m.a, m.na, m.ha);
        int32_t right = vocab_lookup_hashed(t, m.b, m.nb, m.hb);
        int32_t merged = vocab_lookup_hashed(t, joined, m.na + m.nb, m.hab);
        if (left < 0 || right < 0 || merged < 0) {
            const char *which = left < 0 ? m.a : right < 0 ? m.b : joined;
            size_t nwhich = left < 0 ? m.na : right < 0 ? m.nb : m.na + m.nb;
            rc = vlr_fail(e, VLR_ERR_FORMAT,
                          "%s: model.merges[%zu]: \"%.*s\" is not in the vocabulary", path, i,
                          (int)(nwhich > 200 ? 200 : nwhich), which);
            goto done;
        }
        pending[i].pair = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
        pending[i].rank = (uint32_t)i;
        pending[i].merged = merged;
    }
    /* Insert in a second pass, prefetching the slot of a later merge: random writes into a table
     * of several MB, whose cache misses would otherwise come one after another. */
    for (size_t i = 0; i < n; i++) {
        if (i + MERGE_AHEAD < n)
            __builtin_prefetch(&t->merges[hash_pair(pending[i + MERGE_AHEAD].pair) & t->merge_mask], 1);
        merge_insert(t, pending[i].pair, pending[i].rank, pending[i].merged);
    }
    t->n_merges = n;
done:
    free(pending);
    free(joined);
    return rc;
}

static vlr_status load_added(vlr_tokenizer *t, const vlr_json *root, const char *path,
                             int32_t *max_id, vlr_err *e) {
    const vlr_json *list = vlr_json_get(root, "added_tokens");
    if (!list || list->type == VLR_JSON_NULL) return VLR_OK;
    if (list->type != VLR_JSON_ARRAY)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: added_tokens is not an array", path);
    if (list->len >= TOK_MAX_ID)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: added_tokens has %zu entries", path, list->len);
    t->added = vlr_calloc(list->len, sizeof *t->added, e);
    if (!t->added) return VLR_ERR_NOMEM;
    for (size_t i = 0; i < list->len; i++) {
        const vlr_json *o = &list->items[i];
        const vlr_json *content = vlr_json_get(o, "content");
        added_token *a = &t->added[i];
        if (!vlr_json_is(o, VLR_JSON_OBJECT) || !json_id(vlr_json_get(o, "id"), &a->id) ||
            !vlr_json_is(content, VLR_JSON_STRING))
            return vlr_fail(e, VLR_ERR_FORMAT,
                            "%s: added_tokens[%zu] needs an \"id\" (integer in 0..%d) and a "
                            "\"content\" string",
                            path, i, TOK_MAX_ID - 1);
        /* tokenizers' AddedToken defaults: normalized true, everything else false. */
        if (!json_bool_member(o, "special", false, &a->special) ||
            !json_bool_member(o, "single_word", false, &a->single_word) ||
            !json_bool_member(o, "lstrip", false, &a->lstrip) ||
            !json_bool_member(o, "rstrip", false, &a->rstrip) ||
            !json_bool_member(o, "normalized", true, &a->normalized))
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: added_tokens[%zu] has a non-boolean flag", path,
                            i);
        if (!strings_add(t, content->str, content->len, &a->content))
            return vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory storing added tokens", path);
        a->match = a->content;
        if (a->normalized && t->nfc && content->len) {
            /* The normalized pass searches normalized text, so it looks for NFC(content). */
            utf8proc_uint8_t *nfc = NULL;
            utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)content->str,
                                              (utf8proc_ssize_t)content->len, &nfc,
                                              UTF8PROC_STABLE | UTF8PROC_COMPOSE);
            bool ok = n >= 0 && strings_add(t, (const char *)nfc, (size_t)n, &a->match);
            free(nfc);
            if (!ok)
                return vlr_fail(e, VLR_ERR_NOMEM, "%s: added_tokens[%zu]: cannot normalize: %s",
                                path, i, n < 0 ? utf8proc_errmsg(n) : "out of memory");
        }
        if (a->id > *max_id) *max_id = a->id;
        t->n_added = i + 1;
    }
    return VLR_OK;
}

typedef struct added_sort_key {
    uint8_t first;
    uint32_t len, index;
} added_sort_key;

static int added_sort_cmp(const void *pa, const void *pb) {
    const added_sort_key *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->index < b->index ? -1 : a->index > b->index;
}

/* Buckets the added tokens with the given normalized flag by first byte, longest first, so the
 * first one that matches at a position is the longest (Aho-Corasick LeftmostLongest). Tokens with
 * empty content are never matched (tokenizers ignores them). */
static vlr_status build_added_set(vlr_tokenizer *t, added_set *set, bool normalized, vlr_err *e) {
    added_sort_key *keys = NULL;
    vlr_status rc = VLR_OK;
    size_t n = 0;
    memset(set->first, 0, sizeof set->first);
    if (!t->n_added) return VLR_OK;
    keys = vlr_calloc(t->n_added, sizeof *keys, e);
    set->order = vlr_calloc(t->n_added, sizeof *set->order, e);
    if (!keys || !set->order) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (a->normalized != normalized || a->match.len == 0) continue;
        keys[n].first = (uint8_t)t->strings[a->match.off];
        keys[n].len = a->match.len;
        keys[n].index = (uint32_t)i;
        n++;
    }
    qsort(keys, n, sizeof *keys, added_sort_cmp);
    for (size_t i = 0; i < n; i++) set->order[i] = keys[i].index;
    size_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && keys[k].first < b) k++;
        set->first[b] = (uint32_t)k;
    }
    set->n = n;
done:
    free(keys);
    return rc;
}

/* tokenizers' ByteLevel decoder, per token: if every character is one of the 256 byte-level
 * characters, the token stands for those bytes; otherwise for its own UTF-8 text. */
static bool bytelevel_decode(vlr_tokenizer *t, str_ref token, str_ref *out) {
    char small[256];
    char *buf = token.len <= sizeof small ? small : malloc(token.len);
    if (!buf) return false;
    size_t n = 0;
    bool all_mapped = true;
    size_t i = 0;
    while (i < token.len) {
        int32_t cp;
        i += vlr_utf8_decode_at(t->strings + token.off, token.len, i, &cp);
        if (cp >= 0x144 || t->char_byte[cp] < 0) {
            all_mapped = false;
            break;
        }
        buf[n++] = (char)t->char_byte[cp];
    }
    /* The source may move when strings grows: copy the bytes out first. */
    bool ok;
    if (all_mapped) {
        ok = strings_add(t, buf, n, out);
    } else {
        *out = token;
        ok = true;
    }
    if (buf != small) free(buf);
    return ok;
}

static vlr_status build_decode_table(vlr_tokenizer *t, int32_t max_id, const char *path,
                                     vlr_err *e) {
    t->n_ids = (size_t)max_id + 1;
    t->decoded = vlr_calloc(t->n_ids, sizeof *t->decoded, e);
    t->id_flags = vlr_calloc(t->n_ids, sizeof *t->id_flags, e);
    if (!t->decoded || !t->id_flags) return VLR_ERR_NOMEM;
    for (size_t i = 0; i < t->n_vocab; i++) {
        const vocab_entry *v = &t->vocab[i];
        if (!bytelevel_decode(t, v->token, &t->decoded[v->id]))
            return vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory building the decode table", path);
        t->id_flags[v->id] |= ID_KNOWN;
    }
    /* Added tokens take precedence (tokenizers id_to_token looks at them first). */
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (!bytelevel_decode(t, a->content, &t->decoded[a->id]))
            return vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory building the decode table", path);
        t->id_flags[a->id] = ID_KNOWN | ID_ADDED | (a->special ? ID_SPECIAL : 0);
    }
    for (size_t i = 0; i < t->n_ids; i++)
        if (t->decoded[i].len > t->max_token_bytes) t->max_token_bytes = t->decoded[i].len;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].content.len > t->max_token_bytes) t->max_token_bytes = t->added[i].content.len;
    /* skip_special_tokens drops tokens whose *text* is a special token's content
     * (AddedVocabulary::is_special_token), so a vocabulary entry spelled the same goes too. */
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (!a->special || !a->content.len) continue;
        int32_t id = vocab_lookup(t, t->strings + a->content.off, a->content.len);
        if (id >= 0 && !(t->id_flags[id] & ID_ADDED)) t->id_flags[id] |= ID_SPECIAL;
    }
    return VLR_OK;
}

vlr_status vlr_tok_load(const char *path, vlr_tokenizer **out, vlr_err *e) {
    vlr_status rc;
    vlr_json_doc *doc = NULL;
    vlr_tokenizer *t = NULL;
    *out = NULL;
    if (!path) return vlr_fail(e, VLR_ERR_INPUT, "tokenizer: no path given");
    rc = vlr_json_parse_file(path, TOK_MAX_FILE_BYTES, &doc, e);
    if (rc) goto done;
    const vlr_json *root = vlr_json_root(doc);
    if (!vlr_json_is(root, VLR_JSON_OBJECT)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: not a tokenizer.json (the top level is a %s)", path,
                      vlr_json_type_name(root));
        goto done;
    }
    t = vlr_calloc(1, sizeof *t, e);
    if (!t) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    build_byte_tables(t);
    double now = vlr_now();
    uint64_t now_bits;
    memcpy(&now_bits, &now, sizeof now_bits);
    t->instance = hash_pair(now_bits ^ (uint64_t)(uintptr_t)t) | 1; /* 0 = a fresh cache */
    int32_t max_id = -1;
    const vlr_json *model = vlr_json_get(root, "model");
    if ((rc = check_pipeline(t, root, path, e)) || (rc = load_vocab(t, model, path, &max_id, e)) ||
        (rc = load_merges(t, model, path, e)) || (rc = load_added(t, root, path, &max_id, e)) ||
        (rc = build_decode_table(t, max_id, path, e)) ||
        (rc = build_added_set(t, &t->raw_set, false, e)) ||
        (rc = build_added_set(t, &t->norm_set, true, e)))
        goto done;
    *out = t;
    t = NULL;
done:
    vlr_tok_free(t);
    vlr_json_free(doc);
    return rc;
}

void vlr_tok_free(vlr_tokenizer *t) {
    if (!t) return;
    free(t->strings);
    free(t->vocab);
    free(t->vocab_slots);
    free(t->merges);
    free(t->decoded);
    free(t->id_flags);
    free(t->added);
    free(t->raw_set.order);
    free(t->norm_set.order);
    free(t);
}

int32_t vlr_tok_find(const vlr_tokenizer *t, const char *token, size_t len) {
    if (!t || (!token && len)) return -1;
    for (size_t i = 0; i < t->n_added; i++) {
        const added_token *a = &t->added[i];
        if (a->content.len == len && !memcmp(t->strings + a->content.off, token, len)) return a->id;
    }
    return vocab_lookup(t, token, len);
}

size_t vlr_tok_vocab_size(const vlr_tokenizer *t) { return t ? t->n_ids : 0; }
size_t vlr_tok_max_token_bytes(const vlr_tokenizer *t) { return t ? t->max_token_bytes : 0; }

/* ---- cache -------------------------------------------------------------------------------- */

vlr_tok_cache *vlr_tok_cache_new(size_t max_entries) {
    if (max_entries == 0) max_entries = VLR_TOK_CACHE_DEFAULT;
    if (max_entries > ((size_t)1 << 22)) max_entries = (size_t)1 << 22; /* uint32 arena offsets */
    vlr_tok_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->max_entries = max_entries;
    c->mask = pow2_at_least(max_entries * 2) - 1;
    c->slots = calloc(c->mask + 1, sizeof *c->slots);
    c->entries = calloc(max_entries, sizeof *c->entries);
    if (!c->slots || !c->entries) {
        vlr_tok_cache_free(c);
        return NULL;
    }
    return c;
}

void vlr_tok_cache_free(vlr_tok_cache *c) {
    if (!c) return;
    free(c->slots);
    free(c->entries);
    free(c->keys);
    free(c->ids);
    free(c);
}

static void cache_clear(vlr_tok_cache *c) {
    memset(c->slots, 0, (c->mask + 1) * sizeof *c->slots);
    c->n_entries = 0;
    c->keys_len = 0;
    c->ids_len = 0;
}

static const cache_entry *cache_find(const vlr_tok_cache *c, uint64_t h, const char *s, size_t n) {
    size_t i = (size_t)h & c->mask;
    for (;;) {
        uint32_t slot = c->slots[i];
        if (!slot) return NULL;
        const cache_entry *ce = &c->entries[slot - 1];
        if (ce->hash == h && ce->key_len == n && !memcmp(c->keys + ce->key_off, s, n)) return ce;
        i = (i + 1) & c->mask;
    }
}

/* Grows an arena to hold `need` elements of `elem` bytes; false on OOM (the cache then just
 * doesn't remember this piece). */
static bool cache_grow(void **data, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t new_cap = *cap ? *cap : 4096;
    while (new_cap < need) new_cap *= 2;
    size_t bytes;
    if (!vlr_mul_ok(new_cap, elem, &bytes)) return false;
    void *p = realloc(*data, bytes);
    if (!p) return false;
    *data = p;
    *cap = new_cap;
    return true;
}

static void cache_insert(vlr_tok_cache *c, uint64_t h, const char *s, size_t n, const int32_t *ids,
                         size_t n_ids) {
    if (c->n_entries >= c->max_entries) cache_clear(c); /* full: start over (bounded memory) */
    if (!cache_grow((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1) ||
        !cache_grow((void **)&c->ids, &c->ids_cap, c->ids_len + n_ids, sizeof *c->ids))
        return;
    cache_entry *ce = &c->entries[c->n_entries];
    ce->hash = h;
    ce->key_off = (uint32_t)c->keys_len;
    ce->key_len = (uint32_t)n;
    ce->ids_off = (uint32_t)c->ids_len;
    ce->ids_len = (uint32_t)n_ids;
    memcpy(c->keys + c->keys_len, s, n);
    memcpy(c->ids + c->ids_len, ids, n_ids * sizeof *ids);
    c->keys_len += n;
    c->ids_len += n_ids;
    size_t i = (size_t)h & c->mask;
    while (c->slots[i]) i = (i + 1) & c->mask;
    c->slots[i] = (uint32_t)++c->n_entries;
}

/* ---- BPE ---------------------------------------------------------------------------------- */

typedef struct bpe_symbol {
    int32_t id;         /* current token id; -1 once merged into its left neighbour */
    int32_t prev, next; /* neighbours in the piece, -1 at the ends */
} bpe_symbol;

typedef struct bpe_candidate {
    uint32_t rank, pos;   /* heap order: lowest rank, then leftmost */
    int32_t left, right;  /* the ids at pos and its next when queued: stale if either changed */
    int32_t merged;
} bpe_candidate;

static inline bool cand_less(const bpe_candidate *a, const bpe_candidate *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(bpe_candidate *heap, size_t *n, bpe_candidate c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_less(&c, &heap[parent])) break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = c;
}

static bpe_candidate heap_pop(bpe_candidate *heap, size_t *n) {
    bpe_candidate top = heap[0], last = heap[--*n];
    size_t i = 0, count = *n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= count) break;
        if (child + 1 < count && cand_less(&heap[child + 1], &heap[child])) child++;
        if (!cand_less(&heap[child], &last)) break;
        heap[i] = heap[child];
        i = child;
    }
    if (count) heap[i] = last;
    return top;
}

static void queue_pair(const vlr_tokenizer *t, const bpe_symbol *sym, int32_t pos,
                       bpe_candidate *heap, size_t *n_heap) {
    if (pos < 0 || sym[pos].next < 0) return;
    int32_t left = sym[pos].id, right = sym[sym[pos].next].id;
    const merge_slot *m = merge_lookup(t, left, right);
    if (!m) return;
    bpe_candidate c = {m->rank, (uint32_t)pos, left, right, m->merged};
    heap_push(heap, n_heap, c);
}

/* BPE of a long piece (more than TOK_BPE_STACK bytes), appending its ids to out (tokenizers
 * word.rs merge_all: a priority queue of (rank, position); a popped pair whose symbols changed since
 * it was queued is skipped). */
static vlr_status bpe_long(const vlr_tokenizer *t, const unsigned char *piece, size_t n,
                           vlr_ids *out, vlr_err *e) {
    bpe_symbol *sym = NULL;
    bpe_candidate *heap = NULL;
    vlr_status rc = VLR_OK;
    size_t sym_bytes, heap_bytes;
    if (n > INT32_MAX / 4 || !vlr_mul_ok(n, sizeof *sym, &sym_bytes) ||
        !vlr_mul_ok(3 * n, sizeof *heap, &heap_bytes))
        return vlr_fail(e, VLR_ERR_LIMIT, "a pre-tokenized piece of %zu bytes is too long", n);
    sym = malloc(sym_bytes);
    heap = malloc(heap_bytes);
    if (!sym || !heap) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory tokenizing a %zu-byte piece", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        sym[i].id = t->byte_id[piece[i]];
        sym[i].prev = (int32_t)i - 1;
        sym[i].next = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    /* Each merge queues at most two new pairs: the heap never holds more than 3n entries. */
    size_t n_heap = 0;
    for (size_t i = 0; i + 1 < n; i++) queue_pair(t, sym, (int32_t)i, heap, &n_heap);
    while (n_heap) {
        bpe_candidate c = heap_pop(heap, &n_heap);
        bpe_symbol *l = &sym[c.pos];
        if (l->id != c.left || l->next < 0) continue;
        bpe_symbol *r = &sym[l->next];
        if (r->id != c.right) continue;
        l->id = c.merged;
        r->id = -1;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = (int32_t)c.pos;
        queue_pair(t, sym, l->prev, heap, &n_heap);
        queue_pair(t, sym, (int32_t)c.pos, heap, &n_heap);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) {
        if (!vlr_ids_push(out, sym[i].id)) {
            rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
            goto done;
        }
    }
done:
    free(sym);
    free(heap);
    return rc;
}

/* BPE of a short piece (2..TOK_BPE_STACK bytes) on the stack: the rank of each adjacent pair is
 * kept next to its left symbol and the lowest is found by a scan in text order (strict <, so the
 * leftmost wins ties). This merges in exactly the heap's order, with the same number of merge-table
 * lookups (n-1, then two per merge), and is cheaper than heap upkeep for short pieces. */
static vlr_status bpe_short(const vlr_tokenizer *t, const unsigned char *piece, size_t n,
                            vlr_ids *out, vlr_err *e) {
    int32_t id[TOK_BPE_STACK], prev[TOK_BPE_STACK], next[TOK_BPE_STACK];
    int32_t merged[TOK_BPE_STACK]; /* merged[i]: id of symbol i + its next, when rank[i] is set */
    uint32_t rank[TOK_BPE_STACK];  /* rank of the pair (i, next[i]); UINT32_MAX when none */
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_id[piece[i]];
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    for (size_t i = 0; i < n; i++) {
        const merge_slot *m = i + 1 < n ? merge_lookup(t, id[i], id[i + 1]) : NULL;
        rank[i] = m ? m->rank : UINT32_MAX;
        merged[i] = m ? m->merged : -1;
    }
    for (;;) {
        int32_t best = -1;
        uint32_t best_rank = UINT32_MAX;
        for (int32_t i = 0; i >= 0; i = next[i])
            if (rank[i] < best_rank) best_rank = rank[i], best = i;
        if (best < 0) break;
        int32_t r = next[best];
        id[best] = merged[best];
        next[best] = next[r];
        if (next[r] >= 0) prev[next[r]] = best;
        int32_t around[2] = {prev[best], best};
        for (int k = 0; k < 2; k++) {
            int32_t i = around[k];
            if (i < 0) continue;
            const merge_slot *m = next[i] >= 0 ? merge_lookup(t, id[i], id[next[i]]) : NULL;
            rank[i] = m ? m->rank : UINT32_MAX;
            merged[i] = m ? m->merged : -1;
        }
    }
    for (int32_t i = 0; i >= 0; i = next[i])
        if (!vlr_ids_push(out, id[i])) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
    return VLR_OK;
}

/* With model.ignore_merges, a piece whose byte-level spelling is a vocabulary entry is that
 * entry (tokenizers bpe/model.rs tokenize). Returns -1 when it is not. */
static int32_t whole_piece_id(const vlr_tokenizer *t, const unsigned char *piece, size_t n) {
    char small[4 * TOK_CACHE_MAX_PIECE];
    if (n > TOK_CACHE_MAX_PIECE) return -1; /* no vocabulary entry is that long in practice */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) m += utf8_put(small + m, t->byte_char[piece[i]]);
    return vocab_lookup(t, small, m);
}

static vlr_status encode_piece(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *piece,
                               size_t n, vlr_ids *out, vlr_err *e) {
    const unsigned char *p = (const unsigned char *)piece;
    if (n == 1) {
        if (!vlr_ids_push(out, t->byte_id[p[0]]))
            return vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
        return VLR_OK;
    }
    bool cacheable = cache && n <= TOK_CACHE_MAX_PIECE;
    uint64_t h = 0;
    if (cacheable) {
        h = hash_bytes(piece, n);
        const cache_entry *ce = cache_find(cache, h, piece, n);
        if (ce) {
            if (!ids_append(out, cache->ids + ce->ids_off, ce->ids_len))
                return vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
            return VLR_OK;
        }
    }
    size_t before = out->len;
    int32_t whole = t->ignore_merges ? whole_piece_id(t, p, n) : -1;
    if (whole >= 0) {
        if (!vlr_ids_push(out, whole))
            return vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
    } else {
        vlr_status rc = n <= TOK_BPE_STACK ? bpe_short(t, p, n, out, e) : bpe_long(t, p, n, out, e);
        if (rc) return rc;
    }
    if (cacheable) cache_insert(cache, h, piece, n, out->data + before, out->len - before);
    return VLR_OK;
}

/* Split (Qwen2 regex) + ByteLevel + BPE of one normalized stretch without added tokens. */
static vlr_status encode_pieces(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *s,
                                size_t n, vlr_ids *out, vlr_err *e) {
    size_t pos = 0;
    while (pos < n) {
        size_t end = vlr_pretok_next(s, n, pos);
        vlr_status rc = encode_piece(t, cache, s + pos, end - pos, out, e);
        if (rc) return rc;
        pos = end;
    }
    return VLR_OK;
}

/* ---- added tokens ------------------------------------------------------------------------- */

/* Rust regex \w (Unicode): Alphabetic, marks, decimal digits, connector punctuation, joiners.
 * Alphabetic is approximated by L*, Nl and the Other_Alphabetic symbols (circled/squared letters);
 * used only for added tokens with single_word, which Qwen's don't have. */
static bool is_word_char(int32_t cp) {
    if (cp < 0x80) return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') ||
                          (cp >= 'A' && cp <= 'Z') || cp == '_';
    if (cp == 0x200C || cp == 0x200D || (cp >= 0x24B6 && cp <= 0x24E9) ||
        (cp >= 0x1F130 && cp <= 0x1F149) || (cp >= 0x1F150 && cp <= 0x1F169) ||
        (cp >= 0x1F170 && cp <= 0x1F189))
        return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

static size_t utf8_prev_start(const char *s, size_t pos) {
    do pos--;
    while (pos > 0 && ((unsigned char)s[pos] & 0xC0) == 0x80);
    return pos;
}

typedef struct added_match {
    size_t start, stop; /* the bytes the token takes, including stripped whitespace */
    int32_t id;
} added_match;

/* The next added token of `set` in s[from..n) (tokenizers AddedVocabulary::find_matches):
 * leftmost, then longest; single_word tokens touching a word character are skipped; lstrip and
 * rstrip widen the match over neighbouring whitespace, lstrip no further back than floor. */
static bool added_next(const vlr_tokenizer *t, const added_set *set, const char *s, size_t n,
                       size_t from, size_t floor, added_match *m) {
    if (!set->n) return false;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t p = from; p < n; p++) {
        uint32_t lo = set->first[u[p]], hi = set->first[u[p] + 1];
        for (uint32_t k = lo; k < hi; k++) {
            const added_token *a = &t->added[set->order[k]];
            size_t len = a->match.len;
            if (len > n - p || memcmp(s + p, t->strings + a->match.off, len)) continue;
            size_t start = p, stop = p + len;
            if (a->single_word) {
                int32_t before = 0, after = 0;
                if (start > 0) vlr_utf8_decode_at(s, n, utf8_prev_start(s, start), &before);
                if (stop < n) vlr_utf8_decode_at(s, n, stop, &after);
                if ((start > 0 && is_word_char(before)) || (stop < n && is_word_char(after))) {
                    /* Aho-Corasick moves past a rejected match: resume after it. */
                    p = stop - 1;
                    break;
                }
            }
            if (a->lstrip) {
                while (start > floor) {
                    size_t q = utf8_prev_start(s, start);
                    int32_t cp;
                    vlr_utf8_decode_at(s, n, q, &cp);
                    if (!(vlr_pretok_class(cp) & VLR_CC_SPACE)) break;
                    start = q;
                }
            }
            if (a->rstrip) {
                while (stop < n) {
                    int32_t cp;
                    size_t k2 = vlr_utf8_decode_at(s, n, stop, &cp);
                    if (!(vlr_pretok_class(cp) & VLR_CC_SPACE)) break;
                    stop += k2;
                }
            }
            m->start = start;
            m->stop = stop;
            m->id = a->id;
            return true;
        }
    }
    return false;
}

/* NFC only where it can change something: a code point below U+0300 (lead byte below 0xCC) has no
 * decomposition and composes with nothing before it, so text made of those is already NFC.
 * And NFC never acts across an ASCII character (a starter that is never the second half of a
 * composition), so NFC(A + B) = NFC(A) + NFC(B) whenever B starts with an ASCII byte. We therefore
 * normalize only the chunks around bytes >= 0xCC, each reaching from the last ASCII character
 * before them (a base letter that a following mark may compose with) to the next ASCII byte. */
static bool may_need_nfc(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] >= 0xCC) return true;
    return false;
}

static vlr_status nfc_append(vlr_buf *out, const char *s, size_t n, vlr_err *e) {
    utf8proc_uint8_t *nfc = NULL;
    /* utf8proc_map with an explicit length: U+0000 is text, not an end (utf8proc_NFC stops). */
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &nfc,
                                      UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (r < 0)
        return vlr_fail(e, r == UTF8PROC_ERROR_NOMEM ? VLR_ERR_NOMEM : VLR_ERR_INTERNAL,
                        "NFC normalization failed: %s", utf8proc_errmsg(r));
    vlr_buf_append(out, nfc, (size_t)r);
    free(nfc);
    return VLR_OK;
}

static vlr_status nfc_chunked(const char *s, size_t n, vlr_buf *out, vlr_err *e) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t high = i;
        while (high < n && u[high] < 0xCC) high++;
        if (high == n) {
            vlr_buf_append(out, s + i, n - i);
            break;
        }
        size_t start = high, end = high;
        while (start > i && u[start - 1] >= 0x80) start--;
        if (start > i) start--; /* the ASCII character before: a possible base */
        while (end < n && u[end] >= 0x80) end++;
        vlr_buf_append(out, s + i, start - i);
        vlr_status rc = nfc_append(out, s + start, end - start, e);
        if (rc) return rc;
        i = end;
    }
    return out->oom ? vlr_fail(e, VLR_ERR_NOMEM, "out of memory normalizing %zu bytes", n) : VLR_OK;
}

/* One stretch of raw text between added tokens: NFC, normalized added tokens, then pieces. */
static vlr_status encode_stretch(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *raw,
                                 size_t raw_len, vlr_ids *out, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_buf nfc = {0};
    const char *s = raw;
    size_t n = raw_len;
    if (t->nfc && may_need_nfc(raw, raw_len)) {
        if ((rc = nfc_chunked(raw, raw_len, &nfc, e))) goto done;
        s = nfc.data ? nfc.data : "";
        n = nfc.len;
    }
    size_t pos = 0;
    added_match m;
    while (added_next(t, &t->norm_set, s, n, pos, pos, &m)) {
        if (m.start > pos && (rc = encode_pieces(t, cache, s + pos, m.start - pos, out, e)))
            goto done;
        if (!vlr_ids_push(out, m.id)) {
            rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
            goto done;
        }
        pos = m.stop;
    }
    rc = encode_pieces(t, cache, s + pos, n - pos, out, e);
done:
    vlr_buf_free(&nfc);
    return rc;
}

vlr_status vlr_tok_encode(const vlr_tokenizer *t, vlr_tok_cache *cache, const char *text, size_t len,
                          vlr_ids *out, vlr_err *e) {
    if (!t || !out || (!text && len))
        return vlr_fail(e, VLR_ERR_INTERNAL, "vlr_tok_encode: NULL argument");
    size_t bad = vlr_utf8_invalid_at(text, len);
    if (bad < len) return vlr_fail(e, VLR_ERR_INPUT, "invalid UTF-8 at byte %zu", bad);
    if (cache && cache->owner != t->instance) {
        cache_clear(cache);
        cache->owner = t->instance;
    }
    size_t pos = 0;
    added_match m;
    while (added_next(t, &t->raw_set, text, len, pos, pos, &m)) {
        vlr_status rc;
        if (m.start > pos && (rc = encode_stretch(t, cache, text + pos, m.start - pos, out, e)))
            return rc;
        if (!vlr_ids_push(out, m.id))
            return vlr_fail(e, VLR_ERR_NOMEM, "out of memory storing token ids");
        pos = m.stop;
    }
    return pos < len ? encode_stretch(t, cache, text + pos, len - pos, out, e) : VLR_OK;
}

/* ---- decoding ----------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s[i], or 0 when invalid; *bad is then the length of the
 * maximal invalid subpart to replace by one U+FFFD (Unicode "substitution of maximal subparts",
 * as Rust's String::from_utf8_lossy and the WHATWG decoder do). */
static size_t utf8_valid_len(const unsigned char *s, size_t n, size_t i, size_t *bad) {
    unsigned char b = s[i];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (b < 0x80) return 1;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b == 0xE0) need = 2, lo = 0xA0;
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) need = 2;
    else if (b == 0xED) need = 2, hi = 0x9F;
    else if (b == 0xF0) need = 3, lo = 0x90;
    else if (b >= 0xF1 && b <= 0xF3) need = 3;
    else if (b == 0xF4) need = 3, hi = 0x8F;
    else {
        *bad = 1;
        return 0;
    }
    for (size_t k = 1; k <= need; k++) {
        unsigned char lo_k = k == 1 ? lo : 0x80, hi_k = k == 1 ? hi : 0xBF;
        if (i + k >= n || s[i + k] < lo_k || s[i + k] > hi_k) {
            *bad = k;
            return 0;
        }
    }
    return need + 1;
}

vlr_status vlr_tok_decode(const vlr_tokenizer *t, const int32_t *ids, size_t n, bool skip_special,
                          vlr_buf *out, vlr_err *e) {
    if (!t || !out || (!ids && n)) return vlr_fail(e, VLR_ERR_INTERNAL, "vlr_tok_decode: NULL argument");
    vlr_status rc = VLR_OK;
    vlr_buf bytes = {0};
    /* tokenizers' ByteLevel decoder joins the bytes of all tokens, then decodes them lossily once:
     * a character split across tokens comes back whole. */
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || (size_t)id >= t->n_ids || !(t->id_flags[id] & ID_KNOWN)) {
            rc = vlr_fail(e, VLR_ERR_INPUT, "token id %d (at %zu) is not in the vocabulary of %zu",
                          id, i, t->n_ids);
            goto done;
        }
        if (skip_special && (t->id_flags[id] & ID_SPECIAL)) continue;
        vlr_buf_append(&bytes, t->strings + t->decoded[id].off, t->decoded[id].len);
    }
    if (bytes.oom || !vlr_buf_reserve(out, bytes.len)) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory decoding %zu ids", n);
        goto done;
    }
    const unsigned char *s = (const unsigned char *)(bytes.data ? bytes.data : "");
    size_t i = 0, run = 0; /* s[run .. i) is valid and not yet copied */
    while (i < bytes.len) {
        size_t bad = 0, k = utf8_valid_len(s, bytes.len, i, &bad);
        if (k) {
            i += k;
            continue;
        }
        vlr_buf_append(out, s + run, i - run);
        vlr_buf_append(out, "\xEF\xBF\xBD", 3);
        i += bad;
        run = i;
    }
    vlr_buf_append(out, s + run, i - run);
    if (out->oom) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory decoding %zu ids", n);
done:
    vlr_buf_free(&bytes);
    return rc;
}
