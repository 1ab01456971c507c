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
    uint32_t l1_ecx;  /* cpuid leaf 1, ECX: FMA, OSXSAVE, AVX, F16C */
    uint32_t l7_ebx;  /* cpuid leaf 7 subleaf 0, EBX: AVX2, AVX512F/DQ/BW/VL */
    uint32_t l7_ecx;  /* cpuid leaf 7 subleaf 0, ECX: AVX512_VNNI (bit 11) */
    uint32_t l71_eax; /* cpuid leaf 7 subleaf 1, EAX: AVX512_BF16 (bit 5) */
    uint64_t xcr0;    /* OS-enabled state components; 0 when xgetbv is not allowed */
    bool amd;         /* vendor string "AuthenticAMD" */
} cpu_bits;

static cpu_bits cpu_read(void) {
    cpu_bits b = {0, 0, 0, 0, 0, false};
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return b;
    const unsigned max_leaf = eax;
    b.amd = ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u; /* "Auth" "enti" "cAMD" */
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return b;
    b.l1_ecx = ecx;
    if (max_leaf >= 7 && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        b.l7_ebx = ebx;
        b.l7_ecx = ecx;
        if (eax >= 1 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) b.l71_eax = eax;
    }
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

bool vlr_cpu_has_avx512_bf16(void) {
    return vlr_cpu_has_avx512() && (cpu_read().l71_eax & (1u << 5));
}

bool vlr_cpu_has_avx512_vnni(void) {
    return vlr_cpu_has_avx512() && (cpu_read().l7_ecx & (1u << 11));
}

/* The table behind `auto`. Measured (bench/README.md): AMD Zen 4 / Zen 5 run a 512-bit vdpbf16ps
 * (32 multiply-adds) at the issue rate of a 512-bit fp32 FMA (16), twice the fp32 rate; Intel's
 * AVX512_BF16 cores (Cooper Lake, Sapphire Rapids and later without AMX in use) run it at half the
 * FMA rate or no faster, so fp32 is both exact and the quickest there. Unknown vendors get f32. */
vlr_precision vlr_precision_for_cpu(const char **why) {
    const char *reason;
    vlr_precision p = VLR_PRECISION_F32;
    if (!vlr_cpu_has_avx512_bf16()) {
        reason = "auto: no AVX512_BF16 on this CPU, fp32 is the fast path";
    } else if (cpu_read().amd) {
        p = VLR_PRECISION_BF16;
        reason = "auto: AMD CPU with AVX512_BF16, where bf16 dot products run at twice the fp32 rate";
    } else {
        reason = "auto: AVX512_BF16 on a non-AMD CPU, where it runs no faster than fp32 FMA";
    }
    if (why) *why = reason;
    return p;
}
