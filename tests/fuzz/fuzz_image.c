/* fuzz_image.c: libFuzzer target over the image front end's hostile-input surface: format
 * sniffing, the JPEG / PNG / WebP / BMP decoders with Pillow's mode conversions, the pixel cap, and
 * (on whatever decodes) the bicubic resize, whose SIMD path must equal its scalar twin. The same
 * bytes are also fed to the data: URI base64 reader. Crashes, sanitizer reports and twin
 * mismatches (abort) are findings.
 *
 * Build and run from the repository root (clang 14 here):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -Iinclude -Isrc \
 *     tests/fuzz/fuzz_image.c src/image_decode.c src/image_prep.c src/image_source.c src/common.c \
 *     $(pkg-config --cflags --libs libjpeg libpng libwebp libcurl) -lm -o build/fuzz_image
 *   mkdir -p build/fuzz_corpus && build/fuzz_image -max_total_time=120 -rss_limit_mb=2048 \
 *     build/fuzz_corpus tests/fuzz/corpus_image
 * The seeds in tests/fuzz/corpus_image are tiny files (a few hundred bytes each) written with
 * libjpeg-turbo, libpng, libwebp and by hand: baseline / progressive / grey / CMYK JPEG, PNG of
 * every colour type and depth (palette with tRNS, interlaced), lossy and lossless WebP, BMP. */
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A cap small enough that hostile headers cannot make a run slow or large. */
    vlr_image_limits lim = {.max_pixels = 1u << 20, .max_download_bytes = 1u << 20};
    vlr_image img = {0};
    vlr_image_file_info info;
    vlr_err e = {0};
    if (vlr_image_decode(data, size, "fuzz", &lim, &img, &info, &e) == VLR_OK) {
        if (!img.rgb || img.width != info.width || img.height != info.height || !info.format[0] || !info.mode[0])
            abort();
        /* Resize to a size derived from the input; the SIMD path must match the scalar twin. */
        int ow = 1 + (int)(data[size - 1] % 97), oh = 1 + (int)(data[size / 2] % 89);
        vlr_image a = {0}, b = {0};
        vlr_status ra = vlr_image_resize_bicubic(&img, ow, oh, &a, &e);
        vlr_status rb = vlr_image_resize_bicubic_ref(&img, ow, oh, &b, &e);
        if (ra != rb || (ra == VLR_OK && memcmp(a.rgb, b.rgb, (size_t)ow * oh * 3) != 0)) abort();
        vlr_image_free(&a);
        vlr_image_free(&b);
    } else if (img.rgb || e.msg[0] == '\0') {
        abort(); /* a failure must leave no image and say why */
    }
    vlr_image_free(&img);

    /* The same bytes as the payload of a data: URI (the strict base64 reader). */
    char *uri = malloc(size + 32);
    if (uri) {
        memcpy(uri, "data:image/png;base64,", 22);
        memcpy(uri + 22, data, size);
        uri[22 + size] = '\0';
        uint8_t *bytes = NULL;
        size_t n = 0;
        if (vlr_image_read_source(uri, NULL, &lim, &bytes, &n, &e) == VLR_OK && (!bytes || n == 0)) abort();
        free(bytes);
        free(uri);
    }
    return 0;
}
