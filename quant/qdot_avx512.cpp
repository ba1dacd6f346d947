// AVX-512 (F/BW/VL/DQ) + VNNI dot-product kernels. Two 32-element blocks per 512-bit register
// for Q8_0/Q4_0; one 64-element chunk (two Q4_K sub-blocks) per register for Q4_K.
//   Q8_0: dpbusd(a ^ 0x80 (u8), w (s8)) = sum a*w + 128*sum w; the 128*sum w correction is
//         computed once per weight block (dpbusd with 0x80 bytes) and shared by all tokens.
//   Q4_0: dpbusd(q (u8, 0..15), a (s8)) = sum q*a; the 8*sum a correction is computed once per
//         activation block and shared by all rows.
//   Q4_K: maddubs(q, a) -> int16 pairs, dpwssd with the 6-bit sub-block scales -> int32.
//
// Compiled with AVX-512 flags: no odr-use of external-linkage inline functions from shared
// headers (see qdot_avx2.cpp); everything is in an anonymous namespace.
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if JETMOE_QDOT_AVX512
#include <immintrin.h>

// GCC 12 reports the deliberately undefined upper halves of the 256->512 cast intrinsics as
// uninitialized (false positive inside avx512fintrin.h).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace jetmoe::qdot_detail {
namespace {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

template <int NR, int NT>
inline void store_tile(const MatArgs& a, int64_t r, int64_t t, __m512 (&acc)[NR][NT]) {
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < NT; ++j) a.Y[(t + j) * a.ldy + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

// [d0 x 8 | d1 x 8] from two fp16 scales.
inline __m512 pair_scales(uint16_t d0, uint16_t d1) {
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(d0 | (static_cast<uint32_t>(d1) << 16))));
  const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(f));
}

// Two blocks' 32 quant bytes in one register; `two` false = second half zero (odd tail block).
inline __m512i load_pair32(const int8_t* p0, const int8_t* p1, bool two) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p0));
  if (!two) return _mm512_zextsi256_si512(lo);
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p1)), 1);
}

// Two Q4_0 blocks' nibbles -> 64 bytes 0..15 in element order.
inline __m512i load_pair_nibbles(const uint8_t* p0, const uint8_t* p1, bool two) {
  const __m128i x0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0));
  const __m128i x1 = two ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1)) : _mm_setzero_si128();
  const __m256i x = _mm256_inserti128_si256(_mm256_castsi128_si256(x0), x1, 1);  // [q0 | q1]
  // [lo0 lo1 hi0 hi1] -> [lo0 hi0 lo1 hi1] (128-bit lanes)
  const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(x), _mm256_srli_epi16(x, 4), 1);
  const __m512i p = _mm512_shuffle_i64x2(v, v, _MM_SHUFFLE(3, 1, 2, 0));
  return _mm512_and_si512(p, _mm512_set1_epi8(0x0f));
}

// Where block b of a weight row keeps its quant bytes and fp16 scale (the GGUF block layout; the
// interleaved Q8_0R / Q4_0R / Q4_KR have their own kernels, qdot_interleaved_avx512.cpp and
// qdot_q4kr_avx512.cpp).
template <class Block, int QBytes>
struct BlockLayout {
  static const uint8_t* qs(const uint8_t* row, int64_t, int64_t b) {
    return reinterpret_cast<const uint8_t*>(reinterpret_cast<const Block*>(row)[b].qs);
  }
  static uint16_t d(const uint8_t* row, int64_t, int64_t b) { return reinterpret_cast<const Block*>(row)[b].d; }
};

// The NR x NT tile of a Q8_0 / Q4_0 kernel K over the whole row: K::step takes a pair of blocks
// (TWO) or the odd last one.
template <class K, int NR, int NT>
inline void pair_step_tile(const MatArgs& a, int64_t r, int64_t t) {
  const uint8_t* w[NR];
  const BlockQ8_0* x[NT];
  for (int i = 0; i < NR; ++i) w[i] = a.W + (r + i) * a.w_stride;
  for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_0*>(a.X + (t + j) * a.x_stride);
  __m512 acc[NR][NT];
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
  int64_t b = 0;
  for (; b + 2 <= a.nb; b += 2) K::template step<NR, NT, true>(w, a.nb, x, b, acc);
  if (b < a.nb) K::template step<NR, NT, false>(w, a.nb, x, b, acc);
  store_tile<NR, NT>(a, r, t, acc);
}

// ---- Q8_0 x Q8_0 -------------------------------------------------------------------------
template <class L>
struct Q8_0K {
  template <int NR, int NT, bool TWO>
  static inline void step(const uint8_t* const* w, int64_t nb, const BlockQ8_0* const* x, int64_t b,
                          __m512 (&acc)[NR][NT]) {
    const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512i wq[NR], ncorr[NR];
    __m512 dw[NR];
    for (int i = 0; i < NR; ++i) {
      wq[i] = load_pair32(reinterpret_cast<const int8_t*>(L::qs(w[i], nb, b)),
                          reinterpret_cast<const int8_t*>(L::qs(w[i], nb, b + TWO)), TWO);
      ncorr[i] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), k80, wq[i]));
      dw[i] = pair_scales(L::d(w[i], nb, b), TWO ? L::d(w[i], nb, b + 1) : 0);
    }
    for (int j = 0; j < NT; ++j) {
      const __m512i xu = _mm512_xor_si512(load_pair32(x[j][b].qs, x[j][b + TWO].qs, TWO), k80);
      const __m512 dx = pair_scales(x[j][b].d, TWO ? x[j][b + 1].d : 0);
      for (int i = 0; i < NR; ++i) {
        const __m512i s = _mm512_dpbusd_epi32(ncorr[i], xu, wq[i]);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[i], dx), acc[i][j]);
      }
    }
  }

  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    pair_step_tile<Q8_0K, NR, NT>(a, r, t);
  }
};

// ---- Q4_0 x Q8_0 -------------------------------------------------------------------------
template <class L>
struct Q4_0K {
  template <int NR, int NT, bool TWO>
  static inline void step(const uint8_t* const* w, int64_t nb, const BlockQ8_0* const* x, int64_t b,
                          __m512 (&acc)[NR][NT]) {
    const __m512i k8 = _mm512_set1_epi8(8);
    __m512i wq[NR];
    __m512 dw[NR];
    for (int i = 0; i < NR; ++i) {
      wq[i] = load_pair_nibbles(L::qs(w[i], nb, b), L::qs(w[i], nb, b + TWO), TWO);
      dw[i] = pair_scales(L::d(w[i], nb, b), TWO ? L::d(w[i], nb, b + 1) : 0);
    }
    for (int j = 0; j < NT; ++j) {
      const __m512i xq = load_pair32(x[j][b].qs, x[j][b + TWO].qs, TWO);
      const __m512i ncorr = _mm512_sub_epi32(_mm512_setzero_si512(),
                                             _mm512_dpbusd_epi32(_mm512_setzero_si512(), k8, xq));
      const __m512 dx = pair_scales(x[j][b].d, TWO ? x[j][b + 1].d : 0);
      for (int i = 0; i < NR; ++i) {
        const __m512i s = _mm512_dpbusd_epi32(ncorr, wq[i], xq);
        acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[i], dx), acc[i][j]);
      }
    }
  }

  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    pair_step_tile<Q4_0K, NR, NT>(a, r, t);
  }
};

using Q8_0Blocks = Q8_0K<BlockLayout<BlockQ8_0, 32>>;
using Q4_0Blocks = Q4_0K<BlockLayout<BlockQ4_0, 16>>;

// ---- Q4_K x Q8_K -------------------------------------------------------------------------
struct Q4_KK {
  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    const BlockQ4_K* w[NR];
    const BlockQ8_K* x[NT];
    for (int i = 0; i < NR; ++i) w[i] = reinterpret_cast<const BlockQ4_K*>(a.W + (r + i) * a.w_stride);
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_K*>(a.X + (t + j) * a.x_stride);
    __m512 acc[NR][NT];
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm512_setzero_ps();
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    // int16 lane index patterns: [2c x 16 | 2c+1 x 16] picks the scales of chunk c's sub-blocks
    const __m512i sidx[4] = {
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(0)), _mm256_set1_epi16(1), 1),
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(2)), _mm256_set1_epi16(3), 1),
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(4)), _mm256_set1_epi16(5), 1),
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(6)), _mm256_set1_epi16(7), 1)};
    // [8,8,9,9,...,15,15]: each min twice, to pair with the two 16-element sums of its sub-block
    const __m256i midx = _mm256_set_epi16(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
    for (int64_t b = 0; b < a.nb; ++b) {
      __m512i sc16[NR];
      __m256i mins[NR];
      float dw[NR], dmw[NR];
      for (int i = 0; i < NR; ++i) {
        alignas(16) uint8_t sm[16];
        q4k_unpack_scales(w[i][b].scales, sm);
        const __m256i sm16 = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sm)));
        sc16[i] = _mm512_castsi256_si512(sm16);
        mins[i] = _mm256_permutexvar_epi16(midx, sm16);
        dw[i] = h2f(w[i][b].d);
        dmw[i] = h2f(w[i][b].dmin);
      }
      __m512i isum[NR][NT];
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < NT; ++j) isum[i][j] = _mm512_setzero_si512();
      for (int c = 0; c < 4; ++c) {
        __m512i q[NR], s[NR];
        for (int i = 0; i < NR; ++i) {
          const __m256i x32 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i][b].qs + 32 * c));
          q[i] = _mm512_and_si512(
              _mm512_inserti64x4(_mm512_castsi256_si512(x32), _mm256_srli_epi16(x32, 4), 1), m4);
          s[i] = _mm512_permutexvar_epi16(sidx[c], sc16[i]);
        }
        for (int j = 0; j < NT; ++j) {
          const __m512i av = _mm512_loadu_si512(x[j][b].qs + 64 * c);
          for (int i = 0; i < NR; ++i)
            isum[i][j] = _mm512_dpwssd_epi32(isum[i][j], _mm512_maddubs_epi16(q[i], av), s[i]);
        }
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].bsums));
        const float dx = x[j][b].d;
        for (int i = 0; i < NR; ++i) {
          const __m512 msum = _mm512_zextps256_ps512(_mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins[i])));
          acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[i][j]), _mm512_set1_ps(dw[i] * dx), acc[i][j]);
          acc[i][j] = _mm512_fmadd_ps(msum, _mm512_set1_ps(-dmw[i] * dx), acc[i][j]);
        }
      }
    }
    store_tile<NR, NT>(a, r, t, acc);
  }
};

// Decode: the one-token kernels of qmatvec_avx512.cpp, which keep their prepped activation on
// the stack and so take rows up to avx512_matvec_max_elems() long; longer rows use the tile.
template <KernelFn OneToken, class Tiled, int NR, int BlockElems>
void matvec(const MatArgs& a) {
  if (a.nb * BlockElems <= avx512_matvec_max_elems()) return OneToken(a);
  drive<Tiled, NR, 1>(a);
}

}  // namespace

const KernelTable& avx512_kernels() {
  static const KernelTable t = {
      {matvec<avx512_matvec_q8_0, Q8_0Blocks, 4, kQK8_0>, matvec<avx512_matvec_q4_0, Q4_0Blocks, 4, kQK4_0>,
       matvec<avx512_matvec_q4_k, Q4_KK, 4, kQK_K>, avx512_matvec_q8_0r, avx512_matvec_q4_0r, avx512_matvec_q4_kr},
      // Prefill: 4 rows x 4 tokens per register tile (measured on Zen 5 at T = 128, one thread:
      // 1.13-1.27x the 2 x 4 tile; 2 x 8, 3 x 4, 4 x 3 and 2 x 6 in between, 1 x 8 slower).
      {drive<Q8_0Blocks, 4, 4>, drive<Q4_0Blocks, 4, 4>, drive<Q4_KK, 4, 4>, avx512_matmul_q8_0r,
       avx512_matmul_q4_0r, avx512_matmul_q4_kr},
  };
  return t;
}

}  // namespace jetmoe::qdot_detail

#else  // built without AVX-512 support in the compiler flags

namespace jetmoe::qdot_detail {
const KernelTable& avx512_kernels() { return scalar_kernels(); }
}  // namespace jetmoe::qdot_detail

#endif
