// DecodeRowLoops (ops/cpu/decode_row_loops.h) on its own, with a row kernel of this file (so the
// thread sanitizer build of scripts/test.sh can run it without the quantized kernels): every row
// of every job is written once with the kernel's value over many loops; a worker held inside a
// piece (the test hook, as a stopped vCPU would) does not hold its loop back, and writes nothing
// after the loop ended; the caller's near-end call runs once per loop, on the caller.
#include "ops/cpu/decode_row_loops.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "support/held_worker.h"

namespace jetmoe {
namespace {

constexpr int64_t kCols = 256;  // one Q8_0 row: 8 blocks, 272 bytes

// The test's row kernel: out[r - r0] = sum over row r's bytes (as int8) times the activation
// bytes (as int8, cycled). Integer sums, so any split of the rows gives the same floats.
void byte_rows(const MatmulJob& j, const uint8_t* xq, int64_t r0, int64_t r1, float* out) {
  const size_t rb = dtype_row_bytes(j.dtype, static_cast<size_t>(j.cols));
  const auto* w = static_cast<const int8_t*>(j.w);
  for (int64_t r = r0; r < r1; ++r) {
    int64_t acc = 0;
    for (size_t i = 0; i < rb; ++i)
      acc += w[static_cast<size_t>(r) * rb + i] * static_cast<int8_t>(xq[i % static_cast<size_t>(j.cols)]);
    out[r - r0] = static_cast<float>(acc);
  }
}

struct Problem {
  std::vector<std::vector<int8_t>> w;
  std::vector<std::vector<float>> y;
  std::vector<uint8_t> act;  // kCols bytes per distinct input
  std::vector<size_t> act_off;
  std::vector<MatmulJob> jobs;

  Problem(const std::vector<int64_t>& rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const size_t rb = dtype_row_bytes(DType::Q8_0, kCols);
    act.resize(2 * kCols);
    for (auto& b : act) b = static_cast<uint8_t>(rng());
    for (size_t i = 0; i < rows.size(); ++i) {
      w.emplace_back(rb * static_cast<size_t>(rows[i]));
      for (auto& b : w.back()) b = static_cast<int8_t>(rng());
      y.emplace_back(static_cast<size_t>(rows[i]), -1.0f);
      MatmulJob j;
      j.T = 1;
      j.w = w.back().data();
      j.dtype = DType::Q8_0;
      j.rows = rows[i];
      j.cols = kCols;
      j.ldy = rows[i];
      jobs.push_back(j);
      act_off.push_back(i % 2 ? kCols : 0);  // two inputs, as the experts and kv_proj share one
    }
    for (size_t i = 0; i < jobs.size(); ++i) jobs[i].y = y[i].data();
  }
  std::vector<float> want(size_t i) const {
    std::vector<float> v(static_cast<size_t>(jobs[i].rows));
    byte_rows(jobs[i], act.data() + act_off[i], 0, jobs[i].rows, v.data());
    return v;
  }
  void run(DecodeRowLoops& loops, int threads, const WorkerTeam::Tail* near_end = nullptr) {
    for (auto& v : y) std::fill(v.begin(), v.end(), -1.0f);
    loops.run(jobs.data(), jobs.size(), {act.data(), act_off.data(), act.size()}, {threads, 16, 4096, 16384},
              {near_end, 8192});
  }
};

struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

TEST(DecodeRowLoops, EveryRowOnceInManyLoops) {
  for (int threads : {2, 3}) {
    ThreadCount tc(threads);
    DecodeRowLoops loops(&byte_rows);
    for (int k = 0; k < 60; ++k) {
      Problem p({16 * (1 + k % 37), 512, 16 * (k % 5)}, 1000 + static_cast<uint64_t>(k));
      int near_end_calls = 0;
      bool near_end_on_worker = false;
      const WorkerTeam::Tail near_end = [&] {
        ++near_end_calls;
        near_end_on_worker |= WorkerTeam::on_worker_thread();
      };
      p.run(loops, threads, &near_end);
      for (size_t i = 0; i < p.jobs.size(); ++i)
        ASSERT_EQ(p.y[i], p.want(i)) << threads << " threads, loop " << k << " job " << i;
      EXPECT_EQ(near_end_calls, 1);
      EXPECT_FALSE(near_end_on_worker);
      loops.wait_idle();  // a thread whose piece was redone may still read p's weights
    }
  }
}

TEST(DecodeRowLoops, AStoppedWorkersPieceIsRedoneAndNeverWrittenLate) {
  ThreadCount tc(2);
  test::HeldWorker hold;  // its watchdog lets the worker go after 10 s if a loop waited for it
  {
    DecodeRowLoops loops(&byte_rows);
    Problem p({512, 512, 64}, 7);
    int k = 0;
    for (; k < 2000 && !test::HeldWorker::holding(); ++k) p.run(loops, 2);
    ASSERT_TRUE(test::HeldWorker::holding()) << "after " << k << " loops the worker was never held, or the loop waited for it";
    for (size_t i = 0; i < p.jobs.size(); ++i) EXPECT_EQ(p.y[i], p.want(i)) << "the held loop, job " << i;
    EXPECT_GE(loops.redone_pieces(), 1);
    // The caller goes on and uses y for something else: the worker must not write there.
    for (auto& v : p.y) std::fill(v.begin(), v.end(), -3.0f);

    // Other loops while the worker is held (in another slot), then after it was let go.
    for (int m = 0; m < 2 * DecodeRowLoops::kSlots; ++m) {
      if (m == DecodeRowLoops::kSlots) {
        EXPECT_TRUE(test::HeldWorker::holding()) << "the worker was let go before the loops while held ended";
        test::HeldWorker::release();
      }
      Problem q({256, 128, 512}, 50 + static_cast<uint64_t>(m));
      q.run(loops, 2);
      for (size_t i = 0; i < q.jobs.size(); ++i) EXPECT_EQ(q.y[i], q.want(i)) << "loop " << m << " job " << i;
      if (m >= DecodeRowLoops::kSlots) loops.wait_idle();  // before q's weights go (the held one still reads p's)
    }
    loops.wait_idle();  // the worker has left every slot
    for (size_t i = 0; i < p.jobs.size(); ++i)
      EXPECT_EQ(p.y[i], std::vector<float>(p.y[i].size(), -3.0f)) << "the held loop's job " << i << " afterwards";
  }
}

TEST(DecodeRowLoops, TakesOnlyOneTokenQuantizedJobs) {
  MatmulJob j;
  j.T = 1;
  j.dtype = DType::Q4_0;
  j.rows = 64;
  j.cols = 64;
  EXPECT_TRUE(DecodeRowLoops::fits(&j, 1));
  EXPECT_FALSE(DecodeRowLoops::fits(&j, 0));
  j.T = 2;
  EXPECT_FALSE(DecodeRowLoops::fits(&j, 1));
  j.T = 1;
  j.dtype = DType::BF16;
  EXPECT_FALSE(DecodeRowLoops::fits(&j, 1));
  j.dtype = DType::Q8_0;
  j.rows = int64_t{1} << 28;  // a held piece names its rows in 28 bits
  EXPECT_FALSE(DecodeRowLoops::fits(&j, 1));
}

}  // namespace
}  // namespace jetmoe
