/* vision_cache.h: a bounded LRU cache of vision-tower outputs, keyed by the content of the
 * preprocessed image (its pixel_values and grid), so the same image in many requests (best-of-N,
 * pairs) runs the tower once. The output of the tower depends only on those inputs and the weights,
 * so a hit returns the bit-identical embeddings.
 *
 * The key is a 128-bit hash of the pixel bytes plus the grid and length; not cryptographic, which is
 * fine for data a user scores against their own model. One cache per session (not thread-safe). */
#ifndef VLR_VISION_CACHE_H
#define VLR_VISION_CACHE_H

#include "common.h"

typedef struct vlr_vision_cache vlr_vision_cache;

typedef struct vlr_vision_key {
    uint64_t h1, h2;
    int32_t grid_t, grid_h, grid_w;
} vlr_vision_key;

/* Field-wise equality (a struct's padding bytes are unspecified, so never memcmp keys). */
bool vlr_vision_key_equal(const vlr_vision_key *a, const vlr_vision_key *b);
vlr_vision_key vlr_vision_key_of(const float *pixels, size_t n_floats, int grid_t, int grid_h, int grid_w);

vlr_vision_cache *vlr_vision_cache_new(size_t max_bytes); /* NULL on OOM */
void vlr_vision_cache_free(vlr_vision_cache *c);          /* NULL is a no-op */
/* The cached embeddings ([n_floats]) or NULL; a hit moves the entry to the front. */
const float *vlr_vision_cache_get(vlr_vision_cache *c, const vlr_vision_key *key, size_t n_floats);
/* Stores a copy (evicting the least recently used entries); silently skips entries larger than the
 * whole cache or when memory is short: the cache is an optimisation, never an error. */
void vlr_vision_cache_put(vlr_vision_cache *c, const vlr_vision_key *key, const float *embeds, size_t n_floats);
void vlr_vision_cache_stats(const vlr_vision_cache *c, uint64_t *hits, uint64_t *misses);

#endif
