/* rope.c: multimodal position ids (get_rope_index) and the rotary cos/sin tables of the text model
 * (M-RoPE) and of the vision tower (2-D RoPE). See rope.h for the definitions.
 *
 * Matches transformers' Qwen2_5_VLModel.get_rope_index for images (videos are not supported by this
 * engine): for an image, upstream sets second_per_grid_t = 0, so every merged token of the block has
 * temporal position p. This file does not apply the rotation (the `rope` kernel does). */
#include "rope.h"

#include <math.h>

vlr_status vlr_rope_positions(const int32_t *ids, size_t n, int32_t image_pad,
                              const vlr_grid_thw *grids, size_t n_grids, int merge, int32_t *pos,
                              int64_t *rope_delta, vlr_err *e) {
    int32_t *pos_t = pos, *pos_h = pos + n, *pos_w = pos + 2 * n;
    int64_t next = 0; /* position of the next text token */
    size_t image = 0;
    size_t i = 0;
    if (merge <= 0) return vlr_fail(e, VLR_ERR_INTERNAL, "rope positions: merge size %d", merge);
    while (i < n) {
        if (ids[i] != image_pad) {
            pos_t[i] = pos_h[i] = pos_w[i] = (int32_t)next;
            next++;
            i++;
            continue;
        }
        if (image == n_grids)
            return vlr_fail(e, VLR_ERR_INPUT,
                            "rope positions: image_pad at token %zu but only %zu image grids", i,
                            n_grids);
        const vlr_grid_thw g = grids[image];
        if (g.t <= 0 || g.h <= 0 || g.w <= 0 || g.h % merge || g.w % merge)
            return vlr_fail(e, VLR_ERR_INPUT, "rope positions: image %zu has grid %dx%dx%d", image,
                            g.t, g.h, g.w);
        const int lh = g.h / merge, lw = g.w / merge;
        const size_t count = (size_t)g.t * (size_t)lh * (size_t)lw;
        if (count > n - i)
            return vlr_fail(e, VLR_ERR_INPUT,
                            "rope positions: image %zu needs %zu image_pad tokens from token %zu, "
                            "the sequence has %zu tokens",
                            image, count, i, n);
        for (size_t k = 0; k < count; k++) {
            if (ids[i + k] != image_pad)
                return vlr_fail(e, VLR_ERR_INPUT,
                                "rope positions: image %zu: token %zu is not image_pad (the block "
                                "needs %zu)",
                                image, i + k, count);
            const size_t in_frame = k % ((size_t)lh * (size_t)lw);
            pos_t[i + k] = (int32_t)next;
            pos_h[i + k] = (int32_t)(next + (int64_t)(in_frame / (size_t)lw));
            pos_w[i + k] = (int32_t)(next + (int64_t)(in_frame % (size_t)lw));
        }
        /* the block's largest position is next + max(lh, lw) - 1 (temporal offsets are 0) */
        next += lh > lw ? lh : lw;
        i += count;
        image++;
    }
    if (image != n_grids)
        return vlr_fail(e, VLR_ERR_INPUT,
                        "rope positions: %zu image grids but %zu image_pad blocks in the tokens",
                        n_grids, image);
    *rope_delta = next - (int64_t)n;
    return VLR_OK;
}

void vlr_rope_text_tables(const int32_t *pos, size_t ld_pos, size_t n, int head_dim, double theta,
                          const int mrope_section[3], float *cos_tab, float *sin_tab) {
    const int half = head_dim / 2;
    for (size_t i = 0; i < n; i++) {
        float *c = cos_tab + i * (size_t)head_dim, *s = sin_tab + i * (size_t)head_dim;
        for (int j = 0; j < half; j++) {
            /* which component drives frequency j: mrope_section splits the half-vector in 3 */
            int comp = j < mrope_section[0] ? 0 : j < mrope_section[0] + mrope_section[1] ? 1 : 2;
            double inv_freq = pow(theta, -2.0 * j / head_dim);
            double angle = (double)pos[(size_t)comp * ld_pos + i] * inv_freq;
            c[j] = c[j + half] = (float)cos(angle);
            s[j] = s[j + half] = (float)sin(angle);
        }
    }
}

void vlr_rope_vision_row(int row, int col, int head_dim, float *cos_row, float *sin_row) {
    /* Qwen2_5_VisionRotaryEmbedding(head_dim/2): d = head_dim/2 angles, the first d/2 from the row,
     * the next d/2 from the column, each with inv_freq_j = 10000^(-2j/d) */
    const int d = head_dim / 2, quarter = d / 2;
    for (int j = 0; j < quarter; j++) {
        double inv_freq = pow(10000.0, -2.0 * j / d);
        double a_row = row * inv_freq, a_col = col * inv_freq;
        cos_row[j] = cos_row[j + d] = (float)cos(a_row);
        sin_row[j] = sin_row[j + d] = (float)sin(a_row);
        cos_row[quarter + j] = cos_row[quarter + j + d] = (float)cos(a_col);
        sin_row[quarter + j] = sin_row[quarter + j + d] = (float)sin(a_col);
    }
}
