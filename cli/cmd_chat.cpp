// jetmoe chat: an interactive terminal chat (libedit line editing and history), or one answer
// when stdin is not a terminal (`echo "question" | jetmoe chat`). The conversation logic lives in
// runtime/chat_session.h; this file is the terminal around it.
#include <editline/readline.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "cli/atomic_file.h"
#include "cli/common_options.h"
#include "runtime/chat_session.h"

namespace jetmoe::cli {
namespace {

struct ChatOptions {
  ModelOptions model;
  std::string system;
  std::string chat_template;
  int n_predict = -1;
  SamplingParams sampling;
  long long seed = -1;
  bool ignore_eos = false;
};

// Ctrl-C while a reply streams stops the reply; Ctrl-C at the prompt (or a second one before the
// reply has stopped) quits. The handler only touches lock-free atomics and async-signal-safe calls.
std::atomic<bool> g_generating{false};
std::atomic<bool> g_stop_reply{false};

extern "C" void on_sigint(int) {
  if (g_generating.load() && !g_stop_reply.load()) {
    g_stop_reply.store(true);
    return;
  }
  // libedit has already put the terminal back in cooked mode before calling us.
  const char nl = '\n';
  (void)!write(STDOUT_FILENO, &nl, 1);
  _exit(0);
}

void install_sigint() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

// One message from the terminal. A line ending in '\' continues on the next line; a line that is
// just """ opens a block closed by another """. Returns false on Ctrl-D.
bool read_message(std::string& out) {
  out.clear();
  bool block = false;
  for (const char* prompt = "> ";;) {
    // libedit prints the prompt first and only then switches the terminal to its own mode (at its
    // first read), so a Ctrl-D pressed just as the prompt appeared met the cooked terminal, which
    // turned it into an end-of-file mark that the switch then dropped: the chat ignored it (a pty
    // script hit this once in 9-20 runs; 0 in 60 after). Switching first closes that window.
    rl_prep_terminal(1);
    std::unique_ptr<char, decltype(&std::free)> line(readline(prompt), &std::free);
    if (!line) return false;
    std::string s(line.get());
    if (s == "\"\"\"") {
      if (block) break;
      block = true;
      prompt = ". ";
      continue;
    }
    if (block) {
      out += s + "\n";
      continue;
    }
    if (!s.empty() && s.back() == '\\') {
      s.pop_back();
      out += s + "\n";
      prompt = ". ";
      continue;
    }
    out += s;
    break;
  }
  if (block && !out.empty()) out.pop_back();
  if (!out.empty()) add_history(out.c_str());
  return true;
}

class ChatRepl {
 public:
  ChatRepl(ChatOptions& o, LoadedModel& lm)
      : lm_(lm),
        session_(*lm.model, lm.files->require_tokenizer(), ChatFormat::for_model(*lm.files, o.chat_template),
                 {.ctx_size = lm.ctx_size, .max_new_tokens = o.n_predict, .ignore_eos = o.ignore_eos}),
        sampler_(o.sampling, lm.files->config.vocab_size) {
    session_.set_system(o.system);
  }

  void run_interactive() {
    std::fprintf(stderr, "jetmoe chat: %s, context %d tokens. /help for commands; Ctrl-C stops a reply, Ctrl-D quits.\n",
                 lm_.files->path.c_str(), session_.ctx_size());
    install_sigint();
    rl_initialize();  // once, before read_message's rl_prep_terminal needs the editor (readline would make it)
    std::string msg;
    while (read_message(msg)) {
      if (msg.empty()) continue;
      if (msg[0] == '/' && command(msg)) continue;
      reply(msg);
    }
    std::fputs("\n", stdout);
  }

  void run_once(const std::string& input) {
    std::string msg = input;
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    if (msg.find_first_not_of(" \t\r\n") == std::string::npos) throw std::runtime_error("no message on stdin");
    reply(msg);
  }

 private:
  void reply(const std::string& msg) {
    ChatReply r;
    g_stop_reply = false;
    g_generating = true;
    try {
      r = session_.send(msg, sampler_, [](const std::string& text) {
        std::fputs(text.c_str(), stdout);
        std::fflush(stdout);
        return !g_stop_reply.load();
      });
    } catch (const ContextFullError& e) {
      g_generating = false;
      std::fprintf(stderr, "[not sent: %s]\n", e.what());
      return;
    } catch (const std::invalid_argument& e) {
      g_generating = false;
      std::fprintf(stderr, "[not sent: %s]\n", e.what());
      return;
    }
    g_generating = false;
    std::fputs("\n", stdout);
    std::fflush(stdout);
    last_ = r;
    if (r.interrupted) std::fprintf(stderr, "[reply stopped]\n");
    if (r.dropped_messages > 0)
      std::fprintf(stderr, "[context full: dropped the %d oldest messages; the system prompt is kept]\n", r.dropped_messages);
    if (r.stats.context_full) std::fprintf(stderr, "[the reply filled the context]\n");
    std::fprintf(stderr, "[prompt %d tokens (%d cached) %.1f tok/s | reply %d tokens %.1f tok/s]\n", r.stats.prompt_tokens,
                 r.reused_tokens, r.stats.prompt_tps(), r.stats.generated_tokens, r.stats.generate_tps());
  }

  // Returns false when the line is not a command (it is then sent as a message).
  bool command(const std::string& line) {
    const auto sp = line.find(' ');
    const std::string cmd = line.substr(0, sp);
    std::string arg = sp == std::string::npos ? "" : line.substr(sp + 1);
    try {
      if (cmd == "/help") {
        std::fputs("/reset  /system TEXT  /save FILE  /load FILE  /stats  /quit\n", stderr);
      } else if (cmd == "/reset") {
        session_.reset();
        std::fputs("[conversation cleared; the system prompt is kept]\n", stderr);
      } else if (cmd == "/system") {
        session_.set_system(arg);
        std::fprintf(stderr, "[system prompt %s]\n", arg.empty() ? "removed" : "set");
      } else if (cmd == "/save") {
        if (arg.empty()) throw std::invalid_argument("usage: /save FILE");
        write_file_atomic(arg, session_.to_json().dump(2) + "\n");  // an earlier save is never half overwritten
        std::fprintf(stderr, "[saved %zu messages to %s]\n", session_.turns().size(), arg.c_str());
      } else if (cmd == "/load") {
        if (arg.empty()) throw std::invalid_argument("usage: /load FILE");
        session_.load_json(nlohmann::json::parse(read_text_file(arg)));
        std::fprintf(stderr, "[loaded %zu messages from %s]\n", session_.turns().size(), arg.c_str());
      } else if (cmd == "/stats") {
        std::fprintf(stderr, "[%zu messages, %d of %d context tokens cached | last: prompt %.1f tok/s, reply %.1f tok/s | seed %llu]\n",
                     session_.turns().size(), session_.context_tokens(), session_.ctx_size(), last_.stats.prompt_tps(),
                     last_.stats.generate_tps(), static_cast<unsigned long long>(sampler_.seed()));
      } else if (cmd == "/quit" || cmd == "/exit") {
        std::fputs("\n", stdout);
        std::exit(0);
      } else {
        return false;
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "[%s: %s]\n", cmd.c_str(), e.what());
    }
    return true;
  }

  LoadedModel& lm_;
  ChatSession session_;
  Sampler sampler_;
  ChatReply last_;
};

void run_chat(ChatOptions& o) {
  o.sampling.seed = o.seed < 0 ? random_seed() : static_cast<uint64_t>(o.seed);
  LoadedModel lm = load_model(o.model);
  ChatRepl repl(o, lm);
  if (isatty(STDIN_FILENO)) {
    repl.run_interactive();
  } else {
    repl.run_once(read_text_file("-"));
  }
}

}  // namespace

void add_chat_command(CLI::App& app) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* sub = app.add_subcommand("chat", "Interactive chat in the terminal (one answer when stdin is not a terminal)");
  o->model.add_to(*sub);
  sub->add_option("--sys,--system-prompt", o->system, "System prompt (llama.cpp spells it -sys; CLI11 allows one-letter short flags only)");
  sub->add_option("--chat-template", o->chat_template,
                  "Built-in template instead of the checkpoint's: zephyr, chatml, llama2, mistral, plain")
      ->check(CLI::IsMember(builtin_template_names()));
  sub->add_option("-n,--n-predict", o->n_predict, "Most tokens per reply (-1: until the end of the turn)")->check(CLI::Range(-1, 1 << 30));
  add_sampling_options(*sub, o->sampling, false);
  sub->add_option("-s,--seed", o->seed, "Random seed (-1: random)");
  sub->add_flag("--ignore-eos", o->ignore_eos, "Keep generating past the end of the turn (until -n or the context is full)");
  sub->callback([o] { run_chat(*o); });
}

}  // namespace jetmoe::cli
