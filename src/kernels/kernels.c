/* kernels.c: picks the kernel table once, from what the CPU supports (or what a test forces).
 *
 * The table is always filled in layers: the scalar reference first, then each ISA at or below
 * the chosen one overwrites the slots it implements, so a slot an ISA file leaves out falls back to
 * the next best implementation instead of to a NULL pointer. */
#include "kernels.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

vlr_isa vlr_kernels_select(vlr_kernels *k, vlr_isa force, vlr_precision precision) {
    if (precision != VLR_PRECISION_F32 && precision != VLR_PRECISION_BF16)
        precision = vlr_precision_for_cpu(NULL);
    vlr_isa best = VLR_ISA_REF;
    if (vlr_cpu_has_avx2()) best = VLR_ISA_AVX2;
    if (best == VLR_ISA_AVX2 && vlr_cpu_has_avx512()) best = VLR_ISA_AVX512;
    if (best == VLR_ISA_AVX512 && vlr_cpu_has_avx512_bf16()) best = VLR_ISA_AVX512_BF16;
    /* A forced ISA the CPU lacks falls back to the best supported one below it. */
    vlr_isa isa = (force == VLR_ISA_AUTO || force > best) ? best : force;
    /* vdpbf16ps has nothing to add to fp32 arithmetic: that table is AVX-512's */
    if (isa == VLR_ISA_AVX512_BF16 && precision == VLR_PRECISION_F32) isa = VLR_ISA_AVX512;

    vlr_kernels_fill_ref(k, precision);
    if (isa >= VLR_ISA_AVX2) vlr_kernels_fill_avx2(k, precision);
    if (isa >= VLR_ISA_AVX512) vlr_kernels_fill_avx512(k, precision);
    if (isa >= VLR_ISA_AVX512_BF16) vlr_kernels_fill_avx512_bf16(k, precision);
    return isa;
}

void vlr_gemm_run(const vlr_gemm_args *a, int n_threads, const vlr_gemm_tiling *t) {
    if (a->m <= 0 || a->n <= 0) return;
    const int n_panels = (a->n + t->nr - 1) / t->nr, n_row_tiles = (a->m + t->mr - 1) / t->mr;
    const int nt_req = n_threads > 0 ? n_threads : 1;
    (void)nt_req; /* only the pragma reads it (unused without OpenMP) */
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
                float *wbuf = aligned_alloc(64, nc_cap * (size_t)t->kc * sizeof(float));
                float *xbuf = aligned_alloc(64, mc_cap * (size_t)t->kc * sizeof(float));
                if (wbuf && xbuf)
                    t->block(a, t->round_bf16, r0, r1, c0, c1, wbuf, (int)nc_cap, xbuf, (int)mc_cap);
                else /* no heap for the packing buffers: same blocks, stack buffers, same bits */
                    t->block_small(a, t->round_bf16, r0, r1, c0, c1);
                free(wbuf);
                free(xbuf);
            }
        }
    }
}

void vlr_attention_segment(const vlr_attention_args *a, int s, vlr_attention_args *seg) {
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

const char *vlr_precision_name(vlr_precision p) {
    switch (p) {
    case VLR_PRECISION_F32: return "f32";
    case VLR_PRECISION_BF16: return "bf16";
    case VLR_PRECISION_AUTO: return "auto";
    }
    return NULL;
}

bool vlr_precision_parse(const char *name, vlr_precision *out) {
    const vlr_precision all[] = {VLR_PRECISION_F32, VLR_PRECISION_BF16, VLR_PRECISION_AUTO};
    for (size_t i = 0; name && i < sizeof all / sizeof *all; i++)
        if (strcmp(name, vlr_precision_name(all[i])) == 0) {
            *out = all[i];
            return true;
        }
    return false;
}
