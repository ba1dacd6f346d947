// AVX2 quantization of one activation row for the GGUF-layout kernels (Q8_0 blocks for Q8_0 / Q4_0
// weights, Q8_K blocks for Q4_K) and for the interleaved types' AVX2 kernels (Q8_0Z, Q8_KS): the
// same bytes, bit for bit, as the scalar code in qdot.cpp. Decode quantizes before every weight
// loop; the GGUF-layout rows are what a CPU without AVX-512 and every mmapped .gguf file use (the
// interleaved types have activation_quant_avx512.cpp where AVX-512 runs). The scalar
// loops cost about 2 ns per value; perf on the Ice Lake VM with the AVX2 kernels forced put them
// at 0.9% of a q4_0 decode step.
//
// Why the results are identical (as in activation_quant_avx512.cpp): max |x| is exact in any order
// and NaN is skipped alike (vmaxps returns its second operand, the running maximum, when the new
// value is NaN, as the scalar `a > amax ? a : amax` keeps amax); the fp16 rounding of the Q8_0
// scale is vcvtps2ph with round-to-nearest-even, which the scalar f32_to_f16 implements in
// software; x * id is the same float product; clamping to +-127 then vcvtps2dq (round to nearest
// even, the default MXCSR mode) equals the scalar 1.5 * 2^23 trick for every value in that range.
// A NaN product (an inf or NaN input) passes the clamp and converts to 0x80000000; the bytes kept
// are each int32's low byte (0 for it), as the scalar float-to-int conversion and int8 cast give on
// x86. The Q8_K block sums add the stored bytes.
//
// Compiled with the AVX2 flags: everything in an anonymous namespace, only intrinsics (see
// qdot_avx2.cpp on weak symbols).
#include "ops/cpu/simd_avx2.h"
#include "quant/qdot_kernels.h"
#include "quant/qtypes.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

namespace jetmoe::qdot_detail {
namespace {

// max(|x[0..n)|, 0), skipping NaN; n a multiple of 8. (The running maximum is the second
// operand of vmaxps, so it never takes a NaN, as Avx2::hmax requires.)
inline float abs_max(const float* x, int n) {
  __m256 m = Avx2::zero();
  for (int k = 0; k < n; k += 8) m = Avx2::max(Avx2::abs(Avx2::load(x + k)), m);
  return Avx2::hmax(m);
}

// round(clamp(x * id, -127, 127)) for 8 values, as int32 lanes.
inline __m256i quantize8(const float* x, __m256 id) {
  const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x), id);
  // v as the second operand: a NaN v comes through both (vmaxps/vminps return the second operand
  // when either is NaN).
  const __m256 c = _mm256_min_ps(_mm256_set1_ps(127.0f), _mm256_max_ps(_mm256_set1_ps(-127.0f), v));
  return _mm256_cvtps_epi32(c);
}

// 32 values quantized with id into q: each int32's low byte, in order.
inline void quantize32(const float* x, __m256 id, int8_t* q) {
  const __m256i lowbyte = _mm256_set1_epi32(0xff);
  // Masked to 0..255, the unsigned packs keep every value: the bytes are the low bytes.
  const __m256i a = _mm256_and_si256(quantize8(x, id), lowbyte), b = _mm256_and_si256(quantize8(x + 8, id), lowbyte);
  const __m256i c = _mm256_and_si256(quantize8(x + 16, id), lowbyte), d = _mm256_and_si256(quantize8(x + 24, id), lowbyte);
  // packs work within 128-bit lanes: dword k of the result holds values 4k..4k+3 of a, b, c, d in
  // the order a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  const __m256i bytes = _mm256_packus_epi16(_mm256_packus_epi32(a, b), _mm256_packus_epi32(c, d));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

void quantize_q8_0_row(const float* x, BlockQ8_0* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK8_0) {
    const uint16_t h = _cvtss_sh(abs_max(x, kQK8_0) / 127.0f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const float d = _cvtsh_ss(h);
    b[i].d = h;
    quantize32(x, _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f), b[i].qs);
  }
}

void quantize_q8_k_row(const float* x, BlockQ8_K* b, int64_t nb) {
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int64_t i = 0; i < nb; ++i, x += kQK_K) {
    const float d = abs_max(x, kQK_K) / 127.0f;
    const __m256 id = _mm256_set1_ps(d > 0 ? 1.0f / d : 0.0f);
    b[i].d = d;
    for (int k = 0; k < kQK_K; k += 32) {
      quantize32(x + k, id, b[i].qs + k);
      // the two 16-byte sums of these 32 stored bytes: pairs, quads, then within each 128-bit lane
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + k));
      __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, q), ones16);
      s = _mm256_hadd_epi32(s, s);
      s = _mm256_hadd_epi32(s, s);
      b[i].bsums[k / 16] = static_cast<int16_t>(_mm256_cvtsi256_si32(s));
      b[i].bsums[k / 16 + 1] = static_cast<int16_t>(_mm_cvtsi128_si32(_mm256_extracti128_si256(s, 1)));
    }
  }
}

// The sum of the 32 stored bytes at q (int8), as int32.
inline int32_t sum32(const int8_t* q) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
  const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), v), _mm256_set1_epi16(1));
  __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
  t = _mm_add_epi32(t, _mm_unpackhi_epi64(t, t));
  t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 1));
  return _mm_cvtsi128_si32(t);
}

// Blocks already quantized for the GGUF-layout types, as the interleaved kernels' blocks (prefill
// on a mapped file, quant/qmatmul_packed.cpp): the same values, the fp16 scale as a float, the
// zero-point term or the sums of 32 (the sums of 16 pairwise; int16 cannot wrap: |sum| <= 32 * 127).
void convert_q8_0z(const BlockQ8_0* x, BlockQ8_0Z* z, int64_t nb, int32_t zero_point) {
  for (int64_t i = 0; i < nb; ++i) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(z[i].qs), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs)));
    z[i].d = _cvtsh_ss(x[i].d);
    z[i].zsum = -zero_point * sum32(x[i].qs);
  }
}

void convert_q8_ks(const BlockQ8_K* x, BlockQ8_KS* z, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    z[i].d = x[i].d;
    for (int k = 0; k < kQK_K; k += 32)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(z[i].qs + k), _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + k)));
    const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].bsums));
    const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].bsums + 8));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(z[i].ssum), _mm_hadd_epi16(lo, hi));
  }
}

// The interleaved types' blocks (AVX2 kernels of qdot_interleaved_avx2.cpp / qdot_q4kr_avx2.cpp):
// a GGUF-layout block converted, as the scalar quantize_q8_0z_blocks / quantize_q8_ks_blocks in
// qdot.cpp do.
void quantize_q8_0z_row(const float* x, BlockQ8_0Z* b, int64_t nb, int32_t zero_point) {
  for (int64_t i = 0; i < nb; ++i) {
    BlockQ8_0 q;
    quantize_q8_0_row(x + i * kQK8_0, &q, 1);
    convert_q8_0z(&q, b + i, 1, zero_point);
  }
}

void quantize_q8_ks_row(const float* x, BlockQ8_KS* b, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    BlockQ8_K q;
    quantize_q8_k_row(x + i * kQK_K, &q, 1);
    convert_q8_ks(&q, b + i, 1);
  }
}

const GgufActivationQuantFns kFns = {quantize_q8_0_row, quantize_q8_k_row};
const ActivationQuantFns kInterleavedFns = {quantize_q8_0z_row, quantize_q8_ks_row};
const ActivationConvertFns kConvertFns = {convert_q8_0z, convert_q8_ks};

}  // namespace

const GgufActivationQuantFns* avx2_activation_quant() { return &kFns; }
const ActivationQuantFns* avx2_interleaved_activation_quant() { return &kInterleavedFns; }
const ActivationConvertFns* avx2_activation_convert() { return &kConvertFns; }

}  // namespace jetmoe::qdot_detail

#else  // built without AVX2 support in the compiler flags

namespace jetmoe::qdot_detail {
const GgufActivationQuantFns* avx2_activation_quant() { return nullptr; }
const ActivationQuantFns* avx2_interleaved_activation_quant() { return nullptr; }
const ActivationConvertFns* avx2_activation_convert() { return nullptr; }
}  // namespace jetmoe::qdot_detail

#endif
