/* text.h: the Qwen2 language model of Qwen2.5-VL with its KV cache, the final norm and the value
 * head (trl AutoModelForCausalLMWithValueHead: value = w·h + b on the final-normed hidden state).
 *
 * A vlr_text_state is one request's working memory: the KV cache (fp32, grown on demand up to
 * max_tokens) and the scratch of one chunk. Prefill runs the decoder over the new tokens in chunks
 * against the cache, so memory is O(chunk x context) for attention and O(context) for the cache, and
 * then reads the value head at the last token. The state keeps n_cached, so a later prefill continues
 * a cached prefix (vlr_text_truncate cuts the cache back to a shared prefix first).
 *
 * The state runs on an execution context (kernels/exec.h: kernel table, threads, workspace, cancel
 * flag, trace) given at init; it never learns which backend that is.
 *
 * Thread safety: a state is used by one thread at a time; weights and kernels are shared read-only.
 * Results do not depend on n_threads or on the chunk size (kernels split over output rows only). */
#ifndef VLR_TEXT_H
#define VLR_TEXT_H

#include "common.h"
#include "config.h"
#include "kernels/exec.h"
#include "weights.h"

#define VLR_TEXT_DEFAULT_CHUNK 512

typedef struct vlr_text_state vlr_text_state;

/* Memory plan: the chunk scratch a state allocates (0 on overflow), and the fp32 K and V cache of
 * n_tokens tokens over all layers. vlr_text_prefill_suffixes adds a pass's K and V rows
 * (2 x chunk x KVH*hd floats: 2 MiB at 7B) the first time it runs. */
size_t vlr_text_scratch_bytes(const vlr_config *cfg, int chunk);
size_t vlr_text_kv_bytes(const vlr_config *cfg, size_t n_tokens);

/* max_tokens: the cache capacity limit (<= 0: the model's max_position_embeddings);
 * chunk: tokens per decoder pass (<= 0: VLR_TEXT_DEFAULT_CHUNK). The cache itself is allocated on
 * demand by prefill. cfg, w and x must outlive the state (x is read at every prefill, so a change
 * of its trace or cancel flag applies to the next one). */
vlr_status vlr_text_state_init(const vlr_config *cfg, const vlr_text_weights *w, const vlr_exec *x,
                               int max_tokens, int chunk, vlr_text_state **out, vlr_err *e);
void vlr_text_state_free(vlr_text_state *st); /* NULL is a no-op */

/* Builds the input embeddings of n tokens: row i is embed[ids[i]] widened to fp32, except the rows
 * of image_pad tokens, which take the vision rows in order. vision: [n_vision, D] (NULL when 0);
 * the number of image_pad ids must equal n_vision. out: [n, D]. */
vlr_status vlr_text_embed(const vlr_config *cfg, const vlr_text_weights *w, const int32_t *ids,
                          size_t n, const float *vision, size_t n_vision, float *out, vlr_err *e);

/* Runs the n new tokens after the n_cached ones already in the cache.
 *   embeds: [n, D] input embeddings; pos: [3][ld_pos] M-RoPE positions of the new tokens (token i
 *   at pos[c*ld_pos + i], c = temporal, height, width; e.g. vlr_rope_positions' output + start with
 *   ld_pos = its sequence length). On success the cache holds n_cached + n tokens and *score (may be
 *   NULL) is the value head at the last new token; vlr_text_last_hidden gives that token's
 *   final-normed hidden state. The context's trace (NULL: none) records text.inputs_embeds,
 *   text.layers.<i>, text.final_norm (all new tokens) and the score.
 * Cancellation (the context's flag) is checked before every chunk and every layer: the call then
 * returns VLR_ERR_INTERRUPTED ("interrupted") and the cache holds only the chunks completed before
 * it (n_cached counts no token whose K/V rows are partly written). */
vlr_status vlr_text_prefill(vlr_text_state *st, const float *embeds, const int32_t *pos,
                            size_t ld_pos, size_t n, double *score, vlr_err *e);

/* Scores n_suffixes sequences that each continue the n_cached tokens in the cache (a group's answers
 * after their shared prompt), stacked in one [sum len, D] embeds (suffix j from the sum of the lens
 * before it; pos as in vlr_text_prefill, rows in the same stacking). Whole suffixes are packed into
 * passes of at most `chunk` rows that run every GEMM once over all their rows, while attention runs
 * per suffix with its K/V rows at n_cached.. of the cache, exactly where they would be alone; a
 * suffix longer than a pass runs alone through vlr_text_prefill. So scores[j] is bit-identical to
 * vlr_text_prefill of suffix j after the same cached prefix. Afterwards the cache holds the prefix
 * only (n_cached unchanged: the rows past it are scratch), also after a failure; last_hidden is that
 * of the last suffix scored. Cancellation is checked before every layer of every pass. No trace. */
vlr_status vlr_text_prefill_suffixes(vlr_text_state *st, const float *embeds, const int32_t *pos, size_t ld_pos,
                                     const size_t *len, size_t n_suffixes, double *scores, vlr_err *e);

size_t vlr_text_n_cached(const vlr_text_state *st);
/* Keeps the first n_keep cached tokens (no-op when n_keep >= n_cached). */
void vlr_text_truncate(vlr_text_state *st, size_t n_keep);
/* K/V rows as plain data, for a prefix cache: row_floats per token = 2 * layers * kv_heads * head_dim,
 * laid out [layer][K then V][token][kv_heads * head_dim]. vlr_text_kv_read copies the cached tokens
 * [first, first + n) (first + n <= n_cached) into dst [n * row_floats]; vlr_text_kv_write stores src's
 * n tokens at first (first <= n_cached) and leaves n_cached = first + n, growing the cache as
 * prefill does. Copies are exact, so a restored prefix scores bit-identically. */
size_t vlr_text_kv_row_floats(const vlr_config *cfg);
void vlr_text_kv_read(const vlr_text_state *st, size_t first, size_t n, float *dst);
vlr_status vlr_text_kv_write(vlr_text_state *st, size_t first, size_t n, const float *src, vlr_err *e);
/* [D] final-normed hidden state of the last token of the last prefill (zeros before any). */
const float *vlr_text_last_hidden(const vlr_text_state *st);

#endif
