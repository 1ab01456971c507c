/* test_forward.c: the forward pass against the float64 goldens of tests/reference.
 *
 * 1. M-RoPE position ids and rope_delta of all 13 cases (exact).
 * 2. Window layout (window_index, cu_window_seqlens, cu_seqlens) of every traced image, concatenated
 *    over images like upstream (exact), plus a synthetic 10x14 grid worked out by hand.
 * 3. Vision tower on the two dumped pixel_values: vision_embeds and every traced stage.
 * 4. Language model + value head on the cases whose inputs we have (the two dumped cases with the
 *    dumped vision embeds, the text-only case): score, last_hidden, traced stages; and the two dumped
 *    cases end to end from pixel_values.
 * 5. Chunk sizes, prefix reuse and truncation give the single-pass result; 1 vs 2 threads are
 *    bit-identical. */
#include <stdint.h>

#include "config.h"
#include "json.h"
#include "kernels/exec.h"
#include "rope.h"
#include "test.h"
#include "text.h"
#include "trace.h"
#include "vision.h"
#include "weights.h"

#define REF "tests/reference/"
#define N_CASES_MAX 32

typedef struct golden_case {
    char id[64];
    const vlr_json *exp;   /* the expected.jsonl object */
    vlr_json_doc *exp_doc;
    vlr_json_doc *trace_doc;
    const vlr_json *trace; /* traces/<id>.json root */
    int32_t *ids;
    size_t n;
    vlr_grid_thw grids[8];
    size_t n_grids;
} golden_case;

static golden_case cases[N_CASES_MAX];
static size_t n_cases;
static vlr_config cfg;
static vlr_weights weights;
static vlr_kernels kern;
static vlr_workspace *workspace; /* shared by every context: the calls run one at a time */
static vlr_exec contexts[3];     /* [n_threads]: text states keep a pointer to theirs */

/* The context of n_threads (1 or 2) threads recording into tr (NULL: no trace). */
static const vlr_exec *context(int n_threads, vlr_trace *tr) {
    contexts[n_threads] = (vlr_exec){.k = &kern, .n_threads = n_threads, .ws = workspace, .trace = tr};
    return &contexts[n_threads];
}

static double num(const vlr_json *v) { return v ? v->number : NAN; }
static const vlr_json *path2(const vlr_json *o, const char *a, const char *b) {
    return vlr_json_get(vlr_json_get(o, a), b);
}

static void load_cases(void) {
    char *text = NULL;
    size_t len = 0;
    vlr_err e = {0};
    if (vlr_read_file(REF "expected.jsonl", 64u << 20, &text, &len, &e) != VLR_OK) {
        CHECK(0, "expected.jsonl: %s", e.msg);
        return;
    }
    char *line = text;
    while (line < text + len && n_cases < N_CASES_MAX) {
        char *end = memchr(line, '\n', (size_t)(text + len - line));
        size_t line_len = end ? (size_t)(end - line) : (size_t)(text + len - line);
        if (line_len > 0) {
            golden_case *c = &cases[n_cases];
            c->exp_doc = vlr_json_parse(line, line_len, &e);
            CHECK(c->exp_doc != NULL, "expected.jsonl line %zu: %s", n_cases + 1, e.msg);
            if (!c->exp_doc) break;
            c->exp = vlr_json_root(c->exp_doc);
            const vlr_json *id = vlr_json_get(c->exp, "id");
            snprintf(c->id, sizeof c->id, "%s", id ? id->str : "?");
            const vlr_json *ids = vlr_json_get(c->exp, "input_ids");
            c->n = ids ? ids->len : 0;
            c->ids = malloc((c->n ? c->n : 1) * sizeof *c->ids);
            for (size_t i = 0; i < c->n; i++) c->ids[i] = (int32_t)num(vlr_json_at(ids, i));
            const vlr_json *g = vlr_json_get(c->exp, "image_grid_thw");
            for (size_t i = 0; g && i < g->len && i < 8; i++) {
                const vlr_json *thw = vlr_json_at(g, i);
                c->grids[i] = (vlr_grid_thw){(int)num(vlr_json_at(thw, 0)),
                                             (int)num(vlr_json_at(thw, 1)),
                                             (int)num(vlr_json_at(thw, 2))};
                c->n_grids++;
            }
            char path[256];
            snprintf(path, sizeof path, REF "traces/%s.json", c->id);
            CHECK(vlr_json_parse_file(path, 1u << 24, &c->trace_doc, &e) == VLR_OK, "%s: %s", path,
                  e.msg);
            c->trace = c->trace_doc ? vlr_json_root(c->trace_doc) : NULL;
            n_cases++;
        }
        if (!end) break;
        line = end + 1;
    }
    free(text);
    CHECK(n_cases == 13, "expected 13 cases, read %zu", n_cases);
}

static golden_case *find_case(const char *id) {
    for (size_t i = 0; i < n_cases; i++)
        if (strcmp(cases[i].id, id) == 0) return &cases[i];
    return NULL;
}

static float *read_f32(const char *path, size_t count) {
    char *data = NULL;
    size_t len = 0;
    vlr_err e = {0};
    if (vlr_read_file(path, 1u << 28, &data, &len, &e) != VLR_OK) {
        CHECK(0, "%s: %s", path, e.msg);
        return NULL;
    }
    CHECK(len == count * 4, "%s: %zu bytes, expected %zu", path, len, count * 4);
    if (len != count * 4) {
        free(data);
        return NULL;
    }
    float *f = malloc(len);
    memcpy(f, data, len);
    free(data);
    return f;
}

/* ---- 1. positions ---- */

static void test_positions(void) {
    for (size_t ci = 0; ci < n_cases; ci++) {
        golden_case *c = &cases[ci];
        int32_t *pos = malloc(3 * c->n * sizeof *pos);
        int64_t delta = 0;
        vlr_err e = {0};
        vlr_status rc = vlr_rope_positions(c->ids, c->n, cfg.tokens.image_pad, c->grids,
                                           c->n_grids, cfg.vision.spatial_merge_size, pos, &delta,
                                           &e);
        CHECK(rc == VLR_OK, "%s: %s", c->id, e.msg);
        const vlr_json *want = vlr_json_get(c->exp, "position_ids");
        size_t mismatches = 0;
        for (size_t comp = 0; comp < 3; comp++)
            for (size_t i = 0; i < c->n; i++)
                mismatches += pos[comp * c->n + i] != (int32_t)num(vlr_json_at(vlr_json_at(want, comp), i));
        CHECK(mismatches == 0, "%s: %zu position ids differ", c->id, mismatches);
        CHECK(delta == (int64_t)num(vlr_json_get(c->exp, "rope_delta")), "%s: rope_delta %lld", c->id,
              (long long)delta);
        free(pos);
    }
    /* a grid that does not match the image_pad run is an input error, not a crash */
    golden_case *c = find_case("tiny_upscale");
    if (c) {
        int32_t *pos = malloc(3 * c->n * sizeof *pos);
        int64_t delta;
        vlr_err e = {0};
        vlr_grid_thw big = {1, 8, 6};
        CHECK(vlr_rope_positions(c->ids, c->n, cfg.tokens.image_pad, &big, 1, 2, pos, &delta, &e) ==
                  VLR_ERR_INPUT, "oversized grid accepted");
        CHECK(vlr_rope_positions(c->ids, c->n, cfg.tokens.image_pad, NULL, 0, 2, pos, &delta, &e) ==
                  VLR_ERR_INPUT, "missing grid accepted");
        free(pos);
    }
}

/* ---- 2. windows ---- */

static bool ints_equal(const vlr_trace_stage *s, const vlr_json *want, const char *what,
                       const char *id) {
    if (!s || !want) {
        CHECK(0, "%s %s: missing (ours %p, golden %p)", id, what, (void *)s, (const void *)want);
        return false;
    }
    size_t bad = s->n_ints != want->len;
    for (size_t i = 0; !bad && i < want->len; i++) bad += s->ints[i] != (int64_t)num(vlr_json_at(want, i));
    CHECK(bad == 0, "%s %s: differs (%zu values vs %zu)", id, what, s->n_ints, want->len);
    return bad == 0;
}

static void test_windows(void) {
    /* every traced image, through the trace's concatenation like upstream */
    for (size_t ci = 0; ci < n_cases; ci++) {
        golden_case *c = &cases[ci];
        if (c->n_grids == 0) continue;
        vlr_trace tr;
        vlr_trace_init(&tr);
        for (size_t i = 0; i < c->n_grids; i++) {
            size_t nt = vlr_vision_n_tokens(&cfg, c->grids[i]);
            size_t mw = vlr_vision_max_windows(&cfg, c->grids[i]), nw = 0;
            int32_t *wi = malloc(nt * sizeof *wi), *cu = malloc((mw + 1) * sizeof *cu);
            vlr_err e = {0};
            CHECK(vlr_vision_windows(&cfg, c->grids[i], wi, cu, &nw, &e) == VLR_OK, "%s", e.msg);
            vlr_trace_ints(&tr, "window_index", wi, nt, VLR_TRACE_INTS_PERMUTATION);
            vlr_trace_ints(&tr, "cu_window_seqlens", cu, nw + 1, VLR_TRACE_INTS_CUMULATIVE);
            int32_t full[2] = {0, c->grids[i].t * c->grids[i].h * c->grids[i].w};
            vlr_trace_ints(&tr, "cu_seqlens", full, 2, VLR_TRACE_INTS_CUMULATIVE);
            free(wi);
            free(cu);
        }
        const vlr_json *v = vlr_json_get(c->trace, "vision");
        ints_equal(vlr_trace_find(&tr, "window_index"), vlr_json_get(v, "window_index"),
                   "window_index", c->id);
        ints_equal(vlr_trace_find(&tr, "cu_window_seqlens"), vlr_json_get(v, "cu_window_seqlens"),
                   "cu_window_seqlens", c->id);
        ints_equal(vlr_trace_find(&tr, "cu_seqlens"), vlr_json_get(v, "cu_seqlens"), "cu_seqlens",
                   c->id);
        vlr_trace_free(&tr);
    }
    /* large_retina: 25x36 merged tokens, 7x9 windows of which the bottom row is partial */
    golden_case *lr = find_case("large_retina");
    if (lr) {
        size_t nw = 0;
        int32_t wi[900], cu[128];
        vlr_err e = {0};
        CHECK(vlr_vision_max_windows(&cfg, lr->grids[0]) == 63, "large_retina max windows %zu",
              vlr_vision_max_windows(&cfg, lr->grids[0]));
        CHECK(vlr_vision_windows(&cfg, lr->grids[0], wi, cu, &nw, &e) == VLR_OK, "%s", e.msg);
        CHECK(nw == 63, "large_retina: %zu windows, README says 63", nw);
    }
    /* synthetic 10x14 patches = 5x7 merged: windows 4x4, 4x3 (right edge), 1x4, 1x3 (bottom) */
    {
        vlr_grid_thw g = {1, 10, 14};
        int32_t wi[35], cu[8];
        size_t nw = 0;
        vlr_err e = {0};
        CHECK(vlr_vision_windows(&cfg, g, wi, cu, &nw, &e) == VLR_OK, "%s", e.msg);
        const int32_t want_cu[5] = {0, 64, 112, 128, 140};
        CHECK(nw == 4 && memcmp(cu, want_cu, sizeof want_cu) == 0,
              "10x14: %zu windows, cu %d %d %d %d %d", nw, cu[0], cu[1], cu[2], cu[3], cu[4]);
        /* window 0 = rows 0..3, cols 0..3; window 1 = rows 0..3, cols 4..6; then row 4 */
        const int32_t want_wi[35] = {0,  1,  2,  3,  7,  8,  9,  10, 14, 15, 16, 17,
                                     21, 22, 23, 24, 4,  5,  6,  11, 12, 13, 18, 19,
                                     20, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34};
        CHECK(memcmp(wi, want_wi, sizeof want_wi) == 0, "10x14 window_index differs");
        vlr_grid_thw odd = {1, 10, 13};
        CHECK(vlr_vision_windows(&cfg, odd, wi, cu, &nw, &e) == VLR_ERR_INPUT,
              "odd grid accepted");
    }
}

/* ---- 3. vision ---- */

/* |got - want| <= 1e-5 * scale, with scale the golden sum_abs (sums) */
static void check_stage(const vlr_trace *tr, const char *name, const vlr_json *want, bool text,
                        const char *id) {
    const vlr_trace_stage *s = vlr_trace_find(tr, name);
    if (!s || !want) {
        CHECK(0, "%s %s: missing (ours %p, golden %p)", id, name, (const void *)s,
              (const void *)want);
        return;
    }
    char what[160];
    const vlr_json *shape = vlr_json_get(want, "shape");
    CHECK(s->rows == (int64_t)num(vlr_json_at(shape, 0)) && s->cols == (int64_t)num(vlr_json_at(shape, 1)),
          "%s %s: shape [%lld, %lld]", id, name, (long long)s->rows, (long long)s->cols);
    const double sum_abs = num(vlr_json_get(want, "sum_abs"));
    snprintf(what, sizeof what, "%s %s sum", id, name);
    CHECK_NEAR(s->sum, num(vlr_json_get(want, "sum")), 1e-5 * sum_abs, what);
    snprintf(what, sizeof what, "%s %s sum_abs", id, name);
    CHECK_NEAR(s->sum_abs, sum_abs, 1e-5 * sum_abs, what);
    const vlr_json *f0 = vlr_json_get(want, "row0_first4");
    const vlr_json *fl = vlr_json_get(want, text ? "last_first4" : "last_row_first4");
    for (size_t j = 0; j < 4; j++) {
        snprintf(what, sizeof what, "%s %s row0[%zu]", id, name, j);
        CHECK_NEAR(s->first_row[j], num(vlr_json_at(f0, j)), 1e-4, what);
        snprintf(what, sizeof what, "%s %s last[%zu]", id, name, j);
        CHECK_NEAR(s->last_row[j], num(vlr_json_at(fl, j)), 1e-4, what);
    }
    if (text) {
        snprintf(what, sizeof what, "%s %s last_sum", id, name);
        CHECK_NEAR(s->last_sum, num(vlr_json_get(want, "last_sum")), 1e-4, what);
    }
}

/* Runs the vision tower on the case's dumped pixels; returns the embeddings (caller frees). */
static float *run_vision(golden_case *c, int n_threads, vlr_trace *tr) {
    const vlr_json *pv = vlr_json_get(c->exp, "pixel_values");
    const size_t rows = (size_t)num(vlr_json_at(vlr_json_get(pv, "shape"), 0));
    const size_t cols = (size_t)num(vlr_json_at(vlr_json_get(pv, "shape"), 1));
    char path[256];
    snprintf(path, sizeof path, REF "pixels/%s.pixel_values.f32", c->id);
    float *pixels = read_f32(path, rows * cols);
    if (!pixels) return NULL;
    size_t n_tokens = 0;
    for (size_t i = 0; i < c->n_grids; i++) n_tokens += vlr_vision_n_tokens(&cfg, c->grids[i]);
    const size_t D = (size_t)cfg.vision.out_hidden_size;
    float *out = malloc(n_tokens * D * sizeof *out);
    size_t row = 0, tok = 0;
    for (size_t i = 0; i < c->n_grids; i++) {
        vlr_err e = {0};
        vlr_status rc = vlr_vision_forward(&cfg, &weights.vision, context(n_threads, tr), pixels + row * cols,
                                           c->grids[i], out + tok * D, &e);
        CHECK(rc == VLR_OK, "%s vision: %s", c->id, e.msg);
        row += (size_t)c->grids[i].t * c->grids[i].h * c->grids[i].w;
        tok += vlr_vision_n_tokens(&cfg, c->grids[i]);
    }
    free(pixels);
    return out;
}

static float *read_vision_embeds(golden_case *c, size_t *rows) {
    const vlr_json *ve = vlr_json_get(c->exp, "vision_embeds");
    *rows = (size_t)num(vlr_json_at(vlr_json_get(ve, "shape"), 0));
    char path[256];
    snprintf(path, sizeof path, REF "pixels/%s.vision_embeds.f32", c->id);
    return read_f32(path, *rows * (size_t)cfg.text.hidden_size);
}

static void test_vision(const char *id) {
    golden_case *c = find_case(id);
    CHECK(c != NULL, "case %s", id);
    if (!c) return;
    vlr_trace tr;
    vlr_trace_init(&tr);
    float *ours = run_vision(c, 2, &tr);
    size_t rows;
    float *want = read_vision_embeds(c, &rows);
    if (ours && want) {
        const size_t count = rows * (size_t)cfg.text.hidden_size;
        const vlr_json *ve = vlr_json_get(c->exp, "vision_embeds");
        double sum = 0, max_diff = 0;
        for (size_t i = 0; i < count; i++) {
            sum += ours[i];
            double d = fabs((double)ours[i] - want[i]);
            if (d > max_diff) max_diff = d;
        }
        char what[96];
        for (size_t j = 0; j < 8; j++) {
            snprintf(what, sizeof what, "%s vision_embeds first8[%zu]", id, j);
            CHECK_NEAR(ours[j], num(vlr_json_at(vlr_json_get(ve, "first8"), j)), 1e-4, what);
        }
        snprintf(what, sizeof what, "%s vision_embeds sum", id);
        CHECK_NEAR(sum, num(vlr_json_get(ve, "sum")), 1e-5 * num(vlr_json_get(ve, "sum_abs")), what);
        CHECK(max_diff < 1e-4, "%s vision_embeds max abs diff %.3g", id, max_diff);
        printf("%s: vision_embeds max abs diff %.3g\n", id, max_diff);
    }
    const vlr_json *v = vlr_json_get(c->trace, "vision");
    check_stage(&tr, "vision.patch_embed", vlr_json_get(v, "patch_embed"), false, id);
    check_stage(&tr, "vision.after_window_reorder", vlr_json_get(v, "after_window_reorder"), false, id);
    const vlr_json *blocks = vlr_json_get(v, "blocks");
    for (size_t i = 0; blocks && i < blocks->len; i++) {
        char name[VLR_TRACE_NAME_CAP];
        snprintf(name, sizeof name, "vision.blocks.%zu", i);
        check_stage(&tr, name, vlr_json_at(blocks, i), false, id);
        const vlr_trace_stage *s = vlr_trace_find(&tr, name);
        const vlr_json *att = vlr_json_get(vlr_json_at(blocks, i), "attention");
        CHECK(s && s->label && att && strcmp(s->label, att->str) == 0, "%s %s attention label", id,
              name);
    }
    check_stage(&tr, "vision.merger_window_order", vlr_json_get(v, "merger_window_order"), false, id);
    check_stage(&tr, "vision.merger_out", vlr_json_get(v, "merger_out"), false, id);
    ints_equal(vlr_trace_find(&tr, "vision.window_index"), vlr_json_get(v, "window_index"),
               "window_index", id);
    ints_equal(vlr_trace_find(&tr, "vision.cu_window_seqlens"), vlr_json_get(v, "cu_window_seqlens"),
               "cu_window_seqlens", id);
    ints_equal(vlr_trace_find(&tr, "vision.cu_seqlens"), vlr_json_get(v, "cu_seqlens"), "cu_seqlens",
               id);

    /* the JSON writer reproduces the golden trace's layout and reads back */
    vlr_buf b = {0};
    vlr_trace_write_json(&tr, &b);
    vlr_err e = {0};
    vlr_json_doc *doc = b.data ? vlr_json_parse(b.data, b.len, &e) : NULL;
    CHECK(doc != NULL, "%s trace JSON: %s", id, e.msg);
    if (doc) {
        const vlr_json *root = vlr_json_root(doc);
        const vlr_json *blocks_ours = path2(root, "vision", "blocks");
        CHECK(blocks_ours && blocks && blocks_ours->len == blocks->len, "%s trace JSON blocks", id);
        const vlr_json *s = vlr_json_get(path2(root, "vision", "merger_out"), "sum");
        CHECK_NEAR(num(s), vlr_trace_find(&tr, "vision.merger_out")->sum, 0, "trace JSON round trip");
        const vlr_json *grid = vlr_json_at(vlr_json_get(root, "image_grid_thw"), 0);
        CHECK(grid && (int)num(vlr_json_at(grid, 1)) == c->grids[0].h, "%s trace JSON grid", id);
    }
    vlr_json_free(doc);
    vlr_buf_free(&b);

    /* determinism: one thread gives the same bits as two */
    float *one = run_vision(c, 1, NULL);
    if (one && ours)
        CHECK(memcmp(one, ours, rows * (size_t)cfg.text.hidden_size * sizeof(float)) == 0,
              "%s vision: 1 vs 2 threads differ", id);
    free(one);
    free(ours);
    free(want);
    vlr_trace_free(&tr);
}

/* ---- 4. text ---- */

typedef struct text_inputs {
    float *embeds; /* [n, D] */
    int32_t *pos;  /* [3][n] */
    size_t n;
} text_inputs;

/* vision: [rows, D] image rows, or NULL for the dumped ones (text-only: none) */
static bool build_inputs(golden_case *c, const float *vision, text_inputs *in) {
    const size_t D = (size_t)cfg.text.hidden_size;
    size_t rows = 0;
    float *dumped = NULL;
    if (c->n_grids && !vision) {
        dumped = read_vision_embeds(c, &rows);
        if (!dumped) return false;
        vision = dumped;
    } else {
        for (size_t i = 0; i < c->n_grids; i++) rows += vlr_vision_n_tokens(&cfg, c->grids[i]);
    }
    in->n = c->n;
    in->embeds = malloc(c->n * D * sizeof(float));
    in->pos = malloc(3 * c->n * sizeof(int32_t));
    vlr_err e = {0};
    int64_t delta;
    bool ok = vlr_text_embed(&cfg, &weights.text, c->ids, c->n, vision, rows, in->embeds, &e) == VLR_OK;
    CHECK(ok, "%s embed: %s", c->id, e.msg);
    ok = ok && vlr_rope_positions(c->ids, c->n, cfg.tokens.image_pad, c->grids, c->n_grids,
                                  cfg.vision.spatial_merge_size, in->pos, &delta, &e) == VLR_OK;
    free(dumped);
    return ok;
}

static void free_inputs(text_inputs *in) {
    free(in->embeds);
    free(in->pos);
}

/* One prefill of in over [start, start + n) on st. */
static double prefill(vlr_text_state *st, const text_inputs *in, size_t start, size_t n,
                      vlr_trace *tr) {
    const size_t D = (size_t)cfg.text.hidden_size;
    double score = NAN;
    vlr_err e = {0};
    for (int t = 1; t <= 2; t++) contexts[t].trace = tr; /* whichever context st runs on */
    vlr_status rc = vlr_text_prefill(st, in->embeds + start * D, in->pos + start, in->n, n, &score, &e);
    for (int t = 1; t <= 2; t++) contexts[t].trace = NULL;
    CHECK(rc == VLR_OK, "prefill: %s", e.msg);
    return score;
}

static double score_with(const text_inputs *in, int n_threads, int chunk) {
    vlr_text_state *st = NULL;
    vlr_err e = {0};
    if (vlr_text_state_init(&cfg, &weights.text, context(n_threads, NULL), 0, chunk, &st, &e) != VLR_OK) {
        CHECK(0, "state init: %s", e.msg);
        return NAN;
    }
    double s = prefill(st, in, 0, in->n, NULL);
    vlr_text_state_free(st);
    return s;
}

static void check_text_result(golden_case *c, double score, const float *hidden, const char *how) {
    char what[128];
    snprintf(what, sizeof what, "%s score (%s)", c->id, how);
    CHECK_NEAR(score, num(vlr_json_get(c->exp, "score")), 2e-5, what);
    const vlr_json *lh = vlr_json_get(c->exp, "last_hidden");
    const size_t D = (size_t)cfg.text.hidden_size;
    double dot = 0, n1 = 0, n2 = 0, max_diff = 0;
    for (size_t j = 0; j < D; j++) {
        double a = hidden[j], b = num(vlr_json_at(lh, j));
        dot += a * b;
        n1 += a * a;
        n2 += b * b;
        if (fabs(a - b) > max_diff) max_diff = fabs(a - b);
    }
    double cosine = dot / sqrt(n1 * n2);
    CHECK(lh && lh->len == D && cosine > 0.99999, "%s last_hidden cosine %.10f (%s)", c->id, cosine, how);
    CHECK(max_diff < 2e-5, "%s last_hidden max abs diff %.3g (%s)", c->id, max_diff, how);
    printf("%s (%s): score %.9f (golden %.9f, diff %.2g), last_hidden max diff %.2g\n", c->id, how,
           score, num(vlr_json_get(c->exp, "score")),
           fabs(score - num(vlr_json_get(c->exp, "score"))), max_diff);
}

static void test_text(const char *id) {
    golden_case *c = find_case(id);
    CHECK(c != NULL, "case %s", id);
    if (!c) return;
    text_inputs in = {0};
    if (!build_inputs(c, NULL, &in)) goto done;
    vlr_trace tr;
    vlr_trace_init(&tr);
    vlr_text_state *st = NULL;
    vlr_err e = {0};
    CHECK(vlr_text_state_init(&cfg, &weights.text, context(2, NULL), 0, 0, &st, &e) == VLR_OK, "%s", e.msg);
    if (!st) goto done;
    double score = prefill(st, &in, 0, in.n, &tr);
    check_text_result(c, score, vlr_text_last_hidden(st), c->n_grids ? "dumped vision embeds" : "no image");
    const vlr_json *t = vlr_json_get(c->trace, "text");
    check_stage(&tr, "text.inputs_embeds", vlr_json_get(t, "inputs_embeds"), true, id);
    const vlr_json *layers = vlr_json_get(t, "layers");
    CHECK(layers && layers->len == (size_t)cfg.text.num_layers, "%s layers", id);
    for (size_t i = 0; layers && i < layers->len; i++) {
        char name[VLR_TRACE_NAME_CAP];
        snprintf(name, sizeof name, "text.layers.%zu", i);
        check_stage(&tr, name, vlr_json_at(layers, i), true, id);
    }
    check_stage(&tr, "text.final_norm", vlr_json_get(t, "final_norm"), true, id);
    CHECK(tr.has_score && tr.score == score, "%s trace score", id);

    /* 5. chunking: the rows of a chunk never interact, so every chunk size gives the same score */
    const int chunks[3] = {1, 7, 64};
    for (int i = 0; i < 3; i++) {
        double s = score_with(&in, 1, chunks[i]);
        char what[96];
        snprintf(what, sizeof what, "%s chunk %d vs one pass", id, chunks[i]);
        CHECK_NEAR(s, score, 1e-6, what);
    }
    /* prefix reuse: the prefix up to the image's end stays cached, the rest continues from it */
    const size_t split = in.n * 2 / 3;
    vlr_text_truncate(st, 0);
    CHECK(vlr_text_n_cached(st) == 0, "truncate to 0");
    prefill(st, &in, 0, split, NULL);
    double resumed = prefill(st, &in, split, in.n - split, NULL);
    CHECK(vlr_text_n_cached(st) == in.n, "%s cached %zu after resume", id, vlr_text_n_cached(st));
    CHECK_NEAR(resumed, score, 1e-6, "prefix then rest vs one pass");
    /* truncate back to the prefix and run the rest again: a different continuation reuses it */
    vlr_text_truncate(st, split);
    double again = prefill(st, &in, split, in.n - split, NULL);
    CHECK_NEAR(again, score, 1e-6, "truncate + rest vs one pass");
    /* determinism: thread count does not change a bit */
    double one = score_with(&in, 1, 0), two = score_with(&in, 2, 0);
    CHECK(one == two && two == score, "%s: 1 thread %.17g vs 2 threads %.17g", id, one, two);
    /* the cache limit is enforced */
    vlr_text_state *small = NULL;
    CHECK(vlr_text_state_init(&cfg, &weights.text, context(1, NULL), (int)in.n - 1, 0, &small, &e) == VLR_OK,
          "%s", e.msg);
    if (small)
        CHECK(vlr_text_prefill(small, in.embeds, in.pos, in.n, in.n, NULL, &e) == VLR_ERR_LIMIT,
              "%s: over-long prefill accepted", id);
    vlr_text_state_free(small);
    vlr_text_state_free(st);
    vlr_trace_free(&tr);
done:
    free_inputs(&in);
}

/* Our trace JSON has every key of the golden trace's vision / text parts, with arrays of the same
 * lengths (values are checked stage by stage elsewhere). */
static void check_layout(const vlr_json *ours, const vlr_json *want, const char *where) {
    if (!ours || ours->type != want->type) {
        CHECK(0, "trace JSON %s: missing or of another type", where);
        return;
    }
    if (want->type == VLR_JSON_ARRAY) {
        CHECK(ours->len == want->len, "trace JSON %s: %zu items, golden %zu", where, ours->len,
              want->len);
        for (size_t i = 0; i < want->len && i < ours->len; i++) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s[%zu]", where, i);
            check_layout(vlr_json_at(ours, i), vlr_json_at(want, i), sub);
        }
    } else if (want->type == VLR_JSON_OBJECT) {
        CHECK(ours->len == want->len, "trace JSON %s: %zu keys, golden %zu", where, ours->len,
              want->len);
        for (size_t i = 0; i < want->len; i++) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s.%s", where, want->items[i].key);
            check_layout(vlr_json_get(ours, want->items[i].key), &want->items[i], sub);
        }
    }
}

/* Pixels -> vision tower -> language model, for the cases with dumped pixel_values (and the
 * text-only case), traced into one trace whose JSON must have the golden trace's layout. */
static void test_end_to_end(const char *id) {
    golden_case *c = find_case(id);
    if (!c) return;
    vlr_trace tr;
    vlr_trace_init(&tr);
    float *vision = c->n_grids ? run_vision(c, 2, &tr) : NULL;
    text_inputs in = {0};
    if ((vision || !c->n_grids) && build_inputs(c, vision, &in)) {
        vlr_text_state *st = NULL;
        vlr_err e = {0};
        CHECK(vlr_text_state_init(&cfg, &weights.text, context(2, NULL), 0, 0, &st, &e) == VLR_OK, "%s", e.msg);
        if (st) {
            double score = prefill(st, &in, 0, in.n, &tr);
            check_text_result(c, score, vlr_text_last_hidden(st),
                              c->n_grids ? "from pixel_values" : "traced");
        }
        vlr_text_state_free(st);
        const vlr_json *t = vlr_json_get(c->trace, "text");
        const vlr_json *layers = vlr_json_get(t, "layers");
        for (size_t i = 0; layers && i < layers->len; i++) {
            char name[VLR_TRACE_NAME_CAP];
            snprintf(name, sizeof name, "text.layers.%zu", i);
            check_stage(&tr, name, vlr_json_at(layers, i), true, id);
        }
        vlr_buf b = {0};
        vlr_trace_write_json(&tr, &b);
        vlr_json_doc *doc = b.data ? vlr_json_parse(b.data, b.len, &e) : NULL;
        CHECK(doc != NULL, "%s trace JSON: %s", id, e.msg);
        if (doc) {
            const vlr_json *root = vlr_json_root(doc);
            const char *keys[] = {"seq_len", "image_grid_thw", "vision", "text", "score"};
            for (size_t k = 0; k < 5; k++) {
                const vlr_json *want = vlr_json_get(c->trace, keys[k]);
                if (want)
                    check_layout(vlr_json_get(root, keys[k]), want, keys[k]);
                else
                    CHECK(vlr_json_get(root, keys[k]) == NULL, "%s trace JSON has %s", id, keys[k]);
            }
            CHECK(num(vlr_json_get(root, "seq_len")) == (double)c->n, "%s trace seq_len", id);
        }
        vlr_json_free(doc);
        vlr_buf_free(&b);
    }
    vlr_trace_free(&tr);
    free_inputs(&in);
    free(vision);
}

/* Cancellation: a set flag stops the vision tower before a block and a prefill before a layer with
 * VLR_ERR_INTERRUPTED ("interrupted"); the cache keeps only what was complete, and once the flag is
 * cleared the same prefill gives the uninterrupted score, bit for bit. */
static void test_cancel(const char *id) {
    golden_case *c = find_case(id);
    if (!c) return;
    text_inputs in = {0};
    if (!build_inputs(c, NULL, &in)) goto done;
    const size_t D = (size_t)cfg.text.hidden_size, split = in.n / 2;
    volatile int flag = 0;
    const vlr_exec x = {.k = &kern, .n_threads = 2, .ws = workspace, .cancel = &flag};
    vlr_text_state *st = NULL;
    vlr_err e = {0};
    CHECK(vlr_text_state_init(&cfg, &weights.text, &x, 0, 0, &st, &e) == VLR_OK, "%s", e.msg);
    if (!st) goto done;
    double score = NAN, want = score_with(&in, 2, 0);
    CHECK(vlr_text_prefill(st, in.embeds, in.pos, in.n, split, NULL, &e) == VLR_OK, "%s", e.msg);
    flag = 1;
    CHECK(vlr_text_prefill(st, in.embeds + split * D, in.pos + split, in.n, in.n - split, &score, &e) ==
              VLR_ERR_INTERRUPTED && strcmp(e.msg, "interrupted") == 0,
          "%s: cancelled prefill: %s", id, e.msg);
    CHECK(vlr_text_n_cached(st) == split, "%s: a cancelled prefill left %zu cached, want %zu", id,
          vlr_text_n_cached(st), split);
    flag = 0;
    CHECK(vlr_text_prefill(st, in.embeds + split * D, in.pos + split, in.n, in.n - split, &score, &e) == VLR_OK,
          "%s", e.msg);
    CHECK(score == want, "%s: after a cancel %.17g, uninterrupted %.17g", id, score, want);
    vlr_text_state_free(st);
    if (c->n_grids) { /* zero pixels will do: the flag is read before the first block */
        const vlr_grid_thw g = c->grids[0];
        const size_t patch_dim = (size_t)cfg.vision.in_channels * cfg.vision.temporal_patch_size *
                                 cfg.vision.patch_size * cfg.vision.patch_size;
        float *px = calloc((size_t)g.t * g.h * g.w * patch_dim, sizeof(float));
        float *o = malloc(vlr_vision_n_tokens(&cfg, g) * (size_t)cfg.vision.out_hidden_size * sizeof(float));
        flag = 1;
        CHECK(px && o && vlr_vision_forward(&cfg, &weights.vision, &x, px, g, o, &e) == VLR_ERR_INTERRUPTED &&
                  strcmp(e.msg, "interrupted") == 0,
              "%s: cancelled vision tower: %s", id, e.msg);
        free(px);
        free(o);
    }
done:
    free_inputs(&in);
}

static void test_input_errors(void) {
    const size_t D = (size_t)cfg.text.hidden_size;
    float out[2 * 64], vis[64] = {0};
    vlr_err e = {0};
    if (D > 64) return;
    int32_t bad[2] = {1, (int32_t)cfg.text.vocab_size};
    CHECK(vlr_text_embed(&cfg, &weights.text, bad, 2, NULL, 0, out, &e) == VLR_ERR_INPUT,
          "out-of-vocabulary id accepted");
    int32_t pads[2] = {cfg.tokens.image_pad, cfg.tokens.image_pad};
    CHECK(vlr_text_embed(&cfg, &weights.text, pads, 2, vis, 1, out, &e) == VLR_ERR_INPUT,
          "2 image_pad tokens for 1 vision row accepted");
    CHECK(vlr_text_embed(&cfg, &weights.text, pads, 1, vis, 1, out, &e) == VLR_OK, "%s", e.msg);
    CHECK(memcmp(out, vis, D * sizeof(float)) == 0, "image row not scattered");
    /* a grid that is not a multiple of the merge size never reaches the kernels */
    float dummy[1] = {0};
    vlr_grid_thw odd = {1, 5, 6};
    CHECK(vlr_vision_forward(&cfg, &weights.vision, context(1, NULL), dummy, odd, dummy, &e) ==
              VLR_ERR_INPUT, "odd grid accepted by the vision tower");
    vlr_text_state *st = NULL;
    CHECK(vlr_text_state_init(&cfg, &weights.text, context(1, NULL), 0, 0, &st, &e) == VLR_OK, "%s", e.msg);
    if (st) CHECK(vlr_text_prefill(st, out, NULL, 0, 0, NULL, &e) == VLR_ERR_INPUT,
                  "empty prefill accepted");
    vlr_text_state_free(st);
}

int main(void) {
    vlr_err e = {0};
    if (vlr_config_load(REF "models/tiny-a", &cfg, &e) != VLR_OK) {
        CHECK(0, "config: %s", e.msg);
        return test_report();
    }
    /* VLR_TEST_ISA=ref|avx2|avx512 forces a kernel set (default: the best the CPU has) */
    const char *isa = getenv("VLR_TEST_ISA");
    vlr_kernels_select(&kern, !isa ? VLR_ISA_AUTO : !strcmp(isa, "ref") ? VLR_ISA_REF
                              : !strcmp(isa, "avx2") ? VLR_ISA_AVX2 : VLR_ISA_AVX512,
                      VLR_PRECISION_F32); /* the goldens' float64 bounds are f32's */
    printf("kernels: %s\n", kern.isa);
    workspace = vlr_workspace_new(0);
    load_cases();
    TEST_RUN(test_positions);
    TEST_RUN(test_windows);
    if (vlr_weights_load(REF "models/tiny-a", &cfg, &weights, &e) != VLR_OK) {
        CHECK(0, "weights: %s", e.msg);
    } else {
        TEST_RUN_WITH(test_vision, "tiny_upscale");
        TEST_RUN_WITH(test_vision, "max_pixels_coffee");
        TEST_RUN_WITH(test_text, "tiny_upscale");
        TEST_RUN_WITH(test_text, "max_pixels_coffee");
        TEST_RUN_WITH(test_text, "text_only_code");
        TEST_RUN_WITH(test_end_to_end, "tiny_upscale");
        TEST_RUN_WITH(test_end_to_end, "max_pixels_coffee");
        TEST_RUN_WITH(test_end_to_end, "text_only_code");
        TEST_RUN_WITH(test_cancel, "tiny_upscale");
        TEST_RUN(test_input_errors);
    }
    vlr_weights_free(&weights);
    vlr_workspace_free(workspace);
    for (size_t i = 0; i < n_cases; i++) {
        vlr_json_free(cases[i].exp_doc);
        vlr_json_free(cases[i].trace_doc);
        free(cases[i].ids);
    }
    return test_report();
}
