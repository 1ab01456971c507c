/* cache_opts.c: see cache_opts.h. */
#include "cache_opts.h"

#include <stdio.h>

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

void cli_cache_summary(const vlr_cache *c, char *out, size_t cap) {
    vlr_cache_stats s;
    vlr_cache_get_stats(c, &s);
    snprintf(out, cap, "%llu of %llu tokens reused (%.1f%%), prefix cache %llu hits / %llu misses, vision cache "
             "%llu hits / %llu misses", (unsigned long long)s.reused_tokens, (unsigned long long)s.tokens,
             s.tokens ? 100.0 * (double)s.reused_tokens / (double)s.tokens : 0.0, (unsigned long long)s.prefix_hits,
             (unsigned long long)s.prefix_misses, (unsigned long long)s.vision_hits,
             (unsigned long long)s.vision_misses);
}
