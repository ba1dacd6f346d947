// Chat prompt formatting: turns a conversation into the prompt text a chat model was trained on,
// by rendering the model's Jinja chat template (Hugging Face `tokenizer_config.json`
// `chat_template`) or one of the built-in copies of well-known hub templates.
//
// BOS handling: the template is rendered literally. Templates that write `bos_token` themselves
// (Llama-2, Mistral) put it in the text; Zephyr/ChatML do not. When the tokenizer also prepends
// BOS (`add_bos_token=true`, as for JetMoE), the caller must avoid a doubled BOS: either encode
// the rendered text without adding BOS, or strip a leading bos_token from the text
// (`strip_leading_bos`). Rendering never guesses which one the caller wants.
#pragma once

#include <string>
#include <vector>

#include "runtime/jinja_error.h"
#include "runtime/jinja_template.h"

namespace jetmoe {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// Whitespace semantics. Jinja's defaults keep every newline between tags; Hugging Face
// transformers' apply_chat_template renders with trim_blocks and lstrip_blocks on, which is how
// the published templates were meant to look (e.g. Zephyr's "</s>\n<|user|>" comes out with a
// single newline only under HF mode).
enum class TemplateWhitespace { JinjaDefault, HuggingFace };

class ChatTemplate {
 public:
  // Parses `source` once; throws ChatTemplateError (with line/column) on a syntax error.
  static ChatTemplate from_string(std::string source, std::string bos_token, std::string eos_token,
                                  TemplateWhitespace ws = TemplateWhitespace::JinjaDefault);
  // name: one of builtin_template_names(); throws ChatTemplateError for an unknown name.
  static ChatTemplate builtin(const std::string& name, std::string bos_token, std::string eos_token,
                              TemplateWhitespace ws = TemplateWhitespace::JinjaDefault);

  // Renders with the context Hugging Face passes: messages (list of {role, content}),
  // add_generation_prompt, bos_token, eos_token. Throws ChatTemplateError on template errors,
  // on raise_exception() (message verbatim) and when a resource limit is hit.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const;
  // Same with extra context variables (e.g. tools, custom flags) merged in.
  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const nlohmann::json& extra_context) const;

  const std::string& source() const { return template_.source(); }
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  void set_limits(const jinja::RenderLimits& limits) { limits_ = limits; }

 private:
  ChatTemplate(jinja::Template t, std::string bos, std::string eos)
      : template_(std::move(t)), bos_token_(std::move(bos)), eos_token_(std::move(eos)) {}

  jinja::Template template_;
  std::string bos_token_;
  std::string eos_token_;
  jinja::RenderLimits limits_;
};

// "zephyr", "chatml", "llama2", "mistral", "plain".
std::vector<std::string> builtin_template_names();
// The Jinja source of a built-in template; throws ChatTemplateError for an unknown name.
const std::string& builtin_template_source(const std::string& name);
// Strings that end an assistant turn for a built-in template, for stop-sequence checks on
// generated text. eos_token is the stop marker of the templates that use it ("</s>" here is the
// Llama/Mistral/JetMoE EOS; callers with another EOS should stop on their own eos too).
std::vector<std::string> end_of_turn_markers(const std::string& name);

// Removes one leading `bos_token` from rendered text (see the BOS note above).
std::string strip_leading_bos(std::string text, const std::string& bos_token);

}  // namespace jetmoe
