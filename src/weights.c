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
 *
 * Not loaded: `lm_head.weight` (the score only reads the value head) and any other tensor the
 * forward pass does not use. */
#include "weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "json.h"
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

typedef struct index_entry {
    const char *name; /* a key of weight_map (points into the parsed index document) */
    int shard;        /* index into loader.files */
} index_entry;

typedef struct loader {
    const char *dir;
    const vlr_config *cfg;
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

/* Binds the tensor `name` (found in `from`, or in the model files when from is NULL) to *out after
 * checking its shape against the ndim sizes that follow. */
static vlr_status bind(loader *L, vlr_st_file *from, vlr_tensor *out, const char *name, int ndim, ...) {
    int64_t want[5];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) want[i] = va_arg(ap, int64_t);
    va_end(ap);

    const vlr_st_file *file = from;
    const vlr_st_tensor *t = from ? vlr_st_find(from, name) : model_find(L, name, &file);
    if (!t) {
        if (from) return vlr_fail(L->e, VLR_ERR_SHAPE, "%s: missing tensor %s", from->path, name);
        if (L->index)
            return vlr_fail(L->e, VLR_ERR_SHAPE, "%s: missing tensor %s (not in weight_map)",
                            L->index_path, name);
        return vlr_fail(L->e, VLR_ERR_SHAPE, "%s: missing tensor %s", L->w->files[0]->path, name);
    }
    bool same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == want[i];
    if (!same) {
        char a[160], b[160];
        return vlr_fail(L->e, VLR_ERR_SHAPE, "%s: tensor %s: expected shape %s, found %s", file->path,
                        name, vlr_st_shape_str(want, ndim, a, sizeof a),
                        vlr_st_shape_str(t->shape, t->ndim, b, sizeof b));
    }
    out->data = t->data;
    out->dtype = t->dtype;
    out->ndim = ndim;
    for (int i = 0; i < ndim; i++) out->shape[i] = want[i];
    L->w->parameters += t->numel;
    L->w->bytes += t->nbytes;
    L->dtype_mask |= 1u << t->dtype;
    return VLR_OK;
}

#define TRY(expr)                    \
    do {                             \
        rc = (expr);                 \
        if (rc != VLR_OK) goto done; \
    } while (0)

/* "<prefix><fmt...>" into buf; names are short, a truncated one would simply not be found. */
static const char *tname(char *buf, size_t cap, const char *prefix, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const char *tname(char *buf, size_t cap, const char *prefix, const char *fmt, ...) {
    size_t n = (size_t)snprintf(buf, cap, "%s", prefix);
    if (n >= cap) return buf;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
    return buf;
}

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

static vlr_status bind_vision(loader *L) {
    vlr_status rc = VLR_OK;
    const vlr_vision_config *vc = &L->cfg->vision;
    vlr_vision_weights *vw = &L->w->vision;
    const int64_t C = vc->hidden_size, I = vc->intermediate_size, P = vc->patch_size;
    const int64_t M = C * vc->spatial_merge_size * vc->spatial_merge_size; /* merger input width */
    const int64_t D = L->cfg->text.hidden_size;
    const char *px = L->vision_prefix;
    char n[256];

    TRY(bind(L, NULL, &vw->patch_embed, tname(n, sizeof n, px, "patch_embed.proj.weight"), 5, C,
             (int64_t)vc->in_channels, (int64_t)vc->temporal_patch_size, P, P));
    vw->blocks = vlr_calloc((size_t)vc->depth, sizeof *vw->blocks, L->e);
    if (!vw->blocks) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < vc->depth; i++) {
        vlr_vision_block_weights *b = &vw->blocks[i];
        TRY(bind(L, NULL, &b->norm1, tname(n, sizeof n, px, "blocks.%d.norm1.weight", i), 1, C));
        TRY(bind(L, NULL, &b->norm2, tname(n, sizeof n, px, "blocks.%d.norm2.weight", i), 1, C));
        TRY(bind(L, NULL, &b->qkv_w, tname(n, sizeof n, px, "blocks.%d.attn.qkv.weight", i), 2, 3 * C, C));
        TRY(bind(L, NULL, &b->qkv_b, tname(n, sizeof n, px, "blocks.%d.attn.qkv.bias", i), 1, 3 * C));
        TRY(bind(L, NULL, &b->proj_w, tname(n, sizeof n, px, "blocks.%d.attn.proj.weight", i), 2, C, C));
        TRY(bind(L, NULL, &b->proj_b, tname(n, sizeof n, px, "blocks.%d.attn.proj.bias", i), 1, C));
        TRY(bind(L, NULL, &b->gate_w, tname(n, sizeof n, px, "blocks.%d.mlp.gate_proj.weight", i), 2, I, C));
        TRY(bind(L, NULL, &b->gate_b, tname(n, sizeof n, px, "blocks.%d.mlp.gate_proj.bias", i), 1, I));
        TRY(bind(L, NULL, &b->up_w, tname(n, sizeof n, px, "blocks.%d.mlp.up_proj.weight", i), 2, I, C));
        TRY(bind(L, NULL, &b->up_b, tname(n, sizeof n, px, "blocks.%d.mlp.up_proj.bias", i), 1, I));
        TRY(bind(L, NULL, &b->down_w, tname(n, sizeof n, px, "blocks.%d.mlp.down_proj.weight", i), 2, C, I));
        TRY(bind(L, NULL, &b->down_b, tname(n, sizeof n, px, "blocks.%d.mlp.down_proj.bias", i), 1, C));
    }
    TRY(bind(L, NULL, &vw->merger_norm, tname(n, sizeof n, px, "merger.ln_q.weight"), 1, C));
    TRY(bind(L, NULL, &vw->merger_fc1_w, tname(n, sizeof n, px, "merger.mlp.0.weight"), 2, M, M));
    TRY(bind(L, NULL, &vw->merger_fc1_b, tname(n, sizeof n, px, "merger.mlp.0.bias"), 1, M));
    TRY(bind(L, NULL, &vw->merger_fc2_w, tname(n, sizeof n, px, "merger.mlp.2.weight"), 2, D, M));
    TRY(bind(L, NULL, &vw->merger_fc2_b, tname(n, sizeof n, px, "merger.mlp.2.bias"), 1, D));
done:
    return rc;
}

static vlr_status bind_text(loader *L) {
    vlr_status rc = VLR_OK;
    const vlr_text_config *tc = &L->cfg->text;
    vlr_text_weights *tw = &L->w->text;
    const int64_t D = tc->hidden_size, F = tc->intermediate_size;
    const int64_t Q = (int64_t)tc->num_heads * tc->head_dim, KV = (int64_t)tc->num_kv_heads * tc->head_dim;
    const char *px = L->text_prefix;
    char n[256];

    TRY(bind(L, NULL, &tw->embed, tname(n, sizeof n, px, "embed_tokens.weight"), 2,
             (int64_t)tc->vocab_size, D));
    tw->layers = vlr_calloc((size_t)tc->num_layers, sizeof *tw->layers, L->e);
    if (!tw->layers) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < tc->num_layers; i++) {
        vlr_text_layer_weights *l = &tw->layers[i];
        TRY(bind(L, NULL, &l->input_norm, tname(n, sizeof n, px, "layers.%d.input_layernorm.weight", i), 1, D));
        TRY(bind(L, NULL, &l->q_w, tname(n, sizeof n, px, "layers.%d.self_attn.q_proj.weight", i), 2, Q, D));
        TRY(bind(L, NULL, &l->q_b, tname(n, sizeof n, px, "layers.%d.self_attn.q_proj.bias", i), 1, Q));
        TRY(bind(L, NULL, &l->k_w, tname(n, sizeof n, px, "layers.%d.self_attn.k_proj.weight", i), 2, KV, D));
        TRY(bind(L, NULL, &l->k_b, tname(n, sizeof n, px, "layers.%d.self_attn.k_proj.bias", i), 1, KV));
        TRY(bind(L, NULL, &l->v_w, tname(n, sizeof n, px, "layers.%d.self_attn.v_proj.weight", i), 2, KV, D));
        TRY(bind(L, NULL, &l->v_b, tname(n, sizeof n, px, "layers.%d.self_attn.v_proj.bias", i), 1, KV));
        TRY(bind(L, NULL, &l->o_w, tname(n, sizeof n, px, "layers.%d.self_attn.o_proj.weight", i), 2, D, Q));
        TRY(bind(L, NULL, &l->post_norm,
                 tname(n, sizeof n, px, "layers.%d.post_attention_layernorm.weight", i), 1, D));
        TRY(bind(L, NULL, &l->gate_w, tname(n, sizeof n, px, "layers.%d.mlp.gate_proj.weight", i), 2, F, D));
        TRY(bind(L, NULL, &l->up_w, tname(n, sizeof n, px, "layers.%d.mlp.up_proj.weight", i), 2, F, D));
        TRY(bind(L, NULL, &l->down_w, tname(n, sizeof n, px, "layers.%d.mlp.down_proj.weight", i), 2, D, F));
    }
    TRY(bind(L, NULL, &tw->final_norm, tname(n, sizeof n, px, "norm.weight"), 1, D));
done:
    return rc;
}

/* trl's AutoModelForCausalLMWithValueHead: v_head.summary = Linear(hidden, 1). */
static vlr_status bind_value_head(loader *L) {
    vlr_status rc = VLR_OK;
    const int64_t D = L->cfg->text.hidden_size;
    const vlr_st_file *file;
    vlr_st_file *from = L->value_file;
    if (!from && !model_find(L, "v_head.summary.weight", &file))
        return vlr_fail(L->e, VLR_ERR_SHAPE,
                        "%s: missing tensor v_head.summary.weight: no value_head.safetensors, and the model "
                        "weights do not hold the value head either", L->dir);
    TRY(bind(L, from, &L->w->text.value_w, "v_head.summary.weight", 2, (int64_t)1, D));
    TRY(bind(L, from, &L->w->text.value_b, "v_head.summary.bias", 1, (int64_t)1));
done:
    return rc;
}

/* Picks the tensor-name layout of a tower by probing its first tensor under the new prefix. */
static const char *detect_prefix(const loader *L, const char *new_prefix, const char *old_prefix,
                                 const char *probe) {
    char n[256];
    const vlr_st_file *f;
    return model_find(L, tname(n, sizeof n, new_prefix, "%s", probe), &f) ? new_prefix : old_prefix;
}

vlr_status vlr_weights_load(const char *model_dir, const vlr_config *cfg, vlr_weights *w, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_json_doc *index_doc = NULL;
    char *single = NULL, *value_path = NULL;
    memset(w, 0, sizeof *w);
    loader L = {.dir = model_dir, .cfg = cfg, .w = w, .e = e};

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
    TRY(bind_vision(&L));
    TRY(bind_text(&L));
    TRY(bind_value_head(&L));

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

void vlr_weights_free(vlr_weights *w) {
    if (!w) return;
    for (int i = 0; i < w->n_files; i++) vlr_st_close(w->files[i]);
    free(w->files);
    free(w->vision.blocks);
    free(w->text.layers);
    memset(w, 0, sizeof *w);
}
