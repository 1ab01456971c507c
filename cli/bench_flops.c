/* bench_flops.c: FLOP counts of the vision tower and the decoder (see bench_flops.h). */
#include "bench_flops.h"

/* ---- FLOP counts --------------------------------------------------------------------------- */

/* Sum of squared window sides along one axis of `len` merged tokens cut into windows of `win`
 * (the last one partial), as vlr_vision_windows tiles them. */
static double window_sq_sum(int len, int win) {
    double s = 0.0;
    for (int a = 0; a < len; a += win) {
        const int side = a + win < len ? win : len - a;
        s += (double)side * side;
    }
    return s;
}

double vlr_bench_vision_fixed_flops(const vlr_config *cfg, vlr_grid_thw g) {
    const vlr_vision_config *vc = &cfg->vision;
    const double unit = (double)vc->spatial_merge_size * vc->spatial_merge_size;
    const double n = (double)g.t * g.h * g.w, n_tok = n / unit, C = vc->hidden_size;
    const double M = unit * C, D = vc->out_hidden_size;
    const double patch_dim = (double)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    return 2.0 * n * patch_dim * C + 2.0 * n_tok * M * M + 2.0 * n_tok * M * D;
}

double vlr_bench_vision_block_flops(const vlr_config *cfg, vlr_grid_thw g, int block) {
    const vlr_vision_config *vc = &cfg->vision;
    const int merge = vc->spatial_merge_size;
    const double n = (double)g.t * g.h * g.w, C = vc->hidden_size, I = vc->intermediate_size;
    const double linear = 2.0 * n * C * (3.0 * C) + 2.0 * n * C * C + 3.0 * 2.0 * n * C * I;
    bool full = false;
    for (int f = 0; f < vc->n_fullatt; f++) full |= vc->fullatt_block_indexes[f] == block;
    double pairs; /* (query, key) pairs: the sum of squared segment lengths, in patches */
    const double frame = (double)g.h * g.w;
    const int unit_px = vc->patch_size * merge;
    const int win = unit_px > 0 ? vc->window_size / unit_px : 0;
    if (full || win <= 0 || merge <= 0) {
        pairs = (double)g.t * frame * frame;
    } else {
        /* a window of r x c merged tokens has r·c·merge² patches; summed squares factor per axis */
        const double unit = (double)merge * merge;
        pairs = (double)g.t * unit * unit * window_sq_sum(g.h / merge, win) * window_sq_sum(g.w / merge, win);
    }
    return linear + 2.0 * 2.0 * pairs * vc->head_dim * vc->num_heads;
}

double vlr_bench_vision_flops(const vlr_config *cfg, vlr_grid_thw g) {
    double f = vlr_bench_vision_fixed_flops(cfg, g);
    for (int i = 0; i < cfg->vision.depth; i++) f += vlr_bench_vision_block_flops(cfg, g, i);
    return f;
}

double vlr_bench_text_flops(const vlr_config *cfg, size_t n_cached, size_t n) {
    const vlr_text_config *tc = &cfg->text;
    const double D = tc->hidden_size, F = tc->intermediate_size, N = (double)n, c = (double)n_cached;
    const double Q = (double)tc->num_heads * tc->head_dim, KV = (double)tc->num_kv_heads * tc->head_dim;
    const double linear = 2.0 * N * D * Q + 2.0 * 2.0 * N * D * KV + 2.0 * N * Q * D + 3.0 * 2.0 * N * D * F;
    const double pairs = N * c + N * (N + 1.0) / 2.0; /* query i sees n_cached + i + 1 keys */
    const double attention = 2.0 * 2.0 * pairs * tc->head_dim * tc->num_heads;
    return (linear + attention) * tc->num_layers;
}
