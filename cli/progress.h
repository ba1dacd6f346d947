// Progress on stderr for long jobs: a self-overwriting line when stderr is a terminal, a plain
// line every few seconds otherwise (logs stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace jetmoe::cli {

class Progress {
 public:
  // total == 0: unknown (no ETA).
  Progress(std::string what, int64_t total);
  void update(int64_t done, int64_t tokens, bool force = false);
  void finish(int64_t done, int64_t tokens);

 private:
  std::string what_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace jetmoe::cli
