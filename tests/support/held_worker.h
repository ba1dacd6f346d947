// A worker of DecodeRowLoops held inside the first piece it publishes, as a stopped vCPU would
// hold it (DecodeRowLoops::set_piece_hook_for_testing), for the tests of the redo. Header-only:
// the thread sanitizer build of scripts/test.sh compiles decode_row_loops_test.cpp without the
// .cpp files of tests/support.
//
// While a HeldWorker lives, the first worker piece is held until release(); a watchdog releases
// it after 10 s, so a loop that waited for the held worker (no redo) makes the test's checks fail
// instead of hanging it. The destructor releases it and removes the hook.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "ops/cpu/decode_row_loops.h"

namespace jetmoe::test {

class HeldWorker {
 public:
  HeldWorker() {
    state().store(kArmed);
    DecodeRowLoops::set_piece_hook_for_testing(&hold_first_piece);
    watchdog_ = std::thread([this] {
      for (int i = 0; i < 1000 && !done_.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      release();
    });
  }
  ~HeldWorker() {
    done_.store(true);
    watchdog_.join();
    release();
    DecodeRowLoops::set_piece_hook_for_testing(nullptr);
  }
  HeldWorker(const HeldWorker&) = delete;
  HeldWorker& operator=(const HeldWorker&) = delete;

  // Whether a worker is held in its piece now.
  static bool holding() { return state().load() == kHolding; }
  // Lets the held worker (if any) go on; no later piece is held.
  static void release() { state().store(kReleased); }

 private:
  enum { kArmed = 0, kHolding = 1, kReleased = 2 };
  // The hook is a plain function, so its state is a global.
  static std::atomic<int>& state() {
    static std::atomic<int> s{kReleased};
    return s;
  }
  static void hold_first_piece() {
    int armed = kArmed;
    if (!state().compare_exchange_strong(armed, kHolding)) return;
    while (state().load() == kHolding) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }

  std::atomic<bool> done_{false};
  std::thread watchdog_;
};

}  // namespace jetmoe::test
