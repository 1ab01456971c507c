/* lru.h: the doubly linked use-order list of the caches (vision_cache.c, cache.c). An entry embeds a
 * vlr_lru_node as its first member; the list's head is the most recently used, its tail the next to
 * evict. */
#ifndef VLR_LRU_H
#define VLR_LRU_H

#include <stddef.h>
#include <stdlib.h>

typedef struct vlr_lru_node {
    struct vlr_lru_node *prev, *next;
} vlr_lru_node;

typedef struct vlr_lru {
    vlr_lru_node *head, *tail;
} vlr_lru;

static inline void vlr_lru_unlink(vlr_lru *l, vlr_lru_node *n) {
    if (n->prev) n->prev->next = n->next; else l->head = n->next;
    if (n->next) n->next->prev = n->prev; else l->tail = n->prev;
    n->prev = n->next = NULL;
}

static inline void vlr_lru_push_front(vlr_lru *l, vlr_lru_node *n) {
    n->prev = NULL;
    n->next = l->head;
    if (l->head) l->head->prev = n;
    l->head = n;
    if (!l->tail) l->tail = n;
}

/* Moves n to the front: it was just used. */
static inline void vlr_lru_touch(vlr_lru *l, vlr_lru_node *n) {
    vlr_lru_unlink(l, n);
    vlr_lru_push_front(l, n);
}

/* Frees every entry (each a malloc'd block that starts with its node) and empties the list. */
static inline void vlr_lru_free_all(vlr_lru *l) {
    for (vlr_lru_node *n = l->head, *next; n; n = next) {
        next = n->next;
        free(n);
    }
    l->head = l->tail = NULL;
}

#endif
