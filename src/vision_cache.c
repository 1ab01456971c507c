/* vision_cache.c: LRU of vision-tower outputs (see vision_cache.h). A doubly linked list in use
 * order plus a linear key search: a cache holds tens of images, and one lookup is negligible next to
 * the tower it saves. */
#include "vision_cache.h"

#include "lru.h"

#include <stdlib.h>

typedef struct entry {
    vlr_lru_node node; /* first: an entry is its node */
    vlr_vision_key key;
    size_t n_floats;
    float data[];
} entry;

struct vlr_vision_cache {
    vlr_lru lru;
    size_t bytes, max_bytes, entries;
    uint64_t hits, misses, rejected;
};

vlr_vision_key vlr_vision_key_of(const vlr_digest_key *secret, const float *pixels, size_t n_floats, int grid_t,
                                 int grid_h, int grid_w) {
    const size_t n = n_floats * sizeof(float);
    vlr_vision_key k = {secret->test_equal_lookup ? 0 : vlr_siphash(secret->lookup, pixels, n),
                        vlr_siphash(secret->confirm, pixels, n), grid_t, grid_h, grid_w};
    return k;
}

vlr_vision_cache *vlr_vision_cache_new(size_t max_bytes) {
    vlr_vision_cache *c = calloc(1, sizeof *c);
    if (c) c->max_bytes = max_bytes;
    return c;
}

void vlr_vision_cache_free(vlr_vision_cache *c) {
    if (!c) return;
    vlr_lru_free_all(&c->lru);
    free(c);
}

bool vlr_vision_key_equal(const vlr_vision_key *a, const vlr_vision_key *b) {
    return a->lookup == b->lookup && a->confirm == b->confirm && a->grid_t == b->grid_t && a->grid_h == b->grid_h &&
           a->grid_w == b->grid_w;
}

bool vlr_vision_cache_get(vlr_vision_cache *c, const vlr_vision_key *key, size_t n_floats, float *dst, bool count) {
    for (entry *e = (entry *)c->lru.head; e; e = (entry *)e->node.next) {
        if (e->key.lookup != key->lookup || e->n_floats != n_floats || e->key.grid_t != key->grid_t ||
            e->key.grid_h != key->grid_h || e->key.grid_w != key->grid_w)
            continue;
        if (e->key.confirm != key->confirm) { /* the lookup digests collide: another image */
            c->rejected++;
            continue;
        }
        vlr_lru_touch(&c->lru, &e->node);
        c->hits += count;
        memcpy(dst, e->data, n_floats * sizeof(float));
        return true;
    }
    c->misses += count;
    return false;
}

void vlr_vision_cache_count(vlr_vision_cache *c, bool hit) {
    if (hit) c->hits++;
    else c->misses++;
}

void vlr_vision_cache_put(vlr_vision_cache *c, const vlr_vision_key *key, const float *embeds, size_t n_floats) {
    for (entry *e = (entry *)c->lru.head; e; e = (entry *)e->node.next)
        if (vlr_vision_key_equal(&e->key, key) && e->n_floats == n_floats) return; /* another session put it */
    size_t bytes;
    if (!vlr_mul_ok(n_floats, sizeof(float), &bytes) || !vlr_add_ok(bytes, sizeof(entry), &bytes)) return;
    if (bytes > c->max_bytes) return;
    while (c->lru.tail && c->bytes + bytes > c->max_bytes) {
        entry *old = (entry *)c->lru.tail;
        vlr_lru_unlink(&c->lru, &old->node);
        c->bytes -= sizeof(entry) + old->n_floats * sizeof(float);
        c->entries--;
        free(old);
    }
    entry *e = malloc(bytes);
    if (!e) return;
    e->key = *key;
    e->n_floats = n_floats;
    memcpy(e->data, embeds, n_floats * sizeof(float));
    vlr_lru_push_front(&c->lru, &e->node);
    c->bytes += bytes;
    c->entries++;
}

void vlr_vision_cache_counts_get(const vlr_vision_cache *c, vlr_vision_cache_counts *out) {
    memset(out, 0, sizeof *out);
    if (!c) return;
    *out = (vlr_vision_cache_counts){c->hits, c->misses, c->rejected, c->bytes, c->entries};
}
