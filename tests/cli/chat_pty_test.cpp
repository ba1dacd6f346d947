// `jetmoe chat` through a pseudo-terminal (forkpty), as a person would use it: a streamed reply,
// /reset, Ctrl-C stopping a reply, Ctrl-C at the prompt quitting, Ctrl-D typed during a reply
// quitting when it ends; and the non-terminal mode.
#include <gtest/gtest.h>

#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "support/test_paths.h"

namespace {

using namespace std::chrono_literals;

class PtyChat {
 public:
  explicit PtyChat(std::vector<std::string> extra) {
    std::vector<std::string> argv = {jetmoe::test::jetmoe_binary(), "chat", "-m", jetmoe::test::austen_model_dir().string(),
                                     "-t", "2", "-c", "1024", "--temp", "0"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    winsize ws{24, 200, 0, 0};
    pid_ = forkpty(&master_, nullptr, nullptr, &ws);
    if (pid_ < 0) throw std::runtime_error("forkpty failed");
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      setenv("TERM", "dumb", 1);
      execv(args[0], args.data());
      _exit(127);
    }
    argv_ = std::move(argv);
  }
  ~PtyChat() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (master_ >= 0) close(master_);
  }

  void send(const std::string& s) { ASSERT_EQ(write(master_, s.data(), s.size()), static_cast<ssize_t>(s.size())); }

  // Reads until `needle` appears after `from` in the transcript or the timeout passes.
  bool wait_for(const std::string& needle, std::chrono::seconds timeout = 60s) {
    const auto t0 = std::chrono::steady_clock::now();
    while (out_.find(needle, mark_) == std::string::npos) {
      if (std::chrono::steady_clock::now() - t0 > timeout) return false;
      if (!read_some(100)) return out_.find(needle, mark_) != std::string::npos;
    }
    mark_ = out_.find(needle, mark_) + needle.size();
    return true;
  }

  // Waits for the child to exit (bounded); returns its exit status or -1.
  int wait_exit(std::chrono::seconds timeout = 10s) {
    const auto t0 = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - t0 < timeout) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      read_some(50);
    }
    return -1;
  }

  const std::string& transcript() const { return out_; }

 private:
  // False when the terminal has closed.
  bool read_some(int ms) {
    pollfd p{master_, POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return true;
    char buf[4096];
    const ssize_t n = read(master_, buf, sizeof buf);
    if (n <= 0) return false;
    out_.append(buf, static_cast<size_t>(n));
    return true;
  }

  std::vector<std::string> argv_;
  int master_ = -1;
  pid_t pid_ = -1;
  std::string out_;
  size_t mark_ = 0;
};

TEST(ChatPty, StreamedReplyResetAndCtrlC) {
  PtyChat chat({"--sys", "You are a character in a novel by Jane Austen."});
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("Do you not think Mr. Darcy very proud?\r");
  ASSERT_TRUE(chat.wait_for("Yes, very.")) << chat.transcript();  // the golden greedy reply
  ASSERT_TRUE(chat.wait_for("tok/s]")) << chat.transcript();      // the speed line
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("/stats\r");
  ASSERT_TRUE(chat.wait_for("2 messages")) << chat.transcript();
  chat.send("/reset\r");
  ASSERT_TRUE(chat.wait_for("conversation cleared")) << chat.transcript();
  chat.send("/stats\r");
  ASSERT_TRUE(chat.wait_for("0 messages")) << chat.transcript();
  // After /reset the same question gets the same (golden) answer: the history is really gone.
  chat.send("Do you not think Mr. Darcy very proud?\r");
  ASSERT_TRUE(chat.wait_for("Yes, very.")) << chat.transcript();
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("\x03");  // Ctrl-C at the prompt quits
  EXPECT_EQ(chat.wait_exit(), 0) << chat.transcript();
}

TEST(ChatPty, CtrlCStopsAReplyThenCtrlDQuits) {
  // --ignore-eos makes the reply run to -n tokens, long enough to interrupt.
  PtyChat chat({"--ignore-eos", "-n", "900"});
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("Tell me everything about Pemberley.\r");
  ASSERT_TRUE(chat.wait_for("Tell me everything about Pemberley.")) << chat.transcript();  // the echo
  std::this_thread::sleep_for(300ms);
  chat.send("\x03");
  ASSERT_TRUE(chat.wait_for("[reply stopped]")) << chat.transcript();
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("\x04");  // Ctrl-D quits
  EXPECT_EQ(chat.wait_exit(), 0) << chat.transcript();
}

TEST(ChatPty, CtrlDDuringAReplyQuitsWhenItEnds) {
  // The reply runs to -n tokens and ends by itself (a Ctrl-C would flush the terminal's typed-ahead
  // input, the Ctrl-D with it, as in a shell). Its first line is the greedy reply's; 900 tokens
  // leave the Ctrl-D time to arrive while the rest streams. The next prompt takes it and quits.
  PtyChat chat({"--ignore-eos", "-n", "900"});
  ASSERT_TRUE(chat.wait_for("> ")) << chat.transcript();
  chat.send("Tell me everything about Pemberley.\r");
  ASSERT_TRUE(chat.wait_for("Tell me everything about Pemberley.")) << chat.transcript();  // the echo
  ASSERT_TRUE(chat.wait_for("And what is the matter?")) << chat.transcript();            // the reply started
  chat.send("\x04");
  ASSERT_TRUE(chat.wait_for("reply 900 tokens")) << chat.transcript();  // the reply ran to its end
  EXPECT_EQ(chat.wait_exit(std::chrono::seconds(20)), 0) << chat.transcript();
}

TEST(ChatNonInteractive, PipedQuestionIsAnsweredOnce) {
  std::string out;
  const std::string cmd = "echo 'Do you not think Mr. Darcy very proud?' | " + jetmoe::test::jetmoe_binary() + " chat -m '" +
                          jetmoe::test::austen_model_dir().string() +
                          "' -t 2 --temp 0 --sys 'You are a character in a novel by Jane Austen.' 2>/dev/null";
  ASSERT_EQ(jetmoe::test::run_command(cmd, &out), 0);
  EXPECT_EQ(out, "Yes, very.\n");
  // Empty and binary input: a clear error or a reply, never a crash.
  EXPECT_EQ(jetmoe::test::run_command("printf '' | " + jetmoe::test::jetmoe_binary() + " chat -t 2 2>/dev/null", &out), 1);
  const int rc = jetmoe::test::run_command("printf '\\xff\\xfe\\x00abc' | " + jetmoe::test::jetmoe_binary() + " chat -t 2 -n 4 2>&1", &out);
  EXPECT_TRUE(rc == 0 || rc == 1) << out;
}

}  // namespace
