// jetmoe serve: an OpenAI-compatible HTTP server (cpp-httplib). Routes and wire formats live here;
// request validation in serve_api.cpp, the model and its queue in serve_engine.cpp.
#include <httplib.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <iostream>
#include <memory>

#include "cli/common_options.h"
#include "cli/serve_api.h"
#include "cli/serve_engine.h"
#include "cli/serve_replies.h"

namespace jetmoe::cli {
namespace {

using nlohmann::json;

struct ServeOptions {
  ModelOptions model;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  std::string alias;
  std::string chat_template;
  int max_queue = 8;
  size_t max_body = 4 << 20;
  SamplingParams sampling;
};

long long now_s() { return static_cast<long long>(std::time(nullptr)); }

std::string next_id(const char* prefix) {
  static std::atomic<uint64_t> n{0};
  return std::string(prefix) + std::to_string(now_s()) + "-" + std::to_string(n.fetch_add(1));
}

json usage(size_t prompt, size_t completion) {
  return {{"prompt_tokens", prompt}, {"completion_tokens", completion}, {"total_tokens", prompt + completion}};
}

// One admitted request, shared with the content provider that httplib runs after the handler.
// Responses are always chunked so that a failed write tells us the client is gone, even for a
// non-streamed reply (it gets a leading space now and then while it waits: valid JSON whitespace).
struct Job {
  ServeEngine::Ticket ticket;
  std::string heartbeat;  // ": queued\n\n" for SSE, " " for JSON
};

// Takes the model for `job`, keeping the connection checked while queued; false: client gone.
bool wait_for_model(ServeEngine& engine, const Job& job, httplib::DataSink& sink, std::unique_lock<std::timed_mutex>& lock) {
  lock = engine.acquire([&] { return sink.write(job.heartbeat.data(), job.heartbeat.size()); });
  return lock.owns_lock();
}

void chat_completions(ServeEngine& engine, const SamplingParams& defaults, const httplib::Request& req, httplib::Response& res) {
  auto cr = std::make_shared<ChatRequest>(parse_chat_request(parse_body(req.body), defaults));
  auto job = std::make_shared<Job>(Job{engine.admit(), cr->gen.stream ? ": queued\n\n" : " "});
  auto prompt = std::make_shared<std::vector<int32_t>>(engine.chat_prompt(*cr));
  const std::string id = next_id("chatcmpl-");
  const long long created = now_s();
  res.set_chunked_content_provider(cr->gen.stream ? "text/event-stream" : "application/json",
                                   [&engine, cr, job, prompt, id, created](size_t, httplib::DataSink& sink) {
    std::unique_lock<std::timed_mutex> lock;
    if (!wait_for_model(engine, *job, sink, lock)) return false;
    ReplyWriter w(sink, job->heartbeat);
    auto chunk = [&](const json& delta, const json& finish) {
      return w.write(sse({{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", engine.model_name()},
                          {"choices", {{{"index", 0}, {"delta", delta}, {"finish_reason", finish}}}}}));
    };
    return reply_or_error(w, sink, cr->gen.stream, [&] {
      if (cr->gen.stream && !chunk({{"role", "assistant"}, {"content", ""}}, nullptr)) return false;
      const GenResult r = engine.generate(*prompt, cr->gen, true, [&](const std::string& text) {
        return cr->gen.stream ? chunk({{"content", text}}, nullptr) : w.heartbeat();
      });
      if (r.cancelled) return false;
      if (cr->gen.stream) {
        chunk(json::object(), r.finish_reason);
        w.write("data: [DONE]\n\n");
      } else {
        w.write(json{{"id", id}, {"object", "chat.completion"}, {"created", created}, {"model", engine.model_name()},
                     {"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", r.text}}}, {"finish_reason", r.finish_reason}}}},
                     {"usage", usage(r.prompt_ids.size(), r.generated_ids.size())}}
                    .dump());
      }
      return true;
    });
  });
}

void completions(ServeEngine& engine, const SamplingParams& defaults, const httplib::Request& req, httplib::Response& res) {
  auto cr = std::make_shared<CompletionRequest>(parse_completion_request(parse_body(req.body), defaults, engine.vocab_size()));
  auto job = std::make_shared<Job>(Job{engine.admit(), cr->gen.stream ? ": queued\n\n" : " "});
  auto prompts = std::make_shared<std::vector<std::vector<int32_t>>>();
  for (const auto& p : cr->prompts) prompts->push_back(engine.completion_prompt(p, cr->gen));
  const std::string id = next_id("cmpl-");
  const long long created = now_s();
  res.set_chunked_content_provider(cr->gen.stream ? "text/event-stream" : "application/json",
                                   [&engine, cr, job, prompts, id, created](size_t, httplib::DataSink& sink) {
    std::unique_lock<std::timed_mutex> lock;
    if (!wait_for_model(engine, *job, sink, lock)) return false;
    ReplyWriter w(sink, job->heartbeat);
    auto chunk = [&](const std::string& text, const json& finish) {
      return w.write(sse({{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", engine.model_name()},
                          {"choices", {{{"text", text}, {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}}}}}));
    };
    return reply_or_error(w, sink, cr->gen.stream, [&] {
      json choices = json::array();
      size_t prompt_tokens = 0, completion_tokens = 0;
      for (size_t i = 0; i < prompts->size(); ++i) {
        const auto& ids = (*prompts)[i];
        const std::string prompt_text = cr->prompts[i].text ? *cr->prompts[i].text : engine.tokenizer().decode(ids);
        if (cr->gen.stream && cr->echo && !chunk(prompt_text, nullptr)) return false;
        const GenResult r = engine.generate(ids, cr->gen, false, [&](const std::string& text) {
          return cr->gen.stream ? chunk(text, nullptr) : w.heartbeat();
        });
        if (r.cancelled) return false;
        prompt_tokens += ids.size();
        completion_tokens += r.generated_ids.size();
        if (cr->gen.stream) {
          chunk("", r.finish_reason);
          w.write("data: [DONE]\n\n");
          break;
        }
        json lp = nullptr;
        if (cr->logprobs) {
          std::vector<int32_t> all = ids;
          all.insert(all.end(), r.generated_ids.begin(), r.generated_ids.end());
          lp = engine.logprobs(all, cr->echo ? 0 : ids.size(), *cr->logprobs);
        }
        choices.push_back({{"text", (cr->echo ? prompt_text : "") + r.text}, {"index", i}, {"logprobs", lp}, {"finish_reason", r.finish_reason}});
      }
      if (!cr->gen.stream)
        w.write(json{{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", engine.model_name()},
                     {"choices", choices}, {"usage", usage(prompt_tokens, completion_tokens)}}
                    .dump());
      return true;
    });
  });
}

void tokenize(ServeEngine& engine, const httplib::Request& req, httplib::Response& res) {
  const json b = parse_body(req.body);
  const char* key = b.contains("content") ? "content" : "text";
  if (!b.contains(key) || !b[key].is_string()) throw ApiError(400, "'content' must be a string", "invalid_request_error", "content");
  const bool add_special = b.contains("add_special") && b["add_special"].is_boolean() && b["add_special"].get<bool>();
  const std::string text = b[key].get<std::string>();
  const auto ids = add_special ? engine.tokenizer().encode_prompt(text) : engine.tokenizer().encode(text);
  json pieces = json::array();
  for (int32_t id : ids) pieces.push_back(engine.tokenizer().piece(id));
  res.set_content(json{{"tokens", ids}, {"pieces", pieces}}.dump(), "application/json");
}

void detokenize(ServeEngine& engine, const httplib::Request& req, httplib::Response& res) {
  const json b = parse_body(req.body);
  if (!b.contains("tokens") || !b["tokens"].is_array()) throw ApiError(400, "'tokens' must be an array of token ids", "invalid_request_error", "tokens");
  std::vector<int32_t> ids;
  for (const auto& x : b["tokens"]) {
    if (!x.is_number_integer() || x.get<long long>() < 0 || x.get<long long>() >= engine.vocab_size())
      throw ApiError(400, "'tokens' must hold token ids in 0.." + std::to_string(engine.vocab_size() - 1), "invalid_request_error", "tokens");
    ids.push_back(x.get<int32_t>());
  }
  // Generated text may end in half a UTF-8 character; JSON needs whole ones.
  res.set_content(json{{"content", engine.tokenizer().decode(ids)}}.dump(-1, ' ', false, json::error_handler_t::replace),
                  "application/json");
}

void run_serve(ServeOptions& o) {
  LoadedModel lm = load_model(o.model);
  std::string name = o.alias;
  if (name.empty()) {
    const std::string path = lm.files->path;
    const auto slash = path.find_last_of('/', path.size() > 1 ? path.size() - 2 : 0);
    name = slash == std::string::npos ? path : path.substr(slash + 1);
    while (!name.empty() && name.back() == '/') name.pop_back();
  }
  ServeEngine engine(lm, ChatFormat::for_model(*lm.files, o.chat_template), name, o.max_queue);
  const SamplingParams defaults = o.sampling;

  signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  httplib::Server svr;
  svr.set_payload_max_length(o.max_body);
  svr.set_keep_alive_timeout(2);
  // More workers than queue places, so a request beyond the queue still gets its 503 at once.
  // httplib's API takes ownership of a raw TaskQueue pointer.
  const int workers = o.max_queue + 4;
  svr.new_task_queue = [workers] { return new httplib::ThreadPool(static_cast<size_t>(workers)); };

  svr.set_pre_routing_handler([&o](const httplib::Request& req, httplib::Response& res) {
    if (o.api_key.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    if (auth == "Bearer " + o.api_key || req.get_header_value("X-Api-Key") == o.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_error(res, ApiError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')", "invalid_request_error", "", "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  svr.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    if (res.status == 413) {
      send_error(res, ApiError(413, "the request body is too large", "invalid_request_error", "", "payload_too_large"));
    } else if (res.status == 404) {
      send_error(res, ApiError(404, "no route for " + req.method + " " + req.path, "invalid_request_error", "", "not_found"));
    } else {
      const int status = res.status;
      send_error(res, ApiError(status, "HTTP error " + std::to_string(status)));
    }
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    send_error(res, error_from_exception(ep));
  });
  svr.set_logger([](const httplib::Request& req, const httplib::Response& res) {
    std::cerr << req.method << " " << req.path << " " << res.status << "\n";
  });

  svr.Get("/health", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"status", "ok"}, {"queued", engine.queued()}}.dump(), "application/json");
  });
  svr.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(json{{"object", "list"},
                         {"data", {{{"id", engine.model_name()}, {"object", "model"}, {"created", now_s()}, {"owned_by", "jetmoe"},
                                    {"context_length", engine.ctx_size()}}}}}
                        .dump(),
                    "application/json");
  });
  svr.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { chat_completions(engine, defaults, req, res); });
  });
  svr.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    guarded(res, [&] { completions(engine, defaults, req, res); });
  });
  svr.Post("/tokenize", [&](const httplib::Request& req, httplib::Response& res) { guarded(res, [&] { tokenize(engine, req, res); }); });
  svr.Post("/detokenize", [&](const httplib::Request& req, httplib::Response& res) { guarded(res, [&] { detokenize(engine, req, res); }); });

  if (!svr.bind_to_port(o.host, o.port)) throw std::runtime_error("cannot listen on " + o.host + ":" + std::to_string(o.port));
  std::cerr << "jetmoe serve: " << name << " on http://" << o.host << ":" << o.port << " (context " << lm.ctx_size
            << " tokens, queue " << o.max_queue << ")" << std::endl;
  if (!svr.listen_after_bind()) throw std::runtime_error("the server stopped unexpectedly");
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* sub = app.add_subcommand("serve", "OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, ...)");
  o->model.add_to(*sub);
  sub->add_option("--host", o->host, "Address to bind (default: loopback only)");
  sub->add_option("--port", o->port, "Port")->check(CLI::Range(0, 65535));
  sub->add_option("--api-key", o->api_key, "Require 'Authorization: Bearer KEY' on every request")->envname("JETMOE_API_KEY");
  sub->add_option("--alias", o->alias, "Model name reported by /v1/models (default: the folder name)");
  sub->add_option("--chat-template", o->chat_template, "Built-in template instead of the checkpoint's")
      ->check(CLI::IsMember(builtin_template_names()));
  sub->add_option("--max-queue", o->max_queue, "Requests waiting or running before new ones get 503")->check(CLI::Range(1, 1024));
  sub->add_option("--max-body", o->max_body, "Largest request body in bytes")->check(CLI::Range(size_t{1024}, size_t{1} << 30));
  add_sampling_options(*sub, o->sampling, true);
  sub->callback([o] { run_serve(*o); });
}

}  // namespace jetmoe::cli
