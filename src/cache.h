/* cache.h: the internals of vlr_cache (vlreward.h), the reuse store several sessions share: the
 * vision cache (vision_cache.h) and a prefix cache of KV rows keyed by token content.
 *
 * Prefix cache: a sequence is cut into blocks of VLR_PREFIX_BLOCK tokens. A block's identity is its
 * parent block (the entry holding the tokens before it), its tokens, and the content keys of the
 * images whose placeholders overlap it; two sequences equal up to a block boundary reach the same
 * chain of entries whatever was scored in between, so interleaved prompts keep their reuse. Lookup
 * is a hash table of (parent id, tokens, image digest) under a keyed digest, confirmed by comparing
 * all three; an entry holds its block's K/V rows of every layer, exact fp32 copies, so a restored
 * prefix scores bit-identically (the rows of a token depend only on the tokens and images up to
 * it). Entries are evicted least recently used first when their bytes would pass the budget; the
 * children of an evicted block can no longer be reached and age out in turn.
 *
 * Thread safety: every call takes the cache's mutex; rows are copied in and out under it (a memcpy,
 * milliseconds next to the seconds of compute it saves), and nothing is computed under it. */
#ifndef VLR_CACHE_H
#define VLR_CACHE_H

#include "common.h"
#include "digest.h"
#include "text.h"
#include "vision_cache.h"

#define VLR_PREFIX_BLOCK 16

/* One sequence as the prefix cache sees it: ids, and where each image's placeholders lie. */
typedef struct vlr_seq_view {
    const int32_t *ids;
    size_t n;
    size_t n_images;
    const size_t *image_start, *image_rows; /* [n_images] first placeholder, placeholder count */
    const vlr_vision_key *keys;             /* [n_images] content keys */
} vlr_seq_view;

const vlr_model *vlr_cache_model(const vlr_cache *c);
/* The cache's digest keys: sessions on it key their images with them. Tests set
 * test_equal_lookup through it. */
vlr_digest_key *vlr_cache_secret(vlr_cache *c);

/* Vision rows by image key. A hit copies them into dst. A miss claims the key, so that the other
 * sessions that want the same image meanwhile wait for its rows rather than run the tower too (two
 * workers given two answers of one prompt at once): a key claimed by another session is waited for
 * (the cancel flag looked at every 50 ms). A caller that already holds a claim never waits (two
 * sessions each holding the image the other wants would wait for ever): it gets MISS, as does one
 * whose flag is set. Each CLAIMED ends with vlr_cache_vision_put (the rows) or _release (failed). */
typedef enum vlr_vision_lookup { VLR_VISION_MISS = 0, VLR_VISION_HIT, VLR_VISION_CLAIMED } vlr_vision_lookup;
vlr_vision_lookup vlr_cache_vision_lookup(vlr_cache *c, const vlr_vision_key *key, size_t n_floats, float *dst,
                                          bool holds_claims, const volatile int *cancel);
void vlr_cache_vision_put(vlr_cache *c, const vlr_vision_key *key, const float *rows, size_t n_floats);
void vlr_cache_vision_release(vlr_cache *c, const vlr_vision_key *key);

/* st holds the first `have` tokens of v already (the session's own reuse). Restores the longest chain
 * of cached blocks that ends at or before `limit` tokens into st when it is longer than `have`, and
 * returns the tokens st holds now (>= have). */
size_t vlr_cache_prefix_restore(vlr_cache *c, const vlr_seq_view *v, size_t limit, size_t have,
                                vlr_text_state *st);
/* Stores v's whole blocks from st (which holds at least v->n tokens of it); blocks already cached
 * are only marked used. Memory short or budget full: fewer blocks are stored, never an error. */
void vlr_cache_prefix_insert(vlr_cache *c, const vlr_seq_view *v, const vlr_text_state *st);
/* Adds one scored request to the reuse counters. */
void vlr_cache_count_request(vlr_cache *c, size_t n_tokens, size_t reused_tokens);

#endif
