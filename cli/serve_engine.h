// jetmoe serve, the model side: one model, one generation at a time, behind a bounded queue.
// Requests beyond the queue are refused at once (503) rather than piling up threads; the KV cache
// keeps the previous request's tokens so a follow-up chat turn reuses its prefix.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "cli/common_options.h"
#include "cli/serve_api.h"
#include "runtime/chat_session.h"
#include "runtime/scorer.h"

namespace jetmoe::cli {

struct GenResult {
  std::string text;
  std::vector<int32_t> prompt_ids, generated_ids;
  std::string finish_reason;  // "stop" or "length"
  bool cancelled = false;     // the client went away
};

class ServeEngine {
 public:
  ServeEngine(LoadedModel& lm, ChatFormat format, std::string model_name, int max_queue);

  const std::string& model_name() const { return name_; }
  const Tokenizer& tokenizer() const { return tok_; }
  int ctx_size() const { return lm_.ctx_size; }
  int vocab_size() const { return lm_.files->config.vocab_size; }
  int queued() const { return pending_.load(); }

  // A place in the queue, held from admission until the response is written.
  class Ticket {
   public:
    explicit Ticket(std::atomic<int>& n) : n_(&n) {}
    Ticket(Ticket&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() {
      if (n_) n_->fetch_sub(1);
    }

   private:
    std::atomic<int>* n_;
  };
  // Throws ApiError(503) when max_queue requests are already waiting or running.
  Ticket admit();

  // The model, exclusively. keep_waiting() is polled while another request runs; returning false
  // (the client disconnected) gives up: the returned lock then does not own the mutex.
  std::unique_lock<std::timed_mutex> acquire(const std::function<bool()>& keep_waiting);

  // Prompt ids, validated against the context and max_tokens (ApiError 400).
  std::vector<int32_t> chat_prompt(const ChatRequest& r) const;
  std::vector<int32_t> completion_prompt(const PromptInput& p, const GenParams& g) const;

  // Call with the lock held. on_text gets each new piece of text; false stops (client gone).
  GenResult generate(std::vector<int32_t> prompt, const GenParams& g, bool chat,
                     const std::function<bool(const std::string&)>& on_text);
  // OpenAI logprobs object for tokens[from..] (call with the lock held).
  nlohmann::json logprobs(const std::vector<int32_t>& tokens, size_t from, int top);

 private:
  void check_fits(size_t prompt_tokens, const GenParams& g) const;

  LoadedModel& lm_;
  const Tokenizer& tok_;
  ChatFormat format_;
  std::string name_;
  int max_queue_;
  std::atomic<int> pending_{0};
  std::timed_mutex model_mutex_;
  CachedSequence seq_;
  Scorer scorer_;
};

}  // namespace jetmoe::cli
