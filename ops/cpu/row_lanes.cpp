#include "ops/cpu/row_lanes.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace jetmoe {

namespace {

constexpr int64_t kMaxRows = int64_t{1} << 31;  // virtual rows are packed two to a 64-bit word

inline uint64_t pack(int64_t front, int64_t back) {
  return static_cast<uint64_t>(front) << 32 | static_cast<uint64_t>(back);
}
inline int64_t front_of(uint64_t w) { return static_cast<int64_t>(w >> 32); }
inline int64_t back_of(uint64_t w) { return static_cast<int64_t>(w & 0xffffffffu); }

// `bytes` of rows of `rb` bytes, in whole quanta: at least one quantum, rounded up or down.
int64_t quanta_rows(size_t bytes, size_t rb, int64_t quantum, bool round_up) {
  int64_t rows = static_cast<int64_t>((round_up ? bytes + rb - 1 : bytes) / rb);
  rows = (round_up ? rows + quantum - 1 : rows) / quantum * quantum;
  return std::max(rows, quantum);
}

}  // namespace

void RowLanes::clear_jobs() {
  begin_.assign(1, 0);
  job_bytes_.assign(1, 0.0);
  row_bytes_.clear();
}

void RowLanes::add_job(int64_t rows, size_t row_bytes) {
  if (rows < 0) throw std::invalid_argument("RowLanes::add_job: job " + std::to_string(row_bytes_.size()) + " has negative rows");
  if (begin_.back() + rows >= kMaxRows) throw std::invalid_argument("RowLanes::add_job: 2^31 rows or more");
  row_bytes_.push_back(std::max<size_t>(row_bytes, 1));
  begin_.push_back(begin_.back() + rows);
  job_bytes_.push_back(job_bytes_.back() + static_cast<double>(rows) * static_cast<double>(row_bytes_.back()));
}

void RowLanes::plan(const std::vector<int64_t>& rows, const std::vector<size_t>& row_bytes, int lanes, int64_t quantum,
                    size_t min_piece_bytes, size_t max_front_bytes) {
  if (rows.size() != row_bytes.size())
    throw std::invalid_argument("RowLanes::plan: " + std::to_string(rows.size()) + " jobs with " +
                                std::to_string(row_bytes.size()) + " row sizes");
  clear_jobs();
  for (size_t i = 0; i < rows.size(); ++i) add_job(rows[i], row_bytes[i]);
  plan(lanes, quantum, min_piece_bytes, max_front_bytes);
}

void RowLanes::plan(int lanes, int64_t quantum, size_t min_piece_bytes, size_t max_front_bytes) {
  if (lanes < 1 || quantum < 1)
    throw std::invalid_argument("RowLanes::plan: " + std::to_string(lanes) + " lanes, quantum " + std::to_string(quantum));
  const size_t n = row_bytes_.size();
  min_rows_.resize(n);
  max_front_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    min_rows_[i] = quanta_rows(min_piece_bytes, row_bytes_[i], quantum, true);
    max_front_[i] = std::max(min_rows_[i], quanta_rows(max_front_bytes, row_bytes_[i], quantum, false));
  }
  quantum_ = quantum;
  if (lanes > lane_capacity_) {
    lane_ = std::make_unique<Lane[]>(static_cast<size_t>(lanes));
    lane_capacity_ = lanes;
  }
  n_lanes_ = lanes;

  // Lane k ends where the weight bytes before it reach (k + 1) / lanes of all, on the nearer
  // quantum boundary of the job that byte count falls in.
  int64_t prev = 0;
  size_t job = 0;
  for (int k = 0; k < lanes; ++k) {
    int64_t end = begin_[n];
    if (k + 1 < lanes) {
      const double target = job_bytes_[n] * (k + 1) / lanes;
      while (job < n && job_bytes_[job + 1] < target) ++job;
      if (job < n) {
        const double in_job = (target - job_bytes_[job]) / static_cast<double>(row_bytes_[job]);
        const int64_t offset = static_cast<int64_t>(in_job / static_cast<double>(quantum) + 0.5) * quantum;
        end = std::min(begin_[job] + offset, begin_[job + 1]);
      }
      end = std::max(end, prev);
    }
    lane_[k].ends.store(pack(prev, end), std::memory_order_relaxed);
    prev = end;
  }
  // Published to the other threads by the loop's start (WorkerTeam::run's release of the claim word).
}

int RowLanes::job_at(int64_t v) const {
  return static_cast<int>(std::upper_bound(begin_.begin(), begin_.end(), v) - begin_.begin()) - 1;
}

int64_t RowLanes::down(int job, int64_t v) const {
  const int64_t b = begin_[static_cast<size_t>(job)];
  return v <= b ? b : b + (v - b) / quantum_ * quantum_;
}

int64_t RowLanes::up(int job, int64_t v) const {
  const int64_t b = begin_[static_cast<size_t>(job)];
  return std::min(begin_[static_cast<size_t>(job) + 1], b + (v - b + quantum_ - 1) / quantum_ * quantum_);
}

double RowLanes::bytes_before(int64_t v) const {
  if (v >= begin_.back()) return job_bytes_.back();
  const int j = job_at(v);
  return job_bytes_[static_cast<size_t>(j)] +
         static_cast<double>(v - begin_[static_cast<size_t>(j)]) * static_cast<double>(row_bytes_[static_cast<size_t>(j)]);
}

size_t RowLanes::bytes_left() const {
  double left = 0;
  for (int k = 0; k < n_lanes_; ++k) {
    const uint64_t w = lane_[k].ends.load(std::memory_order_relaxed);
    if (front_of(w) < back_of(w)) left += bytes_before(back_of(w)) - bytes_before(front_of(w));
  }
  return static_cast<size_t>(left);
}

// The one compare-and-swap loop of both ends: cut(f, b) names the piece of a non-empty lane
// [f, b) as {job, v0, v1} in virtual rows, at its front (v0 == f) or its back (v1 == b); the
// lane keeps the rest.
template <class Cut>
bool RowLanes::take(int lane, Piece* p, Cut cut) {
  std::atomic<uint64_t>& ends = lane_[lane].ends;
  uint64_t w = ends.load(std::memory_order_acquire);
  for (;;) {
    const int64_t f = front_of(w), b = back_of(w);
    if (f >= b) return false;
    const VirtualPiece c = cut(f, b);
    const uint64_t rest = c.v0 == f ? pack(c.v1, b) : pack(f, c.v0);
    if (ends.compare_exchange_weak(w, rest, std::memory_order_acq_rel, std::memory_order_acquire)) {
      const int64_t job_begin = begin_[static_cast<size_t>(c.job)];
      *p = {c.job, c.v0 - job_begin, c.v1 - job_begin};
      return true;
    }
  }
}

// The owner's next piece: 1 / lanes of what its lane has left (so a thief arriving now finds as
// much left to steal as the owner just took), within the job's minimum and front maximum.
bool RowLanes::take_front(int lane, Piece* p) {
  return take(lane, p, [&](int64_t f, int64_t b) {
    const int j = job_at(f);
    const int64_t want = std::clamp((b - f) / n_lanes_, min_rows_[static_cast<size_t>(j)], max_front_[static_cast<size_t>(j)]);
    return VirtualPiece{j, f, std::min(up(j, f + want), b)};
  });
}

// A thief's piece from the back: 1 / (2 x lanes) of what is left (a lane whose owner never came
// goes in few pieces), at least the job's minimum, not past the front.
bool RowLanes::take_back(int lane, Piece* p) {
  return take(lane, p, [&](int64_t f, int64_t b) {
    const int j = job_at(b - 1);
    const int64_t want = std::max(min_rows_[static_cast<size_t>(j)], (b - f) / (2 * n_lanes_));
    return VirtualPiece{j, std::max(down(j, b - want), f), b};
  });
}

}  // namespace jetmoe
