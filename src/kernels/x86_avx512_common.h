/* x86_avx512_common.h: the AVX-512 helpers both AVX-512 kernel files use (x86_avx512.c, fp32
 * arithmetic; x86_avx512_bf16.c, vdpbf16ps): masks, widening loads, the 16 x 16 transpose, and the
 * vector form of vlr_round_bf16. Static inline: each file compiles them with its own -m flags. */
#ifndef VLR_X86_AVX512_COMMON_H
#define VLR_X86_AVX512_COMMON_H

#include <immintrin.h>

#include "kernels.h"

static inline __mmask16 tail_mask(int n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

/* 16 consecutive weights of one row, widened to fp32; lanes >= n_valid read as 0 (masked load: no
 * access past the row). */
static inline __m512 load_w16(const void *w, vlr_dtype dt, size_t off, int n_valid) {
    const __mmask16 mk = tail_mask(n_valid);
    switch (dt) {
    case VLR_DT_BF16: {
        __m256i h = _mm256_maskz_loadu_epi16(mk, (const uint16_t *)w + off);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    case VLR_DT_F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, (const uint16_t *)w + off));
    case VLR_DT_F32: return _mm512_maskz_loadu_ps(mk, (const float *)w + off);
    }
    return _mm512_setzero_ps();
}

/* In-register 16×16 fp32 transpose: r[i] lane j becomes r[j] lane i. Three unpack stages build 4×4
 * blocks inside 128-bit lanes, two 128-bit shuffles move the blocks into place. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* u[4i+c] lane L now holds column 4L+c of rows 4i..4i+3. */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44);
        __m512 v1 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xee);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xee);
        r[c] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(v0, w0, 0xdd);
        r[8 + c] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(v1, w1, 0xdd);
    }
}

/* vlr_round_bf16 on 16 lanes, in integer arithmetic so that CPUs without AVX512_BF16 get the same
 * bits as vcvtneps2bf16: nearest even, subnormals to signed zero, NaN kept (quieted). */
static inline __m512 round_bf16_16(__m512 v) {
    const __m512i u = _mm512_castps_si512(v);
    const __mmask16 subnormal = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                                     _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
    r = _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
    r = _mm512_mask_mov_epi32(r, subnormal, _mm512_and_si512(u, _mm512_set1_epi32((int)0x80000000u)));
    return _mm512_castsi512_ps(r);
}

/* The epilogue of one micro-tile row, shared by both AVX-512 GEMMs: for its nv vectors of 16
 * columns, r = acc (+ bias, on the first k block) and c = load_c ? c + r : r, masked to the tile's
 * columns. bias (when set) is 64-byte aligned and zero-padded to the tile width. */
static inline __attribute__((always_inline)) void tile_row_store(float *c, const __m512 *acc, const int nv,
                                                                 const __mmask16 *mk, const float *bias,
                                                                 bool load_c) {
#pragma GCC unroll 4
    for (int v = 0; v < nv; v++) {
        float *cp = c + 16 * v;
        __m512 r = acc[v];
        if (bias) r = _mm512_add_ps(r, _mm512_load_ps(bias + 16 * v));
        if (load_c) r = _mm512_add_ps(_mm512_maskz_loadu_ps(mk[v], cp), r);
        _mm512_mask_storeu_ps(cp, mk[v], r);
    }
}

#endif
