/* digest.h: keyed digests for cache keys. SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast
 * short-input PRF", 2012) under a 128-bit key drawn from getrandom: without the key nobody can
 * craft two inputs with equal digests, so a cache keyed by them cannot be made to hand one request
 * another request's rows. The key lives in the object that owns the cache (a vlr_cache, or a
 * session for its own prefix reuse): the library keeps no global state. */
#ifndef VLR_DIGEST_H
#define VLR_DIGEST_H

#include "common.h"

typedef struct vlr_digest_key {
    uint64_t lookup[2];  /* key of the digest a cache looks entries up by */
    uint64_t confirm[2]; /* independent key of the digest that confirms a hit */
    bool test_equal_lookup; /* tests only: every lookup digest is 0, as if an attacker had found a
                             * collision of it; the confirm digest must then keep entries apart */
} vlr_digest_key;

/* Fills k from getrandom (the kernel's CSPRNG); VLR_ERR_IO if the kernel refuses. */
vlr_status vlr_digest_key_random(vlr_digest_key *k, vlr_err *e);

/* SipHash-2-4 of n bytes under key[2]. */
uint64_t vlr_siphash(const uint64_t key[2], const void *data, size_t n);

#endif
