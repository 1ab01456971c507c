/* forward.c: the whole model forward of one sequence (see forward.h). Shapes: D = hidden size, n
 * tokens, the new ones [start, n); image i owns ids [image_start[i], + image_rows[i]) and the same
 * count of vision rows. */
#include "forward.h"

#include <stdlib.h>

#include "vision.h"

vlr_status vlr_forward(const vlr_config *cfg, const vlr_weights *w, const vlr_exec *x, vlr_text_state *text,
                       const vlr_forward_seq *q, double *score, vlr_forward_times *times, vlr_err *e) {
    const size_t D = (size_t)cfg->text.hidden_size, n_new = q->n - q->start;
    vlr_forward_times t = {0};
    vlr_status rc = VLR_OK;
    if (q->start >= q->n || vlr_text_n_cached(text) != q->start)
        return vlr_fail(e, VLR_ERR_INTERNAL, "forward: start %zu of %zu tokens, %zu cached", q->start, q->n,
                        vlr_text_n_cached(text));
    /* 1. vision [rows_i, D] per image with placeholders at or after start; rows_before: the vision rows
     *    of the tokens before start */
    size_t rows_before = 0, n_vision = 0;
    double t0 = vlr_now();
    for (size_t i = 0, row = 0; i < q->n_images; row += q->image_rows[i], i++) {
        const size_t first = q->image_start[i], end = first + q->image_rows[i];
        n_vision += q->image_rows[i];
        rows_before += end <= q->start ? q->image_rows[i] : first < q->start ? q->start - first : 0;
        if (q->ran) q->ran[i] = false;
        if (end <= q->start || (q->have && q->have[i])) continue;
        const vlr_prepared_image *img = &q->images[i];
        vlr_grid_thw g = {img->grid_t, img->grid_h, img->grid_w};
        if ((rc = vlr_vision_forward(cfg, &w->vision, x, img->pixel_values, g, q->vision + row * D, e))) {
            if (rc != VLR_ERR_INTERRUPTED) vlr_err_prefix(e, "image %zu: ", i + 1);
            return rc;
        }
        if (q->ran) q->ran[i] = true;
    }
    t.vision_s = vlr_now() - t0;
    /* 2. embeds [n_new, D]: token rows, image rows scattered at the placeholders */
    size_t bytes;
    if (!vlr_mul_ok(n_new, D * sizeof(float), &bytes)) return vlr_fail(e, VLR_ERR_LIMIT, "sequence too long");
    float *embeds = vlr_malloc(bytes, e);
    if (!embeds) return VLR_ERR_NOMEM;
    t0 = vlr_now();
    rc = vlr_text_embed(cfg, &w->text, q->ids + q->start, n_new, n_vision ? q->vision + rows_before * D : NULL,
                        n_vision - rows_before, embeds, e);
    t.embed_s = vlr_now() - t0;
    /* 3. decoder over the new tokens against the cached [start, KV] rows; 4. value head at the last */
    t0 = vlr_now();
    if (rc == VLR_OK) rc = vlr_text_prefill(text, embeds, q->positions + q->start, q->n, n_new, score, e);
    t.decoder_s = vlr_now() - t0;
    free(embeds);
    if (times) *times = t;
    return rc;
}

vlr_status vlr_forward_suffixes(const vlr_config *cfg, const vlr_weights *w, vlr_text_state *text,
                                const int32_t *ids, const int32_t *positions, size_t ld_pos, const size_t *len,
                                size_t n_suffixes, double *scores, vlr_forward_times *times, vlr_err *e) {
    const size_t D = (size_t)cfg->text.hidden_size;
    vlr_forward_times t = {0};
    size_t rows = 0, bytes;
    for (size_t j = 0; j < n_suffixes; j++) rows += len[j];
    if (rows == 0) return vlr_fail(e, VLR_ERR_INPUT, "forward: no suffix tokens");
    if (!vlr_mul_ok(rows, D * sizeof(float), &bytes)) return vlr_fail(e, VLR_ERR_LIMIT, "suffixes too long");
    float *embeds = vlr_malloc(bytes, e);
    if (!embeds) return VLR_ERR_NOMEM;
    double t0 = vlr_now();
    vlr_status rc = vlr_text_embed(cfg, &w->text, ids, rows, NULL, 0, embeds, e); /* no image rows */
    t.embed_s = vlr_now() - t0;
    t0 = vlr_now();
    if (rc == VLR_OK) rc = vlr_text_prefill_suffixes(text, embeds, positions, ld_pos, len, n_suffixes, scores, e);
    t.decoder_s = vlr_now() - t0;
    free(embeds);
    if (times) *times = t;
    return rc;
}
