/* fuzz_admission.c: libFuzzer target for what `vlreward serve` does with a POST /score body before any
 * of it is queued (cli/serve.c): the JSON value bound, the parse, each request read and its images
 * costed from their headers (admission.c), then, for the data: images that were admitted, the real
 * preparation.
 *
 * Checks, besides ASan/UBSan: the value bound is never below the values the parser built (the DOM
 * size is known before parsing); every image item is either costed or counted as remote; an admitted
 * request's images take at most the token limit; and an image whose header was admitted and then
 * prepares successfully takes exactly the tokens its plan said (the probe and the decoder agree on
 * the size). Relative paths resolve against a folder that does not exist. */
#include <stdio.h>
#include <stdlib.h>

#include "admission.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t count_values(const vlr_json *v) {
    size_t n = 1;
    if (v->type == VLR_JSON_ARRAY || v->type == VLR_JSON_OBJECT)
        for (size_t i = 0; i < v->len; i++) n += count_values(&v->items[i]);
    return n;
}

static const vlr_preproc_config pp = {.min_pixels = 3136, .max_pixels = 12845056, .mean = {0.5f, 0.5f, 0.5f},
                                      .std = {0.5f, 0.5f, 0.5f}, .rescale_factor = 1.0 / 255, .patch_size = 14,
                                      .merge_size = 2, .temporal_patch_size = 2};

static void admit_one(const vlr_json *item, size_t index) {
    vlr_parsed_request r = {0};
    vlr_err e = {0};
    if (vlr_request_from_json(item, index, "/nonexistent-fuzz-dir", &r, &e) != VLR_OK) {
        if (!e.msg[0]) __builtin_trap();
        vlr_parsed_request_free(&r);
        return;
    }
    size_t images = 0;
    for (size_t m = 0; m < r.req.n_messages; m++)
        for (size_t i = 0; i < r.req.messages[m].n_items; i++) images += r.req.messages[m].items[i].kind == VLR_ITEM_IMAGE;
    vlr_image_limits lim = {.max_pixels = 1u << 20, .max_tokens = 2048, .n_threads = 1};
    vlr_cost cost;
    vlr_status rc = vlr_request_cost(&r.req, &pp, &lim, &cost, &e);
    if (rc == VLR_OK) {
        if (cost.n_images + cost.n_remote != images || cost.image_tokens > lim.max_tokens) __builtin_trap();
        /* the images of the first message that are data: URIs, prepared for real */
        const vlr_message *msg = &r.req.messages[0];
        for (size_t i = 0; i < msg->n_items; i++) {
            const vlr_content_item *it = &msg->items[i];
            if (it->kind != VLR_ITEM_IMAGE || strncmp(it->image, "data:", 5) != 0) continue;
            vlr_image_opts opts = {.min_pixels = it->min_pixels, .max_pixels = it->max_pixels,
                                   .resized_height = it->resized_height, .resized_width = it->resized_width};
            vlr_image_file_info info;
            vlr_image_plan plan;
            vlr_prepared_image out;
            if (vlr_image_probe_source(it->image, NULL, &lim, &info, &e) != VLR_OK ||
                vlr_image_plan_size(info.height, info.width, &opts, &pp, lim.max_pixels, &plan, &e) != VLR_OK)
                __builtin_trap(); /* admitted above: the same calls cannot fail now */
            if (vlr_image_prepare(it->image, NULL, &opts, &pp, &lim, &out, &e) == VLR_OK) {
                if (out.n_patches != plan.n_patches || out.file.width != info.width || out.file.height != info.height)
                    __builtin_trap();
                vlr_prepared_image_free(&out);
            }
        }
    } else if (!e.msg[0]) {
        __builtin_trap();
    }
    vlr_parsed_request_free(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    size_t bound = vlr_json_value_bound(text, size);
    if (bound > 65536) return 0; /* the server answers 413 here */
    vlr_err e = {0};
    vlr_json_doc *doc = vlr_json_parse(text, size, &e);
    if (!doc) return 0;
    const vlr_json *root = vlr_json_root(doc);
    if (count_values(root) > bound) __builtin_trap();
    const vlr_json *list = vlr_json_get(root, "requests");
    if (vlr_json_is(list, VLR_JSON_ARRAY)) {
        for (size_t i = 0; i < list->len && i < 16; i++) admit_one(&list->items[i], i);
    } else if (vlr_json_is(root, VLR_JSON_OBJECT)) {
        admit_one(root, 0);
    }
    vlr_json_free(doc);
    return 0;
}
