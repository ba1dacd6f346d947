// Owned, zeroed, writable memory for weights the runtime holds itself (quantized at load,
// synthetic, edited in tests) and for KV caches: 64-byte aligned, so rows whose size is a
// multiple of 64 bytes start on cache lines; large buffers are 2 MiB aligned and marked
// MADV_HUGEPAGE, so streaming gigabytes per token does not take a TLB miss every 4 KiB. Large
// buffers are anonymous mappings: their pages become resident only when first written.
#pragma once

#include <cstddef>
#include <cstdint>

namespace jetmoe {

class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t nbytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  void release();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // the whole mapping when mmapped (huge-page path), else null
  size_t map_bytes_ = 0;
};

}  // namespace jetmoe
