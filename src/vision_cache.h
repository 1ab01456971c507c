/* vision_cache.h: a bounded LRU cache of vision-tower outputs, keyed by the content of the
 * preprocessed image (its pixel_values and grid), so the same image in many requests (best-of-N,
 * pairs) runs the tower once. The output of the tower depends only on those inputs and the weights,
 * so a hit returns the bit-identical embeddings.
 *
 * The key is two keyed digests of the pixel bytes (digest.h) plus the grid: the first finds an entry,
 * the second, under an independent key, confirms it before its rows are used. Both are SipHash under
 * secret random keys, so a client cannot craft an image whose key equals another's; the second
 * digest also covers the case where the first collides (a test forces that). We chose a second
 * digest over a stored copy of the pixels: the copy would double the cache's memory (pixel_values of
 * a 640x480 image are 7.4 MB, its vision rows 5.6 MB), the digest costs one pass over the pixels.
 * Not thread-safe: a vlr_cache (cache.h) holds one under its lock. */
#ifndef VLR_VISION_CACHE_H
#define VLR_VISION_CACHE_H

#include "common.h"
#include "digest.h"

typedef struct vlr_vision_cache vlr_vision_cache;

typedef struct vlr_vision_key {
    uint64_t lookup, confirm; /* the two keyed digests of the pixel bytes */
    int32_t grid_t, grid_h, grid_w;
} vlr_vision_key;

/* Field-wise equality (a struct's padding bytes are unspecified, so never memcmp keys). */
bool vlr_vision_key_equal(const vlr_vision_key *a, const vlr_vision_key *b);
vlr_vision_key vlr_vision_key_of(const vlr_digest_key *secret, const float *pixels, size_t n_floats, int grid_t,
                                 int grid_h, int grid_w);

vlr_vision_cache *vlr_vision_cache_new(size_t max_bytes); /* NULL on OOM */
void vlr_vision_cache_free(vlr_vision_cache *c);          /* NULL is a no-op */
/* Copies the cached embeddings ([n_floats]) into dst and returns true, or returns false; a hit moves
 * the entry to the front. An entry whose lookup digest and grid match but whose confirm digest does
 * not is no hit (counted in rejected). count: add the outcome to hits or misses (a caller that
 * looks again after waiting counts only its last look). */
bool vlr_vision_cache_get(vlr_vision_cache *c, const vlr_vision_key *key, size_t n_floats, float *dst, bool count);
void vlr_vision_cache_count(vlr_vision_cache *c, bool hit); /* adds one to hits or misses */
/* Stores a copy (nothing when an equal entry is there already) (evicting the least recently used entries); silently skips entries larger than the
 * whole cache or when memory is short: the cache is an optimisation, never an error. */
void vlr_vision_cache_put(vlr_vision_cache *c, const vlr_vision_key *key, const float *embeds, size_t n_floats);
typedef struct vlr_vision_cache_counts {
    uint64_t hits, misses, rejected, bytes, entries;
} vlr_vision_cache_counts;
void vlr_vision_cache_counts_get(const vlr_vision_cache *c, vlr_vision_cache_counts *out);

#endif
