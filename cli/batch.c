/* batch.c: the streaming, resumable JSON Lines driver (see batch.h). The only process-wide state is
 * the signal flag, which is what a signal handler can set; it lives in this CLI file, never in the
 * library. */
#include "batch.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    if (stop_requested) { /* second signal: stop now; the output stays resumable */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    stop_requested = 1;
}

/* ---- a set of id strings (open addressing, FNV-1a) ------------------------------------------ */

typedef struct id_set {
    char **slots;
    size_t cap, count;
} id_set;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Adds s; returns 1 when added, 0 when already present, -1 on OOM. */
static int id_set_add(id_set *set, const char *s, size_t n) {
    if ((set->count + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024;
        char **slots = calloc(cap, sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < set->cap; i++) {
            char *k = set->slots[i];
            if (!k) continue;
            size_t j = hash_bytes(k, strlen(k)) & (cap - 1);
            while (slots[j]) j = (j + 1) & (cap - 1);
            slots[j] = k;
        }
        free(set->slots);
        set->slots = slots;
        set->cap = cap;
    }
    size_t j = hash_bytes(s, n) & (set->cap - 1);
    for (; set->slots[j]; j = (j + 1) & (set->cap - 1))
        if (strlen(set->slots[j]) == n && memcmp(set->slots[j], s, n) == 0) return 0;
    char *k = malloc(n + 1);
    if (!k) return -1;
    memcpy(k, s, n);
    k[n] = '\0';
    set->slots[j] = k;
    set->count++;
    return 1;
}

static bool id_set_has(const id_set *set, const char *s, size_t n) {
    if (!set->cap) return false;
    for (size_t j = hash_bytes(s, n) & (set->cap - 1); set->slots[j]; j = (j + 1) & (set->cap - 1))
        if (strlen(set->slots[j]) == n && memcmp(set->slots[j], s, n) == 0) return true;
    return false;
}

static void id_set_free(id_set *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slots[i]);
    free(set->slots);
    memset(set, 0, sizeof *set);
}

/* ---- helpers ------------------------------------------------------------------------------- */

static size_t trim_eol(const char *line, size_t n) {
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    return n;
}

/* The id of an input line as JSON text (the line number when it has none or is not JSON). */
static void line_id(const char *line, size_t len, size_t line_no, vlr_buf *id) {
    vlr_err e;
    vlr_json_doc *d = vlr_json_parse(line, len, &e);
    id->len = 0;
    vlr_request_id_json(d ? vlr_json_root(d) : NULL, line_no, id);
    vlr_json_free(d);
}

/* Reads the ids of an existing output file; cuts a half-written last line away. */
static int load_done_ids(const cli_batch_opts *o, id_set *done) {
    FILE *f = fopen(o->output, "r+b");
    if (!f) {
        if (errno == ENOENT) return 0; /* nothing done yet */
        fprintf(stderr, "vlreward %s: %s: cannot open for resuming: %s\n", o->cmd, o->output, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    long long good_end = 0;
    int rc = 0;
    vlr_buf id = {0};
    while ((n = getline(&line, &cap, f)) > 0) {
        bool complete = line[n - 1] == '\n';
        vlr_err e;
        vlr_json_doc *d = complete ? vlr_json_parse(line, (size_t)n, &e) : NULL;
        const vlr_json *idv = d ? vlr_json_get(vlr_json_root(d), "id") : NULL;
        if (!idv) {
            vlr_json_free(d);
            /* Each result line is written with its newline in one go, so only a last line without
             * one was cut short by an interruption (cut away and redone). A complete line that is
             * not a result was not written by us: refuse rather than truncate someone's file. */
            if (complete || fgetc(f) != EOF) {
                fprintf(stderr, "vlreward %s: %s: line %zu is not a result line; refusing to resume into it\n",
                        o->cmd, o->output, line_no + 1);
                rc = -1;
            }
            break;
        }
        id.len = 0;
        vlr_request_id_json(vlr_json_root(d), 0, &id);
        vlr_json_free(d);
        if (id_set_add(done, id.data, id.len) < 0) {
            rc = -1;
            break;
        }
        good_end += n;
        line_no++;
    }
    if (rc == 0 && ftruncate(fileno(f), (off_t)good_end) != 0) {
        fprintf(stderr, "vlreward %s: %s: cannot truncate the half-written last line: %s\n", o->cmd, o->output,
                strerror(errno));
        rc = -1;
    }
    free(line);
    vlr_buf_free(&id);
    fclose(f);
    return rc;
}

/* Counts the input's non-blank lines and, for resume, checks that ids are unique. */
static int scan_input(const cli_batch_opts *o, bool check_ids, uint64_t *total) {
    FILE *f = fopen(o->input, "rb");
    if (!f) {
        fprintf(stderr, "vlreward %s: %s: cannot open: %s\n", o->cmd, o->input, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t n;
    id_set seen = {0};
    vlr_buf id = {0};
    int rc = 0;
    *total = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        size_t len = trim_eol(line, (size_t)n);
        if (!cli_is_blank(line, len)) {
            (*total)++;
            if (check_ids) {
                line_id(line, len, line_no, &id);
                int added = id_set_add(&seen, id.data, id.len);
                if (added <= 0) {
                    fprintf(stderr, "vlreward %s: %s: line %zu: %s id %s (ids must be unique to resume)\n", o->cmd,
                            o->input, line_no + 1, added == 0 ? "duplicate" : "out of memory at", id.data);
                    rc = -1;
                    break;
                }
            }
        }
        line_no++;
    }
    free(line);
    vlr_buf_free(&id);
    id_set_free(&seen);
    fclose(f);
    return rc;
}

static void format_duration(double s, char *out, size_t cap) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, cap, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else snprintf(out, cap, "%ld:%02ld", t / 60, t % 60);
}

static void show_progress(const cli_batch_opts *o, const cli_batch_stats *st, double elapsed, bool tty) {
    double rps = elapsed > 0 ? (double)st->done / elapsed : 0;
    double tps = elapsed > 0 ? (double)st->tokens / elapsed : 0;
    char eta[32] = "?";
    uint64_t left = st->total > st->done + st->skipped ? st->total - st->done - st->skipped : 0;
    if (st->total && rps > 0) format_duration((double)left / rps, eta, sizeof eta);
    uint64_t at = st->done + st->skipped;
    if (tty) {
        char bar[31];
        int fill = st->total ? (int)(30.0 * (double)at / (double)st->total) : 0;
        if (fill > 30) fill = 30;
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        if (st->total)
            fprintf(stderr, "\r[%s] %llu/%llu | %.2f req/s | %.0f tok/s | ETA %s | %llu errors \033[K", bar,
                    (unsigned long long)at, (unsigned long long)st->total, rps, tps, eta,
                    (unsigned long long)st->errors);
        else
            fprintf(stderr, "\r%llu done | %.2f req/s | %.0f tok/s | %llu errors \033[K", (unsigned long long)at, rps,
                    tps, (unsigned long long)st->errors);
    } else {
        if (st->total)
            fprintf(stderr, "vlreward %s: %llu/%llu requests, %.2f req/s, %.0f tok/s, %llu errors, ETA %s\n", o->cmd,
                    (unsigned long long)at, (unsigned long long)st->total, rps, tps, (unsigned long long)st->errors, eta);
        else
            fprintf(stderr, "vlreward %s: %llu requests, %.2f req/s, %.0f tok/s, %llu errors\n", o->cmd,
                    (unsigned long long)at, rps, tps, (unsigned long long)st->errors);
    }
    fflush(stderr);
}

void cli_batch_print_summary(const cli_batch_opts *o, const cli_batch_stats *st, const vlr_model *m,
                             const char *extra) {
    fprintf(stderr, "vlreward %s: %s%llu requests", o->cmd, st->interrupted ? "interrupted after " : "",
            (unsigned long long)st->done);
    if (st->skipped) fprintf(stderr, " (%llu already done)", (unsigned long long)st->skipped);
    fprintf(stderr, ", %llu errors, %llu tokens, %.1f s", (unsigned long long)st->errors,
            (unsigned long long)st->tokens, st->wall_s);
    if (st->wall_s > 0 && st->done)
        fprintf(stderr, " (%.2f req/s, %.0f tok/s)", (double)st->done / st->wall_s, (double)st->tokens / st->wall_s);
    if (extra && *extra) fprintf(stderr, ", %s", extra);
    vlr_model_info in;
    vlr_model_get_info(m, &in);
    fprintf(stderr, ", precision %s (%s kernels)", in.precision, in.kernels);
    if (st->interrupted && o->output) fprintf(stderr, "; rerun with --resume to continue");
    fputc('\n', stderr);
}

bool cli_batch_opt(cli_args *a, cli_batch_opts *o, long *cache_mb, bool *bad) {
    const char *v = NULL;
    if (cli_opt(a, "--input", true, &o->input, bad)) return true;
    if (cli_opt(a, "--output", true, &o->output, bad)) return true;
    if (cli_opt(a, "--resume", false, &v, bad)) { o->resume = true; return true; }
    if (cli_opt(a, "--overwrite", false, &v, bad)) { o->overwrite = true; return true; }
    if (cli_opt(a, "--quiet", false, &v, bad)) { o->quiet = true; return true; }
    if (cli_opt(a, "--vision-cache", true, &v, bad)) {
        if (v && !cli_parse_int(v, 0, 1L << 20, cache_mb)) {
            cli_usage_error(a->cmd, "--vision-cache: expected megabytes (0..1048576), got '%s'", v);
            *bad = true;
        }
        return true;
    }
    return false;
}

/* ---- the loop ------------------------------------------------------------------------------ */

int cli_batch_run(const cli_batch_opts *o, cli_batch_fn fn, void *ctx, cli_batch_stats *st) {
    memset(st, 0, sizeof *st);
    bool from_stdin = !o->input || strcmp(o->input, "-") == 0;
    bool to_stdout = !o->output || strcmp(o->output, "-") == 0;
    id_set done = {0};
    FILE *in = stdin, *out = stdout;
    char *line = NULL;
    size_t cap = 0;
    vlr_buf result = {0}, id = {0};
    int rc = 0;
    double start = vlr_now();

    if (o->resume && to_stdout) {
        fprintf(stderr, "vlreward %s: --resume needs --output FILE\n", o->cmd);
        return -1;
    }
    struct stat sb, sb_out;
    /* Writing the results over the input would truncate it before it is read (--overwrite) or
     * mistake its requests for results (--resume). */
    if (!from_stdin && !to_stdout && stat(o->input, &sb) == 0 && stat(o->output, &sb_out) == 0 &&
        sb.st_dev == sb_out.st_dev && sb.st_ino == sb_out.st_ino) {
        fprintf(stderr, "vlreward %s: --output %s is the input file\n", o->cmd, o->output);
        return -1;
    }
    if (!from_stdin && stat(o->input, &sb) == 0 && S_ISREG(sb.st_mode)) {
        if (scan_input(o, o->resume, &st->total)) return -1;
    } else if (o->resume && !from_stdin) {
        if (scan_input(o, true, &st->total)) return -1;
    }
    if (!o->resume && !o->overwrite && !to_stdout && stat(o->output, &sb) == 0 && S_ISREG(sb.st_mode) &&
        sb.st_size > 0) {
        fprintf(stderr, "vlreward %s: %s already holds results: use --resume to continue it or --overwrite to "
                        "start over\n", o->cmd, o->output);
        return -1;
    }
    if (o->resume && load_done_ids(o, &done)) {
        id_set_free(&done);
        return -1;
    }
    if (!from_stdin && !(in = fopen(o->input, "rb"))) {
        fprintf(stderr, "vlreward %s: %s: cannot open: %s\n", o->cmd, o->input, strerror(errno));
        rc = -1;
        goto done;
    }
    if (!to_stdout && !(out = fopen(o->output, o->resume ? "ab" : "wb"))) {
        fprintf(stderr, "vlreward %s: %s: cannot create: %s\n", o->cmd, o->output, strerror(errno));
        rc = -1;
        goto done;
    }

    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    stop_requested = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);

    bool tty = isatty(STDERR_FILENO);
    double log_every = o->log_every_s > 0 ? o->log_every_s : 5.0, last_log = start;
    ssize_t n;
    size_t line_no = 0;
    while (!stop_requested && (n = getline(&line, &cap, in)) >= 0) {
        size_t len = trim_eol(line, (size_t)n);
        size_t this_line = line_no++;
        if (cli_is_blank(line, len)) continue;
        vlr_err e = {0};
        vlr_json_doc *d = vlr_json_parse(line, len, &e);
        id.len = 0;
        vlr_request_id_json(d ? vlr_json_root(d) : NULL, this_line, &id);
        if (o->resume && id_set_has(&done, id.data, id.len)) {
            st->skipped++;
            vlr_json_free(d);
            continue;
        }
        result.len = 0;
        bool ok = false;
        if (d) {
            cli_batch_line bl = {line, len, this_line, vlr_json_root(d), &id};
            ok = fn(&bl, ctx, &result, &st->tokens);
        } else {
            vlr_err_prefix(&e, "invalid JSON: ");
            cli_error_line(&result, &id, e.msg);
        }
        vlr_json_free(d);
        if (result.oom) {
            vlr_buf_free(&result);
            cli_error_line(&result, &id, "out of memory writing the result");
            ok = false;
        }
        vlr_buf_append(&result, "\n", 1);
        /* One write per line, flushed: an interruption leaves whole lines (or one cut line, which
         * --resume detects and redoes). */
        if (fwrite(result.data, 1, result.len, out) != result.len || fflush(out) != 0) {
            fprintf(stderr, "\nvlreward %s: write error on %s: %s\n", o->cmd, to_stdout ? "stdout" : o->output,
                    strerror(errno));
            rc = -1;
            break;
        }
        st->done++;
        if (!ok) st->errors++;
        double now = vlr_now();
        if (!o->quiet && (tty ? now - last_log > 0.2 : now - last_log >= log_every)) {
            show_progress(o, st, now - start, tty);
            last_log = now;
        }
    }
    if (!o->quiet && tty) {
        show_progress(o, st, vlr_now() - start, tty);
        fputc('\n', stderr);
    }
    if (rc == 0 && ferror(in)) {
        fprintf(stderr, "vlreward %s: read error on %s\n", o->cmd, from_stdin ? "stdin" : o->input);
        rc = -1;
    }
    st->interrupted = stop_requested != 0;
    if (rc == 0 && st->interrupted) rc = 1;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    st->wall_s = vlr_now() - start;
    if (in && in != stdin) fclose(in);
    if (out && out != stdout && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "vlreward %s: write error on %s\n", o->cmd, o->output);
        rc = -1;
    }
    free(line);
    vlr_buf_free(&result);
    vlr_buf_free(&id);
    id_set_free(&done);
    return rc;
}
