// jetmoe serve: how a handler's outcome becomes an HTTP reply. Every failure turns into an
// OpenAI-shaped error body ({"error": {...}}, cli/serve_api.h) with its status, and the server
// keeps serving: an ApiError keeps its own status, std::invalid_argument (text the tokenizer
// refuses) is a 400, any other exception a 500 "server_error". Header-only so the tests drive
// these paths with a plain httplib::Response / DataSink (tests/cli/serve_replies_test.cpp); the
// routes that use them are in cmd_serve.cpp.
#pragma once

#include <httplib.h>

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli/serve_api.h"

namespace jetmoe::cli {

inline void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(e.body().dump(), "application/json");
}

// The error an exception that reached httplib stands for (its exception handler, for routes
// without guarded()): an ApiError as it is, any other std::exception a 500 with its message, and
// anything else a 500 "internal error".
inline ApiError error_from_exception(std::exception_ptr ep) {
  std::string msg = "internal error";
  try {
    std::rethrow_exception(ep);
  } catch (const ApiError& e) {
    return e;
  } catch (const std::exception& e) {
    msg = e.what();
  } catch (...) {
  }
  return ApiError(500, msg, "server_error");
}

// Runs a handler body, turning every failure into an OpenAI-shaped error reply: as
// error_from_exception, except that std::invalid_argument (e.g. text the tokenizer refuses) is the
// client's fault, a 400.
template <class F>
void guarded(httplib::Response& res, F&& body) {
  try {
    body();
  } catch (const std::invalid_argument& e) {
    send_error(res, ApiError(400, e.what()));
  } catch (...) {
    send_error(res, error_from_exception(std::current_exception()));
  }
}

inline std::string sse(const nlohmann::json& j) { return "data: " + j.dump() + "\n\n"; }

// Writes a reply's pieces to its sink, and the reply's heartbeat (": queued\n\n" for SSE, " "
// for JSON: valid whitespace) at most every 0.5 s while a non-streamed reply is generated, so a
// failed write tells that the client is gone.
class ReplyWriter {
 public:
  ReplyWriter(httplib::DataSink& sink, std::string heartbeat) : sink_(sink), heartbeat_(std::move(heartbeat)) {}
  bool write(const std::string& s) { return sink_.write(s.data(), s.size()); }
  bool heartbeat() {
    const auto t = std::chrono::steady_clock::now();
    if (t - last_ < std::chrono::milliseconds(500)) return true;
    last_ = t;
    return write(heartbeat_);
  }

 private:
  httplib::DataSink& sink_;
  std::string heartbeat_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// The rest of a content provider once it holds the model: `body` generates and writes the reply
// (false: the client went away; the response is dropped, the sink is not closed). An exception
// becomes an OpenAI-style 500 error in the reply (an SSE event when streaming, after whatever
// was already sent), and the response then ends normally.
template <class Body>
bool reply_or_error(ReplyWriter& w, httplib::DataSink& sink, bool stream, Body&& body) {
  try {
    if (!body()) return false;
  } catch (const std::exception& e) {
    const nlohmann::json err = ApiError(500, e.what(), "server_error").body();
    w.write(stream ? sse(err) : err.dump());
  }
  sink.done();
  return true;
}

}  // namespace jetmoe::cli
