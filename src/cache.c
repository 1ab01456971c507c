/* cache.c: vlr_cache, the vision cache and the prefix cache several sessions share (see cache.h). */
#include "cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "lru.h"
#include "model.h"

typedef struct pblock {
    vlr_lru_node node;          /* first: a block is its node in the LRU list */
    struct pblock *chain;       /* next entry of the same hash bucket */
    uint64_t id, parent;        /* id > 0, unique for the cache's life; parent 0 = the sequence start */
    uint64_t hash, epoch;       /* epoch: the last insert that touched it */
    uint64_t images[2];         /* digests of the keys of the images overlapping the block (0 = none) */
    int32_t tokens[VLR_PREFIX_BLOCK];
    float kv[];                 /* [VLR_PREFIX_BLOCK * row_floats], vlr_text_kv_read's layout */
} pblock;

struct vlr_cache {
    const vlr_model *model;
    pthread_mutex_t lock;
    vlr_digest_key secret;
    vlr_vision_cache *vision; /* NULL when its budget is 0 */
    vlr_vision_key *claims;   /* [n_claims] images a session is running the tower for */
    size_t n_claims, cap_claims;
    pthread_cond_t claim_ended;
    size_t row_floats;        /* K/V floats of one token over all layers */
    size_t prefix_max, prefix_bytes, n_blocks;
    vlr_lru lru;
    pblock **buckets;
    size_t n_buckets;         /* a power of two, or 0 */
    uint64_t next_id, epoch;
    uint64_t prefix_hits, prefix_misses, evictions, tokens, reused;
};

vlr_status vlr_cache_new(const vlr_model *m, size_t vision_bytes, size_t prefix_bytes, vlr_cache **out) {
    *out = NULL;
    if (!m) return VLR_ERR_INPUT;
    vlr_cache *c = calloc(1, sizeof *c);
    if (!c) return VLR_ERR_NOMEM;
    vlr_err e = {0};
    if (vlr_digest_key_random(&c->secret, &e) != VLR_OK) {
        free(c);
        return VLR_ERR_IO;
    }
    if (vision_bytes && !(c->vision = vlr_vision_cache_new(vision_bytes))) {
        free(c);
        return VLR_ERR_NOMEM;
    }
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->claim_ended, NULL);
    c->model = m;
    c->row_floats = vlr_text_kv_row_floats(&m->cfg);
    c->prefix_max = prefix_bytes;
    c->next_id = 1;
    *out = c;
    return VLR_OK;
}

void vlr_cache_free(vlr_cache *c) {
    if (!c) return;
    vlr_lru_free_all(&c->lru);
    free(c->buckets);
    vlr_vision_cache_free(c->vision);
    free(c->claims);
    pthread_cond_destroy(&c->claim_ended);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

const vlr_model *vlr_cache_model(const vlr_cache *c) { return c->model; }
vlr_digest_key *vlr_cache_secret(vlr_cache *c) { return &c->secret; }

void vlr_cache_get_stats(const vlr_cache *c, vlr_cache_stats *out) {
    memset(out, 0, sizeof *out);
    if (!c) return;
    vlr_cache *mc = (vlr_cache *)c; /* the lock is not part of the value */
    pthread_mutex_lock(&mc->lock);
    vlr_vision_cache_counts v;
    vlr_vision_cache_counts_get(c->vision, &v);
    *out = (vlr_cache_stats){.vision_hits = v.hits, .vision_misses = v.misses, .vision_rejected = v.rejected,
                             .vision_entries = v.entries, .vision_bytes = v.bytes,
                             .prefix_hits = c->prefix_hits, .prefix_misses = c->prefix_misses,
                             .prefix_blocks = c->n_blocks, .prefix_bytes = c->prefix_bytes,
                             .prefix_evictions = c->evictions, .tokens = c->tokens, .reused_tokens = c->reused};
    pthread_mutex_unlock(&mc->lock);
}

/* ---- vision ---------------------------------------------------------------------------------- */

static size_t find_claim(const vlr_cache *c, const vlr_vision_key *key) {
    size_t i = 0;
    while (i < c->n_claims && !vlr_vision_key_equal(&c->claims[i], key)) i++;
    return i; /* n_claims: none */
}

static bool add_claim(vlr_cache *c, const vlr_vision_key *key) {
    if (c->n_claims == c->cap_claims) {
        size_t cap = c->cap_claims ? 2 * c->cap_claims : 8;
        vlr_vision_key *k = realloc(c->claims, cap * sizeof *k);
        if (!k) return false; /* no claim: others may run the tower too, nothing worse */
        c->claims = k, c->cap_claims = cap;
    }
    c->claims[c->n_claims++] = *key;
    return true;
}

static void end_claim(vlr_cache *c, const vlr_vision_key *key) {
    size_t i = find_claim(c, key);
    if (i == c->n_claims) return;
    c->claims[i] = c->claims[--c->n_claims];
    pthread_cond_broadcast(&c->claim_ended);
}

vlr_vision_lookup vlr_cache_vision_lookup(vlr_cache *c, const vlr_vision_key *key, size_t n_floats, float *dst,
                                          bool holds_claims, const volatile int *cancel) {
    if (!c->vision) return VLR_VISION_MISS;
    vlr_vision_lookup r;
    pthread_mutex_lock(&c->lock);
    for (;;) {
        if (vlr_vision_cache_get(c->vision, key, n_floats, dst, false)) {
            r = VLR_VISION_HIT;
            break;
        }
        const bool claimed = find_claim(c, key) < c->n_claims;
        if (!claimed) {
            r = add_claim(c, key) ? VLR_VISION_CLAIMED : VLR_VISION_MISS;
            break;
        }
        if (holds_claims || (cancel && *cancel)) {
            r = VLR_VISION_MISS;
            break;
        }
        const struct timespec until = vlr_realtime_after(50 * 1000 * 1000);
        pthread_cond_timedwait(&c->claim_ended, &c->lock, &until);
    }
    vlr_vision_cache_count(c->vision, r == VLR_VISION_HIT);
    pthread_mutex_unlock(&c->lock);
    return r;
}

void vlr_cache_vision_put(vlr_cache *c, const vlr_vision_key *key, const float *rows, size_t n_floats) {
    if (!c->vision) return;
    pthread_mutex_lock(&c->lock);
    vlr_vision_cache_put(c->vision, key, rows, n_floats);
    end_claim(c, key);
    pthread_mutex_unlock(&c->lock);
}

void vlr_cache_vision_release(vlr_cache *c, const vlr_vision_key *key) {
    if (!c->vision) return;
    pthread_mutex_lock(&c->lock);
    end_claim(c, key);
    pthread_mutex_unlock(&c->lock);
}

/* ---- prefix blocks --------------------------------------------------------------------------- */

/* The identity of block b of v below `parent`: its tokens and a digest of its images' keys. */
typedef struct block_id {
    uint64_t parent, images[2], hash;
    const int32_t *tokens;
} block_id;

static block_id block_identity(const vlr_cache *c, const vlr_seq_view *v, size_t b, uint64_t parent) {
    const size_t first = b * VLR_PREFIX_BLOCK, end = first + VLR_PREFIX_BLOCK;
    block_id id = {.parent = parent, .tokens = v->ids + first};
    /* the keys of the images whose placeholders overlap [first, end), in order */
    uint64_t keys[4 * VLR_PREFIX_BLOCK];
    size_t n = 0;
    for (size_t i = 0; i < v->n_images && n + 4 <= sizeof keys / sizeof *keys; i++) {
        if (v->image_start[i] >= end || v->image_start[i] + v->image_rows[i] <= first) continue;
        const vlr_vision_key *k = &v->keys[i];
        keys[n++] = k->lookup;
        keys[n++] = k->confirm;
        keys[n++] = ((uint64_t)(uint32_t)k->grid_t << 32) | (uint32_t)k->grid_h;
        keys[n++] = (uint32_t)k->grid_w;
    }
    if (n) {
        id.images[0] = vlr_siphash(c->secret.lookup, keys, n * sizeof *keys);
        id.images[1] = vlr_siphash(c->secret.confirm, keys, n * sizeof *keys);
    }
    unsigned char buf[3 * sizeof(uint64_t) + sizeof(int32_t) * VLR_PREFIX_BLOCK];
    memcpy(buf, &id.parent, 8);
    memcpy(buf + 8, id.images, 16);
    memcpy(buf + 24, id.tokens, sizeof(int32_t) * VLR_PREFIX_BLOCK);
    id.hash = vlr_siphash(c->secret.lookup, buf, sizeof buf);
    return id;
}

static pblock *find_block(const vlr_cache *c, const block_id *id) {
    if (!c->n_buckets) return NULL;
    for (pblock *b = c->buckets[id->hash & (c->n_buckets - 1)]; b; b = b->chain)
        if (b->hash == id->hash && b->parent == id->parent && b->images[0] == id->images[0] &&
            b->images[1] == id->images[1] && !memcmp(b->tokens, id->tokens, sizeof b->tokens))
            return b;
    return NULL;
}

static void evict(vlr_cache *c, pblock *b) {
    vlr_lru_unlink(&c->lru, &b->node);
    pblock **p = &c->buckets[b->hash & (c->n_buckets - 1)];
    while (*p != b) p = &(*p)->chain;
    *p = b->chain;
    c->prefix_bytes -= sizeof *b + c->row_floats * VLR_PREFIX_BLOCK * sizeof(float);
    c->n_blocks--;
    c->evictions++;
    free(b);
}

/* Doubles the table when it holds more blocks than buckets; on no memory it stays as it is. */
static void grow_buckets(vlr_cache *c) {
    if (c->n_blocks < c->n_buckets) return;
    size_t n = c->n_buckets ? 2 * c->n_buckets : 256;
    pblock **t = calloc(n, sizeof *t);
    if (!t) return;
    for (size_t i = 0; i < c->n_buckets; i++)
        for (pblock *b = c->buckets[i], *next; b; b = next) {
            next = b->chain;
            b->chain = t[b->hash & (n - 1)];
            t[b->hash & (n - 1)] = b;
        }
    free(c->buckets);
    c->buckets = t;
    c->n_buckets = n;
}

size_t vlr_cache_prefix_restore(vlr_cache *c, const vlr_seq_view *v, size_t limit, size_t have,
                                vlr_text_state *st) {
    if (!c->prefix_max) return have;
    pthread_mutex_lock(&c->lock);
    uint64_t parent = 0;
    size_t n_found = 0;
    for (size_t b = 0; (b + 1) * VLR_PREFIX_BLOCK <= limit; b++) {
        block_id id = block_identity(c, v, b, parent);
        pblock *found = find_block(c, &id);
        if (!found) break;
        vlr_lru_touch(&c->lru, &found->node);
        parent = found->id;
        n_found++;
    }
    size_t held = have;
    if (n_found * VLR_PREFIX_BLOCK > have) {
        /* walk the chain again from the block holding token `have` (its rows are rewritten with
         * equal values, which keeps every write a whole block) */
        vlr_err e = {0};
        parent = 0;
        for (size_t b = 0; b < n_found; b++) {
            block_id id = block_identity(c, v, b, parent);
            pblock *found = find_block(c, &id);
            parent = found->id;
            if ((b + 1) * VLR_PREFIX_BLOCK <= have) continue;
            if (vlr_text_kv_write(st, b * VLR_PREFIX_BLOCK, VLR_PREFIX_BLOCK, found->kv, &e)) break;
            held = (b + 1) * VLR_PREFIX_BLOCK;
        }
    }
    if (held > have) c->prefix_hits++;
    else c->prefix_misses++;
    pthread_mutex_unlock(&c->lock);
    return held;
}

void vlr_cache_prefix_insert(vlr_cache *c, const vlr_seq_view *v, const vlr_text_state *st) {
    if (!c->prefix_max) return;
    const size_t bytes = sizeof(pblock) + c->row_floats * VLR_PREFIX_BLOCK * sizeof(float);
    pthread_mutex_lock(&c->lock);
    const uint64_t epoch = ++c->epoch;
    uint64_t parent = 0;
    for (size_t b = 0; (b + 1) * VLR_PREFIX_BLOCK <= v->n && bytes <= c->prefix_max; b++) {
        block_id id = block_identity(c, v, b, parent);
        pblock *blk = find_block(c, &id);
        if (blk) {
            vlr_lru_touch(&c->lru, &blk->node);
        } else {
            /* evict the least recently used, but never a block of this sequence: the budget is
             * then full with it */
            pblock *oldest;
            while ((oldest = (pblock *)c->lru.tail) && c->prefix_bytes + bytes > c->prefix_max && oldest->epoch != epoch)
                evict(c, oldest);
            if (c->prefix_bytes + bytes > c->prefix_max) break;
            grow_buckets(c);
            if (!c->n_buckets || !(blk = malloc(bytes))) break;
            *blk = (pblock){.id = c->next_id++, .parent = parent, .hash = id.hash,
                            .images = {id.images[0], id.images[1]}};
            memcpy(blk->tokens, id.tokens, sizeof blk->tokens);
            vlr_text_kv_read(st, b * VLR_PREFIX_BLOCK, VLR_PREFIX_BLOCK, blk->kv);
            pblock **slot = &c->buckets[id.hash & (c->n_buckets - 1)];
            blk->chain = *slot;
            *slot = blk;
            vlr_lru_push_front(&c->lru, &blk->node);
            c->prefix_bytes += bytes;
            c->n_blocks++;
        }
        blk->epoch = epoch;
        parent = blk->id;
    }
    pthread_mutex_unlock(&c->lock);
}

void vlr_cache_count_request(vlr_cache *c, size_t n_tokens, size_t reused_tokens) {
    pthread_mutex_lock(&c->lock);
    c->tokens += n_tokens;
    c->reused += reused_tokens;
    pthread_mutex_unlock(&c->lock);
}
