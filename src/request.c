/* request.c: JSON request -> vlr_request. Validation happens here, at the edge: every message has a
 * known role and a string or list content, every item is text or an image with a string source, the
 * conversation ends with the assistant turn. Messages name the offending field by its JSON path
 * ("messages[1].content[0].type"). Video items are refused: the engine scores images only. */
#include "request.h"

#include <stdio.h>
#include <stdlib.h>

void vlr_request_id_json(const vlr_json *obj, size_t line_no, vlr_buf *out) {
    const vlr_json *id = vlr_json_get(obj, "id");
    if (vlr_json_is(id, VLR_JSON_STRING)) vlr_buf_json_string(out, id->str, id->len);
    else if (vlr_json_is(id, VLR_JSON_NUMBER)) vlr_buf_append(out, id->str, id->len);
    else vlr_buf_printf(out, "%zu", line_no);
}

static bool is_role(const vlr_json *v) {
    /* Whole-string match: "user\u0000x" is not "user" (the template would render all of it). */
    if (!vlr_json_is(v, VLR_JSON_STRING) || strlen(v->str) != v->len) return false;
    return strcmp(v->str, "system") == 0 || strcmp(v->str, "user") == 0 ||
           strcmp(v->str, "assistant") == 0;
}

/* An optional integer field of an image item: absent or null = 0. */
static vlr_status item_int(const vlr_json *item, const char *key, const char *path, int64_t *out,
                           vlr_err *e) {
    const vlr_json *v = vlr_json_get(item, key);
    *out = 0;
    if (!v || v->type == VLR_JSON_NULL) return VLR_OK;
    if (!vlr_json_int(v, out) || *out <= 0)
        return vlr_fail(e, VLR_ERR_INPUT, "%s.%s: expected a positive integer, found %s", path, key,
                        vlr_json_type_name(v));
    return VLR_OK;
}

/* The source of an image item, or NULL with an error. */
static const char *image_source(const vlr_json *item, const char *path, vlr_err *e) {
    const vlr_json *v = vlr_json_get(item, "image");
    const char *key = "image";
    if (!v) {
        key = "image_url";
        v = vlr_json_get(item, "image_url");
        if (vlr_json_is(v, VLR_JSON_OBJECT)) {
            v = vlr_json_get(v, "url");
            key = "image_url.url";
        }
    }
    if (!vlr_json_is(v, VLR_JSON_STRING) || v->len == 0) {
        vlr_fail(e, VLR_ERR_INPUT, "%s.%s: expected a non-empty string (path, file://, data: or http(s) URL), found %s",
                 path, key, vlr_json_type_name(v));
        return NULL;
    }
    if (strlen(v->str) != v->len) {
        vlr_fail(e, VLR_ERR_INPUT, "%s.%s: NUL byte inside the image source", path, key);
        return NULL;
    }
    return v->str;
}

static vlr_status parse_image_item(const vlr_json *it, const char *path, vlr_content_item *out,
                                   vlr_err *e) {
    out->kind = VLR_ITEM_IMAGE;
    out->image = image_source(it, path, e);
    if (!out->image) return VLR_ERR_INPUT;
    vlr_status rc;
    if ((rc = item_int(it, "min_pixels", path, &out->min_pixels, e)) ||
        (rc = item_int(it, "max_pixels", path, &out->max_pixels, e)) ||
        (rc = item_int(it, "resized_height", path, &out->resized_height, e)) ||
        (rc = item_int(it, "resized_width", path, &out->resized_width, e)))
        return rc;
    return VLR_OK;
}

/* Classifies a content item the way the Qwen2-VL chat template does: image first (type "image" or
 * an "image"/"image_url" key), then video, then anything with "text". */
static vlr_status parse_item(const vlr_json *it, const char *path, vlr_content_item *out,
                             bool *emitted, vlr_err *e) {
    *emitted = true;
    memset(out, 0, sizeof *out);
    if (!vlr_json_is(it, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_INPUT, "%s: expected an object, found %s", path, vlr_json_type_name(it));
    const vlr_json *type = vlr_json_get(it, "type");
    if (type && type->type != VLR_JSON_STRING)
        return vlr_fail(e, VLR_ERR_INPUT, "%s.type: expected a string, found %s", path, vlr_json_type_name(type));
    const char *t = type ? type->str : "";
    if (strcmp(t, "image") == 0 || vlr_json_get(it, "image") || vlr_json_get(it, "image_url"))
        return parse_image_item(it, path, out, e);
    if (strcmp(t, "video") == 0 || vlr_json_get(it, "video"))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: video items are not supported", path);
    const vlr_json *text = vlr_json_get(it, "text");
    if (text) {
        if (!vlr_json_is(text, VLR_JSON_STRING))
            return vlr_fail(e, VLR_ERR_INPUT, "%s.text: expected a string, found %s", path, vlr_json_type_name(text));
        out->kind = VLR_ITEM_TEXT;
        out->text = text->str;
        out->text_len = text->len;
        return VLR_OK;
    }
    if (type && strcmp(t, "text") != 0)
        return vlr_fail(e, VLR_ERR_INPUT, "%s.type: unknown content type \"%s\"", path, t);
    *emitted = false; /* the template emits nothing for such an item */
    return VLR_OK;
}

/* The items of a content list (path: its place, for messages) into out, the emitted ones only; their
 * count in *n. */
static vlr_status parse_content_list(const vlr_json *content, const char *path, vlr_content_item *out, size_t *n,
                                     vlr_err *e) {
    *n = 0;
    for (size_t j = 0; j < content->len; j++) {
        char item_path[160];
        snprintf(item_path, sizeof item_path, "%s[%zu]", path, j);
        bool emitted;
        vlr_status rc = parse_item(&content->items[j], item_path, &out[*n], &emitted, e);
        if (rc) return rc;
        if (emitted) (*n)++;
    }
    return VLR_OK;
}

/* Counts the items a request needs so that one allocation holds them all. */
static size_t count_items(const vlr_json *messages) {
    size_t n = 0;
    for (size_t i = 0; i < messages->len; i++) {
        const vlr_json *c = vlr_json_get(&messages->items[i], "content");
        n += vlr_json_is(c, VLR_JSON_ARRAY) ? c->len : 1;
    }
    return n;
}

/* The messages, plus one empty slot at the end for a group's answers (extra = 1). */
static vlr_status parse_messages(const vlr_json *messages, size_t extra, vlr_parsed_request *r, vlr_err *e) {
    if (messages->len == 0) return vlr_fail(e, VLR_ERR_INPUT, "messages: empty conversation");
    r->messages = vlr_calloc(messages->len + extra, sizeof *r->messages, e);
    r->items = vlr_calloc(count_items(messages), sizeof *r->items, e);
    if (!r->messages || !r->items) return VLR_ERR_NOMEM;
    size_t n_items = 0;
    char path[96];
    for (size_t i = 0; i < messages->len; i++) {
        const vlr_json *m = &messages->items[i];
        snprintf(path, sizeof path, "messages[%zu]", i);
        if (!vlr_json_is(m, VLR_JSON_OBJECT))
            return vlr_fail(e, VLR_ERR_INPUT, "%s: expected an object, found %s", path, vlr_json_type_name(m));
        const vlr_json *role = vlr_json_get(m, "role");
        if (!is_role(role)) {
            if (vlr_json_is(role, VLR_JSON_STRING) && strlen(role->str) != role->len)
                return vlr_fail(e, VLR_ERR_INPUT, "%s.role: NUL byte inside the role", path);
            if (vlr_json_is(role, VLR_JSON_STRING))
                return vlr_fail(e, VLR_ERR_INPUT, "%s.role: unknown role \"%s\" (expected system, user or assistant)",
                                path, role->str);
            return vlr_fail(e, VLR_ERR_INPUT, "%s.role: expected a string, found %s", path, vlr_json_type_name(role));
        }
        vlr_message *msg = &r->messages[i];
        msg->role = role->str;
        msg->items = r->items + n_items;
        const vlr_json *content = vlr_json_get(m, "content");
        if (vlr_json_is(content, VLR_JSON_STRING)) {
            vlr_content_item *it = &r->items[n_items++];
            it->kind = VLR_ITEM_TEXT;
            it->text = content->str;
            it->text_len = content->len;
            msg->n_items = 1;
        } else if (vlr_json_is(content, VLR_JSON_ARRAY)) {
            char list_path[128];
            snprintf(list_path, sizeof list_path, "%s.content", path);
            vlr_status rc = parse_content_list(content, list_path, &r->items[n_items], &msg->n_items, e);
            if (rc) return rc;
            n_items += msg->n_items;
        } else {
            return vlr_fail(e, VLR_ERR_INPUT, "%s.content: expected a string or a list of items, found %s",
                            path, vlr_json_type_name(content));
        }
    }
    r->req.messages = r->messages;
    r->req.n_messages = messages->len + extra;
    return VLR_OK;
}

/* Shorthand {"image"|"images", "question", "answer"}: user turn (images, question), assistant turn
 * (for a group, an empty slot for its answers). */
static vlr_status parse_shorthand(const vlr_json *obj, bool group, vlr_parsed_request *r, vlr_err *e) {
    const vlr_json *question = vlr_json_get(obj, "question");
    const vlr_json *answer = vlr_json_get(obj, "answer");
    const vlr_json *image = vlr_json_get(obj, "image");
    const vlr_json *images = vlr_json_get(obj, "images");
    if (!vlr_json_is(question, VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_INPUT, "question: expected a string, found %s", vlr_json_type_name(question));
    if (!group && !vlr_json_is(answer, VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_INPUT, "answer: expected a string (the assistant turn to score), found %s",
                        vlr_json_type_name(answer));
    if (image && images) return vlr_fail(e, VLR_ERR_INPUT, "give either \"image\" or \"images\", not both");
    size_t n_images = 0;
    if (image) n_images = 1;
    if (images) {
        if (!vlr_json_is(images, VLR_JSON_ARRAY))
            return vlr_fail(e, VLR_ERR_INPUT, "images: expected a list, found %s", vlr_json_type_name(images));
        n_images = images->len;
    }
    r->messages = vlr_calloc(2, sizeof *r->messages, e);
    r->items = vlr_calloc(n_images + 2, sizeof *r->items, e);
    if (!r->messages || !r->items) return VLR_ERR_NOMEM;
    for (size_t i = 0; i < n_images; i++) {
        const vlr_json *src = image ? image : &images->items[i];
        char path[64];
        if (image) snprintf(path, sizeof path, "image");
        else snprintf(path, sizeof path, "images[%zu]", i);
        vlr_content_item *it = &r->items[i];
        if (vlr_json_is(src, VLR_JSON_OBJECT)) { /* {"image": ..., "max_pixels": ...} */
            vlr_status rc = parse_image_item(src, path, it, e);
            if (rc) return rc;
        } else if (vlr_json_is(src, VLR_JSON_STRING) && src->len && strlen(src->str) == src->len) {
            it->kind = VLR_ITEM_IMAGE;
            it->image = src->str;
        } else {
            return vlr_fail(e, VLR_ERR_INPUT, "%s: expected an image source string, found %s", path,
                            vlr_json_type_name(src));
        }
    }
    vlr_content_item *q = &r->items[n_images], *a = &r->items[n_images + 1];
    q->kind = VLR_ITEM_TEXT;
    q->text = question->str;
    q->text_len = question->len;
    a->kind = VLR_ITEM_TEXT;
    a->text = group ? "" : answer->str;
    a->text_len = group ? 0 : answer->len;
    r->messages[0] = (vlr_message){.role = "user", .items = r->items, .n_items = n_images + 1};
    r->messages[1] = (vlr_message){.role = "assistant", .items = a, .n_items = group ? 0 : 1};
    r->req.messages = r->messages;
    r->req.n_messages = 2;
    return VLR_OK;
}

/* "answers": each a string or an assistant content list, as the assistant turns of a group. */
static vlr_status parse_answers(const vlr_json *answers, vlr_parsed_request *r, vlr_err *e) {
    if (!vlr_json_is(answers, VLR_JSON_ARRAY))
        return vlr_fail(e, VLR_ERR_INPUT, "answers: expected a list, found %s", vlr_json_type_name(answers));
    if (answers->len == 0 || answers->len > VLR_MAX_ANSWERS)
        return vlr_fail(e, VLR_ERR_INPUT, "answers: %zu answers (a group has 1 to %d)", answers->len, VLR_MAX_ANSWERS);
    size_t n_items = 0;
    for (size_t i = 0; i < answers->len; i++)
        n_items += vlr_json_is(&answers->items[i], VLR_JSON_ARRAY) ? answers->items[i].len : 1;
    r->answers = vlr_calloc(answers->len, sizeof *r->answers, e);
    r->answer_items = vlr_calloc(n_items ? n_items : 1, sizeof *r->answer_items, e);
    if (!r->answers || !r->answer_items) return VLR_ERR_NOMEM;
    size_t used = 0;
    for (size_t i = 0; i < answers->len; i++) {
        const vlr_json *a = &answers->items[i];
        vlr_message *m = &r->answers[i];
        *m = (vlr_message){.role = "assistant", .items = r->answer_items + used};
        if (vlr_json_is(a, VLR_JSON_STRING)) {
            r->answer_items[used++] = (vlr_content_item){.kind = VLR_ITEM_TEXT, .text = a->str, .text_len = a->len};
            m->n_items = 1;
        } else if (vlr_json_is(a, VLR_JSON_ARRAY)) {
            char path[64];
            snprintf(path, sizeof path, "answers[%zu]", i);
            vlr_status rc = parse_content_list(a, path, &r->answer_items[used], &m->n_items, e);
            if (rc) return rc;
            used += m->n_items;
        } else {
            return vlr_fail(e, VLR_ERR_INPUT, "answers[%zu]: expected a string or a list of items, found %s", i,
                            vlr_json_type_name(a));
        }
    }
    r->n_answers = answers->len;
    return VLR_OK;
}

void vlr_parsed_request_answer(vlr_parsed_request *r, size_t i) {
    if (r->n_answers && i < r->n_answers) r->messages[r->req.n_messages - 1] = r->answers[i];
}

vlr_status vlr_request_from_json(const vlr_json *obj, size_t line_no, const char *base_dir,
                                 vlr_parsed_request *out, vlr_err *e) {
    vlr_buf_free(&out->id_json);
    vlr_request_id_json(obj, line_no, &out->id_json);
    if (!vlr_json_is(obj, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_INPUT, "expected a JSON object, found %s", vlr_json_type_name(obj));
    const vlr_json *id = vlr_json_get(obj, "id");
    if (id && id->type != VLR_JSON_STRING && id->type != VLR_JSON_NUMBER)
        return vlr_fail(e, VLR_ERR_INPUT, "id: expected a string or a number, found %s", vlr_json_type_name(id));
    const vlr_json *messages = vlr_json_get(obj, "messages");
    const vlr_json *answers = vlr_json_get(obj, "answers");
    if (answers && vlr_json_get(obj, "answer"))
        return vlr_fail(e, VLR_ERR_INPUT, "give either \"answer\" or \"answers\", not both");
    vlr_status rc;
    if (messages) {
        if (!vlr_json_is(messages, VLR_JSON_ARRAY))
            return vlr_fail(e, VLR_ERR_INPUT, "messages: expected a list, found %s", vlr_json_type_name(messages));
        if (answers && messages->len > 0) {
            const vlr_json *role = vlr_json_get(&messages->items[messages->len - 1], "role");
            if (vlr_json_is(role, VLR_JSON_STRING) && strcmp(role->str, "assistant") == 0)
                return vlr_fail(e, VLR_ERR_INPUT, "with \"answers\", the messages end with the user turn they answer "
                                "(the last message is an assistant turn)");
        }
        rc = parse_messages(messages, answers ? 1 : 0, out, e);
    } else if (vlr_json_get(obj, "question") || vlr_json_get(obj, "answer") || answers) {
        rc = parse_shorthand(obj, answers != NULL, out, e);
    } else {
        return vlr_fail(e, VLR_ERR_INPUT,
                        "no \"messages\" and no \"question\"/\"answer\": nothing to score");
    }
    if (!rc && answers) rc = parse_answers(answers, out, e);
    if (rc) return rc;
    out->req.base_dir = base_dir;
    /* every answer in its place, then the first one left there */
    for (size_t i = out->n_answers; i-- > 1;) {
        vlr_parsed_request_answer(out, i);
        if ((rc = vlr_request_validate(&out->req, e))) return vlr_err_prefix(e, "answers[%zu]: ", i), rc;
    }
    vlr_parsed_request_answer(out, 0);
    return vlr_request_validate(&out->req, e);
}

static vlr_status validate_item(const vlr_content_item *it, size_t i, size_t j, vlr_err *e) {
    switch (it->kind) {
    case VLR_ITEM_TEXT:
        if (!it->text && it->text_len)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: text is NULL but text_len is %zu", i, j,
                            it->text_len);
        return VLR_OK;
    case VLR_ITEM_IMAGE:
        if (!it->image)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: image item without a source", i, j);
        return VLR_OK;
    case VLR_ITEM_IMAGE_BYTES:
        if (!it->image_bytes || !it->image_len)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: image bytes item without bytes", i, j);
        return VLR_OK;
    case VLR_ITEM_IMAGE_PIXELS:
        if (!it->pixels || it->width <= 0 || it->height <= 0)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: image pixels item needs pixels and a "
                            "positive width and height (got %dx%d)", i, j, it->width, it->height);
        if (it->stride && it->stride / 3 < (size_t)it->width)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: stride %zu is less than 3 * width (%d)", i,
                            j, it->stride, it->width);
        return VLR_OK;
    }
    return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: unknown item kind %d", i, j, (int)it->kind);
}

vlr_status vlr_request_validate(const vlr_request *req, vlr_err *e) {
    if (!req || !req->n_messages) return vlr_fail(e, VLR_ERR_INPUT, "messages: empty conversation");
    if (!req->messages) return vlr_fail(e, VLR_ERR_INPUT, "messages: NULL with n_messages %zu", req->n_messages);
    for (size_t i = 0; i < req->n_messages; i++) {
        const vlr_message *m = &req->messages[i];
        if (!m->role || (strcmp(m->role, "system") && strcmp(m->role, "user") && strcmp(m->role, "assistant")))
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].role: unknown role \"%s\" (expected system, user or "
                            "assistant)", i, m->role ? m->role : "(null)");
        if (!m->items && m->n_items)
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu]: items is NULL but n_items is %zu", i, m->n_items);
        for (size_t j = 0; j < m->n_items; j++) {
            vlr_status rc = validate_item(&m->items[j], i, j, e);
            if (rc) return rc;
        }
    }
    const vlr_message *last = &req->messages[req->n_messages - 1];
    if (strcmp(last->role, "assistant") != 0)
        return vlr_fail(e, VLR_ERR_INPUT,
                        "the last message is a %s turn: it must be the assistant turn to score", last->role);
    return VLR_OK;
}

vlr_status vlr_request_parse(const char *json, size_t len, size_t line_no, const char *base_dir,
                             vlr_parsed_request *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    out->doc = vlr_json_parse(json, len, e);
    if (!out->doc) {
        vlr_buf_printf(&out->id_json, "%zu", line_no);
        vlr_err_prefix(e, "invalid JSON: ");
        /* The parser's own code: FORMAT, or LIMIT (nesting) / NOMEM, which are not syntax errors. */
        return e ? e->code : VLR_ERR_FORMAT;
    }
    return vlr_request_from_json(vlr_json_root(out->doc), line_no, base_dir, out, e);
}

void vlr_parsed_request_free(vlr_parsed_request *r) {
    if (!r) return;
    vlr_json_free(r->doc);
    vlr_buf_free(&r->id_json);
    free(r->messages);
    free(r->items);
    free(r->answers);
    free(r->answer_items);
    memset(r, 0, sizeof *r);
}
