/* kernels.c: picks the kernel table once, from what the CPU supports (or what a test forces), and
 * holds the ISA-neutral drivers of the two parallel slots (vlr_gemm_run, vlr_attention_run): the
 * thread split, the work loop and the scratch from the context's workspace, around each ISA's
 * block / unit routine.
 *
 * The table is always filled in layers: the scalar reference first, then each ISA at or below
 * the chosen one overwrites the slots it implements, so a slot an ISA file leaves out falls back to
 * the next best implementation instead of to a NULL pointer. */
#include "kernels.h"

#include "exec.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

vlr_isa vlr_kernels_select(vlr_kernels *k, vlr_isa force, vlr_precision precision) {
    if (precision != VLR_PRECISION_F32 && precision != VLR_PRECISION_BF16 && precision != VLR_PRECISION_INT8)
        precision = vlr_precision_for_cpu(NULL);
    const vlr_precision fp = precision == VLR_PRECISION_INT8 ? vlr_precision_for_cpu(NULL) : precision;
    vlr_isa best = VLR_ISA_REF;
    if (vlr_cpu_has_avx2()) best = VLR_ISA_AVX2;
    if (best == VLR_ISA_AVX2 && vlr_cpu_has_avx512()) best = VLR_ISA_AVX512;
    if (best == VLR_ISA_AVX512 && vlr_cpu_has_avx512_bf16()) best = VLR_ISA_AVX512_BF16;
    /* A forced ISA the CPU lacks falls back to the best supported one below it. */
    vlr_isa isa = (force == VLR_ISA_AUTO || force > best) ? best : force;
    /* vdpbf16ps has nothing to add to fp32 arithmetic: that table is AVX-512's */
    if (isa == VLR_ISA_AVX512_BF16 && fp == VLR_PRECISION_F32) isa = VLR_ISA_AVX512;

    vlr_kernels_fill_ref(k, fp);
    if (isa >= VLR_ISA_AVX2) vlr_kernels_fill_avx2(k, fp);
    if (isa >= VLR_ISA_AVX2) vlr_kernels_fill_avx2_int8(k);
    if (isa >= VLR_ISA_AVX512) vlr_kernels_fill_avx512(k, fp);
    if (isa >= VLR_ISA_AVX512_BF16) vlr_kernels_fill_avx512_bf16(k, fp);
    if (isa >= VLR_ISA_AVX512 && vlr_cpu_has_avx512_vnni()) vlr_kernels_fill_avx512_vnni(k);
    k->precision = precision;
    k->float_precision = fp;
    return isa;
}

/* Scratch of `bytes` for one kernel call: the context's workspace, or, for a context without one,
 * a block of the call's own that the caller frees (*owned). NULL when neither can be had. */
static void *call_scratch(const vlr_exec *x, size_t bytes, void **owned) {
    *owned = NULL;
    if (x->ws) return vlr_workspace_reserve(x->ws, bytes);
    *owned = aligned_alloc(64, round_up(bytes ? bytes : 1, 64));
    return *owned;
}

void vlr_gemm_run(const vlr_gemm_args *a, const vlr_exec *x, const vlr_gemm_tiling *t) {
    if (a->m <= 0 || a->n <= 0) return;
    const int n_panels = (a->n + t->nr - 1) / t->nr, n_row_tiles = (a->m + t->mr - 1) / t->mr;
    const int nt_req = x->n_threads > 0 ? x->n_threads : 1;
    /* Every thread's buffers are sized for the largest share any thread can get (its own nc_cap and
     * mc_cap below are never more), and reserved before the region, where no thread can drop out.
     * Slices are whole 64-byte lines, so threads share none. */
    const size_t kc = (size_t)t->kc;
    const size_t w_floats = round_up(round_up(a->n < t->nc ? (size_t)a->n : (size_t)t->nc, (size_t)t->nr) * kc, 16);
    const size_t x_floats = round_up(round_up(a->m < t->mc ? (size_t)a->m : (size_t)t->mc, (size_t)t->mr) * kc, 16);
    size_t bytes;
    void *owned = NULL;
    float *buf = NULL;
    if (vlr_mul_ok((w_floats + x_floats) * sizeof(float), (size_t)nt_req, &bytes))
        buf = call_scratch(x, bytes, &owned);
#pragma omp parallel num_threads(nt_req)
    {
        /* The grid is laid over the team actually granted (a nested region may get fewer). */
        int th = 0, nt = 1;
#ifdef _OPENMP
        th = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        const int tn = nt < n_panels ? nt : n_panels;
        const int tm = nt / tn < n_row_tiles ? nt / tn : n_row_tiles;
        const int ti = th / tn, tj = th % tn;
        if (ti < tm) {
            const int rt0 = (int)((long)ti * n_row_tiles / tm), rt1 = (int)((long)(ti + 1) * n_row_tiles / tm);
            const int cp0 = (int)((long)tj * n_panels / tn), cp1 = (int)((long)(tj + 1) * n_panels / tn);
            const int r0 = rt0 * t->mr, r1 = rt1 * t->mr < a->m ? rt1 * t->mr : a->m;
            const int c0 = cp0 * t->nr, c1 = cp1 * t->nr < a->n ? cp1 * t->nr : a->n;
            if (r0 < r1 && c0 < c1) {
                const size_t cols = (size_t)(c1 - c0), rows = (size_t)(r1 - r0);
                const size_t nc_cap = round_up(cols < (size_t)t->nc ? cols : (size_t)t->nc, (size_t)t->nr);
                /* row blocks of equal height (1,024 rows are 2 x 518, not 1,022 + 2: each block
                 * packs all of this thread's W again) */
                const size_t n_rblocks = (rows + (size_t)t->mc - 1) / (size_t)t->mc;
                const size_t mc_cap = round_up((rows + n_rblocks - 1) / n_rblocks, (size_t)t->mr);
                if (buf) {
                    float *wbuf = buf + (size_t)th * (w_floats + x_floats), *xbuf = wbuf + w_floats;
                    t->block(a, t->round_bf16, r0, r1, c0, c1, wbuf, (int)nc_cap, xbuf, (int)mc_cap);
                } else { /* no memory for the packing buffers: same blocks, stack buffers, same bits */
                    t->block_small(a, t->round_bf16, r0, r1, c0, c1);
                }
            }
        }
    }
    free(owned);
}

void vlr_gemm_i8_run(const vlr_gemm_args *g, int n_gemms, const vlr_exec *x, const vlr_i8_tiling *t) {
    const vlr_gemm_args *a = g; /* x, ldx, m and k: the same in every g[i] */
    if (n_gemms < 1 || n_gemms > VLR_I8_MAX_GROUP || a->m <= 0) return;
    /* the panels of all the products, numbered one after the other */
    int panel_start[VLR_I8_MAX_GROUP + 1] = {0};
    for (int i = 0; i < n_gemms; i++) panel_start[i + 1] = panel_start[i] + (g[i].n + VLR_I8_NR - 1) / VLR_I8_NR;
    const int mr = t->mr, n_tiles = (a->m + mr - 1) / mr, n_panels = panel_start[n_gemms];
    if (n_panels == 0) return;
    const int kq = a->wq->k4 / 4, n_kb = (kq + VLR_I8_KQ - 1) / VLR_I8_KQ, kb_len = (kq + n_kb - 1) / n_kb;
    const size_t tile_words = (size_t)kq * (size_t)mr, tile_acc = (size_t)mr * VLR_I8_NR;
    /* one block: the packed tiles, with several k blocks every tile's partial sums, the tiles' scales,
     * and the biases widened to fp32 and zero padded */
    size_t xp_bytes, acc_bytes = 0, bytes;
    void *owned = NULL;
    char *buf = NULL;
    if (vlr_mul_ok(tile_words * 4, (size_t)n_tiles, &xp_bytes) &&
        (n_kb == 1 || vlr_mul_ok(tile_acc * 4 * (size_t)n_tiles, (size_t)n_panels, &acc_bytes)) &&
        vlr_add_ok(round_up(xp_bytes, 64) + acc_bytes, round_up((size_t)n_tiles * (size_t)mr * 4, 64) +
                                                            (size_t)n_panels * VLR_I8_NR * 4, &bytes))
        buf = call_scratch(x, bytes, &owned);
    if (!buf) { /* no room for the packed x: the reference, which needs none (same bits) */
        vlr_kernels ref;
        vlr_kernels_fill_ref(&ref, VLR_PRECISION_F32);
        ref.gemm_i8(g, n_gemms, x);
        return;
    }
    uint32_t *xp = (uint32_t *)buf;
    int32_t *acc = (int32_t *)(buf + round_up(xp_bytes, 64));
    float *sx = (float *)(buf + round_up(xp_bytes, 64) + acc_bytes);
    float *bias = sx + round_up((size_t)n_tiles * (size_t)mr, 16); /* [n_panels][32] */
    for (int i = 0; i < n_gemms; i++)
        for (int j = 0; g[i].bias && j < (panel_start[i + 1] - panel_start[i]) * VLR_I8_NR; j++)
            bias[(size_t)panel_start[i] * VLR_I8_NR + j] =
                j < g[i].n ? vlr_dtype_load(g[i].bias, g[i].bias_dtype, (size_t)j) : 0.0f;
#pragma omp parallel num_threads(x->n_threads > 0 ? x->n_threads : 1)
    {
#pragma omp for schedule(static)
        for (int tile = 0; tile < n_tiles; tile++) {
            const int i0 = tile * mr, rows = a->m - i0 < mr ? a->m - i0 : mr;
            t->pack_x(xp + (size_t)tile * tile_words, sx + i0, a->x + (size_t)i0 * a->ldx, a->ldx, rows, a->k,
                      a->wq->k4);
        }
        /* (each loop's implicit barrier: every tile is packed before any panel starts, and a k
         * block is done everywhere before the next one begins) */
        for (int b = 0; b < n_kb; b++) {
#pragma omp for schedule(dynamic, 1)
            for (int p = 0; p < n_panels; p++) {
                int gi = 0;
                while (p >= panel_start[gi + 1]) gi++;
                const int panel = p - panel_start[gi];
                for (int tile = 0; tile < n_tiles; tile++) {
                    const int i0 = tile * mr, rows = a->m - i0 < mr ? a->m - i0 : mr;
                    const int q1 = (b + 1) * kb_len < kq ? (b + 1) * kb_len : kq;
                    const vlr_i8_kblock kb = {b * kb_len, q1, acc + ((size_t)p * n_tiles + tile) * tile_acc,
                                              b == 0, b == n_kb - 1};
                    t->tile(&g[gi], xp + (size_t)tile * tile_words, sx + i0, rows, i0, panel,
                            g[gi].bias ? bias + (size_t)p * VLR_I8_NR : NULL, &kb);
                }
            }
        }
    }
    free(owned);
}

/* Segment s of an attention call: the call itself, or with cu_seqlens its s-th segment as a plain
 * non-causal call over those rows. */
static void attention_segment(const vlr_attention_args *a, int s, vlr_attention_args *seg) {
    *seg = *a;
    if (!a->cu_seqlens) return;
    const size_t r0 = (size_t)a->cu_seqlens[s];
    seg->cu_seqlens = NULL;
    seg->n_q = seg->n_kv = a->cu_seqlens[s + 1] - a->cu_seqlens[s];
    seg->causal_offset = -1;
    seg->out = a->out + r0 * a->ld_out;
    seg->q = a->q + r0 * a->ld_q;
    seg->k = a->k + r0 * a->ld_kv;
    seg->v = a->v + r0 * a->ld_kv;
}

void vlr_attention_run(const vlr_attention_args *a, const vlr_exec *x, const vlr_attention_tiling *t) {
    /* outside the contract (kernels.h): nothing is computed rather than an out-of-range head */
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0)
        return;
    const int n_seg = a->cu_seqlens ? a->n_seqs : 1;
    int max_q = 0;
    for (int s = 0; s < n_seg; s++) {
        const int len = a->cu_seqlens ? a->cu_seqlens[s + 1] - a->cu_seqlens[s] : a->n_q;
        if (len > max_q) max_q = len;
    }
    if (max_q <= 0) return;
    const int group = a->n_heads / a->n_kv_heads;
    int bq = t->unit_rows / group > 0 ? t->unit_rows / group : 1;
    if (bq > max_q) bq = max_q;
    const int nt = x->n_threads > 0 ? x->n_threads : 1;
    const size_t rows = (size_t)group * bq, hd = (size_t)a->head_dim, bk = (size_t)t->key_block;
    const size_t per_thread = round_up(rows * bk + 2 * hd * bk + 2 * rows * hd + 3 * rows, 16); /* whole lines */
    /* One block: unit_start [n_seg + 1] (units before segment s), then the threads' slices. All of
     * it is had before the parallel region: every thread must reach the work-sharing loop. */
    const size_t head = round_up(((size_t)n_seg + 1) * sizeof(long), 64);
    size_t bytes;
    void *owned = NULL;
    char *buf = NULL;
    if (vlr_mul_ok(per_thread * sizeof(float), (size_t)nt, &bytes) && vlr_add_ok(bytes, head, &bytes))
        buf = call_scratch(x, bytes, &owned);
    if (!buf) { /* no scratch memory: the scalar reference, which needs none */
        vlr_kernels ref;
        vlr_kernels_fill_ref(&ref, VLR_PRECISION_F32);
        ref.attention(a, x);
        return;
    }
    long *unit_start = (long *)buf;
    float *scratch = (float *)(buf + head);
    unit_start[0] = 0;
    for (int s = 0; s < n_seg; s++) {
        const int len = a->cu_seqlens ? a->cu_seqlens[s + 1] - a->cu_seqlens[s] : a->n_q;
        unit_start[s + 1] = unit_start[s] + (len > 0 ? (long)a->n_kv_heads * ((len + bq - 1) / bq) : 0);
    }
    const long n_units = unit_start[n_seg];
#pragma omp parallel num_threads(nt)
    {
        int th = 0;
#ifdef _OPENMP
        th = omp_get_thread_num();
#endif
        vlr_flash_scratch w;
        w.s = scratch + (size_t)th * per_thread;
        w.kt = w.s + rows * bk;
        w.vb = w.kt + hd * bk;
        w.qp = w.vb + hd * bk;
        w.o = w.qp + rows * hd;
        w.m = w.o + rows * hd;
        w.l = w.m + rows;
        w.alpha = w.l + rows;
#pragma omp for schedule(dynamic, 1)
        for (long u = 0; u < n_units; u++) {
            int s = 0, hi = n_seg; /* the segment holding unit u: unit_start[s] <= u < unit_start[s+1] */
            while (hi - s > 1) {
                const int mid = (s + hi) / 2;
                if (unit_start[mid] <= u) s = mid;
                else hi = mid;
            }
            vlr_attention_args seg;
            attention_segment(a, s, &seg);
            const long v = u - unit_start[s];
            const int n_qb = (seg.n_q + bq - 1) / bq;
            const int qb = n_qb - 1 - (int)(v / a->n_kv_heads), g = (int)(v % a->n_kv_heads);
            const int i0 = qb * bq, nq = seg.n_q - i0 < bq ? seg.n_q - i0 : bq;
            t->unit(&seg, g, i0, nq, bq, &w);
        }
    }
    free(owned);
}

const char *vlr_precision_name(vlr_precision p) {
    switch (p) {
    case VLR_PRECISION_F32: return "f32";
    case VLR_PRECISION_BF16: return "bf16";
    case VLR_PRECISION_AUTO: return "auto";
    case VLR_PRECISION_INT8: return "int8";
    }
    return NULL;
}

bool vlr_precision_parse(const char *name, vlr_precision *out) {
    const vlr_precision all[] = {VLR_PRECISION_F32, VLR_PRECISION_BF16, VLR_PRECISION_AUTO, VLR_PRECISION_INT8};
    for (size_t i = 0; name && i < sizeof all / sizeof *all; i++)
        if (strcmp(name, vlr_precision_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}
