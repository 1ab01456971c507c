/* eval_report.h: `vlreward eval --report DIR`: the summary as one self-contained HTML page
 * (DIR/index.html: inline CSS and SVG, no script, nothing fetched), to look at rather than read:
 * the model card's table, per category N, failures and the accuracy with its 95% Wilson interval
 * drawn as a bar with whiskers, and per category a histogram of the margins score(chosen) -
 * score(rejected) on one scale shared by all categories, the bins right of zero being the correct
 * pairs. With --compare-precision, the comparison table follows. */
#ifndef VLR_CLI_EVAL_REPORT_H
#define VLR_CLI_EVAL_REPORT_H

#include "eval.h"
#include "eval_compare.h"

/* Histogram bins: HIST_BINS / 2 on each side of zero, each (lo, hi], so a tie (margin 0) falls in
 * the last bin left of zero, with the wrong pairs. */
#define EVAL_REPORT_HIST_BINS 24

/* The half-width of the shared scale: the largest |margin| rounded up to 1, 2, 2.5 or 5 times a
 * power of ten (1 when every margin is 0). */
double eval_report_scale(const vlr_eval_summary *s);
/* The bin (0 .. EVAL_REPORT_HIST_BINS - 1) of a margin on the scale +-half. */
int eval_report_bin(double margin, double half);

/* The page. cmp may be NULL (no comparison); prec_a/prec_b name its precisions. */
void eval_report_html(const vlr_eval_summary *s, const vlr_eval_meta *meta, const vlr_eval_compare_stats *cmp,
                      const char *prec_a, const char *prec_b, vlr_buf *out);

/* Creates DIR when it does not exist (before a run, so a bad path fails early); false after a
 * message. */
bool eval_report_prepare(const char *dir);
/* Writes DIR/index.html (through a temporary file renamed into place); false after a message. */
bool eval_report_write(const char *dir, const vlr_buf *html);

#endif
