// AVX2 kernels for Q4_KR, Q4_K interleaved 16 rows at a time (layout in quant/qtypes.h), decode
// and prefill alike: what a CPU without AVX-512 runs for Q4_K weights it owns.
//
// As in qdot_interleaved_avx2.cpp, each 64-byte line is two registers of 8 rows (int32 lane i =
// row 8h + i of half h), so 4 activation bytes broadcast to every lane advance 8 rows at once.
// Per super-block of 256 weights and 8 rows:
//   - the 12 packed scale bytes of 8 rows are three 32-byte loads; the 6-bit scales and mins come
//     out with a few whole-register masks and shifts (as qdot_q4kr_avx512.cpp), and one byte
//     shuffle makes scale j an int16 pair (sc_j, sc_j) in every lane;
//   - quant chunk c is 8 lines; their low nibbles are sub-block 2c and the high nibbles sub-block
//     2c + 1, each dotted with 4 broadcast activation bytes per register by vpmaddubsw, the 8
//     products of a sub-block added in int16 (each at most 2 * 15 * 127 = 3810, eight 30480 <
//     2^15), then one vpmaddwd with the scale pair gives sc_j * sum in int32: exact, as the
//     scalar kernel;
//   - the mins meet the activation's 32-element sums as int16 pairs (4 vpmaddwd);
//   - one multiply-add each applies d * dx and dmin * dx.
// Decode takes a chunk's lines once, both sub-blocks' sums at a time (4 live for 16 rows). A
// prefill tile (2 halves x 4 tokens) would need 16 such sums, more than AVX2's 16 registers with
// the lines and activations, and GCC spilled them; it takes the chunk's lines twice instead, low
// nibbles then high (8 sums live), the int32 sums updated once per sub-block: 1.1-1.3x the rate
// of the one-pass tile (docs/performance.md).
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

// vpshufb index giving every int32 lane the int16 pair (byte i, byte j) of that lane (0x80: zero).
inline __m256i lane_pair(int i, int j) {
  alignas(32) int32_t v[8];
  for (int l = 0; l < 8; ++l) {
    const int base = 4 * (l % 4);  // vpshufb indexes within 128-bit lanes
    v[l] = static_cast<int>((base + i) | 0x8000u | ((base + j) << 16) | 0x80000000u);
  }
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(v));
}

// One super-block's factors for the 8 rows of one half, the same for every token: the 8 sub-block
// scales and 4 min pairs as int16 pairs in every lane, d and dmin.
struct HalfBlock {
  __m256i sc[8];  // (sc_j, sc_j)
  __m256i mp[4];  // (m_2p, m_2p+1)
  __m256 d, dmin;
};

inline void unpack_half(const uint8_t* blk, int h, HalfBlock& t) {
  const uint8_t* s = blk + kQ4KRScales + 32 * h;
  const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s));
  const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 64));
  const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + 128));
  const __m256i m6 = _mm256_set1_epi32(0x3f3f3f3f), m4 = _mm256_set1_epi32(0x0f0f0f0f),
                top = _mm256_set1_epi32(0x30303030);
  const __m256i sc_lo = _mm256_and_si256(a, m6);
  const __m256i sc_hi = _mm256_or_si256(_mm256_and_si256(c, m4), _mm256_and_si256(_mm256_srli_epi32(a, 2), top));
  const __m256i m_lo = _mm256_and_si256(b, m6);
  const __m256i m_hi =
      _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(c, 4), m4), _mm256_and_si256(_mm256_srli_epi32(b, 2), top));
  for (int j = 0; j < 4; ++j) {
    t.sc[j] = _mm256_shuffle_epi8(sc_lo, lane_pair(j, j));
    t.sc[j + 4] = _mm256_shuffle_epi8(sc_hi, lane_pair(j, j));
  }
  t.mp[0] = _mm256_shuffle_epi8(m_lo, lane_pair(0, 1));
  t.mp[1] = _mm256_shuffle_epi8(m_lo, lane_pair(2, 3));
  t.mp[2] = _mm256_shuffle_epi8(m_hi, lane_pair(0, 1));
  t.mp[3] = _mm256_shuffle_epi8(m_hi, lane_pair(2, 3));
  t.d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQ4KRd + 2 * kHalfRows * h)));
  t.dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kQ4KRdmin + 2 * kHalfRows * h)));
}

// acc + d * dx * isum - dmin * dx * sum_j m_j * ssum_j for one token's super-block xb.
inline __m256 add_block(const HalfBlock& t, __m256i isum, const BlockQ8_KS& xb, __m256 acc) {
  __m256i msum = _mm256_madd_epi16(t.mp[0], bcast4_avx2(xb.ssum));
  for (int p = 1; p < 4; ++p) msum = _mm256_add_epi32(msum, _mm256_madd_epi16(t.mp[p], bcast4_avx2(xb.ssum + 2 * p)));
  const __m256 dx = _mm256_set1_ps(xb.d);
  acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(t.d, dx), acc);
  return _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_mul_ps(t.dmin, dx), acc);
}

// Quant chunk c of a super-block for NH halves (half h's chunk lines at q[h] + 64 k) and NT tokens
// (super-block x[j]): isum[h][j] += sc_2c * (even sub-block's sum) + sc_2c+1 * (odd one's).
template <int NH, int NT>
[[gnu::always_inline]] inline void chunk_sums(int c, const uint8_t* const (&q)[NH], const BlockQ8_KS* const (&x)[NT],
                                              const HalfBlock* const (&t)[NH], __m256i (&isum)[NH][NT]) {
  __m256i se[NH][NT], so[NH][NT];
  for (int k = 0; k < 8; ++k) {
    __m256i lo[NH], hi[NH];
    split_nibbles<NH>(q, k, lo, hi);
    for (int j = 0; j < NT; ++j) {
      const __m256i ae = bcast4_avx2(x[j]->qs + 64 * c + 4 * k), ao = bcast4_avx2(x[j]->qs + 64 * c + 32 + 4 * k);
      for (int h = 0; h < NH; ++h) {
        const __m256i pe = _mm256_maddubs_epi16(lo[h], ae), po = _mm256_maddubs_epi16(hi[h], ao);
        se[h][j] = k == 0 ? pe : _mm256_add_epi16(se[h][j], pe);
        so[h][j] = k == 0 ? po : _mm256_add_epi16(so[h][j], po);
        keep_in_register(se[h][j]);  // chains, line by line (interleaved_avx2.h)
        keep_in_register(so[h][j]);
      }
    }
  }
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < NT; ++j)
      isum[h][j] = _mm256_add_epi32(isum[h][j], _mm256_add_epi32(_mm256_madd_epi16(se[h][j], t[h]->sc[2 * c]),
                                                                 _mm256_madd_epi16(so[h][j], t[h]->sc[2 * c + 1])));
}

// Prefill's form of chunk_sums: the chunk's 8 lines for the even sub-block (low nibbles), then
// again for the odd one (high nibbles), so that one int16 sum per half and token is live, not
// two; isum is updated once per sub-block (left to the compiler: pinned in memory with an empty
// asm it was 1-7% slower). Reading a line twice costs no more than splitting it once: the
// low nibbles are one vpand with the load folded in.
template <int NH, int NT>
[[gnu::always_inline]] inline void chunk_sums_by_sub_block(int c, const uint8_t* const (&q)[NH],
                                                           const BlockQ8_KS* const (&x)[NT],
                                                           const HalfBlock* const (&t)[NH], __m256i (&isum)[NH][NT]) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
#pragma GCC unroll 1
  for (int odd = 0; odd < 2; ++odd) {
    __m256i s[NH][NT];
#pragma GCC unroll 8
    for (int k = 0; k < 8; ++k) {
      __m256i w[NH];
      for (int h = 0; h < NH; ++h) {
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q[h] + 64 * k));
        if (odd) v = _mm256_srli_epi16(v, 4);
        w[h] = _mm256_and_si256(v, m4);
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i xa = bcast4_avx2(x[j]->qs + 64 * c + 32 * odd + 4 * k);
        for (int h = 0; h < NH; ++h) {
          const __m256i p = _mm256_maddubs_epi16(w[h], xa);
          s[h][j] = k == 0 ? p : _mm256_add_epi16(s[h][j], p);
          keep_in_register(s[h][j]);
        }
      }
    }
    for (int h = 0; h < NH; ++h)
      for (int j = 0; j < NT; ++j)
        isum[h][j] = _mm256_add_epi32(isum[h][j], _mm256_madd_epi16(s[h][j], t[h]->sc[2 * c + odd]));
  }
}

// A super-block's lines, a quarter per quant chunk.
constexpr size_t kChunkPrefetchLines = kQ4KRBlockBytes / 64 / 4;
static_assert(kQ4KRBlockBytes % (64 * 4) == 0, "a Q4_KR super-block is 36 whole lines");

// Decode: NS 16-row groups at a time (both halves of every line), one token, each group's
// super-blocks a sequential stream of its own, their lines prefetched a chunk's share at a time as
// MatArgs asks (as the AVX-512 kernel does: quant/stream_prefetch.h). Two groups are the two
// streams of MatArgs::two_streams (the first and second halves of the row range), read in turn a
// quant chunk of each (about the 576 bytes of Q4_0R's block pairs), the super-block's scales of
// both unpacked first; on the Zen 3 VM the chunk alternation beat whole super-blocks in turn in
// each of three pairs of runs (docs/performance.md). The loops over chunks and streams are
// unrolled whatever MatArgs::rolled says (Zen 3, one process: 1.07-1.09x from L2, 1.02x from
// memory at two threads, against the chunk loop GCC left rolled).
template <int NS>
inline void decode_groups(const MatArgs& a, const int64_t (&g)[NS]) {
  const size_t group_bytes = static_cast<size_t>(kInterleaveRows) * a.w_stride;
  const BlockQ8_KS* x = reinterpret_cast<const BlockQ8_KS*>(a.X);
  const uint8_t* const end = a.W + static_cast<size_t>(a.r1 / kInterleaveRows) * group_bytes;
  __m256 acc[NS][2];
  for (int s = 0; s < NS; ++s) acc[s][0] = acc[s][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* blk[NS];
    HalfBlock tb[NS][2];
    const HalfBlock* t[NS][2];
    __m256i isum[NS][2][1];
    for (int s = 0; s < NS; ++s) {
      blk[s] = a.W + static_cast<size_t>(g[s]) * group_bytes + kQ4KRBlockBytes * static_cast<size_t>(b);
      if (a.touch && static_cast<size_t>(end - blk[s]) > a.touch) touch_line(blk[s] + a.touch);
      for (int h = 0; h < 2; ++h) {
        unpack_half(blk[s], h, tb[s][h]);
        t[s][h] = &tb[s][h];
        isum[s][h][0] = _mm256_setzero_si256();
      }
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c)
#pragma GCC unroll 2
      for (int s = 0; s < NS; ++s) {
        const char* first = reinterpret_cast<const char*>(blk[s]) + 64 * kChunkPrefetchLines * static_cast<size_t>(c);
        if (a.prefetch)
          for (size_t l = 0; l < kChunkPrefetchLines; ++l) _mm_prefetch(first + a.prefetch + 64 * l, _MM_HINT_T1);
        if (a.prefetch_l1)
          for (size_t l = 0; l < kChunkPrefetchLines; ++l) _mm_prefetch(first + a.prefetch_l1 + 64 * l, _MM_HINT_T0);
        const uint8_t* q = blk[s] + q4kr_quant_line(c, 0);
        const uint8_t* const qs[2] = {q, q + 32};
        // Each stream broadcasts the activation bytes itself: with one pointer for both, GCC kept
        // a chunk's 16 broadcasts live from one stream's sums to the other's and spilled them.
        const BlockQ8_KS* xb = x + b;
        asm("" : "+r"(xb));
        const BlockQ8_KS* const xs[1] = {xb};
        chunk_sums<2, 1>(c, qs, xs, t[s], isum[s]);
      }
    for (int s = 0; s < NS; ++s)
      for (int h = 0; h < 2; ++h) acc[s][h] = add_block(tb[s][h], isum[s][h][0], x[b], acc[s][h]);
  }
  for (int s = 0; s < NS; ++s) {
    _mm256_storeu_ps(a.Y + g[s] * kInterleaveRows, acc[s][0]);
    _mm256_storeu_ps(a.Y + g[s] * kInterleaveRows + kHalfRows, acc[s][1]);
  }
}

// Prefill: NH halves starting at half u0 (rows 8u0 ..) x NT tokens starting at t0.
template <int NH, int NT>
inline void prefill_tile(const MatArgs& a, int64_t u0, int64_t t0) {
  HalfRows H[NH];
  for (int h = 0; h < NH; ++h) H[h] = half_rows(a, u0 + h);
  const BlockQ8_KS* x[NT];
  __m256 acc[NH][NT];
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < NT; ++j) acc[h][j] = _mm256_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    HalfBlock tb[NH];
    const HalfBlock* t[NH];
    const uint8_t* blk[NH];
    for (int h = 0; h < NH; ++h) {
      blk[h] = H[h].group + kQ4KRBlockBytes * static_cast<size_t>(b);
      unpack_half(blk[h], H[h].half, tb[h]);
      t[h] = &tb[h];
    }
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_KS*>(a.X + (t0 + j) * a.x_stride) + b;
    __m256i isum[NH][NT];
    for (int h = 0; h < NH; ++h)
      for (int j = 0; j < NT; ++j) isum[h][j] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int c = 0; c < 4; ++c) {
      const uint8_t* q[NH];
      for (int h = 0; h < NH; ++h) q[h] = blk[h] + q4kr_quant_line(c, 0) + 32 * H[h].half;
      chunk_sums_by_sub_block<NH, NT>(c, q, x, t, isum);
    }
    for (int h = 0; h < NH; ++h)
      for (int j = 0; j < NT; ++j) acc[h][j] = add_block(tb[h], isum[h][j], *x[j], acc[h][j]);
  }
  for (int h = 0; h < NH; ++h)
    for (int j = 0; j < NT; ++j) _mm256_storeu_ps(a.Y + (t0 + j) * a.ldy + (u0 + h) * kHalfRows, acc[h][j]);
}

struct DecodeGroups {
  template <int NS>
  static void groups(const MatArgs& a, const int64_t (&g)[NS]) {
    decode_groups<NS>(a, g);
  }
};

struct PrefillTiles {
  template <int NH, int NT>
  static void tile(const MatArgs& a, int64_t u, int64_t t) {
    prefill_tile<NH, NT>(a, u, t);
  }
};

}  // namespace

void avx2_matvec_q4_kr(const MatArgs& a) { drive_decode_groups<DecodeGroups>(a); }

void avx2_matmul_q4_kr(const MatArgs& a) { drive_half_tiles<PrefillTiles, 2, 4>(a); }

}  // namespace jetmoe::qdot_detail

#endif
