#include "support/golden_checks.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/logits.h"
#include "support/test_paths.h"

namespace jetmoe::test {
namespace {

int argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

}  // namespace

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

void expect_golden_sequences(JetMoeModel& model, const std::filesystem::path& dir, const nlohmann::json& g) {
  const int V = model.config().vocab_size;
  for (const auto& seq : g["sequences"]) {
    const std::vector<int32_t> ids = seq["token_ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("length " + std::to_string(ids.size()));
    KvCache cache = model.make_cache(static_cast<int>(ids.size()));
    std::vector<float> logits;
    model.forward(ids, cache, logits, true);
    const std::vector<float> want = read_golden_array(dir, seq["all_logits"]);
    ASSERT_EQ(logits.size(), want.size());
    EXPECT_LE(max_abs_diff(logits.data(), want.data(), want.size()), 1e-4f);
    const auto last = seq["last_logits"].get<std::vector<float>>();
    EXPECT_LE(max_abs_diff(logits.data() + (ids.size() - 1) * V, last.data(), last.size()), 1e-4f);
    EXPECT_EQ(argmax(logits.data() + (ids.size() - 1) * V, V), seq["last_argmax"].get<int>());
    const auto want_lp = seq["token_logprobs"].get<std::vector<double>>();
    double sum = 0, worst = 0;
    for (size_t i = 1; i < ids.size(); ++i) {
      const auto ls = log_softmax(std::span<const float>(logits.data() + (i - 1) * V, static_cast<size_t>(V)));
      const double lp = ls[static_cast<size_t>(ids[i])];
      worst = std::max(worst, std::fabs(lp - want_lp[i - 1]));
      sum += lp;
    }
    EXPECT_LE(worst, 1e-4);
    EXPECT_NEAR(sum, seq["sum_logprob"].get<double>(), 1e-3);
  }
}

void expect_golden_greedy(JetMoeModel& model, const std::filesystem::path& dir, const nlohmann::json& g) {
  const int V = model.config().vocab_size;
  const auto& gr = g["greedy"];
  const auto prompt = gr["prompt_ids"].get<std::vector<int32_t>>();
  const auto want_ids = gr["generated_ids"].get<std::vector<int32_t>>();
  const std::vector<float> want_logits = read_golden_array(dir, gr["step_logits"]);
  KvCache cache = model.make_cache(static_cast<int>(prompt.size() + want_ids.size()));
  std::vector<float> logits;
  model.forward(prompt, cache, logits, false);
  std::vector<int32_t> got;
  for (size_t i = 0; i < want_ids.size(); ++i) {
    EXPECT_LE(max_abs_diff(logits.data(), want_logits.data() + i * V, static_cast<size_t>(V)), 1e-4f) << "step " << i;
    const int32_t id = argmax(logits.data(), V);
    got.push_back(id);
    const int32_t one[1] = {id};
    model.forward(one, cache, logits, false);
  }
  EXPECT_EQ(got, want_ids);
}

}  // namespace jetmoe::test
