/* cli.c: option scanning, model loading and the JSON Lines loop shared by the subcommands. */
#include "cli.h"
#include "hub.h"

#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>

bool cli_opt(cli_args *a, const char *name, bool takes_value, const char **value, bool *bad) {
    const char *arg = a->argv[a->i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return false;
    if (arg[n] == '\0') {
        if (!takes_value) {
            a->i++;
            return true;
        }
        if (a->i + 1 >= a->argc) {
            cli_usage_error(a->cmd, "%s needs a value", name);
            *bad = true;
            a->i++;
            return true;
        }
        *value = a->argv[a->i + 1];
        a->i += 2;
        return true;
    }
    if (arg[n] == '=' && takes_value) {
        *value = arg + n + 1;
        a->i++;
        return true;
    }
    return false;
}

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "vlreward %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see vlreward %s --help)\n", cmd);
    return EXIT_USAGE;
}

bool cli_is_help(const char *arg) { return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0; }

int cli_print_help(const char *help) {
    fputs(help, stdout);
    return EXIT_OK;
}

bool cli_parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

bool cli_model_opt(cli_args *a, cli_model_opts *o, bool *bad) {
    const char *v = NULL;
    long n;
    if (cli_opt(a, "--model", true, &o->model_dir, bad)) return true;
    if (cli_opt(a, "--threads", true, &v, bad)) {
        if (v && !cli_parse_int(v, 0, 1024, &n)) *bad = cli_usage_error(a->cmd, "--threads: expected 0..1024, got '%s'", v);
        else if (v) o->threads = (int)n;
        return true;
    }
    if (cli_opt(a, "--max-tokens", true, &v, bad)) {
        if (v && !cli_parse_int(v, 1, 1L << 30, &n)) *bad = cli_usage_error(a->cmd, "--max-tokens: expected a positive integer, got '%s'", v);
        else if (v) o->max_tokens = (int)n;
        return true;
    }
    if (cli_opt(a, "--precision", true, &v, bad)) {
        if (v && !cli_parse_precision(a->cmd, v, &o->precision)) *bad = true;
        return true;
    }
    if (cli_opt(a, "--int8-cache", false, &v, bad)) {
        o->int8_cache = true;
        return true;
    }
    return false;
}

bool cli_parse_precision(const char *cmd, const char *v, vlr_precision *out) {
    if (vlr_precision_parse(v, out)) return true;
    cli_usage_error(cmd, "--precision: expected auto, f32, bf16 or int8, got '%s'", v);
    return false;
}

vlr_model *cli_load_model(const cli_model_opts *o, const char *cmd) {
    vlr_params p = vlr_default_params();
    p.n_threads = o->threads;
    p.max_tokens = o->max_tokens;
    p.precision = o->precision;
    p.int8_cache = o->int8_cache;
    p.max_image_pixels = o->max_image_pixels;
    char err[VLR_ERR_MSG_CAP];
    vlr_model *m = NULL;
    char *dir = NULL;
    vlr_err he;
    if (hub_model_dir(o->model_dir, &dir, &he) != VLR_OK) {
        fprintf(stderr, "vlreward %s: cannot load model %s: %s\n", cmd, o->model_dir, he.msg);
        return NULL;
    }
    vlr_status rc = vlr_model_load(dir, &p, &m, err, sizeof err);
    free(dir);
    if (rc != VLR_OK) {
        fprintf(stderr, "vlreward %s: cannot load model %s: %s\n", cmd, o->model_dir, err);
        return NULL;
    }
    vlr_model_info info;
    vlr_model_get_info(m, &info);
    if (vlr_model_template_warning(m)[0]) fprintf(stderr, "vlreward %s: %s\n", cmd, vlr_model_template_warning(m));
    if (info.int8_cache) fprintf(stderr, "vlreward %s: %s\n", cmd, info.int8_cache);
    return m;
}

char *cli_input_dir(const char *input) {
    if (!input || strcmp(input, "-") == 0) return strdup(".");
    char *copy = strdup(input);
    if (!copy) return NULL;
    char *dir = strdup(dirname(copy));
    free(copy);
    return dir;
}

void cli_error_line(vlr_buf *out, const vlr_buf *id_json, const char *msg) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    cli_jw_id(&w, id_json);
    vlr_jw_key_str(&w, "error", msg);
    vlr_jw_end(&w);
}

void cli_error_object(vlr_buf *out, const char *msg) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    vlr_jw_key_str(&w, "error", msg);
    vlr_jw_end(&w);
}

void cli_result_line(vlr_buf *out, const char *id_json, size_t id_len, const double *scores, size_t n, bool group) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    vlr_jw_key(&w, "id");
    vlr_jw_raw(&w, id_json, id_len);
    if (!group) {
        vlr_jw_key_double(&w, "score", scores[0]);
    } else {
        size_t best = 0;
        vlr_jw_key(&w, "scores");
        vlr_jw_array(&w);
        for (size_t i = 0; i < n; i++) {
            vlr_jw_double(&w, scores[i]);
            if (scores[i] > scores[best]) best = i;
        }
        vlr_jw_end(&w);
        vlr_jw_key_uint(&w, "best", best);
    }
    vlr_jw_end(&w);
}

void cli_jw_id(vlr_jw *w, const vlr_buf *id_json) {
    vlr_jw_key(w, "id");
    if (id_json && id_json->len) vlr_jw_raw(w, id_json->data, id_json->len);
    else vlr_jw_null(w);
}

bool cli_is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n') return false;
    return true;
}

static void key_ints(vlr_jw *w, const char *key, const int *v, int n) {
    vlr_jw_key(w, key);
    vlr_jw_array(w);
    for (int i = 0; i < n; i++) vlr_jw_int(w, v[i]);
    vlr_jw_end(w);
}

void cli_info_json(const vlr_model *m, const char *version, vlr_buf *b) {
    vlr_model_info in;
    vlr_model_get_info(m, &in);
    vlr_jw w;
    vlr_jw_init(&w, b, 0);
    vlr_jw_object(&w);
    vlr_jw_key(&w, "text");
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "hidden_size", in.text_hidden_size);
    vlr_jw_key_int(&w, "intermediate_size", in.text_intermediate_size);
    vlr_jw_key_int(&w, "num_hidden_layers", in.text_layers);
    vlr_jw_key_int(&w, "num_attention_heads", in.text_heads);
    vlr_jw_key_int(&w, "num_key_value_heads", in.text_kv_heads);
    vlr_jw_key_int(&w, "head_dim", in.text_head_dim);
    vlr_jw_key_int(&w, "vocab_size", in.vocab_size);
    vlr_jw_key_double(&w, "rms_norm_eps", in.rms_norm_eps);
    vlr_jw_key_double(&w, "rope_theta", in.rope_theta);
    key_ints(&w, "mrope_section", in.mrope_section, 3);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "vision");
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "depth", in.vision_depth);
    vlr_jw_key_int(&w, "hidden_size", in.vision_hidden_size);
    vlr_jw_key_int(&w, "num_heads", in.vision_heads);
    vlr_jw_key_int(&w, "intermediate_size", in.vision_intermediate_size);
    vlr_jw_key_int(&w, "out_hidden_size", in.vision_out_hidden_size);
    vlr_jw_key_int(&w, "patch_size", in.patch_size);
    vlr_jw_key_int(&w, "spatial_merge_size", in.spatial_merge_size);
    vlr_jw_key_int(&w, "temporal_patch_size", in.temporal_patch_size);
    vlr_jw_key_int(&w, "window_size", in.window_size);
    key_ints(&w, "fullatt_block_indexes", in.fullatt_block_indexes, in.n_fullatt_block_indexes);
    vlr_jw_end(&w);
    vlr_jw_key_uint(&w, "parameters", in.parameters);
    vlr_jw_key_uint(&w, "bytes", in.bytes);
    vlr_jw_key_str(&w, "dtype", in.dtype);
    vlr_jw_key_str(&w, "precision", in.precision);
    vlr_jw_key_str(&w, "precision_reason", in.precision_reason);
    vlr_jw_key_str(&w, "kernels", in.kernels);
    vlr_jw_key_str(&w, "float_precision", in.float_precision);
    if (in.int8_layers) {
        vlr_jw_key_str(&w, "int8_layers", in.int8_layers);
        vlr_jw_key_uint(&w, "int8_bytes", in.int8_bytes);
    }
    if (version) vlr_jw_key_str(&w, "version", version);
    vlr_jw_end(&w);
}
