/* quantize.h: int8 precision's load step (quantize.c): which linear layers become int8, and the
 * quantization of a loaded model's weights. */
#ifndef VLR_QUANTIZE_H
#define VLR_QUANTIZE_H

#include "common.h"
#include "config.h"
#include "weights.h"

/* Quantizes w's int8 layers (quantize.c) with n_threads threads and points their tensors' q at the
 * result (owned by w, freed by vlr_weights_free). release: hand back the whole pages of the stored
 * values: right for read-only file mappings (a page touched again is read from the file again) and
 * for memory nobody reads again (bench's random weights); anonymous pages come back as zeros. */
vlr_status vlr_weights_quantize_int8(vlr_weights *w, const vlr_config *cfg, int n_threads, bool release,
                                     vlr_err *e);
/* The policy in one sentence, for `info` and the docs. */
const char *vlr_int8_layers(void);
/* The tensors the policy quantizes, present in w, in a fixed order (out may be NULL: count only). */
size_t vlr_int8_tensors(vlr_weights *w, const vlr_config *cfg, vlr_tensor **out);

/* The int8 weights kept in DIR/vlreward-int8.bin (int8_cache.c), keyed by the checkpoint's identity.
 * Reads them (a read-only map: nothing to quantize, no pages of the bf16 tensors touched) when the
 * file is there and its key matches; else quantizes (vlr_weights_quantize_int8, pages released) and,
 * with write, stores them there for the next load. *note (cap bytes) says what happened, for the
 * user: "read ...", "wrote ...", "could not write ...: why". Failure to read or write the file is
 * never an error; quantizing can be. */
vlr_status vlr_weights_int8_cached(vlr_weights *w, const vlr_config *cfg, const char *dir, int n_threads,
                                   bool write, char *note, size_t cap, vlr_err *e);

#endif
