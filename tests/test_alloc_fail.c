/* test_alloc_fail.c: SQLite's habit. Every allocation the library makes through malloc, calloc,
 * realloc, aligned_alloc and posix_memalign goes through the wrappers below (the test binary is linked
 * with -Wl,--wrap for them, see the Makefile), which can make the Nth one fail. A model load and a
 * scoring run (an image and text, on a fresh session) are repeated with N = 1, 2, ... until one runs
 * without reaching N (the load, ~450 allocations, ~80 ms a run, takes a sample: see test_load, in f32
 * and in int8, whose quantization allocates last): every run must end with VLR_OK or a clean error status and
 * message, never a crash, and a run that absorbed a failure must score the same bits; under ASan/UBSan
 * (make test's second pass) LeakSanitizer also proves that no failing path leaks. */
#include <stdlib.h>

#include "test.h"
#include "vlreward.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t c, size_t n);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t a, size_t n);
int __real_posix_memalign(void **p, size_t a, size_t n);

static long alloc_count, fail_at = -1; /* the fail_at-th allocation (1-based) fails; -1: none */

static bool should_fail(void) {
    if (fail_at < 0) return false;
    return ++alloc_count == fail_at;
}
void *__wrap_malloc(size_t n) { return should_fail() ? NULL : __real_malloc(n); }
void *__wrap_calloc(size_t c, size_t n) { return should_fail() ? NULL : __real_calloc(c, n); }
void *__wrap_realloc(void *p, size_t n) { return should_fail() ? NULL : __real_realloc(p, n); }
void *__wrap_aligned_alloc(size_t a, size_t n) { return should_fail() ? NULL : __real_aligned_alloc(a, n); }
int __wrap_posix_memalign(void **p, size_t a, size_t n) { return should_fail() ? 12 /* ENOMEM */ : __real_posix_memalign(p, a, n); }

#define MODEL "tests/reference/models/tiny-a"
static const char *REQUEST = "{\"image\": \"tests/reference/images/demo.jpg\", \"question\": \"Is Purple the highest value?\", "
                             "\"answer\": \"No.\"}";

static bool clean_status(vlr_status rc) { return rc == VLR_OK || rc == VLR_ERR_NOMEM || rc == VLR_ERR_IO; }

static void test_load(vlr_precision precision) {
    vlr_params params = vlr_default_params();
    params.n_threads = 1;
    params.precision = precision;
    long n, runs = 0;
    int failures = 0;
    /* f32: the first 40, then every 13th; int8: its quantization comes after what the f32 run covers,
     * so the first 40, every 40th up to 420, then every 4th */
    const bool int8 = precision == VLR_PRECISION_INT8;
    for (n = 1;; n = n < 40 ? n + 1 : !int8 ? n + 13 : n < 420 ? n + 40 : n + 4) {
        char err[1024] = "";
        runs++;
        vlr_model *m = NULL;
        alloc_count = 0;
        fail_at = n;
        const vlr_status rc = vlr_model_load(MODEL, &params, &m, err, sizeof err);
        const bool reached = alloc_count >= n;
        fail_at = -1;
        if (!clean_status(rc) || (rc != VLR_OK && !err[0])) failures++;
        if (rc != VLR_OK && m) failures++;
        vlr_model_free(m);
        if (!reached) break; /* this run needed fewer than n allocations: every one has failed once */
    }
    printf("model load (%s): %ld runs, the last needing fewer than %ld allocations\n", vlr_precision_name(precision),
           runs, n);
    CHECK(failures == 0 && runs > 40, "model load: %d runs ended without a clean status and message", failures);
}

static void test_score(void) {
    vlr_params params = vlr_default_params();
    params.n_threads = 1;
    char err[1024];
    vlr_model *m = NULL;
    if (vlr_model_load(MODEL, &params, &m, err, sizeof err) != VLR_OK) {
        CHECK(0, "load: %s", err);
        return;
    }
    double want = 0;
    vlr_session *s0 = NULL;
    CHECK(vlr_session_init(m, &s0) == VLR_OK && vlr_score_json(s0, REQUEST, strlen(REQUEST), ".", &want) == VLR_OK,
          "score");
    vlr_session_free(s0);
    long n;
    int failures = 0, oks = 0;
    for (n = 1;; n++) {
        vlr_session *s = NULL;
        double score = 0;
        alloc_count = 0;
        fail_at = n;
        vlr_status rc = vlr_session_init(m, &s);
        if (rc == VLR_OK) {
            rc = vlr_score_json(s, REQUEST, strlen(REQUEST), ".", &score);
            if (rc != VLR_OK && !vlr_session_errmsg(s)[0]) failures++;
        }
        const bool reached = alloc_count >= n;
        fail_at = -1;
        if (!clean_status(rc)) {
            failures++;
            fprintf(stderr, "  allocation %ld failed: status %d %s\n", n, rc, s ? vlr_session_errmsg(s) : "");
        }
        if (rc == VLR_OK) {
            oks++;
            if (memcmp(&score, &want, sizeof score) != 0) failures++; /* a failure absorbed must not change bits */
        }
        vlr_session_free(s);
        if (!reached) break;
    }
    printf("session + scoring: %ld allocations, each failed once (%d runs still scored)\n", n - 1, oks);
    CHECK(failures == 0 && n > 10, "scoring: %d runs ended without a clean status, message or the same score",
          failures);
    vlr_model_free(m);
}

int main(void) {
    TEST_RUN_WITH(test_load, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_load, VLR_PRECISION_INT8);
    TEST_RUN(test_score);
    return test_report();
}
