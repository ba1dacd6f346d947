// The default activation memory of runtime/backend.h: host memory (what the CPU backend uses).
#include "runtime/backend.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace jetmoe {

void* Backend::alloc(size_t bytes) {
  const size_t rounded = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;  // aligned_alloc wants a multiple
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::bad_alloc();
  return p;
}

void Backend::release(void* p) { std::free(p); }

void Backend::copy_to_backend(void* dst, const void* host, size_t bytes) {
  if (bytes) std::memcpy(dst, host, bytes);
}

void Backend::copy_to_host(void* host, const void* src, size_t bytes) {
  if (bytes) std::memcpy(host, src, bytes);
}

}  // namespace jetmoe
