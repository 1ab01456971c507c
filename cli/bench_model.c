/* bench_model.c: builds a Qwen2.5-VL model's weights in memory from a counter-based random generator
 * (no files) (see bench_model.h).
 *
 * The generator: element i of the tensor with tag T takes 16 bits of splitmix64(key + (i/4)·γ) with
 * key = splitmix64(seed ^ splitmix64(T)), γ the golden-ratio increment (Steele, Lea, Flood, "Fast
 * splittable pseudorandom number generators", OOPSLA 2014: splitmix64's finaliser). The 16 bits are
 * mapped to a uniform value of the wanted mean and std and rounded to bf16. Being a function of the
 * index, any slice (one embedding row, one thread's share) is filled independently. Which tensors,
 * their shapes and kinds (matrix, bias, norm...) come from the manifest in weights.c.
 *
 * Not here: loading real checkpoints (weights.c), the forward passes, timing (cli/cmd_bench.c), FLOP
 * counts (cli/bench_flops.c). */
#include "bench_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define GOLDEN 0x9E3779B97F4A7C15ull
#define PAR_MIN ((size_t)1 << 16) /* elements below which a fill stays on one thread */

#define STD_BIAS 0.02f
#define STD_NORM (0.05f / 1.7320508f) /* uniform in 1 +- 0.05 */
#define STD_EMBED 0.02f

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t tensor_key(uint64_t seed, uint64_t tag) { return mix64(seed ^ mix64(tag + GOLDEN)); }

/* Tags: part in the top 16 bits (a weight's vlr_tensor_group, or PART_USER), layer / block index in
 * the middle, the weight's slot in its group in the low 16 bits. */
enum { PART_USER = VLR_TG_VALUE + 1 };
static uint64_t make_tag(int part, int index, int field) {
    return ((uint64_t)part << 48) | ((uint64_t)(uint32_t)index << 16) | (uint64_t)field;
}

/* Uniform in mean +- std·sqrt(3): the 16-bit lane u maps to (u + 0.5 - 32768) / 32768 of the range. */
typedef struct dist {
    float mean, scale; /* scale = std·sqrt(3) / 32768 */
} dist;
static dist make_dist(float mean, float std) { return (dist){mean, std * 1.7320508f / 32768.0f}; }

static inline float lane_value(uint64_t h, unsigned lane, dist d) {
    const unsigned u = (unsigned)(h >> (16 * lane)) & 0xffffu;
    return d.mean + ((float)u - 32767.5f) * d.scale;
}

static inline float elem_value(uint64_t key, size_t idx, dist d) {
    return lane_value(mix64(key + (uint64_t)(idx >> 2) * GOLDEN), (unsigned)(idx & 3), d);
}

/* dst[i] = value of element first + i, for i < n; bf16 or f32 output. Large bf16 fills map the 16
 * random bits through a table of the 65536 possible values (the same values, computed once). */
static void fill_values(void *dst, bool bf16, size_t n, size_t first, uint64_t key, dist d,
                        int n_threads) {
    uint16_t *o16 = dst;
    float *o32 = dst;
    uint16_t *table = bf16 && n >= PAR_MIN ? malloc(65536 * sizeof *table) : NULL;
    if (table)
        for (unsigned u = 0; u < 65536; u++) table[u] = vlr_f32_to_bf16(lane_value(u, 0, d));
    size_t i = 0;
    /* head up to a multiple of 4 of the global index, then whole words, then the tail */
    for (; i < n && ((first + i) & 3); i++) {
        const float v = elem_value(key, first + i, d);
        if (bf16) o16[i] = vlr_f32_to_bf16(v);
        else o32[i] = v;
    }
    const size_t head = i, n_words = (n - head) / 4, w0 = (first + head) / 4;
    const int nt = n_threads > 1 && n >= PAR_MIN ? n_threads : 1;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (size_t wi = 0; wi < n_words; wi++) {
        const uint64_t h = mix64(key + (uint64_t)(w0 + wi) * GOLDEN);
        const size_t at = head + 4 * wi;
        if (table) {
            o16[at] = table[h & 0xffffu];
            o16[at + 1] = table[(h >> 16) & 0xffffu];
            o16[at + 2] = table[(h >> 32) & 0xffffu];
            o16[at + 3] = table[h >> 48];
            continue;
        }
        for (unsigned lane = 0; lane < 4; lane++) {
            const float v = lane_value(h, lane, d);
            if (bf16) o16[at + lane] = vlr_f32_to_bf16(v);
            else o32[at + lane] = v;
        }
    }
    for (i = head + 4 * n_words; i < n; i++) {
        const float v = elem_value(key, first + i, d);
        if (bf16) o16[i] = vlr_f32_to_bf16(v);
        else o32[i] = v;
    }
    free(table);
}

void vlr_bench_random_ids(uint64_t seed, size_t n, int32_t vocab, int32_t avoid, int32_t *ids) {
    /* below Qwen2's first special token (<|endoftext|> 151643): ordinary text */
    const uint64_t range = (uint64_t)(vocab < 151643 ? vocab : 151643);
    const uint64_t key = tensor_key(seed, make_tag(PART_USER, 1, 0));
    for (size_t i = 0; i < n; i++) {
        int32_t id = range ? (int32_t)(mix64(key + (uint64_t)i * GOLDEN) % range) : 0;
        ids[i] = id == avoid ? 0 : id;
    }
}

void vlr_bench_fill_f32(float *x, size_t n, uint64_t seed, uint64_t tag, float mean, float std,
                        int n_threads) {
    fill_values(x, false, n, 0, tensor_key(seed, make_tag(PART_USER, 0, 0) ^ tag),
                make_dist(mean, std), n_threads);
}

/* ---- building ------------------------------------------------------------------------------ */

static vlr_status track(vlr_bench_model *m, void *p, vlr_err *e) {
    if (m->n_allocs == m->cap_allocs) {
        const size_t cap = m->cap_allocs ? 2 * m->cap_allocs : 64;
        void **a = realloc(m->allocs, cap * sizeof *a);
        if (!a) {
            free(p);
            return vlr_fail(e, VLR_ERR_NOMEM, "bench model: out of memory");
        }
        m->allocs = a;
        m->cap_allocs = cap;
    }
    m->allocs[m->n_allocs++] = p;
    return VLR_OK;
}

/* The distribution of a tensor of the given kind (fan_in: its elements per output row). */
static dist kind_dist(vlr_tensor_kind kind, int64_t fan_in) {
    switch (kind) {
    case VLR_TK_MATRIX: return make_dist(0.0f, (float)(1.0 / sqrt((double)fan_in)));
    case VLR_TK_BIAS: return make_dist(0.0f, STD_BIAS);
    case VLR_TK_NORM: return make_dist(1.0f, STD_NORM);
    case VLR_TK_EMBED: return make_dist(0.0f, STD_EMBED);
    case VLR_TK_ZERO: break;
    }
    return make_dist(0.0f, 0.0f);
}

/* The visitor of vlr_weights_walk: allocates the bf16 tensor r->t (shape set by the walk) and fills
 * it; the embedding table only when asked (else zeroed, filled later row by row). */
static vlr_status build_tensor(void *ctx, const vlr_tensor_ref *r, vlr_err *e) {
    vlr_bench_model *m = ctx;
    vlr_tensor *t = r->t;
    size_t numel = 1, bytes;
    bool ok = true;
    for (int i = 0; i < t->ndim; i++) ok = ok && t->shape[i] > 0 && vlr_mul_ok(numel, (size_t)t->shape[i], &numel);
    if (!ok || !vlr_mul_ok(numel, sizeof(uint16_t), &bytes))
        return vlr_fail(e, VLR_ERR_CONFIG, "bench model: %s: invalid or too large shape", r->name);
    const bool fill = r->desc->kind != VLR_TK_EMBED || m->embed_filled;
    t->dtype = VLR_DT_BF16;
    m->w.parameters += numel;
    m->w.bytes += bytes;
    if (fill) m->filled_bytes += bytes;
    if (m->count_only) return VLR_OK; /* vlr_bench_model_count: sizes only */
    /* calloc for the lazily filled table: fresh mmap'd pages are zero and stay unmapped until used */
    void *p = fill ? malloc(bytes) : calloc(numel, sizeof(uint16_t));
    if (!p) return vlr_fail(e, VLR_ERR_NOMEM, "bench model: %s: cannot allocate %zu bytes", r->name, bytes);
    vlr_status rc = track(m, p, e);
    if (rc) return rc;
    if (fill) {
        const uint64_t tag = make_tag((int)r->desc->group, r->layer, r->slot);
        const dist d = kind_dist(r->desc->kind, (int64_t)numel / t->shape[0]);
        fill_values(p, true, numel, 0, tensor_key(m->seed, tag), d, m->n_threads);
    }
    t->data = p;
    return VLR_OK;
}

static vlr_status build(const vlr_config *cfg, uint64_t seed, bool fill_embed, int n_threads,
                        bool count_only, vlr_bench_model *m, vlr_err *e) {
    vlr_status rc = VLR_OK;
    memset(m, 0, sizeof *m);
    m->count_only = count_only;
    m->cfg = *cfg;
    m->seed = seed;
    m->n_threads = n_threads > 0 ? n_threads : 1;
    m->w.dtype = "bf16";
    const vlr_text_config *tc = &cfg->text;
    const vlr_vision_config *vc = &cfg->vision;
    if (tc->hidden_size <= 0 || tc->intermediate_size <= 0 || tc->num_heads <= 0 ||
        tc->num_kv_heads <= 0 || tc->head_dim <= 0 || tc->vocab_size <= 0 || tc->num_layers < 0 ||
        vc->hidden_size <= 0 || vc->intermediate_size <= 0 || vc->depth < 0 || vc->in_channels <= 0 ||
        vc->patch_size <= 0 || vc->temporal_patch_size <= 0 || vc->spatial_merge_size <= 0) {
        rc = vlr_fail(e, VLR_ERR_CONFIG, "bench model: the config has a non-positive dimension");
    } else { /* tensors named as in the old checkpoint layout (messages only) */
        m->embed_filled = fill_embed;
        rc = vlr_weights_walk(&m->w, &m->cfg, "visual.", "model.", build_tensor, m, e);
    }
    if (rc) vlr_bench_model_free(m);
    return rc;
}

vlr_status vlr_bench_model_build(const vlr_config *cfg, uint64_t seed, bool fill_embed, int n_threads,
                                 vlr_bench_model *m, vlr_err *e) {
    return build(cfg, seed, fill_embed, n_threads, false, m, e);
}

vlr_status vlr_bench_model_count(const vlr_config *cfg, bool fill_embed, uint64_t *parameters,
                                 uint64_t *bytes, uint64_t *filled_bytes, vlr_err *e) {
    vlr_bench_model m;
    vlr_status rc = build(cfg, 0, fill_embed, 1, true, &m, e);
    if (rc == VLR_OK) {
        *parameters = m.w.parameters;
        *bytes = m.w.bytes;
        *filled_bytes = m.filled_bytes;
    }
    vlr_bench_model_free(&m);
    return rc;
}

void vlr_bench_model_fill_embed_rows(vlr_bench_model *m, const int32_t *ids, size_t n) {
    const vlr_tensor *t = &m->w.text.embed;
    if (m->embed_filled || !t->data) return;
    const size_t D = (size_t)t->shape[1];
    const uint64_t key = tensor_key(m->seed, make_tag(VLR_TG_TEXT, 0, 0)); /* the manifest's text slot 0 */
    const dist d = make_dist(0.0f, STD_EMBED);
    uint16_t *table = (uint16_t *)t->data; /* our own allocation: writable */
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->shape[0]) continue;
        const size_t row = (size_t)ids[i];
        fill_values(table + row * D, true, D, row * D, key, d, 1);
    }
}

void vlr_bench_model_free(vlr_bench_model *m) {
    if (!m) return;
    vlr_weights_free_int8(&m->w);
    for (size_t i = 0; i < m->n_allocs; i++) free(m->allocs[i]);
    free(m->allocs);
    free(m->w.vision.blocks);
    free(m->w.text.layers);
    memset(m, 0, sizeof *m);
}

void vlr_bench_config_cut(vlr_config *cfg, int n_layers) {
    if (n_layers < 1) n_layers = 1;
    if (cfg->text.num_layers > n_layers) cfg->text.num_layers = n_layers;
    vlr_vision_config *vc = &cfg->vision;
    if (vc->depth > n_layers) vc->depth = n_layers;
    int kept = 0;
    for (int i = 0; i < vc->n_fullatt; i++)
        if (vc->fullatt_block_indexes[i] < vc->depth) vc->fullatt_block_indexes[kept++] = vc->fullatt_block_indexes[i];
    vc->n_fullatt = kept;
}
