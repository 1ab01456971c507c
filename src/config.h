/* config.h: the model's hyper-parameters, read from config.json (both the flat layout that
 * Qwen2.5-VL-7B-Instruct ships and the nested `text_config` layout newer transformers writes) and
 * preprocessor_config.json. */
#ifndef VLR_CONFIG_H
#define VLR_CONFIG_H

#include "common.h"

#define VLR_MAX_FULLATT 64

typedef struct vlr_text_config {
    int hidden_size;             /* D: 3584 for 7B */
    int intermediate_size;       /* F: 18944 */
    int num_layers;              /* 28 */
    int num_heads;               /* H: 28 */
    int num_kv_heads;            /* KVH: 4 */
    int head_dim;                /* hd: hidden_size / num_heads when absent (128) */
    int vocab_size;              /* 152064 */
    int max_position_embeddings; /* 128000 */
    double rms_norm_eps;         /* 1e-6 */
    double rope_theta;           /* 1e6 */
    int mrope_section[3];        /* [16, 24, 24] for 7B: frequency pairs per t/h/w component */
    bool tie_word_embeddings;
} vlr_text_config;

typedef struct vlr_vision_config {
    int depth;             /* 32 */
    int hidden_size;       /* C: 1280 */
    int num_heads;         /* 16 */
    int head_dim;          /* hidden_size / num_heads (80) */
    int intermediate_size; /* 3420 */
    int out_hidden_size;   /* = text hidden_size (3584) */
    int in_channels;       /* 3 */
    int patch_size;        /* 14 */
    int spatial_merge_size;  /* 2 */
    int temporal_patch_size; /* 2 */
    int window_size;         /* 112 px */
    int fullatt_block_indexes[VLR_MAX_FULLATT];
    int n_fullatt;
} vlr_vision_config;

typedef struct vlr_token_ids {
    int32_t image_pad;    /* <|image_pad|> 151655 */
    int32_t video_pad;    /* <|video_pad|> 151656 */
    int32_t vision_start; /* <|vision_start|> 151652 */
    int32_t vision_end;   /* <|vision_end|> 151653 */
    int32_t eos;          /* eos_token_id 151645 */
} vlr_token_ids;

typedef struct vlr_preproc_config {
    int64_t min_pixels;     /* 3136 */
    int64_t max_pixels;     /* 12845056 */
    float mean[3], std[3];  /* CLIP normalisation, as float32 */
    double rescale_factor;  /* 1/255 */
    int patch_size;         /* 14 */
    int merge_size;         /* 2 */
    int temporal_patch_size;/* 2 */
} vlr_preproc_config;

typedef struct vlr_config {
    vlr_text_config text;
    vlr_vision_config vision;
    vlr_token_ids tokens;
    vlr_preproc_config preproc;
    bool nested; /* config.json had the nested text_config layout */
} vlr_config;

/* Reads <dir>/config.json and <dir>/preprocessor_config.json (defaults of Qwen2VLImageProcessor
 * when the latter is absent). Every message names the file and the field. */
vlr_status vlr_config_load(const char *model_dir, vlr_config *cfg, vlr_err *e);

/* The same from already-read JSON text (used by tests and `bench --config`). preproc_json may be
 * NULL (defaults). */
vlr_status vlr_config_parse(const char *config_json, size_t config_len, const char *preproc_json,
                            size_t preproc_len, vlr_config *cfg, vlr_err *e);

/* The real Qwen2.5-VL-7B-Instruct dimensions (for bench). */
void vlr_config_qwen25vl_7b(vlr_config *cfg);

#endif
