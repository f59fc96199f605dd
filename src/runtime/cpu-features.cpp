#include "cpu-features.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define BITVIT_X86 1
#endif

namespace bitvit::runtime {
namespace {

#if BITVIT_X86
struct CpuidRegs {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
    CpuidRegs r;
    __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
    return r;
}

// XCR0: which register states the OS saves on a context switch. A CPU may report AVX-512 while the
// OS does not enable ZMM state; then the instructions fault, so both must agree.
uint64_t read_xcr0() {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (uint64_t{hi} << 32) | lo;
}

CpuFeatures detect() {
    CpuFeatures f;
    const unsigned max_leaf = cpuid(0, 0).eax;
    const CpuidRegs leaf1 = cpuid(1, 0);
    const bool osxsave = (leaf1.ecx >> 27) & 1;
    const bool fma = (leaf1.ecx >> 12) & 1;
    const uint64_t xcr0 = osxsave ? read_xcr0() : 0;
    const bool os_ymm = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
    const bool os_zmm = os_ymm && (xcr0 & 0xE0) == 0xE0;  // opmask + ZMM_Hi256 + Hi16_ZMM
    if (max_leaf >= 7) {
        const CpuidRegs leaf7 = cpuid(7, 0);
        const bool avx2 = (leaf7.ebx >> 5) & 1;
        const bool bmi2 = (leaf7.ebx >> 8) & 1;
        const bool avx512f = (leaf7.ebx >> 16) & 1;
        const bool avx512bw = (leaf7.ebx >> 30) & 1;
        const bool avx512vl = (leaf7.ebx >> 31) & 1;
        const bool vpopcntdq = (leaf7.ecx >> 14) & 1;
        const bool vnni = (leaf7.ecx >> 11) & 1;
        f.avx2 = avx2 && fma && bmi2 && os_ymm;
        f.avx512bw = f.avx2 && avx512f && avx512bw && avx512vl && os_zmm;
        f.avx512vpopcntdq = f.avx512bw && vpopcntdq;
        f.avx512vnni = f.avx512bw && vnni;
    }
    if (cpuid(0x80000000u, 0).eax >= 0x80000004u) {
        char brand[49] = {};
        for (unsigned i = 0; i < 3; ++i) {
            const CpuidRegs r = cpuid(0x80000002u + i, 0);
            std::memcpy(brand + 16 * i + 0, &r.eax, 4);
            std::memcpy(brand + 16 * i + 4, &r.ebx, 4);
            std::memcpy(brand + 16 * i + 8, &r.ecx, 4);
            std::memcpy(brand + 16 * i + 12, &r.edx, 4);
        }
        f.brand = brand;
        const auto first = f.brand.find_first_not_of(' ');
        f.brand = first == std::string::npos ? "" : f.brand.substr(first);
    }
    return f;
}
#else
CpuFeatures detect() { return CpuFeatures{}; }
#endif

}  // namespace

const char * isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avx512bw: return "avx512bw";
        case Isa::avx512vpopcntdq: return "avx512vpopcntdq";
    }
    return "unknown";
}

Isa parse_isa(const std::string & name) {
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512bw, Isa::avx512vpopcntdq}) {
        if (name == isa_name(isa)) return isa;
    }
    throw std::invalid_argument("unknown ISA '" + name + "' (known: scalar, avx2, avx512bw, avx512vpopcntdq)");
}

const CpuFeatures & cpu_features() {
    static const CpuFeatures features = detect();
    return features;
}

Isa best_supported_isa() {
    const CpuFeatures & f = cpu_features();
    if (f.avx512vpopcntdq) return Isa::avx512vpopcntdq;
    if (f.avx512bw) return Isa::avx512bw;
    if (f.avx2) return Isa::avx2;
    return Isa::scalar;
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out;
    for (int i = 0; i <= static_cast<int>(best_supported_isa()); ++i) out.push_back(static_cast<Isa>(i));
    return out;
}

Isa selected_isa() {
    const Isa best = best_supported_isa();
    const char * cap = std::getenv("BITVIT_ISA");
    if (cap == nullptr || *cap == '\0') return best;
    const Isa wanted = parse_isa(cap);
    if (static_cast<int>(wanted) > static_cast<int>(best)) {
        throw std::invalid_argument(std::string("BITVIT_ISA=") + cap + " but this CPU supports at most " +
                                    isa_name(best));
    }
    return wanted;
}

}  // namespace bitvit::runtime
