// The machine-side measurements `jetmoe bench` puts beside its model figures: the memory read
// bandwidth (the limit batch-1 decoding runs against) and a busy neighbour process (the
// robust-threading case: another program spinning on one core while we decode).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "loader/aligned_buffer.h"

namespace jetmoe::cli {

struct BandwidthResult {
  double median_gbps = 0, max_gbps = 0, min_gbps = 0;  // 1 GB = 1e9 bytes
  int threads = 0;
  size_t buffer_bytes = 0;
  int passes = 0;
};

// A streaming-read probe: sums a buffer far larger than the caches with the current OpenMP thread
// count, each thread reading one contiguous share (as the matvec kernels split weight rows). The
// buffer is owned memory like the weights (huge pages when large), and each pass counts the
// fastest of the read loops this CPU has (baseline, 32-byte loads with and without software
// prefetch, and 32-byte loads from two streams per thread).
class ReadBandwidthProbe {
 public:
  // Allocates and first-touches `bytes` (rounded down to 64-byte lines) in parallel, so every page
  // is resident before timing starts.
  explicit ReadBandwidthProbe(size_t bytes);
  size_t bytes() const { return n_ * sizeof(uint64_t); }
  // One untimed pass, then `passes` timed full reads; GB/s of each.
  BandwidthResult measure(int passes);

 private:
  AlignedBuffer buf_;
  size_t n_ = 0;
};

// Forks a child that spins on one CPU (the last one this process may run on) until the object is
// destroyed; the child is killed and reaped then. Not copyable.
class BusyNeighbour {
 public:
  BusyNeighbour();
  ~BusyNeighbour();
  BusyNeighbour(const BusyNeighbour&) = delete;
  BusyNeighbour& operator=(const BusyNeighbour&) = delete;
  int cpu() const { return cpu_; }

 private:
  pid_t pid_ = -1;
  int cpu_ = -1;
};

}  // namespace jetmoe::cli
