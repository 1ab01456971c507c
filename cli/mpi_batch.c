/* mpi_batch.c: the batch driver's lines over the ranks of an MPI job (see mpi_batch.h). Built with
 * MPI when the Makefile finds Open MPI (VLR_WITH_MPI); without it only the launcher check remains. */
#include "mpi_batch.h"

#include <limits.h>
#include <sched.h>
#include <stdlib.h>
#include <unistd.h>

/* True when an MPI launcher started this process: Open MPI's mpirun names the job's size, srun and
 * other PMI launchers a rank. *size is the job's size where the environment says it (else 0). */
static bool launched_by_mpi(long *size) {
    static const char *const size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    static const char *const rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"};
    bool launched = false;
    *size = 0;
    for (size_t i = 0; i < sizeof size_vars / sizeof size_vars[0]; i++) {
        const char *s = getenv(size_vars[i]), *r = getenv(rank_vars[i]);
        if (s && !*size) *size = strtol(s, NULL, 10);
        if (s || r) launched = true;
    }
    return launched;
}

bool cli_farm_launched(void) {
    long size;
    return launched_by_mpi(&size);
}

int cli_farm_default_threads(void) {
    static const char *const local_size_vars[] = {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"};
    long size, online = sysconf(_SC_NPROCESSORS_ONLN), local = 1;
    if (!launched_by_mpi(&size)) return 0;
    cpu_set_t set;
    long cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : online;
    for (size_t i = 0; i < sizeof local_size_vars / sizeof local_size_vars[0] && local == 1; i++) {
        const char *v = getenv(local_size_vars[i]);
        if (v && strtol(v, NULL, 10) > 1) local = strtol(v, NULL, 10);
    }
    if (cpus >= online) cpus = online / local; /* not bound: the node's CPUs shared by its ranks */
    return cpus < 1 ? 1 : (int)(cpus > 1024 ? 1024 : cpus);
}

#ifndef VLR_WITH_MPI

int cli_farm_open(const char *cmd, cli_farm **farm) {
    long size;
    *farm = NULL;
    if (!launched_by_mpi(&size) || size <= 1) return 0;
    fprintf(stderr, "vlreward %s: started by an MPI launcher as one of %ld processes, but this build has no MPI "
                    "support (install Open MPI: scripts/install-deps, then rebuild)\n", cmd, size);
    return -1;
}
int cli_farm_rank(const cli_farm *f) { return 0; }
int cli_farm_size(const cli_farm *f) { return 1; }
int cli_farm_serve(cli_farm *f, const cli_batch_opts *o, cli_batch_fn fn, void *ctx) { return -1; }
bool cli_farm_start(cli_farm *f, cli_batch_fn fn, void *ctx, cli_farm_emit_fn emit, void *sink,
                    volatile sig_atomic_t *stop) {
    return false;
}
bool cli_farm_submit(cli_farm *f, const cli_batch_line *line) { return false; }
bool cli_farm_ready(cli_farm *f, vlr_buf *result, bool ok) { return false; }
bool cli_farm_drain(cli_farm *f, bool cancel) { return false; }
void cli_farm_close(cli_farm *f, cli_batch_stats *st) {}

#else

#include <mpi.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

enum { TAG_WORK = 1, TAG_RESULT, TAG_STOP, TAG_COUNTERS };

/* Lines between the oldest result not yet written and the newest line read: a slow line at the head
 * holds the output back while the other ranks go on with up to this many. */
#define WINDOW 4096
/* The bytes of lines read but not yet handled (beyond one line, which always goes). */
#define WINDOW_BYTES ((size_t)256 << 20)
/* An idle rank looks for messages this often; between looks it sleeps (no spinning CPU). */
#define POLL_NS 200000L
/* A work message: seq, line number, id length, then the id and the line's text. */
#define WORK_HEADER 3
/* A result message: seq, ok, tokens, then the result line. */
#define RESULT_HEADER 3

typedef enum item_state { ITEM_FREE, ITEM_QUEUED, ITEM_ASSIGNED, ITEM_DONE, ITEM_CANCELLED } item_state;

typedef struct farm_item {
    item_state state;
    int dest;          /* ITEM_ASSIGNED: the rank that handles it */
    bool sent;         /* dest > 0: its message is on the way (send is active) */
    bool follows;      /* the same prompt as the line before: handled where that one was */
    vlr_buf msg;       /* the work message (kept until the line is done) */
    MPI_Request send;
    vlr_buf result;    /* ITEM_DONE */
    bool ok, farmed;   /* farmed: a handler made the result (not the driver) */
    uint64_t tokens;
} farm_item;

struct cli_farm {
    const char *cmd;
    int rank, size;
    /* rank 0 */
    cli_batch_fn fn;
    void *ctx;
    cli_farm_emit_fn emit;
    void *sink;
    farm_item *items;       /* [WINDOW]: the line numbered seq (in the order read) at seq % WINDOW */
    uint64_t next_seq;      /* the next line read */
    uint64_t emit_seq;      /* the next result written */
    uint64_t queue_head;    /* no line before it is queued */
    size_t queued;          /* lines no rank has taken yet */
    size_t unsent;          /* lines assigned to another rank whose message is not sent yet */
    size_t held_bytes;      /* work messages held */
    uint64_t last_key;      /* the prompt of the line read last (0: none) */
    int last_dest;          /* the rank that took the line read last; -1 while it is queued */
    int *outstanding;       /* [size]: lines assigned to each rank and not done */
    bool closing, emit_failed;
    volatile sig_atomic_t *stop; /* set by SIGINT/SIGTERM: finish what is under way, start nothing */
    pthread_t comm;
    bool comm_running;
    pthread_mutex_t lock;
    pthread_cond_t to_comm, to_main;
    uint64_t counters[CLI_BATCH_COUNTERS + 1]; /* the other ranks' opts.counters, then their threads */
};

static farm_item *item(cli_farm *f, uint64_t seq) { return &f->items[seq % WINDOW]; }

static void put_u64(vlr_buf *b, uint64_t v) { vlr_buf_append(b, &v, sizeof v); }

static uint64_t get_u64(const char *p, size_t i) {
    uint64_t v;
    memcpy(&v, p + i * sizeof v, sizeof v);
    return v;
}

static void fatal(cli_farm *f, const char *what) {
    fprintf(stderr, "vlreward %s: rank %d: %s; stopping the job\n", f->cmd, f->rank, what);
    MPI_Abort(MPI_COMM_WORLD, EXIT_USAGE);
}

/* ---- the prompt of a line: lines with the same one share their prefix ----------------------- */

static uint64_t hash_mix(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 1099511628211ull;
    return h;
}

static uint64_t hash_json(uint64_t h, const vlr_json *v) {
    unsigned char t = (unsigned char)v->type;
    h = hash_mix(h, &t, 1);
    if (v->type == VLR_JSON_STRING || v->type == VLR_JSON_NUMBER) return hash_mix(hash_mix(h, &v->len, sizeof v->len), v->str, v->len);
    if (v->type != VLR_JSON_ARRAY && v->type != VLR_JSON_OBJECT) return h;
    h = hash_mix(h, &v->len, sizeof v->len);
    for (size_t i = 0; i < v->len; i++) {
        if (v->type == VLR_JSON_OBJECT) h = hash_mix(hash_mix(h, &v->items[i].key_len, sizeof(size_t)), v->items[i].key, v->items[i].key_len);
        h = hash_json(h, &v->items[i]);
    }
    return h;
}

/* A hash of what precedes the answer: the messages without a final assistant turn, and the images,
 * question, query or prompt of the shorthand and benchmark rows; 0 when the line has none of them. */
static uint64_t prompt_key(const vlr_json *root) {
    static const char *const fields[] = {"image", "images", "image_path", "question", "query", "prompt"};
    uint64_t h = 1469598103934665603ull;
    bool any = false;
    const vlr_json *msgs = vlr_json_get(root, "messages");
    if (vlr_json_is(msgs, VLR_JSON_ARRAY)) {
        size_t n = msgs->len;
        const vlr_json *role = n ? vlr_json_get(vlr_json_at(msgs, n - 1), "role") : NULL;
        if (vlr_json_is(role, VLR_JSON_STRING) && strcmp(role->str, "assistant") == 0) n--;
        for (size_t i = 0; i < n; i++) h = hash_json(h, vlr_json_at(msgs, i));
        any = true;
    }
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const vlr_json *v = vlr_json_get(root, fields[i]);
        if (!v) continue;
        h = hash_json(hash_mix(h, fields[i], strlen(fields[i])), v);
        any = true;
    }
    return any ? (h ? h : 1) : 0;
}

/* ---- handling one work message (every rank) ------------------------------------------------ */

/* Runs the handler on the line of a work message, as the driver does on a line it read. */
static void handle_work(const char *msg, size_t n, cli_batch_fn fn, void *ctx, vlr_buf *out, bool *ok,
                        uint64_t *tokens) {
    size_t line_no = (size_t)get_u64(msg, 1), id_len = (size_t)get_u64(msg, 2);
    const char *id = msg + WORK_HEADER * sizeof(uint64_t), *text = id + id_len;
    size_t text_len = n - WORK_HEADER * sizeof(uint64_t) - id_len;
    vlr_buf id_json = {(char *)id, id_len, id_len, false};
    vlr_err e = {0};
    vlr_json_doc *d = vlr_json_parse(text, text_len, &e);
    *ok = false;
    if (!d) { /* rank 0 parsed it: only memory can fail here */
        vlr_err_prefix(&e, "invalid JSON: ");
        cli_error_line(out, &id_json, e.msg);
    } else {
        cli_batch_line bl = {text, text_len, line_no, vlr_json_root(d), &id_json, true};
        *ok = fn(&bl, ctx, out, tokens);
    }
    vlr_json_free(d);
    if (out->oom) {
        vlr_buf_free(out);
        cli_error_line(out, &id_json, "out of memory writing the result");
        *ok = false;
    }
}

/* A message of any tag from `source` (MPI_ANY_SOURCE), waiting for it without spinning. */
static void wait_message(int source, int tag, MPI_Status *st) {
    const struct timespec pause = {0, POLL_NS};
    for (;;) {
        int flag = 0;
        MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, st);
        if (flag) return;
        nanosleep(&pause, NULL);
    }
}

static bool recv_bytes(const MPI_Status *st, vlr_buf *b) {
    int n = 0;
    MPI_Get_count(st, MPI_BYTE, &n);
    b->len = 0;
    if (!vlr_buf_reserve(b, (size_t)n + 1)) return false;
    MPI_Recv(b->data, n, MPI_BYTE, st->MPI_SOURCE, st->MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    b->len = (size_t)n;
    b->data[n] = '\0';
    return true;
}

int cli_farm_serve(cli_farm *f, const cli_batch_opts *o, cli_batch_fn fn, void *ctx) {
    vlr_buf msg = {0}, reply = {0}, result = {0};
    for (;;) {
        MPI_Status st;
        wait_message(0, MPI_ANY_TAG, &st);
        if (st.MPI_TAG == TAG_STOP) {
            MPI_Recv(NULL, 0, MPI_BYTE, 0, TAG_STOP, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            uint64_t c[CLI_BATCH_COUNTERS + 1] = {0};
            if (o->counters) o->counters(ctx, c);
            c[CLI_BATCH_COUNTERS] = (uint64_t)o->threads;
            MPI_Send(c, CLI_BATCH_COUNTERS + 1, MPI_UINT64_T, 0, TAG_COUNTERS, MPI_COMM_WORLD);
            break;
        }
        if (!recv_bytes(&st, &msg)) fatal(f, "out of memory receiving a line");
        if (msg.len < WORK_HEADER * sizeof(uint64_t) ||
            get_u64(msg.data, 2) > msg.len - WORK_HEADER * sizeof(uint64_t))
            fatal(f, "malformed work message");
        bool ok;
        uint64_t tokens = 0;
        result.len = 0;
        handle_work(msg.data, msg.len, fn, ctx, &result, &ok, &tokens);
        reply.len = 0;
        put_u64(&reply, get_u64(msg.data, 0));
        put_u64(&reply, ok);
        put_u64(&reply, tokens);
        vlr_buf_append(&reply, result.data, result.len);
        if (reply.oom || reply.len > INT_MAX) fatal(f, "out of memory sending a result");
        MPI_Send(reply.data, (int)reply.len, MPI_BYTE, 0, TAG_RESULT, MPI_COMM_WORLD);
    }
    vlr_buf_free(&msg);
    vlr_buf_free(&reply);
    vlr_buf_free(&result);
    return 0;
}

/* ---- rank 0: the window of lines, lock held ----------------------------------------------- */

static void assign(cli_farm *f, uint64_t seq, int dest) {
    farm_item *it = item(f, seq);
    if (it->state == ITEM_QUEUED) f->queued--;
    it->state = ITEM_ASSIGNED;
    it->dest = dest;
    it->sent = false;
    f->outstanding[dest]++;
    if (dest > 0) f->unsent++;
}

/* Gives the oldest queued line, and the lines after it with the same prompt, to dest. */
static bool take_queued(cli_farm *f, int dest) {
    while (f->queue_head < f->next_seq && item(f, f->queue_head)->state != ITEM_QUEUED) f->queue_head++;
    if (f->queue_head == f->next_seq) return false;
    uint64_t s = f->queue_head;
    do assign(f, s++, dest);
    while (s < f->next_seq && item(f, s)->state == ITEM_QUEUED && item(f, s)->follows);
    if (s == f->next_seq) f->last_dest = dest; /* a line read next with that prompt goes there too */
    return true;
}

static void item_done(cli_farm *f, farm_item *it, vlr_buf *result, bool ok, uint64_t tokens) {
    f->outstanding[it->dest]--;
    f->held_bytes -= it->msg.len;
    vlr_buf_free(&it->msg);
    it->result = *result;
    *result = (vlr_buf){0};
    it->ok = ok;
    it->tokens = tokens;
    it->farmed = true;
    it->state = ITEM_DONE;
}

/* Writes the results at the head of the window that are done, in order (the lock is let go while
 * the driver writes). False once a write failed. */
static bool emit_done(cli_farm *f) {
    while (!f->emit_failed && f->emit_seq < f->next_seq && item(f, f->emit_seq)->state == ITEM_DONE) {
        farm_item *it = item(f, f->emit_seq);
        vlr_buf r = it->result;
        bool ok = it->ok, farmed = it->farmed;
        uint64_t tokens = it->tokens;
        it->result = (vlr_buf){0};
        it->state = ITEM_FREE;
        f->emit_seq++;
        pthread_mutex_unlock(&f->lock);
        bool written = f->emit(f->sink, &r, ok, tokens, farmed);
        vlr_buf_free(&r);
        pthread_mutex_lock(&f->lock);
        if (!written) f->emit_failed = true;
    }
    return !f->emit_failed;
}

/* Rank 0's own share while it waits: the oldest line assigned to it (or, when none, the oldest queued
 * one), handled with the lock let go; else sleeps until the other thread reports a change. */
static void work_or_wait(cli_farm *f) {
    uint64_t s = f->emit_seq;
    for (; s < f->next_seq; s++)
        if (item(f, s)->state == ITEM_ASSIGNED && item(f, s)->dest == 0) break;
    if (s == f->next_seq) {
        if (!take_queued(f, 0)) {
            pthread_cond_wait(&f->to_main, &f->lock);
            return;
        }
        s = f->queue_head; /* the first line it took */
    }
    farm_item *it = item(f, s);
    vlr_buf result = {0};
    bool ok;
    uint64_t tokens = 0;
    pthread_mutex_unlock(&f->lock);
    handle_work(it->msg.data, it->msg.len, f->fn, f->ctx, &result, &ok, &tokens);
    pthread_mutex_lock(&f->lock);
    item_done(f, it, &result, ok, tokens);
}

typedef enum room { ROOM, ROOM_STOPPED, ROOM_FAILED } room;

/* Waits (doing rank 0's share meanwhile) until the window has room for a line of `bytes`; a stop
 * request ends the wait without room (the line is dropped: the run ends before it). */
static room make_room(cli_farm *f, size_t bytes) {
    for (;;) {
        if (!emit_done(f)) return ROOM_FAILED;
        bool empty = f->next_seq == f->emit_seq;
        if (empty || (f->next_seq - f->emit_seq < WINDOW && f->held_bytes + bytes <= WINDOW_BYTES)) return ROOM;
        if (*f->stop) return ROOM_STOPPED;
        work_or_wait(f);
    }
}

bool cli_farm_start(cli_farm *f, cli_batch_fn fn, void *ctx, cli_farm_emit_fn emit, void *sink,
                    volatile sig_atomic_t *stop) {
    f->fn = fn;
    f->ctx = ctx;
    f->emit = emit;
    f->sink = sink;
    f->stop = stop;
    return true;
}

bool cli_farm_submit(cli_farm *f, const cli_batch_line *line) {
    vlr_buf msg = {0};
    put_u64(&msg, 0);
    put_u64(&msg, line->line_no);
    put_u64(&msg, line->id_json->len);
    vlr_buf_append(&msg, line->id_json->data, line->id_json->len);
    vlr_buf_append(&msg, line->text, line->len);
    if (msg.oom) {
        vlr_buf_free(&msg);
        vlr_buf err = {0};
        cli_error_line(&err, line->id_json, "out of memory");
        return cli_farm_ready(f, &err, false);
    }
    uint64_t key = prompt_key(line->root);
    pthread_mutex_lock(&f->lock);
    room got = make_room(f, msg.len);
    if (got == ROOM) {
        uint64_t seq = f->next_seq++;
        memcpy(msg.data, &seq, sizeof seq);
        farm_item *it = item(f, seq);
        *it = (farm_item){.state = ITEM_QUEUED, .follows = key && key == f->last_key, .msg = msg};
        msg = (vlr_buf){0};
        f->queued++;
        f->held_bytes += it->msg.len;
        f->last_key = key;
        if (it->msg.len > INT_MAX) { /* more than one MPI message holds: rank 0 handles it */
            assign(f, seq, 0);
            f->last_dest = 0;
        } else if (it->follows && f->last_dest >= 0) {
            assign(f, seq, f->last_dest);
        } else {
            f->last_dest = -1;
        }
        pthread_cond_signal(&f->to_comm);
        if (!emit_done(f)) got = ROOM_FAILED;
    }
    pthread_mutex_unlock(&f->lock);
    vlr_buf_free(&msg);
    return got != ROOM_FAILED;
}

bool cli_farm_ready(cli_farm *f, vlr_buf *result, bool ok) {
    pthread_mutex_lock(&f->lock);
    room got = make_room(f, 0);
    if (got == ROOM) {
        farm_item *it = item(f, f->next_seq++);
        *it = (farm_item){.state = ITEM_DONE, .ok = ok, .result = *result};
        *result = (vlr_buf){0};
        f->last_key = 0;
        f->last_dest = -1;
        if (!emit_done(f)) got = ROOM_FAILED;
    }
    pthread_mutex_unlock(&f->lock);
    return got != ROOM_FAILED;
}

static int remote_outstanding(const cli_farm *f) {
    int n = 0;
    for (int r = 1; r < f->size; r++) n += f->outstanding[r];
    return n;
}

/* What no rank has started stays undone: the lines from the first of them on are not written. */
static void cancel_unstarted(cli_farm *f) {
    for (uint64_t s = f->emit_seq; s < f->next_seq; s++) {
        farm_item *it = item(f, s);
        if (it->state == ITEM_QUEUED || (it->state == ITEM_ASSIGNED && it->dest == 0)) {
            if (it->state == ITEM_QUEUED) f->queued--;
            else f->outstanding[0]--;
            f->held_bytes -= it->msg.len;
            vlr_buf_free(&it->msg);
            it->state = ITEM_CANCELLED;
        }
    }
}

bool cli_farm_drain(cli_farm *f, bool cancel) {
    pthread_mutex_lock(&f->lock);
    for (;;) {
        cancel = cancel || *f->stop;
        if (cancel) cancel_unstarted(f);
        emit_done(f);
        if (f->emit_seq == f->next_seq || f->emit_failed || item(f, f->emit_seq)->state == ITEM_CANCELLED) {
            if (!cancel || remote_outstanding(f) == 0) break;
            pthread_cond_wait(&f->to_main, &f->lock);
        } else if (cancel) {
            pthread_cond_wait(&f->to_main, &f->lock);
        } else {
            work_or_wait(f);
        }
    }
    bool ok = !f->emit_failed;
    pthread_mutex_unlock(&f->lock);
    return ok;
}

/* ---- rank 0: the thread that makes the MPI calls ------------------------------------------- */

static void send_assigned(cli_farm *f) {
    for (uint64_t s = f->emit_seq; f->unsent && s < f->next_seq; s++) {
        farm_item *it = item(f, s);
        if (it->state != ITEM_ASSIGNED || it->dest == 0 || it->sent) continue;
        MPI_Isend(it->msg.data, (int)it->msg.len, MPI_BYTE, it->dest, TAG_WORK, MPI_COMM_WORLD, &it->send);
        it->sent = true;
        f->unsent--;
    }
}

static void receive_result(cli_farm *f, const MPI_Status *st) {
    vlr_buf b = {0};
    if (!recv_bytes(st, &b)) fatal(f, "out of memory receiving a result");
    uint64_t seq = b.len >= RESULT_HEADER * sizeof(uint64_t) ? get_u64(b.data, 0) : UINT64_MAX;
    farm_item *it = seq >= f->emit_seq && seq < f->next_seq ? item(f, seq) : NULL;
    if (!it || it->state != ITEM_ASSIGNED || it->dest != st->MPI_SOURCE || !it->sent)
        fatal(f, "a result for no line sent to that rank");
    MPI_Wait(&it->send, MPI_STATUS_IGNORE); /* the worker has the line: its send is complete */
    vlr_buf result = {0};
    vlr_buf_append(&result, b.data + RESULT_HEADER * sizeof(uint64_t), b.len - RESULT_HEADER * sizeof(uint64_t));
    if (result.oom) fatal(f, "out of memory receiving a result");
    item_done(f, it, &result, get_u64(b.data, 1) != 0, get_u64(b.data, 2));
    vlr_buf_free(&b);
}

static void *comm_main(void *arg) {
    cli_farm *f = arg;
    pthread_mutex_lock(&f->lock);
    for (;;) {
        bool changed = false;
        for (;;) {
            int flag = 0;
            MPI_Status st;
            MPI_Iprobe(MPI_ANY_SOURCE, TAG_RESULT, MPI_COMM_WORLD, &flag, &st);
            if (!flag) break;
            receive_result(f, &st);
            changed = true;
        }
        /* each rank gets a line when it has none; a second one ahead while many wait, so it does not
         * sit idle for the round trip */
        for (int r = 1; r < f->size; r++)
            while (f->outstanding[r] < (f->queued > 2 * (size_t)f->size ? 2 : 1) && take_queued(f, r)) changed = true;
        send_assigned(f);
        if (changed) pthread_cond_broadcast(&f->to_main);
        if (f->closing && remote_outstanding(f) == 0) break;
        const struct timespec until = vlr_realtime_after(POLL_NS);
        pthread_cond_timedwait(&f->to_comm, &f->lock, &until);
    }
    pthread_mutex_unlock(&f->lock);
    for (int r = 1; r < f->size; r++) MPI_Send(NULL, 0, MPI_BYTE, r, TAG_STOP, MPI_COMM_WORLD);
    for (int r = 1; r < f->size; r++) {
        uint64_t c[CLI_BATCH_COUNTERS + 1];
        MPI_Recv(c, CLI_BATCH_COUNTERS + 1, MPI_UINT64_T, r, TAG_COUNTERS, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        for (int i = 0; i <= CLI_BATCH_COUNTERS; i++) f->counters[i] += c[i];
    }
    return NULL;
}

/* ---- joining and leaving ------------------------------------------------------------------ */

int cli_farm_open(const char *cmd, cli_farm **farm) {
    long size;
    *farm = NULL;
    if (!launched_by_mpi(&size)) return 0;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "vlreward %s: cannot join the MPI job\n", cmd);
        return -1;
    }
    cli_farm *f = calloc(1, sizeof *f);
    if (!f) {
        fprintf(stderr, "vlreward %s: out of memory\n", cmd);
        MPI_Abort(MPI_COMM_WORLD, EXIT_USAGE);
    }
    f->cmd = cmd;
    MPI_Comm_rank(MPI_COMM_WORLD, &f->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &f->size);
    if (provided < MPI_THREAD_SERIALIZED) fatal(f, "this MPI library has no thread support (MPI_THREAD_SERIALIZED)");
    *farm = f;
    if (f->rank > 0) return 1;
    if (!(f->items = calloc(WINDOW, sizeof *f->items)) || !(f->outstanding = calloc((size_t)f->size, sizeof(int))))
        fatal(f, "out of memory");
    f->last_dest = -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->to_comm, NULL);
    pthread_cond_init(&f->to_main, NULL);
    /* signals (SIGINT/SIGTERM: stop after the current lines) go to the main thread, whose reads they
     * interrupt */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (pthread_create(&f->comm, NULL, comm_main, f) != 0) fatal(f, "cannot start the MPI thread");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    f->comm_running = true;
    return 1;
}

int cli_farm_rank(const cli_farm *f) { return f ? f->rank : 0; }
int cli_farm_size(const cli_farm *f) { return f ? f->size : 1; }

void cli_farm_close(cli_farm *f, cli_batch_stats *st) {
    if (!f) return;
    if (f->comm_running) {
        pthread_mutex_lock(&f->lock);
        f->closing = true;
        pthread_cond_signal(&f->to_comm);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->comm, NULL);
        for (int i = 0; i < CLI_BATCH_COUNTERS; i++) st->counters[i] += f->counters[i];
        st->threads += (int)f->counters[CLI_BATCH_COUNTERS];
        for (size_t i = 0; i < WINDOW; i++) {
            vlr_buf_free(&f->items[i].msg);
            vlr_buf_free(&f->items[i].result);
        }
        pthread_mutex_destroy(&f->lock);
        pthread_cond_destroy(&f->to_comm);
        pthread_cond_destroy(&f->to_main);
    }
    free(f->items);
    free(f->outstanding);
    free(f);
    MPI_Finalize();
}

#endif
