/* trace.c: the per-stage summary collector of trace.h and its JSON writer.
 *
 * Summaries are accumulated in float64 in row order, so a tensor recorded in pieces (images one by
 * one, text chunk by chunk) gives the sums the reference computes over the whole tensor up to float64
 * rounding. The JSON layout follows tests/reference/traces/<id>.json (README "File formats"); values
 * that this engine does not compute (values_last8, precision_study) are not written. */
#include "trace.h"

#include "json_write.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void vlr_trace_init(vlr_trace *t) { memset(t, 0, sizeof *t); }

void vlr_trace_free(vlr_trace *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_stages; i++) free(t->stages[i].ints);
    free(t->stages);
    free(t->grids);
    memset(t, 0, sizeof *t);
}

const vlr_trace_stage *vlr_trace_find(const vlr_trace *t, const char *name) {
    if (!t) return NULL;
    for (size_t i = 0; i < t->n_stages; i++)
        if (strcmp(t->stages[i].name, name) == 0) return &t->stages[i];
    return NULL;
}

/* The stage named name, created empty when absent; NULL on OOM (sets t->oom) or a too-long name. */
static vlr_trace_stage *stage_get(vlr_trace *t, const char *name, bool is_ints) {
    vlr_trace_stage *s = (vlr_trace_stage *)vlr_trace_find(t, name);
    if (s) return s->is_ints == is_ints ? s : NULL;
    if (strlen(name) >= VLR_TRACE_NAME_CAP) return NULL;
    if (t->n_stages == t->cap_stages) {
        size_t cap = t->cap_stages ? 2 * t->cap_stages : 32;
        vlr_trace_stage *grown = realloc(t->stages, cap * sizeof *grown);
        if (!grown) {
            t->oom = true;
            return NULL;
        }
        t->stages = grown;
        t->cap_stages = cap;
    }
    s = &t->stages[t->n_stages++];
    memset(s, 0, sizeof *s);
    strcpy(s->name, name);
    s->is_ints = is_ints;
    return s;
}

void vlr_trace_tensor_labeled(vlr_trace *t, const char *name, const float *x, size_t rows,
                              size_t cols, size_t ld, const char *label) {
    if (!t || t->oom || rows == 0) return;
    vlr_trace_stage *s = stage_get(t, name, false);
    if (!s) return;
    if (s->rows != 0 && s->cols != (int64_t)cols) return; /* a mismatched append: keep the first */
    size_t n4 = cols < 4 ? cols : 4;
    if (s->rows == 0) {
        s->cols = (int64_t)cols;
        for (size_t j = 0; j < n4; j++) s->first_row[j] = x[j];
    }
    for (size_t r = 0; r < rows; r++) {
        const float *row = x + r * ld;
        double row_sum = 0;
        for (size_t j = 0; j < cols; j++) {
            row_sum += row[j];
            s->sum_abs += fabs((double)row[j]);
        }
        s->sum += row_sum;
        if (r == rows - 1) s->last_sum = row_sum;
    }
    const float *last = x + (rows - 1) * ld;
    for (size_t j = 0; j < n4; j++) s->last_row[j] = last[j];
    s->rows += (int64_t)rows;
    if (label) s->label = label;
}

void vlr_trace_tensor(vlr_trace *t, const char *name, const float *x, size_t rows, size_t cols,
                      size_t ld) {
    vlr_trace_tensor_labeled(t, name, x, rows, cols, ld, NULL);
}

void vlr_trace_ints(vlr_trace *t, const char *name, const int32_t *v, size_t n,
                    vlr_trace_ints_mode mode) {
    if (!t || t->oom) return;
    vlr_trace_stage *s = stage_get(t, name, true);
    if (!s) return;
    int64_t offset = 0;
    size_t skip = 0;
    if (s->n_ints > 0) {
        if (mode == VLR_TRACE_INTS_PERMUTATION) {
            offset = (int64_t)s->n_ints;
        } else {
            offset = s->ints[s->n_ints - 1];
            skip = n > 0 ? 1 : 0;
        }
    }
    if (s->n_ints + n > s->cap_ints) {
        size_t cap = s->cap_ints ? s->cap_ints : 64;
        while (cap < s->n_ints + n) cap *= 2;
        int64_t *grown = realloc(s->ints, cap * sizeof *grown);
        if (!grown) {
            t->oom = true;
            return;
        }
        s->ints = grown;
        s->cap_ints = cap;
    }
    for (size_t i = skip; i < n; i++) s->ints[s->n_ints++] = offset + v[i];
}

void vlr_trace_add_grid(vlr_trace *t, int grid_t, int grid_h, int grid_w) {
    if (!t || t->oom) return;
    if (t->n_grids == t->cap_grids) {
        size_t cap = t->cap_grids ? 2 * t->cap_grids : 8;
        vlr_trace_grid *grown = realloc(t->grids, cap * sizeof *grown);
        if (!grown) {
            t->oom = true;
            return;
        }
        t->grids = grown;
        t->cap_grids = cap;
    }
    t->grids[t->n_grids++] = (vlr_trace_grid){grid_t, grid_h, grid_w};
}

void vlr_trace_set_score(vlr_trace *t, double score) {
    if (!t) return;
    t->has_score = true;
    t->score = score;
}

/* ---- JSON ---- */

static void put_doubles(vlr_jw *w, const char *key, const double *v, int n) {
    vlr_jw_key(w, key);
    vlr_jw_array(w);
    for (int i = 0; i < n; i++) vlr_jw_double(w, v[i]);
    vlr_jw_end(w);
}

/* {"shape": [...], "sum", "sum_abs", then the vision or the text row keys} */
static void put_stage(vlr_jw *w, const vlr_trace_stage *s, bool text_keys) {
    int n4 = s->cols < 4 ? (int)s->cols : 4;
    vlr_jw_object(w);
    vlr_jw_key(w, "shape");
    vlr_jw_array(w);
    vlr_jw_int(w, (long long)s->rows);
    vlr_jw_int(w, (long long)s->cols);
    vlr_jw_end(w);
    vlr_jw_key_double(w, "sum", s->sum);
    vlr_jw_key_double(w, "sum_abs", s->sum_abs);
    put_doubles(w, "row0_first4", s->first_row, n4);
    if (text_keys) {
        put_doubles(w, "last_first4", s->last_row, n4);
        vlr_jw_key_double(w, "last_sum", s->last_sum);
    } else {
        put_doubles(w, "last_row_first4", s->last_row, n4);
    }
    if (s->label) vlr_jw_key_str(w, "attention", s->label);
    vlr_jw_end(w);
}

/* Writes `"key": value` for the stage named name when it exists. */
static void put_named(vlr_jw *w, const vlr_trace *t, const char *key, const char *name, bool text_keys) {
    const vlr_trace_stage *s = vlr_trace_find(t, name);
    if (!s) return;
    vlr_jw_key(w, key);
    if (s->is_ints) {
        vlr_jw_array(w);
        for (size_t i = 0; i < s->n_ints; i++) vlr_jw_int(w, (long long)s->ints[i]);
        vlr_jw_end(w);
    } else {
        put_stage(w, s, text_keys);
    }
}

/* Writes `"key": [stage prefix.0, prefix.1, ...]` for consecutive indices that exist. */
static void put_list(vlr_jw *w, const vlr_trace *t, const char *key, const char *prefix, bool text_keys) {
    char name[VLR_TRACE_NAME_CAP];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "%s.%d", prefix, n);
        if (!vlr_trace_find(t, name)) break;
    }
    if (n == 0) return;
    vlr_jw_key(w, key);
    vlr_jw_array(w);
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.%d", prefix, i);
        put_stage(w, vlr_trace_find(t, name), text_keys);
    }
    vlr_jw_end(w);
}

static bool has_prefix(const vlr_trace *t, const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < t->n_stages; i++)
        if (strncmp(t->stages[i].name, prefix, n) == 0) return true;
    return false;
}

void vlr_trace_write_json(const vlr_trace *t, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    if (!t) {
        vlr_jw_end(&w);
        return;
    }
    const vlr_trace_stage *embeds = vlr_trace_find(t, "text.inputs_embeds");
    if (embeds) vlr_jw_key_int(&w, "seq_len", (long long)embeds->rows);
    vlr_jw_key(&w, "image_grid_thw"); /* [] for text only */
    vlr_jw_array(&w);
    for (size_t i = 0; i < t->n_grids; i++) {
        vlr_jw_array(&w);
        vlr_jw_int(&w, t->grids[i].t);
        vlr_jw_int(&w, t->grids[i].h);
        vlr_jw_int(&w, t->grids[i].w);
        vlr_jw_end(&w);
    }
    vlr_jw_end(&w);
    if (has_prefix(t, "vision.")) {
        vlr_jw_key(&w, "vision");
        vlr_jw_object(&w);
        put_named(&w, t, "patch_embed", "vision.patch_embed", false);
        put_named(&w, t, "window_index", "vision.window_index", false);
        put_named(&w, t, "cu_window_seqlens", "vision.cu_window_seqlens", false);
        put_named(&w, t, "cu_seqlens", "vision.cu_seqlens", false);
        put_named(&w, t, "after_window_reorder", "vision.after_window_reorder", false);
        put_list(&w, t, "blocks", "vision.blocks", false);
        put_named(&w, t, "merger_window_order", "vision.merger_window_order", false);
        put_named(&w, t, "merger_out", "vision.merger_out", false);
        vlr_jw_end(&w);
    }
    if (has_prefix(t, "text.")) {
        vlr_jw_key(&w, "text");
        vlr_jw_object(&w);
        put_named(&w, t, "inputs_embeds", "text.inputs_embeds", true);
        put_list(&w, t, "layers", "text.layers", true);
        put_named(&w, t, "final_norm", "text.final_norm", true);
        vlr_jw_end(&w);
    }
    if (t->has_score) vlr_jw_key_double(&w, "score", t->score);
    vlr_jw_end(&w);
}
