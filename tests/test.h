/* test.h: the minimal harness every test binary uses. CHECK counts, never aborts; each binary
 * ends with test_report(), which prints "N passed, N failed" (read by scripts/run-tests) and returns
 * the exit status. Tests run from the repository root, so fixture paths start with tests/. */
#ifndef VLR_TEST_H
#define VLR_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed, test_failed;

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

static inline int test_report(void) {
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed != 0;
}

#endif
