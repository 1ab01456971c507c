/* test_api.c: the public API as a library user sees it. The shared library's dynamic symbol table
 * is exactly the functions include/vlreward.h marks VLR_API, under the SONAME libvlreward.so.0. */
#include <ctype.h>
#include <stdio.h>

#include "model.h"
#include "test.h"
#include "test_cmd.h"

#define MODEL "tests/reference/models/tiny-a"

/* Adds each distinct name to a space-separated list " a b c ". */
static void add_name(vlr_buf *list, const char *name, size_t len) {
    char key[160];
    snprintf(key, sizeof key, " %.*s ", (int)len, name);
    if (!list->data || !strstr(list->data, key)) vlr_buf_printf(list, "%s", list->len ? key + 1 : key);
}

/* The names after "VLR_API <type> " in the header: the function names it exports. */
static void header_functions(vlr_buf *names) {
    char *h = test_read_text("include/vlreward.h");
    for (char *p = strstr(h, "\nVLR_API "); p; p = strstr(p + 1, "\nVLR_API ")) {
        char *paren = strchr(p, '(');
        if (!paren) break;
        char *end = paren;
        while (end > p && isspace((unsigned char)end[-1])) end--;
        char *start = end;
        while (start > p && (isalnum((unsigned char)start[-1]) || start[-1] == '_')) start--;
        add_name(names, start, (size_t)(end - start));
    }
    free(h);
}

static void test_exported_symbols(void) {
    const char *build = getenv("VLR_BUILD");
    char lib[512], cmd[1024];
    snprintf(lib, sizeof lib, "%s/libvlreward.so", build && *build ? build : "build");
    if (access(lib, R_OK) != 0) {
        SKIP(1, "%s not built", lib);
        return;
    }
    vlr_buf want = {0}, got = {0}, other = {0};
    header_functions(&want);
    CHECK(want.data && strstr(want.data, " vlr_score ") && strstr(want.data, " vlr_version "),
          "the header parse found vlr_score and vlr_version: %s", want.data ? want.data : "(none)");

    char *out;
    snprintf(cmd, sizeof cmd, "nm -D --defined-only %s", lib);
    int rc = test_run(cmd, "/dev/null", &out);
    CHECK(rc == 0, "%s: exit %d", cmd, rc);
    /* lines "ADDRESS TYPE NAME"; names starting with '_' belong to the toolchain (_init, _end,
     * sanitizer hooks), everything else must be ours and public */
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char type, name[256];
        if (sscanf(line, "%*s %c %255s", &type, name) != 2 || name[0] == '_') continue;
        add_name(strncmp(name, "vlr_", 4) == 0 ? &got : &other, name, strlen(name));
    }
    free(out);
    const char *g = got.data ? got.data : "", *w = want.data ? want.data : "";
    for (const char *p = w; *p;) {
        const char *e = strchr(p + 1, ' ');
        if (!e) break;
        char key[160];
        snprintf(key, sizeof key, "%.*s", (int)(e - p + 1), p);
        CHECK(strstr(g, key) != NULL, "%s: header function%snot exported", lib, key);
        p = e;
    }
    for (const char *p = g; *p;) {
        const char *e = strchr(p + 1, ' ');
        if (!e) break;
        char key[160];
        snprintf(key, sizeof key, "%.*s", (int)(e - p + 1), p);
        CHECK(strstr(w, key) != NULL, "%s: exports%swhich the header does not declare", lib, key);
        p = e;
    }
    CHECK(other.len == 0, "%s: exports non-vlr symbols:%s", lib, other.data);

    snprintf(cmd, sizeof cmd, "objdump -p %s | grep SONAME", lib);
    rc = test_run(cmd, "/dev/null", &out);
    CHECK(rc == 0 && strstr(out, "libvlreward.so.0\n"), "SONAME: %s", out);
    free(out);
    vlr_buf_free(&want);
    vlr_buf_free(&got);
    vlr_buf_free(&other);
}

int main(void) {
    TEST_RUN(test_exported_symbols);
    return test_report();
}
