/* test_image.c: the image front end against the goldens of tests/reference.
 *
 *   - every image of expected.jsonl: file format / mode / size, decoded RGB (sha256, sum), the
 *     qwen_vl_utils size and the bicubic-resized RGB (sha256, sum), then vlr_image_prepare per case:
 *     pixel_values shape / sum / sum_sq / first8 and image_grid_thw; the two .f32 dumps bit-exact
 *   - the 87 Pillow resize goldens of tests/reference/resize (sha256, sum, first bytes)
 *   - smart_resize edge cases (half-to-even, aspect > 200, min / max branches)
 *   - formats the goldens lack, written here with libpng / libjpeg / libwebp / by hand and checked
 *     against Pillow 9.4's rules restated independently below (16-bit, palette + tRNS, CMYK, ...)
 *   - hostile input: truncations, flipped bytes, a 100000x100000 header, CRC damage; sources
 *     (data: URI, file://, unreachable URL) and hostile HTTP answers from a local test server
 *     (redirect to file://, redirect loop, oversized bodies with and without Content-Length,
 *     HTTP errors, a stalled body)
 * With VLR_IMAGE_BENCH=1 it also times the 1920x1080 JPEG front end (see bench/image.md). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jpeglib.h>
#include <openssl/evp.h>
#include <png.h>
#include <webp/encode.h>

#include "base64.h"
#include "eval.h"
#include "fetch_policy.h"
#include "image.h"
#include "json.h"
#include "test.h"

#define REF "tests/reference/"

/* ---- helpers -------------------------------------------------------------------------------- */

static void sha256_hex(const uint8_t *d, size_t n, char out[65]) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned len = 0;
    EVP_Digest(d, n, md, &len, EVP_sha256(), NULL);
    for (unsigned i = 0; i < len && i < 32; i++) sprintf(out + 2 * i, "%02x", md[i]);
    out[64] = '\0';
}

static uint64_t byte_sum(const uint8_t *d, size_t n) {
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) s += d[i];
    return s;
}

static size_t rgb_bytes(const vlr_image *im) { return (size_t)im->width * im->height * 3; }

static bool read_all(const char *path, uint8_t **d, size_t *n) {
    vlr_err e = {0};
    char *data = NULL;
    if (vlr_read_file(path, 1u << 30, &data, n, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return false;
    }
    *d = (uint8_t *)data;
    return true;
}

static vlr_status decode_file(const char *path, vlr_image *img, vlr_image_file_info *info, vlr_err *e) {
    uint8_t *d = NULL;
    size_t n = 0;
    if (!read_all(path, &d, &n)) return VLR_ERR_IO;
    vlr_status rc = vlr_image_decode(d, n, path, NULL, img, info, e);
    free(d);
    return rc;
}

static const char *json_str(const vlr_json *o, const char *key) {
    const vlr_json *v = vlr_json_get(o, key);
    return vlr_json_is(v, VLR_JSON_STRING) ? v->str : "";
}

static int64_t json_i64(const vlr_json *v) {
    int64_t x = -1;
    return vlr_json_int(v, &x) ? x : -1;
}

/* The tiny-a preprocessor_config.json, by hand (the loader lives elsewhere). */
static vlr_preproc_config tiny_preproc(void) {
    vlr_preproc_config pp = {.min_pixels = 3136,
                             .max_pixels = 12845056,
                             .mean = {0.48145466f, 0.4578275f, 0.40821073f},
                             .std = {0.26862954f, 0.26130258f, 0.27577711f},
                             .rescale_factor = 0.00392156862745098,
                             .patch_size = 14,
                             .merge_size = 2,
                             .temporal_patch_size = 2};
    return pp;
}

/* Splits a .jsonl file into parsed lines. */
typedef struct jsonl {
    vlr_json_doc **docs;
    size_t n;
} jsonl;

static bool jsonl_read(const char *path, jsonl *out) {
    memset(out, 0, sizeof *out);
    uint8_t *d = NULL;
    size_t n = 0;
    if (!read_all(path, &d, &n)) return false;
    const char *s = (const char *)d, *end = s + n;
    bool ok = true;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);
        if (len) {
            vlr_err e = {0};
            vlr_json_doc *doc = vlr_json_parse(s, len, &e);
            if (!doc) {
                fprintf(stderr, "%s: %s\n", path, e.msg);
                ok = false;
                break;
            }
            out->docs = realloc(out->docs, (out->n + 1) * sizeof *out->docs);
            out->docs[out->n++] = doc;
        }
        s += len + 1;
    }
    free(d);
    return ok;
}

static void jsonl_free(jsonl *j) {
    for (size_t i = 0; i < j->n; i++) vlr_json_free(j->docs[i]);
    free(j->docs);
}

static uint32_t lcg(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

/* ---- goldens: expected.jsonl ----------------------------------------------------------------- */

/* Per-item options of a case's image items, in order (qwen_vl_utils keys). */
static size_t case_image_opts(const vlr_json *c, vlr_image_opts *opts, const char **paths, size_t cap) {
    size_t k = 0;
    const vlr_json *msgs = vlr_json_get(c, "messages");
    for (size_t i = 0; msgs && i < msgs->len; i++) {
        const vlr_json *content = vlr_json_get(vlr_json_at(msgs, i), "content");
        if (!vlr_json_is(content, VLR_JSON_ARRAY)) continue;
        for (size_t j = 0; j < content->len; j++) {
            const vlr_json *it = vlr_json_at(content, j);
            const vlr_json *img = vlr_json_get(it, "image");
            if (!img || k >= cap) continue;
            memset(&opts[k], 0, sizeof opts[k]);
            if (vlr_json_get(it, "min_pixels")) opts[k].min_pixels = json_i64(vlr_json_get(it, "min_pixels"));
            if (vlr_json_get(it, "max_pixels")) opts[k].max_pixels = json_i64(vlr_json_get(it, "max_pixels"));
            paths[k] = img->str;
            k++;
        }
    }
    return k;
}

static void check_expected_image(const vlr_json *im, const vlr_image_opts *opts) {
    char path[512], hex[65];
    snprintf(path, sizeof path, REF "%s", json_str(im, "path"));
    vlr_image img = {0}, resized = {0};
    vlr_image_file_info info;
    vlr_err e = {0};
    vlr_status rc = decode_file(path, &img, &info, &e);
    CHECK(rc == VLR_OK, "%s: decode: %s", path, e.msg);
    if (rc) return;
    CHECK(strcmp(info.format, json_str(im, "file_format")) == 0, "%s: format %s", path, info.format);
    CHECK(strcmp(info.mode, json_str(im, "file_mode")) == 0, "%s: mode %s want %s", path, info.mode,
          json_str(im, "file_mode"));
    const vlr_json *wh = vlr_json_get(im, "file_size_wh");
    CHECK(info.width == json_i64(vlr_json_at(wh, 0)) && info.height == json_i64(vlr_json_at(wh, 1)) &&
              img.width == info.width && img.height == info.height,
          "%s: size %dx%d", path, info.width, info.height);
    sha256_hex(img.rgb, rgb_bytes(&img), hex);
    CHECK(strcmp(hex, json_str(im, "rgb_sha256")) == 0, "%s: decoded RGB sha256 %s", path, hex);
    CHECK((int64_t)byte_sum(img.rgb, rgb_bytes(&img)) == json_i64(vlr_json_get(im, "rgb_sum")), "%s: rgb_sum", path);

    /* qwen_vl_utils sizing with the item's keys, then the bicubic resize. */
    int64_t h = 0, w = 0;
    rc = vlr_smart_resize(img.height, img.width, 28, opts->min_pixels ? opts->min_pixels : VLR_QWEN_MIN_PIXELS,
                          opts->max_pixels ? opts->max_pixels : VLR_QWEN_MAX_PIXELS, &h, &w, &e);
    const vlr_json *hw = vlr_json_get(im, "resized_hw");
    CHECK(rc == VLR_OK && h == json_i64(vlr_json_at(hw, 0)) && w == json_i64(vlr_json_at(hw, 1)),
          "%s: resized %lldx%lld", path, (long long)h, (long long)w);
    rc = vlr_image_resize_bicubic(&img, (int)w, (int)h, &resized, &e);
    CHECK(rc == VLR_OK, "%s: resize: %s", path, e.msg);
    if (rc == VLR_OK) {
        sha256_hex(resized.rgb, rgb_bytes(&resized), hex);
        CHECK(strcmp(hex, json_str(im, "resized_rgb_sha256")) == 0, "%s: resized RGB sha256 %s", path, hex);
        CHECK((int64_t)byte_sum(resized.rgb, rgb_bytes(&resized)) == json_i64(vlr_json_get(im, "resized_rgb_sum")),
              "%s: resized_rgb_sum", path);
    }
    vlr_image_free(&img);
    vlr_image_free(&resized);
}

static bool rel_close(double got, double want, double rel) {
    return fabs(got - want) <= rel * (fabs(want) > 1 ? fabs(want) : 1);
}

static void check_f32_dump(const char *file, const vlr_prepared_image *p) {
    char path[512];
    snprintf(path, sizeof path, REF "%s", file);
    uint8_t *d = NULL;
    size_t n = 0;
    if (!read_all(path, &d, &n)) {
        CHECK(0, "%s unreadable", path);
        return;
    }
    size_t want = p->n_patches * p->patch_dim * sizeof(float);
    CHECK(n == want, "%s: %zu bytes, ours %zu", path, n, want);
    if (n == want) {
        size_t diff = 0;
        for (size_t i = 0; i < n / 4; i++) diff += memcmp(d + 4 * i, (const uint8_t *)p->pixel_values + 4 * i, 4) != 0;
        CHECK(diff == 0, "%s: %zu of %zu floats differ", path, diff, n / 4);
    }
    free(d);
}

static void test_expected(void) {
    jsonl cases, expected;
    if (!jsonl_read(REF "cases.jsonl", &cases) || !jsonl_read(REF "expected.jsonl", &expected)) {
        CHECK(0, "cannot read cases.jsonl / expected.jsonl");
        return;
    }
    CHECK(cases.n == expected.n && cases.n >= 13, "%zu cases, %zu expected", cases.n, expected.n);
    vlr_preproc_config pp = tiny_preproc();
    int n_images = 0, n_cases = 0;
    for (size_t ci = 0; ci < cases.n && ci < expected.n; ci++) {
        const vlr_json *c = vlr_json_root(cases.docs[ci]), *x = vlr_json_root(expected.docs[ci]);
        const char *id = json_str(x, "id");
        CHECK(strcmp(id, json_str(c, "id")) == 0, "case order: %s", id);
        vlr_image_opts opts[8];
        const char *paths[8];
        size_t k = case_image_opts(c, opts, paths, 8);
        const vlr_json *images = vlr_json_get(x, "images");
        CHECK(images && images->len == k, "%s: %zu image items", id, k);
        if (!images || images->len != k || k == 0) continue;
        for (size_t i = 0; i < k; i++) {
            check_expected_image(vlr_json_at(images, i), &opts[i]);
            n_images++;
        }

        /* The whole chain per image, as the model runs it. */
        const vlr_json *pv = vlr_json_get(x, "pixel_values"), *grids = vlr_json_get(x, "image_grid_thw");
        double sum = 0, sum_sq = 0;
        size_t rows = 0, dim = 0;
        float first8[8] = {0};
        vlr_prepared_image prep[8];
        memset(prep, 0, sizeof prep);
        bool ok = true;
        for (size_t i = 0; i < k; i++) {
            vlr_err e = {0};
            vlr_status rc = vlr_image_prepare(paths[i], REF, &opts[i], &pp, NULL, &prep[i], &e);
            CHECK(rc == VLR_OK, "%s: prepare image %zu: %s", id, i, e.msg);
            if (rc) { ok = false; continue; }
            const vlr_json *g = vlr_json_at(grids, i);
            CHECK(prep[i].grid_t == json_i64(vlr_json_at(g, 0)) && prep[i].grid_h == json_i64(vlr_json_at(g, 1)) &&
                      prep[i].grid_w == json_i64(vlr_json_at(g, 2)),
                  "%s: image %zu grid (%d, %d, %d)", id, i, prep[i].grid_t, prep[i].grid_h, prep[i].grid_w);
            const vlr_json *im = vlr_json_at(images, i);
            CHECK(strcmp(prep[i].file.format, json_str(im, "file_format")) == 0 &&
                      strcmp(prep[i].file.mode, json_str(im, "file_mode")) == 0 &&
                      prep[i].resized_h == json_i64(vlr_json_at(vlr_json_get(im, "resized_hw"), 0)) &&
                      prep[i].resized_w == json_i64(vlr_json_at(vlr_json_get(im, "resized_hw"), 1)),
                  "%s: image %zu file info / resized size", id, i);
            size_t count = prep[i].n_patches * prep[i].patch_dim;
            for (size_t j = 0; j < count; j++) {
                double v = prep[i].pixel_values[j];
                sum += v;
                sum_sq += v * v;
            }
            if (i == 0)
                for (int j = 0; j < 8; j++) first8[j] = prep[0].pixel_values[j];
            rows += prep[i].n_patches;
            dim = prep[i].patch_dim;
        }
        if (ok) {
            const vlr_json *shape = vlr_json_get(pv, "shape");
            CHECK((int64_t)rows == json_i64(vlr_json_at(shape, 0)) && (int64_t)dim == json_i64(vlr_json_at(shape, 1)),
                  "%s: pixel_values shape [%zu, %zu]", id, rows, dim);
            double want_sum = vlr_json_get(pv, "sum")->number, want_sq = vlr_json_get(pv, "sum_sq")->number;
            CHECK(rel_close(sum, want_sum, 1e-9), "%s: pixel_values sum %.17g want %.17g", id, sum, want_sum);
            CHECK(rel_close(sum_sq, want_sq, 1e-9), "%s: pixel_values sum_sq %.17g want %.17g", id, sum_sq, want_sq);
            const vlr_json *f8 = vlr_json_get(pv, "first8");
            int same = 0;
            for (int j = 0; j < 8; j++) same += (double)first8[j] == vlr_json_at(f8, (size_t)j)->number;
            CHECK(same == 8, "%s: first8 (%d of 8 exact)", id, same);
            const vlr_json *file = vlr_json_get(pv, "file");
            if (vlr_json_is(file, VLR_JSON_STRING) && k == 1) check_f32_dump(file->str, &prep[0]);
            n_cases++;
        }
        for (size_t i = 0; i < k; i++) vlr_prepared_image_free(&prep[i]);
    }
    CHECK(n_images == 13 && n_cases == 12, "covered %d images in %d cases", n_images, n_cases);
    jsonl_free(&cases);
    jsonl_free(&expected);
}

/* ---- goldens: the 87 Pillow resize pairs ----------------------------------------------------- */

static void test_resize_goldens(void) {
    jsonl r;
    if (!jsonl_read(REF "resize/resize.jsonl", &r)) {
        CHECK(0, "cannot read resize.jsonl");
        return;
    }
    CHECK(r.n == 87, "%zu resize pairs", r.n);
    char last_src[256] = "";
    vlr_image src = {0};
    int exact = 0;
    for (size_t i = 0; i < r.n; i++) {
        const vlr_json *o = vlr_json_root(r.docs[i]);
        const char *name = json_str(o, "source");
        if (strcmp(name, last_src) != 0) {
            vlr_image_free(&src);
            char path[512];
            snprintf(path, sizeof path, REF "resize/%s", name);
            vlr_err e = {0};
            CHECK(decode_file(path, &src, NULL, &e) == VLR_OK, "%s: %s", path, e.msg);
            snprintf(last_src, sizeof last_src, "%s", name);
        }
        const vlr_json *swh = vlr_json_get(o, "src_wh"), *dwh = vlr_json_get(o, "dst_wh");
        CHECK(src.width == json_i64(vlr_json_at(swh, 0)) && src.height == json_i64(vlr_json_at(swh, 1)), "%s size", name);
        int w = (int)json_i64(vlr_json_at(dwh, 0)), h = (int)json_i64(vlr_json_at(dwh, 1));
        vlr_image dst = {0};
        vlr_err e = {0};
        if (vlr_image_resize_bicubic(&src, w, h, &dst, &e) != VLR_OK) {
            CHECK(0, "%s -> %dx%d: %s", name, w, h, e.msg);
            continue;
        }
        char hex[65];
        sha256_hex(dst.rgb, rgb_bytes(&dst), hex);
        const vlr_json *f12 = vlr_json_get(o, "first12");
        bool head = true;
        for (size_t j = 0; f12 && j < f12->len && j < rgb_bytes(&dst); j++)
            head = head && dst.rgb[j] == json_i64(vlr_json_at(f12, j));
        bool ok = strcmp(hex, json_str(o, "sha256")) == 0;
        CHECK(ok, "%s -> %dx%d: sha256 %s (sum %llu want %lld, first bytes %s)", name, w, h, hex,
              (unsigned long long)byte_sum(dst.rgb, rgb_bytes(&dst)), (long long)json_i64(vlr_json_get(o, "sum")),
              head ? "same" : "differ");
        exact += ok;
        vlr_image_free(&dst);
    }
    printf("resize goldens: %d of %zu byte-exact\n", exact, r.n);
    vlr_image_free(&src);
    jsonl_free(&r);
}

/* The SIMD resize against its scalar twin on random images: shapes with 1, odd and even tap
 * counts, shrinking and enlarging each axis, widths whose rows are not a multiple of 16 bytes. */
static void test_resize_twins(void) {
    uint32_t seed = 12345;
    int same = 0, cases = 0;
    for (int t = 0; t < 60; t++) {
        int w = 1 + (int)(lcg(&seed) % 300), h = 1 + (int)(lcg(&seed) % 200);
        int ow = t % 7 == 0 ? 1 : 1 + (int)(lcg(&seed) % 400), oh = t % 5 == 0 ? h : 1 + (int)(lcg(&seed) % 300);
        if (t == 1) ow = w * 301, oh = 2; /* very wide output */
        if (t == 2) w = 2000, ow = 3;     /* a filter wider than the SIMD path takes */
        vlr_image src = {w, h, malloc((size_t)w * h * 3)}, a = {0}, b = {0};
        for (size_t i = 0; i < (size_t)w * h * 3; i++) src.rgb[i] = (uint8_t)(t & 1 ? lcg(&seed) : (uint32_t)(i % 3) * 120 + (lcg(&seed) & 7) * (uint32_t)(i & 1));
        vlr_err e = {0};
        bool ok = vlr_image_resize_bicubic(&src, ow, oh, &a, &e) == VLR_OK &&
                  vlr_image_resize_bicubic_ref(&src, ow, oh, &b, &e) == VLR_OK &&
                  memcmp(a.rgb, b.rgb, (size_t)ow * oh * 3) == 0;
        CHECK(ok, "resize %dx%d -> %dx%d: SIMD differs from the scalar twin %s", w, h, ow, oh, e.msg);
        same += ok;
        cases++;
        vlr_image_free(&src);
        vlr_image_free(&a);
        vlr_image_free(&b);
    }
    printf("resize twins: %d of %d identical\n", same, cases);
}

/* ---- smart_resize ---------------------------------------------------------------------------- */

static void expect_size(int64_t h, int64_t w, int64_t mn, int64_t mx, int64_t want_h, int64_t want_w) {
    int64_t oh = 0, ow = 0;
    vlr_err e = {0};
    vlr_status rc = vlr_smart_resize(h, w, 28, mn, mx, &oh, &ow, &e);
    CHECK(rc == VLR_OK && oh == want_h && ow == want_w, "smart_resize(%lld, %lld, min %lld, max %lld) = %lldx%lld (%s), want %lldx%lld",
          (long long)h, (long long)w, (long long)mn, (long long)mx, (long long)oh, (long long)ow, e.msg,
          (long long)want_h, (long long)want_w);
}

static void test_smart_resize(void) {
    const int64_t mn = VLR_QWEN_MIN_PIXELS, mx = VLR_QWEN_MAX_PIXELS;
    expect_size(427, 126, mn, mx, 420, 112);  /* 126/28 = 4.5 -> 4 (half to even) */
    expect_size(70, 98, mn, mx, 56, 112);     /* 2.5 -> 2, 3.5 -> 4 */
    expect_size(450, 600, mn, mx, 448, 588);  /* demo.jpg */
    expect_size(700, 1000, mn, mx, 700, 1008);
    expect_size(20, 30, mn, mx, 56, 84);      /* min branch: ceil */
    expect_size(256, 256, 100352, mx, 336, 336);
    expect_size(400, 600, mn, 50176, 168, 252); /* max branch: floor */
    expect_size(1, 200, mn, mx, 28, 196);     /* aspect exactly 200 is allowed; h rounds to 0 -> 28 */
    expect_size(1080, 1920, mn, mx, 1092, 1932);
    expect_size(10000, 10000, mn, 784, 28, 28); /* floor to 0 -> factor */
    int64_t oh, ow;
    vlr_err e = {0};
    CHECK(vlr_smart_resize(1, 201, 28, mn, mx, &oh, &ow, &e) == VLR_ERR_INPUT && strstr(e.msg, "aspect ratio"),
          "aspect 201 must fail: %s", e.msg);
    CHECK(vlr_smart_resize(3000, 14, 28, mn, mx, &oh, &ow, &e) == VLR_ERR_INPUT, "aspect 214 must fail");
    CHECK(vlr_smart_resize(0, 10, 28, mn, mx, &oh, &ow, &e) != VLR_OK, "zero height must fail");
    CHECK(vlr_smart_resize(10, 10, 28, mn, 0, &oh, &ow, &e) != VLR_OK, "max_pixels 0 must fail");

    /* The chain with an item max_pixels below the processor's min: qwen_vl_utils gives 28x28,
     * the processor's own smart_resize then enlarges to 56x56 (a second resize). */
    vlr_image img = {0};
    if (decode_file(REF "images/coffee.jpg", &img, NULL, &e) == VLR_OK) {
        vlr_preproc_config pp = tiny_preproc();
        vlr_image_opts o = {.max_pixels = 784};
        vlr_prepared_image p;
        CHECK(vlr_image_prepare_rgb(&img, &o, &pp, &p, &e) == VLR_OK && p.resized_h == 56 && p.resized_w == 56 &&
                  p.grid_h == 4 && p.grid_w == 4 && p.n_patches == 16 && p.patch_dim == 1176,
              "second resize by the processor: %dx%d %s", p.resized_w, p.resized_h, e.msg);
        vlr_prepared_image_free(&p);
        vlr_image_opts r = {.resized_height = 100, .resized_width = 150, .min_pixels = 1000000};
        CHECK(vlr_image_prepare_rgb(&img, &r, &pp, &p, &e) == VLR_OK && p.resized_h == 112 && p.resized_w == 140,
              "resized_height/width override min_pixels: %dx%d", p.resized_w, p.resized_h);
        vlr_prepared_image_free(&p);
        vlr_image_opts neg = {.min_pixels = -1};
        CHECK(vlr_image_prepare_rgb(&img, &neg, &pp, &p, &e) == VLR_ERR_INPUT, "negative min_pixels");
    }
    vlr_image_free(&img);
}

/* ---- formats the goldens lack: encoders and Pillow's rules, restated ------------------------- */

typedef struct membuf {
    uint8_t *d;
    size_t n, cap;
} membuf;

static void membuf_put(membuf *m, const void *p, size_t n) {
    if (m->n + n > m->cap) {
        m->cap = (m->n + n) * 2;
        m->d = realloc(m->d, m->cap);
    }
    memcpy(m->d + m->n, p, n);
    m->n += n;
}

static void png_write_mem(png_structp png, png_bytep d, size_t n) { membuf_put(png_get_io_ptr(png), d, n); }
static void png_flush_mem(png_structp png) { (void)png; }

/* Writes a PNG whose rows are given as one sample value per entry (packed here). */
typedef struct png_spec {
    int w, h, depth, color_type, interlace;
    const uint16_t *samples; /* [h][w][channels] */
    const png_color *pal;
    int n_pal;
    const uint8_t *trns;
    int n_trns;
    png_color_16 trns_color;
    bool has_trns_color;
} png_spec;

static int png_channels(int ct) {
    return ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_PALETTE ? 1 : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2
           : ct == PNG_COLOR_TYPE_RGB                                  ? 3
                                                                       : 4;
}

static membuf write_png(const png_spec *s) {
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.d);
        memset(&m, 0, sizeof m);
        return m;
    }
    png_set_write_fn(png, &m, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, s->w, s->h, s->depth, s->color_type, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (s->pal) png_set_PLTE(png, info, s->pal, s->n_pal);
    if (s->trns || s->has_trns_color)
        png_set_tRNS(png, info, s->trns, s->n_trns, s->has_trns_color ? (png_color_16p)&s->trns_color : NULL);
    png_write_info(png, info);
    int ch = png_channels(s->color_type);
    size_t rowbytes = ((size_t)s->w * ch * s->depth + 7) / 8;
    uint8_t *rows = calloc((size_t)s->h, rowbytes);
    for (int y = 0; y < s->h; y++) {
        uint8_t *r = rows + (size_t)y * rowbytes;
        for (int i = 0; i < s->w * ch; i++) {
            unsigned v = s->samples[(size_t)y * s->w * ch + i];
            if (s->depth == 16) {
                r[2 * i] = (uint8_t)(v >> 8);
                r[2 * i + 1] = (uint8_t)v;
            } else if (s->depth == 8) {
                r[i] = (uint8_t)v;
            } else {
                int per = 8 / s->depth;
                r[i / per] |= (uint8_t)(v << (8 - s->depth * (i % per + 1)));
            }
        }
    }
    png_bytep *ptrs = malloc(sizeof(png_bytep) * (size_t)s->h);
    for (int y = 0; y < s->h; y++) ptrs[y] = rows + (size_t)y * rowbytes;
    png_write_image(png, ptrs);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    free(ptrs);
    free(rows);
    return m;
}

static inline uint8_t white_paste(unsigned c, unsigned a) {
    /* Pillow Paste.c BLEND(mask, white, c): round-half-up of (255(255 - a) + c a) / 255 */
    return (uint8_t)((255u * (255u - a) + c * a + 127u) / 255u);
}

/* The RGB Pillow 9.4's to_rgb gives for one PNG pixel (PngImagePlugin._MODES + Convert.c). */
static void pillow_png_pixel(const png_spec *s, const uint16_t *px, const uint8_t pal_rgb[256][3], uint8_t out[3]) {
    int d = s->depth;
    unsigned hi8 = 0;
    switch (s->color_type) {
    case PNG_COLOR_TYPE_GRAY:
        if (d == 16) hi8 = px[0] > 255 ? 255 : px[0];   /* mode I, i2rgb clamps */
        else hi8 = d == 1 ? (px[0] ? 255 : 0) : px[0] * (255 / ((1u << d) - 1));
        out[0] = out[1] = out[2] = (uint8_t)hi8;
        break;
    case PNG_COLOR_TYPE_RGB:
        for (int c = 0; c < 3; c++) out[c] = (uint8_t)(d == 16 ? px[c] >> 8 : px[c]);
        break;
    case PNG_COLOR_TYPE_PALETTE: memcpy(out, pal_rgb[px[0]], 3); break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        if (d == 16) out[0] = out[1] = out[2] = white_paste(px[0] >> 8, px[1] >> 8); /* LA;16B -> RGBA */
        else out[0] = out[1] = out[2] = (uint8_t)px[0];                              /* LA: alpha dropped */
        break;
    default:
        for (int c = 0; c < 3; c++) out[c] = white_paste(d == 16 ? px[c] >> 8 : px[c], d == 16 ? px[3] >> 8 : px[3]);
    }
}

static void check_png_spec(const char *what, png_spec *s, const char *want_mode) {
    int ch = png_channels(s->color_type);
    size_t n = (size_t)s->w * s->h * ch;
    uint16_t *samples = malloc(n * sizeof *samples);
    uint32_t seed = (uint32_t)(s->depth * 131 + s->color_type * 7 + s->interlace);
    unsigned maxv = (1u << s->depth) - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned v = lcg(&seed) & maxv;
        if (i < 4 && s->depth == 16) v = i == 0 ? 0 : i == 1 ? 255 : i == 2 ? 256 : 65535; /* I clamp edges */
        if (s->color_type == PNG_COLOR_TYPE_PALETTE && s->n_pal) v %= (unsigned)s->n_pal;
        samples[i] = (uint16_t)v;
    }
    s->samples = samples;
    membuf m = write_png(s);
    uint8_t pal_rgb[256][3];
    for (int i = 0; i < 256; i++) pal_rgb[i][0] = pal_rgb[i][1] = pal_rgb[i][2] = (uint8_t)i;
    for (int i = 0; i < s->n_pal; i++) {
        pal_rgb[i][0] = s->pal[i].red;
        pal_rgb[i][1] = s->pal[i].green;
        pal_rgb[i][2] = s->pal[i].blue;
    }
    vlr_image img = {0};
    vlr_image_file_info info;
    vlr_err e = {0};
    vlr_status rc = vlr_image_decode(m.d, m.n, what, NULL, &img, &info, &e);
    CHECK(rc == VLR_OK && img.width == s->w && img.height == s->h, "%s: %s", what, e.msg);
    if (rc == VLR_OK) {
        CHECK(strcmp(info.mode, want_mode) == 0 && strcmp(info.format, "PNG") == 0, "%s: mode %s want %s", what,
              info.mode, want_mode);
        size_t bad = 0;
        for (size_t p = 0; p < (size_t)s->w * s->h; p++) {
            uint8_t want[3];
            pillow_png_pixel(s, samples + p * ch, pal_rgb, want);
            bad += memcmp(want, img.rgb + 3 * p, 3) != 0;
        }
        CHECK(bad == 0, "%s: %zu pixels differ from Pillow's rules", what, bad);
    }
    vlr_image_free(&img);
    free(m.d);
    free(samples);
    s->samples = NULL;
}

static void test_png_variants(void) {
    static const struct { int ct, depth; const char *mode; } kinds[] = {
        {PNG_COLOR_TYPE_GRAY, 1, "1"},   {PNG_COLOR_TYPE_GRAY, 2, "L"},         {PNG_COLOR_TYPE_GRAY, 4, "L"},
        {PNG_COLOR_TYPE_GRAY, 8, "L"},   {PNG_COLOR_TYPE_GRAY, 16, "I"},        {PNG_COLOR_TYPE_RGB, 8, "RGB"},
        {PNG_COLOR_TYPE_RGB, 16, "RGB"}, {PNG_COLOR_TYPE_GRAY_ALPHA, 8, "LA"},  {PNG_COLOR_TYPE_GRAY_ALPHA, 16, "RGBA"},
        {PNG_COLOR_TYPE_RGBA, 8, "RGBA"}, {PNG_COLOR_TYPE_RGBA, 16, "RGBA"},    {PNG_COLOR_TYPE_PALETTE, 1, "P"},
        {PNG_COLOR_TYPE_PALETTE, 2, "P"}, {PNG_COLOR_TYPE_PALETTE, 4, "P"},     {PNG_COLOR_TYPE_PALETTE, 8, "P"},
    };
    png_color pal[256];
    for (int i = 0; i < 256; i++) pal[i] = (png_color){(uint8_t)(i * 7 + 3), (uint8_t)(255 - i), (uint8_t)(i * 13)};
    uint8_t trns[256];
    for (int i = 0; i < 256; i++) trns[i] = (uint8_t)(i * 37);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        for (int interlace = 0; interlace < 2; interlace++) {
            png_spec s = {.w = 37, .h = 23, .depth = kinds[k].depth, .color_type = kinds[k].ct, .interlace = interlace};
            char what[96];
            snprintf(what, sizeof what, "png ct%d %d-bit%s", kinds[k].ct, kinds[k].depth, interlace ? " interlaced" : "");
            if (kinds[k].ct == PNG_COLOR_TYPE_PALETTE) {
                s.pal = pal;
                s.n_pal = 1 << (kinds[k].depth < 8 ? kinds[k].depth : 6);
            }
            check_png_spec(what, &s, kinds[k].mode);
        }
    }
    /* tRNS changes nothing: palette (Pillow keeps mode P; convert is a plain lookup), grey, RGB. */
    png_spec p = {.w = 16, .h = 9, .depth = 8, .color_type = PNG_COLOR_TYPE_PALETTE, .pal = pal, .n_pal = 40,
                  .trns = trns, .n_trns = 40};
    check_png_spec("png palette + tRNS alphas", &p, "P");
    png_spec g = {.w = 16, .h = 9, .depth = 8, .color_type = PNG_COLOR_TYPE_GRAY, .has_trns_color = true,
                  .trns_color = {.gray = 7}};
    check_png_spec("png grey + tRNS", &g, "L");
    png_spec r = {.w = 16, .h = 9, .depth = 8, .color_type = PNG_COLOR_TYPE_RGB, .has_trns_color = true,
                  .trns_color = {.red = 1, .green = 2, .blue = 3}};
    check_png_spec("png RGB + tRNS", &r, "RGB");
}

/* Rewrites a PNG chunk by chunk (fresh CRCs) so tests can shrink a PLTE or fake an IHDR. */
static uint32_t crc32_png(const uint8_t *d, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xffffffffu;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_chunk(membuf *m, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t hdr[8], crc[4];
    put_be32(hdr, len);
    memcpy(hdr + 4, type, 4);
    membuf_put(m, hdr, 8);
    uint8_t *tmp = malloc(len + 4u);
    memcpy(tmp, type, 4);
    if (len) memcpy(tmp + 4, data, len);
    put_be32(crc, crc32_png(tmp, len + 4u));
    free(tmp);
    if (len) membuf_put(m, data, len);
    membuf_put(m, crc, 4);
}

static void test_png_pillow_quirks(void) {
    /* A palette shorter than the indices used: entries past PLTE are Pillow's grey ramp. */
    png_color pal[8];
    for (int i = 0; i < 8; i++) pal[i] = (png_color){(uint8_t)(200 + i), (uint8_t)(10 * i), 5};
    uint16_t idx[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    png_spec s = {.w = 8, .h = 1, .depth = 8, .color_type = PNG_COLOR_TYPE_PALETTE, .samples = idx, .pal = pal, .n_pal = 8};
    membuf src = write_png(&s), out = {0};
    membuf_put(&out, src.d, 8);
    for (size_t pos = 8; pos + 12 <= src.n;) {
        uint32_t len = (uint32_t)src.d[pos] << 24 | (uint32_t)src.d[pos + 1] << 16 | (uint32_t)src.d[pos + 2] << 8 | src.d[pos + 3];
        const char *type = (const char *)src.d + pos + 4;
        put_chunk(&out, type, src.d + pos + 8, memcmp(type, "PLTE", 4) == 0 ? 4 * 3 : len); /* keep 4 entries */
        pos += 12 + len;
    }
    vlr_image img = {0};
    vlr_image_file_info info;
    vlr_err e = {0};
    CHECK(vlr_image_decode(out.d, out.n, "short palette", NULL, &img, &info, &e) == VLR_OK, "short palette: %s", e.msg);
    if (img.rgb) {
        int bad = 0;
        for (int i = 0; i < 8; i++) {
            uint8_t want[3] = {i < 4 ? pal[i].red : (uint8_t)i, i < 4 ? pal[i].green : (uint8_t)i, i < 4 ? pal[i].blue : (uint8_t)i};
            bad += memcmp(img.rgb + 3 * i, want, 3) != 0;
        }
        CHECK(bad == 0, "indices past PLTE must map to the grey ramp (%d wrong)", bad);
    }
    vlr_image_free(&img);

    /* Tail tolerance: Pillow stops after the last row, so a PNG cut after its image data (IEND
     * and the IDAT CRC gone) still opens; a cut inside the rows fails (test_hostile). */
    uint8_t *tiny = NULL;
    size_t tn = 0;
    if (read_all(REF "images/tiny_30x20.png", &tiny, &tn)) {
        vlr_image ref = {0};
        CHECK(vlr_image_decode(tiny, tn, "tiny", NULL, &ref, NULL, &e) == VLR_OK, "tiny: %s", e.msg);
        size_t cuts[] = {12, 16};
        for (size_t i = 0; i < 2; i++) {
            vlr_image t = {0};
            vlr_status rc = vlr_image_decode(tiny, tn - cuts[i], "tiny cut", NULL, &t, NULL, &e);
            CHECK(rc == VLR_OK && ref.rgb && memcmp(t.rgb, ref.rgb, rgb_bytes(&ref)) == 0,
                  "PNG without its last %zu bytes must still decode like Pillow: %s", cuts[i], e.msg);
            vlr_image_free(&t);
        }
        /* A damaged IDAT CRC is ignored (Pillow never checks it); a damaged IHDR CRC is an error. */
        uint8_t *copy = malloc(tn);
        memcpy(copy, tiny, tn);
        copy[tn - 12 - 1] ^= 0x55; /* last byte of the IDAT CRC */
        vlr_image t = {0};
        CHECK(vlr_image_decode(copy, tn, "idat crc", NULL, &t, NULL, &e) == VLR_OK && memcmp(t.rgb, ref.rgb, rgb_bytes(&ref)) == 0,
              "IDAT CRC damage must be ignored: %s", e.msg);
        vlr_image_free(&t);
        memcpy(copy, tiny, tn);
        copy[8 + 8 + 13] ^= 1; /* IHDR CRC */
        CHECK(vlr_image_decode(copy, tn, "ihdr crc", NULL, &t, NULL, &e) == VLR_ERR_FORMAT && strstr(e.msg, "IHDR"),
              "IHDR CRC damage must fail: %s", e.msg);
        free(copy);
        vlr_image_free(&ref);
        free(tiny);
    }
    free(src.d);
    free(out.d);
}

/* ---- JPEG: grey and CMYK (Adobe-inverted), written with libjpeg ------------------------------ */

static membuf write_jpeg(int w, int h, int comps, J_COLOR_SPACE in_space, const uint8_t *px, bool progressive) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &buf, &n);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = in_space;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 90, TRUE);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    membuf m = {.d = malloc(n), .n = n, .cap = n};
    memcpy(m.d, buf, n);
    free(buf);
    return m;
}

/* libjpeg's raw output for a file, in a given output colour space (the test's own decode). */
static uint8_t *raw_jpeg(const membuf *m, J_COLOR_SPACE out_space, int *comps) {
    struct jpeg_decompress_struct d;
    struct jpeg_error_mgr err;
    d.err = jpeg_std_error(&err);
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, m->d, (unsigned long)m->n);
    jpeg_read_header(&d, TRUE);
    d.out_color_space = out_space;
    jpeg_start_decompress(&d);
    *comps = d.output_components;
    uint8_t *px = malloc((size_t)d.output_width * d.output_height * d.output_components);
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = px + (size_t)d.output_scanline * d.output_width * d.output_components;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    return px;
}

static void test_jpeg_variants(void) {
    const int w = 45, h = 31;
    uint8_t *src = malloc((size_t)w * h * 4);
    uint32_t seed = 7;
    for (int i = 0; i < w * h * 4; i++) src[i] = (uint8_t)((i % 97) * 2 + (lcg(&seed) & 15));
    /* CMYK with the Adobe marker (libjpeg writes one for CMYK): Pillow inverts ("CMYK;I") then
     * applies cmyk2rgb: with C = 255 - c, 255 - K = k, R = k - MULDIV255(255 - c, k). */
    for (int prog = 0; prog < 2; prog++) {
        membuf m = write_jpeg(w, h, 4, JCS_CMYK, src, prog);
        int comps = 0;
        uint8_t *raw = raw_jpeg(&m, JCS_CMYK, &comps);
        vlr_image img = {0};
        vlr_image_file_info info;
        vlr_err e = {0};
        CHECK(vlr_image_decode(m.d, m.n, "cmyk.jpg", NULL, &img, &info, &e) == VLR_OK, "cmyk: %s", e.msg);
        CHECK(strcmp(info.mode, "CMYK") == 0, "cmyk mode %s", info.mode);
        size_t bad = 0;
        for (size_t p = 0; img.rgb && p < (size_t)w * h; p++)
            for (int c = 0; c < 3; c++) {
                unsigned C = 255u - raw[4 * p + c], nk = raw[4 * p + 3];
                unsigned t = C * nk + 128u;
                unsigned want = nk - (((t >> 8) + t) >> 8);
                bad += img.rgb[3 * p + c] != want;
            }
        CHECK(comps == 4 && bad == 0, "cmyk%s: %zu samples differ from Pillow's rule", prog ? " progressive" : "", bad);
        vlr_image_free(&img);
        free(raw);
        free(m.d);
    }
    /* Greyscale: R = G = B = L. */
    membuf g = write_jpeg(w, h, 1, JCS_GRAYSCALE, src, false);
    int comps = 0;
    uint8_t *raw = raw_jpeg(&g, JCS_GRAYSCALE, &comps);
    vlr_image img = {0};
    vlr_err e = {0};
    CHECK(vlr_image_decode(g.d, g.n, "grey.jpg", NULL, &img, NULL, &e) == VLR_OK, "grey: %s", e.msg);
    size_t bad = 0;
    for (size_t p = 0; img.rgb && p < (size_t)w * h; p++)
        for (int c = 0; c < 3; c++) bad += img.rgb[3 * p + c] != raw[p];
    CHECK(bad == 0, "grey jpeg: %zu samples differ", bad);
    vlr_image_free(&img);
    free(raw);
    free(g.d);
    free(src);
}

/* ---- WebP (lossless, so the expected pixels are the input) and BMP (by hand) ----------------- */

static void test_webp_bmp(void) {
    const int w = 19, h = 11;
    uint8_t rgba[19 * 11 * 4];
    uint32_t seed = 99;
    for (int i = 0; i < w * h * 4; i++) rgba[i] = (uint8_t)lcg(&seed);
    for (int alpha = 1; alpha >= 0; alpha--) {
        if (!alpha)
            for (int i = 0; i < w * h; i++) rgba[4 * i + 3] = 255;
        uint8_t *enc = NULL;
        size_t n = WebPEncodeLosslessRGBA(rgba, w, h, w * 4, &enc);
        vlr_image img = {0};
        vlr_image_file_info info;
        vlr_err e = {0};
        CHECK(n > 0 && vlr_image_decode(enc, n, "x.webp", NULL, &img, &info, &e) == VLR_OK, "webp: %s", e.msg);
        CHECK(strcmp(info.format, "WEBP") == 0 && strcmp(info.mode, alpha ? "RGBA" : "RGB") == 0, "webp mode %s",
              info.mode);
        size_t bad = 0;
        for (int p = 0; img.rgb && p < w * h; p++)
            for (int c = 0; c < 3; c++) bad += img.rgb[3 * p + c] != white_paste(rgba[4 * p + c], rgba[4 * p + 3]);
        CHECK(img.rgb && bad == 0, "webp%s: %zu samples differ", alpha ? " with alpha" : "", bad);
        /* truncated WebP */
        vlr_image t = {0};
        CHECK(vlr_image_decode(enc, n / 2, "half.webp", NULL, &t, NULL, &e) == VLR_ERR_FORMAT, "half webp must fail");
        vlr_image_free(&img);
        WebPFree(enc);
    }

    /* BMP: 24-bit bottom-up, 8-bit palette, 32-bit BGRA bit fields (composited), top-down. */
    for (int kind = 0; kind < 3; kind++) {
        int bits = kind == 0 ? 24 : kind == 1 ? 8 : 32;
        int stride = ((w * bits + 31) / 32) * 4, n_pal = kind == 1 ? 256 : 0;
        int info_size = kind == 2 ? 108 : 40;
        size_t off = 14 + (size_t)info_size + (size_t)n_pal * 4, size = off + (size_t)stride * h;
        uint8_t *b = calloc(1, size);
        b[0] = 'B';
        b[1] = 'M';
        b[2] = (uint8_t)size;
        b[3] = (uint8_t)(size >> 8);
        b[10] = (uint8_t)off;
        b[11] = (uint8_t)(off >> 8);
        uint8_t *ih = b + 14;
        ih[0] = (uint8_t)info_size;
        ih[4] = (uint8_t)w;
        int32_t hh = kind == 2 ? -h : h; /* top-down for the 32-bit one */
        memcpy(ih + 8, &hh, 4);
        ih[12] = 1;
        ih[14] = (uint8_t)bits;
        if (kind == 2) {
            ih[16] = 3; /* BI_BITFIELDS, masks in the V4 header: B G R A = 0xff0000, 0xff00, 0xff, 0xff000000 */
            uint32_t masks[4] = {0xff0000u, 0xff00u, 0xffu, 0xff000000u};
            memcpy(ih + 40, masks, 16);
        }
        uint8_t pal[256][3];
        for (int i = 0; i < n_pal; i++) {
            pal[i][0] = (uint8_t)(i * 3);
            pal[i][1] = (uint8_t)(i ^ 0x5a);
            pal[i][2] = (uint8_t)(255 - i);
            uint8_t *q = b + 14 + info_size + 4 * i;
            q[0] = pal[i][2];
            q[1] = pal[i][1];
            q[2] = pal[i][0];
        }
        uint8_t want[19 * 11 * 3];
        for (int y = 0; y < h; y++) {
            int file_row = kind == 2 ? y : h - 1 - y;
            uint8_t *row = b + off + (size_t)file_row * stride;
            for (int x = 0; x < w; x++) {
                const uint8_t *s = rgba + 4 * (y * w + x);
                uint8_t *o = want + 3 * (y * w + x);
                if (kind == 0) {
                    row[3 * x] = s[2], row[3 * x + 1] = s[1], row[3 * x + 2] = s[0];
                    memcpy(o, s, 3);
                } else if (kind == 1) {
                    row[x] = s[0];
                    memcpy(o, pal[s[0]], 3);
                } else {
                    row[4 * x] = s[2], row[4 * x + 1] = s[1], row[4 * x + 2] = s[0], row[4 * x + 3] = s[3];
                    for (int c = 0; c < 3; c++) o[c] = white_paste(s[c], s[3]);
                }
            }
        }
        vlr_image img = {0};
        vlr_image_file_info info;
        vlr_err e = {0};
        vlr_status rc = vlr_image_decode(b, size, "x.bmp", NULL, &img, &info, &e);
        const char *want_mode = kind == 0 ? "RGB" : kind == 1 ? "P" : "RGBA";
        CHECK(rc == VLR_OK && strcmp(info.format, "BMP") == 0 && strcmp(info.mode, want_mode) == 0 &&
                  memcmp(img.rgb, want, sizeof want) == 0,
              "bmp %d-bit: %s (mode %s)", bits, e.msg, info.mode);
        vlr_image_free(&img);
        CHECK(vlr_image_decode(b, size - 1, "cut.bmp", NULL, &img, NULL, &e) == VLR_ERR_FORMAT, "truncated bmp must fail");
        free(b);
    }
    vlr_err e = {0};
    vlr_image img = {0};
    CHECK(vlr_image_decode((const uint8_t *)"GIF89a\1\0\1\0\0\0\0;", 14, "x.gif", NULL, &img, NULL, &e) == VLR_ERR_UNSUPPORTED,
          "GIF is refused clearly: %s", e.msg);
}

/* ---- hostile input ---------------------------------------------------------------------------- */

static void test_hostile(void) {
    static const char *files[] = {"astronaut.png", "camera_gray.jpg", "chelsea_progressive.jpg", "coffee.jpg",
                                  "coffee_palette.png", "demo.jpg", "retina_1000x700.jpg", "rocket_rgba.png",
                                  "rocket_tall.jpg", "rocket_wide.png", "tiny_30x20.png"};
    int truncations = 0, flips = 0, flips_ok = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[256];
        snprintf(path, sizeof path, REF "images/%s", files[f]);
        uint8_t *d = NULL;
        size_t n = 0;
        if (!read_all(path, &d, &n)) continue;
        /* Cuts well inside the header or the pixel data: always truncated for Pillow too. */
        size_t cuts[] = {1, 2, 3, 10, 50, n / 10, n / 2, n * 9 / 10};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            vlr_image img = {0};
            vlr_err e = {0};
            vlr_status rc = vlr_image_decode(d, cuts[c], files[f], NULL, &img, NULL, &e);
            CHECK(rc == VLR_ERR_FORMAT && img.rgb == NULL && strstr(e.msg, files[f]),
                  "%s cut to %zu bytes: rc %d, '%s'", files[f], cuts[c], (int)rc, e.msg);
            truncations++;
        }
        /* Flipped bytes after the first 100: any outcome but a crash; a success has the size. */
        uint8_t *copy = malloc(n);
        uint32_t seed = (uint32_t)f + 1;
        for (int round = 0; round < 6; round++) {
            memcpy(copy, d, n);
            for (int k = 0; k < 1 + round * 3; k++) copy[100 + lcg(&seed) % (n - 100)] ^= (uint8_t)(1 + lcg(&seed) % 255);
            vlr_image img = {0};
            vlr_image_file_info info;
            vlr_err e = {0};
            vlr_status rc = vlr_image_decode(copy, n, files[f], NULL, &img, &info, &e);
            CHECK(rc == VLR_OK ? img.width == info.width && img.rgb != NULL : img.rgb == NULL && e.msg[0] != 0,
                  "%s with flipped bytes: inconsistent result", files[f]);
            flips++;
            flips_ok += rc == VLR_OK;
            vlr_image_free(&img);
        }
        free(copy);
        /* The pixel cap applies before decoding. */
        vlr_image_limits lim = {.max_pixels = 100};
        vlr_image img = {0};
        vlr_err e = {0};
        CHECK(vlr_image_decode(d, n, files[f], &lim, &img, NULL, &e) == VLR_ERR_LIMIT && strstr(e.msg, "limit"),
              "%s over a 100-pixel cap: %s", files[f], e.msg);
        free(d);
    }
    printf("hostile: %d truncations refused; %d byte-flipped files, %d still decoded\n", truncations, flips, flips_ok);

    /* A PNG header claiming 100000 x 100000 (valid CRCs): refused from the header. */
    membuf m = {0};
    membuf_put(&m, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, 100000);
    put_be32(ihdr + 4, 100000);
    ihdr[8] = 8;
    ihdr[9] = 2;
    put_chunk(&m, "IHDR", ihdr, 13);
    put_chunk(&m, "IDAT", (const uint8_t *)"\x78\x9c\x03\x00\x00\x00\x00\x01", 8);
    put_chunk(&m, "IEND", NULL, 0);
    vlr_image img = {0};
    vlr_err e = {0};
    vlr_status rc = vlr_image_decode(m.d, m.n, "bomb.png", NULL, &img, NULL, &e);
    CHECK(rc == VLR_ERR_LIMIT && strstr(e.msg, "bomb.png") && strstr(e.msg, "10000000000"), "png bomb: %d %s", (int)rc, e.msg);
    /* ... and the same size within a raised cap fails on the missing data, not by allocating. */
    free(m.d);

    /* A JPEG whose SOF claims 65000 x 65000. */
    uint8_t *d = NULL;
    size_t n = 0;
    if (read_all(REF "images/coffee.jpg", &d, &n)) {
        for (size_t i = 2; i + 9 < n; i++)
            if (d[i] == 0xff && (d[i + 1] == 0xc0 || d[i + 1] == 0xc2)) {
                d[i + 5] = 0xfd, d[i + 6] = 0xe8, d[i + 7] = 0xfd, d[i + 8] = 0xe8;
                break;
            }
        rc = vlr_image_decode(d, n, "big.jpg", NULL, &img, NULL, &e);
        CHECK(rc == VLR_ERR_LIMIT, "jpeg bomb: %d %s", (int)rc, e.msg);
        free(d);
    }
    CHECK(vlr_image_decode((const uint8_t *)"hello world", 11, "text.txt", NULL, &img, NULL, &e) == VLR_ERR_FORMAT &&
              strstr(e.msg, "text.txt"),
          "not an image: %s", e.msg);
    CHECK(vlr_image_decode(NULL, 0, "empty", NULL, &img, NULL, &e) == VLR_ERR_FORMAT, "empty input");
}

/* ---- sources ---------------------------------------------------------------------------------- */

static char *base64(const uint8_t *d, size_t n) {
    vlr_buf b = {0};
    vlr_base64_encode(&b, d, n);
    return b.data;
}

/* One codec for every reader of base64 (data: URIs, eval's image bytes): the RFC 4648 vectors both
 * ways, and the six ASCII whitespace characters skipped by the strict decoder, by the head decoder and
 * by eval's plain-base64 detection alike (two copies used to disagree on \v and \f). */
static void test_base64(void) {
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *coded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    vlr_err e = {0};
    for (size_t i = 0; i < 7; i++) {
        char *t = base64((const uint8_t *)plain[i], strlen(plain[i]));
        CHECK(t && strcmp(t, coded[i]) == 0, "encode \"%s\": %s", plain[i], t ? t : "(null)");
        free(t);
        uint8_t *out = NULL;
        size_t n = 0;
        if (i) {
            CHECK(vlr_base64_decode(coded[i], strlen(coded[i]), 100, "t", &out, &n, &e) == VLR_OK && n == strlen(plain[i]) &&
                      memcmp(out, plain[i], n) == 0,
                  "decode %s: %s", coded[i], e.msg);
            free(out);
        }
    }
    const char spaces[] = " \t\n\v\f\r";
    for (size_t k = 0; k < 6; k++) {
        char text[64], uri[96], eval_text[2100];
        snprintf(text, sizeof text, "Zm9v%cYmFy", spaces[k]);
        uint8_t *out = NULL, head[8];
        size_t n = 0;
        CHECK(vlr_base64_decode(text, strlen(text), 100, "t", &out, &n, &e) == VLR_OK && n == 6 && memcmp(out, "foobar", 6) == 0,
              "whitespace 0x%02x skipped by the strict decoder: %s", spaces[k], e.msg);
        free(out);
        CHECK(vlr_base64_decode_head(text, strlen(text), head, sizeof head) == 6 && memcmp(head, "foobar", 6) == 0,
              "whitespace 0x%02x skipped by the head decoder", spaces[k]);
        snprintf(uri, sizeof uri, "data:image/png;base64,%s", text);
        out = NULL;
        CHECK(vlr_image_read_source(uri, NULL, NULL, &out, &n, &e) == VLR_OK && n == 6, "data URI with 0x%02x: %s",
              spaces[k], e.msg);
        free(out);
        /* eval: plain base64 long enough to be data, with the whitespace inside, becomes a data URI */
        memset(eval_text, 'A', 1500);
        eval_text[700] = spaces[k];
        eval_text[1500] = '\0';
        vlr_json_doc *d = NULL;
        vlr_buf json = {0}, src = {0};
        vlr_buf_puts(&json, "{\"image\": ");
        vlr_buf_json_string(&json, eval_text, 1500);
        vlr_buf_puts(&json, "}");
        d = vlr_json_parse(json.data, json.len, &e);
        CHECK(d && vlr_eval_image_source(vlr_json_get(vlr_json_root(d), "image"), &src, &e) == VLR_OK && src.data &&
                  strncmp(src.data, "data:image/png;base64,", 22) == 0,
              "eval reads base64 with 0x%02x as image bytes: %.40s", spaces[k], src.data ? src.data : e.msg);
        vlr_json_free(d);
        vlr_buf_free(&json);
        vlr_buf_free(&src);
    }
    CHECK(!vlr_base64_is_text("QUJD*", 5) && vlr_base64_is_text("QU JD==", 7), "is_text");
}

static void test_sources(void) {
    uint8_t *file = NULL;
    size_t fn = 0;
    bool have = read_all(REF "images/tiny_30x20.png", &file, &fn);
    CHECK(have, "fixture " REF "images/tiny_30x20.png");
    if (!have) return;
    uint8_t *got = NULL;
    size_t n = 0;
    vlr_err e = {0};
    for (size_t cut = 0; cut < 3; cut++) { /* lengths with 0, 1 and 2 padding characters */
        size_t len = fn - cut;
        char *b64 = base64(file, len);
        size_t ul = strlen(b64) + 64;
        char *uri = malloc(ul);
        snprintf(uri, ul, "data:image/png;base64,%s", b64);
        CHECK(vlr_image_read_source(uri, NULL, NULL, &got, &n, &e) == VLR_OK && n == len && memcmp(got, file, len) == 0,
              "data URI round trip (%zu bytes): %s", len, e.msg);
        free(got);
        got = NULL;
        free(uri);
        free(b64);
    }
    CHECK(vlr_image_read_source("data:image/png;base64,QUJD\nRA==", NULL, NULL, &got, &n, &e) == VLR_OK && n == 4 &&
              memcmp(got, "ABCD", 4) == 0,
          "whitespace is skipped: %s", e.msg);
    free(got);
    got = NULL;
    const char *bad[] = {"data:image/png;base64,QUJ", "data:image/png;base64,QU*D", "data:image/png;base64,QQ==QQ==",
                         "data:image/png;base64,Q===", "data:image/png;base64,", "data:image/png,QUJD",
                         "data:text/plain;base64,QUJD"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vlr_status rc = vlr_image_read_source(bad[i], NULL, NULL, &got, &n, &e);
        CHECK(rc != VLR_OK && got == NULL, "%s must fail", bad[i]);
    }
    vlr_image_limits small = {.max_download_bytes = 100};
    char *b64 = base64(file, fn);
    char *uri = malloc(strlen(b64) + 64);
    sprintf(uri, "data:image/png;base64,%s", b64);
    CHECK(vlr_image_read_source(uri, NULL, &small, &got, &n, &e) == VLR_ERR_LIMIT, "data URI over the cap");
    /* The cap is exact, on either side of it and whether the last quantum is padded or not. */
    static const struct { const char *uri; size_t bytes; } sized[] = {
        {"data:image/png;base64,QUJD", 3}, {"data:image/png;base64,QUJDRA==", 4},
        {"data:image/png;base64,QUJDREU=", 5}, {"data:image/png;base64,QUJDREVG", 6}};
    for (size_t i = 0; i < sizeof sized / sizeof sized[0]; i++) {
        for (uint64_t cap = 1; cap <= 8; cap++) {
            vlr_image_limits lim = {.max_download_bytes = cap};
            vlr_status want = cap >= sized[i].bytes ? VLR_OK : VLR_ERR_LIMIT;
            vlr_status rc = vlr_image_read_source(sized[i].uri, NULL, &lim, &got, &n, &e);
            CHECK(rc == want && (rc != VLR_OK || (n == sized[i].bytes && memcmp(got, "ABCDEF", n) == 0)) &&
                      (rc == VLR_OK || got == NULL),
                  "%s with a cap of %llu: %d '%s'", sized[i].uri, (unsigned long long)cap, (int)rc, e.msg);
            free(got);
            got = NULL;
        }
    }

    /* The whole chain from a data: URI gives the same pixels as from the path. */
    vlr_preproc_config pp = tiny_preproc();
    vlr_prepared_image a, b;
    vlr_image_opts opts = {.min_pixels = 0};
    CHECK(vlr_image_prepare(uri, NULL, &opts, &pp, NULL, &a, &e) == VLR_OK, "prepare data URI: %s", e.msg);
    CHECK(vlr_image_prepare("file://images/tiny_30x20.png", REF, &opts, &pp, NULL, &b, &e) == VLR_OK,
          "prepare file:// relative to base_dir: %s", e.msg);
    CHECK(a.pixel_values && b.pixel_values && a.n_patches == b.n_patches && a.n_patches == 24 &&
              memcmp(a.pixel_values, b.pixel_values, a.n_patches * a.patch_dim * sizeof(float)) == 0 &&
              strcmp(a.file.format, "PNG") == 0 && a.file.width == 30,
          "data: and file:// give the same pixel_values");
    vlr_prepared_image_free(&a);
    vlr_prepared_image_free(&b);
    free(uri);
    free(b64);

    char cwd[4096], abs[4200];
    if (getcwd(cwd, sizeof cwd)) {
        snprintf(abs, sizeof abs, "file://%s/" REF "images/tiny_30x20.png", cwd);
        CHECK(vlr_image_read_source(abs, "/nonexistent", NULL, &got, &n, &e) == VLR_OK && n == fn,
              "absolute file:// ignores base_dir: %s", e.msg);
        free(got);
        got = NULL;
    }
    vlr_status rc = vlr_image_read_source("images/nope.png", REF, NULL, &got, &n, &e);
    CHECK(rc == VLR_ERR_IO && strstr(e.msg, "nope.png"), "missing file: %s", e.msg);
    rc = vlr_image_prepare("images/nope.png", REF, NULL, &pp, NULL, &a, &e);
    CHECK(rc == VLR_ERR_IO && a.pixel_values == NULL, "prepare of a missing file: %s", e.msg);

    /* Nothing listens on port 9 (discard) here: a clean, quick network error. */
    vlr_image_limits quick = {.timeout_s = 5};
    double t0 = vlr_now();
    rc = vlr_image_read_source("http://127.0.0.1:9/x.png", NULL, &quick, &got, &n, &e);
    CHECK(rc == VLR_ERR_NETWORK && strncmp(e.msg, "cannot fetch URL: http://127.0.0.1:9/x.png", 41) == 0 && got == NULL,
          "unreachable URL: %d '%s'", (int)rc, e.msg);
    CHECK(vlr_now() - t0 < 6, "unreachable URL took %.1f s", vlr_now() - t0);
    rc = vlr_image_prepare("https://127.0.0.1:9/x.png", NULL, NULL, &pp, &quick, &a, &e);
    CHECK(rc == VLR_ERR_NETWORK && strstr(e.msg, "cannot fetch URL"), "prepare, unreachable URL: %s", e.msg);
    free(file);
}

/* ---- hostile HTTP answers, from a one-thread server on 127.0.0.1 ------------------------------ */

typedef struct http_server {
    int listen_fd, port;
    const uint8_t *png;
    size_t png_len;
    char file_url[4200]; /* file:// URL of a real image, the target of the hostile redirect */
} http_server;

static void send_all(int fd, const void *d, size_t n) {
    const char *p = d;
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL); /* the client may hang up: no SIGPIPE */
        if (k <= 0) return;
        p += k;
        n -= (size_t)k;
    }
}

static void send_str(int fd, const char *s) { send_all(fd, s, strlen(s)); }

/* Answers one request per connection by its path, until the listening socket is shut down. */
static void *http_server_main(void *arg) {
    http_server *srv = arg;
    for (;;) {
        int fd = accept(srv->listen_fd, NULL, NULL);
        if (fd < 0) return NULL;
        char req[4096];
        size_t got = 0;
        req[0] = '\0';
        while (got < sizeof req - 1 && !strstr(req, "\r\n\r\n")) {
            ssize_t k = recv(fd, req + got, sizeof req - 1 - got, 0);
            if (k <= 0) break;
            got += (size_t)k;
            req[got] = '\0';
        }
        req[got] = '\0';
        char path[256] = "";
        sscanf(req, "GET %255s", path);
        char head[4600];
        if (strcmp(path, "/ok.png") == 0) {
            snprintf(head, sizeof head, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                     srv->png_len);
            send_str(fd, head);
            send_all(fd, srv->png, srv->png_len);
        } else if (strcmp(path, "/to-ok") == 0) {
            send_str(fd, "HTTP/1.1 302 Found\r\nLocation: /ok.png\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        } else if (strcmp(path, "/to-file") == 0) {
            snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n", srv->file_url);
            send_str(fd, head);
        } else if (strcmp(path, "/to-literal") == 0) { /* to the loopback literal of this very server */
            snprintf(head, sizeof head, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:%d/ok.png\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n", srv->port);
            send_str(fd, head);
        } else if (strcmp(path, "/loop") == 0) {
            send_str(fd, "HTTP/1.1 302 Found\r\nLocation: /loop\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        } else if (strcmp(path, "/big-unsized") == 0) { /* no Content-Length: only the streaming cap stops it */
            send_str(fd, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            static const char chunk[1000] = {0};
            for (int i = 0; i < 100; i++) send_all(fd, chunk, sizeof chunk);
        } else if (strcmp(path, "/big-sized") == 0) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n");
        } else if (strcmp(path, "/empty") == 0) {
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        } else if (strcmp(path, "/stall") == 0) { /* promises a body, sends 10 bytes, then waits */
            send_str(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n0123456789");
            struct pollfd pfd = {.fd = fd, .events = POLLIN};
            (void)poll(&pfd, 1, 10000); /* returns when the client gives up and closes */
        } else {
            send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
        }
        close(fd);
    }
}

static void test_http(void) {
    http_server srv = {.listen_fd = -1};
    uint8_t *file = NULL;
    bool have = read_all(REF "images/tiny_30x20.png", &file, &srv.png_len);
    CHECK(have, "fixture " REF "images/tiny_30x20.png");
    if (!have) return;
    srv.png = file;
    char cwd[4000];
    if (!getcwd(cwd, sizeof cwd)) {
        CHECK(false, "getcwd");
        free(file);
        return;
    }
    snprintf(srv.file_url, sizeof srv.file_url, "file://%s/" REF "images/tiny_30x20.png", cwd);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    srv.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    if (srv.listen_fd < 0 || bind(srv.listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        /* a sandbox without a loopback interface: the HTTP source cannot be tested here */
        SKIP(9, "no loopback network (%s): the http:// image source checks did not run", strerror(errno));
        if (srv.listen_fd >= 0) close(srv.listen_fd);
        free(file);
        return;
    }
    pthread_t th;
    if (listen(srv.listen_fd, 8) != 0 || getsockname(srv.listen_fd, (struct sockaddr *)&addr, &alen) != 0 ||
        pthread_create(&th, NULL, http_server_main, &srv) != 0) {
        CHECK(false, "cannot start the local HTTP test server");
        if (srv.listen_fd >= 0) close(srv.listen_fd);
        free(file);
        return;
    }
    srv.port = ntohs(addr.sin_port);

    vlr_image_limits lim = {.max_download_bytes = 50000, .timeout_s = 5};
    char url[128];
    uint8_t *got = NULL;
    size_t n = 0;
    vlr_err e = {0};
    vlr_status rc;
#define FETCH(p) (snprintf(url, sizeof url, "http://127.0.0.1:%d%s", srv.port, p), \
                  vlr_image_read_source(url, NULL, &lim, &got, &n, &e))

    rc = FETCH("/ok.png");
    CHECK(rc == VLR_OK && n == srv.png_len && memcmp(got, file, n) == 0, "plain download: %s", e.msg);
    free(got), got = NULL;
    rc = FETCH("/to-ok");
    CHECK(rc == VLR_OK && n == srv.png_len && memcmp(got, file, n) == 0, "http -> http redirect is followed: %s", e.msg);
    free(got), got = NULL;

    /* A server must not be able to make us read a local file by redirecting to file://. */
    rc = FETCH("/to-file");
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "cannot fetch URL: http://127.0.0.1"),
          "redirect to file:// refused: %d '%s'", (int)rc, e.msg);
    free(got), got = NULL;
    rc = FETCH("/loop");
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "redirect"), "redirect loop: %d '%s'", (int)rc, e.msg);
    free(got), got = NULL;

    /* The size cap holds while streaming (no Content-Length) and from the header. */
    rc = FETCH("/big-unsized");
    CHECK(rc == VLR_ERR_LIMIT && got == NULL && strstr(e.msg, "larger than the limit of 50000 bytes"),
          "unsized body over the cap: %d '%s'", (int)rc, e.msg);
    free(got), got = NULL;
    rc = FETCH("/big-sized");
    CHECK(rc == VLR_ERR_LIMIT && got == NULL && strstr(e.msg, "larger than the limit"),
          "Content-Length over the cap: %d '%s'", (int)rc, e.msg);
    free(got), got = NULL;

    rc = FETCH("/missing.png");
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "HTTP status 404"), "404: %d '%s'", (int)rc, e.msg);
    free(got), got = NULL;
    rc = FETCH("/empty");
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "empty response"), "empty body: %d '%s'", (int)rc,
          e.msg);
    free(got), got = NULL;

    /* A body that stops arriving ends at the total timeout. */
    lim.timeout_s = 1;
    double t0 = vlr_now();
    rc = FETCH("/stall");
    double took = vlr_now() - t0;
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && took < 4, "stalled body: %d '%s' after %.1f s", (int)rc, e.msg,
          took);
    free(got), got = NULL;

    /* The remote-image policy (issue 16): "on" refuses every spelling of loopback, checked on the
     * address libcurl connects to; an allowlist admits its hosts and blocks, and is applied again on
     * every redirect hop; the request's deadline ends a fetch whatever its own timeout. */
    vlr_fetch_policy *on = NULL, *by_cidr = NULL, *by_name = NULL;
    CHECK(vlr_fetch_policy_parse("on", &on, &e) == VLR_OK && vlr_fetch_policy_parse("127.0.0.1/32", &by_cidr, &e) == VLR_OK &&
              vlr_fetch_policy_parse(" LOCALHOST ", &by_name, &e) == VLR_OK,
          "policies: %s", e.msg);
    lim.timeout_s = 5;
    static const char *spellings[] = {"127.0.0.1", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[::1]",
                                      "[::ffff:127.0.0.1]", "localhost", "0x7f.1"};
    for (size_t i = 0; i < sizeof spellings / sizeof spellings[0]; i++) {
        lim.remote = on;
        snprintf(url, sizeof url, "http://%s:%d/ok.png", spellings[i], srv.port);
        rc = vlr_image_read_source(url, NULL, &lim, &got, &n, &e);
        CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "refused by the remote-image policy") &&
                  strstr(e.msg, "loopback"),
              "policy on, %s: %d %s", url, (int)rc, e.msg);
        free(got), got = NULL;
    }
    lim.remote = by_cidr;
    rc = FETCH("/ok.png");
    CHECK(rc == VLR_OK && n == srv.png_len, "allowlist 127.0.0.1/32 fetches 127.0.0.1: %s", e.msg);
    free(got), got = NULL;
    snprintf(url, sizeof url, "http://localhost:%d/ok.png", srv.port);
    rc = vlr_image_read_source(url, NULL, &lim, &got, &n, &e);
    CHECK(rc == VLR_OK && n == srv.png_len, "allowlist 127.0.0.1/32 fetches localhost (resolved there): %s", e.msg);
    free(got), got = NULL;
    lim.remote = by_name;
    rc = vlr_image_read_source(url, NULL, &lim, &got, &n, &e);
    CHECK(rc == VLR_OK && n == srv.png_len, "allowlist localhost fetches localhost: %s", e.msg);
    free(got), got = NULL;
    snprintf(url, sizeof url, "http://localhost:%d/to-literal", srv.port);
    rc = vlr_image_read_source(url, NULL, &lim, &got, &n, &e);
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && strstr(e.msg, "neither 127.0.0.1 nor its address 127.0.0.1 is in the allowlist"),
          "a redirect from a listed host to an unlisted one is refused: %s", e.msg);
    free(got), got = NULL;
    lim.remote = NULL;
    lim.fetch_deadline = vlr_now() + 1;
    t0 = vlr_now();
    rc = FETCH("/stall");
    took = vlr_now() - t0;
    CHECK(rc == VLR_ERR_NETWORK && got == NULL && took < 3, "the request's deadline ends a stalled fetch: %.1f s, %s", took,
          e.msg);
    free(got), got = NULL;
    rc = FETCH("/ok.png");
    CHECK(rc == VLR_ERR_NETWORK && strstr(e.msg, "out of time (the request's fetch budget)"), "after the deadline: %s", e.msg);
    lim.fetch_deadline = 0;
    vlr_fetch_policy_free(on);
    vlr_fetch_policy_free(by_cidr);
    vlr_fetch_policy_free(by_name);

#undef FETCH
    shutdown(srv.listen_fd, SHUT_RDWR); /* wakes the accept() of the server thread */
    pthread_join(th, NULL);
    close(srv.listen_fd);
    free(file);
}

/* ---- bench: 1920x1080 JPEG, decode + resize + normalise + patchify ---------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[n / 2];
}

static void bench(void) {
    vlr_image photo = {0}, big = {0};
    vlr_err e = {0};
    if (decode_file(REF "images/retina_1000x700.jpg", &photo, NULL, &e) ||
        vlr_image_resize_bicubic(&photo, 1920, 1080, &big, &e)) {
        printf("bench: %s\n", e.msg);
        return;
    }
    membuf jpg = write_jpeg(1920, 1080, 3, JCS_RGB, big.rgb, false);
    vlr_preproc_config pp = tiny_preproc();
    enum { RUNS = 11 };
    double dec[RUNS], res[RUNS], res_ref[RUNS], patch[RUNS], all[RUNS], all_cpu[RUNS];
    for (int r = 0; r < RUNS; r++) {
        vlr_image img = {0}, a = {0}, b = {0};
        vlr_prepared_image p, q;
        double t0 = vlr_now(), c0 = cpu_seconds();
        vlr_image_decode(jpg.d, jpg.n, "bench.jpg", NULL, &img, NULL, &e); /* the whole front end: */
        vlr_image_prepare_rgb(&img, NULL, &pp, &q, &e);                     /* decode + prepare */
        double t1 = vlr_now(), c1 = cpu_seconds();
        vlr_image_resize_bicubic(&img, 1932, 1092, &a, &e);
        double t2 = vlr_now();
        vlr_image_patchify(&a, &pp, &p, &e);
        double t3 = vlr_now();
        vlr_image_resize_bicubic_ref(&img, 1932, 1092, &b, &e);
        double t4 = vlr_now();
        vlr_image_free(&img);
        double t5 = vlr_now();
        vlr_image_decode(jpg.d, jpg.n, "bench.jpg", NULL, &img, NULL, &e);
        double t6 = vlr_now();
        all[r] = t1 - t0, all_cpu[r] = c1 - c0, res[r] = t2 - t1, patch[r] = t3 - t2, res_ref[r] = t4 - t3;
        dec[r] = t6 - t5;
        CHECK(q.grid_h == 78 && q.grid_w == 138 && memcmp(a.rgb, b.rgb, rgb_bytes(&a)) == 0, "bench run %d", r);
        vlr_prepared_image_free(&p);
        vlr_prepared_image_free(&q);
        vlr_image_free(&img);
        vlr_image_free(&a);
        vlr_image_free(&b);
    }
    printf("bench: 1920x1080 JPEG (%zu bytes, q90 4:2:0) -> 1932x1092 -> [10764, 1176] float32, %d runs, median ms:\n"
           "  decode %.1f | resize %.1f (scalar twin %.1f) | normalise+patchify %.1f\n"
           "  decode+prepare total %.1f wall, %.1f CPU (all threads)\n",
           jpg.n, RUNS, 1e3 * median(dec, RUNS), 1e3 * median(res, RUNS), 1e3 * median(res_ref, RUNS),
           1e3 * median(patch, RUNS), 1e3 * median(all, RUNS), 1e3 * median(all_cpu, RUNS));
    free(jpg.d);
    vlr_image_free(&photo);
    vlr_image_free(&big);
}

int main(void) {
    TEST_RUN(test_smart_resize);
    TEST_RUN(test_expected);
    TEST_RUN(test_resize_goldens);
    TEST_RUN(test_resize_twins);
    TEST_RUN(test_png_variants);
    TEST_RUN(test_png_pillow_quirks);
    TEST_RUN(test_jpeg_variants);
    TEST_RUN(test_webp_bmp);
    TEST_RUN(test_hostile);
    TEST_RUN(test_base64);
    TEST_RUN(test_sources);
    TEST_RUN(test_http);
    const char *b = getenv("VLR_IMAGE_BENCH"); /* a measurement, not a test: opt-in */
    if (b && b[0] == '1') TEST_RUN(bench);
    return test_report();
}
