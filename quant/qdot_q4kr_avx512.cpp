// AVX-512 VNNI kernels for Q4_KR, Q4_K interleaved 16 rows at a time (layout in quant/qtypes.h),
// decode and prefill alike.
//
// As for Q8_0R / Q4_0R (qdot_interleaved_avx512.cpp), int32 lane i of every register is row i of
// the group. Per super-block of 256 weights and 16 rows:
//   - the 12 packed scale bytes of 16 rows are three registers; the 6-bit scales and mins come
//     out of them with a few whole-register masks and shifts, and one byte shuffle puts scale j
//     (or a pair of mins) into the low bytes of every lane;
//   - quant chunk c is 8 registers; their low nibbles are sub-block 2c and the high nibbles
//     sub-block 2c + 1, each dotted with 4 broadcast activation bytes per register (vpdpbusd),
//     so a sub-block's sums for 16 rows are 8 instructions; each nibble half is one mask (the
//     high one is left in place, x16, and the odd sub-blocks' total is shifted down once);
//   - sub-block sums are weighted by their 6-bit scales in int32 (vpmulld), exactly as the
//     scalar kernel does, and the mins meet the activation's 32-element sums with 4 vpdpwssd;
//   - one multiply-add each applies d * dx and dmin * dx.
// Prefill tiles are 2 row groups x 4 tokens: 8 independent sums per sub-block, each broadcast of
// activation bytes feeding both groups (prefill_tile below).
//
// Loads are unaligned instructions (aligned in practice for owned weights). Compiled with
// AVX-512 flags: everything in an anonymous namespace (see qdot_avx2.cpp).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if JETMOE_QDOT_AVX512
#include <immintrin.h>

#include "quant/stream_prefetch.h"
#include "quant/vnni_avx512.h"

namespace jetmoe::qdot_detail {
namespace {

// vpshufb index that moves byte j of every int32 lane to its low byte (the rest zero).
inline __m512i byte_to_lane(int j) {
  const int z = static_cast<int>(0x80808000u) | j;  // bytes: j, 0x80, 0x80, 0x80 (0x80: zero)
  alignas(64) int32_t v[16];
  for (int l = 0; l < 16; ++l) v[l] = z + 4 * (l % 4);  // vpshufb indexes within 128-bit lanes
  return _mm512_load_si512(v);
}

// vpshufb index that makes int16 pair (byte j, byte j + 1) of every int32 lane.
inline __m512i bytes_to_pair(int j) {
  alignas(64) int32_t v[16];
  for (int l = 0; l < 16; ++l) {
    const int base = 4 * (l % 4);
    v[l] = static_cast<int>((base + j) | 0x8000u | ((base + j + 1) << 16) | 0x80000000u);
  }
  return _mm512_load_si512(v);
}

struct Scales {
  __m512i sc_lo, sc_hi, m_lo, m_hi;  // bytes j of each lane: scale j / j + 4, min j / j + 4
};

inline Scales unpack_scales(const uint8_t* blk) {
  const __m512i a = _mm512_loadu_si512(blk + kQ4KRScales);
  const __m512i b = _mm512_loadu_si512(blk + kQ4KRScales + 64);
  const __m512i c = _mm512_loadu_si512(blk + kQ4KRScales + 128);
  const __m512i m6 = _mm512_set1_epi32(0x3f3f3f3f), m4 = _mm512_set1_epi32(0x0f0f0f0f),
                top = _mm512_set1_epi32(0x30303030);
  Scales s;
  s.sc_lo = _mm512_and_si512(a, m6);
  s.sc_hi = _mm512_or_si512(_mm512_and_si512(c, m4), _mm512_and_si512(_mm512_srli_epi32(a, 2), top));
  s.m_lo = _mm512_and_si512(b, m6);
  s.m_hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(c, 4), m4), _mm512_and_si512(_mm512_srli_epi32(b, 2), top));
  return s;
}

// A super-block's factors besides the sub-block scales, the same for every token: its 8 mins as
// int16 pairs (m_2p, m_2p+1) in every lane, and d, dmin.
struct BlockTotals {
  __m512i mp[4];
  __m512 d, dmin;
};

inline BlockTotals block_totals(const uint8_t* blk, const Scales& s) {
  BlockTotals t;
  t.mp[0] = _mm512_shuffle_epi8(s.m_lo, bytes_to_pair(0));
  t.mp[1] = _mm512_shuffle_epi8(s.m_lo, bytes_to_pair(2));
  t.mp[2] = _mm512_shuffle_epi8(s.m_hi, bytes_to_pair(0));
  t.mp[3] = _mm512_shuffle_epi8(s.m_hi, bytes_to_pair(2));
  t.d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQ4KRd)));
  t.dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kQ4KRdmin)));
  return t;
}

// acc + d * dx * isum - dmin * dx * sum_j m_j * ssum_j: one token's super-block xb, whose scaled
// sub-block sums are isum. The mins meet the activation's 32-element sums as int16 pairs (vpdpwssd).
inline __m512 add_block(const BlockTotals& t, __m512i isum, const BlockQ8_KS& xb, __m512 acc) {
  __m512i msum = _mm512_setzero_si512();
  for (int p = 0; p < 4; ++p) msum = _mm512_dpwssd_epi32(msum, t.mp[p], bcast4(xb.ssum + 2 * p));
  const __m512 dx = _mm512_set1_ps(xb.d);
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(t.d, dx), acc);
  return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum), _mm512_mul_ps(t.dmin, dx), acc);
}

// Scale of sub-block j of every row, as int32 lanes.
inline __m512i sub_scale(const Scales& s, int j) {
  return _mm512_shuffle_epi8(j < 4 ? s.sc_lo : s.sc_hi, byte_to_lane(j % 4));
}

// A super-block's lines, a quarter per quant chunk.
constexpr size_t kQ4KRPrefetchLines = kQ4KRBlockBytes / 64 / 4;
static_assert(kQ4KRBlockBytes % (64 * 4) == 0, "a Q4_KR super-block is 36 whole lines");

// Decode: a quant chunk's two sub-block dot products, each quant register loaded once for both:
// its low nibbles (the even sub-block) into se, its high nibbles, masked in place (16 q), into so.
// Two independent chains (on Zen 4, one thread, in L2: 1.2x the speed of one sub-block at a
// time), the activation bytes broadcast memory operands (quant/vnni_avx512.h: a third fewer
// instructions per byte).
[[gnu::always_inline]] inline void chunk_dots(const uint8_t* q, const int8_t* xq, __m512i& se, __m512i& so) {
  const __m512i lo4 = _mm512_set1_epi8(0x0f), hi4 = _mm512_set1_epi8(static_cast<char>(0xf0));
  se = so = _mm512_setzero_si512();
  for (int k = 0; k < 8; ++k) {
    const __m512i v = _mm512_loadu_si512(q + 64 * k);
    se = dpbusd_bcast4(se, _mm512_and_si512(v, lo4), xq + 4 * k);
    so = dpbusd_bcast4(so, _mm512_and_si512(v, hi4), xq + 32 + 4 * k);
  }
}

// Decode: one row group, one token, the super-blocks in one sequential stream.
template <bool Rolled>
inline void decode_tile(const MatArgs& a, int64_t g) {
  const uint8_t* G = a.W + static_cast<size_t>(g) * kInterleaveRows * a.w_stride;
  const BlockQ8_KS* x = reinterpret_cast<const BlockQ8_KS*>(a.X);
  // Low nibbles (even sub-blocks) are masked in place; high nibbles (odd sub-blocks) are masked in
  // place too, without the shift down: they enter the dot products as 16 q, so the odd
  // sub-blocks' scaled sums go to their own accumulator, divided by 16 (an exact shift: every
  // term is a multiple of 16) when the super-block is done. Bounds: a sub-block sum is at most
  // 32 * 240 * 128 < 2^20, times a 6-bit scale < 2^26, four of them < 2^28.
  __m512 acc = _mm512_setzero_ps();
  const uint8_t* const end = a.W + static_cast<size_t>(a.r1 / kInterleaveRows) * kInterleaveRows * a.w_stride;
  for (int64_t b = 0; b < a.nb; ++b) {
    const uint8_t* blk = G + kQ4KRBlockBytes * static_cast<size_t>(b);
    if (a.touch && static_cast<size_t>(end - blk) > a.touch) touch_line(blk + a.touch);
    const Scales sc = unpack_scales(blk);
    __m512i isum = _mm512_setzero_si512(), iodd = _mm512_setzero_si512();
    if constexpr (Rolled) {
      // Decode with the chunk loop kept rolled (MatArgs::rolled; quant/stream_prefetch.h: on the
      // Zen 5 VM it streams faster), otherwise as below: the chunk's sub-block scales come from
      // a table of the 8 made once per super-block, and its prefetches are a rolled loop too.
      __m512i scale[8];
      for (int j = 0; j < 8; ++j) scale[j] = sub_scale(sc, j);
#pragma GCC unroll 1
      for (int c = 0; c < 4; ++c) {
        const uint8_t* q = blk + q4kr_quant_line(c, 0);
        const int8_t* xq = x[b].qs + 64 * c;
        const char* first = reinterpret_cast<const char*>(blk) + 64 * kQ4KRPrefetchLines * static_cast<size_t>(c);
        if (a.prefetch)
#pragma GCC unroll 1
          for (size_t l = 0; l < kQ4KRPrefetchLines; ++l) _mm_prefetch(first + a.prefetch + 64 * l, _MM_HINT_T1);
        if (a.prefetch_l1)
#pragma GCC unroll 1
          for (size_t l = 0; l < kQ4KRPrefetchLines; ++l) _mm_prefetch(first + a.prefetch_l1 + 64 * l, _MM_HINT_T0);
        __m512i se, so;
        chunk_dots(q, xq, se, so);
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(se, scale[2 * c]));
        iodd = _mm512_add_epi32(iodd, _mm512_mullo_epi32(so, scale[2 * c + 1]));
      }
    } else {
      // Decode, unrolled (the chunk's dot products: chunk_dots).
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) {
        const uint8_t* q = blk + q4kr_quant_line(c, 0);
        const int8_t* xq = x[b].qs + 64 * c;
        // The super-block's 36 lines a.prefetch bytes ahead, into L2, 9 with each chunk: one
        // burst of 36 per super-block held the core's fill buffers and stalled the loads and
        // arithmetic behind it (Xeon VM, 24-layer q4_k decode, distances interleaved in one
        // process: one thread 83-87% -> 91-94% of the read probe, two 85-90% -> 91-92%).
        if (a.prefetch)
          for (size_t l = kQ4KRPrefetchLines * static_cast<size_t>(c); l < kQ4KRPrefetchLines * static_cast<size_t>(c + 1); ++l)
            _mm_prefetch(reinterpret_cast<const char*>(blk + a.prefetch + 64 * l), _MM_HINT_T1);
        if (a.prefetch_l1)  // the same lines again, nearer, into L1 (quant/stream_prefetch.h)
          for (size_t l = kQ4KRPrefetchLines * static_cast<size_t>(c); l < kQ4KRPrefetchLines * static_cast<size_t>(c + 1); ++l)
            _mm_prefetch(reinterpret_cast<const char*>(blk + a.prefetch_l1 + 64 * l), _MM_HINT_T0);
        __m512i se, so;
        chunk_dots(q, xq, se, so);
        isum = _mm512_add_epi32(isum, _mm512_mullo_epi32(se, sub_scale(sc, 2 * c)));
        iodd = _mm512_add_epi32(iodd, _mm512_mullo_epi32(so, sub_scale(sc, 2 * c + 1)));
      }
    }
    isum = _mm512_add_epi32(isum, _mm512_srai_epi32(iodd, 4));
    acc = add_block(block_totals(blk, sc), isum, x[b], acc);
  }
  _mm512_storeu_ps(a.Y + g * kInterleaveRows, acc);
}

// Prefill: NG row groups x NT tokens. Per 4 weight bytes of every row (one register of a group,
// loaded and masked once per tile) and token, one broadcast of 4 activation bytes feeds NG
// vpdpbusd, so a tile keeps NG x NT independent sums in flight; per sub-block each sum is weighted
// by its 6-bit scales in int32 (vpmulld), exactly as decode and the scalar kernel. vpdpbusd is
// throughput-bound only with many sums in flight (Xeon VM, one thread: 12 independent chains
// 3.8 G/s, 24 chains 4.9 G/s); the tile that kept one group's 8 registers for a whole sub-block
// and 4 tokens had 4 chains and ran qmatmul/Q4_KR/avx512/T128 at 150-230 GFLOP/s; 2 x 4 runs at
// 245-302 (maxima of 9 interleaved runs: the old tile 230, 2 x 4 303, 2 x 6 293, 3 x 4 289, 1 x 8 267;
// 2 x 12 and 4 x 6 were slower still).
template <int NG, int NT>
inline void prefill_tile(const MatArgs& a, int64_t g0, int64_t t0) {
  const uint8_t* G[NG];
  for (int g = 0; g < NG; ++g) G[g] = a.W + static_cast<size_t>(g0 + g) * kInterleaveRows * a.w_stride;
  const BlockQ8_KS* x[NT];
  for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_KS*>(a.X + (t0 + j) * a.x_stride);
  alignas(64) float acc[NT][NG * kInterleaveRows] = {};  // touched once per super-block: in L1
  for (int64_t b = 0; b < a.nb; ++b) {
    __m512i scale[NG][8];  // sub-block j's scale in every lane, made once per super-block
    BlockTotals totals[NG];
    const uint8_t* blk[NG];
    for (int g = 0; g < NG; ++g) {
      blk[g] = G[g] + kQ4KRBlockBytes * static_cast<size_t>(b);
      const Scales sc = unpack_scales(blk[g]);
      for (int j = 0; j < 8; ++j) scale[g][j] = sub_scale(sc, j);
      totals[g] = block_totals(blk[g], sc);
    }
    __m512i isum[NG][NT];
    for (int g = 0; g < NG; ++g)
      for (int j = 0; j < NT; ++j) isum[g][j] = _mm512_setzero_si512();
    // One sub-block: the even one from the low nibbles of chunk c, the odd one from the high
    // nibbles masked in place (16 q, shifted down once per sum: exact, every term is a multiple
    // of 16).
    const auto sub_block = [&](int c, bool odd) {
      const __m512i mask = _mm512_set1_epi8(static_cast<char>(odd ? 0xf0 : 0x0f));
      const size_t xoff = 64 * static_cast<size_t>(c) + (odd ? 32 : 0);
      __m512i s[NG][NT];
      for (int g = 0; g < NG; ++g)
        for (int j = 0; j < NT; ++j) s[g][j] = _mm512_setzero_si512();
      for (int k = 0; k < 8; ++k) {
        __m512i w[NG];
        for (int g = 0; g < NG; ++g)
          w[g] = _mm512_and_si512(_mm512_loadu_si512(blk[g] + q4kr_quant_line(c, k)), mask);
        for (int j = 0; j < NT; ++j) {
          const __m512i xk = bcast4(x[j][b].qs + xoff + 4 * k);
          for (int g = 0; g < NG; ++g) s[g][j] = _mm512_dpbusd_epi32(s[g][j], w[g], xk);
        }
      }
      const int sub = 2 * c + (odd ? 1 : 0);
      for (int g = 0; g < NG; ++g)
        for (int j = 0; j < NT; ++j)
          isum[g][j] = _mm512_add_epi32(isum[g][j], _mm512_mullo_epi32(odd ? _mm512_srai_epi32(s[g][j], 4) : s[g][j],
                                                                         scale[g][sub]));
    };
#pragma GCC unroll 1
    for (int c = 0; c < 4; ++c) {
      sub_block(c, false);
      sub_block(c, true);
    }
    for (int g = 0; g < NG; ++g)
      for (int j = 0; j < NT; ++j) {
        float* out = acc[j] + g * kInterleaveRows;
        _mm512_store_ps(out, add_block(totals[g], isum[g][j], x[j][b], _mm512_load_ps(out)));
      }
  }
  for (int g = 0; g < NG; ++g)
    for (int j = 0; j < NT; ++j)
      _mm512_storeu_ps(a.Y + (t0 + j) * a.ldy + (g0 + g) * kInterleaveRows, _mm512_load_ps(acc[j] + g * kInterleaveRows));
}

// Every token of groups g .. g + NG - 1: tiles of kPrefillTokens, then one of the rest.
constexpr int kPrefillTokens = 4, kPrefillGroups = 2;
template <int NG, int NT = kPrefillTokens - 1>
inline void prefill_rest(const MatArgs& a, int64_t g, int64_t t) {
  if constexpr (NT > 0) {
    if (a.T - t == NT) prefill_tile<NG, NT>(a, g, t);
    else prefill_rest<NG, NT - 1>(a, g, t);
  }
}
template <int NG>
inline void prefill_tokens(const MatArgs& a, int64_t g) {
  int64_t t = 0;
  for (; t + kPrefillTokens <= a.T; t += kPrefillTokens) prefill_tile<NG, kPrefillTokens>(a, g, t);
  prefill_rest<NG>(a, g, t);
}

template <int NG = kPrefillGroups>
inline void prefill_groups(const MatArgs& a, int64_t g, int64_t g1) {
  if constexpr (NG > 0) {
    for (; g + NG <= g1; g += NG) prefill_tokens<NG>(a, g);
    prefill_groups<NG - 1>(a, g, g1);
  }
}

}  // namespace

void avx512_matvec_q4_kr(const MatArgs& a) {
  if (a.rolled)
    for (int64_t g = a.r0 / kInterleaveRows; g < a.r1 / kInterleaveRows; ++g) decode_tile<true>(a, g);
  else
    for (int64_t g = a.r0 / kInterleaveRows; g < a.r1 / kInterleaveRows; ++g) decode_tile<false>(a, g);
}

void avx512_matmul_q4_kr(const MatArgs& a) { prefill_groups(a, a.r0 / kInterleaveRows, a.r1 / kInterleaveRows); }

}  // namespace jetmoe::qdot_detail

#endif
