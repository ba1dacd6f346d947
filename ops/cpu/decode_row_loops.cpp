#include "ops/cpu/decode_row_loops.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "runtime/dtype.h"

namespace jetmoe {

namespace {

// A held piece in one word: state (2 bits) | job (6) | rows (28) | first row (28).
enum : uint64_t { kIdle = 0, kComputing = 1, kCommitting = 2 };
constexpr int kRowBits = 28;
constexpr int64_t kMaxRows = int64_t{1} << kRowBits;
constexpr size_t kMaxJobs = 64;

constexpr uint64_t pack(uint64_t state, int job, int64_t r0, int64_t rows) {
  return state << 62 | static_cast<uint64_t>(job) << 56 | static_cast<uint64_t>(rows) << kRowBits |
         static_cast<uint64_t>(r0);
}
constexpr uint64_t state_of(uint64_t w) { return w >> 62; }
constexpr int job_of(uint64_t w) { return static_cast<int>(w >> 56 & 63); }
constexpr int64_t rows_of(uint64_t w) { return static_cast<int64_t>(w >> kRowBits & (kMaxRows - 1)); }
constexpr int64_t r0_of(uint64_t w) { return static_cast<int64_t>(w & (kMaxRows - 1)); }
constexpr uint64_t committing(uint64_t w) { return (w & ~(uint64_t{3} << 62)) | kCommitting << 62; }

std::atomic<DecodeRowLoops::PieceHook> g_piece_hook{nullptr};

// Until no thread is in the slot's body (a stopped one finishing its piece).
void wait_left(const std::atomic<int>& inside) {
  while (inside.load(std::memory_order_seq_cst) > 0) std::this_thread::yield();
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct DecodeRowLoops::Slot {
  // The WorkerTeam epoch of the loop this slot runs (0 while the caller sets it up); a thread
  // that claimed an item of an older loop and reaches the body late finds another epoch here.
  std::atomic<uint32_t> epoch{0};
  std::atomic<int> inside{0};  // threads in the body now

  // The loop's own copies (nothing a stopped thread reads may change under it).
  std::vector<MatmulJob> jobs;
  std::vector<size_t> act_off;
  std::vector<uint8_t> act_q;
  RowLanes lanes;
  // Per lane, one cache line written by the thread that runs the lane's item (and by no other
  // thread in this loop; the caller only moves `word` of a piece it redoes).
  struct alignas(64) Held {
    std::atomic<uint64_t> word{0};       // the piece that thread holds
    std::atomic<int64_t> done_rows{0};   // rows it wrote to y
  };
  std::unique_ptr<Held[]> held;
  int held_capacity = 0;
  std::vector<std::vector<float>> scratch;  // per lane
  std::vector<float> redo_scratch;          // the caller's, for another lane's piece
  std::atomic<int64_t> redone_rows{0};      // rows the caller wrote for other lanes' pieces
  int64_t total = 0;

  // The caller's alone.
  const WorkerTeam::Tail* near_end = nullptr;
  size_t near_end_bytes = 0;
  bool near_end_done = true;
  int64_t wait_start_ns = 0;

  // Made once: the team may still call into them after run() returned.
  WorkerTeam::Body body;
  WorkerTeam::Tail tail;
  std::function<bool()> finished;
};

DecodeRowLoops::DecodeRowLoops(RowKernel kernel) : kernel_(kernel) {
  for (int i = 0; i < kSlots; ++i) {
    auto s = std::make_unique<Slot>();
    Slot* sp = s.get();
    sp->body = [this, sp](int64_t lane) {
      sp->inside.fetch_add(1, std::memory_order_seq_cst);
      struct Leave {
        std::atomic<int>& inside;
        ~Leave() { inside.fetch_sub(1, std::memory_order_seq_cst); }
      } leave{sp->inside};
      // The caller always runs its own loop; a worker may arrive after the loop it claimed in
      // ended early, with this slot set up again (or being set up) for a newer one.
      if (WorkerTeam::on_worker_thread() && sp->epoch.load(std::memory_order_seq_cst) != WorkerTeam::loop_epoch())
        return;
      const int l = static_cast<int>(lane);
      sp->lanes.drain(l, [&](const RowLanes::Piece& p) { run_piece(*sp, l, p); });
    };
    sp->tail = [sp] {
      if (sp->near_end_done || !sp->near_end) return;
      sp->near_end_done = true;
      (*sp->near_end)();
    };
    sp->finished = [this, sp] { return finished(*sp); };
    slots_.push_back(std::move(s));
  }
}

DecodeRowLoops::~DecodeRowLoops() { wait_idle(); }

void DecodeRowLoops::set_piece_hook_for_testing(PieceHook hook) { g_piece_hook.store(hook); }

bool DecodeRowLoops::fits(const MatmulJob* jobs, size_t n_jobs) {
  if (n_jobs == 0 || n_jobs > kMaxJobs) return false;
  for (size_t i = 0; i < n_jobs; ++i)
    if (jobs[i].T != 1 || !dtype_is_quantized(jobs[i].dtype) || jobs[i].rows >= kMaxRows) return false;
  return true;
}

void DecodeRowLoops::wait_idle() const {
  for (const auto& s : slots_) wait_left(s->inside);
}

void DecodeRowLoops::run(const MatmulJob* jobs, size_t n_jobs, const QuantizedActivations& act, const Split& split,
                         const NearEnd& near_end) {
  const int threads = split.threads;
  // The last loop's slot again unless a thread is still in it: its memory is the one most
  // likely still in a cache. (A first version took every slot in turn and counted written rows
  // in one counter both threads added to: its decode steps were 1.5-5% slower than the plain
  // loops' on the Zen 5 VM; the two causes were not measured apart.)
  for (int k = 0; k < kSlots; ++k) {
    const int cand = (current_ + k) % kSlots;
    if (slots_[static_cast<size_t>(cand)]->inside.load(std::memory_order_seq_cst) == 0) {
      current_ = cand;
      break;
    }
  }
  Slot& s = *slots_[static_cast<size_t>(current_)];
  // Close the slot to late arrivals, then wait for any thread still in it (a stopped one).
  s.epoch.store(0, std::memory_order_seq_cst);
  wait_left(s.inside);

  s.jobs.assign(jobs, jobs + n_jobs);
  s.act_off.assign(act.offset, act.offset + n_jobs);
  s.act_q.assign(act.data, act.data + act.bytes);
  s.lanes.clear_jobs();
  int64_t max_rows = 0;
  s.total = 0;
  for (size_t i = 0; i < n_jobs; ++i) {
    s.lanes.add_job(jobs[i].rows, dtype_row_bytes(jobs[i].dtype, static_cast<size_t>(jobs[i].cols)));
    max_rows = std::max(max_rows, jobs[i].rows);
    s.total += jobs[i].rows;
  }
  s.lanes.plan(threads, split.quantum, split.min_piece, split.max_front);
  if (threads > s.held_capacity) {
    s.held = std::make_unique<Slot::Held[]>(static_cast<size_t>(threads));
    s.held_capacity = threads;
  }
  for (int k = 0; k < threads; ++k) {
    s.held[k].word.store(pack(kIdle, 0, 0, 0), std::memory_order_relaxed);
    s.held[k].done_rows.store(0, std::memory_order_relaxed);
  }
  if (s.scratch.size() < static_cast<size_t>(threads)) s.scratch.resize(static_cast<size_t>(threads));
  for (int k = 0; k < threads; ++k)
    if (s.scratch[static_cast<size_t>(k)].size() < static_cast<size_t>(max_rows))
      s.scratch[static_cast<size_t>(k)].resize(static_cast<size_t>(max_rows));
  if (s.redo_scratch.size() < static_cast<size_t>(max_rows)) s.redo_scratch.resize(static_cast<size_t>(max_rows));
  s.redone_rows.store(0, std::memory_order_relaxed);
  s.near_end = near_end.fn;
  s.near_end_bytes = near_end.bytes;
  s.near_end_done = near_end.fn == nullptr;
  s.wait_start_ns = 0;

  // run() publishes all of the above to the workers (and stores the epoch) before any claim.
  const WorkerTeam::EarlyEnd early{&s.finished, &s.epoch};
  WorkerTeam::shared().run(threads, s.body, true, &s.tail, &early);
}

// One piece on the thread that took it, from lane `lane`'s scratch; written to y only if no
// other thread wrote it meanwhile.
void DecodeRowLoops::run_piece(Slot& s, int lane, const RowLanes::Piece& p) {
  const bool worker = WorkerTeam::on_worker_thread();
  if (!worker && !s.near_end_done && s.lanes.bytes_left() <= s.near_end_bytes) s.tail();
  const MatmulJob& j = s.jobs[static_cast<size_t>(p.job)];
  const uint64_t mine = pack(kComputing, p.job, p.r0, p.r1 - p.r0);
  std::atomic<uint64_t>& word = s.held[lane].word;
  word.store(mine, std::memory_order_release);
  if (worker)
    if (const PieceHook hook = g_piece_hook.load(std::memory_order_relaxed)) hook();
  float* out = s.scratch[static_cast<size_t>(lane)].data();
  kernel_(j, s.act_q.data() + s.act_off[static_cast<size_t>(p.job)], p.r0, p.r1, out);
  uint64_t expect = mine;
  if (word.compare_exchange_strong(expect, committing(mine), std::memory_order_acq_rel, std::memory_order_relaxed))
    write_rows(s, p.job, p.r0, p.r1, out, s.held[lane].done_rows);
}

// y's rows, then the writer's own count (one writer per counter: a plain store, not a locked
// add that two threads would pass a cache line back and forth for).
void DecodeRowLoops::write_rows(Slot& s, int job, int64_t r0, int64_t r1, const float* vals,
                                std::atomic<int64_t>& count) {
  std::memcpy(s.jobs[static_cast<size_t>(job)].y + r0, vals, static_cast<size_t>(r1 - r0) * sizeof(float));
  count.store(count.load(std::memory_order_relaxed) + (r1 - r0), std::memory_order_release);
}

bool DecodeRowLoops::all_written(const Slot& s) const {
  int64_t rows = s.redone_rows.load(std::memory_order_acquire);
  for (int k = 0; k < s.lanes.lanes(); ++k) rows += s.held[k].done_rows.load(std::memory_order_acquire);
  return rows == s.total;
}

// The caller, with nothing left to take: done once every row is written; after waiting
// kRedoAfterMicros, computes the pieces other threads still hold and writes those it wins.
bool DecodeRowLoops::finished(Slot& s) {
  if (all_written(s)) return true;
  const int64_t now = now_ns();
  if (s.wait_start_ns == 0) s.wait_start_ns = now;
  if (now - s.wait_start_ns < kRedoAfterMicros * 1000) return false;
  for (int k = 0; k < s.lanes.lanes(); ++k) {
    std::atomic<uint64_t>& word = s.held[k].word;
    const uint64_t w = word.load(std::memory_order_acquire);
    if (state_of(w) != kComputing) continue;
    const int job = job_of(w);
    const int64_t r0 = r0_of(w), rows = rows_of(w);
    kernel_(s.jobs[static_cast<size_t>(job)], s.act_q.data() + s.act_off[static_cast<size_t>(job)], r0, r0 + rows,
            s.redo_scratch.data());
    uint64_t expect = w;
    if (word.compare_exchange_strong(expect, committing(w), std::memory_order_acq_rel, std::memory_order_relaxed)) {
      write_rows(s, job, r0, r0 + rows, s.redo_scratch.data(), s.redone_rows);
      redone_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  s.wait_start_ns = now_ns();  // give any piece taken since its time before the next redo
  return all_written(s);
}

}  // namespace jetmoe
