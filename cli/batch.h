/* batch.h: the streaming, resumable JSON Lines driver behind `score` and `eval`.
 *
 * Input is read line by line (files larger than memory are fine); each result line is written whole
 * and flushed, in input order. With resume, the existing output file is read first: its complete
 * lines name the ids already done (a half-written last line is cut away and redone), and input lines
 * with those ids are skipped. Ids must then be unique in the input, which is checked up front.
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
} cli_batch_opts;

/* Consumes the options every batch command shares: --input, --output, --resume, --overwrite,
 * --quiet and --vision-cache MB (into *cache_mb). Returns true when argv[a->i] was one of them;
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
} cli_batch_stats;

/* Handles one input line. root is the parsed line, or NULL when it is not valid JSON (then
 * parse_error says why). id_json is the id to echo (the line's "id" or its 0-based number). Appends
 * exactly one JSON object (no newline) to out; adds the tokens it processed to *tokens. Returns
 * false when the line failed (an error object was written). */
typedef bool (*cli_batch_fn)(const vlr_json *root, const char *parse_error, const vlr_buf *id_json,
                             size_t line_no, void *ctx, vlr_buf *out, uint64_t *tokens);

/* Runs the loop. Returns 0 when the run completed (see stats for line errors), -1 when it could not
 * start or the output could not be written (message printed), 1 when interrupted by a signal. */
int cli_batch_run(const cli_batch_opts *o, cli_batch_fn fn, void *ctx, cli_batch_stats *stats);

/* The summary line: "score: 200 requests (3 skipped), 2 errors, 51234 tokens, 12.3 s". */
void cli_batch_print_summary(const cli_batch_opts *o, const cli_batch_stats *st, const char *extra);

#endif
