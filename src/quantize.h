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

#endif
