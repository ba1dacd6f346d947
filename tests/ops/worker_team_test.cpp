// WorkerTeam (ops/cpu/worker_team.h): every item of every loop runs exactly once, on more than
// one thread when asked, through many back-to-back loops (sleeping and spinning workers), thread
// count changes and body exceptions; the caller's tail runs once its claims are done.
#include "ops/cpu/worker_team.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

namespace jetmoe {
namespace {

// Restores OpenMP's thread count after a test changes it.
struct ThreadCount {
  int saved = omp_get_max_threads();
  explicit ThreadCount(int n) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved); }
};

TEST(WorkerTeam, EveryItemRunsOnceInManyLoops) {
  ThreadCount tc(3);
  WorkerTeam team;
  std::vector<std::atomic<int>> hits(257);
  for (int loop = 0; loop < 3000; ++loop) {
    const int64_t n = 1 + loop % 257;
    team.run(n, [&](int64_t i) { hits[static_cast<size_t>(i)].fetch_add(1); });
    for (int64_t i = 0; i < 257; ++i) {
      ASSERT_EQ(hits[static_cast<size_t>(i)].load(), i < n ? 1 : 0) << "loop " << loop << " item " << i;
      hits[static_cast<size_t>(i)].store(0);
    }
    // Now and then wait past the spin time, so the next loop must wake sleeping workers.
    if (loop % 500 == 0) std::this_thread::sleep_for(std::chrono::microseconds(3 * WorkerTeam::kSpinMicros));
  }
  EXPECT_EQ(team.threads(), 3);
}

TEST(WorkerTeam, UsesMoreThanOneThread) {
  ThreadCount tc(2);
  WorkerTeam team;
  std::mutex m;
  std::set<std::thread::id> ids;
  // Items that take a while, so the worker surely claims some.
  team.run(64, [&](int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    std::lock_guard<std::mutex> lock(m);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ids.size(), 2u);
}

TEST(WorkerTeam, FollowsTheThreadCount) {
  WorkerTeam team;
  for (int nt : {2, 4, 1, 3}) {
    ThreadCount tc(nt);
    std::atomic<int64_t> sum{0};
    team.run(1000, [&](int64_t i) { sum.fetch_add(i); });
    EXPECT_EQ(sum.load(), 999 * 1000 / 2) << nt << " threads";
    if (nt > 1) {
      EXPECT_EQ(team.threads(), nt);
    }
  }
}

TEST(WorkerTeam, OneThreadRunsInline) {
  ThreadCount tc(1);
  WorkerTeam team;
  const auto me = std::this_thread::get_id();
  int64_t count = 0;  // not atomic: everything runs on this thread
  team.run(100, [&](int64_t) {
    EXPECT_EQ(std::this_thread::get_id(), me);
    ++count;
  });
  EXPECT_EQ(count, 100);
  team.run(0, [&](int64_t) { ++count; });
  EXPECT_EQ(count, 100);
}

TEST(WorkerTeam, NotParallelRunsInline) {
  ThreadCount tc(2);
  WorkerTeam team;
  const auto me = std::this_thread::get_id();
  int64_t count = 0;
  team.run(
      100,
      [&](int64_t) {
        EXPECT_EQ(std::this_thread::get_id(), me);
        ++count;
      },
      false);
  EXPECT_EQ(count, 100);
}

TEST(WorkerTeam, RethrowsABodyExceptionAfterTheLoop) {
  ThreadCount tc(2);
  WorkerTeam team;
  std::atomic<int> ran{0};
  EXPECT_THROW(team.run(200,
                        [&](int64_t i) {
                          ran.fetch_add(1);
                          if (i == 17) throw std::runtime_error("item 17");
                        }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 200);  // the other items still ran
  // and the team still works
  std::atomic<int> again{0};
  team.run(50, [&](int64_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 50);
}

// The tail runs once, on the caller, when every item has been claimed (the caller found none
// left), and run() still returns only after every item is done; items elsewhere run on workers.
TEST(WorkerTeam, TailRunsOnTheCallerAfterItsLastClaim) {
  ThreadCount tc(2);
  WorkerTeam team;
  const auto me = std::this_thread::get_id();
  std::atomic<int> started{0}, done{0}, on_worker{0}, off_worker{0};
  int tails = 0, started_at_tail = -1;
  bool tail_on_caller = false, tail_on_worker = true;
  const WorkerTeam::Tail tail = [&] {
    ++tails;
    started_at_tail = started.load();
    tail_on_caller = std::this_thread::get_id() == me;
    tail_on_worker = WorkerTeam::on_worker_thread();
  };
  team.run(
      40,
      [&](int64_t) {
        started.fetch_add(1);
        (std::this_thread::get_id() == me ? off_worker : on_worker).fetch_add(WorkerTeam::on_worker_thread() ? 1 : 0);
        std::this_thread::sleep_for(std::chrono::microseconds(500));
        done.fetch_add(1);
      },
      true, &tail);
  EXPECT_EQ(tails, 1);
  EXPECT_TRUE(tail_on_caller);
  EXPECT_FALSE(tail_on_worker);
  EXPECT_EQ(started_at_tail, 40);
  EXPECT_EQ(done.load(), 40);
  EXPECT_EQ(off_worker.load(), 0);  // the caller is never a worker thread
  EXPECT_GT(on_worker.load(), 0);   // the worker's items are
  // Inline runs (not parallel, and no items at all) run the tail after the items too.
  int count = 0, count_at_tail = -1;
  const WorkerTeam::Tail tail2 = [&] { count_at_tail = count; };
  team.run(7, [&](int64_t) { ++count; }, false, &tail2);
  EXPECT_EQ(count_at_tail, 7);
  count_at_tail = -1;
  team.run(0, [&](int64_t) { ++count; }, true, &tail2);
  EXPECT_EQ(count_at_tail, 7);
}

TEST(WorkerTeam, RethrowsATailExceptionAfterTheItems) {
  ThreadCount tc(2);
  WorkerTeam team;
  std::atomic<int> done{0};
  const WorkerTeam::Tail tail = [] { throw std::runtime_error("tail"); };
  EXPECT_THROW(team.run(
                   50,
                   [&](int64_t) {
                     std::this_thread::sleep_for(std::chrono::microseconds(200));
                     done.fetch_add(1);
                   },
                   true, &tail),
               std::runtime_error);
  EXPECT_EQ(done.load(), 50);
  std::atomic<int> again{0};
  team.run(50, [&](int64_t) { again.fetch_add(1); });
  EXPECT_EQ(again.load(), 50);
}

// A loop that may end early returns once its caller says so, while the worker is still in an
// item; that item then counts for no later loop, and the body learns the loop's epoch.
TEST(WorkerTeam, EarlyEndLeavesAStoppedItemOutOfLaterLoops) {
  ThreadCount tc(2);
  WorkerTeam team;
  std::atomic<bool> worker_in{false}, release{false};
  std::atomic<uint32_t> epoch{0}, seen_epoch{0};
  std::atomic<int> caller_items{0};
  const WorkerTeam::Body body = [&](int64_t) {
    if (WorkerTeam::on_worker_thread()) {
      seen_epoch.store(WorkerTeam::loop_epoch());
      worker_in.store(true);
      while (!release.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
      return;
    }
    caller_items.fetch_add(1);
    // The caller's item lasts until the worker is surely in the other one.
    while (!worker_in.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  };
  const std::function<bool()> finished = [&] { return caller_items.load() == 1; };
  const WorkerTeam::EarlyEnd early{&finished, &epoch};
  team.run(2, body, true, nullptr, &early);
  EXPECT_TRUE(worker_in.load());
  EXPECT_FALSE(release.load());
  EXPECT_NE(epoch.load(), 0u);
  EXPECT_EQ(seen_epoch.load(), epoch.load());

  // Later loops while the worker is stopped, and after it finished its old item mid-loop: every
  // item of each runs exactly once, and each loop waits for all of its own.
  std::vector<std::atomic<int>> hits(64);
  for (int loop = 0; loop < 200; ++loop) {
    if (loop == 100) release.store(true);
    team.run(64, [&](int64_t i) {
      if (loop >= 100 && i == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
      hits[static_cast<size_t>(i)].fetch_add(1);
    });
    for (size_t i = 0; i < hits.size(); ++i) {
      ASSERT_EQ(hits[i].load(), 1) << "loop " << loop << " item " << i;
      hits[i].store(0);
    }
  }
}

TEST(WorkerTeam, CallersOnTwoThreadsTakeTurns) {
  WorkerTeam team;
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    omp_set_num_threads(2);  // per-thread setting
    for (int k = 0; k < 300; ++k) team.run(37, [&](int64_t i) { total.fetch_add(i + 1); });
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 300 * (37 * 38 / 2));
}

}  // namespace
}  // namespace jetmoe
