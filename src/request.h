/* request.h: one scoring request read from a JSON object (a line of `vlreward score` input) into the
 * public vlr_request structs, plus the id to echo back.
 *
 * Accepted shapes:
 *   {"id": ..., "messages": [{"role": "system"|"user"|"assistant", "content": STRING | [ITEM...]}...]}
 *     ITEM = {"type": "text", "text": ...} | {"type": "image", "image": SRC} | {"image": SRC}
 *          | {"type": "image_url", "image_url": {"url": SRC} | SRC}
 *     an image item may carry min_pixels, max_pixels, resized_height, resized_width (integers)
 *   {"id": ..., "image": SRC | "images": [SRC...], "question": TEXT, "answer": TEXT}
 *     = a user turn (the images, then the question) and an assistant turn (the answer).
 * The last message must be the assistant turn whose last token is scored. */
#ifndef VLR_REQUEST_H
#define VLR_REQUEST_H

#include "common.h"
#include "json.h"

typedef struct vlr_parsed_request {
    vlr_request req;          /* views into doc and the arrays below */
    vlr_buf id_json;          /* the id as JSON text, echoed as given (or the line number) */
    vlr_json_doc *doc;        /* owns every string the request points to */
    vlr_message *messages;
    vlr_content_item *items;
    /* A group ("answers": [A1, ..., AN] in place of the final assistant turn): the N assistant turns,
     * each put in turn as req's last message by vlr_parsed_request_answer (answers[0] after parsing).
     * vlr_score_answers (internal.h) scores answer 0 as a request, then the others as one batch of
     * suffixes after the prefix's KV cache; each score is that of the answer as a request of its own.
     * NULL otherwise. */
    vlr_message *answers;
    size_t n_answers;
    vlr_content_item *answer_items;
} vlr_parsed_request;

#define VLR_MAX_ANSWERS 1024 /* answers in one group */
/* Makes answer i of a group the request's last message. */
void vlr_parsed_request_answer(vlr_parsed_request *r, size_t i);

/* Parses one request. line_no becomes the id when the object has none. On failure the id is still
 * filled whenever it could be read, so the caller can report {"id": ..., "error": ...}. */
vlr_status vlr_request_parse(const char *json, size_t len, size_t line_no, const char *base_dir,
                             vlr_parsed_request *out, vlr_err *e);
/* Builds a request from an already-parsed JSON object (the doc stays owned by the caller and must
 * outlive out). */
vlr_status vlr_request_from_json(const vlr_json *obj, size_t line_no, const char *base_dir,
                                 vlr_parsed_request *out, vlr_err *e);
void vlr_parsed_request_free(vlr_parsed_request *r);

/* The checks every request gets, from JSON or from the C structs: at least one message, known
 * roles, complete items, and the last message the assistant turn whose last token is scored. */
vlr_status vlr_request_validate(const vlr_request *req, vlr_err *e);

/* Writes the id of obj as JSON text (string re-escaped, number as written) or line_no. */
void vlr_request_id_json(const vlr_json *obj, size_t line_no, vlr_buf *out);

#endif
