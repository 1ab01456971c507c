/* bench/gemm.c: GFLOP/s of vlreward's GEMM (y = x·Wᵀ, the kernel table's gemm slot) at the
 * Skywork-VL-Reward-7B shapes, optionally next to OpenBLAS and oneDNN sgemm in the same run.
 *
 * Build (from the repository root, after `make`):
 *   cc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -Iinclude -Isrc bench/gemm.c build/libvlreward.a \
 *      -o build/bench_gemm -lm
 * With the comparison libraries (Debian: apt-get install libopenblas-dev libdnnl-dev):
 *   cc -std=c11 -O2 -fopenmp -D_GNU_SOURCE -DWITH_OPENBLAS -DWITH_DNNL -Iinclude -Isrc \
 *      -I/usr/include/x86_64-linux-gnu/openblas-pthread bench/gemm.c build/libvlreward.a \
 *      -o build/bench_gemm -lopenblas -ldnnl -lm
 * Run: build/bench_gemm [--m 512,2048] [--threads 1,2] [--reps 5] [--shapes text|vision|all|small]
 *                       [--isa ref|avx2|avx512|avx512_bf16] [--f32] [--calibration]
 *      build/bench_gemm --attention [--threads 1,2] [--reps 3]   (the attention slot instead)
 *
 * Each cell is the median of --reps timed runs after one warm-up, as wall time and as process CPU
 * time (the machine may be shared: wall GFLOP/s fall when other work runs, CPU-time GFLOP/s per
 * thread much less so, but they count the libraries' spin-waiting threads too). Columns, per
 * precision: vlreward f32 and bf16 (the two gemm tables; weights read as bf16, the model's storage,
 * unless --f32), OpenBLAS sgemm and oneDNN sgemm (fp32 weights, their input type), and oneDNN's bf16
 * matmul primitive (bf16 x and W, fp32 output; W in its stored [n, k] layout, as ours, primitive
 * created outside the timing; x converted to bf16 outside the timing too, while ours converts inside).
 * --calibration: the one shape `vlreward bench` calibrates with, 1024 x 3584 x 18944, 2 threads.
 * The runs are interleaved (rep r of every column, then rep r+1) with a 20 ms pause before each, so
 * one library's spinning threads do not steal from the next. This is a benchmark, not a test: it
 * checks only that the columns of one precision agree on a checksum ('!'). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/exec.h"

#ifdef WITH_OPENBLAS
#include <cblas.h>
#endif
#ifdef WITH_DNNL
#include <oneapi/dnnl/dnnl.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct shape {
    const char *name;
    int n, k;
} shape;

/* "q+k+v": the int8 path runs q, k and v of one x as one call (vlr_exec_linears), which costs what one
 * product of their 4,608 outputs does; the float tables run them as three. */
static const shape text_shapes[] = {
    {"q/o proj", 3584, 3584}, {"k/v proj", 512, 3584}, {"q+k+v", 4608, 3584}, {"gate/up", 18944, 3584},
    {"down", 3584, 18944},
};
static const shape vision_shapes[] = {
    {"vis qkv", 3840, 1280},   {"vis proj", 1280, 1280},     {"vis gate/up", 3420, 1280},
    {"vis down", 1280, 3420},  {"merger fc1", 5120, 5120},   {"merger fc2", 3584, 5120},
    {"patch embed", 1280, 1176},
};

static double now_wall(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static double now_cpu(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}
static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One column of the table: a library in one precision. */
typedef enum column {
    COL_OURS_F32 = 0, COL_OURS_BF16, COL_OURS_I8, COL_OPENBLAS, COL_DNNL_F32, COL_DNNL_BF16, COL_DNNL_U8S8, N_COLS
} column;
static const char *col_names[] = {"vlreward f32", "vlreward bf16", "vlreward int8", "OpenBLAS f32",
                                  "oneDNN f32",   "oneDNN bf16",   "oneDNN u8s8s32"};

typedef struct problem {
    int m, n, k;
    const float *x;
    const uint16_t *x_bf16; /* x rounded, for oneDNN's bf16 matmul */
    const void *w_ours;     /* bf16 or f32 */
    vlr_dtype w_dtype;
    const float *w_f32;
    const uint16_t *w_bf16;
    const vlr_qweight *wq;  /* w_bf16 quantized, for our int8 column */
    const uint8_t *x_u8;    /* for oneDNN's u8s8 matmul: quantized outside its timing */
    const int8_t *w_s8;     /* [n, k] */
    float *y;
} problem;

#ifdef WITH_DNNL
/* oneDNN's matmul y [m, n] = x [m, k] · W [k, n], created outside the timing. bf16: bf16 x and W, fp32
 * y, W in its stored [n, k] layout (the "ba" layout of a k x n matrix), as ours. u8s8: u8 x, s8 W and
 * int32 y (no epilogue: an upper bound for a quantized layer), W reordered once into the layout the
 * primitive prefers ("any"), as ours is packed at load. */
typedef struct dnnl_mm {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_primitive_t prim;
    dnnl_memory_t src, wei, dst;
} dnnl_mm;

static bool dnnl_mm_init(dnnl_mm *d, const problem *p, bool u8s8) {
    memset(d, 0, sizeof *d);
    dnnl_memory_desc_t src_md, wei_md, dst_md, user_wei_md;
    dnnl_dims_t sd = {p->m, p->k}, wd = {p->k, p->n}, dd = {p->m, p->n};
    dnnl_matmul_desc_t md;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t user_wei = NULL;
    const dnnl_data_type_t xt = u8s8 ? dnnl_u8 : dnnl_bf16, wt = u8s8 ? dnnl_s8 : dnnl_bf16;
    bool ok = dnnl_engine_create(&d->engine, dnnl_cpu, 0) == dnnl_success &&
              dnnl_stream_create(&d->stream, d->engine, dnnl_stream_default_flags) == dnnl_success &&
              dnnl_memory_desc_init_by_tag(&src_md, 2, sd, xt, dnnl_ab) == dnnl_success &&
              dnnl_memory_desc_init_by_tag(&wei_md, 2, wd, wt, u8s8 ? dnnl_format_tag_any : dnnl_ba) == dnnl_success &&
              dnnl_memory_desc_init_by_tag(&user_wei_md, 2, wd, wt, dnnl_ba) == dnnl_success &&
              dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, u8s8 ? dnnl_s32 : dnnl_f32, dnnl_ab) == dnnl_success &&
              dnnl_matmul_desc_init(&md, &src_md, &wei_md, NULL, &dst_md) == dnnl_success &&
              dnnl_primitive_desc_create(&pd, &md, NULL, d->engine, NULL) == dnnl_success &&
              dnnl_primitive_create(&d->prim, pd) == dnnl_success &&
              dnnl_memory_create(&d->src, &src_md, d->engine, u8s8 ? (void *)p->x_u8 : (void *)p->x_bf16) == dnnl_success &&
              dnnl_memory_create(&d->dst, &dst_md, d->engine, p->y) == dnnl_success;
    if (ok && !u8s8) ok = dnnl_memory_create(&d->wei, &user_wei_md, d->engine, (void *)p->w_bf16) == dnnl_success;
    if (ok && u8s8) {
        const dnnl_memory_desc_t *pref = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        ok = pref && dnnl_memory_create(&d->wei, pref, d->engine, DNNL_MEMORY_ALLOCATE) == dnnl_success &&
             dnnl_memory_create(&user_wei, &user_wei_md, d->engine, (void *)p->w_s8) == dnnl_success &&
             dnnl_reorder_primitive_desc_create(&rpd, &user_wei_md, d->engine, pref, d->engine, NULL) == dnnl_success &&
             dnnl_primitive_create(&reorder, rpd) == dnnl_success;
        if (ok) {
            dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, user_wei}, {DNNL_ARG_TO, d->wei}};
            ok = dnnl_primitive_execute(reorder, d->stream, 2, args) == dnnl_success &&
                 dnnl_stream_wait(d->stream) == dnnl_success;
        }
    }
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (user_wei) dnnl_memory_destroy(user_wei);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return ok;
}

static void dnnl_mm_free(dnnl_mm *d) {
    if (d->src) dnnl_memory_destroy(d->src);
    if (d->wei) dnnl_memory_destroy(d->wei);
    if (d->dst) dnnl_memory_destroy(d->dst);
    if (d->prim) dnnl_primitive_destroy(d->prim);
    if (d->stream) dnnl_stream_destroy(d->stream);
    if (d->engine) dnnl_engine_destroy(d->engine);
}
#else
typedef int dnnl_mm;
#endif

/* ws: our kernels' workspace, kept across runs as a session keeps it */
/* kt: our tables in f32, bf16 and int8 precision; mm: oneDNN's bf16 and u8s8 matmuls */
static void run_once(column c, const vlr_kernels *kt, const problem *p, dnnl_mm *mm, int nt, vlr_workspace *ws) {
    (void)mm;
    switch (c) {
    case COL_OURS_F32:
    case COL_OURS_BF16:
    case COL_OURS_I8: {
        vlr_gemm_args a = {.y = p->y, .ldy = (size_t)p->n, .x = p->x, .ldx = (size_t)p->k,
                           .w = p->w_ours, .w_dtype = p->w_dtype, .m = p->m, .n = p->n, .k = p->k, .wq = p->wq};
        const vlr_kernels *k = &kt[c - COL_OURS_F32];
        const vlr_exec x = {.k = k, .n_threads = nt, .ws = ws};
        if (c == COL_OURS_I8) k->gemm_i8(&a, 1, &x);
        else k->gemm(&a, &x);
        break;
    }
    case COL_OPENBLAS:
#ifdef WITH_OPENBLAS
        openblas_set_num_threads(nt);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, p->m, p->n, p->k, 1.0f, p->x, p->k,
                    p->w_f32, p->k, 0.0f, p->y, p->n);
#endif
        break;
    case COL_DNNL_F32:
    case COL_DNNL_BF16:
    case COL_DNNL_U8S8:
#ifdef WITH_DNNL
#ifdef _OPENMP
        omp_set_num_threads(nt);
#endif
        if (c == COL_DNNL_F32) {
            dnnl_sgemm('N', 'T', p->m, p->n, p->k, 1.0f, p->x, p->k, p->w_f32, p->k, 0.0f, p->y, p->n);
        } else {
            const dnnl_mm *d = &mm[c == COL_DNNL_U8S8];
            dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, d->src}, {DNNL_ARG_WEIGHTS, d->wei}, {DNNL_ARG_DST, d->dst}};
            dnnl_primitive_execute(d->prim, d->stream, 3, args);
            dnnl_stream_wait(d->stream);
        }
#endif
        break;
    case N_COLS: break;
    }
}

static int parse_list(const char *s, int *out, int cap) {
    int n = 0;
    while (*s && n < cap) {
        out[n++] = atoi(s);
        s = strchr(s, ',');
        if (!s) break;
        s++;
    }
    return n;
}

/* --attention: the attention slot at the model's shapes, for every ISA the CPU has (the scalar
 * reference only at the smallest shape). FLOPs counted as 4·n_q·n_kv·hd·heads, halved when causal. */
static void bench_attention(int reps, const int *threads, int n_threads, vlr_workspace *ws) {
    typedef struct att_shape {
        const char *name;
        int n, heads, kv_heads, hd, causal;
        int windows; /* > 0: n rows in windows of 64, as `windows` calls (1) or one varlen call (2) */
    } att_shape;
    const att_shape shapes[] = {
        {"vision window", 64, 16, 16, 80, 0, 0},
        {"25 win, loop", 1600, 16, 16, 80, 0, 1}, {"25 win, varlen", 1600, 16, 16, 80, 0, 2},
        {"vision full", 1024, 16, 16, 80, 0, 0},
        {"vision full", 4096, 16, 16, 80, 0, 0}, {"text causal", 512, 28, 4, 128, 1, 0},
        {"text causal", 2048, 28, 4, 128, 1, 0},
    };
    printf("# attention: median of %d runs, GFLOP/s wall [CPU-time GFLOP/s per thread]\n", reps);
    printf("%-14s %5s %6s %4s %6s %3s %22s %22s %22s\n", "shape", "n", "heads", "hd", "causal", "thr",
           "ref", "avx2", "avx512");
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const att_shape *sh = &shapes[s];
        const size_t qw = (size_t)sh->heads * sh->hd, kw = (size_t)sh->kv_heads * sh->hd;
        float *q = malloc((size_t)sh->n * qw * sizeof(float)), *o = malloc((size_t)sh->n * qw * sizeof(float));
        float *k = malloc((size_t)sh->n * kw * sizeof(float)), *v = malloc((size_t)sh->n * kw * sizeof(float));
        if (!q || !o || !k || !v) {
            fprintf(stderr, "out of memory\n");
            exit(1);
        }
        uint64_t st = 0x9876543ull;
        for (size_t i = 0; i < (size_t)sh->n * qw; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            q[i] = (float)((st >> 40) & 0xffff) / 16384.0f - 2.0f;
        }
        for (size_t i = 0; i < (size_t)sh->n * kw; i++) {
            st = st * 6364136223846793005ull + 1442695040888963407ull;
            k[i] = (float)((st >> 40) & 0xffff) / 32768.0f - 1.0f;
            v[i] = (float)((st >> 20) & 0xffff) / 32768.0f - 1.0f;
        }
        vlr_attention_args a = {.out = o, .ld_out = qw, .q = q, .ld_q = qw, .k = k, .v = v, .ld_kv = kw,
                                .n_q = sh->n, .n_kv = sh->n, .n_heads = sh->heads,
                                .n_kv_heads = sh->kv_heads, .head_dim = sh->hd,
                                .causal_offset = sh->causal ? 0 : -1, .scale = 1.0f / sqrtf((float)sh->hd)};
        int32_t cu[65];
        const int n_win = sh->windows ? sh->n / 64 : 0;
        for (int i = 0; i <= n_win; i++) cu[i] = 64 * i;
        if (sh->windows == 2) a.cu_seqlens = cu, a.n_seqs = n_win;
        const double flops = sh->windows ? 4.0 * 64 * 64 * sh->hd * sh->heads * n_win
                                         : 4.0 * sh->n * (double)sh->n * sh->hd * sh->heads * (sh->causal ? 0.5 : 1.0);
        for (int ti = 0; ti < n_threads; ti++) {
            printf("%-14s %5d %3d/%-2d %4d %6d %3d", sh->name, sh->n, sh->heads, sh->kv_heads, sh->hd,
                   sh->causal, threads[ti]);
            for (int isa = VLR_ISA_REF; isa <= VLR_ISA_AVX512; isa++) {
                vlr_kernels kt;
                if (vlr_kernels_select(&kt, (vlr_isa)isa, VLR_PRECISION_F32) != (vlr_isa)isa ||
                    (isa == VLR_ISA_REF && sh->n > 512)) {
                    printf(" %22s", "-");
                    continue;
                }
                double wall[100], cpu[100];
                const vlr_exec x = {.k = &kt, .n_threads = threads[ti], .ws = ws};
                for (int r = -1; r < reps; r++) { /* r = -1: warm-up */
                    const double w0 = now_wall(), c0 = now_cpu();
                    if (sh->windows == 1) { /* one call per window */
                        for (int wi = 0; wi < n_win; wi++) {
                            vlr_attention_args one = a;
                            one.n_q = one.n_kv = 64;
                            one.q += (size_t)64 * wi * qw, one.out += (size_t)64 * wi * qw;
                            one.k += (size_t)64 * wi * kw, one.v += (size_t)64 * wi * kw;
                            kt.attention(&one, &x);
                        }
                    } else {
                        kt.attention(&a, &x);
                    }
                    if (r >= 0) wall[r] = now_wall() - w0, cpu[r] = now_cpu() - c0;
                }
                qsort(wall, reps, sizeof(double), cmp_double);
                qsort(cpu, reps, sizeof(double), cmp_double);
                printf(" %9.1f [%6.1f/thr]", flops / wall[reps / 2] * 1e-9, flops / cpu[reps / 2] * 1e-9);
            }
            printf("\n");
            fflush(stdout);
        }
        free(q), free(o), free(k), free(v);
    }
}

int main(int argc, char **argv) {
#ifdef WITH_OPENBLAS
    /* OpenBLAS 0.3.21 picks its kernels at load time and does not know Sapphire Rapids: ask for the
     * SkylakeX (AVX-512) kernels, which means re-executing with the variable set. */
    if (!getenv("OPENBLAS_CORETYPE")) {
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
        execv("/proc/self/exe", argv);
    }
#endif
    int ms[16] = {512}, n_ms = 1, threads[8] = {1, 2}, n_threads = 2, reps = 5;
    const char *which = "all";
    vlr_isa isa = VLR_ISA_AUTO;
    bool f32 = false, attention = false, calibration = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--m") && i + 1 < argc) n_ms = parse_list(argv[++i], ms, 16);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) n_threads = parse_list(argv[++i], threads, 8);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--shapes") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--f32")) f32 = true;
        else if (!strcmp(argv[i], "--attention")) attention = true;
        else if (!strcmp(argv[i], "--calibration")) calibration = true;
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            const char *v = argv[++i];
            isa = !strcmp(v, "ref") ? VLR_ISA_REF : !strcmp(v, "avx2") ? VLR_ISA_AVX2
                : !strcmp(v, "avx512") ? VLR_ISA_AVX512 : VLR_ISA_AVX512_BF16;
        } else {
            fprintf(stderr, "usage: %s [--m 512,2048] [--threads 1,2] [--reps 5] "
                            "[--shapes text|vision|all|small] [--isa ref|avx2|avx512|avx512_bf16] [--f32] "
                            "[--attention] [--calibration]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || reps > 100) reps = 5;
    if (attention) {
        vlr_workspace *ws = vlr_workspace_new(0);
        bench_attention(reps, threads, n_threads, ws);
        vlr_workspace_free(ws);
        return 0;
    }
    shape list[16];
    int n_shapes = 0;
    if (!strcmp(which, "small")) { /* the q/o shape at small m */
        list[n_shapes++] = text_shapes[0];
        list[n_shapes++] = vision_shapes[0];
        if (n_ms == 1 && ms[0] == 512) {
            const int small[] = {1, 4, 16, 64};
            n_ms = 4;
            memcpy(ms, small, sizeof small);
        }
    }
    if (calibration) { /* vlreward bench's calibration GEMM */
        list[n_shapes++] = (shape){"calibration", 18944, 3584};
        ms[0] = 1024, n_ms = 1, threads[0] = 2, n_threads = 1;
        which = "";
    }
    if (!strcmp(which, "text") || !strcmp(which, "all"))
        for (size_t i = 0; i < sizeof text_shapes / sizeof *text_shapes; i++) list[n_shapes++] = text_shapes[i];
    if (!strcmp(which, "vision") || !strcmp(which, "all"))
        for (size_t i = 0; i < sizeof vision_shapes / sizeof *vision_shapes; i++) list[n_shapes++] = vision_shapes[i];

    vlr_workspace *ws = vlr_workspace_new(0); /* NULL (no memory): each call allocates its own */
    vlr_kernels kt[3]; /* f32, bf16, int8 precision */
    vlr_kernels_select(&kt[0], isa, VLR_PRECISION_F32);
    vlr_kernels_select(&kt[1], isa, VLR_PRECISION_BF16);
    vlr_kernels_select(&kt[2], isa, VLR_PRECISION_INT8);
    column cols[N_COLS] = {COL_OURS_F32, COL_OURS_BF16, COL_OURS_I8};
    int n_cols = 3;
#ifdef WITH_OPENBLAS
    cols[n_cols++] = COL_OPENBLAS;
#endif
#ifdef WITH_DNNL
    cols[n_cols++] = COL_DNNL_F32;
    cols[n_cols++] = COL_DNNL_BF16;
    cols[n_cols++] = COL_DNNL_U8S8;
#endif
    printf("# vlreward gemm (%s / %s / %s, weights %s); median of %d runs; GFLOP/s (int8: GOP/s) wall "
           "[CPU-time per thread]\n", kt[0].isa, kt[1].isa, kt[2].isa_i8, f32 ? "f32" : "bf16", reps);
    printf("%-12s %6s %6s %6s %3s", "shape", "m", "n", "k", "thr");
    for (int c = 0; c < n_cols; c++) printf(" %24s", col_names[cols[c]]);
    printf("\n");

    for (int s = 0; s < n_shapes; s++)
        for (int mi = 0; mi < n_ms; mi++) {
            const int m = ms[mi], n = list[s].n, k = list[s].k;
            float *x = malloc((size_t)m * k * sizeof(float));
            float *wf = malloc((size_t)n * k * sizeof(float));
            uint16_t *wb = malloc((size_t)n * k * sizeof(uint16_t));
            float *y = malloc((size_t)m * n * sizeof(float));
            uint16_t *xb = malloc((size_t)m * k * sizeof(uint16_t));
            uint8_t *xu = malloc((size_t)m * k);
            int8_t *ws8 = malloc((size_t)n * k);
            if (!x || !wf || !wb || !y || !xb || !xu || !ws8) {
                fprintf(stderr, "out of memory at %s m=%d\n", list[s].name, m);
                return 1;
            }
            uint64_t st = 0x1234567ull;
            for (size_t i = 0; i < (size_t)m * k; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                x[i] = (float)((st >> 40) & 0xffff) / 32768.0f - 1.0f;
                xb[i] = vlr_f32_to_bf16(x[i]);
                xu[i] = (uint8_t)(128 + lrintf(127.0f * x[i]));
            }
            for (size_t i = 0; i < (size_t)n * k; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                wb[i] = vlr_f32_to_bf16(((float)((st >> 40) & 0xffff) / 32768.0f - 1.0f) * 0.03f);
                wf[i] = vlr_bf16_to_f32(wb[i]);
                ws8[i] = (int8_t)lrintf(wf[i] * (127.0f / 0.03f));
            }
            vlr_qweight q;
            vlr_err err = {0};
            if (vlr_qweight_quantize(&q, wb, VLR_DT_BF16, n, k, threads[n_threads - 1], &err)) {
                fprintf(stderr, "int8 weights: %s\n", err.msg);
                return 1;
            }
            problem p = {m, n, k, x, xb, f32 ? (const void *)wf : (const void *)wb,
                         f32 ? VLR_DT_F32 : VLR_DT_BF16, wf, wb, &q, xu, ws8, y};
            dnnl_mm mm[2];
#ifdef WITH_DNNL
            if (!dnnl_mm_init(&mm[0], &p, false) || !dnnl_mm_init(&mm[1], &p, true)) {
                fprintf(stderr, "oneDNN matmul: setup failed at %s m=%d\n", list[s].name, m);
                return 1;
            }
#endif
            const double flops = 2.0 * m * n * k;
            for (int ti = 0; ti < n_threads; ti++) {
                const int nt = threads[ti];
                printf("%-12s %6d %6d %6d %3d", list[s].name, m, n, k, nt);
                /* interleaved: rep r of every library, then rep r+1, so a burst of other work on
                 * the machine hits all of them alike */
                double wall[N_COLS][100], cpu[N_COLS][100], check[N_COLS] = {0};
                for (int c = 0; c < n_cols; c++) run_once(cols[c], kt, &p, mm, nt, ws); /* warm-up */
                for (int r = 0; r < reps; r++)
                    for (int c = 0; c < n_cols; c++) {
                        usleep(20000); /* the previous library's workers stop spinning */
                        const double w0 = now_wall(), c0 = now_cpu();
                        run_once(cols[c], kt, &p, mm, nt, ws);
                        wall[c][r] = now_wall() - w0;
                        cpu[c][r] = now_cpu() - c0;
                        if (r == 0)
                            for (size_t i = 0; i < (size_t)m * n; i += 97) check[c] += y[i];
                    }
                for (int c = 0; c < n_cols; c++) {
                    qsort(wall[c], reps, sizeof(double), cmp_double);
                    qsort(cpu[c], reps, sizeof(double), cmp_double);
                    /* against the first column of the same precision (bf16 rounding moves sums); the
                     * int8 columns have no partner (oneDNN's takes other inputs, gives integers) */
                    const bool int8 = cols[c] == COL_OURS_I8 || cols[c] == COL_DNNL_U8S8;
                    const double want = int8 ? check[c] : check[cols[c] == COL_OURS_BF16 || cols[c] == COL_DNNL_BF16];
                    const bool agree = int8 || fabs(check[c] - want) <= 1e-3 * (fabs(want) + 1.0);
                    printf(" %9.1f [%6.1f/thr]%s    ", flops / wall[c][reps / 2] * 1e-9,
                           flops / cpu[c][reps / 2] * 1e-9, agree ? " " : "!");
                }
                printf("\n");
                fflush(stdout);
            }
#ifdef WITH_DNNL
            dnnl_mm_free(&mm[0]);
            dnnl_mm_free(&mm[1]);
#endif
            vlr_qweight_free(&q);
            free(xu);
            free(ws8);
            free(x);
            free(xb);
            free(wf);
            free(wb);
            free(y);
        }
    vlr_workspace_free(ws);
    return 0;
}
