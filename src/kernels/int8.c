/* int8.c: the ISA-neutral half of int8 precision (kernels.h): weights quantized and packed once at
 * load (vlr_qweight_quantize), the scalar quantization of activation rows that the non-VNNI kernels
 * use as their packing (and that the VNNI packing must equal bit for bit), and the int8 GEMM driver
 * (vlr_gemm_i8_run: quantize x once for all threads, then hand out weight panels).
 *
 * Why the weights are packed at load: the fp32/bf16 GEMMs repack W on every call (about 5% of their
 * time at 7B shapes); an int8 W is made once anyway, so it is made directly in the order the micro-
 * kernels read it: panels of 32 output channels, each [k/4][32 channels][4 consecutive k] bytes, which
 * is one 128-byte row of two 512-bit vpdpbusd operands per 4 k, or four 256-bit ones. */
#include "exec.h"
#include "kernels.h"

#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

/* The quantization loops below are plain C that GCC vectorises; compiled once more for AVX-512 and
 * picked at load by the CPU (an ifunc), they run 16 values per instruction instead of 4. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define VLR_I8_CLONES __attribute__((target_clones("arch=x86-64-v4", "default")))
#else
#define VLR_I8_CLONES
#endif

/* Row `row` of w ([.., k] in dt) widened to fp32 in buf: one loop per dtype, so each vectorises. */
VLR_I8_CLONES static void widen_row(float *buf, const void *w, vlr_dtype dt, size_t row, int k) {
    const size_t off = row * (size_t)k;
    if (dt == VLR_DT_BF16) {
        const uint16_t *h = (const uint16_t *)w + off;
        for (int p = 0; p < k; p++) {
            const uint32_t u = (uint32_t)h[p] << 16;
            memcpy(&buf[p], &u, 4);
        }
    } else {
        for (int p = 0; p < k; p++) buf[p] = vlr_dtype_load(w, dt, off + (size_t)p);
    }
}

/* The largest |v| of n values and whether all were finite. Taken on the bit patterns with the sign
 * cleared, which order like the magnitudes (infinity and NaN above every finite value): an integer
 * max, which the compiler vectorises, where a float max would need -ffinite-math-only. */
VLR_I8_CLONES static float amax_of(const float *v, int n, bool *finite) {
    int32_t top = 0;
    for (int p = 0; p < n; p++) {
        int32_t b;
        memcpy(&b, &v[p], 4);
        b &= 0x7fffffff;
        top = b > top ? b : top;
    }
    *finite = top < 0x7f800000;
    float amax;
    memcpy(&amax, &top, 4);
    return amax;
}

/* q[p] = vlr_quantize_i8(v[p], inv) for p < n, for a row whose values are finite and at most
 * amax = 127 / inv in magnitude; returns their sum. Then |v · inv| < 127.5 (two roundings of 127 by
 * at most 2^-24 each), so vlr_quantize_i8's clamp and NaN test never act and are left out: the loop
 * vectorises. */
VLR_I8_CLONES static int32_t quantize_values(int8_t *q, const float *v, int n, float inv) {
    int32_t sum = 0;
    for (int p = 0; p < n; p++) {
        const int32_t t = (int32_t)((v[p] * inv + 12582912.0f) - 12582912.0f);
        q[p] = (int8_t)t;
        sum += t;
    }
    return sum;
}

vlr_status vlr_qweight_quantize(vlr_qweight *q, const void *w, vlr_dtype dt, int n, int k, int n_threads,
                                vlr_err *e) {
    memset(q, 0, sizeof *q);
    const size_t bytes = vlr_qweight_bytes(n, k);
    if (!bytes)
        return vlr_fail(e, VLR_ERR_CONFIG, "int8 weights: [%d, %d] is outside 1 <= k <= %d", n, k, VLR_I8_MAX_K);
    void *block = vlr_malloc_huge(bytes, e);
    if (!block) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory for int8 weights [%d, %d]", n, k);
    vlr_qweight_view(q, n, k, block);
    q->owned = block;
    const size_t n_pad = round_up((size_t)n, VLR_I8_NR), k4 = (size_t)q->k4;
    const int n_panels = (int)(n_pad / VLR_I8_NR);
    bool ok = true;
    (void)n_threads; /* only the pragma reads it */
    /* Each panel is written by one thread, padding included, so every byte is set exactly once; a
     * row goes through the thread's buffers (fp32, then int8) so that each step is one simple loop. */
#pragma omp parallel num_threads(n_threads > 0 ? n_threads : 1) reduction(&& : ok)
    {
        float *buf = malloc(k4 * sizeof(float));
        int8_t *qrow = calloc(k4, 1);
        ok = buf && qrow;
#pragma omp for schedule(dynamic, 4)
        for (int panel = 0; panel < n_panels; panel++) {
            if (!ok) continue;
            int8_t *dst = q->packed + (size_t)panel * k4 * VLR_I8_NR;
            for (int c = 0; c < VLR_I8_NR; c++) {
                const int j = panel * VLR_I8_NR + c;
                int32_t sum = 0;
                if (j < n) {
                    bool finite;
                    float inv;
                    widen_row(buf, w, dt, (size_t)j, k);
                    const float amax = amax_of(buf, k, &finite);
                    q->scale[j] = vlr_i8_scale(amax, finite, &inv);
                    if (finite) sum = quantize_values(qrow, buf, k, inv); /* qrow[k .. k4) stay 0 */
                    else memset(qrow, 0, k4); /* its scale is NaN: every output it touches is NaN */
                } else {
                    q->scale[j] = 0.0f;
                    memset(qrow, 0, k4);
                }
                q->offset_sum[j] = 128 * sum;
                for (size_t g = 0; g < k4 / 4; g++) memcpy(dst + g * (4 * VLR_I8_NR) + (size_t)c * 4, qrow + 4 * g, 4);
            }
        }
        free(buf);
        free(qrow);
    }
    if (!ok) {
        vlr_qweight_free(q);
        return vlr_fail(e, VLR_ERR_NOMEM, "out of memory for int8 weights [%d, %d]", n, k);
    }
    return VLR_OK;
}

void vlr_qweight_free(vlr_qweight *q) {
    if (!q) return;
    free(q->owned);
    memset(q, 0, sizeof *q);
}

/* [packed: n_pad · k4][scale: n_pad floats][offset_sum: n_pad int32], each part 64-aligned */
static void qweight_parts(int n, int k, size_t *packed_bytes, size_t *vec_bytes) {
    const size_t n_pad = round_up((size_t)n, VLR_I8_NR), k4 = round_up((size_t)k, 4);
    *packed_bytes = round_up(n_pad * k4, 64);
    *vec_bytes = round_up(n_pad * 4, 64);
}

size_t vlr_qweight_bytes(int n, int k) {
    if (n <= 0 || k <= 0 || k > VLR_I8_MAX_K) return 0;
    size_t packed_bytes, vec_bytes;
    qweight_parts(n, k, &packed_bytes, &vec_bytes);
    return packed_bytes + 2 * vec_bytes;
}

void vlr_qweight_view(vlr_qweight *q, int n, int k, const void *block) {
    size_t packed_bytes, vec_bytes;
    qweight_parts(n, k, &packed_bytes, &vec_bytes);
    char *b = (char *)block; /* read-only in use: the kernels take the struct as const */
    memset(q, 0, sizeof *q);
    q->n = n;
    q->k = k;
    q->k4 = (int)round_up((size_t)k, 4);
    q->packed = (int8_t *)b;
    q->scale = (float *)(b + packed_bytes);
    q->offset_sum = (int32_t *)(b + packed_bytes + vec_bytes);
    q->bytes = packed_bytes + 2 * vec_bytes;
}

void vlr_i8_pack_rows(uint32_t *dst, float *sx, const float *x, size_t ldx, int rows, int k, int k4,
                      int offset) {
    for (int i = 0; i < rows; i++) {
        const float *xr = x + (size_t)i * ldx;
        float amax = 0.0f, inv;
        bool finite = true;
        for (int p = 0; p < k; p++) {
            const float a = fabsf(xr[p]);
            if (!(a <= 3.4028234663852886e38f)) finite = false;
            else if (a > amax) amax = a;
        }
        sx[i] = vlr_i8_scale(amax, finite, &inv);
        for (int g = 0; g < k4 / 4; g++) {
            uint32_t word = 0;
            for (int b = 0; b < 4; b++) {
                const int p = 4 * g + b;
                const int32_t v = (p < k ? vlr_quantize_i8(xr[p], inv) : 0) + offset;
                word |= (uint32_t)(uint8_t)v << (8 * b);
            }
            dst[(size_t)g * (size_t)rows + (size_t)i] = word;
        }
    }
}
