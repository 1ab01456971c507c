/* trace.h: per-stage summaries of a forward pass, to locate a divergence from the goldens.
 *
 * A vlr_trace collects, for named stages ("vision.patch_embed", "vision.blocks.3", "text.layers.0",
 * ...), the summary the reference writes in tests/reference/traces/<id>.json: shape, float64 sum and
 * sum of absolute values over the whole tensor, the first 4 values of the first and of the last row,
 * and the float64 sum of the last row. Integer stages (window_index, cu_seqlens) keep their values.
 *
 * Recording a stage name a second time appends rows, as if the tensors had been concatenated: the
 * forward passes run one image at a time and the text in chunks, and the appended summary equals the
 * summary of the whole tensor (sums add, the first row stays, the last row is replaced). Integer
 * stages append with the offset upstream uses when it concatenates images (see vlr_trace_ints_mode).
 *
 * Every forward function takes a `vlr_trace *` that may be NULL: then nothing is recorded and nothing
 * is computed for tracing. Tracing never fails the forward pass: an allocation failure sets a sticky
 * flag (vlr_trace_oom) and later records are dropped. Not thread-safe: one trace per request. */
#ifndef VLR_TRACE_H
#define VLR_TRACE_H

#include "common.h"

#define VLR_TRACE_NAME_CAP 48

typedef struct vlr_trace_stage {
    char name[VLR_TRACE_NAME_CAP];
    bool is_ints;
    /* float stages */
    int64_t rows, cols;
    double sum, sum_abs;     /* over every element, float64 */
    double first_row[4];     /* first min(4, cols) values of row 0 */
    double last_row[4];      /* first min(4, cols) values of the last row */
    double last_sum;         /* float64 sum of the last row */
    const char *label;       /* "window" / "full" for vision blocks, else NULL (static string) */
    /* integer stages */
    int64_t *ints;
    size_t n_ints, cap_ints;
} vlr_trace_stage;

typedef struct vlr_trace_grid { int t, h, w; } vlr_trace_grid;

typedef struct vlr_trace {
    vlr_trace_stage *stages; /* in first-record order */
    size_t n_stages, cap_stages;
    vlr_trace_grid *grids;   /* image grids in patches, in the order the images were traced */
    size_t n_grids, cap_grids;
    bool has_score;
    double score;
    bool oom;                /* sticky: a record was dropped for lack of memory */
} vlr_trace;

typedef enum vlr_trace_ints_mode {
    VLR_TRACE_INTS_PERMUTATION, /* values are a permutation of 0..n-1: append offset by the count so far */
    VLR_TRACE_INTS_CUMULATIVE   /* values are offsets starting at 0: append offset by the last value,
                                   dropping the leading 0 (upstream's concatenated cu_seqlens) */
} vlr_trace_ints_mode;

/* A zeroed vlr_trace is an empty trace; free releases what records allocated. */
void vlr_trace_init(vlr_trace *t);
void vlr_trace_free(vlr_trace *t); /* NULL is a no-op */

/* Summarises rows x cols floats (row stride ld) under name; appends when name exists. t may be NULL. */
void vlr_trace_tensor(vlr_trace *t, const char *name, const float *x, size_t rows, size_t cols,
                      size_t ld);
/* Like vlr_trace_tensor, and labels the stage (a static string such as "window"). */
void vlr_trace_tensor_labeled(vlr_trace *t, const char *name, const float *x, size_t rows,
                              size_t cols, size_t ld, const char *label);
/* Records integers under name; appends in the given mode when name exists. */
void vlr_trace_ints(vlr_trace *t, const char *name, const int32_t *v, size_t n,
                    vlr_trace_ints_mode mode);
void vlr_trace_add_grid(vlr_trace *t, int grid_t, int grid_h, int grid_w);
void vlr_trace_set_score(vlr_trace *t, double score);

/* The stage recorded under name, or NULL. */
const vlr_trace_stage *vlr_trace_find(const vlr_trace *t, const char *name);
static inline bool vlr_trace_oom(const vlr_trace *t) { return t && t->oom; }

/* Appends a JSON object shaped like tests/reference/traces/<id>.json: "seq_len", "image_grid_thw",
 * "vision" (when any vision stage was recorded), "text" and "score" (when set). Stages that were not
 * recorded are left out. Allocation failure is reported through out->oom. */
void vlr_trace_write_json(const vlr_trace *t, vlr_buf *out);

#endif
