#include "loader/aligned_buffer.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>
#include <utility>

namespace jetmoe {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
// From this size on, a buffer gets its own huge-page-aligned mapping.
constexpr size_t kHugeMin = size_t{4} << 20;

}  // namespace

AlignedBuffer::AlignedBuffer(size_t nbytes) : size_(nbytes) {
  if (nbytes >= kHugeMin) {
    // Whole huge pages, the last one included: with the advice ending at nbytes, the partial
    // huge page at the end stayed in 4 KiB pages. For a KV cache that tail holds the last
    // layer's heads, and decode faulted a fresh 4 KiB page there every few positions (Zen 5 VM:
    // about one stall of ~100 us per token on a cache's first pass).
    const size_t whole = (nbytes + kHuge - 1) / kHuge * kHuge;
    map_bytes_ = whole + kHuge;
    map_ = mmap(nullptr, map_bytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map_ == MAP_FAILED) {
      map_ = nullptr;
      throw std::bad_alloc();
    }
    const auto base = reinterpret_cast<uintptr_t>(map_);
    data_ = reinterpret_cast<uint8_t*>((base + kHuge - 1) & ~(kHuge - 1));
    madvise(data_, whole, MADV_HUGEPAGE);  // advice only: fine if the kernel says no
    return;                                // anonymous mappings are zero-filled
  }
  const size_t rounded = (nbytes + 63) / 64 * 64;
  data_ = static_cast<uint8_t*>(std::aligned_alloc(64, rounded ? rounded : 64));
  if (!data_) throw std::bad_alloc();
  std::memset(data_, 0, rounded ? rounded : 64);
}

AlignedBuffer::~AlignedBuffer() { release(); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)) {}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
  }
  return *this;
}

void AlignedBuffer::release() {
  if (map_)
    munmap(map_, map_bytes_);
  else
    std::free(data_);
  data_ = nullptr;
  map_ = nullptr;
}

}  // namespace jetmoe
