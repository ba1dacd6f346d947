#include "quant/stream_prefetch.h"

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "ops/cpu/cpu_isa.h"

namespace jetmoe {
namespace {

constexpr size_t kMaxPrefetchBytes = 65536;

void check_distance(size_t bytes, const std::string& what) {
  if (bytes > kMaxPrefetchBytes || bytes % 64 != 0)
    throw std::runtime_error(what + ": expected a prefetch distance in bytes, a multiple of 64 from 0 to " +
                             std::to_string(kMaxPrefetchBytes));
}

size_t distance_from_env() {
  const char* env = std::getenv("JETMOE_PREFETCH");
  if (env == nullptr || *env == '\0') return decode_prefetch_default();
  return parse_decode_prefetch_bytes(env, std::string("JETMOE_PREFETCH='") + env + "'");
}

// -1 = not read yet.
std::atomic<long long> g_distance{-1};

}  // namespace

size_t decode_prefetch_default() { return cpu_vendor() == "GenuineIntel" ? 8192 : 0; }

size_t decode_prefetch_bytes() {
  long long v = g_distance.load(std::memory_order_acquire);
  if (v < 0) {
    v = static_cast<long long>(distance_from_env());
    g_distance.store(v, std::memory_order_release);
  }
  return static_cast<size_t>(v);
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
  g_distance.store(static_cast<long long>(bytes), std::memory_order_release);
}

}  // namespace jetmoe
