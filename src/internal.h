/* internal.h: everything the CLI (cli/) may use of libvlreward beyond include/vlreward.h, and why.
 *
 * A library user sees only vlreward.h; libvlreward.so exports nothing else (hidden visibility, checked
 * by tests/test_api.c). The CLI links the static archive and so can call these functions, but it
 * includes no other library header than this one (tests/test_api.c checks that too): in particular
 * not model.h, so the layout of vlr_model and vlr_session stays private to the library and the
 * accessors below say which of the model's fields the commands read. The tests may include any
 * header: they check the internals themselves.
 *
 * Why each piece:
 *   common.h        vlr_buf, vlr_err, the allocation, path and clock helpers every command uses.
 *   json.h          the JSON Lines commands parse each input line once, then read "id" and their
 *                   own fields (eval's dataset rows, tokenize's "ids") before handing it on;
 *                   json_write.h (through json.h) writes every JSON text they print.
 *   request.h       a line's request with its group ("answers"), id and answers: score, eval and
 *                   serve read requests themselves to score each answer of a group.
 *   admission.h     serve bounds a body's JSON values and charges each image's cost (from its
 *                   header) before decoding anything.
 *   base64.h        eval reads benchmark rows with base64 images; serve turns fetched bytes into
 *                   data: URIs.
 *   fetch_policy.h  serve's --remote-images (ALLOWLIST of hosts and CIDRs).
 *   image.h         prepare writes pixel values and grids; bench sizes its image grid; eval reads
 *                   image sources; admission's limits.
 *   tokenizer.h     the tokenize command encodes and decodes with the model's tokenizer.
 *   trace.h         score --trace writes per-stage summaries.
 *   config.h, weights.h, rope.h, text.h, vision.h, quantize.h, kernels/exec.h, forward.h
 *                   bench builds a random-weight model of any shape (cli/bench_model.c) and times the
 *                   forward stages and the kernels one by one, which the public API cannot do. */
#ifndef VLR_INTERNAL_H
#define VLR_INTERNAL_H

#include "vlreward.h"

#include "admission.h"
#include "base64.h"
#include "common.h"
#include "config.h"
#include "fetch_policy.h"
#include "forward.h"
#include "image.h"
#include "json.h"
#include "kernels/exec.h"
#include "quantize.h"
#include "request.h"
#include "rope.h"
#include "text.h"
#include "tokenizer.h"
#include "trace.h"
#include "vision.h"
#include "weights.h"

/* ---- What the commands read of a loaded model (vlr_model stays opaque to them) ---------------- */

/* The parameters the model was loaded with (as given: 0 still means "the default"). */
const vlr_params *vlr_model_params(const vlr_model *m);
/* The architecture and preprocessing read from the model's config files. */
const vlr_config *vlr_model_config(const vlr_model *m);
const vlr_tokenizer *vlr_model_tokenizer(const vlr_model *m);
/* The resolved limits: tokens per request, OpenMP threads per session. */
int vlr_model_max_tokens(const vlr_model *m);
int vlr_model_n_threads(const vlr_model *m);
/* "" when the model's chat template is the Qwen2-VL one the library renders, else a warning the CLI
 * prints once after loading. */
const char *vlr_model_template_warning(const vlr_model *m);

/* ---- Request preparation (`vlreward prepare`) and tracing (`score --trace`) ---------------------- */

/* One request after preprocessing: what the model consumes. */
typedef struct vlr_prepared {
    vlr_buf prompt;               /* rendered template, one <|image_pad|> per image */
    vlr_ids ids;                  /* token ids after placeholder expansion */
    size_t n_images;
    vlr_prepared_image *images;   /* [n_images], pixel_values + grids */
    int32_t *positions;           /* [3][ids.len]: temporal, height, width M-RoPE positions */
    int rope_delta;
} vlr_prepared;

void vlr_prepared_free(vlr_prepared *p);

/* Chat template, images, tokenization, placeholder expansion, M-RoPE positions. */
vlr_status vlr_prepare(vlr_session *s, const vlr_request *req, vlr_prepared *out);

/* Scores every answer of r (a group; or r's request alone when it has no "answers") on the session:
 * scores [max(1, n_answers)], *tokens the tokens of all the answers' sequences. Answer 0 runs as a
 * request of its own; the others, when no answer has an image and the session has no trace, as
 * one batched suffix prefill after the prompt they share (vlr_forward_suffixes), else one by one.
 * Each score is bit-identical to that answer scored alone. Afterwards the session holds and
 * remembers the prompt. On failure *failed is the answer that failed (or was running when the
 * cancel flag stopped it) and the session's message says why. r's last message is answer 0 again. */
vlr_status vlr_score_answers(vlr_session *s, vlr_parsed_request *r, double *scores, uint64_t *tokens,
                             size_t *failed);

/* vlr_score_batch (runs of requests that differ only in their last, assistant, turn scored as one
 * batch after their prompt), plus tokens[n] (or NULL): each request's tokens, 0 when it failed.
 * `eval` scores a pair's two sides with it and counts their tokens. */
vlr_status vlr_score_requests(vlr_session *s, const vlr_request *reqs, size_t n, vlr_batch_result *results,
                              uint64_t *tokens);

/* A digest of what a request's last turn follows (every earlier turn and base_dir, as vlr_score_batch
 * compares them to find runs): equal for requests that can run as one batch, so a server can pick
 * candidates from its queue without comparing requests; 0 for a request whose last turn cannot be a
 * batched answer (an image in it, or no earlier turn). Candidates only: the batch compares exactly. */
uint64_t vlr_request_prompt_digest(const vlr_request *r);

/* Records per-stage summaries of the following vlr_score calls into trace (NULL stops). */
void vlr_session_set_trace(vlr_session *s, vlr_trace *trace);

#endif
