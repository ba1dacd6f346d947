#include "runtime/generator.h"

#include <algorithm>
#include <chrono>

namespace jetmoe {

GenerationStats generate(JetMoeModel& model, KvCache& cache, const GenerateRequest& req, Sampler& sampler,
                         std::vector<int32_t>& history, const std::function<bool(int32_t)>& on_token) {
  using clock = std::chrono::steady_clock;
  GenerationStats st;
  std::vector<float> logits;
  const int V = model.config().vocab_size;

  auto t0 = clock::now();
  model.forward(req.prompt, cache, logits, false);
  st.prompt_tokens = static_cast<int>(req.prompt.size());
  st.prompt_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  history.insert(history.end(), req.prompt.begin(), req.prompt.end());

  t0 = clock::now();
  for (int i = 0; req.max_new_tokens < 0 || i < req.max_new_tokens; ++i) {
    const int32_t id = sampler.sample(std::span<const float>(logits.data(), static_cast<size_t>(V)), history);
    history.push_back(id);
    if (!req.ignore_eos && std::find(req.stop_ids.begin(), req.stop_ids.end(), id) != req.stop_ids.end()) {
      st.stopped_by_eos = true;
      break;
    }
    ++st.generated_tokens;
    if (!on_token(id)) break;
    if (req.max_new_tokens >= 0 && i + 1 >= req.max_new_tokens) break;
    if (cache.size() >= cache.capacity()) {
      st.context_full = true;
      break;
    }
    const int32_t one[1] = {id};
    model.forward(one, cache, logits, false);
  }
  st.generate_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return st;
}

}  // namespace jetmoe
