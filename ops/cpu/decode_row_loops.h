// DecodeRowLoops: the weight loops of a decode step (quantized rows, one token) run so that a
// thread the machine stops in the middle of a piece cannot hold the step back.
//
// Why: on this project's 2-vCPU Zen 5 VM, in about 0.5% of decode's weight loops one thread
// stops for ~1.8 ms while holding a piece of rows (the machine's doing: nothing of jetmoe runs
// then); the other thread takes every other piece and then waits, and those waits were 2.6% of
// a token (docs/performance.md, the sixth Zen 5 session). The same happens whenever another
// process shares a core: the scheduler parks our thread for a time slice.
//
// How: a thread computes each piece into its own scratch and publishes which piece it holds
// (job, first row, rows) in one atomic word. Only the thread that moves that word from
// "computing" to "committing" writes the piece's rows of y and counts them. The caller, once it
// has no piece left to take and has waited kRedoAfterMicros for the rest, computes a held piece
// itself and tries the same move: whoever wins writes, the other drops its result. The loop ends
// when every row is counted (WorkerTeam::EarlyEnd), even while the stopped thread is still in
// the body. That thread, when it runs again, finishes its piece into its scratch, loses the
// move, finds no rows left and leaves. It never writes y late.
//
// What it reads meanwhile must stay put: each loop runs in one of kSlots slots that own a copy
// of the jobs, the quantized activations, the row lanes, the held words and the scratch; a slot
// is reused only after every thread left it (counted at the body's entry and exit, epoch
// checked), and the CPU backend waits for all slots to be left at the end of a step, before the
// weights could go away.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "ops/cpu/row_lanes.h"
#include "ops/cpu/worker_team.h"
#include "runtime/backend.h"

namespace jetmoe {

class DecodeRowLoops {
 public:
  // How long the caller waits for pieces still held elsewhere before it computes one itself: a
  // loop's threads end within 3 us of each other in 96% of loops (Zen 5 VM); a stopped thread
  // holds its piece for milliseconds. A redo of a piece whose thread was only slow costs at
  // most the piece (up to 1 MiB, ~40 us at one core's rate), 0.1-0.3 times per token here.
  static constexpr int64_t kRedoAfterMicros = 40;
  // Slots: a loop runs in the last loop's slot unless a stopped thread is still in it, then in
  // the next free one; the caller waits only when every slot holds a stopped thread.
  static constexpr int kSlots = 8;

  // The rows [r0, r1) of job j, one token: out[r - r0] = row r of j.w times the activations xq
  // (already quantized for j.dtype). CpuBackend passes its qmatvec.
  using RowKernel = void (*)(const MatmulJob& j, const uint8_t* xq, int64_t r0, int64_t r1, float* out);

  explicit DecodeRowLoops(RowKernel kernel);
  ~DecodeRowLoops();  // waits until every thread left every slot
  DecodeRowLoops(const DecodeRowLoops&) = delete;
  DecodeRowLoops& operator=(const DecodeRowLoops&) = delete;

  // Whether these jobs can run here: all quantized, one token each, few enough jobs and rows to
  // name a piece in one word. (Rows are cut in pieces of whole `quantum`s, as RowLanes does.)
  static bool fits(const MatmulJob* jobs, size_t n_jobs);

  // The jobs' activations, already quantized: job i's at data + offset[i] (bytes in all; run()
  // copies them into its slot).
  struct QuantizedActivations {
    const uint8_t* data = nullptr;
    const size_t* offset = nullptr;
    size_t bytes = 0;
  };
  // How the rows are split: over `threads` threads in row lanes (ops/cpu/row_lanes.h) of pieces
  // of whole `quantum`s, at least min_piece bytes, front pieces at most max_front bytes.
  struct Split {
    int threads = 1;
    int64_t quantum = 16;
    size_t min_piece = 0, max_front = 0;
  };
  // Runs once on the calling thread when at most `bytes` of rows are left to take, or else when
  // it has none left (CpuBackend's read_soon fetch). None when fn is null.
  struct NearEnd {
    const WorkerTeam::Tail* fn = nullptr;
    size_t bytes = 0;
  };

  // y = W x for every job (fits() must hold), the rows split as matmul_row_jobs splits them.
  void run(const MatmulJob* jobs, size_t n_jobs, const QuantizedActivations& act, const Split& split,
           const NearEnd& near_end);

  // Returns once no thread is in any slot (a stopped thread's leftover piece finished). Until
  // then such a thread may still read the weights of a loop that returned (never its y): call
  // this before they can go away (CpuBackend does at the end of every step).
  void wait_idle() const;

  // Pieces the caller computed for a thread that held them too long (since construction).
  int64_t redone_pieces() const { return redone_.load(std::memory_order_relaxed); }

  // Tests only: called on a worker thread right after it published a piece it holds (e.g. to
  // stop it there). Null by default.
  using PieceHook = void (*)();
  static void set_piece_hook_for_testing(PieceHook hook);

 private:
  struct Slot;
  void run_piece(Slot& s, int lane, const RowLanes::Piece& p);
  bool finished(Slot& s);
  void write_rows(Slot& s, int job, int64_t r0, int64_t r1, const float* vals, std::atomic<int64_t>& count);
  bool all_written(const Slot& s) const;

  RowKernel kernel_;
  std::vector<std::unique_ptr<Slot>> slots_;
  int current_ = 0;  // the slot of the last loop
  std::atomic<int64_t> redone_{0};
};

}  // namespace jetmoe
