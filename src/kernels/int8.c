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

/* Largest |v| of a row of n values and whether all were finite (max is exact in any order). */
static float row_amax(const void *w, vlr_dtype dt, size_t off, int n, bool *finite) {
    float amax = 0.0f;
    bool ok = true;
    for (int p = 0; p < n; p++) {
        const float a = fabsf(vlr_dtype_load(w, dt, off + (size_t)p));
        if (!(a <= 3.4028234663852886e38f)) ok = false; /* inf or NaN */
        else if (a > amax) amax = a;
    }
    *finite = ok;
    return amax;
}

vlr_status vlr_qweight_quantize(vlr_qweight *q, const void *w, vlr_dtype dt, int n, int k, int n_threads,
                                vlr_err *e) {
    memset(q, 0, sizeof *q);
    if (n <= 0 || k <= 0 || k > VLR_I8_MAX_K)
        return vlr_fail(e, VLR_ERR_CONFIG, "int8 weights: [%d, %d] is outside 1 <= k <= %d", n, k, VLR_I8_MAX_K);
    const size_t n_pad = round_up((size_t)n, VLR_I8_NR), k4 = round_up((size_t)k, 4);
    const size_t packed_bytes = round_up(n_pad * k4, 64), vec_bytes = round_up(n_pad * 4, 64);
    char *block = aligned_alloc(64, packed_bytes + 2 * vec_bytes);
    if (!block) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory for int8 weights [%d, %d]", n, k);
    q->n = n;
    q->k = k;
    q->k4 = (int)k4;
    q->packed = (int8_t *)block;
    q->scale = (float *)(block + packed_bytes);
    q->offset_sum = (int32_t *)(block + packed_bytes + vec_bytes);
    q->bytes = packed_bytes + 2 * vec_bytes;
    const int n_panels = (int)(n_pad / VLR_I8_NR);
    (void)n_threads; /* only the pragma reads it */
    /* Each panel is written by one thread, padding included, so every byte is set exactly once. */
#pragma omp parallel for num_threads(n_threads > 0 ? n_threads : 1) schedule(dynamic, 4)
    for (int panel = 0; panel < n_panels; panel++) {
        int8_t *dst = q->packed + (size_t)panel * k4 * VLR_I8_NR;
        memset(dst, 0, k4 * VLR_I8_NR);
        for (int c = 0; c < VLR_I8_NR; c++) {
            const int j = panel * VLR_I8_NR + c;
            float inv = 0.0f;
            int32_t sum = 0;
            if (j < n) {
                bool finite;
                const size_t row = (size_t)j * (size_t)k;
                const float amax = row_amax(w, dt, row, k, &finite);
                q->scale[j] = vlr_i8_scale(amax, finite, &inv);
                for (int p = 0; p < k; p++) {
                    const int32_t v = vlr_quantize_i8(vlr_dtype_load(w, dt, row + (size_t)p), inv);
                    dst[(size_t)(p / 4) * (4 * VLR_I8_NR) + (size_t)c * 4 + (size_t)(p % 4)] = (int8_t)v;
                    sum += v;
                }
            } else {
                q->scale[j] = 0.0f;
            }
            q->offset_sum[j] = 128 * sum;
        }
    }
    return VLR_OK;
}

void vlr_qweight_free(vlr_qweight *q) {
    if (!q) return;
    free(q->packed); /* the block's start: scale and offset_sum live in it */
    memset(q, 0, sizeof *q);
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
