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

static void ints_json(vlr_jw *w, const int32_t *v, size_t n) {
    vlr_jw_array(w);
    for (size_t i = 0; i < n; i++) vlr_jw_int(w, v[i]);
    vlr_jw_end(w);
}

static void pair_json(vlr_jw *w, const char *key, int a, int b) {
    vlr_jw_key(w, key);
    vlr_jw_array(w);
    vlr_jw_int(w, a);
    vlr_jw_int(w, b);
    vlr_jw_end(w);
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
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    cli_jw_id(&w, &req.id_json);
    vlr_jw_key(&w, "prompt");
    vlr_jw_strn(&w, p.prompt.data, p.prompt.len);
    vlr_jw_key(&w, "input_ids");
    ints_json(&w, p.ids.data, n);
    vlr_jw_key_uint(&w, "seq_len", n);
    vlr_jw_key(&w, "image_grid_thw");
    vlr_jw_array(&w);
    size_t rows = 0, dim = 0;
    for (size_t i = 0; i < p.n_images; i++) {
        const vlr_prepared_image *img = &p.images[i];
        const int32_t grid[3] = {img->grid_t, img->grid_h, img->grid_w};
        ints_json(&w, grid, 3);
        rows += img->n_patches;
        dim = img->patch_dim;
    }
    vlr_jw_end(&w);
    vlr_jw_key(&w, "images");
    vlr_jw_array(&w);
    for (size_t i = 0; i < p.n_images; i++) {
        const vlr_prepared_image *img = &p.images[i];
        vlr_jw_object(&w);
        vlr_jw_key_str(&w, "file_format", img->file.format);
        vlr_jw_key_str(&w, "file_mode", img->file.mode);
        pair_json(&w, "file_size_wh", img->file.width, img->file.height);
        pair_json(&w, "resized_hw", img->resized_h, img->resized_w);
        vlr_jw_end(&w);
    }
    vlr_jw_end(&w);
    vlr_jw_key(&w, "pixel_values");
    if (p.n_images == 0) {
        vlr_jw_null(&w);
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
        vlr_jw_object(&w);
        vlr_jw_key(&w, "shape");
        vlr_jw_array(&w);
        vlr_jw_uint(&w, rows);
        vlr_jw_uint(&w, dim);
        vlr_jw_end(&w);
        vlr_jw_key_str(&w, "dtype", "float32");
        vlr_jw_key_double(&w, "sum", sum);
        vlr_jw_key_double(&w, "sum_sq", sum_sq);
        vlr_jw_key(&w, "first8");
        vlr_jw_array(&w);
        const vlr_prepared_image *first = &p.images[0];
        for (size_t k = 0; k < 8 && k < first->n_patches * first->patch_dim; k++) vlr_jw_double(&w, first->pixel_values[k]);
        vlr_jw_end(&w);
        vlr_jw_end(&w);
    }
    vlr_jw_key(&w, "position_ids");
    vlr_jw_array(&w);
    for (int c = 0; c < 3; c++) ints_json(&w, p.positions + (size_t)c * n, n);
    vlr_jw_end(&w);
    vlr_jw_key_int(&w, "rope_delta", p.rope_delta);
    vlr_jw_end(&w);
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
