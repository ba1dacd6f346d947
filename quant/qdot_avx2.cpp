// AVX2 + FMA + F16C dot-product kernels (no VNNI): int8 products via _mm256_maddubs_epi16
// (u8 x s8 -> pairwise int16) and _mm256_madd_epi16 (-> int32), one float FMA per block.
//
// Compiled with -mavx2 -mfma -mf16c: this file must not odr-use inline functions or templates
// with external linkage from shared headers (the linker could keep this file's AVX2 copy for the
// whole program). Everything here lives in an anonymous namespace and uses only intrinsics.
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

namespace jetmoe::qdot_detail {
namespace {

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 packed bytes of nibbles -> 32 bytes: low nibbles (elements 0..15), then high (16..31).
inline __m256i unpack_nibbles16(const uint8_t* p) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i v = _mm256_set_m128i(_mm_srli_epi16(x, 4), x);
  return _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
}

template <int NR, int NT>
inline void store_tile(const MatArgs& a, int64_t r, int64_t t, __m256 (&acc)[NR][NT]) {
  for (int i = 0; i < NR; ++i)
    for (int j = 0; j < NT; ++j) a.Y[(t + j) * a.ldy + r + i] = hsum(acc[i][j]);
}

// ---- Q8_0 weights x Q8_0 activations: sign trick, |w| (u8) x sign(a, w) (s8) ----------------
struct Q8_0K {
  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    const BlockQ8_0* w[NR];
    const BlockQ8_0* x[NT];
    for (int i = 0; i < NR; ++i) w[i] = reinterpret_cast<const BlockQ8_0*>(a.W + (r + i) * a.w_stride);
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_0*>(a.X + (t + j) * a.x_stride);
    __m256 acc[NR][NT];
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < a.nb; ++b) {
      __m256i wq[NR], wabs[NR];
      float dw[NR];
      for (int i = 0; i < NR; ++i) {
        wq[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i][b].qs));
        wabs[i] = _mm256_abs_epi8(wq[i]);
        dw[i] = h2f(w[i][b].d);
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
        const float dx = h2f(x[j][b].d);
        for (int i = 0; i < NR; ++i) {
          const __m256i p16 = _mm256_maddubs_epi16(wabs[i], _mm256_sign_epi8(xq, wq[i]));
          const __m256i p32 = _mm256_madd_epi16(p16, ones);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(dw[i] * dx), acc[i][j]);
        }
      }
    }
    store_tile<NR, NT>(a, r, t, acc);
  }
};

// ---- Q4_0 weights x Q8_0 activations: q (u8, 0..15) x a, minus 8 * a, in int16 --------------
struct Q4_0K {
  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    const BlockQ4_0* w[NR];
    const BlockQ8_0* x[NT];
    for (int i = 0; i < NR; ++i) w[i] = reinterpret_cast<const BlockQ4_0*>(a.W + (r + i) * a.w_stride);
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_0*>(a.X + (t + j) * a.x_stride);
    __m256 acc[NR][NT];
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i eights = _mm256_set1_epi8(8);
    for (int64_t b = 0; b < a.nb; ++b) {
      __m256i wq[NR];
      float dw[NR];
      for (int i = 0; i < NR; ++i) {
        wq[i] = unpack_nibbles16(w[i][b].qs);
        dw[i] = h2f(w[i][b].d);
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs));
        const __m256i corr = _mm256_maddubs_epi16(eights, xq);  // 8 * (a0 + a1) per pair
        const float dx = h2f(x[j][b].d);
        for (int i = 0; i < NR; ++i) {
          const __m256i p16 = _mm256_sub_epi16(_mm256_maddubs_epi16(wq[i], xq), corr);
          const __m256i p32 = _mm256_madd_epi16(p16, ones);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_set1_ps(dw[i] * dx), acc[i][j]);
        }
      }
    }
    store_tile<NR, NT>(a, r, t, acc);
  }
};

// ---- Q4_K weights x Q8_K activations -----------------------------------------------------
// Per 32-element sub-block: maddubs(q, a) -> int16 pairs, madd with the 6-bit scale -> int32,
// summed over the super-block; the mins use the activation's 16-element sums.
struct Q4_KK {
  template <int NR, int NT>
  static void tile(const MatArgs& a, int64_t r, int64_t t) {
    const BlockQ4_K* w[NR];
    const BlockQ8_K* x[NT];
    for (int i = 0; i < NR; ++i) w[i] = reinterpret_cast<const BlockQ4_K*>(a.W + (r + i) * a.w_stride);
    for (int j = 0; j < NT; ++j) x[j] = reinterpret_cast<const BlockQ8_K*>(a.X + (t + j) * a.x_stride);
    __m256 acc[NR][NT];
    for (int i = 0; i < NR; ++i)
      for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < a.nb; ++b) {
      __m256i scales[NR], mins[NR];
      float dw[NR], dmw[NR];
      for (int i = 0; i < NR; ++i) {
        alignas(16) uint8_t sm[16];
        q4k_unpack_scales(w[i][b].scales, sm);
        const __m256i sm16 = _mm256_cvtepu8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(sm)));
        const __m128i sc = _mm256_castsi256_si128(sm16);
        const __m128i mn = _mm256_extracti128_si256(sm16, 1);
        scales[i] = _mm256_broadcastsi128_si256(sc);
        mins[i] = _mm256_set_m128i(_mm_unpackhi_epi16(mn, mn), _mm_unpacklo_epi16(mn, mn));
        dw[i] = h2f(w[i][b].d);
        dmw[i] = h2f(w[i][b].dmin);
      }
      __m256i isum[NR][NT];
      for (int i = 0; i < NR; ++i)
        for (int j = 0; j < NT; ++j) isum[i][j] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {
        // broadcast int16 scale 2c (low nibbles) and 2c+1 (high nibbles) to all lanes
        const __m256i shuf_lo = _mm256_set1_epi16(static_cast<short>(((4 * c + 1) << 8) | (4 * c)));
        const __m256i shuf_hi = _mm256_set1_epi16(static_cast<short>(((4 * c + 3) << 8) | (4 * c + 2)));
        for (int i = 0; i < NR; ++i) {
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[i][b].qs + 32 * c));
          const __m256i qlo = _mm256_and_si256(q, m4);
          const __m256i qhi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
          const __m256i slo = _mm256_shuffle_epi8(scales[i], shuf_lo);
          const __m256i shi = _mm256_shuffle_epi8(scales[i], shuf_hi);
          for (int j = 0; j < NT; ++j) {
            const __m256i alo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs + 64 * c));
            const __m256i ahi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].qs + 64 * c + 32));
            const __m256i plo = _mm256_madd_epi16(_mm256_maddubs_epi16(qlo, alo), slo);
            const __m256i phi = _mm256_madd_epi16(_mm256_maddubs_epi16(qhi, ahi), shi);
            isum[i][j] = _mm256_add_epi32(isum[i][j], _mm256_add_epi32(plo, phi));
          }
        }
      }
      for (int j = 0; j < NT; ++j) {
        const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[j][b].bsums));
        const float dx = x[j][b].d;
        for (int i = 0; i < NR; ++i) {
          const __m256i msum = _mm256_madd_epi16(bs, mins[i]);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i][j]), _mm256_set1_ps(dw[i] * dx), acc[i][j]);
          acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(-dmw[i] * dx), acc[i][j]);
        }
      }
    }
    store_tile<NR, NT>(a, r, t, acc);
  }
};

// Decode: the one-token kernels of qmatvec_avx2.cpp, which keep their prepped activation on the
// stack and so take rows up to avx2_matvec_max_elems() long; longer rows use the tile.
template <KernelFn OneToken, class Tiled, int NR, int BlockElems>
void matvec(const MatArgs& a) {
  if (a.nb * BlockElems <= avx2_matvec_max_elems()) return OneToken(a);
  drive<Tiled, NR, 1>(a);
}

}  // namespace

const KernelTable& avx2_kernels() {
  static const KernelTable t = {
      // The repacked types (3, 4, 5): qdot_interleaved_avx2.cpp and qdot_q4kr_avx2.cpp.
      {matvec<avx2_matvec_q8_0, Q8_0K, 4, kQK8_0>, matvec<avx2_matvec_q4_0, Q4_0K, 4, kQK4_0>,
       matvec<avx2_matvec_q4_k, Q4_KK, 2, kQK_K>, avx2_matvec_q8_0r, avx2_matvec_q4_0r, avx2_matvec_q4_kr},
      {drive<Q8_0K, 2, 4>, drive<Q4_0K, 2, 4>, drive<Q4_KK, 1, 4>, avx2_matmul_q8_0r, avx2_matmul_q4_0r, avx2_matmul_q4_kr},
  };
  return t;
}

}  // namespace jetmoe::qdot_detail

#else  // built without AVX2 support in the compiler flags

namespace jetmoe::qdot_detail {
const KernelTable& avx2_kernels() { return scalar_kernels(); }
}  // namespace jetmoe::qdot_detail

#endif
