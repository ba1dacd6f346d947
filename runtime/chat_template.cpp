#include "runtime/chat_template.h"

#include <nlohmann/json.hpp>

namespace jetmoe {

namespace {

jinja::WhitespaceOptions whitespace(TemplateWhitespace ws) {
  const bool hf = ws == TemplateWhitespace::HuggingFace;
  return jinja::WhitespaceOptions{.trim_blocks = hf, .lstrip_blocks = hf};
}

}  // namespace

ChatTemplate ChatTemplate::from_string(std::string source, std::string bos_token, std::string eos_token,
                                       TemplateWhitespace ws) {
  return ChatTemplate(jinja::Template::parse(std::move(source), whitespace(ws)), std::move(bos_token),
                      std::move(eos_token));
}

ChatTemplate ChatTemplate::builtin(const std::string& name, std::string bos_token, std::string eos_token,
                                   TemplateWhitespace ws) {
  return from_string(builtin_template_source(name), std::move(bos_token), std::move(eos_token), ws);
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  return render(messages, add_generation_prompt, nlohmann::json::object());
}

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                 const nlohmann::json& extra_context) const {
  nlohmann::json ctx = extra_context.is_object() ? extra_context : nlohmann::json::object();
  nlohmann::json list = nlohmann::json::array();
  for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
  ctx["messages"] = std::move(list);
  ctx["add_generation_prompt"] = add_generation_prompt;
  ctx["bos_token"] = bos_token_;
  ctx["eos_token"] = eos_token_;
  return template_.render(ctx, limits_);
}

std::string strip_leading_bos(std::string text, const std::string& bos_token) {
  if (!bos_token.empty() && text.compare(0, bos_token.size(), bos_token) == 0) text.erase(0, bos_token.size());
  return text;
}

}  // namespace jetmoe
