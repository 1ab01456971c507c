/* cmd_bench.c: `vlreward bench`: times the vision tower, the text prefill and a whole request at the
 * real Qwen2.5-VL-7B shapes (or a --config's) with random bf16 weights built in memory
 * (src/bench_model.h), next to a calibration fp32 GEMM through the same kernel table, and reports
 * ms, tokens/s, achieved GFLOP/s, the ratio to the calibration rate and the peak RSS.
 *
 * --layers N runs only the first N decoder layers and N vision blocks and scales the whole-model
 * figures to the full depth: the text time by L/N (its layers are identical; the value head of one
 * token is negligible), the vision time as fixed + blocks·(FLOPs of all blocks / FLOPs of the blocks
 * run), the fixed part (patch embedding, merger, reordering) being measured by a run with no block.
 * Not here: accuracy (tests/), the kernel micro-benchmarks (bench/README.md, kernel table). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_flops.h"
#include "bench_model.h"
#include "cli.h"
#include "internal.h"

static const char help[] =
    "usage: vlreward bench [--config FILE] [--image-size WxH] [--tokens N,N,...] [--repeat N]\n"
    "                      [--threads N] [--precision P[,P...]] [--layers N] [--group N] [--json]\n"
    "\n"
    "Times the model at full Qwen2.5-VL-7B size with deterministic random bf16 weights built in\n"
    "memory (no files; about 15 GB, plus the 1.09 GB embedding table of which only the rows used are\n"
    "written): the vision tower on one image, the text prefill at each length (positions 0..n-1), a\n"
    "whole request (one image + 200 text tokens: vision, embedding, prefill), and a calibration\n"
    "GEMM (bf16 weights, like the model's) through the same kernel table. Each figure is the median of --repeat runs.\n"
    "\n"
    "  --config FILE      config.json of other shapes (default: the built-in Qwen2.5-VL-7B shapes)\n"
    "  --image-size WxH   image size before smart_resize (factor patch*merge, default 640x480 ->\n"
    "                     644x476 -> 34x46 patches)\n"
    "  --tokens LIST      prefill lengths, comma-separated (default 512,1024,2048)\n"
    "  --repeat N         runs per figure, median reported (default 3)\n"
    "  --threads N        threads (default: all CPUs)\n"
    "  --precision P      auto (default: bf16 where this CPU runs it faster), f32, bf16 or int8; a list\n"
    "                     (bf16,int8) runs each on the same model in turn (int8 last) and ends with\n"
    "                     the tokens/s ratios of each to the first\n"
    "  --layers N         run the first N decoder layers and N vision blocks (full-attention block\n"
    "                     indexes below N kept) and scale the whole-model figures to the full depth\n"
    "  --group N          also time best-of-N: one image + a 50-token question + N answers of 100\n"
    "                     tokens, scored as one group (vision and prompt once, the other answers\n"
    "                     one batched suffix prefill against the prompt's KV cache) and as N\n"
    "                     independent uncached requests; reports both and the speedup (2..1024)\n"
    "  --calibration MxKxN  calibration GEMM size, m x k x n (default 1024x3584x18944)\n"
    "  --seed N           weight / input seed (default 1)\n"
    "  --json             print one JSON object instead of the table\n"
    "\n"
    "FLOP counting (GFLOP/s = counted FLOPs / time): 2*m*n*k for every matrix product (patch\n"
    "embedding, qkv/q/k/v, proj/o, gate, up, down, merger fc1/fc2), plus 2*2*n_q*n_kv_visible*head_dim\n"
    "per head for attention (q.k and p.v), n_q*n_kv_visible being the (query, key) pairs allowed:\n"
    "window size squared per window, frame size squared for full-attention blocks, n(n+1)/2 for the\n"
    "causal prefill. Norms, RoPE, activations, softmax and the value head are not counted. The\n"
    "calibration GEMM counts 2*m*n*k. tokens/s: vision output (merged) tokens, prefill and request\n"
    "sequence tokens. Peak RSS: getrusage ru_maxrss after the stage (the process's peak so far).\n"
    "\n"
    "exit status: 0 success, 1 a run failed (out of memory, ...), 2 usage error\n";

#define MAX_LENGTHS 16
#define REQUEST_TEXT_TOKENS 200
#define REQUEST_PREFIX_TOKENS 19 /* text before <|vision_start|>, like the system turn */
#define GROUP_QUESTION_TOKENS 50 /* --group: text after the image, before the answers */
#define GROUP_ANSWER_TOKENS 100

typedef struct bench_opts {
    const char *config_path;
    int image_w, image_h;
    int lengths[MAX_LENGTHS];
    int n_lengths;
    int repeat, threads, layers;
    int cal_m, cal_k, cal_n;
    uint64_t seed;
    vlr_precision precisions[4]; /* run one after the other on the same model; int8 (if asked) last */
    int n_precisions;
    int group;                   /* --group N: answers per group, 0 = no group figure */
    bool json;
} bench_opts;

/* One reported figure: time of the whole model (scaled when --layers cut it) and what it did. */
typedef struct stage {
    double ms, flops;
    size_t tokens;
    long long peak_rss;
} stage;

static long long peak_rss_bytes(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (long long)ru.ru_maxrss * 1024; /* Linux: kilobytes */
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "A x B" or "AxBxC" into n positive ints. */
static bool parse_dims(const char *s, int n, long hi, int *out) {
    char buf[64];
    if (strlen(s) >= sizeof buf) return false;
    strcpy(buf, s);
    char *p = buf;
    for (int i = 0; i < n; i++) {
        char *x = i + 1 < n ? strchr(p, 'x') : NULL;
        if (i + 1 < n && !x) return false;
        if (x) *x = '\0';
        long v;
        if (!cli_parse_int(p, 1, hi, &v)) return false;
        out[i] = (int)v;
        p = x ? x + 1 : p;
    }
    return true;
}

static bool parse_lengths(const char *s, bench_opts *o) {
    char buf[256];
    if (strlen(s) >= sizeof buf) return false;
    strcpy(buf, s);
    o->n_lengths = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        long v;
        if (o->n_lengths == MAX_LENGTHS || !cli_parse_int(tok, 1, 1L << 20, &v)) return false;
        o->lengths[o->n_lengths++] = (int)v;
    }
    return o->n_lengths > 0;
}

/* /proc/meminfo MemAvailable in bytes, or 0 when unknown. */
static unsigned long long mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return kb * 1024;
}

static void cpu_model(char *out, size_t cap) {
    snprintf(out, cap, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, cap, "%s", v);
        out[strcspn(out, "\n")] = '\0';
        break;
    }
    fclose(f);
}

/* Everything a run shares. */
typedef struct bench {
    const bench_opts *o;
    vlr_config full;        /* the shapes reported */
    vlr_bench_model model;  /* the shapes run (full or cut), with their weights */
    vlr_kernels k;
    vlr_exec exec;          /* k, the thread count and a workspace, as a session has */
    vlr_err err;
    vlr_grid_thw grid;
    int resized_w, resized_h;
    float *pixels;          /* [patches, patch_dim] */
    float *vision_out;      /* [vision tokens, D] */
    size_t n_vision;        /* merged tokens of the image */
    double vision_ratio;    /* FLOPs of all blocks / of the blocks run (1 when not cut) */
    double text_ratio;      /* full layers / layers run */
    double vision_fixed_s;  /* time of the vision tower without blocks (only when cut) */
    vlr_text_state *text;
    int32_t *prefill_ids;   /* [max length] */
    int32_t *prefill_pos;   /* [3][max_n] positions 0..max_n-1 */
    size_t max_n;           /* the longest prefill length */
    float *embeds;          /* [max(max length, request length), D] */
    int32_t *request_ids, *request_pos;
    size_t request_n;
    vlr_prepared_image image; /* points at pixels: the request's one image, as vlr_forward takes it */
    int32_t *group_ids;     /* --group: [group][group_n] prompt + answer k (the prompt the same in each) */
    int32_t *group_pos;     /* [3][group_n] the same positions for every answer */
    size_t group_n, group_prompt_n;
    int32_t *suffix_ids;    /* [group - 1][answer tokens] answers 1.. after the prompt, stacked */
    int32_t *suffix_pos;    /* [3][(group - 1) * answer tokens] their positions in the same rows */
    size_t *suffix_len;     /* [group - 1] */
    double *times;          /* [repeat] */
} bench;

/* The calibration GEMM: y [m, n] = x [m, k] · wᵀ, bf16 weights (as the model's), through the kernel
 * table of the precision measured. */
static vlr_status run_calibration(bench *b, stage *st) {
    const bench_opts *o = b->o;
    vlr_status rc = VLR_OK;
    size_t nx, nw, ny;
    float *x = NULL, *w = NULL, *y = NULL;
    if (!vlr_mul_ok((size_t)o->cal_m, (size_t)o->cal_k, &nx) || !vlr_mul_ok((size_t)o->cal_n, (size_t)o->cal_k, &nw) ||
        !vlr_mul_ok((size_t)o->cal_m, (size_t)o->cal_n, &ny) || !vlr_mul_ok(nw, sizeof(float), &nw) ||
        !vlr_mul_ok(nx, sizeof(float), &nx) || !vlr_mul_ok(ny, sizeof(float), &ny))
        return vlr_fail(&b->err, VLR_ERR_LIMIT, "calibration GEMM %dx%dx%d is too large", o->cal_m, o->cal_k, o->cal_n);
    x = vlr_malloc(nx, &b->err);
    w = x ? vlr_malloc(nw, &b->err) : NULL;
    y = w ? vlr_malloc(ny, &b->err) : NULL;
    if (!y) {
        rc = VLR_ERR_NOMEM;
        vlr_err_prefix(&b->err, "calibration GEMM: ");
        goto done;
    }
    vlr_bench_fill_f32(x, nx / sizeof(float), o->seed, 1, 0.0f, 1.0f, o->threads);
    vlr_bench_fill_f32(w, nw / sizeof(float), o->seed, 2, 0.0f, (float)(1.0 / sqrt(o->cal_k)), o->threads);
    uint16_t *w_bf16 = (uint16_t *)w; /* narrowed in place: element i moves from byte 4i to 2i */
    for (size_t i = 0; i < nw / sizeof(float); i++) w_bf16[i] = vlr_f32_to_bf16(w[i]);
    vlr_gemm_args a = {.y = y, .ldy = (size_t)o->cal_n, .x = x, .ldx = (size_t)o->cal_k, .w = w_bf16,
                       .w_dtype = VLR_DT_BF16, .bias = NULL, .bias_dtype = VLR_DT_F32,
                       .m = o->cal_m, .n = o->cal_n, .k = o->cal_k, .accumulate = false};
    /* int8: the weights quantized first, as at load (not timed), then gemm_i8 */
    vlr_qweight q = {0};
    const bool int8 = b->k.precision == VLR_PRECISION_INT8;
    if (int8 && (rc = vlr_qweight_quantize(&q, w_bf16, VLR_DT_BF16, o->cal_n, o->cal_k, o->threads, &b->err)))
        goto done;
    a.wq = int8 ? &q : NULL;
    for (int r = 0; r < o->repeat; r++) {
        const double t0 = vlr_now();
        if (int8) b->k.gemm_i8(&a, 1, &b->exec);
        else b->k.gemm(&a, &b->exec);
        b->times[r] = vlr_now() - t0;
    }
    vlr_qweight_free(&q);
    st->ms = 1e3 * median(b->times, o->repeat);
    st->flops = 2.0 * o->cal_m * (double)o->cal_n * o->cal_k;
    st->tokens = (size_t)o->cal_m;
    st->peak_rss = peak_rss_bytes();
done:
    free(x);
    free(w);
    free(y);
    return rc;
}

/* The vision tower of the run config, or of it without blocks (no_blocks). */
static vlr_status vision_once(bench *b, bool no_blocks, double *seconds) {
    vlr_config cfg = b->model.cfg;
    if (no_blocks) {
        cfg.vision.depth = 0;
        cfg.vision.n_fullatt = 0;
    }
    const double t0 = vlr_now();
    vlr_status rc = vlr_vision_forward(&cfg, &b->model.w.vision, &b->exec, b->pixels, b->grid, b->vision_out,
                                       &b->err);
    *seconds = vlr_now() - t0;
    return rc;
}

/* Whole-model vision time from a measured one: fixed + blocks scaled by their FLOPs. */
static double vision_scaled(const bench *b, double seconds) {
    if (b->vision_ratio == 1.0) return seconds;
    const double blocks = seconds > b->vision_fixed_s ? seconds - b->vision_fixed_s : 0.0;
    return b->vision_fixed_s + blocks * b->vision_ratio;
}

static vlr_status run_vision(bench *b, stage *st) {
    vlr_status rc = VLR_OK;
    const int rep = b->o->repeat;
    if (b->vision_ratio != 1.0) {
        for (int r = 0; r < rep; r++)
            if ((rc = vision_once(b, true, &b->times[r]))) return rc;
        b->vision_fixed_s = median(b->times, rep);
    }
    for (int r = 0; r < rep; r++) {
        double s;
        if ((rc = vision_once(b, false, &s))) return rc;
        b->times[r] = vision_scaled(b, s);
    }
    st->ms = 1e3 * median(b->times, rep);
    st->flops = vlr_bench_vision_flops(&b->full, b->grid);
    st->tokens = b->n_vision;
    st->peak_rss = peak_rss_bytes();
    return rc;
}

static vlr_status run_prefill(bench *b, size_t n, stage *st) {
    vlr_status rc = VLR_OK;
    if ((rc = vlr_text_embed(&b->model.cfg, &b->model.w.text, b->prefill_ids, n, NULL, 0, b->embeds, &b->err)))
        return rc;
    for (int r = 0; r < b->o->repeat; r++) {
        double score;
        vlr_text_truncate(b->text, 0);
        const double t0 = vlr_now();
        rc = vlr_text_prefill(b->text, b->embeds, b->prefill_pos, b->max_n, n, &score, &b->err);
        b->times[r] = (vlr_now() - t0) * b->text_ratio;
        if (rc) return rc;
        if (!isfinite(score)) fprintf(stderr, "vlreward bench: warning: prefill of %zu tokens gave a non-finite value\n", n);
    }
    st->ms = 1e3 * median(b->times, b->o->repeat);
    st->flops = vlr_bench_text_flops(&b->full, 0, n);
    st->tokens = n;
    st->peak_rss = peak_rss_bytes();
    return rc;
}

/* One forward of ids (its image placeholders from REQUEST_PREFIX_TOKENS + 1 on) from token `start`,
 * whose KV rows [0, start) the text state holds; returns the whole-model time, each part scaled as in
 * its stage. */
static vlr_status forward_once(bench *b, const int32_t *ids, const int32_t *pos, size_t n, size_t start,
                               double *seconds) {
    const size_t image_start = REQUEST_PREFIX_TOKENS + 1;
    const vlr_forward_seq seq = {.ids = ids, .positions = pos, .n = n, .start = start, .n_images = 1,
                                 .images = &b->image, .image_start = &image_start, .image_rows = &b->n_vision,
                                 .vision = b->vision_out};
    vlr_forward_times t;
    double score;
    vlr_text_truncate(b->text, start);
    vlr_status rc = vlr_forward(&b->model.cfg, &b->model.w, &b->exec, b->text, &seq, &score, &t, &b->err);
    *seconds = vision_scaled(b, t.vision_s) + t.embed_s + t.decoder_s * b->text_ratio;
    return rc;
}

/* Answers 1.. of the group as one batch of suffixes after the prompt (as vlr_score_answers runs
 * them); the text state holds answer 0's sequence. */
static vlr_status forward_suffixes(bench *b, double *seconds) {
    const size_t n_rest = (size_t)b->o->group - 1;
    double *scores = vlr_malloc(n_rest * sizeof *scores, &b->err);
    vlr_forward_times t = {0};
    if (!scores) return VLR_ERR_NOMEM;
    vlr_text_truncate(b->text, b->group_prompt_n);
    vlr_status rc = vlr_forward_suffixes(&b->model.cfg, &b->model.w, b->text, b->suffix_ids, b->suffix_pos,
                                         n_rest * GROUP_ANSWER_TOKENS, b->suffix_len, n_rest, scores, &t, &b->err);
    *seconds = t.embed_s + t.decoder_s * b->text_ratio;
    free(scores);
    return rc;
}

/* One image + REQUEST_TEXT_TOKENS text tokens through vlr_forward from an empty cache: vision tower,
 * embedding with the image rows scattered, prefill, value head. */
static vlr_status run_request(bench *b, stage *st) {
    vlr_status rc = VLR_OK;
    const size_t n = b->request_n;
    for (int r = 0; r < b->o->repeat; r++)
        if ((rc = forward_once(b, b->request_ids, b->request_pos, n, 0, &b->times[r]))) return rc;
    st->ms = 1e3 * median(b->times, b->o->repeat);
    st->flops = vlr_bench_vision_flops(&b->full, b->grid) + vlr_bench_text_flops(&b->full, 0, n);
    st->tokens = n;
    st->peak_rss = peak_rss_bytes();
    return rc;
}

/* --group N: the N answers as one group (the first from an empty cache, the others one batch of
 * suffixes after the prompt's cached KV rows, no vision) and as N requests from an empty cache each. */
typedef struct group_result {
    double group_ms, separate_ms;
} group_result;

static vlr_status run_group(bench *b, group_result *out) {
    const int n_answers = b->o->group, rep = b->o->repeat;
    vlr_status rc = VLR_OK;
    double *separate = vlr_calloc((size_t)rep, sizeof *separate, &b->err);
    if (!separate) return VLR_ERR_NOMEM;
    for (int r = 0; r < rep && !rc; r++) {
        double group_s = 0, separate_s = 0, s;
        rc = forward_once(b, b->group_ids, b->group_pos, b->group_n, 0, &s); /* answer 0: the request */
        group_s += s;
        if (!rc && (rc = forward_suffixes(b, &s)) == VLR_OK) group_s += s;    /* the others in one batch */
        for (int k = 0; k < n_answers && !rc; k++) {
            rc = forward_once(b, b->group_ids + (size_t)k * b->group_n, b->group_pos, b->group_n, 0, &s);
            separate_s += s;
        }
        b->times[r] = group_s;
        separate[r] = separate_s;
    }
    if (!rc) {
        out->group_ms = 1e3 * median(b->times, rep);
        out->separate_ms = 1e3 * median(separate, rep);
    }
    free(separate);
    return rc;
}

/* --group: the prompt (the request's head up to its image, then GROUP_QUESTION_TOKENS) and an
 * answer of GROUP_ANSWER_TOKENS of its own after it, for each of the group's answers. */
static vlr_status prepare_group(bench *b) {
    const vlr_config *cfg = &b->model.cfg;
    const int32_t pad = cfg->tokens.image_pad;
    const size_t head = REQUEST_PREFIX_TOKENS + 2 + b->n_vision, n_answers = (size_t)b->o->group;
    b->group_prompt_n = head + GROUP_QUESTION_TOKENS;
    b->group_n = b->group_prompt_n + GROUP_ANSWER_TOKENS;
    b->group_ids = vlr_calloc(n_answers * b->group_n, sizeof(int32_t), &b->err);
    b->group_pos = vlr_calloc(3 * b->group_n, sizeof(int32_t), &b->err);
    if (!b->group_ids || !b->group_pos) return VLR_ERR_NOMEM;
    for (size_t k = 0; k < n_answers; k++) {
        int32_t *ids = b->group_ids + k * b->group_n;
        memcpy(ids, b->request_ids, head * sizeof *ids);
        vlr_bench_random_ids(b->o->seed + 2, GROUP_QUESTION_TOKENS, cfg->text.vocab_size, pad, ids + head);
        vlr_bench_random_ids(b->o->seed + 3 + k, GROUP_ANSWER_TOKENS, cfg->text.vocab_size, pad,
                             ids + b->group_prompt_n);
        vlr_bench_model_fill_embed_rows(&b->model, ids, b->group_n);
    }
    int64_t delta;
    vlr_status rc = vlr_rope_positions(b->group_ids, b->group_n, pad, &b->grid, 1, cfg->vision.spatial_merge_size,
                                       b->group_pos, &delta, &b->err);
    const size_t n_rest = n_answers - 1, rows = n_rest * GROUP_ANSWER_TOKENS;
    b->suffix_ids = vlr_calloc(rows ? rows : 1, sizeof(int32_t), &b->err);
    b->suffix_pos = vlr_calloc(3 * (rows ? rows : 1), sizeof(int32_t), &b->err);
    b->suffix_len = vlr_calloc(n_rest ? n_rest : 1, sizeof(size_t), &b->err);
    if (!b->suffix_ids || !b->suffix_pos || !b->suffix_len) return VLR_ERR_NOMEM;
    for (size_t k = 0; k < n_rest; k++) {
        const size_t at = k * GROUP_ANSWER_TOKENS;
        b->suffix_len[k] = GROUP_ANSWER_TOKENS;
        memcpy(b->suffix_ids + at, b->group_ids + (k + 1) * b->group_n + b->group_prompt_n,
               GROUP_ANSWER_TOKENS * sizeof(int32_t));
        for (size_t c = 0; c < 3; c++)
            memcpy(b->suffix_pos + c * rows + at, b->group_pos + c * b->group_n + b->group_prompt_n,
                   GROUP_ANSWER_TOKENS * sizeof(int32_t));
    }
    return rc;
}

/* Token ids and positions of the prefill lengths and of the request; embedding rows they use. */
static vlr_status prepare_inputs(bench *b, size_t max_n) {
    const vlr_config *cfg = &b->model.cfg;
    const size_t D = (size_t)cfg->text.hidden_size;
    vlr_err *e = &b->err;
    const int32_t vocab = cfg->text.vocab_size, pad = cfg->tokens.image_pad;
    b->request_n = REQUEST_TEXT_TOKENS + b->n_vision;
    b->max_n = max_n;
    const size_t rows = max_n > b->request_n ? max_n : b->request_n;
    size_t bytes;
    if (!vlr_mul_ok(rows, D * sizeof(float), &bytes))
        return vlr_fail(e, VLR_ERR_LIMIT, "%zu tokens of %zu floats are too many", rows, D);
    b->embeds = vlr_malloc(bytes, e);
    b->prefill_ids = vlr_calloc(max_n, sizeof(int32_t), e);
    b->prefill_pos = vlr_calloc(3 * max_n, sizeof(int32_t), e);
    b->request_ids = vlr_calloc(b->request_n, sizeof(int32_t), e);
    b->request_pos = vlr_calloc(3 * b->request_n, sizeof(int32_t), e);
    if (!b->embeds || !b->prefill_ids || !b->prefill_pos || !b->request_ids || !b->request_pos)
        return VLR_ERR_NOMEM;
    vlr_bench_random_ids(b->o->seed, max_n, vocab, pad, b->prefill_ids);
    for (size_t c = 0; c < 3; c++)
        for (size_t i = 0; i < max_n; i++) b->prefill_pos[c * max_n + i] = (int32_t)i;

    /* text, <|vision_start|>, image pads, <|vision_end|>, text: REQUEST_TEXT_TOKENS non-image ids */
    int32_t *ids = b->request_ids;
    vlr_bench_random_ids(b->o->seed + 1, b->request_n, vocab, pad, ids);
    size_t at = REQUEST_PREFIX_TOKENS;
    ids[at++] = cfg->tokens.vision_start;
    for (size_t i = 0; i < b->n_vision; i++) ids[at++] = pad;
    ids[at++] = cfg->tokens.vision_end;
    int64_t delta;
    vlr_status rc = vlr_rope_positions(ids, b->request_n, pad, &b->grid, 1, cfg->vision.spatial_merge_size,
                                       b->request_pos, &delta, e);
    if (rc) return rc;
    vlr_bench_model_fill_embed_rows(&b->model, b->prefill_ids, max_n);
    vlr_bench_model_fill_embed_rows(&b->model, ids, b->request_n);
    return b->o->group ? prepare_group(b) : VLR_OK;
}

/* ---- output -------------------------------------------------------------------------------- */

static double gflops(const stage *s) { return s->ms > 0 ? s->flops / (s->ms * 1e6) : 0.0; }
static double per_s(const stage *s) { return s->ms > 0 ? (double)s->tokens / (s->ms * 1e-3) : 0.0; }

static void json_num(vlr_jw *w, const char *key, double v, int digits) {
    vlr_jw_key(w, key);
    vlr_jw_fixed(w, v, digits);
}

/* The members of one stage's object. */
static void json_stage(vlr_jw *w, const stage *s, double cal) {
    vlr_jw_key_uint(w, "tokens", s->tokens);
    json_num(w, "ms", s->ms, 3);
    json_num(w, "tokens_per_s", per_s(s), 3);
    json_num(w, "gflop", s->flops * 1e-9, 3);
    json_num(w, "gflops", gflops(s), 3);
    json_num(w, "vs_calibration", cal > 0 ? gflops(s) / cal : NAN, 4);
    vlr_jw_key_int(w, "peak_rss_bytes", s->peak_rss);
}

static void json_ints(vlr_jw *w, const char *key, const int *v, int n) {
    vlr_jw_key(w, key);
    vlr_jw_array(w);
    for (int i = 0; i < n; i++) vlr_jw_int(w, v[i]);
    vlr_jw_end(w);
}

typedef struct report {
    stage cal, vision, request, prefill[MAX_LENGTHS];
    group_result group;         /* --group only */
    double build_s, quantize_s; /* quantize_s: int8 only */
    uint64_t parameters, bytes, int8_bytes;
    char date[32], cpu[128];
    vlr_precision precision;    /* resolved */
    const char *precision_reason;
    char kernels[64];           /* the float table's ISA, in int8 "+" the int8 kernel's */
} report;

static void print_json(const bench *b, const report *r) {
    const bench_opts *o = b->o;
    const vlr_config *run = &b->model.cfg;
    const bool scaled = b->text_ratio != 1.0 || b->vision_ratio != 1.0;
    const double cal = gflops(&r->cal);
    vlr_buf out = {0};
    vlr_jw w;
    vlr_jw_init(&w, &out, 0);
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "threads", o->threads);
    vlr_jw_key_int(&w, "layers", b->full.text.num_layers);
    vlr_jw_key_int(&w, "vision_blocks", b->full.vision.depth);
    if (scaled) {
        vlr_jw_key_int(&w, "scaled_from_layers", run->text.num_layers);
        vlr_jw_key_int(&w, "scaled_from_vision_blocks", run->vision.depth);
    }
    vlr_jw_key(&w, "model");
    vlr_jw_object(&w);
    vlr_jw_key_str(&w, "config", o->config_path ? o->config_path : "Qwen2.5-VL-7B (built-in)");
    vlr_jw_key_int(&w, "hidden_size", b->full.text.hidden_size);
    vlr_jw_key_int(&w, "intermediate_size", b->full.text.intermediate_size);
    vlr_jw_key_int(&w, "vocab_size", b->full.text.vocab_size);
    vlr_jw_key_int(&w, "vision_hidden_size", b->full.vision.hidden_size);
    vlr_jw_key_uint(&w, "parameters_run", r->parameters);
    vlr_jw_key_uint(&w, "weight_bytes_run", r->bytes);
    vlr_jw_key_str(&w, "weights", "random bf16");
    vlr_jw_end(&w);
    vlr_jw_key_str(&w, "precision", vlr_precision_name(r->precision));
    vlr_jw_key_str(&w, "precision_reason", r->precision_reason);
    vlr_jw_key_int(&w, "repeat", o->repeat);
    vlr_jw_key_str(&w, "date", r->date);
    vlr_jw_key_str(&w, "cpu", r->cpu);
    json_num(&w, "build_s", r->build_s, 3);
    if (r->precision == VLR_PRECISION_INT8) {
        json_num(&w, "quantize_s", r->quantize_s, 3);
        vlr_jw_key_uint(&w, "int8_bytes", r->int8_bytes);
    }
    char text[96];
    vlr_jw_key(&w, "calibration");
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "m", o->cal_m);
    vlr_jw_key_int(&w, "k", o->cal_k);
    vlr_jw_key_int(&w, "n", o->cal_n);
    snprintf(text, sizeof text, "vlreward-%s", r->kernels);
    vlr_jw_key_str(&w, "kernel", text);
    vlr_jw_key_str(&w, "weights", r->precision == VLR_PRECISION_INT8 ? "int8" : "bf16");
    json_num(&w, "ms", r->cal.ms, 3);
    json_num(&w, "gflops", cal, 3);
    vlr_jw_key_int(&w, "peak_rss_bytes", r->cal.peak_rss);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "vision");
    vlr_jw_object(&w);
    snprintf(text, sizeof text, "%dx%d", o->image_w, o->image_h);
    vlr_jw_key_str(&w, "image", text);
    snprintf(text, sizeof text, "%dx%d", b->resized_w, b->resized_h);
    vlr_jw_key_str(&w, "resized", text);
    json_ints(&w, "grid", (const int[]){b->grid.t, b->grid.h, b->grid.w}, 3);
    vlr_jw_key_int(&w, "patches", b->grid.t * b->grid.h * b->grid.w);
    json_stage(&w, &r->vision, cal);
    vlr_jw_end(&w);
    vlr_jw_key(&w, "text_prefill");
    vlr_jw_array(&w);
    for (int i = 0; i < o->n_lengths; i++) {
        vlr_jw_object(&w);
        json_stage(&w, &r->prefill[i], cal);
        vlr_jw_end(&w);
    }
    vlr_jw_end(&w);
    vlr_jw_key(&w, "request");
    vlr_jw_object(&w);
    vlr_jw_key_int(&w, "images", 1);
    vlr_jw_key_int(&w, "text_tokens", REQUEST_TEXT_TOKENS);
    vlr_jw_key_uint(&w, "image_tokens", b->n_vision);
    json_stage(&w, &r->request, cal);
    vlr_jw_end(&w);
    if (o->group) {
        vlr_jw_key(&w, "group");
        vlr_jw_object(&w);
        vlr_jw_key_int(&w, "n", o->group);
        vlr_jw_key_int(&w, "question_tokens", GROUP_QUESTION_TOKENS);
        vlr_jw_key_int(&w, "answer_tokens", GROUP_ANSWER_TOKENS);
        json_num(&w, "group_ms", r->group.group_ms, 3);
        json_num(&w, "separate_ms", r->group.separate_ms, 3);
        json_num(&w, "speedup", r->group.separate_ms / r->group.group_ms, 3);
        vlr_jw_end(&w);
    }
    vlr_jw_key_int(&w, "peak_rss_bytes", peak_rss_bytes());
    vlr_jw_end(&w);
    vlr_buf_puts(&out, "\n");
    if (!out.oom) fwrite(out.data, 1, out.len, stdout);
    vlr_buf_free(&out);
}

static void print_row(const char *what, const stage *s, double cal) {
    printf("%-40s %7zu %11.1f %10.1f %9.1f %9.1f %7.2f %9.2f\n", what, s->tokens, s->ms, per_s(s),
           s->flops * 1e-9, gflops(s), cal > 0 ? gflops(s) / cal : 0.0, (double)s->peak_rss / (1 << 30));
}

static void print_table(const bench *b, const report *r) {
    const bench_opts *o = b->o;
    const vlr_config *run = &b->model.cfg;
    const double cal = gflops(&r->cal);
    printf("vlreward bench, %s: %s shapes, random bf16 weights (%.2f G parameters, %.2f GB allocated)\n",
           r->date, o->config_path ? o->config_path : "Qwen2.5-VL-7B", r->parameters * 1e-9, r->bytes * 1e-9);
    printf("cpu %s, %d threads, kernel vlreward-%s, precision %s (%s), median of %d, build %.1f s", r->cpu,
           o->threads, r->kernels, vlr_precision_name(r->precision), r->precision_reason, o->repeat, r->build_s);
    if (r->precision == VLR_PRECISION_INT8)
        printf(", int8 quantization %.1f s (%.2f GB)", r->quantize_s, r->int8_bytes * 1e-9);
    printf("\n");
    if (b->text_ratio != 1.0 || b->vision_ratio != 1.0)
        printf("whole-model figures scaled from %d of %d decoder layers and %d of %d vision blocks\n",
               run->text.num_layers, b->full.text.num_layers, run->vision.depth, b->full.vision.depth);
    printf("\n%-40s %7s %11s %10s %9s %9s %7s %9s\n", "stage", "tokens", "ms", "tokens/s", "GFLOP", "GFLOP/s",
           "vs GEMM", "RSS GiB");
    char what[96];
    snprintf(what, sizeof what, "calibration GEMM %dx%dx%d %s", o->cal_m, o->cal_k, o->cal_n,
             vlr_precision_name(r->precision));
    print_row(what, &r->cal, cal);
    snprintf(what, sizeof what, "vision %dx%d (%dx%d, %d patches)", o->image_w, o->image_h, b->resized_w,
             b->resized_h, b->grid.t * b->grid.h * b->grid.w);
    print_row(what, &r->vision, cal);
    for (int i = 0; i < o->n_lengths; i++) {
        snprintf(what, sizeof what, "text prefill %d", o->lengths[i]);
        print_row(what, &r->prefill[i], cal);
    }
    snprintf(what, sizeof what, "request (1 image + %d text)", REQUEST_TEXT_TOKENS);
    print_row(what, &r->request, cal);
    if (o->group)
        printf("\nbest-of-%d (1 image + %d-token question + %d answers of %d tokens): one group %.1f ms, %d "
               "separate requests %.1f ms, speedup x%.2f\n", o->group, GROUP_QUESTION_TOKENS, o->group,
               GROUP_ANSWER_TOKENS, r->group.group_ms, o->group, r->group.separate_ms,
               r->group.separate_ms / r->group.group_ms);
    printf("\npeak RSS %.2f GiB; GFLOP counts matrix products (2mnk) and attention (2*2*pairs*head_dim*heads)\n",
           (double)peak_rss_bytes() / (1 << 30));
}

/* ---- the command --------------------------------------------------------------------------- */

/* "P[,P...]": each resolved (auto by the CPU table), repeats dropped, int8 moved last (its run hands
 * the bf16 weights' pages back). */
static bool parse_precisions(const char *v, bench_opts *o) {
    o->n_precisions = 0;
    bool int8 = false;
    for (const char *p = v;; p++) { /* each name, then the comma after it (or the end) */
        const size_t len = strcspn(p, ",");
        char name[16];
        vlr_precision pr;
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), p);
        if (len >= sizeof name || !cli_parse_precision("bench", name, &pr)) return false;
        if (pr == VLR_PRECISION_AUTO) pr = vlr_precision_for_cpu(NULL);
        bool seen = false;
        for (int i = 0; i < o->n_precisions; i++) seen = seen || o->precisions[i] == pr;
        if (pr == VLR_PRECISION_INT8) int8 = true;
        else if (!seen) o->precisions[o->n_precisions++] = pr; /* at most f32, bf16 */
        p += len;
        if (!*p) break;
    }
    if (int8) o->precisions[o->n_precisions++] = VLR_PRECISION_INT8;
    return true;
}

/* Points the bench's table (which its context points to) at precision p, and records it in r. */
static void use_precision(bench *b, vlr_precision p, const char *reason, report *r) {
    vlr_kernels_select(&b->k, VLR_ISA_AUTO, p);
    r->precision = p;
    r->precision_reason = reason;
    snprintf(r->kernels, sizeof r->kernels, "%s", b->k.isa);
    if (p == VLR_PRECISION_INT8) snprintf(r->kernels, sizeof r->kernels, "%s+%s", b->k.isa, b->k.isa_i8);
}

/* The tokens/s of each stage of every run against the first run's. */
static void print_ratios(const bench_opts *o, const report *r, int n) {
    for (int pi = 1; pi < n; pi++) {
        printf("%s / %s, tokens/s: calibration x%.2f, vision x%.2f", vlr_precision_name(r[pi].precision),
               vlr_precision_name(r[0].precision), r[0].cal.ms / r[pi].cal.ms, r[0].vision.ms / r[pi].vision.ms);
        for (int i = 0; i < o->n_lengths; i++)
            printf(", prefill %d x%.2f", o->lengths[i], r[0].prefill[i].ms / r[pi].prefill[i].ms);
        printf(", request x%.2f\n", r[0].request.ms / r[pi].request.ms);
    }
}

static int parse_args(int argc, char **argv, bench_opts *o) {
    cli_args a = {argc, 1, argv, "bench"};
    bool bad = false;
    while (a.i < argc && !bad) {
        const char *v = NULL;
        long n;
        if (cli_is_help(argv[a.i])) {
            cli_print_help(help);
            return -1; /* the caller exits 0 */
        }
        if (cli_opt(&a, "--json", false, &v, &bad)) {
            o->json = true;
            continue;
        }
        if (cli_opt(&a, "--config", true, &o->config_path, &bad)) continue;
        if (cli_opt(&a, "--image-size", true, &v, &bad)) {
            int wh[2];
            if (v && !parse_dims(v, 2, 1 << 16, wh)) return cli_usage_error("bench", "--image-size: expected WxH, got '%s'", v);
            if (v) o->image_w = wh[0], o->image_h = wh[1];
            continue;
        }
        if (cli_opt(&a, "--calibration", true, &v, &bad)) {
            int mkn[3];
            if (v && !parse_dims(v, 3, 1 << 20, mkn)) return cli_usage_error("bench", "--calibration: expected MxKxN, got '%s'", v);
            if (v) o->cal_m = mkn[0], o->cal_k = mkn[1], o->cal_n = mkn[2];
            continue;
        }
        if (cli_opt(&a, "--tokens", true, &v, &bad)) {
            if (v && !parse_lengths(v, o))
                return cli_usage_error("bench", "--tokens: expected up to %d positive lengths separated by commas, got '%s'",
                                       MAX_LENGTHS, v);
            continue;
        }
        if (cli_opt(&a, "--repeat", true, &v, &bad)) {
            if (v && !cli_parse_int(v, 1, 1000, &n)) return cli_usage_error("bench", "--repeat: expected 1..1000, got '%s'", v);
            if (v) o->repeat = (int)n;
            continue;
        }
        if (cli_opt(&a, "--threads", true, &v, &bad)) {
            if (v && !cli_parse_int(v, 0, 1024, &n)) return cli_usage_error("bench", "--threads: expected 0..1024, got '%s'", v);
            if (v) o->threads = (int)n;
            continue;
        }
        if (cli_opt(&a, "--layers", true, &v, &bad)) {
            if (v && !cli_parse_int(v, 1, 1 << 16, &n)) return cli_usage_error("bench", "--layers: expected a positive integer, got '%s'", v);
            if (v) o->layers = (int)n;
            continue;
        }
        if (cli_opt(&a, "--group", true, &v, &bad)) {
            if (v && !cli_parse_int(v, 2, 1024, &n)) return cli_usage_error("bench", "--group: expected 2..1024, got '%s'", v);
            if (v) o->group = (int)n;
            continue;
        }
        if (cli_opt(&a, "--seed", true, &v, &bad)) {
            if (v && !cli_parse_int(v, 0, 1L << 30, &n)) return cli_usage_error("bench", "--seed: expected 0..2^30, got '%s'", v);
            if (v) o->seed = (uint64_t)n;
            continue;
        }
        if (cli_opt(&a, "--precision", true, &v, &bad)) {
            if (v && !parse_precisions(v, o)) return EXIT_USAGE;
            continue;
        }
        return cli_usage_error("bench", "unknown option '%s'", argv[a.i]);
    }
    return bad ? EXIT_USAGE : EXIT_OK;
}

static vlr_status load_config(const bench_opts *o, vlr_config *cfg, vlr_err *e) {
    if (!o->config_path) {
        vlr_config_qwen25vl_7b(cfg);
        return VLR_OK;
    }
    char *text = NULL;
    size_t len;
    vlr_status rc = vlr_read_file(o->config_path, 16u << 20, &text, &len, e);
    if (rc == VLR_OK) rc = vlr_config_parse(text, len, NULL, 0, cfg, e);
    if (rc) vlr_err_prefix(e, "%s: ", o->config_path);
    free(text);
    return rc;
}

int cmd_bench(int argc, char **argv) {
    bench_opts o = {.image_w = 640, .image_h = 480, .lengths = {512, 1024, 2048}, .n_lengths = 3,
                    .repeat = 3, .cal_m = 1024, .cal_k = 3584, .cal_n = 18944, .seed = 1,
                    .precisions = {VLR_PRECISION_AUTO}, .n_precisions = 1};
    int status = parse_args(argc, argv, &o);
    if (status < 0) return EXIT_OK; /* --help */
    if (status) return status;
    if (o.threads <= 0) o.threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (o.threads < 1) o.threads = 1;

    bench b;
    memset(&b, 0, sizeof b);
    b.o = &o;
    report reports[4], *r = reports;
    memset(reports, 0, sizeof reports);
    vlr_err *e = &b.err;
    status = EXIT_INPUT;
    vlr_status rc = load_config(&o, &b.full, e);
    if (rc) goto done;
    const vlr_config *full = &b.full;
    size_t max_n = 0;
    for (int i = 0; i < o.n_lengths; i++) {
        if (o.lengths[i] > full->text.max_position_embeddings) {
            rc = vlr_fail(e, VLR_ERR_LIMIT, "--tokens %d is beyond the model's %d positions", o.lengths[i],
                          full->text.max_position_embeddings);
            goto done;
        }
        if ((size_t)o.lengths[i] > max_n) max_n = (size_t)o.lengths[i];
    }

    /* the image grid, as the processor would size it */
    const vlr_vision_config *vc = &full->vision;
    int64_t rh, rw;
    if ((rc = vlr_smart_resize(o.image_h, o.image_w, vc->patch_size * vc->spatial_merge_size,
                               full->preproc.min_pixels, full->preproc.max_pixels, &rh, &rw, e))) {
        vlr_err_prefix(e, "--image-size %dx%d: ", o.image_w, o.image_h);
        goto done;
    }
    b.resized_w = (int)rw, b.resized_h = (int)rh;
    b.grid = (vlr_grid_thw){1, (int)(rh / vc->patch_size), (int)(rw / vc->patch_size)};
    b.n_vision = vlr_vision_n_tokens(full, b.grid);

    /* the shapes run, and how they scale to the full model */
    vlr_config run = *full;
    if (o.layers > 0) vlr_bench_config_cut(&run, o.layers);
    b.text_ratio = (double)full->text.num_layers / run.text.num_layers;
    b.vision_ratio = 1.0;
    if (run.vision.depth < full->vision.depth) {
        const double all = vlr_bench_vision_flops(full, b.grid) - vlr_bench_vision_fixed_flops(full, b.grid);
        const double cut = vlr_bench_vision_flops(&run, b.grid) - vlr_bench_vision_fixed_flops(&run, b.grid);
        b.vision_ratio = cut > 0 ? all / cut : 1.0;
    }

    /* refuse what would not fit, before allocating (the machine may be shared) */
    uint64_t params, bytes, filled;
    if ((rc = vlr_bench_model_count(&run, false, &params, &bytes, &filled, e))) goto done;
    const unsigned long long avail = mem_available();
    const double cal_bytes = 4.0 * ((double)o.cal_n * o.cal_k + (double)o.cal_m * (o.cal_k + o.cal_n));
    if (avail && (double)filled + cal_bytes > 0.9 * (double)avail) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "the weights (%.2f GB) and the calibration GEMM (%.2f GB) need more than the "
                      "%.2f GB of memory available: use --layers N", filled * 1e-9, cal_bytes * 1e-9, avail * 1e-9);
        goto done;
    }

    b.exec = (vlr_exec){.k = &b.k, .n_threads = o.threads, .ws = vlr_workspace_new(0), .acts = vlr_workspace_new(0)};
    if (!b.exec.ws || !b.exec.acts) { rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory"); goto done; }
    b.times = vlr_calloc((size_t)o.repeat, sizeof(double), e);
    if (!b.times) { rc = VLR_ERR_NOMEM; goto done; }
    const char *auto_reason = "requested";
    if (o.precisions[0] == VLR_PRECISION_AUTO) o.precisions[0] = vlr_precision_for_cpu(&auto_reason);

    /* calibration first, so its buffers are gone before the model is built */
    for (int pi = 0; pi < o.n_precisions; pi++) {
        use_precision(&b, o.precisions[pi], auto_reason, &r[pi]);
        if ((rc = run_calibration(&b, &r[pi].cal))) goto done;
    }

    double t0 = vlr_now();
    if ((rc = vlr_bench_model_build(&run, o.seed, false, o.threads, &b.model, e))) goto done;
    r->build_s = vlr_now() - t0;
    r->parameters = b.model.w.parameters;
    r->bytes = b.model.w.bytes;

    const size_t patch_dim = (size_t)vc->in_channels * vc->temporal_patch_size * vc->patch_size * vc->patch_size;
    const size_t n_patches = (size_t)b.grid.t * b.grid.h * b.grid.w;
    size_t n_px, n_out;
    if (!vlr_mul_ok(n_patches, patch_dim, &n_px) || !vlr_mul_ok(b.n_vision, (size_t)vc->out_hidden_size, &n_out)) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "--image-size %dx%d is too large", o.image_w, o.image_h);
        goto done;
    }
    b.pixels = vlr_calloc(n_px, sizeof(float), e);
    b.vision_out = vlr_calloc(n_out, sizeof(float), e);
    if (!b.pixels || !b.vision_out) { rc = VLR_ERR_NOMEM; goto done; }
    /* normalised pixels lie in about [-1.8, 2.1] (CLIP mean/std): uniform of std 1 is alike */
    vlr_bench_fill_f32(b.pixels, n_px, o.seed, 3, 0.0f, 1.0f, o.threads);
    b.image = (vlr_prepared_image){.grid_t = b.grid.t, .grid_h = b.grid.h, .grid_w = b.grid.w,
                                   .n_patches = n_patches, .patch_dim = patch_dim, .pixel_values = b.pixels};
    if ((rc = prepare_inputs(&b, max_n))) goto done;
    const size_t cache = max_n > b.request_n ? max_n : b.request_n;
    if ((rc = vlr_text_state_init(&b.model.cfg, &b.model.w.text, &b.exec, (int)cache, 0, &b.text, e)))
        goto done;

    for (int pi = 0; pi < o.n_precisions; pi++) {
        report *rp = &r[pi];
        use_precision(&b, o.precisions[pi], auto_reason, rp);
        rp->build_s = r->build_s, rp->parameters = r->parameters, rp->bytes = r->bytes;
        if (rp->precision == VLR_PRECISION_INT8) {
            /* the last run: the stored bf16 values are not read again, so their pages go, as a
             * checkpoint's do */
            t0 = vlr_now();
            if ((rc = vlr_weights_quantize_int8(&b.model.w, &b.model.cfg, o.threads, true, e))) goto done;
            rp->quantize_s = vlr_now() - t0;
            rp->int8_bytes = b.model.w.qweight_bytes;
        }
        if ((rc = run_vision(&b, &rp->vision))) goto done;
        for (int i = 0; i < o.n_lengths; i++)
            if ((rc = run_prefill(&b, (size_t)o.lengths[i], &rp->prefill[i]))) goto done;
        if ((rc = run_request(&b, &rp->request))) goto done;
        if (o.group && (rc = run_group(&b, &rp->group))) goto done;
        time_t now = time(NULL);
        struct tm tm;
        strftime(rp->date, sizeof rp->date, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        cpu_model(rp->cpu, sizeof rp->cpu);
        if (o.json) print_json(&b, rp);
        else print_table(&b, rp);
        fflush(stdout);
    }
    if (!o.json) print_ratios(&o, r, o.n_precisions);
    status = EXIT_OK;
done:
    if (rc) fprintf(stderr, "vlreward bench: %s\n", e->msg[0] ? e->msg : vlr_status_str(rc));
    vlr_text_state_free(b.text);
    vlr_workspace_free(b.exec.ws);
    vlr_workspace_free(b.exec.acts);
    vlr_bench_model_free(&b.model);
    free(b.pixels);
    free(b.vision_out);
    free(b.embeds);
    free(b.prefill_ids);
    free(b.prefill_pos);
    free(b.request_ids);
    free(b.request_pos);
    free(b.group_ids);
    free(b.group_pos);
    free(b.suffix_ids);
    free(b.suffix_pos);
    free(b.suffix_len);
    free(b.times);
    return status;
}
