/* eval_compare.h: the same preference pairs scored at two precisions (`vlreward eval
 * --compare-precision A,B`): how often the pair decision agrees, how well the scores keep their
 * order (Spearman's rank correlation over every score, both sides of every pair), and how far the
 * scores move (B - A: the mean, and the mean, median, 90th and 99th percentile and maximum of
 * |B - A|). Percentiles interpolate linearly between order statistics (numpy's default); Spearman's
 * rho is Pearson's correlation of the ranks, ties given their average rank (scipy's spearmanr).
 * Model-free: cli/cmd_eval.c scores, this counts. */
#ifndef VLR_EVAL_COMPARE_H
#define VLR_EVAL_COMPARE_H

#include "internal.h"

typedef struct vlr_eval_compare {
    double *a, *b;       /* scores at the two precisions: [2 * pairs], chosen then rejected */
    size_t pairs, cap;
} vlr_eval_compare;

/* Adds one pair scored at both precisions; VLR_ERR_NOMEM, or VLR_ERR_INPUT for a non-finite score. */
vlr_status vlr_eval_compare_add(vlr_eval_compare *c, double chosen_a, double rejected_a, double chosen_b,
                                double rejected_b, vlr_err *e);
void vlr_eval_compare_free(vlr_eval_compare *c); /* leaves *c empty */

typedef struct vlr_eval_compare_stats {
    size_t pairs;
    size_t same_decision;        /* (chosen > rejected) the same at both precisions */
    size_t correct_a, correct_b; /* chosen > rejected */
    double spearman;             /* over the 2 * pairs scores; NaN below 2 scores or for constant scores */
    double diff_mean;            /* mean of B - A */
    double abs_mean, abs_median, abs_p90, abs_p99, abs_max; /* of |B - A| */
} vlr_eval_compare_stats;

/* NaN everywhere (and zero counts) when there are no pairs; VLR_ERR_NOMEM when the sort buffers
 * cannot be had. */
vlr_status vlr_eval_compare_compute(const vlr_eval_compare *c, vlr_eval_compare_stats *out, vlr_err *e);

/* Spearman's rho of x and y (n each); NaN when n < 2 or either is constant. scratch: 3 * n doubles
 * and n size_t (see vlr_spearman_scratch_bytes). */
double vlr_spearman(const double *x, const double *y, size_t n, void *scratch);
size_t vlr_spearman_scratch_bytes(size_t n);
/* The q-quantile (0..1) of sorted[n], interpolated linearly; NaN when n == 0. */
double vlr_quantile_sorted(const double *sorted, size_t n, double q);

/* The comparison as a markdown table and as the JSON object of "compare_precision" (no newline). */
void vlr_eval_compare_markdown(const vlr_eval_compare_stats *s, const char *name_a, const char *name_b, vlr_buf *out);
void vlr_eval_compare_json(const vlr_eval_compare_stats *s, const char *name_a, const char *name_b, vlr_buf *out);

#endif
