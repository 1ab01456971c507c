/* bench_flops.h: the FLOP counts `vlreward bench` reports (GFLOP/s = counted FLOPs / time), from a
 * model's config and an image grid alone. CLI-only: the library never counts FLOPs. */
#ifndef VLR_BENCH_FLOPS_H
#define VLR_BENCH_FLOPS_H

#include "internal.h"

/* FLOP counts, 2 per multiply-add: 2·m·n·k for every matrix product and 2·2·n_q·n_kv·head_dim per
 * head for attention (q·kᵀ and p·v), with n_q·n_kv the (query, key) pairs a query may see. Norms,
 * RoPE, activations, softmax exponentials and the value head are not counted (they are O(n·D)).
 *
 * Vision: patch embedding + merger (vlr_bench_vision_fixed_flops) and each block (window blocks
 * attend inside windows of window_size/patch/merge merged tokens, full blocks over the frame). */
double vlr_bench_vision_fixed_flops(const vlr_config *cfg, vlr_grid_thw g);
double vlr_bench_vision_block_flops(const vlr_config *cfg, vlr_grid_thw g, int block);
double vlr_bench_vision_flops(const vlr_config *cfg, vlr_grid_thw g); /* fixed + every block */
/* Decoder prefill of n tokens after n_cached cached ones, every layer of cfg: query i (0-based among
 * the new ones) sees n_cached + i + 1 keys. */
double vlr_bench_text_flops(const vlr_config *cfg, size_t n_cached, size_t n);

#endif
