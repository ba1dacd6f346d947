#include "ops/cpu/cpu_isa.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define JETMOE_X86 1
#endif

namespace jetmoe {
namespace {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false, bmi2 = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vnni = false,
       avx512vbmi = false;
  bool os_avx = false, os_avx512 = false;
};

#ifdef JETMOE_X86
uint64_t read_xcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}
#endif

CpuFeatures query_features() {
  CpuFeatures f;
#ifdef JETMOE_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1;
  f.fma = (c >> 12) & 1;
  f.f16c = (c >> 29) & 1;
  if (osxsave) {
    const uint64_t xcr0 = read_xcr0();
    f.os_avx = (xcr0 & 0x6) == 0x6;
    f.os_avx512 = (xcr0 & 0xe6) == 0xe6;
  }
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
    f.avx2 = (b >> 5) & 1;
    f.bmi2 = (b >> 8) & 1;
    f.avx512f = (b >> 16) & 1;
    f.avx512dq = (b >> 17) & 1;
    f.avx512bw = (b >> 30) & 1;
    f.avx512vl = (b >> 31) & 1;
    f.avx512vbmi = (c >> 1) & 1;
    f.avx512vnni = (c >> 11) & 1;
  }
#endif
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = query_features();
  return f;
}

bool isa_supported(CpuIsa isa) {
  const CpuFeatures& f = features();
  switch (isa) {
    case CpuIsa::Scalar: return true;
    case CpuIsa::Avx2: return f.os_avx && f.avx2 && f.fma && f.f16c;
    case CpuIsa::Avx512:
      return f.os_avx512 && f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512vnni &&
             f.avx512vbmi &&
             f.avx2 && f.fma && f.f16c;
  }
  return false;
}

CpuIsa isa_from_env() {
  const char* env = std::getenv("JETMOE_FORCE_ISA");
  if (env == nullptr || *env == '\0') return detect_best_isa();
  const std::string v = env;
  CpuIsa isa;
  if (v == "scalar") isa = CpuIsa::Scalar;
  else if (v == "avx2") isa = CpuIsa::Avx2;
  else if (v == "avx512") isa = CpuIsa::Avx512;
  else throw std::runtime_error("JETMOE_FORCE_ISA='" + v + "': expected scalar, avx2 or avx512");
  if (!isa_supported(isa))
    throw std::runtime_error("JETMOE_FORCE_ISA='" + v + "': this CPU does not support it (has: " +
                             cpu_feature_summary() + ")");
  return isa;
}

std::atomic<int> g_active{-1};

}  // namespace

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

CpuIsa detect_best_isa() {
  if (isa_supported(CpuIsa::Avx512)) return CpuIsa::Avx512;
  if (isa_supported(CpuIsa::Avx2)) return CpuIsa::Avx2;
  return CpuIsa::Scalar;
}

std::vector<CpuIsa> supported_isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

CpuIsa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v < 0) {
    v = static_cast<int>(isa_from_env());
    g_active.store(v, std::memory_order_release);
  }
  return static_cast<CpuIsa>(v);
}

void set_active_isa(CpuIsa isa) {
  if (!isa_supported(isa))
    throw std::runtime_error(std::string("ISA ") + isa_name(isa) + " is not supported by this CPU");
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

std::string cpu_vendor() {
#ifdef JETMOE_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return {};
  char v[13] = {};
  std::memcpy(v, &b, 4);
  std::memcpy(v + 4, &d, 4);
  std::memcpy(v + 8, &c, 4);
  return v;
#else
  return {};
#endif
}

CpuModel cpu_model() {
  CpuModel m;
#ifdef JETMOE_X86
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return m;
  const int base_family = static_cast<int>((a >> 8) & 0xf), base_model = static_cast<int>((a >> 4) & 0xf);
  const int ext_family = static_cast<int>((a >> 20) & 0xff), ext_model = static_cast<int>((a >> 16) & 0xf);
  m.family = base_family == 0xf ? base_family + ext_family : base_family;
  m.model = base_family == 0x6 || base_family == 0xf ? (ext_model << 4) + base_model : base_model;
#endif
  return m;
}

std::string cpu_feature_summary() {
  const CpuFeatures& f = features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "AVX2");
  add(f.fma, "FMA");
  add(f.f16c, "F16C");
  add(f.avx512f, "AVX512F");
  add(f.avx512bw, "AVX512BW");
  add(f.avx512vl, "AVX512VL");
  add(f.avx512vnni, "AVX512-VNNI");
  add(f.avx512vbmi, "AVX512-VBMI");
  if (s.empty()) s = "none";
  return s;
}

}  // namespace jetmoe
