#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace jetmoe {

uint64_t random_seed() {
  std::random_device rd;
  uint64_t s;
  do {
    s = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  } while (s == kRandomSeed);  // never hand back the "pick one for me" sentinel
  return s;
}

Sampler::Sampler(SamplingParams params, int vocab_size) : params_(params), vocab_size_(vocab_size) {
  if (vocab_size <= 0) throw std::invalid_argument("Sampler: vocab_size must be positive");
  candidates_.reserve(static_cast<size_t>(vocab_size));
  probs_.reserve(static_cast<size_t>(vocab_size));
  penalized_.assign(static_cast<size_t>(vocab_size), 0);
  reseed(params.seed);
}

void Sampler::reseed(uint64_t seed) {
  seed_ = seed == kRandomSeed ? random_seed() : seed;
  rng_.seed(seed_);
}

double Sampler::uniform01() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }

// Descending logit, then ascending id: a total order, so results never depend on sort internals.
static bool by_logit_desc(const auto& a, const auto& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

void Sampler::apply_repeat_penalty(std::span<const int> recent) {
  const float penalty = params_.repeat_penalty;
  if (penalty == 1.0f || params_.repeat_last_n == 0 || recent.empty()) return;
  if (params_.repeat_last_n > 0 && recent.size() > static_cast<size_t>(params_.repeat_last_n))
    recent = recent.last(static_cast<size_t>(params_.repeat_last_n));
  // candidates_ is still indexed by id here (filled in id order, nothing removed yet).
  for (int id : recent) {
    if (id < 0 || id >= vocab_size_ || penalized_[static_cast<size_t>(id)]) continue;
    penalized_[static_cast<size_t>(id)] = 1;
    float& l = candidates_[static_cast<size_t>(id)].logit;
    // llama.cpp's rule: dividing a negative logit would raise it, so negatives are multiplied.
    l = l > 0 ? l / penalty : l * penalty;
  }
  for (int id : recent)
    if (id >= 0 && id < vocab_size_) penalized_[static_cast<size_t>(id)] = 0;
}

int Sampler::argmax() const {
  // Strict '>' keeps the lowest id among equal maxima.
  size_t best = 0;
  for (size_t i = 1; i < candidates_.size(); ++i)
    if (candidates_[i].logit > candidates_[best].logit) best = i;
  return candidates_[best].id;
}

void Sampler::top_k(int k) {
  if (k <= 0 || static_cast<size_t>(k) >= candidates_.size()) return;
  std::partial_sort(candidates_.begin(), candidates_.begin() + k, candidates_.end(),
                    by_logit_desc<Candidate, Candidate>);
  candidates_.resize(static_cast<size_t>(k));
  sorted_ = true;
}

void Sampler::top_p(float p) {
  if (p >= 1.0f || candidates_.size() <= 1) return;
  if (!sorted_) {
    std::sort(candidates_.begin(), candidates_.end(), by_logit_desc<Candidate, Candidate>);
    sorted_ = true;
  }
  const double sum = softmax(1.0f);
  // Keep the shortest prefix whose probability reaches p (at least one token).
  double cum = 0.0;
  size_t keep = candidates_.size();
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cum += probs_[i] / sum;
    if (cum >= p) {
      keep = i + 1;
      break;
    }
  }
  candidates_.resize(keep);
}

void Sampler::min_p(float p) {
  if (p <= 0.0f || candidates_.size() <= 1) return;
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const auto& c : candidates_) max_logit = std::max(max_logit, c.logit);
  // p_i >= p * p_max  <=>  logit_i >= max_logit + log(p); no softmax needed.
  const float threshold = max_logit + std::log(p);
  auto end = std::remove_if(candidates_.begin(), candidates_.end(),
                            [&](const Candidate& c) { return c.logit < threshold; });
  candidates_.erase(end, candidates_.end());  // keeps order, and the maximum always survives
}

double Sampler::softmax(float temperature) {
  float max_logit = -std::numeric_limits<float>::infinity();
  for (const auto& c : candidates_) max_logit = std::max(max_logit, c.logit);
  probs_.resize(candidates_.size());
  double sum = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    const double z = (static_cast<double>(candidates_[i].logit) - max_logit) / temperature;
    probs_[i] = std::isfinite(max_logit) ? std::exp(z) : 0.0;
    sum += probs_[i];
  }
  return sum;
}

int Sampler::sample(std::span<const float> logits, std::span<const int> recent_tokens) {
  if (logits.size() != static_cast<size_t>(vocab_size_))
    throw std::invalid_argument("Sampler::sample: got " + std::to_string(logits.size()) +
                                " logits for a vocabulary of " + std::to_string(vocab_size_));
  candidates_.resize(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) {
    const float l = logits[i];
    candidates_[i] = {std::isnan(l) ? -std::numeric_limits<float>::infinity() : l, static_cast<int>(i)};
  }
  sorted_ = false;
  apply_repeat_penalty(recent_tokens);

  if (params_.temperature <= 0.0f) return argmax();

  top_k(params_.top_k);
  top_p(params_.top_p);
  min_p(params_.min_p);
  const double sum = softmax(params_.temperature);
  if (!(sum > 0.0) || !std::isfinite(sum)) return argmax();  // every logit -inf: nothing to draw

  // Inverse-CDF draw; the final fallback covers rounding when u*sum lands past the last bucket.
  const double target = uniform01() * sum;
  double cum = 0.0;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    cum += probs_[i];
    if (target < cum) return candidates_[i].id;
  }
  for (size_t i = candidates_.size(); i-- > 0;)
    if (probs_[i] > 0.0) return candidates_[i].id;
  return candidates_.front().id;
}

}  // namespace jetmoe
