/* serve_openrlhf.c: see serve_openrlhf.h. */
#include "serve_openrlhf.h"

#include <math.h>
#include <stdlib.h>

#define IM_START "<|im_start|>"
#define IM_END "<|im_end|>"
#define VISION_START "<|vision_start|>"
#define VISION_END "<|vision_end|>"
#define END_OF_TEXT "<|endoftext|>" /* Qwen's pad and end token: a decoded sequence may end with some */

static const char *find(const char *s, const char *end, const char *needle) {
    size_t n = strlen(needle);
    return end - s >= (ptrdiff_t)n ? memmem(s, (size_t)(end - s), needle, n) : NULL;
}

/* Skips whitespace and end-of-text tokens: what may stand between turns and after the last one. */
static const char *skip_filler(const char *s, const char *end) {
    size_t eot = strlen(END_OF_TEXT);
    for (;;) {
        while (s < end && (*s == '\n' || *s == ' ' || *s == '\r' || *s == '\t')) s++;
        if ((size_t)(end - s) >= eot && memcmp(s, END_OF_TEXT, eot) == 0) s += eot;
        else return s;
    }
}

static void text_item(vlr_buf *out, bool *first, const char *s, size_t n) {
    if (!n) return;
    vlr_buf_puts(out, *first ? "{\"type\": \"text\", \"text\": " : ", {\"type\": \"text\", \"text\": ");
    vlr_buf_json_string(out, s, n);
    vlr_buf_puts(out, "}");
    *first = false;
}

/* The content of one turn: text, with each vision span an image item (the next of images). */
static vlr_status content(const char *s, const char *end, const vlr_json *images, size_t *next_image, vlr_buf *out,
                          vlr_err *e) {
    bool first = true;
    vlr_buf_puts(out, "[");
    for (;;) {
        const char *vs = find(s, end, VISION_START);
        if (!vs) break;
        text_item(out, &first, s, (size_t)(vs - s));
        const char *ve = find(vs, end, VISION_END);
        if (!ve) return vlr_fail(e, VLR_ERR_FORMAT, "a " VISION_START " without its " VISION_END);
        size_t k = (*next_image)++;
        const vlr_json *src = vlr_json_at(images, k);
        if (!vlr_json_is(src, VLR_JSON_STRING))
            return vlr_fail(e, VLR_ERR_INPUT, "image placeholder %zu has no image: %s", k + 1,
                            src ? "the images are not strings" : "give the sample's images in \"images\" or in a label "
                                                                 "{\"images\": [...]}");
        vlr_buf_puts(out, first ? "{\"type\": \"image\", \"image\": " : ", {\"type\": \"image\", \"image\": ");
        vlr_buf_json_string(out, src->str, src->len);
        vlr_buf_puts(out, "}");
        first = false;
        s = ve + strlen(VISION_END);
    }
    text_item(out, &first, s, (size_t)(end - s));
    vlr_buf_puts(out, "]");
    return VLR_OK;
}

vlr_status serve_query_to_request(const char *query, size_t len, const vlr_json *images, size_t id, vlr_buf *out,
                                  vlr_err *e) {
    const char *s = query, *end = query + len;
    const char *last_role = NULL;
    size_t last_role_len = 0, next_image = 0, turns = 0;
    vlr_buf_printf(out, "{\"id\": %zu, \"messages\": [", id);
    s = skip_filler(s, end);
    while (s < end) {
        if ((size_t)(end - s) < strlen(IM_START) || memcmp(s, IM_START, strlen(IM_START)) != 0)
            return vlr_fail(e, VLR_ERR_FORMAT, "query byte %zu: text outside any " IM_START "ROLE ... " IM_END " turn",
                            (size_t)(s - query));
        const char *role = s + strlen(IM_START), *nl = memchr(role, '\n', (size_t)(end - role));
        if (!nl) return vlr_fail(e, VLR_ERR_FORMAT, "query byte %zu: a turn without a newline after its role",
                                 (size_t)(role - query));
        const char *body = nl + 1, *close = find(body, end, IM_END);
        /* the last turn may lack its <|im_end|>: a response cut at the length limit */
        const char *body_end = close ? close : end;
        if (!close) {
            size_t eot = strlen(END_OF_TEXT);
            while ((size_t)(body_end - body) >= eot && memcmp(body_end - eot, END_OF_TEXT, eot) == 0) body_end -= eot;
        }
        vlr_buf_puts(out, turns++ ? ", {\"role\": " : "{\"role\": ");
        vlr_buf_json_string(out, role, (size_t)(nl - role));
        vlr_buf_puts(out, ", \"content\": ");
        vlr_status rc = content(body, body_end, images, &next_image, out, e);
        if (rc) return rc;
        vlr_buf_puts(out, "}");
        last_role = role;
        last_role_len = (size_t)(nl - role);
        s = close ? skip_filler(close + strlen(IM_END), end) : end;
    }
    vlr_buf_puts(out, "]}");
    if (!turns) return vlr_fail(e, VLR_ERR_INPUT, "the query holds no " IM_START "ROLE turn");
    if (last_role_len != 9 || memcmp(last_role, "assistant", 9) != 0)
        return vlr_fail(e, VLR_ERR_INPUT, "the query does not end with an assistant turn: nothing to score");
    size_t given = vlr_json_is(images, VLR_JSON_ARRAY) ? images->len : 0;
    if (next_image != given)
        return vlr_fail(e, VLR_ERR_INPUT, "the query has %zu image placeholder%s but %zu image%s given", next_image,
                        next_image == 1 ? "" : "s", given, given == 1 ? " was" : "s were");
    return out->oom ? vlr_fail(e, VLR_ERR_NOMEM, "out of memory") : VLR_OK;
}

/* The images of sample i: body["images"][i], else a label {"images": [...]} (an object or its JSON
 * text; *label_doc then owns it). NULL: none. */
static const vlr_json *sample_images(const vlr_json *root, size_t i, vlr_json_doc **label_doc) {
    const vlr_json *all = vlr_json_get(root, "images");
    if (all) return vlr_json_at(all, i);
    const vlr_json *label = vlr_json_at(vlr_json_get(root, "labels"), i);
    if (vlr_json_is(label, VLR_JSON_STRING) && label->len && label->str[0] == '{') {
        vlr_err ignored;
        if (!(*label_doc = vlr_json_parse(label->str, label->len, &ignored))) return NULL; /* a plain-text label */
        label = vlr_json_root(*label_doc);
    }
    return vlr_json_get(label, "images");
}


void serve_get_reward(serve_pool *p, const char *body, size_t len, double fallback, const serve_watch *w,
                      serve_reply *out) {
    memset(out, 0, sizeof *out);
    out->status = 200;
    vlr_buf batch = {0};
    serve_reply inner = {0};
    vlr_json_doc *reply_doc = NULL;
    char **errors = NULL;
    double *rewards = NULL;
    size_t n = 0, n_errors = 0;
    vlr_json_doc *doc = serve_parse_body(p, body, len, "{\"query\": [...], \"prompts\": [...], \"labels\": [...]}", out);
    if (!doc) goto done;
    const vlr_json *root = vlr_json_root(doc), *query = vlr_json_get(root, "query");
    if (!vlr_json_is(query, VLR_JSON_ARRAY)) {
        serve_reply_error(out, 400, "query: expected a list of conversation texts, found %s",
                          query ? vlr_json_type_name(query) : "nothing");
        goto done;
    }
    const vlr_json *images = vlr_json_get(root, "images");
    if (images && !vlr_json_is(images, VLR_JSON_ARRAY)) {
        serve_reply_error(out, 400, "images: expected a list with one list of image sources per query");
        goto done;
    }
    n = query->len;
    out->n_requests = n;
    out->batch = true;
    errors = calloc(n ? n : 1, sizeof *errors);
    rewards = calloc(n ? n : 1, sizeof *rewards);
    if (!errors || !rewards) {
        serve_reply_error(out, 503, "out of memory");
        goto done;
    }
    /* the samples that parse go to /score's path as one batch, in order */
    vlr_buf_puts(&batch, "{\"requests\": [");
    size_t n_batch = 0;
    for (size_t i = 0; i < n; i++) {
        vlr_err e = {0};
        vlr_json_doc *label_doc = NULL;
        const vlr_json *q = &query->items[i];
        size_t mark = batch.len;
        if (n_batch) vlr_buf_puts(&batch, ", ");
        vlr_status rc = vlr_json_is(q, VLR_JSON_STRING)
                            ? serve_query_to_request(q->str, q->len, sample_images(root, i, &label_doc), i, &batch, &e)
                            : vlr_fail(&e, VLR_ERR_FORMAT, "expected a conversation text, found %s", vlr_json_type_name(q));
        vlr_json_free(label_doc);
        if (rc == VLR_OK) {
            n_batch++;
            continue;
        }
        batch.len = mark;
        if (!(errors[i] = strdup(e.msg))) {
            serve_reply_error(out, 503, "out of memory");
            goto done;
        }
        n_errors++;
    }
    vlr_buf_puts(&batch, "]}");
    if (batch.oom) {
        serve_reply_error(out, 503, "out of memory");
        goto done;
    }
    if (n_batch) {
        serve_score_body(p, batch.data, batch.len, w, &inner);
        out->tokens = inner.tokens;
        if (inner.status != 200) { /* the body's fate: 413, 503, 504, gone... */
            vlr_buf_free(&out->body);
            *out = inner;
            memset(&inner, 0, sizeof inner);
            goto done;
        }
        vlr_err e;
        reply_doc = vlr_json_parse(inner.body.data, inner.body.len, &e);
        const vlr_json *results = reply_doc ? vlr_json_get(vlr_json_root(reply_doc), "results") : NULL;
        if (!vlr_json_is(results, VLR_JSON_ARRAY) || results->len != n_batch) {
            serve_reply_error(out, 500, "internal error: the batch reply does not match the samples");
            goto done;
        }
        for (size_t i = 0, k = 0; i < n; i++) {
            if (errors[i]) continue;
            const vlr_json *r = &results->items[k++];
            const vlr_json *score = vlr_json_get(r, "score"), *err = vlr_json_get(r, "error");
            if (vlr_json_is(score, VLR_JSON_NUMBER)) {
                rewards[i] = score->number; /* written with the digits that read back exactly */
            } else {
                if (!(errors[i] = strdup(vlr_json_is(err, VLR_JSON_STRING) ? err->str : "not scored"))) {
                    serve_reply_error(out, 503, "out of memory");
                    goto done;
                }
                n_errors++;
            }
        }
    }
    out->body.len = 0;
    bool fails = n_errors && isnan(fallback);
    if (fails) {
        out->status = 422;
        vlr_buf_printf(&out->body, "{\"error\": \"%zu of %zu samples cannot be scored (a server started with "
                                   "--fallback-reward X gives them X)\", ", n_errors, n);
    } else {
        vlr_buf_puts(&out->body, "{\"rewards\": [");
        for (size_t i = 0; i < n; i++) {
            if (i) vlr_buf_puts(&out->body, ", ");
            vlr_buf_json_double(&out->body, errors[i] ? fallback : rewards[i]);
        }
        vlr_buf_puts(&out->body, "], \"scores\": [");
        for (size_t i = 0; i < n; i++) {
            if (i) vlr_buf_puts(&out->body, ", ");
            vlr_buf_json_double(&out->body, errors[i] ? fallback : rewards[i]);
        }
        /* OpenRLHF turns every extra_logs value into a tensor: numbers only, the messages go beside */
        vlr_buf_puts(&out->body, "], \"extra_logs\": {\"vlreward_failed\": [");
        for (size_t i = 0; i < n; i++) vlr_buf_puts(&out->body, i ? (errors[i] ? ", 1" : ", 0") : (errors[i] ? "1" : "0"));
        vlr_buf_puts(&out->body, "]}, ");
    }
    vlr_buf_puts(&out->body, "\"errors\": [");
    for (size_t i = 0, k = 0; i < n; i++) {
        if (!errors[i]) continue;
        vlr_buf_printf(&out->body, "%s{\"index\": %zu, \"error\": ", k++ ? ", " : "", i);
        vlr_buf_json_string(&out->body, errors[i], strlen(errors[i]));
        vlr_buf_puts(&out->body, "}");
    }
    vlr_buf_puts(&out->body, "]}");
done:
    serve_reply_check_oom(out);
    for (size_t i = 0; errors && i < n; i++) free(errors[i]);
    free(errors);
    free(rewards);
    vlr_json_free(reply_doc);
    vlr_buf_free(&inner.body);
    vlr_buf_free(&batch);
    vlr_json_free(doc);
}
