/* safetensors.h: one safetensors file, memory-mapped read-only and validated once at open.
 *
 * Format (huggingface/safetensors): an 8-byte little-endian header length N, N bytes of JSON
 * ({"__metadata__": {...}, "<name>": {"dtype", "shape", "data_offsets": [begin, end]}, ...}), then
 * the data section; offsets are relative to its start. At open we check everything a reader could
 * trip over: N within the file and at most 100,000,000 bytes (the limit of the reference Rust crate),
 * a header that begins with '{' and is one well-formed JSON object, a known dtype (BF16, F16, F32),
 * a shape of at most VLR_ST_MAX_DIMS non-negative dimensions, 0 <= begin <= end <= data size,
 * end - begin == numel * dtype size (overflow-checked), no name twice, and, as the reference Rust
 * crate requires, tensors that tile the data section exactly: in offset order each begins where the
 * previous one ended (the first at 0), and the last ends at the end of the file. So no overlap, no
 * gap and no trailing bytes: a header length off by a few bytes is refused instead of every tensor
 * being read shifted. After that every tensor is a plain view. All failures are VLR_ERR_FORMAT.
 *
 * Tensors are used in place from the mapping. A tensor whose address is not a multiple of its
 * element size (possible when a writer does not pad the header to 8 bytes) is copied once into an
 * aligned private buffer, so callers may always read it through a uint16_t / float pointer.
 *
 * Not handled here: shard indexes and tensor-name layouts (weights.c), other dtypes (rejected with
 * "unknown dtype"), writing files. */
#ifndef VLR_SAFETENSORS_H
#define VLR_SAFETENSORS_H

#include "common.h"
#include "weights.h" /* vlr_dtype, vlr_st_file */

#define VLR_ST_MAX_DIMS 8
#define VLR_ST_MAX_HEADER 100000000u /* bytes; safetensors' MAX_HEADER_SIZE */

typedef struct vlr_st_tensor {
    const char *name;   /* NUL-terminated, owned by the file */
    vlr_dtype dtype;
    int ndim;
    int64_t shape[VLR_ST_MAX_DIMS];
    uint64_t numel;     /* product of shape (1 for a scalar) */
    size_t nbytes;      /* end - begin == numel * dtype size */
    size_t offset;      /* begin, relative to the data section */
    const void *data;   /* nbytes bytes, aligned to the element size; valid until vlr_st_close */
} vlr_st_tensor;

struct vlr_st_file {
    char *path;                /* as given to vlr_st_open (for messages) */
    void *map;                 /* the mmap'd file (NULL for vlr_st_open_memory) */
    size_t map_size;
    const uint8_t *bytes;      /* whole file */
    size_t size;
    size_t header_len;         /* N */
    const uint8_t *data;       /* bytes + 8 + N */
    size_t data_size;          /* size - 8 - N */
    vlr_st_tensor *tensors;    /* [n_tensors], sorted by name (strcmp) for vlr_st_find */
    size_t n_tensors;
    char *names;               /* one block holding every tensor name */
    void **copies;             /* aligned private copies of misaligned tensors */
    size_t n_copies;
};

/* Maps path read-only (MAP_PRIVATE) and validates it. Every message starts with the path. */
vlr_status vlr_st_open(const char *path, vlr_st_file **out, vlr_err *e);
/* Validates size bytes already in memory (fuzzing, tests). The bytes are borrowed, not copied: they
 * must outlive the returned file. label names the input in messages. */
vlr_status vlr_st_open_memory(const void *bytes, size_t size, const char *label, vlr_st_file **out,
                              vlr_err *e);
void vlr_st_close(vlr_st_file *f); /* NULL is a no-op */

/* Binary search by exact name; NULL when absent. */
const vlr_st_tensor *vlr_st_find(const vlr_st_file *f, const char *name);

/* Writes "[a, b, c]" into buf (always NUL-terminated; "[]" for a scalar). Returns buf. */
char *vlr_st_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

#endif
