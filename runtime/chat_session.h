// Chat on top of the generator: which template and stop markers a checkpoint uses, a KV cache
// that remembers the tokens it holds (so a new request only processes the tokens that differ from
// the cached prefix), stop strings held back while they might still match, and a conversation
// (jetmoe chat) that drops its oldest turns when the context fills.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "loader/model_files.h"
#include "runtime/chat_template.h"
#include "runtime/generator.h"
#include "runtime/jetmoe_model.h"
#include "runtime/sampler.h"
#include "runtime/tokenizer.h"

namespace jetmoe {

// How a checkpoint talks: its template, the ids and strings that end an assistant turn.
struct ChatFormat {
  ChatTemplate tmpl;
  std::string name;                       // "checkpoint" or a built-in name
  std::vector<int32_t> stop_ids;          // EOS ids from config and generation_config
  std::vector<std::string> stop_strings;  // end-of-turn markers looked for in the generated text

  // `override_name` empty: the checkpoint's tokenizer_config.json chat_template, else "zephyr"
  // (JetMoE-8B-chat's format). Otherwise a built-in name. Throws ChatTemplateError.
  static ChatFormat for_model(const ModelFiles& files, const std::string& override_name = "");

  // Prompt ids for `messages`: rendered, BOS once (the tokenizer's, never doubled by the text).
  // Throws ChatTemplateError, or std::invalid_argument for text that is not UTF-8.
  std::vector<int32_t> encode(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                              bool add_generation_prompt) const;
};

// Holds back text that could be the start of a stop string, so a marker is never half-printed.
class StopStringFilter {
 public:
  explicit StopStringFilter(std::vector<std::string> stops) : stops_(std::move(stops)) {}
  // Text safe to emit now; after a stop string is seen, stopped() is true and nothing more comes.
  std::string push(const std::string& text);
  std::string flush();  // the held-back tail (at the end of generation)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

// A KV cache plus the ids it holds. generate() takes the whole prompt, reuses the longest cached
// prefix (rolling the cache back to it) and processes only the rest.
class CachedSequence {
 public:
  CachedSequence(JetMoeModel& model, int capacity) : model_(model), cache_(model.make_cache(capacity)) {}

  int capacity() const { return cache_.capacity(); }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  void clear() { tokens_.clear(); cache_.clear(); }
  // Tokens of the last generate() call's prompt that came from the cache.
  int reused_tokens() const { return reused_; }

  // req.prompt is the full sequence (at least one token, shorter than the capacity).
  GenerationStats generate(const GenerateRequest& req, Sampler& sampler, const std::function<bool(int32_t)>& on_token);

 private:
  JetMoeModel& model_;
  KvCache cache_;
  std::vector<int32_t> tokens_;
  int reused_ = 0;
};

struct ChatReply {
  std::string text;            // the assistant's reply (stop marker removed)
  GenerationStats stats;
  int reused_tokens = 0;       // prompt tokens served from the KV cache
  int dropped_messages = 0;    // oldest messages dropped to fit the context this turn
  bool interrupted = false;    // on_text asked to stop
};

// Thrown when a single message cannot fit the context even after dropping every older turn.
class ContextFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A conversation kept in the KV cache. The system prompt survives /reset and context trimming.
class ChatSession {
 public:
  struct Options {
    int ctx_size = 0;         // 0: the model's max_position_embeddings
    int max_new_tokens = -1;  // per reply; < 0: until a stop marker or the context is full
    int reply_reserve = 0;    // tokens kept free for the reply when trimming (0: min(256, ctx/4))
    bool ignore_eos = false;  // keep generating past EOS and end-of-turn markers (benchmarks, tests)
  };

  ChatSession(JetMoeModel& model, const Tokenizer& tok, ChatFormat format, Options opts);

  void set_system(std::string text) { system_ = std::move(text); }
  const std::string& system() const { return system_; }
  void reset() { turns_.clear(); }  // keeps the system prompt; the cache keeps its reusable prefix
  // The conversation with the system message first (when set).
  std::vector<ChatMessage> messages() const;
  const std::vector<ChatMessage>& turns() const { return turns_; }
  int context_tokens() const { return static_cast<int>(seq_.tokens().size()); }
  int ctx_size() const { return seq_.capacity(); }

  // Adds the user's message and generates the reply. on_text receives each new piece of text
  // (possibly empty, once per token) and returns false to interrupt. An interrupted reply stays in
  // the conversation as far as it got. Throws ContextFullError, std::invalid_argument (not UTF-8).
  ChatReply send(const std::string& user_text, Sampler& sampler, const std::function<bool(const std::string&)>& on_text);

  // {"system": "...", "messages": [{"role","content"}...]}; from_json validates roles and types
  // (std::invalid_argument naming the problem).
  nlohmann::json to_json() const;
  void load_json(const nlohmann::json& j);

 private:
  // Drops the oldest turns until `ids` plus the reply reserve fit; re-encodes after each drop.
  int fit_context(std::vector<int32_t>& ids);

  const Tokenizer& tok_;
  ChatFormat format_;
  Options opts_;
  CachedSequence seq_;
  std::string system_;
  std::vector<ChatMessage> turns_;
};

}  // namespace jetmoe
