/* eval_report.c: the HTML page of `vlreward eval --report DIR` (see eval_report.h). */
#include "eval_report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define COLOR_CORRECT "#2a7ab0"
#define COLOR_WRONG "#d9822b"

/* ---- the margins' scale and bins -------------------------------------------------------------- */

double eval_report_scale(const vlr_eval_summary *s) {
    double worst = 0;
    for (size_t i = 0; i < s->labels.len; i++)
        for (size_t k = 0; k < s->labels.items[i].n_margins; k++)
            worst = fmax(worst, fabs(s->labels.items[i].margins[k]));
    if (!(worst > 0) || !isfinite(worst)) return 1;
    double p = pow(10, floor(log10(worst))), steps[] = {1, 2, 2.5, 5, 10};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        if (steps[i] * p >= worst) return steps[i] * p;
    return 10 * p;
}

int eval_report_bin(double margin, double half) {
    const int side = EVAL_REPORT_HIST_BINS / 2;
    double w = half / side, k;
    if (margin > 0) { /* (0, w] -> side, (w, 2w] -> side + 1, ... */
        k = ceil(margin / w) - 1;
        return side + (int)fmin(k, side - 1);
    }
    k = floor(-margin / w); /* (-w, 0] -> side - 1, (-2w, -w] -> side - 2, ... */
    return side - 1 - (int)fmin(k, side - 1);
}

/* ---- HTML pieces ---------------------------------------------------------------------------- */

static void html_text(vlr_buf *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': vlr_buf_puts(b, "&amp;"); break;
        case '<': vlr_buf_puts(b, "&lt;"); break;
        case '>': vlr_buf_puts(b, "&gt;"); break;
        case '"': vlr_buf_puts(b, "&quot;"); break;
        case '\'': vlr_buf_puts(b, "&#39;"); break;
        default: vlr_buf_append(b, s, 1);
        }
    }
}

/* A percentage with one decimal, "-" when undefined. */
static void pct(vlr_buf *b, double v) {
    if (isnan(v)) vlr_buf_puts(b, "-");
    else vlr_buf_printf(b, "%.1f", 100 * v);
}

static void cell_pct(vlr_buf *b, double v) {
    vlr_buf_puts(b, "<td>");
    pct(b, v);
    vlr_buf_puts(b, "</td>");
}

/* The accuracy as a bar from 0, its 95% interval as whiskers, 50% as a tick: 0..100% over 160 px. */
static void ci_svg(vlr_buf *b, const vlr_eval_count *c) {
    double acc = vlr_eval_accuracy(c), lo, hi;
    vlr_eval_wilson(c->correct, c->pairs, 1.96, &lo, &hi);
    vlr_buf_puts(b, "<svg class=\"ci\" width=\"170\" height=\"16\" role=\"img\"><rect x=\"5\" y=\"4\" width=\"160\" "
                    "height=\"8\" fill=\"#eee\"/>");
    if (!isnan(acc)) {
        vlr_buf_printf(b, "<rect x=\"5\" y=\"4\" width=\"%.1f\" height=\"8\" fill=\"" COLOR_CORRECT "\"/>", 160 * acc);
        vlr_buf_printf(b, "<path d=\"M%.1f 2V14M%.1f 8H%.1fM%.1f 2V14\" stroke=\"#000\" fill=\"none\"/>", 5 + 160 * lo,
                       5 + 160 * lo, 5 + 160 * hi, 5 + 160 * hi);
    }
    vlr_buf_puts(b, "<path d=\"M85 0V16\" stroke=\"#888\" stroke-dasharray=\"2 2\"/></svg>");
}

static void count_row(vlr_buf *b, const char *name, const char *group, bool group_col, const vlr_eval_count *c) {
    double lo, hi;
    vlr_eval_wilson(c->correct, c->pairs, 1.96, &lo, &hi);
    vlr_buf_puts(b, "<tr><td>");
    html_text(b, name);
    vlr_buf_puts(b, "</td>");
    if (group_col) {
        vlr_buf_puts(b, "<td class=\"t\">");
        html_text(b, group ? group : "-");
        vlr_buf_puts(b, "</td>");
    }
    vlr_buf_printf(b, "<td>%llu</td><td>%llu</td><td>%llu</td><td>%llu</td>", (unsigned long long)(c->pairs + c->failed),
                   (unsigned long long)c->correct, (unsigned long long)c->ties, (unsigned long long)c->failed);
    cell_pct(b, vlr_eval_accuracy(c));
    vlr_buf_puts(b, "<td>");
    if (isnan(lo)) {
        vlr_buf_puts(b, "-");
    } else {
        pct(b, lo);
        vlr_buf_puts(b, "&ndash;");
        pct(b, hi);
    }
    vlr_buf_puts(b, "</td><td>");
    ci_svg(b, c);
    vlr_buf_puts(b, "</td></tr>\n");
}

static void count_table(vlr_buf *b, const char *first, const vlr_eval_table *t, const char *group_col) {
    vlr_buf_printf(b, "<table class=\"counts\"><tr><th>%s</th>", first);
    if (group_col) vlr_buf_printf(b, "<th>%s</th>", group_col);
    vlr_buf_puts(b, "<th>N</th><th>Correct</th><th>Ties</th><th>Failed</th><th>Accuracy %</th><th>95% CI</th>"
                    "<th>accuracy, 95% CI (0&ndash;100%)</th></tr>\n");
    for (size_t i = 0; i < t->len; i++) count_row(b, t->items[i].name, t->items[i].group, group_col, &t->items[i].n);
}

/* The model card's table: one row, the benchmark's columns. */
static void card_table(vlr_buf *b, const vlr_eval_summary *s, const char *model) {
    vlr_buf_puts(b, "<table class=\"card\"><tr><th>Model Name</th>");
    double v[8];
    int n = 0;
    if (s->format == VLR_EVAL_VLREWARDBENCH) {
        vlr_vlrb_scores r;
        vlr_vlrb_compute(s, &r);
        vlr_buf_puts(b, "<th>General</th><th>Hallucination</th><th>Reasoning</th><th>Overall Accuracy</th>"
                        "<th>Macro Average</th>");
        for (int g = 0; g < VLR_VLRB_N_GROUPS; g++) v[n++] = r.group[g];
        v[n++] = r.overall;
        v[n++] = r.macro;
    } else if (s->format == VLR_EVAL_REWARDBENCH) {
        vlr_rb_scores r;
        vlr_rb_compute(s, &r);
        vlr_buf_puts(b, "<th>Chat</th><th>Chat Hard</th><th>Safety</th><th>Reasoning</th><th>Score</th>");
        for (int k = 0; k < VLR_RB_N_SECTIONS; k++) v[n++] = r.section[k];
        v[n++] = r.score;
        if (!isnan(r.prior_sets)) {
            vlr_buf_puts(b, "<th>Prior Sets (0.5 weight)</th><th>Leaderboard Score</th>");
            v[n++] = r.prior_sets;
            v[n++] = r.leaderboard;
        }
    } else {
        vlr_pairs_scores r;
        vlr_pairs_compute(s, &r);
        vlr_buf_puts(b, "<th>Accuracy</th><th>Macro Average</th>");
        v[n++] = r.accuracy;
        v[n++] = r.macro;
    }
    vlr_buf_puts(b, "</tr>\n<tr><td>");
    html_text(b, model);
    vlr_buf_puts(b, "</td>");
    for (int i = 0; i < n; i++) cell_pct(b, v[i]);
    vlr_buf_puts(b, "</tr></table>\n");
}

/* One category's margins: bars of the shared bins, correct (right of zero) and wrong in two colours;
 * each bar carries its count (data-count) and a tooltip. 600 x 170 px. */
static void histogram_svg(vlr_buf *b, const vlr_eval_entry *it, double half) {
    enum { W = 600, H = 170, LEFT = 40, RIGHT = 10, TOP = 10, BOTTOM = 30 };
    uint64_t bins[EVAL_REPORT_HIST_BINS] = {0}, peak = 0;
    for (size_t k = 0; k < it->n_margins; k++) bins[eval_report_bin(it->margins[k], half)]++;
    for (int i = 0; i < EVAL_REPORT_HIST_BINS; i++) peak = bins[i] > peak ? bins[i] : peak;
    const double plot_w = W - LEFT - RIGHT, plot_h = H - TOP - BOTTOM, bw = plot_w / EVAL_REPORT_HIST_BINS;
    const double step = 2 * half / EVAL_REPORT_HIST_BINS;
    vlr_buf_printf(b, "<svg class=\"hist\" width=\"%d\" height=\"%d\" role=\"img\" data-half=\"%.17g\">\n", W, H, half);
    for (int i = 0; i < EVAL_REPORT_HIST_BINS; i++) {
        if (!bins[i]) continue;
        double h = plot_h * (double)bins[i] / (double)peak, lo = -half + step * i;
        bool correct = i >= EVAL_REPORT_HIST_BINS / 2;
        vlr_buf_printf(b, "<rect class=\"bar %s\" data-bin=\"%d\" data-count=\"%llu\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" "
                          "height=\"%.1f\" fill=\"%s\"><title>(%.3g, %.3g]: %llu pairs</title></rect>\n",
                       correct ? "correct" : "wrong", i, (unsigned long long)bins[i], LEFT + bw * i + 1,
                       TOP + plot_h - h, bw - 2, h, correct ? COLOR_CORRECT : COLOR_WRONG, lo, lo + step,
                       (unsigned long long)bins[i]);
    }
    /* axes: the baseline, zero, the scale's ends, the peak count */
    vlr_buf_printf(b, "<path d=\"M%d %.1fH%d\" stroke=\"#444\"/><path d=\"M%.1f %dV%.1f\" stroke=\"#000\" "
                      "stroke-dasharray=\"4 3\"/>\n", LEFT, TOP + plot_h, W - RIGHT, LEFT + plot_w / 2, TOP, TOP + plot_h);
    vlr_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"start\">%.3g</text>", LEFT, H - 12, -half);
    vlr_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">0</text>", LEFT + plot_w / 2, H - 12);
    vlr_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%.3g</text>", W - RIGHT, H - 12, half);
    vlr_buf_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">%llu</text>", LEFT - 4, TOP + 10,
                   (unsigned long long)peak);
    vlr_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\" fill=\"#555\">score(chosen) "
                      "&minus; score(rejected)</text>\n</svg>\n", LEFT + plot_w / 2, H - 1);
}

static void compare_table(vlr_buf *b, const vlr_eval_compare_stats *c, const char *a, const char *bn) {
    vlr_buf_puts(b, "<h2>Precision comparison</h2>\n<table class=\"compare\"><tr><th>");
    html_text(b, bn);
    vlr_buf_puts(b, " against ");
    html_text(b, a);
    vlr_buf_printf(b, "</th><th></th></tr>\n<tr><td>pairs scored at both</td><td>%zu</td></tr>\n", c->pairs);
    vlr_buf_printf(b, "<tr><td>same decision (chosen &gt; rejected)</td><td>%zu (", c->same_decision);
    pct(b, c->pairs ? (double)c->same_decision / (double)c->pairs : NAN);
    vlr_buf_puts(b, "%)</td></tr>\n<tr><td>accuracy ");
    html_text(b, a);
    vlr_buf_puts(b, " / ");
    html_text(b, bn);
    vlr_buf_puts(b, "</td><td>");
    pct(b, c->pairs ? (double)c->correct_a / (double)c->pairs : NAN);
    vlr_buf_puts(b, " / ");
    pct(b, c->pairs ? (double)c->correct_b / (double)c->pairs : NAN);
    vlr_buf_printf(b, "</td></tr>\n<tr><td>Spearman rank correlation of the %zu scores</td><td>%.6f</td></tr>\n",
                   2 * c->pairs, c->spearman);
    vlr_buf_printf(b, "<tr><td>score difference, mean</td><td>%.3g</td></tr>\n<tr><td>absolute difference: mean / "
                      "median / p90 / p99 / max</td><td>%.3g / %.3g / %.3g / %.3g / %.3g</td></tr>\n</table>\n",
                   c->diff_mean, c->abs_mean, c->abs_median, c->abs_p90, c->abs_p99, c->abs_max);
}

void eval_report_html(const vlr_eval_summary *s, const vlr_eval_meta *meta, const vlr_eval_compare_stats *cmp,
                      const char *prec_a, const char *prec_b, vlr_buf *out) {
    const char *model = meta && meta->model_name ? meta->model_name : "model";
    vlr_buf_puts(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vlreward eval: ");
    html_text(out, model);
    vlr_buf_puts(out, "</title>\n<style>\nbody{font:14px/1.45 sans-serif;margin:24px auto;max-width:980px;color:#222}\n"
                      "table{border-collapse:collapse;margin:10px 0}th,td{border:1px solid #ccc;padding:3px 8px;"
                      "text-align:right}th:first-child,td:first-child,td.t{text-align:left}th{background:#f4f4f4}\n"
                      ".meta{color:#555}section{margin:18px 0}h3{margin:4px 0}svg{display:block}\n"
                      "</style></head><body>\n<h1>");
    html_text(out, model);
    vlr_buf_printf(out, " on %s</h1>\n<p class=\"meta\">", vlr_eval_format_name(s->format));
    if (meta && meta->model_revision) {
        vlr_buf_puts(out, "revision ");
        html_text(out, meta->model_revision);
    }
    if (meta && meta->precision) {
        vlr_buf_puts(out, " &middot; precision ");
        html_text(out, meta->precision);
    }
    if (meta && meta->kernels) {
        vlr_buf_puts(out, " (");
        html_text(out, meta->kernels);
        vlr_buf_puts(out, " kernels)");
    }
    if (meta && meta->version) {
        vlr_buf_puts(out, " &middot; vlreward ");
        html_text(out, meta->version);
    }
    if (s->format == VLR_EVAL_VLREWARDBENCH)
        vlr_buf_puts(out, meta && meta->image_tag_kept ? " &middot; queries keep their &lt;image&gt;"
                                                       : " &middot; &lt;image&gt;\\n removed from queries, as the "
                                                         "benchmark's inference_hf.py does");
    vlr_buf_puts(out, "</p>\n");
    card_table(out, s, model);
    vlr_buf_printf(out, "<p>%llu pairs: %llu scored, %llu correct, %llu ties (counted wrong), %llu failed",
                   (unsigned long long)(s->all.pairs + s->errors), (unsigned long long)s->all.pairs,
                   (unsigned long long)s->all.correct, (unsigned long long)s->all.ties, (unsigned long long)s->errors);
    if (s->errors_unlabelled) vlr_buf_printf(out, " (%llu of no known category)", (unsigned long long)s->errors_unlabelled);
    if (s->errors) vlr_buf_puts(out, "; failed pairs are in no accuracy");
    vlr_buf_puts(out, ".</p>\n<h2>Per category</h2>\n");
    const char *first = s->format == VLR_EVAL_VLREWARDBENCH ? "Group" : s->format == VLR_EVAL_REWARDBENCH ? "Subset"
                                                                                                      : "Category";
    count_table(out, first, &s->labels, s->format == VLR_EVAL_REWARDBENCH ? "Section" : NULL);
    vlr_buf_puts(out, "</table>\n");
    if (s->format == VLR_EVAL_VLREWARDBENCH) {
        vlr_buf_puts(out, "<h2>Per source</h2>\n");
        count_table(out, "Source", &s->sources, "Group");
        vlr_buf_puts(out, "</table>\n");
    }
    double half = eval_report_scale(s);
    vlr_buf_printf(out, "<h2>Margins: score(chosen) &minus; score(rejected)</h2>\n<p>One scale for every category "
                        "(&plusmn;%.3g, %d bins). Right of the dashed line the pair is correct (<span style=\"color:"
                        COLOR_CORRECT "\">&#9632;</span>); a tie (0) counts as wrong and sits left of it (<span "
                        "style=\"color:" COLOR_WRONG "\">&#9632;</span>). Margins beyond the scale are in the outer "
                        "bins.</p>\n", half, EVAL_REPORT_HIST_BINS);
    for (size_t i = 0; i < s->labels.len; i++) {
        const vlr_eval_entry *it = &s->labels.items[i];
        double lo, hi;
        vlr_eval_wilson(it->n.correct, it->n.pairs, 1.96, &lo, &hi);
        vlr_buf_printf(out, "<section class=\"category\" data-pairs=\"%llu\" data-correct=\"%llu\"><h3>",
                       (unsigned long long)it->n.pairs, (unsigned long long)it->n.correct);
        html_text(out, it->name);
        vlr_buf_printf(out, "</h3>\n<p>N %llu &middot; accuracy ", (unsigned long long)(it->n.pairs + it->n.failed));
        pct(out, vlr_eval_accuracy(&it->n));
        vlr_buf_puts(out, "% (95% CI ");
        pct(out, lo);
        vlr_buf_puts(out, "&ndash;");
        pct(out, hi);
        vlr_buf_printf(out, ") &middot; %llu failed</p>\n", (unsigned long long)it->n.failed);
        histogram_svg(out, it, half);
        vlr_buf_puts(out, "</section>\n");
    }
    if (cmp) compare_table(out, cmp, prec_a, prec_b);
    vlr_buf_puts(out, "</body></html>\n");
}

/* ---- files ------------------------------------------------------------------------------------ */

bool eval_report_prepare(const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return true;
        fprintf(stderr, "vlreward eval: --report %s: exists and is not a folder\n", dir);
        return false;
    }
    /* EEXIST: another rank of an mpirun job made it just now */
    if (mkdir(dir, 0777) == 0 || (errno == EEXIST && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))) return true;
    fprintf(stderr, "vlreward eval: --report %s: cannot create the folder: %s\n", dir, strerror(errno));
    return false;
}

bool eval_report_write(const char *dir, const vlr_buf *html) {
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/index.html", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    bool ok = f && fwrite(html->data, 1, html->len, f) == html->len;
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        fprintf(stderr, "vlreward eval: %s: cannot write the report: %s\n", path, strerror(errno));
        unlink(tmp);
    }
    return ok;
}
