/* x86_avx2.c: AVX2 + FMA kernels (fallback for x86-64 CPUs without AVX-512). Compiled with
 * -mavx2 -mfma -mf16c; only called after vlr_cpu_has_avx2(). Work in progress: slots not set here
 * keep the reference implementation. */
#include "kernels.h"

void vlr_kernels_fill_avx2(vlr_kernels *k) {
    k->isa = "avx2";
}
