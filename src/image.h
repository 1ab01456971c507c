/* image.h: the image front end, from an image reference in a request to the processor's
 * pixel_values, reproducing qwen_vl_utils.fetch_image + the slow Qwen2VLImageProcessor byte for byte.
 *
 *   source (path, file://, data: URI, http(s)://)  -> bytes          vlr_image_read_source
 *   bytes -> RGB8, as to_rgb(Image.open(...)) with Pillow 9.4       vlr_image_decode
 *   qwen_vl_utils / processor sizing                                 vlr_smart_resize
 *   Pillow 9.4 Image.resize(..., BICUBIC) on RGB8                    vlr_image_resize_bicubic
 *   the whole chain, rescale + normalise + patchify                  vlr_image_prepare(_rgb)
 *
 * Decoders are the libraries Pillow itself uses for JPEG (libjpeg-turbo) and WebP (libwebp);
 * PNG is read with libpng but with Pillow's semantics (its modes, its 16-bit handling, its
 * tolerance of a missing tail after the last row, no tRNS compositing); BMP is read by hand
 * (uncompressed and bit-field layouts). GIF, animated WebP and RLE BMP are refused as
 * unsupported. No EXIF rotation is applied, as upstream applies none.
 *
 * Thread safety: every function is reentrant; nothing here keeps state between calls. The
 * resize and the normalisation may use OpenMP threads inside one call (results do not depend
 * on the thread count). */
#ifndef VLR_IMAGE_H
#define VLR_IMAGE_H

#include "common.h"
#include "config.h"

/* An 8-bit RGB image. */
typedef struct vlr_image {
    int width, height;
    uint8_t *rgb; /* [height, width, 3] uint8, row-major HWC; malloc'd, free with vlr_image_free */
} vlr_image;
void vlr_image_free(vlr_image *img); /* NULL or an empty image is a no-op; leaves *img zeroed */

/* Caps against hostile input, and the CPUs one image may use. A field left 0 takes its default. */
typedef struct vlr_image_limits {
    uint64_t max_pixels;         /* width*height cap, checked from the header before decoding:
                                    default 178,956,970 (Pillow's MAX_IMAGE_PIXELS) */
    uint64_t max_download_bytes; /* http(s) downloads and data: URIs: default 64 MiB */
    int timeout_s;               /* http(s) total time: default 30 s */
    int n_threads;               /* OpenMP team of the resize and patchify loops, passed in their
                                    num_threads clause (the caller's OpenMP state is never set):
                                    default the OpenMP default team. Results never depend on it. */
    uint64_t max_tokens;         /* placeholder tokens the image may take, checked from its header
                                    before decoding (the request's token limit minus what its other
                                    images took): default no check */
    const struct vlr_fetch_policy *remote; /* http(s) sources: which addresses may be fetched
                                    (fetch_policy.h); NULL = any */
    double fetch_deadline;       /* http(s): vlr_now() time by which a fetch must end; 0 = none
                                    (timeout_s applies either way) */
} vlr_image_limits;

#define VLR_IMAGE_DEFAULT_MAX_PIXELS 178956970ull
#define VLR_IMAGE_DEFAULT_MAX_DOWNLOAD (64ull << 20)
#define VLR_IMAGE_DEFAULT_TIMEOUT_S 30
#define VLR_IMAGE_MAX_FILE_BYTES (1ull << 30) /* local files: 1 GiB */

/* What the file was, in Pillow's words. */
typedef struct vlr_image_file_info {
    char format[8]; /* "JPEG", "PNG", "WEBP", "BMP" */
    char mode[8];   /* Pillow mode of the file: "RGB", "RGBA", "L", "LA", "P", "1", "I", "CMYK" */
    int width, height;
} vlr_image_file_info;

/* Per-item qwen_vl_utils keys; 0 = absent. resized_height/resized_width apply only when both
 * are given (then min/max_pixels are ignored, as upstream). */
typedef struct vlr_image_opts {
    int64_t min_pixels, max_pixels, resized_height, resized_width;
} vlr_image_opts;

/* qwen_vl_utils defaults (factor 28): MIN_PIXELS = 4*28*28, MAX_PIXELS = 16384*28*28. */
#define VLR_QWEN_MIN_PIXELS (4 * 28 * 28)
#define VLR_QWEN_MAX_PIXELS (16384 * 28 * 28)

/* Reads the bytes an image reference points to:
 *   "http://..." / "https://..."   fetched with libcurl (timeout, at most 5 redirects, size cap,
 *                                  HTTP errors are errors): VLR_ERR_NETWORK "cannot fetch URL: ..."
 *   "data:image/...;base64,<b64>"  strict base64 (ASCII whitespace ignored, padding required)
 *   "file://<path>"                the path after the 7 characters, as qwen_vl_utils does
 *   anything else                  a local path
 * Relative paths resolve against base_dir (NULL = current directory). *bytes is malloc'd. */
vlr_status vlr_image_read_source(const char *source, const char *base_dir, const vlr_image_limits *lim,
                                 uint8_t **bytes, size_t *n, vlr_err *e);

/* The format and size of encoded bytes from their header alone, no pixel decoded: how an image is
 * costed before it is admitted or decoded (info->mode is filled for JPEG only). The decoder reads the
 * same fields, so decoding gives this size or fails. *need_more: the bytes end before the size is
 * known (probe a longer prefix of the file). */
vlr_status vlr_image_probe(const uint8_t *bytes, size_t n, const char *name, vlr_image_file_info *info,
                           bool *need_more, vlr_err *e);

/* The header of the image a reference points to, reading only what it takes: a prefix of a local
 * file (all of it only when the header lies further in), a prefix of a data: URI's base64. http(s)
 * sources are not read (VLR_ERR_UNSUPPORTED): fetch them first. */
vlr_status vlr_image_probe_source(const char *source, const char *base_dir, const vlr_image_limits *lim,
                                  vlr_image_file_info *info, vlr_err *e);

/* Decodes encoded bytes (format sniffed from the bytes, not the name) into RGB8 exactly as
 * qwen_vl_utils.to_rgb(Image.open(...)) with Pillow 9.4: mode RGBA is pasted on white with alpha as
 * the mask; every other mode goes through convert("RGB"). name is used in messages only (may be
 * NULL). info may be NULL. Truncated or corrupt data is an error, as in Pillow. */
vlr_status vlr_image_decode(const uint8_t *bytes, size_t n, const char *name, const vlr_image_limits *lim,
                            vlr_image *out, vlr_image_file_info *info, vlr_err *e);

/* qwen_vl_utils / transformers smart_resize: both sides multiples of factor, area within
 * [min_pixels, max_pixels], aspect kept; Python round-half-to-even. Errors for aspect > 200. */
vlr_status vlr_smart_resize(int64_t height, int64_t width, int factor, int64_t min_pixels, int64_t max_pixels,
                            int64_t *out_h, int64_t *out_w, vlr_err *e);

/* The sizes an image of height x width gets, and what it costs, before any pixel is touched. */
typedef struct vlr_image_plan {
    int64_t fetch_h, fetch_w;     /* after qwen_vl_utils.fetch_image's smart_resize (opts) */
    int64_t resized_h, resized_w; /* after the processor's own smart_resize: the final size */
    uint64_t n_patches;           /* (resized_h / patch) * (resized_w / patch) */
    uint64_t n_tokens;            /* n_patches / merge^2: the image's placeholder tokens */
    uint64_t pixels;              /* decoded + resized pixels: the work of decoding and resizing */
} vlr_image_plan;

/* Plans an image of the given size with the item's opts (may be NULL): both smart_resize steps of
 * vlr_image_prepare, and the pixel cap (max_pixels, 0 = Pillow's) on the decoded size and on each
 * resized size (VLR_ERR_LIMIT). */
vlr_status vlr_image_plan_size(int64_t height, int64_t width, const vlr_image_opts *opts,
                               const vlr_preproc_config *pp, uint64_t max_pixels, vlr_image_plan *out, vlr_err *e);

/* VLR_ERR_LIMIT when the planned image takes more than max_tokens placeholder tokens (0 = no check). */
vlr_status vlr_image_check_tokens(const vlr_image_plan *plan, uint64_t max_tokens, vlr_err *e);

/* Pillow 9.4 Image.resize((out_w, out_h), Image.BICUBIC) on an RGB image, byte-exact. A same-size
 * resize is a copy. dst gets a new buffer (dst must not alias src). */
vlr_status vlr_image_resize_bicubic(const vlr_image *src, int out_w, int out_h, vlr_image *dst, vlr_err *e);
/* The same with the scalar reference loops only (the SIMD paths' twin, for tests and bench). */
vlr_status vlr_image_resize_bicubic_ref(const vlr_image *src, int out_w, int out_h, vlr_image *dst, vlr_err *e);

/* One image item after the processor. */
typedef struct vlr_prepared_image {
    vlr_image_file_info file;
    int resized_h, resized_w;         /* final size in pixels (multiples of patch*merge) */
    int grid_t, grid_h, grid_w;       /* image_grid_thw: (1, resized_h/patch, resized_w/patch) */
    size_t n_patches, patch_dim;      /* grid_t*grid_h*grid_w rows of 3*T*P*P (1176) floats */
    float *pixel_values;              /* [n_patches, patch_dim] float32, processor row order; each
                                         row is channel, frame, y, x */
} vlr_prepared_image;
void vlr_prepared_image_free(vlr_prepared_image *p); /* NULL is a no-op; leaves *p zeroed */

/* The whole chain for one image item: read the source; probe its header and plan it, so that the
 * pixel cap and lim->max_tokens are checked before any pixel is decoded; decode + to_rgb;
 * qwen_vl_utils fetch_image sizing (opts override the defaults; opts may be NULL), bicubic resize,
 * then the processor's own smart_resize with pp->min/max_pixels (resizing again only when the size
 * differs), rescale, normalise, repeat to temporal_patch_size, patchify. lim may be NULL
 * (defaults). Messages name the source. */
vlr_status vlr_image_prepare(const char *source, const char *base_dir, const vlr_image_opts *opts,
                             const vlr_preproc_config *pp, const vlr_image_limits *lim,
                             vlr_prepared_image *out, vlr_err *e);

/* The same from an already-decoded RGB image (file info left empty except the size). */
vlr_status vlr_image_prepare_rgb(const vlr_image *rgb, const vlr_image_opts *opts, const vlr_preproc_config *pp,
                                 vlr_prepared_image *out, vlr_err *e);

/* The processor's tail alone: rescale, normalise, repeat, patchify an RGB image whose sides are
 * multiples of patch_size*merge_size. out->file and the resized size are filled from rgb. */
vlr_status vlr_image_patchify(const vlr_image *rgb, const vlr_preproc_config *pp, vlr_prepared_image *out,
                              vlr_err *e);

#endif
