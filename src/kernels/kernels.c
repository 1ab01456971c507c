/* kernels.c: picks the kernel table once, from what the CPU supports (or what a test forces).
 *
 * The table is always filled in layers: the scalar reference first, then each ISA at or below
 * the chosen one overwrites the slots it implements, so a slot an ISA file leaves out falls back to
 * the next best implementation instead of to a NULL pointer. */
#include "kernels.h"

vlr_isa vlr_kernels_select(vlr_kernels *k, vlr_isa force) {
    vlr_isa best = VLR_ISA_REF;
    if (vlr_cpu_has_avx2()) best = VLR_ISA_AVX2;
    if (best == VLR_ISA_AVX2 && vlr_cpu_has_avx512()) best = VLR_ISA_AVX512;
    /* A forced ISA the CPU lacks falls back to the best supported one below it. */
    vlr_isa isa = (force == VLR_ISA_AUTO || force > best) ? best : force;

    vlr_kernels_fill_ref(k);
    if (isa >= VLR_ISA_AVX2) vlr_kernels_fill_avx2(k);
    if (isa >= VLR_ISA_AVX512) vlr_kernels_fill_avx512(k);
    return isa;
}
