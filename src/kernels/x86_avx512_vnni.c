/* x86_avx512_vnni.c: the gemm_i8 slot on CPUs with AVX512_VNNI. Compiled with the AVX-512 flags
 * plus -mavx512vnni; only called after vlr_cpu_has_avx512_vnni().
 *
 * vpdpbusd multiplies 4 unsigned bytes of one operand by 4 signed bytes of the other, lane by lane,
 * and adds the 4 products to a 32-bit lane: 64 multiply-adds per 512-bit instruction, twice
 * vdpbf16ps's 32 and four times an fp32 FMA's 16. The weights are the signed side (int8.c packed them
 * at load, 128 bytes per 4 k for a 32-channel panel: two zmm); the activations are the unsigned side,
 * each xq stored as xq + 128 (1 .. 255), and the offset's contribution 128 · sum_k wq[j][k] (the
 * weights' offset_sum) is subtracted in the epilogue. All of it is exact int32, so the result has the
 * reference's bits (kernels.h).
 *
 * Micro-kernel: 14 rows × 32 channels, 28 accumulators, per 4 k two weight loads and 14 broadcasts
 * of one row's 4 bytes, over one k block of the driver (kernels.h: up to 4,096 k, so a panel's block
 * of at most 128 KiB stays in L2 while every x tile streams past it); between blocks the sums wait in
 * the driver's int32 buffer, and the epilogue runs after the last. */
#include "exec.h"
#include "x86_avx512_common.h"

#define I8_MR 14

/* The rows of one tile quantized as vlr_i8_pack_rows(offset 128) does, 16 values per step. */
static void vnni_pack_x(uint32_t *dst, float *sx, const float *x, size_t ldx, int rows, int k, int k4) {
    for (int i = 0; i < rows; i++) {
        const float *xr = x + (size_t)i * ldx;
        __m512 amax = _mm512_setzero_ps();
        __mmask16 bad = 0;
        for (int p = 0; p < k; p += 16) {
            const __m512 v = _mm512_maskz_loadu_ps(tail_mask(k - p), xr + p);
            bad |= _mm512_fpclass_ps_mask(v, 0x99); /* QNaN | SNaN | +Inf | -Inf */
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        }
        float inv;
        sx[i] = vlr_i8_scale(_mm512_reduce_max_ps(amax), bad == 0, &inv);
        const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
        const __m512i off = _mm512_set1_epi32(128);
        for (int p = 0; p < k4; p += 16) {
            const __m512 v = _mm512_maskz_loadu_ps(tail_mask(k - p > 0 ? k - p : 0), xr + p);
            /* max/min return their second operand when one is NaN: a NaN (v · 0 for a non-finite v)
             * passes through, converts to 0x80000000, and its low byte after + 128 is 128, the
             * scalar packing's byte for NaN (the row's scale is NaN, so no result reads it) */
            const __m512 t = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_mul_ps(v, vinv)));
            const __m128i b = _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvtps_epi32(t), off));
            uint32_t words[4];
            _mm_storeu_si128((__m128i *)words, b);
            const int n_words = (k4 - p) / 4 < 4 ? (k4 - p) / 4 : 4;
            for (int g = 0; g < n_words; g++) dst[(size_t)(p / 4 + g) * (size_t)rows + (size_t)i] = words[g];
        }
    }
}

/* 16 outputs of a row: c = (float(acc) · scale) + bias [+ c], masked to the tile's columns. */
static inline __attribute__((always_inline)) void store_row(float *c, __m512i acc, __m512 scale, const float *bias,
                                                            __mmask16 mk, bool accumulate) {
    __m512 r = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), scale);
    if (bias) r = _mm512_add_ps(r, _mm512_load_ps(bias));
    if (accumulate) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, c), r);
    _mm512_mask_storeu_ps(c, mk, r);
}

/* y[0:mr, 0:n_cols] of one tile against one panel; `mr` is a constant after inlining (see tile). */
static inline __attribute__((always_inline)) void ukernel(const int mr, int kq, const uint32_t *restrict xp,
                                                          const int8_t *restrict wp, float *c, size_t ldc,
                                                          int n_cols, const float *sx, const float *sw,
                                                          const int32_t *offset_sum, const float *bias,
                                                          bool accumulate, const vlr_i8_kblock *kb) {
    /* channels 0-15 and 16-31 of the panel, as GCC's own int32 vectors: with __m512i (64-bit lanes)
     * every vpdpbusd goes through a lane-type conversion and GCC 12 then copies each accumulator
     * through the stack */
    __v16si acc0[I8_MR], acc1[I8_MR];
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        acc0[i] = kb->first ? (__v16si)_mm512_setzero_si512() : (__v16si)_mm512_load_si512(kb->acc + 32 * i);
        acc1[i] = kb->first ? (__v16si)_mm512_setzero_si512() : (__v16si)_mm512_load_si512(kb->acc + 32 * i + 16);
    }
    /* (not unrolled: GCC 12 then shuffles the accumulators through the stack) */
#pragma GCC unroll 1
    for (int q = 0; q < kq; q++) {
        const __v16si b0 = (__v16si)_mm512_load_si512(wp), b1 = (__v16si)_mm512_load_si512(wp + 64);
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            const __v16si a = (__v16si)_mm512_set1_epi32((int)xp[i]);
            acc0[i] = __builtin_ia32_vpdpbusd_v16si(acc0[i], a, b0);
            acc1[i] = __builtin_ia32_vpdpbusd_v16si(acc1[i], a, b1);
        }
        xp += mr;
        wp += 4 * VLR_I8_NR;
    }
    if (!kb->last) { /* more k blocks to come */
#pragma GCC unroll 14
        for (int i = 0; i < mr; i++) {
            _mm512_store_si512(kb->acc + 32 * i, (__m512i)acc0[i]);
            _mm512_store_si512(kb->acc + 32 * i + 16, (__m512i)acc1[i]);
        }
        return;
    }
    /* the epilogue, row by row: y = (float(acc - offset) · (sx · sw)) + bias [+ y] */
    const __mmask16 mk0 = tail_mask(n_cols), mk1 = tail_mask(n_cols > 16 ? n_cols - 16 : 0);
    const __m512i off0 = _mm512_load_si512(offset_sum), off1 = _mm512_load_si512(offset_sum + 16);
    const __m512 sw0 = _mm512_load_ps(sw), sw1 = _mm512_load_ps(sw + 16);
#pragma GCC unroll 14
    for (int i = 0; i < mr; i++) {
        const __m512 s = _mm512_set1_ps(sx[i]);
        store_row(c + (size_t)i * ldc, _mm512_sub_epi32((__m512i)acc0[i], off0), _mm512_mul_ps(s, sw0), bias, mk0, accumulate);
        store_row(c + (size_t)i * ldc + 16, _mm512_sub_epi32((__m512i)acc1[i], off1), _mm512_mul_ps(s, sw1),
                  bias ? bias + 16 : NULL, mk1, accumulate);
    }
}

static void vnni_tile(const vlr_gemm_args *a, const uint32_t *xp, const float *sx, int rows, int i0, int panel,
                      const float *bias, const vlr_i8_kblock *kb) {
    const vlr_qweight *q = a->wq;
    const int kq = kb->q1 - kb->q0, c0 = panel * VLR_I8_NR;
    const int n_cols = a->n - c0 < VLR_I8_NR ? a->n - c0 : VLR_I8_NR;
    const int8_t *wp = q->packed + (size_t)panel * (size_t)q->k4 * VLR_I8_NR + (size_t)kb->q0 * 4 * VLR_I8_NR;
    xp += (size_t)kb->q0 * (size_t)rows;
    float *c = a->y + (size_t)i0 * a->ldy + c0;
    switch (rows) {
#define I8_CASE(R) \
    case R: ukernel(R, kq, xp, wp, c, a->ldy, n_cols, sx, q->scale + c0, q->offset_sum + c0, bias, a->accumulate, kb); break;
        I8_CASE(1) I8_CASE(2) I8_CASE(3) I8_CASE(4) I8_CASE(5) I8_CASE(6) I8_CASE(7)
        I8_CASE(8) I8_CASE(9) I8_CASE(10) I8_CASE(11) I8_CASE(12) I8_CASE(13) I8_CASE(14)
#undef I8_CASE
    default: break;
    }
}

static const vlr_i8_tiling vnni_tiling = {I8_MR, vnni_pack_x, vnni_tile};

static void avx512_vnni_gemm_i8(const vlr_gemm_args *a, int n_gemms, const vlr_exec *x) {
    vlr_gemm_i8_run(a, n_gemms, x, &vnni_tiling);
}

void vlr_kernels_fill_avx512_vnni(vlr_kernels *k) {
    k->gemm_i8 = avx512_vnni_gemm_i8;
    k->isa_i8 = "avx512_vnni";
}
