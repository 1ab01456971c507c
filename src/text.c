/* text.c: the Qwen2 decoder of Qwen2.5-VL (transformers Qwen2_5_VLTextModel) run as a chunked
 * prefill against an fp32 KV cache, then the final RMSNorm and the value head at the last token.
 *
 * Per layer: x += o_proj(attn(input_norm(x))); x += down(silu(gate(h)) * up(h)), h = post_norm(x);
 * q/k/v have biases, o_proj and the MLP none; M-RoPE tables come from rope.c; attention is causal
 * grouped-query attention with the chunk's queries at positions n_cached.. of the cache. The residual
 * adds are fused into the o_proj / down_proj matmuls (gemm accumulate).
 *
 * Only the last token's final norm and value are computed (that is the score: trl's value head read
 * at index seq_len - 1); the LM head is never used. A group's answers after a shared prompt run as
 * one batch (vlr_text_prefill_suffixes): text_layer with segments. Not here: tokenization, image
 * scatter positions (rope.c), the vision tower (vision.c). */
#include "text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "rope.h"

struct vlr_text_state {
    const vlr_config *cfg;
    const vlr_text_weights *w;
    const vlr_exec *exec; /* table, threads, workspace, cancel flag, trace */
    const vlr_kernels *k; /* exec->k */
    int d, f, heads, kv_heads, hd, layers; /* D, F, H, KVH, hd, L */
    size_t max_tokens, chunk;
    float eps;
    float **k_cache, **v_cache; /* [L] pointers to [cap, KVH*hd], rows in token order, post-RoPE k */
    size_t cap, n_cached;
    float *x;             /* [chunk, D] residual stream of the chunk */
    float *xn;            /* [chunk, D] normed x */
    float *q;             /* [chunk, H*hd] */
    float *att;           /* [chunk, H*hd] attention output */
    float *gate, *up;     /* [chunk, F] */
    float *cos_tab, *sin_tab; /* [chunk, hd] */
    float *last_hidden;   /* [D] final-normed hidden state of the last token */
    float *k_pass, *v_pass; /* [chunk, KVH*hd] each: a suffix pass's k/v rows (allocated by its first) */
};

/* chunk scratch: x, xn [chunk, D]; q, att [chunk, H*hd]; gate, up [chunk, F]; cos, sin [chunk, hd] */
size_t vlr_text_scratch_bytes(const vlr_config *cfg, int chunk) {
    const vlr_text_config *tc = &cfg->text;
    size_t rows = (size_t)(chunk > 0 ? chunk : VLR_TEXT_DEFAULT_CHUNK), total;
    size_t per_row = 2 * (size_t)tc->hidden_size + 2 * (size_t)tc->num_heads * tc->head_dim +
                     2 * (size_t)tc->intermediate_size + 2 * (size_t)tc->head_dim;
    if (!vlr_mul_ok(per_row, rows, &total) || !vlr_mul_ok(total, sizeof(float), &total)) return 0;
    return total;
}

size_t vlr_text_kv_bytes(const vlr_config *cfg, size_t n_tokens) {
    const vlr_text_config *tc = &cfg->text;
    return 2 * (size_t)tc->num_layers * n_tokens * (size_t)tc->num_kv_heads * tc->head_dim * sizeof(float);
}

void vlr_text_state_free(vlr_text_state *st) {
    if (!st) return;
    for (int l = 0; st->k_cache && l < st->layers; l++) free(st->k_cache[l]);
    for (int l = 0; st->v_cache && l < st->layers; l++) free(st->v_cache[l]);
    free(st->k_cache);
    free(st->v_cache);
    free(st->x);
    free(st->last_hidden);
    free(st->k_pass);
    free(st);
}

vlr_status vlr_text_state_init(const vlr_config *cfg, const vlr_text_weights *w, const vlr_exec *x,
                               int max_tokens, int chunk, vlr_text_state **out, vlr_err *e) {
    const vlr_text_config *tc = &cfg->text;
    vlr_status rc = VLR_OK;
    *out = NULL;
    if (tc->hidden_size <= 0 || tc->num_heads <= 0 || tc->num_kv_heads <= 0 ||
        tc->num_heads % tc->num_kv_heads || tc->head_dim <= 0 || tc->head_dim % 2 ||
        tc->num_layers <= 0 || tc->intermediate_size <= 0 ||
        tc->mrope_section[0] + tc->mrope_section[1] + tc->mrope_section[2] != tc->head_dim / 2)
        return vlr_fail(e, VLR_ERR_CONFIG,
                        "text: inconsistent dimensions (hidden %d, heads %d/%d, head_dim %d, "
                        "mrope_section %d+%d+%d)",
                        tc->hidden_size, tc->num_heads, tc->num_kv_heads, tc->head_dim,
                        tc->mrope_section[0], tc->mrope_section[1], tc->mrope_section[2]);
    vlr_text_state *st = vlr_calloc(1, sizeof *st, e);
    if (!st) return VLR_ERR_NOMEM;
    st->cfg = cfg;
    st->w = w;
    st->exec = x;
    st->k = x->k;
    st->d = tc->hidden_size;
    st->f = tc->intermediate_size;
    st->heads = tc->num_heads;
    st->kv_heads = tc->num_kv_heads;
    st->hd = tc->head_dim;
    st->layers = tc->num_layers;
    st->eps = (float)tc->rms_norm_eps;
    st->max_tokens = (size_t)(max_tokens > 0 ? max_tokens : tc->max_position_embeddings);
    if (st->max_tokens == 0 || st->max_tokens > INT32_MAX) st->max_tokens = INT32_MAX;
    st->chunk = (size_t)(chunk > 0 ? chunk : VLR_TEXT_DEFAULT_CHUNK);

    const size_t qd = (size_t)st->heads * st->hd;
    size_t total = vlr_text_scratch_bytes(cfg, (int)st->chunk);
    if (!total) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "text: chunk of %zu tokens is too large", st->chunk);
        goto done;
    }
    st->x = vlr_malloc(total, e);
    st->last_hidden = vlr_calloc((size_t)st->d, sizeof(float), e);
    st->k_cache = vlr_calloc((size_t)st->layers, sizeof(float *), e);
    st->v_cache = vlr_calloc((size_t)st->layers, sizeof(float *), e);
    if (!st->x || !st->last_hidden || !st->k_cache || !st->v_cache) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    st->xn = st->x + st->chunk * st->d;
    st->q = st->xn + st->chunk * st->d;
    st->att = st->q + st->chunk * qd;
    st->gate = st->att + st->chunk * qd;
    st->up = st->gate + st->chunk * st->f;
    st->cos_tab = st->up + st->chunk * st->f;
    st->sin_tab = st->cos_tab + st->chunk * st->hd;
    *out = st;
    st = NULL;
done:
    vlr_text_state_free(st);
    return rc;
}

size_t vlr_text_n_cached(const vlr_text_state *st) { return st->n_cached; }

void vlr_text_truncate(vlr_text_state *st, size_t n_keep) {
    if (n_keep < st->n_cached) st->n_cached = n_keep;
}

const float *vlr_text_last_hidden(const vlr_text_state *st) { return st->last_hidden; }

vlr_status vlr_text_embed(const vlr_config *cfg, const vlr_text_weights *w, const int32_t *ids,
                          size_t n, const float *vision, size_t n_vision, float *out, vlr_err *e) {
    const size_t D = (size_t)cfg->text.hidden_size;
    const int64_t vocab = w->embed.shape[0];
    const int32_t image_pad = cfg->tokens.image_pad;
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        float *row = out + i * D;
        if (ids[i] == image_pad && used < n_vision) {
            memcpy(row, vision + used * D, D * sizeof(float));
            used++;
        } else if (ids[i] == image_pad) {
            return vlr_fail(e, VLR_ERR_INPUT, "text embed: more image_pad tokens than the %zu "
                            "vision rows", n_vision);
        } else if (ids[i] < 0 || ids[i] >= vocab) {
            return vlr_fail(e, VLR_ERR_INPUT, "text embed: token %zu has id %d outside the "
                            "vocabulary (%lld)", i, (int)ids[i], (long long)vocab);
        } else {
            for (size_t j = 0; j < D; j++)
                row[j] = vlr_dtype_load(w->embed.data, w->embed.dtype, (size_t)ids[i] * D + j);
        }
    }
    if (used != n_vision)
        return vlr_fail(e, VLR_ERR_INPUT, "text embed: %zu image_pad tokens for %zu vision rows",
                        used, n_vision);
    return VLR_OK;
}

/* The product y [m, n] (=|+=) x [m, k] · wᵀ (+ b), n = w.shape[0], k = w.shape[1]; run by
 * vlr_exec_linears, alone or with others of the same x. */
static vlr_gemm_args product(float *y, size_t ldy, const float *x, size_t ldx, int m, const vlr_tensor *w,
                             const vlr_tensor *b, bool accumulate) {
    return (vlr_gemm_args){.y = y, .ldy = ldy, .x = x, .ldx = ldx, .w = w->data, .w_dtype = w->dtype,
                           .bias = b ? b->data : NULL, .bias_dtype = b ? b->dtype : VLR_DT_F32,
                           .m = m, .n = (int)w->shape[0], .k = (int)w->shape[1],
                           .accumulate = accumulate, .wq = w->q};
}

static void linear(const vlr_text_state *st, float *y, size_t ldy, const float *x, size_t ldx,
                   int m, const vlr_tensor *w, const vlr_tensor *b, bool accumulate) {
    const vlr_gemm_args a = product(y, ldy, x, ldx, m, w, b, accumulate);
    vlr_exec_linears(st->exec, &a, 1);
}

/* The layer's attention for n_q queries (rows of st->q from q0) at cache positions n0.., whose K/V
 * rows the cache holds there: each query attends causally to every cached row up to its own. */
static void layer_attention(const vlr_text_state *st, const float *kc, const float *vc, size_t q0, int n_q,
                            int n0) {
    const int QD = st->heads * st->hd, KV = st->kv_heads * st->hd;
    vlr_attention_args a = {.out = st->att + q0 * QD, .ld_out = QD, .q = st->q + q0 * QD, .ld_q = QD,
                            .k = kc, .v = vc, .ld_kv = KV, .n_q = n_q, .n_kv = n0 + n_q,
                            .n_heads = st->heads, .n_kv_heads = st->kv_heads, .head_dim = st->hd,
                            .causal_offset = n0, .scale = 1.0f / sqrtf((float)st->hd)};
    st->k->attention(&a, st->exec);                                          /* att [n_q, H*hd] */
}

/* One decoder layer (Qwen2_5_VLDecoderLayer) on the chunk's m rows of x. With seg == NULL its k/v
 * rows are written into the cache at n_cached.. and the m queries attend as one sequence there (a
 * prefill chunk); else they are n_seg suffixes of seg[j] rows each, whose k/v rows go to the pass
 * scratch, and each suffix in turn is copied to n_cached.. of the cache and attends to the cached
 * prefix and to itself only, exactly as it would alone. */
static void text_layer(const vlr_text_state *st, const vlr_text_layer_weights *l, float *kc,
                       float *vc, int m, const size_t *seg, size_t n_seg) {
    const int D = st->d, F = st->f, QD = st->heads * st->hd, KV = st->kv_heads * st->hd;
    const int n0 = (int)st->n_cached;
    float *k_new = seg ? st->k_pass : kc + (size_t)n0 * KV, *v_new = seg ? st->v_pass : vc + (size_t)n0 * KV;
    st->k->rmsnorm(st->xn, st->x, m, D, l->input_norm.data, l->input_norm.dtype, st->eps); /* [m, D] */
    const vlr_gemm_args qkv[3] = {product(st->q, QD, st->xn, D, m, &l->q_w, &l->q_b, false), /* q [m, H*hd] */
                                  product(k_new, KV, st->xn, D, m, &l->k_w, &l->k_b, false), /* k [m, KVH*hd] */
                                  product(v_new, KV, st->xn, D, m, &l->v_w, &l->v_b, false)}; /* v [m, KVH*hd] */
    vlr_exec_linears(st->exec, qkv, 3);
    st->k->rope(st->q, QD, m, st->heads, st->hd, st->cos_tab, st->sin_tab);
    st->k->rope(k_new, KV, m, st->kv_heads, st->hd, st->cos_tab, st->sin_tab);
    if (!seg) layer_attention(st, kc, vc, 0, m, n0);
    for (size_t j = 0, first = 0; seg && j < n_seg; first += seg[j], j++) {
        memcpy(kc + (size_t)n0 * KV, k_new + first * KV, seg[j] * KV * sizeof(float));
        memcpy(vc + (size_t)n0 * KV, v_new + first * KV, seg[j] * KV * sizeof(float));
        layer_attention(st, kc, vc, first, (int)seg[j], n0);
    }
    linear(st, st->x, D, st->att, QD, m, &l->o_w, NULL, true);             /* x += o_proj */
    st->k->rmsnorm(st->xn, st->x, m, D, l->post_norm.data, l->post_norm.dtype, st->eps);
    const vlr_gemm_args gate_up[2] = {product(st->gate, F, st->xn, D, m, &l->gate_w, NULL, false), /* [m, F] */
                                      product(st->up, F, st->xn, D, m, &l->up_w, NULL, false)};    /* [m, F] */
    vlr_exec_linears(st->exec, gate_up, 2);
    st->k->silu_mul(st->gate, st->up, (size_t)m * F);
    linear(st, st->x, D, st->gate, F, m, &l->down_w, NULL, true);          /* x += down */
}

/* Grows every layer's K and V cache to hold `need` tokens (at least doubling, capped at max). */
static vlr_status cache_reserve(vlr_text_state *st, size_t need, vlr_err *e) {
    if (need <= st->cap) return VLR_OK;
    size_t cap = st->cap ? 2 * st->cap : st->chunk;
    if (cap < need) cap = need;
    if (cap > st->max_tokens) cap = st->max_tokens;
    const size_t kv = (size_t)st->kv_heads * st->hd;
    size_t bytes;
    if (!vlr_mul_ok(cap, kv * sizeof(float), &bytes))
        return vlr_fail(e, VLR_ERR_LIMIT, "text: KV cache of %zu tokens is too large", cap);
    for (int l = 0; l < st->layers; l++) {
        float *k = realloc(st->k_cache[l], bytes);
        if (!k) goto oom;
        st->k_cache[l] = k;
        float *v = realloc(st->v_cache[l], bytes);
        if (!v) goto oom;
        st->v_cache[l] = v;
    }
    st->cap = cap;
    return VLR_OK;
oom:
    /* the layers already grown keep working at the old capacity */
    return vlr_fail(e, VLR_ERR_NOMEM, "text: out of memory for a KV cache of %zu tokens", cap);
}

size_t vlr_text_kv_row_floats(const vlr_config *cfg) {
    return vlr_text_kv_bytes(cfg, 1) / sizeof(float);
}

void vlr_text_kv_read(const vlr_text_state *st, size_t first, size_t n, float *dst) {
    const size_t kv = (size_t)st->kv_heads * st->hd, block = n * kv;
    for (int l = 0; l < st->layers; l++) {
        memcpy(dst + (2 * (size_t)l) * block, st->k_cache[l] + first * kv, block * sizeof(float));
        memcpy(dst + (2 * (size_t)l + 1) * block, st->v_cache[l] + first * kv, block * sizeof(float));
    }
}

vlr_status vlr_text_kv_write(vlr_text_state *st, size_t first, size_t n, const float *src, vlr_err *e) {
    if (first > st->n_cached || n > st->max_tokens - first)
        return vlr_fail(e, VLR_ERR_INTERNAL, "text: KV rows %zu..%zu written with %zu cached", first, first + n,
                        st->n_cached);
    vlr_status rc = cache_reserve(st, first + n, e);
    if (rc) return rc;
    const size_t kv = (size_t)st->kv_heads * st->hd, block = n * kv;
    for (int l = 0; l < st->layers; l++) {
        memcpy(st->k_cache[l] + first * kv, src + (2 * (size_t)l) * block, block * sizeof(float));
        memcpy(st->v_cache[l] + first * kv, src + (2 * (size_t)l + 1) * block, block * sizeof(float));
    }
    st->n_cached = first + n;
    return VLR_OK;
}

/* The value head at last_hidden, in double: one dot product, so the extra precision is free. */
static double value_head(const vlr_text_state *st) {
    const vlr_text_weights *w = st->w;
    double value = vlr_dtype_load(w->value_b.data, w->value_b.dtype, 0);
    for (size_t j = 0; j < (size_t)st->d; j++)
        value += (double)vlr_dtype_load(w->value_w.data, w->value_w.dtype, j) * st->last_hidden[j];
    return value;
}

vlr_status vlr_text_prefill(vlr_text_state *st, const float *embeds, const int32_t *pos,
                            size_t ld_pos, size_t n, double *score, vlr_err *e) {
    const vlr_text_weights *w = st->w;
    vlr_trace *trace = st->exec->trace;
    const size_t D = (size_t)st->d;
    if (n == 0) return vlr_fail(e, VLR_ERR_INPUT, "text: no tokens to run");
    if (n > st->max_tokens - st->n_cached)
        return vlr_fail(e, VLR_ERR_LIMIT, "text: %zu cached + %zu new tokens exceed the limit of "
                        "%zu", st->n_cached, n, st->max_tokens);
    vlr_status rc = cache_reserve(st, st->n_cached + n, e);
    if (rc) return rc;
    char name[VLR_TRACE_NAME_CAP];
    for (size_t c0 = 0; c0 < n; c0 += st->chunk) {
        const int m = (int)(n - c0 < st->chunk ? n - c0 : st->chunk);
        memcpy(st->x, embeds + c0 * D, (size_t)m * D * sizeof(float));            /* x [m, D] */
        vlr_trace_tensor(trace, "text.inputs_embeds", st->x, m, D, D);
        vlr_rope_text_tables(pos + c0, ld_pos, (size_t)m, st->hd, st->cfg->text.rope_theta,
                             st->cfg->text.mrope_section, st->cos_tab, st->sin_tab);
        for (int l = 0; l < st->layers; l++) {
            /* before each layer (so before each chunk too): the chunk's K/V rows past n_cached
             * are not counted until its last layer has run */
            if (vlr_exec_cancelled(st->exec)) return vlr_fail(e, VLR_ERR_INTERRUPTED, "interrupted");
            text_layer(st, &w->layers[l], st->k_cache[l], st->v_cache[l], m, NULL, 0);
            if (trace) snprintf(name, sizeof name, "text.layers.%d", l);
            vlr_trace_tensor(trace, name, st->x, m, D, D);
        }
        if (trace) {
            st->k->rmsnorm(st->xn, st->x, m, (int)D, w->final_norm.data, w->final_norm.dtype,
                           st->eps);
            vlr_trace_tensor(trace, "text.final_norm", st->xn, m, D, D);
        }
        st->n_cached += (size_t)m;
        if (c0 + (size_t)m == n) /* the score reads only the last token */
            st->k->rmsnorm(st->last_hidden, st->x + (size_t)(m - 1) * D, 1, (int)D,
                           w->final_norm.data, w->final_norm.dtype, st->eps);
    }
    const double value = value_head(st);
    vlr_trace_set_score(trace, value);
    if (score) *score = value;
    return VLR_OK;
}

vlr_status vlr_text_prefill_suffixes(vlr_text_state *st, const float *embeds, const int32_t *pos, size_t ld_pos,
                                     const size_t *len, size_t n_suffixes, double *scores, vlr_err *e) {
    const vlr_text_weights *w = st->w;
    const size_t D = (size_t)st->d, prefix = st->n_cached, room = st->max_tokens - prefix;
    const size_t limit = st->chunk, kv = (size_t)st->kv_heads * st->hd; /* rows of one pass */
    if (n_suffixes == 0) return vlr_fail(e, VLR_ERR_INPUT, "text: no suffixes to run");
    for (size_t j = 0; j < n_suffixes; j++) {
        if (len[j] == 0) return vlr_fail(e, VLR_ERR_INPUT, "text: suffix %zu has no tokens", j);
        if (len[j] > room)
            return vlr_fail(e, VLR_ERR_LIMIT, "text: %zu cached + %zu new tokens exceed the limit of %zu", prefix,
                            len[j], st->max_tokens);
    }
    if (!st->k_pass) {
        st->k_pass = vlr_malloc(2 * limit * kv * sizeof(float), e);
        if (!st->k_pass) return VLR_ERR_NOMEM;
        st->v_pass = st->k_pass + limit * kv;
    }
    size_t row = 0; /* of embeds and pos: the first of suffix j */
    for (size_t j = 0; j < n_suffixes;) {
        vlr_status rc;
        if (len[j] > limit) { /* too long to share a pass: the chunked prefill, then back to the prefix */
            rc = vlr_text_prefill(st, embeds + row * D, pos + row, ld_pos, len[j], &scores[j], e);
            vlr_text_truncate(st, prefix);
            if (rc) return rc;
            row += len[j++];
            continue;
        }
        size_t end = j, m = 0, longest = 0; /* the pass: suffixes [j, end), m rows */
        for (; end < n_suffixes && len[end] <= limit - m; m += len[end++]) longest = len[end] > longest ? len[end] : longest;
        if ((rc = cache_reserve(st, prefix + longest, e))) return rc;
        memcpy(st->x, embeds + row * D, m * D * sizeof(float));                   /* x [m, D] */
        vlr_rope_text_tables(pos + row, ld_pos, m, st->hd, st->cfg->text.rope_theta, st->cfg->text.mrope_section,
                             st->cos_tab, st->sin_tab);
        for (int l = 0; l < st->layers; l++) {
            if (vlr_exec_cancelled(st->exec)) return vlr_fail(e, VLR_ERR_INTERRUPTED, "interrupted");
            text_layer(st, &w->layers[l], st->k_cache[l], st->v_cache[l], (int)m, len + j, end - j);
        }
        for (size_t last = 0; j < end; j++) { /* the score reads each suffix's last row */
            last += len[j];
            st->k->rmsnorm(st->last_hidden, st->x + (last - 1) * D, 1, (int)D, w->final_norm.data,
                           w->final_norm.dtype, st->eps);
            scores[j] = value_head(st);
        }
        row += m;
    }
    return VLR_OK;
}
