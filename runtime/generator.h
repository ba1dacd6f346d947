// Prompt processing then token-by-token decoding with the KV cache: the loop behind generate,
// chat and serve.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "runtime/jetmoe_model.h"
#include "runtime/sampler.h"

namespace jetmoe {

struct GenerateRequest {
  std::vector<int32_t> prompt;      // appended after whatever the cache already holds
  int max_new_tokens = 128;         // < 0: until EOS or the context is full
  bool ignore_eos = false;
  std::vector<int32_t> stop_ids;    // EOS and end-of-turn ids
};

struct GenerationStats {
  int prompt_tokens = 0;
  double prompt_seconds = 0;
  int generated_tokens = 0;
  double generate_seconds = 0;
  bool stopped_by_eos = false;
  bool context_full = false;
  double prompt_tps() const { return prompt_seconds > 0 ? prompt_tokens / prompt_seconds : 0; }
  double generate_tps() const { return generate_seconds > 0 ? generated_tokens / generate_seconds : 0; }
};

// Calls on_token(id) for every generated token (the stop token itself is not passed on); return
// false from it to stop early. `history` supplies the repetition-penalty window and is extended.
GenerationStats generate(JetMoeModel& model, KvCache& cache, const GenerateRequest& req, Sampler& sampler,
                         std::vector<int32_t>& history, const std::function<bool(int32_t)>& on_token);

}  // namespace jetmoe
