#include "ops/cpu/worker_team.h"

#include <omp.h>
#include <sched.h>

#include <chrono>
#include <stdexcept>

namespace jetmoe {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

thread_local bool t_worker = false;
thread_local uint32_t t_loop_epoch = 0;

inline uint32_t epoch_of(uint64_t claim) { return static_cast<uint32_t>(claim >> 32); }

// The low word of a claim when no item may be taken (at or past any loop's count).
constexpr uint32_t kClosed = 0xffffffffu;

}  // namespace

WorkerTeam& WorkerTeam::shared() {
  static WorkerTeam team;
  return team;
}

WorkerTeam::~WorkerTeam() { stop_workers(); }

void WorkerTeam::stop_workers() {
  if (workers_.empty()) return;
  stopping_.store(true);
  wake_.fetch_add(1);
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  stopping_.store(false);
}

void WorkerTeam::resize(int threads) {
  stop_workers();
  // A worker starts from the epoch of the last finished loop, not from what it reads when it
  // first runs: the next loop may already be posted by then.
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, e = epoch_] { worker_loop(e); });
}

void WorkerTeam::work(uint32_t epoch) {
  for (;;) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    if (epoch_of(c) != epoch) return;  // a newer loop: this one is finished
    const int64_t item = static_cast<int64_t>(static_cast<uint32_t>(c));
    // If this reads the next loop's count, the claim word was closed before it (see run()), so
    // the compare-and-swap below fails instead of taking an item past this loop's end.
    if (item >= n_items_.load(std::memory_order_acquire)) return;
    // Read before the claim, for the same reason: a body posted by a newer loop was stored after
    // this loop's claim word was closed, so with it in hand the claim fails. (After the claim
    // the pointer could already be a newer loop's when this loop ended early.)
    const Body* body = body_.load(std::memory_order_acquire);
    // The claim succeeds only while the counter still names this loop and this item, so `body`
    // belongs to it, and the loop cannot end (unless early) before the item is done.
    if (!claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    t_loop_epoch = epoch;
    try {
      (*body)(item);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (error_epoch_ == epoch && !error_) error_ = std::current_exception();
    }
    // Counted only while the count still belongs to this loop (a loop that ended early may
    // have been followed by others).
    uint64_t d = done_.load(std::memory_order_relaxed);
    while (epoch_of(d) == epoch &&
           !done_.compare_exchange_weak(d, d + 1, std::memory_order_acq_rel, std::memory_order_relaxed)) {
    }
  }
}

bool WorkerTeam::on_worker_thread() { return t_worker; }

uint32_t WorkerTeam::loop_epoch() { return t_loop_epoch; }

void WorkerTeam::worker_loop(uint32_t seen) {
  t_worker = true;
  while (!stopping_.load(std::memory_order_acquire)) {
    // Spin for the next loop, checking the clock every 64 pauses; then sleep.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
    uint64_t c = claim_.load(std::memory_order_acquire);
    for (int spins = 0; epoch_of(c) == seen && !stopping_.load(std::memory_order_relaxed);) {
      cpu_relax();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() > deadline) {
        sleepers_.fetch_add(1);
        const uint32_t w = wake_.load();
        c = claim_.load(std::memory_order_acquire);
        if (epoch_of(c) == seen && !stopping_.load()) wake_.wait(w);
        sleepers_.fetch_sub(1);
        deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
      }
      c = claim_.load(std::memory_order_acquire);
    }
    if (stopping_.load(std::memory_order_acquire)) return;
    seen = epoch_of(c);
    work(seen);
  }
}

void WorkerTeam::run(int64_t n_items, const Body& body, bool parallel, const Tail* tail, const EarlyEnd* early) {
  const int threads = omp_get_max_threads();
  if (!parallel || n_items < 2 || threads < 2) {  // inline (no items at all included)
    for (int64_t i = 0; i < n_items; ++i) body(i);
    if (tail) (*tail)();
    return;
  }
  if (n_items >= kClosed) throw std::invalid_argument("WorkerTeam::run: too many items in one loop");
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (threads != this->threads()) resize(threads);
  // Close the finished loop's claim word before its count changes: a worker that loaded the old
  // word and then reads the new count must see its compare-and-swap fail.
  claim_.store(static_cast<uint64_t>(epoch_) << 32 | kClosed, std::memory_order_seq_cst);
  n_items_.store(n_items, std::memory_order_release);
  body_.store(&body, std::memory_order_release);
  ++epoch_;
  {
    std::lock_guard<std::mutex> elock(error_mutex_);
    error_ = nullptr;
    error_epoch_ = epoch_;
  }
  done_.store(static_cast<uint64_t>(epoch_) << 32, std::memory_order_relaxed);
  if (early && early->epoch) early->epoch->store(epoch_, std::memory_order_seq_cst);
  claim_.store(static_cast<uint64_t>(epoch_) << 32, std::memory_order_seq_cst);
  // A worker about to sleep reads wake_ before its last look at claim_; bumping wake_ after the
  // store above makes its wait return at once, so no wake-up is lost.
  wake_.fetch_add(1, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) > 0) wake_.notify_all();
  work(epoch_);
  if (tail) {
    try {  // the other threads' items still use `body`: wait for them before rethrowing
      (*tail)();
    } catch (...) {
      std::lock_guard<std::mutex> elock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
  // Items still running on other threads: spin a while, then let the scheduler run them (or,
  // for a loop that may end early, until its caller says they are no longer needed).
  const auto done = [&] { return static_cast<uint32_t>(done_.load(std::memory_order_acquire)); };
  for (int spins = 0; done() < n_items; ++spins) {
    if (early && early->finished && (*early->finished)()) break;
    if (spins < 4096)
      cpu_relax();
    else
      sched_yield();
  }
  std::lock_guard<std::mutex> elock(error_mutex_);
  if (error_) std::rethrow_exception(error_);
}

}  // namespace jetmoe
