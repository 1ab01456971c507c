/* ref.c: the scalar reference implementation of every kernel slot: plain C, one obvious loop
 * nest per operation, fp32 throughout, sums taken in index order. It is the oracle the vectorised
 * kernels are tested against and the fallback on CPUs without AVX2, so it favours being obviously
 * right over being fast. It allocates nothing (attention recomputes its scores instead of storing
 * them), so no slot can fail.
 *
 * Threading: gemm splits over output columns (weight rows) and attention over (query, head) pairs,
 * so a result never depends on the thread count. The element-wise slots run on the calling
 * thread. */
#include <math.h>

#include "exec.h"
#include "kernels.h"

/* y[i][j] (=|+=) (sum_k x[i][k] * w[j][k]) + bias[j]: the dot product is summed in k order, the bias
 * is added to it, and only then is the sum added to y (accumulate). (The fast kernels sum in k
 * blocks and add the old y after the first block: see kernels.h.) In bf16 precision each operand
 * goes through vlr_round_bf16 first; the products of two bf16 values are exact in fp32. */
static inline __attribute__((always_inline)) void ref_gemm_dt(const vlr_gemm_args *a, int n_threads,
                                                              const vlr_dtype dt, const bool round) {
    const int m = a->m, n = a->n, k = a->k;
    (void)n_threads; /* only the pragma reads it (unused without OpenMP) */
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int j = 0; j < n; j++) {
        const float bias = a->bias ? vlr_dtype_load(a->bias, a->bias_dtype, (size_t)j) : 0.0f;
        for (int i = 0; i < m; i++) {
            const float *x = a->x + (size_t)i * a->ldx;
            const size_t row = (size_t)j * (size_t)k;
            float dot = 0.0f;
            for (int p = 0; p < k; p++) {
                const float xv = x[p], wv = vlr_dtype_load(a->w, dt, row + (size_t)p);
                dot += round ? vlr_round_bf16(xv) * vlr_round_bf16(wv) : xv * wv;
            }
            if (a->bias) dot += bias;
            float *y = a->y + (size_t)i * a->ldy + j;
            *y = a->accumulate ? *y + dot : dot;
        }
    }
}

/* One instance per (dtype, precision): the same sum, without a switch per term. */
static void ref_gemm(const vlr_gemm_args *a, int n_threads, bool round) {
    if (a->m <= 0 || a->n <= 0) return;
    switch (a->w_dtype) {
    case VLR_DT_BF16: round ? ref_gemm_dt(a, n_threads, VLR_DT_BF16, true) : ref_gemm_dt(a, n_threads, VLR_DT_BF16, false); break;
    case VLR_DT_F16: round ? ref_gemm_dt(a, n_threads, VLR_DT_F16, true) : ref_gemm_dt(a, n_threads, VLR_DT_F16, false); break;
    case VLR_DT_F32: round ? ref_gemm_dt(a, n_threads, VLR_DT_F32, true) : ref_gemm_dt(a, n_threads, VLR_DT_F32, false); break;
    }
}
/* The context gives only the thread count: the reference needs no scratch. */
static int ref_threads(const vlr_exec *x) { return x->n_threads > 0 ? x->n_threads : 1; }
static void ref_gemm_f32(const vlr_gemm_args *a, const vlr_exec *x) { ref_gemm(a, ref_threads(x), false); }
static void ref_gemm_bf16(const vlr_gemm_args *a, const vlr_exec *x) { ref_gemm(a, ref_threads(x), true); }

/* int8 (kernels.h): each row's scale, then for each output the exact integer sum and the epilogue,
 * quantizing x again for every output rather than holding it anywhere (the oracle allocates
 * nothing; its speed does not matter). */
static void ref_gemm_i8_one(const vlr_gemm_args *a, const vlr_exec *x) {
    const vlr_qweight *q = a->wq;
    const int m = a->m, n = a->n, k = a->k;
    const int n_threads = ref_threads(x);
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (int i = 0; i < m; i++) {
        const float *xr = a->x + (size_t)i * a->ldx;
        float amax = 0.0f, inv;
        bool finite = true;
        for (int p = 0; p < k; p++) {
            if (!isfinite(xr[p])) finite = false;
            else if (fabsf(xr[p]) > amax) amax = fabsf(xr[p]);
        }
        const float sx = vlr_i8_scale(amax, finite, &inv);
        for (int j = 0; j < n; j++) {
            int32_t acc = 0;
            for (int p = 0; p < k; p++) acc += vlr_quantize_i8(xr[p], inv) * (int32_t)vlr_qweight_at(q, j, p);
            float v = (float)acc * (sx * q->scale[j]);
            if (a->bias) v = v + vlr_dtype_load(a->bias, a->bias_dtype, (size_t)j);
            float *y = a->y + (size_t)i * a->ldy + j;
            *y = a->accumulate ? *y + v : v;
        }
    }
}

static void ref_gemm_i8(const vlr_gemm_args *a, int n_gemms, const vlr_exec *x) {
    for (int i = 0; i < n_gemms; i++) ref_gemm_i8_one(&a[i], x);
}

static float ref_dot(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* Softmax attention of one query row for one head, in two passes over the visible keys: the first
 * finds the largest score, the second sums exp(score - max) and the weighted values straight into
 * the output row, which is divided by the sum at the end. Scores are recomputed in the second pass
 * rather than stored, so the reference needs no scratch memory. */
static void ref_attention_run(const vlr_attention_args *a, int n_threads) {
    /* outside the contract (kernels.h): nothing is computed rather than an out-of-range head */
    if (a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads != 0 || a->head_dim <= 0) return;
    if (a->cu_seqlens) { /* one segment after the other */
        for (int s = 0; s < a->n_seqs; s++) {
            const size_t r0 = (size_t)a->cu_seqlens[s];
            vlr_attention_args seg = *a;
            seg.cu_seqlens = NULL;
            seg.n_q = seg.n_kv = a->cu_seqlens[s + 1] - a->cu_seqlens[s];
            seg.causal_offset = -1;
            seg.out = a->out + r0 * a->ld_out;
            seg.q = a->q + r0 * a->ld_q;
            seg.k = a->k + r0 * a->ld_kv;
            seg.v = a->v + r0 * a->ld_kv;
            if (seg.n_q > 0) ref_attention_run(&seg, n_threads);
        }
        return;
    }
    const int hd = a->head_dim, group = a->n_heads / a->n_kv_heads;
    const long n_pairs = (long)a->n_q * a->n_heads;
#pragma omp parallel for num_threads(n_threads) schedule(static)
    for (long pair = 0; pair < n_pairs; pair++) {
        const int i = (int)(pair / a->n_heads), h = (int)(pair % a->n_heads), g = h / group;
        const float *q = a->q + (size_t)i * a->ld_q + (size_t)h * hd;
        float *out = a->out + (size_t)i * a->ld_out + (size_t)h * hd;
        int n_vis = a->causal_offset < 0 ? a->n_kv : a->causal_offset + i + 1;
        if (n_vis > a->n_kv) n_vis = a->n_kv;
        float max = -INFINITY;
        for (int j = 0; j < n_vis; j++) {
            float s = a->scale * ref_dot(q, a->k + (size_t)j * a->ld_kv + (size_t)g * hd, hd);
            if (s > max) max = s;
        }
        for (int d = 0; d < hd; d++) out[d] = 0.0f;
        float sum = 0.0f;
        for (int j = 0; j < n_vis; j++) {
            float s = a->scale * ref_dot(q, a->k + (size_t)j * a->ld_kv + (size_t)g * hd, hd);
            float p = expf(s - max);
            const float *v = a->v + (size_t)j * a->ld_kv + (size_t)g * hd;
            sum += p;
            for (int d = 0; d < hd; d++) out[d] += p * v[d];
        }
        /* A query that sees no key (impossible for valid causal offsets) gets zeros, not NaN. */
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        for (int d = 0; d < hd; d++) out[d] *= inv;
    }
}

static void ref_attention(const vlr_attention_args *a, const vlr_exec *x) { ref_attention_run(a, ref_threads(x)); }

/* Qwen2RMSNorm: (x * rsqrt(mean(x^2) + eps)) * w, the mean of squares summed in fp32. */
static void ref_rmsnorm(float *y, const float *x, int rows, int n, const void *w, vlr_dtype w_dtype,
                        float eps) {
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * n;
        float *yr = y + (size_t)r * n;
        float ss = 0.0f;
        for (int i = 0; i < n; i++) ss += xr[i] * xr[i];
        const float scale = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = 0; i < n; i++) yr[i] = (xr[i] * scale) * vlr_dtype_load(w, w_dtype, (size_t)i);
    }
}

static void ref_rope(float *x, size_t ld, int rows, int n_heads, int head_dim, const float *cos_tab,
                     const float *sin_tab) {
    const int half = head_dim / 2;
    for (int r = 0; r < rows; r++) {
        const float *c = cos_tab + (size_t)r * head_dim, *s = sin_tab + (size_t)r * head_dim;
        for (int h = 0; h < n_heads; h++) {
            float *xh = x + (size_t)r * ld + (size_t)h * head_dim;
            for (int i = 0; i < half; i++) {
                const float a = xh[i], b = xh[i + half];
                xh[i] = a * c[i] - b * s[i];
                xh[i + half] = b * c[i + half] + a * s[i + half];
            }
        }
    }
}

/* silu(g) = g * sigmoid(g) = g / (1 + exp(-g)); for g << 0 exp(-g) is inf and the quotient -0. */
static void ref_silu_mul(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void ref_gelu(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
}

static void ref_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void vlr_kernels_fill_ref(vlr_kernels *k, vlr_precision precision) {
    k->isa = "ref";
    k->precision = precision;
    k->gemm = precision == VLR_PRECISION_BF16 ? ref_gemm_bf16 : ref_gemm_f32;
    k->gemm_i8 = ref_gemm_i8;
    k->isa_i8 = "ref";
    k->attention = ref_attention;
    k->rmsnorm = ref_rmsnorm;
    k->rope = ref_rope;
    k->silu_mul = ref_silu_mul;
    k->gelu = ref_gelu;
    k->add = ref_add;
}
