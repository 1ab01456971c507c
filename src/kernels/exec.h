/* exec.h: the execution context, what every op of a forward pass needs besides its operands: the
 * kernel table for the chosen (ISA, precision), the thread count, a workspace the kernels grow and
 * reuse, a cancel flag and the trace hook. vision.c and text.c take a `const vlr_exec *` and know
 * nothing else about the machine they run on; a session owns one context (model.c).
 *
 * Why a header of its own rather than kernels.h: kernels.h is the per-op contract an ISA file
 * implements (slots, numerics, tilings); the context is what a *caller* holds, and it carries
 * things no kernel reads (cancel flag, trace). kernels.h only forward-declares vlr_exec, so an ISA
 * file never sees the trace. A device backend is one more table and one more context (a stream in
 * place of n_threads, device memory in the workspace): docs/backends.md.
 *
 * Workspace: one 64-byte-aligned arena per context, grown on demand to the largest request seen
 * and then reused, so a forward pass allocates nothing per kernel call after its first pass. The
 * drivers in kernels.c (vlr_gemm_run, vlr_attention_run) reserve it before their parallel region
 * and hand each thread its slice. When it cannot grow (heap exhausted or the cap set for tests),
 * the GEMM runs on stack buffers with the same bits and attention on the scalar reference. */
#ifndef VLR_EXEC_H
#define VLR_EXEC_H

#include "../trace.h"
#include "kernels.h"

typedef struct vlr_workspace vlr_workspace;

/* max_bytes: the most the workspace may hold (0 = no cap; tests use a cap to force the
 * fallbacks). NULL when out of memory. */
vlr_workspace *vlr_workspace_new(size_t max_bytes);
void vlr_workspace_free(vlr_workspace *ws); /* NULL is a no-op */
/* At least `bytes` of 64-byte-aligned memory, valid until the next reserve or free. The previous
 * contents are not kept. NULL when it cannot grow; the workspace then keeps what it had. Not
 * thread-safe: call it outside parallel regions (one context per session, one session per thread). */
void *vlr_workspace_reserve(vlr_workspace *ws, size_t bytes);
/* Bytes held now and the number of times the arena was (re)allocated: a steady state shows no
 * growth from one request to the next (tests check it). */
void vlr_workspace_stats(const vlr_workspace *ws, size_t *bytes, uint64_t *n_grows);

struct vlr_exec {
    const vlr_kernels *k;        /* the op table for (ISA, precision); outlives the context */
    int n_threads;               /* OpenMP team of every parallel kernel (<= 0 means 1) */
    vlr_workspace *ws;           /* kernel scratch; NULL: each kernel call allocates its own */
    vlr_workspace *acts;         /* the vision tower's activation arena, kept between requests so
                                  * its pages are not faulted in again by every image (measured:
                                  * ~200 ms per 640x480 image at 7B width); NULL: one per call */
    const volatile int *cancel;  /* NULL, or a caller's flag: non-zero asks the forward passes to
                                  * stop at their next check (vision block, decoder layer, chunk) */
    vlr_trace *trace;            /* NULL, or where the forward passes record named stages */
};

/* The forward passes' cancellation point. The flag is written by another thread of the host; a
 * volatile read sees the write within a check or two, which is all that is promised. */
static inline bool vlr_exec_cancelled(const vlr_exec *x) { return x->cancel && *x->cancel != 0; }

/* n linear layers (a[i]: gemm arguments, wq set for an int8 weight) on the context's table: when
 * every weight is int8 and they share x (q/k/v, gate/up), one gemm_i8 call that quantizes x once;
 * otherwise each on its own slot. n <= VLR_I8_MAX_GROUP. */
static inline void vlr_exec_linears(const vlr_exec *x, const vlr_gemm_args *a, int n) {
    bool grouped = n > 1;
    for (int i = 0; i < n; i++)
        grouped = grouped && a[i].wq && a[i].x == a[0].x && a[i].ldx == a[0].ldx && a[i].m == a[0].m && a[i].k == a[0].k;
    if (grouped) {
        x->k->gemm_i8(a, n, x);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (a[i].wq) x->k->gemm_i8(&a[i], 1, x);
        else x->k->gemm(&a[i], x);
    }
}

#endif
