// The kernels of ops/cpu/vec_math.h written once over a vector-traits type (ops/cpu/simd_avx2.h,
// simd_avx512.h); included only by vec_math_avx2.cpp and vec_math_avx512.cpp, each compiled with
// its own flags.
#pragma once

#include <cmath>
#include <limits>

#include "ops/cpu/vec_math.h"

namespace jetmoe {
namespace {

// e^x: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (ln2 in two parts, so r is
// exact to float precision), e^r by the Cephes expf polynomial, times 2^n as two powers of two
// built in the exponent bits (each stays a normal float for every n of the clamped range, so
// the product rounds into the denormals as expf does). x is clamped to [-104, 88.72]: below,
// e^x is under half the smallest denormal; above 88.72283 (where expf overflows) it is +inf.
template <class V>
typename V::vec exp_approx(typename V::vec x) {
  const auto big = V::greater(x, V::set1(88.72283f));
  x = V::min(V::max(x, V::set1(-104.0f)), V::set1(88.72283f));
  const auto n = V::round(V::mul(x, V::set1(1.44269504088896341f)));
  auto r = V::fma(n, V::set1(-0.693359375f), x);
  r = V::fma(n, V::set1(2.12194440e-4f), r);
  auto p = V::set1(1.9875691500e-4f);
  p = V::fma(p, r, V::set1(1.3981999507e-3f));
  p = V::fma(p, r, V::set1(8.3334519073e-3f));
  p = V::fma(p, r, V::set1(4.1665795894e-2f));
  p = V::fma(p, r, V::set1(1.6666665459e-1f));
  p = V::fma(p, r, V::set1(5.0000001201e-1f));
  p = V::fma(p, V::mul(r, r), V::add(r, V::set1(1.0f)));
  const auto half = V::round(V::mul(n, V::set1(0.5f)));  // n = half + (n - half), both in [-75, 64]
  p = V::scale_pow2(V::scale_pow2(p, half), V::sub(n, half));
  return V::blend(p, V::set1(std::numeric_limits<float>::infinity()), big);
}

template <class V>
void silu_mul_simd(const float* g, const float* u, int64_t n, float* out) {
  constexpr int64_t W = V::width;
  const auto one = V::set1(1.0f);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const auto gv = V::load(g + i);
    const auto e = exp_approx<V>(V::sub(V::zero(), gv));
    V::store(out + i, V::mul(V::div(gv, V::add(one, e)), V::load(u + i)));
  }
  silu_mul_scalar(g + i, u + i, n - i, out + i);
}

template <class V>
float exp_sum_simd(float* p, int64_t n, float shift) {
  constexpr int64_t W = V::width;
  const auto s = V::set1(shift);
  auto acc = V::zero();
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    const auto e = exp_approx<V>(V::sub(V::load(p + i), s));
    V::store(p + i, e);
    acc = V::add(acc, e);
  }
  return V::hsum(acc) + exp_sum_scalar(p + i, n - i, shift);
}

template <class V>
const VecMathKernels& vec_math_table() {
  static const VecMathKernels k{silu_mul_simd<V>, exp_sum_simd<V>};
  return k;
}

}  // namespace
}  // namespace jetmoe
