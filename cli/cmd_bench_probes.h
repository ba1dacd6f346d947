// The machine-side measurements `jetmoe bench` puts beside its model figures: the memory read
// bandwidth (the limit batch-1 decoding runs against) and a busy neighbour process (the
// robust-threading case: another program spinning on one core while we decode).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loader/aligned_buffer.h"

namespace jetmoe::cli {

// 1 GB = 1e9 bytes. median/min/max are those of the read loop with the highest median over the
// passes (`loop`); every loop's per-pass figures are in `loops`.
struct BandwidthResult {
  double median_gbps = 0, max_gbps = 0, min_gbps = 0;
  std::string loop;
  // The estimator of the tables before 2026-12-06: each pass's fastest loop, then the median of
  // those maxima (biased upwards by the noise of the loops that trail; kept for comparison).
  double per_pass_best_median_gbps = 0;
  struct Loop {
    std::string name;
    std::vector<double> gbps;  // per timed pass
  };
  std::vector<Loop> loops;
  int threads = 0;
  size_t buffer_bytes = 0;
  int passes = 0;
};

// The median of v (the mean of the middle two for an even count; 0 when empty). The bench's
// figures and the probe's use this one.
double median_of(std::vector<double> v);

// Fills median/min/max/loop and per_pass_best_median_gbps of r from r.loops (every loop with the
// same number of passes).
void summarize_read_loops(BandwidthResult& r);

// A streaming-read probe: sums a buffer far larger than the caches with the current OpenMP thread
// count, each thread reading one contiguous share (as the matvec kernels split weight rows). The
// buffer is owned memory like the weights (huge pages when large), and each pass counts the
// fastest of the read loops this CPU has (baseline, 32-byte loads with and without software
// prefetch, and 32-byte loads from two streams per thread); the result is the median of the loop
// whose median is highest.
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
