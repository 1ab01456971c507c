/* admission.h: what `vlreward serve` checks of a request body before any of its work is queued, so
 * that memory and time follow the work admitted, not the bytes sent:
 *   - the number of JSON values a body can make the parser build, counted before it is parsed;
 *   - the cost of a request's images from their headers alone (decoded and resized pixels, and
 *     placeholder tokens from the smart_resize grid), with the per-image pixel cap and the request's
 *     token limit applied before anything is decoded.
 * The library applies the same limits again when it scores (vlr_image_prepare), so a file that
 * changes between admission and scoring cannot pass them. */
#ifndef VLR_ADMISSION_H
#define VLR_ADMISSION_H

#include "common.h"
#include "config.h"
#include "image.h"

/* An upper bound of the values (DOM nodes) that parsing text can create, valid or not: every value
 * but the first follows a '[', ',' or ':' outside strings. One pass, no allocation. */
size_t vlr_json_value_bound(const char *text, size_t len);

typedef struct vlr_cost {
    size_t n_images;        /* images costed from their headers */
    size_t n_remote;        /* http(s) images: not costed here (their bytes are not fetched yet) */
    uint64_t pixels;        /* decoded + resized pixels of the costed images */
    uint64_t image_tokens;  /* their placeholder tokens */
} vlr_cost;

/* Costs every local and data: image of req from its header (vlr_image_probe_source, then
 * vlr_image_plan_size with the item's min/max_pixels). VLR_ERR_LIMIT when an image is over
 * lim->max_pixels, or when the images together take more than lim->max_tokens tokens (0 = no token
 * check). Messages start with "image N: " (1-based, in request order, as the library numbers them). */
vlr_status vlr_request_cost(const vlr_request *req, const vlr_preproc_config *pp, const vlr_image_limits *lim,
                            vlr_cost *out, vlr_err *e);

#endif
