/* forward.h: the model's forward pass on one sequence, with no reuse policy of its own: the vision
 * tower per image, the embedding with the image rows scattered in, the decoder from a start token
 * against the KV cache, the value head at the last row. model.c puts the reuse (session prefix,
 * prefix cache, vision cache) on top; `vlreward bench` calls it as is. */
#ifndef VLR_FORWARD_H
#define VLR_FORWARD_H

#include "common.h"
#include "config.h"
#include "image.h"
#include "kernels/exec.h"
#include "text.h"
#include "weights.h"

typedef struct vlr_forward_seq {
    const int32_t *ids;        /* [n] the whole sequence */
    const int32_t *positions;  /* [3][n] its M-RoPE positions */
    size_t n;
    size_t start;              /* tokens [0, start) are in the text state's KV cache already */
    size_t n_images;
    const vlr_prepared_image *images; /* [n_images] pixel_values and grid */
    const size_t *image_start; /* [n_images] index of each image's first placeholder */
    const size_t *image_rows;  /* [n_images] its placeholders = vision rows */
    float *vision;             /* [sum image_rows, D] image i's rows at the sum of the rows before it */
    const bool *have;          /* [n_images] or NULL: rows already in `vision` (the tower is skipped) */
    bool *ran;                 /* [n_images] or NULL: set where the tower ran */
} vlr_forward_seq;

/* Seconds spent in each part of the last vlr_forward (the benchmark scales them separately). */
typedef struct vlr_forward_times {
    double vision_s, embed_s, decoder_s;
} vlr_forward_times;

vlr_status vlr_forward(const vlr_config *cfg, const vlr_weights *w, const vlr_exec *x, vlr_text_state *text,
                       const vlr_forward_seq *q, double *score, vlr_forward_times *times, vlr_err *e);

/* n_suffixes text-only continuations of the tokens the text state holds (a group's answers after
 * their shared prompt; see vlr_text_prefill_suffixes): ids [sum len] stacked, positions [3][ld_pos]
 * in the same rows; scores[j] is bit-identical to vlr_forward of the prompt + suffix j. The text
 * state holds the prompt only afterwards. An image placeholder among the ids is an error. */
vlr_status vlr_forward_suffixes(const vlr_config *cfg, const vlr_weights *w, vlr_text_state *text,
                                const int32_t *ids, const int32_t *positions, size_t ld_pos, const size_t *len,
                                size_t n_suffixes, double *scores, vlr_forward_times *times, vlr_err *e);

#endif
