/* x86_avx2_int8.c: the gemm_i8 slot for AVX2 CPUs without AVX512_VNNI (and AVX-512 ones without it).
 * Compiled with the AVX2 flags; only called after vlr_cpu_has_avx2().
 *
 * AVX2 has no 4-way byte dot product, only vpmaddubsw (u8 × s8 pairs summed into a saturating int16)
 * and vpmaddwd. With xq + 128 as the unsigned side a pair can reach 2 · 255 · 127 and saturate, so
 * this kernel moves the sign instead: |xq| (≤ 127) is the unsigned side and wq with xq's sign applied
 * (vpsignb: negated where xq < 0, zeroed where xq = 0) the signed side, so a pair is at most
 * 2 · 127 · 127 = 32,258 and every step is exact. x is packed by the scalar vlr_i8_pack_rows (offset
 * 0); the weights are int8.c's panels, read as four ymm of 8 channels per 4 k.
 *
 * Micro-kernel: 4 rows × 16 channels (half a panel), 8 accumulators; a panel is two passes. */
#include <immintrin.h>

#include "exec.h"
#include "kernels.h"

#define A2_I8_MR 4

static void avx2_pack_x_i8(uint32_t *dst, float *sx, const float *x, size_t ldx, int rows, int k, int k4) {
    vlr_i8_pack_rows(dst, sx, x, ldx, rows, k, k4, 0);
}

/* Columns [16 h, 16 h + 16) of the panel for mr rows. */
static inline __attribute__((always_inline)) void half_panel(const int mr, int h, int kq, const uint32_t *xp,
                                                             const int8_t *wp, float *c, size_t ldc, int n_cols,
                                                             const float *sx, const float *sw, const float *bias,
                                                             bool accumulate, const vlr_i8_kblock *kb) {
    __m256i acc[A2_I8_MR][2];
    for (int i = 0; i < mr; i++)
        for (int v = 0; v < 2; v++)
            acc[i][v] = kb->first ? _mm256_setzero_si256()
                                  : _mm256_load_si256((const __m256i *)(kb->acc + 32 * i + 16 * h + 8 * v));
    const __m256i ones = _mm256_set1_epi16(1);
    wp += 64 * h;
    for (int q = 0; q < kq; q++) {
        const __m256i b0 = _mm256_load_si256((const __m256i *)wp), b1 = _mm256_load_si256((const __m256i *)(wp + 32));
        for (int i = 0; i < mr; i++) {
            const __m256i a = _mm256_set1_epi32((int)xp[i]), abs_a = _mm256_abs_epi8(a);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b0, a)), ones));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(_mm256_maddubs_epi16(abs_a, _mm256_sign_epi8(b1, a)), ones));
        }
        xp += mr;
        wp += 4 * VLR_I8_NR;
    }
    if (!kb->last) { /* more k blocks to come */
        for (int i = 0; i < mr; i++)
            for (int v = 0; v < 2; v++) _mm256_store_si256((__m256i *)(kb->acc + 32 * i + 16 * h + 8 * v), acc[i][v]);
        return;
    }
    for (int v = 0; v < 2; v++) {
        const int col0 = 16 * h + 8 * v; /* within the panel */
        if (col0 >= n_cols) break;
        const __m256 swv = _mm256_load_ps(sw + col0);
        const __m256 bv = bias ? _mm256_load_ps(bias + col0) : _mm256_setzero_ps();
        for (int i = 0; i < mr; i++) {
            __m256 r = _mm256_mul_ps(_mm256_cvtepi32_ps(acc[i][v]), _mm256_mul_ps(_mm256_set1_ps(sx[i]), swv));
            if (bias) r = _mm256_add_ps(r, bv);
            float *cp = c + (size_t)i * ldc + col0;
            if (n_cols - col0 >= 8) {
                if (accumulate) r = _mm256_add_ps(_mm256_loadu_ps(cp), r);
                _mm256_storeu_ps(cp, r);
            } else { /* the panel's last, partial group of 8 */
                float t[8];
                _mm256_storeu_ps(t, r);
                for (int j = 0; j < n_cols - col0; j++) cp[j] = accumulate ? cp[j] + t[j] : t[j];
            }
        }
    }
}

static void avx2_tile_i8(const vlr_gemm_args *a, const uint32_t *xp, const float *sx, int rows, int i0, int panel,
                         const float *bias, const vlr_i8_kblock *kb) {
    const vlr_qweight *q = a->wq;
    const int kq = kb->q1 - kb->q0, c0 = panel * VLR_I8_NR;
    const int n_cols = a->n - c0 < VLR_I8_NR ? a->n - c0 : VLR_I8_NR;
    const int8_t *wp = q->packed + (size_t)panel * (size_t)q->k4 * VLR_I8_NR + (size_t)kb->q0 * 4 * VLR_I8_NR;
    xp += (size_t)kb->q0 * (size_t)rows;
    float *c = a->y + (size_t)i0 * a->ldy + c0;
    for (int h = 0; h < 2 && 16 * h < n_cols; h++) {
        switch (rows) {
#define A2_I8_CASE(R) \
    case R: half_panel(R, h, kq, xp, wp, c, a->ldy, n_cols, sx, q->scale + c0, bias, a->accumulate, kb); break;
            A2_I8_CASE(1) A2_I8_CASE(2) A2_I8_CASE(3) A2_I8_CASE(4)
#undef A2_I8_CASE
        default: break;
        }
    }
}

static const vlr_i8_tiling avx2_i8_tiling = {A2_I8_MR, avx2_pack_x_i8, avx2_tile_i8};

static void avx2_gemm_i8(const vlr_gemm_args *a, int n_gemms, const vlr_exec *x) {
    vlr_gemm_i8_run(a, n_gemms, x, &avx2_i8_tiling);
}

void vlr_kernels_fill_avx2_int8(vlr_kernels *k) {
    k->gemm_i8 = avx2_gemm_i8;
    k->isa_i8 = "avx2";
}
