/* config.c: reads config.json and preprocessor_config.json into vlr_config.
 *
 * config.json comes in two layouts. The flat one (Qwen2.5-VL-7B-Instruct as shipped, transformers
 * 4.4x) keeps the text model's fields at the top level next to `vision_config` and
 * `rope_scaling: {"type": "mrope", "mrope_section": [...]}`. The nested one (newer transformers)
 * moves them into `text_config` (rope included, sometimes as `rope_parameters`), keeps the special
 * token ids at the top level and may leave `null` copies of them inside `text_config`. We look a
 * text field up in text_config first and then at the top level, a token id the other way round, and
 * take the first non-null value; a message names the place where the value was expected.
 *
 * Defaults follow transformers' Qwen2_5_VLConfig / Qwen2_5_VLTextConfig / Qwen2_5_VLVisionConfig
 * for fields that do not define the network's size (rms_norm_eps 1e-5, rope_theta 1e6, patch 14,
 * merge 2, temporal patch 2, window 112, full-attention blocks [7, 15, 23, 31], token ids
 * 151655/151656/151652/151653). Sizes (hidden, intermediate, layers, heads, kv heads, vocab,
 * mrope_section, vision depth/hidden/heads/intermediate/out) have no sensible default: upstream's
 * are those of the 72B model, so a missing one is an error here. Every value is range-checked so
 * later size arithmetic cannot overflow.
 *
 * preprocessor_config.json follows Qwen2VLImageProcessor: `min_pixels`/`max_pixels` win over
 * `size: {shortest_edge, longest_edge}` (transformers' backward-compatibility rule); an absent file
 * gives the values Qwen2.5-VL ships (min 3136, max 12845056, CLIP mean/std, 1/255, 14, 2, 2).
 *
 * Not here: tensors (weights.c), tokenizer files. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

/* Caps for hostile or broken configs; far above any Qwen2.5-VL size (72B: hidden 8192, F 29568). */
#define CAP_HIDDEN (1 << 16)
#define CAP_INTERMEDIATE (1 << 20)
#define CAP_LAYERS 1024
#define CAP_HEADS 1024
#define CAP_HEAD_DIM 1024
#define CAP_VOCAB (1 << 24)
#define CAP_POSITIONS (1 << 30)
#define CAP_PATCH 1024
#define CAP_MERGE 64
#define CAP_TEMPORAL 64
#define CAP_WINDOW (1 << 20)
#define CAP_PIXELS ((int64_t)1 << 40)

#define CONFIG_MAX_BYTES ((size_t)16 << 20)

/* rope_theta, wherever it is written: an open interval, as opt_double / double_value take it */
#define ROPE_THETA_LO 1.0
#define ROPE_THETA_HI 1e30

/* Where a field is looked up. */
typedef enum scope { SCOPE_TEXT, SCOPE_TOKEN, SCOPE_VISION, SCOPE_ROOT } scope;

typedef struct cfg_reader {
    const char *file;          /* "config.json" or its path, for messages */
    const vlr_json *root;
    const vlr_json *text;      /* text_config (nested) or NULL */
    const vlr_json *vision;    /* vision_config */
    vlr_err *e;
} cfg_reader;

typedef struct found {
    const vlr_json *v; /* first non-null value, NULL when absent everywhere */
    char where[128];   /* its dotted path, or where it was expected */
} found;

static void set_where(found *f, const char *prefix, const char *key) {
    snprintf(f->where, sizeof f->where, "%s%s", prefix, key);
}

/* Looks key up in the places of its scope, in order, and keeps the first non-null value. */
static found lookup(const cfg_reader *r, scope s, const char *key) {
    const vlr_json *objs[2] = {NULL, NULL};
    const char *prefixes[2] = {"", ""};
    switch (s) {
    case SCOPE_TEXT:
        objs[0] = r->text ? r->text : r->root;
        prefixes[0] = r->text ? "text_config." : "";
        objs[1] = r->text ? r->root : NULL;
        break;
    case SCOPE_TOKEN:
        objs[0] = r->root;
        objs[1] = r->text;
        prefixes[1] = "text_config.";
        break;
    case SCOPE_VISION:
        objs[0] = r->vision;
        prefixes[0] = "vision_config.";
        break;
    case SCOPE_ROOT:
        objs[0] = r->root;
        break;
    }
    found f = {NULL, ""};
    set_where(&f, prefixes[0], key);
    for (int i = 0; i < 2; i++) {
        const vlr_json *v = vlr_json_get(objs[i], key);
        if (v && v->type != VLR_JSON_NULL) {
            f.v = v;
            set_where(&f, prefixes[i], key);
            break;
        }
    }
    return f;
}

static vlr_status missing(const cfg_reader *r, const found *f) {
    return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: missing", r->file, f->where);
}

/* Describes a wrong-typed value: "string", "number 1.5", "boolean"... */
static vlr_status wrong_type(const cfg_reader *r, const char *where, const char *expected,
                             const vlr_json *v) {
    if (v && v->type == VLR_JSON_NUMBER)
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: expected %s, found number %.*s", r->file,
                        where, expected, (int)(v->len > 40 ? 40 : v->len), v->str);
    return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: expected %s, found %s", r->file, where,
                    expected, vlr_json_type_name(v));
}

static vlr_status int_value(const cfg_reader *r, const char *where, const vlr_json *v, int64_t lo,
                            int64_t hi, int64_t *out) {
    int64_t i;
    if (!vlr_json_int(v, &i)) return wrong_type(r, where, "an integer", v);
    if (i < lo || i > hi)
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: %lld is out of range [%lld, %lld]", r->file,
                        where, (long long)i, (long long)lo, (long long)hi);
    *out = i;
    return VLR_OK;
}

/* Required integer in [lo, hi]. */
static vlr_status get_int(const cfg_reader *r, scope s, const char *key, int64_t lo, int64_t hi,
                          int *out) {
    found f = lookup(r, s, key);
    if (!f.v) return missing(r, &f);
    int64_t i;
    vlr_status rc = int_value(r, f.where, f.v, lo, hi, &i);
    if (rc == VLR_OK) *out = (int)i;
    return rc;
}

/* Optional integer in [lo, hi], def when absent or null. */
static vlr_status opt_int64(const cfg_reader *r, scope s, const char *key, int64_t lo, int64_t hi,
                            int64_t def, int64_t *out) {
    found f = lookup(r, s, key);
    if (!f.v) {
        *out = def;
        return VLR_OK;
    }
    return int_value(r, f.where, f.v, lo, hi, out);
}

static vlr_status opt_int(const cfg_reader *r, scope s, const char *key, int lo, int hi, int def,
                          int *out) {
    int64_t i;
    vlr_status rc = opt_int64(r, s, key, lo, hi, def, &i);
    if (rc == VLR_OK) *out = (int)i;
    return rc;
}

static vlr_status double_value(const cfg_reader *r, const char *where, const vlr_json *v, double lo,
                               double hi, double *out) {
    if (!vlr_json_is(v, VLR_JSON_NUMBER)) return wrong_type(r, where, "a number", v);
    if (!(v->number > lo && v->number < hi))
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: %g is out of range (%g, %g)", r->file, where,
                        v->number, lo, hi);
    *out = v->number;
    return VLR_OK;
}

/* Optional number in the open interval (lo, hi). */
static vlr_status opt_double(const cfg_reader *r, scope s, const char *key, double lo, double hi,
                             double def, double *out) {
    found f = lookup(r, s, key);
    if (!f.v) {
        *out = def;
        return VLR_OK;
    }
    return double_value(r, f.where, f.v, lo, hi, out);
}

static vlr_status opt_bool(const cfg_reader *r, scope s, const char *key, bool def, bool *out) {
    found f = lookup(r, s, key);
    if (!f.v) {
        *out = def;
        return VLR_OK;
    }
    if (f.v->type != VLR_JSON_TRUE && f.v->type != VLR_JSON_FALSE)
        return wrong_type(r, f.where, "a boolean", f.v);
    *out = f.v->type == VLR_JSON_TRUE;
    return VLR_OK;
}

/* A token id: an integer, or a list whose first element is used (eos_token_id may be a list). */
static vlr_status opt_token(const cfg_reader *r, const char *key, int32_t def, int32_t *out) {
    found f = lookup(r, SCOPE_TOKEN, key);
    if (!f.v) {
        *out = def;
        return VLR_OK;
    }
    const vlr_json *v = f.v;
    char where[160];
    snprintf(where, sizeof where, "%s", f.where);
    if (v->type == VLR_JSON_ARRAY) {
        if (v->len == 0)
            return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: empty list", r->file, f.where);
        v = &v->items[0];
        snprintf(where, sizeof where, "%s[0]", f.where);
    }
    int64_t i;
    vlr_status rc = int_value(r, where, v, 0, CAP_VOCAB - 1, &i);
    if (rc == VLR_OK) *out = (int32_t)i;
    return rc;
}

static vlr_status check(const cfg_reader *r, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static vlr_status check(const cfg_reader *r, bool ok, const char *fmt, ...) {
    if (ok) return VLR_OK;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: %s", r->file, msg);
}

#define TRY(expr)                 \
    do {                          \
        rc = (expr);              \
        if (rc != VLR_OK) goto done; \
    } while (0)

/* rope_scaling (or rope_parameters, transformers 5): type "mrope"/"default" and mrope_section. */
static vlr_status read_rope(const cfg_reader *r, vlr_text_config *t) {
    vlr_status rc = VLR_OK;
    found f = lookup(r, SCOPE_TEXT, "rope_scaling");
    if (!f.v) f = lookup(r, SCOPE_TEXT, "rope_parameters");
    if (!f.v) {
        f = lookup(r, SCOPE_TEXT, "rope_scaling"); /* name it as transformers 4.x writes it */
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s.mrope_section: missing", r->file, f.where);
    }
    if (f.v->type != VLR_JSON_OBJECT) return wrong_type(r, f.where, "an object", f.v);
    const char *type_keys[2] = {"type", "rope_type"};
    for (int k = 0; k < 2; k++) {
        const vlr_json *ty = vlr_json_get(f.v, type_keys[k]);
        if (!ty || ty->type == VLR_JSON_NULL) continue;
        if (ty->type != VLR_JSON_STRING) {
            char where[160];
            snprintf(where, sizeof where, "%s.%s", f.where, type_keys[k]);
            return wrong_type(r, where, "a string", ty);
        }
        /* transformers rewrites "mrope" to "default"; both mean plain rotary split into sections. */
        if (strcmp(ty->str, "mrope") != 0 && strcmp(ty->str, "default") != 0)
            return vlr_fail(r->e, VLR_ERR_UNSUPPORTED, "%s: field %s.%s: rope type \"%.40s\" is not supported "
                            "(only mrope)", r->file, f.where, type_keys[k], ty->str);
    }
    const vlr_json *sec = vlr_json_get(f.v, "mrope_section");
    char where[160];
    snprintf(where, sizeof where, "%s.mrope_section", f.where);
    if (!sec || sec->type == VLR_JSON_NULL)
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: missing", r->file, where);
    if (sec->type != VLR_JSON_ARRAY || sec->len != 3)
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: expected a list of 3 integers", r->file, where);
    for (int i = 0; i < 3; i++) {
        int64_t v;
        char w[176];
        snprintf(w, sizeof w, "%s[%d]", where, i);
        rc = int_value(r, w, &sec->items[i], 0, CAP_HEAD_DIM, &v);
        if (rc) return rc;
        t->mrope_section[i] = (int)v;
    }
    /* transformers 5 keeps rope_theta inside rope_parameters */
    const vlr_json *theta = vlr_json_get(f.v, "rope_theta");
    if (theta && theta->type != VLR_JSON_NULL && !lookup(r, SCOPE_TEXT, "rope_theta").v) {
        char w[176];
        snprintf(w, sizeof w, "%s.rope_theta", f.where);
        rc = double_value(r, w, theta, ROPE_THETA_LO, ROPE_THETA_HI, &t->rope_theta);
    }
    return rc;
}

static vlr_status read_text(const cfg_reader *r, vlr_text_config *t) {
    vlr_status rc = VLR_OK;
    TRY(get_int(r, SCOPE_TEXT, "hidden_size", 1, CAP_HIDDEN, &t->hidden_size));
    TRY(get_int(r, SCOPE_TEXT, "intermediate_size", 1, CAP_INTERMEDIATE, &t->intermediate_size));
    TRY(get_int(r, SCOPE_TEXT, "num_hidden_layers", 1, CAP_LAYERS, &t->num_layers));
    TRY(get_int(r, SCOPE_TEXT, "num_attention_heads", 1, CAP_HEADS, &t->num_heads));
    TRY(get_int(r, SCOPE_TEXT, "num_key_value_heads", 1, CAP_HEADS, &t->num_kv_heads));
    TRY(opt_int(r, SCOPE_TEXT, "head_dim", 1, CAP_HEAD_DIM, 0, &t->head_dim));
    TRY(get_int(r, SCOPE_TEXT, "vocab_size", 1, CAP_VOCAB, &t->vocab_size));
    TRY(opt_int(r, SCOPE_TEXT, "max_position_embeddings", 1, CAP_POSITIONS, 32768,
                &t->max_position_embeddings));
    TRY(opt_double(r, SCOPE_TEXT, "rms_norm_eps", 0.0, 1.0, 1e-5, &t->rms_norm_eps));
    TRY(opt_double(r, SCOPE_TEXT, "rope_theta", ROPE_THETA_LO, ROPE_THETA_HI, 1e6, &t->rope_theta));
    TRY(opt_bool(r, SCOPE_TEXT, "tie_word_embeddings", false, &t->tie_word_embeddings));
    TRY(read_rope(r, t));

    const char *px = r->text ? "text_config." : "";
    TRY(check(r, t->hidden_size % t->num_heads == 0,
              "%shidden_size %d is not divisible by %snum_attention_heads %d", px, t->hidden_size, px,
              t->num_heads));
    TRY(check(r, t->num_heads % t->num_kv_heads == 0,
              "%snum_attention_heads %d is not divisible by %snum_key_value_heads %d", px, t->num_heads,
              px, t->num_kv_heads));
    if (t->head_dim == 0) t->head_dim = t->hidden_size / t->num_heads;
    TRY(check(r, t->head_dim % 2 == 0, "text head_dim %d is odd (rotary needs pairs)", t->head_dim));
    int sum = t->mrope_section[0] + t->mrope_section[1] + t->mrope_section[2];
    TRY(check(r, sum * 2 == t->head_dim,
              "mrope_section [%d, %d, %d] sums to %d, but head_dim / 2 is %d", t->mrope_section[0],
              t->mrope_section[1], t->mrope_section[2], sum, t->head_dim / 2));
done:
    return rc;
}

static vlr_status read_vision(const cfg_reader *r, const vlr_text_config *t, vlr_vision_config *v) {
    vlr_status rc = VLR_OK;
    if (!r->vision) {
        found f = lookup(r, SCOPE_ROOT, "vision_config");
        if (f.v) return wrong_type(r, "vision_config", "an object", f.v);
        return missing(r, &f);
    }
    TRY(get_int(r, SCOPE_VISION, "depth", 1, CAP_LAYERS, &v->depth));
    TRY(get_int(r, SCOPE_VISION, "hidden_size", 1, CAP_HIDDEN, &v->hidden_size));
    TRY(get_int(r, SCOPE_VISION, "num_heads", 1, CAP_HEADS, &v->num_heads));
    TRY(get_int(r, SCOPE_VISION, "intermediate_size", 1, CAP_INTERMEDIATE, &v->intermediate_size));
    TRY(get_int(r, SCOPE_VISION, "out_hidden_size", 1, CAP_HIDDEN, &v->out_hidden_size));
    /* transformers calls it in_channels; configs written by Qwen's own code say in_chans */
    if (lookup(r, SCOPE_VISION, "in_channels").v)
        TRY(opt_int(r, SCOPE_VISION, "in_channels", 1, 16, 3, &v->in_channels));
    else
        TRY(opt_int(r, SCOPE_VISION, "in_chans", 1, 16, 3, &v->in_channels));
    TRY(opt_int(r, SCOPE_VISION, "patch_size", 1, CAP_PATCH, 14, &v->patch_size));
    TRY(opt_int(r, SCOPE_VISION, "spatial_merge_size", 1, CAP_MERGE, 2, &v->spatial_merge_size));
    TRY(opt_int(r, SCOPE_VISION, "temporal_patch_size", 1, CAP_TEMPORAL, 2, &v->temporal_patch_size));
    TRY(opt_int(r, SCOPE_VISION, "window_size", 1, CAP_WINDOW, 112, &v->window_size));

    found f = lookup(r, SCOPE_VISION, "fullatt_block_indexes");
    if (!f.v) {
        static const int upstream_default[4] = {7, 15, 23, 31};
        v->n_fullatt = 4;
        memcpy(v->fullatt_block_indexes, upstream_default, sizeof upstream_default);
    } else {
        if (f.v->type != VLR_JSON_ARRAY) return wrong_type(r, f.where, "a list of integers", f.v);
        TRY(check(r, f.v->len <= VLR_MAX_FULLATT, "field %s: %zu entries, more than %d", f.where,
                  f.v->len, VLR_MAX_FULLATT));
        for (size_t i = 0; i < f.v->len; i++) {
            char w[160];
            int64_t idx;
            snprintf(w, sizeof w, "%s[%zu]", f.where, i);
            TRY(int_value(r, w, &f.v->items[i], 0, v->depth - 1, &idx));
            for (size_t j = 0; j < i; j++)
                TRY(check(r, v->fullatt_block_indexes[j] != (int)idx, "field %s: block %lld listed twice",
                          f.where, (long long)idx));
            v->fullatt_block_indexes[i] = (int)idx;
        }
        v->n_fullatt = (int)f.v->len;
    }

    TRY(check(r, v->hidden_size % v->num_heads == 0,
              "vision_config.hidden_size %d is not divisible by vision_config.num_heads %d",
              v->hidden_size, v->num_heads));
    v->head_dim = v->hidden_size / v->num_heads;
    /* 2-D rotary: head_dim/2 frequencies split between rows and columns, each rotated in pairs */
    TRY(check(r, v->head_dim % 4 == 0, "vision head_dim %d is not a multiple of 4 (2-D rotary)",
              v->head_dim));
    TRY(check(r, v->in_channels == 3, "vision_config.in_channels %d: only RGB (3) is supported",
              v->in_channels));
    TRY(check(r, v->out_hidden_size == t->hidden_size,
              "vision_config.out_hidden_size %d differs from the text hidden_size %d",
              v->out_hidden_size, t->hidden_size));
    TRY(check(r, v->window_size >= v->patch_size * v->spatial_merge_size,
              "vision_config.window_size %d is smaller than one merged patch (%d px)", v->window_size,
              v->patch_size * v->spatial_merge_size));
done:
    return rc;
}

static vlr_status read_tokens(const cfg_reader *r, vlr_token_ids *k) {
    vlr_status rc = VLR_OK;
    TRY(opt_token(r, "image_token_id", 151655, &k->image_pad));
    TRY(opt_token(r, "video_token_id", 151656, &k->video_pad));
    TRY(opt_token(r, "vision_start_token_id", 151652, &k->vision_start));
    TRY(opt_token(r, "vision_end_token_id", 151653, &k->vision_end));
    /* not in Qwen2_5_VLConfig's defaults; -1 = unknown (the tokenizer config has it too) */
    TRY(opt_token(r, "eos_token_id", -1, &k->eos));
done:
    return rc;
}

static void preproc_defaults(vlr_preproc_config *p) {
    /* Qwen2.5-VL-7B-Instruct's preprocessor_config.json; mean/std are OPENAI_CLIP_MEAN/STD */
    p->min_pixels = 3136;
    p->max_pixels = 12845056;
    p->mean[0] = 0.48145466f, p->mean[1] = 0.4578275f, p->mean[2] = 0.40821073f;
    p->std[0] = 0.26862954f, p->std[1] = 0.26130258f, p->std[2] = 0.27577711f;
    p->rescale_factor = 1.0 / 255.0;
    p->patch_size = 14;
    p->merge_size = 2;
    p->temporal_patch_size = 2;
}

/* One channel of image_mean / image_std, as the float32 transformers normalises with. A std must be
 * a positive normal float32: a subnormal one (1e-40 passes "> 0" as a double) makes (x - mean) / std
 * overflow to inf and the score NaN. JSON cannot spell NaN and the range check refuses the
 * infinities (1e999 reads as inf), so every value kept is finite. */
static vlr_status channel_value(const cfg_reader *r, const char *where, const vlr_json *v, bool is_std,
                                float *out) {
    double d = 0.0;
    vlr_status rc = double_value(r, where, v, is_std ? 0.0 : -1e30, 1e30, &d);
    if (rc) return rc;
    float f = (float)d;
    if (!isfinite(f))
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: field %s: %g is not a finite float32", r->file, where, d);
    if (is_std && !(f >= FLT_MIN))
        return vlr_fail(r->e, VLR_ERR_CONFIG,
                        "%s: field %s: %g is too small: a standard deviation must be a positive normal "
                        "float32 (at least %g), or normalising overflows",
                        r->file, where, d, (double)FLT_MIN);
    *out = f; /* transformers normalises in float32 with these as float32 */
    return VLR_OK;
}

/* image_mean / image_std: a list of 3 numbers or one number for all channels. */
static vlr_status read_channels(const cfg_reader *r, const char *key, bool is_std, float out[3]) {
    found f = lookup(r, SCOPE_ROOT, key);
    if (!f.v) return VLR_OK;
    vlr_status rc;
    if (f.v->type == VLR_JSON_NUMBER) {
        float c;
        if ((rc = channel_value(r, f.where, f.v, is_std, &c))) return rc;
        out[0] = out[1] = out[2] = c;
        return VLR_OK;
    }
    if (f.v->type != VLR_JSON_ARRAY || f.v->len != 3) return wrong_type(r, f.where, "a list of 3 numbers", f.v);
    float c[3];
    for (int i = 0; i < 3; i++) {
        char w[160];
        snprintf(w, sizeof w, "%s[%d]", f.where, i);
        if ((rc = channel_value(r, w, &f.v->items[i], is_std, &c[i]))) return rc;
    }
    memcpy(out, c, sizeof c);
    return VLR_OK;
}

static vlr_status read_preproc(const cfg_reader *r, const vlr_vision_config *v, vlr_preproc_config *p) {
    vlr_status rc = VLR_OK;
    preproc_defaults(p);
    if (!r->root) return VLR_OK;
    if (r->root->type != VLR_JSON_OBJECT)
        return vlr_fail(r->e, VLR_ERR_CONFIG, "%s: expected an object, found %s", r->file,
                        vlr_json_type_name(r->root));
    /* size: {shortest_edge, longest_edge} first, then the older keys override it */
    found size = lookup(r, SCOPE_ROOT, "size");
    if (size.v) {
        if (size.v->type != VLR_JSON_OBJECT) return wrong_type(r, "size", "an object", size.v);
        const vlr_json *se = vlr_json_get(size.v, "shortest_edge");
        const vlr_json *le = vlr_json_get(size.v, "longest_edge");
        if (se && se->type != VLR_JSON_NULL)
            TRY(int_value(r, "size.shortest_edge", se, 1, CAP_PIXELS, &p->min_pixels));
        if (le && le->type != VLR_JSON_NULL)
            TRY(int_value(r, "size.longest_edge", le, 1, CAP_PIXELS, &p->max_pixels));
    }
    TRY(opt_int64(r, SCOPE_ROOT, "min_pixels", 1, CAP_PIXELS, p->min_pixels, &p->min_pixels));
    TRY(opt_int64(r, SCOPE_ROOT, "max_pixels", 1, CAP_PIXELS, p->max_pixels, &p->max_pixels));
    TRY(check(r, p->min_pixels <= p->max_pixels, "min_pixels %lld is larger than max_pixels %lld",
              (long long)p->min_pixels, (long long)p->max_pixels));
    TRY(read_channels(r, "image_mean", false, p->mean));
    TRY(read_channels(r, "image_std", true, p->std));
    TRY(opt_double(r, SCOPE_ROOT, "rescale_factor", 0.0, 1e30, p->rescale_factor, &p->rescale_factor));
    TRY(opt_int(r, SCOPE_ROOT, "patch_size", 1, CAP_PATCH, p->patch_size, &p->patch_size));
    TRY(opt_int(r, SCOPE_ROOT, "merge_size", 1, CAP_MERGE, p->merge_size, &p->merge_size));
    TRY(opt_int(r, SCOPE_ROOT, "temporal_patch_size", 1, CAP_TEMPORAL, p->temporal_patch_size,
                &p->temporal_patch_size));
    /* do_rescale / do_normalize false are the identity steps (x * 1, (x - 0) / 1), exact in float32 */
    bool flag;
    TRY(opt_bool(r, SCOPE_ROOT, "do_rescale", true, &flag));
    if (!flag) p->rescale_factor = 1.0;
    TRY(opt_bool(r, SCOPE_ROOT, "do_normalize", true, &flag));
    if (!flag) {
        for (int i = 0; i < 3; i++) p->mean[i] = 0.0f, p->std[i] = 1.0f;
    }

    /* the processor cuts the patches the vision tower embeds: both must agree */
    TRY(check(r, p->patch_size == v->patch_size, "patch_size %d differs from config.json's vision_config.patch_size %d",
              p->patch_size, v->patch_size));
    TRY(check(r, p->merge_size == v->spatial_merge_size,
              "merge_size %d differs from config.json's vision_config.spatial_merge_size %d", p->merge_size,
              v->spatial_merge_size));
    TRY(check(r, p->temporal_patch_size == v->temporal_patch_size,
              "temporal_patch_size %d differs from config.json's vision_config.temporal_patch_size %d",
              p->temporal_patch_size, v->temporal_patch_size));
done:
    return rc;
}

/* The whole config from parsed documents; preproc may be NULL (defaults). */
static vlr_status config_from_json(const vlr_json *config, const char *config_label,
                                   const vlr_json *preproc, const char *preproc_label, vlr_config *cfg,
                                   vlr_err *e) {
    vlr_status rc = VLR_OK;
    memset(cfg, 0, sizeof *cfg);
    cfg_reader r = {config_label, config, NULL, NULL, e};
    if (!vlr_json_is(config, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_CONFIG, "%s: expected a JSON object, found %s", config_label,
                        vlr_json_type_name(config));
    const vlr_json *tc = vlr_json_get(config, "text_config");
    if (tc && tc->type != VLR_JSON_NULL) {
        if (tc->type != VLR_JSON_OBJECT) return wrong_type(&r, "text_config", "an object", tc);
        r.text = tc;
        cfg->nested = true;
    }
    const vlr_json *vc = vlr_json_get(config, "vision_config");
    if (vlr_json_is(vc, VLR_JSON_OBJECT)) r.vision = vc;

    TRY(read_text(&r, &cfg->text));
    TRY(read_vision(&r, &cfg->text, &cfg->vision));
    TRY(read_tokens(&r, &cfg->tokens));
    cfg_reader pr = {preproc_label, preproc, NULL, NULL, e};
    TRY(read_preproc(&pr, &cfg->vision, &cfg->preproc));
done:
    return rc;
}

vlr_status vlr_config_parse(const char *config_json, size_t config_len, const char *preproc_json,
                            size_t preproc_len, vlr_config *cfg, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_json_doc *cdoc = NULL, *pdoc = NULL;
    memset(cfg, 0, sizeof *cfg);
    cdoc = vlr_json_parse(config_json, config_len, e);
    if (!cdoc) {
        vlr_err_prefix(e, "config.json: invalid JSON: ");
        rc = e ? e->code : VLR_ERR_FORMAT;
        goto done;
    }
    if (preproc_json) {
        pdoc = vlr_json_parse(preproc_json, preproc_len, e);
        if (!pdoc) {
            vlr_err_prefix(e, "preprocessor_config.json: invalid JSON: ");
            rc = e ? e->code : VLR_ERR_FORMAT;
            goto done;
        }
    }
    rc = config_from_json(vlr_json_root(cdoc), "config.json", pdoc ? vlr_json_root(pdoc) : NULL,
                          "preprocessor_config.json", cfg, e);
done:
    vlr_json_free(cdoc);
    vlr_json_free(pdoc);
    return rc;
}

vlr_status vlr_config_load(const char *model_dir, vlr_config *cfg, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_json_doc *cdoc = NULL, *pdoc = NULL;
    char *cpath = vlr_path_join(model_dir, "config.json");
    char *ppath = vlr_path_join(model_dir, "preprocessor_config.json");
    memset(cfg, 0, sizeof *cfg);
    if (!cpath || !ppath) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        goto done;
    }
    TRY(vlr_json_parse_file(cpath, CONFIG_MAX_BYTES, &cdoc, e));
    if (vlr_file_exists(ppath)) TRY(vlr_json_parse_file(ppath, CONFIG_MAX_BYTES, &pdoc, e));
    rc = config_from_json(vlr_json_root(cdoc), cpath, pdoc ? vlr_json_root(pdoc) : NULL, ppath, cfg, e);
done:
    vlr_json_free(cdoc);
    vlr_json_free(pdoc);
    free(cpath);
    free(ppath);
    if (rc) memset(cfg, 0, sizeof *cfg);
    return rc;
}

void vlr_config_qwen25vl_7b(vlr_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    /* Qwen/Qwen2.5-VL-7B-Instruct config.json */
    vlr_text_config *t = &cfg->text;
    t->hidden_size = 3584;
    t->intermediate_size = 18944;
    t->num_layers = 28;
    t->num_heads = 28;
    t->num_kv_heads = 4;
    t->head_dim = 128;
    t->vocab_size = 152064;
    t->max_position_embeddings = 128000;
    t->rms_norm_eps = 1e-6;
    t->rope_theta = 1e6;
    t->mrope_section[0] = 16, t->mrope_section[1] = 24, t->mrope_section[2] = 24;
    t->tie_word_embeddings = false;
    vlr_vision_config *v = &cfg->vision;
    v->depth = 32;
    v->hidden_size = 1280;
    v->num_heads = 16;
    v->head_dim = 80;
    v->intermediate_size = 3420;
    v->out_hidden_size = 3584;
    v->in_channels = 3;
    v->patch_size = 14;
    v->spatial_merge_size = 2;
    v->temporal_patch_size = 2;
    v->window_size = 112;
    v->n_fullatt = 4;
    v->fullatt_block_indexes[0] = 7, v->fullatt_block_indexes[1] = 15;
    v->fullatt_block_indexes[2] = 23, v->fullatt_block_indexes[3] = 31;
    cfg->tokens.image_pad = 151655;
    cfg->tokens.video_pad = 151656;
    cfg->tokens.vision_start = 151652;
    cfg->tokens.vision_end = 151653;
    cfg->tokens.eos = 151645;
    preproc_defaults(&cfg->preproc);
    cfg->nested = false;
}
