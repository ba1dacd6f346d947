#include "ops/cpu/vec_math.h"

#include <cmath>

namespace jetmoe {

void silu_mul_scalar(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

float exp_sum_scalar(float* p, int64_t n, float shift) {
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += (p[i] = std::exp(p[i] - shift));
  return sum;
}

const VecMathKernels& vec_math_kernels(CpuIsa isa) {
  static const VecMathKernels scalar{silu_mul_scalar, exp_sum_scalar};
  switch (isa) {
    case CpuIsa::Avx512: return vec_math_kernels_avx512();
    case CpuIsa::Avx2: return vec_math_kernels_avx2();
    default: return scalar;
  }
}

}  // namespace jetmoe
