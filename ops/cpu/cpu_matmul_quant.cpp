// CpuBackend::matmul for int8/int4 block-quantized weights: the activations are quantized once
// (int8 blocks), then each thread runs the integer kernels of quant/qdot.h over its share of the
// weight rows. Weights are never dequantized to float in memory.
#include <omp.h>

#include <algorithm>

#include "ops/cpu/cpu_backend.h"
#include "quant/qdot.h"

namespace jetmoe {

void CpuBackend::matmul_quantized(const float* x, int64_t T, const WeightView& W, float* y, int64_t ldy) {
  const int64_t rows = W.rows(), n = W.cols();
  const size_t arb = activation_row_bytes(W.dtype, n);
  act_q_.resize(arb * static_cast<size_t>(T));
  quantize_activation_rows(W.dtype, x, n, act_q_.data(), T, n);
  // Blocks of 32 rows: a multiple of every kernel's row tile, and enough blocks to balance threads.
  constexpr int64_t kBlock = 32;
  const int64_t nblocks = (rows + kBlock - 1) / kBlock;
  const uint8_t* xq = act_q_.data();
#pragma omp parallel for schedule(static) if (rows * n * T >= (1 << 16))
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t r0 = b * kBlock, r1 = std::min(rows, r0 + kBlock);
    if (T == 1)
      qmatvec(W.dtype, W.data, r0, r1, n, xq, y);
    else
      qmatmul(W.dtype, W.data, r0, r1, n, xq, T, y, ldy);
  }
}

}  // namespace jetmoe
