/* trace.c: the per-stage summary collector of trace.h and its JSON writer.
 *
 * Summaries are accumulated in float64 in row order, so a tensor recorded in pieces (images one by
 * one, text chunk by chunk) gives the sums the reference computes over the whole tensor up to float64
 * rounding. The JSON layout follows tests/reference/traces/<id>.json (README "File formats"); values
 * that this engine does not compute (values_last8, precision_study) are not written. */
#include "trace.h"

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

static void put_doubles(vlr_buf *b, const double *v, int n) {
    vlr_buf_puts(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) vlr_buf_puts(b, ", ");
        vlr_buf_json_double(b, v[i]);
    }
    vlr_buf_puts(b, "]");
}

/* {"shape": [...], "sum", "sum_abs", then the vision or the text row keys} */
static void put_stage(vlr_buf *b, const vlr_trace_stage *s, bool text_keys) {
    int n4 = s->cols < 4 ? (int)s->cols : 4;
    vlr_buf_printf(b, "{\"shape\": [%lld, %lld], \"sum\": ", (long long)s->rows,
                   (long long)s->cols);
    vlr_buf_json_double(b, s->sum);
    vlr_buf_puts(b, ", \"sum_abs\": ");
    vlr_buf_json_double(b, s->sum_abs);
    vlr_buf_puts(b, ", \"row0_first4\": ");
    put_doubles(b, s->first_row, n4);
    if (text_keys) {
        vlr_buf_puts(b, ", \"last_first4\": ");
        put_doubles(b, s->last_row, n4);
        vlr_buf_puts(b, ", \"last_sum\": ");
        vlr_buf_json_double(b, s->last_sum);
    } else {
        vlr_buf_puts(b, ", \"last_row_first4\": ");
        put_doubles(b, s->last_row, n4);
    }
    if (s->label) {
        vlr_buf_puts(b, ", \"attention\": ");
        vlr_buf_json_string(b, s->label, strlen(s->label));
    }
    vlr_buf_puts(b, "}");
}

/* Writes `"key": value` for the stage named name when it exists; *first tracks the comma. */
static void put_named(vlr_buf *b, const vlr_trace *t, const char *key, const char *name,
                      bool text_keys, bool *first) {
    const vlr_trace_stage *s = vlr_trace_find(t, name);
    if (!s) return;
    vlr_buf_printf(b, "%s\"%s\": ", *first ? "" : ", ", key);
    *first = false;
    if (s->is_ints) {
        vlr_buf_puts(b, "[");
        for (size_t i = 0; i < s->n_ints; i++)
            vlr_buf_printf(b, "%s%lld", i ? ", " : "", (long long)s->ints[i]);
        vlr_buf_puts(b, "]");
    } else {
        put_stage(b, s, text_keys);
    }
}

/* Writes `"key": [stage prefix.0, prefix.1, ...]` for consecutive indices that exist. */
static void put_list(vlr_buf *b, const vlr_trace *t, const char *key, const char *prefix,
                     bool text_keys, bool *first) {
    char name[VLR_TRACE_NAME_CAP];
    int n = 0;
    for (;; n++) {
        snprintf(name, sizeof name, "%s.%d", prefix, n);
        if (!vlr_trace_find(t, name)) break;
    }
    if (n == 0) return;
    vlr_buf_printf(b, "%s\"%s\": [", *first ? "" : ", ", key);
    *first = false;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s.%d", prefix, i);
        if (i) vlr_buf_puts(b, ", ");
        put_stage(b, vlr_trace_find(t, name), text_keys);
    }
    vlr_buf_puts(b, "]");
}

static bool has_prefix(const vlr_trace *t, const char *prefix) {
    size_t n = strlen(prefix);
    for (size_t i = 0; i < t->n_stages; i++)
        if (strncmp(t->stages[i].name, prefix, n) == 0) return true;
    return false;
}

void vlr_trace_write_json(const vlr_trace *t, vlr_buf *out) {
    bool first = true;
    vlr_buf_puts(out, "{");
    if (!t) {
        vlr_buf_puts(out, "}");
        return;
    }
    const vlr_trace_stage *embeds = vlr_trace_find(t, "text.inputs_embeds");
    if (embeds) {
        vlr_buf_printf(out, "\"seq_len\": %lld", (long long)embeds->rows);
        first = false;
    }
    vlr_buf_printf(out, "%s\"image_grid_thw\": [", first ? "" : ", "); /* [] for text only */
    for (size_t i = 0; i < t->n_grids; i++)
        vlr_buf_printf(out, "%s[%d, %d, %d]", i ? ", " : "", t->grids[i].t, t->grids[i].h,
                       t->grids[i].w);
    vlr_buf_puts(out, "]");
    first = false;
    if (has_prefix(t, "vision.")) {
        bool f = true;
        vlr_buf_printf(out, "%s\"vision\": {", first ? "" : ", ");
        first = false;
        put_named(out, t, "patch_embed", "vision.patch_embed", false, &f);
        put_named(out, t, "window_index", "vision.window_index", false, &f);
        put_named(out, t, "cu_window_seqlens", "vision.cu_window_seqlens", false, &f);
        put_named(out, t, "cu_seqlens", "vision.cu_seqlens", false, &f);
        put_named(out, t, "after_window_reorder", "vision.after_window_reorder", false, &f);
        put_list(out, t, "blocks", "vision.blocks", false, &f);
        put_named(out, t, "merger_window_order", "vision.merger_window_order", false, &f);
        put_named(out, t, "merger_out", "vision.merger_out", false, &f);
        vlr_buf_puts(out, "}");
    }
    if (has_prefix(t, "text.")) {
        bool f = true;
        vlr_buf_printf(out, "%s\"text\": {", first ? "" : ", ");
        first = false;
        put_named(out, t, "inputs_embeds", "text.inputs_embeds", true, &f);
        put_list(out, t, "layers", "text.layers", true, &f);
        put_named(out, t, "final_norm", "text.final_norm", true, &f);
        vlr_buf_puts(out, "}");
    }
    if (t->has_score) {
        vlr_buf_printf(out, "%s\"score\": ", first ? "" : ", ");
        vlr_buf_json_double(out, t->score);
    }
    vlr_buf_puts(out, "}");
}
