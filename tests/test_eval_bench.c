/* test_eval_bench.c: `vlreward eval` on real VL-RewardBench rows (tests/reference/eval: 11 rows as
 * the benchmark publishes them, with an id that occurs twice, queries that start with "<image>\n" and
 * one that ends with "\n<image>"; tiny stand-in images) scored by the bundled tiny model:
 *   - the format is recognised without --format, the groups and counts of the summary match the
 *     lines, the summary names the model, its revision, the precision and vlreward's version;
 *   - "<image>\n" is removed from queries as the benchmark's inference_hf.py does (the scores equal
 *     those of the same pairs written with the tag removed by hand), --keep-image-tag keeps it;
 *   - a run interrupted anywhere (cut after a line, cut mid-line, SIGINT while reading a pipe) and
 *     resumed gives the uninterrupted output and summary byte for byte, duplicated id included;
 *   - --output /dev/null gives the same summary; a wrong --format says which one the rows look
 *     like; a failed pair is counted in its group, outside the accuracies;
 *   - a Hugging Face cache snapshot is named ORG/NAME with its commit as the revision;
 *   - --compare-precision f32,bf16 scores each pair at both precisions exactly as two plain runs do,
 *     and its agreement, Spearman's rho and score differences match those recomputed here;
 *   - --report DIR writes a self-contained page whose histograms hold exactly the output's margins,
 *     and Debian's headless Chromium renders it (skipped, saying so, where chromium is absent). */
#include <signal.h>
#include <sys/stat.h>

#include "eval.h"
#include "image.h"
#include "test.h"
#include "test_eval_helpers.h"

#define MODEL "tests/reference/models/tiny-a"
#define SAMPLE_DIR "tests/reference/eval"
#define SAMPLE SAMPLE_DIR "/vlrewardbench_sample.jsonl"
#define N_SAMPLE 11

/* The sample's ids in order and their groups by cal.py's rules, written out here. */
static const struct {
    const char *id, *group;
} sample_ids[N_SAMPLE] = {
    {"LRVInstruction-000000007746", "general"},   {"RLAIF-V-65823", "hallucination"},
    {"RLHF-V-1616", "hallucination"},             {"hallucination_pair-13705", "hallucination"},
    {"hallucination_pair-15046", "hallucination"}, {"hallucination_pair-6299", "hallucination"},
    {"jailbreak-typo-HateSpeech-70", "general"},  {"wildvision-battle-1305", "general"},
    {"mathverse_2279", "reasoning"},              {"mathverse_2279", "reasoning"},
    {"mmmu_pro_test_Art_35", "reasoning"},
};

static char full_out[300], full_sum[300], *full_stdout;

static int run_eval(const char *args, char **out) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s eval --model " MODEL " --precision f32 --threads 1 --quiet %s", bin, args);
    return run(cmd, out);
}

static size_t count_newlines(const char *s) {
    size_t n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

static bool same_file(const char *a, const char *b) {
    char *x = slurp(a), *y = slurp(b);
    bool same = x && y && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

/* The uninterrupted run every other one is compared with (no --format: read from the first row). */
static int full_run(void) {
    char args[1024];
    snprintf(full_out, sizeof full_out, "%s/full.jsonl", tmpdir);
    snprintf(full_sum, sizeof full_sum, "%s/full.summary.json", tmpdir);
    snprintf(args, sizeof args, "--input " SAMPLE " --output %s --summary-json %s --model-name tiny/a", full_out,
             full_sum);
    return run_eval(args, &full_stdout);
}

static void test_sample_full(void) {
    int rc = full_run();
    CHECK(rc == 0, "the sample scores (rc %d)", rc);
    char *text = slurp(full_out);
    lines o = parse_lines(text ? text : "");
    CHECK(o.n == N_SAMPLE, "%d lines, got %zu", N_SAMPLE, o.n);
    double group_n[3] = {0}, group_ok[3] = {0}, correct = 0;
    const char *groups[3] = {"general", "hallucination", "reasoning"};
    for (size_t i = 0; i < o.n && i < N_SAMPLE; i++) {
        const vlr_json *l = line_at(&o, i);
        CHECK(l && str(l, "id") && strcmp(str(l, "id"), sample_ids[i].id) == 0, "line %zu: id %s", i, sample_ids[i].id);
        CHECK(l && str(l, "category") && strcmp(str(l, "category"), sample_ids[i].group) == 0, "line %zu: group", i);
        double c = num(l, "chosen_score"), r = num(l, "rejected_score");
        const vlr_json *ok = vlr_json_get(l, "correct");
        CHECK(isfinite(c) && isfinite(r) && ok && (ok->type == VLR_JSON_TRUE) == (c > r), "line %zu: correct", i);
        for (int g = 0; g < 3; g++)
            if (strcmp(sample_ids[i].group, groups[g]) == 0) group_n[g]++, group_ok[g] += c > r;
        correct += c > r;
    }
    /* the two mathverse_2279 rows are two pairs (cal.py keys them by id + query + responses) */
    CHECK(num(line_at(&o, 8), "chosen_score") != num(line_at(&o, 9), "chosen_score"),
          "the duplicated id's two rows are scored apart");
    vlr_json_doc *sd = read_summary(full_sum);
    if (sd) {
        const vlr_json *s = vlr_json_root(sd);
        CHECK(str(s, "format") && strcmp(str(s, "format"), "vlrewardbench") == 0, "format detected");
        CHECK(num(s, "n") == N_SAMPLE && num(s, "pairs") == N_SAMPLE && num(s, "errors") == 0 &&
                  num(s, "correct") == correct, "counts");
        double macro = 0;
        for (int g = 0; g < 3; g++) {
            const vlr_json *gj = vlr_json_get(vlr_json_get(s, "groups"), groups[g]);
            CHECK(num(gj, "n") == group_n[g] && num(gj, "correct") == group_ok[g], "group %s counts", groups[g]);
            CHECK_NEAR(num(s, groups[g]), group_ok[g] / group_n[g], 1e-15, groups[g]);
            macro += group_ok[g] / group_n[g] / 3;
        }
        CHECK_NEAR(num(s, "macro_average"), macro, 1e-15, "macro average");
        CHECK_NEAR(num(s, "overall_accuracy"), correct / N_SAMPLE, 1e-15, "overall accuracy");
        const char *rev = str(s, "model_revision");
        CHECK(str(s, "model") && strcmp(str(s, "model"), "tiny/a") == 0, "--model-name");
        CHECK(rev && strncmp(rev, "fnv1a64:", 8) == 0 && strlen(rev) == 24, "revision: %s", rev ? rev : "(none)");
        CHECK(str(s, "vlreward_version") && strcmp(str(s, "vlreward_version"), VLR_VERSION) == 0, "version");
        CHECK(str(s, "precision") && strcmp(str(s, "precision"), "f32") == 0 && str(s, "kernels"), "precision");
        CHECK(str(s, "image_tag") && strcmp(str(s, "image_tag"), "removed") == 0, "image tag removed by default");
        char under[256];
        snprintf(under, sizeof under, "tiny/a (revision %s), precision f32 (%s kernels), vlreward %s, format vlrewardbench",
                 rev ? rev : "?", str(s, "kernels") ? str(s, "kernels") : "?", VLR_VERSION);
        CHECK(full_stdout && strstr(full_stdout, "| tiny/a |") && strstr(full_stdout, under) &&
                  strstr(full_stdout, "| reasoning | 3 |"), "the table and what ran under it:\n%s", full_stdout);
    }
    vlr_json_free(sd);
    free_lines(&o);
    free(text);
}

/* The sample's row i, parsed. */
static vlr_json_doc *sample_row(size_t i) {
    char *text = slurp(SAMPLE);
    lines l = parse_lines(text ? text : "");
    vlr_json_doc *d = i < l.n ? l.docs[i] : NULL;
    if (i < l.n) l.docs[i] = NULL;
    free_lines(&l);
    free(text);
    return d;
}

/* Every "<image>\n" removed, as Python's str.replace. */
static void strip_tag(const char *s, vlr_buf *out) {
    while (*s) {
        if (strncmp(s, "<image>\n", 8) == 0) s += 8;
        else vlr_buf_append(out, s++, 1);
    }
    if (!out->data) vlr_buf_puts(out, "");
}

/* The three POVID rows written as `pairs` by hand, their query with and without the tag: the scores of
 * the vlrewardbench runs must be exactly those of the matching hand-written pairs. */
static void test_image_tag(void) {
    static const size_t rows[3] = {3, 4, 5}; /* "<image>\n" at the start, "\n<image>" at the end, at the start */
    char pairs[300], pairs_out[300], kept_out[300], args[1024], real[PATH_MAX], *out;
    snprintf(pairs, sizeof pairs, "%s/povid_pairs.jsonl", tmpdir);
    snprintf(pairs_out, sizeof pairs_out, "%s/povid_pairs.out", tmpdir);
    snprintf(kept_out, sizeof kept_out, "%s/kept.jsonl", tmpdir);
    if (!realpath(SAMPLE_DIR, real)) return;
    vlr_buf in = {0};
    for (int keep = 0; keep < 2; keep++) {
        for (size_t k = 0; k < 3; k++) {
            vlr_json_doc *d = sample_row(rows[k]);
            const vlr_json *r = d ? vlr_json_root(d) : NULL, *resp = vlr_json_get(r, "response");
            const vlr_json *rank = vlr_json_get(r, "human_ranking");
            if (!r || !resp || !rank) {
                CHECK(0, "sample row %zu", rows[k]);
                vlr_json_free(d);
                continue;
            }
            size_t chosen = rank->items[0].number < rank->items[1].number ? 0 : 1;
            vlr_buf q = {0};
            if (keep) vlr_buf_puts(&q, str(r, "query"));
            else strip_tag(str(r, "query"), &q);
            vlr_buf_printf(&in, "{\"id\": \"%s-%d\", \"image\": \"%s/%s\", \"question\": ", str(r, "id"), keep, real,
                           str(r, "image_path"));
            vlr_buf_json_string(&in, q.data, q.len);
            vlr_buf_puts(&in, ", \"chosen\": ");
            vlr_buf_json_string(&in, resp->items[chosen].str, resp->items[chosen].len);
            vlr_buf_puts(&in, ", \"rejected\": ");
            vlr_buf_json_string(&in, resp->items[1 - chosen].str, resp->items[1 - chosen].len);
            vlr_buf_puts(&in, "}\n");
            vlr_buf_free(&q);
            vlr_json_free(d);
        }
    }
    write_file(pairs, in.data, in.len);
    vlr_buf_free(&in);
    snprintf(args, sizeof args, "--format pairs --input %s --output %s", pairs, pairs_out);
    CHECK(run_eval(args, &out) == 0, "hand-written pairs score");
    free(out);
    snprintf(args, sizeof args, "--input " SAMPLE " --output %s --keep-image-tag", kept_out);
    CHECK(run_eval(args, &out) == 0, "--keep-image-tag run");
    free(out);
    char *p_text = slurp(pairs_out), *f_text = slurp(full_out), *k_text = slurp(kept_out);
    lines p = parse_lines(p_text ? p_text : ""), f = parse_lines(f_text ? f_text : ""), kl = parse_lines(k_text ? k_text : "");
    for (size_t k = 0; k < 3 && p.n == 6; k++) {
        const vlr_json *removed = line_at(&f, rows[k]), *kept = line_at(&kl, rows[k]);
        const vlr_json *by_hand = line_at(&p, k), *by_hand_kept = line_at(&p, 3 + k);
        for (int side = 0; side < 2; side++) {
            const char *key = side ? "rejected_score" : "chosen_score";
            CHECK(num(removed, key) == num(by_hand, key), "row %zu %s: tag removed = by hand without it", rows[k], key);
            CHECK(num(kept, key) == num(by_hand_kept, key), "row %zu %s: --keep-image-tag = by hand with it", rows[k], key);
        }
        /* the tag is text the model reads: removing it changes the scores; a trailing "\n<image>" stays */
        bool changed = num(removed, "chosen_score") != num(kept, "chosen_score");
        CHECK(k == 1 ? !changed : changed, "row %zu: the scores %s with the tag", rows[k], k == 1 ? "stay" : "change");
    }
    CHECK(p.n == 6, "6 hand-written pairs, got %zu", p.n);
    free_lines(&p);
    free_lines(&f);
    free_lines(&kl);
    free(p_text);
    free(f_text);
    free(k_text);
}

/* Keeps `bytes` of the full output as an interrupted run would leave it, resumes, compares. */
static void resume_from(size_t bytes, const char *what) {
    char part[300], sum[300], args[1024], *out;
    snprintf(part, sizeof part, "%s/part.jsonl", tmpdir);
    snprintf(sum, sizeof sum, "%s/part.summary.json", tmpdir);
    char *text = slurp(full_out);
    if (!text) return;
    write_file(part, text, bytes);
    free(text);
    snprintf(args, sizeof args, "--input " SAMPLE " --output %s --summary-json %s --model-name tiny/a --resume", part, sum);
    int rc = run_eval(args, &out);
    CHECK(rc == 0, "%s: resumed (rc %d)", what, rc);
    CHECK(same_file(part, full_out), "%s: the resumed output equals the uninterrupted one", what);
    CHECK(same_file(sum, full_sum), "%s: the resumed summary equals the uninterrupted one", what);
    CHECK(full_stdout && strcmp(out, full_stdout) == 0, "%s: the same table:\n%s", what, out);
    free(out);
}

/* Offset of the end of line k (k whole lines). */
static size_t after_lines(const char *text, size_t k) {
    const char *p = text;
    for (size_t i = 0; i < k && p && *p; i++) p = strchr(p, '\n') + 1;
    return (size_t)(p - text);
}

static void test_resume(void) {
    char *text = slurp(full_out);
    if (!text || count_newlines(text) != N_SAMPLE) {
        CHECK(0, "no full output to cut");
        free(text);
        return;
    }
    resume_from(after_lines(text, 9), "cut between the two mathverse_2279 rows");
    resume_from(after_lines(text, 10) - 17, "cut inside the 10th line");
    free(text);

    /* SIGINT while the run waits for more input from a pipe: 4 lines given, 4 results written, then
     * interrupted (exit 1), then resumed from the file. Run from the sample's folder so the image
     * paths resolve against it, as they do for --input FILE. */
    char model[PATH_MAX], exe[PATH_MAX], part[300], sum[300];
    snprintf(part, sizeof part, "%s/pipe.jsonl", tmpdir);
    snprintf(sum, sizeof sum, "%s/pipe.summary.json", tmpdir);
    char *sample = slurp(SAMPLE);
    int fds[2];
    if (!sample || !realpath(MODEL, model) || !realpath(bin, exe) || pipe(fds) != 0) {
        CHECK(0, "pipe setup");
        free(sample);
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[1]);
        dup2(fds[0], STDIN_FILENO);
        if (chdir(SAMPLE_DIR) != 0 || !freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout)) _exit(126);
        execl(exe, exe, "eval", "--model", model, "--precision", "f32", "--threads", "1", "--quiet", "--input", "-",
              "--output", part, (char *)NULL);
        _exit(127);
    }
    close(fds[0]);
    size_t four = after_lines(sample, 4);
    CHECK(write(fds[1], sample, four) == (ssize_t)four, "feed 4 lines");
    char *got = NULL;
    for (int i = 0; i < 10000; i++) {
        free(got);
        got = slurp(part);
        if (got && count_newlines(got) >= 4) break;
        usleep(1000);
    }
    kill(pid, SIGINT);
    int st;
    waitpid(pid, &st, 0);
    close(fds[1]);
    free(got);
    got = slurp(part);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1 && count_newlines(got) == 4, "interrupted after 4 lines (status %d, %zu "
          "lines)", WIFEXITED(st) ? WEXITSTATUS(st) : -1, count_newlines(got));
    char *full = slurp(full_out);
    CHECK(got && full && strncmp(got, full, strlen(got)) == 0, "the 4 lines read from the pipe are the full run's");
    free(got);
    free(full);
    free(sample);
    char args[1024], *out;
    snprintf(args, sizeof args, "--input " SAMPLE " --output %s --summary-json %s --model-name tiny/a --resume", part, sum);
    CHECK(run_eval(args, &out) == 0 && same_file(part, full_out) && same_file(sum, full_sum),
          "the interrupted pipe run, resumed from the file, equals the uninterrupted run");
    free(out);
}

static void test_dev_null(void) {
    char sum[300], args[1024], *out;
    snprintf(sum, sizeof sum, "%s/null.summary.json", tmpdir);
    snprintf(args, sizeof args, "--input " SAMPLE " --output /dev/null --summary-json %s --model-name tiny/a", sum);
    int rc = run_eval(args, &out);
    CHECK(rc == 0 && same_file(sum, full_sum), "--output /dev/null: the same summary (rc %d)", rc);
    CHECK(full_stdout && strcmp(out, full_stdout) == 0, "--output /dev/null: the same table:\n%s", out);
    free(out);
}

static void test_format_hint(void) {
    char outp[300], args[1024], *out;
    snprintf(outp, sizeof outp, "%s/wrong_format.jsonl", tmpdir);
    snprintf(args, sizeof args, "--format pairs --input " SAMPLE " --output %s", outp);
    int rc = run_eval(args, &out);
    free(out);
    char *text = slurp(outp);
    lines o = parse_lines(text ? text : "");
    size_t hinted = 0;
    for (size_t i = 0; i < o.n; i++) {
        const char *err = str(line_at(&o, i), "error");
        hinted += err && strstr(err, "(this row looks like --format vlrewardbench, not pairs)");
    }
    CHECK(rc == 1 && o.n == N_SAMPLE && hinted == N_SAMPLE, "every row names the format it looks like (rc %d, %zu)", rc,
          hinted);
    free_lines(&o);
    free(text);
    /* a first row of no known format: a usage error naming --format */
    char odd[300];
    snprintf(odd, sizeof odd, "%s/odd.jsonl", tmpdir);
    write_file(odd, "{\"foo\": 1}\n", 11);
    snprintf(args, sizeof args, "--input %s --output /dev/null", odd);
    rc = run_eval(args, &out);
    char err_path[300];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    char *err = slurp(err_path);
    CHECK(rc == 2 && err && strstr(err, "cannot tell the dataset format") && strstr(err, "give --format"),
          "unknown format: rc 2 and a hint (rc %d): %s", rc, err ? err : "");
    free(err);
    free(out);
}

/* A row whose image is missing: an error line in its group, counted as failed, in no accuracy. */
static void test_failed_row(void) {
    char dir[300], in_path[400], outp[400], sum[400], link[400], real[PATH_MAX], args[1400], *out;
    snprintf(dir, sizeof dir, "%s/failing", tmpdir);
    snprintf(in_path, sizeof in_path, "%s/sample.jsonl", dir);
    snprintf(outp, sizeof outp, "%s/out.jsonl", dir);
    snprintf(sum, sizeof sum, "%s/summary.json", dir);
    snprintf(link, sizeof link, "%s/images", dir);
    if (mkdir(dir, 0700) != 0 || !realpath(SAMPLE_DIR "/images", real) || symlink(real, link) != 0) {
        CHECK(0, "setup %s", dir);
        return;
    }
    char *text = slurp(SAMPLE);
    char *at = text ? strstr(text, "images/reasoning_tasks/mmmu_pro_test_Art_35.png") : NULL;
    if (at) memcpy(at + strlen("images/reasoning_tasks/"), "xxxx", 4); /* a file that does not exist */
    if (text) write_file(in_path, text, strlen(text));
    free(text);
    snprintf(args, sizeof args, "--input %s --output %s --summary-json %s", in_path, outp, sum);
    int rc = run_eval(args, &out);
    CHECK(rc == 1, "a failed pair exits 1 (got %d)", rc);
    char *lines_text = slurp(outp);
    lines o = parse_lines(lines_text ? lines_text : "");
    const vlr_json *l = line_at(&o, 10);
    CHECK(l && str(l, "error") && str(l, "category") && strcmp(str(l, "category"), "reasoning") == 0,
          "the error line names its group");
    vlr_json_doc *sd = read_summary(sum);
    char *full_text = slurp(full_out);
    lines f = parse_lines(full_text ? full_text : "");
    if (sd) {
        const vlr_json *s = vlr_json_root(sd);
        const vlr_json *g = vlr_json_get(vlr_json_get(s, "groups"), "reasoning");
        /* the two reasoning pairs left are the full run's lines 8 and 9 */
        double left_ok = 0;
        for (size_t i = 8; i < 10; i++) left_ok += num(line_at(&f, i), "chosen_score") > num(line_at(&f, i), "rejected_score");
        CHECK(num(g, "n") == 3 && num(g, "pairs") == 2 && num(g, "failed") == 1 && num(g, "correct") == left_ok,
              "reasoning: N 3, 2 scored (%g correct), 1 failed", left_ok);
        CHECK(num(s, "errors") == 1 && num(s, "errors_unknown_category") == 0 && num(s, "n") == N_SAMPLE, "totals");
        CHECK_NEAR(num(s, "reasoning"), left_ok / 2, 1e-15, "the accuracy leaves the failed pair out");
        CHECK_NEAR(num(s, "accuracy_failed_as_wrong"), num(s, "correct") / N_SAMPLE, 1e-15, "failed counted as wrong");
        char row[64];
        snprintf(row, sizeof row, "| reasoning | 3 | %g | 0 | 1 |", num(g, "correct"));
        CHECK(strstr(out, row) && strstr(out, "1 failed; the accuracies leave the failed pairs out"), "table:\n%s", out);
    }
    vlr_json_free(sd);
    free_lines(&f);
    free(full_text);
    free_lines(&o);
    free(lines_text);
    free(out);
}

/* The name and revision of a Hugging Face cache snapshot, of a plain folder, and of a changed config. */
static void test_model_identity(void) {
    static const char *const files[] = {"chat_template.json", "model.safetensors", "preprocessor_config.json",
                                        "tokenizer.json", "tokenizer_config.json", "value_head.safetensors"};
    const size_t n_files = sizeof files / sizeof files[0];
    char hub[300], snap[400], plain[300], changed[300], cfg[450], pairs[300];
    snprintf(hub, sizeof hub, "%s/hub", tmpdir);
    snprintf(snap, sizeof snap, "%s/models--Skywork--Skywork-VL-Reward-7B", hub);
    mkdir(hub, 0700);
    mkdir(snap, 0700);
    snprintf(snap, sizeof snap, "%s/models--Skywork--Skywork-VL-Reward-7B/snapshots", hub);
    mkdir(snap, 0700);
    snprintf(snap, sizeof snap, "%s/models--Skywork--Skywork-VL-Reward-7B/snapshots/0123456789abcdef0123456789abcdef01234567",
             hub);
    snprintf(plain, sizeof plain, "%s/my-model", tmpdir);
    snprintf(changed, sizeof changed, "%s/changed-model", tmpdir);
    char *config = slurp(MODEL "/config.json");
    bool ok = config && test_model_link(snap, MODEL, files, n_files) && test_model_link(plain, MODEL, files, n_files) &&
              test_model_link(changed, MODEL, files, n_files);
    CHECK(ok, "model folders");
    if (!ok) {
        free(config);
        return;
    }
    for (int k = 0; k < 3; k++) {
        snprintf(cfg, sizeof cfg, "%s/config.json", k == 0 ? snap : k == 1 ? plain : changed);
        write_file(cfg, config, strlen(config));
        if (k == 2) write_file(cfg, config, strlen(config) - 1); /* one byte less: the same JSON, another file */
    }
    free(config);
    snprintf(pairs, sizeof pairs, "%s/one_pair.jsonl", tmpdir);
    write_file(pairs, "{\"question\": \"2+2?\", \"chosen\": \"4\", \"rejected\": \"5\"}\n", 53);
    const char *dirs[3] = {snap, plain, changed};
    char revs[3][128] = {"", "", ""}, names[3][128] = {"", "", ""};
    for (int k = 0; k < 3; k++) {
        char cmd[2048], sum[300], *out;
        snprintf(sum, sizeof sum, "%s/identity%d.json", tmpdir, k);
        snprintf(cmd, sizeof cmd, "%s eval --model %s --quiet --input %s --output /dev/null --summary-json %s", bin, dirs[k],
                 pairs, sum);
        CHECK(run(cmd, &out) == 0, "eval with model folder %d", k);
        free(out);
        vlr_json_doc *d = read_summary(sum);
        const char *rev = d ? str(vlr_json_root(d), "model_revision") : NULL, *name = d ? str(vlr_json_root(d), "model") : NULL;
        snprintf(revs[k], sizeof revs[k], "%s", rev ? rev : "");
        snprintf(names[k], sizeof names[k], "%s", name ? name : "");
        vlr_json_free(d);
    }
    CHECK(strcmp(names[0], "Skywork/Skywork-VL-Reward-7B") == 0 &&
              strcmp(revs[0], "0123456789abcdef0123456789abcdef01234567") == 0,
          "cache snapshot: %s at %s", names[0], revs[0]);
    vlr_json_doc *fd = read_summary(full_sum);
    const char *full_rev = fd ? str(vlr_json_root(fd), "model_revision") : NULL;
    CHECK(strcmp(names[1], "my-model") == 0 && full_rev && strcmp(revs[1], full_rev) == 0,
          "a plain folder: its name, the checksum of the same files (%s vs %s)", revs[1], full_rev ? full_rev : "");
    CHECK(strcmp(names[2], "changed-model") == 0 && strncmp(revs[2], "fnv1a64:", 8) == 0 && strcmp(revs[2], revs[1]) != 0,
          "another config.json, another revision (%s)", revs[2]);
    vlr_json_free(fd);
}

/* Spearman's rho computed the slow, plain way: each value's rank counts the values below it and
 * half of its equals (its average rank), then Pearson's r of the ranks. */
static double spearman_by_hand(const double *x, const double *y, size_t n) {
    double rx[64], ry[64], mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < n; i++) {
        double bx = 1, by = 1;
        for (size_t j = 0; j < n; j++) {
            if (j == i) continue;
            bx += x[j] < x[i] ? 1 : x[j] == x[i] ? 0.5 : 0;
            by += y[j] < y[i] ? 1 : y[j] == y[i] ? 0.5 : 0;
        }
        rx[i] = bx, ry[i] = by, mx += bx / (double)n, my += by / (double)n;
    }
    for (size_t i = 0; i < n; i++) {
        sxy += (rx[i] - mx) * (ry[i] - my);
        sxx += (rx[i] - mx) * (rx[i] - mx);
        syy += (ry[i] - my) * (ry[i] - my);
    }
    return sxy / sqrt(sxx * syy);
}

static char compare_out[300], compare_sum[300], report_dir[300], *compare_stdout;

/* The --compare-precision f32,bf16 run, with --report: what test_compare_precision and
 * test_html_report look at. The model name needs escaping in HTML. */
static int compare_run(void) {
    char cmd[2048];
    snprintf(compare_out, sizeof compare_out, "%s/compare.jsonl", tmpdir);
    snprintf(compare_sum, sizeof compare_sum, "%s/compare.summary.json", tmpdir);
    snprintf(report_dir, sizeof report_dir, "%s/report", tmpdir);
    snprintf(cmd, sizeof cmd, "%s eval --model " MODEL " --threads 1 --quiet --input " SAMPLE " --output %s "
             "--summary-json %s --model-name 'tiny <a> & b' --compare-precision f32,bf16 --report %s", bin, compare_out,
             compare_sum, report_dir);
    return run(cmd, &compare_stdout);
}

/* --compare-precision f32,bf16 on the real rows: A's scores are those of a plain f32 run, B's those of
 * a plain bf16 run; agreement, Spearman and the differences are recomputed here from the lines. */
static void test_compare_precision(void) {
    char bf16_out[300], args[1024], cmd[2048], *out;
    const char *outp = compare_out, *sum = compare_sum;
    int rc = compare_run();
    CHECK(rc == 0 && strstr(compare_stdout, "| bf16 against f32 | |") &&
              strstr(compare_stdout, "| same decision (chosen > rejected) |"),
          "compare run (rc %d):\n%s", rc, compare_stdout);
    snprintf(bf16_out, sizeof bf16_out, "%s/bf16.jsonl", tmpdir);
    snprintf(args, sizeof args, "--input " SAMPLE " --output %s", bf16_out);
    char plain[2048];
    snprintf(plain, sizeof plain, "%s eval --model " MODEL " --precision bf16 --threads 1 --quiet %s", bin, args);
    CHECK(run(plain, &out) == 0, "plain bf16 run");
    free(out);
    char *c_text = slurp(outp), *f_text = slurp(full_out), *b_text = slurp(bf16_out);
    lines c = parse_lines(c_text ? c_text : ""), f = parse_lines(f_text ? f_text : ""), b = parse_lines(b_text ? b_text : "");
    CHECK(c.n == N_SAMPLE && f.n == N_SAMPLE && b.n == N_SAMPLE, "line counts %zu %zu %zu", c.n, f.n, b.n);
    double xa[2 * N_SAMPLE], xb[2 * N_SAMPLE], abs_sum = 0, abs_max = 0, diff_sum = 0;
    size_t same = 0, n = 0;
    for (size_t i = 0; i < c.n && i < N_SAMPLE && f.n == N_SAMPLE && b.n == N_SAMPLE; i++) {
        const vlr_json *l = line_at(&c, i), *cmp = vlr_json_get(l, "compare");
        CHECK(cmp && str(cmp, "precision") && strcmp(str(cmp, "precision"), "bf16") == 0, "line %zu: compare object", i);
        for (int side = 0; side < 2; side++) {
            const char *key = side ? "rejected_score" : "chosen_score";
            CHECK(num(l, key) == num(line_at(&f, i), key), "line %zu %s: A = the f32 run", i, key);
            CHECK(num(cmp, key) == num(line_at(&b, i), key), "line %zu %s: B = the bf16 run", i, key);
            xa[n] = num(l, key);
            xb[n] = num(cmp, key);
            double d = xb[n] - xa[n];
            diff_sum += d;
            abs_sum += fabs(d);
            if (fabs(d) > abs_max) abs_max = fabs(d);
            n++;
        }
        bool da = num(l, "chosen_score") > num(l, "rejected_score"), db = num(cmp, "chosen_score") > num(cmp, "rejected_score");
        same += da == db;
        CHECK((vlr_json_get(cmp, "correct")->type == VLR_JSON_TRUE) == db, "line %zu: compare.correct", i);
    }
    vlr_json_doc *sd = read_summary(sum);
    const vlr_json *cp = sd ? vlr_json_get(vlr_json_root(sd), "compare_precision") : NULL, *diff = vlr_json_get(cp, "diff");
    CHECK(cp && num(cp, "pairs") == N_SAMPLE && num(cp, "same_decision") == (double)same, "agreement %zu of %d", same,
          N_SAMPLE);
    CHECK_NEAR(num(cp, "agreement"), (double)same / N_SAMPLE, 1e-15, "agreement fraction");
    CHECK(n == 2 * N_SAMPLE, "%zu scores", n);
    if (n == 2 * N_SAMPLE) CHECK_NEAR(num(cp, "spearman"), spearman_by_hand(xa, xb, n), 1e-12, "spearman");
    CHECK_NEAR(num(diff, "abs_max"), abs_max, 0, "max |diff|");
    CHECK_NEAR(num(diff, "abs_mean"), abs_sum / (double)n, 1e-15, "mean |diff|");
    CHECK_NEAR(num(diff, "mean"), diff_sum / (double)n, 1e-15, "mean diff");
    CHECK(abs_max > 0 && num(diff, "abs_median") <= num(diff, "abs_p90") && num(diff, "abs_p90") <= num(diff, "abs_p99") &&
              num(diff, "abs_p99") <= abs_max, "bf16 moves the scores; the quantiles are ordered");
    CHECK_NEAR(num(vlr_json_get(cp, "accuracy"), "f32"), num(vlr_json_root(sd), "accuracy"), 0, "accuracy at A");
    vlr_json_free(sd);
    free_lines(&c);
    free_lines(&f);
    free_lines(&b);
    free(b_text);
    free(f_text);

    /* Cut after 5 lines and resumed: the same lines, the same comparison. */
    char part[300], part_sum[300];
    snprintf(part, sizeof part, "%s/compare.part.jsonl", tmpdir);
    snprintf(part_sum, sizeof part_sum, "%s/compare.part.summary.json", tmpdir);
    if (c_text) write_file(part, c_text, after_lines(c_text, 5));
    snprintf(cmd, sizeof cmd, "%s eval --model " MODEL " --threads 1 --quiet --input " SAMPLE " --output %s "
             "--summary-json %s --model-name 'tiny <a> & b' --compare-precision f32,bf16 --resume", bin, part, part_sum);
    rc = run(cmd, &out);
    CHECK(rc == 0 && same_file(part, outp) && same_file(part_sum, sum) && strcmp(out, compare_stdout) == 0,
          "a compare run cut after 5 lines and resumed equals the whole run (rc %d)", rc);
    free(out);
    free(c_text);
    /* Resuming a file written without the comparison is refused: its lines have no B scores. */
    char *plain_text = slurp(full_out);
    if (plain_text) write_file(part, plain_text, after_lines(plain_text, 3));
    free(plain_text);
    rc = run(cmd, &out);
    free(out);
    char err_path[300];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    char *err = slurp(err_path);
    CHECK(rc == 2 && err && strstr(err, "line 1: no \"compare\" scores at bf16"), "refused (rc %d): %s", rc, err ? err : "");
    free(err);
    /* usage errors */
    static const char *const bad[] = {"--compare-precision f32", "--compare-precision f32,fp7",
                                      "--compare-precision f32,bf16 --precision bf16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s eval --model " MODEL " --input " SAMPLE " --output /dev/null %s", bin, bad[i]);
        rc = run(cmd, &out);
        CHECK(rc == 2, "%s: usage error (rc %d)", bad[i], rc);
        free(out);
    }
}

/* The sum of the data-count="N" attributes of the bars of one section of the report whose class
 * starts with cls ("bar " for all, "bar correct" for the right of zero). */
static double bar_counts(const char *section, const char *end, const char *cls, int bins[], size_t *n_bins) {
    double sum = 0;
    char needle[64];
    snprintf(needle, sizeof needle, "<rect class=\"%s", cls);
    for (const char *p = section; (p = strstr(p, needle)) && p < end; p++) {
        const char *bin = strstr(p, "data-bin=\""), *count = strstr(p, "data-count=\"");
        if (!bin || !count) break;
        sum += strtod(count + 12, NULL);
        if (bins) bins[(*n_bins)++] = atoi(bin + 10);
    }
    return sum;
}

/* The bin of a margin as the report's caption defines it: 24 bins over [-half, half], each (lo, hi],
 * the outermost ones holding whatever lies beyond. */
static int bin_of(double m, double half) {
    double w = 2 * half / 24;
    int k = (int)ceil((m + half) / w) - 1;
    return k < 0 ? 0 : k > 23 ? 23 : k;
}

/* --report DIR: a self-contained page whose histograms hold exactly the margins of the output lines,
 * rendered by Debian's headless Chromium to a PNG in which both bar colours appear. */
static void test_html_report(void) {
    char page[400], png[400], cmd[8192];
    snprintf(page, sizeof page, "%s/index.html", report_dir);
    snprintf(png, sizeof png, "%s/report.png", tmpdir);
    char *html = slurp(page), *lines_text = slurp(compare_out);
    CHECK(html && lines_text, "the compare run wrote its report");
    if (!html || !lines_text) {
        free(html);
        free(lines_text);
        return;
    }
    /* nothing fetched: no script, no link, no external resource of any kind */
    static const char *const external[] = {"<script", "src=", "href=", "url(", "@import", "http:", "https:", "<link",
                                           "<img", "<iframe"};
    for (size_t i = 0; i < sizeof external / sizeof external[0]; i++)
        CHECK(!strstr(html, external[i]), "self-contained: no %s", external[i]);
    CHECK(strstr(html, "<title>vlreward eval: tiny &lt;a&gt; &amp; b</title>") && !strstr(html, "tiny <a>"),
          "the model name is escaped");
    CHECK(strstr(html, "<h2>Precision comparison</h2>") && strstr(html, "bf16 against f32"), "the comparison");
    const char *half_at = strstr(html, "data-half=\"");
    double half = half_at ? strtod(half_at + 11, NULL) : NAN;
    lines o = parse_lines(lines_text);
    /* per group: the bins the output lines' margins fall in, recomputed here */
    const char *groups[3] = {"general", "hallucination", "reasoning"};
    size_t sections = 0;
    for (const char *p = html; (p = strstr(p, "<section class=\"category\"")); p++) sections++;
    CHECK(sections == 3, "one histogram per group (%zu)", sections);
    for (int g = 0; g < 3; g++) {
        char title[64];
        snprintf(title, sizeof title, "<h3>%s</h3>", groups[g]);
        const char *sec = strstr(html, title), *end = sec ? strstr(sec, "</section>") : NULL;
        if (!sec || !end) {
            CHECK(0, "section %s", groups[g]);
            continue;
        }
        int want[24] = {0}, got_bins[24];
        double pairs = 0, correct = 0;
        for (size_t i = 0; i < o.n; i++) {
            const vlr_json *l = line_at(&o, i);
            if (!str(l, "category") || strcmp(str(l, "category"), groups[g]) != 0) continue;
            double m = num(l, "chosen_score") - num(l, "rejected_score");
            want[bin_of(m, half)]++;
            pairs++;
            correct += m > 0;
            CHECK(fabs(m) <= half, "margin %g within the scale %g", m, half);
        }
        size_t n_bins = 0;
        double all = bar_counts(sec, end, "bar ", got_bins, &n_bins);
        CHECK(all == pairs && bar_counts(sec, end, "bar correct", NULL, NULL) == correct,
              "%s: %g bars' pairs (%g), %g right of zero (%g)", groups[g], all, pairs,
              bar_counts(sec, end, "bar correct", NULL, NULL), correct);
        for (size_t k = 0; k < n_bins; k++) {
            char attr[64];
            snprintf(attr, sizeof attr, "data-bin=\"%d\" data-count=\"%d\"", got_bins[k], want[got_bins[k]]);
            CHECK(strstr(sec, attr) != NULL, "%s: bin %d holds %d margins", groups[g], got_bins[k], want[got_bins[k]]);
        }
    }
    free_lines(&o);
    free(lines_text);
    free(html);

    if (system("command -v chromium >/dev/null 2>&1") != 0) {
        SKIP(4, "chromium is not installed here (scripts/install-deps installs it; CI runs this check)");
        return;
    }
    char real[PATH_MAX];
    if (!realpath(page, real)) return;
    snprintf(cmd, sizeof cmd, "timeout 120 chromium --headless --no-sandbox --disable-gpu --user-data-dir=%s/chromium "
             "--window-size=1000,2200 --screenshot=%s file://%s >%s/chromium.log 2>&1", tmpdir, png, real, tmpdir);
    int rc = system(cmd);
    CHECK(rc == 0, "chromium renders the report (status %d; %s/chromium.log)", rc, tmpdir);
    char *bytes;
    size_t n;
    vlr_err e = {0};
    vlr_image img = {0};
    bool read = vlr_read_file(png, 1 << 26, &bytes, &n, &e) == VLR_OK;
    CHECK(read && vlr_image_decode((const uint8_t *)bytes, n, png, NULL, &img, NULL, &e) == VLR_OK,
          "the screenshot is a PNG: %s", e.msg);
    if (read) free(bytes);
    /* the histograms' bars are drawn: both colours cover whole areas */
    size_t blue = 0, orange = 0;
    for (size_t i = 0; img.rgb && i < (size_t)img.width * (size_t)img.height; i++) {
        const uint8_t *p = img.rgb + 3 * i;
        blue += p[0] == 0x2a && p[1] == 0x7a && p[2] == 0xb0;
        orange += p[0] == 0xd9 && p[1] == 0x82 && p[2] == 0x2b;
    }
    CHECK(img.width == 1000 && img.height == 2200, "the window's size: %dx%d", img.width, img.height);
    CHECK(blue > 2000 && orange > 2000, "the bars are on the page: %zu blue, %zu orange pixels", blue, orange);
    vlr_image_free(&img);
}

int main(void) {
    if (!eval_test_setup("vlr_eval_bench")) return test_report();
    if (!TEST_RUN(test_sample_full)) full_run(); /* passed over: the tests below compare with it */
    TEST_RUN(test_image_tag);
    TEST_RUN(test_resume);
    TEST_RUN(test_dev_null);
    TEST_RUN(test_format_hint);
    TEST_RUN(test_failed_row);
    TEST_RUN(test_model_identity);
    if (!TEST_RUN(test_compare_precision)) compare_run(); /* the report test reads its output */
    TEST_RUN(test_html_report);
    free(full_stdout);
    free(compare_stdout);
    eval_test_cleanup();
    return test_report();
}
