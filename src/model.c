/* model.c: the public API's orchestration. Loading puts together the config, the mmap'd weights, the
 * tokenizer and the kernel table; a session owns everything one request needs at a time (KV cache,
 * scratch, tokenizer cache, the last error). vlr_prepare turns a request into model inputs (template,
 * images, ids, positions) and vlr_score runs the vision tower per image, the decoder over the
 * sequence and the value head at the last token. The math itself lives in vision.c and text.c. */
#include "model.h"
#include "quantize.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cache.h"
#include "chat.h"
#include "digest.h"
#include "forward.h"
#include "json.h"
#include "request.h"
#include "rope.h"
#include "text.h"
#include "trace.h"
#include "vision.h"
#include "vision_cache.h"

struct vlr_session {
    const vlr_model *model;
    vlr_err err;
    vlr_exec exec;          /* the model's table and threads, this session's workspace, cancel
                             * flag and trace: what vision.c and text.c run on */
    vlr_workspace *workspace; /* kernel scratch, grown to the largest call and reused */
    vlr_workspace *activations; /* the vision tower's arena, grown to the largest image and reused */
    vlr_tok_cache *tok_cache;
    vlr_text_state *text;   /* KV cache + decoder scratch, grown to the longest request seen */
    float *last_hidden;     /* [hidden_size] */
    vlr_trace *trace;       /* optional, set by vlr_session_set_trace (exec.trace follows it) */
    vlr_cache *cache;       /* optional: vlr_session_set_cache (shared) or set_vision_cache (own_cache) */
    vlr_cache *own_cache;   /* the private cache of vlr_session_set_vision_cache, freed with the session */
    vlr_digest_key secret;  /* keys the image digests of the session's own reuse when it has no cache */
    size_t last_n_tokens;   /* tokens of the last scored request */
    size_t last_reused;     /* of which were reused (previous request or prefix cache) */
    uint64_t suffix_answers; /* answers scored as suffixes of a batch, since the session was made */
    int32_t *prev_ids;      /* [prev_n] ids whose K/V the text state holds (prefix reuse) */
    size_t prev_n;
    vlr_vision_key *prev_keys; /* [prev_n_images] content keys of their images */
    size_t prev_n_images;
};

const char *vlr_version(void) { return VLR_VERSION; }

vlr_params vlr_default_params(void) {
    vlr_params p;
    memset(&p, 0, sizeof p);
    p.precision = VLR_PRECISION_AUTO;
    return p;
}

/* Reads the chat template the model ships (chat_template.json, else tokenizer_config.json) and
 * records whether it is the Qwen2-VL one we render. A missing template is not an error: transformers
 * would fail, but the checkpoint family is known, so we render Qwen2-VL's and say so. */
static void check_chat_template(vlr_model *m) {
    const char *files[] = {"chat_template.json", "tokenizer_config.json"};
    m->template_known = true;
    for (size_t i = 0; i < 2; i++) {
        char *path = vlr_path_join(m->dir, files[i]);
        if (!path) return;
        vlr_json_doc *doc = NULL;
        vlr_err e = {0};
        if (vlr_file_exists(path) && vlr_json_parse_file(path, 64u << 20, &doc, &e) == VLR_OK) {
            const vlr_json *t = vlr_json_get(vlr_json_root(doc), "chat_template");
            if (vlr_json_is(t, VLR_JSON_STRING)) {
                m->template_known = vlr_chat_template_is_known(t->str, t->len);
                if (!m->template_known)
                    snprintf(m->template_warning, sizeof m->template_warning,
                             "warning: %s: the chat template differs from Qwen2-VL's; vlreward renders "
                             "the Qwen2-VL template", files[i]);
                vlr_json_free(doc);
                free(path);
                return;
            }
        }
        vlr_json_free(doc);
        free(path);
    }
}

vlr_status vlr_model_load(const char *model_dir, const vlr_params *params, vlr_model **out,
                          char *err, size_t err_cap) {
    vlr_err e = {0};
    vlr_status rc = VLR_OK;
    char *tok_path = NULL;
    *out = NULL;
    vlr_model *m = vlr_calloc(1, sizeof *m, &e);
    if (!m) goto done;
    m->params = params ? *params : vlr_default_params();
    if (!vlr_precision_name(m->params.precision)) {
        rc = vlr_fail(&e, VLR_ERR_CONFIG, "params.precision: %d is not a vlr_precision", (int)m->params.precision);
        goto done;
    }
    m->dir = strdup(model_dir);
    if (!m->dir) {
        rc = vlr_fail(&e, VLR_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = vlr_config_load(model_dir, &m->cfg, &e))) goto done;
    if ((rc = vlr_weights_load(model_dir, &m->cfg, &m->weights, &e))) goto done;
    tok_path = vlr_path_join(model_dir, "tokenizer.json");
    if (!tok_path) {
        rc = vlr_fail(&e, VLR_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = vlr_tok_load(tok_path, &m->tokenizer, &e))) goto done;
    if (vlr_tok_vocab_size(m->tokenizer) > (size_t)m->cfg.text.vocab_size) {
        rc = vlr_fail(&e, VLR_ERR_CONFIG, "%s: tokenizer has %zu ids but the model's vocab_size is %d",
                      model_dir, vlr_tok_vocab_size(m->tokenizer), m->cfg.text.vocab_size);
        goto done;
    }
    check_chat_template(m);
    vlr_precision precision = m->params.precision;
    m->precision_reason = "requested";
    if (precision == VLR_PRECISION_AUTO) precision = vlr_precision_for_cpu(&m->precision_reason);
    vlr_kernels_select(&m->kernels, VLR_ISA_AUTO, precision);
    m->n_threads = m->params.n_threads > 0 ? m->params.n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (m->n_threads < 1) m->n_threads = 1;
    snprintf(m->kernels_name, sizeof m->kernels_name, "%s", m->kernels.isa);
    if (precision == VLR_PRECISION_INT8) {
        snprintf(m->kernels_name, sizeof m->kernels_name, "%s, int8 %s", m->kernels.isa, m->kernels.isa_i8);
        if (m->params.int8_cache)
            rc = vlr_weights_int8_cached(&m->weights, &m->cfg, m->dir, m->n_threads, true, m->int8_cache_note,
                                         sizeof m->int8_cache_note, &e);
        else
            rc = vlr_weights_quantize_int8(&m->weights, &m->cfg, m->n_threads, true, &e);
        if (rc) goto done;
    }
    m->max_tokens = m->cfg.text.max_position_embeddings;
    if (m->params.max_tokens > 0 && m->params.max_tokens < m->max_tokens) m->max_tokens = m->params.max_tokens;
done:
    free(tok_path);
    if (rc != VLR_OK) {
        vlr_err_copy(&e, err, err_cap);
        vlr_model_free(m);
        return rc;
    }
    if (!m) {
        vlr_err_copy(&e, err, err_cap);
        return VLR_ERR_NOMEM;
    }
    *out = m;
    return VLR_OK;
}

void vlr_model_free(vlr_model *m) {
    if (!m) return;
    vlr_tok_free(m->tokenizer);
    vlr_weights_free(&m->weights);
    free(m->dir);
    free(m);
}

void vlr_model_get_info(const vlr_model *m, vlr_model_info *info) {
    memset(info, 0, sizeof *info);
    const vlr_text_config *t = &m->cfg.text;
    const vlr_vision_config *v = &m->cfg.vision;
    info->text_hidden_size = t->hidden_size;
    info->text_intermediate_size = t->intermediate_size;
    info->text_layers = t->num_layers;
    info->text_heads = t->num_heads;
    info->text_kv_heads = t->num_kv_heads;
    info->text_head_dim = t->head_dim;
    info->vocab_size = t->vocab_size;
    info->max_position_embeddings = t->max_position_embeddings;
    info->rms_norm_eps = t->rms_norm_eps;
    info->rope_theta = t->rope_theta;
    memcpy(info->mrope_section, t->mrope_section, sizeof info->mrope_section);
    info->vision_depth = v->depth;
    info->vision_hidden_size = v->hidden_size;
    info->vision_heads = v->num_heads;
    info->vision_intermediate_size = v->intermediate_size;
    info->vision_out_hidden_size = v->out_hidden_size;
    info->patch_size = v->patch_size;
    info->spatial_merge_size = v->spatial_merge_size;
    info->temporal_patch_size = v->temporal_patch_size;
    info->window_size = v->window_size;
    info->n_fullatt_block_indexes = v->n_fullatt;
    memcpy(info->fullatt_block_indexes, v->fullatt_block_indexes, sizeof(int) * (size_t)v->n_fullatt);
    info->parameters = m->weights.parameters;
    info->bytes = m->weights.bytes;
    info->dtype = m->weights.dtype;
    info->config_layout = m->cfg.nested ? "nested" : "flat";
    info->n_shards = m->weights.n_shards;
    info->kernels = m->kernels_name;
    info->precision = vlr_precision_name(m->kernels.precision);
    info->float_precision = vlr_precision_name(m->kernels.float_precision);
    info->int8_layers = m->kernels.precision == VLR_PRECISION_INT8 ? vlr_int8_layers() : NULL;
    info->int8_bytes = m->weights.qweight_bytes;
    info->int8_cache = m->int8_cache_note[0] ? m->int8_cache_note : NULL;
    info->precision_reason = m->precision_reason;
}

/* ---- sessions ------------------------------------------------------------------------------ */

vlr_status vlr_session_init(const vlr_model *m, vlr_session **out) {
    *out = NULL;
    vlr_session *s = calloc(1, sizeof *s);
    if (!s) return VLR_ERR_NOMEM;
    s->model = m;
    s->tok_cache = vlr_tok_cache_new(1 << 16);
    s->last_hidden = calloc((size_t)m->cfg.text.hidden_size, sizeof(float));
    s->workspace = vlr_workspace_new(0);
    s->activations = vlr_workspace_new(0);
    s->exec = (vlr_exec){.k = &m->kernels, .n_threads = m->n_threads, .ws = s->workspace,
                         .acts = s->activations};
    if (!s->tok_cache || !s->last_hidden || !s->workspace || !s->activations) {
        vlr_session_free(s);
        return VLR_ERR_NOMEM;
    }
    if (vlr_digest_key_random(&s->secret, &s->err) != VLR_OK) {
        vlr_session_free(s);
        return VLR_ERR_IO;
    }
    *out = s;
    return VLR_OK;
}

void vlr_session_free(vlr_session *s) {
    if (!s) return;
    vlr_tok_cache_free(s->tok_cache);
    vlr_text_state_free(s->text);
    vlr_workspace_free(s->workspace);
    vlr_workspace_free(s->activations);
    vlr_cache_free(s->own_cache);
    free(s->prev_ids);
    free(s->prev_keys);
    free(s->last_hidden);
    free(s);
}

const char *vlr_session_errmsg(const vlr_session *s) { return s ? s->err.msg : ""; }
const vlr_err *vlr_session_err(const vlr_session *s) { return &s->err; }
const float *vlr_session_last_hidden(const vlr_session *s) { return s->last_hidden; }
void vlr_session_set_trace(vlr_session *s, vlr_trace *trace) {
    s->trace = trace;
    s->exec.trace = trace;
}
const vlr_workspace *vlr_session_workspace(const vlr_session *s) { return s->workspace; }

vlr_status vlr_session_set_cancel_flag(vlr_session *s, const volatile int *flag) {
    if (!s) return VLR_ERR_INPUT;
    s->exec.cancel = flag;
    return VLR_OK;
}
size_t vlr_session_last_n_tokens(const vlr_session *s) { return s ? s->last_n_tokens : 0; }
size_t vlr_session_last_reused_tokens(const vlr_session *s) { return s ? s->last_reused : 0; }
uint64_t vlr_session_suffix_answers(const vlr_session *s) { return s->suffix_answers; }

vlr_status vlr_session_set_cache(vlr_session *s, vlr_cache *cache) {
    if (!s) return VLR_ERR_INPUT;
    if (cache && vlr_cache_model(cache) != s->model)
        return vlr_fail(&s->err, VLR_ERR_INPUT, "vlr_session_set_cache: the cache belongs to another model");
    if (cache != s->own_cache) {
        vlr_cache_free(s->own_cache);
        s->own_cache = NULL;
    }
    s->cache = cache;
    s->prev_n = 0; /* its image keys were made under the previous digest key */
    return VLR_OK;
}

vlr_status vlr_session_set_vision_cache(vlr_session *s, size_t max_bytes) {
    if (!s) return VLR_ERR_INPUT;
    vlr_cache *own = NULL;
    vlr_status rc = max_bytes ? vlr_cache_new(s->model, max_bytes, 0, &own) : VLR_OK;
    if (rc) return vlr_fail(&s->err, rc, "vision cache: %s", vlr_status_str(rc));
    vlr_session_set_cache(s, own);
    s->own_cache = own;
    return VLR_OK;
}

void vlr_session_vision_cache_stats(const vlr_session *s, uint64_t *hits, uint64_t *misses) {
    vlr_cache_stats st;
    vlr_cache_get_stats(s ? s->cache : NULL, &st);
    *hits = st.vision_hits;
    *misses = st.vision_misses;
}

uint64_t vlr_plan_request_bytes(const vlr_config *cfg, uint64_t weight_bytes, size_t n_tokens,
                                const vlr_grid_thw *images, size_t n_images) {
    const uint64_t D = (uint64_t)cfg->text.hidden_size;
    uint64_t vision_rows = 0, vision_scratch = 0;
    for (size_t i = 0; i < n_images; i++) {
        vision_rows += vlr_vision_n_tokens(cfg, images[i]);
        uint64_t b = vlr_vision_scratch_bytes(cfg, images[i]);
        if (b > vision_scratch) vision_scratch = b;
    }
    return weight_bytes + vlr_text_kv_bytes(cfg, n_tokens) + vlr_text_scratch_bytes(cfg, 0) +
           n_tokens * D * sizeof(float) + vision_rows * D * sizeof(float) + vision_scratch;
}

/* ---- preparation --------------------------------------------------------------------------- */

void vlr_prepared_free(vlr_prepared *p) {
    if (!p) return;
    vlr_buf_free(&p->prompt);
    free(p->ids.data);
    for (size_t i = 0; i < p->n_images; i++) vlr_prepared_image_free(&p->images[i]);
    free(p->images);
    free(p->positions);
    memset(p, 0, sizeof *p);
}

static vlr_image_limits image_limits(const vlr_model *m) {
    const vlr_params *p = &m->params;
    vlr_image_limits lim = {.max_pixels = p->max_image_pixels,
                            .max_download_bytes = p->max_download_bytes,
                            .timeout_s = p->download_timeout_s,
                            .n_threads = m->n_threads};
    return lim;
}

/* Replaces each <|image_pad|> id by t*h*w/merge^2 copies, image by image. */
static vlr_status expand_image_pads(const vlr_ids *in, const vlr_prepared *p, int32_t pad, int merge,
                                    vlr_ids *out, vlr_err *e) {
    size_t next_image = 0;
    for (size_t i = 0; i < in->len; i++) {
        if (in->data[i] != pad) {
            if (!vlr_ids_push(out, in->data[i])) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
            continue;
        }
        if (next_image >= p->n_images)
            return vlr_fail(e, VLR_ERR_INPUT,
                            "the text contains more <|image_pad|> tokens than there are images (%zu)",
                            p->n_images);
        const vlr_prepared_image *img = &p->images[next_image++];
        size_t copies = img->n_patches / (size_t)(merge * merge);
        for (size_t c = 0; c < copies; c++)
            if (!vlr_ids_push(out, pad)) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    }
    if (next_image != p->n_images)
        return vlr_fail(e, VLR_ERR_INPUT, "%zu images but %zu <|image_pad|> tokens", p->n_images, next_image);
    return VLR_OK;
}

/* An image given in memory: encoded bytes are decoded as a file's would be, pixels are copied into a
 * packed RGB8 image; then the same chain as vlr_image_prepare from the RGB image on. */
static vlr_status prepare_memory_image(const vlr_content_item *it, const vlr_image_opts *opts,
                                       const vlr_preproc_config *pp, const vlr_image_limits *lim,
                                       vlr_prepared_image *out, vlr_err *e) {
    vlr_image img = {0};
    vlr_image_file_info info = {0};
    vlr_status rc;
    uint64_t cap = lim->max_pixels ? lim->max_pixels : VLR_IMAGE_DEFAULT_MAX_PIXELS;
    if (it->kind == VLR_ITEM_IMAGE_BYTES) {
        rc = vlr_image_decode(it->image_bytes, it->image_len, "image bytes", lim, &img, &info, e);
    } else {
        if ((uint64_t)it->width * (uint64_t)it->height > cap)
            return vlr_fail(e, VLR_ERR_LIMIT, "image pixels: %dx%d is more than the limit of %llu pixels", it->width,
                            it->height, (unsigned long long)cap);
        size_t row = (size_t)it->width * 3, stride = it->stride ? it->stride : row;
        img.width = it->width;
        img.height = it->height;
        img.rgb = vlr_malloc(row * (size_t)it->height, e);
        if (!img.rgb) return VLR_ERR_NOMEM;
        for (int y = 0; y < it->height; y++) memcpy(img.rgb + (size_t)y * row, it->pixels + (size_t)y * stride, row);
        info = (vlr_image_file_info){.format = "RAW", .mode = "RGB", .width = it->width, .height = it->height};
        rc = VLR_OK;
    }
    if (rc == VLR_OK && (rc = vlr_image_prepare_rgb(&img, opts, pp, out, e)) == VLR_OK) out->file = info;
    vlr_image_free(&img);
    return rc;
}

/* The rest of vlr_prepare once out's prompt is rendered and its images prepared: tokens, placeholder
 * expansion, M-RoPE positions. */
static vlr_status prepare_tokens(vlr_session *s, vlr_prepared *out) {
    const vlr_model *m = s->model;
    vlr_err *e = &s->err;
    vlr_ids raw = {0};
    vlr_grid_thw *grids = NULL;
    vlr_status rc = VLR_OK;
    /* A text longer than max_tokens of the longest tokens cannot fit: refuse it before BPE, whose
     * working memory grows with the longest word (a hostile 64 MB "word" would need gigabytes). */
    size_t longest = vlr_tok_max_token_bytes(m->tokenizer);
    if (longest && out->prompt.len / longest > (size_t)m->max_tokens) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "the text is %zu bytes, more than %d tokens can hold "
                      "(--max-tokens / max_position_embeddings)", out->prompt.len, m->max_tokens);
        goto done;
    }
    /* Tokens: the template's added tokens are matched on the raw text, so expanding each
     * <|image_pad|> after tokenizing gives the ids of the expanded text. */
    if ((rc = vlr_tok_encode(m->tokenizer, s->tok_cache, out->prompt.data, out->prompt.len, &raw, e))) goto done;
    int merge = m->cfg.vision.spatial_merge_size;
    if ((rc = expand_image_pads(&raw, out, m->cfg.tokens.image_pad, merge, &out->ids, e))) goto done;
    if (out->ids.len > (size_t)m->max_tokens) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "the request is %zu tokens long, more than the limit of %d "
                      "(--max-tokens / max_position_embeddings)", out->ids.len, m->max_tokens);
        goto done;
    }

    /* Multimodal RoPE positions. */
    grids = vlr_calloc(out->n_images ? out->n_images : 1, sizeof *grids, e);
    out->positions = vlr_calloc(3 * (out->ids.len ? out->ids.len : 1), sizeof(int32_t), e);
    if (!grids || !out->positions) { rc = VLR_ERR_NOMEM; goto done; }
    for (size_t i = 0; i < out->n_images; i++)
        grids[i] = (vlr_grid_thw){out->images[i].grid_t, out->images[i].grid_h, out->images[i].grid_w};
    int64_t delta = 0;
    rc = vlr_rope_positions(out->ids.data, out->ids.len, m->cfg.tokens.image_pad, grids, out->n_images,
                            merge, out->positions, &delta, e);
    out->rope_delta = (int)delta;
done:
    free(raw.data);
    free(grids);
    return rc;
}

vlr_status vlr_prepare(vlr_session *s, const vlr_request *req, vlr_prepared *out) {
    const vlr_model *m = s->model;
    vlr_err *e = &s->err;
    vlr_status rc;
    memset(out, 0, sizeof *out);
    e->msg[0] = '\0';

    size_t n_images = 0;
    if ((rc = vlr_request_validate(req, e))) goto done;
    if ((rc = vlr_chat_render(req, &out->prompt, &n_images, e))) goto done;

    /* Images, in order of appearance. */
    if (n_images) {
        out->images = vlr_calloc(n_images, sizeof *out->images, e);
        if (!out->images) { rc = VLR_ERR_NOMEM; goto done; }
    }
    /* the image code's parallel loops run on the model's thread count (lim.n_threads), never on
     * the caller's OpenMP settings, which stay as they are (a Python host has its own) */
    vlr_image_limits lim = image_limits(m);
    uint64_t image_tokens = 0; /* the images' placeholders so far: each next image is checked against the
                                  rest of max_tokens from its header, before it is decoded */
    for (size_t i = 0; i < req->n_messages; i++) {
        const vlr_message *msg = &req->messages[i];
        for (size_t j = 0; j < msg->n_items; j++) {
            const vlr_content_item *it = &msg->items[j];
            if (it->kind == VLR_ITEM_TEXT) continue;
            vlr_image_opts opts = {.min_pixels = it->min_pixels, .max_pixels = it->max_pixels,
                                   .resized_height = it->resized_height, .resized_width = it->resized_width};
            if (image_tokens >= (uint64_t)m->max_tokens) {
                rc = vlr_fail(e, VLR_ERR_LIMIT, "image %zu: the images before it take all %d tokens of the limit "
                              "(--max-tokens / max_position_embeddings)", out->n_images + 1, m->max_tokens);
                break;
            }
            lim.max_tokens = (uint64_t)m->max_tokens - image_tokens;
            if (it->kind == VLR_ITEM_IMAGE)
                rc = vlr_image_prepare(it->image, req->base_dir, &opts, &m->cfg.preproc, &lim,
                                       &out->images[out->n_images], e);
            else
                rc = prepare_memory_image(it, &opts, &m->cfg.preproc, &lim, &out->images[out->n_images], e);
            if (rc) {
                vlr_err_prefix(e, "image %zu: ", out->n_images + 1);
                break;
            }
            image_tokens += out->images[out->n_images].n_patches / (uint64_t)m->cfg.vision.spatial_merge_size /
                            (uint64_t)m->cfg.vision.spatial_merge_size;
            out->n_images++;
        }
        if (rc) break;
    }
    if (rc) goto done;

    rc = prepare_tokens(s, out);
done:
    if (rc) {
        if (!e->msg[0]) vlr_fail(e, rc, "%s", vlr_status_str(rc));
        e->code = rc;
    }
    return rc;
}

/* ---- scoring ------------------------------------------------------------------------------- */

/* Reuse policy. Two sources, the longer wins:
 *  - the session's own KV cache: it remembers the ids and image keys of the sequence it holds, and a
 *    request that starts with the same tokens and images (the answers of a group, the two sides of a
 *    preference pair) keeps that part of it;
 *  - the prefix cache of the session's vlr_cache (cache.h): whole 16-token blocks of any sequence
 *    scored before by any session on it, copied into this session's KV cache.
 * Then the vision tower runs only for images with placeholders after the reused prefix (each looked
 * up in the vision cache first), and the decoder only from the first token not reused. Every kernel
 * computes a row independently of the others, and attention visits keys in fixed blocks from
 * position 0 whatever the query chunking, so the score is bit-identical to a run from an empty cache
 * (tests/test_score.c and tests/test_cache.c check it). */
static size_t session_prefix(const vlr_session *s, const vlr_prepared *p, const vlr_vision_key *keys,
                             const size_t *image_start) {
    size_t n = p->ids.len, common = 0, limit = n < s->prev_n ? n : s->prev_n;
    limit = limit < vlr_text_n_cached(s->text) ? limit : vlr_text_n_cached(s->text);
    while (common < limit && p->ids.data[common] == s->prev_ids[common]) common++;
    /* Same placeholder ids do not mean the same image: stop at the first image that differs. */
    for (size_t i = 0; i < p->n_images; i++) {
        if (image_start[i] >= common) break;
        bool same = i < s->prev_n_images && vlr_vision_key_equal(&keys[i], &s->prev_keys[i]);
        if (!same) {
            common = image_start[i];
            break;
        }
    }
    return common < n ? common : n - 1; /* the last token always runs: it carries the score */
}

static vlr_status remember_sequence(vlr_session *s, const vlr_prepared *p, const vlr_vision_key *keys) {
    int32_t *ids = realloc(s->prev_ids, (p->ids.len ? p->ids.len : 1) * sizeof *ids);
    if (!ids) return VLR_ERR_NOMEM;
    s->prev_ids = ids;
    vlr_vision_key *k = realloc(s->prev_keys, (p->n_images ? p->n_images : 1) * sizeof *k);
    if (!k) return VLR_ERR_NOMEM;
    s->prev_keys = k;
    memcpy(s->prev_ids, p->ids.data, p->ids.len * sizeof *ids);
    if (p->n_images) memcpy(s->prev_keys, keys, p->n_images * sizeof *k);
    s->prev_n = p->ids.len;
    s->prev_n_images = p->n_images;
    return VLR_OK;
}

/* A score that is not finite is never a result: JSON has no NaN, and a NaN would sort as anything.
 * The same message whether the sequence ran alone or as a suffix of a batch. */
static vlr_status fail_not_finite(vlr_err *e, double score, size_t n_tokens) {
    return vlr_fail(e, VLR_ERR_NUMERIC,
                    "the score is not finite (%s): the model computed a non-finite value over %zu tokens; "
                    "check the weights and preprocessor_config.json (image_mean, image_std, rescale_factor)",
                    isnan(score) ? "NaN" : score > 0 ? "inf" : "-inf", n_tokens);
}

/* The reuse policy around vlr_forward: prefix (session, then prefix cache), vision cache, then the
 * forward from the first token not reused; on success the cache learns the sequence's blocks and
 * images. A traced request reuses nothing, so its trace has every stage. */
static vlr_status score_prepared(vlr_session *s, const vlr_prepared *p, double *out_score) {
    const vlr_model *m = s->model;
    const vlr_config *cfg = &m->cfg;
    vlr_err *e = &s->err;
    size_t D = (size_t)cfg->text.hidden_size, n = p->ids.len;
    float *vision = NULL;
    vlr_vision_key *keys = NULL;
    size_t *image_start = NULL, *image_rows = NULL;
    bool *have = NULL, *ran = NULL, *claimed = NULL;
    vlr_status rc = VLR_OK;
    if (n == 0) return vlr_fail(e, VLR_ERR_INPUT, "empty token sequence");
    if (!s->text && (rc = vlr_text_state_init(cfg, &m->weights.text, &s->exec, m->max_tokens, 0, &s->text, e)))
        return rc;
    vlr_cache *cache = s->trace ? NULL : s->cache;
    const vlr_digest_key *secret = s->cache ? vlr_cache_secret(s->cache) : &s->secret;

    /* Where each image's placeholder run starts, and its content key. */
    size_t n_img = p->n_images ? p->n_images : 1;
    keys = vlr_calloc(n_img, sizeof *keys, e);
    image_start = vlr_calloc(n_img, sizeof *image_start, e);
    image_rows = vlr_calloc(n_img, sizeof *image_rows, e);
    have = vlr_calloc(n_img, sizeof *have, e);
    ran = vlr_calloc(n_img, sizeof *ran, e);
    claimed = vlr_calloc(n_img, sizeof *claimed, e);
    if (!keys || !image_start || !image_rows || !have || !ran || !claimed) { rc = VLR_ERR_NOMEM; goto done; }
    size_t n_vision = 0, next = 0;
    for (size_t i = 0; i < p->n_images; i++) {
        const vlr_prepared_image *img = &p->images[i];
        vlr_grid_thw g = {img->grid_t, img->grid_h, img->grid_w};
        keys[i] = vlr_vision_key_of(secret, img->pixel_values, img->n_patches * img->patch_dim, g.t, g.h, g.w);
        image_rows[i] = vlr_vision_n_tokens(cfg, g);
        while (next < n && p->ids.data[next] != cfg->tokens.image_pad) next++;
        image_start[i] = next;
        next += image_rows[i];
        n_vision += image_rows[i];
    }
    const vlr_seq_view view = {p->ids.data, n, p->n_images, image_start, image_rows, keys};

    size_t start = s->trace ? 0 : session_prefix(s, p, keys, image_start);
    vlr_text_truncate(s->text, start);
    s->prev_n = 0; /* until this request completes, the cache holds nothing reusable */
    if (cache) start = vlr_cache_prefix_restore(cache, &view, n - 1, start, s->text);

    size_t bytes;
    if (n_vision) {
        if (!vlr_mul_ok(n_vision, D * sizeof(float), &bytes)) { rc = vlr_fail(e, VLR_ERR_LIMIT, "image too large"); goto done; }
        vision = vlr_malloc(bytes, e);
        if (!vision) { rc = VLR_ERR_NOMEM; goto done; }
    }
    bool holds_claims = false;
    for (size_t i = 0, row = 0; cache && i < p->n_images; row += image_rows[i], i++) {
        if (image_start[i] + image_rows[i] <= start) continue;
        vlr_vision_lookup look = vlr_cache_vision_lookup(cache, &keys[i], image_rows[i] * D, vision + row * D,
                                                         holds_claims, s->exec.cancel);
        have[i] = look == VLR_VISION_HIT;
        claimed[i] = look == VLR_VISION_CLAIMED;
        holds_claims = holds_claims || claimed[i];
    }

    const vlr_forward_seq seq = {.ids = p->ids.data, .positions = p->positions, .n = n, .start = start,
                                 .n_images = p->n_images, .images = p->images, .image_start = image_start,
                                 .image_rows = image_rows, .vision = vision, .have = have, .ran = ran};
    double score = 0.0;
    rc = vlr_forward(cfg, &m->weights, &s->exec, s->text, &seq, &score, NULL, e);
    for (size_t i = 0, row = 0; cache && i < p->n_images; row += image_rows[i], i++) {
        if (ran[i]) vlr_cache_vision_put(cache, &keys[i], vision + row * D, image_rows[i] * D);
        else if (claimed[i]) vlr_cache_vision_release(cache, &keys[i]);
    }
    if (rc) goto done;
    if (!isfinite(score)) {
        rc = fail_not_finite(e, score, n);
        goto done; /* prev_n stays 0: nothing of this request is reused */
    }
    *out_score = score;
    s->last_n_tokens = n;
    s->last_reused = start;
    memcpy(s->last_hidden, vlr_text_last_hidden(s->text), D * sizeof(float));
    if (cache) {
        vlr_cache_prefix_insert(cache, &view, s->text);
        vlr_cache_count_request(cache, n, start);
    }
    if (remember_sequence(s, p, keys)) s->prev_n = 0; /* no memory: just no reuse next time */
done:
    free(vision);
    free(keys);
    free(image_start);
    free(image_rows);
    free(have);
    free(ran);
    free(claimed);
    return rc;
}

vlr_status vlr_score(vlr_session *s, const vlr_request *req, double *score) {
    vlr_prepared p;
    vlr_status rc = vlr_prepare(s, req, &p);
    if (rc == VLR_OK) rc = score_prepared(s, &p, score);
    vlr_prepared_free(&p);
    if (rc) s->err.code = rc;
    return rc;
}

vlr_status vlr_score_json(vlr_session *s, const char *json, size_t len, const char *base_dir, double *score) {
    vlr_parsed_request r;
    vlr_status rc = vlr_request_parse(json, len, 0, base_dir, &r, &s->err);
    if (rc == VLR_OK) rc = vlr_score(s, &r.req, score);
    vlr_parsed_request_free(&r);
    return rc;
}

/* ---- groups and batches -------------------------------------------------------------------- */

/* A group is a list of answers, each a request of its own, that differ only in their last turn, the
 * assistant's, which holds no image: a group request's answers, or a run of consecutive requests of a
 * batch that ask the same. Its first answer (the lead) runs as a request (vision, prompt through the
 * caches); the others run as suffixes after the longest token prefix they share with it, which the
 * session's KV cache holds then, stacked into batched passes (vlr_forward_suffixes). */
typedef struct group_run {
    vlr_session *s;
    vlr_parsed_request *parsed; /* a group request (answer i: its answers[i] last), or NULL: */
    const vlr_request *reqs;    /* [n] a batch's requests */
    size_t n;
    vlr_batch_result *results;  /* [n]: each as vlr_score would have ended (status, score, message) */
    bool keep_going;            /* a batch: a failed answer does not stop the others; a group: it does */
    bool stopped;               /* by a cancellation, or by a failure of a group */
    size_t failed;              /* then: the answer that failed or was under way */
    uint64_t tokens;            /* tokens of the answers scored */
    uint64_t *answer_tokens;    /* [n] or NULL: each answer's (0 when it failed) */
} group_run;

/* Suffixes are prepared and run in rounds of at most this many answers and kept tokens (16 bytes
 * each: id and 3 positions), so a run of any length takes bounded memory. */
#define GROUP_ROUND_ANSWERS 256
#define GROUP_ROUND_TOKENS ((size_t)1 << 16)

static const vlr_request *group_answer(group_run *g, size_t i) {
    if (!g->parsed) return &g->reqs[i];
    vlr_parsed_request_answer(g->parsed, i);
    return &g->parsed->req;
}

/* Records answer i's outcome as vlr_score would report it; false when the group stops there. */
static bool settle(group_run *g, size_t i, vlr_status rc, double score, size_t n_tokens) {
    vlr_batch_result *r = &g->results[i];
    r->status = rc;
    r->score = rc ? 0 : score;
    r->message[0] = '\0';
    if (g->answer_tokens) g->answer_tokens[i] = rc ? 0 : n_tokens;
    if (rc == VLR_OK) {
        g->tokens += n_tokens;
        return true;
    }
    g->s->err.code = rc;
    snprintf(r->message, sizeof r->message, "%s", g->s->err.msg);
    if (rc != VLR_ERR_INTERRUPTED && g->keep_going) return true;
    g->stopped = true;
    g->failed = i;
    return false;
}

/* An answer after the lead, from token `from` on: the tokens before it are the lead's (its images end
 * there), so only the rest is kept, whatever the number of answers and the image size. */
typedef struct answer_tail {
    size_t index;  /* the answer's, in its group */
    int32_t *ids;  /* [n - from] */
    int32_t *pos;  /* [3][n - from] its M-RoPE positions */
    size_t n;      /* the whole sequence's tokens */
    size_t common; /* of which the first `common` are the lead's (< n: the last one always runs) */
} answer_tail;

/* Prepares req (the lead's messages with another answer last: no image of its own) on the images
 * the lead prepared (borrowed, not copied) and keeps its tail from `from`; common < from means that
 * it cannot be a suffix after the lead's images (the tail is then not kept). A failure has the
 * message vlr_prepare would give. */
static vlr_status prepare_answer_tail(vlr_session *s, const vlr_request *req, const vlr_prepared *first, size_t from,
                                      answer_tail *out) {
    vlr_err *e = &s->err;
    vlr_prepared q;
    size_t n_images = 0;
    memset(&q, 0, sizeof q);
    memset(out, 0, sizeof *out);
    e->msg[0] = '\0';
    vlr_status rc = vlr_request_validate(req, e);
    if (!rc) rc = vlr_chat_render(req, &q.prompt, &n_images, e);
    if (!rc && n_images != first->n_images)
        rc = vlr_fail(e, VLR_ERR_INTERNAL, "group: %zu images in an answer's request, %zu in the first's", n_images,
                      first->n_images);
    q.n_images = first->n_images;
    q.images = first->images;
    if (!rc) rc = prepare_tokens(s, &q);
    if (!rc && q.ids.len == 0) rc = vlr_fail(e, VLR_ERR_INPUT, "empty token sequence");
    q.n_images = 0; /* the images stay the lead's */
    q.images = NULL;
    if (!rc) {
        const size_t n = q.ids.len, limit = n - 1 < first->ids.len ? n - 1 : first->ids.len;
        out->n = n;
        while (out->common < limit && q.ids.data[out->common] == first->ids.data[out->common]) out->common++;
        if (out->common >= from) {
            out->ids = vlr_malloc((n - from) * sizeof *out->ids, e);
            out->pos = vlr_malloc(3 * (n - from) * sizeof *out->pos, e);
            if (!out->ids || !out->pos) rc = VLR_ERR_NOMEM;
            for (size_t c = 0; !rc && c < 3; c++)
                memcpy(out->pos + c * (n - from), q.positions + c * n + from, (n - from) * sizeof *out->pos);
            if (!rc) memcpy(out->ids, q.ids.data + from, (n - from) * sizeof *out->ids);
        }
    }
    if (rc) {
        if (!e->msg[0]) vlr_fail(e, rc, "%s", vlr_status_str(rc));
        free(out->ids);
        free(out->pos);
        out->ids = out->pos = NULL;
    }
    vlr_prepared_free(&q);
    return rc;
}

static void free_tails(answer_tail *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].ids);
        free(t[i].pos);
    }
}

/* The tails after the first `prompt` tokens, which the text state holds: stacked into windows of up
 * to a text chunk of rows, each window one vlr_forward_suffixes; each answer settled. */
static void score_suffixes(group_run *g, const answer_tail *rest, size_t n_rest, size_t from, size_t prompt) {
    vlr_session *s = g->s;
    const vlr_model *m = s->model;
    vlr_err *e = &s->err;
    const size_t skip = prompt - from; /* of each tail */
    size_t max_rows = 0;
    for (size_t i = 0; i < n_rest; i++)
        if (rest[i].n - prompt > max_rows) max_rows = rest[i].n - prompt;
    const size_t window = max_rows > VLR_TEXT_DEFAULT_CHUNK ? max_rows : VLR_TEXT_DEFAULT_CHUNK;
    int32_t *ids = vlr_malloc(window * sizeof *ids, e), *pos = vlr_malloc(3 * window * sizeof *pos, e);
    size_t *len = vlr_malloc(n_rest * sizeof *len, e);
    double *scores = vlr_malloc(n_rest * sizeof *scores, e);
    const vlr_status alloc = ids && pos && len && scores ? VLR_OK : VLR_ERR_NOMEM;
    for (size_t i = 0; i < n_rest && !g->stopped;) {
        size_t end = i, rows = 0; /* the window: answers [i, end), `rows` stacked rows */
        while (!alloc && end < n_rest && rest[end].n - prompt <= window - rows) {
            const size_t tail = rest[end].n - from;
            len[end] = rest[end].n - prompt;
            memcpy(ids + rows, rest[end].ids + skip, len[end] * sizeof *ids);
            for (size_t c = 0; c < 3; c++)
                memcpy(pos + c * window + rows, rest[end].pos + c * tail + skip, len[end] * sizeof *pos);
            rows += len[end++];
        }
        vlr_status rc = alloc ? alloc
                              : vlr_forward_suffixes(&m->cfg, &m->weights, s->text, ids, pos, window, len + i, end - i,
                                                     scores + i, NULL, e);
        if (rc) { /* the whole window failed: each of its answers (a batch's) with that message */
            for (end = alloc ? n_rest : end; i < end && settle(g, rest[i].index, rc, 0, 0);) i++;
            continue;
        }
        for (; i < end; i++) {
            const vlr_status v = isfinite(scores[i]) ? VLR_OK : fail_not_finite(e, scores[i], rest[i].n);
            if (!settle(g, rest[i].index, v, scores[i], rest[i].n)) break;
            if (v) continue;
            s->suffix_answers++;
            if (s->cache) vlr_cache_count_request(s->cache, rest[i].n, prompt);
            s->last_n_tokens = rest[i].n;
            s->last_reused = prompt;
        }
        memcpy(s->last_hidden, vlr_text_last_hidden(s->text), (size_t)m->cfg.text.hidden_size * sizeof(float));
    }
    free(ids);
    free(pos);
    free(len);
    free(scores);
}

/* Answers [lead, end) of g: the lead as a request of its own, the others as suffixes after it, in
 * rounds. Returns where the caller goes on: `end`; the answer after a lead that failed (it leads
 * next); or an answer that cannot be a suffix after the lead's images (never seen: its tokens would
 * differ inside them), which leads the next run. Afterwards the session holds and remembers the
 * prompt the suffixes ran after. */
static size_t score_from(group_run *g, size_t lead, size_t end) {
    vlr_session *s = g->s;
    vlr_prepared first;
    double score = 0;
    vlr_status rc = vlr_prepare(s, group_answer(g, lead), &first);
    if (!rc) rc = score_prepared(s, &first, &score);
    settle(g, lead, rc, score, first.ids.len);
    const size_t cap = end - lead - 1 < GROUP_ROUND_ANSWERS ? end - lead - 1 : GROUP_ROUND_ANSWERS;
    answer_tail *tails = rc || !cap ? NULL : vlr_calloc(cap, sizeof *tails, &s->err);
    size_t next = lead + 1; /* without memory for the tails, the next answer leads: one by one */
    size_t prompt = first.ids.len, from = 0; /* the lead's image placeholders end before `from` */
    for (size_t i = 0; i < first.ids.len; i++)
        if (first.ids.data[i] == s->model->cfg.tokens.image_pad) from = i + 1;
    bool more = tails != NULL;
    while (more && next < end && !g->stopped) {
        size_t k = 0, kept = 0;
        for (; next < end && k < cap && kept < GROUP_ROUND_TOKENS && !g->stopped; next++) {
            answer_tail *t = &tails[k];
            if ((rc = prepare_answer_tail(s, group_answer(g, next), &first, from, t))) {
                settle(g, next, rc, 0, 0);
                continue;
            }
            if (t->common < from) {
                more = false;
                break;
            }
            t->index = next;
            kept += t->n - from;
            if (t->common < prompt) prompt = t->common;
            k++;
        }
        if (k && !g->stopped) {
            vlr_text_truncate(s->text, prompt);
            if (s->prev_n > prompt) s->prev_n = prompt; /* the session remembers the prompt it still holds */
            score_suffixes(g, tails, k, from, prompt);
        }
        free_tails(tails, k);
    }
    free(tails);
    vlr_prepared_free(&first);
    return next;
}

/* Scores answers [begin, end) of g: batched, or each as a request of its own. */
static void score_answers_range(group_run *g, size_t begin, size_t end, bool batched) {
    for (size_t i = begin; i < end && !g->stopped;) i = score_from(g, i, batched ? end : i + 1);
}

/* A cancellation stops the answer under way and every later one. */
static void interrupt_rest(group_run *g) {
    if (!g->stopped || g->results[g->failed].status != VLR_ERR_INTERRUPTED) return;
    for (size_t i = g->failed; i < g->n; i++) {
        g->results[i].status = VLR_ERR_INTERRUPTED;
        g->results[i].score = 0;
        snprintf(g->results[i].message, sizeof g->results[i].message, "interrupted");
    }
}

static bool answer_has_image(const vlr_message *a) {
    for (size_t k = 0; k < a->n_items; k++)
        if (a->items[k].kind != VLR_ITEM_TEXT) return true;
    return false;
}

vlr_status vlr_score_answers(vlr_session *s, vlr_parsed_request *r, double *scores, uint64_t *tokens,
                             size_t *failed) {
    const size_t n = r->n_answers ? r->n_answers : 1;
    bool batched = n > 1 && !s->trace;
    for (size_t i = 0; batched && i < n; i++) batched = !answer_has_image(&r->answers[i]);
    *tokens = 0;
    *failed = 0;
    group_run g = {.s = s, .parsed = r, .n = n, .results = vlr_malloc(n * sizeof *g.results, &s->err)};
    if (!g.results) return s->err.code = VLR_ERR_NOMEM;
    score_answers_range(&g, 0, n, batched);
    vlr_parsed_request_answer(r, 0);
    const vlr_status rc = g.stopped ? g.results[g.failed].status : VLR_OK;
    for (size_t i = 0; !rc && i < n; i++) scores[i] = g.results[i].score;
    *tokens = g.tokens;
    *failed = g.failed;
    free(g.results);
    return rc;
}

/* Whether two requests of a batch are the same but for their last turn (run detection). Images
 * compare by what they are given as: the same reference, the same bytes, the same pixels. */
static bool same_bytes(const void *a, const void *b, size_t n) { return n == 0 || a == b || memcmp(a, b, n) == 0; }

static bool same_item(const vlr_content_item *a, const vlr_content_item *b) {
    if (a->kind != b->kind || a->min_pixels != b->min_pixels || a->max_pixels != b->max_pixels ||
        a->resized_height != b->resized_height || a->resized_width != b->resized_width)
        return false;
    switch (a->kind) {
    case VLR_ITEM_TEXT: return a->text_len == b->text_len && same_bytes(a->text, b->text, a->text_len);
    case VLR_ITEM_IMAGE: return strcmp(a->image, b->image) == 0;
    case VLR_ITEM_IMAGE_BYTES: return a->image_len == b->image_len && same_bytes(a->image_bytes, b->image_bytes, a->image_len);
    case VLR_ITEM_IMAGE_PIXELS: {
        if (a->width != b->width || a->height != b->height) return false;
        const size_t row = (size_t)a->width * 3, sa = a->stride ? a->stride : row, sb = b->stride ? b->stride : row;
        for (size_t y = 0; y < (size_t)a->height; y++)
            if (!same_bytes(a->pixels + y * sa, b->pixels + y * sb, row)) return false;
        return true;
    }
    }
    return false;
}

static bool same_message(const vlr_message *a, const vlr_message *b) {
    if (strcmp(a->role, b->role) != 0 || a->n_items != b->n_items) return false;
    for (size_t i = 0; i < a->n_items; i++)
        if (!same_item(&a->items[i], &b->items[i])) return false;
    return true;
}

/* A request that can be in a run: valid (so the comparisons read only what it declares) and its
 * answer without an image. */
static bool batchable(const vlr_request *r) {
    vlr_err e;
    return vlr_request_validate(r, &e) == VLR_OK && !answer_has_image(&r->messages[r->n_messages - 1]);
}

static bool same_prompt(const vlr_request *a, const vlr_request *b) {
    if (a->n_messages != b->n_messages || (a->base_dir == NULL) != (b->base_dir == NULL) ||
        (a->base_dir && strcmp(a->base_dir, b->base_dir) != 0))
        return false;
    for (size_t i = 0; i + 1 < a->n_messages; i++)
        if (!same_message(&a->messages[i], &b->messages[i])) return false;
    return true;
}

/* FNV-1a, 64 bits, over what same_prompt compares: a digest to find candidates, never to decide. */
static uint64_t fnv(uint64_t h, const void *data, size_t n) {
    const unsigned char *b = data;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t fnv_str(uint64_t h, const char *s) { return s ? fnv(h, s, strlen(s) + 1) : fnv(h, "", 1); }

uint64_t vlr_request_prompt_digest(const vlr_request *r) {
    if (r->n_messages < 2 || answer_has_image(&r->messages[r->n_messages - 1])) return 0;
    uint64_t h = fnv_str(0xcbf29ce484222325ull, r->base_dir);
    for (size_t m = 0; m + 1 < r->n_messages; m++) {
        const vlr_message *msg = &r->messages[m];
        h = fnv_str(h, msg->role);
        h = fnv(h, &msg->n_items, sizeof msg->n_items);
        for (size_t i = 0; i < msg->n_items; i++) {
            const vlr_content_item *it = &msg->items[i];
            const int64_t sizes[4] = {it->min_pixels, it->max_pixels, it->resized_height, it->resized_width};
            h = fnv(h, &it->kind, sizeof it->kind);
            h = fnv(h, sizes, sizeof sizes);
            if (it->kind == VLR_ITEM_TEXT) h = fnv(h, it->text, it->text_len);
            else if (it->kind == VLR_ITEM_IMAGE) h = fnv_str(h, it->image);
            else if (it->kind == VLR_ITEM_IMAGE_BYTES) h = fnv(h, it->image_bytes, it->image_len);
            else h = fnv(h, &it->width, sizeof it->width); /* pixels: their size only (same_prompt compares them) */
        }
    }
    return h ? h : 1;
}

/* The end of the run of requests that starts at i: i + 1 when reqs[i] runs alone. */
static size_t run_end(const vlr_session *s, const vlr_request *reqs, size_t i, size_t n) {
    if (s->trace || !batchable(&reqs[i])) return i + 1;
    size_t j = i + 1;
    while (j < n && batchable(&reqs[j]) && same_prompt(&reqs[i], &reqs[j])) j++;
    return j;
}

vlr_status vlr_score_batch(vlr_session *s, const vlr_request *reqs, size_t n, vlr_batch_result *results) {
    return vlr_score_requests(s, reqs, n, results, NULL);
}

vlr_status vlr_score_requests(vlr_session *s, const vlr_request *reqs, size_t n, vlr_batch_result *results,
                              uint64_t *tokens) {
    if (n && (!reqs || !results))
        return vlr_fail(&s->err, VLR_ERR_INPUT, "vlr_score_batch: %zu requests but reqs or results is NULL", n);
    group_run g = {.s = s, .reqs = reqs, .n = n, .results = results, .keep_going = true, .answer_tokens = tokens};
    for (size_t i = 0; tokens && i < n; i++) tokens[i] = 0;
    for (size_t i = 0, j; i < n && !g.stopped; i = j) {
        j = run_end(s, reqs, i, n);
        score_answers_range(&g, i, j, j - i > 1);
    }
    interrupt_rest(&g);
    for (size_t i = 0; i < n; i++)
        if (results[i].status) return results[i].status;
    return VLR_OK;
}
