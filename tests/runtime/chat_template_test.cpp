// Built-in chat templates and the bundled austen-jetmoe template, rendered for two fixed
// conversations. Expected strings were derived by hand from Jinja2 semantics (reasoning noted
// per test), not produced by this renderer.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "runtime/chat_template.h"

using namespace jetmoe;

namespace {

const std::string kQ = "How many helicopters can a human eat in one sitting?";

// Conversation A: system + user + assistant + user, rendered with add_generation_prompt = true.
std::vector<ChatMessage> conv_a() {
  return {{"system", "You are a friendly chatbot"}, {"user", "Hello"}, {"assistant", "Hi there"}, {"user", kQ}};
}
// Conversation B: a single user turn, add_generation_prompt = false.
std::vector<ChatMessage> conv_b() { return {{"user", "Hello"}}; }

ChatTemplate builtin(const std::string& name, TemplateWhitespace ws = TemplateWhitespace::JinjaDefault) {
  return ChatTemplate::builtin(name, "<s>", "</s>", ws);
}

}  // namespace

TEST(ChatTemplate, BuiltinNames) {
  EXPECT_EQ(builtin_template_names(), (std::vector<std::string>{"zephyr", "chatml", "llama2", "mistral", "plain"}));
  for (const auto& name : builtin_template_names()) {
    EXPECT_NO_THROW(builtin(name)) << name;
    EXPECT_FALSE(end_of_turn_markers(name).empty()) << name;
  }
  EXPECT_THROW(ChatTemplate::builtin("vicuna", "<s>", "</s>"), ChatTemplateError);
  EXPECT_EQ(end_of_turn_markers("chatml"), std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(end_of_turn_markers("zephyr"), std::vector<std::string>{"</s>"});
}

// Zephyr, the architecture doc's text verbatim, under Jinja's default whitespace (no trim_blocks):
// each loop iteration emits "\n" (after the for tag) + the if-branch ("\n" after the if/elif tag,
// the output, "\n" before the next elif/endif) + "\n" (after the first endif) + the generation-prompt
// if ("\n<|assistant|>\n" when taken, else "") + "\n" (after the second endif). The text after
// endfor is empty (the template has no trailing newline).
TEST(ChatTemplate, ZephyrJinjaDefaultWhitespace) {
  const auto t = builtin("zephyr");
  EXPECT_EQ(t.render(conv_a(), true),
            "\n\n<|system|>\nYou are a friendly chatbot</s>\n\n\n"
            "\n\n<|user|>\nHello</s>\n\n\n"
            "\n\n<|assistant|>\nHi there</s>\n\n\n"
            "\n\n<|user|>\n" + kQ + "</s>\n\n\n<|assistant|>\n\n");
  EXPECT_EQ(t.render(conv_b(), false), "\n\n<|user|>\nHello</s>\n\n\n");
}

// The same template under Hugging Face's trim_blocks + lstrip_blocks: the newline after each
// block tag goes, the newline after each {{ }} stays. This is Zephyr's documented prompt format.
TEST(ChatTemplate, ZephyrHuggingFaceWhitespace) {
  const auto t = builtin("zephyr", TemplateWhitespace::HuggingFace);
  EXPECT_EQ(t.render(conv_a(), true),
            "<|system|>\nYou are a friendly chatbot</s>\n<|user|>\nHello</s>\n<|assistant|>\nHi there</s>\n"
            "<|user|>\n" + kQ + "</s>\n<|assistant|>\n");
  EXPECT_EQ(t.render(conv_b(), false), "<|user|>\nHello</s>\n");
}

TEST(ChatTemplate, ZephyrSourceIsTheDocumentedText) {
  const std::string& src = builtin_template_source("zephyr");
  EXPECT_EQ(src.substr(0, 31), "{% for message in messages %}\n{");
  EXPECT_NE(src.find("{{ '<|assistant|>\\n'  + message['content'] + eos_token }}"), std::string::npos);
  EXPECT_EQ(src.substr(src.size() - 12), "{% endfor %}");
}

TEST(ChatTemplate, ChatML) {
  const auto t = builtin("chatml");
  EXPECT_EQ(t.render(conv_a(), true),
            "<|im_start|>system\nYou are a friendly chatbot<|im_end|>\n"
            "<|im_start|>user\nHello<|im_end|>\n"
            "<|im_start|>assistant\nHi there<|im_end|>\n"
            "<|im_start|>user\n" + kQ + "<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(t.render(conv_b(), false), "<|im_start|>user\nHello<|im_end|>\n");
}

// Llama-2: the system prompt is folded into the first [INST] inside <<SYS>>; bos_token precedes
// every [INST]; an assistant turn is ' ' + content + ' ' + eos. add_generation_prompt is unused.
TEST(ChatTemplate, Llama2) {
  const auto t = builtin("llama2");
  EXPECT_EQ(t.render(conv_a(), true),
            "<s>[INST] <<SYS>>\nYou are a friendly chatbot\n<</SYS>>\n\nHello [/INST] Hi there </s>"
            "<s>[INST] " + kQ + " [/INST]");
  EXPECT_EQ(t.render(conv_b(), false), "<s>[INST] Hello [/INST]");
  // The template's own role check surfaces as a ChatTemplateError carrying its message.
  try {
    t.render({{"user", "a"}, {"user", "b"}}, false);
    FAIL() << "no exception";
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.message(), "Conversation roles must alternate user/assistant/user/assistant/...");
  }
}

// Mistral-instruct: every tag starts with '-', so all whitespace between tags is stripped; only
// the newline after the final {%- endfor %} survives under Jinja defaults (trim_blocks removes it).
TEST(ChatTemplate, Mistral) {
  const auto t = builtin("mistral");
  EXPECT_EQ(t.render(conv_a(), true),
            "<s> [INST] You are a friendly chatbot\n\nHello [/INST] Hi there</s> [INST] " + kQ + " [/INST]\n");
  EXPECT_EQ(t.render(conv_b(), false), "<s> [INST] Hello [/INST]\n");
  const auto hf = builtin("mistral", TemplateWhitespace::HuggingFace);
  EXPECT_EQ(hf.render(conv_b(), false), "<s> [INST] Hello [/INST]");
  EXPECT_THROW(t.render({{"assistant", "x"}}, false), ChatTemplateError);
}

TEST(ChatTemplate, Plain) {
  const auto t = builtin("plain");
  EXPECT_EQ(t.render(conv_a(), true),
            "system: You are a friendly chatbot\nuser: Hello\nassistant: Hi there\nuser: " + kQ + "\nassistant:");
  EXPECT_EQ(t.render(conv_b(), false), "user: Hello\n");
}

TEST(ChatTemplate, AustenJetmoeTokenizerConfig) {
  std::ifstream in(std::string(JETMOE_MODELS_DIR) + "/austen-jetmoe/tokenizer_config.json");
  ASSERT_TRUE(in) << "missing models/austen-jetmoe/tokenizer_config.json";
  const auto cfg = nlohmann::json::parse(in);
  const auto t = ChatTemplate::from_string(cfg.at("chat_template").get<std::string>(),
                                           cfg.at("bos_token").get<std::string>(),
                                           cfg.at("eos_token").get<std::string>());
  // '<|' + role + '|>\n' + content + '\n' per message, then '<|assistant|>\n'; no BOS/EOS written.
  EXPECT_EQ(t.render(conv_a(), true),
            "<|system|>\nYou are a friendly chatbot\n<|user|>\nHello\n<|assistant|>\nHi there\n"
            "<|user|>\n" + kQ + "\n<|assistant|>\n");
  EXPECT_EQ(t.render(conv_b(), false), "<|user|>\nHello\n");
}

TEST(ChatTemplate, ExtraContextAndBosHelper) {
  const auto t = ChatTemplate::from_string("{{ bos_token }}{{ greeting }}", "<s>", "</s>");
  EXPECT_EQ(t.render({}, false, {{"greeting", "hi"}}), "<s>hi");
  EXPECT_EQ(strip_leading_bos(t.render({}, false, {{"greeting", "hi"}}), "<s>"), "hi");
  EXPECT_EQ(strip_leading_bos("hi<s>", "<s>"), "hi<s>");
}

TEST(ChatTemplate, SyntaxErrorAtConstruction) {
  try {
    ChatTemplate::from_string("{% for m in messages %}\n{{ m.content }", "<s>", "</s>");
    FAIL() << "no exception";
  } catch (const ChatTemplateError& e) {
    EXPECT_EQ(e.line(), 2);
  }
}

// Every truncation of every built-in template either parses and renders or fails with a
// ChatTemplateError: no other exception type, crash or hang on malformed input.
TEST(ChatTemplate, TruncatedTemplatesFailCleanly) {
  for (const auto& name : builtin_template_names()) {
    const std::string& src = builtin_template_source(name);
    for (size_t n = 0; n <= src.size(); ++n) {
      try {
        const auto t = ChatTemplate::from_string(src.substr(0, n), "<s>", "</s>");
        (void)t.render({{"system", "s"}, {"user", "u"}, {"assistant", "a"}}, true);
      } catch (const ChatTemplateError&) {
      } catch (const std::exception& e) {
        ADD_FAILURE() << name << " prefix " << n << ": " << e.what();
      }
    }
  }
}
