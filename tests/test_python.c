/* test_python.c: runs the Python package's tests (tests/test_python.py, unittest) with the package
 * built in place by `make python` (python/vlreward/_vlreward*.so) and the CLI of this build folder,
 * and counts each Python test as one check. The interpreter is $PYTHON, else the Makefile's default
 * (Debian's /usr/bin/python3 when there is one). Skipped in the sanitizer build: the extension links the
 * plain build's library, and python3 is not built with ASan. */
#include <glob.h>

#include "test.h"
#include "test_cmd.h"

static void test_python_package(void) {
#if defined(__SANITIZE_ADDRESS__)
    SKIP(1, "the Python package is tested in the plain build (python3 has no ASan runtime)");
    return;
#endif
    glob_t g;
    int found = glob("python/vlreward/_vlreward*.so", 0, NULL, &g) == 0;
    globfree(&g);
    CHECK(found, "python/vlreward/_vlreward*.so is not built: run `make python` (make test does)");
    if (!found) return;
    const char *build = getenv("VLR_BUILD"), *python = getenv("PYTHON");
    if (!build || !*build) build = "build";
    char cmd[1024], log[512];
    snprintf(cmd, sizeof cmd, "PYTHONPATH=python VLR_BUILD=%s %s -m unittest -v tests/test_python.py", build,
             python && *python ? python : access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3");
    snprintf(log, sizeof log, "%s/tests/test_python.unittest", build); /* unittest reports on stderr */
    char *out;
    int rc = test_run(cmd, log, &out);
    free(out);
    char *report = test_read_text(log);
    int passed = 0;
    for (const char *p = report; (p = strstr(p, " ... ok\n")); p++) passed++;
    /* a test whose optional module (NumPy, Pillow) is missing says "... skipped 'why'" */
    for (const char *p = report; (p = strstr(p, " ... skipped ")); p++) {
        const char *end = strchr(p, '\n');
        SKIP(1, "Python: %.*s", end ? (int)(end - p - 5) : 80, p + 5);
    }
    CHECK(rc == 0, "%s: exit %d:\n%s", cmd, rc, report);
    CHECK(passed >= 12, "%d Python tests passed, expected at least 12:\n%s", passed, report);
    test_passed += passed;
    free(report);
}

int main(void) {
    TEST_RUN(test_python_package);
    return test_report();
}
