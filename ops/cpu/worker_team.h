// WorkerTeam: the threads that run the CPU backend's many short parallel loops of a decode step
// (every matmul's weight rows, one item per thread's lane: ops/cpu/row_lanes.h; attention over
// the KV heads).
//
// Why not an OpenMP region per loop: a decode step of JetMoE-8B runs about 150 of them, each a
// few hundred microseconds of streaming. With passive waiting (which jetmoe needs, see
// docs/performance.md "Threads on a busy machine") every region start wakes a sleeping thread
// through the kernel; on this project's 2-vCPU VM that cost about 30 us per region, and a 4.7 MB
// matrix pair streamed at 76-84% of the read probe through OpenMP against 88-97% through this
// team (measured alternately in one process). Spinning OpenMP threads (GOMP_SPINCOUNT) remove the
// wake-up but collapse when another process shares a core, because every region ends in a
// barrier that waits for all threads, including one the scheduler has parked behind the other
// process.
//
// This team does neither: after a loop its workers spin for a short while (kSpinMicros) watching
// for the next one, then sleep on a futex (std::atomic::wait). Items are claimed one at a time by
// whoever is running, the caller included, and a loop ends when every item is *done*, not when
// every thread has checked in: a worker that the scheduler did not run simply takes nothing. A
// late worker cannot take an item of a newer loop by mistake: the claim counter carries the
// loop's number (epoch) and a claim is a compare-and-swap on both.
//
// The team follows OpenMP's thread count (omp_get_max_threads() of the calling thread, i.e. -t):
// it has that many threads minus one, and is rebuilt when the count changes. One loop runs at a
// time (run() holds a mutex); a loop body must not call run() itself. An exception thrown by a
// body is rethrown by run() after the loop's other items finished.
//
// A loop may also end early (EarlyEnd): its caller decides that an item still running elsewhere
// is no longer needed (CpuBackend redid the rows of a thread the machine stopped,
// ops/cpu/decode_row_loops.h), and run() returns while that thread is still in the body. Its
// item then counts for nothing: the done count, like the claim word, carries the loop's epoch.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace jetmoe {

class WorkerTeam {
 public:
  using Body = std::function<void(int64_t item)>;
  using Tail = std::function<void()>;

  // For a loop that may end before all its items returned. Threads still in the body go on
  // after run() returned, so the body object and everything it reads must outlive them; the
  // body learns through loop_epoch() whether it belongs to the loop its owner now runs.
  struct EarlyEnd {
    // Called by run() on its thread, again and again, once it has no item left to claim while
    // items still run elsewhere; run() returns as soon as it returns true.
    const std::function<bool()>* finished = nullptr;
    // Where run() stores the loop's epoch before any item can be claimed (may be null).
    std::atomic<uint32_t>* epoch = nullptr;
  };

  // The process's team (created on first use).
  static WorkerTeam& shared();

  WorkerTeam() = default;
  ~WorkerTeam();
  WorkerTeam(const WorkerTeam&) = delete;
  WorkerTeam& operator=(const WorkerTeam&) = delete;

  // Runs body(i) for every i in [0, n_items), spread over omp_get_max_threads() threads (this
  // one included); returns when all are done. Runs inline on this thread when `parallel` is false
  // (the caller's "too little work to share"), n_items < 2 or one thread is asked. `tail` (may
  // be null) runs on this thread once it has no more items to claim, before it waits for items
  // still running elsewhere (CpuBackend: fetching what the next op reads, Backend::read_soon).
  void run(int64_t n_items, const Body& body, bool parallel = true, const Tail* tail = nullptr,
           const EarlyEnd* early = nullptr);

  // Inside a body called by a parallel run(): the epoch of the loop whose item this thread runs
  // (the value run() stored through EarlyEnd::epoch). 0 on a thread that never ran one.
  static uint32_t loop_epoch();

  // True on the team's worker threads, false on any caller of run().
  static bool on_worker_thread();

  // Threads of the current team, the caller included (0 before the first parallel run).
  int threads() const { return static_cast<int>(workers_.size()) + (workers_.empty() ? 0 : 1); }

  // How long a worker spins for the next loop before it sleeps.
  static constexpr int64_t kSpinMicros = 200;

 private:
  void resize(int threads);
  void stop_workers();
  void worker_loop(uint32_t seen);  // seen: the epoch of the last loop it need not run
  // Claims and runs items of loop `epoch` until none is left.
  void work(uint32_t epoch);

  std::mutex run_mutex_;
  std::vector<std::thread> workers_;

  // epoch << 32 | next unclaimed item. The epoch changes (+1) when a loop is posted.
  std::atomic<uint64_t> claim_{0};
  std::atomic<uint64_t> done_{0};  // epoch << 32 | items of that loop done
  std::atomic<int64_t> n_items_{0};
  std::atomic<const Body*> body_{nullptr};
  std::atomic<uint32_t> wake_{0};  // the epoch again, as a 32-bit word sleeping workers wait on
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stopping_{false};
  uint32_t epoch_ = 0;

  std::mutex error_mutex_;
  std::exception_ptr error_;  // the first exception of loop error_epoch_
  uint32_t error_epoch_ = 0;
};

}  // namespace jetmoe
