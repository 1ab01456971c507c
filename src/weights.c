/* weights.c: binds the tensors of a Qwen2.5-VL checkpoint and the value head to vlr_weights.
 *
 * Sources, in the order transformers' from_pretrained looks for them: <dir>/model.safetensors, else
 * the shards listed in <dir>/model.safetensors.index.json ({"weight_map": {tensor: shard file}};
 * every entry is checked against its shard at load, so an index naming a tensor its shard lacks is
 * reported with both names). The value head comes from <dir>/value_head.safetensors (trl's
 * `v_head.summary.{weight,bias}`), or, when that file is absent, from the model files themselves
 * (some reward checkpoints save it inside the shards).
 *
 * Tensor names: the old layout (`model.layers.N.*`, `model.embed_tokens`, `model.norm`,
 * `visual.*`) and the one newer transformers writes (`model.language_model.*`, `model.visual.*`);
 * each of the two towers is detected separately from its first tensor. Every bound tensor's shape
 * is checked against the config, so the forward pass can trust them. The data stay in the mapped
 * files in their stored dtype (bf16, f16 or f32, mixing allowed per tensor); nothing is converted.
 * The tensors are listed once, in the manifest below; bench_model.c's random builder walks it too.
 *
 * Not loaded: `lm_head.weight` (the score only reads the value head) and any other tensor the
 * forward pass does not use. */
#include "weights.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "json.h"
#include "kernels/kernels.h"
#include "safetensors.h"

#define INDEX_MAX_BYTES ((size_t)64 << 20)
#define MAX_SHARDS 4096

size_t vlr_dtype_size(vlr_dtype dt) {
    switch (dt) {
    case VLR_DT_BF16: return 2;
    case VLR_DT_F16: return 2;
    case VLR_DT_F32: return 4;
    }
    return 0;
}

const char *vlr_dtype_name(vlr_dtype dt) {
    switch (dt) {
    case VLR_DT_BF16: return "bf16";
    case VLR_DT_F16: return "f16";
    case VLR_DT_F32: return "f32";
    }
    return "?";
}

/* ---- the manifest ---------------------------------------------------------------------------- */

/* Shape symbols. Vision: C = hidden_size, I = intermediate_size, M = C·merge² (the merger's width,
 * 4C at 7B), IN = in_channels, T = temporal_patch_size, P = patch_size. Text: D = hidden_size,
 * F = intermediate_size, Q = H·hd, KV = KVH·hd, VOCAB = vocab_size. */
enum { DIM_1 = 1, DIM_C, DIM_3C, DIM_I, DIM_M, DIM_IN, DIM_T, DIM_P, DIM_D, DIM_F, DIM_Q, DIM_KV, DIM_VOCAB };

static int64_t dim_value(const vlr_config *c, int dim) {
    const vlr_vision_config *v = &c->vision;
    const vlr_text_config *t = &c->text;
    switch (dim) {
    case DIM_C: return v->hidden_size;
    case DIM_3C: return 3 * (int64_t)v->hidden_size;
    case DIM_I: return v->intermediate_size;
    case DIM_M: return (int64_t)v->hidden_size * v->spatial_merge_size * v->spatial_merge_size;
    case DIM_IN: return v->in_channels;
    case DIM_T: return v->temporal_patch_size;
    case DIM_P: return v->patch_size;
    case DIM_D: return t->hidden_size;
    case DIM_F: return t->intermediate_size;
    case DIM_Q: return (int64_t)t->num_heads * t->head_dim;
    case DIM_KV: return (int64_t)t->num_kv_heads * t->head_dim;
    case DIM_VOCAB: return t->vocab_size;
    }
    return 1;
}

#define VB(f) VLR_TG_VISION_BLOCK, offsetof(vlr_vision_block_weights, f)
#define VIS(f) VLR_TG_VISION, offsetof(vlr_vision_weights, f)
#define TL(f) VLR_TG_TEXT_LAYER, offsetof(vlr_text_layer_weights, f)
#define TXT(f) VLR_TG_TEXT, offsetof(vlr_text_weights, f)
#define VAL(f) VLR_TG_VALUE, offsetof(vlr_text_weights, f)

/* Every tensor, in checkpoint order; a repeated group's entries are contiguous (one block or layer).
 * New tensors go at the end of their group: a tensor's slot there is part of its random tag in
 * bench_model.c. */
static const vlr_tensor_desc manifest[] = {
    {VIS(patch_embed), "patch_embed.proj.weight", VLR_TK_MATRIX, {DIM_C, DIM_IN, DIM_T, DIM_P, DIM_P}},
    {VB(norm1), "norm1.weight", VLR_TK_NORM, {DIM_C}},
    {VB(qkv_w), "attn.qkv.weight", VLR_TK_MATRIX, {DIM_3C, DIM_C}},
    {VB(qkv_b), "attn.qkv.bias", VLR_TK_BIAS, {DIM_3C}},
    {VB(proj_w), "attn.proj.weight", VLR_TK_MATRIX, {DIM_C, DIM_C}},
    {VB(proj_b), "attn.proj.bias", VLR_TK_BIAS, {DIM_C}},
    {VB(norm2), "norm2.weight", VLR_TK_NORM, {DIM_C}},
    {VB(gate_w), "mlp.gate_proj.weight", VLR_TK_MATRIX, {DIM_I, DIM_C}},
    {VB(gate_b), "mlp.gate_proj.bias", VLR_TK_BIAS, {DIM_I}},
    {VB(up_w), "mlp.up_proj.weight", VLR_TK_MATRIX, {DIM_I, DIM_C}},
    {VB(up_b), "mlp.up_proj.bias", VLR_TK_BIAS, {DIM_I}},
    {VB(down_w), "mlp.down_proj.weight", VLR_TK_MATRIX, {DIM_C, DIM_I}},
    {VB(down_b), "mlp.down_proj.bias", VLR_TK_BIAS, {DIM_C}},
    {VIS(merger_norm), "merger.ln_q.weight", VLR_TK_NORM, {DIM_C}},
    {VIS(merger_fc1_w), "merger.mlp.0.weight", VLR_TK_MATRIX, {DIM_M, DIM_M}},
    {VIS(merger_fc1_b), "merger.mlp.0.bias", VLR_TK_BIAS, {DIM_M}},
    {VIS(merger_fc2_w), "merger.mlp.2.weight", VLR_TK_MATRIX, {DIM_D, DIM_M}},
    {VIS(merger_fc2_b), "merger.mlp.2.bias", VLR_TK_BIAS, {DIM_D}},
    {TXT(embed), "embed_tokens.weight", VLR_TK_EMBED, {DIM_VOCAB, DIM_D}},
    {TL(input_norm), "input_layernorm.weight", VLR_TK_NORM, {DIM_D}},
    {TL(q_w), "self_attn.q_proj.weight", VLR_TK_MATRIX, {DIM_Q, DIM_D}},
    {TL(q_b), "self_attn.q_proj.bias", VLR_TK_BIAS, {DIM_Q}},
    {TL(k_w), "self_attn.k_proj.weight", VLR_TK_MATRIX, {DIM_KV, DIM_D}},
    {TL(k_b), "self_attn.k_proj.bias", VLR_TK_BIAS, {DIM_KV}},
    {TL(v_w), "self_attn.v_proj.weight", VLR_TK_MATRIX, {DIM_KV, DIM_D}},
    {TL(v_b), "self_attn.v_proj.bias", VLR_TK_BIAS, {DIM_KV}},
    {TL(o_w), "self_attn.o_proj.weight", VLR_TK_MATRIX, {DIM_D, DIM_Q}},
    {TL(post_norm), "post_attention_layernorm.weight", VLR_TK_NORM, {DIM_D}},
    {TL(gate_w), "mlp.gate_proj.weight", VLR_TK_MATRIX, {DIM_F, DIM_D}},
    {TL(up_w), "mlp.up_proj.weight", VLR_TK_MATRIX, {DIM_F, DIM_D}},
    {TL(down_w), "mlp.down_proj.weight", VLR_TK_MATRIX, {DIM_D, DIM_F}},
    {TXT(final_norm), "norm.weight", VLR_TK_NORM, {DIM_D}},
    {VAL(value_w), "v_head.summary.weight", VLR_TK_MATRIX, {DIM_1, DIM_D}}, /* trl: Linear(D, 1) */
    {VAL(value_b), "v_head.summary.bias", VLR_TK_ZERO, {DIM_1}},
};
#define N_MANIFEST (sizeof manifest / sizeof manifest[0])

vlr_tensor *vlr_weights_field(vlr_weights *w, vlr_tensor_group g, int layer, size_t offset) {
    char *base = g == VLR_TG_VISION_BLOCK ? (char *)&w->vision.blocks[layer]
               : g == VLR_TG_VISION       ? (char *)&w->vision
               : g == VLR_TG_TEXT_LAYER   ? (char *)&w->text.layers[layer]
                                          : (char *)&w->text; /* text, value head */
    return (vlr_tensor *)(base + offset);
}

vlr_status vlr_weights_walk(vlr_weights *w, const vlr_config *cfg, const char *vision_prefix,
                            const char *text_prefix, vlr_tensor_visit visit, void *ctx, vlr_err *e) {
    int slot[VLR_TG_VALUE + 1] = {0};
    char name[256]; /* names are short; a truncated one would simply not be found */
    for (size_t i = 0, end; i < N_MANIFEST; i = end) {
        const vlr_tensor_group g = manifest[i].group;
        for (end = i + 1; end < N_MANIFEST && manifest[end].group == g;) end++;
        const char *px = g == VLR_TG_VALUE ? "" : g <= VLR_TG_VISION ? vision_prefix : text_prefix;
        const char *stem = NULL; /* repeated groups: "blocks." / "layers." and the index */
        int reps = 1;
        if (g == VLR_TG_VISION_BLOCK) {
            stem = "blocks.", reps = cfg->vision.depth;
            if (!(w->vision.blocks = vlr_calloc((size_t)reps, sizeof *w->vision.blocks, e))) return VLR_ERR_NOMEM;
        } else if (g == VLR_TG_TEXT_LAYER) {
            stem = "layers.", reps = cfg->text.num_layers;
            if (!(w->text.layers = vlr_calloc((size_t)reps, sizeof *w->text.layers, e))) return VLR_ERR_NOMEM;
        }
        for (int l = 0; l < reps; l++) {
            for (size_t k = i; k < end; k++) {
                const vlr_tensor_desc *d = &manifest[k];
                vlr_tensor *t = vlr_weights_field(w, g, l, d->offset);
                for (t->ndim = 0; t->ndim < 5 && d->dims[t->ndim]; t->ndim++)
                    t->shape[t->ndim] = dim_value(cfg, d->dims[t->ndim]);
                if (stem) snprintf(name, sizeof name, "%s%s%d.%s", px, stem, l, d->name);
                else snprintf(name, sizeof name, "%s%s", px, d->name);
                const vlr_tensor_ref r = {d, l, slot[g] + (int)(k - i), name, t};
                vlr_status rc = visit(ctx, &r, e);
                if (rc) return rc;
            }
        }
        slot[g] += (int)(end - i);
    }
    return VLR_OK;
}

/* ---- the loader ------------------------------------------------------------------------------ */

typedef struct index_entry {
    const char *name; /* a key of weight_map (points into the parsed index document) */
    int shard;        /* index into loader.files */
} index_entry;

typedef struct loader {
    const char *dir;
    vlr_weights *w;
    vlr_err *e;
    int n_model_files;          /* w->files[0 .. n_model_files-1] hold the model's tensors */
    char *index_path;           /* NULL for a single model.safetensors */
    index_entry *index;         /* sorted by name; NULL for a single file */
    size_t n_index;
    vlr_st_file *value_file;    /* value_head.safetensors, or NULL */
    const char *text_prefix;    /* "model." or "model.language_model." */
    const char *vision_prefix;  /* "visual." or "model.visual." */
    unsigned dtype_mask;        /* bit per vlr_dtype seen */
} loader;

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const index_entry *)a)->name, ((const index_entry *)b)->name);
}

static int cmp_key_entry(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const index_entry *)elem)->name);
}

/* Finds name among the model files. Sharded: via the index (already checked against the shards). */
static const vlr_st_tensor *model_find(const loader *L, const char *name, const vlr_st_file **file) {
    if (!L->index) {
        *file = L->w->files[0];
        return vlr_st_find(*file, name);
    }
    const index_entry *ie = bsearch(name, L->index, L->n_index, sizeof *L->index, cmp_key_entry);
    if (!ie) return NULL;
    *file = L->w->files[ie->shard];
    return vlr_st_find(*file, name);
}

#define TRY(expr)                    \
    do {                             \
        rc = (expr);                 \
        if (rc != VLR_OK) goto done; \
    } while (0)

static vlr_status add_file(loader *L, const char *dir, const char *file_name, vlr_st_file **out) {
    char *path = vlr_path_join(dir, file_name);
    if (!path) return vlr_fail(L->e, VLR_ERR_NOMEM, "out of memory");
    vlr_st_file *f = NULL;
    vlr_status rc = vlr_st_open(path, &f, L->e);
    free(path);
    if (rc) return rc;
    L->w->files[L->w->n_files++] = f;
    if (out) *out = f;
    return VLR_OK;
}

/* A shard name must be a plain file in the model folder. */
static bool plain_file_name(const char *s, size_t len) {
    if (len == 0 || strlen(s) != len) return false;
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return !strchr(s, '/') && !strchr(s, '\\');
}

/* Opens every shard of model.safetensors.index.json and checks each entry against its shard. */
static vlr_status open_sharded(loader *L, vlr_json_doc **doc_out) {
    vlr_status rc = VLR_OK;
    const char *ip = L->index_path;
    const char **shard_names = NULL;
    int n_shards = 0;

    TRY(vlr_json_parse_file(ip, INDEX_MAX_BYTES, doc_out, L->e));
    const vlr_json *root = vlr_json_root(*doc_out);
    const vlr_json *map = vlr_json_get(root, "weight_map");
    if (!vlr_json_is(map, VLR_JSON_OBJECT)) {
        rc = vlr_fail(L->e, VLR_ERR_FORMAT, "%s: weight_map is %s, expected an object", ip,
                      map ? vlr_json_type_name(map) : "missing");
        goto done;
    }
    if (map->len == 0) {
        rc = vlr_fail(L->e, VLR_ERR_FORMAT, "%s: weight_map is empty", ip);
        goto done;
    }
    L->index = vlr_calloc(map->len, sizeof *L->index, L->e);
    shard_names = vlr_calloc(map->len, sizeof *shard_names, L->e);
    if (!L->index || !shard_names) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < map->len; i++) {
        const vlr_json *m = &map->items[i];
        if (!vlr_json_is(m, VLR_JSON_STRING) || !plain_file_name(m->str, m->len)) {
            rc = vlr_fail(L->e, VLR_ERR_FORMAT, "%s: weight_map[\"%.200s\"] is not a plain file name", ip,
                          m->key);
            goto done;
        }
        int s = 0;
        while (s < n_shards && strcmp(shard_names[s], m->str) != 0) s++;
        if (s == n_shards) {
            if (n_shards == MAX_SHARDS) {
                rc = vlr_fail(L->e, VLR_ERR_LIMIT, "%s: more than %d shard files", ip, MAX_SHARDS);
                goto done;
            }
            shard_names[n_shards++] = m->str;
        }
        L->index[i].name = m->key;
        L->index[i].shard = s; /* = its position in w->files, filled below in this order */
    }
    L->n_index = map->len;
    qsort(L->index, L->n_index, sizeof *L->index, cmp_entry);
    for (size_t i = 1; i < L->n_index; i++) {
        if (strcmp(L->index[i - 1].name, L->index[i].name) == 0) {
            rc = vlr_fail(L->e, VLR_ERR_FORMAT, "%s: tensor %.200s listed twice in weight_map", ip,
                          L->index[i].name);
            goto done;
        }
    }

    L->w->files = vlr_calloc((size_t)n_shards + 1, sizeof *L->w->files, L->e);
    if (!L->w->files) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    for (int s = 0; s < n_shards; s++) TRY(add_file(L, L->dir, shard_names[s], NULL));
    L->n_model_files = n_shards;
    L->w->n_shards = n_shards;

    for (size_t i = 0; i < L->n_index; i++) {
        const vlr_st_file *f = L->w->files[L->index[i].shard];
        if (!vlr_st_find(f, L->index[i].name)) {
            rc = vlr_fail(L->e, VLR_ERR_FORMAT, "%s: tensor %.200s is mapped to %s, which does not contain it",
                          ip, L->index[i].name, f->path);
            goto done;
        }
    }
done:
    free(shard_names);
    return rc;
}

/* The visitor of vlr_weights_walk: binds r->name, found in value_head.safetensors for the value head
 * when that file exists, else in the model files, after checking its shape against the config's. */
static vlr_status bind_tensor(void *ctx, const vlr_tensor_ref *r, vlr_err *e) {
    loader *L = ctx;
    vlr_st_file *from = r->desc->group == VLR_TG_VALUE ? L->value_file : NULL;
    const vlr_st_file *file = from;
    const vlr_st_tensor *t = from ? vlr_st_find(from, r->name) : model_find(L, r->name, &file);
    vlr_tensor *out = r->t;
    if (!t) {
        if (from) return vlr_fail(e, VLR_ERR_SHAPE, "%s: missing tensor %s", from->path, r->name);
        if (r->desc->group == VLR_TG_VALUE)
            return vlr_fail(e, VLR_ERR_SHAPE, "%s: missing tensor %s: no value_head.safetensors, and the "
                            "model weights do not hold the value head either", L->dir, r->name);
        if (L->index)
            return vlr_fail(e, VLR_ERR_SHAPE, "%s: missing tensor %s (not in weight_map)", L->index_path,
                            r->name);
        return vlr_fail(e, VLR_ERR_SHAPE, "%s: missing tensor %s", L->w->files[0]->path, r->name);
    }
    bool same = t->ndim == out->ndim;
    for (int i = 0; same && i < out->ndim; i++) same = t->shape[i] == out->shape[i];
    if (!same) {
        char a[160], b[160];
        return vlr_fail(e, VLR_ERR_SHAPE, "%s: tensor %s: expected shape %s, found %s", file->path, r->name,
                        vlr_st_shape_str(out->shape, out->ndim, a, sizeof a),
                        vlr_st_shape_str(t->shape, t->ndim, b, sizeof b));
    }
    out->data = t->data;
    out->dtype = t->dtype;
    L->w->parameters += t->numel;
    L->w->bytes += t->nbytes;
    L->dtype_mask |= 1u << t->dtype;
    return VLR_OK;
}

/* Picks the tensor-name layout of a tower by probing its first tensor under the new prefix. */
static const char *detect_prefix(const loader *L, const char *new_prefix, const char *old_prefix,
                                 const char *probe) {
    char n[256];
    const vlr_st_file *f;
    snprintf(n, sizeof n, "%s%s", new_prefix, probe);
    return model_find(L, n, &f) ? new_prefix : old_prefix;
}

vlr_status vlr_weights_load(const char *model_dir, const vlr_config *cfg, vlr_weights *w, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_json_doc *index_doc = NULL;
    char *single = NULL, *value_path = NULL;
    memset(w, 0, sizeof *w);
    loader L = {.dir = model_dir, .w = w, .e = e};

    single = vlr_path_join(model_dir, "model.safetensors");
    L.index_path = vlr_path_join(model_dir, "model.safetensors.index.json");
    value_path = vlr_path_join(model_dir, "value_head.safetensors");
    if (!single || !L.index_path || !value_path) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        goto done;
    }

    if (vlr_file_exists(single) || !vlr_file_exists(L.index_path)) {
        free(L.index_path); /* single file: messages name model.safetensors */
        L.index_path = NULL;
        w->files = vlr_calloc(2, sizeof *w->files, e);
        if (!w->files) {
            rc = VLR_ERR_NOMEM;
            goto done;
        }
        TRY(add_file(&L, model_dir, "model.safetensors", NULL));
        L.n_model_files = 1;
        w->n_shards = 1;
    } else {
        TRY(open_sharded(&L, &index_doc));
    }
    if (vlr_file_exists(value_path)) TRY(add_file(&L, model_dir, "value_head.safetensors", &L.value_file));

    L.text_prefix = detect_prefix(&L, "model.language_model.", "model.", "embed_tokens.weight");
    L.vision_prefix = detect_prefix(&L, "model.visual.", "visual.", "patch_embed.proj.weight");
    TRY(vlr_weights_walk(w, cfg, L.vision_prefix, L.text_prefix, bind_tensor, &L, e));

    unsigned m = L.dtype_mask;
    w->dtype = m == (1u << VLR_DT_BF16) ? "bf16"
             : m == (1u << VLR_DT_F16)  ? "f16"
             : m == (1u << VLR_DT_F32)  ? "f32"
                                        : "mixed";
done:
    if (rc) vlr_weights_free(w);
    vlr_json_free(index_doc);
    free(L.index);
    free(L.index_path);
    free(single);
    free(value_path);
    return rc;
}

void vlr_weights_free_int8(vlr_weights *w) {
    for (int i = 0; i < w->n_qweights; i++) vlr_qweight_free(&w->qweights[i]);
    free(w->qweights);
    if (w->int8_map) munmap(w->int8_map, w->int8_map_size);
    w->int8_map = NULL;
    w->qweights = NULL;
    w->n_qweights = 0;
    w->qweight_bytes = 0;
}

void vlr_weights_free(vlr_weights *w) {
    if (!w) return;
    vlr_weights_free_int8(w);
    for (int i = 0; i < w->n_files; i++) vlr_st_close(w->files[i]);
    free(w->files);
    free(w->vision.blocks);
    free(w->text.layers);
    memset(w, 0, sizeof *w);
}
