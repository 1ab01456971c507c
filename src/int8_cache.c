/* int8_cache.c: int8 precision's weights kept in a file beside the checkpoint, DIR/vlreward-int8.bin,
 * so that a load after the first maps them instead of quantizing again.
 *
 * Why: quantizing the 7B model reads all 15.5 GB of bf16 weights and writes 7.2 GB of fresh memory;
 * measured on the project's 2-vCPU VM (bench/README.md) that is tens of seconds, most of it the
 * kernel zeroing and faulting pages. The file is mapped read-only and used in place, like the
 * safetensors it replaces, so a cached load costs what a bf16 load does.
 *
 * Layout (little-endian, every offset from the file's start):
 *   [0, 8)    magic "VLRI8\0\0\1" (the last byte is the format version)
 *   [8, 12)   n: number of matrices        [12, 16) key_len
 *   [16, ...) the key (key_len bytes), zero padded to 8
 *   then n entries of 32 bytes: u32 rows, u32 cols, u64 offset, u64 bytes, u64 reserved (0)
 *   then each matrix's block (vlr_qweight_bytes: packed, scales, offset sums) at a 4096-aligned offset.
 * The key names the checkpoint's content and what was made of it: the format and the layer policy,
 * then per weight file either the sha256 of its content where the path resolves into a Hugging Face
 * cache blob (named by it), or its size, modification time (ns), inode and a digest of its safetensors
 * header. A file whose key, count, shapes or sizes do not match is not used (and is rewritten when
 * writing is asked for): a checkpoint changed in place makes a stale cache, which is refused. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "quantize.h"
#include "safetensors.h"

#define CACHE_NAME "vlreward-int8.bin"
static const char CACHE_MAGIC[8] = {'V', 'L', 'R', 'I', '8', 0, 0, 1};
#define ENTRY_BYTES 32
#define BLOCK_ALIGN 4096
#define MAX_KEY (1u << 20)

static size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

static uint64_t fnv1a(const uint8_t *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* The key of w's files (see the top); false when out of memory or a file cannot be stat'd. */
static bool cache_key(const vlr_weights *w, vlr_buf *key) {
    vlr_buf_printf(key, "vlreward int8 v1; %s", vlr_int8_layers());
    for (int i = 0; i < w->n_files; i++) {
        const vlr_st_file *f = w->files[i];
        char real[PATH_MAX];
        const char *base = realpath(f->path, real) ? strrchr(real, '/') : NULL;
        base = base ? base + 1 : "";
        bool sha = strlen(base) == 64;
        for (const char *c = base; sha && *c; c++) sha = (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f');
        struct stat st;
        if (sha) {
            vlr_buf_printf(key, "; sha256 %s", base);
        } else if (stat(f->path, &st) == 0) {
            vlr_buf_printf(key, "; size %lld mtime %lld.%09ld ino %llu header %016llx", (long long)st.st_size,
                           (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, (unsigned long long)st.st_ino,
                           (unsigned long long)fnv1a(f->bytes + 8, f->header_len));
        } else {
            return false;
        }
    }
    return !key->oom;
}

static uint32_t get32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static uint64_t get64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Maps path and binds w's int8 tensors to it when it matches key and the tensors; false otherwise
 * (w untouched). */
static bool cache_read(vlr_weights *w, vlr_tensor **list, size_t n, const char *path, const vlr_buf *key) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    struct stat st;
    void *map = MAP_FAILED;
    const size_t table = 16 + round_up(key->len, 8);
    if (fstat(fd, &st) == 0 && (uint64_t)st.st_size >= table + n * ENTRY_BYTES)
        map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return false;
    const size_t size = (size_t)st.st_size;
    const uint8_t *b = map;
    bool ok = memcmp(b, CACHE_MAGIC, 8) == 0 && get32(b + 8) == n && get32(b + 12) == key->len &&
              memcmp(b + 16, key->data, key->len) == 0;
    for (size_t i = 0; ok && i < n; i++) {
        const uint8_t *ent = b + table + i * ENTRY_BYTES;
        const uint64_t off = get64(ent + 8), bytes = get64(ent + 16);
        ok = get32(ent) == (uint32_t)list[i]->shape[0] && get32(ent + 4) == (uint32_t)list[i]->shape[1] &&
             bytes == vlr_qweight_bytes((int)list[i]->shape[0], (int)list[i]->shape[1]) && bytes > 0 &&
             off % BLOCK_ALIGN == 0 && off <= size && bytes <= size - off;
    }
    vlr_qweight *q = ok ? calloc(n ? n : 1, sizeof *q) : NULL;
    if (!q) {
        munmap(map, size);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        const uint8_t *ent = b + table + i * ENTRY_BYTES;
        vlr_qweight_view(&q[i], (int)list[i]->shape[0], (int)list[i]->shape[1], b + get64(ent + 8));
        list[i]->q = &q[i];
        w->qweight_bytes += q[i].bytes;
    }
    w->qweights = q;
    w->n_qweights = (int)n;
    w->int8_map = map;
    w->int8_map_size = size;
    return true;
}

static bool write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        const ssize_t k = write(fd, c, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return false;
        c += k;
        n -= (size_t)k;
    }
    return true;
}

/* Writes w's int8 matrices (list order) to path, through a temporary file renamed into place. */
static bool cache_write(const vlr_weights *w, const char *path, const vlr_buf *key, char *why, size_t cap) {
    const size_t n = (size_t)w->n_qweights, table = 16 + round_up(key->len, 8);
    size_t off = round_up(table + n * ENTRY_BYTES, BLOCK_ALIGN);
    uint8_t *head = calloc(1, off);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid());
    const int fd = head ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    if (fd < 0) {
        snprintf(why, cap, "%s", head ? strerror(errno) : "out of memory");
        free(head);
        return false;
    }
    memcpy(head, CACHE_MAGIC, 8);
    const uint32_t n32 = (uint32_t)n, key32 = (uint32_t)key->len;
    memcpy(head + 8, &n32, 4);
    memcpy(head + 12, &key32, 4);
    memcpy(head + 16, key->data, key->len);
    for (size_t i = 0; i < n; i++) {
        uint8_t *ent = head + table + i * ENTRY_BYTES;
        const uint32_t rows = (uint32_t)w->qweights[i].n, cols = (uint32_t)w->qweights[i].k;
        const uint64_t o = off, bytes = w->qweights[i].bytes;
        memcpy(ent, &rows, 4);
        memcpy(ent + 4, &cols, 4);
        memcpy(ent + 8, &o, 8);
        memcpy(ent + 16, &bytes, 8);
        off = round_up(off + bytes, BLOCK_ALIGN);
    }
    static const uint8_t zeros[BLOCK_ALIGN];
    bool ok = write_all(fd, head, round_up(table + n * ENTRY_BYTES, BLOCK_ALIGN));
    for (size_t i = 0; ok && i < n; i++) {
        const size_t bytes = w->qweights[i].bytes;
        ok = write_all(fd, w->qweights[i].packed, bytes) && write_all(fd, zeros, round_up(bytes, BLOCK_ALIGN) - bytes);
    }
    if (!ok) snprintf(why, cap, "%s", strerror(errno ? errno : EIO));
    if (close(fd) != 0 && ok) {
        ok = false;
        snprintf(why, cap, "%s", strerror(errno));
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        snprintf(why, cap, "%s", strerror(errno));
    }
    if (!ok) unlink(tmp);
    free(head);
    return ok;
}

vlr_status vlr_weights_int8_cached(vlr_weights *w, const vlr_config *cfg, const char *dir, int n_threads,
                                   bool write, char *note, size_t cap, vlr_err *e) {
    note[0] = '\0';
    const size_t n = vlr_int8_tensors(w, cfg, NULL);
    vlr_tensor **list = calloc(n ? n : 1, sizeof *list);
    char *path = vlr_path_join(dir, CACHE_NAME);
    vlr_buf key = {0};
    if (!list || !path) {
        free(list);
        free(path);
        return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    }
    vlr_int8_tensors(w, cfg, list);
    const bool keyed = cache_key(w, &key);
    vlr_status rc = VLR_OK;
    if (keyed && cache_read(w, list, n, path, &key)) {
        snprintf(note, cap, "int8 weights read from %s", path);
    } else if (!(rc = vlr_weights_quantize_int8(w, cfg, n_threads, true, e)) && write) {
        char why[256] = "the checkpoint's files cannot be identified";
        if (keyed && cache_write(w, path, &key, why, sizeof why))
            snprintf(note, cap, "int8 weights written to %s (%.1f GB), read from there by later loads", path,
                     (double)w->qweight_bytes * 1e-9);
        else
            snprintf(note, cap, "int8 weights not cached: %s: %s", path, why);
    }
    vlr_buf_free(&key);
    free(list);
    free(path);
    return rc;
}
