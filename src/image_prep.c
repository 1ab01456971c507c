/* image_prep.c: from a decoded RGB8 image to the processor's pixel_values, byte- and bit-exact
 * against qwen_vl_utils.fetch_image + the slow transformers Qwen2VLImageProcessor (Pillow 9.4):
 *
 *   smart_resize      qwen_vl_utils / transformers sizing, Python round-half-to-even
 *   resize_bicubic    Pillow ImagingResample (libImaging/Resample.c) with the bicubic filter
 *   patchify          rescale float32(float64(x) * factor), normalise (x - mean) / std in float32,
 *                     repeat the frame temporal_patch_size times, cut into patch rows in the
 *                     processor's order
 *   prepare           the chain for one image item
 *
 * Not here: reading and decoding the file (image_source.c, image_decode.c). Videos are not handled.
 * Parallel loops run over output rows only, so results do not depend on the thread count. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The team of a parallel loop here: the caller's count (vlr_image_limits.n_threads), else the
 * OpenMP default. Given in num_threads clauses, so no OpenMP setting of the caller is changed. */
static int team_size(int n_threads) {
    if (n_threads > 0) return n_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

#if defined(__clang__)
/* The filter and coefficient arithmetic must round like Pillow's build (no fused multiply-add). */
#pragma STDC FP_CONTRACT OFF
#endif

/* ---- smart_resize ------------------------------------------------------------------------- */

vlr_status vlr_smart_resize(int64_t height, int64_t width, int factor, int64_t min_pixels, int64_t max_pixels,
                            int64_t *out_h, int64_t *out_w, vlr_err *e) {
    /* Bounds that keep every product below 2^53, where int64 -> double is exact and so the
     * double arithmetic below is Python's (true division of ints is correctly rounded). */
    const int64_t side_cap = (int64_t)1 << 26;
    if (height <= 0 || width <= 0)
        return vlr_fail(e, VLR_ERR_INPUT, "smart_resize: height %lld and width %lld must be positive",
                        (long long)height, (long long)width);
    if (height > side_cap || width > side_cap)
        return vlr_fail(e, VLR_ERR_LIMIT, "smart_resize: %lldx%lld is too large", (long long)width, (long long)height);
    if (factor <= 0) return vlr_fail(e, VLR_ERR_CONFIG, "smart_resize: factor %d must be positive", factor);
    if (max_pixels <= 0 || min_pixels < 0 || max_pixels > ((int64_t)1 << 52) || min_pixels > ((int64_t)1 << 52))
        return vlr_fail(e, VLR_ERR_INPUT, "smart_resize: min_pixels %lld / max_pixels %lld out of range",
                        (long long)min_pixels, (long long)max_pixels);
    double hi = (double)(height > width ? height : width), lo = (double)(height > width ? width : height);
    if (hi / lo > 200)
        return vlr_fail(e, VLR_ERR_INPUT, "absolute aspect ratio must be smaller than 200, got %.17g (%lldx%lld)",
                        hi / lo, (long long)width, (long long)height);
    double f = (double)factor, h = (double)height, w = (double)width;
    /* round() on a float is half-to-even in Python; rint() in the default rounding mode too. */
    int64_t h_bar = (int64_t)rint(h / f) * factor, w_bar = (int64_t)rint(w / f) * factor;
    if (h_bar < factor) h_bar = factor;
    if (w_bar < factor) w_bar = factor;
    if (h_bar * w_bar > max_pixels) {
        double beta = sqrt((double)(height * width) / (double)max_pixels);
        h_bar = (int64_t)floor(h / beta / f) * factor;
        w_bar = (int64_t)floor(w / beta / f) * factor;
        if (h_bar < factor) h_bar = factor;
        if (w_bar < factor) w_bar = factor;
    } else if (h_bar * w_bar < min_pixels) {
        double beta = sqrt((double)min_pixels / (double)(height * width));
        h_bar = (int64_t)ceil(h * beta / f) * factor;
        w_bar = (int64_t)ceil(w * beta / f) * factor;
    }
    *out_h = h_bar;
    *out_w = w_bar;
    return VLR_OK;
}

/* ---- Pillow bicubic resample --------------------------------------------------------------- */

/* Resample.c: 8 bits of result, 2 bits of headroom for the filter's negative lobes. */
#define PRECISION_BITS (32 - 8 - 2)

/* Resample.c bicubic_filter, a = -0.5, support 2; written with Pillow's operation order. */
static inline double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Pillow's clip8: the lookup table covers (ss >> 22) in [-640, 640), far beyond what normalised
 * bicubic weights can reach, and clamps to 0..255. */
static inline uint8_t clip8(int32_t ss) {
    int32_t v = ss >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

typedef struct resample_axis {
    int ksize;       /* coefficients per output sample (stride of coeffs) */
    int *bounds;     /* [out_size][2]: first input index, number of inputs used */
    int32_t *coeffs; /* [out_size][ksize]: fixed point, PRECISION_BITS fractional bits */
} resample_axis;

static void resample_axis_free(resample_axis *ax) {
    free(ax->bounds);
    free(ax->coeffs);
    memset(ax, 0, sizeof *ax);
}

/* Resample.c precompute_coeffs + normalize_coeffs_8bpc for the whole-image box [0, in_size). */
static vlr_status resample_axis_init(int in_size, int out_size, resample_axis *ax, vlr_err *e) {
    memset(ax, 0, sizeof *ax);
    const float in0 = 0.0f, in1 = (float)in_size; /* Pillow's box is float */
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ks = ceil(support) * 2 + 1;
    if (ks > (double)INT32_MAX / 2) return vlr_fail(e, VLR_ERR_LIMIT, "resize: filter support too large");
    int ksize = (int)ks;
    size_t n_coeffs, n_bounds;
    if (!vlr_mul_ok((size_t)out_size, (size_t)ksize, &n_coeffs) || n_coeffs > SIZE_MAX / sizeof(int32_t) ||
        !vlr_mul_ok((size_t)out_size, 2 * sizeof(int), &n_bounds))
        return vlr_fail(e, VLR_ERR_LIMIT, "resize: %d -> %d needs too many coefficients", in_size, out_size);
    double *k = vlr_malloc(sizeof(double) * (size_t)ksize, e);
    ax->bounds = vlr_malloc(n_bounds, e);
    ax->coeffs = vlr_malloc(n_coeffs * sizeof(int32_t), e);
    if (!k || !ax->bounds || !ax->coeffs) {
        free(k);
        resample_axis_free(ax);
        return VLR_ERR_NOMEM;
    }
    ax->ksize = ksize;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        /* Pillow: (int) casts (truncation toward zero) clamped to [0, in_size]; clamping in double
         * first gives the same integers without a cast that could overflow. */
        double lo = center - support + 0.5, hi = center + support + 0.5;
        int xmin = lo < 0 ? 0 : (int)lo;
        int xmax = hi > in_size ? in_size : (int)hi;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize; /* cannot happen: 2*support+1 taps at most */
        for (int x = 0; x < xmax; x++) {
            double w = bicubic_filter(((double)(x + xmin) - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        int32_t *kk = ax->coeffs + (size_t)xx * ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? k[x] / ww : k[x];
            /* normalize_coeffs_8bpc: round half away from zero by truncating v*2^22 -/+ 0.5 */
            kk[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        for (int x = xmax < 0 ? 0 : xmax; x < ksize; x++) kk[x] = 0;
        ax->bounds[2 * xx] = xmin;
        ax->bounds[2 * xx + 1] = xmax < 0 ? 0 : xmax;
    }
    free(k);
    return VLR_OK;
}

/* ImagingResampleHorizontal_8bpc for one row: the scalar reference. */
static void horizontal_row_ref(const uint8_t *in, const resample_axis *ax, uint8_t *out, int out_w) {
    const int ksize = ax->ksize;
    for (int xx = 0; xx < out_w; xx++) {
        int xmin = ax->bounds[2 * xx], count = ax->bounds[2 * xx + 1];
        const int32_t *k = ax->coeffs + (size_t)xx * ksize;
        const uint8_t *p = in + (size_t)xmin * 3;
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < count; x++) {
            s0 += p[3 * x] * k[x];
            s1 += p[3 * x + 1] * k[x];
            s2 += p[3 * x + 2] * k[x];
        }
        out[3 * xx] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
    }
}

/* ImagingResampleVertical_8bpc for one output row: the scalar reference. Integer sums are exact,
 * so accumulating tap by tap over a chunk of the row gives Pillow's per-sample sums. */
static void vertical_row_ref(const uint8_t *src, size_t row_len, int ymin, int count, const int32_t *k,
                             uint8_t *out) {
    int32_t acc[512];
    for (size_t i0 = 0; i0 < row_len; i0 += 512) {
        size_t len = row_len - i0 < 512 ? row_len - i0 : 512;
        for (size_t i = 0; i < len; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < count; y++) {
            const uint8_t *in = src + (size_t)(ymin + y) * row_len + i0;
            int32_t c = k[y];
            for (size_t i = 0; i < len; i++) acc[i] += in[i] * c;
        }
        for (size_t i = 0; i < len; i++) out[i0 + i] = clip8(acc[i]);
    }
}

#if defined(__SSE2__)
/* SSE2 twins (baseline on x86-64), exact by construction: each 22-bit coefficient is split as
 * k = hi * 2^11 + lo with 0 <= lo < 2^11, both fitting int16, so pmaddwd forms the integer sums
 * sum(x * hi) and sum(x * lo) of two taps at a time; (sum_hi << 11) + sum_lo is then Pillow's
 * int32 sum exactly. sum_lo <= 255 * 2047 * taps stays far from overflow for taps <= SIMD_MAX_TAPS;
 * wider filters (shrinking by more than ~250x) use the scalar path. */
#include <emmintrin.h>
#define SIMD_MAX_TAPS 1000
#define SPLIT_BITS 11

static inline void split_coeff(int32_t k, int16_t *hi, int16_t *lo) {
    int32_t l = k & ((1 << SPLIT_BITS) - 1);
    *hi = (int16_t)((k - l) / (1 << SPLIT_BITS));
    *lo = (int16_t)l;
}

static inline __m128i pair16(int16_t a, int16_t b) {
    return _mm_set1_epi32((int32_t)((uint32_t)(uint16_t)a | (uint32_t)(uint16_t)b << 16));
}

/* (hi << 11) + lo + rounding, >> 22, clamped to 0..255 by the saturating packs (= clip8). */
static inline __m128i finish_sums(__m128i hi, __m128i lo) {
    __m128i t = _mm_add_epi32(_mm_slli_epi32(hi, SPLIT_BITS), lo);
    t = _mm_add_epi32(t, _mm_set1_epi32(1 << (PRECISION_BITS - 1)));
    return _mm_srai_epi32(t, PRECISION_BITS);
}

static void vertical_row_sse2(const uint8_t *src, size_t row_len, int ymin, int count, const int32_t *k,
                              uint8_t *out) {
    __m128i ch[(SIMD_MAX_TAPS + 1) / 2], cl[(SIMD_MAX_TAPS + 1) / 2];
    const uint8_t *ra[(SIMD_MAX_TAPS + 1) / 2], *rb[(SIMD_MAX_TAPS + 1) / 2];
    const int npairs = (count + 1) / 2;
    for (int p = 0; p < npairs; p++) {
        int16_t ha, la, hb = 0, lb = 0;
        split_coeff(k[2 * p], &ha, &la);
        if (2 * p + 1 < count) split_coeff(k[2 * p + 1], &hb, &lb);
        ch[p] = pair16(ha, hb);
        cl[p] = pair16(la, lb);
        ra[p] = src + (size_t)(ymin + 2 * p) * row_len;
        rb[p] = 2 * p + 1 < count ? ra[p] + row_len : ra[p]; /* odd tap count: weight 0 */
    }
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0;
    for (; i + 16 <= row_len; i += 16) {
        __m128i h0 = zero, h1 = zero, h2 = zero, h3 = zero, l0 = zero, l1 = zero, l2 = zero, l3 = zero;
        for (int p = 0; p < npairs; p++) {
            __m128i a = _mm_loadu_si128((const __m128i *)(ra[p] + i));
            __m128i b = _mm_loadu_si128((const __m128i *)(rb[p] + i));
            __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
            __m128i w0 = _mm_unpacklo_epi8(ab_lo, zero), w1 = _mm_unpackhi_epi8(ab_lo, zero);
            __m128i w2 = _mm_unpacklo_epi8(ab_hi, zero), w3 = _mm_unpackhi_epi8(ab_hi, zero);
            h0 = _mm_add_epi32(h0, _mm_madd_epi16(w0, ch[p]));
            h1 = _mm_add_epi32(h1, _mm_madd_epi16(w1, ch[p]));
            h2 = _mm_add_epi32(h2, _mm_madd_epi16(w2, ch[p]));
            h3 = _mm_add_epi32(h3, _mm_madd_epi16(w3, ch[p]));
            l0 = _mm_add_epi32(l0, _mm_madd_epi16(w0, cl[p]));
            l1 = _mm_add_epi32(l1, _mm_madd_epi16(w1, cl[p]));
            l2 = _mm_add_epi32(l2, _mm_madd_epi16(w2, cl[p]));
            l3 = _mm_add_epi32(l3, _mm_madd_epi16(w3, cl[p]));
        }
        __m128i lo8 = _mm_packs_epi32(finish_sums(h0, l0), finish_sums(h1, l1));
        __m128i hi8 = _mm_packs_epi32(finish_sums(h2, l2), finish_sums(h3, l3));
        _mm_storeu_si128((__m128i *)(out + i), _mm_packus_epi16(lo8, hi8));
    }
    for (; i < row_len; i++) {
        int32_t s = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < count; y++) s += src[(size_t)(ymin + y) * row_len + i] * k[y];
        out[i] = clip8(s);
    }
}

/* Horizontal taps come in pairs of neighbouring pixels: each source pixel x is expanded once per
 * row to (R_x, R_x+1, G_x, G_x+1, B_x, B_x+1, -, -) as int16, so one pmaddwd against
 * (k_j, k_j+1) x 4 gives the R, G, B sums of two taps. */
static void horizontal_row_sse2(const uint8_t *in, int src_w, const resample_axis *ax, const __m128i *cpairs,
                                int npairs_max, __m128i *expanded, uint8_t *out, int out_w) {
    const __m128i zero = _mm_setzero_si128();
    int x = 0;
    /* 8 bytes r0 g0 b0 r1 g1 b1 r2 g2 widened, interleaved with themselves shifted by one pixel:
     * r0 r1 g0 g1 b0 b1 r1 r2; the last pair is never weighted (its sum lands in lane 3). */
    for (; x + 3 <= src_w; x++) {
        __m128i v = _mm_unpacklo_epi8(_mm_loadl_epi64((const __m128i *)(in + (size_t)x * 3)), zero);
        expanded[x] = _mm_unpacklo_epi16(v, _mm_srli_si128(v, 6));
    }
    for (; x < src_w; x++) {
        const uint8_t *p = in + (size_t)x * 3;
        int nx = x + 1 < src_w;
        expanded[x] = _mm_setr_epi16(p[0], nx ? p[3] : 0, p[1], nx ? p[4] : 0, p[2], nx ? p[5] : 0, 0, 0);
    }
    for (int xx = 0; xx < out_w; xx++) {
        int xmin = ax->bounds[2 * xx], npairs = (ax->bounds[2 * xx + 1] + 1) / 2;
        const __m128i *c = cpairs + (size_t)xx * npairs_max * 2;
        __m128i hi = _mm_setzero_si128(), lo = _mm_setzero_si128();
        for (int p = 0; p < npairs; p++) {
            __m128i v = expanded[xmin + 2 * p];
            hi = _mm_add_epi32(hi, _mm_madd_epi16(v, c[2 * p]));
            lo = _mm_add_epi32(lo, _mm_madd_epi16(v, c[2 * p + 1]));
        }
        __m128i t = finish_sums(hi, lo);
        t = _mm_packus_epi16(_mm_packs_epi32(t, t), t);
        uint32_t rgbx = (uint32_t)_mm_cvtsi128_si32(t);
        out[3 * xx] = (uint8_t)rgbx;
        out[3 * xx + 1] = (uint8_t)(rgbx >> 8);
        out[3 * xx + 2] = (uint8_t)(rgbx >> 16);
    }
}

/* The split coefficient pairs of every output pixel: [out_w][npairs_max][hi, lo]. NULL when the
 * filter is too wide for the SIMD path or memory is short (the scalar path is then used). */
static __m128i *horizontal_pairs(const resample_axis *ax, int out_w, int *npairs_max) {
    if (ax->ksize > SIMD_MAX_TAPS) return NULL;
    int np = (ax->ksize + 1) / 2;
    size_t n;
    if (!vlr_mul_ok((size_t)out_w, (size_t)np * 2 * sizeof(__m128i), &n)) return NULL;
    __m128i *c = aligned_alloc(16, n);
    if (!c) return NULL;
    for (int xx = 0; xx < out_w; xx++) {
        const int32_t *k = ax->coeffs + (size_t)xx * ax->ksize;
        for (int p = 0; p < np; p++) {
            int16_t ha, la, hb = 0, lb = 0;
            split_coeff(k[2 * p], &ha, &la);
            if (2 * p + 1 < ax->ksize) split_coeff(k[2 * p + 1], &hb, &lb);
            c[((size_t)xx * np + p) * 2] = pair16(ha, hb);
            c[((size_t)xx * np + p) * 2 + 1] = pair16(la, lb);
        }
    }
    *npairs_max = np;
    return c;
}
#endif

/* Horizontal pass over rows [y0, y0 + n_rows) of src into dst (n_rows x out_w). use_simd = 0
 * forces the scalar reference (tests). */
static void resample_horizontal(const uint8_t *src, int src_w, int y0, int n_rows, const resample_axis *ax,
                                uint8_t *dst, int out_w, bool use_simd, int n_threads) {
    (void)use_simd;
    (void)n_threads; /* only the pragma reads it (unused without OpenMP) */
#if defined(__SSE2__)
    int npairs_max = 0;
    __m128i *pairs = use_simd ? horizontal_pairs(ax, out_w, &npairs_max) : NULL;
#endif
#pragma omp parallel num_threads(n_threads) if ((int64_t)n_rows * out_w * ax->ksize > 200000)
    {
#if defined(__SSE2__)
        __m128i *expanded = pairs ? aligned_alloc(16, sizeof(__m128i) * (size_t)src_w) : NULL;
#endif
#pragma omp for schedule(static)
        for (int yy = 0; yy < n_rows; yy++) {
            const uint8_t *in = src + (size_t)(y0 + yy) * src_w * 3;
            uint8_t *out = dst + (size_t)yy * out_w * 3;
#if defined(__SSE2__)
            if (expanded) {
                horizontal_row_sse2(in, src_w, ax, pairs, npairs_max, expanded, out, out_w);
                continue;
            }
#endif
            horizontal_row_ref(in, ax, out, out_w);
        }
#if defined(__SSE2__)
        free(expanded);
#endif
    }
#if defined(__SSE2__)
    free(pairs);
#endif
}

/* Vertical pass: src rows are indexed by the axis bounds minus row_shift (the ybox trim). */
static void resample_vertical(const uint8_t *src, int w, int row_shift, const resample_axis *ax, uint8_t *dst,
                              int out_h, bool use_simd, int n_threads) {
    const size_t row_len = (size_t)w * 3;
    (void)use_simd;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) schedule(static) if ((int64_t)out_h * w * ax->ksize > 200000)
    for (int yy = 0; yy < out_h; yy++) {
        int ymin = ax->bounds[2 * yy] - row_shift, count = ax->bounds[2 * yy + 1];
        const int32_t *k = ax->coeffs + (size_t)yy * ax->ksize;
        uint8_t *out = dst + (size_t)yy * row_len;
#if defined(__SSE2__)
        if (use_simd && count <= SIMD_MAX_TAPS) {
            vertical_row_sse2(src, row_len, ymin, count, k, out);
            continue;
        }
#endif
        vertical_row_ref(src, row_len, ymin, count, k, out);
    }
}

static vlr_status resize_bicubic(const vlr_image *src, int out_w, int out_h, vlr_image *dst, bool use_simd,
                                 int n_threads, vlr_err *e);

vlr_status vlr_image_resize_bicubic_ref(const vlr_image *src, int out_w, int out_h, vlr_image *dst, vlr_err *e) {
    return resize_bicubic(src, out_w, out_h, dst, false, 0, e);
}

vlr_status vlr_image_resize_bicubic(const vlr_image *src, int out_w, int out_h, vlr_image *dst, vlr_err *e) {
    return resize_bicubic(src, out_w, out_h, dst, true, 0, e);
}

static vlr_status resize_bicubic(const vlr_image *src, int out_w, int out_h, vlr_image *dst, bool use_simd,
                                 int n_threads, vlr_err *e) {
    n_threads = team_size(n_threads);
    memset(dst, 0, sizeof *dst);
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return vlr_fail(e, VLR_ERR_INPUT, "resize: empty source image");
    if (out_w <= 0 || out_h <= 0)
        return vlr_fail(e, VLR_ERR_INPUT, "resize: target size %dx%d must be positive", out_w, out_h);
    size_t out_bytes;
    if (!vlr_mul_ok((size_t)out_w, (size_t)out_h, &out_bytes) || !vlr_mul_ok(out_bytes, 3, &out_bytes))
        return vlr_fail(e, VLR_ERR_LIMIT, "resize: target size %dx%d is too large", out_w, out_h);
    resample_axis ax_h = {0}, ax_v = {0};
    uint8_t *tmp = NULL;
    vlr_status rc = VLR_OK;
    dst->rgb = vlr_malloc_huge(out_bytes, e);
    if (!dst->rgb) return VLR_ERR_NOMEM;
    dst->width = out_w;
    dst->height = out_h;

    /* Image.resize returns a copy when the size is unchanged. */
    bool need_h = out_w != src->width, need_v = out_h != src->height;
    if (!need_h && !need_v) {
        memcpy(dst->rgb, src->rgb, out_bytes);
        return VLR_OK;
    }
    if ((rc = resample_axis_init(src->width, out_w, &ax_h, e))) goto done;
    if ((rc = resample_axis_init(src->height, out_h, &ax_v, e))) goto done;

    /* ImagingResampleInner: the horizontal pass covers only the source rows the vertical pass
     * reads (ybox), then the vertical pass runs on that strip; a pass whose size is unchanged is
     * skipped. uint8 between passes. */
    int ybox_first = ax_v.bounds[0];
    int ybox_last = ax_v.bounds[2 * (out_h - 1)] + ax_v.bounds[2 * (out_h - 1) + 1];
    if (need_h) {
        int rows = need_v ? ybox_last - ybox_first : src->height;
        int y0 = need_v ? ybox_first : 0;
        uint8_t *target = dst->rgb;
        if (need_v) {
            size_t tmp_bytes;
            if (!vlr_mul_ok((size_t)rows, (size_t)out_w * 3, &tmp_bytes)) {
                rc = vlr_fail(e, VLR_ERR_LIMIT, "resize: intermediate image too large");
                goto done;
            }
            tmp = vlr_malloc_huge(tmp_bytes, e);
            if (!tmp) { rc = VLR_ERR_NOMEM; goto done; }
            target = tmp;
        }
        resample_horizontal(src->rgb, src->width, y0, rows, &ax_h, target, out_w, use_simd, n_threads);
        if (need_v) resample_vertical(tmp, out_w, ybox_first, &ax_v, dst->rgb, out_h, use_simd, n_threads);
    } else {
        resample_vertical(src->rgb, src->width, 0, &ax_v, dst->rgb, out_h, use_simd, n_threads);
    }
done:
    free(tmp);
    resample_axis_free(&ax_h);
    resample_axis_free(&ax_v);
    if (rc) vlr_image_free(dst);
    return rc;
}

/* ---- rescale, normalise, patchify ---------------------------------------------------------- */

void vlr_prepared_image_free(vlr_prepared_image *p) {
    if (!p) return;
    free(p->pixel_values);
    memset(p, 0, sizeof *p);
}

static vlr_status check_preproc(const vlr_preproc_config *pp, vlr_err *e) {
    if (!pp) return vlr_fail(e, VLR_ERR_CONFIG, "no preprocessor config");
    if (pp->patch_size <= 0 || pp->merge_size <= 0 || pp->temporal_patch_size <= 0 || pp->patch_size > 1024 ||
        pp->merge_size > 64 || pp->temporal_patch_size > 64)
        return vlr_fail(e, VLR_ERR_CONFIG, "preprocessor: patch_size %d, merge_size %d, temporal_patch_size %d out of range",
                        pp->patch_size, pp->merge_size, pp->temporal_patch_size);
    for (int c = 0; c < 3; c++)
        if (!(pp->std[c] != 0.0f) || !isfinite(pp->std[c]) || !isfinite(pp->mean[c]))
            return vlr_fail(e, VLR_ERR_CONFIG, "preprocessor: image_std / image_mean invalid");
    return VLR_OK;
}

static vlr_status patchify(const vlr_image *rgb, const vlr_preproc_config *pp, int n_threads,
                           vlr_prepared_image *out, vlr_err *e) {
    n_threads = team_size(n_threads);
    memset(out, 0, sizeof *out);
    vlr_status rc = check_preproc(pp, e);
    if (rc) return rc;
    const int P = pp->patch_size, M = pp->merge_size, T = pp->temporal_patch_size;
    const int H = rgb->height, W = rgb->width;
    if (!rgb->rgb || H <= 0 || W <= 0 || H % (P * M) || W % (P * M))
        return vlr_fail(e, VLR_ERR_INPUT, "patchify: %dx%d is not a multiple of %d", W, H, P * M);
    const int gh = H / P, gw = W / P;
    size_t n_patches = (size_t)gh * (size_t)gw, patch_dim = (size_t)3 * T * P * P, count;
    if (!vlr_mul_ok(n_patches, patch_dim, &count) || count > SIZE_MAX / sizeof(float))
        return vlr_fail(e, VLR_ERR_LIMIT, "patchify: %dx%d image is too large", W, H);
    float *pv = vlr_malloc_huge(count * sizeof(float), e);
    if (!pv) return VLR_ERR_NOMEM;

    /* rescale: float32(float64(x) * rescale_factor); normalize: (x - mean) / std in float32
     * (transformers image_transforms.rescale / normalize). One table per channel. */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * pp->rescale_factor);
            float centred = x - pp->mean[c];
            lut[c][v] = centred / pp->std[c];
        }

    /* Qwen2VLImageProcessor._preprocess: the frame is repeated to temporal_patch_size, then
     * reshape (t, T, C, gh/M, M, P, gw/M, M, P) and transpose to (t, gh/M, gw/M, M, M, C, T, P, P):
     * patch (r, c) goes to row ((r/M)*(gw/M) + c/M)*M*M + (r%M)*M + c%M, its floats ordered
     * channel, frame, y, x. */
    const int gwm = gw / M;
    const size_t plane = (size_t)P * P;
#pragma omp parallel for num_threads(n_threads) schedule(static) if (n_patches > 64)
    for (int r = 0; r < gh; r++) {
        for (int c = 0; c < gw; c++) {
            size_t row = ((size_t)(r / M) * gwm + (size_t)(c / M)) * M * M + (size_t)(r % M) * M + (size_t)(c % M);
            float *dst = pv + row * patch_dim;
            for (int ch = 0; ch < 3; ch++) {
                float *frame0 = dst + (size_t)ch * T * plane;
                for (int py = 0; py < P; py++) {
                    const uint8_t *src = rgb->rgb + ((size_t)(r * P + py) * W + (size_t)c * P) * 3 + ch;
                    float *o = frame0 + (size_t)py * P;
                    for (int px = 0; px < P; px++) o[px] = lut[ch][src[3 * px]];
                }
                for (int t = 1; t < T; t++) memcpy(frame0 + t * plane, frame0, plane * sizeof(float));
            }
        }
    }
    out->pixel_values = pv;
    out->n_patches = n_patches;
    out->patch_dim = patch_dim;
    out->grid_t = 1;
    out->grid_h = gh;
    out->grid_w = gw;
    out->resized_h = H;
    out->resized_w = W;
    out->file.width = W;
    out->file.height = H;
    return VLR_OK;
}

vlr_status vlr_image_patchify(const vlr_image *rgb, const vlr_preproc_config *pp, vlr_prepared_image *out,
                              vlr_err *e) {
    return patchify(rgb, pp, 0, out, e);
}

/* ---- the chain ----------------------------------------------------------------------------- */

vlr_status vlr_image_plan_size(int64_t height, int64_t width, const vlr_image_opts *opts,
                               const vlr_preproc_config *pp, uint64_t max_pixels, vlr_image_plan *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    vlr_status rc = check_preproc(pp, e);
    if (rc) return rc;
    const uint64_t cap = max_pixels ? max_pixels : VLR_IMAGE_DEFAULT_MAX_PIXELS;
    if (height <= 0 || width <= 0) return vlr_fail(e, VLR_ERR_FORMAT, "image has zero width or height");
    if ((uint64_t)height > cap || (uint64_t)width > cap || (uint64_t)height * (uint64_t)width > cap)
        return vlr_fail(e, VLR_ERR_LIMIT, "image is %lldx%lld = %llu pixels, more than the limit of %llu",
                        (long long)width, (long long)height,
                        (unsigned long long)((uint64_t)height > cap || (uint64_t)width > cap ? UINT64_MAX
                                                                                          : (uint64_t)height * (uint64_t)width),
                        (unsigned long long)cap);
    const int factor = pp->patch_size * pp->merge_size;
    vlr_image_opts o = {0};
    if (opts) o = *opts;
    if (o.min_pixels < 0 || o.max_pixels < 0 || o.resized_height < 0 || o.resized_width < 0)
        return vlr_fail(e, VLR_ERR_INPUT, "min_pixels, max_pixels, resized_height and resized_width must be positive");

    /* qwen_vl_utils.fetch_image: resized_height/width when both are given (with the default
     * min/max), else the image size with the item's min/max_pixels. */
    int64_t h1, w1, h2, w2;
    if (o.resized_height > 0 && o.resized_width > 0)
        rc = vlr_smart_resize(o.resized_height, o.resized_width, factor, VLR_QWEN_MIN_PIXELS, VLR_QWEN_MAX_PIXELS,
                              &h1, &w1, e);
    else
        rc = vlr_smart_resize(height, width, factor, o.min_pixels ? o.min_pixels : VLR_QWEN_MIN_PIXELS,
                              o.max_pixels ? o.max_pixels : VLR_QWEN_MAX_PIXELS, &h1, &w1, e);
    if (rc) return rc;
    if (h1 > INT32_MAX || w1 > INT32_MAX || (uint64_t)h1 * (uint64_t)w1 > cap)
        return vlr_fail(e, VLR_ERR_LIMIT, "resized image %lldx%lld has more than %llu pixels", (long long)w1,
                        (long long)h1, (unsigned long long)cap);
    /* The processor's own smart_resize; a no-op for the default limits. */
    if ((rc = vlr_smart_resize(h1, w1, factor, pp->min_pixels, pp->max_pixels, &h2, &w2, e))) return rc;
    if (h2 > INT32_MAX || w2 > INT32_MAX || (uint64_t)h2 * (uint64_t)w2 > cap)
        return vlr_fail(e, VLR_ERR_LIMIT, "processor size %lldx%lld has more than %llu pixels", (long long)w2,
                        (long long)h2, (unsigned long long)cap);
    out->fetch_h = h1;
    out->fetch_w = w1;
    out->resized_h = h2;
    out->resized_w = w2;
    out->n_patches = (uint64_t)(h2 / pp->patch_size) * (uint64_t)(w2 / pp->patch_size);
    out->n_tokens = out->n_patches / ((uint64_t)pp->merge_size * (uint64_t)pp->merge_size);
    out->pixels = (uint64_t)height * (uint64_t)width + (uint64_t)h1 * (uint64_t)w1 +
                  (h2 != h1 || w2 != w1 ? (uint64_t)h2 * (uint64_t)w2 : 0);
    return VLR_OK;
}

vlr_status vlr_image_check_tokens(const vlr_image_plan *plan, uint64_t max_tokens, vlr_err *e) {
    if (!max_tokens || plan->n_tokens <= max_tokens) return VLR_OK;
    return vlr_fail(e, VLR_ERR_LIMIT,
                    "the image takes %llu tokens (resized to %lldx%lld), more than the %llu left of the token limit "
                    "(--max-tokens / max_position_embeddings)",
                    (unsigned long long)plan->n_tokens, (long long)plan->resized_w, (long long)plan->resized_h,
                    (unsigned long long)max_tokens);
}

static vlr_status prepare_rgb_capped(const vlr_image *rgb, const vlr_image_opts *opts, const vlr_preproc_config *pp,
                                     const vlr_image_limits *lim, vlr_prepared_image *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    vlr_image first = {0}, second = {0};
    if (!rgb || !rgb->rgb || rgb->width <= 0 || rgb->height <= 0)
        return vlr_fail(e, VLR_ERR_INPUT, "empty image");
    int n_threads = lim ? lim->n_threads : 0;
    vlr_image_plan plan;
    vlr_status rc = vlr_image_plan_size(rgb->height, rgb->width, opts, pp, lim ? lim->max_pixels : 0, &plan, e);
    if (rc || (rc = vlr_image_check_tokens(&plan, lim ? lim->max_tokens : 0, e))) return rc;
    if ((rc = resize_bicubic(rgb, (int)plan.fetch_w, (int)plan.fetch_h, &first, true, n_threads, e))) goto done;
    const vlr_image *final = &first;
    if (plan.resized_h != plan.fetch_h || plan.resized_w != plan.fetch_w) {
        if ((rc = resize_bicubic(&first, (int)plan.resized_w, (int)plan.resized_h, &second, true, n_threads, e)))
            goto done;
        final = &second;
    }
    if ((rc = patchify(final, pp, n_threads, out, e))) goto done;
    out->file.width = rgb->width;
    out->file.height = rgb->height;
done:
    vlr_image_free(&first);
    vlr_image_free(&second);
    return rc;
}

vlr_status vlr_image_prepare_rgb(const vlr_image *rgb, const vlr_image_opts *opts, const vlr_preproc_config *pp,
                                 vlr_prepared_image *out, vlr_err *e) {
    return prepare_rgb_capped(rgb, opts, pp, NULL, out, e);
}

/* A short form of the source for messages: data: URIs are cut after their media type. */
static void source_label(const char *source, char *buf, size_t cap) {
    size_t n = strlen(source);
    if (strncmp(source, "data:", 5) == 0) {
        const char *comma = strchr(source, ',');
        size_t head = comma ? (size_t)(comma - source) : (n < 40 ? n : 40);
        snprintf(buf, cap, "%.*s,... (%zu characters)", (int)(head < 80 ? head : 80), source, n);
    } else if (n > 200) {
        snprintf(buf, cap, "%.160s...%s", source, source + n - 30);
    } else {
        snprintf(buf, cap, "%s", source);
    }
}

vlr_status vlr_image_prepare(const char *source, const char *base_dir, const vlr_image_opts *opts,
                             const vlr_preproc_config *pp, const vlr_image_limits *lim,
                             vlr_prepared_image *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    if (!source) return vlr_fail(e, VLR_ERR_INPUT, "image item without a source");
    uint8_t *bytes = NULL;
    size_t n = 0;
    vlr_image img = {0};
    vlr_image_file_info info;
    char label[256];
    source_label(source, label, sizeof label);
    bool need_more;
    vlr_image_plan plan;
    vlr_status rc = vlr_image_read_source(source, base_dir, lim, &bytes, &n, e);
    if (rc) goto done;
    /* The limits from the header first: a few hundred bytes may declare gigapixels. */
    if ((rc = vlr_image_probe(bytes, n, label, &info, &need_more, e))) goto done;
    if ((rc = vlr_image_plan_size(info.height, info.width, opts, pp, lim ? lim->max_pixels : 0, &plan, e)) ||
        (rc = vlr_image_check_tokens(&plan, lim ? lim->max_tokens : 0, e))) {
        vlr_err_prefix(e, "%s: ", label);
        goto done;
    }
    if ((rc = vlr_image_decode(bytes, n, label, lim, &img, &info, e))) goto done;
    free(bytes);
    bytes = NULL;
    if ((rc = prepare_rgb_capped(&img, opts, pp, lim, out, e))) {
        vlr_err_prefix(e, "%s: ", label);
        goto done;
    }
    out->file = info;
done:
    free(bytes);
    vlr_image_free(&img);
    return rc;
}
