/* x86_avx2.c: AVX2 + FMA kernels, the fallback for x86-64 CPUs without AVX-512. Compiled with
 * -mavx2 -mfma -mf16c; only called after vlr_cpu_has_avx2(). It fills every slot.
 *
 * The GEMM is the AVX-512 one (x86_avx512.c) scaled down to 16 ymm registers: W panels widened to
 * fp32 and transposed while packing, a 6 × 16 outer-product micro-kernel, k blocks at fixed
 * multiples of A2_KC. The summation order has the same shape: within a k block one fma chain per
 * output from 0, block sums added to y in order, y = ((s_0 + bias) [+ y_old]) + s_1 + ...; so
 * results do not depend on threads or on the other rows. (With equal k blocks the AVX-512 kernel
 * does the same operations, but agreement between ISAs is not promised.) No masked 16-bit loads
 * exist in AVX2, so partial edge tiles are packed by a scalar loop that widens the same way.
 *
 * Attention is the flash scheme of x86_avx512.c on 8 lanes; the element-wise slots use an 8-lane
 * exp (silu) and erf (gelu) built like the AVX-512 ones. */
#include <immintrin.h>
#include <math.h>
#include <stdalign.h>
#include <stdlib.h>

#include "kernels.h"

#define A2_MR 6
#define A2_NR 16 /* two ymm */
#define A2_KC 256
#define A2_NC 256
#define A2_MC 1020 /* a multiple of A2_MR */

/* 8 consecutive weights widened to fp32 (all 8 must be inside the row). */
static inline __m256 a2_load_w8(const void *w, vlr_dtype dt, size_t off) {
    switch (dt) {
    case VLR_DT_BF16: {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + off));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    case VLR_DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + off)));
    case VLR_DT_F32: return _mm256_loadu_ps((const float *)w + off);
    }
    return _mm256_setzero_ps();
}

/* In-register 8×8 fp32 transpose. */
static inline __attribute__((always_inline)) void a2_transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    /* u[4i+c] lane L holds column 4L+c of rows 4i..4i+3 */
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
    }
}

/* Packs W[j0 .. j0+n_cols) × [p0 .. p0+kc) into micro-panels dst[panel][p][A2_NR] fp32
 * (panels panel_stride floats apart), zero past n_cols. Full 8×8 blocks go through registers. */
static void a2_pack_w(float *dst, const void *w, vlr_dtype dt, size_t k, int j0, int n_cols,
                      int p0, int kc, size_t panel_stride) {
    const int groups_pad = (n_cols + A2_NR - 1) / A2_NR * (A2_NR / 8);
    for (int g = 0; g < groups_pad; g++) {
        float *panel = dst + (size_t)(g / 2) * panel_stride + 8 * (g % 2);
        const int rows = n_cols - 8 * g < 8 ? (n_cols - 8 * g > 0 ? n_cols - 8 * g : 0) : 8;
        int p = 0;
        if (rows == 8) {
            for (; p + 8 <= kc; p += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++)
                    r[i] = a2_load_w8(w, dt, (size_t)(j0 + 8 * g + i) * k + (size_t)(p0 + p));
                a2_transpose8(r);
                for (int q = 0; q < 8; q++) _mm256_store_ps(panel + (size_t)(p + q) * A2_NR, r[q]);
            }
        }
        for (; p < kc; p++)
            for (int i = 0; i < 8; i++)
                panel[(size_t)p * A2_NR + i] =
                    i < rows ? vlr_dtype_load(w, dt, (size_t)(j0 + 8 * g + i) * k + (size_t)(p0 + p)) : 0.0f;
    }
}

/* Packs rows [0, mr) × [p0, p0+kc) of x into dst[p][mr]. */
static void a2_pack_x(float *dst, const float *x, size_t ldx, int mr, int p0, int kc) {
    for (int i = 0; i < mr; i++)
        for (int p = 0; p < kc; p++) dst[(size_t)p * mr + i] = x[(size_t)i * ldx + p0 + p];
}

/* vlr_round_bf16 on 8 lanes (integer arithmetic, the bits of vcvtneps2bf16), for bf16 precision:
 * the packed operands are rounded in place. */
static inline __m256 a2_round_bf16_8(__m256 v) {
    const __m256i u = _mm256_castps_si256(v), exp_bits = _mm256_set1_epi32(0x7f800000);
    const __m256i subnormal = _mm256_cmpeq_epi32(_mm256_and_si256(u, exp_bits), _mm256_setzero_si256());
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), exp_bits);
    __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff),
                                                     _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1))));
    r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), nan);
    r = _mm256_and_si256(r, _mm256_set1_epi32((int)0xffff0000u));
    r = _mm256_blendv_epi8(r, _mm256_and_si256(u, _mm256_set1_epi32((int)0x80000000u)), subnormal);
    return _mm256_castsi256_ps(r);
}

static void a2_round_bf16_buf(float *p, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(p + i, a2_round_bf16_8(_mm256_loadu_ps(p + i)));
    for (; i < n; i++) p[i] = vlr_round_bf16(p[i]);
}

/* The 6 × 16 micro-kernel over one k block, with the epilogue v = acc (+ bias), c = load_c ? c + v : v,
 * for the first n_cols (<= 16) columns. */
static inline __attribute__((always_inline)) void a2_ukernel(const int mr, int kc, const float *restrict xp,
                                                             const float *restrict wp, float *c, size_t ldc,
                                                             int n_cols, const float *bias, bool load_c) {
    __m256 acc[A2_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int p = 0; p < kc; p++) {
        const __m256 b0 = _mm256_load_ps(wp), b1 = _mm256_load_ps(wp + 8);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            const __m256 a = _mm256_broadcast_ss(xp + i);
            acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
        }
        xp += mr;
        wp += A2_NR;
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        float *cp = c + (size_t)i * ldc;
        if (n_cols == A2_NR) {
            for (int v = 0; v < 2; v++) {
                __m256 r = acc[i][v];
                if (bias) r = _mm256_add_ps(r, _mm256_load_ps(bias + 8 * v));
                if (load_c) r = _mm256_add_ps(_mm256_loadu_ps(cp + 8 * v), r);
                _mm256_storeu_ps(cp + 8 * v, r);
            }
        } else { /* edge panel: the same adds, through a buffer */
            alignas(32) float tmp[A2_NR];
            _mm256_store_ps(tmp, acc[i][0]);
            _mm256_store_ps(tmp + 8, acc[i][1]);
            for (int j = 0; j < n_cols; j++) {
                float r = tmp[j];
                if (bias) r = r + bias[j];
                cp[j] = load_c ? cp[j] + r : r;
            }
        }
    }
}

static void a2_tile(int mr, int kc, const float *xp, const float *wp, float *c, size_t ldc, int n_cols,
                    const float *bias, bool load_c) {
    switch (mr) {
    case 1: a2_ukernel(1, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    case 2: a2_ukernel(2, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    case 3: a2_ukernel(3, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    case 4: a2_ukernel(4, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    case 5: a2_ukernel(5, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    case 6: a2_ukernel(6, kc, xp, wp, c, ldc, n_cols, bias, load_c); break;
    default: break;
    }
}

static void a2_gemm_block(const vlr_gemm_args *a, bool round_bf16, int r0, int r1, int c0, int c1,
                          float *wbuf, int nc_cap, float *xbuf, int mc_cap) {
    const int k = a->k;
    const int n_kblocks = k > 0 ? (k + A2_KC - 1) / A2_KC : 1;
    alignas(32) float bias_f32[A2_NR];
    for (int ms = r0; ms < r1; ms += mc_cap) {
        const int mc = r1 - ms < mc_cap ? r1 - ms : mc_cap;
        for (int kb = 0; kb < n_kblocks; kb++) {
            const int p0 = kb * A2_KC, kc = k - p0 < A2_KC ? k - p0 : A2_KC;
            const bool first = kb == 0;
            for (int i = 0; i < mc; i += A2_MR) {
                const int mr = mc - i < A2_MR ? mc - i : A2_MR;
                a2_pack_x(xbuf + (size_t)i * A2_KC, a->x + (size_t)(ms + i) * a->ldx, a->ldx, mr, p0, kc);
                if (round_bf16) a2_round_bf16_buf(xbuf + (size_t)i * A2_KC, (size_t)mr * kc);
            }
            for (int ns = c0; ns < c1; ns += nc_cap) {
                const int nc = c1 - ns < nc_cap ? c1 - ns : nc_cap;
                a2_pack_w(wbuf, a->w, a->w_dtype, (size_t)k, ns, nc, p0, kc, (size_t)A2_NR * A2_KC);
                if (round_bf16 && a->w_dtype != VLR_DT_BF16) /* bf16 weights are already exact */
                    for (int j = 0; j < nc; j += A2_NR) a2_round_bf16_buf(wbuf + (size_t)j * A2_KC, (size_t)A2_NR * kc);
                /* row tile outside: its x micro-panel stays in L1, W panels stream from L2 */
                for (int i = 0; i < mc; i += A2_MR) {
                    const int mr = mc - i < A2_MR ? mc - i : A2_MR;
                    for (int j = 0; j < nc; j += A2_NR) {
                        const int ncols = nc - j < A2_NR ? nc - j : A2_NR;
                        const float *bias = NULL;
                        if (first && a->bias) {
                            for (int q = 0; q < A2_NR; q++)
                                bias_f32[q] = q < ncols ? vlr_dtype_load(a->bias, a->bias_dtype, (size_t)(ns + j + q)) : 0.0f;
                            bias = bias_f32;
                        }
                        const bool load_c = !first || a->accumulate;
                        a2_tile(mr, kc, xbuf + (size_t)i * A2_KC, wbuf + (size_t)j * A2_KC,
                                a->y + (size_t)(ms + i) * a->ldy + ns + j, a->ldy, ncols, bias, load_c);
                    }
                }
            }
        }
    }
}

static __attribute__((noinline)) void a2_gemm_block_small(const vlr_gemm_args *a, bool round_bf16, int r0,
                                                          int r1, int c0, int c1) {
    alignas(32) float wbuf[A2_NR * A2_KC];
    alignas(32) float xbuf[A2_MR * A2_KC];
    a2_gemm_block(a, round_bf16, r0, r1, c0, c1, wbuf, A2_NR, xbuf, A2_MR);
}

static const vlr_gemm_tiling avx2_tiling = {A2_MR, A2_NR, A2_KC, A2_NC, A2_MC, a2_gemm_block,
                                            a2_gemm_block_small, false};
static const vlr_gemm_tiling avx2_tiling_bf16 = {A2_MR, A2_NR, A2_KC, A2_NC, A2_MC, a2_gemm_block,
                                                 a2_gemm_block_small, true};

static void avx2_gemm(const vlr_gemm_args *a, const vlr_exec *x) { vlr_gemm_run(a, x, &avx2_tiling); }
static void avx2_gemm_bf16(const vlr_gemm_args *a, const vlr_exec *x) { vlr_gemm_run(a, x, &avx2_tiling_bf16); }

/* ---------------------------------------------------------------------------------------------
 * Attention: the flash scheme of x86_avx512.c (read its comment there) on 8-lane vectors. A unit
 * is one key/value head with a block of queries for all heads of its group; keys go in blocks of
 * A2_BK; S = Q·Kᵀ by the GEMM micro-kernel, online softmax per row, O = O·alpha + P·V. The driver
 * (segments, units, threads, scratch) is vlr_attention_run in kernels.c. */

#define A2_BK 64    /* keys per block: a multiple of A2_NR */
static inline __m256 exp256(__m256 x);
#define A2_ROWS 48  /* query rows (heads × queries) per unit */

static inline float a2_hmax(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}
static inline float a2_hsum(__m256 v) { /* fixed order: halves, then pairs, then lanes */
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}
/* lanes < n of an 8-lane mask vector (for maskload / maskstore / blends) */
static inline __m256i a2_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* O[i][c0 .. c0+32) = O·alpha[i] + sum_{j < nv} P[i][j] V[j] for 3 rows (nr valid) and up to four
 * 8-float chunks (mk: lanes of each chunk inside the head). 12 accumulators + 3 broadcasts + 1 V. */
static inline __attribute__((always_inline)) void a2_pv_tile(int nr, int nv, const int nch, const float *p, const float *alpha,
                              const float *v, size_t ldv, float *o, size_t ldo, const __m256i *mk) {
    __m256 acc[3][4];
    const float *prow[3];
#pragma GCC unroll 3
    for (int i = 0; i < 3; i++) {
        const int ii = i < nr ? i : 0;
        prow[i] = p + (size_t)ii * A2_BK;
        const __m256 al = _mm256_set1_ps(alpha[ii]);
#pragma GCC unroll 4
        for (int c = 0; c < 4; c++)
            acc[i][c] = c < nch ? _mm256_mul_ps(_mm256_maskload_ps(o + (size_t)ii * ldo + 8 * c, mk[c]), al)
                                : _mm256_setzero_ps();
    }
    for (int j = 0; j < nv; j++) {
        const __m256 p0 = _mm256_set1_ps(prow[0][j]), p1 = _mm256_set1_ps(prow[1][j]),
                     p2 = _mm256_set1_ps(prow[2][j]);
#pragma GCC unroll 4
        for (int c = 0; c < nch; c++) {
            const __m256 vv = _mm256_maskload_ps(v + (size_t)j * ldv + 8 * c, mk[c]);
            acc[0][c] = _mm256_fmadd_ps(p0, vv, acc[0][c]);
            acc[1][c] = _mm256_fmadd_ps(p1, vv, acc[1][c]);
            acc[2][c] = _mm256_fmadd_ps(p2, vv, acc[2][c]);
        }
    }
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < nch; c++) _mm256_maskstore_ps(o + (size_t)i * ldo + 8 * c, mk[c], acc[i][c]);
}

static void a2_att_unit(const vlr_attention_args *a, int g, int i0, int nq, int bq, const vlr_flash_scratch *w) {
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads, rows = group * bq;
    const int n_vis = a->causal_offset < 0 ? a->n_kv
                      : (a->causal_offset + i0 + nq < a->n_kv ? a->causal_offset + i0 + nq : a->n_kv);
    for (int hh = 0; hh < group; hh++) {
        const int h = g * group + hh;
        for (int t = 0; t < nq; t += A2_MR) {
            const int mr = nq - t < A2_MR ? nq - t : A2_MR;
            a2_pack_x(w->qp + (size_t)(hh * bq + t) * hd, a->q + (size_t)(i0 + t) * a->ld_q + (size_t)h * hd,
                      a->ld_q, mr, 0, hd);
        }
    }
    for (int r = 0; r < rows; r++) {
        w->m[r] = -INFINITY;
        w->l[r] = 0.0f;
        w->alpha[r] = 1.0f;
    }
    memset(w->o, 0, (size_t)rows * hd * sizeof(float));
    memset(w->s, 0, (size_t)rows * A2_BK * sizeof(float));
    const __m256 scale = _mm256_set1_ps(a->scale);
    for (int j0 = 0; j0 < n_vis; j0 += A2_BK) {
        const int nk = n_vis - j0 < A2_BK ? n_vis - j0 : A2_BK;
        a2_pack_w(w->kt, a->k + (size_t)g * hd, VLR_DT_F32, a->ld_kv, j0, nk, 0, hd, (size_t)A2_NR * hd);
        for (int hh = 0; hh < group; hh++)
            for (int t = 0; t < nq; t += A2_MR) {
                const int mr = nq - t < A2_MR ? nq - t : A2_MR;
                for (int pn = 0; pn * A2_NR < nk; pn++)
                    a2_tile(mr, hd, w->qp + (size_t)(hh * bq + t) * hd, w->kt + (size_t)pn * A2_NR * hd,
                            w->s + (size_t)(hh * bq + t) * A2_BK + pn * A2_NR, A2_BK,
                            nk - pn * A2_NR < A2_NR ? nk - pn * A2_NR : A2_NR, NULL, false);
            }
        int nv_max = 0;
        for (int hh = 0; hh < group; hh++)
            for (int qi = 0; qi < nq; qi++) {
                const int r = hh * bq + qi;
                int nv = nk;
                if (a->causal_offset >= 0 && a->causal_offset + i0 + qi + 1 - j0 < nv)
                    nv = a->causal_offset + i0 + qi + 1 - j0;
                float *srow = w->s + (size_t)r * A2_BK;
                if (nv <= 0) {
                    memset(srow, 0, A2_BK * sizeof(float));
                    w->alpha[r] = 1.0f;
                    continue;
                }
                if (nv > nv_max) nv_max = nv;
                __m256 sv[A2_BK / 8];
                __m256 mx = _mm256_set1_ps(-INFINITY);
                for (int v = 0; v < A2_BK / 8; v++) {
                    const __m256 in = _mm256_castsi256_ps(a2_lanes(nv - 8 * v));
                    sv[v] = _mm256_mul_ps(_mm256_load_ps(srow + 8 * v), scale);
                    mx = _mm256_blendv_ps(mx, _mm256_max_ps(mx, sv[v]), in);
                }
                const float m_old = w->m[r], m_new = fmaxf(m_old, a2_hmax(mx));
                const float alpha = m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
                __m256 sum = _mm256_setzero_ps();
                for (int v = 0; v < A2_BK / 8; v++) {
                    const __m256 in = _mm256_castsi256_ps(a2_lanes(nv - 8 * v));
                    const __m256 pv = _mm256_and_ps(in, exp256(_mm256_sub_ps(sv[v], _mm256_set1_ps(m_new))));
                    _mm256_store_ps(srow + 8 * v, pv);
                    sum = _mm256_add_ps(sum, pv);
                }
                w->l[r] = w->l[r] * alpha + a2_hsum(sum);
                w->m[r] = m_new;
                w->alpha[r] = alpha;
            }
        for (int j = 0; j < nv_max; j++)
            memcpy(w->vb + (size_t)j * hd, a->v + (size_t)(j0 + j) * a->ld_kv + (size_t)g * hd,
                   (size_t)hd * sizeof(float));
        for (int c0 = 0; c0 < hd; c0 += 32) {
            const int width = hd - c0 < 32 ? hd - c0 : 32, nch = (width + 7) / 8;
            __m256i mk[4];
            for (int c = 0; c < 4; c++) mk[c] = a2_lanes(width - 8 * c);
            for (int r0 = 0; r0 < rows; r0 += 3) {
                const int nr = rows - r0 < 3 ? rows - r0 : 3;
                const float *pr = w->s + (size_t)r0 * A2_BK, *al = w->alpha + r0;
                float *orow = w->o + (size_t)r0 * hd + c0;
                switch (nch) { /* a register tile per chunk count */
                case 1: a2_pv_tile(nr, nv_max, 1, pr, al, w->vb + c0, (size_t)hd, orow, (size_t)hd, mk); break;
                case 2: a2_pv_tile(nr, nv_max, 2, pr, al, w->vb + c0, (size_t)hd, orow, (size_t)hd, mk); break;
                case 3: a2_pv_tile(nr, nv_max, 3, pr, al, w->vb + c0, (size_t)hd, orow, (size_t)hd, mk); break;
                default: a2_pv_tile(nr, nv_max, 4, pr, al, w->vb + c0, (size_t)hd, orow, (size_t)hd, mk); break;
                }
            }
        }
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
static const vlr_attention_tiling avx2_attention_tiling = {A2_ROWS, A2_BK, a2_att_unit};

static void avx2_attention(const vlr_attention_args *a, const vlr_exec *x) {
    vlr_attention_run(a, x, &avx2_attention_tiling);
}

/* ---------------------------------------------------------------------------------------------
 * Element-wise kernels. Tails (n % 8) go through a zero-padded 8-float buffer. */

/* e^x for 8 lanes: the same reduction and Cephes polynomial as the AVX-512 exp512; 2^n is built
 * in the exponent field (n in [-126, 127] after the clamps). Below -87.3 the result is flushed to
 * 0, above 88.37 it is inf (as expf, which overflows at 88.72). */
static inline __m256 exp256(__m256 x) {
    const __m256 huge = _mm256_cmp_ps(x, _mm256_set1_ps(88.3762626647949f), _CMP_GT_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    const __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3365447505531f), _CMP_LT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3365447505531f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
    return _mm256_blendv_ps(_mm256_andnot_ps(tiny, y), _mm256_set1_ps(INFINITY), huge);
}

static void avx2_silu_mul(float *g, const float *u, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gv = _mm256_loadu_ps(g + i);
        const __m256 den = _mm256_add_ps(one, exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv)));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, den), _mm256_loadu_ps(u + i)));
    }
    if (i < n) {
        alignas(32) float gb[8] = {0}, ub[8] = {0};
        memcpy(gb, g + i, (n - i) * sizeof(float));
        memcpy(ub, u + i, (n - i) * sizeof(float));
        avx2_silu_mul(gb, ub, 8);
        memcpy(g + i, gb, (n - i) * sizeof(float));
    }
}

/* erf on 8 lanes for GELU, as erf512 in x86_avx512.c but with 8 intervals of width 1/2 and
 * degree-8 polynomials (vpermps picks from 8 entries): absolute error <= 6.4e-8 over [0, 4.2]. */
static const float erf_poly8[9][8] = {
    {2.763263902e-01f, 7.111556337e-01f, 9.229001283e-01f, 9.866716712e-01f, 9.985372834e-01f, 9.998993781e-01f, 9.999956972e-01f, 9.999998863e-01f},
    {1.060014128e+00f, 6.429310713e-01f, 2.365211220e-01f, 5.277499545e-02f, 7.142319215e-03f, 5.862772866e-04f, 2.918901172e-05f, 8.814288511e-07f},
    {-2.650035297e-01f, -4.821983021e-01f, -2.956514042e-01f, -9.235624223e-02f, -1.607021778e-02f, -1.612262511e-03f, -9.486432949e-05f, -3.305366817e-06f},
    {-3.091704952e-01f, 2.678835053e-02f, 1.675358903e-01f, 9.015738693e-02f, 2.172451249e-02f, 2.760380299e-03f, 1.958126297e-04f, 7.970327784e-06f},
    {1.269805142e-01f, 1.506870018e-01f, -6.159254445e-03f, -4.810229227e-02f, -1.908338648e-02f, -3.258103204e-03f, -2.865697258e-04f, -1.384173895e-05f},
    {8.003626588e-02f, -5.321708910e-02f, -4.718655397e-02f, 6.618473113e-03f, 1.066005949e-02f, 2.756290993e-03f, 3.136288521e-04f, 1.833006028e-05f},
    {-4.051715879e-02f, -2.687397689e-02f, 2.129455476e-02f, 8.966748211e-03f, -2.904232821e-03f, -1.657795987e-03f, -2.635108418e-04f, -1.925037532e-05f},
    {-1.580337050e-02f, 1.788549518e-02f, 3.745110582e-03f, -5.933099352e-03f, -7.215269990e-04f, 6.358153919e-04f, 1.735964955e-04f, 1.714471156e-05f},
    {9.410909573e-03f, 2.329175223e-03f, -5.574545710e-03f, 6.619715665e-04f, 9.973412087e-04f, -8.043680909e-05f, -8.198082870e-05f, -1.153638777e-05f},
};

static inline __m256 erf256(__m256 z) {
    const __m256 t = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    const __m256i idx = _mm256_min_epi32(_mm256_cvttps_epi32(_mm256_mul_ps(t, _mm256_set1_ps(2.0f))),
                                         _mm256_set1_epi32(7));
    const __m256 centre = _mm256_fmadd_ps(_mm256_cvtepi32_ps(idx), _mm256_set1_ps(0.5f), _mm256_set1_ps(0.25f));
    const __m256 s = _mm256_sub_ps(t, centre);
    __m256 p = _mm256_permutevar8x32_ps(_mm256_loadu_ps(erf_poly8[8]), idx);
    for (int d = 7; d >= 0; d--) p = _mm256_fmadd_ps(p, s, _mm256_permutevar8x32_ps(_mm256_loadu_ps(erf_poly8[d]), idx));
    p = _mm256_blendv_ps(p, _mm256_set1_ps(1.0f), _mm256_cmp_ps(t, _mm256_set1_ps(4.0f), _CMP_GE_OQ));
    return _mm256_or_ps(p, _mm256_and_ps(z, _mm256_set1_ps(-0.0f)));
}

static void avx2_gelu(float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 e = erf256(_mm256_mul_ps(v, _mm256_set1_ps((float)M_SQRT1_2)));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), v),
                                              _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
    }
    if (i < n) {
        alignas(32) float t[8] = {0};
        memcpy(t, x + i, (n - i) * sizeof(float));
        avx2_gelu(t, 8);
        memcpy(x + i, t, (n - i) * sizeof(float));
    }
}

static void avx2_add(float *y, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

/* Sum of squares in 8 lanes (lane l takes elements l, l+8, ...; the tail padded with zeros), then
 * a fixed reduction order. */
static void avx2_rmsnorm(float *y, const float *x, int rows, int n, const void *w, vlr_dtype w_dtype,
                         float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        __m256 ss = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(xr + i);
            ss = _mm256_fmadd_ps(v, v, ss);
        }
        if (i < n) {
            alignas(32) float t[8] = {0};
            memcpy(t, xr + i, (size_t)(n - i) * sizeof(float));
            const __m256 v = _mm256_load_ps(t);
            ss = _mm256_fmadd_ps(v, v, ss);
        }
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, ss);
        const float sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5])) + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
        const float scale = 1.0f / sqrtf(sum / (float)n + eps);
        const __m256 sv = _mm256_set1_ps(scale);
        for (i = 0; i + 8 <= n; i += 8)
            _mm256_storeu_ps(yr + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xr + i), sv),
                                                   a2_load_w8(w, w_dtype, (size_t)i)));
        for (; i < n; i++) yr[i] = (xr[i] * scale) * vlr_dtype_load(w, w_dtype, (size_t)i);
    }
}

static void avx2_rope(float *x, size_t ld, int rows, int n_heads, int head_dim, const float *cos_tab,
                      const float *sin_tab) {
    const int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        const float *c = cos_tab + (size_t)r * head_dim, *s = sin_tab + (size_t)r * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)r * ld + (size_t)h * head_dim;
            int i = 0;
            for (; i + 8 <= half; i += 8) {
                const __m256 a = _mm256_loadu_ps(xh + i), b = _mm256_loadu_ps(xh + half + i);
                _mm256_storeu_ps(xh + i, _mm256_sub_ps(_mm256_mul_ps(a, _mm256_loadu_ps(c + i)),
                                                       _mm256_mul_ps(b, _mm256_loadu_ps(s + i))));
                _mm256_storeu_ps(xh + half + i,
                                 _mm256_add_ps(_mm256_mul_ps(b, _mm256_loadu_ps(c + half + i)),
                                               _mm256_mul_ps(a, _mm256_loadu_ps(s + half + i))));
            }
            for (; i < half; i++) {
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c[i] - b * s[i];
                xh[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

void vlr_kernels_fill_avx2(vlr_kernels *k, vlr_precision precision) {
    k->isa = "avx2";
    k->precision = precision;
    k->gemm = precision == VLR_PRECISION_BF16 ? avx2_gemm_bf16 : avx2_gemm;
    k->attention = avx2_attention;
    k->rmsnorm = avx2_rmsnorm;
    k->rope = avx2_rope;
    k->silu_mul = avx2_silu_mul;
    k->gelu = avx2_gelu;
    k->add = avx2_add;
}
