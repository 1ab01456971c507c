/* kernels.h: the numeric kernels behind both transformers, as one table of function pointers.
 *
 * The table is filled by the scalar reference (ref.c: the oracle, plain C, obviously correct) and
 * then overwritten slot by slot by the fastest implementation the CPU supports (x86_avx2.c,
 * x86_avx512.c, each compiled with its own -m flags so one binary runs on any x86-64). The choice is
 * made once per model (vlr_kernels_select) from cpuid + xgetbv and can be forced for tests.
 *
 * A table is chosen per (ISA, precision). Numerics, for every implementation of every slot:
 * activations, accumulation and every element-wise slot are fp32; weights are read in their stored
 * dtype (bf16 / f16 / f32) and widened exactly to fp32. The precision changes one thing, the
 * operands of the gemm slot (every linear layer):
 *   f32:  used as they are (weights widened exactly);
 *   bf16: both x and w rounded to bf16 first (vlr_round_bf16: nearest even, fp32 subnormals to
 *         zero, as vcvtneps2bf16 does), then multiplied exactly and summed in fp32. On AVX512_BF16
 *         this is vdpbf16ps (x86_avx512_bf16.c); elsewhere the packing rounds and the fp32 FMA
 *         kernel runs. Attention stays fp32 in both (its products are not linear layers, and the
 *         KV cache is fp32).
 *   int8: the linear layers whose weights were quantized at load (vlr_qweight, below) go through the
 *         gemm_i8 slot, integer arithmetic end to end; every other linear layer runs the gemm slot
 *         in the float precision `auto` picks for this CPU.
 * Fast kernels may reorder sums (different fp32 rounding than the reference), so tests compare
 * with a tolerance, but a given implementation's result for a row never depends on the thread
 * count or on the other rows of the batch: work is split over output rows / columns only, never
 * over a reduction dimension.
 *
 * Threading and memory: the gemm and attention slots take the execution context (exec.h) and run
 * an OpenMP parallel region of its n_threads (num_threads clause; nothing global is changed), with
 * their scratch from its workspace. The element-wise slots run on the calling thread and need no
 * scratch, so they take their operands only. */
#ifndef VLR_KERNELS_H
#define VLR_KERNELS_H

#include <math.h>

#include "../common.h"
#include "../weights.h"

typedef struct vlr_exec vlr_exec; /* exec.h: table, threads, workspace, cancel flag, trace */

/* y[i][j] (=|+=) sum_k x[i][k] * w[j][k] + bias[j]    for i < m, j < n
 * y must not overlap x or w. k = 0 gives y = bias (or 0), += when accumulating.
 * Rounding: ref sums in k order, then adds the bias, then (accumulate) the old y. The fast kernels
 * cut k into fixed blocks (256): one fma chain per block, block sums added in order,
 * y = ((s_0 + bias) [+ y_old]) + s_1 + s_2 + ... Error <= gamma_{k+2} · sum|terms| for all. */
typedef struct vlr_gemm_args {
    float *y;
    size_t ldy;          /* row stride of y in floats (>= n) */
    const float *x;
    size_t ldx;          /* row stride of x in floats (>= k) */
    const void *w;       /* [n, k] row-major, dtype w_dtype, row stride k */
    vlr_dtype w_dtype;
    const void *bias;    /* [n] in bias_dtype, or NULL */
    vlr_dtype bias_dtype;
    int m, n, k;
    bool accumulate;     /* true: y += x·wᵀ + bias (fused residual add) */
    const struct vlr_qweight *wq; /* gemm_i8 only: the int8 form of w (w and w_dtype unused) */
} vlr_gemm_args;

/* int8 precision (the gemm_i8 slot). Weights, once at load (vlr_qweight_quantize): per output
 * channel j, sw[j] = amax_k |w[j][k]| / 127 and wq[j][k] = clamp(rint(w[j][k] · (127 / amax)), ±127).
 * Activations, per call and per row i of x: sx[i] = amax_k |x[i][k]| / 127, xq[i][k] the same rounding
 * (vlr_quantize_i8). Then, exactly in int32, acc = sum_k xq[i][k] · wq[j][k] (|acc| <= k · 127², so
 * k <= VLR_I8_MAX_K), and y[i][j] (=|+=) ((float)acc · (sx[i] · sw[j])) + bias[j], with the old y added
 * last. Every step is defined to the bit (rint is round-half-even, as vcvtps2dq; float(acc) rounds to
 * nearest, as vcvtdq2ps), so every implementation returns the same bits as the reference: tests compare
 * with ==. A row of x holding a NaN or an infinity gets sx = NaN, hence a NaN row of y; a row of zeros
 * gets sx = 0. A zero weight row gets sw = 0; a non-finite one sw = NaN (and wq = 0). */
#define VLR_I8_NR 32       /* columns per packed weight panel */
#define VLR_I8_MAX_K 66000 /* 66000 · 255 · 127 < 2^31: the VNNI form's offset sums stay exact too */
typedef struct vlr_qweight {
    int n, k;
    int k4;              /* k rounded up to a multiple of 4 (zero padded) */
    int8_t *packed;      /* panels of VLR_I8_NR columns: [ceil(n/32)][k4/4][32][4], element (j, p) at
                          * ((j/32)·(k4/4) + p/4)·128 + (j%32)·4 + p%4; padding columns are zero */
    float *scale;        /* [ceil(n/32)·32] sw; 0 past n */
    int32_t *offset_sum; /* [ceil(n/32)·32] 128 · sum_k wq[j][k], for kernels that feed xq + 128 as u8 */
    size_t bytes;        /* of the three arrays: one block of vlr_qweight_bytes(n, k), packed first */
    void *owned;         /* that block when this struct allocated it (else it is a view: a file map) */
} vlr_qweight;

/* The bytes of the block an [n, k] int8 matrix takes (packed, scales, offset sums, each 64-aligned);
 * 0 when k is out of range. */
size_t vlr_qweight_bytes(int n, int k);
/* Points q at a block laid out as vlr_qweight_quantize writes it (64-byte aligned), without copying
 * or owning it. */
void vlr_qweight_view(vlr_qweight *q, int n, int k, const void *block);

/* Quantizes w ([n, k] in dt) into q with n_threads OpenMP threads (results do not depend on it).
 * VLR_ERR_CONFIG when k > VLR_I8_MAX_K, VLR_ERR_NOMEM. */
vlr_status vlr_qweight_quantize(vlr_qweight *q, const void *w, vlr_dtype dt, int n, int k, int n_threads,
                                vlr_err *e);
void vlr_qweight_free(vlr_qweight *q); /* zeroed structs and views are fine */

static inline int8_t vlr_qweight_at(const vlr_qweight *q, int j, int p) {
    return q->packed[((size_t)(j / VLR_I8_NR) * (size_t)(q->k4 / 4) + (size_t)(p / 4)) * (4 * VLR_I8_NR) +
                     (size_t)(j % VLR_I8_NR) * 4 + (size_t)(p % 4)];
}

/* The scale of a row (or weight channel) whose largest magnitude is amax (NaN when a value was not
 * finite), and the factor its values are multiplied by before rounding. */
static inline float vlr_i8_scale(float amax, bool finite, float *inv) {
    if (!finite) {
        *inv = 0.0f;
        return NAN;
    }
    if (amax == 0.0f) {
        *inv = 0.0f;
        return 0.0f;
    }
    *inv = 127.0f / amax;
    return amax / 127.0f;
}
/* rint(v · inv) clamped to [-127, 127]: the one rounding of every int8 path (nearest, ties to even,
 * as vcvtps2dq). Clamping first changes no result (the bounds are integers) and keeps the value below
 * 2^22, where adding and subtracting 1.5 · 2^23 rounds to an integer exactly as rint does, without a
 * libm call. NaN (v · 0 for a non-finite v) gives 0: its row's scale is NaN anyway. */
static inline int32_t vlr_quantize_i8(float v, float inv) {
    float t = v * inv;
    t = t > 127.0f ? 127.0f : t < -127.0f ? -127.0f : t;
    t = (t + 12582912.0f) - 12582912.0f;
    return t == t ? (int32_t)t : 0;
}
/* The scalar packing of x for gemm_i8 (int8.c): rows [0, rows) of x quantized (vlr_i8_scale,
 * vlr_quantize_i8), plus offset (0, or 128 for u8 operands), as dst[k4/4][rows] words of 4 bytes, k
 * in increasing byte order, k past k zero (+ offset); sx[rows] their scales. The vectorised packings
 * must give the same bytes. */
void vlr_i8_pack_rows(uint32_t *dst, float *sx, const float *x, size_t ldx, int rows, int k, int k4,
                      int offset);

/* Attention for one sequence segment, all heads:
 *   out[i, h*hd:(h+1)*hd] = softmax_j(scale * q[i,h]·k[j,g]) · v[j,g],  g = h / (n_heads/n_kv_heads)
 * Non-causal (causal_offset < 0): query i sees keys 0..n_kv-1.
 * Causal: query i sees keys 0..causal_offset+i (query i sits at key position causal_offset+i).
 * q/out rows have n_heads*head_dim floats at stride ld_q / ld_out; k/v rows n_kv_heads*head_dim at
 * stride ld_kv. Softmax in fp32 with max subtraction (online / flash style in fast kernels, over key
 * blocks of fixed size; scratch O(head_dim + block) per query row, never O(n_q · n_kv)).
 * Requires n_heads % n_kv_heads == 0 (otherwise nothing is computed). Keys past n_kv are never
 * read (a causal window is clipped at n_kv). out must not overlap q, k or v.
 * Variable-length batch (flash-attn's cu_seqlens): with cu_seqlens set, the call covers n_seqs
 * independent segments, segment s being rows [cu_seqlens[s], cu_seqlens[s+1]) of q/out and the
 * same rows of k/v, each attending non-causally within itself (n_q, n_kv and causal_offset are
 * ignored). Same bits as one call per segment, in one parallel region (the vision tower's windows
 * are many small segments). */
typedef struct vlr_attention_args {
    float *out;
    size_t ld_out;
    const float *q;
    size_t ld_q;
    const float *k, *v;
    size_t ld_kv;
    int n_q, n_kv, n_heads, n_kv_heads, head_dim;
    int causal_offset;
    float scale;
    const int32_t *cu_seqlens; /* NULL, or [n_seqs + 1] segment starts in rows, cu_seqlens[0] = 0 */
    int n_seqs;
} vlr_attention_args;

/* What the bf16 operand rounding does to one value (the scalar twin of vcvtneps2bf16, and what
 * every bf16 path implements): round to nearest even on the top 16 bits; fp32 subnormals become a
 * zero of the same sign (the instruction treats them as zero); NaN stays NaN. */
static inline float vlr_round_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
    else if ((u & 0x7fffffffu) > 0x7f800000u) u = (u | 0x00400000u) & 0xffff0000u;
    else u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

typedef struct vlr_kernels {
    const char *isa;         /* of the float slots: "ref", "avx2", "avx512", "avx512_bf16" */
    vlr_precision precision; /* F32, BF16 or INT8 (never AUTO) */
    vlr_precision float_precision; /* the gemm slot's: precision, or for INT8 the CPU's float choice */

    void (*gemm)(const vlr_gemm_args *a, const vlr_exec *x);
    /* int8 weights (a->wq) in any table, for the layers quantized at load: n_gemms (1 ..
     * VLR_I8_MAX_GROUP) products of one x (the same x, ldx, m and k in every a[i]) with as many
     * weights, x quantized once for all of them (q/k/v, gate/up) */
    void (*gemm_i8)(const vlr_gemm_args *a, int n_gemms, const vlr_exec *x);
    const char *isa_i8;      /* who fills gemm_i8: "ref", "avx2", "avx512_vnni" */
    void (*attention)(const vlr_attention_args *a, const vlr_exec *x);

    /* y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w, for rows r < rows of n floats (y may be x).
     * w: [n] in w_dtype. Sum of squares accumulated in fp32... (ref: double is NOT used, to keep
     * the fast path comparable; see the tests' tolerance). */
    void (*rmsnorm)(float *y, const float *x, int rows, int n, const void *w, vlr_dtype w_dtype,
                    float eps);
    /* Rotate-half RoPE in place on rows of n_heads heads of head_dim floats (stride ld):
     * for each row r, head h, i < head_dim/2:
     *   a = x[i], b = x[i + hd/2]; x[i] = a*cos[r][i] - b*sin[r][i]; x[i+hd/2] = b*cos[r][i+hd/2] + a*sin[r][i+hd/2]
     * cos/sin: [rows, head_dim] (the angle vector is already duplicated across the two halves). */
    void (*rope)(float *x, size_t ld, int rows, int n_heads, int head_dim, const float *cos_tab,
                 const float *sin_tab);
    /* g[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u, i < n. Fast kernels use a polynomial exp
     * (<= ~2 ulp). */
    void (*silu_mul)(float *g, const float *u, size_t n);
    /* x[i] = 0.5 x (1 + erf(x / sqrt 2)), i < n (exact GELU, as torch's default). ref uses erff; the
     * fast kernels a piecewise polynomial erf with absolute error <= 6.4e-8 (about 1 ulp of 1). */
    void (*gelu)(float *x, size_t n);
    /* y[i] += x[i] */
    void (*add)(float *y, const float *x, size_t n);
} vlr_kernels;

/* The ISA-neutral half of a packed GEMM: an ISA file describes its tiling and its block routine,
 * vlr_gemm_run splits the output over the OpenMP team (column panels first, so each thread packs only
 * its own part of W; row tiles only when there are fewer panels than threads), takes each thread's
 * packing buffers from the context's workspace and calls the block routine. The k blocking lives in
 * the block routine and is fixed, so neither the split nor the buffers change a result's bits. */
typedef void (*vlr_gemm_block_fn)(const vlr_gemm_args *a, bool round_bf16, int r0, int r1, int c0,
                                  int c1, float *wbuf, int nc_cap, float *xbuf, int mc_cap);
typedef struct vlr_gemm_tiling {
    int mr, nr;     /* micro-tile rows (x side) and columns (W side) */
    int kc, nc, mc; /* k block, W block columns, x block rows */
    vlr_gemm_block_fn block;       /* y[r0:r1, c0:c1] with buffers of nc_cap x kc and mc_cap x kc */
    /* the same blocks with its own one-panel stack buffers, for when the heap has none */
    void (*block_small)(const vlr_gemm_args *a, bool round_bf16, int r0, int r1, int c0, int c1);
    bool round_bf16; /* the fp32 kernels' bf16 precision: packing rounds x (and non-bf16 w) */
} vlr_gemm_tiling;
void vlr_gemm_run(const vlr_gemm_args *a, const vlr_exec *x, const vlr_gemm_tiling *t);

/* The ISA-neutral half of flash attention, like vlr_gemm_run for the GEMM. A work unit is one
 * key/value head g with a block of up to bq queries of one segment, for all the heads of g's group
 * (rows = group * bq query rows, bq = min(unit_rows / group, longest segment)). vlr_attention_run
 * cuts a call into segments (cu_seqlens) and units, numbers the units segment by segment (within a
 * segment query-block-major from the last block, so long causal units start first), runs them as a
 * dynamic OpenMP loop, and hands each thread a slice of scratch_floats(rows, head_dim) floats from
 * the context's workspace (64-byte aligned). The unit routine computes its queries completely, with
 * arithmetic that depends only on a query's own scores and the fixed key blocking: the unit shape,
 * the threads and the other queries never change a result's bits. Without scratch memory the call
 * runs on the scalar reference (which needs none). */
/* One thread's flash-attention scratch for units of `rows` query rows (heads x queries), head_dim
 * hd and key blocks of bk keys, carved by vlr_attention_run from one 64-byte-aligned slice, s first
 * (its rows, and kt's panel rows, stay aligned when bk is a multiple of 16). */
typedef struct vlr_flash_scratch {
    float *s;  /* [rows][bk] scores, then probabilities */
    float *kt; /* [bk / nr][hd][nr] the key block, transposed into the GEMM's micro-panels */
    float *vb; /* [bk][hd] the value block, contiguous: rows of V are ld_kv apart, and for ld_kv a
                * multiple of 1-2 KiB they would all fall into the same few L1 sets */
    float *qp; /* [rows][hd] Q tiles, each packed [hd][mr] */
    float *o;  /* [rows][hd] unnormalised output */
    float *m, *l, *alpha; /* [rows] running max, running sum, this block's rescale */
} vlr_flash_scratch;

typedef struct vlr_attention_tiling {
    int unit_rows; /* query rows (heads x queries) per unit, at most */
    int key_block; /* keys per block (bk) */
    /* queries [i0, i0 + nq) of seg (a plain call, cu_seqlens NULL) for key/value head g */
    void (*unit)(const vlr_attention_args *seg, int g, int i0, int nq, int bq, const vlr_flash_scratch *w);
} vlr_attention_tiling;
void vlr_attention_run(const vlr_attention_args *a, const vlr_exec *x, const vlr_attention_tiling *t);

/* The ISA-neutral half of the int8 GEMM (kernels.c). The weights come packed (vlr_qweight), so only x
 * is packed per call: vlr_gemm_i8_run quantizes it once for all threads, tile by tile of mr rows
 * (pack_x: the tile's rows as [k4/4][rows] groups of 4 bytes, in the ISA's own encoding, plus their
 * scales), then hands out the weight panels; each panel meets every x tile (tile: one mr × 32 block,
 * its epilogue included). A long k is cut into blocks of at most VLR_I8_KQ groups of 4, each pass
 * over all panels and tiles, so that one block of x stays in the last-level cache while the panels
 * stream past it (the tile keeps its int32 sums between blocks). Integer sums are exact, so neither
 * split changes a bit. */
#define VLR_I8_KQ 1024 /* groups of 4 k per block: x blocks of 4 KiB per row, W blocks of 128 KiB */
#define VLR_I8_MAX_GROUP 4
typedef struct vlr_i8_kblock {
    int q0, q1;   /* groups of 4 k [q0, q1) */
    int32_t *acc; /* [mr][32] the tile's partial sums between blocks; unused when first and last */
    bool first, last;
} vlr_i8_kblock;
typedef struct vlr_i8_tiling {
    int mr;
    void (*pack_x)(uint32_t *dst, float *sx, const float *x, size_t ldx, int rows, int k, int k4);
    void (*tile)(const vlr_gemm_args *a, const uint32_t *xp, const float *sx, int rows, int i0, int panel,
                 const float *bias, const vlr_i8_kblock *kb);
} vlr_i8_tiling;
void vlr_gemm_i8_run(const vlr_gemm_args *a, int n_gemms, const vlr_exec *x, const vlr_i8_tiling *t);

typedef enum vlr_isa {
    VLR_ISA_AUTO = 0, VLR_ISA_REF, VLR_ISA_AVX2, VLR_ISA_AVX512,
    VLR_ISA_AVX512_BF16 /* AVX-512 plus vdpbf16ps: differs from AVX512 only in bf16 precision */
} vlr_isa;

/* Fills k for `precision` (F32, BF16 or INT8; AUTO resolves with vlr_precision_for_cpu) with the best
 * implementation this CPU supports, or the one forced (a forced ISA the CPU lacks falls back to the
 * best supported one below it). In f32 precision AVX512_BF16 adds nothing, so the table is AVX512's.
 * gemm_i8 comes from the ISA's level: ref, avx2 (also for AVX512 without VNNI), avx512_vnni (AVX512
 * and up, where the CPU has VNNI). Returns the ISA of the float slots. */
vlr_isa vlr_kernels_select(vlr_kernels *k, vlr_isa force, vlr_precision precision);
bool vlr_cpu_has_avx2(void);        /* AVX2 + FMA + F16C, and the OS saves YMM state */
bool vlr_cpu_has_avx512(void);      /* AVX-512 F/BW/VL/DQ and the OS saves ZMM state */
bool vlr_cpu_has_avx512_bf16(void); /* the above plus AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16) */
bool vlr_cpu_has_avx512_vnni(void); /* AVX-512 plus AVX512_VNNI (vpdpbusd) */
/* What `auto` means on this CPU: BF16 where bf16 dot products run clearly faster than fp32 FMA,
 * else F32. A fixed table from cpuid, never a timing: *why (may be NULL) gets a static sentence. */
vlr_precision vlr_precision_for_cpu(const char **why);

/* Per-ISA fillers (each overwrites the slots it implements for that precision). */
void vlr_kernels_fill_ref(vlr_kernels *k, vlr_precision precision);
void vlr_kernels_fill_avx2(vlr_kernels *k, vlr_precision precision);
void vlr_kernels_fill_avx512(vlr_kernels *k, vlr_precision precision);
void vlr_kernels_fill_avx512_bf16(vlr_kernels *k, vlr_precision precision);
void vlr_kernels_fill_avx2_int8(vlr_kernels *k);   /* gemm_i8 only */
void vlr_kernels_fill_avx512_vnni(vlr_kernels *k); /* gemm_i8 only */

#endif
