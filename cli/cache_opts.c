/* cache_opts.c: see cache_opts.h. */
#include "cache_opts.h"

#include "batch.h"

#include <stdio.h>
#include <string.h>

bool cli_prefix_cache_opt(cli_args *a, long *mb, bool *bad) {
    const char *v = NULL;
    if (!cli_opt(a, "--prefix-cache", true, &v, bad)) return false;
    if (v && !cli_parse_int(v, 0, 1L << 20, mb)) {
        cli_usage_error(a->cmd, "--prefix-cache: expected megabytes (0..1048576), got '%s'", v);
        *bad = true;
    }
    return true;
}

vlr_cache *cli_cache_new(const vlr_model *m, long vision_mb, long prefix_mb, const char *cmd) {
    vlr_cache *c = NULL;
    vlr_status rc = vlr_cache_new(m, (size_t)vision_mb << 20, (size_t)prefix_mb << 20, &c);
    if (rc) fprintf(stderr, "vlreward %s: cannot create the caches: %s\n", cmd, vlr_status_str(rc));
    return c;
}

_Static_assert(CLI_CACHE_COUNTERS <= CLI_BATCH_COUNTERS, "the MPI summary carries the cache counts");

void cli_cache_counters(const vlr_cache *c, uint64_t *out) {
    vlr_cache_stats s;
    vlr_cache_get_stats(c, &s);
    const uint64_t v[CLI_CACHE_COUNTERS] = {s.tokens, s.reused_tokens, s.prefix_hits, s.prefix_misses,
                                            s.vision_hits, s.vision_misses};
    memcpy(out, v, sizeof v);
}

void cli_cache_summary(const vlr_cache *c, const uint64_t *others, char *out, size_t cap) {
    uint64_t n[CLI_CACHE_COUNTERS];
    cli_cache_counters(c, n);
    for (int i = 0; others && i < CLI_CACHE_COUNTERS; i++) n[i] += others[i];
    snprintf(out, cap, "%llu of %llu tokens reused (%.1f%%), prefix cache %llu hits / %llu misses, vision cache "
             "%llu hits / %llu misses", (unsigned long long)n[1], (unsigned long long)n[0],
             n[0] ? 100.0 * (double)n[1] / (double)n[0] : 0.0, (unsigned long long)n[2], (unsigned long long)n[3],
             (unsigned long long)n[4], (unsigned long long)n[5]);
}
