// Building blocks of the AVX2 kernels of the interleaved layouts (qdot_interleaved_avx2.cpp:
// Q8_0R / Q4_0R; qdot_q4kr_avx2.cpp: Q4_KR), where each 64-byte line of a 16-row group is two
// registers of 8 rows ("halves": half u is rows 8u .. 8u + 7). Include only from files compiled
// with the AVX2 flags; static inline for the reason quant/stream_prefetch.h gives.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/qdot_kernels.h"

namespace jetmoe::qdot_detail {

inline constexpr int kHalfRows = 8;  // rows per AVX2 register: half of a 16-row group

// The 4 bytes at p in every int32 lane.
static inline __m256i bcast4_avx2(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// An empty asm that takes v in a register and gives it back: the compiler must have v's value
// here, so it cannot reassociate a chain of sums across the point. Without it GCC 12 turned a
// block's chain of additions into a tree, computed every vpmaddubsw product first and spilled
// them (2 KB of stack in the Q4_0R 2 x 4 prefill tile, 25 of the 32 products of a Q4_KR decode
// chunk; docs/performance.md has the figures).
static inline void keep_in_register(__m256i& v) { asm("" : "+x"(v)); }

// Where half u's rows are: the start of its 16-row group, and which half of each line (and of the
// group's scale arrays) they take, 0 or 1.
struct HalfRows {
  const uint8_t* group;
  int half;
};
static inline HalfRows half_rows(const MatArgs& a, int64_t u) {
  return {a.W + static_cast<size_t>(u / 2) * kInterleaveRows * a.w_stride, static_cast<int>(u % 2)};
}

// Line k of NH halves' 4-bit quants (half h's lines at q[h] + 64 k): the low and the high nibbles,
// each byte 0..15 (the unsigned operand of vpmaddubsw).
template <int NH>
[[gnu::always_inline]] static inline void split_nibbles(const uint8_t* const (&q)[NH], int k, __m256i (&lo)[NH],
                                                        __m256i (&hi)[NH]) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int h = 0; h < NH; ++h) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[h] + 64 * k));
    lo[h] = _mm256_and_si256(v, m4);
    hi[h] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
  }
}

// Prefill: K::template tile<NH, NT>(a, u, t) (NH halves from half u x NT tokens from token t)
// over the job's halves and every token (drive_tokens: leftovers take 2- and 1-token tiles), then
// single halves.
template <class K, int NH, int NT>
static inline void drive_half_tiles(const MatArgs& a) {
  const int64_t u1 = a.r1 / kHalfRows;
  int64_t u = a.r0 / kHalfRows;  // whole groups: an even number of halves
  for (; u + NH <= u1; u += NH) drive_tokens<K, NH, NT>(a, u);
  for (; u < u1; ++u) drive_tokens<K, 1, NT>(a, u);
}

// Decode: K::template groups<NS>(a, g) (NS 16-row groups g[0..NS), each its own stream) over the
// job's groups, one at a time, or with MatArgs::two_streams the range's first and second halves
// in turn, a group of each (quant/stream_prefetch.h, decode_stream).
template <class K>
static inline void drive_decode_groups(const MatArgs& a) {
  const int64_t g0 = a.r0 / kInterleaveRows, g1 = a.r1 / kInterleaveRows;
  if (!a.two_streams) {
    for (int64_t g = g0; g < g1; ++g) K::template groups<1>(a, {g});
    return;
  }
  const int64_t gm = g0 + (g1 - g0 + 1) / 2;  // the first half takes an odd count's extra group, last
  for (int64_t i = 0; gm + i < g1; ++i) K::template groups<2>(a, {g0 + i, gm + i});
  if ((g1 - g0) % 2 != 0) K::template groups<1>(a, {gm - 1});
}

}  // namespace jetmoe::qdot_detail
