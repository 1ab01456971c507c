/* admission.c: see admission.h. */
#include "admission.h"

size_t vlr_json_value_bound(const char *text, size_t len) {
    size_t n = 1;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\') i++; /* the escaped character cannot end the string */
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == ',' || c == ':') {
            n++;
        }
    }
    return n;
}

static bool is_remote(const char *source) {
    return strncmp(source, "http://", 7) == 0 || strncmp(source, "https://", 8) == 0;
}

vlr_status vlr_request_cost(const vlr_request *req, const vlr_preproc_config *pp, const vlr_image_limits *lim,
                            vlr_cost *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    uint64_t max_tokens = lim ? lim->max_tokens : 0;
    size_t index = 0;
    for (size_t m = 0; m < req->n_messages; m++) {
        const vlr_message *msg = &req->messages[m];
        for (size_t i = 0; i < msg->n_items; i++) {
            const vlr_content_item *it = &msg->items[i];
            if (it->kind != VLR_ITEM_IMAGE) continue;
            index++;
            if (!it->image || is_remote(it->image)) {
                out->n_remote++;
                continue;
            }
            vlr_image_file_info info;
            vlr_image_plan plan;
            vlr_image_opts opts = {.min_pixels = it->min_pixels, .max_pixels = it->max_pixels,
                                   .resized_height = it->resized_height, .resized_width = it->resized_width};
            vlr_status rc = vlr_image_probe_source(it->image, req->base_dir, lim, &info, e);
            if (rc) { /* the message names the source */
                vlr_err_prefix(e, "image %zu: ", index);
                return rc;
            }
            rc = vlr_image_plan_size(info.height, info.width, &opts, pp, lim ? lim->max_pixels : 0, &plan, e);
            if (!rc && max_tokens) {
                if (out->image_tokens >= max_tokens)
                    rc = vlr_fail(e, VLR_ERR_LIMIT, "the images before it take all %llu tokens of the limit "
                                  "(--max-tokens / max_position_embeddings)", (unsigned long long)max_tokens);
                else
                    rc = vlr_image_check_tokens(&plan, max_tokens - out->image_tokens, e);
            }
            if (rc) {
                vlr_err_prefix(e, "image %zu: %s: ", index, strncmp(it->image, "data:", 5) == 0 ? "data URI" : it->image);
                return rc;
            }
            out->n_images++;
            out->pixels += plan.pixels;
            out->image_tokens += plan.n_tokens;
        }
    }
    return VLR_OK;
}
