// RowLanes (ops/cpu/row_lanes.h): every row of every job is handed out exactly once, in pieces
// that stay inside one job and on its quantum grid, within the piece size limits; lanes are
// contiguous and equal in bytes; an owner's pieces follow each other; lanes nobody drains are
// eaten by the others; bytes_left counts what is untaken; bad plans are refused.
#include "ops/cpu/row_lanes.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace jetmoe {
namespace {

struct Taken {
  int lane;  // the lane drained by the thread that took it
  RowLanes::Piece piece;
};

// Counts how often each row of each job was handed out; fails on a piece outside its job.
std::vector<std::vector<int>> coverage(const std::vector<int64_t>& rows, const std::vector<Taken>& taken) {
  std::vector<std::vector<int>> hits;
  for (int64_t r : rows) hits.emplace_back(static_cast<size_t>(r), 0);
  for (const Taken& t : taken) {
    EXPECT_GE(t.piece.job, 0);
    EXPECT_LT(t.piece.job, static_cast<int>(rows.size()));
    EXPECT_GE(t.piece.r0, 0);
    EXPECT_LT(t.piece.r0, t.piece.r1);
    EXPECT_LE(t.piece.r1, rows[static_cast<size_t>(t.piece.job)]);
    for (int64_t r = t.piece.r0; r < t.piece.r1; ++r) ++hits[static_cast<size_t>(t.piece.job)][static_cast<size_t>(r)];
  }
  return hits;
}

void expect_each_row_once(const std::vector<int64_t>& rows, const std::vector<Taken>& taken) {
  const auto hits = coverage(rows, taken);
  for (size_t j = 0; j < hits.size(); ++j)
    for (size_t r = 0; r < hits[j].size(); ++r) ASSERT_EQ(hits[j][r], 1) << "job " << j << " row " << r;
}

TEST(RowLanes, OneThreadTakesEveryRowOnceOnTheQuantumGrid) {
  // Uneven jobs (an empty one, one shorter than a quantum, one not a multiple of it), two lanes.
  const std::vector<int64_t> rows = {0, 5, 1000, 4096, 37};
  const std::vector<size_t> rb = {100, 100, 1152, 3168, 64};
  RowLanes lanes;
  lanes.plan(rows, rb, 2, 16, 32 << 10, 256 << 10);
  std::vector<Taken> taken;
  for (int lane = 0; lane < lanes.lanes(); ++lane)
    lanes.drain(lane, [&](const RowLanes::Piece& p) { taken.push_back({lane, p}); });
  expect_each_row_once(rows, taken);
  for (const Taken& t : taken) {
    const int64_t n = rows[static_cast<size_t>(t.piece.job)];
    EXPECT_TRUE(t.piece.r0 % 16 == 0 || t.piece.r0 == n) << t.piece.r0;
    EXPECT_TRUE(t.piece.r1 % 16 == 0 || t.piece.r1 == n) << t.piece.r1;
  }
  EXPECT_EQ(lanes.bytes_left(), 0u);
}

TEST(RowLanes, LanesAreContiguousEqualInBytesAndTheOwnersPiecesFollowEachOther) {
  // Two experts of 2048 rows (the MoA output projection of JetMoE-8B at 4 bits), three lanes,
  // drained by lane 0's thread alone: its own lane front to back, then lane 1 and lane 2 from
  // their backs. In virtual rows (job 1 starts at 2048) that shows where each lane ends.
  const std::vector<int64_t> rows = {2048, 2048};
  const std::vector<size_t> rb = {1152, 1152};
  RowLanes lanes;
  lanes.plan(rows, rb, 3, 16, 32 << 10, size_t{1} << 30);
  std::vector<Taken> taken;
  std::vector<std::pair<int64_t, int64_t>> v;  // virtual [r0, r1) of each piece, in order
  lanes.drain(0, [&](const RowLanes::Piece& p) {
    taken.push_back({0, p});
    v.emplace_back(p.job * 2048 + p.r0, p.job * 2048 + p.r1);
  });
  expect_each_row_once(rows, taken);
  size_t i = 0;
  int64_t at = 0;
  std::vector<int64_t> own;
  for (; i < v.size() && v[i].first == at; ++i) {  // lane 0: one run from row 0
    own.push_back(v[i].second - v[i].first);
    at = v[i].second;
  }
  const int64_t lane0_end = at;
  ASSERT_LT(i, v.size());
  const int64_t lane1_end = v[i].second;  // the first steal is lane 1's last piece
  int64_t back = lane1_end;
  for (; i < v.size() && v[i].second == back; ++i) back = v[i].first;
  EXPECT_EQ(back, lane0_end);  // lane 1 eaten from its back down to its front
  ASSERT_LT(i, v.size());
  EXPECT_EQ(v[i].second, 4096);  // then lane 2, from the last row
  back = 4096;
  for (; i < v.size() && v[i].second == back; ++i) back = v[i].first;
  EXPECT_EQ(back, lane1_end);
  EXPECT_EQ(i, v.size());
  // Equal bytes: 4096 / 3 rows each, cut on the quantum grid of the job the cut falls in.
  EXPECT_NEAR(static_cast<double>(lane0_end), 4096.0 / 3, 16.0);
  EXPECT_NEAR(static_cast<double>(lane1_end), 2 * 4096.0 / 3, 16.0);
  EXPECT_EQ(lane0_end % 16, 0);
  EXPECT_EQ(lane1_end % 16, 0);
  // The owner's first piece is 1 / lanes of its lane; pieces then shrink, never below the
  // minimum (32 KB = 29 rows of 1152 bytes -> 32 rows) except the lane's last.
  EXPECT_NEAR(static_cast<double>(own.front()), lane0_end / 3.0, 16.0);
  for (size_t k = 0; k + 1 < own.size(); ++k) {
    EXPECT_GE(own[k], 32);
    EXPECT_GE(own[k], own[k + 1]);
  }
}

TEST(RowLanes, FrontPiecesStopAtTheMaximumAndStolenOnesStartAtTheMinimum) {
  const std::vector<int64_t> rows = {11264};
  const std::vector<size_t> rb = {1152};
  RowLanes lanes;
  lanes.plan(rows, rb, 2, 16, 32 << 10, 256 << 10);
  // Lane 1's owner never comes: lane 0's thread takes its own lane, then all of lane 1 from the back.
  std::vector<RowLanes::Piece> pieces;
  lanes.drain(0, [&](const RowLanes::Piece& p) { pieces.push_back(p); });
  std::vector<Taken> taken;
  for (const auto& p : pieces) taken.push_back({0, p});
  expect_each_row_once(rows, taken);
  const int64_t max_rows = (256 << 10) / 1152 / 16 * 16;  // 224
  const int64_t min_rows = 32;
  size_t i = 0;
  int64_t at = 0;
  for (; i < pieces.size() && pieces[i].r0 == at; ++i) {  // the front run
    EXPECT_LE(pieces[i].r1 - pieces[i].r0, max_rows);
    at = pieces[i].r1;
  }
  EXPECT_NEAR(static_cast<double>(at), 11264 / 2.0, 16.0);
  int64_t back = 11264;
  for (; i < pieces.size(); ++i) {  // the steals: from the back of lane 1, down to its front
    EXPECT_EQ(pieces[i].r1, back);
    EXPECT_GE(pieces[i].r1 - pieces[i].r0, std::min<int64_t>(min_rows, pieces[i].r1 - at));
    back = pieces[i].r0;
  }
  EXPECT_EQ(back, at);
  EXPECT_EQ(lanes.bytes_left(), 0u);
}

TEST(RowLanes, BytesLeftCountsUntakenRowsAtEachJobsWidth) {
  const std::vector<int64_t> rows = {64, 32};
  const std::vector<size_t> rb = {100, 1000};
  RowLanes lanes;
  lanes.plan(rows, rb, 1, 16, 1, 1);  // one lane, pieces of one quantum
  EXPECT_EQ(lanes.bytes_left(), 64u * 100 + 32u * 1000);
  size_t expect = 64u * 100 + 32u * 1000;
  lanes.drain(0, [&](const RowLanes::Piece& p) {
    expect -= static_cast<size_t>(p.r1 - p.r0) * rb[static_cast<size_t>(p.job)];
    EXPECT_EQ(lanes.bytes_left(), expect);
  });
  EXPECT_EQ(expect, 0u);
}

TEST(RowLanes, ThreadsDrainingTogetherTakeEveryRowOnce) {
  const std::vector<int64_t> rows = {4096, 2048, 2048, 11264, 48};
  const std::vector<size_t> rb = {2176, 1152, 1152, 1152, 3168};
  RowLanes lanes;
  for (int round = 0; round < 200; ++round) {
    const int n = 2 + round % 3;
    lanes.plan(rows, rb, n, 16, 4 << 10, 64 << 10);  // small pieces: many contested takes
    std::vector<std::vector<Taken>> per_thread(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    std::atomic<int> ready{0};
    // One thread per lane except the last lane, whose owner never shows up.
    for (int t = 0; t + 1 < n; ++t)
      threads.emplace_back([&, t] {
        ready.fetch_add(1);
        while (ready.load() < n - 1) {
        }
        lanes.drain(t, [&](const RowLanes::Piece& p) { per_thread[static_cast<size_t>(t)].push_back({t, p}); });
      });
    for (std::thread& th : threads) th.join();
    std::vector<Taken> all;
    for (const auto& v : per_thread) all.insert(all.end(), v.begin(), v.end());
    expect_each_row_once(rows, all);
    ASSERT_EQ(lanes.bytes_left(), 0u) << "round " << round;
  }
}

TEST(RowLanes, RefusesBadPlans) {
  RowLanes lanes;
  EXPECT_THROW(lanes.plan({10}, {4}, 0, 16, 1, 1), std::invalid_argument);
  EXPECT_THROW(lanes.plan({10}, {4}, 2, 0, 1, 1), std::invalid_argument);
  EXPECT_THROW(lanes.plan({10, 10}, {4}, 2, 16, 1, 1), std::invalid_argument);
  EXPECT_THROW(lanes.plan({-1}, {4}, 2, 16, 1, 1), std::invalid_argument);
  EXPECT_THROW(lanes.plan({int64_t{1} << 30, int64_t{1} << 30}, {4, 4}, 2, 16, 1, 1), std::invalid_argument);
  // No rows at all: nothing to take.
  lanes.plan({}, {}, 2, 16, 1, 1);
  int calls = 0;
  lanes.drain(1, [&](const RowLanes::Piece&) { ++calls; });
  EXPECT_EQ(calls, 0);
  EXPECT_EQ(lanes.bytes_left(), 0u);
}

}  // namespace
}  // namespace jetmoe
