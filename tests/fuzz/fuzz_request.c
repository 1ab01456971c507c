/* fuzz_request.c: libFuzzer target for one request line: JSON -> vlr_request_parse (which calls
 * vlr_request_from_json) -> vlr_chat_render, the path every `vlreward score` / batch line takes.
 *
 * Checks, besides ASan/UBSan: the echoed id is always valid JSON (and equals the request's id when
 * it has a string or number one); a rejected request has a message; an accepted one ends with an
 * assistant turn and renders to exactly the text that transformers' apply_chat_template would give
 * for the same JSON. That expectation is computed here by a second, deliberately naive renderer
 * that walks the JSON document as the Jinja template does (`message['content'] is string`,
 * `content['type'] == 'image' or 'image' in content or 'image_url' in content`, `'text' in content`,
 * comparing whole strings with their lengths, NUL bytes included), so any disagreement between the
 * request reader + chat renderer and the template is a finding. Inputs we reject are not judged
 * against the template (refusing e.g. video items or non-string text is by design). */
#include <stdio.h>
#include <stdlib.h>

#include "chat.h"
#include "request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool str_eq(const vlr_json *v, const char *s) {
    return vlr_json_is(v, VLR_JSON_STRING) && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

/* Appends a string node's bytes; a non-string (which an accepted request cannot contain here)
 * renders as a marker that can never match our renderer's output. */
static void put_str(vlr_buf *out, const vlr_json *v) {
    if (vlr_json_is(v, VLR_JSON_STRING)) vlr_buf_append(out, v->str, v->len);
    else vlr_buf_puts(out, "\x01<not a string>\x01");
}

/* The Qwen2-VL template over the JSON document, for the "messages" shape. */
static size_t template_messages(const vlr_json *messages, vlr_buf *out) {
    size_t n_images = 0;
    for (size_t i = 0; i < messages->len; i++) {
        const vlr_json *m = &messages->items[i];
        const vlr_json *role = vlr_json_get(m, "role");
        if (i == 0 && !str_eq(role, "system"))
            vlr_buf_puts(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
        vlr_buf_puts(out, "<|im_start|>");
        put_str(out, role);
        vlr_buf_puts(out, "\n");
        const vlr_json *content = vlr_json_get(m, "content");
        if (vlr_json_is(content, VLR_JSON_STRING)) {
            put_str(out, content);
        } else if (vlr_json_is(content, VLR_JSON_ARRAY)) {
            for (size_t j = 0; j < content->len; j++) {
                const vlr_json *c = &content->items[j];
                const vlr_json *type = vlr_json_get(c, "type");
                if (str_eq(type, "image") || vlr_json_get(c, "image") || vlr_json_get(c, "image_url")) {
                    vlr_buf_puts(out, "<|vision_start|><|image_pad|><|vision_end|>");
                    n_images++;
                } else if (str_eq(type, "video") || vlr_json_get(c, "video")) {
                    vlr_buf_puts(out, "<|vision_start|><|video_pad|><|vision_end|>");
                } else if (vlr_json_get(c, "text")) {
                    put_str(out, vlr_json_get(c, "text"));
                }
            }
        } else {
            vlr_buf_puts(out, "\x01<bad content>\x01");
        }
        vlr_buf_puts(out, "<|im_end|>\n");
    }
    return n_images;
}

/* The shorthand {"image"|"images", "question", "answer"} as the user + assistant turns it stands for. */
static size_t template_shorthand(const vlr_json *obj, vlr_buf *out) {
    const vlr_json *images = vlr_json_get(obj, "images");
    size_t n_images = vlr_json_get(obj, "image") ? 1 : vlr_json_is(images, VLR_JSON_ARRAY) ? images->len : 0;
    vlr_buf_puts(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n");
    for (size_t i = 0; i < n_images; i++) vlr_buf_puts(out, "<|vision_start|><|image_pad|><|vision_end|>");
    put_str(out, vlr_json_get(obj, "question"));
    vlr_buf_puts(out, "<|im_end|>\n<|im_start|>assistant\n");
    put_str(out, vlr_json_get(obj, "answer"));
    vlr_buf_puts(out, "<|im_end|>\n");
    return n_images;
}

/* The echoed id must be one JSON value: the request's own id when it is a string or a number. */
static void check_id(const vlr_parsed_request *r) {
    if (!r->id_json.data || r->id_json.len == 0) abort();
    vlr_err e = {0};
    vlr_json_doc *id = vlr_json_parse(r->id_json.data, r->id_json.len, &e);
    if (!id) abort();
    const vlr_json *got = vlr_json_root(id);
    const vlr_json *want = r->doc ? vlr_json_get(vlr_json_root(r->doc), "id") : NULL;
    if (vlr_json_is(want, VLR_JSON_STRING)) {
        if (!vlr_json_is(got, VLR_JSON_STRING) || got->len != want->len || memcmp(got->str, want->str, got->len))
            abort();
    } else if (vlr_json_is(want, VLR_JSON_NUMBER)) {
        if (!vlr_json_is(got, VLR_JSON_NUMBER) || got->len != want->len || memcmp(got->str, want->str, got->len))
            abort();
    } else if (!vlr_json_is(got, VLR_JSON_NUMBER)) {
        abort(); /* otherwise the line number */
    }
    vlr_json_free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vlr_parsed_request r;
    vlr_err e = {0};
    vlr_status rc = vlr_request_parse((const char *)data, size, 7, "base", &r, &e);
    check_id(&r);
    if (rc != VLR_OK) {
        if (e.code != rc || !e.msg[0]) abort();
        vlr_parsed_request_free(&r);
        return 0;
    }
    if (r.req.n_messages == 0 || strcmp(r.req.messages[r.req.n_messages - 1].role, "assistant") != 0) abort();
    if (!r.req.base_dir || strcmp(r.req.base_dir, "base") != 0) abort();

    vlr_buf ours = {0}, want = {0};
    size_t n_images = 0, want_images;
    rc = vlr_chat_render(&r.req, &ours, &n_images, &e);
    if (rc != VLR_OK) {
        fprintf(stderr, "accepted request failed to render: %s\n", e.msg);
        abort();
    }
    const vlr_json *root = vlr_json_root(r.doc);
    const vlr_json *messages = vlr_json_get(root, "messages");
    want_images = messages ? template_messages(messages, &want) : template_shorthand(root, &want);
    if (ours.oom || want.oom) abort();
    if (n_images != want_images || ours.len != want.len || memcmp(ours.data, want.data, ours.len) != 0) {
        fprintf(stderr, "render differs from the template:\n ours (%zu images): %.*s\n want (%zu images): %.*s\n",
                n_images, (int)ours.len, ours.data, want_images, (int)want.len, want.data);
        abort();
    }
    /* Every image item the renderer counted carries a non-empty source without NUL. */
    size_t n_sources = 0;
    for (size_t i = 0; i < r.req.n_messages; i++)
        for (size_t j = 0; j < r.req.messages[i].n_items; j++) {
            const vlr_content_item *it = &r.req.messages[i].items[j];
            if (it->kind != VLR_ITEM_IMAGE) continue;
            if (!it->image || !it->image[0] || it->min_pixels < 0 || it->max_pixels < 0 ||
                it->resized_height < 0 || it->resized_width < 0)
                abort();
            n_sources++;
        }
    if (n_sources != n_images) abort();
    vlr_buf_free(&ours);
    vlr_buf_free(&want);
    vlr_parsed_request_free(&r);
    return 0;
}
