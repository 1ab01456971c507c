/* exec.c: the execution context's workspace, one aligned arena grown on demand (exec.h).
 *
 * Growth takes the new block before freeing the old one (whose contents are scratch and need not be
 * copied), so a failed growth leaves the old block for smaller requests; it rounds up to whole
 * 64 KiB so that shapes a little larger than the last one do not each cost a reallocation. Not here: who slices it per thread (the drivers in kernels.c). */
#include "exec.h"

#include <stdlib.h>

#define WS_GRAIN ((size_t)64 << 10)

struct vlr_workspace {
    void *base;       /* 64-byte aligned, `size` bytes; NULL while empty */
    size_t size;
    size_t max_bytes; /* 0 = no cap */
    uint64_t n_grows;
};

vlr_workspace *vlr_workspace_new(size_t max_bytes) {
    vlr_workspace *ws = calloc(1, sizeof *ws);
    if (ws) ws->max_bytes = max_bytes;
    return ws;
}

void vlr_workspace_free(vlr_workspace *ws) {
    if (!ws) return;
    free(ws->base);
    free(ws);
}

void *vlr_workspace_reserve(vlr_workspace *ws, size_t bytes) {
    if (bytes <= ws->size) return ws->base;
    if (ws->max_bytes && bytes > ws->max_bytes) return NULL;
    if (bytes > SIZE_MAX - WS_GRAIN) return NULL;
    size_t size = (bytes + WS_GRAIN - 1) / WS_GRAIN * WS_GRAIN;
    if (ws->max_bytes && size > ws->max_bytes) size = (bytes + 63) / 64 * 64; /* aligned_alloc: a multiple of 64 */
    void *p = aligned_alloc(64, size);
    if (!p) return NULL; /* the old block stays: smaller requests keep working */
    free(ws->base);
    ws->base = p;
    ws->size = size;
    ws->n_grows++;
    return p;
}

void vlr_workspace_stats(const vlr_workspace *ws, size_t *bytes, uint64_t *n_grows) {
    if (bytes) *bytes = ws ? ws->size : 0;
    if (n_grows) *n_grows = ws ? ws->n_grows : 0;
}
