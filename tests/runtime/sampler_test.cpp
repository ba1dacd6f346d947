// Sampler (runtime/sampler.*) and log_softmax (runtime/logits.*).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "runtime/logits.h"
#include "runtime/sampler.h"

using namespace jetmoe;

namespace {

std::vector<float> random_logits(int n, uint32_t seed, float scale = 4.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(g);
  return v;
}

// No truncation at all: plain softmax sampling at the given temperature.
SamplingParams untruncated(float temperature, uint64_t seed) {
  SamplingParams p;
  p.temperature = temperature;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.seed = seed;
  return p;
}

int first_argmax(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

TEST(SamplerTest, GreedyIsArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  Sampler s(p, 1000);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(1000, seed);
    EXPECT_EQ(s.sample(logits, {}), first_argmax(logits));
  }
  Sampler ties(p, 4);
  const std::vector<float> tied = {1.0f, 3.0f, 3.0f, 2.0f};
  EXPECT_EQ(ties.sample(tied, {}), 1);  // lowest index among equal maxima
  p.temperature = -1.0f;
  Sampler negative(p, 4);
  EXPECT_EQ(negative.sample(tied, {}), 1);
}

TEST(SamplerTest, LogitsAreNotModifiedAndSizeIsChecked) {
  const auto logits = random_logits(100, 7);
  const auto copy = logits;
  SamplingParams p;
  p.seed = 1;
  p.repeat_penalty = 1.3f;
  Sampler s(p, 100);
  const std::vector<int> recent = {1, 2, 3};
  s.sample(logits, recent);
  EXPECT_EQ(logits, copy);
  EXPECT_THROW(s.sample(std::vector<float>(99, 0.0f), {}), std::invalid_argument);
}

TEST(SamplerTest, DeterministicForASeed) {
  const auto logits = random_logits(500, 3, 1.0f);
  SamplingParams p;  // default chain: top-k 40, top-p 0.95, min-p 0.05, temp 0.8
  p.seed = 1234;
  Sampler a(p, 500), b(p, 500);
  std::vector<int> ta, tb;
  for (int i = 0; i < 200; ++i) {
    ta.push_back(a.sample(logits, ta));
    tb.push_back(b.sample(logits, tb));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_EQ(a.seed(), 1234u);
  // reseed restarts the stream.
  a.reseed(1234);
  std::vector<int> tc;
  for (int i = 0; i < 200; ++i) tc.push_back(a.sample(logits, tc));
  EXPECT_EQ(ta, tc);
}

TEST(SamplerTest, DifferentSeedsDiffer) {
  const std::vector<float> flat(64, 0.0f);
  Sampler a(untruncated(1.0f, 1), 64), b(untruncated(1.0f, 2), 64);
  std::vector<int> ta, tb;
  for (int i = 0; i < 50; ++i) {
    ta.push_back(a.sample(flat, {}));
    tb.push_back(b.sample(flat, {}));
  }
  EXPECT_NE(ta, tb);
}

TEST(SamplerTest, RandomSeedSentinelIsResolved) {
  SamplingParams p;
  p.seed = kRandomSeed;
  Sampler s(p, 10);
  EXPECT_NE(s.seed(), kRandomSeed);
  EXPECT_NE(random_seed(), kRandomSeed);
}

TEST(SamplerTest, TopKOneIsGreedy) {
  auto p = untruncated(1.5f, 99);
  p.top_k = 1;
  Sampler s(p, 300);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(300, seed, 1.0f);
    EXPECT_EQ(s.sample(logits, {}), first_argmax(logits));
  }
}

TEST(SamplerTest, SmallTopPIsGreedy) {
  auto p = untruncated(1.0f, 5);
  p.top_p = 0.01f;
  Sampler s(p, 300);
  for (uint32_t seed = 0; seed < 20; ++seed) {
    const auto logits = random_logits(300, seed, 1.0f);
    EXPECT_EQ(s.sample(logits, {}), first_argmax(logits));
  }
}

TEST(SamplerTest, TopKRestrictsToTheKBest) {
  auto p = untruncated(1.0f, 11);
  p.top_k = 3;
  Sampler s(p, 6);
  const std::vector<float> logits = {0.0f, 1.0f, 0.5f, 0.9f, -1.0f, 0.8f};  // best three: 1, 3, 5
  for (int i = 0; i < 2000; ++i) {
    const int t = s.sample(logits, {});
    EXPECT_TRUE(t == 1 || t == 3 || t == 5) << t;
  }
}

TEST(SamplerTest, MinPDropsUnlikelyTokens) {
  // Probabilities 0.5, 0.3, 0.15, 0.05.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  auto p = untruncated(1.0f, 21);
  p.min_p = 0.2f;  // keep p >= 0.1: tokens 0, 1, 2
  Sampler s(p, 4);
  std::vector<int> count(4, 0);
  for (int i = 0; i < 5000; ++i) ++count[static_cast<size_t>(s.sample(logits, {}))];
  EXPECT_EQ(count[3], 0);
  EXPECT_GT(count[2], 0);
  p.min_p = 0.5f;  // keep p >= 0.25: tokens 0, 1
  Sampler s2(p, 4);
  std::fill(count.begin(), count.end(), 0);
  for (int i = 0; i < 5000; ++i) ++count[static_cast<size_t>(s2.sample(logits, {}))];
  EXPECT_EQ(count[2] + count[3], 0);
  EXPECT_GT(count[1], 0);
}

TEST(SamplerTest, RepeatPenaltyChangesArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repeat_penalty = 1.5f;
  Sampler s(p, 4);
  // Positive logit divided: 2.0 / 1.5 = 1.33 < 1.9.
  const std::vector<float> pos = {2.0f, 1.9f, 0.0f, -3.0f};
  EXPECT_EQ(s.sample(pos, {}), 0);
  const std::vector<int> recent0 = {0, 0, 0};  // repeats penalize once, not three times
  EXPECT_EQ(s.sample(pos, recent0), 1);
  // Negative logit multiplied: -1.0 * 1.5 = -1.5 < -1.2 (dividing would wrongly raise it).
  const std::vector<float> neg = {-1.0f, -1.2f, -5.0f, -6.0f};
  const std::vector<int> recent_neg = {0};
  EXPECT_EQ(s.sample(neg, recent_neg), 1);
  // Only the last repeat_last_n tokens count.
  p.repeat_last_n = 2;
  Sampler windowed(p, 4);
  const std::vector<int> old0 = {0, 2, 3};
  EXPECT_EQ(windowed.sample(pos, old0), 0);
  // Out-of-range ids in the history are ignored.
  const std::vector<int> junk = {-5, 99};
  EXPECT_EQ(s.sample(pos, junk), 0);
}

TEST(SamplerTest, EmpiricalFrequenciesMatchSoftmax) {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -1.0f, 0.3f, 1.2f};
  const int n = static_cast<int>(logits.size());
  std::vector<double> expected(logits.size());
  double z = 0;
  for (size_t i = 0; i < logits.size(); ++i) z += std::exp(static_cast<double>(logits[i]));
  for (size_t i = 0; i < logits.size(); ++i) expected[i] = std::exp(static_cast<double>(logits[i])) / z;

  Sampler s(untruncated(1.0f, 20240601), n);
  const int draws = 20000;
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++count[static_cast<size_t>(s.sample(logits, {}))];
  double chi2 = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double e = expected[i] * draws;
    chi2 += (count[i] - e) * (count[i] - e) / e;
  }
  // 7 degrees of freedom: P(chi2 > 24.3) = 0.001. The seed is fixed, so this cannot flake.
  EXPECT_LT(chi2, 24.3) << "chi-square " << chi2;
}

TEST(SamplerTest, TemperatureSharpens) {
  const std::vector<float> logits = {1.0f, 0.0f};
  Sampler cold(untruncated(0.25f, 8), 2), hot(untruncated(4.0f, 8), 2);
  int cold0 = 0, hot0 = 0;
  for (int i = 0; i < 4000; ++i) {
    cold0 += cold.sample(logits, {}) == 0;
    hot0 += hot.sample(logits, {}) == 0;
  }
  // p0 = 1/(1+e^-4) = 0.982 at T=0.25, 1/(1+e^-0.25) = 0.562 at T=4.
  EXPECT_NEAR(cold0 / 4000.0, 0.982, 0.015);
  EXPECT_NEAR(hot0 / 4000.0, 0.562, 0.03);
}

TEST(SamplerTest, NonFiniteLogits) {
  const float inf = std::numeric_limits<float>::infinity();
  Sampler s(untruncated(1.0f, 3), 4);
  const std::vector<float> some_masked = {-inf, 0.0f, -inf, std::nanf("")};
  for (int i = 0; i < 100; ++i) EXPECT_EQ(s.sample(some_masked, {}), 1);
  const std::vector<float> all_masked(4, -inf);
  EXPECT_EQ(s.sample(all_masked, {}), 0);
}

TEST(SamplerTest, LogSoftmaxMatchesDoubleReference) {
  const auto logits = random_logits(32000, 42, 5.0f);
  double max = -INFINITY;
  for (float x : logits) max = std::max(max, static_cast<double>(x));
  double sum = 0;
  for (float x : logits) sum += std::exp(static_cast<double>(x) - max);
  const double lse = max + std::log(sum);
  const auto out = log_softmax(logits);
  ASSERT_EQ(out.size(), logits.size());
  double prob_sum = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    EXPECT_NEAR(out[i], static_cast<double>(logits[i]) - lse, 1e-5) << i;
    prob_sum += std::exp(static_cast<double>(out[i]));
  }
  EXPECT_NEAR(prob_sum, 1.0, 1e-4);

  // Huge spreads neither overflow nor underflow to -inf/NaN.
  const std::vector<float> extreme = {1000.0f, 0.0f, -1000.0f};
  const auto e = log_softmax(extreme);
  EXPECT_NEAR(e[0], 0.0f, 1e-6);
  EXPECT_NEAR(e[1], -1000.0f, 1e-3);
  EXPECT_NEAR(e[2], -2000.0f, 1e-3);
  EXPECT_TRUE(log_softmax(std::vector<float>{}).empty());
  EXPECT_TRUE(std::isnan(log_softmax(std::vector<float>(3, -INFINITY))[0]));
}
