#include "loader/aligned_buffer.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "support/resident_pages.h"

namespace jetmoe {
namespace {

constexpr uintptr_t kHuge = uintptr_t{2} << 20;

// The mapping of /proc/self/smaps that holds address a: where it ends and its VmFlags line.
struct Vma {
  uintptr_t end = 0;
  std::string flags;
};

Vma vma_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  Vma v;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long b = 0, e = 0;
    // A mapping's first line is "begin-end perms ..."; its other lines are "Key: value" (no
    // key is hex digits followed by '-').
    if (std::sscanf(line.c_str(), "%lx-%lx", &b, &e) == 2) {
      inside = a >= b && a < e;
      if (inside) v = {e, ""};
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      v.flags = line;
      return v;
    }
  }
  return v;
}

TEST(AlignedBuffer, LargeBuffersAreAdvisedHugePagesToTheirLastHugePage) {
  // A large buffer is marked MADV_HUGEPAGE ("hg" in its mapping's VmFlags) from its start, on a
  // 2 MiB boundary, through the end of the huge page that holds its last byte: advice that ended
  // at the last byte left the last partial huge page in 4 KiB pages (a KV cache's last heads
  // faulted a page every few decoded positions).
  for (size_t bytes : {(size_t{5} << 20) + 4096 * 3 + 100, size_t{6} << 20, (size_t{8} << 20) - 1}) {
    SCOPED_TRACE(std::to_string(bytes) + " bytes");
    AlignedBuffer buf(bytes);
    ASSERT_EQ(reinterpret_cast<uintptr_t>(buf.data()) % kHuge, 0u);
    buf.data()[bytes - 1] = 1;  // memory stays writable to its last byte
    const Vma first = vma_of(buf.data()), last = vma_of(buf.data() + bytes - 1);
    ASSERT_FALSE(first.flags.empty()) << "no mapping holds the buffer in /proc/self/smaps";
    if (first.flags.find(" hg") == std::string::npos) GTEST_SKIP() << "this kernel took no MADV_HUGEPAGE advice";
    EXPECT_NE(last.flags.find(" hg"), std::string::npos) << last.flags;
    const uintptr_t last_huge_end = (reinterpret_cast<uintptr_t>(buf.data()) + bytes - 1) / kHuge * kHuge + kHuge;
    EXPECT_GE(last.end, last_huge_end) << "the advised mapping ends before the last huge page does";
  }
}

using test::resident_pages;

TEST(AlignedBuffer, PopulateInBackgroundMakesEveryPageResidentAndKeepsItZero) {
  const size_t bytes = (size_t{40} << 20) + 12345;  // several population steps and a partial last huge page
  const size_t page = test::page_bytes();
  AlignedBuffer buf(bytes);
  EXPECT_LT(resident_pages(buf.data(), bytes), bytes / page) << "a fresh mapping should not be resident yet";
  if (!buf.populate_in_background()) GTEST_SKIP() << "this kernel has no MADV_POPULATE_WRITE";
  buf.data()[bytes / 2] = 7;  // writes may go on meanwhile
  buf.wait_populated();
  EXPECT_EQ(resident_pages(buf.data(), bytes), (bytes + page - 1) / page);
  for (size_t i = 0; i < bytes; i += 4093) ASSERT_EQ(buf.data()[i], i == bytes / 2 ? 7 : 0) << i;
  // Again, after it finished: nothing to fault in, and nothing changes.
  buf.populate_in_background();
  buf.wait_populated();
  EXPECT_EQ(resident_pages(buf.data(), bytes), (bytes + page - 1) / page);
  EXPECT_EQ(buf.data()[bytes / 2], 7);
}

TEST(AlignedBuffer, APopulatingBufferCanBeMovedAndDestroyedAtOnce) {
  // The thread works on the mapping, not the object: a moved buffer keeps it; destruction and
  // move-assignment stop it before the mapping goes (run under the sanitizers too).
  for (int i = 0; i < 8; ++i) {
    AlignedBuffer a(size_t{64} << 20);
    a.populate_in_background();
    AlignedBuffer b(std::move(a));
    b.data()[0] = 1;
    AlignedBuffer c(size_t{32} << 20);
    c.populate_in_background();
    c = std::move(b);  // stops c's own population first
    EXPECT_EQ(c.data()[0], 1);
  }
  AlignedBuffer small(1000);
  EXPECT_FALSE(small.populate_in_background()) << "small buffers are zeroed, so already resident";
  small.wait_populated();
}

TEST(AlignedBuffer, SmallBuffersAreZeroedAndCacheLineAligned) {
  for (size_t bytes : {size_t{1}, size_t{64}, size_t{1000}, size_t{1} << 20}) {
    AlignedBuffer buf(bytes);
    EXPECT_EQ(buf.size(), bytes);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(buf.data()) % 64, 0u);
    for (size_t i = 0; i < bytes; ++i) ASSERT_EQ(buf.data()[i], 0) << i;
  }
}

}  // namespace
}  // namespace jetmoe
