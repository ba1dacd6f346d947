// Token sampling from one logits vector, following llama.cpp's default sampler chain:
//   repetition penalty -> top-k -> top-p -> min-p -> temperature -> softmax -> random draw.
// temperature <= 0 means greedy: argmax after the repetition penalty (lowest id on ties).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace jetmoe {

// Seed value that asks for a nondeterministic seed (like llama.cpp's `--seed -1`).
inline constexpr uint64_t kRandomSeed = 0xFFFFFFFFFFFFFFFFull;

// A fresh seed from std::random_device, for `--seed -1`.
uint64_t random_seed();

struct SamplingParams {
  float temperature = 0.8f;    // <= 0: greedy
  int top_k = 40;              // <= 0 or >= vocab: disabled
  float top_p = 0.95f;         // >= 1: disabled
  float min_p = 0.05f;         // <= 0: disabled; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f; // 1: disabled; positive logits / penalty, negative * penalty
  int repeat_last_n = 64;      // how many of the most recent tokens are penalized; 0 off, -1 all
  // Every value except kRandomSeed is used as given: the same seed, parameters and logits give
  // the same tokens on every platform (mt19937_64 output is fixed by the C++ standard, and the
  // draw maps it to [0,1) with our own arithmetic, not std::uniform_real_distribution).
  // kRandomSeed is replaced by random_seed(); Sampler::seed() tells which seed was used.
  uint64_t seed = kRandomSeed;
};

class Sampler {
 public:
  Sampler(SamplingParams params, int vocab_size);

  // Picks a token id. `logits` must hold vocab_size entries and is not modified; NaN logits are
  // treated as -inf. `recent_tokens` is the history (oldest first) that the repetition penalty
  // looks at; ids outside [0, vocab_size) are ignored. Throws std::invalid_argument on a size
  // mismatch. Uses only member buffers: no allocation after construction.
  int sample(std::span<const float> logits, std::span<const int> recent_tokens);

  uint64_t seed() const { return seed_; }  // the resolved seed (never kRandomSeed)
  void reseed(uint64_t seed);
  const SamplingParams& params() const { return params_; }

 private:
  struct Candidate {
    float logit;
    int id;
  };

  void apply_repeat_penalty(std::span<const int> recent_tokens);
  int argmax() const;
  void top_k(int k);
  void top_p(float p);
  void min_p(float p);
  double softmax(float temperature);  // fills probs_, returns their sum
  double uniform01();                 // [0, 1) with 53 random bits

  SamplingParams params_;
  int vocab_size_;
  uint64_t seed_ = 0;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;  // capacity vocab_size, reused on every call
  std::vector<double> probs_;          // parallel to candidates_
  std::vector<uint8_t> penalized_;     // per-id flag, so a repeated id is penalized once
  bool sorted_ = false;                // candidates_ sorted by logit descending
};

}  // namespace jetmoe
