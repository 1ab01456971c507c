/* rope.h: rotary position embeddings of Qwen2.5-VL: the multimodal position ids of the language
 * model (transformers' `get_rope_index`, images only), the text rotary tables built from them
 * (M-RoPE, `mrope_section`), and the 2-D rotary tables of the vision tower's patches.
 *
 * Tables are cos/sin rows of head_dim floats in the layout the `rope` kernel takes: the angle vector
 * of head_dim/2 entries repeated twice (rotate-half convention). Angles and their cos/sin are computed
 * in double and stored as float, as the float64 reference does. */
#ifndef VLR_ROPE_H
#define VLR_ROPE_H

#include "common.h"

/* An image's grid in patches (image_grid_thw): t frames (1 for images), h rows, w columns. */
typedef struct vlr_grid_thw {
    int t, h, w;
} vlr_grid_thw;

/* Position ids of get_rope_index for one sequence (after placeholder expansion):
 * text tokens get consecutive positions, equal in the three components; the image block whose first
 * `<|image_pad|>` would sit at p gets (p, p + row, p + col) for its merged token (row, col) of the
 * (t, h/merge, w/merge) grid (images have no temporal offset: upstream's second_per_grid_t is 0), and
 * the next text token continues at 1 + the block's largest position.
 *
 * ids: [n] token ids; grids: the images in order, each block is the next t*(h/merge)*(w/merge)
 * consecutive image_pad ids; pos: [3][n] out (temporal row, height row, width row), n entries each;
 * rope_delta: out, max position + 1 - n. Fails with VLR_ERR_INPUT when the image_pad runs do not
 * match the grids. */
vlr_status vlr_rope_positions(const int32_t *ids, size_t n, int32_t image_pad,
                              const vlr_grid_thw *grids, size_t n_grids, int merge, int32_t *pos,
                              int64_t *rope_delta, vlr_err *e);

/* Text rotary tables for n tokens: pos is [3][ld_pos] (the three components of the tokens, token i
 * at pos[c*ld_pos + i]); frequency j < head_dim/2 has inv_freq theta^(-2j/head_dim) and takes the
 * temporal position for j < s0, the height position for s0 <= j < s0+s1, the width position above
 * (mrope_section = {s0, s1, s2}, s0+s1+s2 = head_dim/2). cos_tab, sin_tab: [n, head_dim] out. */
void vlr_rope_text_tables(const int32_t *pos, size_t ld_pos, size_t n, int head_dim, double theta,
                          const int mrope_section[3], float *cos_tab, float *sin_tab);

/* Vision rotary row of one patch at (row, col) of its image's patch grid: with d = head_dim/2 and
 * inv_freq_j = 10000^(-2j/d) (j < d/2), the angle vector is [row*inv_freq, col*inv_freq] (d entries),
 * repeated twice. cos_row, sin_row: [head_dim] out. */
void vlr_rope_vision_row(int row, int col, int head_dim, float *cos_row, float *sin_row);

#endif
