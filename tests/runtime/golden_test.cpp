// The forward pass against transformers' outputs on every golden checkpoint, on every CPU kernel
// path this machine has: all-position logits, log-probs, greedy ids, and the KV-cached decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "loader/model_files.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_isa.h"
#include "runtime/jetmoe_model.h"
#include "runtime/logits.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using namespace jetmoe;

namespace {

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

int argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

class GoldenTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override { set_active_isa(GetParam()); }
  void TearDown() override { set_active_isa(detect_best_isa()); }
};

TEST_P(GoldenTest, AllPositionLogitsAndLogprobs) {
  for (const fs::path& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    const auto g = test::read_json(dir / "golden.json");
    auto files = load_model_files(dir.string());
    CpuBackend be;
    JetMoeModel model(files->config, files->weights, be);
    const int V = files->config.vocab_size;
    for (const auto& seq : g["sequences"]) {
      const std::vector<int32_t> ids = seq["token_ids"].get<std::vector<int32_t>>();
      SCOPED_TRACE("length " + std::to_string(ids.size()));
      KvCache cache = model.make_cache(static_cast<int>(ids.size()));
      std::vector<float> logits;
      model.forward(ids, cache, logits, true);
      const std::vector<float> want = test::read_golden_array(dir, seq["all_logits"]);
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
}

TEST_P(GoldenTest, GreedyDecodeWithKvCache) {
  for (const fs::path& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    const auto g = test::read_json(dir / "golden.json");
    auto files = load_model_files(dir.string());
    CpuBackend be;
    JetMoeModel model(files->config, files->weights, be);
    const int V = files->config.vocab_size;
    const auto& gr = g["greedy"];
    const auto prompt = gr["prompt_ids"].get<std::vector<int32_t>>();
    const auto want_ids = gr["generated_ids"].get<std::vector<int32_t>>();
    const std::vector<float> want_logits = test::read_golden_array(dir, gr["step_logits"]);
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
}

TEST_P(GoldenTest, DecodeWithCacheEqualsFullForward) {
  for (const fs::path& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    const auto g = test::read_json(dir / "golden.json");
    auto files = load_model_files(dir.string());
    CpuBackend be;
    JetMoeModel model(files->config, files->weights, be);
    const int V = files->config.vocab_size;
    const auto ids = g["sequences"].back()["token_ids"].get<std::vector<int32_t>>();
    KvCache full_cache = model.make_cache(static_cast<int>(ids.size()));
    std::vector<float> full;
    model.forward(ids, full_cache, full, true);
    // Mixed chunking: a 5-token prefill, then single tokens, then a 3-token chunk, ...
    KvCache cache = model.make_cache(static_cast<int>(ids.size()));
    std::vector<float> step;
    size_t i = 0;
    float worst = 0;
    while (i < ids.size()) {
      const size_t n = std::min(ids.size() - i, i == 0 ? size_t{5} : (i % 7 == 0 ? size_t{3} : size_t{1}));
      model.forward(std::span<const int32_t>(ids.data() + i, n), cache, step, true);
      worst = std::max(worst, max_abs_diff(step.data(), full.data() + i * V, n * V));
      i += n;
    }
    EXPECT_LE(worst, 1e-4f);
    EXPECT_EQ(cache.size(), static_cast<int>(ids.size()));
  }
}

INSTANTIATE_TEST_SUITE_P(EveryIsa, GoldenTest, ::testing::ValuesIn(supported_isas()),
                         [](const ::testing::TestParamInfo<CpuIsa>& i) { return std::string(isa_name(i.param)); });

}  // namespace
