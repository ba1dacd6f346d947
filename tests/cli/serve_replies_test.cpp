// The failure paths of `jetmoe serve`'s replies (cli/serve_replies.h), which the end-to-end test
// cannot reach with a healthy model: an exception in a handler, during generation (streamed and
// not), or one that reaches httplib itself, each becomes an OpenAI-shaped error with its status.
#include "cli/serve_replies.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <thread>

namespace jetmoe::cli {
namespace {

using nlohmann::json;

json error_of(const std::string& text) { return json::parse(text).at("error"); }

TEST(ServeReplies, GuardedKeepsAnApiErrorsStatusAndFields) {
  httplib::Response res;
  guarded(res, [] { throw ApiError(404, "no such model", "invalid_request_error", "model", "model_not_found"); });
  EXPECT_EQ(res.status, 404);
  EXPECT_EQ(res.get_header_value("Content-Type"), "application/json");
  const json e = error_of(res.body);
  EXPECT_EQ(e.at("message"), "no such model");
  EXPECT_EQ(e.at("type"), "invalid_request_error");
  EXPECT_EQ(e.at("param"), "model");
  EXPECT_EQ(e.at("code"), "model_not_found");
}

TEST(ServeReplies, GuardedAnswersInvalidArgumentWith400) {
  httplib::Response res;
  guarded(res, [] { throw std::invalid_argument("text is not valid UTF-8 at byte 3"); });
  EXPECT_EQ(res.status, 400);
  const json e = error_of(res.body);
  EXPECT_EQ(e.at("message"), "text is not valid UTF-8 at byte 3");
  EXPECT_EQ(e.at("type"), "invalid_request_error");
  EXPECT_TRUE(e.at("param").is_null());
}

TEST(ServeReplies, GuardedAnswersAnyOtherExceptionWith500ServerError) {
  httplib::Response res;
  guarded(res, [] { throw std::out_of_range("position 600 is beyond the context of 512 tokens"); });
  EXPECT_EQ(res.status, 500);
  const json e = error_of(res.body);
  EXPECT_EQ(e.at("message"), "position 600 is beyond the context of 512 tokens");
  EXPECT_EQ(e.at("type"), "server_error");
  EXPECT_TRUE(e.at("param").is_null());
  EXPECT_TRUE(e.at("code").is_null());

  httplib::Response other;  // not a std::exception at all
  guarded(other, [] { throw 42; });
  EXPECT_EQ(other.status, 500);
  EXPECT_EQ(error_of(other.body).at("message"), "internal error");
  EXPECT_EQ(error_of(other.body).at("type"), "server_error");
}

TEST(ServeReplies, GuardedLeavesASuccessfulReplyAlone) {
  httplib::Response res;
  guarded(res, [&] { res.set_content("{\"ok\":true}", "application/json"); });
  EXPECT_EQ(res.status, -1);  // httplib fills in 200 when it sends an unset status
  EXPECT_EQ(res.body, "{\"ok\":true}");
}

TEST(ServeReplies, ExceptionsThatReachHttplibBecomeErrors) {
  const ApiError runtime = error_from_exception(std::make_exception_ptr(std::runtime_error("out of memory for the KV cache")));
  EXPECT_EQ(runtime.status(), 500);
  EXPECT_EQ(runtime.body().at("error").at("message"), "out of memory for the KV cache");
  EXPECT_EQ(runtime.body().at("error").at("type"), "server_error");

  const ApiError unknown = error_from_exception(std::make_exception_ptr(42));
  EXPECT_EQ(unknown.status(), 500);
  EXPECT_EQ(unknown.body().at("error").at("message"), "internal error");

  const ApiError api = error_from_exception(std::make_exception_ptr(ApiError(413, "the request body is too large")));
  EXPECT_EQ(api.status(), 413);
  EXPECT_EQ(api.body().at("error").at("message"), "the request body is too large");
}

// A DataSink that collects what a content provider writes, like httplib's while the client is
// connected (or refuses every write once `gone`).
struct CollectingSink {
  httplib::DataSink sink;
  std::string out;
  bool done = false;
  bool gone = false;
  CollectingSink() {
    sink.write = [this](const char* d, size_t n) {
      if (gone) return false;
      out.append(d, n);
      return true;
    };
    sink.done = [this] { done = true; };
  }
};

TEST(ServeReplies, AStreamedReplyThatFailsEndsWithAnErrorEvent) {
  CollectingSink s;
  ReplyWriter w(s.sink, ": queued\n\n");
  const std::string first = sse({{"choices", json::array()}});
  const bool sent = reply_or_error(w, s.sink, true, [&]() -> bool {
    w.write(first);
    throw std::runtime_error("the backend failed mid-reply");
  });
  EXPECT_TRUE(sent);
  EXPECT_TRUE(s.done);
  ASSERT_EQ(s.out.compare(0, first.size(), first), 0) << s.out;
  const std::string event = s.out.substr(first.size());
  ASSERT_GT(event.size(), 8u);
  ASSERT_EQ(event.compare(0, 6, "data: "), 0) << event;
  ASSERT_EQ(event.compare(event.size() - 2, 2, "\n\n"), 0) << event;
  const json e = error_of(event.substr(6, event.size() - 8));
  EXPECT_EQ(e.at("message"), "the backend failed mid-reply");
  EXPECT_EQ(e.at("type"), "server_error");
}

TEST(ServeReplies, ANonStreamedReplyThatFailsIsOneErrorObject) {
  CollectingSink s;
  ReplyWriter w(s.sink, " ");
  const bool sent = reply_or_error(w, s.sink, false, [&]() -> bool {
    w.write(" ");  // a heartbeat while it waited: JSON whitespace before the body
    throw std::runtime_error("sampler: no token left after top-p");
  });
  EXPECT_TRUE(sent);
  EXPECT_TRUE(s.done);
  const json e = error_of(s.out);  // the whole reply parses as one JSON object
  EXPECT_EQ(e.at("message"), "sampler: no token left after top-p");
  EXPECT_EQ(e.at("type"), "server_error");
}

TEST(ServeReplies, AReplyWhoseClientLeftIsDroppedWithoutClosing) {
  CollectingSink s;
  ReplyWriter w(s.sink, " ");
  s.gone = true;
  const bool sent = reply_or_error(w, s.sink, true, [&] { return w.write(sse({{"x", 1}})); });
  EXPECT_FALSE(sent);
  EXPECT_FALSE(s.done);
  EXPECT_TRUE(s.out.empty());
}

TEST(ServeReplies, ASuccessfulReplyIsClosed) {
  CollectingSink s;
  ReplyWriter w(s.sink, " ");
  const bool sent = reply_or_error(w, s.sink, false, [&] { return w.write("{\"object\":\"text_completion\"}"); });
  EXPECT_TRUE(sent);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.out, "{\"object\":\"text_completion\"}");
}

TEST(ServeReplies, HeartbeatsAreSentAtMostEveryHalfSecondAndTellAGoneClient) {
  CollectingSink s;
  ReplyWriter w(s.sink, ": queued\n\n");
  EXPECT_TRUE(w.heartbeat());  // too soon after the writer started: nothing sent
  EXPECT_EQ(s.out, "");
  std::this_thread::sleep_for(std::chrono::milliseconds(520));
  EXPECT_TRUE(w.heartbeat());
  EXPECT_EQ(s.out, ": queued\n\n");
  EXPECT_TRUE(w.heartbeat());  // again too soon
  EXPECT_EQ(s.out, ": queued\n\n");
  s.gone = true;
  std::this_thread::sleep_for(std::chrono::milliseconds(520));
  EXPECT_FALSE(w.heartbeat());  // the write failed: the client is gone
}

}  // namespace
}  // namespace jetmoe::cli
