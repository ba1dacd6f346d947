// Only the experts the routers pick are ever computed: poison every expert no token selected
// (NaN weights) and the output must not change by a single bit; poison a selected one and it must.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "loader/hf_config.h"
#include "loader/memory_tensor_source.h"
#include "loader/model_files.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/jetmoe_model.h"
#include "support/test_paths.h"

using namespace jetmoe;

namespace {

struct ModelRun {
  std::vector<float> logits;
  RoutingTrace trace;
};

ModelRun run_model(const JetMoeConfig& cfg, const TensorSource& src, const std::vector<int32_t>& ids) {
  const JetMoeWeights w = bind_weights(cfg, src);
  CpuBackend be;
  JetMoeModel model(cfg, w, be);
  KvCache cache = model.make_cache(static_cast<int>(ids.size()));
  ModelRun r;
  // Prefill half, then decode one token at a time: both paths must skip unselected experts.
  const size_t half = ids.size() / 2;
  std::vector<float> part;
  model.forward(std::span<const int32_t>(ids.data(), half), cache, part, true, &r.trace);
  RoutingTrace all = r.trace;
  r.logits = part;
  for (size_t i = half; i < ids.size(); ++i) {
    RoutingTrace step;
    model.forward(std::span<const int32_t>(ids.data() + i, 1), cache, part, true, &step);
    r.logits.insert(r.logits.end(), part.begin(), part.end());
    for (size_t l = 0; l < all.moa.size(); ++l) {
      all.moa[l].insert(all.moa[l].end(), step.moa[l].begin(), step.moa[l].end());
      all.moe[l].insert(all.moe[l].end(), step.moe[l].begin(), step.moe[l].end());
    }
  }
  r.trace = all;
  return r;
}

// Sets every weight of expert e of a [E, out, in] tensor to NaN.
void poison_expert(MemoryTensorSource& m, const std::string& name, int e) {
  const TensorInfo* t = m.find(name);
  ASSERT_NE(t, nullptr) << name;
  const size_t per_expert = t->nbytes / static_cast<size_t>(t->shape[0]);
  uint8_t* p = m.mutable_data(name) + per_expert * static_cast<size_t>(e);
  if (t->dtype == DType::F32) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i < per_expert / 4; ++i) std::memcpy(p + 4 * i, &nan, 4);
  } else {  // BF16/F16: 0x7fff is a NaN in both
    for (size_t i = 0; i < per_expert / 2; ++i) p[2 * i] = 0xff, p[2 * i + 1] = 0x7f;
  }
}

TEST(RoutedExperts, UnselectedExpertsAreNeverRead) {
  for (const auto& dir : test::golden_checkpoints()) {
    SCOPED_TRACE(dir.filename().string());
    const auto g = test::read_json(dir / "golden.json");
    const auto files = load_model_files(dir.string());
    const JetMoeConfig& cfg = files->config;
    if (cfg.num_experts_per_tok >= cfg.num_local_experts) continue;
    const auto ids = g["sequences"][1]["token_ids"].get<std::vector<int32_t>>();  // 7 tokens: some experts idle

    auto clean = MemoryTensorSource::copy_of(*files->tensors);
    const ModelRun base = run_model(cfg, *clean, ids);

    auto poisoned = MemoryTensorSource::copy_of(*files->tensors);
    int n_poisoned = 0;
    for (int l = 0; l < cfg.num_hidden_layers; ++l) {
      const std::set<int32_t> moa(base.trace.moa[l].begin(), base.trace.moa[l].end());
      const std::set<int32_t> moe(base.trace.moe[l].begin(), base.trace.moe[l].end());
      for (int e = 0; e < cfg.num_local_experts; ++e) {
        if (!moa.count(e)) {
          poison_expert(*poisoned, layer_tensor_name(l, "self_attention.experts.input_linear.weight"), e);
          poison_expert(*poisoned, layer_tensor_name(l, "self_attention.experts.output_linear.weight"), e);
          ++n_poisoned;
        }
        if (!moe.count(e)) {
          poison_expert(*poisoned, layer_tensor_name(l, "mlp.input_linear.weight"), e);
          poison_expert(*poisoned, layer_tensor_name(l, "mlp.output_linear.weight"), e);
          ++n_poisoned;
        }
      }
    }
    if (n_poisoned == 0) continue;  // every expert used on this input: nothing to prove here
    const ModelRun after = run_model(cfg, *poisoned, ids);
    ASSERT_EQ(after.logits.size(), base.logits.size());
    EXPECT_EQ(0, std::memcmp(after.logits.data(), base.logits.data(), base.logits.size() * sizeof(float)))
        << n_poisoned << " idle experts were poisoned and the output changed";

    // The converse, so this test can fail: poisoning a selected expert must show up.
    auto hit = MemoryTensorSource::copy_of(*files->tensors);
    poison_expert(*hit, layer_tensor_name(0, "mlp.input_linear.weight"), base.trace.moe[0][0]);
    const ModelRun bad = run_model(cfg, *hit, ids);
    bool any_nan = false;
    for (float v : bad.logits) any_nan |= std::isnan(v);
    EXPECT_TRUE(any_nan);
  }
}

TEST(RoutedExperts, GatesFollowTopKOfRouterLogits) {
  // The trace lists exactly k distinct experts per token, in range.
  const auto dir = test::golden_checkpoints().front();
  const auto files = load_model_files(dir.string());
  const JetMoeConfig& cfg = files->config;
  const auto g = test::read_json(dir / "golden.json");
  const auto ids = g["sequences"][2]["token_ids"].get<std::vector<int32_t>>();
  const ModelRun r = run_model(cfg, *files->tensors, ids);
  for (const auto& layer : r.trace.moe) {
    ASSERT_EQ(layer.size(), ids.size() * static_cast<size_t>(cfg.num_experts_per_tok));
    for (size_t t = 0; t < ids.size(); ++t) {
      std::set<int32_t> s;
      for (int j = 0; j < cfg.num_experts_per_tok; ++j) {
        const int32_t e = layer[t * static_cast<size_t>(cfg.num_experts_per_tok) + static_cast<size_t>(j)];
        EXPECT_GE(e, 0);
        EXPECT_LT(e, cfg.num_local_experts);
        s.insert(e);
      }
      EXPECT_EQ(s.size(), static_cast<size_t>(cfg.num_experts_per_tok));
    }
  }
}

}  // namespace
