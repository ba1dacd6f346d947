#include "quant/stream_prefetch.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "ops/cpu/cpu_isa.h"
#include "quant/repack.h"

namespace jetmoe {
namespace {

constexpr size_t kMaxPrefetchBytes = 65536;

void check_distance(size_t bytes, const std::string& what) {
  if (bytes > kMaxPrefetchBytes || bytes % 64 != 0)
    throw std::runtime_error(what + ": expected a prefetch distance in bytes, a multiple of 64 from 0 to " +
                             std::to_string(kMaxPrefetchBytes));
}

// JETMOE_PREFETCH as a distance, or -1 when it is not set.
long long override_from_env() {
  const char* env = std::getenv("JETMOE_PREFETCH");
  if (env == nullptr || *env == '\0') return -1;
  return static_cast<long long>(parse_decode_prefetch_bytes(env, std::string("JETMOE_PREFETCH='") + env + "'"));
}

// The override: -2 = not read from the environment yet, -1 = none, else the distance.
std::atomic<long long> g_override{-2};

long long current_override() {
  long long v = g_override.load(std::memory_order_acquire);
  if (v == -2) {
    v = override_from_env();
    g_override.store(v, std::memory_order_release);
  }
  return v;
}

bool is_intel() {
  static const bool intel = cpu_vendor() == "GenuineIntel";
  return intel;
}

// An Ice Lake Xeon: family 6, models 106 and 108 (the Sunny Cove server parts).
bool ice_lake_xeon() {
  static const bool icx = [] {
    const CpuModel m = cpu_model();
    return is_intel() && m.family == 6 && (m.model == 106 || m.model == 108);
  }();
  return icx;
}

// Whether the one-token kernel of `weights` prefetches into L1 alone by default: the
// interleaved types (Q8_0R / Q4_0R / Q4_KR) on an Ice Lake Xeon (stream_prefetch.h,
// decode_stream; its KV rows too: kv_row_prefetch). Their L2 distance is then 0.
bool l1_alone(DType weights) { return ice_lake_xeon() && dtype_is_repacked(weights); }

// The distance of those L1-only prefetches.
constexpr size_t kL1AloneBytes = 4096;

// Whether the plans measured off Intel (Zen 5: touches, rolled loops; Zen 3: two streams) are in
// force, given the override value (current_override()): not on Intel, and not while a distance is
// set.
bool off_intel_plans(long long override_value) { return override_value < 0 && !is_intel(); }

// Whether the one-token kernel of `weights` on `isa` reads two streams per thread: the AVX2
// Q8_0R / Q4_0R / Q4_KR kernels off Intel (stream_prefetch.h, the Zen 3 figures).
bool two_streams_off_intel(DType weights, CpuIsa isa) {
  return !is_intel() && isa == CpuIsa::Avx2 && dtype_is_repacked(weights);
}

size_t default_l2(DType weights, CpuIsa isa) {
  if (is_intel()) return l1_alone(weights) ? 0 : 8192;
  if (two_streams_off_intel(weights, isa)) return 0;
  if (weights == DType::Q4_K && isa == CpuIsa::Avx2) return 8192;  // the AVX2 GGUF-layout kernel (stream_prefetch.h)
  if (weights == DType::Q4_KR || weights == DType::Q8_0R) return 8192;
  return weights == DType::Q4_0R ? 4096 : 0;  // Q8_0R / Q4_0R: with touches and the rolled loop (decode_stream)
}

}  // namespace

size_t decode_prefetch_default() { return is_intel() ? 8192 : 0; }

size_t decode_prefetch_default(DType weights) { return default_l2(weights, active_isa()); }

DecodeStream decode_stream(DType weights) { return decode_stream(weights, active_isa()); }

DecodeStream decode_stream(DType weights, CpuIsa isa) {
  const long long v = current_override();
  DecodeStream s;
  s.l2 = v >= 0 ? static_cast<size_t>(v) : default_l2(weights, isa);
  if (!off_intel_plans(v)) {
    // Intel (and any CPU under the override): an L1 prefetch at half the L2 distance, except the
    // interleaved types' default on an Ice Lake Xeon, which prefetch into L1 alone.
    s.l1 = v < 0 && l1_alone(weights) ? kL1AloneBytes : l1_prefetch_bytes(s.l2);
    return s;
  }
  // AMD and the rest without AVX-512 (the Zen 3 figures): the AVX2 Q8_0R / Q4_0R / Q4_KR kernels
  // read two streams, Q4_0R prefetching 1 KiB ahead into L1, the others not at all.
  if (two_streams_off_intel(weights, isa)) {
    s.two_streams = true;
    s.l1 = weights == DType::Q4_0R ? 1024 : 0;
    return s;
  }
  // AMD and the rest (stream_prefetch.h: the Zen 5 figures): the interleaved types run their
  // rolled loops; Q4_0R and Q8_0R prefetch into L2 only and touch, Q4_KR and the others keep an
  // L1 prefetch at half their distance (0 for none).
  const bool touches = weights == DType::Q4_0R || weights == DType::Q8_0R;
  s.rolled = touches || weights == DType::Q4_KR;
  if (touches)
    s.touch = weights == DType::Q4_0R ? 1024 : 2048;
  else
    s.l1 = l1_prefetch_bytes(s.l2);
  return s;
}

std::string decode_stream_summary() {
  std::string out;
  for (DType t : {DType::Q8_0R, DType::Q4_0R, DType::Q4_KR}) {
    const DecodeStream s = decode_stream(t);
    out += (out.empty() ? "" : ", ") + std::string(dtype_name(t)) + " L2 " + std::to_string(s.l2) + " L1 " + std::to_string(s.l1) +
           " touch " + std::to_string(s.touch) + (s.rolled ? " rolled" : "") + (s.two_streams ? " two streams" : "");
  }
  return out;
}

size_t kv_touch_bytes() { return off_intel_plans(current_override()) ? 1024 : 0; }

KvRowPrefetch kv_row_prefetch() {
  KvRowPrefetch p;
  if (current_override() < 0 && ice_lake_xeon())
    p.l1 = kL1AloneBytes;
  else
    p.l2 = decode_prefetch_bytes();  // the override's distance, or this CPU's default
  return p;
}

std::string kv_row_prefetch_summary() {
  const KvRowPrefetch p = kv_row_prefetch();
  return "L2 " + std::to_string(p.l2) + " L1 " + std::to_string(p.l1);
}

size_t decode_prefetch_bytes() {
  const long long v = current_override();
  return v >= 0 ? static_cast<size_t>(v) : decode_prefetch_default();
}

size_t decode_prefetch_bytes(DType weights) {
  const long long v = current_override();
  return v >= 0 ? static_cast<size_t>(v) : decode_prefetch_default(weights);
}

bool decode_prefetch_overridden() { return current_override() >= 0; }

std::vector<std::pair<DType, size_t>> decode_prefetch_by_type() {
  std::vector<std::pair<DType, size_t>> v;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q4_K, DType::Q8_0R, DType::Q4_0R, DType::Q4_KR})
    v.emplace_back(t, decode_prefetch_bytes(t));
  return v;
}

std::string decode_prefetch_summary() {
  const size_t all = decode_prefetch_bytes();
  std::string others;
  for (const auto& [t, bytes] : decode_prefetch_by_type())
    if (bytes != all) others += (others.empty() ? "" : ", ") + std::string(dtype_name(t)) + " weights " + std::to_string(bytes);
  return std::to_string(all) + " bytes" + (others.empty() ? "" : " (" + others + ")");
}

size_t parse_decode_prefetch_bytes(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  // strtoull takes leading blanks and a sign and would wrap "-64" around: no minus at all.
  const bool number = end != text.c_str() && *end == '\0' && errno != ERANGE && text.find('-') == std::string::npos;
  const size_t bytes = number && v <= kMaxPrefetchBytes ? static_cast<size_t>(v) : kMaxPrefetchBytes + 1;  // out of range: rejected below
  check_distance(bytes, what);
  return bytes;
}

void set_decode_prefetch_bytes(size_t bytes) {
  check_distance(bytes, "decode prefetch distance " + std::to_string(bytes));
  g_override.store(static_cast<long long>(bytes), std::memory_order_release);
}

void reset_decode_prefetch_bytes() { g_override.store(override_from_env(), std::memory_order_release); }

}  // namespace jetmoe
