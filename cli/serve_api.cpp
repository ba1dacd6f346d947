#include "cli/serve_api.h"

#include "runtime/tokenizer.h"

namespace jetmoe::cli {
namespace {

using nlohmann::json;

ApiError bad(const std::string& param, const std::string& message) { return ApiError(400, message, "invalid_request_error", param); }

// Optional typed fields: absent or null means "not given"; anything else of the wrong type is a 400.
std::optional<double> number(const json& b, const char* key, double lo, double hi) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_number()) throw bad(key, std::string("'") + key + "' must be a number");
  const double v = b[key].get<double>();
  if (!(v >= lo && v <= hi))
    throw bad(key, std::string("'") + key + "' must be between " + json(lo).dump() + " and " + json(hi).dump());
  return v;
}

std::optional<long long> integer(const json& b, const char* key, long long lo, long long hi) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_number_integer()) throw bad(key, std::string("'") + key + "' must be an integer");
  const long long v = b[key].get<long long>();
  if (v < lo || v > hi) throw bad(key, std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  return v;
}

std::optional<bool> boolean(const json& b, const char* key) {
  if (!b.contains(key) || b[key].is_null()) return std::nullopt;
  if (!b[key].is_boolean()) throw bad(key, std::string("'") + key + "' must be a boolean");
  return b[key].get<bool>();
}

GenParams parse_gen(const json& b, const SamplingParams& defaults) {
  GenParams g;
  g.sampling = defaults;
  if (auto v = number(b, "temperature", 0, 100)) g.sampling.temperature = static_cast<float>(*v);
  if (auto v = number(b, "top_p", 0, 1)) g.sampling.top_p = static_cast<float>(*v);
  if (auto v = integer(b, "top_k", 0, 1 << 30)) g.sampling.top_k = static_cast<int>(*v);
  if (auto v = number(b, "min_p", 0, 1)) g.sampling.min_p = static_cast<float>(*v);
  if (auto v = number(b, "repeat_penalty", 0, 100)) g.sampling.repeat_penalty = static_cast<float>(*v);
  number(b, "frequency_penalty", -2, 2);  // accepted for compatibility, not applied
  number(b, "presence_penalty", -2, 2);
  if (auto v = integer(b, "seed", INT64_MIN, INT64_MAX)) g.sampling.seed = static_cast<uint64_t>(*v);
  if (g.sampling.seed == kRandomSeed) g.sampling.seed = random_seed();
  auto mt = integer(b, "max_tokens", 0, 1 << 30);
  if (auto v = integer(b, "max_completion_tokens", 0, 1 << 30)) mt = v;
  if (mt) g.max_tokens = static_cast<int>(*mt);
  if (auto v = boolean(b, "stream")) g.stream = *v;
  if (auto n = integer(b, "n", 1, 1 << 30); n && *n != 1) throw bad("n", "only n=1 is supported");
  if (b.contains("stop") && !b["stop"].is_null()) {
    const json& s = b["stop"];
    if (s.is_string()) {
      g.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && s.size() <= 16) {
      for (const auto& x : s) {
        if (!x.is_string()) throw bad("stop", "'stop' must be a string or an array of strings");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      throw bad("stop", "'stop' must be a string or an array of at most 16 strings");
    }
    std::erase(g.stop, std::string());
  }
  return g;
}

// OpenAI content: a string, or an array of {"type": "text", "text": ...} parts.
std::string message_content(const json& m, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (!m.contains("content") || m["content"].is_null()) throw bad(param, param + " is missing");
  const json& c = m["content"];
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) throw bad(param, param + " must be a string or an array of text parts");
  std::string text;
  for (const auto& part : c) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      throw bad(param, param + ": only {\"type\": \"text\", \"text\": ...} parts are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<int32_t> token_list(const json& a, int vocab_size, const std::string& param) {
  std::vector<int32_t> ids;
  for (const auto& x : a) {
    if (!x.is_number_integer()) throw bad(param, param + " must hold token ids (integers)");
    const long long v = x.get<long long>();
    if (v < 0 || v >= vocab_size) throw bad(param, param + ": token id " + std::to_string(v) + " is outside the vocabulary");
    ids.push_back(static_cast<int32_t>(v));
  }
  return ids;
}

}  // namespace

nlohmann::json parse_body(const std::string& body) {
  size_t bad_at = 0;
  if (!is_valid_utf8(body, &bad_at))
    throw ApiError(400, "the request body is not valid UTF-8 (byte " + std::to_string(bad_at) + ")");
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw ApiError(400, "the request body is not valid JSON");
  if (!j.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return j;
}

ChatRequest parse_chat_request(const nlohmann::json& b, const SamplingParams& defaults) {
  ChatRequest r;
  if (!b.contains("messages") || !b["messages"].is_array()) throw bad("messages", "'messages' must be an array");
  if (b["messages"].empty()) throw bad("messages", "'messages' must not be empty");
  for (size_t i = 0; i < b["messages"].size(); ++i) {
    const json& m = b["messages"][i];
    const std::string param = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad(param, param + " must be an object");
    if (!m.contains("role") || !m["role"].is_string()) throw bad(param + ".role", param + ".role must be a string");
    const auto role = m["role"].get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer")
      throw bad(param + ".role", "unknown role '" + role + "' (expected system, user or assistant)");
    r.messages.push_back({role == "developer" ? "system" : role, message_content(m, i)});
  }
  r.gen = parse_gen(b, defaults);
  if (r.gen.max_tokens && *r.gen.max_tokens == 0) throw bad("max_tokens", "'max_tokens' must be at least 1");
  return r;
}

CompletionRequest parse_completion_request(const nlohmann::json& b, const SamplingParams& defaults, int vocab_size) {
  CompletionRequest r;
  if (!b.contains("prompt")) throw bad("prompt", "'prompt' is required");
  const json& p = b["prompt"];
  if (p.is_string()) {
    r.prompts.push_back({p.get<std::string>(), {}});
  } else if (p.is_array() && !p.empty() && p[0].is_number_integer()) {
    r.prompts.push_back({std::nullopt, token_list(p, vocab_size, "prompt")});
  } else if (p.is_array() && !p.empty() && p.size() <= 256) {
    for (size_t i = 0; i < p.size(); ++i) {
      const std::string param = "prompt[" + std::to_string(i) + "]";
      if (p[i].is_string()) {
        r.prompts.push_back({p[i].get<std::string>(), {}});
      } else if (p[i].is_array() && !p[i].empty()) {
        r.prompts.push_back({std::nullopt, token_list(p[i], vocab_size, param)});
      } else {
        throw bad(param, param + " must be a string or a non-empty array of token ids");
      }
    }
  } else {
    throw bad("prompt", "'prompt' must be a string, an array of token ids, or an array of (at most 256) of those");
  }
  r.gen = parse_gen(b, defaults);
  if (!r.gen.max_tokens) r.gen.max_tokens = 16;  // the OpenAI default for this endpoint
  if (auto v = boolean(b, "echo")) r.echo = *v;
  if (auto v = integer(b, "logprobs", 0, 20)) r.logprobs = static_cast<int>(*v);
  if (r.gen.stream && r.prompts.size() > 1) throw bad("stream", "streaming takes one prompt");
  if (r.gen.stream && r.logprobs) throw bad("logprobs", "logprobs are not streamed; use stream: false");
  return r;
}

}  // namespace jetmoe::cli
