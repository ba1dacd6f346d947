// The forward pass against transformers' outputs on every golden checkpoint, on every CPU kernel
// path this machine has: all-position logits, log-probs, greedy ids, and the KV-cached decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "loader/model_files.h"
#include "ops/cpu/cpu_backend.h"
#include "ops/cpu/cpu_isa.h"
#include "runtime/jetmoe_model.h"
#include "support/golden_checks.h"
#include "support/test_paths.h"

namespace fs = std::filesystem;
using namespace jetmoe;

namespace {

using test::max_abs_diff;

class GoldenTest : public ::testing::TestWithParam<CpuIsa> {
 protected:
  void SetUp() override { set_active_isa(GetParam()); }
  void TearDown() override { set_active_isa(detect_best_isa()); }
};

TEST_P(GoldenTest, AllPositionLogitsAndLogprobs) {
  for (const fs::path& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    auto files = load_model_files(dir.string());
    CpuBackend be;
    JetMoeModel model(files->config, files->weights, be);
    test::expect_golden_sequences(model, dir, test::read_json(dir / "golden.json"));
  }
}

TEST_P(GoldenTest, GreedyDecodeWithKvCache) {
  for (const fs::path& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    auto files = load_model_files(dir.string());
    CpuBackend be;
    JetMoeModel model(files->config, files->weights, be);
    test::expect_golden_greedy(model, dir, test::read_json(dir / "golden.json"));
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
