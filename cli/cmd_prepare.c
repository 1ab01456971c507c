/* cmd_prepare.c: `vlreward prepare`: the model inputs of each request, with the field names of
 * tests/reference/expected.jsonl (prompt, input_ids, seq_len, image_grid_thw, images, pixel_values,
 * position_ids, rope_delta), to check the front end against a reference pipeline. */
#include <errno.h>
#include <stdlib.h>

#include "batch.h"

static const char help[] =
    "usage: vlreward prepare --model DIR [--input FILE|-] [--output FILE|-] [--dump-pixels DIR]\n"
    "\n"
    "For each request line (the input format of `vlreward score`) prints one JSON object:\n"
    "  id, prompt, input_ids, seq_len, image_grid_thw, images [{resized_hw, file_format, file_mode,\n"
    "  file_size_wh}], pixel_values {shape, dtype, sum, sum_sq, first8} (float64 sums of the float32\n"
    "  values; null without images), position_ids (3 x seq_len), rope_delta.\n"
    "  --dump-pixels DIR  also write DIR/<id>.pixel_values.f32 (raw little-endian float32, row-major)\n"
    "Relative image paths resolve against the input file's folder (the current folder for stdin).\n";

typedef struct prep_ctx {
    vlr_session *session;
    const char *base_dir;
    const char *dump_dir;
} prep_ctx;

static void ints_json(vlr_buf *b, const int32_t *v, size_t n) {
    vlr_buf_puts(b, "[");
    for (size_t i = 0; i < n; i++) vlr_buf_printf(b, "%s%d", i ? ", " : "", (int)v[i]);
    vlr_buf_puts(b, "]");
}

static bool dump_pixels(const prep_ctx *ctx, const vlr_buf *id_json, const vlr_prepared *p, vlr_buf *err) {
    /* The file name is the id without JSON quotes; ids with '/' are refused rather than followed. */
    vlr_buf name = {0};
    const char *id = id_json->data;
    size_t n = id_json->len;
    if (n >= 2 && id[0] == '"') { id++; n -= 2; }
    for (size_t i = 0; i < n; i++)
        if (id[i] == '/' || id[i] == '\\' || (unsigned char)id[i] < 0x20) {
            vlr_buf_puts(err, "--dump-pixels: the id cannot be used as a file name");
            return false;
        }
    vlr_buf_puts(&name, ctx->dump_dir);
    vlr_buf_puts(&name, "/");
    vlr_buf_append(&name, id, n);
    vlr_buf_puts(&name, ".pixel_values.f32");
    FILE *f = fopen(name.data, "wb");
    bool ok = f != NULL;
    for (size_t i = 0; ok && i < p->n_images; i++) {
        const vlr_prepared_image *img = &p->images[i];
        size_t count = img->n_patches * img->patch_dim;
        ok = fwrite(img->pixel_values, sizeof(float), count, f) == count;
    }
    if (f && fclose(f) != 0) ok = false;
    if (!ok) vlr_buf_printf(err, "--dump-pixels: cannot write %s: %s", name.data, strerror(errno));
    vlr_buf_free(&name);
    return ok;
}

static bool prepare_line(const cli_batch_line *line, void *vctx, vlr_buf *out, uint64_t *tokens) {
    prep_ctx *ctx = vctx;
    vlr_parsed_request req;
    vlr_prepared p;
    vlr_err e = {0};
    memset(&p, 0, sizeof p);
    memset(&req, 0, sizeof req);
    bool ok = false;
    if (vlr_request_from_json(line->root, line->line_no, ctx->base_dir, &req, &e)) {
        cli_error_line(out, &req.id_json, e.msg);
        goto done;
    }
    if (vlr_prepare(ctx->session, &req.req, &p)) {
        cli_error_line(out, &req.id_json, vlr_session_errmsg(ctx->session));
        goto done;
    }
    if (ctx->dump_dir && p.n_images) {
        vlr_buf msg = {0};
        bool dumped = dump_pixels(ctx, &req.id_json, &p, &msg);
        if (!dumped) cli_error_line(out, &req.id_json, msg.data);
        vlr_buf_free(&msg);
        if (!dumped) goto done;
    }
    size_t n = p.ids.len;
    *tokens += n;
    vlr_buf_puts(out, "{\"id\": ");
    vlr_buf_append(out, req.id_json.data, req.id_json.len);
    vlr_buf_puts(out, ", \"prompt\": ");
    vlr_buf_json_string(out, p.prompt.data, p.prompt.len);
    vlr_buf_puts(out, ", \"input_ids\": ");
    ints_json(out, p.ids.data, n);
    vlr_buf_printf(out, ", \"seq_len\": %zu, \"image_grid_thw\": [", n);
    size_t rows = 0, dim = 0;
    for (size_t i = 0; i < p.n_images; i++) {
        const vlr_prepared_image *img = &p.images[i];
        vlr_buf_printf(out, "%s[%d, %d, %d]", i ? ", " : "", img->grid_t, img->grid_h, img->grid_w);
        rows += img->n_patches;
        dim = img->patch_dim;
    }
    vlr_buf_puts(out, "], \"images\": [");
    for (size_t i = 0; i < p.n_images; i++) {
        const vlr_prepared_image *img = &p.images[i];
        vlr_buf_printf(out, "%s{\"file_format\": \"%s\", \"file_mode\": \"%s\", \"file_size_wh\": [%d, %d], "
                            "\"resized_hw\": [%d, %d]}",
                       i ? ", " : "", img->file.format, img->file.mode, img->file.width, img->file.height,
                       img->resized_h, img->resized_w);
    }
    vlr_buf_puts(out, "], \"pixel_values\": ");
    if (p.n_images == 0) {
        vlr_buf_puts(out, "null");
    } else {
        double sum = 0, sum_sq = 0;
        for (size_t i = 0; i < p.n_images; i++) {
            const vlr_prepared_image *img = &p.images[i];
            size_t count = img->n_patches * img->patch_dim;
            for (size_t k = 0; k < count; k++) {
                double v = img->pixel_values[k];
                sum += v;
                sum_sq += v * v;
            }
        }
        vlr_buf_printf(out, "{\"shape\": [%zu, %zu], \"dtype\": \"float32\", \"sum\": ", rows, dim);
        vlr_buf_json_double(out, sum);
        vlr_buf_puts(out, ", \"sum_sq\": ");
        vlr_buf_json_double(out, sum_sq);
        vlr_buf_puts(out, ", \"first8\": [");
        const vlr_prepared_image *first = &p.images[0];
        for (size_t k = 0; k < 8 && k < first->n_patches * first->patch_dim; k++) {
            if (k) vlr_buf_puts(out, ", ");
            vlr_buf_json_double(out, first->pixel_values[k]);
        }
        vlr_buf_puts(out, "]}");
    }
    vlr_buf_puts(out, ", \"position_ids\": [");
    for (int c = 0; c < 3; c++) {
        if (c) vlr_buf_puts(out, ", ");
        ints_json(out, p.positions + (size_t)c * n, n);
    }
    vlr_buf_printf(out, "], \"rope_delta\": %d}", p.rope_delta);
    ok = true;
done:
    vlr_prepared_free(&p);
    vlr_parsed_request_free(&req);
    return ok;
}

int cmd_prepare(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "prepare"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    const char *input = NULL, *output = NULL;
    bool bad = false;
    prep_ctx ctx = {0};
    while (a.i < argc && !bad) {
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_opt(&a, "--input", true, &input, &bad)) continue;
        if (cli_opt(&a, "--output", true, &output, &bad)) continue;
        if (cli_opt(&a, "--dump-pixels", true, &ctx.dump_dir, &bad)) continue;
        return cli_usage_error("prepare", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    if (!mo.model_dir) return cli_usage_error("prepare", "--model DIR is required");
    vlr_model *m = cli_load_model(&mo, "prepare");
    if (!m) return EXIT_INPUT;
    char *base = cli_input_dir(input);
    ctx.base_dir = base;
    cli_batch_opts bo = {.cmd = "prepare", .input = input, .output = output, .overwrite = true, .quiet = true};
    cli_batch_stats st = {0};
    int run = -1;
    if (vlr_session_init(m, &ctx.session) == VLR_OK)
        run = cli_batch_run(&bo, prepare_line, &ctx, &st);
    else
        fprintf(stderr, "vlreward prepare: out of memory\n");
    vlr_session_free(ctx.session);
    vlr_model_free(m);
    free(base);
    return run == 0 && st.errors == 0 ? EXIT_OK : EXIT_INPUT;
}
