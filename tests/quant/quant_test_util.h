// Shared helpers of the quantization tests.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "quant/qtypes.h"
#include "runtime/dtype.h"

namespace jetmoe::qtest {

inline std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

inline double rms(const float* x, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s / static_cast<double>(n));
}

inline double sq_err(const float* a, const float* b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    s += d * d;
  }
  return s;
}

// Decodes a quantized activation row (Q8_0 blocks, Q8_K blocks for Q4_K weights, BlockQ8_0Z for
// the interleaved Q8_0R / Q4_0R, BlockQ8_KS for Q4_KR) to floats.
inline std::vector<float> decode_activation(DType wtype, const void* xq, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n));
  if (wtype == DType::Q4_K) {
    const auto* b = static_cast<const BlockQ8_K*>(xq);
    for (int64_t i = 0; i < n; ++i) y[i] = b[i / kQK_K].d * static_cast<float>(b[i / kQK_K].qs[i % kQK_K]);
  } else if (wtype == DType::Q4_KR) {
    const auto* b = static_cast<const BlockQ8_KS*>(xq);
    for (int64_t i = 0; i < n; ++i) y[i] = b[i / kQK_K].d * static_cast<float>(b[i / kQK_K].qs[i % kQK_K]);
  } else if (wtype == DType::Q8_0R || wtype == DType::Q4_0R) {
    const auto* b = static_cast<const BlockQ8_0Z*>(xq);
    for (int64_t i = 0; i < n; ++i) y[i] = b[i / kQK8_0].d * static_cast<float>(b[i / kQK8_0].qs[i % kQK8_0]);
  } else {
    const auto* b = static_cast<const BlockQ8_0*>(xq);
    for (int64_t i = 0; i < n; ++i)
      y[i] = f16_to_f32(b[i / kQK8_0].d) * static_cast<float>(b[i / kQK8_0].qs[i % kQK8_0]);
  }
  return y;
}

}  // namespace jetmoe::qtest
