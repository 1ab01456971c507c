/* test_admission.c: what `vlreward serve` knows of a request before it parses or decodes it (issue 16):
 * the JSON value bound of a body, an image's format and size from its header alone (against every
 * decodable fixture and fuzz seed, whole and cut), the plan of its sizes and tokens (against what the
 * preparation then does), the cost of a request's images, and the remote-image policy's address
 * ranges and allowlists. The policy's effect on real fetches is in test_image (test_http), the
 * server's in test_serve. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "admission.h"
#include "base64.h"
#include "fetch_policy.h"
#include "request.h"
#include "test.h"

#define REF "tests/reference/"

static bool read_all(const char *path, uint8_t **d, size_t *n) {
    vlr_err e = {0};
    char *data = NULL;
    if (vlr_read_file(path, 1u << 30, &data, n, &e)) return false;
    *d = (uint8_t *)data;
    return true;
}

static char *base64(const uint8_t *d, size_t n) {
    vlr_buf b = {0};
    vlr_base64_encode(&b, d, n);
    return b.data;
}


static size_t count_values(const vlr_json *v) {
    size_t n = 1;
    if (v->type == VLR_JSON_ARRAY || v->type == VLR_JSON_OBJECT)
        for (size_t i = 0; i < v->len; i++) n += count_values(&v->items[i]);
    return n;
}

/* The value bound holds for every text the parser accepts, and is exact for the hostile shape. */
static void test_value_bound(void) {
    static const char *texts[] = {
        "0", "[]", "{}", "[0,0,0]", "{\"a\": [1, {\"b\": null}], \"c\": \"x,y:[z\"}",
        "[\"\\\"\", \"a\\\\\", \",\", 1]", "{\"requests\": [0, 0, {\"id\": \"[,:\", \"messages\": []}]}",
        " [ [ [ ] ] , { } ] ", "\"only a string, with [brackets]\""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        vlr_err e = {0};
        vlr_json_doc *d = vlr_json_parse(texts[i], strlen(texts[i]), &e);
        CHECK(d != NULL, "parse %s: %s", texts[i], e.msg);
        if (!d) continue;
        size_t values = count_values(vlr_json_root(d)), bound = vlr_json_value_bound(texts[i], strlen(texts[i]));
        CHECK(bound >= values, "%s: %zu values, bound %zu", texts[i], values, bound);
        vlr_json_free(d);
    }
    /* {"requests": [0,0,...]}: 2 + n values for n items, two bytes each */
    vlr_buf b = {0};
    vlr_buf_puts(&b, "{\"requests\": [0");
    for (int i = 1; i < 100000; i++) vlr_buf_puts(&b, ",0");
    vlr_buf_puts(&b, "]}");
    CHECK(vlr_json_value_bound(b.data, b.len) == 100002, "2-byte items: %zu", vlr_json_value_bound(b.data, b.len));
    vlr_buf_free(&b);
}

static const vlr_preproc_config *preproc(void) {
    static vlr_preproc_config pp = {.min_pixels = 3136, .max_pixels = 12845056, .mean = {0.5f, 0.5f, 0.5f},
                                    .std = {0.5f, 0.5f, 0.5f}, .rescale_factor = 1.0 / 255, .patch_size = 14,
                                    .merge_size = 2, .temporal_patch_size = 2};
    return &pp;
}

/* Costing a request's images from their headers: pixels and tokens add up, the first image over a
 * limit is named, remote images are counted apart, nothing needs decoding. */
static void test_request_cost(void) {
    vlr_parsed_request r;
    vlr_err e = {0};
    vlr_cost cost;
    const char *two = "{\"messages\": [{\"role\": \"user\", \"content\": [{\"image\": \"images/tiny_30x20.png\"}, "
                      "{\"image\": \"images/demo.jpg\", \"max_pixels\": 100000}, {\"image\": \"https://example.com/x.png\"}, "
                      "{\"text\": \"q\"}]}, {\"role\": \"assistant\", \"content\": \"a\"}]}";
    CHECK(vlr_request_parse(two, strlen(two), 0, "tests/reference", &r, &e) == VLR_OK, "parse: %s", e.msg);
    vlr_image_plan a, b;
    vlr_image_file_info demo;
    vlr_image_opts small = {.max_pixels = 100000};
    CHECK(vlr_image_probe_source("images/demo.jpg", "tests/reference", NULL, &demo, &e) == VLR_OK &&
              vlr_image_plan_size(20, 30, NULL, preproc(), 0, &a, &e) == VLR_OK &&
              vlr_image_plan_size(demo.height, demo.width, &small, preproc(), 0, &b, &e) == VLR_OK,
          "plans: %s", e.msg);
    CHECK(vlr_request_cost(&r.req, preproc(), NULL, &cost, &e) == VLR_OK && cost.n_images == 2 && cost.n_remote == 1 &&
              cost.pixels == a.pixels + b.pixels && cost.image_tokens == a.n_tokens + b.n_tokens,
          "cost: %zu images, %zu remote, %llu pixels, %llu tokens: %s", cost.n_images, cost.n_remote,
          (unsigned long long)cost.pixels, (unsigned long long)cost.image_tokens, e.msg);
    /* the token limit: the second image is the one that does not fit */
    vlr_image_limits lim = {.max_tokens = a.n_tokens + b.n_tokens - 1};
    CHECK(vlr_request_cost(&r.req, preproc(), &lim, &cost, &e) == VLR_ERR_LIMIT && strncmp(e.msg, "image 2: ", 9) == 0 &&
              strstr(e.msg, "token limit"),
          "over the token limit: %s", e.msg);
    lim = (vlr_image_limits){.max_pixels = 1000};
    CHECK(vlr_request_cost(&r.req, preproc(), &lim, &cost, &e) == VLR_ERR_LIMIT && strncmp(e.msg, "image 1: ", 9) == 0 &&
              strstr(e.msg, "more than 1000 pixels"),
          "over the pixel cap: %s", e.msg);
    vlr_parsed_request_free(&r);

    const char *missing = "{\"image\": \"images/none.png\", \"question\": \"q\", \"answer\": \"a\"}";
    CHECK(vlr_request_parse(missing, strlen(missing), 0, "tests/reference", &r, &e) == VLR_OK, "parse: %s", e.msg);
    CHECK(vlr_request_cost(&r.req, preproc(), NULL, &cost, &e) == VLR_ERR_IO && strstr(e.msg, "image 1: ") &&
              strstr(e.msg, "none.png"),
          "missing file: %s", e.msg);
    vlr_parsed_request_free(&r);
}

/* ---- header probe and plan: an image's cost before any pixel is decoded (issue 16) ------------- */


/* Probes d[0..n) whole and cut: the whole gives the decoder's size (or both fail); a prefix gives
 * need_more or that same size, never another one. */
static void check_probe(const char *what, const uint8_t *d, size_t n, int *checked) {
    vlr_image img = {0};
    vlr_image_file_info info, probed;
    vlr_err e = {0};
    bool need_more;
    vlr_status drc = vlr_image_decode(d, n, what, NULL, &img, &info, &e);
    vlr_status prc = vlr_image_probe(d, n, what, &probed, &need_more, &e);
    if (drc == VLR_OK) {
        CHECK(prc == VLR_OK && probed.width == info.width && probed.height == info.height &&
                  strcmp(probed.format, info.format) == 0,
              "%s: probe %dx%d %s (%s), decode %dx%d %s", what, probed.width, probed.height, probed.format, e.msg,
              info.width, info.height, info.format);
        (*checked)++;
        for (size_t cut = 0; cut < n; cut += cut < 64 ? 1 : cut / 4) {
            prc = vlr_image_probe(d, cut, what, &probed, &need_more, &e);
            CHECK(prc == VLR_OK ? probed.width == info.width && probed.height == info.height : need_more || cut < 12,
                  "%s cut to %zu: rc %d, %dx%d, need_more %d: %s", what, cut, (int)prc, probed.width, probed.height,
                  (int)need_more, e.msg);
        }
    }
    vlr_image_free(&img);
}

/* A baseline JPEG whose frame header is edited to claim w x h; the scan data stays that of the small
 * image, so libjpeg would decode gigapixels of grey from a few hundred bytes (as Pillow does). */
static bool jpeg_claiming(int w, int h, uint8_t **out, size_t *n) {
    if (!read_all("tests/fuzz/corpus_image/baseline.jpg", out, n)) return false;
    for (size_t i = 2; i + 9 < *n; i++)
        if ((*out)[i] == 0xff && (*out)[i + 1] == 0xc0) {
            (*out)[i + 5] = (uint8_t)(h >> 8), (*out)[i + 6] = (uint8_t)h;
            (*out)[i + 7] = (uint8_t)(w >> 8), (*out)[i + 8] = (uint8_t)w;
            return true;
        }
    return false;
}

static void test_probe(void) {
    int checked = 0;
    static const char *dirs[] = {REF "images", "tests/fuzz/corpus_image"};
    for (size_t k = 0; k < 2; k++) {
        DIR *dir = opendir(dirs[k]);
        CHECK(dir != NULL, "%s", dirs[k]);
        struct dirent *de;
        while (dir && (de = readdir(dir))) {
            char path[600];
            uint8_t *d = NULL;
            size_t n = 0;
            if (de->d_name[0] == '.' || strstr(de->d_name, ".json")) continue;
            snprintf(path, sizeof path, "%s/%s", dirs[k], de->d_name);
            if (read_all(path, &d, &n)) check_probe(path, d, n, &checked);
            free(d);
        }
        if (dir) closedir(dir);
    }
    CHECK(checked >= 25, "probed %d decodable files", checked);

    /* A JPEG with 200 KB of metadata before its frame header: probing a file reads past the first
     * 64 KiB only for such a file, and still finds the size. */
    uint8_t *d = NULL;
    size_t n = 0;
    vlr_err e = {0};
    vlr_image_file_info info;
    char path[300];
    snprintf(path, sizeof path, "/tmp/vlr_test_probe_%d.jpg", (int)getpid());
    if (read_all("tests/fuzz/corpus_image/baseline.jpg", &d, &n)) {
        FILE *f = fopen(path, "wb");
        CHECK(f != NULL, "write %s", path);
        if (f) {
            fwrite(d, 1, 2, f);
            static uint8_t app[2 + 65535]; /* marker, then 65535 bytes counted by the length field */
            for (int s = 0; s < 4; s++) { /* four APP1 segments of 64 KiB each */
                app[0] = 0xff, app[1] = 0xe1, app[2] = 0xff, app[3] = 0xff;
                fwrite(app, 1, 2 + 65535, f);
            }
            fwrite(d + 2, 1, n - 2, f);
            fclose(f);
            CHECK(vlr_image_probe_source(path, NULL, NULL, &info, &e) == VLR_OK && info.width == 16 && info.height == 16 &&
                      strcmp(info.format, "JPEG") == 0,
                  "JPEG header after 256 KiB of metadata: %dx%d %s", info.width, info.height, e.msg);
            unlink(path);
        }
        free(d);
    }
    CHECK(vlr_image_probe_source("http://127.0.0.1:9/x.png", NULL, NULL, &info, &e) == VLR_ERR_UNSUPPORTED,
          "a remote image is not probed: %s", e.msg);

    /* The bomb: 691 bytes of JPEG declaring 16384 x 10922 (178,946,048 pixels, just under
     * Pillow's cap). Under a 2^25 cap it is refused from the header, in no time; with the token limit
     * of a request it is refused the same way, before decoding. */
    vlr_preproc_config pp = *preproc();
    if (jpeg_claiming(16384, 10922, &d, &n)) {
        char *b64 = base64(d, n);
        vlr_buf uri = {0};
        vlr_buf_printf(&uri, "data:image/jpeg;base64,%s", b64);
        vlr_image_limits lim = {.max_pixels = 1u << 25};
        vlr_prepared_image out;
        double t0 = vlr_now();
        vlr_status rc = vlr_image_prepare(uri.data, NULL, NULL, &pp, &lim, &out, &e);
        CHECK(rc == VLR_ERR_LIMIT && strstr(e.msg, "16384x10922 = 178946048 pixels, more than the limit of 33554432") &&
                  out.pixel_values == NULL,
              "JPEG bomb under a 2^25 cap: %d %s", (int)rc, e.msg);
        vlr_image_limits tokens = {.max_tokens = 1000};
        rc = vlr_image_prepare(uri.data, NULL, NULL, &pp, &tokens, &out, &e);
        CHECK(rc == VLR_ERR_LIMIT && strstr(e.msg, "more than the 1000 left of the token limit"),
              "JPEG bomb under a token limit: %d %s", (int)rc, e.msg);
        CHECK(vlr_image_probe_source(uri.data, NULL, NULL, &info, &e) == VLR_OK && info.width == 16384 &&
                  info.height == 10922,
              "probe of the data URI: %s", e.msg);
        double took = vlr_now() - t0;
        CHECK(took < 0.5, "three refusals from the header took %.2f s (decoding takes seconds)", took);
        vlr_buf_free(&uri);
        free(b64);
        free(d);
    }

    /* min_pixels asks a 30x20 image for 12.7 megapixels: 16224 tokens, known from the grid before the
     * resize; the plan is what prepare then does. */
    vlr_image_opts big = {.min_pixels = 12845056};
    vlr_image_limits tokens = {.max_tokens = 1000};
    vlr_prepared_image out;
    vlr_image_plan plan;
    vlr_status rc = vlr_image_prepare("images/tiny_30x20.png", REF, &big, &pp, &tokens, &out, &e);
    CHECK(rc == VLR_ERR_LIMIT && strstr(e.msg, "takes 16224 tokens") && out.pixel_values == NULL,
          "min_pixels over the token limit: %d %s", (int)rc, e.msg);
    vlr_image_opts cases[] = {{0}, {.max_pixels = 50000}, {.min_pixels = 200000}, {.resized_height = 100, .resized_width = 300}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK(vlr_image_plan_size(20, 30, &cases[c], &pp, 0, &plan, &e) == VLR_OK &&
                  vlr_image_prepare("images/tiny_30x20.png", REF, &cases[c], &pp, NULL, &out, &e) == VLR_OK &&
                  plan.resized_h == out.resized_h && plan.resized_w == out.resized_w && plan.n_patches == out.n_patches &&
                  plan.n_tokens == out.n_patches / 4,
              "plan %zu: %lldx%lld, prepared %dx%d: %s", c, (long long)plan.resized_w, (long long)plan.resized_h,
              out.resized_w, out.resized_h, e.msg);
        vlr_prepared_image_free(&out);
    }
    CHECK(vlr_image_plan_size(20, 30, NULL, &pp, 100, &plan, &e) == VLR_ERR_LIMIT && strstr(e.msg, "30x20 = 600 pixels"),
          "plan over the cap: %s", e.msg);
}

/* ---- remote-image policy: address ranges and allowlists ----------------------------------------- */

static bool sockaddr_of(const char *text, struct sockaddr_storage *ss) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        return true;
    }
    v6->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, text, &v6->sin6_addr) == 1;
}

static void test_fetch_policy(void) {
    static const struct { const char *addr, *cls; } cases[] = {
        {"8.8.8.8", NULL}, {"1.1.1.1", NULL}, {"172.32.0.1", NULL}, {"100.128.0.1", NULL},
        {"2606:4700::1111", NULL}, {"64:ff9b::808:808", NULL}, {"2002:808:808::1", NULL},
        {"127.0.0.1", "loopback"}, {"127.255.0.9", "loopback"}, {"10.1.2.3", "private"}, {"172.16.0.1", "private"},
        {"172.31.255.255", "private"}, {"192.168.1.1", "private"}, {"169.254.169.254", "link-local"},
        {"100.100.100.200", "shared address space"}, {"0.0.0.0", "this network"}, {"224.0.0.1", "multicast"},
        {"255.255.255.255", "reserved"}, {"198.18.0.1", "benchmarking"}, {"192.0.2.1", "documentation"},
        {"::", "unspecified"}, {"::1", "loopback"}, {"fe80::1", "link-local"}, {"fd00:ec2::254", "unique local"},
        {"::ffff:10.0.0.1", "private"}, {"::ffff:127.0.0.1", "loopback"}, {"64:ff9b::7f00:1", "loopback"},
        {"2002:7f00:1::1", "loopback"}, {"2002:a9fe:a9fe::", "link-local"}, {"2001:0:4136:e378::1", "Teredo"},
        {"2001:db8::1", "documentation"}, {"ff02::1", "multicast"}, {"::7f00:1", "IPv4-compatible"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        CHECK(sockaddr_of(cases[i].addr, &ss), "address %s", cases[i].addr);
        const char *got = vlr_address_class((struct sockaddr *)&ss);
        CHECK(cases[i].cls ? got && strstr(got, cases[i].cls) : got == NULL, "%s: %s, want %s", cases[i].addr,
              got ? got : "public", cases[i].cls ? cases[i].cls : "public");
    }
    vlr_fetch_policy *p = NULL;
    vlr_err e = {0};
    char why[300];
    struct sockaddr_storage ss;
    CHECK(vlr_fetch_policy_parse("images.example.com, *.cdn.example, 10.0.0.0/8, 2001:db8::/32,203.0.113.7", &p, &e) == VLR_OK,
          "allowlist: %s", e.msg);
    if (p) {
        static const struct { const char *host, *addr; bool ok; } rules[] = {
            {"images.example.com", "127.0.0.1", true},   /* a listed name, whatever its address */
            {"IMAGES.example.com.", "8.8.8.8", true},
            {"a.b.cdn.example", "8.8.8.8", true},
            {"cdn.example", "8.8.8.8", false},           /* "*." means subdomains only */
            {"other.com", "10.9.8.7", true},             /* an address inside a listed block */
            {"other.com", "::ffff:10.9.8.7", true},
            {"other.com", "203.0.113.7", true},
            {"other.com", "203.0.113.8", false},
            {"other.com", "2001:db8::5", true},
            {"other.com", "8.8.8.8", false},             /* public but not listed */
            {"other.com", "127.0.0.1", false}};
        for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
            sockaddr_of(rules[i].addr, &ss);
            why[0] = '\0';
            bool ok = vlr_fetch_policy_allows(p, rules[i].host, (struct sockaddr *)&ss, why, sizeof why);
            CHECK(ok == rules[i].ok && (ok || strstr(why, "allowlist")), "%s at %s: %d (%s)", rules[i].host, rules[i].addr,
                  (int)ok, why);
        }
        vlr_fetch_policy_free(p);
    }
    CHECK(vlr_fetch_policy_parse("off", &p, &e) == VLR_OK && vlr_fetch_policy_off(p), "off");
    vlr_fetch_policy_free(p);
    static const char *bad[] = {"", "10.0.0.0/33", "bad host!", "a,,b", "1.2.3.4/x", "http://x.com"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = NULL;
        CHECK(vlr_fetch_policy_parse(bad[i], &p, &e) == VLR_ERR_INPUT && p == NULL && e.msg[0], "\"%s\" refused: %s", bad[i],
              e.msg);
    }
}

int main(void) {
    TEST_RUN(test_value_bound);
    TEST_RUN(test_request_cost);
    TEST_RUN(test_probe);
    TEST_RUN(test_fetch_policy);
    return test_report();
}
