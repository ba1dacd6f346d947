#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace jetmoe::cli {

Progress::Progress(std::string what, int64_t total)
    : what_(std::move(what)), total_(total), tty_(isatty(STDERR_FILENO) != 0) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void Progress::update(int64_t done, int64_t tokens, bool force) {
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_).count();
  if (!force && since < (tty_ ? 0.2 : 10.0)) return;
  last_ = now;
  const double el = std::chrono::duration<double>(now - start_).count();
  const double rps = el > 0 ? done / el : 0, tps = el > 0 ? tokens / el : 0;
  char eta[32] = "";
  if (total_ > 0 && rps > 0) {
    const int s = static_cast<int>((total_ - done) / rps);
    std::snprintf(eta, sizeof eta, " ETA %d:%02d:%02d", s / 3600, s / 60 % 60, s % 60);
  }
  char line[256];
  if (total_ > 0)
    std::snprintf(line, sizeof line, "%s %lld/%lld (%.0f%%) | %.1f rec/s | %.0f tok/s |%s", what_.c_str(),
                  static_cast<long long>(done), static_cast<long long>(total_), 100.0 * done / total_, rps, tps, eta);
  else
    std::snprintf(line, sizeof line, "%s %lld | %.1f rec/s | %.0f tok/s", what_.c_str(), static_cast<long long>(done),
                  rps, tps);
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s", line);
  else
    std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

void Progress::finish(int64_t done, int64_t tokens) {
  update(done, tokens, true);
  if (tty_) std::fputc('\n', stderr);
}

}  // namespace jetmoe::cli
