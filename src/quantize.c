/* quantize.c: int8 precision's load step. Which linear layers go to int8, quantizing them
 * (vlr_qweight_quantize: per output channel, kernels.h) and handing the stored pages back.
 *
 * Quantized: every linear layer of the vision blocks (qkv, proj, gate/up/down) and of the decoder
 * (q/k/v/o, gate/up/down): 98% of the weights and of the FLOPs. Kept in the float precision:
 *   - the merger's two layers: measured on the golden set (tests/test_score.c), quantizing them took
 *     the worst |score error| from 0.043 to 0.097 and the mean from 0.020 to 0.031; they are 1.6% of
 *     the vision FLOPs at 7B (89 MFLOP per merged token against 5.4 GFLOP for its 4 patches);
 *   - the patch embedding (its input is the normalised pixels; 0.02% of the vision FLOPs);
 *   - the value head (one dot product whose result is the score).
 * Attention products, norms and the KV cache are fp32 in every precision.
 *
 * Memory: int8 replaces, not adds to, the stored weights. After a tensor is quantized, the whole pages
 * inside its stored bytes are handed back (madvise MADV_DONTNEED on the read-only private file
 * mapping: they leave the process's resident set; were they read again, they would be read from the
 * file again, unchanged). The pages the tensor shares with its neighbours stay. */
#include "quantize.h"

#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/kernels.h"

#define VB(f) VLR_TG_VISION_BLOCK, offsetof(vlr_vision_block_weights, f)
#define TL(f) VLR_TG_TEXT_LAYER, offsetof(vlr_text_layer_weights, f)

static const struct {
    vlr_tensor_group group;
    size_t offset;
} int8_tensors[] = {
    {VB(qkv_w)}, {VB(proj_w)}, {VB(gate_w)}, {VB(up_w)}, {VB(down_w)},
    {TL(q_w)}, {TL(k_w)}, {TL(v_w)}, {TL(o_w)}, {TL(gate_w)}, {TL(up_w)}, {TL(down_w)},
};
#define N_INT8 (sizeof int8_tensors / sizeof int8_tensors[0])

const char *vlr_int8_layers(void) {
    return "int8: vision blocks' qkv, proj, gate/up/down; decoder q/k/v/o, gate/up/down. "
           "float: patch embedding, merger, value head";
}

/* madvise(advice) on the whole pages inside [p, p + n). Advice only: a failure (an older kernel
 * without MADV_POPULATE_READ, say) costs time or memory, never a result. */
static void advise_pages(const void *p, size_t n, int advice) {
    const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t lo = ((uintptr_t)p + page - 1) / page * page, hi = ((uintptr_t)p + n) / page * page;
    if (hi > lo) (void)madvise((void *)lo, hi - lo, advice);
}

static int group_reps(const vlr_config *cfg, vlr_tensor_group g) {
    return g == VLR_TG_VISION_BLOCK ? cfg->vision.depth : g == VLR_TG_TEXT_LAYER ? cfg->text.num_layers : 1;
}

size_t vlr_int8_tensors(vlr_weights *w, const vlr_config *cfg, vlr_tensor **out) {
    size_t n = 0;
    for (size_t d = 0; d < N_INT8; d++) {
        const int reps = group_reps(cfg, int8_tensors[d].group);
        for (int l = 0; l < reps; l++) {
            vlr_tensor *t = vlr_weights_field(w, int8_tensors[d].group, l, int8_tensors[d].offset);
            if (!t->data || t->ndim != 2) continue; /* absent: the forward pass reports it */
            if (out) out[n] = t;
            n++;
        }
    }
    return n;
}

vlr_status vlr_weights_quantize_int8(vlr_weights *w, const vlr_config *cfg, int n_threads, bool release,
                                     vlr_err *e) {
    const size_t total = vlr_int8_tensors(w, cfg, NULL);
    vlr_tensor **list = calloc(total ? total : 1, sizeof *list);
    w->qweights = calloc(total ? total : 1, sizeof *w->qweights);
    if (!list || !w->qweights) {
        free(list);
        return vlr_fail(e, VLR_ERR_NOMEM, "out of memory");
    }
    vlr_int8_tensors(w, cfg, list);
    vlr_status rc = VLR_OK;
    for (size_t i = 0; i < total && !rc; i++) {
        vlr_tensor *t = list[i];
        vlr_qweight *q = &w->qweights[w->n_qweights];
        const size_t bytes = (size_t)vlr_tensor_numel(t) * vlr_dtype_size(t->dtype);
#ifdef MADV_POPULATE_READ
        /* the stored values are read once, all of them: mapped in one call rather than by a page
         * fault per 4 KiB (7B shapes, a busy machine: 17.8 -> 14.0 s of system time) */
        if (release) advise_pages(t->data, bytes, MADV_POPULATE_READ);
#endif
        rc = vlr_qweight_quantize(q, t->data, t->dtype, (int)t->shape[0], (int)t->shape[1], n_threads, e);
        if (rc) break; /* what was made so far is freed with the weights */
        w->n_qweights++;
        w->qweight_bytes += q->bytes;
        t->q = q;
        if (release) advise_pages(t->data, bytes, MADV_DONTNEED);
    }
    free(list);
    return rc;
}
