/* test_cmd.h: running build/vlreward from a test. One copy of the popen plumbing for every test that
 * drives the binary (test_cli, test_eval, test_bench): stdout comes back as a string, stderr goes to
 * a file the test can read, the exit status is returned. Needs common.h (vlr_buf, vlr_read_file). */
#ifndef VLR_TEST_CMD_H
#define VLR_TEST_CMD_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

/* The binary under test: $VLR_BUILD/vlreward (scripts/run-tests sets VLR_BUILD), default
 * build/vlreward, into bin. False when it is not there (not built). */
static inline bool test_vlreward_bin(char *bin, size_t cap) {
    const char *build = getenv("VLR_BUILD");
    snprintf(bin, cap, "%s/vlreward", build && *build ? build : "build");
    return access(bin, X_OK) == 0;
}

/* Runs `cmd 2>stderr_path` in a shell; *out receives stdout (malloc'd, never NULL). Returns the exit
 * status, or -1 when the command could not run or died of a signal. */
static inline int test_run(const char *cmd, const char *stderr_path, char **out) {
    vlr_buf full = {0}, b = {0};
    vlr_buf_printf(&full, "%s 2>%s", cmd, stderr_path);
    FILE *p = full.data ? popen(full.data, "r") : NULL;
    char chunk[4096];
    size_t n;
    while (p && (n = fread(chunk, 1, sizeof chunk, p)) > 0) vlr_buf_append(&b, chunk, n);
    int status = p ? pclose(p) : -1;
    vlr_buf_free(&full);
    if (!b.data) vlr_buf_puts(&b, "");
    *out = b.data;
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* A whole text file (malloc'd), or an empty string when it cannot be read. */
static inline char *test_read_text(const char *path) {
    char *text = NULL;
    size_t len;
    vlr_err e;
    if (vlr_read_file(path, 1 << 26, &text, &len, &e)) return strdup("");
    return text;
}

/* A copy of the model folder `model` at `dir` made of symlinks to the n named files, so a test can
 * add or replace the others (a chat template, a preprocessor config). False when any step fails. */
static inline bool test_model_link(const char *dir, const char *model, const char *const *files, size_t n) {
    char real[PATH_MAX];
    if (mkdir(dir, 0700) != 0 || !realpath(model, real)) return false;
    for (size_t i = 0; i < n; i++) {
        char from[PATH_MAX + 64], to[PATH_MAX + 64];
        snprintf(from, sizeof from, "%s/%s", real, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        if (symlink(from, to) != 0) return false;
    }
    return true;
}

#endif
