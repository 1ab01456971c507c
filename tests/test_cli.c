/* test_cli.c: build/vlreward as a user runs it: `info --json` fields, exit statuses (0 / 1 / 2),
 * per-line errors that do not stop a run, `prepare --dump-pixels` bit-exact against the reference
 * dumps, `score` on every reference case and in the one-off form. The binary comes from $VLR_BUILD
 * (set by scripts/run-tests), default build/. */
#include <stdio.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "json.h"
#include "test.h"
#include "test_cmd.h"

#define MODEL "tests/reference/models/tiny-a"

static char bin[512], tmpdir[256];

/* The binary's stdout in *out, its stderr in tmpdir/stderr (read_stderr), its exit status returned. */
static int run(const char *cmd, char **out) {
    char err_path[300];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    return test_run(cmd, err_path, out);
}

static char *read_stderr(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    return test_read_text(path);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    fputs(text, f);
    fclose(f);
}

/* Parses line k (0-based) of JSON Lines text. */
static vlr_json_doc *line_doc(const char *text, size_t k) {
    for (size_t i = 0; i < k && text; i++) {
        text = strchr(text, '\n');
        if (text) text++;
    }
    if (!text || !*text) return NULL;
    const char *end = strchr(text, '\n');
    vlr_err e;
    return vlr_json_parse(text, end ? (size_t)(end - text) : strlen(text), &e);
}

static double expected_score(size_t k) {
    char *text;
    size_t len;
    vlr_err e;
    if (vlr_read_file("tests/reference/expected.jsonl", 1 << 24, &text, &len, &e)) return NAN;
    vlr_json_doc *d = line_doc(text, k);
    double s = d ? vlr_json_get(vlr_json_root(d), "score")->number : NAN;
    vlr_json_free(d);
    free(text);
    return s;
}

static void test_info(void) {
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "%s info --model " MODEL " --precision f32 --json", bin);
    int rc = run(cmd, &out);
    CHECK(rc == 0, "info exit %d", rc);
    vlr_err e;
    vlr_json_doc *d = vlr_json_parse(out, strlen(out), &e);
    CHECK(d != NULL, "info --json is JSON: %s", e.msg);
    if (d) {
        const vlr_json *r = vlr_json_root(d), *t = vlr_json_get(r, "text"), *v = vlr_json_get(r, "vision");
        int64_t x;
        struct { const vlr_json *obj; const char *key; int64_t want; } ints[] = {
            {t, "hidden_size", 64}, {t, "intermediate_size", 160}, {t, "num_hidden_layers", 2},
            {t, "num_attention_heads", 4}, {t, "num_key_value_heads", 2}, {t, "head_dim", 16},
            {t, "vocab_size", 151936}, {v, "depth", 4}, {v, "hidden_size", 32}, {v, "num_heads", 2},
            {v, "intermediate_size", 64}, {v, "out_hidden_size", 64}, {v, "patch_size", 14},
            {v, "spatial_merge_size", 2}, {v, "temporal_patch_size", 2}, {v, "window_size", 112}};
        for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
            CHECK(vlr_json_int(vlr_json_get(ints[i].obj, ints[i].key), &x) && x == ints[i].want, "info %s", ints[i].key);
        CHECK(vlr_json_get(t, "rms_norm_eps")->number == 1e-6 && vlr_json_get(t, "rope_theta")->number == 1e6, "eps/theta");
        const vlr_json *ms = vlr_json_get(t, "mrope_section"), *fa = vlr_json_get(v, "fullatt_block_indexes");
        CHECK(ms && ms->len == 3 && ms->items[0].number == 2 && ms->items[1].number == 3 && ms->items[2].number == 3, "mrope");
        CHECK(fa && fa->len == 2 && fa->items[0].number == 1 && fa->items[1].number == 3, "fullatt");
        CHECK(vlr_json_int(vlr_json_get(r, "parameters"), &x) && x > 9000000, "parameters %lld", (long long)x);
        CHECK(strcmp(vlr_json_get(r, "dtype")->str, "bf16") == 0, "dtype");
        const vlr_json *pr = vlr_json_get(r, "precision"), *why = vlr_json_get(r, "precision_reason");
        CHECK(vlr_json_is(pr, VLR_JSON_STRING) && strcmp(pr->str, "f32") == 0 && vlr_json_is(why, VLR_JSON_STRING) &&
              strcmp(why->str, "requested") == 0 && vlr_json_is(vlr_json_get(r, "kernels"), VLR_JSON_STRING),
              "info --json precision / precision_reason / kernels");
    }
    vlr_json_free(d);
    free(out);
    /* the default is auto: the text form says what it resolved to on this CPU, and why */
    snprintf(cmd, sizeof cmd, "%s info --model " MODEL, bin);
    CHECK(run(cmd, &out) == 0 && strstr(out, "precision ") && strstr(out, "(auto: ") && strstr(out, "kernels "),
          "info shows the auto precision: %s", out);
    free(out);

    snprintf(cmd, sizeof cmd, "%s info --model %s/no-such-model", bin, tmpdir);
    rc = run(cmd, &out);
    char *err = read_stderr();
    CHECK(rc == 1 && strstr(err, "no-such-model") != NULL, "missing model: exit %d, '%s'", rc, err);
    free(err);
    free(out);
    snprintf(cmd, sizeof cmd, "%s info", bin);
    CHECK(run(cmd, &out) == 2, "info without --model is a usage error");
    free(out);
    snprintf(cmd, sizeof cmd, "%s info --model " MODEL " --precision f32 --bogus", bin);
    CHECK(run(cmd, &out) == 2, "unknown option is a usage error");
    free(out);
    snprintf(cmd, sizeof cmd, "%s frobnicate", bin);
    CHECK(run(cmd, &out) == 2, "unknown command");
    free(out);
    const char *cmds[] = {"info", "tokenize", "prepare", "score"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(cmd, sizeof cmd, "%s %s --help", bin, cmds[i]);
        CHECK(run(cmd, &out) == 0 && strstr(out, "usage: vlreward") != NULL, "%s --help", cmds[i]);
        free(out);
    }
}

static void test_tokenize(void) {
    char in[300], cmd[2048], *out;
    snprintf(in, sizeof in, "%s/tok.jsonl", tmpdir);
    write_file(in, "{\"text\": \"a<|im_end|>b\", \"k\": 1}\nnot json\n\n{\"id\": \"x\", \"text\": 5}\n{\"text\": \"\"}\n");
    snprintf(cmd, sizeof cmd, "%s tokenize --model " MODEL " --precision f32 --input %s", bin, in);
    int rc = run(cmd, &out);
    CHECK(rc == 1, "a bad line gives exit 1 (got %d)", rc);
    CHECK(strstr(out, "{\"text\": \"a<|im_end|>b\", \"k\": 1, \"ids\": [64, 151645, 65]}\n") == out, "first line: %s", out);
    CHECK(strstr(out, "{\"id\": 1, \"error\": \"invalid JSON") != NULL, "bad JSON line reported with its line number");
    CHECK(strstr(out, "{\"id\": \"x\", \"error\"") != NULL, "wrong-typed text reported with its id");
    CHECK(strstr(out, "{\"text\": \"\", \"ids\": []}") != NULL, "empty text");
    free(out);
    write_file(in, "{\"ids\": [64, 151645, 65]}\n");
    snprintf(cmd, sizeof cmd, "%s tokenize --model " MODEL " --precision f32 --decode --skip-special --input %s", bin, in);
    CHECK(run(cmd, &out) == 0 && strstr(out, "\"text\": \"ab\"") != NULL, "decode skip special: %s", out);
    free(out);
}

static void test_prepare_dump(void) {
    char in[300], cmd[2048], *out;
    snprintf(in, sizeof in, "%s/prep.jsonl", tmpdir);
    char path[600];
    write_file(in, "{\"id\": \"tiny_upscale\", \"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image\", "
                   "\"image\": \"images/tiny_30x20.png\"}, {\"type\": \"text\", \"text\": \"x\"}]}, "
                   "{\"role\": \"assistant\", \"content\": \"y\"}]}\n");
    snprintf(cmd, sizeof cmd, "%s prepare --model " MODEL " --precision f32 --input %s --dump-pixels %s", bin, in, tmpdir);
    int rc = run(cmd, &out);
    CHECK(rc == 0, "prepare exit %d: %s", rc, out);
    free(out);
    char *got, *want;
    size_t got_len = 0, want_len = 0;
    vlr_err e;
    snprintf(path, sizeof path, "%s/tiny_upscale.pixel_values.f32", tmpdir);
    if (vlr_read_file(path, 1 << 24, &got, &got_len, &e) == VLR_OK &&
        vlr_read_file("tests/reference/pixels/tiny_upscale.pixel_values.f32", 1 << 24, &want, &want_len, &e) == VLR_OK) {
        CHECK(got_len == want_len && memcmp(got, want, got_len) == 0, "dumped pixels bit-exact (%zu vs %zu bytes)", got_len, want_len);
        free(got);
        free(want);
    } else {
        CHECK(0, "dump: %s", e.msg);
    }
}

static void test_score_cli(void) {
    char in[300], cmd[8192], *out;
    snprintf(in, sizeof in, "%s/score.jsonl", tmpdir);
    /* The reference cases with two bad lines spliced in after the first. */
    char *cases;
    size_t len;
    vlr_err e;
    if (vlr_read_file("tests/reference/cases.jsonl", 1 << 24, &cases, &len, &e)) {
        CHECK(0, "%s", e.msg);
        return;
    }
    char *second = strchr(cases, '\n') + 1;
    FILE *f = fopen(in, "wb");
    fwrite(cases, 1, (size_t)(second - cases), f);
    fputs("{\"id\": \"bad-json\", \"messages\": [\n", f);
    fputs("{\"id\": \"no-image\", \"image\": \"images/nope.png\", \"question\": \"q\", \"answer\": \"a\"}\n", f);
    fputs(second, f);
    fclose(f);
    free(cases);
    /* The input file sits in tmpdir, next to the images symlink made by main(). */
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --input %s", bin, in);
    int rc = run(cmd, &out);
    CHECK(rc == 1, "score with bad lines exits 1 (got %d)", rc);
    size_t k_case = 0;
    for (size_t line = 0; line < 15; line++) {
        vlr_json_doc *d = line_doc(out, line);
        CHECK(d != NULL, "output line %zu is JSON", line);
        if (!d) continue;
        const vlr_json *r = vlr_json_root(d);
        if (line == 1) {
            CHECK(vlr_json_get(r, "error") && strstr(vlr_json_get(r, "error")->str, "invalid JSON"), "line 1 error");
            CHECK(vlr_json_get(r, "id")->number == 1, "unparsable line gets its line number as id");
        } else if (line == 2) {
            CHECK(strcmp(vlr_json_get(r, "id")->str, "no-image") == 0 && strstr(vlr_json_get(r, "error")->str, "nope.png"),
                  "missing image named");
        } else {
            const vlr_json *s = vlr_json_get(r, "score");
            double want = expected_score(k_case++);
            CHECK(vlr_json_is(s, VLR_JSON_NUMBER) && fabs(s->number - want) <= 2e-5, "line %zu score %.9g want %.9g",
                  line, s ? s->number : NAN, want);
        }
        vlr_json_free(d);
    }
    free(out);

    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --image tests/reference/images/demo.jpg --question "
                              "\"$(printf 'Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
                              "at the end.\\nQuestion: Is Purple the highest value?\\nChoices:\\n(A) no\\n(B) yes')\" "
                              "--answer 'The answer is: B'", bin);
    rc = run(cmd, &out);
    CHECK(rc == 0 && fabs(strtod(out, NULL) - expected_score(0)) <= 2e-5, "one-off demo score %s (exit %d)", out, rc);
    free(out);
    /* bf16: within the bound of the reference's own bf16 inference (tests/test_score.c holds the
     * whole golden set to it), and not the f32 score */
    double one_off[2] = {NAN, NAN}; /* bf16, f32 */
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision %s --image tests/reference/images/demo.jpg "
                                  "--question 'Is Purple the highest value?' --answer 'B'", bin, i ? "f32" : "bf16");
        rc = run(cmd, &out);
        CHECK(rc == 0, "one-off %s score: exit %d", i ? "f32" : "bf16", rc);
        one_off[i] = strtod(out, NULL);
        free(out);
    }
    CHECK(fabs(one_off[0] - one_off[1]) <= 3e-2 && one_off[0] != one_off[1], "one-off bf16 %.9g vs f32 %.9g",
          one_off[0], one_off[1]);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision fp16 --question q --answer a", bin);
    rc = run(cmd, &out);
    char *err_text = read_stderr();
    CHECK(rc == 2 && strstr(err_text, "--precision") && strstr(err_text, "fp16"), "--precision fp16: exit %d, %s", rc,
          err_text);
    free(err_text);
    free(out);
    /* Too long for --max-tokens: refused with a clear error, never truncated. */
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --max-tokens 30 --question q --answer a", bin);
    rc = run(cmd, &out);
    char *err = read_stderr();
    CHECK(rc == 0, "a 26-token request fits in 30 (exit %d): %s", rc, err);
    free(err);
    free(out);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --max-tokens 20 --question q --answer a", bin);
    rc = run(cmd, &out);
    err = read_stderr();
    CHECK(rc == 1 && strstr(err, "more than the limit of 20") != NULL, "over --max-tokens: exit %d, '%s'", rc, err);
    free(err);
    free(out);
    /* A text that no tokenization could fit in --max-tokens is refused before BPE even starts. */
    char *long_answer = malloc(2001);
    memset(long_answer, 'x', 2000);
    long_answer[2000] = '\0';
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --max-tokens 10 --question q --answer %s", bin, long_answer);
    free(long_answer);
    rc = run(cmd, &out);
    err = read_stderr();
    CHECK(rc == 1 && strstr(err, "bytes, more than 10 tokens can hold") != NULL, "long text: exit %d, '%s'", rc, err);
    free(err);
    free(out);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --question q --answer a --output x.jsonl", bin);
    CHECK(run(cmd, &out) == 2, "one-off with --output is a usage error");
    free(out);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --question q", bin);
    CHECK(run(cmd, &out) == 2, "one-off without --answer is a usage error");
    free(out);
    snprintf(cmd, sizeof cmd, "%s score --model %s/nope --input %s", bin, tmpdir, in);
    CHECK(run(cmd, &out) == 2, "score with a model that does not load exits 2");
    free(out);
}


/* Compares a --trace object with a reference trace: integer arrays and labels exactly, a stage's
 * sum within 1e-5 of its sum_abs, other numbers (first4 values, sum_abs) within 1e-4 relative. */
static int trace_mismatches(const vlr_json *got, const vlr_json *want, const char *path, double sum_abs) {
    if (!got) {
        fprintf(stderr, "trace %s: missing\n", path);
        return 1;
    }
    int bad = 0;
    char sub[256];
    switch (want->type) {
    case VLR_JSON_OBJECT: {
        const vlr_json *sa = vlr_json_get(want, "sum_abs");
        for (size_t i = 0; i < want->len; i++) {
            const vlr_json *m = &want->items[i];
            if (!strcmp(m->key, "precision_study") || !strcmp(m->key, "values_last8") || !strcmp(m->key, "id") ||
                !strcmp(m->key, "model"))
                continue;
            snprintf(sub, sizeof sub, "%s.%s", path, m->key);
            bad += trace_mismatches(vlr_json_get(got, m->key), m, sub, sa ? sa->number : -1);
        }
        break;
    }
    case VLR_JSON_ARRAY:
        if (got->type != VLR_JSON_ARRAY || got->len != want->len) {
            fprintf(stderr, "trace %s: length %zu, want %zu\n", path, got->len, want->len);
            return 1;
        }
        for (size_t i = 0; i < want->len; i++) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            bad += trace_mismatches(&got->items[i], &want->items[i], sub, -1);
        }
        break;
    case VLR_JSON_NUMBER: {
        double g = got->number, w = want->number;
        bool is_sum = strlen(path) > 4 && !strcmp(path + strlen(path) - 4, ".sum");
        double tol = is_sum && sum_abs > 0 ? 1e-5 * sum_abs : 1e-4 * fmax(1.0, fabs(w));
        if (strstr(path, ".score")) tol = 2e-5;
        if (got->type != VLR_JSON_NUMBER || fabs(g - w) > tol) {
            fprintf(stderr, "trace %s: %.10g, want %.10g\n", path, g, w);
            bad++;
        }
        break;
    }
    case VLR_JSON_STRING:
        if (got->type != VLR_JSON_STRING || strcmp(got->str, want->str)) {
            fprintf(stderr, "trace %s: differs\n", path);
            bad++;
        }
        break;
    default:
        break;
    }
    return bad;
}

/* Groups: {"answers": [...]} scores each answer as its own request would (the same bits, here those of
 * separate lines on a fresh run), with "best" the index of the highest; the one-off form takes
 * --answer again and prints one line per answer; malformed groups are error lines. */
static void test_score_groups(void) {
    char in[300], in_single[300], cmd[2048], *out = NULL, *single = NULL, *one_off = NULL;
    snprintf(in, sizeof in, "%s/groups.jsonl", tmpdir);
    snprintf(in_single, sizeof in_single, "%s/groups_single.jsonl", tmpdir);
    write_file(in,
               "{\"id\": \"g\", \"image\": \"images/demo.jpg\", \"question\": \"Is Purple the highest value?\", "
               "\"answers\": [\"No.\", \"Yes.\", [{\"type\": \"text\", \"text\": \"B\"}]]}\n"
               "{\"id\": \"m\", \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
               "\"content\": \"2+2?\"}], \"answers\": [\"4\", \"5\"]}\n"
               "{\"id\": \"empty\", \"question\": \"q\", \"answers\": []}\n"
               "{\"id\": \"both\", \"question\": \"q\", \"answer\": \"a\", \"answers\": [\"b\"]}\n"
               "{\"id\": \"ends-assistant\", \"messages\": [{\"role\": \"user\", \"content\": \"q\"}, "
               "{\"role\": \"assistant\", \"content\": \"a\"}], \"answers\": [\"b\"]}\n"
               "{\"id\": \"not-text\", \"question\": \"q\", \"answers\": [\"a\", 7]}\n");
    write_file(in_single,
               "{\"id\": 1, \"image\": \"images/demo.jpg\", \"question\": \"Is Purple the highest value?\", \"answer\": \"No.\"}\n"
               "{\"id\": 2, \"image\": \"images/demo.jpg\", \"question\": \"Is Purple the highest value?\", \"answer\": \"Yes.\"}\n"
               "{\"id\": 3, \"image\": \"images/demo.jpg\", \"question\": \"Is Purple the highest value?\", \"answer\": \"B\"}\n"
               "{\"id\": 4, \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
               "\"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n"
               "{\"id\": 5, \"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
               "\"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"5\"}]}\n");
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --threads 2 --quiet --input %s", bin, in);
    const int rc = run(cmd, &out);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --threads 2 --quiet --input %s", bin, in_single);
    CHECK(rc == 1 && run(cmd, &single) == 0, "groups: exit %d (some lines fail)", rc);
    /* each score of a group, as text, is the score of its answer's own line */
    const char *want[5];
    for (int i = 0; i < 5; i++) {
        vlr_json_doc *d = line_doc(single, (size_t)i);
        const vlr_json *s = d ? vlr_json_get(vlr_json_root(d), "score") : NULL;
        static char text[5][64];
        snprintf(text[i], sizeof text[i], "%.17g", s ? s->number : NAN);
        want[i] = text[i];
        vlr_json_free(d);
    }
    for (int g = 0; g < 2; g++) {
        vlr_json_doc *d = line_doc(out, (size_t)g);
        const vlr_json *scores = d ? vlr_json_get(vlr_json_root(d), "scores") : NULL;
        const vlr_json *best = d ? vlr_json_get(vlr_json_root(d), "best") : NULL;
        const size_t n = g == 0 ? 3 : 2, first = g == 0 ? 0 : 3;
        bool same = vlr_json_is(scores, VLR_JSON_ARRAY) && scores->len == n && vlr_json_is(best, VLR_JSON_NUMBER);
        size_t top = 0;
        for (size_t i = 0; same && i < n; i++) {
            char text[64];
            snprintf(text, sizeof text, "%.17g", scores->items[i].number);
            same = strcmp(text, want[first + i]) == 0;
            if (scores->items[i].number > scores->items[top].number) top = i;
        }
        CHECK(same && best->number == (double)top, "group %d: scores and best as the single lines give them: %s", g, out);
        vlr_json_free(d);
    }
    const char *errors[4] = {"a group has 1 to", "not both", "end with the user turn", "answers[1]: expected a string"};
    for (int i = 0; i < 4; i++) {
        vlr_json_doc *d = line_doc(out, (size_t)(2 + i));
        const vlr_json *err = d ? vlr_json_get(vlr_json_root(d), "error") : NULL;
        CHECK(err && strstr(err->str, errors[i]), "bad group %d: error containing '%s' in %s", i, errors[i], out);
        vlr_json_free(d);
    }
    /* the one-off form: --answer again, one line per answer, each the one-off score of that answer */
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --threads 2 --image tests/reference/images/demo.jpg "
             "--question 'Is Purple the highest value?' --answer No. --answer Yes. --answer B", bin);
    CHECK(run(cmd, &one_off) == 0, "one-off with three answers");
    char lines[3][64] = {{0}};
    CHECK(sscanf(one_off, "%63s %63s %63s", lines[0], lines[1], lines[2]) == 3, "three lines: %s", one_off);
    for (int i = 0; i < 3; i++) {
        char text[64];
        snprintf(text, sizeof text, "%.17g", strtod(lines[i], NULL));
        CHECK(strcmp(text, want[i]) == 0, "one-off answer %d: %s, want %s", i, lines[i], want[i]);
    }
    /* a failing answer among them (the answers run as one batch): the lines before it, its message
     * naming it, nothing after it, exit 1 (as when they ran one by one) */
    free(one_off);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --threads 2 --image tests/reference/images/demo.jpg "
             "--question 'Is Purple the highest value?' --answer No. --answer \"$(printf 'x\\377')\" --answer B", bin);
    int bad_rc = run(cmd, &one_off);
    char *err = read_stderr(), first[64] = "";
    if (one_off) sscanf(one_off, "%63s", first);
    char text[64];
    snprintf(text, sizeof text, "%.17g", strtod(first, NULL));
    CHECK(bad_rc == 1 && strcmp(text, want[0]) == 0 && strchr(one_off, '\n') == strrchr(one_off, '\n') &&
              strstr(err, "--answer 2: invalid UTF-8"),
          "one-off with a bad second answer: exit %d, out '%s', err '%s'", bad_rc, one_off, err);
    free(err);
    free(out);
    free(single);
    free(one_off);
}

static void test_trace(void) {
    char cmd[8192], *out, trace[300];
    snprintf(trace, sizeof trace, "%s/trace.jsonl", tmpdir);
    char cwd[PATH_MAX];
    CHECK(getcwd(cwd, sizeof cwd) != NULL, "cwd");
    snprintf(cmd, sizeof cmd, "cd tests/reference && %s/%s score --model models/tiny-a --precision f32 --input cases.jsonl --trace %s --quiet",
             bin[0] == '/' ? "" : cwd, bin, trace);
    int rc = run(cmd, &out);
    CHECK(rc == 0, "score --trace exit %d", rc);
    free(out);
    char *text;
    size_t len;
    vlr_err e;
    if (vlr_read_file(trace, 1 << 26, &text, &len, &e)) {
        CHECK(0, "%s", e.msg);
        return;
    }
    size_t n = 0;
    for (char *line = text; line && *line; n++) {
        char *end = strchr(line, '\n');
        vlr_json_doc *d = vlr_json_parse(line, end ? (size_t)(end - line) : strlen(line), &e);
        const vlr_json *id = d ? vlr_json_get(vlr_json_root(d), "id") : NULL;
        CHECK(vlr_json_is(id, VLR_JSON_STRING), "trace line %zu has a string id", n);
        if (vlr_json_is(id, VLR_JSON_STRING)) {
            char path[300];
            snprintf(path, sizeof path, "tests/reference/traces/%s.json", id->str);
            vlr_json_doc *want = NULL;
            CHECK(vlr_json_parse_file(path, 1 << 24, &want, &e) == VLR_OK, "%s", e.msg);
            if (want) {
                int bad = trace_mismatches(vlr_json_root(d), vlr_json_root(want), id->str, -1);
                CHECK(bad == 0, "trace of %s: %d stage values off the reference", id->str, bad);
            }
            vlr_json_free(want);
        }
        vlr_json_free(d);
        line = end ? end + 1 : NULL;
    }
    CHECK(n == 13, "one trace line per case (%zu)", n);
    free(text);
}


/* The library example scores the demo like the CLI; a model whose chat template is not Qwen2-VL's
 * loads with one warning on stderr. */
static void test_example_and_template_warning(void) {
    char cmd[4096], *out;
    const char *build = getenv("VLR_BUILD");
    snprintf(cmd, sizeof cmd, "%s/example_score " MODEL " '{\"image\": \"tests/reference/images/demo.jpg\", "
             "\"question\": \"Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, "
             "at the end.\\nQuestion: Is Purple the highest value?\\nChoices:\\n(A) no\\n(B) yes\", "
             "\"answer\": \"The answer is: B\"}'", build && *build ? build : "build");
    int rc = run(cmd, &out);
    /* the example runs at the default precision (auto): the CLI's default gives the same score */
    char *cli_out;
    const char *req = strstr(cmd, " '{") + 2; /* the request, after the model, up to its closing quote */
    char req_path[512], cli_cmd[4096];
    snprintf(req_path, sizeof req_path, "%s/example.jsonl", tmpdir);
    FILE *f = fopen(req_path, "w");
    if (f) fprintf(f, "%.*s\n", (int)strlen(req) - 1, req), fclose(f);
    snprintf(cli_cmd, sizeof cli_cmd, "%s score --model " MODEL " --input - < %s", bin, req_path); /* paths: cwd */
    CHECK(run(cli_cmd, &cli_out) == 0, "score the example's request: %s", cli_out);
    vlr_err e = {0};
    vlr_json_doc *d = vlr_json_parse(cli_out, strlen(cli_out), &e);
    const vlr_json *cs = vlr_json_get(vlr_json_root(d), "score");
    CHECK(rc == 0 && vlr_json_is(cs, VLR_JSON_NUMBER) && fabs(strtod(out, NULL) - cs->number) <= 1e-6 &&
          fabs(cs->number - expected_score(0)) <= 3e-2, "example_score: %s (exit %d), CLI %s", out, rc, cli_out);
    vlr_json_free(d);
    free(cli_out);
    free(out);

    /* A copy of tiny-a (weights symlinked) with another template. */
    char dir[400];
    snprintf(dir, sizeof dir, "%s/other-template", tmpdir);
    const char *files[] = {"config.json", "model.safetensors", "value_head.safetensors", "tokenizer.json",
                           "preprocessor_config.json"};
    CHECK(test_model_link(dir, MODEL, files, 5), "model copy at %s", dir);
    char path[512];
    snprintf(path, sizeof path, "%s/chat_template.json", dir);
    write_file(path, "{\"chat_template\": \"{% for m in messages %}{{ m['content'] }}{% endfor %}\"}");
    snprintf(cmd, sizeof cmd, "%s info --model %s", bin, dir);
    rc = run(cmd, &out);
    char *err = read_stderr();
    const char *w = strstr(err, "chat template differs");
    CHECK(rc == 0 && w != NULL && strstr(w + 1, "chat template differs") == NULL, "one template warning: '%s'", err);
    free(err);
    free(out);
}

/* Writes bytes to path. */
static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(data, 1, n, f);
    fclose(f);
}

/* Every output line is JSON that the strict reader accepts (it refuses ill-formed UTF-8). */
static size_t count_strict_json_lines(const char *text) {
    size_t n = 0;
    for (size_t k = 0;; k++) {
        vlr_json_doc *d = line_doc(text, k);
        if (!d) break;
        n++;
        vlr_json_free(d);
    }
    return n;
}

/* An error message that quotes raw bytes of the input (a PNG chunk type of bytes ff c3 a9 e2, which
 * is not UTF-8) still makes a valid JSON line: each ill-formed sequence becomes U+FFFD, the
 * well-formed "é" stays, and --resume accepts the run's own output. */
static void test_error_lines_utf8(void) {
    char cmd[2048], path[400], in[400], outp[400], *out;
    size_t len;
    char *png;
    vlr_err e;
    CHECK(vlr_read_file("tests/reference/images/rocket_rgba.png", 1 << 24, &png, &len, &e) == VLR_OK && len > 33,
          "fixture");
    if (len <= 33) return;
    static const unsigned char chunk[12] = {0, 0, 0, 0, 0xff, 0xc3, 0xa9, 0xe2, 0, 0, 0, 0}; /* bad CRC */
    char *bad = malloc(len + 12);
    memcpy(bad, png, 33); /* signature + IHDR */
    memcpy(bad + 33, chunk, 12);
    memcpy(bad + 45, png + 33, len - 33);
    snprintf(path, sizeof path, "%s/badchunk.png", tmpdir);
    write_bytes(path, bad, len + 12);
    free(bad);
    free(png);
    snprintf(in, sizeof in, "%s/utf8_in.jsonl", tmpdir);
    write_file(in, "{\"id\": \"chunk\", \"image\": \"badchunk.png\", \"question\": \"q\", \"answer\": \"a\"}\n"
                   "{\"id\": \"text\", \"question\": \"q\", \"answer\": \"a\"}\n");
    snprintf(outp, sizeof outp, "%s/utf8_out.jsonl", tmpdir);
    snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --input %s --output %s", bin, in, outp);
    int rc = run(cmd, &out);
    free(out);
    CHECK(rc == 1, "one bad line: exit 1 (got %d)", rc);
    char *text = test_read_text(outp);
    CHECK(text && count_strict_json_lines(text) == 2, "both lines are strict JSON: %s", text ? text : "(none)");
    vlr_json_doc *d = line_doc(text, 0);
    const vlr_json *err = d ? vlr_json_get(vlr_json_root(d), "error") : NULL;
    CHECK(err && strcmp(err->str, "image 1: badchunk.png: broken PNG file (bad checksum in chunk "
                                  "\xef\xbf\xbd\xc3\xa9\xef\xbf\xbd)") == 0,
          "the chunk type with U+FFFD for each ill-formed byte: %s", err ? err->str : "(none)");
    vlr_json_free(d);
    /* --resume reads the run's own output back: from the first line alone it redoes the second */
    char *nl = text ? strchr(text, '\n') : NULL;
    if (nl) {
        write_bytes(outp, text, (size_t)(nl + 1 - text));
        snprintf(cmd, sizeof cmd, "%s score --model " MODEL " --precision f32 --input %s --output %s --resume", bin,
                 in, outp);
        rc = run(cmd, &out);
        free(out);
        char *again = test_read_text(outp);
        CHECK(rc == 0 && again && strcmp(again, text) == 0, "--resume accepts its own error line (exit %d): %s", rc,
              again ? again : "(none)");
        free(again);
    }
    free(text);
}

/* A copy of tiny-a (weights symlinked) whose preprocessor_config.json makes the pixels overflow to
 * inf (a mean of -1e29 over a std of 1.2e-38, both accepted) gives a NaN score: an error line and
 * exit 1, never "score": null. A subnormal std is refused at load, naming the field. */
static void test_nonfinite_score(void) {
    char dir[400], cmd[2048], path[600], in[400], *out;
    snprintf(dir, sizeof dir, "%s/nan-model", tmpdir);
    const char *files[] = {"config.json", "model.safetensors", "value_head.safetensors", "tokenizer.json",
                           "tokenizer_config.json", "chat_template.json"};
    CHECK(test_model_link(dir, MODEL, files, sizeof files / sizeof files[0]), "model copy at %s", dir);
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    write_file(path, "{\"image_mean\": [-1e29, -1e29, -1e29], \"image_std\": [1.2e-38, 1.2e-38, 1.2e-38], "
                     "\"min_pixels\": 3136, \"max_pixels\": 12845056, \"patch_size\": 14, \"merge_size\": 2, "
                     "\"temporal_patch_size\": 2}");
    snprintf(in, sizeof in, "%s/nan_in.jsonl", tmpdir);
    write_file(in, "{\"id\": \"img\", \"image\": \"images/demo.jpg\", \"question\": \"q\", \"answer\": \"a\"}\n"
                   "{\"id\": \"text\", \"question\": \"q\", \"answer\": \"a\"}\n");
    snprintf(cmd, sizeof cmd, "%s score --model %s --precision f32 --input %s", bin, dir, in);
    int rc = run(cmd, &out);
    CHECK(rc == 1, "a NaN score is an error: exit 1 (got %d)", rc);
    CHECK(out && strstr(out, "null") == NULL, "no null score: %s", out ? out : "(none)");
    vlr_json_doc *d = line_doc(out, 0);
    const vlr_json *err = d ? vlr_json_get(vlr_json_root(d), "error") : NULL;
    CHECK(err && strstr(err->str, "the score is not finite (NaN): the model computed a non-finite value") &&
              !vlr_json_get(vlr_json_root(d), "score"),
          "error line: %s", out ? out : "(none)");
    vlr_json_free(d);
    d = line_doc(out, 1); /* the text-only request never meets the pixels: still scored */
    const vlr_json *sc = d ? vlr_json_get(vlr_json_root(d), "score") : NULL;
    CHECK(vlr_json_is(sc, VLR_JSON_NUMBER) && isfinite(sc->number), "text line scored");
    vlr_json_free(d);
    free(out);
    char *err_text = read_stderr();
    CHECK(err_text && strstr(err_text, "2 requests, 1 errors"), "counted as an error: %s", err_text ? err_text : "");
    free(err_text);
    /* the one-off form: exit 1 and the message on stderr */
    snprintf(cmd, sizeof cmd, "%s score --model %s --image tests/reference/images/demo.jpg --question q --answer a",
             bin, dir);
    rc = run(cmd, &out);
    err_text = read_stderr();
    CHECK(rc == 1 && out && out[0] == '\0' && err_text && strstr(err_text, "the score is not finite (NaN)"),
          "one-off: exit %d, stdout '%s', stderr '%s'", rc, out ? out : "", err_text ? err_text : "");
    free(err_text);
    free(out);
    /* a subnormal std never loads */
    write_file(path, "{\"image_std\": [1e-40, 1, 1]}");
    snprintf(cmd, sizeof cmd, "%s info --model %s", bin, dir);
    rc = run(cmd, &out);
    err_text = read_stderr();
    CHECK(rc != 0 && err_text && strstr(err_text, "preprocessor_config.json: field image_std[0]: 1e-40 is too small"),
          "subnormal std refused (exit %d): %s", rc, err_text ? err_text : "");
    free(err_text);
    free(out);
}

/* cli/omp_defaults.c: libgomp spins 1000 times, not 300,000, unless the user chose a wait policy.
 * OMP_DISPLAY_ENV=verbose makes libgomp print its settings on stderr from its constructor (once: a
 * re-execution happens before it); OMP_NUM_THREADS=3 shows the rest of the environment comes through.
 * Both routes: the shell's "_" entry rewritten in place, and the re-execution when there is no "_"
 * (env -i). This test binary links omp_defaults.c too, so each command clears what its own
 * environment may carry. */
static void test_omp_defaults(void) {
    const char *clear = "env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT";
    struct { const char *env, *want1, *want2; } cases[] = {
        {"_=/bin/vlreward OMP_NUM_THREADS=3", "GOMP_SPINCOUNT = '1000'", "OMP_NUM_THREADS = '3'"},
        {"-i OMP_NUM_THREADS=3", "GOMP_SPINCOUNT = '1000'", "OMP_NUM_THREADS = '3'"},
        {"OMP_WAIT_POLICY=active", "OMP_WAIT_POLICY = 'ACTIVE'", "GOMP_SPINCOUNT = '30000000000'"},
        {"OMP_WAIT_POLICY=passive", "OMP_WAIT_POLICY = 'PASSIVE'", "GOMP_SPINCOUNT = '0'"},
        {"GOMP_SPINCOUNT=12345", "GOMP_SPINCOUNT = '12345'", "OMP_WAIT_POLICY = 'PASSIVE'"},
        {"-u _ GOMP_SPINCOUNT=12345", "GOMP_SPINCOUNT = '12345'", "OMP_WAIT_POLICY = 'PASSIVE'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024], *out;
        snprintf(cmd, sizeof cmd, "%s %s OMP_DISPLAY_ENV=verbose %s --version", clear, cases[i].env, bin);
        int rc = run(cmd, &out);
        char *err = read_stderr();
        const char *begin = strstr(err, "OPENMP DISPLAY ENVIRONMENT BEGIN");
        CHECK(rc == 0 && strncmp(out, "vlreward ", 9) == 0 && begin && !strstr(begin + 1, "OPENMP DISPLAY ENVIRONMENT BEGIN") &&
                  strstr(err, cases[i].want1) && strstr(err, cases[i].want2),
              "%s: exit %d, stdout '%s', stderr '%s'", cmd, rc, out, err);
        free(err);
        free(out);
    }
}

int main(void) {
    const char *build = getenv("VLR_BUILD");
    snprintf(bin, sizeof bin, "%s/vlreward", build && *build ? build : "build");
    if (access(bin, X_OK) != 0) {
        CHECK(0, "%s not built", bin);
        return test_report();
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlr_cli_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp");
        return test_report();
    }
    /* Relative image paths resolve against the input file's folder: point at the reference folder
     * (test_prepare_dump and test_score_cli write their inputs into tmpdir). */
    char images[300], real[PATH_MAX];
    snprintf(images, sizeof images, "%s/images", tmpdir);
    CHECK(realpath("tests/reference/images", real) != NULL && symlink(real, images) == 0, "symlink images");
    TEST_RUN(test_info);
    TEST_RUN(test_tokenize);
    TEST_RUN(test_prepare_dump);
    TEST_RUN(test_score_cli);
    TEST_RUN(test_score_groups);
    TEST_RUN(test_trace);
    TEST_RUN(test_example_and_template_warning);
    TEST_RUN(test_omp_defaults);
    TEST_RUN(test_error_lines_utf8);
    TEST_RUN(test_nonfinite_score);
    char cmd[300], *out;
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    run(cmd, &out);
    free(out);
    return test_report();
}
