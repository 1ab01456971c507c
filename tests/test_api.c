/* test_api.c: the public API as a library user sees it. The shared library's dynamic symbol table
 * is exactly the functions include/vlreward.h marks VLR_API, under the SONAME libvlreward.so.0. */
#include <ctype.h>
#include <stdio.h>

#include "image.h"
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

/* The library boundary (issue 13): libvlreward holds no CLI code (benchmark datasets, FLOP counts,
 * the random-weight model), the CLI includes no library header but internal.h, and `make install`
 * installs the public header, the CLI, the archive, the versioned shared-library links and the
 * pkg-config file, nothing else. */
static void test_boundary(void) {
    const char *build = getenv("VLR_BUILD");
    if (!build || !*build) build = "build";
    char cmd[1024], *out;
    snprintf(cmd, sizeof cmd, "nm -g --defined-only %s/libvlreward.a", build);
    int rc = test_run(cmd, "/dev/null", &out);
    CHECK(rc == 0 && strstr(out, " T vlr_score\n"), "%s: exit %d", cmd, rc);
    static const char *const cli_only[] = {" vlr_eval_", " vlr_bench_", " vlr_rb_", " vlr_vlrb_", " vlr_pairs_"};
    for (size_t i = 0; i < sizeof cli_only / sizeof *cli_only; i++)
        CHECK(!strstr(out, cli_only[i]), "libvlreward.a defines CLI code:%s...", cli_only[i]);
    free(out);

    /* every quoted include of cli/ names a cli/ header, internal.h or vlreward.h */
    rc = test_run("grep -H '^#include \"' cli/*.c cli/*.h", "/dev/null", &out);
    CHECK(rc == 0 && strstr(out, "\"internal.h\""), "grep cli includes: exit %d", rc);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        char file[256], name[256], path[600];
        if (sscanf(line, "%255[^:]:#include \"%255[^\"]\"", file, name) != 2) continue;
        snprintf(path, sizeof path, "cli/%s", name);
        CHECK(strcmp(name, "internal.h") == 0 || strcmp(name, "vlreward.h") == 0 || access(path, R_OK) == 0,
              "%s includes the library header %s (the CLI sees the library through internal.h)", file, name);
    }
    free(out);

    /* make install into a scratch DESTDIR, when the build is up to date (never rebuild from here) */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MAKELEVEL make -q BUILD=%s %s/vlreward %s/libvlreward.a %s/libvlreward.so",
             build, build, build, build);
    if (test_run(cmd, "/dev/null", &out) != 0) {
        free(out);
        SKIP(1, "%s is not up to date: make install not tried", build);
        return;
    }
    free(out);
    char dest[] = "/tmp/vlr_install_XXXXXX";
    CHECK(mkdtemp(dest) != NULL, "mkdtemp");
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MAKELEVEL make -s --no-print-directory BUILD=%s DESTDIR=%s PREFIX=/usr install "
             ">/dev/null && cd %s && find . \\( -type f -o -type l \\) | sort", build, dest, dest);
    rc = test_run(cmd, "/dev/null", &out);
    char want[512];
    snprintf(want, sizeof want, "./usr/bin/vlreward\n./usr/include/vlreward.h\n./usr/lib/libvlreward.a\n"
             "./usr/lib/libvlreward.so\n./usr/lib/libvlreward.so.0\n./usr/lib/libvlreward.so.%s\n"
             "./usr/lib/pkgconfig/vlreward.pc\n", VLR_VERSION);
    CHECK(rc == 0 && strcmp(out, want) == 0, "make install: exit %d, installed:\n%s", rc, out);
    free(out);
    snprintf(cmd, sizeof cmd, "readlink %s/usr/lib/libvlreward.so %s/usr/lib/libvlreward.so.0", dest, dest);
    rc = test_run(cmd, "/dev/null", &out);
    snprintf(want, sizeof want, "libvlreward.so.0\nlibvlreward.so.%s\n", VLR_VERSION);
    CHECK(rc == 0 && strcmp(out, want) == 0, "installed links: %s", out);
    free(out);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dest);
    CHECK(system(cmd) == 0, "%s", cmd);
}

static vlr_model *load_tiny(void) {
    vlr_params params = vlr_default_params();
    params.n_threads = 2;
    vlr_model *m = NULL;
    char err[512];
    vlr_status rc = vlr_model_load(MODEL, &params, &m, err, sizeof err);
    CHECK(rc == VLR_OK, "load %s: %s", MODEL, err);
    return m;
}

/* The tiny model and a session on it (NULL, the model freed, when either cannot be had). */
static vlr_session *open_tiny(vlr_model **m) {
    vlr_session *s = NULL;
    *m = load_tiny();
    if (!*m || vlr_session_init(*m, &s) != VLR_OK) {
        CHECK(false, "session");
        vlr_model_free(*m);
        *m = NULL;
        return NULL;
    }
    return s;
}

#define DEMO "tests/reference/images/demo.jpg"
#define QUESTION "Is Purple the highest value?"

/* user: [image item, question], assistant: answer */
static vlr_status score_two_turns(vlr_session *s, vlr_content_item image, const char *answer, double *score) {
    vlr_content_item user[2] = {image, {.kind = VLR_ITEM_TEXT, .text = QUESTION, .text_len = strlen(QUESTION)}};
    vlr_content_item asst = {.kind = VLR_ITEM_TEXT, .text = answer, .text_len = strlen(answer)};
    vlr_message msgs[2] = {{"user", user, 2}, {"assistant", &asst, 1}};
    vlr_request req = {msgs, 2, NULL};
    return vlr_score(s, &req, score);
}

static void test_version(void) {
    CHECK(strcmp(vlr_version(), VLR_VERSION) == 0, "vlr_version() = %s, header %s", vlr_version(), VLR_VERSION);
}

/* vlr_score refuses what the JSON reader refuses, with the same message. */
static void test_validation(void) {
    vlr_model *m;
    vlr_session *s = open_tiny(&m);
    if (!s) return;
    const char *json = "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}";
    double score = 12345;
    vlr_status rc = vlr_score_json(s, json, strlen(json), NULL, &score);
    char json_msg[1024];
    snprintf(json_msg, sizeof json_msg, "%s", vlr_session_errmsg(s));
    CHECK(rc == VLR_ERR_INPUT && strstr(json_msg, "last message is a user turn"), "JSON: %d %s", rc, json_msg);

    vlr_content_item hi = {.kind = VLR_ITEM_TEXT, .text = "hi", .text_len = 2};
    vlr_message user = {"user", &hi, 1};
    vlr_request req = {&user, 1, NULL};
    rc = vlr_score(s, &req, &score);
    CHECK(rc == VLR_ERR_INPUT && strcmp(vlr_session_errmsg(s), json_msg) == 0, "structs: %d \"%s\" vs JSON \"%s\"", rc,
          vlr_session_errmsg(s), json_msg);
    CHECK(score == 12345, "no score written on failure");

    struct { vlr_request req; const char *want; } bad[6];
    vlr_message no_role = {NULL, &hi, 1}, odd_role = {"robot", &hi, 1}, no_items = {"assistant", NULL, 3};
    vlr_content_item null_image = {.kind = VLR_ITEM_IMAGE}, kind9 = {.kind = (vlr_item_kind)9};
    vlr_content_item narrow = {.kind = VLR_ITEM_IMAGE_PIXELS, .pixels = (const uint8_t *)"abcdef", .width = 2,
                               .height = 1, .stride = 5};
    vlr_message m_null_image = {"assistant", &null_image, 1}, m_kind9 = {"assistant", &kind9, 1},
                m_narrow = {"assistant", &narrow, 1};
    bad[0].req = (vlr_request){&user, 0, NULL}, bad[0].want = "messages: empty conversation";
    bad[1].req = (vlr_request){&no_role, 1, NULL}, bad[1].want = "messages[0].role: unknown role \"(null)\"";
    bad[2].req = (vlr_request){&odd_role, 1, NULL}, bad[2].want = "messages[0].role: unknown role \"robot\"";
    bad[3].req = (vlr_request){&no_items, 1, NULL}, bad[3].want = "items is NULL but n_items is 3";
    bad[4].req = (vlr_request){&m_null_image, 1, NULL}, bad[4].want = "image item without a source";
    bad[5].req = (vlr_request){&m_kind9, 1, NULL}, bad[5].want = "unknown item kind 9";
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = vlr_score(s, &bad[i].req, &score);
        CHECK(rc == VLR_ERR_INPUT && strstr(vlr_session_errmsg(s), bad[i].want), "bad request %zu: %d %s", i, rc,
              vlr_session_errmsg(s));
    }
    vlr_request narrow_req = {&m_narrow, 1, NULL};
    rc = vlr_score(s, &narrow_req, &score);
    CHECK(rc == VLR_ERR_INPUT && strstr(vlr_session_errmsg(s), "stride 5 is less than 3 * width"), "stride: %s",
          vlr_session_errmsg(s));
    vlr_session_free(s);
    vlr_model_free(m);
}

/* The golden image as a path, as the file's bytes and as decoded pixels (rows padded apart): one
 * score, bit for bit. The same for an RGBA PNG, whose alpha is flattened on white in every form. */
static void check_memory_forms(vlr_session *s, const char *path) {
    char *file = NULL;
    size_t file_len = 0;
    vlr_err e;
    if (vlr_read_file(path, 1 << 26, &file, &file_len, &e) != VLR_OK) {
        CHECK(false, "read %s: %s", path, e.msg);
        return;
    }
    double by_path = 0, by_bytes = 1, by_pixels = 2;
    vlr_status rc = score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE, .image = path}, "No.", &by_path);
    CHECK(rc == VLR_OK, "%s as a path: %s", path, vlr_session_errmsg(s));
    rc = score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE_BYTES, .image_bytes = (uint8_t *)file,
                                               .image_len = file_len}, "No.", &by_bytes);
    CHECK(rc == VLR_OK && by_bytes == by_path, "%s as bytes: %s %.17g vs path %.17g", path, vlr_session_errmsg(s),
          by_bytes, by_path);

    vlr_image img = {0};
    rc = vlr_image_decode((uint8_t *)file, file_len, path, NULL, &img, NULL, &e);
    CHECK(rc == VLR_OK, "decode %s: %s", path, e.msg);
    size_t row = (size_t)img.width * 3, stride = row + 7;
    uint8_t *padded = calloc(stride * (size_t)img.height, 1);
    for (int y = 0; y < img.height && padded; y++) memcpy(padded + (size_t)y * stride, img.rgb + (size_t)y * row, row);
    rc = score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE_PIXELS, .pixels = padded, .width = img.width,
                                               .height = img.height, .stride = stride}, "No.", &by_pixels);
    CHECK(rc == VLR_OK && by_pixels == by_path, "%s as pixels: %s %.17g vs path %.17g", path, vlr_session_errmsg(s),
          by_pixels, by_path);
    double packed = 3;
    rc = score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE_PIXELS, .pixels = img.rgb, .width = img.width,
                                               .height = img.height}, "No.", &packed);
    CHECK(rc == VLR_OK && packed == by_path, "%s as packed pixels (stride 0): %.17g", path, packed);
    free(padded);
    vlr_image_free(&img);
    free(file);
}

static void test_memory_images(void) {
    vlr_model *m;
    vlr_session *s = open_tiny(&m);
    if (!s) return;
    check_memory_forms(s, DEMO);
    check_memory_forms(s, "tests/reference/images/rocket_rgba.png");

    /* the path score is the golden one the CLI prints (tests/test_cli.c checks the CLI against it) */
    const char *json = "{\"image\": \"" DEMO "\", \"question\": \"" QUESTION "\", \"answer\": \"No.\"}";
    double golden = 0, by_path = 1;
    CHECK(vlr_score_json(s, json, strlen(json), NULL, &golden) == VLR_OK, "JSON: %s", vlr_session_errmsg(s));
    CHECK(score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE, .image = DEMO}, "No.", &by_path) == VLR_OK &&
          by_path == golden, "structs %.17g vs JSON %.17g", by_path, golden);

    const uint8_t junk[] = "not an image at all";
    double score;
    vlr_status rc = score_two_turns(s, (vlr_content_item){.kind = VLR_ITEM_IMAGE_BYTES, .image_bytes = junk,
                                                          .image_len = sizeof junk}, "No.", &score);
    CHECK(rc == VLR_ERR_FORMAT || rc == VLR_ERR_UNSUPPORTED, "junk bytes: %d %s", rc, vlr_session_errmsg(s));
    CHECK(strstr(vlr_session_errmsg(s), "image 1: image bytes"), "junk bytes message: %s", vlr_session_errmsg(s));
    vlr_session_free(s);
    vlr_model_free(m);
}

static void test_batch(void) {
    vlr_model *m;
    vlr_session *s = open_tiny(&m);
    if (!s) return;
    vlr_content_item image = {.kind = VLR_ITEM_IMAGE, .image = DEMO};
    vlr_content_item q = {.kind = VLR_ITEM_TEXT, .text = QUESTION, .text_len = strlen(QUESTION)};
    vlr_content_item user_items[2] = {image, q};
    vlr_content_item yes = {.kind = VLR_ITEM_TEXT, .text = "Yes.", .text_len = 4};
    vlr_content_item no = {.kind = VLR_ITEM_TEXT, .text = "No.", .text_len = 3};
    vlr_message a[2] = {{"user", user_items, 2}, {"assistant", &yes, 1}};
    vlr_message b[2] = {{"user", user_items, 2}, {"assistant", &no, 1}};
    vlr_message bad[1] = {{"user", user_items, 2}};
    vlr_request reqs[4] = {{a, 2, NULL}, {bad, 1, NULL}, {b, 2, NULL}, {a, 2, NULL}};
    double want[4];
    for (size_t i = 0; i < 4; i++) {
        vlr_session *fresh = NULL;
        CHECK(vlr_session_init(m, &fresh) == VLR_OK, "fresh session");
        vlr_status rc = vlr_score(fresh, &reqs[i], &want[i]);
        CHECK((rc == VLR_OK) == (i != 1), "single %zu: %d", i, rc);
        vlr_session_free(fresh);
    }
    vlr_batch_result res[4];
    vlr_status rc = vlr_score_batch(s, reqs, 4, res);
    CHECK(rc == VLR_ERR_INPUT, "batch status %d", rc);
    for (size_t i = 0; i < 4; i++) {
        if (i == 1) {
            CHECK(res[i].status == VLR_ERR_INPUT && strstr(res[i].message, "last message is a user turn"),
                  "item 1: %d %s", res[i].status, res[i].message);
        } else {
            CHECK(res[i].status == VLR_OK && res[i].message[0] == '\0' && res[i].score == want[i],
                  "item %zu: %d %.17g vs %.17g", i, res[i].status, res[i].score, want[i]);
        }
    }
    CHECK(want[0] != want[2], "the two answers score differently (%.17g)", want[0]);
    CHECK(vlr_score_batch(s, reqs, 0, res) == VLR_OK, "empty batch");
    CHECK(vlr_score_batch(s, NULL, 2, res) == VLR_ERR_INPUT && strstr(vlr_session_errmsg(s), "reqs or results is NULL"),
          "NULL requests: %s", vlr_session_errmsg(s));
    vlr_request good[2] = {reqs[0], reqs[2]};
    CHECK(vlr_score_batch(s, good, 2, res) == VLR_OK && res[0].score == want[0] && res[1].score == want[2],
          "all-good batch");

    volatile int cancel = 1;
    vlr_session_set_cancel_flag(s, &cancel);
    rc = vlr_score_batch(s, good, 2, res);
    CHECK(rc == VLR_ERR_INTERRUPTED && res[0].status == VLR_ERR_INTERRUPTED && res[1].status == VLR_ERR_INTERRUPTED &&
          strcmp(res[1].message, "interrupted") == 0, "cancelled batch: %d %d %d", rc, res[0].status, res[1].status);
    cancel = 0;
    CHECK(vlr_score_batch(s, good, 2, res) == VLR_OK && res[0].score == want[0], "after the cancel");
    vlr_session_set_cancel_flag(s, NULL);
    vlr_session_free(s);
    vlr_model_free(m);
}

int main(void) {
    TEST_RUN(test_exported_symbols);
    TEST_RUN(test_boundary);
    TEST_RUN(test_version);
    TEST_RUN(test_validation);
    TEST_RUN(test_memory_images);
    TEST_RUN(test_batch);
    return test_report();
}
