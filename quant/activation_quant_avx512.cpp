// AVX-512 quantization of one activation row for the interleaved kernels (Q8_0Z blocks for Q8_0R /
// Q4_0R, Q8_KS blocks for Q4_KR): the same values, bit for bit, as the scalar code in qdot.cpp,
// which decode runs before every quantized matmul group. The scalar loops cost about 2 ns per value
// (1.5-1.8% of 24-layer q4_0 decode on the Xeon VM, perf); here a 32-block is two registers.
//
// Why the results are identical: max |x| is exact in any order (NaN is skipped alike: vmaxps
// returns its second operand, the running maximum, when the new value is NaN, as the scalar
// `a > amax ? a : amax` keeps amax); the fp16 rounding of the Q8_0 scale is vcvtps2ph with round-to-nearest-even, which the
// scalar f32_to_f16 implements in software (normal, subnormal and overflow to inf alike); x * id is
// the same float product; clamping to +-127 then vcvtps2dq (round to nearest even, the default
// MXCSR mode) equals the scalar 1.5 * 2^23 trick for every value in that range. A NaN product
// (an inf or NaN input) passes the clamp and converts to 0x80000000, whose low byte 0 is what the
// scalar code's float-to-int conversion gives on x86 too; the block sums add the stored bytes.
//
// Compiled with AVX-512 flags: everything in an anonymous namespace, no external-linkage inline
// functions from shared headers (see qdot_avx2.cpp).
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if JETMOE_QDOT_AVX512
#include <immintrin.h>

namespace jetmoe::qdot_detail {
namespace {

inline __m512 abs_ps(__m512 v) { return _mm512_andnot_ps(_mm512_set1_ps(-0.0f), v); }

// round(clamp(x * id, -127, 127)) for 16 values, stored as 16 int8 at q; returns them as int32
// lanes (from the stored bytes, for the block sums).
inline __m512i quantize16(const float* x, __m512 id, int8_t* q) {
  const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x), id);
  // v as the second operand: a NaN v comes through both (vmaxps/vminps return the second operand
  // when either is NaN).
  const __m512 c = _mm512_min_ps(_mm512_set1_ps(127.0f), _mm512_max_ps(_mm512_set1_ps(-127.0f), v));
  const __m128i bytes = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(c));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), bytes);
  return _mm512_cvtepi8_epi32(bytes);
}

// max(|x[0..n)|, 0), skipping NaN, n a multiple of 16.
inline float abs_max(const float* x, int n) {
  __m512 m = _mm512_setzero_ps();
  for (int k = 0; k < n; k += 16) m = _mm512_max_ps(abs_ps(_mm512_loadu_ps(x + k)), m);
  return _mm512_reduce_max_ps(m);
}

// One Q8_0Z block from its scale d and 1 / d (0 when d is 0).
inline void quantize_block_q8_0z(const float* x, float d, float id, BlockQ8_0Z& b, int32_t zero_point) {
  const __m512 idv = _mm512_set1_ps(id);
  const __m512i q0 = quantize16(x, idv, b.qs), q1 = quantize16(x + 16, idv, b.qs + 16);
  b.d = d;
  b.zsum = -zero_point * _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
}

// Sixteen blocks at a time: their scales (max / 127, rounded through fp16) and reciprocals are
// one vector each, so no block's bytes wait on its own chain of a horizontal max, two
// conversions and a division (block by block, 2048 values took ~1.05 us, 11264 ~5.9 us on the
// Ice Lake VM; kernels bench activation_quant). The same operations per lane: the same bits.
void avx512_quantize_q8_0z_row(const float* x, BlockQ8_0Z* b, int64_t nb, int32_t zero_point) {
  constexpr int kBatch = 16;
  int64_t i = 0;
  for (; i + kBatch <= nb; i += kBatch, x += kBatch * kQK8_0) {
    alignas(64) float amax[kBatch], d[kBatch], id[kBatch];
    for (int k = 0; k < kBatch; ++k) amax[k] = abs_max(x + k * kQK8_0, kQK8_0);
    const __m512 dv = _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_div_ps(_mm512_load_ps(amax), _mm512_set1_ps(127.0f)),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // d > 0 ? 1 / d : 0 (d is never NaN: abs_max skips NaN)
    const __mmask16 positive = _mm512_cmp_ps_mask(dv, _mm512_setzero_ps(), _CMP_GT_OQ);
    _mm512_store_ps(d, dv);
    _mm512_store_ps(id, _mm512_maskz_div_ps(positive, _mm512_set1_ps(1.0f), dv));
    for (int k = 0; k < kBatch; ++k) quantize_block_q8_0z(x + k * kQK8_0, d[k], id[k], b[i + k], zero_point);
  }
  for (; i < nb; ++i, x += kQK8_0) {
    const float d = _cvtsh_ss(_cvtss_sh(abs_max(x, kQK8_0) / 127.0f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    quantize_block_q8_0z(x, d, d > 0 ? 1.0f / d : 0.0f, b[i], zero_point);
  }
}

void avx512_quantize_q8_ks_row(const float* x, BlockQ8_KS* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float d = abs_max(x, kQK_K) / 127.0f;
    const __m512 id = _mm512_set1_ps(d > 0 ? 1.0f / d : 0.0f);
    b[i].d = d;
    for (int j = 0; j < 8; ++j) {  // sub-block j: 32 values, two registers
      const __m512i q0 = quantize16(x + 32 * j, id, b[i].qs + 32 * j), q1 = quantize16(x + 32 * j + 16, id, b[i].qs + 32 * j + 16);
      b[i].ssum[j] = static_cast<int16_t>(_mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1)));
    }
  }
}

}  // namespace

const ActivationQuantFns* avx512_activation_quant() {
  static const ActivationQuantFns f = {avx512_quantize_q8_0z_row, avx512_quantize_q8_ks_row};
  return &f;
}

}  // namespace jetmoe::qdot_detail

#else

namespace jetmoe::qdot_detail {
const ActivationQuantFns* avx512_activation_quant() { return nullptr; }
}  // namespace jetmoe::qdot_detail

#endif
