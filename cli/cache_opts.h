/* cache_opts.h: the reuse caches of score, eval and serve: the --prefix-cache option, one vlr_cache
 * per model, and the words the summary line and the server's banner give about it. */
#ifndef VLR_CLI_CACHE_OPTS_H
#define VLR_CLI_CACHE_OPTS_H

#include "cli.h"

/* 1 GiB: at the 7B shapes 112 KiB of K/V per token, so about 9,360 tokens, some 18 prompts of a
 * 640x480 image and a question. */
#define CLI_PREFIX_CACHE_DEFAULT_MB 1024

/* --prefix-cache MB (0..1048576): true when argv[a->i] was it (bad set on a bad value). */
bool cli_prefix_cache_opt(cli_args *a, long *mb, bool *bad);
/* One cache for every session of m; NULL (and a message on stderr naming cmd) on failure. */
vlr_cache *cli_cache_new(const vlr_model *m, long vision_mb, long prefix_mb, const char *cmd);
/* The counts a summary line gives, which an MPI job adds up over its ranks (cli_batch_opts.counters):
 * tokens, tokens reused, prefix-cache hits and misses, vision-cache hits and misses. */
#define CLI_CACHE_COUNTERS 6
void cli_cache_counters(const vlr_cache *c, uint64_t *out);
/* "R of N tokens reused (P%), prefix cache H hits / M misses, vision cache H hits / M misses" for c
 * plus `others` (the other ranks' cli_cache_counters, summed; NULL: none). */
void cli_cache_summary(const vlr_cache *c, const uint64_t *others, char *out, size_t cap);

#endif
