/* batch.h: the streaming, resumable JSON Lines driver behind `score` and `eval`.
 *
 * Input is read line by line (files larger than memory are fine); each result line is written whole
 * and flushed, in input order. A line longer than max_line_bytes (or too large to allocate) is
 * answered with {"id": null, "error": "line N: ..."} and the run goes on; a read error ends the run
 * with a message (never as if the input had ended). With resume, the existing output file is read
 * first: its complete lines name the ids already done (a half-written last line is cut away and
 * redone); ids may repeat, so the first k input lines with an id are skipped when the output holds k
 * lines with it.
 * SIGINT/SIGTERM stop the run after the current request (a second signal stops at once); the output
 * is left resumable either way. Progress goes to stderr: a one-line bar on a terminal, a plain line
 * every few seconds otherwise, nothing with quiet. */
#ifndef VLR_CLI_BATCH_H
#define VLR_CLI_BATCH_H

#include "cli.h"

typedef struct cli_batch_opts {
    const char *cmd;    /* for messages: "score", "eval" */
    const char *input;  /* path, or NULL / "-" for stdin */
    const char *output; /* path, or NULL / "-" for stdout */
    bool resume;
    bool overwrite;     /* replace a non-empty output file (otherwise refused without resume) */
    bool quiet;
    double log_every_s; /* plain progress lines when stderr is not a terminal; 0 = 5 s */
    uint64_t max_line_bytes; /* the longest input line held (its end of line not counted); 0 = the default */
    /* With resume: called with each result line the output file keeps (without its end of line),
     * before the run, with the run's ctx; returning false refuses to resume (it prints why). */
    bool (*resumed)(const char *line, size_t len, void *ctx);
    /* Under mpirun (cli/mpi_batch.c), on rank 0: called with the result line of each line a handler
     * ran on (cli_batch_line.farmed; without its end of line; ok false for an error line), in input
     * order, before it is written. */
    void (*absorb)(const char *line, size_t len, bool ok, void *ctx);
    /* Under mpirun, on every other rank at the end: the handler's own counts, which rank 0 sums into
     * cli_batch_stats.counters. */
    void (*counters)(void *ctx, uint64_t *out);
    int threads;        /* under mpirun: this rank's thread count, summed over the ranks for the summary */
} cli_batch_opts;

/* How many counts opts.counters reports. */
#define CLI_BATCH_COUNTERS 6

/* --max-line-bytes default: the server's default body cap (--max-body-mb 64). */
#define CLI_BATCH_MAX_LINE_BYTES ((size_t)64 << 20)

/* Consumes the options every batch command shares: --input, --output, --resume, --overwrite,
 * --quiet, --max-line-bytes N and --vision-cache MB (into *cache_mb). Returns true when argv[a->i] was one of them;
 * sets *bad (after printing a usage error) on a bad value. */
bool cli_batch_opt(cli_args *a, cli_batch_opts *o, long *cache_mb, bool *bad);

typedef struct cli_batch_stats {
    uint64_t total;     /* non-blank input lines, when the input is a regular file (else 0) */
    uint64_t done;      /* lines handled in this run */
    uint64_t skipped;   /* lines skipped because the output already had them */
    uint64_t errors;    /* lines answered with an error in this run */
    uint64_t tokens;    /* tokens reported by the handler */
    double wall_s;
    bool interrupted;
    int ranks;          /* under mpirun: the processes that ran the batch (else 0) */
    int threads;        /* under mpirun: opts.threads summed over the ranks */
    bool worker;        /* under mpirun, a rank other than 0: it wrote nothing and has no summary */
    uint64_t counters[CLI_BATCH_COUNTERS]; /* the other ranks' opts.counters, summed */
} cli_batch_stats;

/* One input line that parsed as JSON. Lines that do not are answered by the driver itself with
 * {"id": <line number>, "error": "invalid JSON: ..."} (too long: {"id": null, ...}); blank lines are
 * skipped. */
typedef struct cli_batch_line {
    const char *text;      /* the raw line, without its end-of-line */
    size_t len;
    size_t line_no;        /* 0-based */
    const vlr_json *root;  /* the parsed line */
    const vlr_buf *id_json; /* the id to echo: the line's "id", or line_no */
    bool farmed;           /* under mpirun: rank 0 counts the result from its line, in input order
                            * (opts.absorb); the handler counts nothing of its own */
} cli_batch_line;

/* Handles one line: appends exactly one JSON object (no newline) to out, adds the tokens it
 * processed to *tokens, returns false when the line failed (an error object was written). */
typedef bool (*cli_batch_fn)(const cli_batch_line *line, void *ctx, vlr_buf *out, uint64_t *tokens);

/* The first non-blank line of a regular input file, parsed (*doc NULL when it is not JSON): 1 when
 * there is one, 0 when the input is not a regular file or has no such line, -1 on a read error
 * (message printed). For commands that read the format from the data before the run. */
int cli_batch_first_row(const cli_batch_opts *o, vlr_json_doc **doc);

/* Runs the loop. Returns 0 when the run completed (see stats for line errors), -1 when it could not
 * start, the input could not be read or the output could not be written (message printed), 1 when
 * interrupted by a signal. Started by mpirun, every rank calls it: rank 0 reads and writes, the others
 * handle the lines it sends them (stats->worker; cli/mpi_batch.h). */
int cli_batch_run(const cli_batch_opts *o, cli_batch_fn fn, void *ctx, cli_batch_stats *stats);

/* The summary line: "score: 200 requests (3 skipped), 2 errors, 51234 tokens, 12.3 s, ...,
 * precision bf16 (avx512_bf16 kernels)": m's precision and kernels are part of it; under mpirun the
 * time is followed by "on K ranks, T threads in all". */
void cli_batch_print_summary(const cli_batch_opts *o, const cli_batch_stats *st, const vlr_model *m,
                             const char *extra);

#endif
