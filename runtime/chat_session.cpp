#include "runtime/chat_session.h"

#include <algorithm>
#include <stdexcept>

namespace jetmoe {
namespace {

// tokenizer_config.json writes special tokens as a string or as an AddedToken object.
std::string special_token(const nlohmann::json& cfg, const char* key, const std::string& fallback) {
  if (!cfg.is_object() || !cfg.contains(key)) return fallback;
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return fallback;
}

// Markers that begin the next turn in common formats: a model that forgets its EOS and starts
// writing the user's next line must stop there.
const char* const kKnownTurnMarkers[] = {"<|user|>", "<|system|>", "<|im_end|>", "<|im_start|>", "[INST]", "<|eot_id|>", "<|end|>"};

}  // namespace

ChatFormat ChatFormat::for_model(const ModelFiles& files, const std::string& override_name) {
  const Tokenizer* tok = files.tokenizer.get();
  const std::string bos = special_token(files.tokenizer_config, "bos_token", tok ? tok->piece(tok->bos_id()) : "<s>");
  const std::string eos = special_token(files.tokenizer_config, "eos_token", tok ? tok->piece(tok->eos_id()) : "</s>");
  const auto& tc = files.tokenizer_config;
  const bool has_own = override_name.empty() && tc.is_object() && tc.contains("chat_template") && tc["chat_template"].is_string();
  const std::string name = has_own ? "checkpoint" : (override_name.empty() ? "zephyr" : override_name);

  std::optional<ChatTemplate> t;
  if (has_own) {
    t = ChatTemplate::from_string(tc["chat_template"].get<std::string>(), bos, eos, TemplateWhitespace::HuggingFace);
  } else {
    t = ChatTemplate::builtin(name, bos, eos, TemplateWhitespace::HuggingFace);
  }
  ChatFormat f{std::move(*t), name, {}, {}};
  f.stop_ids.push_back(files.config.eos_token_id);
  for (int id : files.generation.eos_token_ids)
    if (std::find(f.stop_ids.begin(), f.stop_ids.end(), id) == f.stop_ids.end()) f.stop_ids.push_back(id);
  if (has_own) {
    // Templates often build markers from the role name ('<|' + role + '|>'), so look for them
    // in a rendered probe conversation, not in the template source.
    std::string probe = f.tmpl.source();
    try {
      probe += f.tmpl.render({{"system", "s"}, {"user", "u"}, {"assistant", "a"}, {"user", "u"}}, true);
    } catch (const ChatTemplateError&) {
      // a template that insists on its own message order: the source alone has to do
    }
    for (const char* m : kKnownTurnMarkers)
      if (probe.find(m) != std::string::npos) f.stop_strings.emplace_back(m);
    if (!eos.empty()) f.stop_strings.push_back(eos);
  } else {
    f.stop_strings = end_of_turn_markers(name);
  }
  return f;
}

std::vector<int32_t> ChatFormat::encode(const Tokenizer& tok, const std::vector<ChatMessage>& messages,
                                        bool add_generation_prompt) const {
  std::string text = tmpl.render(messages, add_generation_prompt);
  std::vector<int32_t> ids;
  // The template may write BOS itself (Llama-2); the tokenizer adds it once either way.
  if (tok.add_bos()) {
    text = strip_leading_bos(std::move(text), tmpl.bos_token());
    ids.push_back(tok.bos_id());
  }
  const auto body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string StopStringFilter::push(const std::string& text) {
  if (stopped_) return {};
  pending_ += text;
  size_t cut = std::string::npos;
  for (const auto& s : stops_)
    if (!s.empty()) cut = std::min(cut, pending_.find(s));
  if (cut != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, cut);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that is a prefix of some stop string.
  size_t hold = 0;
  for (const auto& s : stops_)
    for (size_t n = std::min(s.size() - 1, pending_.size()); n > hold; --n)
      if (pending_.compare(pending_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
  std::string out = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringFilter::flush() {
  std::string out;
  if (!stopped_) out.swap(pending_);
  return out;
}

GenerationStats CachedSequence::generate(const GenerateRequest& req, Sampler& sampler,
                                         const std::function<bool(int32_t)>& on_token) {
  const auto& full = req.prompt;
  if (full.empty()) throw std::invalid_argument("empty prompt");
  if (static_cast<int>(full.size()) >= cache_.capacity())
    throw std::invalid_argument("the prompt has " + std::to_string(full.size()) + " tokens; the context holds " +
                                std::to_string(cache_.capacity()));
  size_t common = 0;
  const size_t limit = std::min({tokens_.size(), full.size(), static_cast<size_t>(cache_.size())});
  while (common < limit && tokens_[common] == full[common]) ++common;
  // The last prompt token must run again: its logits give the first reply token.
  if (common == full.size()) --common;
  cache_.set_size(static_cast<int>(common));
  tokens_.assign(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(common));
  reused_ = static_cast<int>(common);

  GenerateRequest suffix = req;
  suffix.prompt.assign(full.begin() + static_cast<std::ptrdiff_t>(common), full.end());
  std::vector<int32_t> history = tokens_;
  std::vector<int32_t> generated;
  const GenerationStats st = jetmoe::generate(model_, cache_, suffix, sampler, history, [&](int32_t id) {
    generated.push_back(id);
    return on_token(id);
  });
  // The cache holds the prompt and the generated tokens that were fed back (not the last one).
  tokens_.insert(tokens_.end(), suffix.prompt.begin(), suffix.prompt.end());
  tokens_.insert(tokens_.end(), generated.begin(), generated.end());
  tokens_.resize(std::min(tokens_.size(), static_cast<size_t>(cache_.size())));
  return st;
}

ChatSession::ChatSession(JetMoeModel& model, const Tokenizer& tok, ChatFormat format, Options opts)
    : tok_(tok),
      format_(std::move(format)),
      opts_(opts),
      seq_(model, opts.ctx_size > 0 ? opts.ctx_size : model.config().max_position_embeddings) {}

std::vector<ChatMessage> ChatSession::messages() const {
  std::vector<ChatMessage> m;
  if (!system_.empty()) m.push_back({"system", system_});
  m.insert(m.end(), turns_.begin(), turns_.end());
  return m;
}

int ChatSession::fit_context(std::vector<int32_t>& ids) {
  const int ctx = seq_.capacity();
  const int reserve = opts_.reply_reserve > 0 ? std::min(opts_.reply_reserve, ctx / 2) : std::min(256, ctx / 4);
  int dropped = 0;
  while (static_cast<int>(ids.size()) + reserve > ctx) {
    // Keep the newest user message; drop whole turns from the front (a user message and the
    // assistant reply after it) so the conversation still alternates.
    if (turns_.size() <= 1)
      throw ContextFullError("the message needs " + std::to_string(ids.size()) + " tokens with the system prompt; the context holds " +
                             std::to_string(ctx) + " and " + std::to_string(reserve) + " are kept for the reply");
    size_t n = 1;
    if (turns_.size() > 2 && turns_[0].role == "user" && turns_[1].role == "assistant") n = 2;
    turns_.erase(turns_.begin(), turns_.begin() + static_cast<std::ptrdiff_t>(n));
    dropped += static_cast<int>(n);
    ids = format_.encode(tok_, messages(), true);
  }
  return dropped;
}

ChatReply ChatSession::send(const std::string& user_text, Sampler& sampler,
                            const std::function<bool(const std::string&)>& on_text) {
  if (!is_valid_utf8(user_text)) throw std::invalid_argument("the message is not valid UTF-8 text");
  turns_.push_back({"user", user_text});
  ChatReply r;
  std::vector<int32_t> ids;
  try {
    ids = format_.encode(tok_, messages(), true);
    r.dropped_messages = fit_context(ids);
  } catch (...) {
    turns_.pop_back();  // a message that cannot be sent leaves the conversation as it was
    throw;
  }
  GenerateRequest req;
  req.prompt = std::move(ids);
  req.max_new_tokens = opts_.max_new_tokens;
  req.stop_ids = format_.stop_ids;
  req.ignore_eos = opts_.ignore_eos;
  TokenStreamer streamer(tok_);
  StopStringFilter stops(opts_.ignore_eos ? std::vector<std::string>{} : format_.stop_strings);
  r.stats = seq_.generate(req, sampler, [&](int32_t id) {
    const std::string piece = stops.push(streamer.push(id));
    r.text += piece;
    if (stops.stopped()) {
      on_text(piece);
      return false;
    }
    if (!on_text(piece)) {
      r.interrupted = true;
      return false;
    }
    return true;
  });
  if (!stops.stopped()) {
    const std::string tail = stops.push(streamer.flush()) + stops.flush();
    r.text += tail;
    if (!tail.empty()) on_text(tail);
  }
  r.reused_tokens = seq_.reused_tokens();
  // The newline a model writes before the next turn's marker belongs to the template, not the reply.
  while (!r.text.empty() && (r.text.back() == '\n' || r.text.back() == ' ')) r.text.pop_back();
  turns_.push_back({"assistant", r.text});
  return r;
}

nlohmann::json ChatSession::to_json() const {
  nlohmann::json msgs = nlohmann::json::array();
  for (const auto& m : turns_) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return {{"system", system_}, {"messages", msgs}};
}

void ChatSession::load_json(const nlohmann::json& j) {
  if (!j.is_object()) throw std::invalid_argument("a conversation is a JSON object with 'system' and 'messages'");
  std::string system;
  std::vector<ChatMessage> turns;
  if (j.contains("system")) {
    if (!j["system"].is_string()) throw std::invalid_argument("'system' must be a string");
    system = j["system"].get<std::string>();
  }
  if (!j.contains("messages") || !j["messages"].is_array()) throw std::invalid_argument("'messages' must be an array");
  for (const auto& m : j["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") || !m["content"].is_string())
      throw std::invalid_argument("every message needs string fields 'role' and 'content'");
    const auto role = m["role"].get<std::string>();
    if (role == "system") {
      system = m["content"].get<std::string>();
      continue;
    }
    if (role != "user" && role != "assistant") throw std::invalid_argument("unknown role '" + role + "'");
    if (!is_valid_utf8(m["content"].get<std::string>())) throw std::invalid_argument("a message is not valid UTF-8");
    turns.push_back({role, m["content"].get<std::string>()});
  }
  system_ = std::move(system);
  turns_ = std::move(turns);
}

}  // namespace jetmoe
