// `jetmoe serve` end to end on the bundled model: started on a free 127.0.0.1 port, driven with
// streaming, non-streaming, concurrent, disconnecting and malformed requests; always killed at the end.
#include <httplib.h>

#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <future>

#include "support/test_paths.h"
#include "tests/cli/serve_test_util.h"

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

struct Server {
  int port = jetmoe::test::free_loopback_port();
  jetmoe::test::ChildProcess proc;

  explicit Server(std::vector<std::string> extra)
      : proc(args(port, std::move(extra)), (jetmoe::test::make_temp_dir("serve") / "serve.log").string()) {
    // Bounded wait for the model to load and the port to open.
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(1);
    for (auto t0 = std::chrono::steady_clock::now(); std::chrono::steady_clock::now() - t0 < 60s; std::this_thread::sleep_for(100ms)) {
      if (!proc.running()) throw std::runtime_error("jetmoe serve exited early");
      httplib::Headers h;
      if (auto r = c.Get("/health"); r && (r->status == 200 || r->status == 401)) return;
    }
    throw std::runtime_error("jetmoe serve did not answer /health within 60 s");
  }

  static std::vector<std::string> args(int port, std::vector<std::string> extra) {
    std::vector<std::string> a = {jetmoe::test::jetmoe_binary(), "serve", "-m", jetmoe::test::austen_model_dir().string(),
                                  "-t", "2", "-c", "512", "--port", std::to_string(port)};
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  }

  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
    c->set_connection_timeout(5);
    c->set_read_timeout(60);
    c->set_write_timeout(10);
    return c;
  }
};

Server& server() {
  static Server s({"--max-queue", "3", "--max-body", "65536"});
  return s;
}

json post_json(const std::string& path, const json& body, int want_status = 200) {
  auto r = server().client()->Post(path.c_str(), body.dump(), "application/json");
  if (!r) throw std::runtime_error("no reply to " + path);
  EXPECT_EQ(r->status, want_status) << r->body;
  return json::parse(r->body);
}

const json& golden_chat() {
  static const json g = jetmoe::test::read_json(jetmoe::test::austen_model_dir() / "golden.json")["chat"][0];
  return g;
}

// The `data:` payloads of an SSE body, in order.
std::vector<std::string> sse_events(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

void expect_openai_error(const std::string& body) {
  const json j = json::parse(body);
  ASSERT_TRUE(j.contains("error")) << body;
  for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(j["error"].contains(k)) << k << " in " << body;
  EXPECT_TRUE(j["error"]["message"].is_string());
}

TEST(ServeE2E, HealthModelsTokenize) {
  auto c = server().client();
  auto h = c->Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  const json m = json::parse(c->Get("/v1/models")->body);
  EXPECT_EQ(m["data"][0]["id"], "austen-jetmoe");
  const json t = post_json("/tokenize", {{"content", golden_chat()["rendered"]}, {"add_special", true}});
  EXPECT_EQ(t["tokens"], golden_chat()["prompt_ids"]);
  const json d = post_json("/detokenize", {{"tokens", golden_chat()["generated_ids"]}});
  EXPECT_EQ(d["content"], "Yes, very.");
}

TEST(ServeE2E, ChatCompletionMatchesGolden) {
  const json r = post_json("/v1/chat/completions", {{"messages", golden_chat()["messages"]}, {"temperature", 0}, {"max_tokens", 48}});
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["choices"][0]["message"]["content"], golden_chat()["generated_text"]);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["usage"]["prompt_tokens"], golden_chat()["prompt_ids"].size());
}

TEST(ServeE2E, StreamedChatEqualsNonStreamed) {
  const json req = {{"messages", {{{"role", "user"}, {"content", "What do you think of Mr. Collins?"}}}}, {"temperature", 0}, {"max_tokens", 24}};
  const json whole = post_json("/v1/chat/completions", req);
  json sreq = req;
  sreq["stream"] = true;
  auto r = server().client()->Post("/v1/chat/completions", sreq.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_events(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    const json& delta = e["choices"][0]["delta"];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
  }
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"]);
  EXPECT_EQ(json::parse(events[events.size() - 2])["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
}

TEST(ServeE2E, CompletionsEchoLogprobsForLoglikelihood) {
  // lm-evaluation-harness style: token ids in, echo, max_tokens 0 (older) and 1 (newer, drops the last).
  const std::vector<int32_t> ids = golden_chat()["prompt_ids"];
  for (int max_tokens : {0, 1}) {
    const json r = post_json("/v1/completions", {{"prompt", ids}, {"echo", true}, {"logprobs", 1}, {"max_tokens", max_tokens}, {"temperature", 0}});
    const json& lp = r["choices"][0]["logprobs"];
    ASSERT_EQ(lp["token_logprobs"].size(), ids.size() + max_tokens);
    EXPECT_TRUE(lp["token_logprobs"][0].is_null());
    for (size_t i = 1; i < lp["token_logprobs"].size(); ++i) {
      EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
      const json& top = lp["top_logprobs"][i];
      ASSERT_EQ(top.size(), 1u);
      EXPECT_GE(top.begin().value().get<double>(), lp["token_logprobs"][i].get<double>() - 1e-9);  // the argmax
    }
  }
  // Text prompts get BOS; the echoed text is the prompt; a continuation keeps its leading space.
  const json t = post_json("/v1/completions", {{"prompt", "It is a truth"}, {"echo", true}, {"max_tokens", 1}, {"temperature", 0}});
  EXPECT_EQ(t["choices"][0]["text"], "It is a truth of");  // greedy "\u2581of"
  // Several prompts in one request: one choice each, in order.
  const json m = post_json("/v1/completions", {{"prompt", {"A", "B"}}, {"max_tokens", 2}, {"temperature", 0}});
  ASSERT_EQ(m["choices"].size(), 2u);
  EXPECT_EQ(m["choices"][1]["index"], 1);
}

TEST(ServeE2E, StreamedCompletionEndsWithDone) {
  auto r = server().client()->Post("/v1/completions", json{{"prompt", "Elizabeth"}, {"max_tokens", 6}, {"stream", true}, {"seed", 3}}.dump(),
                                   "application/json");
  ASSERT_TRUE(r);
  const auto events = sse_events(r->body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(json::parse(events[0])["object"], "text_completion");
}

TEST(ServeE2E, MalformedRequestsGetOpenAIErrors) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"/v1/chat/completions", "{not json"},
      {"/v1/chat/completions", "[1,2]"},
      {"/v1/chat/completions", R"({"messages": []})"},
      {"/v1/chat/completions", R"({"messages": "hi"})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": 5}]})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000})"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": "x"}], "stream": "yes"})"},
      {"/v1/chat/completions", std::string(R"({"messages": [{"role": "user", "content": ")") + "\xff\xfe" + "\"}]}"},
      {"/v1/chat/completions", R"({"messages": [{"role": "user", "content": ")" + std::string(3000, 'x') + "\"}]}"},
      {"/v1/completions", R"({"prompt": [1, -5]})"},
      {"/v1/completions", R"({"prompt": [1, 99999999]})"},
      {"/v1/completions", R"({"prompt": 7})"},
      {"/v1/completions", R"({"prompt": "x", "logprobs": 99})"},
      {"/v1/completions", R"({})"},
      {"/tokenize", R"({"content": 3})"},
      {"/detokenize", R"({"tokens": ["a"]})"},
  };
  auto c = server().client();
  for (const auto& [path, body] : bad) {
    auto r = c->Post(path.c_str(), body, "application/json");
    ASSERT_TRUE(r) << path << " " << body.substr(0, 80);
    EXPECT_GE(r->status, 400) << body.substr(0, 80);
    EXPECT_LT(r->status, 500) << body.substr(0, 80);
    expect_openai_error(r->body);
  }
  // Bodies beyond --max-body are refused; unknown routes are JSON 404s.
  auto big = c->Post("/v1/chat/completions", std::string(200000, ' '), "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  auto nf = c->Get("/v1/nothing");
  ASSERT_TRUE(nf);
  EXPECT_EQ(nf->status, 404);
  expect_openai_error(nf->body);
  // Still serving.
  EXPECT_EQ(c->Get("/health")->status, 200);
}

TEST(ServeE2E, ConcurrentBurstIsQueuedOrRefused) {
  // 8 requests against a queue of 3: each is served (200) or refused at once (503), never lost.
  // The server is up before the burst starts (this test may be the first to use it).
  auto health = server().client()->Get("/health");
  ASSERT_TRUE(health);
  ASSERT_EQ(health->status, 200);
  std::vector<std::future<std::pair<int, std::string>>> futs;
  for (int i = 0; i < 8; ++i)
    futs.push_back(std::async(std::launch::async, [i] {
      auto r = server().client()->Post(
          "/v1/chat/completions",
          json{{"messages", {{{"role", "user"}, {"content", "Tell me about Netherfield, " + std::to_string(i)}}}}, {"max_tokens", 16}, {"seed", i}}.dump(),
          "application/json");
      return r ? std::make_pair(r->status, r->body) : std::make_pair(-1, std::string());
    }));
  int ok = 0, busy = 0;
  for (auto& f : futs) {
    ASSERT_EQ(f.wait_for(120s), std::future_status::ready);
    const auto [status, body] = f.get();
    if (status == 200) {
      ++ok;
      EXPECT_EQ(json::parse(body)["object"], "chat.completion");
    } else {
      EXPECT_EQ(status, 503) << body;
      expect_openai_error(body);
      ++busy;
    }
  }
  EXPECT_GE(ok, 1);
  EXPECT_EQ(ok + busy, 8);
}

// Raw socket: send a streaming request, read the first bytes, hang up.
void start_and_abandon_stream(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval tv{10, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  const std::string body = json{{"prompt", "It is a truth"}, {"max_tokens", 400}, {"stream", true}}.dump();
  const std::string req = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(send(fd, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  char buf[512];
  EXPECT_GT(recv(fd, buf, sizeof buf, 0), 0);
  close(fd);
}

TEST(ServeE2E, DisconnectedClientStopsItsGeneration) {
  start_and_abandon_stream(server().port);
  // The abandoned generation (up to 400 tokens) must stop and free the queue promptly.
  auto c = server().client();
  bool idle = false;
  for (auto t0 = std::chrono::steady_clock::now(); !idle && std::chrono::steady_clock::now() - t0 < 20s; std::this_thread::sleep_for(50ms))
    idle = json::parse(c->Get("/health")->body)["queued"] == 0;
  EXPECT_TRUE(idle);
  const json r = post_json("/v1/chat/completions", {{"messages", golden_chat()["messages"]}, {"temperature", 0}});
  EXPECT_EQ(r["choices"][0]["message"]["content"], golden_chat()["generated_text"]);
}

TEST(ServeE2E, ApiKeyIsCheckedOnEveryRequest) {
  Server s({"--api-key", "sekrit"});
  auto c = s.client();
  auto none = c->Get("/v1/models");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  expect_openai_error(none->body);
  auto wrong = c->Post("/v1/chat/completions", httplib::Headers{{"Authorization", "Bearer nope"}}, "{}", "application/json");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto right = c->Get("/v1/models", httplib::Headers{{"Authorization", "Bearer sekrit"}});
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);
}

}  // namespace
