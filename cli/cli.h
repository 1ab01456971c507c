/* cli.h: what the subcommands of build/vlreward share: option parsing, model loading with the common
 * flags, help and error lines (the JSON Lines loop is batch.h). Exit codes: 0 success, 1 a model or
 * input error (some line failed), 2 usage. */
#ifndef VLR_CLI_H
#define VLR_CLI_H

#include <stdio.h>

#include "internal.h"

enum { EXIT_OK = 0, EXIT_INPUT = 1, EXIT_USAGE = 2 };

/* A tiny getopt_long-like scanner: --name VALUE, --name=VALUE and boolean --flag. */
typedef struct cli_args {
    int argc, i;
    char **argv;
    const char *cmd;
} cli_args;

/* True when argv[i] is option `name`; *value receives its value when takes_value. On a missing value
 * prints a usage error and sets *bad. Advances i past what it consumed. */
bool cli_opt(cli_args *a, const char *name, bool takes_value, const char **value, bool *bad);
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* --help / -h: every command prints its help text on stdout and exits 0. */
bool cli_is_help(const char *arg);
int cli_print_help(const char *help);
bool cli_parse_int(const char *s, long lo, long hi, long *out);

/* Options every model command takes. */
typedef struct cli_model_opts {
    const char *model_dir;
    int threads;
    int max_tokens;
    vlr_precision precision; /* VLR_PRECISION_AUTO unless --precision says otherwise */
    bool int8_cache;         /* --int8-cache */
    uint64_t max_image_pixels; /* vlr_params.max_image_pixels (0: the library's default) */
} cli_model_opts;
#define CLI_MODEL_OPTS_INIT {.precision = VLR_PRECISION_AUTO}
/* Parses --precision's value (auto, f32, bf16) into *out, or prints the usage error and returns
 * false. */
bool cli_parse_precision(const char *cmd, const char *v, vlr_precision *out);
/* Consumes --model, --threads, --max-tokens, --precision, --int8-cache; returns true if argv[i] was one
 * of them. */
bool cli_model_opt(cli_args *a, cli_model_opts *o, bool *bad);
/* Loads the model or prints the error; returns NULL on failure. model_dir is a folder, or ORG/NAME[@REV]
 * of the Hugging Face cache (hub_model_dir). */
vlr_model *cli_load_model(const cli_model_opts *o, const char *cmd);

/* True when the n bytes are only spaces, tabs and line ends (such input lines are skipped). */
bool cli_is_blank(const char *s, size_t n);
/* Folder of the input file (for relative image paths); "." for stdin. malloc'd. */
char *cli_input_dir(const char *input);

/* The architecture object of `vlreward info --json` (also served at GET /info); "version" is added
 * when version is not NULL. */
void cli_info_json(const vlr_model *m, const char *version, vlr_buf *b);

/* Appends {"id": ID, "error": MSG}. */
void cli_error_line(vlr_buf *out, const vlr_buf *id_json, const char *msg);
/* Appends {"error": MSG}: the body of every error answer of the server. */
void cli_error_object(vlr_buf *out, const char *msg);
/* Appends {"id": ID, "score": S}, or for a group {"id": ID, "scores": [S1, ...], "best": i} (i: the first
 * highest score). id_json is JSON text (id_len bytes). */
void cli_result_line(vlr_buf *out, const char *id_json, size_t id_len, const double *scores, size_t n, bool group);
/* Writes "id": ID, the id as the input line gave it (vlr_request_id_json), null when there is none. */
void cli_jw_id(vlr_jw *w, const vlr_buf *id_json);

int cmd_info(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_pull(int argc, char **argv);

#endif
