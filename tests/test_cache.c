/* test_cache.c: the shared reuse store (vlr_cache: vision cache + prefix cache). Every score with a
 * cache must equal, bit for bit, the score of a fresh session without one, in f32, bf16 and int8;
 * interleaved prompts keep their reuse (counted tokens, not just scores); a group's answers equal
 * the answers alone; two threads on one cache agree with the reference; a tiny budget stays within
 * it and still scores right; a forced collision of the lookup digest never hands one image's rows
 * to another. Then the CLI: --prefix-cache and the summary line. */
#include "test.h"
#include "test_model.h"
#include "test_cmd.h"

#include <pthread.h>

#include "cache.h"
#include "digest.h"
#include "model.h"
#include "request.h"

#define MODEL "tests/reference/models/tiny-a"
#define BASE "tests/reference"

/* Two prompts (A: demo.jpg, B: coffee.jpg) with four answers each; the traffic interleaves them. */
#define PROMPT_A "\"image\": {\"image\": \"images/demo.jpg\", \"max_pixels\": 50176}, \"question\": \"Is purple the highest value in this chart? Answer with a short explanation.\""
#define PROMPT_B "\"image\": {\"image\": \"images/coffee.jpg\", \"max_pixels\": 50176}, \"question\": \"What is in the cup, and what colour is it?\""
static const char *const answers[4] = {"Yes, purple is the highest bar.", "No.", "The chart shows purple at about 80, above the rest.",
                                       "I cannot tell from the image."};
enum { N_TRAFFIC = 8 };
/* prompt (0 = A, 1 = B) and answer of each request, in order */
static const int traffic[N_TRAFFIC][2] = {{0, 0}, {0, 1}, {1, 0}, {1, 1}, {0, 2}, {1, 2}, {0, 3}, {1, 3}};

static char *request_json(int prompt, int answer) {
    vlr_buf b = {0};
    vlr_buf_printf(&b, "{%s, \"answer\": \"%s\"}", prompt ? PROMPT_B : PROMPT_A, answers[answer]);
    return b.data;
}

static vlr_model *load(vlr_precision precision) { return test_load_tiny(2, precision); }

static vlr_status score(vlr_session *s, const char *json, double *out) {
    return vlr_score_json(s, json, strlen(json), BASE, out);
}

/* The score of json on a fresh session with no cache. */
static double reference_score(const vlr_model *m, const char *json) {
    vlr_session *s = NULL;
    double v = NAN;
    CHECK(vlr_session_init(m, &s) == VLR_OK, "session");
    CHECK(s && score(s, json, &v) == VLR_OK, "reference: %s", vlr_session_errmsg(s));
    vlr_session_free(s);
    return v;
}

static vlr_cache *new_cache(const vlr_model *m, size_t vision_bytes, size_t prefix_bytes) {
    vlr_cache *c = NULL;
    CHECK(vlr_cache_new(m, vision_bytes, prefix_bytes, &c) == VLR_OK, "vlr_cache_new");
    return c;
}

/* A session of m on cache c. */
static vlr_session *cached_session(const vlr_model *m, vlr_cache *c) {
    vlr_session *s = NULL;
    CHECK(vlr_session_init(m, &s) == VLR_OK && vlr_session_set_cache(s, c) == VLR_OK, "session on the cache");
    return s;
}

/* SipHash-2-4 against the paper's test vectors (key 00..0f; messages 00..(n-1)). */
static void test_siphash_vectors(void) {
    const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
    unsigned char msg[16];
    for (int i = 0; i < 16; i++) msg[i] = (unsigned char)i;
    CHECK(vlr_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ull, "empty: %016llx", (unsigned long long)vlr_siphash(key, msg, 0));
    CHECK(vlr_siphash(key, msg, 15) == 0xa129ca6149be45e5ull, "15 bytes: %016llx",
          (unsigned long long)vlr_siphash(key, msg, 15));
    vlr_digest_key a, b;
    vlr_err e = {0};
    CHECK(vlr_digest_key_random(&a, &e) == VLR_OK && vlr_digest_key_random(&b, &e) == VLR_OK, "getrandom: %s", e.msg);
    CHECK(a.lookup[0] != b.lookup[0] && a.lookup[0] != a.confirm[0], "two draws give different keys");
}

/* Interleaved traffic on one session with a cache, in one precision: bits equal the reference, and a
 * prompt that comes back after the other keeps (at least the whole blocks of) its consecutive reuse,
 * where a session without a prefix cache keeps only the shared template head. */
static void test_interleaved(vlr_precision precision) {
    vlr_model *m = load(precision);
    if (!m) return;
    vlr_session *plain = NULL;
    vlr_cache *c = new_cache(m, 64u << 20, 256u << 20);
    vlr_session *s = cached_session(m, c);
    CHECK(vlr_session_init(m, &plain) == VLR_OK, "session without a cache");
    size_t reused[N_TRAFFIC], plain_reused[N_TRAFFIC], n_tokens[N_TRAFFIC];
    for (int i = 0; i < N_TRAFFIC; i++) {
        char *json = request_json(traffic[i][0], traffic[i][1]);
        double got = NAN, without = NAN, want = reference_score(m, json);
        CHECK(score(s, json, &got) == VLR_OK, "request %d: %s", i, vlr_session_errmsg(s));
        reused[i] = vlr_session_last_reused_tokens(s);
        n_tokens[i] = vlr_session_last_n_tokens(s);
        CHECK(score(plain, json, &without) == VLR_OK, "request %d without cache", i);
        plain_reused[i] = vlr_session_last_reused_tokens(plain);
        CHECK(same_bits(got, want) && same_bits(without, want), "%s request %d: %.17g with the cache, %.17g without, "
              "%.17g fresh", vlr_precision_name(precision), i, got, without, want);
        free(json);
    }
    /* requests 1 and 3 are each prompt's second answer right after its first: the consecutive reuse */
    for (int i = 4; i < N_TRAFFIC; i++) {
        const size_t consecutive = reused[traffic[i][0] ? 3 : 1] / VLR_PREFIX_BLOCK * VLR_PREFIX_BLOCK;
        CHECK(consecutive > 64, "the consecutive case reuses the image and question (%zu)", consecutive);
        CHECK(reused[i] >= consecutive && reused[i] < n_tokens[i],
              "request %d after the other prompt reuses %zu of %zu tokens (consecutive: %zu)", i, reused[i],
              n_tokens[i], consecutive);
        CHECK(plain_reused[i] + 64 < reused[i], "without a prefix cache request %d reuses only %zu (cache: %zu)", i,
              plain_reused[i], reused[i]);
    }
    vlr_cache_stats st;
    vlr_cache_get_stats(c, &st);
    CHECK(st.prefix_hits >= 4, "prefix hits %llu", (unsigned long long)st.prefix_hits);
    CHECK(st.vision_hits == 0 && st.vision_misses == 2,
          "the images run once each, and never again once their prefix is cached (%llu hits, %llu misses)",
          (unsigned long long)st.vision_hits, (unsigned long long)st.vision_misses);
    size_t total = 0, total_reused = 0;
    for (int i = 0; i < N_TRAFFIC; i++) total += n_tokens[i], total_reused += reused[i];
    CHECK(st.tokens == total && st.reused_tokens == total_reused, "counters: %llu of %llu, want %zu of %zu",
          (unsigned long long)st.reused_tokens, (unsigned long long)st.tokens, total_reused, total);
    CHECK(st.prefix_bytes > 0 && st.prefix_blocks * VLR_PREFIX_BLOCK * vlr_text_kv_bytes(&m->cfg, 1) <= st.prefix_bytes,
          "%llu blocks in %llu bytes", (unsigned long long)st.prefix_blocks, (unsigned long long)st.prefix_bytes);
    vlr_session_free(s);
    vlr_session_free(plain);
    vlr_cache_free(c);
    vlr_model_free(m);
}

/* A group's answers (one request, "answers": [...]) on a session with a shared cache equal each answer
 * alone; a second session on the same cache restores the prompt from it for its very first answer. */
static void test_group(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    if (!m) return;
    vlr_session *s[2] = {NULL, NULL};
    vlr_cache *c = new_cache(m, 64u << 20, 256u << 20);
    const char *group = "{" PROMPT_A ", \"answers\": [\"Yes, purple is the highest bar.\", \"No.\", "
                        "\"The chart shows purple at about 80, above the rest.\", \"I cannot tell from the image.\"]}";
    for (int k = 0; k < 2; k++) {
        s[k] = cached_session(m, c);
        vlr_parsed_request r;
        vlr_err e = {0};
        CHECK(vlr_request_parse(group, strlen(group), 0, BASE, &r, &e) == VLR_OK && r.n_answers == 4, "group: %s", e.msg);
        for (size_t i = 0; i < r.n_answers; i++) {
            vlr_parsed_request_answer(&r, i);
            double got = NAN;
            char *alone = request_json(0, (int)i);
            CHECK(vlr_score(s[k], &r.req, &got) == VLR_OK, "answer %zu: %s", i, vlr_session_errmsg(s[k]));
            double want = reference_score(m, alone);
            CHECK(same_bits(got, want), "session %d answer %zu: %.17g in the group, %.17g alone", k, i, got, want);
            size_t reused = vlr_session_last_reused_tokens(s[k]);
            if (i > 0 || k > 0)
                CHECK(reused > 64, "session %d answer %zu reuses the prompt (%zu tokens)", k, i, reused);
            free(alone);
        }
        vlr_parsed_request_free(&r);
    }
    vlr_session_free(s[0]);
    vlr_session_free(s[1]);
    vlr_cache_free(c);
    vlr_model_free(m);
}

typedef struct thread_arg {
    const vlr_model *m;
    vlr_cache *c;
    const double *want; /* [N_TRAFFIC] */
    int reverse;
    int mismatches, failures;
} thread_arg;

static void *score_traffic(void *p) {
    thread_arg *a = p;
    vlr_session *s = NULL;
    if (vlr_session_init(a->m, &s) != VLR_OK || vlr_session_set_cache(s, a->c) != VLR_OK) {
        a->failures++;
        vlr_session_free(s);
        return NULL;
    }
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < N_TRAFFIC; k++) {
            const int i = a->reverse ? N_TRAFFIC - 1 - k : k;
            char *json = request_json(traffic[i][0], traffic[i][1]);
            double got;
            if (score(s, json, &got) != VLR_OK) a->failures++;
            else if (!same_bits(got, a->want[i])) a->mismatches++;
            free(json);
        }
    vlr_session_free(s);
    return NULL;
}

/* Two threads, two sessions, one cache, the traffic in opposite orders (ASan/UBSan run this too). */
static void test_two_threads(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    if (!m) return;
    double want[N_TRAFFIC];
    for (int i = 0; i < N_TRAFFIC; i++) {
        char *json = request_json(traffic[i][0], traffic[i][1]);
        want[i] = reference_score(m, json);
        free(json);
    }
    vlr_cache *c = new_cache(m, 64u << 20, 256u << 20);
    thread_arg args[2] = {{m, c, want, 0, 0, 0}, {m, c, want, 1, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, score_traffic, &args[i]) == 0, "thread %d", i);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++)
        CHECK(args[i].failures == 0 && args[i].mismatches == 0, "thread %d: %d failures, %d scores differ", i,
              args[i].failures, args[i].mismatches);
    vlr_cache_stats st;
    vlr_cache_get_stats(c, &st);
    CHECK(st.tokens > 0 && st.reused_tokens > st.tokens / 2, "the threads reuse each other's work: %llu of %llu",
          (unsigned long long)st.reused_tokens, (unsigned long long)st.tokens);
    vlr_cache_free(c);
    vlr_model_free(m);
}

typedef struct same_arg {
    const vlr_model *m;
    vlr_cache *c;
    pthread_barrier_t *start;
    double score;
    vlr_status rc;
} same_arg;

static void *score_same(void *p) {
    same_arg *a = p;
    vlr_session *s = NULL;
    a->rc = vlr_session_init(a->m, &s);
    if (a->rc == VLR_OK) a->rc = vlr_session_set_cache(s, a->c);
    char *json = request_json(0, 0);
    pthread_barrier_wait(a->start);
    if (a->rc == VLR_OK) a->rc = score(s, json, &a->score);
    free(json);
    vlr_session_free(s);
    return NULL;
}

/* Two sessions given the same image at the same moment: one runs the tower, the other waits for its
 * rows (one miss, not two), and both score right. */
static void test_concurrent_image_once(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    if (!m) return;
    char *json = request_json(0, 0);
    const double want = reference_score(m, json);
    free(json);
    for (int round = 0; round < 3; round++) {
        vlr_cache *c = new_cache(m, 64u << 20, 0);
        pthread_barrier_t start;
        pthread_barrier_init(&start, NULL, 2);
        same_arg args[2] = {{m, c, &start, NAN, VLR_OK}, {m, c, &start, NAN, VLR_OK}};
        pthread_t t[2];
        for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, score_same, &args[i]) == 0, "thread %d", i);
        for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
        pthread_barrier_destroy(&start);
        for (int i = 0; i < 2; i++)
            CHECK(args[i].rc == VLR_OK && same_bits(args[i].score, want), "round %d thread %d: %.17g, want %.17g",
                  round, i, args[i].score, want);
        vlr_cache_stats st;
        vlr_cache_get_stats(c, &st);
        CHECK(st.vision_misses == 1 && st.vision_hits == 1, "round %d: the tower ran once (%llu misses, %llu hits)",
              round, (unsigned long long)st.vision_misses, (unsigned long long)st.vision_hits);
        vlr_cache_free(c);
    }
    vlr_model_free(m);
}

/* A budget of a few blocks: the cache stays within it, evicts, and every score is still right; a
 * budget below one block stores nothing. */
static void test_tiny_budget(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    if (!m) return;
    const size_t block = VLR_PREFIX_BLOCK * vlr_text_kv_bytes(&m->cfg, 1);
    const size_t budgets[2] = {3 * block + 1024, block / 2};
    for (int b = 0; b < 2; b++) {
        vlr_session *s = NULL;
        vlr_cache *c = new_cache(m, 0, budgets[b]);
        s = cached_session(m, c);
        for (int i = 0; i < N_TRAFFIC; i++) {
            char *json = request_json(traffic[i][0], traffic[i][1]);
            double got = NAN, want = reference_score(m, json);
            CHECK(score(s, json, &got) == VLR_OK && same_bits(got, want), "budget %zu request %d: %.17g vs %.17g",
                  budgets[b], i, got, want);
            vlr_cache_stats st;
            vlr_cache_get_stats(c, &st);
            CHECK(st.prefix_bytes <= budgets[b], "request %d: %llu bytes held, budget %zu", i,
                  (unsigned long long)st.prefix_bytes, budgets[b]);
            free(json);
        }
        vlr_cache_stats st;
        vlr_cache_get_stats(c, &st);
        if (b == 0) CHECK(st.prefix_evictions > 0 && st.prefix_blocks == 3, "evictions %llu, blocks %llu",
                          (unsigned long long)st.prefix_evictions, (unsigned long long)st.prefix_blocks);
        else CHECK(st.prefix_blocks == 0 && st.prefix_hits == 0, "below one block nothing is stored (%llu blocks)",
                   (unsigned long long)st.prefix_blocks);
        vlr_session_free(s);
        vlr_cache_free(c);
    }
    vlr_model_free(m);
}

/* Every image's lookup digest forced equal (as if an attacker had found a collision): the confirm
 * digest keeps the images apart in the vision cache and in the prefix cache's block keys. */
static void test_forced_collision(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    if (!m) return;
    vlr_session *s = NULL;
    vlr_cache *c = new_cache(m, 64u << 20, 256u << 20);
    if (!c) return;
    vlr_cache_secret(c)->test_equal_lookup = true;
    s = cached_session(m, c);
    /* the same text around two images of the same size: equal ids, equal grids */
    const char *r[2] = {"{\"image\": {\"image\": \"images/demo.jpg\", \"resized_height\": 112, \"resized_width\": 112}, "
                        "\"question\": \"q\", \"answer\": \"a\"}",
                        "{\"image\": {\"image\": \"images/coffee.jpg\", \"resized_height\": 112, \"resized_width\": 112}, "
                        "\"question\": \"q\", \"answer\": \"a\"}"};
    double got[2], want[2];
    for (int i = 0; i < 2; i++) {
        want[i] = reference_score(m, r[i]);
        CHECK(score(s, r[i], &got[i]) == VLR_OK && same_bits(got[i], want[i]), "image %d: %.17g, fresh %.17g", i,
              got[i], want[i]);
    }
    CHECK(!same_bits(want[0], want[1]), "the two images score differently (%.17g)", want[0]);
    vlr_cache_stats st;
    vlr_cache_get_stats(c, &st);
    CHECK(st.vision_rejected == 1 && st.vision_hits == 0, "the colliding entry was found and refused (%llu rejected, "
          "%llu hits)", (unsigned long long)st.vision_rejected, (unsigned long long)st.vision_hits);
    /* the second image's prefix stops at its image: the blocks over it belong to the other one */
    CHECK(vlr_session_last_reused_tokens(s) < vlr_session_last_n_tokens(s) - 4, "reuse stops at the image (%zu of %zu)",
          vlr_session_last_reused_tokens(s), vlr_session_last_n_tokens(s));
    vlr_session_free(s);
    vlr_cache_free(c);
    vlr_model_free(m);
}

/* A cache belongs to one model; the private vision cache still works and counts. */
static void test_api_rules(void) {
    vlr_model *m = load(VLR_PRECISION_F32), *other = load(VLR_PRECISION_F32);
    if (!m || !other) return;
    vlr_cache *c = NULL;
    vlr_session *s = NULL;
    CHECK(vlr_cache_new(other, 1u << 20, 1u << 20, &c) == VLR_OK, "cache");
    CHECK(vlr_session_init(m, &s) == VLR_OK, "session");
    CHECK(vlr_session_set_cache(s, c) == VLR_ERR_INPUT && strstr(vlr_session_errmsg(s), "another model"),
          "a cache of another model is refused: %s", vlr_session_errmsg(s));
    CHECK(vlr_session_set_vision_cache(s, 64u << 20) == VLR_OK, "private vision cache");
    char *json = request_json(0, 0);
    double a, b;
    uint64_t hits, misses;
    CHECK(score(s, json, &a) == VLR_OK && score(s, json, &b) == VLR_OK && same_bits(a, b), "scores");
    vlr_session_vision_cache_stats(s, &hits, &misses);
    CHECK(misses == 1 && hits == 0, "the second run reuses the session's own prefix, past the image (%llu/%llu)",
          (unsigned long long)hits, (unsigned long long)misses);
    free(json);
    vlr_session_free(s);
    vlr_cache_free(c);
    vlr_model_free(m);
    vlr_model_free(other);
}

/* score --prefix-cache: the interleaved traffic as JSON Lines; the summary line says the reuse. */
static void test_cli(void) {
    char bin[PATH_MAX], cmd[PATH_MAX * 3], tmp[] = "/tmp/vlr_cache_XXXXXX";
    if (!test_vlreward_bin(bin, sizeof bin)) {
        SKIP(1, "%s not built", bin);
        return;
    }
    CHECK(mkdtemp(tmp) != NULL, "mkdtemp");
    char in_path[PATH_MAX], err_path[PATH_MAX];
    snprintf(in_path, sizeof in_path, "%s/in.jsonl", tmp);
    snprintf(err_path, sizeof err_path, "%s/err", tmp);
    FILE *f = fopen(in_path, "w");
    CHECK(f != NULL, "%s", in_path);
    if (!f) return;
    char abs_base[PATH_MAX];
    CHECK(realpath(BASE, abs_base) != NULL, "realpath");
    for (int i = 0; i < N_TRAFFIC; i++) {
        char *json = request_json(traffic[i][0], traffic[i][1]);
        /* paths absolute: the input lives in /tmp */
        vlr_buf line = {0};
        const char *img = strstr(json, "images/");
        vlr_buf_append(&line, json, (size_t)(img - json));
        vlr_buf_printf(&line, "%s/%s", abs_base, img);
        fprintf(f, "%s\n", line.data);
        vlr_buf_free(&line);
        free(json);
    }
    fclose(f);
    char *out = NULL, *err = NULL;
    const char *variants[2] = {"", "--prefix-cache 0"};
    unsigned long long reused[2] = {0, 0}, total[2] = {0, 0};
    for (int v = 0; v < 2; v++) {
        snprintf(cmd, sizeof cmd, "%s score --model %s --precision f32 --threads 2 --quiet --input %s %s", bin, MODEL,
                 in_path, variants[v]);
        int rc = test_run(cmd, err_path, &out);
        err = test_read_text(err_path);
        CHECK(rc == 0, "%s: exit %d: %s", cmd, rc, err ? err : "");
        const char *at = err ? strstr(err, "tok/s), ") : NULL;
        if (at) at += strlen("tok/s), ");
        CHECK(at && sscanf(at, "%llu of %llu tokens reused", &reused[v], &total[v]) == 2, "summary: %s", err ? err : "");
        if (v == 0) CHECK(err && strstr(err, "prefix cache 4 hits"), "prefix hits in the summary: %s", err ? err : "");
        free(out);
        free(err);
    }
    CHECK(total[0] == total[1] && reused[0] > reused[1] + 200, "reused %llu of %llu with the cache, %llu without",
          reused[0], total[0], reused[1]);
    snprintf(cmd, sizeof cmd, "%s score --model %s --input %s --prefix-cache lots", bin, MODEL, in_path);
    int rc = test_run(cmd, err_path, &out);
    err = test_read_text(err_path);
    CHECK(rc == 2 && err && strstr(err, "--prefix-cache: expected megabytes"), "bad value: exit %d, %s", rc, err ? err : "");
    free(out);
    free(err);
    unlink(in_path);
    unlink(err_path);
    rmdir(tmp);
}

int main(void) {
    TEST_RUN(test_siphash_vectors);
    TEST_RUN_WITH(test_interleaved, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_interleaved, VLR_PRECISION_BF16);
    TEST_RUN_WITH(test_interleaved, VLR_PRECISION_INT8);
    TEST_RUN(test_group);
    TEST_RUN(test_two_threads);
    TEST_RUN(test_concurrent_image_once);
    TEST_RUN(test_tiny_budget);
    TEST_RUN(test_forced_collision);
    TEST_RUN(test_api_rules);
    TEST_RUN(test_cli);
    return test_report();
}
