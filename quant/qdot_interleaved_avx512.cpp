// AVX-512 VNNI kernels for the interleaved 16-row layouts Q8_0R / Q4_0R (quant/qtypes.h), decode
// and prefill alike.
//
// One 512-bit load of a block's quants holds 4 weights of each of 16 rows (int32 lane i = row i),
// so one vpdpbusd against 4 activation bytes broadcast to every lane advances 16 rows at once and
// the int32 lanes end up holding the 16 rows' block sums: no byte shuffles, no horizontal sums,
// and the 16 outputs of a row group are one store. Per block and row group: 8 vpdpbusd
// (Q8_0: 8 chunks; Q4_0: 4 chunks x low/high nibbles), then one int -> float conversion and one
// multiply-add with the 16 rows' scales times the activation's.
//   Q8_0R: weights are fed as unsigned w ^ 0x80 = w + 128; the activation block's zsum
//          (-128 * sum(a)) starts the int32 sum and removes the +128 * sum(a) this adds.
//   Q4_0R: nibbles q (0..15) are the unsigned operand; zsum = -8 * sum(a) applies the "- 8".
// The 8 weight registers of a block line up with activation bytes 4k .. 4k + 3 for k = 0..7 in
// both formats (Q4_0 low nibbles of chunk k are elements 4k.., high nibbles 16 + 4k..), so one
// tile template serves both; the formats differ only in how a block's registers are loaded.
//
// Prefill tiles are NG row groups x NT tokens: the block's weight registers are loaded (and, for
// Q4_0R, unpacked) once per tile and used for NT tokens (measured on Zen 5, one thread, 128
// tokens x 1024 rows in L2: 2 x 4 at 660-690 GFLOP/s, 1 x 8 at 620-640, 1 x 6 at 600-610; the
// GGUF-layout 4 x 4 tile ran 199). Decode has its own loop (matvec below: a pair of blocks per
// step; each format's block_sum splits the 8 dot products into two independent chains and takes
// the activation bytes as broadcast memory operands, quant/vnni_avx512.h); a group is one
// sequential stream of whole lines. Whether software prefetch helps that stream depends on
// the CPU (quant/stream_prefetch.h): on Zen 5, one core from huge-page memory, it read at 94-104%
// of the plain streaming-read probe without, 89-96% prefetching 4 KiB ahead and 79-86% at 8-16
// KiB; on the Xeon VM prefetching 4 KiB ahead, every line, was 1.1-1.6x faster (one line in 4 or
// 16 was not). On Zen 5 the Q4_0R and Q8_0R loops gain from an L2 prefetch only together with a
// demand touch of one line ahead every ~2 KiB (MatArgs::touch) and with their block loops kept
// rolled (MatArgs::rolled: each format's block_sum and the pair's prefetches as loops rather than
// unrolled by the compiler; same sums, more instructions per byte, faster from memory there:
// stream_prefetch.h, decode_stream, has the figures). The Xeon keeps the unrolled loops.
//
// Loads are unaligned instructions: a group is 64-byte aligned only when the tensor is and a row
// has an even number of blocks (owned weights are; test buffers need not be), and on aligned
// addresses they cost the same.
//
// Compiled with AVX-512 flags: everything in an anonymous namespace (see qdot_avx2.cpp).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if JETMOE_QDOT_AVX512
#include <immintrin.h>

#include "quant/stream_prefetch.h"
#include "quant/vnni_avx512.h"

namespace jetmoe::qdot_detail {
namespace {

// Software prefetch into L2 (quant/stream_prefetch.h says when and why): on the Xeon VM the
// kernels and the read probe streamed faster this way than into L1.
inline void prefetch_l2(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T1); }
inline void prefetch_l1(const uint8_t* p) { _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0); }

struct Q8Format {
  static constexpr size_t kQuantBytes = 32;
  static constexpr int64_t kTouchBlocks = 4;  // 2 pairs, 34 lines, between demand touches
  static inline void load(const uint8_t* q, __m512i (&w)[8]) {
    const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
    for (int k = 0; k < 8; ++k) w[k] = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * k), k80);
  }
  // Decode: one block's integer sums for 16 rows and one token, as two chains of 4 (even and odd
  // registers) added at the end, so they wait on 4 dependent vpdpbusd instead of 8 (Zen 4, one
  // thread, six alternating pairs: in L2 median 84 -> 92 GB/s; from memory 25.1 -> 25.7).
  template <bool Rolled>
  [[gnu::always_inline]] static inline __m512i block_sum(const uint8_t* q, const BlockQ8_0Z& xb) {
    const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512i s0 = _mm512_set1_epi32(xb.zsum), s1 = _mm512_setzero_si512();
    const auto lines = [&](int k) {  // lines k and k + 1 of the block
      s0 = dpbusd_bcast4(s0, _mm512_xor_si512(_mm512_loadu_si512(q + 64 * k), k80), xb.qs + 4 * k);
      s1 = dpbusd_bcast4(s1, _mm512_xor_si512(_mm512_loadu_si512(q + 64 * k + 64), k80), xb.qs + 4 * k + 4);
    };
    if constexpr (Rolled) {
#pragma GCC unroll 1
      for (int k = 0; k < 8; k += 2) lines(k);
    } else {
      for (int k = 0; k < 8; k += 2) lines(k);
    }
    return _mm512_add_epi32(s0, s1);
  }
};

struct Q4Format {
  static constexpr size_t kQuantBytes = 16;
  static constexpr int64_t kTouchBlocks = 8;  // 4 pairs, 36 lines, between demand touches
  static inline void load(const uint8_t* q, __m512i (&w)[8]) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int k = 0; k < 4; ++k) {
      const __m512i v = _mm512_loadu_si512(q + 64 * k);
      w[k] = _mm512_and_si512(v, m4);
      w[k + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), m4);
    }
  }
  // Decode: the high nibbles are masked in place (16 q) rather than shifted down, and dotted into
  // a second accumulator that is shifted down once per block (exact: every term is a multiple of
  // 16; at most 16 * 240 * 128 < 2^19). Two independent chains of 4 instead of one of 8, and 4
  // fewer instructions per block (Zen 4, one thread, in L2: 57-64 -> 66-69 GB/s).
  template <bool Rolled>
  [[gnu::always_inline]] static inline __m512i block_sum(const uint8_t* q, const BlockQ8_0Z& xb) {
    const __m512i lo4 = _mm512_set1_epi8(0x0f), hi4 = _mm512_set1_epi8(static_cast<char>(0xf0));
    __m512i s = _mm512_set1_epi32(xb.zsum), h = _mm512_setzero_si512();
    const auto line = [&](int k) {  // line k of the block: 4 weights of each row from both nibbles
      const __m512i v = _mm512_loadu_si512(q + 64 * k);
      s = dpbusd_bcast4(s, _mm512_and_si512(v, lo4), xb.qs + 4 * k);
      h = dpbusd_bcast4(h, _mm512_and_si512(v, hi4), xb.qs + 16 + 4 * k);
    };
    if constexpr (Rolled) {
#pragma GCC unroll 1
      for (int k = 0; k < 4; ++k) line(k);
    } else {
      for (int k = 0; k < 4; ++k) line(k);
    }
    return _mm512_add_epi32(s, _mm512_srai_epi32(h, 4));
  }
};

// NG row groups (starting at group g0) x NT tokens (starting at t0) over the whole row.
template <class F, int NG, int NT>
inline void tile(const MatArgs& a, int64_t g0, int64_t t0) {
  const size_t group_bytes = static_cast<size_t>(kInterleaveRows) * a.w_stride;
  const uint8_t* G[NG];
  for (int g = 0; g < NG; ++g) G[g] = a.W + static_cast<size_t>(g0 + g) * group_bytes;
  const BlockQ8_0Z* x[NT];
  for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_0Z*>(a.X + (t0 + j) * a.x_stride);
  __m512 acc[NG][NT];
  for (int g = 0; g < NG; ++g)
    for (int j = 0; j < NT; ++j) acc[g][j] = _mm512_setzero_ps();
  for (int64_t b = 0; b < a.nb; ++b) {
    const InterleavedBlock o = interleaved_block(F::kQuantBytes, a.nb, b);
    __m512i w[NG][8];
    __m512 dw[NG];
    for (int g = 0; g < NG; ++g) {
      F::load(G[g] + o.quants, w[g]);
      dw[g] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(G[g] + o.scales)));
    }
    for (int j = 0; j < NT; ++j) {
      const BlockQ8_0Z& xb = x[j][b];
      __m512i s[NG];
      for (int g = 0; g < NG; ++g) s[g] = _mm512_set1_epi32(xb.zsum);
      for (int k = 0; k < 8; ++k) {
        const __m512i xk = bcast4(xb.qs + 4 * k);
        for (int g = 0; g < NG; ++g) s[g] = _mm512_dpbusd_epi32(s[g], w[g][k], xk);
      }
      const __m512 dx = _mm512_set1_ps(xb.d);
      for (int g = 0; g < NG; ++g)
        acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[g]), _mm512_mul_ps(dw[g], dx), acc[g][j]);
    }
  }
  for (int g = 0; g < NG; ++g)
    for (int j = 0; j < NT; ++j)
      _mm512_storeu_ps(a.Y + (t0 + j) * a.ldy + (g0 + g) * kInterleaveRows, acc[g][j]);
}

template <class F, int NG>
inline void tokens(const MatArgs& a, int64_t g) {
  int64_t t = 0;
  for (; t + 4 <= a.T; t += 4) tile<F, NG, 4>(a, g, t);
  if (t + 2 <= a.T) {
    tile<F, NG, 2>(a, g, t);
    t += 2;
  }
  if (t < a.T) tile<F, NG, 1>(a, g, t);
}

template <class F>
void matmul(const MatArgs& a) {
  const int64_t g1 = a.r1 / kInterleaveRows;
  int64_t g = a.r0 / kInterleaveRows;
  for (; g + 2 <= g1; g += 2) tokens<F, 2>(a, g);
  if (g < g1) tokens<F, 1>(a, g);
}

// Decode: one row group at a time, a pair of blocks per step (the layout's unit: both blocks'
// scales, then both blocks' quants, 64 + 2 x 16 x kQuantBytes bytes), each block's sums from
// F::block_sum (a decode kernel of its own rather than the prefill tile with one token), into
// two accumulators. Offsets within a pair are constants, so a step issues no address arithmetic
// and prefetches the pair's lines in one run; the per-block loop it replaced (interleaved_block()
// for each block, its scales' line every other block) issued a fifth more instructions per byte
// and streamed slower (harness as in quant/vnni_avx512.h, Q4_0R 2 threads: 95.2 -> 97.4%, 2048 x
// 5632; 95.7 -> 97.0%, 11264 x 2048; 24-layer q4_0 decode, two threads, interleaved: 20.62 ->
// 20.91 tok/s). Two row groups per step (sharing the activation loads) were faster in L2 but
// streamed slower from memory, so a decode kernel keeps one sequential stream.
template <class F, bool Rolled>
void matvec(const MatArgs& a) {
  constexpr size_t kBlock = static_cast<size_t>(kInterleaveRows) * F::kQuantBytes;  // one block's quants
  constexpr size_t kPair = pair_bytes(F::kQuantBytes);                                // both blocks' scales and quants
  const size_t group_bytes = static_cast<size_t>(kInterleaveRows) * a.w_stride;
  const BlockQ8_0Z* x = reinterpret_cast<const BlockQ8_0Z*>(a.X);
  const auto apply = [](__m512 acc, const __m512i s, const uint8_t* scales, float dx) {
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales)));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, _mm512_set1_ps(dx)), acc);
  };
  const uint8_t* const end = a.W + static_cast<size_t>(a.r1 / kInterleaveRows) * group_bytes;  // touches stay before
  for (int64_t g = a.r0 / kInterleaveRows; g < a.r1 / kInterleaveRows; ++g) {
    const uint8_t* P = a.W + static_cast<size_t>(g) * group_bytes;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= a.nb; b += 2, P += kPair) {
      if (a.touch && b % F::kTouchBlocks == 0 && static_cast<size_t>(end - P) > a.touch) touch_line(P + a.touch);
      // The pair's lines a.prefetch bytes ahead into L2, and again a.prefetch_l1 ahead into L1
      // (quant/stream_prefetch.h); the stream is contiguous across pairs and groups.
      // Both shapes written out: through a helper that takes the loop body as a lambda, GCC 12
      // dropped the prefetches altogether (a loop without side effects).
      if constexpr (Rolled) {
        if (a.prefetch)
#pragma GCC unroll 1
          for (size_t l = 0; l < kPair; l += 64) prefetch_l2(P + a.prefetch + l);
        if (a.prefetch_l1)
#pragma GCC unroll 1
          for (size_t l = 0; l < kPair; l += 64) prefetch_l1(P + a.prefetch_l1 + l);
      } else {
        if (a.prefetch)
          for (size_t l = 0; l < kPair; l += 64) prefetch_l2(P + a.prefetch + l);
        if (a.prefetch_l1)
          for (size_t l = 0; l < kPair; l += 64) prefetch_l1(P + a.prefetch_l1 + l);
      }
      acc0 = apply(acc0, F::template block_sum<Rolled>(P + pair_quants(F::kQuantBytes, 0), x[b]), P + pair_scales(0), x[b].d);
      acc1 = apply(acc1, F::template block_sum<Rolled>(P + pair_quants(F::kQuantBytes, 1), x[b + 1]), P + pair_scales(1),
                   x[b + 1].d);
    }
    if (b < a.nb)  // an odd last block alone: its quants, then its scales
      acc0 = apply(acc0, F::template block_sum<Rolled>(P, x[b]), P + kBlock, x[b].d);
    _mm512_storeu_ps(a.Y + g * kInterleaveRows, _mm512_add_ps(acc0, acc1));
  }
}

}  // namespace

void avx512_matvec_q8_0r(const MatArgs& a) { a.rolled ? matvec<Q8Format, true>(a) : matvec<Q8Format, false>(a); }
void avx512_matvec_q4_0r(const MatArgs& a) { a.rolled ? matvec<Q4Format, true>(a) : matvec<Q4Format, false>(a); }
void avx512_matmul_q8_0r(const MatArgs& a) { matmul<Q8Format>(a); }
void avx512_matmul_q4_0r(const MatArgs& a) { matmul<Q4Format>(a); }

}  // namespace jetmoe::qdot_detail

#endif
