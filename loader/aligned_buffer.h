// Owned, zeroed, writable memory for weights the runtime holds itself (quantized at load,
// synthetic, edited in tests) and for KV caches: 64-byte aligned, so rows whose size is a
// multiple of 64 bytes start on cache lines; large buffers are 2 MiB aligned and marked
// MADV_HUGEPAGE, so streaming gigabytes per token does not take a TLB miss every 4 KiB. Large
// buffers are anonymous mappings: their pages become resident only when first written, or ahead
// of that in the background (populate_in_background).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace jetmoe {

class AlignedBuffer {
 public:
  AlignedBuffer() noexcept;  // empty (out of line: Populator is complete only in the .cpp)
  explicit AlignedBuffer(size_t nbytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& o) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

  // Starts making a large buffer's pages resident on a thread of its own (MADV_POPULATE_WRITE,
  // Linux 5.14+, a few MiB at a time) and returns at once; true if the pages are or are being
  // made resident. False for small buffers (already zeroed, so resident), while a population
  // started earlier still runs, when the kernel lacks the advice, or when no thread could be
  // started: then pages become resident when first written, as without the call. The contents are not changed (zero until written), and writes
  // may go on meanwhile: the advice only faults in pages that are not there yet.
  // Why: a page's first write pays a fault that zeroes it, and where a whole buffer is written at
  // once (a KV cache's first token touches every layer's and head's rows) those faults add up: on
  // the Zen 5 test VM a 805 MB f16 cache (JetMoE-8B, 4096 positions) took up to 1.5 s to fault in
  // at the first token. The destructor and move-assignment stop the thread and wait for it.
  bool populate_in_background();
  // Waits for a population populate_in_background started (at once if none runs).
  void wait_populated();

 private:
  struct Populator;
  void release();
  void stop_populating();
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // the whole mapping when mmapped (huge-page path), else null
  size_t map_bytes_ = 0;
  std::unique_ptr<Populator> populator_;  // the background population, while one may run
};

}  // namespace jetmoe
