/* test_model.h: what the scoring tests share: the bundled tiny model loaded at a precision, a bitwise
 * comparison of scores, and a thread that sets a cancel flag later. Include after test.h. */
#ifndef VLR_TEST_MODEL_H
#define VLR_TEST_MODEL_H

#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "vlreward.h"

#define TEST_TINY_MODEL "tests/reference/models/tiny-a"

/* Scores compare bit for bit: == would call -0.0 and 0.0 the same. */
static inline bool same_bits(double a, double b) { return memcmp(&a, &b, sizeof a) == 0; }

/* The tiny model (a failed CHECK and NULL when it does not load). */
static inline vlr_model *test_load_tiny(int threads, vlr_precision precision) {
    vlr_params params = vlr_default_params();
    params.n_threads = threads;
    params.precision = precision;
    char err[1024];
    vlr_model *m = NULL;
    vlr_status rc = vlr_model_load(TEST_TINY_MODEL, &params, &m, err, sizeof err);
    CHECK(rc == VLR_OK, "load %s: %s", TEST_TINY_MODEL, err);
    return m;
}

/* Sets *flag after delay_us, from another thread (as a host's timeout would): run cancel_later
 * with pthread_create. */
typedef struct canceller {
    volatile int *flag;
    long delay_us;
} canceller;
static inline void *cancel_later(void *arg) {
    const canceller *c = arg;
    usleep((useconds_t)c->delay_us);
    *c->flag = 1;
    return NULL;
}

#endif
