// What quantization costs in quality, measured against the full-precision model on the same
// windows of text: perplexity (llama-perplexity conventions), KL-divergence of the next-token
// distributions, same-top-token rate, and how often the routers still pick the same experts.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/jetmoe_model.h"

namespace jetmoe {

// llama-perplexity windowing: the text's tokens cut into windows of `ctx`, the first token of each
// replaced by BOS, the second half of each window scored.
struct EvalWindows {
  int ctx = 0;
  std::vector<std::vector<int32_t>> windows;
  int first_scored() const { return ctx / 2; }
  int scored_per_window() const { return ctx - ctx / 2; }
};
EvalWindows make_eval_windows(std::span<const int32_t> tokens, int ctx, int bos, int max_windows);

// Everything the comparison needs from one model over the windows.
struct EvalRun {
  std::vector<float> logprobs;      // [scored positions, vocab] log-softmax rows (reference run only)
  std::vector<double> nll;          // per scored token
  std::vector<int32_t> argmax;      // per scored position
  std::vector<int32_t> experts;     // [window][layer][sublayer][token][k] routing of every token
  int tokens_per_window = 0;
  double prefill_seconds = 0;
  int64_t prefill_tokens = 0;
};

// Runs every window through `model`. Keeps full log-prob rows only when keep_logprobs.
EvalRun evaluate_windows(JetMoeModel& model, const EvalWindows& w, bool keep_logprobs);

struct QualityStats {
  double ppl = 0, ppl_err = 0;  // exp(mean NLL) and its standard error (delta method)
  double kld_mean = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double same_top_pct = 0;
  double expert_agree_pct = 0;       // both sublayers: the selected top-k set equals the reference's
  double expert_agree_moa_pct = 0, expert_agree_moe_pct = 0;
};

// Perplexity of one run alone.
void perplexity(const EvalRun& run, double& ppl, double& err);

// `test` against `ref` (ref must have been run with keep_logprobs). `test.logprobs` must be kept
// too (the KLD needs both distributions).
QualityStats compare_runs(const EvalRun& ref, const EvalRun& test, int vocab, int layers, int top_k);

}  // namespace jetmoe
