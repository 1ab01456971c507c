/* cmd_score.c: `vlreward score`: the reward of each request (JSON Lines in, one line out per line in,
 * same order), or of one conversation given with --image/--question/--answer. A line that fails is
 * written as {"id": ..., "error": ...} and the run goes on. */
#include <stdlib.h>

#include "batch.h"
#include "cache_opts.h"
#include "internal.h"
#include "mpi_batch.h"

static const char help[] =
    "usage: vlreward score --model DIR [--input FILE|-] [--output FILE|-] [options]\n"
    "       vlreward score --model DIR [--image PATH]... --question TEXT --answer TEXT [options]\n"
    "\n"
    "Scores conversations with the value head at the last token of the chat-templated sequence.\n"
    "Input lines: {\"id\": ..., \"messages\": [...]} (roles system/user/assistant; content a string or a\n"
    "list of {\"type\": \"text\", \"text\": ...} / {\"type\": \"image\", \"image\": PATH|file://|data:|http(s)://}\n"
    "items, with optional min_pixels/max_pixels/resized_height/resized_width), or the shorthand\n"
    "{\"id\", \"image\"|\"images\", \"question\", \"answer\"}. The last message is the assistant turn scored.\n"
    "A group: \"answers\": [A1, ..., AN] (strings or assistant content lists) in place of the assistant turn\n"
    "(messages ending with the user turn, or the shorthand without \"answer\"): the prompt is prefilled once\n"
    "and each answer scored after it, each score that of the answer alone.\n"
    "Output lines: {\"id\": ..., \"score\": S}, {\"id\": ..., \"scores\": [S1, ...], \"best\": i} (index of the\n"
    "highest) or {\"id\": ..., \"error\": \"...\"}.\n"
    "\n"
    "  --model DIR        model directory, or ORG/NAME[@REV] from the Hugging Face cache\n"
    "  --input FILE|-     JSON Lines requests (default stdin); relative image paths resolve against\n"
    "                     the file's folder\n"
    "  --output FILE|-    results (default stdout)\n"
    "  --image PATH       one-off mode: an image of the user turn (repeatable)\n"
    "  --question TEXT    one-off mode: the user's question\n"
    "  --answer TEXT      one-off mode: the assistant's answer to score; prints the score alone; repeat\n"
    "                     it to score several answers to the question (one line each, in order)\n"
    "  --threads N        threads (default: all CPUs; under mpirun, per rank: the CPUs it is bound to,\n"
    "                     or its share of the node's); scores do not depend on it\n"
    "  --max-tokens N     refuse requests longer than N tokens (default: the model's context)\n"
    "  --precision P      auto (default): bf16 where this CPU runs it faster, else f32; f32: exact,\n"
    "                     fp32 activations; bf16: linear-layer operands rounded to bf16, as the\n"
    "                     reference's own bf16 inference (scores within its bf16 error); int8:\n"
    "                     int8 weights and activations in the linear layers (fastest; its score\n"
    "                     cost: eval --compare-precision)\n"
    "  --int8-cache       int8: keep the quantized weights in DIR/vlreward-int8.bin and map them on\n"
    "                     later loads (7.2 GB for the 7B model; a stale file is refused and rewritten)\n"
    "  --trace FILE       write per-stage summaries (the format of tests/reference/traces) as JSON Lines\n"
    "  --resume           continue into an existing --output file: ids already there are skipped (the\n"
    "                     k-th line with an id stands for its k-th input line), a half-written last line\n"
    "                     is redone\n"
    "  --max-line-bytes N longer input lines become {\"id\": null, \"error\"} lines (default 64 MiB)\n"
    "  --overwrite        replace a non-empty --output file (refused otherwise, so no work is lost)\n"
    "  --vision-cache MB  reuse vision-tower outputs of identical images across requests (default 512,\n"
    "                     0 = off); scores are bit-identical either way\n"
    "  --prefix-cache MB  keep the K/V rows of scored prefixes (16-token blocks, least recently used\n"
    "                     dropped first; 112 KiB a token at 7B), so a prompt that comes back after\n"
    "                     others is not computed again (default 1024, 0 = off); bit-identical either way\n"
    "  --quiet            no progress on stderr (a bar on a terminal, a line every 5 s otherwise)\n"
    "\n"
    "SIGINT/SIGTERM stop after the current request, leaving a resumable --output file.\n"
    "mpirun -n K vlreward score ... spreads the lines over K processes, same output (docs/cluster.md).\n"
    "\n"
    "exit status: 0 every line scored, 1 some line failed, 2 usage or model error\n";

typedef struct score_ctx {
    vlr_session *session;
    const char *base_dir;
    FILE *trace_file;
    vlr_cache *cache;       /* vision and prefix cache; its counters give the summary's reuse */
} score_ctx;

static void write_trace(score_ctx *ctx, const vlr_buf *id_json, vlr_trace *trace) {
    if (!ctx->trace_file) return;
    /* One line per request: the object of tests/reference/traces/<id>.json with "id" put first. */
    vlr_buf body = {0}, b = {0};
    vlr_trace_write_json(trace, &body);
    vlr_buf_puts(&b, "{\"id\": ");
    vlr_buf_append(&b, id_json->data, id_json->len);
    if (body.len > 2) vlr_buf_puts(&b, ", ");
    if (body.len > 1) vlr_buf_append(&b, body.data + 1, body.len - 1);
    else vlr_buf_puts(&b, "}");
    vlr_buf_puts(&b, "\n");
    fwrite(b.data, 1, b.len, ctx->trace_file);
    fflush(ctx->trace_file);
    vlr_buf_free(&body);
    vlr_buf_free(&b);
}

/* Scores one conversation (with its trace line when asked); the session's message on failure. */
static vlr_status score_one(score_ctx *ctx, const vlr_request *req, const vlr_buf *id_json, double *score) {
    vlr_trace trace;
    vlr_trace_init(&trace);
    if (ctx->trace_file) vlr_session_set_trace(ctx->session, &trace);
    vlr_status rc = vlr_score(ctx->session, req, score);
    vlr_session_set_trace(ctx->session, NULL);
    if (rc == VLR_OK) write_trace(ctx, id_json, &trace);
    vlr_trace_free(&trace);
    return rc;
}

/* {"id", "score"}, or for a group {"id", "scores": [...], "best": i}: the group's answers through
 * vlr_score_answers (the prompt once, the others batched as suffixes after it), each score that of
 * the answer alone. With --trace each answer runs as a request of its own, for its trace line. */
static bool score_parsed(score_ctx *ctx, vlr_parsed_request *r, const vlr_buf *id_json, vlr_buf *out,
                         uint64_t *tokens) {
    const size_t n = r->n_answers ? r->n_answers : 1;
    double *scores = malloc(n * sizeof *scores);
    if (!scores) {
        cli_error_line(out, id_json, "out of memory");
        return false;
    }
    vlr_status rc = VLR_OK;
    size_t failed = 0;
    uint64_t group_tokens = 0;
    if (!ctx->trace_file) rc = vlr_score_answers(ctx->session, r, scores, &group_tokens, &failed);
    for (size_t i = 0; ctx->trace_file && i < n && !rc; i++) {
        vlr_parsed_request_answer(r, i);
        if ((rc = score_one(ctx, &r->req, id_json, &scores[i]))) failed = i;
        else group_tokens += vlr_session_last_n_tokens(ctx->session);
    }
    if (rc) {
        char msg[VLR_ERR_MSG_CAP + 32];
        if (r->n_answers) snprintf(msg, sizeof msg, "answers[%zu]: %s", failed, vlr_session_errmsg(ctx->session));
        else snprintf(msg, sizeof msg, "%s", vlr_session_errmsg(ctx->session));
        cli_error_line(out, id_json, msg);
        free(scores);
        return false;
    }
    *tokens += group_tokens;
    cli_result_line(out, id_json->data, id_json->len, scores, n, r->n_answers > 0);
    free(scores);
    return true;
}

static bool score_line(const cli_batch_line *line, void *vctx, vlr_buf *out, uint64_t *tokens) {
    score_ctx *ctx = vctx;
    vlr_parsed_request req;
    memset(&req, 0, sizeof req);
    vlr_err e = {0};
    bool ok;
    if (vlr_request_from_json(line->root, line->line_no, ctx->base_dir, &req, &e)) {
        cli_error_line(out, line->id_json, e.msg);
        ok = false;
    } else {
        ok = score_parsed(ctx, &req, line->id_json, out, tokens);
    }
    vlr_parsed_request_free(&req);
    return ok;
}

/* Under mpirun, each rank's counts for the summary (cli_cache_counters). */
static void score_counters(void *vctx, uint64_t *out) {
    const score_ctx *ctx = vctx;
    cli_cache_counters(ctx->cache, out);
}

#define MAX_ONE_OFF_IMAGES 64
#define MAX_ONE_OFF_ANSWERS 1024

int cmd_score(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "score"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *question = NULL, *trace_path = NULL, *answers[MAX_ONE_OFF_ANSWERS];
    int n_answers = 0;
    cli_batch_opts bo = {.cmd = "score", .counters = score_counters};
    const char *images[MAX_ONE_OFF_IMAGES];
    int n_images = 0;
    bool bad = false;
    long cache_mb = 512, prefix_mb = CLI_PREFIX_CACHE_DEFAULT_MB;
    while (a.i < argc && !bad) {
        const char *v = NULL;
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_batch_opt(&a, &bo, &cache_mb, &bad)) continue;
        if (cli_prefix_cache_opt(&a, &prefix_mb, &bad)) continue;
        if (cli_opt(&a, "--question", true, &question, &bad)) continue;
        if (cli_opt(&a, "--answer", true, &v, &bad)) {
            if (v && n_answers == MAX_ONE_OFF_ANSWERS) return cli_usage_error("score", "at most %d --answer", MAX_ONE_OFF_ANSWERS);
            if (v) answers[n_answers++] = v;
            continue;
        }
        if (cli_opt(&a, "--trace", true, &trace_path, &bad)) continue;
        if (cli_opt(&a, "--image", true, &v, &bad)) {
            if (v && n_images == MAX_ONE_OFF_IMAGES) return cli_usage_error("score", "at most %d --image", MAX_ONE_OFF_IMAGES);
            if (v) images[n_images++] = v;
            continue;
        }
        return cli_usage_error("score", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    if (!mo.model_dir) return cli_usage_error("score", "--model DIR is required");
    bool one_off = question || n_answers || n_images;
    if (one_off && (!question || !n_answers))
        return cli_usage_error("score", "the one-off form needs both --question and --answer");
    if (one_off && (bo.input || bo.output || bo.resume || bo.overwrite))
        return cli_usage_error("score", "the one-off form (--question/--answer) prints its score: --input, "
                               "--output, --resume and --overwrite belong to the JSON Lines form");

    if (!mo.threads) mo.threads = cli_farm_default_threads(); /* under mpirun: this rank's CPUs */
    bo.threads = mo.threads;
    vlr_model *m = cli_load_model(&mo, "score");
    if (!m) return EXIT_USAGE;
    score_ctx ctx = {0};
    int status = EXIT_USAGE;
    char *base = cli_input_dir(bo.input);
    ctx.base_dir = base;
    if (vlr_session_init(m, &ctx.session) != VLR_OK) {
        fprintf(stderr, "vlreward score: out of memory\n");
        goto done;
    }
    if (!(ctx.cache = cli_cache_new(m, cache_mb, prefix_mb, "score"))) goto done;
    vlr_session_set_cache(ctx.session, ctx.cache);
    if (trace_path && !(ctx.trace_file = fopen(trace_path, "wb"))) {
        fprintf(stderr, "vlreward score: %s: cannot create\n", trace_path);
        goto done;
    }
    if (one_off) {
        /* one line per --answer, in order. The answers share the prompt: they run as one batch of
         * suffixes after it (vlr_score_batch), each score bit for bit that of the answer alone; with
         * --trace each runs as a request of its own, for its trace line */
        vlr_content_item items[MAX_ONE_OFF_IMAGES + 1];
        memset(items, 0, sizeof items);
        for (int i = 0; i < n_images; i++) {
            items[i].kind = VLR_ITEM_IMAGE;
            items[i].image = images[i];
        }
        items[n_images] = (vlr_content_item){.kind = VLR_ITEM_TEXT, .text = question, .text_len = strlen(question)};
        size_t n = (size_t)n_answers;
        vlr_content_item *answer = calloc(n, sizeof *answer);
        vlr_message *msgs = calloc(2 * n, sizeof *msgs);
        vlr_request *reqs = calloc(n, sizeof *reqs);
        vlr_batch_result *results = calloc(n, sizeof *results);
        vlr_buf id = {0}, line = {0};
        vlr_buf_puts(&id, "\"one-off\"");
        if (!answer || !msgs || !reqs || !results) {
            fprintf(stderr, "vlreward score: out of memory\n");
            n = 0;
        }
        for (size_t i = 0; i < n; i++) {
            answer[i] = (vlr_content_item){.kind = VLR_ITEM_TEXT, .text = answers[i], .text_len = strlen(answers[i])};
            msgs[2 * i] = (vlr_message){"user", items, (size_t)n_images + 1};
            msgs[2 * i + 1] = (vlr_message){"assistant", &answer[i], 1};
            reqs[i] = (vlr_request){&msgs[2 * i], 2, NULL};
        }
        if (!ctx.trace_file) {
            vlr_score_batch(ctx.session, reqs, n, results);
        } else {
            for (size_t i = 0; i < n && (i == 0 || results[i - 1].status == VLR_OK); i++) {
                results[i].status = score_one(&ctx, &reqs[i], &id, &results[i].score);
                snprintf(results[i].message, sizeof results[i].message, "%s", vlr_session_errmsg(ctx.session));
            }
        }
        status = n ? EXIT_OK : EXIT_INPUT;
        for (size_t i = 0; i < n && status == EXIT_OK; i++) { /* up to the first failure, as one by one */
            if (results[i].status == VLR_OK) {
                line.len = 0;
                vlr_buf_json_double(&line, results[i].score);
                printf("%s\n", line.data);
            } else {
                if (n > 1) fprintf(stderr, "vlreward score: --answer %zu: %s\n", i + 1, results[i].message);
                else fprintf(stderr, "vlreward score: %s\n", results[i].message);
                status = EXIT_INPUT;
            }
        }
        free(answer);
        free(msgs);
        free(reqs);
        free(results);
        vlr_buf_free(&id);
        vlr_buf_free(&line);
    } else {
        cli_batch_stats st;
        int run = cli_batch_run(&bo, score_line, &ctx, &st);
        if (run >= 0 && !st.worker) {
            char extra[256];
            cli_cache_summary(ctx.cache, st.counters, extra, sizeof extra);
            cli_batch_print_summary(&bo, &st, m, extra);
        }
        /* under mpirun, rank 0 answers for the job */
        status = run < 0 ? EXIT_USAGE : (run == 0 && st.errors == 0) || st.worker ? EXIT_OK : EXIT_INPUT;
    }
done:
    if (ctx.trace_file) fclose(ctx.trace_file);
    vlr_session_free(ctx.session);
    vlr_cache_free(ctx.cache);
    vlr_model_free(m);
    free(base);
    return status;
}
