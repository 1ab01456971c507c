/* vision.h: the Qwen2.5-VL vision tower (ViT with window attention + patch merger) for one image.
 *
 * vlr_vision_forward turns the image's pixel_values rows into its vision embeddings, one row per
 * `<|image_pad|>` token, in raster order of the merged grid. It keeps no state: scratch memory is
 * allocated at the start of the call and freed at the end, so its result is a standalone tensor the
 * caller may cache (e.g. by image hash). Weights are read in their stored dtype through the kernel
 * table of the execution context (kernels/exec.h); activations are fp32. Thread safety: any number
 * of concurrent calls on shared weights, each with its own context (a context's workspace serves
 * one call at a time). */
#ifndef VLR_VISION_H
#define VLR_VISION_H

#include "common.h"
#include "config.h"
#include "kernels/exec.h"
#include "rope.h"
#include "weights.h"

/* Merged tokens (= output rows) of an image: t * (h/merge) * (w/merge). */
size_t vlr_vision_n_tokens(const vlr_config *cfg, vlr_grid_thw grid);

/* Upper bound of the number of windows of an image (entries of cu_window_seqlens minus one):
 * t * ceil(lh/win) * ceil(lw/win) with lh, lw the merged grid and win = window_size/patch/merge. */
size_t vlr_vision_max_windows(const vlr_config *cfg, vlr_grid_thw grid);

/* Bytes of the working memory one vlr_vision_forward allocates for this grid (0 on overflow). */
size_t vlr_vision_scratch_bytes(const vlr_config *cfg, vlr_grid_thw grid);

/* The window layout of one image (upstream get_window_index): window_index [n_tokens] is the
 * permutation that puts merged tokens in window order (windows of win x win merged tokens tiled from
 * the top-left of each frame, partial at the right / bottom edges, in raster order; tokens in raster
 * order inside a window); cu_window_seqlens [*n_windows + 1] are the windows' boundaries in patch
 * rows of the window order, starting at 0 (empty windows do not occur: their repeats are removed). */
vlr_status vlr_vision_windows(const vlr_config *cfg, vlr_grid_thw grid, int32_t *window_index,
                              int32_t *cu_window_seqlens, size_t *n_windows, vlr_err *e);

/* The vision tower on one image.
 *   pixels: [t*h*w, in_channels*temporal_patch*patch^2] (1176), rows in the processor's order (2x2
 *           groups of patches consecutive); out: [vlr_vision_n_tokens, out_hidden_size], raster order.
 *   x:      the execution context. Its trace (NULL: none) records vision.patch_embed,
 *           vision.window_index, vision.cu_window_seqlens, vision.cu_seqlens,
 *           vision.after_window_reorder, vision.blocks.<i>, vision.merger_window_order,
 *           vision.merger_out (appending when several images are traced) and the grid. Its cancel
 *           flag is checked before every block: VLR_ERR_INTERRUPTED ("interrupted"), out unset. */
vlr_status vlr_vision_forward(const vlr_config *cfg, const vlr_vision_weights *w, const vlr_exec *x,
                              const float *pixels, vlr_grid_thw grid, float *out, vlr_err *e);

#endif
