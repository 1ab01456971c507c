/* test.h: the minimal harness every test binary uses. Tests run from the repository root, so fixture
 * paths start with tests/.
 *
 *   CHECK(cond, fmt, ...)        counts a pass or a failure; never aborts ("FAIL file:line: ..." on stderr)
 *   CHECK_NEAR(got, want, tol, what)
 *   SKIP(n, fmt, ...)            counts n checks that cannot run on this machine (no AVX-512, no network,
 *                                a sanitizer build that inflates RSS...) and says why on stderr:
 *                                "SKIP file:line: why". A skip is not a pass: say it, never return quietly.
 *   TEST_RUN(fn)                 runs `void fn(void)` as a named test (its name is the function's name);
 *   TEST_RUN_WITH(fn, args...)   the same for `void fn(args...)`. Both are expressions: 1 if fn ran.
 *   test_report()                last line of main(): prints "N passed, N failed, N skipped" (read by
 *                                scripts/run-tests) and returns the exit status (1 if anything failed).
 *
 * One named test alone: VLR_TEST=<name> (the environment, so main() keeps its signature and the
 * binaries spawned by a test are not confused by extra arguments), e.g.
 *     VLR_TEST=test_errors build/tests/test_json
 *     scripts/run-tests build test_json:test_errors       (the same through the runner)
 * Every TEST_RUN whose name differs is passed over; the code of main() outside TEST_RUN (fixtures,
 * servers, temporary folders) still runs, so a test may rely on it. A test that depends on another one
 * ensures what it needs itself (or main() does it unconditionally). When VLR_TEST names no TEST_RUN that
 * main() reached, test_report() counts a failure and lists the names it passed over: a typo never
 * passes with 0 checks. So does a binary whose main() does not use TEST_RUN yet.
 *
 * Each TEST_RUN prints "<name>: N passed, N failed, N skipped (T s)" on stdout when it ends, and
 * "FAIL test <name>: ..." on stderr when it failed. A test that records no check and no skip at all
 * counts as failed: it returned early without saying why. TEST_RUNs do not nest. */
#ifndef VLR_TEST_H
#define VLR_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int test_passed, test_failed, test_skipped;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            test_passed++;                                                      \
        } else {                                                                \
            test_failed++;                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* |got - want| <= tol */
#define CHECK_NEAR(got, want, tol, what)                                        \
    do {                                                                        \
        double got_ = (got), want_ = (want);                                    \
        CHECK(fabs(got_ - want_) <= (tol), "%s: got %.10g want %.10g (|diff| %.3g > %.3g)", \
              (what), got_, want_, fabs(got_ - want_), (double)(tol));          \
    } while (0)

/* n checks not run here, and why (printf-style). */
#define SKIP(n, ...)                                                            \
    do {                                                                        \
        test_skipped += (n);                                                    \
        fprintf(stderr, "SKIP %s:%d: ", __FILE__, __LINE__);                    \
        fprintf(stderr, __VA_ARGS__);                                           \
        fputc('\n', stderr);                                                    \
    } while (0)

/* The state of the named-test mechanism: no registry, each TEST_RUN decides for itself. */
static struct {
    int init, ran;             /* VLR_TEST read; how many TEST_RUNs ran under a selection */
    const char *only;          /* VLR_TEST, or NULL: run every test */
    const char *name;          /* the test under way */
    int passed, failed, skipped;
    double t0;
    char passed_over[2048];    /* names not selected, for the unknown-name message */
} test_state_;

/* The name VLR_TEST selects, or NULL when every test runs. */
static inline const char *test_selection(void) {
    if (!test_state_.init) {
        const char *s = getenv("VLR_TEST");
        test_state_.only = s && *s ? s : NULL;
        test_state_.init = 1;
    }
    return test_state_.only;
}

static inline double test_seconds_(void) {
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static inline int test_begin_(const char *name) {
    const char *only = test_selection();
    if (only && strcmp(only, name) != 0) {
        size_t used = strlen(test_state_.passed_over);
        if (used + strlen(name) + 2 < sizeof test_state_.passed_over)
            snprintf(test_state_.passed_over + used, sizeof test_state_.passed_over - used, "%s%s",
                     used ? " " : "", name);
        return 0;
    }
    if (only) {
        test_state_.ran++;
        printf("running only %s (VLR_TEST)\n", name);
    }
    test_state_.name = name;
    test_state_.passed = test_passed, test_state_.failed = test_failed, test_state_.skipped = test_skipped;
    test_state_.t0 = test_seconds_();
    fflush(stdout);
    return 1;
}

static inline void test_end_(void) {
    int p = test_passed - test_state_.passed, f = test_failed - test_state_.failed;
    int s = test_skipped - test_state_.skipped;
    if (p + f + s == 0) {
        test_failed++, f++;
        fprintf(stderr, "FAIL test %s: recorded no check and no skip (returned early without saying why?)\n",
                test_state_.name);
    } else if (f) {
        fprintf(stderr, "FAIL test %s: %d of its checks failed\n", test_state_.name, f);
    }
    printf("%s: %d passed, %d failed, %d skipped (%.2f s)\n", test_state_.name, p, f, s,
           test_seconds_() - test_state_.t0);
    fflush(stdout);
    test_state_.name = NULL;
}

#define TEST_RUN_WITH(fn, ...) (test_begin_(#fn) ? ((fn)(__VA_ARGS__), test_end_(), 1) : 0)
#define TEST_RUN(fn) TEST_RUN_WITH(fn, )

static inline int test_report(void) {
    if (test_selection() && !test_state_.ran) {
        test_failed++;
        fprintf(stderr, "FAIL VLR_TEST=%s: no test of that name ran in this binary (tests passed over: %s)\n",
                test_state_.only,
                test_state_.passed_over[0] ? test_state_.passed_over : "none: its main() does not use TEST_RUN");
    }
    printf("%d passed, %d failed, %d skipped\n", test_passed, test_failed, test_skipped);
    return test_failed != 0;
}

#endif
