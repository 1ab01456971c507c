/* mpi_batch.h: `mpirun -n K vlreward score|eval`: the batch driver's lines spread over K processes
 * (Open MPI). Every rank loads the model and runs the same command; rank 0 reads the input as the
 * driver always does and hands each parsed line to the first rank that is free (itself included),
 * keeping a line whose prompt equals the previous line's on the previous line's rank (its prefix stays
 * in that rank's KV cache). Results come back to rank 0, which writes them in input order: the output
 * is byte-identical to one process. Without an MPI launcher (or in a build without MPI) nothing here
 * runs: cli_farm_open answers 0 and the driver works alone, as it always has.
 *
 * Rank 0 does its own share of the lines on its main thread (with the handler's context, as a single
 * process does); a second thread makes every MPI call (MPI_THREAD_SERIALIZED) and sleeps between polls,
 * so waiting costs no CPU time. A rank that dies takes the job down (MPI semantics); the output keeps
 * whole lines in input order, so `--resume` continues it. */
#ifndef VLR_CLI_MPI_BATCH_H
#define VLR_CLI_MPI_BATCH_H

#include <signal.h>

#include "batch.h"

typedef struct cli_farm cli_farm;

/* Writes one result in input order (the driver's writer): false stops the run. farmed: a handler
 * made it, on some rank (the driver hands it to opts.absorb); else the driver itself did. */
typedef bool (*cli_farm_emit_fn)(void *sink, vlr_buf *result, bool ok, uint64_t tokens, bool farmed);

/* Joins the job when an MPI launcher (mpirun, srun) started this process: 1 with *farm set, 0 when
 * there is none (nothing done), -1 after a message (a build without MPI started by mpirun with K > 1,
 * or MPI without thread support). */
int cli_farm_open(const char *cmd, cli_farm **farm);
/* True when an MPI launcher started this process (whatever the build). */
bool cli_farm_launched(void);
int cli_farm_rank(const cli_farm *f);
int cli_farm_size(const cli_farm *f);

/* Rank > 0: handles the lines rank 0 sends until it says stop, then returns its opts.counters.
 * 0, or -1 after a message. */
int cli_farm_serve(cli_farm *f, const cli_batch_opts *o, cli_batch_fn fn, void *ctx);

/* Rank 0, around the driver's loop: start before the first line (fn and ctx handle rank 0's share,
 * emit writes, *stop is the driver's signal flag); submit a parsed line, or hand over a result the
 * driver made itself (an invalid line), in input order; drain at the end. Once *stop is set (or drain
 * is told to cancel, after a write error) only what is under way finishes: a line submitted then may
 * be dropped, and the lines from the first one not started on are not written. Each may write results
 * and returns false when emit failed. */
bool cli_farm_start(cli_farm *f, cli_batch_fn fn, void *ctx, cli_farm_emit_fn emit, void *sink,
                    volatile sig_atomic_t *stop);
bool cli_farm_submit(cli_farm *f, const cli_batch_line *line);
bool cli_farm_ready(cli_farm *f, vlr_buf *result, bool ok);
bool cli_farm_drain(cli_farm *f, bool cancel);

/* Every rank: stops the other ranks (rank 0), adds their opts.counters and opts.threads into
 * st->counters and st->threads (rank 0) and leaves the job. NULL is a no-op. */
void cli_farm_close(cli_farm *f, cli_batch_stats *st);

/* --threads' default under an MPI launcher: the CPUs this rank is bound to (mpirun --bind-to), or,
 * unbound, its share of the node's CPUs; 0 (the library's default, all CPUs) without a launcher. */
int cli_farm_default_threads(void);

#endif
