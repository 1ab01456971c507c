/* eval.c: dataset rows -> (chosen, rejected) requests, result lines, and the benchmark arithmetic of
 * eval.h. Each side of a pair is written out as a {"messages": [...]} request and read back with
 * vlr_request_parse, so both sides get exactly the validation (and the error messages) of a
 * `vlreward score` line. No model, no files: cli/cmd_eval.c runs the scoring. */
#include "eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "internal.h"

bool vlr_eval_format_parse(const char *name, vlr_eval_format *out) {
    if (strcmp(name, "pairs") == 0) *out = VLR_EVAL_PAIRS;
    else if (strcmp(name, "vlrewardbench") == 0) *out = VLR_EVAL_VLREWARDBENCH;
    else if (strcmp(name, "rewardbench") == 0) *out = VLR_EVAL_REWARDBENCH;
    else return false;
    return true;
}

bool vlr_eval_format_detect(const vlr_json *row, vlr_eval_format *out) {
    if (!vlr_json_is(row, VLR_JSON_OBJECT)) return false;
    bool chosen = vlr_json_get(row, "chosen") && vlr_json_get(row, "rejected");
    if (vlr_json_get(row, "human_ranking") && vlr_json_get(row, "response")) *out = VLR_EVAL_VLREWARDBENCH;
    else if (chosen && vlr_json_get(row, "prompt")) *out = VLR_EVAL_REWARDBENCH;
    else if (chosen) *out = VLR_EVAL_PAIRS;
    else return false;
    return true;
}

const char *vlr_eval_format_name(vlr_eval_format f) {
    switch (f) {
    case VLR_EVAL_PAIRS: return "pairs";
    case VLR_EVAL_VLREWARDBENCH: return "vlrewardbench";
    case VLR_EVAL_REWARDBENCH: return "rewardbench";
    }
    return "?";
}

/* ---- VL-RewardBench groups (cal.py) ------------------------------------------------------ */

static const char *const group_names[VLR_VLRB_N_GROUPS] = {"general", "hallucination", "reasoning"};

const char *vlr_vlrb_group_name(vlr_vlrb_group g) {
    return (unsigned)g < VLR_VLRB_N_GROUPS ? group_names[g] : "?";
}

/* cal.py get_id_prefix: min(find('_'), find('-')) ignoring -1, i.e. the first of either. */
size_t vlr_vlrb_source_len(const char *id, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (id[i] == '_' || id[i] == '-') return i;
    return len;
}

static bool prefix_is(const char *id, size_t n, const char *word) {
    return strlen(word) == n && memcmp(id, word, n) == 0;
}

/* cal.py get_dataset_from_id (exact, case-sensitive comparisons) followed by its group_mapping. */
vlr_vlrb_group vlr_vlrb_group_of(const char *id, size_t len, const char **dataset) {
    size_t n = vlr_vlrb_source_len(id, len);
    const char *ds = "vlfeedback";
    vlr_vlrb_group g = VLR_VLRB_GENERAL;
    if (prefix_is(id, n, "RLAIF")) ds = "rlaif-v", g = VLR_VLRB_HALLUCINATION;
    else if (prefix_is(id, n, "RLHF")) ds = "rlhf-v", g = VLR_VLRB_HALLUCINATION;
    else if (prefix_is(id, n, "mathverse") || prefix_is(id, n, "mmmu")) ds = "reasoning_tasks", g = VLR_VLRB_REASONING;
    else if (prefix_is(id, n, "wildvision")) ds = "wildvision-battle";
    else if (prefix_is(id, n, "hallucination")) ds = "povid", g = VLR_VLRB_HALLUCINATION;
    if (dataset) *dataset = ds;
    return g;
}

/* ---- RewardBench sections (rewardbench/constants.py) -------------------------------------- */

static const char *const section_names[VLR_RB_N_SECTIONS] = {"Chat", "Chat Hard", "Safety", "Reasoning"};

const char *vlr_rb_section_name(int section) {
    return section >= 0 && section < VLR_RB_N_SECTIONS ? section_names[section] : "?";
}

/* SUBSET_MAPPING with EXAMPLE_COUNTS as of reward-bench 6552e93 (the two xstest counts were swapped
 * before). math-prm has 447 rows but weight 984 ("upweighting to be equal to code": 6 hep-* subsets x
 * 164). */
static const struct {
    const char *subset;
    int section;
    int weight;
} rb_subsets[] = {
    {"alpacaeval-easy", VLR_RB_CHAT, 100},        {"alpacaeval-length", VLR_RB_CHAT, 95},
    {"alpacaeval-hard", VLR_RB_CHAT, 95},         {"mt-bench-easy", VLR_RB_CHAT, 28},
    {"mt-bench-med", VLR_RB_CHAT, 40},            {"mt-bench-hard", VLR_RB_CHAT_HARD, 37},
    {"llmbar-natural", VLR_RB_CHAT_HARD, 100},    {"llmbar-adver-neighbor", VLR_RB_CHAT_HARD, 134},
    {"llmbar-adver-GPTInst", VLR_RB_CHAT_HARD, 92}, {"llmbar-adver-GPTOut", VLR_RB_CHAT_HARD, 47},
    {"llmbar-adver-manual", VLR_RB_CHAT_HARD, 46}, {"refusals-dangerous", VLR_RB_SAFETY, 100},
    {"refusals-offensive", VLR_RB_SAFETY, 100},   {"xstest-should-refuse", VLR_RB_SAFETY, 154},
    {"xstest-should-respond", VLR_RB_SAFETY, 250}, {"donotanswer", VLR_RB_SAFETY, 136},
    {"math-prm", VLR_RB_REASONING, 984},          {"hep-cpp", VLR_RB_REASONING, 164},
    {"hep-go", VLR_RB_REASONING, 164},            {"hep-java", VLR_RB_REASONING, 164},
    {"hep-js", VLR_RB_REASONING, 164},            {"hep-python", VLR_RB_REASONING, 164},
    {"hep-rust", VLR_RB_REASONING, 164},
};

/* The leaderboard's "Prior Sets (0.5 weight)": the unweighted mean of these four
 * (analysis/get_benchmark_results.py, pref_columns). */
static const char *const rb_prior_sets[] = {"anthropic_helpful", "anthropic_hhh", "shp", "summarize"};

int vlr_rb_subset_section(const char *subset, double *weight) {
    *weight = 0;
    for (size_t i = 0; i < sizeof rb_subsets / sizeof rb_subsets[0]; i++)
        if (strcmp(subset, rb_subsets[i].subset) == 0) {
            *weight = rb_subsets[i].weight;
            return rb_subsets[i].section;
        }
    for (size_t i = 0; i < sizeof rb_prior_sets / sizeof rb_prior_sets[0]; i++)
        if (strcmp(subset, rb_prior_sets[i]) == 0) return -1;
    return -2;
}

/* ---- writing JSON back out ----------------------------------------------------------------- */

/* Appends a parsed node as JSON (numbers keep their text, strings are re-escaped). */
static void json_write(vlr_buf *b, const vlr_json *v) {
    vlr_jw w;
    vlr_jw_init(&w, b, 0);
    vlr_jw_value(&w, v);
}

static void write_text_message(vlr_buf *b, const char *role, const char *text, size_t len) {
    vlr_buf_printf(b, "{\"role\": \"%s\", \"content\": ", role);
    vlr_buf_json_string(b, text, len);
    vlr_buf_puts(b, "}");
}

/* ---- image sources ------------------------------------------------------------------------- */

/* The MIME type of encoded image bytes from their magic, NULL when unknown. */
static const char *sniff_mime(const uint8_t *m, size_t n) {
    if (n >= 8 && memcmp(m, "\x89PNG\r\n\x1a\n", 8) == 0) return "image/png";
    if (n >= 3 && m[0] == 0xff && m[1] == 0xd8 && m[2] == 0xff) return "image/jpeg";
    if (n >= 12 && memcmp(m, "RIFF", 4) == 0 && memcmp(m + 8, "WEBP", 4) == 0) return "image/webp";
    if (n >= 6 && (memcmp(m, "GIF87a", 6) == 0 || memcmp(m, "GIF89a", 6) == 0)) return "image/gif";
    if (n >= 2 && m[0] == 'B' && m[1] == 'M') return "image/bmp";
    return NULL;
}

static void write_data_uri(vlr_buf *out, const char *b64, size_t len) {
    uint8_t head[16];
    const char *mime = sniff_mime(head, vlr_base64_decode_head(b64, len, head, sizeof head));
    vlr_buf_printf(out, "data:%s;base64,", mime ? mime : "image/png");
    vlr_buf_append(out, b64, len);
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

vlr_status vlr_eval_image_source(const vlr_json *image, vlr_buf *out, vlr_err *e) {
    out->len = 0;
    if (vlr_json_is(image, VLR_JSON_OBJECT)) { /* the datasets Image feature: {"bytes", "path"} */
        const vlr_json *bytes = vlr_json_get(image, "bytes"), *path = vlr_json_get(image, "path");
        if (vlr_json_is(bytes, VLR_JSON_STRING) && bytes->len) {
            write_data_uri(out, bytes->str, bytes->len);
        } else if (bytes && bytes->type != VLR_JSON_NULL && bytes->type != VLR_JSON_STRING) {
            return vlr_fail(e, VLR_ERR_INPUT, "image.bytes: expected base64 text, found %s (export the bytes as "
                            "base64, see docs/eval.md)", vlr_json_type_name(bytes));
        } else if (vlr_json_is(path, VLR_JSON_STRING) && path->len) {
            vlr_buf_append(out, path->str, path->len);
        } else {
            return vlr_fail(e, VLR_ERR_INPUT, "image: neither \"bytes\" (base64) nor \"path\" is given");
        }
    } else if (vlr_json_is(image, VLR_JSON_STRING) && image->len) {
        const char *s = image->str;
        uint8_t head[16];
        size_t n = vlr_base64_decode_head(s, image->len, head, sizeof head);
        /* Plain base64 when it is all base64 alphabet and decodes to a known image magic, or is too
         * long to be a file name; a path with a '.' or a URI with ':' never qualifies. */
        if (!has_prefix(s, "data:") && image->len >= 16 && vlr_base64_is_text(s, image->len) &&
            (sniff_mime(head, n) || image->len >= 1024))
            write_data_uri(out, s, image->len);
        else
            vlr_buf_append(out, s, image->len);
    } else {
        return vlr_fail(e, VLR_ERR_INPUT, "image: expected a path, a data: URI, base64 text or {\"bytes\": base64}, "
                        "found %s", vlr_json_is(image, VLR_JSON_STRING) ? "an empty string" : vlr_json_type_name(image));
    }
    return out->oom ? vlr_fail(e, VLR_ERR_NOMEM, "image: out of memory") : VLR_OK;
}

/* ---- dataset rows ---------------------------------------------------------------------------- */

void vlr_eval_id_text(const vlr_json *row, size_t line_no, vlr_buf *out) {
    const vlr_json *id = vlr_json_get(row, "id");
    if (vlr_json_is(id, VLR_JSON_STRING) || vlr_json_is(id, VLR_JSON_NUMBER)) vlr_buf_append(out, id->str, id->len);
    else vlr_buf_printf(out, "%zu", line_no);
    if (!out->data) vlr_buf_puts(out, "");
}

static char *dup_string(const vlr_json *s, vlr_err *e) {
    char *out = vlr_malloc(s->len + 1, e);
    if (out) {
        memcpy(out, s->str, s->len);
        out[s->len] = '\0';
    }
    return out;
}

/* Appends the messages of an answer: a string is the assistant turn, a list its messages. */
static vlr_status write_answer(vlr_buf *b, const vlr_json *answer, const char *key, vlr_err *e) {
    if (vlr_json_is(answer, VLR_JSON_STRING)) {
        write_text_message(b, "assistant", answer->str, answer->len);
    } else if (vlr_json_is(answer, VLR_JSON_ARRAY) && answer->len) {
        for (size_t i = 0; i < answer->len; i++) {
            if (i) vlr_buf_puts(b, ", ");
            json_write(b, &answer->items[i]);
        }
    } else {
        return vlr_fail(e, VLR_ERR_INPUT, "%s: expected a string (the assistant turn) or a non-empty list of messages, "
                        "found %s", key, vlr_json_type_name(answer));
    }
    return VLR_OK;
}

/* "pairs": the conversation, as the comma-separated messages of a JSON list (no brackets). */
static vlr_status pairs_conversation(const vlr_json *row, vlr_buf *conv, vlr_err *e) {
    const vlr_json *messages = vlr_json_get(row, "messages");
    if (messages) {
        if (!vlr_json_is(messages, VLR_JSON_ARRAY))
            return vlr_fail(e, VLR_ERR_INPUT, "messages: expected a list, found %s", vlr_json_type_name(messages));
        for (size_t i = 0; i < messages->len; i++) {
            if (i) vlr_buf_puts(conv, ", ");
            json_write(conv, &messages->items[i]);
        }
        return VLR_OK;
    }
    /* Shorthand: one user turn, the images then the question (as request.c reads it). */
    const vlr_json *question = vlr_json_get(row, "question");
    const vlr_json *image = vlr_json_get(row, "image"), *images = vlr_json_get(row, "images");
    if (!vlr_json_is(question, VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_INPUT, "no \"messages\" and no \"question\" string: nothing to score (found %s)",
                        vlr_json_type_name(question));
    if (image && images) return vlr_fail(e, VLR_ERR_INPUT, "give either \"image\" or \"images\", not both");
    if (images && !vlr_json_is(images, VLR_JSON_ARRAY))
        return vlr_fail(e, VLR_ERR_INPUT, "images: expected a list, found %s", vlr_json_type_name(images));
    vlr_buf_puts(conv, "{\"role\": \"user\", \"content\": [");
    size_t n_images = image ? 1 : images ? images->len : 0;
    for (size_t i = 0; i < n_images; i++) {
        const vlr_json *src = image ? image : &images->items[i];
        if (vlr_json_is(src, VLR_JSON_OBJECT)) { /* {"image": ..., "max_pixels": ...} is an image item */
            json_write(conv, src);
        } else if (vlr_json_is(src, VLR_JSON_STRING)) {
            vlr_buf_puts(conv, "{\"type\": \"image\", \"image\": ");
            json_write(conv, src);
            vlr_buf_puts(conv, "}");
        } else if (image) {
            return vlr_fail(e, VLR_ERR_INPUT, "image: expected an image source string, found %s", vlr_json_type_name(src));
        } else {
            return vlr_fail(e, VLR_ERR_INPUT, "images[%zu]: expected an image source string, found %s", i,
                            vlr_json_type_name(src));
        }
        vlr_buf_puts(conv, ", ");
    }
    vlr_buf_puts(conv, "{\"type\": \"text\", \"text\": ");
    json_write(conv, question);
    vlr_buf_puts(conv, "}]}");
    return VLR_OK;
}

/* Appends text with every "<image>\n" removed (Python's str.replace: all occurrences, left to right). */
static void append_without_image_tag(vlr_buf *b, const char *s, size_t n) {
    static const char tag[] = "<image>\n";
    const size_t tag_len = sizeof tag - 1;
    size_t i = 0, start = 0;
    while (i + tag_len <= n) {
        if (memcmp(s + i, tag, tag_len) == 0) {
            vlr_buf_append(b, s + start, i - start);
            i += tag_len;
            start = i;
        } else {
            i++;
        }
    }
    vlr_buf_append(b, s + start, n - start);
}

/* "vlrewardbench": the user turn (image, query); which response is chosen. */
static vlr_status vlrb_row(const vlr_json *row, const vlr_eval_options *opt, vlr_buf *conv, const vlr_json **chosen,
                           const vlr_json **rejected, vlr_err *e) {
    const vlr_json *query = vlr_json_get(row, "query"), *response = vlr_json_get(row, "response");
    const vlr_json *ranking = vlr_json_get(row, "human_ranking"), *image = vlr_json_get(row, "image");
    /* The benchmark's GitHub data/data.jsonl names the file, relative to its own folder. */
    if (!image) image = vlr_json_get(row, "image_path");
    if (!vlr_json_is(query, VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_INPUT, "query: expected a string, found %s", vlr_json_type_name(query));
    if (!vlr_json_is(response, VLR_JSON_ARRAY) || response->len != 2 ||
        !vlr_json_is(&response->items[0], VLR_JSON_STRING) || !vlr_json_is(&response->items[1], VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_INPUT, "response: expected a list of two strings, found %s%s",
                        vlr_json_type_name(response), vlr_json_is(response, VLR_JSON_ARRAY) ? " of another shape" : "");
    int64_t r0, r1;
    if (!vlr_json_is(ranking, VLR_JSON_ARRAY) || ranking->len != 2 || !vlr_json_int(&ranking->items[0], &r0) ||
        !vlr_json_int(&ranking->items[1], &r1))
        return vlr_fail(e, VLR_ERR_INPUT, "human_ranking: expected a list of two integers, found %s",
                        vlr_json_type_name(ranking));
    if (r0 == r1)
        return vlr_fail(e, VLR_ERR_INPUT, "human_ranking: [%lld, %lld] prefers neither response", (long long)r0,
                        (long long)r1);
    /* inference_hf.py: the response whose rank is the lower number is the preferred one. */
    *chosen = &response->items[r0 < r1 ? 0 : 1];
    *rejected = &response->items[r0 < r1 ? 1 : 0];
    if (!image)
        return vlr_fail(e, VLR_ERR_INPUT, "image: missing (no \"image\" or \"image_path\"; export the image column, "
                        "see docs/eval.md)");
    vlr_buf src = {0};
    vlr_status rc = vlr_eval_image_source(image, &src, e);
    if (rc == VLR_OK) {
        vlr_buf_puts(conv, "{\"role\": \"user\", \"content\": [{\"type\": \"image\", \"image\": ");
        vlr_buf_json_string(conv, src.data, src.len);
        vlr_buf_puts(conv, "}, {\"type\": \"text\", \"text\": ");
        if (opt && opt->keep_image_tag) {
            vlr_buf_json_string(conv, query->str, query->len);
        } else {
            vlr_buf q = {0};
            append_without_image_tag(&q, query->str, query->len);
            vlr_buf_json_string(conv, q.data ? q.data : "", q.len);
            if (q.oom) conv->oom = true;
            vlr_buf_free(&q);
        }
        vlr_buf_puts(conv, "}]}");
    }
    vlr_buf_free(&src);
    return rc;
}

/* "rewardbench": [user: prompt], or the prompt's messages as reward-bench's
 * prepare_dialogue_from_tokenizer builds them: each message's "content", the roles alternating user,
 * assistant, ... by position (the given "role" is not read), the last one a user turn. */
static vlr_status rb_conversation(const vlr_json *row, vlr_buf *conv, vlr_err *e) {
    const vlr_json *prompt = vlr_json_get(row, "prompt");
    if (vlr_json_is(prompt, VLR_JSON_STRING)) {
        write_text_message(conv, "user", prompt->str, prompt->len);
    } else if (vlr_json_is(prompt, VLR_JSON_ARRAY) && prompt->len) {
        if (prompt->len % 2 == 0)
            return vlr_fail(e, VLR_ERR_INPUT, "prompt: %zu messages: the last is then an assistant turn (reward-bench "
                            "alternates user, assistant, ... and needs a user turn last)", prompt->len);
        for (size_t i = 0; i < prompt->len; i++) {
            const vlr_json *content = vlr_json_get(&prompt->items[i], "content");
            if (!vlr_json_is(content, VLR_JSON_STRING))
                return vlr_fail(e, VLR_ERR_INPUT, "prompt[%zu].content: expected a string, found %s", i,
                                vlr_json_type_name(content));
            if (i) vlr_buf_puts(conv, ", ");
            write_text_message(conv, i % 2 == 0 ? "user" : "assistant", content->str, content->len);
        }
    } else {
        return vlr_fail(e, VLR_ERR_INPUT, "prompt: expected a string (or a list of messages), found %s",
                        vlr_json_type_name(prompt));
    }
    return VLR_OK;
}

/* Builds {"messages": [conv, answer]} and parses it as a request. */
static vlr_status build_side(const vlr_buf *conv, const vlr_json *answer, const char *key, size_t line_no,
                             const char *base_dir, vlr_parsed_request *out, vlr_err *e) {
    vlr_buf b = {0};
    vlr_buf_puts(&b, "{\"messages\": [");
    if (conv->len) {
        vlr_buf_append(&b, conv->data, conv->len);
        vlr_buf_puts(&b, ", ");
    }
    vlr_status rc = write_answer(&b, answer, key, e);
    vlr_buf_puts(&b, "]}");
    if (rc == VLR_OK && b.oom) rc = vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory", key);
    if (rc == VLR_OK) {
        rc = vlr_request_parse(b.data, b.len, line_no, base_dir, out, e);
        /* The message names the field inside the side's conversation ("messages[1].content"). */
        if (rc) vlr_err_prefix(e, "%s: ", key);
    }
    vlr_buf_free(&b);
    return rc;
}

vlr_status vlr_eval_pair_from_json(vlr_eval_format f, const vlr_json *row, size_t line_no, const char *base_dir,
                                   const vlr_eval_options *opt, vlr_eval_pair *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    vlr_request_id_json(row, line_no, &out->id_json);
    vlr_eval_id_text(row, line_no, &out->id_text);
    if (!vlr_json_is(row, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_INPUT, "expected a JSON object, found %s", vlr_json_type_name(row));
    const vlr_json *id = vlr_json_get(row, "id");
    if (id && id->type != VLR_JSON_STRING && id->type != VLR_JSON_NUMBER)
        return vlr_fail(e, VLR_ERR_INPUT, "id: expected a string or a number, found %s", vlr_json_type_name(id));
    vlr_buf conv = {0};
    const vlr_json *chosen = NULL, *rejected = NULL;
    vlr_status rc = VLR_OK;
    if (f == VLR_EVAL_VLREWARDBENCH) {
        /* the group comes from the id: known even when the rest of the row is wrong */
        const char *name = vlr_vlrb_group_name(vlr_vlrb_group_of(out->id_text.data, out->id_text.len, NULL));
        if (!(out->label = strdup(name))) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        out->label_known = out->label != NULL;
        if (rc == VLR_OK) rc = vlrb_row(row, opt, &conv, &chosen, &rejected, e);
    } else {
        chosen = vlr_json_get(row, "chosen");
        rejected = vlr_json_get(row, "rejected");
        const char *label_key = f == VLR_EVAL_REWARDBENCH ? "subset" : "category";
        const vlr_json *label = vlr_json_get(row, label_key);
        if (f == VLR_EVAL_REWARDBENCH && !(vlr_json_is(label, VLR_JSON_STRING) && label->len))
            rc = vlr_fail(e, VLR_ERR_INPUT, "subset: expected a non-empty string, found %s", vlr_json_type_name(label));
        else if (label && label->type != VLR_JSON_NULL && !vlr_json_is(label, VLR_JSON_STRING))
            rc = vlr_fail(e, VLR_ERR_INPUT, "%s: expected a string, found %s", label_key, vlr_json_type_name(label));
        else if (vlr_json_is(label, VLR_JSON_STRING) && strlen(label->str) != label->len)
            rc = vlr_fail(e, VLR_ERR_INPUT, "%s: NUL byte inside", label_key);
        else if (vlr_json_is(label, VLR_JSON_STRING) && !(out->label = dup_string(label, e)))
            rc = VLR_ERR_NOMEM;
        else
            out->label_known = true;
        if (rc == VLR_OK && !chosen) rc = vlr_fail(e, VLR_ERR_INPUT, "chosen: missing");
        if (rc == VLR_OK && !rejected) rc = vlr_fail(e, VLR_ERR_INPUT, "rejected: missing");
        if (rc == VLR_OK && f == VLR_EVAL_REWARDBENCH) {
            /* reward-bench answers are the assistant's text */
            if (!vlr_json_is(chosen, VLR_JSON_STRING))
                rc = vlr_fail(e, VLR_ERR_INPUT, "chosen: expected a string, found %s", vlr_json_type_name(chosen));
            else if (!vlr_json_is(rejected, VLR_JSON_STRING))
                rc = vlr_fail(e, VLR_ERR_INPUT, "rejected: expected a string, found %s", vlr_json_type_name(rejected));
            else
                rc = rb_conversation(row, &conv, e);
        } else if (rc == VLR_OK) {
            rc = pairs_conversation(row, &conv, e);
        }
    }
    if (rc == VLR_OK && conv.oom) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    if (rc == VLR_OK) rc = build_side(&conv, chosen, "chosen", line_no, base_dir, &out->chosen, e);
    if (rc == VLR_OK) rc = build_side(&conv, rejected, "rejected", line_no, base_dir, &out->rejected, e);
    if (rc == VLR_OK && (out->id_json.oom || out->id_text.oom)) rc = vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    vlr_buf_free(&conv);
    return rc;
}

vlr_status vlr_eval_pair_parse(vlr_eval_format f, const char *line, size_t len, size_t line_no,
                               const char *base_dir, const vlr_eval_options *opt, vlr_eval_pair *out, vlr_err *e) {
    memset(out, 0, sizeof *out);
    vlr_json_doc *doc = vlr_json_parse(line, len, e);
    if (!doc) {
        vlr_buf_printf(&out->id_json, "%zu", line_no);
        vlr_buf_printf(&out->id_text, "%zu", line_no);
        vlr_err_prefix(e, "invalid JSON: ");
        return VLR_ERR_FORMAT;
    }
    vlr_status rc = vlr_eval_pair_from_json(f, vlr_json_root(doc), line_no, base_dir, opt, out, e);
    vlr_json_free(doc); /* the requests own copies of everything they point to */
    return rc;
}

void vlr_eval_pair_free(vlr_eval_pair *p) {
    if (!p) return;
    vlr_buf_free(&p->id_json);
    vlr_buf_free(&p->id_text);
    free(p->label);
    vlr_parsed_request_free(&p->chosen);
    vlr_parsed_request_free(&p->rejected);
    memset(p, 0, sizeof *p);
}

/* ---- result lines ------------------------------------------------------------------------- */

/* Opens the line's object with its "id" and, with_label, its "subset" (RewardBench) or "category". */
static void put_id_and_label(vlr_jw *w, vlr_eval_format f, const vlr_buf *id_json, bool with_label,
                             const char *label) {
    vlr_jw_object(w);
    cli_jw_id(w, id_json);
    if (with_label) vlr_jw_key_str(w, f == VLR_EVAL_REWARDBENCH ? "subset" : "category", label);
}

void vlr_eval_result_line(vlr_eval_format f, const vlr_buf *id_json, const char *label, double chosen,
                          double rejected, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    put_id_and_label(&w, f, id_json, true, label);
    vlr_jw_key_double(&w, "chosen_score", chosen);
    vlr_jw_key_double(&w, "rejected_score", rejected);
    vlr_jw_key(&w, "correct");
    vlr_jw_bool(&w, chosen > rejected);
    vlr_jw_end(&w);
}

void vlr_eval_error_line(vlr_eval_format f, const vlr_buf *id_json, bool label_known, const char *label,
                         const char *msg, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 0);
    put_id_and_label(&w, f, id_json, label_known, label);
    vlr_jw_key_str(&w, "error", msg);
    vlr_jw_end(&w);
}

/* ---- aggregation -------------------------------------------------------------------------- */

double vlr_eval_accuracy(const vlr_eval_count *c) {
    return c->pairs ? (double)c->correct / (double)c->pairs : NAN;
}

void vlr_eval_wilson(uint64_t k, uint64_t n, double z, double *lo, double *hi) {
    if (!n) {
        *lo = *hi = NAN;
        return;
    }
    double nn = (double)n, p = (double)k / nn, z2 = z * z;
    double centre = (p + z2 / (2 * nn)) / (1 + z2 / nn);
    double half = z * sqrt(p * (1 - p) / nn + z2 / (4 * nn * nn)) / (1 + z2 / nn);
    *lo = fmax(0.0, centre - half);
    *hi = fmin(1.0, centre + half);
}

static void count_pair(vlr_eval_count *c, double chosen, double rejected) {
    c->pairs++;
    if (chosen > rejected) c->correct++;
    else if (chosen == rejected) c->ties++;
}

/* The entry named name (n bytes), appended when absent; NULL on OOM. */
static vlr_eval_entry *table_entry(vlr_eval_table *t, const char *name, size_t n) {
    for (size_t i = 0; i < t->len; i++)
        if (strlen(t->items[i].name) == n && memcmp(t->items[i].name, name, n) == 0) return &t->items[i];
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        vlr_eval_entry *items = realloc(t->items, cap * sizeof *items);
        if (!items) return NULL;
        t->items = items;
        t->cap = cap;
    }
    char *copy = malloc(n + 1);
    if (!copy) return NULL;
    memcpy(copy, name, n);
    copy[n] = '\0';
    vlr_eval_entry *it = &t->items[t->len++];
    memset(it, 0, sizeof *it);
    it->name = copy;
    return it;
}

static void table_free(vlr_eval_table *t) {
    for (size_t i = 0; i < t->len; i++) {
        free(t->items[i].name);
        free(t->items[i].margins);
    }
    free(t->items);
    memset(t, 0, sizeof *t);
}

void vlr_eval_summary_init(vlr_eval_summary *s, vlr_eval_format f) {
    memset(s, 0, sizeof *s);
    s->format = f;
}

void vlr_eval_summary_free(vlr_eval_summary *s) {
    if (!s) return;
    table_free(&s->labels);
    table_free(&s->sources);
}

static vlr_status oom(vlr_err *e) { return vlr_fail(e, VLR_ERR_NOMEM, "eval summary: out of memory"); }

/* The label entry of a pair (and, for vlrewardbench, its source entry), created when new. */
static vlr_status entries_of(vlr_eval_summary *s, const char *id, size_t id_len, const char *label,
                             vlr_eval_entry **lab, vlr_eval_entry **src, vlr_err *e) {
    *src = NULL;
    if (s->format == VLR_EVAL_VLREWARDBENCH) {
        /* the three groups, always listed, in the model card's order (all three, or an earlier call
         * that ran out of memory midway would leave labels.items[g] unset) */
        if (s->labels.len < VLR_VLRB_N_GROUPS)
            for (int g = 0; g < VLR_VLRB_N_GROUPS; g++)
                if (!table_entry(&s->labels, group_names[g], strlen(group_names[g]))) return oom(e);
        const char *dataset;
        vlr_vlrb_group g = vlr_vlrb_group_of(id, id_len, &dataset);
        if (!(*src = table_entry(&s->sources, id, vlr_vlrb_source_len(id, id_len)))) return oom(e);
        (*src)->group = group_names[g];
        (*src)->dataset = dataset;
        *lab = &s->labels.items[g];
    } else if (s->format == VLR_EVAL_REWARDBENCH) {
        if (!label || !*label) return vlr_fail(e, VLR_ERR_INPUT, "eval summary: a rewardbench pair needs its subset");
        if (!(*lab = table_entry(&s->labels, label, strlen(label)))) return oom(e);
        int section = vlr_rb_subset_section(label, &(*lab)->weight);
        (*lab)->group = section >= 0 ? section_names[section] : section == -1 ? "Prior Sets" : NULL;
    } else {
        const char *name = label ? label : "(none)";
        if (!(*lab = table_entry(&s->labels, name, strlen(name)))) return oom(e);
    }
    return VLR_OK;
}

vlr_status vlr_eval_summary_add(vlr_eval_summary *s, const char *id, size_t id_len, const char *label,
                                double chosen, double rejected, vlr_err *e) {
    if (!isfinite(chosen) || !isfinite(rejected))
        return vlr_fail(e, VLR_ERR_INPUT, "eval summary: pair %.*s has a non-finite score", (int)(id_len > 200 ? 200 : id_len), id);
    vlr_eval_entry *lab, *src;
    vlr_status rc = entries_of(s, id, id_len, label, &lab, &src, e);
    if (rc) return rc;
    if (lab->n_margins == lab->cap_margins) {
        size_t cap = lab->cap_margins ? lab->cap_margins * 2 : 64;
        double *m = realloc(lab->margins, cap * sizeof *m);
        if (!m) return oom(e);
        lab->margins = m;
        lab->cap_margins = cap;
    }
    lab->margins[lab->n_margins++] = chosen - rejected;
    count_pair(&lab->n, chosen, rejected);
    if (src) count_pair(&src->n, chosen, rejected);
    count_pair(&s->all, chosen, rejected);
    return VLR_OK;
}

vlr_status vlr_eval_summary_add_failure(vlr_eval_summary *s, const char *id, size_t id_len, bool label_known,
                                        const char *label, vlr_err *e) {
    if (label_known && !(s->format == VLR_EVAL_VLREWARDBENCH && !id) &&
        !(s->format == VLR_EVAL_REWARDBENCH && (!label || !*label))) {
        vlr_eval_entry *lab, *src;
        vlr_status rc = entries_of(s, id, id_len, label, &lab, &src, e);
        if (rc) return rc;
        lab->n.failed++;
        if (src) src->n.failed++;
    } else {
        s->errors_unlabelled++;
    }
    s->errors++;
    s->all.failed++;
    return VLR_OK;
}

vlr_status vlr_eval_summary_add_line(vlr_eval_summary *s, const char *line, size_t len, vlr_err *e) {
    vlr_json_doc *doc = vlr_json_parse(line, len, e);
    if (!doc) {
        vlr_err_prefix(e, "not a result line: ");
        return VLR_ERR_FORMAT;
    }
    const vlr_json *r = vlr_json_root(doc);
    const vlr_json *id = vlr_json_get(r, "id");
    const char *label_key = s->format == VLR_EVAL_REWARDBENCH ? "subset" : "category";
    const vlr_json *label = vlr_json_get(r, label_key);
    const vlr_json *c = vlr_json_get(r, "chosen_score"), *j = vlr_json_get(r, "rejected_score");
    bool id_ok = vlr_json_is(id, VLR_JSON_STRING) || vlr_json_is(id, VLR_JSON_NUMBER);
    vlr_status rc = VLR_OK;
    if (label && label->type != VLR_JSON_NULL && !vlr_json_is(label, VLR_JSON_STRING)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "not a result line: \"%s\" is %s", label_key, vlr_json_type_name(label));
    } else if (vlr_json_get(r, "error") && (id_ok || vlr_json_is(id, VLR_JSON_NULL))) {
        /* a line too long to read has "id": null; a failure of unknown category has no label */
        rc = vlr_eval_summary_add_failure(s, id_ok ? id->str : NULL, id_ok ? id->len : 0, label != NULL,
                                          vlr_json_is(label, VLR_JSON_STRING) ? label->str : NULL, e);
    } else if (!id_ok) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "not a result line: no \"id\" string or number");
    } else if (!vlr_json_is(c, VLR_JSON_NUMBER) || !vlr_json_is(j, VLR_JSON_NUMBER)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "not a result line: \"chosen_score\"/\"rejected_score\" are not numbers");
    } else {
        rc = vlr_eval_summary_add(s, id->str, id->len, vlr_json_is(label, VLR_JSON_STRING) ? label->str : NULL,
                                  c->number, j->number, e);
    }
    vlr_json_free(doc);
    return rc;
}

/* ---- benchmark numbers -------------------------------------------------------------------- */

void vlr_vlrb_compute(const vlr_eval_summary *s, vlr_vlrb_scores *out) {
    double sum = 0;
    int n = 0;
    for (int g = 0; g < VLR_VLRB_N_GROUPS; g++) {
        out->group[g] = (size_t)g < s->labels.len ? vlr_eval_accuracy(&s->labels.items[g].n) : NAN;
        if (!isnan(out->group[g])) {
            sum += out->group[g];
            n++;
        }
    }
    out->overall = vlr_eval_accuracy(&s->all);
    out->macro = n ? sum / n : NAN;
}

void vlr_rb_compute(const vlr_eval_summary *s, vlr_rb_scores *out) {
    double weighted[VLR_RB_N_SECTIONS] = {0}, weights[VLR_RB_N_SECTIONS] = {0}, prior_sum = 0;
    int n_prior = 0;
    for (size_t i = 0; i < s->labels.len; i++) {
        const vlr_eval_entry *sub = &s->labels.items[i];
        double w, acc = vlr_eval_accuracy(&sub->n);
        int section = vlr_rb_subset_section(sub->name, &w);
        if (isnan(acc)) continue;
        if (section >= 0) {
            weighted[section] += acc * w; /* calculate_scores_per_section */
            weights[section] += w;
        } else if (section == -1) {
            prior_sum += acc;
            n_prior++;
        }
    }
    double sum = 0, lb_sum = 0, lb_w = 0;
    int n = 0;
    for (int k = 0; k < VLR_RB_N_SECTIONS; k++) {
        out->section[k] = weights[k] > 0 ? weighted[k] / weights[k] : NAN;
        if (isnan(out->section[k])) continue;
        sum += out->section[k];
        n++;
        lb_sum += 2 * out->section[k];
        lb_w += 2;
    }
    out->prior_sets = n_prior ? prior_sum / n_prior : NAN;
    if (n_prior) {
        lb_sum += out->prior_sets;
        lb_w += 1;
    }
    out->score = n ? sum / n : NAN;
    out->leaderboard = lb_w > 0 ? lb_sum / lb_w : NAN;
    out->accuracy = vlr_eval_accuracy(&s->all);
}

void vlr_pairs_compute(const vlr_eval_summary *s, vlr_pairs_scores *out) {
    double sum = 0;
    int n = 0;
    for (size_t i = 0; i < s->labels.len; i++) {
        double acc = vlr_eval_accuracy(&s->labels.items[i].n);
        if (!isnan(acc)) {
            sum += acc;
            n++;
        }
    }
    out->accuracy = vlr_eval_accuracy(&s->all);
    out->macro = n ? sum / n : NAN;
}

/* ---- reports ------------------------------------------------------------------------------ */

/* A percentage with one decimal as in the model card; "-" when undefined. */
static const char *pct(double v, char buf[24]) {
    if (isnan(v)) return "-";
    snprintf(buf, 24, "%.1f", 100.0 * v);
    return buf;
}

static void md_cell(vlr_buf *b, double v) {
    char tmp[24];
    vlr_buf_printf(b, " %s |", pct(v, tmp));
}

/* Text from the data inside a table cell: '|' escaped, line ends as spaces. */
static void md_text(vlr_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '|') vlr_buf_puts(b, "\\|");
        else if (*s == '\n' || *s == '\r') vlr_buf_puts(b, " ");
        else vlr_buf_append(b, s, 1);
    }
}

/* N = scored + failed; the accuracy is over the scored pairs, with its 95% Wilson interval. */
static void md_counts_table(vlr_buf *b, const char *first, const vlr_eval_table *t, const char *group_col,
                            bool weight_col) {
    vlr_buf_printf(b, "| %s |", first);
    if (group_col) vlr_buf_printf(b, " %s |", group_col);
    if (weight_col) vlr_buf_puts(b, " Weight |");
    vlr_buf_printf(b, " N | Correct | Ties | Failed | Accuracy | 95%% CI |\n|---|%s%s---|---|---|---|---|---|\n",
                   group_col ? "---|" : "", weight_col ? "---|" : "");
    for (size_t i = 0; i < t->len; i++) {
        const vlr_eval_entry *it = &t->items[i];
        vlr_buf_puts(b, "| ");
        md_text(b, it->name);
        vlr_buf_puts(b, " |");
        if (group_col) vlr_buf_printf(b, " %s |", it->group ? it->group : "-");
        if (weight_col) vlr_buf_printf(b, " %g |", it->weight);
        vlr_buf_printf(b, " %llu | %llu | %llu | %llu |", (unsigned long long)(it->n.pairs + it->n.failed),
                       (unsigned long long)it->n.correct, (unsigned long long)it->n.ties,
                       (unsigned long long)it->n.failed);
        md_cell(b, vlr_eval_accuracy(&it->n));
        double lo, hi;
        char a[24], z[24];
        vlr_eval_wilson(it->n.correct, it->n.pairs, 1.96, &lo, &hi);
        if (isnan(lo)) vlr_buf_puts(b, " - |\n");
        else vlr_buf_printf(b, " %s-%s |\n", pct(lo, a), pct(hi, z));
    }
}

/* The overall accuracy when the failed pairs count as wrong (NaN when there are none). */
static double accuracy_failed_as_wrong(const vlr_eval_summary *s) {
    uint64_t n = s->all.pairs + s->errors;
    return n ? (double)s->all.correct / (double)n : NAN;
}

/* What ran and what was counted, under the tables. */
static void md_footer(const vlr_eval_summary *s, const vlr_eval_meta *m, vlr_buf *out) {
    vlr_buf_puts(out, "\n");
    md_text(out, m && m->model_name ? m->model_name : "model");
    if (m && m->model_revision) vlr_buf_printf(out, " (revision %s)", m->model_revision);
    if (m && m->precision) vlr_buf_printf(out, ", precision %s", m->precision);
    if (m && m->kernels) vlr_buf_printf(out, " (%s kernels)", m->kernels);
    if (m && m->version) vlr_buf_printf(out, ", vlreward %s", m->version);
    vlr_buf_printf(out, ", format %s", vlr_eval_format_name(s->format));
    if (s->format == VLR_EVAL_VLREWARDBENCH)
        vlr_buf_puts(out, m && m->image_tag_kept ? " (queries keep their \"<image>\\n\")"
                                                 : " (\"<image>\\n\" removed from queries, as inference_hf.py does)");
    vlr_buf_printf(out, "\n%llu pairs: %llu scored, %llu correct, %llu ties (counted wrong), %llu failed",
                   (unsigned long long)(s->all.pairs + s->errors), (unsigned long long)s->all.pairs,
                   (unsigned long long)s->all.correct, (unsigned long long)s->all.ties, (unsigned long long)s->errors);
    if (s->errors_unlabelled) vlr_buf_printf(out, " (%llu of no known category)", (unsigned long long)s->errors_unlabelled);
    if (s->errors) {
        char tmp[24];
        vlr_buf_printf(out, "; the accuracies leave the failed pairs out (counted as wrong, the overall accuracy "
                            "would be %s)", pct(accuracy_failed_as_wrong(s), tmp));
    }
    vlr_buf_puts(out, "\n");
}

void vlr_eval_summary_markdown(const vlr_eval_summary *s, const vlr_eval_meta *meta, vlr_buf *out) {
    char tmp[24];
    vlr_buf name = {0};
    md_text(&name, meta && meta->model_name ? meta->model_name : "model");
    const char *model = name.data ? name.data : "model";
    if (s->format == VLR_EVAL_VLREWARDBENCH) {
        vlr_vlrb_scores v;
        vlr_vlrb_compute(s, &v);
        vlr_buf_puts(out, "| Model Name | General | Hallucination | Reasoning | Overall Accuracy | Macro Average |\n"
                          "|---|---|---|---|---|---|\n");
        vlr_buf_printf(out, "| %s |", model);
        for (int g = 0; g < VLR_VLRB_N_GROUPS; g++) md_cell(out, v.group[g]);
        md_cell(out, v.overall);
        md_cell(out, v.macro);
        vlr_buf_puts(out, "\n\n");
        md_counts_table(out, "Group", &s->labels, NULL, false);
        vlr_buf_puts(out, "\n");
        md_counts_table(out, "Source", &s->sources, "Group", false);
    } else if (s->format == VLR_EVAL_REWARDBENCH) {
        vlr_rb_scores r;
        vlr_rb_compute(s, &r);
        bool prior = !isnan(r.prior_sets);
        /* "Score" is the mean of the four sections, as in the model card; with prior sets the
         * leaderboard's weighted average follows in its own column. */
        vlr_buf_printf(out, "| Model Name | Chat | Chat Hard | Safety | Reasoning | Score |%s\n|---|---|---|---|---|---|%s\n",
                       prior ? " Prior Sets (0.5 weight) | Leaderboard Score |" : "", prior ? "---|---|" : "");
        vlr_buf_printf(out, "| %s |", model);
        for (int k = 0; k < VLR_RB_N_SECTIONS; k++) md_cell(out, r.section[k]);
        md_cell(out, r.score);
        if (prior) {
            md_cell(out, r.prior_sets);
            md_cell(out, r.leaderboard);
        }
        vlr_buf_puts(out, "\n\n");
        md_counts_table(out, "Subset", &s->labels, "Section", true);
    } else {
        vlr_pairs_scores p;
        vlr_pairs_compute(s, &p);
        md_counts_table(out, "Category", &s->labels, NULL, false);
        vlr_buf_printf(out, "| Overall | %llu | %llu | %llu | %llu |", (unsigned long long)(s->all.pairs + s->errors),
                       (unsigned long long)s->all.correct, (unsigned long long)s->all.ties, (unsigned long long)s->errors);
        md_cell(out, p.accuracy);
        double lo, hi;
        char z[24];
        vlr_eval_wilson(s->all.correct, s->all.pairs, 1.96, &lo, &hi);
        if (isnan(lo)) vlr_buf_puts(out, " - |");
        else vlr_buf_printf(out, " %s-%s |", pct(lo, tmp), pct(hi, z));
        vlr_buf_printf(out, "\n\nMacro average over categories: %s\n", pct(p.macro, tmp));
    }
    md_footer(s, meta, out);
    vlr_buf_free(&name);
}

/* The count members of a table entry. */
static void json_counts(vlr_jw *w, const vlr_eval_count *c) {
    double lo, hi;
    vlr_eval_wilson(c->correct, c->pairs, 1.96, &lo, &hi);
    vlr_jw_key_uint(w, "n", c->pairs + c->failed);
    vlr_jw_key_uint(w, "pairs", c->pairs);
    vlr_jw_key_uint(w, "correct", c->correct);
    vlr_jw_key_uint(w, "ties", c->ties);
    vlr_jw_key_uint(w, "failed", c->failed);
    vlr_jw_key_double(w, "accuracy", vlr_eval_accuracy(c));
    vlr_jw_key(w, "accuracy_ci95");
    if (isnan(lo)) {
        vlr_jw_null(w);
    } else {
        vlr_jw_array(w);
        vlr_jw_double(w, lo);
        vlr_jw_double(w, hi);
        vlr_jw_end(w);
    }
}

/* "key": {"name": {...counts, extras...}, ...} with one entry per line. */
static void json_table(vlr_jw *w, const char *key, const vlr_eval_table *t, vlr_eval_format f, bool sources) {
    vlr_jw_key(w, key);
    vlr_jw_object(w);
    for (size_t i = 0; i < t->len; i++) {
        const vlr_eval_entry *it = &t->items[i];
        vlr_jw_key(w, it->name);
        vlr_jw_object(w);
        if (sources) {
            vlr_jw_key_str(w, "group", it->group);
            vlr_jw_key_str(w, "dataset", it->dataset);
        } else if (f == VLR_EVAL_REWARDBENCH) {
            vlr_jw_key_str(w, "section", it->group);
            vlr_jw_key_double(w, "weight", it->weight);
        }
        json_counts(w, &it->n);
        vlr_jw_end(w);
    }
    vlr_jw_end(w);
}

void vlr_eval_summary_json(const vlr_eval_summary *s, const vlr_eval_meta *m, vlr_buf *out) {
    vlr_jw w;
    vlr_jw_init(&w, out, 2); /* the top level and the tables one member per line */
    vlr_jw_object(&w);
    vlr_jw_key_str(&w, "format", vlr_eval_format_name(s->format));
    vlr_jw_key_str(&w, "model", m ? m->model_name : NULL);
    vlr_jw_key_str(&w, "model_dir", m ? m->model_dir : NULL);
    vlr_jw_key_str(&w, "model_revision", m ? m->model_revision : NULL);
    vlr_jw_key_str(&w, "vlreward_version", m ? m->version : NULL);
    vlr_jw_key_str(&w, "precision", m ? m->precision : NULL);
    vlr_jw_key_str(&w, "kernels", m ? m->kernels : NULL);
    if (s->format == VLR_EVAL_VLREWARDBENCH)
        vlr_jw_key_str(&w, "image_tag", m && m->image_tag_kept ? "kept" : "removed");
    vlr_jw_key_uint(&w, "n", s->all.pairs + s->errors);
    vlr_jw_key_uint(&w, "pairs", s->all.pairs);
    vlr_jw_key_uint(&w, "correct", s->all.correct);
    vlr_jw_key_uint(&w, "ties", s->all.ties);
    vlr_jw_key_uint(&w, "errors", s->errors);
    vlr_jw_key_uint(&w, "errors_unknown_category", s->errors_unlabelled);
    vlr_jw_key_double(&w, "accuracy", vlr_eval_accuracy(&s->all));
    vlr_jw_key_double(&w, "accuracy_failed_as_wrong", accuracy_failed_as_wrong(s));
    if (s->format == VLR_EVAL_VLREWARDBENCH) {
        vlr_vlrb_scores v;
        vlr_vlrb_compute(s, &v);
        for (int g = 0; g < VLR_VLRB_N_GROUPS; g++) vlr_jw_key_double(&w, group_names[g], v.group[g]);
        vlr_jw_key_double(&w, "overall_accuracy", v.overall);
        vlr_jw_key_double(&w, "macro_average", v.macro);
        json_table(&w, "groups", &s->labels, s->format, false);
        json_table(&w, "sources", &s->sources, s->format, true);
    } else if (s->format == VLR_EVAL_REWARDBENCH) {
        vlr_rb_scores r;
        vlr_rb_compute(s, &r);
        static const char *const keys[VLR_RB_N_SECTIONS] = {"chat", "chat_hard", "safety", "reasoning"};
        for (int k = 0; k < VLR_RB_N_SECTIONS; k++) vlr_jw_key_double(&w, keys[k], r.section[k]);
        vlr_jw_key_double(&w, "score", r.score);
        vlr_jw_key_double(&w, "prior_sets", r.prior_sets);
        vlr_jw_key_double(&w, "leaderboard_score", r.leaderboard);
        json_table(&w, "subsets", &s->labels, s->format, false);
    } else {
        vlr_pairs_scores p;
        vlr_pairs_compute(s, &p);
        vlr_jw_key_double(&w, "macro_average", p.macro);
        json_table(&w, "categories", &s->labels, s->format, false);
    }
    if (m && m->compare_json) {
        vlr_jw_key(&w, "compare_precision");
        vlr_jw_raw(&w, m->compare_json, strlen(m->compare_json));
    }
    vlr_jw_end(&w);
    vlr_buf_puts(out, "\n");
}
