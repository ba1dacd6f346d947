// What a compact KV cache (F16, BF16, Q8_0) costs on the bundled real model, against the
// transformers reference in its golden.json: the held-out perplexity with the prompt path (whole
// windows at once) and with the decode path (one token per forward call, as generation runs).
// The bounds are the quality each type is offered with in --help and docs/: a cache that stored
// or widened rows wrongly moves perplexity by whole units, not by these fractions of a percent.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "loader/model_files.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/jetmoe_model.h"
#include "runtime/logits.h"
#include "support/test_paths.h"

using namespace jetmoe;

namespace {

class CompactKvCacheQuality : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = load_model_files(test::austen_model_dir().string()).release();
    golden_ = new nlohmann::json(test::read_json(test::austen_model_dir() / "golden.json"));
    std::ifstream in(test::test_data_dir() / "heldout-persuasion.txt", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    tokens_ = new std::vector<int32_t>(files_->require_tokenizer().encode(ss.str()));
  }
  static void TearDownTestSuite() {
    delete files_;
    delete golden_;
    delete tokens_;
  }

  // Perplexity of the golden windows (llama-perplexity rule, see austen_golden_test.cpp) with the
  // given cache types; `windows` of them; decode: one forward call per token.
  static double perplexity(KvCacheTypes types, int windows, bool decode) {
    CpuBackend be;
    JetMoeModel model(files_->config, files_->weights, be);
    model.set_cache_types(types);
    const int ctx = (*golden_)["perplexity"]["ctx"], V = files_->config.vocab_size;
    double nll = 0;
    int scored = 0;
    std::vector<float> logits, all(static_cast<size_t>(ctx) * V);
    for (int w = 0; w < windows; ++w) {
      std::vector<int32_t> win(tokens_->begin() + w * ctx, tokens_->begin() + (w + 1) * ctx);
      win[0] = files_->config.bos_token_id;
      KvCache cache = model.make_cache(ctx);
      if (decode) {
        for (int i = 0; i < ctx; ++i) {
          model.forward(std::span<const int32_t>(&win[static_cast<size_t>(i)], 1), cache, logits, false);
          std::copy(logits.begin(), logits.begin() + V, all.begin() + static_cast<size_t>(i) * V);
        }
      } else {
        model.forward(win, cache, all, true);
      }
      for (int i = ctx / 2; i < ctx; ++i) {
        const auto ls = log_softmax(std::span<const float>(all.data() + static_cast<size_t>(i - 1) * V, static_cast<size_t>(V)));
        nll -= ls[static_cast<size_t>(win[static_cast<size_t>(i)])];
        ++scored;
      }
    }
    return std::exp(nll / scored);
  }

  static ModelFiles* files_;
  static nlohmann::json* golden_;
  static std::vector<int32_t>* tokens_;
};
ModelFiles* CompactKvCacheQuality::files_ = nullptr;
nlohmann::json* CompactKvCacheQuality::golden_ = nullptr;
std::vector<int32_t>* CompactKvCacheQuality::tokens_ = nullptr;

// Prompt path, all 24 windows: F32 is the reference itself (1e-3 relative, as in
// austen_golden_test.cpp); measured on this model: F16 +4.5e-5, BF16 -5.0e-5, Q8_0 +3.5e-4
// relative (llama.cpp reports q8_0 caches within a few 1e-4 of f16 too).
TEST_F(CompactKvCacheQuality, PromptPerplexityWithinEachTypesBound) {
  const int windows = (*golden_)["perplexity"]["windows"];
  const double ref = (*golden_)["perplexity"]["ppl"];
  const struct {
    DType t;
    double rel;
  } cases[] = {{DType::F32, 1e-3}, {DType::F16, 2e-4}, {DType::BF16, 2e-4}, {DType::Q8_0, 1.5e-3}};
  for (const auto& c : cases) {
    const double p = perplexity({c.t, c.t}, windows, false);
    EXPECT_LE(std::fabs(p / ref - 1), c.rel) << dtype_name(c.t) << ": " << p << " vs " << ref;
  }
  // Keys and values separately: each alone costs no more than both together.
  const double kq = perplexity({DType::Q8_0, DType::F32}, windows, false);
  const double vq = perplexity({DType::F32, DType::Q8_0}, windows, false);
  EXPECT_LE(std::fabs(kq / ref - 1), 1.5e-3);
  EXPECT_LE(std::fabs(vq / ref - 1), 1.5e-3);
}

// Decode path (the chunked attention over compact rows, one token per call) against the F32
// cache on the same path, with the same bounds. (With F32 the two paths agree to 1e-5; a compact
// type lets the few values that sit on a rounding boundary round either way, since prompt and
// decode compute keys in a different order, so the paths differ by up to a third of the type's
// own cost, e.g. 1e-4 for Q8_0. Each path is checked to 2e-5 over identical cache contents in
// tests/ops/kv_cache_test.cpp.)
TEST_F(CompactKvCacheQuality, DecodePathWithinEachTypesBound) {
  const double f32_decode = perplexity({DType::F32, DType::F32}, 4, true);
  EXPECT_LE(std::fabs(f32_decode / perplexity({DType::F32, DType::F32}, 4, false) - 1), 1e-5);
  const struct {
    DType t;
    double rel;
  } cases[] = {{DType::F16, 2e-4}, {DType::BF16, 2e-4}, {DType::Q8_0, 1.5e-3}};
  for (const auto& c : cases) {
    const double p = perplexity({c.t, c.t}, 4, true);
    EXPECT_LE(std::fabs(p / f32_decode - 1), c.rel) << dtype_name(c.t) << ": " << p << " vs " << f32_decode;
  }
}

}  // namespace
