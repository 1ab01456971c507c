/* chat.c: the Qwen2-VL chat template (see chat.h). The template, for reference of what each branch
 * below reproduces:
 *   a default system turn "You are a helpful assistant." when the first message is not a system one;
 *   "<|im_start|>ROLE\n", then string content verbatim, or per list item: an image item ->
 *   "<|vision_start|><|image_pad|><|vision_end|>", a text item -> its text; then "<|im_end|>\n".
 *   add_generation_prompt is off (we score a finished answer) and add_vision_id is off. */
#include "chat.h"

static const char known_template[] =
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value = "
    "image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

bool vlr_chat_template_is_known(const char *tmpl, size_t len) {
    return len == sizeof known_template - 1 && memcmp(tmpl, known_template, len) == 0;
}

vlr_status vlr_chat_render(const vlr_request *req, vlr_buf *out, size_t *n_images, vlr_err *e) {
    *n_images = 0;
    for (size_t i = 0; i < req->n_messages; i++) {
        const vlr_message *m = &req->messages[i];
        if (!m->role || (strcmp(m->role, "system") && strcmp(m->role, "user") && strcmp(m->role, "assistant")))
            return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu]: role must be system, user or assistant", i);
        if (i == 0 && strcmp(m->role, "system") != 0)
            vlr_buf_puts(out, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n");
        vlr_buf_puts(out, "<|im_start|>");
        vlr_buf_puts(out, m->role);
        vlr_buf_puts(out, "\n");
        for (size_t j = 0; j < m->n_items; j++) {
            const vlr_content_item *it = &m->items[j];
            if (it->kind == VLR_ITEM_IMAGE || it->kind == VLR_ITEM_IMAGE_BYTES || it->kind == VLR_ITEM_IMAGE_PIXELS) {
                vlr_buf_puts(out, "<|vision_start|>" VLR_TOKEN_IMAGE_PAD "<|vision_end|>");
                (*n_images)++;
            } else if (it->kind == VLR_ITEM_TEXT) {
                if (it->text) vlr_buf_append(out, it->text, it->text_len);
            } else {
                return vlr_fail(e, VLR_ERR_INPUT, "messages[%zu].content[%zu]: unknown item kind", i, j);
            }
        }
        vlr_buf_puts(out, "<|im_end|>\n");
    }
    if (out->oom) return vlr_fail(e, VLR_ERR_NOMEM, "out of memory rendering the chat template");
    return VLR_OK;
}
