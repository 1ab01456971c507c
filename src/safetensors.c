/* safetensors.c: maps a safetensors file and validates its header (see safetensors.h for the
 * format and the list of checks).
 *
 * The header JSON is parsed with json.h, every tensor entry is checked and copied into a flat
 * array sorted by name (vlr_st_find is a binary search), and the JSON document is freed before
 * returning. Overlaps, gaps and bytes after the last tensor are found by sorting the entries by
 * offset (check_coverage). The mapping stays open until
 * vlr_st_close; tensor data is never copied except to fix a misaligned tensor.
 *
 * Not here: which tensors a model needs and their shapes (weights.c). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"

char *vlr_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
    if (!buf || cap == 0) return buf;
    size_t len = 0;
    buf[0] = '\0';
    int n = snprintf(buf, cap, "[");
    len = n > 0 ? (size_t)n : 0;
    for (int i = 0; i < ndim && len < cap; i++) {
        n = snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
        if (n < 0) break;
        len += (size_t)n;
    }
    if (len < cap) snprintf(buf + len, cap - len, "]");
    return buf;
}

/* safetensors dtype strings (the Rust crate's Dtype names); anything else is refused. */
static bool dtype_from_string(const char *s, size_t len, vlr_dtype *out) {
    if (len == 4 && memcmp(s, "BF16", 4) == 0) { *out = VLR_DT_BF16; return true; }
    if (len == 3 && memcmp(s, "F16", 3) == 0) { *out = VLR_DT_F16; return true; }
    if (len == 3 && memcmp(s, "F32", 3) == 0) { *out = VLR_DT_F32; return true; }
    return false;
}

static int cmp_by_name(const void *a, const void *b) {
    return strcmp(((const vlr_st_tensor *)a)->name, ((const vlr_st_tensor *)b)->name);
}

static int cmp_by_offset(const void *a, const void *b) {
    const vlr_st_tensor *x = *(const vlr_st_tensor *const *)a, *y = *(const vlr_st_tensor *const *)b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Reads one non-negative integer of a JSON array for a message-friendly check. */
static bool json_u64(const vlr_json *v, uint64_t *out) {
    int64_t i;
    if (!vlr_json_int(v, &i) || i < 0) return false;
    *out = (uint64_t)i;
    return true;
}

/* Validates one header entry and fills t (its name is set by the caller). */
static vlr_status parse_entry(const vlr_st_file *f, const vlr_json *v, vlr_st_tensor *t, vlr_err *e) {
    const char *p = f->path, *name = t->name;
    if (!vlr_json_is(v, VLR_JSON_OBJECT))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: header entry is %s, not an object", p,
                        name, vlr_json_type_name(v));

    const vlr_json *dt = vlr_json_get(v, "dtype");
    if (!dt) return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: no dtype", p, name);
    if (!vlr_json_is(dt, VLR_JSON_STRING))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: dtype is %s, not a string", p, name,
                        vlr_json_type_name(dt));
    if (!dtype_from_string(dt->str, dt->len, &t->dtype))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: unknown dtype %.32s (supported: BF16, F16, F32)",
                        p, name, dt->str);

    const vlr_json *shape = vlr_json_get(v, "shape");
    if (!vlr_json_is(shape, VLR_JSON_ARRAY))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: shape is %s, not an array", p, name,
                        vlr_json_type_name(shape));
    if (shape->len > VLR_ST_MAX_DIMS)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: %zu dimensions, more than the %d supported",
                        p, name, shape->len, VLR_ST_MAX_DIMS);
    t->ndim = (int)shape->len;
    size_t numel = 1;
    for (size_t i = 0; i < shape->len; i++) {
        uint64_t d;
        if (!json_u64(&shape->items[i], &d) || d > (uint64_t)INT64_MAX)
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: shape[%zu] is not a non-negative integer",
                            p, name, i);
        t->shape[i] = (int64_t)d;
        if (d > SIZE_MAX || !vlr_mul_ok(numel, (size_t)d, &numel))
            return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: shape overflows the address space", p, name);
    }
    t->numel = numel;
    size_t need;
    if (!vlr_mul_ok(numel, vlr_dtype_size(t->dtype), &need))
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: shape overflows the address space", p, name);

    const vlr_json *off = vlr_json_get(v, "data_offsets");
    uint64_t begin, end;
    if (!vlr_json_is(off, VLR_JSON_ARRAY) || off->len != 2 || !json_u64(&off->items[0], &begin) ||
        !json_u64(&off->items[1], &end))
        return vlr_fail(e, VLR_ERR_FORMAT,
                        "%s: tensor %s: data_offsets must be [begin, end], two non-negative integers", p,
                        name);
    if (end < begin)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu) end before begin",
                        p, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > f->data_size)
        return vlr_fail(e, VLR_ERR_FORMAT,
                        "%s: tensor %s: data_offsets [%llu, %llu) end past the data section (%zu bytes)",
                        p, name, (unsigned long long)begin, (unsigned long long)end, f->data_size);
    if (end - begin != need) {
        char s[160];
        return vlr_fail(e, VLR_ERR_FORMAT,
                        "%s: tensor %s: data_offsets [%llu, %llu) hold %llu bytes but shape %s of %s "
                        "needs %zu",
                        p, name, (unsigned long long)begin, (unsigned long long)end,
                        (unsigned long long)(end - begin), vlr_st_shape_str(t->shape, t->ndim, s, sizeof s),
                        vlr_dtype_name(t->dtype), need);
    }
    t->offset = (size_t)begin;
    t->nbytes = need;
    t->data = f->data + t->offset;
    return VLR_OK;
}

/* The tensors must tile the data section: sorted by offset, each begins where the previous one
 * ended (the first at 0, an empty tensor too), and the last ends at the end of the data section.
 * This is what huggingface/safetensors' reference reader requires (its Metadata::validate walks the
 * tensors in offset order and refuses any begin other than the running end; read_metadata then
 * refuses a file whose data section is longer or shorter than that end). Holding to it is what
 * catches a header length that is off by a few bytes: every offset would still be in bounds, but
 * the data section would start in the wrong place and every tensor would be read shifted. */
static vlr_status check_coverage(const vlr_st_file *f, vlr_err *e) {
    vlr_status rc = VLR_OK;
    const vlr_st_tensor **order = NULL;
    if (f->n_tensors > 0) {
        order = vlr_calloc(f->n_tensors, sizeof *order, e);
        if (!order) return VLR_ERR_NOMEM;
    }
    for (size_t i = 0; i < f->n_tensors; i++) order[i] = &f->tensors[i];
    if (f->n_tensors > 1) qsort(order, f->n_tensors, sizeof *order, cmp_by_offset);
    size_t at = 0;                   /* the running end */
    const vlr_st_tensor *prev = NULL; /* the tensor that ends at `at` */
    for (size_t i = 0; i < f->n_tensors; i++) {
        const vlr_st_tensor *t = order[i];
        if (t->offset < at) {
            rc = vlr_fail(e, VLR_ERR_FORMAT,
                          "%s: tensors %s [%zu, %zu) and %s [%zu, %zu) overlap in the data section",
                          f->path, prev->name, prev->offset, prev->offset + prev->nbytes, t->name,
                          t->offset, t->offset + t->nbytes);
            goto done;
        }
        if (t->offset > at) {
            if (prev)
                rc = vlr_fail(e, VLR_ERR_FORMAT,
                              "%s: a gap of %zu bytes in the data section between tensors %s (ends at "
                              "%zu) and %s (begins at %zu); the safetensors format requires the tensors "
                              "to follow each other",
                              f->path, t->offset - at, prev->name, at, t->name, t->offset);
            else
                rc = vlr_fail(e, VLR_ERR_FORMAT,
                              "%s: the data section starts with %zu bytes no tensor holds (the first "
                              "tensor, %s, begins at %zu, not 0); is the header length right?",
                              f->path, t->offset, t->name, t->offset);
            goto done;
        }
        at = t->offset + t->nbytes;
        prev = t;
    }
    if (at != f->data_size)
        rc = vlr_fail(e, VLR_ERR_FORMAT,
                      "%s: the tensors cover %zu bytes but the data section after the %zu-byte header "
                      "has %zu (%zu bytes more than the tensors); the safetensors format requires them "
                      "to match exactly: is the header length right?",
                      f->path, at, f->header_len, f->data_size, f->data_size - at);
done:
    free(order);
    return rc;
}

/* Copies each tensor whose address is not a multiple of its element size into an aligned buffer
 * (malloc returns memory aligned for any scalar type). */
static vlr_status fix_alignment(vlr_st_file *f, vlr_err *e) {
    size_t n_bad = 0;
    for (size_t i = 0; i < f->n_tensors; i++)
        if ((uintptr_t)f->tensors[i].data % vlr_dtype_size(f->tensors[i].dtype)) n_bad++;
    if (!n_bad) return VLR_OK;
    f->copies = vlr_calloc(n_bad, sizeof *f->copies, e);
    if (!f->copies) return VLR_ERR_NOMEM;
    for (size_t i = 0; i < f->n_tensors; i++) {
        vlr_st_tensor *t = &f->tensors[i];
        if ((uintptr_t)t->data % vlr_dtype_size(t->dtype) == 0) continue;
        void *copy = vlr_malloc(t->nbytes, e);
        if (!copy) return VLR_ERR_NOMEM;
        memcpy(copy, t->data, t->nbytes);
        f->copies[f->n_copies++] = copy;
        t->data = copy;
    }
    return VLR_OK;
}

/* Validates f->bytes / f->size and fills the tensor table. */
static vlr_status parse_file(vlr_st_file *f, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_json_doc *doc = NULL;
    const char *p = f->path;

    if (f->size == 0) return vlr_fail(e, VLR_ERR_FORMAT, "%s: empty file (0 bytes)", p);
    if (f->size < 8)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: %zu bytes, too short for the 8-byte header length", p,
                        f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | f->bytes[i]; /* little-endian u64 */
    if (n > VLR_ST_MAX_HEADER)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: header length %llu is over the %u-byte limit", p,
                        (unsigned long long)n, VLR_ST_MAX_HEADER);
    if (n > f->size - 8)
        return vlr_fail(e, VLR_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%zu bytes)",
                        p, (unsigned long long)n, f->size);
    f->header_len = (size_t)n;
    f->data = f->bytes + 8 + f->header_len;
    f->data_size = f->size - 8 - f->header_len;

    /* The format requires the header to begin with '{' (the JSON reader would also skip leading
     * whitespace: a header length that is too large by a few bytes of padding must not pass) */
    if (f->header_len == 0 || f->bytes[8] != '{')
        return vlr_fail(e, VLR_ERR_FORMAT,
                        "%s: header does not begin with '{' (0x7b) as the safetensors format requires%s", p,
                        f->header_len == 0 ? " (header length 0)" : "");
    doc = vlr_json_parse((const char *)f->bytes + 8, f->header_len, e);
    if (!doc) {
        vlr_err_prefix(e, "%s: header is not valid JSON: ", p);
        rc = e ? e->code : VLR_ERR_FORMAT;
        goto done;
    }
    const vlr_json *root = vlr_json_root(doc);
    if (!vlr_json_is(root, VLR_JSON_OBJECT)) {
        rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: header is a JSON %s, not an object", p,
                      vlr_json_type_name(root));
        goto done;
    }

    size_t names_bytes = 0, n_tensors = 0;
    for (size_t i = 0; i < root->len; i++) {
        const vlr_json *m = &root->items[i];
        if (strcmp(m->key, "__metadata__") == 0) continue; /* free-form strings; not needed */
        if (strlen(m->key) != m->key_len) {
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: a tensor name contains a NUL byte", p);
            goto done;
        }
        names_bytes += (size_t)m->key_len + 1; /* bounded by the header length */
        n_tensors++;
    }
    if (n_tensors) {
        f->tensors = vlr_calloc(n_tensors, sizeof *f->tensors, e);
        f->names = vlr_malloc(names_bytes, e);
        if (!f->tensors || !f->names) {
            rc = VLR_ERR_NOMEM;
            goto done;
        }
    }
    char *name_at = f->names;
    for (size_t i = 0; i < root->len; i++) {
        const vlr_json *m = &root->items[i];
        if (strcmp(m->key, "__metadata__") == 0) continue;
        vlr_st_tensor *t = &f->tensors[f->n_tensors];
        memcpy(name_at, m->key, (size_t)m->key_len + 1);
        t->name = name_at;
        name_at += m->key_len + 1;
        rc = parse_entry(f, m, t, e);
        if (rc) goto done;
        f->n_tensors++;
    }

    if (f->n_tensors > 1) qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_by_name);
    for (size_t i = 1; i < f->n_tensors; i++) {
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0) {
            rc = vlr_fail(e, VLR_ERR_FORMAT, "%s: tensor %s appears twice in the header", p,
                          f->tensors[i].name);
            goto done;
        }
    }
    rc = check_coverage(f, e);
    if (rc) goto done;
    rc = fix_alignment(f, e);
done:
    vlr_json_free(doc);
    return rc;
}

static vlr_st_file *new_file(const char *label, vlr_err *e) {
    vlr_st_file *f = vlr_calloc(1, sizeof *f, e);
    if (!f) return NULL;
    f->path = strdup(label ? label : "(memory)");
    if (!f->path) {
        free(f);
        vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
        return NULL;
    }
    return f;
}

vlr_status vlr_st_open_memory(const void *bytes, size_t size, const char *label, vlr_st_file **out,
                              vlr_err *e) {
    *out = NULL;
    vlr_st_file *f = new_file(label, e);
    if (!f) return VLR_ERR_NOMEM;
    f->bytes = bytes;
    f->size = size;
    vlr_status rc = parse_file(f, e);
    if (rc) {
        vlr_st_close(f);
        return rc;
    }
    *out = f;
    return VLR_OK;
}

vlr_status vlr_st_open(const char *path, vlr_st_file **out, vlr_err *e) {
    vlr_status rc = VLR_OK;
    vlr_st_file *f = NULL;
    int fd = -1;
    *out = NULL;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = vlr_fail(e, VLR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto done;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = vlr_fail(e, VLR_ERR_IO, "%s: not a regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = vlr_fail(e, VLR_ERR_LIMIT, "%s: file too large to map", path);
        goto done;
    }
    f = new_file(path, e);
    if (!f) {
        rc = VLR_ERR_NOMEM;
        goto done;
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) { /* mmap of length 0 fails; parse_file reports the empty file */
        void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            rc = vlr_fail(e, VLR_ERR_IO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(errno));
            goto done;
        }
        f->map = map;
        f->map_size = f->size;
        f->bytes = map;
    }
    rc = parse_file(f, e);
done:
    if (fd >= 0) close(fd); /* the mapping keeps its own reference */
    if (rc) {
        vlr_st_close(f);
        f = NULL;
    }
    *out = f;
    return rc;
}

void vlr_st_close(vlr_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_size);
    for (size_t i = 0; i < f->n_copies; i++) free(f->copies[i]);
    free(f->copies);
    free(f->tensors);
    free(f->names);
    free(f->path);
    free(f);
}

static int cmp_key_name(const void *key, const void *elem) {
    return strcmp((const char *)key, ((const vlr_st_tensor *)elem)->name);
}

const vlr_st_tensor *vlr_st_find(const vlr_st_file *f, const char *name) {
    if (!f || !name || f->n_tensors == 0) return NULL;
    return bsearch(name, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_key_name);
}
