// Seeded random test data shared by the op tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace jetmoe::test {

// n samples of N(0, scale^2); the same seed gives the same data (with the same standard library).
inline std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

}  // namespace jetmoe::test
