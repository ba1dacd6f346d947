#include "cli/cmd_bench_probes.h"

#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "quant/stream_prefetch.h"

namespace jetmoe::cli {

namespace {

// Contiguous share [begin, end) of n for thread t of nt, in whole 64-byte lines.
void thread_share(size_t n, int t, int nt, size_t* begin, size_t* end) {
  const size_t lines = n / 8;
  *begin = lines * static_cast<size_t>(t) / static_cast<size_t>(nt) * 8;
  *end = lines * static_cast<size_t>(t + 1) / static_cast<size_t>(nt) * 8;
}

// Eight independent accumulators: the adds never limit the loop, the loads do. Baseline flags.
uint64_t sum_range(const uint64_t* p, size_t begin, size_t end) {
  uint64_t a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = begin; i < end; i += 8)
    for (int k = 0; k < 8; ++k) a[k] += p[i + static_cast<size_t>(k)];
  uint64_t s = 0;
  for (uint64_t v : a) s += v;
  return s;
}

#if defined(__x86_64__)
// The same sum with 32-byte loads. On the Zen 5 test VM one thread read up to 1.6x faster this
// way than with the baseline loop (28-30 vs 18-19 GB/s from huge pages); the decode kernels use
// wide loads too, so a probe limited to the baseline loop would understate the limit.
// Prefetch = true adds a prefetch 4 KiB ahead into L2. On the Xeon test VM that read 12-15%
// faster than the loops without (one thread 15.0-15.7 vs 12.7-13.7 GB/s, two threads 30.9-31.3
// vs 27.0-28.1), and the decode kernels prefetch there (quant/stream_prefetch.h), so the probe
// must count it or the ratio would flatter them. PrefetchL1 = true asks for each line again 2 KiB
// ahead into L1, as the decode kernels have done since 2026-12-04 evening (quant/stream_prefetch.h):
// on the Xeon VM that loop read 3% more (median per-pass ratio 1.034 at one thread, 1.029 at
// two; q8_0 decode had read at 101-102% of the probe without it). Distance = 8192 and 16384 are
// the same loop further ahead (L1 at half): when the decode kernels' default went to 8 KiB
// (quant/stream_prefetch.h), this loop read 1-2% more at 8 KiB than at 4 KiB too (Xeon VM,
// median per-pass ratio 1.009 at one thread, 1.021 at two), so the probe tries those distances.
// Prefetch = false with PrefetchL1 = true asks for each line once, Distance / 2 ahead into L1
// alone: how the int8/int4 decode kernels stream on an Ice Lake Xeon since 2026-12-06
// (quant/stream_prefetch.h), so the probe reads that way too (tables before do not have it).
template <bool Prefetch, bool PrefetchL1 = false, size_t Distance = 4096>
__attribute__((target("avx2"))) uint64_t sum_range_avx2(const uint64_t* p, size_t begin, size_t end) {
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  for (size_t i = begin; i < end; i += 8) {
    if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(p + i) + Distance, _MM_HINT_T1);
    if constexpr (PrefetchL1) _mm_prefetch(reinterpret_cast<const char*>(p + i) + Distance / 2, _MM_HINT_T0);
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
  }
  alignas(32) uint64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), _mm256_add_epi64(a0, a1));
  return t[0] + t[1] + t[2] + t[3];
}

// The same 32-byte loads from two streams at once: each thread's share in halves, read line by
// line in turn (line i of the first half, line i of the second, ...). On the Zen 5 test VM this
// read 12-32% more than every loop above, in the same minutes (2 threads 45.0 vs 39.8 GB/s, 80.4
// vs 61.4 for the loops above at their best, one thread 40.0 vs 33.8): the hardware
// prefetchers keep more lines in flight for two streams than for one. The decode kernels stream
// one sequence of rows per thread, but the limit is what the machine can read, so the probe
// counts this loop too (2026-12-05; the tables before have the loops above only).
__attribute__((target("avx2"))) uint64_t sum_range_avx2_two_streams(const uint64_t* p, size_t begin, size_t end) {
  const size_t half = (end - begin) / 16 * 8;  // whole lines; an odd last line goes to the tail
  const uint64_t* q = p + half;
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = begin; i < begin + half; i += 8) {
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + i)));
    a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i*>(q + i + 4)));
  }
  alignas(32) uint64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
  uint64_t s = t[0] + t[1] + t[2] + t[3];
  for (size_t i = begin + 2 * half; i < end; ++i) s += p[i];  // the line left over, if any
  return s;
}

// One stream with prefetch 8 KiB ahead into L2 and, every 36 lines, one demand load of the line 2
// KiB ahead (not summed: touch_line), the kind of stream the Q4_0R decode kernel reads off Intel
// (quant/stream_prefetch.h, decode_stream: 4 KiB and 1 KiB there; in a plain loop the two pairs of
// distances read alike, 1.29-1.34x the two-stream loop in one run). On the Zen 5 test VM this read
// 0.95-1.42x as fast as the best loop above in the same minutes (2 threads, per-round ratios, 1 GiB
// of huge pages; 58-62 GB/s where the loops above read 41-44 at that moment, about even when they
// were at their fastest), where the same prefetch without the loads read 0.92-1.04x: the machine
// reads more than the loops above showed, so the probe counts this loop too (2026-12-05 afternoon;
// the tables before do not have it).
__attribute__((target("avx2"))) uint64_t sum_range_avx2_prefetch_touch(const uint64_t* p, size_t begin, size_t end) {
  constexpr size_t kPrefetch = 8192 / sizeof(uint64_t), kTouch = 2048 / sizeof(uint64_t);
  constexpr int kTouchEvery = 36;  // lines
  __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
  int line = 0;
  for (size_t i = begin; i < end; i += 8) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i + kPrefetch), _MM_HINT_T1);
    if (++line == kTouchEvery) {
      line = 0;
      if (i + kTouch < end) touch_line(p + i + kTouch);
    }
    a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
  }
  alignas(32) uint64_t t[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), _mm256_add_epi64(a0, a1));
  return t[0] + t[1] + t[2] + t[3];
}
#endif

using SumFn = uint64_t (*)(const uint64_t*, size_t, size_t);
struct SumLoop {
  const char* name;
  SumFn fn;
};

// The read loops the probe tries on this CPU; the one with the highest median counts.
std::vector<SumLoop> sum_loops() {
  std::vector<SumLoop> f = {{"baseline", sum_range}};
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) {
    f.push_back({"avx2", sum_range_avx2<false>});
    f.push_back({"avx2-prefetch4k", sum_range_avx2<true>});
    f.push_back({"avx2-prefetch4k-l1", sum_range_avx2<true, true>});
    f.push_back({"avx2-prefetch8k-l1", sum_range_avx2<true, true, 8192>});
    f.push_back({"avx2-prefetch16k-l1", sum_range_avx2<true, true, 16384>});
    f.push_back({"avx2-prefetch4k-l1-only", sum_range_avx2<false, true, 8192>});
    f.push_back({"avx2-two-streams", sum_range_avx2_two_streams});
    f.push_back({"avx2-prefetch-touch", sum_range_avx2_prefetch_touch});
  }
#endif
  return f;
}

}  // namespace

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

ReadBandwidthProbe::ReadBandwidthProbe(size_t bytes) {
  n_ = bytes / 64 * 8;
  if (n_ == 0) throw std::invalid_argument("the bandwidth probe needs a buffer of at least 64 bytes");
  buf_ = AlignedBuffer(n_ * sizeof(uint64_t));  // huge pages where large, like owned weights
  uint64_t* p = reinterpret_cast<uint64_t*>(buf_.data());
  const size_t n = n_;
#pragma omp parallel
  {
    size_t b, e;
    thread_share(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
    for (size_t i = b; i < e; ++i) p[i] = i;
  }
}

// Why the best loop's median and not each pass's best loop: the loops' timings are noisy, and a
// maximum over eight of them per pass picks the upward noise of whichever trails the leader by
// little. On the Zen 5 VM the prefetch-and-touch loop had the highest median in 11 of 11 probes
// of one run, and its median was 0.91-1.00 (median 0.97) of the per-pass maxima's median
// (docs/performance.md, the seventh Zen 5 session). Both are reported.
void summarize_read_loops(BandwidthResult& r) {
  r.median_gbps = r.min_gbps = r.max_gbps = r.per_pass_best_median_gbps = 0;
  r.loop.clear();
  const size_t passes = r.loops.empty() ? 0 : r.loops.front().gbps.size();
  for (const BandwidthResult::Loop& l : r.loops) {
    if (l.gbps.size() != passes) throw std::logic_error("bandwidth probe: loops with different pass counts");
    const double m = median_of(l.gbps);
    if (r.loop.empty() || m > r.median_gbps) {
      r.median_gbps = m;
      r.loop = l.name;
      r.min_gbps = *std::min_element(l.gbps.begin(), l.gbps.end());
      r.max_gbps = *std::max_element(l.gbps.begin(), l.gbps.end());
    }
  }
  std::vector<double> best(passes, 0.0);
  for (const BandwidthResult::Loop& l : r.loops)
    for (size_t i = 0; i < passes; ++i) best[i] = std::max(best[i], l.gbps[i]);
  r.per_pass_best_median_gbps = median_of(best);
}

BandwidthResult ReadBandwidthProbe::measure(int passes) {
  BandwidthResult r;
  r.threads = omp_get_max_threads();
  r.buffer_bytes = bytes();
  r.passes = passes;
  const uint64_t* p = reinterpret_cast<const uint64_t*>(buf_.data());
  const size_t n = n_;
  const std::vector<SumLoop> loops = sum_loops();
  for (const SumLoop& l : loops) r.loops.push_back({l.name, {}});
  const uint64_t expected = n % 2 == 0 ? (n / 2) * (n - 1) : n * ((n - 1) / 2);
  volatile uint64_t sink = 0;  // keeps the sums (and so the reads) alive
  for (int pass = -1; pass < passes; ++pass) {
    for (size_t li = 0; li < loops.size(); ++li) {
      const SumFn sum = loops[li].fn;
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
      {
        size_t b, e;
        thread_share(n, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
        total += sum(p, b, e);
      }
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      // Element i holds i, so a loop that read every line once sums to n (n - 1) / 2 (mod 2^64); one
      // that skipped lines would report a bandwidth the machine never gave.
      if (total != expected)
        throw std::logic_error(std::string("bandwidth probe: read loop ") + loops[li].name + " summed " +
                               std::to_string(total) + ", expected " + std::to_string(expected) + " (lines skipped or read twice)");
      sink = sink + total;
      if (pass >= 0) r.loops[li].gbps.push_back(static_cast<double>(bytes()) / s / 1e9);
    }
  }
  summarize_read_loops(r);
  return r;
}

BusyNeighbour::BusyNeighbour() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = CPU_SETSIZE - 1; c >= 0; --c)
      if (CPU_ISSET(c, &set)) {
        cpu_ = c;
        break;
      }
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error(std::string("cannot start the busy neighbour process: ") + std::strerror(errno));
  if (pid_ == 0) {
    // The child: pin to one core and spin until killed. Only async-signal-safe calls here (the
    // parent has OpenMP threads; their locks are not ours to touch).
    if (cpu_ >= 0) {
      cpu_set_t one;
      CPU_ZERO(&one);
      CPU_SET(cpu_, &one);
      sched_setaffinity(0, sizeof(one), &one);
    }
    volatile uint64_t spin = 0;
    for (;;) spin = spin + 1;
  }
}

BusyNeighbour::~BusyNeighbour() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
}

}  // namespace jetmoe::cli
