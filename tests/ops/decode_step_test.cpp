// CpuBackend inside a step, where one-token quantized loops run as DecodeRowLoops
// (ops/cpu/decode_row_loops.h; its own tests: decode_row_loops_test.cpp) with the real kernels:
// a worker stopped while it holds a piece (a test hook holds it, as the machine would) does not
// hold the loop back: the caller redoes the piece, the loop returns with every row right, later
// loops run while the worker is still stopped, and once it runs again it writes nothing late.
#include "ops/cpu/decode_row_loops.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/cpu/cpu_backend.h"
#include "quant/qdot.h"
#include "quant/quantize.h"
#include "quant/repack.h"
#include "support/held_worker.h"
#include "support/random_data.h"

namespace jetmoe {
namespace {

struct Matrix {
  std::vector<uint8_t> bytes;
  WeightView view;
};

Matrix make_matrix(DType file_type, int64_t rows, int64_t cols, uint64_t seed) {
  Matrix m;
  const auto f = test::randn(static_cast<size_t>(rows * cols), seed, 0.1f);
  const DType mt = cpu_memory_type(file_type, rows);
  m.bytes.resize(dtype_row_bytes(mt, static_cast<size_t>(cols)) * static_cast<size_t>(rows));
  quantize_tensor_rows(mt, f.data(), m.bytes.data(), rows, cols);
  m.view.name = "test";
  m.view.data = m.bytes.data();
  m.view.dtype = mt;
  m.view.shape = {rows, cols};
  return m;
}

// What one thread computes for the whole matrix.
std::vector<float> reference(const Matrix& m, const std::vector<float>& x) {
  const int64_t rows = m.view.rows(), cols = m.view.cols();
  std::vector<uint8_t> xq(activation_row_bytes(m.view.dtype, cols));
  quantize_activation_row(m.view.dtype, x.data(), xq.data(), cols);
  std::vector<float> y(static_cast<size_t>(rows));
  qmatvec(m.view.dtype, m.view.data, 0, rows, cols, xq.data(), y.data());
  return y;
}

TEST(DecodeStep, AStoppedWorkersPieceIsRedoneWithTheRealKernels) {
  if (omp_get_max_threads() < 2) GTEST_SKIP() << "needs two threads (OMP_NUM_THREADS)";
  const int64_t rows = 1024, cols = 2560;
  const Matrix m = make_matrix(DType::Q4_0, rows, cols, 11);
  CpuBackend be;
  test::HeldWorker hold;  // its watchdog lets the worker go after 10 s if a loop waited for it
  be.begin_step({1, 1, nullptr, true});

  // Loops until the worker takes a piece and the hook holds it there; that loop must still return.
  std::vector<float> x, y;
  int loops = 0;
  for (; loops < 2000 && !test::HeldWorker::holding(); ++loops) {
    x = test::randn(static_cast<size_t>(cols), 100 + static_cast<uint64_t>(loops));
    y.assign(static_cast<size_t>(rows), -7.0f);
    be.matmul(x.data(), 1, m.view, y.data(), rows);
  }
  ASSERT_TRUE(test::HeldWorker::holding()) << "after " << loops << " loops the worker was never held, or the loop waited for it";
  EXPECT_EQ(y, reference(m, x)) << "the loop whose piece was held";
  EXPECT_GE(be.redone_pieces(), 1);
  // The step goes on and uses y for something else: the worker must not write its piece there.
  std::fill(y.begin(), y.end(), -3.0f);

  // More loops while the worker is still stopped in its piece (in another slot), then after it
  // was let go (its slot free again).
  std::vector<std::vector<float>> xs, ys;
  for (int k = 0; k < 2 * DecodeRowLoops::kSlots; ++k) {
    if (k == DecodeRowLoops::kSlots) {
      EXPECT_TRUE(test::HeldWorker::holding()) << "the worker was let go before the loops while stopped ended";
      test::HeldWorker::release();
    }
    xs.push_back(test::randn(static_cast<size_t>(cols), 500 + static_cast<uint64_t>(k)));
    ys.emplace_back(static_cast<size_t>(rows), -7.0f);
    be.matmul(xs.back().data(), 1, m.view, ys.back().data(), rows);
    EXPECT_EQ(ys.back(), reference(m, xs.back())) << "loop " << k;
  }
  be.end_step(true);  // returns once the worker has left every slot

  EXPECT_EQ(y, std::vector<float>(static_cast<size_t>(rows), -3.0f)) << "the held loop's rows after the worker ran again";
  for (size_t k = 0; k < xs.size(); ++k) EXPECT_EQ(ys[k], reference(m, xs[k])) << "loop " << k << " afterwards";
}

}  // namespace
}  // namespace jetmoe
