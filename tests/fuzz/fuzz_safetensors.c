/* fuzz_safetensors.c: libFuzzer target for the safetensors header validation (src/safetensors.c)
 * through vlr_st_open_memory, the same parse a mapped checkpoint goes through.
 *
 * Two ways to read an input, chosen by its first byte, so that mutations reach the checks behind
 * the 8-byte length prefix: 'J' = the rest is "header JSON" + data, and the harness writes the
 * prefix (the header ends after the last '}' of the first 4 KiB); anything else = the bytes are the
 * file as it is. A rejected file must leave *out NULL and a message that starts with the label. An
 * accepted one is checked against everything safetensors.h promises, by code written here: each
 * tensor's numel and byte count agree with its shape and dtype, its bytes lie inside the data
 * section (or in a private aligned copy holding the same bytes), it is aligned to its element size,
 * no two tensors share a byte (an O(n^2) check, independent of the library's sort), names are sorted
 * and unique and vlr_st_find finds each. Every tensor byte is read, so ASan sees any bad view. */
#include <stdio.h>
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_file(const vlr_st_file *f, const uint8_t *file, size_t file_size) {
    if (f->size != file_size || f->bytes != file || file_size < 8) abort();
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | file[i];
    if (n != f->header_len || n > file_size - 8 || f->data != file + 8 + n || f->data_size != file_size - 8 - n)
        abort();
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const vlr_st_tensor *t = &f->tensors[i];
        size_t elem = vlr_dtype_size(t->dtype);
        if (elem == 0 || t->ndim < 0 || t->ndim > VLR_ST_MAX_DIMS) abort();
        uint64_t numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) abort();
        }
        uint64_t nbytes;
        if (numel != t->numel || __builtin_mul_overflow(numel, (uint64_t)elem, &nbytes) || nbytes != t->nbytes)
            abort();
        if (t->offset > f->data_size || t->nbytes > f->data_size - t->offset) abort();
        if ((uintptr_t)t->data % elem) abort();
        const uint8_t *in_file = f->data + t->offset;
        if (t->data != in_file) {
            bool is_copy = false;
            for (size_t c = 0; c < f->n_copies; c++) is_copy |= f->copies[c] == t->data;
            if (!is_copy || memcmp(t->data, in_file, t->nbytes) != 0) abort();
        }
        for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const uint8_t *)t->data)[b];
        if (!t->name || vlr_st_find(f, t->name) != t) abort();
        if (i > 0 && strcmp(f->tensors[i - 1].name, t->name) >= 0) abort();
        for (size_t j = 0; j < i; j++) {
            const vlr_st_tensor *u = &f->tensors[j];
            if (t->nbytes && u->nbytes && t->offset < u->offset + u->nbytes && u->offset < t->offset + t->nbytes)
                abort();
        }
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *file = NULL;
    size_t file_size = size;
    if (size >= 1 && data[0] == 'J') {
        /* Prefix mode: header = up to and including the last '}' in the first 4 KiB of the rest. */
        const uint8_t *rest = data + 1;
        size_t n_rest = size - 1, hlen = 0;
        for (size_t i = 0; i < n_rest && i < 4096; i++)
            if (rest[i] == '}') hlen = i + 1;
        file_size = 8 + n_rest;
        file = malloc(file_size ? file_size : 1);
        if (!file) return 0;
        for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
        memcpy(file + 8, rest, n_rest);
    } else {
        /* An exact-size heap copy, so ASan catches a read one byte past the end of the "file". */
        file = malloc(size ? size : 1);
        if (!file) return 0;
        memcpy(file, data, size);
    }

    vlr_st_file *f = (vlr_st_file *)1;
    vlr_err e = {0};
    vlr_status rc = vlr_st_open_memory(file, file_size, "fuzz.safetensors", &f, &e);
    if (rc == VLR_OK) {
        if (!f) abort();
        check_file(f, file, file_size);
        vlr_st_close(f);
    } else if (f != NULL || e.code != rc ||
               (rc != VLR_ERR_NOMEM && strncmp(e.msg, "fuzz.safetensors: ", 18) != 0)) {
        abort();
    }
    free(file);
    return 0;
}
