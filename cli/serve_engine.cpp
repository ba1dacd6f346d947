#include "cli/serve_engine.h"

namespace jetmoe::cli {

ServeEngine::ServeEngine(LoadedModel& lm, ChatFormat format, std::string model_name, int max_queue)
    : lm_(lm),
      tok_(lm.files->require_tokenizer()),
      format_(std::move(format)),
      name_(std::move(model_name)),
      max_queue_(max_queue),
      seq_(*lm.model, lm.ctx_size),
      scorer_(*lm.model, ScorerOptions{.window = lm.ctx_size, .per_token = true, .top_k = 20}) {}

ServeEngine::Ticket ServeEngine::admit() {
  if (pending_.fetch_add(1) >= max_queue_) {
    pending_.fetch_sub(1);
    throw ApiError(503, "the server is busy: " + std::to_string(max_queue_) + " requests are already queued; retry later",
                   "server_error", "", "queue_full");
  }
  return Ticket(pending_);
}

std::unique_lock<std::timed_mutex> ServeEngine::acquire(const std::function<bool()>& keep_waiting) {
  std::unique_lock<std::timed_mutex> lock(model_mutex_, std::defer_lock);
  while (!lock.try_lock_for(std::chrono::milliseconds(250)))
    if (!keep_waiting()) break;
  return lock;
}

void ServeEngine::check_fits(size_t n, const GenParams& g) const {
  const size_t ctx = static_cast<size_t>(lm_.ctx_size);
  if (n >= ctx)
    throw ApiError(400, "the prompt has " + std::to_string(n) + " tokens; the context holds " + std::to_string(ctx),
                   "invalid_request_error", "messages", "context_length_exceeded");
  if (g.max_tokens && n + static_cast<size_t>(*g.max_tokens) > ctx)
    throw ApiError(400, "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" + std::to_string(*g.max_tokens) +
                            ") exceeds the context of " + std::to_string(ctx) + " tokens",
                   "invalid_request_error", "max_tokens", "context_length_exceeded");
}

std::vector<int32_t> ServeEngine::chat_prompt(const ChatRequest& r) const {
  std::vector<int32_t> ids;
  try {
    ids = format_.encode(tok_, r.messages, true);
  } catch (const ChatTemplateError& e) {
    throw ApiError(400, std::string("the chat template refused the messages: ") + e.what(), "invalid_request_error", "messages");
  }
  check_fits(ids.size(), r.gen);
  return ids;
}

std::vector<int32_t> ServeEngine::completion_prompt(const PromptInput& p, const GenParams& g) const {
  std::vector<int32_t> ids = p.text ? tok_.encode_prompt(*p.text) : p.ids;
  if (ids.empty()) throw ApiError(400, "the prompt is empty", "invalid_request_error", "prompt");
  check_fits(ids.size(), g);
  return ids;
}

GenResult ServeEngine::generate(std::vector<int32_t> prompt, const GenParams& g, bool chat,
                                const std::function<bool(const std::string&)>& on_text) {
  GenResult r;
  r.prompt_ids = prompt;
  r.finish_reason = "length";
  if (g.max_tokens && *g.max_tokens == 0) return r;
  std::vector<std::string> stops = g.stop;
  if (chat) stops.insert(stops.end(), format_.stop_strings.begin(), format_.stop_strings.end());
  StopStringFilter filter(stops);
  TokenStreamer streamer(tok_);
  // A completion continues its prompt, so its first token's leading space must survive: decode
  // after the prompt's last token. A chat reply starts a new message and is decoded on its own
  // (as transformers' decode of the generated ids does).
  if (!chat) (void)streamer.push(prompt.back());
  Sampler sampler(g.sampling, vocab_size());
  GenerateRequest req;
  req.prompt = std::move(prompt);
  req.max_new_tokens = g.max_tokens ? *g.max_tokens : -1;
  req.stop_ids = format_.stop_ids;
  const GenerationStats st = seq_.generate(req, sampler, [&](int32_t id) {
    r.generated_ids.push_back(id);
    const std::string piece = filter.push(streamer.push(id));
    r.text += piece;
    if (!piece.empty() && !on_text(piece)) {
      r.cancelled = true;
      return false;
    }
    return !filter.stopped();
  });
  if (!filter.stopped() && !r.cancelled) {
    const std::string tail = filter.push(streamer.flush()) + filter.flush();
    r.text += tail;
    if (!tail.empty()) on_text(tail);
  }
  if (st.stopped_by_eos || filter.stopped()) r.finish_reason = "stop";
  return r;
}

nlohmann::json ServeEngine::logprobs(const std::vector<int32_t>& tokens, size_t from, int top) {
  nlohmann::json out = {{"tokens", nlohmann::json::array()}, {"token_logprobs", nlohmann::json::array()},
                        {"top_logprobs", nlohmann::json::array()}, {"text_offset", nlohmann::json::array()}};
  std::vector<TokenScore> scored;
  const size_t first = std::max<size_t>(from, 1);  // the first token of a sequence has no logprob
  if (first < tokens.size()) scored = scorer_.score({{tokens, first}})[0].tokens;
  // Offsets into the text that decoding tokens[from..] gives (BOS decodes to nothing).
  TokenStreamer streamer(tok_);
  size_t offset = 0;
  for (size_t i = from; i < tokens.size(); ++i) {
    out["tokens"].push_back(tok_.piece(tokens[i]));
    out["text_offset"].push_back(offset);
    offset += streamer.push(tokens[i]).size();
    if (i < first) {
      out["token_logprobs"].push_back(nullptr);
      out["top_logprobs"].push_back(nullptr);
      continue;
    }
    const TokenScore& s = scored[i - first];
    out["token_logprobs"].push_back(s.logprob);
    nlohmann::json alts = nlohmann::json::object();
    for (int k = 0; k < top && k < static_cast<int>(s.top.size()); ++k) alts[tok_.piece(s.top[k].first)] = s.top[k].second;
    out["top_logprobs"].push_back(alts);
  }
  return out;
}

}  // namespace jetmoe::cli
