/* model.h: the internal layout of vlr_model and vlr_session, and the request preparation step
 * (template, images, tokens, positions) that `vlreward prepare` exposes and vlr_score builds on.
 * Internal to the library and its tests: the CLI sees internal.h, library users only vlreward.h. */
#ifndef VLR_MODEL_H
#define VLR_MODEL_H

#include "internal.h" /* what the CLI sees of the library (vlr_prepared, vlr_prepare, ...) */

struct vlr_model {
    char *dir;
    vlr_params params;
    vlr_config cfg;
    vlr_weights weights;
    vlr_tokenizer *tokenizer;
    vlr_kernels kernels;      /* the table for (this CPU's ISA, the resolved precision) */
    char kernels_name[64];    /* its name for info: the float table's ISA [+ the int8 kernel's] */
    char int8_cache_note[4096 + 160]; /* params.int8_cache: what the load did with the file */
    const char *precision_reason; /* static: "requested", or what `auto` saw on this CPU */
    int n_threads;            /* resolved from params (0 = online CPUs) */
    int max_tokens;           /* resolved from params and the config */
    bool template_known;      /* the model's chat template is the Qwen2-VL one we render */
    char template_warning[256]; /* non-empty when it is not (the CLI prints it once) */
};

/* Memory plan of one request: the mapped weights (weight_bytes, all touched at worst), the KV cache
 * and decoder scratch for n_tokens, the input embeddings, the vision rows of the images and the
 * largest vision-tower working set. Peak RSS of scoring stays within it plus the tokenizer and the
 * program itself (tests/test_score.c checks it on tiny-a; README states it for 7B). */
uint64_t vlr_plan_request_bytes(const vlr_config *cfg, uint64_t weight_bytes, size_t n_tokens,
                                const vlr_grid_thw *images, size_t n_images);

/* The session's error record (for the CLI, which reports per-line errors). */
const vlr_err *vlr_session_err(const vlr_session *s);

/* Last-token outputs of the latest vlr_score on this session: the final-normed hidden state
 * [hidden_size] floats (valid until the next call). */
const float *vlr_session_last_hidden(const vlr_session *s);

/* Answers this session has scored as suffixes after a group's prompt (vlr_forward_suffixes), since
 * it was made: the tests see which path a group or a batch took. */
uint64_t vlr_session_suffix_answers(const vlr_session *s);

/* The session's kernel workspace (tests read its growth with vlr_workspace_stats). */
const vlr_workspace *vlr_session_workspace(const vlr_session *s);

#endif
