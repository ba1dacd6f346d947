// AVX2 kernels for the interleaved 16-row layouts Q8_0R / Q4_0R (quant/qtypes.h), decode and
// prefill alike: what a CPU without AVX-512 runs for weights it owns (quantized at load, read with
// --no-mmap, synthetic).
//
// Each 64-byte line of a block's quants holds 4 weights of each of 16 rows (bytes 4i .. 4i + 3:
// row i); its two 32-byte halves are rows 0-7 and 8-15. A half is one AVX2 register with one int32
// lane per row, so 4 activation bytes broadcast to every lane advance 8 rows at once and the lanes
// end up holding the 8 rows' sums, with no horizontal sums and no per-row scale product: the 8
// rows' fp16 scales are one vcvtph2ps and one multiply-add per block and token. AVX2 has no
// vpdpbusd; the 4-byte dot products are vpmaddubsw (u8 x s8 -> int16 pairs) and vpmaddwd:
//   Q4_0R: nibbles q (0..15) are the unsigned operand. A block's 8 vpmaddubsw (4 lines x low /
//          high nibbles) add up in int16 (each pair at most 2 * 15 * 127 = 3810, eight of them
//          30480 < 2^15), then one vpmaddwd with ones makes the int32 row sums; zsum (-8 * sum(a),
//          BlockQ8_0Z) applies the "- 8".
//   Q8_0R: the sign trick: |w| (u8, at most 128) x sign(a, w) (s8, |a| <= 127: activations are
//          clamped to +-127), so a pair is at most 2 * 128 * 127 = 32512 and each vpmaddubsw is
//          widened to int32 at once (two would overflow int16). zsum is not used (it is the
//          AVX-512 kernels' correction for feeding w + 128).
// In the GGUF layout (qdot_avx2.cpp) every (row, token, block) costs a scale product, a broadcast,
// a float conversion and a multiply-add besides the dot product itself, and every output a
// horizontal sum; here those are per 8 rows.
//
// Prefill tiles are NH halves (8 rows each) x NT tokens, chunks of a block outermost so that only
// one line's registers are live (AVX2 has 16 registers): the block's 8 sums are kept as chains in
// registers (keep_in_register, interleaved_avx2.h; GCC had spilled the hot loop's values instead:
// docs/performance.md); the tile's 8 float sums, updated once per block, are left to the compiler
// (pinned in memory with an empty asm they were 1-3% slower). Decode is a loop of its own: a 16-row
// group at a time, or two from the two halves of the range in turn (MatArgs::two_streams: Q4_0R a
// pair of blocks of each, Q8_0R line by line), both halves of each line, a pair of blocks per step
// (the layout's unit) with the pair's lines prefetched as MatArgs asks (quant/stream_prefetch.h),
// as in qdot_interleaved_avx512.cpp.
//
// Compiled with the AVX2 flags: everything in an anonymous namespace, only intrinsics (see
// qdot_avx2.cpp).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "quant/interleaved_avx2.h"
#include "quant/stream_prefetch.h"

namespace jetmoe::qdot_detail {
namespace {

// The 8 fp16 scales of half h of a block (rows 8h .. 8h + 7), as floats.
inline __m256 half_scales(const uint8_t* scales, int h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 2 * kHalfRows * h)));
}

// One block's int32 sums for NH halves (half h's quants at q[h]) and NT tokens (x[j]): s[h][j].
struct Q4Format {
  static constexpr size_t kQuantBytes = 16;
  static constexpr int64_t kTouchBlocks = 8;  // demand touches (MatArgs::touch) as the AVX-512 kernel
  // Two decode streams are read a pair of blocks (576 bytes) of each in turn: line by line, as
  // Q8_0R, was level in the kernel harness without the L1 prefetch (0.81-0.93x with it) and 3%
  // slower end to end (Zen 3 VM: docs/performance.md).
  static constexpr bool kStreamLinesInTurn = false;
  template <int NH, int NT>
  [[gnu::always_inline]] static inline void block_sums(const uint8_t* const (&q)[NH], const BlockQ8_0Z* const (&x)[NT],
                                                       __m256i (&s)[NH][NT]) {
    __m256i s16[NH][NT];
#pragma GCC unroll 4
    for (int k = 0; k < 4; ++k) {  // line k: elements 4k .. 4k + 3 (low nibbles), 16 + 4k .. (high)
      __m256i lo[NH], hi[NH];
      split_nibbles<NH>(q, k, lo, hi);
      for (int j = 0; j < NT; ++j) {
        const __m256i al = bcast4_avx2(x[j]->qs + 4 * k), ah = bcast4_avx2(x[j]->qs + 16 + 4 * k);
        for (int h = 0; h < NH; ++h) {
          const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo[h], al), _mm256_maddubs_epi16(hi[h], ah));
          s16[h][j] = k == 0 ? p : _mm256_add_epi16(s16[h][j], p);
          keep_in_register(s16[h][j]);  // a chain, line by line (interleaved_avx2.h)
        }
      }
    }
    const __m256i ones = _mm256_set1_epi16(1);
    for (int j = 0; j < NT; ++j) {
      const __m256i z = _mm256_set1_epi32(x[j]->zsum);
      for (int h = 0; h < NH; ++h) s[h][j] = _mm256_add_epi32(_mm256_madd_epi16(s16[h][j], ones), z);
    }
  }
};

struct Q8Format {
  static constexpr size_t kQuantBytes = 32;
  static constexpr int64_t kTouchBlocks = 4;
  // Two decode streams are read line by line, one block_sums over both streams' halves (their
  // activation broadcasts shared): 1.09-1.19x a pair of blocks (1088 bytes) of each in turn, Zen 3
  // VM, from memory at one and two threads and from L2 (docs/performance.md).
  static constexpr bool kStreamLinesInTurn = true;
  template <int NH, int NT>
  [[gnu::always_inline]] static inline void block_sums(const uint8_t* const (&q)[NH], const BlockQ8_0Z* const (&x)[NT],
                                                       __m256i (&s)[NH][NT]) {
    const __m256i ones = _mm256_set1_epi16(1);
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {  // line k: elements 4k .. 4k + 3
      __m256i w[NH], wabs[NH];
      for (int h = 0; h < NH; ++h) {
        w[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[h] + 64 * k));
        wabs[h] = _mm256_abs_epi8(w[h]);  // -128 gives 0x80: 128 as the unsigned operand
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i xk = bcast4_avx2(x[j]->qs + 4 * k);
        for (int h = 0; h < NH; ++h) {
          const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs[h], _mm256_sign_epi8(xk, w[h])), ones);
          s[h][j] = k == 0 ? p : _mm256_add_epi32(s[h][j], p);
          keep_in_register(s[h][j]);  // a chain, line by line (interleaved_avx2.h)
        }
      }
    }
  }
};

// Prefill: NH halves starting at half u0 (half u is rows 8u .. 8u + 7: group u / 2, half u % 2)
// x NT tokens starting at t0, over the whole row.
template <class F, int NH, int NT>
inline void prefill_tile(const MatArgs& a, int64_t u0, int64_t t0) {
  HalfRows H[NH];
  for (int h = 0; h < NH; ++h) H[h] = half_rows(a, u0 + h);
  const BlockQ8_0Z* x[NT];
  __m256 acc[NH][NT];
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < NT; ++j) acc[h][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const InterleavedBlock o = interleaved_block(F::kQuantBytes, a.nb, b);
    const uint8_t* q[NH];
    for (int h = 0; h < NH; ++h) q[h] = H[h].group + o.quants + 32 * H[h].half;
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_0Z*>(a.X + (t0 + j) * a.x_stride) + b;
    __m256i s[NH][NT];
    F::template block_sums<NH, NT>(q, x, s);
    for (int h = 0; h < NH; ++h) {
      const __m256 dw = half_scales(H[h].group + o.scales, H[h].half);
      for (int j = 0; j < NT; ++j)
        acc[h][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[h][j]), _mm256_mul_ps(dw, _mm256_set1_ps(x[j]->d)), acc[h][j]);
    }
  }
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < NT; ++j) _mm256_storeu_ps(a.Y + (t0 + j) * a.ldy + (u0 + h) * kHalfRows, acc[h][j]);
}

template <class F>
struct Tiles {
  template <int NH, int NT>
  static void tile(const MatArgs& a, int64_t u, int64_t t) {
    prefill_tile<F, NH, NT>(a, u, t);
  }
};

// Decode, one block of each of NS streams (stream s's quants at P[s] + quants, its scales at
// P[s] + scales) for token block xb, added to acc[s]: one block_sums over their 2 NS halves, so the
// streams' lines are read in turn, line k of each before line k + 1, and the activation
// broadcasts serve every stream.
template <class F, int NS>
[[gnu::always_inline]] inline void add_blocks_line_by_line(const uint8_t* const (&P)[NS], size_t quants, size_t scales,
                                                           const BlockQ8_0Z* xb, __m256 (&acc)[NS][2]) {
  const uint8_t* q[2 * NS];
  for (int s = 0; s < NS; ++s) {
    q[2 * s] = P[s] + quants;
    q[2 * s + 1] = q[2 * s] + 32;
  }
  const BlockQ8_0Z* const xs[1] = {xb};
  __m256i sums[2 * NS][1];
  F::template block_sums<2 * NS, 1>(q, xs, sums);
  const __m256 dx = _mm256_set1_ps(xb->d);
  for (int s = 0; s < NS; ++s)
    for (int h = 0; h < 2; ++h)
      acc[s][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[2 * s + h][0]), _mm256_mul_ps(half_scales(P[s] + scales, h), dx),
                                  acc[s][h]);
}

// Decode: 16-row groups (both halves of every line), a pair of blocks per step, the pair's lines
// prefetched and touched as MatArgs asks (quant/stream_prefetch.h), as in
// qdot_interleaved_avx512.cpp. NS groups at a time, each its own stream: with
// MatArgs::two_streams the range's first and second halves of groups are read in turn (the plan
// of AMD CPUs without AVX-512: stream_prefetch.h, decode_stream), Q4_0R a pair of blocks of each,
// Q8_0R line by line (F::kStreamLinesInTurn). The AVX-512 kernels' rolled loops (MatArgs::rolled)
// are not repeated here: this loop is always unrolled.
template <class F, int NS>
void decode_groups(const MatArgs& a, const int64_t (&g)[NS]) {
  constexpr size_t kBlock = static_cast<size_t>(kInterleaveRows) * F::kQuantBytes;  // one block's quants
  constexpr size_t kPair = pair_bytes(F::kQuantBytes);                                // both blocks' scales and quants
  const size_t group_bytes = static_cast<size_t>(kInterleaveRows) * a.w_stride;
  const BlockQ8_0Z* x = reinterpret_cast<const BlockQ8_0Z*>(a.X);
  // Both halves of one stream's block (quants at Q, scales at S) for token block xb, into acc[0..1].
  const auto block = [](const uint8_t* Q, const uint8_t* S, const BlockQ8_0Z* xb, __m256 (&acc)[2]) {
    const uint8_t* const q[2] = {Q, Q + 32};
    const BlockQ8_0Z* const xs[1] = {xb};
    __m256i s[2][1];
    F::template block_sums<2, 1>(q, xs, s);
    const __m256 dx = _mm256_set1_ps(xb->d);
    for (int h = 0; h < 2; ++h)
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[h][0]), _mm256_mul_ps(half_scales(S, h), dx), acc[h]);
  };
  const uint8_t* const end = a.W + static_cast<size_t>(a.r1 / kInterleaveRows) * group_bytes;  // touches stay before
  const uint8_t* P[NS];
  __m256 acc[NS][2];
  for (int s = 0; s < NS; ++s) {
    P[s] = a.W + static_cast<size_t>(g[s]) * group_bytes;
    acc[s][0] = acc[s][1] = _mm256_setzero_ps();
  }
  int64_t b = 0;
  for (; b + 2 <= a.nb; b += 2) {
    for (int s = 0; s < NS; ++s) {
      if (a.touch && b % F::kTouchBlocks == 0 && static_cast<size_t>(end - P[s]) > a.touch) touch_line(P[s] + a.touch);
      // The pair's lines a.prefetch bytes ahead into L2 and a.prefetch_l1 ahead into L1; written
      // out here rather than through a helper (GCC 12 dropped a helper's prefetches: see
      // qdot_interleaved_avx512.cpp).
      if (a.prefetch)
        for (size_t l = 0; l < kPair; l += 64) _mm_prefetch(reinterpret_cast<const char*>(P[s] + a.prefetch + l), _MM_HINT_T1);
      if (a.prefetch_l1)
        for (size_t l = 0; l < kPair; l += 64) _mm_prefetch(reinterpret_cast<const char*>(P[s] + a.prefetch_l1 + l), _MM_HINT_T0);
      if constexpr (!F::kStreamLinesInTurn) {
        block(P[s] + pair_quants(F::kQuantBytes, 0), P[s] + pair_scales(0), x + b, acc[s]);
        block(P[s] + pair_quants(F::kQuantBytes, 1), P[s] + pair_scales(1), x + b + 1, acc[s]);
      }
    }
    if constexpr (F::kStreamLinesInTurn)
#pragma GCC unroll 2
      for (size_t i = 0; i < 2; ++i) add_blocks_line_by_line<F, NS>(P, pair_quants(F::kQuantBytes, i), pair_scales(i), x + b + i, acc);
    for (int s = 0; s < NS; ++s) P[s] += kPair;
  }
  for (int s = 0; s < NS; ++s) {
    if (b < a.nb) block(P[s], P[s] + kBlock, x + b, acc[s]);  // an odd last block alone: its quants, then its scales
    _mm256_storeu_ps(a.Y + g[s] * kInterleaveRows, acc[s][0]);
    _mm256_storeu_ps(a.Y + g[s] * kInterleaveRows + kHalfRows, acc[s][1]);
  }
}

template <class F>
struct DecodeGroups {
  template <int NS>
  static void groups(const MatArgs& a, const int64_t (&g)[NS]) {
    decode_groups<F, NS>(a, g);
  }
};

}  // namespace

void avx2_matvec_q8_0r(const MatArgs& a) { drive_decode_groups<DecodeGroups<Q8Format>>(a); }
void avx2_matvec_q4_0r(const MatArgs& a) { drive_decode_groups<DecodeGroups<Q4Format>>(a); }
void avx2_matmul_q8_0r(const MatArgs& a) { drive_half_tiles<Tiles<Q8Format>, 2, 4>(a); }
void avx2_matmul_q4_0r(const MatArgs& a) { drive_half_tiles<Tiles<Q4Format>, 2, 4>(a); }

}  // namespace jetmoe::qdot_detail

#endif
