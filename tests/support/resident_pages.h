// How much of a memory range is resident (mincore), for tests of buffers populated ahead of use
// (loader/aligned_buffer.h, runtime/kv_cache.h).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace jetmoe::test {

inline size_t page_bytes() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Pages of [p, p + bytes) (p page-aligned) that mincore reports resident; 0 if it fails.
inline size_t resident_pages(const uint8_t* p, size_t bytes) {
  const size_t page = page_bytes();
  std::vector<unsigned char> v((bytes + page - 1) / page);
  if (mincore(const_cast<uint8_t*>(p), bytes, v.data()) != 0) return 0;
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

}  // namespace jetmoe::test
