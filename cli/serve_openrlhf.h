/* serve_openrlhf.h: POST /get_reward, the remote reward-model contract of OpenRLHF
 * (openrlhf/utils/agent.py _fetch_rewards_via_http; openrlhf/cli/serve_rm.py answers it for text
 * reward models): {"query": [TEXT, ...], "prompts": [...], "labels": [...]} ->
 * {"rewards": [R, ...], "scores": [R, ...], "extra_logs": {...}}.
 *
 * Each query is the whole conversation as the policy's Qwen-style chat template rendered it
 * (<|im_start|>ROLE\n...<|im_end|>\n...). It is parsed back into turns; each <|vision_start|>...
 * <|vision_end|> span (whatever the policy put inside: one <|image_pad|> or one per vision token) is
 * an image, matched in order to the sample's images: body["images"][i], a list of sources, or else a
 * label that is (or is the JSON text of) {"images": [...]}: OpenRLHF has no image channel of its
 * own. The conversation must end with the assistant turn, which is scored. The samples then go
 * through /score's path as one batch, so a reward is the /score score of the same conversation,
 * bit for bit. */
#ifndef VLR_CLI_SERVE_OPENRLHF_H
#define VLR_CLI_SERVE_OPENRLHF_H

#include "serve.h"

/* Answers a /get_reward body. A sample that cannot be scored fails the call (422, one message per
 * failed sample) unless fallback is a number (not NaN): then its reward is fallback. */
void serve_get_reward(serve_pool *p, const char *body, size_t len, double fallback, const serve_watch *w,
                      serve_reply *out);

/* Parses one rendered conversation into a request object {"id": id, "messages": [...]} appended to
 * out, with images (strings; n_images of them) in the order of the query's vision spans. */
vlr_status serve_query_to_request(const char *query, size_t len, const vlr_json *images, size_t id, vlr_buf *out,
                                  vlr_err *e);

#endif
