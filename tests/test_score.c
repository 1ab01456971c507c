/* test_score.c: the whole pipeline on every conversation of tests/reference/cases.jsonl, through the
 * public API and vlr_prepare, against expected.jsonl: prompt, ids, grids, resized sizes, pixel sums,
 * positions, then the score (2e-5 absolute) and the last hidden state (cosine > 0.99999, max abs
 * diff < 2e-5) in f32 precision. In bf16 precision the bound is the reference's own: every score
 * within 3e-2 of float64 and the mean |error| no larger than that of the reference pipeline's
 * full-bf16 emulation (`precision_study.bf16` in tests/reference/traces/<id>.json: what transformers
 * in bf16 loses). In int8 precision, the bounds of its issue: every score within 0.1 of float64 and
 * the order of every two cases whose float64 scores differ by more than 0.1 kept (the reference
 * pipeline has no int8 mode to compare with). Then, in each precision, determinism: 1 vs 2 threads,
 * a request alone vs after others in a session, and prefix reuse must give bit-identical scores. */
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "model.h"
#include "test.h"
#include "test_model.h"

#define MODEL "tests/reference/models/tiny-a"

static double rel_diff(double got, double want) {
    return fabs(got - want) / fmax(fabs(want), 1e-30);
}

static bool ints_equal(const vlr_json *arr, const int32_t *v, size_t n) {
    if (!vlr_json_is(arr, VLR_JSON_ARRAY) || arr->len != n) return false;
    for (size_t i = 0; i < n; i++) {
        int64_t x;
        if (!vlr_json_int(&arr->items[i], &x) || x != v[i]) return false;
    }
    return true;
}

static void check_prepared(const char *id, const vlr_prepared *p, const vlr_json *exp) {
    const vlr_json *prompt = vlr_json_get(exp, "prompt");
    CHECK(p->prompt.len == prompt->len && memcmp(p->prompt.data, prompt->str, prompt->len) == 0, "%s: prompt", id);
    CHECK(ints_equal(vlr_json_get(exp, "input_ids"), p->ids.data, p->ids.len), "%s: input_ids (%zu ids)", id, p->ids.len);
    const vlr_json *grids = vlr_json_get(exp, "image_grid_thw");
    CHECK(grids->len == p->n_images, "%s: %zu images", id, p->n_images);
    const vlr_json *images = vlr_json_get(exp, "images");
    double sum = 0, sum_sq = 0;
    size_t rows = 0;
    for (size_t i = 0; i < p->n_images && i < grids->len; i++) {
        const vlr_prepared_image *img = &p->images[i];
        int32_t g[3] = {img->grid_t, img->grid_h, img->grid_w};
        CHECK(ints_equal(vlr_json_at(grids, i), g, 3), "%s: grid of image %zu", id, i);
        int32_t hw[2] = {img->resized_h, img->resized_w};
        CHECK(ints_equal(vlr_json_get(vlr_json_at(images, i), "resized_hw"), hw, 2), "%s: resized_hw %zu", id, i);
        for (size_t k = 0; k < img->n_patches * img->patch_dim; k++) {
            sum += img->pixel_values[k];
            sum_sq += (double)img->pixel_values[k] * img->pixel_values[k];
        }
        rows += img->n_patches;
    }
    const vlr_json *pv = vlr_json_get(exp, "pixel_values");
    if (p->n_images) {
        CHECK(rel_diff(sum, vlr_json_get(pv, "sum")->number) < 1e-9, "%s: pixel sum %.17g", id, sum);
        CHECK(rel_diff(sum_sq, vlr_json_get(pv, "sum_sq")->number) < 1e-9, "%s: pixel sum_sq %.17g", id, sum_sq);
        int64_t want_rows;
        CHECK(vlr_json_int(vlr_json_at(vlr_json_get(pv, "shape"), 0), &want_rows) && (size_t)want_rows == rows,
              "%s: %zu patch rows", id, rows);
        const vlr_json *first8 = vlr_json_get(pv, "first8");
        for (size_t k = 0; k < 8; k++)
            CHECK((float)vlr_json_at(first8, k)->number == p->images[0].pixel_values[k], "%s: first8[%zu]", id, k);
    } else {
        CHECK(vlr_json_is(pv, VLR_JSON_NULL), "%s: pixel_values null for text-only", id);
    }
    const vlr_json *pos = vlr_json_get(exp, "position_ids");
    for (size_t c = 0; c < 3; c++)
        CHECK(ints_equal(vlr_json_at(pos, c), p->positions + c * p->ids.len, p->ids.len), "%s: position_ids[%zu]", id, c);
    int64_t delta;
    CHECK(vlr_json_int(vlr_json_get(exp, "rope_delta"), &delta) && delta == p->rope_delta, "%s: rope_delta %d", id, p->rope_delta);
}

#if !defined(__SANITIZE_ADDRESS__) /* the memory plan is not checked under AddressSanitizer */
static size_t rss_now(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f && fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
    if (f) fclose(f);
    return (size_t)resident * 4096;
}

/* VmHWM (peak resident set) of this process, after an optional reset through clear_refs. */
static size_t rss_peak(void) {
    char line[256];
    size_t kb = 0;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %zu kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb * 1024;
}

static bool rss_peak_reset(void) {
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (!f) return false;
    bool ok = fputs("5", f) >= 0;
    return fclose(f) == 0 && ok;
}
#endif

static vlr_model *load(int threads, vlr_precision precision);

/* Peak RSS of scoring the largest case (large_retina) stays within the memory plan plus a small
 * allowance for allocator slack. Skipped under AddressSanitizer, whose shadow memory is not ours. */
static void check_memory_plan(const char *cases_text) {
#if defined(__SANITIZE_ADDRESS__)
    (void)cases_text;
    SKIP(1, "memory plan: AddressSanitizer's shadow memory inflates the RSS");
#else
    vlr_model *m = load(1, VLR_PRECISION_F32);
    vlr_session *s;
    if (!m || vlr_session_init(m, &s) != VLR_OK) return;
    const char *line = strstr(cases_text, "{\"id\": \"large_retina\"");
    const char *end = line ? strchr(line, '\n') : NULL;
    size_t base = rss_now();
    if (!rss_peak_reset() || rss_peak() > base + (1u << 20)) {
        SKIP(1, "memory plan: cannot reset the peak RSS here");
    } else {
        double score;
        CHECK(line && vlr_score_json(s, line, end ? (size_t)(end - line) : strlen(line), "tests/reference", &score) == VLR_OK,
              "large_retina: %s", vlr_session_errmsg(s));
        vlr_grid_thw grid = {1, 50, 72};
        size_t n = vlr_session_last_n_tokens(s);
        uint64_t plan = vlr_plan_request_bytes(&m->cfg, m->weights.bytes, n, &grid, 1);
        size_t peak = rss_peak(), allowance = 16u << 20;
        CHECK(peak <= base + plan + allowance, "peak RSS %zu > %zu at start + plan %llu + %zu", peak, base,
              (unsigned long long)plan, allowance);
        printf("memory: plan %.1f MB for %zu tokens (weights %.1f MB); peak RSS grew %.1f MB over %.1f MB at start\n",
               plan / 1e6, n, m->weights.bytes / 1e6, peak > base ? (peak - base) / 1e6 : 0.0, base / 1e6);
    }
    vlr_session_free(s);
    vlr_model_free(m);
#endif
}

static vlr_model *load(int threads, vlr_precision precision) { return test_load_tiny(threads, precision); }

/* |error| of the reference's full-bf16 emulation on case id (precision_study.bf16.abs_err). */
static double reference_bf16_error(const char *id) {
    char path[256];
    snprintf(path, sizeof path, "tests/reference/traces/%s.json", id);
    vlr_json_doc *doc = NULL;
    vlr_err e = {0};
    double err = NAN;
    if (vlr_json_parse_file(path, 1 << 26, &doc, &e) == VLR_OK) {
        const vlr_json *v = vlr_json_get(vlr_json_get(vlr_json_get(vlr_json_root(doc), "precision_study"), "bf16"), "abs_err");
        if (vlr_json_is(v, VLR_JSON_NUMBER)) err = v->number;
    }
    vlr_json_free(doc);
    CHECK(!isnan(err), "%s: no precision_study.bf16.abs_err (%s)", path, e.msg);
    return err;
}

/* Cancellation through the public API. A flag set before the call stops it with
 * VLR_ERR_INTERRUPTED and the message "interrupted"; cleared, the next call gives a fresh session's
 * bits, also after a prefix-sharing request was interrupted. A flag set from another thread during
 * the call stops it wherever it is (or not at all, if the call wins the race): either way the next
 * call is a fresh session's, bit for bit. And the steady state allocates no kernel scratch: once two
 * requests have run, running them again does not grow the session's workspace. */
static void check_cancel(vlr_model *m, const char *cases_text, const char *last, size_t last_len, double alone) {
    const char *l0 = cases_text, *l1 = strchr(l0, '\n') + 1, *l2 = strchr(l1, '\n') + 1;
    const char *big = strstr(cases_text, "{\"id\": \"large_retina\"");
    const size_t big_len = big ? (size_t)(strchr(big, '\n') ? strchr(big, '\n') - big : (ptrdiff_t)strlen(big)) : 0;
    volatile int flag = 1;
    vlr_session *c = NULL, *one = NULL;
    double got = NAN, want1 = NAN, want_big = NAN;
    CHECK(vlr_session_init(m, &c) == VLR_OK && vlr_session_init(m, &one) == VLR_OK, "sessions");
    if (!c || !one) goto done;
    CHECK(vlr_session_set_cancel_flag(NULL, &flag) != VLR_OK, "a cancel flag on no session");
    CHECK(vlr_session_set_cancel_flag(c, &flag) == VLR_OK, "set the cancel flag");
    vlr_status rc = vlr_score_json(c, last, last_len, "tests/reference", &got);
    CHECK(rc == VLR_ERR_INTERRUPTED && strcmp(vlr_session_errmsg(c), "interrupted") == 0,
          "a set flag: status %d, message '%s'", (int)rc, vlr_session_errmsg(c));
    flag = 0;
    CHECK(vlr_score_json(c, last, last_len, "tests/reference", &got) == VLR_OK && memcmp(&got, &alone, sizeof got) == 0,
          "after a cancel: %.17g, fresh %.17g (%s)", got, alone, vlr_session_errmsg(c));

    /* interrupted while its prefix is cached: nothing partial is reused */
    CHECK(vlr_score_json(one, l1, (size_t)(l2 - l1 - 1), "tests/reference", &want1) == VLR_OK, "fresh l1");
    CHECK(vlr_score_json(c, l0, (size_t)(l1 - l0 - 1), "tests/reference", &got) == VLR_OK, "l0");
    flag = 1;
    CHECK(vlr_score_json(c, l1, (size_t)(l2 - l1 - 1), "tests/reference", &got) == VLR_ERR_INTERRUPTED, "l1 cancelled");
    flag = 0;
    CHECK(vlr_score_json(c, l1, (size_t)(l2 - l1 - 1), "tests/reference", &got) == VLR_OK &&
          memcmp(&got, &want1, sizeof got) == 0, "l1 after a cancelled l1: %.17g, fresh %.17g", got, want1);

    /* from another thread, at a few points of the largest case's run */
    CHECK(big && vlr_score_json(one, big, big_len, "tests/reference", &want_big) == VLR_OK, "fresh large_retina");
    const long delays_us[3] = {200, 2000, 20000};
    for (int i = 0; i < 3 && big; i++) {
        canceller cl = {&flag, delays_us[i]};
        pthread_t th;
        flag = 0;
        CHECK(pthread_create(&th, NULL, cancel_later, &cl) == 0, "thread");
        rc = vlr_score_json(c, big, big_len, "tests/reference", &got);
        pthread_join(th, NULL);
        CHECK(rc == VLR_OK || rc == VLR_ERR_INTERRUPTED, "cancelled after %ld us: %s", delays_us[i], vlr_session_errmsg(c));
        printf("cancel after %ld us: %s\n", delays_us[i], rc == VLR_OK ? "completed first" : "interrupted");
        flag = 0;
        CHECK(vlr_score_json(c, big, big_len, "tests/reference", &got) == VLR_OK &&
              memcmp(&got, &want_big, sizeof got) == 0, "after a cancel at %ld us: %.17g, fresh %.17g", delays_us[i],
              got, want_big);
    }
    CHECK(vlr_session_set_cancel_flag(c, NULL) == VLR_OK, "clear the cancel flag");

    /* steady state: two requests, again, then once more: no growth the second time round */
    uint64_t grows[2];
    for (int round = 0; round < 2; round++) {
        CHECK(vlr_score_json(c, l0, (size_t)(l1 - l0 - 1), "tests/reference", &got) == VLR_OK, "l0");
        CHECK(vlr_score_json(c, l1, (size_t)(l2 - l1 - 1), "tests/reference", &got) == VLR_OK, "l1");
        vlr_workspace_stats(vlr_session_workspace(c), NULL, &grows[round]);
    }
    CHECK(grows[1] == grows[0], "the workspace grew from %llu to %llu on requests it had already run",
          (unsigned long long)grows[0], (unsigned long long)grows[1]);
done:
    vlr_session_free(c);
    vlr_session_free(one);
}

static void run_suite(const char *cases_text, const char *exp_text, vlr_precision precision) {
    vlr_err e = {0};
    const bool f32 = precision == VLR_PRECISION_F32;
    vlr_model *m1 = load(1, precision), *m2 = load(2, precision);
    if (!m1 || !m2) {
        vlr_model_free(m1);
        vlr_model_free(m2);
        return;
    }
    printf("precision %s (kernels %s)\n", vlr_precision_name(m1->kernels.precision), m1->kernels.isa);
    vlr_session *s1, *s2, *fresh;
    CHECK(vlr_session_init(m1, &s1) == VLR_OK && vlr_session_init(m2, &s2) == VLR_OK, "sessions");

    double scores[16], wants[16];
    size_t n_cases = 0;
    const char *case_line = cases_text, *exp_line = exp_text;
    double worst = 0, sum_err = 0, sum_ref_err = 0;
    while (*case_line && *exp_line && n_cases < 16) {
        const char *case_end = strchr(case_line, '\n'), *exp_end = strchr(exp_line, '\n');
        size_t case_len = case_end ? (size_t)(case_end - case_line) : strlen(case_line);
        size_t exp_line_len = exp_end ? (size_t)(exp_end - exp_line) : strlen(exp_line);
        vlr_json_doc *ed = vlr_json_parse(exp_line, exp_line_len, &e);
        const vlr_json *exp = vlr_json_root(ed);
        const char *id = vlr_json_get(exp, "id")->str;

        vlr_parsed_request req;
        CHECK(vlr_request_parse(case_line, case_len, n_cases, "tests/reference", &req, &e) == VLR_OK, "%s: %s", id, e.msg);
        vlr_prepared p;
        vlr_status rc = vlr_prepare(s1, &req.req, &p);
        CHECK(rc == VLR_OK, "%s: prepare: %s", id, vlr_session_errmsg(s1));
        if (rc == VLR_OK) check_prepared(id, &p, exp);
        vlr_prepared_free(&p);

        double score = NAN, score2 = NAN;
        rc = vlr_score(s1, &req.req, &score);
        CHECK(rc == VLR_OK, "%s: score: %s", id, vlr_session_errmsg(s1));
        double want = vlr_json_get(exp, "score")->number;
        const double bound = f32 ? 2e-5 : precision == VLR_PRECISION_INT8 ? 0.1 : 3e-2;
        CHECK(fabs(score - want) <= bound, "%s: %s score %.9f, want %.9f (diff %.3g > %.3g)", id,
              vlr_precision_name(precision), score, want, fabs(score - want), bound);
        if (fabs(score - want) > worst) worst = fabs(score - want);
        sum_err += fabs(score - want);
        if (precision == VLR_PRECISION_BF16) sum_ref_err += reference_bf16_error(id);
        const vlr_json *lh = vlr_json_get(exp, "last_hidden");
        const float *h = vlr_session_last_hidden(s1);
        double dot = 0, n_got = 0, n_want = 0, max_abs = 0;
        for (size_t i = 0; i < lh->len; i++) {
            double w = lh->items[i].number;
            dot += h[i] * w;
            n_got += (double)h[i] * h[i];
            n_want += w * w;
            max_abs = fmax(max_abs, fabs(h[i] - w));
        }
        double cosine = dot / sqrt(n_got * n_want);
        CHECK(!f32 || (cosine > 0.99999 && max_abs < 2e-5), "%s: last_hidden cosine %.9f max abs diff %.3g", id, cosine,
              max_abs);

        CHECK(vlr_score(s2, &req.req, &score2) == VLR_OK, "%s: 2 threads: %s", id, vlr_session_errmsg(s2));
        CHECK(memcmp(&score, &score2, sizeof score) == 0, "%s: 1 vs 2 threads differ: %.17g vs %.17g", id, score, score2);
        scores[n_cases] = score;
        wants[n_cases] = want;
        vlr_parsed_request_free(&req);
        vlr_json_free(ed);
        n_cases++;
        case_line = case_end ? case_end + 1 : case_line + case_len;
        exp_line = exp_end ? exp_end + 1 : exp_line + exp_line_len;
    }
    CHECK(n_cases == 13, "13 cases, got %zu", n_cases);
    printf("%s: worst |score - reference| over %zu cases %.3g, mean %.3g\n", vlr_precision_name(precision), n_cases,
           worst, sum_err / (double)n_cases);
    if (precision == VLR_PRECISION_INT8) {
        int kept = 0, compared = 0;
        for (size_t i = 0; i < n_cases; i++)
            for (size_t j = i + 1; j < n_cases; j++)
                if (fabs(wants[i] - wants[j]) > 0.1) {
                    compared++;
                    kept += (scores[i] > scores[j]) == (wants[i] > wants[j]);
                }
        printf("int8: order kept in %d of the %d case pairs more than 0.1 apart in float64\n", kept, compared);
        CHECK(compared > 50 && kept == compared, "int8: %d of %d case pairs changed order", compared - kept, compared);
    }
    if (precision == VLR_PRECISION_BF16) {
        printf("bf16: the reference's own bf16 emulation: mean |error| %.3g\n", sum_ref_err / (double)n_cases);
        CHECK(sum_err <= sum_ref_err, "bf16: mean |error| %.3g above the reference's bf16 emulation's %.3g",
              sum_err / (double)n_cases, sum_ref_err / (double)n_cases);
    }

    /* The last case scored alone on a fresh session equals its score after all the others. */
    CHECK(vlr_session_init(m2, &fresh) == VLR_OK, "fresh session");
    const char *last = cases_text;
    for (size_t i = 0; i + 1 < n_cases; i++) last = strchr(last, '\n') + 1;
    const char *last_end = strchr(last, '\n');
    double alone;
    CHECK(vlr_score_json(fresh, last, last_end ? (size_t)(last_end - last) : strlen(last), "tests/reference", &alone) == VLR_OK,
          "alone: %s", vlr_session_errmsg(fresh));
    CHECK(memcmp(&alone, &scores[n_cases - 1], sizeof alone) == 0, "alone %.17g vs in sequence %.17g", alone, scores[n_cases - 1]);

    /* Prefix reuse: demo_en_rejected after demo_en shares the system turn, the image and the
     * question; the reused run must equal a run from an empty cache bit for bit. */
    {
        const char *l0 = cases_text, *l1 = strchr(l0, '\n') + 1, *l2 = strchr(l1, '\n') + 1;
        vlr_session *a = NULL, *b = NULL;
        double alone1, seq0, seq1, again0;
        CHECK(vlr_session_init(m2, &a) == VLR_OK && vlr_session_init(m2, &b) == VLR_OK, "sessions");
        CHECK(vlr_score_json(a, l1, (size_t)(l2 - l1 - 1), "tests/reference", &alone1) == VLR_OK, "alone");
        CHECK(vlr_session_last_reused_tokens(a) == 0, "a fresh session reuses nothing");
        CHECK(vlr_score_json(b, l0, (size_t)(l1 - l0 - 1), "tests/reference", &seq0) == VLR_OK, "first");
        CHECK(vlr_score_json(b, l1, (size_t)(l2 - l1 - 1), "tests/reference", &seq1) == VLR_OK, "second");
        size_t reused = vlr_session_last_reused_tokens(b), total = vlr_session_last_n_tokens(b);
        CHECK(reused > 300 && reused < total, "the shared prefix is reused (%zu of %zu tokens)", reused, total);
        CHECK(memcmp(&alone1, &seq1, sizeof alone1) == 0, "reused prefix gives the same bits: %.17g vs %.17g", seq1, alone1);
        CHECK(vlr_score_json(b, l0, (size_t)(l1 - l0 - 1), "tests/reference", &again0) == VLR_OK &&
              memcmp(&again0, &seq0, sizeof seq0) == 0, "back to the first answer: same bits");
        /* Same ids, different image: the image is not reused. tiny_upscale with another picture. */
        const char *r1 = "{\"image\": \"images/demo.jpg\", \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}";
        const char *r2 = "{\"image\": \"images/coffee.jpg\", \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}";
        double x1, x2, fresh2;
        CHECK(vlr_score_json(b, r1, strlen(r1), "tests/reference", &x1) == VLR_OK, "r1: %s", vlr_session_errmsg(b));
        CHECK(vlr_score_json(b, r2, strlen(r2), "tests/reference", &x2) == VLR_OK, "r2: %s", vlr_session_errmsg(b));
        CHECK(vlr_score_json(a, r2, strlen(r2), "tests/reference", &fresh2) == VLR_OK, "r2 fresh");
        CHECK(memcmp(&x2, &fresh2, sizeof x2) == 0 && x1 != x2, "a different image under the same ids is recomputed");
        CHECK(vlr_session_last_reused_tokens(b) < vlr_session_last_n_tokens(b) - 4, "reuse stops at the image");
        vlr_session_free(a);
        vlr_session_free(b);
    }

    /* Prefix reuse across image counts, a failed request and a traced one: every score equals the
     * score of a fresh session bit for bit. */
    {
        const char *reqs[] = {
            "{\"images\": [\"images/demo.jpg\", \"images/coffee.jpg\"], \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}",
            "{\"images\": [\"images/demo.jpg\"], \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}",
            "{\"images\": [\"images/demo.jpg\", \"images/tiny_30x20.png\"], \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}",
            "{\"images\": [\"images/demo.jpg\", \"images/missing.png\"], \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"a\"}",
            "{\"images\": [\"images/demo.jpg\", \"images/tiny_30x20.png\"], \"max_pixels\": 3136, \"question\": \"q\", \"answer\": \"b\"}",
        };
        const int n_req = 5, traced = 2;
        vlr_session *seq;
        CHECK(vlr_session_init(m2, &seq) == VLR_OK, "session");
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < n_req; i++) {
                vlr_session *one;
                double got = NAN, want = NAN;
                vlr_trace tr;
                vlr_trace_init(&tr);
                bool trace_it = pass == 1 && i == traced;
                if (trace_it) vlr_session_set_trace(seq, &tr);
                vlr_status rc = vlr_score_json(seq, reqs[i], strlen(reqs[i]), "tests/reference", &got);
                vlr_session_set_trace(seq, NULL);
                CHECK(vlr_session_init(m2, &one) == VLR_OK, "fresh session");
                vlr_status rc1 = vlr_score_json(one, reqs[i], strlen(reqs[i]), "tests/reference", &want);
                CHECK(rc == rc1, "pass %d request %d: status %d, fresh %d", pass, i, (int)rc, (int)rc1);
                if (rc == VLR_OK)
                    CHECK(memcmp(&got, &want, sizeof got) == 0, "pass %d request %d: %.17g in sequence, %.17g fresh", pass,
                          i, got, want);
                size_t n = vlr_session_last_n_tokens(seq), reused = vlr_session_last_reused_tokens(seq);
                if (trace_it) {
                    const vlr_trace_stage *embeds = vlr_trace_find(&tr, "text.inputs_embeds");
                    CHECK(reused == 0 && embeds && (size_t)embeds->rows == n,
                          "a traced request runs every token (%zu reused, %lld traced of %zu)", reused,
                          embeds ? (long long)embeds->rows : -1LL, n);
                } else if (rc == VLR_OK && i > 0) {
                    CHECK(reused > 0 && reused < n, "pass %d request %d reuses a prefix (%zu of %zu)", pass, i, reused, n);
                }
                vlr_trace_free(&tr);
                vlr_session_free(one);
            }
        vlr_session_free(seq);
    }

    /* A failed request leaves the session usable and reports why. */
    double s;
    const char *bad = "{\"image\": \"missing.png\", \"question\": \"q\", \"answer\": \"a\"}";
    CHECK(vlr_score_json(fresh, bad, strlen(bad), "tests/reference", &s) != VLR_OK, "missing image fails");
    CHECK(strstr(vlr_session_errmsg(fresh), "missing.png") != NULL, "message names the image: %s", vlr_session_errmsg(fresh));
    CHECK(vlr_score_json(fresh, last, last_end ? (size_t)(last_end - last) : strlen(last), "tests/reference", &s) == VLR_OK &&
          memcmp(&s, &alone, sizeof s) == 0, "session usable after a failure");

    check_cancel(m2, cases_text, last, last_end ? (size_t)(last_end - last) : strlen(last), alone);

    vlr_session_free(fresh);
    vlr_session_free(s1);
    vlr_session_free(s2);
    vlr_model_free(m1);
    vlr_model_free(m2);
}

/* bf16 and int8 semantics on every kernel table this CPU runs (in bf16 the scalar reference, AVX2,
 * AVX-512 without vdpbf16ps round the operands and use fp32 FMA; in int8 each level has its own
 * integer kernel): each holds the same bounds as the default table on the whole golden set. */
static void test_every_isa(const char *cases_text, const char *exp_text, vlr_precision precision) {
    const vlr_isa isas[] = {VLR_ISA_REF, VLR_ISA_AVX2, VLR_ISA_AVX512, VLR_ISA_AVX512_BF16};
    const bool int8 = precision == VLR_PRECISION_INT8;
    vlr_model *m = load(2, precision);
    if (!m) return;
    for (size_t t = 0; t < sizeof isas / sizeof *isas; t++) {
        if (vlr_kernels_select(&m->kernels, isas[t], precision) != isas[t]) {
            SKIP(1, "%s on ISA %d: this CPU cannot run it", vlr_precision_name(precision), (int)isas[t]);
            continue;
        }
        vlr_session *s;
        if (vlr_session_init(m, &s) != VLR_OK) continue;
        const char *c = cases_text, *x = exp_text;
        double sum_err = 0, sum_ref = 0, worst = 0;
        int n = 0;
        while (*c && *x) {
            const char *ce = strchr(c, '\n'), *xe = strchr(x, '\n');
            const size_t cl = ce ? (size_t)(ce - c) : strlen(c), xl = xe ? (size_t)(xe - x) : strlen(x);
            vlr_err e = {0};
            vlr_json_doc *ed = vlr_json_parse(x, xl, &e);
            const vlr_json *exp = vlr_json_root(ed);
            double score = NAN;
            CHECK(vlr_score_json(s, c, cl, "tests/reference", &score) == VLR_OK, "%s: %s", m->kernels.isa,
                  vlr_session_errmsg(s));
            const double err = fabs(score - vlr_json_get(exp, "score")->number);
            worst = fmax(worst, err);
            sum_err += err;
            if (!int8) sum_ref += reference_bf16_error(vlr_json_get(exp, "id")->str);
            n++;
            vlr_json_free(ed);
            c = ce ? ce + 1 : c + cl;
            x = xe ? xe + 1 : x + xl;
        }
        char kernel[64];
        snprintf(kernel, sizeof kernel, "%s%s%s", m->kernels.isa, int8 ? "+" : "", int8 ? m->kernels.isa_i8 : "");
        printf("%s on %s: mean |error| %.3g, worst %.3g over %d cases\n", vlr_precision_name(precision), kernel,
               sum_err / n, worst, n);
        CHECK(n == 13 && (int8 ? worst <= 0.1 : worst <= 3e-2 && sum_err <= sum_ref),
              "%s on %s: worst %.3g, mean %.3g (reference bf16 %.3g)", vlr_precision_name(precision), kernel, worst,
              sum_err / n, sum_ref / n);
        vlr_session_free(s);
    }
    vlr_model_free(m);
}

/* Loads dir in int8 with the cache file and scores the first n golden cases into scores[]; the
 * load's note must contain want_note. */
static void int8_cached_scores(const char *dir, const char *cases_text, int n, const char *want_note, double *scores) {
    vlr_params params = vlr_default_params();
    params.n_threads = 2;
    params.precision = VLR_PRECISION_INT8;
    params.int8_cache = 1;
    char err[1024];
    vlr_model *m = NULL;
    vlr_session *s = NULL;
    CHECK(vlr_model_load(dir, &params, &m, err, sizeof err) == VLR_OK && vlr_session_init(m, &s) == VLR_OK,
          "int8 cache load: %s", err);
    if (!s) {
        vlr_model_free(m);
        return;
    }
    vlr_model_info info;
    vlr_model_get_info(m, &info);
    CHECK(info.int8_cache && strstr(info.int8_cache, want_note), "int8 cache: note '%s', want '%s'",
          info.int8_cache ? info.int8_cache : "(none)", want_note);
    const char *line = cases_text;
    for (int i = 0; i < n && *line; i++) {
        const char *end = strchr(line, '\n');
        const size_t len = end ? (size_t)(end - line) : strlen(line);
        scores[i] = NAN;
        CHECK(vlr_score_json(s, line, len, "tests/reference", &scores[i]) == VLR_OK, "int8 cache: %s",
              vlr_session_errmsg(s));
        line = end ? end + 1 : line + len;
    }
    vlr_session_free(s);
    vlr_model_free(m);
}

/* params.int8_cache: the first load writes DIR/vlreward-int8.bin, the next maps it, and the scores are
 * the same bits as quantizing at load; a checkpoint changed in place (its mtime), a truncated file
 * and a file that cannot be replaced are each handled without an error. */
static void test_int8_cache(const char *cases_text) {
    enum { N = 4 };
    char dir[] = "/tmp/vlr_int8_cache_XXXXXX", path[256], cmd[512];
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    /* a copy of tiny-a (the weights copied, not linked, so that their time can change) */
    snprintf(cmd, sizeof cmd, "cp " MODEL "/* %s/", dir);
    CHECK(system(cmd) == 0, "copy the model");
    double plain[N], first[N], again[N], stale[N], cut[N], blocked[N];
    vlr_model *m = load(2, VLR_PRECISION_INT8);
    vlr_session *s = NULL;
    if (m && vlr_session_init(m, &s) == VLR_OK) {
        const char *line = cases_text;
        for (int i = 0; i < N; i++) {
            const char *end = strchr(line, '\n');
            vlr_score_json(s, line, (size_t)(end - line), "tests/reference", &plain[i]);
            line = end + 1;
        }
    }
    vlr_session_free(s);
    vlr_model_free(m);
    int8_cached_scores(dir, cases_text, N, "written to", first);
    snprintf(path, sizeof path, "%s/vlreward-int8.bin", dir);
    struct stat st;
    CHECK(stat(path, &st) == 0 && st.st_size > 100000, "the cache file was written");
    int8_cached_scores(dir, cases_text, N, "read from", again);
    /* the checkpoint changes in place: the key (mtime) no longer matches, the file is rewritten */
    snprintf(cmd, sizeof cmd, "%s/model.safetensors", dir);
    struct timespec times[2] = {{0, UTIME_NOW}, {12345, 678}};
    CHECK(utimensat(AT_FDCWD, cmd, times, 0) == 0, "touch the weights");
    int8_cached_scores(dir, cases_text, N, "written to", stale);
    /* a truncated file is refused (and rewritten) */
    CHECK(truncate(path, st.st_size / 2) == 0, "truncate the cache");
    int8_cached_scores(dir, cases_text, N, "written to", cut);
    /* a path that cannot be replaced: the load goes on, quantizing, and says so */
    CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0, "a folder in the cache file's place");
    int8_cached_scores(dir, cases_text, N, "not cached", blocked);
    for (int i = 0; i < N; i++)
        CHECK(!memcmp(&plain[i], &first[i], 8) && !memcmp(&plain[i], &again[i], 8) && !memcmp(&plain[i], &stale[i], 8) &&
              !memcmp(&plain[i], &cut[i], 8) && !memcmp(&plain[i], &blocked[i], 8),
              "case %d: int8 scores %.17g (quantized at load), %.17g %.17g %.17g %.17g %.17g (cache)", i, plain[i],
              first[i], again[i], stale[i], cut[i], blocked[i]);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "clean up");
}

int main(void) {
    char *cases_text, *exp_text;
    size_t cases_len, exp_len;
    vlr_err e = {0};
    if (vlr_read_file("tests/reference/cases.jsonl", 1 << 24, &cases_text, &cases_len, &e) ||
        vlr_read_file("tests/reference/expected.jsonl", 1 << 24, &exp_text, &exp_len, &e)) {
        CHECK(0, "%s", e.msg);
        return test_report();
    }
    TEST_RUN_WITH(check_memory_plan, cases_text);
    TEST_RUN_WITH(run_suite, cases_text, exp_text, VLR_PRECISION_F32);
    TEST_RUN_WITH(run_suite, cases_text, exp_text, VLR_PRECISION_BF16);
    TEST_RUN_WITH(run_suite, cases_text, exp_text, VLR_PRECISION_INT8);
    TEST_RUN_WITH(test_every_isa, cases_text, exp_text, VLR_PRECISION_BF16);
    TEST_RUN_WITH(test_every_isa, cases_text, exp_text, VLR_PRECISION_INT8);
    TEST_RUN_WITH(test_int8_cache, cases_text);
    /* auto is one of the two, as the CPU table says, and a bad value is refused by name */
    vlr_model *m = load(1, VLR_PRECISION_AUTO);
    CHECK(m && m->kernels.precision == vlr_precision_for_cpu(NULL), "auto resolved to %d",
          m ? (int)m->kernels.precision : -1);
    vlr_model_free(m);
    vlr_params params = vlr_default_params();
    CHECK(params.precision == VLR_PRECISION_AUTO, "the default precision is auto");
    params.precision = (vlr_precision)9;
    char err[256] = "";
    m = NULL;
    CHECK(vlr_model_load(MODEL, &params, &m, err, sizeof err) == VLR_ERR_CONFIG && !m && strstr(err, "precision"),
          "an out-of-range precision is refused: %s", err);
    free(cases_text);
    free(exp_text);
    return test_report();
}
