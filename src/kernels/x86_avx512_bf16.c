/* x86_avx512_bf16.c: the gemm slot in bf16 precision on CPUs with AVX512_BF16. Compiled with the
 * AVX-512 flags plus -mavx512bf16; only called after vlr_cpu_has_avx512_bf16(). Every other slot,
 * and the f32 precision, keep x86_avx512.c's kernels.
 *
 * y = x·Wᵀ with both operands rounded to bf16 and fp32 accumulation (kernels.h), at the rate of
 * vdpbf16ps: one instruction takes 16 lanes of bf16 *pairs* from each operand and adds both
 * products of each lane to an fp32 accumulator (odd element first, then even, each addition
 * rounded once; the products of two bf16 values are exact in fp32). So the packed operands hold
 * k in pairs: a 32-bit lane is (bf16 of k = 2q, bf16 of k = 2q+1), lower half first.
 *   W block: panels [kc/2][NR] of pairs (NR columns of W), made by loading 16 rows × 32 k as 16
 *            zmm of pairs and transposing them as 32-bit lanes: the fp32 transpose, unchanged.
 *            bf16 weights are copied bit for bit; f16/f32 weights are rounded by vcvtne2ps2bf16.
 *   x panel: [kc/2][mr] of pairs, rounded by vcvtne2ps2bf16 (nearest even, subnormals to zero:
 *            the bits of vlr_round_bf16) and transposed the same way.
 * The micro-kernel is the fp32 one's outer product with a pair broadcast from x and vdpbf16ps
 * in place of vfmadd: 14 rows × 32 columns, 28 accumulators.
 *
 * Summation order, the contract of every GEMM here: k is cut into blocks at fixed multiples of
 * B16_KC; within a block each output is one chain over the pairs from 0 (odd, then even element of
 * each pair); block sums are added to y in order: y = ((s_0 + bias) [+ y_old]) + s_1 + ... The
 * thread split, the cache blocking and the zero padding of edge tiles change none of it, so a row's
 * result does not depend on the thread count or on the other rows of the batch. */
#include <stdalign.h>

#include "x86_avx512_common.h"

/* Blocking as in x86_avx512.c, with k blocks twice as long (the operands take half the bytes): an x
 * micro-panel is 14 × 256 pairs = 14 KiB (L1), a W micro-panel 32 × 256 pairs = 32 KiB, the W block
 * 256 columns = 256 KiB (L2). Measured at 1024 × 3584 × 18944 on 2 AMD EPYC cores against oneDNN's
 * bf16 matmul in the same run: KC 256 reached 86-89% of it, KC 512 with NC 512 93-97%, KC 512 with
 * NC 256 98-99% (bench/README.md). */
#define B16_MR 14
#define B16_NV 2
#define B16_NR (16 * B16_NV)
#ifndef B16_KC
#define B16_KC 512 /* k block (even): fixed, it defines the summation order */
#endif
#ifndef B16_NC
#define B16_NC 256
#endif
#ifndef B16_MC
#define B16_MC 1022 /* a multiple of B16_MR */
#endif

typedef uint32_t bf16_pair; /* bf16 of an even k in the low half, of the next k in the high half */

/* 32 consecutive k of one row of W, from element off, as 16 lanes of bf16 pairs; k past n_valid
 * reads as 0 (masked loads: nothing past the row is touched). */
static inline __m512 load_w_pairs(const void *w, vlr_dtype dt, size_t off, int n_valid) {
    if (dt == VLR_DT_BF16) {
        const __mmask32 mk = n_valid >= 32 ? 0xffffffffu : (1u << n_valid) - 1u;
        return _mm512_castsi512_ps(_mm512_maskz_loadu_epi16(mk, (const uint16_t *)w + off));
    }
    const __m512 lo = load_w16(w, dt, off, n_valid), hi = load_w16(w, dt, off + 16, n_valid > 16 ? n_valid - 16 : 0);
    return (__m512)_mm512_cvtne2ps_pbh(hi, lo);
}

/* The same for 32 floats of a row of x. */
static inline __m512 load_x_pairs(const float *x, int n_valid) {
    const __m512 lo = _mm512_maskz_loadu_ps(tail_mask(n_valid), x);
    const __m512 hi = _mm512_maskz_loadu_ps(tail_mask(n_valid > 16 ? n_valid - 16 : 0), x + 16);
    return (__m512)_mm512_cvtne2ps_pbh(hi, lo);
}

/* Packs W[j0 .. j0+n_cols) × [p0 .. p0+kc) into panels dst[panel][q][NR] of pairs (panels
 * NR · B16_KC/2 pairs apart); columns past n_cols and the odd k of an odd kc are zero. */
static void pack_w_pairs(bf16_pair *dst, const void *w, vlr_dtype dt, size_t k, int j0, int n_cols, int p0,
                         int kc) {
    const size_t panel_stride = (size_t)B16_NR * (B16_KC / 2);
    for (int g = 0; g * 16 < n_cols; g++) {
        const int rows = n_cols - 16 * g < 16 ? n_cols - 16 * g : 16;
        bf16_pair *panel = dst + (size_t)(g / B16_NV) * panel_stride + 16 * (g % B16_NV);
        const size_t row0 = (size_t)(j0 + 16 * g) * k + (size_t)p0;
        for (int p = 0; p < kc; p += 32) {
            const int np = kc - p < 32 ? kc - p : 32;
            __m512 r[16];
            if (rows == 16 && np == 32) {
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) r[i] = load_w_pairs(w, dt, row0 + (size_t)i * k + (size_t)p, 32);
            } else {
                for (int i = 0; i < 16; i++)
                    r[i] = i < rows ? load_w_pairs(w, dt, row0 + (size_t)i * k + (size_t)p, np) : _mm512_setzero_ps();
            }
            transpose16(r);
            if (np == 32) {
#pragma GCC unroll 16
                for (int q = 0; q < 16; q++) _mm512_store_ps(panel + (size_t)(p / 2 + q) * B16_NR, r[q]);
            } else {
                for (int q = 0; q < (np + 1) / 2; q++) _mm512_store_ps(panel + (size_t)(p / 2 + q) * B16_NR, r[q]);
            }
        }
    }
    /* a last panel's missing 16-column groups are zero */
    const int groups = (n_cols + 15) / 16, groups_pad = (n_cols + B16_NR - 1) / B16_NR * B16_NV;
    for (int g = groups; g < groups_pad; g++) {
        bf16_pair *panel = dst + (size_t)(g / B16_NV) * panel_stride + 16 * (g % B16_NV);
        for (int q = 0; q < (kc + 1) / 2; q++) _mm512_store_si512(panel + (size_t)q * B16_NR, _mm512_setzero_si512());
    }
}

/* Packs rows [0, mr) × [p0, p0+kc) of x into dst[q][mr] of pairs (one micro-panel, mr <= MR). */
static void pack_x_pairs(bf16_pair *dst, const float *x, size_t ldx, int mr, int p0, int kc) {
    const __mmask16 row_mask = tail_mask(mr);
    for (int p = 0; p < kc; p += 32) {
        const int np = kc - p < 32 ? kc - p : 32;
        __m512 r[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++)
            r[i] = i < mr ? load_x_pairs(x + (size_t)i * ldx + p0 + p, np) : _mm512_setzero_ps();
        transpose16(r);
        const int nq = (np + 1) / 2;
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++)
            if (q < nq) _mm512_mask_storeu_ps(dst + (size_t)(p / 2 + q) * mr, row_mask, r[q]);
    }
}

/* acc[MR'][NR] = sum over kp pairs of xp[q][i] · wp[q][j] (vdpbf16ps), then the epilogue of
 * x86_avx512_common.h. `mr` is a compile-time constant after inlining (see tile). */
static inline __attribute__((always_inline)) void ukernel(const int mr, int kp, const bf16_pair *restrict xp,
                                                          const bf16_pair *restrict wp, float *c, size_t ldc,
                                                          int n_cols, const float *bias, bool load_c) {
    __m512 acc[B16_MR][B16_NV];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
#pragma GCC unroll 4
        for (int v = 0; v < B16_NV; v++) acc[i][v] = _mm512_setzero_ps();
        if (load_c) _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
        if (load_c) _mm_prefetch((const char *)(c + (size_t)i * ldc + B16_NR - 1), _MM_HINT_T0);
    }
#pragma GCC unroll 2
    for (int q = 0; q < kp; q++) {
        __m512bh b[B16_NV];
#pragma GCC unroll 4
        for (int v = 0; v < B16_NV; v++) b[v] = (__m512bh)_mm512_load_si512(wp + 16 * v);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            const __m512bh a = (__m512bh)_mm512_set1_epi32((int)xp[i]);
#pragma GCC unroll 4
            for (int v = 0; v < B16_NV; v++) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, b[v]);
        }
        xp += mr;
        wp += B16_NR;
    }
    __mmask16 mk[B16_NV];
#pragma GCC unroll 4
    for (int v = 0; v < B16_NV; v++) mk[v] = tail_mask(n_cols - 16 * v > 0 ? n_cols - 16 * v : 0);
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) tile_row_store(c + (size_t)i * ldc, acc[i], B16_NV, mk, bias, load_c);
}

static void tile(int mr, int kp, const bf16_pair *xp, const bf16_pair *wp, float *c, size_t ldc, int n_cols,
                 const float *bias, bool load_c) {
    switch (mr) {
#define B16_CASE(R) \
    case R: ukernel(R, kp, xp, wp, c, ldc, n_cols, bias, load_c); break;
        B16_CASE(1) B16_CASE(2) B16_CASE(3) B16_CASE(4) B16_CASE(5) B16_CASE(6) B16_CASE(7)
        B16_CASE(8) B16_CASE(9) B16_CASE(10) B16_CASE(11) B16_CASE(12) B16_CASE(13) B16_CASE(14)
#undef B16_CASE
    default: break;
    }
}

/* One thread's share, rows [r0, r1) × columns [c0, c1); the buffers (sized in floats by
 * vlr_gemm_run) hold pairs, 32 bits each, so the k block takes half their room. */
static void gemm_block(const vlr_gemm_args *a, bool round_bf16, int r0, int r1, int c0, int c1, float *wbuf_f,
                       int nc_cap, float *xbuf_f, int mc_cap) {
    (void)round_bf16; /* always: the pairs are bf16 */
    bf16_pair *wbuf = (bf16_pair *)wbuf_f, *xbuf = (bf16_pair *)xbuf_f;
    const int k = a->k;
    const int n_kblocks = k > 0 ? (k + B16_KC - 1) / B16_KC : 1;
    alignas(64) float bias_f32[B16_NC + B16_NR];
    for (int ms = r0; ms < r1; ms += mc_cap) {
        const int mc = r1 - ms < mc_cap ? r1 - ms : mc_cap;
        for (int kb = 0; kb < n_kblocks; kb++) {
            const int p0 = kb * B16_KC, kc = k - p0 < B16_KC ? k - p0 : B16_KC, kp = (kc + 1) / 2;
            const bool first = kb == 0, load_c = !first || a->accumulate;
            for (int i = 0; i < mc; i += B16_MR) {
                const int mr = mc - i < B16_MR ? mc - i : B16_MR;
                pack_x_pairs(xbuf + (size_t)i * (B16_KC / 2), a->x + (size_t)(ms + i) * a->ldx, a->ldx, mr, p0, kc);
            }
            for (int ns = c0; ns < c1; ns += nc_cap) {
                const int nc = c1 - ns < nc_cap ? c1 - ns : nc_cap;
                pack_w_pairs(wbuf, a->w, a->w_dtype, (size_t)k, ns, nc, p0, kc);
                const float *bias = NULL;
                if (first && a->bias) {
                    for (int q = 0; q < (nc + B16_NR - 1) / B16_NR * B16_NR; q++)
                        bias_f32[q] = q < nc ? vlr_dtype_load(a->bias, a->bias_dtype, (size_t)(ns + q)) : 0.0f;
                    bias = bias_f32;
                }
                for (int i = 0; i < mc; i += B16_MR) {
                    const int mr = mc - i < B16_MR ? mc - i : B16_MR;
                    for (int j = 0; j < nc; j += B16_NR) {
                        const int ncols = nc - j < B16_NR ? nc - j : B16_NR;
                        tile(mr, kp, xbuf + (size_t)i * (B16_KC / 2), wbuf + (size_t)j * (B16_KC / 2),
                             a->y + (size_t)(ms + i) * a->ldy + ns + j, a->ldy, ncols, bias ? bias + j : NULL, load_c);
                    }
                }
            }
        }
    }
}

static __attribute__((noinline)) void gemm_block_small(const vlr_gemm_args *a, bool round_bf16, int r0,
                                                       int r1, int c0, int c1) {
    alignas(64) float wbuf[B16_NR * B16_KC];
    alignas(64) float xbuf[B16_MR * B16_KC];
    gemm_block(a, round_bf16, r0, r1, c0, c1, wbuf, B16_NR, xbuf, B16_MR);
}

static const vlr_gemm_tiling bf16_tiling = {B16_MR, B16_NR, B16_KC, B16_NC, B16_MC, gemm_block,
                                            gemm_block_small, true};

static void avx512_bf16_gemm(const vlr_gemm_args *a, const vlr_exec *x) { vlr_gemm_run(a, x, &bf16_tiling); }

void vlr_kernels_fill_avx512_bf16(vlr_kernels *k, vlr_precision precision) {
    if (precision != VLR_PRECISION_BF16) return; /* f32 arithmetic: x86_avx512.c's table as it is */
    k->isa = "avx512_bf16";
    k->gemm = avx512_bf16_gemm;
}
