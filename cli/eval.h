/* eval.h: preference-pair evaluation, the model-free half of `vlreward eval`: reading a dataset line
 * into the two requests to score (chosen, rejected), writing and reading back the per-pair result
 * lines, and the benchmark arithmetic (VL-RewardBench groups, RewardBench sections).
 *
 * Three dataset formats, one JSON object per line:
 *   pairs          {"id", "messages" (the conversation without the answer) | "image"/"images" +
 *                  "question", "chosen", "rejected", optional "category"}; an answer is a string (the
 *                  assistant turn) or a list of messages appended to the conversation.
 *   vlrewardbench  a row of MMInstruction/VL-RewardBench (test split): "id", "query", "response"
 *                  (two strings), "human_ranking" (the lower rank is preferred), "image" (a path, a
 *                  data: URI, plain base64, or {"bytes": base64, "path": ...}) or "image_path" (the
 *                  benchmark's GitHub data/data.jsonl). Every literal "<image>\n" is removed from the
 *                  query, as the benchmark's inference_hf.py does (question.replace("<image>\n", "")),
 *                  unless the options keep it.
 *   rewardbench    a row of allenai/reward-bench (filtered split): "id", "prompt", "chosen",
 *                  "rejected", "subset"; text only, conversation [user: prompt, assistant: answer].
 *                  A prompt given as a list of messages (allenai/pref-test-sets rows) becomes turns
 *                  whose roles alternate user, assistant, ... by position, whatever their "role"
 *                  says, as reward-bench's prepare_dialogue_from_tokenizer does; the last is a user
 *                  turn.
 *
 * A pair is correct iff score(chosen) > score(rejected): a tie counts as wrong, as in reward-bench's
 * run_rm.py (`1 if chosen > rejected else 0`), and ties are counted separately so they are visible.
 *
 * VL-RewardBench groups follow the benchmark's fixed cal.py (vl-rewardbench/VL_RewardBench, commit
 * 91b241e "Fix povid bug"): the id prefix before the first '_' or '-' is compared case-sensitively;
 * "RLAIF", "RLHF", "hallucination" (POVID) -> hallucination; "mathverse", "mmmu" -> reasoning;
 * "wildvision" and everything else (VLFeedback) -> general. Overall accuracy is the micro average over
 * all pairs; the macro average is the mean of the group accuracies over the non-empty groups (cal.py
 * divides by 3 and would fail on an empty group; on the full benchmark the two agree).
 *
 * RewardBench sections follow reward-bench's calculate_scores_per_section with its EXAMPLE_COUNTS and
 * SUBSET_MAPPING (rewardbench/constants.py since 6552e93, "Mirror change from leaderboard":
 * xstest-should-refuse 154, xstest-should-respond 250): a section is the average of its subsets'
 * accuracies weighted by EXAMPLE_COUNTS (math-prm 984 although it has 447 rows, each hep-* 164). The score is the
 * mean of the non-empty sections; when prior sets (anthropic_helpful, anthropic_hhh, shp, summarize)
 * are present, their unweighted mean enters the leaderboard average with weights 2,2,2,2,1 (the
 * leaderboard's masked average; without prior sets it equals the score).
 *
 * A pair that could not be scored (an error line) is counted as failed in its category when the
 * category is known, and left out of every accuracy, as cal.py leaves out verdicts it cannot parse;
 * the tables show the failures next to the accuracies.
 *
 * Nothing here loads a model or touches files; cli/cmd_eval.c does that. */
#ifndef VLR_EVAL_H
#define VLR_EVAL_H

#include "internal.h"

typedef enum vlr_eval_format {
    VLR_EVAL_PAIRS = 0,
    VLR_EVAL_VLREWARDBENCH,
    VLR_EVAL_REWARDBENCH
} vlr_eval_format;

/* "pairs", "vlrewardbench", "rewardbench" <-> the enum. */
bool vlr_eval_format_parse(const char *name, vlr_eval_format *out);
const char *vlr_eval_format_name(vlr_eval_format f);
/* The format a dataset row is written in, from its keys: "human_ranking" + "response" is
 * vlrewardbench, "prompt" + "chosen" + "rejected" is rewardbench, "chosen" + "rejected" is pairs.
 * False when the row matches none. */
bool vlr_eval_format_detect(const vlr_json *row, vlr_eval_format *out);

typedef struct vlr_eval_options {
    bool keep_image_tag; /* vlrewardbench: keep the literal "<image>\n" in queries */
} vlr_eval_options;

/* ---- dataset lines ------------------------------------------------------------------------- */

/* One preference pair, ready to score. */
typedef struct vlr_eval_pair {
    vlr_buf id_json;            /* the id as JSON text (string re-escaped, number as written, or the
                                   line number), as vlr_request_id_json writes it */
    vlr_buf id_text;            /* the id as plain text (a string id unquoted): source prefixes */
    char *label;                /* pairs: "category" or NULL; vlrewardbench: the group name;
                                   rewardbench: the subset. malloc'd; set whenever it could be
                                   read, also when the row fails */
    bool label_known;           /* the row was read far enough to know its label (NULL included) */
    vlr_parsed_request chosen;  /* the conversation + the preferred answer */
    vlr_parsed_request rejected;/* the conversation + the other answer */
} vlr_eval_pair;

/* Reads one dataset row (an already-parsed JSON object). line_no (0-based) is the id when the row
 * has none. Relative image paths resolve against base_dir. opt may be NULL (the defaults). On
 * failure the ids and the label are still filled whenever they could be read, so the caller can
 * write {"id": ..., "category": ..., "error": ...}. Free with vlr_eval_pair_free in every case. */
vlr_status vlr_eval_pair_from_json(vlr_eval_format f, const vlr_json *row, size_t line_no, const char *base_dir,
                                   const vlr_eval_options *opt, vlr_eval_pair *out, vlr_err *e);
/* The same from JSON text (invalid JSON is VLR_ERR_FORMAT "invalid JSON: ..."). */
vlr_status vlr_eval_pair_parse(vlr_eval_format f, const char *line, size_t len, size_t line_no,
                               const char *base_dir, const vlr_eval_options *opt, vlr_eval_pair *out, vlr_err *e);
void vlr_eval_pair_free(vlr_eval_pair *p); /* NULL is a no-op; leaves *p zeroed */

/* The id of a row as plain text: a string id as its bytes, a number as written, else line_no. */
void vlr_eval_id_text(const vlr_json *row, size_t line_no, vlr_buf *out);

/* VL-RewardBench "image" -> an image source for a request: a path or URI is kept; plain base64 (or
 * {"bytes": base64}) becomes data:image/<type>;base64,... with the type sniffed from the decoded
 * magic bytes (png when unknown: the decoder sniffs the content anyway). */
vlr_status vlr_eval_image_source(const vlr_json *image, vlr_buf *out, vlr_err *e);

/* ---- result lines ------------------------------------------------------------------------- */

/* Appends {"id": ID, "category"|"subset": LABEL, "chosen_score": C, "rejected_score": R,
 * "correct": C > R} (no newline). "subset" for rewardbench, "category" otherwise (null when none). */
void vlr_eval_result_line(vlr_eval_format f, const vlr_buf *id_json, const char *label, double chosen,
                          double rejected, vlr_buf *out);
/* Appends {"id": ID, "category"|"subset": LABEL, "error": MSG} (no newline); the label member only
 * when label_known (null for a known absence), so the summary can count the failure in its
 * category. */
void vlr_eval_error_line(vlr_eval_format f, const vlr_buf *id_json, bool label_known, const char *label,
                         const char *msg, vlr_buf *out);

/* ---- aggregation -------------------------------------------------------------------------- */

typedef struct vlr_eval_count {
    uint64_t pairs;   /* scored pairs */
    uint64_t correct; /* chosen > rejected */
    uint64_t ties;    /* chosen == rejected (counted wrong) */
    uint64_t failed;  /* pairs that could not be scored (in no accuracy) */
} vlr_eval_count;

/* correct / pairs; NaN when pairs == 0. */
double vlr_eval_accuracy(const vlr_eval_count *c);
/* The Wilson score interval of k successes in n trials at z (1.96: 95%); NaN both when n == 0. */
void vlr_eval_wilson(uint64_t k, uint64_t n, double z, double *lo, double *hi);

/* A named row of a breakdown. */
typedef struct vlr_eval_entry {
    char *name;        /* malloc'd */
    const char *group; /* vlrewardbench sources: the group; rewardbench subsets: the section,
                          "Prior Sets" or NULL when the subset belongs to none; else NULL */
    const char *dataset; /* vlrewardbench sources: cal.py's dataset name ("povid", "rlaif-v", ...) */
    double weight;     /* rewardbench subsets: EXAMPLE_COUNTS weight (0 when not in a section) */
    vlr_eval_count n;
    double *margins;   /* labels: chosen - rejected of each scored pair, in order of addition */
    size_t n_margins, cap_margins;
} vlr_eval_entry;

typedef struct vlr_eval_table {
    vlr_eval_entry *items; /* [len], in order of first appearance (vlrewardbench groups: general,
                              hallucination, reasoning) */
    size_t len, cap;
} vlr_eval_table;

typedef struct vlr_eval_summary {
    vlr_eval_format format;
    vlr_eval_count all;     /* all.failed == errors */
    uint64_t errors;        /* pairs that could not be scored (error lines) */
    uint64_t errors_unlabelled; /* of those, the ones of no known category (invalid JSON, ...) */
    vlr_eval_table labels;  /* pairs: categories ("(none)" for rows without); vlrewardbench: the
                               three groups; rewardbench: subsets */
    vlr_eval_table sources; /* vlrewardbench: id prefixes; empty otherwise */
} vlr_eval_summary;

void vlr_eval_summary_init(vlr_eval_summary *s, vlr_eval_format f);
void vlr_eval_summary_free(vlr_eval_summary *s);
/* Counts one scored pair. id (plain text, id_len bytes) gives the vlrewardbench group and source;
 * label is the category (pairs, may be NULL) or the subset (rewardbench, required). */
vlr_status vlr_eval_summary_add(vlr_eval_summary *s, const char *id, size_t id_len, const char *label,
                                double chosen, double rejected, vlr_err *e);
/* Counts one pair that could not be scored: in its category when label_known (vlrewardbench: the
 * group of id; pairs: label or "(none)"; rewardbench: the subset label, when given), else only in
 * the totals (errors_unlabelled). */
vlr_status vlr_eval_summary_add_failure(vlr_eval_summary *s, const char *id, size_t id_len, bool label_known,
                                        const char *label, vlr_err *e);
/* Counts one result line as written by vlr_eval_result_line or vlr_eval_error_line (an {"id",
 * "error"} line without the label member counts as of no known category). */
vlr_status vlr_eval_summary_add_line(vlr_eval_summary *s, const char *line, size_t len, vlr_err *e);

/* VL-RewardBench groups. */
typedef enum vlr_vlrb_group {
    VLR_VLRB_GENERAL = 0,
    VLR_VLRB_HALLUCINATION,
    VLR_VLRB_REASONING,
    VLR_VLRB_N_GROUPS
} vlr_vlrb_group;
const char *vlr_vlrb_group_name(vlr_vlrb_group g); /* "general", "hallucination", "reasoning" */
/* Length of the source prefix: up to the first '_' or '-' (the whole id when neither occurs). */
size_t vlr_vlrb_source_len(const char *id, size_t len);
/* cal.py get_dataset_from_id + group_mapping. *dataset (may be NULL) gets cal.py's dataset name. */
vlr_vlrb_group vlr_vlrb_group_of(const char *id, size_t len, const char **dataset);

typedef struct vlr_vlrb_scores {
    double group[VLR_VLRB_N_GROUPS]; /* accuracy per group, NaN when empty */
    double overall;                  /* micro: all correct / all pairs */
    double macro;                    /* mean of the non-empty group accuracies */
} vlr_vlrb_scores;
void vlr_vlrb_compute(const vlr_eval_summary *s, vlr_vlrb_scores *out);

/* RewardBench sections. */
enum { VLR_RB_CHAT = 0, VLR_RB_CHAT_HARD, VLR_RB_SAFETY, VLR_RB_REASONING, VLR_RB_N_SECTIONS };
const char *vlr_rb_section_name(int section); /* "Chat", "Chat Hard", "Safety", "Reasoning" */
/* The section (0..3) of a subset and its EXAMPLE_COUNTS weight; -1 for a prior set (weight 0), -2
 * for a subset in neither. */
int vlr_rb_subset_section(const char *subset, double *weight);

typedef struct vlr_rb_scores {
    double section[VLR_RB_N_SECTIONS]; /* weighted accuracy, NaN when no subset of it is present */
    double prior_sets;                 /* mean of the present prior-set accuracies, NaN when none */
    double score;                      /* mean of the non-empty sections */
    double leaderboard;                /* weights 2,2,2,2,1 over the non-empty sections + prior sets */
    double accuracy;                   /* micro accuracy over every scored pair */
} vlr_rb_scores;
void vlr_rb_compute(const vlr_eval_summary *s, vlr_rb_scores *out);

typedef struct vlr_pairs_scores {
    double accuracy; /* micro over every scored pair */
    double macro;    /* mean of the non-empty category accuracies */
} vlr_pairs_scores;
void vlr_pairs_compute(const vlr_eval_summary *s, vlr_pairs_scores *out);

/* What was run, for the lines under the tables and the summary JSON; any field may be NULL. */
typedef struct vlr_eval_meta {
    const char *model_name;     /* the table's "Model Name" (NULL: "model") */
    const char *model_dir;
    const char *model_revision; /* the cache snapshot or a checksum of the checkpoint's metadata */
    const char *version;        /* vlreward's */
    const char *precision;      /* resolved: "f32", "bf16", ... */
    const char *kernels;
    bool image_tag_kept;        /* vlrewardbench: queries kept their "<image>\n" */
    const char *compare_json;   /* a JSON object the JSON summary carries as "compare_precision" */
} vlr_eval_meta;

/* The summary as markdown tables (the layout of the model card for the benchmarks, then per
 * category N, correct, ties, failed, accuracy and its 95% Wilson interval) and as JSON (the same
 * numbers as fractions and counts; NaN as null). meta may be NULL. */
void vlr_eval_summary_markdown(const vlr_eval_summary *s, const vlr_eval_meta *meta, vlr_buf *out);
void vlr_eval_summary_json(const vlr_eval_summary *s, const vlr_eval_meta *meta, vlr_buf *out);

#endif
