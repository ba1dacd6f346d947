// ChatSession on the bundled model: the golden chat case (rendering, prompt ids, greedy reply),
// KV-cache reuse across turns, context trimming and stop strings.
#include <gtest/gtest.h>

#include "loader/model_files.h"
#include "runtime/backend.h"
#include "runtime/chat_session.h"
#include "support/test_paths.h"

namespace jetmoe {
namespace {

struct Austen {
  std::unique_ptr<ModelFiles> files = load_model_files(test::austen_model_dir().string());
  std::unique_ptr<Backend> backend = make_backend("cpu");
  JetMoeModel model{files->config, files->weights, *backend};
  nlohmann::json golden = test::read_json(test::austen_model_dir() / "golden.json")["chat"][0];
};

Austen& austen() {
  static Austen a;
  return a;
}

Sampler greedy(int vocab) {
  SamplingParams p;
  p.temperature = 0;
  p.seed = 1;
  return Sampler(p, vocab);
}

TEST(ChatSession, GoldenPromptIds) {
  auto& a = austen();
  const ChatFormat f = ChatFormat::for_model(*a.files);
  EXPECT_EQ(f.name, "checkpoint");
  // The template builds "<|user|>" from the role name; a reply that starts the next turn stops there.
  EXPECT_NE(std::find(f.stop_strings.begin(), f.stop_strings.end(), "<|user|>"), f.stop_strings.end());
  std::vector<ChatMessage> msgs;
  for (const auto& m : a.golden["messages"]) msgs.push_back({m["role"], m["content"]});
  EXPECT_EQ(f.tmpl.render(msgs, true), a.golden["rendered"].get<std::string>());
  EXPECT_EQ(f.encode(*a.files->tokenizer, msgs, true), a.golden["prompt_ids"].get<std::vector<int32_t>>());
}

TEST(ChatSession, GoldenGreedyReply) {
  auto& a = austen();
  ChatSession s(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files), {.ctx_size = 256, .max_new_tokens = 48});
  s.set_system(a.golden["messages"][0]["content"]);
  Sampler sm = greedy(a.files->config.vocab_size);
  std::string streamed;
  const ChatReply r = s.send(a.golden["messages"][1]["content"], sm, [&](const std::string& t) {
    streamed += t;
    return true;
  });
  EXPECT_EQ(r.text, a.golden["generated_text"].get<std::string>());
  EXPECT_EQ(streamed, r.text);
  EXPECT_TRUE(r.stats.stopped_by_eos);
  const auto want = a.golden["generated_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(r.stats.generated_tokens, static_cast<int>(want.size()) - 1);  // EOS is not counted
  ASSERT_EQ(s.turns().size(), 2u);
  EXPECT_EQ(s.turns()[1].content, "Yes, very.");
}

TEST(ChatSession, SecondTurnReusesTheCache) {
  auto& a = austen();
  ChatSession s(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files), {.ctx_size = 512, .max_new_tokens = 16});
  s.set_system("You are a character in a novel by Jane Austen.");
  Sampler sm = greedy(a.files->config.vocab_size);
  auto ignore = [](const std::string&) { return true; };
  const ChatReply r1 = s.send("Do you not think Mr. Darcy very proud?", sm, ignore);
  EXPECT_EQ(r1.reused_tokens, 0);
  const int before = s.context_tokens();
  const ChatReply r2 = s.send("And Mr. Bingley?", sm, ignore);
  // Everything up to the end of the first reply came from the cache.
  EXPECT_GT(r2.reused_tokens, before - 3);
  EXPECT_LT(r2.stats.prompt_tokens, 20);
  // The same conversation from scratch gives the same second reply.
  ChatSession fresh(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files), {.ctx_size = 512, .max_new_tokens = 16});
  fresh.load_json(s.to_json());
  auto msgs = s.to_json();
  msgs["messages"].erase(msgs["messages"].size() - 1);
  msgs["messages"].erase(msgs["messages"].size() - 1);
  fresh.load_json(msgs);
  const ChatReply r3 = fresh.send("And Mr. Bingley?", sm, ignore);
  EXPECT_EQ(r3.text, r2.text);
}

TEST(ChatSession, InterruptKeepsPartialReplyAndResetKeepsSystem) {
  auto& a = austen();
  ChatSession s(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files), {.ctx_size = 256, .max_new_tokens = 32});
  s.set_system("Be brief.");
  Sampler sm = greedy(a.files->config.vocab_size);
  int calls = 0;
  const ChatReply r = s.send("Tell me of Pemberley.", sm, [&](const std::string&) { return ++calls < 2; });
  EXPECT_TRUE(r.interrupted);
  EXPECT_EQ(r.stats.generated_tokens, 2);
  s.reset();
  EXPECT_TRUE(s.turns().empty());
  EXPECT_EQ(s.system(), "Be brief.");
}

TEST(ChatSession, OldestTurnsDroppedWhenContextFills) {
  auto& a = austen();
  ChatSession s(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files),
                {.ctx_size = 96, .max_new_tokens = 8, .reply_reserve = 16});
  s.set_system("Be brief.");
  Sampler sm = greedy(a.files->config.vocab_size);
  auto ignore = [](const std::string&) { return true; };
  int dropped = 0;
  for (int i = 0; i < 8; ++i) dropped += s.send("What do you think of the weather at Longbourn today?", sm, ignore).dropped_messages;
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(s.messages().front().role, "system");
  EXPECT_LE(s.context_tokens(), 96);
  EXPECT_THROW(s.send(std::string(2000, 'a'), sm, ignore), ContextFullError);
  EXPECT_THROW(s.send("\xff\xfe", sm, ignore), std::invalid_argument);
}

TEST(ChatSession, LoadJsonRejectsBadConversations) {
  auto& a = austen();
  ChatSession s(a.model, *a.files->tokenizer, ChatFormat::for_model(*a.files), {.ctx_size = 64});
  EXPECT_THROW(s.load_json(nlohmann::json::array()), std::invalid_argument);
  EXPECT_THROW(s.load_json({{"messages", {{{"role", "wizard"}, {"content", "x"}}}}}), std::invalid_argument);
  EXPECT_THROW(s.load_json({{"messages", {{{"role", "user"}, {"content", 3}}}}}), std::invalid_argument);
  s.load_json({{"messages", {{{"role", "system"}, {"content", "S"}}, {{"role", "user"}, {"content", "U"}}}}});
  EXPECT_EQ(s.system(), "S");
  EXPECT_EQ(s.turns().size(), 1u);
}

TEST(ChatStopStrings, HoldsBackPartialMarkers) {
  StopStringFilter f({"<|user|>", "</s>"});
  EXPECT_EQ(f.push("Hello <"), "Hello ");
  EXPECT_EQ(f.push("|us"), "");
  EXPECT_EQ(f.push("er|> more"), "");
  EXPECT_TRUE(f.stopped());
  StopStringFilter g({"</s>"});
  EXPECT_EQ(g.push("a <b"), "a <b");
  EXPECT_EQ(g.push("</"), "");
  EXPECT_EQ(g.push("x"), "</x");
  EXPECT_EQ(g.push("<"), "");
  EXPECT_EQ(g.flush(), "<");
}

}  // namespace
}  // namespace jetmoe
