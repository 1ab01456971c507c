/* chat.h: the Qwen2-VL chat template, rendered natively.
 *
 * vlreward does not embed a Jinja interpreter: it renders the one template Qwen2-VL / Qwen2.5-VL
 * checkpoints ship, exactly as transformers' apply_chat_template(messages, tokenize=False,
 * add_generation_prompt=False) does, and checks at load time whether the model's own template is that
 * one (vlr_chat_template_is_known) so a different template is reported instead of silently ignored. */
#ifndef VLR_CHAT_H
#define VLR_CHAT_H

#include "common.h"

#define VLR_TOKEN_IMAGE_PAD "<|image_pad|>"

/* Renders req into out (appending). Each image item becomes
 * <|vision_start|><|image_pad|><|vision_end|> (one pad; the caller expands it per image grid).
 * *n_images receives the number of image items, in order of appearance. */
vlr_status vlr_chat_render(const vlr_request *req, vlr_buf *out, size_t *n_images, vlr_err *e);

/* True when template (len bytes) is the Qwen2-VL template this renderer implements. */
bool vlr_chat_template_is_known(const char *tmpl, size_t len);

#endif
