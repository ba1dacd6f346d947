// jetmoe serve, the OpenAI-compatible request/response layer: validates request JSON into plain
// structs and builds response JSON. No HTTP here (cmd_serve.cpp) and no model (serve_engine.h).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"
#include "runtime/sampler.h"

namespace jetmoe::cli {

// A client-visible error: HTTP status plus the OpenAI error body
// {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type = "invalid_request_error", std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status_(status), type_(std::move(type)), param_(std::move(param)), code_(std::move(code)) {}
  int status() const { return status_; }
  // Defined here so tests/cli/serve_replies_test.cpp builds without the CLI's objects.
  nlohmann::json body() const {
    const auto opt = [](const std::string& s) { return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s); };
    return {{"error", {{"message", what()}, {"type", type_}, {"param", opt(param_)}, {"code", opt(code_)}}}};
  }

 private:
  int status_;
  std::string type_, param_, code_;
};

// Sampling and stopping options shared by both endpoints.
struct GenParams {
  SamplingParams sampling;
  std::optional<int> max_tokens;  // unset: until a stop or the context is full
  std::vector<std::string> stop;
  bool stream = false;
};

struct ChatRequest {
  std::vector<ChatMessage> messages;
  GenParams gen;
};

// One prompt of /v1/completions: text (BOS added by the server) or token ids (used as given).
struct PromptInput {
  std::optional<std::string> text;
  std::vector<int32_t> ids;
};

struct CompletionRequest {
  std::vector<PromptInput> prompts;
  GenParams gen;
  bool echo = false;
  std::optional<int> logprobs;  // top alternatives per token (0..20); unset: no logprobs
};

// Both throw ApiError(400) naming the offending field. `defaults` are the server's sampling flags.
ChatRequest parse_chat_request(const nlohmann::json& body, const SamplingParams& defaults);
CompletionRequest parse_completion_request(const nlohmann::json& body, const SamplingParams& defaults, int vocab_size);
// Parses a request body: ApiError(400) for malformed JSON, invalid UTF-8 or a non-object.
nlohmann::json parse_body(const std::string& body);

}  // namespace jetmoe::cli
