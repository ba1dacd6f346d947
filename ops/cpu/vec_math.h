// Elementwise exp-based kernels of decode's serial stretches, per ISA: the SwiGLU gate of the MLP
// experts and the exponentials of the attention softmax. A decode step computes 2 x 5632 gates
// per layer: through std::exp that was ~25 us per layer on the Xeon VM's two 2.3 GHz cores, with
// the memory bus idle meanwhile; the vector kernels take ~5 us. Likewise the softmax's
// 2 x kv_heads x context exponentials per layer.
#pragma once

#include <cstdint>

#include "ops/cpu/cpu_isa.h"

namespace jetmoe {

struct VecMathKernels {
  // out[i] = g[i] / (1 + exp(-g[i])) * u[i] for i < n.
  void (*silu_mul)(const float* g, const float* u, int64_t n, float* out);
  // p[i] = exp(p[i] - shift) for i < n; returns their sum (the softmax's denominator).
  float (*exp_sum)(float* p, int64_t n, float shift);
};

// The kernels of one ISA (must be in supported_isas()). Scalar: std::exp one value at a time, the
// reference the vector kernels are tested against. AVX2 / AVX-512: exp by range reduction and a
// polynomial (ops/cpu/vec_math_simd.h: within a few ulp of expf, +inf where expf overflows, so
// silu goes to -0 for very negative gates as with std::exp).
const VecMathKernels& vec_math_kernels(CpuIsa isa);

// Defined in vec_math_avx2.cpp / vec_math_avx512.cpp (compiled with those flags).
const VecMathKernels& vec_math_kernels_avx2();
const VecMathKernels& vec_math_kernels_avx512();

// The scalar kernels (also the vector kernels' tails).
void silu_mul_scalar(const float* g, const float* u, int64_t n, float* out);
float exp_sum_scalar(float* p, int64_t n, float shift);

}  // namespace jetmoe
