// AVX2 decode kernels (one token, T = 1) for the GGUF block layouts Q8_0, Q4_0 and Q4_K: what a
// CPU without AVX-512 runs for every weight loop of a decode step (weights stay in the file's
// layout there: the interleaved Q8_0R / Q4_0R / Q4_KR are made only for the AVX-512 kernels).
//
// Why separate kernels from the row x token tiles of qdot_avx2.cpp: at T = 1 the tiles redo per
// row and block what depends only on the activation, and convert each block's fp16 weight scale
// on its own. Here the activation is prepared once per call ("prep"), in a layout that lines up
// with the weight bytes, and the per-row loop is reduced to loads, the integer products and one
// float multiply-add per two blocks (Q4_0), per block (Q8_0) or per super-block (Q4_K); four
// blocks' fp16 scales are converted with one instruction. (The tiles ran 11, 20 and 8 GB/s from
// cache on one Ice Lake core for Q4_0, Q8_0 and Q4_K: below what one core streams from memory.)
//   Q4_0: a group is 4 blocks (72 bytes) = two 32-byte registers of nibbles, each two blocks' 16
//         bytes; low / high nibbles meet the prepped activation halves (maddubs, u8 x s8); the
//         "- 8" of the format is the per-lane term -8 * sum(a), prepped.
//   Q8_0: a group is 4 blocks (136 bytes); AVX2 has no u8 x s8 product without saturation for
//         signed weights, so the sign trick: |w| (u8) x a * sign(w) (s8).
//   Q4_K: one super-block (144 bytes) per step: 8 sub-block products weighted by their 6-bit
//         scales in int16 (madd), the mins against the prepped sub-block sums once per block.
// Rows are processed one at a time, as in qmatvec_avx512.cpp: a Q4_0 kernel taking two rows per
// pass (each activation load shared) read 20.5 against 17 GB/s from L2, but made 24-layer decode
// slower on the Ice Lake VM (two threads, the two in turn every 4 tokens: 69.7 against 66.0 ms
// per token).
//
// Compiled with the AVX2 flags: everything in an anonymous namespace, only intrinsics (see
// qdot_avx2.cpp on weak symbols).
#include "ops/cpu/simd_avx2.h"
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include <cstring>

namespace jetmoe::qdot_detail {
namespace {

// Largest row prepped on the stack (Q4_0: 2 bytes of prep per element); longer rows (none in
// JetMoE: 5632 at most) use the tiles.
constexpr int64_t kMaxElems = 16384;

// Q8_0 / Q4_0 rows: every line prefetched this far ahead into L1 (Q4_K takes the per-CPU plan of
// quant/stream_prefetch.h from MatArgs). Ice Lake VM, 24-layer q4_0 decode on two threads with
// these kernels forced (JETMOE_FORCE_ISA=avx2), variants in turn every 4 tokens in one process,
// ms per token: one prefetch per 72-byte group 2 KiB ahead (the AVX-512 GGUF-layout kernels' plan
// until then) 74.7, every line 4 KiB ahead 70.0, every line 8 KiB into L2 and 4 KiB into L1 70.2, none
// 96.5; in a second run every line 4 KiB ahead 64.7, 6 KiB 66.6, 8 KiB 65.3, 3 KiB 67.7.
constexpr int kPrefetchBytes = 4096;

// Asks for the lines of [p + kPrefetchBytes, p + kPrefetchBytes + bytes) into L1.
inline void prefetch_ahead(const uint8_t* p, int bytes) {
  for (int o = 0; o < bytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p) + kPrefetchBytes + o, _MM_HINT_T0);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The fp16 scales of four blocks `Stride` bytes apart (at p, p + Stride, ...) as four floats.
template <int Stride>
inline __m128 four_scales(const uint8_t* p) {
  uint32_t a, b, c, d;
  std::memcpy(&a, p, 4);
  std::memcpy(&b, p + Stride - 2, 4);
  std::memcpy(&c, p + 2 * Stride, 4);
  std::memcpy(&d, p + 3 * Stride - 2, 4);
  const uint64_t h = (a & 0xffffu) | (b & 0xffff0000u) | static_cast<uint64_t>((c & 0xffffu) | (d & 0xffff0000u)) << 32;
  return _mm_cvtph_ps(_mm_cvtsi64_si128(static_cast<long long>(h)));
}

// One leftover block after a row's last full group.
inline float tail_q8_0(const BlockQ8_0& w, const BlockQ8_0& x) {
  int s = 0;
  for (int e = 0; e < 32; ++e) s += w.qs[e] * x.qs[e];
  return static_cast<float>(s) * (Avx2::h2f(w.d) * Avx2::h2f(x.d));
}
inline float tail_q4_0(const BlockQ4_0& w, const BlockQ8_0& x) {
  int s = 0;
  for (int e = 0; e < 16; ++e) s += ((w.qs[e] & 0x0f) - 8) * x.qs[e] + ((w.qs[e] >> 4) - 8) * x.qs[e + 16];
  return static_cast<float>(s) * (Avx2::h2f(w.d) * Avx2::h2f(x.d));
}

// ---- Q4_0 ----------------------------------------------------------------------------------
// Activation side of 4 blocks, in the lane order of the two nibble registers: register p holds
// block 2p's 16 bytes in its low half and block 2p + 1's in its high half.
struct alignas(32) Q4Group {
  int8_t lo[2][32];    // elements 0..15 of blocks 2p and 2p + 1
  int8_t hi[2][32];    // elements 16..31
  int32_t corr[2][8];  // -8 * (sum of the 4 lo + 4 hi activation bytes that meet this int32 lane)
  float dx[4];         // the 4 blocks' scales
};

void prep_q4_0(const BlockQ8_0* x, int64_t groups, Q4Group* g) {
  const __m256i k8 = _mm256_set1_epi8(8);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < groups; ++i) {
    for (int p = 0; p < 2; ++p) {
      const BlockQ8_0& b0 = x[4 * i + 2 * p];
      const BlockQ8_0& b1 = x[4 * i + 2 * p + 1];
      const __m256i lo = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b1.qs), reinterpret_cast<const __m128i*>(b0.qs));
      const __m256i hi =
          _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(b1.qs + 16), reinterpret_cast<const __m128i*>(b0.qs + 16));
      _mm256_store_si256(reinterpret_cast<__m256i*>(g[i].lo[p]), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(g[i].hi[p]), hi);
      const __m256i s16 = _mm256_add_epi16(_mm256_maddubs_epi16(k8, lo), _mm256_maddubs_epi16(k8, hi));
      _mm256_store_si256(reinterpret_cast<__m256i*>(g[i].corr[p]),
                         _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_madd_epi16(s16, ones)));
    }
    for (int k = 0; k < 4; ++k) g[i].dx[k] = Avx2::h2f(x[4 * i + k].d);
  }
}

inline void q4_0_row(const uint8_t* W, size_t stride, int64_t r, const Q4Group* g, int64_t groups, const BlockQ8_0* x,
                     int64_t tail, float* y) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i pair0 = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1), pair1 = _mm256_setr_epi32(2, 2, 2, 2, 3, 3, 3, 3);
  const uint8_t* p = W + static_cast<size_t>(r) * stride;
  // one accumulator per register of the group: the chain of dependent multiply-adds is shorter
  __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* q = p + 72 * k;  // blocks at q, q + 18, q + 36, q + 54: fp16 scale, then 16 bytes
    prefetch_ahead(q, 72);
    const __m256 sc = _mm256_castps128_ps256(_mm_mul_ps(four_scales<18>(q), _mm_load_ps(g[k].dx)));
    const __m256i v[2] = {
        _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q + 20), reinterpret_cast<const __m128i*>(q + 2)),
        _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(q + 56), reinterpret_cast<const __m128i*>(q + 38))};
    for (int h = 0; h < 2; ++h) {
      const __m256i lo = _mm256_and_si256(v[h], m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v[h], 4), m4);
      // each int16 pair sum is at most 2 x 15 x 128 in magnitude, so the two add without overflow
      const __m256i p16 =
          _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_load_si256(reinterpret_cast<const __m256i*>(g[k].lo[h]))),
                           _mm256_maddubs_epi16(hi, _mm256_load_si256(reinterpret_cast<const __m256i*>(g[k].hi[h]))));
      const __m256i s = _mm256_add_epi32(_mm256_madd_epi16(p16, ones),
                                         _mm256_load_si256(reinterpret_cast<const __m256i*>(g[k].corr[h])));
      acc[h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_permutevar8x32_ps(sc, h ? pair1 : pair0), acc[h]);
    }
  }
  float sum = hsum(_mm256_add_ps(acc[0], acc[1]));
  const BlockQ4_0* wb = reinterpret_cast<const BlockQ4_0*>(p);
  for (int64_t b = 4 * groups; b < 4 * groups + tail; ++b) sum += tail_q4_0(wb[b], x[b]);
  y[r] = sum;
}

// ---- Q8_0 ----------------------------------------------------------------------------------
struct alignas(32) Q8Group {
  int8_t x[4][32];  // the 4 blocks' activation bytes
  float dx[4];
};

void prep_q8_0(const BlockQ8_0* x, int64_t groups, Q8Group* g) {
  for (int64_t i = 0; i < groups; ++i)
    for (int k = 0; k < 4; ++k) {
      const BlockQ8_0& b = x[4 * i + k];
      _mm256_store_si256(reinterpret_cast<__m256i*>(g[i].x[k]), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)));
      g[i].dx[k] = Avx2::h2f(b.d);
    }
}

inline void q8_0_row(const uint8_t* W, size_t stride, int64_t r, const Q8Group* g, int64_t groups, const BlockQ8_0* x,
                     int64_t tail, float* y) {
  const __m256i ones = _mm256_set1_epi16(1);
  const uint8_t* p = W + static_cast<size_t>(r) * stride;
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (int64_t k = 0; k < groups; ++k) {
    const uint8_t* q = p + 136 * k;  // blocks at q + 34 i: fp16 scale, then 32 bytes
    prefetch_ahead(q, 136);
    const __m256 sc = _mm256_castps128_ps256(_mm_mul_ps(four_scales<34>(q), _mm_load_ps(g[k].dx)));
    for (int i = 0; i < 4; ++i) {
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 34 * i + 2));
      const __m256i xs = _mm256_sign_epi8(_mm256_load_si256(reinterpret_cast<const __m256i*>(g[k].x[i])), w);
      const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), xs), ones);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_permutevar8x32_ps(sc, _mm256_set1_epi32(i)), acc[i]);
    }
  }
  float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
  const BlockQ8_0* wb = reinterpret_cast<const BlockQ8_0*>(p);
  for (int64_t b = 4 * groups; b < 4 * groups + tail; ++b) sum += tail_q8_0(wb[b], x[b]);
  y[r] = sum;
}

// ---- Q4_K ------------------------------------------------------------------------------------
// Quant bytes 32c .. 32c + 31 hold sub-block 2c (low nibbles, activation bytes 64c ..) and 2c + 1
// (high nibbles, 64c + 32 ..), so the Q8_K activation is used in its own order; the prep is the
// sums of each sub-block's 32 activation bytes and the scale.
struct alignas(16) Q4KGroup {
  int16_t bsum[8];
  float dx;
};

void prep_q4_k(const BlockQ8_K* x, int64_t nb, Q4KGroup* g) {
  for (int64_t b = 0; b < nb; ++b) {
    for (int j = 0; j < 8; ++j) g[b].bsum[j] = static_cast<int16_t>(x[b].bsums[2 * j] + x[b].bsums[2 * j + 1]);
    g[b].dx = x[b].d;
  }
}

inline void q4_k_row(const uint8_t* W, size_t stride, int64_t r, const Q4KGroup* g, const BlockQ8_K* x, int64_t nb,
                     float* y, size_t pf, size_t pf_l1) {
  const BlockQ4_K* w = reinterpret_cast<const BlockQ4_K*>(W + static_cast<size_t>(r) * stride);
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  __m256 acc = _mm256_setzero_ps();
  __m128 accm = _mm_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    if (pf) {  // the super-block's 144 bytes (3 lines at most), pf bytes ahead (quant/stream_prefetch.h)
      const char* p = reinterpret_cast<const char*>(w + b) + pf;
      _mm_prefetch(p, _MM_HINT_T1);
      _mm_prefetch(p + 64, _MM_HINT_T1);
      _mm_prefetch(p + 143, _MM_HINT_T1);
    }
    if (pf_l1) {
      const char* p = reinterpret_cast<const char*>(w + b) + pf_l1;
      _mm_prefetch(p, _MM_HINT_T0);
      _mm_prefetch(p + 64, _MM_HINT_T0);
      _mm_prefetch(p + 143, _MM_HINT_T0);
    }
    alignas(16) uint8_t sm[16];
    q4k_unpack_scales(w[b].scales, sm);
    const __m128i sm8 = _mm_load_si128(reinterpret_cast<const __m128i*>(sm));
    // int16 scales 0..7 in both halves; sub-block j's scale broadcast is one byte shuffle
    const __m256i sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm8));
    const int8_t* a = x[b].qs;
    __m256i isum = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(v, m4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
      const __m256i s_lo = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(static_cast<short>(((4 * c + 1) << 8) | (4 * c))));
      const __m256i s_hi = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(static_cast<short>(((4 * c + 3) << 8) | (4 * c + 2))));
      const __m256i p_lo =
          _mm256_madd_epi16(_mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 64 * c))), s_lo);
      const __m256i p_hi = _mm256_madd_epi16(
          _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 64 * c + 32))), s_hi);
      isum = _mm256_add_epi32(isum, _mm256_add_epi32(p_lo, p_hi));
    }
    const __m128i mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm8, 8));
    const __m128i msum = _mm_madd_epi16(mins, _mm_load_si128(reinterpret_cast<const __m128i*>(g[b].bsum)));
    const float dx = g[b].dx;
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_set1_ps(Avx2::h2f(w[b].d) * dx), acc);
    accm = _mm_fmadd_ps(_mm_cvtepi32_ps(msum), _mm_set1_ps(-Avx2::h2f(w[b].dmin) * dx), accm);
  }
  const __m128 m2 = _mm_add_ps(accm, _mm_movehl_ps(accm, accm));
  y[r] = hsum(acc) + _mm_cvtss_f32(_mm_add_ss(m2, _mm_movehdup_ps(m2)));
}

template <class Group, void (*Prep)(const BlockQ8_0*, int64_t, Group*),
          void (*Row)(const uint8_t*, size_t, int64_t, const Group*, int64_t, const BlockQ8_0*, int64_t, float*)>
void matvec_blocks32(const MatArgs& a) {
  const int64_t groups = a.nb / 4, tail = a.nb % 4;
  Group g[kMaxElems / 128];
  const BlockQ8_0* x = reinterpret_cast<const BlockQ8_0*>(a.X);
  Prep(x, groups, g);
  for (int64_t r = a.r0; r < a.r1; ++r) Row(a.W, a.w_stride, r, g, groups, x, tail, a.Y);
}

}  // namespace

int64_t avx2_matvec_max_elems() { return kMaxElems; }

void avx2_matvec_q4_0(const MatArgs& a) { matvec_blocks32<Q4Group, prep_q4_0, q4_0_row>(a); }

void avx2_matvec_q8_0(const MatArgs& a) { matvec_blocks32<Q8Group, prep_q8_0, q8_0_row>(a); }

void avx2_matvec_q4_k(const MatArgs& a) {
  Q4KGroup g[kMaxElems / 256];
  const BlockQ8_K* x = reinterpret_cast<const BlockQ8_K*>(a.X);
  prep_q4_k(x, a.nb, g);
  for (int64_t r = a.r0; r < a.r1; ++r) q4_k_row(a.W, a.w_stride, r, g, x, a.nb, a.Y, a.prefetch, a.prefetch_l1);
}

}  // namespace jetmoe::qdot_detail

#endif
