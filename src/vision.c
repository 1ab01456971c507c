/* vision.c: the Qwen2.5-VL vision tower for one image, following transformers'
 * Qwen2_5_VisionTransformerPretrainedModel: patch embedding, 2-D rotary tables, window reordering,
 * blocks with window or full attention, the patch merger, and the inverse reordering.
 *
 * Attention is block-diagonal: every window (or the whole frame, for the blocks listed in
 * fullatt_block_indexes) is one call of the attention kernel over its own rows, so no n x n mask is
 * ever built (llama.cpp's mtmd builds a dense mask). All activations are fp32; the MLP runs over row
 * blocks so its [rows, intermediate] scratch stays bounded for large images.
 *
 * Not here: the image pipeline that produces pixel_values (image_prep.c), the scatter of the result
 * into the text embeddings (text.c), videos (t > 1 is handled like upstream, but nothing feeds it). */
#include "vision.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define VISION_EPS 1e-6f        /* every vision RMSNorm (ln_q included): Qwen2RMSNorm(eps=1e-6) */
#define VISION_MLP_ROWS 1024    /* rows per MLP block: bounds gate/up scratch to 2 x 1024 x I */

/* Everything one forward needs, so each stage reads like the model card. */
typedef struct vision_ctx {
    const vlr_exec *exec; /* table, threads, workspace, cancel flag, trace */
    bool own_arena;       /* x was malloc'd here (the context has no activation arena) */
    const vlr_kernels *k; /* exec->k */
    int n;              /* N: patch rows t*h*w */
    int c, heads, hd;   /* C: hidden size, heads, head_dim */
    int inter;          /* I: MLP width */
    float *x;           /* [N, C] residual stream, window order after the reorder; the arena */
    float *xn;          /* [N, C] normed x (also patch_embed output before the reorder) */
    float *qkv;         /* [N, 3C] q | k | v per row; later the merger's fc1 output [N/4, 4C] */
    float *att;         /* [N, C] attention output; later the merger output [N/4, D] */
    float *gate, *up;   /* [VISION_MLP_ROWS, I] */
    float *cos_tab, *sin_tab; /* [N, hd] rotary tables in window order */
    size_t patch_dim;   /* 1176: in_channels * temporal_patch * patch^2 */
    size_t unit;        /* merge^2 patches per merged token */
    size_t n_tokens;    /* merged tokens t*(h/merge)*(w/merge) */
    int32_t *window_index;    /* [n_tokens] window order -> raster merged token */
    int32_t *cu_window;       /* [n_windows + 1] window boundaries in patch rows */
    size_t n_windows;
    int32_t *cu_full;         /* [t + 1] frame boundaries in patch rows */
} vision_ctx;

size_t vlr_vision_n_tokens(const vlr_config *cfg, vlr_grid_thw g) {
    const int m = cfg->vision.spatial_merge_size;
    return (size_t)g.t * (size_t)(g.h / m) * (size_t)(g.w / m);
}

/* merged tokens per window side: window_size / patch / merge (112 / 14 / 2 = 4) */
static int window_side(const vlr_config *cfg) {
    const int unit = cfg->vision.patch_size * cfg->vision.spatial_merge_size;
    return unit > 0 ? cfg->vision.window_size / unit : 0;
}

size_t vlr_vision_max_windows(const vlr_config *cfg, vlr_grid_thw g) {
    const int m = cfg->vision.spatial_merge_size, win = window_side(cfg);
    if (m <= 0 || win <= 0) return 0;
    const size_t lh = (size_t)(g.h / m), lw = (size_t)(g.w / m);
    return (size_t)g.t * ((lh + win - 1) / win) * ((lw + win - 1) / win);
}

vlr_status vlr_vision_windows(const vlr_config *cfg, vlr_grid_thw g, int32_t *window_index,
                              int32_t *cu_window_seqlens, size_t *n_windows, vlr_err *e) {
    const int m = cfg->vision.spatial_merge_size, win = window_side(cfg);
    if (m <= 0 || win <= 0 || cfg->vision.window_size % (cfg->vision.patch_size * m) != 0)
        return vlr_fail(e, VLR_ERR_CONFIG, "vision: window_size %d is not a multiple of %d x %d",
                        cfg->vision.window_size, cfg->vision.patch_size, m);
    if (g.t <= 0 || g.h <= 0 || g.w <= 0 || g.h % m || g.w % m)
        return vlr_fail(e, VLR_ERR_INPUT, "vision: grid %dx%dx%d is not a multiple of merge %d",
                        g.t, g.h, g.w, m);
    const int lh = g.h / m, lw = g.w / m, unit = m * m;
    size_t out = 0, nw = 0;
    cu_window_seqlens[0] = 0;
    for (int f = 0; f < g.t; f++)
        for (int wr = 0; wr < lh; wr += win)
            for (int wc = 0; wc < lw; wc += win) {
                const int r_end = wr + win < lh ? wr + win : lh;
                const int c_end = wc + win < lw ? wc + win : lw;
                for (int r = wr; r < r_end; r++)
                    for (int c = wc; c < c_end; c++)
                        window_index[out++] = (int32_t)(((size_t)f * lh + r) * lw + c);
                nw++;
                cu_window_seqlens[nw] = (int32_t)(out * unit);
            }
    *n_windows = nw;
    return VLR_OK;
}

/* The product y [m, n] (=|+=) x [m, k] · wᵀ + b, with n = w.shape[0] and k = numel / n (patch_embed
 * is 5-D); run by vlr_exec_linears, alone or with others of the same x. */
static vlr_gemm_args product(float *y, size_t ldy, const float *x, size_t ldx, int m, const vlr_tensor *w,
                             const vlr_tensor *b, bool accumulate) {
    const int n = (int)w->shape[0];
    return (vlr_gemm_args){.y = y, .ldy = ldy, .x = x, .ldx = ldx, .w = w->data, .w_dtype = w->dtype,
                           .bias = b ? b->data : NULL, .bias_dtype = b ? b->dtype : VLR_DT_F32,
                           .m = m, .n = n, .k = (int)(vlr_tensor_numel(w) / n),
                           .accumulate = accumulate, .wq = w->q};
}

static void linear(const vision_ctx *c, float *y, size_t ldy, const float *x, size_t ldx, int m,
                   const vlr_tensor *w, const vlr_tensor *b, bool accumulate) {
    const vlr_gemm_args a = product(y, ldy, x, ldx, m, w, b, accumulate);
    vlr_exec_linears(c->exec, &a, 1);
}

/* Block-diagonal attention: each segment (a window, or a whole frame) attends only to itself. One
 * varlen kernel call covers every segment, so a block pays for one parallel region, not one per
 * window; the bits equal one call per segment. */
static void attention_segments(const vision_ctx *c, const int32_t *cu, size_t n_seg) {
    const size_t C = (size_t)c->c;
    vlr_attention_args a = {.out = c->att, .ld_out = C, .q = c->qkv, .ld_q = 3 * C,
                            .k = c->qkv + C, .v = c->qkv + 2 * C, .ld_kv = 3 * C,
                            .n_q = c->n, .n_kv = c->n, .n_heads = c->heads, .n_kv_heads = c->heads,
                            .head_dim = c->hd, .causal_offset = -1, .scale = 1.0f / sqrtf((float)c->hd),
                            .cu_seqlens = cu, .n_seqs = (int)n_seg};
    c->k->attention(&a, c->exec);
}

/* One block (Qwen2_5_VLVisionBlock): x += proj(attn(norm1(x))); x += down(silu(gate(h)) * up(h)),
 * h = norm2(x). The attention segments are the windows or the whole frames (cu, in patch rows). */
static void vision_block(const vision_ctx *c, const vlr_vision_block_weights *b, const int32_t *cu,
                         size_t n_seg) {
    const int N = c->n, C = c->c;
    c->k->rmsnorm(c->xn, c->x, N, C, b->norm1.data, b->norm1.dtype, VISION_EPS); /* xn [N, C] */
    linear(c, c->qkv, 3 * C, c->xn, C, N, &b->qkv_w, &b->qkv_b, false);           /* qkv [N, 3C] */
    c->k->rope(c->qkv, 3 * (size_t)C, N, c->heads, c->hd, c->cos_tab, c->sin_tab); /* q */
    c->k->rope(c->qkv + C, 3 * (size_t)C, N, c->heads, c->hd, c->cos_tab, c->sin_tab); /* k */
    attention_segments(c, cu, n_seg);                                             /* att [N, C] */
    linear(c, c->x, C, c->att, C, N, &b->proj_w, &b->proj_b, true);               /* x += */
    c->k->rmsnorm(c->xn, c->x, N, C, b->norm2.data, b->norm2.dtype, VISION_EPS);  /* xn [N, C] */
    for (int r0 = 0; r0 < N; r0 += VISION_MLP_ROWS) {
        const int rows = N - r0 < VISION_MLP_ROWS ? N - r0 : VISION_MLP_ROWS;
        const float *h = c->xn + (size_t)r0 * C;
        const vlr_gemm_args gate_up[2] = {product(c->gate, c->inter, h, C, rows, &b->gate_w, &b->gate_b, false),
                                          product(c->up, c->inter, h, C, rows, &b->up_w, &b->up_b, false)};
        vlr_exec_linears(c->exec, gate_up, 2);                                    /* [rows, I] each */
        c->k->silu_mul(c->gate, c->up, (size_t)rows * c->inter);
        linear(c, c->x + (size_t)r0 * C, C, c->gate, c->inter, rows, &b->down_w, &b->down_b,
               true);                                                             /* x += */
    }
}

/* Rotary rows in window order: window-order row 4j+q is patch row 4*window_index[j]+q of the
 * processor's order, whose (row, col) in the patch grid follows from the merge grouping
 * (upstream rot_pos_emb: h/m, m, w/m, m permuted to h/m, w/m, m, m). */
static void vision_rotary_tables(const vision_ctx *c, vlr_grid_thw g, int merge,
                                 const int32_t *window_index, size_t n_tokens) {
    const size_t unit = (size_t)merge * merge, frame = (size_t)g.h * g.w;
    const int lw = g.w / merge;
    for (size_t j = 0; j < n_tokens; j++)
        for (size_t q = 0; q < unit; q++) {
            const size_t src = (size_t)window_index[j] * unit + q;
            const size_t group = (src % frame) / unit;
            const int row = (int)(group / lw) * merge + (int)(q / merge);
            const int col = (int)(group % lw) * merge + (int)(q % merge);
            const size_t dst = j * unit + q;
            vlr_rope_vision_row(row, col, c->hd, c->cos_tab + dst * c->hd,
                                c->sin_tab + dst * c->hd);
        }
}

/* Checked running sum of float counts; false on overflow. */
static bool sizes_add(size_t *total, size_t n) { return vlr_add_ok(*total, n, total); }

/* One arena per forward: x, xn [N, C]; qkv [N, 3C]; att [N, max(C, D/unit)]; gate, up
 * [min(N, VISION_MLP_ROWS), I]; cos, sin [N, hd]. 0 when the sizes overflow. */
size_t vlr_vision_scratch_bytes(const vlr_config *cfg, vlr_grid_thw g) {
    const vlr_vision_config *vc = &cfg->vision;
    size_t n_patches, tmp, nc, n3c, n_att, n_mlp, n_rot, total = 0;
    if (g.t <= 0 || g.h <= 0 || g.w <= 0) return 0;
    if (!vlr_mul_ok((size_t)g.t, (size_t)g.h, &tmp) || !vlr_mul_ok(tmp, (size_t)g.w, &n_patches)) return 0;
    const size_t mlp_rows = n_patches < VISION_MLP_ROWS ? n_patches : VISION_MLP_ROWS;
    bool ok = vlr_mul_ok(n_patches, (size_t)vc->hidden_size, &nc) && vlr_mul_ok(nc, 3, &n3c) &&
              vlr_mul_ok(vlr_vision_n_tokens(cfg, g), (size_t)vc->out_hidden_size, &n_att) &&
              vlr_mul_ok(mlp_rows, (size_t)vc->intermediate_size, &n_mlp) &&
              vlr_mul_ok(n_patches, (size_t)vc->head_dim, &n_rot);
    if (ok && n_att < nc) n_att = nc;
    ok = ok && sizes_add(&total, nc) && sizes_add(&total, nc) && sizes_add(&total, n3c) &&
         sizes_add(&total, n_att) && sizes_add(&total, n_mlp) && sizes_add(&total, n_mlp) &&
         sizes_add(&total, n_rot) && sizes_add(&total, n_rot) && vlr_mul_ok(total, sizeof(float), &tmp);
    return ok ? tmp : 0;
}

/* Checks the dimensions, allocates every buffer of one forward and computes the window layout. */
static vlr_status vision_setup(vision_ctx *c, const vlr_config *cfg, const vlr_vision_weights *w,
                               vlr_grid_thw g, vlr_err *e) {
    const vlr_vision_config *vc = &cfg->vision;
    const int m = vc->spatial_merge_size, C = vc->hidden_size, D = vc->out_hidden_size;
    if (m <= 0 || C <= 0 || vc->num_heads <= 0 || vc->head_dim * vc->num_heads != C ||
        vc->head_dim % 4 != 0 || vc->intermediate_size <= 0 || D <= 0)
        return vlr_fail(e, VLR_ERR_CONFIG, "vision: inconsistent dimensions (hidden %d, heads %d, "
                        "head_dim %d, merge %d)", C, vc->num_heads, vc->head_dim, m);
    if (g.t <= 0 || g.h <= 0 || g.w <= 0 || g.h % m || g.w % m)
        return vlr_fail(e, VLR_ERR_INPUT, "vision: grid %dx%dx%d is not a multiple of merge %d",
                        g.t, g.h, g.w, m);
    c->patch_dim = (size_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size *
                   vc->patch_size;
    if ((size_t)vlr_tensor_numel(&w->patch_embed) != (size_t)C * c->patch_dim)
        return vlr_fail(e, VLR_ERR_SHAPE, "vision: patch_embed has %lld elements, expected %d x %zu",
                        (long long)vlr_tensor_numel(&w->patch_embed), C, c->patch_dim);
    size_t n_patches, tmp;
    if (!vlr_mul_ok((size_t)g.t, (size_t)g.h, &tmp) || !vlr_mul_ok(tmp, (size_t)g.w, &n_patches) ||
        n_patches > (size_t)INT32_MAX / 4)
        return vlr_fail(e, VLR_ERR_LIMIT, "vision: grid %dx%dx%d is too large", g.t, g.h, g.w);
    c->n = (int)n_patches;
    c->c = C;
    c->heads = vc->num_heads;
    c->hd = vc->head_dim;
    c->inter = vc->intermediate_size;
    c->unit = (size_t)m * m;
    c->n_tokens = vlr_vision_n_tokens(cfg, g);

    size_t total = vlr_vision_scratch_bytes(cfg, g) / sizeof(float);
    if (!total) return vlr_fail(e, VLR_ERR_LIMIT, "vision: grid %dx%dx%d is too large", g.t, g.h, g.w);
    const size_t nc = n_patches * (size_t)C, n3c = 3 * nc, n_rot = n_patches * (size_t)c->hd;
    const size_t mlp_rows = c->n < VISION_MLP_ROWS ? (size_t)c->n : VISION_MLP_ROWS;
    const size_t n_mlp = mlp_rows * (size_t)c->inter;
    size_t n_att = c->n_tokens * (size_t)D;
    if (n_att < nc) n_att = nc;
    if (c->exec->acts) {
        c->x = vlr_workspace_reserve(c->exec->acts, total * sizeof(float));
        if (!c->x) return vlr_fail(e, VLR_ERR_NOMEM, "vision: out of memory for %zu activations", total);
    } else {
        c->x = vlr_malloc(total * sizeof(float), e);
        c->own_arena = true;
    }
    c->window_index = vlr_malloc(c->n_tokens * sizeof *c->window_index, e);
    c->cu_window = vlr_malloc((vlr_vision_max_windows(cfg, g) + 1) * sizeof *c->cu_window, e);
    c->cu_full = vlr_malloc(((size_t)g.t + 1) * sizeof *c->cu_full, e);
    if (!c->x || !c->window_index || !c->cu_window || !c->cu_full) return VLR_ERR_NOMEM;
    c->xn = c->x + nc;
    c->qkv = c->xn + nc;
    c->att = c->qkv + n3c;
    c->gate = c->att + n_att;
    c->up = c->gate + n_mlp;
    c->cos_tab = c->up + n_mlp;
    c->sin_tab = c->cos_tab + n_rot;

    /* full attention runs over each frame: upstream cu_seqlens, in patch rows */
    for (int f = 0; f <= g.t; f++) c->cu_full[f] = f * g.h * g.w;
    return vlr_vision_windows(cfg, g, c->window_index, c->cu_window, &c->n_windows, e);
}

/* Patch merger (Qwen2_5_VLPatchMerger) on x in window order: ln_q per patch, unit consecutive
 * patches concatenated, fc1, exact GELU, fc2. Returns the [n_tokens, D] rows (in c->att). */
static float *vision_merger(const vision_ctx *c, const vlr_vision_weights *w) {
    const int n_merged = (int)c->n_tokens, C4 = (int)c->unit * c->c;
    const int D = (int)w->merger_fc2_w.shape[0];
    float *fc1 = c->qkv, *merged = c->att;
    c->k->rmsnorm(c->xn, c->x, c->n, c->c, w->merger_norm.data, w->merger_norm.dtype, VISION_EPS);
    linear(c, fc1, C4, c->xn, C4, n_merged, &w->merger_fc1_w, &w->merger_fc1_b, false); /* [N/4, 4C] */
    c->k->gelu(fc1, (size_t)n_merged * C4);
    linear(c, merged, D, fc1, C4, n_merged, &w->merger_fc2_w, &w->merger_fc2_b, false); /* [N/4, D] */
    return merged;
}

vlr_status vlr_vision_forward(const vlr_config *cfg, const vlr_vision_weights *w, const vlr_exec *x,
                              const float *pixels, vlr_grid_thw g, float *out, vlr_err *e) {
    const vlr_vision_config *vc = &cfg->vision;
    vlr_trace *trace = x->trace;
    vision_ctx c = {.exec = x, .k = x->k};
    vlr_status rc = vision_setup(&c, cfg, w, g, e);
    if (rc) goto done;
    const int N = c.n, C = c.c, D = vc->out_hidden_size;
    const size_t unit = c.unit;
    vlr_trace_add_grid(trace, g.t, g.h, g.w);

    /* patch embedding: Conv3d with stride = kernel is a matmul over the flattened patch */
    linear(&c, c.xn, C, pixels, c.patch_dim, N, &w->patch_embed, NULL, false);    /* [N, C] */
    vlr_trace_tensor(trace, "vision.patch_embed", c.xn, N, C, C);
    vlr_trace_ints(trace, "vision.window_index", c.window_index, c.n_tokens,
                   VLR_TRACE_INTS_PERMUTATION);
    vlr_trace_ints(trace, "vision.cu_window_seqlens", c.cu_window, c.n_windows + 1,
                   VLR_TRACE_INTS_CUMULATIVE);
    vlr_trace_ints(trace, "vision.cu_seqlens", c.cu_full, (size_t)g.t + 1,
                   VLR_TRACE_INTS_CUMULATIVE);

    /* window order: merged token j of the window order carries its unit consecutive patch rows */
    for (size_t j = 0; j < c.n_tokens; j++)
        memcpy(c.x + j * unit * C, c.xn + (size_t)c.window_index[j] * unit * C,
               unit * C * sizeof(float));
    vision_rotary_tables(&c, g, vc->spatial_merge_size, c.window_index, c.n_tokens);
    vlr_trace_tensor(trace, "vision.after_window_reorder", c.x, N, C, C);

    for (int i = 0; i < vc->depth; i++) {
        if (vlr_exec_cancelled(x)) {
            rc = vlr_fail(e, VLR_ERR_INTERRUPTED, "interrupted");
            goto done;
        }
        bool full = false;
        for (int f = 0; f < vc->n_fullatt; f++) full |= vc->fullatt_block_indexes[f] == i;
        if (full)
            vision_block(&c, &w->blocks[i], c.cu_full, (size_t)g.t);
        else
            vision_block(&c, &w->blocks[i], c.cu_window, c.n_windows);
        char name[VLR_TRACE_NAME_CAP];
        if (trace) snprintf(name, sizeof name, "vision.blocks.%d", i);
        vlr_trace_tensor_labeled(trace, name, c.x, N, C, C, full ? "full" : "window");
    }

    const float *merged = vision_merger(&c, w);                                     /* [N/4, D] */
    vlr_trace_tensor(trace, "vision.merger_window_order", merged, c.n_tokens, D, D);

    /* back to raster order: window-order row j is merged token window_index[j] */
    for (size_t j = 0; j < c.n_tokens; j++)
        memcpy(out + (size_t)c.window_index[j] * D, merged + j * D, (size_t)D * sizeof(float));
    vlr_trace_tensor(trace, "vision.merger_out", out, c.n_tokens, D, D);

done:
    if (c.own_arena) free(c.x); /* the arena */
    free(c.window_index);
    free(c.cu_window);
    free(c.cu_full);
    return rc;
}
