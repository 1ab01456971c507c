/* test_eval_helpers.h: what the `vlreward eval` tests (test_eval.c, test_eval_bench.c) share: the
 * binary and a temporary folder, running it, reading its JSON Lines and summary files. Include after
 * test.h (CHECK). */
#ifndef VLR_TEST_EVAL_HELPERS_H
#define VLR_TEST_EVAL_HELPERS_H

#include <limits.h>
#include <math.h>

#include "json.h"
#include "test_cmd.h"

static char bin[512], tmpdir[256];

/* The binary's stdout in *out, its stderr in tmpdir/stderr (read_stderr), its exit status returned. */
static inline int run(const char *cmd, char **out) {
    char err_path[300];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmpdir);
    return test_run(cmd, err_path, out);
}

static inline char *slurp(const char *path) {
    char *text = NULL;
    size_t len;
    vlr_err e;
    if (vlr_read_file(path, 1 << 26, &text, &len, &e)) return NULL;
    return text;
}

static inline void write_file(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(text, 1, len, f);
    fclose(f);
}

/* Splits JSON Lines text into parsed documents (NULL for a line that is not JSON). */
typedef struct lines {
    vlr_json_doc **docs;
    size_t n;
} lines;

static inline lines parse_lines(const char *text) {
    lines l = {0};
    for (const char *p = text; p && *p;) {
        const char *end = strchr(p, '\n');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        vlr_err e;
        l.docs = realloc(l.docs, (l.n + 1) * sizeof *l.docs);
        l.docs[l.n++] = vlr_json_parse(p, len, &e);
        p = end ? end + 1 : NULL;
    }
    return l;
}

static inline void free_lines(lines *l) {
    for (size_t i = 0; i < l->n; i++) vlr_json_free(l->docs[i]);
    free(l->docs);
}

static inline const vlr_json *line_at(const lines *l, size_t i) {
    return i < l->n && l->docs[i] ? vlr_json_root(l->docs[i]) : NULL;
}

static inline double num(const vlr_json *obj, const char *key) {
    const vlr_json *v = vlr_json_get(obj, key);
    return vlr_json_is(v, VLR_JSON_NUMBER) ? v->number : NAN;
}

static inline const char *str(const vlr_json *obj, const char *key) {
    const vlr_json *v = vlr_json_get(obj, key);
    return vlr_json_is(v, VLR_JSON_STRING) ? v->str : NULL;
}

/* A summary JSON file, parsed (a failed check when it is missing or not JSON). */
static inline vlr_json_doc *read_summary(const char *path) {
    char *text = slurp(path);
    vlr_err e = {0};
    vlr_json_doc *d = text ? vlr_json_parse(text, strlen(text), &e) : NULL;
    CHECK(d != NULL, "%s: %s", path, text ? e.msg : "missing");
    free(text);
    return d;
}

/* bin from $VLR_BUILD (set by scripts/run-tests; default build/), a fresh /tmp/<prefix>_XXXXXX as
 * tmpdir with the reference images linked at tmpdir/images. False (after a failed check) when either
 * is missing. */
static inline bool eval_test_setup(const char *prefix) {
    const char *build = getenv("VLR_BUILD");
    snprintf(bin, sizeof bin, "%s/vlreward", build && *build ? build : "build");
    if (access(bin, X_OK) != 0) {
        CHECK(0, "%s not built", bin);
        return false;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/%s_XXXXXX", prefix);
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp");
        return false;
    }
    /* Relative image paths resolve against the input file's folder: link the reference images. */
    char link[300], real[PATH_MAX];
    snprintf(link, sizeof link, "%s/images", tmpdir);
    CHECK(realpath("tests/reference/images", real) != NULL && symlink(real, link) == 0, "symlink images");
    return true;
}

static inline void eval_test_cleanup(void) {
    char cmd[300], *out;
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    run(cmd, &out);
    free(out);
}

#endif
