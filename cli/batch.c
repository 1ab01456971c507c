/* batch.c: the streaming, resumable JSON Lines driver (see batch.h). The only process-wide state is
 * the signal flag, which is what a signal handler can set; it lives in this CLI file, never in the
 * library. */
#include "batch.h"
#include "mpi_batch.h"

#include <errno.h>
#include <fcntl.h>
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

/* ---- done ids: how many result lines each id has (open addressing, FNV-1a) ------------------- */

/* Ids may repeat in an input (VL-RewardBench has 18 that occur twice), so resuming counts them: the
 * k-th line with a given id in the output stands for the k-th line with that id in the input. Result
 * lines are written in input order, so those are the first k. */
typedef struct id_count {
    char *id;
    uint64_t n;
} id_count;

typedef struct id_counts {
    id_count *slots;
    size_t cap, used;
} id_counts;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static id_count *id_slot(const id_counts *set, const char *s, size_t n) {
    size_t j = hash_bytes(s, n) & (set->cap - 1);
    for (; set->slots[j].id; j = (j + 1) & (set->cap - 1))
        if (strlen(set->slots[j].id) == n && memcmp(set->slots[j].id, s, n) == 0) break;
    return &set->slots[j];
}

/* Counts one more line with id s; false on OOM. */
static bool id_counts_add(id_counts *set, const char *s, size_t n) {
    if ((set->used + 1) * 2 > set->cap) {
        id_counts grown = {calloc(set->cap ? set->cap * 2 : 1024, sizeof(id_count)), set->cap ? set->cap * 2 : 1024,
                           set->used};
        if (!grown.slots) return false;
        for (size_t i = 0; i < set->cap; i++)
            if (set->slots[i].id) *id_slot(&grown, set->slots[i].id, strlen(set->slots[i].id)) = set->slots[i];
        free(set->slots);
        *set = grown;
    }
    id_count *c = id_slot(set, s, n);
    if (!c->id) {
        if (!(c->id = strndup(s, n))) return false;
        set->used++;
    }
    c->n++;
    return true;
}

/* True (and one line fewer left) when the output still has a line with id s. */
static bool id_counts_take(id_counts *set, const char *s, size_t n) {
    if (!set->cap) return false;
    id_count *c = id_slot(set, s, n);
    if (!c->id || !c->n) return false;
    c->n--;
    return true;
}

static void id_counts_free(id_counts *set) {
    for (size_t i = 0; i < set->cap; i++) free(set->slots[i].id);
    free(set->slots);
    memset(set, 0, sizeof *set);
}

/* ---- reading lines with a bound -------------------------------------------------------------- */

/* getline() grows its buffer without limit and reports a failed allocation or a read error the same
 * way as the end of input. This reader holds at most max_bytes of a line, reports each of those
 * cases apart, and reads with read(2) so a line from a pipe is handled as soon as it arrives. */
typedef enum line_status { LINE_OK, LINE_EOF, LINE_TOO_LONG, LINE_NO_MEMORY, LINE_READ_ERROR, LINE_STOPPED } line_status;

#define READ_CHUNK (64u << 10)

typedef struct line_reader {
    int fd;
    size_t max_bytes; /* the longest line held, its end of line not counted */
    char *chunk;      /* [READ_CHUNK] bytes read but not yet handed out: chunk[pos..end) */
    size_t pos, end;
    char *line;       /* the current line, NUL-terminated; len bytes with its end of line */
    size_t len, cap;
    bool complete;    /* the line ended with '\n' (not with the end of input) */
    bool skipping;    /* the rest of a line that could not be held is still to be read past */
    bool at_eof;
    int err;          /* errno of a read error */
    size_t wanted;    /* LINE_NO_MEMORY: the buffer size that could not be allocated */
} line_reader;

static bool reader_init(line_reader *r, int fd, size_t max_bytes) {
    memset(r, 0, sizeof *r);
    r->fd = fd;
    r->max_bytes = max_bytes;
    return (r->chunk = malloc(READ_CHUNK)) != NULL;
}

static void reader_free(line_reader *r) {
    free(r->chunk);
    free(r->line);
    r->chunk = r->line = NULL;
}

/* Refills the chunk; false at the end of input, on a read error (r->err) or when a signal asked to
 * stop (r->err = EINTR). */
static bool reader_fill(line_reader *r) {
    if (r->at_eof) return false;
    for (;;) {
        ssize_t n = read(r->fd, r->chunk, READ_CHUNK);
        if (n > 0) {
            r->pos = 0;
            r->end = (size_t)n;
            return true;
        }
        if (n == 0) {
            r->at_eof = true;
            return false;
        }
        if (errno == EINTR && !stop_requested) continue;
        r->err = errno;
        return false;
    }
}

static line_status reader_failed(const line_reader *r) {
    return r->err == EINTR ? LINE_STOPPED : r->err ? LINE_READ_ERROR : LINE_EOF;
}

/* Reads past the rest of the line being skipped (endless on /dev/zero: a signal stops it). */
static line_status reader_skip(line_reader *r) {
    while (r->skipping) {
        if (stop_requested) return LINE_STOPPED;
        if (r->pos == r->end && !reader_fill(r)) return reader_failed(r);
        const char *nl = memchr(r->chunk + r->pos, '\n', r->end - r->pos);
        r->pos = nl ? (size_t)(nl - r->chunk) + 1 : r->end;
        if (nl) r->skipping = false;
    }
    return LINE_OK;
}

/* The next line into r->line / r->len. LINE_TOO_LONG and LINE_NO_MEMORY leave the rest of that line
 * to be skipped by the next call (so an endless line costs no memory and the caller can report it
 * at once). */
static line_status reader_next(line_reader *r) {
    line_status st = reader_skip(r);
    if (st != LINE_OK) return st;
    r->len = 0;
    r->complete = false;
    for (;;) {
        if (r->pos == r->end && !reader_fill(r)) {
            st = reader_failed(r);
            return st == LINE_EOF && r->len ? LINE_OK : st; /* a last line without '\n' */
        }
        const char *start = r->chunk + r->pos, *nl = memchr(start, '\n', r->end - r->pos);
        size_t take = nl ? (size_t)(nl - start) + 1 : r->end - r->pos;
        if (take - (nl != NULL) > r->max_bytes - r->len) { /* the end of line is not counted */
            r->pos = nl ? r->pos + take : r->end;
            r->skipping = !nl;
            return LINE_TOO_LONG;
        }
        if (r->len + take + 1 > r->cap) {
            size_t cap = r->cap ? r->cap : 4096;
            while (cap < r->len + take + 1) cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
            if (cap > r->max_bytes + 2) cap = r->max_bytes + 2; /* the line, '\n' and a NUL */
            char *grown = realloc(r->line, cap);
            if (!grown) {
                r->wanted = cap;
                free(r->line); /* what the next lines need may still fit */
                r->line = NULL;
                r->len = r->cap = 0;
                r->pos = nl ? r->pos + take : r->end;
                r->skipping = !nl;
                return LINE_NO_MEMORY;
            }
            r->line = grown;
            r->cap = cap;
        }
        memcpy(r->line + r->len, start, take);
        r->len += take;
        r->line[r->len] = '\0';
        r->pos += take;
        if (nl) {
            r->complete = true;
            return LINE_OK;
        }
    }
}

/* ---- helpers ------------------------------------------------------------------------------- */

static size_t trim_eol(const char *line, size_t n) {
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    return n;
}

static size_t max_line_bytes(const cli_batch_opts *o) {
    return o->max_line_bytes ? (size_t)o->max_line_bytes : CLI_BATCH_MAX_LINE_BYTES;
}

/* Opens a file read before the run (the input's line count and first row, the output to resume):
 * 1 when open, 0 when it does not exist and missing_ok, -1 after a message. */
static int file_reader_open(const cli_batch_opts *o, const char *path, int flags, bool missing_ok, line_reader *r) {
    int fd = open(path, flags);
    if (fd < 0) {
        if (missing_ok && errno == ENOENT) return 0;
        fprintf(stderr, "vlreward %s: %s: cannot open: %s\n", o->cmd, path, strerror(errno));
        return -1;
    }
    if (!reader_init(r, fd, max_line_bytes(o))) {
        fprintf(stderr, "vlreward %s: out of memory\n", o->cmd);
        close(fd);
        reader_free(r);
        return -1;
    }
    return 1;
}

static void file_reader_close(line_reader *r) {
    close(r->fd);
    reader_free(r);
}

/* The next line of such a file; LINE_READ_ERROR (after a message) for any failure to read. */
static line_status file_reader_next(const cli_batch_opts *o, const char *path, line_reader *r) {
    line_status st = reader_next(r);
    if (st != LINE_READ_ERROR && st != LINE_STOPPED) return st;
    fprintf(stderr, "vlreward %s: %s: read error: %s\n", o->cmd, path, strerror(r->err));
    return LINE_READ_ERROR;
}

/* The id of a result line as the input side computes it: a line too long to read was answered with
 * "id": null. */
static void result_id(const vlr_json *root, vlr_buf *id) {
    const vlr_json *v = vlr_json_get(root, "id");
    if (v && v->type == VLR_JSON_NULL) vlr_buf_puts(id, "null");
    else vlr_request_id_json(root, 0, id);
}

/* Counts the ids of an existing output file (handing each kept line to o->resumed); cuts a
 * half-written last line away. */
static int load_done_ids(const cli_batch_opts *o, void *ctx, id_counts *done) {
    line_reader r;
    int opened = file_reader_open(o, o->output, O_RDWR, true, &r); /* absent: nothing done yet */
    if (opened <= 0) return opened;
    size_t line_no = 0;
    off_t good_end = 0;
    int rc = 0;
    vlr_buf id = {0};
    line_status st;
    while ((st = file_reader_next(o, o->output, &r)) != LINE_EOF) {
        if (st == LINE_READ_ERROR) {
            rc = -1;
            break;
        }
        vlr_err e;
        vlr_json_doc *d = st == LINE_OK && r.complete ? vlr_json_parse(r.line, r.len, &e) : NULL;
        if (!d || !vlr_json_get(vlr_json_root(d), "id")) {
            vlr_json_free(d);
            /* Each result line is written with its newline in one go, so only a last line without
             * one was cut short by an interruption (cut away and redone). A complete line that is
             * not a result was not written by us: refuse rather than truncate someone's file. */
            if (st != LINE_OK || r.complete || reader_next(&r) != LINE_EOF) {
                fprintf(stderr, "vlreward %s: %s: line %zu is not a result line; refusing to resume into it\n",
                        o->cmd, o->output, line_no + 1);
                rc = -1;
            }
            break;
        }
        id.len = 0;
        result_id(vlr_json_root(d), &id);
        vlr_json_free(d);
        if (o->resumed && !o->resumed(r.line, trim_eol(r.line, r.len), ctx)) {
            rc = -1;
            break;
        }
        if (id.oom || !id_counts_add(done, id.data, id.len)) {
            fprintf(stderr, "vlreward %s: out of memory\n", o->cmd);
            rc = -1;
            break;
        }
        good_end += (off_t)r.len;
        line_no++;
    }
    if (rc == 0 && ftruncate(r.fd, good_end) != 0) {
        fprintf(stderr, "vlreward %s: %s: cannot truncate the half-written last line: %s\n", o->cmd, o->output,
                strerror(errno));
        rc = -1;
    }
    file_reader_close(&r);
    vlr_buf_free(&id);
    return rc;
}

/* Counts the non-blank lines of a regular input file (for the progress bar's total and ETA). */
static int count_input_lines(const cli_batch_opts *o, uint64_t *total) {
    line_reader r;
    *total = 0;
    if (file_reader_open(o, o->input, O_RDONLY, false, &r) < 0) return -1;
    int rc = 0;
    line_status st;
    while (rc == 0 && (st = file_reader_next(o, o->input, &r)) != LINE_EOF) {
        if (st == LINE_READ_ERROR) rc = -1;
        else if (st != LINE_OK || !cli_is_blank(r.line, r.len)) (*total)++; /* a line too long to hold counts */
    }
    file_reader_close(&r);
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
    if (st->ranks) fprintf(stderr, " on %d rank%s", st->ranks, st->ranks == 1 ? "" : "s");
    if (st->ranks && st->threads) fprintf(stderr, ", %d thread%s in all", st->threads, st->threads == 1 ? "" : "s");
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
    if (cli_opt(a, "--max-line-bytes", true, &v, bad)) {
        long n;
        if (v && !cli_parse_int(v, 1, 1L << 40, &n)) {
            cli_usage_error(a->cmd, "--max-line-bytes: expected a number of bytes (1..2^40), got '%s'", v);
            *bad = true;
        } else if (v) {
            o->max_line_bytes = (uint64_t)n;
        }
        return true;
    }
    if (cli_opt(a, "--vision-cache", true, &v, bad)) {
        if (v && !cli_parse_int(v, 0, 1L << 20, cache_mb)) {
            cli_usage_error(a->cmd, "--vision-cache: expected megabytes (0..1048576), got '%s'", v);
            *bad = true;
        }
        return true;
    }
    return false;
}

int cli_batch_first_row(const cli_batch_opts *o, vlr_json_doc **doc) {
    struct stat sb;
    *doc = NULL;
    if (!o->input || strcmp(o->input, "-") == 0 || stat(o->input, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    line_reader r;
    if (file_reader_open(o, o->input, O_RDONLY, false, &r) < 0) return -1;
    int rc = 0;
    line_status st;
    while (rc == 0 && (st = file_reader_next(o, o->input, &r)) != LINE_EOF) {
        if (st == LINE_READ_ERROR) {
            rc = -1;
        } else if (st == LINE_OK && !cli_is_blank(r.line, r.len)) {
            vlr_err e;
            *doc = vlr_json_parse(r.line, trim_eol(r.line, r.len), &e);
            rc = 1;
        } else if (st != LINE_OK) {
            rc = 1; /* a first line too long to hold: no format from it */
        }
    }
    file_reader_close(&r);
    return rc;
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* Writes one result line (result + '\n') whole and flushed: an interruption leaves whole lines, or
 * one cut line, which --resume detects and redoes. */
static bool write_result(const cli_batch_opts *o, FILE *out, vlr_buf *result, bool to_stdout) {
    vlr_buf_append(result, "\n", 1);
    if (!result->oom && fwrite(result->data, 1, result->len, out) == result->len && fflush(out) == 0) return true;
    fprintf(stderr, "\nvlreward %s: write error on %s: %s\n", o->cmd, to_stdout ? "stdout" : o->output,
            result->oom ? "out of memory" : strerror(errno));
    return false;
}

/* Where results go: the output, the counts and the progress line. */
typedef struct batch_sink {
    const cli_batch_opts *o;
    void *ctx;
    FILE *out;
    bool to_stdout, tty;
    cli_batch_stats *st;
    double start, last_log, log_every;
} batch_sink;

/* Writes one result line, counts it and shows progress; false on a write error. */
static bool emit_result(void *vsink, vlr_buf *result, bool ok, uint64_t tokens, bool farmed) {
    batch_sink *w = vsink;
    const cli_batch_opts *o = w->o;
    if (farmed && o->absorb) o->absorb(result->data ? result->data : "", result->len, ok, w->ctx);
    if (!write_result(o, w->out, result, w->to_stdout)) return false;
    w->st->done++;
    w->st->tokens += tokens;
    if (!ok) w->st->errors++;
    double now = vlr_now();
    if (!o->quiet && (w->tty ? now - w->last_log > 0.2 : now - w->last_log >= w->log_every)) {
        show_progress(o, w->st, now - w->start, w->tty);
        w->last_log = now;
    }
    return true;
}

static int run_lines(const cli_batch_opts *o, cli_batch_fn fn, void *ctx, cli_batch_stats *st, cli_farm *farm) {
    bool from_stdin = !o->input || strcmp(o->input, "-") == 0;
    bool to_stdout = !o->output || strcmp(o->output, "-") == 0;
    const char *in_name = from_stdin ? "stdin" : o->input;
    id_counts done = {0};
    int in_fd = STDIN_FILENO;
    FILE *out = stdout;
    line_reader r = {0};
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
    if (!from_stdin && stat(o->input, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "vlreward %s: %s: is a directory, not a JSON Lines file\n", o->cmd, o->input);
        return -1;
    }
    if (!from_stdin && stat(o->input, &sb) == 0 && S_ISREG(sb.st_mode) && count_input_lines(o, &st->total))
        return -1;
    if (!o->resume && !o->overwrite && !to_stdout && stat(o->output, &sb) == 0 && S_ISREG(sb.st_mode) &&
        sb.st_size > 0) {
        fprintf(stderr, "vlreward %s: %s already holds results: use --resume to continue it or --overwrite to "
                        "start over\n", o->cmd, o->output);
        return -1;
    }
    if (o->resume && load_done_ids(o, ctx, &done)) {
        id_counts_free(&done);
        return -1;
    }
    if (!from_stdin && (in_fd = open(o->input, O_RDONLY)) < 0) {
        fprintf(stderr, "vlreward %s: %s: cannot open: %s\n", o->cmd, o->input, strerror(errno));
        rc = -1;
        goto done;
    }
    if (!reader_init(&r, in_fd, max_line_bytes(o))) {
        fprintf(stderr, "vlreward %s: out of memory\n", o->cmd);
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
    batch_sink sink = {o, ctx, out, to_stdout, tty, st, start, start, o->log_every_s > 0 ? o->log_every_s : 5.0};
    if (farm) cli_farm_start(farm, fn, ctx, emit_result, &sink, &stop_requested);
    size_t line_no = 0;
    line_status ls;
    while (!stop_requested && (ls = reader_next(&r)) != LINE_EOF) {
        if (ls == LINE_STOPPED) break;
        if (ls == LINE_READ_ERROR) {
            fprintf(stderr, "%svlreward %s: %s: read error after %zu lines: %s\n", tty && !o->quiet ? "\n" : "",
                    o->cmd, in_name, line_no, strerror(r.err));
            rc = -1;
            break;
        }
        size_t this_line = line_no++, len = ls == LINE_OK ? trim_eol(r.line, r.len) : 0;
        if (ls == LINE_OK && cli_is_blank(r.line, len)) continue;
        vlr_json_doc *d = NULL;
        vlr_err e = {0};
        id.len = 0;
        result.len = 0;
        bool ok = false;
        uint64_t tokens = 0;
        if (ls == LINE_OK) {
            d = vlr_json_parse(r.line, len, &e);
            vlr_request_id_json(d ? vlr_json_root(d) : NULL, this_line, &id);
        } else {
            vlr_buf_puts(&id, "null"); /* the id is somewhere in the bytes that could not be held */
        }
        if (o->resume && id_counts_take(&done, id.data, id.len)) {
            st->skipped++;
            vlr_json_free(d);
            continue;
        }
        if (ls != LINE_OK) {
            char msg[200];
            if (ls == LINE_TOO_LONG)
                snprintf(msg, sizeof msg, "line %zu: longer than --max-line-bytes (%zu bytes); skipped", this_line + 1,
                         r.max_bytes);
            else
                snprintf(msg, sizeof msg, "line %zu: too large to hold in memory (%zu bytes could not be allocated; "
                         "--max-line-bytes is %zu); skipped", this_line + 1, r.wanted, r.max_bytes);
            cli_error_line(&result, &id, msg);
        } else if (d && farm) { /* another rank may take it; its result is written in turn */
            cli_batch_line bl = {r.line, len, this_line, vlr_json_root(d), &id, false};
            bool submitted = cli_farm_submit(farm, &bl);
            vlr_json_free(d);
            if (submitted) continue;
            rc = -1;
            break;
        } else if (d) {
            cli_batch_line bl = {r.line, len, this_line, vlr_json_root(d), &id, false};
            ok = fn(&bl, ctx, &result, &tokens);
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
        if (farm ? !cli_farm_ready(farm, &result, ok) : !emit_result(&sink, &result, ok, tokens, false)) {
            rc = -1;
            break;
        }
    }
    /* under mpirun: the lines other ranks still have; after a stop, only those already under way */
    if (farm && !cli_farm_drain(farm, rc != 0 || stop_requested)) rc = -1;
    if (!o->quiet && tty) {
        show_progress(o, st, vlr_now() - start, tty);
        fputc('\n', stderr);
    }
    st->interrupted = stop_requested != 0;
    if (rc == 0 && st->interrupted) rc = 1;
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
done:
    st->wall_s = vlr_now() - start;
    if (in_fd >= 0 && in_fd != STDIN_FILENO) close(in_fd);
    if (out && out != stdout && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "vlreward %s: write error on %s\n", o->cmd, o->output);
        rc = -1;
    }
    reader_free(&r);
    vlr_buf_free(&result);
    vlr_buf_free(&id);
    id_counts_free(&done);
    return rc;
}

int cli_batch_run(const cli_batch_opts *o, cli_batch_fn fn, void *ctx, cli_batch_stats *st) {
    cli_farm *farm;
    memset(st, 0, sizeof *st);
    int joined = cli_farm_open(o->cmd, &farm);
    if (joined <= 0) return joined < 0 ? -1 : run_lines(o, fn, ctx, st, NULL);
    int rc;
    if (cli_farm_rank(farm) > 0) {
        st->worker = true;
        rc = cli_farm_serve(farm, o, fn, ctx);
    } else {
        rc = run_lines(o, fn, ctx, st, farm);
    }
    st->ranks = cli_farm_size(farm);
    st->threads = o->threads;
    cli_farm_close(farm, st);
    return rc;
}
