// Batch scoring: packing many sequences into one forward pass and sliding windows over long ones
// give the same log-probabilities as scoring each sequence alone with a full forward.
#include <gtest/gtest.h>

#include <cmath>

#include "loader/model_files.h"
#include "ops/cpu/cpu_backend.h"
#include "runtime/logits.h"
#include "runtime/scorer.h"
#include "support/test_paths.h"

using namespace jetmoe;

namespace {

// log p(tokens[i] | tokens[<i]) for i >= 1 with one plain forward over the whole sequence.
std::vector<double> reference_logprobs(JetMoeModel& m, const std::vector<int32_t>& ids) {
  KvCache cache = m.make_cache(static_cast<int>(ids.size()));
  std::vector<float> logits;
  m.forward(ids, cache, logits, true);
  const int V = m.config().vocab_size;
  std::vector<double> out;
  for (size_t i = 1; i < ids.size(); ++i)
    out.push_back(log_softmax(std::span<const float>(logits.data() + (i - 1) * V, static_cast<size_t>(V)))[static_cast<size_t>(ids[i])]);
  return out;
}

class ScorerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files = load_model_files(test::austen_model_dir().string());
    model = std::make_unique<JetMoeModel>(files->config, files->weights, be);
  }
  std::unique_ptr<ModelFiles> files;
  CpuBackend be;
  std::unique_ptr<JetMoeModel> model;
};

TEST_F(ScorerTest, PackedBatchEqualsScoringEachAlone) {
  const Tokenizer& tok = files->require_tokenizer();
  const std::vector<std::string> texts = {"It is a truth universally acknowledged.", "Emma Woodhouse, handsome, clever, and rich.",
                                          "Yes.", "The Dashwoods were a family of long standing in Sussex, and their estate was large."};
  std::vector<ScoreRequest> reqs;
  for (const auto& t : texts) reqs.push_back({tok.encode_prompt(t), 1});
  ScorerOptions so;
  so.per_token = true;
  so.batch_tokens = 64;  // forces several batches, each packing several sequences
  Scorer scorer(*model, so);
  const auto scores = scorer.score(reqs);
  for (size_t r = 0; r < reqs.size(); ++r) {
    const auto want = reference_logprobs(*model, reqs[r].tokens);
    ASSERT_EQ(scores[r].tokens.size(), want.size());
    double sum = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(scores[r].tokens[i].logprob, want[i], 1e-4) << texts[r] << " token " << i;
      sum += want[i];
    }
    EXPECT_NEAR(scores[r].sum_logprob, sum, 1e-3);
    EXPECT_EQ(scores[r].tokens_scored, static_cast<int64_t>(want.size()));
  }
}

TEST_F(ScorerTest, SlidingWindowScoresEveryTokenOnceWithContext) {
  const auto ids = files->require_tokenizer().encode_prompt(
      "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who, for his own amusement, never took up any "
      "book but the Baronetage; there he found occupation for an idle hour, and consolation in a distressed one.");
  const int W = 16, S = 5;
  ScorerOptions so;
  so.window = W;
  so.stride = S;
  so.per_token = true;
  Scorer scorer(*model, so);
  const auto s = scorer.score({ScoreRequest{ids, 1}}).front();
  ASSERT_EQ(s.tokens_scored, static_cast<int64_t>(ids.size() - 1));
  // Independent reference of the same windowing: windows start at 0, S, 2S, ...; each scores the
  // tokens past the previous window's end.
  size_t next = 1;
  for (size_t begin = 0;; begin += S) {
    const size_t end = std::min(begin + W, ids.size());
    if (end > next) {
      const std::vector<int32_t> win(ids.begin() + static_cast<std::ptrdiff_t>(begin), ids.begin() + static_cast<std::ptrdiff_t>(end));
      const auto lp = reference_logprobs(*model, win);
      for (size_t i = std::max(next, begin + 1); i < end; ++i) {
        EXPECT_NEAR(s.tokens[i - 1].logprob, lp[i - begin - 1], 1e-4) << "token " << i;
        EXPECT_EQ(s.tokens[i - 1].id, ids[i]);
      }
      next = end;
    }
    if (end == ids.size()) break;
  }
}

TEST_F(ScorerTest, ContinuationScoringAndGreedyFlag) {
  // The greedy continuation of the golden prompt is, by definition, greedy.
  const auto g = test::read_json(test::austen_model_dir() / "golden.json")["greedy"][0];
  std::vector<int32_t> ids = g["prompt_ids"].get<std::vector<int32_t>>();
  const size_t ctx = ids.size();
  const auto gen = g["generated_ids"].get<std::vector<int32_t>>();
  ids.insert(ids.end(), gen.begin(), gen.begin() + 8);
  ScorerOptions so;
  Scorer scorer(*model, so);
  auto alt = ids;
  alt.back() = (alt.back() + 1) % files->config.vocab_size;
  const auto s = scorer.score({ScoreRequest{ids, ctx}, ScoreRequest{alt, ctx}});
  EXPECT_EQ(s[0].tokens_scored, 8);
  EXPECT_TRUE(s[0].all_greedy);
  EXPECT_FALSE(s[1].all_greedy);
  const auto ref = reference_logprobs(*model, ids);
  double want = 0;
  for (size_t i = ctx; i < ids.size(); ++i) want += ref[i - 1];
  EXPECT_NEAR(s[0].sum_logprob, want, 1e-3);
}

TEST_F(ScorerTest, TopKAlternativesAreSortedAndIncludeTheArgmax) {
  ScorerOptions so;
  so.per_token = true;
  so.top_k = 3;
  Scorer scorer(*model, so);
  const auto s = scorer.score({ScoreRequest{files->require_tokenizer().encode_prompt("Mr. Darcy was"), 1}}).front();
  for (const auto& t : s.tokens) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_GE(t.top[0].second, t.top[1].second);
    EXPECT_GE(t.top[1].second, t.top[2].second);
    EXPECT_GE(t.top[0].second, t.logprob - 1e-9);
    if (t.is_argmax) {
      EXPECT_EQ(t.top[0].first, t.id);
    }
  }
}

TEST_F(ScorerTest, RejectsRequestsWithNothingToScore) {
  Scorer scorer(*model, ScorerOptions{});
  EXPECT_THROW(scorer.score({ScoreRequest{{1}, 1}}), std::invalid_argument);
  EXPECT_THROW(scorer.score({ScoreRequest{{1, 5, 6}, 3}}), std::invalid_argument);
}

}  // namespace
