// The bundled real model against its golden.json (transformers, float32 from the bf16 weights):
// tokenizer ids exactly, log-probs within 1e-4, greedy ids identical, held-out perplexity.
#include <gtest/gtest.h>

#include <algorithm>
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

class AustenGolden : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    files_ = load_model_files(test::austen_model_dir().string()).release();
    golden_ = new nlohmann::json(test::read_json(test::austen_model_dir() / "golden.json"));
  }
  static void TearDownTestSuite() {
    delete files_;
    delete golden_;
  }
  static ModelFiles* files_;
  static nlohmann::json* golden_;
};
ModelFiles* AustenGolden::files_ = nullptr;
nlohmann::json* AustenGolden::golden_ = nullptr;

TEST_F(AustenGolden, TokenizerIdsAndPiecesExact) {
  const Tokenizer& tok = files_->require_tokenizer();
  for (const auto& c : (*golden_)["tokenizer"]) {
    const std::string text = c["text"];
    SCOPED_TRACE(text);
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>());
    std::vector<std::string> pieces;
    for (int32_t id : ids) pieces.push_back(tok.piece(id));
    EXPECT_EQ(pieces, c["pieces"].get<std::vector<std::string>>());
  }
}

TEST_F(AustenGolden, LogprobsWithin1e4) {
  CpuBackend be;
  JetMoeModel model(files_->config, files_->weights, be);
  const Tokenizer& tok = files_->require_tokenizer();
  const int V = files_->config.vocab_size;
  for (const auto& c : (*golden_)["logprobs"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode_prompt(c["text"]), ids);  // BOS + encode
    KvCache cache = model.make_cache(static_cast<int>(ids.size()));
    std::vector<float> logits;
    model.forward(ids, cache, logits, true);
    const auto want = c["token_logprobs"].get<std::vector<double>>();
    double sum = 0, worst = 0;
    for (size_t i = 1; i < ids.size(); ++i) {
      const auto ls = log_softmax(std::span<const float>(logits.data() + (i - 1) * V, static_cast<size_t>(V)));
      worst = std::max(worst, std::fabs(ls[static_cast<size_t>(ids[i])] - want[i - 1]));
      sum += ls[static_cast<size_t>(ids[i])];
    }
    EXPECT_LE(worst, 1e-4);
    EXPECT_NEAR(sum, c["sum_logprob"].get<double>(), 1e-3);
  }
}

TEST_F(AustenGolden, GreedyContinuationIdentical) {
  CpuBackend be;
  JetMoeModel model(files_->config, files_->weights, be);
  const int V = files_->config.vocab_size;
  for (const auto& g : (*golden_)["greedy"]) {
    const auto prompt = g["prompt_ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(files_->require_tokenizer().encode_prompt(g["prompt"]), prompt);
    const auto want = g["generated_ids"].get<std::vector<int32_t>>();
    KvCache cache = model.make_cache(static_cast<int>(prompt.size() + want.size()));
    std::vector<float> logits;
    model.forward(prompt, cache, logits, false);
    std::vector<int32_t> got;
    while (got.size() < want.size()) {
      const int32_t id = static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
      got.push_back(id);
      const int32_t one[1] = {id};
      model.forward(one, cache, logits, false);
    }
    EXPECT_EQ(got, want);
    EXPECT_EQ(files_->require_tokenizer().decode(got), g["generated_text"].get<std::string>());
  }
}

TEST_F(AustenGolden, HeldOutPerplexityWindows) {
  // llama-perplexity windowing, as golden.json describes: whole text encoded once (no BOS),
  // window w = tokens[w*ctx:(w+1)*ctx] with its first token replaced by BOS, second half scored.
  const auto& p = (*golden_)["perplexity"];
  std::ifstream in(test::test_data_dir() / "heldout-persuasion.txt", std::ios::binary);
  ASSERT_TRUE(in) << "tests/data/heldout-persuasion.txt";
  std::stringstream ss;
  ss << in.rdbuf();
  const auto tokens = files_->require_tokenizer().encode(ss.str());
  const int ctx = p["ctx"], windows = p["windows"];
  ASSERT_GE(tokens.size(), static_cast<size_t>(ctx * windows));
  CpuBackend be;
  JetMoeModel model(files_->config, files_->weights, be);
  const int V = files_->config.vocab_size;
  double nll = 0;
  int scored = 0;
  for (int w = 0; w < windows; ++w) {
    std::vector<int32_t> win(tokens.begin() + w * ctx, tokens.begin() + (w + 1) * ctx);
    win[0] = files_->config.bos_token_id;
    KvCache cache = model.make_cache(ctx);
    std::vector<float> logits;
    model.forward(win, cache, logits, true);
    for (int i = ctx / 2; i < ctx; ++i) {
      const auto ls = log_softmax(std::span<const float>(logits.data() + static_cast<size_t>(i - 1) * V, static_cast<size_t>(V)));
      nll -= ls[static_cast<size_t>(win[static_cast<size_t>(i)])];
      ++scored;
    }
  }
  EXPECT_EQ(scored, p["scored_tokens"].get<int>());
  EXPECT_NEAR(std::exp(nll / scored), p["ppl"].get<double>(), 1e-3 * p["ppl"].get<double>());
}

}  // namespace
