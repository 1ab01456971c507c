/* cmd_tokenize.c: `vlreward tokenize`: each input line {"text": ...} gets "ids" added; with --decode
 * each {"ids": [...]} gets "text" added. Other fields are kept as they were. */
#include <stdlib.h>

#include "batch.h"

static const char help[] =
    "usage: vlreward tokenize --model DIR [--input FILE|-] [--output FILE|-] [--decode [--skip-special]]\n"
    "\n"
    "JSON Lines in, JSON Lines out, one line out per line in, same order.\n"
    "  encode (default): each line is an object with a \"text\" string; \"ids\" is added\n"
    "  --decode:         each line has \"ids\" (a list of token ids); \"text\" is added\n"
    "  --skip-special    with --decode, drop special tokens (skip_special_tokens=True)\n"
    "A line that cannot be processed becomes {\"id\": ..., \"error\": ...}; the exit status is then 1.\n";

typedef struct tok_ctx {
    vlr_model *model;
    vlr_tok_cache *cache;
    bool decode, skip_special;
} tok_ctx;

/* Copies the object's text without its closing brace, so a field can be appended. */
static void open_object(vlr_buf *out, const char *line, size_t len) {
    size_t end = len;
    while (end && line[end - 1] != '}') end--;
    size_t body = end - 1; /* index of '}' */
    size_t k = body;
    while (k && (line[k - 1] == ' ' || line[k - 1] == '\t' || line[k - 1] == '\n' || line[k - 1] == '\r')) k--;
    vlr_buf_append(out, line, k);
    if (k && line[k - 1] != '{') vlr_buf_puts(out, ", ");
}

static bool tokenize_line(const cli_batch_line *line, void *vctx, vlr_buf *out, uint64_t *tokens) {
    tok_ctx *ctx = vctx;
    const vlr_buf *id = line->id_json;
    const vlr_json *root = line->root;
    vlr_err e = {0};
    bool ok = false;
    vlr_ids ids = {0};
    vlr_buf text = {0};
    if (!vlr_json_is(root, VLR_JSON_OBJECT)) {
        cli_error_line(out, id, "expected a JSON object");
        goto done;
    }
    if (!ctx->decode) {
        const vlr_json *t = vlr_json_get(root, "text");
        if (!vlr_json_is(t, VLR_JSON_STRING)) {
            cli_error_line(out, id, "\"text\": expected a string");
            goto done;
        }
        if (vlr_tok_encode(vlr_model_tokenizer(ctx->model), ctx->cache, t->str, t->len, &ids, &e)) {
            cli_error_line(out, id, e.msg);
            goto done;
        }
        open_object(out, line->text, line->len);
        vlr_buf_puts(out, "\"ids\": [");
        for (size_t i = 0; i < ids.len; i++) vlr_buf_printf(out, "%s%d", i ? ", " : "", (int)ids.data[i]);
        vlr_buf_puts(out, "]}");
        *tokens += ids.len;
    } else {
        const vlr_json *arr = vlr_json_get(root, "ids");
        if (!vlr_json_is(arr, VLR_JSON_ARRAY)) {
            cli_error_line(out, id, "\"ids\": expected a list of token ids");
            goto done;
        }
        for (size_t i = 0; i < arr->len; i++) {
            int64_t v;
            if (!vlr_json_int(&arr->items[i], &v) || v < 0 || (size_t)v >= vlr_tok_vocab_size(vlr_model_tokenizer(ctx->model))) {
                char msg[96];
                snprintf(msg, sizeof msg, "ids[%zu]: not a token id of this tokenizer", i);
                cli_error_line(out, id, msg);
                goto done;
            }
            vlr_ids_push(&ids, (int32_t)v);
        }
        if (vlr_tok_decode(vlr_model_tokenizer(ctx->model), ids.data, ids.len, ctx->skip_special, &text, &e)) {
            cli_error_line(out, id, e.msg);
            goto done;
        }
        open_object(out, line->text, line->len);
        vlr_buf_puts(out, "\"text\": ");
        vlr_buf_json_string(out, text.data ? text.data : "", text.len);
        vlr_buf_puts(out, "}");
    }
    ok = true;
done:
    vlr_buf_free(&text);
    free(ids.data);
    return ok;
}

int cmd_tokenize(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "tokenize"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *input = NULL, *output = NULL, *unused;
    bool bad = false;
    tok_ctx ctx = {0};
    while (a.i < argc && !bad) {
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_opt(&a, "--input", true, &input, &bad)) continue;
        if (cli_opt(&a, "--output", true, &output, &bad)) continue;
        if (cli_opt(&a, "--decode", false, &unused, &bad)) { ctx.decode = true; continue; }
        if (cli_opt(&a, "--skip-special", false, &unused, &bad)) { ctx.skip_special = true; continue; }
        return cli_usage_error("tokenize", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    if (!mo.model_dir) return cli_usage_error("tokenize", "--model DIR is required");
    ctx.model = cli_load_model(&mo, "tokenize");
    if (!ctx.model) return EXIT_INPUT;
    ctx.cache = vlr_tok_cache_new(1 << 16);
    cli_batch_opts bo = {.cmd = "tokenize", .input = input, .output = output, .overwrite = true, .quiet = true};
    cli_batch_stats st;
    int run = cli_batch_run(&bo, tokenize_line, &ctx, &st);
    vlr_tok_cache_free(ctx.cache);
    vlr_model_free(ctx.model);
    return run == 0 && st.errors == 0 ? EXIT_OK : EXIT_INPUT;
}
