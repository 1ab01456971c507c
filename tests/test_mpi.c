/* test_mpi.c: `mpirun -n K vlreward score|eval` (issue 15). A mixed batch (the reference conversations
 * twice with unique ids, consecutive answers to one prompt, groups, invalid JSON, a line the
 * handler refuses, a line over --max-line-bytes, a blank line) is scored by one process without mpirun;
 * under mpirun with K = 1, 2, 3 ranks the output must be the same bytes, with the same exit status and
 * one summary line that says "on K ranks". Then jobs are killed at random points (a random rank gets
 * SIGKILL at a random point of its progress, read from its output; the seed is printed, VLR_TEST_SEED replays one) and resumed with
 * --resume until done: the output must equal the uninterrupted one; so must a job whose rank 0 got
 * SIGINT (it finishes the lines under way) once resumed. eval on the VL-RewardBench sample
 * prints the same table and writes the same lines under mpirun. A job whose rank 0 refuses to start
 * (an existing output) ends with rank 0's message instead of hanging. Runs as root need Open MPI's
 * OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), set here; --oversubscribe lets 3 ranks run on 2 cores. Under
 * AddressSanitizer, LeakSanitizer reads tests/mpi.supp: leaks inside Open MPI's own libraries only. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "test_cmd.h"

#define MODEL "tests/reference/models/tiny-a"
#define MPIRUN "timeout -k 5 120 mpirun --oversubscribe"

static char bin[512], dir[256], input[300], want[300], root[PATH_MAX];

/* The mixed batch: images resolve against dir/images, a link to tests/reference/images. */
static bool write_input(void) {
    char path[PATH_MAX + 64], images[300];
    snprintf(path, sizeof path, "%s/tests/reference/images", root);
    snprintf(images, sizeof images, "%s/images", dir);
    char *cases = test_read_text("tests/reference/cases.jsonl");
    FILE *f = fopen(input, "wb");
    if (symlink(path, images) != 0 || !f || !*cases) {
        if (f) fclose(f);
        free(cases);
        return false;
    }
    const char *demo_user = "[{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": \"images/demo.jpg\"}, "
                            "{\"type\": \"text\", \"text\": \"Is Purple the highest value?\"}]}";
    for (int round = 0; round < 2; round++) {
        /* the reference conversations, each id made unique */
        for (const char *line = cases; *line;) {
            const char *nl = strchr(line, '\n'), *id = strstr(line, "\"id\": \"");
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            if (id && id < line + len) {
                const char *id_end = strchr(id + 7, '"');
                fprintf(f, "%.*s_r%d%.*s\n", (int)(id_end - line), line, round, (int)(line + len - id_end), id_end);
            }
            line += len + (nl != NULL);
        }
        /* four answers to one prompt in a row, then a group of three */
        for (int a = 0; a < 4; a++)
            fprintf(f, "{\"id\": \"same_%d_%d\", \"messages\": %s, {\"role\": \"assistant\", \"content\": \"answer %d\"}]}\n",
                    round, a, demo_user, a * 7 + round);
        fprintf(f, "{\"id\": \"group_%d\", \"messages\": %s], \"answers\": [\"B\", \"A\", \"The answer is %d\"]}\n", round,
                demo_user, round);
        fprintf(f, "{\"id\": \"bad_json_%d\", \"messages\": [\n", round);
        fprintf(f, "{\"id\": \"no_messages_%d\"}\n", round);
        fputs("   \n", f);
        fprintf(f, "{\"id\": \"too_long_%d\", \"pad\": \"", round);
        for (int i = 0; i < 3000; i++) fputs("0123456789", f);
        fputs("\"}\n", f);
    }
    free(cases);
    return fclose(f) == 0;
}

/* "[mpirun -n K] vlreward score ... --output out" with the batch's options; *err gets stderr. */
static int score(int ranks, const char *out, const char *extra, char **err) {
    char cmd[2048], err_path[300], launcher[128] = "";
    if (ranks) snprintf(launcher, sizeof launcher, MPIRUN " -n %d ", ranks);
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "%s%s score --model " MODEL " --threads 1 --max-line-bytes 20000 --quiet --input %s "
             "--output %s %s", launcher, bin, input, out, extra ? extra : "");
    char *stdout_text;
    int rc = test_run(cmd, err_path, &stdout_text);
    free(stdout_text);
    *err = test_read_text(err_path);
    return rc;
}

static bool same_file(const char *a, const char *b) {
    char *x = test_read_text(a), *y = test_read_text(b);
    bool same = *x && strcmp(x, y) == 0;
    free(x);
    free(y);
    return same;
}

static size_t count_substr(const char *s, const char *sub) {
    size_t n = 0;
    for (const char *p = s; (p = strstr(p, sub)); p += strlen(sub)) n++;
    return n;
}

/* The summary's "N requests, N errors" part. */
static void summary_counts(const char *err, char *out, size_t cap) {
    const char *p = strstr(err, "vlreward score: "), *e = p ? strstr(p, " tokens") : NULL;
    snprintf(out, cap, "%.*s", p && e ? (int)(e - p) : 0, p ? p : "");
}

static int want_status;
static char want_counts[200];

static void run_want(void) {
    char *err;
    want_status = score(0, want, "--overwrite", &err);
    summary_counts(err, want_counts, sizeof want_counts);
    free(err);
}

static void test_ranks_identical(void) {
    run_want();
    CHECK(want_status == 1, "one process: exit 1 for the bad lines (got %d)", want_status);
    CHECK(strstr(want_counts, "requests, 6 errors"), "one process: the 6 bad lines are error lines: %s", want_counts);
    for (int k = 1; k <= 3; k++) {
        char out[300], *err, counts[200], ranks[32];
        snprintf(out, sizeof out, "%s/out_k%d.jsonl", dir, k);
        int rc = score(k, out, "--overwrite", &err);
        summary_counts(err, counts, sizeof counts);
        snprintf(ranks, sizeof ranks, " on %d rank%s, ", k, k == 1 ? "" : "s");
        CHECK(rc == want_status, "K=%d: exit %d, one process %d", k, rc, want_status);
        CHECK(same_file(out, want), "K=%d: output byte-identical to one process", k);
        CHECK(strcmp(counts, want_counts) == 0, "K=%d: summary '%s', one process '%s'", k, counts, want_counts);
        CHECK(count_substr(err, "vlreward score: ") == 1 && strstr(err, ranks), "K=%d: one summary line with '%s': %s",
              k, ranks, err);
        free(err);
    }
}

/* Consecutive answers to one prompt (and a group's answers) stay on one rank, so a job reuses the
 * prompt's KV cache as one process does: under mpirun only requests whose prompt differs from the
 * previous one can lose their shared system-prompt tokens (at most the chat template's head, under
 * 30 tokens, once per rank switch), never a whole image prompt (hundreds of tokens). Without the
 * prefix cache (each rank would have its own), so the reuse counted is the session's. */
static void test_prefix_stays(void) {
    char path[300], out[300], cmd[2048], err_path[300];
    snprintf(path, sizeof path, "%s/runs.jsonl", dir);
    snprintf(err_path, sizeof err_path, "%s/runs_err.txt", dir);
    FILE *f = fopen(path, "wb");
    static const char *const images[] = {"demo.jpg", "coffee.jpg", "rocket_wide.png", "camera_gray.jpg"};
    for (int p = 0; f && p < 8; p++)
        for (int a = 0; a < 4; a++)
            fprintf(f, "{\"id\": \"p%d_a%d\", \"image\": \"images/%s\", \"question\": \"Question %d?\", "
                       "\"answer\": \"answer %d\"}\n", p, a, images[p % 4], p, a);
    CHECK(f && fclose(f) == 0, "write %s", path);
    long reused[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        char launcher[128] = "";
        if (k) snprintf(launcher, sizeof launcher, MPIRUN " -n 3 ");
        snprintf(out, sizeof out, "%s/runs_out%d.jsonl", dir, k);
        snprintf(cmd, sizeof cmd, "%s%s score --model " MODEL " --threads 1 --vision-cache 0 --prefix-cache 0 --quiet --overwrite "
                 "--input %s --output %s", launcher, bin, path, out);
        char *o, *err;
        int rc = test_run(cmd, err_path, &o);
        err = test_read_text(err_path);
        /* the summary's "R of N tokens reused" */
        const char *r = strstr(err, " tokens reused");
        while (r && r > err && r[-1] != ',') r--;
        if (r && r > err) reused[k] = strtol(r, NULL, 10);
        else r = NULL;
        CHECK(rc == 0 && r, "%s run: exit %d: %s", k ? "3-rank" : "one-process", rc, err);
        printf("test_prefix_stays: %s: %ld tokens reused\n", k ? "3 ranks" : "one process", reused[k]);
        free(o);
        free(err);
    }
    /* 8 prompts x 3 later answers reuse each prompt; 7 prompt switches reuse the template's head */
    CHECK(reused[0] > 24 * 100, "one process reuses the prompts: %ld tokens", reused[0]);
    CHECK(reused[1] >= reused[0] - 7 * 30, "3 ranks reuse as much as one process but for prompt switches: %ld vs %ld",
          reused[1], reused[0]);
}

static size_t lines_of(const char *path) {
    char *text = test_read_text(path);
    size_t n = count_substr(text, "\n");
    free(text);
    return n;
}

/* /proc/PID/NAME into buf (NUL-terminated, empty when unreadable); its length. */
static size_t read_proc(pid_t pid, const char *name, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    FILE *f = fopen(path, "r");
    size_t len = f ? fread(buf, 1, cap - 1, f) : 0;
    if (f) fclose(f);
    buf[len] = '\0';
    return len;
}

/* The pids of the processes whose parent is `parent` (mpirun's ranks). */
static int children_of(pid_t parent, pid_t *out, int cap) {
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    while (d && (e = readdir(d)) && n < cap) {
        char stat[512];
        long pid = strtol(e->d_name, NULL, 10);
        if (pid <= 0) continue;
        read_proc((pid_t)pid, "stat", stat, sizeof stat);
        const char *close = strrchr(stat, ')');
        int ppid = 0;
        char state;
        if (close && sscanf(close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent && state != 'Z') out[n++] = (pid_t)pid;
    }
    if (d) closedir(d);
    return n;
}

static bool alive(pid_t pid) {
    char stat[256];
    read_proc(pid, "stat", stat, sizeof stat);
    const char *close = strrchr(stat, ')');
    return close && close[1] == ' ' && close[2] != 'Z';
}

/* mpirun -n ranks score ... (resume or overwrite) in the background. */
static pid_t start_job(int ranks, const char *out, bool resume) {
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen("/dev/null", "w", stderr)) _exit(126);
        char n[16];
        snprintf(n, sizeof n, "%d", ranks);
        execlp("mpirun", "mpirun", "--oversubscribe", "-n", n, bin, "score", "--model", MODEL, "--threads", "1",
               "--max-line-bytes", "20000", "--quiet", "--input", input, "--output", out,
               resume ? "--resume" : "--overwrite", (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The job's exit status; a job still running after 120 s has hung: it and its ranks are killed. */
static int wait_job(pid_t job) {
    int st = 0;
    for (int i = 0; i < 1200; i++) {
        if (waitpid(job, &st, WNOHANG) == job) return st;
        usleep(100000);
    }
    pid_t ranks[8];
    int n = children_of(job, ranks, 8);
    for (int i = 0; i < n; i++) kill(ranks[i], SIGKILL);
    kill(job, SIGKILL);
    waitpid(job, &st, 0);
    CHECK(0, "a job hung for 120 s (killed)");
    return st;
}

/* Waits until the job's ranks have started and out holds at least `lines` lines, or the job has
 * ended (not reaped: wait_job does that), at most 60 s. Following the output instead of sleeping a
 * guessed time makes the kill land midway on a slow machine and a fast one alike. */
static void wait_for_lines(pid_t job, const char *out, size_t lines) {
    pid_t ranks[8];
    for (int i = 0; i < 30000 && alive(job) && (!children_of(job, ranks, 8) || lines_of(out) < lines); i++)
        usleep(2000);
}

static void test_kill_resume(void) {
    const char *env = getenv("VLR_TEST_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("test_kill_resume: seed %u (VLR_TEST_SEED=%u replays it)\n", seed, seed);
    fprintf(stderr, "test_kill_resume: seed %u\n", seed);
    srand(seed);
    size_t want_lines = lines_of(want), cut_short = 0;
    /* Rank 0 may hold finished lines that wait for an earlier one, and writes them in a burst: a
     * kill between two reads of the output can still find the job complete. Should no kill of the
     * two rounds have cut a job short, up to two more rounds kill while the ranks load. */
    for (int round = 0; round < 2 || (!cut_short && round < 4); round++) {
        char out[300];
        snprintf(out, sizeof out, "%s/killed_%d.jsonl", dir, round);
        int ranks = 2 + rand() % 2, kills = 0, tries = 0;
        for (; tries < 12; tries++) {
            size_t done = tries > 0 ? lines_of(out) : 0;
            pid_t job = start_job(ranks, out, tries > 0), victims[8];
            int n = 0;
            if (kills < 2 && done < want_lines) {
                /* a random point from loading the model (0 new lines) to the last line under way */
                size_t target = round < 2 ? done + (size_t)rand() % (want_lines - done) : done;
                wait_for_lines(job, out, target);
                if (target > done) usleep((useconds_t)(rand() % 20) * 1000);
                n = children_of(job, victims, 8);
                if (n) {
                    kill(victims[rand() % n], SIGKILL);
                    kills++;
                }
            }
            int st = wait_job(job);
            /* the job's other ranks go down with it: none may write when the next one starts */
            for (int i = 0; i < n; i++)
                for (int w = 0; w < 5000 && alive(victims[i]); w++) usleep(1000);
            if (n) {
                if (lines_of(out) < want_lines) cut_short++;
            } else if (WIFEXITED(st) && WEXITSTATUS(st) <= 1) {
                break; /* a job left alone finished */
            }
        }
        CHECK(tries < 12, "round %d: the job finished after %d tries", round, tries);
        CHECK(same_file(out, want), "round %d (%d ranks, %d kills, seed %u): resumed output equals the uninterrupted one",
              round, ranks, kills, seed);
    }
    CHECK(cut_short > 0, "some kill stopped a job midway (seed %u)", seed);
}

/* The rank of a process started by mpirun (from its environment), or -1. */
static int rank_of(pid_t pid) {
    char env[16384];
    size_t len = read_proc(pid, "environ", env, sizeof env);
    for (size_t i = 0; i < len; i += strlen(env + i) + 1)
        if (strncmp(env + i, "OMPI_COMM_WORLD_RANK=", 21) == 0) return atoi(env + i + 21);
    return -1;
}

/* SIGINT to rank 0 stops the job as it stops one process: the lines under way are finished and
 * written, the job exits 1 with whole lines in input order, and --resume completes it. */
/* Whether pid has a handler for sig (its SigCgt mask in /proc/PID/status). */
static bool catches(pid_t pid, int sig) {
    char status[4096];
    read_proc(pid, "status", status, sizeof status);
    const char *p = strstr(status, "SigCgt:");
    return p && (strtoull(p + 7, NULL, 16) >> (sig - 1) & 1);
}

static void test_interrupt_rank0(void) {
    char out[300];
    snprintf(out, sizeof out, "%s/interrupted.jsonl", dir);
    /* a job may write all its lines at once (a slow first line, then the rest behind it) and be done
     * before the signal lands: two tries signal after the first line, two more as soon as rank 0 has
     * its handler (before or among its first lines) */
    int tries = 0;
    size_t partial = lines_of(want);
    for (; tries < 4 && partial == lines_of(want); tries++) {
        pid_t job = start_job(3, out, false), ranks[8];
        int zero = -1;
        for (int i = 0; i < 20000 && alive(job) && (zero < 0 || !catches(ranks[zero], SIGINT)); i++) {
            int n = children_of(job, ranks, 8);
            zero = -1;
            for (int r = 0; r < n; r++)
                if (rank_of(ranks[r]) == 0) zero = r;
            if (zero < 0 || !catches(ranks[zero], SIGINT)) usleep(1000);
        }
        for (int i = 0; i < 20000 && tries < 2 && alive(job) && lines_of(out) < 1; i++) usleep(1000);
        if (zero >= 0) kill(ranks[zero], SIGINT);
        int st = wait_job(job);
        partial = lines_of(out);
        if (partial == lines_of(want)) continue;
        char *got = test_read_text(out), *all = test_read_text(want);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1, "interrupted job exits 1 (status %d)", st);
        CHECK(strncmp(got, all, strlen(got)) == 0, "whole lines, in order, a prefix of the full output (%zu lines)",
              partial);
        free(got);
        free(all);
    }
    CHECK(partial < lines_of(want), "a job was stopped midway in %d tries", tries);
    int st = wait_job(start_job(2, out, true));
    CHECK(same_file(out, want), "resumed after the interruption: equals the uninterrupted output (status %d)", st);
}

/* eval on the VL-RewardBench sample: the same lines and the same table as one process (K = 2, 3). */
static void test_eval_same_table(void) {
    char cmd[2048], err_path[300], out[300], first_out[300];
    snprintf(err_path, sizeof err_path, "%s/eval_err.txt", dir);
    char *table[4] = {0};
    int rcs[4];
    for (int k = 0; k <= 3; k += 1 + !k) {
        char launcher[128] = "";
        if (k) snprintf(launcher, sizeof launcher, MPIRUN " -n %d ", k);
        snprintf(out, sizeof out, "%s/eval_%d.jsonl", dir, k);
        if (!k) snprintf(first_out, sizeof first_out, "%s", out);
        snprintf(cmd, sizeof cmd, "%s%s eval --model " MODEL " --threads 1 --quiet --model-name tiny --input "
                 "tests/reference/eval/vlrewardbench_sample.jsonl --output %s", launcher, bin, out);
        rcs[k] = test_run(cmd, err_path, &table[k]);
        char *err = test_read_text(err_path);
        CHECK(count_substr(err, "vlreward eval: ") == 1, "eval K=%d: one summary line: %s", k, err);
        free(err);
        if (!k) {
            CHECK(strstr(table[0], "| ") != NULL, "eval prints its table: %s", table[0]);
            continue;
        }
        CHECK(rcs[k] == rcs[0], "eval K=%d: exit %d, one process %d", k, rcs[k], rcs[0]);
        CHECK(strcmp(table[k], table[0]) == 0, "eval K=%d: the same table:\n%s\none process:\n%s", k, table[k], table[0]);
        CHECK(same_file(out, first_out), "eval K=%d: the same result lines", k);
    }
    for (int k = 0; k <= 3; k++) free(table[k]);
}

/* --threads is per rank; without it an unbound rank takes its share of the node's CPUs. The summary
 * adds up the threads of all ranks. */
static void test_threads_per_rank(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), share = cpus / 2 < 1 ? 1 : cpus / 2;
    char want_default[64], *err;
    snprintf(want_default, sizeof want_default, "on 2 ranks, %ld threads in all", 2 * share);
    static const struct { const char *extra; const char *want; } runs[] = {
        {"--threads 3", "on 2 ranks, 6 threads in all"}, {NULL, NULL}};
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        char cmd[2048], err_path[300], *o;
        snprintf(err_path, sizeof err_path, "%s/threads_err.txt", dir);
        snprintf(cmd, sizeof cmd, MPIRUN " -n 2 --bind-to none %s score --model " MODEL " %s --input /dev/null --quiet",
                 bin, runs[i].extra ? runs[i].extra : "");
        int rc = test_run(cmd, err_path, &o);
        err = test_read_text(err_path);
        const char *want_text = runs[i].want ? runs[i].want : want_default;
        CHECK(rc == 0 && strstr(err, want_text), "%s: '%s' in: %s", runs[i].extra ? runs[i].extra : "default", want_text, err);
        free(o);
        free(err);
    }
}

/* Rank 0 refuses to start (an output that holds results, no --resume): its message, exit 2, and the
 * other ranks are let go instead of waiting for lines. */
static void test_refusal_ends_job(void) {
    char *err;
    int rc = score(3, want, "", &err);
    CHECK(rc == 2, "refused job exits 2 (got %d)", rc);
    CHECK(count_substr(err, "already holds results") == 1, "rank 0's message, once: %s", err);
    free(err);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/vlr_mpi_XXXXXX");
    if (!test_vlreward_bin(bin, sizeof bin) || !mkdtemp(dir) || !getcwd(root, sizeof root)) {
        CHECK(0, "%s not built or no temp dir", bin);
        return test_report();
    }
    snprintf(input, sizeof input, "%s/in.jsonl", dir);
    snprintf(want, sizeof want, "%s/want.jsonl", dir);
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    /* containers may forbid the cross-process memory reads of Open MPI's shared-memory single copy */
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    /* Open MPI's libraries keep allocations to the end: LeakSanitizer is told about those alone
     * (tests/mpi.supp). Its plugins must stay loaded and stacks be unwound in full (Open MPI is built
     * without frame pointers), or their frames are "<unknown module>" and no suppression matches. */
    char opts[PATH_MAX + 512];
    const char *lsan = getenv("LSAN_OPTIONS"), *asan = getenv("ASAN_OPTIONS");
    snprintf(opts, sizeof opts, "%s%ssuppressions=%s/tests/mpi.supp", lsan ? lsan : "", lsan ? ":" : "", root);
    setenv("LSAN_OPTIONS", opts, 1);
    snprintf(opts, sizeof opts, "%s%sfast_unwind_on_malloc=0", asan ? asan : "", asan ? ":" : "");
    setenv("ASAN_OPTIONS", opts, 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    char *probe, cmd[1024];
    snprintf(cmd, sizeof cmd, MPIRUN " -n 2 %s score --model " MODEL " --input /dev/null --quiet", bin);
    int rc = test_run("command -v mpirun", "/dev/null", &probe);
    free(probe);
    char *err = NULL;
    if (rc == 0) {
        char err_path[300];
        snprintf(err_path, sizeof err_path, "%s/probe.txt", dir);
        rc = test_run(cmd, err_path, &probe);
        free(probe);
        err = test_read_text(err_path);
    }
    if (rc != 0) {
        SKIP(1, "no Open MPI here (scripts/install-deps installs it) or %s built with MPI=0: %s", bin, err ? err : "no mpirun");
        free(err);
        return test_report();
    }
    free(err);
    CHECK(write_input(), "write %s", input);
    if (!TEST_RUN(test_ranks_identical)) run_want(); /* passed over: the tests below compare with it */
    TEST_RUN(test_prefix_stays);
    TEST_RUN(test_kill_resume);
    TEST_RUN(test_interrupt_rank0);
    TEST_RUN(test_eval_same_table);
    TEST_RUN(test_threads_per_rank);
    TEST_RUN(test_refusal_ends_job);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_report();
}
