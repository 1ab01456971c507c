/* bench_model.h: a Qwen2.5-VL model built in memory from deterministic random bf16 values, for
 * `vlreward bench` and for tests that need a model of any shape without files. Internal to the CLI
 * and the tests: not part of libvlreward (neither the archive nor the shared library) and not
 * installed.
 *
 * The weights have the shapes and dtypes vlr_weights_load would bind for the same config, so the
 * forward passes (vision.c, text.c) cannot tell them apart from a checkpoint. Values: every matrix is
 * uniform with std 1/sqrt(fan_in) (activations stay O(1) through any depth), biases uniform with std
 * 0.02, norm weights uniform in 1 +- 0.05, the embedding table std 0.02, the value head std
 * 1/sqrt(D) with bias 0. Element i of a tensor is a pure function of (seed, the tensor's tag, i), so
 * values do not depend on the thread count, and layer l of a model cut to fewer layers holds the same
 * values as layer l of the whole model.
 *
 * The embedding table [vocab, D] (1.09 GB at 7B size) is allocated zeroed but, unless asked, left
 * unfilled: untouched pages cost no memory, and vlr_bench_model_fill_embed_rows writes just the rows
 * a run will read (with the values a full fill would give them). Not here: timing, which lives in
 * cli/cmd_bench.c, nor the FLOP counts it reports (cli/bench_flops.h). */
#ifndef VLR_BENCH_MODEL_H
#define VLR_BENCH_MODEL_H

#include "internal.h"

typedef struct vlr_bench_model {
    vlr_config cfg;   /* the shapes built (a copy of the caller's) */
    vlr_weights w;    /* tensors point into allocs; w.files is NULL, dtype "bf16" */
    uint64_t seed;
    int n_threads;    /* used by the fills */
    void **allocs;    /* [n_allocs] every tensor buffer, freed by vlr_bench_model_free */
    size_t n_allocs, cap_allocs;
    bool embed_filled; /* every row of the embedding table holds its values */
    bool count_only;   /* internal: vlr_bench_model_count's dry run (no tensor is allocated) */
    uint64_t filled_bytes; /* bytes of the tensors written at build (all but a lazy embedding) */
} vlr_bench_model;

/* Allocates and fills every tensor of cfg's vision tower, decoder and value head (embedding rows only
 * when fill_embed). n_threads: OpenMP threads for the fill (results do not depend on it). On failure m
 * is left freed. */
vlr_status vlr_bench_model_build(const vlr_config *cfg, uint64_t seed, bool fill_embed, int n_threads,
                                 vlr_bench_model *m, vlr_err *e);
/* The parameters and bytes vlr_bench_model_build would allocate for cfg, without allocating them;
 * filled_bytes leaves out the embedding table unless fill_embed (its pages stay untouched). */
vlr_status vlr_bench_model_count(const vlr_config *cfg, bool fill_embed, uint64_t *parameters,
                                 uint64_t *bytes, uint64_t *filled_bytes, vlr_err *e);
/* Writes the embedding rows ids[0..n-1] (ids outside [0, vocab) are skipped). */
void vlr_bench_model_fill_embed_rows(vlr_bench_model *m, const int32_t *ids, size_t n);
void vlr_bench_model_free(vlr_bench_model *m); /* zeroed or freed structs are fine */

/* n token ids of ordinary text (below Qwen2's first special token, and below vocab), none equal to
 * avoid (mapped to 0), element i a function of (seed, i) only. */
void vlr_bench_random_ids(uint64_t seed, size_t n, int32_t vocab, int32_t avoid, int32_t *ids);
/* Fills x[0..n-1] with uniform fp32 values of the given mean and std, element i a function of
 * (seed, tag, i) only (pixels and matrices of the benchmark). */
void vlr_bench_fill_f32(float *x, size_t n, uint64_t seed, uint64_t tag, float mean, float std,
                        int n_threads);

/* Keeps the first n_layers decoder layers and the first n_layers vision blocks (fewer when the
 * model has fewer), and the full-attention block indexes that fall inside. n_layers >= 1. */
void vlr_bench_config_cut(vlr_config *cfg, int n_layers);

#endif
