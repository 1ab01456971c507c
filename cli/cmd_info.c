/* cmd_info.c: `vlreward info --model DIR [--json]`: the architecture summary of a model directory. */
#include "cli.h"

static const char help[] =
    "usage: vlreward info --model DIR [--json]\n"
    "\n"
    "Loads DIR (config.json, safetensors weights, value head, tokenizer) and prints its architecture.\n"
    "  --model DIR   model directory (Hugging Face layout), or ORG/NAME[@REV] from the Hugging Face\n"
    "                cache (see vlreward pull)\n"
    "  --json        print one JSON object instead of text\n"
    "  --precision P auto (default), f32, bf16 or int8: shows which precision and kernels would run\n"
    "  --int8-cache  int8: read (or make and write) DIR/vlreward-int8.bin, as score --int8-cache does\n";

int cmd_info(int argc, char **argv) {
    cli_args a = {argc, 1, argv, "info"};
    cli_model_opts mo = CLI_MODEL_OPTS_INIT;
    bool json = false, bad = false;
    const char *unused;
    while (a.i < argc && !bad) {
        if (cli_is_help(argv[a.i])) return cli_print_help(help);
        if (cli_model_opt(&a, &mo, &bad)) continue;
        if (cli_opt(&a, "--json", false, &unused, &bad)) {
            json = true;
            continue;
        }
        return cli_usage_error("info", "unknown option '%s'", argv[a.i]);
    }
    if (bad) return EXIT_USAGE;
    if (!mo.model_dir) return cli_usage_error("info", "--model DIR is required");
    vlr_model *m = cli_load_model(&mo, "info");
    if (!m) return EXIT_INPUT;
    vlr_model_info in;
    vlr_model_get_info(m, &in);
    vlr_buf b = {0};
    if (json) {
        cli_info_json(m, NULL, &b);
        vlr_buf_puts(&b, "\n");
    } else {
        vlr_buf_printf(&b, "model      %s (%s config, %d shard%s, %s weights)\n", mo.model_dir,
                       in.config_layout, in.n_shards, in.n_shards == 1 ? "" : "s", in.dtype);
        vlr_buf_printf(&b, "compute    precision %s (%s), kernels %s\n", in.precision, in.precision_reason, in.kernels);
        if (in.int8_layers)
            vlr_buf_printf(&b, "           %s (%s); int8 weights %.1f MB\n", in.int8_layers, in.float_precision,
                           (double)in.int8_bytes / 1e6);
        vlr_buf_printf(&b, "text       %d layers, hidden %d, intermediate %d, %d heads / %d kv heads x %d, "
                           "vocab %d, context %d\n",
                       in.text_layers, in.text_hidden_size, in.text_intermediate_size, in.text_heads,
                       in.text_kv_heads, in.text_head_dim, in.vocab_size, in.max_position_embeddings);
        vlr_buf_printf(&b, "           rms_norm_eps %g, rope_theta %g, mrope_section [%d, %d, %d]\n",
                       in.rms_norm_eps, in.rope_theta, in.mrope_section[0], in.mrope_section[1], in.mrope_section[2]);
        vlr_buf_printf(&b, "vision     %d blocks, hidden %d, %d heads, intermediate %d, out %d, patch %d, "
                           "merge %d, temporal %d, window %d px, full attention in blocks ",
                       in.vision_depth, in.vision_hidden_size, in.vision_heads, in.vision_intermediate_size,
                       in.vision_out_hidden_size, in.patch_size, in.spatial_merge_size,
                       in.temporal_patch_size, in.window_size);
        vlr_buf_puts(&b, "[");
        for (int i = 0; i < in.n_fullatt_block_indexes; i++)
            vlr_buf_printf(&b, "%s%d", i ? ", " : "", in.fullatt_block_indexes[i]);
        vlr_buf_printf(&b, "]\nparameters %llu (%.1f MB, lm_head not loaded)\n", (unsigned long long)in.parameters,
                       (double)in.bytes / 1e6);
    }
    fwrite(b.data, 1, b.len, stdout);
    vlr_buf_free(&b);
    vlr_model_free(m);
    return EXIT_OK;
}
