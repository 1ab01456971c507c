/* test_group.c: a group's answers scored as one batched suffix prefill (text.c
 * vlr_text_prefill_suffixes, forward.c vlr_forward_suffixes, model.c vlr_score_answers) give, bit for
 * bit, each answer's score alone from an empty cache, in f32, bf16 and int8, on every kernel table this
 * CPU runs. The decoder level packs suffixes of 1 to 20 tokens into passes of a small chunk (several
 * suffixes a pass, one longer than a pass alone) after a prompt with an image; the request level
 * scores groups with a long answer (more than a default chunk) and a duplicate answer (a suffix of one
 * token). A cancelled batch returns VLR_ERR_INTERRUPTED and leaves the prompt reusable. */
#include <pthread.h>
#include <unistd.h>

#include "model.h"
#include "request.h"
#include "test.h"
#include "test_model.h"

#define MODEL "tests/reference/models/tiny-a"
#define BASE "tests/reference"
#define PROMPT_A "\"image\": {\"image\": \"images/demo.jpg\", \"max_pixels\": 50176}, \"question\": \"Is purple the highest value in this chart? Answer with a short explanation.\""

static bool cpu_runs(vlr_isa isa) {
    switch (isa) {
    case VLR_ISA_AVX2: return vlr_cpu_has_avx2();
    case VLR_ISA_AVX512: return vlr_cpu_has_avx512();
    case VLR_ISA_AVX512_BF16: return vlr_cpu_has_avx512_bf16();
    default: return true;
    }
}

static vlr_model *load(vlr_precision precision) { return test_load_tiny(2, precision); }

/* ---- the decoder level: vlr_forward_suffixes against vlr_forward of each whole sequence ------- */

enum { N_SUFFIXES = 11, CHUNK = 8 };
/* passes of CHUNK rows: [5 1] [3] 20 alone [2 4 1] [8] 9 alone [3 3] */
static const size_t suffix_len[N_SUFFIXES] = {5, 1, 3, 20, 2, 4, 1, 8, 9, 3, 3};

typedef struct prompt_seq {
    vlr_prepared p;       /* a request with one image; its first n ids are the prompt */
    size_t n, image_start, image_rows;
    float *vision;
} prompt_seq;

/* Ids and positions of the prompt followed by suffix j (ids of its own, none an image placeholder). */
static size_t whole_sequence(const vlr_model *m, const prompt_seq *q, size_t j, int32_t *ids, int32_t *pos) {
    const size_t n = q->n + suffix_len[j];
    memcpy(ids, q->p.ids.data, q->n * sizeof *ids);
    for (size_t t = 0; t < suffix_len[j]; t++) ids[q->n + t] = (int32_t)(300 + (j * 37 + t * 11) % 2000);
    const vlr_grid_thw g = {q->p.images[0].grid_t, q->p.images[0].grid_h, q->p.images[0].grid_w};
    int64_t delta;
    vlr_err e = {0};
    CHECK(vlr_rope_positions(ids, n, m->cfg.tokens.image_pad, &g, 1, m->cfg.vision.spatial_merge_size, pos, &delta,
                             &e) == VLR_OK, "positions: %s", e.msg);
    return n;
}

static vlr_status forward_from_empty(const vlr_model *m, const vlr_exec *x, const prompt_seq *q, const int32_t *ids,
                                     const int32_t *pos, size_t n, int chunk, vlr_text_state **st, double *score) {
    vlr_err e = {0};
    if (!*st) CHECK(vlr_text_state_init(&m->cfg, &m->weights.text, x, 0, chunk, st, &e) == VLR_OK, "%s", e.msg);
    vlr_text_truncate(*st, 0);
    const vlr_forward_seq seq = {.ids = ids, .positions = pos, .n = n, .start = 0, .n_images = 1, .images = q->p.images,
                                 .image_start = &q->image_start, .image_rows = &q->image_rows, .vision = q->vision};
    vlr_status rc = vlr_forward(&m->cfg, &m->weights, x, *st, &seq, score, NULL, &e);
    CHECK(rc == VLR_OK, "forward: %s", e.msg);
    return rc;
}

static void check_suffixes_on_table(const vlr_model *m, const prompt_seq *q) {
    vlr_workspace *ws = vlr_workspace_new(0), *acts = vlr_workspace_new(0);
    volatile int cancel = 0;
    const vlr_exec x = {.k = &m->kernels, .n_threads = 2, .ws = ws, .acts = acts, .cancel = &cancel};
    size_t rows = 0, max_n = q->n + 32;
    for (size_t j = 0; j < N_SUFFIXES; j++) rows += suffix_len[j];
    int32_t *ids = calloc(max_n, sizeof *ids), *pos = calloc(3 * max_n, sizeof *pos);
    int32_t *s_ids = calloc(rows, sizeof *s_ids), *s_pos = calloc(3 * rows, sizeof *s_pos);
    double want[N_SUFFIXES], got[N_SUFFIXES], prompt_score;
    vlr_text_state *alone = NULL, *st = NULL;
    vlr_err e = {0};
    CHECK(ws && acts && ids && pos && s_ids && s_pos, "memory");
    if (!ws || !acts || !ids || !pos || !s_ids || !s_pos) goto done;
    /* each answer alone, and the suffixes stacked with their own positions */
    for (size_t j = 0, at = 0; j < N_SUFFIXES; at += suffix_len[j], j++) {
        const size_t n = whole_sequence(m, q, j, ids, pos);
        if (forward_from_empty(m, &x, q, ids, pos, n, 0, &alone, &want[j])) goto done;
        memcpy(s_ids + at, ids + q->n, suffix_len[j] * sizeof *ids);
        for (size_t c = 0; c < 3; c++) memcpy(s_pos + c * rows + at, pos + c * n + q->n, suffix_len[j] * sizeof *pos);
    }
    /* the prompt (its own positions: they are causal) in a state of CHUNK-row passes, then the batch,
     * twice: the second runs on what the first left in the cache */
    whole_sequence(m, q, 0, ids, pos);
    int32_t *prompt_pos = calloc(3 * q->n, sizeof *prompt_pos);
    for (size_t c = 0; prompt_pos && c < 3; c++) memcpy(prompt_pos + c * q->n, pos + c * (q->n + suffix_len[0]), q->n * sizeof *pos);
    vlr_status rc = prompt_pos ? forward_from_empty(m, &x, q, ids, prompt_pos, q->n, CHUNK, &st, &prompt_score)
                               : VLR_ERR_NOMEM;
    free(prompt_pos);
    if (rc) goto done;
    for (int round = 0; round < 2; round++) {
        for (size_t j = 0; j < N_SUFFIXES; j++) got[j] = NAN;
        CHECK(vlr_forward_suffixes(&m->cfg, &m->weights, st, s_ids, s_pos, rows, suffix_len, N_SUFFIXES, got, NULL,
                                   &e) == VLR_OK, "suffixes: %s", e.msg);
        for (size_t j = 0; j < N_SUFFIXES; j++)
            CHECK(same_bits(got[j], want[j]), "%s %s round %d suffix %zu (%zu tokens): %.17g batched, %.17g alone",
                  vlr_precision_name(m->kernels.precision), m->kernels.isa, round, j, suffix_len[j], got[j], want[j]);
        CHECK(vlr_text_n_cached(st) == q->n, "the cache holds the prompt only: %zu of %zu", vlr_text_n_cached(st), q->n);
    }
    /* cancelled: interrupted, the prompt still there, and the next batch right */
    cancel = 1;
    CHECK(vlr_forward_suffixes(&m->cfg, &m->weights, st, s_ids, s_pos, rows, suffix_len, N_SUFFIXES, got, NULL, &e) ==
              VLR_ERR_INTERRUPTED && strcmp(e.msg, "interrupted") == 0, "cancelled: '%s'", e.msg);
    CHECK(vlr_text_n_cached(st) == q->n, "after a cancel the cache holds the prompt: %zu", vlr_text_n_cached(st));
    cancel = 0;
    CHECK(vlr_forward_suffixes(&m->cfg, &m->weights, st, s_ids, s_pos, rows, suffix_len, N_SUFFIXES, got, NULL, &e) ==
              VLR_OK && same_bits(got[3], want[3]) && same_bits(got[10], want[10]), "after a cancel: %s", e.msg);
    /* bad input: an empty suffix, an image placeholder */
    const size_t zero[2] = {3, 0};
    CHECK(vlr_forward_suffixes(&m->cfg, &m->weights, st, s_ids, s_pos, rows, zero, 2, got, NULL, &e) == VLR_ERR_INPUT &&
              strstr(e.msg, "suffix 1 has no tokens"), "an empty suffix: '%s'", e.msg);
    s_ids[2] = m->cfg.tokens.image_pad;
    CHECK(vlr_forward_suffixes(&m->cfg, &m->weights, st, s_ids, s_pos, rows, suffix_len, N_SUFFIXES, got, NULL, &e) ==
              VLR_ERR_INPUT && strstr(e.msg, "image_pad"), "an image placeholder in a suffix: '%s'", e.msg);
done:
    vlr_text_state_free(alone);
    vlr_text_state_free(st);
    free(ids);
    free(pos);
    free(s_ids);
    free(s_pos);
    vlr_workspace_free(ws);
    vlr_workspace_free(acts);
}

static void test_suffixes(vlr_precision precision) {
    const vlr_isa isas[] = {VLR_ISA_REF, VLR_ISA_AVX2, VLR_ISA_AVX512, VLR_ISA_AVX512_BF16};
    vlr_model *m = load(precision);
    vlr_session *s = NULL;
    prompt_seq q = {0};
    if (!m || vlr_session_init(m, &s) != VLR_OK) goto done;
    const char *req = "{" PROMPT_A ", \"answer\": \"x\"}";
    vlr_parsed_request r;
    vlr_err e = {0};
    CHECK(vlr_request_parse(req, strlen(req), 0, BASE, &r, &e) == VLR_OK, "parse: %s", e.msg);
    CHECK(vlr_prepare(s, &r.req, &q.p) == VLR_OK && q.p.n_images == 1, "prepare: %s", vlr_session_errmsg(s));
    vlr_parsed_request_free(&r);
    if (q.p.n_images != 1) goto done;
    q.n = q.p.ids.len - 2;
    const vlr_grid_thw g = {q.p.images[0].grid_t, q.p.images[0].grid_h, q.p.images[0].grid_w};
    q.image_rows = vlr_vision_n_tokens(&m->cfg, g);
    while (q.p.ids.data[q.image_start] != m->cfg.tokens.image_pad) q.image_start++;
    q.vision = calloc(q.image_rows * (size_t)m->cfg.text.hidden_size, sizeof(float));
    for (size_t t = 0; q.vision && t < sizeof isas / sizeof *isas; t++) {
        if (vlr_kernels_select(&m->kernels, isas[t], precision) != isas[t]) {
            /* f32 has no AVX512_BF16 table (it differs from AVX512 only in bf16): nothing to skip */
            if (cpu_runs(isas[t])) continue;
            SKIP(1, "%s on ISA %d: this CPU cannot run it", vlr_precision_name(precision), (int)isas[t]);
            continue;
        }
        check_suffixes_on_table(m, &q);
    }
done:
    free(q.vision);
    vlr_prepared_free(&q.p);
    vlr_session_free(s);
    vlr_model_free(m);
}

/* ---- the request level: vlr_score_answers against each answer as a request of its own --------- */

/* Answer i of r as a request of its own (r's messages with that answer last) on a fresh session. */
static double alone_score(const vlr_model *m, vlr_parsed_request *r, size_t i, size_t *n_tokens) {
    vlr_session *s = NULL;
    double v = NAN;
    vlr_parsed_request_answer(r, i);
    CHECK(vlr_session_init(m, &s) == VLR_OK, "session");
    CHECK(s && vlr_score(s, &r->req, &v) == VLR_OK, "alone: %s", vlr_session_errmsg(s));
    *n_tokens = vlr_session_last_n_tokens(s);
    vlr_session_free(s);
    return v;
}

/* answers: a JSON array's items, each a JSON string. Returns the tokens it scored (the group's, then
 * its last answer's once more). */
static uint64_t check_group(const vlr_model *m, vlr_session *s, const char *const *answers, size_t n) {
    vlr_buf b = {0};
    vlr_buf_printf(&b, "{%s, \"answers\": [", PROMPT_A);
    for (size_t i = 0; i < n; i++) vlr_buf_printf(&b, "%s%s", i ? ", " : "", answers[i]);
    vlr_buf_puts(&b, "]}");
    vlr_parsed_request r;
    vlr_err e = {0};
    double got[8];
    uint64_t tokens = 0, want_tokens = 0;
    size_t failed = 99, n_tokens = 0;
    CHECK(vlr_request_parse(b.data, b.len, 0, BASE, &r, &e) == VLR_OK && r.n_answers == n, "group: %s", e.msg);
    CHECK(vlr_score_answers(s, &r, got, &tokens, &failed) == VLR_OK, "group: %s", vlr_session_errmsg(s));
    for (size_t i = 0; i < n; i++) {
        const double want = alone_score(m, &r, i, &n_tokens);
        want_tokens += n_tokens;
        CHECK(same_bits(got[i], want), "%s answer %zu of %zu: %.17g in the group, %.17g alone",
              vlr_precision_name(m->kernels.precision), i, n, got[i], want);
    }
    CHECK(tokens == want_tokens, "tokens: %llu, the answers alone %llu", (unsigned long long)tokens,
          (unsigned long long)want_tokens);
    const size_t prompt = vlr_session_last_reused_tokens(s);
    CHECK(prompt > 64, "the last answer reused the prompt (%zu tokens)", prompt);
    /* the session holds and remembers the prompt only (answer by answer it would hold the last answer
     * whole): the next request reuses exactly the prompt, bit-identically */
    double next = NAN;
    vlr_parsed_request_answer(&r, n - 1);
    CHECK(vlr_score(s, &r.req, &next) == VLR_OK && same_bits(next, got[n - 1]), "the last answer again: %.17g, %.17g",
          next, got[n - 1]);
    CHECK(vlr_session_last_reused_tokens(s) == prompt, "after the group %zu tokens are reused, the prompt is %zu",
          vlr_session_last_reused_tokens(s), prompt);
    vlr_parsed_request_free(&r);
    vlr_buf_free(&b);
    return tokens + vlr_session_last_n_tokens(s);
}

static void test_answers(vlr_precision precision) {
    vlr_model *m = load(precision);
    vlr_session *s = NULL;
    vlr_cache *c = NULL;
    if (!m || vlr_session_init(m, &s) != VLR_OK) goto done;
    vlr_buf long_answer = {0}; /* some 700 tokens: longer than a default chunk of 512 */
    vlr_buf_puts(&long_answer, "\"");
    for (int i = 0; i < 350; i++) vlr_buf_puts(&long_answer, "purple bar ");
    vlr_buf_puts(&long_answer, "\"");
    const char *const mixed[] = {"\"Yes, purple is the highest bar.\"", "\"No.\"", long_answer.data,
                                 "\"The chart shows purple at about 80, above the rest.\"", "\"No.\"",
                                 "[{\"type\": \"text\", \"text\": \"I cannot tell \"}, {\"type\": \"text\", \"text\": \"from the image.\"}]"};
    const char *const twins[] = {"\"No.\"", "\"No.\""}; /* the second is one token after the first's prefix */
    check_group(m, s, mixed, 6);
    check_group(m, s, twins, 2);
    /* on a shared cache: the same, and its counters see every answer */
    CHECK(vlr_cache_new(m, 64u << 20, 256u << 20, &c) == VLR_OK && vlr_session_set_cache(s, c) == VLR_OK, "cache");
    const uint64_t tokens = check_group(m, s, mixed, 6);
    vlr_cache_stats st;
    vlr_cache_get_stats(c, &st);
    CHECK(st.tokens == tokens && st.reused_tokens > 6 * 64, "the cache counted %llu tokens (%llu reused), the group %llu",
          (unsigned long long)st.tokens, (unsigned long long)st.reused_tokens, (unsigned long long)tokens);
    vlr_buf_free(&long_answer);
done:
    vlr_session_free(s);
    vlr_cache_free(c);
    vlr_model_free(m);
}

/* ---- cancellation through vlr_score_answers ------------------------------------------------ */

/* Runs run(arg) while another thread sets *flag (cleared first) after delay_us. */
static vlr_status run_cancelled_after(volatile int *flag, long delay_us, vlr_status (*run)(void *), void *arg) {
    canceller cl = {flag, delay_us};
    pthread_t th;
    *flag = 0;
    const bool started = pthread_create(&th, NULL, cancel_later, &cl) == 0;
    CHECK(started, "thread");
    const vlr_status rc = run(arg);
    if (started) pthread_join(th, NULL);
    return rc;
}

typedef struct answers_call {
    vlr_session *s;
    vlr_parsed_request *r;
    double *scores;
    uint64_t tokens;
    size_t failed;
} answers_call;

static vlr_status run_answers(void *arg) {
    answers_call *a = arg;
    return vlr_score_answers(a->s, a->r, a->scores, &a->tokens, &a->failed);
}

/* A flag set before the call stops it at answer 0; one set from another thread during a long group
 * stops it wherever it is, or not at all: either way the next call's scores are the same bits. */
static void test_cancel(void) {
    vlr_model *m = load(VLR_PRECISION_F32);
    vlr_session *s = NULL;
    volatile int flag = 1;
    vlr_buf b = {0};
    if (!m || vlr_session_init(m, &s) != VLR_OK) goto done;
    vlr_session_set_cancel_flag(s, &flag);
    vlr_buf_printf(&b, "{%s, \"answers\": [", PROMPT_A);
    enum { N = 64 };
    for (int i = 0; i < N; i++) vlr_buf_printf(&b, "%s\"answer %d: the purple bar is %d units high\"", i ? ", " : "", i, 3 * i);
    vlr_buf_puts(&b, "]}");
    vlr_parsed_request r;
    vlr_err e = {0};
    double want[N], got[N];
    uint64_t tokens;
    size_t failed = 99;
    CHECK(vlr_request_parse(b.data, b.len, 0, BASE, &r, &e) == VLR_OK, "parse: %s", e.msg);
    vlr_status rc = vlr_score_answers(s, &r, got, &tokens, &failed);
    CHECK(rc == VLR_ERR_INTERRUPTED && failed == 0 && strcmp(vlr_session_errmsg(s), "interrupted") == 0,
          "a set flag: status %d, answer %zu, '%s'", (int)rc, failed, vlr_session_errmsg(s));
    flag = 0;
    CHECK(vlr_score_answers(s, &r, want, &tokens, &failed) == VLR_OK, "after a cancel: %s", vlr_session_errmsg(s));
    const long delays_us[3] = {500, 5000, 30000};
    for (int k = 0; k < 3; k++) {
        answers_call call = {s, &r, got, 0, 0};
        rc = run_cancelled_after(&flag, delays_us[k], run_answers, &call);
        failed = call.failed;
        CHECK(rc == VLR_OK || (rc == VLR_ERR_INTERRUPTED && failed < N), "cancelled after %ld us: %d, %s", delays_us[k],
              (int)rc, vlr_session_errmsg(s));
        printf("cancel after %ld us: %s (answer %zu)\n", delays_us[k], rc == VLR_OK ? "completed first" : "interrupted",
               rc ? failed : (size_t)N);
        flag = 0;
        CHECK(vlr_score_answers(s, &r, got, &tokens, &failed) == VLR_OK, "after a cancel: %s", vlr_session_errmsg(s));
        for (int i = 0; i < N; i++) CHECK(same_bits(got[i], want[i]), "after a cancel, answer %d: %.17g, %.17g", i, got[i], want[i]);
    }
    vlr_parsed_request_free(&r);
done:
    vlr_buf_free(&b);
    vlr_session_free(s);
    vlr_model_free(m);
}

/* ---- vlr_score_batch: runs of requests that differ only in their answer ---------------------- */

#define QUESTION "Is purple the highest value in this chart? Answer with a short explanation."
#define MAX_TOKENS 400 /* the long answer below does not fit: a failure inside a run */

static vlr_model *load_capped(vlr_precision precision) {
    vlr_params params = vlr_default_params();
    params.n_threads = 2;
    params.precision = precision;
    params.max_tokens = MAX_TOKENS;
    char err[1024];
    vlr_model *m = NULL;
    CHECK(vlr_model_load(MODEL, &params, &m, err, sizeof err) == VLR_OK, "load: %s", err);
    return m;
}

static vlr_content_item text_item(const char *t) {
    return (vlr_content_item){.kind = VLR_ITEM_TEXT, .text = t, .text_len = strlen(t)};
}

enum { N_BATCH = 15, BATCH_SUFFIXES = 6 };

/* The mix, in order: a run of six answers to an image prompt (two fail inside it: invalid UTF-8, more
 * than MAX_TOKENS), a run of two to a text prompt with a system turn, an answer with an image (alone),
 * an answer alone before an invalid request, a run of two, and a run of two whose image comes as
 * pixels in two buffers of the same content. Runs after their leads: 3 + 1 + 1 + 1 suffixes. */
typedef struct batch_mix {
    vlr_content_item user_a[2], user_t, sys_t, user_p1[2], user_p2[2], with_image[2], answers[10], null_text;
    vlr_message msgs[N_BATCH][3];
    vlr_request reqs[N_BATCH];
    vlr_buf long_answer;
    vlr_image img;
    uint8_t *pixels[2];
} batch_mix;

static bool batch_mix_init(batch_mix *b) {
    memset(b, 0, sizeof *b);
    vlr_err e = {0};
    char *file = NULL;
    size_t file_len = 0;
    CHECK(vlr_read_file(BASE "/images/demo.jpg", 1 << 26, &file, &file_len, &e) == VLR_OK &&
          vlr_image_decode((uint8_t *)file, file_len, "demo.jpg", NULL, &b->img, NULL, &e) == VLR_OK, "%s", e.msg);
    free(file);
    const size_t bytes = (size_t)b->img.width * 3 * (size_t)b->img.height;
    for (int k = 0; k < 2 && b->img.rgb; k++)
        if ((b->pixels[k] = malloc(bytes))) memcpy(b->pixels[k], b->img.rgb, bytes);
    if (!b->pixels[0] || !b->pixels[1]) return false;
    for (int i = 0; i < 300; i++) vlr_buf_puts(&b->long_answer, "purple bar ");
    const vlr_content_item image = {.kind = VLR_ITEM_IMAGE, .image = "images/demo.jpg", .max_pixels = 50176};
    b->user_a[0] = image;
    b->user_a[1] = text_item(QUESTION);
    b->user_t = text_item("What is the capital of France?");
    b->sys_t = text_item("You are a geography teacher.");
    for (int k = 0; k < 2; k++) {
        vlr_content_item *u = k ? b->user_p2 : b->user_p1;
        u[0] = (vlr_content_item){.kind = VLR_ITEM_IMAGE_PIXELS, .pixels = b->pixels[k], .width = b->img.width,
                                  .height = b->img.height, .max_pixels = 50176};
        u[1] = text_item(QUESTION);
    }
    b->with_image[0] = image;
    b->with_image[1] = text_item("See the bars.");
    const char *texts[10] = {"Yes, purple is the highest bar.", "No.", "Purple \xff\xfe is high.", b->long_answer.data,
                             "The chart shows purple at about 80, above the rest.", "Paris.", "Lyon.", "Maybe.",
                             "I cannot tell.", "Purple."};
    for (int k = 0; k < 10; k++) b->answers[k] = text_item(texts[k]);
    b->null_text = (vlr_content_item){.kind = VLR_ITEM_TEXT, .text = NULL, .text_len = 3};
    /* prompt: 'A' image + question, 'T' system + user text, 'P' / 'Q' pixels; answer: index, -1 with an image,
     * -2 invalid */
    static const struct { char prompt; int answer; } mix[N_BATCH] = {
        {'A', 0}, {'A', 1}, {'A', 2}, {'A', 3}, {'A', 4}, {'A', 1}, {'T', 5}, {'T', 6}, {'A', -1},
        {'A', 7}, {'A', -2}, {'A', 1}, {'A', 8}, {'P', 1}, {'Q', 9}};
    for (int i = 0; i < N_BATCH; i++) {
        vlr_message *m = b->msgs[i];
        size_t n = 0;
        if (mix[i].prompt == 'T') {
            m[n++] = (vlr_message){"system", &b->sys_t, 1};
            m[n++] = (vlr_message){"user", &b->user_t, 1};
        } else {
            m[n++] = (vlr_message){"user", mix[i].prompt == 'A' ? b->user_a : mix[i].prompt == 'P' ? b->user_p1 : b->user_p2, 2};
        }
        if (mix[i].answer == -1) m[n++] = (vlr_message){"assistant", b->with_image, 2};
        else if (mix[i].answer == -2) m[n++] = (vlr_message){"assistant", &b->null_text, 1};
        else m[n++] = (vlr_message){"assistant", &b->answers[mix[i].answer], 1};
        b->reqs[i] = (vlr_request){m, n, BASE};
    }
    return true;
}

static void batch_mix_free(batch_mix *b) {
    vlr_buf_free(&b->long_answer);
    vlr_image_free(&b->img);
    free(b->pixels[0]);
    free(b->pixels[1]);
}

/* Every result as a fresh session's vlr_score gives it: status, score bits, message. */
static void check_results(const vlr_batch_result *got, const vlr_batch_result *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        CHECK(got[i].status == want[i].status && same_bits(got[i].score, want[i].score) &&
                  strcmp(got[i].message, want[i].message) == 0,
              "%s request %zu: status %d score %.17g '%s'; alone: status %d score %.17g '%s'", what, i,
              (int)got[i].status, got[i].score, got[i].message, (int)want[i].status, want[i].score, want[i].message);
}

static void test_batch_runs(vlr_precision precision) {
    vlr_model *m = load_capped(precision);
    vlr_session *s = NULL;
    vlr_cache *c = NULL;
    batch_mix b;
    const bool mixed = batch_mix_init(&b);
    vlr_batch_result *want = calloc(N_BATCH, sizeof *want), *got = calloc(N_BATCH, sizeof *got);
    if (!m || !mixed || !want || !got || vlr_session_init(m, &s) != VLR_OK) goto done;
    for (size_t i = 0; i < N_BATCH; i++) {
        vlr_session *alone = NULL;
        CHECK(vlr_session_init(m, &alone) == VLR_OK, "session");
        if (!alone) goto done;
        want[i].status = vlr_score(alone, &b.reqs[i], &want[i].score);
        if (want[i].status) {
            want[i].score = 0;
            snprintf(want[i].message, sizeof want[i].message, "%s", vlr_session_errmsg(alone));
        }
        vlr_session_free(alone);
    }
    CHECK(want[2].status == VLR_ERR_INPUT && strstr(want[2].message, "invalid UTF-8"), "request 2: %s", want[2].message);
    CHECK(want[3].status == VLR_ERR_LIMIT && strstr(want[3].message, "more than"), "request 3: %s", want[3].message);
    CHECK(want[10].status == VLR_ERR_INPUT && strstr(want[10].message, "text is NULL"), "request 10: %s", want[10].message);
    CHECK(want[8].status == VLR_OK && want[13].status == VLR_OK && !same_bits(want[0].score, want[1].score),
          "the others score, and differently");
    /* twice on one session (the second after what the first left), then on a shared cache */
    for (int round = 0; round < 3; round++) {
        if (round == 2)
            CHECK(vlr_cache_new(m, 64u << 20, 256u << 20, &c) == VLR_OK && vlr_session_set_cache(s, c) == VLR_OK,
                  "cache");
        const uint64_t before = vlr_session_suffix_answers(s);
        memset(got, 0x55, N_BATCH * sizeof *got);
        CHECK(vlr_score_batch(s, b.reqs, N_BATCH, got) == VLR_ERR_INPUT, "the first failure's status");
        check_results(got, want, N_BATCH, vlr_precision_name(precision));
        CHECK(vlr_session_suffix_answers(s) - before == BATCH_SUFFIXES, "round %d: %llu answers ran as suffixes, not %d",
              round, (unsigned long long)(vlr_session_suffix_answers(s) - before), BATCH_SUFFIXES);
    }
done:
    free(want);
    free(got);
    if (mixed) batch_mix_free(&b);
    vlr_session_free(s);
    vlr_cache_free(c);
    vlr_model_free(m);
}

typedef struct batch_call {
    vlr_session *s;
    const vlr_request *reqs;
    size_t n;
    vlr_batch_result *results;
} batch_call;

static vlr_status run_batch(void *arg) {
    batch_call *b = arg;
    return vlr_score_batch(b->s, b->reqs, b->n, b->results);
}

/* A cancellation during a batch: the requests before the one under way keep their scores, it and every
 * later one get VLR_ERR_INTERRUPTED, and the next batch scores as before. A run longer than a round
 * (GROUP_ROUND_ANSWERS) whose prompt shrinks in the second round (its answers share fewer tokens with
 * the lead) equals the requests scored one by one. */
static void test_batch_cancel_and_rounds(void) {
    enum { N = 300, SHARED = 260 };
    vlr_model *m = load(VLR_PRECISION_F32);
    vlr_session *s = NULL, *one = NULL;
    char (*text)[64] = calloc(N, sizeof *text);
    vlr_content_item *answer = calloc(N, sizeof *answer);
    vlr_message (*msgs)[2] = calloc(N, sizeof *msgs);
    vlr_request *reqs = calloc(N, sizeof *reqs);
    vlr_batch_result *want = calloc(N, sizeof *want), *got = calloc(N, sizeof *got);
    if (!m || !text || !answer || !msgs || !reqs || !want || !got || vlr_session_init(m, &s) != VLR_OK ||
        vlr_session_init(m, &one) != VLR_OK)
        goto done;
    const vlr_content_item user[2] = {{.kind = VLR_ITEM_IMAGE, .image = "images/demo.jpg", .max_pixels = 50176},
                                      text_item(QUESTION)};
    for (size_t i = 0; i < N; i++) {
        if (i < SHARED) snprintf(text[i], sizeof text[i], "The bar number %zu is at %zu units.", i, 7 * i % 101);
        else snprintf(text[i], sizeof text[i], "No, %zu.", i);
        answer[i] = text_item(text[i]);
        msgs[i][0] = (vlr_message){"user", user, 2};
        msgs[i][1] = (vlr_message){"assistant", &answer[i], 1};
        reqs[i] = (vlr_request){msgs[i], 2, BASE};
        want[i].status = vlr_score(one, &reqs[i], &want[i].score);
        CHECK(want[i].status == VLR_OK, "request %zu alone: %s", i, vlr_session_errmsg(one));
    }
    uint64_t before = vlr_session_suffix_answers(s);
    CHECK(vlr_score_batch(s, reqs, N, got) == VLR_OK, "the long run");
    check_results(got, want, N, "long run");
    CHECK(vlr_session_suffix_answers(s) - before == N - 1, "%llu of %d answers ran as suffixes",
          (unsigned long long)(vlr_session_suffix_answers(s) - before), N - 1);

    volatile int flag = 0;
    vlr_session_set_cancel_flag(s, &flag);
    const long delays_us[3] = {500, 5000, 30000};
    for (int k = 0; k < 3; k++) {
        batch_call call = {s, reqs, N, got};
        const vlr_status rc = run_cancelled_after(&flag, delays_us[k], run_batch, &call);
        size_t done = 0;
        while (done < N && got[done].status == VLR_OK) done++;
        CHECK((rc == VLR_OK) == (done == N) && (rc == VLR_OK || rc == VLR_ERR_INTERRUPTED), "status %d", (int)rc);
        check_results(got, want, done, "before the cancel");
        for (size_t i = done; i < N; i++)
            CHECK(got[i].status == VLR_ERR_INTERRUPTED && strcmp(got[i].message, "interrupted") == 0,
                  "after the cancel, request %zu: %d '%s'", i, (int)got[i].status, got[i].message);
        printf("cancel after %ld us: %zu of %d requests scored\n", delays_us[k], done, N);
        flag = 0;
        CHECK(vlr_score_batch(s, reqs, N, got) == VLR_OK, "after a cancel: %s", vlr_session_errmsg(s));
        check_results(got, want, N, "after a cancel");
    }
    flag = 1;
    CHECK(vlr_score_batch(s, reqs, 3, got) == VLR_ERR_INTERRUPTED && got[0].status == VLR_ERR_INTERRUPTED &&
          got[2].status == VLR_ERR_INTERRUPTED, "a flag set before the batch");
    vlr_session_set_cancel_flag(s, NULL);
done:
    free(text);
    free(answer);
    free(msgs);
    free(reqs);
    free(want);
    free(got);
    vlr_session_free(s);
    vlr_session_free(one);
    vlr_model_free(m);
}

int main(void) {
    TEST_RUN_WITH(test_suffixes, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_suffixes, VLR_PRECISION_BF16);
    TEST_RUN_WITH(test_suffixes, VLR_PRECISION_INT8);
    TEST_RUN_WITH(test_answers, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_answers, VLR_PRECISION_BF16);
    TEST_RUN_WITH(test_answers, VLR_PRECISION_INT8);
    TEST_RUN(test_cancel);
    TEST_RUN_WITH(test_batch_runs, VLR_PRECISION_F32);
    TEST_RUN_WITH(test_batch_runs, VLR_PRECISION_BF16);
    TEST_RUN_WITH(test_batch_runs, VLR_PRECISION_INT8);
    TEST_RUN(test_batch_cancel_and_rounds);
    return test_report();
}
