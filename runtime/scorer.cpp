#include "runtime/scorer.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace jetmoe {

Scorer::Scorer(JetMoeModel& model, ScorerOptions opts)
    : model_(model),
      opts_([&] {
        if (opts.window <= 0) opts.window = model.config().max_position_embeddings;
        opts.window = std::min(opts.window, model.config().max_position_embeddings);
        if (opts.window < 2) throw std::invalid_argument("scoring window must be at least 2 tokens");
        if (opts.stride <= 0) opts.stride = std::max(1, opts.window / 2);
        if (opts.stride > opts.window - 1) opts.stride = opts.window - 1;
        opts.batch_tokens = std::max(opts.batch_tokens, opts.window);
        return opts;
      }()),
      cache_(model.make_cache(opts_.batch_tokens)) {}

std::vector<SequenceScore> Scorer::score(const std::vector<ScoreRequest>& requests) {
  std::vector<SequenceScore> out(requests.size());
  // 1. Cut every request into chunks of at most `window` tokens. A long sequence is scored with a
  //    sliding window (HF strided perplexity): each window scores only the tokens the previous
  //    windows did not, with at least window - stride tokens of context before them.
  std::vector<Chunk> chunks;
  const size_t W = static_cast<size_t>(opts_.window), S = static_cast<size_t>(opts_.stride);
  for (size_t r = 0; r < requests.size(); ++r) {
    const ScoreRequest& req = requests[r];
    const size_t L = req.tokens.size();
    if (req.score_from < 1 || req.score_from >= L)
      throw std::invalid_argument("score request " + std::to_string(r) + ": nothing to score");
    if (L <= W) {
      chunks.push_back({r, 0, L, req.score_from});
      continue;
    }
    size_t next = req.score_from;  // the next token to score
    for (size_t begin = 0;; begin += S) {
      const size_t end = std::min(begin + W, L);
      if (end > next) {
        chunks.push_back({r, begin, end, std::max(next, begin + 1)});
        next = end;
      }
      if (end == L) break;
    }
  }
  // 2. Pack chunks into batches of at most batch_tokens and run them.
  std::vector<Chunk> batch;
  size_t used = 0;
  for (const Chunk& c : chunks) {
    const size_t n = c.end - c.begin;
    if (used + n > static_cast<size_t>(opts_.batch_tokens) && !batch.empty()) {
      run_batch(requests, batch, out);
      batch.clear();
      used = 0;
    }
    batch.push_back(c);
    used += n;
  }
  if (!batch.empty()) run_batch(requests, batch, out);
  return out;
}

void Scorer::run_batch(const std::vector<ScoreRequest>& requests, const std::vector<Chunk>& chunks,
                       std::vector<SequenceScore>& out) {
  std::vector<int32_t> tokens, rope_pos, first_slot;
  for (const Chunk& c : chunks) {
    const int32_t first = static_cast<int32_t>(tokens.size());
    for (size_t i = c.begin; i < c.end; ++i) {
      tokens.push_back(requests[c.request].tokens[i]);
      rope_pos.push_back(static_cast<int32_t>(i - c.begin));
      first_slot.push_back(first);
    }
  }
  cache_.clear();
  const PackedLayout layout{rope_pos, first_slot};
  model_.forward(tokens, cache_, logits_, true, nullptr, &layout);

  const int V = model_.config().vocab_size;
  size_t row0 = 0;
  std::vector<double> lse_buf;
  for (const Chunk& c : chunks) {
    SequenceScore& s = out[c.request];
    const auto& toks = requests[c.request].tokens;
    for (size_t i = c.score_begin; i < c.end; ++i) {
      const float* row = logits_.data() + (row0 + (i - 1 - c.begin)) * static_cast<size_t>(V);
      float mx = row[0];
      int32_t arg = 0;
      for (int v = 1; v < V; ++v)
        if (row[v] > mx) mx = row[v], arg = v;
      double sum = 0;
      for (int v = 0; v < V; ++v) sum += std::exp(static_cast<double>(row[v]) - mx);
      const double lse = mx + std::log(sum);
      const int32_t id = toks[i];
      const double lp = row[id] - lse;
      s.sum_logprob += lp;
      ++s.tokens_scored;
      const bool greedy = arg == id;
      s.all_greedy = s.all_greedy && greedy;
      if (opts_.per_token) {
        TokenScore ts;
        ts.id = id;
        ts.logprob = lp;
        ts.is_argmax = greedy;
        if (opts_.top_k > 0) {
          std::vector<int32_t> idx(static_cast<size_t>(V));
          for (int v = 0; v < V; ++v) idx[static_cast<size_t>(v)] = v;
          const size_t k = std::min(static_cast<size_t>(opts_.top_k), idx.size());
          std::partial_sort(idx.begin(), idx.begin() + static_cast<std::ptrdiff_t>(k), idx.end(),
                            [&](int32_t a, int32_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
          for (size_t j = 0; j < k; ++j) ts.top.emplace_back(idx[j], row[idx[j]] - lse);
        }
        s.tokens.push_back(std::move(ts));
      }
    }
    row0 += c.end - c.begin;
  }
}

}  // namespace jetmoe
