/* weights.h: the tensors of a Qwen2.5-VL model plus the value head, as views into memory-mapped
 * safetensors files (used in place, in their stored dtype; never copied to fp32).
 *
 * Both tensor-name layouts load into the same structs: the old one (`model.layers.N...`,
 * `model.embed_tokens`, `model.norm`, `visual.*`) and the new one (`model.language_model.*`,
 * `model.visual.*`). `lm_head` is never loaded. Every shape is checked against the config.
 *
 * The tensors are described once, in the manifest of weights.c (name, struct field, shape in config
 * symbols, random-init kind); vlr_weights_walk runs over it for the loader here and for the random
 * builder of bench_model.c. The shape comments on the structs below mirror it. */
#ifndef VLR_WEIGHTS_H
#define VLR_WEIGHTS_H

#include "common.h"
#include "config.h"

typedef enum vlr_dtype { VLR_DT_BF16 = 0, VLR_DT_F16, VLR_DT_F32 } vlr_dtype;
size_t vlr_dtype_size(vlr_dtype dt);
const char *vlr_dtype_name(vlr_dtype dt); /* "bf16", "f16", "f32" */

/* Element i of data stored in dt, widened exactly to fp32 (scalar paths: embedding rows, biases,
 * norm weights, the value head, the kernels' edge elements). */
static inline float vlr_dtype_load(const void *data, vlr_dtype dt, size_t i) {
    switch (dt) {
    case VLR_DT_BF16: return vlr_bf16_to_f32(((const uint16_t *)data)[i]);
    case VLR_DT_F16: return vlr_f16_to_f32(((const uint16_t *)data)[i]);
    case VLR_DT_F32: return ((const float *)data)[i];
    }
    return 0.0f;
}

typedef struct vlr_qweight vlr_qweight; /* kernels/kernels.h: a matrix quantized to int8, packed */

typedef struct vlr_tensor {
    const void *data; /* row-major, little-endian, in `dtype`; NULL when the tensor is absent */
    vlr_dtype dtype;
    int ndim;
    int64_t shape[5];
    const vlr_qweight *q; /* its int8 form in int8 precision (quantize.c), else NULL */
} vlr_tensor;

static inline int64_t vlr_tensor_numel(const vlr_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Shapes below use the vision config's C = hidden_size, I = intermediate_size, and the text
 * config's D = hidden_size, F = intermediate_size, H/KVH heads, hd = head_dim. */
typedef struct vlr_vision_block_weights {
    vlr_tensor norm1;          /* [C] */
    vlr_tensor qkv_w, qkv_b;   /* [3C, C], [3C]: rows are q (C), then k (C), then v (C) */
    vlr_tensor proj_w, proj_b; /* [C, C], [C] */
    vlr_tensor norm2;          /* [C] */
    vlr_tensor gate_w, gate_b; /* [I, C], [I] */
    vlr_tensor up_w, up_b;     /* [I, C], [I] */
    vlr_tensor down_w, down_b; /* [C, I], [C] */
} vlr_vision_block_weights;

typedef struct vlr_vision_weights {
    vlr_tensor patch_embed;  /* [C, 3, T, P, P]: used as [C, 3*T*P*P] (1176), no bias */
    vlr_vision_block_weights *blocks; /* [depth] */
    vlr_tensor merger_norm;  /* ln_q: [C] */
    vlr_tensor merger_fc1_w, merger_fc1_b; /* mlp.0: [4C, 4C], [4C] */
    vlr_tensor merger_fc2_w, merger_fc2_b; /* mlp.2: [D, 4C], [D] */
} vlr_vision_weights;

typedef struct vlr_text_layer_weights {
    vlr_tensor input_norm;   /* [D] */
    vlr_tensor q_w, q_b;     /* [H*hd, D], [H*hd] */
    vlr_tensor k_w, k_b;     /* [KVH*hd, D], [KVH*hd] */
    vlr_tensor v_w, v_b;     /* [KVH*hd, D], [KVH*hd] */
    vlr_tensor o_w;          /* [D, H*hd], no bias */
    vlr_tensor post_norm;    /* [D] */
    vlr_tensor gate_w;       /* [F, D] */
    vlr_tensor up_w;         /* [F, D] */
    vlr_tensor down_w;       /* [D, F] */
} vlr_text_layer_weights;

typedef struct vlr_text_weights {
    vlr_tensor embed;        /* [vocab, D] */
    vlr_text_layer_weights *layers; /* [num_layers] */
    vlr_tensor final_norm;   /* [D] */
    vlr_tensor value_w;      /* v_head.summary.weight [1, D] */
    vlr_tensor value_b;      /* v_head.summary.bias [1] */
} vlr_text_weights;

typedef struct vlr_st_file vlr_st_file; /* one mmap'd safetensors file (safetensors.h) */

typedef struct vlr_weights {
    vlr_vision_weights vision;
    vlr_text_weights text;
    vlr_st_file **files; /* every mapped file, the value head's included */
    int n_files;
    int n_shards;        /* model shards (1 for a single model.safetensors) */
    uint64_t parameters; /* elements of the bound tensors */
    uint64_t bytes;      /* their storage bytes */
    const char *dtype;   /* "bf16", "f16", "f32" or "mixed" (static string) */
    vlr_qweight *qweights;   /* [n_qweights] the int8 forms the tensors' q point to (quantize.c) */
    int n_qweights;
    uint64_t qweight_bytes;  /* their bytes */
    void *int8_map;          /* the cache file they are views into (int8_cache.c), or NULL */
    size_t int8_map_size;
} vlr_weights;

/* The manifest's groups: where a tensor's field lives and which name prefix it takes. The numbers are
 * part of bench_model.c's random tags (changing them changes the bench model's values). */
typedef enum vlr_tensor_group {
    VLR_TG_VISION_BLOCK = 1, /* vlr_vision_block_weights, `<vision>blocks.N.`, N < vision depth */
    VLR_TG_VISION = 2,       /* vlr_vision_weights, `<vision>` */
    VLR_TG_TEXT_LAYER = 3,   /* vlr_text_layer_weights, `<text>layers.N.`, N < num_layers */
    VLR_TG_TEXT = 4,         /* vlr_text_weights, `<text>` */
    VLR_TG_VALUE = 5,        /* vlr_text_weights, no prefix: trl's v_head, maybe in its own file */
} vlr_tensor_group;

/* What a tensor is, hence how the random builder fills it (bench_model.h gives the values). */
typedef enum vlr_tensor_kind {
    VLR_TK_MATRIX, /* [out, in...]: std 1/sqrt(fan_in), fan_in = numel / out */
    VLR_TK_BIAS,   /* std 0.02 */
    VLR_TK_NORM,   /* RMSNorm / LayerNorm weight: 1 +- 0.05 */
    VLR_TK_EMBED,  /* the embedding table: std 0.02, rows filled on demand */
    VLR_TK_ZERO,   /* the value head's bias: 0 */
} vlr_tensor_kind;

typedef struct vlr_tensor_desc {
    vlr_tensor_group group;
    size_t offset;          /* of the vlr_tensor field in the group's struct */
    const char *name;       /* after the group's prefix: "attn.qkv.weight" */
    vlr_tensor_kind kind;
    unsigned char dims[5];  /* shape in config symbols (weights.c), 0-terminated */
} vlr_tensor_desc;

/* One tensor of one block or layer, as vlr_weights_walk hands it to its visitor. */
typedef struct vlr_tensor_ref {
    const vlr_tensor_desc *desc;
    int layer;              /* block / layer index; 0 outside the repeated groups */
    int slot;               /* position of desc among its group's entries (bench tags) */
    const char *name;       /* the full checkpoint name */
    vlr_tensor *t;          /* the field to fill: ndim and shape already set from the config */
} vlr_tensor_ref;

typedef vlr_status (*vlr_tensor_visit)(void *ctx, const vlr_tensor_ref *r, vlr_err *e);

/* Visits every tensor of cfg in checkpoint order (vision tower, decoder, value head; each block or
 * layer whole before the next), allocating w's block and layer arrays on the way. Names use the
 * given tower prefixes ("visual." or "model.visual.", "model." or "model.language_model."). Stops
 * at the first status the visitor returns. */
vlr_status vlr_weights_walk(vlr_weights *w, const vlr_config *cfg, const char *vision_prefix,
                            const char *text_prefix, vlr_tensor_visit visit, void *ctx, vlr_err *e);

/* Maps <dir>/model.safetensors or the shards of <dir>/model.safetensors.index.json, plus
 * <dir>/value_head.safetensors, binds every tensor and checks its shape against cfg. */
vlr_status vlr_weights_load(const char *model_dir, const vlr_config *cfg, vlr_weights *w,
                            vlr_err *e);
void vlr_weights_free(vlr_weights *w); /* zeroed or partially loaded structs are fine */
/* Frees the int8 forms alone (quantize.c made them; the tensors' q pointers are not reset). */
void vlr_weights_free_int8(vlr_weights *w);

/* The tensor field at `offset` of group g (layer: the block or layer index of repeated groups). */
vlr_tensor *vlr_weights_field(vlr_weights *w, vlr_tensor_group g, int layer, size_t offset);

#endif
