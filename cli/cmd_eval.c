/* cmd_eval.c: `vlreward eval`: accuracy of the reward model on preference pairs (our pairs format,
 * VL-RewardBench or RewardBench exported as JSON Lines). Each pair's two answers are scored with the
 * same session; one result line per pair is written whole and flushed, in input order, through the
 * resumable batch driver (cli/batch.c). The summary (markdown in the model card's layout, and
 * --summary-json) is computed from the whole output file, so a resumed run reports old and new
 * lines together. Dataset parsing and the benchmark arithmetic live in src/eval.c. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "batch.h"
#include "eval.h"

static const char help[] =
    "usage: vlreward eval --model DIR --input FILE|- [--format pairs|vlrewardbench|rewardbench]\n"
    "                     [--output FILE|-] [--resume] [--summary-json FILE] [options]\n"
    "\n"
    "Scores both answers of each preference pair; a pair is correct when score(chosen) > score(rejected)\n"
    "(a tie counts as wrong and is reported). Input formats (one JSON object per line; docs/eval.md):\n"
    "  pairs          {\"id\", \"messages\" (without the answer) or \"image\"|\"images\" + \"question\",\n"
    "                 \"chosen\", \"rejected\", optional \"category\"}; an answer is a string (the assistant\n"
    "                 turn) or a list of messages appended to the conversation (the default format)\n"
    "  vlrewardbench  MMInstruction/VL-RewardBench rows: \"id\", \"query\", \"response\" (two), \"human_ranking\",\n"
    "                 \"image\" (path, data: URI, base64 or {\"bytes\": base64}); groups as the benchmark's cal.py\n"
    "  rewardbench    allenai/reward-bench rows: \"id\", \"prompt\", \"chosen\", \"rejected\", \"subset\"\n"
    "Output lines: {\"id\", \"category\" (or \"subset\"), \"chosen_score\", \"rejected_score\", \"correct\"}, or\n"
    "{\"id\", \"error\"} for a pair that could not be scored (the run goes on).\n"
    "\n"
    "  --model DIR          model directory, or ORG/NAME[@REV] from the Hugging Face cache\n"
    "  --input FILE|-       dataset rows as JSON Lines; relative image paths resolve against its folder\n"
    "  --format NAME        pairs (default), vlrewardbench or rewardbench\n"
    "  --output FILE|-      per-pair results (default stdout)\n"
    "  --resume             continue into an existing --output file: ids already there are skipped, a\n"
    "                       half-written last line is redone; the summary covers the whole file\n"
    "  --overwrite          replace a non-empty --output file (refused otherwise)\n"
    "  --summary-json FILE  write the summary numbers, counts and ties as JSON\n"
    "  --threads N          threads (default: all CPUs); scores do not depend on it\n"
    "  --precision P        auto (default: bf16 where this CPU runs it faster), f32 (exact), bf16 or int8\n"
    "  --max-tokens N       refuse requests longer than N tokens (default: the model's context)\n"
    "  --vision-cache MB    reuse vision-tower outputs of identical images, e.g. the two sides of a pair\n"
    "                       (default 512, 0 = off); scores are bit-identical either way\n"
    "  --quiet              no progress on stderr\n"
    "\n"
    "The summary table goes to stdout when --output is a file, to stderr when results go to stdout.\n"
    "exit status: 0 every pair scored, 1 some pair failed (in this run or in the resumed file) or the run\n"
    "was interrupted, 2 usage, model or output error\n";

typedef struct eval_ctx {
    vlr_session *session;
    const char *base_dir;
    vlr_eval_format format;
    vlr_eval_summary summary; /* of this run's lines: used when the results go to stdout */
    bool summary_failed;
} eval_ctx;

/* Scores one side; on failure writes the error line and returns false. */
static bool score_side(eval_ctx *ctx, const vlr_parsed_request *r, const char *side, const vlr_buf *id_json,
                       double *score, vlr_buf *out, uint64_t *tokens) {
    char msg[VLR_ERR_MSG_CAP + 32];
    vlr_status rc = vlr_score(ctx->session, &r->req, score);
    if (rc == VLR_OK) *tokens += vlr_session_last_n_tokens(ctx->session);
    if (rc != VLR_OK) {
        vlr_snprintf_utf8(msg, sizeof msg, "%s: %s", side, vlr_session_errmsg(ctx->session));
    } else if (!isfinite(*score)) {
        snprintf(msg, sizeof msg, "%s: the score is not a finite number", side);
    } else {
        return true;
    }
    cli_error_line(out, id_json, msg);
    return false;
}

static bool eval_line(const cli_batch_line *line, void *vctx, vlr_buf *out, uint64_t *tokens) {
    eval_ctx *ctx = vctx;
    const vlr_buf *id_json = line->id_json;
    vlr_eval_pair pair;
    vlr_err e = {0};
    double chosen = 0, rejected = 0;
    bool ok = false;
    if (vlr_eval_pair_from_json(ctx->format, line->root, line->line_no, ctx->base_dir, &pair, &e)) {
        cli_error_line(out, id_json, e.msg);
    } else if (score_side(ctx, &pair.chosen, "chosen", id_json, &chosen, out, tokens) &&
               score_side(ctx, &pair.rejected, "rejected", id_json, &rejected, out, tokens)) {
        vlr_eval_result_line(ctx->format, id_json, pair.label, chosen, rejected, out);
        ok = true;
    }
    if (ok && vlr_eval_summary_add(&ctx->summary, pair.id_text.data, pair.id_text.len, pair.label, chosen, rejected,
                                    &e)) {
        ctx->summary_failed = true;
    }
    vlr_eval_pair_free(&pair);
    return ok;
}

/* Recomputes the summary from every line of the output file (old lines of a resumed run included). */
static bool summary_from_file(const char *path, vlr_eval_summary *s) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "vlreward eval: %s: cannot reopen for the summary: %s\n", path, strerror(errno));
        return false;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    bool ok = true;
    while (ok && (n = getline(&line, &cap, f)) >= 0) {
        line_no++;
        size_t len = (size_t)n;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (!len) continue;
        vlr_err e = {0};
        if (vlr_eval_summary_add_line(s, line, len, &e)) {
            fprintf(stderr, "vlreward eval: %s: line %zu: %s\n", path, line_no, e.msg);
            ok = false;
        }
    }
    free(line);
    fclose(f);
    return ok;
}

static bool write_text_file(const char *path, const vlr_buf *b) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(b->data, 1, b->len, f) == b->len;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) fprintf(stderr, "vlreward eval: %s: cannot write: %s\n", path, strerror(errno));
    return ok;
}

/* "models/Skywork-VL-Reward-7B/" -> "Skywork-VL-Reward-7B" (malloc'd). */
static char *model_name_of(const char *dir) {
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') len--;
    size_t start = len;
    while (start && dir[start - 1] != '/') start--;
    return strndup(dir + start, len - start);
}

int cmd_eval(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "eval"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *format_name = "pairs", *summary_path = NULL;
    cli_batch_opts bo = {.cmd = "eval"};
    bool bad = false;
    long cache_mb = 512;
    while (a.i < argc && !bad) {
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_batch_opt(&a, &bo, &cache_mb, &bad)) continue;
        if (cli_opt(&a, "--format", true, &format_name, &bad)) continue;
        if (cli_opt(&a, "--summary-json", true, &summary_path, &bad)) continue;
        return cli_usage_error("eval", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    eval_ctx ctx = {0};
    if (!vlr_eval_format_parse(format_name, &ctx.format))
        return cli_usage_error("eval", "--format: expected pairs, vlrewardbench or rewardbench, got '%s'", format_name);
    if (!mo.model_dir) return cli_usage_error("eval", "--model DIR is required");
    if (!bo.input) return cli_usage_error("eval", "--input FILE is required");
    bool to_stdout = !bo.output || strcmp(bo.output, "-") == 0;
    if (bo.resume && to_stdout) return cli_usage_error("eval", "--resume needs --output FILE");

    vlr_model *m = cli_load_model(&mo, "eval");
    if (!m) return EXIT_USAGE;
    int status = EXIT_USAGE;
    char *base = cli_input_dir(bo.input), *model_name = model_name_of(mo.model_dir);
    vlr_eval_summary file_summary;
    vlr_eval_summary_init(&ctx.summary, ctx.format);
    vlr_eval_summary_init(&file_summary, ctx.format);
    vlr_buf report = {0}, json = {0};
    ctx.base_dir = base;
    if (!base || !model_name || vlr_session_init(m, &ctx.session) != VLR_OK) {
        fprintf(stderr, "vlreward eval: out of memory\n");
        goto done;
    }
    /* The two answers of a pair share their images: the second side finds the vision-tower outputs
     * of the first in the cache (bit-identical scores either way). */
    if (vlr_session_set_vision_cache(ctx.session, (size_t)cache_mb << 20) != VLR_OK) {
        fprintf(stderr, "vlreward eval: %s\n", vlr_session_errmsg(ctx.session));
        goto done;
    }
    cli_batch_stats st;
    int run = cli_batch_run(&bo, eval_line, &ctx, &st);
    if (run < 0) goto done;
    ctx.summary.errors += st.errors; /* every error line of this run, invalid JSON included */
    uint64_t hits = 0, misses = 0;
    vlr_session_vision_cache_stats(ctx.session, &hits, &misses);
    char extra[96];
    snprintf(extra, sizeof extra, "vision cache %llu hits / %llu misses", (unsigned long long)hits,
             (unsigned long long)misses);
    cli_batch_print_summary(&bo, &st, m, extra);
    const vlr_eval_summary *s = &ctx.summary;
    if (!to_stdout) {
        if (!summary_from_file(bo.output, &file_summary)) goto done;
        s = &file_summary;
    } else if (ctx.summary_failed) {
        fprintf(stderr, "vlreward eval: out of memory in the summary\n");
        goto done;
    }
    vlr_eval_summary_markdown(s, model_name, &report);
    vlr_eval_summary_json(s, model_name, &json);
    if (report.oom || json.oom) {
        fprintf(stderr, "vlreward eval: out of memory in the summary\n");
        goto done;
    }
    fputs(report.data, to_stdout ? stderr : stdout);
    fflush(stdout);
    if (summary_path && !write_text_file(summary_path, &json)) goto done;
    status = (run == 0 && s->errors == 0) ? EXIT_OK : EXIT_INPUT;
done:
    vlr_buf_free(&report);
    vlr_buf_free(&json);
    vlr_eval_summary_free(&ctx.summary);
    vlr_eval_summary_free(&file_summary);
    vlr_session_free(ctx.session);
    vlr_model_free(m);
    free(base);
    free(model_name);
    return status;
}
