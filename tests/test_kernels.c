/* test_kernels.c: every kernel slot of every ISA this CPU supports, against the scalar reference
 * and against float64 sums computed here.
 *
 * Bounds are derived, not tuned: a length-k fp32 sum in any order has error at most
 * gamma_k · sum|terms| (gamma_k = k·u/(1 - k·u), u = 2^-24; Higham, Accuracy and Stability of
 * Numerical Algorithms, 3.1), so two implementations differ by at most twice that, element by
 * element. The normalised mean squared error (ggml test-backend-ops style) is held to k·u² per
 * element, the rounding-error variance of a random-walk sum with a margin of ~6; a missing or
 * doubled term, a wrong column or a stale block is orders of magnitude above it. Each output buffer
 * is followed by sentinel floats that must come back untouched, and results must be bit-identical
 * for 1 and 2 threads and for a row computed alone or inside its batch. The kernels run on an
 * execution context whose workspace is shared by every case (grown and reused, as in a session);
 * test_workspace checks that the scratch's origin (none, reused, unobtainable) changes no bits. */
#include <stdint.h>

#include "kernels/exec.h"
#include "test.h"

static vlr_workspace *test_ws; /* shared by every kernel call, as a session's is */

/* The context of one kernel call: table, thread count, the shared workspace. */
static vlr_exec ctx(const vlr_kernels *k, int n_threads) {
    return (vlr_exec){.k = k, .n_threads = n_threads, .ws = test_ws};
}

static const double U = 5.9604644775390625e-08; /* 2^-24 */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rng_u64(void) { /* splitmix64 */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rng_uniform(void) { return (float)((double)(rng_u64() >> 11) * 0x1p-53 * 2.0 - 1.0); }
static void fill_uniform(float *p, size_t n, float scale) {
    for (size_t i = 0; i < n; i++) p[i] = scale * rng_uniform();
}

static double gamma_k(double k) { return k * U / (1.0 - k * U); }

/* Random weights in dtype dt: raw storage plus the exact fp32 values. f16 values are built from
 * bits (exponents 2^-6 .. 2^1, with a few zeros and subnormals) so every one is representable. */
static void *make_weights(vlr_dtype dt, size_t count, float *values) {
    void *raw = malloc(count * (dt == VLR_DT_F32 ? 4 : 2) + 1);
    for (size_t i = 0; i < count; i++) {
        if (dt == VLR_DT_F32) {
            ((float *)raw)[i] = values[i] = rng_uniform();
        } else if (dt == VLR_DT_BF16) {
            uint16_t h = vlr_f32_to_bf16(rng_uniform());
            ((uint16_t *)raw)[i] = h;
            values[i] = vlr_bf16_to_f32(h);
        } else {
            uint64_t r = rng_u64();
            uint16_t sign = (uint16_t)((r & 1) << 15), mant = (uint16_t)((r >> 1) & 0x3ff);
            uint16_t exp = (uint16_t)(9 + (r >> 11) % 8);
            if ((r >> 20) % 64 == 0) exp = 0; /* zero or subnormal */
            uint16_t h = (uint16_t)(sign | (exp << 10) | mant);
            ((uint16_t *)raw)[i] = h;
            values[i] = vlr_f16_to_f32(h);
        }
    }
    return raw;
}

#define SENTINEL_FLOATS 64
static const uint32_t SENTINEL_BITS = 0x7fc0dead; /* a NaN no kernel produces */

static void sentinel_fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) memcpy(&p[i], &SENTINEL_BITS, 4);
}
static bool sentinel_intact(const float *p, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (memcmp(&p[i], &SENTINEL_BITS, 4) != 0) return false;
    return true;
}

/* The kernel tables under test, per precision: the reference plus every ISA this CPU runs.
 * impls / n_impls are the f32 tables (every slot); in bf16 only the gemm slot differs. */
typedef struct impl {
    vlr_kernels k;
    char name[32];
} impl;
static impl impls[4], impls_bf16[4];
static int n_impls, n_impls_bf16;

static int impls_fill(impl *set, vlr_precision precision) {
    const vlr_isa isas[4] = {VLR_ISA_REF, VLR_ISA_AVX2, VLR_ISA_AVX512, VLR_ISA_AVX512_BF16};
    int n = 0;
    for (int i = 0; i < 4; i++) {
        vlr_kernels k;
        if (isas[i] == VLR_ISA_AVX512_BF16 && precision == VLR_PRECISION_F32) continue; /* no such table */
        if (vlr_kernels_select(&k, isas[i], precision) != isas[i]) { /* not on this CPU */
            SKIP(1, "the %s kernels in %s precision: this CPU cannot run them", isas[i] == VLR_ISA_AVX2 ? "avx2"
                 : isas[i] == VLR_ISA_AVX512 ? "avx512" : "avx512_bf16", vlr_precision_name(precision));
            continue;
        }
        set[n].k = k;
        snprintf(set[n].name, sizeof set[n].name, "%s/%s", k.isa, vlr_precision_name(precision));
        n++;
    }
    return n;
}

static void impls_init(void) {
    n_impls = impls_fill(impls, VLR_PRECISION_F32);
    n_impls_bf16 = impls_fill(impls_bf16, VLR_PRECISION_BF16);
}

/* ---------------------------------------------------------------------------------------------
 * GEMM */

typedef struct gemm_case {
    int m, n, k;
    vlr_dtype w_dt;
    bool bias, accumulate;
    int pad_x, pad_y; /* row stride = k + pad_x, n + pad_y */
} gemm_case;

static const char *dt_name(vlr_dtype dt) {
    return dt == VLR_DT_BF16 ? "bf16" : dt == VLR_DT_F16 ? "f16" : "f32";
}

/* Runs one implementation into a fresh y (initialised from y0, sentinels after it and in the row
 * padding) and checks the sentinels. Returns the malloc'd y. */
static float *gemm_run(const impl *im, const gemm_case *c, const float *x, const void *w,
                       const void *bias, const float *y0, int n_threads, const char *what) {
    const size_t ldy = (size_t)c->n + c->pad_y, ny = (size_t)c->m * ldy;
    float *y = malloc((ny + SENTINEL_FLOATS) * sizeof(float));
    sentinel_fill(y, ny + SENTINEL_FLOATS);
    for (int i = 0; i < c->m; i++) memcpy(y + i * ldy, y0 + (size_t)i * c->n, (size_t)c->n * 4);
    vlr_gemm_args a = {.y = y, .ldy = ldy, .x = x, .ldx = (size_t)c->k + c->pad_x, .w = w,
                       .w_dtype = c->w_dt, .bias = bias, .bias_dtype = VLR_DT_F32, .m = c->m,
                       .n = c->n, .k = c->k, .accumulate = c->accumulate};
    const vlr_exec ex = ctx(&im->k, n_threads);
    im->k.gemm(&a, &ex);
    bool ok = sentinel_intact(y + ny, SENTINEL_FLOATS);
    for (int i = 0; i < c->m && ok; i++) ok = sentinel_intact(y + i * ldy + c->n, (size_t)c->pad_y);
    CHECK(ok, "%s gemm %s m=%d n=%d k=%d: wrote outside its output", im->name, what, c->m, c->n, c->k);
    return y;
}

/* One case against float64 and against the reference of the same precision. In bf16 precision
 * the float64 sums take the operands as rounded by vlr_round_bf16 (what every bf16 kernel must
 * multiply: the products of two bf16 values are exact in fp32), so the same gamma_k bounds hold. */
static void gemm_check_set(const gemm_case *c, const impl *set, int n_set, bool bf16) {
    const size_t ldx = (size_t)c->k + c->pad_x, ldy = (size_t)c->n + c->pad_y;
    /* x is allocated to end exactly at its last element so ASan sees any read past it. */
    const size_t nx = c->m > 0 ? (size_t)(c->m - 1) * ldx + (size_t)c->k : 0;
    float *x = malloc(nx * sizeof(float) + 1);
    fill_uniform(x, nx, 1.0f);
    float *wv = malloc((size_t)c->n * c->k * sizeof(float) + 1);
    void *w = make_weights(c->w_dt, (size_t)c->n * c->k, wv);
    float *bias = NULL;
    if (c->bias) {
        bias = malloc((size_t)c->n * sizeof(float));
        fill_uniform(bias, (size_t)c->n, 1.0f);
    }
    float *y0 = malloc((size_t)c->m * c->n * sizeof(float) + 1);
    fill_uniform(y0, (size_t)c->m * c->n, 4.0f); /* garbage unless accumulating */

    /* float64 sums and the error scale sum|terms| of every output */
    double *exact = malloc((size_t)c->m * c->n * sizeof(double) + 1);
    double *scale = malloc((size_t)c->m * c->n * sizeof(double) + 1);
    for (int i = 0; i < c->m; i++)
        for (int j = 0; j < c->n; j++) {
            double s = 0, sa = 0;
            for (int p = 0; p < c->k; p++) {
                const float xv = x[i * ldx + p], wvv = wv[(size_t)j * c->k + p];
                double t = bf16 ? (double)vlr_round_bf16(xv) * vlr_round_bf16(wvv) : (double)xv * wvv;
                s += t;
                sa += fabs(t);
            }
            if (bias) s += bias[j], sa += fabs(bias[j]);
            if (c->accumulate) s += y0[(size_t)i * c->n + j], sa += fabs(y0[(size_t)i * c->n + j]);
            exact[(size_t)i * c->n + j] = s;
            scale[(size_t)i * c->n + j] = sa;
        }

    char what[96];
    snprintf(what, sizeof what, "%s%s%s", dt_name(c->w_dt), c->bias ? "+bias" : "",
             c->accumulate ? "+acc" : "");
    const double g = gamma_k(c->k + 2.0), nmse_bound = (c->k + 2.0) * U * U;
    float *y_ref = NULL;
    for (int t = 0; t < n_set; t++) {
        const impl *im = &set[t];
        /* The reference is the oracle: run once. The fast kernels also on 2 threads and row by row. */
        const bool fast = t > 0;
        if (fast && im->k.gemm == set[t - 1].k.gemm) continue; /* slot not overridden by this ISA */
        float *y1 = gemm_run(im, c, x, w, bias, y0, 1, what);
        float *y2 = fast ? gemm_run(im, c, x, w, bias, y0, 2, what) : NULL;
        /* vs float64: each element within gamma_{k+2}·sum|terms|, NMSE within (k+2)·u² */
        double num = 0, den = 0, worst = 0;
        for (int i = 0; i < c->m; i++)
            for (int j = 0; j < c->n; j++) {
                const size_t e = (size_t)i * c->n + j;
                const double d = (double)y1[i * ldy + j] - exact[e];
                num += d * d;
                den += exact[e] * exact[e];
                const double r = fabs(d) / (g * scale[e] + 1e-300);
                if (!(r <= worst)) worst = r; /* NaN propagates as a failure */
            }
        CHECK(worst <= 1.0, "%s gemm %s m=%d n=%d k=%d: element error %.3g x the gamma_k bound",
              im->name, what, c->m, c->n, c->k, worst);
        const double nmse = den > 0 ? num / den : num;
        CHECK(nmse <= nmse_bound, "%s gemm %s m=%d n=%d k=%d: NMSE vs float64 %.3g > %.3g", im->name,
              what, c->m, c->n, c->k, nmse, nmse_bound);
        /* vs the reference implementation */
        if (y_ref) {
            double num2 = 0, den2 = 0, worst2 = 0;
            for (int i = 0; i < c->m; i++)
                for (int j = 0; j < c->n; j++) {
                    const double d = (double)y1[i * ldy + j] - y_ref[i * ldy + j];
                    num2 += d * d;
                    den2 += (double)y_ref[i * ldy + j] * y_ref[i * ldy + j];
                    const double r = fabs(d) / (2 * g * scale[(size_t)i * c->n + j] + 1e-300);
                    if (!(r <= worst2)) worst2 = r;
                }
            const double nmse2 = den2 > 0 ? num2 / den2 : num2;
            CHECK(worst2 <= 1.0 && nmse2 <= 2 * nmse_bound,
                  "%s gemm %s m=%d n=%d k=%d: vs ref: worst %.3g of bound, NMSE %.3g > %.3g",
                  im->name, what, c->m, c->n, c->k, worst2, nmse2, 2 * nmse_bound);
        }
        /* determinism: 1 vs 2 threads, and rows computed alone */
        CHECK(!fast || memcmp(y1, y2, ((size_t)c->m * ldy) * sizeof(float)) == 0,
              "%s gemm %s m=%d n=%d k=%d: 1 and 2 threads differ", im->name, what, c->m, c->n, c->k);
        const int rows[3] = {0, c->m / 2, c->m - 1};
        for (int r = 0; r < 3 && c->m > 1 && fast; r++) {
            gemm_case one = *c;
            one.m = 1;
            float *yr = gemm_run(im, &one, x + (size_t)rows[r] * ldx, w, bias,
                                 y0 + (size_t)rows[r] * c->n, 1, what);
            CHECK(memcmp(yr, y1 + (size_t)rows[r] * ldy, (size_t)c->n * sizeof(float)) == 0,
                  "%s gemm %s m=%d n=%d k=%d: row %d alone differs from the batch", im->name, what,
                  c->m, c->n, c->k, rows[r]);
            free(yr);
        }
        free(y2);
        if (t == 0) y_ref = y1;
        else free(y1);
    }
    free(y_ref);
    free(x);
    free(wv);
    free(w);
    free(bias);
    free(y0);
    free(exact);
    free(scale);
}

static void gemm_check(const gemm_case *c) {
    gemm_check_set(c, impls, n_impls, false);
    gemm_check_set(c, impls_bf16, n_impls_bf16, true);
}

/* The bf16 rounding itself, bit for bit in every implementation: y = x · 1 with k = 1 is exactly
 * the rounded x (and, with the special values as f32 weights, the rounded w). Ties to even, carries
 * into the exponent, overflow to infinity, subnormals to signed zero, NaN stays NaN. */
static void test_bf16_rounding(void) {
    const uint32_t bits[] = {0x3f808000u, 0x3f818000u, 0x3f807fffu, 0x3f808001u, 0xbf808000u, 0x3fffffffu,
                             0x7f7fffffu, 0x7f7f7fffu, 0x00400000u, 0x80000001u, 0x00800000u, 0x7fc00001u,
                             0x7f800000u, 0xff800000u, 0x00000000u, 0x80000000u, 0x3eaaaaabu, 0x42f6e979u};
    const int n = (int)(sizeof bits / sizeof *bits);
    float vals[sizeof bits / sizeof *bits], want[sizeof bits / sizeof *bits];
    for (int i = 0; i < n; i++) {
        memcpy(&vals[i], &bits[i], 4);
        want[i] = vlr_round_bf16(vals[i]);
        const bool subnormal = (bits[i] & 0x7f800000u) == 0, nan = isnan(vals[i]);
        uint32_t got_bits;
        memcpy(&got_bits, &want[i], 4);
        if (subnormal) CHECK(got_bits == (bits[i] & 0x80000000u), "round_bf16(%08x) = %08x: not a signed zero", bits[i], got_bits);
        else if (nan) CHECK(isnan(want[i]), "round_bf16(%08x) lost the NaN", bits[i]);
        else CHECK(got_bits == (uint32_t)vlr_f32_to_bf16(vals[i]) << 16, "round_bf16(%08x) = %08x: not nearest even", bits[i], got_bits);
    }
    const uint16_t one_bf16 = 0x3f80;
    const float one = 1.0f;
    for (int t = 0; t < n_impls_bf16; t++)
        for (int side = 0; side < 2; side++) { /* 0: the values are x, 1: they are f32 weights */
            float y[sizeof bits / sizeof *bits + SENTINEL_FLOATS];
            sentinel_fill(y, (size_t)n + SENTINEL_FLOATS);
            vlr_gemm_args a = {.y = y, .ldy = side ? (size_t)n : 1, .x = side ? &one : vals, .ldx = 1,
                               .w = side ? (const void *)vals : (const void *)&one_bf16,
                               .w_dtype = side ? VLR_DT_F32 : VLR_DT_BF16, .m = side ? 1 : n,
                               .n = side ? n : 1, .k = 1};
            const vlr_exec x = ctx(&impls_bf16[t].k, 1);
            impls_bf16[t].k.gemm(&a, &x);
            /* (a sum starts from +0, so -0 comes back as +0: zeros compare by value) */
            bool same = true;
            for (int i = 0; i < n; i++) {
                const bool ok = isnan(want[i]) ? isnan(y[i]) : want[i] == 0.0f ? y[i] == 0.0f : memcmp(&y[i], &want[i], 4) == 0;
                if (!ok) fprintf(stderr, "  %s: %08x -> %a, want %a\n", impls_bf16[t].name, bits[i], y[i], want[i]);
                same = same && ok;
            }
            CHECK(same, "%s: bf16 rounding of %s differs from vlr_round_bf16", impls_bf16[t].name,
                  side ? "f32 weights" : "activations");
            CHECK(sentinel_intact(y + n, SENTINEL_FLOATS), "%s: bf16 rounding: wrote past y", impls_bf16[t].name);
        }
}

static void test_gemm(void) {
    const vlr_dtype dts[3] = {VLR_DT_BF16, VLR_DT_F16, VLR_DT_F32};
    /* small and odd shapes, every dtype and epilogue */
    const int small[][3] = {{1, 1, 1},   {1, 1, 17},  {2, 3, 5},    {3, 33, 16},  {14, 32, 256},
                            {15, 31, 257}, {29, 65, 300}, {7, 100, 513}, {64, 64, 64}, {5, 47, 0},
                            {1, 200, 31}, {40, 17, 600}};
    for (size_t s = 0; s < sizeof small / sizeof small[0]; s++)
        for (int d = 0; d < 3; d++)
            for (int e2 = 0; e2 < 2; e2++) { /* two of the four epilogues, all four over the dtypes */
                const int e = (int)(s + d + 2 * e2) % 4;
                gemm_case c = {small[s][0], small[s][1], small[s][2], dts[d], e & 1, (e >> 1) & 1,
                               (int)(s % 3), (int)(s % 2) * 3};
                gemm_check(&c);
            }
    /* the model's sizes, small m */
    const int real[][3] = {{3, 1280, 1176}, {2, 3840, 1280}, {2, 1280, 3420}, {2, 3420, 1280},
                           {1, 512, 3584},  {1, 3584, 512},  {1, 64, 18944}, {1, 5120, 64},
                           {17, 160, 5120}};
    for (size_t s = 0; s < sizeof real / sizeof real[0]; s++) {
        gemm_case c = {real[s][0], real[s][1], real[s][2], dts[s % 3], s % 2 == 0, s % 3 == 1, 0, 0};
        gemm_check(&c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * int8 GEMM (kernels.h: every step defined to the bit, so every implementation must return the
 * reference's bits; the reference itself is held to the quantization error bound against float64) */

static impl impls_i8[3];
static int n_impls_i8;

static void impls_i8_init(void) {
    const vlr_isa isas[3] = {VLR_ISA_REF, VLR_ISA_AVX2, VLR_ISA_AVX512};
    for (int i = 0; i < 3; i++) {
        vlr_kernels k;
        if (vlr_kernels_select(&k, isas[i], VLR_PRECISION_INT8) != isas[i]) continue; /* reported by impls_fill */
        if (n_impls_i8 > 0 && k.gemm_i8 == impls_i8[n_impls_i8 - 1].k.gemm_i8) continue; /* AVX-512 without VNNI */
        impls_i8[n_impls_i8].k = k;
        snprintf(impls_i8[n_impls_i8].name, sizeof impls_i8[n_impls_i8].name, "%s/int8", k.isa_i8);
        n_impls_i8++;
    }
    if (!vlr_cpu_has_avx512_vnni()) SKIP(1, "the avx512_vnni int8 kernel: this CPU lacks AVX512_VNNI");
}

/* rint clamped to ±127, computed in double here, against vlr_quantize_i8's float trick. */
static void test_quantize_i8(void) {
    int bad = 0;
    for (int t = -140 * 8; t <= 140 * 8; t++) { /* every eighth: the ties (x.5) included */
        const float v = (float)t / 8.0f;
        double r = nearbyint((double)v);
        r = r > 127 ? 127 : r < -127 ? -127 : r;
        if (vlr_quantize_i8(v, 1.0f) != (int32_t)r) bad++;
    }
    for (int t = 0; t < 100000; t++) {
        const float v = 300.0f * rng_uniform(), inv = 0.5f + rng_uniform() * 0.25f;
        double r = nearbyint((double)(v * inv));
        r = r > 127 ? 127 : r < -127 ? -127 : r;
        if (vlr_quantize_i8(v, inv) != (int32_t)r) bad++;
    }
    CHECK(bad == 0, "vlr_quantize_i8 differs from rint in %d cases", bad);
    CHECK(vlr_quantize_i8(NAN, 0.0f) == 0 && vlr_quantize_i8(INFINITY, 0.0f) == 0, "NaN did not quantize to 0");
    float inv;
    CHECK(vlr_i8_scale(0.0f, true, &inv) == 0.0f && inv == 0.0f, "zero row: scale not 0");
    CHECK(isnan(vlr_i8_scale(1.0f, false, &inv)), "non-finite row: scale not NaN");
    vlr_qweight q;
    vlr_err e = {0};
    CHECK(vlr_qweight_quantize(&q, &inv, VLR_DT_F32, 1, 0, 1, &e) == VLR_ERR_CONFIG &&
          vlr_qweight_quantize(&q, &inv, VLR_DT_F32, 1, VLR_I8_MAX_K + 1, 1, &e) == VLR_ERR_CONFIG,
          "int8 weights accepted k = 0 or k past VLR_I8_MAX_K");
}

typedef struct i8_case {
    int m, n, k;
    vlr_dtype w_dt;
    bool bias, accumulate, special; /* special: a zero, a NaN, an inf and a wide-range row of x, a zero weight row */
    int pad_x, pad_y;
} i8_case;

static float *i8_run(const impl *im, const i8_case *c, const float *x, const vlr_qweight *q, const float *bias,
                     const float *y0, int n_threads) {
    const size_t ldy = (size_t)c->n + c->pad_y, ny = (size_t)c->m * ldy;
    float *y = malloc((ny + SENTINEL_FLOATS) * sizeof(float));
    sentinel_fill(y, ny + SENTINEL_FLOATS);
    for (int i = 0; i < c->m; i++) memcpy(y + i * ldy, y0 + (size_t)i * c->n, (size_t)c->n * 4);
    vlr_gemm_args a = {.y = y, .ldy = ldy, .x = x, .ldx = (size_t)c->k + c->pad_x, .wq = q, .bias = bias,
                       .bias_dtype = VLR_DT_F32, .m = c->m, .n = c->n, .k = c->k, .accumulate = c->accumulate};
    const vlr_exec ex = ctx(&im->k, n_threads);
    im->k.gemm_i8(&a, 1, &ex);
    bool ok = sentinel_intact(y + ny, SENTINEL_FLOATS);
    for (int i = 0; i < c->m && ok; i++) ok = sentinel_intact(y + i * ldy + c->n, (size_t)c->pad_y);
    CHECK(ok, "%s gemm_i8 m=%d n=%d k=%d: wrote outside its output", im->name, c->m, c->n, c->k);
    return y;
}

static bool same_float(float a, float b) { return isnan(a) ? isnan(b) : memcmp(&a, &b, 4) == 0; }

static void i8_check(const i8_case *c) {
    const size_t ldx = (size_t)c->k + c->pad_x, ldy = (size_t)c->n + c->pad_y;
    const size_t nx = (size_t)(c->m - 1) * ldx + (size_t)c->k;
    float *x = malloc(nx * sizeof(float));
    fill_uniform(x, nx, 2.0f);
    bool *row_bad = calloc((size_t)c->m, 1);
    if (c->special) {
        for (int p = 0; p < c->k; p++) x[p] = 0.0f;                                    /* row 0: zeros */
        if (c->m > 1) x[1 * ldx + (size_t)(c->k / 2)] = NAN, row_bad[1] = true;         /* row 1: a NaN */
        if (c->m > 2) x[2 * ldx + (size_t)(c->k - 1)] = -INFINITY, row_bad[2] = true;   /* row 2: -inf */
        if (c->m > 3) x[3 * ldx] = 3e30f, x[3 * ldx + (size_t)(c->k - 1)] = 1e-30f;     /* row 3: wide */
    }
    float *wv = malloc((size_t)c->n * c->k * sizeof(float));
    void *w = make_weights(c->w_dt, (size_t)c->n * c->k, wv);
    if (c->special) memset(w, 0, (size_t)c->k * (c->w_dt == VLR_DT_F32 ? 4 : 2)), memset(wv, 0, (size_t)c->k * 4);
    float *bias = NULL;
    if (c->bias) {
        bias = malloc((size_t)c->n * sizeof(float));
        fill_uniform(bias, (size_t)c->n, 1.0f);
    }
    float *y0 = malloc((size_t)c->m * c->n * sizeof(float));
    fill_uniform(y0, (size_t)c->m * c->n, 4.0f);
    vlr_qweight q;
    vlr_err e = {0};
    if (vlr_qweight_quantize(&q, w, c->w_dt, c->n, c->k, 2, &e) != VLR_OK) {
        CHECK(false, "int8 weights [%d, %d]: %s", c->n, c->k, e.msg);
        goto out;
    }
    /* the packed weights, element by element, padding included */
    int layout_bad = 0;
    for (int j = 0; j < (c->n + 31) / 32 * 32; j++) {
        float amax = 0.0f, inv = 0.0f;
        for (int p = 0; p < c->k && j < c->n; p++) amax = fmaxf(amax, fabsf(wv[(size_t)j * c->k + p]));
        const float sw = j < c->n ? vlr_i8_scale(amax, true, &inv) : 0.0f;
        int32_t sum = 0;
        for (int p = 0; p < q.k4; p++) {
            const int32_t want = j < c->n && p < c->k ? vlr_quantize_i8(wv[(size_t)j * c->k + p], inv) : 0;
            sum += want;
            layout_bad += vlr_qweight_at(&q, j, p) != want;
        }
        layout_bad += !same_float(q.scale[j], sw) || q.offset_sum[j] != 128 * sum;
    }
    CHECK(layout_bad == 0, "int8 weights [%d, %d] %s: %d packed values, scales or sums wrong", c->n, c->k,
          dt_name(c->w_dt), layout_bad);

    char what[96];
    snprintf(what, sizeof what, "%s%s%s%s", dt_name(c->w_dt), c->bias ? "+bias" : "", c->accumulate ? "+acc" : "",
             c->special ? "+special" : "");
    /* the reference against float64, within the quantization error: with x = sx·xq + dx and
     * w = sw·wq + dw (|dx| <= sx/2, |dw| <= sw/2, up to the rounding of the scales), a term errs by at
     * most |x|·sw/2 + |w|·sx/2 + sx·sw/4; the epilogue adds a few fp32 roundings */
    float *y_ref = i8_run(&impls_i8[0], c, x, &q, bias, y0, 1);
    double worst = 0;
    for (int i = 0; i < c->m; i++) {
        float sx = 0.0f, inv;
        bool finite = true;
        for (int p = 0; p < c->k; p++) {
            const float v = x[i * ldx + p];
            if (!isfinite(v)) finite = false;
            else sx = fmaxf(sx, fabsf(v));
        }
        sx = vlr_i8_scale(sx, finite, &inv);
        for (int j = 0; j < c->n; j++) {
            const float got = y_ref[i * ldy + j];
            if (row_bad[i]) {
                worst = isnan(got) ? worst : INFINITY;
                continue;
            }
            double s = 0, bound = 0, mag = 0;
            for (int p = 0; p < c->k; p++) {
                const double xv = x[i * ldx + p], wvv = wv[(size_t)j * c->k + p];
                s += xv * wvv;
                mag += fabs(xv * wvv);
                bound += fabs(xv) * q.scale[j] / 2 + fabs(wvv) * sx / 2 + (double)sx * q.scale[j] / 4;
            }
            const double extra = (bias ? bias[j] : 0.0) + (c->accumulate ? y0[(size_t)i * c->n + j] : 0.0);
            s += extra;
            bound = bound * (1 + 1e-5) + 8 * U * (mag + bound + fabs(extra));
            const double r = fabs((double)got - s) / (bound + 1e-300);
            if (!(r <= worst)) worst = r;
        }
    }
    CHECK(worst <= 1.0, "ref gemm_i8 %s m=%d n=%d k=%d: error %.3g x the quantization bound", what, c->m, c->n,
          c->k, worst);
    /* every other implementation: the reference's bits, on 1 and 2 threads, and row by row */
    for (int t = 1; t < n_impls_i8; t++) {
        const impl *im = &impls_i8[t];
        for (int nt = 1; nt <= 2; nt++) {
            float *y = i8_run(im, c, x, &q, bias, y0, nt);
            int diff = 0;
            for (int i = 0; i < c->m; i++)
                for (int j = 0; j < c->n; j++) diff += !same_float(y[i * ldy + j], y_ref[i * ldy + j]);
            CHECK(diff == 0, "%s gemm_i8 %s m=%d n=%d k=%d, %d threads: %d outputs differ from ref", im->name, what,
                  c->m, c->n, c->k, nt, diff);
            free(y);
        }
        const int r = c->m - 1;
        i8_case one = *c;
        one.m = 1;
        float *yr = i8_run(im, &one, x + (size_t)r * ldx, &q, bias, y0 + (size_t)r * c->n, 1);
        int diff = 0;
        for (int j = 0; j < c->n; j++) diff += !same_float(yr[j], y_ref[(size_t)r * ldy + j]);
        CHECK(diff == 0, "%s gemm_i8 %s m=%d n=%d k=%d: row %d alone differs", im->name, what, c->m, c->n, c->k, r);
        free(yr);
    }
    free(y_ref);
    vlr_qweight_free(&q);
out:
    free(x);
    free(row_bad);
    free(wv);
    free(w);
    free(bias);
    free(y0);
}

/* Three products of one x in one call (q/k/v): each the bits of its own call, the k blocks included. */
static void test_gemm_i8_group(void) {
    const int m = 23, k = 4200, ns[3] = {96, 33, 64};
    float *x = malloc((size_t)m * k * sizeof(float));
    fill_uniform(x, (size_t)m * k, 1.5f);
    vlr_qweight q[3];
    float *y[3], *y_alone[3], *bias[3];
    vlr_err e = {0};
    for (int i = 0; i < 3; i++) {
        float *wv = malloc((size_t)ns[i] * k * sizeof(float));
        void *w = make_weights(VLR_DT_BF16, (size_t)ns[i] * k, wv);
        CHECK(vlr_qweight_quantize(&q[i], w, VLR_DT_BF16, ns[i], k, 2, &e) == VLR_OK, "weights: %s", e.msg);
        free(wv), free(w);
        bias[i] = malloc((size_t)ns[i] * sizeof(float));
        fill_uniform(bias[i], (size_t)ns[i], 1.0f);
        y[i] = calloc((size_t)m * ns[i] + SENTINEL_FLOATS, sizeof(float));
        y_alone[i] = calloc((size_t)m * ns[i], sizeof(float));
    }
    for (int t = 0; t < n_impls_i8; t++) {
        vlr_gemm_args a[3];
        for (int i = 0; i < 3; i++) {
            sentinel_fill(y[i] + (size_t)m * ns[i], SENTINEL_FLOATS);
            a[i] = (vlr_gemm_args){.y = y[i], .ldy = (size_t)ns[i], .x = x, .ldx = (size_t)k, .wq = &q[i],
                                   .bias = i == 1 ? NULL : bias[i], .bias_dtype = VLR_DT_F32, .m = m, .n = ns[i], .k = k};
        }
        const vlr_exec ex = ctx(&impls_i8[t].k, 2);
        impls_i8[t].k.gemm_i8(a, 3, &ex);
        for (int i = 0; i < 3; i++) {
            vlr_gemm_args one = a[i];
            one.y = y_alone[i];
            impls_i8[t].k.gemm_i8(&one, 1, &ex);
            CHECK(memcmp(y[i], y_alone[i], (size_t)m * ns[i] * sizeof(float)) == 0 &&
                  sentinel_intact(y[i] + (size_t)m * ns[i], SENTINEL_FLOATS),
                  "%s gemm_i8: product %d of a group differs from its own call", impls_i8[t].name, i);
        }
    }
    for (int i = 0; i < 3; i++) vlr_qweight_free(&q[i]), free(y[i]), free(y_alone[i]), free(bias[i]);
    free(x);
}

static void test_gemm_i8(void) {
    const vlr_dtype dts[3] = {VLR_DT_BF16, VLR_DT_F16, VLR_DT_F32};
    const int small[][3] = {{1, 1, 1},    {1, 1, 3},     {2, 3, 5},     {3, 33, 16},  {14, 32, 256},
                            {15, 31, 257}, {29, 65, 300}, {7, 100, 513}, {64, 64, 64}, {1, 200, 31},
                            {40, 17, 600}, {28, 96, 1030}, {5, 47, 2}};
    for (size_t s = 0; s < sizeof small / sizeof small[0]; s++)
        for (int d = 0; d < 3; d++) {
            const int e = (int)(s + d) % 4;
            i8_case c = {small[s][0], small[s][1], small[s][2], dts[d], e & 1, (e >> 1) & 1, (s + d) % 2 == 0,
                         (int)(s % 3), (int)(s % 2) * 3};
            i8_check(&c);
        }
    const int real[][3] = {{3, 1280, 1176}, {2, 512, 3584}, {1, 64, 18944}, {17, 160, 5120}, {30, 100, 3420}};
    for (size_t s = 0; s < sizeof real / sizeof real[0]; s++) {
        i8_case c = {real[s][0], real[s][1], real[s][2], dts[s % 3], s % 2 == 0, s % 3 == 1, s == 4, 0, 0};
        i8_check(&c);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Attention */

typedef struct att_case {
    int n_q, n_kv, n_heads, n_kv_heads, hd, causal_offset;
    bool fused; /* q, k, v interleaved in one qkv row (the vision tower's layout) */
} att_case;

/* Runs one implementation; out rows have 5 padding floats and SENTINEL_FLOATS after the end. */
static float *att_run(const impl *im, const vlr_attention_args *base, int n_threads, const char *what) {
    const size_t width = (size_t)base->n_heads * base->head_dim, ld_out = width + 5;
    const size_t nout = (size_t)base->n_q * ld_out;
    float *out = malloc((nout + SENTINEL_FLOATS) * sizeof(float));
    sentinel_fill(out, nout + SENTINEL_FLOATS);
    vlr_attention_args a = *base;
    a.out = out;
    a.ld_out = ld_out;
    const vlr_exec x = ctx(&im->k, n_threads);
    im->k.attention(&a, &x);
    bool ok = sentinel_intact(out + nout, SENTINEL_FLOATS);
    for (int i = 0; i < a.n_q && ok; i++) ok = sentinel_intact(out + i * ld_out + width, 5);
    CHECK(ok, "%s attention %s: wrote outside its output", im->name, what);
    return out;
}

static void att_check(const att_case *c) {
    const int hd = c->hd, group = c->n_heads / c->n_kv_heads;
    const size_t qw = (size_t)c->n_heads * hd, kw = (size_t)c->n_kv_heads * hd;
    /* separate buffers, or one [rows][q|k|v] buffer; rows = max(n_q, n_kv) */
    const int nrow = c->n_q > c->n_kv ? c->n_q : c->n_kv;
    const size_t ld_q = c->fused ? qw + 2 * kw : qw + 3, ld_kv = c->fused ? qw + 2 * kw : kw;
    float *qbuf = malloc((size_t)nrow * ld_q * sizeof(float));
    fill_uniform(qbuf, (size_t)nrow * ld_q, 1.0f);
    float *kbuf = c->fused ? NULL : malloc((size_t)c->n_kv * kw * sizeof(float) + 1);
    float *vbuf = c->fused ? NULL : malloc((size_t)c->n_kv * kw * sizeof(float) + 1);
    if (!c->fused) {
        fill_uniform(kbuf, (size_t)c->n_kv * kw, 1.0f);
        fill_uniform(vbuf, (size_t)c->n_kv * kw, 1.0f);
    }
    vlr_attention_args a = {.q = qbuf, .ld_q = ld_q, .k = c->fused ? qbuf + qw : kbuf,
                            .v = c->fused ? qbuf + qw + kw : vbuf, .ld_kv = ld_kv, .n_q = c->n_q,
                            .n_kv = c->n_kv, .n_heads = c->n_heads, .n_kv_heads = c->n_kv_heads,
                            .head_dim = hd, .causal_offset = c->causal_offset,
                            .scale = 1.0f / sqrtf((float)hd)};
    /* Scores are made large (q scaled by 3) so the softmax is far from uniform. */
    for (int i = 0; i < c->n_q; i++)
        for (size_t d = 0; d < qw; d++) qbuf[i * ld_q + d] *= 3.0f;

    /* float64 softmax attention, and per (query, head) the bound on the fp32 error:
     * weights p_j carry relative error eps_p <= 2·gamma_{hd+2}·max_j sum_d|q k|·scale (scores)
     * + 2u·max|s| (scale, max subtraction) + 8u (exp); out = sum p v / sum p then errs by at most
     * (2·eps_p + gamma_{n+2}) · max_j |v_j| per element. */
    double *exact = malloc((size_t)c->n_q * qw * sizeof(double));
    double *bound = malloc((size_t)c->n_q * c->n_heads * sizeof(double));
    double *p = malloc((size_t)(c->n_kv + 1) * sizeof(double));
    for (int i = 0; i < c->n_q; i++)
        for (int h = 0; h < c->n_heads; h++) {
            const int g = h / group;
            int nv = c->causal_offset < 0 ? c->n_kv : c->causal_offset + i + 1;
            if (nv > c->n_kv) nv = c->n_kv;
            const float *q = a.q + i * ld_q + (size_t)h * hd;
            double mx = -INFINITY, smax = 0, sabs = 0, vmax = 0, sum = 0;
            for (int j = 0; j < nv; j++) {
                const float *k = a.k + j * ld_kv + (size_t)g * hd;
                double s = 0, sa = 0;
                for (int d = 0; d < hd; d++) s += (double)q[d] * k[d], sa += fabs((double)q[d] * k[d]);
                p[j] = s * a.scale;
                if (p[j] > mx) mx = p[j];
                if (sa * a.scale > smax) smax = sa * a.scale;
                if (fabs(p[j]) > sabs) sabs = fabs(p[j]);
            }
            for (int j = 0; j < nv; j++) sum += (p[j] = exp(p[j] - mx));
            for (int d = 0; d < hd; d++) {
                double o = 0;
                for (int j = 0; j < nv; j++) {
                    const double v = a.v[j * ld_kv + (size_t)g * hd + d];
                    o += p[j] * v;
                    if (fabs(v) > vmax) vmax = fabs(v);
                }
                exact[i * qw + (size_t)h * hd + d] = o / sum;
            }
            const double eps_p = 2 * gamma_k(hd + 2.0) * smax + 2 * U * sabs + 8 * U;
            bound[i * c->n_heads + h] = (2 * eps_p + gamma_k(nv + 2.0)) * vmax;
        }

    char what[128];
    snprintf(what, sizeof what, "n_q=%d n_kv=%d heads=%d/%d hd=%d offset=%d%s", c->n_q, c->n_kv,
             c->n_heads, c->n_kv_heads, hd, c->causal_offset, c->fused ? " fused" : "");
    const size_t ld_out = qw + 5;
    for (int t = 0; t < n_impls; t++) {
        const impl *im = &impls[t];
        const bool fast = t > 0; /* the reference runs once, the others also on 2 threads, by row */
        if (fast && im->k.attention == impls[0].k.attention) continue;
        float *o1 = att_run(im, &a, 1, what), *o2 = fast ? att_run(im, &a, 2, what) : NULL;
        double worst = 0, num = 0, den = 0;
        for (int i = 0; i < c->n_q; i++)
            for (size_t e = 0; e < qw; e++) {
                const double d = o1[i * ld_out + e] - exact[i * qw + e];
                num += d * d;
                den += exact[i * qw + e] * exact[i * qw + e];
                const double r = fabs(d) / (bound[i * c->n_heads + e / hd] + 1e-300);
                if (!(r <= worst)) worst = r;
            }
        CHECK(worst <= 1.0, "%s attention %s: element error %.3g x its bound", im->name, what, worst);
        /* NMSE: the per-weight error variance, (hd + n_kv)·u² with the score scale squared */
        const double nmse = den > 0 ? num / den : num;
        CHECK(nmse <= (hd + c->n_kv + 16.0) * U * U * 16, "%s attention %s: NMSE %.3g", im->name,
              what, nmse);
        CHECK(!fast || memcmp(o1, o2, (size_t)c->n_q * ld_out * sizeof(float)) == 0,
              "%s attention %s: 1 and 2 threads differ", im->name, what);
        const int rows[2] = {0, c->n_q - 1};
        for (int r = 0; r < 2 && c->n_q > 1 && fast; r++) {
            vlr_attention_args one = a;
            one.n_q = 1;
            one.q = a.q + rows[r] * ld_q;
            if (c->causal_offset >= 0) one.causal_offset = c->causal_offset + rows[r];
            float *orow = att_run(im, &one, 1, what);
            CHECK(memcmp(orow, o1 + rows[r] * ld_out, qw * sizeof(float)) == 0,
                  "%s attention %s: query %d alone differs from the batch", im->name, what, rows[r]);
            free(orow);
        }
        free(o1);
        free(o2);
    }
    free(qbuf);
    free(kbuf);
    free(vbuf);
    free(exact);
    free(bound);
    free(p);
}

/* cu_seqlens: one call over many segments (the vision windows) gives the same bits as one call
 * per segment, for every implementation and thread count; the fast ones agree with the reference
 * to the NMSE bound of att_check. */
static void test_attention_varlen(void) {
    const int32_t cu[] = {0, 64, 65, 65, 102, 166, 171, 300}; /* lengths 64, 1, 0, 37, 64, 5, 129 */
    const int n_seqs = 7, n = cu[n_seqs], heads = 4, hd = 80;
    const size_t C = (size_t)heads * hd, ld = 3 * C;
    float *qkv = malloc((size_t)n * ld * sizeof(float));
    fill_uniform(qkv, (size_t)n * ld, 2.0f);
    const size_t nout = (size_t)n * C;
    float *ref_out = NULL;
    for (int t = 0; t < n_impls; t++) {
        const impl *im = &impls[t];
        if (t > 0 && im->k.attention == impls[0].k.attention) continue;
        float *whole[2], *parts = malloc(nout * sizeof(float));
        for (int th = 0; th < 2; th++) {
            whole[th] = malloc((nout + SENTINEL_FLOATS) * sizeof(float));
            sentinel_fill(whole[th], nout + SENTINEL_FLOATS);
            vlr_attention_args a = {.out = whole[th], .ld_out = C, .q = qkv, .ld_q = ld, .k = qkv + C,
                                    .v = qkv + 2 * C, .ld_kv = ld, .n_heads = heads,
                                    .n_kv_heads = heads, .head_dim = hd, .causal_offset = -1,
                                    .scale = 1.0f / sqrtf((float)hd), .cu_seqlens = cu,
                                    .n_seqs = n_seqs};
            const vlr_exec x = ctx(&im->k, th + 1);
            im->k.attention(&a, &x);
            CHECK(sentinel_intact(whole[th] + nout, SENTINEL_FLOATS), "%s varlen attention: wrote past the output", im->name);
        }
        for (int sgm = 0; sgm < n_seqs; sgm++) {
            const int len = cu[sgm + 1] - cu[sgm];
            if (len == 0) continue;
            vlr_attention_args a = {.out = parts + (size_t)cu[sgm] * C, .ld_out = C,
                                    .q = qkv + (size_t)cu[sgm] * ld, .ld_q = ld,
                                    .k = qkv + (size_t)cu[sgm] * ld + C, .v = qkv + (size_t)cu[sgm] * ld + 2 * C,
                                    .ld_kv = ld, .n_q = len, .n_kv = len, .n_heads = heads,
                                    .n_kv_heads = heads, .head_dim = hd, .causal_offset = -1,
                                    .scale = 1.0f / sqrtf((float)hd)};
            const vlr_exec x = ctx(&im->k, 1);
            im->k.attention(&a, &x);
        }
        CHECK(memcmp(whole[0], parts, nout * sizeof(float)) == 0,
              "%s varlen attention: differs from one call per segment", im->name);
        CHECK(memcmp(whole[0], whole[1], nout * sizeof(float)) == 0,
              "%s varlen attention: 1 and 2 threads differ", im->name);
        if (t == 0) {
            ref_out = whole[0];
        } else {
            double num = 0, den = 0;
            for (size_t e = 0; e < nout; e++) {
                const double d = (double)whole[0][e] - ref_out[e];
                num += d * d;
                den += (double)ref_out[e] * ref_out[e];
            }
            CHECK(num / den <= (hd + 129 + 16.0) * U * U * 16, "%s varlen attention: NMSE vs ref %.3g",
                  im->name, num / den);
            free(whole[0]);
        }
        free(whole[1]);
        free(parts);
    }
    free(ref_out);
    free(qkv);
}

static void test_attention(void) {
    const att_case cases[] = {
        {1, 1, 1, 1, 16, -1, false},     {1, 1, 1, 1, 16, 0, false},
        {5, 37, 4, 2, 16, -1, false},    {33, 33, 4, 2, 16, 0, false},
        {64, 64, 16, 16, 80, -1, true},  {100, 100, 2, 2, 80, -1, true}, /* vision windows */
        {5, 600, 7, 1, 128, -1, false},  {20, 120, 14, 2, 128, 100, false}, /* prefix + causal */
        {40, 40, 28, 4, 128, 0, false},  {200, 200, 2, 1, 80, 0, false},
        {9, 40, 6, 3, 24, 31, false},    {3, 600, 2, 2, 128, 597, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) att_check(&cases[i]);
}

/* ---------------------------------------------------------------------------------------------
 * Element-wise kernels: each against float64 with a few-ulp bound, and against the reference. */

/* |got - want| <= tol[i] for all i; reports the worst ratio. */
static void check_close(const char *what, const float *got, const double *want, const double *tol,
                        size_t n) {
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const double r = fabs(got[i] - want[i]) / (tol[i] + 1e-300);
        if (!(r <= worst)) worst = r, at = i;
    }
    CHECK(worst <= 1.0, "%s: element %zu is %.9g, want %.9g (%.3g x the bound)", what, at,
          n ? got[at] : 0.0, n ? want[at] : 0.0, worst);
}

static void test_elementwise(void) {
    const int sizes[] = {1, 7, 16, 17, 64, 100, 1280, 3584};
    const vlr_dtype dts[3] = {VLR_DT_BF16, VLR_DT_F16, VLR_DT_F32};
    char what[128];
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si], rows = 3;
        const size_t len = (size_t)rows * n;
        float *x = malloc(len * sizeof(float)), *wv = malloc((size_t)n * sizeof(float));
        float *u = malloc(len * sizeof(float)), *y = malloc((len + SENTINEL_FLOATS) * sizeof(float));
        double *want = malloc(len * sizeof(double)), *tol = malloc(len * sizeof(double));
        fill_uniform(x, len, 10.0f);
        fill_uniform(u, len, 1.0f);
        x[0] = 0.0f;
        if (len > 2) x[1] = -90.0f, x[2] = 40.0f; /* exp under/overflow ranges */
        void *w = make_weights(dts[si % 3], (size_t)n, wv);
        for (int t = 0; t < n_impls; t++) {
            const impl *im = &impls[t];
            /* rmsnorm: sum of squares (gamma_n), sqrt, divide, two products */
            sentinel_fill(y, len + SENTINEL_FLOATS);
            im->k.rmsnorm(y, x, rows, n, w, dts[si % 3], 1e-6f);
            for (int r = 0; r < rows; r++) {
                double ss = 0;
                for (int i = 0; i < n; i++) ss += (double)x[r * n + i] * x[r * n + i];
                const double sc = 1.0 / sqrt(ss / n + 1e-6);
                for (int i = 0; i < n; i++) {
                    want[r * n + i] = x[r * n + i] * sc * wv[i];
                    tol[r * n + i] = (gamma_k(n) + 8 * U) * fabs(want[r * n + i]);
                }
            }
            snprintf(what, sizeof what, "%s rmsnorm n=%d %s", im->name, n, dt_name(dts[si % 3]));
            check_close(what, y, want, tol, len);
            CHECK(sentinel_intact(y + len, SENTINEL_FLOATS), "%s: wrote past the output", what);
            /* in place (y == x) gives the same bits */
            float *yi = malloc(len * sizeof(float));
            memcpy(yi, x, len * sizeof(float));
            im->k.rmsnorm(yi, yi, rows, n, w, dts[si % 3], 1e-6f);
            CHECK(memcmp(yi, y, len * sizeof(float)) == 0, "%s: in place differs", what);
            free(yi);

            /* silu_mul: exp (<= 3u relative, u = 2^-24), add, divide, multiply */
            memcpy(y, x, len * sizeof(float));
            sentinel_fill(y + len, SENTINEL_FLOATS);
            im->k.silu_mul(y, u, len);
            for (size_t i = 0; i < len; i++) {
                want[i] = x[i] / (1.0 + exp(-(double)x[i])) * u[i];
                tol[i] = 8 * U * fabs(want[i]) + 1e-37;
            }
            snprintf(what, sizeof what, "%s silu_mul n=%zu", im->name, len);
            check_close(what, y, want, tol, len);
            CHECK(sentinel_intact(y + len, SENTINEL_FLOATS), "%s: wrote past the output", what);

            /* gelu: 1 + erf(x/sqrt2) is held to 4u absolute, times 0.5|x| */
            memcpy(y, x, len * sizeof(float));
            im->k.gelu(y, len);
            for (size_t i = 0; i < len; i++) {
                want[i] = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
                tol[i] = 2 * U * fabs(x[i]) + 4 * U * fabs(want[i]) + 1e-37;
            }
            snprintf(what, sizeof what, "%s gelu n=%zu", im->name, len);
            check_close(what, y, want, tol, len);
            CHECK(sentinel_intact(y + len, SENTINEL_FLOATS), "%s: wrote past the output", what);

            /* add: exact */
            memcpy(y, x, len * sizeof(float));
            im->k.add(y, u, len);
            bool exact_ok = true;
            for (size_t i = 0; i < len; i++) exact_ok &= y[i] == x[i] + u[i];
            CHECK(exact_ok, "%s add n=%zu: not the exact fp32 sum", im->name, len);
            CHECK(sentinel_intact(y + len, SENTINEL_FLOATS), "%s add: wrote past the output", im->name);
        }
        free(x), free(wv), free(u), free(y), free(want), free(tol), free(w);
    }

    /* rope: rows × heads × head_dim in a padded row, tables [rows][hd] */
    const int hds[3] = {16, 80, 128};
    for (int hi = 0; hi < 3; hi++) {
        const int hd = hds[hi], heads = 3, rows = 5;
        const size_t ld = (size_t)heads * hd + 7, len = (size_t)rows * ld;
        float *x = malloc((len + SENTINEL_FLOATS) * sizeof(float)), *x0 = malloc(len * sizeof(float));
        float *cs = malloc((size_t)rows * hd * sizeof(float)), *sn = malloc((size_t)rows * hd * sizeof(float));
        double *want = malloc(len * sizeof(double)), *tol = malloc(len * sizeof(double));
        fill_uniform(x0, len, 2.0f);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < hd; i++) {
                /* not duplicated across the halves as real tables are, so that an index mixup
                 * between the halves shows */
                const double ang = (r * 7 + 1) * pow(10000.0, -1.0 * i / hd);
                cs[r * hd + i] = (float)cos(ang);
                sn[r * hd + i] = (float)sin(ang);
            }
        for (int t = 0; t < n_impls; t++) {
            memcpy(x, x0, len * sizeof(float));
            sentinel_fill(x + len, SENTINEL_FLOATS);
            impls[t].k.rope(x, ld, rows, heads, hd, cs, sn);
            for (size_t e = 0; e < len; e++) want[e] = x0[e], tol[e] = 0;
            for (int r = 0; r < rows; r++)
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < hd / 2; i++) {
                        const size_t o = r * ld + (size_t)h * hd + i, o2 = o + hd / 2;
                        const double a = x0[o], b = x0[o2];
                        const double c1 = cs[r * hd + i], s1 = sn[r * hd + i];
                        const double c2 = cs[r * hd + i + hd / 2], s2 = sn[r * hd + i + hd / 2];
                        want[o] = a * c1 - b * s1;
                        want[o2] = b * c2 + a * s2;
                        tol[o] = 4 * U * (fabs(a * c1) + fabs(b * s1));
                        tol[o2] = 4 * U * (fabs(b * c2) + fabs(a * s2));
                    }
            snprintf(what, sizeof what, "%s rope hd=%d", impls[t].name, hd);
            check_close(what, x, want, tol, len); /* row padding: tol 0, must be untouched */
            CHECK(sentinel_intact(x + len, SENTINEL_FLOATS), "%s: wrote past the output", what);
        }
        free(x), free(x0), free(cs), free(sn), free(want), free(tol);
    }
}

/* ---------------------------------------------------------------------------------------------
 * The workspace */

/* Where the scratch comes from changes no bits: a workspace reused across calls, none (each call
 * allocates its own), or one that cannot grow (the GEMM then packs into stack buffers: the same
 * bits; attention runs on the reference: the reference's bits). And a steady state allocates
 * nothing: repeating a call leaves the workspace as it was. */
static void test_workspace(void) {
    vlr_workspace *tiny = vlr_workspace_new(64); /* too small for any real call */
    const int m = 37, n = 300, k = 700;
    float *x = malloc((size_t)m * k * sizeof(float)), *wv = malloc((size_t)n * k * sizeof(float));
    fill_uniform(x, (size_t)m * k, 1.0f);
    void *w = make_weights(VLR_DT_BF16, (size_t)n * k, wv);
    float *y[3];
    for (int i = 0; i < 3; i++) y[i] = malloc((size_t)m * n * sizeof(float));
    vlr_workspace *const sources[3] = {test_ws, NULL, tiny};
    for (int pr = 0; pr < 2; pr++) {
        const impl *set = pr ? impls_bf16 : impls;
        const int n_set = pr ? n_impls_bf16 : n_impls;
        for (int t = 1; t < n_set; t++) {
            if (set[t].k.gemm == set[t - 1].k.gemm) continue;
            for (int i = 0; i < 3; i++) {
                vlr_gemm_args a = {.y = y[i], .ldy = (size_t)n, .x = x, .ldx = (size_t)k, .w = w,
                                   .w_dtype = VLR_DT_BF16, .m = m, .n = n, .k = k};
                const vlr_exec e = {.k = &set[t].k, .n_threads = 2, .ws = sources[i]};
                set[t].k.gemm(&a, &e);
                if (i == 0) { /* the same call again: the workspace already fits it */
                    uint64_t grows0, grows1;
                    vlr_workspace_stats(test_ws, NULL, &grows0);
                    set[t].k.gemm(&a, &e);
                    vlr_workspace_stats(test_ws, NULL, &grows1);
                    CHECK(grows1 == grows0, "%s gemm: a repeated call grew the workspace", set[t].name);
                }
            }
            CHECK(memcmp(y[0], y[1], (size_t)m * n * sizeof(float)) == 0,
                  "%s gemm: workspace and per-call scratch differ", set[t].name);
            CHECK(memcmp(y[0], y[2], (size_t)m * n * sizeof(float)) == 0,
                  "%s gemm: the stack-buffer fallback differs", set[t].name);
        }
    }
    /* int8: the packed x comes from the workspace, or per call, or (none to be had) the reference */
    vlr_qweight wq;
    vlr_err err = {0};
    CHECK(vlr_qweight_quantize(&wq, w, VLR_DT_BF16, n, k, 2, &err) == VLR_OK, "int8 weights: %s", err.msg);
    for (int t = 1; t < n_impls_i8 && wq.packed; t++)
        for (int i = 0; i < 3; i++) {
            vlr_gemm_args a = {.y = y[i], .ldy = (size_t)n, .x = x, .ldx = (size_t)k, .wq = &wq, .m = m, .n = n, .k = k};
            const vlr_exec e = {.k = &impls_i8[t].k, .n_threads = 2, .ws = sources[i]};
            impls_i8[t].k.gemm_i8(&a, 1, &e);
            if (i > 0)
                CHECK(memcmp(y[0], y[i], (size_t)m * n * sizeof(float)) == 0, "%s gemm_i8: %s differs", impls_i8[t].name,
                      i == 1 ? "per-call scratch" : "the reference fallback");
        }
    vlr_qweight_free(&wq);
    for (int i = 0; i < 3; i++) free(y[i]);
    free(x), free(wv), free(w);

    /* attention: grouped, causal, a key count past one key block */
    const int nq = 70, nkv = 90, heads = 4, kvh = 2, hd = 64;
    const size_t qw = (size_t)heads * hd, kw = (size_t)kvh * hd;
    float *q = malloc((size_t)nq * qw * sizeof(float)), *kv = malloc(2 * (size_t)nkv * kw * sizeof(float));
    fill_uniform(q, (size_t)nq * qw, 1.0f);
    fill_uniform(kv, 2 * (size_t)nkv * kw, 1.0f);
    float *o[4];
    for (int i = 0; i < 4; i++) o[i] = malloc((size_t)nq * qw * sizeof(float));
    vlr_attention_args a = {.ld_out = qw, .q = q, .ld_q = qw, .k = kv, .v = kv + (size_t)nkv * kw,
                            .ld_kv = kw, .n_q = nq, .n_kv = nkv, .n_heads = heads, .n_kv_heads = kvh,
                            .head_dim = hd, .causal_offset = nkv - nq, .scale = 0.125f};
    a.out = o[3];
    const vlr_exec ref_ctx = ctx(&impls[0].k, 1);
    impls[0].k.attention(&a, &ref_ctx);
    for (int t = 1; t < n_impls; t++) {
        if (impls[t].k.attention == impls[t - 1].k.attention) continue;
        for (int i = 0; i < 3; i++) {
            a.out = o[i];
            const vlr_exec e = {.k = &impls[t].k, .n_threads = 2, .ws = sources[i]};
            impls[t].k.attention(&a, &e);
        }
        CHECK(memcmp(o[0], o[1], (size_t)nq * qw * sizeof(float)) == 0,
              "%s attention: workspace and per-call scratch differ", impls[t].name);
        CHECK(memcmp(o[2], o[3], (size_t)nq * qw * sizeof(float)) == 0,
              "%s attention: without scratch it is not the reference", impls[t].name);
    }
    for (int i = 0; i < 4; i++) free(o[i]);
    free(q), free(kv);
    size_t held;
    vlr_workspace_stats(tiny, &held, NULL);
    CHECK(held == 0, "a workspace capped at 64 bytes holds %zu", held);
    vlr_workspace_free(tiny);
}

/* vlr_kernels_select: AUTO gives the best ISA, a forced one never exceeds what the CPU has, f32
 * never gets the bf16-only table, every slot is filled and the precision is recorded. */
static void test_select(void) {
    vlr_isa best = VLR_ISA_REF;
    if (vlr_cpu_has_avx2()) best = VLR_ISA_AVX2;
    if (vlr_cpu_has_avx512()) best = VLR_ISA_AVX512;
    if (vlr_cpu_has_avx512_bf16()) best = VLR_ISA_AVX512_BF16;
    const char *names[5] = {"", "ref", "avx2", "avx512", "avx512_bf16"};
    for (int pr = 0; pr < 2; pr++) {
        const vlr_precision prec = pr ? VLR_PRECISION_BF16 : VLR_PRECISION_F32;
        for (int f = VLR_ISA_AUTO; f <= VLR_ISA_AVX512_BF16; f++) {
            vlr_kernels k;
            memset(&k, 0, sizeof k);
            const vlr_isa got = vlr_kernels_select(&k, (vlr_isa)f, prec);
            vlr_isa want = f == VLR_ISA_AUTO || f > (int)best ? best : (vlr_isa)f;
            if (want == VLR_ISA_AVX512_BF16 && prec == VLR_PRECISION_F32) want = VLR_ISA_AVX512;
            CHECK(got == want, "select(%d, %s) gave %d, want %d", f, vlr_precision_name(prec), got, want);
            CHECK(k.isa && strcmp(k.isa, names[got]) == 0, "select(%d): isa name %s", f, k.isa ? k.isa : "(null)");
            CHECK(k.precision == prec, "select(%d, %s): precision %d", f, vlr_precision_name(prec), k.precision);
            CHECK(k.gemm && k.attention && k.rmsnorm && k.rope && k.silu_mul && k.gelu && k.add,
                  "select(%d): a slot is NULL", f);
        }
    }
    /* auto resolves to what the CPU table says, and the names round-trip */
    const char *why = NULL;
    const vlr_precision cpu = vlr_precision_for_cpu(&why);
    vlr_kernels k;
    vlr_kernels_select(&k, VLR_ISA_AUTO, VLR_PRECISION_AUTO);
    CHECK(k.precision == cpu && why && *why, "auto precision: table %d, cpu %d", k.precision, cpu);
    CHECK(cpu == VLR_PRECISION_F32 || vlr_cpu_has_avx512_bf16(), "auto chose bf16 without AVX512_BF16");
    for (int p = VLR_PRECISION_F32; p <= VLR_PRECISION_AUTO; p++) {
        vlr_precision back = (vlr_precision)-1;
        CHECK(vlr_precision_parse(vlr_precision_name((vlr_precision)p), &back) && back == (vlr_precision)p,
              "precision %d does not round-trip its name", p);
    }
    vlr_precision untouched = VLR_PRECISION_BF16;
    CHECK(!vlr_precision_parse("fp16", &untouched) && !vlr_precision_parse(NULL, &untouched) &&
          untouched == VLR_PRECISION_BF16, "precision parse accepted a bad name");
    CHECK(vlr_precision_name((vlr_precision)7) == NULL, "precision name of an out-of-range value");
}

int main(void) {
    impls_init();
    impls_i8_init();
    test_ws = vlr_workspace_new(0);
    if (!test_ws) return 1;
    printf("implementations:");
    for (int i = 0; i < n_impls; i++) printf(" %s", impls[i].name);
    for (int i = 0; i < n_impls_bf16; i++) printf(" %s", impls_bf16[i].name);
    for (int i = 0; i < n_impls_i8; i++) printf(" %s", impls_i8[i].name);
    printf("\n");
    TEST_RUN(test_select);
    TEST_RUN(test_bf16_rounding);
    TEST_RUN(test_gemm);
    TEST_RUN(test_quantize_i8);
    TEST_RUN(test_gemm_i8);
    TEST_RUN(test_gemm_i8_group);
    TEST_RUN(test_attention);
    TEST_RUN(test_attention_varlen);
    TEST_RUN(test_elementwise);
    TEST_RUN(test_workspace);
    vlr_workspace_free(test_ws);
    return test_report();
}
