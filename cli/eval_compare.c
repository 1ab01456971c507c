/* eval_compare.c: agreement, rank correlation and score differences between two precisions (see
 * eval_compare.h). */
#include "eval_compare.h"

#include <math.h>
#include <stdlib.h>

vlr_status vlr_eval_compare_add(vlr_eval_compare *c, double chosen_a, double rejected_a, double chosen_b,
                                double rejected_b, vlr_err *e) {
    if (!isfinite(chosen_a) || !isfinite(rejected_a) || !isfinite(chosen_b) || !isfinite(rejected_b))
        return vlr_fail(e, VLR_ERR_INPUT, "compare: a score is not a finite number");
    if (c->pairs == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 256;
        double *a = realloc(c->a, 2 * cap * sizeof *a);
        if (!a) return vlr_fail(e, VLR_ERR_NOMEM, "compare: out of memory");
        c->a = a;
        double *b = realloc(c->b, 2 * cap * sizeof *b);
        if (!b) return vlr_fail(e, VLR_ERR_NOMEM, "compare: out of memory");
        c->b = b;
        c->cap = cap;
    }
    c->a[2 * c->pairs] = chosen_a;
    c->a[2 * c->pairs + 1] = rejected_a;
    c->b[2 * c->pairs] = chosen_b;
    c->b[2 * c->pairs + 1] = rejected_b;
    c->pairs++;
    return VLR_OK;
}

void vlr_eval_compare_free(vlr_eval_compare *c) {
    free(c->a);
    free(c->b);
    memset(c, 0, sizeof *c);
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Sorting indices by the values they point at (qsort has no context argument). */
typedef struct ranked {
    double v;
    size_t i;
} ranked;

static int cmp_ranked(const void *x, const void *y) {
    const ranked *a = x, *b = y;
    if (a->v != b->v) return (a->v > b->v) - (a->v < b->v);
    return (a->i > b->i) - (a->i < b->i);
}

size_t vlr_spearman_scratch_bytes(size_t n) { return n * (2 * sizeof(double) + sizeof(ranked)); }

/* 1-based ranks of v[n] into r[n], ties sharing their average rank. */
static void average_ranks(const double *v, size_t n, ranked *tmp, double *r) {
    for (size_t i = 0; i < n; i++) tmp[i] = (ranked){v[i], i};
    qsort(tmp, n, sizeof *tmp, cmp_ranked);
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && tmp[j + 1].v == tmp[i].v) j++;
        double avg = (double)(i + j) / 2 + 1;
        for (size_t k = i; k <= j; k++) r[tmp[k].i] = avg;
        i = j + 1;
    }
}

double vlr_spearman(const double *x, const double *y, size_t n, void *scratch) {
    if (n < 2) return NAN;
    double *rx = scratch, *ry = rx + n;
    ranked *tmp = (ranked *)(ry + n);
    average_ranks(x, n, tmp, rx);
    average_ranks(y, n, tmp, ry);
    double mean = (double)(n + 1) / 2; /* the mean of any set of average ranks of n items */
    double sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        double dx = rx[i] - mean, dy = ry[i] - mean;
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if (sxx == 0 || syy == 0) return NAN;
    return sxy / sqrt(sxx * syy);
}

double vlr_quantile_sorted(const double *sorted, size_t n, double q) {
    if (!n) return NAN;
    double pos = q * (double)(n - 1);
    size_t lo = (size_t)pos, hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - (double)lo);
}

vlr_status vlr_eval_compare_compute(const vlr_eval_compare *c, vlr_eval_compare_stats *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    out->pairs = c->pairs;
    size_t n = 2 * c->pairs;
    out->spearman = out->diff_mean = out->abs_mean = out->abs_median = NAN;
    out->abs_p90 = out->abs_p99 = out->abs_max = NAN;
    if (!n) return VLR_OK;
    for (size_t p = 0; p < c->pairs; p++) {
        bool da = c->a[2 * p] > c->a[2 * p + 1], db = c->b[2 * p] > c->b[2 * p + 1];
        out->correct_a += da;
        out->correct_b += db;
        out->same_decision += da == db;
    }
    double *abs_diff = malloc(n * sizeof *abs_diff);
    void *scratch = malloc(vlr_spearman_scratch_bytes(n));
    if (!abs_diff || !scratch) {
        free(abs_diff);
        free(scratch);
        return vlr_fail(e, VLR_ERR_NOMEM, "compare: out of memory");
    }
    double sum = 0, sum_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = c->b[i] - c->a[i];
        sum += d;
        sum_abs += fabs(d);
        abs_diff[i] = fabs(d);
    }
    qsort(abs_diff, n, sizeof *abs_diff, cmp_double);
    out->diff_mean = sum / (double)n;
    out->abs_mean = sum_abs / (double)n;
    out->abs_median = vlr_quantile_sorted(abs_diff, n, 0.5);
    out->abs_p90 = vlr_quantile_sorted(abs_diff, n, 0.9);
    out->abs_p99 = vlr_quantile_sorted(abs_diff, n, 0.99);
    out->abs_max = abs_diff[n - 1];
    out->spearman = vlr_spearman(c->a, c->b, n, scratch);
    free(abs_diff);
    free(scratch);
    return VLR_OK;
}

static void md_num(vlr_buf *b, double v, const char *fmt) {
    if (isnan(v)) vlr_buf_puts(b, "-");
    else vlr_buf_printf(b, fmt, v);
}

static double frac(size_t k, size_t n) { return n ? (double)k / (double)n : NAN; }

void vlr_eval_compare_markdown(const vlr_eval_compare_stats *s, const char *name_a, const char *name_b, vlr_buf *out) {
    vlr_buf_printf(out, "\n| %s against %s | |\n|---|---|\n| pairs scored at both | %zu |\n", name_b, name_a, s->pairs);
    vlr_buf_printf(out, "| same decision (chosen > rejected) | %zu (", s->same_decision);
    md_num(out, 100 * frac(s->same_decision, s->pairs), "%.2f%%");
    vlr_buf_printf(out, ") |\n| accuracy %s / %s | ", name_a, name_b);
    md_num(out, 100 * frac(s->correct_a, s->pairs), "%.1f");
    vlr_buf_puts(out, " / ");
    md_num(out, 100 * frac(s->correct_b, s->pairs), "%.1f");
    vlr_buf_printf(out, " |\n| Spearman rank correlation of the %zu scores | ", 2 * s->pairs);
    md_num(out, s->spearman, "%.6f");
    vlr_buf_printf(out, " |\n| score difference %s - %s, mean | ", name_b, name_a);
    md_num(out, s->diff_mean, "%.3g");
    vlr_buf_puts(out, " |\n| absolute difference: mean / median / p90 / p99 / max | ");
    const double v[5] = {s->abs_mean, s->abs_median, s->abs_p90, s->abs_p99, s->abs_max};
    for (int i = 0; i < 5; i++) {
        if (i) vlr_buf_puts(out, " / ");
        md_num(out, v[i], "%.3g");
    }
    vlr_buf_puts(out, " |\n");
}

void vlr_eval_compare_json(const vlr_eval_compare_stats *s, const char *name_a, const char *name_b, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    vlr_jw_object(&w);
    vlr_jw_key(&w, "precisions");
    vlr_jw_array(&w);
    vlr_jw_str(&w, name_a);
    vlr_jw_str(&w, name_b);
    vlr_jw_end(&w);
    vlr_jw_key_uint(&w, "pairs", s->pairs);
    vlr_jw_key_uint(&w, "same_decision", s->same_decision);
    vlr_jw_key_double(&w, "agreement", frac(s->same_decision, s->pairs));
    vlr_jw_key(&w, "accuracy");
    vlr_jw_object(&w);
    vlr_jw_key_double(&w, name_a, frac(s->correct_a, s->pairs));
    vlr_jw_key_double(&w, name_b, frac(s->correct_b, s->pairs));
    vlr_jw_end(&w);
    vlr_jw_key_double(&w, "spearman", s->spearman);
    vlr_jw_key(&w, "diff");
    vlr_jw_object(&w);
    vlr_jw_key_double(&w, "mean", s->diff_mean);
    vlr_jw_key_double(&w, "abs_mean", s->abs_mean);
    vlr_jw_key_double(&w, "abs_median", s->abs_median);
    vlr_jw_key_double(&w, "abs_p90", s->abs_p90);
    vlr_jw_key_double(&w, "abs_p99", s->abs_p99);
    vlr_jw_key_double(&w, "abs_max", s->abs_max);
    vlr_jw_end(&w);
    vlr_jw_end(&w);
}
