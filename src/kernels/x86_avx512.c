/* x86_avx512.c: AVX-512 kernels. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma
 * -mf16c; only called after vlr_cpu_has_avx512(). Slots not set here keep the AVX2 / reference
 * implementation.
 *
 * GEMM (y = x·Wᵀ, W [n,k] bf16/f16/f32) is a Goto/BLIS-style packed, cache-blocked product in
 * fp32. bf16 dot-product instructions exist on some of these CPUs but round activations to bf16 and
 * run at half the fp32 FMA rate on Sapphire Rapids, so weights are only *stored* narrow: the packing
 * widens them exactly to fp32 (bf16: shift left 16; f16: vcvtph2ps) and the micro-kernel is an fp32
 * outer product (MR rows of x broadcast × NR columns of W in vectors).
 *
 * Summation order, which is what makes results reproducible: k is cut into blocks at fixed
 * multiples of GEMM_KC. Within a block each output is one fma chain in k order starting from 0; the
 * block sums are added to y one after another: y = ((s_0 + bias) [+ y_old]) + s_1 + s_2 + ... The
 * tile shapes, the cache blocking of m and n, the thread split (over output rows and columns only)
 * and zero-padded edge tiles change none of these operations, so a row's result does not depend on
 * the thread count or on which other rows share the batch.
 *
 * Also here: flash attention (below, reusing the GEMM micro-kernel for Q·Kᵀ), and the element-wise
 * slots: rmsnorm, rope, silu_mul (a vector exp), gelu (a piecewise-polynomial erf), add. */
#include <immintrin.h>
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>

#include "x86_avx512_common.h"

/* ---------------------------------------------------------------------------------------------
 * GEMM */

/* Blocking, measured on a 2-core Sapphire Rapids slice (bench/README.md). Loop nest per thread:
 *   row block (MC) > k block (KC) > [pack x block] > column block (NC) > [pack W block]
 *     > row tile (MR: its x micro-panel, 14 KiB, stays in L1)
 *       > column panel (NR: the W micro-panel streams from the W block in L2) > micro-kernel.
 * Each can be overridden with -D for experiments; GEMM_KC also changes the rounding. */
#ifndef GEMM_MR
#define GEMM_MR 14 /* rows of x per micro-tile (broadcast side); at most 14 (gemm_tile) */
#endif
#ifndef GEMM_NV
#define GEMM_NV 2 /* zmm vectors of W per micro-tile row */
#endif
#define GEMM_NR (16 * GEMM_NV)
#ifndef GEMM_KC
#define GEMM_KC 256 /* k block: fixed, it defines the summation order (see above) */
#endif
#ifndef GEMM_NC
#define GEMM_NC 512 /* W block per thread: NC × KC fp32 = 512 KiB, in L2 */
#endif
#ifndef GEMM_MC
#define GEMM_MC 1022 /* x block: MC × KC fp32 (a multiple of GEMM_MR) */
#endif

/* Packs W[j0 .. j0+n_cols) × [p0 .. p0+kc) into micro-panels dst[panel][p][NR] fp32 (panels
 * panel_stride floats apart), widening and transposing 16×16 blocks in registers; columns past
 * n_cols are zero. (Software prefetching of the 16 row streams, of the next block into L2 during
 * the micro-kernels, and a bf16 variant with half the shuffles were all measured: none helped, the
 * packing waits on memory bandwidth; see bench/README.md.) */
static inline __attribute__((always_inline)) void pack_w_block_dt(
    float *dst, const void *w, const vlr_dtype dt, size_t k, int j0, int n_cols, int p0, int kc,
    const size_t panel_stride) {
    const size_t esize = dt == VLR_DT_F32 ? 4 : 2;
    for (int g = 0; g * 16 < n_cols; g++) {
        const int rows = n_cols - 16 * g < 16 ? n_cols - 16 * g : 16;
        float *panel = dst + (size_t)(g / GEMM_NV) * panel_stride + 16 * (g % GEMM_NV);
        const uint8_t *base = (const uint8_t *)w + ((size_t)(j0 + 16 * g) * k + (size_t)p0) * esize;
        for (int p = 0; p < kc; p += 16) {
            const int np = kc - p < 16 ? kc - p : 16;
            __m512 r[16];
            if (rows == 16 && np == 16) {
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) r[i] = load_w16(base, dt, (size_t)i * k + (size_t)p, 16);
            } else {
                for (int i = 0; i < 16; i++)
                    r[i] = i < rows ? load_w16(base, dt, (size_t)i * k + (size_t)p, np) : _mm512_setzero_ps();
            }
            transpose16(r);
            if (np == 16) { /* fully unrolled, so r[] stays in registers */
#pragma GCC unroll 16
                for (int q = 0; q < 16; q++) _mm512_store_ps(panel + (size_t)(p + q) * GEMM_NR, r[q]);
            } else {
                for (int q = 0; q < np; q++) _mm512_store_ps(panel + (size_t)(p + q) * GEMM_NR, r[q]);
            }
        }
    }
    /* a last panel's missing 16-column groups are zero */
    const int groups = (n_cols + 15) / 16, groups_pad = (n_cols + GEMM_NR - 1) / GEMM_NR * GEMM_NV;
    for (int g = groups; g < groups_pad; g++) {
        float *panel = dst + (size_t)(g / GEMM_NV) * panel_stride + 16 * (g % GEMM_NV);
        for (int p = 0; p < kc; p++) _mm512_store_ps(panel + (size_t)p * GEMM_NR, _mm512_setzero_ps());
    }
}

static void pack_w_block(float *dst, const void *w, vlr_dtype dt, size_t k, int j0, int n_cols,
                         int p0, int kc) {
    switch (dt) {
    case VLR_DT_BF16: pack_w_block_dt(dst, w, VLR_DT_BF16, k, j0, n_cols, p0, kc, GEMM_NR * GEMM_KC); break;
    case VLR_DT_F16: pack_w_block_dt(dst, w, VLR_DT_F16, k, j0, n_cols, p0, kc, GEMM_NR * GEMM_KC); break;
    case VLR_DT_F32: pack_w_block_dt(dst, w, VLR_DT_F32, k, j0, n_cols, p0, kc, GEMM_NR * GEMM_KC); break;
    }
}

/* Packs rows [i0, i0+mr) × [p0, p0+kc) of x into dst[p][mr] (one micro-panel, mr <= MR). */
static void pack_x_panel(float *dst, const float *x, size_t ldx, int mr, int p0, int kc) {
    int p = 0;
    const __mmask16 row_mask = tail_mask(mr);
    for (; p + 16 <= kc; p += 16) {
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            r[i] = i < mr ? _mm512_loadu_ps(x + (size_t)i * ldx + p0 + p) : _mm512_setzero_ps();
        transpose16(r);
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++) _mm512_mask_storeu_ps(dst + (size_t)(p + q) * mr, row_mask, r[q]);
    }
    for (; p < kc; p++)
        for (int i = 0; i < mr; i++) dst[(size_t)p * mr + i] = x[(size_t)i * ldx + p0 + p];
}

/* bf16 precision on this fp32 kernel: the packed operands go through vlr_round_bf16 in place. */
static void round_bf16_buf(float *p, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(p + i, round_bf16_16(_mm512_loadu_ps(p + i)));
    for (; i < n; i++) p[i] = vlr_round_bf16(p[i]);
}

/* The micro-kernel: acc[MR'][NR] = sum_p xp[p][i] * wp[p][j] over one k block, then the epilogue
 * into c (ldc): v = acc (+ bias, first block) ; c = load_c ? c + v : v. `mr` is a compile-time
 * constant after inlining (see gemm_tile). */
static inline __attribute__((always_inline)) void gemm_ukernel(
    const int mr, int kc, const float *restrict xp, const float *restrict wp, float *c, size_t ldc,
    int n_cols, const float *bias, bool load_c) {
    __m512 acc[14][GEMM_NV];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) acc[i][v] = _mm512_setzero_ps();
        /* the C tile is read after kc steps: start bringing it in now (it is often in L3) */
        if (load_c) _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
        if (load_c && GEMM_NV > 1) _mm_prefetch((const char *)(c + (size_t)i * ldc + GEMM_NR - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        __m512 b[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++) b[v] = _mm512_load_ps(wp + 16 * v);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            const __m512 a = _mm512_set1_ps(xp[i]);
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) acc[i][v] = _mm512_fmadd_ps(a, b[v], acc[i][v]);
        }
        xp += mr;
        wp += GEMM_NR;
    }
    __mmask16 mk[GEMM_NV];
#pragma GCC unroll 4
    for (int v = 0; v < GEMM_NV; v++) mk[v] = tail_mask(n_cols - 16 * v > 0 ? n_cols - 16 * v : 0);
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) tile_row_store(c + (size_t)i * ldc, acc[i], GEMM_NV, mk, bias, load_c);
}

/* Dispatch on the tile height so each height gets its own fully unrolled register tile. */
static void gemm_tile(int mr, int kc, const float *xp, const float *wp, float *c, size_t ldc,
                      int n_cols, const float *bias, bool load_c) {
    switch (mr) {
#define GEMM_CASE(R) \
    case R: if (R <= GEMM_MR) gemm_ukernel(R, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
        GEMM_CASE(1) GEMM_CASE(2) GEMM_CASE(3) GEMM_CASE(4) GEMM_CASE(5) GEMM_CASE(6) GEMM_CASE(7)
        GEMM_CASE(8) GEMM_CASE(9) GEMM_CASE(10) GEMM_CASE(11) GEMM_CASE(12) GEMM_CASE(13)
        GEMM_CASE(14)
#undef GEMM_CASE
    default: break;
    }
}

/* One thread's share: rows [r0, r1) × columns [c0, c1), using the caller's packing buffers
 * (wbuf: nc_cap × GEMM_KC floats, xbuf: mc_cap × GEMM_KC floats, 64-byte aligned). */
static void gemm_block(const vlr_gemm_args *a, bool round_bf16, int r0, int r1, int c0, int c1,
                       float *wbuf, int nc_cap, float *xbuf, int mc_cap) {
    const int k = a->k;
    const int n_kblocks = k > 0 ? (k + GEMM_KC - 1) / GEMM_KC : 1;
    alignas(64) float bias_f32[GEMM_NC + GEMM_NR];
    for (int ms = r0; ms < r1; ms += mc_cap) {
        const int mc = r1 - ms < mc_cap ? r1 - ms : mc_cap;
        for (int kb = 0; kb < n_kblocks; kb++) {
            const int p0 = kb * GEMM_KC, kc = k - p0 < GEMM_KC ? k - p0 : GEMM_KC;
            const bool first = kb == 0, load_c = !first || a->accumulate;
            /* x micro-panels of this row block, each [kc][mr] */
            for (int i = 0; i < mc; i += GEMM_MR) {
                const int mr = mc - i < GEMM_MR ? mc - i : GEMM_MR;
                pack_x_panel(xbuf + (size_t)i * GEMM_KC, a->x + (size_t)(ms + i) * a->ldx, a->ldx,
                             mr, p0, kc);
                if (round_bf16) round_bf16_buf(xbuf + (size_t)i * GEMM_KC, (size_t)mr * kc);
            }
            for (int ns = c0; ns < c1; ns += nc_cap) {
                const int nc = c1 - ns < nc_cap ? c1 - ns : nc_cap;
                pack_w_block(wbuf, a->w, a->w_dtype, (size_t)k, ns, nc, p0, kc);
                if (round_bf16 && a->w_dtype != VLR_DT_BF16) /* bf16 weights are already exact */
                    for (int j = 0; j < nc; j += GEMM_NR) round_bf16_buf(wbuf + (size_t)j * GEMM_KC, (size_t)GEMM_NR * kc);
                const float *bias = NULL;
                if (first && a->bias) {
                    for (int q = 0; q < (nc + GEMM_NR - 1) / GEMM_NR * GEMM_NR; q++)
                        bias_f32[q] = q < nc ? vlr_dtype_load(a->bias, a->bias_dtype, (size_t)(ns + q)) : 0.0f;
                    bias = bias_f32;
                }
                for (int i = 0; i < mc; i += GEMM_MR) {
                    const int mr = mc - i < GEMM_MR ? mc - i : GEMM_MR;
                    for (int j = 0; j < nc; j += GEMM_NR) {
                        const int ncols = nc - j < GEMM_NR ? nc - j : GEMM_NR;
                        gemm_tile(mr, kc, xbuf + (size_t)i * GEMM_KC, wbuf + (size_t)j * GEMM_KC,
                                  a->y + (size_t)(ms + i) * a->ldy + ns + j, a->ldy, ncols,
                                  bias ? bias + j : NULL, load_c);
                    }
                }
            }
        }
    }
}

/* Without heap memory for the packing buffers, the same blocks run with one-panel buffers on the
 * stack: slower, same arithmetic. */
static __attribute__((noinline)) void gemm_block_small(const vlr_gemm_args *a, bool round_bf16, int r0,
                                                       int r1, int c0, int c1) {
    alignas(64) float wbuf[GEMM_NR * GEMM_KC];
    alignas(64) float xbuf[GEMM_MR * GEMM_KC];
    gemm_block(a, round_bf16, r0, r1, c0, c1, wbuf, GEMM_NR, xbuf, GEMM_MR);
}

static const vlr_gemm_tiling avx512_tiling = {GEMM_MR, GEMM_NR, GEMM_KC, GEMM_NC, GEMM_MC, gemm_block,
                                              gemm_block_small, false};
static const vlr_gemm_tiling avx512_tiling_bf16 = {GEMM_MR, GEMM_NR, GEMM_KC, GEMM_NC, GEMM_MC, gemm_block,
                                                   gemm_block_small, true};

static void avx512_gemm(const vlr_gemm_args *a, const vlr_exec *x) { vlr_gemm_run(a, x, &avx512_tiling); }
static void avx512_gemm_bf16(const vlr_gemm_args *a, const vlr_exec *x) { vlr_gemm_run(a, x, &avx512_tiling_bf16); }

/* ---------------------------------------------------------------------------------------------
 * Vector exp */

/* e^x for 16 lanes, ~1-2 ulp over the normal range: Cody-Waite reduction x = n·ln2 + r with
 * |r| <= ln2/2, the degree-6 polynomial of Cephes' expf for e^r, and 2^n applied by vscalefps
 * (which also gives inf when e^x overflows, as expf does). Inputs below -104 give 0. */
static inline __m512 exp512(__m512 x) {
    x = _mm512_min_ps(x, _mm512_set1_ps(1000.0f)); /* still inf, and n stays a small integer */
    const __mmask16 tiny = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_LT_OQ);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.9875691500e-4f);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.3981999507e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(8.3334519073e-3f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(4.1665795894e-2f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.6666665459e-1f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(5.0000001201e-1f));
    y = _mm512_fmadd_ps(y, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    y = _mm512_scalef_ps(y, n);
    return _mm512_maskz_mov_ps((__mmask16)~tiny, y);
}

/* ---------------------------------------------------------------------------------------------
 * Attention: flash style. A work unit is one key/value head g with a block of queries for all the
 * heads of its group (so K and V blocks are packed once per group). Keys go in blocks of ATT_BK:
 * S = Q·Kᵀ with the GEMM micro-kernel (Q packed like x, the K block packed like W panels), then
 * the online softmax update per row: m' = max(m, max S), P = exp(S·scale - m'),
 * l = l·e^(m-m') + sum P, O = O·e^(m-m') + P·V (pv_tile); out = O / l at the end. Each row's
 * arithmetic depends only on its own scores and the fixed key blocking, so the result of a query
 * does not depend on the unit shape, the threads or the other queries. Segments, units, the
 * parallel loop and the scratch are vlr_attention_run's (kernels.c); this file gives the unit
 * routine and its key block; the scratch (vlr_flash_scratch) is O(rows · (head_dim + ATT_BK)) per
 * thread, never O(n_q · n_kv). ATT_BK = 128 amortises the per-row work of each block (two reductions, an expf) over enough keys; measured in bench/README.md. */

#define ATT_BK 128 /* keys per block: a multiple of GEMM_NR */
#define ATT_ROWS 112 /* query rows (heads × queries) per unit */
_Static_assert(ATT_BK % GEMM_NR == 0, "a key block is whole GEMM panels");

/* O[i] = O[i]·alpha[i] + sum_{j < nv} P[i][j] V[j] for rows i < nr of an R-row tile, over NCH
 * 16-float chunks of the head (masks mk; R·NCH <= 24 accumulators stay in registers). Rows of the
 * tile past nr compute on a copy of row 0 and are not stored. */
static inline __attribute__((always_inline)) void pv_tile(const int R, const int NCH, int nr, int nv,
                                                         const float *p, const float *alpha,
                                                         const float *v, size_t ldv, float *o,
                                                         size_t ldo, const __mmask16 *mk) {
    __m512 acc[8][8];
    const float *prow[8];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        const int ii = i < nr ? i : 0;
        prow[i] = p + (size_t)ii * ATT_BK;
        const __m512 al = _mm512_set1_ps(alpha[ii]);
#pragma GCC unroll 8
        for (int c = 0; c < NCH; c++)
            acc[i][c] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[c], o + (size_t)ii * ldo + 16 * c), al);
    }
    for (int j = 0; j < nv; j++) {
        __m512 vv[8];
#pragma GCC unroll 8
        for (int c = 0; c < NCH; c++) vv[c] = _mm512_maskz_loadu_ps(mk[c], v + (size_t)j * ldv + 16 * c);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            const __m512 pj = _mm512_set1_ps(prow[i][j]);
#pragma GCC unroll 8
            for (int c = 0; c < NCH; c++) acc[i][c] = _mm512_fmadd_ps(pj, vv[c], acc[i][c]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
        if (i < nr) {
#pragma GCC unroll 8
            for (int c = 0; c < NCH; c++) _mm512_mask_storeu_ps(o + (size_t)i * ldo + 16 * c, mk[c], acc[i][c]);
        }
}

/* All rows of a unit through pv_tile: head chunks in groups of up to 8, row tiles sized so the
 * accumulators fit the 32 registers. */
static void pv_rows(int rows, int hd, int nv, const float *p, const float *alpha, const float *v,
                    size_t ldv, float *o) {
    for (int c0 = 0; c0 < hd; c0 += 128) {
        const int width = hd - c0 < 128 ? hd - c0 : 128, nch = (width + 15) / 16;
        __mmask16 mk[8];
        for (int c = 0; c < 8; c++) mk[c] = c < nch ? tail_mask(width - 16 * c) : 0;
        static const int tile_rows[9] = {0, 8, 8, 7, 5, 4, 3, 3, 2};
        const int R = tile_rows[nch];
        for (int r0 = 0; r0 < rows; r0 += R) {
            const int nr = rows - r0 < R ? rows - r0 : R;
            const float *pr = p + (size_t)r0 * ATT_BK, *al = alpha + r0;
            float *orow = o + (size_t)r0 * hd + c0;
            switch (nch) {
#define PV_CASE(N, RR) case N: pv_tile(RR, N, nr, nv, pr, al, v + c0, ldv, orow, (size_t)hd, mk); break;
                PV_CASE(1, 8) PV_CASE(2, 8) PV_CASE(3, 7) PV_CASE(4, 5) PV_CASE(5, 4) PV_CASE(6, 3)
                PV_CASE(7, 3) PV_CASE(8, 2)
#undef PV_CASE
            default: break;
            }
        }
    }
}

static void att_unit(const vlr_attention_args *a, int g, int i0, int nq, int bq, const vlr_flash_scratch *w) {
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    const int rows = group * bq;
    const int n_vis = a->causal_offset < 0 ? a->n_kv
                      : (a->causal_offset + i0 + nq < a->n_kv ? a->causal_offset + i0 + nq : a->n_kv);
    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        for (int t = 0; t < nq; t += GEMM_MR) {
            const int mr = nq - t < GEMM_MR ? nq - t : GEMM_MR;
            pack_x_panel(w->qp + (size_t)(hh * bq + t) * hd, a->q + (size_t)(i0 + t) * a->ld_q + (size_t)h * hd,
                         a->ld_q, mr, 0, hd);
        }
    }
    /* rows past nq (a short last query block) stay at P = 0, alpha = 1, O = 0 */
    for (int r = 0; r < rows; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
        w->alpha[r] = 1.0f;
    }
    memset(w->o, 0, (size_t)rows * hd * sizeof(float));
    memset(w->s, 0, (size_t)rows * ATT_BK * sizeof(float));
    const __m512 scale = _mm512_set1_ps(a->scale);
    for (int j0 = 0; j0 < n_vis; j0 += ATT_BK) {
        const int nk = n_vis - j0 < ATT_BK ? n_vis - j0 : ATT_BK;
        /* K block as ATT_BK / GEMM_NR micro-panels of hd × GEMM_NR */
        pack_w_block_dt(w->kt, a->k + (size_t)g * hd, VLR_DT_F32, a->ld_kv, j0, nk, 0, hd,
                        (size_t)GEMM_NR * hd);
        for (int hh = 0; hh < group; hh++)
            for (int t = 0; t < nq; t += GEMM_MR) {
                const int mr = nq - t < GEMM_MR ? nq - t : GEMM_MR;
                for (int pn = 0; pn * GEMM_NR < nk; pn++)
                    gemm_tile(mr, hd, w->qp + (size_t)(hh * bq + t) * hd, w->kt + (size_t)pn * GEMM_NR * hd,
                              w->s + (size_t)(hh * bq + t) * ATT_BK + pn * GEMM_NR, ATT_BK,
                              nk - pn * GEMM_NR < GEMM_NR ? nk - pn * GEMM_NR : GEMM_NR, NULL, false);
            }
        /* softmax update, row by row; *nv_max: the most keys any row of the unit sees here */
        int nv_max = 0;
        for (int hh = 0; hh < group; hh++)
            for (int qi = 0; qi < nq; qi++) {
                const int r = hh * bq + qi;
                int nv = nk;
                if (a->causal_offset >= 0 && a->causal_offset + i0 + qi + 1 - j0 < nv)
                    nv = a->causal_offset + i0 + qi + 1 - j0;
                float *srow = w->s + (size_t)r * ATT_BK;
                if (nv <= 0) { /* no visible key in this block: P = 0, state unchanged */
                    memset(srow, 0, ATT_BK * sizeof(float));
                    w->alpha[r] = 1.0f;
                    continue;
                }
                if (nv > nv_max) nv_max = nv;
                __m512 sv[ATT_BK / 16];
                __m512 mx = _mm512_set1_ps(-INFINITY);
                for (int v = 0; v < ATT_BK / 16; v++) {
                    const __mmask16 mk = tail_mask(nv - 16 * v > 0 ? nv - 16 * v : 0);
                    sv[v] = _mm512_mul_ps(_mm512_load_ps(srow + 16 * v), scale);
                    mx = _mm512_mask_max_ps(mx, mk, mx, sv[v]);
                }
                const float m_old = w->m[r], m_new = fmaxf(m_old, _mm512_reduce_max_ps(mx));
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                __m512 sum = _mm512_setzero_ps();
                for (int v = 0; v < ATT_BK / 16; v++) {
                    const __mmask16 mk = tail_mask(nv - 16 * v > 0 ? nv - 16 * v : 0);
                    const __m512 pv = _mm512_maskz_mov_ps(mk, exp512(_mm512_sub_ps(sv[v], _mm512_set1_ps(m_new))));
                    _mm512_store_ps(srow + 16 * v, pv);
                    sum = _mm512_add_ps(sum, pv);
                }
                w->l[r] = w->l[r] * alpha + _mm512_reduce_add_ps(sum);
                w->m[r] = m_new;
                w->alpha[r] = alpha;
            }
        /* O = O·alpha + P·V. Keys a row does not see have P = 0 exactly and add nothing. */
        for (int j = 0; j < nv_max; j++) {
            const float *src = a->v + (size_t)(j0 + j) * a->ld_kv + (size_t)g * hd;
            for (int c = 0; c < hd; c += 16) {
                const __mmask16 mk = tail_mask(hd - c);
                _mm512_mask_storeu_ps(w->vb + (size_t)j * hd + c, mk, _mm512_maskz_loadu_ps(mk, src + c));
            }
        }
        pv_rows(rows, hd, nv_max, w->s, w->alpha, w->vb, (size_t)hd, w->o);
    }
    for (int hh = 0; hh < group; hh++)
        for (int qi = 0; qi < nq; qi++) {
            const int r = hh * bq + qi, h = g * group + hh;
            const float inv = w->l[r] > 0.0f ? 1.0f / w->l[r] : 0.0f;
            const float *orow = w->o + (size_t)r * hd;
            float *out = a->out + (size_t)(i0 + qi) * a->ld_out + (size_t)h * hd;
            for (int c = 0; c < hd; c++) out[c] = orow[c] * inv;
        }
}

/* per thread: s [rows][BK], kt and vb [hd][BK], qp and o [rows][hd], m, l, alpha [rows] */
static const vlr_attention_tiling avx512_attention_tiling = {ATT_ROWS, ATT_BK, att_unit};

static void avx512_attention(const vlr_attention_args *a, const vlr_exec *x) {
    vlr_attention_run(a, x, &avx512_attention_tiling);
}

/* ---------------------------------------------------------------------------------------------
 * Element-wise kernels */

static inline __m512 load_vec16(const void *p, vlr_dtype dt, size_t off, __mmask16 mk) {
    switch (dt) {
    case VLR_DT_BF16:
        return _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + off)), 16));
    case VLR_DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)p + off));
    case VLR_DT_F32: return _mm512_maskz_loadu_ps(mk, (const float *)p + off);
    }
    return _mm512_setzero_ps();
}

/* Sum of squares in 16 lanes (lane l takes elements l, l+16, ...), then a fixed reduction tree. */
static void avx512_rmsnorm(float *y, const float *x, int rows, int n, const void *w, vlr_dtype w_dtype,
                           float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        __m512 ss = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16) {
            const __m512 v = _mm512_maskz_loadu_ps(tail_mask(n - i), xr + i);
            ss = _mm512_fmadd_ps(v, v, ss);
        }
        const float scale = 1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)n + eps);
        const __m512 sv = _mm512_set1_ps(scale);
        for (int i = 0; i < n; i += 16) {
            const __mmask16 mk = tail_mask(n - i);
            const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, xr + i), sv);
            _mm512_mask_storeu_ps(yr + i, mk, _mm512_mul_ps(v, load_vec16(w, w_dtype, (size_t)i, mk)));
        }
    }
}

static void avx512_rope(float *x, size_t ld, int rows, int n_heads, int head_dim, const float *cos_tab,
                        const float *sin_tab) {
    const int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        const float *c = cos_tab + (size_t)r * head_dim, *s = sin_tab + (size_t)r * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)r * ld + (size_t)h * head_dim;
            for (int i = 0; i < half; i += 16) {
                const __mmask16 mk = tail_mask(half - i);
                const __m512 a = _mm512_maskz_loadu_ps(mk, xh + i);
                const __m512 b = _mm512_maskz_loadu_ps(mk, xh + half + i);
                const __m512 c1 = _mm512_maskz_loadu_ps(mk, c + i), s1 = _mm512_maskz_loadu_ps(mk, s + i);
                const __m512 c2 = _mm512_maskz_loadu_ps(mk, c + half + i);
                const __m512 s2 = _mm512_maskz_loadu_ps(mk, s + half + i);
                /* the reference's a*cos - b*sin, b*cos + a*sin: two roundings per product */
                _mm512_mask_storeu_ps(xh + i, mk, _mm512_sub_ps(_mm512_mul_ps(a, c1), _mm512_mul_ps(b, s1)));
                _mm512_mask_storeu_ps(xh + half + i, mk,
                                      _mm512_add_ps(_mm512_mul_ps(b, c2), _mm512_mul_ps(a, s2)));
            }
        }
    }
}

static void avx512_silu_mul(float *g, const float *u, size_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = tail_mask(n - i > 16 ? 16 : (int)(n - i));
        const __m512 gv = _mm512_maskz_loadu_ps(mk, g + i), uv = _mm512_maskz_loadu_ps(mk, u + i);
        const __m512 den = _mm512_add_ps(one, exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv)));
        _mm512_mask_storeu_ps(g + i, mk, _mm512_mul_ps(_mm512_div_ps(gv, den), uv));
    }
}

/* erf on 16 lanes for GELU: |z| in [0, 4) is cut into 16 intervals of width 1/4, each with a
 * degree-6 polynomial in s = |z| - centre (least-squares fits on Chebyshev nodes, computed in
 * 40-digit arithmetic with mpmath), whose coefficients are picked per lane with vpermps; erf = 1
 * from 4 on (erfc(4) = 1.5e-8 < u). Measured over [0, 4.2] in steps of 3.7e-7: absolute error
 * <= 5.9e-8, one rounding of a value near 1. Relative accuracy near 0 is not kept (GELU adds 1). */
static const float erf_poly16[7][16] = {
    {1.403162048e-01f, 4.041169094e-01f, 6.232408822e-01f, 7.840750611e-01f, 8.883882317e-01f, 9.481700728e-01f, 9.784437332e-01f, 9.919900577e-01f, 9.973459706e-01f, 9.992170618e-01f, 9.997946243e-01f, 9.999521452e-01f, 9.999901033e-01f, 9.999981847e-01f, 9.999997049e-01f, 9.999999575e-01f},
    {1.110885260e+00f, 9.803528073e-01f, 7.634995415e-01f, 5.247450530e-01f, 3.182739625e-01f, 1.703597731e-01f, 8.047225646e-02f, 3.354582637e-02f, 1.234081983e-02f, 4.006477909e-03f, 1.147875408e-03f, 2.902285032e-04f, 6.475879474e-05f, 1.275178370e-05f, 2.215933560e-06f, 3.398257773e-07f},
    {-1.388606534e-01f, -3.676322929e-01f, -4.771872035e-01f, -4.591519164e-01f, -3.580582090e-01f, -2.342446929e-01f, -1.307674215e-01f, -6.289842694e-02f, -2.622424249e-02f, -9.515384353e-03f, -3.013172170e-03f, -8.344064415e-04f, -2.023709911e-04f, -4.303717765e-05f, -8.032730307e-06f, -1.316817360e-06f},
    {-3.587182680e-01f, -2.348750285e-01f, -5.567479194e-02f, 9.291964789e-02f, 1.624502828e-01f, 1.579380010e-01f, 1.148419327e-01f, 6.744214330e-02f, 3.303780615e-02f, 1.373050910e-02f, 4.890281743e-03f, 1.502423185e-03f, 3.999627115e-04f, 9.256100050e-05f, 1.866695513e-05f, 3.286753491e-06f},
    {6.870539577e-02f, 1.665799726e-01f, 1.764578197e-01f, 1.123971178e-01f, 2.797512744e-02f, -3.049931306e-02f, -4.971868405e-02f, -4.226031458e-02f, -2.636124947e-02f, -1.313339536e-02f, -5.414305039e-03f, -1.881718986e-03f, -5.575400293e-04f, -1.418712434e-04f, -3.116242833e-05f, -5.930711392e-06f},
    {1.035279918e-01f, 4.532615270e-02f, -2.703504848e-02f, -6.670918570e-02f, -6.106119468e-02f, -3.064391531e-02f, -2.303252066e-03f, 1.132802231e-02f, 1.244421184e-02f, 8.360578389e-03f, 4.236414162e-03f, 1.727707356e-03f, 5.842620105e-04f, 1.665797731e-04f, 4.045958097e-05f, 8.430416391e-06f},
    {-2.248836101e-02f, -4.975650260e-02f, -4.113639470e-02f, -1.042486364e-02f, 1.534914858e-02f, 2.202830053e-02f, 1.439652143e-02f, 4.149622884e-03f, -1.778267539e-03f, -3.095475773e-03f, -2.245700504e-03f, -1.144289422e-03f, -4.557894709e-04f, -1.481259746e-04f, -4.015945215e-05f, -9.205007799e-06f},
};

static inline __m512 erf512(__m512 z) {
    const __m512 t = _mm512_abs_ps(z);
    const __m512i idx = _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_mul_ps(t, _mm512_set1_ps(4.0f))),
                                         _mm512_set1_epi32(15));
    const __m512 centre = _mm512_fmadd_ps(_mm512_cvtepi32_ps(idx), _mm512_set1_ps(0.25f), _mm512_set1_ps(0.125f));
    const __m512 s = _mm512_sub_ps(t, centre);
    __m512 p = _mm512_permutexvar_ps(idx, _mm512_loadu_ps(erf_poly16[6]));
    for (int d = 5; d >= 0; d--) p = _mm512_fmadd_ps(p, s, _mm512_permutexvar_ps(idx, _mm512_loadu_ps(erf_poly16[d])));
    p = _mm512_mask_mov_ps(p, _mm512_cmp_ps_mask(t, _mm512_set1_ps(4.0f), _CMP_GE_OQ), _mm512_set1_ps(1.0f));
    /* the sign of z onto |erf| */
    return _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(p), _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u))));
}

/* 0.5·x·(1 + erf(x·(1/sqrt 2))), the reference's operation order with erf512 for erff. */
static void avx512_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = tail_mask(n - i > 16 ? 16 : (int)(n - i));
        const __m512 v = _mm512_maskz_loadu_ps(mk, x + i);
        const __m512 e = erf512(_mm512_mul_ps(v, _mm512_set1_ps((float)M_SQRT1_2)));
        _mm512_mask_storeu_ps(x + i, mk, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v),
                                                       _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
}

static void avx512_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 mk = tail_mask(n - i > 16 ? 16 : (int)(n - i));
        _mm512_mask_storeu_ps(y + i, mk, _mm512_add_ps(_mm512_maskz_loadu_ps(mk, y + i),
                                                       _mm512_maskz_loadu_ps(mk, x + i)));
    }
}

void vlr_kernels_fill_avx512(vlr_kernels *k, vlr_precision precision) {
    k->isa = "avx512";
    k->precision = precision;
    k->gemm = precision == VLR_PRECISION_BF16 ? avx512_gemm_bf16 : avx512_gemm;
    k->attention = avx512_attention;
    k->rmsnorm = avx512_rmsnorm;
    k->rope = avx512_rope;
    k->silu_mul = avx512_silu_mul;
    k->gelu = avx512_gelu;
    k->add = avx512_add;
}
