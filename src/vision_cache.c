/* vision_cache.c: LRU of vision-tower outputs (see vision_cache.h). A doubly linked list in use
 * order plus a linear key search: a cache holds tens of images, and one lookup is negligible next to
 * the tower it saves. */
#include "vision_cache.h"

#include <stdlib.h>

typedef struct entry {
    struct entry *prev, *next;
    vlr_vision_key key;
    size_t n_floats;
    float data[];
} entry;

struct vlr_vision_cache {
    entry *head, *tail; /* head = most recently used */
    size_t bytes, max_bytes;
    uint64_t hits, misses;
};

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t mix64(uint64_t x) { /* splitmix64 finaliser */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

vlr_vision_key vlr_vision_key_of(const float *pixels, size_t n_floats, int grid_t, int grid_h, int grid_w) {
    const unsigned char *p = (const unsigned char *)pixels;
    size_t n = n_floats * sizeof(float);
    uint64_t a = 0x9e3779b97f4a7c15ull ^ n, b = 0xc2b2ae3d27d4eb4full + n;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        a = rotl64(a ^ (w * 0x87c37b91114253d5ull), 31) * 0x4cf5ad432745937full;
        b = rotl64(b + (w ^ 0x52dce729da3ed7f1ull), 27) * 0x9e3779b97f4a7c15ull + a;
    }
    uint64_t tail = 0;
    memcpy(&tail, p + i, n - i);
    vlr_vision_key k = {mix64(a ^ tail), mix64(b + tail + a), grid_t, grid_h, grid_w};
    return k;
}

vlr_vision_cache *vlr_vision_cache_new(size_t max_bytes) {
    vlr_vision_cache *c = calloc(1, sizeof *c);
    if (c) c->max_bytes = max_bytes;
    return c;
}

static void unlink_entry(vlr_vision_cache *c, entry *e) {
    if (e->prev) e->prev->next = e->next; else c->head = e->next;
    if (e->next) e->next->prev = e->prev; else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void push_front(vlr_vision_cache *c, entry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

void vlr_vision_cache_free(vlr_vision_cache *c) {
    if (!c) return;
    for (entry *e = c->head; e;) {
        entry *next = e->next;
        free(e);
        e = next;
    }
    free(c);
}

bool vlr_vision_key_equal(const vlr_vision_key *a, const vlr_vision_key *b) {
    return a->h1 == b->h1 && a->h2 == b->h2 && a->grid_t == b->grid_t && a->grid_h == b->grid_h &&
           a->grid_w == b->grid_w;
}

const float *vlr_vision_cache_get(vlr_vision_cache *c, const vlr_vision_key *key, size_t n_floats) {
    for (entry *e = c->head; e; e = e->next) {
        if (vlr_vision_key_equal(&e->key, key) && e->n_floats == n_floats) {
            unlink_entry(c, e);
            push_front(c, e);
            c->hits++;
            return e->data;
        }
    }
    c->misses++;
    return NULL;
}

void vlr_vision_cache_put(vlr_vision_cache *c, const vlr_vision_key *key, const float *embeds, size_t n_floats) {
    size_t bytes;
    if (!vlr_mul_ok(n_floats, sizeof(float), &bytes) || !vlr_add_ok(bytes, sizeof(entry), &bytes)) return;
    if (bytes > c->max_bytes) return;
    while (c->tail && c->bytes + bytes > c->max_bytes) {
        entry *old = c->tail;
        unlink_entry(c, old);
        c->bytes -= sizeof(entry) + old->n_floats * sizeof(float);
        free(old);
    }
    entry *e = malloc(bytes);
    if (!e) return;
    e->key = *key;
    e->n_floats = n_floats;
    memcpy(e->data, embeds, n_floats * sizeof(float));
    push_front(c, e);
    c->bytes += bytes;
}

void vlr_vision_cache_stats(const vlr_vision_cache *c, uint64_t *hits, uint64_t *misses) {
    *hits = c ? c->hits : 0;
    *misses = c ? c->misses : 0;
}
