#include "loader/aligned_buffer.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <system_error>
#include <thread>
#include <utility>

namespace jetmoe {
namespace {

constexpr size_t kHuge = size_t{2} << 20;
// From this size on, a buffer gets its own huge-page-aligned mapping.
constexpr size_t kHugeMin = size_t{4} << 20;
// Background population advises this much at a time, so a buffer destroyed meanwhile waits for at
// most one step (on the Zen 5 test VM first writes ran at ~0.5 GB/s: ~16 ms).
constexpr size_t kPopulateStep = size_t{8} << 20;

}  // namespace

struct AlignedBuffer::Populator {
  std::atomic<bool> stop{false};
  std::thread thread;
};

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

AlignedBuffer::AlignedBuffer() noexcept = default;

AlignedBuffer::~AlignedBuffer() { release(); }

AlignedBuffer::AlignedBuffer(AlignedBuffer&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      map_(std::exchange(o.map_, nullptr)),
      map_bytes_(std::exchange(o.map_bytes_, 0)),
      populator_(std::move(o.populator_)) {}  // the mapping does not move, so neither need the thread

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& o) noexcept {
  if (this != &o) {
    release();
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    populator_ = std::move(o.populator_);
  }
  return *this;
}

bool AlignedBuffer::populate_in_background() {
#ifdef MADV_POPULATE_WRITE
  if (!map_ || populator_) return false;
  uint8_t* const begin = data_;
  const size_t bytes = (size_ + kHuge - 1) / kHuge * kHuge;  // the advised huge pages
  // One huge page now, on this thread: a kernel without the advice says EINVAL here, and then
  // there is no thread to start.
  const size_t first = std::min(bytes, kHuge);
  if (madvise(begin, first, MADV_POPULATE_WRITE) != 0) return false;
  if (first == bytes) return true;
  try {
    auto p = std::make_unique<Populator>();
    Populator* const raw = p.get();
    p->thread = std::thread([raw, begin, first, bytes] {
      for (size_t off = first; off < bytes && !raw->stop.load(std::memory_order_relaxed); off += kPopulateStep)
        if (madvise(begin + off, std::min(kPopulateStep, bytes - off), MADV_POPULATE_WRITE) != 0) return;
    });
    populator_ = std::move(p);
    return true;
  } catch (const std::system_error&) {  // no thread: pages fault in when first written
    return false;
  }
#else
  return false;
#endif
}

void AlignedBuffer::wait_populated() {
  if (populator_ && populator_->thread.joinable()) populator_->thread.join();
  populator_.reset();
}

void AlignedBuffer::stop_populating() {
  if (populator_) populator_->stop.store(true, std::memory_order_relaxed);
  wait_populated();
}

void AlignedBuffer::release() {
  stop_populating();  // before the mapping goes
  if (map_)
    munmap(map_, map_bytes_);
  else
    std::free(data_);
  data_ = nullptr;
  map_ = nullptr;
}

}  // namespace jetmoe
