/* digest.c: SipHash-2-4 and the random keys of the cache digests (see digest.h). Written from the
 * paper's specification: four 64-bit words of state, two compression rounds per 8-byte word, the
 * length in the top byte of the last word, four finalisation rounds. */
#include "digest.h"

#include <errno.h>
#include <sys/random.h>

static inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

typedef struct sip { uint64_t v0, v1, v2, v3; } sip;

static inline void sip_round(sip *s) {
    s->v0 += s->v1; s->v1 = rotl(s->v1, 13); s->v1 ^= s->v0; s->v0 = rotl(s->v0, 32);
    s->v2 += s->v3; s->v3 = rotl(s->v3, 16); s->v3 ^= s->v2;
    s->v0 += s->v3; s->v3 = rotl(s->v3, 21); s->v3 ^= s->v0;
    s->v2 += s->v1; s->v1 = rotl(s->v1, 17); s->v1 ^= s->v2; s->v2 = rotl(s->v2, 32);
}

static inline void sip_word(sip *s, uint64_t m) {
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

static inline uint64_t load_le64(const unsigned char *p) {
    uint64_t w = 0;
    for (int i = 7; i >= 0; i--) w = (w << 8) | p[i];
    return w;
}

uint64_t vlr_siphash(const uint64_t key[2], const void *data, size_t n) {
    const unsigned char *p = data;
    sip s = {key[0] ^ 0x736f6d6570736575ull, key[1] ^ 0x646f72616e646f6dull, key[0] ^ 0x6c7967656e657261ull,
             key[1] ^ 0x7465646279746573ull};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) sip_word(&s, load_le64(p + i));
    uint64_t last = (uint64_t)(n & 0xff) << 56;
    for (size_t j = 0; i + j < n; j++) last |= (uint64_t)p[i + j] << (8 * j);
    sip_word(&s, last);
    s.v2 ^= 0xff;
    for (int r = 0; r < 4; r++) sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

vlr_status vlr_digest_key_random(vlr_digest_key *k, vlr_err *e) {
    uint64_t words[4];
    size_t got = 0;
    while (got < sizeof words) {
        ssize_t r = getrandom((unsigned char *)words + got, sizeof words - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return vlr_fail(e, VLR_ERR_IO, "getrandom: %s", r < 0 ? strerror(errno) : "no bytes");
        got += (size_t)r;
    }
    *k = (vlr_digest_key){{words[0], words[1]}, {words[2], words[3]}, false};
    return VLR_OK;
}
