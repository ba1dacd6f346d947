// Log-likelihood scoring of many token sequences: short ones are packed into one forward pass
// (no padding is computed), long ones are scored with a sliding window.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/jetmoe_model.h"

namespace jetmoe {

struct ScoreRequest {
  std::vector<int32_t> tokens;  // the model input, BOS included when wanted
  size_t score_from = 1;        // tokens[score_from..] are scored (>= 1); earlier ones are context
};

struct TokenScore {
  int32_t id = 0;
  double logprob = 0;
  bool is_argmax = false;                       // the model's greedy choice at this position
  std::vector<std::pair<int32_t, double>> top;  // top-k alternatives (when asked)
};

struct SequenceScore {
  int64_t tokens_scored = 0;
  double sum_logprob = 0;
  bool all_greedy = true;  // every scored token was the argmax (lm-eval-harness is_greedy)
  std::vector<TokenScore> tokens;  // per token, when asked
};

struct ScorerOptions {
  int window = 0;         // longest sequence one forward sees (0: the model's max positions)
  int stride = 0;         // sliding-window step for longer sequences (0: window / 2)
  int batch_tokens = 512; // sequences are packed up to this many tokens per forward call
  bool per_token = false;
  int top_k = 0;
};

class Scorer {
 public:
  Scorer(JetMoeModel& model, ScorerOptions opts);
  const ScorerOptions& options() const { return opts_; }

  // Scores every request; results are in request order.
  std::vector<SequenceScore> score(const std::vector<ScoreRequest>& requests);

 private:
  struct Chunk {
    size_t request;
    size_t begin, end;        // tokens[begin, end) form the model input
    size_t score_begin;       // absolute index of the first token this chunk scores
  };
  void run_batch(const std::vector<ScoreRequest>& requests, const std::vector<Chunk>& chunks,
                 std::vector<SequenceScore>& out);

  JetMoeModel& model_;
  ScorerOptions opts_;
  KvCache cache_;
  std::vector<float> logits_;
};

}  // namespace jetmoe
