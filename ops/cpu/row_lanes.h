// RowLanes: how the threads of one CpuBackend::matmul_row_jobs loop share its weight rows (e.g.
// the two experts a decode step chose). The rows of all jobs, in order, are cut into one
// contiguous lane per thread, equal in weight bytes. A thread takes pieces from the front of its
// own lane, so its weights stream as one sequential run from lane start to lane end (the
// kernels' prefetch reaches into the thread's own next piece); then it steals pieces from the
// backs of the other lanes until every row is taken. A thread that the scheduler did not run
// (another process on its core) takes nothing, and its lane is eaten from the back by the others.
//
// Why not one shared list of chunks handed out in order (jetmoe until 2026-12-05): then the
// threads take turns along the rows, and every chunk is a new stream. A stream costs its thread
// about 0.6 us to start (Xeon VM, two threads, prefetching read loop over 16 KB .. 32 MB streams
// at shuffled places: 60% of the probe's rate at 16 KB, 86% at 64 KB, 95% at 256 KB, 99% from
// 1 MB), and a loop of two 2048 x 2048 int4 experts was cut into 14 chunks. Harness, two threads,
// loops of two Q4_KR experts over 3 GB, against the read probe: 2048 x 2048 experts 92 -> 95%
// with lanes, 11264 x 2048 97 -> 98%; 24-layer q4_k decode, 15 interleaved repetitions each:
// 21.70 -> 22.09 tok/s (median), lanes ahead in 10 of 15 pairs.
//
// Pieces never cross a job and start and end on multiples of `quantum` rows from their job's
// first row (or at its last row). Taking is a compare-and-swap on the lane's (front, back) word,
// one cache line per lane.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace jetmoe {

class RowLanes {
 public:
  struct Piece {
    int32_t job;
    int64_t r0, r1;  // rows of that job
  };

  // A plan's jobs, in order: clear_jobs(), then add_job for each (no allocation once the
  // vectors have grown). add_job throws std::invalid_argument on negative rows or 2^31 rows or
  // more in all.
  void clear_jobs();
  void add_job(int64_t rows, size_t row_bytes);

  // Plans `lanes` lanes over the jobs added since clear_jobs(). A stolen piece is at least
  // min_piece_bytes of weights (rounded up to whole quanta), as is any piece of a lane's front
  // once the lane has little left; a front piece is at most max_front_bytes (rounded down to whole
  // quanta, at least the minimum), so a thread that stops for a while (a busy core) holds back
  // little of its lane. Throws std::invalid_argument on lanes < 1 or quantum < 1. Not
  // thread-safe against drain(): plan before the loop starts.
  void plan(int lanes, int64_t quantum, size_t min_piece_bytes, size_t max_front_bytes);

  // The same over jobs of rows[i] rows of row_bytes[i] bytes each (clear_jobs, add_job for each,
  // plan); also throws on lists of different lengths.
  void plan(const std::vector<int64_t>& rows, const std::vector<size_t>& row_bytes, int lanes, int64_t quantum,
            size_t min_piece_bytes, size_t max_front_bytes);

  int lanes() const { return n_lanes_; }

  // Weight bytes of the rows no thread has taken yet (a snapshot while threads drain).
  size_t bytes_left() const;

  // Takes lane `lane`'s pieces from its front, then the other lanes' from their backs, calling
  // fn(piece) for each, until no row of any lane is left. Any number of threads may drain at
  // once; every row is passed to fn exactly once per plan().
  template <class Fn>
  void drain(int lane, Fn&& fn) {
    Piece p;
    while (take_front(lane, &p)) fn(p);
    for (int k = 1; k < n_lanes_; ++k) {
      const int victim = (lane + k) % n_lanes_;
      while (take_back(victim, &p)) fn(p);
    }
  }

 private:
  struct VirtualPiece {
    int job;
    int64_t v0, v1;  // virtual rows
  };
  template <class Cut>
  bool take(int lane, Piece* p, Cut cut);
  bool take_front(int lane, Piece* p);
  bool take_back(int lane, Piece* p);
  int job_at(int64_t v) const;            // the job holding virtual row v
  int64_t down(int job, int64_t v) const;  // v rounded down to a quantum boundary of `job` (>= its first row)
  int64_t up(int job, int64_t v) const;    // v rounded up to one (<= its last row + 1)
  double bytes_before(int64_t v) const;    // weight bytes of virtual rows [0, v)

  struct alignas(64) Lane {
    std::atomic<uint64_t> ends{0};  // front << 32 | back, virtual rows
  };
  std::unique_ptr<Lane[]> lane_;
  int n_lanes_ = 0, lane_capacity_ = 0;
  int64_t quantum_ = 1;
  std::vector<int64_t> begin_{0};     // virtual row where job i starts; begin_[n] = all rows
  std::vector<double> job_bytes_{0};  // weight bytes before job i; job_bytes_[n] = all
  std::vector<size_t> row_bytes_;   // per job
  std::vector<int64_t> min_rows_;   // per job: the smallest piece, whole quanta
  std::vector<int64_t> max_front_;  // per job: the largest front piece, whole quanta
};

}  // namespace jetmoe
