// Which SIMD instruction set the CPU kernels use. Picked once, at first use, from CPUID;
// JETMOE_FORCE_ISA=scalar|avx2|avx512 overrides it (a forced ISA the CPU lacks is an error).
#pragma once

#include <string>
#include <vector>

namespace jetmoe {

enum class CpuIsa { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(CpuIsa isa);

// Best ISA this CPU (and this build) can run.
CpuIsa detect_best_isa();

// Every ISA this CPU can run, scalar first (tests run every one of them).
std::vector<CpuIsa> supported_isas();

// The ISA in use: detect_best_isa() unless JETMOE_FORCE_ISA says otherwise. Throws
// std::runtime_error when the variable names an unknown or unsupported ISA.
CpuIsa active_isa();

// Overrides the active ISA (tests use this to run every path); must be supported.
void set_active_isa(CpuIsa isa);

// CPUID vendor string ("GenuineIntel", "AuthenticAMD", ...); empty where there is none.
std::string cpu_vendor();

// CPUID display family and model (the extended fields folded in as Intel and AMD define them,
// e.g. {6, 106} for an Ice Lake Xeon, {26, 2} for Zen 5); {0, 0} where there is no CPUID.
struct CpuModel {
  int family = 0, model = 0;
};
CpuModel cpu_model();

// Human-readable line of CPU features relevant to the kernels, e.g. "AVX2 FMA F16C AVX512F VNNI".
std::string cpu_feature_summary();

}  // namespace jetmoe
