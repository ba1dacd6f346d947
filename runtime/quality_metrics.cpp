#include "runtime/quality_metrics.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace jetmoe {

EvalWindows make_eval_windows(std::span<const int32_t> tokens, int ctx, int bos, int max_windows) {
  if (ctx < 4) throw std::invalid_argument("evaluation context must be at least 4 tokens");
  EvalWindows w;
  w.ctx = ctx;
  const size_t n = tokens.size() / static_cast<size_t>(ctx);
  for (size_t i = 0; i < n && (max_windows <= 0 || static_cast<int>(i) < max_windows); ++i) {
    std::vector<int32_t> win(tokens.begin() + static_cast<std::ptrdiff_t>(i * ctx),
                             tokens.begin() + static_cast<std::ptrdiff_t>((i + 1) * ctx));
    win[0] = bos;
    w.windows.push_back(std::move(win));
  }
  if (w.windows.empty())
    throw std::invalid_argument("the text has " + std::to_string(tokens.size()) + " tokens, fewer than one window of " +
                                std::to_string(ctx) + " (use a longer text or a smaller -c)");
  return w;
}

EvalRun evaluate_windows(JetMoeModel& model, const EvalWindows& w, bool keep_logprobs) {
  const int V = model.config().vocab_size;
  EvalRun run;
  run.tokens_per_window = w.ctx;
  KvCache cache = model.make_cache(w.ctx);
  std::vector<float> logits;
  for (const auto& win : w.windows) {
    cache.clear();
    RoutingTrace trace;
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(win, cache, logits, true, &trace);
    run.prefill_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    run.prefill_tokens += static_cast<int64_t>(win.size());
    for (size_t l = 0; l < trace.moa.size(); ++l) {
      run.experts.insert(run.experts.end(), trace.moa[l].begin(), trace.moa[l].end());
      run.experts.insert(run.experts.end(), trace.moe[l].begin(), trace.moe[l].end());
    }
    for (int i = w.first_scored(); i < w.ctx; ++i) {
      const float* row = logits.data() + static_cast<size_t>(i - 1) * V;
      const float mx = *std::max_element(row, row + V);
      double sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      const double lse = mx + std::log(sum);
      run.nll.push_back(lse - row[win[static_cast<size_t>(i)]]);
      run.argmax.push_back(static_cast<int32_t>(std::max_element(row, row + V) - row));
      if (keep_logprobs)
        for (int v = 0; v < V; ++v) run.logprobs.push_back(static_cast<float>(row[v] - lse));
    }
  }
  return run;
}

void perplexity(const EvalRun& run, double& ppl, double& err) {
  const double n = static_cast<double>(run.nll.size());
  double mean = 0, sq = 0;
  for (double x : run.nll) mean += x;
  mean /= n;
  for (double x : run.nll) sq += (x - mean) * (x - mean);
  const double sd = n > 1 ? std::sqrt(sq / (n - 1)) : 0;
  ppl = std::exp(mean);
  err = ppl * sd / std::sqrt(n);  // as llama-perplexity: d(exp(m)) = exp(m) dm
}

QualityStats compare_runs(const EvalRun& ref, const EvalRun& test, int vocab, int layers, int top_k) {
  if (ref.nll.size() != test.nll.size() || ref.experts.size() != test.experts.size())
    throw std::invalid_argument("compare_runs: the runs cover different text");
  QualityStats s;
  perplexity(test, s.ppl, s.ppl_err);
  const size_t n = ref.nll.size();
  std::vector<double> kld(n);
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    const float* p = ref.logprobs.data() + i * static_cast<size_t>(vocab);
    const float* q = test.logprobs.data() + i * static_cast<size_t>(vocab);
    double k = 0;
    for (int v = 0; v < vocab; ++v) k += std::exp(static_cast<double>(p[v])) * (static_cast<double>(p[v]) - q[v]);
    kld[i] = std::max(0.0, k);
    same += ref.argmax[i] == test.argmax[i];
  }
  double sum = 0;
  for (double k : kld) sum += k;
  s.kld_mean = sum / static_cast<double>(n);
  std::vector<double> sorted = kld;
  std::sort(sorted.begin(), sorted.end());
  s.kld_median = sorted[n / 2];
  s.kld_p99 = sorted[std::min(n - 1, static_cast<size_t>(0.99 * static_cast<double>(n)))];
  s.kld_max = sorted.back();
  s.same_top_pct = 100.0 * static_cast<double>(same) / static_cast<double>(n);

  // Routing: the evaluator appends, per window and layer, the MoA block then the MoE block, each
  // tokens_per_window * k expert ids. A token agrees in a sublayer when its selected set is equal
  // (slot order does not matter: both slots see the same input).
  const size_t k = static_cast<size_t>(top_k);
  const size_t block = static_cast<size_t>(ref.tokens_per_window) * k;
  size_t agree[2] = {0, 0}, total[2] = {0, 0};
  for (size_t b0 = 0, blk = 0; b0 + block <= ref.experts.size(); b0 += block, ++blk) {
    const int sub = static_cast<int>(blk % 2);
    for (size_t t = b0; t < b0 + block; t += k) {
      std::vector<int32_t> x(ref.experts.begin() + static_cast<std::ptrdiff_t>(t), ref.experts.begin() + static_cast<std::ptrdiff_t>(t + k));
      std::vector<int32_t> y(test.experts.begin() + static_cast<std::ptrdiff_t>(t), test.experts.begin() + static_cast<std::ptrdiff_t>(t + k));
      std::sort(x.begin(), x.end());
      std::sort(y.begin(), y.end());
      agree[sub] += x == y;
      ++total[sub];
    }
  }
  (void)layers;
  auto pct = [](size_t a, size_t t) { return t ? 100.0 * static_cast<double>(a) / static_cast<double>(t) : 0.0; };
  s.expert_agree_moa_pct = pct(agree[0], total[0]);
  s.expert_agree_moe_pct = pct(agree[1], total[1]);
  s.expert_agree_pct = pct(agree[0] + agree[1], total[0] + total[1]);
  return s;
}

}  // namespace jetmoe
