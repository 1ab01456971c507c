/* cmd_eval.c: `vlreward eval`: accuracy of the reward model on preference pairs (our pairs format,
 * VL-RewardBench or RewardBench exported as JSON Lines). Each pair's two answers are scored with the
 * same session; one result line per pair is written whole and flushed, in input order, through the
 * resumable batch driver (cli/batch.c). The summary (markdown in the model card's layout, and
 * --summary-json) is computed from the run itself: the lines a resumed run keeps are read back once,
 * before the run, and this run's pairs are counted as they are scored, so the output may be
 * /dev/null. Dataset parsing and the benchmark arithmetic live in src/eval.c. */
#include <errno.h>
#include <stdlib.h>

#include "batch.h"
#include "cache_opts.h"
#include "eval.h"
#include "eval_compare.h"
#include "eval_report.h"
#include "model_identity.h"
#include "mpi_batch.h"

static const char help[] =
    "usage: vlreward eval --model DIR --input FILE|- [--format auto|pairs|vlrewardbench|rewardbench]\n"
    "                     [--output FILE|-] [--resume] [--summary-json FILE] [options]\n"
    "\n"
    "Scores both answers of each preference pair; a pair is correct when score(chosen) > score(rejected)\n"
    "(a tie counts as wrong and is reported). Input formats (one JSON object per line; docs/eval.md):\n"
    "  pairs          {\"id\", \"messages\" (without the answer) or \"image\"|\"images\" + \"question\",\n"
    "                 \"chosen\", \"rejected\", optional \"category\"}; an answer is a string (the assistant\n"
    "                 turn) or a list of messages appended to the conversation\n"
    "  vlrewardbench  MMInstruction/VL-RewardBench rows: \"id\", \"query\", \"response\" (two), \"human_ranking\",\n"
    "                 \"image\" (path, data: URI, base64 or {\"bytes\": base64}) or \"image_path\"; groups as the\n"
    "                 benchmark's cal.py; \"<image>\\n\" is removed from queries as its inference_hf.py does\n"
    "  rewardbench    allenai/reward-bench rows: \"id\", \"prompt\", \"chosen\", \"rejected\", \"subset\"\n"
    "Output lines: {\"id\", \"category\" (or \"subset\"), \"chosen_score\", \"rejected_score\", \"correct\"}, or\n"
    "{\"id\", \"category\", \"error\"} for a pair that could not be scored (the run goes on).\n"
    "\n"
    "  --model DIR          model directory, or ORG/NAME[@REV] from the Hugging Face cache\n"
    "  --input FILE|-       dataset rows as JSON Lines; relative image paths resolve against its folder\n"
    "  --format NAME        auto (default: from the first row's fields), pairs, vlrewardbench or rewardbench\n"
    "  --keep-image-tag     vlrewardbench: keep the literal \"<image>\\n\" in queries\n"
    "  --output FILE|-      per-pair results (default stdout)\n"
    "  --resume             continue into an existing --output file: lines already there are skipped (the\n"
    "                       k-th line with an id stands for its k-th input line), a half-written last line\n"
    "                       is redone; the summary covers the whole file\n"
    "  --overwrite          replace a non-empty --output file (refused otherwise)\n"
    "  --max-line-bytes N   longer input lines become error lines (default 64 MiB)\n"
    "  --summary-json FILE  write the summary numbers, counts, failures and what ran as JSON\n"
    "  --report DIR         write DIR/index.html: the tables, per category the accuracy with its 95%\n"
    "                       interval and a histogram of the chosen - rejected margins (self-contained)\n"
    "  --model-name NAME    the table's Model Name (default: ORG/NAME of a Hugging Face cache snapshot,\n"
    "                       else the folder's name)\n"
    "  --threads N          threads (default: all CPUs; under mpirun, per rank: the CPUs it is bound\n"
    "                       to, or its share of the node's); scores do not depend on it\n"
    "  --precision P        auto (default: bf16 where this CPU runs it faster), f32 (exact), bf16 or int8\n"
    "  --int8-cache         int8: keep the quantized weights in DIR/vlreward-int8.bin (see score --help)\n"
    "  --compare-precision A,B  score every pair at both precisions (A's scores are the result lines'\n"
    "                       own, B's go in their \"compare\" object) and report how often the pair\n"
    "                       decision agrees, the Spearman rank correlation of the scores and the\n"
    "                       distribution of the score differences, e.g. f32,bf16\n"
    "  --max-tokens N       refuse requests longer than N tokens (default: the model's context)\n"
    "  --vision-cache MB    reuse vision-tower outputs of identical images, e.g. the two sides of a pair\n"
    "                       (default 512, 0 = off); scores are bit-identical either way\n"
    "  --prefix-cache MB    keep the K/V rows of scored prefixes, so the other side of a pair and a prompt\n"
    "                       that comes back later are not computed again (default 1024, 0 = off)\n"
    "  --quiet              no progress on stderr\n"
    "\n"
    "The summary table goes to stdout when --output is a file, to stderr when results go to stdout.\n"
    "mpirun -n K vlreward eval ... spreads the pairs over K processes, same lines and table\n"
    "(docs/cluster.md; input from a pipe then needs --format).\n"
    "exit status: 0 every pair scored, 1 some pair failed (in this run or in the resumed file) or the run\n"
    "was interrupted, 2 usage, model, input or output error\n";

typedef struct eval_ctx {
    vlr_session *session;
    vlr_session *session_b;   /* --compare-precision: the second precision's */
    const vlr_cache *cache;   /* session's (the summary's reuse counts) */
    const char *prec_a, *prec_b; /* their resolved names */
    vlr_eval_compare compare; /* every pair scored at both: resumed and this run's */
    const char *base_dir;
    vlr_eval_format format;
    bool format_known;     /* --format auto: false until a row shows which */
    vlr_eval_options opt;
    vlr_eval_summary summary; /* every pair of the output: resumed lines and this run's */
    uint64_t own_errors;   /* error lines written here (the driver writes those of unreadable lines) */
    size_t resumed_lines;
    const char *output;
    bool summary_failed;
} eval_ctx;

static const char format_fields[] =
    "pairs (\"chosen\", \"rejected\"), vlrewardbench (\"response\", \"human_ranking\") or rewardbench (\"prompt\", "
    "\"chosen\", \"rejected\", \"subset\")";

/* Both sides of a pair with one session, as one vlr_score_requests: when they differ only in the
 * answer (always, but for pairs-format answers given as several messages), the prompt runs once and
 * the rejected answer as a suffix after it. On failure writes the first failed side's message into
 * msg (prefixed with the precision when two run) and returns false. */
static bool score_pair(vlr_session *session, const char *precision, const vlr_eval_pair *pair, double *chosen,
                       double *rejected, char *msg, size_t cap, uint64_t *tokens) {
    static const char *const side[2] = {"chosen", "rejected"};
    const vlr_request reqs[2] = {pair->chosen.req, pair->rejected.req};
    vlr_batch_result r[2];
    uint64_t n_tokens[2];
    vlr_score_requests(session, reqs, 2, r, n_tokens);
    for (size_t i = 0; i < 2; i++) {
        if (r[i].status == VLR_OK) {
            *tokens += n_tokens[i];
            continue;
        }
        const char *p = precision ? precision : "", *colon = precision ? ": " : "";
        vlr_snprintf_utf8(msg, cap, "%s%s%s: %s", p, colon, side[i], r[i].message);
        return false;
    }
    *chosen = r[0].score;
    *rejected = r[1].score;
    return true;
}

/* --compare-precision: B's scores of a result line, {"precision", "chosen_score", "rejected_score",
 * "correct"}, appended inside the line's object. */
static void append_compare(vlr_buf *out, const char *precision, double chosen, double rejected) {
    if (out->len && out->data[out->len - 1] == '}') out->len--;
    vlr_buf_printf(out, ", \"compare\": {\"precision\": \"%s\", \"chosen_score\": ", precision);
    vlr_buf_json_double(out, chosen);
    vlr_buf_puts(out, ", \"rejected_score\": ");
    vlr_buf_json_double(out, rejected);
    vlr_buf_puts(out, chosen > rejected ? ", \"correct\": true}}" : ", \"correct\": false}}");
}

/* Counts a pair that could not be scored (pair NULL: a row of unknown category). */
static void count_failure(eval_ctx *ctx, const vlr_eval_pair *pair) {
    vlr_err e;
    if (vlr_eval_summary_add_failure(&ctx->summary, pair ? pair->id_text.data : NULL, pair ? pair->id_text.len : 0,
                                     pair && pair->label_known, pair ? pair->label : NULL, &e))
        ctx->summary_failed = true;
}

/* A pair this handler wrote an error line for (under mpirun, rank 0 counts it from the line). */
static void count_own_failure(eval_ctx *ctx, const cli_batch_line *line, const vlr_eval_pair *pair) {
    if (line->farmed) return;
    ctx->own_errors++;
    count_failure(ctx, pair);
}

static bool eval_line(const cli_batch_line *line, void *vctx, vlr_buf *out, uint64_t *tokens) {
    eval_ctx *ctx = vctx;
    char msg[VLR_ERR_MSG_CAP + 200];
    vlr_eval_format seen;
    bool seen_known = vlr_eval_format_detect(line->root, &seen);
    if (!ctx->format_known) {
        if (!seen_known) {
            snprintf(msg, sizeof msg, "cannot tell the dataset format from this row; expected the fields of %s, or "
                     "give --format", format_fields);
            cli_error_line(out, line->id_json, msg);
            count_own_failure(ctx, line, NULL);
            return false;
        }
        ctx->format = ctx->summary.format = seen;
        ctx->format_known = true;
    }
    vlr_eval_pair pair;
    vlr_err e = {0};
    double chosen = 0, rejected = 0, chosen_b = 0, rejected_b = 0;
    bool ok = false;
    const char *prec_a = ctx->session_b ? ctx->prec_a : NULL;
    if (vlr_eval_pair_from_json(ctx->format, line->root, line->line_no, ctx->base_dir, &ctx->opt, &pair, &e)) {
        /* a row of another format fails on a missing field: say which format it looks like */
        if (seen_known && seen != ctx->format)
            snprintf(msg, sizeof msg, "%s (this row looks like --format %s, not %s)", e.msg, vlr_eval_format_name(seen),
                     vlr_eval_format_name(ctx->format));
        else
            snprintf(msg, sizeof msg, "%s", e.msg);
    } else if (score_pair(ctx->session, prec_a, &pair, &chosen, &rejected, msg, sizeof msg, tokens) &&
               (!ctx->session_b ||
                score_pair(ctx->session_b, ctx->prec_b, &pair, &chosen_b, &rejected_b, msg, sizeof msg, tokens))) {
        vlr_eval_result_line(ctx->format, line->id_json, pair.label, chosen, rejected, out);
        ok = true;
        if (!line->farmed &&
            vlr_eval_summary_add(&ctx->summary, pair.id_text.data, pair.id_text.len, pair.label, chosen, rejected, &e))
            ctx->summary_failed = true;
        if (ctx->session_b) {
            append_compare(out, ctx->prec_b, chosen_b, rejected_b);
            if (!line->farmed && vlr_eval_compare_add(&ctx->compare, chosen, rejected, chosen_b, rejected_b, &e))
                ctx->summary_failed = true;
        }
    }
    if (!ok) {
        vlr_eval_error_line(ctx->format, line->id_json, pair.label_known, pair.label, msg, out);
        count_own_failure(ctx, line, &pair);
    }
    vlr_eval_pair_free(&pair);
    return ok;
}

/* --compare-precision: the two precisions' scores of a resumed result line (error lines have none). */
static vlr_status resumed_compare(eval_ctx *ctx, const char *line, size_t len, vlr_err *e) {
    vlr_json_doc *d = vlr_json_parse(line, len, e);
    if (!d) return VLR_ERR_FORMAT;
    const vlr_json *r = vlr_json_root(d), *cmp = vlr_json_get(r, "compare");
    const vlr_json *prec = vlr_json_get(cmp, "precision");
    const vlr_json *ca = vlr_json_get(r, "chosen_score"), *ra = vlr_json_get(r, "rejected_score");
    const vlr_json *cb = vlr_json_get(cmp, "chosen_score"), *rb = vlr_json_get(cmp, "rejected_score");
    vlr_status rc = VLR_OK;
    if (vlr_json_get(r, "error")) {
        /* a failed pair: in no comparison */
    } else if (!vlr_json_is(prec, VLR_JSON_STRING) || strcmp(prec->str, ctx->prec_b) != 0 ||
               !vlr_json_is(cb, VLR_JSON_NUMBER) || !vlr_json_is(rb, VLR_JSON_NUMBER)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "no \"compare\" scores at %s (the line was written by another run)",
                      ctx->prec_b);
    } else {
        rc = vlr_eval_compare_add(&ctx->compare, ca->number, ra->number, cb->number, rb->number, e);
    }
    vlr_json_free(d);
    return rc;
}

/* A result line counted in the summary (and in the precision comparison). */
static vlr_status count_result_line(eval_ctx *ctx, const char *line, size_t len, vlr_err *e) {
    vlr_status rc = vlr_eval_summary_add_line(&ctx->summary, line, len, e);
    if (rc == VLR_OK && ctx->session_b) rc = resumed_compare(ctx, line, len, e);
    return rc;
}

/* A line --resume keeps: counted in the summary. */
static bool eval_resumed(const char *line, size_t len, void *vctx) {
    eval_ctx *ctx = vctx;
    ctx->resumed_lines++;
    if (!ctx->format_known) {
        fprintf(stderr, "vlreward eval: --resume with input from a pipe needs --format (the summary of the resumed "
                        "lines depends on it)\n");
        return false;
    }
    vlr_err e = {0};
    if (count_result_line(ctx, line, len, &e) == VLR_OK) return true;
    fprintf(stderr, "vlreward eval: %s: line %zu: %s; refusing to resume into it\n", ctx->output, ctx->resumed_lines,
            e.msg);
    return false;
}

/* Under mpirun, on rank 0: a pair some rank scored, counted from its result line as a resumed one, in
 * input order (the summary lists sources in the order they first occur). */
static void eval_absorb(const char *line, size_t len, bool ok, void *vctx) {
    eval_ctx *ctx = vctx;
    vlr_err e = {0};
    if (!ok) ctx->own_errors++; /* counted here, not as one of the driver's own error lines */
    if (count_result_line(ctx, line, len, &e)) ctx->summary_failed = true;
}

/* Under mpirun, each rank's counts for the summary (cli_cache_counters). */
static void eval_counters(void *vctx, uint64_t *out) {
    const eval_ctx *ctx = vctx;
    cli_cache_counters(ctx->cache, out);
}

/* "f32,bf16" -> the two precisions; false after a usage error. */
static bool parse_compare(const char *v, vlr_precision out[2]) {
    const char *comma = strchr(v, ',');
    char first[32];
    if (comma && (size_t)(comma - v) < sizeof first) {
        snprintf(first, sizeof first, "%.*s", (int)(comma - v), v);
        if (vlr_precision_parse(first, &out[0]) && vlr_precision_parse(comma + 1, &out[1])) return true;
    }
    cli_usage_error("eval", "--compare-precision: expected two precisions as A,B (names as for --precision), got '%s'",
                    v);
    return false;
}

static bool write_text_file(const char *path, const vlr_buf *b) {
    FILE *f = fopen(path, "wb");
    bool ok = f && fwrite(b->data, 1, b->len, f) == b->len;
    if (f && fclose(f) != 0) ok = false;
    if (!ok) fprintf(stderr, "vlreward eval: %s: cannot write: %s\n", path, strerror(errno));
    return ok;
}

/* --format auto: the format of the input's first row when it is a regular file (a pipe is read as it
 * comes: its first row that shows one decides). Returns false after printing a usage error. */
static bool detect_format(const cli_batch_opts *bo, eval_ctx *ctx) {
    vlr_json_doc *doc;
    int rc = cli_batch_first_row(bo, &doc);
    if (rc < 0) return false;
    if (rc > 0 && doc && vlr_eval_format_detect(vlr_json_root(doc), &ctx->format)) ctx->format_known = true;
    vlr_json_free(doc);
    if (rc > 0 && !ctx->format_known) {
        cli_usage_error("eval", "%s: cannot tell the dataset format from its first line: expected the fields of %s; "
                        "give --format", bo->input, format_fields);
        return false;
    }
    return true;
}

int cmd_eval(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "eval"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *format_name = "auto", *summary_path = NULL, *model_name_opt = NULL, *v = NULL, *compare = NULL;
    const char *report_dir = NULL;
    cli_batch_opts bo = {.cmd = "eval", .resumed = eval_resumed, .absorb = eval_absorb, .counters = eval_counters};
    eval_ctx ctx = {0};
    bool bad = false;
    long cache_mb = 512, prefix_mb = CLI_PREFIX_CACHE_DEFAULT_MB;
    vlr_cache *cache = NULL, *cache_b = NULL;
    while (a.i < argc && !bad) {
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_batch_opt(&a, &bo, &cache_mb, &bad)) continue;
        if (cli_prefix_cache_opt(&a, &prefix_mb, &bad)) continue;
        if (cli_opt(&a, "--format", true, &format_name, &bad)) continue;
        if (cli_opt(&a, "--summary-json", true, &summary_path, &bad)) continue;
        if (cli_opt(&a, "--model-name", true, &model_name_opt, &bad)) continue;
        if (cli_opt(&a, "--compare-precision", true, &compare, &bad)) continue;
        if (cli_opt(&a, "--report", true, &report_dir, &bad)) continue;
        if (cli_opt(&a, "--keep-image-tag", false, &v, &bad)) {
            ctx.opt.keep_image_tag = true;
            continue;
        }
        return cli_usage_error("eval", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    ctx.format_known = strcmp(format_name, "auto") != 0;
    if (ctx.format_known && !vlr_eval_format_parse(format_name, &ctx.format))
        return cli_usage_error("eval", "--format: expected auto, pairs, vlrewardbench or rewardbench, got '%s'",
                               format_name);
    if (!mo.model_dir) return cli_usage_error("eval", "--model DIR is required");
    if (!bo.input) return cli_usage_error("eval", "--input FILE is required");
    bool to_stdout = !bo.output || strcmp(bo.output, "-") == 0;
    if (bo.resume && to_stdout) return cli_usage_error("eval", "--resume needs --output FILE");
    vlr_precision precisions[2];
    if (compare && mo.precision != VLR_PRECISION_AUTO)
        return cli_usage_error("eval", "--compare-precision names both precisions: drop --precision");
    if (compare && !parse_compare(compare, precisions)) return EXIT_USAGE;
    if (!ctx.format_known && !detect_format(&bo, &ctx)) return EXIT_USAGE;
    if (!ctx.format_known && cli_farm_launched()) /* each rank would guess from the first row it gets */
        return cli_usage_error("eval", "under mpirun, input from a pipe needs --format");
    if (report_dir && !eval_report_prepare(report_dir)) return EXIT_USAGE;
    ctx.output = bo.output;

    if (compare) mo.precision = precisions[0];
    if (!mo.threads) mo.threads = cli_farm_default_threads(); /* under mpirun: this rank's CPUs */
    bo.threads = mo.threads;
    vlr_model *m = cli_load_model(&mo, "eval"), *m_b = NULL;
    if (!m) return EXIT_USAGE;
    int status = EXIT_USAGE;
    char *base = cli_input_dir(bo.input), *model_name = NULL, *revision = NULL;
    vlr_eval_summary_init(&ctx.summary, ctx.format);
    vlr_buf report = {0}, json = {0}, html = {0};
    vlr_model_info in, in_b;
    vlr_model_get_info(m, &in);
    ctx.prec_a = in.precision;
    if (compare) {
        /* the same weights a second time: mapped, so the page cache holds them once */
        cli_model_opts mo_b = mo;
        mo_b.precision = precisions[1];
        if (!(m_b = cli_load_model(&mo_b, "eval"))) goto done;
        vlr_model_get_info(m_b, &in_b);
        ctx.prec_b = in_b.precision;
        if (strcmp(ctx.prec_a, ctx.prec_b) == 0)
            fprintf(stderr, "vlreward eval: --compare-precision %s: both resolve to %s on this CPU\n", compare,
                    ctx.prec_a);
    }
    ctx.base_dir = base;
    if (!base || !cli_model_identity(mo.model_dir, &model_name, &revision) ||
        vlr_session_init(m, &ctx.session) != VLR_OK || (m_b && vlr_session_init(m_b, &ctx.session_b) != VLR_OK)) {
        fprintf(stderr, "vlreward eval: out of memory\n");
        goto done;
    }
    /* The two answers of a pair share their images: the second side finds the vision-tower outputs
     * of the first in the cache (bit-identical scores either way). */
    if (!(cache = cli_cache_new(m, cache_mb, prefix_mb, "eval")) ||
        (m_b && !(cache_b = cli_cache_new(m_b, cache_mb, prefix_mb, "eval"))))
        goto done;
    vlr_session_set_cache(ctx.session, cache);
    ctx.cache = cache;
    if (ctx.session_b) vlr_session_set_cache(ctx.session_b, cache_b);
    cli_batch_stats st;
    int run = cli_batch_run(&bo, eval_line, &ctx, &st);
    if (run < 0) goto done;
    if (st.worker) { /* under mpirun, rank 0 writes the summary */
        status = EXIT_OK;
        goto done;
    }
    /* the driver's own error lines (invalid JSON, a line too long to hold): of no known category */
    for (uint64_t i = ctx.own_errors; i < st.errors; i++) count_failure(&ctx, NULL);
    char extra[320], reuse[256];
    cli_cache_summary(cache, st.counters, reuse, sizeof reuse);
    snprintf(extra, sizeof extra, "%s%s%s", reuse, ctx.session_b ? ", compared with precision " : "",
             ctx.session_b ? ctx.prec_b : "");
    cli_batch_print_summary(&bo, &st, m, extra);
    if (ctx.summary_failed) {
        fprintf(stderr, "vlreward eval: out of memory in the summary\n");
        goto done;
    }
    vlr_eval_meta meta = {model_name_opt ? model_name_opt : model_name, mo.model_dir, revision, VLR_VERSION,
                          in.precision, in.kernels, ctx.opt.keep_image_tag, NULL};
    vlr_eval_compare_stats cs;
    vlr_buf compare_json = {0};
    vlr_err ce = {0};
    if (ctx.session_b) {
        if (vlr_eval_compare_compute(&ctx.compare, &cs, &ce)) {
            fprintf(stderr, "vlreward eval: %s\n", ce.msg);
            goto done;
        }
        vlr_eval_compare_json(&cs, ctx.prec_a, ctx.prec_b, &compare_json);
        meta.compare_json = compare_json.data;
    }
    vlr_eval_summary_markdown(&ctx.summary, &meta, &report);
    if (ctx.session_b) vlr_eval_compare_markdown(&cs, ctx.prec_a, ctx.prec_b, &report);
    vlr_eval_summary_json(&ctx.summary, &meta, &json);
    if (report_dir) eval_report_html(&ctx.summary, &meta, ctx.session_b ? &cs : NULL, ctx.prec_a, ctx.prec_b, &html);
    bool meta_oom = compare_json.oom;
    vlr_buf_free(&compare_json);
    if (report.oom || json.oom || meta_oom || html.oom) {
        fprintf(stderr, "vlreward eval: out of memory in the summary\n");
        goto done;
    }
    fputs(report.data, to_stdout ? stderr : stdout);
    fflush(stdout);
    if (summary_path && !write_text_file(summary_path, &json)) goto done;
    if (report_dir && !eval_report_write(report_dir, &html)) goto done;
    status = (run == 0 && ctx.summary.errors == 0) ? EXIT_OK : EXIT_INPUT;
done:
    vlr_buf_free(&report);
    vlr_buf_free(&json);
    vlr_buf_free(&html);
    vlr_eval_summary_free(&ctx.summary);
    vlr_eval_compare_free(&ctx.compare);
    vlr_session_free(ctx.session);
    vlr_session_free(ctx.session_b);
    vlr_cache_free(cache);
    vlr_cache_free(cache_b);
    vlr_model_free(m);
    vlr_model_free(m_b);
    free(base);
    free(model_name);
    free(revision);
    return status;
}
