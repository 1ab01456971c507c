/* cpu_features.c: which vector ISAs this CPU and OS let us use, from cpuid and xgetbv.
 *
 * An instruction set is usable only when the CPU reports it (cpuid) *and* the OS saves the
 * matching register state on context switches (the XCR0 bits read with xgetbv, which itself may
 * only run when cpuid reports OSXSAVE): a kernel that booted with AVX-512 state disabled still shows
 * the cpuid bits. Intel SDM vol. 1, 13.3 "Enabling the XSAVE feature set", 14.3 and 15.2 (detecting
 * AVX / AVX-512). Nothing is cached: vlr_kernels_select asks once and the table is kept. */
#include <cpuid.h>

#include "kernels.h"

/* XCR0 = xgetbv(0), as asm so this baseline file needs no -mxsave. */
static uint64_t cpu_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

typedef struct cpu_bits {
    uint32_t l1_ecx; /* cpuid leaf 1, ECX: FMA, OSXSAVE, AVX, F16C */
    uint32_t l7_ebx; /* cpuid leaf 7 subleaf 0, EBX: AVX2, AVX512F/DQ/BW/VL */
    uint64_t xcr0;   /* OS-enabled state components; 0 when xgetbv is not allowed */
} cpu_bits;

static cpu_bits cpu_read(void) {
    cpu_bits b = {0, 0, 0};
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return b;
    b.l1_ecx = ecx;
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) b.l7_ebx = ebx;
    if (b.l1_ecx & bit_OSXSAVE) b.xcr0 = cpu_xcr0();
    return b;
}

/* XCR0 bits: 1 SSE (XMM), 2 AVX (upper YMM), 5 opmask, 6 ZMM_Hi256, 7 Hi16_ZMM. */
#define XCR0_YMM 0x06u
#define XCR0_ZMM 0xe6u

bool vlr_cpu_has_avx2(void) {
    const cpu_bits b = cpu_read();
    const uint32_t l1_need = bit_FMA | bit_AVX | bit_F16C | bit_OSXSAVE;
    return (b.l1_ecx & l1_need) == l1_need && (b.l7_ebx & bit_AVX2) &&
           (b.xcr0 & XCR0_YMM) == XCR0_YMM;
}

bool vlr_cpu_has_avx512(void) {
    const cpu_bits b = cpu_read();
    const uint32_t l7_need = bit_AVX512F | bit_AVX512DQ | bit_AVX512BW | bit_AVX512VL;
    /* The AVX-512 kernels also use FMA / F16C forms on 256-bit registers: require AVX2's set. */
    return vlr_cpu_has_avx2() && (b.l7_ebx & l7_need) == l7_need &&
           (b.xcr0 & XCR0_ZMM) == XCR0_ZMM;
}
