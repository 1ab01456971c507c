/* test_fuzz_replay.c: every fuzz target (tests/fuzz/fuzz_<name>.c) over its committed corpus
 * (tests/fuzz/corpus_<name>), through the gcc-built replay driver (tests/fuzz/replay.c), so that an
 * input found by `make fuzz` and committed stays fixed: in the plain build and, in `make test`'s second
 * pass, under ASan/UBSan. A crash, a sanitizer report or an unreadable input fails the target. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "test_cmd.h"

static void replay_target(const char *name) {
    const char *build = getenv("VLR_BUILD");
    char cmd[512], corpus[256], *out = NULL;
    snprintf(corpus, sizeof corpus, "tests/fuzz/corpus_%s", name);
    size_t n_files = 0;
    DIR *d = opendir(corpus);
    for (struct dirent *e; d && (e = readdir(d));) n_files += e->d_name[0] != '.';
    if (d) closedir(d);
    snprintf(cmd, sizeof cmd, "%s/fuzz-replay/replay_%s %s", build && *build ? build : "build", name, corpus);
    const int rc = test_run(cmd, "/dev/null", &out);
    char want[64];
    snprintf(want, sizeof want, "replayed %zu inputs", n_files);
    CHECK(rc == 0 && n_files > 0 && strstr(out, want), "fuzz_%s over %s: exit %d, '%s' (want '%s')", name, corpus, rc,
          out, want);
    free(out);
}

int main(void) {
    /* every tests/fuzz/fuzz_<name>.c, so that a new target is replayed without editing this file */
    DIR *d = opendir("tests/fuzz");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        const size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "fuzz_", 5) != 0 || len < 8 || strcmp(e->d_name + len - 2, ".c") != 0) continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(len - 7), e->d_name + 5);
        TEST_RUN_WITH(replay_target, name);
        n++;
    }
    if (d) closedir(d);
    CHECK(n >= 6, "%d fuzz targets found under tests/fuzz", n);
    return test_report();
}
