/* image_decode.c: encoded image bytes -> RGB8, reproducing qwen_vl_utils.to_rgb(Image.open(...)) with
 * Pillow 9.4 (Debian 12) byte for byte.
 *
 * What Pillow does, and so what we do:
 *   - JPEG through libjpeg-turbo with its defaults (islow IDCT, fancy upsampling). One component is
 *     mode "L", three "RGB" (libjpeg's own colour-space guess, converted to RGB by libjpeg), four
 *     "CMYK": Pillow asks libjpeg for CMYK and always inverts it ("CMYK;I", Adobe polarity), then
 *     convert("RGB") applies Convert.c's cmyk2rgb.
 *   - PNG with Pillow's mode table (PngImagePlugin._MODES): 1-bit grey "1", 2/4/8-bit grey "L",
 *     16-bit grey "I" (convert clamps the 16-bit value to 0..255), 16-bit RGB keeps the high bytes,
 *     16-bit grey+alpha and RGBA become "RGBA" from the high bytes, 8-bit grey+alpha is "LA" (alpha
 *     dropped by convert), palette is "P" whatever tRNS says (convert("RGB") is a plain palette
 *     lookup; entries past PLTE are Pillow's grey ramp). tRNS never changes pixels. We read with
 *     libpng, but like Pillow we check the CRC of every chunk before the first IDAT, ignore IDAT
 *     CRCs and never read past the last image row (a PNG cut after its last row still opens).
 *   - WebP through libwebp (RGBA when the bitstream says it has alpha, else RGB).
 *   - BMP by hand: uncompressed 1/4/8/16/24/32-bit and the bit-field layouts Pillow accepts.
 *   - "RGBA" is pasted on white with alpha as the mask (Paste.c, per channel
 *     t = 255*(255-a) + c*a + 128, out = ((t >> 8) + t) >> 8); every other mode is convert("RGB").
 * Truncated data is an error as in Pillow (LOAD_TRUNCATED_IMAGES is off); the pixel cap is checked
 * from the header before any pixel buffer is allocated.
 *
 * Not here: GIF (no giflib), animated WebP, RLE BMP (refused as unsupported); EXIF orientation
 * (upstream applies none); colour management (Pillow applies none). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>
#include <webp/decode.h>

#include "image.h"

/* A progressive JPEG may carry any number of scans, each one a full pass over the coefficients;
 * real files have about ten. libjpeg-turbo's own tools cap hostile files the same way. */
#define VLR_JPEG_MAX_SCANS 500

void vlr_image_free(vlr_image *img) {
    if (!img) return;
    free(img->rgb);
    memset(img, 0, sizeof *img);
}

/* ---- shared pieces ------------------------------------------------------------------------ */

/* Paste.c BLEND with an "L" mask over white: round-half-up of (255*(255-a) + c*a) / 255. */
static inline uint8_t on_white(unsigned c, unsigned a) {
    unsigned t = 255u * (255u - a) + c * a + 128u;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

/* Convert.c cmyk2rgb on Pillow's (already inverted) CMYK: MULDIV255 then subtract from 255-K. */
static inline uint8_t cmyk_channel(unsigned c, unsigned nk) {
    unsigned t = c * nk + 128u;
    return (uint8_t)(nk - (((t >> 8) + t) >> 8));
}

static uint64_t pixel_cap(const vlr_image_limits *lim) {
    return lim && lim->max_pixels ? lim->max_pixels : VLR_IMAGE_DEFAULT_MAX_PIXELS;
}

static void set_info(vlr_image_file_info *info, const char *format, const char *mode, int w, int h) {
    memset(info, 0, sizeof *info);
    snprintf(info->format, sizeof info->format, "%s", format);
    snprintf(info->mode, sizeof info->mode, "%s", mode);
    info->width = w;
    info->height = h;
}

/* Checks the header's size against the cap and allocates the RGB8 output. */
static vlr_status alloc_rgb(const char *name, uint64_t w, uint64_t h, uint64_t cap, vlr_image *out, vlr_err *e) {
    if (w == 0 || h == 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: image has zero width or height", name);
    if (w > INT32_MAX || h > INT32_MAX || w * h > cap)
        return vlr_fail(e, VLR_ERR_LIMIT, "%s: image is %llux%llu = %llu pixels, more than the limit of %llu",
                        name, (unsigned long long)w, (unsigned long long)h,
                        (unsigned long long)(w > INT32_MAX || h > INT32_MAX ? UINT64_MAX : w * h),
                        (unsigned long long)cap);
    size_t bytes;
    if (!vlr_mul_ok((size_t)w, (size_t)h, &bytes) || !vlr_mul_ok(bytes, 3, &bytes))
        return vlr_fail(e, VLR_ERR_LIMIT, "%s: image of %llux%llu pixels is too large", name,
                        (unsigned long long)w, (unsigned long long)h);
    out->rgb = vlr_malloc(bytes, e);
    if (!out->rgb) return vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory for %llux%llu pixels", name,
                                   (unsigned long long)w, (unsigned long long)h);
    out->width = (int)w;
    out->height = (int)h;
    return VLR_OK;
}

/* ---- JPEG (libjpeg-turbo) ------------------------------------------------------------------ */

typedef struct jpeg_ctx {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands back this pointer */
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    bool hit_eof; /* JWRN_JPEG_EOF: the data ended before the decoder was done */
    char msg[JMSG_LENGTH_MAX];
} jpeg_ctx;

static void jpeg_on_error(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    c->err->format_message(c, x->msg);
    longjmp(x->jump, 1);
}

/* Warnings (level -1) are ignored as Pillow ignores them, except running out of data: Pillow's
 * suspending source then asks for more bytes and fails with "image file is truncated". */
static void jpeg_on_message(j_common_ptr c, int level) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) x->hit_eof = true;
}

static void jpeg_no_output(j_common_ptr c) { (void)c; }

static void jpeg_on_progress(j_common_ptr c) {
    jpeg_ctx *x = (jpeg_ctx *)c->err;
    if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > VLR_JPEG_MAX_SCANS) {
        snprintf(x->msg, sizeof x->msg, "more than %d progressive scans", VLR_JPEG_MAX_SCANS);
        longjmp(x->jump, 1);
    }
}

static vlr_status decode_jpeg(const uint8_t *bytes, size_t n, const char *name, uint64_t cap, vlr_image *out,
                              vlr_image_file_info *info, vlr_err *e) {
    struct jpeg_decompress_struct cinfo;
    jpeg_ctx ctx;
    /* Read after a longjmp, so volatile. */
    uint8_t *volatile row = NULL;
    volatile vlr_status rc = VLR_OK;

    memset(&cinfo, 0, sizeof cinfo);
    memset(&ctx, 0, sizeof ctx);
    cinfo.err = jpeg_std_error(&ctx.mgr);
    ctx.mgr.error_exit = jpeg_on_error;
    ctx.mgr.emit_message = jpeg_on_message;
    ctx.mgr.output_message = jpeg_no_output;
    ctx.progress.progress_monitor = jpeg_on_progress;
    if (setjmp(ctx.jump)) {
        if (ctx.hit_eof)
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: JPEG data is truncated (%s)", name, ctx.msg);
        else
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: corrupt JPEG data: %s", name, ctx.msg);
        goto done;
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &ctx.progress;
    jpeg_mem_src(&cinfo, bytes, (unsigned long)n);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK || ctx.hit_eof) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: JPEG data is truncated (no complete header)", name);
        goto done;
    }
    /* JpegImagePlugin.SOF: the mode comes from the component count alone. */
    const char *mode;
    switch (cinfo.num_components) {
    case 1: mode = "L"; cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: mode = "RGB"; cinfo.out_color_space = JCS_RGB; break;
    case 4: mode = "CMYK"; cinfo.out_color_space = JCS_CMYK; break;
    default:
        rc = vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: JPEG with %d components is not supported (Pillow refuses it too)",
                      name, cinfo.num_components);
        goto done;
    }
    if (cinfo.data_precision != 8) {
        rc = vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: %d-bit JPEG is not supported", name, cinfo.data_precision);
        goto done;
    }
    if ((rc = alloc_rgb(name, cinfo.image_width, cinfo.image_height, cap, out, e))) goto done;
    set_info(info, "JPEG", mode, out->width, out->height);

    jpeg_start_decompress(&cinfo);
    int comps = cinfo.output_components;
    if ((int)cinfo.output_width != out->width || (int)cinfo.output_height != out->height ||
        comps != cinfo.num_components) {
        rc = vlr_fail(e, VLR_ERR_INTERNAL, "%s: libjpeg output geometry differs from the header", name);
        goto done;
    }
    size_t w = (size_t)out->width;
    if (comps != 3) {
        row = vlr_malloc(w * (size_t)comps, e); /* w*4 cannot overflow: w*h*3 was checked */
        if (!row) { rc = VLR_ERR_NOMEM; goto done; }
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        uint8_t *dst = out->rgb + y * w * 3;
        JSAMPROW target = comps == 3 ? dst : row;
        if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: JPEG data is truncated", name);
            goto done;
        }
        if (comps == 1) {
            for (size_t x = 0; x < w; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
        } else if (comps == 4) {
            /* libjpeg's CMYK is inverted by Pillow ("CMYK;I"): C = 255 - c, so 255 - K = k. */
            for (size_t x = 0; x < w; x++) {
                const uint8_t *p = row + 4 * x;
                unsigned nk = p[3];
                dst[3 * x + 0] = cmyk_channel(255u - p[0], nk);
                dst[3 * x + 1] = cmyk_channel(255u - p[1], nk);
                dst[3 * x + 2] = cmyk_channel(255u - p[2], nk);
            }
        }
    }
    if (ctx.hit_eof) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: JPEG data is truncated (premature end of data)", name);
        goto done;
    }
    /* Pillow finishes too but accepts a missing EOI once every row is decoded, so an end-of-data
     * warning from here on is ignored; a hard error in the trailing markers still fails. */
    jpeg_finish_decompress(&cinfo);
done:
    jpeg_destroy_decompress(&cinfo);
    free(row);
    return rc;
}

/* ---- PNG (libpng, Pillow semantics) -------------------------------------------------------- */

typedef enum png_kind {
    PK_BIT1,   /* "1": 1-bit grey -> 0/255 */
    PK_L,      /* "L": 2/4/8-bit grey, scaled to 8 bits like Pillow's L;2 / L;4 unpackers */
    PK_I16,    /* "I": 16-bit grey; Convert.c i2rgb clamps to 0..255 */
    PK_RGB8,   /* "RGB" */
    PK_RGB16,  /* "RGB" from RGB;16B: high bytes */
    PK_P,      /* "P": palette lookup */
    PK_LA8,    /* "LA": alpha dropped */
    PK_LA16,   /* "RGBA" from LA;16B: high bytes, composited */
    PK_RGBA8,  /* "RGBA", composited */
    PK_RGBA16  /* "RGBA" from RGBA;16B: high bytes, composited */
} png_kind;

typedef struct png_ctx {
    const uint8_t *data;
    size_t n, pos;
    bool hit_end; /* libpng asked for bytes past the end of the data */
    jmp_buf jump;
    char msg[256];
    uint8_t pal[256 * 3]; /* "P": Pillow's palette, RGB per index */
} png_ctx;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_ctx *x = png_get_error_ptr(png);
    snprintf(x->msg, sizeof x->msg, "%s", msg);
    longjmp(x->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep dst, size_t len) {
    png_ctx *x = png_get_io_ptr(png);
    if (len > x->n - x->pos) {
        x->hit_end = true;
        png_error(png, "unexpected end of data");
    }
    memcpy(dst, x->data + x->pos, len);
    x->pos += len;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Pillow's PngImagePlugin checks the CRC of every chunk it reads before the first IDAT (and
 * never checks IDAT's), so a bad CRC there fails even for ancillary chunks. */
static vlr_status png_check_header_chunks(const uint8_t *d, size_t n, const char *name, vlr_err *e) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    size_t pos = 8;
    for (;;) {
        if (n - pos < 8) return vlr_fail(e, VLR_ERR_FORMAT, "%s: PNG data is truncated before the image data", name);
        uint32_t len = be32(d + pos);
        const uint8_t *type = d + pos + 4;
        if (memcmp(type, "IDAT", 4) == 0) return VLR_OK;
        if (len > 0x7fffffffu || (size_t)len + 12 > n - pos)
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: PNG data is truncated (chunk %.4s)", name, (const char *)type);
        uint32_t c = 0xffffffffu;
        for (size_t i = 0; i < (size_t)len + 4; i++) c = table[(c ^ type[i]) & 0xff] ^ (c >> 8);
        c ^= 0xffffffffu;
        if (c != be32(type + 4 + len))
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: broken PNG file (bad checksum in chunk %.4s)", name,
                            (const char *)type);
        if (memcmp(type, "IEND", 4) == 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: PNG has no image data", name);
        pos += (size_t)len + 12;
    }
}

static void png_row_to_rgb(png_kind kind, int depth, const uint8_t *s, uint8_t *d, size_t w, const uint8_t *pal) {
    switch (kind) {
    case PK_BIT1:
        for (size_t x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[x] ? 255 : 0;
        break;
    case PK_L: {
        unsigned scale = depth == 2 ? 0x55u : depth == 4 ? 0x11u : 1u;
        for (size_t x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = (uint8_t)(s[x] * scale);
        break;
    }
    case PK_I16:
        for (size_t x = 0; x < w; x++) {
            unsigned v = (unsigned)s[2 * x] << 8 | s[2 * x + 1];
            d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = (uint8_t)(v >= 255 ? 255 : v);
        }
        break;
    case PK_RGB8: memcpy(d, s, w * 3); break;
    case PK_RGB16:
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) d[3 * x + c] = s[6 * x + 2 * c];
        break;
    case PK_P:
        for (size_t x = 0; x < w; x++) memcpy(d + 3 * x, pal + 3 * s[x], 3);
        break;
    case PK_LA8:
        for (size_t x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = s[2 * x];
        break;
    case PK_LA16:
        for (size_t x = 0; x < w; x++) d[3 * x] = d[3 * x + 1] = d[3 * x + 2] = on_white(s[4 * x], s[4 * x + 2]);
        break;
    case PK_RGBA8:
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) d[3 * x + c] = on_white(s[4 * x + c], s[4 * x + 3]);
        break;
    case PK_RGBA16:
        for (size_t x = 0; x < w; x++)
            for (int c = 0; c < 3; c++) d[3 * x + c] = on_white(s[8 * x + 2 * c], s[8 * x + 6]);
        break;
    }
}

/* Every row has been handed over: libpng is only finishing the zlib stream / reading what
 * follows, which Pillow never looks at. */
static bool png_rows_complete(png_structp png, bool interlaced, uint32_t height) {
    return interlaced ? png_get_current_pass_number(png) >= 7 : png_get_current_row_number(png) >= height;
}

static vlr_status decode_png(const uint8_t *bytes, size_t n, const char *name, uint64_t cap, vlr_image *out,
                             vlr_image_file_info *info, vlr_err *e) {
    png_structp png = NULL;
    png_infop pinfo = NULL;
    png_ctx ctx;
    uint8_t *volatile raw = NULL;        /* interlaced: the whole image; else one row */
    png_bytep *volatile rows = NULL;
    volatile vlr_status rc = VLR_OK;
    volatile int stage = 0;              /* 1: reading rows, 2: rows done */
    volatile bool interlaced = false;
    volatile uint32_t height = 0;
    volatile size_t rowbytes = 0;
    volatile png_kind kind = PK_RGB8;
    volatile int depth = 8;
    uint8_t *pal = ctx.pal;

    if ((rc = png_check_header_chunks(bytes, n, name, e))) return rc;
    memset(&ctx, 0, sizeof ctx);
    ctx.data = bytes;
    ctx.n = n;
    png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, png_on_error, png_on_warning);
    if (png) pinfo = png_create_info_struct(png);
    if (!png || !pinfo) {
        rc = vlr_fail(e, VLR_ERR_NOMEM, "%s: out of memory", name);
        goto done;
    }
    if (setjmp(ctx.jump)) {
        if (stage == 1 && png_rows_complete(png, interlaced, height)) {
            stage = 2; /* the tail after the last row is missing or broken: Pillow never reads it */
            if (!interlaced) png_row_to_rgb(kind, depth, raw, out->rgb + (size_t)(height - 1) * out->width * 3,
                                            (size_t)out->width, pal);
            goto convert;
        }
        rc = vlr_fail(e, VLR_ERR_FORMAT, ctx.hit_end ? "%s: PNG data is truncated (%s)" : "%s: corrupt PNG data: %s",
                      name, ctx.msg);
        goto done;
    }
    png_set_read_fn(png, &ctx, png_read_mem);
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE); /* header chunks checked above */
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu);            /* our own pixel cap applies */
    png_set_benign_errors(png, 1);
#ifdef PNG_IGNORE_ADLER32
    png_set_option(png, PNG_IGNORE_ADLER32, PNG_OPTION_ON);
#endif
    png_read_info(png, pinfo);

    png_uint_32 w32, h32;
    int bit_depth, color_type, interlace_method;
    png_get_IHDR(png, pinfo, &w32, &h32, &bit_depth, &color_type, &interlace_method, NULL, NULL);
    const char *mode;
    depth = bit_depth;
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
        kind = bit_depth == 1 ? PK_BIT1 : bit_depth == 16 ? PK_I16 : PK_L;
        mode = bit_depth == 1 ? "1" : bit_depth == 16 ? "I" : "L";
        break;
    case PNG_COLOR_TYPE_RGB: kind = bit_depth == 16 ? PK_RGB16 : PK_RGB8; mode = "RGB"; break;
    case PNG_COLOR_TYPE_PALETTE: kind = PK_P; mode = "P"; break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
        kind = bit_depth == 16 ? PK_LA16 : PK_LA8;
        mode = bit_depth == 16 ? "RGBA" : "LA";
        break;
    case PNG_COLOR_TYPE_RGB_ALPHA: kind = bit_depth == 16 ? PK_RGBA16 : PK_RGBA8; mode = "RGBA"; break;
    default: rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: PNG colour type %d is invalid", name, color_type); goto done;
    }
    if ((rc = alloc_rgb(name, w32, h32, cap, out, e))) goto done;
    set_info(info, "PNG", mode, out->width, out->height);
    height = h32;

    if (kind == PK_P) {
        /* ImagingPaletteNew: a grey ramp, then the PLTE entries over its start. */
        for (int i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = (uint8_t)i;
        png_colorp plte = NULL;
        int n_plte = 0;
        if (png_get_PLTE(png, pinfo, &plte, &n_plte) != PNG_INFO_PLTE) {
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: palette PNG without a PLTE chunk", name);
            goto done;
        }
        for (int i = 0; i < n_plte && i < 256; i++) {
            pal[3 * i] = plte[i].red;
            pal[3 * i + 1] = plte[i].green;
            pal[3 * i + 2] = plte[i].blue;
        }
    }
    if (bit_depth < 8) png_set_packing(png); /* one byte per sample, values unscaled */
    interlaced = interlace_method != PNG_INTERLACE_NONE;
    if (interlaced) (void)png_set_interlace_handling(png);
    png_read_update_info(png, pinfo);
    rowbytes = png_get_rowbytes(png, pinfo);
    size_t channels = png_get_channels(png, pinfo), want;
    if (!vlr_mul_ok((size_t)out->width, channels * (bit_depth == 16 ? 2 : 1), &want) || want != rowbytes) {
        rc = vlr_fail(e, VLR_ERR_INTERNAL, "%s: unexpected PNG row size", name);
        goto done;
    }
    size_t raw_bytes = rowbytes;
    if (interlaced && !vlr_mul_ok(rowbytes, height, &raw_bytes)) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "%s: interlaced PNG too large", name);
        goto done;
    }
    raw = vlr_malloc(raw_bytes, e);
    if (!raw) { rc = VLR_ERR_NOMEM; goto done; }
    stage = 1;
    if (interlaced) {
        rows = vlr_malloc(sizeof(png_bytep) * height, e);
        if (!rows) { rc = VLR_ERR_NOMEM; goto done; }
        for (uint32_t y = 0; y < height; y++) rows[y] = raw + (size_t)y * rowbytes;
        png_read_image(png, rows);
    } else {
        for (uint32_t y = 0; y < height; y++) {
            png_read_row(png, raw, NULL);
            png_row_to_rgb(kind, depth, raw, out->rgb + (size_t)y * out->width * 3, (size_t)out->width, pal);
        }
    }
    stage = 2;
convert:
    if (interlaced)
        for (uint32_t y = 0; y < height; y++)
            png_row_to_rgb(kind, depth, raw + (size_t)y * rowbytes, out->rgb + (size_t)y * out->width * 3,
                           (size_t)out->width, pal);
done:
    png_destroy_read_struct(png ? &png : NULL, pinfo ? &pinfo : NULL, NULL);
    free(raw);
    free(rows);
    return rc;
}

/* ---- WebP (libwebp) ------------------------------------------------------------------------ */

static vlr_status decode_webp(const uint8_t *bytes, size_t n, const char *name, uint64_t cap, vlr_image *out,
                              vlr_image_file_info *info, vlr_err *e) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(bytes, n, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA) return vlr_fail(e, VLR_ERR_FORMAT, "%s: WebP data is truncated", name);
    if (st != VP8_STATUS_OK) return vlr_fail(e, VLR_ERR_FORMAT, "%s: invalid WebP header (libwebp status %d)", name, (int)st);
    if (f.has_animation)
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: animated WebP is not supported", name);
    if (f.width <= 0 || f.height <= 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: WebP has zero width or height", name);
    vlr_status rc = alloc_rgb(name, (uint64_t)f.width, (uint64_t)f.height, cap, out, e);
    if (rc) return rc;
    /* WebPImagePlugin (9.4, animation API): mode "RGBA" when WebPGetFeatures reports alpha, else
     * "RGB"; the pixels are WebPDecode's (MODE_RGBA, default options). */
    set_info(info, "WEBP", f.has_alpha ? "RGBA" : "RGB", out->width, out->height);
    size_t npx = (size_t)out->width * (size_t)out->height;
    if (!f.has_alpha) {
        if (!WebPDecodeRGBInto(bytes, n, out->rgb, npx * 3, out->width * 3))
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: corrupt or truncated WebP data", name);
        return rc;
    }
    size_t rgba_bytes;
    if (!vlr_mul_ok(npx, 4, &rgba_bytes) || (size_t)out->width * 4 > INT32_MAX)
        return vlr_fail(e, VLR_ERR_LIMIT, "%s: WebP too large", name);
    uint8_t *rgba = vlr_malloc(rgba_bytes, e);
    if (!rgba) return VLR_ERR_NOMEM;
    if (!WebPDecodeRGBAInto(bytes, n, rgba, rgba_bytes, out->width * 4)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: corrupt or truncated WebP data", name);
    } else {
        for (size_t i = 0; i < npx; i++)
            for (int c = 0; c < 3; c++) out->rgb[3 * i + c] = on_white(rgba[4 * i + c], rgba[4 * i + 3]);
    }
    free(rgba);
    return rc;
}

/* ---- BMP (by hand, BmpImagePlugin 9.4 semantics) ------------------------------------------- */

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }

/* Raw pixel layouts after BmpImagePlugin has chosen its rawmode. */
typedef enum bmp_layout {
    BL_INDEX,  /* 1/4/8-bit palette index ("P", "1", "L") */
    BL_BGR15,  /* ImagingUnpackBGR15 */
    BL_BGR16,  /* ImagingUnpackBGR16 (5-6-5) */
    BL_BGR,    /* 24-bit */
    BL_BGRX, BL_XBGR, /* 32-bit, no alpha ("RGB") */
    BL_BGRA, BL_ABGR, BL_RGBA /* 32-bit with alpha ("RGBA", composited) */
} bmp_layout;

/* The size in a BMP header (info header of 12, 40, 64, 108 or 124 bytes, as BmpImagePlugin reads
 * them): 1 found, 0 the bytes end first, -1 another header type. */
static int bmp_size(const uint8_t *d, size_t n, uint64_t *width, uint64_t *height, bool *top_down) {
    if (n < 18) return 0;
    uint32_t header_size = le32(d + 14);
    const uint8_t *h = d + 18;
    *top_down = false;
    if (header_size == 12) {
        if (n < 22) return 0;
        *width = le16(h);
        *height = le16(h + 2);
        return 1;
    }
    if (header_size != 40 && header_size != 64 && header_size != 108 && header_size != 124) return -1;
    if (n < 26) return 0;
    *top_down = h[7] == 0xff; /* negative height, as Pillow tests it */
    *width = le32(h);
    *height = *top_down ? (1ull << 32) - le32(h + 4) : le32(h + 4);
    return 1;
}

static vlr_status decode_bmp(const uint8_t *d, size_t n, const char *name, uint64_t cap, vlr_image *out,
                             vlr_image_file_info *info, vlr_err *e) {
    if (n < 18) return vlr_fail(e, VLR_ERR_FORMAT, "%s: BMP data is truncated (header)", name);
    uint64_t offset = le32(d + 10);
    uint32_t header_size = le32(d + 14);
    if (header_size < 12 || n - 14 < header_size)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: BMP data is truncated (header)", name);
    const uint8_t *h = d + 18; /* header_data: the info header after its size field */
    uint64_t width, height;
    uint32_t bits, compression, colors = 0, masks[4] = {0};
    size_t pos = 14 + (size_t)header_size; /* where the palette (or the 3 masks) starts */
    int pal_entry = 4;
    bool top_down = false;
    if (bmp_size(d, n, &width, &height, &top_down) != 1)
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: unsupported BMP header type (%u)", name, header_size);
    if (header_size == 12) {
        bits = le16(h + 6);
        compression = 0;
        pal_entry = 3;
    } else {
        bits = le16(h + 10);
        compression = le32(h + 12);
        colors = le32(h + 28);
        if (compression == 3) {
            if (header_size - 4 >= 52) {
                for (int i = 0; i < 4; i++) masks[i] = le32(h + 36 + 4 * i);
            } else {
                if (n - pos < 12) return vlr_fail(e, VLR_ERR_FORMAT, "%s: BMP data is truncated (masks)", name);
                for (int i = 0; i < 3; i++) masks[i] = le32(d + pos + 4 * i);
                pos += 12;
            }
        }
    }
    if (bits > 32) return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: unsupported BMP pixel depth (%u)", name, bits);
    uint64_t n_colors = colors ? colors : 1ull << bits;
    if (offset == 14 + (uint64_t)header_size && bits <= 8) offset += 4 * n_colors;

    bmp_layout layout;
    const char *mode = "RGB";
    switch (bits) {
    case 1: case 4: case 8: layout = BL_INDEX; mode = "P"; break;
    case 16: layout = BL_BGR15; break;
    case 24: layout = BL_BGR; break;
    case 32: layout = BL_BGRX; break;
    default: return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: unsupported BMP pixel depth (%u)", name, bits);
    }
    if (compression == 3) {
        uint32_t r = masks[0], g = masks[1], b = masks[2], a = masks[3];
        if (bits == 32 && r == 0xff0000 && g == 0xff00 && b == 0xff && a == 0) layout = BL_BGRX;
        else if (bits == 32 && r == 0xff000000u && g == 0xff0000 && b == 0xff00 && a == 0) layout = BL_XBGR;
        else if (bits == 32 && r == 0xff000000u && g == 0xff0000 && b == 0xff00 && a == 0xff) layout = BL_ABGR;
        else if (bits == 32 && r == 0xff && g == 0xff00 && b == 0xff0000 && a == 0xff000000u) layout = BL_RGBA;
        else if (bits == 32 && ((r == 0xff0000 && g == 0xff00 && b == 0xff && a == 0xff000000u) || (r | g | b | a) == 0))
            layout = BL_BGRA;
        else if (bits == 24 && r == 0xff0000 && g == 0xff00 && b == 0xff) layout = BL_BGR;
        else if (bits == 16 && r == 0xf800 && g == 0x7e0 && b == 0x1f) layout = BL_BGR16;
        else if (bits == 16 && r == 0x7c00 && g == 0x3e0 && b == 0x1f) layout = BL_BGR15;
        else return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: unsupported BMP bitfields layout", name);
        if (layout == BL_ABGR || layout == BL_RGBA || layout == BL_BGRA) mode = "RGBA";
    } else if (compression == 1 || compression == 2) {
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: RLE-compressed BMP is not supported", name);
    } else if (compression != 0) {
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: unsupported BMP compression (%u)", name, compression);
    }

    /* Palette: Pillow's grey ramp under the file's entries; a palette that is exactly the grey
     * ramp (or black/white for 2 colours) makes the mode "L" (or "1") with identical pixels. */
    uint8_t pal[256 * 3];
    for (int i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = (uint8_t)i;
    if (layout == BL_INDEX) {
        if (n_colors == 0 || n_colors > 256)
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: unsupported BMP palette size (%llu)", name,
                            (unsigned long long)n_colors);
        if ((n - pos) / (size_t)pal_entry < n_colors)
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: BMP data is truncated (palette)", name);
        bool grey = true;
        for (size_t i = 0; i < n_colors; i++) {
            const uint8_t *p = d + pos + i * (size_t)pal_entry; /* B, G, R */
            unsigned want = n_colors == 2 ? (i ? 255u : 0u) : (unsigned)i;
            if (p[0] != want || p[1] != want || p[2] != want) grey = false;
            pal[3 * i] = p[2];
            pal[3 * i + 1] = p[1];
            pal[3 * i + 2] = p[0];
        }
        if (grey) {
            /* Pillow then unpacks with rawmode "1"/"L" whatever the depth: equivalent only for
             * 1-bit black/white and 8-bit ramps. */
            if (n_colors == 2 && bits == 1) mode = "1";
            else if (n_colors != 2 && bits == 8) mode = "L";
            else return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: %u-bit greyscale BMP is not supported", name, bits);
        }
    }
    if (offset == 0) offset = pos + (layout == BL_INDEX ? (size_t)n_colors * (size_t)pal_entry : 0);

    vlr_status rc = alloc_rgb(name, width, height, cap, out, e);
    if (rc) return rc;
    set_info(info, "BMP", mode, out->width, out->height);
    size_t w = (size_t)out->width, hh = (size_t)out->height;
    uint64_t stride = ((w * bits + 31) >> 3) & ~(uint64_t)3; /* w < 2^31, bits <= 32: no overflow */
    if (offset > n || (n - offset) / stride < hh) {
        vlr_image_free(out);
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: BMP data is truncated (pixels)", name);
    }
    for (size_t y = 0; y < hh; y++) {
        const uint8_t *s = d + offset + (top_down ? y : hh - 1 - y) * stride;
        uint8_t *o = out->rgb + y * w * 3;
        for (size_t x = 0; x < w; x++, o += 3) {
            unsigned v;
            switch (layout) {
            case BL_INDEX:
                v = bits == 8 ? s[x] : bits == 4 ? (s[x >> 1] >> (x & 1 ? 0 : 4)) & 15 : (s[x >> 3] >> (7 - (x & 7))) & 1;
                memcpy(o, pal + 3 * v, 3);
                break;
            case BL_BGR15:
                v = le16(s + 2 * x);
                o[0] = (uint8_t)(((v >> 10) & 31) * 255 / 31);
                o[1] = (uint8_t)(((v >> 5) & 31) * 255 / 31);
                o[2] = (uint8_t)((v & 31) * 255 / 31);
                break;
            case BL_BGR16:
                v = le16(s + 2 * x);
                o[0] = (uint8_t)(((v >> 11) & 31) * 255 / 31);
                o[1] = (uint8_t)(((v >> 5) & 63) * 255 / 63);
                o[2] = (uint8_t)((v & 31) * 255 / 31);
                break;
            case BL_BGR: o[0] = s[3 * x + 2]; o[1] = s[3 * x + 1]; o[2] = s[3 * x]; break;
            case BL_BGRX: o[0] = s[4 * x + 2]; o[1] = s[4 * x + 1]; o[2] = s[4 * x]; break;
            case BL_XBGR: o[0] = s[4 * x + 3]; o[1] = s[4 * x + 2]; o[2] = s[4 * x + 1]; break;
            case BL_BGRA:
                for (int c = 0; c < 3; c++) o[c] = on_white(s[4 * x + 2 - c], s[4 * x + 3]);
                break;
            case BL_ABGR:
                for (int c = 0; c < 3; c++) o[c] = on_white(s[4 * x + 3 - c], s[4 * x]);
                break;
            case BL_RGBA:
                for (int c = 0; c < 3; c++) o[c] = on_white(s[4 * x + c], s[4 * x + 3]);
                break;
            }
        }
    }
    return VLR_OK;
}

/* ---- header probe -------------------------------------------------------------------------- */

/* The error for bytes that are none of the four formats. */
static vlr_status unknown_format(const uint8_t *bytes, size_t n, const char *name, vlr_err *e) {
    if (n >= 6 && (memcmp(bytes, "GIF87a", 6) == 0 || memcmp(bytes, "GIF89a", 6) == 0))
        return vlr_fail(e, VLR_ERR_UNSUPPORTED, "%s: GIF images are not supported (use PNG, JPEG or WebP)", name);
    return vlr_fail(e, VLR_ERR_FORMAT, "%s: not a recognised image (JPEG, PNG, WebP or BMP)", name);
}

/* The first frame header (SOFn) of a JPEG, walking the marker segments the way libjpeg's
 * read_markers does: bytes before a 0xFF are skipped (libjpeg warns and goes on), fill 0xFF bytes
 * too, RSTn and TEM carry no length, every other segment is skipped by its length. 1 found, 0 the
 * bytes end first, -1 no frame header can follow. */
static int jpeg_size(const uint8_t *d, size_t n, uint64_t *width, uint64_t *height, int *comps) {
    size_t pos = 2; /* after SOI */
    for (;;) {
        while (pos < n && d[pos] != 0xff) pos++;
        while (pos < n && d[pos] == 0xff) pos++;
        if (pos >= n) return 0;
        unsigned m = d[pos++];
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7)) continue; /* stuffed byte, TEM, RSTn */
        if (m == 0xd8 || m == 0xd9 || m == 0xda) return -1; /* second SOI, EOI or SOS before a frame */
        if (n - pos < 2) return 0;
        size_t len = (size_t)d[pos] << 8 | d[pos + 1];
        if (len < 2) return -1;
        bool sof = m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
        if (sof) {
            if (len < 8) return -1;
            if (n - pos < 8) return 0;
            *height = (uint64_t)d[pos + 3] << 8 | d[pos + 4];
            *width = (uint64_t)d[pos + 5] << 8 | d[pos + 6];
            *comps = d[pos + 7];
            return 1;
        }
        if (n - pos < len) return 0;
        pos += len;
    }
}

vlr_status vlr_image_probe(const uint8_t *bytes, size_t n, const char *name, vlr_image_file_info *info,
                           bool *need_more, vlr_err *e) {
    memset(info, 0, sizeof *info);
    *need_more = false;
    if (!name) name = "image";
    uint64_t w = 0, h = 0;
    int found;
    const char *format;
    if (n >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff) {
        int comps = 0;
        format = "JPEG";
        found = jpeg_size(bytes, n, &w, &h, &comps);
        if (found == 1) snprintf(info->mode, sizeof info->mode, "%s", comps == 1 ? "L" : comps == 4 ? "CMYK" : "RGB");
    } else if (n >= 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0) {
        format = "PNG"; /* IHDR must come first: length 13, type, width, height */
        found = n < 24 ? 0 : be32(bytes + 8) == 13 && memcmp(bytes + 12, "IHDR", 4) == 0 ? 1 : -1;
        if (found == 1) {
            w = be32(bytes + 16);
            h = be32(bytes + 20);
        }
    } else if (n >= 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0) {
        WebPBitstreamFeatures f;
        VP8StatusCode st = WebPGetFeatures(bytes, n, &f);
        format = "WEBP";
        found = st == VP8_STATUS_NOT_ENOUGH_DATA ? 0 : st == VP8_STATUS_OK && f.width > 0 && f.height > 0 ? 1 : -1;
        if (found == 1) {
            w = (uint64_t)f.width;
            h = (uint64_t)f.height;
        }
    } else if (n >= 2 && bytes[0] == 'B' && bytes[1] == 'M') {
        bool top_down;
        format = "BMP";
        found = bmp_size(bytes, n, &w, &h, &top_down);
    } else if (n < 12) {
        *need_more = true; /* too short to tell the format */
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: %zu bytes are too few to tell the image format", name, n);
    } else {
        return unknown_format(bytes, n, name, e);
    }
    if (found == 0) {
        *need_more = true;
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: %s data is truncated (header)", name, format);
    }
    if (found < 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: corrupt %s header", name, format);
    snprintf(info->format, sizeof info->format, "%s", format);
    if (w > INT32_MAX || h > INT32_MAX)
        return vlr_fail(e, VLR_ERR_LIMIT, "%s: image is %llux%llu pixels, too large", name, (unsigned long long)w,
                        (unsigned long long)h);
    info->width = (int)w;
    info->height = (int)h;
    return VLR_OK;
}

/* ---- entry --------------------------------------------------------------------------------- */

vlr_status vlr_image_decode(const uint8_t *bytes, size_t n, const char *name, const vlr_image_limits *lim,
                            vlr_image *out, vlr_image_file_info *info, vlr_err *e) {
    vlr_image_file_info local;
    if (!info) info = &local;
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    if (!name) name = "image";
    if (!bytes || n == 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: empty image data", name);
    uint64_t cap = pixel_cap(lim);
    vlr_status rc;
    if (n >= 3 && bytes[0] == 0xff && bytes[1] == 0xd8 && bytes[2] == 0xff)
        rc = decode_jpeg(bytes, n, name, cap, out, info, e);
    else if (n >= 8 && memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) == 0)
        rc = decode_png(bytes, n, name, cap, out, info, e);
    else if (n >= 12 && memcmp(bytes, "RIFF", 4) == 0 && memcmp(bytes + 8, "WEBP", 4) == 0)
        rc = decode_webp(bytes, n, name, cap, out, info, e);
    else if (n >= 2 && bytes[0] == 'B' && bytes[1] == 'M')
        rc = decode_bmp(bytes, n, name, cap, out, info, e);
    else
        rc = unknown_format(bytes, n, name, e);
    if (rc) {
        vlr_image_free(out);
        memset(info, 0, sizeof *info);
    }
    return rc;
}
