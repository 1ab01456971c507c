/* vlreward.h: the public API of vlreward, a C inference engine for the multimodal reward model
 * Skywork-VL-Reward-7B (Qwen2.5-VL-7B-Instruct + a scalar value head).
 *
 * Usage:
 *
 *     char err[512];
 *     vlr_model *model;
 *     vlr_params params = vlr_default_params();
 *     if (vlr_model_load("Skywork-VL-Reward-7B", &params, &model, err, sizeof err) != VLR_OK) {
 *         fprintf(stderr, "%s\n", err);
 *         return 1;
 *     }
 *     vlr_session *session;
 *     if (vlr_session_init(model, &session) != VLR_OK) { ... }
 *     const char *request =
 *         "{\"image\": \"chart.jpg\", \"question\": \"Is purple the highest?\", \"answer\": \"No.\"}";
 *     double score;
 *     if (vlr_score_json(session, request, strlen(request), ".", &score) != VLR_OK)
 *         fprintf(stderr, "%s\n", vlr_session_errmsg(session));
 *     vlr_session_free(session);
 *     vlr_model_free(model);
 *
 * Threading contract: a vlr_model is immutable after vlr_model_load and may be shared by any number
 * of threads. A vlr_session holds the activations, the KV cache and the scratch memory of one
 * request at a time: use one session per thread. A vlr_cache (below) is thread-safe and may be
 * shared by the sessions of one model on any threads. Nothing in the library is global or mutable, and
 * nothing in it exits or aborts because of bad input: every failure is a status code plus a message.
 */
#ifndef VLREWARD_H
#define VLREWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VLR_VERSION "0.1.0"

/* Marks the public functions: the library is built with -fvisibility=hidden, so only these are
 * exported from libvlreward.so (its SONAME is libvlreward.so.0). */
#if defined(__GNUC__) || defined(__clang__)
#define VLR_API __attribute__((visibility("default")))
#else
#define VLR_API
#endif

typedef enum vlr_status {
    VLR_OK = 0,
    VLR_ERR_IO,          /* a file could not be opened / read / mapped */
    VLR_ERR_FORMAT,      /* a file or request is malformed (JSON, safetensors, image bytes) */
    VLR_ERR_CONFIG,      /* a config field is missing, of the wrong type or out of range */
    VLR_ERR_SHAPE,       /* a tensor is missing or has the wrong shape / dtype */
    VLR_ERR_INPUT,       /* a request is well-formed but cannot be scored (no assistant turn...) */
    VLR_ERR_LIMIT,       /* a size cap was hit (tokens, pixels, bytes) */
    VLR_ERR_NOMEM,       /* an allocation failed */
    VLR_ERR_UNSUPPORTED, /* valid but not supported (e.g. video) */
    VLR_ERR_NETWORK,     /* fetching an http(s) image failed */
    VLR_ERR_INTERRUPTED, /* cancelled by the caller */
    VLR_ERR_INTERNAL,    /* a bug: please report */
    VLR_ERR_NUMERIC      /* the model computed a non-finite score (NaN, +inf or -inf) */
} vlr_status;

/* The library's version, VLR_VERSION when the header and the library match. Never NULL. */
VLR_API const char *vlr_version(void);

/* A short constant name for a status ("format error", ...). Never NULL. */
VLR_API const char *vlr_status_str(vlr_status s);

/* The arithmetic of every linear layer (the decoder's, the vision tower's, the merger's). Norms,
 * RoPE, softmax, attention products, the residual stream and the KV cache are fp32 in every mode. */
typedef enum vlr_precision {
    VLR_PRECISION_F32 = 0, /* exact: fp32 activations and accumulation, weights widened from storage */
    VLR_PRECISION_BF16,    /* both operands rounded to bf16 (nearest even), fp32 accumulation: the
                            * reference's own bf16 inference; on AVX512_BF16 CPUs via vdpbf16ps */
    VLR_PRECISION_AUTO,    /* bf16 where this CPU runs bf16 dot products faster than fp32 FMA
                            * (a fixed table from cpuid), else f32; the default */
    VLR_PRECISION_INT8     /* the decoder's and the vision tower's linear layers in int8: weights
                            * per output channel, activations per token (dynamic), int32 sums; the
                            * patch embedding and the value head stay in the float precision `auto`
                            * picks. Never chosen by auto: its score cost is measured, not nil */
} vlr_precision;

/* "f32", "bf16", "auto", "int8"; NULL for a value outside the enum. */
VLR_API const char *vlr_precision_name(vlr_precision p);
/* Parses those names; false (and *out untouched) for anything else. */
VLR_API bool vlr_precision_parse(const char *name, vlr_precision *out);

typedef struct vlr_params {
    int n_threads;               /* 0 = all online CPUs */
    int max_tokens;              /* 0 = the model's max_position_embeddings */
    vlr_precision precision;     /* VLR_PRECISION_AUTO (the default) */
    uint64_t max_image_pixels;   /* decompression-bomb cap, 0 = Pillow's 178,956,970 */
    uint64_t max_download_bytes; /* cap on http(s) image downloads, 0 = 64 MiB */
    int download_timeout_s;      /* 0 = 30 s */
    int int8_cache;              /* int8 precision: 1 = keep the int8 weights in <model dir>/vlreward-int8.bin
                                  * (mapped when it matches the checkpoint, else made and written there;
                                  * 7.2 GB for the 7B model), 0 = quantize at every load (default) */
} vlr_params;

VLR_API vlr_params vlr_default_params(void);

typedef struct vlr_model vlr_model;     /* weights + tokenizer: immutable after load, shared */
typedef struct vlr_session vlr_session; /* activations, KV cache, scratch: one per thread */

/* Loads a Hugging Face model directory (config.json, model.safetensors or sharded
 * model.safetensors.index.json, value_head.safetensors, tokenizer.json, preprocessor_config.json).
 * Weights are memory-mapped and used in place. On failure *out is NULL and err holds the reason. */
VLR_API vlr_status vlr_model_load(const char *model_dir, const vlr_params *params, vlr_model **out,
                          char *err, size_t err_cap);
VLR_API void vlr_model_free(vlr_model *m); /* NULL is a no-op */

/* Architecture summary, as printed by `vlreward info`. */
typedef struct vlr_model_info {
    int text_hidden_size, text_intermediate_size, text_layers, text_heads, text_kv_heads;
    int text_head_dim, vocab_size, max_position_embeddings;
    double rms_norm_eps, rope_theta;
    int mrope_section[3];
    int vision_depth, vision_hidden_size, vision_heads, vision_intermediate_size;
    int vision_out_hidden_size, patch_size, spatial_merge_size, temporal_patch_size, window_size;
    int fullatt_block_indexes[64];
    int n_fullatt_block_indexes;
    uint64_t parameters; /* tensors used for scoring (no lm_head) */
    uint64_t bytes;      /* their storage size */
    const char *dtype;   /* "bf16", "f16", "f32" or "mixed" */
    const char *config_layout; /* "flat" or "nested" */
    int n_shards;
    const char *kernels;   /* the kernel table in use: "ref", "avx2", "avx512" or "avx512_bf16"; in
                            * int8 precision followed by ", int8 " and the int8 kernel ("avx512_vnni",
                            * "avx2" or "ref") */
    const char *precision; /* the precision in use, resolved: "f32", "bf16" or "int8", never "auto" */
    const char *precision_reason; /* why: "requested", or what `auto` saw on this CPU */
    const char *float_precision;  /* the layers not in int8: "f32" or "bf16" (= precision outside int8) */
    const char *int8_layers;      /* int8 precision: which layers are int8, which stay float; else NULL */
    uint64_t int8_bytes;          /* int8 precision: bytes of the quantized weights (they replace the
                                   * stored ones, whose pages are handed back); else 0 */
    const char *int8_cache;       /* with params.int8_cache: what the load did with the cache file
                                   * ("int8 weights read from ...", "... written to ...", "... not cached:
                                   * why"); else NULL */
} vlr_model_info;
VLR_API void vlr_model_get_info(const vlr_model *m, vlr_model_info *info);

/* The session only reads the model: any number of sessions may share one. */
VLR_API vlr_status vlr_session_init(const vlr_model *m, vlr_session **out);
VLR_API void vlr_session_free(vlr_session *s); /* NULL is a no-op */
/* The message of the last failure of this session; "" when none. Never NULL. */
VLR_API const char *vlr_session_errmsg(const vlr_session *s);

/* Scores one request given as JSON text (the format of `vlreward score` input lines:
 * {"messages": [...]} or the shorthand {"image"|"images", "question", "answer"}). Relative image
 * paths resolve against base_dir (NULL = current directory). */
VLR_API vlr_status vlr_score_json(vlr_session *s, const char *json, size_t len, const char *base_dir,
                          double *score);

/* The same request as C structs. vlr_score checks it as the JSON reader does (the same errors): at
 * least one message, known roles, the last message the assistant's, every item complete. */
/* An image comes as a reference (VLR_ITEM_IMAGE), as the bytes of an encoded file
 * (VLR_ITEM_IMAGE_BYTES: JPEG, PNG, WebP or BMP, sniffed from the bytes) or as decoded 8-bit RGB
 * pixels (VLR_ITEM_IMAGE_PIXELS). All three go through the same decoding rules and preprocessing:
 * the same image gives the same score whichever way it comes. The memory is only read, and only
 * during the call. */
typedef enum vlr_item_kind {
    VLR_ITEM_TEXT = 0,
    VLR_ITEM_IMAGE = 1,
    VLR_ITEM_IMAGE_BYTES = 2,
    VLR_ITEM_IMAGE_PIXELS = 3
} vlr_item_kind;
typedef struct vlr_content_item {
    vlr_item_kind kind;
    const char *text;  /* VLR_ITEM_TEXT: UTF-8, text_len bytes (may contain NUL) */
    size_t text_len;
    const char *image; /* VLR_ITEM_IMAGE: path, file://..., data:image/...;base64,..., http(s)://... */
    int64_t min_pixels, max_pixels, resized_height, resized_width; /* 0 = default; every image kind */
    const uint8_t *image_bytes; /* VLR_ITEM_IMAGE_BYTES: the file's bytes, image_len of them */
    size_t image_len;
    const uint8_t *pixels;      /* VLR_ITEM_IMAGE_PIXELS: height rows of width R,G,B byte triples, */
    int width, height;          /* rows stride bytes apart (stride >= 3 * width; 0 = 3 * width) */
    size_t stride;
} vlr_content_item;
typedef struct vlr_message {
    const char *role; /* "system", "user" or "assistant" */
    const vlr_content_item *items;
    size_t n_items;
} vlr_message;
typedef struct vlr_request {
    const vlr_message *messages;
    size_t n_messages;
    const char *base_dir; /* for relative image paths; NULL = current directory */
} vlr_request;

/* A score that is not a finite number (NaN or an infinity: weights with NaN/inf in them, or a
 * preprocessing that overflows) is never returned as a result: the call fails with
 * VLR_ERR_NUMERIC and the message "the score is not finite (NaN): ..." (or "(inf)", "(-inf)"),
 * and *score is left unset. It is not the request's fault, so the server answers it with 500, and
 * batch and eval runs write it as an error line like any other failed request. */
VLR_API vlr_status vlr_score(vlr_session *s, const vlr_request *req, double *score);

/* The outcome of one request of a batch. */
typedef struct vlr_batch_result {
    vlr_status status;  /* VLR_OK, or why this request failed */
    double score;       /* set when status is VLR_OK */
    char message[1024]; /* "" when status is VLR_OK, else the error message */
} vlr_batch_result;

/* Scores n requests (reqs and results hold n entries each) on this session, results[i] for reqs[i].
 * Consecutive requests that are the same but for their last turn, an assistant turn without images
 * (same earlier turns, texts, image references or bytes or pixels, options and base_dir: the
 * answers of a best-of-N or GRPO group, the two sides of a preference pair), run as a group: the
 * first as a request, its prompt and images once, the others as one batch of suffixes after the
 * prompt (in rounds of at most 256 requests, so memory stays bounded); other requests sharing a
 * prefix with the one before reuse it, as with single calls. A failed request does not stop the
 * others; a cancellation (vlr_session_set_cancel_flag) does: the requests under way (a group's batch
 * runs at once) and every later one get VLR_ERR_INTERRUPTED. Returns VLR_OK when every request
 * scored, else the status of the first failure; statuses, scores and messages are those of n
 * separate vlr_score calls, bit for bit. */
VLR_API vlr_status vlr_score_batch(vlr_session *s, const vlr_request *reqs, size_t n, vlr_batch_result *results);

/* Number of tokens of the last request this session scored (after image placeholder expansion),
 * and how many of them were reused: consecutive requests that share a prefix (same system turn,
 * images and question; different answers) compute that prefix and its images once, and with a
 * prefix cache (vlr_session_set_cache) so do requests whose prefix was scored earlier by any
 * session on the cache. Scores are bit-identical with and without reuse. */
VLR_API size_t vlr_session_last_n_tokens(const vlr_session *s);
VLR_API size_t vlr_session_last_reused_tokens(const vlr_session *s);

/* Cancellation: while flag is set (NULL clears it), a score call on this session checks *flag
 * between vision-tower blocks, between decoder layers and between decoder chunks of 512 tokens;
 * a non-zero value stops the call with VLR_ERR_INTERRUPTED and the message "interrupted". The
 * session stays usable: the next call gives the same score as a fresh session would (no partial
 * work is reused). The flag is typically written by another thread (a signal handler, a host's
 * timeout); the caller clears it before scoring again, and keeps it alive while it is set. */
VLR_API vlr_status vlr_session_set_cancel_flag(vlr_session *s, const volatile int *flag);

/* Reuse across requests, sessions and threads: a vlr_cache holds
 *   - a vision cache: vision-tower outputs of preprocessed images (same pixels and grid), LRU within
 *     vision_bytes; an image is keyed by two SipHash digests of its pixels under secret keys drawn
 *     from getrandom when the cache is made (one finds the entry, the other confirms it), so no input
 *     can be crafted to fetch another image's rows;
 *   - a prefix cache: the K/V rows of scored sequences in blocks of 16 tokens, keyed by the tokens
 *     and images before and in each block, LRU within prefix_bytes (at the 7B shapes a token's rows
 *     take 112 KiB: 28 layers x K and V x 4 heads x 128 floats); a request restores the longest
 *     cached prefix (never its last token, which carries the score) and runs only the rest, so
 *     prompts that come back after other traffic keep their reuse.
 * Scores are bit-identical with and without either. A cache belongs to one model and is
 * thread-safe: any number of sessions on any threads may share it (a mutex guards it; only copies
 * run under it). Free it after the sessions that use it. A budget of 0 turns that part off. */
typedef struct vlr_cache vlr_cache;
VLR_API vlr_status vlr_cache_new(const vlr_model *m, size_t vision_bytes, size_t prefix_bytes, vlr_cache **out);
VLR_API void vlr_cache_free(vlr_cache *c); /* NULL is a no-op */

typedef struct vlr_cache_stats {
    uint64_t vision_hits, vision_misses; /* images looked up */
    uint64_t vision_rejected;  /* lookups whose first digest matched an entry but the second did not */
    uint64_t vision_entries, vision_bytes;
    uint64_t prefix_hits;      /* requests that restored K/V rows from the prefix cache */
    uint64_t prefix_misses;    /* requests that found nothing there beyond their session's own reuse */
    uint64_t prefix_blocks, prefix_bytes, prefix_evictions;
    uint64_t tokens;           /* tokens of the requests scored with this cache */
    uint64_t reused_tokens;    /* of which the K/V came from the cache or the session's previous request */
} vlr_cache_stats;
VLR_API void vlr_cache_get_stats(const vlr_cache *c, vlr_cache_stats *out); /* NULL: all zero */

/* Makes the session use cache (NULL: none), which must be of the session's model
 * (VLR_ERR_INPUT otherwise) and outlive its use. Replaces a private cache of
 * vlr_session_set_vision_cache. */
VLR_API vlr_status vlr_session_set_cache(vlr_session *s, vlr_cache *cache);

/* A private cache for this session: a vision cache of at most max_bytes and no prefix cache
 * (0 = none, the default). It replaces any cache the session had. */
VLR_API vlr_status vlr_session_set_vision_cache(vlr_session *s, size_t max_bytes);
/* Vision hits and misses of the session's cache (of every session sharing it); 0 without one. */
VLR_API void vlr_session_vision_cache_stats(const vlr_session *s, uint64_t *hits, uint64_t *misses);

#ifdef __cplusplus
}
#endif
#endif
